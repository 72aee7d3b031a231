//! `kith user import`: many accounts from `JID PASSWORD` lines, created in one transaction.
//!
//! The file format, for a person writing it by hand or exporting it from a spreadsheet:
//! one account per line; the JID (or just the user part) comes first, then a run of spaces or
//! tabs, then the password, which is the rest of the line exactly (it may contain spaces; only
//! the line ending, `\n` or `\r\n`, is removed). Blank lines and lines whose first non-blank
//! character is `#` are skipped.
//!
//! Every line is checked before anything is derived or written (address valid and on this
//! server's domain, password usable, no account twice in the file, account not existing
//! already), and every problem is reported with its line number, so one run finds them all.
//! Then the SCRAM credentials are derived on all cores and the accounts are created in one
//! store transaction: all of them or none.
//!
//! Must not know: the admin socket or the store (the CLI brings the existing accounts and
//! takes the derived credentials to one or the other).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::num::NonZeroUsize;

use crate::accounts;
use crate::sasl;

/// One account to create, as read from the file.
pub struct Entry {
    /// 1-based line number in the input, for messages.
    pub line: usize,
    /// The normalized bare JID.
    pub jid: String,
    password: String,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("line", &self.line)
            .field("jid", &self.jid)
            .finish_non_exhaustive()
    }
}

/// At most this many problems are listed; a wrong file usually repeats one mistake.
const MAX_PROBLEMS: usize = 50;

/// The input's problems, one message per line (`line N: ...`), in line order.
#[derive(Debug, PartialEq, Eq)]
pub struct Problems(pub Vec<String>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.0.len().min(MAX_PROBLEMS);
        for p in &self.0[..shown] {
            writeln!(f, "{p}")?;
        }
        if self.0.len() > shown {
            writeln!(f, "... and {} more", self.0.len() - shown)?;
        }
        write!(
            f,
            "{} problem{}; no account was created",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" }
        )
    }
}

/// What to do with a line whose account exists already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// It is a problem (the default: an import is usually meant to create every line).
    Refuse,
    /// Leave that account as it is (re-running an import after adding lines to the file).
    Skip,
}

/// What the server knows of a name on a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// Free: the account can be created.
    New,
    /// The account exists already.
    Exists,
    /// A deleted account's tombstone holds the name (see `accounts::Reuse`).
    Held,
}

/// Parses and checks `input` for accounts of `domain`. `known` tells what the server knows of
/// each name. Returns the entries to create (in input order) and how many lines were skipped
/// as existing, or every problem found.
pub fn parse(
    input: &[u8],
    domain: &str,
    known: impl Fn(&str) -> Known,
    existing: Existing,
) -> Result<(Vec<Entry>, usize), Problems> {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    let mut first_line: HashMap<String, usize> = HashMap::new();
    let mut skipped = 0;
    for (i, raw) in input.split(|&b| b == b'\n').enumerate() {
        let n = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let Ok(line) = std::str::from_utf8(raw) else {
            problems.push(format!("line {n}: not valid UTF-8"));
            continue;
        };
        let body = line.trim_start();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let Some((jid, password)) = body.split_once([' ', '\t']) else {
            problems.push(format!(
                "line {n}: no password after '{body}' (write: JID PASSWORD)"
            ));
            continue;
        };
        let password = password.trim_start_matches([' ', '\t']);
        let jid = match accounts::account_jid(jid, domain) {
            Ok(j) => j.to_string(),
            Err(e) => {
                problems.push(format!("line {n}: {e}"));
                continue;
            }
        };
        if let Err(e) = sasl::check_password(password) {
            problems.push(format!("line {n}: {jid}: {e}"));
            continue;
        }
        if let Some(first) = first_line.get(&jid) {
            problems.push(format!("line {n}: {jid} is already on line {first}"));
            continue;
        }
        first_line.insert(jid.clone(), n);
        match known(&jid) {
            Known::New => {}
            Known::Exists => {
                match existing {
                    Existing::Skip => skipped += 1,
                    Existing::Refuse => problems.push(format!(
                        "line {n}: account {jid} already exists (--skip-existing leaves it as \
                         it is)"
                    )),
                }
                continue;
            }
            Known::Held => {
                problems.push(format!(
                    "line {n}: {jid} was a deleted account's name and is kept from reuse \
                     (`kith user tombstones`); --force gives it out anyway"
                ));
                continue;
            }
        }
        entries.push(Entry {
            line: n,
            jid,
            password: password.to_string(),
        });
    }
    if problems.is_empty() {
        Ok((entries, skipped))
    } else {
        Err(Problems(problems))
    }
}

