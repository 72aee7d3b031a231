//! RFC 6121 §2 roster management: get (with §2.6 versioning), set, remove, and pushes to the
//! account's interested resources. Subscription states themselves change only through
//! presence (`services::presence`), which calls back here to store items and push them.

use crate::jid::{BareJid, FullJid, Jid};
use crate::roster::subscription::{self, Kind as SubKind, PresenceAction, Sub, SubState};
use crate::router::{bounce, deliver_reply};
use crate::server::Server;
use crate::services::presence;
use crate::sessions::{self, Outbound};
use crate::stanza::{self, ns, Condition, StanzaError};
use crate::store::{RosterItem, Subscription};
use crate::xml::Element;

/// Longest item name and group name accepted, in bytes (Prosody-like sanity limits).
const MAX_NAME: usize = 1023;
const MAX_GROUPS: usize = 64;

pub async fn handle(srv: &Server, from: &FullJid, iq: Element) {
    let Some(query) = iq.get_child("query", ns::ROSTER) else {
        return bounce(srv, &iq, Condition::BadRequest.into());
    };
    let result = match iq.attr("type") {
        Some("get") => get(srv, from, &iq, query).await,
        Some("set") => set(srv, from, query).await.map(|_| None),
        _ => Err(Condition::BadRequest.into()),
    };
    match result {
        Ok(payload) => deliver_reply(srv, stanza::iq_result(&iq, payload)),
        Err(e) => bounce(srv, &iq, e),
    }
}

async fn get(
    srv: &Server,
    from: &FullJid,
    iq: &Element,
    query: &Element,
) -> Result<Option<Element>, StanzaError> {
    if let Some(url) = &srv.config.roster.http_url {
        let owner = from.to_bare();
        if let Err(e) = super::http_roster::refresh(srv, url, &owner).await {
            log::warn!("http roster: {owner}: keeping the stored roster: {e}");
        }
    }
    let owner = from.to_bare().to_string();
    let (ver, items) = srv.store.roster(&owner).await.map_err(store_error)?;
    srv.sessions.set_interested(from);
    let ver = ver.to_string();
    // §2.6.3: an unchanged roster is answered with an empty result; changes arrive as pushes.
    if query.attr("ver") == Some(ver.as_str()) {
        return Ok(None);
    }
    let _ = iq;
    let mut q = Element::new("query", ns::ROSTER).with_attr("ver", ver);
    for (contact, item) in &items {
        q.push_child(item_element(contact, Some(item)));
    }
    Ok(Some(q))
}

async fn set(srv: &Server, from: &FullJid, query: &Element) -> Result<(), StanzaError> {
    if srv.config.roster.http_url.is_some() {
        // As Prosody's mod_http_roster_admin: the service owns the roster.
        return Err(StanzaError::new(Condition::NotAllowed)
            .with_text("contact lists are managed by the server's administrator"));
    }
    let mut items = query.children().filter(|c| c.is("item", ns::ROSTER));
    let (Some(item), None) = (items.next(), items.next()) else {
        return Err(StanzaError::new(Condition::BadRequest)
            .with_text("a roster set carries exactly one item"));
    };
    let contact = match item.attr("jid").map(Jid::parse) {
        Some(Ok(j)) if j.resource().is_none() => j.to_bare(),
        Some(Ok(_)) => {
            return Err(
                StanzaError::new(Condition::BadRequest).with_text("roster items are bare JIDs")
            )
        }
        _ => return Err(Condition::JidMalformed.into()),
    };
    let owner = from.to_bare();
    if contact == owner {
        return Err(StanzaError::new(Condition::NotAllowed).with_text("you cannot add yourself"));
    }
    if item.attr("subscription") == Some("remove") {
        return remove(srv, &owner, &contact).await;
    }
    let name = item
        .attr("name")
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    if name.as_ref().is_some_and(|n| n.len() > MAX_NAME) {
        return Err(Condition::NotAcceptable.into());
    }
    let mut groups: Vec<String> = Vec::new();
    for g in item.children().filter(|c| c.is("group", ns::ROSTER)) {
        let g = g.text();
        // §2.3.3: empty group names are not acceptable, duplicates are a bad request.
        if g.is_empty() || g.len() > MAX_NAME {
            return Err(Condition::NotAcceptable.into());
        }
        if groups.contains(&g) {
            return Err(Condition::BadRequest.into());
        }
        groups.push(g);
    }
    if groups.len() > MAX_GROUPS {
        return Err(Condition::PolicyViolation.into());
    }
    let (o, c) = (owner.to_string(), contact.to_string());
    // Name and groups change here, subscription state in presence: one at a time.
    let _roster = srv.lock_account(&owner).await;
    let existing = srv.store.roster_item(&o, &c).await.map_err(store_error)?;
    let new = RosterItem {
        name,
        groups,
        ..existing.unwrap_or_else(empty_item)
    };
    let ver = srv
        .store
        .set_roster_item(&o, &c, Some(new.clone()))
        .await
        .map_err(store_error)?;
    push(srv, &owner, &c, Some(&new), ver);
    Ok(())
}

