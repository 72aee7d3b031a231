//! The built-in modules an admin can see and switch (`kith module list|enable|disable`): one
//! table row per feature, with the config key that switches it, if any.
//!
//! Switching edits the config file as text, one line, so comments and layout stay as the admin
//! wrote them: the key's line in its section is rewritten (a trailing comment kept), or the
//! key is added under the section header, or the section is appended. The result must pass
//! the config parser before it replaces the file (written to a temporary file, then renamed).

use std::path::Path;

use crate::config::{self, Config};

pub struct Module {
    pub name: &'static str,
    pub description: &'static str,
    /// `(section, key)` of the boolean that switches it; `None`: always on in this version.
    pub key: Option<(&'static str, &'static str)>,
    /// Whether it is on under this config.
    pub on: fn(&Config) -> bool,
}

fn on(_: &Config) -> bool {
    true
}

pub const MODULES: &[Module] = &[
    Module {
        name: "carbons",
        description: "XEP-0280 message carbons: a message reaches all of a person's devices",
        key: Some(("modules", "carbons")),
        on: |c| c.modules.carbons,
    },
    Module {
        name: "announce",
        description: "admins send a message to everyone online (kith announce, ad-hoc)",
        key: Some(("modules", "announce")),
        on: |c| c.modules.announce,
    },
    Module {
        name: "motd",
        description: "a message of the day each person gets once at login (kith motd)",
        key: Some(("modules", "motd")),
        on: |c| c.modules.motd,
    },
    Module {
        name: "upload",
        description: "XEP-0363 file sharing at upload.DOMAIN",
        key: Some(("upload", "enabled")),
        on: |c| c.upload.enabled,
    },
    Module {
        name: "turn",
        description: "the built-in STUN/TURN server for audio and video calls",
        key: Some(("turn", "enabled")),
        on: |c| c.turn.builtin(),
    },
    Module {
        name: "muc",
        description: "XEP-0045 group chats at conference.DOMAIN",
        key: Some(("muc", "enabled")),
        on: |c| c.muc.enabled,
    },
    Module {
        name: "pubsub",
        description: "XEP-0060 publish-subscribe service at pubsub.DOMAIN",
        key: Some(("pubsub", "enabled")),
        on: |c| c.pubsub.enabled,
    },
    Module {
        name: "proxy65",
        description: "XEP-0065 file-transfer proxy at proxy.DOMAIN (needs its port open)",
        key: Some(("proxy65", "enabled")),
        on: |c| c.proxy65.enabled,
    },
    Module {
        name: "mam",
        description: "XEP-0313 message archive: history synced across devices",
        key: None,
        on,
    },
    Module {
        name: "pep",
        description: "XEP-0163 personal eventing: avatars, nicknames, OMEMO keys",
        key: None,
        on,
    },
    Module {
        name: "bookmarks",
        description: "XEP-0402 bookmarks of group chats",
        key: None,
        on,
    },
    Module {
        name: "vcard",
        description: "XEP-0054 vCards (profile and avatar for older clients)",
        key: None,
        on,
    },
    Module {
        name: "blocking",
        description: "XEP-0191 blocking of unwanted contacts",
        key: None,
        on,
    },
    Module {
        name: "push",
        description: "XEP-0357 push notifications for phone apps",
        key: None,
        on,
    },
    Module {
        name: "csi",
        description: "XEP-0352 client state indication (saves phone battery)",
        key: None,
        on,
    },
    Module {
        name: "smacks",
        description: "XEP-0198 stream management: no lost messages on flaky networks",
        key: None,
        on,
    },
    Module {
        name: "websocket",
        description: "RFC 7395 XMPP over WebSocket for web clients ([listen] https)",
        key: None,
        on,
    },
    Module {
        name: "bosh",
        description: "XEP-0206 XMPP over BOSH for older web clients ([listen] https)",
        key: None,
        on,
    },
    Module {
        name: "s2s",
        description: "federation with other servers (close with [listen] s2s = [])",
        key: None,
        on: |c| !c.listen.s2s.is_empty() || !c.listen.s2s_direct_tls.is_empty(),
    },
    Module {
        name: "adhoc",
        description: "XEP-0050/XEP-0133 admin commands from a client such as Gajim",
        key: None,
        on,
    },
];

