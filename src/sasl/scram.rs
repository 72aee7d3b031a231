//! SCRAM server (RFC 5802, RFC 7677; channel binding RFC 5929 §4 and
//! RFC 9266) as one type per phase; each transition consumes the previous
//! phase:
//!
//! ```text
//! scram_start(client-first) -> ScramNeedCreds
//!     .server_first(creds)    -> (ScramAwaitFinal, server-first)
//!     .finish(client-final)   -> ScramSuccess { server-final, .. }
//! ```
//!
//! Must not know: accounts, XML or base64 framing of the XMPP `<auth/>`
//! element. Unknown users are not revealed before the end: the caller passes
//! `None` as credentials and the exchange continues with fake but stable
//! salt and iteration count, failing with `not-authorized` at `finish`, exactly
//! like a wrong password.

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};

use super::creds::{h, hmac};
use super::{ct_eq, CbInfo, Hash, Mechanism, SaslFailure, DEFAULT_ITERATIONS, MAX_MESSAGE_LEN};
use super::{ScramCreds, CB_TLS_EXPORTER, CB_TLS_SERVER_END_POINT};
use crate::jid::prepare_localpart;

/// Random bytes in a server nonce (base64-encoded to 32 characters).
const SERVER_NONCE_BYTES: usize = 24;

/// Phase 1 done: the client-first message is valid; the caller looks up
/// the credentials for [`username`](Self::username).
pub struct ScramNeedCreds {
    mech: Mechanism,
    hash: Hash,
    username: String,
    authzid: Option<String>,
    client_first_bare: String,
    client_nonce: String,
    /// What `c=` must decode to: gs2 header plus channel-binding data.
    expected_cbind: Vec<u8>,
    cb_type: Option<&'static str>,
}

/// Phase 2 done: server-first sent; waiting for client-final.
pub struct ScramAwaitFinal {
    mech: Mechanism,
    hash: Hash,
    username: String,
    authzid: Option<String>,
    cb_type: Option<&'static str>,
    expected_cbind: Vec<u8>,
    nonce: String,
    /// client-first-bare "," server-first "," (the AuthMessage prefix).
    auth_prefix: String,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
    /// False when the credentials were faked for an unknown user.
    user_known: bool,
    /// The server nonce or fake credentials could not be generated securely.
    poisoned: bool,
}

/// The client proved knowledge of the password. Send `server_final` in
/// `<success/>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramSuccess {
    pub mechanism: Mechanism,
    /// The prepared authcid (a localpart).
    pub username: String,
    /// The requested authorization identity, if any; the caller decides
    /// whether to accept it (`invalid-authzid` otherwise).
    pub authzid: Option<String>,
    /// The channel-binding type used, if any (for logging).
    pub cb_type: Option<&'static str>,
    /// server-final-message: `v=<ServerSignature>`.
    pub server_final: Vec<u8>,
}

