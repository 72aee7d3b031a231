//! Persistent state: accounts, rosters, pending subscriptions, offline messages, last activity,
//! store-wide secrets, a per-account key/value area and message archives (`mam`), in one redb
//! file.
//!
//! This is the only module that uses redb (tables live in `schema`, value encodings in
//! `codec`). It does not parse JIDs: keys are the bare-JID strings the caller gives, already
//! normalised. It knows nothing of XML: stanzas are opaque bytes.
//!
//! Invariants:
//! - Every public operation is one redb transaction, so it is all-or-nothing. (Archive
//!   appends from many callers may share one transaction, committed by `mam`'s writer
//!   thread; each append is still all-or-nothing and on disk when it returns.)
//! - Writes commit with `Durability::Immediate` (fsync): an operation that returned `Ok` is on
//!   disk, which is what lets the server acknowledge an offline message.
//! - redb work never runs on the executor: `begin_write` blocks its thread while another writer
//!   is active, so every async method hands its transaction to smol's blocking pool (`unblock`).
//! - No per-account row exists without its account row: writes keyed by an owner fail with
//!   `NotFound` when the account is gone, checked inside the same transaction, and
//!   `delete_account` removes every row of the account.
//! - A range over one owner's rows never returns another owner's rows, even when one bare JID
//!   is a prefix of the other (`al@x`, `alice@x`); see `schema::owner_end`.
//!
//! redb locks the file for the whole process, so `kith user …` cannot open the data dir while
//! `kith run` has it ([`StoreError::Locked`]).

mod backup;
mod codec;
mod error;
mod file;
mod invites;
mod mam;
mod muc;
mod pep;
mod pubsub;
mod schema;
mod tombstone;
mod upload;

pub use backup::{
    inspect as inspect_backup, restore_into, restoring_path, BackupInfo, ExtraFile, BACKUP_FORMAT,
};
pub use codec::{Account, Invite, RosterItem, Subscription, Upload};
pub use error::StoreError;
pub use mam::{now_micros, ArchiveEntry, ArchivePage, ArchiveQuery, WithFilter};
pub use pep::{PepItem, PepNode};
pub use pubsub::PubsubMember;
pub use schema::SCHEMA_VERSION;
pub use tombstone::{Created, Imported, TombstoneRule};

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{
    Database, DatabaseError, Durability, ReadTransaction, ReadableDatabase, ReadableTable,
    WriteTransaction,
};

use codec::{
    decode_account, decode_last, decode_roster_item, encode_account, encode_last,
    encode_roster_item,
};
use schema::{
    next_seq, owner_end, Migration, ACCOUNTS, KEY_OFFLINE_SEQ, KEY_ROSTER_SEQ, KV, LAST, MAM, META,
    MIGRATIONS, OFFLINE, PENDING_IN, PEP_ITEMS, PEP_NODES, RESERVED_META_KEYS, ROSTER, ROSTER_VER,
};

/// redb's page cache limit. Its default of 1 GiB is far more than a family server needs and
/// more than a small board has.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// A handle on the open data file. Cheap to clone; all clones share one `redb::Database`
/// (reopened in place after a failed write, see `file`). The file is closed (and its lock
/// released) when the last clone is dropped.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    file: file::DataFile,
    /// The archive's group-commit writer, started on the first append (see `mam`).
    mam_writer: std::sync::OnceLock<mam::Writer>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.file.path)
            .finish()
    }
}

