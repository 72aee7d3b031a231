//! Presence subscription states: the pure state machine of RFC 6121 §3 and Appendix A.
//!
//! Owns: the stored subscription state of one contact as seen by one account ([`SubState`]),
//! and what the account's server must do when a `subscribe`, `subscribed`, `unsubscribe` or
//! `unsubscribed` presence stanza passes through it, either sent by the user ([`outbound`],
//! RFC 6121 A.2) or arriving from the contact ([`inbound`], RFC 6121 A.3), including subscription
//! pre-approval (RFC 6121 §3.4, which kith supports; stream negotiation must advertise
//! `<sub xmlns='urn:xmpp:features:pre-approval'/>`).
//!
//! Must not know: stanzas, JIDs, sessions, storage or time. The roster/presence services look the
//! state up, call [`outbound`] or [`inbound`], and carry out the returned [`Outcome`]: store the new
//! state and push the roster item, route or deliver the stanza, send the auto-reply, and broadcast
//! presence. Whether the contact is in the roster at all is theirs too: a contact that is not is
//! simply `SubState::default()` ("None"), which is how Appendix A.1 treats it.
//!
//! The nine defined states of A.1 are combinations of [`Sub`] and the two pending flags; with
//! `approved` on the three states that can carry a pre-approval, 12 of the 32 combinations of the
//! fields are reachable. If storage hands us one of the other 20, it is first repaired with
//! [`SubState::normalized`] (the repair then shows up as `changed`, so it is written back): never
//! trusted, never a panic.

/// The `subscription` attribute of a roster item (RFC 6121 §2.1.2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Sub {
    /// Neither side receives the other's presence.
    #[default]
    None,
    /// The user receives the contact's presence.
    To,
    /// The contact receives the user's presence.
    From,
    /// Both directions.
    Both,
}

impl Sub {
    /// The attribute value as written in a roster item.
    pub fn as_str(self) -> &'static str {
        match self {
            Sub::None => "none",
            Sub::To => "to",
            Sub::From => "from",
            Sub::Both => "both",
        }
    }

    /// Parses a stored or received attribute value; `None` for anything else (including
    /// `remove`, which is a roster operation, not a state).
    pub fn parse(s: &str) -> Option<Sub> {
        match s {
            "none" => Some(Sub::None),
            "to" => Some(Sub::To),
            "from" => Some(Sub::From),
            "both" => Some(Sub::Both),
            _ => None,
        }
    }

    /// The user receives the contact's presence (`to` or `both`).
    pub fn has_to(self) -> bool {
        matches!(self, Sub::To | Sub::Both)
    }

    /// The contact receives the user's presence (`from` or `both`).
    pub fn has_from(self) -> bool {
        matches!(self, Sub::From | Sub::Both)
    }

    fn from_bits(to: bool, from: bool) -> Sub {
        match (to, from) {
            (false, false) => Sub::None,
            (true, false) => Sub::To,
            (false, true) => Sub::From,
            (true, true) => Sub::Both,
        }
    }
}

/// Stored state of one contact from the point of view of one account (the user).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SubState {
    /// Who receives whose presence.
    pub sub: Sub,
    /// `ask='subscribe'`: the user asked the contact and has had no answer yet ("Pending Out").
    pub pending_out: bool,
    /// The contact asked the user and the user has not answered yet ("Pending In"). This can exist
    /// without a roster item (A.1, "None + Pending In").
    pub pending_in: bool,
    /// `approved='true'`: the user pre-approved a future request from the contact (§3.4).
    pub approved: bool,
}

impl SubState {
    /// The user receives the contact's presence (`to` or `both`).
    pub fn has_to(self) -> bool {
        self.sub.has_to()
    }

    /// The contact receives the user's presence (`from` or `both`).
    pub fn has_from(self) -> bool {
        self.sub.has_from()
    }

    /// Whether this is one of the states RFC 6121 A.1 defines (with pre-approval, §3.4, only
    /// where it can be set: on "None", "None + Pending Out" and "To").
    pub fn is_defined(self) -> bool {
        self == self.normalized()
    }

    /// Drops the flags that contradict the subscription: a request we already got an answer to
    /// (`pending_out` with `to`), a request we already granted (`pending_in` with `from`), and a
    /// pre-approval that is granted or superseded by a real request. Dropping is the safe
    /// direction: it never grants anyone presence.
    pub fn normalized(self) -> SubState {
        let from = self.has_from();
        SubState {
            sub: self.sub,
            pending_out: self.pending_out && !self.has_to(),
            pending_in: self.pending_in && !from,
            approved: self.approved && !from && !self.pending_in,
        }
    }
}

/// The four subscription-related values of a presence stanza's `type` (RFC 6121 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
}

impl Kind {
    /// All four, for callers and tests that iterate.
    pub const ALL: [Kind; 4] = [
        Kind::Subscribe,
        Kind::Subscribed,
        Kind::Unsubscribe,
        Kind::Unsubscribed,
    ];

    /// The `type` attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Subscribe => "subscribe",
            Kind::Subscribed => "subscribed",
            Kind::Unsubscribe => "unsubscribe",
            Kind::Unsubscribed => "unsubscribed",
        }
    }

    /// Parses a presence `type`; `None` for the other presence types (`probe`, `unavailable`,
    /// `error`, ...), which are not subscription stanzas.
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "subscribe" => Some(Kind::Subscribe),
            "subscribed" => Some(Kind::Subscribed),
            "unsubscribe" => Some(Kind::Unsubscribe),
            "unsubscribed" => Some(Kind::Unsubscribed),
            _ => None,
        }
    }
}

