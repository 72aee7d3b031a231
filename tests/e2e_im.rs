//! End to end: instant messaging between two logged-in users (RFC 6121): the roster and its
//! versioning, the presence subscription handshake, presence, chat, routing errors, and the
//! server's own services (disco, ping, version, time, last activity).

mod common;

use std::time::Duration;

use common::client::{stanza_error, Client, NS_CLIENT, NS_DISCO_INFO, NS_ROSTER};
use common::TestServer;
use kith::xml::Element;

const QUIET: Duration = Duration::from_millis(400);

fn server_with_alice_and_bob() -> TestServer {
    let server = TestServer::start();
    server.add_user("alice", "alice-secret");
    server.add_user("bob", "bob-secret");
    server
}

/// Logged in, roster requested (so the session gets roster pushes), initial presence sent.
fn online(server: &TestServer, user: &str, resource: &str) -> Client {
    let mut c = Client::login_bound(server, user, &format!("{user}-secret"), resource);
    c.roster_get();
    c.presence();
    c
}

fn is_push(e: &Element) -> bool {
    e.name() == "iq" && e.attr("type") == Some("set") && e.get_child("query", NS_ROSTER).is_some()
}

/// Waits for a roster push, acknowledges it and returns its `<item/>`.
fn expect_push(c: &mut Client) -> Element {
    let push = c.recv_until(is_push);
    // RFC 6121 §2.1.6: a push comes from the user's bare JID or has no `from`.
    if let Some(from) = push.attr("from") {
        assert_eq!(from, c.bare(), "roster push from a stranger: {push}");
    }
    let id = push.attr("id").expect("push has an id").to_owned();
    c.send(&format!("<iq type='result' id='{id}'/>"));
    let query = push.get_child("query", NS_ROSTER).unwrap();
    assert!(query.attr("ver").is_some(), "push without ver: {push}");
    let items: Vec<&Element> = query.children().collect();
    assert_eq!(items.len(), 1, "a push carries exactly one item: {push}");
    items[0].clone()
}

fn item_state(item: &Element) -> (String, String, Option<String>) {
    (
        item.attr("jid").unwrap_or("").to_owned(),
        item.attr("subscription").unwrap_or("none").to_owned(),
        item.attr("ask").map(str::to_owned),
    )
}

fn presence_from<'a>(from: &'a str, typ: Option<&'a str>) -> impl FnMut(&Element) -> bool + 'a {
    move |e| e.name() == "presence" && e.attr("from") == Some(from) && e.attr("type") == typ
}

// ---------------------------------------------------------------- roster

#[test]
fn roster_get_of_a_new_account_is_empty_and_versioned() {
    let server = server_with_alice_and_bob();
    let mut alice = Client::login_bound(&server, "alice", "alice-secret", "phone");
    let (ver, items) = alice.roster_get();
    assert!(items.is_empty(), "{items:?}");
    assert!(ver.is_some_and(|v| !v.is_empty()), "roster without ver");
    let features = alice.features.clone().unwrap();
    assert!(
        features
            .get_child("ver", "urn:xmpp:features:rosterver")
            .is_some(),
        "roster versioning not advertised: {features}"
    );
}

#[test]
fn roster_set_is_pushed_and_stored_with_name_and_group() {
    let server = server_with_alice_and_bob();
    let mut phone = online(&server, "alice", "phone");
    let mut laptop = online(&server, "alice", "laptop");
    // alice sends:    <iq type='set'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' name='Bob'><group>Friends</group></item></query></iq>
    let r = phone.iq("<iq type='set' id='ID'><query xmlns='jabber:iq:roster'>\
         <item jid='bob@localhost' name='Bob'><group>Friends</group></item></query></iq>");
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    assert!(
        r.first_child().is_none(),
        "a roster set result is empty: {r}"
    );
    // both interested resources receive the push
    for c in [&mut phone, &mut laptop] {
        let item = expect_push(c);
        assert_eq!(item.attr("jid"), Some("bob@localhost"), "{item}");
        assert_eq!(item.attr("name"), Some("Bob"), "{item}");
        assert_eq!(item.attr("subscription"), Some("none"), "{item}");
        assert_eq!(item.attr("ask"), None, "{item}");
        let groups: Vec<String> = item.children().map(|g| g.text()).collect();
        assert_eq!(groups, ["Friends"], "{item}");
    }
    let (_, items) = phone.roster_get();
    assert_eq!(
        items,
        [("bob@localhost".into(), "none".into(), Some("Bob".into()))]
    );
    // bob's roster is untouched by alice's edit
    let mut bob = Client::login_bound(&server, "bob", "bob-secret", "pc");
    assert!(bob.roster_get().1.is_empty());
}

