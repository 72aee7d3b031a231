//! Per-user data export in XEP-0227 (Portable Import/Export Format) XML: `kith user export`.
//!
//! `export_user` gives one account's `<user/>` element; `document` wraps users in
//! `<server-data><host/>`. The password is left out on purpose: this export is for the person
//! to keep (or to move to another server that will ask for a new password), and a credential,
//! even a SCRAM hash, must not travel with it. A whole-server export that needs the
//! credentials can add them to the `<user/>` this returns.

use crate::jid::BareJid;
use crate::store::{Store, StoreError};
use crate::xml::Element;

pub const NS_PIE: &str = "urn:xmpp:pie:0";
/// XEP-0227 §4.6: the message archive (XEP-0313 results) inside `<user/>`.
pub const NS_PIE_MAM: &str = "urn:xmpp:pie:0#mam";
const NS_ROSTER: &str = "jabber:iq:roster";
const NS_PRIVATE: &str = "jabber:iq:private";
const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const NS_MAM: &str = "urn:xmpp:mam:2";
const NS_FORWARD: &str = "urn:xmpp:forward:0";
const NS_DELAY: &str = "urn:xmpp:delay";
/// How many archived messages are read per store query.
const ARCHIVE_PAGE: usize = 500;

/// `<server-data><host jid=DOMAIN>users…</host></server-data>`.
pub fn document(domain: &str, users: Vec<Element>) -> Element {
    let mut host = Element::new("host", NS_PIE).with_attr("jid", domain);
    for u in users {
        host.push_child(u);
    }
    Element::new("server-data", NS_PIE).with_child(host)
}

/// One account's data: roster, vCard, private XML, PEP nodes with their items, offline
/// messages and the message archive. `None` when the account does not exist.
pub async fn export_user(store: &Store, jid: &BareJid) -> Result<Option<Element>, StoreError> {
    let owner = jid.as_str();
    if store.account(owner).await?.is_none() {
        return Ok(None);
    }
    let mut user = Element::new("user", NS_PIE).with_attr("name", jid.node().unwrap_or(""));

    let (ver, items) = store.roster(owner).await?;
    let mut roster = Element::new("query", NS_ROSTER);
    if ver > 0 {
        roster.set_attr("ver", ver.to_string());
    }
    for (contact, it) in items {
        let mut item = Element::new("item", NS_ROSTER)
            .with_attr("jid", contact)
            .with_attr("subscription", it.subscription.as_str());
        if let Some(name) = it.name {
            item.set_attr("name", name);
        }
        if it.ask {
            item.set_attr("ask", "subscribe");
        }
        for g in it.groups {
            item.push_child(Element::new("group", NS_ROSTER).with_text(g));
        }
        roster.push_child(item);
    }
    user.push_child(roster);

    if let Some(vcard) = store.kv_get(owner, "vcard-temp").await? {
        if let Some(el) = parse(&vcard) {
            user.push_child(el);
        }
    }

    let private = store.kv_list(owner, "private/").await?;
    if !private.is_empty() {
        let mut q = Element::new("query", NS_PRIVATE);
        for (_, bytes) in private {
            if let Some(el) = parse(&bytes) {
                q.push_child(el);
            }
        }
        user.push_child(q);
    }

    let nodes = store.pep_nodes(owner).await?;
    if !nodes.is_empty() {
        let mut pubsub = Element::new("pubsub", NS_PUBSUB);
        for (node, _) in nodes {
            let mut items = Element::new("items", NS_PUBSUB).with_attr("node", node.clone());
            for it in store.pep_items(owner, &node).await? {
                let mut item = Element::new("item", NS_PUBSUB).with_attr("id", it.id);
                if let Some(el) = parse(&it.payload) {
                    item.push_child(el);
                }
                items.push_child(item);
            }
            pubsub.push_child(items);
        }
        user.push_child(pubsub);
    }

    let offline = store.offline(owner).await?;
    if !offline.is_empty() {
        let mut msgs = Element::new("offline-messages", NS_PIE);
        for (_, bytes) in offline {
            if let Some(el) = parse(&bytes) {
                msgs.push_child(el);
            }
        }
        user.push_child(msgs);
    }

    if let Some(archive) = archive(store, owner).await? {
        user.push_child(archive);
    }
    Ok(Some(user))
}

