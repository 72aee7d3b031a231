//! XEP-0133 Service Administration: the admin commands, with the nodes, field names and
//! forms the XEP shows (Gajim and other clients send exactly those). Admins are the config's
//! `admins`. Account changes go through `accounts`, like `kith user …`.

use super::{always, form, Access, BoxFuture, Command, Done, Request, Step};
use crate::accounts;
use crate::config::Config;
use crate::jid::{BareJid, FullJid};
use crate::server::Server;
use crate::services::announce;
use crate::stanza::form::{Field, FieldType, Form, Values};
use crate::stanza::StreamError;

pub const NS_ADMIN: &str = "http://jabber.org/protocol/admin";

const fn admin(
    node: &'static str,
    name: &'static str,
    enabled: fn(&Config) -> bool,
    step: fn(&Request) -> Step,
    effect: super::Effect,
) -> Command {
    Command {
        node,
        name,
        access: Access::Admin,
        enabled,
        step,
        effect,
    }
}

pub const COMMANDS: &[Command] = &[
    admin(
        "http://jabber.org/protocol/admin#add-user",
        "Add User",
        always,
        add_user,
        add_user_run,
    ),
    admin(
        "http://jabber.org/protocol/admin#delete-user",
        "Delete User",
        always,
        delete_user,
        delete_user_run,
    ),
    admin(
        "http://jabber.org/protocol/admin#change-user-password",
        "Change User Password",
        always,
        change_password,
        change_password_run,
    ),
    admin(
        "http://jabber.org/protocol/admin#end-user-session",
        "End User Session",
        always,
        end_session,
        end_session_run,
    ),
    admin(
        "http://jabber.org/protocol/admin#get-user-lastlogin",
        "Get User Last Login Time",
        always,
        last_login,
        last_login_run,
    ),
    admin(
        "http://jabber.org/protocol/admin#get-registered-users-num",
        "Get Number of Registered Users",
        always,
        run_now,
        registered_num_run,
    ),
    admin(
        "http://jabber.org/protocol/admin#get-registered-users-list",
        "Get List of Registered Users",
        always,
        max_items,
        registered_list_run,
    ),
    admin(
        "http://jabber.org/protocol/admin#get-online-users-num",
        "Get Number of Online Users",
        always,
        run_now,
        online_num_run,
    ),
    admin(
        "http://jabber.org/protocol/admin#get-online-users-list",
        "Get List of Online Users",
        always,
        max_items,
        online_list_run,
    ),
    admin(
        "http://jabber.org/protocol/admin#announce",
        "Send Announcement to Online Users",
        |c| c.modules.announce,
        announce_step,
        announce_run,
    ),
    admin(
        "http://jabber.org/protocol/admin#set-motd",
        "Set Message of the Day",
        |c| c.modules.motd,
        set_motd,
        set_motd_run,
    ),
    admin(
        "http://jabber.org/protocol/admin#edit-motd",
        "Edit Message of the Day",
        |c| c.modules.motd,
        edit_motd,
        set_motd_run,
    ),
    admin(
        "http://jabber.org/protocol/admin#delete-motd",
        "Delete Message of the Day",
        |c| c.modules.motd,
        run_now,
        delete_motd_run,
    ),
];

// ---- Pure steps ----

fn admin_form(title: &str, instructions: &str) -> Form {
    Form::new("form")
        .title(title)
        .instructions(instructions)
        .field(Field::form_type(NS_ADMIN))
}

fn result_form() -> Form {
    Form::new("result").field(Field::form_type(NS_ADMIN))
}

fn run_now(_: &Request) -> Step {
    Step::Run
}

