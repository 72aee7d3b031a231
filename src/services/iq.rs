//! Dispatch of iq stanzas addressed to the server or to an account's bare JID (RFC 6120 §10.3:
//! the server answers for the account). Unknown payloads get `service-unavailable`.

use crate::jid::{BareJid, FullJid};
use crate::router::{bounce, deliver_reply};
use crate::server::Server;
use crate::services::{
    adhoc, blocking, carbons, disco, extdisco, info, mam, pep, private, push, register, roster,
    vcard,
};
use crate::stanza::{self, ns, Condition};
use crate::xml::Element;

/// iq to our domain.
pub async fn to_server(srv: &Server, from: &FullJid, iq: Element) {
    if stanza::must_not_answer(&iq) {
        // Answers to the server's own queries (XEP-0115 disco#info for PEP).
        return pep::iq_response(srv, from, &iq).await;
    }
    let get = iq.attr("type") == Some("get");
    let Some(payload) = iq.first_child() else {
        return bounce(srv, &iq, Condition::BadRequest.into());
    };
    if get {
        match adhoc::disco(srv, from, payload) {
            Some(Ok(reply)) => return reply_ok(srv, &iq, Some(reply)),
            Some(Err(e)) => return bounce(srv, &iq, e),
            None => {}
        }
    }
    if let Some(reply) = stateless_server_query(srv, payload, get) {
        return reply_ok(srv, &iq, reply);
    }
    match (payload.ns(), payload.name(), get) {
        (adhoc::NS_COMMANDS, "command", false) => adhoc::handle(srv, from, iq).await,
        // Carbons are per account, but some clients address the toggle to the domain.
        (ns::CARBONS, _, false) if srv.config.modules.carbons => {
            carbons::handle_iq(srv, from, &iq, payload)
        }
        // A roster request addressed to the domain is a client bug, but harmless to serve.
        (ns::ROSTER, "query", _) => roster::handle(srv, from, iq).await,
        (ns::REGISTER, "query", _) => register::handle(srv, from, iq).await,
        (ns::EXTDISCO, _, _) => extdisco::handle(srv, from, iq),
        _ => bounce(srv, &iq, Condition::ServiceUnavailable.into()),
    }
}

/// iq to our domain from an XEP-0114 component: only the queries that read no account's data
/// (a component is not an account: the roster, carbons and registration are not for it).
pub fn to_server_from_component(srv: &Server, iq: Element) {
    if stanza::must_not_answer(&iq) {
        return;
    }
    let get = iq.attr("type") == Some("get");
    let Some(payload) = iq.first_child() else {
        return bounce(srv, &iq, Condition::BadRequest.into());
    };
    match stateless_server_query(srv, payload, get) {
        Some(reply) => reply_ok(srv, &iq, reply),
        None => bounce(srv, &iq, Condition::ServiceUnavailable.into()),
    }
}

/// The server's answers that read no account's data, for any sender: `Some(payload)` (an
/// empty result is `Some(None)`), or `None` if the query isn't one of them.
fn stateless_server_query(srv: &Server, payload: &Element, get: bool) -> Option<Option<Element>> {
    Some(match (payload.ns(), payload.name(), get) {
        (ns::DISCO_INFO, "query", true) => Some(disco::server_info(srv, payload)),
        (ns::DISCO_ITEMS, "query", true) => Some(disco::server_items(srv, payload)),
        (ns::PING, "ping", true) => None,
        (ns::VERSION, "query", true) => Some(info::version()),
        (ns::TIME, "time", true) => Some(info::time()),
        (ns::LAST, "query", true) => Some(info::uptime(srv)),
        (vcard::NS_VCARD, "vCard", true) => Some(vcard::server_vcard()),
        _ => return None,
    })
}

/// iq to an account's bare JID (or with no `to`, to the sender's own account).
pub async fn to_account(srv: &Server, from: &FullJid, to: &BareJid, iq: Element) {
    if stanza::must_not_answer(&iq) {
        // XEP-0357: an app server's error answer to a push notification disables it.
        push::on_reply(srv, to, &iq).await;
        return;
    }
    let own = from.to_bare() == *to;
    let get = iq.attr("type") == Some("get");
    let Some(payload) = iq.first_child() else {
        return bounce(srv, &iq, Condition::BadRequest.into());
    };
    if !own && !account_exists(srv, to).await {
        return bounce(srv, &iq, Condition::ServiceUnavailable.into());
    }
    let reply = match (payload.ns(), payload.name(), get) {
        (ns::ROSTER, "query", _) if own => return roster::handle(srv, from, iq).await,
        (crate::stanza::mam::NS_MAM, _, _) if own => return mam::handle_iq(srv, from, iq).await,
        (ns::CARBONS, _, false) if own && srv.config.modules.carbons => {
            return carbons::handle_iq(srv, from, &iq, payload)
        }
        (ns::BLOCKING, _, _) if own => return blocking::handle(srv, from, iq).await,
        (ns::PUSH, _, _) if own => return push::handle(srv, from, iq).await,
        (ns::PRIVATE, "query", _) => return private::handle(srv, from, to, iq).await,
        (ns::REGISTER, "query", _) if own => return register::handle(srv, from, iq).await,
        (ns::DISCO_INFO, "query", true) => Some(disco::account_info(payload)),
        (pep::NS_PUBSUB, "pubsub", _) => return pep::handle(srv, from, to, iq).await,
        (pep::NS_PUBSUB_OWNER, "pubsub", _) => return pep::handle_owner(srv, from, to, iq).await,
        (vcard::NS_VCARD, "vCard", true) => return vcard::get(srv, from, to, iq).await,
        (vcard::NS_VCARD, "vCard", false) if own => return vcard::set(srv, from, iq).await,
        (ns::DISCO_ITEMS, "query", true) => {
            Some(pep::disco_items(srv, &from.to_bare(), to, payload).await)
        }
        (ns::PING, "ping", true) if own => None,
        (ns::LAST, "query", true) => match info::last_activity(srv, from, to).await {
            Ok(el) => Some(el),
            Err(c) => return bounce(srv, &iq, c.into()),
        },
        _ => return bounce(srv, &iq, Condition::ServiceUnavailable.into()),
    };
    reply_ok(srv, &iq, reply);
}

fn reply_ok(srv: &Server, iq: &Element, payload: Option<Element>) {
    deliver_reply(srv, stanza::iq_result(iq, payload));
}

pub async fn account_exists(srv: &Server, jid: &BareJid) -> bool {
    if !srv.is_local_user(jid) {
        return false;
    }
    if srv.sessions.is_online(jid) {
        return true;
    }
    match srv.store.account(jid.as_ref()).await {
        Ok(a) => a.is_some(),
        Err(e) => {
            log::error!("store: cannot look up account {jid}: {e}");
            false
        }
    }
}