async fn archive(store: &Store, owner: &str) -> Result<Option<Element>, StoreError> {
    use crate::store::ArchiveQuery;
    let Some((lo, hi)) = store.mam_bounds(owner).await? else {
        return Ok(None);
    };
    let mut out = Element::new("archive", NS_PIE_MAM);
    let mut from = lo;
    loop {
        let page = store
            .mam_query(
                owner,
                ArchiveQuery {
                    lo: from,
                    hi,
                    with: None,
                    ids: None,
                    max: ARCHIVE_PAGE,
                    backwards: false,
                    skip: 0,
                    must_exist: Vec::new(),
                    count: false,
                },
            )
            .await?;
        let Some(last) = page.entries.last().map(|e| e.id) else {
            break;
        };
        for e in page.entries {
            let Some(msg) = parse(&e.stanza) else {
                continue;
            };
            out.push_child(
                Element::new("result", NS_MAM)
                    .with_attr("id", crate::stanza::mam::encode_id(e.id))
                    .with_child(
                        Element::new("forwarded", NS_FORWARD)
                            .with_child(
                                Element::new("delay", NS_DELAY)
                                    .with_attr("stamp", crate::time::rfc3339(e.id / 1_000_000)),
                            )
                            .with_child(msg),
                    ),
            );
        }
        if page.complete || last >= hi {
            break;
        }
        from = last + 1;
    }
    Ok(Some(out))
}

/// Stored XML that no longer parses is left out of the export rather than failing it.
fn parse(bytes: &[u8]) -> Option<Element> {
    let s = std::str::from_utf8(bytes).ok()?;
    match Element::parse(s) {
        Ok(el) => Some(el),
        Err(e) => {
            log::warn!("export: skipping stored XML that does not parse: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RosterItem;

    #[test]
    fn export_has_the_users_data_and_no_credentials() {
        let dir = std::env::temp_dir().join(format!("kith-export-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&dir.join("kith.redb")).unwrap();
        let jid = BareJid::parse("alice@example.test").unwrap();
        smol::block_on(async {
            store
                .create_account(jid.as_str(), b"SECRET-CREDS".to_vec())
                .await
                .unwrap();
            let item = RosterItem {
                name: Some("Bob".into()),
                subscription: crate::store::Subscription::Both,
                groups: vec!["Family".into()],
                ..Default::default()
            };
            store
                .set_roster_item(jid.as_str(), "bob@example.test", Some(item))
                .await
                .unwrap();
            store
                .kv_set(
                    jid.as_str(),
                    "vcard-temp",
                    Some(b"<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>".to_vec()),
                )
                .await
                .unwrap();
            store
                .kv_set(
                    jid.as_str(),
                    "private/storage:x:note",
                    Some(b"<note xmlns='storage:x'>n1</note>".to_vec()),
                )
                .await
                .unwrap();
            store
                .push_offline(
                    jid.as_str(),
                    b"<message xmlns='jabber:client' from='bob@example.test/a'><body>hi</body></message>".to_vec(),
                    10,
                )
                .await
                .unwrap();
            let user = export_user(&store, &jid).await.unwrap().unwrap();
            let doc = document("example.test", vec![user]).to_string();
            assert!(doc.contains("<user name='alice'>"), "{doc}");
            assert!(
                doc.contains(
                    "jid='bob@example.test' subscription='both' name='Bob'><group>Family</group>"
                ),
                "{doc}"
            );
            assert!(doc.contains("<FN>Alice</FN>"), "{doc}");
            assert!(doc.contains("<note xmlns='storage:x'>n1</note>"), "{doc}");
            assert!(doc.contains("<offline-messages><message"), "{doc}");
            assert!(!doc.contains("SECRET"), "{doc}");
            let ghost = BareJid::parse("ghost@example.test").unwrap();
            assert!(export_user(&store, &ghost).await.unwrap().is_none());
        });
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
