//! Account operations shared by the CLI (server stopped: store opened directly) and the admin
//! socket (server running): validation of the JID, password derivation, and the store calls.
//! Passwords are turned into SCRAM keys here and never stored or logged.

use std::fmt;

use crate::jid::BareJid;
use crate::sasl;
use crate::store::{Store, StoreError};

/// Account flag: an admin, like the accounts in the config's `admins` (set by admin invites).
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

pub(crate) fn creds_blob(password: &str) -> Result<Vec<u8>, AccountError> {
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

/// Whether `jid` is an admin: listed in `admins`, or made one by an admin invite.
pub async fn is_admin(srv: &crate::server::Server, jid: &BareJid) -> bool {
    if srv.config.admins.iter().any(|a| a == jid.as_str()) {
        return true;
    }
    match srv.store.account(jid.as_ref()).await {
        Ok(Some(a)) => a.flags & FLAG_ADMIN != 0,
        Ok(None) => false,
        Err(e) => {
            log::error!("store: cannot read account {jid}: {e}");
            false
        }
    }
}
