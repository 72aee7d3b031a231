//! End to end: the web listeners of the real `kith` binary. XEP-0156 host-meta in both
//! formats, the plain-HTTP redirect, direct TLS by ALPN on the HTTPS port, a BOSH
//! (XEP-0206) login and message exchange with long-polling, BOSH errors, and a WebSocket
//! (RFC 7395) login and chat with real web client libraries under node: xmpp.js
//! (`@xmpp/client`) over WebSocket, Strophe.js (the library under Converse.js) over BOSH
//! and over WebSocket, pinned in `tests/web/package-lock.json`.
//!
//! Owns: a minimal HTTP/1.1 client over rustls (trusting only the server's self-signed
//! certificate), BOSH driven by hand with the crate's SCRAM client, running the node script.
//!
//! Must not know: kith's internals; namespaces are written out as literals.
//!
//! node or the installed npm packages missing is a failure, not a pass: `.ci/run` installs
//! Debian's `nodejs` and `npm` and runs `npm ci --prefix tests/web`. `KITH_SKIP_INTEROP=1`
//! turns that failure into a loud skip for machines that cannot install them.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use common::client::{ca_path, tls_config, Client};
use common::{Options, TestServer};
use futures_rustls::rustls;
use kith::sasl::{Mechanism, ScramClient};
use kith::xml::Element;

const NS_HTTPBIND: &str = "http://jabber.org/protocol/httpbind";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
const NS_STREAM: &str = "http://etherx.jabber.org/streams";
const NS_XRD: &str = "http://docs.oasis-open.org/ns/xri/xrd-1.0";

fn web_server() -> TestServer {
    let server = Options::default().listen("https").listen("http").start();
    server.add_user("alice", "alice-secret");
    server.add_user("bob", "bob-secret");
    server
}

/// One HTTP response.
#[derive(Debug)]
struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request with `Connection: close` and reads the whole answer.
fn http_exchange(io: &mut impl ReadWrite, request: &str) -> HttpResponse {
    io.write_all(request.as_bytes())
        .expect("writing the request");
    io.flush().expect("flushing the request");
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match io.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // rustls reports a peer that closed without close_notify as an error; hyper
            // closes cleanly, but what was read is what counts.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!(
                "reading the response: {e}; got so far: {}",
                String::from_utf8_lossy(&raw)
            ),
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: body.to_string(),
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn tls_stream(
    server: &TestServer,
    alpn: &[&[u8]],
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let tcp = TcpStream::connect(("127.0.0.1", server.port("https"))).expect("connect https");
    tcp.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let config = tls_config(&ca_path(server), alpn);
    let name = rustls::pki_types::ServerName::try_from(server.domain.clone()).expect("name");
    let conn = rustls::ClientConnection::new(config, name).expect("tls client");
    rustls::StreamOwned::new(conn, tcp)
}

fn https(server: &TestServer, method: &str, path: &str, extra: &str, body: &str) -> HttpResponse {
    let mut tls = tls_stream(server, &[b"http/1.1"]);
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        server.domain,
        body.len()
    );
    http_exchange(&mut tls, &req)
}

fn plain_http(server: &TestServer, method: &str, path: &str) -> HttpResponse {
    let mut tcp = TcpStream::connect(("127.0.0.1", server.port("http"))).expect("connect http");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        server.domain
    );
    http_exchange(&mut tcp, &req)
}

