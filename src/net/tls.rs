//! TLS: the one certificate source every TLS listener shares, the server configs built on it,
//! the accept step that answers ACME TLS-ALPN-01 challenges, and the channel-binding data
//! SCRAM-PLUS needs.
//!
//! The certificate comes from `[tls]` files (re-read when they change on disk), from ACME
//! (`net::acme`, with the self-signed one until the first issuance), or is self-signed and kept
//! in the data directory. [`Certs`] is the `ResolvesServerCert` all of them feed; listeners
//! differ only in ALPN ([`TlsSetup::server_config`]). [`TlsSetup::accept`] picks the
//! certificate itself for each handshake, so `tls-server-end-point` always hashes the
//! certificate that handshake presented, even across a renewal.
//!
//! Only rustls with the `ring` provider, TLS 1.2 and 1.3 (RFC 7590 forbids older versions).
//! Knows nothing about XMPP beyond ALPN names.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use futures_rustls::rustls::crypto::CryptoProvider;
use futures_rustls::rustls::server::{Acceptor, ClientHello, ResolvesServerCert};
use futures_rustls::rustls::sign::CertifiedKey;
use futures_rustls::rustls::{self, ServerConfig, ServerConnection};
use futures_rustls::server::TlsStream;
use futures_rustls::LazyConfigAcceptor;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::net::acme::Acme;
use crate::net::slim::{self, Aligned, ServerTls};
use crate::sasl::CbInfo;

/// ALPN protocol id for direct-TLS client connections (XEP-0368).
pub const ALPN_XMPP_CLIENT: &[u8] = b"xmpp-client";
/// ALPN protocol id for direct-TLS server-to-server connections (XEP-0368).
pub const ALPN_XMPP_SERVER: &[u8] = b"xmpp-server";
/// ALPN protocol id of HTTP/1.1 (RFC 7301).
pub const ALPN_HTTP11: &[u8] = b"http/1.1";
/// ALPN protocol id of the ACME TLS-ALPN-01 challenge (RFC 8737).
pub const ALPN_ACME_TLS: &[u8] = b"acme-tls/1";

/// How often `[tls]` files are checked for changes. A `stat` of two files costs nothing, and a
/// renewed certificate (certbot's deploy, a copy by hand) is served within seconds.
pub const FILE_POLL: Duration = Duration::from_secs(5);

/// Where the certificate comes from, for logs and `kith check`.
#[derive(Clone, Debug)]
pub enum CertSource {
    /// `[tls]` files, re-read when they change.
    Configured { cert: PathBuf, key: PathBuf },
    /// Generated once into the data directory.
    SelfSigned { cert: PathBuf },
    /// `[acme]`; the self-signed certificate at `fallback` until the first issuance.
    Acme { fallback: PathBuf },
}

/// Everything a listener needs to run TLS. Owned by `Server`; listeners borrow it.
pub struct TlsSetup {
    certs: Arc<Certs>,
    acme: Option<Arc<Acme>>,
    provider: Arc<CryptoProvider>,
    /// Per-ALPN configs whose resolver is fixed to one certificate (see `accept`), kept while
    /// that certificate is current so connections share them.
    pinned: Mutex<Vec<Pinned>>,
    pub source: CertSource,
}

/// A finished server handshake and what channel binding needs from it.
pub struct Accepted<S> {
    pub stream: TlsStream<S>,
    /// RFC 5929 `tls-server-end-point`: the hash of the leaf certificate this handshake
    /// presented, when its signature algorithm makes the hash well-defined.
    pub server_end_point: Option<Vec<u8>>,
}

