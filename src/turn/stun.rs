//! STUN messages (RFC 8489) with the TURN attributes (RFC 8656): parse and serialize, message
//! integrity (HMAC-SHA1, HMAC-SHA256), FINGERPRINT, and TURN ChannelData framing.
//!
//! **Pure**: no I/O, no clock, no panics on any input. Owns the wire format only; what a
//! request means is `alloc.rs`' and `server.rs`' business.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The magic cookie (RFC 8489 §5).
pub const MAGIC: u32 = 0x2112_A442;
pub const HEADER_LEN: usize = 20;

// Methods (RFC 8489 §18.2, RFC 8656 §17).
pub const BINDING: u16 = 0x001;
pub const ALLOCATE: u16 = 0x003;
pub const REFRESH: u16 = 0x004;
pub const SEND: u16 = 0x006;
pub const DATA: u16 = 0x007;
pub const CREATE_PERMISSION: u16 = 0x008;
pub const CHANNEL_BIND: u16 = 0x009;

// Attributes.
pub const MAPPED_ADDRESS: u16 = 0x0001;
pub const USERNAME: u16 = 0x0006;
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
pub const ERROR_CODE: u16 = 0x0009;
pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
pub const CHANNEL_NUMBER: u16 = 0x000C;
pub const LIFETIME: u16 = 0x000D;
pub const XOR_PEER_ADDRESS: u16 = 0x0012;
pub const DATA_ATTR: u16 = 0x0013;
pub const REALM: u16 = 0x0014;
pub const NONCE: u16 = 0x0015;
pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
pub const EVEN_PORT: u16 = 0x0018;
pub const REQUESTED_TRANSPORT: u16 = 0x0019;
pub const DONT_FRAGMENT: u16 = 0x001A;
pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
pub const PASSWORD_ALGORITHM: u16 = 0x001D;
pub const USERHASH: u16 = 0x001E;
pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
pub const RESERVATION_TOKEN: u16 = 0x0022;
pub const PRIORITY: u16 = 0x0024;
pub const USE_CANDIDATE: u16 = 0x0025;
pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
pub const SOFTWARE: u16 = 0x8022;
pub const ALTERNATE_SERVER: u16 = 0x8023;
pub const FINGERPRINT: u16 = 0x8028;
pub const ICE_CONTROLLED: u16 = 0x8029;
pub const ICE_CONTROLLING: u16 = 0x802A;

/// Comprehension-required attributes this implementation understands (RFC 8489 §14: an
/// unknown one in 0x0000-0x7FFF makes a request fail with 420).
const KNOWN_REQUIRED: &[u16] = &[
    MAPPED_ADDRESS,
    USERNAME,
    MESSAGE_INTEGRITY,
    ERROR_CODE,
    UNKNOWN_ATTRIBUTES,
    CHANNEL_NUMBER,
    LIFETIME,
    XOR_PEER_ADDRESS,
    DATA_ATTR,
    REALM,
    NONCE,
    XOR_RELAYED_ADDRESS,
    REQUESTED_ADDRESS_FAMILY,
    EVEN_PORT,
    REQUESTED_TRANSPORT,
    DONT_FRAGMENT,
    MESSAGE_INTEGRITY_SHA256,
    PASSWORD_ALGORITHM,
    USERHASH,
    XOR_MAPPED_ADDRESS,
    RESERVATION_TOKEN,
    PRIORITY,
    USE_CANDIDATE,
];

/// The message class (RFC 8489 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }
}

/// A transaction id.
pub type Tid = [u8; 12];

/// One attribute: its type, value, and where its header starts in the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub typ: u16,
    pub value: Vec<u8>,
    offset: usize,
}

/// A parsed STUN message. Keeps the raw bytes so integrity and fingerprint can be checked.
#[derive(Clone, Debug)]
pub struct Message {
    pub class: Class,
    pub method: u16,
    pub tid: Tid,
    pub attrs: Vec<Attr>,
    raw: Vec<u8>,
}

