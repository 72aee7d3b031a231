//! kith: an XMPP server for friends and family. See ARCHITECTURE.md for the map.

pub mod accounts;
pub mod admin;
pub mod check;
pub mod cli;
pub mod config;
pub mod http;
pub mod jid;
pub mod json;
pub mod logging;
pub mod net;
pub mod roster;
pub mod router;
pub mod s2s;
pub mod sasl;
pub mod secrets;
pub mod server;
pub mod services;
pub mod session;
pub mod sessions;
pub mod setup;
pub mod stanza;
pub mod store;
pub mod time;
pub mod turn;
pub mod user_import;
pub mod xml;
