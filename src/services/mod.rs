//! What the server does on behalf of accounts and of itself: roster, presence, offline storage,
//! discovery and the small informational XEPs. Services see stanzas and the store, never
//! sockets; they reply through `router`.

pub mod adhoc;
pub mod announce;
pub mod blocking;
pub mod bookmarks;
pub mod caps;
pub mod carbons;
pub mod disco;
pub mod extdisco;
pub mod fast;
pub mod http_roster;
pub mod info;
pub mod iq;
pub mod mam;
pub mod message;
pub mod muc;
pub mod offline;
pub mod pep;
pub mod pep_remote;
pub mod presence;
pub mod private;
pub mod proxy65;
pub mod pubsub;
pub mod push;
pub mod push_ext;
pub mod register;
pub mod roster;
pub mod upload;
pub mod vcard;
