//! TLS 1.3 record protection (RFC 8446 §5, §7.2, §7.3) for a connection whose handshake rustls
//! ran: **pure**, no I/O.
//!
//! Why this exists: a buffered rustls connection keeps a 4 KiB receive buffer, its handshake
//! state and its record layer for as long as the connection lives, about 7 KiB for a session
//! that sits idle for days. XMPP sessions are mostly idle, so after the handshake kith takes the
//! traffic secrets out of rustls (`dangerous_extract_secrets`, the kTLS hand-over) and protects
//! records here: two AEAD keys (as bytes, expanded per record), two IVs, two sequence numbers
//! and the two traffic secrets, so that a KeyUpdate from the peer can be followed. Everything
//! else (handshake, certificates, tickets, TLS 1.2) stays with rustls.
//!
//! Invariants: a nonce is the IV XOR the record's sequence number, and the sequence number
//! grows by one for every record sealed or opened with a key, so no (key, nonce) pair is used
//! twice; a key update resets it together with the key. A record that fails to open is fatal.

use ring::{aead, hkdf};

/// Largest plaintext in one record (2^14, RFC 8446 §5.1).
pub const MAX_PLAINTEXT: usize = 16384;
/// Largest protected record body: plaintext, content type, padding and tag (§5.2).
const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;
const HEADER: usize = 5;
/// Records sealed under one key before we update it: well below the AES-GCM confidentiality
/// limit of 2^24.5 full records (§5.5).
const UPDATE_AFTER: u64 = 1 << 23;

pub const CONTENT_ALERT: u8 = 21;
pub const CONTENT_HANDSHAKE: u8 = 22;
pub const CONTENT_APPLICATION_DATA: u8 = 23;
const HANDSHAKE_KEY_UPDATE: u8 = 24;

/// The connection must end: a protocol violation by the peer (with the alert to send it, when
/// we can still send one), or the peer's own fatal alert (`alert: None`, nothing to answer).
#[derive(Debug, PartialEq, Eq)]
pub struct Fatal {
    pub alert: Option<u8>,
    pub what: &'static str,
}

const UNEXPECTED_MESSAGE: u8 = 10;
const BAD_RECORD_MAC: u8 = 20;
const RECORD_OVERFLOW: u8 = 22;
const DECODE_ERROR: u8 = 50;
const INTERNAL_ERROR: u8 = 80;

fn fatal(alert: u8, what: &'static str) -> Fatal {
    Fatal {
        alert: Some(alert),
        what,
    }
}

/// The TLS 1.3 cipher suites rustls (ring) negotiates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite {
    Aes128GcmSha256,
    Aes256GcmSha384,
    Chacha20Poly1305Sha256,
}

impl Suite {
    fn aead(self) -> &'static aead::Algorithm {
        match self {
            Suite::Aes128GcmSha256 => &aead::AES_128_GCM,
            Suite::Aes256GcmSha384 => &aead::AES_256_GCM,
            Suite::Chacha20Poly1305Sha256 => &aead::CHACHA20_POLY1305,
        }
    }

    fn hkdf(self) -> hkdf::Algorithm {
        match self {
            Suite::Aes256GcmSha384 => hkdf::HKDF_SHA384,
            _ => hkdf::HKDF_SHA256,
        }
    }

    fn hash_len(self) -> usize {
        match self {
            Suite::Aes256GcmSha384 => 48,
            _ => 32,
        }
    }
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-Expand-Label with an empty context (RFC 8446 §7.1).
fn expand_label(suite: Suite, secret: &[u8], label: &[u8], out: &mut [u8]) {
    let len = u16::try_from(out.len()).unwrap_or(u16::MAX).to_be_bytes();
    let label_len = [(6 + label.len()) as u8];
    let info: [&[u8]; 5] = [&len, &label_len, b"tls13 ", label, &[0]];
    let prk = hkdf::Prk::new_less_safe(suite.hkdf(), secret);
    // Lengths here are at most 48 bytes, far below HKDF's 255 * hash limit.
    let okm = prk
        .expand(&info, Len(out.len()))
        .expect("HKDF output length within limits");
    okm.fill(out).expect("HKDF output length within limits");
}

/// One direction's keys: the traffic secret (kept for key updates), the AEAD key, the IV and
/// the sequence number of the next record.
///
/// The key is kept as its bytes and expanded for each record: ring's expanded key (the AES
/// key schedule and the GHASH table) is 544 bytes, twice per connection, for sessions that
/// are idle nearly all the time, while expanding costs about 160 ns, about as much as sealing
/// a 200-byte stanza (measured with ring 0.17 on the 2-core benchmark machine).
struct Direction {
    secret: [u8; 48],
    key: [u8; 32],
    iv: [u8; 12],
    seq: u64,
}

