//! Stored SCRAM credentials (RFC 5802 §3): deriving them from a password,
//! checking a password against them (for PLAIN), and their versioned binary
//! encoding for the store. Also the SCRAM key-derivation primitives shared by
//! the server and the client.
//!
//! Must not know: where credentials are stored, or accounts.
//!
//! Derivation costs one PBKDF2 run per hash; at [`DEFAULT_ITERATIONS`] that
//! is milliseconds of CPU, so callers run it off the executor.

use std::fmt;
use std::num::NonZeroU32;

use precis_core::profile::PrecisFastInvocation;
use precis_profiles::OpaqueString;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac, pbkdf2};

use super::{ct_eq, Hash};

/// Iterations for newly derived credentials. RFC 7677 §4 asks for at least
/// 4096; 10 000 keeps a login under a few milliseconds on small hardware.
pub const DEFAULT_ITERATIONS: u32 = 10_000;

/// Longest password accepted, in bytes (before preparation).
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Length of a freshly generated salt.
const SALT_LEN: usize = 16;

/// Longest salt accepted (derivation with a given salt, decoding).
pub const MAX_SALT_LEN: usize = 1024;

/// Version byte of [`ScramCreds::to_bytes`].
const ENCODING_V1: u8 = 1;

/// What a server stores for one user and one hash: enough to verify a SCRAM
/// proof and to prove itself, not enough to log in as the user directly.
/// `Debug` shows neither key.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCreds {
    pub hash: Hash,
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

/// A password that cannot be used. The text never contains the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordError {
    Empty,
    TooLong,
    /// Rejected by the PRECIS OpaqueString profile (e.g. control characters).
    NotAllowed,
    ZeroIterations,
    /// A given salt is empty or longer than [`MAX_SALT_LEN`].
    BadSalt,
    /// The system RNG failed (salt generation).
    Rng,
}

impl fmt::Display for PasswordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PasswordError::Empty => "the password is empty",
            PasswordError::TooLong => "the password is longer than 1024 bytes",
            PasswordError::NotAllowed => {
                "the password contains characters that are not allowed (control characters or unassigned code points)"
            }
            PasswordError::ZeroIterations => "the iteration count must be at least 1",
            PasswordError::BadSalt => "the salt must be 1 to 1024 bytes long",
            PasswordError::Rng => "the system random number generator failed",
        })
    }
}

impl std::error::Error for PasswordError {}

/// Stored credentials that could not be decoded (corrupt or from a newer
/// version of kith).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredsDecodeError(pub &'static str);

impl fmt::Display for CredsDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid stored SCRAM credentials: {}", self.0)
    }
}

impl std::error::Error for CredsDecodeError {}

/// Derives credentials for `hash` with a fresh random 16-byte salt. The
/// password is prepared with PRECIS OpaqueString (see the module docs of
/// [`crate::sasl`] on SASLprep).
pub fn derive_creds(
    password: &str,
    hash: Hash,
    iterations: u32,
) -> Result<ScramCreds, PasswordError> {
    let mut salt = vec![0; SALT_LEN];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| PasswordError::Rng)?;
    derive_creds_with_salt(password, hash, iterations, &salt)
}

/// Derives credentials with a given salt (test vectors, imports).
pub fn derive_creds_with_salt(
    password: &str,
    hash: Hash,
    iterations: u32,
    salt: &[u8],
) -> Result<ScramCreds, PasswordError> {
    let iters = NonZeroU32::new(iterations).ok_or(PasswordError::ZeroIterations)?;
    if salt.is_empty() || salt.len() > MAX_SALT_LEN {
        return Err(PasswordError::BadSalt);
    }
    let prepared = prepare_password(password)?;
    let salted = salted_password(hash, prepared.as_bytes(), salt, iters);
    let (_, stored_key, server_key) = keys_from_salted(hash, &salted);
    Ok(ScramCreds {
        hash,
        iterations,
        salt: salt.to_vec(),
        stored_key,
        server_key,
    })
}

/// Credentials for SHA-1, SHA-256 and SHA-512 (in that order, each with its
/// own salt) at [`DEFAULT_ITERATIONS`].
pub fn derive_all(password: &str) -> Result<[ScramCreds; 3], PasswordError> {
    Ok([
        derive_creds(password, Hash::Sha1, DEFAULT_ITERATIONS)?,
        derive_creds(password, Hash::Sha256, DEFAULT_ITERATIONS)?,
        derive_creds(password, Hash::Sha512, DEFAULT_ITERATIONS)?,
    ])
}

