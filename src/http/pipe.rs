//! An in-memory byte stream that lets `session::c2s` serve a WebSocket or BOSH client, so
//! the web transports reuse the one c2s implementation instead of being a second one.
//!
//! c2s reads and writes a `Duplex` as if it were a TLS socket. On the other side the web
//! transport gets `ToServer` (it writes the client's XML as stream bytes: a synthetic stream
//! header for `<open/>` or a session request, the stanzas, `</stream:stream>`) and
//! `FromServer` (the server's output cut into frames by our own `xml::Framer`: the header,
//! one element each, the close). Both directions are bounded: a client that does not read
//! makes c2s wait, exactly like a full socket.
//!
//! Also here, pure: writing a server frame as a standalone element (RFC 7395 messages and
//! BOSH bodies have no enclosing stream to inherit namespaces from), and the synthetic
//! stream header built from a client's `<open/>` or BOSH session request.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt as _};

use crate::stanza::ns;
use crate::xml::{escape_attr_value, Element, Frame, Framer, Limits};

/// Bytes of client XML that may wait for c2s to read them (the ring buffer is allocated up
/// front and gets touched as data passes, so it counts per idle session; a bigger stanza
/// just passes in several turns).
const TO_SERVER_BYTES: usize = 4 * 1024;
/// Bytes of server output (as written) that may wait for the client to take them.
const FROM_SERVER_BYTES: usize = 256 * 1024;
/// The server's own output is trusted, but one element (a big roster, an archive page) can
/// exceed the client stanza limit; this only guards against a bug looping forever.
const SERVER_FRAME_LIMIT: usize = 64 * 1024 * 1024;

/// The c2s side of the pipe.
pub struct Duplex {
    rx: piper::Reader,
    out: Arc<Mutex<Out>>,
}

/// Writes the client's XML, as stream bytes, for c2s to read. Dropping it is the end of the
/// client's stream (c2s sees EOF, like a dropped TCP connection).
pub struct ToServer {
    tx: piper::Writer,
}

/// The server's output as frames.
pub struct FromServer {
    out: Arc<Mutex<Out>>,
}

/// A new pipe: the c2s side and the two transport sides.
pub fn pipe() -> (Duplex, ToServer, FromServer) {
    let (rx, tx) = piper::pipe(TO_SERVER_BYTES);
    let out = Arc::new(Mutex::new(Out {
        framer: new_server_framer(),
        frames: VecDeque::new(),
        queued_bytes: 0,
        closed: false,
        aborted: false,
        reader: None,
        writer: None,
        c2s_reader: None,
    }));
    (
        Duplex {
            rx,
            out: out.clone(),
        },
        ToServer { tx },
        FromServer { out },
    )
}

struct Out {
    framer: Framer,
    frames: VecDeque<Frame>,
    /// Bytes written by c2s whose frames are not taken yet (the backpressure measure).
    queued_bytes: usize,
    /// c2s closed its side, or the transport dropped `FromServer`.
    closed: bool,
    /// The transport is gone (`FromServer` dropped or aborted): c2s reads EOF even while a
    /// `ToServer` still exists.
    aborted: bool,
    /// The transport side waiting for frames.
    reader: Option<Waker>,
    /// c2s waiting to write.
    writer: Option<Waker>,
    /// c2s waiting to read (woken by an abort).
    c2s_reader: Option<Waker>,
}

fn new_server_framer() -> Framer {
    Framer::new(Limits {
        max_stanza_bytes: SERVER_FRAME_LIMIT,
        ..Limits::default()
    })
}

fn lock(out: &Mutex<Out>) -> std::sync::MutexGuard<'_, Out> {
    // A panic while holding this lock cannot leave `Out` inconsistent in a way that matters
    // more than ending the session, which the caller's error path does anyway.
    out.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl AsyncRead for Duplex {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        // What the client sent before the abort (a final `</stream:stream>`) is still read.
        let aborted = {
            let mut out = lock(&self.out);
            out.c2s_reader = Some(cx.waker().clone());
            out.aborted
        };
        match Pin::new(&mut self.rx).poll_read(cx, buf) {
            Poll::Pending if aborted => Poll::Ready(Ok(0)),
            other => other,
        }
    }
}

