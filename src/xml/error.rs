//! Errors of the XML layer, one variant per RFC 6120 §4.9.3 stream error condition.
//!
//! Every one of them means the peer sent bad bytes, so each is fatal to the stream:
//! the session sends `<stream:error>` with [`FrameError::condition`] and closes. The
//! `String` is detail for the log (`debug`), not for the peer: it may quote the peer's
//! own input but never anything of ours.

use std::fmt;

/// Why a stream (or a standalone element) could not be framed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Violates XML 1.0 or Namespaces in XML: bad syntax, mismatched tags, invalid
    /// UTF-8, illegal characters, undeclared prefixes (RFC 6120 §4.9.3.13).
    NotWellFormed(String),
    /// Well-formed but outside the XML subset XMPP allows: comments, processing
    /// instructions, DTDs, entity references other than the predefined five
    /// (RFC 6120 §11.1, §4.9.3.18).
    RestrictedXml(String),
    /// Exceeds a local limit: element size or nesting depth (RFC 6120 §4.9.3.14).
    PolicyViolation(String),
    /// The stream header is not `stream` in `http://etherx.jabber.org/streams`
    /// (RFC 6120 §4.9.3.10).
    InvalidNamespace(String),
    /// Well-formed XML that XMPP cannot process, e.g. text between stanzas
    /// (RFC 6120 §4.9.3.1).
    BadFormat(String),
    /// The XML declaration names an encoding other than UTF-8 (RFC 6120 §11.6,
    /// §4.9.3.22).
    UnsupportedEncoding(String),
}

impl FrameError {
    /// The RFC 6120 §4.9.3 defined-condition element name to send in `<stream:error>`.
    pub fn condition(&self) -> &'static str {
        match self {
            FrameError::NotWellFormed(_) => "not-well-formed",
            FrameError::RestrictedXml(_) => "restricted-xml",
            FrameError::PolicyViolation(_) => "policy-violation",
            FrameError::InvalidNamespace(_) => "invalid-namespace",
            FrameError::BadFormat(_) => "bad-format",
            FrameError::UnsupportedEncoding(_) => "unsupported-encoding",
        }
    }

    /// The detail for the log.
    pub fn detail(&self) -> &str {
        match self {
            FrameError::NotWellFormed(s)
            | FrameError::RestrictedXml(s)
            | FrameError::PolicyViolation(s)
            | FrameError::InvalidNamespace(s)
            | FrameError::BadFormat(s)
            | FrameError::UnsupportedEncoding(s) => s,
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.condition(), self.detail())
    }
}

impl std::error::Error for FrameError {}

/// Shorthand for the most common error.
pub(crate) fn not_well_formed(detail: impl Into<String>) -> FrameError {
    FrameError::NotWellFormed(detail.into())
}
