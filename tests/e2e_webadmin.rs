//! End to end: the web admin at `/admin` of the real `kith` binary. Refusals through curl (a
//! wrong password, a non-admin account, a form without its CSRF token, too many failures from
//! one address), then the whole admin flow in headless Chromium (tests/web/webadmin.mjs,
//! playwright-core driving Debian's chromium: users, an invite used to register, online
//! sessions, announcement, uploads, certificate, check) with a screenshot of every page under
//! `target/webadmin-screens/`, while an XMPP client stays online to receive the announcement.
//!
//! Owns: a curl wrapper with a cookie jar. Must not know: kith's internals (pages are read
//! as HTML text).
//!
//! curl, node with playwright-core, or chromium missing is a failure, not a pass (`.ci/run`
//! installs them); `KITH_SKIP_INTEROP=1` turns it into a loud skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::client::Client;
use common::{Options, TestServer};

fn admin_server() -> TestServer {
    let server = Options::default()
        .listen("https")
        .extra_toml("admins = [\"alice@localhost\"]\n")
        .start();
    server.add_user("alice", "alice-secret");
    server.add_user("bob", "bob-secret");
    server
}

fn skip_or_panic(why: &str) -> bool {
    if std::env::var("KITH_SKIP_INTEROP").as_deref() == Ok("1") {
        eprintln!("\n!!!!! SKIPPED web admin test: {why}\n");
        return true;
    }
    panic!("{why}; set KITH_SKIP_INTEROP=1 to skip this test instead");
}

/// A browser-like HTTP client: curl with a cookie jar of its own.
struct Curl<'a> {
    server: &'a TestServer,
    jar: PathBuf,
}

struct Reply {
    status: u16,
    location: String,
    set_cookie: bool,
    body: String,
}

impl<'a> Curl<'a> {
    fn new(server: &'a TestServer, name: &str) -> Option<Curl<'a>> {
        if Command::new("curl").arg("--version").output().is_err() {
            skip_or_panic("curl is not installed (apt-get install curl)");
            return None;
        }
        Some(Curl {
            server,
            jar: server.dir.join(format!("{name}.cookies")),
        })
    }

    fn request(&self, method: &str, path: &str, form: &[(&str, &str)]) -> Reply {
        let port = self.server.port("https");
        let headers = self.jar.with_extension("headers");
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-k", "--max-time", "30", "-X", method])
            .arg("-b")
            .arg(&self.jar)
            .arg("-c")
            .arg(&self.jar)
            .arg("-D")
            .arg(&headers);
        for (k, v) in form {
            cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
        }
        let out = cmd
            .arg(format!("https://localhost:{port}{path}"))
            .output()
            .expect("running curl");
        assert!(out.status.success(), "curl {method} {path}: {out:?}");
        let head = std::fs::read_to_string(&headers).unwrap_or_default();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let header = |name: &str| {
            head.lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                })
                .unwrap_or_default()
        };
        Reply {
            status,
            location: header("location"),
            set_cookie: head
                .to_ascii_lowercase()
                .contains("set-cookie: kith_admin="),
            body: String::from_utf8_lossy(&out.stdout).into_owned(),
        }
    }

    /// The value of the hidden `csrf` field in a page.
    fn csrf(body: &str) -> String {
        let at = body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no csrf field in: {body}"));
        let rest = &body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').expect("end of the csrf value")].to_string()
    }

    fn sign_in(&self, jid: &str, password: &str) -> Reply {
        let login = self.request("GET", "/admin/login", &[]);
        assert_eq!(login.status, 200, "{}", login.body);
        let csrf = Self::csrf(&login.body);
        self.request(
            "POST",
            "/admin/login",
            &[("csrf", &csrf), ("jid", jid), ("password", password)],
        )
    }
}