/// Presence the user's server must send to the contact on the user's behalf.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum PresenceAction {
    /// Nothing.
    #[default]
    None,
    /// Send the user's current presence from each of the user's available resources to the
    /// contact, after the routed stanza or auto-reply (§3.1.5: the contact may now see it). With no
    /// available resource, nothing (or, as Prosody does, one `unavailable`; the caller's choice).
    Current,
    /// Send `unavailable` from each of the user's available resources to the contact, before the
    /// routed stanza (§3.2.2: "while the user is still subscribed"; §3.3.3), since the contact is
    /// losing its subscription and must not be left showing the user online.
    Unavailable,
}

/// What the user's server must do for one subscription stanza.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The state to store. Equal to the input when nothing changed (after
    /// [`SubState::normalized`]; see the module doc).
    pub new_state: SubState,
    /// `new_state != state`: store it, and push the roster item to the user's interested resources
    /// if the contact is (or, with `create_item`, now becomes) a roster item.
    pub changed: bool,
    /// Outbound: route the stanza to the contact (stamped with the user's bare JID).
    /// Inbound: deliver it to the user. For an inbound `subscribe` that means to the user's
    /// available resources, or, with none, keep it with `pending_in` and deliver it at the next
    /// available presence (§3.1.3).
    pub route: bool,
    /// Inbound only: a stanza the server sends to the contact on the user's behalf, without
    /// bothering the user (`subscribed` when the contact already has or was pre-approved for a
    /// subscription, §3.1.3 and §3.4).
    pub auto_reply: Option<Kind>,
    /// Presence to send to the contact on the user's behalf.
    pub send_presence: PresenceAction,
    /// If the contact is not in the user's roster, add it. Outbound `subscribe` (§3.1.2),
    /// outbound `subscribed` approving a request (§3.1.5, the A.1 note on "None + Pending In") or
    /// recording a pre-approval (§3.4). Inbound stanzas never create roster items: an inbound
    /// request is only remembered through `pending_in` (A.1).
    pub create_item: bool,
}

/// What the user's server must do for an OUTBOUND subscription stanza of `kind` sent by the user
/// to the contact, given the stored `state` of that contact (RFC 6121 A.2).
///
/// Each `match` below is one table of Appendix A, one arm per row, in the RFC's order; the
/// private `Row` variants are the RFC's row names.
pub fn outbound(state: SubState, kind: Kind) -> Outcome {
    let s = state.normalized();
    match kind {
        Kind::Subscribe => {
            // A.2.1 (§3.1.2). Every row is routed, even those with no state change, so that a
            // contact whose server lost track of the subscription answers again. A pre-approval
            // concerns the other direction and is kept.
            let next = match Row::of(s) {
                Row::None => Row::NonePendingOut,
                Row::NonePendingOut => Row::NonePendingOut,
                Row::NonePendingIn => Row::NonePendingOutIn,
                Row::NonePendingOutIn => Row::NonePendingOutIn,
                Row::To => Row::To,
                Row::ToPendingIn => Row::ToPendingIn,
                Row::From => Row::FromPendingOut,
                Row::FromPendingOut => Row::FromPendingOut,
                Row::Both => Row::Both,
            };
            Outcome {
                create_item: true,
                ..Outcome::new(state, next.with(s.approved), true)
            }
        }

        Kind::Subscribed => {
            // A.2.2 (§3.1.5); the rows where there is no request to approve are pre-approvals
            // (§3.4), which kith supports.
            let (next, route) = match Row::of(s) {
                Row::None => (Row::None, false),                     // pre-approval
                Row::NonePendingOut => (Row::NonePendingOut, false), // pre-approval
                Row::NonePendingIn => (Row::From, true),
                Row::NonePendingOutIn => (Row::FromPendingOut, true),
                Row::To => (Row::To, false), // pre-approval
                Row::ToPendingIn => (Row::Both, true),
                Row::From => (Row::From, false),
                Row::FromPendingOut => (Row::FromPendingOut, false),
                Row::Both => (Row::Both, false),
            };
            if route {
                // An approval: route it, then let the contact see the user's presence (§3.1.5).
                // The roster item is created now if the user never added the contact (A.1).
                Outcome {
                    send_presence: PresenceAction::Current,
                    create_item: true,
                    ..Outcome::new(state, next.with(false), true)
                }
            } else if !s.has_from() {
                // A pre-approval (§3.4): note it, creating the roster item if there is none, and
                // do not route the stanza.
                Outcome {
                    create_item: true,
                    ..Outcome::new(state, next.with(true), false)
                }
            } else {
                // The contact is already subscribed: silently ignored (§3.4).
                Outcome::new(state, s, false)
            }
        }

        Kind::Unsubscribe => {
            // A.2.3 (§3.3.2). Every row is routed, like `subscribe`; a pre-approval is kept.
            let next = match Row::of(s) {
                Row::None => Row::None,
                Row::NonePendingOut => Row::None,
                Row::NonePendingIn => Row::NonePendingIn,
                Row::NonePendingOutIn => Row::NonePendingIn,
                Row::To => Row::None,
                Row::ToPendingIn => Row::NonePendingIn,
                Row::From => Row::From,
                Row::FromPendingOut => Row::From,
                Row::Both => Row::From,
            };
            Outcome::new(state, next.with(s.approved), true)
        }

        Kind::Unsubscribed => {
            // A.2.4 (§3.2.2): cancel the contact's subscription or deny its request.
            let (next, route) = match Row::of(s) {
                Row::None => (Row::None, false),
                Row::NonePendingOut => (Row::NonePendingOut, false),
                Row::NonePendingIn => (Row::None, true),
                Row::NonePendingOutIn => (Row::NonePendingOut, true),
                Row::To => (Row::To, false),
                Row::ToPendingIn => (Row::To, true),
                Row::From => (Row::None, true),
                Row::FromPendingOut => (Row::NonePendingOut, true),
                Row::Both => (Row::To, true),
            };
            // In the unrouted rows this withdraws a pre-approval, if any (§3.2.2); in the others
            // there can be none. Either way `approved` ends false.
            let out = Outcome::new(state, next.with(false), route);
            if s.has_from() {
                // Unavailable first, while the contact is still subscribed (§3.2.2).
                Outcome {
                    send_presence: PresenceAction::Unavailable,
                    ..out
                }
            } else {
                out
            }
        }
    }
}

