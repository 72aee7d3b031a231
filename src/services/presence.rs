//! RFC 6121 §3 and §4: presence subscriptions and presence exchange. Subscription stanzas run
//! through the pure state machine in `roster::subscription` on both sides (outbound at the
//! sender's account, inbound at the recipient's); availability is broadcast to contacts that
//! may see it, probes are answered for contacts that may ask.
//!
//! "Route to the contact's server" is a direct call to the inbound half for local accounts;
//! stanzas for components and other domains go out through `router::to_elsewhere` (presence
//! is never bounced by us, RFC 6121 §4.3.2 and §3.1.3 leave that to the sender's patience).

use std::collections::HashSet;

use crate::jid::{BareJid, FullJid, Jid};
use crate::roster::subscription::{self, Kind as SubKind, Outcome, PresenceAction, SubState};
use crate::router;
use crate::server::Server;
use crate::services::{iq::account_exists, pep, roster, vcard};
use crate::sessions::{self, Outbound};
use crate::stanza::{self, ns, Condition};
use crate::store::RosterItem;
use crate::xml::Element;

/// Per-session presence bookkeeping that the router's table doesn't need.
#[derive(Default)]
pub struct SessionPresence {
    pub available: bool,
    /// Entities that got directed presence and must hear `unavailable` at the end (§4.6.3).
    pub directed: HashSet<Jid>,
    pub offline_delivered: bool,
    /// Bind 2 clients sync from the archive (XEP-0386 §3): offline copies of archived
    /// messages are dropped instead of delivered.
    pub archived_offline_is_redundant: bool,
}

/// What the session must do after an outbound presence.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    Nothing,
    /// This was initial presence: deliver pending subscription requests.
    Initial,
}

impl SessionPresence {
    /// Offline messages are due the first time in a session the resource is available with a
    /// non-negative priority (XEP-0160 §3: a negative priority says "don't send me messages").
    /// Returns true once per such transition; the caller then delivers them.
    pub fn offline_due(&mut self, srv: &Server, me: &FullJid) -> bool {
        let priority = srv.sessions.resource(me).map(|r| r.priority).unwrap_or(0);
        if !self.available || priority < 0 {
            // Messages stored meanwhile are due again when the resource comes back.
            self.offline_delivered = false;
            return false;
        }
        !std::mem::replace(&mut self.offline_delivered, true)
    }
}

/// A presence stanza sent by the user's session (`from` already stamped with `me`).
pub async fn outbound(
    srv: &Server,
    me: &FullJid,
    conn: u64,
    state: &mut SessionPresence,
    stanza: Element,
) -> After {
    let to = match stanza::jid_attr(&stanza, "to") {
        Ok(to) => to,
        Err(_) => return After::Nothing,
    };
    let typ = stanza.attr("type").map(str::to_string);
    match (typ.as_deref(), to) {
        (None | Some("unavailable"), None) => broadcast(srv, me, conn, state, stanza).await,
        (Some("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed"), Some(_))
            if srv.config.roster.http_url.is_some() =>
        {
            // `[roster] source = "http"`: the roster service owns subscriptions too.
            router::bounce(srv, &stanza, Condition::NotAllowed.into());
            After::Nothing
        }
        (Some(t @ ("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed")), Some(to)) => {
            if let Some(kind) = SubKind::parse(t) {
                subscription_out(srv, &me.to_bare(), &to.to_bare(), kind).await;
            }
            After::Nothing
        }
        // §4.3: clients don't probe; the server does that for them.
        (Some("probe"), _) => After::Nothing,
        (None | Some("unavailable") | Some("error"), Some(to)) => {
            if to.to_bare() != me.to_bare() {
                if typ.is_none() {
                    state.directed.insert(to.clone());
                } else if typ.as_deref() == Some("unavailable") {
                    state.directed.remove(&to);
                }
            }
            deliver(srv, &to, stanza).await;
            After::Nothing
        }
        (Some(_), _) => {
            router::bounce(srv, &stanza, Condition::BadRequest.into());
            After::Nothing
        }
    }
}

