//! End to end: what makes a phone client work well. XEP-0280 carbons (every device sees the
//! whole conversation), XEP-0352 client state indication (an inactive phone is not woken for
//! presence), and XEP-0198 stream management: acks, resumption after a dropped connection
//! with nothing lost in either direction, and, when the client never comes back (or the
//! server restarts), unacknowledged messages in offline storage.

mod common;

use std::time::Duration;

use common::client::{Client, NS_CLIENT};
use common::TestServer;
use kith::xml::Element;

const QUIET: Duration = Duration::from_millis(400);
const NS_SM: &str = "urn:xmpp:sm:3";
const NS_CARBONS: &str = "urn:xmpp:carbons:2";
const NS_FORWARD: &str = "urn:xmpp:forward:0";

fn server_with(extra: &str) -> TestServer {
    let server = TestServer::start_with(extra);
    server.add_user("alice", "alice-secret");
    server.add_user("bob", "bob-secret");
    server
}

fn online(server: &TestServer, user: &str, resource: &str) -> Client {
    Client::online(server, user, &format!("{user}-secret"), resource)
}

fn body_of(e: &Element) -> Option<String> {
    e.get_child("body", NS_CLIENT).map(|b| b.text())
}

fn chat_with_body(body: &str) -> impl FnMut(&Element) -> bool + '_ {
    move |e| e.name() == "message" && body_of(e).as_deref() == Some(body)
}

fn enable_carbons(c: &mut Client) {
    let r = c.iq("<iq type='set' id='ID'><enable xmlns='urn:xmpp:carbons:2'/></iq>");
    assert_eq!(r.attr("type"), Some("result"), "carbons enable: {r}");
}

/// The message inside a carbon: `<message><sent|received><forwarded><message/>`.
fn carbon_inner(e: &Element, direction: &str) -> Option<Element> {
    e.get_child(direction, NS_CARBONS)?
        .get_child("forwarded", NS_FORWARD)?
        .get_child("message", NS_CLIENT)
        .cloned()
}

fn enable_sm(c: &mut Client) -> Element {
    c.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
    let enabled = c.recv_until(|e| e.ns() == NS_SM);
    assert!(
        enabled.is("enabled", NS_SM),
        "expected <enabled/>: {enabled}"
    );
    enabled
}

/// A fresh connection logged in as `user` that resumes `previd`, acknowledging `h`.
fn resume(server: &TestServer, user: &str, previd: &str, h: u32) -> (Client, Element) {
    let mut c = Client::starttls_to(server);
    c.login(user, &format!("{user}-secret"));
    c.send(&format!(
        "<resume xmlns='urn:xmpp:sm:3' previd='{previd}' h='{h}'/>"
    ));
    let answer = c.recv_until(|e| e.ns() == NS_SM);
    (c, answer)
}

#[test]
fn carbons_show_both_sides_of_a_conversation_on_every_device() {
    let server = server_with("");
    let mut phone = online(&server, "alice", "phone");
    let mut desk = online(&server, "alice", "desk");
    let mut bob = online(&server, "bob", "pc");
    enable_carbons(&mut phone);
    enable_carbons(&mut desk);
    // Each device has seen the other come online; start from a quiet line.
    phone.drain(QUIET);
    desk.drain(QUIET);

    // bob writes to alice's phone: the desk sees a <received/> carbon.
    bob.send("<message to='alice@localhost/phone' type='chat' id='m1'><body>to the phone</body></message>");
    phone.recv_until(chat_with_body("to the phone"));
    let carbon = desk.recv_until(|e| e.get_child("received", NS_CARBONS).is_some());
    assert_eq!(
        carbon.attr("from"),
        Some("alice@localhost"),
        "carbons come from the bare JID"
    );
    let inner = carbon_inner(&carbon, "received").expect("forwarded message");
    assert_eq!(body_of(&inner).as_deref(), Some("to the phone"));
    assert_eq!(inner.attr("from"), Some("bob@localhost/pc"));

    // alice answers from the desk: the phone sees a <sent/> carbon, bob the message.
    desk.send(
        "<message to='bob@localhost' type='chat' id='m2'><body>from the desk</body></message>",
    );
    bob.recv_until(chat_with_body("from the desk"));
    let carbon = phone.recv_until(|e| e.get_child("sent", NS_CARBONS).is_some());
    let inner = carbon_inner(&carbon, "sent").expect("forwarded message");
    assert_eq!(body_of(&inner).as_deref(), Some("from the desk"));
    assert_eq!(inner.attr("to"), Some("bob@localhost"));
    desk.expect_nothing(QUIET);

    // <private/> keeps a message off the other devices.
    desk.send("<message to='bob@localhost' type='chat'><body>secret</body><private xmlns='urn:xmpp:carbons:2'/></message>");
    bob.recv_until(chat_with_body("secret"));
    phone.expect_nothing(QUIET);

    // A device that disabled carbons gets none.
    let r = phone.iq("<iq type='set' id='ID'><disable xmlns='urn:xmpp:carbons:2'/></iq>");
    assert_eq!(r.attr("type"), Some("result"));
    desk.send("<message to='bob@localhost' type='chat'><body>after disable</body></message>");
    bob.recv_until(chat_with_body("after disable"));
    phone.expect_nothing(QUIET);
}

