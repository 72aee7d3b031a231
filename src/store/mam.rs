//! The message archive (XEP-0313) of each account: `(owner, id) → (with, stanza)` rows in
//! `mam_v1`. Ids are time-ordered and unique store-wide: the id is the archiving time in
//! microseconds since the Unix epoch, moved up to the last id + 1 when two messages arrive in
//! the same microsecond (or the clock steps back). So the archive's key order is its time
//! order, a `start`/`end` filter is a key range, and an id from the wire needs no index.
//!
//! Like the rest of the store this knows nothing of XML or JIDs: `with` is the other party's
//! address as the caller normalised it; a bare filter matches it and all its resources by
//! string prefix (`with == bare` or `with` starts with `bare/`).

use std::sync::{mpsc, Arc, Weak};

use redb::ReadableTable;

use super::codec::{decode_u64, encode_u64};
use super::schema::{next_mam_id, MAM};
use super::{require_account, Inner, Store, StoreError};

/// One archived message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveEntry {
    /// Archive id; also microseconds since the Unix epoch when it was archived.
    pub id: u64,
    /// The other party (the recipient of an outgoing message, the sender of an incoming one).
    pub with: String,
    pub stanza: Vec<u8>,
}

/// Which conversation partner to match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WithFilter {
    /// A bare JID: itself and every resource of it.
    Bare(String),
    /// A full JID (or a bare JID taken literally): exact match.
    Exact(String),
}

impl WithFilter {
    fn matches(&self, with: &str) -> bool {
        match self {
            WithFilter::Exact(w) => with == w,
            WithFilter::Bare(b) => {
                with == b
                    || (with.len() > b.len() && with.starts_with(b.as_str()) && {
                        with.as_bytes()[b.len()] == b'/'
                    })
            }
        }
    }
}

/// A page request over one owner's archive, already reduced to id bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveQuery {
    /// Lowest id included.
    pub lo: u64,
    /// Highest id included.
    pub hi: u64,
    pub with: Option<WithFilter>,
    /// Only these ids (XEP-0313 #extended `ids`), still subject to the other filters.
    pub ids: Option<Vec<u64>>,
    /// Page size; the store reads one more to know whether the page is the last.
    pub max: usize,
    /// Page from `hi` downwards (RSM `<before/>`); the page is still returned oldest first.
    pub backwards: bool,
    /// Matching items to skip before the page starts (RSM `<index/>`, forwards only).
    pub skip: usize,
    /// Ids that must exist in the owner's archive (RSM after/before, after-id, before-id);
    /// `NotFound` otherwise.
    pub must_exist: Vec<u64>,
    /// Count every match in [lo, hi] (RSM `<count/>`): a full scan, so only on request.
    pub count: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivePage {
    /// Oldest first.
    pub entries: Vec<ArchiveEntry>,
    /// No further match exists in the paging direction.
    pub complete: bool,
    pub count: Option<usize>,
}

impl Store {
    /// Appends a message to the owner's archive and returns its id once it is on disk.
    /// `NotFound` when the owner has no account.
    ///
    /// Appends from all sessions go through one writer thread that commits whatever has queued
    /// up in one transaction (group commit): every message is archived on both sides, and one
    /// fsync per message would cap the whole server at a few hundred messages per second.
    pub async fn mam_append(
        &self,
        owner: &str,
        with: &str,
        stanza: Vec<u8>,
    ) -> Result<u64, StoreError> {
        self.append(owner, with, stanza, true).await
    }

    /// Appends a message to a MUC room's archive (`owner` is the room's bare JID, `with` the
    /// sender's occupant JID). Rooms are not accounts: no account check.
    pub async fn mam_append_room(
        &self,
        room: &str,
        with: &str,
        stanza: Vec<u8>,
    ) -> Result<u64, StoreError> {
        self.append(room, with, stanza, false).await
    }

