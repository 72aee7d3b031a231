//! End to end: XEP-0313 message archive management on user archives: archiving on both sides,
//! XEP-0359 stanza ids on delivered messages, XEP-0059 paging backwards and forwards, the
//! `with`/`start`/`end` filters, preferences, errors, persistence across a restart and removal
//! with the account.

mod common;

use std::time::Duration;

use common::client::{stanza_error, Client, NS_CLIENT, NS_DISCO_INFO};
use common::TestServer;
use kith::xml::Element;

const NS_MAM: &str = "urn:xmpp:mam:2";
const NS_RSM: &str = "http://jabber.org/protocol/rsm";
const NS_FORWARD: &str = "urn:xmpp:forward:0";
const NS_SID: &str = "urn:xmpp:sid:0";
const QUIET: Duration = Duration::from_millis(400);

fn server_with(users: &[&str]) -> TestServer {
    let server = TestServer::start();
    for u in users {
        server.add_user(u, &format!("{u}-secret"));
    }
    server
}

fn online(server: &TestServer, user: &str, resource: &str) -> Client {
    let mut c = Client::online(server, user, &format!("{user}-secret"), resource);
    c.clear_backlog();
    c
}

/// One page of results as the client saw it.
#[derive(Debug)]
struct Page {
    /// (archive id, body, from of the archived message, delay stamp), in the order received.
    items: Vec<(String, String, String, String)>,
    complete: bool,
    first: Option<String>,
    last: Option<String>,
    count: Option<usize>,
}

impl Page {
    fn bodies(&self) -> Vec<String> {
        self.items.iter().map(|i| i.1.clone()).collect()
    }
    fn ids(&self) -> Vec<String> {
        self.items.iter().map(|i| i.0.clone()).collect()
    }
}

fn field(var: &str, value: &str) -> String {
    format!("<field var='{var}'><value>{value}</value></field>")
}

/// Runs a query with the given form fields and RSM children; returns the page or the error iq.
fn try_query(c: &mut Client, fields: &str, rsm: &str) -> Result<Page, Element> {
    let id = c.id();
    let qid = format!("q{id}");
    c.send(&format!(
        "<iq type='set' id='{id}'><query xmlns='{NS_MAM}' queryid='{qid}'>\
         <x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>{NS_MAM}</value></field>{fields}</x>\
         <set xmlns='{NS_RSM}'>{rsm}</set></query></iq>"
    ));
    let mut items = Vec::new();
    loop {
        let e = c.recv_until(|e| {
            (e.name() == "iq" && e.attr("id") == Some(id.as_str()))
                || e.get_child("result", NS_MAM).is_some()
        });
        if e.name() == "iq" {
            if e.attr("type") != Some("result") {
                return Err(e);
            }
            let fin = e
                .get_child("fin", NS_MAM)
                .unwrap_or_else(|| panic!("no fin: {e}"));
            let set = fin
                .get_child("set", NS_RSM)
                .unwrap_or_else(|| panic!("no set: {e}"));
            let text = |n: &str| set.get_child(n, NS_RSM).map(|x| x.text());
            return Ok(Page {
                items,
                complete: fin.attr("complete") == Some("true"),
                first: text("first"),
                last: text("last"),
                count: text("count").map(|n| n.parse().unwrap()),
            });
        }
        assert_eq!(
            e.attr("to"),
            Some(c.jid()),
            "result to the querying resource: {e}"
        );
        let result = e.get_child("result", NS_MAM).unwrap();
        assert_eq!(result.attr("queryid"), Some(qid.as_str()), "{e}");
        let fwd = result
            .get_child("forwarded", NS_FORWARD)
            .expect("forwarded");
        let stamp = fwd
            .get_child("delay", "urn:xmpp:delay")
            .and_then(|d| d.attr("stamp"))
            .expect("delay stamp")
            .to_owned();
        let msg = fwd
            .get_child("message", NS_CLIENT)
            .expect("archived message");
        items.push((
            result.attr("id").expect("result id").to_owned(),
            msg.get_child("body", NS_CLIENT)
                .map(|b| b.text())
                .unwrap_or_default(),
            msg.attr("from").unwrap_or("").to_owned(),
            stamp,
        ));
    }
}

