//! Stanzas as the router sees them: the three kinds, their addresses, and the replies the server
//! builds (iq results, error bounces). Pure: no I/O, no knowledge of sessions or the store.

pub mod error;
pub mod form;
pub mod mam;
pub mod ns;

pub use error::{Condition, ErrorType, StanzaError, StreamError};

use crate::jid::Jid;
use crate::xml::Element;

/// The three RFC 6120 stanza kinds; anything else at the top level of an open stream is an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Message,
    Presence,
    Iq,
}

impl Kind {
    pub fn of(el: &Element) -> Option<Kind> {
        if el.ns() != ns::CLIENT {
            return None;
        }
        match el.name() {
            "message" => Some(Kind::Message),
            "presence" => Some(Kind::Presence),
            "iq" => Some(Kind::Iq),
            _ => None,
        }
    }
}

/// Reads an address attribute; `Ok(None)` when absent, `Err` when present but malformed.
pub fn jid_attr(el: &Element, name: &str) -> Result<Option<Jid>, StanzaError> {
    match el.attr(name) {
        None => Ok(None),
        Some(s) => Jid::parse(s)
            .map(Some)
            .map_err(|_| StanzaError::new(Condition::JidMalformed)),
    }
}

/// The `type` attribute, with RFC 6120 defaults (`normal` for messages, `available` — i.e. no
/// type — for presence).
pub fn stanza_type(el: &Element) -> &str {
    match (el.attr("type"), el.name()) {
        (Some(t), _) => t,
        (None, "message") => "normal",
        (None, _) => "",
    }
}

/// An iq of type result answering `req`, with an optional payload.
pub fn iq_result(req: &Element, payload: Option<Element>) -> Element {
    let mut iq = Element::new("iq", ns::CLIENT).with_attr("type", "result");
    copy_reply_addresses(req, &mut iq);
    if let Some(p) = payload {
        iq.push_child(p);
    }
    iq
}

/// The error reply to `stanza` (RFC 6120 §8.3.1): addresses swapped, type `error`, the
/// original's children kept for messages and presence (so the sender sees what bounced) but not
/// for iq, whose payload could be large and is never needed to correlate (the id does that).
pub fn error_reply(stanza: &Element, err: &StanzaError) -> Element {
    let mut reply = Element::new(stanza.name(), ns::CLIENT).with_attr("type", "error");
    copy_reply_addresses(stanza, &mut reply);
    if stanza.name() != "iq" {
        for child in stanza.children() {
            if child.name() != "error" {
                reply.push_child(child.clone());
            }
        }
    }
    reply.push_child(err.to_element());
    reply
}

/// Whether an error must not be answered: RFC 6120 §8.3.1 forbids errors about errors, and
/// results are never answered either.
pub fn must_not_answer(stanza: &Element) -> bool {
    matches!(stanza.attr("type"), Some("error") | Some("result"))
}

fn copy_reply_addresses(req: &Element, reply: &mut Element) {
    if let Some(id) = req.attr("id") {
        reply.set_attr("id", id);
    }
    if let Some(to) = req.attr("to") {
        reply.set_attr("from", to);
    }
    if let Some(from) = req.attr("from") {
        reply.set_attr("to", from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iq_error_swaps_addresses_and_drops_payload() {
        let req = Element::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("id", "7")
            .with_attr("from", "a@x/r")
            .with_attr("to", "b@x/r")
            .with_child(Element::new("query", "urn:example"));
        let reply = error_reply(&req, &Condition::ServiceUnavailable.into());
        assert_eq!(reply.attr("from"), Some("b@x/r"));
        assert_eq!(reply.attr("to"), Some("a@x/r"));
        assert_eq!(reply.attr("id"), Some("7"));
        assert_eq!(reply.attr("type"), Some("error"));
        assert!(reply.get_child("query", "urn:example").is_none());
        let err = reply.get_child("error", ns::CLIENT).expect("error child");
        assert_eq!(err.attr("type"), Some("cancel"));
        assert!(err.has_child("service-unavailable", ns::STANZAS_ERR));
    }

    #[test]
    fn message_error_keeps_body() {
        let msg = Element::new("message", ns::CLIENT)
            .with_attr("to", "nobody@x")
            .with_child(Element::new("body", ns::CLIENT).with_text("hi"));
        let reply = error_reply(&msg, &Condition::ServiceUnavailable.into());
        assert!(reply.has_child("body", ns::CLIENT));
    }

    #[test]
    fn errors_and_results_are_never_answered() {
        let e = Element::new("message", ns::CLIENT).with_attr("type", "error");
        assert!(must_not_answer(&e));
        let r = Element::new("iq", ns::CLIENT).with_attr("type", "result");
        assert!(must_not_answer(&r));
        assert!(!must_not_answer(&Element::new("message", ns::CLIENT)));
    }
}
