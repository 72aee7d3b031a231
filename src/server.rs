//! The running server: the shared context every session and service sees (`Server`), and
//! `run`, which opens the store, binds the listeners, serves until SIGTERM/SIGINT and then shuts
//! down cleanly (every stream gets `</stream:stream>`, the store is closed last).

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::Executor;

use crate::config::Config;
use crate::jid::BareJid;
use crate::net::acme::Acme;
use crate::net::listener;
use crate::net::tls::{CertSource, TlsSetup};
use crate::sessions::{self, Outbound, Sessions};
use crate::store::Store;

/// Shared state of one running server. Cheap to reach from every task through `Arc<Server>`.
pub struct Server {
    pub config: Config,
    pub store: Store,
    pub sessions: Sessions,
    /// Where each client connection came from (the web admin's session list).
    pub origins: crate::sessions::Origins,
    pub tls: TlsSetup,
    pub started: Instant,
    next_conn: AtomicU64,
    /// Connections currently open (any phase), so shutdown can wait for them to close.
    pub open_conns: AtomicUsize,
    /// Client connections open per IP address (`[limits] connections_per_ip`).
    pub per_ip: crate::net::per_ip::PerIp,
    pub stopping: AtomicBool,
    /// Message archive state (cached preferences).
    pub mam: crate::services::mam::State,
    /// XEP-0115 features of connected resources, for PEP notifications.
    pub caps: crate::services::caps::Caps,
    /// Caps of contacts' resources on other servers, per local account, for PEP events.
    pub pep_remote: crate::services::pep_remote::Registry,
    /// Resumable stream-management sessions (XEP-0198).
    pub sm: crate::session::sm::Registry,
    /// Serializes read-modify-write of one account's data (roster, FAST tokens; striped by
    /// bare JID), so two resources answering the same subscription request can't interleave
    /// and undo each other's change. Never held across routing to another account.
    account_locks: Box<[smol::lock::Mutex<()>]>,
    /// XEP-0191 blocklists and the resources that asked for them.
    pub blocking: crate::services::blocking::State,
    /// Connected XEP-0114 components.
    pub components: crate::session::component::Registry,
    /// Federation: links to other servers, incoming stream limits.
    pub s2s: crate::session::s2s::S2s,
    /// XEP-0363 upload slots handed out and not used yet.
    pub upload: crate::services::upload::State,
    /// XEP-0045 rooms at `conference.DOMAIN`.
    pub muc: crate::services::muc::State,
    /// Open XEP-0050 command sessions.
    pub adhoc: crate::services::adhoc::Sessions,
    /// Open registration's per-IP and global limits (in-band and web share them).
    pub registration: crate::invites::Throttle,
    /// XEP-0065 connections waiting for activation, and the relays running.
    pub proxy65: crate::services::proxy65::State,
    /// Closed when the server shuts down; waiting tasks watch it.
    shutdown_tx: async_channel::Sender<()>,
    shutdown_rx: async_channel::Receiver<()>,
}

impl Server {
    pub fn new(config: Config, store: Store, tls: TlsSetup) -> Server {
        let (shutdown_tx, shutdown_rx) = async_channel::bounded(1);
        Server {
            config,
            store,
            sessions: Sessions::new(),
            origins: Default::default(),
            tls,
            started: Instant::now(),
            next_conn: AtomicU64::new(1),
            open_conns: AtomicUsize::new(0),
            per_ip: Default::default(),
            stopping: AtomicBool::new(false),
            mam: Default::default(),
            caps: Default::default(),
            pep_remote: Default::default(),
            sm: Default::default(),
            account_locks: (0..64).map(|_| smol::lock::Mutex::new(())).collect(),
            blocking: Default::default(),
            components: Default::default(),
            s2s: Default::default(),
            upload: Default::default(),
            muc: Default::default(),
            adhoc: Default::default(),
            registration: Default::default(),
            proxy65: Default::default(),
            shutdown_tx,
            shutdown_rx,
        }
    }