/// The stored credentials of every entry, `(jid, encoded creds)` in input order, derived on
/// `threads` threads.
///
/// This is the whole cost of an import: three PBKDF2 runs per account (SHA-1, SHA-256,
/// SHA-512 at [`sasl::DEFAULT_ITERATIONS`]), about 10 ms of CPU on a current server core,
/// half of it SHA-512. They are not made cheaper here on purpose: each account gets its own
/// salts and the same iteration count as `kith user add`, so an imported account is exactly
/// as hard to crack as any other; the import only spreads the work over every core.
pub fn derive(entries: &[Entry], threads: NonZeroUsize) -> Result<Vec<(String, Vec<u8>)>, String> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let chunk = entries.len().div_ceil(threads.get());
    std::thread::scope(|s| {
        let workers: Vec<_> = entries
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|e| {
                            sasl::derive_all(&e.password)
                                .map(|c| (e.jid.clone(), sasl::encode_creds(&c)))
                                .map_err(|err| format!("line {}: {}: {err}", e.line, e.jid))
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(entries.len());
        for w in workers {
            out.extend(
                w.join()
                    .map_err(|_| "a derivation thread failed".to_string())??,
            );
        }
        Ok(out)
    })
}

/// Threads for [`derive`]: one per core.
pub fn threads() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

/// The admin-socket form of an import (the CLI derives, the server only writes): the fields
/// after `user-import` (or `user-import-force`, which gives out names kept by tombstones) are
/// pairs of JID and base64 credentials blob.
pub fn encode_request(items: &[(String, Vec<u8>)], force: bool) -> Vec<String> {
    use base64::Engine as _;
    let mut fields = Vec::with_capacity(items.len() * 2 + 1);
    fields.push(
        if force {
            "user-import-force"
        } else {
            "user-import"
        }
        .to_string(),
    );
    for (jid, blob) in items {
        fields.push(jid.clone());
        fields.push(base64::engine::general_purpose::STANDARD.encode(blob));
    }
    fields
}

