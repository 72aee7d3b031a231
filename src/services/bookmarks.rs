//! XEP-0402 PEP Native Bookmarks compatibility (§5): the `urn:xmpp:bookmarks:1` PEP node is the
//! one source of truth, and the two XEP-0048 views of it are kept in step, as Prosody's
//! mod_bookmarks does:
//!
//! - XEP-0049 private storage of `<storage xmlns='storage:bookmarks'/>`: a get is built from
//!   the XEP-0402 node, a set rewrites it (publishes new and changed items, retracts removed
//!   ones, with notifications). Nothing is kept in the private kv area.
//! - XEP-0048 via PEP (XEP-0223, XEP-0411), the `storage:bookmarks` node: the owner's get is
//!   built from the XEP-0402 node, a publish rewrites it like a private-storage set, and every
//!   change of the XEP-0402 node is announced to the owner's resources that want
//!   `storage:bookmarks+notify`, as one `current` item.
//!
//! Bookmarks stored the old way before this module existed (a private-storage element, or a
//! stored `storage:bookmarks` PEP node) are moved into the XEP-0402 node the first time the
//! account touches its bookmarks.
//!
//! Fields mapped: jid (the XEP-0402 item id), name, autojoin, nick, password; elements of other
//! namespaces inside a legacy `<conference/>` travel as XEP-0402 `<extensions/>` and back.
//! Legacy `<url/>` bookmarks have no XEP-0402 equivalent and are dropped (as in Prosody).
//! This module knows the two payload formats and the PEP entry points; it never sees stanzas
//! other than the payloads handed to it.

use std::collections::HashMap;

use crate::jid::BareJid;
use crate::server::Server;
use crate::services::pep::{self, Config, PubsubError, NS_PUBSUB, NS_PUBSUB_EVENT};
use crate::services::roster::store_error;
use crate::stanza::{Condition, StanzaError};
use crate::xml::Element;

/// XEP-0402 node and payload namespace.
pub const NODE: &str = "urn:xmpp:bookmarks:1";
/// XEP-0048 storage namespace, also the legacy PEP node name.
pub const NS_LEGACY: &str = "storage:bookmarks";
/// The kv key under which `services::private` stored legacy bookmarks before this module.
const PRIVATE_KEY: &str = "private/storage:bookmarks:storage";

/// Account disco#info features, advertised only because all of the above works.
pub const FEATURES: &[&str] = &[
    // XEP-0402 §5.3: private storage and the XEP-0402 node are kept in sync.
    "urn:xmpp:bookmarks:1#compat",
    // XEP-0402 §5.3: the legacy PEP node is kept in sync too.
    "urn:xmpp:bookmarks:1#compat-pep",
    // XEP-0411 Bookmarks Conversion.
    "urn:xmpp:bookmarks-conversion:0",
];

/// XEP-0402 §3 node configuration.
const OPTIONS: &[(&str, &str)] = &[
    ("pubsub#persist_items", "true"),
    ("pubsub#max_items", "max"),
    ("pubsub#send_last_published_item", "never"),
    ("pubsub#access_model", "whitelist"),
];

/// One bookmark, in the terms both formats share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bookmark {
    /// The room's bare JID, normalized.
    pub jid: String,
    pub name: Option<String>,
    pub autojoin: bool,
    pub nick: Option<String>,
    pub password: Option<String>,
    /// Elements of other namespaces (XEP-0402 `<extensions/>`).
    pub extensions: Vec<Element>,
}

fn truthy(v: Option<&str>) -> bool {
    matches!(v, Some("true" | "1"))
}

fn child_text(el: &Element, name: &str, ns: &str) -> Option<String> {
    el.get_child(name, ns).map(|c| c.text())
}