    /// Holds `owner`'s account data for a read-modify-write (see `account_locks`).
    pub async fn lock_account(&self, owner: &BareJid) -> smol::lock::MutexGuard<'_, ()> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let h = BuildHasherDefault::<DefaultHasher>::default().hash_one(owner.as_str());
        self.account_locks[(h as usize) % self.account_locks.len()]
            .lock()
            .await
    }

    /// Completes when the server starts shutting down.
    pub fn shutdown_signal(&self) -> impl std::future::Future<Output = ()> + 'static {
        let rx = self.shutdown_rx.clone();
        async move {
            let _ = rx.recv().await;
        }
    }

    pub fn domain(&self) -> &str {
        &self.config.domain
    }

    pub fn is_local_domain(&self, domain: &str) -> bool {
        domain == self.config.domain
    }

    /// Whether `domain` is served by a configured XEP-0114 component.
    pub fn is_component(&self, domain: &str) -> bool {
        self.config.components.iter().any(|c| c.domain == domain)
    }

    /// Whether `bare` names an account on this server (local domain, has a localpart).
    /// Whether `bare` administers this server: listed in `admins`, or made an admin by
    /// another admin (the account flag).
    pub async fn is_admin(&self, bare: &BareJid) -> bool {
        if self.config.admins.iter().any(|a| a == bare.as_ref()) {
            return true;
        }
        match self.store.account(bare.as_ref()).await {
            Ok(Some(a)) => a.flags & crate::accounts::FLAG_ADMIN != 0,
            _ => false,
        }
    }

    pub fn is_local_user(&self, bare: &BareJid) -> bool {
        bare.node().is_some() && self.is_local_domain(bare.domain())
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Disconnects every session of an account (after it was deleted or its password changed).
    pub fn kick_account(&self, bare: &BareJid, condition: crate::stanza::StreamError) {
        self.blocking.forget(bare);
        for r in self.sessions.resources(bare) {
            sessions::send(&r, Outbound::Close(condition));
        }
    }
}

/// A start-up failure, worded for the operator.
#[derive(Debug)]
pub struct RunError(pub String);

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RunError {}

/// Runs the server in the foreground until SIGTERM or SIGINT.
pub fn run(config: Config) -> Result<(), RunError> {
    let ex = Arc::new(Executor::new());
    // One worker per core beside the main thread; the main thread drives the same executor.
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2)
        - 1;
    let (stop_workers, workers_stopped) = async_channel::bounded::<()>(1);
    let mut threads = Vec::new();
    for i in 0..workers {
        let ex = ex.clone();
        let stopped = workers_stopped.clone();
        let t = std::thread::Builder::new()
            .name(format!("kith-worker-{i}"))
            .spawn(move || smol::block_on(ex.run(stopped.recv())))
            .map_err(|e| RunError(format!("cannot start worker thread: {e}")))?;
        threads.push(t);
    }
    let result = smol::block_on(ex.run(serve(ex.clone(), config)));
    stop_workers.close();
    for t in threads {
        let _ = t.join();
    }
    result
}

