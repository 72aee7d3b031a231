//! `kith check certs`: the certificate clients and servers will see. Present and readable with
//! its key; a chain that leads to a trusted CA (rustls' webpki verifier over the system's CA
//! bundle, or `--ca-file`); not expired and not expiring within 14 days; and valid (RFC 6125,
//! through `s2s::names`) for every name kith serves: the domain, `upload.` and `conference.`
//! under it. A self-signed certificate (kith's default) is reported as such; with `[acme]` the
//! certificates are the ACME client's business (`net::acme`), and this says so.
//!
//! The dates come from x509-parser; the verdicts are in `evaluate`, pure over the chain, the
//! time and the trust result.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_rustls::rustls::{self, client::danger::ServerCertVerifier, CertificateError};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::{Finding, Options, Part, Severity};
use crate::config::Config;

/// Warn this long before expiry.
pub const EXPIRY_WARNING_DAYS: u64 = 14;

/// Where the system keeps its CA bundle (Debian's ca-certificates).
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Where the certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `[tls] cert` and `key`.
    Configured,
    /// kith's own, in DATA/tls/.
    SelfSigned,
}

/// `kith check certs`.
pub fn check(config: &Config, options: &Options) -> Vec<Finding> {
    let acme_dir = config.data_dir.join("acme");
    let (cert, key, origin) = match (&config.tls.cert, &config.tls.key) {
        (Some(c), Some(k)) => (c.clone(), k.clone(), Origin::Configured),
        _ => {
            let dir = config.data_dir.join("tls");
            let cert = dir.join(format!("{}.selfsigned.crt", config.domain));
            let key = dir.join(format!("{}.selfsigned.key", config.domain));
            if config.acme.enabled() {
                let what = if acme_dir.is_dir() {
                    "certificates for the domain, upload. and conference. are obtained and renewed by ACME (cached here); not checked further"
                } else {
                    "ACME is on but has no certificate yet: kith asks for one when it starts (ports 443 or 80 must be reachable)"
                };
                return vec![Finding::new(
                    Part::Certs,
                    Severity::Note,
                    acme_dir.display().to_string(),
                    what,
                )];
            }
            if !cert.exists() {
                return vec![Finding::new(
                    Part::Certs,
                    Severity::Note,
                    cert.display().to_string(),
                    "no certificate yet: kith makes a self-signed one when it first starts",
                )
                .fix("set [tls] cert and key to a certificate from a CA (e.g. certbot's fullchain.pem and privkey.pem)")];
            }
            (cert, key, Origin::SelfSigned)
        }
    };
    let subject = cert.display().to_string();
    let chain = match read_chain(&cert) {
        Ok(chain) => chain,
        Err(e) => {
            return vec![Finding::new(Part::Certs, Severity::Error, subject, e).fix(
                "set [tls] cert to a readable PEM file with the certificate chain, leaf first",
            )]
        }
    };
    let mut out = Vec::new();
    let provider = rustls::crypto::ring::default_provider();
    if let Err(e) = crate::net::tls::load_pair(&cert, &key, &provider) {
        out.push(
            Finding::new(
                Part::Certs,
                Severity::Error,
                key.display().to_string(),
                e.to_string(),
            )
            .fix("set [tls] key to the private key of this certificate (PEM), readable by kith"),
        );
    }
    let trust = match origin {
        Origin::SelfSigned => None,
        Origin::Configured => {
            let ca_file = options
                .ca_file
                .clone()
                .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_FILE));
            Some(verify_chain(&chain, &config.domain, &ca_file))
        }
    };
    let now = UnixTime::now().as_secs();
    out.extend(evaluate(
        &subject,
        &chain,
        &config.domain,
        now,
        origin,
        trust,
    ));
    out
}

