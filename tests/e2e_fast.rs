//! End to end: instant reconnect for phones. XEP-0388 SASL2 with XEP-0386 Bind 2 (resource,
//! carbons, stream management inline with authentication) and XEP-0484 FAST tokens (a
//! reconnect in one round trip), token rotation and revocation, inline resumption, and the
//! old RFC 6120 login still working beside it.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::client::{Client, NS_CLIENT};
use common::TestServer;
use kith::sasl::{ht, Mechanism, ScramClient};
use kith::xml::Element;

const NS_SASL2: &str = "urn:xmpp:sasl:2";
const NS_BIND2: &str = "urn:xmpp:bind:0";
const NS_FAST: &str = "urn:xmpp:fast:0";
const NS_SM: &str = "urn:xmpp:sm:3";
const QUIET: Duration = Duration::from_millis(400);
const UA: &str = "2b5e5c8e-17c4-4c57-9b0f-3d5cbb1e0a01";

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .unwrap_or_else(|e| panic!("not base64 ({e}): {s}"))
}

fn server() -> TestServer {
    let server = TestServer::start();
    server.add_user("alice", "alice-secret");
    server.add_user("bob", "bob-secret");
    server
}

/// What a SASL2 login gave back: the `<success/>`, and the features that followed it.
struct Login {
    client: Client,
    success: Element,
    features: Element,
}

/// SASL2 SCRAM-SHA-256-PLUS (tls-exporter) with `extra` inside `<authenticate/>`.
fn sasl2_password_login(server: &TestServer, user: &str, password: &str, extra: &str) -> Login {
    let mut c = Client::starttls_to(server);
    let f = c.features.clone().expect("features");
    let auth = f
        .get_child("authentication", NS_SASL2)
        .unwrap_or_else(|| panic!("no SASL2 feature: {f}"));
    assert!(auth.to_string().contains("SCRAM-SHA-256-PLUS"), "{auth}");
    let mut scram = ScramClient::new(
        Mechanism::ScramSha256Plus,
        user,
        password,
        Some(kith::sasl::ChannelBinding::TlsExporter(c.tls_exporter())),
    )
    .expect("scram client");
    c.send(&format!(
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='SCRAM-SHA-256-PLUS'>\
         <initial-response>{}</initial-response>\
         <user-agent id='{UA}'><software>kith tests</software><device>ci</device></user-agent>{extra}</authenticate>",
        b64(&scram.client_first())
    ));
    let challenge = c.recv();
    assert!(challenge.is("challenge", NS_SASL2), "{challenge}");
    let client_final = scram
        .handle_server_first(&unb64(&challenge.text()))
        .expect("server-first");
    c.send(&format!(
        "<response xmlns='urn:xmpp:sasl:2'>{}</response>",
        b64(&client_final)
    ));
    let success = c.recv();
    assert!(
        success.is("success", NS_SASL2),
        "expected SASL2 success: {success}"
    );
    let data = success
        .get_child("additional-data", NS_SASL2)
        .expect("additional-data")
        .text();
    scram
        .verify_server_final(&unb64(&data))
        .expect("server signature");
    // No stream restart: the features follow directly.
    let features = c.recv();
    assert_eq!(
        features.name(),
        "features",
        "features right after success: {features}"
    );
    Login {
        client: c,
        success,
        features,
    }
}

fn authz(success: &Element) -> String {
    success
        .get_child("authorization-identifier", NS_SASL2)
        .map(|a| a.text())
        .unwrap_or_else(|| panic!("no authorization-identifier: {success}"))
}

fn token_of(success: &Element) -> String {
    success
        .get_child("token", NS_FAST)
        .and_then(|t| t.attr("token"))
        .unwrap_or_else(|| panic!("no FAST token in {success}"))
        .to_string()
}

/// A FAST login: exactly one element sent after the stream header, one `<success/>` back.
fn fast_login(
    server: &TestServer,
    user: &str,
    token: &str,
    ua: &str,
    extra: &str,
) -> Result<Login, Element> {
    let mut c = Client::starttls_to(server);
    let exporter = c.tls_exporter();
    let mut initial = format!("{user}\0").into_bytes();
    initial.extend_from_slice(&ht::initiator(token, &exporter));
    c.send(&format!(
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='HT-SHA-256-EXPR'>\
         <initial-response>{}</initial-response><user-agent id='{ua}'/>\
         <fast xmlns='urn:xmpp:fast:0'/>{extra}</authenticate>",
        b64(&initial)
    ));
    let outcome = c.recv();
    if outcome.is("failure", NS_SASL2) {
        return Err(outcome);
    }
    assert!(outcome.is("success", NS_SASL2), "one round trip: {outcome}");
    let data = outcome
        .get_child("additional-data", NS_SASL2)
        .expect("additional-data")
        .text();
    assert_eq!(
        unb64(&data),
        ht::responder(token, &exporter),
        "the server proves it knows the token"
    );
    let features = c.recv();
    Ok(Login {
        client: c,
        success: outcome,
        features,
    })
}

