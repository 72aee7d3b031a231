//! The routing rules of RFC 6120 §10 and RFC 6121 §8 in one place: given a stanza whose `from`
//! was stamped by the session that received it, decide who gets it. One `match` over (stanza
//! kind, kind of address); one function per arm; explicit defaults.
//!
//! The router never touches sockets: it queues stanzas on sessions (`sessions::send`), hands
//! iq to services, and stores offline messages through `services::offline`.

use crate::jid::{BareJid, FullJid, Jid};
use crate::server::Server;
use crate::services;
use crate::sessions::{self, Outbound};
use crate::stanza::{self, ns, Condition, Kind, StanzaError};
use crate::xml::Element;

/// Where a stanza is addressed, from this server's point of view.
enum To {
    /// Our own domain (the server itself).
    Server,
    Bare(BareJid),
    Full(FullJid),
    /// A domain served by an XEP-0114 component (the domain itself or any JID at it).
    Component,
    /// The built-in XEP-0363 upload service at `upload.DOMAIN` (any JID at it).
    Upload,
    /// The built-in XEP-0045 group chat service at `conference.DOMAIN` (any JID at it).
    Muc,
    /// The built-in XEP-0060 publish-subscribe service at `pubsub.DOMAIN`.
    Pubsub,
    /// The built-in XEP-0065 SOCKS5 bytestreams proxy at `proxy.DOMAIN`.
    Proxy65,
    /// Another domain: federation.
    Remote,
}

/// Routes a stanza sent by a local user (`from`, already stamped). Stanzas without `to` are
/// addressed to the sender's own account (RFC 6120 §10.3), except presence broadcasts, which
/// the presence service handles before calling here.
pub async fn route(srv: &Server, from: &FullJid, stanza: Element) {
    let Some(kind) = Kind::of(&stanza) else {
        return;
    };
    let to = match stanza::jid_attr(&stanza, "to") {
        Ok(Some(jid)) => classify(srv, jid),
        Ok(None) => To::Bare(from.to_bare()),
        Err(e) => return bounce(srv, &stanza, e),
    };
    // XEP-0191: stanzas to a JID the sender blocked go nowhere; iq from a JID the recipient
    // blocked neither (messages: services::message::inbound; presence: services::presence).
    let Some(stanza) = services::blocking::outbound(srv, from, stanza).await else {
        return;
    };
    let Some(stanza) = iq_past_recipient_blocklist(srv, kind, &to, stanza).await else {
        return;
    };
    let stanza = match kind {
        Kind::Message => match services::message::outbound(srv, from, stanza).await {
            Some(s) => s,
            None => return,
        },
        _ => stanza,
    };
    match (kind, to) {
        (Kind::Iq, To::Server) => services::iq::to_server(srv, from, stanza).await,
        (Kind::Iq, To::Bare(bare)) => services::iq::to_account(srv, from, &bare, stanza).await,
        (Kind::Iq, To::Upload) => services::upload::handle_iq(srv, Some(from), stanza).await,
        (_, To::Muc) => services::muc::handle(srv, &Jid::from(from.clone()), stanza).await,
        (Kind::Iq, To::Pubsub) => {
            services::pubsub::handle_iq(srv, &Jid::from(from.clone()), stanza).await
        }
        (Kind::Iq, To::Proxy65) => services::proxy65::handle_iq(srv, Some(from), stanza).await,
        (kind, to) => deliver(srv, kind, to, stanza).await,
    }
}

