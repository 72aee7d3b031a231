//! Tests of the store against real redb files in the system temp directory.

use super::*;
use futures_lite::future::block_on;
use redb::{Key, TableDefinition};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A unique directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kith-store-test-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            name
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("kith.redb")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn item(sub: Subscription, groups: &[&str]) -> RosterItem {
    RosterItem {
        name: None,
        subscription: sub,
        ask: false,
        approved: false,
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

/// Writes raw bytes into a table, bypassing the codec, as damage on disk would.
fn poke<K: Key + 'static>(
    store: &Store,
    table: TableDefinition<K, &[u8]>,
    key: K::SelfType<'_>,
    raw: &[u8],
) {
    let txn = store.inner.file.handle().unwrap().begin_write().unwrap();
    txn.open_table(table).unwrap().insert(key, raw).unwrap();
    txn.commit().unwrap();
}

fn schema_version_on_disk(path: &Path) -> u64 {
    let db = Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    let v = meta.get(schema::KEY_SCHEMA_VERSION).unwrap().unwrap();
    codec::decode_u64(v.value()).unwrap()
}

#[test]
fn accounts_create_duplicate_delete_cascades() {
    let dir = TempDir::new("accounts");
    let store = Store::open(&dir.file()).unwrap();
    block_on(async {
        store
            .create_account("alice@x", b"creds1".to_vec())
            .await
            .unwrap();
        assert_eq!(
            store.create_account("alice@x", vec![]).await,
            Err(StoreError::AlreadyExists("alice@x".into()))
        );
        let a = store.account("alice@x").await.unwrap().unwrap();
        assert_eq!(a.creds, b"creds1");
        assert_eq!(a.flags, 0);
        assert!(a.created_unix > 1_600_000_000);

        store
            .set_creds("alice@x", b"creds2".to_vec())
            .await
            .unwrap();
        store.set_flags("alice@x", 5).await.unwrap();
        let b = store.account("alice@x").await.unwrap().unwrap();
        assert_eq!(
            (b.creds.as_slice(), b.flags, b.created_unix),
            (&b"creds2"[..], 5, a.created_unix)
        );
        assert_eq!(
            store.set_creds("nobody@x", vec![]).await,
            Err(StoreError::NotFound)
        );
        assert_eq!(store.account("nobody@x").await.unwrap(), None);

        store.create_account("bob@x", vec![]).await.unwrap();
        assert_eq!(store.list_accounts().await.unwrap(), ["alice@x", "bob@x"]);

        // Give alice a row in every per-account table, and bob one too.
        for owner in ["alice@x", "bob@x"] {
            store
                .set_roster_item(owner, "carol@y", Some(item(Subscription::Both, &["g"])))
                .await
                .unwrap();
            store
                .set_pending_in(owner, "dave@y", Some(b"<presence/>".to_vec()))
                .await
                .unwrap();
            store
                .push_offline(owner, b"<message/>".to_vec(), 10)
                .await
                .unwrap();
            store.set_last(owner, 123, "bye").await.unwrap();
            store.kv_set(owner, "k", Some(b"v".to_vec())).await.unwrap();
        }

        assert!(store.delete_account("alice@x").await.unwrap());
        assert!(!store.delete_account("alice@x").await.unwrap());
        assert_eq!(store.account("alice@x").await.unwrap(), None);
        assert_eq!(store.roster("alice@x").await.unwrap(), (0, vec![]));
        assert!(store.pending_in("alice@x").await.unwrap().is_empty());
        assert!(store.offline("alice@x").await.unwrap().is_empty());
        assert_eq!(store.last("alice@x").await.unwrap(), None);
        assert_eq!(store.kv_get("alice@x", "k").await.unwrap(), None);

        // bob is untouched.
        assert_eq!(store.roster("bob@x").await.unwrap().1.len(), 1);
        assert_eq!(store.pending_in("bob@x").await.unwrap().len(), 1);
        assert_eq!(store.offline_count("bob@x").await.unwrap(), 1);
        assert_eq!(
            store.last("bob@x").await.unwrap(),
            Some((123, "bye".into()))
        );
        assert_eq!(
            store.kv_get("bob@x", "k").await.unwrap(),
            Some(b"v".to_vec())
        );
        assert_eq!(store.list_accounts().await.unwrap(), ["bob@x"]);
    });
}

#[test]
fn writes_for_a_missing_account_are_refused() {
    let dir = TempDir::new("missing");
    let store = Store::open(&dir.file()).unwrap();
    block_on(async {
        let ghost = "ghost@x";
        assert_eq!(
            store.push_offline(ghost, vec![1], 10).await,
            Err(StoreError::NotFound)
        );
        assert_eq!(
            store
                .set_roster_item(ghost, "a@x", Some(RosterItem::default()))
                .await,
            Err(StoreError::NotFound)
        );
        assert_eq!(
            store.set_pending_in(ghost, "a@x", Some(vec![1])).await,
            Err(StoreError::NotFound)
        );
        assert_eq!(
            store.set_last(ghost, 1, "").await,
            Err(StoreError::NotFound)
        );
        assert_eq!(
            store.kv_set(ghost, "k", Some(vec![1])).await,
            Err(StoreError::NotFound)
        );
        // Removing what is not there is fine.
        assert_eq!(store.set_roster_item(ghost, "a@x", None).await, Ok(0));
        store.set_pending_in(ghost, "a@x", None).await.unwrap();
        store.kv_set(ghost, "k", None).await.unwrap();
    });
}

#[test]
fn import_accounts_is_all_or_nothing() {
    let dir = TempDir::new("import");
    let store = Store::open(&dir.file()).unwrap();
    block_on(async {
        store.create_account("b@x", vec![]).await.unwrap();
        let batch = vec![("a@x".to_string(), vec![1]), ("b@x".to_string(), vec![2])];
        assert_eq!(
            store
                .import_accounts(batch, TombstoneRule::Honour(None))
                .await,
            Err(StoreError::AlreadyExists("b@x".into()))
        );
        assert_eq!(
            store.account("a@x").await.unwrap(),
            None,
            "a@x must not be half-imported"
        );

        let dup = vec![("c@x".to_string(), vec![]), ("c@x".to_string(), vec![])];
        assert_eq!(
            store
                .import_accounts(dup, TombstoneRule::Honour(None))
                .await,
            Err(StoreError::AlreadyExists("c@x".into()))
        );

        let ok = vec![("a@x".to_string(), vec![1]), ("c@x".to_string(), vec![3])];
        store
            .import_accounts(ok, TombstoneRule::Honour(None))
            .await
            .unwrap();
        assert_eq!(store.list_accounts().await.unwrap(), ["a@x", "b@x", "c@x"]);
        assert_eq!(store.account("c@x").await.unwrap().unwrap().creds, [3]);
    });
}

#[test]
fn roster_versions_bump() {
    let dir = TempDir::new("roster");
    let store = Store::open(&dir.file()).unwrap();
    block_on(async {
        store.create_account("alice@x", vec![]).await.unwrap();
        assert_eq!(store.roster("alice@x").await.unwrap(), (0, vec![]));

        let mut bob = item(Subscription::To, &["Friends", "Work"]);
        bob.name = Some("Bob".into());
        bob.ask = true;
        let v1 = store
            .set_roster_item("alice@x", "bob@y", Some(bob.clone()))
            .await
            .unwrap();
        assert!(v1 > 0);
        let v2 = store
            .set_roster_item("alice@x", "carol@y", Some(item(Subscription::None, &[])))
            .await
            .unwrap();
        assert!(v2 > v1);
        assert_eq!(
            store.roster_item("alice@x", "bob@y").await.unwrap(),
            Some(bob.clone())
        );
        assert_eq!(
            store.roster_item("alice@x", "nobody@y").await.unwrap(),
            None
        );

        let (ver, items) = store.roster("alice@x").await.unwrap();
        assert_eq!(ver, v2);
        assert_eq!(
            items,
            vec![
                ("bob@y".to_string(), bob),
                ("carol@y".to_string(), item(Subscription::None, &[]))
            ]
        );

        // Removing bumps; removing a missing item does not.
        let v3 = store
            .set_roster_item("alice@x", "carol@y", None)
            .await
            .unwrap();
        assert!(v3 > v2);
        assert_eq!(
            store
                .set_roster_item("alice@x", "carol@y", None)
                .await
                .unwrap(),
            v3
        );
        assert_eq!(store.roster("alice@x").await.unwrap().0, v3);

        // A recreated account never reuses an old version a client may have cached.
        store.delete_account("alice@x").await.unwrap();
        store.create_account("alice@x", vec![]).await.unwrap();
        let v4 = store
            .set_roster_item("alice@x", "bob@y", Some(RosterItem::default()))
            .await
            .unwrap();
        assert!(v4 > v3);
    });
}

/// `al@x` is a prefix of `alice@x`: ranges over one must not see the other's rows, in either
/// direction, in any per-owner table, including deletes.
#[test]
fn owners_that_are_prefixes_of_each_other_stay_apart() {
    let dir = TempDir::new("prefix");
    let store = Store::open(&dir.file()).unwrap();
    let owners = ["al@x", "alice@x", "al@x.org", "al"];
    block_on(async {
        for o in owners {
            store.create_account(o, vec![]).await.unwrap();
            // Contacts chosen to sit at the edges of the key space.
            for c in ["", "\0", "a@y", "\u{10ffff}\u{10ffff}"] {
                let it = RosterItem {
                    name: Some(format!("{o}/{c}")),
                    ..RosterItem::default()
                };
                store.set_roster_item(o, c, Some(it)).await.unwrap();
                store
                    .set_pending_in(o, c, Some(format!("{o}/{c}").into_bytes()))
                    .await
                    .unwrap();
                store
                    .kv_set(o, c, Some(format!("{o}/{c}").into_bytes()))
                    .await
                    .unwrap();
            }
            store
                .push_offline(o, o.as_bytes().to_vec(), 100)
                .await
                .unwrap();
        }
        for o in owners {
            let (_, items) = store.roster(o).await.unwrap();
            assert_eq!(items.len(), 4, "{o}: {items:?}");
            for (c, it) in &items {
                assert_eq!(it.name.as_deref(), Some(format!("{o}/{c}").as_str()));
            }
            let pending = store.pending_in(o).await.unwrap();
            assert_eq!(pending.len(), 4);
            assert!(pending
                .iter()
                .all(|(c, s)| *s == format!("{o}/{c}").into_bytes()));
            let off = store.offline(o).await.unwrap();
            assert_eq!(off.len(), 1);
            assert_eq!(off[0].1, o.as_bytes());
        }

        store.delete_offline("al@x", u64::MAX).await.unwrap();
        assert!(store.delete_account("al@x").await.unwrap());
        for o in ["alice@x", "al@x.org", "al"] {
            assert_eq!(store.roster(o).await.unwrap().1.len(), 4, "{o}");
            assert_eq!(store.pending_in(o).await.unwrap().len(), 4, "{o}");
            assert_eq!(store.offline_count(o).await.unwrap(), 1, "{o}");
            assert_eq!(
                store.kv_get(o, "").await.unwrap(),
                Some(format!("{o}/").into_bytes())
            );
        }
    });
}

#[test]
fn offline_order_quota_and_delete_up_to() {
    let dir = TempDir::new("offline");
    let store = Store::open(&dir.file()).unwrap();
    block_on(async {
        store.create_account("bob@x", vec![]).await.unwrap();
        for i in 0..3u8 {
            store.push_offline("bob@x", vec![i], 3).await.unwrap();
        }
        assert_eq!(
            store.push_offline("bob@x", vec![9], 3).await,
            Err(StoreError::QuotaExceeded)
        );
        assert_eq!(store.offline_count("bob@x").await.unwrap(), 3);

        let msgs = store.offline("bob@x").await.unwrap();
        let bodies: Vec<u8> = msgs.iter().map(|(_, s)| s[0]).collect();
        assert_eq!(bodies, [0, 1, 2], "oldest first");
        assert!(msgs.windows(2).all(|w| w[0].0 < w[1].0), "seqs increase");

        // Deliver the first two; a message arriving meanwhile survives the delete.
        store.delete_offline("bob@x", msgs[1].0).await.unwrap();
        store.push_offline("bob@x", vec![3], 3).await.unwrap();
        let rest = store.offline("bob@x").await.unwrap();
        assert_eq!(rest.iter().map(|(_, s)| s[0]).collect::<Vec<_>>(), [2, 3]);

        // Emptying the queue does not restart the numbering, so a stale up_to is harmless.
        store.delete_offline("bob@x", u64::MAX).await.unwrap();
        store.push_offline("bob@x", vec![4], 3).await.unwrap();
        store.delete_offline("bob@x", msgs[2].0).await.unwrap();
        assert_eq!(store.offline("bob@x").await.unwrap().len(), 1);
        assert_eq!(
            store.push_offline("bob@x", vec![5], 0).await,
            Err(StoreError::QuotaExceeded)
        );
    });
}

#[test]
fn data_survives_reopen() {
    let dir = TempDir::new("reopen");
    {
        let store = Store::open(&dir.file()).unwrap();
        let clone = store.clone();
        block_on(async {
            store
                .create_account("alice@x", b"c".to_vec())
                .await
                .unwrap();
            store
                .set_roster_item("alice@x", "bob@y", Some(item(Subscription::Both, &["a"])))
                .await
                .unwrap();
            store
                .push_offline("alice@x", b"m".to_vec(), 5)
                .await
                .unwrap();
            store.set_last("alice@x", 77, "zzz").await.unwrap();
            store.meta_set("secret", b"s3cret".to_vec()).await.unwrap();
        });
        store.close();
        // The file is still open through the clone: a second open must be refused.
        assert!(matches!(
            Store::open(&dir.file()),
            Err(StoreError::Locked(_))
        ));
        drop(clone);
    }
    let store = Store::open(&dir.file()).unwrap();
    block_on(async {
        assert_eq!(store.account("alice@x").await.unwrap().unwrap().creds, b"c");
        let (ver, items) = store.roster("alice@x").await.unwrap();
        assert!(ver > 0);
        assert_eq!(
            items,
            vec![("bob@y".to_string(), item(Subscription::Both, &["a"]))]
        );
        assert_eq!(store.offline("alice@x").await.unwrap().len(), 1);
        assert_eq!(
            store.last("alice@x").await.unwrap(),
            Some((77, "zzz".into()))
        );
        assert_eq!(
            store.meta_get("secret").await.unwrap(),
            Some(b"s3cret".to_vec())
        );
    });
    assert_eq!(schema_version_on_disk_after(store), SCHEMA_VERSION);
}

fn schema_version_on_disk_after(store: Store) -> u64 {
    let path = store.path().to_path_buf();
    drop(store);
    schema_version_on_disk(&path)
}

#[test]
fn second_open_is_locked() {
    let dir = TempDir::new("locked");
    let first = Store::open(&dir.file()).unwrap();
    let err = Store::open(&dir.file()).unwrap_err();
    assert_eq!(err, StoreError::Locked(dir.file()));
    assert!(err.to_string().contains("already running"), "{err}");
    drop(first);
    Store::open(&dir.file()).unwrap();
}

#[test]
fn newer_schema_is_refused_and_left_alone() {
    let dir = TempDir::new("newer");
    {
        let db = Database::create(dir.file()).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(
                schema::KEY_SCHEMA_VERSION,
                codec::encode_u64(SCHEMA_VERSION + 1).as_slice(),
            )
            .unwrap();
        txn.commit().unwrap();
    }
    let err = Store::open(&dir.file()).unwrap_err();
    assert_eq!(
        err,
        StoreError::Newer {
            found: SCHEMA_VERSION + 1,
            supported: SCHEMA_VERSION
        }
    );
    assert_eq!(schema_version_on_disk(&dir.file()), SCHEMA_VERSION + 1);
}

const LEGACY_ACCOUNTS: TableDefinition<&str, &str> = TableDefinition::new("legacy_accounts_v0");

/// A made-up v0 → v1 step: accounts were `jid → password` strings in another table.
fn fake_v0_to_v1(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut rows = Vec::new();
    {
        let legacy = txn.open_table(LEGACY_ACCOUNTS)?;
        for row in legacy.iter()? {
            let (k, v) = row?;
            rows.push((k.value().to_string(), v.value().as_bytes().to_vec()));
        }
    }
    let mut accounts = txn.open_table(ACCOUNTS)?;
    for (jid, creds) in rows {
        insert_new_account(&mut accounts, &jid, creds, 1)?;
    }
    txn.delete_table(LEGACY_ACCOUNTS)?;
    Ok(())
}

fn write_fake_v0(path: &Path) {
    let db = Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(META)
        .unwrap()
        .insert(schema::KEY_SCHEMA_VERSION, codec::encode_u64(0).as_slice())
        .unwrap();
    txn.open_table(LEGACY_ACCOUNTS)
        .unwrap()
        .insert("old@x", "pw")
        .unwrap();
    txn.commit().unwrap();
}

#[test]
fn fake_v0_migration_runs() {
    let dir = TempDir::new("migrate");
    write_fake_v0(&dir.file());
    let steps = [Migration {
        from: 0,
        run: fake_v0_to_v1,
    }];
    let store = Store::open_with(&dir.file(), &steps, 1).unwrap();
    block_on(async {
        let old = store.account("old@x").await.unwrap().unwrap();
        assert_eq!((old.creds.as_slice(), old.created_unix), (&b"pw"[..], 1));
        // Every v1 table exists after the upgrade.
        assert_eq!(store.roster("old@x").await.unwrap(), (0, vec![]));
        assert_eq!(store.offline_count("old@x").await.unwrap(), 0);
    });
    drop(store);
    assert_eq!(schema_version_on_disk(&dir.file()), 1);
    // Reopening with the real (empty) list is a no-op now.
    Store::open(&dir.file()).unwrap();
}

#[test]
fn missing_migration_is_a_clear_error() {
    let dir = TempDir::new("nomigration");
    write_fake_v0(&dir.file());
    let err = Store::open_with(&dir.file(), &[], 1).unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt(m) if m.contains("schema 0 is too old")),
        "{err}"
    );
    assert_eq!(
        schema_version_on_disk(&dir.file()),
        0,
        "a failed upgrade writes nothing"
    );
}

