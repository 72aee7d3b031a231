//! `kith check turn`: exercises a STUN/TURN server the way a call would, like Prosody's
//! `prosodyctl check turn`: a STUN Binding, an Allocate with credentials made from the shared
//! secret (after the 401 challenge), CreatePermission, and a datagram sent through the relay
//! to a local echo socket and back. Prints what worked and what to fix.
//!
//! A blocking client on std sockets: it runs in the CLI, outside the server's executor.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use super::alloc;
use super::stun::{self, Builder, Class, Integrity, Message};
use crate::config::Config;

/// The result of one step, for the report.
struct Report {
    failed: bool,
}

impl Report {
    fn ok(&mut self, what: &str) {
        println!("ok:   {what}");
    }
    fn fail(&mut self, what: &str, fix: &str) {
        self.failed = true;
        println!("FAIL: {what}\n      fix: {fix}");
    }
    fn note(&mut self, what: &str) {
        println!("note: {what}");
    }
}

/// Runs the check against `server` (host:port), else the configured server. True if every
/// step passed.
pub fn run(config: &Config, server: Option<&str>) -> bool {
    let mut r = Report { failed: false };
    let t = &config.turn;
    let Some((host, port, _)) = t.advertised(&config.domain) else {
        r.fail(
            "no STUN/TURN server is configured",
            "remove 'enabled = false' from [turn] to run the built-in server, or set host and secret for an external one",
        );
        return false;
    };
    println!(
        "checking STUN/TURN for {} (advertised as {host}:{port})",
        config.domain
    );
    let target = match server {
        Some(s) => s.to_string(),
        // The built-in server is checked where it listens; the advertised name is checked too.
        None if t.builtin() => {
            let a = t.listen[0];
            let ip = if a.ip().is_unspecified() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                a.ip()
            };
            let resolves = (host.as_str(), port)
                .to_socket_addrs()
                .is_ok_and(|mut a| a.next().is_some());
            match resolves {
                true => r.ok(&format!("{host} resolves")),
                false => r.fail(
                    &format!("{host}, the host name clients are given, does not resolve"),
                    "add a DNS record for it, or set [turn] public_host to a name that resolves",
                ),
            }
            SocketAddr::new(ip, a.port()).to_string()
        }
        None => format!("{host}:{port}"),
    };
    let Some(addr) = target.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        r.fail(
            &format!("cannot resolve {target}"),
            "check the host name in [turn], or pass --server HOST:PORT",
        );
        return false;
    };
    let secret = match &t.secret {
        Some(s) => s.clone(),
        // Read, never made here: a file created by `kith check` run as root would lock the
        // server out of it.
        None if t.builtin() => {
            let path = config.data_dir.join("turn.secret");
            match std::fs::read_to_string(&path) {
                Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
                Ok(_) => {
                    r.fail(
                        &format!("{} is empty", path.display()),
                        "delete it and restart kith",
                    );
                    return false;
                }
                Err(e) => {
                    r.fail(
                        &format!("cannot read the TURN secret {}: {e}", path.display()),
                        "start kith once (it creates the file), run kith check as the user kith runs as, or set [turn] secret",
                    );
                    return false;
                }
            }
        }
        None => {
            r.fail("[turn] has no secret", "set [turn] secret");
            return false;
        }
    };
    let bind_any: SocketAddr = if addr.is_ipv6() {
        "[::]:0".parse().unwrap_or(addr)
    } else {
        "0.0.0.0:0".parse().unwrap_or(addr)
    };
    let sock = match UdpSocket::bind(bind_any).and_then(|s| s.connect(addr).map(|_| s)) {
        Ok(s) => s,
        Err(e) => {
            r.fail(
                &format!("cannot open a UDP socket to {addr}: {e}"),
                "check the network",
            );
            return false;
        }
    };
    let _ = sock.set_read_timeout(Some(Duration::from_millis(500)));
    let mut client = Client { sock };

    // 1. STUN Binding.
    let Some(resp) = client.transact(Builder::new(Class::Request, stun::BINDING, Client::tid()))
    else {
        r.fail(
            &format!("no answer to a STUN Binding request on UDP {addr}"),
            "is the server running? Is UDP to this port allowed by the firewall / forwarded by the router?",
        );
        return false;
    };
    match resp.get_xor_address(stun::XOR_MAPPED_ADDRESS) {
        Some(mapped) => r.ok(&format!("STUN Binding over UDP: we are seen as {mapped}")),
        None => r.fail(
            "the Binding response has no XOR-MAPPED-ADDRESS",
            "this is not a working STUN server",
        ),
    }

    // STUN over TCP, on the same port.
    tcp_binding(&mut r, addr);

    // 2. Allocate: the challenge, then with credentials.
    let alloc_req = || {
        Builder::new(Class::Request, stun::ALLOCATE, [0; 12])
            .attr(stun::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
    };
    let Some(challenge) = client.transact(retid(alloc_req(), Client::tid())) else {
        r.fail(
            "no answer to an Allocate request",
            "the server answers STUN but not TURN",
        );
        return false;
    };
    let (Some(realm), Some(nonce)) = (
        challenge.get_str(stun::REALM).map(str::to_string),
        challenge.get_str(stun::NONCE).map(str::to_string),
    ) else {
        r.fail(
            &format!(
                "Allocate without credentials got {:?}, not a 401 challenge",
                challenge.error_code()
            ),
            "the server must use long-term credentials (coturn: use-auth-secret)",
        );
        return false;
    };
    let username = format!(
        "{}:kith-check@{}",
        crate::time::now_unix() + 600,
        config.domain
    );
    let password = alloc::rest_password(&secret, &username);
    let key = stun::long_term_key(&username, &realm, &password);
    let auth = |b: Builder, nonce: &str| {
        b.attr(stun::USERNAME, username.as_bytes())
            .attr(stun::REALM, realm.as_bytes())
            .attr(stun::NONCE, nonce.as_bytes())
            .integrity(Integrity::Sha1, &key)
    };
    let Some(resp) = client.transact(auth(retid(alloc_req(), Client::tid()), &nonce)) else {
        r.fail(
            "no answer to an authenticated Allocate",
            "check the server's log",
        );
        return false;
    };
    if resp.class != Class::Success {
        let code = resp.error_code();
        let fix = match code.as_ref().map(|c| c.0) {
            Some(401) => "the secret differs: [turn] secret must equal coturn's static-auth-secret",
            Some(486) | Some(508) => {
                "the server is at its allocation limits; try again later or raise them"
            }
            _ => "check the server's log",
        };
        r.fail(&format!("Allocate with credentials failed: {code:?}"), fix);
        return false;
    }
    let relayed = resp.get_xor_address(stun::XOR_RELAYED_ADDRESS);
    let Some(relayed) = relayed else {
        r.fail(
            "the Allocate response has no relayed address",
            "this is not a working TURN server",
        );
        return false;
    };
    if !resp.check_integrity(&key) {
        r.fail(
            "the Allocate response's MESSAGE-INTEGRITY is wrong",
            "check the server's realm and secret",
        );
    }
    r.ok(&format!(
        "TURN Allocate with credentials from the shared secret: relayed address {relayed}"
    ));
    if !alloc::peer_allowed(relayed.ip(), false, &[]) {
        r.note(&format!(
            "the relayed address {relayed} is not public: peers on the internet cannot reach it (fine on a LAN)"
        ));
    }

    // 3. CreatePermission for a documentation address (nothing is sent there).
    let doc_peer: SocketAddr = if relayed.is_ipv6() {
        "[2001:db8::1]:9".parse().unwrap_or(relayed)
    } else {
        "192.0.2.1:9".parse().unwrap_or(relayed)
    };
    let perm = |peer: SocketAddr, tid| {
        Builder::new(Class::Request, stun::CREATE_PERMISSION, tid)
            .xor_address(stun::XOR_PEER_ADDRESS, peer)
    };
    match client.transact(auth(perm(doc_peer, Client::tid()), &nonce)) {
        Some(m) if m.class == Class::Success => r.ok("CreatePermission"),
        other => r.fail(
            &format!(
                "CreatePermission failed: {:?}",
                other.and_then(|m| m.error_code())
            ),
            "check the server's log",
        ),
    }

    // 4. A datagram through the relay to a local echo socket, when the server may relay to it.
    let echo_ip = match relay_local_ip(addr) {
        Some(ip) => ip,
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    match UdpSocket::bind(SocketAddr::new(echo_ip, 0)) {
        Ok(echo) => {
            let _ = echo.set_read_timeout(Some(Duration::from_secs(2)));
            let echo_addr = echo.local_addr().unwrap_or(doc_peer);
            match client.transact(auth(perm(echo_addr, Client::tid()), &nonce)) {
                Some(m) if m.class == Class::Success => {
                    relay_round_trip(&mut r, &mut client, &echo, echo_addr, relayed);
                }
                Some(m) if m.error_code().map(|c| c.0) == Some(403) => r.note(&format!(
                    "the server refuses to relay to {echo_ip} (a private address), as it should on the internet; \
                     the relay round trip was not tried (allow_private_peers = true allows it, for tests)"
                )),
                other => r.fail(
                    &format!("CreatePermission for {echo_addr} failed: {:?}", other.and_then(|m| m.error_code())),
                    "check the server's log",
                ),
            }
        }
        Err(e) => r.note(&format!(
            "no local echo socket ({e}); relay round trip skipped"
        )),
    }

    // 5. Release the allocation.
    let release = Builder::new(Class::Request, stun::REFRESH, Client::tid()).u32(stun::LIFETIME, 0);
    match client.transact(auth(release, &nonce)) {
        Some(m) if m.class == Class::Success => {
            r.ok("Refresh with lifetime 0 released the allocation")
        }
        other => r.fail(
            &format!("Refresh failed: {:?}", other.and_then(|m| m.error_code())),
            "check the server's log",
        ),
    }
    if r.failed {
        println!("STUN/TURN: problems found (see above)");
    } else {
        println!("STUN/TURN: everything works");
    }
    !r.failed
}

fn relay_round_trip(
    r: &mut Report,
    client: &mut Client,
    echo: &UdpSocket,
    echo_addr: SocketAddr,
    relayed: SocketAddr,
) {
    let payload = b"kith check turn";
    let send = Builder::new(Class::Indication, stun::SEND, Client::tid())
        .xor_address(stun::XOR_PEER_ADDRESS, echo_addr)
        .attr(stun::DATA_ATTR, payload)
        .fingerprint();
    let _ = client.sock.send(&send);
    let mut buf = [0u8; 2048];
    match echo.recv_from(&mut buf) {
        Ok((n, from)) if &buf[..n] == payload => {
            r.ok(&format!(
                "a datagram went through the relay (arrived from {from})"
            ));
            let _ = echo.send_to(b"kith check echo", from);
            if from != relayed {
                r.note(&format!(
                    "it came from {from}, not the advertised {relayed}"
                ));
            }
        }
        _ => {
            r.fail(
                "the datagram sent through the relay did not arrive",
                "the server's relay ports may be blocked by a firewall",
            );
            return;
        }
    }
    for _ in 0..4 {
        match client.sock.recv(&mut buf) {
            Ok(n) => {
                if let Ok(m) = Message::parse(&buf[..n]) {
                    if m.method == stun::DATA
                        && m.get(stun::DATA_ATTR) == Some(&b"kith check echo"[..])
                    {
                        r.ok("the echo came back through the relay (Data indication)");
                        return;
                    }
                }
            }
            Err(_) => break,
        }
    }
    r.fail(
        "the echo did not come back through the relay",
        "check that the relay ports ([turn] relay_ports) are open for UDP",
    );
}

/// A STUN Binding over TCP (RFC 8489 §6.2.2).
fn tcp_binding(r: &mut Report, addr: SocketAddr) {
    use std::io::{Read as _, Write as _};
    let attempt = || -> std::io::Result<Option<SocketAddr>> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(&Builder::new(Class::Request, stun::BINDING, Client::tid()).fingerprint())?;
        let mut buf = vec![0u8; stun::HEADER_LEN];
        s.read_exact(&mut buf)?;
        let len = stun::stream_frame_len(&buf).unwrap_or(stun::HEADER_LEN);
        buf.resize(len.max(stun::HEADER_LEN), 0);
        s.read_exact(&mut buf[stun::HEADER_LEN..])?;
        Ok(Message::parse(&buf)
            .ok()
            .and_then(|m| m.get_xor_address(stun::XOR_MAPPED_ADDRESS)))
    };
    match attempt() {
        Ok(Some(mapped)) => r.ok(&format!("STUN Binding over TCP: we are seen as {mapped}")),
        Ok(None) => r.fail(
            "the Binding response over TCP has no XOR-MAPPED-ADDRESS",
            "this is not a working STUN server",
        ),
        Err(e) => r.fail(
            &format!("STUN over TCP {addr}: {e}"),
            "is TCP to this port allowed by the firewall / forwarded by the router?",
        ),
    }
}

