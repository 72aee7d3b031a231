//! The network edge: listeners, TLS and DNS. Turns sockets into byte streams for `session`; knows
//! nothing about XML or stanzas.

pub mod dns;
pub mod listener;
pub mod tls;
pub mod trust;