#[test]
fn failing_migration_writes_nothing() {
    fn broken(txn: &WriteTransaction) -> Result<(), StoreError> {
        fake_v0_to_v1(txn)?;
        Err(StoreError::Corrupt("step failed half way".into()))
    }
    let dir = TempDir::new("badmigration");
    write_fake_v0(&dir.file());
    let steps = [Migration {
        from: 0,
        run: broken,
    }];
    assert!(Store::open_with(&dir.file(), &steps, 1).is_err());
    assert_eq!(schema_version_on_disk(&dir.file()), 0);
    let steps = [Migration {
        from: 0,
        run: fake_v0_to_v1,
    }];
    let store = Store::open_with(&dir.file(), &steps, 1).unwrap();
    assert!(block_on(store.account("old@x")).unwrap().is_some());
}

#[test]
fn foreign_redb_file_is_refused() {
    let dir = TempDir::new("foreign");
    {
        let db = Database::create(dir.file()).unwrap();
        let txn = db.begin_write().unwrap();
        let t: TableDefinition<&str, u64> = TableDefinition::new("something_else");
        txn.open_table(t).unwrap().insert("x", 1).unwrap();
        txn.commit().unwrap();
    }
    let err = Store::open(&dir.file()).unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt(m) if m.contains("not a kith data file")),
        "{err}"
    );
}

