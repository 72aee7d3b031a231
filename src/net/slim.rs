//! A server TLS stream that costs little while idle: rustls runs the handshake, then a TLS 1.3
//! connection continues on `record::RecordLayer` with buffers that exist only while bytes are
//! in flight (see `record` for why). TLS 1.2 connections, and any cipher suite the record
//! layer does not know, stay on rustls.
//!
//! The hand-over must not lose a byte: `Aligned` gives rustls whole records only, so when the
//! handshake ends rustls holds no partial record; what it already decrypted is read out, what
//! it still has to send (session tickets) is taken over, and the rest of the socket's bytes
//! stay in `Aligned` for the record layer.

use std::io::{self, Read};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use futures_rustls::rustls::{self, CipherSuite, ConnectionTrafficSecrets, ServerConfig};

use super::record::{self, Opened, RecordLayer, Suite};

/// Bytes read from the socket at a time (on the stack; only a partial record is kept).
const READ_CHUNK: usize = 4096;
/// Sealed bytes we queue before asking the writer to wait for the socket.
const MAX_QUEUED: usize = 64 * 1024;

/// The socket during the handshake: hands rustls one whole TLS record at a time and keeps
/// whatever follows.
pub struct Aligned<S> {
    io: S,
    buf: Vec<u8>,
    start: usize,
    /// Bytes of the record being handed over that rustls has not taken yet.
    owed: usize,
}

impl<S> Aligned<S> {
    pub fn new(io: S) -> Aligned<S> {
        Aligned {
            io,
            buf: Vec::new(),
            start: 0,
            owed: 0,
        }
    }

    fn into_parts(mut self) -> (S, Vec<u8>) {
        self.buf.drain(..self.start);
        (self.io, self.buf)
    }

    /// The length of the complete record at the front of the buffer, if it is all there.
    fn whole_record(&self) -> Option<usize> {
        let b = &self.buf[self.start..];
        if b.len() < 5 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([b[3], b[4]]));
        // Not a TLS record (a web browser, plaintext XMPP): hand it over at once so rustls
        // refuses it now, rather than waiting for a length that is not one.
        if !(20..=23).contains(&b[0]) || b[1] != 3 || len > record::MAX_PLAINTEXT + 2048 {
            return Some(b.len());
        }
        (b.len() >= 5 + len).then_some(5 + len)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Aligned<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        loop {
            if this.owed == 0 {
                if let Some(n) = this.whole_record() {
                    this.owed = n;
                }
            }
            if this.owed > 0 {
                let n = this.owed.min(out.len());
                out[..n].copy_from_slice(&this.buf[this.start..this.start + n]);
                this.start += n;
                this.owed -= n;
                if this.start == this.buf.len() {
                    this.buf = Vec::new();
                    this.start = 0;
                }
                return Poll::Ready(Ok(n));
            }
            let mut chunk = [0u8; READ_CHUNK];
            match Pin::new(&mut this.io).poll_read(cx, &mut chunk) {
                Poll::Ready(Ok(0)) => {
                    // The peer stopped mid-record: give rustls what there is, then the end.
                    let rest = &this.buf[this.start..];
                    let n = rest.len().min(out.len());
                    out[..n].copy_from_slice(&rest[..n]);
                    this.start += n;
                    return Poll::Ready(Ok(n));
                }
                Poll::Ready(Ok(n)) => {
                    this.buf.drain(..this.start);
                    this.start = 0;
                    this.buf.extend_from_slice(&chunk[..n]);
                }
                other => return other,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Aligned<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_close(cx)
    }
}

/// Catches the two application traffic secrets of one handshake, which a key update needs
/// (rustls hands out only the derived keys).
#[derive(Debug, Default)]
pub struct Capture(Mutex<Secrets>);

#[derive(Default)]
struct Secrets {
    client: Option<Vec<u8>>,
    server: Option<Vec<u8>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(..)")
    }
}

const CLIENT_SECRET: &str = "CLIENT_TRAFFIC_SECRET_0";
const SERVER_SECRET: &str = "SERVER_TRAFFIC_SECRET_0";

impl rustls::KeyLog for Capture {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match label {
            CLIENT_SECRET => s.client = Some(secret.to_vec()),
            SERVER_SECRET => s.server = Some(secret.to_vec()),
            _ => {}
        }
    }

    fn will_log(&self, label: &str) -> bool {
        label == CLIENT_SECRET || label == SERVER_SECRET
    }
}

/// `config` for one handshake whose secrets `capture` receives.
pub fn config_for(config: &ServerConfig, capture: &Arc<Capture>) -> Arc<ServerConfig> {
    let mut c = config.clone();
    c.key_log = capture.clone();
    c.enable_secret_extraction = true;
    Arc::new(c)
}

