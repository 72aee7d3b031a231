//! Tombstones: the names of deleted accounts with the time of deletion, so that a name a family
//! knows cannot be taken by someone else while the tombstone holds (friends would trust the
//! newcomer as the old contact). `delete_account` writes the tombstone in its transaction; the
//! checked account creation reads it in its own, so no creation slips between check and insert.
//!
//! The store records facts (when); how long a tombstone holds is policy the caller passes in,
//! so a changed `tombstone_ttl` applies to existing tombstones too.

use redb::{ReadableTable, WriteTransaction};

use super::schema::{ACCOUNTS, TOMBSTONES};
use super::{insert_new_account, now_unix, Store, StoreError};

/// What the checked account creation does about a tombstone of the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TombstoneRule {
    /// Refuse while the tombstone is younger than the duration in seconds (`None`: forever).
    Honour(Option<u64>),
    /// The admin creates the account anyway (and the tombstone goes).
    Override,
}

/// The outcome of [`Store::create_account_checked`] when nothing failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    Yes,
    /// Refused: the name belonged to an account deleted at this unix time.
    Tombstoned {
        deleted_at: u64,
    },
}

/// The outcome of [`Store::import_accounts`] when nothing failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Imported {
    All,
    /// Refused, nothing written: `jid` belonged to an account deleted at this unix time.
    Held {
        jid: String,
        deleted_at: u64,
    },
}

impl TombstoneRule {
    /// Whether a tombstone written at `deleted_at` still refuses the name at `now`.
    pub fn holds(self, deleted_at: u64, now: u64) -> bool {
        match self {
            TombstoneRule::Override => false,
            TombstoneRule::Honour(None) => true,
            TombstoneRule::Honour(Some(ttl)) => now < deleted_at.saturating_add(ttl),
        }
    }
}

/// Records that `jid`'s account was deleted now, in the deleting transaction.
pub(super) fn bury(txn: &WriteTransaction, jid: &str) -> Result<(), StoreError> {
    txn.open_table(TOMBSTONES)?.insert(jid, now_unix())?;
    Ok(())
}

impl Store {
    /// Creates an account like [`Store::create_account`] unless a tombstone of the name holds
    /// under `rule`. A created account removes its tombstone: the name is in use again, and a
    /// later deletion writes a new one.
    pub async fn create_account_checked(
        &self,
        jid: &str,
        creds: Vec<u8>,
        rule: TombstoneRule,
    ) -> Result<Created, StoreError> {
        let one = vec![(jid.to_string(), creds)];
        Ok(match self.import_accounts(one, rule).await? {
            Imported::All => Created::Yes,
            Imported::Held { deleted_at, .. } => Created::Tombstoned { deleted_at },
        })
    }

    /// Creates many accounts in one transaction: all or none. `AlreadyExists(jid)` names the
    /// first JID that exists already (or appears twice in `items`); a name whose tombstone
    /// holds under `rule` refuses the whole import before anything is written. Like
    /// [`Store::create_account_checked`], a created account removes its tombstone.
    pub async fn import_accounts(
        &self,
        items: Vec<(String, Vec<u8>)>,
        rule: TombstoneRule,
    ) -> Result<Imported, StoreError> {
        self.write(move |txn| {
            let now = now_unix();
            let mut tombstones = txn.open_table(TOMBSTONES)?;
            for (jid, _) in &items {
                if let Some(deleted_at) = tombstones.get(jid.as_str())?.map(|v| v.value()) {
                    if rule.holds(deleted_at, now) {
                        let jid = jid.clone();
                        return Ok(Imported::Held { jid, deleted_at });
                    }
                }
            }
            let mut accounts = txn.open_table(ACCOUNTS)?;
            for (jid, creds) in items {
                tombstones.remove(jid.as_str())?;
                insert_new_account(&mut accounts, &jid, creds, now)?;
            }
            Ok(Imported::All)
        })
        .await
    }

