//! The negotiation of server-to-server streams (RFC 6120 §5, §6, §13.7;
//! XEP-0178 SASL EXTERNAL; XEP-0220 dialback) as pure state machines.
//!
//! Owns: which phase an incoming or outgoing s2s stream is in, what is
//! acceptable in it, and what to do next. One type per phase; a transition
//! consumes the phase and returns the next one plus a `Vec<Action>` the
//! driver performs in order. [`Incoming`] and [`Outgoing`] wrap the phases so
//! a driver holds one value.
//!
//! Policy: STARTTLS is required in both directions (nothing but `<starttls/>`
//! is accepted or sent before TLS). After TLS, SASL EXTERNAL when the peer's
//! certificate is valid for its domain, else dialback if allowed
//! (`require_valid_certs == false`, or the certificate is valid and the peer
//! just doesn't do EXTERNAL).
//!
//! Facts come in as [`Facts`]: whether TLS is up and a predicate "is the
//! peer's certificate valid for this domain" (the driver builds it from
//! [`super::names::cert_valid_for`] and the chain check). This is a predicate,
//! not one bool, because an incoming peer names its domain(s) only in the
//! stream, and dialback may authenticate several.
//!
//! Must not know: sockets, TLS, DNS, time. The driver owns timeouts (e.g.
//! `auth_timeout`), performs `<db:verify/>` round trips on another stream and
//! reports the answer back ([`Incoming::dialback_verified`]).

use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};

use super::dialback::{hex, DbBody, DbError, DbKind, Dialback, Secret, NS_DIALBACK_FEATURE};
use super::NS_SERVER;
use crate::jid::prepare_domain;
use crate::stanza::error::StreamError;
use crate::stanza::ns;
use crate::xml::{Element, Frame, StreamHeader};

/// What the driver must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write a stream header ([`Header::to_bytes`]).
    SendHeader(Header),
    /// Write an element.
    Send(Element),
    /// Run the TLS handshake now (the client side on outgoing streams, the
    /// server side on incoming ones), then replace the framer: the peer starts
    /// a new stream (RFC 6120 §5.4.3.3).
    StartTls,
    /// Replace the framer: a new stream starts on the same transport (after SASL
    /// success, RFC 6120 §6.4.6).
    RestartStream,
    /// Incoming: ask the authoritative server of `originating` (over an outgoing
    /// stream) whether `key` is valid, then call [`Incoming::dialback_verified`].
    VerifyDialback {
        originating: String,
        receiving: String,
        stream_id: String,
        key: String,
    },
    /// Stanzas from `remote` to `local` may now flow on this stream.
    Authenticated { local: String, remote: String },
    /// Incoming: a stanza from an authenticated pair, for the router.
    Deliver(Element),
    /// Outgoing: the answer to a `<db:verify/>` we sent as receiving server.
    VerifyAnswer {
        from: String,
        to: String,
        id: String,
        valid: bool,
    },
    /// Write `<stream:error/>` if given, then `</stream:stream>`, and close.
    Close(Option<StreamError>),
}

/// The stream header to write. `xmlns='jabber:server'`, the `stream` and `db`
/// prefixes and `version='1.0'` are always included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub from: String,
    pub to: Option<String>,
    pub id: Option<String>,
}

impl Header {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = String::from(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
             xmlns:stream='http://etherx.jabber.org/streams' \
             xmlns:db='jabber:server:dialback' version='1.0'",
        );
        for (k, v) in [
            ("from", Some(&self.from)),
            ("to", self.to.as_ref()),
            ("id", self.id.as_ref()),
        ] {
            if let Some(v) = v {
                s.push_str(&format!(" {k}='{}'", crate::xml::escape_attr_value(v)));
            }
        }
        s.push('>');
        s.into_bytes()
    }
}

/// What the driver knows about the connection right now.
#[derive(Clone, Copy)]
pub struct Facts<'a> {
    pub tls: bool,
    /// Is the peer's certificate (chain already checked) valid for this domain?
    pub peer_cert_valid_for: &'a (dyn Fn(&str) -> bool + Sync),
}

/// Settings shared by both directions.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Our domain.
    pub local: String,
    /// Our other domains peers may open streams to (the MUC service at `conference.`): an
    /// incoming stream to one of them authenticates pairs with that domain as `local`.
    pub hosted: Vec<String>,
    /// The dialback secret (to make keys and answer `<db:verify/>`).
    pub secret: Secret,
    /// Refuse peers whose certificate is not valid for their domain (no
    /// dialback-only federation).
    pub require_valid_certs: bool,
}

// =====================================================================
// Outgoing: we are the initiating (originating) server.
// =====================================================================

/// An outgoing stream in one of its phases.
#[derive(Debug)]
pub enum Outgoing {
    ExpectHeader(OutExpectHeader),
    ExpectFeatures(OutExpectFeatures),
    ExpectProceed(OutExpectProceed),
    ExpectSaslResult(OutExpectSaslResult),
    ExpectDialbackResult(OutExpectDialbackResult),
    Ready(OutReady),
    Closed,
}

#[derive(Debug)]
struct OutCtx {
    policy: Policy,
    remote: String,
    tls: bool,
    /// SASL EXTERNAL succeeded: the restarted stream only needs its features.
    authenticated: bool,
}

/// Waiting for the receiving server's stream header.
#[derive(Debug)]
pub struct OutExpectHeader(OutCtx);
/// Waiting for `<stream:features/>`.
#[derive(Debug)]
pub struct OutExpectFeatures {
    ctx: OutCtx,
    stream_id: String,
    db_declared: bool,
}
/// `<starttls/>` sent.
#[derive(Debug)]
pub struct OutExpectProceed(OutCtx);
/// `<auth mechanism='EXTERNAL'/>` sent.
#[derive(Debug)]
pub struct OutExpectSaslResult {
    ctx: OutCtx,
    stream_id: String,
    dialback_offered: bool,
}
/// `<db:result/>` sent.
#[derive(Debug)]
pub struct OutExpectDialbackResult(OutCtx);
/// Authenticated: the driver may send stanzas from `local` to `remote`.
#[derive(Debug)]
pub struct OutReady(OutCtx);

type OutStep = (Outgoing, Vec<Action>);

impl Outgoing {
    /// Starts a stream from `policy.local` to `remote` (a prepared domain):
    /// the first action sends our header.
    pub fn start(policy: Policy, remote: &str) -> OutStep {
        let ctx = OutCtx {
            policy,
            remote: remote.to_owned(),
            tls: false,
            authenticated: false,
        };
        let header = out_header(&ctx);
        (
            Outgoing::ExpectHeader(OutExpectHeader(ctx)),
            vec![Action::SendHeader(header)],
        )
    }

    /// Handles one frame from the receiving server.
    pub fn handle(self, frame: Frame, facts: Facts<'_>) -> OutStep {
        if frame == Frame::StreamClose {
            return (Outgoing::Closed, vec![Action::Close(None)]);
        }
        match (self, frame) {
            (Outgoing::ExpectHeader(s), Frame::StreamOpen(h)) => s.on_header(&h, facts),
            (Outgoing::ExpectFeatures(s), Frame::Element(e)) => s.on_features(&e, facts),
            (Outgoing::ExpectProceed(s), Frame::Element(e)) => s.on_element(&e),
            (Outgoing::ExpectSaslResult(s), Frame::Element(e)) => s.on_element(&e, facts),
            (Outgoing::ExpectDialbackResult(s), Frame::Element(e)) => s.on_element(&e),
            (Outgoing::Ready(s), Frame::Element(e)) => s.on_element(&e),
            (Outgoing::Closed, _) => (Outgoing::Closed, vec![]),
            _ => close_out(StreamError::NotWellFormed),
        }
    }

