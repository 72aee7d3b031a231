//! The store's value types and their byte encodings.
//!
//! Every structured value starts with a one-byte codec version so a later kith can read old
//! rows; integers are little-endian, strings and blobs carry a `u32` length. Decoding is strict
//! (unknown version, short input, bad UTF-8, unknown enum value or trailing bytes is an error)
//! and never panics or pre-allocates from a length it has not checked against the input, because
//! the bytes come from a file that may be damaged. Knows nothing about redb or JIDs.

/// An account row: the caller's opaque credential blob plus bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Encoded by the caller (SCRAM salts and keys); the store never looks inside.
    pub creds: Vec<u8>,
    /// When the account was created (seconds since the Unix epoch).
    pub created_unix: u64,
    /// Account flags, defined by the caller (admin, disabled, ...).
    pub flags: u32,
}

/// A subscription state of a roster item (RFC 6121 §2.1.2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Subscription {
    #[default]
    None,
    /// The owner receives the contact's presence.
    To,
    /// The contact receives the owner's presence.
    From,
    Both,
}

impl Subscription {
    /// The value of the roster item's `subscription` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }

    /// Parses a `subscription` attribute value; `remove` and unknown values give `None`.
    pub fn parse(s: &str) -> Option<Subscription> {
        match s {
            "none" => Some(Subscription::None),
            "to" => Some(Subscription::To),
            "from" => Some(Subscription::From),
            "both" => Some(Subscription::Both),
            _ => None,
        }
    }

    /// The owner receives the contact's presence (`to` or `both`).
    pub fn has_to(self) -> bool {
        matches!(self, Subscription::To | Subscription::Both)
    }

    /// The contact receives the owner's presence (`from` or `both`).
    pub fn has_from(self) -> bool {
        matches!(self, Subscription::From | Subscription::Both)
    }

    fn code(self) -> u8 {
        match self {
            Subscription::None => 0,
            Subscription::To => 1,
            Subscription::From => 2,
            Subscription::Both => 3,
        }
    }

    fn from_code(code: u8) -> Option<Subscription> {
        match code {
            0 => Some(Subscription::None),
            1 => Some(Subscription::To),
            2 => Some(Subscription::From),
            3 => Some(Subscription::Both),
            _ => None,
        }
    }
}

/// One contact in a roster (RFC 6121 §2.1.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RosterItem {
    pub name: Option<String>,
    pub subscription: Subscription,
    /// The owner sent a subscription request that is not answered yet (`ask='subscribe'`).
    pub ask: bool,
    /// The owner pre-approved the contact's future request (RFC 6121 §3.4).
    pub approved: bool,
    pub groups: Vec<String>,
}

/// A file shared through XEP-0363 HTTP File Upload. The bytes live in a file named by the
/// upload id; this is what serving and accounting need to know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// The bare JID that requested the slot.
    pub owner: String,
    /// The file name the client gave (already checked by the caller).
    pub name: String,
    /// The media type the client declared; served back as `Content-Type`.
    pub content_type: String,
    pub size: u64,
    /// When the upload completed (seconds since the Unix epoch).
    pub created_unix: u64,
}

/// What is wrong with a value; the caller adds the table and key.
pub(crate) type DecodeError = String;

const ACCOUNT_V1: u8 = 1;
const ROSTER_ITEM_V1: u8 = 1;
const LAST_V1: u8 = 1;
const UPLOAD_V1: u8 = 1;

const ITEM_ASK: u8 = 1;
const ITEM_APPROVED: u8 = 2;
const ITEM_HAS_NAME: u8 = 4;
const ITEM_KNOWN_BITS: u8 = ITEM_ASK | ITEM_APPROVED | ITEM_HAS_NAME;

pub(crate) fn encode_account(a: &Account) -> Vec<u8> {
    let mut w = Writer::with_capacity(1 + 8 + 4 + 4 + a.creds.len());
    w.u8(ACCOUNT_V1);
    w.u64(a.created_unix);
    w.u32(a.flags);
    w.bytes(&a.creds);
    w.0
}

