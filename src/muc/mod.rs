//! XEP-0045 Multi-User Chat: the room engine, **pure**. A room is fed stanzas (already
//! addressed to it, `from` stamped by whoever received them) and the time, and answers with
//! [`Action`]s: stanzas to send, "save me", "I am gone". The I/O glue (routing, the store, the
//! archive) is `services::muc`.
//!
//! - `mod.rs`: affiliations and roles, and the XEP-0045 §5 tables of who may do what to whom.
//! - `config.rs`: the room configuration and the `muc#roomconfig` form (XEP-0045 §10.2).
//! - `room.rs`: one room: occupants, presence, messages, admin and owner requests, history.
//!
//! The behaviour follows Prosody's mod_muc where XEP-0045 leaves a choice, because that is
//! what clients (Conversations, Gajim, Dino) are tested against.

pub mod config;
pub mod room;

pub use config::RoomConfig;
pub use room::{Action, Room};

pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
pub const NS_USER: &str = "http://jabber.org/protocol/muc#user";
pub const NS_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
pub const NS_OWNER: &str = "http://jabber.org/protocol/muc#owner";
pub const NS_ROOMCONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";
pub const NS_ROOMINFO: &str = "http://jabber.org/protocol/muc#roominfo";
pub const NS_REQUEST: &str = "http://jabber.org/protocol/muc#request";
/// XEP-0421 Anonymous unique occupant identifiers.
pub const NS_OCCUPANT_ID: &str = "urn:xmpp:occupant-id:0";
/// XEP-0410 MUC Self-Ping: the room answers a ping to one's own occupant JID itself.
pub const NS_SELF_PING: &str = "http://jabber.org/protocol/muc#self-ping-optimization";
/// XEP-0045 §15.6: occupant JIDs keep message ids.
pub const NS_STABLE_ID: &str = "http://jabber.org/protocol/muc#stable_id";

/// A long-lived relation of a bare JID with a room (XEP-0045 §5.2), in rank order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Affiliation {
    Outcast,
    None,
    Member,
    Admin,
    Owner,
}

impl Affiliation {
    pub fn as_str(self) -> &'static str {
        match self {
            Affiliation::Outcast => "outcast",
            Affiliation::None => "none",
            Affiliation::Member => "member",
            Affiliation::Admin => "admin",
            Affiliation::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Affiliation> {
        Some(match s {
            "outcast" => Affiliation::Outcast,
            "none" => Affiliation::None,
            "member" => Affiliation::Member,
            "admin" => Affiliation::Admin,
            "owner" => Affiliation::Owner,
            _ => return None,
        })
    }
}

/// A temporary relation of an occupant with a room (XEP-0045 §5.1), in rank order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    None,
    Visitor,
    Participant,
    Moderator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::Visitor => "visitor",
            Role::Participant => "participant",
            Role::Moderator => "moderator",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "none" => Role::None,
            "visitor" => Role::Visitor,
            "participant" => Role::Participant,
            "moderator" => Role::Moderator,
            _ => return None,
        })
    }
}

/// XEP-0045 §5.1.2: the role an occupant gets on entering, from its affiliation. `None` for
/// an outcast: it may not enter.
pub fn default_role(aff: Affiliation, moderated: bool) -> Role {
    match aff {
        Affiliation::Owner | Affiliation::Admin => Role::Moderator,
        Affiliation::Member => Role::Participant,
        Affiliation::None if moderated => Role::Visitor,
        Affiliation::None => Role::Participant,
        Affiliation::Outcast => Role::None,
    }
}

/// Why a privilege change is refused; becomes the stanza error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The actor lacks the privilege altogether (`forbidden`).
    Forbidden,
    /// The actor has the privilege but not over this target (`not-allowed`).
    NotAllowed,
}

/// XEP-0045 §5.1.2 and §8/§9 (as Prosody applies them): may an occupant with affiliation
/// `actor_aff` and role `actor_role` change the role of an occupant with affiliation
/// `target_aff` to `new_role`? Kicking is `new_role == Role::None`.
pub fn may_set_role(
    actor_aff: Affiliation,
    actor_role: Role,
    target_aff: Affiliation,
    target_role: Role,
    new_role: Role,
) -> Result<(), Refusal> {
    if actor_role != Role::Moderator {
        return Err(Refusal::Forbidden);
    }
    // Nobody can act on someone ranked above them, and admins and owners are moderators for
    // as long as they are present (only their affiliation can change that).
    if target_aff > actor_aff || (target_aff >= Affiliation::Admin && new_role != Role::Moderator) {
        return Err(Refusal::NotAllowed);
    }
    // Granting or revoking moderator is for admins and owners (§9.6, §9.7).
    if (new_role == Role::Moderator || target_role == Role::Moderator)
        && actor_aff < Affiliation::Admin
    {
        return Err(Refusal::NotAllowed);
    }
    Ok(())
}

