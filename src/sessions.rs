//! The table of connected client resources: for every bare JID, its bound resources with their
//! outbound queue and presence. The router reads it for every stanza, so it is sharded by bare
//! JID and its locks are held only for a lookup or an update, never across an `.await`.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::RwLock;

use crate::queue::Sender;

use crate::jid::{BareJid, FullJid};
use crate::stanza::StreamError;
use crate::xml::Element;

/// What the router hands a session's writer.
#[derive(Debug)]
pub enum Outbound {
    /// Boxed so that a queue block (31 slots) stays small for idle sessions.
    Stanza(Box<Element>),
    /// Close the stream with this error (e.g. `conflict` when another login takes the resource).
    Close(StreamError),
    /// Close the stream cleanly: the server is shutting down.
    Shutdown,
}

impl Outbound {
    pub fn stanza(el: Element) -> Outbound {
        Outbound::Stanza(Box::new(el))
    }
}

/// One bound resource, as the router sees it.
#[derive(Clone, Debug)]
pub struct Resource {
    pub jid: FullJid,
    /// Unique per connection: a resource name can be taken over by a new connection, and the
    /// old one's late unbind must not remove the new one.
    pub conn: u64,
    pub tx: Sender<Outbound>,
    /// Sent initial presence and not yet unavailable (RFC 6121 §4.2 "available resource").
    pub available: bool,
    pub priority: i8,
    /// The last available presence broadcast, answered to probes from contacts.
    pub presence: Option<Element>,
    /// Asked for the roster, so it gets roster pushes (RFC 6121 §2.1.6 "interested resource").
    pub interested: bool,
    /// Enabled XEP-0280 message carbons.
    pub carbons: bool,
    /// The client can't see stanzas now: its connection dropped and the session waits for
    /// resumption, or it said it is inactive (CSI). Push notifications (XEP-0357) wake it.
    pub asleep: bool,
}

/// A queue that grows past this many undelivered stanzas belongs to a client that stopped
/// reading; it is disconnected rather than allowed to eat memory.
pub const MAX_QUEUE: usize = 4096;

type Shard = RwLock<HashMap<BareJid, Vec<Resource>>>;

pub struct Sessions {
    shards: Box<[Shard]>,
    hasher: RandomState,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new()
    }
}

