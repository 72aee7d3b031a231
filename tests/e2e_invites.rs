//! Invites, registration policy and circles, end to end: `kith invite` against a running
//! server, in-band registration with slixmpp's xep_0077 plugin (with the XEP-0401 preauth
//! token, as Conversations sends it), the invite policy refusing strangers, open registration
//! throttled per IP, the mutual roster an invite creates, circles, and the invite page in
//! headless Chromium (`tests/interop/invite_page.py` drives chromedriver over WebDriver).
//!
//! The clients come from Debian (`python3-slixmpp`, `chromium`, `chromium-driver`); a missing
//! one fails the test unless KITH_SKIP_INTEROP=1, like `interop_slixmpp.rs`.

mod common;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Options, TestServer};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/interop/slixmpp_register.py"
);
const PAGE_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/invite_page.py");
const WATCHDOG: Duration = Duration::from_secs(60);

fn skip_or_panic(why: &str) -> bool {
    if std::env::var("KITH_SKIP_INTEROP").as_deref() == Ok("1") {
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!! SKIPPED (KITH_SKIP_INTEROP=1): {why}\n"
        );
        return true;
    }
    panic!("{why}\nSet KITH_SKIP_INTEROP=1 to skip this test instead.");
}

/// `/usr/bin/python3` with slixmpp (a pyenv python on PATH usually lacks Debian's modules).
fn python() -> Option<&'static str> {
    for p in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(p)
            .args(["-c", "import slixmpp"])
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(p);
        }
    }
    if skip_or_panic("slixmpp is not importable; apt-get install python3-slixmpp") {
        return None;
    }
    None
}

/// Runs a script; returns (exit code, output). Killed after `WATCHDOG`.
fn run_script(python: &str, script: &str, args: &[&str]) -> (i32, String) {
    let out_path = common::unique_temp_dir().join("script.out");
    let out = std::fs::File::create(&out_path).expect("script output file");
    let err = out.try_clone().expect("clone output handle");
    let mut child = Command::new(python)
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .env("PYTHONUNBUFFERED", "1")
        .spawn()
        .expect("spawn python");
    let deadline = Instant::now() + WATCHDOG;
    let code = loop {
        match child.try_wait().expect("wait") {
            Some(s) => break s.code().unwrap_or(-1),
            None if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                break -1;
            }
        }
    };
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_dir_all(out_path.parent().unwrap_or(Path::new("/nonexistent")));
    (code, text)
}

