//! End to end: `kith user import`, through the admin socket while the server runs and on the
//! store while it is stopped; the imported accounts log in with every SCRAM hash, and a file
//! with problems creates nothing and names its lines. A deleted account's name is refused as
//! `user add` refuses it, unless `--force`.

mod common;

use std::fs;

use common::client::Client;
use common::{describe_output, unique_temp_dir, TestServer};
use kith::sasl::Mechanism;

fn users(server: &TestServer) -> Vec<String> {
    let out = server.cli_ok(["user", "list"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn import_while_running_then_stopped() {
    let mut server = TestServer::start();
    server.add_user("alice", "alice-secret");
    let dir = unique_temp_dir();
    let file = dir.join("users.txt");
    fs::write(
        &file,
        "# a class\n\nbob@localhost\tbob secret with spaces\r\ncarol  carol-pw\n",
    )
    .unwrap();
    let out = server.cli_ok(["user", "import", file.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("created 2 accounts in "), "{said}");
    for (mech, user, pw) in [
        (Mechanism::ScramSha1, "bob", "bob secret with spaces"),
        (Mechanism::ScramSha256, "carol", "carol-pw"),
        (Mechanism::ScramSha512, "bob", "bob secret with spaces"),
    ] {
        Client::starttls_to(&server)
            .try_login(mech, user, pw)
            .unwrap_or_else(|e| panic!("{user} with {mech:?}: {e}"));
    }

    // Every problem is reported with its line and nothing is created, not even dave.
    fs::write(
        &file,
        "dave dave-pw\nalice other\nerin@elsewhere.org pw\ndave again\n",
    )
    .unwrap();
    let out = server.cli(["user", "import", file.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", describe_output(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "line 2: account alice@localhost already exists",
        "line 3: 'erin@elsewhere.org' is not on this server's domain",
        "line 4: dave@localhost is already on line 1",
        "3 problems; no account was created",
    ] {
        assert!(err.contains(needle), "{needle:?} in {err}");
    }
    assert!(!err.contains("dave-pw") && !err.contains("other"), "{err}");
    assert_eq!(users(&server).len(), 3);

    // With the server stopped the CLI writes the store itself; --skip-existing leaves alice.
    server.stop();
    fs::write(&file, "dave dave-pw\nalice other\n").unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kith"));
    let out = cmd
        .args(["--config", server.config_path.to_str().unwrap()])
        .args(["user", "import", "--skip-existing"])
        .stdin(fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe_output(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with("created 1 account, left 1 existing in "),
        "{said}"
    );
    server.start_again();
    Client::starttls_to(&server)
        .try_login(Mechanism::ScramSha256, "dave", "dave-pw")
        .expect("dave, imported offline");
    Client::starttls_to(&server)
        .try_login(Mechanism::ScramSha256, "alice", "alice-secret")
        .expect("alice keeps her password");
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn a_deleted_accounts_name_is_refused_unless_forced() {
    let mut server = TestServer::start();
    server.add_user("carol", "carol-old");
    server.cli_ok(["user", "del", "carol"]);
    let dir = unique_temp_dir();
    let file = dir.join("users.txt");
    fs::write(&file, "frank frank-pw\ncarol carol-new\n").unwrap();
    let path = file.to_str().unwrap();

    // Running (admin socket) and stopped (store): the same refusal, naming the line.
    for running in [true, false] {
        if !running {
            server.stop();
        }
        let out = server.cli(["user", "import", "--skip-existing", path]);
        assert!(!out.status.success(), "{}", describe_output(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("line 2: carol@localhost was a deleted account's name")
                && err.contains("--force"),
            "{err}"
        );
        assert!(!err.contains("carol-new"), "{err}");
    }
    let out = server.cli_ok(["user", "list"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "frank is not created either"
    );

    let out = server.cli_ok(["user", "import", "--force", path]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("created 2 accounts"));
    server.start_again();
    Client::starttls_to(&server)
        .try_login(Mechanism::ScramSha256, "carol", "carol-new")
        .expect("carol, given out again with --force");
    let out = server.cli_ok(["user", "tombstones"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "the name is in use again, its tombstone gone"
    );
    let _ = fs::remove_dir_all(dir);
}
