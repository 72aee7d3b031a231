//! End to end: XEP-0163 PEP as OMEMO, avatars and nicknames use it — publish with
//! publish-options, notifications filtered by entity capabilities (the test client answers the
//! server's disco#info like a real client), retrieval under access models, retract, delete,
//! last-item delivery at login, persistence across a restart and account deletion — and
//! vcard-temp with the XEP-0398 avatar conversion.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use common::client::{stanza_error, Client, NS_DISCO_INFO};
use common::TestServer;
use kith::xml::Element;

const QUIET: Duration = Duration::from_millis(400);
const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const NS_PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
const NS_PUBSUB_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
const NS_PUBSUB_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
const NS_CAPS: &str = "http://jabber.org/protocol/caps";
const DEVICELIST: &str = "eu.siacs.conversations.axolotl.devicelist";
const BUNDLE: &str = "eu.siacs.conversations.axolotl.bundles:1234";
const AVATAR_DATA: &str = "urn:xmpp:avatar:data";
const AVATAR_META: &str = "urn:xmpp:avatar:metadata";
const NICK: &str = "http://jabber.org/protocol/nick";

/// What our test client can do, as its disco#info answer.
fn disco_query(extra: &str) -> Element {
    let mut q = Element::new("query", NS_DISCO_INFO).with_child(
        Element::new("identity", NS_DISCO_INFO)
            .with_attr("category", "client")
            .with_attr("type", "phone")
            .with_attr("name", "kith-test"),
    );
    for f in [
        NS_DISCO_INFO,
        NS_CAPS,
        "eu.siacs.conversations.axolotl.devicelist+notify",
        "urn:xmpp:avatar:metadata+notify",
        "http://jabber.org/protocol/nick+notify",
        extra,
    ] {
        q.push_child(Element::new("feature", NS_DISCO_INFO).with_attr("var", f));
    }
    q
}

/// Logged in, roster fetched, initial presence with XEP-0115 caps sent, and the server's
/// disco#info query for those caps answered. Every call advertises a fresh `ver` (one extra
/// feature differs), so the server always asks and the test never depends on its cache.
fn online(server: &TestServer, user: &str, resource: &str) -> Client {
    static N: AtomicUsize = AtomicUsize::new(0);
    let mut c = Client::login_bound(server, user, &format!("{user}-secret"), resource);
    c.roster_get();
    let query = disco_query(&format!(
        "urn:kith:test:{}",
        N.fetch_add(1, Ordering::Relaxed)
    ));
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
    let asked_node = ask.get_child("query", NS_DISCO_INFO).unwrap().attr("node");
    assert_eq!(asked_node, Some(format!("{node}#{ver}").as_str()), "{ask}");
    let mut answer = query.clone();
    answer.set_attr("node", format!("{node}#{ver}"));
    let reply = Element::new("iq", "jabber:client")
        .with_attr("type", "result")
        .with_attr("id", ask.attr("id").unwrap())
        .with_attr("to", ask.attr("from").unwrap())
        .with_child(answer);
    c.send_el(&reply);
    c
}

fn server_with(users: &[&str]) -> TestServer {
    let server = TestServer::start();
    for u in users {
        server.add_user(u, &format!("{u}-secret"));
    }
    server
}

fn presence_from<'a>(from: &'a str, typ: &'a str) -> impl FnMut(&Element) -> bool + 'a {
    move |e| e.name() == "presence" && e.attr("from") == Some(from) && e.attr("type") == Some(typ)
}

/// `x` subscribes to `y`'s presence and `y` approves.
fn subscribe(x: &mut Client, y: &mut Client) {
    let (xbare, ybare) = (x.bare().to_owned(), y.bare().to_owned());
    x.send(&format!("<presence to='{ybare}' type='subscribe'/>"));
    y.recv_until(presence_from(&xbare, "subscribe"));
    y.send(&format!("<presence to='{xbare}' type='subscribed'/>"));
    x.recv_until(presence_from(&ybare, "subscribed"));
}

/// Mutual presence subscription between two online clients.
fn befriend(a: &mut Client, b: &mut Client) {
    subscribe(a, b);
    subscribe(b, a);
    a.drain(QUIET);
    b.drain(QUIET);
}