/// §4.2 / §4.4 / §4.5: availability without `to` goes to the user's own available resources
/// and to every contact with a `from` or `both` subscription; initial presence also probes the
/// contacts the user is subscribed to.
async fn broadcast(
    srv: &Server,
    me: &FullJid,
    conn: u64,
    state: &mut SessionPresence,
    stanza: Element,
) -> After {
    let available = stanza.attr("type").is_none();
    let priority = stanza
        .get_child("priority", ns::CLIENT)
        .and_then(|p| p.text().trim().parse::<i8>().ok())
        .unwrap_or(0);
    let was_available = state.available;
    if !available && !was_available {
        return After::Nothing;
    }
    state.available = available;
    let stanza = if available {
        vcard::stamp_presence(srv, &me.to_bare(), stanza).await
    } else {
        stanza
    };
    let old = srv
        .sessions
        .update(me, conn, |r| {
            r.available = available;
            r.priority = priority;
            std::mem::replace(&mut r.presence, available.then(|| stanza.clone()))
        })
        .flatten();
    let bare = me.to_bare();
    let contacts = match srv.store.roster(bare.as_ref()).await {
        Ok((_, items)) => items,
        Err(e) => {
            log::error!("store: cannot read roster of {bare} for a presence broadcast: {e}");
            Vec::new()
        }
    };
    for (contact, item) in &contacts {
        if subscription::presence_to(roster::state_of(Some(item), false)) {
            if let Ok(c) = Jid::parse(contact) {
                let mut p = stanza.clone();
                p.set_attr("to", contact.as_str());
                state.directed.remove(&c);
                deliver(srv, &c, p).await;
            }
        }
    }
    // Own resources hear it too (§4.2.2), the sender included; a resource of the same name
    // bound by a newer connection is someone else and only hears it if available.
    let own = |r: &&crate::sessions::Resource| {
        if r.jid == *me {
            r.conn == conn
        } else {
            r.available
        }
    };
    for r in srv.sessions.resources(&bare).iter().filter(own) {
        let mut p = stanza.clone();
        p.set_attr("to", r.jid.to_string());
        sessions::send(r, Outbound::stanza(p));
    }
    if available {
        pep::presence_available(srv, me, old.as_ref(), &stanza).await;
    }
    if !available {
        for to in state.directed.drain() {
            let mut p = stanza.clone();
            p.set_attr("to", to.to_string());
            deliver(srv, &to, p).await;
        }
        return After::Nothing;
    }
    if was_available {
        return After::Nothing;
    }
    // Initial presence: probe the contacts whose presence we receive (§4.2.2).
    for (contact, item) in &contacts {
        if subscription::presence_from(roster::state_of(Some(item), false)) {
            if let Ok(c) = BareJid::parse(contact) {
                probe(srv, me, &c).await;
            }
        }
    }
    After::Initial
}

/// Sends `<presence type='unavailable'/>` from each of the user's resources on disconnect.
pub async fn disconnected(srv: &Server, me: &FullJid, conn: u64, state: &mut SessionPresence) {
    if state.available {
        let p = Element::new("presence", ns::CLIENT)
            .with_attr("type", "unavailable")
            .with_attr("from", me.to_string());
        broadcast(srv, me, conn, state, p).await;
    }
}

/// A presence stanza arriving for a local account (`to` is the bare JID, `full` set when the
/// stanza was addressed to a resource).
pub async fn inbound(srv: &Server, to: &BareJid, full: Option<&FullJid>, stanza: Element) {
    let Ok(Some(from)) = stanza::jid_attr(&stanza, "from") else {
        return;
    };
    if crate::services::blocking::presence_blocked(srv, &from, to).await {
        return;
    }
    match stanza.attr("type") {
        Some(t @ ("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed")) => {
            if let Some(kind) = SubKind::parse(t) {
                subscription_in(srv, to, &from.to_bare(), kind).await;
            }
        }
        Some("probe") => answer_probe(srv, to, &from).await,
        _ => {
            // A contact's resource elsewhere (its broadcast to the bare JID): PEP events reach
            // it through federation.
            if full.is_none() && !srv.is_local_domain(from.domain()) {
                if let Ok(from) = from.clone().try_into_full() {
                    crate::services::pep::remote_presence(srv, to, &from, &stanza).await;
                }
            }
            deliver_local_sync(srv, to, full, stanza)
        }
    }
}

/// Delivers presence to a JID, local or not.
async fn deliver(srv: &Server, to: &Jid, stanza: Element) {
    if crate::services::muc::is_service(srv, to.domain()) {
        if let Ok(Some(from)) = stanza::jid_attr(&stanza, "from") {
            Box::pin(crate::services::muc::handle(srv, &from, stanza)).await;
        }
        return;
    }
    if !srv.is_local_domain(to.domain()) {
        router::to_elsewhere(srv, stanza);
        return;
    }
    if to.node().is_none() {
        return;
    }
    let full = to.clone().try_into_full().ok();
    inbound(srv, &to.to_bare(), full.as_ref(), stanza).await;
}

