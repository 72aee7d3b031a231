//! XEP-0220 Server Dialback, with keys generated as XEP-0185 recommends.
//!
//! Owns: the per-server dialback [`Secret`] (generated, hex-encoded for the
//! data directory), key generation and constant-time verification, and the
//! `<db:result/>` / `<db:verify/>` elements as a typed [`Dialback`] value
//! (parse and build).
//!
//! Must not know: sockets, DNS, streams or which connection a verify goes
//! out on. `stream.rs` decides when to send or check a key; the driver loads
//! the secret from the data dir and performs the authoritative-server round
//! trip.

use std::fmt;

use ring::{digest, hmac, rand};

use crate::jid::prepare_domain;
use crate::stanza::ns;
use crate::xml::Element;

/// The dialback namespace (XEP-0220 §2.1); the framer resolves the `db:` prefix to it.
pub const NS_DIALBACK: &str = "jabber:server:dialback";
/// The stream feature announcing dialback support (XEP-0220 §2.1.1).
pub const NS_DIALBACK_FEATURE: &str = "urn:xmpp:features:dialback";
/// Longest key accepted from a peer. XEP-0185 keys are 64 hex digits; older
/// algorithms produce shorter ones. Anything longer is a malformed element.
pub const MAX_KEY_LEN: usize = 1024;

/// The dialback key of XEP-0185 §2:
/// `hex(HMAC-SHA256(hex(SHA256(secret)), receiving + " " + originating + " " + stream_id))`.
///
/// Note the HMAC key is the *hex string* of the secret's SHA-256 (XEP-0185 §2:
/// "the output of the SHA256 hashing algorithm MUST be provided in the
/// hexadecimal representation"), which is what the §3 example needs.
pub fn key(secret: &[u8], receiving: &str, originating: &str, stream_id: &str) -> String {
    let secret_hash = hex(digest::digest(&digest::SHA256, secret).as_ref());
    let k = hmac::Key::new(hmac::HMAC_SHA256, secret_hash.as_bytes());
    let mut ctx = hmac::Context::with_key(&k);
    ctx.update(receiving.as_bytes());
    ctx.update(b" ");
    ctx.update(originating.as_bytes());
    ctx.update(b" ");
    ctx.update(stream_id.as_bytes());
    hex(ctx.sign().as_ref())
}

/// True when `candidate` is the key for these inputs, compared in constant
/// time (the length, 64, is public). Hex case is ignored: keys are ours, but a
/// peer may have upper-cased them.
pub fn verify(
    secret: &[u8],
    receiving: &str,
    originating: &str,
    stream_id: &str,
    candidate: &str,
) -> bool {
    let expected = key(secret, receiving, originating, stream_id);
    let candidate = candidate.to_ascii_lowercase();
    crate::sasl::ct_eq(expected.as_bytes(), candidate.as_bytes())
}

/// The per-server dialback secret (32 random bytes). The caller keeps it in
/// the data directory as hex (mode 0600) so keys survive a restart, which
/// lets a peer still verify a key we handed out just before it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; 32]);

impl Secret {
    /// A fresh random secret from the system RNG.
    pub fn generate() -> Result<Secret, ring::error::Unspecified> {
        let mut b = [0u8; 32];
        rand::SecureRandom::fill(&rand::SystemRandom::new(), &mut b)?;
        Ok(Secret(b))
    }

    /// From 64 hex digits (surrounding whitespace, e.g. a trailing newline in
    /// the file, is ignored). `None` if it is anything else.
    pub fn from_hex(s: &str) -> Option<Secret> {
        let s = s.trim().as_bytes();
        if s.len() != 64 {
            return None;
        }
        let mut b = [0u8; 32];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            b[i] = (hex_val(pair[0])? << 4) | hex_val(pair[1])?;
        }
        Some(Secret(b))
    }

    /// 64 lowercase hex digits, the file format.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// The key we send as originating server and check as authoritative server.
    pub fn key(&self, receiving: &str, originating: &str, stream_id: &str) -> String {
        key(&self.0, receiving, originating, stream_id)
    }

    /// Constant-time check of a key a receiving server asks us about.
    pub fn verify(&self, receiving: &str, originating: &str, stream_id: &str, k: &str) -> bool {
        verify(&self.0, receiving, originating, stream_id, k)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// `<db:result/>` (between originating and receiving server) or `<db:verify/>`
/// (between receiving and authoritative server).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbKind {
    Result,
    Verify,
}

