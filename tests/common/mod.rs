//! End-to-end test harness: runs the real `kith` binary as a user would.
//!
//! Owns: making a throwaway server (temp dir, free loopback ports, `kith.toml`), starting
//! `kith --config PATH run`, waiting until it listens, the CLI (`kith --config PATH user add
//! ...`), clean shutdown by SIGTERM, restart on the same ports and data, and showing the
//! server's log when a test fails.
//!
//! Must not know: anything inside kith. It only uses the binary, its command line and the
//! config format, so it keeps working whatever the crate's modules look like. Every end-to-end
//! test file pulls it in with `mod common;`; not every file uses every item, hence the
//! `dead_code` allowance below.
//!
//! ```ignore
//! mod common;
//! let server = common::TestServer::start();
//! server.add_user("alice", "alice-secret");
//! // ... connect to 127.0.0.1:server.c2s_port ...
//! let status = server.stop();
//! assert!(status.success(), "{}", server.log());
//! ```
#![allow(dead_code)]

pub mod dnsmasq;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The `kith` binary that cargo built for this test run.
pub const KITH_BIN: &str = env!("CARGO_BIN_EXE_kith");

/// How long `start` waits for the listeners to accept TCP.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Ending of the harness's panic messages: `Drop` prints the log while a test is panicking, so
/// panics do not repeat it.
const FOLLOWS: &str = "(the kith log follows)";

/// How long `stop` waits for the process to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The listener kinds of `[listen]` in kith.toml, in the order they are written.
pub const LISTENERS: [&str; 7] = [
    "c2s",
    "c2s_direct_tls",
    "s2s",
    "s2s_direct_tls",
    "https",
    "http",
    "components",
];

/// What to start. `TestServer::start()` is `Options::default().start()`.
#[derive(Clone, Debug)]
pub struct Options {
    /// The XMPP domain served (`domain = ...`). Default `localhost`, which the self-signed
    /// certificate kith generates covers.
    pub domain: String,
    /// TOML inserted after the top-level keys and before `[listen]`: it may set top-level
    /// keys and add tables such as `[tls]`, but not `[listen]` (use `listen` for that).
    pub extra_toml: String,
    /// Listener kinds (see `LISTENERS`) that get a free port besides `c2s` and
    /// `c2s_direct_tls`, which always get one. Read the port back with `TestServer::port`.
    pub listen: Vec<String>,
    /// Extra environment for the server process (e.g. a log level variable).
    pub env: Vec<(String, String)>,
    /// The program (and its first arguments) that stands for `kith`, for the server and the
    /// CLI; default `KITH_BIN`. E.g. `["qemu-aarch64", "/path/to/aarch64/kith"]`.
    pub exec: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            domain: "localhost".to_owned(),
            extra_toml: String::new(),
            listen: Vec::new(),
            env: Vec::new(),
            exec: vec![KITH_BIN.to_owned()],
        }
    }
}

impl Options {
    pub fn domain(mut self, domain: &str) -> Self {
        self.domain = domain.to_owned();
        self
    }

    pub fn extra_toml(mut self, toml: &str) -> Self {
        self.extra_toml.push_str(toml);
        self.extra_toml.push('\n');
        self
    }