/// A TLS setup problem for the operator: says which file and what to do.
#[derive(Debug)]
pub struct TlsError(String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

impl TlsSetup {
    /// Loads the configured certificate, or the self-signed one for `domain` in `data_dir`
    /// (made on first use and kept, so clients can pin it).
    pub fn load(
        cert: Option<&Path>,
        key: Option<&Path>,
        domain: &str,
        data_dir: &Path,
    ) -> Result<TlsSetup, TlsError> {
        let provider = provider();
        let (current, source) = match (cert, key) {
            (Some(c), Some(k)) => (
                load_pair(c, k, &provider)?,
                CertSource::Configured {
                    cert: c.to_path_buf(),
                    key: k.to_path_buf(),
                },
            ),
            _ => {
                let (current, cert) = self_signed(domain, data_dir, &provider)?;
                (current, CertSource::SelfSigned { cert })
            }
        };
        Ok(TlsSetup::new(current, None, provider, source))
    }

    /// Certificates from ACME; the self-signed one until the first is issued, so clients that
    /// accept it (and the ACME server's own checks) are not refused meanwhile.
    pub fn with_acme(acme: Arc<Acme>, domain: &str, data_dir: &Path) -> Result<TlsSetup, TlsError> {
        let provider = provider();
        let (current, fallback) = self_signed(domain, data_dir, &provider)?;
        Ok(TlsSetup::new(
            current,
            Some(acme),
            provider,
            CertSource::Acme { fallback },
        ))
    }

    fn new(
        current: CertifiedKey,
        acme: Option<Arc<Acme>>,
        provider: Arc<CryptoProvider>,
        source: CertSource,
    ) -> TlsSetup {
        TlsSetup {
            certs: Arc::new(Certs {
                current: RwLock::new(Arc::new(current)),
                acme: acme.as_ref().map(|a| a.resolver()),
                acme_client: acme.clone(),
            }),
            acme,
            provider,
            pinned: Mutex::new(Vec::new()),
            source,
        }
    }

    /// A server config on the shared certificate source, offering `alpn` (empty: no ALPN, so
    /// a client offering any protocol is not refused). For listeners that need no channel
    /// binding; they should still accept through [`TlsSetup::accept`] so ACME challenges
    /// reaching them are answered.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Arc<ServerConfig> {
        let mut config = self.builder().with_cert_resolver(self.certs.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// The shared certificate source, for code that builds its own `ServerConfig`.
    pub fn resolver(&self) -> Arc<Certs> {
        self.certs.clone()
    }

    /// The ACME side, when `[acme]` is on.
    pub fn acme(&self) -> Option<&Arc<Acme>> {
        self.acme.as_ref()
    }

    /// The key authorization to serve at `/.well-known/acme-challenge/TOKEN` (HTTP-01), if an
    /// ACME challenge for `token` is in progress.
    pub fn http01_key_auth(&self, token: &str) -> Option<String> {
        self.acme.as_ref()?.http01_key_auth(token)
    }

    /// Server side of a TLS handshake on `io`, offering `alpn`. A TLS-ALPN-01 challenge
    /// (RFC 8737: ALPN `acme-tls/1` only) is answered with the challenge certificate and the
    /// connection closed: `Ok(None)`. Any other client gets the current certificate.
    pub async fn accept<S>(&self, io: S, alpn: &[&[u8]]) -> io::Result<Option<Accepted<S>>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let start = LazyConfigAcceptor::new(Acceptor::default(), io).await?;
        self.accept_started(start, alpn).await
    }

    /// [`TlsSetup::accept`] for a handshake whose ClientHello the caller already read (the
    /// HTTPS port looks at the ALPN offer first, to send `xmpp-server` to federation).
    pub async fn accept_started<S>(
        &self,
        start: futures_rustls::StartHandshake<S>,
        alpn: &[&[u8]],
    ) -> io::Result<Option<Accepted<S>>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if rustls_acme::is_tls_alpn_challenge(&start.client_hello()) {
            let Some(acme) = &self.acme else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "ACME challenge (acme-tls/1) while [acme] is off",
                ));
            };
            let sni = start.client_hello().server_name().map(str::to_owned);
            let mut tls = start.into_stream(acme.challenge_config()).await?;
            let _ = tls.close().await;
            log::info!(
                "acme: answered a TLS-ALPN-01 challenge for {}",
                sni.as_deref().unwrap_or("(no name)")
            );
            return Ok(None);
        }
        let (config, server_end_point) = self.config_for(start.client_hello(), alpn)?;
        let stream = start.into_stream(config).await?;
        Ok(Some(Accepted {
            stream,
            server_end_point,
        }))
    }

    /// [`TlsSetup::accept`] for client connections: after the handshake a TLS 1.3
    /// connection moves to kith's record layer (`net::slim`), which keeps no buffers while
    /// the session is idle. Returns the stream and its channel-binding data, taken while
    /// rustls still had the session.
    pub async fn accept_slim<S>(
        &self,
        io: S,
        alpn: &[&[u8]],
    ) -> io::Result<Option<(ServerTls<S>, CbInfo)>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let start = LazyConfigAcceptor::new(Acceptor::default(), Aligned::new(io)).await?;
        if rustls_acme::is_tls_alpn_challenge(&start.client_hello()) {
            return self.accept_started(start, alpn).await.map(|_| None);
        }
        let (config, server_end_point) = self.config_for(start.client_hello(), alpn)?;
        let capture = Arc::new(slim::Capture::default());
        let stream = start
            .into_stream(slim::config_for(&config, &capture))
            .await?;
        let cb = channel_binding(stream.get_ref().1, server_end_point);
        let tls = ServerTls::take_over(stream, &capture)?;
        Ok(Some((tls, cb)))
    }

    /// Replaces the current certificate (a changed `[tls]` file). New handshakes get it;
    /// established connections keep theirs.
    pub fn set_certificate(&self, key: CertifiedKey) {
        self.certs.set(Arc::new(key));
    }

    /// Re-reads `[tls]` files whenever they change on disk, until the future is dropped.
    /// A file that does not load (a half-written copy, a key that does not fit) keeps the
    /// previous certificate in service; it is reported once it stayed bad for one poll.
    /// Returns at once for other certificate sources.
    pub async fn watch_files(&self) {
        self.watch_files_every(FILE_POLL).await
    }

    async fn watch_files_every(&self, poll: Duration) {
        let CertSource::Configured { cert, key } = &self.source else {
            return;
        };
        let stamp_of = || {
            let (c, k) = (cert.clone(), key.clone());
            smol::unblock(move || (file_stamp(&c), file_stamp(&k)))
        };
        let mut loaded = stamp_of().await;
        let mut failed_once = None;
        loop {
            smol::Timer::after(poll).await;
            let now = stamp_of().await;
            if now == loaded {
                continue;
            }
            let (c, k, p) = (cert.clone(), key.clone(), self.provider.clone());
            match smol::unblock(move || load_pair(&c, &k, &p)).await {
                Ok(new) => {
                    let expires = new.cert.first().and_then(|c| not_after(c));
                    self.set_certificate(new);
                    log::info!(
                        "tls: reloaded {} (changed on disk){}; new connections get it",
                        cert.display(),
                        expires.map_or(String::new(), |t| format!(", valid until {t}"))
                    );
                    loaded = now;
                    failed_once = None;
                }
                // Writing cert and key is not atomic: give a pair one poll to settle.
                Err(e) if failed_once.as_ref() != Some(&now) => {
                    log::debug!("tls: changed certificate files do not load yet: {e}");
                    failed_once = Some(now);
                }
                Err(e) => {
                    log::error!("{e}; still serving the previous certificate");
                    loaded = now;
                    failed_once = None;
                }
            }
        }
    }

    /// The config for a client that is not an ACME challenge: pinned to the certificate its
    /// ClientHello resolves to, with that certificate's end-point hash.
    fn config_for(
        &self,
        hello: ClientHello<'_>,
        alpn: &[&[u8]],
    ) -> io::Result<(Arc<ServerConfig>, Option<Vec<u8>>)> {
        let Some(key) = self.certs.resolve(hello) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "no certificate for this client",
            ));
        };
        Ok(self.pinned(alpn, key))
    }

    /// A config whose resolver always returns `key`, with `key`'s end-point hash; cached per
    /// ALPN list while `key` is current.
    fn pinned(
        &self,
        alpn: &[&[u8]],
        key: Arc<CertifiedKey>,
    ) -> (Arc<ServerConfig>, Option<Vec<u8>>) {
        let mut pinned = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pinned.iter().find(|p| {
            Arc::ptr_eq(&p.key, &key) && p.alpn.iter().map(Vec::as_slice).eq(alpn.iter().copied())
        }) {
            return (p.config.clone(), p.end_point.clone());
        }
        let end_point = key.cert.first().and_then(|leaf| end_point_hash(leaf));
        let mut config = self
            .builder()
            .with_cert_resolver(Arc::new(Fixed(key.clone())));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let config = Arc::new(config);
        // Entries for a replaced certificate are dropped; one per ALPN list remains.
        pinned.retain(|p| {
            Arc::ptr_eq(&p.key, &key) || !p.alpn.iter().map(Vec::as_slice).eq(alpn.iter().copied())
        });
        pinned.push(Pinned {
            alpn: alpn.iter().map(|p| p.to_vec()).collect(),
            key,
            config: config.clone(),
            end_point: end_point.clone(),
        });
        (config, end_point)
    }

    fn builder(&self) -> rustls::ConfigBuilder<ServerConfig, rustls::server::WantsServerCert> {
        ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("ring supports TLS 1.2 and 1.3")
            .with_no_client_auth()
    }
}

