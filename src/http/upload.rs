//! XEP-0363 HTTP File Upload, the HTTP side: `PUT /upload/ID/NAME` stores the file of a slot
//! handed out by `services::upload`, `GET`/`HEAD` serve it (single byte ranges included),
//! `OPTIONS` answers CORS preflights. The router sends `/upload/` here on `upload.DOMAIN` and
//! on the main domain (for `[http] public_url` setups with one DNS name).
//!
//! A PUT streams the body to `DATA/upload/.part-ID` (never the whole file in memory), checks
//! the length before and while reading, fsyncs, renames to `DATA/upload/ID` and only then
//! writes the store record that makes the file visible. Served files carry
//! `X-Content-Type-Options: nosniff` and a sandboxing `Content-Security-Policy`, so an
//! uploaded HTML page cannot run script as our origin.
//!
//! The header logic (paths, ranges, `Content-Disposition`) is pure and tested below; the
//! handlers do the I/O.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};
use http_body_util::BodyExt as _;
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::body::{self, Body};
use super::Conn;
use crate::server::Server;
use crate::services::upload::{self as service, Slot, TEMP_PREFIX};
use crate::store::{StoreError, Upload};

/// A PUT whose client sends nothing for this long is dropped (and its partial file deleted).
const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes read from disk per response chunk.
const CHUNK: usize = 64 * 1024;

/// Answers one request under `/upload/`; every answer carries the CORS headers, so web
/// clients can upload and download from another origin.
pub async fn handle(conn: Arc<Conn>, req: Request<Incoming>) -> Response<Body> {
    let srv = conn.web.srv.clone();
    let mut r = if !srv.config.upload.enabled {
        body::status(StatusCode::NOT_FOUND)
    } else {
        match parse_path(req.uri().path()) {
            None => body::status(StatusCode::NOT_FOUND),
            Some(id) => {
                let id = id.to_string();
                match *req.method() {
                    Method::OPTIONS => empty(StatusCode::NO_CONTENT),
                    Method::PUT => put(&srv, &conn.tag, &id, req).await,
                    Method::GET | Method::HEAD => get(&srv, &conn.tag, &id, &req).await,
                    _ => {
                        let mut r = body::status(StatusCode::METHOD_NOT_ALLOWED);
                        r.headers_mut()
                            .insert(header::ALLOW, HeaderValue::from_static(METHODS));
                        r
                    }
                }
            }
        }
    };
    cors(r.headers_mut());
    r
}

const METHODS: &str = "GET, HEAD, PUT, OPTIONS";

/// The upload id in `/upload/ID/NAME`. The name is decoration for the user (the record has
/// the real one); the id is 16..=64 URL-safe characters, as `services::upload` makes them.
pub fn parse_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/upload/")?;
    let (id, name) = rest.split_once('/')?;
    let id_ok = (16..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && !name.is_empty() && !name.contains('/')).then_some(id)
}

/// What a `Range` header asks of a file of `size` bytes (RFC 9110 §14).
#[derive(Debug, PartialEq, Eq)]
pub enum Ranged {
    /// No range, or one we ignore (several ranges, other units, malformed): the whole file.
    Whole,
    /// Bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// A single byte range that lies outside the file: 416.
    Unsatisfiable,
}

/// Parses a `Range` header. Only a single `bytes=` range is served as a part; anything else
/// gets the whole file, which RFC 9110 §14.2 allows.
pub fn parse_range(header: Option<&str>, size: u64) -> Ranged {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ranged::Whole;
    };
    if spec.contains(',') {
        return Ranged::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ranged::Whole;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Digits only: an overflow is a huge number, not a syntax error.
        Some(s.parse::<u64>().unwrap_or(u64::MAX))
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // `bytes=-N`: the last N bytes.
        return match num(last) {
            None => Ranged::Whole,
            Some(0) => Ranged::Unsatisfiable,
            Some(_) if size == 0 => Ranged::Unsatisfiable,
            Some(n) => Ranged::Part {
                start: size.saturating_sub(n),
                end: size - 1,
            },
        };
    }
    let Some(start) = num(first) else {
        return Ranged::Whole;
    };
    let last = match last {
        "" => None,
        l => match num(l) {
            Some(l) => Some(l),
            None => return Ranged::Whole,
        },
    };
    if last.is_some_and(|l| l < start) {
        return Ranged::Whole;
    }
    if start >= size {
        return Ranged::Unsatisfiable;
    }
    Ranged::Part {
        start,
        end: last.map_or(size - 1, |l| l.min(size - 1)),
    }
}

