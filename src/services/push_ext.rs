//! Tigase's push extensions that iOS clients (Siskin, Monal) enable on top of XEP-0357, as
//! Prosody's mod_cloud_notify_encrypted and mod_cloud_notify_priority_tag implement them:
//!
//! - `tigase:push:encrypt:0` with `aes-128-gcm`: the client sends a 16-byte key in its
//!   `<enable/>`; each notification then carries, instead of the summary form, an
//!   `<encrypted iv='…'>` JSON payload (unread count, sender, message text up to 255
//!   characters, type) that only the device can read, so the app can show the message while
//!   the push service (Apple's, the app server) sees nothing. The GCM tag is appended to the
//!   ciphertext (Prosody appends zeros instead, because its crypto library cannot produce
//!   the tag; clients that check it need the real one).
//! - `tigase:push:priority:0`: the notification carries `<priority>high</priority>` for a
//!   message worth a user-visible alert (every notification kith sends is one: see
//!   `push::worth_notifying`), so the app server asks Apple for an immediate wake-up.
//!
//! Pure: parsing the enable request, building the payload, encrypting (the IV comes in).

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};

use crate::jid::Jid;
use crate::stanza::{ns, Condition, StanzaError};
use crate::xml::Element;

pub const NS_ENCRYPT: &str = "tigase:push:encrypt:0";
pub const NS_AES_128_GCM: &str = "tigase:push:encrypt:aes-128-gcm";
pub const NS_PRIORITY: &str = "tigase:push:priority:0";
const NS_JMI: &str = "urn:xmpp:jingle-message:0";

/// Account disco#info features (advertised because implemented here).
pub const FEATURES: &[&str] = &[NS_ENCRYPT, NS_AES_128_GCM, NS_PRIORITY];

/// Longest message text put in an encrypted payload, in characters (as Prosody).
const MAX_BODY_CHARS: usize = 255;

/// What a registration asked for beyond XEP-0357.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extensions {
    /// The AES-128-GCM key for encrypted payloads.
    pub key: Option<[u8; 16]>,
    pub priority: bool,
}

/// The extensions requested in an `<enable/>` element. An unknown algorithm is
/// `feature-not-implemented`, a key that is not 16 bytes of base64 `bad-request`.
pub fn parse_enable(enable: &Element) -> Result<Extensions, StanzaError> {
    let mut ext = Extensions {
        priority: enable.has_child("priority", NS_PRIORITY),
        ..Extensions::default()
    };
    if let Some(encrypt) = enable.get_child("encrypt", NS_ENCRYPT) {
        if encrypt.attr("alg") != Some("aes-128-gcm") {
            return Err(StanzaError::new(Condition::FeatureNotImplemented)
                .with_text("unknown encryption algorithm"));
        }
        let key = base64::engine::general_purpose::STANDARD
            .decode(encrypt.text().trim())
            .ok()
            .and_then(|k| <[u8; 16]>::try_from(k.as_slice()).ok())
            .ok_or_else(|| {
                StanzaError::new(Condition::BadRequest).with_text("invalid encryption key")
            })?;
        ext.key = Some(key);
    }
    Ok(ext)
}

/// The extensions as child elements of a stored registration (the same elements a client
/// sends, so loading is [`parse_enable`]).
pub fn to_elements(ext: &Extensions) -> Vec<Element> {
    let mut out = Vec::new();
    if let Some(key) = &ext.key {
        out.push(
            Element::new("encrypt", NS_ENCRYPT)
                .with_attr("alg", "aes-128-gcm")
                .with_text(base64::engine::general_purpose::STANDARD.encode(key)),
        );
    }
    if ext.priority {
        out.push(Element::new("priority", NS_PRIORITY));
    }
    out
}

/// The JSON the device decrypts: `unread`, `sender` (bare), `message` (text, cut to 255
/// characters), `type` (`chat`, `groupchat` with `nickname`, `call` with `sid`).
pub fn payload_json(stanza: &Element, unread: usize) -> String {
    let from = stanza.attr("from").and_then(|f| Jid::parse(f).ok());
    let mut fields = vec![format!("\"unread\":{unread}")];
    if let Some(f) = &from {
        fields.push(format!(
            "\"sender\":{}",
            crate::json::string(f.to_bare().as_ref())
        ));
    }
    if let Some(body) = stanza.get_child("body", ns::CLIENT).map(|b| b.text()) {
        let cut: String = body.chars().take(MAX_BODY_CHARS).collect();
        fields.push(format!("\"message\":{}", crate::json::string(&cut)));
    }
    match stanza.attr("type") {
        Some("groupchat") => {
            fields.push("\"type\":\"groupchat\"".into());
            if let Some(nick) = from.as_ref().and_then(|f| f.resource()) {
                fields.push(format!("\"nickname\":{}", crate::json::string(nick)));
            }
        }
        Some("error") => {}
        _ => match stanza.get_child("propose", NS_JMI) {
            Some(p) => {
                fields.push("\"type\":\"call\"".into());
                if let Some(id) = p.attr("id") {
                    fields.push(format!("\"sid\":{}", crate::json::string(id)));
                }
            }
            None => fields.push("\"type\":\"chat\"".into()),
        },
    }
    format!("{{{}}}", fields.join(","))
}