impl AsyncWrite for Duplex {
    /// Takes the whole buffer or nothing, so a stream header (which c2s writes in one call)
    /// is always seen at the start of a write: that is how a stream restart is recognized
    /// and the output framer is reset (a second `<?xml …?><stream:stream>` would be
    /// malformed inside the first stream).
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut out = lock(&self.out);
        if out.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if out.queued_bytes > 0 && out.queued_bytes + buf.len() > FROM_SERVER_BYTES {
            out.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if buf.starts_with(b"<?xml") {
            out.framer = new_server_framer();
        }
        let out = &mut *out;
        let mut pushed = out.framer.push(buf).map(|_| 0);
        while pushed.is_ok() {
            match out.framer.next_frame() {
                Ok(Some(frame)) => out.frames.push_back(frame),
                Ok(None) => break,
                Err(e) => pushed = Err(e),
            }
        }
        if let Err(e) = pushed {
            // Our own output did not frame: a bug. End the stream rather than send garbage.
            log::error!("web: bug: server output is not well-formed XML ({e}); closing");
            out.frames.push_back(Frame::StreamClose);
            out.closed = true;
        }
        out.queued_bytes += buf.len();
        if let Some(w) = out.reader.take() {
            w.wake();
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        close(&self.out);
        Poll::Ready(Ok(()))
    }
}

fn close(out: &Mutex<Out>) {
    let mut out = lock(out);
    out.closed = true;
    if let Some(w) = out.reader.take() {
        w.wake();
    }
    if let Some(w) = out.writer.take() {
        w.wake();
    }
}

impl Drop for Duplex {
    fn drop(&mut self) {
        close(&self.out);
    }
}

impl ToServer {
    /// Passes client XML to c2s; fails once c2s has stopped reading.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.tx.write_all(bytes).await
    }
}

impl FromServer {
    /// The next frame of server output; `None` once c2s closed its side and everything was
    /// taken.
    pub async fn next(&mut self) -> Option<Frame> {
        futures_lite::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Every frame ready now, without waiting (BOSH takes all that is ready into one body).
    pub fn ready(&mut self) -> Vec<Frame> {
        let mut out = lock(&self.out);
        let frames: Vec<Frame> = out.frames.drain(..).collect();
        out.queued_bytes = 0;
        if let Some(w) = out.writer.take() {
            w.wake();
        }
        frames
    }

    /// Whether c2s closed its side and no frame is left.
    pub fn is_finished(&self) -> bool {
        let out = lock(&self.out);
        out.closed && out.frames.is_empty()
    }

    /// Waits until a frame is ready or c2s closed its side.
    pub async fn wait(&self) {
        futures_lite::future::poll_fn(|cx| self.poll_ready(cx)).await
    }

    /// Ready when a frame is ready or c2s closed its side; otherwise wakes `cx` then.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut out = lock(&self.out);
        if !out.frames.is_empty() || out.closed {
            Poll::Ready(())
        } else {
            out.reader = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        let mut out = lock(&self.out);
        if let Some(frame) = out.frames.pop_front() {
            if out.frames.is_empty() {
                out.queued_bytes = 0;
                if let Some(w) = out.writer.take() {
                    w.wake();
                }
            }
            return Poll::Ready(Some(frame));
        }
        if out.closed {
            return Poll::Ready(None);
        }
        out.reader = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl FromServer {
    /// Ends the client's side of the stream now, as a dropped connection would: c2s reads
    /// EOF, whoever holds the `ToServer`.
    pub fn abort(&self) {
        let mut out = lock(&self.out);
        out.aborted = true;
        out.closed = true;
        for w in [out.c2s_reader.take(), out.writer.take(), out.reader.take()]
            .into_iter()
            .flatten()
        {
            w.wake();
        }
    }
}

impl Drop for FromServer {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Writes `el` as a standalone piece of XML whose surroundings declare `context_ns` as the
/// default namespace (`""` for a WebSocket message, the BOSH namespace inside `<body/>`).
/// Elements of the streams namespace keep the `stream:` prefix with its declaration
/// (RFC 7395 §3.3.3 shows `<stream:features xmlns:stream=…>`; Strophe.js looks for it).
pub fn write_standalone(out: &mut Vec<u8>, el: &Element, context_ns: &str) {
    if el.ns() != ns::STREAM {
        el.write_to(out, context_ns);
        return;
    }
    out.extend_from_slice(b"<stream:");
    out.extend_from_slice(el.name().as_bytes());
    out.extend_from_slice(b" xmlns:stream='");
    out.extend_from_slice(ns::STREAM.as_bytes());
    out.push(b'\'');
    for (k, v) in el.attrs() {
        if !k.starts_with('{') {
            out.extend_from_slice(format!(" {k}='{}'", escape_attr_value(v)).as_bytes());
        }
    }
    if el.nodes().is_empty() {
        out.extend_from_slice(b"/>");
        return;
    }
    out.push(b'>');
    for c in el.children() {
        // The children's default namespace is still the context's, not the stream's.
        c.write_to(out, context_ns);
    }
    out.extend_from_slice(b"</stream:");
    out.extend_from_slice(el.name().as_bytes());
    out.push(b'>');
}

/// The stream header c2s reads for a web client's stream start (RFC 7395 `<open/>`, or a
/// BOSH session request or restart): `to`, `from`, `version` and `xml:lang` carried over,
/// the namespaces fixed.
pub fn stream_header<'a>(attrs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut h = String::from(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'",
    );
    for (k, v) in attrs {
        if ["to", "from", "version", "xml:lang"].contains(&k) {
            h.push_str(&format!(" {k}='{}'", escape_attr_value(v)));
        }
    }
    h.push('>');
    h
}

/// Bytes that make c2s end the stream with `not-well-formed`: an end tag at the top level
/// that does not match the open stream. Used when a web client's message is not one
/// well-formed element, so that the one place that handles stream errors reports it.
pub const NOT_WELL_FORMED: &[u8] = b"</not-well-formed>";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stanzas_get_their_namespace_and_stream_elements_their_prefix() {
        let msg =
            Element::parse("<message xmlns='jabber:client' to='a@b'><body>hi</body></message>")
                .unwrap();
        let mut out = Vec::new();
        write_standalone(&mut out, &msg, "");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<message xmlns='jabber:client' to='a@b'><body>hi</body></message>"
        );
        let features = Element::new("features", ns::STREAM).with_child(
            Element::new("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl").with_child(
                Element::new("mechanism", "urn:ietf:params:xml:ns:xmpp-sasl").with_text("PLAIN"),
            ),
        );
        let mut out = Vec::new();
        write_standalone(&mut out, &features, "http://jabber.org/protocol/httpbind");
        let s = String::from_utf8(out).unwrap();
        assert_eq!(
            s,
            "<stream:features xmlns:stream='http://etherx.jabber.org/streams'>\
             <mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms>\
             </stream:features>"
        );
        // And it parses back to the same element.
        assert_eq!(Element::parse(&s).unwrap(), features);
    }