/// Parses client-first-message.
///
/// `plus_offered`: whether this server advertised any -PLUS mechanism on this
/// connection (then a client that says `y` is being downgraded, RFC 5802
/// §6). `cb`: the channel-binding data available on this connection.
pub fn scram_start(
    mech: Mechanism,
    plus_offered: bool,
    cb: &CbInfo,
    client_first: &[u8],
) -> Result<ScramNeedCreds, SaslFailure> {
    let hash = mech.hash().ok_or(SaslFailure::with_text(
        SaslFailure::INVALID_MECHANISM,
        "not a SCRAM mechanism",
    ))?;
    if mech.is_plus() && !cb.any() {
        return Err(SaslFailure::with_text(
            SaslFailure::INVALID_MECHANISM,
            "channel binding is not available on this connection",
        ));
    }
    let msg = as_text(client_first)?;
    if msg.is_empty() {
        return Err(SaslFailure::malformed("empty client-first message"));
    }

    // gs2-header = gs2-cbind-flag "," [ authzid ] ","
    let (flag, rest) = msg
        .split_once(',')
        .ok_or(SaslFailure::malformed("missing GS2 header"))?;
    let (authz, bare) = rest
        .split_once(',')
        .ok_or(SaslFailure::malformed("missing GS2 header"))?;
    let gs2_header = &msg[..msg.len() - bare.len()];

    let cb_data: Option<(&'static str, &[u8])> = match flag {
        "n" | "y" if mech.is_plus() => {
            return Err(SaslFailure::malformed(
                "a -PLUS mechanism requires channel binding (p=)",
            ))
        }
        "n" => None,
        "y" if plus_offered => {
            // RFC 5802 §6: the client supports channel binding but thinks we
            // do not, yet we offered it: someone removed -PLUS in transit.
            return Err(SaslFailure::not_authorized(
                "channel binding downgrade detected",
            ));
        }
        "y" => None,
        f => {
            let name = f
                .strip_prefix("p=")
                .ok_or(SaslFailure::malformed("invalid GS2 channel-binding flag"))?;
            if !mech.is_plus() {
                return Err(SaslFailure::malformed(
                    "channel binding requested with a non-PLUS mechanism",
                ));
            }
            let name = match name {
                CB_TLS_EXPORTER => CB_TLS_EXPORTER,
                CB_TLS_SERVER_END_POINT => CB_TLS_SERVER_END_POINT,
                _ => {
                    return Err(SaslFailure::not_authorized(
                        "unsupported channel binding type",
                    ))
                }
            };
            let data = cb.data(name).ok_or(SaslFailure::not_authorized(
                "unsupported channel binding type",
            ))?;
            Some((name, data))
        }
    };

    let authzid = match authz {
        "" => None,
        a => {
            let name = a
                .strip_prefix("a=")
                .ok_or(SaslFailure::malformed("invalid authzid in GS2 header"))?;
            Some(decode_saslname(name)?)
        }
    };

    // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
    let mut attrs = bare.split(',');
    let user_attr = attrs.next().unwrap_or_default();
    if user_attr.starts_with("m=") {
        return Err(SaslFailure::malformed("unsupported mandatory extension"));
    }
    let raw_user = user_attr
        .strip_prefix("n=")
        .ok_or(SaslFailure::malformed("missing username"))?;
    let client_nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or(SaslFailure::malformed("missing nonce"))?;
    if client_nonce.is_empty() || !client_nonce.bytes().all(is_printable) {
        return Err(SaslFailure::malformed("invalid client nonce"));
    }
    check_extensions(attrs)?;

    let username = decode_saslname(raw_user)?;
    let username = prepare_localpart(&username)
        .map_err(|_| SaslFailure::not_authorized("invalid username"))?
        .into_owned();

    let mut expected_cbind = gs2_header.as_bytes().to_vec();
    if let Some((_, data)) = cb_data {
        expected_cbind.extend_from_slice(data);
    }
    Ok(ScramNeedCreds {
        mech,
        hash,
        username,
        authzid,
        client_first_bare: bare.to_owned(),
        client_nonce: client_nonce.to_owned(),
        expected_cbind,
        cb_type: cb_data.map(|(n, _)| n),
    })
}

impl ScramSuccess {
    /// server-final-message, for `<success/>`.
    pub fn server_final(&self) -> &[u8] {
        &self.server_final
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    pub fn authzid(&self) -> Option<&str> {
        self.authzid.as_deref()
    }
}

impl ScramNeedCreds {
    /// The authentication identity: `=2C`/`=3D` unescaped, prepared as a
    /// JID localpart.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The authorization identity from the GS2 header, if the client sent one.
    pub fn authzid(&self) -> Option<&str> {
        self.authzid.as_deref()
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mech
    }

    /// The hash whose credentials the caller must look up.
    pub fn hash(&self) -> Hash {
        self.hash
    }

    /// Produces server-first-message with a random server nonce. `creds` is
    /// `None` for an unknown user; credentials for another hash, or invalid
    /// ones, are treated the same way.
    ///
    /// If the system RNG fails (it does not on supported systems), the
    /// exchange still produces a message, but `finish` then fails with
    /// `temporary-auth-failure`, so a predictable nonce never authenticates.
    pub fn server_first(self, creds: Option<&ScramCreds>) -> (ScramAwaitFinal, Vec<u8>) {
        let mut raw = [0u8; SERVER_NONCE_BYTES];
        let rng_ok = SystemRandom::new().fill(&mut raw).is_ok();
        let (mut wait, msg) = self.server_first_with_nonce(creds, &B64.encode(raw));
        wait.poisoned |= !rng_ok;
        (wait, msg)
    }

