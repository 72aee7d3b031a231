//! End to end: XEP-0402 bookmarks compatibility (§5) — a XEP-0048 client using XEP-0049
//! private storage, a XEP-0048-via-PEP client (XEP-0411) and a XEP-0402 client, all resources
//! of one account, see the same bookmarks, with notifications; and the account advertises it.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::client::{Client, NS_DISCO_INFO};
use common::TestServer;
use kith::xml::Element;

const QUIET: Duration = Duration::from_millis(400);
const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const NS_PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
const NS_CAPS: &str = "http://jabber.org/protocol/caps";
const NS_PRIVATE: &str = "jabber:iq:private";
const BOOKMARKS: &str = "urn:xmpp:bookmarks:1";
const LEGACY: &str = "storage:bookmarks";

/// Logged in with initial presence whose caps advertise `features` (plus a unique one so the
/// server always asks), and the server's disco#info query answered, as in e2e_pep.rs.
fn online(server: &TestServer, user: &str, resource: &str, features: &[&str]) -> Client {
    static N: AtomicUsize = AtomicUsize::new(0);
    let mut c = Client::login_bound(server, user, &format!("{user}-secret"), resource);
    c.roster_get();
    let mut query = Element::new("query", NS_DISCO_INFO).with_child(
        Element::new("identity", NS_DISCO_INFO)
            .with_attr("category", "client")
            .with_attr("type", "phone")
            .with_attr("name", "kith-test"),
    );
    let unique = format!("urn:kith:test:bm:{}", N.fetch_add(1, Ordering::Relaxed));
    for f in [NS_DISCO_INFO, NS_CAPS, unique.as_str()]
        .iter()
        .chain(features)
    {
        query.push_child(Element::new("feature", NS_DISCO_INFO).with_attr("var", *f));
    }
    let ver = kith::services::caps::ver_hash(&query);
    let node = "https://kith.test/client";
    c.send(&format!(
        "<presence><c xmlns='{NS_CAPS}' hash='sha-1' node='{node}' ver='{ver}'/></presence>"
    ));
    let me = c.jid().to_owned();
    c.recv_until(|e| e.name() == "presence" && e.attr("from") == Some(me.as_str()));
    let ask = c.recv_until(|e| {
        e.name() == "iq" && e.attr("type") == Some("get") && e.has_child("query", NS_DISCO_INFO)
    });
    let mut answer = query.clone();
    answer.set_attr("node", format!("{node}#{ver}"));
    c.send_el(
        &Element::new("iq", "jabber:client")
            .with_attr("type", "result")
            .with_attr("id", ask.attr("id").unwrap())
            .with_attr("to", ask.attr("from").unwrap())
            .with_child(answer),
    );
    c
}

fn server() -> TestServer {
    let server = TestServer::start();
    server.add_user("alice", "alice-secret");
    server
}

fn private_set(c: &mut Client, storage: &str) {
    let r = c.iq(&format!(
        "<iq type='set' id='ID'><query xmlns='{NS_PRIVATE}'>{storage}</query></iq>"
    ));
    assert_eq!(r.attr("type"), Some("result"), "{r}");
}

/// The private-storage bookmarks as (jid, name, autojoin, nick, password).
fn private_get(c: &mut Client) -> Vec<(String, String, String, String, String)> {
    let r = c.iq(&format!(
        "<iq type='get' id='ID'><query xmlns='{NS_PRIVATE}'><storage xmlns='{LEGACY}'/></query></iq>"
    ));
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let storage = r
        .get_child("query", NS_PRIVATE)
        .and_then(|q| q.get_child("storage", LEGACY))
        .unwrap_or_else(|| panic!("no storage in {r}"));
    conferences(storage)
}

fn conferences(storage: &Element) -> Vec<(String, String, String, String, String)> {
    let text = |c: &Element, n: &str| c.get_child(n, LEGACY).map(|e| e.text()).unwrap_or_default();
    storage
        .children()
        .filter(|c| c.is("conference", LEGACY))
        .map(|c| {
            (
                c.attr("jid").unwrap_or_default().to_owned(),
                c.attr("name").unwrap_or_default().to_owned(),
                c.attr("autojoin").unwrap_or_default().to_owned(),
                text(c, "nick"),
                text(c, "password"),
            )
        })
        .collect()
}

fn row(
    jid: &str,
    name: &str,
    autojoin: &str,
    nick: &str,
    pw: &str,
) -> (String, String, String, String, String) {
    (
        jid.into(),
        name.into(),
        autojoin.into(),
        nick.into(),
        pw.into(),
    )
}

