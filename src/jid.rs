//! XMPP addresses (RFC 7622): parsing, preparation and the typed forms
//! [`Jid`], [`BareJid`] and [`FullJid`].
//!
//! Owns: splitting an address into localpart/domainpart/resourcepart, the
//! PRECIS preparation of each part, and a compact canonical representation.
//! A value of these types is always prepared and valid ("parse, don't
//! validate"), so two addresses are equal exactly when their canonical strings
//! are equal; `Eq`, `Hash`, `Ord` and `Borrow<str>` all agree with
//! [`as_str`](BareJid::as_str), which makes `map.get("alice@example.com")`
//! work on a `HashMap<BareJid, _>` (the key must already be canonical).
//!
//! Must not know: stanzas, sessions, hosts, or which domains we serve.
//!
//! Preparation (RFC 7622 §3):
//! - localpart: PRECIS `UsernameCaseMapped` (RFC 8265 §3.3) plus the extra
//!   prohibited characters `" & ' / : < > @` (§3.3.1);
//! - resourcepart: PRECIS `OpaqueString` (RFC 8265 §4.2);
//! - domainpart: one trailing dot removed, ASCII lowercased. kith has no IDNA
//!   crate, so non-ASCII labels are approximated with `UsernameCaseMapped`
//!   applied per label (width mapping, Unicode lowercase, NFC, bidi rule) and
//!   are kept as U-labels; this matches IDNA2008/UTS 46 for ordinary
//!   letters and digits but does not convert to or validate A-labels
//!   (`xn--…` labels are accepted as plain ASCII). IP literals: IPv4 as is,
//!   IPv6 in brackets (`[::1]`), rewritten in RFC 5952 canonical form.
//!
//! Every part is 1..=1023 bytes after preparation (§3.1). Plain lowercase
//! ASCII takes a fast path: PRECIS is the identity on it.

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use precis_core::profile::PrecisFastInvocation;
use precis_profiles::{OpaqueString, UsernameCaseMapped};

/// Maximum length in bytes of each prepared part (RFC 7622 §3.1).
pub const MAX_PART_LEN: usize = 1023;

/// Input longer than this is rejected before any PRECIS work. Preparation can
/// shrink a part (a fullwidth ASCII letter is 3 bytes and maps to 1), so the
/// raw limit is a generous multiple of the prepared one.
const MAX_RAW_PART_LEN: usize = 4 * MAX_PART_LEN;

/// Characters RFC 7622 §3.3.1 prohibits in a localpart on top of
/// `UsernameCaseMapped`.
const LOCAL_EXTRA_PROHIBITED: &[char] = &['"', '&', '\'', '/', ':', '<', '>', '@'];

/// Which part of an address an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JidPart {
    Local,
    Domain,
    Resource,
}

impl fmt::Display for JidPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JidPart::Local => "localpart",
            JidPart::Domain => "domainpart",
            JidPart::Resource => "resourcepart",
        })
    }
}

/// Why an address was rejected. The `Display` text is safe to send to the
/// peer (e.g. as the text of a `jid-malformed` error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JidError {
    /// The part is present but empty (`@example.com`, `example.com/`, ``).
    Empty(JidPart),
    /// The prepared part is longer than 1023 bytes, or the input is absurdly long.
    TooLong(JidPart),
    /// The part contains a character its PRECIS profile (or RFC 7622)
    /// disallows.
    BadChar(JidPart, char),
    /// The part is invalid for another reason (bidi rule, IP literal, …).
    Invalid(JidPart, &'static str),
    /// A full JID was required but there is no resource.
    MissingResource,
    /// A bare JID was required but there is a resource.
    UnexpectedResource,
}

impl fmt::Display for JidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JidError::Empty(p) => write!(f, "{p} is empty"),
            JidError::TooLong(p) => write!(f, "{p} is longer than {MAX_PART_LEN} bytes"),
            JidError::BadChar(p, c) if c.is_ascii_graphic() => {
                write!(f, "{p} contains the forbidden character '{c}'")
            }
            JidError::BadChar(p, c) => {
                write!(
                    f,
                    "{p} contains the forbidden character U+{:04X}",
                    *c as u32
                )
            }
            JidError::Invalid(p, why) => write!(f, "{p} is invalid: {why}"),
            JidError::MissingResource => f.write_str("a full JID (with a resource) is required"),
            JidError::UnexpectedResource => {
                f.write_str("a bare JID (without a resource) is required")
            }
        }
    }
}

