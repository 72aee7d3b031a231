//! Server announcements (Prosody's mod_announce) and the message of the day (mod_motd): both
//! are `headline` messages from the server's domain.
//!
//! An announcement goes once to every connected resource. The MOTD is stored (meta key `motd`:
//! a change id, a NUL, the text) and sent to each account once per change, at the first
//! initial presence after it (the account's kv `motd-seen` holds the id it got).

use crate::jid::FullJid;
use crate::server::Server;
use crate::sessions::{self, Outbound};
use crate::stanza::ns;
use crate::store::StoreError;
use crate::xml::Element;

const META_MOTD: &str = "motd";
const KV_SEEN: &str = "motd-seen";

/// A headline from the server to `to`.
pub fn headline(domain: &str, to: &FullJid, subject: Option<&str>, body: &str) -> Element {
    let mut m = Element::new("message", ns::CLIENT)
        .with_attr("from", domain)
        .with_attr("to", to.as_str())
        .with_attr("type", "headline");
    if let Some(s) = subject.filter(|s| !s.is_empty()) {
        m.push_child(Element::new("subject", ns::CLIENT).with_text(s));
    }
    m.push_child(Element::new("body", ns::CLIENT).with_text(body));
    m
}

/// Sends an announcement to every connected resource; returns how many got it.
pub fn announce(srv: &Server, subject: Option<&str>, body: &str) -> usize {
    let mut sent = 0;
    for r in srv.sessions.all() {
        let m = headline(srv.domain(), &r.jid, subject, body);
        if sessions::send(&r, Outbound::stanza(m)) {
            sent += 1;
        }
    }
    log::info!("announce: sent to {sent} resource(s)");
    sent
}

/// The current MOTD: `(change id, text)`.
pub async fn motd(srv: &Server) -> Result<Option<(String, String)>, StoreError> {
    Ok(srv
        .store
        .meta_get(META_MOTD)
        .await?
        .and_then(|raw| decode_motd(&raw)))
}

fn decode_motd(raw: &[u8]) -> Option<(String, String)> {
    let text = String::from_utf8_lossy(raw);
    let (id, body) = text.split_once('\0')?;
    (!body.is_empty()).then(|| (id.to_string(), body.to_string()))
}

/// Sets (or with an empty text, clears) the MOTD; accounts get it at their next login.
pub async fn set_motd(srv: &Server, text: &str) -> Result<(), StoreError> {
    let text = text.trim();
    let id = format!("{:x}", fastrand::u64(..));
    let raw = if text.is_empty() {
        Vec::new()
    } else {
        format!("{id}\0{text}").into_bytes()
    };
    srv.store.meta_set(META_MOTD, raw).await?;
    log::info!(
        "motd: {}",
        if text.is_empty() {
            "cleared"
        } else {
            "changed"
        }
    );
    Ok(())
}

/// After a resource's initial presence: the MOTD, if this account hasn't had this one.
pub async fn on_initial_presence(srv: &Server, me: &FullJid) {
    if !srv.config.modules.motd {
        return;
    }
    let owner = me.bare_str();
    let (id, text) = match motd(srv).await {
        Ok(Some(m)) => m,
        Ok(None) => return,
        Err(e) => return log::error!("motd: cannot read: {e}"),
    };
    match srv.store.kv_get(owner, KV_SEEN).await {
        Ok(Some(seen)) if seen == id.as_bytes() => return,
        Ok(_) => {}
        Err(e) => return log::error!("motd: cannot read what {owner} has seen: {e}"),
    }
    if let Some(r) = srv.sessions.resource(me) {
        sessions::send(
            &r,
            Outbound::stanza(headline(srv.domain(), me, None, &text)),
        );
    }
    if let Err(e) = srv
        .store
        .kv_set(owner, KV_SEEN, Some(id.into_bytes()))
        .await
    {
        log::error!("motd: cannot record delivery to {owner}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn motd_record_round_trip_and_empty_means_none() {
        assert_eq!(
            decode_motd(b"1a\0Hello\nall"),
            Some(("1a".into(), "Hello\nall".into()))
        );
        assert_eq!(decode_motd(b""), None);
        assert_eq!(decode_motd(b"1a\0"), None);
    }

    #[test]
    fn headline_has_no_empty_subject() {
        let to = FullJid::parse("a@example.test/r").unwrap();
        let m = headline("example.test", &to, Some(""), "hi");
        assert_eq!(
            m.to_string(),
            "<message xmlns='jabber:client' from='example.test' to='a@example.test/r' type='headline'><body>hi</body></message>"
        );
    }
}