#[test]
fn server_advertises_carbons() {
    let server = server_with("");
    let mut alice = online(&server, "alice", "phone");
    let info = alice.iq(
        "<iq type='get' id='ID' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    );
    assert!(info.to_string().contains("urn:xmpp:carbons:2"), "{info}");
}

#[test]
fn post_login_features_offer_stream_management_and_csi() {
    let server = server_with("");
    let mut c = Client::starttls_to(&server);
    c.login("alice", "alice-secret");
    let f = c.features.clone().expect("features");
    assert!(f.has_child("sm", NS_SM), "{f}");
    assert!(f.has_child("csi", "urn:xmpp:csi:0"), "{f}");

    // XEP-0115: the server's caps in the features, verifiable with a node#ver query.
    let caps = f
        .get_child("c", "http://jabber.org/protocol/caps")
        .unwrap_or_else(|| panic!("no <c/> in {f}"))
        .clone();
    assert_eq!(caps.attr("hash"), Some("sha-1"));
    let (node, ver) = (
        caps.attr("node").expect("node"),
        caps.attr("ver").expect("ver"),
    );
    c.bind(Some("phone"));
    let info = c.iq(&format!(
        "<iq type='get' id='ID' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info' node='{node}#{ver}'/></iq>"
    ));
    let query = info
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .expect("query");
    assert!(
        query.has_child("identity", "http://jabber.org/protocol/disco#info"),
        "{info}"
    );
    assert_eq!(
        kith::services::caps::ver_hash(query),
        ver,
        "the advertised ver verifies"
    );
}

#[test]
fn inactive_client_is_not_woken_for_presence_but_is_for_a_message() {
    let server = server_with("");
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "pc");
    // Mutual subscription so presence flows.
    alice.send("<presence to='bob@localhost' type='subscribe'/>");
    bob.recv_until(|e| e.attr("type") == Some("subscribe"));
    bob.send("<presence to='alice@localhost' type='subscribed'/>");
    alice.recv_until(|e| e.name() == "presence" && e.attr("from") == Some("bob@localhost/pc"));
    bob.send("<presence to='alice@localhost' type='subscribe'/>");
    alice.recv_until(|e| e.attr("type") == Some("subscribe"));
    alice.send("<presence to='bob@localhost' type='subscribed'/>");
    bob.recv_until(|e| e.name() == "presence" && e.attr("from") == Some("alice@localhost/phone"));
    bob.drain(QUIET);

    bob.send("<inactive xmlns='urn:xmpp:csi:0'/>");
    alice.send("<presence><show>away</show></presence>");
    alice.send("<presence><show>xa</show></presence>");
    bob.expect_nothing(QUIET);

    alice.send("<message to='bob@localhost' type='chat'><body>wake up</body></message>");
    // The held presence comes first (only the newest), then the message.
    let first = bob.recv_until(|e| e.name() == "presence" || e.name() == "message");
    assert_eq!(
        first.name(),
        "presence",
        "held presence flushed before the message"
    );
    assert_eq!(
        first
            .get_child("show", NS_CLIENT)
            .map(|s| s.text())
            .as_deref(),
        Some("xa")
    );
    let second = bob.recv_until(|e| e.name() == "presence" || e.name() == "message");
    assert_eq!(body_of(&second).as_deref(), Some("wake up"));

    alice.send("<presence><show>dnd</show></presence>");
    bob.expect_nothing(QUIET);
    bob.send("<active xmlns='urn:xmpp:csi:0'/>");
    let p = bob.recv_until(|e| e.name() == "presence");
    assert_eq!(
        p.get_child("show", NS_CLIENT).map(|s| s.text()).as_deref(),
        Some("dnd")
    );
}

