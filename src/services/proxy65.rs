//! XEP-0065 SOCKS5 Bytestreams: the proxy at `proxy.DOMAIN` (`[proxy65]`, as Prosody's
//! mod_proxy65), for clients that transfer files peer to peer but cannot reach each other.
//!
//! The XMPP side answers disco#info (identity `proxy/bytestreams`), the streamhost query
//! (§6.3.4: JID, host, port) and activation (§6.3.5). The TCP side speaks the subset of
//! SOCKS5 (RFC 1928) that XEP-0065 uses: no authentication, CONNECT to a DOMAINNAME that is
//! hex SHA-1(SID + initiator JID + target JID), port 0. Both parties connect with the same
//! name; the pair waits until the initiator sends `<activate/>`, whose hash is computed from
//! the iq's stamped `from`, so only the initiator can activate, and only its own pair. Then the
//! proxy relays both ways with a per-transfer rate limit, and at most `max_concurrent`
//! transfers run at once.
//!
//! The SOCKS5 parsing is pure (`parse_greeting`, `parse_connect`); the listener, the waiting
//! pairs and the relay are at the end of the file.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use smol::Executor;

use crate::jid::{FullJid, Jid};
use crate::router::{bounce, deliver_reply};
use crate::server::Server;
use crate::stanza::{self, ns, Condition, StanzaError};
use crate::xml::Element;

pub const NS_BYTESTREAMS: &str = "http://jabber.org/protocol/bytestreams";

// ---------------------------------------------------------------- SOCKS5, pure

const SOCKS_VERSION: u8 = 5;
const METHOD_NO_AUTH: u8 = 0;
const METHOD_NONE_ACCEPTABLE: u8 = 0xff;
const CMD_CONNECT: u8 = 1;
const ATYP_DOMAIN: u8 = 3;
/// RFC 1928 §6 replies.
const REPLY_OK: u8 = 0;
const REPLY_NOT_ALLOWED: u8 = 2;
const REPLY_COMMAND_UNSUPPORTED: u8 = 7;
const REPLY_ADDRESS_UNSUPPORTED: u8 = 8;

/// The outcome of parsing a SOCKS5 message from the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse<T> {
    /// Not all of it yet.
    Incomplete,
    /// The message and how many bytes it took.
    Done(T, usize),
    /// Not a message this proxy accepts: the reply code to send (when the protocol has one)
    /// and why, for the log.
    Refused(Option<u8>, &'static str),
}

/// The method-selection message (RFC 1928 §3): whether "no authentication" is offered.
pub fn parse_greeting(buf: &[u8]) -> Parse<bool> {
    match buf {
        [] | [_] => Parse::Incomplete,
        [v, ..] if *v != SOCKS_VERSION => Parse::Refused(None, "not SOCKS version 5"),
        [_, n, methods @ ..] => {
            let n = *n as usize;
            if methods.len() < n {
                return Parse::Incomplete;
            }
            Parse::Done(methods[..n].contains(&METHOD_NO_AUTH), 2 + n)
        }
    }
}

/// The answer to a greeting.
pub fn greeting_reply(no_auth_offered: bool) -> [u8; 2] {
    let method = if no_auth_offered {
        METHOD_NO_AUTH
    } else {
        METHOD_NONE_ACCEPTABLE
    };
    [SOCKS_VERSION, method]
}

/// The CONNECT request (RFC 1928 §4) as XEP-0065 §5.3.2 uses it: the destination is a
/// DOMAINNAME of 40 lowercase hex digits (the SHA-1); the port is ignored (it should be 0).
pub fn parse_connect(buf: &[u8]) -> Parse<String> {
    if buf.len() < 5 {
        return Parse::Incomplete;
    }
    if buf[0] != SOCKS_VERSION {
        return Parse::Refused(None, "not SOCKS version 5");
    }
    if buf[1] != CMD_CONNECT {
        return Parse::Refused(Some(REPLY_COMMAND_UNSUPPORTED), "not a CONNECT");
    }
    if buf[3] != ATYP_DOMAIN {
        return Parse::Refused(
            Some(REPLY_ADDRESS_UNSUPPORTED),
            "the destination is not a DOMAINNAME",
        );
    }
    let len = buf[4] as usize;
    let total = 5 + len + 2;
    if buf.len() < total {
        return Parse::Incomplete;
    }
    let name = &buf[5..5 + len];
    let hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
    if len != 40 || !name.iter().all(hex) {
        return Parse::Refused(
            Some(REPLY_NOT_ALLOWED),
            "the destination is not a hex SHA-1",
        );
    }
    // Checked ASCII above.
    Parse::Done(String::from_utf8_lossy(name).into_owned(), total)
}