#[test]
fn roster_versioning_answers_an_unchanged_roster_with_an_empty_result() {
    let server = server_with_alice_and_bob();
    let mut alice = online(&server, "alice", "phone");
    let (v0, _) = alice.roster_get();
    let v0 = v0.unwrap();
    // alice sends:    <iq type='get'><query xmlns='jabber:iq:roster' ver='V0'/></iq>
    // alice receives: <iq type='result'/>   (no query: nothing changed)
    let same = alice.iq(&format!(
        "<iq type='get' id='ID'><query xmlns='jabber:iq:roster' ver='{v0}'/></iq>"
    ));
    assert_eq!(same.attr("type"), Some("result"), "{same}");
    assert!(
        same.first_child().is_none(),
        "unchanged roster sent again: {same}"
    );

    alice.iq("<iq type='set' id='ID'><query xmlns='jabber:iq:roster'><item jid='bob@localhost'/></query></iq>");
    let push = expect_push(&mut alice);
    assert_eq!(push.attr("jid"), Some("bob@localhost"));

    let changed = alice.iq(&format!(
        "<iq type='get' id='ID'><query xmlns='jabber:iq:roster' ver='{v0}'/></iq>"
    ));
    assert_eq!(changed.attr("type"), Some("result"), "{changed}");
    let q = changed
        .get_child("query", NS_ROSTER)
        .unwrap_or_else(|| panic!("changed roster not sent: {changed}"));
    let v1 = q.attr("ver").expect("ver");
    assert_ne!(v1, v0, "version did not change");
    assert_eq!(q.children().count(), 1, "{changed}");
}

#[test]
fn roster_remove_is_pushed_as_subscription_remove() {
    let server = server_with_alice_and_bob();
    let mut alice = online(&server, "alice", "phone");
    alice.iq("<iq type='set' id='ID'><query xmlns='jabber:iq:roster'><item jid='bob@localhost'/></query></iq>");
    expect_push(&mut alice);
    let r = alice.iq("<iq type='set' id='ID'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='remove'/></query></iq>");
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let item = expect_push(&mut alice);
    assert_eq!(item.attr("subscription"), Some("remove"), "{item}");
    assert!(alice.roster_get().1.is_empty());
    // removing it again: item-not-found (RFC 6121 §2.5.3)
    let again = alice.iq("<iq type='set' id='ID'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='remove'/></query></iq>");
    assert_eq!(stanza_error(&again), "item-not-found");
}

#[test]
fn roster_set_errors() {
    let server = server_with_alice_and_bob();
    let mut alice = online(&server, "alice", "phone");
    let two = alice.iq("<iq type='set' id='ID'><query xmlns='jabber:iq:roster'><item jid='bob@localhost'/><item jid='carol@localhost'/></query></iq>");
    assert_eq!(stanza_error(&two), "bad-request");
    let myself = alice.iq("<iq type='set' id='ID'><query xmlns='jabber:iq:roster'><item jid='alice@localhost'/></query></iq>");
    assert_eq!(stanza_error(&myself), "not-allowed");
    let dup = alice.iq("<iq type='set' id='ID'><query xmlns='jabber:iq:roster'><item jid='bob@localhost'><group>A</group><group>A</group></item></query></iq>");
    assert_eq!(stanza_error(&dup), "bad-request");
    let empty_group = alice.iq("<iq type='set' id='ID'><query xmlns='jabber:iq:roster'><item jid='bob@localhost'><group></group></item></query></iq>");
    assert_eq!(stanza_error(&empty_group), "not-acceptable");
    alice.expect_nothing(QUIET);
}

