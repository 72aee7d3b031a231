//! RFC 7395 (An XMPP Subprotocol for WebSocket) at `/xmpp-websocket`.
//!
//! The handshake (subprotocol `xmpp` required, §3.1) is answered here; the session is the
//! c2s session over a `pipe`: each client message is one element (§3.3.3), translated by
//! `from_client` (`<open/>` becomes a stream header, `<close/>` the stream's end tag); each
//! frame of server output becomes one message by `to_client`. The transport is inside
//! HTTPS, so no STARTTLS is offered; there is no channel binding data we could prove for
//! it, so no SCRAM-PLUS either.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use async_tungstenite::tungstenite::handshake::derive_accept_key;
use async_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures_lite::{FutureExt as _, StreamExt as _};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use super::body::{self, Body};
use super::pipe::{self, FromServer, ToServer};
use super::Conn;
use crate::stanza::ns;
use crate::xml::{escape_attr_value, Element, Frame, Limits};

/// What one client message means for the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum FromClient {
    /// `<open/>`: the stream header to give c2s.
    Open(String),
    /// `<close/>`: the end of the client's stream.
    Close,
    /// A stanza or nonza, passed on as sent.
    Element,
    /// Not one well-formed element (or a binary message): a stream error.
    Invalid,
}

/// Classifies one text message from the client (RFC 7395 §3.3.3: one element per message).
pub fn from_client(msg: &str, limits: Limits) -> FromClient {
    let Ok(el) = Element::parse_with_limits(msg, limits) else {
        return FromClient::Invalid;
    };
    if el.ns() != ns::FRAMING {
        return FromClient::Element;
    }
    match el.name() {
        "open" => FromClient::Open(pipe::stream_header(el.attrs())),
        "close" => FromClient::Close,
        _ => FromClient::Invalid,
    }
}

/// One message for the client, for one frame of server output.
pub fn to_client(frame: &Frame) -> String {
    match frame {
        Frame::StreamOpen(h) => {
            let mut open = format!("<open xmlns='{}'", ns::FRAMING);
            for (k, v) in h.attrs() {
                if ["from", "to", "id", "version", "xml:lang"].contains(&k) {
                    open.push_str(&format!(" {k}='{}'", escape_attr_value(v)));
                }
            }
            open.push_str("/>");
            open
        }
        Frame::Element(el) => {
            let mut out = Vec::with_capacity(256);
            pipe::write_standalone(&mut out, el, "");
            String::from_utf8_lossy(&out).into_owned()
        }
        Frame::StreamClose => format!("<close xmlns='{}'/>", ns::FRAMING),
    }
}

