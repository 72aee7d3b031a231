//! ACME (RFC 8555) certificates through rustls-acme: one order for `DOMAIN`,
//! `upload.DOMAIN` and `conference.DOMAIN`, answered with TLS-ALPN-01 (RFC 8737, by
//! `net::tls::TlsSetup::accept` on every TLS listener) or HTTP-01 (by the plain HTTP
//! listener through [`Acme::http01_key_auth`]), cached in `DATA/acme/` and renewed when two
//! thirds of the lifetime have passed, without a restart.
//!
//! Owns: the rustls-acme configuration (directory, contact, trusted roots for the ACME
//! server's HTTPS), the cache, and the task that drives rustls-acme's state machine and turns
//! its events into log lines. Must not know: listeners or XMPP.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_lite::StreamExt as _;
use futures_rustls::rustls::sign::CertifiedKey;
use futures_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use rustls_acme::caches::DirCache;
use rustls_acme::{
    AccountCache, AcmeConfig, AcmeState, CertCache, EventError, EventOk, ResolvesServerCertAcme,
    UseChallenge,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{AcmeChallenge, Config};

/// rustls-acme retries a failed order after 1 s, doubling up to 2^16 s (about 18 h); the
/// delay is mirrored here only to say in the log when the next try comes.
const MAX_BACKOFF_EXPONENT: u32 = 16;

/// The ACME side of the certificate source; `net::tls` and the HTTP listener use it.
pub struct Acme {
    resolver: Arc<ResolvesServerCertAcme>,
    /// The cache, which also holds the deployed certificate as a key ready for TLS clients.
    seen: Arc<Seen>,
    challenge_config: Arc<ServerConfig>,
    /// The names on the certificate, the domain first.
    pub names: Vec<String>,
    pub directory: String,
    pub challenge: AcmeChallenge,
}

impl fmt::Debug for Acme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acme")
            .field("names", &self.names)
            .field("directory", &self.directory)
            .finish_non_exhaustive()
    }
}

/// The rustls-acme state machine, to be driven by [`Driver::run`] on the executor.
pub struct Driver {
    state: AcmeState<io::Error, io::Error>,
    cache: Arc<Seen>,
    names: String,
    directory: String,
}

/// An ACME setup problem for the operator.
#[derive(Debug)]
pub struct AcmeError(String);

impl fmt::Display for AcmeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AcmeError {}

/// The names one certificate covers: the domain and the HTTP upload and MUC services kith
/// runs on its subdomains.
pub fn names(domain: &str) -> Vec<String> {
    vec![
        domain.to_string(),
        format!("upload.{domain}"),
        format!("conference.{domain}"),
    ]
}

impl Acme {
    /// Prepares ACME for `config` (which must have `[acme] email`): the cache directory
    /// (`DATA/acme`, mode 0700: it holds the account and certificate keys) and the client
    /// that talks to the directory. Nothing is sent until the [`Driver`] runs.
    pub fn start(config: &Config) -> Result<(Arc<Acme>, Driver), AcmeError> {
        let acme = &config.acme;
        let email = acme
            .email
            .as_deref()
            .ok_or_else(|| AcmeError("acme: [acme] email is not set (it turns ACME on)".into()))?;
        let dir = config.data_dir.join("acme");
        private_dir(&dir)?;
        let names = names(&config.domain);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let base = match acme.directory_ca.as_deref() {
            None => AcmeConfig::new_with_provider(&names, provider.clone()),
            Some(ca) => {
                AcmeConfig::new_with_client_config(&names, client_config(ca, provider.clone())?)
            }
        };
        let cache = Arc::new(Seen {
            dir: DirCache::new(dir.clone()),
            path: dir,
            last_cert: Mutex::new(None),
            key: Mutex::new(None),
            provider: provider.clone(),
        });
        let state = base
            .directory(&acme.directory)
            .contact_push(format!("mailto:{email}"))
            .challenge_type(match acme.challenge {
                AcmeChallenge::TlsAlpn01 => UseChallenge::TlsAlpn01,
                AcmeChallenge::Http01 => UseChallenge::Http01,
            })
            .cache(SharedCache(cache.clone()))
            .state();
        let handle = Arc::new(Acme {
            resolver: state.resolver(),
            seen: cache.clone(),
            challenge_config: state.challenge_rustls_config_with_provider(provider),
            names: names.clone(),
            directory: acme.directory.clone(),
            challenge: acme.challenge,
        });
        let driver = Driver {
            state,
            cache,
            names: names.join(", "),
            directory: acme.directory.clone(),
        };
        Ok((handle, driver))
    }

