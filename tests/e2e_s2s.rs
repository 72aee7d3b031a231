//! Federation between two real kith servers on loopback, `a.test` and `b.test`, found
//! through a real DNS server (dnsmasq answering the SRV and A records, named in
//! `[s2s] resolver`): certificate authentication (SASL EXTERNAL with a CA the test makes
//! and `[s2s] extra_ca`), dialback when certificates don't verify and policy allows it,
//! refusal when it doesn't, bounces when the other server is down or silent, and PEP events
//! (an OMEMO device list) reaching a contact on the other server.
//!
//! Interop with Prosody and ejabberd is `tests/interop_federation.rs`; this file keeps the
//! kith-to-kith cases fast and free of network namespaces.

mod common;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::client::{stanza_error, Client};
use common::dnsmasq::{self, Dnsmasq};
use common::free_udp_port;
use common::{Options, TestServer};
use kith::xml::Element;

const A: &str = "a.test";
const B: &str = "b.test";

/// A CA and a certificate per domain (SAN = the domain), written as PEM files.
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
}

impl Pki {
    fn new(domains: &[&str]) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let dir = common::unique_temp_dir();
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "kith test CA");
        let ca = params.self_signed(&ca_key).unwrap();
        let ca_path = dir.join("ca.pem");
        fs::write(&ca_path, ca.pem()).unwrap();
        for d in domains {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec![d.to_string()])
                .unwrap()
                .signed_by(&key, &ca, &ca_key)
                .unwrap();
            fs::write(dir.join(format!("{d}.crt")), cert.pem()).unwrap();
            fs::write(dir.join(format!("{d}.key")), key.serialize_pem()).unwrap();
        }
        Pki { dir, ca: ca_path }
    }

    fn tls_toml(&self, domain: &str) -> String {
        format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            self.dir.join(format!("{domain}.crt")).display(),
            self.dir.join(format!("{domain}.key")).display()
        )
    }
}

/// A server for `domain` listening for s2s, asking dnsmasq on `dns_port`; `tls` is a `[tls]`
/// table or empty (self-signed), `s2s` more `[s2s]` keys.
fn server(domain: &str, dns_port: u16, tls: &str, s2s: &str) -> TestServer {
    let s = Options::default()
        .domain(domain)
        .listen("s2s")
        .extra_toml(tls)
        .extra_toml(&format!(
            "[s2s]\nresolver = \"127.0.0.1:{dns_port}\"\nconnect_timeout = \"3s\"\n{s2s}"
        ))
        .start();
    s.add_user("alice", "alice-secret");
    s.add_user("bob", "bob-secret");
    s.add_user("carol", "carol-secret");
    s
}

/// SRV and A records for a kith server's s2s port.
fn records_for(domain: &str, port: u16) -> Vec<String> {
    vec![
        format!("--srv-host=_xmpp-server._tcp.{domain},xmpp.{domain},{port},0,0"),
        format!("--host-record=xmpp.{domain},127.0.0.1"),
        format!("--host-record={domain},127.0.0.1"),
    ]
}

fn user(server: &TestServer, ca: &Path, name: &str, password: &str) -> Client {
    let mut c = Client::connect_starttls(server.c2s_port, &server.domain, ca);
    c.login(name, password);
    c.bind(Some("phone"));
    c.presence();
    c
}

/// a.test and b.test with certificates from one CA (which each trusts), found through
/// dnsmasq; the dnsmasq handle keeps it running.
fn federated_pair() -> (Pki, TestServer, TestServer, Dnsmasq) {
    let pki = Pki::new(&[A, B]);
    let dns_port = free_udp_port();
    let ca = format!("extra_ca = \"{}\"\n", pki.ca.display());
    let a = server(A, dns_port, &pki.tls_toml(A), &ca);
    let b = server(B, dns_port, &pki.tls_toml(B), &ca);
    let mut records = records_for(A, a.port("s2s"));
    records.extend(records_for(B, b.port("s2s")));
    let dns = Dnsmasq::start_on(dns_port, &records);
    (pki, a, b, dns)
}