/// The user's server processing an outbound subscription stanza (RFC 6121 A.2).
pub async fn subscription_out(srv: &Server, owner: &BareJid, contact: &BareJid, kind: SubKind) {
    if owner == contact {
        return;
    }
    let out = {
        let _roster = srv.lock_account(owner).await;
        let Some((item, state)) = load_state(srv, owner, contact).await else {
            return;
        };
        let out = subscription::outbound(state, kind);
        save_state(srv, owner, contact, item, state, &out, None).await;
        out
    };
    if out.send_presence == PresenceAction::Unavailable {
        send_unavailable_to(srv, owner, contact);
    }
    if out.route {
        send_subscription(srv, owner, contact, kind).await;
    }
    if out.send_presence == PresenceAction::Current {
        send_current_to(srv, owner, contact);
        pep::subscription_approved(srv, owner, contact).await;
    }
}

/// The contact's server processing an inbound subscription stanza (RFC 6121 A.3).
pub async fn subscription_in(srv: &Server, owner: &BareJid, contact: &BareJid, kind: SubKind) {
    if !account_exists(srv, owner).await {
        // §3.1.3: a request to an account that doesn't exist is answered `unsubscribed`.
        if kind == SubKind::Subscribe && srv.is_local_user(contact) {
            Box::pin(subscription_in(srv, contact, owner, SubKind::Unsubscribed)).await;
        }
        return;
    }
    let stanza = subscription_stanza(contact, owner, kind);
    let out = {
        let _roster = srv.lock_account(owner).await;
        let Some((item, state)) = load_state(srv, owner, contact).await else {
            return;
        };
        let out = subscription::inbound(state, kind);
        let pending = (kind == SubKind::Subscribe).then(|| stanza.to_bytes_in(""));
        save_state(srv, owner, contact, item, state, &out, pending).await;
        out
    };
    if out.route {
        for r in srv.sessions.resources(owner).iter().filter(|r| r.available) {
            sessions::send(r, Outbound::stanza(stanza.clone()));
        }
    }
    if out.send_presence == PresenceAction::Unavailable {
        send_unavailable_to(srv, owner, contact);
    }
    if let Some(reply) = out.auto_reply {
        // Bounded recursion: an inbound `subscribed` never auto-replies.
        Box::pin(send_subscription(srv, owner, contact, reply)).await;
    }
    if out.send_presence == PresenceAction::Current {
        send_current_to(srv, owner, contact);
    }
}

/// Routes a subscription stanza from `from` (bare, §3.1.2) to `to`.
pub async fn send_subscription(srv: &Server, from: &BareJid, to: &BareJid, kind: SubKind) {
    if crate::services::blocking::presence_blocked(srv, &from.clone().into(), to).await {
        return;
    }
    if srv.is_local_domain(to.domain()) {
        if to.node().is_some() {
            Box::pin(subscription_in(srv, to, from, kind)).await;
        }
    } else {
        router::to_elsewhere(srv, subscription_stanza(from, to, kind));
    }
}

fn subscription_stanza(from: &BareJid, to: &BareJid, kind: SubKind) -> Element {
    Element::new("presence", ns::CLIENT)
        .with_attr("type", kind.as_str())
        .with_attr("from", from.to_string())
        .with_attr("to", to.to_string())
}

/// Sends the current presence of each of the owner's available resources to `contact`.
pub fn send_current_to(srv: &Server, owner: &BareJid, contact: &BareJid) {
    for r in srv.sessions.resources(owner).iter().filter(|r| r.available) {
        if let Some(p) = &r.presence {
            let mut p = p.clone();
            p.set_attr("from", r.jid.to_string());
            p.set_attr("to", contact.to_string());
            deliver_local_sync(srv, contact, None, p);
        }
    }
}

/// Sends `unavailable` from each of the owner's available resources to `contact`.
pub fn send_unavailable_to(srv: &Server, owner: &BareJid, contact: &BareJid) {
    for r in srv.sessions.resources(owner).iter().filter(|r| r.available) {
        let p = Element::new("presence", ns::CLIENT)
            .with_attr("type", "unavailable")
            .with_attr("from", r.jid.to_string())
            .with_attr("to", contact.to_string());
        deliver_local_sync(srv, contact, None, p);
    }
}

/// Availability presence to a local account: to the addressed resource if it is bound, else
/// to every available resource. No store access needed.
fn deliver_local_sync(srv: &Server, to: &BareJid, full: Option<&FullJid>, p: Element) {
    if !srv.is_local_user(to) {
        // Components and other servers handle presence for their own JIDs.
        router::to_elsewhere(srv, p);
        return;
    }
    match full {
        Some(f) => {
            if let Some(r) = srv.sessions.resource(f) {
                sessions::send(&r, Outbound::stanza(p));
            }
        }
        None => {
            for r in srv.sessions.resources(to).iter().filter(|r| r.available) {
                sessions::send(r, Outbound::stanza(p.clone()));
            }
        }
    }
}

