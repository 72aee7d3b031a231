//! Tests of the store against real redb files in the system temp directory.

use super::*;
use futures_lite::future::block_on;
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
    let txn = store.inner.db.begin_write().unwrap();
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
            store.import_accounts(batch).await,
            Err(StoreError::AlreadyExists("b@x".into()))
        );
        assert_eq!(
            store.account("a@x").await.unwrap(),
            None,
            "a@x must not be half-imported"
        );

        let dup = vec![("c@x".to_string(), vec![]), ("c@x".to_string(), vec![])];
        assert_eq!(
            store.import_accounts(dup).await,
            Err(StoreError::AlreadyExists("c@x".into()))
        );

        let ok = vec![("a@x".to_string(), vec![1]), ("c@x".to_string(), vec![3])];
        store.import_accounts(ok).await.unwrap();
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
fn backup_copy_opens_as_a_store() {
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
    });
    let dest = dir.0.join("backup.redb");
    store.copy_to(&dest).unwrap();
    assert!(store.copy_to(&dest).is_err(), "never overwrites");
    let (live_roster, live_offline) = block_on(async {
        (
            store.roster("alice@x").await.unwrap(),
            store.offline("alice@x").await.unwrap(),
        )
    });
    drop(store);

    let copy = Store::open(&dest).unwrap();
    block_on(async {
        assert_eq!(copy.account("alice@x").await.unwrap().unwrap().creds, b"c");
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
