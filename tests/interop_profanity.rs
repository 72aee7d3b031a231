//! Interop: Profanity (Debian `profanity`, a terminal client built on libstrophe) against the
//! real `kith` binary, used the way a person uses it: typed into through tmux `send-keys` and
//! read back with `tmux capture-pane -p`.
//!
//! Owns: a throwaway Profanity (its own HOME, XDG_CONFIG_HOME and XDG_DATA_HOME inside the
//! server's temp dir, desktop notifications off, `-l DEBUG` so its log holds the raw XML) in a
//! detached 200x50 tmux session on a tmux socket of its own (`tmux -L <unique>`: never the
//! user's tmux, and tests may run in parallel); and bob on the other side, a slixmpp client
//! (`tests/interop/profanity_peer.py`) that obeys one command per line and answers `ok`/`fail`.
//! Every check is an observation: bob's answers and exit code, the text on Profanity's screen,
//! whether Profanity's process exited 0, and kith's log lines. On failure the panic shows the
//! screen, the tail of Profanity's log and bob's transcript; the harness adds the kith log
//! (run with `KITH_LOG=debug`).
//!
//! Must not know: kith's internals; this speaks XMPP over loopback only.
//!
//! Profanity, tmux or slixmpp missing is a failure, not a pass: install them with
//! `apt-get install profanity tmux python3-slixmpp` (`.ci/run` does). `KITH_SKIP_INTEROP=1`
//! turns that failure into a loud skip. `KITH_PYTHON` picks the interpreter, as in
//! `interop_slixmpp.rs`.
//!
//! What Profanity 0.13.1 (libstrophe 0.12.2, bookworm) does, worth knowing before reading a
//! failure: it has no SCRAM channel binding, so it takes the best plain `SCRAM-*` (gs2 header
//! `n,,`); it asks for the password at an `Enter password:` prompt, then stops at the
//! self-signed certificate until `/tls allow`; after binding it asks for private-XML
//! bookmarks, the XEP-0191 block list and carbons without looking at disco first, and shows
//! "Server error enabling message carbons: service-unavailable" for kith's (correct) error.

mod common;

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read as _, Seek, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use common::{Options, TestServer};

const PEER_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/interop/profanity_peer.py"
);

/// The longest any one thing may take to appear on Profanity's screen.
const SCREEN_TIMEOUT: Duration = Duration::from_secs(20);
/// What bob's `wait-*` commands are given, in seconds; his answer is awaited a little longer.
const PEER_WAIT_SECS: u64 = 15;

/// Typed into Profanity's password prompt through tmux, so ASCII only (a UTF-8 password would
/// test tmux's and the locale's handling of keys, not kith).
const ALICE: (&str, &str) = ("alice", "alice-profanity-secret-1");
// Non-ASCII on purpose: slixmpp's SASLprep and kith's must agree.
const BOB: (&str, &str) = ("bob", "bob-pässwörd-2");

const ALICE_SAYS: &str = "hello-from-profanity";
const BOB_SAYS: &str = "hello-from-bob-via-slixmpp";

/// Profanity's preferences for the run: no desktop notifications (on a developer's machine
/// they would pop up on the real desktop).
const PROFRC: &str = "\
[notifications]
message=false
room=false
invite=false
sub=false
";

/// tmux's config for the private server: no status line (all 50 rows are Profanity's) and
/// keep the pane after Profanity exits, so whatever it printed last can still be read.
const TMUX_CONF: &str = "\
set -g status off
set -g remain-on-exit on
";

const TMUX_SESSION: &str = "kith";
const COLS: &str = "200";
const ROWS: &str = "50";