#[test]
fn garbage_file_is_an_error_not_a_panic() {
    let dir = TempDir::new("garbagefile");
    std::fs::write(
        dir.file(),
        b"this is not a database, just some text that is long enough".repeat(100),
    )
    .unwrap();
    let err = Store::open(&dir.file()).unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt(m) if m.contains("kith.redb")),
        "{err:?}"
    );
}

#[test]
fn garbage_values_are_corrupt_not_panics() {
    let dir = TempDir::new("garbage");
    let store = Store::open(&dir.file()).unwrap();
    block_on(async {
        store.create_account("alice@x", vec![]).await.unwrap();
    });
    poke(&store, ACCOUNTS, "alice@x", &[1, 2, 3]);
    poke(&store, ROSTER, ("alice@x", "bob@y"), &[1, 9, 0, 0, 0, 0, 0]);
    poke(&store, LAST, "alice@x", &[0xff; 40]);
    block_on(async {
        let e = store.account("alice@x").await.unwrap_err();
        assert!(
            matches!(&e, StoreError::Corrupt(m) if m.contains("accounts") && m.contains("alice@x")),
            "{e}"
        );
        assert!(matches!(
            store.set_creds("alice@x", vec![]).await,
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            store.roster("alice@x").await,
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            store.roster_item("alice@x", "bob@y").await,
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            store.last("alice@x").await,
            Err(StoreError::Corrupt(_))
        ));
        // The damage is contained: the account row can be deleted and recreated.
        assert!(store.delete_account("alice@x").await.unwrap());
        store.create_account("alice@x", vec![]).await.unwrap();
        assert_eq!(store.roster("alice@x").await.unwrap(), (0, vec![]));
    });
    poke(&store, META, schema::KEY_OFFLINE_SEQ, b"xx");
    let e = block_on(store.push_offline("alice@x", vec![], 10)).unwrap_err();
    assert!(matches!(e, StoreError::Corrupt(_)), "{e}");
}