/// Answers the WebSocket handshake and starts the session once hyper hands the connection
/// over.
pub async fn handle(conn: Arc<Conn>, mut req: Request<Incoming>) -> Response<Body> {
    let h = req.headers();
    let has = |name: header::HeaderName, token: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let upgrade = has(header::UPGRADE, "websocket") && has(header::CONNECTION, "upgrade");
    let version = h
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let key = h
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().to_vec());
    // RFC 7395 §3.1: without the `xmpp` subprotocol this is not an XMPP connection.
    let xmpp = has(header::SEC_WEBSOCKET_PROTOCOL, "xmpp");
    let (Some(key), true, true) = (key, upgrade && version, xmpp) else {
        log::info!(
            "{}: refusing a WebSocket request from {} (upgrade {upgrade}, version 13 {version}, subprotocol xmpp {xmpp})",
            conn.tag,
            conn.peer
        );
        let mut r = body::status(StatusCode::BAD_REQUEST);
        if !version {
            r.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        return r;
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let id = conn.web.srv.next_conn_id();
    let task_conn = conn.clone();
    conn.web
        .ex
        .spawn(super::guarded(conn.clone(), move |_| async move {
            match on_upgrade.await {
                Ok(upgraded) => session(task_conn, Upgraded(upgraded), id).await,
                Err(e) => log::info!("{}: WebSocket upgrade failed: {e}", task_conn.tag),
            }
        }))
        .detach();
    let mut r = Response::new(body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let hs = r.headers_mut();
    hs.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    hs.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    hs.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static("xmpp"),
    );
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(&key)) {
        hs.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    r
}

/// One WebSocket XMPP session: c2s on one side of a pipe, the two pumps on the other.
async fn session(conn: Arc<Conn>, io: Upgraded, id: u64) {
    let srv = conn.web.srv.clone();
    let _open = super::OpenSession::new(&srv);
    let limits = Limits {
        max_stanza_bytes: srv.config.limits.max_stanza_size,
        ..Limits::default()
    };
    // The read buffer is allocated eagerly per connection; 128 KiB by default is a lot for
    // an idle chat client.
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .max_message_size(Some(limits.max_stanza_bytes + 4096))
        .max_frame_size(Some(limits.max_stanza_bytes + 4096));
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    log::info!("c2s#{id}: websocket connection from {}", conn.peer);
    let (duplex, to_server, from_server) = pipe::pipe();
    let (tx, rx) = ws.split();
    let deadline = Instant::now() + srv.config.limits.auth_timeout;
    let c2s = crate::session::c2s::serve_secure(
        srv,
        duplex,
        conn.peer,
        crate::sasl::CbInfo::none(),
        id,
        deadline,
    );
    // Either side ending ends the pumps: the client leaving drops `to_server` (c2s sees EOF);
    // c2s ending ends `from_server`, and the outbound pump closes the WebSocket.
    let pumps = outbound(from_server, tx).or(inbound(rx, to_server, limits, id));
    futures_lite::future::zip(Box::pin(c2s), pumps).await;
}

async fn inbound(
    mut rx: async_tungstenite::WebSocketReceiver<Upgraded>,
    mut to_server: ToServer,
    limits: Limits,
    id: u64,
) {
    while let Some(msg) = rx.next().await {
        let text = match msg {
            Ok(Message::Text(t)) => t,
            Ok(Message::Binary(_)) => {
                let _ = to_server.send(pipe::NOT_WELL_FORMED).await;
                continue;
            }
            Ok(Message::Close(_)) => break,
            Ok(_) => continue,
            Err(e) => {
                log::info!("c2s#{id}: websocket error: {e}");
                break;
            }
        };
        let sent = match from_client(text.as_str(), limits) {
            FromClient::Open(header) => to_server.send(header.as_bytes()).await,
            FromClient::Close => to_server.send(b"</stream:stream>").await,
            FromClient::Element => to_server.send(text.as_bytes()).await,
            FromClient::Invalid => to_server.send(pipe::NOT_WELL_FORMED).await,
        };
        if sent.is_err() {
            break;
        }
    }
}

async fn outbound(
    mut from_server: FromServer,
    mut tx: async_tungstenite::WebSocketSender<Upgraded>,
) {
    while let Some(frame) = from_server.next().await {
        if tx.send(Message::text(to_client(&frame))).await.is_err() {
            return;
        }
    }
    let _ = tx.close(None).await;
}

/// hyper's upgraded connection as a futures-io byte stream for async-tungstenite.
struct Upgraded(hyper::upgrade::Upgraded);

impl futures_lite::AsyncRead for Upgraded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut rb = hyper::rt::ReadBuf::new(buf);
        match hyper::rt::Read::poll_read(Pin::new(&mut self.0), cx, rb.unfilled()) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl futures_lite::AsyncWrite for Upgraded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        hyper::rt::Write::poll_write(Pin::new(&mut self.0), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        hyper::rt::Write::poll_flush(Pin::new(&mut self.0), cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        hyper::rt::Write::poll_shutdown(Pin::new(&mut self.0), cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::Framer;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn open_becomes_a_stream_header() {
        let open = "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.org' version='1.0' xml:lang='en'/>";
        let FromClient::Open(h) = from_client(open, limits()) else {
            panic!("not an open")
        };
        let mut f = Framer::new(limits());
        f.push(h.as_bytes()).unwrap();
        let Some(Frame::StreamOpen(hdr)) = f.next_frame().unwrap() else {
            panic!("no header from {h}")
        };
        assert_eq!(hdr.default_ns(), ns::CLIENT);
        assert_eq!(hdr.attr("to"), Some("example.org"));
        assert_eq!(hdr.attr("version"), Some("1.0"));
    }

    #[test]
    fn classify_messages() {
        assert_eq!(
            from_client(
                "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
                limits()
            ),
            FromClient::Close
        );
        assert_eq!(
            from_client(
                "<message xmlns='jabber:client'><body>x</body></message>",
                limits()
            ),
            FromClient::Element
        );
        for bad in [
            "<message xmlns='jabber:client'>",
            "<a/><b/>",
            "text",
            "",
            "<!DOCTYPE x><a/>",
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'><x/></open",
            "<other xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
        ] {
            assert_eq!(from_client(bad, limits()), FromClient::Invalid, "{bad}");
        }
        let big = format!(
            "<message xmlns='jabber:client'><body>{}</body></message>",
            "x".repeat(300_000)
        );
        assert_eq!(from_client(&big, limits()), FromClient::Invalid);
    }

    #[test]
    fn server_frames_become_messages() {
        let mut f = Framer::new(limits());
        f.push(b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0' xml:lang='en' id='abc' from='example.org'><stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features><message to='a@example.org'><body>hi</body></message></stream:stream>").unwrap();
        let mut msgs = Vec::new();
        while let Some(frame) = f.next_frame().unwrap() {
            msgs.push(to_client(&frame));
        }
        assert_eq!(
            msgs,
            [
                "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' version='1.0' xml:lang='en' id='abc' from='example.org'/>",
                "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>",
                "<message xmlns='jabber:client' to='a@example.org'><body>hi</body></message>",
                "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
            ]
        );
        // Every message is a standalone well-formed element.
        for m in &msgs {
            Element::parse(m).unwrap_or_else(|e| panic!("{m}: {e}"));
        }
    }

    #[test]
    fn the_not_well_formed_marker_ends_a_stream() {
        let mut f = Framer::new(limits());
        f.push(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>").unwrap();
        assert!(matches!(f.next_frame(), Ok(Some(Frame::StreamOpen(_)))));
        f.push(pipe::NOT_WELL_FORMED).unwrap_or(());
        assert!(f.next_frame().is_err());
    }
}
