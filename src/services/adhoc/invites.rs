//! Invitations as XEP-0050 commands, with Prosody's mod_invites_adhoc nodes where there is
//! one (clients such as Conversations and Gajim offer them in their menus):
//! - `urn:xmpp:invite#invite` (any local user): an invitation from the requester, who becomes
//!   the new account's contact; one use, the default expiry.
//! - `urn:xmpp:invite#create-account` (admins): optional reserved username, circle, uses,
//!   admin flag.
//! - `urn:kith:invite#list` and `urn:kith:invite#revoke` (admins): like `kith invite list` and
//!   `kith invite revoke`.
//!
//! Results carry the fields mod_invites_adhoc returns: `uri` (the XEP-0401 `xmpp:` URI),
//! `landing-url` (the web page) and `expire` (XEP-0082).

use super::{always, form, Access, BoxFuture, Command, Done, Request, Step};
use crate::config::{Config, RegistrationPolicy};
use crate::invites;
use crate::jid::FullJid;
use crate::server::Server;
use crate::stanza::form::{Field, FieldType, Form, Values};

const NS_INVITE_FORM: &str = "urn:xmpp:invite";

fn registration_on(config: &Config) -> bool {
    config.registration.policy != RegistrationPolicy::Closed
}

pub const COMMANDS: &[Command] = &[
    Command {
        node: "urn:xmpp:invite#invite",
        name: "Invite someone to join",
        access: Access::LocalUser,
        enabled: registration_on,
        step: run_now,
        effect: invite_run,
    },
    Command {
        node: "urn:xmpp:invite#create-account",
        name: "Create an account invitation",
        access: Access::Admin,
        enabled: registration_on,
        step: create_account,
        effect: create_account_run,
    },
    Command {
        node: "urn:kith:invite#list",
        name: "List invitations",
        access: Access::Admin,
        enabled: always,
        step: run_now,
        effect: list_run,
    },
    Command {
        node: "urn:kith:invite#revoke",
        name: "Revoke an invitation",
        access: Access::Admin,
        enabled: always,
        step: revoke,
        effect: revoke_run,
    },
];

fn run_now(_: &Request) -> Step {
    Step::Run
}

fn create_account(req: &Request) -> Step {
    if req.stage == 0 {
        return form(
            Form::new("form")
                .title("Create an account invitation")
                .instructions("The link lets someone create an account on this server.")
                .field(Field::form_type(NS_INVITE_FORM))
                .field(
                    Field::new("username", FieldType::TextSingle)
                        .label("Reserve this username (optional)"),
                )
                .field(
                    Field::new("group", FieldType::TextSingle)
                        .label("Circle the new account joins (optional)"),
                )
                .field(
                    Field::new("uses", FieldType::TextSingle)
                        .label("How many accounts it may create")
                        .value("1"),
                )
                .field(
                    Field::new("admin", FieldType::Boolean)
                        .label("The new account is an admin")
                        .value("0"),
                )
                .into_element(),
            true,
        );
    }
    match req.values.one("uses").map(str::trim) {
        None | Some("") => Step::Run,
        Some(n) if n.parse::<u32>().is_ok_and(|n| (1..=100).contains(&n)) => Step::Run,
        Some(_) => Step::Done(Done::error("'uses' must be a number from 1 to 100.")),
    }
}

fn revoke(req: &Request) -> Step {
    if req.stage == 0 {
        return form(
            Form::new("form")
                .title("Revoke an invitation")
                .field(Field::form_type(NS_INVITE_FORM))
                .field(
                    Field::new("token", FieldType::TextSingle)
                        .label("The invitation's token (the end of its link)")
                        .required(),
                )
                .into_element(),
            true,
        );
    }
    Step::Run
}

/// The result form of a new invite.
fn result(config: &Config, token: &str, inviter: Option<&str>, expires: u64) -> Step {
    let uri = invites::xmpp_uri(&config.domain, inviter, token);
    let link = invites::link(&invites::web_base(config), token);
    let x = Form::new("result")
        .title("Invitation created")
        .field(Field::form_type(NS_INVITE_FORM))
        .field(
            Field::new("uri", FieldType::TextSingle)
                .label("Invite URI")
                .value(uri),
        )
        .field(
            Field::new("landing-url", FieldType::TextSingle)
                .label("Invite web page")
                .value(link),
        )
        .field(
            Field::new("expire", FieldType::TextSingle)
                .label("Valid until")
                .value(crate::time::rfc3339(expires)),
        )
        .into_element();
    Step::Done(Done::form(x))
}

async fn invite_do(srv: &Server, from: &FullJid, _: Values) -> Step {
    let me = from.to_bare().to_string();
    let opts = invites::Options {
        created_by: Some(me.clone()),
        uses: 1,
        ..Default::default()
    };
    let now = crate::time::now_unix();
    match invites::create(&srv.store, srv.config.invites.expires, opts, now).await {
        Ok((token, invite)) => {
            log::info!("adhoc: {me} created an invitation");
            result(&srv.config, &token, Some(&me), invite.expires_unix)
        }
        Err(e) => {
            log::error!("adhoc: {e}");
            Step::Done(Done::error("The invitation could not be created."))
        }
    }
}

