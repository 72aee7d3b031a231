//! XEP-0198 Stream Management: ack counters and the queue of stanzas the client has not yet
//! acknowledged (`Sm`), and the registry of resumable sessions (`Registry`), where a session
//! whose connection dropped waits for its client to come back.
//!
//! A resumable session is in exactly one place at a time: driven by a connection task
//! (`Live`: another connection that resumes it asks that task to hand it over), or parked in
//! its slot (`Parked`) until it is resumed or its timeout expires. Either way nothing the
//! client did not acknowledge is lost: it is re-sent on resume, or re-routed on expiry.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_channel::{Receiver, Sender};

use crate::jid::{BareJid, FullJid};
use crate::services::presence::SessionPresence;
use crate::sessions::Outbound;
use crate::xml::Element;

/// Unacknowledged stanzas kept per session; a client that never acks is disconnected rather
/// than allowed to grow this without bound.
pub const MAX_UNACKED: usize = 10_000;

/// The counters of one stream-management session.
#[derive(Debug, Default)]
pub struct Sm {
    /// Resumption id, when the client asked for resumption.
    pub id: Option<String>,
    /// Stanzas received from the client (`h` we report).
    pub inbound: u32,
    /// Stanzas sent to the client and not yet acknowledged, oldest first.
    pub unacked: VecDeque<Element>,
    /// The client's last reported `h`.
    acked: u32,
    /// An `<r/>` is outstanding.
    pub requested: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub struct TooHigh;

impl Sm {
    pub fn new(id: Option<String>) -> Sm {
        Sm {
            id,
            ..Sm::default()
        }
    }

    pub fn received(&mut self) {
        self.inbound = self.inbound.wrapping_add(1);
    }

    /// Records a stanza written to the client.
    pub fn sent(&mut self, el: &Element) {
        self.unacked.push_back(el.clone());
    }

    /// The client acknowledged everything up to `h` (counters wrap at 2^32, §4).
    pub fn ack(&mut self, h: u32) -> Result<(), TooHigh> {
        let n = h.wrapping_sub(self.acked) as usize;
        if n > self.unacked.len() {
            return Err(TooHigh);
        }
        self.unacked.drain(..n);
        self.acked = h;
        self.requested = false;
        Ok(())
    }
}

/// A bound session's state, which moves between connection tasks on resumption.
pub struct BoundState {
    pub me: FullJid,
    pub conn: u64,
    pub presence: SessionPresence,
    pub sm: Option<Sm>,
    pub rx: crate::queue::Receiver<Outbound>,
}

enum SlotState {
    /// A connection drives it; send a reply channel here to have the session handed over.
    Live(Sender<Sender<BoundState>>),
    /// Waiting for its client; `gen` tells a stale expiry timer from the current one.
    Parked(Box<BoundState>, u64),
    Gone,
}

struct Slot {
    owner: BareJid,
    state: SlotState,
}

/// Resumable sessions by resumption id.
#[derive(Default)]
pub struct Registry {
    slots: Mutex<HashMap<String, Slot>>,
    next_gen: std::sync::atomic::AtomicU64,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        // Each critical section is a single map operation: consistent even after a panic.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a live resumable session; the returned channel delivers takeover requests.
    pub fn live(&self, id: &str, owner: BareJid) -> Receiver<Sender<BoundState>> {
        let (tx, rx) = async_channel::bounded(1);
        self.lock().insert(
            id.to_string(),
            Slot {
                owner,
                state: SlotState::Live(tx),
            },
        );
        rx
    }

    /// Parks a session whose connection dropped; returns the generation its expiry timer
    /// must present.
    pub fn park(&self, id: &str, state: BoundState) -> u64 {
        let gen = self
            .next_gen
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let owner = state.me.to_bare();
        self.lock().insert(
            id.to_string(),
            Slot {
                owner,
                state: SlotState::Parked(Box::new(state), gen),
            },
        );
        gen
    }

    /// The expiry timer fired: the parked session, if it is still the one parked at `gen`.
    pub fn expire(&self, id: &str, gen: u64) -> Option<BoundState> {
        let mut slots = self.lock();
        match slots.get(id).map(|s| &s.state) {
            Some(SlotState::Parked(_, g)) if *g == gen => {}
            _ => return None,
        }
        match slots.remove(id).map(|s| s.state) {
            Some(SlotState::Parked(state, _)) => Some(*state),
            _ => None,
        }
    }

    /// The session ended for good (clean close, error): forget it.
    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Every parked session, for shutdown.
    pub fn drain_parked(&self) -> Vec<BoundState> {
        let mut slots = self.lock();
        let ids: Vec<String> = slots
            .iter()
            .filter(|(_, s)| matches!(s.state, SlotState::Parked(..)))
            .map(|(id, _)| id.clone())
            .collect();
        ids.into_iter()
            .filter_map(|id| match slots.remove(&id).map(|s| s.state) {
                Some(SlotState::Parked(state, _)) => Some(*state),
                _ => None,
            })
            .collect()
    }

