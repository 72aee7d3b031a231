//! `kith export` / `kith import`: moving accounts between servers in XEP-0227 files, and from
//! Prosody (whose `prosody-migrator` writes them). `xep0227` is the pure format; this module
//! reads and writes the store.
//!
//! Import refuses accounts that exist already (it never merges into a live account) and checks
//! that before writing anything; each user is then written in turn, and a user whose data
//! fails is removed again, so a corrected file can be imported into the same server. Errors
//! name the user and the element.
//!
//! Credentials: a plaintext password (if the file has one) becomes SCRAM-SHA-1/256/512 keys;
//! SCRAM keys are kept as they are. A Prosody account has only SCRAM-SHA-1 keys: it logs in
//! with SCRAM-SHA-1 or PLAIN, and its first PLAIN login derives the other hashes (see
//! `session::c2s`).

pub mod xep0227;

use crate::accounts;
use crate::jid::BareJid;
use crate::sasl;
use crate::services::pep::Config as PepConfig;
use crate::store::{ArchiveEntry, ArchiveQuery, PepItem, Store, StoreError};
use crate::xml::Element;
use xep0227::{Archived, Host, PepNode, User};

/// kv keys the services use (`services::vcard`, `services::private`).
const KV_VCARD: &str = "vcard-temp";
const KV_PRIVATE_PREFIX: &str = "private/";

/// The files an argument of `kith import` names: the file itself, or every `.xml` file of a
/// directory (Prosody's migrator writes one per user), sorted.
pub fn expand_inputs(path: &std::path::Path) -> Result<Vec<std::path::PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out: Vec<_> = std::fs::read_dir(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    out.sort();
    if out.is_empty() {
        return Err(format!("{} holds no .xml files", path.display()));
    }
    Ok(out)
}

/// `kith import` (CLI or admin socket): reads and parses every file first, then imports all
/// users together. Returns one line for the admin.
pub async fn import_files(
    store: &Store,
    domain: &str,
    reuse: accounts::Reuse,
    files: &[&str],
) -> Result<Vec<String>, String> {
    let mut hosts = Vec::new();
    for f in files {
        let path = std::path::PathBuf::from(f);
        let doc = smol::unblock(move || std::fs::read_to_string(&path))
            .await
            .map_err(|e| format!("cannot read {f}: {e}"))?;
        hosts.extend(xep0227::parse(&doc).map_err(|e| format!("{f}: {e}"))?);
    }
    let done = import(store, domain, reuse, hosts).await?;
    Ok(vec![format!(
        "imported {} accounts: {}",
        done.len(),
        done.join(", ")
    )])
}

/// `kith export`: the document as lines (the admin socket's answer is line-based).
pub async fn export_lines(store: &Store, domain: &str) -> Result<Vec<String>, String> {
    let hosts = export(store, domain).await?;
    Ok(xep0227::write(&hosts).lines().map(str::to_string).collect())
}

/// Imports every user of `hosts` (which must all be `domain`), refusing names that exist or
/// that a tombstone keeps under `reuse`. Returns the accounts created.
pub async fn import(
    store: &Store,
    domain: &str,
    reuse: accounts::Reuse,
    hosts: Vec<Host>,
) -> Result<Vec<String>, String> {
    let mut users: Vec<(BareJid, User)> = Vec::new();
    for host in hosts {
        if host.jid != domain {
            return Err(format!(
                "the file holds users of {}, but this server is {domain}; \
                 set domain = \"{}\" in kith.toml (or edit the file's <host jid=''/>)",
                host.jid, host.jid
            ));
        }
        for u in host.users {
            let jid = accounts::account_jid(&u.name, domain)
                .map_err(|e| format!("user {}@{domain}: {e}", u.name))?;
            if users.iter().any(|(j, _)| j == &jid) {
                return Err(format!("user {jid} appears twice in the input"));
            }
            users.push((jid, u));
        }
    }
    let mut existing = Vec::new();
    for (jid, _) in &users {
        if store
            .account(jid.as_ref())
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            existing.push(jid.to_string());
        }
    }
    if !existing.is_empty() {
        return Err(format!(
            "these accounts exist already, nothing was imported: {} (delete them with `kith \
             user del`, or remove them from the file)",
            existing.join(", ")
        ));
    }
    let kept = accounts::names_held(store, reuse)
        .await
        .map_err(|e| e.to_string())?;
    let held: Vec<String> = users
        .iter()
        .map(|(jid, _)| jid.to_string())
        .filter(|jid| kept.contains(jid))
        .collect();
    if !held.is_empty() {
        return Err(format!(
            "these names belonged to deleted accounts and are kept from reuse, nothing was \
             imported: {} (`kith user tombstones --clear JID` frees one)",
            held.join(", ")
        ));
    }
    let mut done = Vec::new();
    for (jid, user) in users {
        let creds = credentials(&user).map_err(|e| format!("user {jid}: {e}"))?;
        store
            .create_account(jid.as_ref(), creds)
            .await
            .map_err(|e| format!("user {jid}: {e}"))?;
        if let Err(e) = import_data(store, &jid, &user).await {
            // Leaves no half-imported account behind, and no tombstone either: the name was
            // never given out.
            let _ = store.delete_account(jid.as_ref()).await;
            let _ = store.clear_tombstone(jid.as_ref()).await;
            return Err(format!(
                "user {jid}: {e}; the account was not created (imported before it: {})",
                if done.is_empty() {
                    "none".into()
                } else {
                    done.join(", ")
                }
            ));
        }
        done.push(jid.to_string());
    }
    Ok(done)
}

