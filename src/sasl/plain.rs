//! SASL PLAIN (RFC 4616): parsing `[authzid] NUL authcid NUL passwd`.
//!
//! Must not know: accounts or whether TLS is up (the caller offers PLAIN
//! only over TLS). Checking the password against stored SCRAM credentials is
//! [`super::verify_password`].

use std::fmt;

use super::{SaslFailure, MAX_PASSWORD_LEN};
use crate::jid::prepare_localpart;

/// Longest authzid or authcid accepted: a full JID (3 * 1023 + 2 bytes).
const MAX_FIELD_LEN: usize = 3071;

/// A parsed PLAIN message. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainCreds {
    /// The requested authorization identity; the caller decides whether to
    /// accept it.
    pub authzid: Option<String>,
    /// The authentication identity, prepared as a JID localpart.
    pub authcid: String,
    /// The password as sent; [`super::verify_password`] prepares it.
    pub password: String,
}

/// Parses a PLAIN message (already base64-decoded).
pub fn plain_parse(msg: &[u8]) -> Result<PlainCreds, SaslFailure> {
    let mut parts = msg.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslFailure::malformed(
            "expected authzid NUL authcid NUL password",
        ));
    };
    if authzid.len() > MAX_FIELD_LEN || authcid.len() > MAX_FIELD_LEN {
        return Err(SaslFailure::malformed("name too long"));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(SaslFailure::malformed("password too long"));
    }
    let text = |b: &[u8]| {
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| SaslFailure::malformed("not UTF-8"))
    };
    let authzid = match text(authzid)? {
        a if a.is_empty() => None,
        a => Some(a),
    };
    let authcid = text(authcid)?;
    let password = text(password)?;
    if authcid.is_empty() || password.is_empty() {
        return Err(SaslFailure::malformed("empty authcid or password"));
    }
    let authcid = prepare_localpart(&authcid)
        .map_err(|_| SaslFailure::not_authorized("invalid username"))?
        .into_owned();
    Ok(PlainCreds {
        authzid,
        authcid,
        password,
    })
}

impl fmt::Debug for PlainCreds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlainCreds")
            .field("authzid", &self.authzid)
            .field("authcid", &self.authcid)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::{derive_creds, verify_password, Hash};

    #[test]
    fn parse_and_verify() {
        let p = plain_parse(b"\0Juliet\0s3cr3t pw").unwrap();
        assert_eq!(p.authzid, None);
        assert_eq!(p.authcid, "juliet");
        assert_eq!(p.password, "s3cr3t pw");
        let creds = derive_creds("s3cr3t pw", Hash::Sha256, 16).unwrap();
        assert!(verify_password(&p.password, &creds));
        assert!(!verify_password("s3cr3t  pw", &creds));

        let p = plain_parse("juliet@capulet.lit\0juliet\0pässword".as_bytes()).unwrap();
        assert_eq!(p.authzid.as_deref(), Some("juliet@capulet.lit"));
        let creds = derive_creds("pässword", Hash::Sha1, 16).unwrap();
        assert!(verify_password(&p.password, &creds));
        // NFC: decomposed input verifies against the composed password.
        assert!(verify_password("pa\u{0308}ssword", &creds));
    }

    #[test]
    fn malformed() {
        for bad in [
            &b""[..],
            b"juliet",
            b"\0juliet",
            b"\0juliet\0",
            b"\0\0pw",
            b"\0a\0b\0c",
            b"\0\xff\0pw",
            b"\0a\0\xff",
        ] {
            assert_eq!(
                plain_parse(bad).unwrap_err().condition,
                "malformed-request",
                "{bad:?}"
            );
        }
        assert_eq!(
            plain_parse(b"\0a b\0pw").unwrap_err().condition,
            "not-authorized"
        );
        let huge = [&b"\0u\0"[..], &vec![b'x'; 100_000]].concat();
        assert_eq!(
            plain_parse(&huge).unwrap_err().condition,
            "malformed-request"
        );
    }

    #[test]
    fn password_never_in_debug_or_errors() {
        let p = plain_parse(b"\0juliet\0hunter2").unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
        let e = plain_parse(b"\0a b\0hunter2").unwrap_err();
        assert!(!format!("{e:?}{e}").contains("hunter2"));
    }
}
