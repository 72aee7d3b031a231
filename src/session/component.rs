//! XEP-0114 Jabber Component Protocol: a gateway or bot (Slidge, Biboumi, Spectrum2) connects
//! to `[listen] components`, names its domain in the stream header's `to`, and proves it knows
//! the shared secret from `[components]` with `<handshake>hex(SHA-1(stream id + secret))`.
//! After that, stanzas from the component go to the router (`router::route_from_remote`)
//! and stanzas for its domain come back through the registry's queue.
//!
//! One connection per component: a new authenticated connection replaces the old one (which
//! is closed with a `conflict` stream error), so a gateway that restarts after its old TCP
//! connection went half-open is not locked out.
//!
//! On the wire, stanzas are in `jabber:component:accept`; inside kith they are in
//! `jabber:client`, like a local user's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::queue::{Receiver, Sender};
use futures_lite::{AsyncRead, AsyncWrite, FutureExt as _};
use smol::net::{TcpListener, TcpStream};
use smol::Executor;

use crate::jid::Jid;
use crate::router;
use crate::server::Server;
use crate::session::c2s::{check_iq, new_id};
use crate::session::stream::{End, XmlStream};
use crate::sessions::Outbound;
use crate::stanza::{ns, Kind, StreamError};
use crate::xml::{escape_attr_value, Element, Frame, Limits};

/// The stream namespace of XEP-0114.
pub const NS_ACCEPT: &str = "jabber:component:accept";
/// Delay before answering a wrong handshake, so guessing secrets is slow (like c2s).
const FAILURE_DELAY: Duration = Duration::from_secs(1);
/// Stanzas written per batch when the queue has several waiting.
const WRITE_BATCH: usize = 64;

/// The connected components, by domain.
#[derive(Default)]
pub struct Registry {
    map: RwLock<HashMap<String, Link>>,
}

#[derive(Clone)]
struct Link {
    conn: u64,
    tx: Sender<Outbound>,
}

impl Registry {
    /// Registers `domain`'s connection; returns the queue of the connection it replaces.
    fn connect(&self, domain: &str, conn: u64, tx: Sender<Outbound>) -> Option<Sender<Outbound>> {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        map.insert(domain.to_string(), Link { conn, tx })
            .map(|l| l.tx)
    }

    /// Removes `domain`'s entry if it still belongs to `conn`.
    fn disconnect(&self, domain: &str, conn: u64) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if map.get(domain).is_some_and(|l| l.conn == conn) {
            map.remove(domain);
        }
    }

    /// The queue of the component serving `domain`, if it is connected.
    pub fn sender(&self, domain: &str) -> Option<Sender<Outbound>> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(domain).map(|l| l.tx.clone())
    }

    /// Every connected component's queue (for shutdown).
    pub fn all(&self) -> Vec<Sender<Outbound>> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.values().map(|l| l.tx.clone()).collect()
    }
}

/// Accepts component connections on one listener.
pub async fn accept_loop(ex: Arc<Executor<'static>>, srv: Arc<Server>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let id = srv.next_conn_id();
                ex.spawn(connection(srv.clone(), tcp, peer, id)).detach();
            }
            Err(e) => {
                log::warn!("component accept failed: {e}; retrying in 100 ms");
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(srv: Arc<Server>, tcp: TcpStream, peer: SocketAddr, conn: u64) {
    srv.open_conns.fetch_add(1, Ordering::SeqCst);
    let _ = tcp.set_nodelay(true);
    let tag = format!("component#{conn}");
    if let Err(panic) = AssertUnwindSafe(serve(&srv, tcp, peer, conn, &tag))
        .catch_unwind()
        .await
    {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        log::error!("{tag}: bug: component task panicked: {msg}; the connection was dropped");
    }
    srv.open_conns.fetch_sub(1, Ordering::SeqCst);
}

/// Removes the registry entry however the connection ends.
struct Registered<'a> {
    srv: &'a Server,
    domain: String,
    conn: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.srv.components.disconnect(&self.domain, self.conn);
    }
}

