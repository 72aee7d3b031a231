//! End to end: XEP-0191 Blocking Command: the blocklist, pushes to the resources that asked
//! for it, and enforcement on messages, presence and iq in both directions.

mod common;

use std::time::Duration;

use common::client::{stanza_error, Client, NS_DISCO_INFO};
use common::TestServer;
use kith::xml::Element;

const QUIET: Duration = Duration::from_millis(400);
const NS_BLOCKING: &str = "urn:xmpp:blocking";

fn server_with_alice_and_bob() -> TestServer {
    let server = TestServer::start();
    server.add_user("alice", "alice-secret");
    server.add_user("bob", "bob-secret");
    server
}

fn online(server: &TestServer, user: &str, resource: &str) -> Client {
    let mut c = Client::login_bound(server, user, &format!("{user}-secret"), resource);
    c.roster_get();
    c.presence();
    c
}

fn presence_from<'a>(from: &'a str, typ: Option<&'a str>) -> impl FnMut(&Element) -> bool + 'a {
    move |e| e.name() == "presence" && e.attr("from") == Some(from) && e.attr("type") == typ
}

/// alice and bob online with a `both` subscription; backlogs cleared.
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
    alice.drain(Duration::from_millis(200));
    bob.drain(Duration::from_millis(200));
    (alice, bob)
}

fn blocklist(c: &mut Client) -> Vec<String> {
    let r = c.iq("<iq type='get' id='ID'><blocklist xmlns='urn:xmpp:blocking'/></iq>");
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    r.get_child("blocklist", NS_BLOCKING)
        .unwrap_or_else(|| panic!("no blocklist in {r}"))
        .children()
        .filter_map(|i| i.attr("jid").map(str::to_owned))
        .collect()
}

fn block(c: &mut Client, jid: &str) {
    let r = c.iq(&format!(
        "<iq type='set' id='ID'><block xmlns='urn:xmpp:blocking'><item jid='{jid}'/></block></iq>"
    ));
    assert_eq!(r.attr("type"), Some("result"), "{r}");
}

fn unblock(c: &mut Client, jid: &str) {
    let r = c.iq(&format!(
        "<iq type='set' id='ID'><unblock xmlns='urn:xmpp:blocking'><item jid='{jid}'/></unblock></iq>"
    ));
    assert_eq!(r.attr("type"), Some("result"), "{r}");
}

fn is_blocking_push(e: &Element, name: &str) -> bool {
    e.name() == "iq" && e.attr("type") == Some("set") && e.get_child(name, NS_BLOCKING).is_some()
}