pub(crate) fn decode_account(buf: &[u8]) -> Result<Account, DecodeError> {
    let mut r = Reader::new(buf);
    r.version(ACCOUNT_V1)?;
    let created_unix = r.u64()?;
    let flags = r.u32()?;
    let creds = r.bytes()?.to_vec();
    r.finish()?;
    Ok(Account {
        creds,
        created_unix,
        flags,
    })
}

pub(crate) fn encode_roster_item(item: &RosterItem) -> Vec<u8> {
    let mut w = Writer::with_capacity(64);
    w.u8(ROSTER_ITEM_V1);
    w.u8(item.subscription.code());
    let mut bits = 0;
    if item.ask {
        bits |= ITEM_ASK;
    }
    if item.approved {
        bits |= ITEM_APPROVED;
    }
    if item.name.is_some() {
        bits |= ITEM_HAS_NAME;
    }
    w.u8(bits);
    if let Some(name) = &item.name {
        w.bytes(name.as_bytes());
    }
    w.u32(len_u32(item.groups.len()));
    for g in &item.groups {
        w.bytes(g.as_bytes());
    }
    w.0
}

pub(crate) fn decode_roster_item(buf: &[u8]) -> Result<RosterItem, DecodeError> {
    let mut r = Reader::new(buf);
    r.version(ROSTER_ITEM_V1)?;
    let sub = r.u8()?;
    let subscription =
        Subscription::from_code(sub).ok_or_else(|| format!("unknown subscription code {sub}"))?;
    let bits = r.u8()?;
    if bits & !ITEM_KNOWN_BITS != 0 {
        return Err(format!("unknown roster item flags {bits:#04x}"));
    }
    let name = if bits & ITEM_HAS_NAME != 0 {
        Some(r.string()?)
    } else {
        None
    };
    let count = r.u32()?;
    // Each group needs at least its 4-byte length, so a count the input cannot hold is
    // rejected before anything is allocated.
    if (count as usize).saturating_mul(4) > r.remaining() {
        return Err(format!("group count {count} exceeds the value's length"));
    }
    let mut groups = Vec::with_capacity(count as usize);
    for _ in 0..count {
        groups.push(r.string()?);
    }
    r.finish()?;
    Ok(RosterItem {
        name,
        subscription,
        ask: bits & ITEM_ASK != 0,
        approved: bits & ITEM_APPROVED != 0,
        groups,
    })
}

pub(crate) fn encode_last(unix: u64, status: &str) -> Vec<u8> {
    let mut w = Writer::with_capacity(1 + 8 + 4 + status.len());
    w.u8(LAST_V1);
    w.u64(unix);
    w.bytes(status.as_bytes());
    w.0
}

pub(crate) fn decode_last(buf: &[u8]) -> Result<(u64, String), DecodeError> {
    let mut r = Reader::new(buf);
    r.version(LAST_V1)?;
    let unix = r.u64()?;
    let status = r.string()?;
    r.finish()?;
    Ok((unix, status))
}

/// Fixed-width counters in `meta` (schema version, sequence numbers).
pub(crate) fn encode_u64(v: u64) -> [u8; 8] {
    v.to_le_bytes()
}

pub(crate) fn decode_u64(buf: &[u8]) -> Result<u64, DecodeError> {
    let arr: [u8; 8] = buf
        .try_into()
        .map_err(|_| format!("expected 8 bytes, found {}", buf.len()))?;
    Ok(u64::from_le_bytes(arr))
}

/// Lengths are `u32` on disk. Stanzas and names are capped far below 4 GiB by the XML layer;
/// redb itself refuses values over 3 GiB, so saturating here cannot produce a readable lie.
fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

pub(crate) fn encode_upload(u: &Upload) -> Vec<u8> {
    let mut w =
        Writer::with_capacity(1 + 8 + 8 + 12 + u.owner.len() + u.name.len() + u.content_type.len());
    w.u8(UPLOAD_V1);
    w.u64(u.size);
    w.u64(u.created_unix);
    w.bytes(u.owner.as_bytes());
    w.bytes(u.name.as_bytes());
    w.bytes(u.content_type.as_bytes());
    w.0
}

