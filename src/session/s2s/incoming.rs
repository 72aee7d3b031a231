//! Incoming server-to-server connections on `[listen] s2s` (STARTTLS) and `s2s_direct_tls`
//! (XEP-0368, ALPN `xmpp-server`): TLS, then the peer authenticates (SASL EXTERNAL with a
//! certificate valid for its domain, or dialback, which we check with the peer's
//! authoritative server over an outgoing link), then its stanzas go to the router.
//!
//! `s2s::stream::Incoming` decides everything; in particular a stanza reaches the router only
//! if its `from` and `to` domains are a pair authenticated on this stream.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite, FutureExt as _};
use futures_rustls::server::TlsStream;
use futures_rustls::TlsAcceptor;
use smol::net::{TcpListener, TcpStream};
use smol::Executor;

use super::{close, send_element, send_header, Running};
use crate::jid::Jid;
use crate::router;
use crate::s2s::stream::{Action, Facts, Incoming};
use crate::s2s::NS_SERVER;
use crate::server::Server;
use crate::session::c2s::check_iq;
use crate::session::stream::{End, XmlStream};
use crate::stanza::{ns, Kind, StreamError};
use crate::xml::{Element, Limits};

/// How long we wait for the authoritative server to answer a `<db:verify/>`, beyond the
/// time the outgoing link may take to connect.
const VERIFY_SLACK: Duration = Duration::from_secs(10);

