//! Rosters owned by an external HTTP service (`[roster] source = "http"`), in the protocol of
//! Prosody's mod_http_roster_admin: `GET http_url` with `%s` replaced by the URL-encoded
//! username answers `{"jid": {"name": "..."}, ...}`, and that set becomes the user's roster,
//! every item with subscription `both`. The service tells kith that rosters changed with
//! `POST /roster_admin/refresh` (`crate::http::roster_admin`).
//!
//! The roster is fetched on every roster get and on each refresh, and written through the store
//! like any roster change (with pushes and presence, as `crate::circles` does), so presence,
//! probes and roster versioning work unchanged. People cannot edit such rosters themselves:
//! roster sets (`services::roster`) and outbound subscription presence (`services::presence`)
//! are answered `not-allowed`, as Prosody does. When the service cannot be reached the stored
//! roster stays as it was.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use futures_lite::FutureExt as _;
use http_body_util::{BodyExt as _, Empty};
use hyper::{Request, StatusCode, Uri};

use crate::jid::BareJid;
use crate::json::{self, Value};
use crate::server::Server;
use crate::services::{presence, roster};
use crate::store::{RosterItem, Subscription};

/// How long one fetch (connect, request, whole body) may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest roster document accepted.
const MAX_BODY: usize = json::MAX_SIZE;

/// Contact bare JID → display name.
pub type Contacts = BTreeMap<String, Option<String>>;

/// Fetches `owner`'s roster from the service and makes the stored roster exactly that set.
/// Returns whether anything changed. On failure the stored roster is left alone.
pub async fn refresh(srv: &Server, url: &str, owner: &BareJid) -> Result<bool, String> {
    let username = owner.node().unwrap_or_default();
    let contacts = fetch(srv, url, username).await?;
    Ok(apply(srv, owner, &contacts).await)
}

/// The roster URL for `username`.
pub fn url_for(template: &str, username: &str) -> String {
    template.replace("%s", &crate::http::form::encode(username))
}

/// GETs the roster of `username` and parses it.
pub async fn fetch(srv: &Server, template: &str, username: &str) -> Result<Contacts, String> {
    let url = url_for(template, username);
    let body = get(srv, &url)
        .or(async {
            smol::Timer::after(TIMEOUT).await;
            Err(format!("no answer within {} s", TIMEOUT.as_secs()))
        })
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let text = std::str::from_utf8(&body).map_err(|_| format!("GET {url}: body is not UTF-8"))?;
    parse(text).map_err(|e| format!("GET {url}: {e}"))
}

/// A plain-HTTP GET over one HTTP/1.1 connection; the body of a 200 answer.
async fn get(srv: &Server, url: &str) -> Result<Bytes, String> {
    let uri: Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// URLs are supported".into());
    }
    let host = uri.host().ok_or("URL has no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let ips: Vec<IpAddr> = if host.eq_ignore_ascii_case("localhost") {
        // Names go through hickory, which does not read /etc/hosts; this one is fixed anyway.
        vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()]
    } else {
        let resolver = srv.s2s.resolver().ok_or("no DNS resolver")?;
        resolver
            .lookup_ips(host)
            .await
            .map_err(|e| format!("resolve: {e}"))?
    };
    let mut last = String::from("no address");
    let mut connected = None;
    for ip in ips {
        match smol::net::TcpStream::connect(SocketAddr::new(ip, port)).await {
            Ok(s) => {
                connected = Some(s);
                break;
            }
            Err(e) => last = format!("connect {ip}: {e}"),
        }
    }
    let stream = connected.ok_or(last)?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(smol_hyper::rt::FuturesIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
    // The connection future does the I/O; it ends when the response is read and the sender
    // dropped, or with the timeout that drops this whole fetch.
    let driver = smol::spawn(async move {
        let _ = conn.await;
    });
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or(host);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let req = Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::ACCEPT, "application/json")
        .header(hyper::header::USER_AGENT, "kith")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    if resp.status() != StatusCode::OK {
        return Err(format!("status {}", resp.status()));
    }
    let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    drop(sender);
    driver.cancel().await;
    Ok(body)
}

/// **Pure.** `{"jid": {"name": "..."}, ...}` → contacts. A member that is not a JID or whose
/// value is not an object makes the whole answer invalid: a half-understood roster would
/// silently drop contacts.
pub fn parse(text: &str) -> Result<Contacts, String> {
    let Value::Object(members) = json::parse(text)? else {
        return Err("expected a JSON object of JIDs".into());
    };
    let mut out = Contacts::new();
    for (jid, item) in members {
        let jid = BareJid::parse(&jid).map_err(|e| format!("'{jid}' is not a bare JID: {e}"))?;
        if !matches!(item, Value::Object(_)) {
            return Err(format!(
                "'{jid}': expected an object like {{\"name\": \"...\"}}"
            ));
        }
        let name = match item.get("name") {
            None | Some(Value::Null) => None,
            Some(Value::String(n)) if n.is_empty() => None,
            Some(Value::String(n)) => Some(n.clone()),
            Some(_) => return Err(format!("'{jid}': name is not a string")),
        };
        out.insert(jid.to_string(), name);
    }
    Ok(out)
}

