//! XEP-0077 In-Band Registration, both sides of authentication:
//! - before it (`pre_auth`, called by `session::c2s` on an unauthenticated stream, RFC 6120
//!   allows no other iq there): the registration form, account creation, and the XEP-0401 /
//!   XEP-0445 `<preauth xmlns='urn:xmpp:pars:0' token='…'/>` iq that carries an invite token
//!   (Conversations sends it before the register get, as Prosody's mod_invites_register
//!   expects);
//! - after it (`handle`): the form of the own account (§3.2.1 "already registered"), password
//!   change (§3.3) and account removal (§3.2.2, after which the stream closes).
//!
//! `create_account` is the one path that makes an account for a stranger: in-band and web
//! registration (`http::invite`) both use it, so policy, throttle, username rules, invite
//! effects (mutual contact with the inviter, circles, admin flag) and the admins'
//! notification are the same for both.

use std::net::IpAddr;
use std::time::Instant;

use crate::accounts::{self, AccountError};
use crate::config::RegistrationPolicy;
use crate::invites;
use crate::jid::FullJid;
use crate::jid::{BareJid, Jid};
use crate::router::{bounce, deliver_reply};
use crate::server::Server;
use crate::stanza::{self, ns, Condition, StanzaError, StreamError};
use crate::store::{Invite, StoreError};
use crate::xml::Element;

/// The iq handler for `jabber:iq:register`, addressed to the server or the user's own account.
pub async fn handle(srv: &Server, from: &FullJid, iq: Element) {
    let Some(q) = iq.get_child("query", ns::REGISTER) else {
        return bounce(srv, &iq, Condition::BadRequest.into());
    };
    let me = from.to_bare();
    let username = me.node().unwrap_or_default().to_string();
    match iq.attr("type") {
        Some("get") => {
            let reply = Element::new("query", ns::REGISTER)
                .with_child(Element::new("registered", ns::REGISTER))
                .with_child(Element::new("username", ns::REGISTER).with_text(username))
                .with_child(Element::new("password", ns::REGISTER));
            deliver_reply(srv, stanza::iq_result(&iq, Some(reply)));
        }
        Some("set") if q.has_child("remove", ns::REGISTER) => {
            match accounts::delete(&srv.store, &me).await {
                Ok(()) | Err(AccountError::NotFound(_)) => {
                    log::info!("register: account {me} deleted by its user");
                    // §3.2.2: the result goes out first, then every session of the account ends.
                    deliver_reply(srv, stanza::iq_result(&iq, None));
                    srv.kick_account(&me, StreamError::NotAuthorized);
                }
                Err(e) => {
                    log::error!("register: cannot delete {me}: {e}");
                    bounce(srv, &iq, Condition::InternalServerError.into());
                }
            }
        }
        Some("set") => {
            let field = |name: &str| q.get_child(name, ns::REGISTER).map(|e| e.text());
            let (Some(user), Some(password)) = (field("username"), field("password")) else {
                return bounce(srv, &iq, Condition::BadRequest.into());
            };
            // §3.3: only the user's own password; a different username is someone else.
            if !user.eq_ignore_ascii_case(&username) {
                return bounce(
                    srv,
                    &iq,
                    StanzaError::new(Condition::NotAllowed)
                        .with_text("only your own password can be changed"),
                );
            }
            if password.is_empty() {
                return bounce(
                    srv,
                    &iq,
                    StanzaError::new(Condition::NotAcceptable).with_text("the password is empty"),
                );
            }
            match accounts::passwd(&srv.store, &me, &password).await {
                Ok(()) => {
                    log::info!("register: {me} changed its password");
                    deliver_reply(srv, stanza::iq_result(&iq, None));
                }
                Err(AccountError::BadPassword(_)) => bounce(
                    srv,
                    &iq,
                    StanzaError::new(Condition::NotAcceptable)
                        .with_text("this password cannot be used"),
                ),
                Err(e) => {
                    log::error!("register: cannot change the password of {me}: {e}");
                    bounce(srv, &iq, Condition::InternalServerError.into());
                }
            }
        }
        _ => bounce(srv, &iq, Condition::BadRequest.into()),
    }
}