#[test]
fn meta_and_kv() {
    let dir = TempDir::new("meta");
    let store = Store::open(&dir.file()).unwrap();
    block_on(async {
        assert_eq!(store.meta_get("dialback_secret").await.unwrap(), None);
        store
            .meta_set("dialback_secret", vec![7; 32])
            .await
            .unwrap();
        assert_eq!(
            store.meta_get("dialback_secret").await.unwrap(),
            Some(vec![7; 32])
        );
        for reserved in ["schema_version", "seq.offline", "seq.anything"] {
            assert!(
                store.meta_set(reserved, vec![]).await.is_err(),
                "{reserved}"
            );
        }
        assert_eq!(
            store.meta_get("schema_version").await.unwrap(),
            Some(codec::encode_u64(SCHEMA_VERSION).to_vec())
        );

        store.create_account("a@x", vec![]).await.unwrap();
        store
            .kv_set("a@x", "bookmarks", Some(b"<x/>".to_vec()))
            .await
            .unwrap();
        assert_eq!(
            store.kv_get("a@x", "bookmarks").await.unwrap(),
            Some(b"<x/>".to_vec())
        );
        store.kv_set("a@x", "bookmarks", None).await.unwrap();
        assert_eq!(store.kv_get("a@x", "bookmarks").await.unwrap(), None);
    });
}