const BIND_ALL: &str = "<bind xmlns='urn:xmpp:bind:0'><tag>Phone</tag>\
    <enable xmlns='urn:xmpp:carbons:2'/><enable xmlns='urn:xmpp:sm:3' resume='true'/></bind>";
const REQUEST_TOKEN: &str = "<request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-EXPR'/>";

#[test]
fn sasl2_with_bind2_binds_and_enables_everything_inline() {
    let server = server();
    let Login {
        mut client,
        success,
        features,
    } = sasl2_password_login(
        &server,
        "alice",
        "alice-secret",
        &format!("{BIND_ALL}{REQUEST_TOKEN}"),
    );
    let jid = authz(&success);
    assert!(
        jid.starts_with("alice@localhost/Phone/"),
        "tagged resource: {jid}"
    );
    let bound = success
        .get_child("bound", NS_BIND2)
        .unwrap_or_else(|| panic!("no <bound/>: {success}"));
    let enabled = bound
        .get_child("enabled", NS_SM)
        .unwrap_or_else(|| panic!("no SM: {bound}"));
    assert_eq!(enabled.attr("resume"), Some("true"));
    assert!(bound.has_child("metadata", "urn:xmpp:mam:2"), "{bound}");
    assert!(!token_of(&success).is_empty());
    assert!(
        !features.has_child("bind", "urn:ietf:params:xml:ns:xmpp-bind"),
        "already bound: {features}"
    );

    // The session is live: carbons are on (bob writes to another resource of alice).
    client.set_jid(&jid);
    client.presence();
    let mut desk = Client::online(&server, "alice", "alice-secret", "desk");
    let mut bob = Client::online(&server, "bob", "bob-secret", "pc");
    bob.send("<message to='alice@localhost/desk' type='chat'><body>to the desk</body></message>");
    desk.recv_until(|e| e.name() == "message");
    let carbon = client.recv_until(|e| e.name() == "message");
    assert!(
        carbon.has_child("received", "urn:xmpp:carbons:2"),
        "carbons enabled inline: {carbon}"
    );
}

#[test]
fn fast_reconnect_takes_one_round_trip_and_keeps_the_resource() {
    let server = server();
    let first = sasl2_password_login(
        &server,
        "alice",
        "alice-secret",
        &format!("{BIND_ALL}{REQUEST_TOKEN}"),
    );
    let token = token_of(&first.success);
    let jid = authz(&first.success);
    drop(first);

    let Login {
        mut client,
        success,
        ..
    } = fast_login(&server, "alice", &token, UA, BIND_ALL)
        .unwrap_or_else(|f| panic!("FAST login failed: {f}"));
    assert_eq!(
        authz(&success),
        jid,
        "the same client gets the same resource"
    );
    client.set_jid(&jid);
    client.presence();
    let mut bob = Client::online(&server, "bob", "bob-secret", "pc");
    bob.send(&format!(
        "<message to='{jid}' type='chat'><body>fast</body></message>"
    ));
    let m = client.recv_until(|e| e.name() == "message");
    assert_eq!(
        m.get_child("body", NS_CLIENT).map(|b| b.text()).as_deref(),
        Some("fast")
    );
}

#[test]
fn tokens_belong_to_their_client_and_can_be_invalidated() {
    let server = server();
    let first = sasl2_password_login(&server, "alice", "alice-secret", REQUEST_TOKEN);
    let token = token_of(&first.success);
    drop(first);
    let f = fast_login(&server, "alice", &token, "another-device", "")
        .err()
        .expect("other client");
    assert!(
        f.has_child("credentials-expired", "urn:ietf:params:xml:ns:xmpp-sasl"),
        "{f}"
    );
    let f = fast_login(&server, "alice", "not-the-token", UA, "")
        .err()
        .expect("wrong token");
    assert!(
        f.has_child("credentials-expired", "urn:ietf:params:xml:ns:xmpp-sasl"),
        "{f}"
    );
    let f = fast_login(&server, "bob", &token, UA, "")
        .err()
        .expect("another account");
    assert!(f.is("failure", NS_SASL2), "{f}");

    // Logging out with the token kills it.
    let out = fast_login(&server, "alice", &token, UA, "")
        .map(|l| l.success)
        .unwrap_or_else(|f| panic!("{f}"));
    assert!(out.is("success", NS_SASL2));
    let f = fast_login(&server, "alice", &token, UA, "").err();
    assert!(f.is_none(), "still valid before invalidation");
    let mut c = Client::starttls_to(&server);
    let exporter = c.tls_exporter();
    let mut initial = b"alice\0".to_vec();
    initial.extend_from_slice(&ht::initiator(&token, &exporter));
    c.send(&format!(
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='HT-SHA-256-EXPR'>\
         <initial-response>{}</initial-response><user-agent id='{UA}'/>\
         <fast xmlns='urn:xmpp:fast:0' invalidate='true'/></authenticate>",
        b64(&initial)
    ));
    assert!(c.recv().is("success", NS_SASL2));
    drop(c);
    assert!(
        fast_login(&server, "alice", &token, UA, "").is_err(),
        "invalidated"
    );
}

