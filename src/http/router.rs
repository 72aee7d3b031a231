//! Which handler answers an HTTPS request. `classify` is pure (method, host, path in; a
//! `Route` out) so the table reads in one place and is tested without sockets; `dispatch`
//! calls the handler.
//!
//! Adding an endpoint: a `Route` variant, its line in `classify`, its arm in `dispatch`. A
//! handler takes the request and returns a `Response<Body>` (see `body.rs`).

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use super::body::{self, Body};
use super::Conn;

pub const WEBSOCKET_PATH: &str = "/xmpp-websocket";
pub const BOSH_PATH: &str = "/http-bind";
pub const HOST_META_PATH: &str = "/.well-known/host-meta";
pub const HOST_META_JSON_PATH: &str = "/.well-known/host-meta.json";
/// XEP-0363 uploads and downloads live under this prefix, on any host: `upload.DOMAIN`, the
/// domain, or whatever name a reverse proxy at `[http] public_url` forwards (many send their
/// upstream's address as `Host`).
pub const UPLOAD_PREFIX: &str = "/upload/";
/// Invite pages: `/invite/TOKEN` (XEP-0401 landing page and web registration).
pub const INVITE_PREFIX: &str = "/invite/";
/// Web registration without an invite (`[registration] policy = "open"`).
pub const REGISTER_PATH: &str = "/register";

/// What a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// XEP-0156 host-meta (XRD).
    HostMeta,
    /// XEP-0156 host-meta.json (JRD).
    HostMetaJson,
    /// RFC 7395 XMPP over WebSocket.
    WebSocket,
    /// XEP-0206 XMPP over BOSH.
    Bosh,
    /// XEP-0363 HTTP File Upload (PUT) and downloads (GET/HEAD), with CORS (OPTIONS).
    Upload,
    /// The web admin's pages (`/admin`, `/admin/...`).
    Admin,
    /// An invite page (GET) or registration with it (POST).
    Invite,
    /// Open web registration: the form (GET) or its submission (POST).
    Register,
    /// CORS preflight for the web endpoints.
    Preflight,
    RosterAdmin,
    NotFound,
    MethodNotAllowed,
}

/// Routes by path. `host` is the request's host without port, lowercased.
pub fn classify(method: &Method, _host: &str, path: &str, _domain: &str) -> Route {
    if path.starts_with(UPLOAD_PREFIX) {
        return Route::Upload;
    }
    if path == super::admin::PREFIX || path.starts_with("/admin/") {
        return Route::Admin;
    }
    let get = method == Method::GET || method == Method::HEAD;
    if path == super::roster_admin::PATH {
        return if method == Method::POST {
            Route::RosterAdmin
        } else {
            Route::MethodNotAllowed
        };
    }
    if path.starts_with(INVITE_PREFIX) || path == REGISTER_PATH {
        if !(get || method == Method::POST) {
            return Route::MethodNotAllowed;
        }
        return if path == REGISTER_PATH {
            Route::Register
        } else {
            Route::Invite
        };
    }
    let web = [
        HOST_META_PATH,
        HOST_META_JSON_PATH,
        WEBSOCKET_PATH,
        BOSH_PATH,
    ]
    .contains(&path);
    if web && method == Method::OPTIONS {
        return Route::Preflight;
    }
    match path {
        HOST_META_PATH if get => Route::HostMeta,
        HOST_META_JSON_PATH if get => Route::HostMetaJson,
        WEBSOCKET_PATH if method == Method::GET => Route::WebSocket,
        BOSH_PATH if method == Method::POST => Route::Bosh,
        _ if web => Route::MethodNotAllowed,
        _ => Route::NotFound,
    }
}

