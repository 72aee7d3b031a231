//! `StoreError`: what can go wrong in the store, in words an admin can act on.
//!
//! Owns the mapping from redb's error types to ours; no other module sees a redb error. The
//! texts are for the operator (log lines, `kith check`); a peer only ever sees a generic
//! `internal-server-error` built from these by the service layer.

use std::fmt;
use std::path::PathBuf;

/// Errors of every [`super::Store`] operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The account (or other row the operation needs) does not exist.
    NotFound,
    /// An account with this bare JID already exists (the JID is named).
    AlreadyExists(String),
    /// The per-account limit (offline queue length) is reached; nothing was written.
    QuotaExceeded,
    /// A value in the data file could not be decoded, or the file's layout is not one this
    /// version understands. The text names the table and key.
    Corrupt(String),
    /// Another process (usually a running `kith run`) holds the data file's lock.
    Locked(PathBuf),
    /// The operating system refused a read or write. The text carries the OS message; a full
    /// disk is reported as "disk full while writing …" (see [`StoreError::is_disk_full`]).
    Io(String),
    /// The data file was written by a newer kith whose schema this build cannot read.
    Newer { found: u64, supported: u64 },
}

impl StoreError {
    /// True when the failure was the disk (or the user's quota) running out of space, so the
    /// caller can say so instead of a generic error, and the admin knows what to fix.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::Io(msg) if msg.starts_with(DISK_FULL_PREFIX))
    }

    /// Adds the data file's path to I/O and damage reports, which are useless to an admin
    /// without it.
    pub(crate) fn at(self, path: &std::path::Path) -> StoreError {
        match self {
            StoreError::Io(msg) => StoreError::Io(format!("{msg} (data file {})", path.display())),
            StoreError::Corrupt(msg) => {
                StoreError::Corrupt(format!("{msg} (data file {})", path.display()))
            }
            other => other,
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotFound => f.write_str("no such account"),
            StoreError::AlreadyExists(jid) => write!(f, "account {jid} already exists"),
            StoreError::QuotaExceeded => f.write_str("storage quota for this account is full"),
            StoreError::Corrupt(msg) => {
                write!(
                    f,
                    "data file is damaged or not kith's: {msg}; restore a backup"
                )
            }
            StoreError::Locked(path) => write!(
                f,
                "data file {} is in use by another process; is kith already running? \
                 stop it first, or use the running server's admin commands",
                path.display()
            ),
            StoreError::Io(msg) => f.write_str(msg),
            StoreError::Newer { found, supported } => write!(
                f,
                "data dir was written by a newer kith (schema {found}); upgrade kith or restore a \
                 backup (this kith reads schema {supported})"
            ),
        }
    }
}

impl std::error::Error for StoreError {}

const DISK_FULL_PREFIX: &str = "disk full while writing the data file";

/// Linux errno values for "no space left" and "disk quota exceeded"; `ErrorKind::StorageFull`
/// covers both on current std, the raw numbers are a fallback for wrapped errors.
const ENOSPC: i32 = 28;
const EDQUOT: i32 = 122;

fn io_error(e: &std::io::Error) -> StoreError {
    let full = e.kind() == std::io::ErrorKind::StorageFull
        || matches!(e.raw_os_error(), Some(ENOSPC) | Some(EDQUOT));
    if e.kind() == std::io::ErrorKind::InvalidData {
        // redb's "Not a redb database: magic number mismatch" and friends.
        return StoreError::Corrupt(e.to_string());
    }
    if full {
        StoreError::Io(format!(
            "{DISK_FULL_PREFIX}: {e}; free some space (kith carries on by itself once there is room)"
        ))
    } else {
        StoreError::Io(format!("I/O error on the data file: {e}"))
    }
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> StoreError {
        match e {
            redb::Error::Io(io) => io_error(&io),
            // redb refuses every operation after a failed write until the file is reopened,
            // which `file::DataFile` does before the next one (at most once a second).
            redb::Error::PreviousIo => StoreError::Io(
                "an earlier write to the data file failed (disk full or I/O error); \
                 kith opens it again once the cause is fixed"
                    .into(),
            ),
            redb::Error::DatabaseAlreadyOpen => StoreError::Locked(PathBuf::new()),
            redb::Error::Corrupted(msg) => StoreError::Corrupt(msg),
            redb::Error::UpgradeRequired(v) => StoreError::Corrupt(format!(
                "file uses redb file format {v}, which this kith cannot read"
            )),
            e @ (redb::Error::TableTypeMismatch { .. }
            | redb::Error::TableIsMultimap(_)
            | redb::Error::TableIsNotMultimap(_)
            | redb::Error::TypeDefinitionChanged { .. }
            | redb::Error::TableDoesNotExist(_)) => {
                StoreError::Corrupt(format!("unexpected table layout: {e}"))
            }
            // Everything else is a bug in this module (poisoned transaction, savepoints we do not
            // use); report it as an I/O-class failure with redb's text for the bug report.
            other => StoreError::Io(format!("internal storage error: {other}")),
        }
    }
}

macro_rules! via_redb_error {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> StoreError {
                StoreError::from(redb::Error::from(e))
            }
        }
    )*};
}

via_redb_error!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_is_recognised_and_actionable() {
        let e = StoreError::from(redb::Error::Io(std::io::Error::from_raw_os_error(ENOSPC)));
        assert!(e.is_disk_full(), "{e}");
        let text = e
            .at(std::path::Path::new("/var/lib/kith/kith.redb"))
            .to_string();
        assert!(text.starts_with("disk full while writing"), "{text}");
        assert!(text.contains("/var/lib/kith/kith.redb"), "{text}");

        let other = StoreError::from(redb::Error::Io(std::io::Error::from_raw_os_error(5)));
        assert!(!other.is_disk_full());
    }

    #[test]
    fn newer_schema_text() {
        let text = StoreError::Newer {
            found: 3,
            supported: 1,
        }
        .to_string();
        assert!(
            text.starts_with(
                "data dir was written by a newer kith (schema 3); upgrade kith or restore a backup"
            ),
            "{text}"
        );
        assert!(text.contains("upgrade kith or restore a backup"), "{text}");
    }
}
