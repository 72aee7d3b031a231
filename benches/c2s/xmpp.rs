//! A minimal XMPP client for the load generator: STARTTLS, then RFC 6120 SASL SCRAM and bind,
//! or XEP-0388 SASL2 (SCRAM or a XEP-0484 FAST token) with XEP-0386 Bind 2; initial presence.
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
use kith::sasl::{ht, ChannelBinding, Hash, Mechanism, SaltedPassword, ScramClient};
use kith::xml::{Element, Frame, Framer, Limits};
use smol::net::TcpStream;

pub const NS_STREAM: &str = "http://etherx.jabber.org/streams";
pub const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
pub const NS_SASL2: &str = "urn:xmpp:sasl:2";
pub const NS_BIND2: &str = "urn:xmpp:bind:0";
pub const NS_FAST: &str = "urn:xmpp:fast:0";

/// What every login shares: where to connect, how to trust the server, the password and the
/// SaltedPassword cache (keyed by salt and iterations, so PBKDF2 runs once per distinct salt).
pub struct Login {
    pub addr: SocketAddr,
    pub domain: String,
    pub tls: Arc<ClientConfig>,
    pub password: String,
    pub plus: bool,
    /// The SCRAM hash: SHA-256, or SHA-1 for servers that store only SHA-1 keys (Prosody's
    /// internal_hashed, ejabberd's default), so that every server is measured with the same
    /// mechanism.
    pub hash: Hash,
    pub salted: RefCell<HashMap<(Vec<u8>, u32), SaltedPassword>>,
    /// How many times the client had to run PBKDF2 (0 or 1 with provisioned users).
    pub pbkdf2_runs: RefCell<u32>,
}

/// An XML stream over any byte stream, client side.
pub struct Xmpp<S> {
    pub io: S,
    pub framer: Framer,
    /// Round trips: times a read had to wait for the server after something was sent.
    pub trips: u32,
    sent: bool,
}

pub type Tls = TlsStream<TcpStream>;

impl<S: AsyncRead + AsyncWrite + Unpin> Xmpp<S> {
    pub fn new(io: S) -> Xmpp<S> {
        Xmpp {
            io,
            framer: Framer::new(Limits::default()),
            trips: 0,
            sent: false,
        }
    }

    pub async fn send(&mut self, data: &[u8]) -> Result<(), String> {
        self.sent = true;
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
            if std::mem::take(&mut self.sent) {
                self.trips += 1;
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

/// How a client authenticates and binds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// RFC 6120: SASL SCRAM, stream restart, resource binding iq.
    Classic,
    /// XEP-0388 SASL2 SCRAM with XEP-0386 Bind 2 inline and a XEP-0484 FAST token requested.
    Sasl2,
    /// XEP-0484 FAST (an HT-SHA-256 token from an earlier SASL2 login) with Bind 2 inline.
    Fast,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "classic" => Some(Mode::Classic),
            "sasl2" => Some(Mode::Sasl2),
            "fast" => Some(Mode::Fast),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Classic => "classic",
            Mode::Sasl2 => "sasl2",
            Mode::Fast => "fast",
        }
    }
}

/// One simulated client: its account, its SASL2 `<user-agent id>` and its FAST token.
pub struct Client<'a> {
    pub user: &'a str,
    /// Classic mode: the resource to bind. SASL2 and FAST: the Bind 2 `<tag/>`.
    pub resource: &'a str,
    pub user_agent: &'a str,
    /// FAST mode: the token to log in with.
    pub token: Option<&'a str>,
    /// The FAST mechanism: HT-SHA-256-EXPR (tls-exporter) or HT-SHA-256-NONE.
    pub fast_mech: &'a str,
    /// SASL2 with a password: ask for a FAST token (the server stores it: a write).
    pub request_token: bool,
}

/// A logged-in session and how the login went.
pub struct Session {
    pub xs: Xmpp<Tls>,
    /// The bound full JID.
    pub jid: String,
    /// The FAST token the server issued (SASL2 mode), if any.
    pub token: Option<String>,
    /// Microseconds from the start of the TCP connect to TLS established.
    pub tls_us: u64,
    /// Microseconds from the start of the TCP connect to a bound resource.
    pub bound_us: u64,
    /// Round trips the client waited for, from the first byte after the TLS handshake to
    /// the bound resource.
    pub trips_to_bound: u32,
}

/// TCP connect, STARTTLS, SCRAM, bind `resource`, initial presence, and a ping whose answer
/// proves the server has finished handling the presence (roster, offline messages). Used by
/// `benches/mam`.
#[allow(dead_code)]
pub async fn login(cfg: &Login, user: &str, resource: &str) -> Result<Xmpp<Tls>, String> {
    let client = Client {
        user,
        resource,
        user_agent: "",
        token: None,
        fast_mech: "",
        request_token: false,
    };
    Ok(login_as(cfg, Mode::Classic, &client, true).await?.xs)
}