    /// Also listen for `kind` (one of `LISTENERS`) on a free loopback port.
    pub fn listen(mut self, kind: &str) -> Self {
        assert!(
            LISTENERS.contains(&kind),
            "unknown listener kind {kind:?}; expected one of {LISTENERS:?}"
        );
        if !self.listen.iter().any(|k| k == kind) {
            self.listen.push(kind.to_owned());
        }
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Run `program args… --config PATH …` instead of the `kith` cargo built.
    pub fn exec(mut self, program: &str, args: &[&str]) -> Self {
        self.exec = std::iter::once(program)
            .chain(args.iter().copied())
            .map(str::to_owned)
            .collect();
        self
    }

    pub fn start(self) -> TestServer {
        TestServer::start_opts(self)
    }
}

/// A running `kith --config PATH run` in its own temp dir, on its own loopback ports.
/// Dropping it kills the process; the temp dir is removed unless the test is failing, in
/// which case the log is printed and the dir kept for inspection.
pub struct TestServer {
    /// XMPP domain served.
    pub domain: String,
    /// STARTTLS client port (`[listen] c2s`).
    pub c2s_port: u16,
    /// Direct-TLS client port (`[listen] c2s_direct_tls`, XEP-0368).
    pub tls_port: u16,
    /// The temp dir holding everything below.
    pub dir: PathBuf,
    /// `data_dir` in the config.
    pub data_dir: PathBuf,
    /// The generated kith.toml.
    pub config_path: PathBuf,
    /// Where the server's stderr and stdout go (appended across restarts).
    pub log_path: PathBuf,
    /// Every listener kind with its port, including c2s and c2s_direct_tls.
    pub ports: Vec<(String, u16)>,
    options: Options,
    child: Option<Child>,
    starts: usize,
}

impl TestServer {
    /// Start with the default config: domain `localhost`, c2s and c2s_direct_tls on free
    /// ports, every other listener off, no `[tls]` (kith makes a self-signed certificate).
    pub fn start() -> TestServer {
        Options::default().start()
    }

    /// Start with `extra_toml` inserted before `[listen]` (see `Options::extra_toml`).
    pub fn start_with(extra_toml: &str) -> TestServer {
        Options::default().extra_toml(extra_toml).start()
    }

    /// Start with full control over the options.
    pub fn start_opts(options: Options) -> TestServer {
        let dir = unique_temp_dir();
        let data_dir = dir.join("data");
        let config_path = dir.join("kith.toml");
        let log_path = dir.join("kith.log");

        let mut kinds: Vec<String> = vec!["c2s".into(), "c2s_direct_tls".into()];
        for kind in &options.listen {
            if !kinds.contains(kind) {
                kinds.push(kind.clone());
            }
        }
        let ports: Vec<(String, u16)> = kinds.into_iter().map(|k| (k, free_port())).collect();
        let port_of = |kind: &str| ports.iter().find(|(k, _)| k == kind).map(|(_, p)| *p);

        let config = render_config(&options, &data_dir, &ports);
        fs::write(&config_path, config)
            .unwrap_or_else(|e| panic!("writing {}: {e}", config_path.display()));

        let mut server = TestServer {
            domain: options.domain.clone(),
            c2s_port: port_of("c2s").expect("c2s port"),
            tls_port: port_of("c2s_direct_tls").expect("c2s_direct_tls port"),
            dir,
            data_dir,
            config_path,
            log_path,
            ports,
            options,
            child: None,
            starts: 0,
        };
        server.spawn_and_wait();
        server
    }