/// The XEP-0402 items as (id, payload).
fn fetch_items(c: &mut Client, owner: &str, node: &str) -> Vec<(String, Option<Element>)> {
    let r = c.iq(&format!(
        "<iq type='get' to='{owner}' id='ID'><pubsub xmlns='{NS_PUBSUB}'><items node='{node}'/></pubsub></iq>"
    ));
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    r.get_child("pubsub", NS_PUBSUB)
        .and_then(|p| p.get_child("items", NS_PUBSUB))
        .unwrap_or_else(|| panic!("no items in {r}"))
        .children()
        .map(|i| (i.attr("id").unwrap().to_owned(), i.first_child().cloned()))
        .collect()
}

/// The bookmark events of `node` received quietly: ("publish"|"retract", item id, payload).
fn events(c: &mut Client, node: &str) -> Vec<(String, String, Option<Element>)> {
    let mut out = Vec::new();
    for m in c.drain(QUIET) {
        let Some(items) = m
            .get_child("event", NS_PUBSUB_EVENT)
            .and_then(|e| e.get_child("items", NS_PUBSUB_EVENT))
            .filter(|i| i.attr("node") == Some(node))
        else {
            continue;
        };
        for i in items.children() {
            let kind = if i.name() == "item" {
                "publish"
            } else {
                "retract"
            };
            out.push((
                kind.to_owned(),
                i.attr("id").unwrap_or_default().to_owned(),
                i.first_child().cloned(),
            ));
        }
    }
    out
}

fn publish_402(c: &mut Client, room: &str, conference: &str) {
    let r = c.iq(&format!(
        "<iq type='set' id='ID'><pubsub xmlns='{NS_PUBSUB}'><publish node='{BOOKMARKS}'>\
         <item id='{room}'>{conference}</item></publish>\
         <publish-options><x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
         <field var='pubsub#persist_items'><value>true</value></field>\
         <field var='pubsub#max_items'><value>max</value></field>\
         <field var='pubsub#send_last_published_item'><value>never</value></field>\
         <field var='pubsub#access_model'><value>whitelist</value></field>\
         </x></publish-options></pubsub></iq>"
    ));
    assert_eq!(r.attr("type"), Some("result"), "{r}");
}

#[test]
fn account_advertises_bookmarks_compat_and_conversion() {
    let server = server();
    let mut alice = Client::online(&server, "alice", "alice-secret", "pc");
    let a = alice.bare().to_owned();
    let r = alice.iq(&format!(
        "<iq type='get' to='{a}' id='ID'><query xmlns='{NS_DISCO_INFO}'/></iq>"
    ));
    let features: Vec<&str> = r
        .get_child("query", NS_DISCO_INFO)
        .unwrap_or_else(|| panic!("{r}"))
        .children()
        .filter_map(|c| c.attr("var"))
        .collect();
    for f in [
        "urn:xmpp:bookmarks:1#compat",
        "urn:xmpp:bookmarks:1#compat-pep",
        "urn:xmpp:bookmarks-conversion:0",
    ] {
        assert!(features.contains(&f), "{f} missing in {r}");
    }
}