// ---------------------------------------------------------------- subscriptions and presence

#[test]
fn full_subscription_handshake_ends_in_both_with_presence_each_way() {
    let server = server_with_alice_and_bob();
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "pc");

    // alice sends: <presence to='bob@localhost' type='subscribe'/>
    alice.send("<presence to='bob@localhost' type='subscribe'/>");
    let item = expect_push(&mut alice);
    assert_eq!(
        item_state(&item),
        (
            "bob@localhost".into(),
            "none".into(),
            Some("subscribe".into())
        )
    );
    // bob receives: <presence from='alice@localhost' type='subscribe'/> (bare JID, §3.1.2)
    let req = bob.recv_until(|e| e.name() == "presence");
    assert_eq!(req.attr("type"), Some("subscribe"), "{req}");
    assert_eq!(req.attr("from"), Some("alice@localhost"), "{req}");
    // bob has no item for alice yet, and a request alone does not create one
    bob.expect_nothing(QUIET);

    // bob sends: <presence to='alice@localhost' type='subscribed'/>
    bob.send("<presence to='alice@localhost' type='subscribed'/>");
    let item = expect_push(&mut bob);
    assert_eq!(
        item_state(&item),
        ("alice@localhost".into(), "from".into(), None)
    );
    let ok = alice.recv_until(presence_from("bob@localhost", Some("subscribed")));
    assert_eq!(ok.attr("to"), Some("alice@localhost"), "{ok}");
    let item = expect_push(&mut alice);
    assert_eq!(
        item_state(&item),
        ("bob@localhost".into(), "to".into(), None)
    );
    // alice receives bob's current presence right away
    alice.recv_until(presence_from("bob@localhost/pc", None));

    // and the other way round
    bob.send("<presence to='alice@localhost' type='subscribe'/>");
    let item = expect_push(&mut bob);
    assert_eq!(
        item_state(&item),
        (
            "alice@localhost".into(),
            "from".into(),
            Some("subscribe".into())
        )
    );
    alice.recv_until(presence_from("bob@localhost", Some("subscribe")));
    // (kith also pushes alice's unchanged item here: see
    // inbound_subscribe_does_not_push_an_unchanged_roster_item)
    alice.clear_backlog();
    alice.send("<presence to='bob@localhost' type='subscribed'/>");
    let item = expect_push(&mut alice);
    assert_eq!(
        item_state(&item),
        ("bob@localhost".into(), "both".into(), None)
    );
    bob.recv_until(presence_from("alice@localhost", Some("subscribed")));
    let item = expect_push(&mut bob);
    assert_eq!(
        item_state(&item),
        ("alice@localhost".into(), "both".into(), None)
    );
    bob.recv_until(presence_from("alice@localhost/phone", None));

    // stored, too
    assert_eq!(
        alice.roster_get().1,
        [("bob@localhost".into(), "both".into(), None)]
    );
    assert_eq!(
        bob.roster_get().1,
        [("alice@localhost".into(), "both".into(), None)]
    );

    // presence changes are broadcast: alice goes away
    alice.send("<presence><show>away</show><status>lunch</status></presence>");
    let away = bob.recv_until(presence_from("alice@localhost/phone", None));
    let show = away.get_child("show", NS_CLIENT).map(|s| s.text());
    assert_eq!(show.as_deref(), Some("away"), "{away}");
    assert_eq!(away.attr("to"), Some("bob@localhost"), "{away}");

    // a new resource of alice probes on initial presence and gets bob's presence
    let mut tablet = online(&server, "alice", "tablet");
    tablet.recv_until(presence_from("bob@localhost/pc", None));

    // bob disconnects without a word: alice's resources receive unavailable
    bob.disconnect();
    alice.recv_until(presence_from("bob@localhost/pc", Some("unavailable")));
    tablet.recv_until(presence_from("bob@localhost/pc", Some("unavailable")));
}