impl std::error::Error for JidError {}

/// An address without a resource: `domain` or `local@domain`.
#[derive(Clone)]
pub struct BareJid(Inner);

/// An address with a resource: `[local@]domain/resource`.
#[derive(Clone)]
pub struct FullJid(Inner);

/// Any address; match on it, or use [`Jid::try_into_full`].
#[derive(Clone)]
pub enum Jid {
    Bare(BareJid),
    Full(FullJid),
}

impl BareJid {
    /// Parses and prepares a bare JID; a resource is an error.
    pub fn parse(s: &str) -> Result<Self, JidError> {
        let inner = Inner::parse(s)?;
        if inner.slash != 0 {
            return Err(JidError::UnexpectedResource);
        }
        Ok(BareJid(inner))
    }

    /// Builds `[node@]domain` from unprepared parts.
    pub fn new(node: Option<&str>, domain: &str) -> Result<Self, JidError> {
        Inner::from_parts(node, domain, None).map(BareJid)
    }

    /// The JID of a domain (a server or a component): `example.com`.
    pub fn domain_jid(domain: &str) -> Result<Self, JidError> {
        Self::new(None, domain)
    }

    pub fn node(&self) -> Option<&str> {
        self.0.node()
    }

    pub fn domain(&self) -> &str {
        self.0.domain()
    }

    /// The canonical string form.
    pub fn as_str(&self) -> &str {
        &self.0.s
    }

    /// True for a domain JID (no localpart).
    pub fn is_domain(&self) -> bool {
        self.0.at == 0
    }

    /// The domain JID of this address's domain (`example.com`).
    pub fn to_domain(&self) -> BareJid {
        BareJid(Inner::slice(
            &self.0,
            self.0.domain_start(),
            self.0.domain_end(),
        ))
    }

    /// Appends a resource (prepared with `OpaqueString`).
    pub fn with_resource(&self, resource: &str) -> Result<FullJid, JidError> {
        let res = prepare_resource(resource)?;
        let mut s = String::with_capacity(self.0.s.len() + 1 + res.len());
        s.push_str(&self.0.s);
        s.push('/');
        s.push_str(&res);
        Ok(FullJid(Inner {
            slash: self.0.s.len() as u16,
            at: self.0.at,
            s: s.into_boxed_str(),
        }))
    }
}

impl FullJid {
    /// Parses and prepares a full JID; a missing resource is an error.
    pub fn parse(s: &str) -> Result<Self, JidError> {
        let inner = Inner::parse(s)?;
        if inner.slash == 0 {
            return Err(JidError::MissingResource);
        }
        Ok(FullJid(inner))
    }

    /// Builds `[node@]domain/resource` from unprepared parts.
    pub fn new(node: Option<&str>, domain: &str, resource: &str) -> Result<Self, JidError> {
        Inner::from_parts(node, domain, Some(resource)).map(FullJid)
    }

    pub fn node(&self) -> Option<&str> {
        self.0.node()
    }

    pub fn domain(&self) -> &str {
        self.0.domain()
    }

    /// The resource; always present on a full JID.
    pub fn resource(&self) -> &str {
        self.0.resource().unwrap_or_default()
    }

    /// The canonical string form.
    pub fn as_str(&self) -> &str {
        &self.0.s
    }

    /// The bare part as a string slice, without allocating.
    pub fn bare_str(&self) -> &str {
        &self.0.s[..self.0.domain_end()]
    }

    pub fn to_bare(&self) -> BareJid {
        BareJid(Inner::slice(&self.0, 0, self.0.domain_end()))
    }
}

impl Jid {
    /// Parses and prepares any address.
    pub fn parse(s: &str) -> Result<Self, JidError> {
        Ok(Inner::parse(s)?.into())
    }

    fn inner(&self) -> &Inner {
        match self {
            Jid::Bare(b) => &b.0,
            Jid::Full(f) => &f.0,
        }
    }

    pub fn node(&self) -> Option<&str> {
        self.inner().node()
    }

    pub fn domain(&self) -> &str {
        self.inner().domain()
    }

    pub fn resource(&self) -> Option<&str> {
        self.inner().resource()
    }

    /// The canonical string form.
    pub fn as_str(&self) -> &str {
        &self.inner().s
    }

    /// The bare part as a string slice, without allocating.
    pub fn bare_str(&self) -> &str {
        &self.inner().s[..self.inner().domain_end()]
    }