pub(crate) fn decode_upload(buf: &[u8]) -> Result<Upload, DecodeError> {
    let mut r = Reader::new(buf);
    r.version(UPLOAD_V1)?;
    let size = r.u64()?;
    let created_unix = r.u64()?;
    let owner = r.string()?;
    let name = r.string()?;
    let content_type = r.string()?;
    r.finish()?;
    Ok(Upload {
        owner,
        name,
        content_type,
        size,
        created_unix,
    })
}

/// An invitation to create an account (see `store::invites`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invite {
    /// The bare JID of the account that made it; empty when an admin made it from the CLI.
    pub created_by: String,
    pub created_unix: u64,
    pub expires_unix: u64,
    /// Accounts that may still be created with it; at 0 the invite is gone.
    pub uses_left: u32,
    /// Accounts created with it become admins.
    pub admin: bool,
    /// Circles the new account joins.
    pub groups: Vec<String>,
    /// The only username it may create, when the inviter chose one.
    pub username: Option<String>,
}

const INVITE_V1: u8 = 1;

pub(crate) fn encode_invite(i: &Invite) -> Vec<u8> {
    let mut w = Writer::with_capacity(64);
    w.u8(INVITE_V1);
    w.u64(i.created_unix);
    w.u64(i.expires_unix);
    w.u32(i.uses_left);
    w.u8(u8::from(i.admin));
    w.bytes(i.created_by.as_bytes());
    w.bytes(i.username.as_deref().unwrap_or("").as_bytes());
    w.u32(len_u32(i.groups.len()));
    for g in &i.groups {
        w.bytes(g.as_bytes());
    }
    w.0
}

pub(crate) fn decode_invite(buf: &[u8]) -> Result<Invite, DecodeError> {
    let mut r = Reader::new(buf);
    r.version(INVITE_V1)?;
    let created_unix = r.u64()?;
    let expires_unix = r.u64()?;
    let uses_left = r.u32()?;
    let admin = r.u8()? != 0;
    let created_by = r.string()?;
    let username = Some(r.string()?).filter(|u| !u.is_empty());
    let n = r.u32()? as usize;
    // Each group takes at least its 4-byte length, so a corrupt count cannot allocate much.
    if n > r.remaining() / 4 {
        return Err(format!("invite group count {n} exceeds the value"));
    }
    let mut groups = Vec::with_capacity(n);
    for _ in 0..n {
        groups.push(r.string()?);
    }
    r.finish()?;
    Ok(Invite {
        created_by,
        created_unix,
        expires_unix,
        uses_left,
        admin,
        groups,
        username,
    })
}

struct Writer(Vec<u8>);

