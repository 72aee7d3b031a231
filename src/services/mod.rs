//! What the server does on behalf of accounts and of itself: roster, presence, offline storage,
//! discovery and the small informational XEPs. Services see stanzas and the store, never
//! sockets; they reply through `router`.

pub mod disco;
pub mod info;
pub mod iq;
pub mod mam;
pub mod message;
pub mod offline;
pub mod presence;
pub mod roster;
