//! One room: its occupants and the XEP-0045 use cases as state changes plus [`Action`]s.
//!
//! An occupant is one nick held by one bare JID, possibly from several sessions (a phone and
//! a laptop joined under the same nick, as Prosody allows); each session gets every stanza.
//! Real JIDs are shown to moderators, or to everyone when `whois` is `anyone`.

use std::collections::{BTreeMap, VecDeque};

use super::config::{form_value, result_field, AllowPm, RoomConfig, Whois};
use super::{
    default_role, may_set_affiliation, may_set_role, Affiliation, Refusal, Role, NS_ADMIN, NS_MUC,
    NS_OCCUPANT_ID, NS_OWNER, NS_REQUEST, NS_ROOMINFO, NS_SELF_PING, NS_STABLE_ID, NS_USER,
};
use crate::jid::{BareJid, Jid};
use crate::stanza::mam::{encode_id, NS_MAM, NS_SID};
use crate::stanza::{self, ns, Condition, StanzaError};
use crate::xml::Element;

/// What the room asks its driver to do.
#[derive(Debug)]
pub enum Action {
    /// Deliver this stanza (it has `from` and `to`).
    Send(Element),
    /// A groupchat message was accepted (`from` is the occupant JID, no `to`): archive it when
    /// the room archives, then hand it to [`Room::broadcast`] with the archive id.
    Groupchat(Element),
    /// Persistent state (configuration, affiliations, subject) changed: store the room.
    Save,
    /// The room is gone (destroyed, or a temporary room's last occupant left).
    Destroyed,
    /// A line for the server log (never message bodies).
    Log(String),
}

/// What the room needs from its surroundings for one stanza.
pub struct Ctx<'a> {
    /// Unix seconds.
    pub now: u64,
    /// Server admins: owners of every room (as in Prosody).
    pub admins: &'a [BareJid],
    /// The service's cap on `history_length`.
    pub max_history: usize,
}

struct Session {
    jid: Jid,
    /// The session's last presence, as the client sent it (MUC payloads removed).
    presence: Element,
}

struct Occupant {
    nick: String,
    bare: BareJid,
    role: Role,
    sessions: Vec<Session>,
}

struct HistoryEntry {
    /// From the occupant JID, with stanza-id and occupant-id, without `to`.
    stanza: Element,
    at: u64,
    chars: usize,
}

/// The `<history/>` a joining client asked for (XEP-0045 §7.2.15).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryRequest {
    pub max_stanzas: Option<usize>,
    pub max_chars: Option<usize>,
    pub seconds: Option<u64>,
    pub since: Option<u64>,
}

impl HistoryRequest {
    pub fn parse(x: Option<&Element>) -> HistoryRequest {
        let Some(h) = x.and_then(|x| x.get_child("history", NS_MUC)) else {
            return HistoryRequest::default();
        };
        let n = |k: &str| h.attr(k).and_then(|v| v.trim().parse().ok());
        HistoryRequest {
            max_stanzas: n("maxstanzas"),
            max_chars: n("maxchars"),
            seconds: n("seconds").map(|s: usize| s as u64),
            since: h.attr("since").and_then(crate::time::parse_datetime),
        }
    }
}

/// Which of the last history entries (given as (time, chars), oldest first) a joining
/// occupant gets: the index of the first one sent. Every limit applies at once.
pub fn select_history(
    entries: &[(u64, usize)],
    req: &HistoryRequest,
    keep: usize,
    now: u64,
) -> usize {
    let max = req.max_stanzas.unwrap_or(keep).min(keep);
    let mut chars = 0usize;
    let mut start = entries.len();
    for (i, (at, n)) in entries.iter().enumerate().rev() {
        if entries.len() - i > max {
            break;
        }
        if req.seconds.is_some_and(|s| *at + s < now) || req.since.is_some_and(|s| *at < s) {
            break;
        }
        chars += n;
        if req.max_chars.is_some_and(|m| chars > m) {
            break;
        }
        start = i;
    }
    start
}

pub struct Room {
    pub jid: BareJid,
    pub config: RoomConfig,
    /// Every affiliation but `none`.
    affiliations: BTreeMap<BareJid, Affiliation>,
    /// (text, nick of who set it).
    subject: Option<(String, String)>,
    occupants: Vec<Occupant>,
    history: VecDeque<HistoryEntry>,
    /// Created with `<x xmlns='…muc'/>` and not configured yet: only the owner may enter
    /// (XEP-0045 §10.1.1).
    pub locked: bool,
    /// The first join after creation gets status 201.
    fresh: bool,
    /// The key of occupant ids (XEP-0421), the service's.
    key: [u8; 32],
}

impl Room {
    /// A new room owned by `creator`.
    pub fn create(
        jid: BareJid,
        config: RoomConfig,
        creator: BareJid,
        locked: bool,
        key: [u8; 32],
    ) -> Room {
        let mut room = Room::empty(jid, config, key);
        room.affiliations.insert(creator, Affiliation::Owner);
        room.locked = locked;
        room.fresh = true;
        room
    }

    fn empty(jid: BareJid, config: RoomConfig, key: [u8; 32]) -> Room {
        Room {
            jid,
            config,
            affiliations: BTreeMap::new(),
            subject: None,
            occupants: Vec::new(),
            history: VecDeque::new(),
            locked: false,
            fresh: false,
            key,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.occupants.is_empty()
    }

    pub fn occupant_count(&self) -> usize {
        self.occupants.len()
    }

    /// Listed in the service's disco#items.
    pub fn is_listed(&self) -> bool {
        self.config.public && !self.locked
    }

    pub fn affiliation(&self, ctx: &Ctx, bare: &BareJid) -> Affiliation {
        if ctx.admins.contains(bare) {
            return Affiliation::Owner;
        }
        self.affiliations
            .get(bare)
            .copied()
            .unwrap_or(Affiliation::None)
    }

    /// Whether `jid` (a session) is in the room.
    pub fn has_session(&self, jid: &Jid) -> bool {
        self.occupant_of(jid).is_some()
    }

    fn occupant_of(&self, jid: &Jid) -> Option<usize> {
        self.occupants
            .iter()
            .position(|o| o.sessions.iter().any(|s| s.jid == *jid))
    }

    fn by_nick(&self, nick: &str) -> Option<usize> {
        self.occupants.iter().position(|o| o.nick == nick)
    }

    fn occupant_jid(&self, nick: &str) -> String {
        format!("{}/{nick}", self.jid)
    }

    /// XEP-0421: stable per room and real bare JID, unguessable without the service's key.
    pub fn occupant_id(&self, bare: &BareJid) -> String {
        use base64::Engine as _;
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.key);
        let mut ctx = ring::hmac::Context::with_key(&key);
        ctx.update(self.jid.as_str().as_bytes());
        ctx.update(&[0]);
        ctx.update(bare.as_str().as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&ctx.sign().as_ref()[..18])
    }