#[test]
fn two_servers_federate_with_certificates() {
    if !dnsmasq::available() {
        return;
    }
    let (pki, a, b, _dns) = federated_pair();

    let mut alice = user(&a, &pki.ca, "alice", "alice-secret");
    let mut bob = user(&b, &pki.ca, "bob", "bob-secret");
    alice.clear_backlog();
    bob.clear_backlog();

    // RFC 6121 §3: the subscription handshake across servers.
    alice.send("<presence to='bob@b.test' type='subscribe'/>");
    let req = bob.recv_until(|e| e.name() == "presence" && e.attr("type") == Some("subscribe"));
    assert_eq!(req.attr("from"), Some("alice@a.test"), "{req}");
    bob.send("<presence to='alice@a.test' type='subscribed'/>");
    let approved =
        alice.recv_until(|e| e.name() == "presence" && e.attr("type") == Some("subscribed"));
    assert_eq!(approved.attr("from"), Some("bob@b.test"), "{approved}");
    // The approval makes bob's server send his current presence.
    let available = alice.recv_until(|e| {
        e.name() == "presence"
            && e.attr("type").is_none()
            && e.attr("from") == Some("bob@b.test/phone")
    });
    assert_eq!(available.attr("to"), Some("alice@a.test"), "{available}");
    let (_, roster) = alice.roster_get();
    assert!(
        roster.iter().any(|r| r.0 == "bob@b.test" && r.1 == "to"),
        "{roster:?}"
    );

    // Messages both ways.
    alice.send("<message to='bob@b.test' type='chat' id='m1'><body>hello from a</body></message>");
    let m = bob.recv_until(|e| e.name() == "message" && e.attr("id") == Some("m1"));
    assert_eq!(m.attr("from"), Some("alice@a.test/phone"), "{m}");
    assert_eq!(
        m.get_child("body", "jabber:client").unwrap().text(),
        "hello from a"
    );
    bob.send(
        "<message to='alice@a.test/phone' type='chat' id='m2'><body>hi from b</body></message>",
    );
    let m = alice.recv_until(|e| e.name() == "message" && e.attr("id") == Some("m2"));
    assert_eq!(m.attr("from"), Some("bob@b.test/phone"), "{m}");

    // iq round trips: a ping and disco#info at the other server, a vCard of its user, and an
    // iq to a full JID answered by the client itself.
    let r = alice.iq("<iq type='get' to='b.test' id='ID'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let r = alice.iq(
        "<iq type='get' to='b.test' id='ID'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    );
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    assert!(r.to_string().contains("urn:xmpp:ping"), "{r}");
    bob.iq("<iq type='set' id='ID'><vCard xmlns='vcard-temp'><FN>Bob B.</FN></vCard></iq>");
    let r = alice.iq("<iq type='get' to='bob@b.test' id='ID'><vCard xmlns='vcard-temp'/></iq>");
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    assert!(r.to_string().contains("Bob B."), "{r}");
    alice.send(
        "<iq type='get' to='bob@b.test/phone' id='v1'><query xmlns='jabber:iq:version'/></iq>",
    );
    let q = bob.recv_until(|e| e.name() == "iq" && e.attr("id") == Some("v1"));
    assert_eq!(q.attr("from"), Some("alice@a.test/phone"), "{q}");
    bob.send("<iq type='result' to='alice@a.test/phone' id='v1'><query xmlns='jabber:iq:version'><name>t</name></query></iq>");
    let r = alice.recv_until(|e| e.name() == "iq" && e.attr("id") == Some("v1"));
    assert_eq!(r.attr("type"), Some("result"), "{r}");

    // An unknown user on the other server: the error comes back across.
    alice.send("<message to='nobody@b.test' type='chat' id='m3'><body>?</body></message>");
    let e = alice.recv_until(|e| e.name() == "message" && e.attr("id") == Some("m3"));
    assert_eq!(e.attr("type"), Some("error"), "{e}");

    // Authenticated by certificate on both streams, no dialback.
    for (s, peer) in [(&a, B), (&b, A)] {
        let log = s.log();
        assert!(
            log.contains(&format!("connected to {peer}")) && log.contains("certificate verified"),
            "{log}"
        );
        assert!(
            log.contains(&format!("{peer} authenticated from")) && log.contains("(certificate)"),
            "{log}"
        );
    }
}

/// The caps of a client that wants OMEMO device list events: its disco#info and `ver`.
fn omemo_client_caps() -> (String, String) {
    let info = "<query xmlns='http://jabber.org/protocol/disco#info'>\
                <identity category='client' type='phone' name='t'/>\
                <feature var='http://jabber.org/protocol/disco#info'/>\
                <feature var='eu.siacs.conversations.axolotl.devicelist+notify'/></query>";
    let ver = kith::services::caps::ver_hash(&Element::parse(info).unwrap());
    (info.to_string(), ver)
}

/// Answers every disco#info query for the client's caps node (its own server asks too) until
/// `until` arrives, which it returns.
fn answering_caps_until(
    c: &mut Client,
    info: &str,
    mut until: impl FnMut(&Element) -> bool,
) -> Element {
    loop {
        let e = c.recv_until(|e| {
            until(e)
                || (e.name() == "iq"
                    && e.attr("type") == Some("get")
                    && e.to_string().contains("disco#info"))
        });
        if until(&e) {
            return e;
        }
        let reply = info.replacen(
            "<query ",
            &format!(
                "<query node='{}' ",
                e.get_child("query", "http://jabber.org/protocol/disco#info")
                    .and_then(|q| q.attr("node"))
                    .unwrap_or("")
            ),
            1,
        );
        c.send(&format!(
            "<iq type='result' id='{}' to='{}'>{reply}</iq>",
            e.attr("id").unwrap_or(""),
            e.attr("from").unwrap_or("")
        ));
    }
}

#[test]
fn pep_events_reach_a_contact_on_the_other_server() {
    if !dnsmasq::available() {
        return;
    }
    let (pki, a, b, _dns) = federated_pair();
    let mut alice = user(&a, &pki.ca, "alice", "alice-secret");
    let mut bob = user(&b, &pki.ca, "bob", "bob-secret");

    // Mutual subscription across the servers.
    fn subscribe(me: &mut Client, my_jid: &str, other: &mut Client, other_jid: &str) {
        me.send(&format!("<presence to='{other_jid}' type='subscribe'/>"));
        other.recv_until(|e| e.attr("type") == Some("subscribe") && e.attr("from") == Some(my_jid));
        other.send(&format!("<presence to='{my_jid}' type='subscribed'/>"));
        me.recv_until(|e| e.attr("type") == Some("subscribed"));
    }
    subscribe(&mut alice, "alice@a.test", &mut bob, "bob@b.test");
    subscribe(&mut bob, "bob@b.test", &mut alice, "alice@a.test");

    // alice's device list (open, as Conversations publishes it) exists before bob's client
    // says it wants it.
    let publish = |id: &str, device: &str| {
        format!(
            "<iq type='set' id='{id}'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
             <publish node='eu.siacs.conversations.axolotl.devicelist'><item id='current'>\
             <list xmlns='eu.siacs.conversations.axolotl'><device id='{device}'/></list>\
             </item></publish><publish-options><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'>\
             <value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
             <field var='pubsub#access_model'><value>open</value></field>\
             </x></publish-options></pubsub></iq>"
        )
    };
    alice.send(&publish("p1", "1111"));
    let r = alice.recv_until(|e| e.name() == "iq" && e.attr("id") == Some("p1"));
    assert_eq!(r.attr("type"), Some("result"), "{r}");

    // bob's client announces +notify in its caps. alice's server asks it across the link
    // what the caps mean, then sends the last item (XEP-0163 §4.3.2).
    let (info, ver) = omemo_client_caps();
    bob.send(&format!(
        "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='urn:test' ver='{ver}'/></presence>"
    ));
    let is_event = |device: &'static str| {
        move |e: &Element| {
            e.name() == "message"
                && e.attr("from") == Some("alice@a.test")
                && e.to_string().contains(&format!("device id='{device}'"))
        }
    };
    let last = answering_caps_until(&mut bob, &info, is_event("1111"));
    assert_eq!(last.attr("type"), Some("headline"), "{last}");
    assert!(
        last.to_string().contains("urn:xmpp:delay"),
        "the last item is marked as delayed: {last}"
    );

    // A new device: the event is pushed to bob's resource on b.test.
    alice.send(&publish("p2", "2222"));
    let live = answering_caps_until(&mut bob, &info, is_event("2222"));
    assert_eq!(live.attr("to"), Some("bob@b.test/phone"), "{live}");

    // Once bob's client goes unavailable, alice's server forgets it: no more events.
    bob.send("<presence type='unavailable'/>");
    std::thread::sleep(Duration::from_millis(300));
    alice.send(&publish("p3", "3333"));
    alice.recv_until(|e| e.name() == "iq" && e.attr("id") == Some("p3"));
    let later = bob.drain(Duration::from_millis(800));
    assert!(
        !later.iter().any(|e| e.to_string().contains("3333")),
        "an event reached an unavailable resource: {later:?}"
    );

    // Someone on b.test who is not alice's contact sends her presence with the same caps: an
    // open node is theirs to fetch, but events and last items go to contacts only.
    let mut carol = user(&b, &pki.ca, "carol", "carol-secret");
    carol.send(&format!(
        "<presence to='alice@a.test'><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='urn:test' ver='{ver}'/></presence>"
    ));
    std::thread::sleep(Duration::from_millis(300));
    alice.send(&publish("p4", "4444"));
    alice.recv_until(|e| e.name() == "iq" && e.attr("id") == Some("p4"));
    let got = carol.drain(Duration::from_millis(800));
    assert!(
        !got.iter()
            .any(|e| e.name() == "message" && e.attr("from") == Some("alice@a.test")),
        "a stranger got alice's PEP event: {got:?}"
    );
}

