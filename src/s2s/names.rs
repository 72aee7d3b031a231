//! Is a peer's certificate valid for its XMPP domain? RFC 6120 §13.7.1.2 and
//! RFC 6125 §6 name matching for server-to-server streams.
//!
//! Owns: extracting the presented identifiers of an X.509 certificate (a
//! small DER walker: only the path Certificate → tbsCertificate → subject /
//! extensions → subjectAltName is read) and matching them against a domain:
//!
//! - DNS-ID: `subjectAltName` dNSName, ASCII case-insensitive, with `*` only
//!   as the whole left-most label (`*.example.com` matches `a.example.com`,
//!   not `example.com` or `a.b.example.com`; partial wildcards like `x*` are
//!   refused, as RFC 9525 now requires).
//! - SRV-ID: otherName id-on-dnsSRV (RFC 4985) `_xmpp-server.DOMAIN` or, for
//!   direct TLS (XEP-0368), `_xmpps-server.DOMAIN`; no wildcards.
//! - XmppAddr: otherName id-on-xmppAddr (RFC 6120 §13.7.1.4), a UTF8String
//!   equal to the domain after preparation.
//! - CN-ID: the subject's last commonName, matched like a DNS-ID, **only when
//!   the certificate has no DNS-ID, SRV-ID or XmppAddr at all**. RFC 6125
//!   §6.4.4 allows this fallback (RFC 9525 drops it); we keep it because old
//!   self-made XMPP certificates carry only a CN and Prosody accepts them. A
//!   certificate with any SAN of these types is never judged by its CN.
//!
//! IDN: the domain may be given with U-labels or A-labels; both sides are
//! compared in A-label form (the U-labels are Punycode-encoded here, RFC 3492),
//! which is what DNS-IDs contain (RFC 6125 §6.4.2).
//!
//! Must not know: chains, trust anchors, validity dates or revocation. Path
//! validation is rustls's job and happens before this; this module answers only
//! the name question. Peer bytes never panic it.

use crate::jid::prepare_domain;

/// Which kind of identifier matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdType {
    DnsId,
    SrvId,
    XmppAddr,
    CnId,
}

/// The identifiers a certificate presents, as found (not normalised).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identities {
    pub dns: Vec<String>,
    /// SRV-IDs as `_service.name`.
    pub srv: Vec<String>,
    pub xmpp_addrs: Vec<String>,
    /// The subject's commonName values (last one is the one used).
    pub cn: Vec<String>,
}

/// The certificate's DER could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DerError;

impl std::fmt::Display for DerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("malformed certificate DER")
    }
}

impl std::error::Error for DerError {}

/// True when the certificate `der` is valid for XMPP server `domain` (see the
/// module doc). Malformed certificates and unpreparable domains are not valid.
pub fn cert_valid_for(der: &[u8], domain: &str) -> bool {
    matching_id(der, domain).is_some()
}

/// The kind of identifier that makes `der` valid for `domain`, if any.
pub fn matching_id(der: &[u8], domain: &str) -> Option<IdType> {
    let ids = identities(der).ok()?;
    ids.matches(domain)
}

/// Reads the presented identifiers of a certificate.
pub fn identities(der: &[u8]) -> Result<Identities, DerError> {
    let mut ids = Identities::default();
    let (cert, rest) = take(der, TAG_SEQUENCE)?;
    if !rest.is_empty() {
        return Err(DerError);
    }
    let (tbs, _) = take(cert, TAG_SEQUENCE)?;
    let mut r = tbs;
    // version [0] EXPLICIT, optional
    if r.first() == Some(&0xa0) {
        r = take(r, 0xa0)?.1;
    }
    r = take(r, TAG_INTEGER)?.1; // serialNumber
    r = take(r, TAG_SEQUENCE)?.1; // signature
    r = take(r, TAG_SEQUENCE)?.1; // issuer
    r = take(r, TAG_SEQUENCE)?.1; // validity
    let (subject, after) = take(r, TAG_SEQUENCE)?;
    read_cns(subject, &mut ids.cn)?;
    r = take(after, TAG_SEQUENCE)?.1; // subjectPublicKeyInfo
    while let Some(&tag) = r.first() {
        let (body, rest) = take(r, tag)?;
        r = rest;
        if tag == 0xa3 {
            let (exts, _) = take(body, TAG_SEQUENCE)?;
            read_extensions(exts, &mut ids)?;
        }
    }
    Ok(ids)
}