/// Routes a stanza from a remote entity: a user or service on another server (`from` checked
/// to be at a domain the s2s stream authenticated) or an XEP-0114 component (`from` checked to
/// be at its domain). To local users it is all the same: messages get the usual inbound
/// processing (offline storage, carbons, archive), presence the RFC 6121 inbound rules, iq
/// goes to the addressed resource; the server answers its stateless queries (disco, ping,
/// version, time, uptime). An account's iq handlers need a full sender JID: an iq to a bare
/// account JID from a bare JID gets `service-unavailable`.
pub async fn route_from_remote(srv: &Server, from: &Jid, stanza: Element) {
    let Some(kind) = Kind::of(&stanza) else {
        return;
    };
    let to = match stanza::jid_attr(&stanza, "to") {
        Ok(Some(jid)) => classify(srv, jid),
        Ok(None) => To::Server,
        Err(e) => return bounce(srv, &stanza, e),
    };
    let full_from = from.clone().try_into_full().ok();
    let Some(stanza) = iq_past_recipient_blocklist(srv, kind, &to, stanza).await else {
        return;
    };
    match (kind, to) {
        // Answers to the server's own queries (XEP-0115 disco#info of a remote contact).
        (Kind::Iq, To::Server) if stanza::must_not_answer(&stanza) => {
            if let Some(f) = full_from {
                services::pep::iq_response(srv, &f, &stanza).await;
            }
        }
        (Kind::Iq, To::Server) => services::iq::to_server_from_component(srv, stanza),
        (Kind::Iq, To::Bare(bare)) => match full_from {
            Some(f) => services::iq::to_account(srv, &f, &bare, stanza).await,
            None => bounce(srv, &stanza, Condition::ServiceUnavailable.into()),
        },
        // A component is not a local user: it may discover the service, not upload.
        (Kind::Iq, To::Upload) => services::upload::handle_iq(srv, None, stanza).await,
        // Remote users join rooms over s2s.
        (_, To::Muc) => services::muc::handle(srv, from, stanza).await,
        (Kind::Iq, To::Pubsub) => services::pubsub::handle_iq(srv, from, stanza).await,
        (Kind::Iq, To::Proxy65) => services::proxy65::handle_iq(srv, None, stanza).await,
        (kind, to) => deliver(srv, kind, to, stanza).await,
    }
}

/// XEP-0191 for iq: a request from a JID the local recipient blocked goes no further
/// (messages are checked in `services::message::inbound`, presence in `services::presence`).
async fn iq_past_recipient_blocklist(
    srv: &Server,
    kind: Kind,
    to: &To,
    stanza: Element,
) -> Option<Element> {
    match (kind, to) {
        (Kind::Iq, To::Bare(b)) => services::blocking::inbound(srv, b, stanza).await,
        (Kind::Iq, To::Full(f)) => services::blocking::inbound(srv, &f.to_bare(), stanza).await,
        _ => Some(stanza),
    }
}

/// The routing rules that don't depend on who sent the stanza: everything but an iq to the
/// server or to an account's bare JID, which each entry point answers for its kind of sender.
async fn deliver(srv: &Server, kind: Kind, to: To, stanza: Element) {
    match (kind, to) {
        // The entry points handle these; a request nobody handles is still answered.
        (Kind::Iq, To::Server | To::Bare(_) | To::Upload | To::Pubsub | To::Proxy65) => {
            bounce(srv, &stanza, Condition::ServiceUnavailable.into())
        }
        (Kind::Iq, To::Full(full)) => iq_to_full(srv, &full, stanza),
        (Kind::Message, To::Server | To::Upload | To::Pubsub | To::Proxy65) => {
            message_to_server(srv, stanza)
        }
        (Kind::Message, To::Bare(bare)) => {
            if let Some(stanza) = services::message::inbound(srv, &bare, stanza).await {
                message_to_bare(srv, &bare, stanza).await
            }
        }
        (Kind::Message, To::Full(full)) => {
            if let Some(stanza) = services::message::inbound(srv, &full.to_bare(), stanza).await {
                message_to_full(srv, &full, stanza).await
            }
        }
        (Kind::Presence, To::Server | To::Upload | To::Pubsub | To::Proxy65) => {}
        (Kind::Presence, To::Bare(bare)) => {
            services::presence::inbound(srv, &bare, None, stanza).await
        }
        (Kind::Presence, To::Full(full)) => {
            services::presence::inbound(srv, &full.to_bare(), Some(&full), stanza).await
        }
        (_, To::Component) => {
            to_component(srv, stanza);
        }
        (_, To::Remote) => srv.s2s.send(srv, stanza),
        // Both entry points hand these to the service themselves.
        (_, To::Muc) => {}
    }
}

