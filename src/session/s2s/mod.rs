//! Federation drivers: the registry of server-to-server connections and the two tasks that
//! run them, `outgoing` (we connect: DNS, TCP, TLS, authentication, then stanzas out) and
//! `incoming` (a peer connects: TLS, authentication, then stanzas in). The decisions of the
//! negotiation live in the pure `crate::s2s::stream`; this module performs them.
//!
//! Owns: one outgoing link per remote domain (`S2s::links`), reused by every stanza for that
//! domain and created on first use; its bounded queue holds stanzas while the connection is
//! being set up. When the peer can't be reached, what waited bounces to its sender with
//! `remote-server-not-found` or `remote-server-timeout`; nothing vanishes silently. Incoming
//! connections are limited per IP address and per authenticated domain.
//!
//! *Invariant:* a stanza is queued on a link only while holding the `links` lock and only if
//! the link's queue is open; a link's task closes its queue under the same lock before it
//! drains what is left, so every queued stanza is either sent or bounced.

mod incoming;
mod outgoing;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use async_channel::{Receiver, Sender, TrySendError};
use futures_lite::{AsyncRead, AsyncWrite};
use futures_rustls::rustls::{ClientConfig, ServerConfig};
use smol::Executor;

use crate::config::Config;
use crate::jid::Jid;
use crate::net::dns::Resolver;
use crate::net::tls::TlsSetup;
use crate::net::trust::{Trust, ALPN_XMPP_SERVER};
use crate::router;
use crate::s2s::dialback::{Secret, NS_DIALBACK};
use crate::s2s::stream::{Header, Policy};
use crate::s2s::NS_SERVER;
use crate::server::Server;
use crate::session::stream::{End, XmlStream};
use crate::stanza::{ns, Condition, StanzaError, StreamError};
use crate::xml::Element;

pub use incoming::{accept_loop, serve_started};

/// Stanzas waiting for one remote domain, connected or not. Beyond this, new ones bounce.
const QUEUE: usize = 1000;
/// Incoming connections from one IP address at once.
const MAX_INCOMING_PER_IP: usize = 16;
/// Incoming streams authenticated for one remote domain at once; a newer one closes the
/// oldest (a restarted peer must not be locked out by its own half-open connections).
const MAX_INCOMING_PER_DOMAIN: usize = 4;

/// What an outgoing link's task is asked to do.
pub(crate) enum Cmd {
    Stanza(Box<Element>),
    /// Ask the peer, as authoritative server, whether a dialback key is valid (XEP-0220 §2.3).
    Verify {
        receiving: String,
        stream_id: String,
        key: String,
        reply: Sender<bool>,
    },
    /// Close the stream (server shutdown).
    Close,
}

/// An authenticated incoming stream: its connection id and its close signal.
type InStream = (u64, Sender<()>);

struct Link {
    id: u64,
    tx: Sender<Cmd>,
}

/// Set once at start-up by [`S2s::start`]; without it (tests that build a `Server` by hand),
/// remote stanzas bounce.
struct Running {
    srv: Weak<Server>,
    ex: Arc<Executor<'static>>,
    /// `None` when the system resolver can't be set up: every remote stanza bounces.
    resolver: Option<Resolver>,
    policy: Policy,
    trust: Trust,
    client_starttls: Arc<ClientConfig>,
    client_direct: Arc<ClientConfig>,
    server_starttls: Arc<ServerConfig>,
    server_direct: Arc<ServerConfig>,
}

/// The federation state of a running server.
#[derive(Default)]
pub struct S2s {
    running: OnceLock<Running>,
    links: Mutex<HashMap<String, Link>>,
    next_link: AtomicU64,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Authenticated incoming streams by remote domain: (connection, its close signal).
    per_domain: Mutex<HashMap<String, Vec<InStream>>>,
}

/// A start-up problem with federation, worded for the operator.
#[derive(Debug)]
pub struct StartError(pub String);

