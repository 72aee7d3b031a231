//! End to end: XEP-0363 HTTP File Upload against the real binary. Slots are requested over
//! XMPP with the test client; files go up and down over HTTPS with `curl` (Debian package,
//! installed by `.ci/run`), which reaches `upload.localhost:PORT` through `--resolve` and
//! accepts the self-signed certificate with `-k`.
//!
//! curl missing is a failure, unless `KITH_SKIP_INTEROP=1` (then a loud skip), as for the
//! other external tools.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::client::{stanza_error, Client, NS_DISCO_INFO};
use common::{Options, TestServer};
use kith::xml::Element;

const NS_UPLOAD: &str = "urn:xmpp:http:upload:0";
const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
const NS_DATA: &str = "jabber:x:data";
const MAX: usize = 64 * 1024;

fn server() -> TestServer {
    let server = Options::default()
        .listen("https")
        .extra_toml("[upload]\nmax_file_size = \"64KiB\"\nquota = \"100KiB\"\n")
        .start();
    server.add_user("alice", "alice-secret");
    server
}

fn alice(server: &TestServer) -> Client {
    Client::login_bound(server, "alice", "alice-secret", "phone")
}

/// A slot: (PUT URL, Authorization header value, GET URL), or the error reply.
fn request_slot(c: &mut Client, name: &str, size: usize, ty: &str) -> Result<Slot, Element> {
    // An empty `ty` leaves the optional content-type out.
    let ty = if ty.is_empty() {
        String::new()
    } else {
        format!(" content-type='{ty}'")
    };
    let r = c.iq(&format!(
        "<iq type='get' id='ID' to='upload.localhost'><request xmlns='{NS_UPLOAD}' \
         filename='{}' size='{size}'{ty}/></iq>",
        common::client::escape(name)
    ));
    if r.attr("type") != Some("result") {
        return Err(r);
    }
    let slot = r.get_child("slot", NS_UPLOAD).expect("slot");
    let put = slot.get_child("put", NS_UPLOAD).expect("put");
    let auth = put
        .children()
        .find(|h| h.name() == "header" && h.attr("name") == Some("Authorization"))
        .map(|h| h.text())
        .expect("an Authorization header for the PUT");
    let get = slot.get_child("get", NS_UPLOAD).expect("get");
    Ok(Slot {
        put: put.attr("url").unwrap().to_string(),
        auth,
        get: get.attr("url").unwrap().to_string(),
    })
}

struct Slot {
    put: String,
    auth: String,
    get: String,
}