/// Regression: an inbound `subscribe` only sets the contact's pending-in flag, which is not
/// part of a roster item, so it must not cause a push of the unchanged item nor bump the
/// roster version (RFC 6121 §2.1.6: a push announces a *modified* item).
#[test]
fn inbound_subscribe_does_not_push_an_unchanged_roster_item() {
    let server = server_with_alice_and_bob();
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "pc");
    // alice: item for bob with subscription 'to' after bob approved her request
    alice.send("<presence to='bob@localhost' type='subscribe'/>");
    bob.recv_until(presence_from("alice@localhost", Some("subscribe")));
    bob.send("<presence to='alice@localhost' type='subscribed'/>");
    alice.recv_until(presence_from("bob@localhost/pc", None));
    let (ver_before, items) = alice.roster_get();
    assert_eq!(items, [("bob@localhost".into(), "to".into(), None)]);
    alice.clear_backlog();
    // bob asks alice: she gets the request, and her roster item does not change
    bob.send("<presence to='alice@localhost' type='subscribe'/>");
    alice.recv_until(presence_from("bob@localhost", Some("subscribe")));
    alice.expect_nothing(QUIET);
    let (ver_after, items) = alice.roster_get();
    assert_eq!(items, [("bob@localhost".into(), "to".into(), None)]);
    assert_eq!(
        ver_before, ver_after,
        "roster version bumped without a change"
    );
}

#[test]
fn presence_is_not_sent_to_someone_without_a_subscription() {
    let server = server_with_alice_and_bob();
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "pc");
    alice.send("<presence><show>dnd</show></presence>");
    alice.recv_until(presence_from("alice@localhost/phone", None));
    bob.clear_backlog();
    bob.expect_nothing(QUIET);
}

#[test]
fn subscription_request_to_a_nonexistent_account_is_answered_unsubscribed() {
    let server = server_with_alice_and_bob();
    let mut alice = online(&server, "alice", "phone");
    alice.send("<presence to='nobody@localhost' type='subscribe'/>");
    let no = alice.recv_until(|e| e.name() == "presence" && e.attr("type") == Some("unsubscribed"));
    assert_eq!(no.attr("from"), Some("nobody@localhost"), "{no}");
}

// ---------------------------------------------------------------- messages

#[test]
fn chat_to_bare_and_full_jid_is_delivered_with_from_stamped() {
    let server = server_with_alice_and_bob();
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "pc");
    bob.clear_backlog();

    // alice sends:  <message to='bob@localhost' type='chat' id='m1'><body>hi bob</body></message>
    alice.send("<message to='bob@localhost' type='chat' id='m1'><body>hi bob</body></message>");
    // bob receives: <message from='alice@localhost/phone' to='bob@localhost' type='chat' id='m1'>...
    let m = bob.recv();
    assert_eq!(m.name(), "message", "{m}");
    assert_eq!(m.attr("from"), Some("alice@localhost/phone"), "{m}");
    assert_eq!(m.attr("to"), Some("bob@localhost"), "{m}");
    assert_eq!(m.attr("id"), Some("m1"), "{m}");
    assert_eq!(m.attr("type"), Some("chat"), "{m}");
    assert_eq!(
        m.get_child("body", NS_CLIENT).map(|b| b.text()).as_deref(),
        Some("hi bob")
    );

    alice.send("<message to='bob@localhost/pc' type='chat' id='m2'><body>&lt;full&gt; &amp; direct</body></message>");
    let m = bob.recv();
    assert_eq!(m.attr("to"), Some("bob@localhost/pc"), "{m}");
    assert_eq!(m.attr("id"), Some("m2"), "{m}");
    assert_eq!(
        m.get_child("body", NS_CLIENT).map(|b| b.text()).as_deref(),
        Some("<full> & direct")
    );

    // bob answers alice's full JID
    bob.send(
        "<message to='alice@localhost/phone' type='chat' id='r1'><body>hello</body></message>",
    );
    let r = alice.recv_until(|e| e.name() == "message");
    assert_eq!(r.attr("from"), Some("bob@localhost/pc"), "{r}");
    assert_eq!(r.attr("id"), Some("r1"), "{r}");
}