/// The host a request names (`Host` header, or the authority of an absolute URI), without
/// port, lowercased.
pub fn request_host<B>(req: &Request<B>) -> String {
    let raw = req
        .uri()
        .host()
        .map(str::to_string)
        .or_else(|| {
            req.headers()
                .get(hyper::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    strip_port(&raw).to_ascii_lowercase()
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    host.rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h)
}

/// Answers one request.
pub async fn dispatch(conn: Arc<Conn>, req: Request<Incoming>) -> Response<Body> {
    let host = request_host(&req);
    let route = classify(req.method(), &host, req.uri().path(), conn.web.srv.domain());
    log::debug!(
        "{}: {} {} -> {route:?}",
        conn.tag,
        req.method(),
        req.uri().path()
    );
    match route {
        Route::HostMeta => host_meta(&conn, false),
        Route::HostMetaJson => host_meta(&conn, true),
        Route::WebSocket => super::websocket::handle(conn, req).await,
        Route::Bosh => super::bosh::handle(conn, req).await,
        Route::Upload => super::upload::handle(conn, req).await,
        Route::Admin => super::admin::handle(conn, req).await,
        Route::Invite => super::invite::invite(conn, req).await,
        Route::Register => super::invite::open(conn, req).await,
        Route::RosterAdmin => super::roster_admin::handle(conn, req).await,
        Route::Preflight => {
            let mut r = Response::new(body::empty());
            *r.status_mut() = StatusCode::NO_CONTENT;
            body::allow_any_origin(&mut r);
            r
        }
        Route::NotFound => body::status(StatusCode::NOT_FOUND),
        Route::MethodNotAllowed => {
            let mut r = body::status(StatusCode::METHOD_NOT_ALLOWED);
            body::allow_any_origin(&mut r);
            r
        }
    }
}

fn host_meta(conn: &Conn, json: bool) -> Response<Body> {
    let links = super::hostmeta::Links::under(&conn.web.srv.config.public_url());
    let mut r = if json {
        body::response(
            StatusCode::OK,
            "application/json",
            super::hostmeta::json(&links),
        )
    } else {
        body::response(
            StatusCode::OK,
            "application/xrd+xml",
            super::hostmeta::xrd(&links),
        )
    };
    body::allow_any_origin(&mut r);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let d = "example.org";
        let cases = [
            (
                Method::GET,
                "example.org",
                "/.well-known/host-meta",
                Route::HostMeta,
            ),
            (
                Method::HEAD,
                "example.org",
                "/.well-known/host-meta.json",
                Route::HostMetaJson,
            ),
            (
                Method::GET,
                "example.org",
                "/xmpp-websocket",
                Route::WebSocket,
            ),
            (Method::GET, "example.org", "/invite/abc", Route::Invite),
            (Method::POST, "example.org", "/invite/abc", Route::Invite),
            (
                Method::PUT,
                "example.org",
                "/invite/abc",
                Route::MethodNotAllowed,
            ),
            (Method::GET, "example.org", "/register", Route::Register),
            (Method::POST, "example.org", "/register", Route::Register),
            (Method::GET, "example.org", "/invite", Route::NotFound),
            (Method::POST, "example.org", "/http-bind", Route::Bosh),
            (
                Method::OPTIONS,
                "example.org",
                "/http-bind",
                Route::Preflight,
            ),
            (
                Method::GET,
                "example.org",
                "/http-bind",
                Route::MethodNotAllowed,
            ),
            (
                Method::POST,
                "example.org",
                "/xmpp-websocket",
                Route::MethodNotAllowed,
            ),
            (
                Method::PUT,
                "upload.example.org",
                "/upload/abc/f.jpg",
                Route::Upload,
            ),
            (
                Method::GET,
                "upload.example.org",
                "/upload/abc/f.jpg",
                Route::Upload,
            ),
            (Method::GET, "127.0.0.1", "/upload/abc/f.jpg", Route::Upload),
            (Method::GET, "example.org", "/", Route::NotFound),
            (Method::GET, "example.org", "/admin", Route::Admin),
            (
                Method::POST,
                "example.org",
                "/roster_admin/refresh",
                Route::RosterAdmin,
            ),
            (
                Method::GET,
                "example.org",
                "/roster_admin/refresh",
                Route::MethodNotAllowed,
            ),
            (
                Method::POST,
                "example.org",
                "/admin/users/add",
                Route::Admin,
            ),
            (
                Method::GET,
                "example.org",
                "/administrator",
                Route::NotFound,
            ),
            (
                Method::GET,
                "example.org",
                "/.well-known/host-meta/x",
                Route::NotFound,
            ),
        ];
        for (m, host, path, want) in cases {
            assert_eq!(classify(&m, host, path, d), want, "{m} {host}{path}");
        }
    }

    #[test]
    fn host_without_port() {
        let req = |h: &str| Request::builder().header("host", h).body(()).unwrap();
        assert_eq!(request_host(&req("Example.ORG:5443")), "example.org");
        assert_eq!(request_host(&req("[::1]:443")), "::1");
        assert_eq!(request_host(&req("example.org")), "example.org");
        let abs = Request::builder()
            .uri("https://upload.example.org/upload/x")
            .body(())
            .unwrap();
        assert_eq!(request_host(&abs), "upload.example.org");
    }
}
