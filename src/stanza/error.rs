//! The two kinds of protocol errors a peer can see: stanza errors (RFC 6120 §8.3), which answer
//! one stanza and keep the stream, and stream errors (§4.9), which end it.
//!
//! Both carry only a defined condition and, at most, generic text: details of what went wrong
//! on our side belong in the log, never on the wire.

use crate::stanza::ns;
use crate::xml::Element;

/// RFC 6120 §8.3.2 error types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    Auth,
    Cancel,
    Continue,
    Modify,
    Wait,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Continue => "continue",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }
}

/// A stanza error condition with the type RFC 6120 §8.3.3 recommends for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    BadRequest,
    Conflict,
    FeatureNotImplemented,
    Forbidden,
    InternalServerError,
    ItemNotFound,
    JidMalformed,
    NotAcceptable,
    NotAllowed,
    NotAuthorized,
    PolicyViolation,
    RecipientUnavailable,
    /// XEP-0045: a members-only room refusing a non-member.
    RegistrationRequired,
    RemoteServerNotFound,
    RemoteServerTimeout,
    ResourceConstraint,
    ServiceUnavailable,
    UndefinedCondition,
    UnexpectedRequest,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::BadRequest => "bad-request",
            Condition::Conflict => "conflict",
            Condition::FeatureNotImplemented => "feature-not-implemented",
            Condition::Forbidden => "forbidden",
            Condition::InternalServerError => "internal-server-error",
            Condition::ItemNotFound => "item-not-found",
            Condition::JidMalformed => "jid-malformed",
            Condition::NotAcceptable => "not-acceptable",
            Condition::NotAllowed => "not-allowed",
            Condition::NotAuthorized => "not-authorized",
            Condition::PolicyViolation => "policy-violation",
            Condition::RecipientUnavailable => "recipient-unavailable",
            Condition::RegistrationRequired => "registration-required",
            Condition::RemoteServerNotFound => "remote-server-not-found",
            Condition::RemoteServerTimeout => "remote-server-timeout",
            Condition::ResourceConstraint => "resource-constraint",
            Condition::ServiceUnavailable => "service-unavailable",
            Condition::UndefinedCondition => "undefined-condition",
            Condition::UnexpectedRequest => "unexpected-request",
        }
    }

    /// The error type RFC 6120 §8.3.3 gives in its examples for each condition.
    pub fn default_type(self) -> ErrorType {
        match self {
            Condition::BadRequest | Condition::JidMalformed | Condition::NotAcceptable => {
                ErrorType::Modify
            }
            Condition::Forbidden
            | Condition::NotAuthorized
            | Condition::PolicyViolation
            | Condition::RegistrationRequired => ErrorType::Auth,
            Condition::InternalServerError
            | Condition::RecipientUnavailable
            | Condition::RemoteServerTimeout
            | Condition::ResourceConstraint
            | Condition::UnexpectedRequest => ErrorType::Wait,
            _ => ErrorType::Cancel,
        }
    }
}

/// A stanza error ready to be put on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StanzaError {
    pub kind: ErrorType,
    pub condition: Condition,
    pub text: Option<&'static str>,
}

impl StanzaError {
    pub fn new(condition: Condition) -> StanzaError {
        StanzaError {
            kind: condition.default_type(),
            condition,
            text: None,
        }
    }

    pub fn with_text(mut self, text: &'static str) -> StanzaError {
        self.text = Some(text);
        self
    }

    pub fn to_element(&self) -> Element {
        let mut error = Element::new("error", ns::CLIENT)
            .with_attr("type", self.kind.as_str())
            .with_child(Element::new(self.condition.as_str(), ns::STANZAS_ERR));
        if let Some(text) = self.text {
            error.push_child(
                Element::new("text", ns::STANZAS_ERR)
                    .with_attr("xml:lang", "en")
                    .with_text(text),
            );
        }
        error
    }
}

impl From<Condition> for StanzaError {
    fn from(c: Condition) -> StanzaError {
        StanzaError::new(c)
    }
}

/// RFC 6120 §4.9.3 stream error conditions kith sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamError {
    BadFormat,
    Conflict,
    ConnectionTimeout,
    HostUnknown,
    InternalServerError,
    InvalidFrom,
    InvalidNamespace,
    InvalidXml,
    NotAuthorized,
    NotWellFormed,
    PolicyViolation,
    ResourceConstraint,
    RestrictedXml,
    SystemShutdown,
    UndefinedCondition,
    UnsupportedEncoding,
    UnsupportedStanzaType,
    UnsupportedVersion,
}

impl StreamError {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamError::BadFormat => "bad-format",
            StreamError::Conflict => "conflict",
            StreamError::ConnectionTimeout => "connection-timeout",
            StreamError::HostUnknown => "host-unknown",
            StreamError::InternalServerError => "internal-server-error",
            StreamError::InvalidFrom => "invalid-from",
            StreamError::InvalidNamespace => "invalid-namespace",
            StreamError::InvalidXml => "invalid-xml",
            StreamError::NotAuthorized => "not-authorized",
            StreamError::NotWellFormed => "not-well-formed",
            StreamError::PolicyViolation => "policy-violation",
            StreamError::ResourceConstraint => "resource-constraint",
            StreamError::RestrictedXml => "restricted-xml",
            StreamError::SystemShutdown => "system-shutdown",
            StreamError::UndefinedCondition => "undefined-condition",
            StreamError::UnsupportedEncoding => "unsupported-encoding",
            StreamError::UnsupportedStanzaType => "unsupported-stanza-type",
            StreamError::UnsupportedVersion => "unsupported-version",
        }
    }

    /// `<stream:error>` with the condition and optional text; the caller closes the stream after.
    pub fn to_element(self, text: Option<&str>) -> Element {
        let mut e = Element::new("error", ns::STREAM)
            .with_child(Element::new(self.as_str(), ns::STREAMS_ERR));
        if let Some(text) = text {
            e.push_child(
                Element::new("text", ns::STREAMS_ERR)
                    .with_attr("xml:lang", "en")
                    .with_text(text),
            );
        }
        e
    }
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
