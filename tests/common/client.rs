//! A small synchronous XMPP client for the end-to-end tests: it speaks to the real `kith`
//! binary over loopback exactly as a client application would (STARTTLS or direct TLS,
//! SCRAM, resource binding, stanzas).
//!
//! Owns: sockets with read timeouts, TLS (rustls, trusting only the server's self-signed
//! certificate, so every test also proves that certificate is valid for the domain), the
//! client side of stream negotiation, and reading the server's stream as elements.
//!
//! Must not know: kith's internals. It uses only the crate's pure layers that any client
//! needs: `kith::xml` to cut the server's byte stream into elements and `kith::sasl`'s SCRAM
//! client. Namespaces are written out as literals here and in the tests, so a typo shared
//! with the server cannot hide a bug.
//!
//! Every wait has a timeout (default 5 s); a timeout panics with everything received so far.
//!
//! ```ignore
//! let mut alice = Client::login_bound(&server, "alice", "alice-secret", "phone");
//! alice.send("<message to='bob@localhost' type='chat'><body>hi</body></message>");
//! let msg = bob.recv();
//! ```
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_rustls::rustls;
use kith::sasl::{ChannelBinding, Mechanism, ScramClient};
use kith::xml::{Element, Frame, Framer, Limits, StreamHeader};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};

use super::TestServer;

pub const NS_CLIENT: &str = "jabber:client";
pub const NS_STREAM: &str = "http://etherx.jabber.org/streams";
pub const NS_STREAM_ERR: &str = "urn:ietf:params:xml:ns:xmpp-streams";
pub const NS_STANZA_ERR: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
pub const NS_ROSTER: &str = "jabber:iq:roster";
pub const NS_DELAY: &str = "urn:xmpp:delay";
pub const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";

/// How long `recv` and friends wait by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Keep at most this much of the received bytes for panic messages.
const TRANSCRIPT_MAX: usize = 32 * 1024;

/// The bytes of the client's stream header (RFC 6120 §4.7) for `domain`.
pub fn stream_header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>"
    )
}

/// The server's self-signed certificate in `data_dir`.
pub fn ca_path(server: &TestServer) -> PathBuf {
    server
        .data_dir
        .join("tls")
        .join(format!("{}.selfsigned.crt", server.domain))
}

/// A rustls client config trusting only the certificate at `ca_path`.
pub fn tls_config(ca_path: &Path, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_path)
        .unwrap_or_else(|e| panic!("reading {}: {e:?}", ca_path.display()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("parsing {}: {e:?}", ca_path.display()));
    assert!(!certs.is_empty(), "no certificate in {}", ca_path.display());
    for cert in certs {
        roots
            .add(cert)
            .unwrap_or_else(|e| panic!("adding {} to the roots: {e}", ca_path.display()));
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

enum Io {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    /// After `into_tls` took the socket, or after a hard close.
    Gone,
}

impl Io {
    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Io::Plain(s) => Some(s),
            Io::Tls(s) => Some(&s.sock),
            Io::Gone => None,
        }
    }
}

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Io::Plain(s) => s.read(buf),
            Io::Tls(s) => s.read(buf),
            Io::Gone => Ok(0),
        }
    }
}

impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Io::Plain(s) => s.write(buf),
            Io::Tls(s) => s.write(buf),
            Io::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Io::Plain(s) => s.flush(),
            Io::Tls(s) => s.flush(),
            Io::Gone => Ok(()),
        }
    }
}

/// One thing read from the server's stream.
#[derive(Debug)]
pub enum Event {
    Header(StreamHeader),
    Element(Element),
    /// `</stream:stream>`.
    Close,
    /// The server closed the connection (TCP FIN, or TLS ended, with or without close_notify).
    Eof,
}

/// A roster item as `(jid, subscription, name)`.
pub type RosterRow = (String, String, Option<String>);

/// One client connection.
pub struct Client {
    io: Io,
    framer: Framer,
    pub domain: String,
    pub ca_path: PathBuf,
    /// The server's latest stream header.
    pub header: Option<StreamHeader>,
    /// The latest `<stream:features/>`.
    pub features: Option<Element>,
    /// The bound full JID.
    pub jid: Option<String>,
    /// Elements set aside by `recv_until`, returned first by `recv`.
    backlog: VecDeque<Element>,
    /// What the server sent, for panic messages (lossy UTF-8; TLS-decrypted).
    transcript: String,
    pub timeout: Duration,
    /// The server ended the stream or the connection.
    pub closed: bool,
    pub eof: bool,
    /// Name for panic messages ("alice").
    pub name: String,
    next_id: usize,
}

