//! XEP-0030 Service Discovery for the server and for accounts. Only features that work end to
//! end are listed: a client that sees a feature here will use it.

use crate::server::Server;
use crate::stanza::{mam, ns};
use crate::xml::Element;

/// Features of the server itself (the domain JID).
pub const SERVER_FEATURES: &[&str] = &[
    ns::DISCO_INFO,
    ns::DISCO_ITEMS,
    ns::PING,
    ns::VERSION,
    ns::TIME,
    ns::LAST,
    ns::MSGOFFLINE,
];

/// Features the server provides on behalf of each account (bare JID).
pub const ACCOUNT_FEATURES: &[&str] = &[
    ns::DISCO_INFO,
    ns::DISCO_ITEMS,
    ns::LAST,
    mam::NS_MAM,
    mam::NS_MAM_EXTENDED,
    mam::NS_SID,
];

pub fn server_info(_srv: &Server, query: &Element) -> Element {
    let mut q = query_reply(query, ns::DISCO_INFO);
    if query.attr("node").is_some() {
        return q;
    }
    q.push_child(
        Element::new("identity", ns::DISCO_INFO)
            .with_attr("category", "server")
            .with_attr("type", "im")
            .with_attr("name", "kith"),
    );
    for f in SERVER_FEATURES {
        q.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", *f));
    }
    q
}

pub fn server_items(query: &Element) -> Element {
    query_reply(query, ns::DISCO_ITEMS)
}

pub fn account_info(query: &Element) -> Element {
    let mut q = query_reply(query, ns::DISCO_INFO);
    q.push_child(
        Element::new("identity", ns::DISCO_INFO)
            .with_attr("category", "account")
            .with_attr("type", "registered"),
    );
    for f in ACCOUNT_FEATURES {
        q.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", *f));
    }
    q
}

pub fn account_items(query: &Element) -> Element {
    query_reply(query, ns::DISCO_ITEMS)
}

fn query_reply(query: &Element, namespace: &str) -> Element {
    let mut q = Element::new("query", namespace);
    if let Some(node) = query.attr("node") {
        q.set_attr("node", node);
    }
    q
}
