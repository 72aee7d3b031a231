//! XEP-0363 HTTP File Upload, the XMPP side: the built-in service at `upload.DOMAIN` (like
//! Prosody's `http_file_share`) answers disco and hands local users upload slots; the files
//! themselves go up and down over HTTPS (`http::upload`), and their records live in the store.
//!
//! A slot is an unguessable id (a capability: whoever has the GET URL can read the file), a
//! second secret for the PUT (`Authorization: Bearer …`, so a recipient who sees the GET URL
//! early cannot overwrite it), and the size and media type the client declared. Slots live
//! in memory only, are single-use and expire after `SLOT_LIFETIME`; a restart forgets them,
//! which costs a client one new request.
//!
//! Storage: `DATA/upload/<id>` holds a complete file (the PUT streams to a temporary file,
//! fsyncs and renames it, so a half file is never served); the store's record (owner, name,
//! type, size, time) is written after the rename and is what makes the file exist for GET,
//! quotas and expiry. `expire_loop` deletes files past `[upload] expire_after` and files that
//! lost their record (account deleted, crash between rename and record).
//!
//! Must not know: HTTP (that is `http::upload`) or sockets.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;

use crate::jid::{BareJid, FullJid};
use crate::router::{bounce, deliver_reply};
use crate::server::Server;
use crate::stanza::{self, ns, Condition, ErrorType, StanzaError};
use crate::xml::Element;

pub const NS_UPLOAD: &str = "urn:xmpp:http:upload:0";

/// How long a slot waits for its PUT. Long enough for a phone to start an upload on a slow
/// network; short enough that an abandoned slot soon stops counting against the quota.
pub const SLOT_LIFETIME: Duration = Duration::from_secs(300);

/// Outstanding slots one account may hold. Zero-byte slots would otherwise escape the quota.
const MAX_PENDING_SLOTS: usize = 32;

/// How often the expiry sweep runs, and how many records one transaction deletes.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
const SWEEP_BATCH: usize = 500;

/// A file without a record is deleted only when it is older than this, so the sweep never
/// races a PUT between its rename and its record.
const ORPHAN_AGE: Duration = Duration::from_secs(3600);

/// Prefix of files being written; never served, removed by the sweep when stale.
pub const TEMP_PREFIX: &str = ".part-";

/// An upload slot handed to a client and not used yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub owner: BareJid,
    pub name: String,
    /// The media type the client declared, which the PUT must match; `None`: the PUT's
    /// `Content-Type` decides.
    pub content_type: Option<String>,
    pub size: u64,
    /// The PUT's bearer token.
    pub token: String,
    pub expires: Instant,
}

/// Outstanding slots by id: waiting for their PUT, or in the middle of it (`true`). A slot
/// being uploaded still counts against its owner's quota until its record exists.
#[derive(Default)]
pub struct State {
    slots: Mutex<HashMap<String, (Slot, bool)>>,
}

/// A slot taken by a PUT. It stays counted against the quota while the PUT runs, and is
/// gone when this is dropped, however the PUT ends (success, refusal, dropped connection).
pub struct Claimed<'a> {
    state: &'a State,
    id: String,
    pub slot: Slot,
}

impl Drop for Claimed<'_> {
    fn drop(&mut self) {
        lock(&self.state.slots).remove(&self.id);
    }
}

/// Why a PUT may not use a slot.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// No such slot: never handed out, expired or used already.
    Unknown,
    /// The bearer token is missing or wrong.
    BadToken,
}

