//! XEP-0045 Multi-User Chat at `conference.DOMAIN`, the I/O side: the rooms in memory, their
//! persistence, the room archive (XEP-0313 on the room) and delivery. The decisions are the
//! pure room engine's (`crate::muc`); this module feeds it stanzas and performs its actions.
//!
//! Every stanza to the service's domain arrives here, from local users (router, presence),
//! from other servers and from components alike (`handle`). What a room sends goes out
//! through `router::route_from_remote`, as if from another server: local users get the
//! usual inbound processing (a PM is archived, an invitation to an offline user is stored),
//! and users elsewhere are reached over s2s from the conference domain.
//!
//! *Invariant:* the room table's lock is never held across an `.await`; store writes and
//! deliveries happen after the room decided.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::config::RoomCreation;
use crate::jid::{BareJid, FullJid, Jid};
use crate::muc::room::Ctx;
use crate::muc::{Action, Room, RoomConfig, NS_MUC};
use crate::router;
use crate::server::Server;
use crate::stanza::mam::{self as p, NS_MAM};
use crate::stanza::{self, ns, Condition, Kind, StanzaError};
use crate::xml::Element;

/// The service's rooms, loaded from the store on first use.
#[derive(Default)]
pub struct State {
    rooms: Mutex<HashMap<BareJid, Room>>,
    /// The occupant-id key, set when the rooms are loaded.
    key: smol::lock::OnceCell<[u8; 32]>,
    /// The server admins, parsed once: owners of every room.
    admins: std::sync::OnceLock<Vec<BareJid>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The service's domain, when the service is on.
pub fn service_domain(srv: &Server) -> Option<String> {
    srv.config
        .muc
        .enabled
        .then(|| format!("conference.{}", srv.domain()))
}

pub fn is_service(srv: &Server, domain: &str) -> bool {
    srv.config.muc.enabled
        && domain.len() == "conference.".len() + srv.domain().len()
        && domain.starts_with("conference.")
        && domain.ends_with(srv.domain())
}

/// Loads the persistent rooms once, and the occupant-id key.
async fn key(srv: &Server) -> [u8; 32] {
    *srv.muc
        .key
        .get_or_init(|| async {
            let key = occupant_key(srv);
            let defaults = RoomConfig::new(srv.config.muc.history_length);
            let stored = match srv.store.muc_rooms().await {
                Ok(r) => r,
                Err(e) => {
                    log::error!("muc: cannot read the rooms from the store: {e}");
                    Vec::new()
                }
            };
            let mut rooms = Vec::new();
            for (jid, bytes) in stored {
                let el = std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(|s| Element::parse(s).ok());
                match (BareJid::parse(&jid), el) {
                    (Ok(j), Some(el)) => {
                        let mut room = Room::from_element(j.clone(), &el, defaults.clone(), key);
                        if room.config.archiving {
                            room.restore_history(recent(srv, &j, room.config.history_length).await);
                        }
                        rooms.push((j, room));
                    }
                    _ => log::error!("muc: stored room {jid} is unreadable; skipping it"),
                }
            }
            if !rooms.is_empty() {
                log::info!("muc: {} persistent rooms loaded", rooms.len());
            }
            lock(&srv.muc.rooms).extend(rooms);
            key
        })
        .await
}

fn occupant_key(srv: &Server) -> [u8; 32] {
    let hex = crate::secrets::load_or_create(&srv.config.data_dir, "muc.secret", |raw| {
        raw.iter().map(|b| format!("{b:02x}")).collect()
    });
    let mut key = [0u8; 32];
    match hex {
        Ok(h) => {
            for (i, k) in key.iter_mut().enumerate() {
                *k = h
                    .get(2 * i..2 * i + 2)
                    .and_then(|b| u8::from_str_radix(b, 16).ok())
                    .unwrap_or(0);
            }
        }
        Err(e) => {
            // Occupant ids then change at each restart; rooms still work.
            log::error!("muc: cannot keep the occupant id key in the data directory: {e}");
            use ring::rand::SecureRandom as _;
            let _ = ring::rand::SystemRandom::new().fill(&mut key);
        }
    }
    key
}

/// The last `n` archived messages of a room, oldest first, as (unix seconds, stanza).
async fn recent(srv: &Server, room: &BareJid, n: usize) -> Vec<(u64, u64, Element)> {
    if n == 0 {
        return Vec::new();
    }
    let q = crate::store::ArchiveQuery {
        lo: 0,
        hi: u64::MAX,
        with: None,
        ids: None,
        max: n,
        backwards: true,
        skip: 0,
        must_exist: Vec::new(),
        count: false,
    };
    match srv.store.mam_query(room.as_str(), q).await {
        Ok(page) => page
            .entries
            .into_iter()
            .filter_map(|e| {
                let el = std::str::from_utf8(&e.stanza)
                    .ok()
                    .and_then(|s| Element::parse(s).ok())?;
                Some((e.id, e.id / 1_000_000, el))
            })
            .collect(),
        Err(e) => {
            log::error!("muc: cannot read the history of {room}: {e}");
            Vec::new()
        }
    }
}

fn ctx(srv: &Server) -> Ctx<'_> {
    Ctx {
        now: crate::time::now_unix(),
        admins: admins(srv),
        max_history: srv.config.muc.max_history,
    }
}