    /// May `from` read the room's archive (XEP-0313 on a MUC)? Same rule as entering: not
    /// outcasts, only members in a members-only room.
    pub fn may_read_archive(&self, ctx: &Ctx, from: &Jid) -> bool {
        let aff = self.affiliation(ctx, &from.to_bare());
        if self.locked && aff != Affiliation::Owner {
            return false;
        }
        aff > Affiliation::Outcast && (!self.config.members_only || aff >= Affiliation::Member)
    }

    // ----- presence -----

    /// Presence from session `from` to `ROOM/nick`.
    pub fn presence(&mut self, ctx: &Ctx, from: &Jid, nick: &str, stanza: Element) -> Vec<Action> {
        let mut out = Vec::new();
        match stanza.attr("type") {
            None => self.available(ctx, from, nick, stanza, &mut out),
            Some("unavailable") => {
                if let Some(i) = self.occupant_of(from) {
                    let status = stanza.get_child("status", ns::CLIENT).cloned();
                    self.leave_session(ctx, i, from, &[], status, &mut out);
                }
            }
            Some("error") => self.ghost(ctx, from, &stanza, &mut out),
            // Subscriptions and probes mean nothing to a room.
            Some(_) => {}
        }
        out
    }

    fn available(
        &mut self,
        ctx: &Ctx,
        from: &Jid,
        nick: &str,
        stanza: Element,
        out: &mut Vec<Action>,
    ) {
        let presence = clean_presence(&stanza);
        if let Some(i) = self.occupant_of(from) {
            if self.occupants[i].nick == nick {
                if let Some(s) = self.occupants[i]
                    .sessions
                    .iter_mut()
                    .find(|s| s.jid == *from)
                {
                    s.presence = presence;
                }
                self.broadcast_presence(ctx, i, &[], out);
            } else {
                self.change_nick(ctx, i, from, nick, &stanza, out);
            }
            return;
        }
        if let Err(e) = self.may_enter(ctx, from, nick, &stanza) {
            out.push(Action::Send(error_presence(&stanza, e)));
            return;
        }
        let bare = from.to_bare();
        let aff = self.affiliation(ctx, &bare);
        let session = Session {
            jid: from.clone(),
            presence,
        };
        let i = match self.by_nick(nick) {
            // Another session of the same person under the same nick.
            Some(i) => {
                self.occupants[i].sessions.push(session);
                i
            }
            None => {
                self.occupants.push(Occupant {
                    nick: nick.to_string(),
                    bare,
                    role: default_role(aff, self.config.moderated),
                    sessions: vec![session],
                });
                self.occupants.len() - 1
            }
        };
        // Everyone else, to the newcomer first; then the newcomer to everyone; its own
        // presence last (status 110), which is how clients know the join is complete.
        for (j, o) in self.occupants.iter().enumerate() {
            if j != i {
                out.push(Action::Send(self.presence_of(
                    ctx,
                    o,
                    from,
                    false,
                    &[],
                    None,
                )));
            }
        }
        let mut codes = vec![110];
        if self.config.whois == Whois::Anyone {
            codes.push(100);
        }
        if self.config.archiving {
            codes.push(170);
        }
        if std::mem::take(&mut self.fresh) {
            codes.push(201);
        }
        let o = &self.occupants[i];
        for (j, other) in self.occupants.iter().enumerate() {
            for s in &other.sessions {
                if j == i && s.jid == *from {
                    continue;
                }
                let own = j == i;
                let p = self.presence_of(ctx, o, &s.jid, own, if own { &[110] } else { &[] }, None);
                out.push(Action::Send(p));
            }
        }
        out.push(Action::Send(
            self.presence_of(ctx, o, from, true, &codes, None),
        ));
        let req = HistoryRequest::parse(stanza.get_child("x", NS_MUC));
        self.send_history(from, &req, ctx.now, out);
        out.push(Action::Send(self.subject_message(from)));
    }

    fn may_enter(
        &self,
        ctx: &Ctx,
        from: &Jid,
        nick: &str,
        stanza: &Element,
    ) -> Result<(), StanzaError> {
        let bare = from.to_bare();
        let aff = self.affiliation(ctx, &bare);
        if !from.is_full() {
            return Err(Condition::JidMalformed.into());
        }
        if self.locked && aff != Affiliation::Owner {
            return Err(StanzaError::new(Condition::ItemNotFound)
                .with_text("this room is being set up by its owner"));
        }
        if aff == Affiliation::Outcast {
            return Err(
                StanzaError::new(Condition::Forbidden).with_text("you are banned from this room")
            );
        }
        if self.config.members_only && aff < Affiliation::Member {
            return Err(StanzaError::new(Condition::RegistrationRequired)
                .with_text("this room is for members only"));
        }
        if let Some(pw) = &self.config.password {
            let given = stanza
                .get_child("x", NS_MUC)
                .and_then(|x| x.get_child("password", NS_MUC))
                .map(Element::text);
            if aff < Affiliation::Admin && given.as_deref() != Some(pw.as_str()) {
                return Err(StanzaError::new(Condition::NotAuthorized)
                    .with_text("this room needs a password"));
            }
        }
        match self.by_nick(nick) {
            Some(i) if self.occupants[i].bare != bare => {
                return Err(
                    StanzaError::new(Condition::Conflict).with_text("that nickname is taken")
                )
            }
            Some(_) => return Ok(()),
            None => {}
        }
        if self.config.max_users > 0
            && self.occupants.len() >= self.config.max_users
            && aff < Affiliation::Admin
        {
            return Err(
                StanzaError::new(Condition::ServiceUnavailable).with_text("this room is full")
            );
        }
        Ok(())
    }

    fn change_nick(
        &mut self,
        ctx: &Ctx,
        i: usize,
        from: &Jid,
        nick: &str,
        stanza: &Element,
        out: &mut Vec<Action>,
    ) {
        if self.by_nick(nick).is_some() {
            let err = StanzaError::new(Condition::Conflict).with_text("that nickname is taken");
            out.push(Action::Send(error_presence(stanza, err)));
            return;
        }
        // §7.6: unavailable with 303 and the new nick, then available under the new nick.
        // All of one occupant's sessions change together.
        let o = &self.occupants[i];
        for (j, other) in self.occupants.iter().enumerate() {
            for s in &other.sessions {
                let own = j == i;
                let codes: &[u16] = if own { &[303, 110] } else { &[303] };
                let mut p = self.presence_of(ctx, o, &s.jid, own, codes, None);
                p.set_attr("type", "unavailable");
                if let Some(item) = p
                    .get_child_mut("x", NS_USER)
                    .and_then(|x| x.get_child_mut("item", NS_USER))
                {
                    item.set_attr("nick", nick);
                }
                out.push(Action::Send(p));
            }
        }
        self.occupants[i].nick = nick.to_string();
        if let Some(s) = self.occupants[i]
            .sessions
            .iter_mut()
            .find(|s| s.jid == *from)
        {
            s.presence = clean_presence(stanza);
        }
        self.broadcast_presence(ctx, i, &[], out);
    }