/// What the user's server must do for an INBOUND subscription stanza of `kind` arriving from the
/// contact to the user, given the stored `state` of that contact (RFC 6121 A.3). "Route" here
/// is the RFC's "deliver?" column.
pub fn inbound(state: SubState, kind: Kind) -> Outcome {
    let s = state.normalized();
    match kind {
        Kind::Subscribe => {
            // A.3.1 (§3.1.3). A repeated request is not delivered again now; the pending one is
            // delivered again at each login until answered (§3.1.3).
            let (next, route) = match Row::of(s) {
                Row::None => (Row::NonePendingIn, true),
                Row::NonePendingOut => (Row::NonePendingOutIn, true),
                Row::NonePendingIn => (Row::NonePendingIn, false),
                Row::NonePendingOutIn => (Row::NonePendingOutIn, false),
                Row::To => (Row::ToPendingIn, true),
                Row::ToPendingIn => (Row::ToPendingIn, false),
                Row::From => (Row::From, false), // auto-reply
                Row::FromPendingOut => (Row::FromPendingOut, false), // auto-reply
                Row::Both => (Row::Both, false), // auto-reply
            };
            if s.has_from() {
                // Already subscribed: the server answers `subscribed` itself (§3.1.3 rule 2).
                // Sending current presence as well is our choice (Prosody does the same): the
                // contact evidently lost track, and is entitled to it anyway.
                Outcome {
                    auto_reply: Some(Kind::Subscribed),
                    send_presence: PresenceAction::Current,
                    ..Outcome::new(state, s, false)
                }
            } else if s.approved {
                // Pre-approved (§3.4; normalized, so no request is pending): approve on the
                // user's behalf as if the user had sent `subscribed` (A.2.2 rows "None",
                // "None + Pending Out", "To" → "From", "From + Pending Out", "Both"), without
                // delivering the request. The pre-approval is used up.
                let sub = Sub::from_bits(s.has_to(), true);
                Outcome {
                    auto_reply: Some(Kind::Subscribed),
                    send_presence: PresenceAction::Current,
                    ..Outcome::new(
                        state,
                        SubState {
                            sub,
                            approved: false,
                            ..s
                        },
                        false,
                    )
                }
            } else {
                Outcome::new(state, next.with(false), route)
            }
        }

        Kind::Subscribed => {
            // A.3.2 (§3.1.6): honoured only if the user asked; an unsolicited `subscribed` is
            // silently ignored, not delivered.
            let (next, route) = match Row::of(s) {
                Row::None => (Row::None, false),
                Row::NonePendingOut => (Row::To, true),
                Row::NonePendingIn => (Row::NonePendingIn, false),
                Row::NonePendingOutIn => (Row::ToPendingIn, true),
                Row::To => (Row::To, false),
                Row::ToPendingIn => (Row::ToPendingIn, false),
                Row::From => (Row::From, false),
                Row::FromPendingOut => (Row::Both, true),
                Row::Both => (Row::Both, false),
            };
            Outcome::new(state, next.with(s.approved), route)
        }

        Kind::Unsubscribe => {
            // A.3.3 (§3.3.3): the contact stops receiving the user's presence, or withdraws its
            // request.
            let (next, route) = match Row::of(s) {
                Row::None => (Row::None, false),
                Row::NonePendingOut => (Row::NonePendingOut, false),
                Row::NonePendingIn => (Row::None, true),
                Row::NonePendingOutIn => (Row::NonePendingOut, true),
                Row::To => (Row::To, false),
                Row::ToPendingIn => (Row::To, true),
                Row::From => (Row::None, true),
                Row::FromPendingOut => (Row::NonePendingOut, true),
                Row::Both => (Row::To, true),
            };
            let out = Outcome::new(state, next.with(s.approved), route);
            if s.has_from() {
                // The contact's subscription ends: send it unavailable from the user's
                // resources (§3.3.3 step 3).
                Outcome {
                    send_presence: PresenceAction::Unavailable,
                    ..out
                }
            } else {
                out
            }
        }

        Kind::Unsubscribed => {
            // A.3.4 (§3.2.3): the contact cancelled the user's subscription or denied the
            // request.
            let (next, route) = match Row::of(s) {
                Row::None => (Row::None, false),
                Row::NonePendingOut => (Row::None, true),
                Row::NonePendingIn => (Row::NonePendingIn, false),
                Row::NonePendingOutIn => (Row::NonePendingIn, true),
                Row::To => (Row::None, true),
                Row::ToPendingIn => (Row::NonePendingIn, true),
                Row::From => (Row::From, false),
                Row::FromPendingOut => (Row::From, true),
                Row::Both => (Row::From, true),
            };
            Outcome::new(state, next.with(s.approved), route)
        }
    }
}

/// May the user's presence be sent to the contact (`from` or `both`)? Broadcasts of available
/// and unavailable presence go to exactly these contacts (RFC 6121 §4.2.2, §4.5.2), and a probe
/// from the contact is answered only if this holds (§4.3.2).
pub fn presence_to(state: SubState) -> bool {
    state.normalized().has_from()
}