fn admins(srv: &Server) -> &[BareJid] {
    srv.muc.admins.get_or_init(|| {
        srv.config
            .admins
            .iter()
            .filter_map(|a| BareJid::parse(a).ok())
            .collect()
    })
}

/// Whether a groupchat message belongs in the room's archive: what has content, as for user
/// archives (chat states alone do not), unless the sender asked not to store it.
fn archivable(msg: &Element) -> bool {
    if msg.has_child("no-store", ns::HINTS) || msg.has_child("no-permanent-store", ns::HINTS) {
        return false;
    }
    msg.children().any(|c| {
        c.is("body", ns::CLIENT)
            || c.is("encrypted", "eu.siacs.conversations.axolotl")
            || c.is("encrypted", "urn:xmpp:omemo:2")
    })
}

/// A stanza to the service's domain from `from` (a local session, another server's user, a
/// component).
pub async fn handle(srv: &Server, from: &Jid, stanza: Element) {
    let Some(kind) = Kind::of(&stanza) else {
        return;
    };
    let to = match stanza::jid_attr(&stanza, "to") {
        Ok(Some(to)) => to,
        _ => return router::bounce(srv, &stanza, Condition::JidMalformed.into()),
    };
    let key = key(srv).await;
    if to.node().is_none() {
        return to_service(srv, from, kind, stanza);
    }
    let room_jid = to.to_bare();
    let nick = to.resource().map(str::to_string);
    let ctx = ctx(srv);
    // Room MAM needs the store: answered outside the engine.
    if kind == Kind::Iq && nick.is_none() && stanza.first_child().is_some_and(|c| c.ns() == NS_MAM)
    {
        return room_mam(srv, &ctx, from, &room_jid, stanza).await;
    }
    let (actions, created) = decide(srv, &ctx, key, from, kind, &to, nick.as_deref(), stanza);
    if created {
        // An archive left by a temporary room of the same name (the server stopped while it
        // existed) is not the new room's history.
        if let Err(e) = srv.store.muc_room_delete(room_jid.as_str()).await {
            log::error!("muc: cannot clear old data of {room_jid}: {e}");
        }
    }
    perform(srv, &ctx, &room_jid, actions).await;
}

