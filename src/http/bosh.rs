//! XEP-0124 (Bidirectional-streams Over Synchronous HTTP) with XEP-0206 (XMPP Over BOSH) at
//! `/http-bind`.
//!
//! A BOSH session is the c2s session over a `pipe`, like a WebSocket one: the session
//! request and `xmpp:restart` become stream headers for c2s, the payload of each `<body/>`
//! goes to c2s in `rid` order, and c2s's output is collected into the held request's
//! response. `hold` is always 1 and `requests` 2: the client keeps one request waiting
//! (long-polling, answered when there is something to say or after `wait` seconds) and may
//! send one more at any time, which releases the waiting one.
//!
//! The parsing of a request body and the `rid` window are pure (`parse_body`, `Window`); the
//! rest is the session table, the handler and the expiry sweep.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::FutureExt as _;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::body::{self, Body};
use super::pipe::{self, FromServer, ToServer};
use super::{Conn, Web};
use crate::stanza::ns;
use crate::xml::{escape_attr_value, Element, Frame, Limits};

/// Longest `wait` we grant (seconds): under common proxy and NAT idle timeouts.
pub const MAX_WAIT: u64 = 60;
/// `inactivity`: how long a session lives with no request pending.
pub const INACTIVITY: Duration = Duration::from_secs(60);
/// `requests`: requests the client may have open at once (XEP-0124 §7.1: hold + 1).
pub const REQUESTS: u64 = 2;
/// `hold`: requests we keep waiting at once.
pub const HOLD: usize = 1;
/// `polling`: the shortest interval between empty requests when none is held (seconds).
pub const POLLING: u64 = 2;
/// Responses kept for retransmission (a client that lost one resends its `rid`).
const CACHED_RESPONSES: usize = REQUESTS as usize;
/// Bytes a request body may have beyond the stanza size limit (the `<body/>` wrapper).
const BODY_OVERHEAD: usize = 16 * 1024;
/// How often the expiry sweep runs.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// Open BOSH sessions beyond which new ones are refused.
const MAX_SESSIONS: usize = 2048;

// ----- pure: request bodies -----

/// What a `<body/>` asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    /// A session request (no `sid`), XEP-0124 §7.1 / XEP-0206 §3.
    Create {
        to: String,
        lang: Option<String>,
        /// Seconds; already capped to `MAX_WAIT`.
        wait: u64,
        /// XEP-0206 `xmpp:version`.
        version: Option<String>,
    },
    /// An ordinary request in session `sid`.
    Session { sid: String, op: Op },
}

/// What a request within a session does besides carrying payload.
#[derive(Debug, PartialEq, Eq)]
pub enum Op {
    Normal,
    /// XEP-0206 §5: `xmpp:restart='true'` after SASL success.
    Restart,
    /// XEP-0124 §13: `type='terminate'`.
    Terminate,
}

/// A parsed request body.
#[derive(Debug, PartialEq, Eq)]
pub struct BoshRequest {
    pub rid: u64,
    pub kind: Kind,
    /// The stanzas and nonzas inside, for c2s.
    pub payload: Vec<Element>,
}

/// Why a body was refused (XEP-0124 §17: the terminal conditions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    BadRequest,
    HostUnknown,
    ItemNotFound,
    PolicyViolation,
    RemoteStreamError,
    SystemShutdown,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::BadRequest => "bad-request",
            Condition::HostUnknown => "host-unknown",
            Condition::ItemNotFound => "item-not-found",
            Condition::PolicyViolation => "policy-violation",
            Condition::RemoteStreamError => "remote-stream-error",
            Condition::SystemShutdown => "system-shutdown",
        }
    }
}

const XML_LANG: &str = "xml:lang";