impl Store {
    /// Opens the data file at `path`, creating it when missing (the parent directory must
    /// exist; creating it with the right permissions is the caller's job). Creates the tables
    /// of a new file, upgrades an older schema, refuses a newer one ([`StoreError::Newer`])
    /// and a file another process holds ([`StoreError::Locked`]).
    ///
    /// Blocking: call it at start-up, before the executor runs, or through `unblock`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with(path, MIGRATIONS, SCHEMA_VERSION)
    }

    fn open_with(path: &Path, migrations: &[Migration], target: u64) -> Result<Store, StoreError> {
        let file = path.to_path_buf();
        Store::open_through(
            path,
            Box::new(move || {
                Database::builder()
                    .set_cache_size(CACHE_BYTES)
                    .create(&file)
            }),
            migrations,
            target,
        )
    }

    /// Opens the store with `open`, which is also how the file is reopened after a failed
    /// write; `path` names it in errors and log lines.
    fn open_through(
        path: &Path,
        open: file::Opener,
        migrations: &[Migration],
        target: u64,
    ) -> Result<Store, StoreError> {
        let db = match open() {
            Ok(db) => db,
            Err(DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::Locked(path.to_path_buf()))
            }
            Err(e) => return Err(StoreError::from(e).at(path)),
        };
        let prepared = (|| {
            let txn = begin_write(&db)?;
            match schema::prepare(&txn, migrations, target) {
                Ok(()) => Ok(txn.commit()?),
                Err(e) => {
                    let _ = txn.abort();
                    Err(e)
                }
            }
        })();
        prepared.map_err(|e| e.at(path))?;
        Ok(Store {
            inner: Arc::new(Inner {
                file: file::DataFile::new(path, db, open),
                mam_writer: std::sync::OnceLock::new(),
            }),
        })
    }

    /// The data file this store has open.
    pub fn path(&self) -> &Path {
        &self.inner.file.path
    }

    /// Drops this handle. The file closes when the last clone is gone; dropping has the same
    /// effect, this only makes the intent visible at shutdown.
    pub fn close(self) {}

    // ----- accounts -----

    /// Creates an account with flags 0 and the current time. `AlreadyExists` if it exists.
    pub async fn create_account(&self, jid: &str, creds: Vec<u8>) -> Result<(), StoreError> {
        let jid = jid.to_string();
        self.write(move |txn| {
            let mut accounts = txn.open_table(ACCOUNTS)?;
            insert_new_account(&mut accounts, &jid, creds, now_unix())
        })
        .await
    }

    /// Replaces an account's credential blob. `NotFound` if there is no such account.
    pub async fn set_creds(&self, jid: &str, creds: Vec<u8>) -> Result<(), StoreError> {
        self.update_account(jid, move |a| a.creds = creds).await
    }

    /// Replaces an account's flags. `NotFound` if there is no such account.
    pub async fn set_flags(&self, jid: &str, flags: u32) -> Result<(), StoreError> {
        self.update_account(jid, move |a| a.flags = flags).await
    }

    pub async fn account(&self, jid: &str) -> Result<Option<Account>, StoreError> {
        let jid = jid.to_string();
        self.read(move |txn| {
            let accounts = txn.open_table(ACCOUNTS)?;
            let row = accounts.get(jid.as_str())?;
            row.map(|v| decode_account(v.value()).map_err(|e| corrupt("accounts", &jid, e)))
                .transpose()
        })
        .await
    }

    /// Deletes an account and, in the same transaction, writes its tombstone (when it existed)
    /// and removes its roster, roster version, pending
    /// subscriptions, offline messages, last activity, kv rows, message archive and upload records (the files are the caller's). Returns whether the account
    /// existed. Other users' roster items that point at this JID are the caller's business
    /// (they need presence sent to them, RFC 6121 §3.2.1).
    pub async fn delete_account(&self, jid: &str) -> Result<bool, StoreError> {
        let jid = jid.to_string();
        self.write(move |txn| {
            let existed = txn.open_table(ACCOUNTS)?.remove(jid.as_str())?.is_some();
            if existed {
                tombstone::bury(txn, &jid)?;
            }
            // Cleaned even when the account row was missing, so a damaged file heals.
            let end = owner_end(&jid);
            let owner_rows = (jid.as_str(), "")..(end.as_str(), "");
            txn.open_table(ROSTER)?
                .retain_in(owner_rows.clone(), |_, _| false)?;
            txn.open_table(PENDING_IN)?
                .retain_in(owner_rows.clone(), |_, _| false)?;
            txn.open_table(KV)?
                .retain_in(owner_rows.clone(), |_, _| false)?;
            txn.open_table(PEP_NODES)?
                .retain_in(owner_rows, |_, _| false)?;
            txn.open_table(PEP_ITEMS)?
                .retain_in((jid.as_str(), "", 0)..(end.as_str(), "", 0), |_, _| false)?;
            txn.open_table(OFFLINE)?
                .retain_in((jid.as_str(), 0)..=(jid.as_str(), u64::MAX), |_, _| false)?;
            txn.open_table(MAM)?
                .retain_in((jid.as_str(), 0)..=(jid.as_str(), u64::MAX), |_, _| false)?;
            txn.open_table(ROSTER_VER)?.remove(jid.as_str())?;
            txn.open_table(LAST)?.remove(jid.as_str())?;
            upload::delete_owner(txn, &jid)?;
            invites::leave_circles(txn, &jid)?;
            Ok(existed)
        })
        .await
    }

    /// Every account's bare JID, in byte order.
    pub async fn list_accounts(&self) -> Result<Vec<String>, StoreError> {
        self.read(|txn| {
            let accounts = txn.open_table(ACCOUNTS)?;
            let mut out = Vec::new();
            for row in accounts.iter()? {
                out.push(row?.0.value().to_string());
            }
            Ok(out)
        })
        .await
    }

    // ----- roster (RFC 6121 §2) -----

    /// The owner's roster version and items, ordered by contact. Version 0 means the roster
    /// was never changed.
    pub async fn roster(
        &self,
        owner: &str,
    ) -> Result<(u64, Vec<(String, RosterItem)>), StoreError> {
        let owner = owner.to_string();
        self.read(move |txn| {
            let ver = txn
                .open_table(ROSTER_VER)?
                .get(owner.as_str())?
                .map_or(0, |v| v.value());
            let roster = txn.open_table(ROSTER)?;
            let end = owner_end(&owner);
            let mut items = Vec::new();
            for row in roster.range((owner.as_str(), "")..(end.as_str(), ""))? {
                let (k, v) = row?;
                let (o, contact) = k.value();
                if o != owner {
                    continue; // unreachable with the exact bounds; a second guard against leaks
                }
                let item = decode_roster_item(v.value())
                    .map_err(|e| corrupt("roster", &format!("{owner} {contact}"), e))?;
                items.push((contact.to_string(), item));
            }
            Ok((ver, items))
        })
        .await
    }

    pub async fn roster_item(
        &self,
        owner: &str,
        contact: &str,
    ) -> Result<Option<RosterItem>, StoreError> {
        let (owner, contact) = (owner.to_string(), contact.to_string());
        self.read(move |txn| {
            let roster = txn.open_table(ROSTER)?;
            let row = roster.get((owner.as_str(), contact.as_str()))?;
            row.map(|v| {
                decode_roster_item(v.value())
                    .map_err(|e| corrupt("roster", &format!("{owner} {contact}"), e))
            })
            .transpose()
        })
        .await
    }

    /// Stores (`Some`) or removes (`None`) one roster item and returns the roster version after
    /// the change. The version moves on every store and on every removal of an item that
    /// existed; removing a missing item returns the current version unchanged.
    /// `NotFound` if the owner has no account.
    pub async fn set_roster_item(
        &self,
        owner: &str,
        contact: &str,
        item: Option<RosterItem>,
    ) -> Result<u64, StoreError> {
        let (owner, contact) = (owner.to_string(), contact.to_string());
        self.write(move |txn| {
            let key = (owner.as_str(), contact.as_str());
            let changed = match &item {
                Some(item) => {
                    require_account(txn, &owner)?;
                    txn.open_table(ROSTER)?
                        .insert(key, encode_roster_item(item).as_slice())?;
                    true
                }
                None => txn.open_table(ROSTER)?.remove(key)?.is_some(),
            };
            let mut vers = txn.open_table(ROSTER_VER)?;
            if changed {
                let ver = next_seq(txn, KEY_ROSTER_SEQ)?;
                vers.insert(owner.as_str(), ver)?;
                Ok(ver)
            } else {
                Ok(vers.get(owner.as_str())?.map_or(0, |v| v.value()))
            }
        })
        .await
    }

    // ----- inbound subscription requests awaiting an answer (RFC 6121 §3.1.3) -----

    /// Stores (`Some`) or clears (`None`) the owner's pending request from `contact`.
    /// Storing needs the owner's account (`NotFound`); clearing a missing one is not an error.
    pub async fn set_pending_in(
        &self,
        owner: &str,
        contact: &str,
        stanza: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let (owner, contact) = (owner.to_string(), contact.to_string());
        self.write(move |txn| {
            let key = (owner.as_str(), contact.as_str());
            match stanza {
                Some(stanza) => {
                    require_account(txn, &owner)?;
                    txn.open_table(PENDING_IN)?.insert(key, stanza.as_slice())?;
                }
                None => {
                    txn.open_table(PENDING_IN)?.remove(key)?;
                }
            }
            Ok(())
        })
        .await
    }

    /// The owner's pending requests as (contact, stanza), ordered by contact.
    pub async fn pending_in(&self, owner: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let owner = owner.to_string();
        self.read(move |txn| collect_owner_str_rows(&txn.open_table(PENDING_IN)?, &owner))
            .await
    }

    // ----- offline messages (RFC 6121 §8.5.2.2.1; XEP-0160) -----

    /// Appends a stanza to the owner's offline queue; on `Ok` it is on disk.
    /// `QuotaExceeded` (and nothing stored) when the owner already has `max` messages;
    /// `NotFound` if the owner has no account.
    pub async fn push_offline(
        &self,
        owner: &str,
        stanza: Vec<u8>,
        max: usize,
    ) -> Result<(), StoreError> {
        let owner = owner.to_string();
        self.write(move |txn| {
            require_account(txn, &owner)?;
            let mut offline = txn.open_table(OFFLINE)?;
            if count_offline(&offline, &owner)? >= max {
                return Err(StoreError::QuotaExceeded);
            }
            let seq = next_seq(txn, KEY_OFFLINE_SEQ)?;
            offline.insert((owner.as_str(), seq), stanza.as_slice())?;
            Ok(())
        })
        .await
    }

    /// The owner's offline messages as (seq, stanza), oldest first. Seqs only grow and are
    /// never reused, even across accounts.
    pub async fn offline(&self, owner: &str) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let owner = owner.to_string();
        self.read(move |txn| {
            let offline = txn.open_table(OFFLINE)?;
            let mut out = Vec::new();
            for row in offline.range((owner.as_str(), 0)..=(owner.as_str(), u64::MAX))? {
                let (k, v) = row?;
                out.push((k.value().1, v.value().to_vec()));
            }
            Ok(out)
        })
        .await
    }

    /// Deletes the owner's offline messages with seq ≤ `up_to_seq`, after they were delivered.
    /// Messages that arrived after the caller's read have higher seqs and stay.
    pub async fn delete_offline(&self, owner: &str, up_to_seq: u64) -> Result<(), StoreError> {
        let owner = owner.to_string();
        self.write(move |txn| {
            txn.open_table(OFFLINE)?
                .retain_in((owner.as_str(), 0)..=(owner.as_str(), up_to_seq), |_, _| {
                    false
                })?;
            Ok(())
        })
        .await
    }

    pub async fn offline_count(&self, owner: &str) -> Result<usize, StoreError> {
        let owner = owner.to_string();
        self.read(move |txn| count_offline(&txn.open_table(OFFLINE)?, &owner))
            .await
    }

    // ----- last activity (XEP-0012) -----

    /// Records the owner's last logout time and status text. `NotFound` without an account.
    pub async fn set_last(&self, owner: &str, unix: u64, status: &str) -> Result<(), StoreError> {
        let (owner, status) = (owner.to_string(), status.to_string());
        self.write(move |txn| {
            require_account(txn, &owner)?;
            txn.open_table(LAST)?
                .insert(owner.as_str(), encode_last(unix, &status).as_slice())?;
            Ok(())
        })
        .await
    }

    pub async fn last(&self, owner: &str) -> Result<Option<(u64, String)>, StoreError> {
        let owner = owner.to_string();
        self.read(move |txn| {
            let last = txn.open_table(LAST)?;
            let row = last.get(owner.as_str())?;
            row.map(|v| decode_last(v.value()).map_err(|e| corrupt("last", &owner, e)))
                .transpose()
        })
        .await
    }

    // ----- meta and kv -----

    /// A store-wide value (server secrets and the like).
    pub async fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_string();
        self.read(move |txn| {
            let meta = txn.open_table(META)?;
            let row = meta.get(key.as_str())?;
            Ok(row.map(|v| v.value().to_vec()))
        })
        .await
    }

    /// Sets a store-wide value. The store's own keys (`schema_version`, `seq.*`) are refused:
    /// overwriting them would corrupt the file.
    pub async fn meta_set(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        if RESERVED_META_KEYS.contains(&key) || key.starts_with("seq.") {
            return Err(StoreError::Io(format!(
                "internal error: meta key {key:?} is reserved for the store"
            )));
        }
        let key = key.to_string();
        self.write(move |txn| {
            txn.open_table(META)?
                .insert(key.as_str(), value.as_slice())?;
            Ok(())
        })
        .await
    }

    pub async fn kv_get(&self, owner: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (owner, key) = (owner.to_string(), key.to_string());
        self.read(move |txn| {
            let kv = txn.open_table(KV)?;
            let row = kv.get((owner.as_str(), key.as_str()))?;
            Ok(row.map(|v| v.value().to_vec()))
        })
        .await
    }

    /// The owner's values whose key starts with `prefix`, ordered by key.
    pub async fn kv_list(
        &self,
        owner: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let (owner, prefix) = (owner.to_string(), prefix.to_string());
        self.read(move |txn| {
            let kv = txn.open_table(KV)?;
            let mut out = Vec::new();
            for row in kv.range((owner.as_str(), prefix.as_str())..)? {
                let (k, v) = row?;
                let (o, key) = k.value();
                if o != owner || !key.starts_with(prefix.as_str()) {
                    break;
                }
                out.push((key.to_string(), v.value().to_vec()));
            }
            Ok(out)
        })
        .await
    }

    /// Sets (`Some`, needs the owner's account) or removes (`None`) one private value.
    pub async fn kv_set(
        &self,
        owner: &str,
        key: &str,
        value: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let (owner, key) = (owner.to_string(), key.to_string());
        self.write(move |txn| {
            let k = (owner.as_str(), key.as_str());
            match value {
                Some(value) => {
                    require_account(txn, &owner)?;
                    txn.open_table(KV)?.insert(k, value.as_slice())?;
                }
                None => {
                    txn.open_table(KV)?.remove(k)?;
                }
            }
            Ok(())
        })
        .await
    }

    /// The owner's kv rows whose key starts with `prefix`, ordered by key (exports).
    pub async fn kv_with_prefix(
        &self,
        owner: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let (owner, prefix) = (owner.to_string(), prefix.to_string());
        self.read(move |txn| {
            let mut rows = collect_owner_str_rows(&txn.open_table(KV)?, &owner)?;
            rows.retain(|(k, _)| k.starts_with(&prefix));
            Ok(rows)
        })
        .await
    }

    // ----- helpers -----

    /// Runs `f` in a read transaction on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        smol::unblock(move || inner.file.run(|db| f(&db.begin_read()?))).await
    }

    /// Runs `f` in a write transaction on the blocking pool and commits it with fsync when `f`
    /// succeeds; aborts it (nothing written) when `f` fails.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        smol::unblock(move || {
            inner.file.run(|db| {
                let txn = begin_write(db)?;
                match f(&txn) {
                    Ok(out) => {
                        txn.commit()?;
                        Ok(out)
                    }
                    Err(e) => {
                        let _ = txn.abort();
                        Err(e)
                    }
                }
            })
        })
        .await
    }

    async fn update_account(
        &self,
        jid: &str,
        change: impl FnOnce(&mut Account) + Send + 'static,
    ) -> Result<(), StoreError> {
        let jid = jid.to_string();
        self.write(move |txn| {
            let mut accounts = txn.open_table(ACCOUNTS)?;
            let mut account = match accounts.get(jid.as_str())? {
                Some(v) => decode_account(v.value()).map_err(|e| corrupt("accounts", &jid, e))?,
                None => return Err(StoreError::NotFound),
            };
            change(&mut account);
            accounts.insert(jid.as_str(), encode_account(&account).as_slice())?;
            Ok(())
        })
        .await
    }
}