#[test]
fn dialback_when_certificates_do_not_verify_and_policy_allows_it() {
    if !dnsmasq::available() {
        return;
    }
    let dns_port = free_udp_port();
    // Self-signed certificates (kith's default): nobody's CA.
    let lax = "require_valid_certs = false\n";
    let a = server(A, dns_port, "", lax);
    let b = server(B, dns_port, "", lax);
    let mut records = records_for(A, a.port("s2s"));
    records.extend(records_for(B, b.port("s2s")));
    let _dns = Dnsmasq::start_on(dns_port, &records);

    let mut alice = user(&a, &common::client::ca_path(&a), "alice", "alice-secret");
    let mut bob = user(&b, &common::client::ca_path(&b), "bob", "bob-secret");
    alice.send("<message to='bob@b.test' type='chat' id='d1'><body>by dialback</body></message>");
    let m = bob.recv_until(|e| e.name() == "message" && e.attr("id") == Some("d1"));
    assert_eq!(m.attr("from"), Some("alice@a.test/phone"), "{m}");
    bob.send("<message to='alice@a.test' type='chat' id='d2'><body>back</body></message>");
    alice.recv_until(|e| e.name() == "message" && e.attr("id") == Some("d2"));
    assert!(b.log().contains("a.test authenticated from") && b.log().contains("(dialback)"));
}

