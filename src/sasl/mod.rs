//! SASL for XMPP (RFC 6120 §6): the mechanisms kith speaks, the failure
//! conditions it returns, and channel-binding data.
//!
//! Owns: SCRAM-SHA-{1,256,512}[-PLUS] (RFC 5802, RFC 7677, RFC 5929,
//! RFC 9266) and PLAIN (RFC 4616), server side, plus a small SCRAM client for
//! tests and the load generator. Pure: no I/O, no async, no clock; the only
//! outside input is the system RNG (salts, nonces).
//!
//! Must not know: XML, streams, accounts or the store. The caller offers the
//! mechanisms, base64-decodes the `<auth/>`/`<response/>` payloads, looks up
//! [`ScramCreds`] by [`ScramNeedCreds::username`], decides whether an
//! authzid is acceptable, and turns a [`SaslFailure`] into `<failure/>`.
//!
//! Files: `creds.rs` (stored credentials, derivation, encoding), `scram.rs`
//! (server state machine), `client.rs` (client), `plain.rs` (PLAIN).
//!
//! Usernames (authcids) are prepared as JID localparts
//! ([`crate::jid::prepare_localpart`]), so `Alice` logs in as `alice`.
//! Passwords are prepared with PRECIS OpaqueString (RFC 8265 §4.2) instead of
//! SASLprep (RFC 4013), which RFC 5802 names; the two agree on printable
//! ASCII (both leave it unchanged and both reject control characters), and
//! RFC 8265 obsoletes SASLprep. They can differ on non-ASCII passwords that
//! contain compatibility characters (SASLprep applies NFKC, OpaqueString NFC)
//! or characters SASLprep maps to nothing.

use std::fmt;

mod client;
mod creds;
mod pbkdf2_sha1;
mod plain;
mod scram;

pub mod ht;

pub use client::{ClientError, SaltedPassword, ScramClient};
pub use creds::{
    check_password, decode_creds, derive_all, derive_creds, derive_creds_with_salt, encode_creds,
    verify_password, CredsDecodeError, PasswordError, ScramCreds, DEFAULT_ITERATIONS,
    MAX_PASSWORD_LEN, MAX_SALT_LEN,
};
pub use plain::{plain_parse, PlainCreds};
pub use scram::{scram_start, ScramAwaitFinal, ScramNeedCreds, ScramSuccess};

/// Largest SASL message (after base64 decoding) any phase accepts. Real
/// messages are a few hundred bytes; an authzid is at most a JID (3071 bytes).
pub const MAX_MESSAGE_LEN: usize = 8192;

/// The hash function of a SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hash {
    Sha1,
    Sha256,
    Sha512,
}

impl Hash {
    /// All hashes, weakest first.
    pub const ALL: [Hash; 3] = [Hash::Sha1, Hash::Sha256, Hash::Sha512];

    /// Output length in bytes (and so the length of StoredKey and ServerKey).
    pub fn output_len(self) -> usize {
        match self {
            Hash::Sha1 => 20,
            Hash::Sha256 => 32,
            Hash::Sha512 => 64,
        }
    }

    /// "SHA-1", "SHA-256", "SHA-512".
    pub fn name(self) -> &'static str {
        match self {
            Hash::Sha1 => "SHA-1",
            Hash::Sha256 => "SHA-256",
            Hash::Sha512 => "SHA-512",
        }
    }
}

/// A SASL mechanism kith implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mechanism {
    ScramSha1,
    ScramSha1Plus,
    ScramSha256,
    ScramSha256Plus,
    ScramSha512,
    ScramSha512Plus,
    Plain,
}

impl Mechanism {
    /// All mechanisms, strongest first (the order to advertise them in).
    pub const ALL: [Mechanism; 7] = [
        Mechanism::ScramSha512Plus,
        Mechanism::ScramSha256Plus,
        Mechanism::ScramSha1Plus,
        Mechanism::ScramSha512,
        Mechanism::ScramSha256,
        Mechanism::ScramSha1,
        Mechanism::Plain,
    ];