/// The bookmarks of a legacy `<storage xmlns='storage:bookmarks'/>`: conferences with a valid
/// JID, the last one winning when a JID repeats.
pub fn from_legacy(storage: &Element) -> Vec<Bookmark> {
    let mut out: Vec<Bookmark> = Vec::new();
    for c in storage.children().filter(|c| c.is("conference", NS_LEGACY)) {
        let Some(jid) = c.attr("jid").and_then(|j| BareJid::parse(j).ok()) else {
            continue;
        };
        let b = Bookmark {
            jid: jid.to_string(),
            name: c.attr("name").map(str::to_string),
            autojoin: truthy(c.attr("autojoin")),
            nick: child_text(c, "nick", NS_LEGACY),
            password: child_text(c, "password", NS_LEGACY),
            extensions: c
                .children()
                .filter(|e| e.ns() != NS_LEGACY)
                .cloned()
                .collect(),
        };
        out.retain(|o| o.jid != b.jid);
        out.push(b);
    }
    out
}

/// The legacy `<storage/>` for a list of bookmarks.
pub fn to_legacy(bookmarks: &[Bookmark]) -> Element {
    let mut storage = Element::new("storage", NS_LEGACY);
    for b in bookmarks {
        let mut c = Element::new("conference", NS_LEGACY).with_attr("jid", b.jid.as_str());
        if let Some(n) = &b.name {
            c.set_attr("name", n.as_str());
        }
        c.set_attr("autojoin", if b.autojoin { "true" } else { "false" });
        if let Some(n) = &b.nick {
            c.push_child(Element::new("nick", NS_LEGACY).with_text(n.as_str()));
        }
        if let Some(p) = &b.password {
            c.push_child(Element::new("password", NS_LEGACY).with_text(p.as_str()));
        }
        for e in &b.extensions {
            c.push_child(e.clone());
        }
        storage.push_child(c);
    }
    storage
}

/// A XEP-0402 item (id, `<conference xmlns='urn:xmpp:bookmarks:1'/>` payload) as a bookmark;
/// `None` when the payload is something else or the id no JID.
pub fn from_item(id: &str, payload: &Element) -> Option<Bookmark> {
    if !payload.is("conference", NODE) {
        return None;
    }
    let jid = BareJid::parse(id).ok()?;
    Some(Bookmark {
        jid: jid.to_string(),
        name: payload.attr("name").map(str::to_string),
        autojoin: truthy(payload.attr("autojoin")),
        nick: child_text(payload, "nick", NODE),
        password: child_text(payload, "password", NODE),
        extensions: payload
            .get_child("extensions", NODE)
            .map(|x| x.children().cloned().collect())
            .unwrap_or_default(),
    })
}

/// The XEP-0402 payload of a bookmark (its item id is `b.jid`).
pub fn to_payload(b: &Bookmark) -> Element {
    let mut c = Element::new("conference", NODE);
    if let Some(n) = &b.name {
        c.set_attr("name", n.as_str());
    }
    if b.autojoin {
        c.set_attr("autojoin", "true");
    }
    if let Some(n) = &b.nick {
        c.push_child(Element::new("nick", NODE).with_text(n.as_str()));
    }
    if let Some(p) = &b.password {
        c.push_child(Element::new("password", NODE).with_text(p.as_str()));
    }
    if !b.extensions.is_empty() {
        let mut x = Element::new("extensions", NODE);
        for e in &b.extensions {
            x.push_child(e.clone());
        }
        c.push_child(x);
    }
    c
}

// ---------------------------------------------------------------- private storage (XEP-0049)

/// Whether a private-storage element is the legacy bookmarks storage this module serves.
pub fn is_legacy_storage(el: &Element) -> bool {
    el.is("storage", NS_LEGACY)
}

/// Private-storage get of `storage:bookmarks`: built from the XEP-0402 node.
pub async fn private_get(srv: &Server, owner: &BareJid) -> Result<Element, StanzaError> {
    migrate(srv, owner).await;
    let current = current(srv, owner).await.map_err(store_error)?;
    Ok(to_legacy(&current.unwrap_or_default()))
}

/// Private-storage set of `storage:bookmarks`: rewrites the XEP-0402 node.
pub async fn private_set(
    srv: &Server,
    owner: &BareJid,
    storage: &Element,
) -> Result<(), StanzaError> {
    migrate(srv, owner).await;
    sync(srv, owner, &from_legacy(storage), true)
        .await
        .map_err(|e| {
            log::error!("bookmarks: cannot store the private bookmarks of {owner}: {e:?}");
            StanzaError::new(Condition::InternalServerError)
        })
}