fn publish(
    c: &mut Client,
    node: &str,
    id: &str,
    payload: &str,
    options: &[(&str, &str)],
) -> Element {
    let mut po = String::new();
    if !options.is_empty() {
        po.push_str(
            "<publish-options><x xmlns='jabber:x:data' type='submit'>\
            <field var='FORM_TYPE' type='hidden'>\
            <value>http://jabber.org/protocol/pubsub#publish-options</value></field>",
        );
        for (k, v) in options {
            po.push_str(&format!("<field var='{k}'><value>{v}</value></field>"));
        }
        po.push_str("</x></publish-options>");
    }
    c.iq(&format!(
        "<iq type='set' id='ID'><pubsub xmlns='{NS_PUBSUB}'><publish node='{node}'>\
         <item id='{id}'>{payload}</item></publish>{po}</pubsub></iq>"
    ))
}

fn fetch(c: &mut Client, owner: &str, node: &str) -> Element {
    c.iq(&format!(
        "<iq type='get' to='{owner}' id='ID'><pubsub xmlns='{NS_PUBSUB}'><items node='{node}'/></pubsub></iq>"
    ))
}

fn fetched_ids(r: &Element) -> Vec<String> {
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    r.get_child("pubsub", NS_PUBSUB)
        .and_then(|p| p.get_child("items", NS_PUBSUB))
        .unwrap_or_else(|| panic!("no items in {r}"))
        .children()
        .filter_map(|i| i.attr("id").map(str::to_owned))
        .collect()
}

fn is_event<'a>(from: &'a str, node: &'a str) -> impl FnMut(&Element) -> bool + 'a {
    move |e| {
        e.name() == "message"
            && e.attr("from") == Some(from)
            && e.get_child("event", NS_PUBSUB_EVENT)
                .is_some_and(|ev| ev.children().any(|c| c.attr("node") == Some(node)))
    }
}

fn event_child(msg: &Element) -> Element {
    msg.get_child("event", NS_PUBSUB_EVENT)
        .and_then(|e| e.first_child())
        .cloned()
        .unwrap()
}

fn pubsub_error(r: &Element) -> (String, Option<String>) {
    assert_eq!(r.attr("type"), Some("error"), "{r}");
    let err = r.get_child("error", "jabber:client").unwrap();
    let specific = err
        .children()
        .find(|c| c.ns() == NS_PUBSUB_ERRORS)
        .map(|c| c.name().to_owned());
    (stanza_error(r), specific)
}

fn events_from(c: &mut Client, from: &str) -> Vec<Element> {
    c.drain(QUIET)
        .into_iter()
        .filter(|e| e.name() == "message" && e.attr("from") == Some(from))
        .collect()
}

const DEVICES: &str = "<list xmlns='eu.siacs.conversations.axolotl'><device id='1234'/></list>";
const BUNDLE_XML: &str = "<bundle xmlns='eu.siacs.conversations.axolotl'>\
    <signedPreKeyPublic signedPreKeyId='1'>BQ==</signedPreKeyPublic></bundle>";

#[test]
fn account_advertises_pep_and_conversion() {
    let server = server_with(&["alice", "bob"]);
    let mut bob = Client::online(&server, "bob", "bob-secret", "pc");
    let alice = server.jid("alice");
    let r = bob.iq(&format!(
        "<iq type='get' to='{alice}' id='ID'><query xmlns='{NS_DISCO_INFO}'/></iq>"
    ));
    let q = r
        .get_child("query", NS_DISCO_INFO)
        .unwrap_or_else(|| panic!("{r}"));
    assert!(
        q.children().any(|c| c.name() == "identity"
            && c.attr("category") == Some("pubsub")
            && c.attr("type") == Some("pep")),
        "{r}"
    );
    let features: Vec<&str> = q.children().filter_map(|c| c.attr("var")).collect();
    for f in [
        "http://jabber.org/protocol/pubsub#publish-options",
        "http://jabber.org/protocol/pubsub#access-open",
        "urn:xmpp:pep-vcard-conversion:0",
        "vcard-temp",
    ] {
        assert!(features.contains(&f), "{f} missing in {r}");
    }
}