    /// As [`server_first`](Self::server_first) with a given server nonce
    /// part (the RFC test vectors). A nonce that is empty or not printable
    /// ASCII without ',' poisons the exchange like an RNG failure.
    pub fn server_first_with_nonce(
        self,
        creds: Option<&ScramCreds>,
        server_nonce: &str,
    ) -> (ScramAwaitFinal, Vec<u8>) {
        let mut poisoned = server_nonce.is_empty() || !server_nonce.bytes().all(is_printable);
        let real = creds.filter(|c| c.hash == self.hash && c.is_valid());
        let (salt, iterations, stored_key, server_key) = match real {
            Some(c) => (
                c.salt.clone(),
                c.iterations,
                c.stored_key.clone(),
                c.server_key.clone(),
            ),
            None => fake_creds(self.hash, &self.username).unwrap_or_else(|| {
                poisoned = true;
                let zeros = vec![0; self.hash.output_len()];
                (vec![0; 16], DEFAULT_ITERATIONS, zeros.clone(), zeros)
            }),
        };
        let nonce = format!("{}{}", self.client_nonce, server_nonce);
        let server_first = format!("r={},s={},i={}", nonce, B64.encode(&salt), iterations);
        let auth_prefix = format!("{},{},", self.client_first_bare, server_first);
        (
            ScramAwaitFinal {
                mech: self.mech,
                hash: self.hash,
                username: self.username,
                authzid: self.authzid,
                cb_type: self.cb_type,
                expected_cbind: self.expected_cbind,
                nonce,
                auth_prefix,
                stored_key,
                server_key,
                user_known: real.is_some(),
                poisoned,
            },
            server_first.into_bytes(),
        )
    }
}

impl ScramAwaitFinal {
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Checks client-final-message: channel binding, nonce, then the proof
    /// (in constant time).
    pub fn finish(self, client_final: &[u8]) -> Result<ScramSuccess, SaslFailure> {
        if self.poisoned {
            return Err(rng_failure());
        }
        let msg = as_text(client_final)?;
        // client-final-message = client-final-message-without-proof "," proof
        let (without_proof, proof_attr) = msg
            .rsplit_once(',')
            .ok_or(SaslFailure::malformed("missing proof"))?;
        let proof = proof_attr
            .strip_prefix("p=")
            .ok_or(SaslFailure::malformed("missing proof"))?;
        let proof = b64_decode(proof)?;

        // channel-binding "," nonce ["," extensions]
        let mut attrs = without_proof.split(',');
        let cbind = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(SaslFailure::malformed("missing channel binding"))?;
        let cbind = b64_decode(cbind)?;
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(SaslFailure::malformed("missing nonce"))?;
        check_extensions(attrs)?;

        if cbind != self.expected_cbind {
            return Err(SaslFailure::not_authorized("channel binding mismatch"));
        }
        if nonce != self.nonce {
            return Err(SaslFailure::not_authorized("nonce mismatch"));
        }
        if proof.len() != self.hash.output_len() {
            return Err(SaslFailure::malformed("proof has the wrong length"));
        }

        let mut auth_message = self.auth_prefix;
        auth_message.push_str(without_proof);
        let client_signature = hmac(self.hash, &self.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let proof_ok = ct_eq(&h(self.hash, &client_key), &self.stored_key);
        if !(proof_ok && self.user_known) {
            return Err(SaslFailure::not_authorized("invalid username or password"));
        }
        let server_signature = hmac(self.hash, &self.server_key, auth_message.as_bytes());
        Ok(ScramSuccess {
            mechanism: self.mech,
            username: self.username,
            authzid: self.authzid,
            cb_type: self.cb_type,
            server_final: format!("v={}", B64.encode(server_signature)).into_bytes(),
        })
    }
}

// Channel-binding data derives from TLS secrets: keep it out of logs.
impl std::fmt::Debug for ScramNeedCreds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramNeedCreds")
            .field("mech", &self.mech)
            .field("username", &self.username)
            .field("authzid", &self.authzid)
            .field("cb_type", &self.cb_type)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ScramAwaitFinal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramAwaitFinal")
            .field("mech", &self.mech)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------
// Helpers.

/// printable = %x21-2B / %x2D-7E (RFC 5802 §7): printable ASCII except ','.
fn is_printable(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && b != b','
}

fn as_text(msg: &[u8]) -> Result<&str, SaslFailure> {
    if msg.len() > MAX_MESSAGE_LEN {
        return Err(SaslFailure::malformed("message too long"));
    }
    std::str::from_utf8(msg).map_err(|_| SaslFailure::malformed("message is not UTF-8"))
}

fn b64_decode(s: &str) -> Result<Vec<u8>, SaslFailure> {
    B64.decode(s)
        .map_err(|_| SaslFailure::malformed("invalid base64"))
}

/// saslname: `,` must be sent as `=2C` and `=` as `=3D`; any other `=` or a
/// NUL is an error (RFC 5802 §5.1).
pub(crate) fn decode_saslname(s: &str) -> Result<String, SaslFailure> {
    if s.is_empty() {
        return Err(SaslFailure::malformed("empty name"));
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(['=', '\0']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("=2C") {
            out.push(',');
        } else if tail.starts_with("=3D") {
            out.push('=');
        } else {
            return Err(SaslFailure::malformed("invalid escape in name"));
        }
        rest = &tail[3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Optional extensions (`attr=value` with a letter attr) are ignored, but
/// must be well formed; `m=` is reserved for mandatory extensions we do not
/// support.
fn check_extensions<'a>(attrs: impl Iterator<Item = &'a str>) -> Result<(), SaslFailure> {
    for a in attrs {
        let b = a.as_bytes();
        if b.len() < 2 || !b[0].is_ascii_alphabetic() || b[1] != b'=' {
            return Err(SaslFailure::malformed("invalid attribute"));
        }
        if b[0] == b'm' {
            return Err(SaslFailure::malformed("unsupported mandatory extension"));
        }
    }
    Ok(())
}

fn rng_failure() -> SaslFailure {
    SaslFailure::with_text(SaslFailure::TEMPORARY_AUTH_FAILURE, "internal error")
}

type FakeCreds = (Vec<u8>, u32, Vec<u8>, Vec<u8>);

/// Credentials for a user that does not exist. The salt is derived from a
/// per-process secret and the username, so repeated attempts for the same
/// name see the same salt (a random one each time would reveal that the
/// account does not exist); the keys are random and never match a proof.
/// `None` only if the system RNG fails.
fn fake_creds(hash: Hash, username: &str) -> Option<FakeCreds> {
    static SECRET: OnceLock<Option<[u8; 32]>> = OnceLock::new();
    let secret = SECRET
        .get_or_init(|| {
            let mut s = [0u8; 32];
            SystemRandom::new().fill(&mut s).ok().map(|_| s)
        })
        .as_ref()?;
    let mut input = Vec::with_capacity(username.len() + 24);
    input.extend_from_slice(b"kith-fake-salt\0");
    input.extend_from_slice(hash.name().as_bytes());
    input.push(0);
    input.extend_from_slice(username.as_bytes());
    let mut salt = hmac(Hash::Sha256, secret, &input);
    salt.truncate(16);
    let mut keys = vec![0u8; 2 * hash.output_len()];
    SystemRandom::new().fill(&mut keys).ok()?;
    let server_key = keys.split_off(hash.output_len());
    Some((salt, DEFAULT_ITERATIONS, keys, server_key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::{derive_creds_with_salt, ChannelBinding, ScramClient};

    fn creds(hash: Hash, salt_b64: &str) -> ScramCreds {
        derive_creds_with_salt("pencil", hash, 4096, &B64.decode(salt_b64).unwrap()).unwrap()
    }

    /// Runs one exchange byte for byte against an RFC transcript.
    fn transcript(mech: Mechanism, c: &ScramCreds, lines: [&str; 4], server_nonce: &str) {
        let need = scram_start(mech, false, &CbInfo::none(), lines[0].as_bytes()).unwrap();
        assert_eq!(need.username(), "user");
        assert_eq!(need.authzid(), None);
        let (wait, server_first) = need.server_first_with_nonce(Some(c), server_nonce);
        assert_eq!(std::str::from_utf8(&server_first).unwrap(), lines[1]);
        let ok = wait.finish(lines[2].as_bytes()).unwrap();
        assert_eq!(std::str::from_utf8(&ok.server_final).unwrap(), lines[3]);
        assert_eq!(ok.username, "user");
        assert_eq!(ok.cb_type, None);
    }

    #[test]
    fn rfc5802_section5_sha1() {
        transcript(
            Mechanism::ScramSha1,
            &creds(Hash::Sha1, "QSXCR+Q6sek8bf92"),
            [
                "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
                "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
                "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
                "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
            ],
            "3rfcNHYJY1ZVvWVs7j",
        );
    }

    #[test]
    fn rfc7677_section3_sha256() {
        transcript(
            Mechanism::ScramSha256,
            &creds(Hash::Sha256, "W22ZaJ0SNY7soEsUEjb6gQ=="),
            [
                "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
                "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
                "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
                "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
            ],
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        );
    }

    #[test]
    fn rfc_client_matches_transcript() {
        let mut c = ScramClient::new(Mechanism::ScramSha1, "user", "pencil", None)
            .unwrap()
            .with_nonce("fyko+d2lbbFgONRv9qkxdawL");
        assert_eq!(c.client_first(), b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL");
        let cf = c
            .handle_server_first(
                b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
            )
            .unwrap();
        assert_eq!(
            std::str::from_utf8(&cf).unwrap(),
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
        );
        c.verify_server_final(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")
            .unwrap();
    }

    fn tls() -> CbInfo {
        CbInfo {
            exporter: Some(vec![0xEE; 32]),
            server_end_point: Some(vec![0x5E; 32]),
        }
    }

    /// A full client/server exchange; returns the server's verdict.
    fn exchange(
        mech: Mechanism,
        client_pw: &str,
        stored: Option<&ScramCreds>,
        client_cb: Option<ChannelBinding>,
        server_cb: &CbInfo,
    ) -> Result<ScramSuccess, SaslFailure> {
        let mut client = ScramClient::new(mech, "Juliet", client_pw, client_cb).unwrap();
        let need = scram_start(mech, server_cb.any(), server_cb, &client.client_first())?;
        assert_eq!(need.username(), "juliet");
        let (wait, sf) = need.server_first(stored);
        let cf = client.handle_server_first(&sf).unwrap();
        let ok = wait.finish(&cf)?;
        client.verify_server_final(&ok.server_final).unwrap();
        Ok(ok)
    }

    #[test]
    fn round_trips_all_mechanisms() {
        let cb = tls();
        for hash in Hash::ALL {
            let c = derive_creds_with_salt("secret", hash, 64, b"saltsaltsalt").unwrap();
            let ok =
                exchange(Mechanism::scram(hash, false), "secret", Some(&c), None, &cb).unwrap();
            assert_eq!(ok.cb_type, None);
            assert_eq!(ok.username, "juliet");
            let ok = exchange(
                Mechanism::scram(hash, false),
                "secret",
                Some(&c),
                None,
                &CbInfo::none(),
            )
            .unwrap();
            assert_eq!(ok.mechanism, Mechanism::scram(hash, false));
            let exp = ChannelBinding::TlsExporter(vec![0xEE; 32]);
            let ok = exchange(
                Mechanism::scram(hash, true),
                "secret",
                Some(&c),
                Some(exp),
                &cb,
            )
            .unwrap();
            assert_eq!(ok.cb_type, Some("tls-exporter"));
            let sep = ChannelBinding::TlsServerEndPoint(vec![0x5E; 32]);
            let ok = exchange(
                Mechanism::scram(hash, true),
                "secret",
                Some(&c),
                Some(sep),
                &cb,
            )
            .unwrap();
            assert_eq!(ok.cb_type, Some("tls-server-end-point"));
        }
    }

    #[test]
    fn wrong_password_is_not_authorized() {
        let c = derive_creds_with_salt("secret", Hash::Sha256, 64, b"salt").unwrap();
        let err = exchange(
            Mechanism::ScramSha256,
            "Secret",
            Some(&c),
            None,
            &CbInfo::none(),
        )
        .unwrap_err();
        assert_eq!(err.condition, "not-authorized");
        // Credentials for another hash count as unknown, not as a crash.
        let c1 = derive_creds_with_salt("secret", Hash::Sha1, 64, b"salt").unwrap();
        let err = exchange(
            Mechanism::ScramSha256,
            "secret",
            Some(&c1),
            None,
            &CbInfo::none(),
        )
        .unwrap_err();
        assert_eq!(err.condition, "not-authorized");
    }

    #[test]
    fn unknown_user_fails_only_at_the_end_with_stable_salt() {
        let start = || {
            scram_start(
                Mechanism::ScramSha256,
                false,
                &CbInfo::none(),
                b"n,,n=nobody,r=abc",
            )
            .unwrap()
        };
        let (_, sf1) = start().server_first(None);
        let (wait, sf2) = start().server_first(None);
        let salt_of = |sf: &[u8]| {
            let s = std::str::from_utf8(sf).unwrap().to_owned();
            s.split(',').skip(1).collect::<Vec<_>>().join(",")
        };
        // Same salt and iteration count each time, like a real account.
        assert_eq!(salt_of(&sf1), salt_of(&sf2));
        assert!(salt_of(&sf1).ends_with(&format!(",i={DEFAULT_ITERATIONS}")));
        // The client can compute a well-formed final message...
        let mut client = ScramClient::new(Mechanism::ScramSha256, "nobody", "guess", None)
            .unwrap()
            .with_nonce("abc");
        client.client_first();
        let cf = client.handle_server_first(&sf2).unwrap();
        // ...and the failure comes at the end, same as a wrong password.
        let err = wait.finish(&cf).unwrap_err();
        assert_eq!(
            err,
            SaslFailure::not_authorized("invalid username or password")
        );
        let c = derive_creds_with_salt("secret", Hash::Sha256, 64, b"salt").unwrap();
        let wrong = exchange(
            Mechanism::ScramSha256,
            "guess",
            Some(&c),
            None,
            &CbInfo::none(),
        )
        .unwrap_err();
        assert_eq!(err, wrong);
    }

    #[test]
    fn unusable_server_nonce_never_authenticates() {
        let c = creds(Hash::Sha1, "QSXCR+Q6sek8bf92");
        let need = scram_start(
            Mechanism::ScramSha1,
            false,
            &CbInfo::none(),
            b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
        )
        .unwrap();
        let (wait, _) = need.server_first_with_nonce(Some(&c), "bad nonce");
        let err = wait
            .finish(b"c=biws,r=fyko+d2lbbFgONRv9qkxdawLbad nonce,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=");
        assert_eq!(err.unwrap_err().condition, "temporary-auth-failure");
    }

    #[test]
    fn channel_binding_mismatch() {
        let c = derive_creds_with_salt("secret", Hash::Sha256, 64, b"salt").unwrap();
        // A MITM terminates TLS: the client sees different exporter data.
        let err = exchange(
            Mechanism::ScramSha256Plus,
            "secret",
            Some(&c),
            Some(ChannelBinding::TlsExporter(vec![0xAA; 32])),
            &tls(),
        )
        .unwrap_err();
        assert_eq!(err, SaslFailure::not_authorized("channel binding mismatch"));
        // Type not available on this connection.
        let only_sep = CbInfo {
            exporter: None,
            server_end_point: Some(vec![1; 32]),
        };
        let err = scram_start(
            Mechanism::ScramSha256Plus,
            true,
            &only_sep,
            b"p=tls-exporter,,n=u,r=x",
        )
        .unwrap_err();
        assert_eq!(err.condition, "not-authorized");
        let err = scram_start(
            Mechanism::ScramSha256Plus,
            true,
            &tls(),
            b"p=tls-unique,,n=u,r=x",
        )
        .unwrap_err();
        assert_eq!(
            err.text.as_deref(),
            Some("unsupported channel binding type")
        );
        // -PLUS outside TLS.
        let err = scram_start(
            Mechanism::ScramSha256Plus,
            false,
            &CbInfo::none(),
            b"p=tls-exporter,,n=u,r=x",
        )
        .unwrap_err();
        assert_eq!(err.condition, "invalid-mechanism");
        // c= for "n,," when the client said p=.
        let need = scram_start(
            Mechanism::ScramSha256Plus,
            true,
            &tls(),
            b"p=tls-exporter,,n=u,r=x",
        )
        .unwrap();
        let (wait, _) = need.server_first_with_nonce(Some(&c), "y");
        let err = wait.finish(b"c=biws,r=xy,p=AAAA").unwrap_err();
        assert_eq!(err, SaslFailure::not_authorized("channel binding mismatch"));
    }

    #[test]
    fn downgrade_and_flag_rules() {
        let c = derive_creds_with_salt("secret", Hash::Sha256, 64, b"salt").unwrap();
        // Client supports CB ('y') but did not see -PLUS, which we offered.
        let exp = ChannelBinding::TlsExporter(vec![0xEE; 32]);
        let err = exchange(
            Mechanism::ScramSha256,
            "secret",
            Some(&c),
            Some(exp.clone()),
            &tls(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            SaslFailure::not_authorized("channel binding downgrade detected")
        );
        // 'y' is fine when we did not offer -PLUS.
        let need = scram_start(Mechanism::ScramSha256, false, &tls(), b"y,,n=u,r=x").unwrap();
        let (wait, _) = need.server_first_with_nonce(Some(&c), "s");
        // ...but c= must then be "y,," too.
        assert_eq!(
            wait.finish(b"c=biws,r=xs,p=AAAA").unwrap_err(),
            SaslFailure::not_authorized("channel binding mismatch")
        );
        // p= with a non-PLUS mechanism, n/y with a PLUS one.
        for (m, msg) in [
            (Mechanism::ScramSha256, &b"p=tls-exporter,,n=u,r=x"[..]),
            (Mechanism::ScramSha256Plus, b"n,,n=u,r=x"),
            (Mechanism::ScramSha256Plus, b"y,,n=u,r=x"),
        ] {
            let err = scram_start(m, true, &tls(), msg).unwrap_err();
            assert_eq!(
                err.condition,
                "malformed-request",
                "{m} {:?}",
                std::str::from_utf8(msg)
            );
        }
    }

    #[test]
    fn usernames_and_authzid() {
        let need = scram_start(
            Mechanism::ScramSha1,
            false,
            &CbInfo::none(),
            b"n,a=juliet@capulet.lit,n=Ju=3Dl=2Ciet,r=x",
        );
        // The unescaped name is prepared (',' and '=' are valid in a localpart).
        let need = need.unwrap();
        assert_eq!(need.username(), "ju=l,iet");
        assert_eq!(need.authzid(), Some("juliet@capulet.lit"));
        let need = scram_start(
            Mechanism::ScramSha1,
            false,
            &CbInfo::none(),
            b"n,a=x=2Cy,n=u,r=x",
        )
        .unwrap();
        assert_eq!(need.authzid(), Some("x,y"));
        for bad in [
            &b"n,,n=a=2,r=x"[..],
            b"n,,n=a=41,r=x",
            b"n,,n=,r=x",
            b"n,a=,n=u,r=x",
            b"n,b=x,n=u,r=x",
        ] {
            assert_eq!(
                scram_start(Mechanism::ScramSha1, false, &CbInfo::none(), bad)
                    .unwrap_err()
                    .condition,
                "malformed-request",
                "{:?}",
                std::str::from_utf8(bad)
            );
        }
        // Not a valid localpart: rejected, without revealing anything.
        for bad in [&b"n,,n=juliet@capulet.lit,r=x"[..], b"n,,n=a b,r=x"] {
            assert_eq!(
                scram_start(Mechanism::ScramSha1, false, &CbInfo::none(), bad)
                    .unwrap_err()
                    .condition,
                "not-authorized"
            );
        }
    }

    #[test]
    fn nonce_and_extension_rules() {
        let s = |m: &[u8]| scram_start(Mechanism::ScramSha1, false, &CbInfo::none(), m).map(|_| ());
        assert!(s(b"n,,n=u,r=x,e=ignored").is_ok());
        assert!(s(b"n,,m=ext,n=u,r=x").is_err());
        assert!(s(b"n,,n=u,r=x,m=ext").is_err());
        assert!(s(b"n,,n=u,r=").is_err());
        assert!(s(b"n,,n=u,r=a b").is_err());
        assert!(s("n,,n=u,r=é".as_bytes()).is_err());
        assert!(s(b"n,,n=u").is_err());
        assert!(s(b"n,,r=x,n=u").is_err());
        assert!(s(b"n,,n=u,r=x,").is_err());

        let c = derive_creds_with_salt("pencil", Hash::Sha1, 64, b"salt").unwrap();
        let wait = || {
            scram_start(
                Mechanism::ScramSha1,
                false,
                &CbInfo::none(),
                b"n,,n=user,r=abc",
            )
            .unwrap()
            .server_first_with_nonce(Some(&c), "def")
            .0
        };
        let f = |m: &str| wait().finish(m.as_bytes()).unwrap_err();
        assert_eq!(
            f("c=biws,r=abc,p=AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
                .text
                .as_deref(),
            Some("nonce mismatch")
        );
        assert_eq!(
            f("c=biws,r=abcdefg,p=AAAAAAAAAAAAAAAAAAAAAAAAAAA=").condition,
            "not-authorized"
        );
        assert_eq!(
            f("c=biws,r=abcdef,p=AAAAAAAAAAAAAAAAAAAAAAAAAAA=").condition,
            "not-authorized"
        );
        assert_eq!(
            f("c=biws,r=abcdef,p=AAAA").text.as_deref(),
            Some("proof has the wrong length")
        );
        assert_eq!(
            f("c=biws,r=abcdef,m=x,p=AAAA").condition,
            "malformed-request"
        );
        assert_eq!(
            f("c=biws,r=abcdef,p=!!!!").text.as_deref(),
            Some("invalid base64")
        );
        assert_eq!(
            f("c=b!ws,r=abcdef,p=AAAA").text.as_deref(),
            Some("invalid base64")
        );
        assert_eq!(f("r=abcdef,c=biws,p=AAAA").condition, "malformed-request");
        assert_eq!(f("c=biws,r=abcdef").condition, "malformed-request");
        assert_eq!(f("").condition, "malformed-request");
    }

    /// Pseudo-random and truncated input never panics any phase.
    #[test]
    fn malformed_input_never_panics() {
        let good_first = b"p=tls-exporter,a=a=3Db,n=user,r=fyko+d2lbbFgONRv9qkxdawL";
        let good_final = b"c=cD10bHMtZXhwb3J0ZXIsLO7u,r=fyko+d2lbbFgONRv9qkxdawLxyz,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=";
        let c = derive_creds_with_salt("pencil", Hash::Sha1, 1, b"salt").unwrap();
        let cb = tls();
        let mut inputs: Vec<Vec<u8>> =
            vec![vec![], vec![0xff; 3], vec![b','; 100], vec![b'a'; 100_000]];
        for n in 0..=good_first.len() {
            inputs.push(good_first[..n].to_vec());
        }
        for n in 0..=good_final.len() {
            inputs.push(good_final[..n].to_vec());
        }
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let alphabet = b"=,abnpyrcmv2C3D \x00\xc3\xa9-+/";
        for _ in 0..3000 {
            let mut v = good_first.to_vec();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x % v.len() as u64) as usize;
                v[i] = alphabet[(x >> 32) as usize % alphabet.len()];
            }
            inputs.push(v);
        }
        for input in &inputs {
            for mech in [
                Mechanism::ScramSha1,
                Mechanism::ScramSha1Plus,
                Mechanism::Plain,
            ] {
                if let Ok(need) = scram_start(mech, true, &cb, input) {
                    let (wait, _) = need.server_first_with_nonce(Some(&c), "xyz");
                    let _ = wait.finish(input);
                }
            }
            if let Ok(need) = scram_start(Mechanism::ScramSha1Plus, true, &cb, good_first) {
                let (wait, _) = need.server_first_with_nonce(Some(&c), "xyz");
                let _ = wait.finish(input);
            }
        }
        assert!(
            scram_start(Mechanism::ScramSha1, false, &cb, &vec![b'a'; 100_000])
                .unwrap_err()
                .text
                .unwrap()
                .contains("too long")
        );
    }
}
