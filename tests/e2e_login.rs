//! End to end: getting in. STARTTLS and direct TLS, SASL mechanisms and failures, resource
//! binding and conflicts, the authentication timeout, and account changes made with the CLI
//! while the server runs.

mod common;

use std::time::{Duration, Instant};

use common::client::{ca_path, Client, NS_BIND, NS_SASL, NS_STREAM, NS_TLS};
use common::TestServer;
use futures_rustls::rustls;
use kith::sasl::{ChannelBinding, Mechanism, ScramClient};

fn server_with_alice() -> TestServer {
    let server = TestServer::start();
    server.add_user("alice", "alice-secret");
    server
}

#[test]
fn starttls_is_required_before_anything_else() {
    let server = server_with_alice();
    let mut alice = Client::tcp(server.c2s_port, "localhost", &ca_path(&server));
    alice.open_stream();
    // alice receives: <stream:features><starttls xmlns='...tls'><required/></starttls></stream:features>
    let features = alice.features.clone().unwrap();
    let starttls = features
        .get_child("starttls", NS_TLS)
        .expect("starttls offered");
    assert!(
        starttls.get_child("required", NS_TLS).is_some(),
        "{features}"
    );
    assert!(
        features.get_child("mechanisms", NS_SASL).is_none(),
        "SASL must not be offered in plaintext: {features}"
    );
    // alice sends a stanza in plaintext -> policy-violation
    alice.send("<message to='bob@localhost'><body>in the clear</body></message>");
    alice.expect_stream_error("policy-violation");
}

