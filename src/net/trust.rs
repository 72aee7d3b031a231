//! Trust in other servers' certificates (RFC 6120 §13.7.2, RFC 6125): the compiled-in public
//! roots plus `[s2s] extra_ca`, and the rustls configs federation uses.
//!
//! The TLS handshake itself never fails on the peer's certificate. Whether a certificate is
//! good enough is a decision of the s2s negotiation (`s2s::stream`): a certificate valid for
//! the peer's domain allows SASL EXTERNAL; an untrusted one may still carry a dialback-only
//! stream when `[s2s] require_valid_certs = false`. So the verifiers here check only the
//! handshake signatures (the peer holds the key of the certificate it sent) and hand the chain
//! over; [`Trust::chain_ok`] and [`crate::s2s::names`] judge it afterwards.
//!
//! Must not know: streams, dialback, routing.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use futures_rustls::rustls::{
    self,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
    ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::TrustAnchor;

use crate::net::tls::Certs;
pub use crate::net::tls::ALPN_XMPP_SERVER;

/// The trust roots for other servers' certificates.
pub struct Trust {
    anchors: Vec<TrustAnchor<'static>>,
    provider: Arc<CryptoProvider>,
}

/// A trust setup problem for the operator (an unreadable `extra_ca`).
#[derive(Debug)]
pub struct TrustError(String);

impl fmt::Display for TrustError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TrustError {}

impl Trust {
    /// The public roots (webpki-roots, compiled in: a static binary can't count on the host's
    /// CA bundle) plus every certificate in `extra_ca`.
    pub fn load(extra_ca: Option<&Path>) -> Result<Trust, TrustError> {
        let mut anchors = webpki_roots::TLS_SERVER_ROOTS.to_vec();
        if let Some(path) = extra_ca {
            let err = |e: &dyn fmt::Display| {
                TrustError(format!(
                    "[s2s] extra_ca: cannot read {}: {e} (it must be a PEM file of CA certificates)",
                    path.display()
                ))
            };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| err(&e))?
                .collect::<Result<_, _>>()
                .map_err(|e| err(&e))?;
            if certs.is_empty() {
                return Err(err(&"no certificate in it"));
            }
            for der in &certs {
                let anchor = webpki::anchor_from_trusted_cert(der).map_err(|e| err(&e))?;
                anchors.push(anchor.to_owned());
            }
        }
        Ok(Trust {
            anchors,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        })
    }

    /// Whether `chain` (leaf first) leads to a trusted root and is within its validity now.
    /// Names are checked separately (`s2s::names`), per domain.
    pub fn chain_ok(&self, chain: &[CertificateDer<'_>]) -> bool {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return false;
        };
        let Ok(ee) = webpki::EndEntityCert::try_from(leaf) else {
            return false;
        };
        let algs = self.provider.signature_verification_algorithms.all;
        // A server's certificate is a TLS server certificate, also when it is presented as
        // the client's on an incoming stream; some CAs issue clientAuth-only ones for that.
        [
            webpki::KeyUsage::server_auth(),
            webpki::KeyUsage::client_auth(),
        ]
        .into_iter()
        .any(|usage| {
            ee.verify_for_usage(
                algs,
                &self.anchors,
                intermediates,
                UnixTime::now(),
                usage,
                None,
                None,
            )
            .is_ok()
        })
    }

    /// The client side of outgoing streams: presents our certificate (for the peer's SASL
    /// EXTERNAL) and accepts any server certificate at the TLS level (see the module docs).
    pub fn client_config(&self, ours: Arc<Certs>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("ring supports TLS 1.2 and 1.3")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Deferred(self.provider.clone())))
            .with_client_cert_resolver(ours);
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.enable_sni = true;
        Arc::new(config)
    }

    /// The server side of incoming streams: asks for (but doesn't require) the peer's
    /// certificate, for SASL EXTERNAL.
    pub fn server_config(&self, ours: Arc<Certs>, alpn: &[&[u8]]) -> Arc<ServerConfig> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("ring supports TLS 1.2 and 1.3")
            .with_client_cert_verifier(Arc::new(Deferred(self.provider.clone())))
            .with_cert_resolver(ours);
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// The verifier of outgoing handshakes on its own: any certificate, signatures checked. For
/// tests that look at the certificate a server presents.
#[cfg(test)]
pub(crate) fn deferred_server_verifier(
    provider: Arc<CryptoProvider>,
) -> Arc<dyn ServerCertVerifier> {
    Arc::new(Deferred(provider))
}

/// Checks the handshake signatures, defers the judgement of the certificate to the stream.
#[derive(Debug)]
struct Deferred(Arc<CryptoProvider>);

impl Deferred {
    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
}

impl ServerCertVerifier for Deferred {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for Deferred {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA (as PEM) and a leaf it signed, both made with rcgen.
    fn ca_and_leaf(name: &str) -> (String, CertificateDer<'static>) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        (ca.pem(), leaf.der().clone())
    }

    fn trust_with(ca_pem: &str) -> Trust {
        let dir = std::env::temp_dir().join(format!("kith-trust-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ca.pem");
        std::fs::write(&path, ca_pem).unwrap();
        let trust = Trust::load(Some(&path)).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        trust
    }

    #[test]
    fn a_chain_to_an_extra_ca_is_trusted_and_others_are_not() {
        let (ca, leaf) = ca_and_leaf("b.example");
        let (_, stranger) = ca_and_leaf("b.example");
        let trust = trust_with(&ca);
        assert!(trust.chain_ok(std::slice::from_ref(&leaf)));
        assert!(!trust.chain_ok(std::slice::from_ref(&stranger)));
        assert!(!trust.chain_ok(&[]));
        // The public roots alone don't know our test CA.
        let public = Trust::load(None).unwrap();
        assert!(!public.chain_ok(std::slice::from_ref(&leaf)));
    }

    #[test]
    fn an_unreadable_extra_ca_names_the_file() {
        let e = Trust::load(Some(Path::new("/nonexistent/ca.pem")))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let dir = std::env::temp_dir().join(format!("kith-trust-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a pem file\n").unwrap();
        let e = Trust::load(Some(&empty)).err().unwrap().to_string();
        assert!(e.contains("no certificate"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
