//! End to end: bad input and shutdown. Malformed or restricted XML, oversize stanzas, wrong
//! namespaces and hosts, spoofed addresses and garbage instead of TLS each end only the
//! offending stream, with the RFC 6120 §4.9.3 condition, while everyone else keeps chatting;
//! SIGTERM closes every stream cleanly and exits 0.

mod common;

use std::time::Duration;

use common::client::{ca_path, stream_header, Client, Raw, NS_CLIENT};
use common::TestServer;

const QUIET: Duration = Duration::from_millis(400);

fn server_with_users(extra_toml: &str) -> TestServer {
    let server = TestServer::start_with(extra_toml);
    for u in ["alice", "bob", "mallory"] {
        server.add_user(u, &format!("{u}-secret"));
    }
    server
}

fn online(server: &TestServer, user: &str, resource: &str) -> Client {
    Client::online(server, user, &format!("{user}-secret"), resource)
}

/// alice and bob still exchange messages both ways.
fn still_chatting(alice: &mut Client, bob: &mut Client) {
    alice.send("<message to='bob@localhost' type='chat'><body>still there?</body></message>");
    let m = bob.recv_until(|e| e.name() == "message");
    assert_eq!(
        m.get_child("body", NS_CLIENT).unwrap().text(),
        "still there?"
    );
    bob.send("<message to='alice@localhost/phone' type='chat'><body>yes</body></message>");
    let m = alice.recv_until(|e| e.name() == "message");
    assert_eq!(m.get_child("body", NS_CLIENT).unwrap().text(), "yes");
}

/// A logged-in mallory sends `bad`; she gets stream error `cond`; alice and bob don't notice.
fn logged_in_offence(server: &TestServer, bad: &str, cond: &str) {
    let mut alice = online(server, "alice", "phone");
    let mut bob = online(server, "bob", "pc");
    let mut mallory = online(server, "mallory", "x");
    mallory.send(bad);
    mallory.expect_stream_error(cond);
    still_chatting(&mut alice, &mut bob);
    alice.expect_nothing(Duration::from_millis(100));
}

/// Plain TCP: send `bytes` as the very first thing; expect `cond` (after the server's header).
fn pre_auth_offence(server: &TestServer, bytes: &str, cond: &str) {
    let mut c = Client::tcp(server.c2s_port, "localhost", &ca_path(server));
    c.send(bytes);
    c.expect_stream_error(cond);
}

#[test]
fn malformed_xml_is_not_well_formed_and_the_server_keeps_serving_others() {
    let server = server_with_users("");
    logged_in_offence(
        &server,
        "<message to='bob@localhost'><body>x</message>",
        "not-well-formed",
    );
}

#[test]
fn undeclared_prefix_and_invalid_utf8_are_not_well_formed() {
    let server = server_with_users("");
    logged_in_offence(
        &server,
        "<foo:message to='bob@localhost'/>",
        "not-well-formed",
    );
    let mut mallory = online(&server, "mallory", "y");
    mallory.send_bytes(b"<message to='bob@localhost'><body>\xff\xfe</body></message>");
    mallory.expect_stream_error("not-well-formed");
}

#[test]
fn doctype_and_entity_declarations_are_restricted_xml() {
    let server = server_with_users("");
    pre_auth_offence(
        &server,
        &format!(
            "<?xml version='1.0'?><!DOCTYPE lol [<!ENTITY lol 'lol'>]>{}",
            &stream_header("localhost")["<?xml version='1.0'?>".len()..]
        ),
        "restricted-xml",
    );
}

#[test]
fn entity_reference_comment_and_processing_instruction_are_restricted_xml() {
    let server = server_with_users("");
    logged_in_offence(
        &server,
        "<message to='bob@localhost'><body>&lol;</body></message>",
        "restricted-xml",
    );
    logged_in_offence(&server, "<!-- a comment -->", "restricted-xml");
    logged_in_offence(
        &server,
        "<message to='bob@localhost'><?php evil() ?></message>",
        "restricted-xml",
    );
}