#[test]
fn server_advertises_blocking() {
    let server = server_with_alice_and_bob();
    let mut alice = Client::login_bound(&server, "alice", "alice-secret", "phone");
    let r = alice.iq(
        "<iq type='get' id='ID' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    );
    let q = r.get_child("query", NS_DISCO_INFO).unwrap();
    assert!(
        q.children().any(|f| f.attr("var") == Some(NS_BLOCKING)),
        "no blocking feature: {r}"
    );
}

#[test]
fn block_and_unblock_are_stored_and_pushed_to_interested_resources() {
    let server = server_with_alice_and_bob();
    let mut phone = online(&server, "alice", "phone");
    let mut laptop = online(&server, "alice", "laptop");
    let mut tablet = online(&server, "alice", "tablet");
    assert!(blocklist(&mut phone).is_empty());
    assert!(blocklist(&mut laptop).is_empty());
    // tablet never asked for the blocklist: no pushes for it.

    block(&mut phone, "bob@localhost");
    for c in [&mut phone, &mut laptop] {
        let push = c.recv_until(|e| is_blocking_push(e, "block"));
        let item = push
            .get_child("block", NS_BLOCKING)
            .unwrap()
            .children()
            .next()
            .unwrap();
        assert_eq!(item.attr("jid"), Some("bob@localhost"));
        let id = push.attr("id").unwrap().to_owned();
        c.send(&format!("<iq type='result' id='{id}'/>"));
    }
    assert!(!tablet
        .drain(QUIET)
        .iter()
        .any(|e| is_blocking_push(e, "block")));
    assert_eq!(blocklist(&mut laptop), ["bob@localhost"]);

    // A second item, then unblock-all.
    block(&mut phone, "evil.example");
    assert_eq!(blocklist(&mut phone).len(), 2);
    let r = phone.iq("<iq type='set' id='ID'><unblock xmlns='urn:xmpp:blocking'/></iq>");
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let push = laptop.recv_until(|e| is_blocking_push(e, "unblock"));
    assert_eq!(
        push.get_child("unblock", NS_BLOCKING)
            .unwrap()
            .children()
            .count(),
        0,
        "unblock-all is pushed without items: {push}"
    );
    assert!(blocklist(&mut phone).is_empty());

    // The list survives a restart of the session (it's stored).
    block(&mut phone, "carol@localhost");
    phone.drain(QUIET);
    phone.close();
    let mut again = Client::login_bound(&server, "alice", "alice-secret", "phone2");
    assert_eq!(blocklist(&mut again), ["carol@localhost"]);

    // Malformed requests.
    let r = again.iq("<iq type='set' id='ID'><block xmlns='urn:xmpp:blocking'/></iq>");
    assert_eq!(stanza_error(&r), "bad-request", "{r}");
}

#[test]
fn blocking_stops_messages_iq_and_presence_in_both_directions() {
    let server = server_with_alice_and_bob();
    let (mut alice, mut bob) = friends(&server);
    block(&mut alice, "bob@localhost");
    // §3.3: bob sees alice go offline.
    bob.recv_until(presence_from("alice@localhost/phone", Some("unavailable")));

    // Outbound: alice -> bob bounces with not-acceptable + <blocked/>.
    alice.send("<message to='bob@localhost' type='chat' id='m1'><body>hi</body></message>");
    let err = alice.recv_until(|e| e.name() == "message" && e.attr("id") == Some("m1"));
    assert_eq!(stanza_error(&err), "not-acceptable", "{err}");
    let e = err.get_child("error", "jabber:client").unwrap();
    assert!(
        e.get_child("blocked", "urn:xmpp:blocking:errors").is_some(),
        "no <blocked/>: {err}"
    );
    let r =
        alice.iq("<iq type='get' id='ID' to='bob@localhost/pc'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert_eq!(stanza_error(&r), "not-acceptable", "{r}");

    // Inbound: bob -> alice bounces service-unavailable.
    bob.send("<message to='alice@localhost' type='chat' id='m2'><body>hello?</body></message>");
    let err = bob.recv_until(|e| e.name() == "message" && e.attr("id") == Some("m2"));
    assert_eq!(stanza_error(&err), "service-unavailable", "{err}");
    let r = bob
        .iq("<iq type='get' id='ID' to='alice@localhost/phone'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert_eq!(stanza_error(&r), "service-unavailable", "{r}");
    let r =
        bob.iq("<iq type='get' id='ID' to='alice@localhost'><query xmlns='jabber:iq:last'/></iq>");
    assert_eq!(stanza_error(&r), "service-unavailable", "{r}");

    // Presence: neither direction.
    bob.send("<presence><show>away</show></presence>");
    alice.send("<presence><show>dnd</show></presence>");
    let got = alice.drain(QUIET);
    assert!(
        !got.iter()
            .any(|e| e.name() == "presence" && e.attr("from") == Some("bob@localhost/pc")),
        "alice got bob's presence: {got:?}"
    );
    assert!(!got.iter().any(|e| e.name() == "message"), "{got:?}");
    let got = bob.drain(QUIET);
    assert!(
        !got.iter()
            .any(|e| e.name() == "presence" && e.attr("from") == Some("alice@localhost/phone")),
        "bob got alice's presence: {got:?}"
    );
    // Probes are not answered: bob's new resource gets nothing from alice.
    let mut bob2 = online(&server, "bob", "tablet");
    let got = bob2.drain(QUIET);
    assert!(
        !got.iter()
            .any(|e| e.name() == "presence" && e.attr("from") == Some("alice@localhost/phone")),
        "probe answered: {got:?}"
    );

    // Unblock: messages flow again and bob sees alice's presence.
    unblock(&mut alice, "bob@localhost");
    bob.recv_until(presence_from("alice@localhost/phone", None));
    // ...and alice's resource gets bob's current presence (it probed him).
    alice.recv_until(presence_from("bob@localhost/pc", None));
    alice.send("<message to='bob@localhost' type='chat' id='m3'><body>back</body></message>");
    let m = bob.recv_until(|e| e.name() == "message" && e.attr("id") == Some("m3"));
    assert_eq!(m.attr("type"), Some("chat"));
}

#[test]
fn a_blocked_domain_covers_its_users() {
    let server = server_with_alice_and_bob();
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "pc");
    block(&mut alice, "localhost/nothing");
    block(&mut bob, "localhost");
    bob.send("<message to='alice@localhost' type='chat' id='d1'><body>x</body></message>");
    let err = bob.recv_until(|e| e.name() == "message" && e.attr("id") == Some("d1"));
    assert_eq!(stanza_error(&err), "not-acceptable", "{err}");
    alice.expect_nothing(QUIET);
}