#[test]
fn omemo_nick_access_retract_delete() {
    let server = server_with(&["alice", "bob", "carol"]);
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "phone");
    befriend(&mut alice, &mut bob);
    let mut carol = online(&server, "carol", "pc");
    let a = alice.bare().to_owned();

    // OMEMO device list, open: bob (subscribed, +notify) and alice herself are notified.
    let r = publish(
        &mut alice,
        DEVICELIST,
        "current",
        DEVICES,
        &[("pubsub#access_model", "open")],
    );
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let ev = bob.recv_until(is_event(&a, DEVICELIST));
    let item = event_child(&ev);
    assert_eq!(
        item.children().next().and_then(|i| i.attr("id")),
        Some("current"),
        "{ev}"
    );
    assert!(
        ev.to_string().contains("device id='1234'")
            || ev.to_string().contains("device id=\"1234\""),
        "{ev}"
    );
    alice.recv_until(is_event(&a, DEVICELIST));
    // carol has no subscription: no event.
    assert!(events_from(&mut carol, &a).is_empty());

    // The bundle: open, so bob and the stranger carol can fetch it.
    let r = publish(
        &mut alice,
        BUNDLE,
        "current",
        BUNDLE_XML,
        &[("pubsub#access_model", "open")],
    );
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    assert_eq!(fetched_ids(&fetch(&mut bob, &a, BUNDLE)), ["current"]);
    assert_eq!(fetched_ids(&fetch(&mut carol, &a, BUNDLE)), ["current"]);

    // The node config reads back open (the Conversations compliance check).
    let r = alice.iq(&format!(
        "<iq type='get' id='ID'><pubsub xmlns='{NS_PUBSUB_OWNER}'><configure node='{BUNDLE}'/></pubsub></iq>"
    ));
    assert!(r.to_string().contains("<value>open</value>"), "{r}");

    // Nickname with the default (presence) access: bob is notified and may fetch, carol not.
    let r = publish(
        &mut alice,
        NICK,
        "current",
        "<nick xmlns='http://jabber.org/protocol/nick'>Alice</nick>",
        &[],
    );
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let ev = bob.recv_until(is_event(&a, NICK));
    assert!(ev.to_string().contains("Alice"), "{ev}");
    assert_eq!(fetched_ids(&fetch(&mut bob, &a, NICK)), ["current"]);
    let (cond, specific) = pubsub_error(&fetch(&mut carol, &a, NICK));
    assert_eq!(cond, "not-authorized");
    assert_eq!(specific.as_deref(), Some("presence-subscription-required"));
    assert!(events_from(&mut carol, &a).is_empty());

    // publish-options that contradict the node's config: conflict + precondition-not-met.
    let r = publish(
        &mut alice,
        DEVICELIST,
        "current",
        DEVICES,
        &[("pubsub#access_model", "presence")],
    );
    let (cond, specific) = pubsub_error(&r);
    assert_eq!(cond, "conflict");
    assert_eq!(specific.as_deref(), Some("precondition-not-met"));

    // Only the owner publishes.
    let r = publish(&mut carol, DEVICELIST, "current", DEVICES, &[]);
    assert_eq!(
        r.attr("type"),
        Some("result"),
        "carol publishes to her own node: {r}"
    );
    let r = carol.iq(&format!(
        "<iq type='set' to='{a}' id='ID'><pubsub xmlns='{NS_PUBSUB}'><publish node='{NICK}'>\
         <item id='x'/></publish></pubsub></iq>"
    ));
    assert_eq!(pubsub_error(&r).0, "forbidden");

    // Retract: bob hears <retract/>; the item is gone.
    bob.drain(QUIET);
    let r = alice.iq(&format!(
        "<iq type='set' id='ID'><pubsub xmlns='{NS_PUBSUB}'><retract node='{NICK}' notify='true'>\
         <item id='current'/></retract></pubsub></iq>"
    ));
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let ev = bob.recv_until(is_event(&a, NICK));
    let items = event_child(&ev);
    assert!(
        items
            .children()
            .any(|c| c.name() == "retract" && c.attr("id") == Some("current")),
        "{ev}"
    );
    assert!(fetched_ids(&fetch(&mut bob, &a, NICK)).is_empty());

    // Delete node: bob hears <delete/>; the node is gone for everyone.
    let r = alice.iq(&format!(
        "<iq type='set' id='ID'><pubsub xmlns='{NS_PUBSUB_OWNER}'><delete node='{DEVICELIST}'/></pubsub></iq>"
    ));
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let ev = bob.recv_until(is_event(&a, DEVICELIST));
    assert_eq!(event_child(&ev).name(), "delete", "{ev}");
    assert_eq!(
        pubsub_error(&fetch(&mut carol, &a, DEVICELIST)).0,
        "item-not-found"
    );
}