/// The reply to a CONNECT: `code`, with the requested name echoed as the bound address
/// (XEP-0065 §5.3.3; clients compare it).
pub fn connect_reply(code: u8, name: &str) -> Vec<u8> {
    let name = &name.as_bytes()[..name.len().min(255)];
    let mut out = vec![SOCKS_VERSION, code, 0, ATYP_DOMAIN, name.len() as u8];
    out.extend_from_slice(name);
    out.extend_from_slice(&[0, 0]);
    out
}

/// XEP-0065 §5.3.2: hex SHA-1 of SID + initiator's full JID + target's full JID.
pub fn dst_addr(sid: &str, initiator: &str, target: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(sid.as_bytes());
    ctx.update(initiator.as_bytes());
    ctx.update(target.as_bytes());
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------- XMPP side

/// The proxy's address, `proxy.DOMAIN`, when `[proxy65] enabled`.
pub fn service_domain(srv: &Server) -> Option<String> {
    srv.config
        .proxy65
        .enabled
        .then(|| format!("proxy.{}", srv.config.domain))
}

pub fn is_service(srv: &Server, domain: &str) -> bool {
    service_domain(srv).is_some_and(|d| d == domain)
}

/// The streamhost clients are told to connect to: `public_host` (default the domain) and the
/// port of the first listen address.
fn streamhost(srv: &Server, jid: &str) -> Element {
    let cfg = &srv.config.proxy65;
    let host = cfg.public_host.as_deref().unwrap_or(&srv.config.domain);
    let port = cfg.listen.first().map_or(5000, SocketAddr::port);
    Element::new("streamhost", NS_BYTESTREAMS)
        .with_attr("jid", jid)
        .with_attr("host", host)
        .with_attr("port", port.to_string())
}

/// An iq to `proxy.DOMAIN`. Only local users (`from` Some) may use the proxy; others may
/// discover it.
pub async fn handle_iq(srv: &Server, from: Option<&FullJid>, iq: Element) {
    if stanza::must_not_answer(&iq) {
        return;
    }
    let Some(domain) = service_domain(srv) else {
        return bounce(srv, &iq, Condition::ServiceUnavailable.into());
    };
    let get = iq.attr("type") == Some("get");
    let Some(payload) = iq.first_child() else {
        return bounce(srv, &iq, Condition::BadRequest.into());
    };
    match (payload.ns(), payload.name(), get, from) {
        (ns::DISCO_INFO, "query", true, _) => {
            let mut q = Element::new("query", ns::DISCO_INFO);
            if let Some(node) = payload.attr("node") {
                q.set_attr("node", node);
            } else {
                q.push_child(
                    Element::new("identity", ns::DISCO_INFO)
                        .with_attr("category", "proxy")
                        .with_attr("type", "bytestreams")
                        .with_attr("name", "SOCKS5 Bytestreams"),
                );
                for f in [ns::DISCO_INFO, NS_BYTESTREAMS] {
                    q.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", f));
                }
            }
            deliver_reply(srv, stanza::iq_result(&iq, Some(q)));
        }
        (ns::DISCO_ITEMS, "query", true, _) => {
            let q = Element::new("query", ns::DISCO_ITEMS);
            deliver_reply(srv, stanza::iq_result(&iq, Some(q)));
        }
        (NS_BYTESTREAMS, "query", _, None) => bounce(srv, &iq, Condition::Forbidden.into()),
        (NS_BYTESTREAMS, "query", true, Some(_)) => {
            let q = Element::new("query", NS_BYTESTREAMS).with_child(streamhost(srv, &domain));
            deliver_reply(srv, stanza::iq_result(&iq, Some(q)));
        }
        (NS_BYTESTREAMS, "query", false, Some(from)) => match activate(srv, from, payload) {
            Ok(()) => deliver_reply(srv, stanza::iq_result(&iq, None)),
            Err(e) => bounce(srv, &iq, e),
        },
        _ => bounce(srv, &iq, Condition::ServiceUnavailable.into()),
    }
}

/// §6.3.5: the initiator asks to join its connection with the target's.
fn activate(srv: &Server, from: &FullJid, query: &Element) -> Result<(), StanzaError> {
    let sid = query
        .attr("sid")
        .filter(|s| !s.is_empty())
        .ok_or(Condition::BadRequest)?;
    let target = query
        .get_child("activate", NS_BYTESTREAMS)
        .map(|a| a.text())
        .ok_or(Condition::BadRequest)?;
    let target = Jid::parse(target.trim()).map_err(|_| Condition::JidMalformed)?;
    // The hash names the requester: another JID's activation finds no pair.
    let name = dst_addr(sid, from.as_str(), target.as_str());
    let state = &srv.proxy65;
    let cfg = &srv.config.proxy65;
    let pair = state.take_pair(&name, Instant::now(), cfg.idle_timeout);
    let Some((a, b)) = pair else {
        log::info!("proxy65: {from} activated sid {sid} with no connected pair");
        return Err(StanzaError::new(Condition::ItemNotFound)
            .with_text("both parties must be connected to the proxy first"));
    };
    if state.active.load(Ordering::SeqCst) >= cfg.max_concurrent {
        log::warn!(
            "proxy65: refused a transfer for {from}: {} already running ([proxy65] max_concurrent)",
            cfg.max_concurrent
        );
        return Err(StanzaError::new(Condition::ResourceConstraint)
            .with_text("too many transfers at once; try again later"));
    }
    state.active.fetch_add(1, Ordering::SeqCst);
    if state.activations.0.try_send((a, b)).is_err() {
        state.active.fetch_sub(1, Ordering::SeqCst);
        return Err(Condition::ResourceConstraint.into());
    }
    log::info!("proxy65: {from} activated a transfer to {target}");
    Ok(())
}

// ---------------------------------------------------------------- TCP side

/// Connections waiting for their peer or for activation, and the relays running.
pub struct State {
    waiting: Mutex<HashMap<String, Waiting>>,
    active: AtomicUsize,
    /// Activated pairs, handed to the listener task that spawns their relay.
    activations: (async_channel::Sender<Pair>, async_channel::Receiver<Pair>),
}

/// The two connections of one transfer.
type Pair = (TcpStream, TcpStream);

struct Waiting {
    streams: Vec<TcpStream>,
    since: Instant,
}

/// At most this many connections wait at once; more are refused (a flood of handshakes
/// cannot grow the map without bound).
const MAX_WAITING: usize = 256;

impl Default for State {
    fn default() -> State {
        State {
            waiting: Mutex::new(HashMap::new()),
            active: AtomicUsize::new(0),
            activations: async_channel::bounded(16),
        }
    }
}

impl State {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiting>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a handshaken connection under `name`; false when it cannot wait (a third
    /// connection for one name, or too many waiting).
    fn park(&self, name: String, stream: TcpStream, now: Instant, idle: Duration) -> bool {
        let mut map = self.lock();
        map.retain(|_, w| now.duration_since(w.since) < idle);
        if map.values().map(|w| w.streams.len()).sum::<usize>() >= MAX_WAITING {
            return false;
        }
        let w = map.entry(name).or_insert_with(|| Waiting {
            streams: Vec::new(),
            since: now,
        });
        if w.streams.len() >= 2 {
            return false;
        }
        w.streams.push(stream);
        true
    }

    fn take_pair(
        &self,
        name: &str,
        now: Instant,
        idle: Duration,
    ) -> Option<(TcpStream, TcpStream)> {
        let mut map = self.lock();
        map.retain(|_, w| now.duration_since(w.since) < idle);
        if map.get(name).is_none_or(|w| w.streams.len() < 2) {
            return None;
        }
        let mut w = map.remove(name)?;
        let b = w.streams.pop()?;
        let a = w.streams.pop()?;
        Some((a, b))
    }
}

/// Binds the listen addresses when the proxy is enabled.
pub fn bind(config: &crate::config::Config) -> std::io::Result<Vec<std::net::TcpListener>> {
    if !config.proxy65.enabled {
        return Ok(Vec::new());
    }
    config
        .proxy65
        .listen
        .iter()
        .map(|addr| {
            let l = std::net::TcpListener::bind(addr)
                .or_else(|e| match addr {
                    // An IPv6 wildcard on a host without IPv6: the IPv4 wildcard.
                    SocketAddr::V6(v6) if v6.ip().is_unspecified() => {
                        std::net::TcpListener::bind(("0.0.0.0", addr.port()))
                    }
                    _ => Err(e),
                })
                .map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!(
                            "cannot listen for proxy65 on {addr}: {e} (change [proxy65] listen)"
                        ),
                    )
                })?;
            l.set_nonblocking(true)?;
            log::info!("listening for proxy65 on {}", l.local_addr()?);
            Ok(l)
        })
        .collect()
}

