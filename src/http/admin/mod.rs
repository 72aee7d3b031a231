//! The web admin at `https://DOMAIN/admin` (Prosody's `admin_web`, Snikket's portal):
//! server-rendered pages for the people who run the server from a phone. An admin signs in
//! with their XMPP account (the password is checked against the stored SCRAM keys, never
//! kept); the browser then holds an opaque session cookie (`Secure; HttpOnly;
//! SameSite=Strict`), and every form carries the session's CSRF token, checked before any
//! change. Failed sign-ins are throttled per address (`auth`).
//!
//! `route` is the one table of pages (**pure**); `handle` authenticates and dispatches;
//! each page is a function of the server state rendering through `http::html`.

pub mod auth;

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::body::Body;
use super::html::{self, esc};
use super::{form, Conn};
use crate::accounts::{self, AccountError, Seen};
use crate::jid::BareJid;
use crate::server::Server;
use crate::time::now_unix;
use auth::Auth;

pub const PREFIX: &str = "/admin";
const SESSION_COOKIE: &str = "kith_admin";
/// The sign-in form's own CSRF token (double submit: cookie and field must match), so a
/// foreign page cannot sign a browser in to an account of its choosing.
const LOGIN_COOKIE: &str = "kith_admin_login";
/// Forms are a few fields; an announcement is the largest.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// The web admin's state, one per server.
#[derive(Default)]
pub struct State {
    pub auth: Auth,
}

/// What a request under `/admin` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page {
    Home,
    Login,
    SignIn,
    SignOut,
    Users,
    UserAdd,
    UserPassword,
    UserDelete,
    UserAdmin,
    Sessions,
    Invites,
    InviteShow,
    InviteCreate,
    InviteRevoke,
    Announce,
    AnnounceSend,
    Uploads,
    Certs,
    Check,
    NotFound,
    MethodNotAllowed,
}

impl Page {
    /// Pages that change something: POST only, CSRF-checked.
    fn is_action(self) -> bool {
        matches!(
            self,
            Page::SignIn
                | Page::SignOut
                | Page::UserAdd
                | Page::UserPassword
                | Page::UserDelete
                | Page::UserAdmin
                | Page::InviteCreate
                | Page::InviteRevoke
                | Page::AnnounceSend
        )
    }
}

/// The table of pages: GET shows, POST acts.
pub fn route(method: &Method, path: &str) -> Page {
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return Page::NotFound;
    };
    let get = method == Method::GET || method == Method::HEAD;
    let post = method == Method::POST;
    match (rest, get, post) {
        ("" | "/", true, _) => Page::Home,
        ("/login", true, _) => Page::Login,
        ("/login", _, true) => Page::SignIn,
        ("/logout", _, true) => Page::SignOut,
        ("/users", true, _) => Page::Users,
        ("/users/add", _, true) => Page::UserAdd,
        ("/users/password", _, true) => Page::UserPassword,
        ("/users/delete", _, true) => Page::UserDelete,
        ("/users/admin", _, true) => Page::UserAdmin,
        ("/sessions", true, _) => Page::Sessions,
        ("/invites", true, _) => Page::Invites,
        ("/invites/create", _, true) => Page::InviteCreate,
        ("/invites/revoke", _, true) => Page::InviteRevoke,
        (r, true, _)
            if r.strip_prefix("/invites/")
                .is_some_and(crate::invites::is_token) =>
        {
            Page::InviteShow
        }
        ("/announce", true, _) => Page::Announce,
        ("/announce", _, true) => Page::AnnounceSend,
        ("/uploads", true, _) => Page::Uploads,
        ("/certs", true, _) => Page::Certs,
        ("/check", true, _) => Page::Check,
        (
            "" | "/" | "/login" | "/logout" | "/users" | "/users/add" | "/users/password"
            | "/users/delete" | "/users/admin" | "/sessions" | "/announce" | "/uploads" | "/certs"
            | "/check" | "/invites" | "/invites/create" | "/invites/revoke",
            _,
            _,
        ) => Page::MethodNotAllowed,
        _ => Page::NotFound,
    }
}

const NAV: &[(&str, &str)] = &[
    ("/admin/users", "Users"),
    ("/admin/invites", "Invites"),
    ("/admin/sessions", "Online"),
    ("/admin/announce", "Announce"),
    ("/admin/uploads", "Uploads"),
    ("/admin/certs", "Certificate"),
    ("/admin/check", "Check"),
];