/// `Content-Disposition` for a served file (RFC 6266): `inline` for images, audio and video
/// (so a browser shows them), `attachment` for everything else (so a stored page is saved,
/// not opened); the name as a quoted ASCII fallback and as RFC 8187 `filename*`.
pub fn content_disposition(content_type: &str, name: &str) -> String {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let media = ["image/", "audio/", "video/"]
        .iter()
        .any(|p| essence.starts_with(p));
    // SVG is an image that can carry script.
    let kind = if media && essence != "image/svg+xml" {
        "inline"
    } else {
        "attachment"
    };
    let fallback: String = name
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' && c != '%' => c,
            _ => '_',
        })
        .collect();
    format!(
        "{kind}; filename=\"{fallback}\"; filename*=UTF-8''{}",
        super::form::encode(name)
    )
}

/// The bearer token of an `Authorization: Bearer T` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Whether a PUT's `Content-Type` fits the slot's: the same media type (case-insensitive,
/// parameters ignored), or none sent.
pub fn same_media_type(sent: Option<&str>, slot: &str) -> bool {
    let essence = |t: &str| {
        t.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    };
    sent.is_none_or(|s| essence(s) == essence(slot))
}

fn cors(h: &mut HeaderMap) {
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(METHODS),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, Range"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Content-Length, Content-Range, Content-Disposition, ETag"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(body::empty());
    *r.status_mut() = status;
    r
}

// ----- PUT -----

async fn put(srv: &Server, tag: &str, id: &str, mut req: Request<Incoming>) -> Response<Body> {
    let now = Instant::now();
    let (slot, content_type) = match check_put(srv, tag, id, req.headers(), now).await {
        Ok(ok) => ok,
        Err(status) => {
            drain(&mut req, srv.config.upload.max_file_size).await;
            return body::status(status);
        }
    };
    let Ok(claimed) = srv.upload.claim(id, Some(&slot.token), now) else {
        // Another PUT took it in the meantime.
        drain(&mut req, srv.config.upload.max_file_size).await;
        return body::status(StatusCode::CONFLICT);
    };
    let slot = &claimed.slot;
    let dir = service::dir(srv);
    let started = Instant::now();
    match receive(&dir, id, slot, req.body_mut()).await {
        Ok(()) => {}
        Err(Failed(status, why)) => {
            log::info!(
                "{tag}: upload {}… of {}: {why}",
                service::log_id(id),
                slot.owner
            );
            return body::status(status);
        }
    }
    let record = Upload {
        owner: slot.owner.to_string(),
        name: slot.name.clone(),
        content_type,
        size: slot.size,
        created_unix: crate::time::now_unix(),
    };
    match srv.store.upload_add(id, record).await {
        Ok(()) => {
            log::info!(
                "{tag}: upload {}…: {} stored {} bytes in {} ms",
                service::log_id(id),
                slot.owner,
                slot.size,
                started.elapsed().as_millis()
            );
            empty(StatusCode::CREATED)
        }
        Err(e) => {
            let _ = smol::fs::remove_file(dir.join(id)).await;
            match e {
                // The account was deleted while the file was on its way.
                StoreError::NotFound => body::status(StatusCode::FORBIDDEN),
                StoreError::AlreadyExists(_) => body::status(StatusCode::CONFLICT),
                e => {
                    log::error!(
                        "{tag}: upload {}…: cannot record it: {e}",
                        service::log_id(id)
                    );
                    body::status(StatusCode::INTERNAL_SERVER_ERROR)
                }
            }
        }
    }
}