async fn serve(ex: Arc<Executor<'static>>, mut config: Config) -> Result<(), RunError> {
    // Handlers first: a SIGTERM that arrives while the store opens must still shut down
    // cleanly rather than kill the process mid-write.
    let signals = install_signals();
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|e| {
        RunError(format!(
            "cannot create data directory {}: {e} (set data_dir in the config to a writable folder)",
            data_dir.display()
        ))
    })?;
    let store = Store::open(&data_dir.join("kith.redb")).map_err(|e| {
        RunError(format!(
            "store {}: {e}",
            data_dir.join("kith.redb").display()
        ))
    })?;
    let (tls, acme) = certificates(&config)?;

    let turn = start_turn(&mut config)?;
    let c2s = bind_all(&config.listen.c2s, "c2s")?;
    let direct = bind_all(&config.listen.c2s_direct_tls, "c2s_direct_tls")?;
    let s2s = bind_all(&config.listen.s2s, "s2s")?;
    let s2s_direct = bind_all(&config.listen.s2s_direct_tls, "s2s_direct_tls")?;
    // The component port is opened only when a component may use it.
    let components = if config.components.is_empty() {
        Vec::new()
    } else {
        if config.listen.components.is_empty() {
            log::warn!(
                "[components] are configured but [listen] components is empty; they cannot connect"
            );
        }
        bind_all(&config.listen.components, "components")?
    };
    let web = crate::http::bind(&config)?;
    let proxy65 = crate::services::proxy65::bind(&config).map_err(|e| RunError(e.to_string()))?;

    let srv = Arc::new(Server::new(config, store, tls));
    // The admin socket first: from the moment the store is locked, `kith user ...` must find
    // the running server instead of failing on the lock.
    let admin = crate::admin::listen(&srv).map_err(|e| RunError(e.to_string()))?;
    srv.s2s
        .start(&srv, ex.clone(), &srv.config, &srv.tls)
        .map_err(|e| RunError(e.0))?;

    let mut tasks = Vec::new();
    for l in c2s {
        tasks.push(ex.spawn(listener::accept_loop(
            ex.clone(),
            srv.clone(),
            l,
            listener::Mode::StartTls,
        )));
    }
    for l in direct {
        tasks.push(ex.spawn(listener::accept_loop(
            ex.clone(),
            srv.clone(),
            l,
            listener::Mode::DirectTls,
        )));
    }
    for (listeners, direct_tls) in [(s2s, false), (s2s_direct, true)] {
        for l in listeners {
            tasks.push(ex.spawn(crate::session::s2s::accept_loop(
                ex.clone(),
                srv.clone(),
                l,
                direct_tls,
            )));
        }
    }
    for l in components {
        tasks.push(ex.spawn(crate::session::component::accept_loop(
            ex.clone(),
            srv.clone(),
            l,
        )));
    }
    tasks.extend(crate::http::start(&ex, &srv, web));
    if let Some(admin) = admin {
        tasks.push(ex.spawn(crate::admin::serve(ex.clone(), srv.clone(), admin)));
    }
    tasks.push(ex.spawn(crate::services::mam::expire_loop(srv.clone())));
    if let Some(acme) = acme {
        tasks.push(ex.spawn(acme.run()));
    }
    if let CertSource::Configured { .. } = srv.tls.source {
        let srv = srv.clone();
        tasks.push(ex.spawn(async move { srv.tls.watch_files().await }));
    }
    tasks.push(ex.spawn(crate::services::upload::expire_loop(srv.clone())));
    // Circles from the config may have changed since the last run.
    tasks.push(ex.spawn({
        let srv = srv.clone();
        async move { crate::circles::sync(&srv).await }
    }));
    for l in proxy65 {
        tasks.push(ex.spawn(crate::services::proxy65::serve(ex.clone(), srv.clone(), l)));
    }
    if let Some(bound) = turn {
        let (t, domain) = (srv.config.turn.clone(), srv.domain().to_string());
        tasks.push(ex.spawn(crate::turn::server::serve(ex.clone(), t, domain, bound)));
    }
    log::info!(
        "kith {} serving {} ({})",
        env!("CARGO_PKG_VERSION"),
        srv.domain(),
        match &srv.tls.source {
            CertSource::Configured { cert, .. } => format!("certificate {}", cert.display()),
            CertSource::SelfSigned { cert } =>
                format!("self-signed certificate {}", cert.display()),
            CertSource::Acme { .. } => "ACME certificate".into(),
        }
    );
    if let CertSource::SelfSigned { cert } = &srv.tls.source {
        log::warn!(
            "tls: WARNING: serving the SELF-SIGNED certificate {}: clients will refuse it or ask \
             every user to trust it, and other servers will not federate. Set [acme] email = \
             \"you@example.org\" for a free certificate from Let's Encrypt, or [tls] cert and key",
            cert.display()
        );
    }

    let signal = wait_for_signal(signals).await;
    log::info!("received {signal}, shutting down");
    srv.stopping.store(true, Ordering::SeqCst);
    srv.shutdown_tx.close();
    // Stop accepting first, so nothing new starts while streams are being closed.
    for t in tasks {
        t.cancel().await;
    }
    for r in srv.sessions.all() {
        sessions::send(&r, Outbound::Shutdown);
    }
    for tx in srv.components.all() {
        let _ = tx.try_send(Outbound::Shutdown);
    }
    srv.s2s.close_all();
    // Sessions waiting for resumption end now; what their clients never acknowledged goes
    // to offline storage.
    for st in srv.sm.drain_parked() {
        crate::session::c2s::teardown(&srv, st, "c2s").await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while srv.open_conns.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        smol::Timer::after(Duration::from_millis(20)).await;
    }
    let left = srv.open_conns.load(Ordering::SeqCst);
    if left > 0 {
        log::warn!("{left} connection(s) did not close within 5 s; exiting anyway");
    }
    crate::admin::cleanup(&srv);
    // Every write already committed with fsync; closing the file here just makes it explicit
    // (and lets the next start skip redb's repair check).
    match Arc::try_unwrap(srv) {
        Ok(server) => {
            drop(server);
            log::info!("store closed, bye");
        }
        Err(_) => log::info!("exiting with connections still open; the store is consistent"),
    }
    Ok(())
}

