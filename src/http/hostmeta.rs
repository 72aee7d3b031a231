//! XEP-0156 (Discovering Alternative XMPP Connection Methods), §3: the
//! `/.well-known/host-meta` XRD (RFC 6415) and its JSON form, listing the WebSocket and BOSH
//! URLs. Pure: URLs in, documents out.

/// The link relation of an RFC 7395 WebSocket endpoint.
pub const REL_WEBSOCKET: &str = "urn:xmpp:alt-connections:websocket";
/// The link relation of a XEP-0206 BOSH endpoint.
pub const REL_BOSH: &str = "urn:xmpp:alt-connections:xbosh";

/// The endpoints announced, as absolute URLs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Links {
    /// `wss://…/xmpp-websocket`
    pub websocket: String,
    /// `https://…/http-bind`
    pub bosh: String,
}

impl Links {
    /// The endpoints under `base`, an `https://` (or `http://`) URL without a trailing `/`.
    pub fn under(base: &str) -> Links {
        let ws_base = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            base.to_string()
        };
        Links {
            websocket: format!("{ws_base}{}", super::router::WEBSOCKET_PATH),
            bosh: format!("{base}{}", super::router::BOSH_PATH),
        }
    }
}

/// `/.well-known/host-meta`: an XRD document (RFC 6415 §3).
pub fn xrd(links: &Links) -> String {
    use crate::xml::escape_attr_value as esc;
    format!(
        "<?xml version='1.0' encoding='utf-8'?>\n\
         <XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n\
         \x20 <Link rel='{REL_WEBSOCKET}' href='{}'/>\n\
         \x20 <Link rel='{REL_BOSH}' href='{}'/>\n\
         </XRD>\n",
        esc(&links.websocket),
        esc(&links.bosh)
    )
}

/// `/.well-known/host-meta.json`: the JRD form (RFC 6415 Appendix A).
pub fn json(links: &Links) -> String {
    format!(
        "{{\n  \"links\": [\n    {{ \"rel\": \"{REL_WEBSOCKET}\", \"href\": {} }},\n    {{ \"rel\": \"{REL_BOSH}\", \"href\": {} }}\n  ]\n}}\n",
        crate::json::string(&links.websocket),
        crate::json::string(&links.bosh)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::Element;

    #[test]
    fn links_follow_the_base_scheme_and_port() {
        let l = Links::under("https://example.org:5443");
        assert_eq!(l.websocket, "wss://example.org:5443/xmpp-websocket");
        assert_eq!(l.bosh, "https://example.org:5443/http-bind");
        let l = Links::under("http://127.0.0.1:8080/chat");
        assert_eq!(l.websocket, "ws://127.0.0.1:8080/chat/xmpp-websocket");
        assert_eq!(l.bosh, "http://127.0.0.1:8080/chat/http-bind");
    }

    #[test]
    fn xrd_parses_and_lists_both_links() {
        let l = Links::under("https://example.org");
        let doc = xrd(&l);
        let body = doc.split_once("?>").map(|(_, b)| b).unwrap_or(&doc);
        let el = Element::parse(body).expect("well-formed XRD");
        assert!(el.is("XRD", "http://docs.oasis-open.org/ns/xri/xrd-1.0"));
        let links: Vec<(&str, &str)> = el
            .children()
            .map(|c| (c.attr("rel").unwrap_or(""), c.attr("href").unwrap_or("")))
            .collect();
        assert_eq!(
            links,
            [
                (REL_WEBSOCKET, "wss://example.org/xmpp-websocket"),
                (REL_BOSH, "https://example.org/http-bind")
            ]
        );
    }

    #[test]
    fn json_escapes_and_lists_both_links() {
        let l = Links {
            websocket: "wss://a\"b".into(),
            bosh: "https://x\\y".into(),
        };
        let doc = json(&l);
        assert!(doc.contains(r#""href": "wss://a\"b""#), "{doc}");
        assert!(doc.contains(r#""href": "https://x\\y""#), "{doc}");
        assert!(doc.contains(REL_WEBSOCKET) && doc.contains(REL_BOSH));
    }
}