#[test]
fn acks_count_stanzas_both_ways() {
    let server = server_with("");
    let mut alice = online(&server, "alice", "phone");
    let enabled = enable_sm(&mut alice);
    assert_eq!(enabled.attr("resume"), Some("true"));
    assert!(enabled.attr("id").is_some_and(|id| !id.is_empty()));
    assert_eq!(
        enabled.attr("max"),
        Some("300"),
        "default resumption window is 5 minutes"
    );

    alice.send("<message to='bob@localhost' type='chat'><body>1</body></message>");
    alice.send("<presence><show>away</show></presence>");
    alice.send("<r xmlns='urn:xmpp:sm:3'/>");
    let a = alice.recv_until(|e| e.is("a", NS_SM));
    assert_eq!(
        a.attr("h"),
        Some("2"),
        "two stanzas handled since <enable/>"
    );

    // The server asks for acks after sending stanzas.
    let mut bob = online(&server, "bob", "pc");
    bob.send("<message to='alice@localhost/phone' type='chat'><body>hi</body></message>");
    alice.recv_until(chat_with_body("hi"));
    alice.recv_until(|e| e.is("r", NS_SM));
}

#[test]
fn resumption_loses_nothing_in_either_direction() {
    let server = server_with("");
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "pc");
    let previd = enable_sm(&mut alice).attr("id").expect("id").to_owned();

    for i in 1..=3 {
        bob.send(&format!(
            "<message to='alice@localhost/phone' type='chat'><body>b{i}</body></message>"
        ));
    }
    for i in 1..=3 {
        alice.recv_until(chat_with_body(&format!("b{i}")));
    }
    // alice acknowledges only the first, sends two messages of her own, and loses the network.
    alice.send("<a xmlns='urn:xmpp:sm:3' h='1'/>");
    alice.send("<message to='bob@localhost' type='chat'><body>a1</body></message>");
    alice.send("<message to='bob@localhost' type='chat'><body>a2</body></message>");
    bob.recv_until(chat_with_body("a1"));
    bob.recv_until(chat_with_body("a2"));
    alice.disconnect();

    // While she is away, bob keeps writing; her presence stays (the session is only parked).
    bob.send("<message to='alice@localhost/phone' type='chat'><body>b4</body></message>");
    bob.expect_nothing(QUIET);

    let (mut alice, resumed) = resume(&server, "alice", &previd, 1);
    assert!(
        resumed.is("resumed", NS_SM),
        "expected <resumed/>: {resumed}"
    );
    assert_eq!(resumed.attr("previd"), Some(previd.as_str()));
    assert_eq!(
        resumed.attr("h"),
        Some("2"),
        "the server handled both of alice's messages"
    );
    alice.set_jid("alice@localhost/phone");
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let m = alice.recv_until(|e| e.name() == "message");
        bodies.push(body_of(&m).unwrap_or_default());
    }
    assert_eq!(
        bodies,
        ["b2", "b3", "b4"],
        "unacked messages re-sent in order, then the queued one"
    );
    alice.send("<a xmlns='urn:xmpp:sm:3' h='4'/>");

    // The resumed session routes as before.
    bob.send("<message to='alice@localhost/phone' type='chat'><body>b5</body></message>");
    alice.recv_until(chat_with_body("b5"));
    alice.send("<message to='bob@localhost' type='chat'><body>a3</body></message>");
    bob.recv_until(chat_with_body("a3"));
}

