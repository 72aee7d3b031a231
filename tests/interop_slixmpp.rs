//! Interop: real slixmpp clients (Debian's `python3-slixmpp`) against the real `kith` binary.
//!
//! Owns: starting a `TestServer`, creating the accounts through the CLI, running
//! `tests/interop/slixmpp_chat.py` (login, chat, roster) or `tests/interop/slixmpp_modern.py`
//! (slixmpp's own plugins for carbons, PEP, vcard-temp, private storage, bookmarks, CSI,
//! blocking, stream management, MAM) against it and judging only by the script's exit code
//! (the script asserts each step itself and prints one line per step). On failure the panic
//! shows the script's output (with slixmpp's raw XML log) and the harness prints the server log.
//!
//! Must not know: kith's internals; this speaks XMPP over loopback only.
//!
//! slixmpp missing is a failure, not a pass: install it with `apt-get install python3-slixmpp`
//! (`.ci/run` does). `KITH_SKIP_INTEROP=1` turns that failure into a loud skip for machines
//! that cannot install it. `KITH_PYTHON` picks the interpreter; by default Debian's
//! `/usr/bin/python3` is tried before `python3` on PATH, because a pyenv or venv python on
//! PATH does not see Debian's dist-packages.

mod common;

use std::fs::File;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Options, TestServer};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/slixmpp_chat.py");
const COMPONENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/interop/slixmpp_component.py"
);
const UPLOAD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/interop/slixmpp_upload.py"
);
const MUC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/slixmpp_muc.py");
const PUBSUB: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/interop/slixmpp_pubsub.py"
);
const PROXY65: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/interop/slixmpp_proxy65.py"
);
const MODERN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/interop/slixmpp_modern.py"
);

const ADMIN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/interop/slixmpp_admin.py"
);

/// `slixmpp_chat.py` gives up by itself after 30 s; this only catches a hung interpreter.
const SCRIPT_WATCHDOG: Duration = Duration::from_secs(60);
/// `slixmpp_modern.py` gives up by itself after `MODERN_TIMEOUT` s.
const MODERN_TIMEOUT: &str = "60";
const MODERN_WATCHDOG: Duration = Duration::from_secs(90);

const ALICE: (&str, &str) = ("alice", "alice-secret-1");
// Non-ASCII on purpose: SASLprep/PRECIS of the password must agree on both sides.
const BOB: (&str, &str) = ("bob", "bob-pässwörd-2");
/// A stranger: in nobody's roster, for access-model checks.
const CAROL: (&str, &str) = ("carol", "carol-secret-3");

#[test]
fn slixmpp_chat_over_starttls() {
    let Some(python) = python_with_slixmpp() else {
        return;
    };
    let server = server_with_alice_and_bob();
    let port = server.c2s_port.to_string();
    run_script(&server, &python, &["chat", "--port", &port]);
    stop_cleanly(server);
}

#[test]
fn slixmpp_chat_over_direct_tls() {
    let Some(python) = python_with_slixmpp() else {
        return;
    };
    let server = server_with_alice_and_bob();
    let port = server.tls_port.to_string();
    run_script(&server, &python, &["chat", "--port", &port, "--direct-tls"]);
    stop_cleanly(server);
}

#[test]
fn slixmpp_wrong_password_gets_not_authorized() {
    let Some(python) = python_with_slixmpp() else {
        return;
    };
    let server = server_with_alice_and_bob();
    let c2s = server.c2s_port.to_string();
    let tls = server.tls_port.to_string();
    run_script(&server, &python, &["wrong-password", "--port", &c2s]);
    run_script(
        &server,
        &python,
        &["wrong-password", "--port", &tls, "--direct-tls"],
    );
    stop_cleanly(server);
}