    async fn append(
        &self,
        owner: &str,
        with: &str,
        stanza: Vec<u8>,
        account: bool,
    ) -> Result<u64, StoreError> {
        let (reply, answer) = async_channel::bounded(1);
        let item = Pending {
            owner: owner.to_string(),
            with: with.to_string(),
            stanza,
            account,
            reply,
        };
        let writer = self
            .inner
            .mam_writer
            .get_or_init(|| Writer::start(&self.inner));
        writer
            .0
            .send(item)
            .map_err(|_| StoreError::Io("the archive writer has stopped".into()))?;
        answer
            .recv()
            .await
            .unwrap_or_else(|_| Err(StoreError::Io("the archive writer has stopped".into())))
    }

    /// Inserts a batch of entries with given ids (benchmarks and imports). Ids must be new.
    pub async fn mam_insert_batch(
        &self,
        owner: &str,
        entries: Vec<ArchiveEntry>,
    ) -> Result<(), StoreError> {
        let owner = owner.to_string();
        self.write(move |txn| {
            require_account(txn, &owner)?;
            let mut last = 0;
            {
                let mut mam = txn.open_table(MAM)?;
                for e in &entries {
                    mam.insert(
                        (owner.as_str(), e.id),
                        encode_entry(&e.with, &e.stanza).as_slice(),
                    )?;
                    last = last.max(e.id);
                }
            }
            // Keep the id counter ahead of every inserted id.
            next_mam_id(txn, last)?;
            Ok(())
        })
        .await
    }

    /// One page of the owner's archive.
    pub async fn mam_query(&self, owner: &str, q: ArchiveQuery) -> Result<ArchivePage, StoreError> {
        let owner = owner.to_string();
        self.read(move |txn| {
            let mam = txn.open_table(MAM)?;
            for id in &q.must_exist {
                if mam.get((owner.as_str(), *id))?.is_none() {
                    return Err(StoreError::NotFound);
                }
            }
            let matches = |e: &ArchiveEntry| q.with.as_ref().is_none_or(|w| w.matches(&e.with));
            let count = if q.count {
                let mut n = 0;
                for row in mam.range((owner.as_str(), q.lo)..=(owner.as_str(), q.hi))? {
                    let (k, v) = row?;
                    if matches(&decode_entry(k.value().1, v.value(), &owner)?) {
                        n += 1;
                    }
                }
                Some(n)
            } else {
                None
            };
            let mut entries = Vec::new();
            let mut complete = true;
            if q.lo > q.hi {
                return Ok(ArchivePage {
                    entries,
                    complete,
                    count,
                });
            }
            if let Some(ids) = &q.ids {
                let mut ids: Vec<u64> = ids
                    .iter()
                    .copied()
                    .filter(|id| (q.lo..=q.hi).contains(id))
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                for id in ids {
                    if let Some(v) = mam.get((owner.as_str(), id))? {
                        let e = decode_entry(id, v.value(), &owner)?;
                        if matches(&e) {
                            entries.push(e);
                        }
                    }
                }
                if entries.len() > q.max {
                    complete = false;
                    if q.backwards {
                        entries.drain(..entries.len() - q.max);
                    } else {
                        entries.truncate(q.max);
                    }
                }
                return Ok(ArchivePage {
                    entries,
                    complete,
                    count,
                });
            }
            let range = mam.range((owner.as_str(), q.lo)..=(owner.as_str(), q.hi))?;
            let mut skip = if q.backwards { 0 } else { q.skip };
            let mut take = |row: Result<_, redb::StorageError>| -> Result<bool, StoreError> {
                let (k, v): (redb::AccessGuard<(&str, u64)>, redb::AccessGuard<&[u8]>) = row?;
                let e = decode_entry(k.value().1, v.value(), &owner)?;
                if !matches(&e) {
                    return Ok(true);
                }
                if skip > 0 {
                    skip -= 1;
                    return Ok(true);
                }
                if entries.len() == q.max {
                    complete = false;
                    return Ok(false);
                }
                entries.push(e);
                Ok(true)
            };
            if q.backwards {
                for row in range.rev() {
                    if !take(row)? {
                        break;
                    }
                }
            } else {
                for row in range {
                    if !take(row)? {
                        break;
                    }
                }
            }
            if q.backwards {
                entries.reverse();
            }
            Ok(ArchivePage {
                entries,
                complete,
                count,
            })
        })
        .await
    }