    /// A session leaves (or is gone). `codes` are the extra status codes (kicked, ...).
    fn leave_session(
        &mut self,
        ctx: &Ctx,
        i: usize,
        from: &Jid,
        codes: &[u16],
        status: Option<Element>,
        out: &mut Vec<Action>,
    ) {
        let o = &self.occupants[i];
        let mut own: Vec<u16> = vec![110];
        own.extend_from_slice(codes);
        let mut p = self.presence_of(ctx, o, from, true, &own, None);
        p.set_attr("type", "unavailable");
        out.push(Action::Send(p));
        self.occupants[i].sessions.retain(|s| s.jid != *from);
        if self.occupants[i].sessions.is_empty() {
            let mut gone = self.occupants.remove(i);
            gone.role = Role::None;
            for other in &self.occupants {
                for s in &other.sessions {
                    let mut p = self.presence_of(ctx, &gone, &s.jid, false, codes, None);
                    p.set_attr("type", "unavailable");
                    if let Some(st) = &status {
                        p.push_child(st.clone());
                    }
                    out.push(Action::Send(p));
                }
            }
        }
        self.destroy_if_done(out);
    }

    /// Removes a whole occupant (kick, ban, removal from a members-only room), every session
    /// hearing `codes`; `actor`/`reason` go into the item.
    fn remove_occupant(
        &mut self,
        ctx: &Ctx,
        i: usize,
        codes: &[u16],
        actor: Option<&str>,
        reason: Option<&str>,
        out: &mut Vec<Action>,
    ) {
        let mut gone = self.occupants.remove(i);
        gone.role = Role::None;
        let mut extra = Vec::new();
        if let Some(a) = actor {
            extra.push(Element::new("actor", NS_USER).with_attr("nick", a));
        }
        if let Some(r) = reason {
            extra.push(Element::new("reason", NS_USER).with_text(r));
        }
        for s in &gone.sessions {
            let mut own = vec![110];
            own.extend_from_slice(codes);
            let mut p = self.presence_of(ctx, &gone, &s.jid, true, &own, Some(&extra));
            p.set_attr("type", "unavailable");
            out.push(Action::Send(p));
        }
        for other in &self.occupants {
            for s in &other.sessions {
                let mut p = self.presence_of(ctx, &gone, &s.jid, false, codes, Some(&extra));
                p.set_attr("type", "unavailable");
                out.push(Action::Send(p));
            }
        }
        self.destroy_if_done(out);
    }

    fn destroy_if_done(&mut self, out: &mut Vec<Action>) {
        if self.occupants.is_empty() && (!self.config.persistent || self.locked) {
            out.push(Action::Log(format!(
                "muc: room {} removed (empty, not persistent)",
                self.jid
            )));
            out.push(Action::Destroyed);
        }
    }

    /// A session of the room that errors is gone (XEP-0045 §18.1 "ghosts"; Prosody kicks
    /// on these conditions): it leaves with status 333.
    fn ghost(&mut self, ctx: &Ctx, from: &Jid, stanza: &Element, out: &mut Vec<Action>) {
        const GONE: &[&str] = &[
            "gone",
            "internal-server-error",
            "item-not-found",
            "jid-malformed",
            "recipient-unavailable",
            "redirect",
            "remote-server-not-found",
            "remote-server-timeout",
            "service-unavailable",
        ];
        let condition = stanza
            .get_child("error", ns::CLIENT)
            .and_then(|e| e.children().find(|c| c.ns() == ns::STANZAS_ERR))
            .map(|c| c.name().to_string());
        if !condition.as_deref().is_none_or(|c| GONE.contains(&c)) {
            return;
        }
        if let Some(i) = self.occupant_of(from) {
            out.push(Action::Log(format!(
                "muc: {from} left {} (its server answered {})",
                self.jid,
                condition.as_deref().unwrap_or("an error")
            )));
            self.leave_session(ctx, i, from, &[333], None, out);
        }
    }

