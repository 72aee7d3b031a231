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
use super::form;
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
    let fields = form::parse(&bytes).ok_or(StatusCode::BAD_REQUEST)?;
    let get = |name: &str| form::get(&fields, name).unwrap_or_default().to_string();
    Ok((get("username"), get("password")))
}