    pub fn is_full(&self) -> bool {
        matches!(self, Jid::Full(_))
    }

    pub fn to_bare(&self) -> BareJid {
        match self {
            Jid::Bare(b) => b.clone(),
            Jid::Full(f) => f.to_bare(),
        }
    }

    /// The full JID, or the address back if it has no resource.
    pub fn try_into_full(self) -> Result<FullJid, Jid> {
        match self {
            Jid::Full(f) => Ok(f),
            other => Err(other),
        }
    }

    /// Borrows the full JID, if this is one.
    pub fn as_full(&self) -> Option<&FullJid> {
        match self {
            Jid::Full(f) => Some(f),
            Jid::Bare(_) => None,
        }
    }
}

impl From<BareJid> for Jid {
    fn from(b: BareJid) -> Self {
        Jid::Bare(b)
    }
}

impl From<FullJid> for Jid {
    fn from(f: FullJid) -> Self {
        Jid::Full(f)
    }
}

impl From<Inner> for Jid {
    fn from(i: Inner) -> Self {
        if i.slash == 0 {
            Jid::Bare(BareJid(i))
        } else {
            Jid::Full(FullJid(i))
        }
    }
}

/// Prepares a localpart on its own (used for SASL authcids and account
/// names): `UsernameCaseMapped` plus RFC 7622's extra prohibited characters.
pub fn prepare_localpart(s: &str) -> Result<Cow<'_, str>, JidError> {
    const P: JidPart = JidPart::Local;
    if s.is_empty() {
        return Err(JidError::Empty(P));
    }
    if s.len() > MAX_RAW_PART_LEN {
        return Err(JidError::TooLong(P));
    }
    // Fast path: printable ASCII without the prohibited characters is
    // PVALID in the IdentifierClass and only needs lowercasing.
    let out = if s.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        if let Some(c) = s.chars().find(|c| LOCAL_EXTRA_PROHIBITED.contains(c)) {
            return Err(JidError::BadChar(P, c));
        }
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(s.to_ascii_lowercase())
        } else {
            Cow::Borrowed(s)
        }
    } else {
        let out = stable::<UsernameCaseMapped>(P, s)?;
        if let Some(c) = out.chars().find(|c| LOCAL_EXTRA_PROHIBITED.contains(c)) {
            return Err(JidError::BadChar(P, c));
        }
        out
    };
    check_len(P, out)
}

/// Prepares a resourcepart on its own (`OpaqueString`).
pub fn prepare_resource(s: &str) -> Result<Cow<'_, str>, JidError> {
    const P: JidPart = JidPart::Resource;
    if s.is_empty() {
        return Err(JidError::Empty(P));
    }
    if s.len() > MAX_RAW_PART_LEN {
        return Err(JidError::TooLong(P));
    }
    // Fast path: ASCII space and printable ASCII are valid in the
    // FreeformClass and no OpaqueString rule changes them.
    let out = if s.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        Cow::Borrowed(s)
    } else {
        stable::<OpaqueString>(P, s)?
    };
    check_len(P, out)
}

/// Prepares a domainpart on its own (see the module docs for what that means
/// without IDNA).
pub fn prepare_domain(s: &str) -> Result<Cow<'_, str>, JidError> {
    const P: JidPart = JidPart::Domain;
    if s.len() > MAX_RAW_PART_LEN {
        return Err(JidError::TooLong(P));
    }
    if let Some(inner) = s.strip_prefix('[') {
        // IPv6 literal, RFC 7622 §3.2 (IP-literal from RFC 3986).
        let addr = inner
            .strip_suffix(']')
            .and_then(|a| a.parse::<Ipv6Addr>().ok())
            .ok_or(JidError::Invalid(P, "not a valid IPv6 literal"))?;
        return Ok(Cow::Owned(format!("[{addr}]")));
    }
    let out = if s.is_ascii() {
        let s = s.strip_suffix('.').unwrap_or(s);
        check_ascii_labels(s)?;
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(s.to_ascii_lowercase())
        } else {
            Cow::Borrowed(s)
        }
    } else {
        // RFC 3490 §3.1 label separators, mapped to '.' before splitting.
        let mapped: String = s
            .chars()
            .map(|c| match c {
                '\u{3002}' | '\u{ff0e}' | '\u{ff61}' => '.',
                c => c,
            })
            .collect();
        let trimmed = mapped.strip_suffix('.').unwrap_or(&mapped);
        if trimmed.is_empty() {
            return Err(JidError::Empty(P));
        }
        let mut out = String::with_capacity(trimmed.len());
        for (i, label) in trimmed.split('.').enumerate() {
            if i > 0 {
                out.push('.');
            }
            if label.is_ascii() {
                check_ascii_labels(label)?;
                out.push_str(&label.to_ascii_lowercase());
            } else {
                let l = stable::<UsernameCaseMapped>(P, label)?;
                // IdentifierClass allows ASCII punctuation; host names do not.
                if let Some(c) = l.chars().find(|c| c.is_ascii() && !is_host_char(*c)) {
                    return Err(JidError::BadChar(P, c));
                }
                out.push_str(&l);
            }
        }
        Cow::Owned(out)
    };
    check_len(P, out)
}

