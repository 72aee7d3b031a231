//! Offline storage (RFC 6121 §8.5.2.2.1, XEP-0160): messages for an account with no available
//! resource are committed to the store, stamped with a XEP-0203 delay, and delivered at the
//! account's next initial presence. A message is on disk before the sender's stanza counts as
//! handled; when it can't be stored the sender gets an error, never silence.

use crate::jid::{BareJid, FullJid};
use crate::router::{bounce, worth_storing};
use crate::server::Server;
use crate::services::iq::account_exists;
use crate::stanza::{ns, Condition, StanzaError};
use crate::store::StoreError;
use crate::xml::Element;

pub async fn store_or_bounce(srv: &Server, to: &BareJid, mut stanza: Element) {
    if !account_exists(srv, to).await {
        return bounce(srv, &stanza, Condition::ServiceUnavailable.into());
    }
    if !worth_storing(&stanza) {
        return;
    }
    // A message coming back from an expired stream-management session may carry our stamp
    // already; one is enough (XEP-0203 allows one per entity).
    let stamped = stanza
        .children()
        .any(|c| c.is("delay", ns::DELAY) && c.attr("from") == Some(srv.domain()));
    if !stamped {
        stanza.push_child(
            Element::new("delay", ns::DELAY)
                .with_attr("from", srv.domain())
                .with_attr("stamp", crate::time::rfc3339(crate::time::now_unix()))
                .with_text("Offline Storage"),
        );
    }
    let bytes = stanza.to_bytes_in("");
    let max = srv.config.limits.max_offline_messages;
    match srv.store.push_offline(to.as_ref(), bytes, max).await {
        Ok(()) => {
            log::debug!("offline: stored a message for {to}");
            // XEP-0357: no resource took it, so the user's devices may want to wake up.
            crate::services::push::notify(srv, to, &stanza).await;
        }
        Err(StoreError::QuotaExceeded) => {
            log::info!("offline: storage for {to} is full ({max} messages), bouncing");
            bounce(
                srv,
                &stanza,
                StanzaError::new(Condition::ServiceUnavailable)
                    .with_text("the recipient's offline storage is full"),
            );
        }
        Err(e) => {
            log::error!("offline: cannot store a message for {to}: {e}");
            let err = if e.is_disk_full() {
                StanzaError::new(Condition::ResourceConstraint)
                    .with_text("the server's disk is full")
            } else {
                // Usually a write that failed earlier: the store refuses more until it has reopened
                // the data file, within a second of the cause going away.
                StanzaError::new(Condition::InternalServerError)
                    .with_text("the server cannot store messages right now")
            };
            bounce(srv, &stanza, err);
        }
    }
}

/// The account's stored messages, oldest first, with the sequence number to delete up to once
/// they are written to the client.
pub async fn pending(srv: &Server, me: &FullJid) -> (Vec<Element>, Option<u64>) {
    let owner = me.to_bare().to_string();
    match srv.store.offline(&owner).await {
        Ok(list) => {
            let last = list.last().map(|(seq, _)| *seq);
            let msgs = list
                .into_iter()
                .filter_map(|(seq, bytes)| {
                    let el = std::str::from_utf8(&bytes)
                        .ok()
                        .and_then(|s| Element::parse(s).ok());
                    if el.is_none() {
                        log::error!(
                            "offline: stored message #{seq} of {owner} is unreadable; skipping it"
                        );
                    }
                    el
                })
                .collect();
            (msgs, last)
        }
        Err(e) => {
            log::error!("offline: cannot read stored messages of {owner}: {e}");
            (Vec::new(), None)
        }
    }
}

pub async fn delivered(srv: &Server, me: &FullJid, up_to: u64) {
    if let Err(e) = srv.store.delete_offline(me.to_bare().as_ref(), up_to).await {
        log::error!(
            "offline: delivered messages of {} could not be removed: {e}",
            me.to_bare()
        );
    }
}