fn client_limits() -> Limits {
    Limits {
        max_stanza_bytes: 16 * 1024 * 1024,
        max_depth: 256,
    }
}

fn connect_tcp(port: u16) -> TcpStream {
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connecting to 127.0.0.1:{port}: {e}"));
    tcp.set_nodelay(true).ok();
    tcp.set_write_timeout(Some(DEFAULT_TIMEOUT)).ok();
    tcp
}

impl Client {
    fn new(io: Io, domain: &str, ca_path: &Path) -> Client {
        static N: AtomicUsize = AtomicUsize::new(0);
        Client {
            io,
            framer: Framer::new(client_limits()),
            domain: domain.to_owned(),
            ca_path: ca_path.to_owned(),
            header: None,
            features: None,
            jid: None,
            backlog: VecDeque::new(),
            transcript: String::new(),
            timeout: DEFAULT_TIMEOUT,
            closed: false,
            eof: false,
            name: format!("client{}", N.fetch_add(1, Ordering::Relaxed)),
            next_id: 0,
        }
    }

    /// Plain TCP to the STARTTLS port, nothing sent yet.
    pub fn tcp(port: u16, domain: &str, ca_path: &Path) -> Client {
        Client::new(Io::Plain(connect_tcp(port)), domain, ca_path)
    }

    /// TCP, stream header, STARTTLS, TLS handshake, new stream header: ready for SASL
    /// (`features` holds the SASL features).
    pub fn connect_starttls(port: u16, domain: &str, ca_path: &Path) -> Client {
        let mut c = Client::tcp(port, domain, ca_path);
        c.open_stream();
        let f = c.features.clone().expect("features");
        assert!(
            f.get_child("starttls", NS_TLS).is_some(),
            "no <starttls/> in the first features: {f}"
        );
        c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        let proceed = c.recv();
        assert!(
            proceed.is("proceed", NS_TLS),
            "expected <proceed/>, got {proceed}"
        );
        c.start_tls(&[]);
        c.open_stream();
        c
    }

    /// Direct TLS (XEP-0368) with ALPN `xmpp-client`, then the stream header: ready for SASL.
    pub fn connect_direct_tls(port: u16, domain: &str, ca_path: &Path) -> Client {
        let mut c = Client::new(Io::Plain(connect_tcp(port)), domain, ca_path);
        c.start_tls(&[b"xmpp-client"]);
        c.open_stream();
        c
    }

    /// `connect_starttls` to `server`'s c2s port.
    pub fn starttls_to(server: &TestServer) -> Client {
        Client::connect_starttls(server.c2s_port, &server.domain, &ca_path(server))
    }

    /// STARTTLS, SCRAM-SHA-256 and bind `resource`, no presence sent.
    pub fn login_bound(server: &TestServer, user: &str, password: &str, resource: &str) -> Client {
        let mut c = Client::starttls_to(server);
        c.name = format!("{user}/{resource}");
        c.login(user, password);
        c.bind(Some(resource));
        c
    }

    /// `login_bound`, then initial presence; waits for the server's reflection of it.
    pub fn online(server: &TestServer, user: &str, password: &str, resource: &str) -> Client {
        let mut c = Client::login_bound(server, user, password, resource);
        c.presence();
        c
    }

