//! Server-to-server federation (RFC 6120 §13.7, XEP-0220, XEP-0178): the pure
//! building blocks a driver in `session/` will run (issue #3).
//!
//! Owns: dialback keys and elements (`dialback.rs`), the RFC 6125 check of a
//! peer certificate against a domain (`names.rs`), and the negotiation
//! decisions of incoming and outgoing s2s streams as state machines
//! (`stream.rs`).
//!
//! Must not know: sockets, TLS libraries, DNS, clocks or the store. Facts
//! such as "TLS is up" or "the peer certificate is valid for this domain" are
//! passed in; decisions come out as values the driver performs.

pub mod dialback;
pub mod names;
pub mod stream;

/// The content namespace of server-to-server streams (RFC 6120 §4.8.2).
pub const NS_SERVER: &str = "jabber:server";
