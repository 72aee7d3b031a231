//! Records of files shared through XEP-0363 HTTP File Upload: per upload id its owner, name,
//! media type, size and creation time, with two indexes (per owner for quotas, by age for
//! expiry). The file bytes are not here: the upload service keeps them under `DATA/upload/`,
//! named by the id; the store only says which ids exist.
//!
//! Invariants: the three tables always agree (every write touches all of them in one
//! transaction); an upload record exists only under an existing account.

use redb::{ReadableTable, WriteTransaction};

use super::codec::{decode_upload, encode_upload, Upload};
use super::schema::{owner_end, UPLOADS, UPLOADS_BY_OWNER, UPLOADS_BY_TIME};
use super::{corrupt, require_account, Store, StoreError};

impl Store {
    /// Records a completed upload. `AlreadyExists(id)` if the id is taken, `NotFound` when the
    /// owner's account is gone (it was deleted while the file was uploading).
    pub async fn upload_add(&self, id: &str, upload: Upload) -> Result<(), StoreError> {
        let id = id.to_string();
        self.write(move |txn| {
            require_account(txn, &upload.owner)?;
            let mut uploads = txn.open_table(UPLOADS)?;
            if uploads.get(id.as_str())?.is_some() {
                return Err(StoreError::AlreadyExists(id));
            }
            uploads.insert(id.as_str(), encode_upload(&upload).as_slice())?;
            txn.open_table(UPLOADS_BY_OWNER)?
                .insert((upload.owner.as_str(), id.as_str()), upload.size)?;
            txn.open_table(UPLOADS_BY_TIME)?
                .insert((upload.created_unix, id.as_str()), ())?;
            Ok(())
        })
        .await
    }

    /// The record of one upload, `None` if there is none (never uploaded, expired, deleted).
    pub async fn upload(&self, id: &str) -> Result<Option<Upload>, StoreError> {
        let id = id.to_string();
        self.read(move |txn| {
            let t = txn.open_table(UPLOADS)?;
            let row = t.get(id.as_str())?;
            row.map(|v| decode_upload(v.value()).map_err(|e| corrupt("uploads", &id, e)))
                .transpose()
        })
        .await
    }

    /// Bytes the owner has stored, summed over their uploads.
    pub async fn upload_usage(&self, owner: &str) -> Result<u64, StoreError> {
        let owner = owner.to_string();
        self.read(move |txn| {
            let t = txn.open_table(UPLOADS_BY_OWNER)?;
            let end = owner_end(&owner);
            let mut total = 0u64;
            for row in t.range((owner.as_str(), "")..(end.as_str(), ""))? {
                total = total.saturating_add(row?.1.value());
            }
            Ok(total)
        })
        .await
    }

    /// Deletes up to `limit` records of uploads created before `cutoff_unix`, oldest first,
    /// and returns their ids so the caller can delete the files.
    pub async fn upload_expire(
        &self,
        cutoff_unix: u64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.write(move |txn| {
            let mut by_time = txn.open_table(UPLOADS_BY_TIME)?;
            let mut expired = Vec::new();
            for row in by_time.range((0, "")..(cutoff_unix, ""))?.take(limit) {
                let (k, _) = row?;
                let (created, id) = k.value();
                expired.push((created, id.to_string()));
            }
            let mut uploads = txn.open_table(UPLOADS)?;
            let mut by_owner = txn.open_table(UPLOADS_BY_OWNER)?;
            for (created, id) in &expired {
                by_time.remove((*created, id.as_str()))?;
                let meta = uploads.remove(id.as_str())?;
                if let Some(meta) = meta {
                    let u = decode_upload(meta.value()).map_err(|e| corrupt("uploads", id, e))?;
                    by_owner.remove((u.owner.as_str(), id.as_str()))?;
                }
            }
            Ok(expired.into_iter().map(|(_, id)| id).collect())
        })
        .await
    }
}

/// Removes every upload record of `owner` (account deletion), in the caller's transaction.
pub(crate) fn delete_owner(txn: &WriteTransaction, owner: &str) -> Result<(), StoreError> {
    let mut by_owner = txn.open_table(UPLOADS_BY_OWNER)?;
    let end = owner_end(owner);
    let mut ids = Vec::new();
    for row in by_owner.range((owner, "")..(end.as_str(), ""))? {
        ids.push(row?.0.value().1.to_string());
    }
    by_owner.retain_in((owner, "")..(end.as_str(), ""), |_, _| false)?;
    let mut uploads = txn.open_table(UPLOADS)?;
    let mut by_time = txn.open_table(UPLOADS_BY_TIME)?;
    for id in ids {
        let meta = uploads.remove(id.as_str())?;
        if let Some(meta) = meta {
            let u = decode_upload(meta.value()).map_err(|e| corrupt("uploads", &id, e))?;
            by_time.remove((u.created_unix, id.as_str()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (Store, std::path::PathBuf) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kith-upload-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        (Store::open(&dir.join("kith.redb")).unwrap(), dir)
    }

    fn up(owner: &str, size: u64, created_unix: u64) -> Upload {
        Upload {
            owner: owner.into(),
            name: "f.txt".into(),
            content_type: "text/plain".into(),
            size,
            created_unix,
        }
    }

    #[test]
    fn usage_expiry_and_account_deletion() {
        let (s, dir) = store();
        smol::block_on(async {
            s.create_account("alice@x", vec![]).await.unwrap();
            s.create_account("al@x", vec![]).await.unwrap();
            s.upload_add("a1", up("alice@x", 10, 100)).await.unwrap();
            s.upload_add("a2", up("alice@x", 20, 200)).await.unwrap();
            s.upload_add("b1", up("al@x", 5, 150)).await.unwrap();
            assert!(matches!(
                s.upload_add("a1", up("alice@x", 1, 1)).await,
                Err(StoreError::AlreadyExists(_))
            ));
            assert!(matches!(
                s.upload_add("z", up("nobody@x", 1, 1)).await,
                Err(StoreError::NotFound)
            ));
            assert_eq!(s.upload_usage("alice@x").await.unwrap(), 30);
            assert_eq!(s.upload_usage("al@x").await.unwrap(), 5);
            assert_eq!(s.upload("a2").await.unwrap(), Some(up("alice@x", 20, 200)));

            // Oldest first, `limit` at a time, strictly before the cutoff.
            assert_eq!(s.upload_expire(200, 1).await.unwrap(), ["a1"]);
            assert_eq!(s.upload_expire(200, 10).await.unwrap(), ["b1"]);
            assert!(s.upload_expire(200, 10).await.unwrap().is_empty());
            assert_eq!(s.upload("a1").await.unwrap(), None);
            assert_eq!(s.upload_usage("alice@x").await.unwrap(), 20);
            assert_eq!(s.upload_usage("al@x").await.unwrap(), 0);

            assert!(s.delete_account("alice@x").await.unwrap());
            assert_eq!(s.upload("a2").await.unwrap(), None);
            assert_eq!(s.upload_usage("alice@x").await.unwrap(), 0);
            assert!(s.upload_expire(u64::MAX, 10).await.unwrap().is_empty());
        });
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }
}