fn query(c: &mut Client, fields: &str, rsm: &str) -> Page {
    try_query(c, fields, rsm).unwrap_or_else(|e| panic!("query failed: {e}"))
}

/// Sends `n` chat messages `prefix-i` and returns their bodies.
fn send_many(from: &mut Client, to: &str, prefix: &str, n: usize) -> Vec<String> {
    let mut bodies = Vec::new();
    let mut batch = String::new();
    for i in 0..n {
        let body = format!("{prefix}-{i}");
        batch.push_str(&format!(
            "<message to='{to}' type='chat' id='m{i}'><body>{body}</body></message>"
        ));
        bodies.push(body);
    }
    from.send(&batch);
    bodies
}

/// Receives `n` chat messages; returns (body, stanza-id by the receiver).
fn receive(c: &mut Client, n: usize) -> Vec<(String, Option<String>)> {
    let me = c.bare().to_owned();
    (0..n)
        .map(|_| {
            let m =
                c.recv_until(|e| e.name() == "message" && e.get_child("body", NS_CLIENT).is_some());
            let sid = m
                .children()
                .filter(|x| x.is("stanza-id", NS_SID) && x.attr("by") == Some(me.as_str()))
                .map(|x| x.attr("id").unwrap().to_owned())
                .collect::<Vec<_>>();
            assert!(sid.len() <= 1, "one stanza-id by us: {m}");
            (
                m.get_child("body", NS_CLIENT).unwrap().text(),
                sid.into_iter().next(),
            )
        })
        .collect()
}

/// Pages backwards from the end with `<before/>`, then `before=first`, until complete.
fn page_backwards(c: &mut Client, fields: &str, max: usize) -> Vec<Page> {
    let mut pages = vec![query(c, fields, &format!("<max>{max}</max><before/>"))];
    while !pages.last().unwrap().complete {
        let first = pages.last().unwrap().first.clone().expect("first");
        pages.push(query(
            c,
            fields,
            &format!("<max>{max}</max><before>{first}</before>"),
        ));
        assert!(pages.len() < 1000, "paging does not end");
    }
    pages
}

fn page_forwards(c: &mut Client, fields: &str, max: usize) -> Vec<Page> {
    let mut pages = vec![query(c, fields, &format!("<max>{max}</max>"))];
    while !pages.last().unwrap().complete {
        let last = pages.last().unwrap().last.clone().expect("last");
        pages.push(query(
            c,
            fields,
            &format!("<max>{max}</max><after>{last}</after>"),
        ));
        assert!(pages.len() < 1000, "paging does not end");
    }
    pages
}

fn check_pages(pages: &[Page], max: usize, expected: &[String], backwards: bool) {
    let n = pages.len();
    for (i, p) in pages.iter().enumerate() {
        assert_eq!(
            p.complete,
            i == n - 1,
            "complete only on the last page (page {i})"
        );
        assert!(p.items.len() <= max);
        assert_eq!(p.first.as_ref(), p.items.first().map(|x| &x.0));
        assert_eq!(p.last.as_ref(), p.items.last().map(|x| &x.0));
    }
    let mut all: Vec<&Page> = pages.iter().collect();
    if backwards {
        all.reverse();
    }
    let bodies: Vec<String> = all.iter().flat_map(|p| p.bodies()).collect();
    assert_eq!(bodies, expected);
}

