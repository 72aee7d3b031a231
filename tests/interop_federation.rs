//! Interop: federation (issue #3) between kith and Debian's Prosody and ejabberd, over a
//! private network of Linux network namespaces.
//!
//! Owns: one `#[test]` per pair of servers and authentication mode, each running
//! `tests/federation/run.sh HOME PEER [--dialback]` and judging by its exit code. The script
//! builds the network (namespaces joined by a bridge, dnsmasq serving SRV and A records), a
//! test CA, the servers' configs and accounts, runs `tests/federation/fed_client.py`
//! (slixmpp) for what users notice — subscription, presence, chat, iq round trips, bounces
//! while the other server is down, all in both directions — and checks in Prosody's or
//! ejabberd's log that the s2s streams authenticated the expected way (certificates, or
//! XEP-0220 dialback only). See tests/federation/README.md.
//!
//! The `reference_*` tests federate Prosody with ejabberd, without kith: they prove the
//! harness itself, so when a kith test fails and the reference passes, kith is at fault.
//!
//! Must not know: kith's internals. It runs the real binary with a config the script writes.
//!
//! Needs root (for `ip netns`) and the packages `.ci/run` installs (prosody, ejabberd,
//! iproute2, dnsmasq-base, openssl, python3-slixmpp). Missing any of them is a failure, not a
//! pass; `KITH_SKIP_INTEROP=1` turns it into a loud skip for machines that cannot have them.
//! The runs are serialized: each starts two servers, and ejabberd's start slows down a lot
//! on a loaded machine.

use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/federation/run.sh");

/// The script's own steps are bounded (server start 60 s, each client run 90 s); this only
/// catches a hung script. On expiry it gets SIGTERM, so its trap still cleans up.
const WATCHDOG: Duration = Duration::from_secs(420);

/// `run.sh`'s exit status when the machine lacks something (root, a package).
const EXIT_ENVIRONMENT: i32 = 3;

/// One federation run at a time (see the module doc).
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn reference_prosody_with_ejabberd() {
    federate("prosody", "ejabberd", false);
}

#[test]
fn reference_prosody_with_ejabberd_dialback_only() {
    federate("prosody", "ejabberd", true);
}

#[test]
fn kith_with_prosody() {
    federate("kith", "prosody", false);
}

#[test]
fn kith_with_ejabberd() {
    federate("kith", "ejabberd", false);
}

/// Prosody presents a certificate from a CA kith does not trust
/// (`[s2s] require_valid_certs = false`), and trusts only that CA itself: both streams
/// must authenticate with dialback.
#[test]
fn kith_with_prosody_dialback_only() {
    federate("kith", "prosody", true);
}

/// As `kith_with_prosody_dialback_only`, with ejabberd.
#[test]
fn kith_with_ejabberd_dialback_only() {
    federate("kith", "ejabberd", true);
}

/// Run `run.sh home peer [--dialback]`; panic with its output unless it exits 0, skip loudly
/// on a missing environment when `KITH_SKIP_INTEROP=1`.
fn federate(home: &str, peer: &str, dialback: bool) {
    // A test that panicked while holding the lock poisons it; the others still run.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mode = if dialback { "_dialback" } else { "" };
    let out_path = output_path(&format!("{home}_{peer}{mode}"));
    let out = File::create(&out_path).expect("creating the script output file");
    let err = out.try_clone().expect("cloning the output file handle");

    let mut cmd = Command::new("bash");
    cmd.arg(SCRIPT).args([home, peer]);
    if dialback {
        cmd.arg("--dialback");
    }
    cmd.env("KITH_BIN", env!("CARGO_BIN_EXE_kith"))
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    let shown = format!(
        "{SCRIPT} {home} {peer}{}",
        if dialback { " --dialback" } else { "" }
    );
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning `{shown}`: {e}"));

    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() < WATCHDOG => thread::sleep(Duration::from_millis(100)),
            Ok(None) => {
                terminate(&mut child);
                break None;
            }
            Err(e) => panic!("waiting for `{shown}`: {e}"),
        }
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    match status {
        Some(s) if s.success() => {
            // A passing run keeps its summary (one line per step) in the captured output.
            for line in output.lines().filter(|l| l.starts_with('[')) {
                println!("{line}");
            }
            println!("{shown}: passed in {:.1?}", started.elapsed());
        }
        Some(s) if s.code() == Some(EXIT_ENVIRONMENT) => {
            let why = output.trim();
            if std::env::var("KITH_SKIP_INTEROP").as_deref() == Ok("1") {
                // Straight to stderr: a skip must not look like a pass.
                let _ = writeln!(
                    std::io::stderr(),
                    "\n!!!!! SKIPPED federation interop test (KITH_SKIP_INTEROP=1): {why}\n"
                );
                return;
            }
            panic!("{why}\nSet KITH_SKIP_INTEROP=1 to skip this test instead.");
        }
        Some(s) => panic!(
            "`{shown}` failed with {s} after {:.1?}\n----- output -----\n{output}\n\
             ----- end of output -----",
            started.elapsed()
        ),
        None => panic!(
            "`{shown}` still running after {WATCHDOG:?}; stopped it\n----- output -----\n\
             {output}\n----- end of output -----"
        ),
    }
}

/// SIGTERM first, so the script's trap stops its servers and deletes its namespaces; SIGKILL
/// if it is still there 30 s later.
fn terminate(child: &mut std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn output_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("kith-federation-{name}-{}.out", std::process::id()))
}