/// Why bytes are not a STUN message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    TooShort,
    NotStun,
    BadLength,
    BadAttribute,
    BadFingerprint,
}

/// Whether `buf` starts like a STUN message (top bits 00, magic cookie).
pub fn looks_like_stun(buf: &[u8]) -> bool {
    buf.len() >= HEADER_LEN && buf[0] & 0xC0 == 0 && buf[4..8] == MAGIC.to_be_bytes()
}

/// The length of the STUN message or ChannelData frame at the start of a TCP stream, once
/// its 4-byte header is there (RFC 8656 §11.5: ChannelData is padded to 4 over TCP).
pub fn stream_frame_len(buf: &[u8]) -> Option<usize> {
    let head = buf.get(..4)?;
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    match head[0] >> 6 {
        0b00 => Some(HEADER_LEN + len),
        0b01 => Some(4 + pad4(len)),
        _ => None,
    }
}

/// Channel numbers: RFC 8656 §12 narrowed them to 0x4000-0x4FFF, RFC 5766 allowed up to
/// 0x7FFF.
// COMPAT: coturn's turnutils_uclient (and RFC 5766 clients) pick channels above 0x4FFF.
pub const CHANNELS: std::ops::RangeInclusive<u16> = 0x4000..=0x7FFF;

/// A ChannelData message (RFC 8656 §12.4).
pub fn parse_channel_data(buf: &[u8]) -> Option<(u16, &[u8])> {
    let head = buf.get(..4)?;
    let channel = u16::from_be_bytes([head[0], head[1]]);
    if !CHANNELS.contains(&channel) {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    Some((channel, buf.get(4..4 + len)?))
}

/// A ChannelData message; `pad` for TCP.
pub fn channel_data(channel: u16, data: &[u8], pad: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + pad4(data.len()));
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
    if pad {
        out.resize(4 + pad4(data.len()), 0);
    }
    out
}

impl Message {
    /// Parses one message. A FINGERPRINT, if present, must be last and correct.
    pub fn parse(buf: &[u8]) -> Result<Message, ParseError> {
        if buf.len() < HEADER_LEN {
            return Err(ParseError::TooShort);
        }
        if !looks_like_stun(buf) {
            return Err(ParseError::NotStun);
        }
        let typ = u16::from_be_bytes([buf[0], buf[1]]);
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if len % 4 != 0 || buf.len() != HEADER_LEN + len {
            return Err(ParseError::BadLength);
        }
        let method = (typ & 0x000F) | ((typ >> 1) & 0x0070) | ((typ >> 2) & 0x0F80);
        let class = match ((typ >> 7) & 0b10) | ((typ >> 4) & 0b01) {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::Success,
            _ => Class::Error,
        };
        let mut tid = [0u8; 12];
        tid.copy_from_slice(&buf[8..20]);
        let mut attrs = Vec::new();
        let mut at = HEADER_LEN;
        while at < buf.len() {
            let head = buf.get(at..at + 4).ok_or(ParseError::BadAttribute)?;
            let atyp = u16::from_be_bytes([head[0], head[1]]);
            let alen = usize::from(u16::from_be_bytes([head[2], head[3]]));
            let value = buf
                .get(at + 4..at + 4 + alen)
                .ok_or(ParseError::BadAttribute)?;
            if at + 4 + pad4(alen) > buf.len() {
                return Err(ParseError::BadAttribute);
            }
            // RFC 8489 §14.5/§14.6: after MESSAGE-INTEGRITY only MESSAGE-INTEGRITY-SHA256 and
            // FINGERPRINT count, after MESSAGE-INTEGRITY-SHA256 only FINGERPRINT; anything else
            // there is not covered by the MAC and is ignored.
            let sealed = attrs
                .iter()
                .any(|a: &Attr| a.typ == MESSAGE_INTEGRITY_SHA256)
                || attrs.iter().any(|a: &Attr| a.typ == MESSAGE_INTEGRITY)
                    && atyp != MESSAGE_INTEGRITY_SHA256;
            if !sealed || atyp == FINGERPRINT {
                attrs.push(Attr {
                    typ: atyp,
                    value: value.to_vec(),
                    offset: at,
                });
            }
            at += 4 + pad4(alen);
        }
        let msg = Message {
            class,
            method,
            tid,
            attrs,
            raw: buf.to_vec(),
        };
        if let Some(i) = msg.attrs.iter().position(|a| a.typ == FINGERPRINT) {
            let a = &msg.attrs[i];
            if i + 1 != msg.attrs.len() || a.value.len() != 4 {
                return Err(ParseError::BadFingerprint);
            }
            let want = fingerprint_of(&msg.raw, a.offset);
            if a.value[..] != want.to_be_bytes() {
                return Err(ParseError::BadFingerprint);
            }
        }
        Ok(msg)
    }

