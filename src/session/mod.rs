//! Async drivers: the only place where sockets meet the pure layers (framer, SASL, stanzas).

pub mod c2s;
pub mod component;
pub mod csi;
pub mod rate;
pub mod s2s;
pub mod sasl2;
pub mod sm;
pub mod stream;
