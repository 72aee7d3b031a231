//! The data file's layout: every table, the schema version and the migrations between versions.
//!
//! This is the one place that names a table. A table's name ends in `_v<N>`; changing a table's
//! key or value layout means a new name and a [`Migration`] that moves the rows. `meta_v1` is
//! the exception that never changes: it holds `schema_version`, so every kith must be able to
//! read it. Users depend on this file (it is their data dir), so a schema change is a release
//! note, never a surprise.

use redb::{ReadableTable, TableDefinition, TableHandle, WriteTransaction};

use super::codec::{decode_u64, encode_u64};
use super::StoreError;

/// The schema this build writes. A data file with a higher version is refused; a lower one is
/// upgraded by the `MIGRATIONS` steps when the store opens.
pub const SCHEMA_VERSION: u64 = 1;

/// Store-wide values: `schema_version`, sequence counters and the caller's secrets
/// (see [`super::Store::meta_set`]). Name and layout are frozen forever.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta_v1");
/// Bare JID → encoded [`super::Account`].
pub(crate) const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts_v1");
/// (owner, contact) → encoded [`super::RosterItem`].
pub(crate) const ROSTER: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("roster_v1");
/// Owner → roster version (RFC 6121 §2.6); absent means 0, an empty roster never changed.
pub(crate) const ROSTER_VER: TableDefinition<&str, u64> = TableDefinition::new("roster_ver_v1");
/// (owner, contact) → the inbound `<presence type='subscribe'/>` awaiting the owner's answer.
pub(crate) const PENDING_IN: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("pending_in_v1");
/// (owner, seq) → a stored offline stanza; seq comes from the store-wide `seq.offline`.
pub(crate) const OFFLINE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("offline_v1");
/// Owner → encoded (unix seconds, status) of the last logout (XEP-0012).
pub(crate) const LAST: TableDefinition<&str, &[u8]> = TableDefinition::new("last_v1");
/// (owner, key) → bytes: a private per-account store for later features.
pub(crate) const KV: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("kv_v1");
/// (owner, archive id) → (with, stanza): the XEP-0313 message archive (see `store::mam`).
/// Added before any release: `create_tables` creates it in data files made before it existed,
/// so the schema version stayed 1.
pub(crate) const MAM: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("mam_v1");
/// (owner, node) → encoded PEP node configuration (XEP-0163), see `pep.rs`.
pub(crate) const PEP_NODES: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("pep_nodes_v1");
/// (owner, node, seq) → encoded PEP item (id, payload); seq from the store-wide `seq.pep`
/// orders a node's items by publish time.
pub(crate) const PEP_ITEMS: TableDefinition<(&str, &str, u64), &[u8]> =
    TableDefinition::new("pep_items_v1");

/// Upload id → encoded [`super::Upload`]: the files shared through XEP-0363 (see `upload.rs`).
pub(crate) const UPLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("uploads_v1");
/// (owner, upload id) → size in bytes: an account's files, summed for its quota.
pub(crate) const UPLOADS_BY_OWNER: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("uploads_by_owner_v1");
/// (created unix seconds, upload id) → (): uploads in age order, for expiry.
pub(crate) const UPLOADS_BY_TIME: TableDefinition<(u64, &str), ()> =
    TableDefinition::new("uploads_by_time_v1");
/// Room bare JID → the stored room (an opaque element the MUC service writes): persistent
/// XEP-0045 rooms, their configuration, affiliations and subject (see `muc.rs`).
pub(crate) const MUC_ROOMS: TableDefinition<&str, &[u8]> = TableDefinition::new("muc_rooms_v1");

/// (service domain, node, JID) → encoded [`super::PubsubMember`]: subscriptions and
/// affiliations of the XEP-0060 service's nodes (see `pubsub.rs`).
pub(crate) const PUBSUB_MEMBERS: TableDefinition<(&str, &str, &str), &[u8]> =
    TableDefinition::new("pubsub_members_v1");
/// Bare JID of a deleted account → unix seconds of its deletion (see `tombstone.rs`).
pub(crate) const TOMBSTONES: TableDefinition<&str, u64> = TableDefinition::new("tombstones_v1");

/// Invite token → encoded [`super::Invite`] (see `invites.rs`).
pub(crate) const INVITES: TableDefinition<&str, &[u8]> = TableDefinition::new("invites_v1");
/// (circle, member bare JID) → (): store-managed circles (shared roster groups).
pub(crate) const CIRCLES: TableDefinition<(&str, &str), ()> = TableDefinition::new("circles_v1");

/// Keys of `meta` that the store owns; [`super::Store::meta_set`] refuses them.
pub(crate) const KEY_SCHEMA_VERSION: &str = "schema_version";
/// Last offline sequence number handed out. Store-wide and never reused, so a stale
/// `delete_offline(up_to)` can never delete a message that arrived after the read.
pub(crate) const KEY_OFFLINE_SEQ: &str = "seq.offline";
/// Last roster version handed out. Store-wide and never reused, so a client's cached version
/// can never match the roster of a deleted-and-recreated account.
pub(crate) const KEY_ROSTER_SEQ: &str = "seq.roster";
/// Last archive id handed out (microseconds, see `store::mam`). Store-wide, so ids only grow.
pub(crate) const KEY_MAM_SEQ: &str = "seq.mam";
/// Last PEP item sequence number handed out (publish order across all nodes).
pub(crate) const KEY_PEP_SEQ: &str = "seq.pep";
pub(crate) const RESERVED_META_KEYS: [&str; 5] = [
    KEY_SCHEMA_VERSION,
    KEY_OFFLINE_SEQ,
    KEY_ROSTER_SEQ,
    KEY_MAM_SEQ,
    KEY_PEP_SEQ,
];

