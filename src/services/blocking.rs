//! XEP-0191 Blocking Command: the blocklist (get, block, unblock, unblock-all), pushes to the
//! resources that asked for it, and enforcement on every stanza kind in both directions
//! (§3.5). Callers make one-line calls from the router, the message pipeline and presence;
//! the rules live here.
//!
//! The list is stored in the account's kv area (one JID per line) and cached in memory, since
//! every routed stanza consults it twice (sender's list and recipient's list).
//!
//! Enforcement follows Prosody's mod_blocklist, which clients are tested against:
//! - outbound (the user sends to a blocked JID): messages and iq get/set bounce with
//!   `not-acceptable` plus `<blocked xmlns='urn:xmpp:blocking:errors'/>`; presence, errors and
//!   iq results are dropped;
//! - inbound (a blocked JID sends to the user): iq get/set and chat/normal messages bounce with
//!   `service-unavailable` (the sender learns nothing it couldn't learn from a missing
//!   account); presence (probes included), other messages, errors and results are dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::jid::{BareJid, FullJid, Jid};
use crate::roster::subscription;
use crate::router::{bounce, deliver_reply};
use crate::server::Server;
use crate::services::{presence, roster};
use crate::sessions::{self, Outbound};
use crate::stanza::{self, ns, Condition, StanzaError};
use crate::xml::Element;

/// The kv key of an account's blocklist.
const KV_KEY: &str = "blocklist";
/// Most items one account may block (a sanity limit, far above real use).
const MAX_ITEMS: usize = 10_000;

/// Server-wide blocking state: the cache of loaded lists and the resources that requested the
/// blocklist (XEP-0191 §3.2: only those get pushes).
#[derive(Default)]
pub struct State {
    lists: Mutex<HashMap<BareJid, Arc<Vec<Jid>>>>,
    interested: Mutex<HashMap<BareJid, Vec<(FullJid, u64)>>>,
}

impl State {
    /// Forgets an account's cached list (after the account was deleted).
    pub fn forget(&self, owner: &BareJid) {
        lock(&self.lists).remove(owner);
        lock(&self.interested).remove(owner);
    }
}

/// Whether blocklist `item` covers `jid` (XEP-0191 §3.5 with the XEP-0016 §2.1 matching
/// rules): a domain blocks the domain and everything on it, a bare JID blocks every resource,
/// a full JID only itself.
pub fn matches(item: &Jid, jid: &Jid) -> bool {
    if item.domain() != jid.domain() {
        return false;
    }
    match (item.node(), item.resource()) {
        (None, None) => true,
        (None, Some(r)) => jid.node().is_none() && jid.resource() == Some(r),
        (Some(n), None) => jid.node() == Some(n),
        (Some(n), Some(r)) => jid.node() == Some(n) && jid.resource() == Some(r),
    }
}

/// Whether `owner`'s blocklist covers `jid`.
pub async fn is_blocked(srv: &Server, owner: &BareJid, jid: &Jid) -> bool {
    if !srv.is_local_user(owner) {
        return false;
    }
    list(srv, owner).await.iter().any(|item| matches(item, jid))
}

/// The iq handler for `urn:xmpp:blocking` (addressed to the user's own account).
pub async fn handle(srv: &Server, from: &FullJid, iq: Element) {
    let owner = from.to_bare();
    let Some(payload) = iq.first_child() else {
        return bounce(srv, &iq, Condition::BadRequest.into());
    };
    match (iq.attr("type"), payload.name()) {
        (Some("get"), "blocklist") => {
            if let Some(r) = srv.sessions.resource(from) {
                let mut map = lock(&srv.blocking.interested);
                let list = map.entry(owner.clone()).or_default();
                // Forget resources that are gone, so the list can't grow with every login.
                list.retain(|(j, c)| {
                    j != from && srv.sessions.resource(j).is_some_and(|r| r.conn == *c)
                });
                list.push((from.clone(), r.conn));
            }
            let mut q = Element::new("blocklist", ns::BLOCKING);
            for item in list(srv, &owner).await.iter() {
                q.push_child(Element::new("item", ns::BLOCKING).with_attr("jid", item.as_str()));
            }
            deliver_reply(srv, stanza::iq_result(&iq, Some(q)));
        }
        (Some("set"), "block" | "unblock") => {
            let block = payload.name() == "block";
            let mut items = Vec::new();
            for item in payload.children().filter(|c| c.is("item", ns::BLOCKING)) {
                match item.attr("jid").map(Jid::parse) {
                    Some(Ok(j)) => items.push(j),
                    _ => return bounce(srv, &iq, Condition::JidMalformed.into()),
                }
            }
            // §3.3: a block without items is a bad request; §3.4: an unblock without items
            // unblocks everything.
            if block && items.is_empty() {
                return bounce(srv, &iq, Condition::BadRequest.into());
            }
            match change(srv, &owner, block, items.clone()).await {
                Ok(()) => {
                    deliver_reply(srv, stanza::iq_result(&iq, None));
                    push(srv, &owner, block, &items);
                }
                Err(e) => bounce(srv, &iq, e),
            }
        }
        _ => bounce(srv, &iq, Condition::BadRequest.into()),
    }
}

