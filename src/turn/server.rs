//! The built-in STUN/TURN server's sockets: one UDP socket and one TCP listener per `[turn]
//! listen` address, a relayed UDP socket per allocation (from `relay_ports`), and a sweep that
//! ends expired allocations. Requests are decoded by `stun.rs` and judged with `alloc.rs`;
//! this file only moves bytes and holds the table of allocations.
//!
//! Every allocation is keyed by its client 5-tuple (UDP: listener and client address; TCP: the
//! connection). Closing a TCP connection ends its allocation (RFC 8656 §3.1). One log line per
//! allocation, when it ends: user, peers, duration. Credentials are never logged.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use smol::net::{TcpListener, TcpStream, UdpSocket};
use smol::{Executor, Task};

use super::alloc::{self, Allocation, NonceCheck, Nonces};
use super::stun::{self, Builder, Class, Integrity, Message};
use crate::config::Config;

const SOFTWARE: &[u8] = concat!("kith ", env!("CARGO_PKG_VERSION")).as_bytes();
/// The largest STUN message or ChannelData frame accepted over TCP.
const MAX_FRAME: usize = 0xFFFF + stun::HEADER_LEN;
/// How long a TCP connection may stay silent without an allocation.
const TCP_IDLE: Duration = Duration::from_secs(30);
/// How long a port reserved by EVEN-PORT waits for its allocation (RFC 8656 §7.2: 30 s).
const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

/// The secret of `DATA/turn.secret`, generated (32 random bytes, base64, mode 0600) on first
/// use. `kith check turn` reads the same file.
pub fn secret_file(data_dir: &Path) -> io::Result<String> {
    use base64::Engine as _;
    crate::secrets::load_or_create(data_dir, "turn.secret", |raw| {
        base64::engine::general_purpose::STANDARD.encode(raw)
    })
}

/// The sockets of `[turn] listen`, bound at start-up so a port in use stops the server with a
/// clear message.
pub struct Bound {
    udp: Vec<Arc<UdpSocket>>,
    tcp: Vec<TcpListener>,
}

/// Binds UDP and TCP on every listen address.
pub fn bind(config: &Config) -> Result<Bound, String> {
    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    for addr in &config.turn.listen {
        let fail = |e: io::Error| {
            format!(
                "cannot listen for STUN/TURN on {addr}: {e} (is coturn running on this port? \
                 change [turn] listen, or set [turn] enabled = false)"
            )
        };
        let u = bind_udp(*addr).map_err(fail)?;
        let at = u.local_addr().map_err(fail)?;
        let t = crate::server::bind_tcp(at).map_err(fail)?;
        udp.push(Arc::new(UdpSocket::try_from(u).map_err(fail)?));
        tcp.push(TcpListener::try_from(t).map_err(fail)?);
        log::info!("listening for STUN/TURN on {at} (UDP and TCP)");
    }
    Ok(Bound { udp, tcp })
}

fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let s = match std::net::UdpSocket::bind(addr) {
        Err(e) if addr.ip() == Ipv6Addr::UNSPECIFIED && e.kind() != io::ErrorKind::AddrInUse => {
            std::net::UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port())))?
        }
        r => r?,
    };
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Serves until the future is dropped (at shutdown); dropping it ends every allocation.
pub async fn serve(
    ex: Arc<Executor<'static>>,
    t: crate::config::Turn,
    domain: String,
    bound: Bound,
) {
    use ring::rand::SecureRandom as _;
    let mut nonce_key = [0u8; 32];
    let _ = ring::rand::SystemRandom::new().fill(&mut nonce_key);
    let own: Vec<IpAddr> = t
        .listen
        .iter()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified())
        .collect();
    let srv = Arc::new(Turn {
        secret: t.secret.clone().unwrap_or_default(),
        realm: t.realm(&domain).to_string(),
        relay_ports: t.relay_ports,
        per_user: t.max_allocations_per_user,
        total: t.max_allocations,
        bandwidth: t.bandwidth as u64,
        allow_private: t.allow_private_peers,
        own,
        public: Mutex::new(Vec::new()),
        nonces: Nonces::new(&nonce_key),
        allocs: Mutex::new(HashMap::new()),
        reservations: Mutex::new(HashMap::new()),
        conns: Mutex::new(HashMap::new()),
        next_conn: AtomicU64::new(1),
        next_port: AtomicU64::new(u64::from(nonce_key[0]) << 8 | u64::from(nonce_key[1])),
        ex: ex.clone(),
    });
    let _stop = StopGuard(srv.clone());
    let mut tasks: Vec<Task<()>> = Vec::new();
    for s in bound.udp {
        tasks.push(ex.spawn(udp_loop(srv.clone(), s)));
    }
    for l in bound.tcp {
        tasks.push(ex.spawn(tcp_accept(srv.clone(), l)));
    }
    let public_host = t.public_host.clone().unwrap_or(domain);
    let mut tick: u64 = 0;
    loop {
        if tick % 300 == 0 {
            srv.resolve_public(&public_host).await;
        }
        tick += 1;
        smol::Timer::after(Duration::from_secs(1)).await;
        srv.sweep(Instant::now());
    }
}

impl Turn {
    /// Looks up `public_host`'s public addresses (off the executor: DNS blocks).
    async fn resolve_public(&self, host: &str) {
        use std::net::ToSocketAddrs as _;
        let name = host.to_string();
        let found: Vec<IpAddr> = smol::unblock(move || {
            (name.as_str(), 0)
                .to_socket_addrs()
                .map(|a| a.map(|a| a.ip()).collect())
                .unwrap_or_default()
        })
        .await;
        let public: Vec<IpAddr> = found
            .into_iter()
            .filter(|ip| alloc::peer_allowed(*ip, false, &[]))
            .collect();
        let mut cur = lock(&self.public);
        if *cur != public {
            if !public.is_empty() {
                log::info!(
                    "turn: relayed addresses are advertised on {public:?} ({host}); the router must \
                     forward UDP relay_ports to this machine"
                );
            }
            *cur = public;
        }
    }
}

/// Ends every allocation and connection when `serve` is dropped.
struct StopGuard(Arc<Turn>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        let allocs: Vec<_> = lock(&self.0.allocs).drain().collect();
        for (_, slot) in allocs {
            log_close(&slot, "server shutting down");
        }
        lock(&self.0.conns).clear();
    }
}

struct Turn {
    secret: String,
    realm: String,
    relay_ports: (u16, u16),
    per_user: usize,
    total: usize,
    bandwidth: u64,
    allow_private: bool,
    own: Vec<IpAddr>,
    /// The public addresses `public_host` resolves to, refreshed every few minutes.
    public: Mutex<Vec<IpAddr>>,
    nonces: Nonces,
    allocs: Mutex<HashMap<Key, Slot>>,
    /// Relay sockets reserved by EVEN-PORT, by RESERVATION-TOKEN, with their expiry.
    reservations: Mutex<HashMap<Vec<u8>, (UdpSocket, Instant)>>,
    /// TCP connection tasks, so shutdown can end them.
    conns: Mutex<HashMap<u64, Task<()>>>,
    next_conn: AtomicU64,
    next_port: AtomicU64,
    ex: Arc<Executor<'static>>,
}

/// A client 5-tuple.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Key {
    Udp {
        local: SocketAddr,
        client: SocketAddr,
    },
    Tcp(u64),
}

/// How to reach a client.
#[derive(Clone)]
enum Out {
    Udp(Arc<UdpSocket>, SocketAddr),
    /// Frames for the connection's writer; full means the client is not reading, and a relayed
    /// datagram is dropped like UDP would.
    Tcp(async_channel::Sender<Vec<u8>>),
}

impl Out {
    async fn send(&self, bytes: Vec<u8>) {
        match self {
            Out::Udp(s, to) => {
                let _ = s.send_to(&bytes, *to).await;
            }
            Out::Tcp(tx) => {
                let _ = tx.try_send(bytes);
            }
        }
    }

