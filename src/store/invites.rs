//! Invitations (tokens that let someone create an account) and store-managed circles (shared
//! roster groups). The token is the key; what it means (link, expiry policy, roster effects)
//! is `crate::invites`'s business.
//!
//! Invariants: an account created with an invite, the invite's use and the new member's
//! circles are one transaction, so a token is never used twice by two racing registrations and
//! never consumed by a registration that failed; an expired or used-up invite is never
//! returned by [`Store::create_account_with_invite`].

use redb::{ReadableTable, WriteTransaction};

use super::codec::{decode_invite, encode_invite, Invite};
use super::schema::{ACCOUNTS, CIRCLES, INVITES};
use super::{corrupt, insert_new_account, now_unix, Store, StoreError};

impl Store {
    /// Stores a new invite. `AlreadyExists` if the token is taken (a 128-bit random token
    /// never is; this only guards against a broken random source).
    pub async fn invite_add(&self, token: &str, invite: Invite) -> Result<(), StoreError> {
        let token = token.to_string();
        self.write(move |txn| {
            let mut t = txn.open_table(INVITES)?;
            if t.get(token.as_str())?.is_some() {
                return Err(StoreError::AlreadyExists(token));
            }
            t.insert(token.as_str(), encode_invite(&invite).as_slice())?;
            Ok(())
        })
        .await
    }

    /// The invite of `token`, expired or not (the caller tells the user which).
    pub async fn invite(&self, token: &str) -> Result<Option<Invite>, StoreError> {
        let token = token.to_string();
        self.read(move |txn| {
            let t = txn.open_table(INVITES)?;
            let row = t.get(token.as_str())?;
            row.map(|v| decode_invite(v.value()).map_err(|e| corrupt("invites", "(token)", e)))
                .transpose()
        })
        .await
    }

    /// Every stored invite with its token, in token order.
    pub async fn invites(&self) -> Result<Vec<(String, Invite)>, StoreError> {
        self.read(|txn| {
            let t = txn.open_table(INVITES)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                let invite =
                    decode_invite(v.value()).map_err(|e| corrupt("invites", "(token)", e))?;
                out.push((k.value().to_string(), invite));
            }
            Ok(out)
        })
        .await
    }

    /// Removes an invite; returns whether it existed.
    pub async fn invite_remove(&self, token: &str) -> Result<bool, StoreError> {
        let token = token.to_string();
        self.write(move |txn| {
            let was = txn.open_table(INVITES)?.remove(token.as_str())?.is_some();
            Ok(was)
        })
        .await
    }

    /// Removes every invite that expired before `now`; returns how many.
    pub async fn invites_expire(&self, now: u64) -> Result<usize, StoreError> {
        self.write(move |txn| {
            let mut t = txn.open_table(INVITES)?;
            let mut n = 0;
            t.retain(|_, v| match decode_invite(v) {
                Ok(i) if i.expires_unix < now => {
                    n += 1;
                    false
                }
                _ => true,
            })?;
            Ok(n)
        })
        .await
    }

    /// Creates account `jid` (localpart `username`) with `creds` by using invite `token`, in
    /// one transaction: the invite loses one use (kept at zero until it expires), the account gets
    /// `admin_flags` when the invite is an admin invite, and joins the invite's circles.
    /// `Ok(None)` when the token is unknown, expired at `now`, used up or reserved for another
    /// username (nothing is written); `AlreadyExists` when the account exists.
    pub async fn create_account_with_invite(
        &self,
        jid: &str,
        username: &str,
        creds: Vec<u8>,
        token: &str,
        now: u64,
        admin_flags: u32,
    ) -> Result<Option<Invite>, StoreError> {
        let (jid, username, token) = (jid.to_string(), username.to_string(), token.to_string());
        self.write(move |txn| {
            let mut invites = txn.open_table(INVITES)?;
            let invite = match invites.get(token.as_str())? {
                Some(v) => {
                    decode_invite(v.value()).map_err(|e| corrupt("invites", "(token)", e))?
                }
                None => return Ok(None),
            };
            let reserved_for_other = invite.username.as_deref().is_some_and(|u| u != username);
            if invite.expires_unix < now || invite.uses_left == 0 || reserved_for_other {
                return Ok(None);
            }
            let mut accounts = txn.open_table(ACCOUNTS)?;
            insert_new_account(&mut accounts, &jid, creds, now_unix())?;
            if invite.admin && admin_flags != 0 {
                let mut account = match accounts.get(jid.as_str())? {
                    Some(v) => super::codec::decode_account(v.value())
                        .map_err(|e| corrupt("accounts", &jid, e))?,
                    None => return Err(StoreError::NotFound),
                };
                account.flags |= admin_flags;
                accounts.insert(
                    jid.as_str(),
                    super::codec::encode_account(&account).as_slice(),
                )?;
            }
            let mut circles = txn.open_table(CIRCLES)?;
            for g in &invite.groups {
                circles.insert((g.as_str(), jid.as_str()), ())?;
            }
            // A used-up invite stays until it expires, so its page can say "already used"
            // rather than "not found".
            let mut left = invite.clone();
            left.uses_left -= 1;
            invites.insert(token.as_str(), encode_invite(&left).as_slice())?;
            Ok(Some(invite))
        })
        .await
    }

    // ----- circles -----

    /// Adds `member` to `circle`; returns whether it was new.
    pub async fn circle_add(&self, circle: &str, member: &str) -> Result<bool, StoreError> {
        let (circle, member) = (circle.to_string(), member.to_string());
        self.write(move |txn| {
            let mut t = txn.open_table(CIRCLES)?;
            let new = t.insert((circle.as_str(), member.as_str()), ())?.is_none();
            Ok(new)
        })
        .await
    }

    /// Removes `member` from `circle`; returns whether it was a member.
    pub async fn circle_remove(&self, circle: &str, member: &str) -> Result<bool, StoreError> {
        let (circle, member) = (circle.to_string(), member.to_string());
        self.write(move |txn| {
            let mut t = txn.open_table(CIRCLES)?;
            let was = t.remove((circle.as_str(), member.as_str()))?.is_some();
            Ok(was)
        })
        .await
    }

    /// Every (circle, member) pair, ordered by circle then member.
    pub async fn circle_members(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read(|txn| {
            let t = txn.open_table(CIRCLES)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                let (k, _) = row?;
                let (c, m) = k.value();
                out.push((c.to_string(), m.to_string()));
            }
            Ok(out)
        })
        .await
    }
}