pub async fn accept_loop(
    ex: Arc<Executor<'static>>,
    srv: Arc<Server>,
    listener: TcpListener,
    direct_tls: bool,
) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let id = srv.next_conn_id();
                let _ = tcp.set_nodelay(true);
                let transport = if direct_tls {
                    Transport::Direct(tcp)
                } else {
                    Transport::StartTls(tcp)
                };
                ex.spawn(connection(srv.clone(), transport, peer, id))
                    .detach();
            }
            Err(e) => {
                log::warn!("s2s accept failed: {e}; retrying in 100 ms");
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

/// How an incoming connection arrived.
enum Transport {
    /// `[listen] s2s`: plaintext until `<starttls/>`.
    StartTls(TcpStream),
    /// `[listen] s2s_direct_tls`: TLS from the first byte.
    Direct(TcpStream),
    /// The HTTPS port, which read the ClientHello to see the ALPN `xmpp-server`.
    Started(Box<futures_rustls::StartHandshake<TcpStream>>),
}

/// Incoming federation over direct TLS on the HTTPS port (XEP-0368 with ALPN
/// `xmpp-server`), whose ClientHello `http` already read.
pub async fn serve_started(
    srv: Arc<Server>,
    start: futures_rustls::StartHandshake<TcpStream>,
    peer: SocketAddr,
    id: u64,
) {
    connection(srv, Transport::Started(Box::new(start)), peer, id).await
}

async fn connection(srv: Arc<Server>, transport: Transport, peer: SocketAddr, id: u64) {
    let tag = format!("s2sin#{id}");
    let Some(_slot) = srv.s2s.admit(peer.ip()) else {
        log::warn!("{tag}: too many connections from {}; refused", peer.ip());
        return;
    };
    srv.open_conns.fetch_add(1, Ordering::SeqCst);
    let task = AssertUnwindSafe(serve(&srv, transport, peer, id, &tag)).catch_unwind();
    if task.await.is_err() {
        log::error!("{tag}: bug: task panicked; the connection was dropped");
    }
    srv.s2s.ended_in(id);
    srv.open_conns.fetch_sub(1, Ordering::SeqCst);
}

async fn serve(srv: &Server, transport: Transport, peer: SocketAddr, id: u64, tag: &str) {
    let Some(running) = srv.s2s.running() else {
        return;
    };
    log::debug!(
        "{tag}: connection from {peer} ({})",
        match transport {
            Transport::StartTls(_) => "STARTTLS",
            Transport::Direct(_) => "direct TLS",
            Transport::Started(_) => "direct TLS on the https port",
        }
    );
    let deadline = Instant::now() + srv.config.limits.auth_timeout;
    let limits = Limits {
        max_stanza_bytes: srv.config.limits.max_stanza_size,
        ..Limits::default()
    };
    let local = running.policy.local.as_str();
    let mut state = Incoming::new(running.policy.clone());
    type Handshake = std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<TlsStream<TcpStream>>> + Send>,
    >;
    let (handshake, pending): (Handshake, _) = match transport {
        Transport::Direct(tcp) => (
            Box::pin(TlsAcceptor::from(running.server_direct.clone()).accept(tcp)),
            VecDeque::new(),
        ),
        Transport::Started(start) => (
            Box::pin((*start).into_stream(running.server_direct.clone())),
            VecDeque::new(),
        ),
        Transport::StartTls(tcp) => {
            let mut xs = XmlStream::new(tcp, limits);
            match before_tls(&mut xs, state, deadline, local).await {
                Ok((s, rest)) => {
                    state = s;
                    let (tcp, buffered) = xs.into_parts();
                    if buffered > 0 {
                        log::info!("{tag}: {peer} sent data after <starttls/>; closed");
                        return;
                    }
                    let config = running.server_starttls.clone();
                    (Box::pin(TlsAcceptor::from(config).accept(tcp)), rest)
                }
                Err(end) => {
                    log::info!("{tag}: {peer} before TLS: {}", super::describe_end(&end));
                    return;
                }
            }
        }
    };
    let handshake = crate::net::with_deadline(handshake, deadline).await;
    let tls = match handshake {
        Ok(tls) => tls,
        Err(e) => {
            log::info!("{tag}: TLS handshake with {peer} failed: {e}");
            return;
        }
    };
    let peer_cert = super::PeerCert::of(&running.trust, tls.get_ref().1);
    let valid_for = |domain: &str| peer_cert.valid_for(domain);
    let mut xs = XmlStream::new(tls, limits);
    let mut stream = Stream {
        srv,
        running,
        id,
        tag,
        peer,
        valid_for: &valid_for,
        verified: async_channel::unbounded(),
        close: async_channel::bounded(1),
        domains: Vec::new(),
    };
    let end = stream.run(&mut xs, state, pending, deadline).await;
    match &end {
        End::Closed => log::info!("{tag}: {} closed the stream", stream.who()),
        End::Shutdown => {}
        end => log::info!("{tag}: {}: {}", stream.who(), super::describe_end(end)),
    }
    let err = match end {
        End::Error(e, _) => Some(e),
        _ => None,
    };
    close(&mut xs, local, err).await;
}

/// The plaintext part: header, features, `<starttls/>`, `<proceed/>`. Returns the state and
/// the actions left for after the TLS handshake.
async fn before_tls(
    xs: &mut XmlStream<TcpStream>,
    mut state: Incoming,
    deadline: Instant,
    local: &str,
) -> Result<(Incoming, VecDeque<Action>), End> {
    let never = |_: &str| false;
    let facts = Facts {
        tls: false,
        peer_cert_valid_for: &never,
    };
    loop {
        let frame = match xs.next_frame(deadline).await {
            Ok(f) => f,
            Err(end) => {
                if let End::Error(e, _) = &end {
                    close(xs, local, Some(*e)).await;
                }
                return Err(end);
            }
        };
        let (next, actions) = state.handle(frame, facts);
        state = next;
        let mut actions: VecDeque<Action> = actions.into();
        while let Some(action) = actions.pop_front() {
            match action {
                Action::SendHeader(h) => send_header(xs, &h).await?,
                Action::Send(el) => send_element(xs, &el).await?,
                Action::StartTls => return Ok((state, actions)),
                Action::Close(err) => {
                    close(xs, local, err).await;
                    return Err(err.map_or(End::Closed, |e| End::Error(e, None)));
                }
                _ => {}
            }
        }
    }
}

enum Event {
    Read(std::io::Result<usize>),
    Verified(Option<(String, String, bool)>),
    Close,
    Timeout,
}

/// An authoritative server's answer: (originating, receiving, valid).
type Verified = (String, String, bool);

/// One incoming stream after TLS.
struct Stream<'a> {
    srv: &'a Server,
    running: &'a Running,
    id: u64,
    tag: &'a str,
    peer: SocketAddr,
    valid_for: &'a (dyn Fn(&str) -> bool + Sync),
    /// Answers of the authoritative servers: (originating, receiving, valid).
    verified: (
        async_channel::Sender<Verified>,
        async_channel::Receiver<Verified>,
    ),
    /// Closed by the registry when a newer stream of the same domain replaces this one
    /// (shutdown comes through `Server::shutdown_signal`).
    close: (async_channel::Sender<()>, async_channel::Receiver<()>),
    /// Remote domains authenticated on this stream.
    domains: Vec<String>,
}

