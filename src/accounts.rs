//! Account operations shared by the CLI (server stopped: store opened directly) and the admin
//! socket (server running): validation of the JID, password derivation, and the store calls.
//! Passwords are turned into SCRAM keys here and never stored or logged.

use std::fmt;

use crate::jid::BareJid;
use crate::sasl;
use crate::store::{Created, Imported, Store, StoreError, TombstoneRule};

/// Account flag: an admin besides those the config's `admins` names (set from the web
/// admin or an admin invitation).
pub const FLAG_ADMIN: u32 = 1;

#[derive(Debug)]
pub enum AccountError {
    /// The JID is not a valid account address of this server.
    BadJid(String),
    BadPassword(String),
    Exists(String),
    NotFound(String),
    /// The name belonged to an account deleted at `deleted_at` (unix seconds), and its
    /// tombstone still holds (see [`Reuse`]).
    Tombstoned {
        jid: String,
        deleted_at: u64,
    },
    NoTombstone(String),
    Store(StoreError),
}

impl fmt::Display for AccountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccountError::BadJid(m) | AccountError::BadPassword(m) => f.write_str(m),
            AccountError::Exists(j) => write!(f, "account {j} already exists"),
            AccountError::NotFound(j) => write!(f, "no account {j}"),
            AccountError::NoTombstone(j) => write!(f, "{j} has no tombstone"),
            AccountError::Tombstoned { jid, deleted_at } => write!(
                f,
                "{jid} belonged to an account deleted at {}; its name stays reserved so that \
                 nobody can pose as that person ([registration] tombstone_ttl). To give the \
                 name out anyway: kith user add --force {jid}",
                crate::time::rfc3339(*deleted_at)
            ),
            AccountError::Store(e) => write!(f, "store: {e}"),
        }
    }
}

impl From<StoreError> for AccountError {
    fn from(e: StoreError) -> Self {
        AccountError::Store(e)
    }
}

/// Parses `jid` as an account of `domain`. A bare localpart (`alice`) means `alice@domain`.
pub fn account_jid(jid: &str, domain: &str) -> Result<BareJid, AccountError> {
    let full = if jid.contains('@') {
        jid.to_string()
    } else {
        format!("{jid}@{domain}")
    };
    let bare = BareJid::parse(&full)
        .map_err(|e| AccountError::BadJid(format!("'{jid}' is not a valid address: {e}")))?;
    if bare.node().is_none() {
        return Err(AccountError::BadJid(format!(
            "'{jid}' has no user part; use user@{domain}"
        )));
    }
    if bare.domain() != domain {
        return Err(AccountError::BadJid(format!(
            "'{jid}' is not on this server's domain {domain}"
        )));
    }
    Ok(bare)
}

pub(crate) fn creds_blob(password: &str) -> Result<Vec<u8>, AccountError> {
    if password.is_empty() {
        return Err(AccountError::BadPassword("the password is empty".into()));
    }
    let creds = sasl::derive_all(password)
        .map_err(|e| AccountError::BadPassword(format!("unusable password: {e}")))?;
    Ok(sasl::encode_creds(&creds))
}

/// Whether a new account may take the name of a deleted one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reuse {
    /// Not while the tombstone is younger than this (`None`: never); the configured
    /// `[registration] tombstone_ttl`, for every creation that is not an explicit admin override.
    AfterTombstone(Option<std::time::Duration>),
    /// The admin said `--force`.
    Force,
}

impl Reuse {
    /// The rule the server's configuration sets.
    pub fn configured(registration: &crate::config::Registration) -> Reuse {
        Reuse::AfterTombstone(registration.tombstone_ttl)
    }

    fn rule(self) -> TombstoneRule {
        match self {
            Reuse::AfterTombstone(ttl) => TombstoneRule::Honour(ttl.map(|d| d.as_secs())),
            Reuse::Force => TombstoneRule::Override,
        }
    }
}