    /// True once stanzas may be sent.
    pub fn is_ready(&self) -> bool {
        matches!(self, Outgoing::Ready(_))
    }

    /// A `<db:verify/>` to send on this stream: we are the receiving server of another stream
    /// and this peer is its authoritative server (XEP-0220 §2.3). Possible once our own
    /// `<db:result/>` is sent, before it is answered: two servers that each wait for their
    /// own dialback before verifying the other's would wait for each other forever.
    /// `None` in the phases before that (the driver keeps the request until then).
    pub fn verify_request(
        &self,
        originating_key: &str,
        receiving: &str,
        id: &str,
    ) -> Option<Action> {
        let remote = match self {
            Outgoing::ExpectDialbackResult(OutExpectDialbackResult(ctx))
            | Outgoing::Ready(OutReady(ctx)) => &ctx.remote,
            _ => return None,
        };
        Some(Action::Send(
            Dialback::verify_request(receiving, remote, id, originating_key).to_element(),
        ))
    }

    /// Whether [`Outgoing::verify_request`] gives a request in this phase.
    pub fn can_verify(&self) -> bool {
        matches!(self, Outgoing::ExpectDialbackResult(_) | Outgoing::Ready(_))
    }
}

impl OutExpectHeader {
    fn on_header(self, h: &StreamHeader, facts: Facts<'_>) -> OutStep {
        let mut ctx = self.0;
        ctx.tls = facts.tls;
        if h.default_ns() != NS_SERVER {
            return close_out(StreamError::InvalidNamespace);
        }
        if let Some(from) = h.attr("from") {
            if prepare_domain(from).ok().as_deref() != Some(ctx.remote.as_str()) {
                return close_out(StreamError::InvalidFrom);
            }
        }
        // Without version 1.0 there is no STARTTLS, which we require.
        if !h.attr("version").is_some_and(|v| v.starts_with("1.")) {
            return close_out(StreamError::UnsupportedVersion);
        }
        let Some(id) = h.attr("id").filter(|id| !id.is_empty()) else {
            return close_out(StreamError::InvalidXml);
        };
        let next = OutExpectFeatures {
            stream_id: id.to_owned(),
            db_declared: h.prefix_ns("db") == Some(super::dialback::NS_DIALBACK),
            ctx,
        };
        (Outgoing::ExpectFeatures(next), vec![])
    }
}

impl OutExpectFeatures {
    fn on_features(self, f: &Element, facts: Facts<'_>) -> OutStep {
        if !f.is("features", ns::STREAM) {
            return close_out(StreamError::NotAuthorized);
        }
        let ctx = self.ctx;
        if !ctx.tls {
            if f.has_child("starttls", ns::TLS) {
                let starttls = Element::new("starttls", ns::TLS);
                return (
                    Outgoing::ExpectProceed(OutExpectProceed(ctx)),
                    vec![Action::Send(starttls)],
                );
            }
            // We require TLS; the peer can't do it.
            return close_out(StreamError::PolicyViolation);
        }
        if ctx.authenticated {
            let auth = authenticated(&ctx);
            return (Outgoing::Ready(OutReady(ctx)), vec![auth]);
        }
        let cert_ok = (facts.peer_cert_valid_for)(&ctx.remote);
        let external = f.get_child("mechanisms", ns::SASL).is_some_and(|m| {
            m.children()
                .any(|c| c.name() == "mechanism" && c.text() == "EXTERNAL")
        });
        // XEP-0220 §2.1.1: the stream feature.
        // COMPAT: servers that predate the feature (jabberd 1.x and 2.x, old
        // ejabberd) only declare the `db` prefix in their header; XEP-0220
        // §2.1.1 lets us try dialback then. Test:
        // `outgoing_dialback_without_the_feature_when_db_is_declared`.
        let dialback_offered = f.has_child("dialback", NS_DIALBACK_FEATURE) || self.db_declared;
        if external && cert_ok {
            // XEP-0178 §3: the authzid is our domain. Sending it (not `=`) is
            // what servers that predate the empty-authzid rule accept too.
            let authzid = base64::engine::general_purpose::STANDARD.encode(&ctx.policy.local);
            let auth = Element::new("auth", ns::SASL)
                .with_attr("mechanism", "EXTERNAL")
                .with_text(authzid);
            let next = OutExpectSaslResult {
                ctx,
                stream_id: self.stream_id,
                dialback_offered,
            };
            return (Outgoing::ExpectSaslResult(next), vec![Action::Send(auth)]);
        }
        if dialback_offered && (cert_ok || !ctx.policy.require_valid_certs) {
            return send_db_result(ctx, &self.stream_id);
        }
        close_out(StreamError::PolicyViolation)
    }
}

impl OutExpectProceed {
    fn on_element(self, e: &Element) -> OutStep {
        if e.is("proceed", ns::TLS) {
            let mut ctx = self.0;
            ctx.tls = true;
            let header = out_header(&ctx);
            return (
                Outgoing::ExpectHeader(OutExpectHeader(ctx)),
                vec![Action::StartTls, Action::SendHeader(header)],
            );
        }
        // `<failure/>` (the peer closes) or anything else.
        (Outgoing::Closed, vec![Action::Close(None)])
    }
}

impl OutExpectSaslResult {
    fn on_element(self, e: &Element, facts: Facts<'_>) -> OutStep {
        let mut ctx = self.ctx;
        if e.is("success", ns::SASL) {
            ctx.authenticated = true;
            let header = out_header(&ctx);
            return (
                Outgoing::ExpectHeader(OutExpectHeader(ctx)),
                vec![Action::RestartStream, Action::SendHeader(header)],
            );
        }
        if e.is("failure", ns::SASL) {
            let cert_ok = (facts.peer_cert_valid_for)(&ctx.remote);
            if self.dialback_offered && (cert_ok || !ctx.policy.require_valid_certs) {
                return send_db_result(ctx, &self.stream_id);
            }
            return (Outgoing::Closed, vec![Action::Close(None)]);
        }
        close_out(StreamError::NotAuthorized)
    }
}

impl OutExpectDialbackResult {
    fn on_element(self, e: &Element) -> OutStep {
        let ctx = self.0;
        let Ok(db) = Dialback::parse(e) else {
            return close_out(StreamError::NotAuthorized);
        };
        if db.kind == DbKind::Verify {
            // The answer to a `<db:verify/>` sent while our own dialback is pending.
            return match verify_answer(db) {
                Ok(answer) => (
                    Outgoing::ExpectDialbackResult(OutExpectDialbackResult(ctx)),
                    vec![answer],
                ),
                Err(e) => close_out(e),
            };
        }
        if db.kind != DbKind::Result || db.from != ctx.remote || db.to != ctx.policy.local {
            return close_out(StreamError::InvalidFrom);
        }
        match db.body {
            DbBody::Valid => {
                let auth = authenticated(&ctx);
                (Outgoing::Ready(OutReady(ctx)), vec![auth])
            }
            // Refused or an error: nothing to send; the driver logs and gives up.
            _ => (Outgoing::Closed, vec![Action::Close(None)]),
        }
    }
}