impl S2s {
    /// The DNS resolver set up at start-up, for other outgoing connections (the HTTP roster
    /// service); `None` before start-up or when the system resolver is broken.
    pub fn resolver(&self) -> Option<&Resolver> {
        self.running.get().and_then(|r| r.resolver.as_ref())
    }

    /// Prepares federation: the dialback secret (`DATA/dialback.secret`), the trust roots,
    /// the TLS configs and the resolver. A broken `extra_ca` or an unwritable secret stops
    /// the server; a broken resolver only disables outgoing connections (logged).
    pub fn start(
        &self,
        srv: &Arc<Server>,
        ex: Arc<Executor<'static>>,
        config: &Config,
        tls: &TlsSetup,
    ) -> Result<(), StartError> {
        let secret = load_secret(&config.data_dir)?;
        let trust =
            Trust::load(config.s2s.extra_ca.as_deref()).map_err(|e| StartError(e.to_string()))?;
        let resolver = match config.s2s.resolver {
            Some(addr) => Resolver::with_nameserver(ex.clone(), addr),
            None => Resolver::from_system(ex.clone()),
        };
        let resolver = match resolver {
            Ok(r) => Some(r),
            Err(e) => {
                log::error!("s2s: {e}; messages to other servers will bounce");
                None
            }
        };
        let ours = tls.resolver();
        let running = Running {
            srv: Arc::downgrade(srv),
            ex,
            resolver,
            policy: Policy {
                local: config.domain.clone(),
                hosted: config
                    .muc
                    .enabled
                    .then(|| format!("conference.{}", config.domain))
                    .into_iter()
                    .collect(),
                secret,
                require_valid_certs: config.s2s.require_valid_certs,
            },
            client_starttls: trust.client_config(ours.clone(), &[]),
            client_direct: trust.client_config(ours.clone(), &[ALPN_XMPP_SERVER]),
            server_starttls: trust.server_config(ours.clone(), &[]),
            server_direct: trust.server_config(ours, &[ALPN_XMPP_SERVER]),
            trust,
        };
        let _ = self.running.set(running);
        Ok(())
    }

    /// Queues a stanza for the server of its `to` domain, connecting first if needed.
    pub fn send(&self, srv: &Server, stanza: Element) {
        let Some(domain) = to_domain(&stanza) else {
            return;
        };
        // A link authenticates one pair of domains: ours (the main domain, or the MUC
        // service's) and the peer's. A component's stanza on one would make the peer close the
        // stream (`invalid-from`) for everyone using it.
        let from = stanza.attr("from").and_then(|f| Jid::parse(f).ok());
        let local = match &from {
            Some(f) if crate::services::muc::is_service(srv, f.domain()) => f.domain().to_owned(),
            _ => srv.domain().to_owned(),
        };
        if from.is_some_and(|f| f.domain() != local) {
            log::debug!(
                "s2s: not sending a {} from a component to {domain}",
                stanza.name()
            );
            bounce(
                srv,
                &stanza,
                StanzaError::new(Condition::RemoteServerNotFound)
                    .with_text("components cannot reach other servers yet"),
            );
            return;
        }
        if let Err(Cmd::Stanza(stanza)) =
            self.enqueue(&local, &domain, Cmd::Stanza(Box::new(stanza)))
        {
            let err = match self.running.get() {
                Some(_) => StanzaError::new(Condition::ResourceConstraint)
                    .with_text("too many stanzas are waiting for that server"),
                None => StanzaError::new(Condition::RemoteServerNotFound)
                    .with_text("this server does not federate"),
            };
            log::warn!("s2s: cannot queue a {} for {domain}", stanza.name());
            bounce(srv, &stanza, err);
        }
    }

