//! `kith setup`: the guided first run. Asks for the domain, the admin account and its
//! password, where certificates come from, and who may register; checks right away what it
//! can (the ports can be bound, the DNS records exist and point here, through the same
//! functions as `kith check`); writes the config (only what differs from the defaults, with
//! comments); creates the admin; prints the DNS records to create; and offers to start the
//! systemd service.
//!
//! Every question has a flag, so `kith setup --domain D --admin A --yes` runs unattended (the
//! password then comes from `--admin-password` or one line of stdin). On a terminal the answers
//! are typed; the password is read without echo.
//!
//! Must not know: the config format (it fills a `Config` and asks `config` to write it) or
//! the store (accounts go through the same path as `kith user add`).

use std::io::{BufRead, IsTerminal, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::check::{self, host::HostAddresses, Severity};
use crate::config::{self, Config, RegistrationPolicy};

/// What the command line answered in advance.
#[derive(Clone, Debug, Default)]
pub struct Answers {
    pub domain: Option<String>,
    /// `alice` or `alice@example.org`.
    pub admin: Option<String>,
    pub admin_password: Option<String>,
    pub acme_email: Option<String>,
    /// `production` (default), `staging` or an ACME directory URL.
    pub acme_directory: Option<String>,
    /// A PEM file to trust for the ACME server's own HTTPS (a private ACME server).
    pub acme_ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub registration: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// Accept the defaults of every question not answered by a flag; never prompt.
    pub yes: bool,
    /// Start the service without asking (`Some(false)`: never).
    pub start: Option<bool>,
    /// Overwrite an existing config file.
    pub force: bool,
    /// The DNS server for the checks (default: the system's).
    pub resolver: Option<SocketAddr>,
    pub public_addresses: Vec<std::net::IpAddr>,
}

/// Where the config goes without `--config`.
pub const DEFAULT_CONFIG: &str = "/etc/kith/kith.toml";

/// Runs the setup; `config_path` is `--config` or the default.
pub fn run(config_path: Option<&Path>, answers: Answers) -> ExitCode {
    let path = config_path.map_or_else(|| PathBuf::from(DEFAULT_CONFIG), Path::to_path_buf);
    let interactive = !answers.yes && std::io::stdin().is_terminal();
    let mut ui = Ui { interactive };
    match setup(&path, answers, &mut ui) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kith setup: {e}");
            ExitCode::FAILURE
        }
    }
}

fn setup(path: &Path, a: Answers, ui: &mut Ui) -> Result<(), String> {
    if path.exists() && !a.force {
        let overwrite = ui.confirm(
            &format!(
                "{} exists. Replace it (accounts and data are kept)?",
                path.display()
            ),
            false,
        )?;
        if !overwrite {
            return Err(format!(
                "{} exists; nothing was changed (pass --force to replace it)",
                path.display()
            ));
        }
    }
    println!(
        "Setting up kith. Answers in [brackets] are the defaults; press Enter to keep them.\n"
    );
    let mut config = Config::defaults();

    config.domain = ui.ask_valid(
        "Domain (accounts will be name@domain)",
        a.domain.as_deref(),
        None,
        |s| config::normalize_domain(s.trim()).map_err(|(m, h)| with_help(m, h)),
    )?;
    let domain = config.domain.clone();

    let default_admin = format!("admin@{domain}");
    let admin = ui.ask_valid(
        "Admin account",
        a.admin.as_deref(),
        Some(&default_admin),
        |s| {
            crate::accounts::account_jid(s.trim(), &domain)
                .map(|j| j.to_string())
                .map_err(|e| e.to_string())
        },
    )?;
    let password = match a.admin_password.clone() {
        Some(p) => p,
        None => crate::cli::read_password(None, &admin, true)?,
    };
    if password.is_empty() {
        return Err("the admin password is empty".into());
    }
    config.admins = vec![admin.clone()];

    config.data_dir = match &a.data_dir {
        Some(d) => absolute(d),
        None if path.starts_with("/etc") => PathBuf::from("/var/lib/kith"),
        None => absolute(&path.parent().unwrap_or(Path::new(".")).join("kith-data")),
    };

    let acme_email = certificates(&mut config, &a, ui)?;
    config.acme.email = acme_email.clone();
    if acme_email.is_some() {
        if let Some(d) = &a.acme_directory {
            config.acme.directory = config::acme_directory(d).ok_or_else(|| {
                format!("--acme-directory '{d}' is not production, staging or an https:// URL")
            })?;
        }
        if let Some(ca) = &a.acme_ca {
            if !ca.is_file() {
                return Err(format!("--acme-ca {}: no such file", ca.display()));
            }
            config.acme.directory_ca = Some(absolute(ca));
        }
    } else if a.acme_directory.is_some() || a.acme_ca.is_some() {
        return Err("--acme-directory and --acme-ca need --acme-email".into());
    }

    let policy = ui.ask_valid(
        "Registration: invite (people you invite with 'kith invite'), closed (only admins add accounts), or open",
        a.registration.as_deref(),
        Some("invite"),
        |s| {
            RegistrationPolicy::parse(s.trim())
                .ok_or_else(|| "answer invite, closed or open".to_string())
        },
    )?;
    config.registration.policy = policy;

    println!("\nChecking what can be checked now:");
    check_ports(&config);
    if config.tls.cert.is_some() {
        for f in check::certs::check(&config, &check::Options::default()) {
            println!("  {:<8} {}: {}", f.severity.as_str(), f.subject, f.what);
        }
    }
    if acme_email.is_some() {
        println!(
            "  note     certificates come from Let's Encrypt once kith runs and ports 443 (or 80) are reachable from the internet"
        );
    }

    write_config(path, &config)?;
    println!("\nWrote {}", path.display());

    match crate::cli::admin_or_store(
        &config,
        &[
            "user-add",
            &admin,
            &crate::admin::encode_password(&password),
        ],
    ) {
        Ok(_) => println!("Created the admin account {admin}"),
        Err(e) if e.contains("already exists") => {
            println!("The account {admin} already exists; its password was left as it was")
        }
        Err(e) => return Err(format!("cannot create {admin}: {e}")),
    }

    let options = check::Options {
        resolver: a.resolver,
        public_addresses: a.public_addresses.clone(),
        timeout: Some(std::time::Duration::from_secs(3)),
        ..Default::default()
    };
    dns_report(&config, &options);
    start_service(&a, ui)?;
    println!(
        "\nDone. 'kith check' tells what is still missing; log in as {admin} with any XMPP app."
    );
    Ok(())
}