impl DbKind {
    pub fn name(self) -> &'static str {
        match self {
            DbKind::Result => "result",
            DbKind::Verify => "verify",
        }
    }
}

/// What a dialback element carries: a key (a request) or an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbBody {
    /// A request: no `type`, the key as text.
    Key(String),
    /// `type='valid'`.
    Valid,
    /// `type='invalid'`.
    Invalid,
    /// `type='error'` with the condition (XEP-0220 §2.4).
    Error(DbError),
}

/// The error conditions XEP-0220 §2.4 names for `type='error'` answers (as
/// stanza error conditions in `urn:ietf:params:xml:ns:xmpp-stanzas`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbError {
    /// The receiving server does not host the `to` domain.
    ItemNotFound,
    /// The receiving server could not connect to the authoritative server.
    RemoteConnectionFailed,
    /// The authoritative server's domain did not resolve.
    RemoteServerNotFound,
    /// The authoritative server did not answer in time.
    RemoteServerTimeout,
    /// Local policy forbids dialback with this domain (e.g. certificates required).
    PolicyViolation,
    /// `from`/`to` missing or malformed.
    ImproperAddressing,
    InternalServerError,
    /// Any other condition the peer sent (kept by name; we never send it).
    Other(String),
}

impl DbError {
    pub fn as_str(&self) -> &str {
        match self {
            DbError::ItemNotFound => "item-not-found",
            DbError::RemoteConnectionFailed => "remote-connection-failed",
            DbError::RemoteServerNotFound => "remote-server-not-found",
            DbError::RemoteServerTimeout => "remote-server-timeout",
            DbError::PolicyViolation => "policy-violation",
            DbError::ImproperAddressing => "improper-addressing",
            DbError::InternalServerError => "internal-server-error",
            DbError::Other(s) => s,
        }
    }

    /// The error `type` attribute: `cancel` except for the transient ones (RFC 6120 §8.3.3).
    pub fn error_type(&self) -> &'static str {
        match self {
            DbError::RemoteConnectionFailed
            | DbError::RemoteServerTimeout
            | DbError::InternalServerError => "wait",
            _ => "cancel",
        }
    }

    fn from_name(s: &str) -> DbError {
        match s {
            "item-not-found" => DbError::ItemNotFound,
            "remote-connection-failed" => DbError::RemoteConnectionFailed,
            "remote-server-not-found" => DbError::RemoteServerNotFound,
            "remote-server-timeout" => DbError::RemoteServerTimeout,
            "policy-violation" => DbError::PolicyViolation,
            "improper-addressing" => DbError::ImproperAddressing,
            "internal-server-error" => DbError::InternalServerError,
            other => DbError::Other(other.to_owned()),
        }
    }
}

/// A parsed `<db:result/>` or `<db:verify/>`. `from` and `to` are prepared
/// domains; `id` is the stream id (`db:verify` only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dialback {
    pub kind: DbKind,
    pub from: String,
    pub to: String,
    pub id: Option<String>,
    pub body: DbBody,
}

/// Why an element is not a usable dialback element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbParseError {
    /// Not `result` or `verify` in [`NS_DIALBACK`].
    NotDialback,
    /// `from` or `to` missing or not a domain (answer with `improper-addressing`).
    BadAddress,
    /// `db:verify` without `id`, a request without a key, an unknown `type`,
    /// an over-long key.
    Malformed,
}

impl Dialback {
    /// Parses a dialback element.
    pub fn parse(el: &Element) -> Result<Dialback, DbParseError> {
        let kind = match el.name() {
            _ if el.ns() != NS_DIALBACK => return Err(DbParseError::NotDialback),
            "result" => DbKind::Result,
            "verify" => DbKind::Verify,
            _ => return Err(DbParseError::NotDialback),
        };
        let domain = |name: &str| -> Result<String, DbParseError> {
            let raw = el.attr(name).ok_or(DbParseError::BadAddress)?;
            prepare_domain(raw)
                .map(|d| d.into_owned())
                .map_err(|_| DbParseError::BadAddress)
        };
        let from = domain("from")?;
        let to = domain("to")?;
        let id = el.attr("id").map(str::to_owned);
        if kind == DbKind::Verify && id.as_deref().is_none_or(str::is_empty) {
            return Err(DbParseError::Malformed);
        }
        let body = match el.attr("type") {
            None => {
                let k = el.text();
                let k = k.trim();
                if k.is_empty() || k.len() > MAX_KEY_LEN {
                    return Err(DbParseError::Malformed);
                }
                DbBody::Key(k.to_owned())
            }
            Some("valid") => DbBody::Valid,
            Some("invalid") => DbBody::Invalid,
            Some("error") => {
                let cond = el
                    .get_child("error", super::NS_SERVER)
                    .or_else(|| el.get_child("error", NS_DIALBACK))
                    .or_else(|| el.children().find(|c| c.name() == "error"))
                    .and_then(|e| e.children().find(|c| c.ns() == ns::STANZAS_ERR))
                    .map(|c| DbError::from_name(c.name()))
                    .unwrap_or(DbError::Other("undefined-condition".into()));
                DbBody::Error(cond)
            }
            Some(_) => return Err(DbParseError::Malformed),
        };
        Ok(Dialback {
            kind,
            from,
            to,
            id,
            body,
        })
    }

