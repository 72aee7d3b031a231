//! The command line: `kith setup`, `kith run`, `kith user …`, `kith check …`, `kith backup`,
//! `kith restore`, `kith export`, `kith import`, `kith --version`. Parses
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
    Setup(Setup),
    Run(Run),
    User(User),
    Check(Check),
    Backup(Backup),
    Restore(Restore),
    Export(Export),
    Import(Import),
    Announce(Announce),
    Motd(Motd),
    Module(ModuleCmd),
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

/// Send a message to everyone online now (needs the running server).
#[derive(FromArgs)]
#[argh(subcommand, name = "announce")]
struct Announce {
    /// the text
    #[argh(positional)]
    text: String,
}

/// The message of the day, sent to each person once at login: set TEXT, clear, or show.
#[derive(FromArgs)]
#[argh(subcommand, name = "motd")]
struct Motd {
    /// set, clear or show
    #[argh(positional)]
    op: String,
    /// the text (for set)
    #[argh(positional)]
    text: Option<String>,
}

/// Built-in modules: list (with on/off), enable NAME, disable NAME (edits the config file).
#[derive(FromArgs)]
#[argh(subcommand, name = "module")]
struct ModuleCmd {
    /// list, enable or disable
    #[argh(positional)]
    op: String,
    /// the module (for enable and disable)
    #[argh(positional)]
    name: Option<String>,
}

/// Write every account (credentials as SCRAM keys, roster, vCard, private XML, offline
/// messages, PEP, archive) as a XEP-0227 file, for another kith or another XMPP server.
#[derive(FromArgs)]
#[argh(subcommand, name = "export")]
struct Export {
    /// the file to write (default: standard output)
    #[argh(positional)]
    file: Option<PathBuf>,
}

/// Create accounts from XEP-0227 files (a `kith export`, or Prosody's `prosody-migrator`
/// output: one user@host.xml per user; a directory means every .xml in it). Refuses accounts
/// that exist already, before importing anything.
#[derive(FromArgs)]
#[argh(subcommand, name = "import")]
struct Import {
    /// the files or directories to import
    #[argh(positional)]
    files: Vec<PathBuf>,
}

/// Write a consistent backup of the data to FILE, while the server runs or not: every table of
/// the store, the dialback and TURN secrets, and with --with-uploads the uploaded files.
/// Certificates and the config file are not included.
#[derive(FromArgs)]
#[argh(subcommand, name = "backup")]
struct Backup {
    /// the backup file to write (must not exist)
    #[argh(positional)]
    file: PathBuf,
    /// also copy the uploaded files (DATA/upload/), which can be large
    #[argh(switch)]
    with_uploads: bool,
}

/// Replace the data with a backup made by `kith backup`. The server must be stopped; the
/// current store and secrets are kept beside them as NAME.before-restore-TIME.
#[derive(FromArgs)]
#[argh(subcommand, name = "restore")]
struct Restore {
    /// the backup file
    #[argh(positional)]
    file: PathBuf,
}

/// Check the setup and say what to fix: config, dns, certs, connectivity, all (the default),
/// or turn. One line per finding, a summary, exit code 1 when there are problems.
#[derive(FromArgs)]
#[argh(subcommand, name = "check")]
struct Check {
    /// what to check: config, dns, certs, connectivity, all (default), turn (a relayed
    /// round trip through the STUN/TURN server) or tls (grade the TLS listeners)
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
    /// for 'tls': grade this listener, HOST:PORT (default: this server's client listeners)
    #[argh(option, long = "target")]
    tls_target: Option<String>,
    /// for 'tls' with --target: speak XMPP STARTTLS before TLS
    #[argh(switch)]
    starttls: bool,
    /// for 'tls' with --target: the domain for SNI, the stream and the chain check (default:
    /// HOST)
    #[argh(option, long = "domain")]
    tls_domain: Option<String>,
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
    Export(UserExport),
    Tombstones(UserTombstones),
    Import(UserImport),
}

/// Create many accounts from `JID PASSWORD` lines (FILE, or stdin without it), in one
/// transaction: all or none. The password is the rest of the line after the blank(s) that
/// follow the JID, spaces included; blank lines and `#` comments are skipped. Every line is
/// checked first and each problem names its line.
#[derive(FromArgs)]
#[argh(subcommand, name = "import")]
struct UserImport {
    /// the file to read (default: stdin)
    #[argh(positional)]
    file: Option<PathBuf>,
    /// leave accounts that exist already as they are (default: they are an error)
    #[argh(switch)]
    skip_existing: bool,
    /// give out names of deleted accounts even while their tombstones hold
    #[argh(switch)]
    force: bool,
}