impl Writer {
    fn with_capacity(n: usize) -> Writer {
        Writer(Vec::with_capacity(n))
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(len_u32(b.len()));
        self.0.extend_from_slice(b);
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(format!(
                "truncated value: needed {n} more bytes, {} left",
                self.buf.len()
            ));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| "string is not UTF-8".to_string())
    }

    fn version(&mut self, expected: u8) -> Result<(), DecodeError> {
        match self.u8()? {
            v if v == expected => Ok(()),
            v => Err(format!("unknown codec version {v} (expected {expected})")),
        }
    }

    fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(format!("{} unexpected trailing bytes", self.buf.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> RosterItem {
        RosterItem {
            name: Some("Bob ☃".into()),
            subscription: Subscription::From,
            ask: true,
            approved: false,
            groups: vec!["Friends".into(), "".into(), "Ünï".into()],
        }
    }

    #[test]
    fn round_trips() {
        let a = Account {
            creds: vec![1, 2, 3, 0, 255],
            created_unix: 1_700_000_000,
            flags: 0x8000_0001,
        };
        assert_eq!(decode_account(&encode_account(&a)).unwrap(), a);

        for it in [item(), RosterItem::default()] {
            assert_eq!(decode_roster_item(&encode_roster_item(&it)).unwrap(), it);
        }
        assert_eq!(
            decode_last(&encode_last(42, "gone fishing")).unwrap(),
            (42, "gone fishing".to_string())
        );
        assert_eq!(decode_u64(&encode_u64(u64::MAX)).unwrap(), u64::MAX);
        let u = upload();
        assert_eq!(decode_upload(&encode_upload(&u)).unwrap(), u);
        let enc = encode_upload(&u);
        for cut in 0..enc.len() {
            assert!(decode_upload(&enc[..cut]).is_err());
        }
        let mut trailing = enc.clone();
        trailing.push(0);
        assert!(decode_upload(&trailing).is_err());
    }

    fn upload() -> Upload {
        Upload {
            owner: "alice@example.org".into(),
            name: "Ünï cat.jpg".into(),
            content_type: "image/jpeg".into(),
            size: 5 << 32,
            created_unix: 1_700_000_000,
        }
    }

    #[test]
    fn subscription_strings() {
        for s in [
            Subscription::None,
            Subscription::To,
            Subscription::From,
            Subscription::Both,
        ] {
            assert_eq!(Subscription::parse(s.as_str()), Some(s));
            assert_eq!(Subscription::from_code(s.code()), Some(s));
        }
        assert_eq!(Subscription::parse("remove"), None);
        assert!(Subscription::Both.has_to() && Subscription::Both.has_from());
        assert!(!Subscription::To.has_from() && !Subscription::From.has_to());
    }

    /// Every prefix, every single-byte corruption and a few hostile inputs must decode to an
    /// error or a value, never panic or allocate absurdly.
    #[test]
    fn invite_round_trips() {
        let i = Invite {
            created_by: "alice@example.org".into(),
            created_unix: 10,
            expires_unix: 20,
            uses_left: 3,
            admin: true,
            groups: vec!["family".into(), "friends".into()],
            username: Some("bob".into()),
        };
        assert_eq!(decode_invite(&encode_invite(&i)).unwrap(), i);
        let plain = Invite {
            username: None,
            groups: vec![],
            admin: false,
            ..i
        };
        assert_eq!(decode_invite(&encode_invite(&plain)).unwrap(), plain);
        let bytes = encode_invite(&plain);
        for n in 0..bytes.len() {
            assert!(decode_invite(&bytes[..n]).is_err());
        }
    }

    #[test]
    fn garbage_never_panics() {
        let samples = [
            encode_account(&Account {
                creds: vec![9; 20],
                created_unix: 1,
                flags: 2,
            }),
            encode_roster_item(&item()),
            encode_last(7, "away"),
        ];
        for cut in 0..samples[0].len() {
            assert!(decode_account(&samples[0][..cut]).is_err());
        }
        for cut in 0..samples[1].len() {
            assert!(decode_roster_item(&samples[1][..cut]).is_err());
        }
        for s in &samples {
            for cut in 0..s.len() {
                let _ = decode_account(&s[..cut]);
                let _ = decode_roster_item(&s[..cut]);
                let _ = decode_last(&s[..cut]);
            }
            for i in 0..s.len() {
                for flip in [0x01u8, 0x80, 0xff] {
                    let mut m = s.clone();
                    m[i] ^= flip;
                    let _ = decode_account(&m);
                    let _ = decode_roster_item(&m);
                    let _ = decode_last(&m);
                }
            }
        }
        // A huge group count with no bytes behind it.
        let mut hostile = vec![ROSTER_ITEM_V1, 0, 0];
        hostile.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_roster_item(&hostile).is_err());
        // A huge string length.
        let mut hostile = vec![LAST_V1];
        hostile.extend_from_slice(&0u64.to_le_bytes());
        hostile.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_last(&hostile).is_err());
        // Invalid UTF-8, unknown version, trailing bytes, unknown flags and subscription code.
        let mut bad = encode_last(1, "ab");
        let n = bad.len();
        bad[n - 1] = 0xff;
        assert!(decode_last(&bad).is_err());
        assert!(decode_last(&[2, 0, 0]).is_err());
        let mut trailing = encode_last(1, "ab");
        trailing.push(0);
        assert!(decode_last(&trailing).is_err());
        assert!(decode_roster_item(&[ROSTER_ITEM_V1, 0, 0x40, 0, 0, 0, 0]).is_err());
        assert!(decode_roster_item(&[ROSTER_ITEM_V1, 9, 0, 0, 0, 0, 0]).is_err());
        assert!(decode_roster_item(&[]).is_err());
        assert!(decode_u64(&[1, 2, 3]).is_err());
    }
}
