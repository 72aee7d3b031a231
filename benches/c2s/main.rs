//! c2s load generator: logs in N real clients (STARTTLS, TLS 1.3, then `--login classic`:
//! SCRAM-SHA-256, stream restart, bind; `sasl2`: SASL2 SCRAM-SHA-256 with Bind 2 inline and a
//! FAST token requested; `fast`: a FAST token login with Bind 2, the tokens coming from an
//! unmeasured sasl2 round first; then initial presence), keeps them idle, then has M pairs
//! exchange K messages each way. Prints logins/s, the time from TCP connect to a bound
//! resource, the round trips after TLS, messages/s, latencies, and — given the server's pid —
//! the server's RSS per idle session and CPU per login and per message, read from /proc.
//!
//! Normally run by `scripts/bench-c2s`, which makes the server, its users and its config.
//! By hand:
//!
//! ```text
//! cargo bench --bench c2s -- --provision DATA_DIR --users 2000      # server stopped
//! cargo bench --bench c2s -- --port 5222 --ca DATA_DIR/tls/localhost.selfsigned.crt \
//!     --sessions 2000 --pairs 100 --messages 200 --server-pid PID
//! ```
//!
//! The generator runs on one thread (a `LocalExecutor`) so that, on a small machine, it
//! takes at most one core; its own CPU time is reported so one can see whether it was the
//! bottleneck.

mod countalloc;
mod procfs;
mod xmpp;

#[global_allocator]
static ALLOC: countalloc::Counting = countalloc::Counting;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use futures_lite::io::{ReadHalf, WriteHalf};
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt as _};
use kith::store::TombstoneRule;
use kith::xml::{Element, Frame, Framer};
use smol::LocalExecutor;

use xmpp::{Login, Tls};

const USAGE: &str = "\
usage: c2s --port P --ca CERT [options]          run the benchmark against a running server
       c2s --provision DATA_DIR --users N [opts]  create bench users (server must be stopped)

  --port P            c2s (STARTTLS) port on 127.0.0.1
  --ca FILE           the server certificate to trust (DATA/tls/DOMAIN.selfsigned.crt)
  --domain D          XMPP domain (localhost)
  --sessions N        clients to log in and keep idle (1000)
  --pairs M           pairs among them that exchange messages (min(100, N/2))
  --messages K        messages each member of a pair sends to the other (1000)
  --window W          messages in flight per sender (16)
  --concurrency C     logins in progress at once (16)
  --prefix P          user names are P0..P(N-1) (bench)
  --password S        password of every bench user (bench-password)
  --server-pid PID    read the server's RSS and CPU time from /proc/PID
  --settle SECS       idle time before reading the idle RSS (3)
  --hold SECS         keep the sessions open this long after the report (0)
  --plus              SCRAM-SHA-256-PLUS with tls-exporter instead of SCRAM-SHA-256
  --login MODE        classic: RFC 6120 SASL, stream restart, bind iq (default)
                      sasl2: XEP-0388 SASL2 SCRAM with XEP-0386 Bind 2 inline, requesting a
                             XEP-0484 FAST token (one user-agent id per client)
                      fast: a sasl2 login per client first (not measured) for its token, then
                            the measured XEP-0484 FAST logins with Bind 2
  --fast-mech M       FAST mechanism: HT-SHA-256-EXPR (tls-exporter, default) or
                      HT-SHA-256-NONE
  --no-token          with --login sasl2: don't ask for a FAST token (kith stores each token
                      it issues, a synced write; this shows SASL2 + Bind 2 without it)
  --summary FILE      append one tab-separated line of login figures to FILE
  --resume            allow TLS session resumption (off: every login is a full handshake)
  --users N           with --provision: accounts to create
  --mam-never K       with --provision: the first K users archive nothing (MAM prefs never)
  --scram H           SCRAM hash for the logins: SHA-256 (default) or SHA-1 (what Prosody's
                      internal_hashed and ejabberd store by default)
  --rate R            send R messages/s in total, spread evenly over the senders (default:
                      as fast as the window allows)
  --results FILE      write every figure as `key<TAB>value` lines (for scripts)

diagnostics:
       c2s --serve-counted CONFIG --alloc-dir DIR   run kith's server in this process under
                                                    a counting allocator
       c2s ... --alloc-dir DIR                      (with the above) print the live heap
                                                    per idle session by allocation size
       c2s --sizes                                  print the sizes of types a session keeps inline";

