//! The web side: the HTTPS listener (`[listen] https`, 443) and the plain HTTP one
//! (`[listen] http`, 80).
//!
//! On the HTTPS port one TLS handshake decides by ALPN what a connection is (one port for
//! everything, so restrictive networks work):
//! - `acme-tls/1` → the ACME TLS-ALPN-01 answer (`TlsSetup::accept_started`);
//! - `xmpp-client` → a direct-TLS client stream (XEP-0368), the same `session::c2s` as 5223;
//! - `xmpp-server` → incoming federation (`session::s2s::serve_started`, with its own TLS
//!   config, which asks for the peer's certificate);
//! - `http/1.1` or none → hyper, routed by `router`: WebSocket (RFC 7395), BOSH
//!   (XEP-0206), host-meta (XEP-0156), uploads (XEP-0363), the web admin (`admin`), invite
//!   pages and web registration (`invite`).
//!
//! The plain HTTP port answers ACME HTTP-01 challenges and redirects everything else to
//! HTTPS. WebSocket and BOSH sessions are the real c2s session over an in-memory byte stream
//! (`pipe`), so SASL, binding, stream management and everything else is the one
//! implementation. HTTP parsing is hyper's (http1 only), run on smol through smol-hyper.

pub mod admin;
pub mod body;
pub mod bosh;
pub mod form;
pub mod hostmeta;
pub mod html;
pub mod invite;
pub mod pipe;
pub mod roster_admin;
pub mod router;
pub mod upload;
pub mod websocket;

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::FutureExt as _;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use smol::net::{TcpListener, TcpStream};
use smol::{Executor, Task};

use crate::net::tls::{ALPN_ACME_TLS, ALPN_HTTP11, ALPN_XMPP_CLIENT, ALPN_XMPP_SERVER};
use crate::net::with_deadline;
use crate::server::{RunError, Server};
use body::Body;

/// How long a client has to finish the TLS handshake, and to send a request's headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head hyper buffers (request line and headers).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Open HTTP(S) connections beyond which new ones are closed at once, so a flood of idle
/// connections cannot exhaust file descriptors the XMPP ports need.
const MAX_CONNECTIONS: usize = 4096;

/// State shared by every web connection.
pub struct Web {
    pub srv: Arc<Server>,
    pub ex: Arc<Executor<'static>>,
    /// Live BOSH sessions by `sid`.
    pub bosh: bosh::Sessions,
    /// Signed-in web admin sessions.
    pub admin: admin::State,
    /// Open HTTP(S) connections (see `MAX_CONNECTIONS`).
    open: AtomicUsize,
    /// New connections are being refused (for logging once per episode).
    full: AtomicBool,
}

/// One HTTP connection: what a handler knows about where a request came from.
pub struct Conn {
    pub web: Arc<Web>,
    pub peer: SocketAddr,
    /// `https#N` / `http#N`, the prefix of every log line about this connection.
    pub tag: String,
}

/// The bound web listeners.
pub struct Listeners {
    https: Vec<TcpListener>,
    http: Vec<TcpListener>,
}

/// Binds `[listen] https` and `[listen] http`. A default address on a privileged port that
/// we may not bind (a normal user running `kith run` without a config) is skipped with one
/// warning line saying how to fix it; an address the admin configured is a start-up error.
pub fn bind(config: &crate::config::Config) -> Result<Listeners, RunError> {
    let defaults = crate::config::Config::defaults();
    let mut skipped = Vec::new();
    let https = bind_kind(
        &config.listen.https,
        config.listen.https == defaults.listen.https,
        "https",
        &mut skipped,
    )?;
    let http = bind_kind(
        &config.listen.http,
        config.listen.http == defaults.listen.http,
        "http",
        &mut skipped,
    )?;
    if !skipped.is_empty() {
        log::warn!(
            "not listening for {}: permission denied; web clients (WebSocket, BOSH) cannot connect. Ports below 1024 need privileges: run kith through its systemd unit, grant it CAP_NET_BIND_SERVICE (setcap cap_net_bind_service=+ep kith), or set [listen] https and http to ports above 1024",
            skipped.join(" and ")
        );
    }
    Ok(Listeners { https, http })
}

fn bind_kind(
    addrs: &[SocketAddr],
    default: bool,
    what: &str,
    skipped: &mut Vec<String>,
) -> Result<Vec<TcpListener>, RunError> {
    let mut out = Vec::new();
    for addr in addrs {
        match crate::server::bind_tcp(*addr).and_then(TcpListener::try_from) {
            Ok(l) => {
                let at = l.local_addr().map_or(addr.to_string(), |a| a.to_string());
                log::info!("listening for {what} on {at}");
                out.push(l);
            }
            Err(e) if default && e.kind() == std::io::ErrorKind::PermissionDenied => {
                skipped.push(format!("{what} on {addr}"));
            }
            Err(e) => {
                return Err(RunError(format!(
                    "cannot listen for {what} on {addr}: {e} (is another server using the port? change [listen] {what} in the config)"
                )))
            }
        }
    }
    Ok(out)
}

