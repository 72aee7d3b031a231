//! End to end: the smaller services clients expect: XEP-0049 private XML storage, XEP-0157
//! contact addresses, XEP-0077 password change and account removal, XEP-0215 STUN/TURN
//! discovery and XEP-0357 push notifications.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::client::{stanza_error, Client, NS_DISCO_INFO};
use common::{Options, TestServer};
use kith::sasl::Mechanism;
use kith::xml::Element;

const QUIET: Duration = Duration::from_millis(400);
const NS_DATA: &str = "jabber:x:data";
const NS_EXTDISCO: &str = "urn:xmpp:extdisco:2";
const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";

fn server_with(extra: &str, users: &[&str]) -> TestServer {
    let server = if extra.is_empty() {
        TestServer::start()
    } else {
        TestServer::start_opts(Options::default().extra_toml(extra))
    };
    for u in users {
        server.add_user(u, &format!("{u}-secret"));
    }
    server
}

fn login(server: &TestServer, user: &str, resource: &str) -> Client {
    Client::login_bound(server, user, &format!("{user}-secret"), resource)
}

fn server_info(c: &mut Client) -> Element {
    let r = c.iq(
        "<iq type='get' id='ID' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    );
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    r.get_child("query", NS_DISCO_INFO).unwrap().clone()
}

fn has_feature(q: &Element, var: &str) -> bool {
    q.children()
        .any(|f| f.name() == "feature" && f.attr("var") == Some(var))
}

/// The values of `var` in a data form.
fn form_values(form: &Element, var: &str) -> Vec<String> {
    form.children()
        .filter(|f| f.attr("var") == Some(var))
        .flat_map(|f| f.children().map(|v| v.text()).collect::<Vec<_>>())
        .collect()
}

// ---------------------------------------------------------------- XEP-0049

#[test]
fn private_xml_is_stored_per_namespace_and_per_account() {
    let server = server_with("", &["alice", "bob"]);
    let mut alice = login(&server, "alice", "phone");
    let r = alice.iq(
        "<iq type='set' id='ID'><query xmlns='jabber:iq:private'>\
         <storage xmlns='storage:bookmarks'><conference jid='room@groups.localhost' name='Room'/></storage>\
         </query></iq>",
    );
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let r = alice.iq(
        "<iq type='get' id='ID'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>",
    );
    let storage = r
        .get_child("query", "jabber:iq:private")
        .and_then(|q| q.get_child("storage", "storage:bookmarks"))
        .unwrap_or_else(|| panic!("no storage: {r}"));
    let conf = storage.children().next().expect("conference kept");
    assert_eq!(conf.attr("jid"), Some("room@groups.localhost"));

    // Another namespace is another slot: empty.
    let r = alice.iq(
        "<iq type='get' id='ID'><query xmlns='jabber:iq:private'><prefs xmlns='urn:example:prefs'/></query></iq>",
    );
    let prefs = r
        .get_child("query", "jabber:iq:private")
        .and_then(|q| q.get_child("prefs", "urn:example:prefs"))
        .unwrap_or_else(|| panic!("no empty prefs: {r}"));
    assert_eq!(prefs.children().count(), 0);

    // Reserved namespaces are refused.
    let r = alice.iq(
        "<iq type='set' id='ID'><query xmlns='jabber:iq:private'><foo xmlns='jabber:client'/></query></iq>",
    );
    assert_eq!(stanza_error(&r), "not-acceptable", "{r}");

    // bob sees his own (empty) storage and cannot read alice's.
    let mut bob = login(&server, "bob", "pc");
    let r = bob.iq(
        "<iq type='get' id='ID'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>",
    );
    let storage = r
        .get_child("query", "jabber:iq:private")
        .and_then(|q| q.get_child("storage", "storage:bookmarks"))
        .unwrap();
    assert_eq!(storage.children().count(), 0, "{r}");
    let r = bob.iq(
        "<iq type='get' id='ID' to='alice@localhost'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>",
    );
    assert_eq!(stanza_error(&r), "forbidden", "{r}");
}

// ---------------------------------------------------------------- XEP-0157

#[test]
fn contact_addresses_are_in_server_disco() {
    let server = server_with(
        "admins = [\"alice@localhost\"]\n[contact]\nabuse = [\"mailto:abuse@localhost\"]\n",
        &["alice"],
    );
    let mut alice = login(&server, "alice", "phone");
    let q = server_info(&mut alice);
    let form = q
        .children()
        .find(|c| {
            c.is("x", NS_DATA)
                && form_values(c, "FORM_TYPE") == ["http://jabber.org/network/serverinfo"]
        })
        .unwrap_or_else(|| panic!("no serverinfo form: {q}"));
    assert_eq!(
        form_values(form, "abuse-addresses"),
        ["mailto:abuse@localhost"]
    );
    assert_eq!(
        form_values(form, "admin-addresses"),
        ["xmpp:alice@localhost"]
    );
    assert!(form_values(form, "support-addresses").is_empty());

    // Without contacts or admins there is no form at all.
    let server = server_with("", &["alice"]);
    let mut alice = login(&server, "alice", "phone");
    let q = server_info(&mut alice);
    assert!(!q.children().any(|c| c.is("x", NS_DATA)), "{q}");
}

// ---------------------------------------------------------------- XEP-0077

#[test]
fn password_change_through_in_band_registration() {
    let server = server_with("", &["alice", "bob"]);
    let mut alice = login(&server, "alice", "phone");
    assert!(has_feature(&server_info(&mut alice), "jabber:iq:register"));
    let r =
        alice.iq("<iq type='get' id='ID' to='localhost'><query xmlns='jabber:iq:register'/></iq>");
    let q = r.get_child("query", "jabber:iq:register").unwrap();
    assert!(
        q.get_child("registered", "jabber:iq:register").is_some(),
        "{r}"
    );

    // Someone else's password: not allowed.
    let r = alice.iq(
        "<iq type='set' id='ID' to='localhost'><query xmlns='jabber:iq:register'>\
         <username>bob</username><password>pwned</password></query></iq>",
    );
    assert_eq!(stanza_error(&r), "not-allowed", "{r}");

    let r = alice.iq(
        "<iq type='set' id='ID' to='localhost'><query xmlns='jabber:iq:register'>\
         <username>alice</username><password>brand-new-secret</password></query></iq>",
    );
    assert_eq!(r.attr("type"), Some("result"), "{r}");

    let mut old = Client::starttls_to(&server);
    assert!(old
        .try_login(Mechanism::ScramSha256, "alice", "alice-secret")
        .is_err());
    let mut new = Client::starttls_to(&server);
    new.try_login(Mechanism::ScramSha256, "alice", "brand-new-secret")
        .expect("login with the new password");
    let mut bob = Client::starttls_to(&server);
    bob.try_login(Mechanism::ScramSha256, "bob", "bob-secret")
        .expect("bob's password unchanged");
}

#[test]
fn account_removal_through_in_band_registration() {
    let server = server_with("", &["alice"]);
    let mut alice = login(&server, "alice", "phone");
    let r =
        alice.iq("<iq type='set' id='ID'><query xmlns='jabber:iq:register'><remove/></query></iq>");
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    alice.expect_stream_error("not-authorized");
    let mut again = Client::starttls_to(&server);
    assert!(again
        .try_login(Mechanism::ScramSha256, "alice", "alice-secret")
        .is_err());
}

// ---------------------------------------------------------------- XEP-0215

fn hmac_password(secret: &str, username: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, username.as_bytes()))
}

