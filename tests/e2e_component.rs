//! End to end: XEP-0114 external components. A small component client of our own (plain TCP,
//! `jabber:component:accept`, the SHA-1 handshake) against the real `kith` binary, and local
//! users talking to it.

mod common;

use std::time::Duration;

use common::client::{ca_path, stanza_error, Client, Event, DEFAULT_TIMEOUT};
use common::{Options, TestServer};
use kith::xml::Element;

const NS_ACCEPT: &str = "jabber:component:accept";
const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
const BOT: &str = "bot.localhost";
const SECRET: &str = "s3cret-for-the-bot";
const QUIET: Duration = Duration::from_millis(400);

fn server() -> TestServer {
    let server = TestServer::start_opts(
        Options::default()
            .listen("components")
            .extra_toml(&format!("[components]\n\"{BOT}\" = \"{SECRET}\"\n")),
    );
    server.add_user("alice", "alice-secret");
    server
}

fn alice(server: &TestServer) -> Client {
    let mut a = Client::login_bound(server, "alice", "alice-secret", "phone");
    a.presence();
    a.clear_backlog();
    a
}

fn sha1_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Opens a component stream for `domain` and sends the handshake for `secret`; the answer is
/// left for the caller.
fn component_attempt(server: &TestServer, domain: &str, secret: &str) -> Client {
    let mut c = Client::tcp(server.port("components"), domain, &ca_path(server));
    c.name = format!("component {domain}");
    c.send(&format!(
        "<?xml version='1.0'?><stream:stream xmlns='{NS_ACCEPT}' \
         xmlns:stream='http://etherx.jabber.org/streams' to='{domain}'>"
    ));
    let header = match c.next_event(DEFAULT_TIMEOUT) {
        Some(Event::Header(h)) => h,
        other => panic!("expected the server's stream header, got {other:?}"),
    };
    assert_eq!(header.default_ns(), NS_ACCEPT);
    assert_eq!(header.attr("from"), Some(domain));
    let id = header.attr("id").expect("stream id").to_string();
    c.header = Some(header);
    c.send(&format!(
        "<handshake>{}</handshake>",
        sha1_hex(&format!("{id}{secret}"))
    ));
    c
}

/// A connected, authenticated component.
fn component(server: &TestServer) -> Client {
    let mut c = component_attempt(server, BOT, SECRET);
    let ok = c.recv();
    assert!(ok.is("handshake", NS_ACCEPT), "{ok}");
    c
}

#[test]
fn handshake_with_the_right_secret_succeeds_and_a_wrong_one_is_refused() {
    let server = server();
    let mut c = component(&server);
    c.close();
    let mut bad = component_attempt(&server, BOT, "not-the-secret");
    bad.expect_stream_error("not-authorized");
    assert!(server.wait_for_log("wrong handshake", Duration::from_secs(5)));
}

#[test]
fn unknown_component_domain_is_host_unknown() {
    let server = server();
    let mut c = Client::tcp(
        server.port("components"),
        "nope.localhost",
        &ca_path(&server),
    );
    c.send(&format!(
        "<?xml version='1.0'?><stream:stream xmlns='{NS_ACCEPT}' \
         xmlns:stream='http://etherx.jabber.org/streams' to='nope.localhost'>"
    ));
    c.expect_stream_error("host-unknown");
}

#[test]
fn messages_flow_between_a_local_user_and_the_component() {
    let server = server();
    let mut bot = component(&server);
    let mut a = alice(&server);
    a.send(&format!(
        "<message to='echo@{BOT}' type='chat' id='m1'><body>hello bot</body></message>"
    ));
    let m = bot.recv();
    assert!(m.is("message", NS_ACCEPT), "{m}");
    assert_eq!(m.attr("from"), Some("alice@localhost/phone"));
    assert_eq!(m.attr("to"), Some(&*format!("echo@{BOT}")));
    assert_eq!(
        m.get_child("body", NS_ACCEPT).map(Element::text).as_deref(),
        Some("hello bot")
    );

    bot.send(&format!(
        "<message from='echo@{BOT}' to='alice@localhost/phone' type='chat' id='r1'>\
         <body>hello alice</body></message>"
    ));
    let r = a.recv_until(|e| e.name() == "message");
    assert_eq!(r.attr("from"), Some(&*format!("echo@{BOT}")));
    assert_eq!(
        r.get_child("body", "jabber:client")
            .map(Element::text)
            .as_deref(),
        Some("hello alice")
    );

    // An iq from the component to alice's resource, and her answer back.
    bot.send(&format!(
        "<iq from='{BOT}' to='alice@localhost/phone' type='get' id='v1'>\
         <query xmlns='jabber:iq:version'/></iq>"
    ));
    let iq = a.recv_until(|e| e.name() == "iq");
    assert_eq!(iq.attr("from"), Some(BOT));
    a.send(&format!(
        "<iq to='{BOT}' type='result' id='v1'><query xmlns='jabber:iq:version'>\
         <name>test</name></query></iq>"
    ));
    let res = bot.recv();
    assert!(res.is("iq", NS_ACCEPT), "{res}");
    assert_eq!(res.attr("type"), Some("result"));
    assert_eq!(res.attr("id"), Some("v1"));

    // Both directions are in alice's archive (XEP-0313), like a conversation with a contact.
    a.clear_backlog();
    a.send("<iq type='set' id='mam1'><query xmlns='urn:xmpp:mam:2' queryid='q1'/></iq>");
    let mut bodies = Vec::new();
    loop {
        let e = a.recv();
        if e.name() == "iq" {
            assert_eq!(e.attr("type"), Some("result"), "{e}");
            break;
        }
        let body = e
            .get_child("result", "urn:xmpp:mam:2")
            .and_then(|r| r.get_child("forwarded", "urn:xmpp:forward:0"))
            .and_then(|f| f.get_child("message", "jabber:client"))
            .and_then(|m| m.get_child("body", "jabber:client"))
            .map(Element::text);
        bodies.extend(body);
    }
    assert_eq!(bodies, ["hello bot", "hello alice"]);
}