impl Sessions {
    pub fn new() -> Sessions {
        let shards = (0..64).map(|_| RwLock::new(HashMap::new())).collect();
        Sessions {
            shards,
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, bare: &BareJid) -> &Shard {
        let i = (self.hasher.hash_one(bare) as usize) % self.shards.len();
        &self.shards[i]
    }

    /// Binds a resource. A resource already bound by another connection is replaced (RFC 6120
    /// §7.7.2.2 "override"); its entry is returned so the caller can close that stream.
    pub fn bind(&self, jid: FullJid, conn: u64, tx: Sender<Outbound>) -> Option<Resource> {
        let bare = jid.to_bare();
        let mut map = write(self.shard(&bare));
        // Most accounts have one resource: a Vec's default first growth would hold four.
        let list = map.entry(bare).or_insert_with(|| Vec::with_capacity(1));
        let old = list
            .iter()
            .position(|r| r.jid == jid)
            .map(|i| list.swap_remove(i));
        list.push(Resource {
            jid,
            conn,
            tx,
            available: false,
            priority: 0,
            presence: None,
            interested: false,
            carbons: false,
            asleep: false,
        });
        old
    }

    /// Removes the resource if it still belongs to `conn`; returns the removed entry.
    pub fn unbind(&self, jid: &FullJid, conn: u64) -> Option<Resource> {
        let bare = jid.to_bare();
        let mut map = write(self.shard(&bare));
        let list = map.get_mut(&bare)?;
        let i = list.iter().position(|r| r.jid == *jid && r.conn == conn)?;
        let removed = list.swap_remove(i);
        if list.is_empty() {
            map.remove(&bare);
        }
        Some(removed)
    }

    /// Applies `f` to the resource's entry if it is still bound by `conn`.
    pub fn update<R>(
        &self,
        jid: &FullJid,
        conn: u64,
        f: impl FnOnce(&mut Resource) -> R,
    ) -> Option<R> {
        let bare = jid.to_bare();
        let mut map = write(self.shard(&bare));
        let r = map
            .get_mut(&bare)?
            .iter_mut()
            .find(|r| r.jid == *jid && r.conn == conn)?;
        Some(f(r))
    }

    /// Marks the resource as interested in roster pushes (it requested the roster).
    pub fn set_interested(&self, jid: &FullJid) {
        self.with_resource(jid, |r| r.interested = true);
    }

    /// Marks the resource asleep (parked or CSI-inactive) or awake.
    pub fn set_asleep(&self, jid: &FullJid, asleep: bool) {
        self.with_resource(jid, |r| r.asleep = asleep);
    }

    /// Turns XEP-0280 carbons on or off for the resource.
    pub fn set_carbons(&self, jid: &FullJid, on: bool) {
        self.with_resource(jid, |r| r.carbons = on);
    }

    fn with_resource(&self, jid: &FullJid, f: impl FnOnce(&mut Resource)) {
        let bare = jid.to_bare();
        if let Some(r) = write(self.shard(&bare))
            .get_mut(&bare)
            .and_then(|l| l.iter_mut().find(|r| r.jid == *jid))
        {
            f(r);
        }
    }

    /// A snapshot of all resources of an account (cloned, so no lock outlives the call).
    pub fn resources(&self, bare: &BareJid) -> Vec<Resource> {
        read(self.shard(bare))
            .get(bare)
            .cloned()
            .unwrap_or_default()
    }

    pub fn resource(&self, jid: &FullJid) -> Option<Resource> {
        let bare = jid.to_bare();
        read(self.shard(&bare))
            .get(&bare)?
            .iter()
            .find(|r| r.jid == *jid)
            .cloned()
    }

    /// Whether the account has any bound resource (for XEP-0012 "online now").
    pub fn is_online(&self, bare: &BareJid) -> bool {
        read(self.shard(bare))
            .get(bare)
            .is_some_and(|l| !l.is_empty())
    }

    /// Every bound resource's queue, for shutdown and announcements.
    pub fn all(&self) -> Vec<Resource> {
        self.shards
            .iter()
            .flat_map(|s| read(s).values().flatten().cloned().collect::<Vec<_>>())
            .collect()
    }

    pub fn count(&self) -> usize {
        self.shards
            .iter()
            .map(|s| read(s).values().map(Vec::len).sum::<usize>())
            .sum()
    }
}

/// Where each client connection came from and since when, by connection id: what the web
/// admin shows for a session. Kept beside the table rather than in `Resource`, because a
/// resumed session moves to a new connection (and so a new origin) without rebinding.
#[derive(Default)]
pub struct Origins {
    map: std::sync::Mutex<HashMap<u64, Origin>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    pub peer: std::net::SocketAddr,
    /// Unix seconds when the connection was accepted.
    pub since: u64,
}

/// Removes a connection's origin when the connection ends.
pub struct OriginGuard<'a> {
    origins: &'a Origins,
    conn: u64,
}

impl Origins {
    pub fn register(&self, conn: u64, peer: std::net::SocketAddr) -> OriginGuard<'_> {
        let since = crate::time::now_unix();
        lock(&self.map).insert(conn, Origin { peer, since });
        OriginGuard {
            origins: self,
            conn,
        }
    }

    pub fn get(&self, conn: u64) -> Option<Origin> {
        lock(&self.map).get(&conn).copied()
    }
}

impl Drop for OriginGuard<'_> {
    fn drop(&mut self) {
        lock(&self.origins.map).remove(&self.conn);
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Queues a stanza for a resource. A full queue means the client stopped reading: it is told
/// to go away, and the stanza counts as not delivered (`false`) so the caller can fall back.
pub fn send(r: &Resource, out: Outbound) -> bool {
    if r.tx.len() >= MAX_QUEUE {
        log::warn!(
            "c2s {}: outbound queue full, disconnecting a client that stopped reading",
            r.jid
        );
        let _ = r.tx.try_send(Outbound::Close(StreamError::PolicyViolation));
        r.tx.close();
        return false;
    }
    r.tx.try_send(out).is_ok()
}

// A poisoned lock means a panic happened while the table was being changed; each change is a
// single Vec/HashMap operation that leaves it consistent, so carrying on is safe.
fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}
