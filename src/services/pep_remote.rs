//! PEP for contacts on other servers (XEP-0163 §4.3 across federation): who, elsewhere, hears a
//! local account's events.
//!
//! A contact's resources on this server are in the sessions table; a contact elsewhere has no
//! session here. What this server does learn is the presence the contact's server sends to the
//! account's bare JID (RFC 6121 §4.4: broadcasts to subscribers, answers to the probes sent at
//! login). This registry keeps, per local account, the caps of each remote resource whose
//! available presence arrived from a contact subscribed to the account (as Prosody's
//! mod_pep: directed presence, a room's occupants and strangers are not recipients), so `pep::notify` can find those that asked for a node (`NODE+notify`,
//! resolved by `caps` with a disco#info query across the link) and `pep` can send them the last
//! items once their features are known. Unavailable presence forgets the resource.
//!
//! Owns: that registry, bounded per account and in total (a peer cannot grow it without
//! limit). Must not know: sessions, access rules (`pep` decides who may see what), routing.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::jid::{BareJid, FullJid};
use crate::services::caps::{self, NS_CAPS};
use crate::stanza::ns;
use crate::xml::Element;

/// Remote resources remembered per local account, and accounts with any.
const MAX_PER_ACCOUNT: usize = 512;
const MAX_ACCOUNTS: usize = 10_000;

/// What a presence from a remote resource changed.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// Available with caps not seen from this resource before: resolve them and send the last
    /// items. Carries the presence reduced to its `<c/>`, which is what `caps` reads.
    NewCaps(Element),
    /// Nothing that matters to PEP (same caps, no caps, or the resource went away).
    Nothing,
}

#[derive(Default)]
pub struct Registry {
    /// local account → remote resource → its presence reduced to the `<c/>` element.
    inner: Mutex<HashMap<BareJid, HashMap<FullJid, Element>>>,
}

impl Registry {
    /// Notes a presence stanza that `from` (on another server) sent to local account `owner`.
    pub fn presence(&self, owner: &BareJid, from: &FullJid, presence: &Element) -> Seen {
        let mut inner = lock(&self.inner);
        let available = presence.attr("type").is_none();
        let caps = presence.get_child("c", NS_CAPS).filter(|_| available);
        let Some(c) = caps else {
            forget(&mut inner, owner, from);
            return Seen::Nothing;
        };
        let reduced = Element::new("presence", ns::CLIENT).with_child(c.clone());
        let ver = |p: &Element| caps::caps_of(p).map(|(_, v, _)| v.to_string());
        if !inner.contains_key(owner) && inner.len() >= MAX_ACCOUNTS {
            return Seen::Nothing;
        }
        let resources = inner.entry(owner.clone()).or_default();
        if let Some(old) = resources.get(from) {
            if ver(old) == ver(&reduced) {
                return Seen::Nothing;
            }
        } else if resources.len() >= MAX_PER_ACCOUNT {
            return Seen::Nothing;
        }
        resources.insert(from.clone(), reduced.clone());
        Seen::NewCaps(reduced)
    }

    /// Forgets `from` for `owner` (its contact is no longer subscribed to `owner`).
    pub fn forget(&self, owner: &BareJid, from: &FullJid) {
        forget(&mut lock(&self.inner), owner, from);
    }

    /// The resources of `contact` that sent `owner` available presence, with that presence
    /// (reduced to its caps).
    pub fn of(&self, owner: &BareJid, contact: &BareJid) -> Vec<(FullJid, Element)> {
        let inner = lock(&self.inner);
        inner
            .get(owner)
            .map(|resources| {
                resources
                    .iter()
                    .filter(|(jid, _)| jid.to_bare() == *contact)
                    .map(|(jid, p)| (jid.clone(), p.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The local accounts `jid` sent available presence to.
    pub fn accounts_of(&self, jid: &FullJid) -> Vec<BareJid> {
        let inner = lock(&self.inner);
        inner
            .iter()
            .filter(|(_, resources)| resources.contains_key(jid))
            .map(|(owner, _)| owner.clone())
            .collect()
    }
}

fn forget(
    inner: &mut HashMap<BareJid, HashMap<FullJid, Element>>,
    owner: &BareJid,
    from: &FullJid,
) {
    if let Some(resources) = inner.get_mut(owner) {
        resources.remove(from);
        if resources.is_empty() {
            inner.remove(owner);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence(xml: &str) -> Element {
        Element::parse(xml).expect("test presence")
    }

    const CAPS_A: &str = "<presence xmlns='jabber:client'><status>hi</status>\
        <c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='A'/></presence>";
    const CAPS_B: &str = "<presence xmlns='jabber:client'>\
        <c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='B'/></presence>";

    #[test]
    fn remembers_caps_until_unavailable() {
        let r = Registry::default();
        let alice = BareJid::parse("alice@here").unwrap();
        let phone = FullJid::parse("bob@there/phone").unwrap();
        let pc = FullJid::parse("bob@there/pc").unwrap();
        let bob = phone.to_bare();

        let Seen::NewCaps(reduced) = r.presence(&alice, &phone, &presence(CAPS_A)) else {
            panic!("first caps are new");
        };
        assert!(
            reduced.get_child("status", ns::CLIENT).is_none(),
            "only the caps are kept"
        );
        // A status change with the same caps asks for nothing again.
        assert_eq!(r.presence(&alice, &phone, &presence(CAPS_A)), Seen::Nothing);
        assert!(matches!(
            r.presence(&alice, &phone, &presence(CAPS_B)),
            Seen::NewCaps(_)
        ));
        assert!(matches!(
            r.presence(&alice, &pc, &presence(CAPS_A)),
            Seen::NewCaps(_)
        ));
        assert_eq!(r.of(&alice, &bob).len(), 2);
        assert_eq!(r.accounts_of(&pc), vec![alice.clone()]);

        let gone = presence("<presence xmlns='jabber:client' type='unavailable'/>");
        assert_eq!(r.presence(&alice, &pc, &gone), Seen::Nothing);
        assert_eq!(r.of(&alice, &bob).len(), 1);
        // Available without caps: nothing to notify it of.
        let plain = presence("<presence xmlns='jabber:client'/>");
        assert_eq!(r.presence(&alice, &phone, &plain), Seen::Nothing);
        assert!(r.of(&alice, &bob).is_empty());
        assert!(r.accounts_of(&phone).is_empty());
    }

    #[test]
    fn a_peer_cannot_grow_it_without_bound() {
        let r = Registry::default();
        let alice = BareJid::parse("alice@here").unwrap();
        for i in 0..MAX_PER_ACCOUNT + 10 {
            let jid = FullJid::parse(&format!("bob@there/r{i}")).unwrap();
            r.presence(&alice, &jid, &presence(CAPS_A));
        }
        assert_eq!(
            r.of(&alice, &BareJid::parse("bob@there").unwrap()).len(),
            MAX_PER_ACCOUNT
        );
    }
}