#[test]
fn oversize_stanza_is_a_policy_violation_but_a_large_one_is_fine() {
    let server = server_with_users("[limits]\nmax_stanza_size = 20000");
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "pc");
    // 15 000 bytes of body: under the limit, delivered intact
    let big = "a".repeat(15_000);
    alice.send(&format!(
        "<message to='bob@localhost' type='chat'><body>{big}</body></message>"
    ));
    let m = bob.recv_until(|e| e.name() == "message");
    assert_eq!(m.get_child("body", NS_CLIENT).unwrap().text().len(), 15_000);

    let mut mallory = online(&server, "mallory", "x");
    let huge = "a".repeat(30_000);
    mallory.send_lenient(
        format!("<message to='bob@localhost' type='chat'><body>{huge}</body></message>").as_bytes(),
    );
    mallory.expect_stream_error("policy-violation");
    bob.expect_nothing(QUIET);
    still_chatting(&mut alice, &mut bob);
}

#[test]
fn nesting_deeper_than_the_limit_is_a_policy_violation() {
    let server = server_with_users("");
    let deep = format!(
        "<message to='bob@localhost'>{}{}</message>",
        "<x>".repeat(100),
        "</x>".repeat(100)
    );
    logged_in_offence(&server, &deep, "policy-violation");
}

#[test]
fn garbage_on_the_direct_tls_port_is_dropped_and_the_server_is_fine() {
    let server = server_with_users("");
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "pc");

    let mut raw = Raw::connect(server.tls_port);
    raw.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let answer = raw.read_to_close(Duration::from_secs(5));
    assert!(
        !String::from_utf8_lossy(&answer).contains("stream"),
        "XMPP spoken without TLS: {answer:?}"
    );

    // plaintext XMPP on the TLS port is garbage too
    let mut raw = Raw::connect(server.tls_port);
    raw.send(stream_header("localhost").as_bytes());
    raw.read_to_close(Duration::from_secs(5));

    still_chatting(&mut alice, &mut bob);
    let mut carol = Client::connect_direct_tls(server.tls_port, "localhost", &ca_path(&server));
    carol.login("mallory", "mallory-secret");
    carol.bind(Some("fine"));
}

#[test]
fn tls_handshake_on_the_starttls_port_is_not_well_formed_xml() {
    let server = server_with_users("");
    let mut raw = Raw::connect(server.c2s_port);
    // the first bytes of a TLS ClientHello
    raw.send(&[
        0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03,
    ]);
    let answer = String::from_utf8_lossy(&raw.read_to_close(Duration::from_secs(5))).into_owned();
    assert!(answer.contains("<not-well-formed"), "{answer}");
}

#[test]
fn plaintext_sent_after_starttls_before_the_handshake_drops_the_connection() {
    let server = server_with_users("");
    let mut raw = Raw::connect(server.c2s_port);
    // CVE-2011-1431 class: a command injected into the plaintext after <starttls/>
    raw.send(
        format!(
            "{}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><iq type='get' id='inject'/>",
            stream_header("localhost")
        )
        .as_bytes(),
    );
    let answer = String::from_utf8_lossy(&raw.read_to_close(Duration::from_secs(5))).into_owned();
    assert!(!answer.contains("inject"), "{answer}");
}

#[test]
fn wrong_stream_namespace_is_invalid_namespace() {
    let server = server_with_users("");
    pre_auth_offence(
        &server,
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='http://example.org/not-streams' to='localhost' version='1.0'>",
        "invalid-namespace",
    );
    // the content namespace of a server-to-server stream, on the client port
    pre_auth_offence(
        &server,
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
         xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>",
        "invalid-namespace",
    );
}

#[test]
fn unknown_host_is_host_unknown() {
    let server = server_with_users("");
    pre_auth_offence(&server, &stream_header("example.org"), "host-unknown");
}

#[test]
fn stream_without_version_is_unsupported_version() {
    let server = server_with_users("");
    pre_auth_offence(
        &server,
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost'>",
        "unsupported-version",
    );
}

