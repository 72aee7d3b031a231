//! End to end: the admin tools outside ad-hoc commands: `kith announce` reaching an online
//! client, the message of the day at login (once per change), `kith user list` with last
//! seen, `kith user export`, and `kith module disable carbons` (comments kept, carbons no
//! longer advertised after a restart). The XEP-0133 commands themselves are driven by
//! slixmpp in interop_slixmpp.rs.

mod common;

use std::time::Duration;

use common::client::Client;
use common::TestServer;

const QUIET: Duration = Duration::from_millis(400);

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn headline_body(c: &mut Client) -> String {
    let m = c.recv_until(|e| e.name() == "message" && e.attr("type") == Some("headline"));
    assert_eq!(m.attr("from"), Some("localhost"), "{m}");
    m.get_child("body", "jabber:client")
        .map(|b| b.text())
        .unwrap_or_default()
}

#[test]
fn announce_reaches_online_clients_and_motd_comes_once_per_change() {
    let server = TestServer::start();
    server.add_user("alice", "alice-secret");
    server.add_user("bob", "bob-secret");

    let mut alice = Client::online(&server, "alice", "alice-secret", "phone");
    let out = server.cli_ok(["announce", "Dinner at 7"]);
    assert!(stdout(&out).contains("sent to 1"), "{}", stdout(&out));
    assert_eq!(headline_body(&mut alice), "Dinner at 7");

    server.cli_ok(["motd", "set", "Welcome to the family server"]);
    let shown = stdout(&server.cli_ok(["motd", "show"]));
    assert_eq!(shown.trim(), "Welcome to the family server");

    // bob's first login gets it; his second does not (same MOTD); a new MOTD comes again.
    let mut bob = Client::online(&server, "bob", "bob-secret", "pc");
    assert_eq!(headline_body(&mut bob), "Welcome to the family server");
    drop(bob);
    let mut bob = Client::online(&server, "bob", "bob-secret", "pc2");
    let again = bob.drain(QUIET);
    assert!(
        !again.iter().any(|e| e.attr("type") == Some("headline")),
        "MOTD sent twice: {again:?}"
    );
    server.cli_ok(["motd", "set", "New rules"]);
    drop(bob);
    let mut bob = Client::online(&server, "bob", "bob-secret", "pc3");
    assert_eq!(headline_body(&mut bob), "New rules");

    server.cli_ok(["motd", "clear"]);
    assert!(stdout(&server.cli_ok(["motd", "show"])).contains("no message of the day"));
    drop(alice);
    drop(bob);
}

#[test]
fn announce_without_a_running_server_says_so() {
    let mut server = TestServer::start();
    server.stop();
    let out = server.cli(["announce", "hello"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not running"), "{err}");
}

#[test]
fn user_list_shows_last_seen_and_online_now() {
    let server = TestServer::start();
    server.add_user("alice", "alice-secret");
    server.add_user("bob", "bob-secret");
    server.add_user("carol", "carol-secret");
    let alice = Client::online(&server, "alice", "alice-secret", "phone");
    let bob = Client::online(&server, "bob", "bob-secret", "pc");
    drop(bob);
    // bob's logout is recorded when his session ends.
    let mut listed = String::new();
    for _ in 0..50 {
        listed = stdout(&server.cli_ok(["user", "list"]));
        if !listed
            .lines()
            .any(|l| l.starts_with("bob@") && l.ends_with("never"))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let line = |who: &str| {
        listed
            .lines()
            .find(|l| l.starts_with(who))
            .unwrap_or_else(|| panic!("{who} not listed: {listed}"))
            .to_string()
    };
    assert!(line("alice@").ends_with("online now"), "{listed}");
    assert!(line("carol@").ends_with("never"), "{listed}");
    let bob = line("bob@");
    assert!(
        bob.contains("T") && bob.ends_with('Z'),
        "bob's last seen: {bob}"
    );
    drop(alice);
}

#[test]
fn user_export_has_roster_and_vcard_but_no_password() {
    let server = TestServer::start();
    server.add_user("alice", "alice-secret-export");
    let mut alice = Client::online(&server, "alice", "alice-secret-export", "phone");
    let r = alice.iq("<iq type='set' id='ID'><query xmlns='jabber:iq:roster'>\
         <item jid='bob@localhost' name='Bobby'><group>Family</group></item></query></iq>");
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let r = alice
        .iq("<iq type='set' id='ID'><vCard xmlns='vcard-temp'><FN>Alice Liddell</FN></vCard></iq>");
    assert_eq!(r.attr("type"), Some("result"), "{r}");

    let file = server.dir.join("alice.xml");
    server.cli_ok(["user", "export", "alice", file.to_str().unwrap()]);
    let xml = std::fs::read_to_string(&file).unwrap();
    assert!(
        xml.contains(
            "<server-data xmlns='urn:xmpp:pie:0'><host jid='localhost'><user name='alice'>"
        ),
        "{xml}"
    );
    assert!(
        xml.contains("jid='bob@localhost'") && xml.contains("name='Bobby'"),
        "{xml}"
    );
    assert!(xml.contains("<group>Family</group>"), "{xml}");
    assert!(xml.contains("<FN>Alice Liddell</FN>"), "{xml}");
    assert!(!xml.contains("alice-secret-export"), "{xml}");
    assert!(!xml.to_lowercase().contains("password"), "{xml}");

    let out = server.cli(["user", "export", "nobody"]);
    assert!(!out.status.success());
    drop(alice);
}

fn server_features(server: &TestServer) -> Vec<String> {
    let mut c = Client::online(server, "dora", "dora-secret", "r");
    let r = c.iq(
        "<iq type='get' id='ID' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    );
    let q = r
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .unwrap_or_else(|| panic!("no disco#info: {r}"));
    q.children()
        .filter(|f| f.name() == "feature")
        .filter_map(|f| f.attr("var").map(str::to_string))
        .collect()
}

#[test]
fn module_disable_carbons_keeps_comments_and_stops_advertising_it() {
    let mut server = TestServer::start();
    server.add_user("dora", "dora-secret");
    let features = server_features(&server);
    assert!(features.iter().any(|f| f == "urn:xmpp:carbons:2"));
    assert!(features
        .iter()
        .any(|f| f == "http://jabber.org/protocol/commands"));

    // An admin's comments, which the edit must keep.
    let generated = std::fs::read_to_string(&server.config_path).unwrap();
    let before = format!("# Our family server. Ask Dad before changing.\n{generated}");
    std::fs::write(&server.config_path, &before).unwrap();
    let listed = stdout(&server.cli_ok(["module", "list"]));
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("carbons") && l.contains(" on ")),
        "{listed}"
    );

    let out = server.cli_ok(["module", "disable", "carbons"]);
    assert!(stdout(&out).contains("restart"), "{}", stdout(&out));
    let after = std::fs::read_to_string(&server.config_path).unwrap();
    // The file is what it was, comments included, with the new section appended.
    assert!(after.starts_with(&before), "{after}");
    assert!(after.contains("[modules]\ncarbons = false"), "{after}");
    let listed = stdout(&server.cli_ok(["module", "list"]));
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("carbons") && l.contains(" off ")),
        "{listed}"
    );

    server.restart();
    let features = server_features(&server);
    assert!(
        !features.iter().any(|f| f == "urn:xmpp:carbons:2"),
        "{features:?}"
    );
    let mut c = Client::online(&server, "dora", "dora-secret", "r2");
    let r = c.iq("<iq type='set' id='ID'><enable xmlns='urn:xmpp:carbons:2'/></iq>");
    assert_eq!(r.attr("type"), Some("error"), "{r}");
}