    fn is_tcp(&self) -> bool {
        matches!(self, Out::Tcp(_))
    }
}

struct Slot {
    state: Arc<Mutex<Allocation>>,
    relay: Arc<UdpSocket>,
    /// Where datagrams for the client go.
    out: Out,
    _task: Task<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn log_close(slot: &Slot, why: &str) {
    let a = lock(&slot.state);
    log::info!(
        "turn: allocation of {} at {} ended ({why}) after {}s, {} peer(s)",
        a.user,
        a.relayed,
        a.created.elapsed().as_secs(),
        a.peers
    );
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is (dual-stack sockets report them).
fn canonical(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(a, |v4| SocketAddr::new(IpAddr::V4(v4), a.port())),
        _ => a,
    }
}

async fn udp_loop(srv: Arc<Turn>, sock: Arc<UdpSocket>) {
    let local = sock
        .local_addr()
        .map(canonical)
        .unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                log::debug!("turn: udp receive on {local}: {e}");
                smol::Timer::after(Duration::from_millis(10)).await;
                continue;
            }
        };
        let client = canonical(from);
        let key = Key::Udp { local, client };
        let out = Out::Udp(sock.clone(), from);
        if let Some(reply) = srv.packet(&buf[..n], key, client, local, &out).await {
            let _ = sock.send_to(&reply, from).await;
        }
    }
}

