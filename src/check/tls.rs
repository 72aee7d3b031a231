//! `kith check tls`: grades a TLS listener the way the public XMPP observatories and SSL Labs
//! do: which protocol versions it accepts, which cipher suites, the certificate's key and
//! dates and whether it leads to a trusted CA; then a grade (A, B, C, T, F) with what lowered
//! it and what would lower it.
//!
//! Probes: rustls cannot speak TLS 1.0/1.1 or offer weak suites as a client, so those are
//! probed with a hand-built ClientHello (`client_hello`, pure) whose answer is classified by
//! `server_answer` (pure): a ServerHello means accepted, an alert or a closed socket means
//! refused. TLS 1.2 and 1.3 suites are probed with rustls, one suite per connection. XMPP
//! listeners are reached with STARTTLS (`--starttls`) or direct TLS.
//!
//! Owns: probing and the grading rules (`grade`, pure over the observed `Facts`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use futures_rustls::rustls::{
    self,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime},
    DigitallySignedStruct, SignatureScheme,
};

use super::{Finding, Part, Severity};
use crate::config::Config;

/// Where to connect and how.
#[derive(Clone, Debug)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// XMPP STARTTLS on a client stream to `domain` first.
    pub starttls: bool,
    /// The name to send in SNI, the stream's `to` and the chain check.
    pub domain: String,
}

/// What the probes observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub tls10: bool,
    pub tls11: bool,
    pub tls12: bool,
    pub tls13: bool,
    /// Accepted suites that are broken (RC4, NULL, export) or weak (3DES).
    pub broken_suites: bool,
    pub triple_des: bool,
    /// Accepts TLS 1.2 key exchange without forward secrecy (plain RSA).
    pub no_forward_secrecy: bool,
    /// Names of the TLS 1.2/1.3 suites rustls negotiated.
    pub suites: Vec<String>,
    /// e.g. ("RSA", 1024) or ("EC", 256).
    pub key: Option<(String, usize)>,
    pub expired: bool,
    pub not_yet_valid: bool,
    /// `Err(why)` when the chain does not lead to a trusted CA for the domain.
    pub trusted: Option<Result<(), String>>,
}

/// The grade and its reasons: what lowered it, and what would lower a good grade.
pub fn grade(f: &Facts) -> (&'static str, Vec<String>, Vec<String>) {
    let mut lowered = Vec::new();
    let mut grade = "A";
    let mut cap = |g: &'static str, why: String, lowered: &mut Vec<String>| {
        let rank = |g: &str| ["A", "B", "C", "T", "F"].iter().position(|x| *x == g);
        if rank(g) > rank(grade) {
            grade = g;
        }
        lowered.push(why);
    };
    if !f.tls12 && !f.tls13 {
        cap(
            "F",
            "neither TLS 1.2 nor 1.3 is accepted".into(),
            &mut lowered,
        );
    }
    if f.broken_suites {
        cap(
            "F",
            "accepts broken cipher suites (RC4, NULL or export)".into(),
            &mut lowered,
        );
    }
    if let Some((kind, bits)) = &f.key {
        let weak = match kind.as_str() {
            "RSA" => *bits < 2048,
            "EC" => *bits < 256,
            _ => false,
        };
        if weak {
            cap(
                "F",
                format!("the {kind} key has only {bits} bits"),
                &mut lowered,
            );
        }
    }
    if f.expired || f.not_yet_valid {
        cap("F", "the certificate is not valid now".into(), &mut lowered);
    }
    if f.triple_des {
        cap("C", "accepts 3DES cipher suites".into(), &mut lowered);
    }
    if f.tls10 || f.tls11 {
        cap(
            "B",
            "accepts TLS 1.0 or 1.1 (deprecated by RFC 8996)".into(),
            &mut lowered,
        );
    }
    if f.no_forward_secrecy {
        cap(
            "B",
            "accepts key exchange without forward secrecy (TLS_RSA_*)".into(),
            &mut lowered,
        );
    }
    if let Some(Err(why)) = &f.trusted {
        cap(
            "T",
            format!("the certificate is not trusted: {why}"),
            &mut lowered,
        );
    }
    let mut would = Vec::new();
    if !f.tls10 && !f.tls11 {
        would.push("enabling TLS 1.0 or 1.1 (B)".to_string());
    }
    if !f.tls13 {
        would.push("TLS 1.3 is not offered; servers without it fall behind".to_string());
    }
    would.push("an expired or untrusted certificate (T/F)".into());
    would.push("an RSA key under 2048 bits (F)".into());
    (grade, lowered, would)
}