    /// The ids of the owner's oldest and newest archived messages (XEP-0313 §6.1 metadata).
    pub async fn mam_bounds(&self, owner: &str) -> Result<Option<(u64, u64)>, StoreError> {
        let owner = owner.to_string();
        self.read(move |txn| {
            let mam = txn.open_table(MAM)?;
            let mut range = mam.range((owner.as_str(), 0)..=(owner.as_str(), u64::MAX))?;
            let first = match range.next() {
                Some(row) => row?.0.value().1,
                None => return Ok(None),
            };
            let last = match range.next_back() {
                Some(row) => row?.0.value().1,
                None => first,
            };
            Ok(Some((first, last)))
        })
        .await
    }

    /// Deletes up to `batch` of the owner's messages with ids below `before` (retention) and
    /// returns how many went. Small batches keep each write transaction short, so archiving
    /// and other writers never wait long behind the cleaner.
    pub async fn mam_expire(
        &self,
        owner: &str,
        before: u64,
        batch: usize,
    ) -> Result<usize, StoreError> {
        let owner = owner.to_string();
        self.write(move |txn| {
            let mut mam = txn.open_table(MAM)?;
            let mut ids = Vec::new();
            if before > 0 {
                for row in mam.range((owner.as_str(), 0)..(owner.as_str(), before))? {
                    ids.push(row?.0.value().1);
                    if ids.len() >= batch {
                        break;
                    }
                }
            }
            for id in &ids {
                mam.remove((owner.as_str(), *id))?;
            }
            Ok(ids.len())
        })
        .await
    }

    /// How many messages the owner's archive holds (a full scan: tests and tools).
    pub async fn mam_len(&self, owner: &str) -> Result<usize, StoreError> {
        let owner = owner.to_string();
        self.read(move |txn| {
            let mam = txn.open_table(MAM)?;
            let mut n = 0;
            for row in mam.range((owner.as_str(), 0)..=(owner.as_str(), u64::MAX))? {
                row?;
                n += 1;
            }
            Ok(n)
        })
        .await
    }
}

/// Appends waiting for the writer thread.
pub(super) struct Writer(mpsc::Sender<Pending>);

pub(super) struct Pending {
    owner: String,
    with: String,
    stanza: Vec<u8>,
    /// The owner must be an account (false for MUC rooms).
    account: bool,
    reply: async_channel::Sender<Result<u64, StoreError>>,
}

/// Most appends committed in one transaction.
const MAX_BATCH: usize = 512;

impl Writer {
    /// Starts the writer thread. It holds only a weak reference to the database, so the file
    /// still closes when the last `Store` goes; the thread ends when the channel closes with it.
    fn start(inner: &Arc<Inner>) -> Writer {
        let (tx, rx) = mpsc::channel::<Pending>();
        let weak: Weak<Inner> = Arc::downgrade(inner);
        let spawned = std::thread::Builder::new()
            .name("kith-archive".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(p) => batch.push(p),
                            Err(_) => break,
                        }
                    }
                    let answers = match weak.upgrade() {
                        Some(inner) => commit_batch(&inner, batch),
                        None => return,
                    };
                    // The strong reference is gone before anyone hears back, so a store
                    // dropped right after its last append closes its file at once.
                    for (reply, result) in answers {
                        let _ = reply.try_send(result);
                    }
                }
            });
        if let Err(e) = spawned {
            // Appends then fail with "writer has stopped"; the messages are still delivered.
            log::error!("store: cannot start the archive writer thread: {e}");
        }
        Writer(tx)
    }
}