impl State {
    /// Takes waiting slot `id` for its one PUT if `token` is its token; the slot is gone
    /// when the returned guard drops. A wrong token leaves the slot waiting, so a stranger
    /// cannot spoil it.
    pub fn claim(
        &self,
        id: &str,
        token: Option<&str>,
        now: Instant,
    ) -> Result<Claimed<'_>, Refused> {
        let mut slots = lock(&self.slots);
        let (slot, uploading) = slots.get_mut(id).ok_or(Refused::Unknown)?;
        if *uploading || slot.expires <= now {
            return Err(Refused::Unknown);
        }
        if !token.is_some_and(|t| same_secret(t, &slot.token)) {
            return Err(Refused::BadToken);
        }
        *uploading = true;
        Ok(Claimed {
            state: self,
            id: id.to_string(),
            slot: slot.clone(),
        })
    }

    /// Slot `id` if it is handed out and waiting: a PUT checks its request against it before
    /// claiming it.
    pub fn peek(&self, id: &str, now: Instant) -> Option<Slot> {
        lock(&self.slots)
            .get(id)
            .filter(|(s, uploading)| !uploading && s.expires > now)
            .map(|(s, _)| s.clone())
    }

    /// Bytes and number of the owner's outstanding slots; forgets expired slots on the way.
    fn pending(&self, owner: &BareJid, now: Instant) -> (u64, usize) {
        let mut slots = lock(&self.slots);
        slots.retain(|_, (s, uploading)| *uploading || s.expires > now);
        slots
            .values()
            .filter(|(s, _)| &s.owner == owner)
            .fold((0, 0), |(b, n), (s, _)| (b.saturating_add(s.size), n + 1))
    }

    fn insert(&self, id: String, slot: Slot) {
        lock(&self.slots).insert(id, (slot, false));
    }

    fn prune(&self, now: Instant) {
        lock(&self.slots).retain(|_, (s, uploading)| *uploading || s.expires > now);
    }
}

/// The service's address, `upload.DOMAIN`, when it is offered: enabled, and reachable over
/// HTTPS (a `[listen] https` address, or a reverse proxy at `[http] public_url`).
pub fn service_domain(srv: &Server) -> Option<String> {
    let cfg = &srv.config;
    let reachable = !cfg.listen.https.is_empty() || cfg.http.public_url.is_some();
    (cfg.upload.enabled && reachable).then(|| format!("upload.{}", cfg.domain))
}

/// Whether `domain` is the upload service's address.
pub fn is_service(srv: &Server, domain: &str) -> bool {
    service_domain(srv).is_some_and(|d| d == domain)
}

/// The base of every upload URL. With `[http] public_url` (a reverse proxy, or one DNS name
/// only) files live under it, on the main domain; otherwise on their own host,
/// `https://upload.DOMAIN` plus the port of the first `[listen] https` address when it is not
/// 443, so a file can never share an origin with the web client.
pub fn base_url(srv: &Server) -> String {
    if let Some(url) = &srv.config.http.public_url {
        return url.clone();
    }
    let port = srv.config.listen.https.first().map_or(443, |a| a.port());
    default_base_url(&srv.config.domain, port)
}

/// Where the upload files live.
pub fn dir(srv: &Server) -> PathBuf {
    srv.config.data_dir.join("upload")
}

/// An iq to `upload.DOMAIN`. `from` is the local user who sent it, `None` for anyone else
/// (a component; later, remote servers): they may discover the service but get no slots.
pub async fn handle_iq(srv: &Server, from: Option<&FullJid>, iq: Element) {
    if stanza::must_not_answer(&iq) {
        return;
    }
    let get = iq.attr("type") == Some("get");
    let Some(payload) = iq.first_child() else {
        return bounce(srv, &iq, Condition::BadRequest.into());
    };
    match (payload.ns(), payload.name(), get) {
        (ns::DISCO_INFO, "query", true) => {
            let info = disco_info(payload, srv.config.upload.max_file_size);
            deliver_reply(srv, stanza::iq_result(&iq, Some(info)));
        }
        (ns::DISCO_ITEMS, "query", true) => {
            let items = Element::new("query", ns::DISCO_ITEMS);
            deliver_reply(srv, stanza::iq_result(&iq, Some(items)));
        }
        (NS_UPLOAD, "request", true) => match from {
            Some(from) => request_slot(srv, from, &iq, payload).await,
            // Prosody's http_file_share answers strangers the same way.
            None => bounce(srv, &iq, Condition::Forbidden.into()),
        },
        _ => bounce(srv, &iq, Condition::ServiceUnavailable.into()),
    }
}