    /// The IANA name, e.g. "SCRAM-SHA-256-PLUS".
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::ScramSha1Plus => "SCRAM-SHA-1-PLUS",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
            Mechanism::ScramSha512Plus => "SCRAM-SHA-512-PLUS",
            Mechanism::Plain => "PLAIN",
        }
    }

    /// Parses an IANA name (exact, case-sensitive as RFC 4422 §3.1 requires).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The SCRAM hash; `None` for PLAIN.
    pub fn hash(self) -> Option<Hash> {
        match self {
            Mechanism::ScramSha1 | Mechanism::ScramSha1Plus => Some(Hash::Sha1),
            Mechanism::ScramSha256 | Mechanism::ScramSha256Plus => Some(Hash::Sha256),
            Mechanism::ScramSha512 | Mechanism::ScramSha512Plus => Some(Hash::Sha512),
            Mechanism::Plain => None,
        }
    }

    /// True for the channel-binding (-PLUS) variants.
    pub fn is_plus(self) -> bool {
        matches!(
            self,
            Mechanism::ScramSha1Plus | Mechanism::ScramSha256Plus | Mechanism::ScramSha512Plus
        )
    }

    /// The SCRAM mechanism for `hash`, with or without channel binding.
    pub fn scram(hash: Hash, plus: bool) -> Self {
        match (hash, plus) {
            (Hash::Sha1, false) => Mechanism::ScramSha1,
            (Hash::Sha1, true) => Mechanism::ScramSha1Plus,
            (Hash::Sha256, false) => Mechanism::ScramSha256,
            (Hash::Sha256, true) => Mechanism::ScramSha256Plus,
            (Hash::Sha512, false) => Mechanism::ScramSha512,
            (Hash::Sha512, true) => Mechanism::ScramSha512Plus,
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Channel-binding data a client binds to (client side).
#[derive(Clone, PartialEq, Eq)]
pub enum ChannelBinding {
    /// RFC 9266 `tls-exporter`: 32 bytes of TLS exporter output with label
    /// "EXPORTER-Channel-Binding" and empty context.
    TlsExporter(Vec<u8>),
    /// RFC 5929 §4 `tls-server-end-point`: hash of the server certificate.
    TlsServerEndPoint(Vec<u8>),
}

impl ChannelBinding {
    /// The cb-name used in the gs2 header.
    pub fn name(&self) -> &'static str {
        match self {
            ChannelBinding::TlsExporter(_) => CB_TLS_EXPORTER,
            ChannelBinding::TlsServerEndPoint(_) => CB_TLS_SERVER_END_POINT,
        }
    }

    pub fn data(&self) -> &[u8] {
        match self {
            ChannelBinding::TlsExporter(d) | ChannelBinding::TlsServerEndPoint(d) => d,
        }
    }
}

impl fmt::Debug for ChannelBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ChannelBinding({}, {} bytes)",
            self.name(),
            self.data().len()
        )
    }
}

pub const CB_TLS_EXPORTER: &str = "tls-exporter";
pub const CB_TLS_SERVER_END_POINT: &str = "tls-server-end-point";

/// The channel-binding data the server has for this connection (both `None`
/// outside TLS). With TLS 1.3 only these two types exist; `tls-unique` is not
/// supported.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CbInfo {
    pub exporter: Option<Vec<u8>>,
    pub server_end_point: Option<Vec<u8>>,
}

impl CbInfo {
    /// No channel binding (plain TCP).
    pub fn none() -> Self {
        Self::default()
    }

    /// The cb-names available, for the XEP-0440 `<sasl-channel-binding/>`
    /// stream feature (`<channel-binding type='…'/>` each).
    pub fn types(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.exporter.is_some() {
            v.push(CB_TLS_EXPORTER);
        }
        if self.server_end_point.is_some() {
            v.push(CB_TLS_SERVER_END_POINT);
        }
        v
    }

