//! One outgoing link: find the peer (SRV, then A/AAAA), connect (Happy Eyeballs over a
//! target's addresses: `net::connect`), negotiate (STARTTLS or direct TLS, then SASL
//! EXTERNAL or dialback, as `s2s::stream::Outgoing` decides), then write the queued stanzas
//! until the link is idle, the peer goes away or the server stops.
//!
//! A link that can't be set up within `[s2s] connect_timeout` bounces everything queued. A
//! link that drops while stanzas are still queued connects once more before giving up.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use futures_lite::{AsyncRead, AsyncWrite, FutureExt as _};
use futures_rustls::rustls::pki_types::ServerName;
use futures_rustls::TlsConnector;
use smol::net::TcpStream;

use super::{bounce, close, send_element, send_header, Cmd, Running};
use crate::s2s::stream::{Action, Facts, Outgoing, Policy};
use crate::server::Server;
use crate::session::stream::{End, XmlStream};
use crate::stanza::{Condition, StanzaError, StreamError};
use crate::xml::Limits;

/// One TCP connect attempt; the next address is tried after this.
const CONNECT_ATTEMPT: Duration = Duration::from_secs(10);
/// Stanzas written per batch.
const WRITE_BATCH: usize = 64;

type Tls = futures_rustls::client::TlsStream<TcpStream>;

/// Why a link could not be set up; decides the bounce condition and the log line.
#[derive(Debug)]
enum Failure {
    /// DNS said no, or every address refused: `remote-server-not-found`.
    NotFound(String),
    /// `[s2s] connect_timeout` passed: `remote-server-timeout`.
    Timeout,
    /// Connected, but the peer and we did not agree (TLS, authentication, policy).
    Refused(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::NotFound(why) | Failure::Refused(why) => f.write_str(why),
            Failure::Timeout => f.write_str("timed out"),
        }
    }
}

impl Failure {
    fn stanza_error(&self) -> StanzaError {
        match self {
            Failure::NotFound(_) => StanzaError::new(Condition::RemoteServerNotFound)
                .with_text("the other server cannot be reached"),
            Failure::Timeout => StanzaError::new(Condition::RemoteServerTimeout)
                .with_text("the other server did not answer in time"),
            Failure::Refused(_) => StanzaError::new(Condition::RemoteServerNotFound)
                .with_text("could not set up a secure connection to the other server"),
        }
    }
}

/// The link's task.
/// `key` is the link's name in the registry; `policy.local` the domain it sends from.
pub(super) async fn run(
    srv: Arc<Server>,
    key: String,
    remote: String,
    policy: Policy,
    rx: Receiver<Cmd>,
    id: u64,
) {
    srv.open_conns.fetch_add(1, Ordering::SeqCst);
    let tag = format!("s2sout#{id}");
    if let Some(running) = srv.s2s.running() {
        let mut link = Link {
            srv: &srv,
            running,
            key: &key,
            policy,
            remote: &remote,
            rx: &rx,
            id,
            tag: &tag,
            held: VecDeque::new(),
            verifies: Vec::new(),
        };
        let task = AssertUnwindSafe(link.run()).catch_unwind();
        if task.await.is_err() {
            log::error!("{tag}: bug: task for {remote} panicked; bouncing what waited");
            link.give_up(&Failure::Refused("internal error".into()));
        }
    }
    srv.open_conns.fetch_sub(1, Ordering::SeqCst);
}

/// One outgoing link's state across connection attempts.
struct Link<'a> {
    srv: &'a Server,
    running: &'a Running,
    /// The link's name in the registry.
    key: &'a str,
    /// `local` is the domain this link sends from.
    policy: Policy,
    remote: &'a str,
    rx: &'a Receiver<Cmd>,
    id: u64,
    tag: &'a str,
    /// Commands taken off the queue during negotiation (to serve `<db:verify/>` requests),
    /// to be sent first once the stream is ready.
    held: VecDeque<Cmd>,
    /// `<db:verify/>` requests sent and not answered yet: (stream id, who waits).
    verifies: Vec<(String, Sender<bool>)>,
}