/// XEP-0363 §4: identity `store/file`, the feature, and the XEP-0128 form with the size limit.
pub fn disco_info(query: &Element, max_file_size: u64) -> Element {
    let mut q = Element::new("query", ns::DISCO_INFO);
    if let Some(node) = query.attr("node") {
        q.set_attr("node", node);
        return q;
    }
    q.push_child(
        Element::new("identity", ns::DISCO_INFO)
            .with_attr("category", "store")
            .with_attr("type", "file")
            .with_attr("name", "HTTP File Upload"),
    );
    for f in [ns::DISCO_INFO, ns::DISCO_ITEMS, NS_UPLOAD] {
        q.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", f));
    }
    let field = |var: &str, value: String| {
        Element::new("field", ns::DATA_FORM)
            .with_attr("var", var)
            .with_child(Element::new("value", ns::DATA_FORM).with_text(value))
    };
    let mut form_type = field("FORM_TYPE", NS_UPLOAD.into());
    form_type.set_attr("type", "hidden");
    q.push_child(
        Element::new("x", ns::DATA_FORM)
            .with_attr("type", "result")
            .with_child(form_type)
            .with_child(field("max-file-size", max_file_size.to_string())),
    );
    q
}

/// A slot request, checked: what a client asked for.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub name: String,
    pub size: u64,
    pub content_type: Option<String>,
}

/// XEP-0363 §4 `<request filename size content-type/>`. A missing or unusable attribute is
/// `bad-request` (so is a name that could be a path: it ends up in a URL and a header).
pub fn parse_request(req: &Element) -> Result<Request, StanzaError> {
    let bad = |text| StanzaError::new(Condition::BadRequest).with_text(text);
    let name = req
        .attr("filename")
        .ok_or_else(|| bad("the request has no filename"))?;
    if !valid_file_name(name) {
        return Err(bad(
            "the file name is empty, too long or contains / \\ or control characters",
        ));
    }
    let size = req
        .attr("size")
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| bad("the request has no valid size"))?;
    let content_type = match req.attr("content-type").map(str::trim) {
        None | Some("") => None,
        Some(t) if valid_content_type(t) => Some(t.to_string()),
        Some(_) => return Err(bad("the content-type is not a media type like image/jpeg")),
    };
    Ok(Request {
        name: name.to_string(),
        size,
        content_type,
    })
}

pub fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
}

