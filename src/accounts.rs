//! Account operations shared by the CLI (server stopped: store opened directly) and the admin
//! socket (server running): validation of the JID, password derivation, and the store calls.
//! Passwords are turned into SCRAM keys here and never stored or logged.

use std::fmt;

use crate::jid::BareJid;
use crate::sasl;
use crate::store::{Store, StoreError};

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
    Store(StoreError),
}

impl fmt::Display for AccountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccountError::BadJid(m) | AccountError::BadPassword(m) => f.write_str(m),
            AccountError::Exists(j) => write!(f, "account {j} already exists"),
            AccountError::NotFound(j) => write!(f, "no account {j}"),
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

fn creds_blob(password: &str) -> Result<Vec<u8>, AccountError> {
    if password.is_empty() {
        return Err(AccountError::BadPassword("the password is empty".into()));
    }
    let creds = sasl::derive_all(password)
        .map_err(|e| AccountError::BadPassword(format!("unusable password: {e}")))?;
    Ok(sasl::encode_creds(&creds))
}

pub async fn add(store: &Store, jid: &BareJid, password: &str) -> Result<(), AccountError> {
    let password = password.to_string();
    let blob = smol::unblock(move || creds_blob(&password)).await?;
    match store.create_account(jid.as_ref(), blob).await {
        Err(StoreError::AlreadyExists(_)) => Err(AccountError::Exists(jid.to_string())),
        r => Ok(r?),
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

pub async fn list(store: &Store) -> Result<Vec<String>, AccountError> {
    Ok(store.list_accounts().await?)
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