/// Parses one request body (XEP-0124 §7, §9, §13; XEP-0206 §3, §5).
pub fn parse_body(text: &str, limits: Limits) -> Result<BoshRequest, Condition> {
    let body = Element::parse_with_limits(text, limits).map_err(|_| Condition::BadRequest)?;
    if !body.is("body", ns::HTTPBIND) {
        return Err(Condition::BadRequest);
    }
    let rid = body
        .attr("rid")
        .and_then(|r| r.parse::<u64>().ok())
        // XEP-0124 §14: below 2^53, so a client's JavaScript number can hold it.
        .filter(|r| *r < (1 << 53))
        .ok_or(Condition::BadRequest)?;
    let xbosh = |name: &str| body.attr(&format!("{{{}}}{name}", ns::XBOSH));
    let kind = match body.attr("sid") {
        None => {
            let to = body.attr("to").ok_or(Condition::BadRequest)?.to_string();
            let wait = body
                .attr("wait")
                .and_then(|w| w.parse::<u64>().ok())
                .ok_or(Condition::BadRequest)?
                .min(MAX_WAIT);
            Kind::Create {
                to,
                lang: body.attr(XML_LANG).map(str::to_string),
                wait,
                version: xbosh("version").map(str::to_string),
            }
        }
        Some(sid) => {
            let op = if body.attr("type") == Some("terminate") {
                Op::Terminate
            } else if matches!(xbosh("restart"), Some("true" | "1")) {
                Op::Restart
            } else {
                Op::Normal
            };
            Kind::Session {
                sid: sid.to_string(),
                op,
            }
        }
    };
    let payload = body.children().cloned().collect();
    Ok(BoshRequest { rid, kind, payload })
}

// ----- pure: the rid window -----

/// What to do with a request's `rid` (XEP-0124 §14).
#[derive(Debug, PartialEq, Eq)]
pub enum RidCheck {
    /// The next one: process it now.
    Next,
    /// Ahead of the next, within the window: wait until the ones before it are processed.
    Ahead,
    /// Already answered: send the same response again.
    Repeat(Bytes),
    /// Already processed but its answer is not known (still held) or no longer kept.
    Stale,
    /// Beyond the window: the session ends with `item-not-found`.
    OutOfWindow,
}

/// The `rid`s of one session: the next expected and the last responses, for retransmission.
#[derive(Debug)]
pub struct Window {
    next: u64,
    answered: VecDeque<(u64, Bytes)>,
}

impl Window {
    /// After the session request `rid`.
    pub fn new(rid: u64) -> Window {
        Window {
            next: rid + 1,
            answered: VecDeque::new(),
        }
    }

    pub fn check(&self, rid: u64) -> RidCheck {
        if rid == self.next {
            RidCheck::Next
        } else if rid > self.next {
            if rid - self.next < REQUESTS {
                RidCheck::Ahead
            } else {
                RidCheck::OutOfWindow
            }
        } else {
            match self.answered.iter().find(|(r, _)| *r == rid) {
                Some((_, resp)) => RidCheck::Repeat(resp.clone()),
                None if self.next - rid <= REQUESTS => RidCheck::Stale,
                None => RidCheck::OutOfWindow,
            }
        }
    }

    /// `rid` (which was `Next`) was processed.
    pub fn advance(&mut self) {
        self.next += 1;
    }

    /// Keeps the response to `rid` for a retransmission.
    pub fn answered(&mut self, rid: u64, response: Bytes) {
        self.answered.push_back((rid, response));
        while self.answered.len() > CACHED_RESPONSES {
            self.answered.pop_front();
        }
    }
}

// ----- pure: response bodies -----

/// A response `<body/>` around already-serialized `content`, with extra attributes.
pub fn response_body(attrs: &[(&str, String)], content: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(128 + content.len());
    out.extend_from_slice(b"<body xmlns='http://jabber.org/protocol/httpbind'");
    for (k, v) in attrs {
        out.extend_from_slice(format!(" {k}='{}'", escape_attr_value(v)).as_bytes());
    }
    if content.is_empty() {
        out.extend_from_slice(b"/>");
    } else {
        out.push(b'>');
        out.extend_from_slice(content);
        out.extend_from_slice(b"</body>");
    }
    Bytes::from(out)
}

/// `<body type='terminate' condition='…'/>`.
pub fn terminate_body(condition: Option<Condition>, content: &[u8]) -> Bytes {
    let mut attrs = vec![("type", "terminate".to_string())];
    if let Some(c) = condition {
        attrs.push(("condition", c.as_str().to_string()));
    }
    response_body(&attrs, content)
}

// ----- sessions -----

/// Live BOSH sessions by `sid`.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    fn get(&self, sid: &str) -> Option<Arc<Session>> {
        lock(&self.map).get(sid).cloned()
    }

    fn remove(&self, sid: &str) {
        lock(&self.map).remove(sid);
    }
}