#[test]
fn profanity_chat_roster_and_presence_over_starttls() {
    let Some(python) = tools_or_skip() else {
        return;
    };
    let mut server = server_with_alice_and_bob();
    let mut s = Scene::start(&server, &python);

    let connect = format!(
        "/connect {} server 127.0.0.1 port {}",
        server.jid(ALICE.0),
        server.c2s_port
    );
    s.login(&connect, "starttls");

    s.chat_both_ways();

    // Roster and subscription, in the console window (the chat window has the focus now).
    let bob = server.jid(BOB.0);
    let alice = server.jid(ALICE.0);
    s.type_line("/win 1");
    s.type_line(&format!("/roster add {bob}"));
    // Printed on the server's roster push, not on the command.
    s.screen_shows(&format!("Roster item added: {bob}"));
    s.type_line(&format!("/sub request {bob}"));
    // bob's client accepts (the server turns that into <presence type='subscribed'/> and a
    // roster push) and asks back; Profanity does not accept by itself.
    s.screen_shows(&format!("Subscription received from {bob}"));
    s.screen_shows(&format!("Received authorization request from {bob}"));
    s.type_line(&format!("/sub allow {bob}"));
    s.peer(&format!("wait-both {alice} {PEER_WAIT_SECS}"));
    s.roster_shows_both(&bob);
    // Bob's available presence reached Profanity, per resource, and it lists him as online.
    let bob_full = s.bob_full.clone();
    let bob_resource = bob_full.split_once('/').map(|(_, r)| r).unwrap_or("");
    s.screen_shows(&format!("{bob} ({bob_resource}) is online"));
    s.type_line("/who online");
    s.screen_shows(&format!("{bob} is online"));
    s.peer(&format!("wait-available {alice} {PEER_WAIT_SECS}"));

    s.quit(true);
    drop(s);
    stop_cleanly(&mut server);
}

#[test]
fn profanity_chat_over_direct_tls() {
    let Some(python) = tools_or_skip() else {
        return;
    };
    let mut server = server_with_alice_and_bob();
    let mut s = Scene::start(&server, &python);

    // "tls legacy" is Profanity's name for TLS from the first byte (XEP-0368 direct TLS).
    let connect = format!(
        "/connect {} server 127.0.0.1 port {} tls legacy",
        server.jid(ALICE.0),
        server.tls_port
    );
    s.login(&connect, "direct tls");
    s.chat_both_ways();
    s.quit(false);
    drop(s);
    stop_cleanly(&mut server);
}

fn server_with_alice_and_bob() -> TestServer {
    let server = Options::default().env("KITH_LOG", "debug").start();
    server.add_user(ALICE.0, ALICE.1);
    server.add_user(BOB.0, BOB.1);
    server
}

fn stop_cleanly(server: &mut TestServer) {
    let status = server.stop();
    assert!(
        status.success(),
        "kith exited with {status} on SIGTERM after the Profanity run"
    );
}

/// One Profanity (alice) and one slixmpp peer (bob) against one server. Every check goes
/// through here so a failure always shows everything that was seen.
struct Scene<'a> {
    server: &'a TestServer,
    prof: Profanity,
    peer: Peer,
    /// bob's full JID, from the peer's `ready` line.
    bob_full: String,
    started: Instant,
}