impl Link<'_> {
    async fn run(&mut self) {
        let mut retried = false;
        loop {
            let deadline = Instant::now() + self.srv.config.s2s.connect_timeout;
            let connected = self
                .connect(deadline)
                .or(async {
                    smol::Timer::at(deadline).await;
                    Err(Failure::Timeout)
                })
                .await;
            let (mut xs, state) = match connected {
                Ok(c) => c,
                Err(failure) => {
                    log::warn!(
                        "{}: cannot reach {}: {failure}; bouncing what waited",
                        self.tag,
                        self.remote
                    );
                    return self.give_up(&failure);
                }
            };
            let end = self.ready(&mut xs, state).await;
            let local = &self.policy.local;
            if let End::Shutdown = end {
                // Idle (already unlinked) or the server is stopping.
                close(&mut xs, local, None).await;
                return self.give_up(&Failure::NotFound("the server is shutting down".into()));
            }
            log::info!(
                "{}: stream to {} ended: {}",
                self.tag,
                self.remote,
                super::describe_end(&end)
            );
            let err = match end {
                End::Error(e, _) => Some(e),
                _ => None,
            };
            close(&mut xs, local, err).await;
            self.verifies.clear();
            // Nothing waiting: the link ends here. Otherwise connect once more.
            if self.held.is_empty() && self.srv.s2s.unlink(self.key, self.id, self.rx, false) {
                return;
            }
            if retried {
                return self.give_up(&Failure::NotFound("the connection was lost".into()));
            }
            retried = true;
        }
    }

    /// Ends the link: removes it from the registry, then bounces what is held or still
    /// queued and fails pending verifications (dropping their reply senders).
    fn give_up(&mut self, failure: &Failure) {
        self.srv.s2s.unlink(self.key, self.id, self.rx, true);
        self.verifies.clear();
        let err = failure.stanza_error();
        let queued = std::iter::from_fn(|| self.rx.try_recv().ok());
        for cmd in self.held.drain(..).chain(queued) {
            if let Cmd::Stanza(stanza) = cmd {
                bounce(self.srv, &stanza, err.clone());
            }
        }
    }

    /// Tries each SRV target and each of its addresses until one stream is authenticated.
    async fn connect(&mut self, deadline: Instant) -> Result<(XmlStream<Tls>, Outgoing), Failure> {
        let (remote, tag) = (self.remote, self.tag);
        let Some(resolver) = &self.running.resolver else {
            return Err(Failure::NotFound("no DNS resolver".into()));
        };
        let targets = resolver
            .xmpp_server_targets(remote)
            .await
            .map_err(|e| Failure::NotFound(e.to_string()))?;
        let mut last = Failure::NotFound(format!("{remote} has no usable address"));
        for target in targets {
            let ips = match resolver.lookup_ips(&target.host).await {
                Ok(ips) => ips,
                Err(e) => {
                    log::debug!("{tag}: {e}");
                    last = Failure::NotFound(e.to_string());
                    continue;
                }
            };
            // Happy Eyeballs (RFC 8305) over this target's addresses; an address whose
            // connection is made but whose negotiation fails is left out of the next race.
            let mut addrs: Vec<SocketAddr> = crate::net::connect::interleave(&ips)
                .into_iter()
                .map(|ip| SocketAddr::new(ip, target.port))
                .collect();
            while !addrs.is_empty() {
                let connected =
                    crate::net::connect::race(&addrs, crate::net::connect::ATTEMPT_DELAY, |addr| {
                        let attempt = deadline.min(Instant::now() + CONNECT_ATTEMPT);
                        crate::net::with_deadline(TcpStream::connect(addr), attempt)
                    })
                    .await;
                let (tcp, addr) = match connected {
                    Ok(c) => c,
                    Err(e) => {
                        log::debug!("{tag}: connecting for {remote}: {e}");
                        last = Failure::NotFound(format!("connecting to {e}"));
                        break;
                    }
                };
                addrs.retain(|a| *a != addr);
                let _ = tcp.set_nodelay(true);
                let how = if target.direct_tls {
                    "direct TLS"
                } else {
                    "STARTTLS"
                };
                match self.negotiate(tcp, target.direct_tls, deadline).await {
                    Ok((xs, state, cert_ok)) => {
                        log::info!(
                            "{tag}: connected to {remote} at {addr} ({how}, {})",
                            if cert_ok {
                                "certificate verified"
                            } else {
                                "dialback, certificate not verified"
                            }
                        );
                        return Ok((xs, state));
                    }
                    Err(e) => {
                        log::info!("{tag}: {remote} at {addr} ({how}): {e}");
                        last = e;
                    }
                }
            }
        }
        Err(last)
    }

    async fn negotiate(
        &mut self,
        tcp: TcpStream,
        direct_tls: bool,
        deadline: Instant,
    ) -> Result<(XmlStream<Tls>, Outgoing, bool), Failure> {
        let (running, remote) = (self.running, self.remote);
        let limits = Limits {
            max_stanza_bytes: self.srv.config.limits.max_stanza_size,
            ..Limits::default()
        };
        let name = ServerName::try_from(remote.to_owned())
            .map_err(|_| Failure::Refused(format!("'{remote}' is not a valid TLS server name")))?;
        let (state, actions) = Outgoing::start(self.policy.clone(), remote);
        let (state, actions, tcp, config) = if direct_tls {
            (state, actions.into(), tcp, running.client_direct.clone())
        } else {
            let mut xs = XmlStream::new(tcp, limits);
            let never = |_: &str| false;
            let facts = Facts {
                tls: false,
                peer_cert_valid_for: &never,
            };
            match self
                .drive(&mut xs, state, actions.into(), facts, deadline)
                .await?
            {
                Step::StartTls(state, rest) => {
                    let (tcp, buffered) = xs.into_parts();
                    if buffered > 0 {
                        // Bytes after <proceed/> would be plaintext injected into TLS.
                        return Err(Failure::Refused("data after <proceed/>".into()));
                    }
                    (state, rest, tcp, running.client_starttls.clone())
                }
                Step::Ready(_) => return Err(Failure::Refused("authenticated without TLS".into())),
            }
        };
        let tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| Failure::Refused(format!("TLS handshake failed: {e}")))?;
        let peer_cert = super::PeerCert::of(&running.trust, tls.get_ref().1);
        let valid_for = |domain: &str| peer_cert.valid_for(domain);
        let mut xs = XmlStream::new(tls, limits);
        let facts = Facts {
            tls: true,
            peer_cert_valid_for: &valid_for,
        };
        match self.drive(&mut xs, state, actions, facts, deadline).await? {
            Step::Ready(state) => Ok((xs, state, valid_for(remote))),
            Step::StartTls(..) => Err(Failure::Refused("STARTTLS twice".into())),
        }
    }

    /// Runs the state machine until TLS must start or the stream is authenticated. Meanwhile
    /// it serves `<db:verify/>` requests as soon as the stream allows them (see
    /// `Outgoing::verify_request`) and holds the stanzas it takes off the queue.
    async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        xs: &mut XmlStream<S>,
        mut state: Outgoing,
        mut pending: VecDeque<Action>,
        facts: Facts<'_>,
        deadline: Instant,
    ) -> Result<Step, Failure> {
        let local = &self.policy.local.clone();
        let rx = self.rx;
        let io = |e: std::io::Error| Failure::Refused(format!("connection lost: {e}"));
        loop {
            while let Some(action) = pending.pop_front() {
                match action {
                    Action::SendHeader(h) => send_header(xs, &h).await.map_err(io)?,
                    Action::Send(el) => send_element(xs, &el).await.map_err(io)?,
                    Action::StartTls => return Ok(Step::StartTls(state, pending)),
                    Action::RestartStream => xs.restart(),
                    Action::Close(err) => {
                        close(xs, local, err).await;
                        return Err(Failure::Refused(match err {
                            Some(e) => format!("closed the stream with {e}"),
                            None => "the peer refused to authenticate us".into(),
                        }));
                    }
                    Action::VerifyAnswer {
                        from, id, valid, ..
                    } => self.answered(&from, &id, valid),
                    Action::Authenticated { .. }
                    | Action::Deliver(_)
                    | Action::VerifyDialback { .. } => {}
                }
            }
            if state.is_ready() {
                return Ok(Step::Ready(state));
            }
            if state.can_verify() {
                let mut out = Vec::new();
                let held = std::mem::take(&mut self.held);
                for cmd in held {
                    match cmd {
                        Cmd::Verify { .. } => self.verify(&state, cmd, &mut out),
                        other => self.held.push_back(other),
                    }
                }
                if !out.is_empty() {
                    xs.send_raw(&out).await.map_err(io)?;
                }
            }
            let take_cmds = self.held.len() < super::QUEUE;
            let event = {
                let read = async { Ok(xs.next_frame(deadline).await) };
                let cmd = async {
                    if !take_cmds {
                        futures_lite::future::pending::<()>().await;
                    }
                    Err(rx.recv().await)
                };
                read.or(cmd).await
            };
            let frame = match event {
                Ok(Ok(f)) => f,
                Ok(Err(End::Error(StreamError::ConnectionTimeout, _))) => {
                    return Err(Failure::Timeout)
                }
                Ok(Err(End::Error(e, _))) => {
                    close(xs, local, Some(e)).await;
                    return Err(Failure::Refused(format!("bad XML from the peer ({e})")));
                }
                Ok(Err(End::Eof)) => {
                    return Err(Failure::Refused("the peer closed the connection".into()))
                }
                Ok(Err(end)) => return Err(Failure::Refused(super::describe_end(&end))),
                Err(Ok(Cmd::Close)) | Err(Err(_)) => {
                    return Err(Failure::NotFound("the server is shutting down".into()))
                }
                Err(Ok(cmd)) => {
                    // Held until the stream can carry it (the loop flushes verifications).
                    self.held.push_back(cmd);
                    continue;
                }
            };
            let (next, actions) = state.handle(frame, facts);
            state = next;
            pending.extend(actions);
        }
    }

    /// Serializes a `Cmd::Verify` as `<db:verify/>` into `out` and remembers who waits;
    /// `state` must allow it.
    fn verify(&mut self, state: &Outgoing, cmd: Cmd, out: &mut Vec<u8>) {
        if let Cmd::Verify {
            receiving,
            stream_id,
            key,
            reply,
        } = cmd
        {
            if let Some(Action::Send(el)) = state.verify_request(&key, &receiving, &stream_id) {
                super::write_element(out, &el);
                self.verifies.push((stream_id, reply));
            }
        }
    }

    /// A `<db:verify/>` answer from the peer: tell the stream that asked.
    fn answered(&mut self, from: &str, id: &str, valid: bool) {
        if from != self.remote {
            return;
        }
        if let Some(i) = self.verifies.iter().position(|(v, _)| v == id) {
            let (_, reply) = self.verifies.swap_remove(i);
            let _ = reply.try_send(valid);
        }
    }

    /// The authenticated stream: writes what was held, then queued stanzas and
    /// `<db:verify/>` requests; reads verification answers; closes when idle.
    async fn ready(&mut self, xs: &mut XmlStream<Tls>, mut state: Outgoing) -> End {
        let idle = self.srv.config.s2s.idle_timeout;
        let rx = self.rx;
        let mut last_activity = Instant::now();
        let never = |_: &str| false;
        while let Some(first) = self.held.pop_front() {
            if let Err(end) = self.write(xs, &state, first, false).await {
                return end;
            }
        }
        loop {
            let event = {
                let cmd = async { Event::Cmd(rx.recv().await) };
                let read = async { Event::Read(xs.fill().await) };
                let timer = async {
                    smol::Timer::at(last_activity + idle).await;
                    Event::Idle
                };
                cmd.or(read).or(timer).await
            };
            match event {
                Event::Cmd(Ok(first)) => {
                    last_activity = Instant::now();
                    if let Err(end) = self.write(xs, &state, first, true).await {
                        return end;
                    }
                }
                Event::Cmd(Err(_)) => return End::Shutdown,
                Event::Read(Ok(0)) => return End::Eof,
                Event::Read(Err(e)) => return End::Io(e),
                Event::Read(Ok(_)) => loop {
                    let frame = match xs.ready_frame() {
                        Ok(Some(f)) => f,
                        Ok(None) => break,
                        Err(end) => return end,
                    };
                    let facts = Facts {
                        tls: true,
                        peer_cert_valid_for: &never,
                    };
                    let (next, actions) = state.handle(frame, facts);
                    state = next;
                    for action in actions {
                        match action {
                            Action::VerifyAnswer {
                                from, id, valid, ..
                            } => self.answered(&from, &id, valid),
                            Action::Close(Some(e)) => return End::Error(e, None),
                            Action::Close(None) => return End::Closed,
                            _ => {}
                        }
                    }
                },
                Event::Idle => {
                    if self.srv.s2s.unlink(self.key, self.id, rx, false) {
                        log::info!("{}: closing the idle stream to {}", self.tag, self.remote);
                        return End::Shutdown;
                    }
                    last_activity = Instant::now();
                }
            }
        }
    }

    /// Writes `first` and, if `batch`, whatever else is queued, up to a batch.
    async fn write(
        &mut self,
        xs: &mut XmlStream<Tls>,
        state: &Outgoing,
        first: Cmd,
        batch: bool,
    ) -> Result<(), End> {
        let mut out = Vec::with_capacity(512);
        let mut next = Some(first);
        let mut n = 0;
        let mut end = None;
        while let Some(cmd) = next.take() {
            match cmd {
                Cmd::Stanza(el) => super::write_element(&mut out, &el),
                cmd @ Cmd::Verify { .. } => self.verify(state, cmd, &mut out),
                Cmd::Close => end = Some(End::Shutdown),
            }
            n += 1;
            if !batch || end.is_some() || n >= WRITE_BATCH {
                break;
            }
            next = self.rx.try_recv().ok();
        }
        if !out.is_empty() {
            xs.send_raw(&out).await?;
        }
        end.map_or(Ok(()), Err)
    }
}

/// What the negotiation loop stopped for.
enum Step {
    /// Run the TLS handshake, then perform these actions on the new stream.
    StartTls(Outgoing, VecDeque<Action>),
    Ready(Outgoing),
}

enum Event {
    Cmd(Result<Cmd, async_channel::RecvError>),
    Read(std::io::Result<usize>),
    Idle,
}