#[test]
fn resuming_a_live_session_takes_it_over() {
    let server = server_with("");
    let mut old = online(&server, "alice", "phone");
    let previd = enable_sm(&mut old).attr("id").expect("id").to_owned();
    // The old connection is still open (the server hasn't noticed the network change).
    let (mut new, resumed) = resume(&server, "alice", &previd, 0);
    assert!(resumed.is("resumed", NS_SM), "{resumed}");
    new.set_jid("alice@localhost/phone");
    old.expect_close();
    let mut bob = online(&server, "bob", "pc");
    bob.send(
        "<message to='alice@localhost/phone' type='chat'><body>to the new one</body></message>",
    );
    new.recv_until(chat_with_body("to the new one"));
}

#[test]
fn unknown_or_foreign_session_is_not_resumed() {
    let server = server_with("");
    let mut alice = online(&server, "alice", "phone");
    let previd = enable_sm(&mut alice).attr("id").expect("id").to_owned();
    // bob can't take alice's session, even with its id.
    let (mut bob, failed) = resume(&server, "bob", &previd, 0);
    assert!(failed.is("failed", NS_SM), "{failed}");
    assert!(
        failed.has_child("item-not-found", "urn:ietf:params:xml:ns:xmpp-stanzas"),
        "{failed}"
    );
    // After <failed/> the client binds normally.
    bob.bind(Some("pc"));
    let (_, failed) = resume(&server, "alice", "no-such-session", 0);
    assert!(failed.is("failed", NS_SM), "{failed}");
}

#[test]
fn unacked_messages_reach_offline_storage_when_the_window_closes() {
    let server = server_with("[limits]\nresume_timeout = \"10s\"");
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "pc");
    let previd = enable_sm(&mut alice).attr("id").expect("id").to_owned();
    bob.send("<message to='alice@localhost' type='chat'><body>one</body></message>");
    bob.send("<message to='alice@localhost' type='chat'><body>two</body></message>");
    alice.recv_until(chat_with_body("two"));
    alice.disconnect();
    bob.send("<message to='alice@localhost' type='chat'><body>three</body></message>");

    std::thread::sleep(Duration::from_secs(12));
    let (mut c, failed) = resume(&server, "alice", &previd, 0);
    assert!(failed.is("failed", NS_SM), "the window is closed: {failed}");
    c.bind(Some("phone"));
    c.presence();
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let m = c.recv_until(|e| e.name() == "message");
        assert!(
            m.has_child("delay", "urn:xmpp:delay"),
            "from offline storage: {m}"
        );
        bodies.push(body_of(&m).unwrap_or_default());
    }
    assert_eq!(bodies, ["one", "two", "three"]);
    c.expect_nothing(QUIET);
}

#[test]
fn after_a_restart_resumption_fails_cleanly_and_nothing_unacked_is_lost() {
    let mut server = server_with("");
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "pc");
    let previd = enable_sm(&mut alice).attr("id").expect("id").to_owned();
    bob.send("<message to='alice@localhost' type='chat'><body>before restart</body></message>");
    alice.recv_until(chat_with_body("before restart"));
    drop(bob);
    drop(alice);
    server.restart();
    let (mut c, failed) = resume(&server, "alice", &previd, 0);
    assert!(failed.is("failed", NS_SM), "{failed}");
    assert!(failed.has_child("item-not-found", "urn:ietf:params:xml:ns:xmpp-stanzas"));
    c.bind(Some("phone"));
    c.presence();
    let m = c.recv_until(|e| e.name() == "message");
    assert_eq!(body_of(&m).as_deref(), Some("before restart"));
}

fn push_app(server: &TestServer) -> Client {
    server.add_user("push", "push-secret");
    Client::login_bound(server, "push", "push-secret", "app")
}

fn enable_push(c: &mut Client) {
    let r = c.iq(
        "<iq type='set' id='ID'><enable xmlns='urn:xmpp:push:0' jid='push@localhost/app' node='n1'/></iq>",
    );
    assert_eq!(r.attr("type"), Some("result"), "push enable: {r}");
}

fn is_publish(e: &Element) -> bool {
    e.name() == "iq"
        && e.attr("type") == Some("set")
        && e.get_child("pubsub", "http://jabber.org/protocol/pubsub")
            .is_some()
}

