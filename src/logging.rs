//! A small stderr logger: one line per event, tagged by the caller with the session
//! (`c2s#17: ...`) so an admin can follow one connection with grep.
//!
//! Under systemd (`JOURNAL_STREAM` set) lines carry a syslog priority prefix and no timestamp,
//! since journald adds both; on a terminal they carry a UTC timestamp.

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct StderrLogger {
    journald: bool,
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // Dependencies' debug chatter (rustls, redb) is not what an admin wants to read, nor
        // rustls-acme's narration of each order step at info: net::acme logs the events.
        let target = metadata.target();
        let quiet = if target.starts_with("rustls_acme") {
            Level::Warn
        } else {
            Level::Info
        };
        metadata.level() <= quiet || target.starts_with("kith")
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line = String::with_capacity(128);
        if self.journald {
            let prio = match record.level() {
                Level::Error => 3,
                Level::Warn => 4,
                Level::Info => 6,
                Level::Debug | Level::Trace => 7,
            };
            line.push_str(&format!("<{prio}>"));
        } else {
            line.push_str(&crate::time::rfc3339(crate::time::now_unix()));
            line.push(' ');
        }
        line.push_str(&format!("{:<5} {}", record.level(), record.args()));
        // One event, one line: a newline inside a message would forge a second log line.
        let mut line = line.replace(['\n', '\r'], " ");
        line.push('\n');
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Installs the logger. `KITH_LOG` (error, warn, info, debug, trace) overrides the config.
pub fn init(level: LevelFilter) {
    let level = std::env::var("KITH_LOG")
        .ok()
        .and_then(|v| v.parse::<LevelFilter>().ok())
        .unwrap_or(level);
    let logger = StderrLogger {
        journald: std::env::var_os("JOURNAL_STREAM").is_some(),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}