async fn tcp_accept(srv: Arc<Turn>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, from)) => {
                let id = srv.next_conn.fetch_add(1, Ordering::Relaxed);
                // Held while spawning, so a connection that ends at once finds its entry.
                let mut conns = lock(&srv.conns);
                if conns.len() >= srv.total.saturating_mul(2) + 64 {
                    log::warn!("turn: too many TCP connections; refusing {from}");
                    continue;
                }
                let task = srv
                    .ex
                    .spawn(tcp_conn(srv.clone(), stream, canonical(from), id));
                conns.insert(id, task);
            }
            Err(e) => {
                log::debug!("turn: tcp accept: {e}");
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn tcp_conn(srv: Arc<Turn>, stream: TcpStream, client: SocketAddr, id: u64) {
    let local = stream.local_addr().map(canonical).unwrap_or(client);
    let (tx, rx) = async_channel::bounded::<Vec<u8>>(256);
    let mut writer = stream.clone();
    let write = async move {
        while let Ok(frame) = rx.recv().await {
            if writer.write_all(&frame).await.is_err() {
                break;
            }
        }
    };
    let out = Out::Tcp(tx.clone());
    let key = Key::Tcp(id);
    let read = {
        let srv = srv.clone();
        let mut stream = stream;
        async move {
            let mut buf: Vec<u8> = Vec::new();
            let mut chunk = vec![0u8; 16384];
            loop {
                while let Some(len) = stun::stream_frame_len(&buf) {
                    if len > MAX_FRAME {
                        return;
                    }
                    if buf.len() < len {
                        break;
                    }
                    let frame: Vec<u8> = buf.drain(..len).collect();
                    if let Some(reply) = srv.packet(&frame, key, client, local, &out).await {
                        if tx.send(reply).await.is_err() {
                            return;
                        }
                    }
                }
                if buf.len() >= 4 && stun::stream_frame_len(&buf).is_none() {
                    return; // neither STUN nor ChannelData: not a TURN client
                }
                // A connection without an allocation is closed after 30 s of silence, so idle
                // sockets cannot pile up (RFC 6062 §5.1's rule, applied to every connection).
                let idle = if lock(&srv.allocs).contains_key(&key) {
                    Duration::from_secs(3600)
                } else {
                    TCP_IDLE
                };
                let timeout = async {
                    smol::Timer::after(idle).await;
                    Err(io::ErrorKind::TimedOut.into())
                };
                match stream.read(&mut chunk).or(timeout).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        }
    };
    read.or(write).await;
    if let Some(slot) = lock(&srv.allocs).remove(&key) {
        log_close(&slot, "TCP connection closed");
    }
    lock(&srv.conns).remove(&id);
}

/// A request that passed authentication.
struct Authed {
    user: String,
    username: String,
    key: Vec<u8>,
    integrity: Integrity,
}

impl Turn {
    /// Handles one datagram or TCP frame from a client; returns the response to send back.
    async fn packet(
        &self,
        bytes: &[u8],
        key: Key,
        client: SocketAddr,
        local: SocketAddr,
        out: &Out,
    ) -> Option<Vec<u8>> {
        if let Some((channel, data)) = stun::parse_channel_data(bytes) {
            self.channel_data(key, channel, data).await;
            return None;
        }
        let msg = Message::parse(bytes).ok()?;
        match msg.class {
            Class::Request => Some(self.request(&msg, key, client, local, out).await),
            Class::Indication if msg.method == stun::SEND => {
                self.send_indication(&msg, key).await;
                None
            }
            _ => None,
        }
    }

    async fn request(
        &self,
        m: &Message,
        key: Key,
        client: SocketAddr,
        local: SocketAddr,
        out: &Out,
    ) -> Vec<u8> {
        let unknown = m.unknown_required();
        if !unknown.is_empty() {
            let list: Vec<u8> = unknown.iter().flat_map(|t| t.to_be_bytes()).collect();
            return Builder::reply(m, Class::Error)
                .error(420, "Unknown Attribute")
                .attr(stun::UNKNOWN_ATTRIBUTES, &list)
                .fingerprint();
        }
        match m.method {
            // RFC 8489 §6.3.1: no authentication for Binding.
            stun::BINDING => Builder::reply(m, Class::Success)
                .xor_address(stun::XOR_MAPPED_ADDRESS, client)
                .attr(stun::SOFTWARE, SOFTWARE)
                .fingerprint(),
            stun::ALLOCATE => self.allocate(m, key, client, local, out).await,
            stun::REFRESH | stun::CREATE_PERMISSION | stun::CHANNEL_BIND => {
                self.on_allocation(m, key)
            }
            _ => error(m, 400, "Bad Request"),
        }
    }

    /// Long-term credentials (RFC 8489 §9.2) with REST-API usernames.
    fn authenticate(&self, m: &Message) -> Result<Authed, Vec<u8>> {
        let now = crate::time::now_unix();
        let challenge = |code: u16, reason: &str| {
            Builder::reply(m, Class::Error)
                .error(code, reason)
                .attr(stun::REALM, self.realm.as_bytes())
                .attr(stun::NONCE, self.nonces.issue(now).as_bytes())
                .attr(stun::SOFTWARE, SOFTWARE)
                .fingerprint()
        };
        let Some(integrity) = m.integrity() else {
            return Err(challenge(401, "Unauthorized"));
        };
        let (Some(username), Some(_realm), Some(nonce)) = (
            m.get_str(stun::USERNAME),
            m.get_str(stun::REALM),
            m.get_str(stun::NONCE),
        ) else {
            return Err(error(m, 400, "Bad Request"));
        };
        if self.nonces.check(nonce, now) != NonceCheck::Valid {
            return Err(challenge(438, "Stale Nonce"));
        }
        let user = match alloc::check_username(username, now) {
            Ok(u) => u.to_string(),
            Err(e) => {
                log::debug!("turn: refused a request with a {e:?} username");
                return Err(challenge(401, "Unauthorized"));
            }
        };
        let password = alloc::rest_password(&self.secret, username);
        let lt_key = stun::long_term_key_for(m, username, &self.realm, &password);
        if !m.check_integrity(&lt_key) {
            log::debug!("turn: wrong credentials for {user}");
            return Err(challenge(401, "Unauthorized"));
        }
        Ok(Authed {
            user,
            username: username.to_string(),
            key: lt_key,
            integrity,
        })
    }

    async fn allocate(
        &self,
        m: &Message,
        key: Key,
        client: SocketAddr,
        local: SocketAddr,
        out: &Out,
    ) -> Vec<u8> {
        let a = match self.authenticate(m) {
            Ok(a) => a,
            Err(reply) => return reply,
        };
        let ok = |b: Builder| b.integrity(a.integrity, &a.key).fingerprint();
        let now = Instant::now();
        if let Some(slot) = lock(&self.allocs).get(&key) {
            let st = lock(&slot.state);
            // A retransmitted Allocate gets the same answer (RFC 8656 §7.2).
            if st.allocate_tid == m.tid {
                let left = st.expires.saturating_duration_since(now).as_secs() as u32;
                return ok(Builder::reply(m, Class::Success)
                    .xor_address(stun::XOR_RELAYED_ADDRESS, st.relayed)
                    .u32(stun::LIFETIME, left)
                    .xor_address(stun::XOR_MAPPED_ADDRESS, client));
            }
            return ok(err_builder(m, 437, "Allocation Mismatch"));
        }
        match m.get(stun::REQUESTED_TRANSPORT) {
            None => return ok(err_builder(m, 400, "Bad Request")),
            Some(v) if v.first() != Some(&17) => {
                return ok(err_builder(m, 442, "Unsupported Transport Protocol"))
            }
            Some(_) => {}
        }
        let token = m.get(stun::RESERVATION_TOKEN);
        if token.is_some() && m.get(stun::EVEN_PORT).is_some() {
            return ok(err_builder(m, 400, "Bad Request"));
        }
        let want_v6 = match m
            .get(stun::REQUESTED_ADDRESS_FAMILY)
            .and_then(|v| v.first())
        {
            None => client.is_ipv6(),
            Some(1) => false,
            Some(2) => true,
            Some(_) => return ok(err_builder(m, 440, "Address Family not Supported")),
        };
        if want_v6 != client.is_ipv6() {
            return ok(err_builder(m, 440, "Address Family not Supported"));
        }
        {
            let allocs = lock(&self.allocs);
            if allocs.len() >= self.total {
                log::warn!(
                    "turn: refused an allocation: {} in use, the most [turn] max_allocations allows",
                    self.total
                );
                return ok(err_builder(m, 508, "Insufficient Capacity"));
            }
            let mine = allocs
                .values()
                .filter(|s| lock(&s.state).user == a.user)
                .count();
            if mine >= self.per_user {
                log::debug!("turn: {} reached max_allocations_per_user", a.user);
                return ok(err_builder(m, 486, "Allocation Quota Reached"));
            }
        }
        // EVEN-PORT with the R bit reserves the next port for a second allocation, which
        // names it by RESERVATION-TOKEN (RFC 8656 §7.2, §14.6, §14.9: RTP and RTCP pairs).
        let even = m
            .get(stun::EVEN_PORT)
            .map(|v| v.first().is_some_and(|b| b & 0x80 != 0));
        let mut reserved_token = None;
        let relay = if let Some(token) = token {
            let found = lock(&self.reservations).remove(token);
            match found {
                Some((sock, _)) => sock,
                None => return ok(err_builder(m, 508, "Insufficient Capacity")),
            }
        } else {
            let bound =
                self.bind_relay(relay_ip(local, client), even.is_some(), even == Some(true));
            match bound {
                Ok((sock, next)) => {
                    if let Some(next) = next {
                        let mut t = [0u8; 8];
                        let _ = ring::rand::SecureRandom::fill(
                            &ring::rand::SystemRandom::new(),
                            &mut t,
                        );
                        lock(&self.reservations)
                            .insert(t.to_vec(), (next, now + RESERVATION_LIFETIME));
                        reserved_token = Some(t);
                    }
                    sock
                }
                Err(e) => {
                    log::warn!("turn: no relay port free in [turn] relay_ports: {e}");
                    return ok(err_builder(m, 508, "Insufficient Capacity"));
                }
            }
        };
        let relayed = match relay.local_addr() {
            Ok(a) => self.advertised(canonical(a)),
            Err(_) => return ok(err_builder(m, 500, "Server Error")),
        };
        let lifetime = alloc::granted_lifetime(m.get_u32(stun::LIFETIME));
        let state = Arc::new(Mutex::new(Allocation::new(
            &a.user,
            &a.username,
            a.key.clone(),
            relayed,
            lifetime,
            self.bandwidth,
            m.tid,
            now,
        )));
        let relay = Arc::new(relay);
        let task = self
            .ex
            .spawn(relay_loop(state.clone(), relay.clone(), out.clone()));
        lock(&self.allocs).insert(
            key,
            Slot {
                state,
                relay,
                out: out.clone(),
                _task: task,
            },
        );
        log::debug!("turn: allocation for {} at {relayed}", a.user);
        let mut b = Builder::reply(m, Class::Success)
            .xor_address(stun::XOR_RELAYED_ADDRESS, relayed)
            .u32(stun::LIFETIME, lifetime.as_secs() as u32);
        if let Some(t) = reserved_token {
            b = b.attr(stun::RESERVATION_TOKEN, &t);
        }
        ok(b.xor_address(stun::XOR_MAPPED_ADDRESS, client)
            .attr(stun::SOFTWARE, SOFTWARE))
    }

    /// Refresh, CreatePermission and ChannelBind: requests on an existing allocation.
    fn on_allocation(&self, m: &Message, key: Key) -> Vec<u8> {
        let a = match self.authenticate(m) {
            Ok(a) => a,
            Err(reply) => return reply,
        };
        let ok = |b: Builder| b.integrity(a.integrity, &a.key).fingerprint();
        let now = Instant::now();
        let mut allocs = lock(&self.allocs);
        let Some(slot) = allocs.get(&key) else {
            return ok(err_builder(m, 437, "Allocation Mismatch"));
        };
        let mut st = lock(&slot.state);
        if st.username != a.username {
            return ok(err_builder(m, 441, "Wrong Credentials"));
        }
        match m.method {
            stun::REFRESH => {
                let requested = m.get_u32(stun::LIFETIME);
                if requested == Some(0) {
                    drop(st);
                    if let Some(slot) = allocs.remove(&key) {
                        log_close(&slot, "client released it");
                    }
                    return ok(Builder::reply(m, Class::Success).u32(stun::LIFETIME, 0));
                }
                let lifetime = alloc::granted_lifetime(requested);
                st.refresh(lifetime, now);
                ok(
                    Builder::reply(m, Class::Success)
                        .u32(stun::LIFETIME, lifetime.as_secs() as u32),
                )
            }
            stun::CREATE_PERMISSION => {
                let peers = m.xor_addresses(stun::XOR_PEER_ADDRESS);
                if peers.is_empty() || peers.iter().any(Option::is_none) {
                    return ok(err_builder(m, 400, "Bad Request"));
                }
                let peers: Vec<SocketAddr> = peers.into_iter().flatten().map(canonical).collect();
                if peers.iter().any(|p| p.is_ipv6() != st.relayed.is_ipv6()) {
                    return ok(err_builder(m, 443, "Peer Address Family Mismatch"));
                }
                if let Some(p) = peers.iter().find(|p| !self.peer_allowed(p.ip(), &st)) {
                    log::debug!("turn: {} may not relay to {}", st.user, p.ip());
                    return ok(err_builder(m, 403, "Forbidden"));
                }
                for p in peers {
                    st.permit(p.ip(), now);
                }
                ok(Builder::reply(m, Class::Success))
            }
            _ => {
                let (Some(channel), Some(peer)) = (
                    m.get(stun::CHANNEL_NUMBER)
                        .and_then(|v| Some(u16::from_be_bytes([*v.first()?, *v.get(1)?]))),
                    m.get_xor_address(stun::XOR_PEER_ADDRESS).map(canonical),
                ) else {
                    return ok(err_builder(m, 400, "Bad Request"));
                };
                if peer.is_ipv6() != st.relayed.is_ipv6() {
                    return ok(err_builder(m, 443, "Peer Address Family Mismatch"));
                }
                if !self.peer_allowed(peer.ip(), &st) {
                    log::debug!("turn: {} may not relay to {}", st.user, peer.ip());
                    return ok(err_builder(m, 403, "Forbidden"));
                }
                match st.bind_channel(channel, peer, now) {
                    Ok(()) => ok(Builder::reply(m, Class::Success)),
                    Err(_) => ok(err_builder(m, 400, "Bad Request")),
                }
            }
        }
    }

    /// Whether a permission or channel for `ip` may be installed. The server's own public
    /// addresses pass here; which of their ports may be reached is decided per datagram
    /// (`relay_out`).
    fn peer_allowed(&self, ip: IpAddr, _st: &Allocation) -> bool {
        alloc::peer_allowed(ip, self.allow_private, &[])
    }

    /// Whether `ip` is one of the server's addresses: listen, relay or public.
    fn is_own(&self, ip: IpAddr, st: &Allocation) -> bool {
        ip == st.relayed.ip() || self.own.contains(&ip) || lock(&self.public).contains(&ip)
    }

    /// The relayed address to hand out for a socket bound at `local`: when `local` is not a
    /// public address (behind a home router) and `public_host` resolves to a public one of the
    /// same family, that one, with the same port (the router forwards `relay_ports`).
    fn advertised(&self, local: SocketAddr) -> SocketAddr {
        if alloc::peer_allowed(local.ip(), false, &[]) {
            return local;
        }
        lock(&self.public)
            .iter()
            .find(|ip| ip.is_ipv6() == local.is_ipv6())
            .map_or(local, |ip| SocketAddr::new(*ip, local.port()))
    }

    /// Relays a Send indication's data to its peer (RFC 8656 §10.2); silently dropped when
    /// anything is missing, as indications get no answer.
    async fn send_indication(&self, m: &Message, key: Key) {
        let (Some(peer), Some(data)) = (
            m.get_xor_address(stun::XOR_PEER_ADDRESS).map(canonical),
            m.get(stun::DATA_ATTR),
        ) else {
            return;
        };
        self.relay_out(key, data, |_, _| Some(peer)).await;
    }

    /// Relays a ChannelData message to the channel's peer (RFC 8656 §12.6).
    async fn channel_data(&self, key: Key, channel: u16, data: &[u8]) {
        self.relay_out(key, data, |st, now| st.channel_peer(channel, now))
            .await;
    }

    async fn relay_out(
        &self,
        key: Key,
        data: &[u8],
        peer: impl FnOnce(&Allocation, Instant) -> Option<SocketAddr>,
    ) {
        let now = Instant::now();
        let (from, to, target) = {
            let allocs = lock(&self.allocs);
            let Some(slot) = allocs.get(&key) else {
                return;
            };
            let mut st = lock(&slot.state);
            let Some(to) = peer(&st, now) else {
                return;
            };
            if !st.permitted(to.ip(), now) || !st.bucket.take(data.len(), now) {
                return;
            }
            // Another allocation's relayed address (two callers on this server): delivered
            // inside the process, so it works behind a router without hairpin NAT.
            let other = allocs
                .iter()
                .find(|(k, s)| **k != key && lock(&s.state).relayed == to);
            let target = match other {
                Some((_, s)) => Target::Internal(s.state.clone(), s.out.clone()),
                // Any other port on the server's own addresses (its XMPP ports, ssh...) is
                // not a peer (RFC 8656 §21.3).
                None if !self.allow_private && self.is_own(to.ip(), &st) => return,
                None => Target::Socket(slot.relay.clone()),
            };
            (st.relayed, to, target)
        };
        match target {
            Target::Socket(relay) => {
                let _ = relay.send_to(data, to).await;
            }
            Target::Internal(state, out) => deliver(&state, &out, from, data).await,
        }
    }

    /// Ends expired allocations; drops expired permissions and channels.
    fn sweep(&self, now: Instant) {
        let mut allocs = lock(&self.allocs);
        let expired: Vec<Key> = allocs
            .iter()
            .filter(|(_, s)| lock(&s.state).is_expired(now))
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            if let Some(slot) = allocs.remove(&k) {
                log_close(&slot, "expired");
            }
        }
        for s in allocs.values() {
            lock(&s.state).prune(now);
        }
        drop(allocs);
        lock(&self.reservations).retain(|_, (_, expires)| now < *expires);
    }

    /// A UDP socket on `ip` with a port from `relay_ports`, starting at a rotating offset;
    /// with `even` an even port, with `pair` also the port above it (for a reservation).
    fn bind_relay(
        &self,
        ip: IpAddr,
        even: bool,
        pair: bool,
    ) -> io::Result<(UdpSocket, Option<UdpSocket>)> {
        let (lo, hi) = self.relay_ports;
        let span = u64::from(hi - lo) + 1;
        let bind = |port: u16| -> io::Result<UdpSocket> {
            let s = std::net::UdpSocket::bind(SocketAddr::new(ip, port))?;
            s.set_nonblocking(true)?;
            UdpSocket::try_from(s)
        };
        let mut last = io::Error::other("empty port range");
        for _ in 0..span.min(200) {
            let n = self.next_port.fetch_add(1, Ordering::Relaxed) % span;
            let port = lo + n as u16;
            if even && port % 2 == 1 {
                continue;
            }
            match bind(port) {
                Ok(s) if !pair => return Ok((s, None)),
                Ok(s) if port < hi => match bind(port + 1) {
                    Ok(next) => return Ok((s, Some(next))),
                    Err(e) => last = e,
                },
                Ok(_) => {}
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// The address relayed sockets bind to: the listener's own address when it is a specific one,
/// else the local address the system routes to the client from.
fn relay_ip(local: SocketAddr, client: SocketAddr) -> IpAddr {
    if !local.ip().is_unspecified() && local.is_ipv6() == client.is_ipv6() {
        return local.ip();
    }
    let any: SocketAddr = if client.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    std::net::UdpSocket::bind(any)
        .and_then(|s| s.connect(client).and_then(|_| s.local_addr()))
        .map(|a| a.ip())
        .unwrap_or(any.ip())
}

/// Where a datagram from a client goes.
enum Target {
    Socket(Arc<UdpSocket>),
    /// Another allocation on this server: its state and client.
    Internal(Arc<Mutex<Allocation>>, Out),
}

/// Datagrams from peers on the relayed socket, to the client.
async fn relay_loop(state: Arc<Mutex<Allocation>>, relay: Arc<UdpSocket>, out: Out) {
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, from)) = relay.recv_from(&mut buf).await else {
            smol::Timer::after(Duration::from_millis(10)).await;
            continue;
        };
        deliver(&state, &out, canonical(from), &buf[..n]).await;
    }
}

/// A datagram from `from` to the client of `state`: ChannelData when a channel is bound to
/// the peer, else a Data indication (RFC 8656 §11.3, §12.7). Only permitted peers get through.
async fn deliver(state: &Mutex<Allocation>, out: &Out, from: SocketAddr, data: &[u8]) {
    let now = Instant::now();
    let channel = {
        let mut st = lock(state);
        if !st.permitted(from.ip(), now) || !st.inbound.take(data.len(), now) {
            return;
        }
        st.peer_channel(from, now)
    };
    let frame = match channel {
        Some(c) => stun::channel_data(c, data, out.is_tcp()),
        None => {
            let mut tid = [0u8; 12];
            let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut tid);
            Builder::new(Class::Indication, stun::DATA, tid)
                .xor_address(stun::XOR_PEER_ADDRESS, from)
                .attr(stun::DATA_ATTR, data)
                .finish()
        }
    };
    out.send(frame).await;
}

fn err_builder(m: &Message, code: u16, reason: &str) -> Builder {
    Builder::reply(m, Class::Error).error(code, reason)
}

fn error(m: &Message, code: u16, reason: &str) -> Vec<u8> {
    err_builder(m, code, reason).fingerprint()
}