impl<S> Accepted<S> {
    /// Channel-binding data for this handshake.
    ///
    /// `tls-exporter` (RFC 9266) is offered only on TLS 1.3: on 1.2 it is safe only with the
    /// extended master secret, which we cannot confirm through rustls' API.
    pub fn channel_binding(&self) -> CbInfo {
        channel_binding(self.stream.get_ref().1, self.server_end_point.clone())
    }
}

/// Channel-binding data of a server connection whose leaf certificate hashes to
/// `server_end_point`.
pub fn channel_binding(conn: &ServerConnection, server_end_point: Option<Vec<u8>>) -> CbInfo {
    let exporter = if conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3) {
        let mut out = vec![0u8; 32];
        conn.export_keying_material(&mut out, b"EXPORTER-Channel-Binding", None)
            .is_ok()
            .then_some(out)
    } else {
        None
    };
    CbInfo {
        exporter,
        server_end_point,
    }
}

/// The certificate source every TLS config shares: the current `[tls]` or self-signed
/// certificate, or ACME's (falling back to the self-signed one before the first issuance).
#[derive(Debug)]
pub struct Certs {
    current: RwLock<Arc<CertifiedKey>>,
    acme: Option<Arc<rustls_acme::ResolvesServerCertAcme>>,
    /// For the ACME certificate as a client certificate (see `Acme::client_key`).
    acme_client: Option<Arc<Acme>>,
}