impl Direction {
    fn new(suite: Suite, secret: &[u8], seq: u64) -> Direction {
        let mut s = [0u8; 48];
        s[..secret.len()].copy_from_slice(secret);
        let mut key = [0u8; 32];
        expand_label(suite, secret, b"key", &mut key[..suite.aead().key_len()]);
        let mut iv = [0u8; 12];
        expand_label(suite, secret, b"iv", &mut iv);
        Direction {
            secret: s,
            key,
            iv,
            seq,
        }
    }

    fn aead_key(&self, suite: Suite) -> aead::LessSafeKey {
        let key = aead::UnboundKey::new(suite.aead(), &self.key[..suite.aead().key_len()])
            .expect("key length of the suite");
        aead::LessSafeKey::new(key)
    }

    /// application_traffic_secret_N+1 (§7.2), with its key and IV; the sequence restarts.
    fn update(&mut self, suite: Suite) {
        let n = suite.hash_len();
        let mut next = [0u8; 48];
        expand_label(suite, &self.secret[..n], b"traffic upd", &mut next[..n]);
        *self = Direction::new(suite, &next[..n], 0);
    }

    fn nonce(&self) -> aead::Nonce {
        let mut n = self.iv;
        for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        aead::Nonce::assume_unique_for_key(n)
    }
}

/// What an opened record holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    /// Application data: this many plaintext bytes, at the start of the record buffer.
    Data(usize),
    /// The peer's close_notify: it sends nothing more.
    Closed,
    /// The peer updated its sending key (our receive key followed). `reply`: it asked us to
    /// update ours too, so a KeyUpdate of our own must be sealed next (`seal_key_update`).
    KeyUpdated { reply: bool },
}

/// Both directions of an established TLS 1.3 connection.
pub struct RecordLayer {
    suite: Suite,
    rx: Direction,
    tx: Direction,
}

impl RecordLayer {
    /// From the traffic secrets (client's for `rx`, server's for `tx` on a server) and the
    /// sequence numbers rustls reached.
    pub fn new(
        suite: Suite,
        rx_secret: &[u8],
        rx_seq: u64,
        tx_secret: &[u8],
        tx_seq: u64,
    ) -> Result<RecordLayer, Fatal> {
        if rx_secret.len() != suite.hash_len() || tx_secret.len() != suite.hash_len() {
            return Err(fatal(INTERNAL_ERROR, "traffic secret of the wrong length"));
        }
        Ok(RecordLayer {
            suite,
            rx: Direction::new(suite, rx_secret, rx_seq),
            tx: Direction::new(suite, tx_secret, tx_seq),
        })
    }

    /// Whether our keys are the ones rustls derived (compared through the IVs, which come
    /// from the same secrets by the same expansion as the keys).
    pub fn agrees_with(&self, rx_iv: &[u8], tx_iv: &[u8]) -> bool {
        self.rx.iv[..] == *rx_iv && self.tx.iv[..] == *tx_iv
    }

    /// Length of the whole record (header included) that starts `buf`, once its header is
    /// there; a header that cannot start a protected record is fatal.
    pub fn record_len(buf: &[u8]) -> Result<Option<usize>, Fatal> {
        if buf.len() < HEADER {
            return Ok(None);
        }
        // After the handshake every record is protected and says application_data (§5.2);
        // a change_cipher_spec is allowed only before the peer's Finished (§5).
        if buf[0] != CONTENT_APPLICATION_DATA {
            return Err(fatal(
                UNEXPECTED_MESSAGE,
                "unprotected record after the handshake",
            ));
        }
        let len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
        if len > MAX_CIPHERTEXT {
            return Err(fatal(RECORD_OVERFLOW, "record longer than 2^14 + 256"));
        }
        Ok(Some(HEADER + len))
    }

    /// Opens one whole record in place (`record` as `record_len` measured it). Application
    /// data ends up at the start of `record`.
    pub fn open(&mut self, record: &mut [u8]) -> Result<Opened, Fatal> {
        let (header, body) = record.split_at_mut(HEADER);
        let nonce = self.rx.nonce();
        let plain = self
            .rx
            .aead_key(self.suite)
            .open_in_place(nonce, aead::Aad::from(&*header), body)
            .map_err(|_| fatal(BAD_RECORD_MAC, "record failed authentication"))?;
        self.rx.seq += 1;
        // TLSInnerPlaintext: content, the real type, then zero padding (§5.2).
        let Some(end) = plain.iter().rposition(|&b| b != 0) else {
            return Err(fatal(UNEXPECTED_MESSAGE, "record without a content type"));
        };
        let (typ, len) = (plain[end], end);
        if len > MAX_PLAINTEXT {
            return Err(fatal(RECORD_OVERFLOW, "plaintext longer than 2^14"));
        }
        match typ {
            CONTENT_APPLICATION_DATA => {
                record.copy_within(HEADER..HEADER + len, 0);
                Ok(Opened::Data(len))
            }
            CONTENT_ALERT => match plain[..len] {
                // close_notify; user_canceled is followed by one (§6.1).
                [_, 0] => Ok(Opened::Closed),
                [_, 90] => Ok(Opened::Data(0)),
                [_, _] => Err(Fatal {
                    alert: None,
                    what: "the peer sent a fatal alert",
                }),
                _ => Err(fatal(DECODE_ERROR, "malformed alert")),
            },
            CONTENT_HANDSHAKE => self.handshake(&plain[..len]),
            _ => Err(fatal(UNEXPECTED_MESSAGE, "unexpected record type")),
        }
    }