/// A server TLS stream: the record layer, or rustls for what it does not cover.
pub enum ServerTls<S> {
    Slim(Box<Slim<S>>),
    Rustls(Box<futures_rustls::server::TlsStream<Aligned<S>>>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> ServerTls<S> {
    /// Takes a finished handshake over (see the module comment).
    pub fn take_over(
        mut tls: futures_rustls::server::TlsStream<Aligned<S>>,
        capture: &Capture,
    ) -> io::Result<ServerTls<S>> {
        let conn = tls.get_mut().1;
        let suite = match conn.negotiated_cipher_suite().map(|s| s.suite()) {
            _ if conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) => None,
            Some(CipherSuite::TLS13_AES_128_GCM_SHA256) => Some(Suite::Aes128GcmSha256),
            Some(CipherSuite::TLS13_AES_256_GCM_SHA384) => Some(Suite::Aes256GcmSha384),
            Some(CipherSuite::TLS13_CHACHA20_POLY1305_SHA256) => {
                Some(Suite::Chacha20Poly1305Sha256)
            }
            _ => None,
        };
        let secrets = std::mem::take(&mut *capture.0.lock().unwrap_or_else(|e| e.into_inner()));
        let (Some(suite), Some(client), Some(server)) = (suite, secrets.client, secrets.server)
        else {
            return Ok(ServerTls::Rustls(Box::new(tls)));
        };
        // The client's first bytes may have come with its Finished: rustls decrypted them.
        let mut plain = Vec::new();
        let peer_closed = match conn.reader().read_to_end(&mut plain) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Ok(_) => true,
            Err(e) => return Err(e),
        };
        let mut outgoing = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut outgoing)?;
        }
        let (aligned, conn) = tls.into_inner();
        let extracted = conn
            .dangerous_extract_secrets()
            .map_err(|e| io::Error::other(format!("taking the TLS session over: {e}")))?;
        let (rx_seq, rx) = extracted.rx;
        let (tx_seq, tx) = extracted.tx;
        let rl = RecordLayer::new(suite, &client, rx_seq, &server, tx_seq)
            .map_err(|f| io::Error::other(f.what))?;
        if !rl.agrees_with(iv_of(&rx), iv_of(&tx)) {
            return Err(io::Error::other(
                "taking the TLS session over: derived keys differ from rustls's",
            ));
        }
        let (io, incoming) = aligned.into_parts();
        Ok(ServerTls::Slim(Box::new(Slim {
            io,
            rl,
            incoming,
            plain,
            plain_pos: 0,
            outgoing,
            out_pos: 0,
            read_closed: peer_closed,
            write_closed: false,
            failed: None,
        })))
    }

    /// Heap bytes the record layer holds for buffers (none while idle).
    #[cfg(test)]
    pub(crate) fn buffer_capacity(&self) -> Option<usize> {
        match self {
            ServerTls::Slim(s) => {
                Some(s.incoming.capacity() + s.plain.capacity() + s.outgoing.capacity())
            }
            ServerTls::Rustls(_) => None,
        }
    }

    /// Whether the record layer carries this connection (for the log).
    pub fn is_slim(&self) -> bool {
        matches!(self, ServerTls::Slim(_))
    }
}

fn iv_of(s: &ConnectionTrafficSecrets) -> &[u8] {
    match s {
        ConnectionTrafficSecrets::Aes128Gcm { iv, .. }
        | ConnectionTrafficSecrets::Aes256Gcm { iv, .. }
        | ConnectionTrafficSecrets::Chacha20Poly1305 { iv, .. } => iv.as_ref(),
        _ => &[],
    }
}