/// Commits a batch in one transaction and returns the answer to every append. An append for
/// a missing account gets `NotFound` without failing the others.
fn commit_batch(inner: &Inner, batch: Vec<Pending>) -> Vec<Answer> {
    let result = inner.file.run(|db| {
        let txn = super::begin_write(db)?;
        let mut out = Vec::with_capacity(batch.len());
        let done = (|| {
            let accounts = txn.open_table(super::schema::ACCOUNTS)?;
            for p in &batch {
                if p.account && accounts.get(p.owner.as_str())?.is_none() {
                    out.push(Err(StoreError::NotFound));
                    continue;
                }
                let id = next_mam_id(&txn, now_micros())?;
                txn.open_table(MAM)?.insert(
                    (p.owner.as_str(), id),
                    encode_entry(&p.with, &p.stanza).as_slice(),
                )?;
                out.push(Ok(id));
            }
            Ok::<(), StoreError>(())
        })();
        match done {
            Ok(()) => {
                txn.commit()?;
                Ok(out)
            }
            Err(e) => {
                let _ = txn.abort();
                Err(e)
            }
        }
    });
    match result {
        Ok(out) => batch.into_iter().map(|p| p.reply).zip(out).collect(),
        Err(e) => batch
            .into_iter()
            .map(|p| (p.reply, Err(e.clone())))
            .collect(),
    }
}

type Answer = (
    async_channel::Sender<Result<u64, StoreError>>,
    Result<u64, StoreError>,
);

/// The current time in microseconds since the Unix epoch.
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// `with` length (u64, big-endian), `with`, then the stanza bytes.
fn encode_entry(with: &str, stanza: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + with.len() + stanza.len());
    out.extend_from_slice(&encode_u64(with.len() as u64));
    out.extend_from_slice(with.as_bytes());
    out.extend_from_slice(stanza);
    out
}