/// Accepts SOCKS5 connections and runs activated relays, until cancelled.
pub async fn serve(ex: Arc<Executor<'static>>, srv: Arc<Server>, listener: std::net::TcpListener) {
    let listener = match TcpListener::try_from(listener) {
        Ok(l) => l,
        Err(e) => return log::error!("proxy65: cannot use the listener: {e}"),
    };
    let relays = {
        let (ex, srv) = (ex.clone(), srv.clone());
        async move {
            while let Ok((a, b)) = srv.proxy65.activations.1.recv().await {
                let srv = srv.clone();
                ex.spawn(async move {
                    let cfg = &srv.config.proxy65;
                    let (up, down) = futures_lite::future::zip(
                        pump(a.clone(), b.clone(), cfg.max_rate, cfg.idle_timeout),
                        pump(b, a, cfg.max_rate, cfg.idle_timeout),
                    )
                    .await;
                    srv.proxy65.active.fetch_sub(1, Ordering::SeqCst);
                    log::info!("proxy65: transfer ended after {up} and {down} bytes");
                })
                .detach();
            }
        }
    };
    let accept = async {
        loop {
            match listener.accept().await {
                Ok((tcp, _)) => {
                    let srv = srv.clone();
                    ex.spawn(async move {
                        if let Err(e) = handshake(&srv, tcp).await {
                            log::debug!("proxy65: handshake failed: {e}");
                        }
                    })
                    .detach();
                }
                Err(e) => {
                    log::warn!("proxy65 accept failed: {e}; retrying in 100 ms");
                    smol::Timer::after(Duration::from_millis(100)).await;
                }
            }
        }
    };
    futures_lite::future::or(accept, relays).await;
}