/// Sender side (called by the router for every stanza a local user sends): a stanza to a JID
/// the sender blocked is refused. `None` means it was consumed.
pub async fn outbound(srv: &Server, from: &FullJid, stanza: Element) -> Option<Element> {
    let Ok(Some(to)) = stanza::jid_attr(&stanza, "to") else {
        return Some(stanza);
    };
    // The user's own account and server are never blocked (that would only break the client).
    let own =
        to.to_bare() == from.to_bare() || (to.node().is_none() && srv.is_local_domain(to.domain()));
    if own || !is_blocked(srv, &from.to_bare(), &to).await {
        return Some(stanza);
    }
    let answerable = matches!(stanza.name(), "message" | "iq") && !stanza::must_not_answer(&stanza);
    if answerable {
        let mut reply = stanza::error_reply(&stanza, &Condition::NotAcceptable.into());
        if let Some(err) = reply.get_child_mut("error", ns::CLIENT) {
            err.push_child(Element::new("blocked", ns::BLOCKING_ERRORS));
        }
        deliver_reply(srv, reply);
    }
    log::debug!(
        "blocking: {from} sent a {} to a JID it blocked",
        stanza.name()
    );
    None
}

/// Recipient side for messages and iq addressed to local account `to`: a stanza from a JID
/// that `to` blocked is refused. `None` means it was consumed.
pub async fn inbound(srv: &Server, to: &BareJid, stanza: Element) -> Option<Element> {
    let Ok(Some(from)) = stanza::jid_attr(&stanza, "from") else {
        return Some(stanza);
    };
    if from.to_bare() == *to || !is_blocked(srv, to, &from).await {
        return Some(stanza);
    }
    let bounce_it = match stanza.name() {
        "iq" => matches!(stanza.attr("type"), Some("get" | "set")),
        "message" => matches!(stanza::stanza_type(&stanza), "normal" | "chat"),
        _ => false,
    };
    if bounce_it {
        bounce(srv, &stanza, Condition::ServiceUnavailable.into());
    }
    None
}

/// Presence (any type, probes included) from `from` to local account `to` is dropped when
/// either side blocked the other.
pub async fn presence_blocked(srv: &Server, from: &Jid, to: &BareJid) -> bool {
    let from_bare = from.to_bare();
    if from_bare == *to {
        return false;
    }
    is_blocked(srv, to, from).await || is_blocked(srv, &from_bare, &Jid::from(to.clone())).await
}

// ---------------------------------------------------------------------------------------------

async fn list(srv: &Server, owner: &BareJid) -> Arc<Vec<Jid>> {
    if let Some(l) = lock(&srv.blocking.lists).get(owner) {
        return l.clone();
    }
    let loaded = match srv.store.kv_get(owner.as_ref(), KV_KEY).await {
        Ok(Some(bytes)) => Arc::new(decode(&bytes)),
        Ok(None) => Arc::new(Vec::new()),
        Err(e) => {
            // Not cached: the next stanza tries again.
            log::error!("store: cannot read the blocklist of {owner}: {e}");
            return Arc::new(Vec::new());
        }
    };
    // Only real accounts are cached, so a flood of stanzas to made-up local JIDs can't grow
    // the cache; it is bounded by the number of accounts. Deleting an account forgets it
    // (`Server::kick_account`).
    let exists = srv.sessions.is_online(owner)
        || matches!(srv.store.account(owner.as_ref()).await, Ok(Some(_)));
    if exists {
        lock(&srv.blocking.lists).insert(owner.clone(), loaded.clone());
    }
    loaded
}

async fn change(
    srv: &Server,
    owner: &BareJid,
    block: bool,
    items: Vec<Jid>,
) -> Result<(), StanzaError> {
    let old = list(srv, owner).await;
    let mut new: Vec<Jid> = old.as_ref().clone();
    let added: Vec<Jid> = if block {
        let added: Vec<Jid> =
            items
                .into_iter()
                .filter(|j| !new.contains(j))
                .fold(Vec::new(), |mut acc, j| {
                    if !acc.contains(&j) {
                        acc.push(j);
                    }
                    acc
                });
        new.extend(added.iter().cloned());
        added
    } else if items.is_empty() {
        new.clear();
        Vec::new()
    } else {
        new.retain(|j| !items.contains(j));
        Vec::new()
    };
    if new.len() > MAX_ITEMS {
        return Err(
            StanzaError::new(Condition::ResourceConstraint).with_text("the blocklist is too long")
        );
    }
    let unblocked: Vec<Jid> = old.iter().filter(|j| !new.contains(j)).cloned().collect();
    // §3.3: contacts that are about to be blocked see the user go offline first (afterwards
    // the presence would be blocked itself).
    let contacts = presence_contacts(srv, owner).await;
    for (c, sees_owner, _) in &contacts {
        let cj = Jid::from(c.clone());
        let newly =
            added.iter().any(|item| matches(item, &cj)) && !old.iter().any(|i| matches(i, &cj));
        if *sees_owner && newly {
            presence::send_unavailable_to(srv, owner, c);
        }
    }
    let value = (!new.is_empty()).then(|| encode(&new));
    srv.store
        .kv_set(owner.as_ref(), KV_KEY, value)
        .await
        .map_err(roster::store_error)?;
    lock(&srv.blocking.lists).insert(owner.clone(), Arc::new(new.clone()));
    // §3.4: presence flows again between the user and unblocked contacts: the contact gets
    // the user's current presence, the user's resources probe the contact.
    let available: Vec<FullJid> = srv
        .sessions
        .resources(owner)
        .into_iter()
        .filter(|r| r.available)
        .map(|r| r.jid)
        .collect();
    for (c, sees_owner, owner_sees) in &contacts {
        let cj = Jid::from(c.clone());
        let was = unblocked.iter().any(|item| matches(item, &cj));
        if !was || new.iter().any(|i| matches(i, &cj)) {
            continue;
        }
        if *sees_owner {
            presence::send_current_to(srv, owner, c);
        }
        if *owner_sees {
            for me in &available {
                presence::probe(srv, me, c).await;
            }
        }
    }
    Ok(())
}