/// The slot a PUT may use and the media type to store, or why not: 403 without a valid slot
/// and token, 409 when the upload is already done, 411/413/400 when its length or type does
/// not match the slot.
async fn check_put(
    srv: &Server,
    tag: &str,
    id: &str,
    headers: &HeaderMap,
    now: Instant,
) -> Result<(Slot, String), StatusCode> {
    let Some(slot) = srv.upload.peek(id, now) else {
        // A used slot has a record; anything else never existed or expired.
        return Err(match srv.store.upload(id).await {
            Ok(Some(_)) => StatusCode::CONFLICT,
            _ => StatusCode::FORBIDDEN,
        });
    };
    if !bearer(headers).is_some_and(|t| service::same_secret(t, &slot.token)) {
        log::info!(
            "{tag}: upload {}…: PUT without the slot's token",
            service::log_id(id)
        );
        return Err(StatusCode::FORBIDDEN);
    }
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match length {
        None => return Err(StatusCode::LENGTH_REQUIRED),
        Some(n) if n > slot.size => return Err(StatusCode::PAYLOAD_TOO_LARGE),
        Some(n) if n != slot.size => return Err(StatusCode::BAD_REQUEST),
        Some(_) => {}
    }
    let sent_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let content_type = match (&slot.content_type, sent_type) {
        (Some(declared), sent) if same_media_type(sent, declared) => declared.clone(),
        (Some(_), _) => return Err(StatusCode::BAD_REQUEST),
        // The slot request named no type: the PUT's, if it is one.
        (None, Some(sent)) if service::valid_content_type(sent.trim()) => sent.trim().to_string(),
        (None, _) => "application/octet-stream".to_string(),
    };
    Ok((slot, content_type))
}

/// Reads and drops the body of a refused PUT of at most `limit` bytes, so the client reads
/// our answer instead of a connection reset: closing a socket with unread data makes the
/// kernel send RST, which can destroy the response in flight. A client that sent `Expect:
/// 100-continue` has sent nothing yet and is answered at once; so is a larger body.
async fn drain(req: &mut Request<Incoming>, limit: u64) {
    let expects = req
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if expects || declared.is_none_or(|n| n > limit) {
        return;
    }
    let body = req.body_mut();
    let reading = async { while let Some(Ok(_)) = body.frame().await {} };
    let idle = async {
        smol::Timer::after(BODY_IDLE_TIMEOUT).await;
    };
    futures_lite::future::or(reading, idle).await;
}

struct Failed(StatusCode, String);

/// Streams the body into a temporary file, then makes it `DIR/ID` with fsync and rename.
/// On any failure the temporary file is gone.
async fn receive(dir: &Path, id: &str, slot: &Slot, body: &mut Incoming) -> Result<(), Failed> {
    let internal = |what: &str, e: std::io::Error| {
        log::error!("upload: {what}: {e}");
        Failed(StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {e}"))
    };
    smol::fs::create_dir_all(dir)
        .await
        .map_err(|e| internal(&format!("cannot create {}", dir.display()), e))?;
    let part = dir.join(format!("{TEMP_PREFIX}{id}"));
    let file = smol::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&part)
        .await
        .map_err(|e| internal(&format!("cannot create {}", part.display()), e))?;
    let result = write_body(file, slot.size, body).await;
    let result = match result {
        Ok(()) => finish(&part, &dir.join(id), dir)
            .await
            .map_err(|e| internal(&format!("cannot store {}", dir.join(id).display()), e)),
        Err(e) => Err(e),
    };
    if result.is_err() {
        let _ = smol::fs::remove_file(&part).await;
    }
    result
}

