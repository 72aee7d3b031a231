//! XEP-0077 In-Band Registration, for a logged-in user only: the registration form of the own
//! account (§3.2.1 "already registered"), password change (§3.3) and account removal (§3.2.2,
//! after which the stream closes). Creating accounts this way is not offered: accounts come
//! from the admin or, later, from invitations.

use crate::accounts::{self, AccountError};
use crate::jid::FullJid;
use crate::router::{bounce, deliver_reply};
use crate::server::Server;
use crate::stanza::{self, ns, Condition, StanzaError, StreamError};
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
}
