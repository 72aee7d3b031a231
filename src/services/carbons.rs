//! XEP-0280 Message Carbons: every resource that enabled carbons sees the account's
//! one-to-one conversations, sent and received, wrapped in `<sent/>`/`<received/>`.
//! Which messages qualify follows XEP-0280 §6 as Prosody applies it: chat messages, normal
//! messages with a body, receipts, chat markers and invitations; never with `<private/>` or a
//! `<no-copy/>` hint, never groupchat.

use crate::jid::{BareJid, FullJid};
use crate::router::{bounce, deliver_reply};
use crate::server::Server;
use crate::sessions::{self, Outbound};
use crate::stanza::{self, ns, Condition};
use crate::xml::Element;

/// `<enable/>` / `<disable/>` from a resource.
pub fn handle_iq(srv: &Server, from: &FullJid, iq: &Element, payload: &Element) {
    let on = match payload.name() {
        "enable" => true,
        "disable" => false,
        _ => return bounce(srv, iq, Condition::BadRequest.into()),
    };
    if iq.attr("type") != Some("set") {
        return bounce(srv, iq, Condition::BadRequest.into());
    }
    srv.sessions.set_carbons(from, on);
    log::debug!("carbons {} for {from}", if on { "on" } else { "off" });
    deliver_reply(srv, stanza::iq_result(iq, None));
}

/// Whether a message is copied to the account's other resources.
pub fn eligible(msg: &Element) -> bool {
    if msg.has_child("private", ns::CARBONS) || msg.has_child("no-copy", ns::HINTS) {
        return false;
    }
    // A carbon is never carbon-copied again.
    if msg.has_child("sent", ns::CARBONS) || msg.has_child("received", ns::CARBONS) {
        return false;
    }
    match stanza::stanza_type(msg) {
        "chat" => true,
        "groupchat" | "error" | "headline" => false,
        _ if msg.has_child("body", ns::CLIENT) => true,
        _ => {
            msg.has_child("received", ns::RECEIPTS)
                || msg.children().any(|c| c.ns() == ns::CHAT_MARKERS)
                || msg.children().any(|c| c.ns() == ns::CONFERENCE)
                || msg
                    .get_child("x", ns::MUC_USER)
                    .is_some_and(|x| x.children().any(|c| c.name() == "invite"))
        }
    }
}

/// A message sent by `from`: copies to the sender's other carbons-enabled resources.
pub fn sent(srv: &Server, from: &FullJid, msg: &Element) {
    if !eligible(msg) {
        return;
    }
    copy(srv, &from.to_bare(), msg, "sent", |r| r.jid != *from);
}

/// A message for account `to` was delivered to `delivered`: copies to the account's other
/// carbons-enabled resources.
pub fn received(srv: &Server, to: &BareJid, msg: &Element, delivered: &[FullJid]) {
    if !eligible(msg) {
        return;
    }
    copy(srv, to, msg, "received", |r| !delivered.contains(&r.jid));
}

fn copy(
    srv: &Server,
    owner: &BareJid,
    msg: &Element,
    direction: &str,
    want: impl Fn(&sessions::Resource) -> bool,
) {
    for r in srv.sessions.resources(owner) {
        if !(r.carbons && r.available && want(&r)) {
            continue;
        }
        let mut carbon = Element::new("message", ns::CLIENT)
            .with_attr("from", owner.to_string())
            .with_attr("to", r.jid.to_string())
            .with_child(
                Element::new(direction, ns::CARBONS)
                    .with_child(Element::new("forwarded", ns::FORWARD).with_child(msg.clone())),
            );
        if let Some(t) = msg.attr("type") {
            carbon.set_attr("type", t);
        }
        sessions::send(&r, Outbound::stanza(carbon));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(xml: &str) -> Element {
        Element::parse(xml).expect("test XML")
    }

    #[test]
    fn chat_and_normal_with_body_qualify() {
        assert!(eligible(&msg(
            "<message xmlns='jabber:client' type='chat'/>"
        )));
        assert!(eligible(&msg(
            "<message xmlns='jabber:client'><body>x</body></message>"
        )));
        assert!(!eligible(&msg("<message xmlns='jabber:client'/>")));
    }

    #[test]
    fn private_no_copy_groupchat_and_carbons_do_not() {
        assert!(!eligible(&msg(
            "<message xmlns='jabber:client' type='chat'><private xmlns='urn:xmpp:carbons:2'/></message>"
        )));
        assert!(!eligible(&msg(
            "<message xmlns='jabber:client' type='chat'><no-copy xmlns='urn:xmpp:hints'/></message>"
        )));
        assert!(!eligible(&msg(
            "<message xmlns='jabber:client' type='groupchat'><body>x</body></message>"
        )));
        assert!(!eligible(&msg(
            "<message xmlns='jabber:client' type='chat'><sent xmlns='urn:xmpp:carbons:2'/></message>"
        )));
    }

    #[test]
    fn receipts_markers_and_invites_qualify() {
        assert!(eligible(&msg(
            "<message xmlns='jabber:client'><received xmlns='urn:xmpp:receipts' id='1'/></message>"
        )));
        assert!(eligible(&msg(
            "<message xmlns='jabber:client'><displayed xmlns='urn:xmpp:chat-markers:0' id='1'/></message>"
        )));
        assert!(eligible(&msg(
            "<message xmlns='jabber:client'><x xmlns='jabber:x:conference' jid='r@c'/></message>"
        )));
    }
}