impl OutReady {
    fn on_element(self, e: &Element) -> OutStep {
        // Streams are one-way; only answers to our `<db:verify/>` come back.
        match Dialback::parse(e) {
            Ok(db) if db.kind == DbKind::Verify => match verify_answer(db) {
                Ok(answer) => (Outgoing::Ready(self), vec![answer]),
                Err(e) => close_out(e),
            },
            _ => close_out(StreamError::UnsupportedStanzaType),
        }
    }
}

/// A `<db:verify type='valid|invalid|error'/>` answer as an action, or the stream error to
/// close with.
fn verify_answer(db: Dialback) -> Result<Action, StreamError> {
    let valid = match db.body {
        DbBody::Valid => true,
        DbBody::Invalid | DbBody::Error(_) => false,
        DbBody::Key(_) => return Err(StreamError::UnsupportedStanzaType),
    };
    let Some(id) = db.id else {
        return Err(StreamError::InvalidXml);
    };
    Ok(Action::VerifyAnswer {
        from: db.from,
        to: db.to,
        id,
        valid,
    })
}

fn out_header(ctx: &OutCtx) -> Header {
    Header {
        from: ctx.policy.local.clone(),
        to: Some(ctx.remote.clone()),
        id: None,
    }
}

fn authenticated(ctx: &OutCtx) -> Action {
    Action::Authenticated {
        local: ctx.policy.local.clone(),
        remote: ctx.remote.clone(),
    }
}

fn send_db_result(ctx: OutCtx, stream_id: &str) -> OutStep {
    // XEP-0185: receiving server, originating server, the receiving server's stream id.
    let key = ctx
        .policy
        .secret
        .key(&ctx.remote, &ctx.policy.local, stream_id);
    let el = Dialback::result_request(&ctx.policy.local, &ctx.remote, &key).to_element();
    (
        Outgoing::ExpectDialbackResult(OutExpectDialbackResult(ctx)),
        vec![Action::Send(el)],
    )
}

fn close_out(err: StreamError) -> OutStep {
    (Outgoing::Closed, vec![Action::Close(Some(err))])
}

// =====================================================================
// Incoming: we are the receiving server (and authoritative for db:verify).
// =====================================================================

/// An incoming stream in one of its phases.
#[derive(Debug)]
pub enum Incoming {
    ExpectHeader(InExpectHeader),
    ExpectStartTls(InExpectStartTls),
    ExpectAuth(InExpectAuth),
    Open(InOpen),
    Closed,
}

#[derive(Debug)]
struct InCtx {
    policy: Policy,
    /// (remote, local) pairs that may send stanzas.
    authenticated: Vec<(String, String)>,
    /// Dialback requests sent to the authoritative server: (remote, local).
    pending: Vec<(String, String)>,
}

/// Waiting for the initiating server's stream header.
#[derive(Debug)]
pub struct InExpectHeader(InCtx);
/// Before TLS: only `<starttls/>` is accepted.
#[derive(Debug)]
pub struct InExpectStartTls(InCtx);
/// After TLS, nothing authenticated yet: SASL EXTERNAL, dialback, `<db:verify/>`.
#[derive(Debug)]
pub struct InExpectAuth {
    ctx: InCtx,
    stream_id: String,
    peer: Option<String>,
    external_offered: bool,
}
/// At least one domain pair authenticated: stanzas are accepted.
#[derive(Debug)]
pub struct InOpen {
    ctx: InCtx,
    stream_id: String,
}

type InStep = (Incoming, Vec<Action>);

impl Incoming {
    /// A new incoming connection (before any bytes).
    pub fn new(policy: Policy) -> Incoming {
        Incoming::ExpectHeader(InExpectHeader(InCtx {
            policy,
            authenticated: Vec::new(),
            pending: Vec::new(),
        }))
    }

    /// Handles one frame from the initiating server.
    pub fn handle(self, frame: Frame, facts: Facts<'_>) -> InStep {
        if frame == Frame::StreamClose {
            return (Incoming::Closed, vec![Action::Close(None)]);
        }
        match (self, frame) {
            (Incoming::ExpectHeader(s), Frame::StreamOpen(h)) => s.on_header(&h, facts),
            (Incoming::ExpectStartTls(s), Frame::Element(e)) => s.on_element(&e),
            (Incoming::ExpectAuth(s), Frame::Element(e)) => s.on_element(e, facts),
            (Incoming::Open(s), Frame::Element(e)) => s.on_element(e, facts),
            (Incoming::Closed, _) => (Incoming::Closed, vec![]),
            _ => close_in(StreamError::NotWellFormed),
        }
    }

    /// The authoritative server's answer to an [`Action::VerifyDialback`]
    /// (`valid == false` also for errors and timeouts).
    pub fn dialback_verified(self, originating: &str, receiving: &str, valid: bool) -> InStep {
        match self {
            Incoming::ExpectAuth(s) => {
                let (ctx, stream_id) = (s.ctx, s.stream_id);
                let mut open = InOpen { ctx, stream_id };
                let actions = open.verified(originating, receiving, valid);
                if open.ctx.authenticated.is_empty() {
                    let back = InExpectAuth {
                        ctx: open.ctx,
                        stream_id: open.stream_id,
                        peer: s.peer,
                        external_offered: s.external_offered,
                    };
                    return (Incoming::ExpectAuth(back), actions);
                }
                (Incoming::Open(open), actions)
            }
            Incoming::Open(mut s) => {
                let actions = s.verified(originating, receiving, valid);
                (Incoming::Open(s), actions)
            }
            other => (other, vec![]),
        }
    }

    /// The domain pairs (remote, local) authenticated on this stream.
    pub fn authenticated(&self) -> &[(String, String)] {
        match self {
            Incoming::ExpectHeader(InExpectHeader(ctx))
            | Incoming::ExpectStartTls(InExpectStartTls(ctx))
            | Incoming::ExpectAuth(InExpectAuth { ctx, .. })
            | Incoming::Open(InOpen { ctx, .. }) => &ctx.authenticated,
            Incoming::Closed => &[],
        }
    }
}