    /// Asks the authoritative server of `originating` whether `key` is valid for a stream we
    /// received; the answer (false also on any failure) arrives on the returned channel.
    pub(crate) fn verify(
        &self,
        originating: &str,
        receiving: &str,
        stream_id: &str,
        key: &str,
    ) -> Receiver<bool> {
        let (reply, answer) = async_channel::bounded(1);
        let cmd = Cmd::Verify {
            receiving: receiving.to_owned(),
            stream_id: stream_id.to_owned(),
            key: key.to_owned(),
            reply,
        };
        // On failure the sender is dropped with the command: the receiver sees "closed".
        // Verification goes out from the main domain whatever domain the stream was for.
        let local = self
            .running
            .get()
            .map(|r| r.policy.local.clone())
            .unwrap_or_default();
        let _ = self.enqueue(&local, originating, cmd);
        answer
    }

    /// Queues `cmd` on the link from `local` to `remote`, starting one if there is none (or
    /// its task ended).
    fn enqueue(&self, local: &str, remote: &str, cmd: Cmd) -> Result<(), Cmd> {
        let Some(running) = self.running.get() else {
            return Err(cmd);
        };
        let Some(srv) = running.srv.upgrade() else {
            return Err(cmd);
        };
        // Links from the main domain are keyed by the remote domain alone; others by both
        // (a space is never part of a domain).
        let domain = if local == running.policy.local {
            remote.to_owned()
        } else {
            format!("{local} {remote}")
        };
        let domain = domain.as_str();
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        let cmd = match links.get(domain) {
            Some(link) => match link.tx.try_send(cmd) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(cmd)) => return Err(cmd),
                Err(TrySendError::Closed(cmd)) => cmd,
            },
            None => cmd,
        };
        let (tx, rx) = async_channel::bounded(QUEUE);
        let id = self.next_link.fetch_add(1, Ordering::Relaxed) + 1;
        if let Err(e) = tx.try_send(cmd) {
            return Err(e.into_inner());
        }
        links.insert(domain.to_owned(), Link { id, tx });
        drop(links);
        let mut policy = running.policy.clone();
        policy.local = local.to_owned();
        let task = outgoing::run(srv, domain.to_owned(), remote.to_owned(), policy, rx, id);
        running.ex.spawn(task).detach();
        Ok(())
    }

    /// Called by link `id`'s task when it wants to end: under the lock, if nothing is queued
    /// (or `force`), the link is removed and its queue closed; returns whether it was. What is
    /// still in a closed queue is the caller's to bounce.
    fn unlink(&self, domain: &str, id: u64, rx: &Receiver<Cmd>, force: bool) -> bool {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        if !force && !rx.is_empty() {
            return false;
        }
        if links.get(domain).is_some_and(|l| l.id == id) {
            links.remove(domain);
        }
        rx.close();
        true
    }

    /// Asks every outgoing link to close its stream (server shutdown). Incoming streams,
    /// authenticated or not, watch `Server::shutdown_signal` themselves.
    pub fn close_all(&self) {
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        for link in links.values() {
            let _ = link.tx.force_send(Cmd::Close);
        }
    }

    fn running(&self) -> Option<&Running> {
        self.running.get()
    }

    /// Admits one more incoming connection from `ip`, or `None` if it has too many.
    fn admit(&self, ip: IpAddr) -> Option<IpSlot<'_>> {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = per_ip.entry(ip).or_default();
        if *n >= MAX_INCOMING_PER_IP {
            return None;
        }
        *n += 1;
        Some(IpSlot { s2s: self, ip })
    }

    /// Records an authenticated incoming stream for `domain`; closes the oldest beyond the
    /// per-domain limit.
    fn authenticated_in(&self, domain: &str, conn: u64, close: Sender<()>) {
        let mut per_domain = self.per_domain.lock().unwrap_or_else(|e| e.into_inner());
        let streams = per_domain.entry(domain.to_owned()).or_default();
        if streams.iter().any(|(c, _)| *c == conn) {
            return;
        }
        streams.push((conn, close));
        while streams.len() > MAX_INCOMING_PER_DOMAIN {
            let (old, close) = streams.remove(0);
            log::info!("s2sin#{old}: {domain} has {MAX_INCOMING_PER_DOMAIN} newer streams; closing this one");
            close.close();
        }
    }

    fn ended_in(&self, conn: u64) {
        let mut per_domain = self.per_domain.lock().unwrap_or_else(|e| e.into_inner());
        per_domain.retain(|_, streams| {
            streams.retain(|(c, _)| *c != conn);
            !streams.is_empty()
        });
    }
}