    /// Post-handshake messages a server can receive: only KeyUpdate (the client does not
    /// send tickets, and kith asks for no client certificate later).
    fn handshake(&mut self, msg: &[u8]) -> Result<Opened, Fatal> {
        match msg {
            [HANDSHAKE_KEY_UPDATE, 0, 0, 1, req @ (0 | 1)] => {
                self.rx.update(self.suite);
                Ok(Opened::KeyUpdated { reply: *req == 1 })
            }
            [HANDSHAKE_KEY_UPDATE, ..] => Err(fatal(DECODE_ERROR, "malformed KeyUpdate")),
            _ => Err(fatal(
                UNEXPECTED_MESSAGE,
                "unexpected handshake message after the handshake",
            )),
        }
    }

    /// Appends `plaintext` to `out` as records of type `typ`, at most 2^14 bytes each, and
    /// updates our key after `UPDATE_AFTER` records (announcing it first).
    pub fn seal(&mut self, typ: u8, plaintext: &[u8], out: &mut Vec<u8>) {
        for chunk in plaintext.chunks(MAX_PLAINTEXT) {
            if self.tx.seq >= UPDATE_AFTER {
                self.seal_key_update(false, out);
            }
            self.seal_one(typ, chunk, out);
        }
    }

    /// Our KeyUpdate (`request`: ask the peer to update too), then our new key.
    pub fn seal_key_update(&mut self, request: bool, out: &mut Vec<u8>) {
        self.seal_one(
            CONTENT_HANDSHAKE,
            &[HANDSHAKE_KEY_UPDATE, 0, 0, 1, u8::from(request)],
            out,
        );
        self.tx.update(self.suite);
    }

    /// A close_notify alert.
    pub fn seal_close_notify(&mut self, out: &mut Vec<u8>) {
        self.seal_one(CONTENT_ALERT, &[1, 0], out);
    }

    /// A fatal alert, the last record we send.
    pub fn seal_alert(&mut self, alert: u8, out: &mut Vec<u8>) {
        self.seal_one(CONTENT_ALERT, &[2, alert], out);
    }

    fn seal_one(&mut self, typ: u8, chunk: &[u8], out: &mut Vec<u8>) {
        let tag_len = self.suite.aead().tag_len();
        let body_len = chunk.len() + 1 + tag_len;
        let header = [
            CONTENT_APPLICATION_DATA,
            3,
            3,
            (body_len >> 8) as u8,
            body_len as u8,
        ];
        out.reserve(HEADER + body_len);
        out.extend_from_slice(&header);
        let start = out.len();
        out.extend_from_slice(chunk);
        out.push(typ);
        let nonce = self.tx.nonce();
        let tag = self
            .tx
            .aead_key(self.suite)
            .seal_in_place_separate_tag(nonce, aead::Aad::from(header), &mut out[start..])
            .expect("record within AEAD limits");
        out.extend_from_slice(tag.as_ref());
        // 2^64 records cannot happen: the key is updated every UPDATE_AFTER.
        self.tx.seq += 1;
    }
}