#[test]
fn spoofed_from_is_invalid_from() {
    let server = server_with_users("");
    logged_in_offence(
        &server,
        "<message from='bob@localhost/pc' to='alice@localhost'><body>it is me, bob</body></message>",
        "invalid-from",
    );
    logged_in_offence(
        &server,
        "<message from='mallory@localhost/other' to='alice@localhost'><body>x</body></message>",
        "invalid-from",
    );
}

#[test]
fn own_from_is_accepted() {
    let server = server_with_users("");
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "pc");
    alice.send("<message from='alice@localhost/phone' to='bob@localhost' type='chat'><body>1</body></message>");
    alice.send(
        "<message from='alice@localhost' to='bob@localhost' type='chat'><body>2</body></message>",
    );
    for want in ["1", "2"] {
        let m = bob.recv_until(|e| e.name() == "message");
        assert_eq!(m.attr("from"), Some("alice@localhost/phone"), "{m}");
        assert_eq!(m.get_child("body", NS_CLIENT).unwrap().text(), want);
    }
}

#[test]
fn unknown_top_level_element_is_unsupported_stanza_type() {
    let server = server_with_users("");
    logged_in_offence(
        &server,
        "<foo xmlns='jabber:client'/>",
        "unsupported-stanza-type",
    );
}

#[test]
fn whitespace_keepalives_are_accepted_everywhere() {
    let server = server_with_users("[limits]\nauth_timeout = \"3s\"");
    let mut alice = Client::starttls_to(&server);
    alice.send(" \n ");
    alice.login("alice", "alice-secret");
    alice.send("\n");
    alice.bind(Some("phone"));
    alice.presence();
    for _ in 0..5 {
        alice.send(" ");
    }
    alice.send("\r\n\t");
    let pong = alice.iq("<iq to='localhost' type='get' id='ID'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert_eq!(pong.attr("type"), Some("result"), "{pong}");
    alice.expect_nothing(QUIET);
}

#[test]
fn a_stanza_split_into_single_bytes_is_reassembled() {
    let server = server_with_users("");
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "pc");
    let xml = "<message to='bob@localhost' type='chat'><body>sl\u{f6}w \u{1f600}</body></message>";
    for b in xml.as_bytes() {
        alice.send_bytes(&[*b]);
    }
    let m = bob.recv_until(|e| e.name() == "message");
    assert_eq!(
        m.get_child("body", NS_CLIENT).unwrap().text(),
        "sl\u{f6}w \u{1f600}"
    );
}

#[test]
fn client_closing_its_stream_gets_the_close_answered() {
    let server = server_with_users("");
    let mut alice = online(&server, "alice", "phone");
    alice.close();
}

#[test]
fn sigterm_closes_every_stream_and_exits_zero() {
    let mut server = server_with_users("");
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "pc");
    let mut unauthenticated = Client::starttls_to(&server);
    let status = server.stop();
    assert!(status.success(), "exit status {status}");
    // alice and bob receive </stream:stream>, then the connection ends
    alice.expect_close();
    bob.clear_backlog();
    bob.expect_close();
    // a connection still in SASL is closed too, one way or another
    unauthenticated.timeout = Duration::from_secs(2);
    while !unauthenticated.eof {
        if unauthenticated.next_event(Duration::from_secs(2)).is_none() {
            panic!("connection in SASL still open after the server exited");
        }
    }
    let log = server.log();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn a_burst_of_messages_arrives_complete_and_in_order() {
    let server = server_with_users("");
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "pc");
    bob.clear_backlog();
    let mut burst = String::new();
    for i in 0..500 {
        burst.push_str(&format!(
            "<message to='bob@localhost/pc' type='chat' id='b{i}'><body>{i}</body></message>"
        ));
    }
    alice.send(&burst);
    for i in 0..500 {
        let m = bob.recv();
        assert_eq!(m.attr("id"), Some(format!("b{i}").as_str()), "{m}");
    }
    bob.expect_nothing(QUIET);
}