/// TCP connect, STARTTLS, authentication and binding as `mode` says; with `presence`, initial
/// presence and a ping whose answer proves the server has finished handling the presence
/// (roster, offline messages).
pub async fn login_as(
    cfg: &Login,
    mode: Mode,
    client: &Client<'_>,
    presence: bool,
) -> Result<Session, String> {
    let t0 = std::time::Instant::now();
    let mut xs = connect_tls(cfg).await?;
    let tls_us = t0.elapsed().as_micros() as u64;
    xs.trips = 0;
    let (jid, token) = match mode {
        Mode::Classic => (classic(cfg, &mut xs, client).await?, None),
        Mode::Sasl2 | Mode::Fast => sasl2(cfg, &mut xs, mode, client).await?,
    };
    let bound_us = t0.elapsed().as_micros() as u64;
    let trips_to_bound = xs.trips;
    if presence {
        // The session handles stanzas in order, so the pong means the presence is done.
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
    }
    Ok(Session {
        xs,
        jid,
        token,
        tls_us,
        bound_us,
        trips_to_bound,
    })
}

/// Ends the stream politely and waits (at most 5 s) for the server to close its side, so the
/// resource is unbound before the connection is forgotten.
pub async fn logout(mut xs: Xmpp<Tls>) {
    use futures_lite::FutureExt as _;
    let wait = async {
        if xs.send(b"</stream:stream>").await.is_err() {
            return;
        }
        while xs.frame().await.is_ok() {}
        let _ = xs.io.close().await;
    };
    wait.or(async {
        smol::Timer::after(std::time::Duration::from_secs(5)).await;
    })
    .await;
}

/// TCP connect, stream header, STARTTLS and the TLS handshake; returns the TLS stream before
/// anything is sent on it.
async fn connect_tls(cfg: &Login) -> Result<Xmpp<Tls>, String> {
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
    Ok(Xmpp::new(tls))
}

fn exporter(xs: &Xmpp<Tls>) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; 32];
    xs.io
        .get_ref()
        .1
        .export_keying_material(&mut out, b"EXPORTER-Channel-Binding", None)
        .map_err(|e| format!("exporter: {e}"))?;
    Ok(out)
}

fn scram_mech(cfg: &Login) -> Mechanism {
    Mechanism::scram(cfg.hash, cfg.plus)
}

fn scram_client(cfg: &Login, xs: &Xmpp<Tls>, user: &str) -> Result<ScramClient, String> {
    let cb = if cfg.plus {
        Some(ChannelBinding::TlsExporter(exporter(xs)?))
    } else {
        None
    };
    ScramClient::new(scram_mech(cfg), user, &cfg.password, cb).map_err(|e| e.to_string())
}

/// SCRAM's client-final for a server-first, with PBKDF2 at most once per (salt, iterations).
fn scram_final(
    cfg: &Login,
    mut scram: ScramClient,
    challenge: &[u8],
) -> Result<(ScramClient, Vec<u8>), String> {
    if let Some(key) = salt_of(challenge) {
        if let Some(s) = cfg.salted.borrow().get(&key) {
            scram = scram.with_salted_password(s.clone());
        }
    }
    let final_msg = scram
        .handle_server_first(challenge)
        .map_err(|e| e.to_string())?;
    if let Some(s) = scram.salted_password() {
        let key = (s.salt.clone(), s.iterations);
        if let std::collections::hash_map::Entry::Vacant(e) = cfg.salted.borrow_mut().entry(key) {
            *cfg.pbkdf2_runs.borrow_mut() += 1;
            e.insert(s.clone());
        }
    }
    Ok((scram, final_msg))
}

/// RFC 6120: SASL, stream restart, bind iq. Returns the bound JID.
async fn classic(cfg: &Login, xs: &mut Xmpp<Tls>, client: &Client<'_>) -> Result<String, String> {
    let features = xs.open(&cfg.domain).await?;
    let mech = scram_mech(cfg);
    let offered = features
        .get_child("mechanisms", NS_SASL)
        .map(|m| m.children().any(|c| c.text() == mech.name()))
        .unwrap_or(false);
    if !offered {
        return Err(format!("{} not offered", mech.name()));
    }
    let mut scram = scram_client(cfg, xs, client.user)?;
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
    let (mut scram, final_msg) = scram_final(cfg, scram, &challenge)?;
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

    let features = xs.open(&cfg.domain).await?;
    if features.get_child("bind", NS_BIND).is_none() {
        return Err("no bind offered".into());
    }
    xs.send(
        format!(
            "<iq type='set' id='bind'><bind xmlns='{NS_BIND}'><resource>{}</resource></bind></iq>",
            client.resource
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
            return Ok(el
                .get_child("bind", NS_BIND)
                .and_then(|b| b.get_child("jid", NS_BIND))
                .map(|j| j.text())
                .unwrap_or_default());
        }
    }
}

