//! XEP-0030 Service Discovery for the server and for accounts. Only features that work end to
//! end are listed: a client that sees a feature here will use it.

use crate::server::Server;
use crate::services::{bookmarks, pep, vcard};
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
    ns::CARBONS,
    ns::BLOCKING,
    ns::REGISTER,
    ns::PRIVATE,
    vcard::NS_VCARD,
    crate::services::adhoc::NS_COMMANDS,
];

/// Features the server provides on behalf of each account (bare JID).
pub const ACCOUNT_FEATURES: &[&str] = &[
    ns::DISCO_INFO,
    ns::DISCO_ITEMS,
    ns::LAST,
    mam::NS_MAM,
    mam::NS_MAM_EXTENDED,
    mam::NS_SID,
    ns::PUSH,
    vcard::NS_VCARD,
    vcard::NS_CONVERSION,
    // XEP-0292: vCard4 is a PEP node, stored and delivered like any other.
    "urn:xmpp:vcard4",
];

/// The XEP-0115 node URI kith's server capabilities are published under.
pub const CAPS_NODE: &str = "urn:kith:caps";

pub fn server_info(srv: &Server, query: &Element) -> Element {
    let mut q = query_reply(query, ns::DISCO_INFO);
    // The only node we answer for is our caps `node#ver` (XEP-0115 §6.2), which is the same
    // information as the plain query.
    if let Some(node) = query.attr("node") {
        if node != format!("{CAPS_NODE}#{}", server_caps_ver(srv)) {
            return q;
        }
    }
    full_server_info(srv, &mut q);
    q
}

/// XEP-0115 `<c/>` for the stream features, so clients learn our features without a query.
pub fn server_caps(srv: &Server) -> Element {
    Element::new("c", crate::services::caps::NS_CAPS)
        .with_attr("hash", "sha-1")
        .with_attr("node", CAPS_NODE)
        .with_attr("ver", server_caps_ver(srv))
}

fn server_caps_ver(srv: &Server) -> String {
    let mut q = Element::new("query", ns::DISCO_INFO);
    full_server_info(srv, &mut q);
    crate::services::caps::ver_hash(&q)
}

fn full_server_info(srv: &Server, q: &mut Element) {
    q.push_child(
        Element::new("identity", ns::DISCO_INFO)
            .with_attr("category", "server")
            .with_attr("type", "im")
            .with_attr("name", "kith"),
    );
    for f in SERVER_FEATURES {
        if *f == ns::CARBONS && !srv.config.modules.carbons {
            continue;
        }
        q.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", *f));
    }
    if srv.config.turn.advertised(srv.domain()).is_some() {
        q.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", ns::EXTDISCO));
    }
    if let Some(form) = contact_form(srv) {
        q.push_child(form);
    }
}

/// XEP-0157: the contact addresses as a XEP-0128 extension form; `None` when there are none.
fn contact_form(srv: &Server) -> Option<Element> {
    let fields = srv.config.contact.fields(&srv.config.admins);
    if fields.iter().all(|(_, v)| v.is_empty()) {
        return None;
    }
    let field = |var: &str| Element::new("field", ns::DATA_FORM).with_attr("var", var);
    let mut form = Element::new("x", ns::DATA_FORM)
        .with_attr("type", "result")
        .with_child(
            field("FORM_TYPE")
                .with_attr("type", "hidden")
                .with_child(Element::new("value", ns::DATA_FORM).with_text(ns::SERVERINFO)),
        );
    for (var, values) in fields.into_iter().filter(|(_, v)| !v.is_empty()) {
        let mut f = field(var).with_attr("type", "list-multi");
        for v in values {
            f.push_child(Element::new("value", ns::DATA_FORM).with_text(v));
        }
        form.push_child(f);
    }
    Some(form)
}

/// The server's items: the upload service and the configured XEP-0114 components (so
/// clients find them).
pub fn server_items(srv: &Server, query: &Element) -> Element {
    let mut reply = query_reply(query, ns::DISCO_ITEMS);
    if query.attr("node").is_none() {
        if let Some(upload) = crate::services::upload::service_domain(srv) {
            reply.push_child(Element::new("item", ns::DISCO_ITEMS).with_attr("jid", upload));
        }
        for c in &srv.config.components {
            reply.push_child(
                Element::new("item", ns::DISCO_ITEMS).with_attr("jid", c.domain.clone()),
            );
        }
    }
    reply
}

pub fn account_info(query: &Element) -> Element {
    let mut q = query_reply(query, ns::DISCO_INFO);
    q.push_child(
        Element::new("identity", ns::DISCO_INFO)
            .with_attr("category", "account")
            .with_attr("type", "registered"),
    );
    // XEP-0163 §6.1: the account is a PEP service.
    q.push_child(
        Element::new("identity", ns::DISCO_INFO)
            .with_attr("category", "pubsub")
            .with_attr("type", "pep"),
    );
    for f in ACCOUNT_FEATURES
        .iter()
        .chain(pep::FEATURES)
        .chain(bookmarks::FEATURES)
    {
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