    /// `<db:result from to>KEY</db:result>`: the originating server's claim.
    pub fn result_request(from: &str, to: &str, key: &str) -> Dialback {
        Dialback {
            kind: DbKind::Result,
            from: from.into(),
            to: to.into(),
            id: None,
            body: DbBody::Key(key.into()),
        }
    }

    /// `<db:verify from to id>KEY</db:verify>`: the receiving server asks the
    /// authoritative server.
    pub fn verify_request(from: &str, to: &str, id: &str, key: &str) -> Dialback {
        Dialback {
            kind: DbKind::Verify,
            from: from.into(),
            to: to.into(),
            id: Some(id.into()),
            body: DbBody::Key(key.into()),
        }
    }

    /// The answer to this request: `from`/`to` swapped, `id` kept.
    pub fn answer(&self, body: DbBody) -> Dialback {
        Dialback {
            kind: self.kind,
            from: self.to.clone(),
            to: self.from.clone(),
            id: self.id.clone(),
            body,
        }
    }

    /// The element, in [`NS_DIALBACK`] (the serializer picks the prefix).
    pub fn to_element(&self) -> Element {
        let mut e = Element::new(self.kind.name(), NS_DIALBACK)
            .with_attr("from", self.from.as_str())
            .with_attr("to", self.to.as_str());
        if let Some(id) = &self.id {
            e.set_attr("id", id.as_str());
        }
        match &self.body {
            DbBody::Key(k) => e.push_text(k.as_str()),
            DbBody::Valid => e.set_attr("type", "valid"),
            DbBody::Invalid => e.set_attr("type", "invalid"),
            DbBody::Error(cond) => {
                e.set_attr("type", "error");
                // Unprefixed in XEP-0220 §2.4's examples, so in the stream's
                // default namespace.
                e.push_child(
                    Element::new("error", super::NS_SERVER)
                        .with_attr("type", cond.error_type())
                        .with_child(Element::new(cond.as_str(), ns::STANZAS_ERR)),
                );
            }
        }
        e
    }
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// XEP-0185 §3's example.
    #[test]
    fn xep_0185_example() {
        let k = key(
            b"s3cr3tf0rd14lb4ck",
            "xmpp.example.com",
            "example.org",
            "D60000229F",
        );
        assert_eq!(
            k,
            "37c69b1cf07a3f67c04a5ef5902fa5114f2c76fe4a2686482ba5b89323075643"
        );
        assert!(verify(
            b"s3cr3tf0rd14lb4ck",
            "xmpp.example.com",
            "example.org",
            "D60000229F",
            &k.to_ascii_uppercase()
        ));
        // Any input changed: a different key.
        for (r, o, id) in [
            ("example.org", "xmpp.example.com", "D60000229F"),
            ("xmpp.example.com", "example.org", "D60000229E"),
            ("xmpp.example.co", "mexample.org", "D60000229F"),
        ] {
            assert!(!verify(b"s3cr3tf0rd14lb4ck", r, o, id, &k));
        }
        assert!(!verify(
            b"s3cr3tf0rd14lb4ck",
            "xmpp.example.com",
            "example.org",
            "D60000229F",
            &k[..63]
        ));
    }