/// `type/subtype` of RFC 9110 tokens, optionally followed by `; parameters` in printable
/// ASCII (served back verbatim, so no CR/LF can get into a header).
pub fn valid_content_type(t: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let (essence, params) = t.split_once(';').unwrap_or((t, ""));
    let Some((ty, sub)) = essence.trim().split_once('/') else {
        return false;
    };
    t.len() <= 255 && token(ty) && token(sub) && params.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// `https://upload.DOMAIN[:PORT]`.
pub fn default_base_url(domain: &str, https_port: u16) -> String {
    match https_port {
        443 => format!("https://upload.{domain}"),
        p => format!("https://upload.{domain}:{p}"),
    }
}

/// The URL of an upload: `BASE/upload/ID/NAME`, the name percent-encoded as one path
/// segment (the HTTP router sends `/upload/` on either host here, see `http::router`).
pub fn file_url(base: &str, id: &str, name: &str) -> String {
    format!(
        "{}/upload/{id}/{}",
        base.trim_end_matches('/'),
        crate::http::form::encode(name)
    )
}

async fn request_slot(srv: &Server, from: &FullJid, iq: &Element, payload: &Element) {
    let req = match parse_request(payload) {
        Ok(r) => r,
        Err(e) => return bounce(srv, iq, e),
    };
    let max = srv.config.upload.max_file_size;
    if req.size > max {
        log::debug!(
            "upload: {} asked for {} bytes, over the {max}-byte limit",
            from.to_bare(),
            req.size
        );
        return deliver_reply(srv, file_too_large(iq, max));
    }
    let owner = from.to_bare();
    let _guard = srv.lock_account(&owner).await;
    let now = Instant::now();
    let stored = match srv.store.upload_usage(owner.as_str()).await {
        Ok(n) => n,
        Err(e) => {
            log::error!("upload: cannot read the usage of {owner}: {e}");
            return bounce(srv, iq, Condition::InternalServerError.into());
        }
    };
    let (pending, slots) = srv.upload.pending(&owner, now);
    let quota = srv.config.upload.quota;
    if stored.saturating_add(pending).saturating_add(req.size) > quota {
        log::info!("upload: {owner} is over the quota ({stored} bytes stored, {pending} pending)");
        let err = StanzaError {
            kind: ErrorType::Wait,
            condition: Condition::ResourceConstraint,
            text: Some("Your storage for shared files is full; old files expire after a while"),
        };
        return bounce(srv, iq, err);
    }
    if slots >= MAX_PENDING_SLOTS {
        let err = StanzaError {
            kind: ErrorType::Wait,
            condition: Condition::ResourceConstraint,
            text: Some("Too many uploads at once; finish some first"),
        };
        return bounce(srv, iq, err);
    }
    let (Some(id), Some(token)) = (random_id(18), random_id(24)) else {
        log::error!("upload: the system random generator failed");
        return bounce(srv, iq, Condition::InternalServerError.into());
    };
    let url = file_url(&base_url(srv), &id, &req.name);
    log::info!(
        "upload: slot {}… for {owner}: {} bytes of {}",
        log_id(&id),
        req.size,
        req.content_type.as_deref().unwrap_or("undeclared type")
    );
    srv.upload.insert(
        id,
        Slot {
            owner,
            name: req.name,
            content_type: req.content_type,
            size: req.size,
            token: token.clone(),
            expires: now + SLOT_LIFETIME,
        },
    );
    deliver_reply(srv, stanza::iq_result(iq, Some(slot_element(&url, &token))));
}

/// XEP-0363 §4 `<slot><put url><header name='Authorization'/></put><get url/></slot>`.
pub fn slot_element(url: &str, token: &str) -> Element {
    Element::new("slot", NS_UPLOAD)
        .with_child(
            Element::new("put", NS_UPLOAD)
                .with_attr("url", url)
                .with_child(
                    Element::new("header", NS_UPLOAD)
                        .with_attr("name", "Authorization")
                        .with_text(format!("Bearer {token}")),
                ),
        )
        .with_child(Element::new("get", NS_UPLOAD).with_attr("url", url))
}

/// XEP-0363 §5: `not-acceptable` with `<file-too-large><max-file-size/>`.
pub fn file_too_large(iq: &Element, max: u64) -> Element {
    let err = StanzaError::new(Condition::NotAcceptable).with_text("The file is too large");
    let mut reply = stanza::error_reply(iq, &err);
    if let Some(e) = reply.get_child_mut("error", ns::CLIENT) {
        e.push_child(
            Element::new("file-too-large", NS_UPLOAD)
                .with_child(Element::new("max-file-size", NS_UPLOAD).with_text(max.to_string())),
        );
    }
    reply
}

/// The first characters of an upload id, for logs: enough to follow one upload, not enough
/// to fetch its file (the whole id is the capability to read it).
pub fn log_id(id: &str) -> &str {
    id.get(..6).unwrap_or(id)
}

/// A URL-safe random string from `n` bytes of the system's secure generator.
fn random_id(n: usize) -> Option<String> {
    use ring::rand::SecureRandom;
    let mut bytes = vec![0u8; n];
    ring::rand::SystemRandom::new().fill(&mut bytes).ok()?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Compares two secrets in time that depends only on their lengths.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves a map that is still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Deletes uploads past `[upload] expire_after` and files without a record, hourly.
pub async fn expire_loop(srv: Arc<Server>) {
    smol::Timer::after(Duration::from_secs(60)).await;
    loop {
        sweep(&srv, crate::time::now_unix()).await;
        smol::Timer::after(SWEEP_EVERY).await;
    }
}

/// One sweep at `now_unix`: returns how many files were deleted.
pub async fn sweep(srv: &Server, now_unix: u64) -> usize {
    srv.upload.prune(Instant::now());
    let dir = dir(srv);
    let mut deleted = 0;
    if let Some(keep) = srv.config.upload.expire_after {
        let cutoff = now_unix.saturating_sub(keep.as_secs());
        loop {
            match srv.store.upload_expire(cutoff, SWEEP_BATCH).await {
                Ok(ids) => {
                    let n = ids.len();
                    deleted += remove_files(&dir, ids).await;
                    if n < SWEEP_BATCH {
                        break;
                    }
                }
                Err(e) => {
                    log::error!("upload: expiry: cannot delete records: {e}");
                    break;
                }
            }
        }
    }
    deleted += remove_orphans(srv, &dir).await;
    if deleted > 0 {
        log::info!("upload: deleted {deleted} expired or orphaned file(s)");
    }
    deleted
}

async fn remove_files(dir: &Path, ids: Vec<String>) -> usize {
    let dir = dir.to_path_buf();
    smol::unblock(move || {
        ids.iter()
            .filter(|id| match std::fs::remove_file(dir.join(id)) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => {
                    log::warn!("upload: cannot delete {}: {e}", dir.join(id).display());
                    false
                }
            })
            .count()
    })
    .await
}

/// Files older than `ORPHAN_AGE` whose record is gone: the owner's account was deleted, or the
/// server stopped between a PUT's rename and its record. Stale partial files too.
async fn remove_orphans(srv: &Server, dir: &Path) -> usize {
    let d = dir.to_path_buf();
    let old: Vec<String> = smol::unblock(move || {
        let Ok(entries) = std::fs::read_dir(&d) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| {
                e.metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > ORPHAN_AGE)
            })
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    })
    .await;
    let mut orphans = Vec::new();
    for name in old {
        let orphan =
            name.starts_with(TEMP_PREFIX) || matches!(srv.store.upload(&name).await, Ok(None));
        if orphan {
            orphans.push(name);
        }
    }
    remove_files(dir, orphans).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(attrs: &[(&str, &str)]) -> Result<Request, StanzaError> {
        let mut el = Element::new("request", NS_UPLOAD);
        for (k, v) in attrs {
            el.set_attr(k, *v);
        }
        parse_request(&el)
    }

    #[test]
    fn slot_requests_are_checked() {
        let ok = request(&[
            ("filename", "Ünï cat.jpg"),
            ("size", "1234"),
            ("content-type", "image/jpeg"),
        ])
        .unwrap();
        assert_eq!(
            ok,
            Request {
                name: "Ünï cat.jpg".into(),
                size: 1234,
                content_type: Some("image/jpeg".into())
            }
        );
        let untyped = request(&[("filename", "a"), ("size", "0")]).unwrap();
        assert_eq!(untyped.content_type, None);
        for bad in [
            vec![("size", "1")],
            vec![("filename", ""), ("size", "1")],
            vec![("filename", "../etc/passwd"), ("size", "1")],
            vec![("filename", "a\\b"), ("size", "1")],
            vec![("filename", "a\nb"), ("size", "1")],
            vec![("filename", ".."), ("size", "1")],
            vec![("filename", "a")],
            vec![("filename", "a"), ("size", "-1")],
            vec![("filename", "a"), ("size", "1e9")],
            vec![("filename", "a"), ("size", "1"), ("content-type", "text")],
            vec![
                ("filename", "a"),
                ("size", "1"),
                ("content-type", "a/b\r\nX: y"),
            ],
        ] {
            let e = request(&bad).unwrap_err();
            assert_eq!(e.condition, Condition::BadRequest, "{bad:?}");
        }
        assert!(!valid_file_name(&"x".repeat(256)));
        assert!(valid_content_type("text/plain; charset=utf-8"));
    }

    #[test]
    fn urls() {
        assert_eq!(
            default_base_url("example.org", 443),
            "https://upload.example.org"
        );
        assert_eq!(
            default_base_url("example.org", 8443),
            "https://upload.example.org:8443"
        );
        assert_eq!(
            file_url("https://h/", "AbC_-9", "my cat (1).jpg"),
            "https://h/upload/AbC_-9/my%20cat%20%281%29.jpg"
        );
        assert_eq!(crate::http::form::encode("ü/%"), "%C3%BC%2F%25");
    }

    #[test]
    fn disco_advertises_the_size_limit() {
        let q = Element::new("query", ns::DISCO_INFO);
        let info = disco_info(&q, 1000);
        let s = String::from_utf8(info.to_bytes_in("")).unwrap();
        assert!(
            s.contains("category=\"store\"") || s.contains("category='store'"),
            "{s}"
        );
        assert!(s.contains(NS_UPLOAD));
        assert!(s.contains("<value>1000</value>"), "{s}");
    }

    #[test]
    fn too_large_names_the_limit() {
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("id", "1")
            .with_attr("type", "get")
            .with_attr("from", "a@x/r")
            .with_attr("to", "upload.x");
        let reply = file_too_large(&iq, 42);
        let err = reply.get_child("error", ns::CLIENT).unwrap();
        assert!(err.has_child("not-acceptable", ns::STANZAS_ERR));
        let big = err.get_child("file-too-large", NS_UPLOAD).unwrap();
        assert_eq!(
            big.get_child("max-file-size", NS_UPLOAD).unwrap().text(),
            "42"
        );
    }

    #[test]
    fn slots_are_single_use_secret_and_expire() {
        let st = State::default();
        let now = Instant::now();
        let owner = BareJid::parse("alice@x").unwrap();
        let slot = |size, expires| Slot {
            owner: owner.clone(),
            name: "f".into(),
            content_type: Some("text/plain".into()),
            size,
            token: "secret".into(),
            expires,
        };
        st.insert("a".into(), slot(10, now + SLOT_LIFETIME));
        st.insert("b".into(), slot(20, now + SLOT_LIFETIME));
        st.insert("old".into(), slot(5, now));
        assert_eq!(st.pending(&owner, now), (30, 2));
        let refused = |r: Result<Claimed<'_>, Refused>| r.err();
        assert_eq!(refused(st.claim("a", None, now)), Some(Refused::BadToken));
        assert_eq!(
            refused(st.claim("a", Some("secreT"), now)),
            Some(Refused::BadToken)
        );
        assert!(st.peek("a", now).is_some());
        let claimed = st.claim("a", Some("secret"), now).unwrap();
        assert_eq!(claimed.slot.size, 10);
        assert_eq!(
            refused(st.claim("a", Some("secret"), now)),
            Some(Refused::Unknown)
        );
        assert!(st.peek("a", now).is_none());
        assert_eq!(
            refused(st.claim("b", Some("secret"), now + SLOT_LIFETIME)),
            Some(Refused::Unknown)
        );
        // While the PUT runs, even past the slot's lifetime, it counts against the quota.
        assert_eq!(st.pending(&owner, now), (30, 2));
        let later = now + 2 * SLOT_LIFETIME;
        assert_eq!(st.pending(&owner, later), (10, 1));
        drop(claimed);
        assert_eq!(st.pending(&owner, later), (0, 0));
        assert_eq!(
            refused(st.claim("nope", Some("secret"), now)),
            Some(Refused::Unknown)
        );
    }

    /// Expired files and their records go; fresh ones stay; an old file without a record (its
    /// account was deleted) and a stale partial file go; a young file without one stays (a PUT
    /// between its rename and its record).
    #[test]
    fn the_sweep_deletes_expired_and_orphaned_files() {
        use crate::store::{Store, Upload};
        let dir = std::env::temp_dir().join(format!("kith-upload-sweep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&dir.join("kith.redb")).unwrap();
        let tls = crate::net::tls::TlsSetup::load(None, None, "localhost", &dir).unwrap();
        let mut config = crate::config::Config::defaults();
        config.data_dir = dir.clone();
        config.upload.expire_after = Some(Duration::from_secs(86_400));
        let srv = Server::new(config, store, tls);
        let files = dir.join("upload");
        std::fs::create_dir_all(&files).unwrap();
        let now = 10 * 86_400;
        let rec = |created_unix| Upload {
            owner: "a@localhost".into(),
            name: "f".into(),
            content_type: "text/plain".into(),
            size: 1,
            created_unix,
        };
        let old = std::time::SystemTime::now() - 2 * ORPHAN_AGE;
        let touch = |name: &str, aged: bool| {
            let f = std::fs::File::create(files.join(name)).unwrap();
            if aged {
                f.set_modified(old).unwrap();
            }
        };
        smol::block_on(async {
            srv.store
                .create_account("a@localhost", vec![])
                .await
                .unwrap();
            srv.store
                .upload_add("expired", rec(now - 2 * 86_400))
                .await
                .unwrap();
            srv.store
                .upload_add("fresh", rec(now - 3600))
                .await
                .unwrap();
        });
        touch("expired", false);
        touch("fresh", true);
        touch("orphan", true);
        touch("young-orphan", false);
        touch(&format!("{TEMP_PREFIX}stale"), true);
        assert_eq!(smol::block_on(sweep(&srv, now)), 3);
        let mut left: Vec<String> = std::fs::read_dir(&files)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["fresh", "young-orphan"]);
        smol::block_on(async {
            assert!(srv.store.upload("expired").await.unwrap().is_none());
            assert!(srv.store.upload("fresh").await.unwrap().is_some());
        });
        drop(srv);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn ids_are_url_safe_and_distinct() {
        let a = random_id(18).unwrap();
        let b = random_id(18).unwrap();
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }
}
