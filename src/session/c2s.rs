//! One client connection from accept to close (RFC 6120): STARTTLS (or direct TLS), SASL,
//! resource binding, then the open stream, where stanzas from the client go to the router and
//! stanzas from the router are written back in batches.
//!
//! Each negotiation phase is its own function that returns what the next one needs, so a
//! stanza can only reach the router after binding.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_channel::Receiver;
use base64::Engine as _;
use futures_lite::{AsyncRead, AsyncWrite, FutureExt as _};

use crate::jid::{BareJid, FullJid, Jid};
use crate::net::listener::{Accepted, Mode, Tcp};
use crate::net::slim::ServerTls;
use crate::net::tls::ALPN_XMPP_CLIENT;
use crate::router;
use crate::sasl::ht::Ht;
use crate::sasl::{self, CbInfo, Mechanism};
use crate::server::Server;
use crate::services::{fast, register};
use crate::services::{offline, presence};
use crate::session::csi::Csi;
use crate::session::rate::Bucket;
use crate::session::sasl2;
use crate::session::sm::{self, BoundState, Sm};
use crate::session::stream::{End, XmlStream};
use crate::sessions::Outbound;
use crate::stanza::{self, ns, Condition, Kind, StreamError};
use crate::xml::{Element, Frame, Limits};

/// Failed authentications allowed on one connection before it is closed (RFC 6120 §6.4.5
/// asks for at least two retries).
const MAX_AUTH_FAILURES: u32 = 3;
/// Delay before answering a failed authentication, so guessing passwords is slow.
const FAILURE_DELAY: Duration = Duration::from_secs(1);
/// Stanzas written per batch when the outbound queue has several waiting.
const WRITE_BATCH: usize = 64;

/// Serves one accepted client connection until it closes.
///
/// A session sits idle for hours and its future is its memory, so the work is arranged to
/// keep that future small: every phase before the session runs (TLS, SASL, binding) is
/// boxed and gone when it ends, and the arguments travel in a box, because an async fn's
/// arguments keep their place in its future even after they were moved out.
pub async fn serve(accepted: Box<Accepted>) {
    let Accepted {
        srv,
        tcp,
        peer,
        mode,
        id: conn,
    } = *accepted;
    let deadline = Instant::now() + srv.config.limits.auth_timeout;
    let Some((tls, cb)) = Box::pin(secure(&srv, tcp, peer, mode, conn, deadline)).await else {
        return;
    };
    serve_secure(srv, tls, peer, cb, conn, deadline).await
}

/// STARTTLS or direct TLS, up to an established TLS session.
async fn secure(
    srv: &Server,
    tcp: Tcp,
    peer: SocketAddr,
    mode: Mode,
    conn: u64,
    deadline: Instant,
) -> Option<(ServerTls<Tcp>, CbInfo)> {
    let tag = format!("c2s#{conn}");
    log::info!(
        "{tag}: connection from {peer} ({})",
        match mode {
            Mode::StartTls => "starttls",
            Mode::DirectTls => "direct tls",
        }
    );
    let limits = Limits {
        max_stanza_bytes: srv.config.limits.max_stanza_size,
        ..Limits::default()
    };
    match mode {
        Mode::StartTls => starttls(srv, tcp, &tag, deadline, limits).await,
        Mode::DirectTls => handshake(srv, &[ALPN_XMPP_CLIENT], tcp, &tag, deadline).await,
    }
}

/// A client stream over a transport that is already secure: TLS accepted by this module or
/// by the HTTPS listener (ALPN `xmpp-client` on 443), or a WebSocket or BOSH session inside
/// HTTPS (`http::pipe`). No STARTTLS is offered; `cb` is the channel-binding data the
/// transport can prove (none for the web transports, so no SCRAM-PLUS there).
pub fn serve_secure<S: AsyncRead + AsyncWrite + Unpin>(
    srv: Arc<Server>,
    io: S,
    peer: SocketAddr,
    cb: CbInfo,
    conn: u64,
    deadline: Instant,
) -> impl std::future::Future<Output = ()> {
    run(Box::new(Secured {
        srv,
        io,
        peer,
        cb,
        conn,
        deadline,
    }))
}

struct Secured<S> {
    srv: Arc<Server>,
    io: S,
    peer: SocketAddr,
    cb: CbInfo,
    conn: u64,
    deadline: Instant,
}

/// Negotiation (boxed), then the session itself. Everything the idle session keeps lives
/// here exactly once: values are moved, never borrowed before they are (a borrowed local
/// keeps its place in the future to the end of its scope, moved or not).
async fn run<S: AsyncRead + AsyncWrite + Unpin>(secured: Box<Secured<S>>) {
    let Secured {
        srv,
        io,
        peer,
        cb,
        conn,
        deadline,
    } = *secured;
    let _origin = srv.origins.register(conn, peer);
    // Destructured in the pattern: moving the fields out of a local would keep the local.
    let Some(Ready {
        mut xs,
        tag,
        id,
        state,
        resumed,
        inactive,
    }) = Box::pin(negotiate(&srv, io, peer, cb, conn, deadline)).await
    else {
        return;
    };
    let limits = &srv.config.limits;
    let mut session = Session {
        srv: &srv,
        st: state,
        csi: {
            let mut csi = Csi::default();
            csi.set_inactive(inactive, &mut Vec::new());
            csi
        },
        takeover: None,
        tag: &tag,
        rate: Bucket::new(
            u32::try_from(limits.stanzas_per_second).unwrap_or(u32::MAX),
            u32::try_from(limits.stanza_burst).unwrap_or(u32::MAX),
            Instant::now(),
        ),
    };
    session.takeover = session
        .st
        .sm
        .as_ref()
        .and_then(|sm| sm.id.as_deref())
        .map(|sid| srv.sm.live(sid, session.st.me.to_bare()));
    let mut guard = Bound {
        srv: &srv,
        me: session.st.me.clone(),
        conn,
        armed: true,
    };
    let end = if resumed {
        // What the client missed is already written; ask for an ack.
        session.write_stanzas(&mut xs, Vec::new()).await.err()
    } else {
        None
    };
    let end = match end {
        Some(end) => end,
        None => session.run(&mut xs).await,
    };
    // Boxed, like the negotiation steps: the session future stays small while idle.
    Box::pin(session.end(&mut xs, &mut guard, &id, end)).await;
}

/// A bound (or resumed) session, ready to run.
struct Ready<S> {
    xs: XmlStream<S>,
    tag: String,
    id: String,
    state: BoundState,
    resumed: bool,
    inactive: bool,
}