#[test]
fn host_meta_in_both_formats_lists_websocket_and_bosh() {
    let server = web_server();
    let port = server.port("https");
    let xrd = https(&server, "GET", "/.well-known/host-meta", "", "");
    assert_eq!(xrd.status, 200, "{xrd:?}");
    assert_eq!(xrd.header("access-control-allow-origin"), Some("*"));
    assert!(xrd.header("content-type").unwrap_or("").contains("xrd+xml"));
    let doc = xrd
        .body
        .split_once("?>")
        .map_or(xrd.body.as_str(), |(_, b)| b);
    let el = Element::parse(doc).unwrap_or_else(|e| panic!("XRD does not parse: {e}: {doc}"));
    assert!(el.is("XRD", NS_XRD), "{doc}");
    let href = |rel: &str| {
        el.children()
            .find(|l| l.attr("rel") == Some(rel))
            .and_then(|l| l.attr("href"))
            .map(str::to_string)
    };
    assert_eq!(
        href("urn:xmpp:alt-connections:websocket").as_deref(),
        Some(format!("wss://localhost:{port}/xmpp-websocket").as_str())
    );
    assert_eq!(
        href("urn:xmpp:alt-connections:xbosh").as_deref(),
        Some(format!("https://localhost:{port}/http-bind").as_str())
    );

    let json = https(&server, "GET", "/.well-known/host-meta.json", "", "");
    assert_eq!(json.status, 200, "{json:?}");
    assert_eq!(json.header("access-control-allow-origin"), Some("*"));
    assert!(json.header("content-type").unwrap_or("").contains("json"));
    assert!(
        json.body.contains(&format!(
            r#""rel": "urn:xmpp:alt-connections:websocket", "href": "wss://localhost:{port}/xmpp-websocket""#
        )),
        "{}",
        json.body
    );
    assert!(json.body.contains(&format!(
        r#""rel": "urn:xmpp:alt-connections:xbosh", "href": "https://localhost:{port}/http-bind""#
    )));

    // CORS preflight for the BOSH endpoint; unknown paths are 404.
    let pre = https(
        &server,
        "OPTIONS",
        "/http-bind",
        "Origin: https://web.example\r\n",
        "",
    );
    assert_eq!(pre.status, 204, "{pre:?}");
    assert_eq!(pre.header("access-control-allow-origin"), Some("*"));
    assert_eq!(https(&server, "GET", "/nothing-here", "", "").status, 404);
}

#[test]
fn plain_http_redirects_to_https_and_has_no_acme_answer_without_acme() {
    let server = web_server();
    let port = server.port("https");
    let r = plain_http(&server, "GET", "/.well-known/host-meta?x=1");
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some(format!("https://localhost:{port}/.well-known/host-meta?x=1").as_str())
    );
    let r = plain_http(&server, "POST", "/http-bind");
    assert_eq!(r.status, 308, "{r:?}");
    let r = plain_http(&server, "GET", "/.well-known/acme-challenge/some-token");
    assert_eq!(r.status, 404, "{r:?}");
}

#[test]
fn direct_tls_client_on_the_https_port_by_alpn() {
    let server = web_server();
    let mut c = Client::connect_direct_tls(server.port("https"), &server.domain, &ca_path(&server));
    c.login("alice", "alice-secret");
    let jid = c.bind(Some("alpn"));
    assert_eq!(jid, "alice@localhost/alpn");
    // The same TLS port still serves the web to clients that ask for http/1.1 (or nothing).
    let mut tls = tls_stream(&server, &[]);
    let r = http_exchange(
        &mut tls,
        "GET /.well-known/host-meta.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
}

/// A hand-driven BOSH client (one TLS connection per request, like a browser may do).
struct Bosh<'a> {
    server: &'a TestServer,
    sid: String,
    rid: u64,
}