#[test]
fn two_hundred_fifty_messages_page_both_ways_with_matching_stanza_ids() {
    let server = server_with(&["alice", "bob"]);
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "laptop");
    let sent = send_many(&mut alice, "bob@localhost", "hello", 250);
    let got = receive(&mut bob, 250);
    assert_eq!(got.iter().map(|g| g.0.clone()).collect::<Vec<_>>(), sent);
    let sids: Vec<String> = got
        .iter()
        .map(|g| {
            g.1.clone()
                .unwrap_or_else(|| panic!("no stanza-id on {}", g.0))
        })
        .collect();

    // Bob: backwards in pages of 50, forwards in pages of 100.
    let back = page_backwards(&mut bob, "", 50);
    assert_eq!(back.len(), 5);
    check_pages(&back, 50, &sent, true);
    let fwd = page_forwards(&mut bob, "", 100);
    assert_eq!(fwd.len(), 3);
    check_pages(&fwd, 100, &sent, false);
    let ids: Vec<String> = fwd.iter().flat_map(|p| p.ids()).collect();
    assert_eq!(ids, sids, "stanza-ids on delivery are the archive ids");
    assert!(fwd[0].items.iter().all(|i| i.2 == "alice@localhost/phone"));

    // Alice has the same conversation as outgoing messages, with ids of her own archive.
    let a_back = page_backwards(&mut alice, "", 100);
    check_pages(&a_back, 100, &sent, true);
    let a_fwd = page_forwards(&mut alice, &field("with", "bob@localhost"), 50);
    check_pages(&a_fwd, 50, &sent, false);

    // Paging by id bounds (#extended) and by RSM from the middle.
    let mid = &ids[99];
    let p = query(&mut bob, &field("after-id", mid), "<max>10</max>");
    assert_eq!(p.bodies(), sent[100..110]);
    let p = query(&mut bob, &field("before-id", mid), "<max>10</max><before/>");
    assert_eq!(p.bodies(), sent[89..99]);
    assert!(!p.complete);
    let p = query(
        &mut bob,
        "",
        &format!("<max>10</max><before>{mid}</before>"),
    );
    assert_eq!(p.bodies(), sent[89..99]);
    let ids_field = format!(
        "<field var='ids'><value>{}</value><value>{}</value></field>",
        ids[7], ids[3]
    );
    let p = query(&mut bob, &ids_field, "");
    assert_eq!(p.bodies(), [sent[3].clone(), sent[7].clone()]);

    // <flip-page/> (#extended): the last page, newest first.
    let id = bob.id();
    bob.send(&format!(
        "<iq type='set' id='{id}'><query xmlns='{NS_MAM}'><flip-page/>\
         <set xmlns='{NS_RSM}'><max>3</max><before/></set></query></iq>"
    ));
    let mut flipped = Vec::new();
    loop {
        let e = bob.recv();
        if e.name() == "iq" {
            assert_eq!(e.attr("id"), Some(id.as_str()), "{e}");
            break;
        }
        flipped.push(
            e.get_child("result", NS_MAM)
                .unwrap()
                .attr("id")
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(
        flipped,
        [ids[249].clone(), ids[248].clone(), ids[247].clone()]
    );

    // RSM count with max 0.
    let p = query(&mut bob, "", "<max>0</max>");
    assert_eq!(p.count, Some(250));
    assert!(p.items.is_empty());
}

#[test]
fn with_start_and_end_filters() {
    let server = server_with(&["alice", "bob", "carol"]);
    let mut alice = online(&server, "alice", "phone");
    let mut carol = online(&server, "carol", "pc");
    let mut bob = online(&server, "bob", "laptop");
    let a1 = send_many(&mut alice, "bob@localhost", "early-alice", 3);
    receive(&mut bob, 3);
    let c1 = send_many(&mut carol, "bob@localhost/laptop", "early-carol", 2);
    receive(&mut bob, 2);
    // Second-resolution boundaries: everything above happened before `mid`, everything
    // below after it.
    std::thread::sleep(Duration::from_millis(1100));
    let mid = kith::time::rfc3339(kith::time::now_unix());
    std::thread::sleep(Duration::from_millis(1100));
    let a2 = send_many(&mut alice, "bob@localhost", "late-alice", 2);
    receive(&mut bob, 2);

    let all = |p: Page| p.bodies();
    let alice_all: Vec<String> = a1.iter().chain(&a2).cloned().collect();
    assert_eq!(
        all(query(&mut bob, &field("with", "alice@localhost"), "")),
        alice_all
    );
    assert_eq!(
        all(query(&mut bob, &field("with", "alice@localhost/phone"), "")),
        alice_all
    );
    assert!(all(query(&mut bob, &field("with", "alice@localhost/other"), "")).is_empty());
    assert_eq!(
        all(query(&mut bob, &field("with", "carol@localhost"), "")),
        c1
    );
    // Alice's outgoing archive, filtered by the full JID she wrote to.
    assert_eq!(
        all(query(
            &mut carol,
            &field("with", "bob@localhost/laptop"),
            ""
        )),
        c1
    );
    assert_eq!(all(query(&mut bob, &field("start", &mid), "")), a2);
    let early: Vec<String> = a1.iter().chain(&c1).cloned().collect();
    assert_eq!(all(query(&mut bob, &field("end", &mid), "")), early);
    let both = format!(
        "{}{}",
        field("start", &mid),
        field("with", "carol@localhost")
    );
    assert!(all(query(&mut bob, &both, "")).is_empty());
    assert_eq!(all(query(&mut alice, &field("start", &mid), "")), a2);
}

#[test]
fn prefs_never_keeps_messages_out_of_the_archive() {
    let server = server_with(&["alice", "bob", "carol"]);
    let mut alice = online(&server, "alice", "phone");
    let mut carol = online(&server, "carol", "pc");
    let mut bob = online(&server, "bob", "laptop");
    let r = bob.iq(&format!(
        "<iq type='get' id='ID'><prefs xmlns='{NS_MAM}'/></iq>"
    ));
    assert_eq!(
        r.get_child("prefs", NS_MAM).and_then(|p| p.attr("default")),
        Some("always"),
        "{r}"
    );
    let r = bob.iq(&format!(
        "<iq type='set' id='ID'><prefs xmlns='{NS_MAM}' default='never'>\
         <always><jid>carol@localhost</jid></always><never/></prefs></iq>"
    ));
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let r = bob.iq(&format!(
        "<iq type='get' id='ID'><prefs xmlns='{NS_MAM}'/></iq>"
    ));
    let prefs = r.get_child("prefs", NS_MAM).unwrap();
    assert_eq!(prefs.attr("default"), Some("never"));
    let always = prefs.get_child("always", NS_MAM).unwrap();
    assert_eq!(
        always.get_child("jid", NS_MAM).unwrap().text(),
        "carol@localhost"
    );

    send_many(&mut alice, "bob@localhost", "secret", 2);
    let got = receive(&mut bob, 2);
    assert!(
        got.iter().all(|g| g.1.is_none()),
        "no stanza-id when not archived: {got:?}"
    );
    let kept = send_many(&mut carol, "bob@localhost", "kept", 1);
    let got = receive(&mut bob, 1);
    assert!(got[0].1.is_some());
    assert_eq!(query(&mut bob, "", "").bodies(), kept);
    // Alice's own archive follows her preferences (default always).
    assert_eq!(query(&mut alice, "", "").bodies().len(), 2);

    // Not archived: errors, chat states alone, no-store hints, groupchat.
    alice.send(
        "<message to='bob@localhost' type='chat'><body>x</body>\
         <no-store xmlns='urn:xmpp:hints'/></message>\
         <message to='bob@localhost' type='chat'>\
         <active xmlns='http://jabber.org/protocol/chatstates'/></message>",
    );
    bob.drain(QUIET);
    assert_eq!(query(&mut alice, "", "").bodies().len(), 2);
}

#[test]
fn prefs_roster_archives_only_contacts() {
    let server = server_with(&["alice", "bob", "carol"]);
    let mut alice = online(&server, "alice", "phone");
    let mut carol = online(&server, "carol", "pc");
    let mut bob = online(&server, "bob", "laptop");
    let r = bob.iq(&format!(
        "<iq type='set' id='ID'><prefs xmlns='{NS_MAM}' default='roster'/></iq>"
    ));
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let r = bob.iq("<iq type='set' id='ID'><query xmlns='jabber:iq:roster'>\
         <item jid='alice@localhost'/></query></iq>");
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let from_alice = send_many(&mut alice, "bob@localhost", "contact", 2);
    receive(&mut bob, 2);
    send_many(&mut carol, "bob@localhost", "stranger", 2);
    receive(&mut bob, 2);
    assert_eq!(query(&mut bob, "", "").bodies(), from_alice);
    // Messages to an account that doesn't exist bounce and stay out of the sender's archive.
    carol.send("<message to='nobody@localhost' type='chat'><body>lost</body></message>");
    let e = carol.recv_until(|e| e.name() == "message" && e.attr("type") == Some("error"));
    assert_eq!(stanza_error(&e), "service-unavailable");
    assert_eq!(query(&mut carol, "", "").bodies().len(), 2);
}

#[test]
fn sent_carbons_carry_the_senders_archive_id() {
    let server = server_with(&["alice", "bob"]);
    let mut phone = online(&server, "alice", "phone");
    let mut laptop = online(&server, "alice", "laptop");
    let r = laptop.iq("<iq type='set' id='ID'><enable xmlns='urn:xmpp:carbons:2'/></iq>");
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let _bob = online(&server, "bob", "pc");
    phone.send("<message to='bob@localhost' type='chat'><body>carbon</body></message>");
    let carbon = laptop.recv_until(|e| e.get_child("sent", "urn:xmpp:carbons:2").is_some());
    let inner = carbon
        .get_child("sent", "urn:xmpp:carbons:2")
        .and_then(|s| s.get_child("forwarded", NS_FORWARD))
        .and_then(|f| f.get_child("message", NS_CLIENT))
        .unwrap_or_else(|| panic!("no forwarded message: {carbon}"));
    let sid = inner
        .get_child("stanza-id", NS_SID)
        .unwrap_or_else(|| panic!("no stanza-id on the sent carbon: {carbon}"));
    assert_eq!(sid.attr("by"), Some("alice@localhost"));
    assert_eq!(query(&mut laptop, "", "").ids(), [sid.attr("id").unwrap()]);
}

#[test]
fn forged_stanza_ids_are_removed() {
    let server = server_with(&["alice", "bob"]);
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "laptop");
    alice.send(&format!(
        "<message to='bob@localhost' type='chat'><body>hi</body>\
         <stanza-id xmlns='{NS_SID}' by='bob@localhost' id='forged'/>\
         <stanza-id xmlns='{NS_SID}' by='elsewhere.example' id='other'/></message>"
    ));
    let m = bob.recv_until(|e| e.name() == "message");
    let sids: Vec<(&str, &str)> = m
        .children()
        .filter(|x| x.is("stanza-id", NS_SID))
        .map(|x| (x.attr("by").unwrap(), x.attr("id").unwrap()))
        .collect();
    assert_eq!(sids.len(), 2, "{m}");
    assert!(sids.contains(&("elsewhere.example", "other")));
    let ours = sids.iter().find(|s| s.0 == "bob@localhost").unwrap();
    assert_ne!(ours.1, "forged");
    assert_eq!(query(&mut bob, "", "").ids(), [ours.1.to_string()]);
}