/// The verdicts on a read chain. `trust` is the chain check's result (`None`: not checked,
/// self-signed).
pub fn evaluate(
    subject: &str,
    chain: &[CertificateDer<'_>],
    domain: &str,
    now: u64,
    origin: Origin,
    trust: Option<Result<(), String>>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let finding = |severity, what: String| Finding::new(Part::Certs, severity, subject, what);
    let Some(leaf) = chain.first() else {
        return vec![finding(
            Severity::Error,
            "no certificate in the file".into(),
        )];
    };
    match origin {
        Origin::SelfSigned => out.push(
            finding(
                Severity::Warning,
                "self-signed: clients show a warning and other servers refuse to federate".into(),
            )
            .fix("get a certificate from a CA (ACME/Let's Encrypt) and set [tls] cert and key"),
        ),
        Origin::Configured => match &trust {
            Some(Ok(())) => out.push(finding(
                Severity::Ok,
                format!(
                    "chain of {} certificate(s) leads to a trusted CA",
                    chain.len()
                ),
            )),
            Some(Err(e)) => out.push(
                finding(Severity::Error, format!("the chain is not trusted: {e}")).fix(
                    "use the full chain (certbot's fullchain.pem, not cert.pem) from a public CA",
                ),
            ),
            None => {}
        },
    }
    match validity(leaf) {
        None => out.push(finding(
            Severity::Error,
            "cannot read the certificate's validity dates".into(),
        )),
        Some((not_before, not_after)) => {
            let days_left = (not_after as i64 - now as i64).div_euclid(86_400);
            if now < not_before {
                out.push(
                    finding(
                        Severity::Error,
                        format!("not valid yet (from {})", date(not_before)),
                    )
                    .fix("check the system clock, or use a current certificate"),
                );
            } else if now > not_after {
                out.push(
                    finding(Severity::Error, format!("expired on {}", date(not_after)))
                        .fix("renew the certificate (certbot renew) or enable ACME"),
                );
            } else if days_left < EXPIRY_WARNING_DAYS as i64 {
                out.push(
                    finding(
                        Severity::Warning,
                        format!("expires in {days_left} day(s), on {}", date(not_after)),
                    )
                    .fix("renew it now (certbot renew), and check that renewal runs automatically"),
                );
            } else {
                out.push(finding(
                    Severity::Ok,
                    format!("valid until {} ({days_left} days)", date(not_after)),
                ));
            }
        }
    }
    let ids = crate::s2s::names::identities(leaf.as_ref()).ok();
    let names = std::iter::once((domain.to_string(), Severity::Error)).chain(
        super::dns::subdomains(domain)
            .into_iter()
            .map(|n| (n, Severity::Warning)),
    );
    let mut covered = Vec::new();
    for (name, severity) in names {
        match ids.as_ref().and_then(|ids| ids.matches(&name)) {
            Some(_) => covered.push(name),
            None => out.push(
                finding(severity, format!("does not cover {name}")).fix(format!(
                    "get a certificate that also names {name} (ACME does this by itself)"
                )),
            ),
        }
    }
    if !covered.is_empty() {
        out.push(finding(
            Severity::Ok,
            format!("covers {}", covered.join(", ")),
        ));
    }
    out
}

/// The PEM certificates in `path`, leaf first.
pub fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read the certificate: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad PEM in the certificate file: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in the file (expected BEGIN CERTIFICATE)".into());
    }
    Ok(certs)
}

/// Checks the chain up to a CA in `ca_file` as a client would for `domain`, except for the
/// name, which `evaluate` checks for every served name.
fn verify_chain(
    chain: &[CertificateDer<'static>],
    domain: &str,
    ca_file: &Path,
) -> Result<(), String> {
    if chain.len() == 1 && self_issued(chain[0].as_ref()) {
        return Err("the certificate is self-signed (no CA vouches for it)".into());
    }
    let cas = read_chain(ca_file).map_err(|e| format!("CA file {}: {e}", ca_file.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(cas);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| format!("no usable CA in {}: {e}", ca_file.display()))?;
    let name = ServerName::try_from(domain.to_string()).map_err(|e| e.to_string())?;
    match verifier.verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now()) {
        Ok(_) => Ok(()),
        // Expiry and names are reported by `evaluate`, with dates and every served name.
        Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName
            | CertificateError::NotValidForNameContext { .. }
            | CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. },
        )) => Ok(()),
        Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => Err(
            "it does not lead to a CA this system trusts (missing intermediate, or a private CA)"
                .into(),
        ),
        Err(e) => Err(e.to_string()),
    }
}