// ---------------------------------------------------------------------------
// Helpers.

/// The canonical string and where its parts start. Offsets fit in `u16`
/// because the whole string is at most 3 * 1023 + 2 bytes.
#[derive(Clone)]
struct Inner {
    s: Box<str>,
    /// Byte index of the '@' separating the localpart, or 0 if there is none
    /// (a localpart is never empty, so '@' is never at 0).
    at: u16,
    /// Byte index of the '/' separating the resource, or 0 if there is none.
    slash: u16,
}

impl Inner {
    fn parse(s: &str) -> Result<Self, JidError> {
        // Splitting is linear; each part's length is checked before any
        // PRECIS work, so huge input is cheap to reject.
        // RFC 7622 §3.1: the first '/' starts the resource (which may contain
        // '@' and '/'); the first '@' before it ends the localpart.
        let (rest, resource) = match s.split_once('/') {
            Some((r, res)) => (r, Some(res)),
            None => (s, None),
        };
        let (local, domain) = match rest.split_once('@') {
            Some((l, d)) => (Some(l), d),
            None => (None, rest),
        };
        Self::from_parts(local, domain, resource)
    }

    fn from_parts(
        local: Option<&str>,
        domain: &str,
        resource: Option<&str>,
    ) -> Result<Self, JidError> {
        let local = local.map(prepare_localpart).transpose()?;
        let domain = prepare_domain(domain)?;
        let resource = resource.map(prepare_resource).transpose()?;
        let len = local.as_ref().map_or(0, |l| l.len() + 1)
            + domain.len()
            + resource.as_ref().map_or(0, |r| r.len() + 1);
        let mut s = String::with_capacity(len);
        let mut at = 0;
        if let Some(l) = &local {
            s.push_str(l);
            at = s.len() as u16;
            s.push('@');
        }
        s.push_str(&domain);
        let mut slash = 0;
        if let Some(r) = &resource {
            slash = s.len() as u16;
            s.push('/');
            s.push_str(r);
        }
        Ok(Inner {
            s: s.into_boxed_str(),
            at,
            slash,
        })
    }

    /// A bare JID made of `self.s[start..end]`, which must be `[node@]domain`
    /// or just the domain.
    fn slice(&self, start: usize, end: usize) -> Inner {
        Inner {
            s: self.s[start..end].into(),
            at: if start == 0 { self.at } else { 0 },
            slash: 0,
        }
    }

    fn node(&self) -> Option<&str> {
        (self.at != 0).then(|| &self.s[..self.at as usize])
    }

    fn domain_start(&self) -> usize {
        if self.at == 0 {
            0
        } else {
            self.at as usize + 1
        }
    }

    fn domain_end(&self) -> usize {
        if self.slash == 0 {
            self.s.len()
        } else {
            self.slash as usize
        }
    }

    fn domain(&self) -> &str {
        &self.s[self.domain_start()..self.domain_end()]
    }

    fn resource(&self) -> Option<&str> {
        (self.slash != 0).then(|| &self.s[self.slash as usize + 1..])
    }
}