// ---------------------------------------------------------------- hand-built hellos

pub const TLS10: u16 = 0x0301;
pub const TLS11: u16 = 0x0302;
pub const TLS12: u16 = 0x0303;

/// Suites that a modern server must refuse.
pub const BROKEN_SUITES: &[u16] = &[
    0x0005, // TLS_RSA_WITH_RC4_128_SHA
    0x0004, // TLS_RSA_WITH_RC4_128_MD5
    0xc011, // TLS_ECDHE_RSA_WITH_RC4_128_SHA
    0xc007, // TLS_ECDHE_ECDSA_WITH_RC4_128_SHA
    0x0001, // TLS_RSA_WITH_NULL_MD5
    0x0002, // TLS_RSA_WITH_NULL_SHA
    0x0003, // TLS_RSA_EXPORT_WITH_RC4_40_MD5
    0x0008, // TLS_RSA_EXPORT_WITH_DES40_CBC_SHA
];
pub const TRIPLE_DES_SUITES: &[u16] = &[
    0x000a, // TLS_RSA_WITH_3DES_EDE_CBC_SHA
    0xc012, // TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA
    0xc008, // TLS_ECDHE_ECDSA_WITH_3DES_EDE_CBC_SHA
];
pub const NO_FS_SUITES: &[u16] = &[
    0x002f, // TLS_RSA_WITH_AES_128_CBC_SHA
    0x0035, // TLS_RSA_WITH_AES_256_CBC_SHA
    0x009c, // TLS_RSA_WITH_AES_128_GCM_SHA256
    0x009d, // TLS_RSA_WITH_AES_256_GCM_SHA384
];
/// What a TLS 1.0/1.1 client of the last decade offered: ECDHE and plain RSA with CBC.
pub const LEGACY_SUITES: &[u16] = &[
    0xc013, 0xc014, 0xc009, 0xc00a, 0x0033, 0x0039, 0x002f, 0x0035, 0x000a,
];

/// A ClientHello record offering `version` and exactly `suites`, with SNI for `host` (unless
/// it is an IP address) and the extensions servers need to pick ECDHE.
pub fn client_hello(version: u16, suites: &[u16], host: &str) -> Vec<u8> {
    fn u16be(out: &mut Vec<u8>, v: usize) {
        out.extend_from_slice(&(v as u16).to_be_bytes());
    }
    let mut ext = Vec::new();
    if host.parse::<std::net::IpAddr>().is_err() && !host.is_empty() && host.len() < 250 {
        let name = host.as_bytes();
        ext.extend_from_slice(&[0, 0]);
        u16be(&mut ext, name.len() + 5);
        u16be(&mut ext, name.len() + 3);
        ext.push(0);
        u16be(&mut ext, name.len());
        ext.extend_from_slice(name);
    }
    // supported_groups: x25519, secp256r1, secp384r1.
    ext.extend_from_slice(&[0x00, 0x0a, 0, 8, 0, 6, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18]);
    // ec_point_formats: uncompressed.
    ext.extend_from_slice(&[0x00, 0x0b, 0, 2, 1, 0]);
    // renegotiation_info (empty): some servers refuse hellos without it.
    ext.extend_from_slice(&[0xff, 0x01, 0, 1, 0]);
    if version >= TLS12 {
        let algs: [u16; 9] = [
            0x0401, 0x0501, 0x0601, 0x0403, 0x0503, 0x0804, 0x0805, 0x0201, 0x0203,
        ];
        ext.extend_from_slice(&[0x00, 0x0d]);
        u16be(&mut ext, algs.len() * 2 + 2);
        u16be(&mut ext, algs.len() * 2);
        for a in algs {
            ext.extend_from_slice(&a.to_be_bytes());
        }
    }
    let mut body = Vec::new();
    body.extend_from_slice(&version.to_be_bytes());
    // The random needs no quality: nothing is encrypted, the handshake stops at ServerHello.
    body.extend((0..32u8).map(|i| i.wrapping_mul(37).wrapping_add(11)));
    body.push(0); // session id
    u16be(&mut body, suites.len() * 2);
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null
    u16be(&mut body, ext.len());
    body.extend_from_slice(&ext);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    u16be(&mut record, hs.len());
    record.extend_from_slice(&hs);
    record
}