/// Begins a write transaction that fsyncs on commit. Blocks while another writer is active.
fn begin_write(db: &Database) -> Result<WriteTransaction, StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    Ok(txn)
}

fn insert_new_account(
    accounts: &mut redb::Table<&str, &[u8]>,
    jid: &str,
    creds: Vec<u8>,
    created_unix: u64,
) -> Result<(), StoreError> {
    if accounts.get(jid)?.is_some() {
        return Err(StoreError::AlreadyExists(jid.to_string()));
    }
    let account = Account {
        creds,
        created_unix,
        flags: 0,
    };
    accounts.insert(jid, encode_account(&account).as_slice())?;
    Ok(())
}

fn require_account(txn: &WriteTransaction, owner: &str) -> Result<(), StoreError> {
    match txn.open_table(ACCOUNTS)?.get(owner)? {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound),
    }
}

fn count_offline(
    offline: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    owner: &str,
) -> Result<usize, StoreError> {
    let mut n = 0;
    for row in offline.range((owner, 0)..=(owner, u64::MAX))? {
        row?;
        n += 1;
    }
    Ok(n)
}

/// All (second key, value) rows of `owner` in a `(owner, &str) → bytes` table.
fn collect_owner_str_rows(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    owner: &str,
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let end = owner_end(owner);
    let mut out = Vec::new();
    for row in table.range((owner, "")..(end.as_str(), ""))? {
        let (k, v) = row?;
        let (o, second) = k.value();
        if o == owner {
            out.push((second.to_string(), v.value().to_vec()));
        }
    }
    Ok(out)
}

fn corrupt(table: &str, key: &str, what: codec::DecodeError) -> StoreError {
    StoreError::Corrupt(format!("table {table}, key {key}: {what}"))
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