impl std::fmt::Debug for RecordLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("RecordLayer")
            .field("suite", &self.suite)
            .field("rx_seq", &self.rx.seq)
            .field("tx_seq", &self.tx.seq)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(suite: Suite) -> (RecordLayer, RecordLayer) {
        let (c, s) = (vec![7u8; suite.hash_len()], vec![9u8; suite.hash_len()]);
        let server = RecordLayer::new(suite, &c, 0, &s, 0).unwrap();
        let client = RecordLayer::new(suite, &s, 0, &c, 0).unwrap();
        (server, client)
    }

    fn open_all(rl: &mut RecordLayer, mut wire: Vec<u8>) -> Result<Vec<Opened>, Fatal> {
        let mut out = Vec::new();
        while !wire.is_empty() {
            let n = RecordLayer::record_len(&wire)?.expect("whole header");
            let mut rec: Vec<u8> = wire.drain(..n).collect();
            let o = rl.open(&mut rec)?;
            if let Opened::Data(len) = o {
                assert!(rec[..len].iter().all(|&b| b == b'x'));
            }
            out.push(o);
        }
        Ok(out)
    }

    #[test]
    fn records_round_trip_and_split_at_the_limit() {
        for suite in [
            Suite::Aes128GcmSha256,
            Suite::Aes256GcmSha384,
            Suite::Chacha20Poly1305Sha256,
        ] {
            let (mut server, mut client) = pair(suite);
            let mut wire = Vec::new();
            server.seal(
                CONTENT_APPLICATION_DATA,
                &[b'x'; MAX_PLAINTEXT + 1],
                &mut wire,
            );
            let got = open_all(&mut client, wire).unwrap();
            assert_eq!(got, vec![Opened::Data(MAX_PLAINTEXT), Opened::Data(1)]);
        }
    }

    #[test]
    fn a_replayed_reordered_or_altered_record_is_fatal() {
        let (mut server, mut client) = pair(Suite::Aes128GcmSha256);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        server.seal(CONTENT_APPLICATION_DATA, b"xx", &mut a);
        server.seal(CONTENT_APPLICATION_DATA, b"xx", &mut b);
        // b before a: the sequence number (in the nonce) does not match.
        let mut reordered = b.clone();
        assert_eq!(
            client.open(&mut reordered).unwrap_err().alert,
            Some(BAD_RECORD_MAC)
        );
        let (_, mut client) = pair(Suite::Aes128GcmSha256);
        let mut altered = a.clone();
        altered[7] ^= 1;
        assert_eq!(
            client.open(&mut altered).unwrap_err().alert,
            Some(BAD_RECORD_MAC)
        );
        let (_, mut client) = pair(Suite::Aes128GcmSha256);
        let mut first = a.clone();
        assert_eq!(client.open(&mut first), Ok(Opened::Data(2)));
        let mut replay = a;
        assert_eq!(
            client.open(&mut replay).unwrap_err().alert,
            Some(BAD_RECORD_MAC)
        );
    }

    #[test]
    fn headers_that_cannot_start_a_protected_record_are_refused() {
        assert_eq!(RecordLayer::record_len(&[23, 3, 3, 0]), Ok(None));
        assert_eq!(
            RecordLayer::record_len(&[23, 3, 3, 0x41, 0x01])
                .unwrap_err()
                .alert,
            Some(RECORD_OVERFLOW)
        );
        assert_eq!(
            RecordLayer::record_len(&[22, 3, 3, 0, 5])
                .unwrap_err()
                .alert,
            Some(UNEXPECTED_MESSAGE)
        );
        assert_eq!(RecordLayer::record_len(&[23, 3, 3, 0, 20]), Ok(Some(25)));
    }

    #[test]
    fn key_updates_are_followed_in_both_directions() {
        let (mut server, mut client) = pair(Suite::Aes256GcmSha384);
        let mut wire = Vec::new();
        client.seal_key_update(true, &mut wire);
        client.seal(CONTENT_APPLICATION_DATA, b"xxx", &mut wire);
        let got = open_all(&mut server, wire).unwrap();
        assert_eq!(
            got,
            vec![Opened::KeyUpdated { reply: true }, Opened::Data(3)]
        );
        let mut wire = Vec::new();
        server.seal_key_update(false, &mut wire);
        server.seal(CONTENT_APPLICATION_DATA, b"x", &mut wire);
        let got = open_all(&mut client, wire).unwrap();
        assert_eq!(
            got,
            vec![Opened::KeyUpdated { reply: false }, Opened::Data(1)]
        );
    }

    #[test]
    fn alerts_and_stray_handshake_messages() {
        let (mut server, mut client) = pair(Suite::Chacha20Poly1305Sha256);
        let mut wire = Vec::new();
        client.seal_close_notify(&mut wire);
        assert_eq!(open_all(&mut server, wire).unwrap(), vec![Opened::Closed]);
        let mut wire = Vec::new();
        client.seal_one(CONTENT_HANDSHAKE, &[4, 0, 0, 0], &mut wire); // NewSessionTicket
        assert_eq!(
            open_all(&mut server, wire).unwrap_err().alert,
            Some(UNEXPECTED_MESSAGE)
        );
        let (mut server, mut client) = pair(Suite::Chacha20Poly1305Sha256);
        let mut wire = Vec::new();
        client.seal_one(CONTENT_HANDSHAKE, &[24, 0, 0, 1, 2], &mut wire);
        assert_eq!(
            open_all(&mut server, wire).unwrap_err().alert,
            Some(DECODE_ERROR)
        );
    }
}