pub fn find(name: &str) -> Option<&'static Module> {
    MODULES.iter().find(|m| m.name == name)
}

/// `kith module list`: name, on/off, description, aligned.
pub fn list(cfg: &Config) -> String {
    let width = MODULES.iter().map(|m| m.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for m in MODULES {
        let state = if (m.on)(cfg) { "on" } else { "off" };
        let fixed = if m.key.is_none() { " (always on)" } else { "" };
        out.push_str(&format!(
            "{:width$}  {state:3}  {}{fixed}\n",
            m.name, m.description
        ));
    }
    out
}

/// `kith module enable|disable NAME`: edits the config file; returns what to tell the admin.
pub fn switch(path: &Path, name: &str, enable: bool) -> Result<String, String> {
    let Some(m) = find(name) else {
        let names: Vec<&str> = MODULES.iter().map(|m| m.name).collect();
        return Err(format!(
            "no module '{name}'; the modules are: {}",
            names.join(", ")
        ));
    };
    let Some((section, key)) = m.key else {
        return Err(format!(
            "'{name}' is always on in this version; there is nothing to switch"
        ));
    };
    if config::RESERVED_SECTIONS.contains(&section) {
        return Err(format!("'{name}' is not available in this version of kith"));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let before = config::parse(&text, path)
        .map_err(|e| format!("the configuration has problems; fix them first:\n{e}"))?;
    if (m.on)(&before) == enable {
        return Ok(format!(
            "{name} is already {}; nothing changed",
            if enable { "on" } else { "off" }
        ));
    }
    let edited = set_bool(&text, section, key, enable);
    let after = config::parse(&edited, path)
        .map_err(|e| format!("internal error: the edited configuration does not load:\n{e}"))?;
    if (m.on)(&after) != enable {
        return Err(format!(
            "setting [{section}] {key} = {enable} does not switch {name} with this configuration"
        ));
    }
    write_atomically(path, &edited)?;
    Ok(format!(
        "{name} {} in {}; restart kith to apply it (systemctl restart kith)",
        if enable { "enabled" } else { "disabled" },
        path.display()
    ))
}

/// Sets `[section] key = value` in TOML text, changing only the one line it is on (or adding
/// it). Pure.
pub fn set_bool(text: &str, section: &str, key: &str, value: bool) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let header = |l: &str| -> Option<String> {
        let t = l.trim();
        let inner = t.strip_prefix('[')?.split(']').next()?.trim();
        (!t.starts_with("[[")).then(|| inner.to_string())
    };
    let mut in_section = false;
    let mut header_at = None;
    for (i, l) in lines.iter().enumerate() {
        if let Some(h) = header(l) {
            in_section = h == section;
            if in_section {
                header_at = Some(i);
            }
            continue;
        }
        if !in_section {
            continue;
        }
        let t = l.trim_start();
        let Some(rest) = t.strip_prefix(key) else {
            continue;
        };
        let Some(after_eq) = rest.trim_start().strip_prefix('=') else {
            continue;
        };
        // Keep indentation and a trailing comment; replace only the value.
        let indent = &l[..l.len() - t.len()];
        let comment = after_eq.find('#').map(|p| &after_eq[p..]);
        let mut line = format!("{indent}{key} = {value}");
        if let Some(c) = comment {
            line.push(' ');
            line.push_str(c);
        }
        return join_replacing(&lines, text, i, Some(line), None);
    }
    let new_line = format!("{key} = {value}");
    match header_at {
        Some(h) => join_replacing(&lines, text, h, None, Some(new_line)),
        None => {
            let mut out = text.to_string();
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&format!("[{section}]\n{new_line}\n"));
            out
        }
    }
}