    /// The certificate resolver rustls-acme keeps current (and that answers challenges).
    pub fn resolver(&self) -> Arc<ResolvesServerCertAcme> {
        self.resolver.clone()
    }

    /// The deployed certificate with its key, for presenting as a TLS *client* (outgoing
    /// federation: the peer's SASL EXTERNAL). rustls-acme hands its certificate only to a
    /// ClientHello, so it is taken from the cache as it is loaded or stored; `None` until
    /// the first issuance.
    pub fn client_key(&self) -> Option<Arc<CertifiedKey>> {
        self.seen
            .key
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The server config for TLS-ALPN-01 challenge connections (ALPN `acme-tls/1`).
    pub fn challenge_config(&self) -> Arc<ServerConfig> {
        self.challenge_config.clone()
    }

    /// HTTP-01 (RFC 8555 §8.3): the body to answer `GET /.well-known/acme-challenge/TOKEN`
    /// with, while a challenge for `token` is pending; `None` means 404.
    pub fn http01_key_auth(&self, token: &str) -> Option<String> {
        self.resolver.get_http_01_key_auth(token)
    }
}

impl Driver {
    /// Drives ordering and renewal forever, one log line per event. Cancel the task to stop.
    pub async fn run(mut self) {
        log::info!(
            "acme: certificate for {} from {} (cache {}); the self-signed one is served until it is deployed",
            self.names,
            self.directory,
            self.cache.path.display()
        );
        let mut failures: u32 = 0;
        let mut deployed = false;
        // rustls-acme reports a new certificate before caching it; the line waits for the
        // cache, which is where the certificate becomes readable for its validity.
        let mut unannounced = false;
        while let Some(event) = self.state.next().await {
            match event {
                Ok(EventOk::DeployedCachedCert) => {
                    deployed = true;
                    log::info!(
                        "acme: using the cached certificate for {}{}",
                        self.names,
                        self.validity()
                    );
                }
                Ok(EventOk::DeployedNewCert) => {
                    failures = 0;
                    unannounced = true;
                }
                Ok(EventOk::CertCacheStore) if unannounced => {
                    unannounced = false;
                    self.announce(deployed);
                    deployed = true;
                }
                Ok(EventOk::CertCacheStore) => log::debug!("acme: certificate cached"),
                Ok(EventOk::AccountCacheStore) => log::debug!("acme: account key cached"),
                Err(EventError::CertCacheStore(e)) => {
                    if unannounced {
                        unannounced = false;
                        self.announce(deployed);
                        deployed = true;
                    }
                    log::error!(
                        "acme: cannot cache the certificate in {}: {e}; it is in use, but a restart will order a new one",
                        self.cache.path.display()
                    );
                }
                Err(EventError::Order(e)) => {
                    let retry = Duration::from_secs(1 << failures.min(MAX_BACKOFF_EXPONENT));
                    failures += 1;
                    let what = if deployed { "renewal" } else { "order" };
                    log::warn!(
                        "acme: {what} for {} failed: {e}; next try in {}",
                        self.names,
                        show_delay(retry)
                    );
                }
                Err(e) => log::error!(
                    "acme: {e} (check that {} is writable)",
                    self.cache.path.display()
                ),
            }
        }
    }

    fn announce(&self, renewal: bool) {
        log::info!(
            "acme: {} certificate for {} deployed{}",
            if renewal { "renewed" } else { "new" },
            self.names,
            self.validity()
        );
    }