impl<'a> Scene<'a> {
    /// Bob logs in first (so he is online when alice arrives), then Profanity starts.
    fn start(server: &'a TestServer, python: &str) -> Scene<'a> {
        let started = Instant::now();
        let peer = Peer::start(server, python);
        let prof = Profanity::start(&server.dir);
        let mut scene = Scene {
            server,
            prof,
            peer,
            bob_full: String::new(),
            started,
        };
        match scene.peer.reply(Duration::from_secs(20)) {
            Ok(line) if line.starts_with("ready ") => {
                scene.bob_full = line["ready ".len()..].trim().to_owned();
            }
            Ok(line) => scene.fail(&format!("bob: expected `ready JID`, got {line:?}")),
            Err(e) => scene.fail(&format!("bob did not log in: {e}")),
        }
        scene.screen_shows("Type '/help' to show complete help.");
        scene
    }

    /// `/connect ...`, the password at the prompt, `/tls allow` for the self-signed
    /// certificate, then the "logged in" line, the [TLS] marker and kith's word for it.
    fn login(&mut self, connect: &str, kind: &str) {
        let alice = self.server.jid(ALICE.0);
        self.type_line(connect);
        self.screen_shows("Enter password:");
        self.type_line(ALICE.1);
        self.screen_shows("TLS certificate verification failed: self-signed certificate");
        self.screen_shows("Use '/tls allow' to accept this certificate.");
        self.type_line("/tls allow");
        let screen = self.screen_shows("logged in successfully");
        if !screen.lines().any(|l| l.contains(&format!("{alice}/"))) {
            self.fail(&format!(
                "no line on the screen names alice's full JID {alice}/..."
            ));
        }
        if !screen.contains("[TLS]") {
            self.fail("the title bar does not show [TLS] after login");
        }
        let want = format!("({kind})");
        if !self
            .server
            .log()
            .lines()
            .any(|l| l.contains("connection from") && l.contains(&want))
        {
            self.fail(&format!("kith logged no connection {want}"));
        }
        self.kith_log_shows(&format!("authenticated as {alice} (SCRAM-"));
        self.kith_log_shows(&format!("bound {alice}/"));
    }

    /// alice -> bob with `/msg`, then bob -> alice; the chat window has the focus after `/msg`.
    fn chat_both_ways(&mut self) {
        let bob = self.server.jid(BOB.0);
        let alice = self.server.jid(ALICE.0);
        self.type_line(&format!("/msg {bob} {ALICE_SAYS}"));
        self.peer(&format!(
            "wait-message {alice} {ALICE_SAYS} {PEER_WAIT_SECS}"
        ));
        self.screen_shows(&format!("me: {ALICE_SAYS}"));
        self.peer(&format!("send {alice} {BOB_SAYS}"));
        let line = format!("{}: {BOB_SAYS}", self.bob_full);
        self.screen_shows(&line);
    }

    /// `/roster` prints each item with its subscription; the push making it 'both' may land
    /// a moment after bob's, so ask again until it does.
    fn roster_shows_both(&mut self, bob: &str) {
        let needle = format!("{bob} - both");
        let deadline = Instant::now() + SCREEN_TIMEOUT;
        loop {
            self.type_line("/roster");
            if self.prof.wait_for(&needle, Duration::from_secs(1)).is_ok() {
                return;
            }
            if Instant::now() >= deadline {
                self.fail(&format!("`/roster` never showed {needle:?}"));
            }
        }
    }

    /// `/quit`: Profanity must exit 0, the server must log the stream closed by the client
    /// and, when bob is subscribed to alice's presence, bob must see her go unavailable; then
    /// bob quits and must exit 0.
    fn quit(&mut self, bob_subscribed: bool) {
        let alice = self.server.jid(ALICE.0);
        self.type_line("/quit");
        let deadline = Instant::now() + SCREEN_TIMEOUT;
        loop {
            match self.prof.exit_status() {
                Some(0) => break,
                Some(code) => self.fail(&format!("profanity exited with status {code} on /quit")),
                None if Instant::now() < deadline => thread::sleep(Duration::from_millis(100)),
                None => self.fail("profanity still running 20 s after /quit"),
            }
        }
        self.kith_log_shows("stream closed by the client");
        if bob_subscribed {
            self.peer(&format!("wait-unavailable {alice} {PEER_WAIT_SECS}"));
        }
        self.peer("quit");
        match self.peer.wait_exit(Duration::from_secs(10)) {
            Some(s) if s.success() => {}
            Some(s) => self.fail(&format!("bob's script exited with {s}")),
            None => self.fail("bob's script did not exit within 10 s of `quit`"),
        }
        println!(
            "profanity interop passed in {:.1} s",
            self.started.elapsed().as_secs_f64()
        );
    }

    fn type_line(&mut self, line: &str) {
        if let Err(e) = self.prof.type_line(line) {
            self.fail(&format!("typing {line:?}: {e}"));
        }
    }

    fn screen_shows(&mut self, needle: &str) -> String {
        match self.prof.wait_for(needle, SCREEN_TIMEOUT) {
            Ok(screen) => screen,
            Err(_) => self.fail(&format!(
                "Profanity's screen did not show {needle:?} within {SCREEN_TIMEOUT:?}"
            )),
        }
    }

    fn kith_log_shows(&mut self, needle: &str) {
        if !self.server.wait_for_log(needle, Duration::from_secs(5)) {
            self.fail(&format!("the kith log does not contain {needle:?}"));
        }
    }

    /// Send bob a command and return his `ok` line; anything else fails the test.
    fn peer(&mut self, command: &str) -> String {
        let wait = Duration::from_secs(PEER_WAIT_SECS + 10);
        match self.peer.command(command, wait) {
            Ok(line) => line,
            Err(e) => self.fail(&format!("bob `{command}`: {e}")),
        }
    }

    fn fail(&mut self, what: &str) -> ! {
        let elapsed = self.started.elapsed().as_secs_f64();
        panic!(
            "{what} (after {elapsed:.1} s)\n{}\n{}\n(the kith log follows)",
            self.prof.report(),
            self.peer.report()
        );
    }
}

/// Profanity in a detached tmux session on a private tmux server. Dropping it kills that
/// server (and with it Profanity).
struct Profanity {
    socket: String,
    /// The socket file tmux made for `-L socket`; removed on drop.
    socket_path: Option<PathBuf>,
    log_path: PathBuf,
    /// Written by the wrapper shell with Profanity's exit status.
    exit_file: PathBuf,
    /// Every line typed, for the failure report (the password is masked).
    typed: Vec<String>,
}

impl Profanity {
    fn start(dir: &Path) -> Profanity {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let socket = format!(
            "kith-profanity-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let home = dir.join("profanity-home");
        let config = home.join("config");
        let data = home.join("data");
        let cache = home.join("cache");
        for d in [config.join("profanity"), data.clone(), cache.clone()] {
            fs::create_dir_all(&d).unwrap_or_else(|e| panic!("creating {}: {e}", d.display()));
        }
        fs::write(config.join("profanity/profrc"), PROFRC).expect("writing profrc");
        let tmux_conf = home.join("tmux.conf");
        fs::write(&tmux_conf, TMUX_CONF).expect("writing tmux.conf");

        let exit_file = home.join("profanity.exit");
        let mut prof = Profanity {
            socket,
            socket_path: None,
            log_path: data.join("profanity/logs/profanity.log"),
            exit_file: exit_file.clone(),
            typed: Vec::new(),
        };
        let env_args: Vec<String> = vec![
            format!("HOME={}", home.display()),
            format!("XDG_CONFIG_HOME={}", config.display()),
            format!("XDG_DATA_HOME={}", data.display()),
            format!("XDG_CACHE_HOME={}", cache.display()),
            format!("GNUPGHOME={}", home.join("gnupg").display()),
            format!("KITH_PROFANITY_EXIT={}", exit_file.display()),
        ];
        let mut args: Vec<String> = vec![
            "-f".into(),
            tmux_conf.display().to_string(),
            "new-session".into(),
            "-d".into(),
            "-s".into(),
            TMUX_SESSION.into(),
            "-x".into(),
            COLS.into(),
            "-y".into(),
            ROWS.into(),
            "--".into(),
            // Nothing of the user's desktop session: no notifications, no clipboard.
            "env".into(),
            "-u".into(),
            "DBUS_SESSION_BUS_ADDRESS".into(),
            "-u".into(),
            "DISPLAY".into(),
            "-u".into(),
            "WAYLAND_DISPLAY".into(),
        ];
        args.extend(env_args);
        // A shell waits for Profanity and writes its exit status to a file: tmux 3.3a's
        // #{pane_dead_status} is not reliable here (it sometimes never reaps Profanity, which
        // stays a zombie with the pane marked dead and no status).
        args.extend([
            "sh".into(),
            "-c".into(),
            r#"profanity "$@"; echo "$?" > "$KITH_PROFANITY_EXIT""#.into(),
            "sh".into(),
            "-l".into(),
            "DEBUG".into(),
        ]);
        let out = prof.tmux(&args);
        assert!(
            out.status.success(),
            "starting profanity in tmux failed: tmux -L {} {}\n{}",
            prof.socket,
            args.join(" "),
            common::describe_output(&out)
        );
        let out = prof.tmux(&[
            "display-message",
            "-p",
            "-t",
            TMUX_SESSION,
            "#{socket_path}",
        ]);
        let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() && !path.is_empty() {
            prof.socket_path = Some(PathBuf::from(path));
        }
        prof
    }

    fn tmux<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .env_remove("TMUX")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running tmux: {e}"))
    }