#[test]
fn push_wakes_a_parked_or_inactive_phone_but_not_an_awake_one() {
    let server = server_with("");
    let mut app = push_app(&server);
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "pc");
    enable_push(&mut alice);

    // Awake: no push.
    bob.send("<message to='alice@localhost' type='chat'><body>awake</body></message>");
    alice.recv_until(chat_with_body("awake"));
    assert!(
        !app.drain(QUIET).iter().any(is_publish),
        "pushed to an awake device"
    );

    // CSI-inactive: the message is delivered (it has a body) and a push wakes the app.
    alice.send("<inactive xmlns='urn:xmpp:csi:0'/>");
    bob.send("<message to='alice@localhost' type='chat'><body>pocket</body></message>");
    let publish = app.recv_until(is_publish);
    assert_eq!(publish.attr("from"), Some("alice@localhost"));
    assert!(
        !publish.to_string().contains("pocket"),
        "body leaked: {publish}"
    );
    alice.recv_until(chat_with_body("pocket"));
    alice.send("<active xmlns='urn:xmpp:csi:0'/>");

    // Parked for resumption: push again.
    let _ = enable_sm(&mut alice);
    alice.disconnect();
    std::thread::sleep(Duration::from_millis(300));
    bob.send("<message to='alice@localhost' type='chat'><body>lost wifi</body></message>");
    app.recv_until(is_publish);
}

/// Tigase's iOS push extensions (Siskin, Monal): with a key in `<enable/>` the notification
/// carries an AES-128-GCM `<encrypted/>` JSON payload (sender, text) instead of the summary
/// form, which the device's key opens (tag checked); `<priority/>` adds `high`. A bad key is
/// refused at enable time. The account advertises the features.
#[test]
fn push_extensions_encrypt_the_payload_and_mark_priority() {
    use base64::Engine as _;
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
    let b64 = base64::engine::general_purpose::STANDARD;
    let server = server_with("");
    let mut app = push_app(&server);
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "pc");

    let info = alice.iq("<iq type='get' id='ID' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    for f in [
        "tigase:push:encrypt:0",
        "tigase:push:encrypt:aes-128-gcm",
        "tigase:push:priority:0",
    ] {
        assert!(info.to_string().contains(f), "{f} not advertised: {info}");
    }
    let bad = alice.iq("<iq type='set' id='ID'><enable xmlns='urn:xmpp:push:0' jid='push@localhost/app' node='n1'><encrypt xmlns='tigase:push:encrypt:0' alg='aes-128-gcm'>c2hvcnQ=</encrypt></enable></iq>");
    assert_eq!(bad.attr("type"), Some("error"), "{bad}");

    let key = [42u8; 16];
    let r = alice.iq(&format!(
        "<iq type='set' id='ID'><enable xmlns='urn:xmpp:push:0' jid='push@localhost/app' node='n1'>\
         <encrypt xmlns='tigase:push:encrypt:0' alg='aes-128-gcm'>{}</encrypt>\
         <priority xmlns='tigase:push:priority:0'/></enable></iq>",
        b64.encode(key)
    ));
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    alice.send("<inactive xmlns='urn:xmpp:csi:0'/>");
    bob.send("<message to='alice@localhost' type='chat'><body>see you at 6</body></message>");
    let publish = app.recv_until(is_publish);
    let text = publish.to_string();
    assert!(
        !text.contains("see you") && !text.contains("jabber:x:data"),
        "{text}"
    );
    assert!(
        text.contains("<priority xmlns='tigase:push:priority:0'>high</priority>"),
        "{text}"
    );
    fn find<'a>(e: &'a Element, name: &str, ns: &str) -> Option<&'a Element> {
        if e.is(name, ns) {
            return Some(e);
        }
        e.children().find_map(|c| find(c, name, ns))
    }
    let enc = find(&publish, "encrypted", "tigase:push:encrypt:0")
        .unwrap_or_else(|| panic!("no encrypted payload: {text}"));
    let iv: [u8; 12] = b64
        .decode(enc.attr("iv").unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let mut sealed = b64.decode(enc.text().trim()).unwrap();
    let opener = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &key).unwrap());
    let plain = opener
        .open_in_place(Nonce::assume_unique_for_key(iv), Aad::empty(), &mut sealed)
        .expect("the tag verifies under the device's key");
    let json = std::str::from_utf8(plain).unwrap();
    assert_eq!(
        json,
        r#"{"unread":1,"sender":"bob@localhost","message":"see you at 6","type":"chat"}"#
    );
}