/// §4.3.2: a probe from `from` for `owner`'s presence is answered with the presence of each
/// available resource, if `owner`'s roster gives `from` a `from` or `both` subscription.
async fn answer_probe(srv: &Server, owner: &BareJid, from: &Jid) {
    if !srv.is_local_user(owner) {
        return;
    }
    let from_bare = from.to_bare();
    let allowed = from_bare == *owner
        || match srv
            .store
            .roster_item(owner.as_ref(), from_bare.as_ref())
            .await
        {
            Ok(item) => subscription::presence_to(roster::state_of(item.as_ref(), false)),
            Err(e) => {
                log::error!("store: cannot read roster of {owner} to answer a probe: {e}");
                false
            }
        };
    if !allowed {
        return;
    }
    let full = from.clone().try_into_full().ok();
    for r in srv.sessions.resources(owner).iter().filter(|r| r.available) {
        if let Some(p) = &r.presence {
            let mut p = p.clone();
            p.set_attr("from", r.jid.to_string());
            p.set_attr("to", from.to_string());
            deliver_local_sync(srv, &from_bare, full.as_ref(), p);
        }
    }
}

/// The user (`me`) probes a contact after initial presence (§4.2.2).
pub async fn probe(srv: &Server, me: &FullJid, contact: &BareJid) {
    if crate::services::blocking::presence_blocked(srv, &me.clone().into(), contact).await {
        return;
    }
    if srv.is_local_user(contact) {
        answer_probe(srv, contact, &Jid::from(me.clone())).await;
    } else {
        let p = Element::new("presence", ns::CLIENT)
            .with_attr("type", "probe")
            .with_attr("from", me.to_bare().to_string())
            .with_attr("to", contact.to_string());
        router::to_elsewhere(srv, p);
    }
}

async fn load_state(
    srv: &Server,
    owner: &BareJid,
    contact: &BareJid,
) -> Option<(Option<RosterItem>, SubState)> {
    let (o, c) = (owner.to_string(), contact.to_string());
    let item = match srv.store.roster_item(&o, &c).await {
        Ok(i) => i,
        Err(e) => {
            log::error!("store: cannot read roster item {o} -> {c}: {e}");
            return None;
        }
    };
    let pending_in = match srv.store.pending_in(&o).await {
        Ok(list) => list.iter().any(|(j, _)| *j == c),
        Err(e) => {
            log::error!("store: cannot read pending requests of {o}: {e}");
            return None;
        }
    };
    let state = roster::state_of(item.as_ref(), pending_in);
    Some((item, state))
}

/// Stores the outcome: the pending-in record, and the roster item (with a push) when it
/// exists or is created.
async fn save_state(
    srv: &Server,
    owner: &BareJid,
    contact: &BareJid,
    item: Option<RosterItem>,
    old: SubState,
    out: &Outcome,
    pending_stanza: Option<Vec<u8>>,
) {
    let (o, c) = (owner.to_string(), contact.to_string());
    let new = out.new_state;
    if new.pending_in != old.pending_in {
        let value = if new.pending_in { pending_stanza } else { None };
        if let Err(e) = srv.store.set_pending_in(&o, &c, value).await {
            log::error!("store: cannot record subscription request {c} -> {o}: {e}");
        }
    }
    let in_roster = item.is_some() || out.create_item;
    let stored = roster::with_state(item.clone(), new);
    // A push announces a changed item; the pending-in flag lives outside the item, so a
    // change to it alone is no roster change (and must not bump the version).
    if in_roster && item.as_ref() != Some(&stored) {
        match srv
            .store
            .set_roster_item(&o, &c, Some(stored.clone()))
            .await
        {
            Ok(ver) => roster::push(srv, owner, &c, Some(&stored), ver),
            Err(e) => log::error!("store: cannot store roster item {o} -> {c}: {e}"),
        }
    }
}

/// After initial presence: the subscription requests that waited for the user (§3.1.3).
pub async fn pending_requests(srv: &Server, me: &FullJid) -> Vec<Element> {
    match srv.store.pending_in(me.to_bare().as_ref()).await {
        Ok(list) => list
            .into_iter()
            .filter_map(|(_, bytes)| {
                std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(|s| Element::parse(s).ok())
            })
            .collect(),
        Err(e) => {
            log::error!(
                "store: cannot read pending requests of {}: {e}",
                me.to_bare()
            );
            Vec::new()
        }
    }
}