    /// Type `line` literally, then Enter.
    fn type_line(&mut self, line: &str) -> Result<(), String> {
        let shown = if line == ALICE.1 { "********" } else { line };
        self.typed.push(shown.to_owned());
        for keys in [
            &["send-keys", "-t", TMUX_SESSION, "-l", line][..],
            &["send-keys", "-t", TMUX_SESSION, "Enter"][..],
        ] {
            let out = self.tmux(keys);
            if !out.status.success() {
                return Err(format!(
                    "tmux send-keys failed\n{}",
                    common::describe_output(&out)
                ));
            }
        }
        Ok(())
    }

    /// The visible screen as text, or a note saying why there is none.
    fn screen(&self) -> String {
        let out = self.tmux(&["capture-pane", "-p", "-t", TMUX_SESSION]);
        if out.status.success() {
            String::from_utf8_lossy(&out.stdout).into_owned()
        } else {
            format!(
                "(tmux capture-pane failed)\n{}",
                common::describe_output(&out)
            )
        }
    }

    /// Poll the screen until it contains `needle`: Ok(screen), or Err(last screen).
    fn wait_for(&self, needle: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if screen.contains(needle) {
                return Ok(screen);
            }
            if Instant::now() >= deadline {
                return Err(screen);
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Profanity's exit status once its process has ended (128+N: killed by signal N).
    fn exit_status(&self) -> Option<i32> {
        fs::read_to_string(&self.exit_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    fn report(&self) -> String {
        const LOG_TAIL: u64 = 48 * 1024;
        let log = tail_of(&self.log_path, LOG_TAIL);
        let dead = match self.exit_status() {
            Some(code) => format!("exited with status {code}"),
            None => "still running".to_owned(),
        };
        format!(
            "----- profanity screen (tmux -L {} capture-pane; profanity {dead}) -----\n{}\n\
             ----- typed into profanity -----\n{}\n\
             ----- profanity log ({}) -----\n{log}\n----- end of profanity log -----",
            self.socket,
            trim_lines(&self.screen()),
            self.typed.join("\n"),
            self.log_path.display()
        )
    }
}

impl Drop for Profanity {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
        if let Some(path) = &self.socket_path {
            let _ = fs::remove_file(path);
        }
    }
}

/// bob: `profanity_peer.py` with piped stdin/stdout; stderr (slixmpp's XML log) to a file.
struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Everything said both ways, for the failure report.
    transcript: Vec<String>,
    stderr_path: PathBuf,
}

impl Peer {
    fn start(server: &TestServer, python: &str) -> Peer {
        let stderr_path = server.dir.join("profanity-peer.stderr");
        let stderr = File::create(&stderr_path).expect("creating the peer's stderr file");
        let mut child = Command::new(python)
            .arg(PEER_SCRIPT)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &server.c2s_port.to_string(),
            ])
            .args([
                "--jid",
                &server.jid(BOB.0),
                "--password",
                BOB.1,
                "--verbose",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .env("PYTHONUNBUFFERED", "1")
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {python} {PEER_SCRIPT}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("peer stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        Peer {
            child,
            stdin,
            lines,
            transcript: Vec::new(),
            stderr_path,
        }
    }

    /// The next answer line (anything but `event ...`): Ok unless it starts with `fail`.
    fn reply(&mut self, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.transcript.push(format!("< {line}"));
                    if line.starts_with("event ") {
                        continue;
                    }
                    if line.starts_with("fail") {
                        return Err(line);
                    }
                    return Ok(line);
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("no answer within {timeout:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err("the script closed its stdout (exited?)".to_owned())
                }
            }
        }
    }