fn add_user(req: &Request) -> Step {
    if req.stage == 0 {
        return form(
            admin_form("Adding a User", "Fill out this form to add a user.")
                .field(
                    Field::new("accountjid", FieldType::JidSingle)
                        .label("The Jabber ID for the account to be added")
                        .required(),
                )
                .field(
                    Field::new("password", FieldType::TextPrivate)
                        .label("The password for this account")
                        .required(),
                )
                .field(
                    Field::new("password-verify", FieldType::TextPrivate)
                        .label("Retype password")
                        .required(),
                )
                .into_element(),
            true,
        );
    }
    let v = req.values;
    match (v.one("accountjid"), v.all("password").first()) {
        (None, _) => Step::Done(Done::error("The account's address is missing.")),
        (_, None) => Step::Done(Done::error("The password is missing.")),
        (Some(_), Some(pw)) if v.all("password-verify").first() != Some(pw) => {
            Step::Done(Done::error("The passwords do not match."))
        }
        _ => Step::Run,
    }
}

fn accounts_form(title: &str, instructions: &str, label: &str) -> Step {
    form(
        admin_form(title, instructions)
            .field(
                Field::new("accountjids", FieldType::JidMulti)
                    .label(label)
                    .required(),
            )
            .into_element(),
        true,
    )
}

fn delete_user(req: &Request) -> Step {
    match req.stage {
        0 => accounts_form(
            "Deleting a User",
            "Fill out this form to delete a user.",
            "The Jabber ID(s) to delete",
        ),
        _ if req.values.all("accountjids").is_empty() => {
            Step::Done(Done::error("No account was given."))
        }
        _ => Step::Run,
    }
}

fn end_session(req: &Request) -> Step {
    match req.stage {
        0 => accounts_form(
            "Ending a User Session",
            "Fill out this form to end a user's session.",
            "The Jabber ID(s) for which to end sessions",
        ),
        _ if req.values.all("accountjids").is_empty() => {
            Step::Done(Done::error("No account was given."))
        }
        _ => Step::Run,
    }
}

fn change_password(req: &Request) -> Step {
    if req.stage == 0 {
        return form(
            admin_form(
                "Changing a User Password",
                "Fill out this form to change a user's password.",
            )
            .field(
                Field::new("accountjid", FieldType::JidSingle)
                    .label("The Jabber ID for this account")
                    .required(),
            )
            .field(
                Field::new("password", FieldType::TextPrivate)
                    .label("The password for this account")
                    .required(),
            )
            .into_element(),
            true,
        );
    }
    match (
        req.values.one("accountjid"),
        req.values.all("password").first(),
    ) {
        (Some(_), Some(pw)) if !pw.is_empty() => Step::Run,
        _ => Step::Done(Done::error("Both the account and a password are needed.")),
    }
}

fn last_login(req: &Request) -> Step {
    if req.stage == 0 {
        return form(
            admin_form(
                "Getting a User's Last Login Time",
                "Fill out this form to get a user's last login time.",
            )
            .field(
                Field::new("accountjid", FieldType::JidSingle)
                    .label("The Jabber ID for which to retrieve the last login time")
                    .required(),
            )
            .into_element(),
            true,
        );
    }
    match req.values.one("accountjid") {
        Some(_) => Step::Run,
        None => Step::Done(Done::error("No account was given.")),
    }
}

fn max_items(req: &Request) -> Step {
    if req.stage > 0 {
        return Step::Run;
    }
    let mut f = Field::new("max_items", FieldType::ListSingle).label("Maximum number of items");
    for n in ["25", "50", "75", "100", "150", "200", "none"] {
        f = f.option(n, n);
    }
    form(
        admin_form("Requesting a List", "Choose how many items to return.")
            .field(f)
            .into_element(),
        true,
    )
}

/// `max_items` as a limit: absent, `none` or unparseable mean no limit.
fn limit(v: &Values) -> usize {
    v.one("max_items")
        .and_then(|s| s.parse().ok())
        .unwrap_or(usize::MAX)
}