/// The room's answer to one stanza (creating the room for a join, then `true`), under the
/// rooms' lock.
#[allow(clippy::too_many_arguments)]
fn decide(
    srv: &Server,
    ctx: &Ctx,
    key: [u8; 32],
    from: &Jid,
    kind: Kind,
    to: &Jid,
    nick: Option<&str>,
    stanza: Element,
) -> (Vec<Action>, bool) {
    let room_jid = to.to_bare();
    let mut rooms = lock(&srv.muc.rooms);
    let created = !rooms.contains_key(&room_jid);
    if created {
        // Only a join creates a room.
        let joining = kind == Kind::Presence && stanza.attr("type").is_none() && nick.is_some();
        if !joining {
            if stanza::must_not_answer(&stanza) || kind == Kind::Presence {
                return (Vec::new(), false);
            }
            let e = StanzaError::new(Condition::ItemNotFound).with_text("no such room");
            return (vec![Action::Send(stanza::error_reply(&stanza, &e))], false);
        }
        if let Err(e) = may_create(srv, from, to.node().unwrap_or_default()) {
            let mut reply = stanza::error_reply(&stanza, &e);
            reply.retain_children(|c| c.name() == "error");
            reply.push_child(Element::new("x", NS_MUC));
            return (vec![Action::Send(reply)], false);
        }
        // XEP-0045 §10.1.2: `<x xmlns='…muc'/>` asks for a locked room to configure;
        // without it (old clients) the room is open at once.
        let locked = stanza.has_child("x", NS_MUC);
        let muc = &srv.config.muc;
        let config = RoomConfig::new(muc.history_length.min(muc.max_history));
        let room = Room::create(room_jid.clone(), config, from.to_bare(), locked, key);
        if !locked {
            log::info!(
                "muc: room {room_jid} created by {} (instant)",
                from.to_bare()
            );
        }
        rooms.insert(room_jid.clone(), room);
    }
    let Some(room) = rooms.get_mut(&room_jid) else {
        return (Vec::new(), false);
    };
    let actions = match kind {
        Kind::Presence => match nick {
            Some(n) => room.presence(ctx, from, n, stanza),
            None if stanza.attr("type").is_none() => {
                let mut e = stanza::error_reply(&stanza, &Condition::JidMalformed.into());
                e.push_child(Element::new("x", NS_MUC));
                vec![Action::Send(e)]
            }
            None => Vec::new(),
        },
        Kind::Message => room.message(ctx, from, nick, stanza),
        Kind::Iq => room.iq(ctx, from, nick, stanza),
    };
    (actions, created)
}

/// Rooms and occupants of this service that a session leaves when it ends without saying so.
pub async fn session_ended(srv: &Server, me: &FullJid) {
    if srv.muc.key.get().is_none() {
        return; // nothing loaded, nobody joined
    }
    let jid = Jid::from(me.clone());
    let ctx = ctx(srv);
    let touched: Vec<(BareJid, Vec<Action>)> = {
        let mut rooms = lock(&srv.muc.rooms);
        rooms
            .iter_mut()
            .filter(|(_, r)| r.has_session(&jid))
            .map(|(j, r)| (j.clone(), r.session_gone(&ctx, &jid)))
            .collect()
    };
    for (room, actions) in touched {
        perform(srv, &ctx, &room, actions).await;
    }
}

fn may_create(srv: &Server, from: &Jid, node: &str) -> Result<(), StanzaError> {
    if crate::jid::prepare_localpart(node).is_err() {
        return Err(Condition::JidMalformed.into());
    }
    let bare = from.to_bare();
    let allowed = match srv.config.muc.restrict_room_creation {
        RoomCreation::Anyone => true,
        RoomCreation::Local => srv.is_local_user(&bare),
        RoomCreation::Admins => srv.config.admins.iter().any(|a| a == bare.as_str()),
    };
    if allowed {
        Ok(())
    } else {
        Err(StanzaError::new(Condition::NotAllowed).with_text("you may not create rooms here"))
    }
}