#[test]
fn concurrent_writers_do_not_deadlock() {
    let dir = TempDir::new("concurrent");
    let store = Store::open(&dir.file()).unwrap();
    block_on(async {
        store.create_account("shared@x", vec![]).await.unwrap();
    });
    const THREADS: usize = 6;
    const EACH: usize = 25;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                block_on(async {
                    let me = format!("user{t}@x");
                    store.create_account(&me, vec![]).await.unwrap();
                    for i in 0..EACH {
                        store
                            .push_offline("shared@x", vec![t as u8, i as u8], usize::MAX)
                            .await
                            .unwrap();
                        store
                            .set_roster_item(&me, &format!("c{i}@y"), Some(RosterItem::default()))
                            .await
                            .unwrap();
                        // Readers interleave with the writers.
                        store.roster(&me).await.unwrap();
                    }
                })
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    block_on(async {
        assert_eq!(
            store.offline_count("shared@x").await.unwrap(),
            THREADS * EACH
        );
        for t in 0..THREADS {
            assert_eq!(
                store.roster(&format!("user{t}@x")).await.unwrap().1.len(),
                EACH
            );
        }
        // Many futures on one thread, all waiting on the single writer through the pool.
        let futs: Vec<_> = (0..20)
            .map(|i| {
                let store = store.clone();
                async move { store.push_offline("shared@x", vec![i], usize::MAX).await }
            })
            .collect();
        for f in futs {
            f.await.unwrap();
        }
    });
}