/// ACME, existing files, or self-signed; returns the ACME e-mail when chosen.
fn certificates(config: &mut Config, a: &Answers, ui: &mut Ui) -> Result<Option<String>, String> {
    if let (Some(cert), Some(key)) = (&a.cert, &a.key) {
        config.tls.cert = Some(absolute(cert));
        config.tls.key = Some(absolute(key));
        return Ok(None);
    }
    if a.cert.is_some() != a.key.is_some() {
        return Err("--cert and --key go together".into());
    }
    if let Some(email) = &a.acme_email {
        return Ok(Some(email.clone()));
    }
    if !ui.interactive {
        return Ok(None);
    }
    let choice = ui.ask_valid(
        "Certificates: 1) automatic from Let's Encrypt (needs port 80 or 443 reachable), 2) existing files, 3) self-signed for now",
        None,
        Some("1"),
        |s| match s.trim() {
            c @ ("1" | "2" | "3") => Ok(c.to_string()),
            _ => Err("answer 1, 2 or 3".into()),
        },
    )?;
    match choice.as_str() {
        "1" => {
            let email = ui.ask_valid(
                "E-mail for Let's Encrypt (expiry notices)",
                None,
                None,
                |s| {
                    let s = s.trim();
                    if s.contains('@') && !s.contains(char::is_whitespace) {
                        Ok(s.to_string())
                    } else {
                        Err("that is not an e-mail address".into())
                    }
                },
            )?;
            Ok(Some(email))
        }
        "2" => {
            let file = |what: &'static str| {
                move |s: &str| {
                    let p = PathBuf::from(s.trim());
                    if p.is_file() {
                        Ok(absolute(&p))
                    } else {
                        Err(format!("{what} {} is not a readable file", p.display()))
                    }
                }
            };
            config.tls.cert = Some(ui.ask_valid(
                "Certificate chain (fullchain.pem)",
                None,
                None,
                file("certificate"),
            )?);
            config.tls.key =
                Some(ui.ask_valid("Private key (privkey.pem)", None, None, file("key"))?);
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// Writes the config with only the changed keys.
fn write_config(path: &Path, config: &Config) -> Result<(), String> {
    let text = config.to_toml_changed();
    // What we write must load: the same checks as start-up.
    config::parse(&text, path)
        .map_err(|e| format!("internal error: the config written would not load:\n{e}"))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let tmp = path.with_extension("toml.new");
    std::fs::write(&tmp, text).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Can the listeners' ports be bound right now? Says what stands in the way.
fn check_ports(config: &Config) {
    let l = &config.listen;
    for (kind, addrs) in [
        ("c2s", &l.c2s),
        ("c2s_direct_tls", &l.c2s_direct_tls),
        ("s2s", &l.s2s),
        ("https", &l.https),
    ] {
        for addr in addrs {
            match TcpListener::bind(addr) {
                Ok(_) => println!("  ok       port {} ({kind}) is free", addr.port()),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => println!(
                    "  warning  port {} ({kind}) is in use: a running kith, or another program (see: ss -ltnp 'sport = :{}')",
                    addr.port(),
                    addr.port()
                ),
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => println!(
                    "  note     port {} ({kind}) needs root or CAP_NET_BIND_SERVICE; the systemd unit from install.sh grants it",
                    addr.port()
                ),
                Err(e) => println!("  warning  port {} ({kind}): {e}", addr.port()),
            }
        }
    }
}

/// The DNS findings, and the records to create when some are missing or wrong.
fn dns_report(config: &Config, options: &check::Options) {
    println!("\nDNS for {}:", config.domain);
    let findings = check::dns::check(config, options);
    let mut problems = 0;
    for f in &findings {
        if f.severity == Severity::Ok {
            continue;
        }
        problems += usize::from(f.severity.is_problem());
        println!("  {:<8} {}: {}", f.severity.as_str(), f.subject, f.what);
    }
    if problems == 0 {
        println!("  the records are in place");
        return;
    }
    let host = HostAddresses::discover(check::dns::public_addresses(config, options));
    println!("\nCreate these DNS records at your DNS provider (zone file syntax):");
    for record in check::dns::records_to_create(config, &host) {
        println!("  {record}");
    }
    if !host.sure {
        println!("  (this machine only has private addresses: use the public address of your router, and forward the ports to this machine)");
    }
}

/// `systemctl enable --now kith`, when systemd runs and the unit is installed.
fn start_service(a: &Answers, ui: &mut Ui) -> Result<(), String> {
    let systemd = Path::new("/run/systemd/system").is_dir();
    let unit = [
        "/etc/systemd/system/kith.service",
        "/lib/systemd/system/kith.service",
    ]
    .iter()
    .any(|p| Path::new(p).exists());
    if !systemd || !unit {
        println!("\nStart the server with: kith --config <this config> run");
        return Ok(());
    }
    let start = match a.start {
        Some(s) => s,
        None if ui.interactive => ui.confirm(
            "Start kith now and at every boot (systemctl enable --now kith)?",
            true,
        )?,
        None => false,
    };
    if !start {
        println!("\nStart it later with: systemctl enable --now kith");
        return Ok(());
    }
    let status = std::process::Command::new("systemctl")
        .args(["enable", "--now", "kith"])
        .status()
        .map_err(|e| format!("cannot run systemctl: {e}"))?;
    if status.success() {
        println!("kith is running (systemctl status kith; journalctl -u kith)");
        Ok(())
    } else {
        Err(format!(
            "systemctl enable --now kith failed ({status}); see journalctl -u kith"
        ))
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
            .components()
            .collect()
    }
}

fn with_help(message: String, help: Option<String>) -> String {
    match help {
        Some(h) => format!("{message} ({h})"),
        None => message,
    }
}

/// Questions on a terminal; with `interactive` false, only flags and defaults.
struct Ui {
    interactive: bool,
}

impl Ui {
    /// The flag's value, else (on a terminal) the typed answer or the default, checked by
    /// `valid`; asked again after a bad answer.
    fn ask_valid<T>(
        &mut self,
        question: &str,
        given: Option<&str>,
        default: Option<&str>,
        valid: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, String> {
        if let Some(given) = given {
            return valid(given).map_err(|e| format!("{question}: {e}"));
        }
        if !self.interactive {
            return match default {
                Some(d) => valid(d),
                None => Err(format!(
                    "{question}: no answer given (pass it as a flag; see kith setup --help)"
                )),
            };
        }
        loop {
            match default {
                Some(d) => print!("{question} [{d}]: "),
                None => print!("{question}: "),
            }
            let _ = std::io::stdout().flush();
            let mut line = String::new();
            let n = std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| format!("cannot read the answer: {e}"))?;
            if n == 0 {
                return Err("input ended; nothing was written".into());
            }
            let answer = line.trim();
            let answer = match (answer.is_empty(), default) {
                (true, Some(d)) => d,
                _ => answer,
            };
            match valid(answer) {
                Ok(v) => return Ok(v),
                Err(e) => println!("  {e}"),
            }
        }
    }

    fn confirm(&mut self, question: &str, default: bool) -> Result<bool, String> {
        if !self.interactive {
            return Ok(false);
        }
        let hint = if default { "Y/n" } else { "y/N" };
        self.ask_valid(
            &format!("{question} ({hint})"),
            None,
            Some(if default { "y" } else { "n" }),
            |s| match s.trim().to_ascii_lowercase().as_str() {
                "y" | "yes" => Ok(true),
                "n" | "no" => Ok(false),
                _ => Err("answer y or n".into()),
            },
        )
    }
}