impl Identities {
    /// The identifier type that matches `domain`, preferring SRV-ID and
    /// XmppAddr (XMPP-specific) over DNS-ID; CN-ID only as the fallback.
    pub fn matches(&self, domain: &str) -> Option<IdType> {
        let domain = a_label_form(domain)?;
        for srv in &self.srv {
            let Some((service, name)) = srv.split_once('.') else {
                continue;
            };
            let service = service.to_ascii_lowercase();
            if (service == "_xmpp-server" || service == "_xmpps-server")
                && a_label_form(name).as_deref() == Some(&domain)
            {
                return Some(IdType::SrvId);
            }
        }
        if self
            .xmpp_addrs
            .iter()
            .any(|a| a_label_form(a).as_deref() == Some(&domain))
        {
            return Some(IdType::XmppAddr);
        }
        if self.dns.iter().any(|d| dns_id_matches(d, &domain)) {
            return Some(IdType::DnsId);
        }
        let has_san = !(self.dns.is_empty() && self.srv.is_empty() && self.xmpp_addrs.is_empty());
        if !has_san {
            if let Some(cn) = self.cn.last() {
                if dns_id_matches(cn, &domain) {
                    return Some(IdType::CnId);
                }
            }
        }
        None
    }
}

// ----- matching -----

/// `presented` (a DNS-ID or CN) against `domain` (already in A-label form).
fn dns_id_matches(presented: &str, domain: &str) -> bool {
    let presented = presented.strip_suffix('.').unwrap_or(presented);
    if !presented.is_ascii() {
        // DNS-IDs are A-labels (RFC 6125 §6.4.2); a CN might carry U-labels.
        return a_label_form(presented).as_deref() == Some(domain);
    }
    let presented = presented.to_ascii_lowercase();
    match presented.strip_prefix("*.") {
        Some(base) => {
            // The wildcard is one whole label, the rest must be at least two labels
            // (no `*.com`), and it never matches the base domain itself.
            if base.contains('*') || !base.contains('.') {
                return false;
            }
            match domain.split_once('.') {
                Some((first, rest)) => !first.is_empty() && rest == base,
                None => false,
            }
        }
        None => !presented.contains('*') && presented == domain,
    }
}

/// The domain prepared (RFC 7622) and with each non-ASCII label replaced by
/// its A-label. `None` if it is not a domain.
fn a_label_form(s: &str) -> Option<String> {
    let prepared = prepare_domain(s).ok()?;
    if prepared.is_ascii() {
        return Some(prepared.into_owned());
    }
    let mut out = String::with_capacity(prepared.len() + 8);
    for (i, label) in prepared.split('.').enumerate() {
        if i > 0 {
            out.push('.');
        }
        if label.is_ascii() {
            out.push_str(label);
        } else {
            out.push_str("xn--");
            out.push_str(&punycode(label)?);
        }
    }
    Some(out)
}

/// RFC 3492 Punycode encoding of one label (§6.3), `None` on overflow.
fn punycode(input: &str) -> Option<String> {
    const BASE: u32 = 36;
    const TMIN: u32 = 1;
    const TMAX: u32 = 26;
    let cps: Vec<u32> = input.chars().map(u32::from).collect();
    let mut out: String = input.chars().filter(char::is_ascii).collect();
    let basic = out.len() as u32;
    let mut h = basic;
    if basic > 0 {
        out.push('-');
    }
    let (mut n, mut delta, mut bias) = (128u32, 0u32, 72u32);
    let digit = |d: u32| -> char {
        // 0..25 → a..z, 26..35 → 0..9
        if d < 26 {
            (b'a' + d as u8) as char
        } else {
            (b'0' + (d - 26) as u8) as char
        }
    };
    while (h as usize) < cps.len() {
        let m = cps.iter().copied().filter(|&c| c >= n).min()?;
        delta = delta.checked_add((m - n).checked_mul(h + 1)?)?;
        n = m;
        for &c in &cps {
            if c < n {
                delta = delta.checked_add(1)?;
            }
            if c == n {
                let mut q = delta;
                let mut k = BASE;
                loop {
                    let t = if k <= bias {
                        TMIN
                    } else if k >= bias + TMAX {
                        TMAX
                    } else {
                        k - bias
                    };
                    if q < t {
                        break;
                    }
                    out.push(digit(t + (q - t) % (BASE - t)));
                    q = (q - t) / (BASE - t);
                    k += BASE;
                }
                out.push(digit(q));
                bias = adapt(delta, h + 1, h == basic);
                delta = 0;
                h += 1;
            }
        }
        delta = delta.checked_add(1)?;
        n = n.checked_add(1)?;
    }
    Some(out)
}