/// How a server answered a hand-built hello.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Incomplete,
    /// A ServerHello choosing this version and suite.
    Hello {
        version: u16,
        suite: u16,
    },
    /// An alert, or anything that is not a ServerHello: refused.
    Refused,
}

pub fn server_answer(buf: &[u8]) -> Answer {
    if buf.len() < 6 {
        return Answer::Incomplete;
    }
    if buf[0] != 0x16 || buf[5] != 2 {
        return Answer::Refused;
    }
    // record(5) + handshake header(4) + version(2) + random(32) + session id length(1)
    if buf.len() < 44 {
        return Answer::Incomplete;
    }
    let version = u16::from_be_bytes([buf[9], buf[10]]);
    let sid = buf[43] as usize;
    match buf.get(44 + sid..46 + sid) {
        Some(s) => Answer::Hello {
            version,
            suite: u16::from_be_bytes([s[0], s[1]]),
        },
        None => Answer::Incomplete,
    }
}

// ---------------------------------------------------------------- probing

fn connect(target: &Target, timeout: Duration) -> Result<TcpStream, String> {
    let addrs: Vec<SocketAddr> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", target.host))?
        .collect();
    let mut last = String::from("no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                let _ = s.set_read_timeout(Some(timeout));
                let _ = s.set_write_timeout(Some(timeout));
                let mut s = s;
                if target.starttls {
                    starttls(&mut s, &target.domain)?;
                }
                return Ok(s);
            }
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Err(format!(
        "cannot connect to {}:{}: {last}",
        target.host, target.port
    ))
}

/// RFC 6120 §5.4.2 up to `<proceed/>`, on a client stream.
fn starttls(s: &mut TcpStream, domain: &str) -> Result<(), String> {
    let open = format!(
        "<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' \
         xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
    );
    s.write_all(open.as_bytes()).map_err(|e| e.to_string())?;
    read_until(s, "</stream:features>")?;
    s.write_all(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .map_err(|e| e.to_string())?;
    let answer = read_until(s, "/>")?;
    if answer.contains("<proceed") {
        Ok(())
    } else {
        Err("the server did not offer STARTTLS".into())
    }
}

fn read_until(s: &mut TcpStream, end: &str) -> Result<String, String> {
    let mut text = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&text).contains(end) {
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 || text.len() > 64 * 1024 {
            return Err("the stream closed before STARTTLS".into());
        }
        text.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// Whether the server answers a hand-built hello for `version` with `suites` by a
/// ServerHello of that version.
fn accepts(
    target: &Target,
    version: u16,
    suites: &[u16],
    timeout: Duration,
) -> Result<bool, String> {
    let mut s = connect(target, timeout)?;
    s.write_all(&client_hello(version, suites, &target.domain))
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match server_answer(&buf) {
            Answer::Hello { version: v, .. } => return Ok(v == version),
            Answer::Refused => return Ok(false),
            Answer::Incomplete => {}
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return Ok(false),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 64 * 1024 {
            return Ok(false);
        }
    }
}

/// Verifies nothing: a probe wants to see what the server does, and the chain is judged
/// afterwards, with reasons. (ring refuses RSA keys under 2048 bits even for handshake
/// signatures, which would hide a weak key behind a failed handshake.)
#[derive(Debug)]
struct Record(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Record {
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
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A rustls handshake offering only `suite`: the chain when it succeeds.
fn rustls_handshake(
    target: &Target,
    suite: rustls::SupportedCipherSuite,
    timeout: Duration,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![suite];
    let provider = Arc::new(provider);
    let version = match suite {
        rustls::SupportedCipherSuite::Tls12(_) => &rustls::version::TLS12,
        rustls::SupportedCipherSuite::Tls13(_) => &rustls::version::TLS13,
    };
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[version])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Record(provider)))
        .with_no_client_auth();
    let name = ServerName::try_from(target.domain.clone())
        .unwrap_or_else(|_| ServerName::try_from("invalid.invalid").expect("a valid name"));
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let mut s = connect(target, timeout)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut s).map_err(|e| e.to_string())?;
    }
    Ok(conn
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default())
}