impl Stream<'_> {
    fn who(&self) -> String {
        match self.domains.first() {
            Some(d) => d.clone(),
            None => self.peer.to_string(),
        }
    }

    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        xs: &mut XmlStream<S>,
        mut state: Incoming,
        pending: VecDeque<Action>,
        deadline: Instant,
    ) -> End {
        if let Err(end) = self.perform(xs, pending).await {
            return end;
        }
        let shutdown = self.srv.shutdown_signal();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let event = {
                let read = async { Event::Read(xs.fill().await) };
                let verified = async { Event::Verified(self.verified.1.recv().await.ok()) };
                let close = async {
                    let _ = self.close.1.recv().await;
                    Event::Close
                };
                let stop = async {
                    (&mut shutdown).await;
                    Event::Close
                };
                let authenticated = !state.authenticated().is_empty();
                let timeout = async {
                    if authenticated {
                        futures_lite::future::pending::<()>().await;
                    }
                    smol::Timer::at(deadline).await;
                    Event::Timeout
                };
                read.or(verified).or(close).or(stop).or(timeout).await
            };
            let actions = match event {
                Event::Read(Ok(0)) => return End::Eof,
                Event::Read(Err(e)) => return End::Io(e),
                Event::Read(Ok(_)) => {
                    let mut all = VecDeque::new();
                    loop {
                        let frame = match xs.ready_frame() {
                            Ok(Some(f)) => f,
                            Ok(None) => break,
                            Err(end) => return end,
                        };
                        let facts = Facts {
                            tls: true,
                            peer_cert_valid_for: self.valid_for,
                        };
                        let (next, actions) = state.handle(frame, facts);
                        state = next;
                        all.extend(actions);
                        if matches!(state, Incoming::Closed) {
                            break;
                        }
                    }
                    all
                }
                Event::Verified(Some((originating, receiving, valid))) => {
                    let (next, actions) = state.dialback_verified(&originating, &receiving, valid);
                    state = next;
                    actions.into()
                }
                Event::Verified(None) => VecDeque::new(),
                Event::Close => return End::Shutdown,
                Event::Timeout => {
                    log::info!("{}: {} did not authenticate in time", self.tag, self.peer);
                    return End::Error(StreamError::ConnectionTimeout, None);
                }
            };
            if let Err(end) = self.perform(xs, actions).await {
                return end;
            }
        }
    }

    async fn perform<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        xs: &mut XmlStream<S>,
        actions: VecDeque<Action>,
    ) -> Result<(), End> {
        for action in actions {
            match action {
                Action::SendHeader(h) => send_header(xs, &h).await?,
                Action::Send(el) => send_element(xs, &el).await?,
                Action::RestartStream => xs.restart(),
                // TLS is already up; the state machine never asks twice.
                Action::StartTls => return Err(End::Error(StreamError::PolicyViolation, None)),
                Action::Authenticated { local, remote } => self.authenticated(&local, &remote),
                Action::VerifyDialback {
                    originating,
                    receiving,
                    stream_id,
                    key,
                } => self.verify(originating, receiving, stream_id, key),
                Action::Deliver(el) => deliver(self.srv, el).await,
                Action::Close(err) => {
                    return Err(err.map_or(End::Closed, |e| End::Error(e, None)));
                }
                Action::VerifyAnswer { .. } => {}
            }
        }
        Ok(())
    }

    fn authenticated(&mut self, local: &str, remote: &str) {
        let how = if (self.valid_for)(remote) {
            "certificate"
        } else {
            "dialback"
        };
        log::info!(
            "{}: {remote} authenticated from {} ({how}) for {local}",
            self.tag,
            self.peer
        );
        if !self.domains.iter().any(|d| d == remote) {
            self.domains.push(remote.to_owned());
        }
        self.srv
            .s2s
            .authenticated_in(remote, self.id, self.close.0.clone());
    }

    /// Asks `originating`'s authoritative server about the key, on an outgoing link; the
    /// answer comes back through `self.verified`.
    fn verify(&self, originating: String, receiving: String, stream_id: String, key: String) {
        let srv = self.srv;
        let local = &self.running.policy.local;
        // Our own domain or a component's can't be claimed by another server.
        if originating == *local || srv.is_component(&originating) {
            log::warn!(
                "{}: {} claimed to be {originating}; refused",
                self.tag,
                self.peer
            );
            let _ = self.verified.0.try_send((originating, receiving, false));
            return;
        }
        let answer = srv.s2s.verify(&originating, &receiving, &stream_id, &key);
        let tx = self.verified.0.clone();
        let limit = srv.config.s2s.connect_timeout + VERIFY_SLACK;
        let wait = async move {
            let valid = async { answer.recv().await.unwrap_or(false) }
                .or(async {
                    smol::Timer::after(limit).await;
                    false
                })
                .await;
            let _ = tx.send((originating, receiving, valid)).await;
        };
        self.running.ex.spawn(wait).detach();
    }
}

/// A stanza from an authenticated peer: back into `jabber:client`, checked like a
/// component's, then routed as coming from a remote entity.
async fn deliver(srv: &Server, mut el: Element) {
    el.replace_ns(NS_SERVER, ns::CLIENT);
    if Kind::of(&el).is_none() {
        return;
    }
    // The state machine checked both addresses parse and belong to authenticated domains.
    let Some(Ok(from)) = el.attr("from").map(Jid::parse) else {
        return;
    };
    if el.name() == "iq" {
        if let Err(e) = check_iq(&el) {
            router::bounce(srv, &el, e.into());
            return;
        }
    }
    router::route_from_remote(srv, &from, el).await;
}