#[test]
fn errors_form_disco_and_metadata() {
    let server = server_with(&["alice", "bob"]);
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "laptop");

    let e = try_query(&mut bob, "", "<after>0000000000000</after>").unwrap_err();
    assert_eq!(stanza_error(&e), "item-not-found", "{e}");
    let e = try_query(&mut bob, "", "<before>nonsense</before>").unwrap_err();
    assert_eq!(stanza_error(&e), "item-not-found", "{e}");
    let e = try_query(&mut bob, &field("start", "yesterday"), "").unwrap_err();
    assert_eq!(stanza_error(&e), "bad-request", "{e}");
    let e = try_query(&mut bob, &field("colour", "red"), "").unwrap_err();
    assert_eq!(stanza_error(&e), "bad-request", "{e}");

    // Somebody else's archive is not ours to read.
    let r = alice.iq(&format!(
        "<iq type='set' id='ID' to='bob@localhost'><query xmlns='{NS_MAM}'/></iq>"
    ));
    assert_eq!(r.attr("type"), Some("error"), "{r}");

    let r = bob.iq(&format!(
        "<iq type='get' id='ID'><query xmlns='{NS_MAM}'/></iq>"
    ));
    let form = r
        .get_child("query", NS_MAM)
        .and_then(|q| q.get_child("x", "jabber:x:data"));
    let vars: Vec<&str> = form
        .unwrap_or_else(|| panic!("no form: {r}"))
        .children()
        .filter_map(|f| f.attr("var"))
        .collect();
    for v in [
        "FORM_TYPE",
        "with",
        "start",
        "end",
        "after-id",
        "before-id",
        "ids",
    ] {
        assert!(vars.contains(&v), "{v} missing from {r}");
    }

    let r = bob.iq(&format!(
        "<iq type='get' id='ID' to='bob@localhost'><query xmlns='{NS_DISCO_INFO}'/></iq>"
    ));
    let features: Vec<&str> = r
        .get_child("query", NS_DISCO_INFO)
        .unwrap()
        .children()
        .filter_map(|f| f.attr("var"))
        .collect();
    for f in [NS_MAM, "urn:xmpp:mam:2#extended", NS_SID] {
        assert!(features.contains(&f), "{f} not advertised: {r}");
    }

    // Metadata (#extended): empty archive, then first and last.
    let r = bob.iq(&format!(
        "<iq type='get' id='ID'><metadata xmlns='{NS_MAM}'/></iq>"
    ));
    assert_eq!(
        r.get_child("metadata", NS_MAM).unwrap().children().count(),
        0,
        "{r}"
    );
    send_many(&mut alice, "bob@localhost", "m", 3);
    let got = receive(&mut bob, 3);
    let r = bob.iq(&format!(
        "<iq type='get' id='ID'><metadata xmlns='{NS_MAM}'/></iq>"
    ));
    let md = r.get_child("metadata", NS_MAM).unwrap();
    assert_eq!(
        md.get_child("start", NS_MAM).unwrap().attr("id"),
        got[0].1.as_deref()
    );
    assert_eq!(
        md.get_child("end", NS_MAM).unwrap().attr("id"),
        got[2].1.as_deref()
    );
}