    fn command(&mut self, command: &str, timeout: Duration) -> Result<String, String> {
        self.transcript.push(format!("> {command}"));
        let Some(stdin) = self.stdin.as_mut() else {
            return Err("stdin already closed".to_owned());
        };
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("writing to the script: {e}"))?;
        self.reply(timeout)
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.stdin = None;
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
                _ => return None,
            }
        }
    }

    fn report(&mut self) -> String {
        // Collect what arrived since the last answer, without waiting.
        while let Ok(line) = self.lines.try_recv() {
            self.transcript.push(format!("< {line}"));
        }
        let status = match self.child.try_wait() {
            Ok(Some(s)) => format!("exited with {s}"),
            _ => "still running".to_owned(),
        };
        format!(
            "----- bob ({PEER_SCRIPT}, {status}): > sent, < received -----\n{}\n\
             ----- bob's slixmpp log ({}, tail) -----\n{}\n----- end of bob -----",
            self.transcript.join("\n"),
            self.stderr_path.display(),
            tail_of(&self.stderr_path, 32 * 1024)
        )
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stdin = None;
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The screen without trailing blanks on each line and without trailing empty lines.
fn trim_lines(screen: &str) -> String {
    let lines: Vec<&str> = screen.lines().map(str::trim_end).collect();
    lines.join("\n").trim_end().to_owned()
}

/// The last `max` bytes of a file, lossily decoded, or a note why there are none.
fn tail_of(path: &Path, max: u64) -> String {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) => return format!("(cannot read {}: {e})", path.display()),
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max);
    let _ = file.seek(SeekFrom::Start(start));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if start > 0 {
        format!("[... {start} earlier bytes ...]\n{text}")
    } else {
        text
    }
}

