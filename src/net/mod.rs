//! The network edge: listeners and TLS. Turns sockets into byte streams for `session`; knows
//! nothing about XML or stanzas.

pub mod listener;
pub mod tls;
