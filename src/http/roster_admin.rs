//! `POST /roster_admin/refresh` of Prosody's mod_http_roster_admin: the roster service
//! (`[roster] source = "http"`) posts a JSON array of usernames whose rosters changed; kith
//! fetches each again (`services::http_roster`), and online clients get roster pushes.
//!
//! Only peers on a loopback address may call it: the endpoint has no authentication (Prosody's
//! module relies on its HTTP server being internal), and kith's web listener usually faces the
//! internet. The roster service must therefore run on the same host and call
//! `https://127.0.0.1:PORT/roster_admin/refresh` (or `[::1]`).

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::body::{self, Body};
use super::Conn;
use crate::json::{self, Value};
use crate::services::http_roster;

pub const PATH: &str = "/roster_admin/refresh";

/// Largest request body: a JSON array of usernames.
const MAX_BODY: usize = 1 << 20;

pub async fn handle(conn: Arc<Conn>, req: Request<Incoming>) -> Response<Body> {
    let srv = &conn.web.srv;
    let Some(url) = srv.config.roster.http_url.clone() else {
        return body::status(StatusCode::NOT_FOUND);
    };
    if !conn.peer.ip().to_canonical().is_loopback() {
        log::warn!(
            "{}: roster refresh refused: {} is not a loopback address",
            conn.tag,
            conn.peer.ip()
        );
        return body::status(StatusCode::FORBIDDEN);
    }
    let bytes = match body::read_all(req, MAX_BODY).await {
        Ok(b) => b,
        Err(status) => return body::status(status),
    };
    let Some(usernames) = std::str::from_utf8(&bytes).ok().and_then(usernames) else {
        return body::response(
            StatusCode::BAD_REQUEST,
            "application/json",
            format!(
                "{{\"status\":\"error\",\"message\":{}}}",
                json::string("expected a JSON array of usernames")
            ),
        );
    };
    let (mut updated, mut errors) = (0u64, 0u64);
    for name in &usernames {
        let jid = match crate::accounts::account_jid(name, srv.domain()) {
            Ok(j) => j,
            Err(e) => {
                log::warn!("{}: roster refresh: {e}", conn.tag);
                errors += 1;
                continue;
            }
        };
        match srv.store.account(jid.as_str()).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                log::warn!("{}: roster refresh: no account {jid}", conn.tag);
                errors += 1;
                continue;
            }
            Err(e) => {
                log::error!(
                    "{}: roster refresh: cannot read account {jid}: {e}",
                    conn.tag
                );
                errors += 1;
                continue;
            }
        }
        match http_roster::refresh(srv, &url, &jid).await {
            Ok(_) => updated += 1,
            Err(e) => {
                log::warn!("{}: roster refresh: {jid}: {e}", conn.tag);
                errors += 1;
            }
        }
    }
    log::info!(
        "{}: roster refresh of {} users: {updated} updated, {errors} errors",
        conn.tag,
        usernames.len()
    );
    body::response(
        StatusCode::OK,
        "application/json",
        format!(
            "{{\"status\":\"ok\",\"message\":\"roster update complete\",\"updated\":{updated},\"errors\":{errors}}}"
        ),
    )
}

/// **Pure.** The usernames of a refresh body: a JSON array of strings, nothing else.
fn usernames(text: &str) -> Option<Vec<String>> {
    let Ok(Value::Array(items)) = json::parse(text) else {
        return None;
    };
    items
        .into_iter()
        .map(|v| match v {
            Value::String(s) => Some(s),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::usernames;

    #[test]
    fn refresh_bodies() {
        assert_eq!(
            usernames(r#"["alice", "bob"]"#),
            Some(vec!["alice".to_string(), "bob".to_string()])
        );
        assert_eq!(usernames("[]"), Some(vec![]));
        for bad in ["", "{}", "\"alice\"", "[1]", "[\"a\", null]", "[\"a\""] {
            assert_eq!(usernames(bad), None, "{bad}");
        }
    }
}