async fn perform(srv: &Server, ctx: &Ctx<'_>, room_jid: &BareJid, actions: Vec<Action>) {
    let mut save = false;
    let mut destroyed = false;
    for a in actions {
        match a {
            Action::Send(el) => send(srv, el).await,
            Action::Groupchat(msg) => groupchat(srv, ctx, room_jid, msg).await,
            Action::Save => save = true,
            Action::Destroyed => destroyed = true,
            Action::Log(line) => log::info!("{line}"),
        }
    }
    if destroyed {
        let was_stored = lock(&srv.muc.rooms)
            .remove(room_jid)
            .is_some_and(|r| r.config.persistent || r.config.archiving);
        if was_stored {
            if let Err(e) = srv.store.muc_room_delete(room_jid.as_str()).await {
                log::error!("muc: cannot delete room {room_jid} from the store: {e}");
            }
        }
        return;
    }
    // A room is stored while persistent; one made temporary is removed from the store.
    let stored = {
        let rooms = lock(&srv.muc.rooms);
        rooms
            .get(room_jid)
            .map(|r| (r.config.persistent && !r.locked, r.to_element()))
    };
    if let (true, Some((persistent, el))) = (save, stored) {
        let result = if persistent {
            srv.store
                .muc_room_set(room_jid.as_str(), el.to_bytes_in(""))
                .await
        } else {
            srv.store.muc_room_unset(room_jid.as_str()).await
        };
        if let Err(e) = result {
            log::error!("muc: cannot store room {room_jid}: {e}");
        }
    }
}

/// Archives an accepted groupchat message (when the room archives), then delivers it.
async fn groupchat(srv: &Server, ctx: &Ctx<'_>, room_jid: &BareJid, msg: Element) {
    let archiving = lock(&srv.muc.rooms)
        .get(room_jid)
        .is_some_and(|r| r.config.archiving);
    let mut id = None;
    if archiving && archivable(&msg) {
        let with = msg.attr("from").unwrap_or_default().to_string();
        match srv
            .store
            .mam_append_room(room_jid.as_str(), &with, msg.to_bytes_in(""))
            .await
        {
            Ok(i) => id = Some(i),
            Err(e) => log::error!("muc: cannot archive a message in {room_jid}: {e}"),
        }
    }
    let actions = match lock(&srv.muc.rooms).get_mut(room_jid) {
        Some(room) => room.broadcast(ctx, msg, id),
        None => return,
    };
    for a in actions {
        if let Action::Send(el) = a {
            send(srv, el).await;
        }
    }
}

/// Delivers what a room sends, as a stanza from another server would be.
async fn send(srv: &Server, el: Element) {
    let Some(from) = el.attr("from").and_then(|f| Jid::parse(f).ok()) else {
        return;
    };
    Box::pin(router::route_from_remote(srv, &from, el)).await;
}

/// Stanzas to the service's own JID: disco (info: the MUC feature; items: public rooms), ping.
fn to_service(srv: &Server, from: &Jid, kind: Kind, stanza: Element) {
    let _ = from;
    if kind != Kind::Iq || stanza::must_not_answer(&stanza) {
        if kind == Kind::Message && stanza.attr("type") != Some("error") {
            router::bounce(srv, &stanza, Condition::ServiceUnavailable.into());
        }
        return;
    }
    let get = stanza.attr("type") == Some("get");
    let payload = stanza.first_child();
    let reply = match payload.map(|c| (c.name(), c.ns())) {
        Some(("query", ns::DISCO_INFO)) if get => {
            let mut q = Element::new("query", ns::DISCO_INFO).with_child(
                Element::new("identity", ns::DISCO_INFO)
                    .with_attr("category", "conference")
                    .with_attr("type", "text")
                    .with_attr("name", "Group chats"),
            );
            for f in [
                NS_MUC,
                ns::DISCO_INFO,
                ns::DISCO_ITEMS,
                ns::PING,
                crate::muc::NS_OCCUPANT_ID,
                NS_MAM,
            ] {
                q.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", f));
            }
            Ok(Some(q))
        }
        Some(("query", ns::DISCO_ITEMS)) if get => {
            let mut q = Element::new("query", ns::DISCO_ITEMS);
            let rooms = lock(&srv.muc.rooms);
            let mut listed: Vec<_> = rooms.values().filter(|r| r.is_listed()).collect();
            listed.sort_by(|a, b| a.jid.cmp(&b.jid));
            for r in listed {
                let mut item =
                    Element::new("item", ns::DISCO_ITEMS).with_attr("jid", r.jid.as_str());
                if !r.config.name.is_empty() {
                    item.set_attr("name", r.config.name.as_str());
                }
                q.push_child(item);
            }
            Ok(Some(q))
        }
        Some(("ping", ns::PING)) if get => Ok(None),
        _ => Err(StanzaError::from(Condition::ServiceUnavailable)),
    };
    match reply {
        Ok(payload) => router::deliver_reply(srv, stanza::iq_result(&stanza, payload)),
        Err(e) => router::bounce(srv, &stanza, e),
    }
}