fn check_len(part: JidPart, s: Cow<'_, str>) -> Result<Cow<'_, str>, JidError> {
    if s.is_empty() {
        Err(JidError::Empty(part))
    } else if s.len() > MAX_PART_LEN {
        Err(JidError::TooLong(part))
    } else {
        Ok(s)
    }
}

fn is_host_char(c: char) -> bool {
    // COMPAT: '_' is not a valid host name character, but it appears in
    // internal and test domains that other servers accept.
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// ASCII domain labels: non-empty, at most 63 bytes (DNS), host characters.
fn check_ascii_labels(s: &str) -> Result<(), JidError> {
    const P: JidPart = JidPart::Domain;
    if s.is_empty() {
        return Err(JidError::Empty(P));
    }
    for label in s.split('.') {
        if label.is_empty() {
            return Err(JidError::Invalid(P, "empty label"));
        }
        if label.len() > 63 {
            return Err(JidError::Invalid(P, "label longer than 63 bytes"));
        }
        if let Some(c) = label.chars().find(|c| !is_host_char(*c)) {
            return Err(JidError::BadChar(P, c));
        }
    }
    Ok(())
}

/// A PRECIS result that enforcing again would not change (RFC 8264 §7 requires idempotence
/// of a profile; precis-profiles checks contextual rules before normalizing, so a string
/// whose normalized form breaks one, like U+0387 becoming a MIDDLE DOT outside `l·l`, comes
/// out in a form it would then reject). Such a string is refused, so a prepared JID always
/// parses to itself: the router and the store compare JIDs as strings.
fn stable<Profile: PrecisFastInvocation>(part: JidPart, s: &str) -> Result<Cow<'_, str>, JidError> {
    let out = Profile::enforce(s).map_err(|e| precis_error(part, e))?;
    if let Cow::Owned(o) = &out {
        if Profile::enforce(o.as_str()).ok().as_deref() != Some(o.as_str()) {
            return Err(JidError::Invalid(part, "changes when prepared again"));
        }
    }
    Ok(out)
}

fn precis_error(part: JidPart, e: precis_core::Error) -> JidError {
    match e {
        precis_core::Error::BadCodepoint(info) => match char::from_u32(info.cp) {
            Some(c) => JidError::BadChar(part, c),
            None => JidError::Invalid(part, "invalid code point"),
        },
        precis_core::Error::Invalid => {
            JidError::Invalid(part, "rejected by PRECIS (e.g. bidi rule)")
        }
        precis_core::Error::Unexpected(_) => JidError::Invalid(part, "rejected by PRECIS"),
    }
}

// Equality, hashing and ordering are those of the canonical string; the
// offsets are a function of it.
macro_rules! string_like {
    ($t:ty) => {
        impl PartialEq for $t {
            fn eq(&self, other: &Self) -> bool {
                self.as_str() == other.as_str()
            }
        }
        impl Eq for $t {}
        impl std::hash::Hash for $t {
            fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
                self.as_str().hash(h)
            }
        }
        impl PartialOrd for $t {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }
        impl Ord for $t {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                self.as_str().cmp(other.as_str())
            }
        }
        impl Borrow<str> for $t {
            fn borrow(&self) -> &str {
                self.as_str()
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($t), self.as_str())
            }
        }
        impl FromStr for $t {
            type Err = JidError;
            fn from_str(s: &str) -> Result<Self, JidError> {
                Self::parse(s)
            }
        }
    };
}