/// Authentication, then binding or resumption (`None`: the stream ended on the way).
async fn negotiate<S: AsyncRead + AsyncWrite + Unpin>(
    srv: &Server,
    io: S,
    peer: SocketAddr,
    cb: CbInfo,
    conn: u64,
    deadline: Instant,
) -> Option<Ready<S>> {
    let tag = format!("c2s#{conn}");
    let limits = Limits {
        max_stanza_bytes: srv.config.limits.max_stanza_size,
        ..Limits::default()
    };
    let mut xs = XmlStream::new(io, limits);
    let mut id = new_id();
    let auth = Box::pin(authenticate(
        srv, &mut xs, &tag, &cb, deadline, &id, peer, conn,
    ))
    .await;
    let (user, fresh_stream) = match auth {
        Ok(Authenticated::Classic(user)) => (user, true),
        Ok(Authenticated::Sasl2(user)) => (user, false),
        Ok(Authenticated::Ready { state, inactive }) => {
            return Some(Ready {
                xs,
                tag,
                id,
                state,
                resumed: false,
                inactive,
            });
        }
        Err(end) => {
            Box::pin(finish(srv, &mut xs, &tag, &id, end)).await;
            return None;
        }
    };
    if fresh_stream {
        xs.restart();
        id = new_id();
    }
    match Box::pin(bind_or_resume(
        srv,
        &mut xs,
        &user,
        conn,
        deadline,
        &id,
        &tag,
        fresh_stream,
    ))
    .await
    {
        Ok((state, resumed)) => Some(Ready {
            xs,
            tag,
            id,
            state,
            resumed,
            inactive: false,
        }),
        Err(end) => {
            Box::pin(finish(srv, &mut xs, &tag, &id, end)).await;
            None
        }
    }
}

/// Removes the resource from the routing table however the session ends (even by panic),
/// unless the session moved on (parked for resumption, or taken over by another connection).
struct Bound<'a> {
    srv: &'a Server,
    me: FullJid,
    conn: u64,
    armed: bool,
}

impl Drop for Bound<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.srv.sessions.unbind(&self.me, self.conn);
        }
    }
}

async fn finish<S: AsyncRead + AsyncWrite + Unpin>(
    srv: &Server,
    xs: &mut XmlStream<S>,
    tag: &str,
    id: &str,
    end: End,
) {
    match end {
        End::Error(cond, text) => {
            log::info!("{tag}: closing with stream error {cond}");
            xs.send_error(srv.domain(), id, cond, text).await;
        }
        End::Closed => {
            log::info!("{tag}: stream closed by the client");
            xs.close().await;
        }
        End::Shutdown => {
            log::info!("{tag}: closing for server shutdown");
            xs.close().await;
        }
        End::PeerError(cond) => {
            log::info!("{tag}: the client sent stream error {cond}");
            xs.close().await;
        }
        End::Eof => log::info!("{tag}: connection closed by the client"),
        End::Io(e) => log::info!("{tag}: connection lost: {e}"),
        End::Takeover(_) => {}
    }
}

/// The plaintext phase on port 5222: offer only STARTTLS (required), then hand the socket to
/// rustls. Bytes the client sent after `<starttls/>` and before the handshake would be
/// plaintext injected into the TLS session (CVE-2011-1431 class): the connection is dropped.
async fn starttls(
    srv: &Server,
    tcp: Tcp,
    tag: &str,
    deadline: Instant,
    limits: Limits,
) -> Option<(ServerTls<Tcp>, CbInfo)> {
    let mut xs = XmlStream::new(tcp, limits);
    let id = new_id();
    let r: Result<(), End> = async {
        let to = open_stream(srv, &mut xs, deadline, &id).await?;
        let _ = to;
        let features = Element::new("features", ns::STREAM).with_child(
            Element::new("starttls", ns::TLS).with_child(Element::new("required", ns::TLS)),
        );
        xs.send_element(&features).await?;
        match xs.next_frame(deadline).await? {
            Frame::Element(el) if el.is("starttls", ns::TLS) => {}
            Frame::StreamClose => return Err(End::Closed),
            _ => {
                return Err(End::Error(
                    StreamError::PolicyViolation,
                    Some("STARTTLS is required"),
                ))
            }
        }
        xs.send_element(&Element::new("proceed", ns::TLS)).await?;
        Ok(())
    }
    .await;
    if let Err(end) = r {
        finish(srv, &mut xs, tag, &id, end).await;
        return None;
    }
    let (tcp, buffered) = xs.into_parts();
    if buffered > 0 {
        log::warn!("{tag}: {buffered} bytes sent after <starttls/> before the TLS handshake (injection attempt?); dropping the connection");
        return None;
    }
    // No ALPN on STARTTLS: a client may offer any and must not be refused.
    handshake(srv, &[], tcp, tag, deadline).await
}

/// The TLS handshake, and the channel-binding data of the certificate it presented. An ACME
/// TLS-ALPN-01 check reaching this port is answered and closed (`None`).
async fn handshake(
    srv: &Server,
    alpn: &[&[u8]],
    tcp: Tcp,
    tag: &str,
    deadline: Instant,
) -> Option<(ServerTls<Tcp>, CbInfo)> {
    let r = crate::net::with_deadline(srv.tls.accept_slim(tcp, alpn), deadline).await;
    match r {
        Ok(None) => None,
        Ok(Some((tls, cb))) => {
            log::debug!(
                "{tag}: TLS established ({})",
                if tls.is_slim() {
                    "TLS 1.3, kith's record layer"
                } else {
                    "rustls"
                }
            );
            Some((tls, cb))
        }
        Err(e) => {
            log::info!("{tag}: TLS handshake failed: {e}");
            None
        }
    }
}

/// Reads the client's stream header, checks it and answers with ours. Returns the client's
/// `from` if it was a valid JID (echoed as our `to`, RFC 6120 §4.7.2).
async fn open_stream<S: AsyncRead + AsyncWrite + Unpin>(
    srv: &Server,
    xs: &mut XmlStream<S>,
    deadline: Instant,
    id: &str,
) -> Result<Option<String>, End> {
    let header = match xs.next_frame(deadline).await? {
        Frame::StreamOpen(h) => h,
        _ => return Err(End::Error(StreamError::NotWellFormed, None)),
    };
    let from = header
        .attr("from")
        .and_then(|f| Jid::parse(f).ok())
        .map(|j| j.to_string());
    xs.send_header(srv.domain(), id, from.as_deref()).await?;
    if header.default_ns() != ns::CLIENT {
        return Err(End::Error(StreamError::InvalidNamespace, None));
    }
    // RFC 6120 §4.7.5: no version means a pre-1.0 client, which can't do SASL.
    let major = header
        .attr("version")
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    if major.is_none_or(|m| m < 1) {
        return Err(End::Error(StreamError::UnsupportedVersion, None));
    }
    if let Some(to) = header.attr("to") {
        if !to.trim_end_matches('.').eq_ignore_ascii_case(srv.domain()) {
            return Err(End::Error(
                StreamError::HostUnknown,
                Some("this server does not serve that domain"),
            ));
        }
    }
    Ok(from)
}

/// How authentication ended, and how far the session already got.
enum Authenticated {
    /// RFC 6120 SASL: the stream restarts, then the client binds or resumes.
    Classic(BareJid),
    /// SASL2 without Bind 2: no restart; features were sent; the client binds next.
    Sasl2(BareJid),
    /// SASL2 with Bind 2 or inline resumption: the session is ready.
    Ready { state: BoundState, inactive: bool },
}