#[test]
fn refusals_wrong_password_non_admin_missing_csrf_and_throttling() {
    let server = admin_server();
    let Some(web) = Curl::new(&server, "web") else {
        return;
    };

    let r = web.request("GET", "/admin/users", &[]);
    assert_eq!((r.status, r.location.as_str()), (303, "/admin/login"));

    let r = web.sign_in("alice@localhost", "wrong");
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("Wrong address or password."));
    assert!(!r.set_cookie, "no session for a wrong password");

    let r = web.sign_in("bob", "bob-secret");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("not an admin"));
    assert!(!r.set_cookie);

    // A sign-in without the form's own token (a login CSRF) is refused too.
    let r = web.request(
        "POST",
        "/admin/login",
        &[("jid", "alice"), ("password", "alice-secret")],
    );
    assert_eq!(r.status, 403, "{}", r.body);

    let r = web.sign_in("alice", "alice-secret");
    assert_eq!((r.status, r.location.as_str()), (303, "/admin/users"));
    assert!(r.set_cookie);
    let users = web.request("GET", "/admin/users", &[]);
    assert_eq!(users.status, 200);
    assert!(users.body.contains("bob@localhost"), "{}", users.body);
    let csrf = Curl::csrf(&users.body);

    // The session cookie alone does not make changes.
    for form in [
        vec![("jid", "mallory"), ("password", "x-secret")],
        vec![
            ("csrf", "forged"),
            ("jid", "mallory"),
            ("password", "x-secret"),
        ],
    ] {
        let r = web.request("POST", "/admin/users/add", &form);
        assert_eq!(r.status, 403, "{}", r.body);
    }
    let out = server.cli_ok(["user", "list"]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("mallory"),
        "an account was made without a CSRF token"
    );
    // With it, the same form works.
    let r = web.request(
        "POST",
        "/admin/users/add",
        &[
            ("csrf", &csrf),
            ("jid", "mallory"),
            ("password", "x-secret"),
        ],
    );
    assert_eq!((r.status, r.location.as_str()), (303, "/admin/users"));
    let out = server.cli_ok(["user", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("mallory@localhost"));

    // Five failures from one address, then even the right password waits.
    let other = Curl::new(&server, "other").expect("curl");
    for _ in 0..5 {
        assert_eq!(other.sign_in("alice", "guess").status, 401);
    }
    let r = other.sign_in("alice", "alice-secret");
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.body.contains("Too many failed attempts"));
    assert!(server
        .log()
        .contains("web admin: failed sign-in from 127.0.0.1"));
    assert!(
        !server.log().contains("alice-secret") && !server.log().contains("guess"),
        "passwords must never reach the log"
    );

    // Pages of a signed-in admin carry headers that keep them to themselves.
    let r = web.request("GET", "/admin/sessions", &[]);
    assert_eq!(r.status, 200);
    let head = std::fs::read_to_string(web.jar.with_extension("headers")).unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-security-policy: default-src 'none'"));
    assert!(head.contains("cache-control: no-store"));
}

#[test]
fn admin_flow_in_headless_chromium() {
    let server = admin_server();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web");
    let chromium = std::env::var("KITH_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        skip_or_panic("playwright-core is not installed (npm ci --prefix tests/web)");
        return;
    }
    if !Path::new(&chromium).exists() {
        skip_or_panic("chromium is not installed (apt-get install chromium)");
        return;
    }
    // Alice is online in a chat app while she administers from her phone's browser.
    let mut alice = Client::online(&server, "alice", "alice-secret", "phone");
    // She asked for her roster, so she is told when the invited person becomes her contact.
    alice.roster_get();
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/webadmin-screens");
    let base = format!("https://localhost:{}", server.port("https"));
    let out = Command::new(std::env::var("KITH_NODE").unwrap_or_else(|_| "node".into()))
        .arg(dir.join("webadmin.mjs"))
        .args([&base, "alice@localhost", "alice-secret", "localhost"])
        .arg(&shots)
        .env("KITH_CHROMIUM", &chromium)
        .output()
        .expect("running node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ok"),
        "webadmin.mjs failed ({}):\n{stdout}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        server.log_report()
    );
    let headline = alice.recv_until(|e| e.name() == "message");
    assert_eq!(headline.attr("type"), Some("headline"), "{headline:?}");
    assert_eq!(headline.attr("from"), Some("localhost"));
    assert!(headline
        .get_child("body", "jabber:client")
        .is_some_and(|b| b.text() == "The server restarts tonight at 23:00."));
    for name in [
        "01-login",
        "02-users",
        "04-check",
        "05-user-deleted",
        "06-invite",
        "07-registered",
    ] {
        let png = shots.join(format!("{name}.png"));
        let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(size > 1000, "screenshot {} missing or empty", png.display());
    }
    // Dave registered through the invite alice made, so he became her contact at once.
    let push = alice.recv_until(|e| {
        e.name() == "iq"
            && e.attr("type") == Some("set")
            && e.to_string().contains("dave@localhost")
    });
    assert!(
        push.to_string().contains("subscription='both'")
            || push.to_string().contains("subscription=\"both\""),
        "{push}"
    );
    let log = server.log();
    assert!(
        log.contains("register: account dave@localhost created on the web with an invite"),
        "{}",
        server.log_report()
    );
    let out = server.cli_ok(["user", "list"]);
    let users = String::from_utf8_lossy(&out.stdout);
    assert!(
        !users.contains("carol") && !users.contains("dave"),
        "users deleted in the browser still exist: {users}"
    );
    assert!(server.wait_for_log(
        "web admin: alice@localhost deleted account dave@localhost",
        Duration::from_secs(5)
    ));
}
