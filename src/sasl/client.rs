//! A small SCRAM client (RFC 5802 §5), for tests and the load generator.
//!
//! Must not know: XML or sockets. It is not hardened as a general-purpose
//! client library: it trusts the server's iteration count up to
//! [`MAX_ITERATIONS`] and expects the flow client-first, server-first,
//! client-final, server-final in that order.

use std::fmt;
use std::num::NonZeroU32;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};

use super::creds::{hmac, keys_from_salted, prepare_password, salted_password};
use super::{ct_eq, ChannelBinding, Hash, Mechanism};

/// The largest iteration count the client accepts from a server.
pub const MAX_ITERATIONS: u32 = 10_000_000;

/// What went wrong on the client side (server misbehaved, or misuse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError(pub String);

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SCRAM client: {}", self.0)
    }
}

impl std::error::Error for ClientError {}

fn err(s: &str) -> ClientError {
    ClientError(s.to_owned())
}

/// A SaltedPassword with the parameters it was computed for, so a load
/// generator logging in repeatedly skips PBKDF2. `Debug` hides the key.
#[derive(Clone, PartialEq, Eq)]
pub struct SaltedPassword {
    pub hash: Hash,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub key: Vec<u8>,
}

impl fmt::Debug for SaltedPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SaltedPassword({:?}, i={})", self.hash, self.iterations)
    }
}

