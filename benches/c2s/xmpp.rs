//! A minimal XMPP client for the load generator: STARTTLS, SCRAM, bind, initial presence.
//!
//! Must not know: phases, statistics or the command line. It reuses kith's own framer and
//! SCRAM client, so a bug there shows up here too; the end-to-end tests (slixmpp) are the
//! independent check.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures_rustls::client::TlsStream;
use futures_rustls::rustls::{self, pki_types::ServerName, ClientConfig};
use futures_rustls::TlsConnector;
use kith::sasl::{ChannelBinding, Mechanism, SaltedPassword, ScramClient};
use kith::xml::{Element, Frame, Framer, Limits};
use smol::net::TcpStream;

pub const NS_STREAM: &str = "http://etherx.jabber.org/streams";
pub const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";

/// What every login shares: where to connect, how to trust the server, the password and the
/// SaltedPassword cache (keyed by salt and iterations, so PBKDF2 runs once per distinct salt).
pub struct Login {
    pub addr: SocketAddr,
    pub domain: String,
    pub tls: Arc<ClientConfig>,
    pub password: String,
    pub plus: bool,
    pub salted: RefCell<HashMap<(Vec<u8>, u32), SaltedPassword>>,
    /// How many times the client had to run PBKDF2 (0 or 1 with provisioned users).
    pub pbkdf2_runs: RefCell<u32>,
}

/// An XML stream over any byte stream, client side.
pub struct Xmpp<S> {
    pub io: S,
    pub framer: Framer,
}

pub type Tls = TlsStream<TcpStream>;

impl<S: AsyncRead + AsyncWrite + Unpin> Xmpp<S> {
    pub fn new(io: S) -> Xmpp<S> {
        Xmpp {
            io,
            framer: Framer::new(Limits::default()),
        }
    }

    pub async fn send(&mut self, data: &[u8]) -> Result<(), String> {
        self.io
            .write_all(data)
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.io.flush().await.map_err(|e| format!("flush: {e}"))
    }

    pub async fn frame(&mut self) -> Result<Frame, String> {
        loop {
            match self.framer.next_frame() {
                Ok(Some(f)) => return Ok(f),
                Ok(None) => {}
                Err(e) => return Err(format!("framer: {e:?}")),
            }
            let mut buf = [0u8; 4096];
            let n = self
                .io
                .read(&mut buf)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed by the server".into());
            }
            self.framer
                .push(&buf[..n])
                .map_err(|e| format!("framer: {e:?}"))?;
        }
    }

    pub async fn element(&mut self) -> Result<Element, String> {
        match self.frame().await? {
            Frame::Element(e) => Ok(e),
            Frame::StreamOpen(_) => Err("unexpected stream header".into()),
            Frame::StreamClose => Err("stream closed by the server".into()),
        }
    }

    /// Sends our stream header (on a fresh framer), reads the server's and its features.
    pub async fn open(&mut self, domain: &str) -> Result<Element, String> {
        self.framer = Framer::new(Limits::default());
        let header = format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
             xmlns:stream='{NS_STREAM}' to='{domain}' version='1.0' xml:lang='en'>"
        );
        self.send(header.as_bytes()).await?;
        match self.frame().await? {
            Frame::StreamOpen(_) => {}
            other => return Err(format!("expected a stream header, got {other:?}")),
        }
        let features = self.element().await?;
        if !features.is("features", NS_STREAM) {
            return Err(format!("expected features, got <{}>", features.name()));
        }
        Ok(features)
    }
}