fn announce_step(req: &Request) -> Step {
    if req.stage == 0 {
        return form(
            admin_form(
                "Making an Announcement",
                "Fill out this form to make an announcement to all active users of this service.",
            )
            .field(Field::new("subject", FieldType::TextSingle).label("Subject"))
            .field(
                Field::new("announcement", FieldType::TextMulti)
                    .label("Announcement")
                    .required(),
            )
            .into_element(),
            true,
        );
    }
    if req.values.text("announcement").trim().is_empty() {
        return Step::Done(Done::error("The announcement is empty."));
    }
    Step::Run
}

fn motd_form(current: &str) -> Step {
    let mut f = Field::new("motd", FieldType::TextMulti)
        .label("Message of the day")
        .required();
    if !current.is_empty() {
        f = f.lines(current);
    }
    form(
        admin_form(
            "Setting the Message of the Day",
            "Fill out this form to set the message of the day; each person gets it once, at login.",
        )
        .field(f)
        .into_element(),
        true,
    )
}

fn set_motd(req: &Request) -> Step {
    match req.stage {
        0 => motd_form(""),
        _ => Step::Run,
    }
}

/// Stage 0 runs the effect, which shows the current MOTD in the form.
fn edit_motd(_: &Request) -> Step {
    Step::Run
}

// ---- Effects ----

macro_rules! effect {
    ($name:ident, $body:ident) => {
        fn $name<'a>(srv: &'a Server, from: &'a FullJid, v: Values) -> BoxFuture<'a, Step> {
            Box::pin(async move { $body(srv, from, v).await })
        }
    };
}

effect!(add_user_run, add_user_do);
effect!(delete_user_run, delete_user_do);
effect!(change_password_run, change_password_do);
effect!(end_session_run, end_session_do);
effect!(last_login_run, last_login_do);
effect!(registered_num_run, registered_num_do);
effect!(registered_list_run, registered_list_do);
effect!(online_num_run, online_num_do);
effect!(online_list_run, online_list_do);
effect!(announce_run, announce_do);
effect!(set_motd_run, set_motd_do);
effect!(delete_motd_run, delete_motd_do);

/// The account an admin named (a bare localpart means one of ours), or why not.
fn account(srv: &Server, jid: &str) -> Result<BareJid, String> {
    accounts::account_jid(jid, srv.domain()).map_err(|e| e.to_string())
}

async fn add_user_do(srv: &Server, from: &FullJid, v: Values) -> Step {
    let jid = match account(srv, v.one("accountjid").unwrap_or("")) {
        Ok(j) => j,
        Err(e) => return Step::Done(Done::error(e)),
    };
    let pw = v.all("password").first().cloned().unwrap_or_default();
    let reuse = accounts::Reuse::configured(&srv.config.registration);
    match accounts::add(&srv.store, &jid, &pw, reuse).await {
        Ok(()) => {
            log::info!("adhoc: {from} created account {jid}");
            Step::Done(Done::info(format!("Account {jid} created.")))
        }
        Err(e) => Step::Done(Done::error(e.to_string())),
    }
}

async fn delete_user_do(srv: &Server, from: &FullJid, v: Values) -> Step {
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for j in v.all("accountjids") {
        let jid = match account(srv, j.trim()) {
            Ok(j) => j,
            Err(_) => {
                failed.push(format!("{j} (not an account of this server)"));
                continue;
            }
        };
        match accounts::delete(&srv.store, &jid).await {
            Ok(()) => {
                srv.mam.forget(&jid);
                srv.kick_account(&jid, StreamError::NotAuthorized);
                log::info!("adhoc: {from} deleted account {jid}");
                done.push(jid.to_string());
            }
            Err(e) => failed.push(format!("{jid} ({e})")),
        }
    }
    summary("Deleted", done, failed)
}

fn summary(verb: &str, done: Vec<String>, failed: Vec<String>) -> Step {
    let mut text = String::new();
    if !done.is_empty() {
        text.push_str(&format!("{verb}: {}.", done.join(", ")));
    }
    if failed.is_empty() {
        return Step::Done(Done::info(text));
    }
    if !text.is_empty() {
        text.push(' ');
    }
    text.push_str(&format!("Failed: {}.", failed.join(", ")));
    Step::Done(Done::error(text))
}

