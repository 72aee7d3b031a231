//! The network edge: listeners, TLS and certificates (ACME), and DNS. Turns sockets into byte streams for `session`; knows
//! nothing about XML or stanzas.

pub mod acme;
pub mod dns;
pub mod listener;
pub mod tls;
pub mod trust;