#[test]
fn private_storage_set_reaches_xep0402_clients() {
    let server = server();
    let mut legacy = online(&server, "alice", "legacy", &[]);
    let mut modern = online(&server, "alice", "modern", &["urn:xmpp:bookmarks:1+notify"]);
    let a = legacy.bare().to_owned();
    modern.drain(QUIET);
    legacy.drain(QUIET);

    private_set(
        &mut legacy,
        "<storage xmlns='storage:bookmarks'>\
         <conference jid='one@muc.example' name='One' autojoin='true'>\
         <nick>al</nick><password>secret</password><x xmlns='urn:example:ext' k='v'/></conference>\
         <conference jid='two@muc.example' name='Two'/>\
         </storage>",
    );
    let ev = events(&mut modern, BOOKMARKS);
    let ids: Vec<&str> = ev
        .iter()
        .map(|(k, id, _)| {
            assert_eq!(k, "publish");
            id.as_str()
        })
        .collect();
    assert_eq!(ids, ["one@muc.example", "two@muc.example"]);
    // The legacy client did not ask for XEP-0402 events.
    assert!(events(&mut legacy, BOOKMARKS).is_empty());

    let items = fetch_items(&mut modern, &a, BOOKMARKS);
    assert_eq!(items.len(), 2);
    let (id, payload) = &items[0];
    assert_eq!(id, "one@muc.example");
    let c = payload.as_ref().unwrap();
    assert!(c.is("conference", BOOKMARKS), "{c}");
    assert_eq!(c.attr("name"), Some("One"));
    assert_eq!(c.attr("autojoin"), Some("true"));
    assert_eq!(c.get_child("nick", BOOKMARKS).unwrap().text(), "al");
    assert_eq!(c.get_child("password", BOOKMARKS).unwrap().text(), "secret");
    let ext = c
        .get_child("extensions", BOOKMARKS)
        .expect("extensions kept");
    assert!(ext.has_child("x", "urn:example:ext"), "{c}");
    assert_eq!(items[1].1.as_ref().unwrap().attr("autojoin"), None);

    // Private storage reads back the same, from the XEP-0402 node.
    assert_eq!(
        private_get(&mut legacy),
        [
            row("one@muc.example", "One", "true", "al", "secret"),
            row("two@muc.example", "Two", "false", "", ""),
        ]
    );

    // A second set: one unchanged, one removed, one new. Only the differences are announced.
    private_set(
        &mut legacy,
        "<storage xmlns='storage:bookmarks'>\
         <conference jid='one@muc.example' name='One' autojoin='true'>\
         <nick>al</nick><password>secret</password><x xmlns='urn:example:ext' k='v'/></conference>\
         <conference jid='three@muc.example' name='Three' autojoin='1'/>\
         </storage>",
    );
    let ev: Vec<(String, String)> = events(&mut modern, BOOKMARKS)
        .into_iter()
        .map(|(k, id, _)| (k, id))
        .collect();
    assert_eq!(
        ev,
        [
            ("publish".to_owned(), "three@muc.example".to_owned()),
            ("retract".to_owned(), "two@muc.example".to_owned()),
        ]
    );
    let ids: Vec<String> = fetch_items(&mut modern, &a, BOOKMARKS)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, ["one@muc.example", "three@muc.example"]);
}

#[test]
fn xep0402_publish_and_retract_show_in_both_legacy_views() {
    let server = server();
    let mut modern = online(&server, "alice", "modern", &["urn:xmpp:bookmarks:1+notify"]);
    let mut legacy_pep = online(
        &server,
        "alice",
        "legacy-pep",
        &["storage:bookmarks+notify"],
    );
    let a = modern.bare().to_owned();
    modern.drain(QUIET);
    legacy_pep.drain(QUIET);

    // Nothing yet: private storage answers an empty storage element.
    assert!(private_get(&mut legacy_pep).is_empty());

    publish_402(
        &mut modern,
        "room@muc.example",
        "<conference xmlns='urn:xmpp:bookmarks:1' name='Room' autojoin='true'><nick>al</nick></conference>",
    );
    assert_eq!(events(&mut modern, BOOKMARKS).len(), 1);
    // The legacy PEP client hears the whole legacy view as item 'current'.
    let ev = events(&mut legacy_pep, LEGACY);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].1, "current");
    assert_eq!(
        conferences(ev[0].2.as_ref().unwrap()),
        [row("room@muc.example", "Room", "true", "al", "")]
    );
    assert_eq!(
        private_get(&mut legacy_pep),
        [row("room@muc.example", "Room", "true", "al", "")]
    );
    let legacy_items = fetch_items(&mut legacy_pep, &a, LEGACY);
    assert_eq!(legacy_items.len(), 1);
    assert_eq!(legacy_items[0].0, "current");
    assert_eq!(
        conferences(legacy_items[0].1.as_ref().unwrap()),
        [row("room@muc.example", "Room", "true", "al", "")]
    );

    // Retract: gone from the XEP-0402 node, private storage and legacy PEP.
    let r = modern.iq(&format!(
        "<iq type='set' id='ID'><pubsub xmlns='{NS_PUBSUB}'><retract node='{BOOKMARKS}' notify='true'>\
         <item id='room@muc.example'/></retract></pubsub></iq>"
    ));
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    assert_eq!(
        events(&mut modern, BOOKMARKS),
        [("retract".to_owned(), "room@muc.example".to_owned(), None)]
    );
    let ev = events(&mut legacy_pep, LEGACY);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert!(conferences(ev[0].2.as_ref().unwrap()).is_empty());
    assert!(private_get(&mut legacy_pep).is_empty());
    assert!(fetch_items(&mut modern, &a, BOOKMARKS).is_empty());
    let legacy_items = fetch_items(&mut legacy_pep, &a, LEGACY);
    assert!(conferences(legacy_items[0].1.as_ref().unwrap()).is_empty());
}