/// Whether `password` can be used (not empty, not too long, allowed by OpaqueString), without
/// the cost of deriving anything: bulk imports check every line before the first derivation.
pub fn check_password(password: &str) -> Result<(), PasswordError> {
    prepare_password(password).map(|_| ())
}

/// Checks a cleartext password (from PLAIN) against stored credentials:
/// recomputes StoredKey and compares in constant time. Costs one PBKDF2 run.
pub fn verify_password(password: &str, creds: &ScramCreds) -> bool {
    let Some(iters) = NonZeroU32::new(creds.iterations) else {
        return false;
    };
    let Ok(prepared) = prepare_password(password) else {
        return false;
    };
    let salted = salted_password(creds.hash, prepared.as_bytes(), &creds.salt, iters);
    let (_, stored_key, _) = keys_from_salted(creds.hash, &salted);
    ct_eq(&stored_key, &creds.stored_key)
}

/// Encodes a user's credentials for all hashes (the output of
/// [`derive_all`]) as one blob: `[1][count: u8]` then, per entry,
/// `[length: u16 BE][ScramCreds::to_bytes]`.
pub fn encode_creds(creds: &[ScramCreds]) -> Vec<u8> {
    let mut out = vec![ENCODING_V1, creds.len().min(255) as u8];
    for c in creds.iter().take(255) {
        let b = c.to_bytes();
        out.extend_from_slice(&(b.len() as u16).to_be_bytes());
        out.extend_from_slice(&b);
    }
    out
}

/// Decodes [`encode_creds`] output; any other input is an error, never a
/// panic.
pub fn decode_creds(b: &[u8]) -> Result<Vec<ScramCreds>, CredsDecodeError> {
    let (&version, rest) = b.split_first().ok_or(CredsDecodeError("empty"))?;
    if version != ENCODING_V1 {
        return Err(CredsDecodeError("unknown version"));
    }
    let (&count, mut rest) = rest.split_first().ok_or(CredsDecodeError("truncated"))?;
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let (len, r) = rest
            .split_first_chunk::<2>()
            .ok_or(CredsDecodeError("truncated"))?;
        let len = u16::from_be_bytes(*len) as usize;
        if r.len() < len {
            return Err(CredsDecodeError("truncated"));
        }
        let (entry, r) = r.split_at(len);
        out.push(ScramCreds::from_bytes(entry)?);
        rest = r;
    }
    if !rest.is_empty() {
        return Err(CredsDecodeError("trailing bytes"));
    }
    Ok(out)
}

impl ScramCreds {
    /// Versioned binary form:
    /// `[1][hash: 1=SHA-1 2=SHA-256 3=SHA-512][iterations: u32 BE]`
    /// `[salt length: u16 BE][salt][StoredKey][ServerKey]` (keys are the hash's
    /// output length).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.salt.len() + 2 * self.hash.output_len());
        out.push(ENCODING_V1);
        out.push(match self.hash {
            Hash::Sha1 => 1,
            Hash::Sha256 => 2,
            Hash::Sha512 => 3,
        });
        out.extend_from_slice(&self.iterations.to_be_bytes());
        // `MAX_SALT_LEN` fits in a u16; a longer hand-built salt is written
        // with a length that `from_bytes` rejects, never silently truncated.
        let salt_len = u16::try_from(self.salt.len()).unwrap_or(0);
        out.extend_from_slice(&salt_len.to_be_bytes());
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.stored_key);
        out.extend_from_slice(&self.server_key);
        out
    }

    /// Parses [`to_bytes`](Self::to_bytes) output; any other input is an
    /// error, never a panic.
    pub fn from_bytes(b: &[u8]) -> Result<Self, CredsDecodeError> {
        let (&version, rest) = b.split_first().ok_or(CredsDecodeError("empty"))?;
        if version != ENCODING_V1 {
            return Err(CredsDecodeError("unknown version"));
        }
        let (&h, rest) = rest.split_first().ok_or(CredsDecodeError("truncated"))?;
        let hash = match h {
            1 => Hash::Sha1,
            2 => Hash::Sha256,
            3 => Hash::Sha512,
            _ => return Err(CredsDecodeError("unknown hash")),
        };
        let (iters, rest) = rest
            .split_first_chunk::<4>()
            .ok_or(CredsDecodeError("truncated"))?;
        let iterations = u32::from_be_bytes(*iters);
        if iterations == 0 {
            return Err(CredsDecodeError("zero iterations"));
        }
        let (salt_len, rest) = rest
            .split_first_chunk::<2>()
            .ok_or(CredsDecodeError("truncated"))?;
        let salt_len = u16::from_be_bytes(*salt_len) as usize;
        let key_len = hash.output_len();
        if salt_len == 0 || salt_len > MAX_SALT_LEN {
            return Err(CredsDecodeError("bad salt length"));
        }
        if rest.len() != salt_len + 2 * key_len {
            return Err(CredsDecodeError("wrong length"));
        }
        let (salt, keys) = rest.split_at(salt_len);
        let (stored_key, server_key) = keys.split_at(key_len);
        Ok(ScramCreds {
            hash,
            iterations,
            salt: salt.to_vec(),
            stored_key: stored_key.to_vec(),
            server_key: server_key.to_vec(),
        })
    }

    /// Structural validity (key lengths match the hash, non-empty salt,
    /// non-zero iterations). Hand-built credentials that fail this never
    /// authenticate anyone.
    pub fn is_valid(&self) -> bool {
        self.iterations > 0
            && !self.salt.is_empty()
            && self.salt.len() <= MAX_SALT_LEN
            && self.stored_key.len() == self.hash.output_len()
            && self.server_key.len() == self.hash.output_len()
    }
}

