//! The web side of invitations and of open registration (Prosody's `register_web`):
//! `GET /invite/TOKEN` shows the invite page, `POST /invite/TOKEN` creates an account with it;
//! `GET /register` and `POST /register` do the same without a token when `[registration]
//! policy = "open"`. The account is made by `services::register::create_account`, the same
//! path as in-band registration (policy, throttle, username rules, invite effects). HTML comes
//! from `invites::page`; see there why the forms have no CSRF token.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use super::body::{self, Body};
// kith's page headers: no scripts or framing, no caching, and no referrer (the token is in
// the URL and must not leak to the app stores the page links to).
use super::html::response as html;
use super::Conn;
use crate::config::RegistrationPolicy;
use crate::invites::{self, page, qr};
use crate::services::register::{self, Via};

/// Form bodies are two short fields.
const MAX_FORM: usize = 4096;

/// `/invite/TOKEN` (GET shows, POST registers).
pub async fn invite(conn: Arc<Conn>, req: Request<Incoming>) -> Response<Body> {
    let srv = &conn.web.srv;
    let path = req.uri().path().to_string();
    let token = path
        .strip_prefix(super::router::INVITE_PREFIX)
        .unwrap_or_default()
        .trim_end_matches('/');
    let domain = srv.domain();
    if srv.config.registration.policy == RegistrationPolicy::Closed {
        return html(
            StatusCode::NOT_FOUND,
            page::gone(
                "Registration is closed",
                "This server does not accept new accounts.",
            ),
        );
    }
    let now = crate::time::now_unix();
    let invite = if invites::is_token(token) {
        match srv.store.invite(token).await {
            Ok(i) => i,
            Err(e) => {
                log::error!("{}: cannot read invite: {e}", conn.tag);
                return body::status(StatusCode::INTERNAL_SERVER_ERROR);
            }
        }
    } else {
        None
    };
    let Some(invite) = invite else {
        return html(
            StatusCode::NOT_FOUND,
            page::gone(
                "Invitation not found",
                "This invitation does not exist; it may have been revoked or mistyped.",
            ),
        );
    };
    if let Err(why) = invites::usable(&invite, now) {
        let text = match why {
            invites::Unusable::Expired => "This invitation has expired.",
            invites::Unusable::UsedUp => "This invitation has already been used.",
        };
        return html(
            StatusCode::GONE,
            page::gone("Invitation no longer valid", text),
        );
    }
    let action = format!("{}{token}", super::router::INVITE_PREFIX);
    if req.method() == Method::POST {
        let peer = conn.peer.ip();
        let (username, password) = match read_form(req).await {
            Ok(f) => f,
            Err(status) => return body::status(status),
        };
        let created =
            register::create_account(srv, &username, &password, Some(token), peer, Via::Web).await;
        return match created {
            Ok(jid) => registered(jid.as_str()),
            Err(e) => {
                log::info!("{}: web registration refused: {e:?}", conn.tag);
                let keep = invite.username.as_deref().or(Some(username.as_str()));
                html(
                    StatusCode::BAD_REQUEST,
                    page::invite_retry(domain, &action, keep, &e.message()),
                )
            }
        };
    }
    let inviter = Some(invite.created_by.as_str()).filter(|c| !c.is_empty());
    let uri = invites::xmpp_uri(domain, inviter, token);
    let svg = qr::svg(&uri).unwrap_or_default();
    html(
        StatusCode::OK,
        page::invite(&page::InvitePage {
            domain,
            inviter,
            uri: &uri,
            qr_svg: &svg,
            action: &action,
            username: invite.username.as_deref(),
        }),
    )
}

/// `/register`: open registration in the browser.
pub async fn open(conn: Arc<Conn>, req: Request<Incoming>) -> Response<Body> {
    let srv = &conn.web.srv;
    let domain = srv.domain();
    if srv.config.registration.policy != RegistrationPolicy::Open {
        return html(
            StatusCode::NOT_FOUND,
            page::gone(
                "No open registration",
                "This server creates accounts by invitation only.",
            ),
        );
    }
    let action = super::router::REGISTER_PATH;
    if req.method() != Method::POST {
        return html(
            StatusCode::OK,
            page::open_register(domain, action, None, None),
        );
    }
    let (username, password) = match read_form(req).await {
        Ok(f) => f,
        Err(status) => return body::status(status),
    };
    let created =
        register::create_account(srv, &username, &password, None, conn.peer.ip(), Via::Web).await;
    match created {
        Ok(jid) => registered(jid.as_str()),
        Err(e) => {
            log::info!("{}: web registration refused: {e:?}", conn.tag);
            let status = if e == register::RegError::Throttled {
                StatusCode::TOO_MANY_REQUESTS
            } else {
                StatusCode::BAD_REQUEST
            };
            html(
                status,
                page::open_register(domain, action, Some(&username), Some(&e.message())),
            )
        }
    }
}

fn registered(jid: &str) -> Response<Body> {
    let uri = format!("xmpp:{jid}");
    let svg = qr::svg(&uri).unwrap_or_default();
    html(StatusCode::OK, page::registered(jid, &uri, &svg))
}

async fn read_form(req: Request<Incoming>) -> Result<(String, String), StatusCode> {
    let bytes = body::read_all(req, MAX_FORM).await?;
    let fields = parse_form(&bytes).ok_or(StatusCode::BAD_REQUEST)?;
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    Ok((
        get("username").unwrap_or_default(),
        get("password").unwrap_or_default(),
    ))
}

/// `application/x-www-form-urlencoded` (WHATWG URL §5.1): `&`-separated `name=value`, `+`
/// for space, `%XX` escapes, UTF-8. `None` when the result is not UTF-8.
pub fn parse_form(body: &[u8]) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        out.push((decode(k)?, decode(v)?));
    }
    Some(out)
}

fn decode(s: &[u8]) -> Option<String> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                s.get(i + 1).and_then(|&b| hex(b)),
                s.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                // A stray `%` stays itself, as browsers' parsers do.
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding() {
        let f = parse_form(b"username=al+ice%40x&password=p%C3%A4ss%&empty=&flag").unwrap();
        assert_eq!(
            f,
            [
                ("username".to_string(), "al ice@x".to_string()),
                ("password".to_string(), "päss%".to_string()),
                ("empty".to_string(), String::new()),
                ("flag".to_string(), String::new()),
            ]
        );
        assert!(parse_form(b"a=%FF").is_none());
        assert_eq!(parse_form(b"").unwrap(), []);
        assert_eq!(
            parse_form(b"a=%4").unwrap(),
            [("a".to_string(), "%4".to_string())]
        );
    }
}