/// Write an account's data (roster, vCard, private XML, PEP, offline messages, archive; no
/// password) as XEP-0227 XML to FILE, or to stdout.
#[derive(FromArgs)]
#[argh(subcommand, name = "export")]
struct UserExport {
    /// the account, e.g. alice@example.org
    #[argh(positional)]
    jid: String,
    /// the file to write (default: stdout)
    #[argh(positional)]
    file: Option<PathBuf>,
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
    /// give out the name of a deleted account even while its tombstone holds
    #[argh(switch)]
    force: bool,
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

/// List all accounts, with when each was last seen ("online now" while connected).
#[derive(FromArgs)]
#[argh(subcommand, name = "list")]
struct UserList {}

/// List the names of deleted accounts that stay reserved, or free one with --clear.
#[derive(FromArgs)]
#[argh(subcommand, name = "tombstones")]
struct UserTombstones {
    /// free this name for anyone to register, e.g. alice@example.org
    #[argh(option)]
    clear: Option<String>,
}

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
        Command::Announce(a) => announce(&config, &a.text),
        Command::Motd(m) => motd(&config, &m.op, m.text.as_deref()),
        Command::Module(m) => module(&config, &m.op, m.name.as_deref()),
        Command::Backup(b) => backup(&config, b),
        Command::Restore(r) => restore(&config, r),
        Command::Export(e) => export(&config, e),
        Command::Import(i) => import(&config, i),
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
                    "don't know how to check '{target}'; try one of: config, dns, certs, connectivity, all, turn, tls"
                ))
            }
        },
    };
    let mut options = doctor::Options {
        ca_file: c.ca_file.clone(),
        timeout: c.timeout.map(std::time::Duration::from_secs),
        ..Default::default()
    };
    if let Some(t) = &c.tls_target {
        let parsed = t
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)));
        let Some((host, port)) = parsed else {
            return usage(format!("--target '{t}' is not HOST:PORT"));
        };
        options.tls_target = Some(doctor::tls::Target {
            host: host.to_string(),
            port,
            starttls: c.starttls,
            domain: c.tls_domain.clone().unwrap_or_else(|| host.to_string()),
        });
    }
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
                let op = if a.force {
                    "user-add-force"
                } else {
                    "user-add"
                };
                admin_or_store(&config, &[op, &a.jid, &crate::admin::encode_password(&pw)])
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
        UserOp::Tombstones(UserTombstones { clear: Some(jid) }) => {
            admin_or_store(&config, &["user-tombstone-clear", &jid])
                .map(|_| println!("{} may be registered again", display_jid(&jid, &config)))
        }
        UserOp::Tombstones(UserTombstones { clear: None }) => {
            admin_or_store(&config, &["user-tombstones"]).map(|rows| {
                for row in rows {
                    println!("{row}");
                }
            })
        }
        UserOp::Import(i) => user_import(&config, &i),
        UserOp::List(_) => admin_or_store(&config, &["user-list-seen"]).map(|users| {
            let rows: Vec<(&str, &str)> = users
                .iter()
                .map(|u| u.split_once('\t').unwrap_or((u.as_str(), "")))
                .collect();
            let width = rows.iter().map(|(j, _)| j.len()).max().unwrap_or(0);
            for (jid, seen) in rows {
                println!("{jid:width$}  {seen}");
            }
        }),
        UserOp::Export(x) => admin_or_store(&config, &["user-export", &x.jid]).and_then(|data| {
            use base64::Engine as _;
            let xml = data
                .first()
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .ok_or("the server sent a malformed export")?;
            match &x.file {
                Some(f) => std::fs::write(f, &xml)
                    .map_err(|e| format!("cannot write {}: {e}", f.display()))
                    .map(|_| eprintln!("exported {} to {}", x.jid, f.display())),
                None => {
                    use std::io::Write;
                    std::io::stdout()
                        .write_all(&xml)
                        .map_err(|e| format!("cannot write: {e}"))
                }
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

fn backup(config: &Config, b: Backup) -> ExitCode {
    let dest = match std::path::absolute(&b.file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("kith backup: {}: {e}", b.file.display());
            return ExitCode::from(2);
        }
    };
    let dest_text = dest.to_string_lossy().into_owned();
    let uploads = if b.with_uploads {
        "uploads"
    } else {
        "no-uploads"
    };
    match admin_or_store(config, &["backup", &dest_text, uploads]) {
        Ok(lines) => {
            for l in lines {
                println!("{l}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kith backup: {e}");
            ExitCode::FAILURE
        }
    }
}

fn restore(config: &Config, r: Restore) -> ExitCode {
    if std::os::unix::net::UnixStream::connect(crate::admin::socket_path(&config.data_dir)).is_ok()
    {
        eprintln!(
            "kith restore: the server is running (it answers on {}); stop it first \
             (systemctl stop kith), then restore",
            crate::admin::socket_path(&config.data_dir).display()
        );
        return ExitCode::FAILURE;
    }
    match crate::backup::restore(&r.file, &config.data_dir) {
        Ok((info, kept)) => {
            println!(
                "restored {} (made by kith {} at {}) into {}",
                r.file.display(),
                info.kith_version,
                crate::time::rfc3339(info.created_unix),
                config.data_dir.display()
            );
            for k in kept {
                println!("kept the previous {k}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kith restore: {e}");
            ExitCode::FAILURE
        }
    }
}

fn export(config: &Config, e: Export) -> ExitCode {
    let doc = match admin_or_store(config, &["export"]) {
        Ok(lines) => lines.join("\n") + "\n",
        Err(err) => {
            eprintln!("kith export: {err}");
            return ExitCode::FAILURE;
        }
    };
    let written = match &e.file {
        None => std::io::Write::write_all(&mut std::io::stdout(), doc.as_bytes()),
        Some(path) => write_private(path, doc.as_bytes()),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let to = e
                .file
                .as_ref()
                .map_or("standard output".into(), |p| p.display().to_string());
            eprintln!("kith export: cannot write {to}: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The export holds password-equivalent SCRAM keys: readable by its owner only.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn import(config: &Config, i: Import) -> ExitCode {
    if i.files.is_empty() {
        eprintln!("kith import: give the XEP-0227 files (or a directory of them) to import");
        return ExitCode::from(2);
    }
    let mut paths = Vec::new();
    for f in &i.files {
        let listed = crate::migrate::expand_inputs(f).and_then(|list| {
            list.into_iter()
                .map(|p| std::path::absolute(&p).map_err(|e| format!("{}: {e}", p.display())))
                .collect::<Result<Vec<_>, _>>()
        });
        match listed {
            Ok(list) => paths.extend(list.into_iter().map(|p| p.to_string_lossy().into_owned())),
            Err(err) => {
                eprintln!("kith import: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    let mut fields = vec!["import"];
    fields.extend(paths.iter().map(String::as_str));
    match admin_or_store(config, &fields) {
        Ok(lines) => {
            for l in lines {
                println!("{l}");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("kith import: {err}");
            ExitCode::FAILURE
        }
    }
}

fn announce(config: &Config, text: &str) -> ExitCode {
    let fields = ["announce", &crate::admin::encode_password(text)];
    let result = match crate::admin::request(&config.data_dir, &fields) {
        Ok(Some(r)) => r.map(|d| {
            let n = d.first().map(String::as_str).unwrap_or("0");
            println!("announcement sent to {n} connected device(s)");
        }),
        Ok(None) => Err(format!(
            "the server is not running (no admin socket in {}); announcements go to people online now",
            config.data_dir.display()
        )),
        Err(e) => Err(e.to_string()),
    };
    report(result)
}

fn motd(config: &Config, op: &str, text: Option<&str>) -> ExitCode {
    let result = match (op, text) {
        ("set", Some(t)) if !t.trim().is_empty() => {
            admin_or_store(config, &["motd-set", &crate::admin::encode_password(t)]).map(|_| {
                println!("message of the day set; each person gets it at their next login")
            })
        }
        ("clear", None) => admin_or_store(config, &["motd-set", ""])
            .map(|_| println!("message of the day cleared")),
        ("show", None) => admin_or_store(config, &["motd-show"]).map(|lines| {
            if lines.is_empty() {
                println!("(no message of the day)");
            }
            for l in lines {
                println!("{l}");
            }
        }),
        _ => {
            eprintln!(
                "kith motd: use `kith motd set \"TEXT\"`, `kith motd clear` or `kith motd show`"
            );
            return ExitCode::from(2);
        }
    };
    report(result)
}

fn module(config: &Config, op: &str, name: Option<&str>) -> ExitCode {
    let path = match &config.source {
        config::ConfigSource::File(p) => p.clone(),
        config::ConfigSource::Defaults => PathBuf::from(config::SEARCH_PATHS[0]),
    };
    let result = match (op, name) {
        ("list", None) => {
            print!("{}", crate::modules::list(config));
            Ok(())
        }
        ("enable" | "disable", Some(n)) => {
            if !path.exists() {
                // With built-in defaults there is no file to keep: start one.
                if let Err(e) = std::fs::write(&path, "") {
                    return report(Err(format!("cannot create {}: {e}", path.display())));
                }
            }
            crate::modules::switch(&path, n, op == "enable").map(|m| println!("{m}"))
        }
        _ => {
            eprintln!("kith module: use `kith module list`, `kith module enable NAME` or `kith module disable NAME`");
            return ExitCode::from(2);
        }
    };
    report(result)
}

fn report(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kith: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `kith user import`: checks every line against the accounts that exist (asked the same way
/// as every `user` command), derives the credentials here on every core, then hands them to the
/// running server or writes them to the store in one transaction.
fn user_import(config: &Config, args: &UserImport) -> Result<(), String> {
    use crate::user_import::{self, Existing, Known};
    use std::io::Read as _;
    let t0 = std::time::Instant::now();
    let mut input = Vec::new();
    match &args.file {
        Some(path) => {
            input =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?
        }
        None => {
            std::io::stdin()
                .lock()
                .read_to_end(&mut input)
                .map_err(|e| format!("cannot read stdin: {e}"))?;
        }
    }
    let existing: std::collections::HashSet<String> = admin_or_store(config, &["user-list"])?
        .into_iter()
        .collect();
    let held: std::collections::HashSet<String> = if args.force {
        Default::default()
    } else {
        admin_or_store(config, &["user-names-held"])?
            .into_iter()
            .collect()
    };
    let known = |jid: &str| {
        if existing.contains(jid) {
            Known::Exists
        } else if held.contains(jid) {
            Known::Held
        } else {
            Known::New
        }
    };
    let mode = if args.skip_existing {
        Existing::Skip
    } else {
        Existing::Refuse
    };
    let (entries, skipped) =
        user_import::parse(&input, &config.domain, known, mode).map_err(|p| p.to_string())?;
    let threads = user_import::threads();
    let t1 = std::time::Instant::now();
    let items = user_import::derive(&entries, threads)?;
    let derive_secs = t1.elapsed().as_secs_f64();
    let n = items.len();
    if n > 0 {
        let request = user_import::encode_request(&items, args.force);
        let fields: Vec<&str> = request.iter().map(String::as_str).collect();
        admin_or_store(config, &fields)?;
    }
    println!(
        "created {n} account{}{} in {:.1} s ({derive_secs:.1} s deriving SCRAM keys on {threads} thread{})",
        if n == 1 { "" } else { "s" },
        if skipped > 0 {
            format!(", left {skipped} existing")
        } else {
            String::new()
        },
        t0.elapsed().as_secs_f64(),
        if threads.get() == 1 { "" } else { "s" },
    );
    Ok(())
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
            [op @ ("user-add" | "user-add-force"), jid, p] => {
                let jid = accounts::account_jid(jid, domain).map_err(e)?;
                let reuse = match *op {
                    "user-add-force" => accounts::Reuse::Force,
                    _ => accounts::Reuse::configured(&config.registration),
                };
                accounts::add(&store, &jid, &pw(p)?, reuse)
                    .await
                    .map_err(e)
                    .map(|_| vec![])
            }
            ["user-tombstones"] => accounts::tombstones(&store).await.map_err(e),
            ["user-tombstone-clear", jid] => {
                let jid = accounts::account_jid(jid, domain).map_err(e)?;
                accounts::clear_tombstone(&store, &jid)
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
            [op @ ("user-import" | "user-import-force"), rest @ ..] => {
                let items = crate::user_import::decode_request(rest, domain)?;
                let n = items.len();
                let reuse = match *op {
                    "user-import-force" => accounts::Reuse::Force,
                    _ => accounts::Reuse::configured(&config.registration),
                };
                accounts::import(&store, items, reuse).await.map_err(e)?;
                Ok(vec![n.to_string()])
            }
            ["user-names-held"] => {
                accounts::names_held(&store, accounts::Reuse::configured(&config.registration))
                    .await
                    .map_err(e)
            }
            ["user-list-seen"] => crate::admin::user_list_seen(&store, &|_| false).await,
            ["user-export", jid] => {
                let jid = accounts::account_jid(jid, domain).map_err(e)?;
                crate::admin::user_export(&store, domain, &jid).await
            }
            ["motd-set", t] => {
                let text = if t.is_empty() { String::new() } else { pw(t)? };
                crate::services::announce::set_motd(&store, &text)
                    .await
                    .map(|_| vec![])
                    .map_err(|e| e.to_string())
            }
            ["motd-show"] => crate::admin::motd_lines(&store).await,
            ["export"] => crate::migrate::export_lines(&store, domain).await,
            ["import", files @ ..] => {
                let reuse = accounts::Reuse::configured(&config.registration);
                crate::migrate::import_files(&store, domain, reuse, files).await
            }
            ["backup", dest, uploads] => {
                let dest = std::path::PathBuf::from(dest);
                crate::backup::create(&store, &config.data_dir, &dest, *uploads == "uploads")
                    .map(|info| vec![crate::backup::describe(&info, &dest)])
            }
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
