//! End to end: `[roster] source = "http"` (Prosody's mod_http_roster_admin protocol) against a
//! small roster service, a python3 http.server the test starts on a free loopback port that
//! answers `GET /roster/NAME` with the file `NAME.json` of a directory the test writes. Alice
//! sees the service's roster; after the file changes, `POST /roster_admin/refresh` (curl)
//! pushes the new items to her online client; malformed refresh bodies get 400, her own roster
//! set and subscription requests `not-allowed`, and a failed fetch keeps the stored roster.
//!
//! python3 or curl missing is a failure, not a pass (`.ci/run` installs them);
//! `KITH_SKIP_INTEROP=1` turns it into a loud skip.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::client::Client;
use common::Options;
use kith::xml::Element;

const NS_ROSTER: &str = "jabber:iq:roster";

/// Serves `DIR/NAME.json` at `/roster/NAME`; prints its port, then serves until killed.
const SERVICE: &str = r#"
import http.server, os, sys
root = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        path = os.path.join(root, name + ".json")
        if not self.path.startswith("/roster/") or "/" in name or not os.path.isfile(path):
            self.send_error(404)
            return
        body = open(path, "rb").read()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

fn skip_or_panic(why: &str) -> bool {
    if std::env::var("KITH_SKIP_INTEROP").as_deref() == Ok("1") {
        eprintln!("\n!!!!! SKIPPED http roster test: {why}\n");
        return true;
    }
    panic!("{why}; set KITH_SKIP_INTEROP=1 to skip this test instead");
}

/// The roster service process; killed when dropped.
struct Service {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Service {
    fn start(dir: &Path) -> Option<Service> {
        let spawned = Command::new("python3")
            .args(["-c", SERVICE])
            .arg(dir)
            .stdout(Stdio::piped())
            .spawn();
        let Ok(mut child) = spawned else {
            skip_or_panic("python3 is not installed (apt-get install python3)");
            return None;
        };
        let mut line = String::new();
        let stdout = child.stdout.take().expect("service stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading the service port");
        let port = line.trim().parse().unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("the roster service did not print its port: {line:?}")
        });
        Some(Service {
            child,
            port,
            dir: dir.to_path_buf(),
        })
    }

    fn set(&self, user: &str, json: &str) {
        std::fs::write(self.dir.join(format!("{user}.json")), json).expect("writing roster");
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// POSTs `body` to the refresh endpoint; (status, body).
fn refresh(https_port: u16, body: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-k", "--max-time", "30", "-X", "POST"])
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ])
        .args(["-w", "\n%{http_code}"])
        .arg(format!(
            "https://127.0.0.1:{https_port}/roster_admin/refresh"
        ))
        .output()
        .expect("running curl");
    assert!(out.status.success(), "curl: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn roster_from_http_service_with_refresh() {
    if Command::new("curl").arg("--version").output().is_err()
        && skip_or_panic("curl is not installed (apt-get install curl)")
    {
        return;
    }
    let dir = common::unique_temp_dir();
    let Some(service) = Service::start(&dir) else {
        return;
    };
    service.set("alice", r#"{"bob@localhost": {"name": "Bob"}}"#);
    let server = Options::default()
        .listen("https")
        .extra_toml(&format!(
            "[roster]\nsource = \"http\"\nhttp_url = \"http://localhost:{}/roster/%s\"\n",
            service.port
        ))
        .start();
    server.add_user("alice", "alice-secret");
    server.add_user("bob", "bob-secret");
    let port = server.port("https");

    let mut alice = Client::online(&server, "alice", "alice-secret", "phone");
    let (_, items) = alice.roster_get();
    assert_eq!(
        items,
        [(
            "bob@localhost".to_string(),
            "both".to_string(),
            Some("Bob".to_string())
        )]
    );

    // People cannot edit a roster the service owns, nor subscribe themselves.
    let r = alice.iq("<iq type='set' id='ID'><query xmlns='jabber:iq:roster'>\
         <item jid='mallory@localhost'/></query></iq>");
    assert_eq!(r.attr("type"), Some("error"), "{r}");
    assert!(r.to_string().contains("not-allowed"), "{r}");
    alice.send("<presence type='subscribe' to='mallory@localhost'/>");
    let r = alice.recv_until(|e| e.name() == "presence" && e.attr("type") == Some("error"));
    assert!(r.to_string().contains("not-allowed"), "{r}");

    // The service changes alice's roster and says so.
    service.set(
        "alice",
        r#"{"bob@localhost": {"name": "Bobby"}, "carol@localhost": {}}"#,
    );
    let (status, body) = refresh(port, r#"["alice"]"#);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    assert!(body.contains("\"updated\":1,\"errors\":0"), "{body}");
    let pushed_item = |e: &Element, jid: &str| {
        e.name() == "iq"
            && e.attr("type") == Some("set")
            && e.get_child("query", NS_ROSTER)
                .and_then(|q| q.children().find(|i| i.attr("jid") == Some(jid)))
                .is_some()
    };
    let push = alice.recv_until(|e| pushed_item(e, "carol@localhost"));
    let carol = push
        .get_child("query", NS_ROSTER)
        .and_then(|q| {
            q.children()
                .find(|i| i.attr("jid") == Some("carol@localhost"))
        })
        .map(|i| i.attr("subscription").map(str::to_string));
    assert_eq!(carol, Some(Some("both".to_string())), "{push}");
    let (_, items) = alice.roster_get();
    assert_eq!(
        items,
        [
            (
                "bob@localhost".to_string(),
                "both".to_string(),
                Some("Bobby".to_string())
            ),
            ("carol@localhost".to_string(), "both".to_string(), None),
        ]
    );

    // Malformed refresh bodies.
    for bad in ["not json", "{\"alice\": 1}", "[1]"] {
        let (status, body) = refresh(port, bad);
        assert_eq!(status, 400, "{bad}: {body}");
    }

    // The service fails: the stored roster stays.
    std::fs::remove_file(dir.join("alice.json")).expect("removing alice.json");
    let (status, body) = refresh(port, r#"["alice", "nobody"]"#);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"updated\":0,\"errors\":2"), "{body}");
    let (_, items) = alice.roster_get();
    assert_eq!(items.len(), 2, "{items:?}");
}