impl fmt::Debug for ScramCreds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCreds")
            .field("hash", &self.hash)
            .field("iterations", &self.iterations)
            .field("salt_len", &self.salt.len())
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------
// SCRAM primitives (RFC 5802 §3), shared with the server and the client.

/// RFC 8265 §4.2 OpaqueString enforcement, with a length cap first so huge
/// input does no PRECIS work.
pub(crate) fn prepare_password(password: &str) -> Result<std::borrow::Cow<'_, str>, PasswordError> {
    if password.is_empty() {
        return Err(PasswordError::Empty);
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(PasswordError::TooLong);
    }
    OpaqueString::enforce(password).map_err(|_| PasswordError::NotAllowed)
}

fn hmac_alg(hash: Hash) -> hmac::Algorithm {
    match hash {
        Hash::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        Hash::Sha256 => hmac::HMAC_SHA256,
        Hash::Sha512 => hmac::HMAC_SHA512,
    }
}

/// HMAC(key, data).
pub(crate) fn hmac(hash: Hash, key: &[u8], data: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(hmac_alg(hash), key);
    hmac::sign(&key, data).as_ref().to_vec()
}

/// H(data).
pub(crate) fn h(hash: Hash, data: &[u8]) -> Vec<u8> {
    let alg = match hash {
        Hash::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
        Hash::Sha256 => &digest::SHA256,
        Hash::Sha512 => &digest::SHA512,
    };
    digest::digest(alg, data).as_ref().to_vec()
}

/// SaltedPassword := Hi(Normalize(password), salt, i), i.e. PBKDF2.
pub(crate) fn salted_password(
    hash: Hash,
    prepared: &[u8],
    salt: &[u8],
    iters: NonZeroU32,
) -> Vec<u8> {
    let alg = match hash {
        // 4x faster than ring's portable SHA-1; see pbkdf2_sha1.rs.
        Hash::Sha1 => return super::pbkdf2_sha1::derive(prepared, salt, iters.get()).to_vec(),
        Hash::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
        Hash::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
    };
    let mut out = vec![0; hash.output_len()];
    pbkdf2::derive(alg, iters, salt, prepared, &mut out);
    out
}

