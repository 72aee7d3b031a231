//! The network edge: listeners, TLS and certificates (ACME), and DNS. Turns sockets into byte streams for `session`; knows
//! nothing about XML or stanzas.

pub mod acme;
pub mod connect;
pub mod dns;
pub mod listener;
pub mod per_ip;
pub mod record;
pub mod slim;
pub mod tls;
pub mod trust;

use std::time::Instant;

/// `io` unless `deadline` passes first, then `TimedOut`: the one bound on a handshake, a
/// connect or a read that may never finish.
pub async fn with_deadline<T>(
    io: impl std::future::Future<Output = std::io::Result<T>>,
    deadline: Instant,
) -> std::io::Result<T> {
    futures_lite::FutureExt::or(io, async {
        smol::Timer::at(deadline).await;
        Err(std::io::ErrorKind::TimedOut.into())
    })
    .await
}