/// The lines again, with line `i` replaced (`replace`) or a line inserted after it (`insert`).
fn join_replacing(
    lines: &[&str],
    original: &str,
    i: usize,
    replace: Option<String>,
    insert: Option<String>,
) -> String {
    let mut out = String::with_capacity(original.len() + 32);
    for (n, l) in lines.iter().enumerate() {
        match (&replace, n == i) {
            (Some(r), true) => out.push_str(r),
            _ => out.push_str(l),
        }
        out.push('\n');
        if n == i {
            if let Some(ins) = &insert {
                out.push_str(ins);
                out.push('\n');
            }
        }
    }
    if !original.ends_with('\n') {
        out.pop();
    }
    out
}

fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "kith.toml".into());
    let tmp = dir.join(format!(".{name}.kith-module.tmp"));
    let result = (|| {
        std::fs::write(&tmp, text)?;
        // Keep the original file's permissions (it may hold secrets).
        if let Ok(meta) = std::fs::metadata(path) {
            std::fs::set_permissions(&tmp, meta.permissions())?;
        }
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_the_keys_line_and_keeps_comments() {
        let text = "# my server\ndomain = \"x.test\"\n\n[modules]\n# carbons help phones\n  carbons = true   # on for now\nmotd = true\n";
        let out = set_bool(text, "modules", "carbons", false);
        assert_eq!(
            out,
            "# my server\ndomain = \"x.test\"\n\n[modules]\n# carbons help phones\n  carbons = false # on for now\nmotd = true\n"
        );
    }

    #[test]
    fn adds_the_key_under_an_existing_section() {
        let text = "[modules]\nmotd = true\n\n[upload]\nenabled = true\n";
        assert_eq!(
            set_bool(text, "modules", "carbons", false),
            "[modules]\ncarbons = false\nmotd = true\n\n[upload]\nenabled = true\n"
        );
        // A key of the same name in another section is not touched.
        assert_eq!(
            set_bool(text, "upload", "enabled", false),
            "[modules]\nmotd = true\n\n[upload]\nenabled = false\n"
        );
    }

    #[test]
    fn appends_a_missing_section() {
        assert_eq!(
            set_bool("domain = \"x.test\" # mine", "modules", "carbons", false),
            "domain = \"x.test\" # mine\n\n[modules]\ncarbons = false\n"
        );
        assert_eq!(
            set_bool("", "modules", "carbons", false),
            "[modules]\ncarbons = false\n"
        );
    }

    #[test]
    fn a_longer_key_with_the_same_prefix_is_not_matched() {
        let text = "[modules]\ncarbons_extra = 1\n";
        assert_eq!(
            set_bool(text, "modules", "carbons", true),
            "[modules]\ncarbons = true\ncarbons_extra = 1\n"
        );
    }

    #[test]
    fn switch_edits_validates_and_reports() {
        let dir = std::env::temp_dir().join(format!("kith-modules-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kith.toml");
        std::fs::write(&path, "# family server\ndomain = \"x.test\"\n").unwrap();
        let msg = switch(&path, "carbons", false).unwrap();
        assert!(msg.contains("restart"), "{msg}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# family server\n"), "{text}");
        assert!(!config::parse(&text, &path).unwrap().modules.carbons);
        assert!(switch(&path, "carbons", false)
            .unwrap()
            .contains("already off"));
        assert!(switch(&path, "pep", false)
            .unwrap_err()
            .contains("always on"));
        assert!(switch(&path, "nope", false)
            .unwrap_err()
            .contains("no module"));
        let msg = switch(&path, "muc", false).unwrap();
        assert!(msg.contains("restart"), "{msg}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!config::parse(&text, &path).unwrap().muc.enabled, "{text}");
        assert!(text.starts_with("# family server\n"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