    /// The session `jid` ended without leaving (disconnect): as if it had left.
    pub fn session_gone(&mut self, ctx: &Ctx, jid: &Jid) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(i) = self.occupant_of(jid) {
            self.leave_session(ctx, i, jid, &[], None, &mut out);
        }
        out
    }

    fn broadcast_presence(&self, ctx: &Ctx, i: usize, codes: &[u16], out: &mut Vec<Action>) {
        let o = &self.occupants[i];
        for (j, other) in self.occupants.iter().enumerate() {
            for s in &other.sessions {
                let own = j == i;
                let mut c = codes.to_vec();
                if own {
                    c.insert(0, 110);
                }
                out.push(Action::Send(
                    self.presence_of(ctx, o, &s.jid, own, &c, None),
                ));
            }
        }
    }

    fn can_see_jids(&self, viewer: &Jid) -> bool {
        self.config.whois == Whois::Anyone
            || self
                .occupant_of(viewer)
                .is_some_and(|i| self.occupants[i].role == Role::Moderator)
    }

    /// `o`'s presence as `to` sees it.
    fn presence_of(
        &self,
        ctx: &Ctx,
        o: &Occupant,
        to: &Jid,
        own: bool,
        codes: &[u16],
        item_children: Option<&[Element]>,
    ) -> Element {
        let latest = o.sessions.last();
        let mut p = match latest {
            Some(s) => s.presence.clone(),
            None => Element::new("presence", ns::CLIENT),
        };
        p.set_attr("from", self.occupant_jid(&o.nick));
        p.set_attr("to", to.as_str());
        let mut item = Element::new("item", NS_USER)
            .with_attr("affiliation", self.affiliation(ctx, &o.bare).as_str())
            .with_attr("role", o.role.as_str());
        if own || self.can_see_jids(to) {
            let jid = latest.map_or(o.bare.as_str(), |s| s.jid.as_str());
            item.set_attr("jid", jid);
        }
        for c in item_children.unwrap_or_default() {
            item.push_child(c.clone());
        }
        let mut x = Element::new("x", NS_USER).with_child(item);
        for c in codes {
            x.push_child(Element::new("status", NS_USER).with_attr("code", c.to_string()));
        }
        p.push_child(x);
        p.push_child(
            Element::new("occupant-id", NS_OCCUPANT_ID).with_attr("id", self.occupant_id(&o.bare)),
        );
        p
    }

    fn send_history(&self, to: &Jid, req: &HistoryRequest, now: u64, out: &mut Vec<Action>) {
        let entries: Vec<(u64, usize)> = self.history.iter().map(|h| (h.at, h.chars)).collect();
        let start = select_history(&entries, req, self.config.history_length, now);
        for h in self.history.iter().skip(start) {
            let mut m = h.stanza.clone();
            m.set_attr("to", to.as_str());
            m.push_child(
                Element::new("delay", ns::DELAY)
                    .with_attr("from", self.jid.as_str())
                    .with_attr("stamp", crate::time::rfc3339(h.at)),
            );
            out.push(Action::Send(m));
        }
    }

    fn subject_message(&self, to: &Jid) -> Element {
        let (text, from) = match &self.subject {
            Some((t, nick)) if !nick.is_empty() => (t.as_str(), self.occupant_jid(nick)),
            Some((t, _)) => (t.as_str(), self.jid.to_string()),
            None => ("", self.jid.to_string()),
        };
        Element::new("message", ns::CLIENT)
            .with_attr("type", "groupchat")
            .with_attr("from", from)
            .with_attr("to", to.as_str())
            .with_attr("id", format!("subject-{}", fastrand::u64(..)))
            .with_child(Element::new("subject", ns::CLIENT).with_text(text))
    }

    /// Loads history (oldest first) from the archive after a restart: (archive id, unix
    /// seconds, stanza as archived).
    pub fn restore_history(&mut self, entries: Vec<(u64, u64, Element)>) {
        for (id, at, mut stanza) in entries {
            stanza.push_child(
                Element::new("stanza-id", NS_SID)
                    .with_attr("by", self.jid.as_str())
                    .with_attr("id", encode_id(id)),
            );
            self.push_history(stanza, at);
        }
    }

    fn push_history(&mut self, stanza: Element, at: u64) {
        if self.config.history_length == 0 {
            self.history.clear();
            return;
        }
        let chars = stanza.to_bytes_in(ns::CLIENT).len();
        self.history.push_back(HistoryEntry { stanza, at, chars });
        while self.history.len() > self.config.history_length {
            self.history.pop_front();
        }
    }

    // ----- messages -----

    /// A message from `from` to the room (`nick` None) or to `ROOM/nick`.
    pub fn message(
        &mut self,
        ctx: &Ctx,
        from: &Jid,
        nick: Option<&str>,
        stanza: Element,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if stanza.attr("type") == Some("error") {
            self.ghost(ctx, from, &stanza, &mut out);
            return out;
        }
        let result = match nick {
            None => self.message_to_room(ctx, from, stanza.clone(), &mut out),
            Some(n) => self.private_message(ctx, from, n, stanza.clone(), &mut out),
        };
        if let Err(e) = result {
            out.push(Action::Send(stanza::error_reply(&stanza, &e)));
        }
        out
    }

    fn message_to_room(
        &mut self,
        ctx: &Ctx,
        from: &Jid,
        stanza: Element,
        out: &mut Vec<Action>,
    ) -> Result<(), StanzaError> {
        if let Some(x) = stanza.get_child("x", NS_USER) {
            return self.invitations(ctx, from, x, out);
        }
        if let Some(form) = stanza.get_child("x", ns::DATA_FORM) {
            if form_value(form, "FORM_TYPE").as_deref() == Some(NS_REQUEST) {
                return self.voice_request(ctx, from, form, out);
            }
        }
        if stanza.attr("type") != Some("groupchat") {
            return Err(StanzaError::new(Condition::BadRequest)
                .with_text("send groupchat messages to the room"));
        }
        let Some(i) = self.occupant_of(from) else {
            return Err(
                StanzaError::new(Condition::NotAcceptable).with_text("you are not in this room")
            );
        };
        let o = &self.occupants[i];
        if o.role < Role::Participant {
            return Err(
                StanzaError::new(Condition::Forbidden).with_text("you have no voice in this room")
            );
        }
        let nick = o.nick.clone();
        let bare = o.bare.clone();
        if let Some(subject) = stanza.get_child("subject", ns::CLIENT) {
            if !stanza.has_child("body", ns::CLIENT) {
                if !(o.role == Role::Moderator || self.config.change_subject) {
                    return Err(StanzaError::new(Condition::Forbidden)
                        .with_text("only moderators may change the subject"));
                }
                self.subject = Some((subject.text(), nick.clone()));
                out.push(Action::Save);
                for s in self.sessions() {
                    let mut m = stanza.clone();
                    m.set_attr("from", self.occupant_jid(&nick));
                    m.set_attr("to", s.as_str());
                    out.push(Action::Send(m));
                }
                return Ok(());
            }
        }
        let mut m = stanza;
        m.remove_attr("to");
        m.set_attr("from", self.occupant_jid(&nick));
        let room = self.jid.as_str().to_string();
        // XEP-0359 §5 / XEP-0421: ids claiming to be the room's are ours to set.
        m.retain_children(|c| {
            let ours = c.is("stanza-id", NS_SID) && c.attr("by") == Some(room.as_str());
            !(ours || c.is("occupant-id", NS_OCCUPANT_ID))
        });
        m.push_child(
            Element::new("occupant-id", NS_OCCUPANT_ID).with_attr("id", self.occupant_id(&bare)),
        );
        out.push(Action::Groupchat(m));
        Ok(())
    }

    /// Delivers an accepted groupchat message to every session and keeps it for history.
    pub fn broadcast(
        &mut self,
        ctx: &Ctx,
        mut msg: Element,
        archive_id: Option<u64>,
    ) -> Vec<Action> {
        if let Some(id) = archive_id {
            msg.push_child(
                Element::new("stanza-id", NS_SID)
                    .with_attr("by", self.jid.as_str())
                    .with_attr("id", encode_id(id)),
            );
        }
        let mut out = Vec::new();
        for s in self.sessions() {
            let mut m = msg.clone();
            m.set_attr("to", s.as_str());
            out.push(Action::Send(m));
        }
        if msg.has_child("body", ns::CLIENT) && !msg.has_child("no-store", ns::HINTS) {
            self.push_history(msg, ctx.now);
        }
        out
    }

    fn sessions(&self) -> Vec<Jid> {
        self.occupants
            .iter()
            .flat_map(|o| o.sessions.iter().map(|s| s.jid.clone()))
            .collect()
    }

    fn private_message(
        &mut self,
        _ctx: &Ctx,
        from: &Jid,
        nick: &str,
        stanza: Element,
        out: &mut Vec<Action>,
    ) -> Result<(), StanzaError> {
        let Some(i) = self.occupant_of(from) else {
            return Err(
                StanzaError::new(Condition::NotAcceptable).with_text("you are not in this room")
            );
        };
        if stanza.attr("type") == Some("groupchat") {
            return Err(Condition::BadRequest.into());
        }
        let sender = &self.occupants[i];
        let allowed = match self.config.allow_pm {
            AllowPm::Anyone => true,
            AllowPm::Participants => sender.role >= Role::Participant,
            AllowPm::Moderators => sender.role == Role::Moderator,
            AllowPm::Nobody => false,
        };
        if !allowed {
            return Err(StanzaError::new(Condition::Forbidden)
                .with_text("private messages are not allowed in this room"));
        }
        let Some(t) = self.by_nick(nick) else {
            return Err(StanzaError::new(Condition::ItemNotFound)
                .with_text("nobody has that nickname here"));
        };
        let from_occupant = self.occupant_jid(&sender.nick);
        for s in &self.occupants[t].sessions {
            let mut m = stanza.clone();
            m.set_attr("from", from_occupant.as_str());
            m.set_attr("to", s.jid.as_str());
            if !m.has_child("x", NS_USER) {
                m.push_child(Element::new("x", NS_USER));
            }
            out.push(Action::Send(m));
        }
        Ok(())
    }

    /// XEP-0045 §7.8.2 mediated invitations and §7.8.2 declines.
    fn invitations(
        &mut self,
        ctx: &Ctx,
        from: &Jid,
        x: &Element,
        out: &mut Vec<Action>,
    ) -> Result<(), StanzaError> {
        let bare = from.to_bare();
        let aff = self.affiliation(ctx, &bare);
        for decline in x.children().filter(|c| c.is("decline", NS_USER)) {
            let Some(to) = decline.attr("to").and_then(|t| Jid::parse(t).ok()) else {
                return Err(Condition::JidMalformed.into());
            };
            let mut d = Element::new("decline", NS_USER).with_attr("from", bare.as_str());
            if let Some(r) = decline.get_child("reason", NS_USER) {
                d.push_child(r.clone());
            }
            out.push(Action::Send(
                Element::new("message", ns::CLIENT)
                    .with_attr("from", self.jid.as_str())
                    .with_attr("to", to.as_str())
                    .with_child(Element::new("x", NS_USER).with_child(d)),
            ));
        }
        let invites: Vec<&Element> = x.children().filter(|c| c.is("invite", NS_USER)).collect();
        if invites.is_empty() {
            return Ok(());
        }
        if self.occupant_of(from).is_none() && aff < Affiliation::Admin {
            return Err(
                StanzaError::new(Condition::NotAcceptable).with_text("you are not in this room")
            );
        }
        if self.config.members_only && !self.config.allow_invites && aff < Affiliation::Admin {
            return Err(StanzaError::new(Condition::Forbidden)
                .with_text("only admins may invite to this room"));
        }
        for invite in invites {
            let Some(to) = invite.attr("to").and_then(|t| Jid::parse(t).ok()) else {
                return Err(Condition::JidMalformed.into());
            };
            // Prosody: an invitation to a members-only room makes the invitee a member, or
            // the invitation would be useless.
            if self.config.members_only
                && self.affiliation(ctx, &to.to_bare()) < Affiliation::Member
                && self.affiliation(ctx, &to.to_bare()) != Affiliation::Outcast
            {
                self.affiliations.insert(to.to_bare(), Affiliation::Member);
                out.push(Action::Save);
            }
            let mut inv = Element::new("invite", NS_USER).with_attr("from", from.as_str());
            if let Some(r) = invite.get_child("reason", NS_USER) {
                inv.push_child(r.clone());
            }
            let mut ux = Element::new("x", NS_USER).with_child(inv);
            if let Some(pw) = &self.config.password {
                ux.push_child(Element::new("password", NS_USER).with_text(pw.as_str()));
            }
            out.push(Action::Send(
                Element::new("message", ns::CLIENT)
                    .with_attr("from", self.jid.as_str())
                    .with_attr("to", to.as_str())
                    .with_attr("id", format!("invite-{}", fastrand::u64(..)))
                    .with_child(ux)
                    .with_child(
                        Element::new("x", ns::CONFERENCE).with_attr("jid", self.jid.as_str()),
                    ),
            ));
        }
        Ok(())
    }

    /// XEP-0045 §7.13 voice requests (from visitors) and §8.6 their approval (by moderators).
    fn voice_request(
        &mut self,
        ctx: &Ctx,
        from: &Jid,
        form: &Element,
        out: &mut Vec<Action>,
    ) -> Result<(), StanzaError> {
        let Some(i) = self.occupant_of(from) else {
            return Err(
                StanzaError::new(Condition::NotAcceptable).with_text("you are not in this room")
            );
        };
        let o = &self.occupants[i];
        if o.role == Role::Moderator {
            // An approval: the form a moderator got back, with request_allow set.
            let allow =
                form_value(form, "muc#request_allow").is_some_and(|v| v == "1" || v == "true");
            let Some(nick) = form_value(form, "muc#roomnick") else {
                return Err(Condition::BadRequest.into());
            };
            if allow {
                if let Some(t) = self.by_nick(&nick) {
                    if self.occupants[t].role == Role::Visitor {
                        self.occupants[t].role = Role::Participant;
                        self.broadcast_presence(ctx, t, &[], out);
                    }
                }
            }
            return Ok(());
        }
        if o.role != Role::Visitor {
            return Ok(());
        }
        let mut x = Element::new("x", ns::DATA_FORM).with_attr("type", "form");
        x.push_child(Element::new("title", ns::DATA_FORM).with_text("Voice request"));
        x.push_child(result_field("FORM_TYPE", &[NS_REQUEST]).with_attr("type", "hidden"));
        x.push_child(result_field("muc#role", &["participant"]).with_attr("type", "list-single"));
        x.push_child(result_field("muc#jid", &[from.as_str()]).with_attr("type", "jid-single"));
        x.push_child(
            result_field("muc#roomnick", &[o.nick.as_str()]).with_attr("type", "text-single"),
        );
        x.push_child(
            result_field("muc#request_allow", &["0"])
                .with_attr("type", "boolean")
                .with_attr("label", "Grant voice?"),
        );
        for m in self.occupants.iter().filter(|m| m.role == Role::Moderator) {
            for s in &m.sessions {
                out.push(Action::Send(
                    Element::new("message", ns::CLIENT)
                        .with_attr("from", self.jid.as_str())
                        .with_attr("to", s.jid.as_str())
                        .with_child(x.clone()),
                ));
            }
        }
        Ok(())
    }

    // ----- iq -----

    /// An iq to the room (`nick` None) or to `ROOM/nick`. MAM queries are the driver's.
    pub fn iq(&mut self, ctx: &Ctx, from: &Jid, nick: Option<&str>, iq: Element) -> Vec<Action> {
        let mut out = Vec::new();
        let result = match nick {
            Some(n) => self.iq_to_occupant(ctx, from, n, &iq, &mut out),
            None => self.iq_to_room(ctx, from, &iq, &mut out),
        };
        match result {
            Ok(Some(payload)) => out.push(Action::Send(stanza::iq_result(&iq, payload))),
            Ok(None) => {}
            Err(e) => {
                if !stanza::must_not_answer(&iq) {
                    out.push(Action::Send(stanza::error_reply(&iq, &e)));
                }
            }
        }
        out
    }

    fn iq_to_occupant(
        &mut self,
        _ctx: &Ctx,
        from: &Jid,
        nick: &str,
        iq: &Element,
        out: &mut Vec<Action>,
    ) -> Result<Option<Option<Element>>, StanzaError> {
        let Some(i) = self.occupant_of(from) else {
            return Err(
                StanzaError::new(Condition::NotAcceptable).with_text("you are not in this room")
            );
        };
        // XEP-0410: a ping to one's own occupant JID is answered by the room.
        if self.occupants[i].nick == nick && iq.has_child("ping", ns::PING) {
            return Ok(Some(None));
        }
        let Some(t) = self.by_nick(nick) else {
            return Err(StanzaError::new(Condition::ItemNotFound)
                .with_text("nobody has that nickname here"));
        };
        // Requests go to the target's newest session, answers to the asker's; ids are kept,
        // so a reply finds its request on the client's side.
        let Some(s) = self.occupants[t].sessions.last() else {
            return Err(Condition::ItemNotFound.into());
        };
        let mut fwd = iq.clone();
        fwd.set_attr("from", self.occupant_jid(&self.occupants[i].nick));
        fwd.set_attr("to", s.jid.as_str());
        out.push(Action::Send(fwd));
        Ok(None)
    }

    fn iq_to_room(
        &mut self,
        ctx: &Ctx,
        from: &Jid,
        iq: &Element,
        out: &mut Vec<Action>,
    ) -> Result<Option<Option<Element>>, StanzaError> {
        let get = iq.attr("type") == Some("get");
        let set = iq.attr("type") == Some("set");
        let Some(payload) = iq.first_child() else {
            return if get || set {
                Err(Condition::BadRequest.into())
            } else {
                Ok(None)
            };
        };
        let aff = self.affiliation(ctx, &from.to_bare());
        match (payload.name(), payload.ns(), get) {
            ("query", ns::DISCO_INFO, true) => {
                if self.locked && aff != Affiliation::Owner {
                    return Err(Condition::ItemNotFound.into());
                }
                Ok(Some(Some(self.disco_info(payload))))
            }
            ("query", ns::DISCO_ITEMS, true) => {
                let mut q = Element::new("query", ns::DISCO_ITEMS);
                if let Some(n) = payload.attr("node") {
                    q.set_attr("node", n);
                }
                Ok(Some(Some(q)))
            }
            ("ping", ns::PING, true) => Ok(Some(None)),
            ("vCard", "vcard-temp", true) => Ok(Some(Some(Element::new("vCard", "vcard-temp")))),
            ("query", NS_OWNER, true) => {
                if aff != Affiliation::Owner {
                    return Err(StanzaError::new(Condition::Forbidden)
                        .with_text("only owners may configure the room"));
                }
                let q =
                    Element::new("query", NS_OWNER).with_child(self.config.form(ctx.max_history));
                Ok(Some(Some(q)))
            }
            ("query", NS_OWNER, false) if set => {
                if aff != Affiliation::Owner {
                    return Err(StanzaError::new(Condition::Forbidden)
                        .with_text("only owners may configure the room"));
                }
                self.owner_set(ctx, from, payload, out).map(|()| Some(None))
            }
            ("query", NS_ADMIN, true) => self.admin_list(ctx, from, payload).map(|q| Some(Some(q))),
            ("query", NS_ADMIN, false) if set => {
                self.admin_set(ctx, from, payload, out).map(|()| Some(None))
            }
            _ if get || set => Err(Condition::ServiceUnavailable.into()),
            _ => Ok(None),
        }
    }

    fn owner_set(
        &mut self,
        ctx: &Ctx,
        from: &Jid,
        q: &Element,
        out: &mut Vec<Action>,
    ) -> Result<(), StanzaError> {
        if let Some(d) = q.get_child("destroy", NS_OWNER) {
            self.destroy(
                ctx,
                d.attr("jid"),
                d.get_child("reason", NS_OWNER).map(Element::text),
                out,
            );
            out.push(Action::Log(format!(
                "muc: room {} destroyed by {}",
                self.jid,
                from.to_bare()
            )));
            return Ok(());
        }
        let Some(form) = q.get_child("x", ns::DATA_FORM) else {
            return Err(Condition::BadRequest.into());
        };
        if form.attr("type") == Some("cancel") {
            // Cancelling the initial configuration of a reserved room destroys it (§10.1.3).
            if self.locked {
                self.destroy(ctx, None, None, out);
                out.push(Action::Log(format!(
                    "muc: room {} abandoned at creation",
                    self.jid
                )));
            }
            return Ok(());
        }
        let before = self.config.clone();
        let mut next = before.clone();
        next.apply_form(form, ctx.max_history)
            .map_err(|text| StanzaError::new(Condition::NotAcceptable).with_text(text))?;
        self.config = next;
        let was_locked = std::mem::replace(&mut self.locked, false);
        if was_locked {
            out.push(Action::Log(format!(
                "muc: room {} created by {}",
                self.jid,
                from.to_bare()
            )));
        }
        out.push(Action::Save);
        // §10.2.1: occupants hear that the configuration changed, and how it matters to them.
        let mut codes = vec![104];
        if before.whois != self.config.whois {
            codes.push(if self.config.whois == Whois::Anyone {
                172
            } else {
                173
            });
        }
        if before.archiving != self.config.archiving {
            codes.push(if self.config.archiving { 170 } else { 171 });
        }
        if !was_locked {
            for s in self.sessions() {
                let mut x = Element::new("x", NS_USER);
                for c in &codes {
                    x.push_child(Element::new("status", NS_USER).with_attr("code", c.to_string()));
                }
                out.push(Action::Send(
                    Element::new("message", ns::CLIENT)
                        .with_attr("type", "groupchat")
                        .with_attr("from", self.jid.as_str())
                        .with_attr("to", s.as_str())
                        .with_attr("id", format!("config-{}", fastrand::u64(..)))
                        .with_child(x),
                ));
            }
        }
        // Members-only now: who is not a member leaves (status 322).
        if self.config.members_only && !before.members_only {
            while let Some(i) = self
                .occupants
                .iter()
                .position(|o| self.affiliation(ctx, &o.bare) < Affiliation::Member)
            {
                self.remove_occupant(ctx, i, &[322], None, None, out);
            }
        }
        if before.moderated != self.config.moderated {
            for i in 0..self.occupants.len() {
                let aff = self.affiliation(ctx, &self.occupants[i].bare);
                let role = default_role(aff, self.config.moderated);
                if aff == Affiliation::None
                    && self.occupants[i].role != Role::Moderator
                    && self.occupants[i].role != role
                {
                    self.occupants[i].role = role;
                    self.broadcast_presence(ctx, i, &[], out);
                }
            }
        }
        Ok(())
    }

    fn destroy(
        &mut self,
        ctx: &Ctx,
        alternate: Option<&str>,
        reason: Option<String>,
        out: &mut Vec<Action>,
    ) {
        let mut d = Element::new("destroy", NS_USER);
        if let Some(j) = alternate {
            d.set_attr("jid", j);
        }
        if let Some(r) = reason {
            d.push_child(Element::new("reason", NS_USER).with_text(r));
        }
        for o in &self.occupants {
            for s in &o.sessions {
                let item = Element::new("item", NS_USER)
                    .with_attr("affiliation", "none")
                    .with_attr("role", "none");
                let _ = ctx;
                out.push(Action::Send(
                    Element::new("presence", ns::CLIENT)
                        .with_attr("type", "unavailable")
                        .with_attr("from", self.occupant_jid(&o.nick))
                        .with_attr("to", s.jid.as_str())
                        .with_child(
                            Element::new("x", NS_USER)
                                .with_child(item)
                                .with_child(d.clone()),
                        ),
                ));
            }
        }
        self.occupants.clear();
        out.push(Action::Destroyed);
    }

    fn admin_list(&self, ctx: &Ctx, from: &Jid, q: &Element) -> Result<Element, StanzaError> {
        let Some(item) = q.get_child("item", NS_ADMIN) else {
            return Err(Condition::BadRequest.into());
        };
        let aff = self.affiliation(ctx, &from.to_bare());
        let role = self
            .occupant_of(from)
            .map_or(Role::None, |i| self.occupants[i].role);
        let mut out = Element::new("query", NS_ADMIN);
        if let Some(a) = item.attr("affiliation").map(Affiliation::parse) {
            let a = a.ok_or(Condition::BadRequest)?;
            // Members may see the member list of a members-only room (who else is in it).
            let may = aff >= Affiliation::Admin
                || (a == Affiliation::Member
                    && self.config.members_only
                    && aff == Affiliation::Member);
            if !may {
                return Err(Condition::Forbidden.into());
            }
            for (jid, _) in self.affiliations.iter().filter(|(_, v)| **v == a) {
                let mut it = Element::new("item", NS_ADMIN)
                    .with_attr("affiliation", a.as_str())
                    .with_attr("jid", jid.as_str());
                if let Some(o) = self.occupants.iter().find(|o| o.bare == *jid) {
                    it.set_attr("nick", o.nick.as_str());
                }
                out.push_child(it);
            }
            return Ok(out);
        }
        if let Some(r) = item.attr("role").map(Role::parse) {
            let r = r.ok_or(Condition::BadRequest)?;
            if role != Role::Moderator {
                return Err(Condition::Forbidden.into());
            }
            for o in self.occupants.iter().filter(|o| o.role == r) {
                let mut it = Element::new("item", NS_ADMIN)
                    .with_attr("role", r.as_str())
                    .with_attr("nick", o.nick.as_str())
                    .with_attr("affiliation", self.affiliation(ctx, &o.bare).as_str());
                if self.can_see_jids(from) {
                    if let Some(s) = o.sessions.last() {
                        it.set_attr("jid", s.jid.as_str());
                    }
                }
                out.push_child(it);
            }
            return Ok(out);
        }
        Err(Condition::BadRequest.into())
    }

    fn admin_set(
        &mut self,
        ctx: &Ctx,
        from: &Jid,
        q: &Element,
        out: &mut Vec<Action>,
    ) -> Result<(), StanzaError> {
        let items: Vec<&Element> = q.children().filter(|c| c.is("item", NS_ADMIN)).collect();
        if items.is_empty() {
            return Err(Condition::BadRequest.into());
        }
        let actor_bare = from.to_bare();
        let actor_nick = self
            .occupant_of(from)
            .map(|i| self.occupants[i].nick.clone());
        for item in items {
            let reason = item.get_child("reason", NS_ADMIN).map(Element::text);
            let actor_aff = self.affiliation(ctx, &actor_bare);
            let actor_role = self
                .occupant_of(from)
                .map_or(Role::None, |i| self.occupants[i].role);
            if let Some(a) = item.attr("affiliation") {
                let new = Affiliation::parse(a).ok_or(Condition::BadRequest)?;
                let target = match (item.attr("jid"), item.attr("nick")) {
                    (Some(j), _) => Jid::parse(j)
                        .map_err(|_| Condition::JidMalformed)?
                        .to_bare(),
                    (None, Some(n)) => match self.by_nick(n) {
                        Some(i) => self.occupants[i].bare.clone(),
                        None => return Err(Condition::ItemNotFound.into()),
                    },
                    (None, None) => return Err(Condition::BadRequest.into()),
                };
                self.set_affiliation(
                    ctx,
                    actor_aff,
                    actor_nick.as_deref(),
                    target,
                    new,
                    reason.as_deref(),
                    out,
                )?;
            } else if let Some(r) = item.attr("role") {
                let new = Role::parse(r).ok_or(Condition::BadRequest)?;
                let Some(nick) = item.attr("nick") else {
                    return Err(Condition::BadRequest.into());
                };
                let Some(t) = self.by_nick(nick) else {
                    return Err(StanzaError::new(Condition::ItemNotFound)
                        .with_text("nobody has that nickname here"));
                };
                let target_aff = self.affiliation(ctx, &self.occupants[t].bare);
                may_set_role(
                    actor_aff,
                    actor_role,
                    target_aff,
                    self.occupants[t].role,
                    new,
                )
                .map_err(refusal)?;
                if new == Role::None {
                    out.push(Action::Log(format!(
                        "muc: {} kicked from {} by {actor_bare}",
                        self.occupants[t].bare, self.jid
                    )));
                    self.remove_occupant(
                        ctx,
                        t,
                        &[307],
                        actor_nick.as_deref(),
                        reason.as_deref(),
                        out,
                    );
                } else if self.occupants[t].role != new {
                    self.occupants[t].role = new;
                    self.broadcast_presence(ctx, t, &[], out);
                }
            } else {
                return Err(Condition::BadRequest.into());
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn set_affiliation(
        &mut self,
        ctx: &Ctx,
        actor_aff: Affiliation,
        actor_nick: Option<&str>,
        target: BareJid,
        new: Affiliation,
        reason: Option<&str>,
        out: &mut Vec<Action>,
    ) -> Result<(), StanzaError> {
        let current = self
            .affiliations
            .get(&target)
            .copied()
            .unwrap_or(Affiliation::None);
        may_set_affiliation(actor_aff, current, new).map_err(refusal)?;
        if ctx.admins.contains(&target) && new < Affiliation::Owner {
            return Err(
                StanzaError::new(Condition::NotAllowed).with_text("server admins own every room")
            );
        }
        let owners = self
            .affiliations
            .values()
            .filter(|a| **a == Affiliation::Owner)
            .count();
        if current == Affiliation::Owner && new != Affiliation::Owner && owners <= 1 {
            return Err(StanzaError::new(Condition::Conflict).with_text("a room needs an owner"));
        }
        if current == new {
            return Ok(());
        }
        if new == Affiliation::None {
            self.affiliations.remove(&target);
        } else {
            self.affiliations.insert(target.clone(), new);
        }
        out.push(Action::Save);
        if new == Affiliation::Outcast {
            out.push(Action::Log(format!(
                "muc: {target} banned from {}",
                self.jid
            )));
        }
        let Some(i) = self.occupants.iter().position(|o| o.bare == target) else {
            return Ok(());
        };
        if new == Affiliation::Outcast {
            self.remove_occupant(ctx, i, &[301], actor_nick, reason, out);
        } else if self.config.members_only && new < Affiliation::Member {
            self.remove_occupant(ctx, i, &[321], actor_nick, reason, out);
        } else {
            self.occupants[i].role = default_role(new, self.config.moderated);
            self.broadcast_presence(ctx, i, &[], out);
        }
        Ok(())
    }

    /// The room's disco#info (XEP-0045 §6.4) with the `muc#roominfo` form.
    pub fn disco_info(&self, query: &Element) -> Element {
        let mut q = Element::new("query", ns::DISCO_INFO);
        if let Some(n) = query.attr("node") {
            q.set_attr("node", n);
        }
        let name = if self.config.name.is_empty() {
            self.jid.node().unwrap_or_default()
        } else {
            self.config.name.as_str()
        };
        q.push_child(
            Element::new("identity", ns::DISCO_INFO)
                .with_attr("category", "conference")
                .with_attr("type", "text")
                .with_attr("name", name),
        );
        let c = &self.config;
        let pick = |on: bool, yes: &'static str, no: &'static str| if on { yes } else { no };
        let mut features = vec![
            NS_MUC,
            ns::DISCO_INFO,
            ns::DISCO_ITEMS,
            NS_SID,
            NS_OCCUPANT_ID,
            NS_SELF_PING,
            NS_STABLE_ID,
            NS_REQUEST,
            ns::PING,
            "vcard-temp",
            pick(c.persistent, "muc_persistent", "muc_temporary"),
            pick(c.public, "muc_public", "muc_hidden"),
            pick(c.members_only, "muc_membersonly", "muc_open"),
            pick(c.moderated, "muc_moderated", "muc_unmoderated"),
            pick(
                c.whois == Whois::Anyone,
                "muc_nonanonymous",
                "muc_semianonymous",
            ),
            pick(
                c.password.is_some(),
                "muc_passwordprotected",
                "muc_unsecured",
            ),
        ];
        if c.archiving {
            features.push(NS_MAM);
        }
        for f in features {
            q.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", f));
        }
        let subject = self.subject.as_ref().map_or("", |(t, _)| t.as_str());
        let occupants = self.occupants.len().to_string();
        let mut x = Element::new("x", ns::DATA_FORM).with_attr("type", "result");
        x.push_child(result_field("FORM_TYPE", &[NS_ROOMINFO]).with_attr("type", "hidden"));
        x.push_child(result_field(
            "muc#roominfo_description",
            &[c.description.as_str()],
        ));
        x.push_child(result_field(
            "muc#roominfo_occupants",
            &[occupants.as_str()],
        ));
        x.push_child(result_field("muc#roominfo_subject", &[subject]));
        x.push_child(result_field(
            "muc#roominfo_changesubject",
            &[pick(c.change_subject, "1", "0")],
        ));
        x.push_child(result_field("muc#roomconfig_roomname", &[c.name.as_str()]));
        q.push_child(x);
        q
    }

    // ----- persistence -----

    /// The stored form of a persistent room: configuration, affiliations, subject.
    pub fn to_element(&self) -> Element {
        let mut el = Element::new("room", "urn:kith:muc").with_child(self.config.to_element());
        for (jid, aff) in &self.affiliations {
            el.push_child(
                Element::new("affiliation", "urn:kith:muc")
                    .with_attr("jid", jid.as_str())
                    .with_attr("value", aff.as_str()),
            );
        }
        if let Some((text, nick)) = &self.subject {
            el.push_child(
                Element::new("subject", "urn:kith:muc")
                    .with_attr("nick", nick.as_str())
                    .with_text(text.as_str()),
            );
        }
        el
    }

    /// A room read back from the store; unreadable parts fall back to defaults.
    pub fn from_element(jid: BareJid, el: &Element, defaults: RoomConfig, key: [u8; 32]) -> Room {
        let config = match el.get_child("config", super::NS_ROOMCONFIG) {
            Some(c) => RoomConfig::from_element(c, defaults),
            None => defaults,
        };
        let mut room = Room::empty(jid, config, key);
        for a in el.children().filter(|c| c.name() == "affiliation") {
            let jid = a.attr("jid").and_then(|j| BareJid::parse(j).ok());
            let aff = a.attr("value").and_then(Affiliation::parse);
            if let (Some(j), Some(v)) = (jid, aff) {
                if v != Affiliation::None {
                    room.affiliations.insert(j, v);
                }
            }
        }
        if let Some(s) = el.children().find(|c| c.name() == "subject") {
            room.subject = Some((s.text(), s.attr("nick").unwrap_or_default().to_string()));
        }
        room
    }
}

fn refusal(r: Refusal) -> StanzaError {
    match r {
        Refusal::Forbidden => Condition::Forbidden.into(),
        Refusal::NotAllowed => Condition::NotAllowed.into(),
    }
}

/// The client's presence without MUC payloads (the room adds its own) and without addresses.
fn clean_presence(p: &Element) -> Element {
    let mut p = p.clone();
    p.remove_attr("to");
    p.remove_attr("from");
    p.remove_attr("id");
    p.retain_children(|c| {
        !(c.is("x", NS_MUC) || c.is("x", NS_USER) || c.is("occupant-id", NS_OCCUPANT_ID))
    });
    p
}

fn error_presence(stanza: &Element, e: StanzaError) -> Element {
    let mut reply = stanza::error_reply(stanza, &e);
    // The password the client sent does not go back to it.
    reply.retain_children(|c| !c.is("x", NS_MUC) && c.name() != "status" && c.name() != "show");
    reply.push_child(Element::new("x", NS_MUC));
    reply
}

#[cfg(test)]
mod tests;