impl Bosh<'_> {
    fn post(server: &TestServer, body: &str) -> Element {
        let r = https(
            server,
            "POST",
            "/http-bind",
            "Content-Type: text/xml; charset=utf-8\r\n",
            body,
        );
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
        let el = Element::parse(&r.body).unwrap_or_else(|e| panic!("bad body {e}: {}", r.body));
        assert!(el.is("body", NS_HTTPBIND), "{}", r.body);
        el
    }

    fn start(server: &TestServer) -> (Bosh<'_>, Element) {
        let rid = 4_242_000;
        let resp = Bosh::post(
            server,
            &format!(
                "<body content='text/xml; charset=utf-8' hold='1' rid='{rid}' to='localhost' \
                 wait='10' xml:lang='en' ver='1.11' xmpp:version='1.0' \
                 xmlns='{NS_HTTPBIND}' xmlns:xmpp='urn:xmpp:xbosh'/>"
            ),
        );
        let sid = resp
            .attr("sid")
            .unwrap_or_else(|| panic!("no sid in {resp}"))
            .to_string();
        assert_eq!(resp.attr("hold"), Some("1"));
        assert_eq!(resp.attr("requests"), Some("2"));
        assert_eq!(resp.attr("wait"), Some("10"));
        (Bosh { server, sid, rid }, resp)
    }

    fn send(&mut self, attrs: &str, payload: &str) -> Element {
        self.rid += 1;
        Bosh::post(
            self.server,
            &format!(
                "<body rid='{}' sid='{}' xmlns='{NS_HTTPBIND}' xmlns:xmpp='urn:xmpp:xbosh' {attrs}>{payload}</body>",
                self.rid, self.sid
            ),
        )
    }
}

#[test]
fn bosh_login_and_message_with_long_polling() {
    let server = web_server();
    let (mut bosh, first) = Bosh::start(&server);
    let features = first
        .get_child("features", NS_STREAM)
        .unwrap_or_else(|| panic!("no features in {first}"));
    let mechs: Vec<String> = features
        .get_child("mechanisms", NS_SASL)
        .map(|m| m.children().map(|c| c.text()).collect())
        .unwrap_or_default();
    assert!(mechs.iter().any(|m| m == "SCRAM-SHA-256"), "{mechs:?}");
    // No channel binding data can be proved through HTTP: no -PLUS.
    assert!(!mechs.iter().any(|m| m.ends_with("-PLUS")), "{mechs:?}");
    assert!(features
        .get_child("starttls", "urn:ietf:params:xml:ns:xmpp-tls")
        .is_none());

    // SCRAM-SHA-256 inside BOSH bodies.
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut scram =
        ScramClient::new(Mechanism::ScramSha256, "alice", "alice-secret", None).expect("scram");
    let resp = bosh.send(
        "",
        &format!(
            "<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256'>{}</auth>",
            b64.encode(scram.client_first())
        ),
    );
    let challenge = resp
        .get_child("challenge", NS_SASL)
        .unwrap_or_else(|| panic!("no challenge in {resp}"));
    let client_final = scram
        .handle_server_first(&b64.decode(challenge.text().trim()).expect("b64"))
        .expect("server-first");
    let resp = bosh.send(
        "",
        &format!(
            "<response xmlns='{NS_SASL}'>{}</response>",
            b64.encode(client_final)
        ),
    );
    let success = resp
        .get_child("success", NS_SASL)
        .unwrap_or_else(|| panic!("no success in {resp}"));
    scram
        .verify_server_final(&b64.decode(success.text().trim()).expect("b64"))
        .expect("server signature");

    // XEP-0206 §5: restart, then bind.
    // The restart's own response carries the new features (Strophe.js relies on it).
    let resp = bosh.send("xmpp:restart='true' to='localhost' xml:lang='en'", "");
    let features = resp
        .get_child("features", NS_STREAM)
        .unwrap_or_else(|| panic!("no features after restart: {resp}"));
    assert!(features.get_child("bind", NS_BIND).is_some(), "{features}");
    let resp = bosh.send(
        "",
        &format!(
            "<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='{NS_BIND}'><resource>web</resource></bind></iq>"
        ),
    );
    let jid = resp
        .get_child("iq", "jabber:client")
        .and_then(|iq| iq.get_child("bind", NS_BIND))
        .and_then(|b| b.get_child("jid", NS_BIND))
        .map(|j| j.text())
        .unwrap_or_else(|| panic!("no bound jid in {resp}"));
    assert_eq!(jid, "alice@localhost/web");

    // bob on a normal client; alice (BOSH) writes to him.
    let mut bob = Client::login_bound(&server, "bob", "bob-secret", "desk");
    bosh.send(
        "",
        "<message xmlns='jabber:client' to='bob@localhost/desk' type='chat' id='m1'><body>from bosh</body></message>",
    );
    let got = bob.recv_until(|e| e.is("message", "jabber:client"));
    assert_eq!(got.attr("from"), Some("alice@localhost/web"));
    assert_eq!(
        got.get_child("body", "jabber:client")
            .map(|b| b.text())
            .as_deref(),
        Some("from bosh")
    );

    // A long poll waits until bob's answer arrives, then returns with it.
    let rid = bosh.rid + 1;
    bosh.rid = rid;
    let (sid, https_port) = (bosh.sid.clone(), server.port("https"));
    let ca = ca_path(&server);
    let poll = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let body = format!("<body rid='{rid}' sid='{sid}' xmlns='{NS_HTTPBIND}'/>");
        let tcp = TcpStream::connect(("127.0.0.1", https_port)).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(30))).ok();
        let config = tls_config(&ca, &[b"http/1.1"]);
        let conn = rustls::ClientConnection::new(config, "localhost".try_into().expect("name"))
            .expect("tls");
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let r = http_exchange(
            &mut tls,
            &format!(
                "POST /http-bind HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        );
        (r, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(500));
    bob.send(
        "<message to='alice@localhost/web' type='chat' id='m2'><body>to bosh</body></message>",
    );
    let (r, waited) = poll.join().expect("poll thread");
    let el = Element::parse(&r.body).unwrap_or_else(|e| panic!("{e}: {r:?}"));
    let msg = el
        .get_child("message", "jabber:client")
        .unwrap_or_else(|| panic!("the long poll returned without the message: {el}"));
    assert_eq!(msg.attr("from"), Some("bob@localhost/desk"));
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(5),
        "the poll should wait for the message, then return at once: {waited:?}"
    );

    // Terminate: the session ends, and bob sees alice go (her resource is unbound).
    let resp = bosh.send(
        "type='terminate'",
        "<presence xmlns='jabber:client' type='unavailable'/>",
    );
    assert_eq!(resp.attr("type"), Some("terminate"), "{resp}");
    // c2s saw a closed stream, not a dropped connection (which would park an SM session).
    assert!(
        server.wait_for_log(
            "BOSH session terminated by the client",
            Duration::from_secs(5)
        ) && server.wait_for_log("stream closed by the client", Duration::from_secs(5)),
        "the BOSH terminate did not close the c2s stream cleanly"
    );
    let resp = bosh.send("", "");
    assert_eq!(resp.attr("type"), Some("terminate"), "{resp}");
    assert_eq!(resp.attr("condition"), Some("item-not-found"), "{resp}");
}