#[test]
fn full_jid_message_goes_only_to_that_resource_and_bare_chat_to_all() {
    let server = server_with_alice_and_bob();
    let mut alice = online(&server, "alice", "phone");
    let mut pc = online(&server, "bob", "pc");
    let mut mobile = online(&server, "bob", "mobile");
    pc.recv_until(presence_from("bob@localhost/mobile", None));
    pc.clear_backlog();
    mobile.clear_backlog();

    alice.send("<message to='bob@localhost/mobile' type='chat'><body>only mobile</body></message>");
    let m = mobile.recv();
    assert_eq!(m.attr("to"), Some("bob@localhost/mobile"), "{m}");
    pc.expect_nothing(QUIET);

    alice.send("<message to='bob@localhost' type='chat'><body>everyone</body></message>");
    for c in [&mut pc, &mut mobile] {
        let m = c.recv();
        assert_eq!(
            m.get_child("body", NS_CLIENT).unwrap().text(),
            "everyone",
            "{m}"
        );
    }
}

#[test]
fn message_to_a_nonexistent_user_bounces_service_unavailable() {
    let server = server_with_alice_and_bob();
    let mut alice = online(&server, "alice", "phone");
    alice.send("<message to='nobody@localhost' type='chat' id='x1'><body>anyone?</body></message>");
    // alice receives: <message from='nobody@localhost' type='error' id='x1'><error type='cancel'><service-unavailable/></error></message>
    let e = alice.recv_until(|e| e.name() == "message");
    assert_eq!(stanza_error(&e), "service-unavailable", "{e}");
    assert_eq!(e.attr("from"), Some("nobody@localhost"), "{e}");
    assert_eq!(e.attr("to"), Some("alice@localhost/phone"), "{e}");
    assert_eq!(e.attr("id"), Some("x1"), "{e}");
}

#[test]
fn message_to_a_remote_domain_bounces_remote_server_not_found() {
    let server = server_with_alice_and_bob();
    let mut alice = online(&server, "alice", "phone");
    alice.send("<message to='carol@example.org' type='chat' id='x2'><body>hi</body></message>");
    let e = alice.recv_until(|e| e.name() == "message");
    assert_eq!(stanza_error(&e), "remote-server-not-found", "{e}");
    assert_eq!(e.attr("from"), Some("carol@example.org"), "{e}");
    assert_eq!(e.attr("id"), Some("x2"), "{e}");
}

#[test]
fn error_messages_are_never_answered() {
    let server = server_with_alice_and_bob();
    let mut alice = online(&server, "alice", "phone");
    alice.send("<message to='nobody@localhost' type='error' id='x3'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>");
    alice.send("<message to='carol@example.org' type='error' id='x4'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>");
    alice.expect_nothing(QUIET);
}

// ---------------------------------------------------------------- iq routing

#[test]
fn iq_to_an_offline_full_jid_is_service_unavailable() {
    let server = server_with_alice_and_bob();
    let mut alice = online(&server, "alice", "phone");
    // alice sends:    <iq to='bob@localhost/gone' type='get'><ping xmlns='urn:xmpp:ping'/></iq>
    // alice receives: <iq from='bob@localhost/gone' type='error'>...<service-unavailable/>...</iq>
    let e = alice
        .iq("<iq to='bob@localhost/gone' type='get' id='ID'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert_eq!(stanza_error(&e), "service-unavailable", "{e}");
    assert_eq!(e.attr("from"), Some("bob@localhost/gone"), "{e}");
}

#[test]
fn iq_to_an_online_full_jid_is_delivered_and_the_answer_routed_back() {
    let server = server_with_alice_and_bob();
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "pc");
    alice.send(
        "<iq to='bob@localhost/pc' type='get' id='v1'><query xmlns='jabber:iq:version'/></iq>",
    );
    let q = bob.recv_until(|e| e.name() == "iq");
    assert_eq!(q.attr("from"), Some("alice@localhost/phone"), "{q}");
    assert_eq!(q.attr("id"), Some("v1"), "{q}");
    bob.send("<iq to='alice@localhost/phone' type='result' id='v1'><query xmlns='jabber:iq:version'><name>bobclient</name></query></iq>");
    let a = alice.recv_until(|e| e.name() == "iq");
    assert_eq!(a.attr("type"), Some("result"), "{a}");
    assert_eq!(a.attr("from"), Some("bob@localhost/pc"), "{a}");
    assert_eq!(a.attr("id"), Some("v1"), "{a}");
}