async fn change_password_do(srv: &Server, from: &FullJid, v: Values) -> Step {
    let jid = match account(srv, v.one("accountjid").unwrap_or("")) {
        Ok(j) => j,
        Err(e) => return Step::Done(Done::error(e)),
    };
    let pw = v.all("password").first().cloned().unwrap_or_default();
    match accounts::passwd(&srv.store, &jid, &pw).await {
        Ok(()) => {
            log::info!("adhoc: {from} changed the password of {jid}");
            Step::Done(Done::info(format!("Password of {jid} changed.")))
        }
        Err(e) => Step::Done(Done::error(e.to_string())),
    }
}

async fn end_session_do(srv: &Server, from: &FullJid, v: Values) -> Step {
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for j in v.all("accountjids") {
        match account(srv, j.trim()) {
            Ok(jid) => {
                srv.kick_account(&jid, StreamError::PolicyViolation);
                log::info!("adhoc: {from} ended the sessions of {jid}");
                done.push(jid.to_string());
            }
            Err(_) => failed.push(j.clone()),
        }
    }
    summary("Sessions ended", done, failed)
}

async fn last_login_do(srv: &Server, _: &FullJid, v: Values) -> Step {
    let jid = match account(srv, v.one("accountjid").unwrap_or("")) {
        Ok(j) => j,
        Err(e) => return Step::Done(Done::error(e)),
    };
    let online = srv.sessions.is_online(&jid);
    let text = match crate::accounts::seen(&srv.store, jid.as_str(), online).await {
        Ok(seen) => seen.to_string(),
        Err(e) => {
            log::error!("adhoc: cannot read the last login of {jid}: {e}");
            return Step::Done(Done::error("Internal error."));
        }
    };
    Step::Done(Done::form(
        result_form()
            .field(Field::new("accountjid", FieldType::JidSingle).value(jid.as_str()))
            .field(
                Field::new("lastlogin", FieldType::TextSingle)
                    .label("The last login time")
                    .value(text),
            )
            .into_element(),
    ))
}

async fn registered(srv: &Server) -> Result<Vec<String>, String> {
    accounts::list(&srv.store).await.map_err(|e| {
        log::error!("adhoc: cannot list accounts: {e}");
        "Internal error.".to_string()
    })
}

async fn registered_num_do(srv: &Server, _: &FullJid, _: Values) -> Step {
    match registered(srv).await {
        Ok(all) => number(
            "registeredusersnum",
            "The number of registered users",
            all.len(),
        ),
        Err(e) => Step::Done(Done::error(e)),
    }
}

async fn registered_list_do(srv: &Server, _: &FullJid, v: Values) -> Step {
    match registered(srv).await {
        Ok(all) => list(
            "registereduserjids",
            "The list of all users",
            all.into_iter().take(limit(&v)),
        ),
        Err(e) => Step::Done(Done::error(e)),
    }
}

fn online(srv: &Server) -> Vec<String> {
    let mut users: Vec<String> = srv
        .sessions
        .all()
        .into_iter()
        .map(|r| r.jid.bare_str().to_string())
        .collect();
    users.sort();
    users.dedup();
    users
}

async fn online_num_do(srv: &Server, _: &FullJid, _: Values) -> Step {
    number(
        "onlineusersnum",
        "The number of online users",
        online(srv).len(),
    )
}

async fn online_list_do(srv: &Server, _: &FullJid, v: Values) -> Step {
    list(
        "onlineuserjids",
        "The list of all online users",
        online(srv).into_iter().take(limit(&v)),
    )
}

fn number(var: &str, label: &str, n: usize) -> Step {
    Step::Done(Done::form(
        result_form()
            .field(
                Field::new(var, FieldType::TextSingle)
                    .label(label)
                    .value(n.to_string()),
            )
            .into_element(),
    ))
}