/// Starts the accept loops; the tasks stop the listeners when cancelled.
pub fn start(
    ex: &Arc<Executor<'static>>,
    srv: &Arc<Server>,
    listeners: Listeners,
) -> Vec<Task<()>> {
    let web = Arc::new(Web {
        srv: srv.clone(),
        ex: ex.clone(),
        bosh: bosh::Sessions::default(),
        admin: admin::State::default(),
        open: AtomicUsize::new(0),
        full: AtomicBool::new(false),
    });
    let mut tasks = Vec::new();
    for l in listeners.https {
        tasks.push(ex.spawn(accept_loop(web.clone(), l, true)));
    }
    for l in listeners.http {
        tasks.push(ex.spawn(accept_loop(web.clone(), l, false)));
    }
    if !tasks.is_empty() {
        tasks.push(ex.spawn(bosh::expire_loop(web)));
    }
    tasks
}

async fn accept_loop(web: Arc<Web>, listener: TcpListener, tls: bool) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                if web.open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                    // One line per episode, not per refused connection (a flood would
                    // otherwise fill the log).
                    if !web.full.swap(true, Ordering::Relaxed) {
                        log::warn!("web: {MAX_CONNECTIONS} connections open; refusing new ones (first: {peer})");
                    }
                    continue;
                }
                if web.full.swap(false, Ordering::Relaxed) {
                    log::info!("web: accepting connections again");
                }
                let id = web.srv.next_conn_id();
                let tag = format!("{}#{id}", if tls { "https" } else { "http" });
                let conn = Arc::new(Conn {
                    web: web.clone(),
                    peer,
                    tag,
                });
                web.ex
                    .spawn(guarded(conn, move |conn| connection(conn, tcp, tls, id)))
                    .detach();
            }
            Err(e) => {
                log::warn!("web: accept failed: {e}; retrying in 100 ms");
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Counts the connection open while `run` goes, and catches a panic in it: a bug takes down
/// this connection only.
pub(crate) async fn guarded<F, Fut>(conn: Arc<Conn>, run: F)
where
    F: FnOnce(Arc<Conn>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let web = conn.web.clone();
    web.open.fetch_add(1, Ordering::Relaxed);
    let tag = conn.tag.clone();
    if let Err(panic) = AssertUnwindSafe(run(conn)).catch_unwind().await {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        log::error!("{tag}: bug: connection task panicked: {msg}; the connection was dropped");
    }
    web.open.fetch_sub(1, Ordering::Relaxed);
}

/// Counts an XMPP session (direct TLS, WebSocket or BOSH) in `Server::open_conns` while it
/// lives, so shutdown waits for it to close its stream. Plain HTTP connections are not
/// counted: an idle keep-alive connection has nothing to say goodbye to.
pub(crate) struct OpenSession(Arc<Server>);

impl OpenSession {
    pub(crate) fn new(srv: &Arc<Server>) -> OpenSession {
        srv.open_conns.fetch_add(1, Ordering::SeqCst);
        OpenSession(srv.clone())
    }
}

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.0.open_conns.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn connection(conn: Arc<Conn>, tcp: TcpStream, tls: bool, id: u64) {
    let _ = tcp.set_nodelay(true);
    if !tls {
        return serve_http(conn, tcp, redirect_service).await;
    }
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let start = futures_rustls::LazyConfigAcceptor::new(Default::default(), tcp);
    let start = match with_deadline(start, deadline).await {
        Ok(s) => s,
        Err(e) => {
            log::debug!("{}: no TLS client hello from {}: {e}", conn.tag, conn.peer);
            return;
        }
    };
    let offers = |p: &[u8]| {
        start
            .client_hello()
            .alpn()
            .is_some_and(|mut alpn| alpn.any(|a| a == p))
    };
    let srv = conn.web.srv.clone();
    if offers(ALPN_XMPP_SERVER) && !offers(ALPN_ACME_TLS) {
        // Federation has its own TLS config (it asks for the peer's certificate).
        return crate::session::s2s::serve_started(srv, start, conn.peer, id).await;
    }
    let accepted = srv
        .tls
        .accept_started(start, &[ALPN_XMPP_CLIENT, ALPN_HTTP11]);
    let accepted = match with_deadline(accepted, deadline).await {
        Ok(Some(a)) => a,
        // An ACME TLS-ALPN-01 challenge, answered.
        Ok(None) => return,
        Err(e) => {
            log::info!("{}: TLS handshake with {} failed: {e}", conn.tag, conn.peer);
            return;
        }
    };
    let cb = accepted.channel_binding();
    let tls = accepted.stream;
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    match alpn.as_deref() {
        Some(ALPN_XMPP_CLIENT) => {
            log::info!(
                "c2s#{id}: connection from {} (direct tls on the https port)",
                conn.peer
            );
            let _open = OpenSession::new(&srv);
            let deadline = Instant::now() + srv.config.limits.auth_timeout;
            Box::pin(crate::session::c2s::serve_secure(
                srv,
                Box::new(tls),
                conn.peer,
                cb,
                id,
                deadline,
            ))
            .await
        }
        Some(ALPN_HTTP11) | None => serve_http(conn, tls, router::dispatch).await,
        Some(other) => log::info!(
            "{}: unexpected ALPN {:?}; closing",
            conn.tag,
            String::from_utf8_lossy(other)
        ),
    }
}

/// Runs hyper's HTTP/1.1 server on one connection, with upgrades (WebSocket).
async fn serve_http<S, F, Fut>(conn: Arc<Conn>, io: S, service: F)
where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send + 'static,
    F: Fn(Arc<Conn>, Request<Incoming>) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    let svc_conn = conn.clone();
    let svc = hyper::service::service_fn(move |req| {
        let c = svc_conn.clone();
        async move { Ok::<_, std::convert::Infallible>(service(c, req).await) }
    });
    let r = hyper::server::conn::http1::Builder::new()
        .timer(smol_hyper::rt::SmolTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(smol_hyper::rt::FuturesIo::new(io), svc)
        .with_upgrades()
        .await;
    if let Err(e) = r {
        log::debug!(
            "{}: HTTP connection from {} ended: {e}",
            conn.tag,
            conn.peer
        );
    }
}

/// Port 80: ACME HTTP-01 answers, and a redirect to HTTPS for everything else.
async fn redirect_service(conn: Arc<Conn>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    if let Some(token) = path.strip_prefix("/.well-known/acme-challenge/") {
        let answer = conn.web.srv.tls.http01_key_auth(token);
        return match answer {
            Some(key_auth) => {
                log::info!("{}: answered an ACME HTTP-01 challenge", conn.tag);
                body::response(StatusCode::OK, "application/octet-stream", key_auth)
            }
            None => body::status(StatusCode::NOT_FOUND),
        };
    }
    let host = router::request_host(&req);
    let target = redirect_target(
        &conn.web.srv.config,
        &host,
        req.uri().path_and_query().map_or("/", |p| p.as_str()),
    );
    // 301 keeps GET a GET; 308 keeps the method and body of anything else.
    let status = if req.method() == hyper::Method::GET || req.method() == hyper::Method::HEAD {
        StatusCode::MOVED_PERMANENTLY
    } else {
        StatusCode::PERMANENT_REDIRECT
    };
    let mut r = body::status(status);
    if let Ok(v) = hyper::header::HeaderValue::from_str(&target) {
        r.headers_mut().insert(hyper::header::LOCATION, v);
    }
    r
}

/// Where a plain-HTTP request for `path_query` on `host` goes: the same host over HTTPS when
/// it is one of ours (the domain or a subdomain), on the public HTTPS port; otherwise the
/// public URL (never an open redirect to a name we don't serve).
pub fn redirect_target(config: &crate::config::Config, host: &str, path_query: &str) -> String {
    let domain = &config.domain;
    let ours = host == domain
        || host
            .strip_suffix(domain.as_str())
            .is_some_and(|p| p.ends_with('.'));
    if config.http.public_url.is_none() && ours {
        let port = config
            .listen
            .https
            .first()
            .map(|a| a.port())
            .filter(|p| *p != 443);
        match port {
            Some(p) => format!("https://{host}:{p}{path_query}"),
            None => format!("https://{host}{path_query}"),
        }
    } else {
        format!("{}{path_query}", config.public_url())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_stay_on_our_names() {
        let mut c = crate::config::Config::defaults();
        c.domain = "example.org".into();
        assert_eq!(
            redirect_target(&c, "example.org", "/a?b"),
            "https://example.org/a?b"
        );
        assert_eq!(
            redirect_target(&c, "upload.example.org", "/x"),
            "https://upload.example.org/x"
        );
        assert_eq!(
            redirect_target(&c, "evil.test", "/x"),
            "https://example.org/x"
        );
        assert_eq!(
            redirect_target(&c, "notexample.org", "/x"),
            "https://example.org/x"
        );
        c.listen.https = vec!["127.0.0.1:5443".parse().unwrap()];
        assert_eq!(
            redirect_target(&c, "example.org", "/"),
            "https://example.org:5443/"
        );
        c.http.public_url = Some("https://chat.example.org".into());
        assert_eq!(
            redirect_target(&c, "example.org", "/"),
            "https://chat.example.org/"
        );
    }
}