/// slixmpp's own plugins against the modern-client features: carbons, PEP (avatar with
/// caps-filtered notifications, an OMEMO device list with publish-options), vcard-temp,
/// private storage and bookmarks, CSI, blocking, stream management with resumption after the
/// socket is cut, and MAM paging both ways. One line per step in the output; see the script's
/// docstring.
#[test]
fn slixmpp_plugins_modern_client_features() {
    let Some(python) = python_with_slixmpp() else {
        return;
    };
    let server = server_with_alice_and_bob();
    server.add_user(CAROL.0, CAROL.1);
    let port = server.c2s_port.to_string();
    let carol = format!("{}:{}", CAROL.0, CAROL.1);
    run(
        &server,
        &python,
        MODERN,
        &[
            "--port",
            &port,
            "--carol",
            &carol,
            "--mam",
            // Both of alice's resources approve bob's request at once: a regression test for
            // a race that once left alice's item at 'to' while bob's said 'both'.
            "--both-answer",
            "--timeout",
            MODERN_TIMEOUT,
        ],
        MODERN_WATCHDOG,
    );
    stop_cleanly(server);
}

/// XEP-0363: slixmpp's `xep_0363` plugin finds the upload service, uploads a file with
/// aiohttp and gets it back byte-identical; a file over the advertised limit is refused.
#[test]
fn slixmpp_http_upload_round_trip() {
    let Some(python) = python_with_slixmpp() else {
        return;
    };
    if !python_can_import(&python, "aiohttp") {
        let why = "aiohttp is not importable (apt-get install python3-aiohttp)";
        if std::env::var("KITH_SKIP_INTEROP").as_deref() == Ok("1") {
            let _ = writeln!(std::io::stderr(), "\n!!!!! SKIPPED: {why}\n");
            return;
        }
        panic!("{why}\nSet KITH_SKIP_INTEROP=1 to skip this test instead.");
    }
    let server = TestServer::start_opts(
        Options::default()
            .listen("https")
            .extra_toml("[upload]\nmax_file_size = \"64KiB\"\n"),
    );
    server.add_user(ALICE.0, ALICE.1);
    let port = server.c2s_port.to_string();
    run(
        &server,
        &python,
        UPLOAD,
        &["--port", &port, "--timeout", "30"],
        SCRIPT_WATCHDOG,
    );
    stop_cleanly(server);
}

/// XEP-0045 with slixmpp's xep_0045 plugin and three users: create and configure, join,
/// groupchat with stanza-ids, subject, self-ping, history on join, kick, members-only and
/// password refusals, room MAM; then the server restarts on the same data and the room, its
/// subject, history and affiliations are still there.
#[test]
fn slixmpp_muc_rooms_and_their_persistence() {
    let Some(python) = python_with_slixmpp() else {
        return;
    };
    let mut server = server_with_alice_and_bob();
    server.add_user(CAROL.0, CAROL.1);
    let port = server.c2s_port.to_string();
    let carol = format!("{}:{}", CAROL.0, CAROL.1);
    let run_id = format!("{:x}", std::process::id());
    for phase in ["live", "restarted"] {
        if phase == "restarted" {
            server.restart();
        }
        let args = [
            "--phase",
            phase,
            "--run",
            &run_id,
            "--port",
            &port,
            "--carol",
            &carol,
            "--timeout",
            "60",
        ];
        run(&server, &python, MUC, &args, MODERN_WATCHDOG);
    }
    stop_cleanly(server);
}

/// XEP-0060 at pubsub.DOMAIN with slixmpp's `xep_0060`: create, disco, subscribe, publish
/// and notify, affiliation refusals; then across a restart: items and subscriptions persist,
/// unsubscribe stops notifications, max_items, delete.
#[test]
fn slixmpp_pubsub_service_round_trip_and_restart() {
    let Some(python) = python_with_slixmpp() else {
        return;
    };
    let mut server = server_with_alice_and_bob();
    let port = server.c2s_port.to_string();
    let args = ["--port", &port, "--timeout", "30", "--phase"];
    let phase = |server: &TestServer, p: &str| {
        let mut all = args.to_vec();
        all.push(p);
        run(server, &python, PUBSUB, &all, SCRIPT_WATCHDOG);
    };
    phase(&server, "before");
    server.restart();
    phase(&server, "after");
    stop_cleanly(server);
}