/// SASL (RFC 6120 §6) and SASL2 (XEP-0388): SCRAM with channel binding where TLS gives us the
/// data, PLAIN only when the admin allowed it, and with SASL2 the FAST token mechanisms
/// (XEP-0484), Bind 2 (XEP-0386) and inline stream resumption.
#[allow(clippy::too_many_arguments)]
async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    srv: &Server,
    xs: &mut XmlStream<S>,
    tag: &str,
    cb: &CbInfo,
    deadline: Instant,
    id: &str,
    peer: SocketAddr,
    conn: u64,
) -> Result<Authenticated, End> {
    open_stream(srv, xs, deadline, id).await?;
    let offered = offered_mechanisms(srv, cb);
    let fast: Vec<Ht> = Ht::ALL
        .into_iter()
        .filter(|m| m.cb_data(cb).is_some())
        .collect();
    let plus_offered = offered.iter().any(|m| m.is_plus());
    let mut mechs = Element::new("mechanisms", ns::SASL);
    for m in &offered {
        mechs.push_child(Element::new("mechanism", ns::SASL).with_text(m.name()));
    }
    let mut features = Element::new("features", ns::STREAM)
        .with_child(mechs)
        .with_child(sasl2::feature(&offered, &fast, srv.config.modules.carbons));
    let cb_types = cb.types();
    if !cb_types.is_empty() {
        let mut el = Element::new("sasl-channel-binding", ns::SASL_CB);
        for t in cb_types {
            el.push_child(Element::new("channel-binding", ns::SASL_CB).with_attr("type", t));
        }
        features.push_child(el);
    }
    if register::offered(srv) {
        features.push_child(Element::new("register", ns::REGISTER_FEATURE));
    }
    xs.send_element(&features).await?;

    let mut failures = 0;
    let mut cb_unusable_by_client = false;
    let mut registration = register::PreAuth::default();
    loop {
        let el = match xs.next_frame(deadline).await? {
            Frame::Element(el) => el,
            Frame::StreamClose => return Err(End::Closed),
            Frame::StreamOpen(_) => return Err(End::Error(StreamError::NotWellFormed, None)),
        };
        // XEP-0077 §3: registration is the one iq allowed before authentication; the
        // client then authenticates on this stream with the new account.
        if el.is("iq", ns::CLIENT) {
            match register::pre_auth(srv, &mut registration, &el, peer.ip(), tag).await {
                Some(reply) => {
                    xs.send_element(&reply).await?;
                    continue;
                }
                None => {
                    return Err(End::Error(
                        StreamError::NotAuthorized,
                        Some("authenticate first"),
                    ))
                }
            }
        }
        let profile = if el.is("auth", ns::SASL) {
            Profile::Rfc6120
        } else if el.is("authenticate", ns::SASL2) {
            Profile::Sasl2
        } else {
            return Err(End::Error(
                StreamError::NotAuthorized,
                Some("authenticate first"),
            ));
        };
        let req = sasl2::Request::parse(&el);
        let mech_name = el.attr("mechanism").unwrap_or("");
        let initial = match profile {
            Profile::Rfc6120 => decode_sasl(&el),
            Profile::Sasl2 => req.initial.clone(),
        };
        let mut penalize = true;
        let mut rotate = None;
        let password_mech = Mechanism::from_name(mech_name).filter(|m| offered.contains(m));
        let result = match (password_mech, initial) {
            (_, None) => Err(sasl::SaslFailure::new("incorrect-encoding")),
            (Some(mech), Some(initial)) => {
                if unsupported_cb_type(&initial, cb) {
                    // COMPAT: slixmpp 1.8 asks for `tls-unique`, which TLS 1.3 doesn't
                    // have, then retries without channel binding using gs2 flag `y`.
                    // Having seen it ask, we know the -PLUS offer reached it intact (no
                    // downgrade), so its `y` may be accepted on this stream.
                    cb_unusable_by_client = true;
                    penalize = false;
                }
                let plus = plus_offered && !cb_unusable_by_client;
                run_mechanism(srv, xs, profile, mech, plus, cb, initial, deadline).await?
            }
            (None, Some(initial)) => match Ht::from_name(mech_name).filter(|m| fast.contains(m)) {
                Some(ht) if profile == Profile::Sasl2 => {
                    let r = fast_login(srv, &req, ht, cb, &initial).await;
                    if let Ok((_, _, true)) = &r {
                        rotate = Some(ht);
                    }
                    r.map(|(jid, data, _)| (jid, data))
                }
                _ => Err(sasl::SaslFailure::new("invalid-mechanism")),
            },
        };
        match result {
            Ok((user, additional)) => {
                log::info!("{tag}: authenticated as {user} ({mech_name}) from {peer}");
                if profile == Profile::Rfc6120 {
                    let mut success = Element::new("success", ns::SASL);
                    if !additional.is_empty() {
                        success.push_text(b64(&additional));
                    }
                    xs.send_element(&success).await?;
                    return Ok(Authenticated::Classic(user));
                }
                let done = sasl2_success(srv, xs, tag, &user, &req, &additional, rotate, conn);
                return Box::pin(done).await;
            }
            Err(f) if !penalize => {
                log::debug!(
                    "{tag}: client asked for a channel-binding type we don't offer ({mech_name})"
                );
                send_failure(xs, profile, &f).await?;
            }
            Err(f) => {
                failures += 1;
                // One line an admin (or fail2ban) can act on; never the password.
                log::info!(
                    "{tag}: authentication failed from {peer} ({mech_name}: {})",
                    f.condition
                );
                smol::Timer::after(FAILURE_DELAY).await;
                send_failure(xs, profile, &f).await?;
                if failures >= MAX_AUTH_FAILURES {
                    return Err(End::Error(
                        StreamError::PolicyViolation,
                        Some("too many failed authentication attempts"),
                    ));
                }
            }
        }
    }
}

/// A FAST login (XEP-0484): one round trip with a token this server issued to this client.
/// Returns the user, the responder proof for `<additional-data/>`, and whether the token is
/// due for rotation.
async fn fast_login(
    srv: &Server,
    req: &sasl2::Request,
    ht: Ht,
    cb: &CbInfo,
    initial: &[u8],
) -> Result<(BareJid, Vec<u8>, bool), sasl::SaslFailure> {
    let resp = sasl::ht::parse(initial)?;
    let user = BareJid::parse(&format!("{}@{}", resp.authcid, srv.domain()))
        .map_err(|_| sasl::SaslFailure::new("not-authorized"))?;
    // Tokens are bound to the client that got them (XEP-0484 §5).
    let client = req
        .user_agent
        .as_deref()
        .ok_or_else(|| sasl::SaslFailure::new("not-authorized"))?;
    let cb_data = ht.cb_data(cb).unwrap_or_default();
    match fast::verify(
        srv,
        &user,
        client,
        ht,
        &cb_data,
        &resp.proof,
        req.fast_invalidate,
    )
    .await
    {
        fast::Verified::Ok { responder, rotate } => Ok((user, responder, rotate)),
        // §5: a token we no longer trust is "credentials-expired"; the client then falls back
        // to its password.
        fast::Verified::Failed => Err(sasl::SaslFailure::new("credentials-expired")),
    }
}