/// The XEP-0077 error for an account creation that `accounts::add` refused, for the
/// registration paths (in-band, invitations): a taken or tombstoned name is `conflict`, as in
/// Prosody, so a client asks for another name; the tombstone's date stays in the server's log.
pub fn creation_refused(e: &AccountError) -> StanzaError {
    match e {
        AccountError::Exists(_) | AccountError::Tombstoned { .. } => {
            StanzaError::new(Condition::Conflict).with_text("this name is not available")
        }
        AccountError::BadJid(_) => StanzaError::new(Condition::JidMalformed),
        AccountError::BadPassword(_) => {
            StanzaError::new(Condition::NotAcceptable).with_text("this password cannot be used")
        }
        AccountError::NotFound(_) | AccountError::NoTombstone(_) | AccountError::Store(_) => {
            Condition::InternalServerError.into()
        }
    }
}

/// Usernames nobody may pick for themselves (an invite reserved for one of them still works):
/// they would look official to other users or receive mail-like reports (RFC 2142).
const RESERVED_USERNAMES: &[&str] = &[
    "admin",
    "administrator",
    "root",
    "postmaster",
    "hostmaster",
    "webmaster",
    "abuse",
    "security",
    "support",
    "noreply",
    "xmpp",
    "kith",
];

/// Shortest password accepted from a stranger (admins' `kith user add` has no minimum).
pub const MIN_PASSWORD: usize = 8;

/// Why a registration was refused; `condition` is what an XMPP client sees, `message` what a
/// person sees on the web page.
#[derive(Debug, PartialEq, Eq)]
pub enum RegError {
    /// `policy = "closed"`.
    Closed,
    /// `policy = "invite"` and no token.
    InviteRequired,
    /// Unknown, expired, used-up token, or one reserved for another username.
    BadInvite,
    BadUsername(&'static str),
    ReservedUsername,
    BadPassword(&'static str),
    Conflict,
    Throttled,
    /// Already registered one account on this stream.
    OnePerStream,
    Internal,
}

impl RegError {
    pub fn error(&self) -> StanzaError {
        let (c, text) = match self {
            RegError::Closed => (
                Condition::NotAllowed,
                "registration is closed on this server",
            ),
            RegError::InviteRequired => (Condition::NotAllowed, "registration needs an invitation"),
            RegError::BadInvite => (Condition::NotAllowed, "the invitation is not valid"),
            RegError::BadUsername(t) => (Condition::NotAcceptable, *t),
            RegError::ReservedUsername => (Condition::NotAcceptable, "this username is reserved"),
            RegError::BadPassword(t) => (Condition::NotAcceptable, *t),
            RegError::Conflict => (Condition::Conflict, "this username is taken"),
            // COMPAT: Prosody answers its registration throttle with a `wait` not-acceptable;
            // policy-violation (RFC 6120) is unknown to older clients (slixmpp 1.8 reads
            // it as no condition at all).
            RegError::Throttled => {
                let mut e = StanzaError::new(Condition::NotAcceptable)
                    .with_text("too many registrations; try again in a few minutes");
                e.kind = crate::stanza::ErrorType::Wait;
                return e;
            }
            RegError::OnePerStream => (Condition::NotAllowed, "one account per connection"),
            RegError::Internal => (Condition::InternalServerError, "internal error"),
        };
        StanzaError::new(c).with_text(text)
    }

    /// A sentence for the web form.
    pub fn message(&self) -> String {
        let mut m = self
            .error()
            .text
            .unwrap_or("registration failed")
            .to_string();
        if let Some(first) = m.get(..1) {
            let upper = first.to_uppercase();
            m.replace_range(..1, &upper);
        }
        m + "."
    }
}

/// The account `username@DOMAIN`, checked: a plain localpart (no `@`, `/`, spaces), valid
/// after nodeprep, not reserved unless `allow_reserved`.
pub fn check_username(
    username: &str,
    domain: &str,
    allow_reserved: bool,
) -> Result<BareJid, RegError> {
    let u = username.trim();
    if u.is_empty() {
        return Err(RegError::BadUsername("the username is empty"));
    }
    if u.len() > 64 || u.contains(['@', '/', ' ']) {
        return Err(RegError::BadUsername(
            "a username is at most 64 characters, without @, / or spaces",
        ));
    }
    let jid = accounts::account_jid(u, domain)
        .map_err(|_| RegError::BadUsername("this username has characters that are not allowed"))?;
    let node = jid.node().unwrap_or_default();
    if !allow_reserved && RESERVED_USERNAMES.contains(&node) {
        return Err(RegError::ReservedUsername);
    }
    Ok(jid)
}

fn check_password(password: &str) -> Result<(), RegError> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(RegError::BadPassword(
            "the password needs at least 8 characters",
        ));
    }
    Ok(())
}

