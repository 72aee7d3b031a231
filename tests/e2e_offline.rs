//! End to end: what waits for a user who is offline. Messages are stored on disk (and survive
//! a restart), delivered once, in order, stamped with a XEP-0203 delay, at the next initial
//! presence; chat states are not stored; subscription requests wait too.

mod common;

use std::time::Duration;

use common::client::{stanza_error, Client, NS_CLIENT, NS_DELAY};
use common::TestServer;
use kith::xml::Element;

const QUIET: Duration = Duration::from_millis(400);

fn server_with_alice_and_bob(extra_toml: &str) -> TestServer {
    let server = TestServer::start_with(extra_toml);
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

/// Waits until the server has handled everything `c` sent before: stanzas from one
/// connection are processed in order, so the answer to a ping comes after them.
fn sync(c: &mut Client) {
    let pong = c.iq("<iq to='localhost' type='get' id='ID'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert_eq!(pong.attr("type"), Some("result"), "{pong}");
}

fn is_message(e: &Element) -> bool {
    e.name() == "message"
}

fn body(e: &Element) -> String {
    e.get_child("body", NS_CLIENT)
        .map(|b| b.text())
        .unwrap_or_default()
}

#[test]
fn offline_messages_survive_a_restart_and_arrive_once_in_order_with_delay() {
    let mut server = server_with_alice_and_bob("");
    let mut alice = online(&server, "alice", "phone");
    // bob is offline; alice sends three messages (one to a full JID of bob that is gone)
    alice.send("<message to='bob@localhost' type='chat' id='o1'><body>one</body></message>");
    alice.send(
        "<message to='bob@localhost/oldphone' type='chat' id='o2'><body>two</body></message>",
    );
    alice.send("<message to='bob@localhost' id='o3'><body>three</body></message>");
    sync(&mut alice);
    alice.expect_nothing(QUIET); // stored, not bounced

    server.restart();
    alice.expect_close(); // the shutdown closed her stream cleanly

    // bob logs in; nothing arrives before initial presence
    let mut bob = Client::login_bound(&server, "bob", "bob-secret", "pc");
    bob.roster_get();
    bob.expect_nothing(QUIET);
    bob.send("<presence/>");
    let got: Vec<Element> = (0..3).map(|_| bob.recv_until(is_message)).collect();
    let bodies: Vec<String> = got.iter().map(body).collect();
    assert_eq!(bodies, ["one", "two", "three"]);
    let ids: Vec<&str> = got.iter().map(|m| m.attr("id").unwrap_or("")).collect();
    assert_eq!(ids, ["o1", "o2", "o3"]);
    for m in &got {
        assert_eq!(m.attr("from"), Some("alice@localhost/phone"), "{m}");
        let delay = m
            .get_child("delay", NS_DELAY)
            .unwrap_or_else(|| panic!("no <delay xmlns='urn:xmpp:delay'/> in {m}"));
        assert_eq!(delay.attr("from"), Some("localhost"), "{m}");
        let stamp = delay.attr("stamp").unwrap_or("");
        assert!(
            stamp.len() >= 20 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
            "stamp {stamp:?} is not a XEP-0082 UTC DateTime: {m}"
        );
        assert_eq!(
            m.children().filter(|c| c.name() == "delay").count(),
            1,
            "{m}"
        );
    }
    // only the presence reflection may remain; no fourth message
    bob.recv_until(|e| e.name() == "presence" && e.attr("from") == Some("bob@localhost/pc"));
    bob.expect_nothing(QUIET);
    bob.close();

    // delivered messages were deleted: a second login gets none
    let mut again = online(&server, "bob", "pc2");
    again.expect_nothing(QUIET);
}

#[test]
fn chat_states_and_headlines_are_not_stored() {
    let server = server_with_alice_and_bob("");
    let mut alice = online(&server, "alice", "phone");
    alice.send("<message to='bob@localhost' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>");
    alice.send("<message to='bob@localhost' type='headline'><body>news</body></message>");
    alice.send("<message to='bob@localhost' type='chat'><body>real</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>");
    alice.send("<message to='bob@localhost' type='chat'><paused xmlns='http://jabber.org/protocol/chatstates'/><no-store xmlns='urn:xmpp:hints'/></message>");
    sync(&mut alice);
    alice.expect_nothing(QUIET); // none of them bounced

    let mut bob = Client::login_bound(&server, "bob", "bob-secret", "pc");
    bob.send("<presence/>");
    let m = bob.recv_until(is_message);
    assert_eq!(body(&m), "real", "{m}");
    bob.recv_until(|e| e.name() == "presence");
    bob.expect_nothing(QUIET);
}

#[test]
fn a_full_offline_store_bounces_with_service_unavailable() {
    let server = server_with_alice_and_bob("[limits]\nmax_offline_messages = 2");
    let mut alice = online(&server, "alice", "phone");
    for i in 1..=3 {
        alice.send(&format!(
            "<message to='bob@localhost' type='chat' id='q{i}'><body>{i}</body></message>"
        ));
    }
    let e = alice.recv_until(is_message);
    assert_eq!(e.attr("id"), Some("q3"), "{e}");
    assert_eq!(stanza_error(&e), "service-unavailable", "{e}");
    alice.expect_nothing(QUIET);

    let mut bob = Client::login_bound(&server, "bob", "bob-secret", "pc");
    bob.send("<presence/>");
    let bodies: Vec<String> = (0..2).map(|_| body(&bob.recv_until(is_message))).collect();
    assert_eq!(bodies, ["1", "2"]);
}

#[test]
fn pending_subscription_request_waits_for_the_next_login_even_across_a_restart() {
    let mut server = server_with_alice_and_bob("");
    let mut alice = online(&server, "alice", "phone");
    alice.send("<presence to='bob@localhost' type='subscribe'/>");
    sync(&mut alice);
    server.restart();
    alice.expect_close();

    // bob logs in: the request is delivered after his initial presence
    let mut bob = Client::login_bound(&server, "bob", "bob-secret", "pc");
    bob.roster_get();
    bob.expect_nothing(QUIET);
    bob.send("<presence/>");
    let req = bob.recv_until(|e| e.name() == "presence" && e.attr("type") == Some("subscribe"));
    assert_eq!(req.attr("from"), Some("alice@localhost"), "{req}");
    bob.disconnect();

    // not answered yet: delivered again at the next login (RFC 6121 §3.1.3)
    let mut bob = online(&server, "bob", "pc");
    let req = bob.recv_until(|e| e.name() == "presence" && e.attr("type") == Some("subscribe"));
    assert_eq!(req.attr("from"), Some("alice@localhost"), "{req}");
    bob.send("<presence to='alice@localhost' type='subscribed'/>");
    sync(&mut bob);
    bob.close();

    // answered: not delivered any more, and alice's roster shows the subscription
    let mut bob = online(&server, "bob", "pc");
    let early = bob.clear_backlog();
    assert!(
        early.iter().all(|e| e.attr("type") != Some("subscribe")),
        "answered request delivered again: {early:?}"
    );
    bob.expect_nothing(QUIET);
    let mut alice = online(&server, "alice", "phone");
    assert_eq!(
        alice.roster_get().1,
        [("bob@localhost".into(), "to".into(), None)]
    );
}

#[test]
fn messages_while_online_are_not_stored() {
    let server = server_with_alice_and_bob("");
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "pc");
    alice.send("<message to='bob@localhost' type='chat'><body>live</body></message>");
    assert_eq!(body(&bob.recv_until(is_message)), "live");
    bob.close();
    let mut bob = online(&server, "bob", "pc");
    bob.expect_nothing(QUIET);
}

/// A bound resource that never sent initial presence is not "available" (RFC 6121 §4.1):
/// messages to the bare JID are stored for later rather than lost.
#[test]
fn messages_to_a_connected_but_unavailable_user_are_stored() {
    let server = server_with_alice_and_bob("");
    let mut alice = online(&server, "alice", "phone");
    let mut bob = Client::login_bound(&server, "bob", "bob-secret", "pc");
    alice.send("<message to='bob@localhost' type='chat'><body>later</body></message>");
    sync(&mut alice);
    bob.expect_nothing(QUIET);
    bob.send("<presence/>");
    assert_eq!(body(&bob.recv_until(is_message)), "later");
}

/// XEP-0160 §2 (step 4): stored messages are delivered when the recipient next sends
/// *non-negative* available presence. A resource with negative priority (a bot, a monitor)
/// never gets messages addressed to the bare JID (RFC 6121 §8.5.2.1.1), so it must not
/// swallow the offline queue either.
///
/// Regression: stored messages used to be delivered (and deleted) at any initial presence,
/// whatever its priority, and a later change to a non-negative priority did not deliver them.
#[test]
fn offline_messages_wait_for_non_negative_presence() {
    let server = server_with_alice_and_bob("");
    let mut alice = online(&server, "alice", "phone");
    alice.send("<message to='bob@localhost' type='chat'><body>for a human</body></message>");
    sync(&mut alice);

    let mut bot = Client::login_bound(&server, "bob", "bob-secret", "bot");
    bot.send("<presence><priority>-1</priority></presence>");
    let early = bot.drain(QUIET);
    assert!(
        early.iter().all(|e| e.name() != "message"),
        "offline message delivered to a negative-priority resource: {early:?}"
    );
    let mut phone = Client::login_bound(&server, "bob", "bob-secret", "phone");
    phone.send("<presence/>");
    let m = phone.recv_until(is_message);
    assert_eq!(body(&m), "for a human");
}