/// One upgrade step: turns a data file of schema `from` into `from + 1` inside the open
/// transaction. The runner writes the new version; a step only moves rows.
pub(crate) struct Migration {
    pub from: u64,
    pub run: fn(&WriteTransaction) -> Result<(), StoreError>,
}

/// Every upgrade step, oldest first. Empty while the schema is at version 1.
pub(crate) const MIGRATIONS: &[Migration] = &[];

/// Brings the file to `target` in the caller's write transaction: a new file gets every table
/// and the version; an older one is migrated step by step; a newer one is refused before
/// anything is written.
pub(crate) fn prepare(
    txn: &WriteTransaction,
    migrations: &[Migration],
    target: u64,
) -> Result<(), StoreError> {
    let names: Vec<String> = txn.list_tables()?.map(|t| t.name().to_string()).collect();
    let found = if names.iter().any(|n| n == META.name()) {
        let meta = txn.open_table(META)?;
        let v = match meta.get(KEY_SCHEMA_VERSION)? {
            Some(v) => Some(
                decode_u64(v.value())
                    .map_err(|e| StoreError::Corrupt(format!("meta schema_version: {e}")))?,
            ),
            None => None,
        };
        v
    } else {
        None
    };
    match found {
        None if names.is_empty() => {}
        None => {
            return Err(StoreError::Corrupt(format!(
                "the file has tables ({}) but no schema_version; it is not a kith data file",
                names.join(", ")
            )))
        }
        Some(v) if v > target => {
            return Err(StoreError::Newer {
                found: v,
                supported: target,
            })
        }
        Some(mut v) => {
            while v < target {
                let step = migrations.iter().find(|m| m.from == v).ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "schema {v} is too old for this kith (no upgrade step from it); \
                         open the data dir with an older kith release first"
                    ))
                })?;
                (step.run)(txn)?;
                v += 1;
            }
        }
    }
    create_tables(txn)?;
    txn.open_table(META)?
        .insert(KEY_SCHEMA_VERSION, encode_u64(target).as_slice())?;
    Ok(())
}

/// Opens (creating when missing) every table, so read transactions never meet a missing one.
fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(META)?;
    txn.open_table(ACCOUNTS)?;
    txn.open_table(ROSTER)?;
    txn.open_table(ROSTER_VER)?;
    txn.open_table(PENDING_IN)?;
    txn.open_table(OFFLINE)?;
    txn.open_table(LAST)?;
    txn.open_table(KV)?;
    // Added after schema 1 shipped: opening creates them in an existing file too, so they
    // need no migration (new tables, no moved rows).
    txn.open_table(PEP_NODES)?;
    txn.open_table(MAM)?;
    txn.open_table(PEP_ITEMS)?;
    txn.open_table(UPLOADS)?;
    txn.open_table(UPLOADS_BY_OWNER)?;
    txn.open_table(UPLOADS_BY_TIME)?;
    txn.open_table(MUC_ROOMS)?;
    txn.open_table(TOMBSTONES)?;
    txn.open_table(PUBSUB_MEMBERS)?;
    txn.open_table(INVITES)?;
    txn.open_table(CIRCLES)?;
    Ok(())
}

/// Takes the next number of a store-wide counter in `meta`.
pub(crate) fn next_seq(txn: &WriteTransaction, key: &str) -> Result<u64, StoreError> {
    let mut meta = txn.open_table(META)?;
    let last = match meta.get(key)? {
        Some(v) => {
            decode_u64(v.value()).map_err(|e| StoreError::Corrupt(format!("meta {key}: {e}")))?
        }
        None => 0,
    };
    let next = last
        .checked_add(1)
        .ok_or_else(|| StoreError::Corrupt(format!("meta {key}: counter exhausted")))?;
    meta.insert(key, encode_u64(next).as_slice())?;
    Ok(next)
}

/// Takes the next archive id: `at_least` (the current time in microseconds) unless the last id
/// handed out is already there, then the last + 1. Ids are unique and time-ordered.
pub(crate) fn next_mam_id(txn: &WriteTransaction, at_least: u64) -> Result<u64, StoreError> {
    let mut meta = txn.open_table(META)?;
    let last = match meta.get(KEY_MAM_SEQ)? {
        Some(v) => decode_u64(v.value())
            .map_err(|e| StoreError::Corrupt(format!("meta {KEY_MAM_SEQ}: {e}")))?,
        None => 0,
    };
    let next = match last.checked_add(1) {
        Some(n) => n.max(at_least),
        None => {
            return Err(StoreError::Corrupt(
                "meta seq.mam: counter exhausted".into(),
            ))
        }
    };
    meta.insert(KEY_MAM_SEQ, encode_u64(next).as_slice())?;
    Ok(next)
}

/// The exclusive upper bound of an owner's rows in a `(owner, &str)` table.
///
/// `owner + "\0"` is the smallest string greater than `owner`, and tuple keys compare element
/// by element, so `(owner, "")..(owner + "\0", "")` holds exactly the rows whose first element
/// is `owner`: not `("al@x", ..)` when asking for `alice@x`, nor the reverse.
pub(crate) fn owner_end(owner: &str) -> String {
    let mut end = String::with_capacity(owner.len() + 1);
    end.push_str(owner);
    end.push('\0');
    end
}