/// How an account came to be, for the log and the admins' message.
pub enum Via<'a> {
    InBand(&'a str),
    Web,
}

/// Creates an account for someone who is not logged in: with an invite `token`, or under
/// open registration (throttled per `peer` address). On success the invite's effects are
/// applied and the admins told.
pub async fn create_account(
    srv: &Server,
    username: &str,
    password: &str,
    token: Option<&str>,
    peer: IpAddr,
    via: Via<'_>,
) -> Result<BareJid, RegError> {
    let policy = srv.config.registration.policy;
    if policy == RegistrationPolicy::Closed {
        return Err(RegError::Closed);
    }
    let invite = match token {
        Some(t) if invites::is_token(t) => match srv.store.invite(t).await {
            Ok(Some(i)) if invites::usable(&i, crate::time::now_unix()).is_ok() => Some(i),
            Ok(_) => return Err(RegError::BadInvite),
            Err(e) => {
                log::error!("register: cannot read invite: {e}");
                return Err(RegError::Internal);
            }
        },
        Some(_) => return Err(RegError::BadInvite),
        None if policy == RegistrationPolicy::Invite => return Err(RegError::InviteRequired),
        None => None,
    };
    let reserved_for = invite.as_ref().and_then(|i| i.username.as_deref());
    if reserved_for.is_some_and(|u| !u.eq_ignore_ascii_case(username.trim())) {
        return Err(RegError::BadInvite);
    }
    let jid = check_username(username, srv.domain(), reserved_for.is_some())?;
    check_password(password)?;
    if srv
        .store
        .account(jid.as_ref())
        .await
        .ok()
        .flatten()
        .is_some()
    {
        return Err(RegError::Conflict);
    }
    let reuse = accounts::Reuse::configured(&srv.config.registration);
    match accounts::name_held(&srv.store, &jid, reuse).await {
        Ok(false) => {}
        Ok(true) => {
            log::info!("register: {jid} refused: the name of a deleted account stays reserved");
            return Err(RegError::Conflict);
        }
        Err(e) => {
            log::error!("register: cannot check {jid}: {e}");
            return Err(RegError::Internal);
        }
    }
    if invite.is_none()
        && !srv
            .registration
            .admit(peer, srv.config.registration.throttle, Instant::now())
    {
        log::info!("register: open registration from {peer} throttled");
        return Err(RegError::Throttled);
    }
    let pw = password.to_string();
    let blob = match smol::unblock(move || accounts::creds_blob(&pw)).await {
        Ok(b) => b,
        Err(_) => return Err(RegError::BadPassword("this password cannot be used")),
    };
    let node = jid.node().unwrap_or_default().to_string();
    let used: Option<Invite> = match (token, &invite) {
        (Some(t), Some(_)) => {
            let now = crate::time::now_unix();
            match srv
                .store
                .create_account_with_invite(jid.as_ref(), &node, blob, t, now, accounts::FLAG_ADMIN)
                .await
            {
                Ok(Some(i)) => Some(i),
                Ok(None) => return Err(RegError::BadInvite),
                Err(StoreError::AlreadyExists(_)) => return Err(RegError::Conflict),
                Err(e) => {
                    log::error!("register: cannot create {jid}: {e}");
                    return Err(RegError::Internal);
                }
            }
        }
        _ => match srv.store.create_account(jid.as_ref(), blob).await {
            Ok(()) => None,
            Err(StoreError::AlreadyExists(_)) => return Err(RegError::Conflict),
            Err(e) => {
                log::error!("register: cannot create {jid}: {e}");
                return Err(RegError::Internal);
            }
        },
    };
    let how = match (&via, &used) {
        (Via::InBand(tag), Some(_)) => format!("in-band with an invite ({tag})"),
        (Via::InBand(tag), None) => format!("in-band, open registration ({tag})"),
        (Via::Web, Some(_)) => "on the web with an invite".to_string(),
        (Via::Web, None) => "on the web, open registration".to_string(),
    };
    log::info!("register: account {jid} created {how} from {peer}");
    if let Some(invite) = &used {
        after_invite(srv, &jid, invite).await;
    }
    notify_admins(srv, &jid, used.as_ref()).await;
    Ok(jid)
}