/// A TLS 1.3 connection on our record layer.
pub struct Slim<S> {
    io: S,
    rl: RecordLayer,
    /// Received bytes not yet opened: a partial record, or records not yet asked for.
    incoming: Vec<u8>,
    /// Opened application data the reader has not taken.
    plain: Vec<u8>,
    plain_pos: usize,
    /// Sealed records not yet written.
    outgoing: Vec<u8>,
    out_pos: usize,
    read_closed: bool,
    write_closed: bool,
    /// The connection failed (a bad record): every later call says why.
    failed: Option<&'static str>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Slim<S> {
    /// Writes queued records; `Ready(Ok)` once none are left.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.outgoing.len() {
            match Pin::new(&mut self.io).poll_write(cx, &self.outgoing[self.out_pos..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.out_pos += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        // Idle connections keep no buffer.
        self.outgoing = Vec::new();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }

    fn fail(&mut self, f: record::Fatal, cx: &mut Context<'_>) -> io::Error {
        if let (Some(alert), false) = (f.alert, self.write_closed) {
            self.rl.seal_alert(alert, &mut self.outgoing);
            self.write_closed = true;
            let _ = self.poll_write_out(cx);
        }
        self.failed = Some(f.what);
        io::Error::new(io::ErrorKind::InvalidData, f.what)
    }

    fn take_plain(&mut self, out: &mut [u8]) -> usize {
        let rest = &self.plain[self.plain_pos..];
        let n = rest.len().min(out.len());
        out[..n].copy_from_slice(&rest[..n]);
        self.plain_pos += n;
        if self.plain_pos == self.plain.len() {
            self.plain = Vec::new();
            self.plain_pos = 0;
        }
        n
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Slim<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Some(what) = this.failed {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, what)));
        }
        loop {
            if this.plain_pos < this.plain.len() {
                return Poll::Ready(Ok(this.take_plain(out)));
            }
            if this.read_closed {
                return Poll::Ready(Ok(0));
            }
            match RecordLayer::record_len(&this.incoming) {
                Err(f) => return Poll::Ready(Err(this.fail(f, cx))),
                Ok(Some(n)) if this.incoming.len() >= n => {
                    let opened = this.rl.open(&mut this.incoming[..n]);
                    match opened {
                        Err(f) => return Poll::Ready(Err(this.fail(f, cx))),
                        Ok(Opened::Data(len)) => {
                            this.plain.extend_from_slice(&this.incoming[..len]);
                        }
                        Ok(Opened::Closed) => this.read_closed = true,
                        Ok(Opened::KeyUpdated { reply }) => {
                            if reply && !this.write_closed {
                                this.rl.seal_key_update(false, &mut this.outgoing);
                                // Best effort now; a pending write is retried by the next
                                // write or flush.
                                if let Poll::Ready(Err(e)) = this.poll_write_out(cx) {
                                    return Poll::Ready(Err(e));
                                }
                            }
                        }
                    }
                    this.incoming.drain(..n);
                    if this.incoming.is_empty() {
                        this.incoming = Vec::new();
                    }
                    continue;
                }
                Ok(_) => {}
            }
            let mut chunk = [0u8; READ_CHUNK];
            match Pin::new(&mut this.io).poll_read(cx, &mut chunk) {
                Poll::Ready(Ok(0)) => {
                    this.read_closed = true;
                    if !this.incoming.is_empty() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "connection closed in the middle of a TLS record",
                        )));
                    }
                }
                Poll::Ready(Ok(n)) => this.incoming.extend_from_slice(&chunk[..n]),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Slim<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if this.outgoing.len() - this.out_pos >= MAX_QUEUED {
            match this.poll_write_out(cx) {
                Poll::Ready(Ok(())) => {}
                other => return other.map(|r| r.map(|()| 0)),
            }
        }
        let n = buf.len().min(MAX_QUEUED);
        this.rl.seal(
            record::CONTENT_APPLICATION_DATA,
            &buf[..n],
            &mut this.outgoing,
        );
        if let Poll::Ready(Err(e)) = this.poll_write_out(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.poll_write_out(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.io).poll_flush(cx),
            other => other,
        }
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.write_closed {
            this.rl.seal_close_notify(&mut this.outgoing);
            this.write_closed = true;
        }
        match this.poll_write_out(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.io).poll_close(cx),
            other => other,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ServerTls<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerTls::Slim(s) => Pin::new(&mut **s).poll_read(cx, buf),
            ServerTls::Rustls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ServerTls<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerTls::Slim(s) => Pin::new(&mut **s).poll_write(cx, buf),
            ServerTls::Rustls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerTls::Slim(s) => Pin::new(&mut **s).poll_flush(cx),
            ServerTls::Rustls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerTls::Slim(s) => Pin::new(&mut **s).poll_close(cx),
            ServerTls::Rustls(s) => Pin::new(&mut **s).poll_close(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::AsyncReadExt;

    fn read_once(input: &[u8]) -> Vec<u8> {
        let mut a = Aligned::new(futures_lite::io::Cursor::new(input.to_vec()));
        let mut out = vec![0u8; 64];
        let n = smol::block_on(a.read(&mut out)).unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn whole_records_are_handed_over_one_at_a_time() {
        let mut input = vec![22, 3, 1, 0, 2, b'a', b'b'];
        input.extend_from_slice(&[23, 3, 3, 0, 1, b'c']);
        assert_eq!(read_once(&input), &input[..7]);
        // A partial record is held back until the stream ends.
        assert_eq!(read_once(&input[..6]), &input[..6]);
    }

    #[test]
    fn what_is_not_tls_goes_to_rustls_at_once() {
        // A browser on the TLS port: "GET /" would read as a 12,064-byte record.
        let get = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
        assert_eq!(read_once(get), &get[..]);
        let xmpp = b"<?xml version='1.0'?><stream:stream to='localhost'>";
        assert_eq!(read_once(xmpp), &xmpp[..]);
    }
}