/// After a successful SASL2 exchange: inline resumption or Bind 2, a FAST token if asked or
/// due, then `<success/>` and the stream features, without a stream restart (XEP-0388 §2.6.1).
#[allow(clippy::too_many_arguments)]
async fn sasl2_success<S: AsyncRead + AsyncWrite + Unpin>(
    srv: &Server,
    xs: &mut XmlStream<S>,
    tag: &str,
    user: &BareJid,
    req: &sasl2::Request,
    additional: &[u8],
    rotate: Option<Ht>,
    conn: u64,
) -> Result<Authenticated, End> {
    let mut success = Element::new("success", ns::SASL2);
    if !additional.is_empty() {
        success.push_child(Element::new("additional-data", ns::SASL2).with_text(b64(additional)));
    }
    let mut ready = None;
    let mut resent = Vec::new();
    let mut extra = Vec::new();
    if let Some(resume_req) = &req.resume {
        match take_for_resume(srv, user, resume_req, tag).await {
            Ok((state, resumed, unacked)) => {
                extra.push(resumed);
                resent = unacked;
                ready = Some((state, false));
            }
            // XEP-0386 §3: a failed resumption is reported, then binding goes ahead.
            Err(failed) => extra.push(failed),
        }
    }
    if ready.is_none() {
        if let Some(bind_req) = &req.bind {
            let ua = req.user_agent.as_deref();
            let (state, bound, inactive) = bind2(srv, user, conn, bind_req, ua, tag).await;
            extra.push(bound);
            ready = Some((state, inactive));
        }
    }
    let jid = ready
        .as_ref()
        .map_or(user.to_string(), |(st, _)| st.me.to_string());
    success.push_child(Element::new("authorization-identifier", ns::SASL2).with_text(jid));
    for e in extra {
        success.push_child(e);
    }
    let token_mech = req.request_token.or(rotate);
    if let (Some(mech), Some(client)) = (token_mech, req.user_agent.as_deref()) {
        if let Some(t) = fast::issue(srv, user, client, mech).await {
            success.push_child(
                Element::new("token", ns::FAST)
                    .with_attr("token", t.token)
                    .with_attr("expiry", crate::time::rfc3339(t.expiry)),
            );
        }
    }
    xs.send_element(&success).await?;
    xs.send_element(&post_auth_features(srv, ready.is_none()))
        .await?;
    match ready {
        Some((state, inactive)) => {
            if !resent.is_empty() {
                let mut out = Vec::new();
                for el in &resent {
                    XmlStream::<S>::write_element(&mut out, el);
                }
                xs.send_raw(&out).await?;
            }
            Ok(Authenticated::Ready { state, inactive })
        }
        None => Ok(Authenticated::Sasl2(user.clone())),
    }
}

/// The features of an authenticated stream; `with_bind` while no resource is bound yet.
fn post_auth_features(srv: &Server, with_bind: bool) -> Element {
    let mut features = Element::new("features", ns::STREAM);
    if with_bind {
        features.push_child(Element::new("bind", ns::BIND));
        features.push_child(
            Element::new("session", ns::SESSION).with_child(Element::new("optional", ns::SESSION)),
        );
    }
    features
        .with_child(Element::new("ver", ns::ROSTER_VER))
        .with_child(Element::new("sub", ns::PRE_APPROVAL))
        .with_child(Element::new("sm", ns::SM))
        .with_child(Element::new("csi", ns::CSI))
        .with_child(crate::services::disco::server_caps(srv))
}

/// XEP-0386 Bind 2: binds a resource named after the client's tag (stable per client), enables
/// what the client asked for inline, and describes the archive in `<bound/>`.
async fn bind2(
    srv: &Server,
    user: &BareJid,
    conn: u64,
    req: &Element,
    user_agent: Option<&str>,
    tag: &str,
) -> (BoundState, Element, bool) {
    let client_tag: String = req
        .get_child("tag", ns::BIND2)
        .map(|t| t.text())
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control() && *c != '/')
        .take(32)
        .collect();
    let suffix = match user_agent {
        // Stable per client, without exposing its id (XEP-0386 §3.1).
        Some(ua) => {
            let seed = format!("kith-bind2\0{user}\0{ua}");
            let d = ring::digest::digest(&ring::digest::SHA256, seed.as_bytes());
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&d.as_ref()[..9])
        }
        None => new_id(),
    };
    let client_tag = client_tag.trim();
    let me = match (client_tag.is_empty(), user) {
        (false, u) => u.with_resource(&format!("{client_tag}/{suffix}")),
        (true, u) => u.with_resource(&suffix),
    };
    // The suffix alone is URL-safe base64, which always prepares.
    let me = me.or_else(|_| user.with_resource(&suffix));
    let me = match me {
        Ok(me) => me,
        Err(_) => user
            .with_resource("kith")
            .unwrap_or_else(|_| unreachable!("'kith' is a valid resource")),
    };
    let (tx, rx) = crate::queue::unbounded();
    if let Some(old) = srv.sessions.bind(me.clone(), conn, tx) {
        log::info!("{tag}: {me} was bound by c2s#{}; replacing it", old.conn);
        crate::sessions::send(&old, Outbound::Close(StreamError::Conflict));
    }
    log::info!("{tag}: bound {me} (bind 2)");
    let mut state = BoundState {
        me,
        conn,
        presence: presence::SessionPresence::default(),
        sm: None,
        rx,
    };
    // The client syncs from the archive (XEP-0386 §3): archived offline copies are redundant.
    state.presence.archived_offline_is_redundant = true;
    let mut bound = Element::new("bound", ns::BIND2);
    if let Ok(md) = crate::services::mam::metadata(srv, user).await {
        bound.push_child(md);
    }
    let mut inactive = false;
    for f in req.children() {
        match (f.name(), f.ns()) {
            ("enable", ns::CARBONS) if srv.config.modules.carbons => {
                srv.sessions.set_carbons(&state.me, true)
            }
            ("enable", ns::SM) => {
                let resumable = matches!(f.attr("resume"), Some("true" | "1"));
                let id = resumable.then(new_id);
                let mut enabled = Element::new("enabled", ns::SM);
                if let Some(id) = &id {
                    let max = srv.config.limits.resume_timeout.as_secs();
                    enabled.set_attr("id", id.as_str());
                    enabled.set_attr("resume", "true");
                    enabled.set_attr("max", max.to_string());
                }
                state.sm = Some(Sm::new(id));
                bound.push_child(enabled);
            }
            ("inactive", ns::CSI) => inactive = true,
            _ => {}
        }
    }
    if inactive {
        srv.sessions.set_asleep(&state.me, true);
    }
    (state, bound, inactive)
}

/// Which SASL profile an exchange speaks: RFC 6120's, or XEP-0388's (SASL2). They differ in
/// the namespace of the exchange elements and in what success looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Profile {
    Rfc6120,
    Sasl2,
}

impl Profile {
    fn ns(self) -> &'static str {
        match self {
            Profile::Rfc6120 => ns::SASL,
            Profile::Sasl2 => ns::SASL2,
        }
    }
}