fn adapt(mut delta: u32, num_points: u32, first: bool) -> u32 {
    delta /= if first { 700 } else { 2 };
    delta += delta / num_points;
    let mut k = 0;
    while delta > ((36 - 1) * 26) / 2 {
        delta /= 36 - 1;
        k += 36;
    }
    k + (36 * delta) / (delta + 38)
}

// ----- DER -----

const TAG_INTEGER: u8 = 0x02;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_UTF8: u8 = 0x0c;
const TAG_PRINTABLE: u8 = 0x13;
const TAG_T61: u8 = 0x14;
const TAG_IA5: u8 = 0x16;
const TAG_BMP: u8 = 0x1e;
const TAG_UNIVERSAL: u8 = 0x1c;

/// 2.5.29.17 subjectAltName
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];
/// 2.5.4.3 commonName
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
/// 1.3.6.1.5.5.7.8.5 id-on-xmppAddr
const OID_XMPP_ADDR: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x08, 0x05];
/// 1.3.6.1.5.5.7.8.7 id-on-dnsSRV
const OID_DNS_SRV: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x08, 0x07];

/// Splits one TLV with tag `tag` off `input`: (contents, rest). Only
/// single-byte tags and definite lengths (DER).
fn take(input: &[u8], tag: u8) -> Result<(&[u8], &[u8]), DerError> {
    let (&t, r) = input.split_first().ok_or(DerError)?;
    if t != tag || t & 0x1f == 0x1f {
        return Err(DerError);
    }
    let (&l0, mut r) = r.split_first().ok_or(DerError)?;
    let len = if l0 < 0x80 {
        usize::from(l0)
    } else {
        let n = usize::from(l0 & 0x7f);
        if n == 0 || n > 4 || r.len() < n {
            return Err(DerError);
        }
        let mut len = 0usize;
        for &b in &r[..n] {
            len = (len << 8) | usize::from(b);
        }
        r = &r[n..];
        len
    };
    if r.len() < len {
        return Err(DerError);
    }
    Ok(r.split_at(len))
}

/// Any TLV: (tag, contents, rest).
fn take_any(input: &[u8]) -> Result<(u8, &[u8], &[u8]), DerError> {
    let tag = *input.first().ok_or(DerError)?;
    let (body, rest) = take(input, tag)?;
    Ok((tag, body, rest))
}

/// A directory string as text; `None` for types we don't decode (BMP,
/// Universal, T61 with non-ASCII).
fn string_value(tag: u8, body: &[u8]) -> Option<String> {
    match tag {
        TAG_UTF8 | TAG_PRINTABLE | TAG_IA5 => std::str::from_utf8(body).ok().map(str::to_owned),
        TAG_T61 if body.is_ascii() => std::str::from_utf8(body).ok().map(str::to_owned),
        TAG_BMP | TAG_UNIVERSAL => None,
        _ => None,
    }
}

/// Name ::= SEQUENCE OF RelativeDistinguishedName (SET OF AttributeTypeAndValue).
fn read_cns(mut name: &[u8], out: &mut Vec<String>) -> Result<(), DerError> {
    while !name.is_empty() {
        let (mut rdn, rest) = take(name, TAG_SET)?;
        name = rest;
        while !rdn.is_empty() {
            let (atv, rest) = take(rdn, TAG_SEQUENCE)?;
            rdn = rest;
            let (oid, value) = take(atv, TAG_OID)?;
            if oid == OID_CN {
                let (tag, body, _) = take_any(value)?;
                if let Some(s) = string_value(tag, body) {
                    out.push(s);
                }
            }
        }
    }
    Ok(())
}

/// Extensions ::= SEQUENCE OF Extension { extnID, critical DEFAULT FALSE, extnValue }.
fn read_extensions(mut exts: &[u8], ids: &mut Identities) -> Result<(), DerError> {
    while !exts.is_empty() {
        let (ext, rest) = take(exts, TAG_SEQUENCE)?;
        exts = rest;
        let (oid, mut r) = take(ext, TAG_OID)?;
        if r.first() == Some(&0x01) {
            r = take(r, 0x01)?.1; // critical
        }
        let (value, _) = take(r, TAG_OCTET_STRING)?;
        if oid == OID_SAN {
            let (names, _) = take(value, TAG_SEQUENCE)?;
            read_general_names(names, ids)?;
        }
    }
    Ok(())
}