/// XEP-0045 §9 and §10: may `actor_aff` change a bare JID's affiliation from `current` to
/// `new`? Owners may do anything (the last owner is checked by the room); admins manage
/// members and outcasts below them.
pub fn may_set_affiliation(
    actor_aff: Affiliation,
    current: Affiliation,
    new: Affiliation,
) -> Result<(), Refusal> {
    match actor_aff {
        Affiliation::Owner => Ok(()),
        Affiliation::Admin if current <= Affiliation::Member && new <= Affiliation::Member => {
            Ok(())
        }
        Affiliation::Admin => Err(Refusal::NotAllowed),
        _ => Err(Refusal::Forbidden),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Affiliation as A;
    use Role as R;

    #[test]
    fn entry_roles_follow_affiliation() {
        assert_eq!(default_role(A::Owner, false), R::Moderator);
        assert_eq!(default_role(A::Admin, true), R::Moderator);
        assert_eq!(default_role(A::Member, true), R::Participant);
        assert_eq!(default_role(A::None, false), R::Participant);
        assert_eq!(default_role(A::None, true), R::Visitor);
        assert_eq!(default_role(A::Outcast, false), R::None);
    }

    #[test]
    fn role_table() {
        // (actor aff, actor role, target aff, target role, new role, expected)
        let rows = [
            (
                A::None,
                R::Participant,
                A::None,
                R::Participant,
                R::None,
                Err(Refusal::Forbidden),
            ),
            (
                A::None,
                R::Moderator,
                A::None,
                R::Participant,
                R::None,
                Ok(()),
            ),
            (
                A::None,
                R::Moderator,
                A::Member,
                R::Participant,
                R::None,
                Err(Refusal::NotAllowed),
            ),
            (
                A::Member,
                R::Moderator,
                A::Member,
                R::Participant,
                R::Visitor,
                Ok(()),
            ),
            (
                A::Admin,
                R::Moderator,
                A::Admin,
                R::Moderator,
                R::None,
                Err(Refusal::NotAllowed),
            ),
            (
                A::Owner,
                R::Moderator,
                A::Admin,
                R::Moderator,
                R::None,
                Err(Refusal::NotAllowed),
            ),
            (
                A::Owner,
                R::Moderator,
                A::Owner,
                R::Moderator,
                R::Participant,
                Err(Refusal::NotAllowed),
            ),
            (
                A::Admin,
                R::Moderator,
                A::Member,
                R::Participant,
                R::Moderator,
                Ok(()),
            ),
            (
                A::Member,
                R::Moderator,
                A::None,
                R::Participant,
                R::Moderator,
                Err(Refusal::NotAllowed),
            ),
            (
                A::Member,
                R::Moderator,
                A::None,
                R::Moderator,
                R::Participant,
                Err(Refusal::NotAllowed),
            ),
            (
                A::Admin,
                R::Moderator,
                A::None,
                R::Moderator,
                R::Participant,
                Ok(()),
            ),
            (
                A::Admin,
                R::Moderator,
                A::Owner,
                R::Moderator,
                R::None,
                Err(Refusal::NotAllowed),
            ),
        ];
        for (i, (aa, ar, ta, tr, nr, want)) in rows.into_iter().enumerate() {
            assert_eq!(may_set_role(aa, ar, ta, tr, nr), want, "row {i}");
        }
    }

    #[test]
    fn affiliation_table() {
        let rows = [
            (A::Owner, A::None, A::Owner, Ok(())),
            (A::Owner, A::Admin, A::Outcast, Ok(())),
            (A::Admin, A::None, A::Member, Ok(())),
            (A::Admin, A::Member, A::Outcast, Ok(())),
            (A::Admin, A::None, A::Admin, Err(Refusal::NotAllowed)),
            (A::Admin, A::Admin, A::None, Err(Refusal::NotAllowed)),
            (A::Admin, A::Owner, A::Outcast, Err(Refusal::NotAllowed)),
            (A::Member, A::None, A::Member, Err(Refusal::Forbidden)),
            (A::None, A::None, A::Outcast, Err(Refusal::Forbidden)),
        ];
        for (i, (actor, cur, new, want)) in rows.into_iter().enumerate() {
            assert_eq!(may_set_affiliation(actor, cur, new), want, "row {i}");
        }
    }

    #[test]
    fn names_round_trip() {
        for a in [A::Outcast, A::None, A::Member, A::Admin, A::Owner] {
            assert_eq!(Affiliation::parse(a.as_str()), Some(a));
        }
        for r in [R::None, R::Visitor, R::Participant, R::Moderator] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("king"), None);
    }
}
