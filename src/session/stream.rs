//! An XML stream over any byte stream: reads into the framer, writes batched bytes, and sends
//! stream headers, features and errors with the `stream:` prefix clients expect.

use std::io;
use std::time::Instant;

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::stanza::{ns, StreamError};
use crate::xml::{escape_attr_value, Element, Frame, FrameError, Framer, Limits};

/// Why a stream ended.
#[derive(Debug)]
pub enum End {
    /// The peer closed the TCP connection (or TLS) without closing the stream.
    Eof,
    /// The peer sent `</stream:stream>`.
    Closed,
    /// We must send this stream error and close.
    Error(StreamError, Option<&'static str>),
    /// The peer sent `<stream:error/>` with this condition (RFC 6120 §4.9): its stream is
    /// over; we close ours without an error of our own.
    PeerError(String),
    Io(io::Error),
    /// Our side decided to close cleanly (shutdown).
    Shutdown,
    /// Another connection resumed this session (XEP-0198): hand the state over.
    Takeover(async_channel::Sender<crate::session::sm::BoundState>),
}

impl From<io::Error> for End {
    fn from(e: io::Error) -> End {
        End::Io(e)
    }
}

impl From<FrameError> for End {
    fn from(e: FrameError) -> End {
        let cond = match &e {
            FrameError::NotWellFormed(_) => StreamError::NotWellFormed,
            FrameError::RestrictedXml(_) => StreamError::RestrictedXml,
            FrameError::PolicyViolation(_) => StreamError::PolicyViolation,
            FrameError::InvalidNamespace(_) => StreamError::InvalidNamespace,
            FrameError::BadFormat(_) => StreamError::BadFormat,
            FrameError::UnsupportedEncoding(_) => StreamError::UnsupportedEncoding,
        };
        End::Error(cond, None)
    }
}

pub struct XmlStream<S> {
    pub io: S,
    framer: Framer,
    limits: Limits,
    /// Our stream header for the current stream was sent (a stream error needs one first).
    pub header_sent: bool,
}

/// A `<stream:error/>` from the peer ends its stream in any phase (RFC 6120 §4.9.1.1), so it
/// never reaches a session's state machine, which would take it for an unknown stanza and
/// answer with a stream error of its own.
fn peer_error(frame: Frame) -> Result<Frame, End> {
    match frame {
        Frame::Element(el) if el.name() == "error" && el.ns() == ns::STREAM => {
            // The condition is the child in the streams namespace other than <text/>.
            let cond = el
                .children()
                .find(|c| c.ns() == ns::STREAMS_ERR && c.name() != "text")
                .map_or("undefined-condition", |c| c.name());
            Err(End::PeerError(cond.to_owned()))
        }
        frame => Ok(frame),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> XmlStream<S> {
    pub fn new(io: S, limits: Limits) -> XmlStream<S> {
        XmlStream {
            io,
            framer: Framer::new(limits),
            limits,
            header_sent: false,
        }
    }

    /// Starts a new stream on the same transport (after SASL success, RFC 6120 §6.4.6).
    pub fn restart(&mut self) {
        self.framer = Framer::new(self.limits);
        self.header_sent = false;
    }

    pub fn into_parts(self) -> (S, usize) {
        let buffered = self.framer.buffered();
        (self.io, buffered)
    }

    /// The next frame; waits for more input as needed, up to `deadline`.
    pub async fn next_frame(&mut self, deadline: Instant) -> Result<Frame, End> {
        loop {
            if let Some(frame) = self.framer.next_frame()? {
                return peer_error(frame);
            }
            let n = crate::net::with_deadline(self.fill(), deadline).await;
            match n {
                Ok(0) => return Err(End::Eof),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Err(End::Error(StreamError::ConnectionTimeout, None))
                }
                Err(e) => return Err(End::Io(e)),
            }
        }
    }

    /// Reads once and pushes the bytes into the framer. The read buffer lives on the stack
    /// only during `poll`, so an idle session's future holds no buffer: with thousands of idle
    /// sessions, that is 4 KiB each. A framer error is kept by the framer and reported by the
    /// next `ready_frame`.
    pub async fn fill(&mut self) -> io::Result<usize> {
        futures_lite::future::poll_fn(|cx| {
            let mut buf = [0u8; 4096];
            match std::pin::Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                std::task::Poll::Ready(Ok(n)) => {
                    let _ = self.framer.push(&buf[..n]);
                    std::task::Poll::Ready(Ok(n))
                }
                other => other,
            }
        })
        .await
    }

    pub fn ready_frame(&mut self) -> Result<Option<Frame>, End> {
        self.framer.next_frame()?.map(peer_error).transpose()
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await
    }

    /// Our stream header (RFC 6120 §4.7), answering the peer's `from` with `to` when valid.
    pub async fn send_header(
        &mut self,
        from_domain: &str,
        id: &str,
        to: Option<&str>,
    ) -> io::Result<()> {
        let mut h = String::with_capacity(256);
        h.push_str("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0' xml:lang='en'");
        h.push_str(&format!(
            " id='{id}' from='{}'",
            escape_attr_value(from_domain)
        ));
        if let Some(to) = to {
            h.push_str(&format!(" to='{}'", escape_attr_value(to)));
        }
        h.push('>');
        self.header_sent = true;
        self.send_raw(h.as_bytes()).await
    }

    /// Serializes an element into `out` for the client stream; elements in the streams
    /// namespace get the `stream:` prefix.
    pub fn write_element(out: &mut Vec<u8>, el: &Element) {
        if el.ns() == ns::STREAM {
            el.write_prefixed(out, "stream", ns::CLIENT);
        } else {
            el.write_to(out, ns::CLIENT);
        }
    }

    pub async fn send_element(&mut self, el: &Element) -> io::Result<()> {
        let mut out = Vec::with_capacity(256);
        Self::write_element(&mut out, el);
        self.send_raw(&out).await
    }

    /// Sends a stream error and closes the stream (RFC 6120 §4.9.1.1), with a header first if
    /// none was sent yet.
    pub async fn send_error(
        &mut self,
        domain: &str,
        id: &str,
        err: StreamError,
        text: Option<&str>,
    ) {
        if !self.header_sent {
            let _ = self.send_header(domain, id, None).await;
        }
        let mut out = Vec::with_capacity(256);
        Self::write_element(&mut out, &err.to_element(text));
        out.extend_from_slice(b"</stream:stream>");
        let _ = self.send_raw(&out).await;
        let _ = self.io.close().await;
    }

    pub async fn close(&mut self) {
        let _ = self.send_raw(b"</stream:stream>").await;
        let _ = self.io.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_error(children: Vec<Element>) -> Frame {
        let mut el = Element::new("error", ns::STREAM);
        for c in children {
            el = el.with_child(c);
        }
        Frame::Element(el)
    }

    #[test]
    fn a_peer_stream_error_ends_the_stream_with_its_condition() {
        // Prosody's on SIGTERM, <text/> after the condition; and <text/> first.
        let text = || Element::new("text", ns::STREAMS_ERR).with_text("Received SIGTERM");
        let shutdown = || Element::new("system-shutdown", ns::STREAMS_ERR);
        for frame in [
            stream_error(vec![shutdown(), text()]),
            stream_error(vec![text(), shutdown()]),
        ] {
            match peer_error(frame) {
                Err(End::PeerError(cond)) => assert_eq!(cond, "system-shutdown"),
                other => panic!("expected PeerError, got {other:?}"),
            }
        }
        match peer_error(stream_error(vec![])) {
            Err(End::PeerError(cond)) => assert_eq!(cond, "undefined-condition"),
            other => panic!("expected PeerError, got {other:?}"),
        }
    }

    #[test]
    fn stanzas_and_other_stream_elements_pass() {
        let message = Frame::Element(Element::new("message", ns::CLIENT));
        assert!(peer_error(message).is_ok());
        let features = Frame::Element(Element::new("features", ns::STREAM));
        assert!(peer_error(features).is_ok());
        // An <error/> that is not in the streams namespace is a stanza-level matter.
        let error = Frame::Element(Element::new("error", ns::CLIENT));
        assert!(peer_error(error).is_ok());
    }
}