async fn send_failure<S: AsyncRead + AsyncWrite + Unpin>(
    xs: &mut XmlStream<S>,
    profile: Profile,
    f: &sasl::SaslFailure,
) -> Result<(), End> {
    // Conditions are RFC 6120's in both profiles (XEP-0388 §2.6.2).
    let mut failure =
        Element::new("failure", profile.ns()).with_child(Element::new(f.condition, ns::SASL));
    if let Some(text) = &f.text {
        failure.push_child(
            Element::new("text", profile.ns())
                .with_attr("xml:lang", "en")
                .with_text(text.as_str()),
        );
    }
    Ok(xs.send_element(&failure).await?)
}

/// Whether a SCRAM client-first message asks (`p=NAME`) for a channel-binding type this
/// connection does not offer.
fn unsupported_cb_type(client_first: &[u8], cb: &CbInfo) -> bool {
    let Some(rest) = client_first.strip_prefix(b"p=") else {
        return false;
    };
    let name = rest.split(|&b| b == b',').next().unwrap_or_default();
    !cb.types().iter().any(|t| t.as_bytes() == name)
}

fn offered_mechanisms(srv: &Server, cb: &CbInfo) -> Vec<Mechanism> {
    let mut v = Vec::new();
    // COMPAT: accounts imported from Prosody have SCRAM-SHA-1 keys only; clients pick the
    // strongest mechanism offered, so `scram_sha1_only` offers what Prosody offered.
    let strong = !srv.config.auth.scram_sha1_only;
    if !cb.types().is_empty() {
        if strong {
            v.extend([Mechanism::ScramSha512Plus, Mechanism::ScramSha256Plus]);
        }
        v.push(Mechanism::ScramSha1Plus);
    }
    if strong {
        v.extend([Mechanism::ScramSha512, Mechanism::ScramSha256]);
    }
    v.push(Mechanism::ScramSha1);
    if srv.config.auth.allow_plain {
        v.push(Mechanism::Plain);
    }
    v
}