/// One admitted incoming connection; frees its place when dropped.
struct IpSlot<'a> {
    s2s: &'a S2s,
    ip: IpAddr,
}

impl Drop for IpSlot<'_> {
    fn drop(&mut self) {
        let mut per_ip = self.s2s.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

fn load_secret(data_dir: &Path) -> Result<Secret, StartError> {
    let path = data_dir.join("dialback.secret");
    let hex = crate::secrets::load_or_create(data_dir, "dialback.secret", |raw| {
        raw.iter().map(|b| format!("{b:02x}")).collect()
    })
    .map_err(|e| {
        StartError(format!(
            "cannot keep the dialback secret in {}: {e}",
            path.display()
        ))
    })?;
    Secret::from_hex(&hex).ok_or_else(|| {
        StartError(format!(
            "{} is not a dialback secret (64 hex digits); delete it and kith makes a new one",
            path.display()
        ))
    })
}

fn to_domain(stanza: &Element) -> Option<String> {
    stanza
        .attr("to")
        .and_then(|t| Jid::parse(t).ok())
        .map(|j| j.domain().to_owned())
}

/// Bounces a stanza that could not be sent to another server back to its (local) sender.
fn bounce(srv: &Server, stanza: &Element, err: StanzaError) {
    // Presence errors help no one (RFC 6121 allows dropping presence); subscription
    // requests excepted, so a user sees that "add contact" failed.
    if stanza.name() == "presence"
        && !matches!(stanza.attr("type"), Some("subscribe" | "unsubscribe"))
    {
        return;
    }
    router::bounce(srv, stanza, err);
}

/// Writes an element on a server-to-server stream: stanzas from inside kith (`jabber:client`)
/// go out in `jabber:server`; stream-level elements get the `stream:` prefix and dialback
/// elements the `db:` prefix, both declared in our stream header.
fn write_element(out: &mut Vec<u8>, el: &Element) {
    if el.ns() == ns::STREAM {
        el.write_prefixed(out, "stream", NS_SERVER);
    } else if el.ns() == NS_DIALBACK {
        // COMPAT: ejabberd (23.01) matches dialback elements by the literal name
        // `db:result`/`db:verify`: an unprefixed `<result xmlns='jabber:server:dialback'/>`
        // is ignored and the peer's dialback never completes. XEP-0220's examples and
        // Prosody use the prefix too. Tested by tests/interop_federation.rs (ejabberd).
        el.write_prefixed(out, "db", NS_SERVER);
    } else if el.ns() == ns::CLIENT {
        let mut el = el.clone();
        el.replace_ns(ns::CLIENT, NS_SERVER);
        el.write_to(out, NS_SERVER);
    } else {
        el.write_to(out, NS_SERVER);
    }
}

/// The peer's certificate as a TLS handshake left it, judged once: is its chain trusted, and
/// (per domain, as dialback may authenticate several) does it name that domain (RFC 6125).
struct PeerCert {
    chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    chain_ok: bool,
}

impl PeerCert {
    fn of(trust: &Trust, conn: &futures_rustls::rustls::CommonState) -> PeerCert {
        let chain: Vec<_> = conn
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default();
        PeerCert {
            chain_ok: trust.chain_ok(&chain),
            chain,
        }
    }

    fn valid_for(&self, domain: &str) -> bool {
        self.chain_ok
            && self
                .chain
                .first()
                .is_some_and(|leaf| crate::s2s::names::cert_valid_for(leaf, domain))
    }
}

/// How a stream ended, for a log line.
fn describe_end(end: &End) -> String {
    match end {
        End::Eof => "the peer closed the connection".into(),
        End::Closed => "closed".into(),
        End::Error(e, _) => format!("stream error {e}"),
        End::PeerError(cond) => format!("the peer sent stream error {cond}"),
        End::Io(e) => format!("connection lost: {e}"),
        End::Shutdown => "shutting down".into(),
        End::Takeover(_) => "taken over".into(),
    }
}

async fn send_element<S: AsyncRead + AsyncWrite + Unpin>(
    xs: &mut XmlStream<S>,
    el: &Element,
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(256);
    write_element(&mut out, el);
    xs.send_raw(&out).await
}

async fn send_header<S: AsyncRead + AsyncWrite + Unpin>(
    xs: &mut XmlStream<S>,
    header: &Header,
) -> std::io::Result<()> {
    xs.header_sent = true;
    xs.send_raw(&header.to_bytes()).await
}

/// Ends a stream: a header first if we never sent one (RFC 6120 §4.9.1.1), the error if any,
/// then `</stream:stream>`.
async fn close<S: AsyncRead + AsyncWrite + Unpin>(
    xs: &mut XmlStream<S>,
    local: &str,
    err: Option<StreamError>,
) {
    if !xs.header_sent {
        let header = Header {
            from: local.to_owned(),
            to: None,
            id: Some(crate::session::c2s::new_id()),
        };
        let _ = send_header(xs, &header).await;
    }
    let mut out = Vec::with_capacity(256);
    if let Some(err) = err {
        write_element(&mut out, &err.to_element(None));
    }
    out.extend_from_slice(b"</stream:stream>");
    let _ = xs.send_raw(&out).await;
    let _ = futures_lite::AsyncWriteExt::close(&mut xs.io).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stanzas_go_out_in_the_server_namespace() {
        let el = Element::new("message", ns::CLIENT)
            .with_attr("to", "b@b.example")
            .with_child(Element::new("body", ns::CLIENT).with_text("hi"));
        let mut out = Vec::new();
        write_element(&mut out, &el);
        let s = String::from_utf8(out).unwrap();
        assert!(!s.contains("jabber:client"), "{s}");
        assert!(s.starts_with("<message "), "{s}");
        let features =
            Element::new("features", ns::STREAM).with_child(Element::new("starttls", ns::TLS));
        let mut out = Vec::new();
        write_element(&mut out, &features);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("<stream:features><starttls xmlns="), "{s}");
    }

    fn written(el: &Element) -> String {
        let mut out = Vec::new();
        write_element(&mut out, el);
        String::from_utf8(out).unwrap()
    }

    /// ejabberd ignores `<result xmlns='jabber:server:dialback'/>` (kith's dialback to it
    /// never completed): dialback elements carry the `db:` prefix our header declares.
    #[test]
    fn dialback_elements_go_out_with_the_db_prefix() {
        use crate::s2s::dialback::{DbBody, DbError, Dialback};
        let request = Dialback::result_request("a.example", "b.example", "k3y");
        assert_eq!(
            written(&request.to_element()),
            "<db:result from='a.example' to='b.example'>k3y</db:result>"
        );
        let verify = Dialback::verify_request("a.example", "b.example", "s1", "k3y");
        assert_eq!(
            written(&verify.answer(DbBody::Valid).to_element()),
            "<db:verify from='b.example' to='a.example' id='s1' type='valid'/>"
        );
        // The <error/> child stays in the stream's default namespace, unprefixed.
        let refused = request.answer(DbBody::Error(DbError::ItemNotFound));
        let s = written(&refused.to_element());
        assert!(s.starts_with("<db:result from='b.example' to='a.example' type='error'><error type='cancel'><item-not-found xmlns="), "{s}");
        assert!(s.ends_with("</error></db:result>"), "{s}");
    }
}