/// XEP-0379: the invitee and the inviter become mutual contacts; circles are synced for the
/// invite's groups (membership was written with the account).
async fn after_invite(srv: &Server, jid: &BareJid, invite: &Invite) {
    if let Ok(inviter) = BareJid::parse(&invite.created_by) {
        if inviter != *jid
            && srv
                .store
                .account(inviter.as_ref())
                .await
                .ok()
                .flatten()
                .is_some()
        {
            crate::circles::befriend(srv, jid, &inviter).await;
        }
    }
    if !invite.groups.is_empty() {
        crate::circles::sync(srv).await;
    }
}

/// Prosody's watchregistrations: a chat message from the server to each admin in `admins`.
async fn notify_admins(srv: &Server, jid: &BareJid, invite: Option<&Invite>) {
    if !srv.config.registration.notify_admins {
        return;
    }
    let how = match invite {
        Some(i) if !i.created_by.is_empty() => format!(" (invited by {})", i.created_by),
        Some(_) => " (with an invite)".to_string(),
        None => " (open registration)".to_string(),
    };
    let Ok(server) = Jid::parse(srv.domain()) else {
        return;
    };
    for admin in &srv.config.admins {
        let msg = Element::new("message", ns::CLIENT)
            .with_attr("type", "chat")
            .with_attr("from", srv.domain())
            .with_attr("to", admin.as_str())
            .with_attr("id", crate::session::c2s::new_id())
            .with_child(
                Element::new("body", ns::CLIENT)
                    .with_text(format!("New account registered: {jid}{how}")),
            );
        crate::router::route_from_remote(srv, &server, msg).await;
    }
}

/// Registration state of one unauthenticated stream.
#[derive(Default)]
pub struct PreAuth {
    /// The token of a `<preauth/>` iq the server accepted.
    token: Option<String>,
    registered: bool,
}

/// Whether this server lets unauthenticated streams register (the stream feature is offered).
pub fn offered(srv: &Server) -> bool {
    srv.config.registration.policy != RegistrationPolicy::Closed
}