/// Base64 payload of `<auth/>` or `<response/>`; `=` is the empty initial response.
fn decode_sasl(el: &Element) -> Option<Vec<u8>> {
    let text = el.text();
    let text = text.trim();
    if text.is_empty() || text == "=" {
        return Some(Vec::new());
    }
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// Runs a password mechanism to its end. On success returns the user and the additional
/// data for `<success/>` (SCRAM's server-final message); the caller sends the success.
#[allow(clippy::too_many_arguments)]
async fn run_mechanism<S: AsyncRead + AsyncWrite + Unpin>(
    srv: &Server,
    xs: &mut XmlStream<S>,
    profile: Profile,
    mech: Mechanism,
    plus_offered: bool,
    cb: &CbInfo,
    mut initial: Vec<u8>,
    deadline: Instant,
) -> Result<Result<(BareJid, Vec<u8>), sasl::SaslFailure>, End> {
    if initial.is_empty() {
        // No initial response: ask for it with an empty challenge (RFC 6120 §6.4.2).
        xs.send_element(&Element::new("challenge", profile.ns()))
            .await?;
        match read_response(xs, profile, deadline).await? {
            Ok(data) => initial = data,
            Err(f) => return Ok(Err(f)),
        }
    }
    if mech == Mechanism::Plain {
        return Ok(plain(srv, &initial).await.map(|jid| (jid, Vec::new())));
    }
    let need = match sasl::scram_start(mech, plus_offered, cb, &initial) {
        Ok(n) => n,
        Err(f) => return Ok(Err(f)),
    };
    let jid = BareJid::parse(&format!("{}@{}", need.username(), srv.domain())).ok();
    if let (Some(authzid), Some(jid)) = (need.authzid(), &jid) {
        if authzid != jid.to_string() {
            return Ok(Err(sasl::SaslFailure::new("invalid-authzid")));
        }
    }
    let creds = match &jid {
        Some(jid) => load_creds(srv, jid, mech).await,
        None => None,
    };
    let (await_final, server_first) = need.server_first(creds.as_ref());
    xs.send_element(&Element::new("challenge", profile.ns()).with_text(b64(&server_first)))
        .await?;
    let client_final = match read_response(xs, profile, deadline).await? {
        Ok(data) => data,
        Err(f) => return Ok(Err(f)),
    };
    match (await_final.finish(&client_final), jid) {
        (Ok(success), Some(jid)) => Ok(Ok((jid, success.server_final().to_vec()))),
        (Ok(_), None) => Ok(Err(sasl::SaslFailure::new("not-authorized"))),
        (Err(f), _) => Ok(Err(f)),
    }
}

async fn read_response<S: AsyncRead + AsyncWrite + Unpin>(
    xs: &mut XmlStream<S>,
    profile: Profile,
    deadline: Instant,
) -> Result<Result<Vec<u8>, sasl::SaslFailure>, End> {
    match xs.next_frame(deadline).await? {
        Frame::Element(el) if el.is("response", profile.ns()) => {
            Ok(decode_sasl(&el).ok_or_else(|| sasl::SaslFailure::new("incorrect-encoding")))
        }
        Frame::Element(el) if el.is("abort", profile.ns()) => {
            Ok(Err(sasl::SaslFailure::new("aborted")))
        }
        Frame::StreamClose => Err(End::Closed),
        _ => Err(End::Error(StreamError::NotAuthorized, None)),
    }
}

async fn load_creds(srv: &Server, jid: &BareJid, mech: Mechanism) -> Option<sasl::ScramCreds> {
    match srv.store.account(jid.as_ref()).await {
        Ok(Some(account)) => sasl::decode_creds(&account.creds)
            .ok()?
            .into_iter()
            .find(|c| Some(c.hash) == mech.hash()),
        Ok(None) => None,
        Err(e) => {
            log::error!("store: cannot read account {jid}: {e}");
            None
        }
    }
}

async fn plain(srv: &Server, msg: &[u8]) -> Result<BareJid, sasl::SaslFailure> {
    let creds = sasl::plain_parse(msg)?;
    let jid = BareJid::parse(&format!("{}@{}", creds.authcid, srv.domain()))
        .map_err(|_| sasl::SaslFailure::new("not-authorized"))?;
    if creds
        .authzid
        .as_deref()
        .is_some_and(|a| !a.is_empty() && a != jid.to_string())
    {
        return Err(sasl::SaslFailure::new("invalid-authzid"));
    }
    if crate::accounts::check_password(&srv.store, &jid, &creds.password).await {
        Ok(jid)
    } else {
        Err(sasl::SaslFailure::new("not-authorized"))
    }
}

/// Resource binding (RFC 6120 §7), or resumption of an earlier session (XEP-0198 §5).
/// Returns the session state and whether it was resumed.
#[allow(clippy::too_many_arguments)]
async fn bind_or_resume<S: AsyncRead + AsyncWrite + Unpin>(
    srv: &Server,
    xs: &mut XmlStream<S>,
    user: &BareJid,
    conn: u64,
    deadline: Instant,
    id: &str,
    tag: &str,
    fresh_stream: bool,
) -> Result<(BoundState, bool), End> {
    // After SASL2 there is no restart and the features were already sent (XEP-0388 §2.6.1).
    if fresh_stream {
        open_stream(srv, xs, deadline, id).await?;
        xs.send_element(&post_auth_features(srv, true)).await?;
    }
    loop {
        let el = match xs.next_frame(deadline).await? {
            Frame::Element(el) => el,
            Frame::StreamClose => return Err(End::Closed),
            Frame::StreamOpen(_) => return Err(End::Error(StreamError::NotWellFormed, None)),
        };
        if el.is("resume", ns::SM) {
            match resume(srv, xs, user, &el, tag).await? {
                Some(state) => return Ok((state, true)),
                None => continue,
            }
        }
        if el.is("enable", ns::SM) {
            // XEP-0198 §3: only after binding.
            xs.send_element(&sm_failed(Condition::UnexpectedRequest))
                .await?;
            continue;
        }
        if !el.is("iq", ns::CLIENT) {
            return Err(End::Error(
                StreamError::NotAuthorized,
                Some("bind a resource first"),
            ));
        }
        let iq = el;
        let Some(req) = iq
            .get_child("bind", ns::BIND)
            .filter(|_| iq.attr("type") == Some("set"))
        else {
            let reply = stanza::error_reply(&iq, &Condition::NotAuthorized.into());
            xs.send_element(&reply).await?;
            continue;
        };
        let requested = req
            .get_child("resource", ns::BIND)
            .map(|r| r.text())
            .unwrap_or_default();
        let resource = if requested.trim().is_empty() {
            new_id()
        } else {
            requested
        };
        let me = match user.with_resource(&resource) {
            Ok(me) => me,
            Err(_) => {
                let reply = stanza::error_reply(&iq, &Condition::BadRequest.into());
                xs.send_element(&reply).await?;
                continue;
            }
        };
        let (tx, rx) = crate::queue::unbounded();
        if let Some(old) = srv.sessions.bind(me.clone(), conn, tx) {
            log::info!("{tag}: {me} was bound by c2s#{}; replacing it", old.conn);
            crate::sessions::send(&old, Outbound::Close(StreamError::Conflict));
        }
        let reply = stanza::iq_result(
            &iq,
            Some(
                Element::new("bind", ns::BIND)
                    .with_child(Element::new("jid", ns::BIND).with_text(me.to_string())),
            ),
        );
        xs.send_element(&reply).await?;
        log::info!("{tag}: bound {me}");
        let state = BoundState {
            me,
            conn,
            presence: presence::SessionPresence::default(),
            sm: None,
            rx,
        };
        return Ok((state, false));
    }
}

/// XEP-0198 §5: takes over the session named by `previd`, acknowledges what the client says
/// it received and re-sends the rest. `None` (after a `<failed/>`) lets the client bind anew.
async fn resume<S: AsyncRead + AsyncWrite + Unpin>(
    srv: &Server,
    xs: &mut XmlStream<S>,
    user: &BareJid,
    req: &Element,
    tag: &str,
) -> Result<Option<BoundState>, End> {
    match take_for_resume(srv, user, req, tag).await {
        Ok((state, resumed, unacked)) => {
            let mut out = Vec::new();
            XmlStream::<S>::write_element(&mut out, &resumed);
            for el in &unacked {
                XmlStream::<S>::write_element(&mut out, el);
            }
            xs.send_raw(&out).await?;
            Ok(Some(state))
        }
        Err(failed) => {
            xs.send_element(&failed).await?;
            Ok(None)
        }
    }
}

/// Takes over the session a `<resume/>` names: the state, the `<resumed/>` answer and the
/// stanzas to re-send after it; or the `<failed/>` answer.
async fn take_for_resume(
    srv: &Server,
    user: &BareJid,
    req: &Element,
    tag: &str,
) -> Result<(BoundState, Element, Vec<Element>), Element> {
    let previd = req.attr("previd").unwrap_or_default();
    let h = req.attr("h").and_then(|h| h.parse::<u32>().ok());
    let taken = match h {
        Some(_) => srv.sm.take(previd, user).await,
        None => None,
    };
    let Some(mut state) = taken else {
        log::info!("{tag}: cannot resume session {previd:?} (unknown or expired)");
        return Err(sm_failed(Condition::ItemNotFound));
    };
    let Some(sm) = state.sm.as_mut() else {
        return Err(sm_failed(Condition::ItemNotFound));
    };
    if sm.ack(h.unwrap_or(0)).is_err() {
        log::info!("{tag}: client acknowledged more than was sent while resuming; resending all");
    }
    let resumed = Element::new("resumed", ns::SM)
        .with_attr("h", sm.inbound.to_string())
        .with_attr("previd", previd);
    let unacked: Vec<Element> = sm.unacked.iter().cloned().collect();
    // A fresh connection starts active (XEP-0352 §4).
    srv.sessions.set_asleep(&state.me, false);
    log::info!(
        "{tag}: resumed {} ({} stanza(s) re-sent)",
        state.me,
        unacked.len()
    );
    Ok((state, resumed, unacked))
}

fn sm_failed(condition: Condition) -> Element {
    Element::new("failed", ns::SM).with_child(Element::new(condition.as_str(), ns::STANZAS_ERR))
}

struct Session<'a> {
    srv: &'a Server,
    st: BoundState,
    csi: Csi,
    /// Takeover requests from a connection resuming this session (resumable sessions only).
    takeover: Option<Receiver<async_channel::Sender<BoundState>>>,
    tag: &'a str,
    /// `[limits] stanzas_per_second`: a client that floods loses its session.
    rate: Bucket,
}

enum Event {
    Read(std::io::Result<usize>),
    Out(Result<Outbound, crate::queue::RecvError>),
    Takeover(Result<async_channel::Sender<BoundState>, async_channel::RecvError>),
}