    /// The first attribute of type `typ`.
    pub fn get(&self, typ: u16) -> Option<&[u8]> {
        self.attrs
            .iter()
            .find(|a| a.typ == typ)
            .map(|a| a.value.as_slice())
    }

    pub fn get_str(&self, typ: u16) -> Option<&str> {
        self.get(typ).and_then(|v| std::str::from_utf8(v).ok())
    }

    pub fn get_u32(&self, typ: u16) -> Option<u32> {
        let v = self.get(typ)?;
        Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
    }

    /// An XOR-*-ADDRESS attribute, decoded.
    pub fn get_xor_address(&self, typ: u16) -> Option<SocketAddr> {
        decode_xor_address(self.get(typ)?, &self.tid)
    }

    /// Every XOR-PEER-ADDRESS (CreatePermission may carry several).
    pub fn xor_addresses(&self, typ: u16) -> Vec<Option<SocketAddr>> {
        self.attrs
            .iter()
            .filter(|a| a.typ == typ)
            .map(|a| decode_xor_address(&a.value, &self.tid))
            .collect()
    }

    /// The ERROR-CODE as (code, reason).
    pub fn error_code(&self) -> Option<(u16, String)> {
        let v = self.get(ERROR_CODE)?;
        if v.len() < 4 {
            return None;
        }
        let code = u16::from(v[2] & 0x07) * 100 + u16::from(v[3]);
        Some((code, String::from_utf8_lossy(&v[4..]).into_owned()))
    }

    /// Comprehension-required attributes this code does not know (for a 420 answer).
    pub fn unknown_required(&self) -> Vec<u16> {
        self.attrs
            .iter()
            .map(|a| a.typ)
            .filter(|t| *t < 0x8000 && !KNOWN_REQUIRED.contains(t))
            .collect()
    }

    /// Which integrity attribute the message carries (the SHA-256 one wins, RFC 8489 §14.6).
    pub fn integrity(&self) -> Option<Integrity> {
        if self.get(MESSAGE_INTEGRITY_SHA256).is_some() {
            Some(Integrity::Sha256)
        } else if self.get(MESSAGE_INTEGRITY).is_some() {
            Some(Integrity::Sha1)
        } else {
            None
        }
    }

    /// Checks MESSAGE-INTEGRITY-SHA256 if present, else MESSAGE-INTEGRITY, with `key`.
    pub fn check_integrity(&self, key: &[u8]) -> bool {
        let (typ, alg) = match self.integrity() {
            Some(Integrity::Sha256) => (MESSAGE_INTEGRITY_SHA256, ring::hmac::HMAC_SHA256),
            Some(Integrity::Sha1) => (MESSAGE_INTEGRITY, ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY),
            None => return false,
        };
        let Some(a) = self.attrs.iter().find(|a| a.typ == typ) else {
            return false;
        };
        let mut input = self.raw[..a.offset].to_vec();
        let len = (a.offset + 4 + a.value.len() - HEADER_LEN) as u16;
        input[2..4].copy_from_slice(&len.to_be_bytes());
        let key = ring::hmac::Key::new(alg, key);
        let tag = ring::hmac::sign(&key, &input);
        // A truncated SHA-256 tag (at least 16 bytes) is allowed (RFC 8489 §14.6).
        let n = a.value.len();
        if typ == MESSAGE_INTEGRITY_SHA256 && !(16..=32).contains(&n) || n > tag.as_ref().len() {
            return false;
        }
        if typ == MESSAGE_INTEGRITY && n != 20 {
            return false;
        }
        ct_eq(&tag.as_ref()[..n], &a.value)
    }
}