/// The local address that routes to the server, for the echo socket.
fn relay_local_ip(server: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = if server.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    }
    .parse()
    .ok()?;
    let s = UdpSocket::bind(any).ok()?;
    s.connect(server).ok()?;
    Some(s.local_addr().ok()?.ip())
}

/// Gives a builder a fresh transaction id by rebuilding its header.
fn retid(b: Builder, tid: stun::Tid) -> Builder {
    let mut bytes = b.finish();
    bytes[8..20].copy_from_slice(&tid);
    Builder::from_bytes(bytes)
}

struct Client {
    sock: UdpSocket,
}

impl Client {
    fn tid() -> stun::Tid {
        let mut tid = [0u8; 12];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut tid);
        tid
    }

    /// Sends a request (with FINGERPRINT) and waits for its response, retransmitting
    /// (RFC 8489 §6.2.1, shortened for a command line).
    fn transact(&mut self, b: Builder) -> Option<Message> {
        let req = b.fingerprint();
        let mut buf = [0u8; 4096];
        for _ in 0..4 {
            self.sock.send(&req).ok()?;
            while let Ok(n) = self.sock.recv(&mut buf) {
                if let Ok(m) = Message::parse(&buf[..n]) {
                    if m.tid[..] == req[8..20] && m.class != Class::Indication {
                        return Some(m);
                    }
                }
            }
        }
        None
    }
}
