//! Persistent XEP-0045 rooms: room bare JID → the room as the MUC service encoded it
//! (configuration, affiliations, subject). The store does not look inside. A room's archive
//! lives in `mam_v1` under the room's JID as owner, and goes with the room.

use redb::ReadableTable;

use super::schema::{MAM, MUC_ROOMS};
use super::{Store, StoreError};

impl Store {
    /// Every stored room.
    pub async fn muc_rooms(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.read(|txn| {
            let t = txn.open_table(MUC_ROOMS)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                out.push((k.value().to_string(), v.value().to_vec()));
            }
            Ok(out)
        })
        .await
    }

    /// Stores (or replaces) a room.
    pub async fn muc_room_set(&self, room: &str, data: Vec<u8>) -> Result<(), StoreError> {
        let room = room.to_string();
        self.write(move |txn| {
            txn.open_table(MUC_ROOMS)?
                .insert(room.as_str(), data.as_slice())?;
            Ok(())
        })
        .await
    }

    /// Forgets a room (it is no longer persistent); its archive stays while it exists.
    pub async fn muc_room_unset(&self, room: &str) -> Result<(), StoreError> {
        let room = room.to_string();
        self.write(move |txn| {
            txn.open_table(MUC_ROOMS)?.remove(room.as_str())?;
            Ok(())
        })
        .await
    }

    /// Deletes a room and its archive (the room was destroyed).
    pub async fn muc_room_delete(&self, room: &str) -> Result<(), StoreError> {
        let room = room.to_string();
        self.write(move |txn| {
            txn.open_table(MUC_ROOMS)?.remove(room.as_str())?;
            let mut mam = txn.open_table(MAM)?;
            let ids: Vec<u64> = mam
                .range((room.as_str(), 0)..=(room.as_str(), u64::MAX))?
                .map(|r| r.map(|(k, _)| k.value().1))
                .collect::<Result<_, _>>()?;
            for id in ids {
                mam.remove((room.as_str(), id))?;
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_persist_and_go_with_their_archive() {
        let dir = std::env::temp_dir().join(format!("kith-muc-store-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kith.redb");
        smol::block_on(async {
            let store = Store::open(&path).unwrap();
            store
                .muc_room_set("a@conference.x", b"one".to_vec())
                .await
                .unwrap();
            store
                .muc_room_set("b@conference.x", b"two".to_vec())
                .await
                .unwrap();
            store
                .muc_room_set("a@conference.x", b"three".to_vec())
                .await
                .unwrap();
            // Reopened before the archive writer starts (its thread keeps the file a moment).
            drop(store);
            let store = Store::open(&path).unwrap();
            let rooms = store.muc_rooms().await.unwrap();
            assert_eq!(
                rooms,
                vec![
                    ("a@conference.x".to_string(), b"three".to_vec()),
                    ("b@conference.x".to_string(), b"two".to_vec())
                ]
            );
            let id = store
                .mam_append_room("a@conference.x", "a@conference.x/n", b"<m/>".to_vec())
                .await
                .unwrap();
            assert!(id > 0);
            store.muc_room_unset("a@conference.x").await.unwrap();
            assert_eq!(store.muc_rooms().await.unwrap().len(), 1);
            assert_eq!(store.mam_len("a@conference.x").await.unwrap(), 1);
            store
                .muc_room_set("a@conference.x", b"four".to_vec())
                .await
                .unwrap();
            store.muc_room_delete("a@conference.x").await.unwrap();
            assert_eq!(store.muc_rooms().await.unwrap().len(), 1);
            assert_eq!(store.mam_len("a@conference.x").await.unwrap(), 0);
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
}