#[test]
fn the_server_answers_a_components_ping_and_disco_but_not_roster() {
    let server = server();
    let mut bot = component(&server);
    bot.send(&format!(
        "<iq from='{BOT}' to='localhost' type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>"
    ));
    let r = bot.recv();
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    assert_eq!(r.attr("to"), Some(BOT));
    bot.send(&format!(
        "<iq from='{BOT}' to='localhost' type='get' id='d1'>\
         <query xmlns='{NS_DISCO_ITEMS}'/></iq>"
    ));
    let r = bot.recv();
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    bot.send(&format!(
        "<iq from='u@{BOT}/x' to='localhost' type='get' id='r1'>\
         <query xmlns='jabber:iq:roster'/></iq>"
    ));
    let r = bot.recv();
    assert_eq!(r.attr("type"), Some("error"), "{r}");
    let cond = r
        .get_child("error", NS_ACCEPT)
        .and_then(|e| e.children().next())
        .map(|c| c.name().to_string());
    assert_eq!(cond.as_deref(), Some("service-unavailable"), "{r}");
}

#[test]
fn iq_to_a_disconnected_component_is_service_unavailable() {
    let server = server();
    let mut a = alice(&server);
    let r = a.iq(&format!(
        "<iq to='{BOT}' type='get' id='ID'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
    ));
    assert_eq!(stanza_error(&r), "service-unavailable");
    // Presence to it is dropped silently.
    a.send(&format!("<presence to='{BOT}'/>"));
    a.expect_nothing(QUIET);
}

#[test]
fn spoofed_from_is_invalid_from() {
    let server = server();
    let mut bot = component(&server);
    bot.send("<message from='alice@localhost' to='alice@localhost'><body>x</body></message>");
    bot.expect_stream_error("invalid-from");
}

#[test]
fn server_disco_items_lists_the_component() {
    let server = server();
    let _bot = component(&server);
    let mut a = alice(&server);
    let r = a.iq(&format!(
        "<iq to='localhost' type='get' id='ID'><query xmlns='{NS_DISCO_ITEMS}'/></iq>"
    ));
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let q = r.get_child("query", NS_DISCO_ITEMS).expect("query");
    assert!(
        q.children().any(|i| i.attr("jid") == Some(BOT)),
        "disco#items without the component: {r}"
    );
}

#[test]
fn a_second_connection_replaces_the_first() {
    let server = server();
    let mut first = component(&server);
    let mut second = component(&server);
    first.expect_stream_error("conflict");
    let mut a = alice(&server);
    a.send(&format!(
        "<message to='{BOT}' type='chat'><body>to the new one</body></message>"
    ));
    let m = second.recv();
    assert!(m.is("message", NS_ACCEPT), "{m}");
}

#[test]
fn subscription_to_a_component_contact_reaches_it_and_its_answer_reaches_the_user() {
    let server = server();
    let mut bot = component(&server);
    let mut a = alice(&server);
    a.send(&format!("<presence to='contact@{BOT}' type='subscribe'/>"));
    let s = bot.recv_until(|e| e.name() == "presence");
    assert_eq!(s.attr("type"), Some("subscribe"), "{s}");
    assert_eq!(s.attr("from"), Some("alice@localhost"));
    bot.send(&format!(
        "<presence from='contact@{BOT}' to='alice@localhost' type='subscribed'/>"
    ));
    bot.send(&format!(
        "<presence from='contact@{BOT}/gw' to='alice@localhost'><status>here</status></presence>"
    ));
    let p = a.recv_until(|e| {
        e.name() == "presence" && e.attr("from") == Some(&*format!("contact@{BOT}/gw"))
    });
    assert_eq!(p.attr("type"), None, "{p}");
}

/// XEP-0363: a component is not a local user; it may discover the upload service (as a
/// remote entity could) but gets no slot.
#[test]
fn a_component_may_discover_the_upload_service_but_gets_no_slot() {
    let server = TestServer::start_opts(
        Options::default()
            .listen("components")
            .listen("https")
            .extra_toml(&format!("[components]\n\"{BOT}\" = \"{SECRET}\"\n")),
    );
    let mut c = component(&server);
    let info = c.iq(&format!(
        "<iq type='get' id='ID' from='{BOT}' to='upload.localhost'>\
         <query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
    ));
    assert_eq!(info.attr("type"), Some("result"), "{info}");
    let slot = c.iq(&format!(
        "<iq type='get' id='ID' from='{BOT}' to='upload.localhost'>\
         <request xmlns='urn:xmpp:http:upload:0' filename='a.txt' size='1'/></iq>"
    ));
    assert_eq!(slot.attr("type"), Some("error"), "{slot}");
    let condition = slot
        .children()
        .find(|e| e.name() == "error")
        .and_then(|e| e.children().next())
        .map(|c| c.name().to_string());
    assert_eq!(condition.as_deref(), Some("forbidden"), "{slot}");
}
