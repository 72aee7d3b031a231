//! XEP-0313 Message Archive Management for user archives, with XEP-0359 stanza ids and
//! XEP-0059 paging. Owns the decisions: what is archived (`stanza::mam::should_archive` and
//! the owner's preferences), how a query becomes a store range, how results reach the
//! querying resource (in order, then the iq result, all on its one queue), and retention.
//!
//! Where messages are archived (hooked from `services::message`):
//! - outgoing, in the sender's archive, when the message goes to an account: an existing one
//!   on this server, a component's JID, or a JID on another server (the sender's own account,
//!   bare domains and unknown local accounts excluded: an archive must not show as sent what
//!   bounced at once). Messages to one's own bare JID are archived once, as incoming.
//! - incoming, in the recipient's archive, before delivery or offline storage; the delivered
//!   copy carries `<stanza-id by='recipient' id='archive id'/>`, and any stanza-id the sender
//!   put in claiming to be by the recipient is removed first (XEP-0359 §5).
//!
//! A failure to archive is logged and the message still goes through: losing history is
//! better than losing the message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::jid::{BareJid, FullJid, Jid};
use crate::router::{bounce, deliver_reply};
use crate::server::Server;
use crate::sessions::{self, Outbound};
use crate::stanza::mam::{
    self as p, parse_prefs, parse_query, prefs_element, Before, DefaultPref, Prefs, QueryError,
    NS_MAM, NS_SID,
};
use crate::stanza::{self, Condition, StanzaError};
use crate::store::{ArchiveQuery, StoreError, WithFilter};
use crate::xml::Element;

/// The per-account kv key holding the `<prefs/>` element.
const PREFS_KEY: &str = "mam.prefs";
/// Rows deleted per write transaction by the retention task.
const EXPIRE_BATCH: usize = 500;
/// How often the retention task runs.
const EXPIRE_EVERY: Duration = Duration::from_secs(3600);

/// Per-server archive state: every account's preferences, read from the store once. Two
/// store reads per message (sender's and recipient's preferences) cost as much CPU as the
/// rest of the archive path together.
#[derive(Default)]
pub struct State {
    prefs: Mutex<HashMap<BareJid, Prefs>>,
}