/// XEP-0313 on the room: the archive of a room one may enter, results from the room's JID.
async fn room_mam(srv: &Server, ctx: &Ctx<'_>, from: &Jid, room_jid: &BareJid, iq: Element) {
    let allowed = {
        let rooms = lock(&srv.muc.rooms);
        rooms
            .get(room_jid)
            .map(|r| r.config.archiving && r.may_read_archive(ctx, from))
    };
    let err = match allowed {
        None => Some(StanzaError::new(Condition::ItemNotFound).with_text("no such room")),
        Some(false) => Some(StanzaError::from(Condition::Forbidden)),
        Some(true) => None,
    };
    if let Some(e) = err {
        return router::bounce(srv, &iq, e);
    }
    let Some(payload) = iq.first_child() else {
        return router::bounce(srv, &iq, Condition::BadRequest.into());
    };
    match (payload.name(), iq.attr("type")) {
        ("query", Some("get")) => {
            let reply = stanza::iq_result(&iq, Some(p::query_form()));
            return send(srv, reply).await;
        }
        ("query", Some("set")) => {}
        ("metadata", Some("get")) => {
            let reply = match crate::services::mam::metadata(srv, room_jid).await {
                Ok(md) => stanza::iq_result(&iq, Some(md)),
                Err(e) => stanza::error_reply(&iq, &e),
            };
            return send(srv, reply).await;
        }
        _ => return router::bounce(srv, &iq, Condition::FeatureNotImplemented.into()),
    }
    let q = match p::parse_query(payload) {
        Ok(q) => q,
        Err(p::QueryError::ItemNotFound) => {
            return router::bounce(srv, &iq, Condition::ItemNotFound.into())
        }
        Err(p::QueryError::BadRequest(t)) => {
            return router::bounce(
                srv,
                &iq,
                StanzaError::new(Condition::BadRequest).with_text(t),
            )
        }
    };
    let page = match srv
        .store
        .mam_query(room_jid.as_str(), crate::services::mam::archive_query(&q))
        .await
    {
        Ok(page) => page,
        Err(crate::store::StoreError::NotFound) => {
            return router::bounce(srv, &iq, Condition::ItemNotFound.into())
        }
        Err(e) => {
            log::error!("muc: archive query on {room_jid} failed: {e}");
            return router::bounce(srv, &iq, Condition::InternalServerError.into());
        }
    };
    let mut entries = page.entries;
    if q.flip_page {
        entries.reverse();
    }
    let first_last = match (entries.first(), entries.last()) {
        (Some(f), Some(l)) => Some((f.id, l.id)),
        _ => None,
    };
    for e in entries {
        let Some(mut original) = std::str::from_utf8(&e.stanza)
            .ok()
            .and_then(|s| Element::parse(s).ok())
        else {
            continue;
        };
        original.remove_attr("to");
        let stamp = crate::time::rfc3339_micros(e.id);
        let mut msg =
            p::result_message(from.as_str(), q.queryid.as_deref(), e.id, &stamp, original);
        msg.set_attr("from", room_jid.as_str());
        send(srv, msg).await;
    }
    let fin = p::fin(page.complete, first_last, page.count);
    send(srv, stanza::iq_result(&iq, Some(fin))).await;
}