#[test]
fn a_new_token_replaces_the_old_one_once_used() {
    let server = server();
    let first = sasl2_password_login(&server, "alice", "alice-secret", REQUEST_TOKEN);
    let old = token_of(&first.success);
    drop(first);
    // Ask for a new token during a FAST login: both stay valid until the new one is used.
    let second =
        fast_login(&server, "alice", &old, UA, REQUEST_TOKEN).unwrap_or_else(|f| panic!("{f}"));
    let new = token_of(&second.success);
    assert_ne!(new, old);
    drop(second);
    assert!(
        fast_login(&server, "alice", &old, UA, "").is_ok(),
        "old token survives a lost rotation"
    );
    assert!(fast_login(&server, "alice", &new, UA, "").is_ok());
    assert!(
        fast_login(&server, "alice", &old, UA, "").is_err(),
        "using the new token retires the old"
    );
}

#[test]
fn a_password_change_revokes_tokens() {
    let server = server();
    let first = sasl2_password_login(&server, "alice", "alice-secret", REQUEST_TOKEN);
    let token = token_of(&first.success);
    drop(first);
    server.cli_ok([
        "user",
        "passwd",
        "alice@localhost",
        "--password",
        "new-secret",
    ]);
    assert!(fast_login(&server, "alice", &token, UA, "").is_err());
}

#[test]
fn sasl2_without_bind2_continues_with_classic_bind_and_no_restart() {
    let server = server();
    let Login {
        mut client,
        success,
        features,
    } = sasl2_password_login(&server, "alice", "alice-secret", "");
    assert_eq!(authz(&success), "alice@localhost");
    assert!(
        features.has_child("bind", "urn:ietf:params:xml:ns:xmpp-bind"),
        "{features}"
    );
    client.features = Some(features);
    let jid = client.bind(Some("classic"));
    assert_eq!(jid, "alice@localhost/classic");
}

#[test]
fn resumption_inline_with_sasl2() {
    let server = server();
    let Login {
        mut client,
        success,
        ..
    } = sasl2_password_login(&server, "alice", "alice-secret", BIND_ALL);
    let jid = authz(&success);
    let previd = success
        .get_child("bound", NS_BIND2)
        .and_then(|b| b.get_child("enabled", NS_SM))
        .and_then(|e| e.attr("id"))
        .expect("resumption id")
        .to_string();
    client.set_jid(&jid);
    client.presence();
    let mut bob = Client::online(&server, "bob", "bob-secret", "pc");
    bob.send(&format!(
        "<message to='{jid}' type='chat'><body>missed</body></message>"
    ));
    client.recv_until(|e| e.name() == "message");
    client.disconnect();

    let resume = format!("<resume xmlns='urn:xmpp:sm:3' previd='{previd}' h='0'/>{BIND_ALL}");
    let Login {
        mut client,
        success,
        ..
    } = sasl2_password_login(&server, "alice", "alice-secret", &resume);
    let resumed = success
        .get_child("resumed", NS_SM)
        .unwrap_or_else(|| panic!("not resumed: {success}"));
    assert_eq!(resumed.attr("previd"), Some(previd.as_str()));
    assert!(
        !success.has_child("bound", NS_BIND2),
        "resumption skips binding: {success}"
    );
    assert_eq!(authz(&success), jid);
    let m = client.recv_until(|e| e.name() == "message");
    assert_eq!(
        m.get_child("body", NS_CLIENT).map(|b| b.text()).as_deref(),
        Some("missed"),
        "re-sent"
    );
}

#[test]
fn bind2_clients_get_only_unarchived_offline_messages() {
    let server = server();
    let mut bob = Client::online(&server, "bob", "bob-secret", "pc");
    bob.send("<message to='alice@localhost' type='chat'><body>archived</body></message>");
    bob.send(
        "<message to='alice@localhost' type='chat'><body>not archived</body>\
         <no-permanent-store xmlns='urn:xmpp:hints'/></message>",
    );
    bob.expect_nothing(QUIET);
    let bind = "<bind xmlns='urn:xmpp:bind:0'><tag>Phone</tag></bind>";
    let Login {
        mut client,
        success,
        ..
    } = sasl2_password_login(&server, "alice", "alice-secret", bind);
    client.set_jid(&authz(&success));
    client.presence();
    let m = client.recv_until(|e| e.name() == "message");
    assert_eq!(
        m.get_child("body", NS_CLIENT).map(|b| b.text()).as_deref(),
        Some("not archived")
    );
    client.expect_nothing(QUIET);
}
