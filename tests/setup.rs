//! `kith setup`, unattended (every answer a flag, the password on stdin) and typed into a real
//! terminal: the binary runs in a detached tmux session on a private tmux server
//! (`tmux -L <unique>`), answers go in with `send-keys`, the screen comes back with
//! `capture-pane -p`. DNS questions go to a local dnsmasq that knows nothing about the
//! domain, so setup must print the records to create.
//!
//! tmux or dnsmasq missing is a failure unless `KITH_SKIP_INTEROP=1`.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{describe_output, KITH_BIN};

fn kith(config: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(KITH_BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kith");
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.as_bytes());
    }
    child.wait_with_output().expect("kith output")
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn unattended_setup_writes_a_config_creates_the_admin_and_prints_the_records() {
    if !common::dnsmasq::available() {
        return;
    }
    let dns = common::dnsmasq::Dnsmasq::start(&[]);
    let dir = common::unique_temp_dir();
    let config = dir.join("etc/kith.toml");
    let data = dir.join("data");
    let resolver = dns.addr.to_string();
    let data_arg = data.display().to_string();
    let args = [
        "setup",
        "--domain",
        "Setup.Test",
        "--admin",
        "alice",
        "--registration",
        "closed",
        "--data-dir",
        &data_arg,
        "--yes",
        "--resolver",
        &resolver,
        "--public-ip",
        "127.0.0.1",
    ];
    let out = kith(&config, &args, "alice-secret\n");
    assert!(out.status.success(), "{}", describe_output(&out));
    let shown = text(&out);
    for expected in [
        "Created the admin account alice@setup.test",
        "setup.test: has no A or AAAA record",
        "Create these DNS records",
        "  setup.test. 3600 IN A 127.0.0.1",
        "  upload.setup.test. 3600 IN A 127.0.0.1",
        "  conference.setup.test. 3600 IN A 127.0.0.1",
        "  _xmpp-client._tcp.setup.test. 3600 IN SRV 0 5 5222 setup.test.",
        "  _xmpps-server._tcp.setup.test. 3600 IN SRV 0 5 5270 setup.test.",
    ] {
        assert!(shown.contains(expected), "missing {expected:?} in\n{shown}");
    }
    let written = std::fs::read_to_string(&config).expect("config written");
    assert!(written.contains("domain = \"setup.test\"\n"), "{written}");
    assert!(
        written.contains("admins = [\"alice@setup.test\"]\n"),
        "{written}"
    );
    assert!(
        written.contains("[registration]") && written.contains("policy = \"closed\""),
        "{written}"
    );
    // Only what differs from the defaults.
    assert!(
        !written.contains("[listen]") && !written.contains("max_stanza_size"),
        "{written}"
    );

    // The config loads, and the account is there with its password.
    let out = kith(&config, &["check", "config"], "");
    assert!(out.status.success(), "{}", describe_output(&out));
    let out = kith(&config, &["user", "list"], "");
    assert_eq!(
        text(&out).split_whitespace().next().unwrap_or(""),
        "alice@setup.test",
        "{}",
        describe_output(&out)
    );
    let out = kith(
        &config,
        &["user", "passwd", "alice", "--password", "new"],
        "",
    );
    assert!(out.status.success(), "{}", describe_output(&out));

    // Run again: an existing config is not replaced without --force ...
    let before = std::fs::read_to_string(&config).expect("config");
    let out = kith(&config, &args, "x\n");
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pass --force"),
        "{}",
        describe_output(&out)
    );
    assert_eq!(std::fs::read_to_string(&config).expect("config"), before);
    // ... and with it, the existing account (and the data) are kept.
    let mut forced = args.to_vec();
    forced.push("--force");
    let out = kith(&config, &forced, "other\n");
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(
        text(&out).contains("already exists"),
        "{}",
        describe_output(&out)
    );

    // A bad answer given as a flag fails with the reason, and writes nothing.
    let other = dir.join("bad.toml");
    let out = kith(
        &other,
        &["setup", "--domain", "not a domain", "--yes"],
        "pw\n",
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Domain"),
        "{}",
        describe_output(&out)
    );
    assert!(!other.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// kith setup in a detached tmux session on a private tmux server; dropped, it kills it.
struct Terminal {
    socket: String,
    exit_file: PathBuf,
}

impl Terminal {
    fn start(dir: &Path, command: &str) -> Terminal {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let socket = format!(
            "kith-setup-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let conf = dir.join("tmux.conf");
        std::fs::write(&conf, "set -g status off\nset -g remain-on-exit on\n").expect("tmux.conf");
        let exit_file = dir.join("setup.exit");
        let term = Terminal { socket, exit_file };
        let script = format!("{command}; echo \"$?\" > '{}'", term.exit_file.display());
        let conf_arg = conf.display().to_string();
        let out = term.tmux(&[
            "-f",
            &conf_arg,
            "new-session",
            "-d",
            "-s",
            "kith",
            "-x",
            "160",
            "-y",
            "50",
            "--",
            "sh",
            "-c",
            &script,
        ]);
        assert!(
            out.status.success(),
            "tmux new-session\n{}",
            describe_output(&out)
        );
        term
    }

    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .env_remove("TMUX")
            .stdin(Stdio::null())
            .output()
            .expect("run tmux")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(
            &self
                .tmux(&["capture-pane", "-p", "-t", "kith", "-S", "-200"])
                .stdout,
        )
        .into_owned()
    }

    /// Waits until the screen shows `needle` (at least `count` times). capture-pane drops
    /// trailing spaces, so a prompt's are ignored.
    fn wait_for(&self, needle: &str, count: usize) {
        let needle = needle.trim_end();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.screen().matches(needle).count() >= count {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the screen never showed {needle:?}:\n{}", self.screen());
    }

    fn type_line(&self, line: &str) {
        for keys in [
            &["send-keys", "-t", "kith", "-l", line][..],
            &["send-keys", "-t", "kith", "Enter"][..],
        ] {
            let out = self.tmux(keys);
            assert!(out.status.success(), "send-keys\n{}", describe_output(&out));
        }
    }

    fn exit_code(&self) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(code) = std::fs::read_to_string(&self.exit_file) {
                return Some(code.trim().to_string());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

fn have_tmux() -> bool {
    let found = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let why = "tmux is missing; install it with `apt-get install tmux`";
        if std::env::var("KITH_SKIP_INTEROP").as_deref() == Ok("1") {
            eprintln!("\n!!!!! SKIPPED setup-in-a-terminal test (KITH_SKIP_INTEROP=1): {why}\n");
            return false;
        }
        panic!("{why} (or set KITH_SKIP_INTEROP=1 to skip)");
    }
    true
}

#[test]
fn setup_typed_into_a_terminal() {
    if !have_tmux() {
        return;
    }
    if !common::dnsmasq::available() {
        return;
    }
    let dns = common::dnsmasq::Dnsmasq::start(&[]);
    let dir = common::unique_temp_dir();
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("kith.toml");
    let command = format!(
        "'{KITH_BIN}' --config '{}' setup --resolver {} --public-ip 127.0.0.1 --no-start",
        config.display(),
        dns.addr
    );
    let term = Terminal::start(&dir, &command);
    term.wait_for("Domain (accounts will be name@domain): ", 1);
    // A wrong answer is explained and asked again.
    term.type_line("example.org/chat");
    term.wait_for("is an address, not a domain", 1);
    term.wait_for("Domain (accounts will be name@domain): ", 2);
    term.type_line("family.test");
    term.wait_for("Admin account [admin@family.test]: ", 1);
    term.type_line("");
    term.wait_for("Password for admin@family.test: ", 1);
    term.type_line("typed-secret");
    term.wait_for("Repeat it: ", 1);
    term.type_line("typed-secret");
    term.wait_for("3) self-signed for now [1]: ", 1);
    term.type_line("3");
    term.wait_for("or open [invite]: ", 1);
    term.type_line("");
    let code = term.exit_code();
    let screen = term.screen();
    assert_eq!(
        code.as_deref(),
        Some("0"),
        "setup did not finish:\n{screen}"
    );
    assert!(
        !screen.contains("typed-secret"),
        "the password was echoed:\n{screen}"
    );
    assert!(
        screen.contains("Created the admin account admin@family.test"),
        "{screen}"
    );
    assert!(
        screen.contains("_xmpp-client._tcp.family.test. 3600 IN SRV 0 5 5222 family.test."),
        "{screen}"
    );
    let written = std::fs::read_to_string(&config).expect("config written");
    assert!(written.contains("domain = \"family.test\""), "{written}");
    assert!(
        written.contains("admins = [\"admin@family.test\"]"),
        "{written}"
    );
    assert!(
        !written.contains("[registration]"),
        "invite is the default:\n{written}"
    );
    drop(term);
    let _ = std::fs::remove_dir_all(&dir);
}
