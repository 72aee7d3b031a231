//! The command line: `kith setup`, `kith run`, `kith user …`, `kith invite …`, `kith circle …`,
//! `kith check …`, `kith --version`. Parses arguments (argh), loads the config and dispatches;
//! everything it prints is for a person at a terminal.
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
    Setup(Setup),
    Run(Run),
    User(User),
    Check(Check),
    Invite(Invite),
    Circle(Circle),
}

/// Invite someone: prints a link (and its QR code) that lets them create an account. Also
/// `kith invite list` and `kith invite revoke TOKEN`. Works while the server runs.
#[derive(FromArgs)]
#[argh(subcommand, name = "invite")]
struct Invite {
    #[argh(subcommand)]
    op: Option<InviteOp>,
    /// the new account becomes an admin
    #[argh(switch)]
    admin: bool,
    /// how many accounts the link may create (default 1)
    #[argh(option, default = "1")]
    uses: u32,
    /// how long the link stays valid, like 7d, 12h, 1w (default: [invites] expires, 7d)
    #[argh(option)]
    expires: Option<String>,
    /// a circle the new account joins (repeatable)
    #[argh(option)]
    group: Vec<String>,
    /// the only username the link may create
    #[argh(option)]
    username: Option<String>,
    /// the inviting account: it and the new account become contacts
    #[argh(option)]
    from: Option<String>,
    /// do not draw the QR code
    #[argh(switch)]
    no_qr: bool,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum InviteOp {
    List(InviteList),
    Revoke(InviteRevoke),
}

/// List the invites that can still be used.
#[derive(FromArgs)]
#[argh(subcommand, name = "list")]
struct InviteList {}

/// Revoke an invite.
#[derive(FromArgs)]
#[argh(subcommand, name = "revoke")]
struct InviteRevoke {
    /// the invite's token (the last part of its link)
    #[argh(positional)]
    token: String,
}

/// Circles: members see each other in their contact lists.
#[derive(FromArgs)]
#[argh(subcommand, name = "circle")]
struct Circle {
    #[argh(subcommand)]
    op: CircleOp,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum CircleOp {
    Add(CircleAdd),
    Remove(CircleRemove),
    List(CircleList),
}

/// Add an account to a circle (the circle is created with its first member).
#[derive(FromArgs)]
#[argh(subcommand, name = "add")]
struct CircleAdd {
    /// the circle, e.g. family
    #[argh(positional)]
    circle: String,
    /// the account, e.g. alice@example.org
    #[argh(positional)]
    jid: String,
}

/// Remove an account from a circle.
#[derive(FromArgs)]
#[argh(subcommand, name = "remove")]
struct CircleRemove {
    /// the circle
    #[argh(positional)]
    circle: String,
    /// the account
    #[argh(positional)]
    jid: String,
}

/// List circles and their members.
#[derive(FromArgs)]
#[argh(subcommand, name = "list")]
struct CircleList {}

/// Check the setup and say what to fix: config, dns, certs, connectivity, all (the default),
/// or turn. One line per finding, a summary, exit code 1 when there are problems.
#[derive(FromArgs)]
#[argh(subcommand, name = "check")]
struct Check {
    /// what to check: config, dns, certs, connectivity, all (default), or turn (a relayed
    /// round trip through the STUN/TURN server)
    #[argh(positional, default = "String::from(\"all\")")]
    target: String,
    /// print the findings as JSON, for scripts
    #[argh(switch)]
    json: bool,
    /// the DNS server to ask, IP or IP:PORT (default: [check] resolver, else the system's)
    #[argh(option)]
    resolver: Option<String>,
    /// this server's public IP address, when it is behind NAT (repeat for several; default:
    /// [check] public_addresses, else the interfaces' addresses)
    #[argh(option)]
    public_ip: Vec<String>,
    /// CA certificates (PEM) to trust in the certificate check (default: the system's)
    #[argh(option)]
    ca_file: Option<PathBuf>,
    /// seconds to wait for each connection and DNS lookup (default 5)
    #[argh(option)]
    timeout: Option<u64>,
    /// for 'turn': the server to check as HOST:PORT (default: the built-in server where it
    /// listens, or the external [turn] host)
    #[argh(option)]
    server: Option<String>,
}

/// The guided first run: asks for the domain, the admin account, certificates and who may
/// register, checks ports and DNS, writes the config (default /etc/kith/kith.toml, or
/// --config), creates the admin and offers to start the service. Every question has a flag;
/// with --yes nothing is asked.
#[derive(FromArgs)]
#[argh(subcommand, name = "setup")]
struct Setup {
    /// the XMPP domain, e.g. example.org
    #[argh(option)]
    domain: Option<String>,
    /// the admin account, e.g. alice or alice@example.org (default: admin@DOMAIN)
    #[argh(option)]
    admin: Option<String>,
    /// the admin's password (visible in your shell history; without it, asked, or one line
    /// of stdin)
    #[argh(option)]
    admin_password: Option<String>,
    /// get certificates from Let's Encrypt with this contact e-mail
    #[argh(option)]
    acme_email: Option<String>,
    /// the ACME server: production (Let's Encrypt, default), staging, or a directory URL
    #[argh(option)]
    acme_directory: Option<String>,
    /// a PEM file to trust for the ACME server's own HTTPS (a private ACME server)
    #[argh(option)]
    acme_ca: Option<PathBuf>,
    /// use this certificate chain (PEM), with --key
    #[argh(option)]
    cert: Option<PathBuf>,
    /// the private key of --cert (PEM)
    #[argh(option)]
    key: Option<PathBuf>,
    /// who may create accounts: invite (default), closed or open
    #[argh(option)]
    registration: Option<String>,
    /// where kith keeps its data (default: /var/lib/kith for a config under /etc)
    #[argh(option)]
    data_dir: Option<PathBuf>,
    /// ask nothing: defaults for every question not answered by a flag
    #[argh(switch, short = 'y')]
    yes: bool,
    /// start the service (systemctl enable --now kith) without asking
    #[argh(switch)]
    start: bool,
    /// do not start the service
    #[argh(switch)]
    no_start: bool,
    /// replace an existing config file
    #[argh(switch)]
    force: bool,
    /// the DNS server for the checks, IP or IP:PORT (default: the system's)
    #[argh(option)]
    resolver: Option<String>,
    /// this server's public IP address, when it is behind NAT (repeatable)
    #[argh(option)]
    public_ip: Vec<String>,
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
    if let Command::Check(c) = &cmd {
        return check(args.config.as_deref(), c);
    }
    if let Command::Setup(s) = cmd {
        return setup(args.config.as_deref(), s);
    }
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
        Command::Invite(i) => invite(config, i),
        Command::Circle(c) => circle(config, c.op),
        // Loads the config itself, so that a broken one becomes its findings.
        Command::Check(c) => check(args.config.as_deref(), &c),
        // Writes the config rather than reading it.
        Command::Setup(s) => setup(args.config.as_deref(), s),
    }
}

fn setup(path: Option<&std::path::Path>, s: Setup) -> ExitCode {
    let usage = |message: String| {
        eprintln!("kith setup: {message}");
        ExitCode::from(2)
    };
    let resolver = match s
        .resolver
        .as_deref()
        .map(|r| (r, config::parse_resolver(r)))
    {
        None => None,
        Some((_, Some(addr))) => Some(addr),
        Some((r, None)) => return usage(format!("--resolver '{r}' is not IP or IP:PORT")),
    };
    let mut public_addresses = Vec::new();
    for ip in &s.public_ip {
        match ip.parse() {
            Ok(ip) => public_addresses.push(ip),
            Err(_) => return usage(format!("--public-ip '{ip}' is not an IP address")),
        }
    }
    if s.start && s.no_start {
        return usage("--start and --no-start contradict each other".into());
    }
    crate::setup::run(
        path,
        crate::setup::Answers {
            domain: s.domain,
            admin: s.admin,
            admin_password: s.admin_password,
            acme_email: s.acme_email,
            acme_directory: s.acme_directory,
            acme_ca: s.acme_ca,
            cert: s.cert,
            key: s.key,
            registration: s.registration,
            data_dir: s.data_dir,
            yes: s.yes,
            start: (s.start || s.no_start).then_some(s.start),
            force: s.force,
            resolver,
            public_addresses,
        },
    )
}

/// `kith check`: a config that does not load is itself the finding (exit 2), as in `run`.
fn check(path: Option<&std::path::Path>, c: &Check) -> ExitCode {
    use crate::check::{self as doctor, Part};
    let usage = |message: String| {
        eprintln!("kith check: {message}");
        ExitCode::from(2)
    };
    let parts = match c.target.as_str() {
        "turn" => None,
        target => match Part::parse_target(target) {
            Some(parts) => Some(parts),
            None => {
                return usage(format!(
                    "don't know how to check '{target}'; try one of: config, dns, certs, connectivity, all, turn"
                ))
            }
        },
    };
    let mut options = doctor::Options {
        ca_file: c.ca_file.clone(),
        timeout: c.timeout.map(std::time::Duration::from_secs),
        ..Default::default()
    };
    if let Some(r) = &c.resolver {
        match config::parse_resolver(r) {
            Some(addr) => options.resolver = Some(addr),
            None => return usage(format!("--resolver '{r}' is not IP or IP:PORT")),
        }
    }
    for ip in &c.public_ip {
        match ip.parse() {
            Ok(ip) => options.public_addresses.push(ip),
            Err(_) => return usage(format!("--public-ip '{ip}' is not an IP address")),
        }
    }
    let render = |findings: &[doctor::Finding]| {
        let out = if c.json {
            doctor::render_json(findings)
        } else {
            doctor::render_text(findings)
        };
        print!("{out}");
    };
    let config = match config::load(path) {
        Ok(config) => config,
        Err(e) => {
            render(&doctor::config::from_errors(&e));
            return ExitCode::from(2);
        }
    };
    let Some(parts) = parts else {
        return match crate::turn::check::run(&config, c.server.as_deref()) {
            true => ExitCode::SUCCESS,
            false => ExitCode::FAILURE,
        };
    };
    let findings = doctor::run(&config, &parts, &options);
    render(&findings);
    if doctor::has_problems(&findings) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
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

fn invite(config: Config, i: Invite) -> ExitCode {
    let result = match i.op {
        Some(InviteOp::List(_)) => admin_or_store(&config, &["invite-list"]).map(|lines| {
            if lines.is_empty() {
                println!("no invites");
            }
            for l in lines {
                println!("{l}");
            }
        }),
        Some(InviteOp::Revoke(r)) => admin_or_store(&config, &["invite-revoke", &r.token])
            .map(|_| println!("revoked {}", r.token)),
        None => new_invite(&config, &i),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kith: {e}");
            ExitCode::FAILURE
        }
    }
}

fn new_invite(config: &Config, i: &Invite) -> Result<(), String> {
    let expires = match &i.expires {
        Some(e) => crate::invites::parse_expiry(e)
            .map_err(|e| format!("--expires {e}"))?
            .as_secs()
            .to_string(),
        None => String::new(),
    };
    if i.group
        .iter()
        .any(|g| g.is_empty() || g.contains([',', '\t']))
    {
        return Err("--group: a circle name without commas or tabs".into());
    }
    let uses = i.uses.to_string();
    let groups = i.group.join(",");
    let fields = [
        "invite-create",
        if i.admin { "1" } else { "0" },
        &uses,
        &expires,
        &groups,
        i.username.as_deref().unwrap_or(""),
        i.from.as_deref().unwrap_or(""),
    ];
    let out = admin_or_store(config, &fields)?;
    let [_token, link, uri] = out.as_slice() else {
        return Err("unexpected answer from the server".into());
    };
    println!("Invite link (send it to the person you invite):\n\n  {link}\n");
    if !i.no_qr {
        if let Some(qr) = crate::invites::qr::terminal(link) {
            println!("Or let them scan it:\n\n{qr}");
        }
    }
    println!("For XMPP apps that support invites: {uri}");
    Ok(())
}

fn circle(config: Config, op: CircleOp) -> ExitCode {
    let result = match op {
        CircleOp::Add(a) => admin_or_store(&config, &["circle-add", &a.circle, &a.jid])
            .map(|_| println!("{} is in circle {}", display_jid(&a.jid, &config), a.circle)),
        CircleOp::Remove(r) => admin_or_store(&config, &["circle-remove", &r.circle, &r.jid])
            .map(|_| println!("{} left circle {}", display_jid(&r.jid, &config), r.circle)),
        CircleOp::List(_) => admin_or_store(&config, &["circle-list"]).map(|rows| {
            for r in rows {
                println!("{r}");
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
pub(crate) fn admin_or_store(config: &Config, fields: &[&str]) -> Result<Vec<String>, String> {
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
            // The server syncs rosters with circles when it starts.
            ["circle-add", circle, jid] => {
                let jid = accounts::account_jid(jid, domain).map_err(e)?;
                store
                    .circle_add(circle, jid.as_ref())
                    .await
                    .map(|_| vec![])
                    .map_err(|e| e.to_string())
            }
            ["circle-remove", _, _] => Err(
                "start the server first: leaving a circle updates the members' contact lists"
                    .into(),
            ),
            _ => match crate::invites::admin_request(&store, config, fields).await {
                Some(r) => r,
                None => Err("unknown request".into()),
            },
        }
    })
}

/// The password from `--password`, a no-echo prompt on a terminal, or one line of stdin.
pub(crate) fn read_password(
    given: Option<String>,
    jid: &str,
    confirm: bool,
) -> Result<String, String> {
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