/// TCP connect, STARTTLS, SCRAM, bind `resource`, initial presence, and a ping whose answer
/// proves the server has finished handling the presence (roster, offline messages).
pub async fn login(cfg: &Login, user: &str, resource: &str) -> Result<Xmpp<Tls>, String> {
    let tcp = TcpStream::connect(cfg.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let mut plain = Xmpp::new(tcp);
    let features = plain.open(&cfg.domain).await?;
    if features.get_child("starttls", NS_TLS).is_none() {
        return Err("no STARTTLS offered".into());
    }
    plain
        .send(format!("<starttls xmlns='{NS_TLS}'/>").as_bytes())
        .await?;
    let proceed = plain.element().await?;
    if !proceed.is("proceed", NS_TLS) {
        return Err(format!("expected <proceed/>, got <{}>", proceed.name()));
    }
    let name = ServerName::try_from(cfg.domain.clone()).map_err(|e| format!("{e}"))?;
    let tls = TlsConnector::from(cfg.tls.clone())
        .connect(name, plain.io)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let mut xs = Xmpp::new(tls);

    // SASL
    let features = xs.open(&cfg.domain).await?;
    let mech = if cfg.plus {
        Mechanism::ScramSha256Plus
    } else {
        Mechanism::ScramSha256
    };
    let offered = features
        .get_child("mechanisms", NS_SASL)
        .map(|m| m.children().any(|c| c.text() == mech.name()))
        .unwrap_or(false);
    if !offered {
        return Err(format!("{} not offered", mech.name()));
    }
    let cb = if cfg.plus {
        let mut out = vec![0u8; 32];
        xs.io
            .get_ref()
            .1
            .export_keying_material(&mut out, b"EXPORTER-Channel-Binding", None)
            .map_err(|e| format!("exporter: {e}"))?;
        Some(ChannelBinding::TlsExporter(out))
    } else {
        None
    };
    let mut scram = ScramClient::new(mech, user, &cfg.password, cb).map_err(|e| e.to_string())?;
    let first = B64.encode(scram.client_first());
    xs.send(
        format!(
            "<auth xmlns='{NS_SASL}' mechanism='{}'>{first}</auth>",
            mech.name()
        )
        .as_bytes(),
    )
    .await?;
    let challenge = sasl_payload(&xs.element().await?, "challenge")?;
    if let Some(key) = salt_of(&challenge) {
        if let Some(s) = cfg.salted.borrow().get(&key) {
            scram = scram.with_salted_password(s.clone());
        }
    }
    let final_msg = scram
        .handle_server_first(&challenge)
        .map_err(|e| e.to_string())?;
    if let Some(s) = scram.salted_password() {
        let key = (s.salt.clone(), s.iterations);
        if let std::collections::hash_map::Entry::Vacant(e) = cfg.salted.borrow_mut().entry(key) {
            *cfg.pbkdf2_runs.borrow_mut() += 1;
            e.insert(s.clone());
        }
    }
    xs.send(
        format!(
            "<response xmlns='{NS_SASL}'>{}</response>",
            B64.encode(final_msg)
        )
        .as_bytes(),
    )
    .await?;
    let success = sasl_payload(&xs.element().await?, "success")?;
    scram
        .verify_server_final(&success)
        .map_err(|e| e.to_string())?;

    // Bind
    let features = xs.open(&cfg.domain).await?;
    if features.get_child("bind", NS_BIND).is_none() {
        return Err("no bind offered".into());
    }
    xs.send(
        format!(
            "<iq type='set' id='bind'><bind xmlns='{NS_BIND}'><resource>{resource}</resource></bind></iq>"
        )
        .as_bytes(),
    )
    .await?;
    loop {
        let el = xs.element().await?;
        if el.name() == "iq" && el.attr("id") == Some("bind") {
            if el.attr("type") != Some("result") {
                return Err(format!("bind failed: {:?}", el));
            }
            break;
        }
    }
    // Initial presence, then a ping: the session handles stanzas in order, so the pong means
    // the presence (roster read, pending subscriptions, offline messages) is done.
    xs.send(
        format!(
            "<presence/><iq type='get' id='ping' to='{}'><ping xmlns='urn:xmpp:ping'/></iq>",
            cfg.domain
        )
        .as_bytes(),
    )
    .await?;
    loop {
        let el = xs.element().await?;
        if el.name() == "iq" && el.attr("id") == Some("ping") {
            if el.attr("type") != Some("result") {
                return Err(format!("ping failed: {:?}", el));
            }
            break;
        }
    }
    Ok(xs)
}

fn sasl_payload(el: &Element, want: &str) -> Result<Vec<u8>, String> {
    if el.is("failure", NS_SASL) {
        let cond = el
            .first_child()
            .map(|c| c.name().to_owned())
            .unwrap_or_default();
        return Err(format!("SASL failure: {cond}"));
    }
    if !el.is(want, NS_SASL) {
        return Err(format!("expected <{want}/>, got <{}>", el.name()));
    }
    let text = el.text();
    let text = text.trim();
    if text.is_empty() || text == "=" {
        return Ok(Vec::new());
    }
    B64.decode(text).map_err(|e| format!("base64: {e}"))
}

/// (salt, iterations) from a server-first-message, to look up a cached SaltedPassword.
fn salt_of(server_first: &[u8]) -> Option<(Vec<u8>, u32)> {
    let s = std::str::from_utf8(server_first).ok()?;
    let mut salt = None;
    let mut iters = None;
    for a in s.split(',') {
        if let Some(v) = a.strip_prefix("s=") {
            salt = B64.decode(v).ok();
        } else if let Some(v) = a.strip_prefix("i=") {
            iters = v.parse().ok();
        }
    }
    Some((salt?, iters?))
}

/// rustls client config trusting exactly the server's certificate file; TLS 1.3 only and no
/// session resumption, so every login pays a full handshake like a first-time client.
pub fn client_config(ca: &std::path::Path, resume: bool) -> Result<Arc<ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("{}: {e}", ca.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", ca.display()))?;
    for c in certs {
        roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(Arc::new(config))
}