    /// True when any -PLUS mechanism can be offered.
    pub fn any(&self) -> bool {
        self.exporter.is_some() || self.server_end_point.is_some()
    }

    /// The data for a cb-name, if available.
    pub fn data(&self, cb_name: &str) -> Option<&[u8]> {
        match cb_name {
            CB_TLS_EXPORTER => self.exporter.as_deref(),
            CB_TLS_SERVER_END_POINT => self.server_end_point.as_deref(),
            _ => None,
        }
    }
}

impl fmt::Debug for CbInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CbInfo({:?})", self.types())
    }
}

/// Why authentication failed, as the peer sees it: an RFC 6120 §6.5 condition
/// and optional text. The text is generic and never contains secrets (or
/// whether an account exists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslFailure {
    /// The element name of the condition, e.g. "not-authorized".
    pub condition: &'static str,
    pub text: Option<String>,
}

impl SaslFailure {
    pub const ABORTED: &'static str = "aborted";
    pub const ACCOUNT_DISABLED: &'static str = "account-disabled";
    pub const CREDENTIALS_EXPIRED: &'static str = "credentials-expired";
    pub const ENCRYPTION_REQUIRED: &'static str = "encryption-required";
    pub const INCORRECT_ENCODING: &'static str = "incorrect-encoding";
    pub const INVALID_AUTHZID: &'static str = "invalid-authzid";
    pub const INVALID_MECHANISM: &'static str = "invalid-mechanism";
    pub const MALFORMED_REQUEST: &'static str = "malformed-request";
    pub const MECHANISM_TOO_WEAK: &'static str = "mechanism-too-weak";
    pub const NOT_AUTHORIZED: &'static str = "not-authorized";
    pub const TEMPORARY_AUTH_FAILURE: &'static str = "temporary-auth-failure";

    /// A failure without text.
    pub fn new(condition: &'static str) -> Self {
        SaslFailure {
            condition,
            text: None,
        }
    }

    pub fn with_text(condition: &'static str, text: impl Into<String>) -> Self {
        SaslFailure {
            condition,
            text: Some(text.into()),
        }
    }

    pub fn malformed(text: &str) -> Self {
        Self::with_text(Self::MALFORMED_REQUEST, text)
    }

    pub fn not_authorized(text: &str) -> Self {
        Self::with_text(Self::NOT_AUTHORIZED, text)
    }
}

impl fmt::Display for SaslFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.text {
            Some(t) => write!(f, "{}: {}", self.condition, t),
            None => f.write_str(self.condition),
        }
    }
}

impl std::error::Error for SaslFailure {}

/// Constant-time equality for secrets of public length. `ring` 0.17
/// deprecates its public helper; `black_box` keeps the optimiser from
/// short-circuiting the fold.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mechanism_names_round_trip() {
        for m in Mechanism::ALL {
            assert_eq!(Mechanism::from_name(m.name()), Some(m));
            if let Some(h) = m.hash() {
                assert_eq!(Mechanism::scram(h, m.is_plus()), m);
                assert!(m.name().contains(h.name()));
            }
            assert_eq!(m.is_plus(), m.name().ends_with("-PLUS"));
        }
        assert_eq!(Mechanism::from_name("scram-sha-1"), None);
        assert_eq!(Mechanism::from_name("DIGEST-MD5"), None);
        assert_eq!(Mechanism::ScramSha256Plus.to_string(), "SCRAM-SHA-256-PLUS");
    }

    #[test]
    fn cb_info_types() {
        assert!(CbInfo::none().types().is_empty());
        let cb = CbInfo {
            exporter: Some(vec![1; 32]),
            server_end_point: Some(vec![2; 32]),
        };
        assert_eq!(cb.types(), ["tls-exporter", "tls-server-end-point"]);
        assert_eq!(cb.data("tls-unique"), None);
        assert_eq!(
            format!("{cb:?}"),
            "CbInfo([\"tls-exporter\", \"tls-server-end-point\"])"
        );
    }

    #[test]
    fn ct_eq_works() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(ct_eq(b"", b""));
    }
}