async fn write_body(
    mut file: smol::fs::File,
    size: u64,
    body: &mut Incoming,
) -> Result<(), Failed> {
    enum Next {
        Frame(Option<Result<Frame<Bytes>, hyper::Error>>),
        Idle,
    }
    let mut written = 0u64;
    loop {
        let next = futures_lite::future::or(async { Next::Frame(body.frame().await) }, async {
            smol::Timer::after(BODY_IDLE_TIMEOUT).await;
            Next::Idle
        });
        let frame = match next.await {
            Next::Frame(None) => break,
            Next::Frame(Some(Ok(f))) => f,
            Next::Frame(Some(Err(e))) => {
                return Err(Failed(StatusCode::BAD_REQUEST, format!("body: {e}")));
            }
            Next::Idle => {
                return Err(Failed(
                    StatusCode::REQUEST_TIMEOUT,
                    "the client stopped sending".into(),
                ))
            }
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        written = written.saturating_add(data.len() as u64);
        if written > size {
            return Err(Failed(
                StatusCode::PAYLOAD_TOO_LARGE,
                "more bytes than the slot's size".into(),
            ));
        }
        file.write_all(&data)
            .await
            .map_err(|e| Failed(StatusCode::INTERNAL_SERVER_ERROR, format!("write: {e}")))?;
    }
    if written != size {
        return Err(Failed(
            StatusCode::BAD_REQUEST,
            format!("got {written} of {size} bytes"),
        ));
    }
    file.flush()
        .await
        .map_err(|e| Failed(StatusCode::INTERNAL_SERVER_ERROR, format!("flush: {e}")))?;
    file.sync_all()
        .await
        .map_err(|e| Failed(StatusCode::INTERNAL_SERVER_ERROR, format!("fsync: {e}")))
}

/// `part` becomes `done`, durably: the rename is made durable by an fsync of the directory.
async fn finish(part: &Path, done: &Path, dir: &Path) -> std::io::Result<()> {
    let (part, done, dir): (PathBuf, PathBuf, PathBuf) = (part.into(), done.into(), dir.into());
    smol::unblock(move || {
        std::fs::rename(&part, &done)?;
        std::fs::File::open(&dir)?.sync_all()
    })
    .await
}

// ----- GET / HEAD -----

async fn get(srv: &Server, tag: &str, id: &str, req: &Request<Incoming>) -> Response<Body> {
    let record = match srv.store.upload(id).await {
        Ok(Some(r)) => r,
        Ok(None) => return body::status(StatusCode::NOT_FOUND),
        Err(e) => {
            log::error!(
                "{tag}: upload {}…: cannot read its record: {e}",
                service::log_id(id)
            );
            return body::status(StatusCode::INTERNAL_SERVER_ERROR);
        }
    };
    let etag = format!("\"{id}\"");
    let headers = req.headers();
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let size = record.size;
    let ranged = parse_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        size,
    );
    let mut r = if not_modified {
        empty(StatusCode::NOT_MODIFIED)
    } else {
        match ranged {
            Ranged::Unsatisfiable => {
                let mut r = body::status(StatusCode::RANGE_NOT_SATISFIABLE);
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    r.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                r
            }
            Ranged::Whole | Ranged::Part { .. } => {
                let (start, end) = match ranged {
                    Ranged::Part { start, end } => (start, end),
                    _ => (0, size.saturating_sub(1)),
                };
                let len = if size == 0 { 0 } else { end - start + 1 };
                let head = req.method() == Method::HEAD;
                let body = if head || len == 0 {
                    body::empty()
                } else {
                    match file_body(&service::dir(srv).join(id), start, len).await {
                        Ok(b) => b,
                        Err(e) => {
                            log::error!(
                                "{tag}: upload {}…: recorded but unreadable: {e}",
                                service::log_id(id)
                            );
                            return with_cors(body::status(StatusCode::NOT_FOUND));
                        }
                    }
                };
                let mut r = Response::new(body);
                if let Ranged::Part { .. } = ranged {
                    *r.status_mut() = StatusCode::PARTIAL_CONTENT;
                    if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")) {
                        r.headers_mut().insert(header::CONTENT_RANGE, v);
                    }
                }
                let h = r.headers_mut();
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
                file_headers(h, &record);
                r
            }
        }
    };
    let h = r.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&crate::time::http_date(record.created_unix)) {
        h.insert(header::LAST_MODIFIED, v);
    }
    // The bytes behind a URL never change; `private` keeps shared caches out of it.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    r
}

fn with_cors(mut r: Response<Body>) -> Response<Body> {
    cors(r.headers_mut());
    r
}

fn file_headers(h: &mut HeaderMap, record: &Upload) {
    let ct = HeaderValue::from_str(&record.content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_TYPE, ct);
    if let Ok(v) = HeaderValue::from_str(&content_disposition(&record.content_type, &record.name)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // A stored page runs in a sandbox with no script, no plugins and no same-origin access.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'; sandbox"),
    );
}