#[test]
fn offline_messages_are_archived_and_the_archive_survives_a_restart_until_deletion() {
    let mut server = server_with(&["alice", "bob"]);
    let mut alice = online(&server, "alice", "phone");
    // Bob is offline: the message is stored offline and archived, with its stanza-id.
    let sent = send_many(&mut alice, "bob@localhost", "while-away", 3);
    alice.drain(QUIET);
    let mut bob = online_with_offline(&server, "bob", "laptop", 3);
    assert_eq!(bob.iter().map(|g| g.0.clone()).collect::<Vec<_>>(), sent);
    assert!(bob.iter().all(|g| g.1.is_some()));
    drop(alice);
    bob.clear();

    server.restart();
    let mut bob = online(&server, "bob", "laptop");
    assert_eq!(query(&mut bob, "", "").bodies(), sent);
    let mut alice = online(&server, "alice", "phone");
    assert_eq!(query(&mut alice, "", "").bodies(), sent);
    drop(bob);

    server.cli_ok(["user", "del", "bob@localhost"]);
    // --force: the name's tombstone would refuse it otherwise.
    server.cli_ok([
        "user",
        "add",
        "--force",
        "bob@localhost",
        "--password",
        "bob-secret",
    ]);
    let mut bob = online(&server, "bob", "laptop");
    let p = query(&mut bob, "", "");
    assert!(p.items.is_empty() && p.complete, "{p:?}");
    // Alice's archive is hers and stays.
    assert_eq!(query(&mut alice, "", "").bodies(), sent);
}

fn online_with_offline(
    server: &TestServer,
    user: &str,
    resource: &str,
    n: usize,
) -> Vec<(String, Option<String>)> {
    let mut c = Client::login_bound(server, user, &format!("{user}-secret"), resource);
    c.send("<presence/>");
    receive(&mut c, n)
}