fn list(var: &str, label: &str, jids: impl Iterator<Item = String>) -> Step {
    let mut f = Field::new(var, FieldType::JidMulti).label(label);
    for j in jids {
        f = f.value(j);
    }
    Step::Done(Done::form(result_form().field(f).into_element()))
}

async fn announce_do(srv: &Server, from: &FullJid, v: Values) -> Step {
    let n = announce::announce(srv, v.one("subject"), &v.text("announcement"));
    log::info!("adhoc: {from} sent an announcement");
    Step::Done(Done::info(format!("Announcement sent to {n} resource(s).")))
}

async fn set_motd_do(srv: &Server, from: &FullJid, v: Values) -> Step {
    if v.all("motd").is_empty() {
        // edit-motd's first stage: show the current text.
        let current = match announce::motd(&srv.store).await {
            Ok(m) => m.map(|(_, t)| t).unwrap_or_default(),
            Err(e) => {
                log::error!("adhoc: cannot read the MOTD: {e}");
                return Step::Done(Done::error("Internal error."));
            }
        };
        return motd_form(&current);
    }
    match announce::set_motd(&srv.store, &v.text("motd")).await {
        Ok(()) => {
            log::info!("adhoc: {from} set the MOTD");
            Step::Done(Done::info("Message of the day set."))
        }
        Err(e) => {
            log::error!("adhoc: cannot store the MOTD: {e}");
            Step::Done(Done::error("Internal error."))
        }
    }
}

async fn delete_motd_do(srv: &Server, from: &FullJid, _: Values) -> Step {
    match announce::set_motd(&srv.store, "").await {
        Ok(()) => {
            log::info!("adhoc: {from} deleted the MOTD");
            Step::Done(Done::info("Message of the day deleted."))
        }
        Err(e) => {
            log::error!("adhoc: cannot store the MOTD: {e}");
            Step::Done(Done::error("Internal error."))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(who: &'a FullJid, stage: usize, values: &'a Values) -> Request<'a> {
        Request {
            requester: who,
            stage,
            values,
        }
    }

    fn values(pairs: &[(&str, &str)]) -> Values {
        let mut v = Values::default();
        for (k, val) in pairs {
            v.insert(k, vec![val.to_string()]);
        }
        v
    }

    #[test]
    fn add_user_checks_the_passwords_match() {
        let who = FullJid::parse("admin@example.test/r").unwrap();
        let empty = Values::default();
        match add_user(&req(&who, 0, &empty)) {
            Step::Form { form, last } => {
                assert!(last);
                let s = form.to_string();
                for var in ["accountjid", "password", "password-verify", "FORM_TYPE"] {
                    assert!(s.contains(&format!("var='{var}'")), "{var} in {s}");
                }
            }
            _ => panic!("expected the form"),
        }
        let bad = values(&[
            ("accountjid", "a"),
            ("password", "x"),
            ("password-verify", "y"),
        ]);
        assert!(matches!(add_user(&req(&who, 1, &bad)), Step::Done(_)));
        let good = values(&[
            ("accountjid", "a"),
            ("password", "x"),
            ("password-verify", "x"),
        ]);
        assert!(matches!(add_user(&req(&who, 1, &good)), Step::Run));
    }

    #[test]
    fn max_items_none_means_everything() {
        assert_eq!(limit(&values(&[("max_items", "none")])), usize::MAX);
        assert_eq!(limit(&values(&[("max_items", "25")])), 25);
        assert_eq!(limit(&Values::default()), usize::MAX);
    }

    #[test]
    fn nodes_are_unique() {
        let mut nodes: Vec<_> = COMMANDS.iter().map(|c| c.node).collect();
        nodes.sort();
        nodes.dedup();
        assert_eq!(nodes.len(), COMMANDS.len());
    }
}