fn decode_entry(id: u64, buf: &[u8], owner: &str) -> Result<ArchiveEntry, StoreError> {
    let bad = |what: &str| StoreError::Corrupt(format!("table mam, key {owner} {id}: {what}"));
    if buf.len() < 8 {
        return Err(bad("short entry"));
    }
    let len = decode_u64(&buf[..8]).map_err(|e| bad(&e.to_string()))? as usize;
    let rest = &buf[8..];
    if len > rest.len() {
        return Err(bad("bad length"));
    }
    let with = std::str::from_utf8(&rest[..len]).map_err(|_| bad("with is not UTF-8"))?;
    Ok(ArchiveEntry {
        id,
        with: with.to_string(),
        stanza: rest[len..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    struct Tmp(std::path::PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn store(name: &str) -> (Tmp, Store) {
        let dir = std::env::temp_dir().join(format!("kith-mam-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&dir.join("kith.redb")).unwrap();
        (Tmp(dir), store)
    }

    fn q(lo: u64, hi: u64, max: usize, backwards: bool) -> ArchiveQuery {
        ArchiveQuery {
            lo,
            hi,
            with: None,
            ids: None,
            max,
            backwards,
            skip: 0,
            must_exist: Vec::new(),
            count: false,
        }
    }

    fn ids(p: &ArchivePage) -> Vec<u64> {
        p.entries.iter().map(|e| e.id).collect()
    }

    #[test]
    fn pages_ranges_filters_and_expiry() {
        let (_tmp, s) = store("pages");
        block_on(async {
            for o in ["al@x", "alice@x", "bob@x"] {
                s.create_account(o, vec![]).await.unwrap();
            }
            let entries = (1..=10)
                .map(|i| ArchiveEntry {
                    id: i * 100,
                    with: if i % 2 == 0 {
                        "bob@x/r".into()
                    } else {
                        "carol@x".into()
                    },
                    stanza: format!("<m{i}/>").into_bytes(),
                })
                .collect();
            s.mam_insert_batch("alice@x", entries).await.unwrap();
            s.mam_append("al@x", "bob@x", b"<m/>".to_vec())
                .await
                .unwrap();

            let p = s
                .mam_query("alice@x", q(0, u64::MAX, 4, false))
                .await
                .unwrap();
            assert_eq!((ids(&p), p.complete), (vec![100, 200, 300, 400], false));
            let p = s
                .mam_query("alice@x", q(0, u64::MAX, 4, true))
                .await
                .unwrap();
            assert_eq!((ids(&p), p.complete), (vec![700, 800, 900, 1000], false));
            let p = s.mam_query("alice@x", q(0, 699, 4, true)).await.unwrap();
            assert_eq!(ids(&p), [300, 400, 500, 600]);
            let p = s.mam_query("alice@x", q(0, 299, 4, true)).await.unwrap();
            assert_eq!((ids(&p), p.complete), (vec![100, 200], true));
            let p = s
                .mam_query("alice@x", q(901, u64::MAX, 4, false))
                .await
                .unwrap();
            assert_eq!((ids(&p), p.complete), (vec![1000], true));
            // Exactly a full last page is complete too.
            let p = s
                .mam_query("alice@x", q(700, u64::MAX, 4, false))
                .await
                .unwrap();
            assert!(p.complete);

            let mut with = q(0, u64::MAX, 10, false);
            with.with = Some(WithFilter::Bare("bob@x".into()));
            with.count = true;
            let p = s.mam_query("alice@x", with.clone()).await.unwrap();
            assert_eq!(ids(&p), [200, 400, 600, 800, 1000]);
            assert_eq!(p.count, Some(5));
            with.skip = 2;
            with.max = 2;
            let p = s.mam_query("alice@x", with).await.unwrap();
            assert_eq!((ids(&p), p.complete), (vec![600, 800], false));

            let mut by_ids = q(0, u64::MAX, 10, false);
            by_ids.ids = Some(vec![900, 100, 12345]);
            assert_eq!(
                ids(&s.mam_query("alice@x", by_ids).await.unwrap()),
                [100, 900]
            );

            let mut missing = q(0, u64::MAX, 10, false);
            missing.must_exist = vec![150];
            assert_eq!(
                s.mam_query("alice@x", missing).await,
                Err(StoreError::NotFound)
            );

            assert_eq!(s.mam_bounds("alice@x").await.unwrap(), Some((100, 1000)));
            assert_eq!(
                s.mam_len("al@x").await.unwrap(),
                1,
                "prefix owners stay apart"
            );

            // Expiry in batches, never touching newer rows or other owners.
            assert_eq!(s.mam_expire("alice@x", 450, 3).await.unwrap(), 3);
            assert_eq!(s.mam_expire("alice@x", 450, 3).await.unwrap(), 1);
            assert_eq!(s.mam_expire("alice@x", 450, 3).await.unwrap(), 0);
            assert_eq!(s.mam_bounds("alice@x").await.unwrap(), Some((500, 1000)));

            // New ids stay above everything inserted, and keep growing.
            let a = s
                .mam_append("alice@x", "bob@x", b"<a/>".to_vec())
                .await
                .unwrap();
            let b = s
                .mam_append("alice@x", "bob@x", b"<b/>".to_vec())
                .await
                .unwrap();
            assert!(a > 1000 && b > a);

            assert!(s.delete_account("alice@x").await.unwrap());
            assert_eq!(s.mam_len("alice@x").await.unwrap(), 0);
            assert_eq!(s.mam_len("al@x").await.unwrap(), 1);
            assert_eq!(
                s.mam_append("alice@x", "bob@x", vec![]).await,
                Err(StoreError::NotFound)
            );
        });
    }

    #[test]
    fn entry_round_trip() {
        let buf = encode_entry("bob@x/r", b"<message/>");
        let e = decode_entry(7, &buf, "a@x").unwrap();
        assert_eq!(e.with, "bob@x/r");
        assert_eq!(e.stanza, b"<message/>");
        assert!(decode_entry(7, &buf[..5], "a@x").is_err());
    }

    #[test]
    fn bare_filter_matches_resources_not_prefixes() {
        let f = WithFilter::Bare("bob@x".into());
        assert!(f.matches("bob@x"));
        assert!(f.matches("bob@x/phone"));
        assert!(!f.matches("bob@xy"));
        assert!(!f.matches("bob@x.org/r"));
        let f = WithFilter::Exact("bob@x/phone".into());
        assert!(f.matches("bob@x/phone"));
        assert!(!f.matches("bob@x/laptop"));
    }
}