/// GeneralNames: otherName [0] and dNSName [2] are read, the rest skipped.
fn read_general_names(mut names: &[u8], ids: &mut Identities) -> Result<(), DerError> {
    while !names.is_empty() {
        let (tag, body, rest) = take_any(names)?;
        names = rest;
        match tag {
            // dNSName [2] IMPLICIT IA5String
            0x82 => {
                if let Ok(s) = std::str::from_utf8(body) {
                    ids.dns.push(s.to_owned());
                }
            }
            // otherName [0] IMPLICIT SEQUENCE { type-id OID, value [0] EXPLICIT ANY }
            0xa0 => {
                let (oid, r) = take(body, TAG_OID)?;
                let (inner, _) = take(r, 0xa0)?;
                let (vtag, v, _) = take_any(inner)?;
                if oid == OID_XMPP_ADDR && vtag == TAG_UTF8 {
                    if let Some(s) = string_value(vtag, v) {
                        ids.xmpp_addrs.push(s);
                    }
                } else if oid == OID_DNS_SRV {
                    // RFC 4985 says IA5String; accept UTF8String too (some
                    // generators, rcgen among them, can only write that).
                    if let Some(s) = string_value(vtag, v) {
                        ids.srv.push(s);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    const XMPP_ADDR: [u64; 9] = [1, 3, 6, 1, 5, 5, 7, 8, 5];
    const DNS_SRV: [u64; 9] = [1, 3, 6, 1, 5, 5, 7, 8, 7];

    enum San<'a> {
        Dns(&'a str),
        Srv(&'a str),
        Xmpp(&'a str),
    }

    fn cert(cn: Option<&str>, sans: &[San]) -> Vec<u8> {
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            p.distinguished_name.push(DnType::CommonName, cn);
        }
        p.subject_alt_names = sans
            .iter()
            .map(|s| match s {
                San::Dns(d) => SanType::DnsName((*d).try_into().unwrap()),
                San::Srv(v) => SanType::OtherName((DNS_SRV.to_vec(), (*v).into())),
                San::Xmpp(v) => SanType::OtherName((XMPP_ADDR.to_vec(), (*v).into())),
            })
            .collect();
        let key = KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_every_identifier_type() {
        let der = cert(
            Some("cn.example"),
            &[
                San::Dns("a.example"),
                San::Srv("_xmpp-server.b.example"),
                San::Xmpp("c.example"),
            ],
        );
        let ids = identities(&der).unwrap();
        assert_eq!(ids.dns, ["a.example"]);
        assert_eq!(ids.srv, ["_xmpp-server.b.example"]);
        assert_eq!(ids.xmpp_addrs, ["c.example"]);
        assert_eq!(ids.cn, ["cn.example"]);
        assert_eq!(matching_id(&der, "a.example"), Some(IdType::DnsId));
        assert_eq!(matching_id(&der, "B.Example"), Some(IdType::SrvId));
        assert_eq!(matching_id(&der, "c.example"), Some(IdType::XmppAddr));
        // SANs present: the CN is never used.
        assert_eq!(matching_id(&der, "cn.example"), None);
        assert_eq!(matching_id(&der, "d.example"), None);
    }

    #[test]
    fn dns_id_is_case_insensitive() {
        let der = cert(None, &[San::Dns("XMPP.Example.COM")]);
        assert!(cert_valid_for(&der, "xmpp.example.com"));
        assert!(cert_valid_for(&der, "xmpp.example.com."));
        assert!(!cert_valid_for(&der, "example.com"));
    }

    #[test]
    fn wildcard_only_whole_leftmost_label() {
        let der = cert(None, &[San::Dns("*.example.com")]);
        assert_eq!(matching_id(&der, "chat.example.com"), Some(IdType::DnsId));
        assert_eq!(matching_id(&der, "CHAT.example.com"), Some(IdType::DnsId));
        assert!(!cert_valid_for(&der, "example.com"));
        assert!(!cert_valid_for(&der, "a.chat.example.com"));
        assert!(!cert_valid_for(&der, "chat.example.org"));
        for bad in ["*.com", "c*.example.com", "chat.*.com", "a.*.example.com"] {
            let der = cert(None, &[San::Dns(bad)]);
            for domain in [
                "chat.example.com",
                "a.b.example.com",
                "example.com",
                "x.com",
            ] {
                assert!(!cert_valid_for(&der, domain), "{bad} vs {domain}");
            }
        }
    }

    #[test]
    fn srv_id_services() {
        let der = cert(None, &[San::Srv("_xmpps-server.example.net")]);
        assert_eq!(matching_id(&der, "example.net"), Some(IdType::SrvId));
        // Client SRV-IDs, other services and wildcards are not server identities.
        for v in [
            "_xmpp-client.example.net",
            "_sip.example.net",
            "_xmpp-server.*.net",
        ] {
            let der = cert(None, &[San::Srv(v)]);
            assert!(!cert_valid_for(&der, "example.net"), "{v}");
        }
    }

    #[test]
    fn xmpp_addr_must_equal_the_domain() {
        let der = cert(None, &[San::Xmpp("user@example.net")]);
        assert!(!cert_valid_for(&der, "example.net"));
        let der = cert(None, &[San::Xmpp("*.example.net")]);
        assert!(!cert_valid_for(&der, "a.example.net"));
    }

    #[test]
    fn cn_only_as_last_resort() {
        let der = cert(Some("old.example"), &[]);
        assert_eq!(matching_id(&der, "old.example"), Some(IdType::CnId));
        assert!(!cert_valid_for(&der, "new.example"));
        let der = cert(Some("*.old.example"), &[]);
        assert_eq!(matching_id(&der, "a.old.example"), Some(IdType::CnId));
        let der = cert(Some("old.example"), &[San::Dns("new.example")]);
        assert!(!cert_valid_for(&der, "old.example"));
        assert!(cert_valid_for(&der, "new.example"));
    }

    #[test]
    fn idn_domains_compare_as_a_labels() {
        assert_eq!(punycode("bücher").as_deref(), Some("bcher-kva"));
        assert_eq!(punycode("münchen").as_deref(), Some("mnchen-3ya"));
        assert_eq!(punycode("例え").as_deref(), Some("r8jz45g"));
        let der = cert(None, &[San::Dns("xn--bcher-kva.example")]);
        assert_eq!(matching_id(&der, "bücher.example"), Some(IdType::DnsId));
        assert_eq!(matching_id(&der, "BÜCHER.example"), Some(IdType::DnsId));
        assert_eq!(
            matching_id(&der, "xn--bcher-kva.example"),
            Some(IdType::DnsId)
        );
        assert!(!cert_valid_for(&der, "bucher.example"));
        let der = cert(None, &[San::Dns("*.xn--mnchen-3ya.example")]);
        assert!(cert_valid_for(&der, "chat.münchen.example"));
        // An XmppAddr holds the U-label form.
        let der = cert(None, &[San::Xmpp("münchen.example")]);
        assert_eq!(
            matching_id(&der, "xn--mnchen-3ya.example"),
            Some(IdType::XmppAddr)
        );
    }

    /// RFC 4985's own encoding, IA5String, which rcgen can't produce.
    #[test]
    fn srv_id_as_ia5string() {
        let name = b"_xmpp-server.x.example";
        let mut inner = vec![TAG_IA5, name.len() as u8];
        inner.extend_from_slice(name);
        let mut other = vec![TAG_OID, OID_DNS_SRV.len() as u8];
        other.extend_from_slice(OID_DNS_SRV);
        other.extend_from_slice(&[0xa0, inner.len() as u8]);
        other.extend_from_slice(&inner);
        let mut names = vec![0xa0, other.len() as u8];
        names.extend_from_slice(&other);
        names.extend_from_slice(&[0x87, 4, 127, 0, 0, 1]); // iPAddress, skipped
        let mut ids = Identities::default();
        read_general_names(&names, &mut ids).unwrap();
        assert_eq!(ids.srv, ["_xmpp-server.x.example"]);
        assert_eq!(ids.matches("x.example"), Some(IdType::SrvId));
    }

    #[test]
    fn garbage_is_not_valid_and_never_panics() {
        let der = cert(
            Some("x.example"),
            &[San::Dns("a.example"), San::Xmpp("b.example")],
        );
        assert!(identities(&der).is_ok());
        for cut in 0..der.len() {
            let _ = identities(&der[..cut]);
            assert!(!cert_valid_for(&der[..cut], "a.example"));
        }
        let mut flipped = der.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0xff;
            let _ = identities(&flipped);
            flipped[i] ^= 0xff;
        }
        assert_eq!(identities(&[]), Err(DerError));
        assert_eq!(
            identities(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            Err(DerError)
        );
    }
}