async fn serve(srv: &Server, tcp: TcpStream, peer: SocketAddr, conn: u64, tag: &str) {
    log::debug!("{tag}: connection from {peer}");
    let limits = Limits {
        max_stanza_bytes: srv.config.limits.max_stanza_size,
        ..Limits::default()
    };
    let mut xs = XmlStream::new(tcp, limits);
    let id = new_id();
    let deadline = Instant::now() + srv.config.limits.auth_timeout;
    let domain = match handshake(srv, &mut xs, &id, deadline, tag, peer).await {
        Ok(domain) => domain,
        Err(end) => return finish(srv, &mut xs, tag, &id, None, end).await,
    };
    // Bounded by the router, which checks MAX_QUEUE before sending.
    let (tx, rx) = crate::queue::unbounded();
    if let Some(old) = srv.components.connect(&domain, conn, tx) {
        log::info!("{tag}: {domain} connected again; closing its previous connection");
        let _ = old.try_send(Outbound::Close(StreamError::Conflict));
    }
    let _guard = Registered {
        srv,
        domain: domain.clone(),
        conn,
    };
    log::info!("{tag}: component {domain} connected from {peer}");
    let end = match xs.send_raw(b"<handshake/>").await {
        Ok(()) => run(srv, &mut xs, &domain, &rx).await,
        Err(e) => End::Io(e),
    };
    finish(srv, &mut xs, tag, &id, Some(&domain), end).await;
}

/// The XEP-0114 §3 handshake; returns the authenticated component's domain.
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    srv: &Server,
    xs: &mut XmlStream<S>,
    id: &str,
    deadline: Instant,
    tag: &str,
    peer: SocketAddr,
) -> Result<String, End> {
    let header = match xs.next_frame(deadline).await? {
        Frame::StreamOpen(h) => h,
        _ => return Err(End::Error(StreamError::NotWellFormed, None)),
    };
    let to = header
        .attr("to")
        .unwrap_or_default()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    send_header(xs, if to.is_empty() { srv.domain() } else { &to }, id).await?;
    if header.default_ns() != NS_ACCEPT {
        return Err(End::Error(StreamError::InvalidNamespace, None));
    }
    let Some(component) = srv.config.components.iter().find(|c| c.domain == to) else {
        log::warn!("{tag}: component connection from {peer} for unknown domain '{to}'");
        return Err(End::Error(
            StreamError::HostUnknown,
            Some("no component with that name is configured"),
        ));
    };
    let el = match xs.next_frame(deadline).await? {
        Frame::Element(el) if el.name() == "handshake" && el.ns() == NS_ACCEPT => el,
        Frame::StreamClose => return Err(End::Closed),
        _ => return Err(End::Error(StreamError::NotAuthorized, None)),
    };
    let expected = digest(id, &component.secret);
    let given = el.text().trim().to_ascii_lowercase();
    if !constant_time_eq(expected.as_bytes(), given.as_bytes()) {
        log::warn!("{tag}: component {to} from {peer}: wrong handshake (secret mismatch)");
        smol::Timer::after(FAILURE_DELAY).await;
        return Err(End::Error(StreamError::NotAuthorized, None));
    }
    Ok(component.domain.clone())
}

/// `hex(SHA-1(id + secret))`, lowercase (XEP-0114 §3).
pub fn digest(id: &str, secret: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(id.as_bytes());
    ctx.update(secret.as_bytes());
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn send_header<S: AsyncRead + AsyncWrite + Unpin>(
    xs: &mut XmlStream<S>,
    from: &str,
    id: &str,
) -> std::io::Result<()> {
    let h = format!(
        "<?xml version='1.0'?><stream:stream xmlns='{NS_ACCEPT}' xmlns:stream='{}' id='{id}' from='{}'>",
        ns::STREAM,
        escape_attr_value(from)
    );
    xs.header_sent = true;
    xs.send_raw(h.as_bytes()).await
}

enum Event {
    Read(std::io::Result<usize>),
    Out(Result<Outbound, crate::queue::RecvError>),
}

async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    srv: &Server,
    xs: &mut XmlStream<S>,
    domain: &str,
    rx: &Receiver<Outbound>,
) -> End {
    loop {
        let event = {
            let out = async { Event::Out(rx.recv().await) };
            let read = async { Event::Read(xs.fill().await) };
            out.or(read).await
        };
        let result = match event {
            Event::Read(Ok(0)) => Err(End::Eof),
            Event::Read(Ok(_)) => incoming(srv, xs, domain).await,
            Event::Read(Err(e)) => Err(End::Io(e)),
            Event::Out(Ok(first)) => outgoing(xs, rx, first).await,
            Event::Out(Err(_)) => Err(End::Error(StreamError::PolicyViolation, None)),
        };
        if let Err(end) = result {
            return end;
        }
    }
}