// ---------------------------------------------------------------- PEP hooks

/// Hook for `services::pep`: the owner's `items` get or `publish` on the legacy
/// `storage:bookmarks` node, answered from or written to the XEP-0402 node (XEP-0411).
pub async fn legacy_pep(srv: &Server, owner: &BareJid, op: &Element) -> pep::Reply {
    migrate(srv, owner).await;
    if op.name() == "publish" {
        // The item id and publish-options are ignored: the legacy node is a view.
        let storage = op
            .get_child("item", NS_PUBSUB)
            .and_then(|i| i.get_child("storage", NS_LEGACY))
            .ok_or(Condition::BadRequest)?;
        sync(srv, owner, &from_legacy(storage), true).await?;
        return Ok(Some(
            Element::new("pubsub", NS_PUBSUB).with_child(
                Element::new("publish", NS_PUBSUB)
                    .with_attr("node", NS_LEGACY)
                    .with_child(Element::new("item", NS_PUBSUB).with_attr("id", "current")),
            ),
        ));
    }
    let Some(current) = current(srv, owner).await? else {
        return Err(Condition::ItemNotFound.into());
    };
    Ok(Some(
        Element::new("pubsub", NS_PUBSUB).with_child(
            Element::new("items", NS_PUBSUB)
                .with_attr("node", NS_LEGACY)
                .with_child(
                    Element::new("item", NS_PUBSUB)
                        .with_attr("id", "current")
                        .with_child(to_legacy(&current)),
                ),
        ),
    ))
}

/// Hook for `services::pep`: the owner is about to read or change `node`. Old copies are
/// moved into the XEP-0402 node first, so a client's change is never overwritten by them.
pub async fn before_use(srv: &Server, owner: &BareJid, node: &str) {
    if node == NODE {
        migrate(srv, owner).await;
    }
}

/// Hook for `services::pep`: the owner changed `node` (publish, retract, purge, delete) by
/// a pubsub request. A change of the XEP-0402 node is announced on the legacy node.
pub async fn after_change(srv: &Server, owner: &BareJid, node: &str) {
    if node == NODE {
        announce_legacy(srv, owner).await;
    }
}

// ---------------------------------------------------------------- the sync

/// The bookmarks of the XEP-0402 node, in publish order; `None` when there is no node.
async fn current(
    srv: &Server,
    owner: &BareJid,
) -> Result<Option<Vec<Bookmark>>, crate::store::StoreError> {
    if srv.store.pep_node(owner.as_ref(), NODE).await?.is_none() {
        return Ok(None);
    }
    let items = srv.store.pep_items(owner.as_ref(), NODE).await?;
    Ok(Some(
        items
            .iter()
            .filter_map(|i| {
                let payload = std::str::from_utf8(&i.payload).ok()?;
                from_item(&i.id, &Element::parse(payload).ok()?)
            })
            .collect(),
    ))
}