string_like!(BareJid);
string_like!(FullJid);
string_like!(Jid);

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzz/fuzz_targets/jid.rs: U+0387 GREEK ANO TELEIA normalizes to U+00B7
    /// MIDDLE DOT, which PRECIS then rejects outside `l·l`; the resource was accepted in a
    /// form that did not parse again.
    #[test]
    fn fuzz_regression_prepared_forms_parse_again() {
        let input = std::str::from_utf8(&[0xce, 0x87, 0xd9, 0x95, 0xd9, 0x92]).unwrap();
        for prepare in [prepare_localpart, prepare_resource, prepare_domain] {
            if let Ok(p) = prepare(input) {
                assert_eq!(prepare(&p).ok(), Some(p.clone()), "{input:?} -> {p:?}");
            }
        }
        for jid in [
            format!("a@b/{input}"),
            format!("{input}@b"),
            format!("{input}.b"),
        ] {
            if let Ok(j) = Jid::parse(&jid) {
                assert_eq!(Jid::parse(j.as_str()).ok(), Some(j));
            }
        }
    }

    fn ok(input: &str, canonical: &str) {
        let j = Jid::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(j.as_str(), canonical, "{input:?}");
        // Canonical form is a fixed point.
        assert_eq!(Jid::parse(canonical).unwrap(), j);
    }

    fn bad(input: &str) -> JidError {
        match Jid::parse(input) {
            Ok(j) => panic!("{input:?} accepted as {j}"),
            Err(e) => e,
        }
    }

    #[test]
    fn rfc7622_3_5_valid_examples() {
        ok("juliet@example.com", "juliet@example.com");
        ok("juliet@example.com/foo", "juliet@example.com/foo");
        ok("juliet@example.com/foo bar", "juliet@example.com/foo bar");
        ok("juliet@example.com/foo@bar", "juliet@example.com/foo@bar");
        ok("foo\\20bar@example.com", "foo\\20bar@example.com");
        ok("fussball@example.com", "fussball@example.com");
        ok("fußball@example.com", "fußball@example.com");
        ok("π@example.com", "π@example.com");
        ok("Σ@example.com/foo", "σ@example.com/foo");
        ok("σ@example.com/foo", "σ@example.com/foo");
        ok("ς@example.com/foo", "ς@example.com/foo");
        ok("king@example.com/♚", "king@example.com/♚");
        ok("example.com", "example.com");
        ok("example.com/foobar", "example.com/foobar");
        ok("a.example.com/b@example.net", "a.example.com/b@example.net");
    }

    #[test]
    fn rfc7622_3_5_invalid_examples() {
        assert_eq!(
            bad("\"juliet\"@example.com"),
            JidError::BadChar(JidPart::Local, '"')
        );
        assert_eq!(
            bad("foo bar@example.com"),
            JidError::BadChar(JidPart::Local, ' ')
        );
        assert_eq!(bad("@example.com/"), JidError::Empty(JidPart::Local));
        assert!(matches!(
            bad("henryⅣ@example.com"),
            JidError::BadChar(JidPart::Local, 'Ⅳ')
        ));
        assert!(matches!(
            bad("♚@example.com"),
            JidError::BadChar(JidPart::Local, '♚')
        ));
        assert_eq!(bad("juliet@"), JidError::Empty(JidPart::Domain));
        assert_eq!(bad("/foobar"), JidError::Empty(JidPart::Domain));
    }

    /// RFC 7622 §3.5 lists `juliet@example.com/ foo` (leading space in
    /// the resourcepart) as invalid, but no rule forbids it: OpaqueString
    /// allows U+0020 anywhere. Like other implementations (mellium/jid) we
    /// accept it; rejecting an address other servers accept loses messages.
    #[test]
    fn rfc7622_example_18_is_accepted_deliberately() {
        ok("juliet@example.com/ foo", "juliet@example.com/ foo");
    }

    #[test]
    fn case_mapping_and_split_rules() {
        let j = Jid::parse("Alice@Example.COM/Phone").unwrap();
        assert_eq!(j.to_string(), "alice@example.com/Phone");
        assert_eq!(j.node(), Some("alice"));
        assert_eq!(j.domain(), "example.com");
        assert_eq!(j.resource(), Some("Phone"));
        assert_eq!(j.bare_str(), "alice@example.com");

        let f = FullJid::parse("juliet@example.com/foo@bar").unwrap();
        assert_eq!(
            (f.node(), f.domain(), f.resource()),
            (Some("juliet"), "example.com", "foo@bar")
        );

        let f = FullJid::parse("example.com/foo/bar").unwrap();
        assert_eq!(
            (f.node(), f.domain(), f.resource()),
            (None, "example.com", "foo/bar")
        );

        // The first '@' before the first '/' ends the localpart.
        assert_eq!(
            bad("a@b@example.com"),
            JidError::BadChar(JidPart::Domain, '@')
        );
        let j = Jid::parse("a@b/c@d/e").unwrap();
        assert_eq!(
            (j.node(), j.domain(), j.resource()),
            (Some("a"), "b", Some("c@d/e"))
        );
    }

    #[test]
    fn domain_rules() {
        ok("EXAMPLE.com.", "example.com");
        ok("user@example.com./r", "user@example.com/r");
        ok("127.0.0.1", "127.0.0.1");
        ok("u@[::1]/r", "u@[::1]/r");
        ok("[0:0::1]", "[::1]");
        ok("[2001:DB8::1]", "[2001:db8::1]");
        ok("xn--bcher-kva.example", "xn--bcher-kva.example");
        ok("Bücher.Example", "bücher.example");
        ok("bücher。example", "bücher.example");
        assert!(matches!(bad("[::1"), JidError::Invalid(JidPart::Domain, _)));
        assert!(matches!(
            bad("[nope]"),
            JidError::Invalid(JidPart::Domain, _)
        ));
        assert_eq!(bad("exa mple.com"), JidError::BadChar(JidPart::Domain, ' '));
        assert!(matches!(bad("a..b"), JidError::Invalid(JidPart::Domain, _)));
        assert!(matches!(bad("."), JidError::Empty(JidPart::Domain)));
        assert!(matches!(
            bad("example.com.."),
            JidError::Invalid(JidPart::Domain, _)
        ));
        assert!(matches!(
            bad("ex!ample.com"),
            JidError::BadChar(JidPart::Domain, '!')
        ));
        assert!(matches!(
            bad("bü!cher.example"),
            JidError::BadChar(JidPart::Domain, '!')
        ));
        assert!(matches!(
            bad("\u{1f600}.example"),
            JidError::BadChar(JidPart::Domain, _)
        ));
        let long_label = "a".repeat(64);
        assert!(matches!(
            bad(&format!("{long_label}.com")),
            JidError::Invalid(JidPart::Domain, _)
        ));
    }

    #[test]
    fn lengths_and_empty_parts() {
        let l = "a".repeat(1023);
        let d = format!("{}.{}", "b".repeat(63), "c".repeat(63));
        ok(&format!("{l}@{d}/{l}"), &format!("{l}@{d}/{l}"));
        let l2 = "a".repeat(1024);
        assert_eq!(
            bad(&format!("{l2}@example.com")),
            JidError::TooLong(JidPart::Local)
        );
        assert_eq!(
            bad(&format!("a@example.com/{l2}")),
            JidError::TooLong(JidPart::Resource)
        );
        let long_domain = vec!["a".repeat(63); 17].join(".");
        assert_eq!(long_domain.len(), 1087);
        assert_eq!(bad(&long_domain), JidError::TooLong(JidPart::Domain));
        // Huge inputs are rejected without doing PRECIS work.
        let huge = "é".repeat(100_000);
        assert!(matches!(bad(&huge), JidError::TooLong(_)));
        assert!(matches!(
            bad(&format!("{huge}@example.com")),
            JidError::TooLong(_)
        ));
        // Fullwidth letters shrink under width mapping: 1023 of them fit.
        let fw = "ａ".repeat(1023);
        assert_eq!(
            Jid::parse(&format!("{fw}@example.com"))
                .unwrap()
                .node()
                .unwrap()
                .len(),
            1023
        );

        assert_eq!(bad(""), JidError::Empty(JidPart::Domain));
        assert_eq!(bad("@example.com"), JidError::Empty(JidPart::Local));
        assert_eq!(bad("a@example.com/"), JidError::Empty(JidPart::Resource));
        assert_eq!(bad("a@/r"), JidError::Empty(JidPart::Domain));
        assert_eq!(bad("a@"), JidError::Empty(JidPart::Domain));
    }

    #[test]
    fn localpart_rules() {
        for c in ['"', '&', '\'', ':', '<', '>'] {
            assert_eq!(
                bad(&format!("a{c}b@example.com")),
                JidError::BadChar(JidPart::Local, c)
            );
        }
        assert_eq!(
            bad("foo bar@example.com"),
            JidError::BadChar(JidPart::Local, ' ')
        );
        assert!(matches!(
            bad("a\tb@example.com"),
            JidError::BadChar(JidPart::Local, '\t')
        ));
        // Fullwidth forms map to ASCII (width mapping), then case mapping.
        ok("ＪＵＬＩＥＴ@example.com", "juliet@example.com");
        // A fullwidth prohibited char maps to the prohibited char.
        assert_eq!(
            bad("a＜b@example.com"),
            JidError::BadChar(JidPart::Local, '<')
        );
        // U+017F LATIN SMALL LETTER LONG S has a compatibility decomposition
        // (to 's'), so it is ID_DIS in the IdentifierClass: rejected rather
        // than silently aliasing "stpa". The FreeformClass (resources) allows it.
        assert_eq!(
            bad("ſtpa@example.com"),
            JidError::BadChar(JidPart::Local, 'ſ')
        );
        ok("stpa@example.com/ſtpa", "stpa@example.com/ſtpa");
        assert_eq!(
            bad("ſtpa@example.com").to_string(),
            "localpart contains the forbidden character U+017F"
        );
        ok("ÄLICE@example.com", "älice@example.com");
        // Decomposed input is NFC-normalised.
        ok("a\u{0308}lice@example.com", "älice@example.com");
    }

    #[test]
    fn resource_rules() {
        ok("a@example.com/ spaced  out ", "a@example.com/ spaced  out ");
        // Non-ASCII spaces map to ASCII space.
        ok("a@example.com/x\u{3000}y", "a@example.com/x y");
        assert!(matches!(
            bad("a@example.com/x\u{7}"),
            JidError::BadChar(JidPart::Resource, '\u{7}')
        ));
        ok("a@example.com/Ａ", "a@example.com/Ａ"); // OpaqueString has no width mapping
    }

    #[test]
    fn ascii_fast_path_agrees_with_precis() {
        for b in 0x20u8..=0x7e {
            let s = format!("x{}y", b as char);
            let fast = prepare_localpart(&s).map(|c| c.into_owned());
            let slow = UsernameCaseMapped::enforce(s.as_str())
                .map_err(|e| precis_error(JidPart::Local, e))
                .and_then(
                    |o| match o.chars().find(|c| LOCAL_EXTRA_PROHIBITED.contains(c)) {
                        Some(c) => Err(JidError::BadChar(JidPart::Local, c)),
                        None => Ok(o.into_owned()),
                    },
                );
            assert_eq!(fast, slow, "localpart {s:?}");
            let fast = prepare_resource(&s).map(|c| c.into_owned());
            let slow = OpaqueString::enforce(s.as_str())
                .map(|c| c.into_owned())
                .map_err(|e| precis_error(JidPart::Resource, e));
            assert_eq!(fast, slow, "resource {s:?}");
        }
    }

    #[test]
    fn typed_conversions() {
        let b = BareJid::parse("Romeo@Montague.lit").unwrap();
        assert_eq!(b.as_str(), "romeo@montague.lit");
        assert!(!b.is_domain());
        assert_eq!(b.to_domain().as_str(), "montague.lit");
        assert!(b.to_domain().is_domain());
        let f = b.with_resource("orchard").unwrap();
        assert_eq!(f.as_str(), "romeo@montague.lit/orchard");
        assert_eq!(f.to_bare(), b);
        assert_eq!(b.with_resource(""), Err(JidError::Empty(JidPart::Resource)));
        assert_eq!(BareJid::parse("a@b/c"), Err(JidError::UnexpectedResource));
        assert_eq!(FullJid::parse("a@b"), Err(JidError::MissingResource));
        assert_eq!("a@b/c".parse::<FullJid>().unwrap().resource(), "c");
        assert_eq!(
            BareJid::domain_jid("Example.COM").unwrap().as_str(),
            "example.com"
        );
        assert_eq!(BareJid::new(Some("A"), "B").unwrap().as_str(), "a@b");
        assert_eq!(FullJid::new(None, "B", "R").unwrap().as_str(), "b/R");

        let j: Jid = f.clone().into();
        assert!(j.is_full());
        assert_eq!(j.as_full(), Some(&f));
        assert_eq!(j.to_bare(), b);
        assert_eq!(j.clone().try_into_full(), Ok(f.clone()));
        let jb: Jid = b.clone().into();
        assert_eq!(jb.clone().try_into_full(), Err(jb.clone()));
        assert_eq!(jb.resource(), None);

        let d = BareJid::domain_jid("example.com").unwrap();
        let df = d.with_resource("x/y").unwrap();
        assert_eq!(
            (df.node(), df.domain(), df.resource()),
            (None, "example.com", "x/y")
        );
        assert_eq!(df.bare_str(), "example.com");
        assert_eq!(df.to_bare(), d);

        // Borrow<str> lookups.
        let mut m = std::collections::HashMap::new();
        m.insert(b.clone(), 1);
        assert_eq!(m.get("romeo@montague.lit"), Some(&1));
        assert_eq!(format!("{f:?}"), "FullJid(\"romeo@montague.lit/orchard\")");
    }

    #[test]
    fn compact() {
        assert!(std::mem::size_of::<FullJid>() <= 24);
        assert!(std::mem::size_of::<Jid>() <= 32);
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let alphabet: Vec<char> = "aZ@/.[]:é ſ\u{0}\u{202e}ＡΣ-_\"<".chars().collect();
        for _ in 0..5000 {
            let mut s = String::new();
            for _ in 0..(x % 12) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                s.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            if let Ok(j) = Jid::parse(&s) {
                assert_eq!(Jid::parse(j.as_str()).as_ref(), Ok(&j), "{s:?}");
            }
        }
    }
}