/// Removes a deleted account from every circle (part of `delete_account`'s transaction).
/// Circles are few and small, so a scan is fine.
pub(crate) fn leave_circles(txn: &WriteTransaction, jid: &str) -> Result<(), StoreError> {
    txn.open_table(CIRCLES)?.retain(|(_, m), _| m != jid)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempdir::Dir, Store) {
        let dir = tempdir::Dir::new();
        let store = Store::open(&dir.0.join("kith.redb")).unwrap();
        (dir, store)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                let p = std::env::temp_dir().join(format!(
                    "kith-invites-{}-{}",
                    std::process::id(),
                    fastrand::u64(..)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn invite(uses: u32) -> Invite {
        Invite {
            created_by: "alice@d".into(),
            created_unix: 100,
            expires_unix: 200,
            uses_left: uses,
            admin: true,
            groups: vec!["family".into()],
            username: None,
        }
    }

    #[test]
    fn an_invite_is_used_once_per_use_and_joins_its_circle() {
        let (_d, s) = store();
        smol::block_on(async {
            s.invite_add("tok", invite(2)).await.unwrap();
            let used = s
                .create_account_with_invite("bob@d", "bob", vec![1], "tok", 150, 1)
                .await
                .unwrap();
            assert_eq!(used.unwrap().created_by, "alice@d");
            assert_eq!(s.account("bob@d").await.unwrap().unwrap().flags, 1);
            assert_eq!(s.invite("tok").await.unwrap().unwrap().uses_left, 1);
            assert_eq!(
                s.circle_members().await.unwrap(),
                [("family".to_string(), "bob@d".to_string())]
            );
            // An existing account consumes nothing.
            let again = s
                .create_account_with_invite("bob@d", "bob", vec![1], "tok", 150, 1)
                .await;
            assert!(matches!(again, Err(StoreError::AlreadyExists(_))));
            assert_eq!(s.invite("tok").await.unwrap().unwrap().uses_left, 1);
            s.create_account_with_invite("carol@d", "carol", vec![1], "tok", 150, 1)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(s.invite("tok").await.unwrap().unwrap().uses_left, 0);
            let r = s
                .create_account_with_invite("dan@d", "dan", vec![1], "tok", 150, 1)
                .await
                .unwrap();
            assert!(r.is_none(), "used up");
            // Deleting an account takes it out of its circles.
            s.delete_account("bob@d").await.unwrap();
            assert_eq!(
                s.circle_members().await.unwrap(),
                [("family".to_string(), "carol@d".to_string())]
            );
        });
    }

    #[test]
    fn expired_or_reserved_invites_create_nothing() {
        let (_d, s) = store();
        smol::block_on(async {
            s.invite_add("old", invite(1)).await.unwrap();
            let r = s
                .create_account_with_invite("bob@d", "bob", vec![1], "old", 201, 0)
                .await
                .unwrap();
            assert!(r.is_none());
            assert!(s.account("bob@d").await.unwrap().is_none());
            let reserved = Invite {
                username: Some("dave".into()),
                ..invite(1)
            };
            s.invite_add("res", reserved).await.unwrap();
            let r = s
                .create_account_with_invite("bob@d", "bob", vec![1], "res", 150, 0)
                .await
                .unwrap();
            assert!(r.is_none());
            assert!(s
                .create_account_with_invite("x@d", "x", vec![1], "nope", 150, 0)
                .await
                .unwrap()
                .is_none());
            assert_eq!(s.invites_expire(201).await.unwrap(), 2);
            s.invite_add(
                "later",
                Invite {
                    expires_unix: 300,
                    ..invite(1)
                },
            )
            .await
            .unwrap();
            assert_eq!(s.invites_expire(201).await.unwrap(), 0);
            s.invite_remove("later").await.unwrap();
            assert!(s.invites().await.unwrap().is_empty());
        });
    }
}