impl InExpectHeader {
    fn on_header(self, h: &StreamHeader, facts: Facts<'_>) -> InStep {
        let mut ctx = self.0;
        if h.default_ns() != NS_SERVER {
            return close_in(StreamError::InvalidNamespace);
        }
        let to = h.attr("to").and_then(|t| prepare_domain(t).ok());
        match to.as_deref() {
            Some(t) if t == ctx.policy.local => {}
            Some(t) if ctx.policy.hosted.iter().any(|h| h == t) => ctx.policy.local = t.to_owned(),
            _ => return close_in(StreamError::HostUnknown),
        }
        if !h.attr("version").is_some_and(|v| v.starts_with("1.")) {
            return close_in(StreamError::UnsupportedVersion);
        }
        let peer = match h.attr("from") {
            None => None,
            Some(f) => match prepare_domain(f) {
                Ok(d) => Some(d.into_owned()),
                Err(_) => return close_in(StreamError::InvalidFrom),
            },
        };
        let Some(stream_id) = new_stream_id() else {
            return close_in(StreamError::InternalServerError);
        };
        let header = Action::SendHeader(Header {
            from: ctx.policy.local.clone(),
            to: peer.clone(),
            id: Some(stream_id.clone()),
        });
        let mut features = Element::new("features", ns::STREAM);
        if !facts.tls {
            features.push_child(
                Element::new("starttls", ns::TLS).with_child(Element::new("required", ns::TLS)),
            );
            return (
                Incoming::ExpectStartTls(InExpectStartTls(ctx)),
                vec![header, Action::Send(features)],
            );
        }
        if !ctx.authenticated.is_empty() {
            // After SASL: nothing left to negotiate; dialback stays available for
            // further domains (XEP-0220 §2.5 multiplexing).
            features.push_child(dialback_feature());
            let open = InOpen { ctx, stream_id };
            return (Incoming::Open(open), vec![header, Action::Send(features)]);
        }
        let external_offered = peer
            .as_deref()
            .is_some_and(|p| (facts.peer_cert_valid_for)(p));
        if external_offered {
            features.push_child(
                Element::new("mechanisms", ns::SASL)
                    .with_child(Element::new("mechanism", ns::SASL).with_text("EXTERNAL")),
            );
        }
        features.push_child(dialback_feature());
        let next = InExpectAuth {
            ctx,
            stream_id,
            peer,
            external_offered,
        };
        (
            Incoming::ExpectAuth(next),
            vec![header, Action::Send(features)],
        )
    }
}

impl InExpectStartTls {
    fn on_element(self, e: &Element) -> InStep {
        if e.is("starttls", ns::TLS) {
            return (
                Incoming::ExpectHeader(InExpectHeader(self.0)),
                vec![
                    Action::Send(Element::new("proceed", ns::TLS)),
                    Action::StartTls,
                ],
            );
        }
        // RFC 6120 §5.3.1: TLS is mandatory here; nothing else is negotiated first.
        close_in(StreamError::PolicyViolation)
    }
}

impl InExpectAuth {
    fn on_element(self, e: Element, facts: Facts<'_>) -> InStep {
        if e.is("auth", ns::SASL) {
            return self.on_auth(&e, facts);
        }
        if e.ns() == super::dialback::NS_DIALBACK {
            let mut open = InOpen {
                ctx: self.ctx,
                stream_id: self.stream_id,
            };
            let actions = open.on_dialback(&e, facts);
            let closed = matches!(actions.last(), Some(Action::Close(_)));
            if closed {
                return (Incoming::Closed, actions);
            }
            let back = InExpectAuth {
                ctx: open.ctx,
                stream_id: open.stream_id,
                peer: self.peer,
                external_offered: self.external_offered,
            };
            return (Incoming::ExpectAuth(back), actions);
        }
        // RFC 6120 §4.9.3.12: stanzas before authentication.
        close_in(StreamError::NotAuthorized)
    }

    fn on_auth(self, e: &Element, facts: Facts<'_>) -> InStep {
        if e.attr("mechanism") != Some("EXTERNAL") || !self.external_offered {
            let failure = sasl_failure("invalid-mechanism");
            return (Incoming::ExpectAuth(self), vec![Action::Send(failure)]);
        }
        let text = e.text();
        let text = text.trim();
        let authzid = if text.is_empty() || text == "=" {
            Some(String::new())
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
        };
        let Some(authzid) = authzid else {
            let failure = sasl_failure("incorrect-encoding");
            return (Incoming::ExpectAuth(self), vec![Action::Send(failure)]);
        };
        // XEP-0178 §4: an empty authzid means the stream's `from`.
        let claimed = if authzid.is_empty() {
            self.peer.clone()
        } else {
            prepare_domain(&authzid).ok().map(|d| d.into_owned())
        };
        let ok = claimed
            .as_deref()
            .filter(|c| self.peer.as_deref() == Some(*c) && (facts.peer_cert_valid_for)(c));
        let Some(remote) = ok.map(str::to_owned) else {
            let failure = sasl_failure("not-authorized");
            return (Incoming::ExpectAuth(self), vec![Action::Send(failure)]);
        };
        let mut ctx = self.ctx;
        let local = ctx.policy.local.clone();
        ctx.authenticated.push((remote.clone(), local.clone()));
        (
            Incoming::ExpectHeader(InExpectHeader(ctx)),
            vec![
                Action::Send(Element::new("success", ns::SASL)),
                Action::RestartStream,
                Action::Authenticated { local, remote },
            ],
        )
    }
}

impl InOpen {
    fn on_element(mut self, e: Element, facts: Facts<'_>) -> InStep {
        if e.ns() == super::dialback::NS_DIALBACK {
            let actions = self.on_dialback(&e, facts);
            if matches!(actions.last(), Some(Action::Close(_))) {
                return (Incoming::Closed, actions);
            }
            return (Incoming::Open(self), actions);
        }
        if e.ns() != NS_SERVER || !matches!(e.name(), "message" | "presence" | "iq") {
            return close_in(StreamError::UnsupportedStanzaType);
        }
        let from = e.attr("from").and_then(domain_of);
        let to = e.attr("to").and_then(domain_of);
        let (Some(from), Some(to)) = (from, to) else {
            // RFC 6120 §8.1.1.2/§8.1.2.2: both are required on s2s.
            return close_in(StreamError::InvalidFrom);
        };
        if !self.ctx.authenticated.iter().any(|(r, _)| *r == from) {
            return close_in(StreamError::InvalidFrom);
        }
        if !self
            .ctx
            .authenticated
            .iter()
            .any(|(r, l)| *r == from && *l == to)
        {
            return close_in(StreamError::HostUnknown);
        }
        (Incoming::Open(self), vec![Action::Deliver(e)])
    }

    /// `<db:result/>` (a claim to verify) or `<db:verify/>` (we are authoritative).
    fn on_dialback(&mut self, e: &Element, facts: Facts<'_>) -> Vec<Action> {
        let db = match Dialback::parse(e) {
            Ok(db) => db,
            Err(super::dialback::DbParseError::BadAddress) => {
                return vec![Action::Close(Some(StreamError::InvalidFrom))]
            }
            Err(_) => return vec![Action::Close(Some(StreamError::InvalidXml))],
        };
        let DbBody::Key(key) = &db.body else {
            // Answers never come in on an incoming stream.
            return vec![Action::Close(Some(StreamError::UnsupportedStanzaType))];
        };
        let policy = &self.ctx.policy;
        match db.kind {
            DbKind::Verify => {
                // We are the authoritative server (XEP-0220 §2.3): `from` is the
                // receiving server, `to` us, `id` the receiving server's stream id.
                let body = if db.to != policy.local {
                    DbBody::Error(DbError::ItemNotFound)
                } else if policy.secret.verify(
                    &db.from,
                    &db.to,
                    db.id.as_deref().unwrap_or_default(),
                    key,
                ) {
                    DbBody::Valid
                } else {
                    DbBody::Invalid
                };
                vec![Action::Send(db.answer(body).to_element())]
            }
            DbKind::Result => {
                if db.to != policy.local {
                    let ans = db.answer(DbBody::Error(DbError::ItemNotFound));
                    return vec![Action::Send(ans.to_element())];
                }
                if policy.require_valid_certs && !(facts.peer_cert_valid_for)(&db.from) {
                    let ans = db.answer(DbBody::Error(DbError::PolicyViolation));
                    return vec![Action::Send(ans.to_element())];
                }
                let pair = (db.from.clone(), db.to.clone());
                if self.ctx.authenticated.contains(&pair) {
                    return vec![Action::Send(db.answer(DbBody::Valid).to_element())];
                }
                if !self.ctx.pending.contains(&pair) {
                    self.ctx.pending.push(pair);
                }
                vec![Action::VerifyDialback {
                    originating: db.from,
                    receiving: db.to,
                    stream_id: self.stream_id.clone(),
                    key: key.clone(),
                }]
            }
        }
    }