    #[test]
    fn secret_round_trips_through_hex() {
        let s = Secret::generate().unwrap();
        let t = Secret::from_hex(&format!("{}\n", s.to_hex())).unwrap();
        assert_eq!(s, t);
        assert_eq!(format!("{s:?}"), "Secret(..)");
        assert_ne!(s, Secret::generate().unwrap());
        assert!(Secret::from_hex("00").is_none());
        assert!(Secret::from_hex(&"g".repeat(64)).is_none());
        let upper = Secret::from_hex(&"AB".repeat(32)).unwrap();
        assert_eq!(upper.to_hex(), "ab".repeat(32));
        let k = s.key("a.example", "b.example", "id1");
        assert!(s.verify("a.example", "b.example", "id1", &k));
        assert!(!t.verify("a.example", "b.example", "id2", &k));
    }

    fn parse(s: &str) -> Result<Dialback, DbParseError> {
        Dialback::parse(&Element::parse(s).unwrap())
    }

    const DB: &str = "xmlns:db='jabber:server:dialback'";

    #[test]
    fn parses_requests() {
        let r = parse(&format!(
            "<db:result {DB} from='Example.ORG' to='xmpp.example.com'> abc </db:result>"
        ))
        .unwrap();
        assert_eq!(
            r,
            Dialback::result_request("example.org", "xmpp.example.com", "abc")
        );
        let v = parse(&format!(
            "<db:verify {DB} from='a.example' to='b.example' id='s1'>k</db:verify>"
        ))
        .unwrap();
        assert_eq!(
            v,
            Dialback::verify_request("a.example", "b.example", "s1", "k")
        );
    }

    #[test]
    fn parses_answers() {
        let v = parse(&format!(
            "<db:result {DB} from='a.example' to='b.example' type='valid'/>"
        ))
        .unwrap();
        assert_eq!(v.body, DbBody::Valid);
        let v = parse(&format!(
            "<db:verify {DB} from='a.example' to='b.example' id='x' type='invalid'/>"
        ))
        .unwrap();
        assert_eq!(v.body, DbBody::Invalid);
        let e = parse(&format!(
            "<db:result {DB} from='a.example' to='b.example' type='error'>\
             <error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>\
             </db:result>"
        ))
        .unwrap();
        assert_eq!(e.body, DbBody::Error(DbError::ItemNotFound));
        let e = parse(&format!(
            "<db:result {DB} from='a.example' to='b.example' type='error'/>"
        ))
        .unwrap();
        assert_eq!(
            e.body,
            DbBody::Error(DbError::Other("undefined-condition".into()))
        );
    }

    #[test]
    fn refuses_malformed() {
        for (s, err) in [
            (
                "<result xmlns='jabber:server' from='a' to='b'>k</result>".to_owned(),
                DbParseError::NotDialback,
            ),
            (
                format!("<db:other {DB} from='a' to='b'>k</db:other>"),
                DbParseError::NotDialback,
            ),
            (
                format!("<db:result {DB} to='b'>k</db:result>"),
                DbParseError::BadAddress,
            ),
            (
                format!("<db:result {DB} from='a b' to='b'>k</db:result>"),
                DbParseError::BadAddress,
            ),
            (
                format!("<db:result {DB} from='a' to='b'/>"),
                DbParseError::Malformed,
            ),
            (
                format!("<db:verify {DB} from='a' to='b'>k</db:verify>"),
                DbParseError::Malformed,
            ),
            (
                format!("<db:result {DB} from='a' to='b' type='maybe'/>"),
                DbParseError::Malformed,
            ),
            (
                format!(
                    "<db:result {DB} from='a' to='b'>{}</db:result>",
                    "a".repeat(MAX_KEY_LEN + 1)
                ),
                DbParseError::Malformed,
            ),
        ] {
            assert_eq!(parse(&s), Err(err), "{s}");
        }
    }

    #[test]
    fn builds_and_reparses() {
        let req = Dialback::verify_request("a.example", "b.example", "s1", "k");
        for body in [
            DbBody::Valid,
            DbBody::Invalid,
            DbBody::Error(DbError::RemoteServerTimeout),
            DbBody::Error(DbError::PolicyViolation),
        ] {
            let ans = req.answer(body.clone());
            assert_eq!(ans.from, "b.example");
            assert_eq!(ans.id.as_deref(), Some("s1"));
            let el = ans.to_element();
            let bytes = el.to_bytes_in("jabber:server");
            let back = Element::parse(std::str::from_utf8(&bytes).unwrap()).unwrap();
            assert_eq!(Dialback::parse(&back).unwrap(), ans);
        }
        let el = Dialback::result_request("a.example", "b.example", "k").to_element();
        assert!(el.is("result", NS_DIALBACK));
        assert_eq!(el.text(), "k");
        assert_eq!(el.attr("type"), None);
    }
}
