//! Accept loops: one task per listening socket, one task per connection. A panic in a
//! connection task is caught and logged with the connection's tag; it never takes down the
//! server or other sessions.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::FutureExt as _;
use smol::net::{TcpListener, TcpStream};
use smol::Executor;

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
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let id = srv.next_conn_id();
                let srv = srv.clone();
                ex.spawn(connection(srv, tcp, peer, mode, id)).detach();
            }
            Err(e) => {
                // Usually EMFILE: out of file descriptors. Back off instead of spinning.
                log::warn!("accept failed: {e}; retrying in 100 ms");
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(srv: Arc<Server>, tcp: TcpStream, peer: SocketAddr, mode: Mode, id: u64) {
    let max = srv.config.limits.connections_per_ip;
    let Some(_place) = srv.per_ip.enter(peer.ip(), max) else {
        log::warn!(
            "c2s#{id}: refused a connection from {}: it already has {max} open ([limits] connections_per_ip)",
            peer.ip()
        );
        refuse(tcp, mode).await;
        return;
    };
    srv.open_conns.fetch_add(1, Ordering::SeqCst);
    let _ = tcp.set_nodelay(true);
    if let Err(e) = keepalive(&tcp) {
        log::debug!("c2s#{id}: cannot enable TCP keepalive: {e}");
    }
    let run = session::c2s::serve(srv.clone(), tcp, peer, mode, id);
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

/// Tells a client over the limit why, where that is possible without TLS: on the STARTTLS
/// port a stream error (RFC 6120 §4.9.1.1 lets it come before the client's header); the
/// direct TLS port is simply closed.
async fn refuse(mut tcp: TcpStream, mode: Mode) {
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
fn keepalive(tcp: &TcpStream) -> std::io::Result<()> {
    use rustix::net::sockopt;
    sockopt::set_socket_keepalive(tcp, true)?;
    sockopt::set_tcp_keepidle(tcp, Duration::from_secs(300))?;
    sockopt::set_tcp_keepintvl(tcp, Duration::from_secs(60))?;
    sockopt::set_tcp_keepcnt(tcp, 5)?;
    Ok(())
}