struct Session {
    sid: String,
    tag: String,
    wait: Duration,
    state: Mutex<State>,
    /// Notified whenever `state` changes or server output arrives for a waiting request.
    changed: event_listener::Event,
    /// Held across the `await` of writing payload to c2s, which happens in `rid` order.
    to_server: smol::lock::Mutex<Option<ToServer>>,
    from_server: Mutex<FromServer>,
}

struct State {
    window: Window,
    /// `rid`s of requests waiting for something to answer with.
    waiting: BTreeSet<u64>,
    /// Requests being handled (processing or waiting).
    in_flight: usize,
    last_seen: Instant,
    /// Set when the stream ended: the response that ends the session.
    ended: Option<Bytes>,
}

impl Session {
    /// A session whose request `rid` (the session request) is in flight.
    fn new(
        sid: String,
        tag: String,
        wait: Duration,
        rid: u64,
        to_server: ToServer,
        from_server: FromServer,
    ) -> Arc<Session> {
        Arc::new(Session {
            sid,
            tag,
            wait,
            state: Mutex::new(State {
                window: Window::new(rid),
                waiting: BTreeSet::new(),
                in_flight: 1,
                last_seen: Instant::now(),
                ended: None,
            }),
            changed: event_listener::Event::new(),
            to_server: smol::lock::Mutex::new(Some(to_server)),
            from_server: Mutex::new(from_server),
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Answers one request to `/http-bind`.
pub async fn handle(conn: Arc<Conn>, req: Request<Incoming>) -> Response<Body> {
    let limits = Limits {
        max_stanza_bytes: conn.web.srv.config.limits.max_stanza_size + BODY_OVERHEAD,
        ..Limits::default()
    };
    let text = match read_body(req, limits.max_stanza_bytes).await {
        Ok(t) => t,
        Err(status) => {
            let mut r = body::status(status);
            body::allow_any_origin(&mut r);
            return r;
        }
    };
    let answer = match parse_body(&text, limits) {
        Ok(BoshRequest {
            rid,
            kind:
                Kind::Create {
                    to,
                    lang,
                    wait,
                    version,
                },
            payload: _,
        }) => create(&conn, rid, &to, lang, wait, version).await,
        Ok(BoshRequest {
            rid,
            kind: Kind::Session { sid, op },
            payload,
        }) => match conn.web.bosh.get(&sid) {
            Some(session) => in_session(&conn.web, session, rid, op, payload).await,
            None => terminate_body(Some(Condition::ItemNotFound), b""),
        },
        Err(c) => {
            log::debug!("{}: bad BOSH body from {}", conn.tag, conn.peer);
            terminate_body(Some(c), b"")
        }
    };
    let mut r = body::response(StatusCode::OK, "text/xml; charset=utf-8", answer);
    body::allow_any_origin(&mut r);
    r
}

async fn read_body(req: Request<Incoming>, max: usize) -> Result<String, StatusCode> {
    let bytes = body::read_all(req, max).await?;
    String::from_utf8(bytes.to_vec()).map_err(|_| StatusCode::BAD_REQUEST)
}

/// A session request: starts c2s over a pipe and answers with the session attributes and
/// the first stream features.
async fn create(
    conn: &Arc<Conn>,
    rid: u64,
    to: &str,
    lang: Option<String>,
    wait: u64,
    version: Option<String>,
) -> Bytes {
    let web = &conn.web;
    let srv = &web.srv;
    if !to.trim_end_matches('.').eq_ignore_ascii_case(srv.domain()) {
        return terminate_body(Some(Condition::HostUnknown), b"");
    }
    if srv.stopping.load(std::sync::atomic::Ordering::SeqCst) {
        return terminate_body(Some(Condition::SystemShutdown), b"");
    }
    if lock(&web.bosh.map).len() >= MAX_SESSIONS {
        log::warn!(
            "{}: {MAX_SESSIONS} BOSH sessions open; refusing {}",
            conn.tag,
            conn.peer
        );
        return terminate_body(Some(Condition::PolicyViolation), b"");
    }
    let id = srv.next_conn_id();
    let sid = crate::session::c2s::new_id();
    let (duplex, mut to_server, from_server) = pipe::pipe();
    let mut header_attrs = vec![("to", to), ("version", version.as_deref().unwrap_or("1.0"))];
    if let Some(l) = lang.as_deref() {
        header_attrs.push(("xml:lang", l));
    }
    if to_server
        .send(pipe::stream_header(header_attrs).as_bytes())
        .await
        .is_err()
    {
        return terminate_body(Some(Condition::RemoteStreamError), b"");
    }
    let session = Session::new(
        sid.clone(),
        format!("c2s#{id}"),
        Duration::from_secs(wait),
        rid,
        to_server,
        from_server,
    );
    lock(&web.bosh.map).insert(sid.clone(), session.clone());
    log::info!("c2s#{id}: BOSH session from {}", conn.peer);
    let c2s_srv = srv.clone();
    let peer = conn.peer;
    let deadline = Instant::now() + srv.config.limits.auth_timeout;
    web.ex
        .spawn(super::guarded(conn.clone(), move |_| async move {
            let _open = super::OpenSession::new(&c2s_srv);
            Box::pin(crate::session::c2s::serve_secure(
                c2s_srv,
                duplex,
                peer,
                crate::sasl::CbInfo::none(),
                id,
                deadline,
            ))
            .await
        }))
        .detach();
    let content = collect(&web.bosh, &session, rid).await;
    let ended = {
        let mut st = lock(&session.state);
        st.in_flight -= 1;
        st.last_seen = Instant::now();
        st.ended.clone()
    };
    if let Some(end) = ended {
        return end;
    }
    let attrs = [
        ("sid", sid),
        ("wait", wait.to_string()),
        ("requests", REQUESTS.to_string()),
        ("hold", HOLD.to_string()),
        ("inactivity", INACTIVITY.as_secs().to_string()),
        ("polling", POLLING.to_string()),
        ("ver", "1.11".to_string()),
        ("from", srv.domain().to_string()),
        ("secure", "true".to_string()),
        ("xmlns:xmpp", ns::XBOSH.to_string()),
        ("xmpp:version", "1.0".to_string()),
        ("xmlns:stream", ns::STREAM.to_string()),
    ];
    let resp = response_body(&attrs, &content);
    lock(&session.state).window.answered(rid, resp.clone());
    resp
}

/// A request within a session: checks `rid`, passes the payload to c2s in order, then waits
/// for something to answer with.
async fn in_session(
    web: &Web,
    session: Arc<Session>,
    rid: u64,
    op: Op,
    payload: Vec<Element>,
) -> Bytes {
    {
        let mut st = lock(&session.state);
        st.last_seen = Instant::now();
        st.in_flight += 1;
    }
    let resp = in_session_inner(web, &session, rid, op, payload).await;
    {
        let mut st = lock(&session.state);
        st.in_flight -= 1;
        st.last_seen = Instant::now();
    }
    session.changed.notify(usize::MAX);
    resp
}

async fn in_session_inner(
    web: &Web,
    session: &Arc<Session>,
    rid: u64,
    op: Op,
    payload: Vec<Element>,
) -> Bytes {
    // Wait for our turn: requests ahead of the window's next wait for the ones before.
    loop {
        let listener = session.changed.listen();
        let check = {
            let st = lock(&session.state);
            if let Some(end) = &st.ended {
                return end.clone();
            }
            st.window.check(rid)
        };
        match check {
            RidCheck::Next => break,
            RidCheck::Ahead => {
                let timed_out = async {
                    smol::Timer::after(session.wait + Duration::from_secs(5)).await;
                    true
                };
                let timed_out = async {
                    listener.await;
                    false
                }
                .or(timed_out)
                .await;
                if timed_out && lock(&session.state).window.check(rid) == RidCheck::Ahead {
                    log::info!(
                        "{}: BOSH rid {rid} waited for a request that never came; ending",
                        session.tag
                    );
                    return end_session(&web.bosh, session, Condition::ItemNotFound);
                }
            }
            RidCheck::Repeat(resp) => return resp,
            RidCheck::Stale => return response_body(&[], b""),
            RidCheck::OutOfWindow => {
                log::info!("{}: BOSH rid {rid} outside the window; ending", session.tag);
                return end_session(&web.bosh, session, Condition::ItemNotFound);
            }
        }
    }
    // Our turn: the payload goes to c2s in rid order (the lock is taken before the window
    // moves on, so the next request cannot overtake us).
    let mut to_server = session.to_server.lock().await;
    lock(&session.state).window.advance();
    session.changed.notify(usize::MAX);
    let mut bytes = Vec::new();
    if op == Op::Restart {
        bytes.extend_from_slice(
            pipe::stream_header([("to", web.srv.domain()), ("version", "1.0")]).as_bytes(),
        );
    }
    for mut el in payload {
        // A stanza that does not declare `jabber:client` (XEP-0206 §6 says it must) has
        // inherited the body's namespace; it can only have meant the stream's.
        el.replace_ns(ns::HTTPBIND, ns::CLIENT);
        el.write_to(&mut bytes, ns::CLIENT);
    }
    if op == Op::Terminate {
        bytes.extend_from_slice(b"</stream:stream>");
    }
    if !bytes.is_empty() {
        let sent = match to_server.as_mut() {
            Some(tx) => tx.send(&bytes).await.is_ok(),
            None => false,
        };
        if !sent {
            drop(to_server);
            return end_session(&web.bosh, session, Condition::RemoteStreamError);
        }
    }
    if op == Op::Terminate {
        // The client is done; c2s sees the end of its stream and closes.
        *to_server = None;
        drop(to_server);
        log::info!("{}: BOSH session terminated by the client", session.tag);
        let resp = terminate_body(None, b"");
        finish(&web.bosh, session, resp.clone());
        return resp;
    }
    drop(to_server);
    let content = collect(&web.bosh, session, rid).await;
    let mut st = lock(&session.state);
    if let Some(end) = &st.ended {
        return end.clone();
    }
    let resp = response_body(&[], &content);
    st.window.answered(rid, resp.clone());
    resp
}

/// Waits until request `rid` should answer, and returns what it answers with: everything c2s
/// wrote meanwhile, or nothing after `wait`, or nothing at once when a newer request arrived
/// and this one must make room (`hold`). Ends the session when c2s closed the stream.
async fn collect(sessions: &Sessions, session: &Arc<Session>, rid: u64) -> Vec<u8> {
    let deadline = Instant::now() + session.wait;
    lock(&session.state).waiting.insert(rid);
    session.changed.notify(usize::MAX);
    let content = loop {
        let listener = session.changed.listen();
        let (oldest, crowded, ended) = {
            let st = lock(&session.state);
            (
                st.waiting.first() == Some(&rid),
                st.waiting.len() > HOLD,
                st.ended.is_some(),
            )
        };
        if ended {
            break Vec::new();
        }
        if oldest {
            let (frames, finished) = {
                let mut from = lock(&session.from_server);
                (from.ready(), from.is_finished())
            };
            if !frames.is_empty() || finished {
                let (content, closed) = render(session, frames);
                if closed || finished {
                    let end = terminate_body(closed_condition(&content), &content);
                    finish(sessions, session, end);
                    break Vec::new();
                }
                // A restarted stream's header alone is nothing to answer with: the
                // response to a restart must carry the features (XEP-0206 §5), and they
                // follow at once.
                if !content.is_empty() {
                    break content;
                }
                continue;
            }
            if crowded || Instant::now() >= deadline {
                break Vec::new();
            }
            // Wait for output, a newer request, or the deadline.
            let output =
                futures_lite::future::poll_fn(|cx| lock(&session.from_server).poll_ready(cx));
            output
                .or(listener)
                .or(async {
                    smol::Timer::at(deadline).await;
                })
                .await;
        } else {
            listener
                .or(async {
                    smol::Timer::at(deadline).await;
                })
                .await;
            if Instant::now() >= deadline {
                break Vec::new();
            }
        }
    };
    lock(&session.state).waiting.remove(&rid);
    session.changed.notify(usize::MAX);
    content
}

/// Serializes frames of server output for a response; reports whether the stream closed.
fn render(session: &Session, frames: Vec<Frame>) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut closed = false;
    for f in frames {
        match f {
            // A (re)started stream's header has nothing a BOSH client needs (XEP-0206 §5).
            Frame::StreamOpen(_) => {}
            Frame::Element(el) => pipe::write_standalone(&mut out, &el, ns::HTTPBIND),
            Frame::StreamClose => {
                closed = true;
                log::debug!("{}: c2s closed the BOSH stream", session.tag);
            }
        }
    }
    (out, closed)
}

/// A stream that ended with a stream error reports `remote-stream-error` with the error
/// inside (XEP-0206 §7); a clean close has no condition.
fn closed_condition(content: &[u8]) -> Option<Condition> {
    let needle = b"<stream:error";
    content
        .windows(needle.len())
        .any(|w| w == needle)
        .then_some(Condition::RemoteStreamError)
}

/// Ends the session: c2s sees the end of its input; every request gets `end`.
fn finish(sessions: &Sessions, session: &Session, end: Bytes) {
    {
        let mut st = lock(&session.state);
        if st.ended.is_none() {
            st.ended = Some(end);
        }
    }
    // c2s sees EOF now, even if a request still holds the writer.
    lock(&session.from_server).abort();
    sessions.remove(&session.sid);
    session.changed.notify(usize::MAX);
}

fn end_session(sessions: &Sessions, session: &Session, c: Condition) -> Bytes {
    let end = terminate_body(Some(c), b"");
    finish(sessions, session, end.clone());
    end
}

/// Ends sessions whose client stopped making requests for `INACTIVITY`, and drops the
/// table at shutdown. c2s sees EOF, as for a dropped TCP connection: with stream
/// management the session is parked for resumption, otherwise it ends.
pub async fn expire_loop(web: Arc<Web>) {
    loop {
        smol::Timer::after(SWEEP_EVERY).await;
        let sessions: Vec<Arc<Session>> = lock(&web.bosh.map).values().cloned().collect();
        for s in sessions {
            let idle = {
                let st = lock(&s.state);
                st.in_flight == 0 && st.last_seen.elapsed() > INACTIVITY
            };
            if idle {
                log::info!(
                    "{}: BOSH session inactive for {INACTIVITY:?}; ending",
                    s.tag
                );
                let end = terminate_body(Some(Condition::ItemNotFound), b"");
                finish(&web.bosh, &s, end);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<BoshRequest, Condition> {
        parse_body(s, Limits::default())
    }

    #[test]
    fn session_request() {
        let r = parse(
            "<body content='text/xml; charset=utf-8' hold='1' rid='1573741820' to='example.org' \
             wait='600' xml:lang='en' ver='1.6' xmpp:version='1.0' \
             xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh'/>",
        )
        .unwrap();
        assert_eq!(r.rid, 1573741820);
        assert_eq!(
            r.kind,
            Kind::Create {
                to: "example.org".into(),
                lang: Some("en".into()),
                wait: MAX_WAIT,
                version: Some("1.0".into()),
            }
        );
    }

    #[test]
    fn requests_in_a_session() {
        let r = parse(
            "<body rid='5' sid='abc' xmlns='http://jabber.org/protocol/httpbind'>\
             <message xmlns='jabber:client' to='b@example.org'><body>hi</body></message>\
             <presence xmlns='jabber:client'/></body>",
        )
        .unwrap();
        assert_eq!(
            r.kind,
            Kind::Session {
                sid: "abc".into(),
                op: Op::Normal
            }
        );
        assert_eq!(r.payload.len(), 2);
        assert!(r.payload[0].is("message", ns::CLIENT));
        let restart = parse(
            "<body rid='6' sid='abc' xmpp:restart='true' to='example.org' \
             xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh'/>",
        )
        .unwrap();
        assert_eq!(
            restart.kind,
            Kind::Session {
                sid: "abc".into(),
                op: Op::Restart
            }
        );
        let term = parse("<body rid='7' sid='abc' type='terminate' xmlns='http://jabber.org/protocol/httpbind'><presence xmlns='jabber:client' type='unavailable'/></body>").unwrap();
        assert_eq!(
            term.kind,
            Kind::Session {
                sid: "abc".into(),
                op: Op::Terminate
            }
        );
        assert_eq!(term.payload.len(), 1);
    }

    #[test]
    fn bad_bodies() {
        for bad in [
            "",
            "<body rid='1' to='x' wait='60'/>",
            "<body xmlns='http://jabber.org/protocol/httpbind' to='x' wait='60'/>",
            "<body xmlns='http://jabber.org/protocol/httpbind' rid='x' sid='a'/>",
            "<body xmlns='http://jabber.org/protocol/httpbind' rid='9007199254740992' sid='a'/>",
            "<body xmlns='http://jabber.org/protocol/httpbind' rid='1' wait='60'/>",
            "<body xmlns='http://jabber.org/protocol/httpbind' rid='1' to='x'/>",
            "<body xmlns='http://jabber.org/protocol/httpbind' rid='1' sid='a'>",
            "<!DOCTYPE body><body xmlns='http://jabber.org/protocol/httpbind' rid='1' sid='a'/>",
        ] {
            assert_eq!(parse(bad), Err(Condition::BadRequest), "{bad}");
        }
    }

    #[test]
    fn rid_window() {
        let mut w = Window::new(100);
        assert_eq!(w.check(101), RidCheck::Next);
        assert_eq!(w.check(102), RidCheck::Ahead);
        assert_eq!(w.check(103), RidCheck::OutOfWindow);
        assert_eq!(w.check(100), RidCheck::Stale);
        w.advance();
        w.answered(101, Bytes::from_static(b"<r101/>"));
        assert_eq!(
            w.check(101),
            RidCheck::Repeat(Bytes::from_static(b"<r101/>"))
        );
        assert_eq!(w.check(102), RidCheck::Next);
        w.advance();
        w.advance();
        w.answered(102, Bytes::from_static(b"<r102/>"));
        w.answered(103, Bytes::from_static(b"<r103/>"));
        // Only the last `REQUESTS` answers are kept.
        assert_eq!(w.check(101), RidCheck::OutOfWindow);
        assert_eq!(
            w.check(103),
            RidCheck::Repeat(Bytes::from_static(b"<r103/>"))
        );
        assert_eq!(w.check(1), RidCheck::OutOfWindow);
        assert_eq!(w.check(u64::MAX), RidCheck::OutOfWindow);
    }

    /// Regression: after a restart c2s writes the new stream header and the features in two
    /// writes; a response must not go out with only the (invisible) header in it, or a client
    /// that waits for the features in the restart's response (Strophe.js) hangs.
    #[test]
    fn a_restart_response_waits_for_the_features() {
        use futures_lite::AsyncWriteExt as _;
        smol::block_on(async {
            let (mut duplex, to_server, from_server) = pipe::pipe();
            let sessions = Sessions::default();
            let session = Session::new(
                "sid".into(),
                "test".into(),
                Duration::from_secs(5),
                1,
                to_server,
                from_server,
            );
            duplex
                .write_all(b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='s2'>")
                .await
                .unwrap();
            let s2 = session.clone();
            let waiting = smol::spawn(async move { collect(&Sessions::default(), &s2, 2).await });
            smol::Timer::after(Duration::from_millis(50)).await;
            duplex
                .write_all(b"<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>")
                .await
                .unwrap();
            let content = String::from_utf8(waiting.await).unwrap();
            assert!(content.contains("<stream:features"), "{content:?}");
            // c2s closing ends the session with a terminate body.
            duplex.write_all(b"</stream:stream>").await.unwrap();
            assert!(collect(&sessions, &session, 3).await.is_empty());
            let ended = lock(&session.state).ended.clone().unwrap();
            assert_eq!(&ended[..], &terminate_body(None, b"")[..]);
        });
    }

    #[test]
    fn response_bodies() {
        assert_eq!(
            &terminate_body(Some(Condition::ItemNotFound), b"")[..],
            b"<body xmlns='http://jabber.org/protocol/httpbind' type='terminate' condition='item-not-found'/>"
        );
        let r = response_body(
            &[("sid", "a'b".into())],
            b"<presence xmlns='jabber:client'/>",
        );
        let el = Element::parse(std::str::from_utf8(&r).unwrap()).unwrap();
        assert_eq!(el.attr("sid"), Some("a'b"));
        assert!(el.get_child("presence", ns::CLIENT).is_some());
        assert_eq!(
            closed_condition(b"<stream:error xmlns:stream='x'/>"),
            Some(Condition::RemoteStreamError)
        );
        assert_eq!(closed_condition(b"<presence/>"), None);
    }
}