/// Answers a request under `/admin`.
pub async fn handle(conn: Arc<Conn>, req: Request<Incoming>) -> Response<Body> {
    let page = route(req.method(), req.uri().path());
    let req_path = req.uri().path().to_string();
    let srv = conn.web.srv.clone();
    let state = &conn.web.admin;
    let cookies = req
        .headers()
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    match page {
        Page::NotFound => return html::response(StatusCode::NOT_FOUND, not_found()),
        Page::MethodNotAllowed => return super::body::status(StatusCode::METHOD_NOT_ALLOWED),
        Page::Login => return login_page(&srv, None, StatusCode::OK),
        Page::SignIn => return sign_in(&conn, &cookies, req).await,
        _ => {}
    }
    let now = now_unix();
    let token = form::cookie(&cookies, SESSION_COOKIE).unwrap_or_default();
    let Some(session) = state.auth.session(token, now) else {
        return html::see_other("/admin/login");
    };
    // Rights are checked on every request: an admin removed from the list (or whose account
    // was deleted) is out at once, not when the cookie expires.
    if !srv.is_admin(&session.jid).await {
        state.auth.sign_out_everywhere(&session.jid);
        log::warn!(
            "web admin: {} is no longer an admin; signed out ({})",
            session.jid,
            conn.peer.ip()
        );
        return html::see_other("/admin/login");
    }
    if page.is_action() {
        let fields = match read_form(req).await {
            Ok(f) => f,
            Err(status) => return super::body::status(status),
        };
        let sent = form::get(&fields, "csrf").unwrap_or_default();
        if !auth::same_secret(sent, &session.csrf) {
            log::warn!(
                "web admin: {} {:?} refused: missing or wrong CSRF token ({})",
                session.jid,
                page,
                conn.peer.ip()
            );
            return html::response(
                StatusCode::FORBIDDEN,
                html::page(
                    "Refused",
                    NAV,
                    "<div class=\"msg err\">This form has expired or did not come from this \
                     site. Go back, reload the page and try again.</div>",
                ),
            );
        }
        let ctx = Ctx {
            srv: &srv,
            conn: &conn,
            me: &session.jid,
            csrf: &session.csrf,
            token,
        };
        return act(&ctx, page, &fields).await;
    }
    let ctx = Ctx {
        srv: &srv,
        conn: &conn,
        me: &session.jid,
        csrf: &session.csrf,
        token,
    };
    let flash = state.auth.take_flash(token);
    let body = match page {
        Page::Home => return html::see_other("/admin/users"),
        Page::Users => users_page(&ctx).await,
        Page::Sessions => sessions_page(&ctx),
        Page::Invites => invites_page(&ctx).await,
        Page::InviteShow => {
            let token = req_path.trim_start_matches("/admin/invites/");
            invite_page(&ctx, token).await
        }
        Page::Announce => announce_page(&ctx),
        Page::Uploads => uploads_page(&ctx).await,
        Page::Certs => findings_page(&ctx, &[crate::check::Part::Certs]).await,
        Page::Check => findings_page(&ctx, &crate::check::Part::ALL).await,
        _ => return super::body::status(StatusCode::NOT_FOUND),
    };
    let (title, content) = body;
    let flash = flash
        .map(|(ok, text)| {
            format!(
                "<div class=\"msg{}\">{}</div>",
                if ok { "" } else { " err" },
                esc(&text)
            )
        })
        .unwrap_or_default();
    let signed_in = format!(
        "<form class=\"inline\" method=\"post\" action=\"/admin/logout\">{1}\
         <span class=\"muted\">Signed in as {0}</span><button>Sign out</button></form>",
        esc(ctx.me.as_ref()),
        csrf_field(ctx.csrf)
    );
    html::response(
        StatusCode::OK,
        html::page(
            &format!("{title} · {}", srv.domain()),
            NAV,
            &format!("{flash}{content}{signed_in}"),
        ),
    )
}

/// What every page handler gets.
struct Ctx<'a> {
    srv: &'a Arc<Server>,
    conn: &'a Conn,
    me: &'a BareJid,
    csrf: &'a str,
    /// The session cookie, for flash messages.
    token: &'a str,
}

fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    )
}

fn not_found() -> String {
    html::page("Not found", &[], "<p>There is no such page.</p>")
}