/// XEP-0065: slixmpp's `xep_0065` finds the proxy, alice sends 160 KiB to bob through it
/// at `max_rate` 64 KiB/s (so it must take over 2 s), and an activation for an unknown sid
/// is item-not-found.
#[test]
fn slixmpp_socks5_transfer_through_the_proxy() {
    let Some(python) = python_with_slixmpp() else {
        return;
    };
    let port = common::free_port();
    let server = TestServer::start_opts(Options::default().extra_toml(&format!(
        "[proxy65]\nenabled = true\nlisten = [\"127.0.0.1:{port}\"]\n\
         public_host = \"127.0.0.1\"\nmax_rate = \"64KiB\"\n"
    )));
    server.add_user(ALICE.0, ALICE.1);
    server.add_user(BOB.0, BOB.1);
    let c2s = server.c2s_port.to_string();
    let bytes = (160 * 1024).to_string();
    run(
        &server,
        &python,
        PROXY65,
        &[
            "--port",
            &c2s,
            "--bytes",
            &bytes,
            "--min-seconds",
            "2",
            "--timeout",
            "30",
        ],
        SCRIPT_WATCHDOG,
    );
    // Both sides closed: the relay ends and frees its slot.
    assert!(server.wait_for_log(
        "proxy65: transfer ended after 0 and 163840 bytes",
        Duration::from_secs(5)
    ));
    stop_cleanly(server);
}

fn python_can_import(python: &str, module: &str) -> bool {
    Command::new(python)
        .args(["-c", &format!("import {module}")])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
}

/// XEP-0114: slixmpp's ComponentXMPP connects with its secret and echoes a message from alice
/// (slixmpp's ClientXMPP); with a wrong secret it is refused with `not-authorized`.
#[test]
fn slixmpp_component_echoes_and_a_wrong_secret_is_refused() {
    let Some(python) = python_with_slixmpp() else {
        return;
    };
    let (bot, secret) = ("echo-bot.localhost", "component-secret-1");
    let server = TestServer::start_opts(
        Options::default()
            .listen("components")
            .extra_toml(&format!("[components]\n\"{bot}\" = \"{secret}\"\n")),
    );
    server.add_user(ALICE.0, ALICE.1);
    server.add_user(BOB.0, BOB.1);
    let c2s = server.c2s_port.to_string();
    let comp = server.port("components").to_string();
    for mode in ["echo", "wrong-secret"] {
        run(
            &server,
            &python,
            COMPONENT,
            &[
                mode,
                "--port",
                &c2s,
                "--component-port",
                &comp,
                "--component",
                bot,
                "--secret",
                secret,
                "--timeout",
                "30",
            ],
            SCRIPT_WATCHDOG,
        );
    }
    stop_cleanly(server);
}

#[test]
fn slixmpp_admin_commands_xep_0133() {
    let Some(python) = python_with_slixmpp() else {
        return;
    };
    let server = TestServer::start_with("admins = [\"alice@localhost\"]");
    server.add_user(ALICE.0, ALICE.1);
    server.add_user(BOB.0, BOB.1);
    let port = server.c2s_port.to_string();
    run(
        &server,
        &python,
        ADMIN,
        &["--port", &port, "--timeout", "40"],
        Duration::from_secs(60),
    );
    stop_cleanly(server);
}

fn server_with_alice_and_bob() -> TestServer {
    let server = TestServer::start();
    // Accounts are made while the server runs, as an admin would.
    server.add_user(ALICE.0, ALICE.1);
    server.add_user(BOB.0, BOB.1);
    server
}