/// Which integrity attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Integrity {
    Sha1,
    Sha256,
}

/// Builds a message attribute by attribute; integrity and fingerprint go last.
pub struct Builder {
    buf: Vec<u8>,
    tid: Tid,
}

impl Builder {
    pub fn new(class: Class, method: u16, tid: Tid) -> Builder {
        let c = class.bits();
        let typ = (method & 0x000F)
            | ((method & 0x0070) << 1)
            | ((method & 0x0F80) << 2)
            | ((c & 0b01) << 4)
            | ((c & 0b10) << 7);
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&typ.to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC.to_be_bytes());
        buf.extend_from_slice(&tid);
        Builder { buf, tid }
    }

    /// A response of `class` to `req`.
    pub fn reply(req: &Message, class: Class) -> Builder {
        Builder::new(class, req.method, req.tid)
    }

    /// Continues a message built so far (no integrity or fingerprint yet).
    pub fn from_bytes(buf: Vec<u8>) -> Builder {
        let mut tid = [0u8; 12];
        if let Some(t) = buf.get(8..20) {
            tid.copy_from_slice(t);
        }
        Builder { buf, tid }
    }

    pub fn attr(mut self, typ: u16, value: &[u8]) -> Builder {
        self.push(typ, value);
        self
    }

    pub fn u32(self, typ: u16, v: u32) -> Builder {
        self.attr(typ, &v.to_be_bytes())
    }

    pub fn xor_address(self, typ: u16, addr: SocketAddr) -> Builder {
        let v = encode_xor_address(addr, &self.tid);
        self.attr(typ, &v)
    }

    /// ERROR-CODE (RFC 8489 §14.8).
    pub fn error(self, code: u16, reason: &str) -> Builder {
        let mut v = vec![0, 0, (code / 100) as u8, (code % 100) as u8];
        v.extend_from_slice(reason.as_bytes());
        self.attr(ERROR_CODE, &v)
    }

    /// MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256 with `key`.
    pub fn integrity(mut self, which: Integrity, key: &[u8]) -> Builder {
        let (typ, alg, n) = match which {
            Integrity::Sha1 => (
                MESSAGE_INTEGRITY,
                ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
                20,
            ),
            Integrity::Sha256 => (MESSAGE_INTEGRITY_SHA256, ring::hmac::HMAC_SHA256, 32),
        };
        let len = (self.buf.len() + 4 + n - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
        let tag = ring::hmac::sign(&ring::hmac::Key::new(alg, key), &self.buf);
        self.push(typ, tag.as_ref());
        self
    }

    /// FINGERPRINT (RFC 8489 §14.7); returns the finished message.
    pub fn fingerprint(mut self) -> Vec<u8> {
        let at = self.buf.len();
        self.push(FINGERPRINT, &[0; 4]);
        let crc = fingerprint_of(&self.buf, at);
        self.buf[at + 4..at + 8].copy_from_slice(&crc.to_be_bytes());
        self.buf
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    fn push(&mut self, typ: u16, value: &[u8]) {
        self.buf.extend_from_slice(&typ.to_be_bytes());
        self.buf
            .extend_from_slice(&(value.len().min(0xFFFF) as u16).to_be_bytes());
        self.buf.extend_from_slice(value);
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
        let len = (self.buf.len() - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
    }
}

/// The long-term credential key, MD5(username ":" realm ":" password) (RFC 8489 §9.2.2).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    crate::turn::md5::digest(format!("{username}:{realm}:{password}").as_bytes())
}

/// The key for the message's PASSWORD-ALGORITHM (RFC 8489 §18.5): SHA-256 when it names
/// SHA-256 (0x0002), else MD5 (the default, and all a client may assume without it).
pub fn long_term_key_for(m: &Message, username: &str, realm: &str, password: &str) -> Vec<u8> {
    match m.get(PASSWORD_ALGORITHM).and_then(|v| v.get(..2)) {
        Some([0x00, 0x02]) => {
            let input = format!("{username}:{realm}:{password}");
            ring::digest::digest(&ring::digest::SHA256, input.as_bytes())
                .as_ref()
                .to_vec()
        }
        _ => long_term_key(username, realm, password).to_vec(),
    }
}

/// Compares two MACs in time independent of where they differ.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

/// CRC-32 of the message up to the FINGERPRINT at `at`, with the header length counting the
/// FINGERPRINT, XORed with 0x5354554e.
fn fingerprint_of(raw: &[u8], at: usize) -> u32 {
    let mut head = [0u8; 4];
    head.copy_from_slice(&raw[..4]);
    let len = (at + 8 - HEADER_LEN) as u16;
    head[2..4].copy_from_slice(&len.to_be_bytes());
    let crc = crc32_update(crc32_update(!0, &head), &raw[4..at]);
    !crc ^ 0x5354_554E
}

fn crc32_update(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    crc
}

fn xor_mask(tid: &Tid) -> [u8; 16] {
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC.to_be_bytes());
    mask[4..].copy_from_slice(tid);
    mask
}

