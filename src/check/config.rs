//! `kith check config`: the config file's problems (every one, with file:line:col, as
//! `config::parse` reports them) and the choices in a valid file that an operator likely did
//! not mean: the `localhost` domain, no admins, open registration, no client listener.

use super::{Finding, Part, Severity};
use crate::config::{Config, ConfigErrors, ConfigSource, RegistrationPolicy};

/// Findings for a config that failed to load: one error per problem.
pub fn from_errors(errors: &ConfigErrors) -> Vec<Finding> {
    errors
        .problems()
        .iter()
        .map(|p| {
            let mut subject = p.file.display().to_string();
            if let Some(pos) = p.position {
                subject = format!("{subject}:{}:{}", pos.line, pos.column);
            }
            let f = Finding::new(Part::Config, Severity::Error, subject, p.message.clone());
            match &p.help {
                Some(help) => f.fix(help.clone()),
                None => f,
            }
        })
        .collect()
}

/// Findings for a config that loaded.
pub fn check(config: &Config) -> Vec<Finding> {
    let text = match &config.source {
        ConfigSource::File(path) => std::fs::read_to_string(path).unwrap_or_default(),
        ConfigSource::Defaults => String::new(),
    };
    let at = |section: &str, key: &str| -> String {
        match &config.source {
            ConfigSource::File(path) => match line_of(&text, section, key) {
                Some(line) => format!("{}:{line}", path.display()),
                None => path.display().to_string(),
            },
            ConfigSource::Defaults => "built-in defaults".into(),
        }
    };
    let mut out = Vec::new();
    match &config.source {
        ConfigSource::File(path) => out.push(Finding::new(
            Part::Config,
            Severity::Ok,
            path.display().to_string(),
            "the file is valid",
        )),
        ConfigSource::Defaults => out.push(
            Finding::new(
                Part::Config,
                Severity::Note,
                "built-in defaults",
                "no config file found (./kith.toml, /etc/kith/kith.toml)",
            )
            .fix("run 'kith setup' to write one, or pass --config PATH"),
        ),
    }
    if config.domain == "localhost" {
        out.push(
            Finding::new(
                Part::Config,
                Severity::Warning,
                at("", "domain"),
                "the domain is 'localhost': only this machine can use the server",
            )
            .fix("set domain = \"example.org\" (your domain), or run 'kith setup'"),
        );
    }
    if config.admins.is_empty() {
        out.push(
            Finding::new(
                Part::Config,
                Severity::Note,
                at("", "admins"),
                "no admins are listed",
            )
            .fix(format!("add admins = [\"you@{}\"]", config.domain)),
        );
    }
    if config.registration.policy == RegistrationPolicy::Open {
        out.push(
            Finding::new(
                Part::Config,
                Severity::Warning,
                at("registration", "policy"),
                "registration is open to anyone: spammers look for such servers",
            )
            .fix("set [registration] policy = \"invite\" (or \"closed\")"),
        );
    }
    if config.listen.c2s.is_empty() && config.listen.c2s_direct_tls.is_empty() {
        out.push(
            Finding::new(
                Part::Config,
                Severity::Error,
                at("listen", "c2s"),
                "no client listener: [listen] c2s and c2s_direct_tls are both empty",
            )
            .fix("set c2s = [\"[::]:5222\"] in [listen]"),
        );
    }
    out
}

/// The 1-based line of `key` in `[section]` (`""`: top level), by a plain scan of the text.
fn line_of(text: &str, section: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    for (index, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
            current = name.trim().to_string();
            continue;
        }
        let name = t.split('=').next().unwrap_or("").trim();
        if current == section && name == key && t.contains('=') {
            return Some(index + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings(text: &str) -> Vec<(Severity, String, String)> {
        // Tests run in parallel in one process: one file each.
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("kith-check-config-{}-{n}.toml", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, text).unwrap();
        let result = match crate::config::load(Some(&path)) {
            Ok(config) => check(&config),
            Err(e) => from_errors(&e),
        };
        let _ = std::fs::remove_file(&path);
        result
            .into_iter()
            .map(|f| {
                let subject = f.subject.rsplit('/').next().unwrap_or("").to_string();
                (f.severity, subject, f.what)
            })
            .collect()
    }

    #[test]
    fn a_broken_file_gives_one_error_per_problem_with_its_line() {
        let found = findings("domian = \"example.org\"\n[listen]\nc2s = \"[::]:5222\"\n");
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].1.ends_with(".toml:1:1") && found[0].2.contains("unknown key 'domian'"),
            "{found:?}"
        );
        assert!(found[1].1.ends_with(".toml:3:7"), "{found:?}");
        assert!(found.iter().all(|f| f.0 == Severity::Error));
    }

    #[test]
    fn likely_mistakes_in_a_valid_file() {
        let found = findings("log_level = \"info\"\n[registration]\npolicy = \"open\"\n");
        let problems: Vec<&(Severity, String, String)> =
            found.iter().filter(|f| f.0.is_problem()).collect();
        assert_eq!(problems.len(), 2, "{found:?}");
        assert!(problems[0].2.contains("'localhost'"));
        assert!(
            problems[1].1.ends_with(".toml:3") && problems[1].2.contains("open to anyone"),
            "{problems:?}"
        );
        let clean = findings("domain = \"example.org\"\nadmins = [\"me@example.org\"]\n");
        assert!(clean.iter().all(|f| f.0 == Severity::Ok), "{clean:?}");
    }

    #[test]
    fn lines_of_keys() {
        let text = "domain = \"x\"\n[listen]\nc2s = []\n[registration]\n policy = \"open\"\n";
        assert_eq!(line_of(text, "", "domain"), Some(1));
        assert_eq!(line_of(text, "listen", "c2s"), Some(3));
        assert_eq!(line_of(text, "registration", "policy"), Some(5));
        assert_eq!(line_of(text, "", "admins"), None);
    }
}