/// Roster contacts with a presence subscription either way: (contact, the contact receives
/// the owner's presence, the owner receives the contact's).
async fn presence_contacts(srv: &Server, owner: &BareJid) -> Vec<(BareJid, bool, bool)> {
    match srv.store.roster(owner.as_ref()).await {
        Ok((_, items)) => items
            .iter()
            .filter_map(|(c, item)| {
                let state = roster::state_of(Some(item), false);
                let (to, from) = (
                    subscription::presence_to(state),
                    subscription::presence_from(state),
                );
                if !(to || from) {
                    return None;
                }
                Some((BareJid::parse(c).ok()?, to, from))
            })
            .collect(),
        Err(e) => {
            log::error!("store: cannot read the roster of {owner}: {e}");
            Vec::new()
        }
    }
}

/// §3.3 / §3.4: the change goes to every resource that requested the blocklist.
fn push(srv: &Server, owner: &BareJid, block: bool, items: &[Jid]) {
    let mut interested = lock(&srv.blocking.interested);
    let Some(list) = interested.get_mut(owner) else {
        return;
    };
    // Resources that went away (or whose name a newer connection took) get nothing.
    list.retain(|(jid, conn)| srv.sessions.resource(jid).is_some_and(|r| r.conn == *conn));
    for (jid, _) in list.iter() {
        let Some(r) = srv.sessions.resource(jid) else {
            continue;
        };
        let mut payload = Element::new(if block { "block" } else { "unblock" }, ns::BLOCKING);
        for item in items {
            payload.push_child(Element::new("item", ns::BLOCKING).with_attr("jid", item.as_str()));
        }
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_attr("id", format!("block-{}", crate::session::c2s::new_id()))
            .with_attr("to", jid.to_string())
            .with_child(payload);
        sessions::send(&r, Outbound::stanza(iq));
    }
}

fn decode(bytes: &[u8]) -> Vec<Jid> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter_map(|l| Jid::parse(l).ok())
        .collect()
}

fn encode(list: &[Jid]) -> Vec<u8> {
    let mut out = String::new();
    for j in list {
        out.push_str(j.as_str());
        out.push('\n');
    }
    out.into_bytes()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(item: &str, jid: &str) -> bool {
        matches(&Jid::parse(item).unwrap(), &Jid::parse(jid).unwrap())
    }

    #[test]
    fn matching_rules() {
        // A domain blocks the domain, its users and their resources.
        assert!(m("evil.example", "evil.example"));
        assert!(m("evil.example", "evil.example/res"));
        assert!(m("evil.example", "troll@evil.example"));
        assert!(m("evil.example", "troll@evil.example/phone"));
        assert!(!m("evil.example", "troll@good.example"));
        assert!(!m("evil.example", "sub.evil.example"));
        // A bare JID blocks every resource of it, nothing else.
        assert!(m("troll@x.example", "troll@x.example"));
        assert!(m("troll@x.example", "troll@x.example/phone"));
        assert!(!m("troll@x.example", "other@x.example"));
        assert!(!m("troll@x.example", "x.example"));
        // A full JID blocks only itself.
        assert!(m("troll@x.example/phone", "troll@x.example/phone"));
        assert!(!m("troll@x.example/phone", "troll@x.example/laptop"));
        assert!(!m("troll@x.example/phone", "troll@x.example"));
        // domain/resource.
        assert!(m("x.example/r", "x.example/r"));
        assert!(!m("x.example/r", "u@x.example/r"));
    }

    #[test]
    fn encoding_round_trips_and_skips_junk() {
        let list = vec![
            Jid::parse("a@x.example").unwrap(),
            Jid::parse("x.example/r").unwrap(),
        ];
        assert_eq!(decode(&encode(&list)), list);
        assert_eq!(decode(b"a@x.example\n@@bad\n").len(), 1);
    }
}