#[test]
fn bosh_errors_end_the_session_with_a_condition() {
    let server = web_server();
    // Unknown sid.
    let r = Bosh::post(
        &server,
        &format!("<body rid='5' sid='nope' xmlns='{NS_HTTPBIND}'/>"),
    );
    assert_eq!(r.attr("type"), Some("terminate"));
    assert_eq!(r.attr("condition"), Some("item-not-found"));
    // Not a BOSH body.
    let r = Bosh::post(&server, "<hello/>");
    assert_eq!(r.attr("condition"), Some("bad-request"));
    // Another domain.
    let r = Bosh::post(
        &server,
        &format!("<body rid='5' to='elsewhere.example' wait='10' hold='1' xmlns='{NS_HTTPBIND}'/>"),
    );
    assert_eq!(r.attr("condition"), Some("host-unknown"));
    // A rid beyond the window ends the session.
    let (mut bosh, _) = Bosh::start(&server);
    bosh.rid += 5;
    let r = bosh.send("", "");
    assert_eq!(r.attr("condition"), Some("item-not-found"), "{r}");
    // Too large a body is refused before it is read.
    let mut tls = tls_stream(&server, &[b"http/1.1"]);
    let r = http_exchange(
        &mut tls,
        "POST /http-bind HTTP/1.1\r\nHost: localhost\r\nContent-Length: 409600\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 413, "{r:?}");
}

#[test]
fn websocket_without_the_xmpp_subprotocol_is_refused() {
    let server = web_server();
    let r = https(
        &server,
        "GET",
        "/xmpp-websocket",
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        "",
    );
    assert_eq!(r.status, 400, "{r:?}");
}

/// `node` with the client libraries of tests/web/package.json installed, or None (a loud skip) when
/// KITH_SKIP_INTEROP=1; otherwise missing tools fail the test.
fn node_with_web_clients() -> Option<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web");
    let node = std::env::var("KITH_NODE").unwrap_or_else(|_| "node".into());
    let version = Command::new(&node).arg("--version").output();
    let installed = ["@xmpp/client", "strophe.js", "xhr2"].iter().all(|p| {
        dir.join("node_modules")
            .join(p)
            .join("package.json")
            .exists()
    });
    let problem = match version {
        Err(e) => Some(format!(
            "cannot run {node}: {e} (apt-get install nodejs npm)"
        )),
        Ok(_) if !installed => Some(format!(
            "the web client libraries are not installed in {} (run npm ci --prefix tests/web)",
            dir.display()
        )),
        Ok(_) => None,
    };
    match problem {
        None => Some(node),
        Some(p) if std::env::var("KITH_SKIP_INTEROP").as_deref() == Ok("1") => {
            eprintln!("SKIPPED (KITH_SKIP_INTEROP=1): {p}");
            None
        }
        Some(p) => panic!("{p}; set KITH_SKIP_INTEROP=1 to skip"),
    }
}