#[test]
fn untrusted_certificates_are_refused_by_default() {
    if !dnsmasq::available() {
        return;
    }
    let dns_port = free_udp_port();
    let a = server(A, dns_port, "", "");
    let b = server(B, dns_port, "", "");
    let mut records = records_for(A, a.port("s2s"));
    records.extend(records_for(B, b.port("s2s")));
    let _dns = Dnsmasq::start_on(dns_port, &records);

    let mut alice = user(&a, &common::client::ca_path(&a), "alice", "alice-secret");
    let mut bob = user(&b, &common::client::ca_path(&b), "bob", "bob-secret");
    alice.send("<message to='bob@b.test' type='chat' id='r1'><body>no</body></message>");
    let e = alice.recv_until(|e| e.name() == "message" && e.attr("id") == Some("r1"));
    assert_eq!(e.attr("type"), Some("error"), "{e}");
    assert_eq!(stanza_error(&e), "remote-server-not-found", "{e}");
    bob.expect_nothing(Duration::from_millis(300));
}

#[test]
fn a_server_that_is_down_or_silent_bounces_what_waited() {
    if !dnsmasq::available() {
        return;
    }
    let dns_port = free_udp_port();
    let a = server(A, dns_port, "", "");
    // down.test: nothing listens on its port. silent.test: accepts TCP, never speaks.
    let closed = common::free_port();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut records = records_for("down.test", closed);
    records.extend(records_for(
        "silent.test",
        silent.local_addr().unwrap().port(),
    ));
    records.push("--srv-host=_xmpp-server._tcp.none.test".into());
    let _dns = Dnsmasq::start_on(dns_port, &records);

    let mut alice = user(&a, &common::client::ca_path(&a), "alice", "alice-secret");
    alice.send("<message to='x@down.test' type='chat' id='b1'><body>1</body></message>");
    alice.send("<message to='x@down.test' type='chat' id='b2'><body>2</body></message>");
    alice.send("<message to='x@none.test' type='chat' id='b3'><body>3</body></message>");
    for id in ["b1", "b2", "b3"] {
        let e = alice.recv_until(|e| e.name() == "message" && e.attr("id") == Some(id));
        assert_eq!(e.attr("type"), Some("error"), "{e}");
        assert_eq!(stanza_error(&e), "remote-server-not-found", "{e}");
    }
    // The iq waits for the connect timeout (3 s here).
    alice.send("<iq type='get' to='silent.test' id='b4'><ping xmlns='urn:xmpp:ping'/></iq>");
    alice.timeout = Duration::from_secs(10);
    let e = alice.recv_until(|e| e.name() == "iq" && e.attr("id") == Some("b4"));
    assert_eq!(e.attr("type"), Some("error"), "{e}");
    assert_eq!(stanza_error(&e), "remote-server-timeout", "{e}");
    drop(silent);
}