/// One SCRAM login, client side. `Debug` hides the password.
pub struct ScramClient {
    mech: Mechanism,
    hash: Hash,
    /// The OpaqueString-prepared password.
    password: String,
    cb: Option<ChannelBinding>,
    gs2_header: String,
    username: String,
    nonce: String,
    client_first_bare: String,
    cached: Option<SaltedPassword>,
    expected_server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    /// `cb`: channel-binding data if the connection has it. With a -PLUS
    /// mechanism it is required (`p=`); with a plain SCRAM mechanism its
    /// presence makes the client send `y` ("I could bind but you did not
    /// offer it"), as RFC 5802 §6 prescribes.
    pub fn new(
        mech: Mechanism,
        username: &str,
        password: &str,
        cb: Option<ChannelBinding>,
    ) -> Result<Self, ClientError> {
        let hash = mech.hash().ok_or(err("not a SCRAM mechanism"))?;
        if mech.is_plus() && cb.is_none() {
            return Err(err("a -PLUS mechanism needs channel-binding data"));
        }
        let password = prepare_password(password)
            .map_err(|e| ClientError(e.to_string()))?
            .into_owned();
        let mut nonce = [0u8; 18];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| err("the system RNG failed"))?;
        let gs2_header = match (&cb, mech.is_plus()) {
            (Some(cb), true) => format!("p={},,", cb.name()),
            (Some(_), false) => "y,,".to_owned(),
            (None, _) => "n,,".to_owned(),
        };
        Ok(ScramClient {
            mech,
            hash,
            password,
            cb,
            gs2_header,
            username: escape_saslname(username),
            nonce: B64.encode(nonce),
            client_first_bare: String::new(),
            cached: None,
            expected_server_signature: None,
        })
    }

    /// Uses a fixed client nonce (RFC test vectors). Must be printable ASCII
    /// without ','.
    pub fn with_nonce(mut self, nonce: &str) -> Self {
        self.nonce = nonce.to_owned();
        self
    }

    /// Requests an authorization identity (sent as `a=` in the GS2 header).
    pub fn with_authzid(mut self, authzid: &str) -> Self {
        let flag = self.gs2_header.split(',').next().unwrap_or("n").to_owned();
        self.gs2_header = format!("{flag},a={},", escape_saslname(authzid));
        self
    }

    /// Reuses a SaltedPassword from an earlier login if the server sends the
    /// same hash, salt and iteration count.
    pub fn with_salted_password(mut self, salted: SaltedPassword) -> Self {
        self.cached = Some(salted);
        self
    }

    /// The SaltedPassword computed (or reused) by
    /// [`handle_server_first`](Self::handle_server_first), for the next login.
    pub fn salted_password(&self) -> Option<&SaltedPassword> {
        self.cached.as_ref()
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mech
    }

    /// client-first-message.
    pub fn client_first(&mut self) -> Vec<u8> {
        self.client_first_bare = format!("n={},r={}", self.username, self.nonce);
        format!("{}{}", self.gs2_header, self.client_first_bare).into_bytes()
    }

    /// Takes server-first-message, returns client-final-message.
    pub fn handle_server_first(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ClientError> {
        if self.client_first_bare.is_empty() {
            return Err(err("client_first was not called"));
        }
        let msg =
            std::str::from_utf8(server_first).map_err(|_| err("server-first is not UTF-8"))?;
        let mut attrs = msg.split(',');
        let first = attrs.next().unwrap_or_default();
        if first.starts_with("m=") {
            return Err(err("server requires an unsupported extension"));
        }
        let nonce = first
            .strip_prefix("r=")
            .ok_or(err("server-first has no nonce"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(err("server nonce does not extend the client nonce"));
        }
        let salt = attrs
            .next()
            .and_then(|a| a.strip_prefix("s="))
            .ok_or(err("server-first has no salt"))?;
        let salt = B64.decode(salt).map_err(|_| err("invalid salt"))?;
        let iterations: u32 = attrs
            .next()
            .and_then(|a| a.strip_prefix("i="))
            .and_then(|i| i.parse().ok())
            .ok_or(err("server-first has no valid iteration count"))?;
        let iters = NonZeroU32::new(iterations).ok_or(err("zero iterations"))?;
        if iterations > MAX_ITERATIONS {
            return Err(err("iteration count too high"));
        }

        let salted = match &self.cached {
            Some(c) if c.hash == self.hash && c.salt == salt && c.iterations == iterations => {
                c.key.clone()
            }
            _ => {
                let key = salted_password(self.hash, self.password.as_bytes(), &salt, iters);
                self.cached = Some(SaltedPassword {
                    hash: self.hash,
                    salt,
                    iterations,
                    key: key.clone(),
                });
                key
            }
        };
        let (client_key, stored_key, server_key) = keys_from_salted(self.hash, &salted);

        let mut cbind = self.gs2_header.as_bytes().to_vec();
        if self.mech.is_plus() {
            if let Some(cb) = &self.cb {
                cbind.extend_from_slice(cb.data());
            }
        }
        let without_proof = format!("c={},r={}", B64.encode(cbind), nonce);
        let auth_message = format!("{},{},{}", self.client_first_bare, msg, without_proof);
        let client_signature = hmac(self.hash, &stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(k, s)| k ^ s)
            .collect();
        self.expected_server_signature =
            Some(hmac(self.hash, &server_key, auth_message.as_bytes()));
        Ok(format!("{},p={}", without_proof, B64.encode(proof)).into_bytes())
    }

    /// Checks server-final-message (`v=…`); `e=…` becomes an error.
    pub fn verify_server_final(&mut self, server_final: &[u8]) -> Result<(), ClientError> {
        let expected = self
            .expected_server_signature
            .take()
            .ok_or(err("handle_server_first was not called"))?;
        let msg =
            std::str::from_utf8(server_final).map_err(|_| err("server-final is not UTF-8"))?;
        if let Some(e) = msg.strip_prefix("e=") {
            return Err(ClientError(format!("server error: {e}")));
        }
        let v = msg
            .split(',')
            .next()
            .and_then(|a| a.strip_prefix("v="))
            .ok_or(err("server-final has no verifier"))?;
        let v = B64
            .decode(v)
            .map_err(|_| err("invalid server signature encoding"))?;
        if !ct_eq(&v, &expected) {
            return Err(err(
                "server signature mismatch: the server does not know the password",
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramClient")
            .field("mech", &self.mech)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

fn escape_saslname(s: &str) -> String {
    s.replace('=', "=3D").replace(',', "=2C")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::{derive_creds_with_salt, scram_start, CbInfo};

    #[test]
    fn rejects_bad_server_messages() {
        let mut c = ScramClient::new(Mechanism::ScramSha1, "u", "p", None)
            .unwrap()
            .with_nonce("abc");
        assert!(c.handle_server_first(b"r=abcd,s=c2FsdA==,i=1").is_err()); // before client_first
        c.client_first();
        for bad in [
            &b""[..],
            b"r=abc,s=c2FsdA==,i=1",  // nonce not extended
            b"r=xyzd,s=c2FsdA==,i=1", // nonce not ours
            b"r=abcd,s=!!,i=1",       // bad salt
            b"r=abcd,s=c2FsdA==,i=0", // zero iterations
            b"r=abcd,s=c2FsdA==,i=99999999999",
            b"r=abcd,s=c2FsdA==,i=4294967295",
            b"m=x,r=abcd,s=c2FsdA==,i=1",
            b"r=abcd,i=1",
        ] {
            assert!(
                c.handle_server_first(bad).is_err(),
                "{:?}",
                std::str::from_utf8(bad)
            );
        }
        c.handle_server_first(b"r=abcd,s=c2FsdA==,i=1").unwrap();
        assert!(c.verify_server_final(b"e=other-error").is_err());
        assert!(c.verify_server_final(b"v=AAAA").is_err()); // already consumed
    }

    #[test]
    fn server_impersonation_is_detected() {
        let mut c = ScramClient::new(Mechanism::ScramSha256, "u", "p", None).unwrap();
        c.client_first();
        let nonce = format!("r={}x,s=c2FsdA==,i=1", c.nonce);
        c.handle_server_first(nonce.as_bytes()).unwrap();
        let err = c
            .verify_server_final(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
            .unwrap_err();
        assert!(err.0.contains("mismatch"));
    }

    #[test]
    fn salted_password_reuse_and_authzid() {
        let creds = derive_creds_with_salt("pw", Hash::Sha256, 4096, b"salt").unwrap();
        let mut cache = None;
        // The second login has the wrong password but a cached SaltedPassword,
        // so it succeeds only if the cache is used.
        for pw in ["pw", "not-the-pw"] {
            let mut c = ScramClient::new(Mechanism::ScramSha256, "u", pw, None)
                .unwrap()
                .with_authzid("u@example.com");
            if let Some(s) = cache.take() {
                c = c.with_salted_password(s);
            }
            let need = scram_start(
                Mechanism::ScramSha256,
                false,
                &CbInfo::none(),
                &c.client_first(),
            )
            .unwrap();
            assert_eq!(need.authzid(), Some("u@example.com"));
            let (wait, sf) = need.server_first(Some(&creds));
            let cf = c.handle_server_first(&sf).unwrap();
            let ok = wait.finish(&cf).unwrap();
            assert_eq!(ok.authzid.as_deref(), Some("u@example.com"));
            c.verify_server_final(&ok.server_final).unwrap();
            cache = c.salted_password().cloned();
        }
        assert_eq!(
            format!("{:?}", cache.unwrap()),
            "SaltedPassword(Sha256, i=4096)"
        );
    }

    #[test]
    fn construction_rules() {
        assert!(ScramClient::new(Mechanism::Plain, "u", "p", None).is_err());
        assert!(ScramClient::new(Mechanism::ScramSha1Plus, "u", "p", None).is_err());
        assert!(ScramClient::new(Mechanism::ScramSha1, "u", "", None).is_err());
        let c = ScramClient::new(Mechanism::ScramSha1, "u", "hunter2", None).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        let mut c = ScramClient::new(Mechanism::ScramSha1, "a,b=c", "p", None)
            .unwrap()
            .with_nonce("n");
        assert_eq!(c.client_first(), b"n,,n=a=2Cb=3Dc,r=n");
    }
}