/// The interpreter for bob when profanity, tmux and slixmpp are all there; None when
/// something is missing and `KITH_SKIP_INTEROP=1` says to skip. Missing without that fails.
fn tools_or_skip() -> Option<String> {
    let mut missing = Vec::new();
    for (tool, arg) in [("profanity", "--version"), ("tmux", "-V")] {
        match Command::new(tool).arg(arg).stdin(Stdio::null()).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => missing.push(format!("`{tool} {arg}` failed: {}", out.status)),
            Err(e) => missing.push(format!("{tool}: {e}")),
        }
    }
    let candidates: Vec<String> = match std::env::var("KITH_PYTHON") {
        Ok(p) if !p.is_empty() => vec![p],
        _ => vec!["/usr/bin/python3".into(), "python3".into()],
    };
    let mut python = None;
    let mut tried = Vec::new();
    for candidate in &candidates {
        match Command::new(candidate)
            .args(["-c", "import slixmpp"])
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() => {
                python = Some(candidate.clone());
                break;
            }
            Ok(out) => tried.push(format!(
                "{candidate}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => tried.push(format!("{candidate}: {e}")),
        }
    }
    if python.is_none() {
        missing.push(format!("slixmpp is not importable ({})", tried.join("; ")));
    }
    if missing.is_empty() {
        return python;
    }
    let why = format!(
        "{}.\nInstall them with `apt-get install profanity tmux python3-slixmpp` (Debian), \
         or set KITH_PYTHON to an interpreter that has slixmpp.",
        missing.join("; ")
    );
    if std::env::var("KITH_SKIP_INTEROP").as_deref() == Ok("1") {
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!! SKIPPED Profanity interop test (KITH_SKIP_INTEROP=1): {why}\n"
        );
        return None;
    }
    panic!("{why}\nSet KITH_SKIP_INTEROP=1 to skip this test instead.");
}