    /// The TLS handshake over the current TCP socket; a fresh framer afterwards.
    pub fn start_tls(&mut self, alpn: &[&[u8]]) {
        let tcp = match std::mem::replace(&mut self.io, Io::Gone) {
            Io::Plain(tcp) => tcp,
            _ => panic!("start_tls: not a plain TCP connection"),
        };
        let config = tls_config(&self.ca_path, alpn);
        let name = ServerName::try_from(self.domain.clone()).expect("domain is a server name");
        let conn = rustls::ClientConnection::new(config, name).expect("ClientConnection::new");
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.sock.set_read_timeout(Some(self.timeout)).ok();
        while tls.conn.is_handshaking() {
            if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
                panic!(
                    "{}: TLS handshake with {} failed: {e}\nreceived so far:\n{}",
                    self.name, self.domain, self.transcript
                );
            }
        }
        self.io = Io::Tls(Box::new(tls));
        self.framer = Framer::new(client_limits());
    }

    /// The negotiated TLS connection (panics on plain TCP).
    pub fn tls(&self) -> &rustls::ClientConnection {
        match &self.io {
            Io::Tls(s) => &s.conn,
            _ => panic!("not a TLS connection"),
        }
    }

    /// RFC 9266 tls-exporter channel-binding data of this connection.
    pub fn tls_exporter(&self) -> Vec<u8> {
        self.tls()
            .export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", None)
            .expect("export_keying_material")
            .to_vec()
    }

    /// Sends our stream header and reads the server's header and features.
    pub fn open_stream(&mut self) {
        self.framer = Framer::new(client_limits());
        self.send(&stream_header(&self.domain.clone()));
        match self.next_event(self.timeout) {
            Some(Event::Header(h)) => {
                assert_eq!(h.qname(), "stream:stream", "server's stream header");
                self.header = Some(h);
            }
            other => self.fail(&format!(
                "expected the server's stream header, got {other:?}"
            )),
        }
        let f = self.recv();
        if !f.is("features", NS_STREAM) {
            self.fail(&format!("expected <stream:features/>, got {f}"));
        }
        self.features = Some(f);
    }

    /// Mechanism names offered in the current features.
    pub fn mechanisms(&self) -> Vec<String> {
        self.features
            .as_ref()
            .and_then(|f| f.get_child("mechanisms", NS_SASL))
            .map(|m| {
                m.children()
                    .filter(|c| c.is("mechanism", NS_SASL))
                    .map(|c| c.text())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// SCRAM-SHA-256 login and stream restart; panics on failure.
    pub fn login(&mut self, user: &str, password: &str) {
        if let Err(e) = self.try_login(Mechanism::ScramSha256, user, password) {
            self.fail(&format!("login as {user} failed: {e}"));
        }
    }

    /// A SCRAM login with `mech` (a -PLUS mechanism binds to tls-exporter). On success the
    /// stream is restarted and `features` holds the bind features. On `<failure/>` returns
    /// the condition's element name; the stream stays open.
    pub fn try_login(&mut self, mech: Mechanism, user: &str, password: &str) -> Result<(), String> {
        let cb = mech
            .is_plus()
            .then(|| ChannelBinding::TlsExporter(self.tls_exporter()));
        let scram = ScramClient::new(mech, user, password, cb).expect("ScramClient::new");
        self.try_login_with(scram)
    }

    /// A login with a prepared SCRAM client (e.g. one sending gs2 flag `y`).
    pub fn try_login_with(&mut self, mut scram: ScramClient) -> Result<(), String> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let first = b64.encode(scram.client_first());
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{}'>{first}</auth>",
            scram.mechanism().name()
        ));
        let challenge = self.recv();
        if challenge.is("failure", NS_SASL) {
            return Err(sasl_condition(&challenge));
        }
        if !challenge.is("challenge", NS_SASL) {
            self.fail(&format!("expected <challenge/>, got {challenge}"));
        }
        let server_first = b64
            .decode(challenge.text().trim())
            .unwrap_or_else(|e| panic!("challenge is not base64: {e}: {challenge}"));
        let client_final = scram
            .handle_server_first(&server_first)
            .unwrap_or_else(|e| panic!("bad server-first-message: {e}"));
        self.send(&format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
            b64.encode(client_final)
        ));
        let outcome = self.recv();
        if outcome.is("failure", NS_SASL) {
            return Err(sasl_condition(&outcome));
        }
        if !outcome.is("success", NS_SASL) {
            self.fail(&format!("expected <success/> or <failure/>, got {outcome}"));
        }
        let server_final = b64
            .decode(outcome.text().trim())
            .unwrap_or_else(|e| panic!("success is not base64: {e}: {outcome}"));
        scram
            .verify_server_final(&server_final)
            .unwrap_or_else(|e| panic!("the server's signature does not verify: {e}"));
        self.open_stream();
        Ok(())
    }

    /// Resource binding (RFC 6120 §7); `None` asks the server to pick. Returns the full JID.
    pub fn bind(&mut self, resource: Option<&str>) -> String {
        let f = self.features.clone().expect("features");
        assert!(
            f.get_child("bind", NS_BIND).is_some(),
            "no <bind/> in the features after SASL: {f}"
        );
        let inner = match resource {
            Some(r) => format!("<resource>{}</resource>", escape(r)),
            None => String::new(),
        };
        let reply = self.iq(&format!(
            "<iq type='set' id='ID'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>{inner}</bind></iq>"
        ));
        assert_eq!(reply.attr("type"), Some("result"), "bind failed: {reply}");
        let jid = reply
            .get_child("bind", NS_BIND)
            .and_then(|b| b.get_child("jid", NS_BIND))
            .map(|j| j.text())
            .unwrap_or_else(|| panic!("no <jid/> in the bind result: {reply}"));
        self.jid = Some(jid.clone());
        jid
    }

    /// Records the full JID of a session taken over by XEP-0198 resumption instead of binding.
    pub fn set_jid(&mut self, jid: &str) {
        self.jid = Some(jid.to_owned());
    }

    /// The bound full JID.
    pub fn jid(&self) -> &str {
        self.jid.as_deref().expect("not bound")
    }

    /// The bound JID without resource.
    pub fn bare(&self) -> &str {
        self.jid().split('/').next().unwrap()
    }

    /// Initial presence; returns the server's reflection of it to us (RFC 6121 §4.2.2).
    pub fn presence(&mut self) -> Element {
        self.send("<presence/>");
        let me = self.jid().to_owned();
        self.recv_until(|e| e.name() == "presence" && e.attr("from") == Some(me.as_str()))
    }

    /// A fresh stanza id.
    pub fn id(&mut self) -> String {
        self.next_id += 1;
        format!("{}-{}", self.name.replace(['/', '@'], "_"), self.next_id)
    }

    /// Sends an iq (its `id='ID'` is replaced by a fresh id) and returns the response with
    /// that id; other stanzas received meanwhile stay in the backlog.
    pub fn iq(&mut self, xml: &str) -> Element {
        let id = self.id();
        assert!(xml.contains("id='ID'"), "iq template needs id='ID': {xml}");
        self.send(&xml.replacen("id='ID'", &format!("id='{id}'"), 1));
        self.recv_until(|e| e.name() == "iq" && e.attr("id") == Some(id.as_str()))
    }

    /// The roster (RFC 6121 §2.1.3): `(ver, [(jid, subscription, name)])`.
    pub fn roster_get(&mut self) -> (Option<String>, Vec<RosterRow>) {
        let r = self.iq("<iq type='get' id='ID'><query xmlns='jabber:iq:roster'/></iq>");
        assert_eq!(r.attr("type"), Some("result"), "roster get failed: {r}");
        let q = r
            .get_child("query", NS_ROSTER)
            .unwrap_or_else(|| panic!("no roster query in {r}"));
        let items = q
            .children()
            .filter(|c| c.is("item", NS_ROSTER))
            .map(|i| {
                (
                    i.attr("jid").unwrap_or("").to_owned(),
                    i.attr("subscription").unwrap_or("none").to_owned(),
                    i.attr("name").map(str::to_owned),
                )
            })
            .collect();
        (q.attr("ver").map(str::to_owned), items)
    }

    /// Raw XML (or anything) to the server.
    pub fn send(&mut self, xml: &str) {
        self.send_bytes(xml.as_bytes());
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        if let Err(e) = self.io.write_all(bytes).and_then(|_| self.io.flush()) {
            self.fail(&format!("writing to the server: {e}"));
        }
    }

    /// Like `send_bytes`, but a broken connection is not an error (the server may already
    /// have closed it); returns whether the write succeeded.
    pub fn send_lenient(&mut self, bytes: &[u8]) -> bool {
        self.io
            .write_all(bytes)
            .and_then(|_| self.io.flush())
            .is_ok()
    }

    pub fn send_el(&mut self, el: &Element) {
        let mut out = Vec::new();
        el.write_to(&mut out, NS_CLIENT);
        self.send_bytes(&out);
    }

    /// The next top-level element (backlog first). Panics on timeout, stream close or EOF.
    pub fn recv(&mut self) -> Element {
        if let Some(e) = self.backlog.pop_front() {
            return e;
        }
        self.recv_fresh(self.timeout)
    }

    fn recv_fresh(&mut self, timeout: Duration) -> Element {
        match self.next_event(timeout) {
            Some(Event::Element(e)) => e,
            Some(Event::Header(h)) => self.fail(&format!("unexpected stream header: {h:?}")),
            Some(Event::Close) => self.fail("the server closed the stream"),
            Some(Event::Eof) => self.fail("the server closed the connection"),
            None => self.fail(&format!("nothing received within {timeout:?}")),
        }
    }

    /// The first element matching `pred`; the others received before it go to the backlog.
    pub fn recv_until(&mut self, mut pred: impl FnMut(&Element) -> bool) -> Element {
        if let Some(i) = self.backlog.iter().position(&mut pred) {
            return self.backlog.remove(i).unwrap();
        }
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.fail("no matching element within the timeout");
            }
            let e = self.recv_fresh(left);
            if pred(&e) {
                return e;
            }
            self.backlog.push_back(e);
        }
    }

    /// Drops the backlog (stanzas the test does not care about, like presence reflections).
    pub fn clear_backlog(&mut self) -> Vec<Element> {
        self.backlog.drain(..).collect()
    }

    /// The backlog plus every element that arrives until the stream is quiet for `quiet`.
    pub fn drain(&mut self, quiet: Duration) -> Vec<Element> {
        let mut out: Vec<Element> = self.backlog.drain(..).collect();
        loop {
            match self.next_event(quiet) {
                Some(Event::Element(e)) => out.push(e),
                None => return out,
                Some(other) => self.fail(&format!("while draining: {other:?}")),
            }
        }
    }

    /// Asserts that nothing arrives (and nothing is in the backlog) for `d`.
    pub fn expect_nothing(&mut self, d: Duration) {
        if let Some(e) = self.backlog.front() {
            let e = e.to_string();
            self.fail(&format!("expected nothing, but the backlog holds {e}"));
        }
        if let Some(ev) = self.next_event(d) {
            self.fail(&format!("expected nothing for {d:?}, got {ev:?}"));
        }
    }

    /// Expects `<stream:error><COND/></stream:error>`, then `</stream:stream>`, then the
    /// connection closing. Returns the error element.
    pub fn expect_stream_error(&mut self, cond: &str) -> Element {
        let e = match self.backlog.pop_front() {
            Some(e) => e,
            None => loop {
                match self.next_event(self.timeout) {
                    Some(Event::Element(e)) => break e,
                    // A stream error before our header was answered comes after the
                    // server's header (RFC 6120 §4.9.1.1).
                    Some(Event::Header(h)) if self.header.is_none() => self.header = Some(h),
                    other => self.fail(&format!(
                        "expected <stream:error><{cond}/></stream:error>, got {other:?}"
                    )),
                }
            },
        };
        if !e.is("error", NS_STREAM) {
            self.fail(&format!("expected <stream:error><{cond}/>, got {e}"));
        }
        let got: Vec<&str> = e
            .children()
            .filter(|c| c.ns() == NS_STREAM_ERR && c.name() != "text")
            .map(|c| c.name())
            .collect();
        if got != [cond] {
            self.fail(&format!("expected stream error condition {cond}, got {e}"));
        }
        self.expect_close();
        e
    }

    /// Expects `</stream:stream>` and then the end of the connection.
    pub fn expect_close(&mut self) {
        match self.next_event(self.timeout) {
            Some(Event::Close) => {}
            other => self.fail(&format!("expected </stream:stream>, got {other:?}")),
        }
        self.expect_eof();
    }

    /// Expects the connection to end (nothing else arriving first).
    pub fn expect_eof(&mut self) {
        match self.next_event(self.timeout) {
            Some(Event::Eof) => {}
            other => self.fail(&format!("expected the connection to close, got {other:?}")),
        }
    }

    /// Sends `</stream:stream>` and waits for the server's close and EOF.
    pub fn close(&mut self) {
        self.send("</stream:stream>");
        self.expect_close();
    }

    /// Drops the TCP connection without closing the stream.
    pub fn disconnect(mut self) {
        if let Some(tcp) = self.io.tcp() {
            let _ = tcp.shutdown(Shutdown::Both);
        }
        self.io = Io::Gone;
    }

    /// The next event from the server within `timeout`, `None` on timeout.
    pub fn next_event(&mut self, timeout: Duration) -> Option<Event> {
        if self.eof {
            return Some(Event::Eof);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.framer.next_frame() {
                Ok(Some(Frame::StreamOpen(h))) => return Some(Event::Header(h)),
                Ok(Some(Frame::Element(e))) => return Some(Event::Element(e)),
                Ok(Some(Frame::StreamClose)) => {
                    self.closed = true;
                    return Some(Event::Close);
                }
                Ok(None) => {}
                Err(e) => self.fail(&format!("the server sent malformed XML: {e:?}")),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            if let Some(tcp) = self.io.tcp() {
                tcp.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                    .ok();
            }
            let mut buf = [0u8; 16 * 1024];
            match self.io.read(&mut buf) {
                Ok(0) => {
                    self.eof = true;
                    return Some(Event::Eof);
                }
                Ok(n) => {
                    if self.transcript.len() < TRANSCRIPT_MAX {
                        self.transcript
                            .push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                    if let Err(e) = self.framer.push(&buf[..n]) {
                        self.fail(&format!("framer: {e:?}"));
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::UnexpectedEof
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::BrokenPipe
                    ) =>
                {
                    self.eof = true;
                    return Some(Event::Eof);
                }
                Err(e) => self.fail(&format!("reading from the server: {e}")),
            }
        }
    }

    /// Everything received so far (decrypted), for messages.
    pub fn transcript(&self) -> &str {
        &self.transcript
    }

    pub fn fail(&self, what: &str) -> ! {
        panic!(
            "{}: {what}\n----- {} received so far -----\n{}\n----- backlog: {} element(s) -----\n{}",
            self.name,
            self.name,
            self.transcript,
            self.backlog.len(),
            self.backlog
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    }
}

/// The condition of a SASL `<failure/>`.
pub fn sasl_condition(failure: &Element) -> String {
    failure
        .children()
        .find(|c| c.ns() == NS_SASL && c.name() != "text")
        .map(|c| c.name().to_owned())
        .unwrap_or_default()
}

/// The defined condition of a stanza error (`<error><COND xmlns='...stanzas'/></error>`),
/// asserting the stanza is `type='error'`.
pub fn stanza_error(stanza: &Element) -> String {
    assert_eq!(
        stanza.attr("type"),
        Some("error"),
        "expected an error stanza, got {stanza}"
    );
    let error = stanza
        .get_child("error", NS_CLIENT)
        .unwrap_or_else(|| panic!("no <error/> child in {stanza}"));
    error
        .children()
        .find(|c| c.ns() == NS_STANZA_ERR && c.name() != "text")
        .map(|c| c.name().to_owned())
        .unwrap_or_else(|| panic!("no defined condition in {stanza}"))
}

/// Escapes text for XML content or attribute values.
/// The bodies of the messages among `stanzas`, in order.
pub fn bodies(stanzas: &[Element]) -> Vec<String> {
    stanzas
        .iter()
        .filter(|e| e.name() == "message")
        .filter_map(|e| e.get_child("body", NS_CLIENT).map(|b| b.text()))
        .collect()
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// A plain TCP connection for malformed-input tests: send bytes, read what comes back.
pub struct Raw {
    pub tcp: TcpStream,
}

impl Raw {
    pub fn connect(port: u16) -> Raw {
        Raw {
            tcp: connect_tcp(port),
        }
    }

    /// Sends bytes; false if the connection was already closed.
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        self.tcp.write_all(bytes).is_ok()
    }

    /// Reads until the server closes the connection; panics if it is still open after
    /// `timeout`. Returns everything read.
    pub fn read_to_close(&mut self, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "the server did not close the connection within {timeout:?}; read {:?}",
                    String::from_utf8_lossy(&out)
                );
            }
            self.tcp.set_read_timeout(Some(left)).ok();
            match self.tcp.read(&mut buf) {
                Ok(0) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    return out
                }
                Err(e) => panic!("reading: {e}"),
            }
        }
    }
}