struct Args {
    port: u16,
    ca: Option<PathBuf>,
    domain: String,
    sessions: usize,
    pairs: Option<usize>,
    messages: usize,
    window: usize,
    concurrency: usize,
    prefix: String,
    password: String,
    server_pid: Option<String>,
    settle: f64,
    hold: f64,
    plus: bool,
    resume: bool,
    login: xmpp::Mode,
    fast_mech: &'static str,
    summary: Option<PathBuf>,
    no_token: bool,
    provision: Option<PathBuf>,
    users: usize,
    serve_counted: Option<PathBuf>,
    alloc_dir: Option<PathBuf>,
    sizes: bool,
    scram: kith::sasl::Hash,
    rate: Option<f64>,
    results: Option<PathBuf>,
    mam_never: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        port: 0,
        ca: None,
        domain: "localhost".into(),
        sessions: 1000,
        pairs: None,
        messages: 1000,
        window: 16,
        concurrency: 16,
        prefix: "bench".into(),
        password: "bench-password".into(),
        server_pid: None,
        settle: 3.0,
        hold: 0.0,
        plus: false,
        resume: false,
        login: xmpp::Mode::Classic,
        fast_mech: "HT-SHA-256-EXPR",
        summary: None,
        no_token: false,
        provision: None,
        users: 0,
        serve_counted: None,
        alloc_dir: None,
        sizes: false,
        scram: kith::sasl::Hash::Sha256,
        rate: None,
        results: None,
        mam_never: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        fn num<T: std::str::FromStr>(flag: &str, v: String) -> Result<T, String> {
            v.parse().map_err(|_| format!("{flag}: not a number: {v}"))
        }
        match flag.as_str() {
            "--port" => a.port = num(&flag, val()?)?,
            "--ca" => a.ca = Some(val()?.into()),
            "--domain" => a.domain = val()?,
            "--sessions" => a.sessions = num(&flag, val()?)?,
            "--pairs" => a.pairs = Some(num(&flag, val()?)?),
            "--messages" => a.messages = num(&flag, val()?)?,
            "--window" => a.window = num::<usize>(&flag, val()?)?.max(1),
            "--concurrency" => a.concurrency = num::<usize>(&flag, val()?)?.max(1),
            "--prefix" => a.prefix = val()?,
            "--password" => a.password = val()?,
            "--server-pid" => a.server_pid = Some(val()?),
            "--settle" => a.settle = num(&flag, val()?)?,
            "--hold" => a.hold = num(&flag, val()?)?,
            "--plus" => a.plus = true,
            "--resume" => a.resume = true,
            "--login" => {
                let v = val()?;
                a.login = xmpp::Mode::parse(&v)
                    .ok_or(format!("--login: classic, sasl2 or fast, not {v}"))?;
            }
            "--fast-mech" => {
                a.fast_mech = match val()?.as_str() {
                    "HT-SHA-256-EXPR" => "HT-SHA-256-EXPR",
                    "HT-SHA-256-NONE" => "HT-SHA-256-NONE",
                    v => return Err(format!("--fast-mech: HT-SHA-256-EXPR or -NONE, not {v}")),
                }
            }
            "--summary" => a.summary = Some(val()?.into()),
            "--no-token" => a.no_token = true,
            "--provision" => a.provision = Some(val()?.into()),
            "--users" => a.users = num(&flag, val()?)?,
            "--serve-counted" => a.serve_counted = Some(val()?.into()),
            "--alloc-dir" => a.alloc_dir = Some(val()?.into()),
            "--sizes" => a.sizes = true,
            "--scram" => {
                a.scram = match val()?.to_ascii_uppercase().as_str() {
                    "SHA-1" | "SHA1" => kith::sasl::Hash::Sha1,
                    "SHA-256" | "SHA256" => kith::sasl::Hash::Sha256,
                    v => return Err(format!("--scram: SHA-1 or SHA-256, not {v}")),
                }
            }
            "--rate" => a.rate = Some(num::<f64>(&flag, val()?)?).filter(|r| *r > 0.0),
            "--results" => a.results = Some(val()?.into()),
            "--mam-never" => a.mam_never = num(&flag, val()?)?,
            // `cargo bench` appends --bench to every bench target's arguments.
            "--bench" => {}
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(a)
}

fn main() {
    // `cargo test --all-targets` runs bench targets with no arguments; there is nothing to
    // measure without a server, so say so and succeed (`cargo bench` passes `--bench`).
    if std::env::args().len() == 1 {
        println!("c2s bench: no arguments, nothing measured; run scripts/bench-c2s");
        return;
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let r = if let Some(dir) = &args.provision {
        provision(&args, dir)
    } else if let Some(config) = &args.serve_counted {
        serve_counted(&args, config)
    } else if args.sizes {
        sizes()
    } else {
        run(&args)
    };
    if let Err(e) = r {
        eprintln!("c2s bench: {e}");
        std::process::exit(1);
    }
}

/// Creates `--users` accounts in one store transaction. All share one salt per hash, so the
/// load generator runs PBKDF2 once instead of once per user. The server's login cost does not
/// depend on the salt (it keeps StoredKey/ServerKey and never runs PBKDF2 for SCRAM).
fn provision(args: &Args, dir: &std::path::Path) -> Result<(), String> {
    use kith::sasl::{derive_creds_with_salt, encode_creds, Hash, DEFAULT_ITERATIONS};
    let t = Instant::now();
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("kith.redb");
    let store = kith::store::Store::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let creds = [Hash::Sha1, Hash::Sha256, Hash::Sha512]
        .into_iter()
        .map(|h| derive_creds_with_salt(&args.password, h, DEFAULT_ITERATIONS, b"kith-bench-salt"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{e:?}"))?;
    let blob = encode_creds(&creds);
    let items = (0..args.users)
        .map(|i| (format!("{}{i}@{}", args.prefix, args.domain), blob.clone()))
        .collect();
    smol::block_on(store.import_accounts(items, TombstoneRule::Override))
        .map_err(|e| format!("import: {e}"))?;
    // XEP-0313 preferences `default='never'` for the first --mam-never users (the ones that
    // exchange messages): a throughput run without archiving, as for servers without MAM.
    // The key is services::mam's PREFS_KEY.
    let never = kith::stanza::mam::prefs_element(&kith::stanza::mam::Prefs {
        default: kith::stanza::mam::DefaultPref::Never,
        always: Vec::new(),
        never: Vec::new(),
    })
    .to_bytes_in("");
    for i in 0..args.mam_never.min(args.users) {
        let jid = format!("{}{i}@{}", args.prefix, args.domain);
        smol::block_on(store.kv_set(&jid, "mam.prefs", Some(never.clone())))
            .map_err(|e| format!("mam prefs: {e}"))?;
    }
    eprintln!(
        "provisioned {} users {}0..{}{} in {:.2} s",
        args.users,
        args.prefix,
        args.prefix,
        args.users.saturating_sub(1),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs kith's server (the library's `server::run`, as `kith run` does) in this process, so
/// the counting allocator sees its heap; answers snapshot requests in `--alloc-dir`.
fn serve_counted(args: &Args, config: &std::path::Path) -> Result<(), String> {
    let dir = args
        .alloc_dir
        .clone()
        .ok_or("--serve-counted needs --alloc-dir")?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let config = kith::config::load(Some(config)).map_err(|e| e.to_string())?;
    std::thread::spawn(move || countalloc::serve_snapshots(&dir));
    kith::server::run(config).map_err(|e| e.to_string())
}

/// Sizes of the types a session keeps inline. The layout of the session future itself (one
/// allocation per connection) is printed by the compiler: see "Memory per session" in
/// ARCHITECTURE.md.
fn sizes() -> Result<(), String> {
    println!(
        "rustls ServerConnection: {} bytes",
        std::mem::size_of::<futures_rustls::rustls::ServerConnection>()
    );
    println!(
        "futures_rustls server TlsStream<TcpStream>: {} bytes",
        std::mem::size_of::<futures_rustls::server::TlsStream<smol::net::TcpStream>>()
    );
    println!(
        "kith::net::slim::ServerTls<Tcp>: {} bytes",
        std::mem::size_of::<kith::net::slim::ServerTls<kith::net::listener::Tcp>>()
    );
    println!("kith::xml::Framer: {} bytes", std::mem::size_of::<Framer>());
    println!(
        "kith::xml::Element: {} bytes",
        std::mem::size_of::<Element>()
    );
    Ok(())
}

/// State shared by all session tasks (one thread, so `Cell`/`RefCell`).
struct Shared {
    epoch: Instant,
    /// Messages received with a timestamp body.
    delivered: Cell<u64>,
    /// When `delivered` reaches this, `done` is signalled.
    target: Cell<u64>,
    done: Sender<()>,
    latencies_us: RefCell<Vec<u32>>,
    /// Per client: the credit channel of its sender (clients in pairs only).
    credits: Vec<Option<Sender<()>>>,
    /// Stanzas received outside the expected flow (presence, etc.).
    stray: Cell<u64>,
    /// Error stanzas received.
    errors: Cell<u64>,
    /// Sessions whose connection ended.
    closed: Cell<u64>,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}

fn run(args: &Args) -> Result<(), String> {
    let ca = args.ca.clone().ok_or("--ca is required")?;
    if args.port == 0 {
        return Err("--port is required".into());
    }
    let n = args.sessions;
    let pairs = args.pairs.unwrap_or((n / 2).min(100)).min(n / 2);
    let cfg = Rc::new(Login {
        addr: SocketAddr::from(([127, 0, 0, 1], args.port)),
        domain: args.domain.clone(),
        tls: xmpp::client_config(&ca, args.resume)?,
        password: args.password.clone(),
        plus: args.plus,
        hash: args.scram,
        salted: RefCell::new(Default::default()),
        pbkdf2_runs: RefCell::new(0),
    });
    let (done_tx, done_rx) = async_channel::bounded::<()>(1);
    let mut credit_rx: Vec<Option<Receiver<()>>> = Vec::with_capacity(n);
    let mut credits = Vec::with_capacity(n);
    for i in 0..n {
        if i < 2 * pairs {
            let (tx, rx) = async_channel::unbounded();
            credits.push(Some(tx));
            credit_rx.push(Some(rx));
        } else {
            credits.push(None);
            credit_rx.push(None);
        }
    }
    let sh = Rc::new(Shared {
        epoch: Instant::now(),
        delivered: Cell::new(0),
        target: Cell::new(u64::MAX),
        done: done_tx,
        latencies_us: RefCell::new(Vec::new()),
        credits,
        stray: Cell::new(0),
        errors: Cell::new(0),
        closed: Cell::new(0),
    });
    let ex: &'static LocalExecutor<'static> = Box::leak(Box::new(LocalExecutor::new()));
    let pid = args.server_pid.clone();
    let server = move || pid.as_deref().and_then(procfs::sample);
    let mut rep = Report::default();

    smol::block_on(ex.run(async {
        // ----- baseline -----
        rep.base = server();
        let alloc_dir = args.alloc_dir.clone();
        let heap_base = alloc_dir
            .as_deref()
            .and_then(|d| countalloc::request(d, "base"));

        // ----- login phase -----
        let mode = args.login;
        let mut tokens: Vec<Option<String>> = vec![None; n];
        if mode == xmpp::Mode::Fast {
            // Not measured: a SASL2 password login per client to get its token, then logout.
            let t = Instant::now();
            let warm = login_all(ex, &cfg, xmpp::Mode::Sasl2, args, &tokens, false).await;
            let mut outs = Vec::new();
            for (i, s) in warm.sessions.into_iter().enumerate() {
                if let Some(s) = s {
                    tokens[i] = s.0.token;
                    outs.push(ex.spawn(xmpp::logout(s.0.xs)));
                }
            }
            for o in outs {
                o.await;
            }
            let got = tokens.iter().filter(|t| t.is_some()).count();
            eprintln!(
                "fast: {got}/{n} FAST tokens from SASL2 logins (not measured) in {:.2} s{}",
                t.elapsed().as_secs_f64(),
                if warm.errors.is_empty() {
                    String::new()
                } else {
                    format!("; errors: {:?}", warm.errors)
                }
            );
            // Let the server finish the logouts before the baseline reading.
            smol::Timer::after(Duration::from_millis(500)).await;
            rep.base = server();
        }
        let writers: Rc<RefCell<Vec<Option<WriteHalf<Tls>>>>> =
            Rc::new(RefCell::new((0..n).map(|_| None).collect()));
        let mut jids: Vec<Option<String>> = vec![None; n];
        let g0 = procfs::self_cpu_ms();
        let t0 = Instant::now();
        let done = login_all(ex, &cfg, mode, args, &tokens, true).await;
        rep.login_wall = t0.elapsed().as_secs_f64();
        rep.login_gen_cpu_ms = procfs::self_cpu_ms() - g0;
        rep.after_login = server();
        for (i, s) in done.sessions.into_iter().enumerate() {
            let Some(s) = s else { continue };
            rep.login_lat.push(s.1);
            rep.tls_lat.push(s.0.tls_us.min(u32::MAX as u64) as u32);
            rep.bound_lat.push(s.0.bound_us.min(u32::MAX as u64) as u32);
            *rep.trips.entry(s.0.trips_to_bound).or_default() += 1;
            jids[i] = Some(s.0.jid);
            let (rd, wr) = futures_lite::io::split(s.0.xs.io);
            writers.borrow_mut()[i] = Some(wr);
            ex.spawn(reader(rd, s.0.xs.framer, i, sh.clone())).detach();
        }
        rep.logged_in = rep.login_lat.len();
        rep.login_errors = done.errors;
        rep.pbkdf2 = *cfg.pbkdf2_runs.borrow();
        eprintln!(
            "logged in {}/{} ({}) in {:.2} s; settling {} s",
            rep.logged_in,
            n,
            mode.name(),
            rep.login_wall,
            args.settle
        );

        // ----- idle -----
        smol::Timer::after(Duration::from_secs_f64(args.settle)).await;
        rep.idle = server();
        let heap_idle = alloc_dir
            .as_deref()
            .and_then(|d| countalloc::request(d, "idle"));
        rep.gen_rss_kib = procfs::sample("self").map(|s| s.rss_kib).unwrap_or(0);

        // ----- messages -----
        let senders: Vec<usize> = (0..2 * pairs)
            .filter(|&i| writers.borrow()[i].is_some() && writers.borrow()[i ^ 1].is_some())
            .collect();
        rep.msg_pairs = senders.len() / 2;
        let total = (senders.len() * args.messages) as u64;
        rep.msg_total = total;
        if total > 0 {
            sh.target.set(sh.delivered.get() + total);
            sh.latencies_us.borrow_mut().reserve(total as usize);
            let (start_tx, start_rx) = async_channel::bounded::<()>(1);
            let mut tasks = Vec::new();
            for &i in &senders {
                let w = writers.borrow_mut()[i].take().expect("writer");
                let credits = credit_rx[i].take().expect("credits");
                let to = jids[i ^ 1].clone().unwrap_or_default();
                let interval = args
                    .rate
                    .map(|r| Duration::from_secs_f64(senders.len() as f64 / r));
                tasks.push(ex.spawn(sender(
                    w,
                    to,
                    args.messages,
                    Pacing {
                        window: args.window,
                        interval,
                    },
                    credits,
                    start_rx.clone(),
                    sh.clone(),
                )));
            }
            let s0 = server();
            let g0 = procfs::self_cpu_ms();
            let t0 = Instant::now();
            start_tx.close();
            let finished = async {
                let _ = done_rx.recv().await;
                true
            }
            .or(async {
                smol::Timer::after(Duration::from_secs(300)).await;
                false
            })
            .await;
            rep.msg_wall = t0.elapsed().as_secs_f64();
            rep.msg_gen_cpu_ms = procfs::self_cpu_ms() - g0;
            rep.msg_before = s0;
            rep.msg_after = server();
            rep.msg_timed_out = !finished;
            rep.msg_delivered = sh.delivered.get();
            rep.msg_lat = std::mem::take(&mut *sh.latencies_us.borrow_mut());
            // Give the writers back so those connections stay open during --hold.
            for (t, &i) in tasks.into_iter().zip(&senders) {
                if let Some(w) = t.cancel().await.flatten() {
                    writers.borrow_mut()[i] = Some(w);
                }
            }
        }
        rep.stray = sh.stray.get();
        rep.stanza_errors = sh.errors.get();
        rep.closed = sh.closed.get();
        rep.print(args, n, pairs);
        if let Some(path) = &args.results {
            if let Err(e) = std::fs::write(path, rep.results(args)) {
                eprintln!("c2s bench: {}: {e}", path.display());
            }
        }
        if let Some(path) = &args.summary {
            if let Err(e) = rep.append_summary(args, path) {
                eprintln!("c2s bench: {}: {e}", path.display());
            }
        }
        if let (Some(a), Some(b)) = (&heap_base, &heap_idle) {
            countalloc::print_diff(a, b, rep.logged_in, 15);
        } else if alloc_dir.is_some() {
            eprintln!("no heap snapshots: was the server started with --serve-counted?");
        }
        if args.hold > 0.0 {
            eprintln!("holding {} sessions for {} s", rep.logged_in, args.hold);
            smol::Timer::after(Duration::from_secs_f64(args.hold)).await;
        }
        drop(writers);
    }));
    Ok(())
}

/// What `login_all` got: per client, the session and its full login time (µs, connect to
/// presence handled, or to bound without presence); failures grouped by message.
struct Logins {
    sessions: Vec<Option<(xmpp::Session, u32)>>,
    errors: BTreeMap<String, usize>,
}

/// Logs in every client with `mode`, `--concurrency` at a time.
async fn login_all(
    ex: &'static LocalExecutor<'static>,
    cfg: &Rc<Login>,
    mode: xmpp::Mode,
    args: &Args,
    tokens: &[Option<String>],
    presence: bool,
) -> Logins {
    let n = args.sessions;
    let next = Rc::new(Cell::new(0usize));
    let out = Rc::new(RefCell::new(Logins {
        sessions: (0..n).map(|_| None).collect(),
        errors: BTreeMap::new(),
    }));
    let tokens: Rc<Vec<Option<String>>> = Rc::new(tokens.to_vec());
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.min(n.max(1)) {
        let (next, cfg, out, tokens) = (next.clone(), cfg.clone(), out.clone(), tokens.clone());
        let prefix = args.prefix.clone();
        let fast_mech = args.fast_mech;
        // The fast mode's unmeasured SASL2 logins are there for the token.
        let request_token = !(presence && args.no_token);
        workers.push(ex.spawn(async move {
            loop {
                let i = next.get();
                if i >= n {
                    break;
                }
                next.set(i + 1);
                let user = format!("{prefix}{i}");
                // One SASL2 user-agent id per simulated client, the same across runs.
                let ua = format!("kith-bench-{prefix}{i}");
                let client = xmpp::Client {
                    user: &user,
                    resource: "r",
                    user_agent: &ua,
                    token: tokens[i].as_deref(),
                    fast_mech,
                    request_token,
                };
                let t = Instant::now();
                let r = xmpp::login_as(&cfg, mode, &client, presence)
                    .or(async {
                        smol::Timer::after(Duration::from_secs(60)).await;
                        Err("login timed out after 60 s".to_string())
                    })
                    .await;
                let us = t.elapsed().as_micros().min(u32::MAX as u128) as u32;
                match r {
                    Ok(s) => out.borrow_mut().sessions[i] = Some((s, us)),
                    Err(e) => {
                        // Group by the message without digits (ports, counts).
                        let key: String = e.chars().filter(|c| !c.is_ascii_digit()).collect();
                        *out.borrow_mut().errors.entry(key).or_default() += 1;
                    }
                }
            }
        }));
    }
    for w in workers {
        w.await;
    }
    Rc::try_unwrap(out)
        .ok()
        .map(RefCell::into_inner)
        .unwrap_or_else(|| Logins {
            sessions: Vec::new(),
            errors: BTreeMap::new(),
        })
}

/// Reads one session's stream until it ends: counts and timestamps messages, credits the
/// partner's sender, and counts everything else.
async fn reader(mut rd: ReadHalf<Tls>, mut framer: Framer, idx: usize, sh: Rc<Shared>) {
    let mut buf = vec![0u8; 4096];
    'outer: loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if framer.push(&buf[..n]).is_err() {
            break;
        }
        loop {
            match framer.next_frame() {
                Ok(Some(Frame::Element(el))) => handle(&el, idx, &sh),
                Ok(None) => break,
                Ok(Some(_)) | Err(_) => break 'outer,
            }
        }
    }
    sh.closed.set(sh.closed.get() + 1);
}

fn handle(el: &Element, idx: usize, sh: &Shared) {
    if el.attr("type") == Some("error") {
        sh.errors.set(sh.errors.get() + 1);
        return;
    }
    let stamp = (el.name() == "message")
        .then(|| el.get_child("body", "jabber:client"))
        .flatten()
        .and_then(|b| b.text().parse::<u64>().ok());
    let Some(sent) = stamp else {
        sh.stray.set(sh.stray.get() + 1);
        return;
    };
    let lat = sh.now_us().saturating_sub(sent);
    sh.latencies_us
        .borrow_mut()
        .push(lat.min(u32::MAX as u64) as u32);
    if let Some(Some(c)) = sh.credits.get(idx ^ 1) {
        let _ = c.try_send(());
    }
    let d = sh.delivered.get() + 1;
    sh.delivered.set(d);
    if d == sh.target.get() {
        let _ = sh.done.try_send(());
    }
}

/// How a sender paces itself: at most `window` messages unacknowledged, and with `interval`,
/// one message per interval.
struct Pacing {
    window: usize,
    interval: Option<Duration>,
}

/// Sends `count` timestamped messages to `to`, at most `window` unacknowledged (the partner's
/// reader hands back one credit per message it receives). Returns the writer when done.
async fn sender(
    mut w: WriteHalf<Tls>,
    to: String,
    count: usize,
    Pacing { window, interval }: Pacing,
    credits: Receiver<()>,
    start: Receiver<()>,
    sh: Rc<Shared>,
) -> Option<WriteHalf<Tls>> {
    let _ = start.recv().await; // closed: go
                                // Paced senders start spread over one interval, so the server sees an even stream
                                // rather than every sender's message at the same instant.
    let t0 = Instant::now() + interval.map_or(Duration::ZERO, |i| i.mul_f64(fastrand::f64()));
    for seq in 0..count {
        if let Some(i) = interval {
            // Scheduled from the start, not from the previous send: a late message does not
            // push back the ones after it (the offered rate stays the target).
            smol::Timer::at(t0 + i * seq as u32).await;
        }
        if seq >= window && credits.recv().await.is_err() {
            return None;
        }
        let msg = format!(
            "<message to='{to}' type='chat' id='m{seq}'><body>{}</body></message>",
            sh.now_us()
        );
        if w.write_all(msg.as_bytes()).await.is_err() || w.flush().await.is_err() {
            return None;
        }
    }
    Some(w)
}

#[derive(Default)]
struct Report {
    base: Option<procfs::Sample>,
    after_login: Option<procfs::Sample>,
    idle: Option<procfs::Sample>,
    login_wall: f64,
    login_gen_cpu_ms: f64,
    logged_in: usize,
    login_lat: Vec<u32>,
    /// Per login, µs from TCP connect to TLS established, and to a bound resource.
    tls_lat: Vec<u32>,
    bound_lat: Vec<u32>,
    /// Round trips after the TLS handshake until bound: how many logins took each count.
    trips: BTreeMap<u32, usize>,
    login_errors: BTreeMap<String, usize>,
    pbkdf2: u32,
    gen_rss_kib: u64,
    msg_pairs: usize,
    msg_total: u64,
    msg_delivered: u64,
    msg_wall: f64,
    msg_gen_cpu_ms: f64,
    msg_before: Option<procfs::Sample>,
    msg_after: Option<procfs::Sample>,
    msg_timed_out: bool,
    msg_lat: Vec<u32>,
    stray: u64,
    stanza_errors: u64,
    closed: u64,
}

impl Report {
    /// The login flow, in words.
    fn how(&self, args: &Args) -> String {
        let scram = kith::sasl::Mechanism::scram(args.scram, args.plus).name();
        match args.login {
            xmpp::Mode::Classic => format!("{scram}, restart, bind"),
            xmpp::Mode::Sasl2 if args.no_token => format!("SASL2 {scram} + Bind 2, no token"),
            xmpp::Mode::Sasl2 => format!("SASL2 {scram} + Bind 2 + FAST token request"),
            xmpp::Mode::Fast => format!("SASL2 FAST {} + Bind 2", args.fast_mech),
        }
    }

    /// "3" when every login took 3 round trips, else "2 (990), 3 (10)".
    fn trips_text(&self) -> String {
        match self.trips.len() {
            0 => "-".into(),
            1 => self
                .trips
                .keys()
                .next()
                .map(u32::to_string)
                .unwrap_or_default(),
            _ => self
                .trips
                .iter()
                .map(|(t, c)| format!("{t} ({c})"))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// One tab-separated line: mode, flow, sessions, logged in, logins/s, server CPU ms per
    /// login, generator CPU ms per login, connect→bound p50 and p99 (ms), round trips after
    /// TLS, connect→TLS p50 (ms), full login p50 and p99 (ms), failures.
    fn append_summary(&mut self, args: &Args, path: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write as _;
        let per = |x: f64| x / self.logged_in.max(1) as f64;
        let server_cpu = match (self.base, self.after_login) {
            (Some(a), Some(b)) => format!("{:.2}", per(b.cpu_ms - a.cpu_ms)),
            _ => "-".into(),
        };
        let line = format!(
            "{}\t{}\t{}\t{}\t{:.0}\t{}\t{:.2}\t{:.1}\t{:.1}\t{}\t{:.1}\t{:.1}\t{:.1}\t{}\n",
            args.login.name(),
            self.how(args),
            args.sessions,
            self.logged_in,
            self.logged_in as f64 / self.login_wall,
            server_cpu,
            per(self.login_gen_cpu_ms),
            pct(&mut self.bound_lat, 0.5),
            pct(&mut self.bound_lat, 0.99),
            self.trips_text(),
            pct(&mut self.tls_lat, 0.5),
            pct(&mut self.login_lat, 0.5),
            pct(&mut self.login_lat, 0.99),
            self.login_errors.values().sum::<usize>(),
        );
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?
            .write_all(line.as_bytes())
    }
}

impl Report {
    /// Every figure as `key\tvalue` lines; `nan` where there is no reading.
    fn results(&mut self, args: &Args) -> String {
        let mut out = String::new();
        let mut put = |k: &str, v: f64| out.push_str(&format!("{k}\t{v:.3}\n"));
        let n = self.logged_in.max(1) as f64;
        put("sessions", args.sessions as f64);
        put("logged_in", self.logged_in as f64);
        put(
            "login_errors",
            self.login_errors.values().sum::<usize>() as f64,
        );
        put("logins_per_s", self.logged_in as f64 / self.login_wall);
        put("login_p50_ms", pct(&mut self.login_lat, 0.5));
        put("login_p99_ms", pct(&mut self.login_lat, 0.99));
        put("gen_cpu_ms_per_login", self.login_gen_cpu_ms / n);
        let nan = f64::NAN;
        let (base, after, idle) = (self.base, self.after_login, self.idle);
        put(
            "server_rss_base_kib",
            base.map_or(nan, |b| b.rss_kib as f64),
        );
        put(
            "server_rss_idle_kib",
            idle.map_or(nan, |i| i.rss_kib as f64),
        );
        put(
            "server_kib_per_session",
            match (base, idle) {
                (Some(b), Some(i)) => (i.rss_kib as f64 - b.rss_kib as f64) / n,
                _ => nan,
            },
        );
        put(
            "server_cpu_ms_per_login",
            match (base, after) {
                (Some(b), Some(a)) => (a.cpu_ms - b.cpu_ms) / n,
                _ => nan,
            },
        );
        put("gen_rss_kib", self.gen_rss_kib as f64);
        put("msg_total", self.msg_total as f64);
        put("msg_delivered", self.msg_delivered as f64);
        put("msg_timed_out", if self.msg_timed_out { 1.0 } else { 0.0 });
        let d = self.msg_delivered.max(1) as f64;
        let wall = self.msg_wall;
        put(
            "msgs_per_s",
            if wall > 0.0 {
                self.msg_delivered as f64 / wall
            } else {
                nan
            },
        );
        put("msg_p50_ms", pct(&mut self.msg_lat, 0.5));
        put("msg_p99_ms", pct(&mut self.msg_lat, 0.99));
        put("msg_p999_ms", pct(&mut self.msg_lat, 0.999));
        put("msg_max_ms", pct(&mut self.msg_lat, 1.0));
        put(
            "server_cpu_s_per_100k_msgs",
            match (self.msg_before, self.msg_after) {
                (Some(b), Some(a)) => (a.cpu_ms - b.cpu_ms) / d * 100.0,
                _ => nan,
            },
        );
        put(
            "server_cpu_pct_msgs",
            match (self.msg_before, self.msg_after) {
                (Some(b), Some(a)) if wall > 0.0 => (a.cpu_ms - b.cpu_ms) / 10.0 / wall,
                _ => nan,
            },
        );
        put(
            "gen_cpu_pct_msgs",
            if wall > 0.0 {
                self.msg_gen_cpu_ms / 10.0 / wall
            } else {
                nan
            },
        );
        put(
            "server_rss_after_msgs_kib",
            self.msg_after.map_or(nan, |a| a.rss_kib as f64),
        );
        put("stanza_errors", self.stanza_errors as f64);
        put("sessions_closed", self.closed as f64);
        put("stray", self.stray as f64);
        out
    }
}

fn pct(v: &mut [u32], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i] as f64 / 1000.0
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

impl Report {
    fn print(&mut self, args: &Args, n: usize, pairs: usize) {
        let how = self.how(args);
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        println!();
        println!(
            "kith c2s bench: {n} sessions (STARTTLS, TLS 1.3{}, {how}, presence), \
             {pairs} pairs x {} msgs each way, window {}, login concurrency {}, {cpus} CPUs",
            if args.resume { ", resumption on" } else { "" },
            args.messages,
            args.window,
            args.concurrency
        );
        println!();
        println!("| phase | metric | value |");
        println!("|---|---|---|");
        let row = |p: &str, m: &str, v: String| println!("| {p} | {m} | {v} |");
        let failed = n - self.logged_in;
        row(
            "login",
            "sessions logged in",
            format!("{} of {n} ({failed} failed)", self.logged_in),
        );
        row("login", "wall time", format!("{:.2} s", self.login_wall));
        row(
            "login",
            "logins/s",
            format!("{:.0}", self.logged_in as f64 / self.login_wall),
        );
        row(
            "login",
            "TCP connect to TLS up p50 / p99",
            format!(
                "{:.1} / {:.1} ms",
                pct(&mut self.tls_lat, 0.5),
                pct(&mut self.tls_lat, 0.99)
            ),
        );
        row(
            "login",
            "**TCP connect to bound resource p50 / p99**",
            format!(
                "**{:.1} / {:.1} ms**",
                pct(&mut self.bound_lat, 0.5),
                pct(&mut self.bound_lat, 0.99)
            ),
        );
        row("login", "round trips after TLS to bound", self.trips_text());
        row(
            "login",
            "login latency (to presence handled) p50 / p99",
            format!(
                "{:.1} / {:.1} ms",
                pct(&mut self.login_lat, 0.5),
                pct(&mut self.login_lat, 0.99)
            ),
        );
        if let (Some(a), Some(b)) = (self.base, self.after_login) {
            let cpu = b.cpu_ms - a.cpu_ms;
            row(
                "login",
                "server CPU per login",
                format!(
                    "{:.2} ms ({:.0} ms total, {:.0}% of one core)",
                    cpu / self.logged_in.max(1) as f64,
                    cpu,
                    cpu / 10.0 / self.login_wall
                ),
            );
        }
        row(
            "login",
            "generator CPU per login",
            format!(
                "{:.2} ms ({:.0}% of one core; PBKDF2 runs: {})",
                self.login_gen_cpu_ms / self.logged_in.max(1) as f64,
                self.login_gen_cpu_ms / 10.0 / self.login_wall,
                self.pbkdf2
            ),
        );
        if let (Some(a), Some(i)) = (self.base, self.idle) {
            row("idle", "server RSS before logins", mib(a.rss_kib));
            row(
                "idle",
                "server RSS with sessions idle",
                format!(
                    "{} (peak {}, threads {})",
                    mib(i.rss_kib),
                    mib(i.hwm_kib),
                    i.threads
                ),
            );
            let per = (i.rss_kib as f64 - a.rss_kib as f64) / self.logged_in.max(1) as f64;
            row(
                "idle",
                "**server RSS per idle session**",
                format!("**{per:.1} KiB**"),
            );
            let anon = (i.anon_kib as f64 - a.anon_kib as f64) / self.logged_in.max(1) as f64;
            row(
                "idle",
                "server RssAnon per idle session",
                format!("{anon:.1} KiB"),
            );
        }
        row("idle", "generator RSS", mib(self.gen_rss_kib));
        if self.msg_total > 0 {
            row(
                "messages",
                "delivered",
                format!(
                    "{} of {} ({} pairs){}",
                    self.msg_delivered,
                    self.msg_total,
                    self.msg_pairs,
                    if self.msg_timed_out { " TIMED OUT" } else { "" }
                ),
            );
            row("messages", "wall time", format!("{:.2} s", self.msg_wall));
            row(
                "messages",
                "messages/s routed",
                format!("{:.0}", self.msg_delivered as f64 / self.msg_wall),
            );
            row(
                "messages",
                "latency p50 / p99 / p99.9 / max",
                format!(
                    "{:.2} / {:.2} / {:.2} / {:.2} ms",
                    pct(&mut self.msg_lat, 0.5),
                    pct(&mut self.msg_lat, 0.99),
                    pct(&mut self.msg_lat, 0.999),
                    pct(&mut self.msg_lat, 1.0)
                ),
            );
            if let (Some(a), Some(b)) = (self.msg_before, self.msg_after) {
                let cpu = b.cpu_ms - a.cpu_ms;
                row(
                    "messages",
                    "server CPU per message",
                    format!(
                        "{:.1} µs ({:.0}% of one core)",
                        cpu * 1000.0 / self.msg_delivered.max(1) as f64,
                        cpu / 10.0 / self.msg_wall
                    ),
                );
                row(
                    "messages",
                    "server RSS after messages",
                    format!("{} (peak {})", mib(b.rss_kib), mib(b.hwm_kib)),
                );
            }
            row(
                "messages",
                "generator CPU per message",
                format!(
                    "{:.1} µs ({:.0}% of one core)",
                    self.msg_gen_cpu_ms * 1000.0 / self.msg_delivered.max(1) as f64,
                    self.msg_gen_cpu_ms / 10.0 / self.msg_wall
                ),
            );
        }
        if !self.login_errors.is_empty() {
            for (e, c) in &self.login_errors {
                row("errors", "login failure", format!("{c} x {e}"));
            }
        }
        if self.stanza_errors + self.closed > 0 {
            row(
                "errors",
                "error stanzas / sessions closed",
                format!("{} / {}", self.stanza_errors, self.closed),
            );
        }
        row("", "other stanzas received", self.stray.to_string());
    }
}