/// The TLS certificate source, and the ACME driver to run when `[acme]` is on.
fn certificates(config: &Config) -> Result<(TlsSetup, Option<crate::net::acme::Driver>), RunError> {
    if config.acme.enabled() {
        let (acme, driver) = Acme::start(config).map_err(|e| RunError(e.to_string()))?;
        let tls = TlsSetup::with_acme(acme, &config.domain, &config.data_dir)
            .map_err(|e| RunError(e.to_string()))?;
        return Ok((tls, Some(driver)));
    }
    let tls = TlsSetup::load(
        config.tls.cert.as_deref(),
        config.tls.key.as_deref(),
        &config.domain,
        &config.data_dir,
    )
    .map_err(|e| RunError(e.to_string()))?;
    Ok((tls, None))
}

/// The built-in STUN/TURN server's secret (configured, or kept in `DATA/turn.secret`) and
/// sockets; `None` when it is off.
fn start_turn(config: &mut Config) -> Result<Option<crate::turn::server::Bound>, RunError> {
    if !config.turn.builtin() {
        return Ok(None);
    }
    if config.turn.secret.is_none() {
        let secret = crate::turn::server::secret_file(&config.data_dir).map_err(|e| {
            RunError(format!(
                "cannot keep the TURN secret in {}: {e} (set [turn] secret in the config)",
                config.data_dir.join("turn.secret").display()
            ))
        })?;
        config.turn.secret = Some(secret);
    }
    crate::turn::server::bind(config)
        .map(Some)
        .map_err(RunError)
}

fn bind_all(addrs: &[SocketAddr], what: &str) -> Result<Vec<smol::net::TcpListener>, RunError> {
    addrs
        .iter()
        .map(|addr| {
            let std = bind_with_v4_fallback(*addr).map_err(|e| {
                RunError(format!(
                    "cannot listen for {what} on {addr}: {e} (is another server using the port? change [listen] {what} in the config)"
                ))
            })?;
            std.set_nonblocking(true)
                .and_then(|_| smol::net::TcpListener::try_from(std))
                .map_err(|e| RunError(format!("cannot listen for {what} on {addr}: {e}")))
                .inspect(|l| {
                    let at = l.local_addr().map_or(addr.to_string(), |a| a.to_string());
                    log::info!("listening for {what} on {at}")
                })
        })
        .collect()
}

/// A non-blocking TCP listener on `addr`, with the IPv4 fallback of [`bind_with_v4_fallback`].
pub(crate) fn bind_tcp(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let l = bind_with_v4_fallback(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Binds `addr`; the unspecified IPv6 address falls back to `0.0.0.0` on hosts where IPv6 is
/// disabled (a common Raspberry Pi setting), so the defaults work everywhere.
fn bind_with_v4_fallback(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    match std::net::TcpListener::bind(addr) {
        Err(e)
            if addr.ip() == std::net::Ipv6Addr::UNSPECIFIED
                && e.kind() != std::io::ErrorKind::AddrInUse
                && e.kind() != std::io::ErrorKind::PermissionDenied =>
        {
            let v4 = SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, addr.port()));
            log::warn!(
                "cannot listen on {addr} ({e}); IPv6 seems disabled, listening on {v4} instead"
            );
            std::net::TcpListener::bind(v4)
        }
        r => r,
    }
}

fn install_signals() -> Option<async_signal::Signals> {
    use async_signal::{Signal, Signals};
    match Signals::new([Signal::Term, Signal::Int]) {
        Ok(s) => Some(s),
        Err(e) => {
            log::error!("cannot install signal handlers: {e}; stop kith with SIGKILL");
            None
        }
    }
}

async fn wait_for_signal(signals: Option<async_signal::Signals>) -> &'static str {
    use async_signal::Signal;
    use futures_lite::StreamExt;
    let Some(mut signals) = signals else {
        return futures_lite::future::pending().await;
    };
    match signals.next().await {
        Some(Ok(Signal::Int)) => "SIGINT",
        _ => "SIGTERM",
    }
}
