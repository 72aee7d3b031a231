//! The static aarch64 binary (Raspberry Pi OS 64-bit, ARM VPSes) runs: cross-built for
//! `aarch64-unknown-linux-musl` with the `cross-test` profile (no LTO: the release profile
//! takes much longer and `scripts/build-release.sh` is what ships), then run under
//! `qemu-aarch64` (Debian's qemu-user): `--version`, and a server that a client logs in to
//! over STARTTLS with SCRAM, the account made by the aarch64 CLI.
//!
//! Needs the rustup target `aarch64-unknown-linux-musl`, `gcc-aarch64-linux-gnu` and
//! `qemu-user`; a missing one is a failure unless `KITH_SKIP_INTEROP=1`. Set
//! `KITH_AARCH64_BIN` to test a binary built elsewhere.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::client::Client;
use common::{describe_output, Options};

const TRIPLE: &str = "aarch64-unknown-linux-musl";

fn skip_or_fail(why: &str) -> Option<PathBuf> {
    if std::env::var("KITH_SKIP_INTEROP").as_deref() == Ok("1") {
        eprintln!("\n!!!!! SKIPPED aarch64 test (KITH_SKIP_INTEROP=1): {why}\n");
        return None;
    }
    panic!("{why} (or set KITH_SKIP_INTEROP=1 to skip)");
}

fn found(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The aarch64 binary: `KITH_AARCH64_BIN`, or built now (a no-op when up to date).
fn aarch64_kith() -> Option<PathBuf> {
    if let Ok(bin) = std::env::var("KITH_AARCH64_BIN") {
        return Some(PathBuf::from(bin));
    }
    for (tool, package) in [
        ("qemu-aarch64", "qemu-user"),
        ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
    ] {
        if !found(tool) {
            return skip_or_fail(&format!(
                "{tool} is missing; install it with `apt-get install {package}`"
            ));
        }
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(manifest)
        .args([
            "build",
            "--locked",
            "--profile",
            "cross-test",
            "--target",
            TRIPLE,
            "--bin",
            "kith",
        ])
        .stdin(Stdio::null());
    // The variables cargo set for this test (CARGO_PKG_*, CARGO_MANIFEST_DIR, ...) would make
    // the inner build's fingerprints differ from a build from the shell: both would rebuild.
    for (key, _) in std::env::vars() {
        if key.starts_with("CARGO_") && !matches!(key.as_str(), "CARGO_HOME" | "CARGO_TARGET_DIR") {
            build.env_remove(key);
        }
    }
    let out = build.output().expect("run cargo build");
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("target may not be installed")
            || err.contains("can't find crate for `core`")
        {
            return skip_or_fail(&format!(
                "the Rust target is missing; add it with `rustup target add {TRIPLE}`"
            ));
        }
        panic!("cross build failed\n{}", describe_output(&out));
    }
    let target_dir =
        std::env::var("CARGO_TARGET_DIR").map_or_else(|_| manifest.join("target"), PathBuf::from);
    Some(target_dir.join(TRIPLE).join("cross-test").join("kith"))
}

#[test]
fn the_static_aarch64_binary_runs_and_serves_a_login_under_qemu() {
    let Some(bin) = aarch64_kith() else {
        return;
    };
    let bin = bin.display().to_string();
    let out = Command::new("qemu-aarch64")
        .args([&bin, "--version"])
        .output()
        .expect("run qemu-aarch64");
    assert!(out.status.success(), "{}", describe_output(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("kith {}", env!("CARGO_PKG_VERSION"))
    );

    let server = Options::default().exec("qemu-aarch64", &[&bin]).start();
    server.add_user("alice", "alice-secret");
    let mut alice = Client::login_bound(&server, "alice", "alice-secret", "pi");
    assert_eq!(alice.jid(), "alice@localhost/pi");
    let roster = alice.roster_get();
    assert!(roster.1.is_empty());
}