/// Runs `tests/web/SCRIPT SERVICE localhost alice-secret bob-secret` under node and
/// checks it passed (each script asserts its own steps and prints PASS).
fn run_web_client(server: &TestServer, node: &str, script: &str, service: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/web")
        .join(script);
    // xmpp.js uses the global WebSocket: on in node 22 and later, behind a flag in node 20.
    let has_websocket = Command::new(node)
        .args([
            "-e",
            "process.exit(typeof WebSocket === 'function' ? 0 : 1)",
        ])
        .status()
        .is_ok_and(|s| s.success());
    let flag: &[&str] = if has_websocket {
        &[]
    } else {
        &["--experimental-websocket"]
    };
    let out = Command::new(node)
        .args(flag)
        .arg(&script)
        .args([service, "localhost", "alice-secret", "bob-secret"])
        // Trust only this server's self-signed certificate.
        .env("NODE_EXTRA_CA_CERTS", ca_path(server))
        .output()
        .expect("running node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("PASS"),
        "{} against {service} failed ({}):\n{stdout}\n{stderr}",
        script.display(),
        out.status
    );
}

#[test]
fn websocket_login_and_chat_with_xmppjs() {
    let Some(node) = node_with_web_clients() else {
        return;
    };
    let server = web_server();
    let service = format!("wss://localhost:{}/xmpp-websocket", server.port("https"));
    run_web_client(&server, &node, "xmppjs_chat.mjs", &service);
    assert!(server.log().contains("websocket connection from"));
}

#[test]
fn bosh_login_and_chat_with_strophe() {
    let Some(node) = node_with_web_clients() else {
        return;
    };
    let server = web_server();
    let service = format!("https://localhost:{}/http-bind", server.port("https"));
    run_web_client(&server, &node, "strophe_chat.mjs", &service);
    assert!(server.log().contains("BOSH session from"));
    assert!(server
        .log()
        .contains("BOSH session terminated by the client"));
}

#[test]
fn websocket_login_and_chat_with_strophe() {
    let Some(node) = node_with_web_clients() else {
        return;
    };
    let server = web_server();
    let service = format!("wss://localhost:{}/xmpp-websocket", server.port("https"));
    run_web_client(&server, &node, "strophe_chat.mjs", &service);
    assert!(server.log().contains("websocket connection from"));
}