#[test]
fn iq_with_an_unknown_payload_to_the_server_is_service_unavailable() {
    let server = server_with_alice_and_bob();
    let mut alice = online(&server, "alice", "phone");
    let e = alice
        .iq("<iq to='localhost' type='get' id='ID'><nothing xmlns='urn:example:nothing'/></iq>");
    assert_eq!(stanza_error(&e), "service-unavailable", "{e}");
    let e = alice.iq("<iq type='get' id='ID'><nothing xmlns='urn:example:nothing'/></iq>");
    assert_eq!(stanza_error(&e), "service-unavailable", "{e}");
}

#[test]
fn iq_get_with_two_payloads_is_bad_request() {
    let server = server_with_alice_and_bob();
    let mut alice = online(&server, "alice", "phone");
    let e = alice.iq("<iq to='localhost' type='get' id='ID'><ping xmlns='urn:xmpp:ping'/><ping xmlns='urn:xmpp:ping'/></iq>");
    assert_eq!(stanza_error(&e), "bad-request", "{e}");
}

// ---------------------------------------------------------------- server services

#[test]
fn disco_info_of_the_server() {
    let server = server_with_alice_and_bob();
    let mut alice = online(&server, "alice", "phone");
    let r = alice.iq("<iq to='localhost' type='get' id='ID'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    assert_eq!(r.attr("from"), Some("localhost"), "{r}");
    let q = r.get_child("query", NS_DISCO_INFO).unwrap();
    let identities: Vec<(&str, &str)> = q
        .children()
        .filter(|c| c.name() == "identity")
        .map(|c| {
            (
                c.attr("category").unwrap_or(""),
                c.attr("type").unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(identities, [("server", "im")], "{r}");
    let features: Vec<&str> = q
        .children()
        .filter(|c| c.name() == "feature")
        .filter_map(|c| c.attr("var"))
        .collect();
    for f in [
        "http://jabber.org/protocol/disco#info",
        "urn:xmpp:ping",
        "msgoffline",
        "jabber:iq:version",
        "urn:xmpp:time",
        "jabber:iq:last",
    ] {
        assert!(features.contains(&f), "feature {f} missing: {r}");
    }
}

#[test]
fn ping_version_time_and_uptime_of_the_server() {
    let server = server_with_alice_and_bob();
    let mut alice = online(&server, "alice", "phone");

    let pong = alice.iq("<iq to='localhost' type='get' id='ID'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert_eq!(pong.attr("type"), Some("result"), "{pong}");
    assert!(pong.first_child().is_none(), "{pong}");

    let v =
        alice.iq("<iq to='localhost' type='get' id='ID'><query xmlns='jabber:iq:version'/></iq>");
    assert_eq!(v.attr("type"), Some("result"), "{v}");
    let q = v
        .get_child("query", "jabber:iq:version")
        .expect("version query");
    assert_eq!(
        q.get_child("name", "jabber:iq:version").unwrap().text(),
        "kith"
    );
    assert!(!q
        .get_child("version", "jabber:iq:version")
        .unwrap()
        .text()
        .is_empty());

    let t = alice.iq("<iq to='localhost' type='get' id='ID'><time xmlns='urn:xmpp:time'/></iq>");
    assert_eq!(t.attr("type"), Some("result"), "{t}");
    let time = t.get_child("time", "urn:xmpp:time").expect("time");
    assert_eq!(
        time.get_child("tzo", "urn:xmpp:time").unwrap().text(),
        "+00:00"
    );
    let utc = time.get_child("utc", "urn:xmpp:time").unwrap().text();
    // XEP-0082 DateTime in UTC: 2024-01-02T03:04:05Z (fractions allowed)
    assert!(
        utc.len() >= 20 && utc.ends_with('Z') && utc.as_bytes()[10] == b'T',
        "utc {utc:?}"
    );

    let l = alice.iq("<iq to='localhost' type='get' id='ID'><query xmlns='jabber:iq:last'/></iq>");
    assert_eq!(l.attr("type"), Some("result"), "{l}");
    let secs = l
        .get_child("query", "jabber:iq:last")
        .unwrap()
        .attr("seconds");
    assert!(
        secs.is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n < 600)),
        "uptime {secs:?}: {l}"
    );
}

#[test]
fn disco_info_of_an_account() {
    let server = server_with_alice_and_bob();
    let mut alice = online(&server, "alice", "phone");
    let r = alice.iq("<iq to='bob@localhost' type='get' id='ID'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    assert_eq!(r.attr("from"), Some("bob@localhost"), "{r}");
    let q = r.get_child("query", NS_DISCO_INFO).unwrap();
    let identity = q
        .children()
        .find(|c| c.name() == "identity")
        .expect("identity");
    assert_eq!(identity.attr("category"), Some("account"), "{r}");
    assert_eq!(identity.attr("type"), Some("registered"), "{r}");

    let none = alice.iq("<iq to='nobody@localhost' type='get' id='ID'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    assert_eq!(stanza_error(&none), "service-unavailable", "{none}");
}

#[test]
fn last_activity_of_an_account_needs_a_subscription() {
    let server = server_with_alice_and_bob();
    let mut alice = online(&server, "alice", "phone");
    let e =
        alice.iq("<iq to='bob@localhost' type='get' id='ID'><query xmlns='jabber:iq:last'/></iq>");
    assert_eq!(stanza_error(&e), "forbidden", "{e}");
    let own = alice
        .iq("<iq to='alice@localhost' type='get' id='ID'><query xmlns='jabber:iq:last'/></iq>");
    assert_eq!(own.attr("type"), Some("result"), "{own}");
    assert_eq!(
        own.get_child("query", "jabber:iq:last")
            .unwrap()
            .attr("seconds"),
        Some("0"),
        "alice is online: {own}"
    );
}

// ---------------------------------------------------------------- more routing and presence

/// alice and bob both online with a `both` subscription; backlogs cleared.
fn friends(server: &TestServer) -> (Client, Client) {
    let mut alice = online(server, "alice", "phone");
    let mut bob = online(server, "bob", "pc");
    alice.send("<presence to='bob@localhost' type='subscribe'/>");
    bob.recv_until(presence_from("alice@localhost", Some("subscribe")));
    bob.send("<presence to='alice@localhost' type='subscribed'/>");
    bob.send("<presence to='alice@localhost' type='subscribe'/>");
    alice.recv_until(presence_from("bob@localhost", Some("subscribe")));
    alice.send("<presence to='bob@localhost' type='subscribed'/>");
    bob.recv_until(presence_from("alice@localhost/phone", None));
    alice.recv_until(presence_from("bob@localhost/pc", None));
    // let the last pushes arrive, then forget them
    alice.drain(Duration::from_millis(200));
    bob.drain(Duration::from_millis(200));
    (alice, bob)
}

#[test]
fn directed_presence_is_followed_by_unavailable_on_disconnect() {
    let server = server_with_alice_and_bob();
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "pc");
    bob.clear_backlog();
    // no subscription: alice tells bob directly
    alice.send("<presence to='bob@localhost'><show>chat</show></presence>");
    let p = bob.recv_until(presence_from("alice@localhost/phone", None));
    assert_eq!(
        p.get_child("show", NS_CLIENT).map(|s| s.text()).as_deref(),
        Some("chat")
    );
    alice.disconnect();
    // RFC 6121 §4.6.3: the server sends unavailable to entities that got directed presence
    bob.recv_until(presence_from("alice@localhost/phone", Some("unavailable")));
}

#[test]
fn jids_are_normalized_for_routing_and_in_the_roster() {
    let server = server_with_alice_and_bob();
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "pc");
    alice.send("<message to='BOB@LocalHost' type='chat'><body>caps</body></message>");
    let m = bob.recv_until(|e| e.name() == "message");
    assert_eq!(m.get_child("body", NS_CLIENT).unwrap().text(), "caps");
    let r = alice.iq("<iq type='set' id='ID'><query xmlns='jabber:iq:roster'><item jid='Bob@LOCALHOST'/></query></iq>");
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let item = expect_push(&mut alice);
    assert_eq!(item.attr("jid"), Some("bob@localhost"), "{item}");
}

#[test]
fn roster_set_cannot_change_the_subscription_state() {
    let server = server_with_alice_and_bob();
    let mut alice = online(&server, "alice", "phone");
    let r = alice.iq("<iq type='set' id='ID'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='both'/></query></iq>");
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let item = expect_push(&mut alice);
    assert_eq!(item.attr("subscription"), Some("none"), "{item}");
}

#[test]
fn malformed_to_is_jid_malformed() {
    let server = server_with_alice_and_bob();
    let mut alice = online(&server, "alice", "phone");
    alice.send("<message to='a@b@c' type='chat' id='bad'><body>x</body></message>");
    let e = alice.recv_until(|e| e.name() == "message");
    assert_eq!(stanza_error(&e), "jid-malformed", "{e}");
    assert_eq!(e.attr("id"), Some("bad"), "{e}");
}

#[test]
fn results_and_errors_are_never_answered() {
    let server = server_with_alice_and_bob();
    let mut alice = online(&server, "alice", "phone");
    alice.send("<iq to='localhost' type='result' id='r1'/>");
    alice.send("<iq to='nobody@localhost' type='error' id='r2'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>");
    alice.send("<iq to='bob@localhost/gone' type='result' id='r3'/>");
    alice.expect_nothing(QUIET);
}

#[test]
fn chat_message_to_the_server_is_service_unavailable() {
    let server = server_with_alice_and_bob();
    let mut alice = online(&server, "alice", "phone");
    alice.send("<message to='localhost' type='chat' id='s1'><body>hello server</body></message>");
    let e = alice.recv_until(|e| e.name() == "message");
    assert_eq!(stanza_error(&e), "service-unavailable", "{e}");
}

/// A second login on the same resource replaces the first. The old session's goodbye must
/// not make the new one look offline: contacts' last word about alice/phone is "available",
/// and the new session is not told that its own resource went away.
///
/// Regression: the old session's `disconnected` broadcast used to reach the new session,
/// which has the same full JID, with `<presence type='unavailable'/>` about itself.
#[test]
fn replaced_session_does_not_leave_the_new_one_looking_offline() {
    let server = server_with_alice_and_bob();
    let (mut old, mut bob) = friends(&server);
    let mut new = Client::login_bound(&server, "alice", "alice-secret", "phone");
    old.expect_stream_error("conflict");
    new.roster_get();
    new.send("<presence/>");
    let from_phone = |els: Vec<Element>| -> Vec<String> {
        els.iter()
            .filter(|e| e.name() == "presence" && e.attr("from") == Some("alice@localhost/phone"))
            .map(|e| e.attr("type").unwrap_or("available").to_owned())
            .collect()
    };
    let seen = from_phone(bob.drain(Duration::from_millis(300)));
    assert_eq!(
        seen.last().map(String::as_str),
        Some("available"),
        "bob saw {seen:?}"
    );
    let own = from_phone(new.drain(Duration::from_millis(100)));
    assert!(
        !own.contains(&"unavailable".to_owned()),
        "the new session was told it is unavailable: {own:?}"
    );
}