/// SASL2 (SCRAM or FAST) with Bind 2 inline: no stream restart, no bind round trip. Returns
/// the bound JID and the FAST token issued, if any.
async fn sasl2(
    cfg: &Login,
    xs: &mut Xmpp<Tls>,
    mode: Mode,
    client: &Client<'_>,
) -> Result<(String, Option<String>), String> {
    let features = xs.open(&cfg.domain).await?;
    let auth = features
        .get_child("authentication", NS_SASL2)
        .ok_or("no SASL2 offered")?;
    let mech = match mode {
        Mode::Fast => client.fast_mech,
        _ => scram_mech(cfg).name(),
    };
    let offered = auth.children().any(|c| c.text() == mech)
        || auth
            .get_child("inline", NS_SASL2)
            .and_then(|i| i.get_child("fast", NS_FAST))
            .is_some_and(|f| f.children().any(|c| c.text() == mech));
    if !offered {
        return Err(format!("{mech} not offered with SASL2"));
    }
    let bind = format!(
        "<bind xmlns='{NS_BIND2}'><tag>{}</tag></bind>",
        client.resource
    );
    let ua = client.user_agent;
    let success = if mode == Mode::Fast {
        let token = client.token.ok_or("no FAST token")?;
        let cb = if client.fast_mech.ends_with("-EXPR") {
            exporter(xs)?
        } else {
            Vec::new()
        };
        let mut initial = format!("{}\0", client.user).into_bytes();
        initial.extend_from_slice(&ht::initiator(token, &cb));
        xs.send(
            format!(
                "<authenticate xmlns='{NS_SASL2}' mechanism='{mech}'>\
                 <initial-response>{}</initial-response><user-agent id='{ua}'/>\
                 <fast xmlns='{NS_FAST}'/>{bind}</authenticate>",
                B64.encode(initial)
            )
            .as_bytes(),
        )
        .await?;
        let success = sasl2_outcome(xs.element().await?, "success")?;
        let data = success
            .get_child("additional-data", NS_SASL2)
            .map(|d| d.text())
            .unwrap_or_default();
        if B64.decode(data.trim()).ok() != Some(ht::responder(token, &cb)) {
            return Err("FAST: wrong server proof".into());
        }
        success
    } else {
        let mut scram = scram_client(cfg, xs, client.user)?;
        let request = if client.request_token {
            format!(
                "<request-token xmlns='{NS_FAST}' mechanism='{}'/>",
                client.fast_mech
            )
        } else {
            String::new()
        };
        xs.send(
            format!(
                "<authenticate xmlns='{NS_SASL2}' mechanism='{mech}'>\
                 <initial-response>{}</initial-response>\
                 <user-agent id='{ua}'><software>kith c2s bench</software></user-agent>\
                 {bind}{request}</authenticate>",
                B64.encode(scram.client_first()),
            )
            .as_bytes(),
        )
        .await?;
        let challenge = sasl2_outcome(xs.element().await?, "challenge")?;
        let challenge = B64
            .decode(challenge.text().trim())
            .map_err(|e| format!("base64: {e}"))?;
        let (mut scram, final_msg) = scram_final(cfg, scram, &challenge)?;
        xs.send(
            format!(
                "<response xmlns='{NS_SASL2}'>{}</response>",
                B64.encode(final_msg)
            )
            .as_bytes(),
        )
        .await?;
        let success = sasl2_outcome(xs.element().await?, "success")?;
        let data = success
            .get_child("additional-data", NS_SASL2)
            .map(|d| d.text())
            .unwrap_or_default();
        let data = B64
            .decode(data.trim())
            .map_err(|e| format!("base64: {e}"))?;
        scram
            .verify_server_final(&data)
            .map_err(|e| e.to_string())?;
        success
    };
    if !success.has_child("bound", NS_BIND2) {
        return Err("SASL2 success without <bound/>".into());
    }
    let jid = success
        .get_child("authorization-identifier", NS_SASL2)
        .map(|a| a.text())
        .ok_or("no authorization-identifier")?;
    let token = success
        .get_child("token", NS_FAST)
        .and_then(|t| t.attr("token"))
        .map(str::to_string);
    // The features follow <success/> without a stream restart.
    let features = xs.element().await?;
    if !features.is("features", NS_STREAM) {
        return Err(format!(
            "expected features after success, got <{}>",
            features.name()
        ));
    }
    Ok((jid, token))
}

fn sasl2_outcome(el: Element, want: &str) -> Result<Element, String> {
    if el.is("failure", NS_SASL2) {
        let cond = el
            .first_child()
            .map(|c| c.name().to_owned())
            .unwrap_or_default();
        return Err(format!("SASL2 failure: {cond}"));
    }
    if !el.is(want, NS_SASL2) {
        return Err(format!("expected SASL2 <{want}/>, got <{}>", el.name()));
    }
    Ok(el)
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