/// Queues a stanza for the component serving its `to` domain. If the component is not
/// connected (or its queue is full), iq and messages bounce with `service-unavailable` and
/// presence is dropped. Returns false if `to` is not at a component's domain.
pub fn to_component(srv: &Server, stanza: Element) -> bool {
    let Some(domain) = stanza
        .attr("to")
        .and_then(|t| Jid::parse(t).ok())
        .map(|j| j.domain().to_string())
        .filter(|d| srv.is_component(d))
    else {
        return false;
    };
    let sent = srv
        .components
        .sender(&domain)
        // A component that stopped reading gets no more than MAX_QUEUE stanzas queued.
        .is_some_and(|tx| {
            tx.len() < crate::sessions::MAX_QUEUE
                && tx.try_send(Outbound::stanza(stanza.clone())).is_ok()
        });
    if !sent {
        log::debug!("router: component {domain} is not connected");
        if stanza.name() != "presence" {
            bounce(srv, &stanza, Condition::ServiceUnavailable.into());
        }
    }
    true
}

fn classify(srv: &Server, jid: Jid) -> To {
    if srv.is_component(jid.domain()) {
        return To::Component;
    }
    if services::upload::is_service(srv, jid.domain()) {
        return To::Upload;
    }
    if services::muc::is_service(srv, jid.domain()) {
        return To::Muc;
    }
    if services::pubsub::is_service(srv, jid.domain()) {
        return To::Pubsub;
    }
    if services::proxy65::is_service(srv, jid.domain()) {
        return To::Proxy65;
    }
    if !srv.is_local_domain(jid.domain()) {
        return To::Remote;
    }
    match (jid.node(), jid.resource()) {
        // A JID like `example.org/res` addresses the server too (RFC 6120 §10.5.1).
        (None, _) => To::Server,
        (Some(_), None) => To::Bare(jid.to_bare()),
        (Some(_), Some(_)) => match jid.try_into_full() {
            Ok(full) => To::Full(full),
            Err(jid) => To::Bare(jid.to_bare()),
        },
    }
}

/// Sends an error reply to the stanza's sender, unless the stanza is itself an error or result.
pub fn bounce(srv: &Server, stanza: &Element, err: StanzaError) {
    if stanza::must_not_answer(stanza) {
        return;
    }
    let reply = stanza::error_reply(stanza, &err);
    deliver_reply(srv, reply);
}

/// Delivers a server-generated reply (iq result, error) to the local full JID in its `to`,
/// or to the component or other server it is addressed to.
pub fn deliver_reply(srv: &Server, reply: Element) {
    if let Some(to) = reply.attr("to").and_then(|t| Jid::parse(t).ok()) {
        if srv.is_component(to.domain()) {
            to_component(srv, reply);
            return;
        }
        if services::muc::is_service(srv, to.domain()) {
            return; // replies to rooms are routed by `route`, never generated for them
        }
        if !srv.is_local_domain(to.domain()) {
            srv.s2s.send(srv, reply);
            return;
        }
    }
    let Some(Ok(to)) = reply.attr("to").map(FullJid::parse) else {
        return;
    };
    if let Some(r) = srv.sessions.resource(&to) {
        sessions::send(&r, Outbound::stanza(reply));
    }
}

/// RFC 6121 §8.5.3.1 / §8.5.4: an iq to a connected resource is delivered; to anything else
/// the sender gets `service-unavailable`.
fn iq_to_full(srv: &Server, to: &FullJid, stanza: Element) {
    match srv.sessions.resource(to) {
        Some(r) => {
            if !sessions::send(&r, Outbound::stanza(stanza.clone())) {
                bounce(srv, &stanza, Condition::ServiceUnavailable.into());
            }
        }
        None => bounce(srv, &stanza, Condition::ServiceUnavailable.into()),
    }
}