impl Session<'_> {
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(&mut self, xs: &mut XmlStream<S>) -> End {
        loop {
            let event = {
                let rx = &self.st.rx;
                let takeover = &self.takeover;
                let out = async { Event::Out(rx.recv().await) };
                let read = async { Event::Read(xs.fill().await) };
                let take = async {
                    match takeover {
                        Some(t) => Event::Takeover(t.recv().await),
                        None => futures_lite::future::pending().await,
                    }
                };
                out.or(read).or(take).await
            };
            let result = match event {
                Event::Read(Ok(0)) => Err(End::Eof),
                Event::Read(Ok(_)) => Box::pin(self.incoming(xs)).await,
                Event::Read(Err(e)) => Err(End::Io(e)),
                Event::Out(Ok(first)) => Box::pin(self.outgoing(xs, first)).await,
                Event::Out(Err(_)) => Err(End::Error(StreamError::PolicyViolation, None)),
                Event::Takeover(Ok(reply)) => Err(End::Takeover(reply)),
                Event::Takeover(Err(_)) => {
                    self.takeover = None;
                    Ok(())
                }
            };
            if let Err(end) = result {
                return end;
            }
        }
    }

    async fn incoming<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        xs: &mut XmlStream<S>,
    ) -> Result<(), End> {
        while let Some(frame) = xs.ready_frame()? {
            match frame {
                Frame::Element(_) if !self.rate.take(Instant::now()) => {
                    log::warn!(
                        "{}: closing: the client sends more than {} stanzas per second ([limits] stanzas_per_second)",
                        self.tag,
                        self.srv.config.limits.stanzas_per_second
                    );
                    return Err(End::Error(
                        StreamError::PolicyViolation,
                        Some("too many stanzas per second"),
                    ));
                }
                Frame::Element(el) => self.stanza(xs, el).await?,
                Frame::StreamClose => return Err(End::Closed),
                Frame::StreamOpen(_) => return Err(End::Error(StreamError::NotWellFormed, None)),
            }
        }
        Ok(())
    }

    /// Takes the first queued item and whatever else is already waiting, passes stanzas
    /// through CSI, and writes what is due in one write.
    async fn outgoing<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        xs: &mut XmlStream<S>,
        first: Outbound,
    ) -> Result<(), End> {
        let mut ready = Vec::new();
        let mut next = Some(first);
        let mut end = None;
        let mut n = 0;
        while let Some(item) = next.take() {
            match item {
                Outbound::Stanza(el) => self.csi.push(*el, &mut ready),
                Outbound::Close(cond) => end = Some(End::Error(cond, None)),
                Outbound::Shutdown => end = Some(End::Shutdown),
            }
            n += 1;
            if end.is_some() || n >= WRITE_BATCH {
                break;
            }
            next = self.st.rx.try_recv().ok();
        }
        if end.is_some() {
            ready.extend(self.csi.drain());
        }
        self.write_stanzas(xs, ready).await?;
        end.map_or(Ok(()), Err)
    }

    /// Writes stanzas in one write, keeping them for stream management until acknowledged,
    /// and asks for an ack when one is due.
    async fn write_stanzas<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        xs: &mut XmlStream<S>,
        stanzas: Vec<Element>,
    ) -> Result<(), End> {
        let mut out = Vec::with_capacity(256);
        for el in &stanzas {
            XmlStream::<S>::write_element(&mut out, el);
        }
        if let Some(sm) = self.st.sm.as_mut() {
            for el in stanzas {
                sm.sent(&el);
            }
            if sm.unacked.len() > sm::MAX_UNACKED {
                return Err(End::Error(
                    StreamError::PolicyViolation,
                    Some("too many unacknowledged stanzas"),
                ));
            }
            if !sm.unacked.is_empty() && !sm.requested {
                out.extend_from_slice(b"<r xmlns='urn:xmpp:sm:3'/>");
                sm.requested = true;
            }
        }
        if !out.is_empty() {
            xs.send_raw(&out).await?;
        }
        Ok(())
    }

    async fn stanza<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        xs: &mut XmlStream<S>,
        mut el: Element,
    ) -> Result<(), End> {
        if el.ns() == ns::SM {
            return self.sm_nonza(xs, &el).await;
        }
        if el.ns() == ns::CSI {
            let mut ready = Vec::new();
            let inactive = match el.name() {
                "active" => false,
                "inactive" => true,
                _ => return Err(End::Error(StreamError::UnsupportedStanzaType, None)),
            };
            self.csi.set_inactive(inactive, &mut ready);
            self.srv.sessions.set_asleep(&self.st.me, inactive);
            return self.write_stanzas(xs, ready).await;
        }
        let Some(kind) = Kind::of(&el) else {
            return Err(End::Error(StreamError::UnsupportedStanzaType, None));
        };
        let me = self.st.me.clone();
        // RFC 6120 §8.1.2.1: the server stamps `from`; a client claiming another address is
        // a stream-level offence.
        if let Some(from) = el.attr("from") {
            let ok = Jid::parse(from).is_ok_and(|j| {
                j.to_bare() == me.to_bare()
                    && (j.resource().is_none() || j.resource() == Some(me.resource()))
            });
            if !ok {
                return Err(End::Error(StreamError::InvalidFrom, None));
            }
        }
        el.set_attr("from", me.to_string());
        match kind {
            Kind::Presence => {
                let after =
                    presence::outbound(self.srv, &me, self.st.conn, &mut self.st.presence, el)
                        .await;
                let requests = if after == presence::After::Initial {
                    crate::services::announce::on_initial_presence(self.srv, &me).await;
                    presence::pending_requests(self.srv, &me).await
                } else {
                    Vec::new()
                };
                let offline_due = self.st.presence.offline_due(self.srv, &me);
                self.deliver_stored(xs, requests, offline_due).await?;
            }
            Kind::Iq => {
                if let Err(e) = check_iq(&el) {
                    router::bounce(self.srv, &el, e.into());
                } else if el.get_child("session", ns::SESSION).is_some() {
                    // RFC 3921 session establishment is a no-op kept for old clients.
                    router::deliver_reply(self.srv, stanza::iq_result(&el, None));
                } else {
                    router::route(self.srv, &me, el).await;
                }
            }
            Kind::Message => router::route(self.srv, &me, el).await,
        }
        if let Some(sm) = self.st.sm.as_mut() {
            sm.received();
        }
        Ok(())
    }

    /// XEP-0198 elements after binding: enable, ack requests and acks.
    async fn sm_nonza<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        xs: &mut XmlStream<S>,
        el: &Element,
    ) -> Result<(), End> {
        match (el.name(), self.st.sm.as_mut()) {
            ("enable", None) => {
                let resumable = matches!(el.attr("resume"), Some("true" | "1"));
                let id = resumable.then(new_id);
                let mut enabled = Element::new("enabled", ns::SM);
                if let Some(id) = &id {
                    let timeout = self.srv.config.limits.resume_timeout.as_secs();
                    enabled.set_attr("id", id.as_str());
                    enabled.set_attr("resume", "true");
                    enabled.set_attr("max", timeout.to_string());
                    self.takeover = Some(self.srv.sm.live(id, self.st.me.to_bare()));
                }
                log::debug!(
                    "{}: stream management enabled (resumable: {resumable})",
                    self.tag
                );
                self.st.sm = Some(Sm::new(id));
                xs.send_element(&enabled).await?;
            }
            ("enable", Some(_)) | ("resume", _) => {
                xs.send_element(&sm_failed(Condition::UnexpectedRequest))
                    .await?;
            }
            ("r", Some(sm)) => {
                let a = Element::new("a", ns::SM).with_attr("h", sm.inbound.to_string());
                xs.send_element(&a).await?;
            }
            ("a", Some(sm)) => {
                let h = el.attr("h").and_then(|h| h.parse::<u32>().ok());
                match h.map(|h| sm.ack(h)) {
                    Some(Ok(())) => {}
                    _ => {
                        return Err(End::Error(
                            StreamError::UndefinedCondition,
                            Some("the acknowledged count is not one this server sent"),
                        ))
                    }
                }
            }
            // An ack or request before `enable` has nothing to refer to; ignore it.
            ("r" | "a", None) => {}
            _ => return Err(End::Error(StreamError::UnsupportedStanzaType, None)),
        }
        Ok(())
    }

    /// Writes subscription requests that waited for this login, then (when due) offline
    /// messages, which are removed from the store once written (and, with stream management,
    /// kept until acknowledged).
    async fn deliver_stored<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        xs: &mut XmlStream<S>,
        requests: Vec<Element>,
        offline_due: bool,
    ) -> Result<(), End> {
        let (mut messages, last) = if offline_due {
            offline::pending(self.srv, &self.st.me).await
        } else {
            (Vec::new(), None)
        };
        if self.st.presence.archived_offline_is_redundant {
            // Bind 2 (XEP-0386 §3): the client gets these from the archive; deliver only what
            // the archive doesn't have.
            let bare = self.st.me.to_bare().to_string();
            messages.retain(|m| {
                !m.children().any(|c| {
                    c.is("stanza-id", "urn:xmpp:sid:0") && c.attr("by") == Some(bare.as_str())
                })
            });
        }
        if requests.is_empty() && messages.is_empty() {
            if let Some(last) = last {
                offline::delivered(self.srv, &self.st.me, last).await;
            }
            return Ok(());
        }
        let count = messages.len();
        let mut all = requests;
        all.extend(messages);
        self.write_stanzas(xs, all).await?;
        if let Some(last) = last {
            log::debug!("{}: delivered {count} offline message(s)", self.tag);
            offline::delivered(self.srv, &self.st.me, last).await;
        }
        Ok(())
    }

    /// The connection is over: hand the session to a resuming connection, park it for one,
    /// or end it (presence, routing table, and whatever the client never acknowledged).
    async fn end<S: AsyncRead + AsyncWrite + Unpin>(
        self,
        xs: &mut XmlStream<S>,
        guard: &mut Bound<'_>,
        id: &str,
        end: End,
    ) {
        let Session {
            srv,
            mut st,
            mut csi,
            takeover,
            tag,
            rate: _,
        } = self;
        // Dropping the takeover receiver tells a resuming connection to look in the slot.
        drop(takeover);
        let held = csi.drain();
        let sm_id = st.sm.as_ref().and_then(|s| s.id.clone());
        match (end, sm_id) {
            (End::Takeover(reply), _) => {
                keep_for_resumption(&mut st, held);
                guard.armed = false;
                log::info!("{tag}: session taken over by a resuming connection");
                if let Err(e) = reply.send(st).await {
                    // The resuming connection gave up; end the session properly.
                    Box::pin(teardown(srv, e.into_inner(), tag)).await;
                }
                xs.close().await;
            }
            (End::Eof | End::Io(_), Some(sid)) if !srv.stopping.load(Ordering::SeqCst) => {
                keep_for_resumption(&mut st, held);
                guard.armed = false;
                let timeout = srv.config.limits.resume_timeout;
                srv.sessions.set_asleep(&st.me, true);
                let gen = srv.sm.park(&sid, st);
                log::info!(
                    "{tag}: connection lost; keeping the session {}s for resumption",
                    timeout.as_secs()
                );
                let stopping = srv.shutdown_signal();
                smol::Timer::after(timeout)
                    .or(async {
                        stopping.await;
                        std::time::Instant::now()
                    })
                    .await;
                if let Some(st) = srv.sm.expire(&sid, gen) {
                    log::info!("{tag}: resumption window closed for {}", st.me);
                    Box::pin(teardown(srv, st, tag)).await;
                }
            }
            (end, sm_id) => {
                if let Some(sid) = sm_id {
                    srv.sm.remove(&sid);
                }
                for el in held {
                    reroute(srv, &st.me, el).await;
                }
                guard.armed = false;
                Box::pin(teardown(srv, st, tag)).await;
                Box::pin(finish(srv, xs, tag, id, end)).await;
            }
        }
    }
}

