//! Accept loops: one task per listening socket, one task per connection. A panic in a
//! connection task is caught and logged with the connection's tag; it never takes down the
//! server or other sessions.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::FutureExt as _;
use smol::net::TcpListener;
use smol::{Async, Executor};

use crate::net::per_ip::Place;
use crate::server::Server;
use crate::session;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// RFC 6120 STARTTLS (port 5222): plaintext until `<starttls/>`, which is required.
    StartTls,
    /// XEP-0368 direct TLS (port 5223).
    DirectTls,
}

pub async fn accept_loop(
    ex: Arc<Executor<'static>>,
    srv: Arc<Server>,
    listener: TcpListener,
    mode: Mode,
) {
    // The bare reactor handle, not smol's `TcpStream`: that one keeps room for two pending
    // readiness futures (120 bytes against 16), for as long as the connection lives.
    let listener: Arc<Async<std::net::TcpListener>> = listener.into();
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let id = srv.next_conn_id();
                let srv = srv.clone();
                let accepted = Box::new(Accepted {
                    srv,
                    tcp,
                    peer,
                    mode,
                    id,
                });
                ex.spawn(connection(accepted)).detach();
            }
            Err(e) => {
                // Usually EMFILE: out of file descriptors. Back off instead of spinning.
                log::warn!("accept failed: {e}; retrying in 100 ms");
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The TCP socket of a client connection, as the reactor knows it.
pub type Tcp = Async<std::net::TcpStream>;

/// What `accept` gave, boxed and handed as is to `c2s::serve`: the arguments of an async fn
/// keep their place in its future for the whole connection (even once moved out), and a box
/// pointer is the smallest place.
pub struct Accepted {
    pub srv: Arc<Server>,
    pub tcp: Tcp,
    pub peer: SocketAddr,
    pub mode: Mode,
    pub id: u64,
}

async fn connection(accepted: Box<Accepted>) {
    // Our own handle: the per-address place borrows it while the session runs. Fields are
    // read through the box, never borrowed from a local: a local borrowed before an await
    // keeps its place in this future for the connection's whole life.
    let srv = accepted.srv.clone();
    let id = accepted.id;
    let Some(_place) = enter(&srv, accepted.peer, id) else {
        let Accepted { tcp, mode, .. } = *accepted;
        refuse(tcp, mode).await;
        return;
    };
    srv.open_conns.fetch_add(1, Ordering::SeqCst);
    tune(&accepted.tcp, id);
    let run = session::c2s::serve(accepted);
    if let Err(panic) = AssertUnwindSafe(run).catch_unwind().await {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        log::error!("c2s#{id}: bug: session task panicked: {msg}; the connection was dropped");
    }
    srv.open_conns.fetch_sub(1, Ordering::SeqCst);
}

/// A place in the per-address count, or `None` (logged) when `peer`'s address is at the limit.
fn enter(srv: &Server, peer: SocketAddr, id: u64) -> Option<Place<'_>> {
    let max = srv.config.limits.connections_per_ip;
    let place = srv.per_ip.enter(peer.ip(), max);
    if place.is_none() {
        log::warn!(
            "c2s#{id}: refused a connection from {}: it already has {max} open ([limits] connections_per_ip)",
            peer.ip()
        );
    }
    place
}

/// Socket options for a client connection: no Nagle delay (stanzas are small and
/// interactive), and keepalive.
fn tune(tcp: &Tcp, id: u64) {
    let _ = tcp.get_ref().set_nodelay(true);
    if let Err(e) = keepalive(tcp) {
        log::debug!("c2s#{id}: cannot enable TCP keepalive: {e}");
    }
}

/// Tells a client over the limit why, where that is possible without TLS: on the STARTTLS
/// port a stream error (RFC 6120 §4.9.1.1 lets it come before the client's header); the
/// direct TLS port is simply closed.
async fn refuse(mut tcp: Tcp, mode: Mode) {
    use futures_lite::AsyncWriteExt as _;
    if mode == Mode::StartTls {
        let refusal = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
            xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>\
            <stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
            <text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>too many connections from your address</text>\
            </stream:error></stream:stream>";
        let write = async {
            let _ = tcp.write_all(refusal).await;
            let _ = tcp.close().await;
            Ok(())
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let _ = crate::net::with_deadline(write, deadline).await;
    }
}

/// TCP keepalive finds clients that vanished without closing (a phone that lost its network),
/// so their resources don't stay "online" forever. Probing after 5 idle minutes, then every
/// minute, drops a dead peer within about 10 minutes without waking live clients' apps (the
/// kernel answers the probes), which is what Prosody's `tcp_keepalives` does too.
fn keepalive(tcp: &Tcp) -> std::io::Result<()> {
    use rustix::net::sockopt;
    sockopt::set_socket_keepalive(tcp, true)?;
    sockopt::set_tcp_keepidle(tcp, Duration::from_secs(300))?;
    sockopt::set_tcp_keepintvl(tcp, Duration::from_secs(60))?;
    sockopt::set_tcp_keepcnt(tcp, 5)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size_of_output<A, R, F: Fn(A) -> R>(_: &F) -> usize {
        std::mem::size_of::<R>()
    }

    /// The connection future is what an idle session costs (one allocation per connection;
    /// its layout is described under "Memory per session" in ARCHITECTURE.md). It was 2.4 KiB
    /// in two allocations before the session was built in place; a dead copy of a field or an
    /// unboxed phase brings it back over this bound.
    #[test]
    fn the_connection_task_of_an_idle_session_stays_small() {
        let size = size_of_output(&connection);
        assert!(
            size <= 1200,
            "the c2s connection future is {size} bytes; read its layout with \
             RUSTC_BOOTSTRAP=1 cargo rustc --lib -- -Zprint-type-sizes"
        );
    }
}