fn message_to_server(srv: &Server, stanza: Element) {
    // Nothing on the server consumes messages yet (announcements will); don't leave a chat
    // message unanswered.
    if matches!(stanza::stanza_type(&stanza), "normal" | "chat") {
        bounce(srv, &stanza, Condition::ServiceUnavailable.into());
    }
}

/// RFC 6121 §8.5.2: message to a bare JID of a local account.
pub async fn message_to_bare(srv: &Server, to: &BareJid, stanza: Element) {
    let resources = srv.sessions.resources(to);
    let kind = stanza::stanza_type(&stanza).to_string();
    let non_negative: Vec<_> = resources
        .iter()
        .filter(|r| r.available && r.priority >= 0)
        .collect();
    match kind.as_str() {
        "error" => {}
        "groupchat" => bounce(srv, &stanza, Condition::ServiceUnavailable.into()),
        "headline" => {
            for r in non_negative {
                sessions::send(r, Outbound::stanza(stanza.clone()));
            }
        }
        // "normal", "chat" and unknown types (treated as normal, RFC 6120 §8.2.1... §5.2.2).
        _ => {
            let targets: Vec<_> = if kind == "chat" {
                non_negative
            } else {
                let top = non_negative.iter().map(|r| r.priority).max();
                non_negative
                    .into_iter()
                    .filter(|r| Some(r.priority) == top)
                    .collect()
            };
            let delivered: Vec<&sessions::Resource> = targets
                .into_iter()
                .filter(|r| sessions::send(r, Outbound::stanza(stanza.clone())))
                .collect();
            if delivered.is_empty() {
                return services::offline::store_or_bounce(srv, to, stanza).await;
            }
            let asleep = delivered.iter().any(|r| r.asleep);
            let delivered: Vec<FullJid> = delivered.iter().map(|r| r.jid.clone()).collect();
            services::carbons::received(srv, to, &stanza, &delivered);
            if asleep {
                services::push::notify(srv, to, &stanza).await;
            }
        }
    }
}

/// RFC 6121 §8.5.3: message to a full JID; if that resource is gone, normal and chat messages
/// are handled as if sent to the bare JID.
async fn message_to_full(srv: &Server, to: &FullJid, stanza: Element) {
    if let Some(r) = srv.sessions.resource(to) {
        if sessions::send(&r, Outbound::stanza(stanza.clone())) {
            services::carbons::received(srv, &to.to_bare(), &stanza, std::slice::from_ref(to));
            if r.asleep {
                services::push::notify(srv, &to.to_bare(), &stanza).await;
            }
            return;
        }
    }
    match stanza::stanza_type(&stanza) {
        "error" | "headline" => {}
        "groupchat" => bounce(srv, &stanza, Condition::ServiceUnavailable.into()),
        _ => message_to_bare(srv, &to.to_bare(), stanza).await,
    }
}

/// Sends a stanza to a JID that is not a local account: a component's, or another server's
/// (connected on first use; what can't be delivered there bounces). Anything else addressed to
/// the local domain is dropped: callers handle local accounts themselves.
pub fn to_elsewhere(srv: &Server, stanza: Element) {
    let Some(to) = stanza.attr("to").and_then(|t| Jid::parse(t).ok()) else {
        return;
    };
    if srv.is_component(to.domain()) {
        to_component(srv, stanza);
    } else if services::muc::is_service(srv, to.domain()) {
        // Subscriptions and probes to rooms mean nothing; presence to rooms goes through
        // `services::presence`, which hands it to the service.
    } else if !srv.is_local_domain(to.domain()) {
        srv.s2s.send(srv, stanza);
    }
}

/// Whether a message has content worth storing offline (XEP-0160 §3): chat states and
/// processing hints alone are not.
pub fn worth_storing(stanza: &Element) -> bool {
    stanza
        .children()
        .any(|c| c.ns() != ns::CHATSTATES && c.ns() != ns::HINTS && c.name() != "thread")
}