async fn incoming<S: AsyncRead + AsyncWrite + Unpin>(
    srv: &Server,
    xs: &mut XmlStream<S>,
    domain: &str,
) -> Result<(), End> {
    while let Some(frame) = xs.ready_frame()? {
        match frame {
            Frame::Element(el) => stanza(srv, domain, el).await?,
            Frame::StreamClose => return Err(End::Closed),
            Frame::StreamOpen(_) => return Err(End::Error(StreamError::NotWellFormed, None)),
        }
    }
    Ok(())
}

/// A stanza from the component: its `from` must be at the component's domain (missing means
/// the domain itself, as Prosody does); then it is routed like any local user's.
async fn stanza(srv: &Server, domain: &str, mut el: Element) -> Result<(), End> {
    el.replace_ns(NS_ACCEPT, ns::CLIENT);
    if Kind::of(&el).is_none() {
        return Err(End::Error(StreamError::UnsupportedStanzaType, None));
    }
    let from = match el.attr("from") {
        None => match Jid::parse(domain) {
            Ok(j) => j,
            Err(_) => return Err(End::Error(StreamError::InternalServerError, None)),
        },
        Some(f) => match Jid::parse(f) {
            Ok(j) if j.domain() == domain => j,
            _ => return Err(End::Error(StreamError::InvalidFrom, None)),
        },
    };
    el.set_attr("from", from.to_string());
    if el.name() == "iq" {
        if let Err(e) = check_iq(&el) {
            router::bounce(srv, &el, e.into());
            return Ok(());
        }
    }
    router::route_from_remote(srv, &from, el).await;
    Ok(())
}

async fn outgoing<S: AsyncRead + AsyncWrite + Unpin>(
    xs: &mut XmlStream<S>,
    rx: &Receiver<Outbound>,
    first: Outbound,
) -> Result<(), End> {
    let mut out = Vec::with_capacity(256);
    let mut next = Some(first);
    let mut end = None;
    let mut n = 0;
    while let Some(item) = next.take() {
        match item {
            Outbound::Stanza(mut el) => {
                el.replace_ns(ns::CLIENT, NS_ACCEPT);
                el.write_to(&mut out, NS_ACCEPT);
            }
            Outbound::Close(cond) => end = Some(End::Error(cond, None)),
            Outbound::Shutdown => end = Some(End::Shutdown),
        }
        n += 1;
        if end.is_some() || n >= WRITE_BATCH {
            break;
        }
        next = rx.try_recv().ok();
    }
    if !out.is_empty() {
        xs.send_raw(&out).await?;
    }
    end.map_or(Ok(()), Err)
}

async fn finish<S: AsyncRead + AsyncWrite + Unpin>(
    srv: &Server,
    xs: &mut XmlStream<S>,
    tag: &str,
    id: &str,
    domain: Option<&str>,
    end: End,
) {
    let who = domain.unwrap_or("component");
    match end {
        End::Error(cond, text) => {
            log::info!("{tag}: {who}: closing with stream error {cond}");
            if !xs.header_sent {
                let _ = send_header(xs, domain.unwrap_or(srv.domain()), id).await;
            }
            xs.send_error(srv.domain(), id, cond, text).await;
        }
        End::Closed => {
            log::info!("{tag}: {who}: stream closed by the component");
            xs.close().await;
        }
        End::Shutdown => xs.close().await,
        End::PeerError(cond) => {
            log::info!("{tag}: {who}: the component sent stream error {cond}");
            xs.close().await;
        }
        End::Eof => log::info!("{tag}: {who}: connection closed by the component"),
        End::Io(e) => log::info!("{tag}: {who}: connection lost: {e}"),
        End::Takeover(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_digest_is_xep_0114_example() {
        // Checked against Python's hashlib.sha1(b"3BF96D32secret").
        assert_eq!(
            digest("3BF96D32", "secret"),
            "b09ea9b3b7f586be8a08d0a3dd7466f110aeb136"
        );
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
