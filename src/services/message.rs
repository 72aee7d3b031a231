//! The message pipeline around RFC 6121 §8 delivery: what happens to a message on the
//! sender's account before it is routed, and on the recipient's account before it reaches
//! resources or offline storage. Features that watch messages (blocking, archive, carbons)
//! hook in here, each through its own module, so `router` keeps only the routing rules.

use crate::jid::{BareJid, FullJid};
use crate::server::Server;
use crate::services::carbons;
use crate::xml::Element;

/// Sender side: a message from local user `from`, before routing anywhere (local or remote).
/// `None` means the pipeline consumed it (refused with an error, or dropped).
pub async fn outbound(srv: &Server, from: &FullJid, stanza: Element) -> Option<Element> {
    // Archived first, so the sent carbon can carry the sender's archive id (XEP-0313 §5.1.3
    // via XEP-0359): other clients of the account learn it without querying.
    match super::mam::outbound(srv, from, &stanza).await {
        Some(id) => {
            let mut copy = stanza.clone();
            copy.push_child(crate::stanza::mam::stanza_id(from.bare_str(), id));
            carbons::sent(srv, from, &copy);
        }
        None => carbons::sent(srv, from, &stanza),
    }
    Some(stanza)
}

/// Recipient side: a message for local account `to`, before delivery or offline storage.
/// `None` means the pipeline consumed it.
pub async fn inbound(srv: &Server, to: &BareJid, stanza: Element) -> Option<Element> {
    // Blocked senders' messages are dropped before they reach the archive.
    let mut stanza = crate::services::blocking::inbound(srv, to, stanza).await?;
    super::mam::inbound(srv, to, &mut stanza).await;
    Some(stanza)
}