/// (ClientKey, StoredKey, ServerKey) from SaltedPassword.
pub(crate) fn keys_from_salted(hash: Hash, salted: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let client_key = hmac(hash, salted, b"Client Key");
    let stored_key = h(hash, &client_key);
    let server_key = hmac(hash, salted, b"Server Key");
    (client_key, stored_key, server_key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::{engine::general_purpose::STANDARD as B64, Engine};

    #[test]
    fn rfc5802_keys() {
        let salt = B64.decode("QSXCR+Q6sek8bf92").unwrap();
        let c = derive_creds_with_salt("pencil", Hash::Sha1, 4096, &salt).unwrap();
        assert!(c.is_valid());
        assert!(verify_password("pencil", &c));
        assert!(!verify_password("pencil ", &c));
        assert!(!verify_password("", &c));
    }

    #[test]
    fn derive_all_and_verify() {
        let all = derive_all("correct horse").unwrap();
        assert_eq!(all.iter().map(|c| c.hash).collect::<Vec<_>>(), Hash::ALL);
        for c in &all {
            assert!(c.is_valid());
            assert_eq!(c.salt.len(), SALT_LEN);
            assert_eq!(c.iterations, DEFAULT_ITERATIONS);
            assert!(verify_password("correct horse", c));
            assert!(!verify_password("Correct horse", c));
        }
        assert_ne!(all[0].salt, all[1].salt);
    }

    #[test]
    fn password_errors() {
        assert_eq!(derive_creds("", Hash::Sha256, 1), Err(PasswordError::Empty));
        assert_eq!(
            derive_creds("a\u{0}b", Hash::Sha256, 1),
            Err(PasswordError::NotAllowed)
        );
        assert_eq!(
            derive_creds(&"x".repeat(1025), Hash::Sha256, 1),
            Err(PasswordError::TooLong)
        );
        assert_eq!(
            derive_creds("x", Hash::Sha256, 0),
            Err(PasswordError::ZeroIterations)
        );
        assert_eq!(
            derive_creds_with_salt("x", Hash::Sha256, 1, &[]),
            Err(PasswordError::BadSalt)
        );
        let mut c = derive_creds("x", Hash::Sha256, 1).unwrap();
        c.salt = vec![0; 70_000];
        assert!(!c.is_valid());
        assert!(ScramCreds::from_bytes(&c.to_bytes()).is_err());
        // Non-ASCII spaces map to ASCII space (RFC 8265 §4.2.1), like SASLprep.
        let c = derive_creds("a\u{00a0}b", Hash::Sha256, 1).unwrap();
        assert!(verify_password("a b", &c));
    }

    #[test]
    fn debug_hides_keys() {
        let c = derive_creds("hunter2", Hash::Sha256, 1).unwrap();
        let d = format!("{c:?}");
        assert!(
            !d.contains("stored_key") && !d.contains("server_key"),
            "{d}"
        );
    }

    #[test]
    fn encoding_round_trip() {
        for h in Hash::ALL {
            let c = derive_creds("pw", h, 4096).unwrap();
            let b = c.to_bytes();
            assert_eq!(b.len(), 8 + 16 + 2 * h.output_len());
            assert_eq!(ScramCreds::from_bytes(&b), Ok(c));
        }
    }

    #[test]
    fn blob_round_trip_and_garbage() {
        let all = derive_all("pw").unwrap();
        let blob = encode_creds(&all);
        assert_eq!(decode_creds(&blob).unwrap(), all.to_vec());
        assert_eq!(decode_creds(&encode_creds(&[])).unwrap(), vec![]);
        for n in 0..blob.len() {
            assert!(decode_creds(&blob[..n]).is_err(), "truncated at {n}");
        }
        let mut long = blob.clone();
        long.push(0);
        assert_eq!(decode_creds(&long), Err(CredsDecodeError("trailing bytes")));
        let mut b = blob.clone();
        b[1] = 200;
        assert!(decode_creds(&b).is_err());
        let mut b = blob.clone();
        b[2] = 0xff;
        assert!(decode_creds(&b).is_err());
    }

    #[test]
    fn encoding_rejects_garbage() {
        let good = derive_creds("pw", Hash::Sha256, 4096).unwrap().to_bytes();
        for n in 0..good.len() {
            assert!(
                ScramCreds::from_bytes(&good[..n]).is_err(),
                "truncated at {n}"
            );
        }
        let mut long = good.clone();
        long.push(0);
        assert!(ScramCreds::from_bytes(&long).is_err());
        for (i, v, why) in [
            (0, 2, "unknown version"),
            (1, 9, "unknown hash"),
            (7, 0, "bad salt length"),
        ] {
            let mut b = good.clone();
            b[i] = v;
            assert_eq!(ScramCreds::from_bytes(&b), Err(CredsDecodeError(why)));
        }
        let mut b = good.clone();
        b[2..6].copy_from_slice(&[0; 4]);
        assert_eq!(
            ScramCreds::from_bytes(&b),
            Err(CredsDecodeError("zero iterations"))
        );
        // Hash byte changed to SHA-512: lengths no longer match.
        let mut b = good.clone();
        b[1] = 3;
        assert!(ScramCreds::from_bytes(&b).is_err());
        // Pseudo-random garbage.
        let mut x: u32 = 12345;
        for len in 0..300 {
            let g: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            let _ = ScramCreds::from_bytes(&g);
        }
    }
}