#[test]
fn legacy_pep_publish_rewrites_the_xep0402_node() {
    let server = server();
    let mut modern = online(&server, "alice", "modern", &["urn:xmpp:bookmarks:1+notify"]);
    let mut legacy_pep = online(
        &server,
        "alice",
        "legacy-pep",
        &["storage:bookmarks+notify"],
    );
    let a = modern.bare().to_owned();
    modern.drain(QUIET);
    legacy_pep.drain(QUIET);

    publish_402(
        &mut modern,
        "old@muc.example",
        "<conference xmlns='urn:xmpp:bookmarks:1' name='Old'/>",
    );
    modern.drain(QUIET);
    legacy_pep.drain(QUIET);

    // XEP-0048 via PEP: the whole storage as one item, replacing the set.
    let r = legacy_pep.iq(&format!(
        "<iq type='set' id='ID'><pubsub xmlns='{NS_PUBSUB}'><publish node='{LEGACY}'>\
         <item id='current'><storage xmlns='{LEGACY}'>\
         <conference jid='new@muc.example' name='New' autojoin='true'><nick>al</nick></conference>\
         </storage></item></publish></pubsub></iq>"
    ));
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let ev: Vec<(String, String)> = events(&mut modern, BOOKMARKS)
        .into_iter()
        .map(|(k, id, _)| (k, id))
        .collect();
    assert_eq!(
        ev,
        [
            ("publish".to_owned(), "new@muc.example".to_owned()),
            ("retract".to_owned(), "old@muc.example".to_owned()),
        ]
    );
    let items = fetch_items(&mut modern, &a, BOOKMARKS);
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].0, "new@muc.example");
    assert_eq!(items[0].1.as_ref().unwrap().attr("name"), Some("New"));
    assert_eq!(
        private_get(&mut modern),
        [row("new@muc.example", "New", "true", "al", "")]
    );
}

#[test]
fn bookmarks_stored_the_old_way_are_moved_to_the_xep0402_node() {
    use kith::store::{PepItem, Store};
    let mut server = server();
    let alice = server.jid("alice");
    server.stop();
    // What kith wrote before the compatibility layer: a private-storage element in the kv
    // area and a plain legacy PEP node.
    let path = server.data_dir.join("kith.redb");
    {
        let store = Store::open(&path).unwrap();
        smol::block_on(async {
            let kv = "<storage xmlns='storage:bookmarks'>\
                <conference jid='kv@muc.example' name='KV' autojoin='true'/></storage>";
            store
                .kv_set(&alice, "private/storage:bookmarks:storage", Some(kv.into()))
                .await
                .unwrap();
            let pep = "<storage xmlns='storage:bookmarks'>\
                <conference jid='pep@muc.example' name='PEP'><nick>al</nick></conference></storage>";
            let node = kith::services::pep::Config::default().to_node();
            let item = PepItem {
                id: "current".into(),
                payload: pep.into(),
            };
            store
                .pep_publish(&alice, LEGACY, node, item, 1)
                .await
                .unwrap();
        });
    }
    server.start_again();

    let mut modern = online(&server, "alice", "modern", &["urn:xmpp:bookmarks:1+notify"]);
    let ids: Vec<String> = fetch_items(&mut modern, &alice, BOOKMARKS)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, ["kv@muc.example", "pep@muc.example"]);
    let both = [
        row("kv@muc.example", "KV", "true", "", ""),
        row("pep@muc.example", "PEP", "false", "al", ""),
    ];
    assert_eq!(private_get(&mut modern), both);
    let legacy_items = fetch_items(&mut modern, &alice, LEGACY);
    assert_eq!(conferences(legacy_items[0].1.as_ref().unwrap()), both);

    // The old copies are gone: the XEP-0402 node is the only one left.
    modern.close();
    server.stop();
    let store = Store::open(&path).unwrap();
    smol::block_on(async {
        let kv = store
            .kv_get(&alice, "private/storage:bookmarks:storage")
            .await
            .unwrap();
        assert_eq!(kv, None);
        assert!(store.pep_node(&alice, LEGACY).await.unwrap().is_none());
        assert!(store.pep_node(&alice, BOOKMARKS).await.unwrap().is_some());
    });
}