/// The key type and size of a DER certificate.
fn key_of(der: &[u8]) -> Option<(String, usize)> {
    use x509_parser::public_key::PublicKey;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    match cert.public_key().parsed().ok()? {
        PublicKey::RSA(rsa) => Some(("RSA".into(), rsa.key_size())),
        PublicKey::EC(ec) => Some(("EC".into(), ec.key_size())),
        other => Some((format!("{other:?}").chars().take(12).collect(), 0)),
    }
}

/// Probes `target` and returns the facts.
pub fn probe(
    target: &Target,
    ca_file: Option<&std::path::Path>,
    timeout: Duration,
) -> Result<Facts, String> {
    let mut f = Facts {
        tls10: accepts(target, TLS10, LEGACY_SUITES, timeout)?,
        tls11: accepts(target, TLS11, LEGACY_SUITES, timeout)?,
        ..Facts::default()
    };
    let mut chain = Vec::new();
    for suite in rustls::crypto::ring::default_provider().cipher_suites {
        if let Ok(c) = rustls_handshake(target, suite, timeout) {
            match suite {
                rustls::SupportedCipherSuite::Tls12(_) => f.tls12 = true,
                rustls::SupportedCipherSuite::Tls13(_) => f.tls13 = true,
            }
            f.suites.push(format!("{:?}", suite.suite()));
            if chain.is_empty() {
                chain = c;
            }
        }
    }
    let top = if f.tls12 || !f.tls11 { TLS12 } else { TLS11 };
    f.broken_suites = accepts(target, top, BROKEN_SUITES, timeout)?;
    f.triple_des = accepts(target, top, TRIPLE_DES_SUITES, timeout)?;
    f.no_forward_secrecy = accepts(target, top, NO_FS_SUITES, timeout)?;
    if chain.is_empty() {
        // Only legacy versions answered: no chain from rustls; the grade says why.
        return Ok(f);
    }
    f.key = key_of(chain[0].as_ref());
    if let Some((not_before, not_after)) = super::certs::validity(chain[0].as_ref()) {
        let now = UnixTime::now().as_secs();
        f.expired = now > not_after;
        f.not_yet_valid = now < not_before;
    }
    f.trusted = Some(super::certs::chain_trusted(&chain, &target.domain, ca_file));
    Ok(f)
}

/// The findings for one target.
pub fn findings(subject: &str, facts: Result<Facts, String>) -> Vec<Finding> {
    let finding = |s, what: String| Finding::new(Part::Tls, s, subject, what);
    let f = match facts {
        Ok(f) => f,
        Err(e) => {
            return vec![finding(Severity::Error, format!("cannot probe: {e}"))
                .fix("check that the listener runs and the address is right")]
        }
    };
    let mut out = Vec::new();
    let yes = |b: bool| if b { "accepted" } else { "refused" };
    out.push(finding(
        if f.tls10 || f.tls11 {
            Severity::Warning
        } else {
            Severity::Ok
        },
        format!(
            "TLS 1.0 {}, TLS 1.1 {}, TLS 1.2 {}, TLS 1.3 {}",
            yes(f.tls10),
            yes(f.tls11),
            yes(f.tls12),
            yes(f.tls13)
        ),
    ));
    if !f.suites.is_empty() {
        out.push(finding(
            Severity::Ok,
            format!("modern suites accepted: {}", f.suites.join(", ")),
        ));
    }
    if let Some((kind, bits)) = &f.key {
        let weak = (kind == "RSA" && *bits < 2048) || (kind == "EC" && *bits < 256);
        let severity = if weak { Severity::Error } else { Severity::Ok };
        out.push(finding(
            severity,
            format!("certificate key: {kind} {bits} bits"),
        ));
    }
    let (grade, lowered, would) = grade(&f);
    let severity = match grade {
        "A" => Severity::Ok,
        "B" => Severity::Warning,
        _ => Severity::Error,
    };
    let what = if lowered.is_empty() {
        format!("grade {grade}; would be lowered by: {}", would.join("; "))
    } else {
        format!("grade {grade}: {}", lowered.join("; "))
    };
    let mut g = finding(severity, what);
    if !lowered.is_empty() {
        g = g.fix(
            "serve TLS 1.2+ with ECDHE and AEAD suites only, a 2048-bit+ RSA or 256-bit+ EC key, \
             and a current certificate from a public CA (kith's own listeners do all of this)",
        );
    }
    out.push(g);
    out
}

