//! `kith check [config|dns|certs|connectivity|all]`: the doctor command, modelled on
//! `prosodyctl check`. Each part looks at one thing an operator gets wrong (the config file,
//! DNS records, certificates, open ports) and returns findings: what is wrong, about which
//! name or file, and how to fix it. Rendering them (one line each, or `--json`) is separate, so
//! `kith setup` can reuse the same checks and tests can look at findings as data.
//!
//! Owns: the `Finding` type, the order in which parts run, the text and JSON output and the
//! exit code. Must not know: how a part gets its facts (each part's module does; the DNS rules
//! are pure over resolved answers in `dns.rs`).

pub mod certs;
pub mod config;
pub mod connectivity;
pub mod dns;
pub mod host;
pub mod tls;

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::config::Config;

/// How bad a finding is. `Warning` and `Error` count as problems (non-zero exit); `Note` is
/// something the check could not decide or that is worth knowing, and never fails a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Ok,
    Note,
    Warning,
    Error,
}

/// Which part of the check produced a finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Part {
    Config,
    Dns,
    Certs,
    Connectivity,
    /// `kith check tls` only (not in `all`: it makes dozens of connections).
    Tls,
}

/// One observation: about `subject` (a file:line, a DNS name, a certificate, an address),
/// `what` was found, and for a problem, how to `fix` it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub part: Part,
    pub severity: Severity,
    pub subject: String,
    pub what: String,
    pub fix: Option<String>,
}

/// Inputs besides the config: command-line overrides of `[check]`, and the time.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Overrides `[check] resolver`.
    pub resolver: Option<SocketAddr>,
    /// Overrides `[check] public_addresses`.
    pub public_addresses: Vec<IpAddr>,
    /// CA certificates for the chain check (default: the system's bundle).
    pub ca_file: Option<PathBuf>,
    /// Per connection attempt in `connectivity`, and per DNS lookup (default 5 s).
    pub timeout: Option<Duration>,
    /// `kith check tls --target HOST:PORT [--starttls]`: grade that listener instead of
    /// kith's own.
    pub tls_target: Option<tls::Target>,
}

impl Part {
    pub const ALL: [Part; 4] = [Part::Config, Part::Dns, Part::Certs, Part::Connectivity];

    pub fn as_str(self) -> &'static str {
        match self {
            Part::Config => "config",
            Part::Dns => "dns",
            Part::Certs => "certs",
            Part::Connectivity => "connectivity",
            Part::Tls => "tls",
        }
    }

    /// `config`, `dns`, `certs`, `connectivity`; `all` is every part.
    pub fn parse_target(target: &str) -> Option<Vec<Part>> {
        if target == "all" {
            return Some(Part::ALL.to_vec());
        }
        if target == "tls" {
            return Some(vec![Part::Tls]);
        }
        Part::ALL
            .into_iter()
            .find(|p| p.as_str() == target)
            .map(|p| vec![p])
    }
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }

    pub fn is_problem(self) -> bool {
        self >= Severity::Warning
    }
}

impl Finding {
    pub fn new(
        part: Part,
        severity: Severity,
        subject: impl Into<String>,
        what: impl Into<String>,
    ) -> Finding {
        Finding {
            part,
            severity,
            subject: subject.into(),
            what: what.into(),
            fix: None,
        }
    }

    pub fn fix(mut self, fix: impl Into<String>) -> Finding {
        self.fix = Some(fix.into());
        self
    }
}

/// Runs `parts` against a loaded config, in order.
pub fn run(config: &Config, parts: &[Part], options: &Options) -> Vec<Finding> {
    let mut findings = Vec::new();
    for part in parts {
        match part {
            Part::Config => findings.extend(config::check(config)),
            Part::Dns => findings.extend(dns::check(config, options)),
            Part::Certs => findings.extend(certs::check(config, options)),
            Part::Connectivity => findings.extend(connectivity::check(config, options)),
            Part::Tls => findings.extend(tls_check(config, options)),
        }
    }
    findings
}

/// Grades `--target`, or every client listener of this config.
fn tls_check(config: &Config, options: &Options) -> Vec<Finding> {
    let timeout = options.timeout.unwrap_or(Duration::from_secs(5));
    let targets = match &options.tls_target {
        Some(t) => vec![t.clone()],
        None => tls::own_targets(config),
    };
    let mut out = Vec::new();
    for t in targets {
        let how = if t.starttls { "STARTTLS" } else { "direct TLS" };
        let subject = format!("{}:{} ({how})", t.host, t.port);
        let facts = tls::probe(&t, options.ca_file.as_deref(), timeout);
        out.extend(tls::findings(&subject, facts));
    }
    out
}