#[test]
fn backup_copy_restores_every_table() {
    let dir = TempDir::new("backup");
    let store = Store::open(&dir.file()).unwrap();
    block_on(async {
        store
            .create_account("alice@x", b"c".to_vec())
            .await
            .unwrap();
        store
            .set_roster_item("alice@x", "bob@y", Some(item(Subscription::From, &[])))
            .await
            .unwrap();
        store
            .push_offline("alice@x", b"m".to_vec(), 5)
            .await
            .unwrap();
        store
            .kv_set("alice@x", "k", Some(b"v".to_vec()))
            .await
            .unwrap();
        store.meta_set("secret", b"s".to_vec()).await.unwrap();
    });
    let secret = dir.0.join("dialback.secret");
    std::fs::write(&secret, b"abc\n").unwrap();
    let big = dir.0.join("big");
    let big_bytes: Vec<u8> = (0..(3 << 20) + 7).map(|i| (i % 251) as u8).collect();
    std::fs::write(&big, &big_bytes).unwrap();
    let extra = [
        ExtraFile {
            rel: "dialback.secret".into(),
            path: secret,
        },
        ExtraFile {
            rel: "sub/big".into(),
            path: big,
        },
        ExtraFile {
            rel: "gone".into(),
            path: dir.0.join("missing"),
        },
    ];
    let dest = dir.0.join("backup.kith");
    let info = store.backup_to(&dest, &extra, None).unwrap();
    assert_eq!(info.files, ["dialback.secret", "sub/big"]);
    assert_eq!(info.skipped, ["gone"]);
    assert!(
        store.backup_to(&dest, &[], None).is_err(),
        "never overwrites"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary file left behind");

    let read = inspect_backup(&dest).unwrap();
    assert_eq!(read.format, BACKUP_FORMAT);
    assert_eq!(read.schema_version, SCHEMA_VERSION);
    assert_eq!(read.files, info.files);
    // Every table of a fresh store (so every table in schema.rs) was copied: a table with
    // types the backup does not know would have failed `backup_to`.
    let live_tables = {
        let txn = store.inner.file.handle().unwrap().begin_read().unwrap();
        txn.list_tables().unwrap().count()
    };
    assert_eq!(read.tables, live_tables);

    let (live_roster, live_offline) = block_on(async {
        (
            store.roster("alice@x").await.unwrap(),
            store.offline("alice@x").await.unwrap(),
        )
    });
    drop(store);

    let restored = dir.0.join("restored");
    std::fs::create_dir_all(&restored).unwrap();
    let copy_path = restored.join("kith.redb");
    restore_into(&dest, &copy_path, &restored).unwrap();
    assert_eq!(
        std::fs::read(restoring_path(&restored, "dialback.secret")).unwrap(),
        b"abc\n"
    );
    assert_eq!(
        std::fs::read(restoring_path(&restored, "sub/big")).unwrap(),
        big_bytes
    );
    let copy = Store::open(&copy_path).unwrap();
    block_on(async {
        assert_eq!(copy.account("alice@x").await.unwrap().unwrap().creds, b"c");
        assert_eq!(copy.meta_get("secret").await.unwrap(), Some(b"s".to_vec()));
        assert_eq!(copy.roster("alice@x").await.unwrap(), live_roster);
        assert_eq!(copy.offline("alice@x").await.unwrap(), live_offline);
        assert_eq!(
            copy.kv_get("alice@x", "k").await.unwrap(),
            Some(b"v".to_vec())
        );
        // Counters came along: new seqs continue after the old ones.
        copy.push_offline("alice@x", b"n".to_vec(), 5)
            .await
            .unwrap();
        let all = copy.offline("alice@x").await.unwrap();
        assert!(all[1].0 > all[0].0);
    });
}

#[test]
fn restore_refuses_what_is_not_a_backup() {
    let dir = TempDir::new("notbackup");
    let store = Store::open(&dir.file()).unwrap();
    drop(store);
    let out = dir.0.join("out.redb");
    let e = restore_into(&dir.file(), &out, &dir.0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("is a kith data file, not a backup"), "{e}");
    assert!(!out.exists(), "nothing written for a refused file");

    let text = dir.0.join("notes.txt");
    std::fs::write(&text, b"hello, this is not redb at all, not even close").unwrap();
    let e = inspect_backup(&text).unwrap_err().to_string();
    assert!(e.contains("is not a kith backup"), "{e}");

    let e = inspect_backup(&dir.0.join("nothing"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot read the backup"), "{e}");
}

#[test]
fn restore_refuses_a_newer_schema_and_unknown_format() {
    let dir = TempDir::new("newer");
    let store = Store::open(&dir.file()).unwrap();
    let dest = dir.0.join("b.kith");
    store.backup_to(&dest, &[], None).unwrap();
    drop(store);
    let patch = |key: &str, v: u64| {
        let db = Database::create(&dest).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<&str, &[u8]>::new(
            "kith_backup_meta",
        ))
        .unwrap()
        .insert(key, codec::encode_u64(v).as_slice())
        .unwrap();
        txn.commit().unwrap();
    };
    patch("schema_version", SCHEMA_VERSION + 1);
    let e = inspect_backup(&dest).unwrap_err().to_string();
    assert!(e.contains("made by a newer kith (schema 2)"), "{e}");
    patch("schema_version", SCHEMA_VERSION);
    patch("format", BACKUP_FORMAT + 1);
    let e = inspect_backup(&dest).unwrap_err().to_string();
    assert!(e.contains("format 2"), "{e}");
}

#[test]
fn restore_refuses_paths_outside_the_data_dir() {
    let dir = TempDir::new("unsafe");
    let store = Store::open(&dir.file()).unwrap();
    let dest = dir.0.join("b.kith");
    store.backup_to(&dest, &[], None).unwrap();
    drop(store);
    for (rel, chunk) in [("../escape", 0u64), ("../escape", 1), ("/etc/x", 0)] {
        let copy = dir.0.join(format!("c{chunk}.kith"));
        let _ = std::fs::remove_file(&copy);
        std::fs::copy(&dest, &copy).unwrap();
        {
            let db = Database::create(&copy).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(TableDefinition::<(&str, u64), &[u8]>::new(
                "kith_backup_files",
            ))
            .unwrap()
            .insert((rel, chunk), b"x".as_slice())
            .unwrap();
            txn.commit().unwrap();
        }
        let target = dir.0.join("restored");
        std::fs::create_dir_all(&target).unwrap();
        let out = target.join("kith.redb");
        let _ = std::fs::remove_file(&out);
        let e = restore_into(&copy, &out, &target).unwrap_err().to_string();
        assert!(e.contains("unsafe path"), "{rel} {chunk}: {e}");
        assert!(!dir.0.join("escape.restoring").exists());
    }
}

#[test]
fn kv_list_returns_one_owners_keys_with_the_prefix() {
    let dir = TempDir::new("kvlist");
    let store = Store::open(&dir.file()).unwrap();
    block_on(async {
        for o in ["a@x", "ab@x"] {
            store.create_account(o, vec![]).await.unwrap();
        }
        for (o, k) in [
            ("a@x", "private/b"),
            ("a@x", "private/a"),
            ("a@x", "push"),
            ("ab@x", "private/c"),
        ] {
            store
                .kv_set(o, k, Some(k.as_bytes().to_vec()))
                .await
                .unwrap();
        }
        let keys: Vec<String> = store
            .kv_list("a@x", "private/")
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["private/a", "private/b"]);
        assert!(store.kv_list("nobody@x", "").await.unwrap().is_empty());
    });
}

/// A disk that fills up on demand: while `full` is set, every write and growth of the file
/// fails with ENOSPC, as on a full filesystem. Otherwise it is redb's own file backend.
#[derive(Debug)]
struct FillingDisk {
    file: redb::backends::FileBackend,
    full: Arc<std::sync::atomic::AtomicBool>,
}

impl FillingDisk {
    fn check(&self) -> std::io::Result<()> {
        if self.full.load(Ordering::SeqCst) {
            Err(std::io::Error::from_raw_os_error(28)) // ENOSPC
        } else {
            Ok(())
        }
    }
}

impl redb::StorageBackend for FillingDisk {
    fn len(&self) -> std::io::Result<u64> {
        self.file.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.file.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        if len > self.file.len()? {
            self.check()?;
        }
        self.file.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check()?;
        self.file.write(offset, data)
    }
    fn close(&self) -> std::io::Result<()> {
        self.file.close()
    }
    // The file locks are the real ones, so a reopen that came before the old handle closed
    // would fail here with "already open".
    fn try_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.file.try_lock_range(start, end)
    }
    fn try_lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.file.try_lock_shared_range(start, end)
    }
    fn lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.file.lock_range(start, end)
    }
    fn lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.file.lock_shared_range(start, end)
    }
    fn unlock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.file.unlock_range(start, end)
    }
    fn query_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.file.query_lock_range(start, end)
    }
}

