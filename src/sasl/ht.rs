//! The HT-* token mechanisms (draft-schmaus-kitten-sasl-ht) that XEP-0484 FAST uses: one
//! round trip, the client proves it holds the token with an HMAC over the channel-binding
//! data, and the server answers with its own HMAC so the client knows it talked to us.
//!
//! Initial response: `authcid NUL HMAC-SHA-256(token, "Initiator" || cb-data)`;
//! server's additional data: `HMAC-SHA-256(token, "Responder" || cb-data)`. The token is the
//! string the server handed out, used as the HMAC key byte for byte.

use ring::hmac;

use crate::sasl::{CbInfo, SaslFailure};

/// The FAST mechanisms kith offers. `-UNIQ` (tls-unique) is left out: it doesn't exist on
/// TLS 1.3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ht {
    /// No channel binding (web clients, TLS terminated elsewhere).
    Sha256None,
    /// `tls-exporter` (RFC 9266).
    Sha256Expr,
    /// `tls-server-end-point` (RFC 5929).
    Sha256Endp,
}

impl Ht {
    pub const ALL: [Ht; 3] = [Ht::Sha256Expr, Ht::Sha256Endp, Ht::Sha256None];

    pub fn name(self) -> &'static str {
        match self {
            Ht::Sha256None => "HT-SHA-256-NONE",
            Ht::Sha256Expr => "HT-SHA-256-EXPR",
            Ht::Sha256Endp => "HT-SHA-256-ENDP",
        }
    }

    pub fn from_name(name: &str) -> Option<Ht> {
        Ht::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The channel-binding data this mechanism binds to on this connection; `None` when the
    /// connection can't offer it (then the mechanism isn't offered either).
    pub fn cb_data(self, cb: &CbInfo) -> Option<Vec<u8>> {
        match self {
            Ht::Sha256None => Some(Vec::new()),
            Ht::Sha256Expr => cb.exporter.clone(),
            Ht::Sha256Endp => cb.server_end_point.clone(),
        }
    }
}

/// The parts of an HT initial response.
#[derive(Debug, PartialEq, Eq)]
pub struct HtResponse {
    pub authcid: String,
    pub proof: Vec<u8>,
}

pub fn parse(initial: &[u8]) -> Result<HtResponse, SaslFailure> {
    let nul = initial
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| SaslFailure::new("malformed-request"))?;
    let authcid = std::str::from_utf8(&initial[..nul])
        .ok()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| SaslFailure::new("malformed-request"))?;
    let proof = initial[nul + 1..].to_vec();
    if proof.len() != 32 {
        return Err(SaslFailure::new("malformed-request"));
    }
    Ok(HtResponse {
        authcid: authcid.to_string(),
        proof,
    })
}

fn mac(token: &str, label: &[u8], cb: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(label);
    ctx.update(cb);
    ctx.sign().as_ref().to_vec()
}

/// What the client sends as proof (also used by test clients).
pub fn initiator(token: &str, cb: &[u8]) -> Vec<u8> {
    mac(token, b"Initiator", cb)
}

/// What the server answers in `<additional-data/>`.
pub fn responder(token: &str, cb: &[u8]) -> Vec<u8> {
    mac(token, b"Responder", cb)
}

/// Constant-time check of a client's proof for `token`.
pub fn verify(token: &str, cb: &[u8], proof: &[u8]) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes());
    let mut msg = b"Initiator".to_vec();
    msg.extend_from_slice(cb);
    hmac::verify(&key, &msg, proof).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrong_token_or_binding() {
        let token = "WXZzciBwYmFmdmZnZiBqdmd1IGp2eXFhcmZm";
        let cb = b"exporter-bytes";
        let proof = initiator(token, cb);
        assert!(verify(token, cb, &proof));
        assert!(!verify("another", cb, &proof));
        assert!(!verify(token, b"other-channel", &proof));
        assert_ne!(responder(token, cb), proof, "the two directions differ");
    }

    #[test]
    fn parse_checks_shape() {
        let mut msg = b"alice\0".to_vec();
        msg.extend_from_slice(&[7u8; 32]);
        assert_eq!(parse(&msg).map(|r| r.authcid), Ok("alice".to_string()));
        assert!(parse(b"alice").is_err());
        assert!(parse(b"\0aaaa").is_err());
        assert!(parse(b"alice\0short").is_err());
        let mut bad = vec![0xff, 0xfe, 0];
        bad.extend_from_slice(&[1u8; 32]);
        assert!(parse(&bad).is_err());
    }

    #[test]
    fn names() {
        for m in Ht::ALL {
            assert_eq!(Ht::from_name(m.name()), Some(m));
        }
        assert_eq!(Ht::from_name("HT-SHA-256-UNIQ"), None);
    }

    #[test]
    fn known_answer() {
        // HMAC-SHA-256(key="token", "Initiator") computed independently with openssl:
        // printf 'Initiator' | openssl dgst -sha256 -hmac token
        let expected = "d24d95482f0d6e035c56e787dac4ed832bdd84ee3ea242aaadd982270c330006";
        let got: String = initiator("token", b"")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(got, expected);
    }
}