fn stop_cleanly(mut server: TestServer) {
    let status = server.stop();
    assert!(
        status.success(),
        "kith exited with {status} on SIGTERM after the slixmpp run"
    );
}

/// Run `slixmpp_chat.py` with `args` plus `--forbid-plain` (kith offers no PLAIN) and a 30 s
/// timeout; see `run`.
fn run_script(server: &TestServer, python: &str, args: &[&str]) {
    let mut all = args.to_vec();
    all.extend(["--forbid-plain", "--timeout", "30"]);
    run(server, python, SCRIPT, &all, SCRIPT_WATCHDOG);
}

/// Run `script` with `args` plus the server's domain, the accounts and `--verbose`; panic
/// with its output unless it exits 0, or kill it after `watchdog`.
fn run(server: &TestServer, python: &str, script: &str, args: &[&str], watchdog: Duration) {
    let alice = format!("{}:{}", ALICE.0, ALICE.1);
    let bob = format!("{}:{}", BOB.0, BOB.1);
    let stem = script
        .rsplit('/')
        .next()
        .unwrap_or(script)
        .trim_end_matches(".py");
    let name = args.join("_").replace(['-', ' ', ':', '/'], "_");
    let out_path = server.dir.join(format!("{stem}-{name}.out"));
    let out = File::create(&out_path).expect("creating the script output file");
    let err = out.try_clone().expect("cloning the output file handle");

    let mut cmd = Command::new(python);
    cmd.arg(script)
        .args(args)
        .args(["--host", "127.0.0.1", "--domain", &server.domain])
        .args(["--alice", &alice, "--bob", &bob, "--verbose"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .env("PYTHONUNBUFFERED", "1");
    let shown = format!("{python} {script} {}", args.join(" "));
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning `{shown}`: {e}"));

    let deadline = Instant::now() + watchdog;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Err(e) => panic!("waiting for `{shown}`: {e}"),
        }
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    match status {
        Some(s) if s.success() => {
            // Passing runs keep one summary line per step in the captured test output.
            for line in output.lines().filter(|l| l.starts_with('[')) {
                println!("{line}");
            }
        }
        Some(s) => panic!(
            "`{shown}` failed with {s} (1 = a step failed, 2 = overall timeout)\n\
             ----- slixmpp output -----\n{output}\n----- end of slixmpp output -----\n\
             (the kith log follows)"
        ),
        None => panic!(
            "`{shown}` still running after {watchdog:?}; killed it\n\
             ----- slixmpp output -----\n{output}\n----- end of slixmpp output -----\n\
             (the kith log follows)"
        ),
    }
}

/// An interpreter that can `import slixmpp`, or None when it is missing and
/// `KITH_SKIP_INTEROP=1` says to skip. Missing without that is a test failure.
fn python_with_slixmpp() -> Option<String> {
    let candidates: Vec<String> = match std::env::var("KITH_PYTHON") {
        Ok(p) if !p.is_empty() => vec![p],
        _ => vec!["/usr/bin/python3".into(), "python3".into()],
    };
    let mut tried = Vec::new();
    for python in &candidates {
        match Command::new(python)
            .args(["-c", "import slixmpp"])
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() => return Some(python.clone()),
            Ok(out) => tried.push(format!(
                "{python}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => tried.push(format!("{python}: {e}")),
        }
    }
    let why = format!(
        "slixmpp is not importable ({}).\nInstall it with `apt-get install python3-slixmpp` \
         (Debian), or set KITH_PYTHON to an interpreter that has it.",
        tried.join("; ")
    );
    if std::env::var("KITH_SKIP_INTEROP").as_deref() == Ok("1") {
        // Straight to the process's stderr: libtest's capture would hide a println! of a
        // passing test, and a skip must not look like a pass.
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!! SKIPPED slixmpp interop test (KITH_SKIP_INTEROP=1): {why}\n"
        );
        return None;
    }
    panic!("{why}\nSet KITH_SKIP_INTEROP=1 to skip this test instead.");
}