/// **Pure.** What `apply` writes: the item each contact should have (given the stored one),
/// or `None` to remove a stored contact the service no longer lists. Unchanged items are left
/// out.
pub fn changes(
    stored: &[(String, RosterItem)],
    wanted: &Contacts,
) -> Vec<(String, Option<RosterItem>)> {
    let mut out = Vec::new();
    for (contact, _) in stored {
        if !wanted.contains_key(contact) {
            out.push((contact.clone(), None));
        }
    }
    for (contact, name) in wanted {
        let existing = stored.iter().find(|(c, _)| c == contact).map(|(_, i)| i);
        let mut item = existing.cloned().unwrap_or_else(roster::empty_item);
        item.name = name.clone();
        item.subscription = Subscription::Both;
        item.ask = false;
        if existing != Some(&item) {
            out.push((contact.clone(), Some(item)));
        }
    }
    out
}

/// Makes `owner`'s stored roster exactly `wanted`, with pushes and presence. Returns whether
/// anything changed.
pub async fn apply(srv: &Server, owner: &BareJid, wanted: &Contacts) -> bool {
    let o = owner.to_string();
    let _lock = srv.lock_account(owner).await;
    let stored = match srv.store.roster(&o).await {
        Ok((_, items)) => items,
        Err(e) => {
            log::error!("http roster: cannot read the roster of {o}: {e}");
            return false;
        }
    };
    let todo = changes(&stored, wanted);
    for (contact, item) in &todo {
        let Ok(contact_jid) = BareJid::parse(contact) else {
            continue;
        };
        let was_both = stored
            .iter()
            .any(|(c, i)| c == contact && i.subscription == Subscription::Both);
        if item.is_none() && was_both {
            presence::send_unavailable_to(srv, owner, &contact_jid);
        }
        match srv.store.set_roster_item(&o, contact, item.clone()).await {
            Ok(ver) => roster::push(srv, owner, contact, item.as_ref(), ver),
            Err(e) => {
                log::error!("http roster: cannot store roster item {o} -> {contact}: {e}");
                continue;
            }
        }
        if item.is_some() && !was_both {
            presence::send_current_to(srv, owner, &contact_jid);
            presence::send_current_to(srv, &contact_jid, owner);
        }
    }
    if !todo.is_empty() {
        log::info!("http roster: {o}: {} roster items changed", todo.len());
    }
    !todo.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(name: Option<&str>, sub: Subscription) -> RosterItem {
        RosterItem {
            name: name.map(str::to_string),
            subscription: sub,
            ..roster::empty_item()
        }
    }

    #[test]
    fn parses_the_service_answer() {
        let c = parse(r#"{"Bob@Example.org": {"name": "Bob"}, "carol@example.org": {}}"#).unwrap();
        assert_eq!(c.get("bob@example.org"), Some(&Some("Bob".to_string())));
        assert_eq!(c.get("carol@example.org"), Some(&None));
        assert_eq!(parse("{}").unwrap().len(), 0);
        for bad in [
            "[]",
            "{\"a@b\": 1}",
            "{\"a@b/r\": {}}",
            "{\"a@b\": {\"name\": 2}}",
            "nope",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn url_encodes_the_username() {
        assert_eq!(
            url_for("http://h:1/roster/%s?x=1", "a b&c"),
            "http://h:1/roster/a%20b%26c?x=1"
        );
    }

    #[test]
    fn changes_make_the_roster_exactly_the_set() {
        let stored = vec![
            ("a@x".to_string(), item(Some("A"), Subscription::Both)),
            ("b@x".to_string(), item(None, Subscription::To)),
            ("gone@x".to_string(), item(None, Subscription::Both)),
        ];
        let wanted: Contacts = [
            ("a@x".to_string(), Some("A".to_string())),
            ("b@x".to_string(), Some("B".to_string())),
            ("new@x".to_string(), None),
        ]
        .into();
        let got = changes(&stored, &wanted);
        assert_eq!(
            got,
            vec![
                ("gone@x".to_string(), None),
                ("b@x".to_string(), Some(item(Some("B"), Subscription::Both))),
                ("new@x".to_string(), Some(item(None, Subscription::Both))),
            ]
        );
        let after: Vec<(String, RosterItem)> = wanted
            .iter()
            .map(|(c, n)| (c.clone(), item(n.as_deref(), Subscription::Both)))
            .collect();
        assert!(changes(&after, &wanted).is_empty());
    }
}