fn register(server: &TestServer, py: &str, user: &str, pw: &str, token: Option<&str>) -> String {
    let port = server.c2s_port.to_string();
    let mut args = vec!["register", "--port", &port, "--domain", &server.domain];
    args.extend(["--user", user, "--password", pw, "--expect", "__print__"]);
    if let Some(t) = token {
        args.extend(["--token", t]);
    }
    register_full(server, py, &args)
        .split(" | ")
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The script's result line: `ok`, or `CONDITION | TYPE | TEXT` of the server's error.
fn register_full(server: &TestServer, py: &str, args: &[&str]) -> String {
    let (_, out) = run_script(py, SCRIPT, args);
    out.lines()
        .find_map(|l| {
            l.split_once("registration result: ")
                .map(|(_, r)| r.to_string())
        })
        .unwrap_or_else(|| panic!("no registration result:\n{out}\n{}", server.log()))
}

fn login(server: &TestServer, py: &str, args: &[&str]) -> String {
    let port = server.c2s_port.to_string();
    let mut all = vec!["login", "--port", &port, "--domain", &server.domain];
    all.extend_from_slice(args);
    let (code, out) = run_script(py, SCRIPT, &all);
    assert_eq!(
        code,
        0,
        "login checks failed:\n{out}\n--- kith log ---\n{}",
        server.log()
    );
    out
}

/// Runs `kith invite ARGS` and returns (stdout, token).
fn invite(server: &TestServer, args: &[&str]) -> (String, String) {
    let mut all = vec!["invite"];
    all.extend_from_slice(args);
    let out = server.cli_ok(&all);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let token = text
        .split("/invite/")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no link in:\n{text}"))
        .to_string();
    (text, token)
}

#[test]
fn invite_link_qr_and_in_band_registration_with_the_token() {
    let Some(py) = python() else { return };
    let server = Options::default()
        .listen("https")
        .extra_toml("admins = [\"alice@localhost\"]")
        .start();
    server.add_user("alice", "alice-secret-1");
    let (shown, token) = invite(&server, &["--from", "alice", "--group", "family"]);
    let https = server.port("https");
    assert!(
        shown.contains(&format!("https://localhost:{https}/invite/{token}")),
        "{shown}"
    );
    assert!(
        shown.contains("████") && shown.contains('▀'),
        "no QR code:\n{shown}"
    );
    assert!(
        shown.contains(&format!(
            "xmpp:alice@localhost?roster;preauth={token};ibr=y"
        )),
        "{shown}"
    );
    assert_eq!(token.len(), 24, "{token}");
    let listed = String::from_utf8_lossy(&server.cli_ok(["invite", "list"]).stdout).to_string();
    assert!(
        listed.contains(&token) && listed.contains("from alice@localhost"),
        "{listed}"
    );

    assert_eq!(
        register(&server, py, "bob", "bob-secret-2", Some(&token)),
        "ok"
    );
    // Used up: the token is refused at the preauth step, and no account appears.
    assert_eq!(
        register(&server, py, "carol", "carol-secret-3", Some(&token)),
        "preauth:item-not-found"
    );
    let users = String::from_utf8_lossy(&server.cli_ok(["user", "list"]).stdout).to_string();
    assert!(
        users.contains("bob@localhost") && !users.contains("carol"),
        "{users}"
    );

    // Inviter and invitee are mutual contacts, bob is in the invite's circle, and alice (an
    // admin) was told about the registration.
    login(
        &server,
        py,
        &[
            "--account",
            "alice:alice-secret-1",
            "--account",
            "bob:bob-secret-2",
            "--roster",
            "alice:bob@localhost:both",
            "--roster",
            "bob:alice@localhost:both",
            "--available",
            "alice:bob@localhost",
            "--available",
            "bob:alice@localhost",
            "--message",
            "alice:New account registered: bob@localhost (invited by alice@localhost)",
        ],
    );
    let circles = String::from_utf8_lossy(&server.cli_ok(["circle", "list"]).stdout).to_string();
    assert!(circles.contains("family\tbob@localhost"), "{circles}");
}

#[test]
fn invite_policy_refuses_strangers_and_revoked_tokens() {
    let Some(py) = python() else { return };
    let server = TestServer::start();
    // The default policy is "invite".
    assert_eq!(
        register(&server, py, "mallory", "mallory-secret", None),
        "not-allowed"
    );
    let (_, token) = invite(&server, &["--uses", "2", "--expires", "1h"]);
    server.cli_ok(["invite", "revoke", &token]);
    assert_eq!(
        register(&server, py, "mallory", "mallory-secret", Some(&token)),
        "preauth:item-not-found"
    );
    let out = server.cli(["invite", "revoke", &token]);
    assert!(!out.status.success(), "revoking twice must fail");
    // A username the invite reserves for someone else is refused; the right one works.
    let (_, token) = invite(&server, &["--username", "dave"]);
    assert_eq!(
        register(&server, py, "eve", "eve-secret-1", Some(&token)),
        "not-allowed"
    );
    assert_eq!(
        register(&server, py, "dave", "dave-secret-1", Some(&token)),
        "ok"
    );
    let users = String::from_utf8_lossy(&server.cli_ok(["user", "list"]).stdout).to_string();
    assert!(
        users.contains("dave@localhost") && !users.contains("mallory"),
        "{users}"
    );
}

#[test]
fn open_registration_is_throttled_per_ip() {
    let Some(py) = python() else { return };
    let server = TestServer::start_with("[registration]\npolicy = \"open\"\nthrottle = \"5m\"");
    assert_eq!(
        register(&server, py, "admin", "admin-secret-1", None),
        "not-acceptable"
    );
    assert_eq!(
        register(&server, py, "ann", "short", None),
        "not-acceptable"
    );
    assert_eq!(register(&server, py, "ann", "ann-secret-1", None), "ok");
    assert_eq!(
        register(&server, py, "ann", "ann-secret-1", None),
        "conflict"
    );
    let port = server.c2s_port.to_string();
    let throttled = register_full(
        &server,
        py,
        &[
            "register",
            "--port",
            &port,
            "--user",
            "ben",
            "--password",
            "ben-secret-1",
        ],
    );
    assert_eq!(
        throttled,
        "not-acceptable | wait | too many registrations; try again in a few minutes"
    );
    login(&server, py, &["--account", "ann:ann-secret-1"]);
}

#[test]
fn closed_registration_offers_nothing() {
    let Some(py) = python() else { return };
    let server = TestServer::start_with("[registration]\npolicy = \"closed\"");
    let got = register(&server, py, "ann", "ann-secret-1", None);
    assert!(got.contains("register feature missing"), "{got}");
}

#[test]
fn circle_members_see_each_other() {
    let Some(py) = python() else { return };
    let server = TestServer::start_with("[circles]\nfamily = [\"alice\", \"bob\"]");
    server.add_user("alice", "alice-secret-1");
    server.add_user("bob", "bob-secret-2");
    server.add_user("carol", "carol-secret-3");
    login(
        &server,
        py,
        &[
            "--account",
            "alice:alice-secret-1",
            "--account",
            "bob:bob-secret-2",
            "--roster",
            "alice:bob@localhost:both:family",
            "--roster",
            "bob:alice@localhost:both:family",
            "--available",
            "alice:bob@localhost",
            "--available",
            "bob:alice@localhost",
        ],
    );
    // A circle made by command: carol joins "friends" with alice.
    server.cli_ok(["circle", "add", "friends", "carol"]);
    server.cli_ok(["circle", "add", "friends", "alice"]);
    login(
        &server,
        py,
        &[
            "--account",
            "alice:alice-secret-1",
            "--account",
            "carol:carol-secret-3",
            "--roster",
            "carol:alice@localhost:both:friends",
            "--roster",
            "alice:carol@localhost:both:friends",
            "--available",
            "carol:alice@localhost",
        ],
    );
    // Leaving the circle removes the contact that was there only for it.
    server.cli_ok(["circle", "remove", "friends", "carol"]);
    let port = server.c2s_port.to_string();
    let (_, out) = run_script(
        py,
        SCRIPT,
        &[
            "login",
            "--port",
            &port,
            "--account",
            "carol:carol-secret-3",
        ],
    );
    assert!(
        out.contains("roster {}"),
        "carol still has contacts after leaving:\n{out}"
    );
}

#[test]
fn invite_page_in_chromium_registers_an_account() {
    let Some(py) = python() else { return };
    for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        if !Path::new(tool).exists()
            && skip_or_panic(&format!(
                "{tool} missing; apt-get install chromium chromium-driver"
            ))
        {
            return;
        }
    }
    let server = Options::default().listen("https").start();
    server.add_user("alice", "alice-secret-1");
    let (_, token) = invite(&server, &["--from", "alice"]);
    let https = server.port("https");
    let url = format!("https://localhost:{https}/invite/{token}");
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e-invites");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let shots = shots.display().to_string();
    let (code, out) = run_script(
        py,
        PAGE_SCRIPT,
        &[
            "--url",
            &url,
            "--user",
            "webby",
            "--password",
            "webby-secret-1",
            "--shots",
            &shots,
        ],
    );
    assert_eq!(
        code,
        0,
        "browser run failed:\n{out}\n--- kith log ---\n{}",
        server.log()
    );
    login(
        &server,
        py,
        &[
            "--account",
            "webby:webby-secret-1",
            "--roster",
            "webby:alice@localhost:both",
        ],
    );
    // The used invite is gone: the page says so with 410.
    let (code, out) = run_script(
        py,
        PAGE_SCRIPT,
        &["--url", &url, "--expect-gone", "--shots", &shots],
    );
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_user_invites_through_an_ad_hoc_command() {
    let Some(py) = python() else { return };
    let server = Options::default().listen("https").start();
    server.add_user("alice", "alice-secret-1");
    // alice is no admin: #invite is for every user, #create-account is not.
    let out = login(
        &server,
        py,
        &[
            "--account",
            "alice:alice-secret-1",
            "--adhoc",
            "alice:urn:xmpp:invite#invite",
        ],
    );
    let field = |var: &str| {
        out.lines()
            .find_map(|l| l.split_once(&format!("ADHOC urn:xmpp:invite#invite {var}=")))
            .map(|(_, v)| v.to_string())
            .unwrap_or_else(|| panic!("no {var} in:\n{out}"))
    };
    let uri = field("uri");
    let https = server.port("https");
    let landing = field("landing-url");
    assert!(
        landing.starts_with(&format!("https://localhost:{https}/invite/")),
        "{landing}"
    );
    let token = uri
        .strip_prefix("xmpp:alice@localhost?roster;preauth=")
        .and_then(|t| t.strip_suffix(";ibr=y"))
        .unwrap_or_else(|| panic!("unexpected URI {uri}"));
    assert!(landing.ends_with(token), "{landing} vs {uri}");
    assert_eq!(
        register(&server, py, "bob", "bob-secret-2", Some(token)),
        "ok"
    );
    login(
        &server,
        py,
        &[
            "--account",
            "bob:bob-secret-2",
            "--roster",
            "bob:alice@localhost:both",
        ],
    );
    let port = server.c2s_port.to_string();
    let (code, denied) = run_script(
        py,
        SCRIPT,
        &[
            "login",
            "--port",
            &port,
            "--account",
            "alice:alice-secret-1",
            "--adhoc",
            "alice:urn:xmpp:invite#create-account",
        ],
    );
    assert!(
        code == 1 && denied.contains("FAIL adhoc urn:xmpp:invite#create-account: forbidden"),
        "{denied}"
    );
}

/// `curl -k` (Debian's curl): status code and body of one request.
fn curl(args: &[&str], url: &str) -> Option<(u16, String)> {
    let out = match Command::new("curl")
        .args(["-sk", "-o", "-", "-w", "\n%{http_code}", "--max-time", "20"])
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            skip_or_panic(&format!("curl: {e}; apt-get install curl"));
            return None;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n')?;
    Some((code.trim().parse().ok()?, body.to_string()))
}

#[test]
fn open_web_registration_and_unknown_invites() {
    let server = Options::default()
        .listen("https")
        .extra_toml("[registration]\npolicy = \"open\"")
        .start();
    let base = format!("https://localhost:{}", server.port("https"));
    let Some((code, page)) = curl(&[], &format!("{base}/register")) else {
        return;
    };
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("name=\"password\""), "{page}");
    let form = ["-d", "username=Webber&password=webber+secret%21"];
    let (code, page) = curl(&form, &format!("{base}/register")).expect("curl");
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("webber@localhost") && page.contains("xmpp:webber@localhost"));
    // The same address again within the throttle window.
    let again = ["-d", "username=webber2&password=webber+secret%21"];
    let (code, page) = curl(&again, &format!("{base}/register")).expect("curl");
    assert_eq!(code, 429, "{page}");
    assert!(page.contains("oo many registrations"), "{page}");
    let users = String::from_utf8_lossy(&server.cli_ok(["user", "list"]).stdout).to_string();
    // One account; `user list` adds when it was last seen after the address.
    let listed: Vec<&str> = users
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(listed, ["webber@localhost"], "{users}");
    // Markup in the input comes back escaped.
    let (code, page) = curl(
        &["-d", "username=%3Cb%3Ex&password=short"],
        &format!("{base}/register"),
    )
    .expect("curl");
    assert_eq!(code, 400, "{page}");
    assert!(
        page.contains("&lt;b&gt;x") && !page.contains("<b>x"),
        "{page}"
    );
    let (code, _) = curl(&[], &format!("{base}/invite/AAAAAAAAAAAAAAAAAAAAAAAA")).expect("curl");
    assert_eq!(code, 404);
    let (code, _) = curl(&["-X", "PUT"], &format!("{base}/invite/x")).expect("curl");
    assert_eq!(code, 405);
}