#[test]
fn stun_and_turn_services_with_valid_credentials() {
    let server = server_with(
        "[turn]\nhost = \"turn.localhost\"\nsecret = \"north wind\"\ntls_port = 5349\nttl = \"1h\"\n",
        &["alice"],
    );
    let mut alice = login(&server, "alice", "phone");
    assert!(has_feature(&server_info(&mut alice), NS_EXTDISCO));
    let r = alice
        .iq("<iq type='get' id='ID' to='localhost'><services xmlns='urn:xmpp:extdisco:2'/></iq>");
    let services: Vec<Element> = r
        .get_child("services", NS_EXTDISCO)
        .unwrap_or_else(|| panic!("no services: {r}"))
        .children()
        .cloned()
        .collect();
    let kinds: Vec<(String, String)> = services
        .iter()
        .map(|s| {
            (
                s.attr("type").unwrap().into(),
                s.attr("transport").unwrap().into(),
            )
        })
        .collect();
    for want in [
        ("stun", "udp"),
        ("turn", "udp"),
        ("turn", "tcp"),
        ("turns", "tcp"),
    ] {
        assert!(
            kinds.contains(&(want.0.into(), want.1.into())),
            "{want:?} missing: {r}"
        );
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for s in services.iter().filter(|s| s.attr("type") == Some("turn")) {
        assert_eq!(s.attr("host"), Some("turn.localhost"));
        assert_eq!(s.attr("port"), Some("3478"));
        assert_eq!(s.attr("restricted"), Some("1"));
        assert!(s.attr("expires").is_some(), "{s}");
        let username = s.attr("username").unwrap();
        let (expiry, user) = username.split_once(':').unwrap();
        assert_eq!(user, "alice@localhost");
        let expiry: u64 = expiry.parse().unwrap();
        assert!(
            expiry >= now + 3590 && expiry <= now + 3610,
            "{expiry} vs {now}"
        );
        assert_eq!(
            s.attr("password"),
            Some(hmac_password("north wind", username).as_str())
        );
    }

    // The type filter and the credentials query (§3.3).
    let r = alice.iq(
        "<iq type='get' id='ID' to='localhost'><services xmlns='urn:xmpp:extdisco:2' type='stun'/></iq>",
    );
    let s = r.get_child("services", NS_EXTDISCO).unwrap();
    assert!(s.children().all(|c| c.attr("type") == Some("stun")), "{r}");
    let r = alice.iq(
        "<iq type='get' id='ID' to='localhost'><credentials xmlns='urn:xmpp:extdisco:2'>\
         <service host='turn.localhost' type='turn'/></credentials></iq>",
    );
    let c = r
        .get_child("credentials", NS_EXTDISCO)
        .unwrap_or_else(|| panic!("{r}"));
    assert!(c.children().all(|s| s.attr("password").is_some()) && c.children().count() > 0);
    let r = alice.iq(
        "<iq type='get' id='ID' to='localhost'><credentials xmlns='urn:xmpp:extdisco:2'>\
         <service host='elsewhere.example' type='turn'/></credentials></iq>",
    );
    assert_eq!(stanza_error(&r), "item-not-found", "{r}");
}

#[test]
fn turn_disabled_means_no_extdisco() {
    let server = server_with("[turn]\nenabled = false\n", &["alice"]);
    let mut alice = login(&server, "alice", "phone");
    assert!(!has_feature(&server_info(&mut alice), NS_EXTDISCO));
    let r = alice
        .iq("<iq type='get' id='ID' to='localhost'><services xmlns='urn:xmpp:extdisco:2'/></iq>");
    assert_eq!(stanza_error(&r), "service-unavailable", "{r}");
}

// ---------------------------------------------------------------- XEP-0357

fn is_publish(e: &Element) -> bool {
    e.name() == "iq" && e.attr("type") == Some("set") && e.get_child("pubsub", NS_PUBSUB).is_some()
}

fn enable(alice: &mut Client, node: &str) {
    let r = alice.iq(&format!(
        "<iq type='set' id='ID'><enable xmlns='urn:xmpp:push:0' jid='push@localhost/app' node='{node}'>\
         <x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
         <field var='secret'><value>s3cr3t</value></field></x></enable></iq>"
    ));
    assert_eq!(r.attr("type"), Some("result"), "{r}");
}

#[test]
fn push_notifications_for_offline_messages() {
    let server = server_with("", &["alice", "bob", "push"]);
    let mut alice = login(&server, "alice", "phone");
    let r = alice.iq(
        "<iq type='get' id='ID' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    );
    let q = r.get_child("query", NS_DISCO_INFO).unwrap();
    assert!(has_feature(q, "urn:xmpp:push:0"), "{r}");
    enable(&mut alice, "node-1");
    alice.close();

    let mut app = login(&server, "push", "app");
    let mut bob = Client::online(&server, "bob", "bob-secret", "pc");
    bob.send(
        "<message to='alice@localhost' type='chat' id='p1'><body>very private</body></message>",
    );
    let publish = app.recv_until(is_publish);
    assert_eq!(publish.attr("from"), Some("alice@localhost"));
    let pubsub = publish.get_child("pubsub", NS_PUBSUB).unwrap();
    let p = pubsub.get_child("publish", NS_PUBSUB).unwrap();
    assert_eq!(p.attr("node"), Some("node-1"));
    let form = p
        .get_child("item", NS_PUBSUB)
        .and_then(|i| i.get_child("notification", "urn:xmpp:push:0"))
        .and_then(|n| n.get_child("x", NS_DATA))
        .unwrap_or_else(|| panic!("no summary form: {publish}"));
    assert_eq!(form_values(form, "FORM_TYPE"), ["urn:xmpp:push:summary"]);
    assert_eq!(form_values(form, "message-count"), ["1"]);
    assert_eq!(form_values(form, "last-message-sender"), ["bob@localhost"]);
    assert!(
        form_values(form, "last-message-body").is_empty(),
        "body leaked: {publish}"
    );
    assert!(!publish.to_string().contains("very private"), "{publish}");
    let options = pubsub
        .get_child("publish-options", NS_PUBSUB)
        .and_then(|o| o.get_child("x", NS_DATA))
        .unwrap_or_else(|| panic!("no publish-options: {publish}"));
    assert_eq!(form_values(options, "secret"), ["s3cr3t"]);
    let id = publish.attr("id").unwrap().to_owned();
    app.send(&format!(
        "<iq type='result' id='{id}' to='alice@localhost'/>"
    ));

    // A chat state alone notifies nobody; a second message counts 2.
    bob.send("<message to='alice@localhost' type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>");
    bob.send("<message to='alice@localhost' type='chat' id='p2'><body>again</body></message>");
    let publish = app.recv_until(is_publish);
    let form = publish
        .get_child("pubsub", NS_PUBSUB)
        .and_then(|p| p.get_child("publish", NS_PUBSUB))
        .and_then(|p| p.get_child("item", NS_PUBSUB))
        .and_then(|i| i.get_child("notification", "urn:xmpp:push:0"))
        .and_then(|n| n.get_child("x", NS_DATA))
        .unwrap();
    assert_eq!(form_values(form, "message-count"), ["2"]);
    app.drain(QUIET);

    // Disable stops it.
    let mut alice = login(&server, "alice", "phone");
    let r = alice.iq(
        "<iq type='set' id='ID'><disable xmlns='urn:xmpp:push:0' jid='push@localhost/app'/></iq>",
    );
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    alice.drain(QUIET);
    alice.close();
    bob.send("<message to='alice@localhost' type='chat' id='p3'><body>third</body></message>");
    assert!(!app.drain(QUIET).iter().any(is_publish));
}

#[test]
fn an_error_from_the_app_server_disables_the_registration() {
    let server = server_with("", &["alice", "bob", "push"]);
    let mut alice = login(&server, "alice", "phone");
    enable(&mut alice, "node-2");
    alice.close();
    let mut app = login(&server, "push", "app");
    let mut bob = Client::online(&server, "bob", "bob-secret", "pc");
    bob.send("<message to='alice@localhost' type='chat'><body>one</body></message>");
    let publish = app.recv_until(is_publish);
    let id = publish.attr("id").unwrap().to_owned();
    app.send(&format!(
        "<iq type='error' id='{id}' to='alice@localhost'><error type='cancel'>\
         <item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    ));
    assert!(
        server.wait_for_log("answered a notification", Duration::from_secs(5)),
        "the error was not noticed"
    );
    bob.send("<message to='alice@localhost' type='chat'><body>two</body></message>");
    assert!(
        !app.drain(QUIET).iter().any(is_publish),
        "still notified after an error"
    );
}