/// Does the user receive the contact's presence (`to` or `both`)? These are the contacts the
/// server probes when the user sends initial presence (§4.2.2).
pub fn presence_from(state: SubState) -> bool {
    state.normalized().has_to()
}

/// Must storage keep a record for this contact? Yes if it is a roster item; otherwise only while
/// a request from the contact is pending, since A.1 keeps "None + Pending In" without a roster
/// item. Such a record is not shown in roster results or pushes.
pub fn keep_record(state: SubState, in_roster: bool) -> bool {
    in_roster || state.normalized().pending_in
}

/// What the user's server must send when the user removes the contact from the roster (RFC 6121
/// §2.5.2), before deleting the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Removal {
    /// Route `unsubscribe` to the contact: the user had, or had asked for, the contact's presence.
    pub unsubscribe: bool,
    /// Route `unsubscribed` to the contact: the contact had, or had asked for, the user's presence.
    pub unsubscribed: bool,
    /// Presence for the contact, sent before the `unsubscribed`.
    pub send_presence: PresenceAction,
}

/// See [`Removal`]. Pending requests are cancelled as well as subscriptions (as Prosody does): a
/// removed contact must not later turn into a subscription the user no longer remembers.
pub fn remove_item(state: SubState) -> Removal {
    let s = state.normalized();
    Removal {
        unsubscribe: s.has_to() || s.pending_out,
        unsubscribed: s.has_from() || s.pending_in,
        send_presence: if s.has_from() {
            PresenceAction::Unavailable
        } else {
            PresenceAction::None
        },
    }
}

impl Outcome {
    /// An outcome with no auto-reply, presence or item creation; `changed` is derived.
    fn new(old: SubState, new_state: SubState, route: bool) -> Outcome {
        Outcome {
            new_state,
            changed: new_state != old,
            route,
            auto_reply: None,
            send_presence: PresenceAction::None,
            create_item: false,
        }
    }
}

/// The nine defined states of RFC 6121 A.1, without the pre-approval flag. The tables of A.2 and
/// A.3 are written over these rows, and so are [`outbound`] and [`inbound`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Row {
    None,
    NonePendingOut,
    NonePendingIn,
    NonePendingOutIn,
    To,
    ToPendingIn,
    From,
    FromPendingOut,
    Both,
}

impl Row {
    /// The row of a normalized state.
    fn of(s: SubState) -> Row {
        match (s.sub, s.pending_out, s.pending_in) {
            (Sub::None, false, false) => Row::None,
            (Sub::None, true, false) => Row::NonePendingOut,
            (Sub::None, false, true) => Row::NonePendingIn,
            (Sub::None, true, true) => Row::NonePendingOutIn,
            (Sub::To, _, false) => Row::To,
            (Sub::To, _, true) => Row::ToPendingIn,
            (Sub::From, false, _) => Row::From,
            (Sub::From, true, _) => Row::FromPendingOut,
            (Sub::Both, _, _) => Row::Both,
        }
    }