    /// ", valid until T, renewal from R" for the certificate just deployed.
    fn validity(&self) -> String {
        let Some((not_before, not_after)) = self.cache.last_validity() else {
            return String::new();
        };
        // rustls-acme starts renewing when two thirds of the lifetime have passed.
        let renew = not_after - (not_after - not_before + 2) / 3;
        format!(
            ", valid until {}, renewal from {}",
            crate::time::rfc3339(not_after.max(0) as u64),
            crate::time::rfc3339(renew.max(0) as u64)
        )
    }
}

/// The client config for talking to an ACME directory whose HTTPS certificate comes from the
/// CAs in `ca_file` only (a private CA, or a test CA such as pebble's). Without one,
/// rustls-acme uses the web roots.
fn client_config(
    path: &Path,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<ClientConfig>, AcmeError> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            AcmeError(format!(
                "acme: cannot read [acme] directory_ca {}: {e} (expected PEM certificates)",
                path.display()
            ))
        })?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(AcmeError(format!(
            "acme: [acme] directory_ca {} holds no usable CA certificate (expected PEM with BEGIN CERTIFICATE)",
            path.display()
        )));
    }
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| AcmeError(format!("acme: cannot build the TLS client: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Creates `dir` with mode 0700, or narrows an existing one to it: DirCache writes the account
/// and certificate private keys with the default file mode.
fn private_dir(dir: &Path) -> Result<(), AcmeError> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let fail = |e: io::Error| AcmeError(format!("acme: cannot create {}: {e}", dir.display()));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(fail)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(fail)
}

/// "3 s", "4 min", "18 h".
fn show_delay(d: Duration) -> String {
    match d.as_secs() {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s => format!("{} h", s / 3600),
    }
}

/// DirCache, remembering the last certificate it loaded or stored so the log can say how long
/// it is valid.
struct Seen {
    dir: DirCache<PathBuf>,
    /// DirCache's directory (it does not expose it), for log lines.
    path: PathBuf,
    last_cert: Mutex<Option<Vec<u8>>>,
    /// `last_cert` as a signing key and chain.
    key: Mutex<Option<Arc<CertifiedKey>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl Seen {
    fn remember(&self, pem: &[u8]) {
        *self.last_cert.lock().unwrap_or_else(|e| e.into_inner()) = Some(pem.to_vec());
        match certified_key(pem, &self.provider) {
            Some(key) => *self.key.lock().unwrap_or_else(|e| e.into_inner()) = Some(key),
            None => log::warn!(
                "acme: cannot read the cached certificate's key; outgoing federation presents the previous certificate"
            ),
        }
    }

    /// notBefore and notAfter (Unix seconds) of the remembered certificate.
    fn last_validity(&self) -> Option<(i64, i64)> {
        let pem = self
            .last_cert
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        // The cache file is the key, then the chain, leaf first.
        let leaf = CertificateDer::pem_slice_iter(&pem).next()?.ok()?;
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf).ok()?;
        let v = cert.validity();
        Some((v.not_before.timestamp(), v.not_after.timestamp()))
    }
}

/// The cache file's key and chain (key first, then the chain, leaf first) as a CertifiedKey.
fn certified_key(
    pem: &[u8],
    provider: &rustls::crypto::CryptoProvider,
) -> Option<Arc<CertifiedKey>> {
    let key = PrivateKeyDer::from_pem_slice(pem).ok()?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .ok()?;
    if chain.is_empty() {
        return None;
    }
    let signer = provider.key_provider.load_private_key(key).ok()?;
    Some(Arc::new(CertifiedKey::new(chain, signer)))
}

/// rustls-acme takes its cache by value; this shares one `Seen` with the driver.
struct SharedCache(Arc<Seen>);

#[async_trait::async_trait]
impl CertCache for SharedCache {
    type EC = io::Error;

    async fn load_cert(
        &self,
        domains: &[String],
        directory_url: &str,
    ) -> io::Result<Option<Vec<u8>>> {
        let pem = self.0.dir.load_cert(domains, directory_url).await?;
        match &pem {
            Some(pem) => self.0.remember(pem),
            None => log::info!(
                "acme: no cached certificate for {}; ordering one from {directory_url}",
                domains.join(", ")
            ),
        }
        Ok(pem)
    }

    async fn store_cert(
        &self,
        domains: &[String],
        directory_url: &str,
        cert: &[u8],
    ) -> io::Result<()> {
        self.0.remember(cert);
        self.0.dir.store_cert(domains, directory_url, cert).await
    }
}

#[async_trait::async_trait]
impl AccountCache for SharedCache {
    type EA = io::Error;

    async fn load_account(
        &self,
        contact: &[String],
        directory_url: &str,
    ) -> io::Result<Option<Vec<u8>>> {
        self.0.dir.load_account(contact, directory_url).await
    }

    async fn store_account(
        &self,
        contact: &[String],
        directory_url: &str,
        account: &[u8],
    ) -> io::Result<()> {
        self.0
            .dir
            .store_account(contact, directory_url, account)
            .await
    }
}