/// `len` bytes of `path` from `start`, read 64 KiB at a time as the client takes them.
async fn file_body(path: &Path, start: u64, len: u64) -> std::io::Result<Body> {
    let mut file = smol::fs::File::open(path).await?;
    file.seek(SeekFrom::Start(start)).await?;
    let stream = futures_lite::stream::unfold((file, len), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let want = left.min(CHUNK as u64) as usize;
        let mut buf = vec![0u8; want];
        match file.read(&mut buf).await {
            Ok(0) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file is shorter than its record",
                )),
                (file, 0),
            )),
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Frame::data(Bytes::from(buf))), (file, left - n as u64)))
            }
            Err(e) => Some((Err(e), (file, 0))),
        }
    });
    Ok(http_body_util::StreamBody::new(stream).boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let id = "AAAAAAAAAAAAAAAAAAAAAAAA";
        assert_eq!(parse_path(&format!("/upload/{id}/cat.jpg")), Some(id));
        assert_eq!(parse_path(&format!("/upload/{id}/my%20cat.jpg")), Some(id));
        for bad in [
            format!("/upload/{id}"),
            format!("/upload/{id}/"),
            format!("/upload/{id}/a/b"),
            format!("/other/{id}/a"),
            "/upload/short/a".to_string(),
            "/upload/AAAAAAAAAAAAAAAAAAA.AAAA/a".to_string(),
            format!("/upload/{}/a", "A".repeat(65)),
        ] {
            assert_eq!(parse_path(&bad), None, "{bad}");
        }
    }

    #[test]
    fn ranges() {
        let r = |h: &str| parse_range(Some(h), 100);
        assert_eq!(parse_range(None, 100), Ranged::Whole);
        assert_eq!(r("bytes=0-9"), Ranged::Part { start: 0, end: 9 });
        assert_eq!(r("bytes=90-"), Ranged::Part { start: 90, end: 99 });
        assert_eq!(r("bytes=90-1000"), Ranged::Part { start: 90, end: 99 });
        assert_eq!(r("bytes=-10"), Ranged::Part { start: 90, end: 99 });
        assert_eq!(r("bytes=-1000"), Ranged::Part { start: 0, end: 99 });
        assert_eq!(r("bytes=100-"), Ranged::Unsatisfiable);
        assert_eq!(r("bytes=100-200"), Ranged::Unsatisfiable);
        assert_eq!(r("bytes=-0"), Ranged::Unsatisfiable);
        assert_eq!(r("bytes=99999999999999999999999-"), Ranged::Unsatisfiable);
        // Ignored: several ranges, other units, nonsense, reversed.
        for whole in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=a-b",
            "bytes=5-1",
            "bytes=-",
            "bytes=1",
            "",
        ] {
            assert_eq!(r(whole), Ranged::Whole, "{whole}");
        }
        assert_eq!(parse_range(Some("bytes=0-"), 0), Ranged::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-5"), 0), Ranged::Unsatisfiable);
    }

    #[test]
    fn dispositions() {
        assert_eq!(
            content_disposition("image/jpeg", "cat.jpg"),
            "inline; filename=\"cat.jpg\"; filename*=UTF-8''cat.jpg"
        );
        assert_eq!(
            content_disposition("Video/MP4; codecs=x", "a b.mp4"),
            "inline; filename=\"a b.mp4\"; filename*=UTF-8''a%20b.mp4"
        );
        assert_eq!(
            content_disposition("text/html", "Ünï \"x\".html"),
            "attachment; filename=\"_n_ _x_.html\"; filename*=UTF-8''%C3%9Cn%C3%AF%20%22x%22.html"
        );
        assert!(content_disposition("image/svg+xml", "a.svg").starts_with("attachment;"));
        // Header-safe whatever the name.
        let d = content_disposition("text/plain", "a\u{7f}\u{1}%\\b");
        assert!(HeaderValue::from_str(&d).is_ok(), "{d}");
    }

    #[test]
    fn tokens_and_types() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        assert!(same_media_type(None, "image/png"));
        assert!(same_media_type(Some("Image/PNG"), "image/png"));
        assert!(same_media_type(
            Some("text/plain; charset=utf-8"),
            "text/plain"
        ));
        assert!(!same_media_type(Some("text/html"), "text/plain"));
    }
}
