//! XEP-0388 SASL2 as the stream layer sees it: the `<authentication/>` feature with what can
//! be done inline (XEP-0386 Bind 2, XEP-0484 FAST, XEP-0198 resumption), and the parts of a
//! client's `<authenticate/>`. Pure: `c2s` runs the exchange.

use base64::Engine as _;

use crate::sasl::ht::Ht;
use crate::sasl::Mechanism;
use crate::stanza::ns;
use crate::xml::Element;

/// The `<authentication xmlns='urn:xmpp:sasl:2'/>` stream feature; Bind 2 offers carbons
/// inline only when they are on (`[modules] carbons`).
pub fn feature(password_mechs: &[Mechanism], fast: &[Ht], carbons: bool) -> Element {
    let mut auth = Element::new("authentication", ns::SASL2);
    for m in password_mechs {
        auth.push_child(Element::new("mechanism", ns::SASL2).with_text(m.name()));
    }
    let mut bind_inline = Element::new("inline", ns::BIND2);
    for f in [ns::CARBONS, ns::CSI, ns::SM] {
        if f == ns::CARBONS && !carbons {
            continue;
        }
        bind_inline.push_child(Element::new("feature", ns::BIND2).with_attr("var", f));
    }
    let mut inline = Element::new("inline", ns::SASL2)
        .with_child(Element::new("bind", ns::BIND2).with_child(bind_inline))
        .with_child(Element::new("sm", ns::SM));
    if !fast.is_empty() {
        let mut f = Element::new("fast", ns::FAST);
        for m in fast {
            f.push_child(Element::new("mechanism", ns::FAST).with_text(m.name()));
        }
        inline.push_child(f);
    }
    auth.push_child(inline);
    auth
}

/// What a client asked for in `<authenticate/>` besides the mechanism.
#[derive(Debug, Default)]
pub struct Request {
    /// The decoded initial response; `Some(empty)` when absent (a challenge asks for it),
    /// `None` when it isn't valid base64.
    pub initial: Option<Vec<u8>>,
    /// `<user-agent id='…'/>`: identifies the client across connections (FAST, Bind 2).
    pub user_agent: Option<String>,
    /// `<bind xmlns='urn:xmpp:bind:0'/>`.
    pub bind: Option<Element>,
    /// `<resume xmlns='urn:xmpp:sm:3'/>`.
    pub resume: Option<Element>,
    /// `<request-token xmlns='urn:xmpp:fast:0' mechanism='…'/>`.
    pub request_token: Option<Ht>,
    /// `<fast invalidate='true'/>`: the client is logging out of this token.
    pub fast_invalidate: bool,
}

impl Request {
    pub fn parse(el: &Element) -> Request {
        let initial = match el.get_child("initial-response", ns::SASL2) {
            None => Some(Vec::new()),
            Some(r) => {
                let text = r.text();
                let text = text.trim();
                if text.is_empty() || text == "=" {
                    Some(Vec::new())
                } else {
                    base64::engine::general_purpose::STANDARD.decode(text).ok()
                }
            }
        };
        let user_agent = el
            .get_child("user-agent", ns::SASL2)
            .and_then(|u| u.attr("id"))
            .filter(|id| !id.is_empty() && id.len() <= 256)
            .map(str::to_string);
        Request {
            initial,
            user_agent,
            bind: el.get_child("bind", ns::BIND2).cloned(),
            resume: el.get_child("resume", ns::SM).cloned(),
            request_token: el
                .get_child("request-token", ns::FAST)
                .and_then(|t| t.attr("mechanism"))
                .and_then(Ht::from_name),
            fast_invalidate: el
                .get_child("fast", ns::FAST)
                .is_some_and(|f| matches!(f.attr("invalidate"), Some("true" | "1"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_lists_mechanisms_and_inline_features() {
        let f = feature(&[Mechanism::ScramSha256], &[Ht::Sha256None], true);
        let s = f.to_string();
        assert!(s.contains("<mechanism>SCRAM-SHA-256</mechanism>"), "{s}");
        assert!(s.contains("urn:xmpp:bind:0"), "{s}");
        assert!(s.contains("HT-SHA-256-NONE"), "{s}");
        let no_fast = feature(&[Mechanism::ScramSha256], &[], true).to_string();
        assert!(!no_fast.contains("urn:xmpp:fast:0"), "{no_fast}");
    }

    #[test]
    fn request_parsing() {
        let el = Element::parse(
            "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='SCRAM-SHA-256'>\
             <initial-response>bixuPWFsaWNl</initial-response>\
             <user-agent id='d4565fa7'><software>x</software></user-agent>\
             <bind xmlns='urn:xmpp:bind:0'><tag>Phone</tag></bind>\
             <request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/>\
             </authenticate>",
        )
        .expect("test XML");
        let r = Request::parse(&el);
        assert_eq!(r.initial.as_deref(), Some(&b"n,n=alice"[..]));
        assert_eq!(r.user_agent.as_deref(), Some("d4565fa7"));
        assert!(r.bind.is_some() && r.resume.is_none());
        assert_eq!(r.request_token, Some(Ht::Sha256None));
        assert!(!r.fast_invalidate);
        let bad = Element::parse(
            "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='X'><initial-response>@@@</initial-response></authenticate>",
        )
        .expect("test XML");
        assert_eq!(Request::parse(&bad).initial, None);
    }
}
