//! XEP-0049 Private XML Storage: one XML element per (name, namespace) of the stored child,
//! in the account's kv area. Only the account itself may read or write it. Legacy bookmarks
//! (`storage:bookmarks`) are the main user; they are not stored here but served from and
//! written to the XEP-0402 PEP node by `services::bookmarks`.

use crate::jid::{BareJid, FullJid};
use crate::router::{bounce, deliver_reply};
use crate::server::Server;
use crate::services::bookmarks;
use crate::services::roster::store_error;
use crate::stanza::{self, ns, Condition, StanzaError};
use crate::xml::Element;

/// Namespaces no one may store (XEP-0049 §3: the protocol's own and the stream's).
const RESERVED: &[&str] = &[
    ns::CLIENT,
    "jabber:server",
    "jabber:component:accept",
    ns::PRIVATE,
    ns::STREAM,
];

/// The iq handler for `jabber:iq:private` addressed to the account `to`.
pub async fn handle(srv: &Server, from: &FullJid, to: &BareJid, iq: Element) {
    let result = if from.to_bare() != *to {
        // §3: no access to anyone else's storage.
        Err(Condition::Forbidden.into())
    } else {
        match (iq.attr("type"), iq.get_child("query", ns::PRIVATE)) {
            (Some("get"), Some(q)) => get(srv, to, q).await.map(Some),
            (Some("set"), Some(q)) => set(srv, to, q).await.map(|()| None),
            _ => Err(Condition::BadRequest.into()),
        }
    };
    match result {
        Ok(payload) => deliver_reply(srv, stanza::iq_result(&iq, payload)),
        Err(e) => bounce(srv, &iq, e),
    }
}

/// The kv key of one stored element.
fn key(el: &Element) -> Result<String, StanzaError> {
    if el.ns().is_empty() || RESERVED.contains(&el.ns()) {
        return Err(
            StanzaError::new(Condition::NotAcceptable).with_text("this namespace cannot be stored")
        );
    }
    Ok(format!("private/{}:{}", el.ns(), el.name()))
}

async fn get(srv: &Server, owner: &BareJid, q: &Element) -> Result<Element, StanzaError> {
    let mut children = q.children();
    let (Some(wanted), None) = (children.next(), children.next()) else {
        return Err(
            StanzaError::new(Condition::NotAcceptable).with_text("ask for exactly one element")
        );
    };
    // XEP-0402 §5: legacy bookmarks are a view of the XEP-0402 PEP node.
    if bookmarks::is_legacy_storage(wanted) {
        let storage = bookmarks::private_get(srv, owner).await?;
        return Ok(Element::new("query", ns::PRIVATE).with_child(storage));
    }
    let k = key(wanted)?;
    let stored = srv
        .store
        .kv_get(owner.as_ref(), &k)
        .await
        .map_err(store_error)?;
    let el = stored
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| Element::parse(&s).ok())
        // §3.2: nothing stored is answered with the empty element asked for.
        .unwrap_or_else(|| Element::new(wanted.name(), wanted.ns()));
    Ok(Element::new("query", ns::PRIVATE).with_child(el))
}

async fn set(srv: &Server, owner: &BareJid, q: &Element) -> Result<(), StanzaError> {
    let items: Vec<&Element> = q.children().collect();
    if items.is_empty() {
        return Err(Condition::NotAcceptable.into());
    }
    let mut rows = Vec::new();
    let mut legacy_bookmarks = None;
    for el in items {
        if bookmarks::is_legacy_storage(el) {
            legacy_bookmarks = Some(el);
            continue;
        }
        rows.push((key(el)?, el.to_bytes_in("")));
    }
    if let Some(storage) = legacy_bookmarks {
        bookmarks::private_set(srv, owner, storage).await?;
    }
    for (k, bytes) in rows {
        srv.store
            .kv_set(owner.as_ref(), &k, Some(bytes))
            .await
            .map_err(store_error)?;
    }
    Ok(())
}