#[test]
fn avatar_and_vcard_conversion() {
    let server = server_with(&["alice", "bob"]);
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "phone");
    befriend(&mut alice, &mut bob);
    let a = alice.bare().to_owned();
    let b = bob.bare().to_owned();
    let b64 = base64::engine::general_purpose::STANDARD;

    // XEP-0084 publish by alice: data, then metadata; bob is notified of the metadata.
    let png = b"\x89PNG\r\n\x1a\nalice's face";
    let id = kith::services::vcard::photo_hash(png);
    let data = b64.encode(png);
    let r = publish(
        &mut alice,
        AVATAR_DATA,
        &id,
        &format!("<data xmlns='{AVATAR_DATA}'>{data}</data>"),
        &[],
    );
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let meta = format!(
        "<metadata xmlns='{AVATAR_META}'><info id='{id}' bytes='{}' type='image/png'/></metadata>",
        png.len()
    );
    let r = publish(&mut alice, AVATAR_META, &id, &meta, &[]);
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let ev = bob.recv_until(is_event(&a, AVATAR_META));
    assert!(ev.to_string().contains(&id), "{ev}");

    // XEP-0398: bob's vcard-temp get for alice shows the avatar as PHOTO.
    let r = bob.iq(&format!(
        "<iq type='get' to='{a}' id='ID'><vCard xmlns='vcard-temp'/></iq>"
    ));
    let photo = r
        .get_child("vCard", "vcard-temp")
        .and_then(|v| v.get_child("PHOTO", "vcard-temp"))
        .unwrap_or_else(|| panic!("no PHOTO in {r}"));
    assert_eq!(
        photo.get_child("BINVAL", "vcard-temp").unwrap().text(),
        data
    );
    assert_eq!(
        photo.get_child("TYPE", "vcard-temp").unwrap().text(),
        "image/png"
    );

    // vcard-temp set with PHOTO by bob publishes his PEP avatar; alice is notified.
    let bob_png = b"\x89PNG\r\n\x1a\nbob's face";
    let bob_id = kith::services::vcard::photo_hash(bob_png);
    let r = bob.iq(&format!(
        "<iq type='set' id='ID'><vCard xmlns='vcard-temp'><FN>Bob</FN><PHOTO><TYPE>image/png</TYPE>\
         <BINVAL>{}</BINVAL></PHOTO></vCard></iq>",
        b64.encode(bob_png)
    ));
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let ev = alice.recv_until(is_event(&b, AVATAR_META));
    assert!(ev.to_string().contains(&bob_id), "{ev}");
    assert_eq!(
        fetched_ids(&fetch(&mut alice, &b, AVATAR_DATA)),
        std::slice::from_ref(&bob_id)
    );
    let r = alice.iq(&format!(
        "<iq type='get' to='{b}' id='ID'><vCard xmlns='vcard-temp'/></iq>"
    ));
    assert!(r.to_string().contains("<FN>Bob</FN>"), "{r}");
    assert!(r.to_string().contains(&b64.encode(bob_png)), "{r}");

    // XEP-0153: alice's next presence carries the hash (last: without caps, it ends her
    // notifications).
    alice.send("<presence><show>away</show></presence>");
    let p = bob.recv_until(|e| e.name() == "presence" && e.attr("from") == Some(alice.jid()));
    let hash = p
        .get_child("x", "vcard-temp:x:update")
        .and_then(|x| x.get_child("photo", "vcard-temp:x:update"))
        .map(|p| p.text());
    assert_eq!(hash.as_deref(), Some(id.as_str()), "{p}");
}

#[test]
fn last_item_at_login_persistence_and_account_deletion() {
    let mut server = server_with(&["alice", "bob"]);
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "phone");
    befriend(&mut alice, &mut bob);
    let a = alice.bare().to_owned();
    bob.disconnect();

    let r = publish(
        &mut alice,
        DEVICELIST,
        "current",
        DEVICES,
        &[("pubsub#access_model", "open")],
    );
    assert_eq!(r.attr("type"), Some("result"), "{r}");

    // bob logs in after the publish: the last item arrives once his caps are known.
    let mut bob = online(&server, "bob", "laptop");
    let ev = bob.recv_until(is_event(&a, DEVICELIST));
    assert!(ev.to_string().contains("1234"), "{ev}");
    bob.disconnect();
    alice.disconnect();

    // Items survive a restart.
    server.restart();
    let mut bob = online(&server, "bob", "laptop");
    bob.recv_until(is_event(&a, DEVICELIST));
    assert_eq!(fetched_ids(&fetch(&mut bob, &a, DEVICELIST)), ["current"]);
    bob.disconnect();

    // A deleted (and re-created) account has no nodes left.
    server.cli_ok(["user", "del", &a]);
    // --force: the name's tombstone would refuse it otherwise.
    server.cli_ok(["user", "add", "--force", &a, "--password", "alice-secret"]);
    let mut alice = Client::online(&server, "alice", "alice-secret", "phone");
    let (cond, _) = pubsub_error(&fetch(&mut alice, &a, DEVICELIST));
    assert_eq!(cond, "item-not-found");
}