impl State {
    /// Drops what is cached about an account (it was deleted).
    pub fn forget(&self, jid: &BareJid) {
        lock(&self.prefs).remove(jid);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sender side: archives an outgoing message in the sender's archive. Returns its archive id
/// (for a `<stanza-id by='sender'/>` on copies sent to the sender's other resources).
pub async fn outbound(srv: &Server, from: &FullJid, stanza: &Element) -> Option<u64> {
    // No `to`: addressed to the sender's own account, archived as incoming.
    let to = stanza::jid_attr(stanza, "to").ok()??;
    let own = from.to_bare();
    // Messages to a gateway's contacts (XEP-0114 components) and to other servers' users are
    // history too.
    let local = srv.is_local_domain(to.domain());
    if to.node().is_none() || to.to_bare() == own {
        return None;
    }
    if !p::should_archive(stanza) || !wanted(srv, &own, &to.to_bare()).await {
        return None;
    }
    // A message to a made-up account bounces; it was never sent, so it isn't history.
    if local && !crate::services::iq::account_exists(srv, &to.to_bare()).await {
        return None;
    }
    let bytes = stanza.to_bytes_in("");
    match srv.store.mam_append(own.as_ref(), to.as_str(), bytes).await {
        Ok(id) => Some(id),
        Err(e) => {
            log::error!("mam: cannot archive an outgoing message of {own}: {e}");
            None
        }
    }
}

/// Recipient side: strips forged stanza-ids, archives, and stamps the archive id.
pub async fn inbound(srv: &Server, to: &BareJid, stanza: &mut Element) {
    stanza.retain_children(|c| !(c.is("stanza-id", NS_SID) && c.attr("by") == Some(to.as_str())));
    if !p::should_archive(stanza) {
        return;
    }
    let Ok(Some(from)) = stanza::jid_attr(stanza, "from") else {
        return;
    };
    if !wanted(srv, to, &from.to_bare()).await {
        return;
    }
    let bytes = stanza.to_bytes_in("");
    match srv
        .store
        .mam_append(to.as_ref(), from.as_str(), bytes)
        .await
    {
        Ok(id) => stanza.push_child(p::stanza_id(to.as_str(), id)),
        Err(StoreError::NotFound) => {} // no such account: the router bounces the message
        Err(e) => log::error!("mam: cannot archive an incoming message of {to}: {e}"),
    }
}

/// iq in `urn:xmpp:mam:2` to the sender's own account.
pub async fn handle_iq(srv: &Server, from: &FullJid, iq: Element) {
    let get = iq.attr("type") == Some("get");
    let Some(payload) = iq.first_child() else {
        return bounce(srv, &iq, Condition::BadRequest.into());
    };
    let owner = from.to_bare();
    let reply = match (payload.name(), get) {
        ("query", true) => Ok(Some(p::query_form())),
        ("query", false) => query(srv, from, &iq, payload).await.map(|()| None),
        ("prefs", true) => Ok(Some(prefs_element(&load_prefs(srv, &owner).await))),
        ("prefs", false) => set_prefs(srv, &owner, payload).await.map(Some),
        ("metadata", true) => metadata(srv, &owner).await.map(Some),
        _ => Err(Condition::FeatureNotImplemented.into()),
    };
    match reply {
        Ok(Some(payload)) => deliver_reply(srv, stanza::iq_result(&iq, Some(payload))),
        Ok(None) => {}
        Err(e) => bounce(srv, &iq, e),
    }
}

/// Turns a parsed query into a store range (ids are microseconds, so `start`/`end` are id
/// bounds too).
pub fn archive_query(q: &p::Query) -> ArchiveQuery {
    let mut lo = q.start.unwrap_or(0);
    let mut hi = q.end.unwrap_or(u64::MAX);
    let mut must_exist = Vec::new();
    for after in [q.after_id, q.rsm.after].into_iter().flatten() {
        lo = lo.max(after.saturating_add(1));
        must_exist.push(after);
    }
    let before_rsm = match q.rsm.before {
        Some(Before::Id(id)) => Some(id),
        _ => None,
    };
    for before in [q.before_id, before_rsm].into_iter().flatten() {
        if before == 0 {
            lo = 1;
            hi = 0;
        } else {
            hi = hi.min(before - 1);
        }
        must_exist.push(before);
    }
    let with = q.with.as_ref().map(|j| match j {
        Jid::Full(_) => WithFilter::Exact(j.as_str().to_string()),
        Jid::Bare(_) => WithFilter::Bare(j.as_str().to_string()),
    });
    let max = q.page_size();
    ArchiveQuery {
        lo,
        hi,
        with,
        ids: q.ids.clone(),
        max,
        backwards: q.rsm.before.is_some(),
        skip: q.rsm.index.unwrap_or(0),
        must_exist,
        count: max == 0,
    }
}

async fn query(
    srv: &Server,
    from: &FullJid,
    iq: &Element,
    payload: &Element,
) -> Result<(), StanzaError> {
    let q = parse_query(payload).map_err(query_error)?;
    let owner = from.to_bare();
    let page = match srv.store.mam_query(owner.as_ref(), archive_query(&q)).await {
        Ok(page) => page,
        Err(StoreError::NotFound) => return Err(Condition::ItemNotFound.into()),
        Err(e) => {
            log::error!("mam: query on the archive of {owner} failed: {e}");
            return Err(Condition::InternalServerError.into());
        }
    };
    let Some(resource) = srv.sessions.resource(from) else {
        return Ok(()); // the querying resource is gone; nobody to answer
    };
    let mut entries = page.entries;
    if q.flip_page {
        entries.reverse();
    }
    // With <flip-page/>, RSM first/last name the first and last result as sent (the XEP
    // leaves it open; clients page on the ids they saw).
    let first_last = match (entries.first(), entries.last()) {
        (Some(f), Some(l)) => Some((f.id, l.id)),
        _ => None,
    };
    for e in entries {
        let original = std::str::from_utf8(&e.stanza)
            .ok()
            .and_then(|s| Element::parse(s).ok());
        let Some(original) = original else {
            log::error!(
                "mam: archived message {} of {owner} is unreadable; skipping it",
                e.id
            );
            continue;
        };
        let stamp = crate::time::rfc3339_micros(e.id);
        let msg = p::result_message(from.as_str(), q.queryid.as_deref(), e.id, &stamp, original);
        sessions::send(&resource, Outbound::stanza(msg));
    }
    let fin = p::fin(page.complete, first_last, page.count);
    deliver_reply(srv, stanza::iq_result(iq, Some(fin)));
    Ok(())
}

fn query_error(e: QueryError) -> StanzaError {
    match e {
        QueryError::ItemNotFound => Condition::ItemNotFound.into(),
        QueryError::BadRequest(text) => StanzaError::new(Condition::BadRequest).with_text(text),
    }
}

pub async fn metadata(srv: &Server, owner: &BareJid) -> Result<Element, StanzaError> {
    let bounds = srv.store.mam_bounds(owner.as_ref()).await.map_err(|e| {
        log::error!("mam: cannot read the archive bounds of {owner}: {e}");
        StanzaError::from(Condition::InternalServerError)
    })?;
    let mut md = Element::new("metadata", NS_MAM);
    if let Some((first, last)) = bounds {
        for (name, id) in [("start", first), ("end", last)] {
            md.push_child(
                Element::new(name, NS_MAM)
                    .with_attr("id", p::encode_id(id))
                    .with_attr("timestamp", crate::time::rfc3339_micros(id)),
            );
        }
    }
    Ok(md)
}

async fn load_prefs(srv: &Server, owner: &BareJid) -> Prefs {
    if let Some(p) = lock(&srv.mam.prefs).get(owner) {
        return p.clone();
    }
    let prefs = read_prefs(srv, owner).await;
    // Only accounts that are logged in are cached, so messages to made-up names can't grow
    // the map; entries stay after logout (bounded by the number of accounts).
    if srv.sessions.is_online(owner) {
        // A `set` that raced with this read has already put the newer value: keep it.
        return lock(&srv.mam.prefs)
            .entry(owner.clone())
            .or_insert(prefs)
            .clone();
    }
    prefs
}

async fn read_prefs(srv: &Server, owner: &BareJid) -> Prefs {
    match srv.store.kv_get(owner.as_ref(), PREFS_KEY).await {
        Ok(Some(bytes)) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|s| Element::parse(s).ok())
            .and_then(|el| parse_prefs(&el).ok())
            .unwrap_or_else(|| {
                log::error!("mam: stored preferences of {owner} are unreadable; using defaults");
                Prefs::default()
            }),
        Ok(None) => Prefs::default(),
        Err(e) => {
            log::error!("mam: cannot read the preferences of {owner}: {e}");
            Prefs::default()
        }
    }
}

async fn set_prefs(srv: &Server, owner: &BareJid, el: &Element) -> Result<Element, StanzaError> {
    let prefs = parse_prefs(el).map_err(query_error)?;
    let stored = prefs_element(&prefs);
    let bytes = stored.to_bytes_in("");
    if let Err(e) = srv
        .store
        .kv_set(owner.as_ref(), PREFS_KEY, Some(bytes))
        .await
    {
        log::error!("mam: cannot store the preferences of {owner}: {e}");
        return Err(Condition::InternalServerError.into());
    }
    lock(&srv.mam.prefs).insert(owner.clone(), prefs);
    Ok(stored)
}

/// Whether the owner's preferences let messages with `with` into the archive.
async fn wanted(srv: &Server, owner: &BareJid, with: &BareJid) -> bool {
    let prefs = load_prefs(srv, owner).await;
    match prefs.decide(with.as_str()) {
        Some(yes) => yes,
        None => {
            debug_assert_eq!(prefs.default, DefaultPref::Roster);
            matches!(
                srv.store.roster_item(owner.as_ref(), with.as_ref()).await,
                Ok(Some(_))
            )
        }
    }
}

/// Retention: every hour (and shortly after start), deletes messages older than
/// `[mam] archive_expires_after`, account by account, `EXPIRE_BATCH` rows per transaction.
/// Store work runs on the blocking pool, so the executor never waits on it.
pub async fn expire_loop(srv: Arc<Server>) {
    let Some(keep) = srv.config.mam.archive_expires_after else {
        return;
    };
    smol::Timer::after(Duration::from_secs(60)).await;
    loop {
        let cutoff = crate::store::now_micros().saturating_sub(keep.as_micros() as u64);
        expire_once(&srv, cutoff).await;
        smol::Timer::after(EXPIRE_EVERY).await;
    }
}

/// Deletes every archived message with an id (time) below `cutoff`; returns how many.
pub async fn expire_once(srv: &Server, cutoff: u64) -> usize {
    let accounts = match srv.store.list_accounts().await {
        Ok(a) => a,
        Err(e) => {
            log::error!("mam: retention: cannot list accounts: {e}");
            return 0;
        }
    };
    let mut total = 0;
    for owner in accounts {
        loop {
            match srv.store.mam_expire(&owner, cutoff, EXPIRE_BATCH).await {
                Ok(n) => {
                    total += n;
                    if n < EXPIRE_BATCH {
                        break;
                    }
                }
                Err(e) => {
                    log::error!("mam: retention: cannot expire messages of {owner}: {e}");
                    break;
                }
            }
        }
    }
    if total > 0 {
        log::info!("mam: deleted {total} archived message(s) past retention");
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aq(xml: &str) -> ArchiveQuery {
        archive_query(&parse_query(&Element::parse(xml).unwrap()).unwrap())
    }

    #[test]
    fn retention_deletes_only_expired_messages_in_batches() {
        use crate::store::{ArchiveEntry, Store};
        let dir = std::env::temp_dir().join(format!("kith-mam-expire-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&dir.join("kith.redb")).unwrap();
        let tls = crate::net::tls::TlsSetup::load(None, None, "localhost", &dir).unwrap();
        let srv = Server::new(crate::config::Config::defaults(), store, tls);
        smol::block_on(async {
            for owner in ["a@localhost", "b@localhost"] {
                srv.store.create_account(owner, vec![]).await.unwrap();
                let old = (1..=1200u64).map(|i| ArchiveEntry {
                    id: i,
                    with: "x@localhost".into(),
                    stanza: b"<m/>".to_vec(),
                });
                srv.store
                    .mam_insert_batch(owner, old.collect())
                    .await
                    .unwrap();
                srv.store
                    .mam_append(owner, "x@localhost", b"<new/>".to_vec())
                    .await
                    .unwrap();
            }
            let cutoff = crate::store::now_micros() - 60_000_000;
            assert_eq!(expire_once(&srv, cutoff).await, 2400);
            for owner in ["a@localhost", "b@localhost"] {
                assert_eq!(srv.store.mam_len(owner).await.unwrap(), 1);
            }
            assert_eq!(expire_once(&srv, cutoff).await, 0);
        });
        drop(srv);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn query_to_store_range() {
        let q = aq("<query xmlns='urn:xmpp:mam:2'/>");
        assert_eq!((q.lo, q.hi, q.backwards, q.max), (0, u64::MAX, false, 50));
        assert!(q.must_exist.is_empty() && !q.count);

        let (a, b) = (p::encode_id(1000), p::encode_id(5000));
        let q = aq(&format!(
            "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data'>\
             <field var='start'><value>1970-01-01T00:00:00.000500Z</value></field>\
             <field var='with'><value>bob@x/r</value></field>\
             <field var='after-id'><value>{a}</value></field></x>\
             <set xmlns='http://jabber.org/protocol/rsm'><max>7</max><before>{b}</before></set>\
             </query>"
        ));
        assert_eq!((q.lo, q.hi, q.backwards, q.max), (1001, 4999, true, 7));
        assert_eq!(q.must_exist, [1000, 5000]);
        assert_eq!(q.with, Some(WithFilter::Exact("bob@x/r".into())));

        let q = aq("<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data'>\
                    <field var='with'><value>bob@x</value></field></x>\
                    <set xmlns='http://jabber.org/protocol/rsm'><max>0</max></set></query>");
        assert_eq!(q.with, Some(WithFilter::Bare("bob@x".into())));
        assert!(q.count);
    }
}
