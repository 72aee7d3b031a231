//! The built-in STUN/TURN server (RFC 8489, RFC 8656) for audio and video calls: clients get
//! its address and time-limited credentials through XEP-0215 (`services::extdisco`).
//!
//! - `stun.rs` — **pure** message codec (attributes, integrity, fingerprint, ChannelData).
//! - `md5.rs` — **pure** MD5, only for the long-term credential key.
//! - `alloc.rs` — **pure** allocation state and the rules (credentials, nonces, forbidden
//!   peers, expiry, bandwidth), time passed in.
//! - `server.rs` — the sockets: UDP and TCP listeners, relayed UDP sockets, expiry sweep.
//! - `check.rs` — `kith check turn`: a client that exercises a TURN server end to end.

pub mod alloc;
pub mod check;
pub mod md5;
pub mod server;
pub mod stun;