#[test]
fn bookmarks_are_private_multi_item_and_listed_only_to_the_owner() {
    let server = server_with(&["alice", "bob"]);
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "phone");
    befriend(&mut alice, &mut bob);
    let a = alice.bare().to_owned();
    // XEP-0402 §3 publish-options, as Conversations and Converse.js send them.
    let options = [
        ("pubsub#persist_items", "true"),
        ("pubsub#max_items", "max"),
        ("pubsub#send_last_published_item", "never"),
        ("pubsub#access_model", "whitelist"),
    ];
    for room in ["one@muc.example", "two@muc.example"] {
        let r = publish(
            &mut alice,
            "urn:xmpp:bookmarks:1",
            room,
            "<conference xmlns='urn:xmpp:bookmarks:1' autojoin='true'/>",
            &options,
        );
        assert_eq!(r.attr("type"), Some("result"), "{r}");
    }
    assert_eq!(
        fetched_ids(&fetch(&mut alice, &a, "urn:xmpp:bookmarks:1")),
        ["one@muc.example", "two@muc.example"]
    );
    let (cond, specific) = pubsub_error(&fetch(&mut bob, &a, "urn:xmpp:bookmarks:1"));
    assert_eq!(cond, "not-allowed");
    assert_eq!(specific.as_deref(), Some("closed-node"));

    // disco#items lists the node to alice, not to bob.
    let items = |c: &mut Client| -> Vec<String> {
        let r = c.iq(&format!(
            "<iq type='get' to='{a}' id='ID'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>"
        ));
        r.get_child("query", "http://jabber.org/protocol/disco#items")
            .unwrap_or_else(|| panic!("{r}"))
            .children()
            .filter_map(|i| i.attr("node").map(str::to_owned))
            .collect()
    };
    assert_eq!(items(&mut alice), ["urn:xmpp:bookmarks:1"]);
    assert!(items(&mut bob).is_empty());

    // Configure: the owner reads and changes the node; others may not.
    let r = alice.iq(&format!(
        "<iq type='set' id='ID'><pubsub xmlns='{NS_PUBSUB_OWNER}'><configure node='urn:xmpp:bookmarks:1'>\
         <x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>\
         <value>http://jabber.org/protocol/pubsub#node_config</value></field>\
         <field var='pubsub#max_items'><value>1</value></field></x></configure></pubsub></iq>"
    ));
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    assert_eq!(
        fetched_ids(&fetch(&mut alice, &a, "urn:xmpp:bookmarks:1")),
        ["two@muc.example"]
    );
    let r = bob.iq(&format!(
        "<iq type='get' to='{a}' id='ID'><pubsub xmlns='{NS_PUBSUB_OWNER}'><configure node='urn:xmpp:bookmarks:1'/></pubsub></iq>"
    ));
    assert_eq!(pubsub_error(&r).0, "forbidden");
}

#[test]
fn approving_a_subscription_delivers_the_last_items() {
    let server = server_with(&["alice", "bob"]);
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "phone");
    let a = alice.bare().to_owned();
    let r = publish(
        &mut alice,
        NICK,
        "current",
        "<nick xmlns='http://jabber.org/protocol/nick'>Alice</nick>",
        &[],
    );
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    // Not subscribed yet: presence access keeps bob out.
    assert!(events_from(&mut bob, &a).is_empty());
    assert_eq!(pubsub_error(&fetch(&mut bob, &a, NICK)).0, "not-authorized");
    subscribe(&mut bob, &mut alice);
    let ev = bob.recv_until(is_event(&a, NICK));
    assert!(ev.to_string().contains("Alice"), "{ev}");
}