/// AES-128-GCM of `plaintext` under `key` and `iv`: ciphertext followed by the 16-byte tag.
pub fn seal(key: &[u8; 16], iv: [u8; 12], plaintext: &[u8]) -> Vec<u8> {
    let mut out = plaintext.to_vec();
    // A 16-byte key is always a valid AES-128 key; the match keeps the panic-free rule.
    let Ok(unbound) = UnboundKey::new(&AES_128_GCM, key) else {
        return Vec::new();
    };
    let key = LessSafeKey::new(unbound);
    match key.seal_in_place_append_tag(Nonce::assume_unique_for_key(iv), Aad::empty(), &mut out) {
        Ok(()) => out,
        Err(_) => Vec::new(),
    }
}

/// `<encrypted xmlns='tigase:push:encrypt:0' iv='B64'>B64(ciphertext+tag)</encrypted>`.
pub fn encrypted_element(key: &[u8; 16], iv: [u8; 12], json: &str) -> Element {
    let b64 = base64::engine::general_purpose::STANDARD;
    Element::new("encrypted", NS_ENCRYPT)
        .with_attr("iv", b64.encode(iv))
        .with_text(b64.encode(seal(key, iv, json.as_bytes())))
}

pub fn priority_element() -> Element {
    Element::new("priority", NS_PRIORITY).with_text("high")
}

/// A fresh IV: 12 random bytes (`None` when the system has no randomness, which then sends
/// no encrypted notification rather than a reused nonce).
pub fn random_iv() -> Option<[u8; 12]> {
    use ring::rand::SecureRandom;
    let mut iv = [0u8; 12];
    ring::rand::SystemRandom::new().fill(&mut iv).ok()?;
    Some(iv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(x: &str) -> Element {
        Element::parse(x).unwrap()
    }

    #[test]
    fn enable_parses_key_and_priority() {
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        let e = el(&format!(
            "<enable xmlns='urn:xmpp:push:0' jid='p.example' node='n'>\
             <encrypt xmlns='tigase:push:encrypt:0' alg='aes-128-gcm'>{key}</encrypt>\
             <priority xmlns='tigase:push:priority:0'/></enable>"
        ));
        let ext = parse_enable(&e).unwrap();
        assert_eq!(ext.key, Some([7u8; 16]));
        assert!(ext.priority);
        // Stored and loaded back.
        let mut stored = Element::new("enable", ns::PUSH);
        for c in to_elements(&ext) {
            stored.push_child(c);
        }
        assert_eq!(parse_enable(&stored).unwrap(), ext);

        let wrong_alg = el("<enable xmlns='urn:xmpp:push:0'><encrypt xmlns='tigase:push:encrypt:0' alg='aes-256-cbc'>AAAA</encrypt></enable>");
        assert_eq!(
            parse_enable(&wrong_alg).unwrap_err().condition,
            Condition::FeatureNotImplemented
        );
        let short = el("<enable xmlns='urn:xmpp:push:0'><encrypt xmlns='tigase:push:encrypt:0' alg='aes-128-gcm'>AAAA</encrypt></enable>");
        assert_eq!(
            parse_enable(&short).unwrap_err().condition,
            Condition::BadRequest
        );
        assert_eq!(
            parse_enable(&el("<enable xmlns='urn:xmpp:push:0'/>")).unwrap(),
            Extensions::default()
        );
    }

    #[test]
    fn payload_names_sender_type_and_a_cut_body() {
        let m = el("<message xmlns='jabber:client' from='bob@x/pc' type='chat'><body>hi \"you\"</body></message>");
        assert_eq!(
            payload_json(&m, 2),
            r#"{"unread":2,"sender":"bob@x","message":"hi \"you\"","type":"chat"}"#
        );
        let long = "é".repeat(300);
        let m = el(&format!(
            "<message xmlns='jabber:client' from='room@muc.x/Nick' type='groupchat'><body>{long}</body></message>"
        ));
        let json = payload_json(&m, 1);
        assert!(
            json.contains(&format!("\"message\":\"{}\"", "é".repeat(255))),
            "{json}"
        );
        assert!(
            json.contains("\"type\":\"groupchat\",\"nickname\":\"Nick\""),
            "{json}"
        );
        let call = el("<message xmlns='jabber:client' from='bob@x/pc'><propose xmlns='urn:xmpp:jingle-message:0' id='c1'/></message>");
        assert!(payload_json(&call, 1).ends_with(r#""type":"call","sid":"c1"}"#));
    }

    /// NIST GCM test case 2 (AES-128, zero key, zero IV, one zero block): the tag is real.
    #[test]
    fn seal_is_aes_128_gcm_with_the_tag_appended() {
        let out = seal(&[0u8; 16], [0u8; 12], &[0u8; 16]);
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "0388dace60b6a392f328c2b971b2fe78ab6e47d42cec13bdf53a67b21257bddf"
        );
        let e = encrypted_element(&[1u8; 16], [2u8; 12], "{}");
        assert_eq!(e.attr("iv"), Some("AgICAgICAgICAgIC"));
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(e.text())
                .unwrap()
                .len(),
            2 + 16
        );
    }
}