    /// Takes over the session `id` for a new connection authenticated as `user`: a parked one
    /// at once, a live one by asking its task to hand it over. `None` if there is no such
    /// session for this user (unknown, expired, or another account's: no difference shown).
    pub async fn take(&self, id: &str, user: &BareJid) -> Option<BoundState> {
        // Two rounds: a live session may park itself while we ask it to hand over.
        for _ in 0..2 {
            let takeover = {
                let mut slots = self.lock();
                let slot = slots.get_mut(id)?;
                if slot.owner != *user {
                    return None;
                }
                match std::mem::replace(&mut slot.state, SlotState::Gone) {
                    SlotState::Parked(state, _) => {
                        slots.remove(id);
                        return Some(*state);
                    }
                    SlotState::Live(tx) => {
                        slot.state = SlotState::Live(tx.clone());
                        tx
                    }
                    SlotState::Gone => return None,
                }
            };
            let (reply_tx, reply_rx) = async_channel::bounded(1);
            if takeover.send(reply_tx).await.is_ok() {
                let reply = futures_lite::future::or(async { reply_rx.recv().await.ok() }, async {
                    smol::Timer::after(Duration::from_secs(10)).await;
                    None
                });
                if let Some(state) = reply.await {
                    return Some(state);
                }
            }
        }
        None
    }
}

/// Shared handle type for the server context.
pub type SharedRegistry = Arc<Registry>;

#[cfg(test)]
mod tests {
    use super::*;

    fn el(n: u32) -> Element {
        Element::new("message", "jabber:client").with_attr("id", n.to_string())
    }

    #[test]
    fn acks_drop_acknowledged_stanzas_in_order() {
        let mut sm = Sm::new(None);
        for i in 0..5 {
            sm.sent(&el(i));
        }
        assert_eq!(sm.ack(2), Ok(()));
        assert_eq!(sm.unacked.front().and_then(|e| e.attr("id")), Some("2"));
        assert_eq!(sm.ack(2), Ok(()), "a repeated ack changes nothing");
        assert_eq!(sm.unacked.len(), 3);
        assert_eq!(sm.ack(9), Err(TooHigh));
        assert_eq!(sm.ack(5), Ok(()));
        assert!(sm.unacked.is_empty());
    }

    #[test]
    fn counters_wrap_at_two_to_the_32() {
        let mut sm = Sm::new(None);
        sm.acked = u32::MAX - 1;
        for i in 0..4 {
            sm.sent(&el(i));
        }
        assert_eq!(sm.ack(1), Ok(()));
        assert_eq!(sm.unacked.len(), 1);
        sm.inbound = u32::MAX;
        sm.received();
        assert_eq!(sm.inbound, 0);
    }

    fn state(me: &str) -> BoundState {
        let (_tx, rx) = crate::queue::unbounded();
        BoundState {
            me: FullJid::parse(me).expect("jid"),
            conn: 1,
            presence: SessionPresence::default(),
            sm: Some(Sm::new(Some("id1".into()))),
            rx,
        }
    }

    #[test]
    fn parked_session_is_taken_once_and_only_by_its_owner() {
        let reg = Registry::default();
        reg.park("id1", state("alice@x/phone"));
        let bob = BareJid::parse("bob@x").expect("jid");
        let alice = BareJid::parse("alice@x").expect("jid");
        smol::block_on(async {
            assert!(reg.take("id1", &bob).await.is_none());
            assert!(reg.take("nope", &alice).await.is_none());
            assert!(reg.take("id1", &alice).await.is_some());
            assert!(reg.take("id1", &alice).await.is_none());
        });
    }

    #[test]
    fn a_stale_expiry_does_not_remove_a_reparked_session() {
        let reg = Registry::default();
        let first = reg.park("id1", state("alice@x/phone"));
        let alice = BareJid::parse("alice@x").expect("jid");
        let s = smol::block_on(reg.take("id1", &alice)).expect("taken");
        let second = reg.park("id1", s);
        assert!(reg.expire("id1", first).is_none());
        assert!(reg.expire("id1", second).is_some());
    }

    #[test]
    fn a_live_session_is_handed_over() {
        let reg = Arc::new(Registry::default());
        let alice = BareJid::parse("alice@x").expect("jid");
        let requests = reg.live("id1", alice.clone());
        smol::block_on(async {
            let live = smol::spawn(async move {
                let reply = requests.recv().await.expect("takeover request");
                let _ = reply.send(state("alice@x/phone")).await;
            });
            let got = reg.take("id1", &alice).await;
            assert_eq!(got.map(|s| s.me.to_string()), Some("alice@x/phone".into()));
            live.await;
        });
    }
}