fn encode_xor_address(addr: SocketAddr, tid: &Tid) -> Vec<u8> {
    let mask = xor_mask(tid);
    let port = addr.port() ^ (MAGIC >> 16) as u16;
    let mut v = vec![0];
    match addr.ip() {
        IpAddr::V4(ip) => {
            v.push(0x01);
            v.extend_from_slice(&port.to_be_bytes());
            v.extend(ip.octets().iter().zip(mask).map(|(a, m)| a ^ m));
        }
        IpAddr::V6(ip) => {
            v.push(0x02);
            v.extend_from_slice(&port.to_be_bytes());
            v.extend(ip.octets().iter().zip(mask).map(|(a, m)| a ^ m));
        }
    }
    v
}

fn decode_xor_address(v: &[u8], tid: &Tid) -> Option<SocketAddr> {
    let mask = xor_mask(tid);
    let port = u16::from_be_bytes([*v.get(2)?, *v.get(3)?]) ^ (MAGIC >> 16) as u16;
    let ip = match v.get(1)? {
        0x01 => {
            let mut o = [0u8; 4];
            for (i, b) in o.iter_mut().enumerate() {
                *b = v.get(4 + i)? ^ mask[i];
            }
            IpAddr::V4(Ipv4Addr::from(o))
        }
        0x02 => {
            let mut o = [0u8; 16];
            for (i, b) in o.iter_mut().enumerate() {
                *b = v.get(4 + i)? ^ mask[i];
            }
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TID: Tid = [
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ];
    const PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // RFC 5769 §2.1.
    fn sample_request() -> Vec<u8> {
        hex("0001 0058 2112a442 b7e7a701 bc34d686 fa87dfae
             80220010 5354554e 20746573 7420636c 69656e74
             00240004 6e0001ff
             80290008 932ff9b1 51263b36
             00060009 6576746a 3a683676 59202020
             00080014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2
             80280004 e57a3bcf")
    }

    // RFC 5769 §2.2.
    fn sample_ipv4_response() -> Vec<u8> {
        hex("0101 003c 2112a442 b7e7a701 bc34d686 fa87dfae
             8022000b 74657374 20766563 746f7220
             00200008 0001a147 e112a643
             00080014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7
             80280004 c07d4c96")
    }

    // RFC 5769 §2.3.
    fn sample_ipv6_response() -> Vec<u8> {
        hex("0101 0048 2112a442 b7e7a701 bc34d686 fa87dfae
             8022000b 74657374 20766563 746f7220
             00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9
             00080014 a382954e 4be67bf1 1784c97c 8292c275 bfe3ed41
             80280004 c8fb0b4c")
    }

    // RFC 5769 §2.4.
    fn sample_long_term_request() -> Vec<u8> {
        hex("0001 0060 2112a442 78ad3433 c6ad72c0 29da412e
             00060012 e3839ee3 8388e383 aae38383 e382afe3 82b90000
             0015001c 662f2f34 39396b39 35346436 4f4c3334 6f4c3946 53547679 36347341
             0014000b 6578616d 706c652e 6f726700
             00080014 f6702465 6dd64a3e 02b8e071 2e85c9a2 8ca89666")
    }

    #[test]
    fn rfc5769_request() {
        let m = Message::parse(&sample_request()).unwrap();
        assert_eq!((m.class, m.method, m.tid), (Class::Request, BINDING, TID));
        assert_eq!(m.get_str(USERNAME), Some("evtj:h6vY"));
        assert_eq!(m.get_str(SOFTWARE), Some("STUN test client"));
        assert!(m.check_integrity(PASSWORD));
        assert!(!m.check_integrity(b"wrong"));
        assert_eq!(m.unknown_required(), Vec::<u16>::new());
    }

    #[test]
    fn rfc5769_responses() {
        for (bytes, addr) in [
            (sample_ipv4_response(), "192.0.2.1:32853"),
            (
                sample_ipv6_response(),
                "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
            ),
        ] {
            let m = Message::parse(&bytes).unwrap();
            assert_eq!((m.class, m.method), (Class::Success, BINDING));
            let want: SocketAddr = addr.parse().unwrap();
            assert_eq!(m.get_xor_address(XOR_MAPPED_ADDRESS), Some(want));
            assert!(m.check_integrity(PASSWORD));
            // Serializing gives the same layout (the RFC pads SOFTWARE with a space where we
            // pad with zero, so the MACs differ; the header and the address do not).
            let built = Builder::new(Class::Success, BINDING, TID)
                .attr(SOFTWARE, b"test vector")
                .xor_address(XOR_MAPPED_ADDRESS, want)
                .integrity(Integrity::Sha1, PASSWORD)
                .fingerprint();
            assert_eq!(built.len(), bytes.len());
            assert_eq!(built[..31], bytes[..31]);
            let xma = 36..bytes.len() - 32;
            assert_eq!(built[xma.clone()], bytes[xma]);
            assert!(Message::parse(&built).unwrap().check_integrity(PASSWORD));
        }
    }

    #[test]
    fn rfc5769_long_term() {
        let m = Message::parse(&sample_long_term_request()).unwrap();
        assert_eq!(m.get_str(USERNAME), Some("マトリックス"));
        assert_eq!(m.get_str(REALM), Some("example.org"));
        assert_eq!(m.get_str(NONCE), Some("f//499k954d6OL34oL9FSTvy64sA"));
        // "The<U+00AD>M<U+00AA>tr<U+2168>" after SASLprep/OpaqueString.
        let key = long_term_key("マトリックス", "example.org", "TheMatrIX");
        assert!(m.check_integrity(&key));
    }

    #[test]
    fn bad_fingerprint_and_garbage() {
        let mut b = sample_request();
        let n = b.len();
        b[n - 1] ^= 1;
        assert_eq!(Message::parse(&b).unwrap_err(), ParseError::BadFingerprint);
        assert_eq!(Message::parse(&[0; 3]).unwrap_err(), ParseError::TooShort);
        let mut b = sample_request();
        b[3] = 0x5c;
        assert!(Message::parse(&b).is_err());
        // Every truncation and a few corruptions are errors, never panics.
        let full = sample_long_term_request();
        for i in 0..full.len() {
            let _ = Message::parse(&full[..i]);
            let mut c = full.clone();
            c[i] ^= 0xFF;
            let _ = Message::parse(&c);
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        // A cheap fuzzer: mutated copies of the vectors and random headers with valid cookies.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seeds = [
            sample_request(),
            sample_ipv6_response(),
            sample_long_term_request(),
        ];
        for i in 0..20_000 {
            let mut b = seeds[i % seeds.len()].clone();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % b.len();
                b[at] = next() as u8;
            }
            b.truncate((next() as usize) % (b.len() + 1));
            if let Ok(m) = Message::parse(&b) {
                let _ = (m.error_code(), m.get_xor_address(XOR_MAPPED_ADDRESS));
                let _ = (m.check_integrity(PASSWORD), m.unknown_required());
            }
            let _ = (stream_frame_len(&b), parse_channel_data(&b));
        }
    }

    #[test]
    fn attributes_after_integrity_are_ignored() {
        let key = long_term_key("u", "r", "p");
        let mut b = Builder::new(Class::Request, REFRESH, TID)
            .attr(USERNAME, b"u")
            .integrity(Integrity::Sha1, &key)
            .finish();
        // An attacker appends a LIFETIME the MAC does not cover.
        b.extend_from_slice(&[0x00, 0x0D, 0x00, 0x04, 0, 0, 0, 0]);
        let len = (b.len() - HEADER_LEN) as u16;
        b[2..4].copy_from_slice(&len.to_be_bytes());
        let m = Message::parse(&b).unwrap();
        assert!(m.check_integrity(&key));
        assert_eq!(m.get(LIFETIME), None);
    }

    #[test]
    fn sha256_integrity_round_trip() {
        let key = long_term_key("u", "r", "p");
        let b = Builder::new(Class::Request, ALLOCATE, TID)
            .attr(USERNAME, b"u")
            .integrity(Integrity::Sha256, &key)
            .fingerprint();
        let m = Message::parse(&b).unwrap();
        assert_eq!(m.integrity(), Some(Integrity::Sha256));
        assert!(m.check_integrity(&key));
        assert!(!m.check_integrity(&long_term_key("u", "r", "q")));
        assert_eq!((m.class, m.method), (Class::Request, ALLOCATE));
    }

    #[test]
    fn classes_and_methods_round_trip() {
        for class in [
            Class::Request,
            Class::Indication,
            Class::Success,
            Class::Error,
        ] {
            for method in [BINDING, ALLOCATE, REFRESH, SEND, DATA, CHANNEL_BIND] {
                let m = Message::parse(&Builder::new(class, method, TID).finish()).unwrap();
                assert_eq!((m.class, m.method), (class, method));
            }
        }
        let e = Builder::new(Class::Error, ALLOCATE, TID)
            .error(438, "Stale Nonce")
            .finish();
        assert_eq!(
            Message::parse(&e).unwrap().error_code(),
            Some((438, "Stale Nonce".into()))
        );
    }

    #[test]
    fn channel_data_framing() {
        let f = channel_data(0x4001, b"hello", true);
        assert_eq!(f.len(), 12);
        assert_eq!(stream_frame_len(&f), Some(12));
        assert_eq!(parse_channel_data(&f), Some((0x4001, &b"hello"[..])));
        let f = channel_data(0x4001, b"hello", false);
        assert_eq!(f.len(), 9);
        assert_eq!(parse_channel_data(&f[..8]), None);
        assert_eq!(parse_channel_data(&channel_data(0x3FFF, b"", false)), None);
        assert_eq!(parse_channel_data(&channel_data(0x8000, b"", false)), None);
        assert_eq!(stream_frame_len(&sample_request()), Some(108));
        assert_eq!(stream_frame_len(&[0x80, 0, 0, 0]), None);
    }
}