/// [`verify_chain`] for a chain a server presented (`kith check tls`), against `ca_file` or
/// the system's bundle.
pub fn chain_trusted(
    chain: &[CertificateDer<'static>],
    domain: &str,
    ca_file: Option<&Path>,
) -> Result<(), String> {
    let ca_file = ca_file.unwrap_or(Path::new(SYSTEM_CA_FILE));
    verify_chain(chain, domain, ca_file)
}

/// Issuer equals subject: a self-signed certificate (or a CA's own).
fn self_issued(der: &[u8]) -> bool {
    x509_parser::parse_x509_certificate(der)
        .is_ok_and(|(_, c)| c.issuer().as_raw() == c.subject().as_raw())
}

/// notBefore and notAfter of a DER certificate, as Unix seconds (RFC 5280 §4.1.2.5).
pub fn validity(der: &[u8]) -> Option<(u64, u64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let v = cert.validity();
    let secs = |t: i64| u64::try_from(t).ok();
    Some((
        secs(v.not_before.timestamp())?,
        secs(v.not_after.timestamp())?,
    ))
}

/// `2026-11-21` for Unix seconds.
fn date(secs: u64) -> String {
    let mut text = crate::time::rfc3339(secs);
    text.truncate(10);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    /// A certificate for `names`, valid from `from` to `until` (Unix days).
    fn cert(names: &[&str], from_day: i64, until_day: i64) -> CertificateDer<'static> {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = rcgen::date_time_ymd(1970, 1, 1) + time_days(from_day);
        params.not_after = rcgen::date_time_ymd(1970, 1, 1) + time_days(until_day);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    fn time_days(days: i64) -> std::time::Duration {
        std::time::Duration::from_secs(days as u64 * DAY)
    }

    fn verdicts(
        chain: &[CertificateDer<'_>],
        now_day: u64,
        trust: Option<Result<(), String>>,
    ) -> Vec<(Severity, String)> {
        let origin = if trust.is_some() {
            Origin::Configured
        } else {
            Origin::SelfSigned
        };
        evaluate(
            "cert.pem",
            chain,
            "example.org",
            now_day * DAY + 3600,
            origin,
            trust,
        )
        .into_iter()
        .map(|f| (f.severity, f.what))
        .collect()
    }

    #[test]
    fn validity_dates_are_read() {
        let c = cert(&["example.org"], 20_000, 20_090);
        assert_eq!(validity(c.as_ref()), Some((20_000 * DAY, 20_090 * DAY)));
        assert_eq!(validity(&[0x30, 0x03, 0x30, 0x01, 0x00]), None);
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(20_413 * DAY), "2025-11-21");
    }

    #[test]
    fn a_good_certificate() {
        let c = cert(
            &[
                "example.org",
                "upload.example.org",
                "conference.example.org",
            ],
            20_000,
            20_090,
        );
        let v = verdicts(&[c], 20_010, Some(Ok(())));
        assert!(v.iter().all(|(s, _)| *s == Severity::Ok), "{v:?}");
        assert_eq!(v.len(), 3);
    }

    #[test]
    fn each_problem_is_named() {
        // Expiring in 5 days, missing conference., untrusted.
        let c = cert(&["example.org", "upload.example.org"], 20_000, 20_015);
        let v = verdicts(
            std::slice::from_ref(&c),
            20_010,
            Some(Err("unknown issuer".into())),
        );
        let problems: Vec<&str> = v
            .iter()
            .filter(|(s, _)| s.is_problem())
            .map(|(_, w)| w.as_str())
            .collect();
        assert_eq!(
            problems,
            [
                "the chain is not trusted: unknown issuer",
                "expires in 4 day(s), on 2024-10-19",
                "does not cover conference.example.org",
            ]
        );
        let expired = verdicts(&[c], 20_020, Some(Ok(())));
        assert!(
            expired.contains(&(Severity::Error, "expired on 2024-10-19".into())),
            "{expired:?}"
        );
        let wrong = verdicts(
            &[cert(&["other.org"], 20_000, 20_090)],
            20_010,
            Some(Ok(())),
        );
        assert!(wrong.contains(&(Severity::Error, "does not cover example.org".into())));
    }

    #[test]
    fn a_configured_self_signed_certificate_is_named_so() {
        let c = cert(&["example.org"], 20_000, 20_090);
        assert!(self_issued(c.as_ref()));
        let err = verify_chain(&[c], "example.org", Path::new("/nonexistent")).unwrap_err();
        assert!(err.contains("self-signed"), "{err}");
    }

    #[test]
    fn self_signed_is_a_warning_and_wildcards_cover_subdomains() {
        let c = cert(&["example.org", "*.example.org"], 20_000, 20_090);
        let v = verdicts(&[c], 20_010, None);
        let problems: Vec<&(Severity, String)> = v.iter().filter(|(s, _)| s.is_problem()).collect();
        assert_eq!(problems.len(), 1, "{v:?}");
        assert!(problems[0].1.starts_with("self-signed"));
    }
}