/// §2.5.2: removing an item cancels the subscriptions in both directions first.
async fn remove(srv: &Server, owner: &BareJid, contact: &BareJid) -> Result<(), StanzaError> {
    let (o, c) = (owner.to_string(), contact.to_string());
    let Some(item) = srv.store.roster_item(&o, &c).await.map_err(store_error)? else {
        return Err(Condition::ItemNotFound.into());
    };
    let pending_in = srv
        .store
        .pending_in(&o)
        .await
        .map_err(store_error)?
        .iter()
        .any(|(j, _)| *j == c);
    let removal = subscription::remove_item(state_of(Some(&item), pending_in));
    if removal.unsubscribe {
        presence::send_subscription(srv, owner, contact, SubKind::Unsubscribe).await;
    }
    if removal.send_presence == PresenceAction::Unavailable {
        presence::send_unavailable_to(srv, owner, contact);
    }
    if removal.unsubscribed {
        presence::send_subscription(srv, owner, contact, SubKind::Unsubscribed).await;
    }
    let _roster = srv.lock_account(owner).await;
    if pending_in {
        srv.store
            .set_pending_in(&o, &c, None)
            .await
            .map_err(store_error)?;
    }
    let ver = srv
        .store
        .set_roster_item(&o, &c, None)
        .await
        .map_err(store_error)?;
    push(srv, owner, &c, None, ver);
    Ok(())
}

/// Sends a roster push (§2.1.6) to every interested resource of `owner`.
pub fn push(srv: &Server, owner: &BareJid, contact: &str, item: Option<&RosterItem>, ver: u64) {
    for r in srv
        .sessions
        .resources(owner)
        .iter()
        .filter(|r| r.interested)
    {
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_attr("id", format!("push{ver}"))
            .with_attr("to", r.jid.to_string())
            .with_child(
                Element::new("query", ns::ROSTER)
                    .with_attr("ver", ver.to_string())
                    .with_child(item_element(contact, item)),
            );
        sessions::send(r, Outbound::stanza(iq));
    }
}

/// `<item/>` for a stored item; `None` renders the `subscription='remove'` of a push.
pub fn item_element(contact: &str, item: Option<&RosterItem>) -> Element {
    let mut el = Element::new("item", ns::ROSTER).with_attr("jid", contact);
    let Some(item) = item else {
        return el.with_attr("subscription", "remove");
    };
    if let Some(name) = &item.name {
        el.set_attr("name", name.as_str());
    }
    el.set_attr("subscription", item.subscription.as_str());
    if item.ask {
        el.set_attr("ask", "subscribe");
    }
    if item.approved {
        el.set_attr("approved", "true");
    }
    for g in &item.groups {
        el.push_child(Element::new("group", ns::ROSTER).with_text(g.as_str()));
    }
    el
}

pub fn empty_item() -> RosterItem {
    RosterItem {
        name: None,
        subscription: Subscription::None,
        ask: false,
        approved: false,
        groups: Vec::new(),
    }
}

/// The state machine's view of a stored item plus the pending-in table.
pub fn state_of(item: Option<&RosterItem>, pending_in: bool) -> SubState {
    let Some(item) = item else {
        return SubState {
            pending_in,
            ..SubState::default()
        };
    };
    SubState {
        sub: match item.subscription {
            Subscription::None => Sub::None,
            Subscription::To => Sub::To,
            Subscription::From => Sub::From,
            Subscription::Both => Sub::Both,
        },
        pending_out: item.ask,
        pending_in,
        approved: item.approved,
    }
}

/// A stored item carrying `state` (the pending-in flag lives in its own table).
pub fn with_state(item: Option<RosterItem>, state: SubState) -> RosterItem {
    RosterItem {
        subscription: match state.sub {
            Sub::None => Subscription::None,
            Sub::To => Subscription::To,
            Sub::From => Subscription::From,
            Sub::Both => Subscription::Both,
        },
        ask: state.pending_out,
        approved: state.approved,
        ..item.unwrap_or_else(empty_item)
    }
}

pub fn store_error(e: crate::store::StoreError) -> StanzaError {
    log::error!("store: {e}");
    if e.is_disk_full() {
        StanzaError::new(Condition::ResourceConstraint).with_text("the server's disk is full")
    } else {
        Condition::InternalServerError.into()
    }
}