/// `kith check tls` without `--target`: kith's own client listeners (STARTTLS and direct TLS),
/// reached on loopback when they listen on every interface.
pub fn own_targets(config: &Config) -> Vec<Target> {
    let local = |a: &SocketAddr| {
        if a.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            a.ip().to_string()
        }
    };
    let mut out = Vec::new();
    for a in &config.listen.c2s {
        out.push(Target {
            host: local(a),
            port: a.port(),
            starttls: true,
            domain: config.domain.clone(),
        });
    }
    for a in &config.listen.c2s_direct_tls {
        out.push(Target {
            host: local(a),
            port: a.port(),
            starttls: false,
            domain: config.domain.clone(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_is_one_well_formed_record() {
        let h = client_hello(TLS10, LEGACY_SUITES, "example.org");
        assert_eq!(&h[..3], &[0x16, 3, 1]);
        assert_eq!(u16::from_be_bytes([h[3], h[4]]) as usize, h.len() - 5);
        assert_eq!(h[5], 1, "ClientHello");
        let body_len = u32::from_be_bytes([0, h[6], h[7], h[8]]) as usize;
        assert_eq!(body_len, h.len() - 9);
        assert_eq!(&h[9..11], &TLS10.to_be_bytes());
        let suites_len = u16::from_be_bytes([h[44], h[45]]) as usize;
        assert_eq!(suites_len, LEGACY_SUITES.len() * 2);
        assert!(h.windows(11).any(|w| w == b"example.org"));
        // No SNI for an address.
        let ip = client_hello(TLS12, NO_FS_SUITES, "127.0.0.1");
        assert!(!ip.windows(9).any(|w| w == b"127.0.0.1"));
    }

    #[test]
    fn answers_are_classified() {
        let mut hello = vec![0x16, 3, 3, 0, 60, 2, 0, 0, 56, 3, 3];
        hello.extend([7u8; 32]);
        hello.push(0);
        hello.extend([0xc0, 0x2f]);
        assert_eq!(
            server_answer(&hello),
            Answer::Hello {
                version: TLS12,
                suite: 0xc02f
            }
        );
        for cut in 0..hello.len() - 1 {
            assert_ne!(server_answer(&hello[..cut]), Answer::Refused, "cut {cut}");
        }
        assert_eq!(server_answer(&[0x15, 3, 3, 0, 2, 2, 70]), Answer::Refused);
    }

    #[test]
    fn grades() {
        let good = Facts {
            tls12: true,
            tls13: true,
            key: Some(("EC".into(), 256)),
            trusted: Some(Ok(())),
            ..Facts::default()
        };
        assert_eq!(grade(&good).0, "A");
        let old = Facts {
            tls10: true,
            ..good.clone()
        };
        assert_eq!(grade(&old).0, "B");
        let weak_key = Facts {
            key: Some(("RSA".into(), 1024)),
            ..old.clone()
        };
        let (g, lowered, _) = grade(&weak_key);
        assert_eq!(g, "F");
        assert!(
            lowered.iter().any(|l| l.contains("1024 bits")),
            "{lowered:?}"
        );
        let untrusted = Facts {
            trusted: Some(Err("self-signed".into())),
            ..good.clone()
        };
        assert_eq!(grade(&untrusted).0, "T");
        let rc4 = Facts {
            broken_suites: true,
            ..good
        };
        assert_eq!(grade(&rc4).0, "F");
    }
}