    /// The port of listener `kind` (one of `LISTENERS`), if this server listens for it.
    pub fn port(&self, kind: &str) -> u16 {
        self.ports
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, p)| *p)
            .unwrap_or_else(|| {
                panic!("this TestServer has no {kind:?} listener; ask with Options::listen")
            })
    }

    /// `local@domain`.
    pub fn jid(&self, local: &str) -> String {
        format!("{local}@{}", self.domain)
    }

    /// The process id of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Run `kith --config PATH ARGS...` to completion (stdin closed) and return its output.
    pub fn cli<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(&self.options.exec[0]);
        cmd.args(&self.options.exec[1..]);
        cmd.arg("--config").arg(&self.config_path).args(args);
        cmd.stdin(Stdio::null());
        for (k, v) in &self.options.env {
            cmd.env(k, v);
        }
        cmd.output()
            .unwrap_or_else(|e| panic!("running {KITH_BIN}: {e}"))
    }

    /// Run the CLI and panic (with its output and the server log) unless it exits 0.
    pub fn cli_ok<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let args: Vec<std::ffi::OsString> =
            args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.cli(&args);
        if !out.status.success() {
            panic!(
                "`kith --config {} {}` failed with {}\n{}\n{}",
                self.config_path.display(),
                args.iter()
                    .map(|a| a.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" "),
                out.status,
                describe_output(&out),
                FOLLOWS
            );
        }
        out
    }

    /// Create `local@domain` with `password` through `kith user add` (works while running).
    pub fn add_user(&self, local: &str, password: &str) {
        let jid = self.jid(local);
        self.cli_ok(["user", "add", &jid, "--password", password]);
    }

    /// Everything the server has written to stderr/stdout so far (all runs).
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Wait until the log contains `needle`; false on timeout.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// True while the server process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Send SIGTERM, wait up to `STOP_TIMEOUT` for the process to exit and return its exit
    /// status. Panics (with the log) if it does not exit in time or was not running.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("stop: the server is not running\n{FOLLOWS}"));
        if let Ok(Some(status)) = child.try_wait() {
            panic!("stop: the server had already exited with {status}\n{FOLLOWS}");
        }
        // std has no signal API and the crate takes no libc dependency for tests: use kill(1).
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        match sent {
            Ok(s) if s.success() => {}
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "stop: `kill -TERM {}` failed: {other:?}\n{}",
                    child.id(),
                    FOLLOWS
                );
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.note(&format!("stopped by SIGTERM: {status}"));
                    return status;
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(25)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "stop: the server did not exit within {STOP_TIMEOUT:?} of SIGTERM \
                         (killed it)\n{FOLLOWS}"
                    );
                }
                Err(e) => panic!("stop: waiting for the server: {e}\n{FOLLOWS}"),
            }
        }
    }

    /// SIGKILL, as in a crash or a power cut: no shutdown, nothing flushed. `start_again`
    /// starts it on the same ports and data.
    pub fn kill_9(&mut self) {
        let mut child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("kill_9: the server is not running\n{FOLLOWS}"));
        let _ = child.kill();
        let _ = child.wait();
        self.note("killed with SIGKILL");
    }

    /// Start again after `stop` (for tests that change the data directory meanwhile), on the
    /// same ports, config and data_dir.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again: the server is running");
        self.spawn_and_wait();
    }

    /// Stop (asserting a clean exit: SIGTERM must exit 0) and start again on the same ports,
    /// config and data_dir.
    pub fn restart(&mut self) {
        let status = self.stop();
        assert!(
            status.success(),
            "restart: the server exited with {status} on SIGTERM\n{FOLLOWS}"
        );
        self.spawn_and_wait();
    }

    /// The tail of the log with a header naming the files, for panic messages.
    pub fn log_report(&self) -> String {
        const MAX: usize = 64 * 1024;
        let log = self.log();
        let shown = if log.len() > MAX {
            let mut cut = log.len() - MAX;
            while !log.is_char_boundary(cut) {
                cut += 1;
            }
            format!("[... {cut} earlier bytes in the file ...]\n{}", &log[cut..])
        } else {
            log
        };
        let mut report = String::new();
        let _ = writeln!(
            report,
            "----- kith log ({}; config {}) -----",
            self.log_path.display(),
            self.config_path.display()
        );
        report.push_str(&shown);
        if !report.ends_with('\n') {
            report.push('\n');
        }
        report.push_str("----- end of kith log -----");
        report
    }

    fn spawn_and_wait(&mut self) {
        self.starts += 1;
        self.note(&format!(
            "start #{} : {} --config {} run",
            self.starts,
            KITH_BIN,
            self.config_path.display()
        ));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.log_path.display()));
        let log_err = log.try_clone().expect("cloning the log file handle");
        let mut cmd = Command::new(&self.options.exec[0]);
        cmd.args(&self.options.exec[1..])
            .arg("--config")
            .arg(&self.config_path)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .env("RUST_BACKTRACE", "1");
        for (k, v) in &self.options.env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {KITH_BIN}: {e}"));
        self.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        let ports = self.ports.clone();
        for (kind, port) in &ports {
            let addr = SocketAddr::from(([127, 0, 0, 1], *port));
            loop {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    break;
                }
                if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                    self.child = None;
                    panic!(
                        "kith exited with {status} before listening on {kind} port {port}\n{FOLLOWS}");
                }
                if Instant::now() >= deadline {
                    panic!(
                        "kith did not accept TCP on {kind} port {port} within {START_TIMEOUT:?}\n{FOLLOWS}");
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        // The TCP listeners are bound before the admin socket, so a port that accepts does
        // not yet mean `kith user ...` reaches the server: without the socket the CLI opens
        // the store itself and fails with "in use by another process" (seen under load).
        let admin = self.data_dir.join("admin.sock");
        while std::os::unix::net::UnixStream::connect(&admin).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                panic!(
                    "kith exited with {status} before opening {}\n{FOLLOWS}",
                    admin.display()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "kith did not open {} within {START_TIMEOUT:?}\n{FOLLOWS}",
                    admin.display()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// A harness line in the log, so restarts and stops can be told apart when reading it.
    fn note(&self, line: &str) {
        if let Ok(mut f) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
        {
            let _ = writeln!(f, "=== test harness: {line}");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "{}\n(test dir kept: {})",
                self.log_report(),
                self.dir.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A loopback port free for TCP a moment ago, never handed out twice in one test binary.
pub fn free_port() -> u16 {
    pick_port(false)
}

/// A loopback port free for both UDP and TCP a moment ago (for `[turn] listen` and dnsmasq,
/// which bind both), never handed out twice in one test binary.
pub fn free_udp_port() -> u16 {
    pick_port(true)
}

/// Picks at random below the kernel's ephemeral range (`ip_local_port_range`), checks that
/// the port binds, then closes it for the server under test to bind. Below that range, no
/// outgoing connection of a concurrent test can take the port in the moment between; a port
/// from `bind(127.0.0.1:0)` could be. Another process could still take it; that is accepted.
fn pick_port(udp: bool) -> u16 {
    use std::hash::{BuildHasher, RandomState};
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = ephemeral_low.saturating_sub(12_000).max(1024);
    let span = u64::from(ephemeral_low.saturating_sub(low).max(1));
    let random = RandomState::new();
    for attempt in 0..1000u32 {
        let port = low + (random.hash_one(attempt) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_err()
            || (udp && std::net::UdpSocket::bind(("127.0.0.1", port)).is_err())
        {
            continue;
        }
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
    panic!("no free loopback port in {low}..{ephemeral_low} after 1000 tries");
}

/// A new empty directory under cargo's per-target temp dir (target/tmp), unique per process
/// and call.
pub fn unique_temp_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    fs::create_dir_all(base).unwrap_or_else(|e| panic!("creating {}: {e}", base.display()));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("kith-e2e-{}-{n}-{nanos:09}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => return dir,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("creating {}: {e}", dir.display()),
        }
    }
}

/// Stdout and stderr of a finished command, labelled, for panic messages.
pub fn describe_output(out: &Output) -> String {
    format!(
        "----- stdout -----\n{}\n----- stderr -----\n{}\n----- end -----",
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    )
}

fn render_config(options: &Options, data_dir: &Path, ports: &[(String, u16)]) -> String {
    let mut toml = String::new();
    let _ = writeln!(toml, "# written by tests/common/mod.rs");
    let _ = writeln!(toml, "domain = {}", toml_string(&options.domain));
    let _ = writeln!(
        toml,
        "data_dir = {}",
        toml_string(&data_dir.to_string_lossy())
    );
    if !options.extra_toml.trim().is_empty() {
        toml.push('\n');
        toml.push_str(&options.extra_toml);
        if !toml.ends_with('\n') {
            toml.push('\n');
        }
    }
    // The built-in STUN/TURN server would listen on [::]:3478 in every test; tests that want
    // it configure [turn] themselves (see `free_udp_port`).
    if !options.extra_toml.contains("[turn]") {
        toml.push_str("\n[turn]\nenabled = false\n");
    }
    toml.push_str("\n[listen]\n");
    for kind in LISTENERS {
        let addrs: Vec<String> = ports
            .iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, p)| toml_string(&format!("127.0.0.1:{p}")))
            .collect();
        let _ = writeln!(toml, "{kind} = [{}]", addrs.join(", "));
    }
    toml
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub mod client;