fn options() -> Vec<(String, String)> {
    OPTIONS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Makes the XEP-0402 node hold `wanted`: publishes what is new or changed; with
/// `synchronise`, retracts what is gone. Subscribers hear each change; the legacy node's
/// subscribers hear the result once. An existing node whose configuration differs from
/// XEP-0402 §3 is reconfigured first (as Prosody), so that no bookmark is trimmed away.
async fn sync(
    srv: &Server,
    owner: &BareJid,
    wanted: &[Bookmark],
    synchronise: bool,
) -> Result<(), PubsubError> {
    let options = options();
    let existing = match srv.store.pep_node(owner.as_ref(), NODE).await? {
        None if wanted.is_empty() => return Ok(()),
        None => Vec::new(),
        Some(stored) => {
            let mut cfg = Config::from_node(&stored);
            if !cfg.satisfies(&options) {
                log::warn!("bookmarks: reconfiguring the {NODE} node of {owner} as XEP-0402 asks");
                for (k, v) in &options {
                    let _ = cfg.set(k, v);
                }
                srv.store
                    .pep_configure(
                        owner.as_ref(),
                        NODE,
                        cfg.to_node(),
                        pep::MAX_ITEMS_CAP as usize,
                    )
                    .await?;
            }
            srv.store.pep_items(owner.as_ref(), NODE).await?
        }
    };
    let old: HashMap<String, Option<Bookmark>> = existing
        .iter()
        .map(|i| {
            let b = std::str::from_utf8(&i.payload)
                .ok()
                .and_then(|s| Element::parse(s).ok())
                .and_then(|p| from_item(&i.id, &p));
            (i.id.clone(), b)
        })
        .collect();
    let mut changed = false;
    for b in wanted {
        if old.get(&b.jid).is_some_and(|o| o.as_ref() == Some(b)) {
            continue;
        }
        pep::publish_item(
            srv,
            owner,
            NODE,
            &options,
            b.jid.clone(),
            Some(to_payload(b)),
        )
        .await?;
        changed = true;
    }
    if synchronise {
        for id in old.keys() {
            if !wanted.iter().any(|b| &b.jid == id) {
                // Clients must hear every removal to stay in sync, whatever the node says.
                pep::retract_item(srv, owner, NODE, id, true).await?;
                changed = true;
            }
        }
    }
    if changed {
        announce_legacy(srv, owner).await;
    }
    Ok(())
}

/// XEP-0411 / XEP-0048 via PEP: the owner's resources that want `storage:bookmarks+notify`
/// hear the whole legacy view as item `current`.
async fn announce_legacy(srv: &Server, owner: &BareJid) {
    let current = match current(srv, owner).await {
        Ok(c) => c.unwrap_or_default(),
        Err(e) => return log::error!("store: cannot read the bookmarks of {owner}: {e}"),
    };
    let event = Element::new("items", NS_PUBSUB_EVENT)
        .with_attr("node", NS_LEGACY)
        .with_child(
            Element::new("item", NS_PUBSUB_EVENT)
                .with_attr("id", "current")
                .with_child(to_legacy(&current)),
        );
    let mut cfg = Config::default();
    let _ = cfg.set("pubsub#access_model", "whitelist");
    pep::notify(srv, owner, NS_LEGACY, &cfg, event).await;
}

/// Moves bookmarks stored the old way (private kv, stored legacy PEP node) into the XEP-0402
/// node, then removes the old copy. Errors are logged; the old copy stays for a retry.
async fn migrate(srv: &Server, owner: &BareJid) {
    match srv.store.kv_get(owner.as_ref(), PRIVATE_KEY).await {
        Ok(Some(bytes)) => {
            let storage = String::from_utf8(bytes)
                .ok()
                .and_then(|s| Element::parse(&s).ok());
            if let Some(storage) = storage {
                if let Err(e) = sync(srv, owner, &from_legacy(&storage), false).await {
                    return log::error!(
                        "bookmarks: cannot migrate private bookmarks of {owner}: {e:?}"
                    );
                }
            }
            if let Err(e) = srv.store.kv_set(owner.as_ref(), PRIVATE_KEY, None).await {
                log::error!("store: cannot remove migrated private bookmarks of {owner}: {e}");
            }
            log::info!("bookmarks: moved the private-storage bookmarks of {owner} to {NODE}");
        }
        Ok(None) => {}
        Err(e) => log::error!("store: cannot read private bookmarks of {owner}: {e}"),
    }
    match srv.store.pep_node(owner.as_ref(), NS_LEGACY).await {
        Ok(Some(_)) => {}
        Ok(None) => return,
        Err(e) => return log::error!("store: {e}"),
    }
    let last = match srv.store.pep_items(owner.as_ref(), NS_LEGACY).await {
        Ok(mut items) => items.pop(),
        Err(e) => return log::error!("store: {e}"),
    };
    if let Some(storage) = last
        .and_then(|i| String::from_utf8(i.payload).ok())
        .and_then(|s| Element::parse(&s).ok())
        .filter(is_legacy_storage)
    {
        if let Err(e) = sync(srv, owner, &from_legacy(&storage), false).await {
            return log::error!("bookmarks: cannot migrate legacy PEP bookmarks of {owner}: {e:?}");
        }
        log::info!("bookmarks: moved the legacy PEP bookmarks of {owner} to {NODE}");
    }
    if let Err(e) = srv.store.pep_delete(owner.as_ref(), NS_LEGACY).await {
        log::error!("store: cannot remove the legacy bookmarks node of {owner}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Element {
        Element::parse(s).unwrap()
    }

    #[test]
    fn legacy_storage_maps_every_field() {
        let storage = parse(
            "<storage xmlns='storage:bookmarks'>\
             <conference jid='Room@MUC.example' name='The Room' autojoin='1'>\
             <nick>al</nick><password>pw</password><x xmlns='urn:example:ext' a='b'/></conference>\
             <conference jid='other@muc.example'/>\
             <conference jid='not a jid@@'/>\
             <url name='site' url='https://example.org'/>\
             </storage>",
        );
        let b = from_legacy(&storage);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].jid, "room@muc.example");
        assert_eq!(b[0].name.as_deref(), Some("The Room"));
        assert!(b[0].autojoin);
        assert_eq!(b[0].nick.as_deref(), Some("al"));
        assert_eq!(b[0].password.as_deref(), Some("pw"));
        assert_eq!(
            b[0].extensions,
            vec![parse("<x xmlns='urn:example:ext' a='b'/>")]
        );
        assert_eq!(
            b[1],
            Bookmark {
                jid: "other@muc.example".into(),
                name: None,
                autojoin: false,
                nick: None,
                password: None,
                extensions: vec![],
            }
        );
    }

    #[test]
    fn a_repeated_jid_keeps_the_last_conference() {
        let storage = parse(
            "<storage xmlns='storage:bookmarks'>\
             <conference jid='a@muc.example' name='first'/>\
             <conference jid='a@muc.example' name='second'/></storage>",
        );
        let b = from_legacy(&storage);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].name.as_deref(), Some("second"));
    }

    #[test]
    fn xep0402_payload_maps_every_field() {
        let payload = parse(
            "<conference xmlns='urn:xmpp:bookmarks:1' name='R' autojoin='true'>\
             <nick>al</nick><password>pw</password>\
             <extensions><state xmlns='http://myclient.example/bookmark/state' minimized='true'/></extensions>\
             </conference>",
        );
        let b = from_item("r@muc.example", &payload).unwrap();
        assert_eq!(b.name.as_deref(), Some("R"));
        assert!(b.autojoin);
        assert_eq!(b.nick.as_deref(), Some("al"));
        assert_eq!(b.password.as_deref(), Some("pw"));
        assert_eq!(b.extensions.len(), 1);
        assert!(from_item("r@muc.example", &parse("<other xmlns='urn:x'/>")).is_none());
        assert!(from_item("", &payload).is_none());
    }

    #[test]
    fn both_formats_round_trip() {
        let storage = parse(
            "<storage xmlns='storage:bookmarks'>\
             <conference jid='r@muc.example' name='R' autojoin='true'>\
             <nick>al</nick><password>pw</password><x xmlns='urn:example:ext'/></conference>\
             <conference jid='s@muc.example' autojoin='false'/></storage>",
        );
        let b = from_legacy(&storage);
        // Legacy -> XEP-0402 -> bookmark: nothing lost.
        let via_items: Vec<Bookmark> = b
            .iter()
            .map(|x| from_item(&x.jid, &to_payload(x)).unwrap())
            .collect();
        assert_eq!(via_items, b);
        // Bookmark -> legacy -> bookmark, through the serializer.
        let text = String::from_utf8(to_legacy(&b).to_bytes_in("")).unwrap();
        assert_eq!(from_legacy(&parse(&text)), b);
        // XEP-0402 payloads carry only what is set.
        let p = to_payload(&b[1]);
        assert_eq!(p.attr("autojoin"), None);
        assert!(p.first_child().is_none());
        let p = to_payload(&b[0]);
        assert!(p.get_child("extensions", NODE).is_some());
    }
}