    fn verified(&mut self, originating: &str, receiving: &str, valid: bool) -> Vec<Action> {
        let pair = (originating.to_owned(), receiving.to_owned());
        let Some(i) = self.ctx.pending.iter().position(|p| *p == pair) else {
            return vec![];
        };
        self.ctx.pending.swap_remove(i);
        let req = Dialback::result_request(originating, receiving, "");
        if !valid {
            // XEP-0220 §2.1.3: say so; the stream stays for other domains and
            // the driver's auth timeout ends it if nothing else authenticates.
            return vec![Action::Send(req.answer(DbBody::Invalid).to_element())];
        }
        self.ctx.authenticated.push(pair);
        vec![
            Action::Send(req.answer(DbBody::Valid).to_element()),
            Action::Authenticated {
                local: receiving.to_owned(),
                remote: originating.to_owned(),
            },
        ]
    }
}

fn dialback_feature() -> Element {
    // XEP-0220 §2.4.1: `<errors/>` says we understand dialback errors.
    Element::new("dialback", NS_DIALBACK_FEATURE)
        .with_child(Element::new("errors", NS_DIALBACK_FEATURE))
}

fn sasl_failure(cond: &str) -> Element {
    Element::new("failure", ns::SASL).with_child(Element::new(cond, ns::SASL))
}

fn close_in(err: StreamError) -> InStep {
    (Incoming::Closed, vec![Action::Close(Some(err))])
}

/// The prepared domain of a JID string (`None` if not a JID).
fn domain_of(jid: &str) -> Option<String> {
    crate::jid::Jid::parse(jid)
        .ok()
        .map(|j| j.domain().to_owned())
}