/// The inverse of [`encode_request`] (without the command field), checking that each JID is
/// an account of `domain` and each blob decodes as credentials: the socket is local and
/// private, but the store must never hold an account a login cannot read.
pub fn decode_request(fields: &[&str], domain: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    use base64::Engine as _;
    if fields.len() % 2 != 0 {
        return Err("malformed import request: odd number of fields".into());
    }
    let mut seen = HashSet::new();
    fields
        .chunks(2)
        .map(|pair| {
            let jid = accounts::account_jid(pair[0], domain)
                .map_err(|e| e.to_string())?
                .to_string();
            if !seen.insert(jid.clone()) {
                return Err(format!("{jid} appears twice in the import"));
            }
            let blob = base64::engine::general_purpose::STANDARD
                .decode(pair[1])
                .map_err(|_| format!("malformed credentials for {jid}"))?;
            sasl::decode_creds(&blob).map_err(|e| format!("{jid}: {e}"))?;
            Ok((jid, blob))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> Vec<(usize, String, String)> {
        let (entries, skipped) = parse(
            input.as_bytes(),
            "example.org",
            |_| Known::New,
            Existing::Refuse,
        )
        .unwrap_or_else(|p| panic!("{p}"));
        assert_eq!(skipped, 0);
        entries
            .into_iter()
            .map(|e| (e.line, e.jid, e.password))
            .collect()
    }

    fn problems(input: &str, exists: &[&str], existing: Existing) -> Vec<String> {
        parse(
            input.as_bytes(),
            "example.org",
            |j| {
                if exists.contains(&j) {
                    Known::Exists
                } else if j.starts_with("held@") {
                    Known::Held
                } else {
                    Known::New
                }
            },
            existing,
        )
        .err()
        .map(|p| p.0)
        .unwrap_or_default()
    }

    #[test]
    fn format() {
        let got = ok("# family\n\nalice@example.org  s3cret\r\n  bob\tcorrect horse battery \n\tcarol@EXAMPLE.org \t#not-a-comment\n");
        assert_eq!(
            got,
            vec![
                (3, "alice@example.org".into(), "s3cret".into()),
                (4, "bob@example.org".into(), "correct horse battery ".into()),
                (5, "carol@example.org".into(), "#not-a-comment".into()),
            ]
        );
        assert!(ok("").is_empty());
        assert!(ok("\n# only comments\n   \n").is_empty());
    }

    #[test]
    fn every_problem_names_its_line() {
        let input = "alice pw\n\
                     bob\n\
                     carol@elsewhere.org pw\n\
                     @example.org pw\n\
                     dave a\u{0}b\n\
                     Alice other\n\
                     erin pw\n\
                     \u{ff}\n";
        let mut bytes = input.as_bytes().to_vec();
        // Line 8 is not UTF-8.
        let last = bytes.len() - 3;
        bytes.splice(last..last + 2, [0xff]);
        let p = parse(
            &bytes,
            "example.org",
            |j| {
                if j == "erin@example.org" {
                    Known::Exists
                } else {
                    Known::New
                }
            },
            Existing::Refuse,
        )
        .unwrap_err()
        .0;
        let lines: Vec<&str> = p
            .iter()
            .map(|m| m.split(':').next().unwrap_or(""))
            .collect();
        assert_eq!(
            lines,
            ["line 2", "line 3", "line 4", "line 5", "line 6", "line 7", "line 8"],
            "{p:#?}"
        );
        assert!(p[1].contains("not on this server's domain"), "{}", p[1]);
        assert!(p[4].contains("already on line 1"), "{}", p[4]);
        assert!(p[5].contains("already exists"), "{}", p[5]);
        let shown = Problems(p).to_string();
        assert!(
            shown.ends_with("7 problems; no account was created"),
            "{shown}"
        );
        assert!(
            !shown.contains("a\u{0}b"),
            "passwords never appear: {shown}"
        );
    }

    #[test]
    fn skip_existing() {
        let (entries, skipped) = parse(
            b"alice pw1\nbob pw2\n",
            "example.org",
            |j| {
                if j == "alice@example.org" {
                    Known::Exists
                } else {
                    Known::New
                }
            },
            Existing::Skip,
        )
        .unwrap();
        assert_eq!(skipped, 1);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].jid, "bob@example.org");
        // A duplicate within the file stays a problem even when skipping existing accounts.
        assert_eq!(
            problems("bob a\nbob b\n", &[], Existing::Skip),
            ["line 2: bob@example.org is already on line 1"]
        );
    }

    #[test]
    fn a_name_kept_by_a_tombstone_is_a_problem_even_when_skipping() {
        assert_eq!(
            problems("alice pw\nheld pw\n", &[], Existing::Skip),
            [
                "line 2: held@example.org was a deleted account's name and is kept from reuse \
              (`kith user tombstones`); --force gives it out anyway"
            ]
        );
    }

    #[test]
    fn derive_keeps_order_and_verifies() {
        let input: String = (0..4).map(|i| format!("user{i} password {i}\n")).collect();
        let (entries, _) = parse(
            input.as_bytes(),
            "example.org",
            |_| Known::New,
            Existing::Refuse,
        )
        .unwrap();
        let derived = derive(&entries, NonZeroUsize::new(3).unwrap()).unwrap();
        assert_eq!(derived.len(), 4);
        for (i, (jid, blob)) in derived.iter().enumerate() {
            assert_eq!(jid, &format!("user{i}@example.org"));
            let creds = sasl::decode_creds(blob).unwrap();
            assert_eq!(creds.len(), 3);
            for c in &creds {
                assert_eq!(c.iterations, sasl::DEFAULT_ITERATIONS);
                assert!(sasl::verify_password(&format!("password {i}"), c));
            }
        }
        let request = encode_request(&derived, false);
        let fields: Vec<&str> = request[1..].iter().map(String::as_str).collect();
        assert_eq!(decode_request(&fields, "example.org").unwrap(), derived);
        assert!(decode_request(&fields[..3], "example.org").is_err());
        assert!(decode_request(&fields, "other.org").is_err());
        let mut twice = fields.clone();
        twice.extend_from_slice(&fields[..2]);
        assert!(decode_request(&twice, "example.org").is_err());
        let mut garbage = fields.clone();
        garbage[1] = "AAAA";
        assert!(decode_request(&garbage, "example.org").is_err());
    }
}