async fn create_account_do(srv: &Server, from: &FullJid, v: Values) -> Step {
    let username = v.one("username").map(str::trim).filter(|u| !u.is_empty());
    if let Some(u) = username {
        if let Err(e) = crate::services::register::check_username(u, srv.domain(), true) {
            return Step::Done(Done::error(e.message()));
        }
    }
    let group = v.one("group").map(str::trim).filter(|g| !g.is_empty());
    let opts = invites::Options {
        created_by: None,
        uses: v
            .one("uses")
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(1),
        expires: None,
        admin: v.boolean("admin", false),
        groups: group.map(str::to_string).into_iter().collect(),
        username: username.map(str::to_lowercase),
    };
    let now = crate::time::now_unix();
    match invites::create(&srv.store, srv.config.invites.expires, opts, now).await {
        Ok((token, invite)) => {
            log::info!("adhoc: {from} created an account invitation");
            result(&srv.config, &token, None, invite.expires_unix)
        }
        Err(e) => {
            log::error!("adhoc: {e}");
            Step::Done(Done::error("The invitation could not be created."))
        }
    }
}

async fn list_do(srv: &Server, _: &FullJid, _: Values) -> Step {
    let now = crate::time::now_unix();
    match invites::list(&srv.store, now).await {
        Ok(all) if all.is_empty() => Step::Done(Done::info("No invitations.")),
        Ok(all) => {
            let lines: Vec<String> = all
                .iter()
                .map(|(t, i)| invites::describe(t, i, now).replace('\t', "  "))
                .collect();
            Step::Done(Done::info(lines.join("\n")))
        }
        Err(e) => {
            log::error!("adhoc: cannot list invites: {e}");
            Step::Done(Done::error("The invitations could not be read."))
        }
    }
}

async fn revoke_do(srv: &Server, from: &FullJid, v: Values) -> Step {
    let token = v.one("token").map(str::trim).unwrap_or_default();
    if !invites::is_token(token) {
        return Step::Done(Done::error("That is not an invitation token."));
    }
    match srv.store.invite_remove(token).await {
        Ok(true) => {
            log::info!("adhoc: {from} revoked an invitation");
            Step::Done(Done::info("Invitation revoked."))
        }
        Ok(false) => Step::Done(Done::error("No such invitation.")),
        Err(e) => {
            log::error!("adhoc: cannot revoke an invite: {e}");
            Step::Done(Done::error("The invitation could not be revoked."))
        }
    }
}

fn invite_run<'a>(srv: &'a Server, from: &'a FullJid, v: Values) -> BoxFuture<'a, Step> {
    Box::pin(invite_do(srv, from, v))
}
fn create_account_run<'a>(srv: &'a Server, from: &'a FullJid, v: Values) -> BoxFuture<'a, Step> {
    Box::pin(create_account_do(srv, from, v))
}
fn list_run<'a>(srv: &'a Server, from: &'a FullJid, v: Values) -> BoxFuture<'a, Step> {
    Box::pin(list_do(srv, from, v))
}
fn revoke_run<'a>(srv: &'a Server, from: &'a FullJid, v: Values) -> BoxFuture<'a, Step> {
    Box::pin(revoke_do(srv, from, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(f: fn(&Request) -> Step, stage: usize, values: &[(&str, &str)]) -> Step {
        let me = FullJid::parse("admin@example.org/x").unwrap();
        let mut v = Values::default();
        for (k, val) in values {
            v.insert(k, vec![val.to_string()]);
        }
        f(&Request {
            requester: &me,
            stage,
            values: &v,
        })
    }

    #[test]
    fn create_account_form_then_checked_values() {
        assert!(matches!(
            step(create_account, 0, &[]),
            Step::Form { last: true, .. }
        ));
        assert!(matches!(
            step(create_account, 1, &[("uses", "3")]),
            Step::Run
        ));
        assert!(matches!(step(create_account, 1, &[]), Step::Run));
        assert!(matches!(
            step(create_account, 1, &[("uses", "0")]),
            Step::Done(_)
        ));
        assert!(matches!(
            step(create_account, 1, &[("uses", "x")]),
            Step::Done(_)
        ));
    }

    #[test]
    fn result_has_mod_invites_adhoc_fields() {
        let config = Config::defaults();
        let Step::Done(done) = result(&config, "TOKEN", Some("a@localhost"), 0) else {
            panic!("not done");
        };
        let x = done.form.unwrap().to_string();
        for var in ["var=\"uri\"", "var=\"landing-url\"", "var=\"expire\""] {
            assert!(x.contains(var) || x.contains(&var.replace('"', "'")), "{x}");
        }
        assert!(
            x.contains("xmpp:a@localhost?roster;preauth=TOKEN;ibr=y"),
            "{x}"
        );
        assert!(x.contains("https://localhost/invite/TOKEN"), "{x}");
    }
}