/// Stanzas held by CSI were never written; they go out first on the resumed stream.
fn keep_for_resumption(st: &mut BoundState, held: Vec<Element>) {
    if let Some(sm) = st.sm.as_mut() {
        sm.unacked.extend(held);
    }
}

/// Ends a bound session for good: unavailable presence, out of the routing table, last
/// activity, and every stanza the client never acknowledged or never got re-routed (XEP-0198
/// §5: as if it had not been delivered).
pub async fn teardown(srv: &Server, mut st: BoundState, tag: &str) {
    presence::disconnected(srv, &st.me, st.conn, &mut st.presence).await;
    srv.sessions.unbind(&st.me, st.conn);
    // Rooms joined without (or after) available presence hear it here; a newer connection
    // that took the resource over keeps its place.
    if srv.sessions.resource(&st.me).is_none() {
        crate::services::muc::session_ended(srv, &st.me).await;
    }
    if let Err(e) = srv
        .store
        .set_last(st.me.to_bare().as_ref(), crate::time::now_unix(), "")
        .await
    {
        log::warn!("{tag}: cannot record last activity: {e}");
    }
    let mut pending: Vec<Element> = st.sm.take().map(|sm| sm.unacked.into()).unwrap_or_default();
    while let Ok(item) = st.rx.try_recv() {
        if let Outbound::Stanza(el) = item {
            pending.push(*el);
        }
    }
    if !pending.is_empty() {
        log::info!(
            "{tag}: re-routing {} undelivered stanza(s) of {}",
            pending.len(),
            st.me
        );
    }
    for el in pending {
        reroute(srv, &st.me, el).await;
    }
}

/// One stanza that `me` never acknowledged: messages go to the account's other resources or
/// to offline storage, requests are answered with an error, the rest (presence, carbons,
/// archive results) is dropped as stale.
async fn reroute(srv: &Server, me: &FullJid, el: Element) {
    match el.name() {
        "message" => {
            let copy = el.has_child("sent", ns::CARBONS)
                || el.has_child("received", ns::CARBONS)
                || el.children().any(|c| c.is("result", "urn:xmpp:mam:2"));
            if copy || matches!(el.attr("type"), Some("groupchat" | "headline" | "error")) {
                return;
            }
            let bare = me.to_bare();
            let to_me = el.attr("to").and_then(|t| FullJid::parse(t).ok()).as_ref() == Some(me);
            if to_me && !srv.stopping.load(Ordering::SeqCst) {
                return router::message_to_bare(srv, &bare, el).await;
            }
            // Sent to the bare JID: other available resources had their own copy.
            let others = srv
                .sessions
                .resources(&bare)
                .iter()
                .any(|r| r.available && r.priority >= 0 && r.jid != *me);
            if !others || srv.stopping.load(Ordering::SeqCst) {
                offline::store_or_bounce(srv, &bare, el).await;
            }
        }
        "iq" if matches!(el.attr("type"), Some("get" | "set")) => {
            router::bounce(srv, &el, Condition::ServiceUnavailable.into());
        }
        _ => {}
    }
}

/// RFC 6120 §8.2.3: an iq has an id and a known type; get and set carry exactly one payload.
pub(crate) fn check_iq(iq: &Element) -> Result<(), Condition> {
    if iq.attr("id").is_none() {
        return Err(Condition::BadRequest);
    }
    match iq.attr("type") {
        Some("get" | "set") if iq.children().count() == 1 => Ok(()),
        Some("result" | "error") => Ok(()),
        _ => Err(Condition::BadRequest),
    }
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// A random identifier for stream ids and generated resources.
pub fn new_id() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 9];
    // SystemRandom only fails when the OS has no randomness source at all; a fixed id is then
    // still a valid (if guessable) stream id.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