fn credentials(user: &User) -> Result<Vec<u8>, String> {
    if let Some(pw) = &user.password {
        let all = sasl::derive_all(pw).map_err(|e| format!("the password is unusable: {e}"))?;
        return Ok(sasl::encode_creds(&all));
    }
    if user.scram.is_empty() {
        return Err("no password and no SCRAM-SHA-1/256/512 credentials kith can use".into());
    }
    Ok(sasl::encode_creds(&user.scram))
}

async fn import_data(store: &Store, jid: &BareJid, user: &User) -> Result<(), String> {
    let owner = jid.as_ref();
    let se = |what: &str| {
        let what = what.to_string();
        move |e: StoreError| format!("{what}: {e}")
    };
    for (contact, item) in &user.roster {
        let contact = BareJid::parse(contact)
            .map_err(|e| format!("roster item {contact}: not a valid JID: {e}"))?;
        store
            .set_roster_item(owner, contact.as_ref(), Some(item.clone()))
            .await
            .map_err(se(&format!("roster item {contact}")))?;
    }
    for p in &user.pending_in {
        let from = p.attr("from").unwrap_or_default();
        let from = BareJid::parse(from)
            .map_err(|e| format!("pending subscription from {from}: not a valid JID: {e}"))?;
        store
            .set_pending_in(owner, from.as_ref(), Some(p.to_bytes_in("")))
            .await
            .map_err(se("pending subscription"))?;
    }
    if let Some(v) = &user.vcard {
        store
            .kv_set(owner, KV_VCARD, Some(v.to_bytes_in("")))
            .await
            .map_err(se("vCard"))?;
    }
    for el in &user.private {
        if el.ns().is_empty() {
            continue; // Not storable (services::private refuses it too).
        }
        let key = format!("{KV_PRIVATE_PREFIX}{}:{}", el.ns(), el.name());
        store
            .kv_set(owner, &key, Some(el.to_bytes_in("")))
            .await
            .map_err(se(&format!("private XML <{}/>", el.name())))?;
    }
    for m in &user.offline {
        store
            .push_offline(owner, m.to_bytes_in(""), usize::MAX)
            .await
            .map_err(se("offline message"))?;
    }
    for node in &user.pep {
        let mut cfg = PepConfig::default();
        for (k, v) in &node.config {
            // An option kith does not support keeps its default (as a client's would).
            let _ = cfg.set(k, v);
        }
        // Every exported item must fit, whatever max_items said on the old server.
        let max = (cfg.max_items as usize).max(node.items.len());
        store
            .pep_create(owner, &node.node, cfg.to_node())
            .await
            .map_err(se(&format!("PEP node {}", node.node)))?;
        for (id, payload) in &node.items {
            let item = PepItem {
                id: id.clone(),
                payload: payload.to_bytes_in(""),
            };
            store
                .pep_publish(owner, &node.node, cfg.to_node(), item, max)
                .await
                .map_err(se(&format!("PEP node {} item {id}", node.node)))?;
        }
    }
    if !user.archive.is_empty() {
        let mut entries = Vec::with_capacity(user.archive.len());
        let mut last = 0u64;
        for a in &user.archive {
            // Archive ids are unique times in microseconds; equal stamps move up by one.
            let id = a.micros.max(last + 1);
            last = id;
            entries.push(ArchiveEntry {
                id,
                with: archive_with(owner, &a.message),
                stanza: a.message.to_bytes_in(""),
            });
        }
        store
            .mam_insert_batch(owner, entries)
            .await
            .map_err(se("message archive"))?;
    }
    Ok(())
}