/// Reads until `parse` has a whole message, within the deadline.
async fn read_message<T>(
    tcp: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
    parse: impl Fn(&[u8]) -> Parse<T>,
) -> Result<T, String> {
    loop {
        match parse(buf) {
            Parse::Done(v, used) => {
                buf.drain(..used);
                return Ok(v);
            }
            Parse::Refused(code, why) => {
                if let Some(code) = code {
                    let _ = tcp.write_all(&connect_reply(code, "")).await;
                }
                return Err(why.into());
            }
            Parse::Incomplete if buf.len() > 512 => return Err("oversized message".into()),
            Parse::Incomplete => {}
        }
        let mut chunk = [0u8; 512];
        let n = crate::net::with_deadline(tcp.read(&mut chunk), deadline)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed during the handshake".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn handshake(srv: &Server, mut tcp: TcpStream) -> Result<(), String> {
    let _ = tcp.set_nodelay(true);
    let idle = srv.config.proxy65.idle_timeout;
    let deadline = Instant::now() + idle.min(Duration::from_secs(30));
    let mut buf = Vec::new();
    let no_auth = read_message(&mut tcp, &mut buf, deadline, parse_greeting).await?;
    tcp.write_all(&greeting_reply(no_auth))
        .await
        .map_err(|e| e.to_string())?;
    if !no_auth {
        return Err("the client offered no method without authentication".into());
    }
    let name = read_message(&mut tcp, &mut buf, deadline, parse_connect).await?;
    if !buf.is_empty() {
        return Err("data before activation".into());
    }
    if !srv
        .proxy65
        .park(name.clone(), tcp.clone(), Instant::now(), idle)
    {
        let _ = tcp
            .write_all(&connect_reply(REPLY_NOT_ALLOWED, &name))
            .await;
        return Err("too many waiting connections".into());
    }
    tcp.write_all(&connect_reply(REPLY_OK, &name))
        .await
        .map_err(|e| e.to_string())
}

/// Copies `from` to `to` at most `rate` bytes/s, until EOF, an error or `idle` without data;
/// then half-closes `to`. Returns the bytes copied.
async fn pump(mut from: TcpStream, mut to: TcpStream, rate: u64, idle: Duration) -> u64 {
    let start = Instant::now();
    let mut total: u64 = 0;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match crate::net::with_deadline(from.read(&mut buf), Instant::now() + idle).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        total += n as u64;
        if let Some(due) = rate_due(start, total, rate) {
            smol::Timer::at(due).await;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
    total
}

/// When `total` bytes may have been sent at `rate` bytes/s since `start`: the relay sleeps
/// until then, so a transfer averages at most the rate.
fn rate_due(start: Instant, total: u64, rate: u64) -> Option<Instant> {
    let rate = rate.max(1);
    let secs = total / rate;
    let nanos = (total % rate).saturating_mul(1_000_000_000) / rate;
    start.checked_add(Duration::new(secs, nanos as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_needs_no_auth() {
        assert_eq!(parse_greeting(&[5]), Parse::Incomplete);
        assert_eq!(parse_greeting(&[5, 2, 0]), Parse::Incomplete);
        assert_eq!(parse_greeting(&[5, 2, 2, 0]), Parse::Done(true, 4));
        assert_eq!(parse_greeting(&[5, 1, 2, 9]), Parse::Done(false, 3));
        assert!(matches!(
            parse_greeting(&[4, 1, 0]),
            Parse::Refused(None, _)
        ));
        assert_eq!(greeting_reply(true), [5, 0]);
        assert_eq!(greeting_reply(false), [5, 0xff]);
    }

    #[test]
    fn connect_takes_a_hex_sha1_domainname() {
        let name = dst_addr("sid", "a@x/r", "b@x/r");
        assert_eq!(name.len(), 40);
        let mut req = vec![5, 1, 0, 3, 40];
        req.extend_from_slice(name.as_bytes());
        req.extend_from_slice(&[0, 0]);
        assert_eq!(parse_connect(&req), Parse::Done(name.clone(), req.len()));
        // Every prefix is incomplete, never refused or a panic.
        for cut in 0..req.len() {
            assert_eq!(parse_connect(&req[..cut]), Parse::Incomplete, "cut {cut}");
        }
        let mut bind = req.clone();
        bind[1] = 2;
        assert!(matches!(
            parse_connect(&bind),
            Parse::Refused(Some(REPLY_COMMAND_UNSUPPORTED), _)
        ));
        let mut ipv4 = req.clone();
        ipv4[3] = 1;
        assert!(matches!(
            parse_connect(&ipv4),
            Parse::Refused(Some(REPLY_ADDRESS_UNSUPPORTED), _)
        ));
        let mut upper = req.clone();
        upper[5] = b'G';
        assert!(matches!(parse_connect(&upper), Parse::Refused(Some(2), _)));
        let reply = connect_reply(REPLY_OK, &name);
        assert_eq!(&reply[..5], &[5, 0, 0, 3, 40]);
        assert_eq!(reply.len(), 5 + 40 + 2);
    }

    /// XEP-0065 §5.3.2 example: SID `vxf9n471bn46`, requester `requester@example.com/foo`,
    /// target `target@example.org/bar`.
    #[test]
    fn dst_addr_is_the_xep_example() {
        let ours = dst_addr(
            "vxf9n471bn46",
            "requester@example.com/foo",
            "target@example.org/bar",
        );
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
        ctx.update(b"vxf9n471bn46requester@example.com/footarget@example.org/bar");
        let want: String = ctx
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(ours, want);
        assert!(ours
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }

    #[test]
    fn the_rate_spreads_bytes_over_time() {
        let t0 = Instant::now();
        assert_eq!(rate_due(t0, 1000, 1000), Some(t0 + Duration::from_secs(1)));
        assert_eq!(
            rate_due(t0, 500, 1000),
            Some(t0 + Duration::from_millis(500))
        );
        assert_eq!(rate_due(t0, 0, 0), Some(t0));
    }
}