async fn read_form(req: Request<Incoming>) -> Result<Vec<(String, String)>, StatusCode> {
    let form_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form_type {
        return Err(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    let body = super::body::read_all(req, MAX_FORM_BYTES).await?;
    form::parse(&body).ok_or(StatusCode::BAD_REQUEST)
}

// --- signing in -----------------------------------------------------------------------------

fn login_page(srv: &Server, error: Option<&str>, status: StatusCode) -> Response<Body> {
    let token = auth::random_token();
    let error = error
        .map(|e| format!("<div class=\"msg err\">{}</div>", esc(e)))
        .unwrap_or_default();
    let content = format!(
        "<div class=\"card\"><h1>Sign in</h1>{error}\
         <form method=\"post\" action=\"/admin/login\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{t}\">\
         <label for=\"jid\">Your address</label>\
         <input id=\"jid\" name=\"jid\" autocomplete=\"username\" required \
          placeholder=\"you@{d}\" size=\"30\">\
         <label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" \
          autocomplete=\"current-password\" required size=\"30\">\
         <p><button>Sign in</button></p></form>\
         <p class=\"muted\">For the admins of {d}. Use the same address and password as \
         in your chat app.</p></div>",
        t = esc(&token),
        d = esc(srv.domain()),
    );
    let mut r = html::response(status, html::page("kith admin", &[], &content));
    set_cookie(&mut r, LOGIN_COOKIE, &token, 15 * 60);
    r
}

async fn sign_in(conn: &Conn, cookies: &str, req: Request<Incoming>) -> Response<Body> {
    let srv = &conn.web.srv;
    let auth = &conn.web.admin.auth;
    let ip = conn.peer.ip();
    let now = now_unix();
    let fields = match read_form(req).await {
        Ok(f) => f,
        Err(status) => return super::body::status(status),
    };
    let expected = form::cookie(cookies, LOGIN_COOKIE).unwrap_or_default();
    if !auth::same_secret(form::get(&fields, "csrf").unwrap_or_default(), expected) {
        return login_page(
            srv,
            Some("The sign-in form expired. Please try again."),
            StatusCode::FORBIDDEN,
        );
    }
    if let Err(wait) = auth.may_try(ip, now) {
        log::warn!("web admin: sign-in from {ip} refused: too many failures");
        let minutes = wait.div_ceil(60);
        return login_page(
            srv,
            Some(&format!(
                "Too many failed attempts. Try again in {minutes} minute{}.",
                if minutes == 1 { "" } else { "s" }
            )),
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let typed = form::get(&fields, "jid").unwrap_or_default().trim();
    let password = form::get(&fields, "password").unwrap_or_default();
    let jid = accounts::account_jid(typed, srv.domain()).ok();
    let ok = match &jid {
        Some(jid) if !password.is_empty() => {
            accounts::check_password(&srv.store, jid, password).await
        }
        _ => false,
    };
    let Some(jid) = jid.filter(|_| ok) else {
        auth.failed(ip, now);
        log::warn!("web admin: failed sign-in from {ip}");
        return login_page(
            srv,
            Some("Wrong address or password."),
            StatusCode::UNAUTHORIZED,
        );
    };
    if !srv.is_admin(&jid).await {
        auth.failed(ip, now);
        log::warn!("web admin: {jid} is not an admin; sign-in from {ip} refused");
        return login_page(
            srv,
            Some("This account is not an admin of this server."),
            StatusCode::FORBIDDEN,
        );
    }
    auth.succeeded(ip);
    log::info!("web admin: {jid} signed in from {ip}");
    let token = auth.sign_in(jid, now);
    let mut r = html::see_other("/admin/users");
    set_cookie(&mut r, SESSION_COOKIE, &token, auth::MAX_SECS);
    set_cookie(&mut r, LOGIN_COOKIE, "", 0);
    r
}

fn set_cookie(r: &mut Response<Body>, name: &str, value: &str, max_age: u64) {
    let c = format!(
        "{name}={value}; Path={PREFIX}; Max-Age={max_age}; Secure; HttpOnly; SameSite=Strict"
    );
    if let Ok(v) = HeaderValue::from_str(&c) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

// --- actions ----------------------------------------------------------------------------

async fn act(ctx: &Ctx<'_>, page: Page, fields: &[(String, String)]) -> Response<Body> {
    let auth = &ctx.conn.web.admin.auth;
    let field = |n: &str| form::get(fields, n).unwrap_or_default().trim().to_string();
    let target = || accounts::account_jid(&field("jid"), ctx.srv.domain());
    let (back, result): (&str, Result<String, String>) = match page {
        Page::SignOut => {
            auth.sign_out(ctx.token);
            log::info!("web admin: {} signed out", ctx.me);
            let mut r = html::see_other("/admin/login");
            set_cookie(&mut r, SESSION_COOKIE, "", 0);
            return r;
        }
        Page::UserAdd => ("/admin/users", add_user(ctx, target(), fields).await),
        Page::UserPassword => (
            "/admin/users",
            match target() {
                Ok(jid) => {
                    let password = form::get(fields, "password").unwrap_or_default();
                    accounts::passwd(&ctx.srv.store, &jid, password)
                        .await
                        .map(|()| {
                            log::info!("web admin: {} set a new password for {jid}", ctx.me);
                            format!("New password set for {jid}.")
                        })
                        .map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            },
        ),
        Page::UserDelete => ("/admin/users", delete_user(ctx, target(), fields).await),
        Page::UserAdmin => ("/admin/users", set_admin(ctx, target(), fields).await),
        Page::InviteCreate => match create_invite(ctx, fields).await {
            Ok(token) => return html::see_other(&format!("/admin/invites/{token}")),
            Err(e) => ("/admin/invites", Err(e)),
        },
        Page::InviteRevoke => {
            let token = field("token");
            let result = match ctx.srv.store.invite_remove(&token).await {
                Ok(true) => {
                    log::info!("web admin: {} revoked an invite", ctx.me);
                    Ok("Invite revoked: its link no longer works.".to_string())
                }
                Ok(false) => Err("There is no such invite (used up or expired?).".to_string()),
                Err(e) => {
                    log::error!("web admin: cannot revoke an invite: {e}");
                    Err("Cannot revoke the invite: the store failed.".to_string())
                }
            };
            ("/admin/invites", result)
        }
        Page::AnnounceSend => {
            let text = field("text");
            if !ctx.srv.config.modules.announce {
                (
                    "/admin/announce",
                    Err("Announcements are switched off ([modules] announce = false).".into()),
                )
            } else if text.is_empty() {
                ("/admin/announce", Err("The announcement is empty.".into()))
            } else {
                let n = crate::services::announce::announce(ctx.srv, None, &text);
                log::info!(
                    "web admin: {} sent an announcement to {n} online sessions",
                    ctx.me
                );
                (
                    "/admin/announce",
                    Ok(format!(
                        "Sent to {n} online session{}.",
                        if n == 1 { "" } else { "s" }
                    )),
                )
            }
        }
        _ => return super::body::status(StatusCode::NOT_FOUND),
    };
    match result {
        Ok(text) => auth.flash(ctx.token, true, text),
        Err(text) => auth.flash(ctx.token, false, text),
    }
    html::see_other(back)
}

async fn add_user(
    ctx: &Ctx<'_>,
    jid: Result<BareJid, AccountError>,
    fields: &[(String, String)],
) -> Result<String, String> {
    let jid = jid.map_err(|e| e.to_string())?;
    let password = form::get(fields, "password").unwrap_or_default();
    let reuse = accounts::Reuse::configured(&ctx.srv.config.registration);
    accounts::add(&ctx.srv.store, &jid, password, reuse)
        .await
        .map_err(|e| e.to_string())?;
    log::info!("web admin: {} created account {jid}", ctx.me);
    Ok(format!("Account {jid} created."))
}

async fn delete_user(
    ctx: &Ctx<'_>,
    jid: Result<BareJid, AccountError>,
    fields: &[(String, String)],
) -> Result<String, String> {
    let jid = jid.map_err(|e| e.to_string())?;
    if form::get(fields, "confirm") != Some(jid.as_ref()) {
        return Err(format!(
            "Not deleted: type {jid} in the box to confirm the deletion."
        ));
    }
    if &jid == ctx.me {
        return Err("You cannot delete your own account here.".into());
    }
    accounts::delete(&ctx.srv.store, &jid)
        .await
        .map_err(|e| e.to_string())?;
    ctx.srv
        .kick_account(&jid, crate::stanza::StreamError::NotAuthorized);
    ctx.conn.web.admin.auth.sign_out_everywhere(&jid);
    log::info!("web admin: {} deleted account {jid}", ctx.me);
    Ok(format!("Account {jid} deleted."))
}

async fn set_admin(
    ctx: &Ctx<'_>,
    jid: Result<BareJid, AccountError>,
    fields: &[(String, String)],
) -> Result<String, String> {
    let jid = jid.map_err(|e| e.to_string())?;
    let on = form::get(fields, "admin") == Some("1");
    if !on && ctx.srv.config.admins.iter().any(|a| a == jid.as_ref()) {
        return Err(format!(
            "{jid} is an admin through the config file (admins = [...]); remove it there."
        ));
    }
    if !on && &jid == ctx.me {
        return Err("You cannot remove your own admin rights here.".into());
    }
    accounts::set_admin(&ctx.srv.store, &jid, on)
        .await
        .map_err(|e| e.to_string())?;
    if !on {
        ctx.conn.web.admin.auth.sign_out_everywhere(&jid);
    }
    log::info!(
        "web admin: {} {} admin rights {} {jid}",
        ctx.me,
        if on { "granted" } else { "withdrew" },
        if on { "to" } else { "from" }
    );
    Ok(if on {
        format!("{jid} is now an admin.")
    } else {
        format!("{jid} is no longer an admin.")
    })
}

// --- pages ------------------------------------------------------------------------------

fn ago(now: u64, then: u64) -> String {
    let d = now.saturating_sub(then);
    match d {
        0..=59 => "just now".into(),
        60..=3599 => format!("{} min ago", d / 60),
        3600..=86_399 => format!("{} h ago", d / 3600),
        86_400..=172_799 => "1 day ago".into(),
        _ => format!("{} days ago", d / 86_400),
    }
}

async fn users_page(ctx: &Ctx<'_>) -> (&'static str, String) {
    let srv = ctx.srv;
    let now = now_unix();
    let users = match accounts::list(&srv.store).await {
        Ok(u) => u,
        Err(e) => {
            log::error!("web admin: cannot list accounts: {e}");
            return (
                "Users",
                "<div class=\"msg err\">Cannot read the accounts.</div>".into(),
            );
        }
    };
    let csrf = csrf_field(ctx.csrf);
    let mut rows = String::new();
    for u in &users {
        let Ok(jid) = BareJid::parse(u) else { continue };
        let account = srv.store.account(u).await.ok().flatten();
        let by_config = srv.config.admins.iter().any(|a| a == u);
        let by_flag = account
            .as_ref()
            .is_some_and(|a| a.flags & accounts::FLAG_ADMIN != 0);
        let online = srv.sessions.is_online(&jid);
        let seen = match accounts::seen(&srv.store, u, online).await {
            Ok(Seen::OnlineNow) => "<span class=\"ok\">online now</span>".to_string(),
            Ok(Seen::LastLogout(t)) => esc(&ago(now, t)),
            Ok(Seen::Never) => "never".into(),
            Err(_) => "unknown (storage error)".into(),
        };
        let role = match (by_config, by_flag) {
            (true, _) => "admin (config)",
            (false, true) => "admin",
            _ => "",
        };
        let e = esc(u);
        let admin_toggle = if by_config {
            String::new()
        } else {
            format!(
                "<form class=\"inline\" method=\"post\" action=\"/admin/users/admin\">{csrf}\
                 <input type=\"hidden\" name=\"jid\" value=\"{e}\">\
                 <input type=\"hidden\" name=\"admin\" value=\"{v}\">\
                 <button>{label}</button></form>",
                v = if by_flag { "0" } else { "1" },
                label = if by_flag {
                    "Remove admin"
                } else {
                    "Make admin"
                },
            )
        };
        rows.push_str(&format!(
            "<tr><td>{e}<br><span class=\"muted\">{role}</span></td><td>{seen}</td><td>\
             <details><summary>Manage</summary>\
             <form class=\"inline\" method=\"post\" action=\"/admin/users/password\">{csrf}\
             <input type=\"hidden\" name=\"jid\" value=\"{e}\">\
             <input name=\"password\" type=\"password\" autocomplete=\"new-password\" \
              placeholder=\"new password\" required aria-label=\"new password for {e}\">\
             <button>Set password</button></form>\
             {admin_toggle}\
             <form class=\"inline\" method=\"post\" action=\"/admin/users/delete\">{csrf}\
             <input type=\"hidden\" name=\"jid\" value=\"{e}\">\
             <input name=\"confirm\" placeholder=\"type {e} to confirm\" required \
              aria-label=\"confirm deletion of {e}\">\
             <button class=\"danger\">Delete</button></form></details></td></tr>",
        ));
    }
    let content = format!(
        "<h1>Users ({n})</h1><div class=\"scroll\"><table><tr><th>Account</th>\
         <th>Last seen</th><th></th></tr>{rows}</table></div>\
         <h2>Add a user</h2><form class=\"card\" method=\"post\" action=\"/admin/users/add\">\
         {csrf}<label for=\"new-jid\">Address</label>\
         <input id=\"new-jid\" name=\"jid\" required placeholder=\"name@{d}\" size=\"30\">\
         <label for=\"new-password\">Password</label>\
         <input id=\"new-password\" name=\"password\" type=\"password\" \
          autocomplete=\"new-password\" required size=\"30\">\
         <p><button>Add user</button></p></form>",
        n = users.len(),
        d = esc(srv.domain()),
    );
    ("Users", content)
}

fn client_name(presence: Option<&crate::xml::Element>) -> String {
    presence
        .and_then(crate::services::caps::caps_of)
        .map(|(node, _, _)| node.to_string())
        .unwrap_or_default()
}

fn sessions_page(ctx: &Ctx<'_>) -> (&'static str, String) {
    let now = now_unix();
    let mut all = ctx.srv.sessions.all();
    all.sort_by_key(|r| r.jid.to_string());
    let mut rows = String::new();
    for r in &all {
        let origin = ctx.srv.origins.get(r.conn);
        let (ip, since) = match origin {
            Some(o) => (o.peer.ip().to_string(), ago(now, o.since)),
            None => ("(waiting to resume)".into(), String::new()),
        };
        let state = if r.asleep {
            "asleep"
        } else if r.available {
            "available"
        } else {
            "connected"
        };
        rows.push_str(&format!(
            "<tr><td>{}<br><span class=\"muted\">{}</span></td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td></tr>",
            esc(r.jid.to_bare().as_ref()),
            esc(r.jid.resource()),
            esc(&client_name(r.presence.as_ref())),
            esc(&ip),
            esc(&since),
            state,
        ));
    }
    let content = format!(
        "<h1>Online now ({n})</h1><div class=\"scroll\"><table><tr><th>Account / resource\
         </th><th>Client</th><th>Address</th><th>Since</th><th>State</th></tr>{rows}\
         </table></div>",
        n = all.len()
    );
    ("Online", content)
}

/// Makes an invite from the form: uses, validity, admin, circle, and whether the admin
/// becomes the new person's contact. Returns its token.
async fn create_invite(ctx: &Ctx<'_>, fields: &[(String, String)]) -> Result<String, String> {
    let get = |n: &str| form::get(fields, n).unwrap_or_default().trim();
    let uses: u32 = get("uses")
        .parse()
        .ok()
        .filter(|n| (1..=100).contains(n))
        .ok_or("Uses: a number from 1 to 100.")?;
    let expires =
        crate::invites::parse_expiry(get("expires")).map_err(|e| format!("Valid for: {e}"))?;
    let circle = get("circle");
    if circle.chars().any(|c| c.is_control() || c == ',') || circle.len() > 64 {
        return Err("Circle: a short name without commas.".into());
    }
    let opts = crate::invites::Options {
        created_by: (get("contact") == "1").then(|| ctx.me.to_string()),
        uses,
        expires: Some(expires),
        admin: get("admin") == "1",
        groups: if circle.is_empty() {
            vec![]
        } else {
            vec![circle.to_string()]
        },
        username: None,
    };
    let admin = opts.admin;
    let (token, _) = crate::invites::create(
        &ctx.srv.store,
        ctx.srv.config.invites.expires,
        opts,
        now_unix(),
    )
    .await?;
    log::info!(
        "web admin: {} created an invite ({uses} use(s){})",
        ctx.me,
        if admin { ", admin" } else { "" }
    );
    Ok(token)
}

async fn invites_page(ctx: &Ctx<'_>) -> (&'static str, String) {
    let now = now_unix();
    let csrf = csrf_field(ctx.csrf);
    let list = match crate::invites::list(&ctx.srv.store, now).await {
        Ok(l) => l,
        Err(e) => {
            log::error!("web admin: cannot list invites: {e}");
            return (
                "Invites",
                "<div class=\"msg err\">Cannot read the invites.</div>".into(),
            );
        }
    };
    let mut rows = String::new();
    for (token, i) in &list {
        let mut what = vec![if i.admin { "admin account" } else { "account" }.to_string()];
        if !i.created_by.is_empty() {
            what.push(format!("contact of {}", i.created_by));
        }
        if !i.groups.is_empty() {
            what.push(format!("circle {}", i.groups.join(", ")));
        }
        if let Some(u) = &i.username {
            what.push(format!("username {u}"));
        }
        let t = esc(token);
        rows.push_str(&format!(
            "<tr><td><a href=\"/admin/invites/{t}\">{short}…</a></td><td>{what}</td>\
             <td>{uses}</td><td>{left}</td><td><form class=\"inline\" method=\"post\" \
             action=\"/admin/invites/revoke\">{csrf}<input type=\"hidden\" name=\"token\" \
             value=\"{t}\"><button class=\"danger\">Revoke</button></form></td></tr>",
            short = esc(&token.chars().take(8).collect::<String>()),
            what = esc(&what.join("; ")),
            uses = i.uses_left,
            left = esc(&until(now, i.expires_unix)),
        ));
    }
    let content = format!(
        "<h1>Invites</h1><form class=\"card\" method=\"post\" action=\"/admin/invites/create\">\
         {csrf}<h2>New invite</h2>\
         <label for=\"uses\">How many people may use it</label>\
         <input id=\"uses\" name=\"uses\" type=\"number\" min=\"1\" max=\"100\" value=\"1\">\
         <label for=\"expires\">Valid for</label>\
         <select id=\"expires\" name=\"expires\"><option value=\"1d\">1 day</option>\
         <option value=\"7d\" selected>7 days</option><option value=\"30d\">30 days</option>\
         </select>\
         <label for=\"circle\">Circle (optional: they see its members as contacts)</label>\
         <input id=\"circle\" name=\"circle\" placeholder=\"family\" maxlength=\"64\">\
         <label><input type=\"checkbox\" name=\"contact\" value=\"1\" checked> \
         They become my contact</label>\
         <label><input type=\"checkbox\" name=\"admin\" value=\"1\"> They become an admin\
         </label><p><button>Create invite</button></p></form>\
         <h2>Open invites ({n})</h2><div class=\"scroll\"><table><tr><th>Invite</th>\
         <th>Makes</th><th>Uses left</th><th>Expires</th><th></th></tr>{rows}</table></div>",
        n = list.len()
    );
    ("Invites", content)
}

async fn invite_page(ctx: &Ctx<'_>, token: &str) -> (&'static str, String) {
    let invite = ctx.srv.store.invite(token).await.ok().flatten();
    let Some(invite) = invite.filter(|i| crate::invites::usable(i, now_unix()).is_ok()) else {
        return (
            "Invite",
            "<div class=\"msg err\">This invite does not exist any more (used up, expired or \
             revoked).</div><p><a href=\"/admin/invites\">All invites</a></p>"
                .into(),
        );
    };
    let config = &ctx.srv.config;
    let link = crate::invites::link(&crate::invites::web_base(config), token);
    let inviter = (!invite.created_by.is_empty()).then_some(invite.created_by.as_str());
    let uri = crate::invites::xmpp_uri(ctx.srv.domain(), inviter, token);
    let qr = crate::invites::qr::svg(&link).unwrap_or_default();
    let content = format!(
        "<h1>Invite</h1><div class=\"card\"><p>Send this link to the person you invite, or \
         let them scan the code with their phone's camera. It opens a page that helps them \
         install an app and create their account.</p><p><a id=\"invite-link\" \
         href=\"{l}\">{l}</a></p><div style=\"max-width:16em\">{qr}</div>\
         <p class=\"muted\">Apps that support invitations can also open <code>{u}</code>. \
         {uses} use(s) left, expires {left}.</p></div>\
         <p><a href=\"/admin/invites\">All invites</a></p>",
        l = esc(&link),
        u = esc(&uri),
        uses = invite.uses_left,
        left = esc(&until(now_unix(), invite.expires_unix)),
    );
    ("Invite", content)
}

/// "in 3 days" style, for expiry times.
fn until(now: u64, then: u64) -> String {
    let d = then.saturating_sub(now);
    match d {
        0..=3599 => format!("in {} min", d.div_ceil(60).max(1)),
        3600..=86_399 => format!("in {} h", d / 3600),
        86_400..=172_799 => "in 1 day".into(),
        _ => format!("in {} days", d / 86_400),
    }
}

fn announce_page(ctx: &Ctx<'_>) -> (&'static str, String) {
    let content = format!(
        "<h1>Announce</h1><form class=\"card\" method=\"post\" action=\"/admin/announce\">{}\
         <label for=\"text\">A message to everyone online now ({} sessions)</label>\
         <textarea id=\"text\" name=\"text\" rows=\"5\" cols=\"40\" required \
          maxlength=\"4000\"></textarea><p><button>Send</button></p></form>",
        csrf_field(ctx.csrf),
        ctx.srv.sessions.count()
    );
    ("Announce", content)
}

fn human_size(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

async fn uploads_page(ctx: &Ctx<'_>) -> (&'static str, String) {
    let srv = ctx.srv;
    let quota = srv.config.upload.quota.max(1);
    let users = accounts::list(&srv.store).await.unwrap_or_default();
    let mut usage = Vec::new();
    for u in users {
        let used = srv.store.upload_usage(&u).await.unwrap_or(0);
        usage.push((u, used));
    }
    usage.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let total: u64 = usage.iter().map(|(_, n)| n).sum();
    let mut rows = String::new();
    for (u, used) in &usage {
        let pct = (used.saturating_mul(100) / quota).min(100);
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td><div class=\"bar\" title=\"{pct}% of the quota\">\
             <span style=\"width:{pct}%\"></span></div></td></tr>",
            esc(u),
            human_size(*used),
        ));
    }
    let state = if srv.config.upload.enabled {
        format!("quota {} per user", human_size(quota))
    } else {
        "upload is switched off ([upload] enabled = false)".into()
    };
    let content = format!(
        "<h1>Uploads</h1><p class=\"muted\">{} in all; {}</p><div class=\"scroll\"><table>\
         <tr><th>Account</th><th>Used</th><th>Share of quota</th></tr>{rows}</table></div>",
        human_size(total),
        esc(&state)
    );
    ("Uploads", content)
}

async fn findings_page(ctx: &Ctx<'_>, parts: &[crate::check::Part]) -> (&'static str, String) {
    let config = ctx.srv.config.clone();
    let parts = parts.to_vec();
    let certs_only = parts == [crate::check::Part::Certs];
    // The checks do blocking DNS and connection attempts with their own timeouts.
    let findings = smol::unblock(move || {
        crate::check::run(&config, &parts, &crate::check::Options::default())
    })
    .await;
    let mut items = String::new();
    for f in &findings {
        let fix = f
            .fix
            .as_deref()
            .map(|x| format!("<br><span class=\"muted\">Fix: {}</span>", esc(x)))
            .unwrap_or_default();
        items.push_str(&format!(
            "<li class=\"card\"><b class=\"{sev}\">{sev}</b> <span class=\"muted\">{}: \
             {}</span><br>{}{fix}</li>",
            f.part.as_str(),
            esc(&f.subject),
            esc(&f.what),
            sev = f.severity.as_str(),
        ));
    }
    let problems = findings.iter().filter(|f| f.severity.is_problem()).count();
    let summary = if problems == 0 {
        "<div class=\"msg\">No problems found.</div>".to_string()
    } else {
        format!("<div class=\"msg err\">{problems} problem(s) to fix.</div>")
    };
    let title = if certs_only { "Certificate" } else { "Check" };
    let content = format!(
        "<h1>{title}</h1>{summary}<ul class=\"findings\">{items}</ul>\
         <p class=\"muted\">The same as <code>kith check{}</code> on the server.</p>",
        if certs_only { " certs" } else { "" }
    );
    (title, content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let cases = [
            (Method::GET, "/admin", Page::Home),
            (Method::GET, "/admin/", Page::Home),
            (Method::GET, "/admin/login", Page::Login),
            (Method::POST, "/admin/login", Page::SignIn),
            (Method::POST, "/admin/logout", Page::SignOut),
            (Method::GET, "/admin/logout", Page::MethodNotAllowed),
            (Method::GET, "/admin/users", Page::Users),
            (Method::POST, "/admin/users", Page::MethodNotAllowed),
            (Method::POST, "/admin/users/add", Page::UserAdd),
            (Method::GET, "/admin/users/delete", Page::MethodNotAllowed),
            (Method::POST, "/admin/users/delete", Page::UserDelete),
            (Method::POST, "/admin/users/admin", Page::UserAdmin),
            (Method::POST, "/admin/users/password", Page::UserPassword),
            (Method::GET, "/admin/sessions", Page::Sessions),
            (Method::GET, "/admin/announce", Page::Announce),
            (Method::POST, "/admin/announce", Page::AnnounceSend),
            (Method::GET, "/admin/uploads", Page::Uploads),
            (Method::GET, "/admin/certs", Page::Certs),
            (Method::GET, "/admin/check", Page::Check),
            (Method::GET, "/admin/invites", Page::Invites),
            (Method::POST, "/admin/invites/create", Page::InviteCreate),
            (Method::POST, "/admin/invites/revoke", Page::InviteRevoke),
            (Method::GET, "/admin/invites/create", Page::MethodNotAllowed),
            (
                Method::GET,
                "/admin/invites/AbCdEfGhIjKlMnOpQrStUvWx",
                Page::InviteShow,
            ),
            (Method::GET, "/admin/invites/../users", Page::NotFound),
            (Method::GET, "/admin/nope", Page::NotFound),
            (Method::GET, "/administrator", Page::NotFound),
            (Method::GET, "/other", Page::NotFound),
        ];
        for (m, path, want) in cases {
            assert_eq!(route(&m, path), want, "{m} {path}");
        }
    }

    #[test]
    fn every_change_is_a_csrf_checked_post() {
        for p in [
            Page::SignOut,
            Page::UserAdd,
            Page::UserPassword,
            Page::UserDelete,
            Page::UserAdmin,
            Page::InviteCreate,
            Page::InviteRevoke,
            Page::AnnounceSend,
        ] {
            assert!(p.is_action(), "{p:?}");
        }
        for p in [Page::Users, Page::Sessions, Page::Check, Page::Home] {
            assert!(!p.is_action(), "{p:?}");
        }
    }

    #[test]
    fn sizes_and_times_read_well() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(ago(100, 90), "just now");
        assert_eq!(ago(1000, 100), "15 min ago");
        assert_eq!(ago(100_000, 0), "1 day ago");
        assert_eq!(ago(200_000, 0), "2 days ago");
    }
}