impl Certs {
    fn set(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = key;
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Our certificate as a TLS client (outgoing federation, for the peer's SASL EXTERNAL): the
/// same one our listeners present — with ACME the issued one once there is one, the
/// self-signed fallback before.
impl rustls::client::ResolvesClientCert for Certs {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.acme_client
            .as_ref()
            .and_then(|a| a.client_key())
            .or_else(|| Some(self.current()))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(acme) = &self.acme else {
            return Some(self.current());
        };
        let challenge = rustls_acme::is_tls_alpn_challenge(&hello);
        match acme.resolve(hello) {
            Some(key) => Some(key),
            // A challenge gets the challenge certificate or nothing, never a normal one.
            None if challenge => None,
            None => Some(self.current()),
        }
    }
}

/// A resolver that always presents one certificate (see `TlsSetup::pinned`).
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

struct Pinned {
    alpn: Vec<Vec<u8>>,
    key: Arc<CertifiedKey>,
    config: Arc<ServerConfig>,
    end_point: Option<Vec<u8>>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What identifies one version of a file: a replaced or rewritten file changes at least one.
type Stamp = Option<(std::time::SystemTime, u64, u64)>;

fn file_stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// A `[tls]` pair as rustls wants it; the key must belong to the leaf certificate.
pub fn load_pair(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let (certs, key_der) = read_pem_pair(cert, key)?;
    CertifiedKey::from_der(certs, key_der, provider).map_err(|e| {
        TlsError(format!(
            "tls: certificate {} and key {} do not fit together: {e}",
            cert.display(),
            key.display()
        ))
    })
}

/// The self-signed certificate for `domain` (made once, then reused), and its path.
fn self_signed(
    domain: &str,
    data_dir: &Path,
    provider: &CryptoProvider,
) -> Result<(CertifiedKey, PathBuf), TlsError> {
    let (c, k) = self_signed_paths(data_dir, domain);
    if !c.exists() || !k.exists() {
        make_self_signed(domain, &c, &k)?;
    }
    Ok((load_pair(&c, &k, provider)?, c))
}

/// The end of a certificate's validity (`notAfter`) as an RFC 3339 time, for logs.
pub fn not_after(cert: &[u8]) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let t = parsed.validity().not_after.timestamp();
    Some(crate::time::rfc3339(t.max(0) as u64))
}

fn read_pem_pair(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| {
            TlsError(format!(
                "tls: cannot read certificate {}: {e}",
                cert.display()
            ))
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            TlsError(format!(
                "tls: bad PEM in certificate {}: {e}",
                cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "tls: no certificate found in {} (expected a PEM file with BEGIN CERTIFICATE)",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        TlsError(format!(
            "tls: cannot read private key {}: {e} (expected a PEM private key)",
            key.display()
        ))
    })?;
    Ok((certs, key))
}

fn self_signed_paths(data_dir: &Path, domain: &str) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("tls");
    (
        dir.join(format!("{domain}.selfsigned.crt")),
        dir.join(format!("{domain}.selfsigned.key")),
    )
}

fn make_self_signed(domain: &str, cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
    let names = vec![domain.to_string(), format!("*.{domain}")];
    let ck = rcgen::generate_simple_self_signed(names).map_err(|e| {
        TlsError(format!(
            "tls: cannot generate a self-signed certificate: {e}"
        ))
    })?;
    if let Some(dir) = cert_path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| TlsError(format!("tls: cannot create {}: {e}", dir.display())))?;
    }
    write_private(key_path, ck.key_pair.serialize_pem().as_bytes())?;
    std::fs::write(cert_path, ck.cert.pem())
        .map_err(|e| TlsError(format!("tls: cannot write {}: {e}", cert_path.display())))?;
    log::info!(
        "tls: generated a self-signed certificate for {domain} in {} (clients will warn; set [acme] email, or [tls] cert and key, for a real one)",
        cert_path.display()
    );
    Ok(())
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    opts.open(path)
        .and_then(|mut f| f.write_all(data))
        .map_err(|e| TlsError(format!("tls: cannot write {}: {e}", path.display())))
}