/// Answers an iq on an unauthenticated stream. `None` when it is not a registration iq (the
/// stream then ends: RFC 6120 allows nothing else before authentication).
pub async fn pre_auth(
    srv: &Server,
    st: &mut PreAuth,
    iq: &Element,
    peer: IpAddr,
    tag: &str,
) -> Option<Element> {
    if !iq.is("iq", ns::CLIENT) || !offered(srv) {
        return None;
    }
    let reply = |r: Result<Option<Element>, StanzaError>| match r {
        Ok(payload) => stanza::iq_result(iq, payload),
        Err(e) => stanza::error_reply(iq, &e),
    };
    let ty = iq.attr("type");
    if let Some(p) = iq.get_child("preauth", ns::PARS) {
        if ty != Some("set") {
            return Some(reply(Err(Condition::BadRequest.into())));
        }
        let token = p.attr("token").unwrap_or_default();
        let ok = invites::is_token(token)
            && matches!(srv.store.invite(token).await,
                Ok(Some(i)) if invites::usable(&i, crate::time::now_unix()).is_ok());
        if !ok {
            log::info!("{tag}: invalid invite token from {peer}");
            return Some(reply(Err(
                StanzaError::new(Condition::ItemNotFound).with_text("the invitation is not valid")
            )));
        }
        log::debug!("{tag}: invite token accepted");
        st.token = Some(token.to_string());
        return Some(reply(Ok(None)));
    }
    let q = iq.get_child("query", ns::REGISTER)?;
    match ty {
        Some("get") => {
            let mut form = Element::new("query", ns::REGISTER).with_child(
                Element::new("instructions", ns::REGISTER)
                    .with_text("Choose a username and password."),
            );
            let reserved = match &st.token {
                Some(t) => srv
                    .store
                    .invite(t)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|i| i.username),
                None => None,
            };
            form.push_child(
                Element::new("username", ns::REGISTER).with_text(reserved.unwrap_or_default()),
            );
            form.push_child(Element::new("password", ns::REGISTER));
            Some(reply(Ok(Some(form))))
        }
        Some("set") => {
            if q.has_child("remove", ns::REGISTER) {
                return Some(reply(Err(Condition::NotAuthorized.into())));
            }
            if st.registered {
                return Some(reply(Err(RegError::OnePerStream.error())));
            }
            let field = |name: &str| q.get_child(name, ns::REGISTER).map(|e| e.text());
            let (Some(user), Some(password)) = (field("username"), field("password")) else {
                return Some(reply(Err(Condition::BadRequest.into())));
            };
            let r = create_account(
                srv,
                &user,
                &password,
                st.token.as_deref(),
                peer,
                Via::InBand(tag),
            )
            .await;
            match r {
                Ok(_) => {
                    st.registered = true;
                    Some(reply(Ok(None)))
                }
                Err(e) => {
                    log::info!("{tag}: registration from {peer} refused: {e:?}");
                    Some(reply(Err(e.error())))
                }
            }
        }
        _ => Some(reply(Err(Condition::BadRequest.into()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tombstoned_name_is_a_conflict() {
        let e = AccountError::Tombstoned {
            jid: "alice@x".into(),
            deleted_at: 0,
        };
        assert_eq!(creation_refused(&e).condition, Condition::Conflict);
        let e = AccountError::Exists("alice@x".into());
        assert_eq!(creation_refused(&e).condition, Condition::Conflict);
    }

    #[test]
    fn usernames() {
        let ok = check_username("Alice", "example.org", false).unwrap();
        assert_eq!(ok.as_str(), "alice@example.org");
        for bad in ["", "a@b", "a/b", "a b", &"x".repeat(65)] {
            assert!(
                matches!(
                    check_username(bad, "example.org", false),
                    Err(RegError::BadUsername(_))
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            check_username("admin", "example.org", false),
            Err(RegError::ReservedUsername)
        );
        assert!(check_username("Postmaster", "example.org", false).is_err());
        assert!(check_username("admin", "example.org", true).is_ok());
    }

    #[test]
    fn passwords_and_messages() {
        assert!(check_password("1234567").is_err());
        assert!(check_password("12345678").is_ok());
        assert_eq!(RegError::Conflict.message(), "This username is taken.");
        assert_eq!(RegError::Conflict.error().condition, Condition::Conflict);
    }
}