/// 16 random bytes as hex; the dialback key binds to it, so it must not be
/// guessable (XEP-0185 §4).
/// `None` if the system RNG fails (then the stream ends with
/// `internal-server-error`; a guessable id would weaken dialback).
fn new_stream_id() -> Option<String> {
    let mut b = [0u8; 16];
    SystemRandom::new().fill(&mut b).ok()?;
    Some(hex(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{Framer, Limits};

    const A: &str = "a.example";
    const B: &str = "b.example";

    fn policy(require_valid_certs: bool) -> Policy {
        Policy {
            hosted: Vec::new(),
            local: A.into(),
            secret: Secret::from_hex(&"42".repeat(32)).unwrap(),
            require_valid_certs,
        }
    }

    /// The other server's side of the wire: a framer that yields what it "sends".
    struct Peer(Framer);

    impl Peer {
        fn new() -> Peer {
            Peer(Framer::new(Limits::default()))
        }
        /// A new stream (after TLS or SASL the framer is replaced).
        fn header(&mut self, attrs: &str) -> Frame {
            self.0 = Framer::new(Limits::default());
            self.el(&format!(
                "<stream:stream xmlns='jabber:server' \
                 xmlns:stream='http://etherx.jabber.org/streams' \
                 xmlns:db='jabber:server:dialback' {attrs}>"
            ))
        }
        fn el(&mut self, s: &str) -> Frame {
            self.0.push(s.as_bytes()).unwrap();
            self.0.next_frame().unwrap().expect("a complete frame")
        }
    }

    fn facts(tls: bool, valid: &(dyn Fn(&str) -> bool + Sync)) -> Facts<'_> {
        Facts {
            tls,
            peer_cert_valid_for: valid,
        }
    }

    fn show(actions: &[Action]) -> Vec<String> {
        let xml = |e: &Element| String::from_utf8(e.to_bytes_in(NS_SERVER)).unwrap();
        actions
            .iter()
            .map(|a| match a {
                Action::SendHeader(h) => format!(
                    "header from={} to={} id={}",
                    h.from,
                    h.to.as_deref().unwrap_or("-"),
                    if h.id.is_some() { "*" } else { "-" }
                ),
                Action::Send(e) => format!("send {}", xml(e)),
                Action::StartTls => "starttls".into(),
                Action::RestartStream => "restart".into(),
                Action::VerifyDialback {
                    originating,
                    receiving,
                    key,
                    ..
                } => format!("verify {originating}->{receiving} key={key}"),
                Action::Authenticated { local, remote } => {
                    format!("authenticated {remote}->{local}")
                }
                Action::Deliver(e) => format!("deliver {}", xml(e)),
                Action::VerifyAnswer {
                    from, id, valid, ..
                } => {
                    format!("verify-answer {from} {id} {valid}")
                }
                Action::Close(e) => format!("close {}", e.map_or("-", |e| e.as_str())),
            })
            .collect()
    }

    const TLS_FEATURES: &str =
        "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>\
                                <required/></starttls></stream:features>";
    const AUTH_FEATURES: &str = "<stream:features>\
        <mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>EXTERNAL</mechanism></mechanisms>\
        <dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback></stream:features>";
    const DB_FEATURES: &str = "<stream:features>\
        <dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback></stream:features>";

    /// Drives an outgoing stream through a transcript: (tls, frame, expected actions).
    fn out_run(
        mut s: Outgoing,
        valid: &(dyn Fn(&str) -> bool + Sync),
        steps: Vec<(bool, Frame, Vec<&str>)>,
    ) -> Outgoing {
        for (i, (tls, frame, want)) in steps.into_iter().enumerate() {
            let (next, actions) = s.handle(frame, facts(tls, valid));
            assert_eq!(show(&actions), want, "step {i}");
            s = next;
        }
        s
    }

    /// Up to the post-TLS header.
    fn out_to_tls(require: bool, valid: &(dyn Fn(&str) -> bool + Sync)) -> (Outgoing, Peer) {
        let (s, actions) = Outgoing::start(policy(require), B);
        assert_eq!(show(&actions), ["header from=a.example to=b.example id=-"]);
        let mut p = Peer::new();
        let s = out_run(
            s,
            valid,
            vec![
                (
                    false,
                    p.header("from='b.example' to='a.example' id='s1' version='1.0'"),
                    vec![],
                ),
                (
                    false,
                    p.el(TLS_FEATURES),
                    vec!["send <starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"],
                ),
                (
                    false,
                    p.el("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
                    vec!["starttls", "header from=a.example to=b.example id=-"],
                ),
                (
                    true,
                    p.header("from='b.example' to='a.example' id='s2' version='1.0'"),
                    vec![],
                ),
            ],
        );
        (s, p)
    }

    #[test]
    fn outgoing_sasl_external() {
        let valid = |d: &str| d == B;
        let (s, mut p) = out_to_tls(true, &valid);
        let s = out_run(
            s,
            &valid,
            vec![
                (
                    true,
                    p.el(AUTH_FEATURES),
                    // base64("a.example")
                    vec!["send <auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>YS5leGFtcGxl</auth>"],
                ),
                (
                    true,
                    p.el("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"),
                    vec!["restart", "header from=a.example to=b.example id=-"],
                ),
                (
                    true,
                    p.header("from='b.example' to='a.example' id='s3' version='1.0'"),
                    vec![],
                ),
                (
                    true,
                    p.el("<stream:features/>"),
                    vec!["authenticated b.example->a.example"],
                ),
            ],
        );
        assert!(s.is_ready());
    }

    #[test]
    fn outgoing_dialback_when_cert_not_valid() {
        let invalid = |_: &str| false;
        let (s, mut p) = out_to_tls(false, &invalid);
        let key = policy(false).secret.key(B, A, "s2");
        let s = out_run(
            s,
            &invalid,
            vec![
                (
                    true,
                    p.el(AUTH_FEATURES),
                    vec![&*format!(
                        "send <result xmlns='jabber:server:dialback' from='a.example' to='b.example'>{key}</result>"
                    )],
                ),
                (
                    true,
                    p.el("<db:result from='b.example' to='a.example' type='valid'/>"),
                    vec!["authenticated b.example->a.example"],
                ),
            ],
        );
        let Outgoing::Ready(ready) = s else {
            panic!("not ready")
        };
        // A verify answer arriving on the ready stream goes to the driver.
        let (s, actions) = Outgoing::Ready(ready).handle(
            p.el("<db:verify from='b.example' to='a.example' id='x1' type='invalid'/>"),
            facts(true, &invalid),
        );
        assert_eq!(show(&actions), ["verify-answer b.example x1 false"]);
        assert!(s.is_ready());
    }

    /// Two servers whose certificates don't verify, each waiting for its own dialback: each
    /// must be able to verify the other's key on its pending stream, or neither finishes.
    #[test]
    fn outgoing_verifies_while_its_own_dialback_is_pending() {
        let invalid = |_: &str| false;
        let (s, mut p) = out_to_tls(false, &invalid);
        assert!(
            s.verify_request("k", A, "id0").is_none(),
            "before db:result"
        );
        let (s, _) = s.handle(p.el(DB_FEATURES), facts(true, &invalid));
        let Some(req) = s.verify_request("k1", A, "in-7") else {
            panic!("no verify request while dialback is pending")
        };
        assert_eq!(
            show(&[req]),
            ["send <verify xmlns='jabber:server:dialback' from='a.example' to='b.example' id='in-7'>k1</verify>"]
        );
        let s = out_run(
            s,
            &invalid,
            vec![
                (
                    true,
                    p.el("<db:verify from='b.example' to='a.example' id='in-7' type='valid'/>"),
                    vec!["verify-answer b.example in-7 true"],
                ),
                (
                    true,
                    p.el("<db:result from='b.example' to='a.example' type='valid'/>"),
                    vec!["authenticated b.example->a.example"],
                ),
            ],
        );
        assert!(s.is_ready());
        assert!(s.verify_request("k2", A, "in-8").is_some());
    }

    #[test]
    fn outgoing_dialback_without_the_feature_when_db_is_declared() {
        let invalid = |_: &str| false;
        let (s, mut p) = out_to_tls(false, &invalid);
        let (s, actions) = s.handle(p.el("<stream:features/>"), facts(true, &invalid));
        assert!(show(&actions)[0].starts_with("send <result xmlns='jabber:server:dialback'"));
        assert!(matches!(s, Outgoing::ExpectDialbackResult(_)));

        // Neither the feature nor the prefix: nothing to authenticate with.
        let mut p = Peer::new();
        let (s, _) = Outgoing::start(policy(false), B);
        let (s, _) = s.handle(
            p.el(
                "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' \
                 from='b.example' id='s9' version='1.0'>",
            ),
            facts(true, &invalid),
        );
        let (s, actions) = s.handle(p.el("<stream:features/>"), facts(true, &invalid));
        assert_eq!(show(&actions), ["close policy-violation"]);
        assert!(matches!(s, Outgoing::Closed));
    }

    #[test]
    fn outgoing_sasl_failure_falls_back_to_dialback() {
        let valid = |_: &str| true;
        let (s, mut p) = out_to_tls(true, &valid);
        let (s, _) = s.handle(p.el(AUTH_FEATURES), facts(true, &valid));
        let (s, actions) = s.handle(
            p.el("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>"),
            facts(true, &valid),
        );
        assert!(show(&actions)[0].starts_with("send <result xmlns='jabber:server:dialback'"));
        assert!(matches!(s, Outgoing::ExpectDialbackResult(_)));
    }

    #[test]
    fn outgoing_refusals() {
        let valid = |_: &str| true;
        let invalid = |_: &str| false;
        let header = |attrs: &str| Peer::new().header(attrs);
        let fresh = || Outgoing::start(policy(true), B).0;
        for (frame, want) in [
            (
                Peer::new().el("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='1' version='1.0'>"),
                "close invalid-namespace",
            ),
            (
                header("from='evil.example' id='1' version='1.0'"),
                "close invalid-from",
            ),
            (header("from='b.example' id='1'"), "close unsupported-version"),
            (header("from='b.example' version='1.0'"), "close invalid-xml"),
        ] {
            let (s, actions) = fresh().handle(frame, facts(false, &valid));
            assert_eq!(show(&actions), [want]);
            assert!(matches!(s, Outgoing::Closed));
        }

        // No STARTTLS offered: we don't federate in plaintext.
        let mut p = Peer::new();
        let s = out_run(
            fresh(),
            &valid,
            vec![
                (
                    false,
                    p.header("from='b.example' id='1' version='1.0'"),
                    vec![],
                ),
                (false, p.el(DB_FEATURES), vec!["close policy-violation"]),
            ],
        );
        assert!(matches!(s, Outgoing::Closed));

        // Certificates required, peer's is not valid: no dialback either.
        let (s, mut p) = out_to_tls(true, &invalid);
        let (s, actions) = s.handle(p.el(AUTH_FEATURES), facts(true, &invalid));
        assert_eq!(show(&actions), ["close policy-violation"]);
        assert!(matches!(s, Outgoing::Closed));

        // Dialback refused.
        let (s, mut p) = out_to_tls(false, &invalid);
        let (s, _) = s.handle(p.el(DB_FEATURES), facts(true, &invalid));
        let (s, actions) = s.handle(
            p.el("<db:result from='b.example' to='a.example' type='invalid'/>"),
            facts(true, &invalid),
        );
        assert_eq!(show(&actions), ["close -"]);
        assert!(matches!(s, Outgoing::Closed));

        // A dialback answer for another pair.
        let (s, mut p) = out_to_tls(false, &invalid);
        let (s, _) = s.handle(p.el(DB_FEATURES), facts(true, &invalid));
        let (_, actions) = s.handle(
            p.el("<db:result from='c.example' to='a.example' type='valid'/>"),
            facts(true, &invalid),
        );
        assert_eq!(show(&actions), ["close invalid-from"]);

        // TLS refused.
        let mut p = Peer::new();
        let s = out_run(
            fresh(),
            &valid,
            vec![
                (
                    false,
                    p.header("from='b.example' id='1' version='1.0'"),
                    vec![],
                ),
                (
                    false,
                    p.el(TLS_FEATURES),
                    vec!["send <starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"],
                ),
                (
                    false,
                    p.el("<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
                    vec!["close -"],
                ),
            ],
        );
        assert!(matches!(s, Outgoing::Closed));
    }

    // ----- incoming -----

    fn in_run(
        mut s: Incoming,
        valid: &(dyn Fn(&str) -> bool + Sync),
        steps: Vec<(bool, Frame, Vec<&str>)>,
    ) -> Incoming {
        for (i, (tls, frame, want)) in steps.into_iter().enumerate() {
            let (next, actions) = s.handle(frame, facts(tls, valid));
            assert_eq!(show(&actions), want, "step {i}");
            s = next;
        }
        s
    }

    const HDR: &str = "from='b.example' to='a.example' version='1.0'";
    const IN_TLS_FEATURES: &str = "send <features xmlns='http://etherx.jabber.org/streams'>\
        <starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></features>";
    const IN_AUTH_FEATURES: &str = "send <features xmlns='http://etherx.jabber.org/streams'>\
        <mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>EXTERNAL</mechanism></mechanisms>\
        <dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback></features>";
    const IN_DB_FEATURES: &str = "send <features xmlns='http://etherx.jabber.org/streams'>\
        <dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback></features>";
    const MSG: &str = "<message from='alice@b.example/x' to='bob@a.example' type='chat'><body>hi</body></message>";

    fn in_to_tls(require: bool, valid: &(dyn Fn(&str) -> bool + Sync)) -> (Incoming, Peer) {
        let mut p = Peer::new();
        let s = in_run(
            Incoming::new(policy(require)),
            valid,
            vec![
                (
                    false,
                    p.header(HDR),
                    vec!["header from=a.example to=b.example id=*", IN_TLS_FEATURES],
                ),
                (
                    false,
                    p.el("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
                    vec![
                        "send <proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
                        "starttls",
                    ],
                ),
            ],
        );
        (s, p)
    }

    #[test]
    fn incoming_sasl_external() {
        let valid = |d: &str| d == B;
        let (s, mut p) = in_to_tls(true, &valid);
        let s = in_run(
            s,
            &valid,
            vec![
                (
                    true,
                    p.header(HDR),
                    vec!["header from=a.example to=b.example id=*", IN_AUTH_FEATURES],
                ),
                (
                    true,
                    p.el("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>"),
                    vec![
                        "send <success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
                        "restart",
                        "authenticated b.example->a.example",
                    ],
                ),
                (
                    true,
                    p.header(HDR),
                    vec!["header from=a.example to=b.example id=*", IN_DB_FEATURES],
                ),
                (
                    true,
                    p.el(MSG),
                    vec![&*format!("deliver {MSG}")],
                ),
                (
                    true,
                    p.el("<presence from='mallory@c.example' to='bob@a.example'/>"),
                    vec!["close invalid-from"],
                ),
            ],
        );
        assert!(matches!(s, Incoming::Closed));
    }

    #[test]
    fn incoming_sasl_external_with_authzid() {
        let valid = |d: &str| d == B;
        let (s, mut p) = in_to_tls(true, &valid);
        let (s, _) = s.handle(p.header(HDR), facts(true, &valid));
        // base64("b.example")
        let (s, actions) = s.handle(
            p.el("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>Yi5leGFtcGxl</auth>"),
            facts(true, &valid),
        );
        assert_eq!(show(&actions)[2], "authenticated b.example->a.example");
        assert_eq!(s.authenticated(), [(B.to_owned(), A.to_owned())]);
    }

    #[test]
    fn incoming_dialback() {
        let invalid = |_: &str| false;
        let (s, mut p) = in_to_tls(false, &invalid);
        let s = in_run(
            s,
            &invalid,
            vec![
                (
                    true,
                    p.header(HDR),
                    vec!["header from=a.example to=b.example id=*", IN_DB_FEATURES],
                ),
                (
                    true,
                    p.el("<db:result from='b.example' to='a.example'>k1</db:result>"),
                    vec!["verify b.example->a.example key=k1"],
                ),
            ],
        );
        let (s, actions) = s.dialback_verified(B, A, true);
        assert_eq!(
            show(&actions),
            [
                "send <result xmlns='jabber:server:dialback' from='a.example' to='b.example' type='valid'/>",
                "authenticated b.example->a.example"
            ]
        );
        assert!(matches!(s, Incoming::Open(_)));
        let s = in_run(
            s,
            &invalid,
            vec![
                (true, p.el(MSG), vec![&*format!("deliver {MSG}")]),
                // Another domain on the same stream (multiplexing), refused.
                (
                    true,
                    p.el("<db:result from='c.example' to='a.example'>k2</db:result>"),
                    vec!["verify c.example->a.example key=k2"],
                ),
            ],
        );
        let (s, actions) = s.dialback_verified("c.example", A, false);
        assert_eq!(
            show(&actions),
            ["send <result xmlns='jabber:server:dialback' from='a.example' to='c.example' type='invalid'/>"]
        );
        // An answer nobody asked for changes nothing.
        let (s, actions) = s.dialback_verified("d.example", A, true);
        assert!(actions.is_empty());
        let (_, actions) = s.handle(
            p.el("<message from='x@c.example' to='bob@a.example'/>"),
            facts(true, &invalid),
        );
        assert_eq!(show(&actions), ["close invalid-from"]);
    }

    #[test]
    fn incoming_dialback_verify_id_is_our_stream_id() {
        let invalid = |_: &str| false;
        let (s, mut p) = in_to_tls(false, &invalid);
        let (s, actions) = s.handle(p.header(HDR), facts(true, &invalid));
        let Action::SendHeader(Header { id: Some(id), .. }) = &actions[0] else {
            panic!("no header")
        };
        assert_eq!(id.len(), 32);
        let (_, actions) = s.handle(
            p.el("<db:result from='b.example' to='a.example'>k1</db:result>"),
            facts(true, &invalid),
        );
        let Action::VerifyDialback { stream_id, .. } = &actions[0] else {
            panic!("no verify")
        };
        assert_eq!(stream_id, id);
    }

    #[test]
    fn incoming_answers_db_verify_as_authoritative_server() {
        let invalid = |_: &str| false;
        let (s, mut p) = in_to_tls(false, &invalid);
        let (s, _) = s.handle(p.header(HDR), facts(true, &invalid));
        // b.example got key k from us (a.example) on its stream with id 'sid'.
        let k = policy(false).secret.key(B, A, "sid");
        let (s, actions) = s.handle(
            p.el(&format!(
                "<db:verify from='b.example' to='a.example' id='sid'>{k}</db:verify>"
            )),
            facts(true, &invalid),
        );
        assert_eq!(
            show(&actions),
            ["send <verify xmlns='jabber:server:dialback' from='a.example' to='b.example' id='sid' type='valid'/>"]
        );
        let (s, actions) = s.handle(
            p.el(&format!(
                "<db:verify from='b.example' to='a.example' id='other'>{k}</db:verify>"
            )),
            facts(true, &invalid),
        );
        assert_eq!(
            show(&actions),
            ["send <verify xmlns='jabber:server:dialback' from='a.example' to='b.example' id='other' type='invalid'/>"]
        );
        let (_, actions) = s.handle(
            p.el(&format!(
                "<db:verify from='b.example' to='z.example' id='sid'>{k}</db:verify>"
            )),
            facts(true, &invalid),
        );
        assert!(show(&actions)[0].contains("type='error'"));
        assert!(show(&actions)[0].contains("<item-not-found"));
    }

    /// A stream to one of our other domains (the MUC service) authenticates pairs with that
    /// domain, and nothing for the main domain.
    #[test]
    fn incoming_to_a_hosted_domain() {
        let valid = |d: &str| d == B;
        let mut policy = policy(true);
        policy.hosted = vec!["conference.a.example".into()];
        let mut p = Peer::new();
        let (s, actions) = Incoming::new(policy.clone()).handle(
            p.header("from='b.example' to='conference.a.example' version='1.0'"),
            facts(true, &valid),
        );
        assert_eq!(
            show(&actions)[0],
            "header from=conference.a.example to=b.example id=*"
        );
        let (s, actions) = s.handle(
            p.el("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>"),
            facts(true, &valid),
        );
        assert_eq!(
            show(&actions)[2],
            "authenticated b.example->conference.a.example"
        );
        assert_eq!(
            s.authenticated(),
            [(B.to_owned(), "conference.a.example".to_owned())]
        );
        // Not hosted: refused as before.
        let (s, actions) = Incoming::new(policy).handle(
            Peer::new().header("from='b.example' to='upload.a.example' version='1.0'"),
            facts(true, &valid),
        );
        assert_eq!(show(&actions), ["close host-unknown"]);
        assert!(matches!(s, Incoming::Closed));
    }

    #[test]
    fn incoming_refusals() {
        let valid = |_: &str| true;
        let invalid = |_: &str| false;
        let hdr = |attrs: &str| Peer::new().header(attrs);
        for (frame, want) in [
            (
                Peer::new().el("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='a.example' version='1.0'>"),
                "close invalid-namespace",
            ),
            (hdr("from='b.example' to='z.example' version='1.0'"), "close host-unknown"),
            (hdr("from='b.example' version='1.0'"), "close host-unknown"),
            (hdr("from='b.example' to='a.example'"), "close unsupported-version"),
            (hdr("from='b@@' to='a.example' version='1.0'"), "close invalid-from"),
        ] {
            let (s, actions) = Incoming::new(policy(false)).handle(frame, facts(false, &valid));
            assert_eq!(show(&actions), [want]);
            assert!(matches!(s, Incoming::Closed));
        }

        // Before TLS only <starttls/>.
        for el in [
            "<db:result from='b.example' to='a.example'>k</db:result>",
            MSG,
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>",
        ] {
            let mut p = Peer::new();
            let s = in_run(
                Incoming::new(policy(false)),
                &valid,
                vec![
                    (
                        false,
                        p.header(HDR),
                        vec!["header from=a.example to=b.example id=*", IN_TLS_FEATURES],
                    ),
                    (false, p.el(el), vec!["close policy-violation"]),
                ],
            );
            assert!(matches!(s, Incoming::Closed));
        }

        // After TLS, unauthenticated.
        let after_tls = |require: bool, v: &(dyn Fn(&str) -> bool + Sync)| {
            let (s, mut p) = in_to_tls(require, v);
            let (s, _) = s.handle(p.header(HDR), facts(true, v));
            (s, p)
        };
        let (s, mut p) = after_tls(false, &invalid);
        let (s, actions) = s.handle(p.el(MSG), facts(true, &invalid));
        assert_eq!(show(&actions), ["close not-authorized"]);
        assert!(matches!(s, Incoming::Closed));

        // EXTERNAL not offered (cert not valid for b.example).
        let (s, mut p) = after_tls(false, &invalid);
        let (s, actions) = s.handle(
            p.el("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>"),
            facts(true, &invalid),
        );
        assert_eq!(
            show(&actions),
            ["send <failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><invalid-mechanism/></failure>"]
        );
        assert!(matches!(s, Incoming::ExpectAuth(_)));

        // EXTERNAL with an authzid the stream's `from` doesn't match.
        let (s, mut p) = after_tls(true, &valid);
        let (s, actions) = s.handle(
            // base64("c.example")
            p.el("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>Yy5leGFtcGxl</auth>"),
            facts(true, &valid),
        );
        assert_eq!(
            show(&actions),
            ["send <failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>"]
        );
        let (_, actions) = s.handle(
            p.el("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>!!</auth>"),
            facts(true, &valid),
        );
        assert_eq!(
            show(&actions),
            ["send <failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><incorrect-encoding/></failure>"]
        );

        // Dialback for a domain we don't host.
        let (s, mut p) = after_tls(false, &invalid);
        let (s, actions) = s.handle(
            p.el("<db:result from='b.example' to='z.example'>k</db:result>"),
            facts(true, &invalid),
        );
        assert_eq!(
            show(&actions),
            ["send <result xmlns='jabber:server:dialback' from='z.example' to='b.example' type='error'>\
              <error xmlns='jabber:server' type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></result>"]
        );
        assert!(matches!(s, Incoming::ExpectAuth(_)));

        // Certificates required: dialback from a peer without a valid one is refused.
        let (s, mut p) = after_tls(true, &invalid);
        let (_, actions) = s.handle(
            p.el("<db:result from='b.example' to='a.example'>k</db:result>"),
            facts(true, &invalid),
        );
        assert!(show(&actions)[0].contains("<policy-violation"));

        // Dialback verified false: nothing authenticated, stanzas still refused.
        let (s, mut p) = after_tls(false, &invalid);
        let (s, _) = s.handle(
            p.el("<db:result from='b.example' to='a.example'>k</db:result>"),
            facts(true, &invalid),
        );
        let (s, actions) = s.dialback_verified(B, A, false);
        assert!(show(&actions)[0].contains("type='invalid'"));
        let (_, actions) = s.handle(p.el(MSG), facts(true, &invalid));
        assert_eq!(show(&actions), ["close not-authorized"]);

        // Authenticated, but a stanza to a domain the pair doesn't cover.
        let (s, mut p) = after_tls(false, &invalid);
        let (s, _) = s.handle(
            p.el("<db:result from='b.example' to='a.example'>k</db:result>"),
            facts(true, &invalid),
        );
        let (s, _) = s.dialback_verified(B, A, true);
        let (s, actions) = s.handle(
            p.el("<message from='x@b.example' to='y@z.example'/>"),
            facts(true, &invalid),
        );
        assert_eq!(show(&actions), ["close host-unknown"]);
        assert!(matches!(s, Incoming::Closed));

        // Stream close at any point.
        let (s, _) = after_tls(false, &invalid);
        let (s, actions) = s.handle(Frame::StreamClose, facts(true, &invalid));
        assert_eq!(show(&actions), ["close -"]);
        assert!(matches!(s, Incoming::Closed));
    }

    #[test]
    fn header_bytes_escape() {
        let h = Header {
            from: A.into(),
            to: Some(B.into()),
            id: Some("x'<".into()),
        };
        let s = String::from_utf8(h.to_bytes()).unwrap();
        assert!(s.ends_with("from='a.example' to='b.example' id='x&apos;&lt;'>"));
        // What we write, our own framer reads.
        let mut f = Framer::new(Limits::default());
        f.push(&h.to_bytes()).unwrap();
        let Some(Frame::StreamOpen(parsed)) = f.next_frame().unwrap() else {
            panic!("no header")
        };
        assert_eq!(parsed.default_ns(), NS_SERVER);
        assert_eq!(parsed.attr("id"), Some("x'<"));
        assert_eq!(
            parsed.prefix_ns("db"),
            Some(crate::s2s::dialback::NS_DIALBACK)
        );
    }
}