/// RFC 5929 §4.1: hash the certificate with the hash of its signature algorithm, SHA-256 when
/// that is MD5 or SHA-1. Unknown algorithms (e.g. Ed25519, RSA-PSS) give `None`, and then
/// `tls-server-end-point` is not offered rather than offered wrong.
pub fn end_point_hash(cert: &[u8]) -> Option<Vec<u8>> {
    use ring::digest;
    let alg = match signature_oid(cert)? {
        // sha256/sha1/md5 with RSA, ecdsa-with-SHA256, ecdsa-with-SHA1
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b | 0x05 | 0x04]
        | [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]
        | [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01] => &digest::SHA256,
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c]
        | [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03] => &digest::SHA384,
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d]
        | [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04] => &digest::SHA512,
        _ => return None,
    };
    Some(digest::digest(alg, cert).as_ref().to_vec())
}

/// The OID of `Certificate.signatureAlgorithm` (RFC 5280 §4.1), read with a minimal DER walk.
fn signature_oid(cert: &[u8]) -> Option<&[u8]> {
    let (tag, body, _) = der_next(cert)?;
    if tag != 0x30 {
        return None;
    }
    let (_, _, rest) = der_next(body)?; // tbsCertificate
    let (tag, alg, _) = der_next(rest)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, oid, _) = der_next(alg)?;
    (tag == 0x06).then_some(oid)
}