/// Whether any finding is a problem (the exit code).
pub fn has_problems(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.severity.is_problem())
}

/// One line per finding (`error   dns  _xmpp-client._tcp.example.org: … (fix: …)`), then a
/// summary line.
pub fn render_text(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let _ = write!(
            out,
            "{:<8}{:<13}{}: {}",
            f.severity.as_str(),
            f.part.as_str(),
            f.subject,
            f.what
        );
        if let Some(fix) = &f.fix {
            let _ = write!(out, " (fix: {fix})");
        }
        out.push('\n');
    }
    out.push_str(&summary(findings));
    out.push('\n');
    out
}

/// `{"findings": [{"part", "severity", "subject", "what", "fix"}...], "summary": {...},
/// "ok": bool}`, for scripts.
pub fn render_json(findings: &[Finding]) -> String {
    let mut out = String::from("{\"findings\":[");
    for (i, f) in findings.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"part\":{},\"severity\":{},\"subject\":{},\"what\":{},\"fix\":{}}}",
            crate::json::string(f.part.as_str()),
            crate::json::string(f.severity.as_str()),
            crate::json::string(&f.subject),
            crate::json::string(&f.what),
            f.fix
                .as_deref()
                .map_or("null".to_string(), crate::json::string),
        );
    }
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    let _ = write!(
        out,
        "],\"summary\":{{\"errors\":{},\"warnings\":{},\"notes\":{},\"ok\":{}}},\"ok\":{}}}",
        count(Severity::Error),
        count(Severity::Warning),
        count(Severity::Note),
        count(Severity::Ok),
        !has_problems(findings)
    );
    out.push('\n');
    out
}

fn summary(findings: &[Finding]) -> String {
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    let (errors, warnings, notes, ok) = (
        count(Severity::Error),
        count(Severity::Warning),
        count(Severity::Note),
        count(Severity::Ok),
    );
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    if errors + warnings == 0 {
        format!(
            "All checks passed ({} passed, {}).",
            ok,
            plural(notes, "note")
        )
    } else {
        format!(
            "Problems found: {}, {} ({} passed, {}). Fix them and run 'kith check' again.",
            plural(errors, "error"),
            plural(warnings, "warning"),
            ok,
            plural(notes, "note")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Finding> {
        vec![
            Finding::new(Part::Config, Severity::Ok, "kith.toml", "valid"),
            Finding::new(
                Part::Dns,
                Severity::Error,
                "_xmpp-client._tcp.example.org",
                "port 5999 \"wrong\"",
            )
            .fix("set it to 5222"),
        ]
    }

    #[test]
    fn text_has_one_line_per_finding_and_a_summary() {
        let text = render_text(&sample());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], "ok      config       kith.toml: valid");
        assert!(
            lines[1].starts_with("error   dns          _xmpp-client._tcp.example.org: port 5999")
        );
        assert!(lines[1].ends_with("(fix: set it to 5222)"));
        assert!(
            lines[2].starts_with("Problems found: 1 error, 0 warnings"),
            "{text}"
        );
        let clean = render_text(&sample()[..1]);
        assert!(
            clean.ends_with("All checks passed (1 passed, 0 notes).\n"),
            "{clean}"
        );
    }

    #[test]
    fn json_escapes_and_summarises() {
        let json = render_json(&sample());
        assert!(
            json.contains("\"what\":\"port 5999 \\\"wrong\\\"\""),
            "{json}"
        );
        assert!(json.contains("\"fix\":null"));
        assert!(json.contains(
            "\"summary\":{\"errors\":1,\"warnings\":0,\"notes\":0,\"ok\":1},\"ok\":false"
        ));
    }

    #[test]
    fn targets() {
        assert_eq!(Part::parse_target("all").map(|p| p.len()), Some(4));
        assert_eq!(Part::parse_target("dns"), Some(vec![Part::Dns]));
        assert_eq!(Part::parse_target("dsn"), None);
        assert!(!Severity::Note.is_problem() && Severity::Warning.is_problem());
    }
}
