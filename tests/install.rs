//! `scripts/install.sh` into a scratch root (`--root`), with the binary cargo built for the
//! tests: the binary, the directories, the systemd unit and an unattended `kith setup`; then
//! a second run, an upgrade, which must keep the config and the data. DNS questions of the
//! setup go to a local dnsmasq (missing: a failure unless `KITH_SKIP_INTEROP=1`).

mod common;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{describe_output, KITH_BIN};

fn install(args: &[&str], stdin: &str) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install.sh");
    let mut child = Command::new("bash")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run install.sh");
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.as_bytes());
    }
    child.wait_with_output().expect("install.sh output")
}

fn users(root: &Path) -> String {
    let out = Command::new(root.join("usr/local/bin/kith"))
        .arg("--config")
        .arg(root.join("etc/kith/kith.toml"))
        .args(["user", "list"])
        .stdin(Stdio::null())
        .output()
        .expect("kith user list");
    assert!(out.status.success(), "{}", describe_output(&out));
    // The first column: the JID (the second is when the account was last seen).
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn install_into_a_scratch_root_and_upgrade_in_place() {
    if !common::dnsmasq::available() {
        return;
    }
    let dns = common::dnsmasq::Dnsmasq::start(&[]);
    let root = common::unique_temp_dir();
    std::fs::create_dir_all(&root).expect("root");
    let root_arg = root.display().to_string();
    let resolver = dns.addr.to_string();
    let args = [
        "--root",
        &root_arg,
        "--binary",
        KITH_BIN,
        "--",
        "--domain",
        "install.test",
        "--admin",
        "alice",
        "--yes",
        "--no-start",
        "--resolver",
        &resolver,
        "--public-ip",
        "127.0.0.1",
    ];
    let out = install(&args, "alice-secret\n");
    assert!(out.status.success(), "{}", describe_output(&out));
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        shown.contains("Created the admin account alice@install.test"),
        "{shown}"
    );

    let kith = root.join("usr/local/bin/kith");
    let version = Command::new(&kith)
        .arg("--version")
        .output()
        .expect("run installed kith");
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("kith "),
        "{}",
        describe_output(&version)
    );
    let config = std::fs::read_to_string(root.join("etc/kith/kith.toml")).expect("config");
    assert!(config.contains("domain = \"install.test\""), "{config}");
    let data = root.join("var/lib/kith");
    assert!(
        config.contains(&format!("data_dir = \"{}\"", data.display())),
        "{config}"
    );
    assert!(data.join("kith.redb").is_file());
    let mode = std::fs::metadata(&data)
        .expect("data dir")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o750);
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/kith.service")).expect("unit");
    for line in [
        "User=kith",
        "ExecStart=/usr/local/bin/kith --config /etc/kith/kith.toml run",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "ReadWritePaths=/var/lib/kith",
        "WantedBy=multi-user.target",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "missing {line:?} in\n{unit}"
        );
    }
    assert!(
        !unit.contains(&root_arg),
        "the unit must not name the scratch root:\n{unit}"
    );
    assert_eq!(users(&root), "alice@install.test");

    // Again: an upgrade keeps the config and the accounts and does not ask again.
    let out = install(&args, "");
    assert!(out.status.success(), "{}", describe_output(&out));
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(shown.contains("kith.toml exists; kept"), "{shown}");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/kith/kith.toml")).expect("config"),
        config
    );
    assert_eq!(users(&root), "alice@install.test");

    // --prefix moves the binary and the unit's ExecStart; a bad binary is refused.
    let out = install(
        &[
            "--root",
            &root_arg,
            "--binary",
            KITH_BIN,
            "--prefix",
            "/opt/kith",
            "--no-setup",
        ],
        "",
    );
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(root.join("opt/kith/bin/kith").is_file());
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/kith.service")).expect("unit");
    assert!(
        unit.contains("ExecStart=/opt/kith/bin/kith --config"),
        "{unit}"
    );
    let out = install(&["--root", &root_arg, "--binary", "/nonexistent/kith"], "");
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let _ = std::fs::remove_dir_all(&root);
}