    #[test]
    fn header_keeps_only_stream_attributes() {
        let h = stream_header([
            ("to", "example.org"),
            ("version", "1.0"),
            ("xml:lang", "en"),
            ("xmlns:evil", "x"),
            ("from", "a'b"),
        ]);
        assert_eq!(
            h,
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.org' version='1.0' xml:lang='en' from='a&apos;b'>"
        );
        let mut f = Framer::new(Limits::default());
        f.push(h.as_bytes()).unwrap();
        let Some(Frame::StreamOpen(hdr)) = f.next_frame().unwrap() else {
            panic!("no header")
        };
        assert_eq!(hdr.default_ns(), "jabber:client");
        assert_eq!(hdr.attr("to"), Some("example.org"));
    }

    #[test]
    fn restart_resets_the_output_framer_and_close_ends_it() {
        smol::block_on(async {
            let (mut duplex, _to, mut from) = pipe();
            let hdr = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='1'>";
            duplex.write_all(hdr.as_bytes()).await.unwrap();
            duplex
                .write_all(b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
                .await
                .unwrap();
            duplex
                .write_all(hdr.replace("'1'", "'2'").as_bytes())
                .await
                .unwrap();
            duplex
                .write_all(b"<stream:features/></stream:stream>")
                .await
                .unwrap();
            duplex.close().await.unwrap();
            let mut kinds = Vec::new();
            while let Some(f) = from.next().await {
                kinds.push(match f {
                    Frame::StreamOpen(h) => format!("open {}", h.attr("id").unwrap_or("")),
                    Frame::Element(e) => e.name().to_string(),
                    Frame::StreamClose => "close".into(),
                });
            }
            assert_eq!(kinds, ["open 1", "success", "open 2", "features", "close"]);
        });
    }

    #[test]
    fn abort_is_eof_for_c2s_while_the_writer_lives() {
        use futures_lite::AsyncReadExt as _;
        smol::block_on(async {
            let (mut duplex, mut to, from) = pipe();
            to.send(b"<a/>").await.unwrap();
            let mut buf = [0u8; 16];
            assert_eq!(duplex.read(&mut buf).await.unwrap(), 4);
            let reader = smol::spawn(async move {
                let mut buf = [0u8; 16];
                duplex.read(&mut buf).await.unwrap()
            });
            smol::Timer::after(std::time::Duration::from_millis(20)).await;
            from.abort();
            assert_eq!(reader.await, 0);
            drop(to);
        });
    }

    #[test]
    fn client_bytes_reach_c2s_and_drop_is_eof() {
        use futures_lite::AsyncReadExt as _;
        smol::block_on(async {
            let (mut duplex, mut to, _from) = pipe();
            to.send(b"<presence/>").await.unwrap();
            drop(to);
            let mut s = String::new();
            duplex.read_to_string(&mut s).await.unwrap();
            assert_eq!(s, "<presence/>");
        });
    }
}