    /// The state of this row with the given pre-approval flag.
    fn with(self, approved: bool) -> SubState {
        let (to, from, pending_out, pending_in) = match self {
            Row::None => (false, false, false, false),
            Row::NonePendingOut => (false, false, true, false),
            Row::NonePendingIn => (false, false, false, true),
            Row::NonePendingOutIn => (false, false, true, true),
            Row::To => (true, false, false, false),
            Row::ToPendingIn => (true, false, false, true),
            Row::From => (false, true, false, false),
            Row::FromPendingOut => (false, true, true, false),
            Row::Both => (true, true, false, false),
        };
        SubState {
            sub: Sub::from_bits(to, from),
            pending_out,
            pending_in,
            approved,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Kind::{Subscribe, Subscribed, Unsubscribe, Unsubscribed};

    /// States in the RFC's words, lower-cased: "none", "none+out", "none+in", "none+out+in",
    /// "to", "to+in", "from", "from+out", "both"; "+approved" adds a pre-approval.
    fn st(text: &str) -> SubState {
        let mut parts = text.split('+');
        let sub = Sub::parse(parts.next().unwrap()).unwrap();
        let mut s = SubState {
            sub,
            ..SubState::default()
        };
        for flag in parts {
            match flag {
                "out" => s.pending_out = true,
                "in" => s.pending_in = true,
                "approved" => s.approved = true,
                other => panic!("bad flag {other}"),
            }
        }
        s
    }

    const Y: bool = true;
    const N: bool = false;
    const NO_REPLY: Option<Kind> = None;
    const REPLY: Option<Kind> = Some(Subscribed);
    const P_NONE: PresenceAction = PresenceAction::None;
    const P_CUR: PresenceAction = PresenceAction::Current;
    const P_UNAV: PresenceAction = PresenceAction::Unavailable;

    type TableRow = (
        &'static str,
        Kind,
        &'static str,
        bool,
        Option<Kind>,
        PresenceAction,
    );

    /// (state, kind, expected state, route?, auto-reply, presence): one line per row of RFC 6121
    /// A.2, plus the pre-approval rows of §3.4.
    #[rustfmt::skip]
    const OUTBOUND: &[TableRow] = &[
        // A.2.1 outbound subscribe: always routed.
        ("none",              Subscribe,    "none+out",          Y, NO_REPLY, P_NONE),
        ("none+out",          Subscribe,    "none+out",          Y, NO_REPLY, P_NONE),
        ("none+in",           Subscribe,    "none+out+in",       Y, NO_REPLY, P_NONE),
        ("none+out+in",       Subscribe,    "none+out+in",       Y, NO_REPLY, P_NONE),
        ("to",                Subscribe,    "to",                Y, NO_REPLY, P_NONE),
        ("to+in",             Subscribe,    "to+in",             Y, NO_REPLY, P_NONE),
        ("from",              Subscribe,    "from+out",          Y, NO_REPLY, P_NONE),
        ("from+out",          Subscribe,    "from+out",          Y, NO_REPLY, P_NONE),
        ("both",              Subscribe,    "both",              Y, NO_REPLY, P_NONE),
        ("none+approved",     Subscribe,    "none+out+approved", Y, NO_REPLY, P_NONE),
        // A.2.2 outbound subscribed; "None", "None + Pending Out" and "To" are pre-approvals.
        ("none",              Subscribed,   "none+approved",     N, NO_REPLY, P_NONE),
        ("none+out",          Subscribed,   "none+out+approved", N, NO_REPLY, P_NONE),
        ("none+in",           Subscribed,   "from",              Y, NO_REPLY, P_CUR),
        ("none+out+in",       Subscribed,   "from+out",          Y, NO_REPLY, P_CUR),
        ("to",                Subscribed,   "to+approved",       N, NO_REPLY, P_NONE),
        ("to+in",             Subscribed,   "both",              Y, NO_REPLY, P_CUR),
        ("from",              Subscribed,   "from",              N, NO_REPLY, P_NONE),
        ("from+out",          Subscribed,   "from+out",          N, NO_REPLY, P_NONE),
        ("both",              Subscribed,   "both",              N, NO_REPLY, P_NONE),
        ("none+approved",     Subscribed,   "none+approved",     N, NO_REPLY, P_NONE),
        // A.2.3 outbound unsubscribe: always routed.
        ("none",              Unsubscribe,  "none",              Y, NO_REPLY, P_NONE),
        ("none+out",          Unsubscribe,  "none",              Y, NO_REPLY, P_NONE),
        ("none+in",           Unsubscribe,  "none+in",           Y, NO_REPLY, P_NONE),
        ("none+out+in",       Unsubscribe,  "none+in",           Y, NO_REPLY, P_NONE),
        ("to",                Unsubscribe,  "none",              Y, NO_REPLY, P_NONE),
        ("to+in",             Unsubscribe,  "none+in",           Y, NO_REPLY, P_NONE),
        ("from",              Unsubscribe,  "from",              Y, NO_REPLY, P_NONE),
        ("from+out",          Unsubscribe,  "from",              Y, NO_REPLY, P_NONE),
        ("both",              Unsubscribe,  "from",              Y, NO_REPLY, P_NONE),
        ("to+approved",       Unsubscribe,  "none+approved",     Y, NO_REPLY, P_NONE),
        // A.2.4 outbound unsubscribed; cancelling a pre-approval is not routed (§3.2.2).
        ("none",              Unsubscribed, "none",              N, NO_REPLY, P_NONE),
        ("none+out",          Unsubscribed, "none+out",          N, NO_REPLY, P_NONE),
        ("none+in",           Unsubscribed, "none",              Y, NO_REPLY, P_NONE),
        ("none+out+in",       Unsubscribed, "none+out",          Y, NO_REPLY, P_NONE),
        ("to",                Unsubscribed, "to",                N, NO_REPLY, P_NONE),
        ("to+in",             Unsubscribed, "to",                Y, NO_REPLY, P_NONE),
        ("from",              Unsubscribed, "none",              Y, NO_REPLY, P_UNAV),
        ("from+out",          Unsubscribed, "none+out",          Y, NO_REPLY, P_UNAV),
        ("both",              Unsubscribed, "to",                Y, NO_REPLY, P_UNAV),
        ("none+approved",     Unsubscribed, "none",              N, NO_REPLY, P_NONE),
        ("none+out+approved", Unsubscribed, "none+out",          N, NO_REPLY, P_NONE),
        ("to+approved",       Unsubscribed, "to",                N, NO_REPLY, P_NONE),
    ];

    /// (state, kind, expected state, deliver?, auto-reply, presence): one line per row of RFC
    /// 6121 A.3, plus the pre-approval rows of §3.4.
    #[rustfmt::skip]
    const INBOUND: &[TableRow] = &[
        // A.3.1 inbound subscribe.
        ("none",              Subscribe,    "none+in",           Y, NO_REPLY, P_NONE),
        ("none+out",          Subscribe,    "none+out+in",       Y, NO_REPLY, P_NONE),
        ("none+in",           Subscribe,    "none+in",           N, NO_REPLY, P_NONE),
        ("none+out+in",       Subscribe,    "none+out+in",       N, NO_REPLY, P_NONE),
        ("to",                Subscribe,    "to+in",             Y, NO_REPLY, P_NONE),
        ("to+in",             Subscribe,    "to+in",             N, NO_REPLY, P_NONE),
        ("from",              Subscribe,    "from",              N, REPLY,    P_CUR),
        ("from+out",          Subscribe,    "from+out",          N, REPLY,    P_CUR),
        ("both",              Subscribe,    "both",              N, REPLY,    P_CUR),
        ("none+approved",     Subscribe,    "from",              N, REPLY,    P_CUR),
        ("none+out+approved", Subscribe,    "from+out",          N, REPLY,    P_CUR),
        ("to+approved",       Subscribe,    "both",              N, REPLY,    P_CUR),
        // A.3.2 inbound subscribed: only if we asked.
        ("none",              Subscribed,   "none",              N, NO_REPLY, P_NONE),
        ("none+out",          Subscribed,   "to",                Y, NO_REPLY, P_NONE),
        ("none+in",           Subscribed,   "none+in",           N, NO_REPLY, P_NONE),
        ("none+out+in",       Subscribed,   "to+in",             Y, NO_REPLY, P_NONE),
        ("to",                Subscribed,   "to",                N, NO_REPLY, P_NONE),
        ("to+in",             Subscribed,   "to+in",             N, NO_REPLY, P_NONE),
        ("from",              Subscribed,   "from",              N, NO_REPLY, P_NONE),
        ("from+out",          Subscribed,   "both",              Y, NO_REPLY, P_NONE),
        ("both",              Subscribed,   "both",              N, NO_REPLY, P_NONE),
        ("none+out+approved", Subscribed,   "to+approved",       Y, NO_REPLY, P_NONE),
        // A.3.3 inbound unsubscribe.
        ("none",              Unsubscribe,  "none",              N, NO_REPLY, P_NONE),
        ("none+out",          Unsubscribe,  "none+out",          N, NO_REPLY, P_NONE),
        ("none+in",           Unsubscribe,  "none",              Y, NO_REPLY, P_NONE),
        ("none+out+in",       Unsubscribe,  "none+out",          Y, NO_REPLY, P_NONE),
        ("to",                Unsubscribe,  "to",                N, NO_REPLY, P_NONE),
        ("to+in",             Unsubscribe,  "to",                Y, NO_REPLY, P_NONE),
        ("from",              Unsubscribe,  "none",              Y, NO_REPLY, P_UNAV),
        ("from+out",          Unsubscribe,  "none+out",          Y, NO_REPLY, P_UNAV),
        ("both",              Unsubscribe,  "to",                Y, NO_REPLY, P_UNAV),
        ("none+approved",     Unsubscribe,  "none+approved",     N, NO_REPLY, P_NONE),
        // A.3.4 inbound unsubscribed.
        ("none",              Unsubscribed, "none",              N, NO_REPLY, P_NONE),
        ("none+out",          Unsubscribed, "none",              Y, NO_REPLY, P_NONE),
        ("none+in",           Unsubscribed, "none+in",           N, NO_REPLY, P_NONE),
        ("none+out+in",       Unsubscribed, "none+in",           Y, NO_REPLY, P_NONE),
        ("to",                Unsubscribed, "none",              Y, NO_REPLY, P_NONE),
        ("to+in",             Unsubscribed, "none+in",           Y, NO_REPLY, P_NONE),
        ("from",              Unsubscribed, "from",              N, NO_REPLY, P_NONE),
        ("from+out",          Unsubscribed, "from",              Y, NO_REPLY, P_NONE),
        ("both",              Unsubscribed, "from",              Y, NO_REPLY, P_NONE),
        ("to+approved",       Unsubscribed, "none+approved",     Y, NO_REPLY, P_NONE),
    ];

    fn check_table(name: &str, table: &[TableRow], f: fn(SubState, Kind) -> Outcome) {
        let mut failures = Vec::new();
        for &(state, kind, expected, route, reply, presence) in table {
            let got = f(st(state), kind);
            let want = (st(expected), route, reply, presence);
            let have = (got.new_state, got.route, got.auto_reply, got.send_presence);
            if have != want {
                let kind = kind.as_str();
                failures.push(format!(
                    "{name} {state} {kind}:\n want {want:?}\n got  {have:?}"
                ));
            }
            assert_eq!(got.changed, got.new_state != st(state), "{state} {kind:?}");
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn outbound_follows_rfc6121_a2() {
        check_table("outbound", OUTBOUND, outbound);
    }

    #[test]
    fn inbound_follows_rfc6121_a3() {
        check_table("inbound", INBOUND, inbound);
    }

    #[test]
    fn tables_cover_every_defined_row() {
        let rows = [
            "none",
            "none+out",
            "none+in",
            "none+out+in",
            "to",
            "to+in",
            "from",
            "from+out",
            "both",
        ];
        for table in [OUTBOUND, INBOUND] {
            for kind in Kind::ALL {
                for row in rows {
                    assert!(
                        table.iter().any(|r| r.0 == row && r.1 == kind),
                        "missing row {row} {kind:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn create_item_only_where_the_rfc_adds_to_the_roster() {
        for s in all_states() {
            for kind in Kind::ALL {
                assert!(!inbound(s, kind).create_item, "inbound {s:?} {kind:?}");
            }
            assert!(outbound(s, Subscribe).create_item);
            assert!(!outbound(s, Unsubscribe).create_item);
            assert!(!outbound(s, Unsubscribed).create_item);
        }
        assert!(outbound(st("none"), Subscribed).create_item); // §3.4 pre-approval
        assert!(outbound(st("none+in"), Subscribed).create_item); // §3.1.5 approval
        assert!(!outbound(st("both"), Subscribed).create_item); // ignored
    }

    /// Every combination of the four fields, including the 20 that A.1 does not define.
    fn all_states() -> Vec<SubState> {
        let mut out = Vec::new();
        for sub in [Sub::None, Sub::To, Sub::From, Sub::Both] {
            for bits in 0..8u8 {
                out.push(SubState {
                    sub,
                    pending_out: bits & 1 != 0,
                    pending_in: bits & 2 != 0,
                    approved: bits & 4 != 0,
                });
            }
        }
        out
    }

    #[test]
    fn exhaustive_invariants() {
        let states = all_states();
        assert_eq!(states.len(), 32);
        let defined: Vec<_> = states.iter().filter(|s| s.is_defined()).collect();
        // Nine A.1 states; `approved` on "None", "None + Pending Out" and "To".
        assert_eq!(defined.len(), 12);
        for &s in &states {
            for kind in Kind::ALL {
                for (dir, o) in [("out", outbound(s, kind)), ("in", inbound(s, kind))] {
                    let ctx = format!("{dir} {s:?} {kind:?} -> {o:?}");
                    assert_eq!(o.changed, o.new_state != s, "{ctx}");
                    assert!(o.new_state.is_defined(), "{ctx}");
                    // Presence goes out only where the contact may have it.
                    if o.send_presence == PresenceAction::Current {
                        assert!(presence_to(o.new_state), "{ctx}");
                    }
                    if o.send_presence == PresenceAction::Unavailable {
                        assert!(presence_to(s) && !presence_to(o.new_state), "{ctx}");
                    }
                    // A stanza is either handled by the server or passed on, never both.
                    assert!(!(o.route && o.auto_reply.is_some()), "{ctx}");
                    if dir == "out" {
                        assert_eq!(o.auto_reply, None, "{ctx}");
                    }
                    // Running the same stanza twice is a no-op the second time, except an
                    // outbound subscribe/unsubscribe, which is always routed.
                    let again = if dir == "out" {
                        outbound(o.new_state, kind)
                    } else {
                        inbound(o.new_state, kind)
                    };
                    assert!(!again.changed, "twice: {ctx}");
                }
                // A defined state is never rewritten by an ignored stanza.
                if s.is_defined() {
                    for o in [outbound(s, kind), inbound(s, kind)] {
                        if !o.route && o.auto_reply.is_none() && o.new_state != s {
                            // Only pre-approval bookkeeping changes silently.
                            assert_eq!(
                                SubState {
                                    approved: s.approved,
                                    ..o.new_state
                                },
                                s,
                                "{s:?} {kind:?}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn undefined_states_are_repaired_never_trusted() {
        // `ask` left over on a granted subscription: dropped, and written back.
        let o = inbound(st("both+out"), Subscribed);
        assert_eq!((o.new_state, o.changed, o.route), (st("both"), true, false));
        // A pre-approval next to a real pending request does not auto-approve it.
        let o = inbound(st("none+in+approved"), Subscribe);
        assert_eq!((o.new_state, o.auto_reply), (st("none+in"), None));
        assert!(!presence_to(st("none+in+approved")));
    }

    #[test]
    fn names_round_trip() {
        for sub in [Sub::None, Sub::To, Sub::From, Sub::Both] {
            assert_eq!(Sub::parse(sub.as_str()), Some(sub));
        }
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(Sub::parse("remove"), None);
        assert_eq!(Kind::parse("probe"), None);
        assert_eq!(Kind::parse("Subscribe"), None);
    }

    #[test]
    fn presence_directions() {
        for (s, to, from) in [
            ("none+out+in", N, N),
            ("to", N, Y),
            ("from", Y, N),
            ("both", Y, Y),
            ("none+approved", N, N),
        ] {
            assert_eq!(
                (presence_to(st(s)), presence_from(st(s))),
                (to, from),
                "{s}"
            );
        }
    }

    #[test]
    fn records_without_roster_items() {
        assert!(keep_record(st("none+in"), false));
        assert!(!keep_record(st("none"), false));
        assert!(keep_record(st("none"), true));
    }

    #[test]
    fn removing_an_item_cancels_both_directions() {
        let r = remove_item(st("both"));
        assert_eq!(
            (r.unsubscribe, r.unsubscribed, r.send_presence),
            (Y, Y, P_UNAV)
        );
        let r = remove_item(st("none+out+in"));
        assert_eq!(
            (r.unsubscribe, r.unsubscribed, r.send_presence),
            (Y, Y, P_NONE)
        );
        let r = remove_item(st("to+approved"));
        assert_eq!((r.unsubscribe, r.unsubscribed), (Y, N));
        let r = remove_item(st("none"));
        assert_eq!((r.unsubscribe, r.unsubscribed), (N, N));
    }

    /// Two accounts on (possibly) two servers: alice's stored state for bob, and bob's for alice.
    /// `send` runs the sender's outbound processing, routes to the receiver's inbound
    /// processing, and routes any auto-reply back; the log says what each user's clients see.
    #[derive(Default)]
    struct Pair {
        alice: SubState,
        bob: SubState,
        log: Vec<String>,
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Who {
        Alice,
        Bob,
    }

    impl Who {
        fn other(self) -> Who {
            match self {
                Who::Alice => Who::Bob,
                Who::Bob => Who::Alice,
            }
        }
    }

    fn name(who: Who) -> &'static str {
        match who {
            Who::Alice => "alice",
            Who::Bob => "bob",
        }
    }

    impl Pair {
        fn state(&mut self, who: Who) -> &mut SubState {
            match who {
                Who::Alice => &mut self.alice,
                Who::Bob => &mut self.bob,
            }
        }

        /// `who` runs `action` towards the other account, logged as e.g. "bob's presence to
        /// alice: Current".
        fn presence(&mut self, who: Who, action: PresenceAction) {
            let line = format!(
                "{}'s presence to {}: {action:?}",
                name(who),
                name(who.other())
            );
            self.log.push(line);
        }

        fn send(&mut self, from: Who, kind: Kind) {
            let out = outbound(*self.state(from), kind);
            *self.state(from) = out.new_state;
            // Unavailable goes out before the stanza that ends the subscription, current
            // presence after the one that grants it (PresenceAction docs).
            if out.send_presence == PresenceAction::Unavailable {
                self.presence(from, out.send_presence);
            }
            if out.route {
                self.receive(from.other(), kind);
            }
            if out.send_presence == PresenceAction::Current {
                self.presence(from, out.send_presence);
            }
        }

        fn receive(&mut self, who: Who, kind: Kind) {
            let inb = inbound(*self.state(who), kind);
            *self.state(who) = inb.new_state;
            if inb.route {
                let line = format!("{} receives {}", name(who), kind.as_str());
                self.log.push(line);
            }
            if let Some(reply) = inb.auto_reply {
                self.receive(who.other(), reply);
            }
            if inb.send_presence != PresenceAction::None {
                self.presence(who, inb.send_presence);
            }
        }

        fn alice(&mut self, kind: Kind) -> &mut Self {
            self.send(Who::Alice, kind);
            self
        }

        fn bob(&mut self, kind: Kind) -> &mut Self {
            self.send(Who::Bob, kind);
            self
        }

        fn expect(&mut self, alice: &str, bob: &str, log: &[&str]) -> &mut Self {
            assert_eq!(
                (self.alice, self.bob),
                (st(alice), st(bob)),
                "log: {:?}",
                self.log
            );
            assert_eq!(self.log, log);
            self.log.clear();
            self
        }
    }

    #[test]
    fn handshake_request_approve_then_mutual() {
        Pair::default()
            .alice(Subscribe)
            .expect("none+out", "none+in", &["bob receives subscribe"])
            .bob(Subscribed)
            .expect(
                "to",
                "from",
                &[
                    "alice receives subscribed",
                    "bob's presence to alice: Current",
                ],
            )
            .bob(Subscribe)
            .expect("to+in", "from+out", &["alice receives subscribe"])
            .alice(Subscribed)
            .expect(
                "both",
                "both",
                &[
                    "bob receives subscribed",
                    "alice's presence to bob: Current",
                ],
            );
    }

    #[test]
    fn handshake_crossed_requests() {
        Pair::default()
            .alice(Subscribe)
            .bob(Subscribe)
            .expect(
                "none+out+in",
                "none+out+in",
                &["bob receives subscribe", "alice receives subscribe"],
            )
            .bob(Subscribed)
            .expect(
                "to+in",
                "from+out",
                &[
                    "alice receives subscribed",
                    "bob's presence to alice: Current",
                ],
            )
            .alice(Subscribed)
            .expect(
                "both",
                "both",
                &[
                    "bob receives subscribed",
                    "alice's presence to bob: Current",
                ],
            );
    }

    fn mutual() -> Pair {
        let mut p = Pair::default();
        p.alice(Subscribe)
            .bob(Subscribed)
            .bob(Subscribe)
            .alice(Subscribed);
        p.log.clear();
        assert_eq!((p.alice, p.bob), (st("both"), st("both")));
        p
    }

    #[test]
    fn unsubscribe_from_both() {
        mutual()
            .alice(Unsubscribe)
            .expect(
                "from",
                "to",
                &[
                    "bob receives unsubscribe",
                    "bob's presence to alice: Unavailable",
                ],
            )
            .alice(Unsubscribe) // repeated: routed, ignored by bob
            .expect("from", "to", &[]);
    }

    #[test]
    fn cancel_from_both() {
        mutual()
            .bob(Unsubscribed)
            .expect(
                "from",
                "to",
                &[
                    "bob's presence to alice: Unavailable",
                    "alice receives unsubscribed",
                ],
            )
            .alice(Unsubscribed)
            .expect(
                "none",
                "none",
                &[
                    "alice's presence to bob: Unavailable",
                    "bob receives unsubscribed",
                ],
            );
    }

    #[test]
    fn deny_request() {
        Pair::default().alice(Subscribe).bob(Unsubscribed).expect(
            "none",
            "none",
            &["bob receives subscribe", "alice receives unsubscribed"],
        );
    }

    #[test]
    fn withdraw_request_before_answer() {
        Pair::default().alice(Subscribe).alice(Unsubscribe).expect(
            "none",
            "none",
            &["bob receives subscribe", "bob receives unsubscribe"],
        );
    }

    #[test]
    fn pre_approval_is_used_without_asking_bob() {
        let mut p = Pair::default();
        let o = outbound(p.bob, Subscribed);
        assert!(o.create_item && o.changed && !o.route);
        p.bob(Subscribed)
            .expect("none", "none+approved", &[])
            .alice(Subscribe)
            .expect(
                "to",
                "from",
                &[
                    "alice receives subscribed",
                    "bob's presence to alice: Current",
                ],
            );
    }

    #[test]
    fn pre_approval_can_be_withdrawn() {
        Pair::default()
            .bob(Subscribed)
            .bob(Unsubscribed)
            .expect("none", "none", &[])
            .alice(Subscribe)
            .expect("none+out", "none+in", &["bob receives subscribe"]);
    }

    #[test]
    fn pre_approval_survives_bobs_own_request() {
        Pair::default()
            .bob(Subscribed)
            .bob(Subscribe)
            .expect(
                "none+in",
                "none+out+approved",
                &["alice receives subscribe"],
            )
            .alice(Subscribe)
            .expect(
                "to+in",
                "from+out",
                &[
                    "alice receives subscribed",
                    "bob's presence to alice: Current",
                ],
            );
    }

    #[test]
    fn resubscribe_when_already_subscribed_is_answered_by_the_server() {
        // Alice's server lost its state (restored backup); bob's still says "from".
        let mut p = Pair {
            bob: st("from"),
            ..Pair::default()
        };
        p.alice(Subscribe).expect(
            "to",
            "from",
            &[
                "alice receives subscribed",
                "bob's presence to alice: Current",
            ],
        );
        // Asking again while subscribed changes nothing and bothers nobody.
        p.alice(Subscribe)
            .expect("to", "from", &["bob's presence to alice: Current"]);
    }

    #[test]
    fn unsolicited_subscribed_is_ignored() {
        Pair::default()
            .bob(Subscribed) // a pre-approval on bob's side; nothing routed
            .expect("none", "none+approved", &[]);
        let o = inbound(st("none"), Subscribed);
        assert!(!o.route && !o.changed);
    }
}