/// The other party of an archived message, as `services::mam` records it: the recipient of an
/// outgoing message, else the sender.
fn archive_with(owner: &str, m: &Element) -> String {
    let (from, to) = (m.attr("from"), m.attr("to"));
    if bare_of(from.unwrap_or_default()) == owner {
        to.unwrap_or_default().to_string()
    } else {
        from.unwrap_or_default().to_string()
    }
}

fn bare_of(jid: &str) -> &str {
    jid.split('/').next().unwrap_or_default()
}

/// Reads every account of the store as one XEP-0227 host.
pub async fn export(store: &Store, domain: &str) -> Result<Vec<Host>, String> {
    let mut users = Vec::new();
    for jid in store.list_accounts().await.map_err(|e| e.to_string())? {
        users.push(
            export_user(store, &jid)
                .await
                .map_err(|e| format!("user {jid}: {e}"))?,
        );
    }
    Ok(vec![Host {
        jid: domain.to_string(),
        users,
    }])
}

async fn export_user(store: &Store, jid: &str) -> Result<User, String> {
    let se = |e: StoreError| e.to_string();
    let parse = |what: &str, b: &[u8]| {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| Element::parse(s).ok())
            .ok_or_else(|| format!("stored {what} is not XML"))
    };
    let account = store
        .account(jid)
        .await
        .map_err(se)?
        .ok_or("the account disappeared during the export")?;
    let scram = sasl::decode_creds(&account.creds).map_err(|e| e.to_string())?;
    let name = jid.split('@').next().unwrap_or_default().to_string();
    let roster = store.roster(jid).await.map_err(se)?.1;
    let mut pending_in = Vec::new();
    for (_, b) in store.pending_in(jid).await.map_err(se)? {
        pending_in.push(parse("subscription request", &b)?);
    }
    let vcard = match store.kv_get(jid, KV_VCARD).await.map_err(se)? {
        Some(b) => Some(parse("vCard", &b)?),
        None => None,
    };
    let mut private = Vec::new();
    for (_, b) in store
        .kv_with_prefix(jid, KV_PRIVATE_PREFIX)
        .await
        .map_err(se)?
    {
        private.push(parse("private XML", &b)?);
    }
    let mut offline = Vec::new();
    for (_, b) in store.offline(jid).await.map_err(se)? {
        offline.push(parse("offline message", &b)?);
    }
    let mut pep = Vec::new();
    for (node, cfg) in store.pep_nodes(jid).await.map_err(se)? {
        let mut items = Vec::new();
        for item in store.pep_items(jid, &node).await.map_err(se)? {
            items.push((item.id, parse("PEP item", &item.payload)?));
        }
        pep.push(PepNode {
            node,
            config: cfg.config,
            items,
        });
    }
    let mut archive = Vec::new();
    let mut lo = 0;
    loop {
        let page = store
            .mam_query(
                jid,
                ArchiveQuery {
                    lo,
                    hi: u64::MAX,
                    with: None,
                    ids: None,
                    max: 250,
                    backwards: false,
                    skip: 0,
                    must_exist: Vec::new(),
                    count: false,
                },
            )
            .await
            .map_err(se)?;
        for e in &page.entries {
            archive.push(Archived {
                id: e.id.to_string(),
                micros: e.id,
                message: parse("archived message", &e.stanza)?,
            });
        }
        match page.entries.last() {
            Some(last) if !page.complete => lo = last.id.saturating_add(1),
            _ => break,
        }
    }
    Ok(User {
        name,
        password: None,
        scram,
        roster,
        pending_in,
        vcard,
        private,
        offline,
        pep,
        archive,
    })
}
