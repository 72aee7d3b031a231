//! The message pipeline around RFC 6121 §8 delivery: what happens to a message on the
//! sender's account before it is routed, and on the recipient's account before it reaches
//! resources or offline storage. Features that watch messages (blocking, archive, carbons)
//! hook in here, each through its own module, so `router` keeps only the routing rules.

use crate::jid::{BareJid, FullJid};
use crate::server::Server;
use crate::xml::Element;

/// Sender side: a message from local user `from`, before routing anywhere (local or remote).
/// `None` means the pipeline consumed it (refused with an error, or dropped).
pub async fn outbound(srv: &Server, from: &FullJid, stanza: Element) -> Option<Element> {
    // The sender's archive id; carbons (XEP-0280) can put it on sent copies.
    let _archived = super::mam::outbound(srv, from, &stanza).await;
    Some(stanza)
}

/// Recipient side: a message for local account `to`, before delivery or offline storage.
/// `None` means the pipeline consumed it.
pub async fn inbound(srv: &Server, to: &BareJid, mut stanza: Element) -> Option<Element> {
    super::mam::inbound(srv, to, &mut stanza).await;
    Some(stanza)
}