/// One curl run: status, response headers (lowercased names), body.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn curl(server: &TestServer, args: &[&str], url: &str) -> Option<Reply> {
    let port = server.port("https");
    let dir = &server.dir;
    let (hdr, out) = (dir.join("curl.headers"), dir.join("curl.body"));
    let _ = std::fs::remove_file(&out);
    let result = Command::new("curl")
        .args(["-sS", "-k", "--max-time", "20"])
        .arg("--resolve")
        .arg(format!("upload.localhost:{port}:127.0.0.1"))
        .arg("--resolve")
        .arg(format!("localhost:{port}:127.0.0.1"))
        .arg("-D")
        .arg(&hdr)
        .arg("-o")
        .arg(&out)
        .args(["-w", "%{http_code}"])
        .args(args)
        .arg(url)
        .output();
    let output = match result {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let why = "curl is not installed (apt-get install curl)";
            if std::env::var("KITH_SKIP_INTEROP").as_deref() == Ok("1") {
                let _ = writeln!(std::io::stderr(), "\n!!!!! SKIPPED upload test: {why}\n");
                return None;
            }
            panic!("{why}; set KITH_SKIP_INTEROP=1 to skip this test instead");
        }
        Err(e) => panic!("running curl: {e}"),
    };
    let status = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| {
            panic!(
                "curl {args:?} {url}: no status; stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let raw = std::fs::read_to_string(&hdr).unwrap_or_default();
    let headers = raw
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(Reply {
        status,
        headers,
        body: std::fs::read(&out).unwrap_or_default(),
    })
}

fn put(server: &TestServer, slot: &Slot, file: &Path, ty: &str) -> Option<Reply> {
    let data = format!("@{}", file.display());
    let auth = format!("Authorization: {}", slot.auth);
    let ct = format!("Content-Type: {ty}");
    curl(
        server,
        &["-X", "PUT", "--data-binary", &data, "-H", &auth, "-H", &ct],
        &slot.put,
    )
}

fn file_of(server: &TestServer, name: &str, len: usize) -> (PathBuf, Vec<u8>) {
    // Every byte value, in an order that a shifted or truncated copy would not match.
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    let path = server.dir.join(name);
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

#[test]
fn the_service_is_discoverable_with_its_size_limit() {
    let server = server();
    let mut c = alice(&server);
    let items = c.iq(&format!(
        "<iq type='get' id='ID' to='localhost'><query xmlns='{NS_DISCO_ITEMS}'/></iq>"
    ));
    let q = items.get_child("query", NS_DISCO_ITEMS).expect("items");
    assert!(
        q.children()
            .any(|i| i.attr("jid") == Some("upload.localhost")),
        "{items}"
    );
    let info = c.iq(&format!(
        "<iq type='get' id='ID' to='upload.localhost'><query xmlns='{NS_DISCO_INFO}'/></iq>"
    ));
    let q = info.get_child("query", NS_DISCO_INFO).expect("info");
    assert!(
        q.children().any(|i| i.name() == "identity"
            && i.attr("category") == Some("store")
            && i.attr("type") == Some("file")),
        "{info}"
    );
    assert!(q.children().any(|f| f.attr("var") == Some(NS_UPLOAD)));
    let form = q.get_child("x", NS_DATA).expect("XEP-0128 form");
    let max: Vec<String> = form
        .children()
        .filter(|f| f.attr("var") == Some("max-file-size"))
        .filter_map(|f| f.get_child("value", NS_DATA).map(|v| v.text()))
        .collect();
    assert_eq!(max, [MAX.to_string()], "{info}");
}

#[test]
fn a_file_goes_up_and_comes_down_byte_identical() {
    let server = server();
    let mut c = alice(&server);
    let (file, data) = file_of(&server, "photo.bin", 40_000);
    let slot = request_slot(&mut c, "my cat (1).jpg", data.len(), "image/jpeg").unwrap();
    let port = server.port("https");
    assert!(
        slot.put
            .starts_with(&format!("https://upload.localhost:{port}/upload/")),
        "{}",
        slot.put
    );
    assert!(
        slot.put.ends_with("/my%20cat%20%281%29.jpg"),
        "{}",
        slot.put
    );
    assert_eq!(slot.put, slot.get);

    // Preflight for a web client.
    let Some(pre) = curl(&server, &["-X", "OPTIONS"], &slot.put) else {
        return;
    };
    assert_eq!(pre.status, 204);
    assert_eq!(pre.header("access-control-allow-origin"), Some("*"));
    assert!(pre
        .header("access-control-allow-methods")
        .is_some_and(|m| m.contains("PUT")));
    assert!(pre
        .header("access-control-allow-headers")
        .is_some_and(|h| h.contains("Authorization") && h.contains("Content-Type")));

    // Refusals that leave the slot usable: no token, wrong size (short and long), wrong type.
    let no_token = Slot {
        auth: "Bearer wrong".into(),
        put: slot.put.clone(),
        get: slot.get.clone(),
    };
    assert_eq!(
        put(&server, &no_token, &file, "image/jpeg").unwrap().status,
        403
    );
    let (short, _) = file_of(&server, "short.bin", data.len() - 1);
    assert_eq!(
        put(&server, &slot, &short, "image/jpeg").unwrap().status,
        400
    );
    let (long, _) = file_of(&server, "long.bin", data.len() + 1);
    assert_eq!(
        put(&server, &slot, &long, "image/jpeg").unwrap().status,
        413
    );
    assert_eq!(put(&server, &slot, &file, "text/html").unwrap().status, 400);
    // Nothing is served before the upload is complete.
    assert_eq!(curl(&server, &[], &slot.get).unwrap().status, 404);

    let up = put(&server, &slot, &file, "image/jpeg").unwrap();
    assert_eq!(up.status, 201, "{}", String::from_utf8_lossy(&up.body));
    assert_eq!(up.header("access-control-allow-origin"), Some("*"));
    // Single use.
    assert_eq!(
        put(&server, &slot, &file, "image/jpeg").unwrap().status,
        409
    );

    let got = curl(&server, &[], &slot.get).unwrap();
    assert_eq!(got.status, 200);
    assert!(got.body == data, "the downloaded file differs");
    assert_eq!(got.header("content-type"), Some("image/jpeg"));
    assert_eq!(got.header("content-length"), Some("40000"));
    assert_eq!(
        got.header("content-disposition"),
        Some("inline; filename=\"my cat (1).jpg\"; filename*=UTF-8''my%20cat%20%281%29.jpg")
    );
    assert_eq!(got.header("x-content-type-options"), Some("nosniff"));
    assert!(got
        .header("content-security-policy")
        .is_some_and(|p| p.contains("sandbox")));
    assert_eq!(got.header("access-control-allow-origin"), Some("*"));
    assert!(got.header("last-modified").is_some());
    let etag = format!("If-None-Match: {}", got.header("etag").expect("an ETag"));
    let cached = curl(&server, &["-H", &etag], &slot.get).unwrap();
    assert_eq!(cached.status, 304);
    assert!(cached.body.is_empty());

    let part = curl(&server, &["-H", "Range: bytes=1000-1999"], &slot.get).unwrap();
    assert_eq!(part.status, 206);
    assert_eq!(part.header("content-range"), Some("bytes 1000-1999/40000"));
    assert!(part.body == data[1000..2000]);
    let tail = curl(&server, &["-H", "Range: bytes=-10"], &slot.get).unwrap();
    assert_eq!(tail.status, 206);
    assert!(tail.body == data[data.len() - 10..]);
    let beyond = curl(&server, &["-H", "Range: bytes=40000-"], &slot.get).unwrap();
    assert_eq!(beyond.status, 416);
    assert_eq!(beyond.header("content-range"), Some("bytes */40000"));

    let head = curl(&server, &["-I"], &slot.get).unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("40000"));
    // With -I curl writes the head to the output file too: it must end there, no bytes after.
    assert!(
        head.body.ends_with(b"\r\n\r\n") && head.body.is_ascii(),
        "{head:?}"
    );

    // The same path on the main domain (one DNS name, `[http] public_url`).
    let main = slot.get.replace("upload.localhost", "localhost");
    let same = curl(&server, &[], &main).unwrap();
    assert_eq!(same.status, 200);
    assert!(same.body == data);

    // No declared type: the PUT's is kept. A page is served as a download, sandboxed.
    let page = server.dir.join("page.html");
    std::fs::write(&page, "<script>alert(1)</script>").unwrap();
    let slot = request_slot(&mut c, "page.html", 25, "").unwrap();
    assert_eq!(put(&server, &slot, &page, "text/html").unwrap().status, 201);
    let got = curl(&server, &[], &slot.get).unwrap();
    assert_eq!(got.header("content-type"), Some("text/html"));
    assert!(got
        .header("content-disposition")
        .is_some_and(|d| d.starts_with("attachment;")));
    assert!(got
        .header("content-security-policy")
        .is_some_and(|p| p.contains("sandbox") && p.contains("default-src 'none'")));

    // A made-up id is not there.
    let made_up = format!("https://upload.localhost:{port}/upload/AAAAAAAAAAAAAAAAAAAAAAAA/x");
    assert_eq!(curl(&server, &[], &made_up).unwrap().status, 404);
}

#[test]
fn limits_file_too_large_quota_and_bad_names() {
    let server = server();
    let mut c = alice(&server);

    let err = request_slot(&mut c, "big.bin", MAX + 1, "application/octet-stream")
        .err()
        .expect("a slot over the limit is refused");
    assert_eq!(stanza_error(&err), "not-acceptable", "{err}");
    let e = err.get_child("error", "jabber:client").unwrap();
    let max = e
        .get_child("file-too-large", NS_UPLOAD)
        .and_then(|f| f.get_child("max-file-size", NS_UPLOAD))
        .map(|m| m.text());
    assert_eq!(max, Some(MAX.to_string()), "{err}");

    let err = request_slot(&mut c, "../../etc/passwd", 10, "text/plain")
        .err()
        .expect("a path is not a file name");
    assert_eq!(stanza_error(&err), "bad-request", "{err}");

    // Quota 100 KiB: a stored 40 000-byte file plus a waiting 40 000-byte slot leave no room
    // for another 40 000 bytes.
    let (file, _) = file_of(&server, "q.bin", 40_000);
    let first = request_slot(&mut c, "a.bin", 40_000, "application/octet-stream").unwrap();
    let Some(up) = put(&server, &first, &file, "application/octet-stream") else {
        return;
    };
    assert_eq!(up.status, 201);
    request_slot(&mut c, "b.bin", 40_000, "application/octet-stream").unwrap();
    let err = request_slot(&mut c, "c.bin", 40_000, "application/octet-stream")
        .err()
        .expect("over the quota");
    assert_eq!(stanza_error(&err), "resource-constraint", "{err}");
    // Small files still fit.
    request_slot(&mut c, "d.bin", 1000, "application/octet-stream").unwrap();
}

/// Behind a reverse proxy or with one DNS name: `[http] public_url` is the base of the upload
/// URLs, whatever `Host` the request then carries.
#[test]
fn public_url_is_the_base_of_upload_urls() {
    let server = Options::default()
        .listen("https")
        .extra_toml("[http]\npublic_url = \"https://files.example.test\"\n")
        .start();
    server.add_user("alice", "alice-secret");
    let mut c = alice(&server);
    let (file, data) = file_of(&server, "f.txt", 1234);
    let slot = request_slot(&mut c, "f.txt", data.len(), "text/plain").unwrap();
    assert!(
        slot.put.starts_with("https://files.example.test/upload/"),
        "{}",
        slot.put
    );
    let to = format!("files.example.test:443:127.0.0.1:{}", server.port("https"));
    let data_arg = format!("@{}", file.display());
    let auth = format!("Authorization: {}", slot.auth);
    let Some(up) = curl(
        &server,
        &[
            "--connect-to",
            &to,
            "-X",
            "PUT",
            "--data-binary",
            &data_arg,
            "-H",
            &auth,
            "-H",
            "Content-Type: text/plain",
        ],
        &slot.put,
    ) else {
        return;
    };
    assert_eq!(up.status, 201);
    let got = curl(&server, &["--connect-to", &to], &slot.get).unwrap();
    assert_eq!(got.status, 200);
    assert!(got.body == data);
    assert_eq!(got.header("content-type"), Some("text/plain"));
}
