//! The open data file, and opening it again after a failed write.
//!
//! redb latches the first I/O failure (a full disk, typically): from then on every operation
//! on that `Database`, reads included, fails with `PreviousIo` until the file is closed and
//! opened again, which also repairs it. Left alone, one moment of full disk would stop logins
//! and deliveries until an admin restarted kith. So `DataFile` hands out the database, notices
//! I/O failures, and before the next operation (at most once per [`REOPEN_EVERY`]) closes the
//! file and opens it again. While the disk is still full that just fails again; once space is
//! back the next operation works, and nothing committed before is touched (redb's commit is
//! atomic and its repair rolls back to the last complete commit).
//!
//! Invariants:
//! - The file is opened by one `Database` at a time: the old one is dropped, after every
//!   clone handed out has come back, before the new one opens (redb's file lock would refuse
//!   it otherwise, and two page caches on one file would corrupt it).
//! - No operation waits on the reopen for longer than the operations already running take;
//!   if they hold on past [`DRAIN_WAIT`] (a long backup), the old handle stays and the next
//!   attempt comes later.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, DatabaseError};

use super::StoreError;

/// Least time between two attempts to reopen, so a disk that stays full costs one open a
/// second, not one per operation.
pub(super) const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// How long a reopen waits for running operations to give back the old handle.
const DRAIN_WAIT: Duration = Duration::from_secs(10);

/// Opens the data file (again). A closure so the tests can put a failing disk under redb.
pub(super) type Opener = Box<dyn Fn() -> Result<Database, DatabaseError> + Send + Sync>;

pub(super) struct DataFile {
    pub(super) path: PathBuf,
    /// `Err` when a reopen failed (why, for every operation until the next attempt works).
    db: RwLock<Result<Arc<Database>, StoreError>>,
    /// An operation failed with an I/O error since the file was last opened.
    failed: AtomicBool,
    last_reopen: Mutex<Option<Instant>>,
    open: Opener,
}

impl DataFile {
    pub(super) fn new(path: &Path, db: Database, open: Opener) -> DataFile {
        DataFile {
            path: path.to_path_buf(),
            db: RwLock::new(Ok(Arc::new(db))),
            failed: AtomicBool::new(false),
            last_reopen: Mutex::new(None),
            open,
        }
    }

    /// Runs `op` on the database, after reopening it if an earlier operation failed with an
    /// I/O error; an I/O error from `op` marks the file for reopening. Blocking.
    pub(super) fn run<T>(
        &self,
        op: impl FnOnce(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let result = self.handle().and_then(|db| op(&db));
        if matches!(result, Err(StoreError::Io(_))) {
            self.failed.store(true, Ordering::Release);
        }
        result.map_err(|e| e.at(&self.path))
    }

    /// The database, reopened first if an operation failed with an I/O error. For work whose
    /// own errors are not about the data file (a backup writing elsewhere); everything else
    /// goes through [`DataFile::run`]. Blocking.
    pub(super) fn handle(&self) -> Result<Arc<Database>, StoreError> {
        if self.failed.load(Ordering::Acquire) {
            self.reopen();
        }
        self.db
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn reopen(&self) {
        // Holding the write lock makes new operations wait here instead of starting on the
        // failed handle; the ones already running finish on it (failing fast) and give it back.
        let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
        if !self.failed.load(Ordering::Acquire) {
            return; // another thread reopened it while this one waited for the lock
        }
        let mut last = self
            .last_reopen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|t| t.elapsed() < REOPEN_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        // An `Err` slot is a reopen that failed before: its error was logged then, and is not
        // logged again at every retry while the disk stays full.
        let first_failure = slot.is_ok();
        let closed = Err(StoreError::Io("the data file is being reopened".into()));
        if let Ok(old) = std::mem::replace(&mut *slot, closed) {
            match wait_for_sole_owner(old, DRAIN_WAIT) {
                Ok(db) => drop(db),
                Err(old) => {
                    log::warn!(
                        "store: data file {} not reopened yet: operations still hold it \
                         after {}s; trying again later",
                        self.path.display(),
                        DRAIN_WAIT.as_secs()
                    );
                    *slot = Ok(old);
                    return;
                }
            }
        }
        match (self.open)() {
            Ok(db) => {
                *slot = Ok(Arc::new(db));
                self.failed.store(false, Ordering::Release);
                log::info!(
                    "store: data file {} reopened after a failed write; storage works again",
                    self.path.display()
                );
            }
            Err(e) => {
                let e = StoreError::from(e);
                if first_failure {
                    log::error!(
                        "store: cannot reopen data file {} after a failed write: {e}; \
                         trying again every {}s while there is work",
                        self.path.display(),
                        REOPEN_EVERY.as_secs()
                    );
                }
                *slot = Err(e);
            }
        }
    }
}

/// Waits until `db` is the last handle on the database, giving it back if that takes longer
/// than `wait`.
fn wait_for_sole_owner(mut db: Arc<Database>, wait: Duration) -> Result<Database, Arc<Database>> {
    let deadline = Instant::now() + wait;
    loop {
        match Arc::try_unwrap(db) {
            Ok(db) => return Ok(db),
            Err(shared) if Instant::now() >= deadline => return Err(shared),
            Err(shared) => db = shared,
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