/// A store on a [`FillingDisk`] at `path`, and the switch that fills it.
fn store_on_filling_disk(path: &Path) -> (Store, Arc<std::sync::atomic::AtomicBool>) {
    let full = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (file, switch) = (path.to_path_buf(), full.clone());
    let open: file::Opener = Box::new(move || {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&file)?;
        let disk = FillingDisk {
            file: redb::backends::FileBackend::new(f)?,
            full: switch.clone(),
        };
        Database::builder().create_with_backend(disk)
    });
    let store = Store::open_through(path, open, MIGRATIONS, SCHEMA_VERSION).unwrap();
    (store, full)
}

#[test]
fn after_a_full_disk_storage_works_again_without_a_restart_and_loses_nothing_committed() {
    let dir = TempDir::new("filling-disk");
    let (store, full) = store_on_filling_disk(&dir.file());
    block_on(store.create_account("alice@x", vec![1])).unwrap();
    block_on(store.push_offline("alice@x", b"before".to_vec(), 100)).unwrap();
    block_on(store.mam_append("alice@x", "bob@x", b"archived".to_vec())).unwrap();

    full.store(true, Ordering::SeqCst);
    let err = block_on(store.push_offline("alice@x", b"refused".to_vec(), 100)).unwrap_err();
    assert!(err.is_disk_full(), "{err}");
    assert!(
        err.to_string().contains("kith.redb"),
        "the error names the file: {err}"
    );
    let err = block_on(store.mam_append("alice@x", "bob@x", b"refused".to_vec())).unwrap_err();
    assert!(matches!(err, StoreError::Io(_)), "{err}");
    // Still full a moment later: still a clear error, nothing half-written.
    std::thread::sleep(file::REOPEN_EVERY);
    let err = block_on(store.kv_set("alice@x", "k", Some(b"v".to_vec()))).unwrap_err();
    assert!(matches!(err, StoreError::Io(_)), "{err}");
    // redb cannot reopen (repair) the file without writing, so while the disk is full even
    // reads fail; the error still says why, as the services need it to.
    std::thread::sleep(file::REOPEN_EVERY);
    let err = block_on(store.account("alice@x")).unwrap_err();
    assert!(err.is_disk_full(), "{err}");

    // Space comes back: within a second the file is reopened and every kind of operation
    // works on the same `Store`, the one the running server holds.
    full.store(false, Ordering::SeqCst);
    std::thread::sleep(file::REOPEN_EVERY);
    block_on(store.push_offline("alice@x", b"after".to_vec(), 100)).unwrap();
    block_on(store.mam_append("alice@x", "bob@x", b"archived after".to_vec())).unwrap();
    let offline: Vec<Vec<u8>> = block_on(store.offline("alice@x"))
        .unwrap()
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    assert_eq!(offline, vec![b"before".to_vec(), b"after".to_vec()]);
    assert_eq!(block_on(store.mam_len("alice@x")).unwrap(), 2);
    assert_eq!(block_on(store.kv_get("alice@x", "k")).unwrap(), None);

    // And the file itself is sound: a plain open (with redb's repair) reads the same.
    drop(store);
    let store = Store::open(&dir.file()).unwrap();
    assert_eq!(block_on(store.offline_count("alice@x")).unwrap(), 2);
    assert_eq!(block_on(store.mam_len("alice@x")).unwrap(), 2);
}