/// One DER TLV: (tag, contents, remaining input).
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kith-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn self_signed_is_made_once_and_reused() {
        let dir = temp_dir("reuse");
        let a = TlsSetup::load(None, None, "localhost", &dir).expect("first load");
        let CertSource::SelfSigned { cert } = &a.source else {
            panic!("not self-signed")
        };
        let first = std::fs::read(cert).expect("cert file");
        let b = TlsSetup::load(None, None, "localhost", &dir).expect("second load");
        assert_eq!(first, std::fs::read(cert).expect("cert file"));
        assert_eq!(a.certs.current().cert, b.certs.current().cert);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A handshake through `TlsSetup::accept` over a socket pair: what the client saw (the
    /// leaf certificate, the negotiated ALPN) and what the server reports for channel binding.
    fn handshake(setup: &TlsSetup, alpn: &[&[u8]]) -> (Vec<u8>, Option<Vec<u8>>, Option<Vec<u8>>) {
        use futures_rustls::rustls::pki_types::ServerName;
        use futures_rustls::rustls::ClientConfig;
        let p = provider();
        let mut client = ClientConfig::builder_with_provider(p.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            // The test only looks at the certificate, so any is accepted.
            .with_custom_certificate_verifier(crate::net::trust::deferred_server_verifier(p))
            .with_no_client_auth();
        client.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        let (a, b) = smol::net::unix::UnixStream::pair().unwrap();
        smol::block_on(async {
            let connector = futures_rustls::TlsConnector::from(Arc::new(client));
            let name = ServerName::try_from("localhost").unwrap();
            let (c, s) =
                futures_lite::future::zip(connector.connect(name, a), setup.accept(b, alpn)).await;
            let c = c.expect("client handshake");
            let s = s.expect("server handshake").expect("not a challenge");
            let leaf = c.get_ref().1.peer_certificates().unwrap()[0].to_vec();
            let negotiated = s.stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            (leaf, s.channel_binding().server_end_point, negotiated)
        })
    }

    /// `accept_slim` against a rustls client: data both ways (more than one record), the
    /// client's first bytes sent right behind its Finished, a KeyUpdate asking for ours, the
    /// exporter both sides see, idle buffers, close_notify; and TLS 1.2 staying on rustls.
    #[test]
    fn slim_connections_carry_data_key_updates_and_close() {
        use futures_lite::{AsyncReadExt, AsyncWriteExt};
        use futures_rustls::rustls::pki_types::ServerName;
        use futures_rustls::rustls::ClientConfig;
        let dir = temp_dir("slim");
        let setup = TlsSetup::load(None, None, "localhost", &dir).expect("load");
        let p = provider();
        for versions in [
            &[&rustls::version::TLS13][..],
            &[&rustls::version::TLS12][..],
        ] {
            let client = ClientConfig::builder_with_provider(p.clone())
                .with_protocol_versions(versions)
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(crate::net::trust::deferred_server_verifier(
                    p.clone(),
                ))
                .with_no_client_auth();
            let tls13 = versions[0] == &rustls::version::TLS13;
            let (a, b) = smol::net::unix::UnixStream::pair().unwrap();
            smol::block_on(async {
                let connector = futures_rustls::TlsConnector::from(Arc::new(client));
                let name = ServerName::try_from("localhost").unwrap();
                let client = async {
                    let mut c = connector.connect(name, a).await.expect("client handshake");
                    c.write_all(b"hello").await.unwrap();
                    c.flush().await.unwrap();
                    c
                };
                let (c, s) = futures_lite::future::zip(client, setup.accept_slim(b, &[])).await;
                let mut c = c;
                let (mut s, cb) = s.expect("server handshake").expect("not a challenge");
                assert_eq!(s.is_slim(), tls13);
                if tls13 {
                    let mut theirs = vec![0u8; 32];
                    c.get_ref()
                        .1
                        .export_keying_material(&mut theirs, b"EXPORTER-Channel-Binding", None)
                        .unwrap();
                    assert_eq!(cb.exporter, Some(theirs));
                }
                let mut got = [0u8; 5];
                s.read_exact(&mut got).await.unwrap();
                assert_eq!(&got, b"hello");
                let big: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
                s.write_all(&big).await.unwrap();
                s.flush().await.unwrap();
                let mut back = vec![0u8; big.len()];
                c.read_exact(&mut back).await.unwrap();
                assert_eq!(back, big);
                if tls13 {
                    assert_eq!(
                        s.buffer_capacity(),
                        Some(0),
                        "an idle connection holds buffers"
                    );
                    // rustls's KeyUpdate asks the peer to update too.
                    c.get_mut().1.refresh_traffic_keys().unwrap();
                }
                c.write_all(b"again").await.unwrap();
                c.flush().await.unwrap();
                s.read_exact(&mut got).await.unwrap();
                assert_eq!(&got, b"again");
                s.write_all(b"after").await.unwrap();
                s.flush().await.unwrap();
                c.read_exact(&mut got).await.unwrap();
                assert_eq!(&got, b"after");
                c.close().await.unwrap();
                let mut rest = Vec::new();
                assert_eq!(s.read_to_end(&mut rest).await.unwrap(), 0);
            });
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn end_point_follows_the_certificate_each_handshake_presented() {
        let dir = temp_dir("rotate");
        let setup = TlsSetup::load(None, None, "localhost", &dir).expect("load");
        let (leaf, end_point, alpn) = handshake(&setup, &[ALPN_XMPP_CLIENT]);
        assert_eq!(alpn.as_deref(), Some(ALPN_XMPP_CLIENT));
        // rcgen signs with ecdsa-with-SHA256, so the end-point hash is SHA-256 of the leaf.
        assert_eq!(
            end_point,
            Some(
                ring::digest::digest(&ring::digest::SHA256, &leaf)
                    .as_ref()
                    .to_vec()
            )
        );

        // A new certificate (a reloaded file, a renewal): the next handshake presents it and
        // channel binding hashes it, not the one the setup started with.
        let (c, k) = (dir.join("new.crt"), dir.join("new.key"));
        make_self_signed("localhost", &c, &k).expect("second certificate");
        setup.set_certificate(load_pair(&c, &k, &provider()).expect("load"));
        let (leaf2, end_point2, _) = handshake(&setup, &[ALPN_XMPP_CLIENT]);
        assert_ne!(leaf, leaf2);
        assert_eq!(
            end_point2,
            Some(
                ring::digest::digest(&ring::digest::SHA256, &leaf2)
                    .as_ref()
                    .to_vec()
            )
        );
        // No ALPN (STARTTLS) shares the certificate but not the config.
        let (leaf3, _, alpn3) = handshake(&setup, &[]);
        assert_eq!((leaf3, alpn3), (leaf2, None));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let dir = temp_dir("mismatch");
        let (c1, k1) = (dir.join("a.crt"), dir.join("a.key"));
        let (c2, k2) = (dir.join("b.crt"), dir.join("b.key"));
        make_self_signed("localhost", &c1, &k1).unwrap();
        make_self_signed("localhost", &c2, &k2).unwrap();
        let err = load_pair(&c1, &k2, &provider()).expect_err("must fail");
        assert!(err.to_string().contains("do not fit together"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn changed_files_are_reloaded_and_bad_ones_keep_the_old_certificate() {
        let dir = temp_dir("watch");
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        make_self_signed("localhost", &c, &k).unwrap();
        let setup = TlsSetup::load(Some(&c), Some(&k), "localhost", &dir).unwrap();
        let first = setup.certs.current().cert.clone();
        smol::block_on(async {
            let poll = Duration::from_millis(100);
            let watching = setup.watch_files_every(poll);
            let test = async {
                // A key that does not fit: two polls later the old certificate is still served.
                let (c2, k2) = (dir.join("other.crt"), dir.join("other.key"));
                make_self_signed("localhost", &c2, &k2).unwrap();
                std::fs::copy(&k2, &k).unwrap();
                smol::Timer::after(poll * 3).await;
                assert_eq!(setup.certs.current().cert, first);
                // Its certificate arrives: the pair loads at the next poll.
                std::fs::copy(&c2, &c).unwrap();
                smol::Timer::after(poll * 3).await;
                let now = setup.certs.current().cert.clone();
                assert_ne!(now, first);
                assert_eq!(
                    now[0].as_ref(),
                    &std::fs::read(&c2)
                        .map(|pem| {
                            CertificateDer::pem_slice_iter(&pem)
                                .next()
                                .unwrap()
                                .unwrap()
                                .to_vec()
                        })
                        .unwrap()[..]
                );
            };
            futures_lite::future::or(
                async {
                    watching.await;
                    panic!("watch ended")
                },
                test,
            )
            .await;
        });
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_cert_file_names_the_file() {
        let dir = temp_dir("missing");
        let err = TlsSetup::load(
            Some(Path::new("/nonexistent/cert.pem")),
            Some(Path::new("/nonexistent/key.pem")),
            "example.org",
            &dir,
        )
        .err()
        .expect("must fail");
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
    }

    #[test]
    fn der_walk_rejects_garbage() {
        assert_eq!(end_point_hash(&[]), None);
        assert_eq!(end_point_hash(&[0x30, 0x85, 1, 2, 3]), None);
        assert_eq!(end_point_hash(&[0x30, 0x03, 0x30, 0x01]), None);
    }
}
