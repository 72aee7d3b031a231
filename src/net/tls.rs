//! TLS configuration: certificates from the config or a self-signed default kept in the data
//! directory, the rustls server configs (STARTTLS and direct TLS differ only in ALPN), and the
//! channel-binding data SCRAM-PLUS needs.
//!
//! Only rustls with the `ring` provider, TLS 1.2 and 1.3 (RFC 7590 forbids older versions).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_rustls::rustls::{self, ServerConfig, ServerConnection};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::sasl::CbInfo;

/// ALPN protocol id for direct-TLS client connections (XEP-0368).
pub const ALPN_XMPP_CLIENT: &[u8] = b"xmpp-client";

/// Where the certificate came from, for logs and `kith check`.
#[derive(Clone, Debug)]
pub enum CertSource {
    Configured { cert: PathBuf },
    SelfSigned { cert: PathBuf },
}

/// Everything a listener needs to run TLS.
pub struct TlsSetup {
    /// For STARTTLS on 5222: no ALPN, since a client may offer any and must not be refused.
    pub starttls: Arc<ServerConfig>,
    /// For direct TLS on 5223: ALPN `xmpp-client`.
    pub direct: Arc<ServerConfig>,
    /// RFC 5929 `tls-server-end-point` data: the hash of our leaf certificate, when its
    /// signature algorithm makes the hash well-defined.
    pub server_end_point: Option<Vec<u8>>,
    pub source: CertSource,
    /// The certificate and its signing key, for configs built elsewhere (federation presents
    /// it on both sides of its handshakes).
    pub certified: Arc<rustls::sign::CertifiedKey>,
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
        let (certs, key, source) = match (cert, key) {
            (Some(c), Some(k)) => {
                let (certs, key) = read_pem_pair(c, k)?;
                (
                    certs,
                    key,
                    CertSource::Configured {
                        cert: c.to_path_buf(),
                    },
                )
            }
            _ => {
                let (c, k) = self_signed_paths(data_dir, domain);
                if !c.exists() || !k.exists() {
                    make_self_signed(domain, &c, &k)?;
                }
                let (certs, key) = read_pem_pair(&c, &k)?;
                (certs, key, CertSource::SelfSigned { cert: c })
            }
        };
        let server_end_point = certs.first().and_then(|leaf| end_point_hash(leaf));
        let provider = rustls::crypto::ring::default_provider();
        let signing = provider
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(|e| TlsError(format!("tls: unusable private key: {e}")))?;
        let certified = Arc::new(rustls::sign::CertifiedKey::new(certs.clone(), signing));
        let starttls = server_config(certs.clone(), key.clone_key(), Vec::new())?;
        let direct = server_config(certs, key, vec![ALPN_XMPP_CLIENT.to_vec()])?;
        Ok(TlsSetup {
            starttls,
            direct,
            server_end_point,
            source,
            certified,
        })
    }

    /// Channel-binding data for one finished handshake.
    ///
    /// `tls-exporter` (RFC 9266) is offered only on TLS 1.3: on 1.2 it is safe only with the
    /// extended master secret, which we cannot confirm through rustls' API.
    pub fn channel_binding(&self, conn: &ServerConnection) -> CbInfo {
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
            server_end_point: self.server_end_point.clone(),
        }
    }
}

fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: Vec<Vec<u8>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError(format!("tls: cannot build configuration: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError(format!("tls: certificate and key do not fit together: {e}")))?;
    config.alpn_protocols = alpn;
    Ok(Arc::new(config))
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
        "tls: generated a self-signed certificate for {domain} in {} (clients will warn; set [tls] cert and key for a real one)",
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
        // rcgen signs with ecdsa-with-SHA256, so the end-point hash is SHA-256 sized.
        assert_eq!(a.server_end_point.as_ref().map(Vec::len), Some(32));
        assert_eq!(a.server_end_point, b.server_end_point);
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