/// Creates an account. Every way of creating one (CLI, admin socket, registration,
/// invitations) goes through here or [`import`], so the tombstone check cannot be skipped by
/// accident.
pub async fn add(
    store: &Store,
    jid: &BareJid,
    password: &str,
    reuse: Reuse,
) -> Result<(), AccountError> {
    let password = password.to_string();
    let blob = smol::unblock(move || creds_blob(&password)).await?;
    match store
        .create_account_checked(jid.as_ref(), blob, reuse.rule())
        .await
    {
        Ok(Created::Yes) => Ok(()),
        Ok(Created::Tombstoned { deleted_at }) => Err(AccountError::Tombstoned {
            jid: jid.to_string(),
            deleted_at,
        }),
        Err(StoreError::AlreadyExists(_)) => Err(AccountError::Exists(jid.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// Whether a tombstone keeps `jid` from a new account under `reuse`. For creation paths that
/// write the account together with more (an invitation's use and circles) instead of through
/// `add`; the name has no account, so no new tombstone can appear between check and insert.
pub async fn name_held(store: &Store, jid: &BareJid, reuse: Reuse) -> Result<bool, AccountError> {
    Ok(match store.tombstone(jid.as_ref()).await? {
        Some(deleted_at) => reuse.rule().holds(deleted_at, crate::time::now_unix()),
        None => false,
    })
}

/// Every name a tombstone keeps from a new account under `reuse` now (for checking a bulk
/// import line by line before deriving anything).
pub async fn names_held(store: &Store, reuse: Reuse) -> Result<Vec<String>, AccountError> {
    let now = crate::time::now_unix();
    let rule = reuse.rule();
    Ok(store
        .tombstones()
        .await?
        .into_iter()
        .filter(|(_, deleted_at)| rule.holds(*deleted_at, now))
        .map(|(jid, _)| jid)
        .collect())
}

/// Creates many accounts with credentials derived already (`kith user import`), in one
/// transaction: all or none, honouring tombstones under `reuse` like [`add`].
pub async fn import(
    store: &Store,
    items: Vec<(String, Vec<u8>)>,
    reuse: Reuse,
) -> Result<(), AccountError> {
    match store.import_accounts(items, reuse.rule()).await {
        Ok(Imported::All) => Ok(()),
        Ok(Imported::Held { jid, deleted_at }) => Err(AccountError::Tombstoned { jid, deleted_at }),
        Err(StoreError::AlreadyExists(jid)) => Err(AccountError::Exists(jid)),
        Err(e) => Err(e.into()),
    }
}

pub async fn passwd(store: &Store, jid: &BareJid, password: &str) -> Result<(), AccountError> {
    let password = password.to_string();
    let blob = smol::unblock(move || creds_blob(&password)).await?;
    match store.set_creds(jid.as_ref(), blob).await {
        Err(StoreError::NotFound) => return Err(AccountError::NotFound(jid.to_string())),
        r => r?,
    }
    // XEP-0484: a new password logs every device out of its FAST tokens.
    store
        .kv_set(jid.as_ref(), crate::services::fast::KV_KEY, None)
        .await?;
    Ok(())
}

pub async fn delete(store: &Store, jid: &BareJid) -> Result<(), AccountError> {
    if store.delete_account(jid.as_ref()).await? {
        Ok(())
    } else {
        Err(AccountError::NotFound(jid.to_string()))
    }
}

/// The names kept from reuse, as "JID<TAB>deletion time (RFC 3339)".
pub async fn tombstones(store: &Store) -> Result<Vec<String>, AccountError> {
    let rows = store.tombstones().await?;
    Ok(rows
        .into_iter()
        .map(|(jid, at)| format!("{jid}\t{}", crate::time::rfc3339(at)))
        .collect())
}

/// Frees a deleted account's name for anyone to take.
pub async fn clear_tombstone(store: &Store, jid: &BareJid) -> Result<(), AccountError> {
    if store.clear_tombstone(jid.as_ref()).await? {
        Ok(())
    } else {
        Err(AccountError::NoTombstone(jid.to_string()))
    }
}

pub async fn list(store: &Store) -> Result<Vec<String>, AccountError> {
    Ok(store.list_accounts().await?)
}

/// When an account was last around: what the admin tools show ("last seen" in `kith user
/// list`, the web admin and XEP-0133's get-user-lastlogin).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    OnlineNow,
    /// The last session ended at this unix time.
    LastLogout(u64),
    Never,
}

/// [`Seen`] for `jid`; `online` is whether it has a session now (the caller knows the
/// sessions, or that no server is running).
pub async fn seen(store: &Store, jid: &str, online: bool) -> Result<Seen, StoreError> {
    if online {
        return Ok(Seen::OnlineNow);
    }
    Ok(match store.last(jid).await? {
        Some((t, _)) => Seen::LastLogout(t),
        None => Seen::Never,
    })
}

/// `online now`, the RFC 3339 time of the last logout, or `never`.
impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Seen::OnlineNow => f.write_str("online now"),
            Seen::LastLogout(t) => f.write_str(&crate::time::rfc3339(*t)),
            Seen::Never => f.write_str("never"),
        }
    }
}

/// Grants or withdraws the admin flag.
pub async fn set_admin(store: &Store, jid: &BareJid, admin: bool) -> Result<(), AccountError> {
    let flags = match store.account(jid.as_ref()).await? {
        Some(a) => a.flags,
        None => return Err(AccountError::NotFound(jid.to_string())),
    };
    let flags = if admin {
        flags | FLAG_ADMIN
    } else {
        flags & !FLAG_ADMIN
    };
    match store.set_flags(jid.as_ref(), flags).await {
        Err(StoreError::NotFound) => Err(AccountError::NotFound(jid.to_string())),
        r => Ok(r?),
    }
}

/// Whether `password` is `jid`'s, checked against the strongest SCRAM keys the account has
/// (a PBKDF2 derivation, so it runs off the executor). A missing account is `false`, like a
/// wrong password: callers must not tell the two apart to whoever typed them.
///
/// An account imported from Prosody has SCRAM-SHA-1 keys only; the first time its password
/// is seen, the missing SHA-256/512 keys are derived and stored.
pub async fn check_password(store: &Store, jid: &BareJid, password: &str) -> bool {
    let all = match store.account(jid.as_ref()).await {
        Ok(Some(a)) => sasl::decode_creds(&a.creds).unwrap_or_default(),
        Ok(None) => return false,
        Err(e) => {
            log::error!("store: cannot read account {jid}: {e}");
            return false;
        }
    };
    let Some(creds) = all.iter().max_by_key(|c| c.hash).cloned() else {
        return false;
    };
    let typed = password.to_string();
    if !smol::unblock(move || sasl::verify_password(&typed, &creds)).await {
        return false;
    }
    if all.len() < sasl::Hash::ALL.len() {
        let typed = password.to_string();
        if let Ok(blob) = smol::unblock(move || creds_blob(&typed)).await {
            match store.set_creds(jid.as_ref(), blob).await {
                Ok(()) => log::info!(
                    "{jid}: credentials upgraded to SCRAM-SHA-1/256/512 at a password login"
                ),
                Err(e) => log::warn!("store: cannot upgrade the credentials of {jid}: {e}"),
            }
        }
    }
    true
}