#[test]
fn features_offer_scram_with_and_without_plus_and_no_plain() {
    let server = server_with_alice();
    let alice = Client::starttls_to(&server);
    assert_eq!(
        alice.tls().protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let mut mechs = alice.mechanisms();
    mechs.sort();
    assert_eq!(
        mechs,
        [
            "SCRAM-SHA-1",
            "SCRAM-SHA-1-PLUS",
            "SCRAM-SHA-256",
            "SCRAM-SHA-256-PLUS",
            "SCRAM-SHA-512",
            "SCRAM-SHA-512-PLUS"
        ]
    );
    // XEP-0440: the channel-binding types on offer; tls-exporter on TLS 1.3.
    let features = alice.features.clone().unwrap();
    let cb = features
        .get_child("sasl-channel-binding", "urn:xmpp:sasl-cb:0")
        .unwrap_or_else(|| panic!("no XEP-0440 element in {features}"));
    let types: Vec<&str> = cb.children().filter_map(|c| c.attr("type")).collect();
    assert!(types.contains(&"tls-exporter"), "{features}");
}

#[test]
fn plain_is_offered_only_when_allowed() {
    let server = TestServer::start_with("[auth]\nallow_plain = true");
    let alice = Client::starttls_to(&server);
    assert!(
        alice.mechanisms().contains(&"PLAIN".to_owned()),
        "{:?}",
        alice.mechanisms()
    );
}

#[test]
fn every_scram_mechanism_logs_in() {
    let server = server_with_alice();
    for mech in [
        Mechanism::ScramSha1,
        Mechanism::ScramSha256,
        Mechanism::ScramSha512,
        Mechanism::ScramSha1Plus,
        Mechanism::ScramSha256Plus,
        Mechanism::ScramSha512Plus,
    ] {
        let mut alice = Client::starttls_to(&server);
        alice.name = format!("alice ({mech})");
        alice
            .try_login(mech, "alice", "alice-secret")
            .unwrap_or_else(|e| panic!("{mech}: {e}"));
        assert_eq!(alice.bind(Some("m")), "alice@localhost/m", "{mech}");
        alice.close();
    }
}

/// RFC 5802 §6: a client that could bind but thinks the server cannot says `y`; a server that
/// did offer -PLUS must treat that as a downgrade attack.
#[test]
fn scram_with_gs2_flag_y_is_refused_when_plus_was_offered() {
    let server = server_with_alice();
    let mut alice = Client::starttls_to(&server);
    let cb = ChannelBinding::TlsExporter(alice.tls_exporter());
    let scram =
        ScramClient::new(Mechanism::ScramSha256, "alice", "alice-secret", Some(cb)).unwrap();
    let err = alice.try_login_with(scram).expect_err("downgrade accepted");
    assert_eq!(err, "not-authorized");
}

/// -PLUS with channel-binding data that is not this connection's (a man in the middle would
/// have a different TLS session) must fail.
#[test]
fn scram_plus_with_wrong_binding_data_fails() {
    let server = server_with_alice();
    let mut alice = Client::starttls_to(&server);
    let cb = ChannelBinding::TlsExporter(vec![0x42; 32]);
    let scram = ScramClient::new(
        Mechanism::ScramSha256Plus,
        "alice",
        "alice-secret",
        Some(cb),
    )
    .unwrap();
    let err = alice
        .try_login_with(scram)
        .expect_err("foreign channel binding accepted");
    assert_eq!(err, "not-authorized");
}

#[test]
fn direct_tls_login() {
    let server = server_with_alice();
    let mut alice = Client::connect_direct_tls(server.tls_port, "localhost", &ca_path(&server));
    assert_eq!(alice.tls().alpn_protocol(), Some(&b"xmpp-client"[..]));
    let features = alice.features.clone().unwrap();
    assert!(
        features.get_child("starttls", NS_TLS).is_none(),
        "{features}"
    );
    alice
        .try_login(Mechanism::ScramSha256Plus, "alice", "alice-secret")
        .unwrap();
    alice.bind(Some("laptop"));
    // alice sends:    <iq to='localhost' type='get'><ping xmlns='urn:xmpp:ping'/></iq>
    // alice receives: <iq from='localhost' type='result'/>
    let pong = alice.iq("<iq to='localhost' type='get' id='ID'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert_eq!(pong.attr("type"), Some("result"), "{pong}");
    assert_eq!(pong.attr("from"), Some("localhost"), "{pong}");
    assert_eq!(pong.attr("to"), Some("alice@localhost/laptop"), "{pong}");
}

#[test]
fn wrong_password_is_not_authorized_and_the_stream_stays_open_for_a_retry() {
    let server = server_with_alice();
    let mut alice = Client::starttls_to(&server);
    let err = alice
        .try_login(Mechanism::ScramSha256, "alice", "wrong")
        .expect_err("wrong password accepted");
    assert_eq!(err, "not-authorized");
    alice
        .try_login(Mechanism::ScramSha256, "alice", "alice-secret")
        .expect("retry with the right password");
    assert_eq!(alice.bind(Some("r")), "alice@localhost/r");
}

#[test]
fn unknown_user_is_not_authorized_too() {
    let server = server_with_alice();
    let mut mallory = Client::starttls_to(&server);
    let err = mallory
        .try_login(Mechanism::ScramSha256, "mallory", "whatever")
        .expect_err("unknown user accepted");
    assert_eq!(err, "not-authorized");
}

#[test]
fn three_failed_logins_close_the_stream() {
    let server = server_with_alice();
    let mut alice = Client::starttls_to(&server);
    for _ in 0..3 {
        assert_eq!(
            alice.try_login(Mechanism::ScramSha1, "alice", "guess"),
            Err("not-authorized".to_owned())
        );
    }
    alice.expect_stream_error("policy-violation");
}

#[test]
fn unknown_mechanism_is_invalid_mechanism() {
    let server = server_with_alice();
    let mut alice = Client::starttls_to(&server);
    alice.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAGFsaWNlLXNlY3JldA==</auth>");
    let failure = alice.recv();
    assert!(failure.is("failure", NS_SASL), "{failure}");
    assert_eq!(
        common::client::sasl_condition(&failure),
        "invalid-mechanism"
    );
}

#[test]
fn stanza_before_authentication_is_refused() {
    let server = server_with_alice();
    let mut alice = Client::starttls_to(&server);
    alice.send("<message to='bob@localhost'><body>hi</body></message>");
    alice.expect_stream_error("not-authorized");
}

#[test]
fn bind_with_a_requested_resource_and_with_none() {
    let server = server_with_alice();
    let mut phone = Client::starttls_to(&server);
    phone.login("alice", "alice-secret");
    assert_eq!(phone.bind(Some("phone")), "alice@localhost/phone");

    let mut other = Client::starttls_to(&server);
    other.login("alice", "alice-secret");
    let features = other.features.clone().unwrap();
    assert!(features.get_child("bind", NS_BIND).is_some(), "{features}");
    let jid = other.bind(None);
    let resource = jid
        .strip_prefix("alice@localhost/")
        .unwrap_or_else(|| panic!("generated JID {jid} is not alice@localhost/…"));
    assert!(!resource.is_empty() && resource != "phone", "{jid}");
}

#[test]
fn second_login_with_the_same_resource_replaces_the_first() {
    let server = server_with_alice();
    let mut first = Client::online(&server, "alice", "alice-secret", "phone");
    let mut second = Client::login_bound(&server, "alice", "alice-secret", "phone");
    // first receives: <stream:error><conflict/></stream:error></stream:stream>
    first.expect_stream_error("conflict");
    // the new session works and is the one bound
    let pong =
        second.iq("<iq to='localhost' type='get' id='ID'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert_eq!(pong.attr("type"), Some("result"), "{pong}");
    assert_eq!(pong.attr("to"), Some("alice@localhost/phone"), "{pong}");
}

#[test]
fn unauthenticated_connection_times_out() {
    let server = TestServer::start_with("[limits]\nauth_timeout = \"2s\"");
    let mut idle = Client::starttls_to(&server);
    idle.timeout = Duration::from_secs(6);
    let t0 = Instant::now();
    idle.expect_stream_error("connection-timeout");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(5),
        "timed out after {waited:?}, expected about 2 s"
    );
}

#[test]
fn authenticated_but_unbound_connection_times_out() {
    let server = TestServer::start_with("[limits]\nauth_timeout = \"2s\"");
    server.add_user("alice", "alice-secret");
    let mut alice = Client::starttls_to(&server);
    alice.login("alice", "alice-secret");
    alice.timeout = Duration::from_secs(6);
    alice.expect_stream_error("connection-timeout");
}

#[test]
fn bound_session_does_not_time_out() {
    let server = TestServer::start_with("[limits]\nauth_timeout = \"1s\"");
    server.add_user("alice", "alice-secret");
    let mut alice = Client::online(&server, "alice", "alice-secret", "r");
    alice.expect_nothing(Duration::from_millis(2500));
    let pong = alice.iq("<iq to='localhost' type='get' id='ID'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert_eq!(pong.attr("type"), Some("result"), "{pong}");
}

#[test]
fn passwd_while_running_changes_the_password() {
    let server = server_with_alice();
    server.cli_ok([
        "user",
        "passwd",
        "alice@localhost",
        "--password",
        "new-secret",
    ]);
    let mut old = Client::starttls_to(&server);
    assert_eq!(
        old.try_login(Mechanism::ScramSha256, "alice", "alice-secret"),
        Err("not-authorized".to_owned())
    );
    let mut new = Client::starttls_to(&server);
    new.try_login(Mechanism::ScramSha256, "alice", "new-secret")
        .expect("new password");
    // every hash was updated, not only the default one
    let mut sha1 = Client::starttls_to(&server);
    sha1.try_login(Mechanism::ScramSha1, "alice", "new-secret")
        .expect("new password with SCRAM-SHA-1");
}

#[test]
fn user_del_kicks_the_online_session_and_the_login_stops_working() {
    let server = server_with_alice();
    let mut alice = Client::online(&server, "alice", "alice-secret", "phone");
    server.cli_ok(["user", "del", "alice@localhost"]);
    alice.expect_stream_error("not-authorized");
    let mut again = Client::starttls_to(&server);
    assert_eq!(
        again.try_login(Mechanism::ScramSha256, "alice", "alice-secret"),
        Err("not-authorized".to_owned())
    );
}

#[test]
fn stream_header_answer_is_well_formed() {
    let server = server_with_alice();
    let alice = Client::starttls_to(&server);
    let h = alice.header.as_ref().unwrap();
    assert_eq!(h.attr("from"), Some("localhost"));
    assert_eq!(h.attr("version"), Some("1.0"));
    assert!(h.attr("id").is_some_and(|id| !id.is_empty()));
    assert_eq!(h.prefix_ns("stream"), Some(NS_STREAM));
    assert_eq!(h.default_ns(), "jabber:client");
}

/// RFC 6120 §6.4.2: `<auth/>` without an initial response gets an empty challenge, and the
/// client-first message comes as the response.
#[test]
fn auth_without_initial_response_gets_an_empty_challenge() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let server = server_with_alice();
    let mut alice = Client::starttls_to(&server);
    let mut scram =
        ScramClient::new(Mechanism::ScramSha256, "alice", "alice-secret", None).unwrap();
    alice.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'/>");
    let empty = alice.recv();
    assert!(empty.is("challenge", NS_SASL), "{empty}");
    assert_eq!(empty.text().trim(), "", "{empty}");
    alice.send(&format!(
        "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
        b64.encode(scram.client_first())
    ));
    let challenge = alice.recv();
    assert!(challenge.is("challenge", NS_SASL), "{challenge}");
    let client_final = scram
        .handle_server_first(&b64.decode(challenge.text().trim()).unwrap())
        .unwrap();
    alice.send(&format!(
        "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
        b64.encode(client_final)
    ));
    let success = alice.recv();
    assert!(success.is("success", NS_SASL), "{success}");
    scram
        .verify_server_final(&b64.decode(success.text().trim()).unwrap())
        .unwrap();
}

#[test]
fn abort_is_answered_aborted_and_a_retry_works() {
    let server = server_with_alice();
    let mut alice = Client::starttls_to(&server);
    alice.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'/>");
    let empty = alice.recv();
    assert!(empty.is("challenge", NS_SASL), "{empty}");
    alice.send("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    let failure = alice.recv();
    assert!(failure.is("failure", NS_SASL), "{failure}");
    assert_eq!(common::client::sasl_condition(&failure), "aborted");
    alice
        .try_login(Mechanism::ScramSha256, "alice", "alice-secret")
        .expect("retry after abort");
}

#[test]
fn an_unacceptable_resource_is_a_bad_request_and_bind_can_be_retried() {
    let server = server_with_alice();
    let mut alice = Client::starttls_to(&server);
    alice.login("alice", "alice-secret");
    let long = "r".repeat(1100); // RFC 7622 §3.4: at most 1023 bytes
    let reply = alice.iq(&format!(
        "<iq type='set' id='ID'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{long}</resource></bind></iq>"
    ));
    assert_eq!(
        common::client::stanza_error(&reply),
        "bad-request",
        "{reply}"
    );
    assert_eq!(alice.bind(Some("ok")), "alice@localhost/ok");
}

/// The username in SCRAM is the localpart; the bound JID is the account's canonical one.
#[test]
fn login_with_an_uppercase_username_binds_the_canonical_jid() {
    let server = server_with_alice();
    let mut alice = Client::starttls_to(&server);
    alice
        .try_login(Mechanism::ScramSha256, "Alice", "alice-secret")
        .expect("case-insensitive localpart");
    assert_eq!(alice.bind(Some("r")), "alice@localhost/r");
}

/// Tombstones: a deleted account's name is not given out again (forever by default), neither
/// while the server runs nor with it stopped, until the admin overrides or clears it.
#[test]
fn a_deleted_name_cannot_be_added_again_without_force() {
    let mut server = server_with_alice();
    server.cli_ok(["user", "del", "alice@localhost"]);
    let out = server.cli(["user", "add", "alice@localhost", "--password", "impostor"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "re-adding a deleted name must fail");
    assert!(
        stderr.contains("alice@localhost belonged to an account deleted at")
            && stderr.contains("kith user add --force alice@localhost"),
        "{stderr}"
    );
    let listed = server.cli_ok(["user", "tombstones"]);
    assert!(String::from_utf8_lossy(&listed.stdout).starts_with("alice@localhost\t"));
    let mut impostor = Client::starttls_to(&server);
    assert_eq!(
        impostor.try_login(Mechanism::ScramSha256, "alice", "impostor"),
        Err("not-authorized".to_owned())
    );

    // XEP-0077 <remove/> by the user leaves a tombstone too; checked with the server stopped,
    // where the CLI opens the store itself.
    server.add_user("bob", "bob-secret");
    let mut bob = Client::online(&server, "bob", "bob-secret", "phone");
    let r =
        bob.iq("<iq type='set' id='ID'><query xmlns='jabber:iq:register'><remove/></query></iq>");
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    server.stop();
    let out = server.cli(["user", "add", "bob@localhost", "--password", "x"]);
    assert!(!out.status.success());
    server.cli_ok(["user", "tombstones", "--clear", "bob@localhost"]);
    server.cli_ok(["user", "add", "bob@localhost", "--password", "bob-2"]);
    server.start_again();

    server.cli_ok([
        "user",
        "add",
        "--force",
        "alice@localhost",
        "--password",
        "alice-2",
    ]);
    let mut alice = Client::starttls_to(&server);
    alice
        .try_login(Mechanism::ScramSha256, "alice", "alice-2")
        .expect("the forced account logs in");
    let listed = server.cli_ok(["user", "tombstones"]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "");
}
