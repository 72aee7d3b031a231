//! Interop: real slixmpp clients (Debian's `python3-slixmpp`) against the real `kith` binary.
//!
//! Owns: starting a `TestServer`, creating the accounts through the CLI, running
//! `tests/interop/slixmpp_chat.py` against it and judging only by the script's exit code
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

use common::TestServer;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/slixmpp_chat.py");

/// The script gives up by itself after 30 s; this only catches a hung interpreter.
const SCRIPT_WATCHDOG: Duration = Duration::from_secs(60);

const ALICE: (&str, &str) = ("alice", "alice-secret-1");
// Non-ASCII on purpose: SASLprep/PRECIS of the password must agree on both sides.
const BOB: (&str, &str) = ("bob", "bob-pässwörd-2");

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

/// Run the script with `args` plus the server's domain, the accounts, `--forbid-plain`
/// (kith offers no PLAIN) and `--verbose`; panic with its output unless it exits 0.
fn run_script(server: &TestServer, python: &str, args: &[&str]) {
    let alice = format!("{}:{}", ALICE.0, ALICE.1);
    let bob = format!("{}:{}", BOB.0, BOB.1);
    let name = args.join("_").replace(['-', ' '], "_");
    let out_path = server.dir.join(format!("slixmpp-{name}.out"));
    let out = File::create(&out_path).expect("creating the script output file");
    let err = out.try_clone().expect("cloning the output file handle");

    let mut cmd = Command::new(python);
    cmd.arg(SCRIPT)
        .args(args)
        .args(["--host", "127.0.0.1", "--domain", &server.domain])
        .args(["--alice", &alice, "--bob", &bob])
        .args(["--forbid-plain", "--verbose", "--timeout", "30"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .env("PYTHONUNBUFFERED", "1");
    let shown = format!("{python} {SCRIPT} {}", args.join(" "));
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning `{shown}`: {e}"));

    let deadline = Instant::now() + SCRIPT_WATCHDOG;
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
            "`{shown}` still running after {SCRIPT_WATCHDOG:?}; killed it\n\
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
