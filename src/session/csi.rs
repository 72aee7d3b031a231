//! XEP-0352 Client State Indication: while the client says it is inactive (a phone in a
//! pocket), stanzas that can wait are held, and flushed in order with the first one that
//! can't, so the radio wakes up for what matters and not for every status change. Pure: the
//! session feeds it stanzas and writes what it returns.

use crate::stanza::ns;
use crate::xml::Element;

/// Held stanzas beyond this are flushed anyway: holding is an optimisation, never a backlog.
pub const MAX_HELD: usize = 200;

#[derive(Default)]
pub struct Csi {
    inactive: bool,
    held: Vec<Element>,
}

impl Csi {
    pub fn is_inactive(&self) -> bool {
        self.inactive
    }

    /// `<active/>` or `<inactive/>`. Becoming active releases everything held.
    pub fn set_inactive(&mut self, inactive: bool, ready: &mut Vec<Element>) {
        self.inactive = inactive;
        if !inactive {
            ready.append(&mut self.held);
        }
    }

    /// Takes one outgoing stanza; appends to `ready` what must be written now.
    pub fn push(&mut self, el: Element, ready: &mut Vec<Element>) {
        if !self.inactive {
            ready.push(el);
            return;
        }
        if can_wait(&el) {
            // A newer availability from the same sender makes the held one obsolete.
            if el.name() == "presence" {
                let from = el.attr("from");
                self.held
                    .retain(|h| !(h.name() == "presence" && h.attr("from") == from));
            }
            self.held.push(el);
            if self.held.len() < MAX_HELD {
                return;
            }
        } else {
            self.held.push(el);
        }
        ready.append(&mut self.held);
    }

    /// Everything held, for when the stream ends.
    pub fn drain(&mut self) -> Vec<Element> {
        std::mem::take(&mut self.held)
    }
}

/// Whether a stanza may wait while the client is inactive: availability presence, and
/// messages that carry only chat states, receipts, markers or PEP notifications. Anything a
/// person should see now (a body, an encrypted payload, a call) and every iq goes out at once.
pub fn can_wait(el: &Element) -> bool {
    match el.name() {
        "presence" => matches!(el.attr("type"), None | Some("unavailable")),
        "message" => {
            if matches!(el.attr("type"), Some("error")) {
                return false;
            }
            el.children().all(|c| {
                c.ns() == ns::CHATSTATES
                    || c.ns() == ns::HINTS
                    || c.ns() == ns::RECEIPTS
                    || c.ns() == ns::CHAT_MARKERS
                    || c.ns() == "http://jabber.org/protocol/pubsub#event"
                    || c.name() == "thread"
                    || c.is("stanza-id", "urn:xmpp:sid:0")
                    || c.is("delay", ns::DELAY)
            })
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(xml: &str) -> Element {
        Element::parse(xml).expect("test XML")
    }

    fn presence(from: &str, show: &str) -> Element {
        el(&format!(
            "<presence xmlns='jabber:client' from='{from}'><show>{show}</show></presence>"
        ))
    }

    #[test]
    fn active_client_gets_everything_at_once() {
        let mut csi = Csi::default();
        let mut ready = Vec::new();
        csi.push(presence("a@x/1", "away"), &mut ready);
        assert_eq!(ready.len(), 1);
    }

    #[test]
    fn inactive_client_holds_presence_until_a_message_with_a_body() {
        let mut csi = Csi::default();
        let mut ready = Vec::new();
        csi.set_inactive(true, &mut ready);
        csi.push(presence("a@x/1", "away"), &mut ready);
        csi.push(presence("b@x/1", "dnd"), &mut ready);
        csi.push(presence("a@x/1", "xa"), &mut ready);
        csi.push(
            el("<message xmlns='jabber:client'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"),
            &mut ready,
        );
        assert!(ready.is_empty());
        csi.push(
            el("<message xmlns='jabber:client'><body>hi</body></message>"),
            &mut ready,
        );
        // b's presence, a's newest presence (the older one dropped), the chat state, the body.
        assert_eq!(ready.len(), 4);
        assert_eq!(ready[0].attr("from"), Some("b@x/1"));
        assert_eq!(
            ready[1].get_child("show", ns::CLIENT).map(|s| s.text()),
            Some("xa".into())
        );
        assert!(ready[3].has_child("body", ns::CLIENT));
    }

    #[test]
    fn becoming_active_flushes_and_iq_never_waits() {
        let mut csi = Csi::default();
        let mut ready = Vec::new();
        csi.set_inactive(true, &mut ready);
        csi.push(presence("a@x/1", "away"), &mut ready);
        csi.set_inactive(false, &mut ready);
        assert_eq!(ready.len(), 1);
        ready.clear();
        csi.set_inactive(true, &mut ready);
        csi.push(
            el("<iq xmlns='jabber:client' type='get' id='1'/>"),
            &mut ready,
        );
        assert_eq!(ready.len(), 1);
    }

    #[test]
    fn subscription_requests_do_not_wait() {
        assert!(!can_wait(&el(
            "<presence xmlns='jabber:client' type='subscribe'/>"
        )));
    }

    #[test]
    fn the_hold_is_bounded() {
        let mut csi = Csi::default();
        let mut ready = Vec::new();
        csi.set_inactive(true, &mut ready);
        for i in 0..MAX_HELD {
            csi.push(presence(&format!("u{i}@x/r"), "away"), &mut ready);
        }
        assert_eq!(ready.len(), MAX_HELD);
    }
}