    /// Every tombstone as (bare JID, unix time of deletion), in byte order of the JID.
    pub async fn tombstones(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(|txn| {
            let t = txn.open_table(TOMBSTONES)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                out.push((k.value().to_string(), v.value()));
            }
            Ok(out)
        })
        .await
    }

    /// When `jid`'s account was deleted, if a tombstone says so.
    pub async fn tombstone(&self, jid: &str) -> Result<Option<u64>, StoreError> {
        let jid = jid.to_string();
        self.read(move |txn| {
            Ok(txn
                .open_table(TOMBSTONES)?
                .get(jid.as_str())?
                .map(|v| v.value()))
        })
        .await
    }

    /// Removes a tombstone, freeing the name; returns whether there was one.
    pub async fn clear_tombstone(&self, jid: &str) -> Result<bool, StoreError> {
        let jid = jid.to_string();
        self.write(move |txn| Ok(txn.open_table(TOMBSTONES)?.remove(jid.as_str())?.is_some()))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store in a fresh directory, removed when the guard drops.
    struct Dir(std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn store() -> (Dir, Store) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kith-tomb-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let s = Store::open(&dir.join("kith.redb")).unwrap();
        (Dir(dir), s)
    }

    #[test]
    fn a_deleted_name_is_refused_until_the_rule_lets_go() {
        let (_dir, s) = store();
        smol::block_on(async {
            s.create_account("alice@x", vec![1]).await.unwrap();
            assert!(s.delete_account("alice@x").await.unwrap());
            let [(jid, at)] = &s.tombstones().await.unwrap()[..] else {
                panic!("one tombstone expected");
            };
            assert_eq!(jid, "alice@x");
            for rule in [
                TombstoneRule::Honour(None),
                TombstoneRule::Honour(Some(3600)),
            ] {
                assert_eq!(
                    s.create_account_checked("alice@x", vec![2], rule)
                        .await
                        .unwrap(),
                    Created::Tombstoned { deleted_at: *at }
                );
            }
            assert!(s.account("alice@x").await.unwrap().is_none());
            // A prefix of the name is another name.
            assert_eq!(
                s.create_account_checked("al@x", vec![2], TombstoneRule::Honour(None))
                    .await
                    .unwrap(),
                Created::Yes
            );
            assert_eq!(
                s.create_account_checked("alice@x", vec![2], TombstoneRule::Honour(Some(0)))
                    .await
                    .unwrap(),
                Created::Yes
            );
            assert!(s.tombstones().await.unwrap().is_empty());
        });
    }

    #[test]
    fn override_and_clear_free_the_name() {
        let (_dir, s) = store();
        smol::block_on(async {
            s.create_account("bob@x", vec![1]).await.unwrap();
            s.delete_account("bob@x").await.unwrap();
            let r = s.create_account_checked("bob@x", vec![2], TombstoneRule::Override);
            assert_eq!(r.await.unwrap(), Created::Yes);
            s.delete_account("bob@x").await.unwrap();
            assert!(s.clear_tombstone("bob@x").await.unwrap());
            assert!(!s.clear_tombstone("bob@x").await.unwrap());
            let r = s.create_account_checked("bob@x", vec![2], TombstoneRule::Honour(None));
            assert_eq!(r.await.unwrap(), Created::Yes);
            // Deleting a missing account buries nothing.
            assert!(!s.delete_account("nobody@x").await.unwrap());
            assert_eq!(s.tombstones().await.unwrap().len(), 0);
        });
    }

    #[test]
    fn a_bulk_import_honours_tombstones_or_overrides_them() {
        let (_dir, s) = store();
        smol::block_on(async {
            s.create_account("carol@x", vec![1]).await.unwrap();
            s.delete_account("carol@x").await.unwrap();
            let items = || {
                vec![
                    ("dave@x".to_string(), vec![2]),
                    ("carol@x".to_string(), vec![3]),
                ]
            };
            let deleted_at = s.tombstone("carol@x").await.unwrap().unwrap();
            assert_eq!(
                s.import_accounts(items(), TombstoneRule::Honour(None))
                    .await
                    .unwrap(),
                Imported::Held {
                    jid: "carol@x".into(),
                    deleted_at
                }
            );
            assert!(
                s.account("dave@x").await.unwrap().is_none(),
                "all or nothing"
            );
            let expired = TombstoneRule::Honour(Some(0));
            assert_eq!(
                s.import_accounts(items(), expired).await.unwrap(),
                Imported::All
            );
            assert!(s.account("carol@x").await.unwrap().is_some());
            assert!(
                s.tombstones().await.unwrap().is_empty(),
                "the name is in use again"
            );

            s.delete_account("carol@x").await.unwrap();
            let again = vec![("carol@x".to_string(), vec![4])];
            let r = s
                .import_accounts(again, TombstoneRule::Override)
                .await
                .unwrap();
            assert_eq!(r, Imported::All);
        });
    }

    #[test]
    fn holds_counts_from_the_deletion() {
        assert!(TombstoneRule::Honour(Some(10)).holds(100, 109));
        assert!(!TombstoneRule::Honour(Some(10)).holds(100, 110));
        assert!(TombstoneRule::Honour(None).holds(0, u64::MAX));
        assert!(!TombstoneRule::Override.holds(100, 100));
        assert!(!TombstoneRule::Honour(Some(u64::MAX)).holds(u64::MAX, u64::MAX));
    }
}
