//! The command line: `kith run`, `kith user …`, `kith check …`, `kith --version`. Parses
//! arguments (argh), loads the config and dispatches; everything it prints is for a person at a
//! terminal.
//!
//! Exit codes: 0 success, 1 the operation failed, 2 bad usage or a bad config file.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use argh::FromArgs;

use crate::config::{self, Config};

/// kith: an XMPP server for friends and family.
#[derive(FromArgs)]
struct Kith {
    /// config file (default: ./kith.toml, then /etc/kith/kith.toml, else built-in defaults)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// print the version and exit
    #[argh(switch, short = 'V')]
    version: bool,
    #[argh(subcommand)]
    cmd: Option<Command>,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Run(Run),
    User(User),
    Check(Check),
}

/// Check that a part of the setup works, and say what to fix when it does not.
#[derive(FromArgs)]
#[argh(subcommand, name = "check")]
struct Check {
    #[argh(subcommand)]
    target: CheckTarget,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum CheckTarget {
    Turn(CheckTurn),
}

/// Check the STUN/TURN server for calls: STUN binding, an allocation with credentials from
/// the shared secret, a permission, and a datagram relayed to a local echo socket and back.
#[derive(FromArgs)]
#[argh(subcommand, name = "turn")]
struct CheckTurn {
    /// the server to check as HOST:PORT (default: the built-in server where it listens, or
    /// the external [turn] host)
    #[argh(option)]
    server: Option<String>,
}

/// Run the server in the foreground (logs to stderr; SIGTERM or SIGINT stop it cleanly).
#[derive(FromArgs)]
#[argh(subcommand, name = "run")]
struct Run {}

/// Manage accounts (works while the server runs).
#[derive(FromArgs)]
#[argh(subcommand, name = "user")]
struct User {
    #[argh(subcommand)]
    op: UserOp,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum UserOp {
    Add(UserAdd),
    Del(UserDel),
    Passwd(UserPasswd),
    List(UserList),
}

/// Create an account. Without --password, asks for it (or reads one line from stdin).
#[derive(FromArgs)]
#[argh(subcommand, name = "add")]
struct UserAdd {
    /// the account, e.g. alice@example.org (or just alice)
    #[argh(positional)]
    jid: String,
    /// the password (visible in your shell history; prefer the prompt)
    #[argh(option)]
    password: Option<String>,
}

/// Delete an account with its roster and stored messages.
#[derive(FromArgs)]
#[argh(subcommand, name = "del")]
struct UserDel {
    /// the account, e.g. alice@example.org
    #[argh(positional)]
    jid: String,
}

/// Set a new password for an account. Without --password, asks for it.
#[derive(FromArgs)]
#[argh(subcommand, name = "passwd")]
struct UserPasswd {
    /// the account, e.g. alice@example.org
    #[argh(positional)]
    jid: String,
    /// the new password (visible in your shell history; prefer the prompt)
    #[argh(option)]
    password: Option<String>,
}

/// List all accounts.
#[derive(FromArgs)]
#[argh(subcommand, name = "list")]
struct UserList {}

pub fn main() -> ExitCode {
    let args: Kith = argh::from_env();
    if args.version {
        println!("kith {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let Some(cmd) = args.cmd else {
        eprintln!("kith: no command given. Try `kith run` to start the server, or `kith --help`.");
        return ExitCode::from(2);
    };
    let config = match config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kith: the configuration has problems; nothing was started:\n{e}");
            return ExitCode::from(2);
        }
    };
    match cmd {
        Command::Run(_) => run(config),
        Command::User(u) => user(config, u.op),
        Command::Check(c) => match c.target {
            CheckTarget::Turn(t) => match crate::turn::check::run(&config, t.server.as_deref()) {
                true => ExitCode::SUCCESS,
                false => ExitCode::FAILURE,
            },
        },
    }
}

fn run(config: Config) -> ExitCode {
    crate::logging::init(level_filter(config.log_level));
    log::info!("config: {}", config.source);
    match crate::server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn user(config: Config, op: UserOp) -> ExitCode {
    let result = match op {
        UserOp::Add(a) => read_password(a.password, &a.jid, true)
            .and_then(|pw| {
                admin_or_store(
                    &config,
                    &["user-add", &a.jid, &crate::admin::encode_password(&pw)],
                )
            })
            .map(|_| println!("created {}", display_jid(&a.jid, &config))),
        UserOp::Del(d) => admin_or_store(&config, &["user-del", &d.jid])
            .map(|_| println!("deleted {}", display_jid(&d.jid, &config))),
        UserOp::Passwd(p) => read_password(p.password, &p.jid, true)
            .and_then(|pw| {
                admin_or_store(
                    &config,
                    &["user-passwd", &p.jid, &crate::admin::encode_password(&pw)],
                )
            })
            .map(|_| println!("password changed for {}", display_jid(&p.jid, &config))),
        UserOp::List(_) => admin_or_store(&config, &["user-list"]).map(|users| {
            for u in users {
                println!("{u}");
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kith: {e}");
            ExitCode::FAILURE
        }
    }
}

fn display_jid(jid: &str, config: &Config) -> String {
    if jid.contains('@') {
        jid.to_string()
    } else {
        format!("{jid}@{}", config.domain)
    }
}

/// Asks the running server over the admin socket; with no server running, opens the store
/// itself and performs the same request.
fn admin_or_store(config: &Config, fields: &[&str]) -> Result<Vec<String>, String> {
    match crate::admin::request(&config.data_dir, fields) {
        Ok(Some(r)) => r,
        Ok(None) => offline(config, fields),
        Err(e) => Err(e.to_string()),
    }
}

fn offline(config: &Config, fields: &[&str]) -> Result<Vec<String>, String> {
    use crate::accounts;
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        format!(
            "cannot create data directory {}: {e}",
            config.data_dir.display()
        )
    })?;
    let path = config.data_dir.join("kith.redb");
    let store =
        crate::store::Store::open(&path).map_err(|e| format!("store {}: {e}", path.display()))?;
    let domain = &config.domain;
    let pw = |b64: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| "malformed password".to_string())
    };
    smol::block_on(async {
        let e = |e: accounts::AccountError| e.to_string();
        match fields {
            ["user-add", jid, p] => {
                let jid = accounts::account_jid(jid, domain).map_err(e)?;
                accounts::add(&store, &jid, &pw(p)?)
                    .await
                    .map_err(e)
                    .map(|_| vec![])
            }
            ["user-passwd", jid, p] => {
                let jid = accounts::account_jid(jid, domain).map_err(e)?;
                accounts::passwd(&store, &jid, &pw(p)?)
                    .await
                    .map_err(e)
                    .map(|_| vec![])
            }
            ["user-del", jid] => {
                let jid = accounts::account_jid(jid, domain).map_err(e)?;
                accounts::delete(&store, &jid)
                    .await
                    .map_err(e)
                    .map(|_| vec![])
            }
            ["user-list"] => accounts::list(&store).await.map_err(e),
            _ => Err("unknown request".into()),
        }
    })
}

/// The password from `--password`, a no-echo prompt on a terminal, or one line of stdin.
fn read_password(given: Option<String>, jid: &str, confirm: bool) -> Result<String, String> {
    if let Some(p) = given {
        return Ok(p);
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let p = rpassword::prompt_password(format!("Password for {jid}: "))
            .map_err(|e| format!("cannot read the password: {e}"))?;
        if confirm {
            let again = rpassword::prompt_password("Repeat it: ")
                .map_err(|e| format!("cannot read the password: {e}"))?;
            if again != p {
                return Err("the two passwords differ; nothing was changed".into());
            }
        }
        Ok(p)
    } else {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
        let p = line.trim_end_matches(['\n', '\r']).to_string();
        if p.is_empty() {
            return Err("no password given (pass --password, or one line on stdin)".into());
        }
        Ok(p)
    }
}

fn level_filter(level: config::LogLevel) -> log::LevelFilter {
    match level {
        config::LogLevel::Error => log::LevelFilter::Error,
        config::LogLevel::Warn => log::LevelFilter::Warn,
        config::LogLevel::Info => log::LevelFilter::Info,
        config::LogLevel::Debug => log::LevelFilter::Debug,
        config::LogLevel::Trace => log::LevelFilter::Trace,
    }
}
