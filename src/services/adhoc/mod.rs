//! XEP-0050 Ad-Hoc Commands: the framework every server command runs in (XEP-0133 admin
//! commands in `admin.rs`; others register the same way).
//!
//! # Adding a command
//!
//! A command is a `Command` value in a `&'static [Command]` listed in `REGISTRY` below (one line
//! per module):
//!
//! ```text
//! pub const COMMANDS: &[Command] = &[Command {
//!     node: "urn:kith:invite",            // the XEP-0050 node, unique
//!     name: "Create an invitation",       // shown in the client's command list
//!     access: Access::LocalUser,          // or Access::Admin (the config `admins`)
//!     enabled: always,                    // fn(&Config) -> bool: hidden and refused when false
//!     step: invite_step,                  // pure: fn(&Request) -> Step
//!     effect: invite_effect,              // async: fn(&Server, &FullJid, Values) -> BoxFuture<Done>
//! }];
//! ```
//!
//! `step` sees the stage (how many forms the requester has submitted: 0 on `execute`) and every
//! value submitted so far, and answers `Step::Form` (show this form; `last` when the next
//! submission completes), `Step::Run` (the values are complete: call `effect`) or
//! `Step::Done` (finished without touching the server, e.g. invalid input as an error note).
//! `effect` is where a command reads or changes the server; it returns `Step::Done` with the
//! final note and/or result form, or `Step::Form` when a form needs server data (`step`
//! returns `Step::Run` at that stage; the next submission goes through `step` again).
//!
//! The framework owns the protocol: disco (the command list filtered by `access` and `enabled`,
//! disco#info per node), sessions (`sessionid`, bound to the requesting full JID, expiring after
//! `SESSION_TTL`), the actions `execute`/`next`/`prev`/`complete`/`cancel` and the XEP-0050
//! errors (`bad-sessionid`, `session-expired`, `bad-action`, `malformed-action`; `forbidden`
//! for a command the requester may not run).

pub mod admin;
pub mod invites;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::jid::FullJid;
use crate::router::deliver_reply;
use crate::server::Server;
use crate::stanza::form::Values;
use crate::stanza::{self, ns, Condition, StanzaError};
use crate::xml::Element;

pub const NS_COMMANDS: &str = "http://jabber.org/protocol/commands";

/// Every command module's list. Add yours here.
pub const REGISTRY: &[&[Command]] = &[admin::COMMANDS, invites::COMMANDS];

/// How long a multi-stage command waits for the requester's next step.
pub const SESSION_TTL: Duration = Duration::from_secs(10 * 60);
/// Open sessions per requesting account: enough for a person with a few clients.
const MAX_SESSIONS_PER_ACCOUNT: usize = 16;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// A command's server side. Usually it answers `Step::Done`; it may answer `Step::Form` to
/// show a form built from server data (e.g. the current MOTD to edit), and the next
/// submission goes through `step` again. `Step::Run` from an effect is a bug, answered as an
/// internal error.
pub type Effect = for<'a> fn(&'a Server, &'a FullJid, Values) -> BoxFuture<'a, Step>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The config's `admins`.
    Admin,
    /// Any account of this server.
    LocalUser,
}

pub struct Command {
    pub node: &'static str,
    pub name: &'static str,
    pub access: Access,
    pub enabled: fn(&Config) -> bool,
    pub step: fn(&Request) -> Step,
    pub effect: Effect,
}

/// For `Command::enabled` of commands that are always there.
pub fn always(_: &Config) -> bool {
    true
}

/// What a command's `step` sees.
pub struct Request<'a> {
    pub requester: &'a FullJid,
    /// Forms submitted so far (0 on `execute`; `prev` goes back one).
    pub stage: usize,
    pub values: &'a Values,
}

pub enum Step {
    Form { form: Element, last: bool },
    Run,
    Done(Done),
}

/// A finished command's answer.
#[derive(Debug, Default)]
pub struct Done {
    pub note: Option<(NoteType, String)>,
    pub form: Option<Element>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteType {
    Info,
    Warn,
    Error,
}

impl NoteType {
    fn as_str(self) -> &'static str {
        match self {
            NoteType::Info => "info",
            NoteType::Warn => "warn",
            NoteType::Error => "error",
        }
    }
}

impl Done {
    pub fn info(text: impl Into<String>) -> Done {
        Done {
            note: Some((NoteType::Info, text.into())),
            form: None,
        }
    }

    pub fn error(text: impl Into<String>) -> Done {
        Done {
            note: Some((NoteType::Error, text.into())),
            form: None,
        }
    }

    pub fn form(form: Element) -> Done {
        Done {
            note: None,
            form: Some(form),
        }
    }
}

/// A form step, for `step` functions: `form(x, false)` has more stages after it.
pub fn form(x: Element, last: bool) -> Step {
    Step::Form { form: x, last }
}

/// The commands of all modules enabled by `config`.
pub fn commands(config: &Config) -> impl Iterator<Item = &'static Command> + '_ {
    REGISTRY
        .iter()
        .flat_map(|m| m.iter())
        .filter(move |c| (c.enabled)(config))
}

pub fn find(config: &Config, node: &str) -> Option<&'static Command> {
    commands(config).find(|c| c.node == node)
}

async fn may_run(srv: &Server, cmd: &Command, who: &FullJid) -> bool {
    match cmd.access {
        // The config's `admins` and accounts made admins (web admin, admin invitations).
        Access::Admin => srv.is_admin(&who.to_bare()).await,
        Access::LocalUser => srv.is_local_user(&who.to_bare()),
    }
}

// ---- Sessions ----

/// A command waiting for the requester's next form.
#[derive(Clone, Debug)]
pub struct State {
    pub node: &'static str,
    pub requester: FullJid,
    pub stage: usize,
    pub values: Values,
    /// The form shown last was the final one (so `next` is a `bad-action`... we accept it as
    /// `complete`, as Prosody does, but advertise only `complete`).
    pub last: bool,
    pub expires: Instant,
}

/// Open command sessions by `sessionid`.
#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, State>>,
}

impl Sessions {
    /// Takes the session out (a step puts it back if the command goes on), or says why not.
    fn take(&self, id: &str, who: &FullJid, node: &str, now: Instant) -> Result<State, WireError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let st = match open.remove(id) {
            Some(st) if st.requester == *who && st.node == node => st,
            // Another requester's session stays theirs.
            Some(st) => {
                open.insert(id.to_string(), st);
                return Err(WireError::BadSessionId);
            }
            None => return Err(WireError::BadSessionId),
        };
        if st.expires <= now {
            return Err(WireError::SessionExpired);
        }
        Ok(st)
    }

    fn put(&self, id: String, st: State, now: Instant) -> Result<(), WireError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|_, s| s.expires > now);
        let bare = st.requester.bare_str();
        if open
            .values()
            .filter(|s| s.requester.bare_str() == bare)
            .count()
            >= MAX_SESSIONS_PER_ACCOUNT
        {
            return Err(WireError::TooMany);
        }
        open.insert(id, st);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.open.lock().map(|o| o.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// ---- The protocol, pure ----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Execute,
    Next,
    Prev,
    Complete,
    Cancel,
}

impl Action {
    fn parse(s: Option<&str>) -> Option<Action> {
        Some(match s {
            None | Some("execute") => Action::Execute,
            Some("next") => Action::Next,
            Some("prev") => Action::Prev,
            Some("complete") => Action::Complete,
            Some("cancel") => Action::Cancel,
            Some(_) => return None,
        })
    }
}

/// The XEP-0050 §4.6 errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// Unknown node (or disabled command).
    NotFound,
    Forbidden,
    MalformedAction,
    BadAction,
    BadSessionId,
    SessionExpired,
    /// The requester has too many open sessions.
    TooMany,
    /// `<command/>` without a node.
    BadRequest,
}

impl WireError {
    fn stanza_error(self) -> (StanzaError, Option<&'static str>) {
        let (c, specific) = match self {
            WireError::NotFound => (Condition::ItemNotFound, None),
            WireError::Forbidden => (Condition::Forbidden, None),
            WireError::MalformedAction => (Condition::BadRequest, Some("malformed-action")),
            WireError::BadAction => (Condition::BadRequest, Some("bad-action")),
            WireError::BadSessionId => (Condition::BadRequest, Some("bad-sessionid")),
            WireError::SessionExpired => (Condition::NotAllowed, Some("session-expired")),
            WireError::TooMany => (Condition::ResourceConstraint, None),
            WireError::BadRequest => (Condition::BadRequest, None),
        };
        (StanzaError::new(c), specific)
    }
}

/// What to do after the requester's action, decided without the server.
#[derive(Debug)]
pub enum Transition {
    /// Show a form and keep the session.
    Show {
        state: State,
        form: Element,
    },
    /// Run the command's effect with these values (at this stage, should it show a form).
    Run {
        stage: usize,
        values: Values,
    },
    Done(Done),
    Canceled,
}

/// The XEP-0050 state machine: the requester's `action` (with the submitted form, if any) on
/// the session `state` (`None` for a new execution) gives the next transition.
pub fn transition(
    cmd: &Command,
    requester: &FullJid,
    state: Option<State>,
    action: Action,
    submitted: Option<Values>,
    now: Instant,
) -> Result<Transition, WireError> {
    let (stage, mut values) = match (&state, action) {
        (_, Action::Cancel) => return Ok(Transition::Canceled),
        (None, Action::Execute) => (0, Values::default()),
        (None, _) => return Err(WireError::BadSessionId),
        (Some(st), Action::Prev) => {
            if st.stage == 0 {
                return Err(WireError::BadAction);
            }
            (st.stage - 1, st.values.clone())
        }
        (Some(st), Action::Execute | Action::Next | Action::Complete) => {
            (st.stage + 1, st.values.clone())
        }
    };
    if action != Action::Prev {
        if let Some(v) = submitted {
            values.merge(v);
        }
    }
    let req = Request {
        requester,
        stage,
        values: &values,
    };
    Ok(match (cmd.step)(&req) {
        Step::Form { form, last } => Transition::Show {
            state: State {
                node: cmd.node,
                requester: requester.clone(),
                stage,
                values,
                last,
                expires: now + SESSION_TTL,
            },
            form,
        },
        Step::Run => Transition::Run { stage, values },
        Step::Done(d) => Transition::Done(d),
    })
}

// ---- The protocol on the wire ----

/// Answers an iq `set` carrying `<command xmlns='http://jabber.org/protocol/commands'/>`.
pub async fn handle(srv: &Server, from: &FullJid, iq: Element) {
    let Some(cmd_el) = iq.get_child("command", NS_COMMANDS) else {
        return error(srv, &iq, WireError::BadRequest);
    };
    let node = cmd_el.attr("node").unwrap_or("");
    let Some(cmd) = find(&srv.config, node) else {
        return error(srv, &iq, WireError::NotFound);
    };
    if !may_run(srv, cmd, from).await {
        log::info!("adhoc: {from} may not run {node}");
        return error(srv, &iq, WireError::Forbidden);
    }
    let Some(action) = Action::parse(cmd_el.attr("action")) else {
        return error(srv, &iq, WireError::MalformedAction);
    };
    let now = Instant::now();
    let (id, state) = match cmd_el.attr("sessionid") {
        Some(id) => match srv.adhoc.take(id, from, node, now) {
            Ok(st) => (id.to_string(), Some(st)),
            Err(e) => return error(srv, &iq, e),
        },
        None => (format!("{:016x}", fastrand::u64(..)), None),
    };
    let submitted = cmd_el
        .get_child("x", ns::DATA_FORM)
        .and_then(Values::from_submit);
    let result = transition(cmd, from, state, action, submitted, now);
    let reply = |status: &str| {
        Element::new("command", NS_COMMANDS)
            .with_attr("node", cmd.node)
            .with_attr("sessionid", id.clone())
            .with_attr("status", status)
    };
    // A form to show, with the session that waits for its submission.
    let (state, form) = match result {
        Err(e) => return error(srv, &iq, e),
        Ok(Transition::Canceled) => {
            return deliver_reply(srv, stanza::iq_result(&iq, Some(reply("canceled"))))
        }
        Ok(Transition::Show { state, form }) => (state, form),
        Ok(Transition::Done(done)) => return completed(srv, &iq, reply("completed"), done),
        Ok(Transition::Run { stage, values }) => {
            match (cmd.effect)(srv, from, values.clone()).await {
                Step::Done(done) => return completed(srv, &iq, reply("completed"), done),
                Step::Form { form, last } => (
                    State {
                        node: cmd.node,
                        requester: from.clone(),
                        stage,
                        values,
                        last,
                        expires: now + SESSION_TTL,
                    },
                    form,
                ),
                Step::Run => {
                    log::error!("adhoc: {node}: the effect asked to run itself");
                    let err = StanzaError::new(Condition::InternalServerError);
                    return deliver_reply(srv, stanza::error_reply(&iq, &err));
                }
            }
        }
    };
    let mut actions = Element::new("actions", NS_COMMANDS);
    let default = if state.last { "complete" } else { "next" };
    actions.set_attr("execute", default);
    if state.stage > 0 {
        actions.push_child(Element::new("prev", NS_COMMANDS));
    }
    actions.push_child(Element::new(default, NS_COMMANDS));
    if let Err(e) = srv.adhoc.put(id.clone(), state, now) {
        return error(srv, &iq, e);
    }
    let el = reply("executing").with_child(actions).with_child(form);
    deliver_reply(srv, stanza::iq_result(&iq, Some(el)));
}

fn completed(srv: &Server, iq: &Element, mut el: Element, done: Done) {
    if let Some((kind, text)) = done.note {
        el.push_child(
            Element::new("note", NS_COMMANDS)
                .with_attr("type", kind.as_str())
                .with_text(text),
        );
    }
    if let Some(form) = done.form {
        el.push_child(form);
    }
    deliver_reply(srv, stanza::iq_result(iq, Some(el)));
}

fn error(srv: &Server, iq: &Element, e: WireError) {
    if stanza::must_not_answer(iq) {
        return;
    }
    let (err, specific) = e.stanza_error();
    let mut reply = stanza::error_reply(iq, &err);
    if let (Some(s), Some(error_el)) = (specific, reply.get_child_mut("error", ns::CLIENT)) {
        error_el.push_child(Element::new(s, NS_COMMANDS));
    }
    deliver_reply(srv, reply);
}

/// XEP-0050 §2 discovery on the server JID: `Some(answer)` when the query is about commands
/// (the list node, or one command's node), `None` for any other query.
pub async fn disco(
    srv: &Server,
    from: &FullJid,
    query: &Element,
) -> Option<Result<Element, StanzaError>> {
    let node = query.attr("node")?;
    let items = query.is("query", ns::DISCO_ITEMS);
    let mut reply = Element::new("query", query.ns()).with_attr("node", node);
    if node == NS_COMMANDS {
        if items {
            for c in commands(&srv.config) {
                if !may_run(srv, c, from).await {
                    continue;
                }
                reply.push_child(
                    Element::new("item", ns::DISCO_ITEMS)
                        .with_attr("jid", srv.domain())
                        .with_attr("node", c.node)
                        .with_attr("name", c.name),
                );
            }
        } else {
            reply.push_child(
                Element::new("identity", ns::DISCO_INFO)
                    .with_attr("category", "automation")
                    .with_attr("type", "command-list")
                    .with_attr("name", "Commands"),
            );
        }
        return Some(Ok(reply));
    }
    let cmd = find(&srv.config, node)?;
    if !may_run(srv, cmd, from).await {
        return Some(Err(StanzaError::new(Condition::Forbidden)));
    }
    if !items {
        reply.push_child(
            Element::new("identity", ns::DISCO_INFO)
                .with_attr("category", "automation")
                .with_attr("type", "command-node")
                .with_attr("name", cmd.name),
        );
        for f in [NS_COMMANDS, ns::DATA_FORM] {
            reply.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", f));
        }
    }
    Some(Ok(reply))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stanza::form::{Field, FieldType, Form};

    // A two-stage test command: asks a name, then a greeting; runs when both are there.
    fn two_stage(req: &Request) -> Step {
        match req.stage {
            0 => form(
                Form::new("form")
                    .field(Field::new("name", FieldType::TextSingle))
                    .into_element(),
                false,
            ),
            1 if req.values.one("name").is_none() => Step::Done(Done::error("no name")),
            1 => form(
                Form::new("form")
                    .field(Field::new("greeting", FieldType::TextSingle))
                    .into_element(),
                true,
            ),
            _ => Step::Run,
        }
    }

    fn no_effect<'a>(_: &'a Server, _: &'a FullJid, _: Values) -> BoxFuture<'a, Step> {
        Box::pin(async { Step::Done(Done::default()) })
    }

    const CMD: Command = Command {
        node: "test",
        name: "Test",
        access: Access::LocalUser,
        enabled: always,
        step: two_stage,
        effect: no_effect,
    };

    fn alice() -> FullJid {
        FullJid::parse("alice@example.test/phone").unwrap()
    }

    fn submit(field: &str, value: &str) -> Option<Values> {
        let mut v = Values::default();
        v.insert(field, vec![value.to_string()]);
        Some(v)
    }

    fn show(t: Result<Transition, WireError>) -> State {
        match t {
            Ok(Transition::Show { state, .. }) => state,
            other => panic!("expected a form, got {other:?}"),
        }
    }

    #[test]
    fn execute_next_complete_runs_with_all_values() {
        let now = Instant::now();
        let st = show(transition(&CMD, &alice(), None, Action::Execute, None, now));
        assert_eq!((st.stage, st.last), (0, false));
        let st = show(transition(
            &CMD,
            &alice(),
            Some(st),
            Action::Next,
            submit("name", "Bob"),
            now,
        ));
        assert_eq!((st.stage, st.last), (1, true));
        match transition(
            &CMD,
            &alice(),
            Some(st),
            Action::Complete,
            submit("greeting", "hi"),
            now,
        ) {
            Ok(Transition::Run { values, .. }) => {
                assert_eq!(values.one("name"), Some("Bob"));
                assert_eq!(values.one("greeting"), Some("hi"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn prev_goes_back_one_stage_and_keeps_values() {
        let now = Instant::now();
        let st = show(transition(&CMD, &alice(), None, Action::Execute, None, now));
        let st = show(transition(
            &CMD,
            &alice(),
            Some(st),
            Action::Next,
            submit("name", "Bob"),
            now,
        ));
        let back = show(transition(
            &CMD,
            &alice(),
            Some(st),
            Action::Prev,
            None,
            now,
        ));
        assert_eq!(back.stage, 0);
        assert_eq!(back.values.one("name"), Some("Bob"));
        assert_eq!(
            transition(&CMD, &alice(), Some(back), Action::Prev, None, now).unwrap_err(),
            WireError::BadAction
        );
    }

    #[test]
    fn invalid_input_completes_with_an_error_note() {
        let now = Instant::now();
        let st = show(transition(&CMD, &alice(), None, Action::Execute, None, now));
        match transition(&CMD, &alice(), Some(st), Action::Next, None, now) {
            Ok(Transition::Done(d)) => assert_eq!(d.note.unwrap().0, NoteType::Error),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn actions_other_than_execute_need_a_session() {
        let now = Instant::now();
        for a in [Action::Next, Action::Prev, Action::Complete] {
            assert_eq!(
                transition(&CMD, &alice(), None, a, None, now).unwrap_err(),
                WireError::BadSessionId
            );
        }
        assert!(matches!(
            transition(&CMD, &alice(), None, Action::Cancel, None, now),
            Ok(Transition::Canceled)
        ));
    }

    #[test]
    fn sessions_belong_to_their_requester_and_expire() {
        let now = Instant::now();
        let sessions = Sessions::default();
        let st = show(transition(&CMD, &alice(), None, Action::Execute, None, now));
        sessions.put("s1".into(), st.clone(), now).unwrap();
        let bob = FullJid::parse("bob@example.test/pc").unwrap();
        assert_eq!(
            sessions.take("s1", &bob, "test", now).unwrap_err(),
            WireError::BadSessionId
        );
        assert_eq!(
            sessions.take("s1", &alice(), "other", now).unwrap_err(),
            WireError::BadSessionId
        );
        assert!(sessions.take("s1", &alice(), "test", now).is_ok());
        // Taken: a replay of the same step is refused.
        assert_eq!(
            sessions.take("s1", &alice(), "test", now).unwrap_err(),
            WireError::BadSessionId
        );
        sessions.put("s2".into(), st, now).unwrap();
        assert_eq!(
            sessions
                .take("s2", &alice(), "test", now + SESSION_TTL)
                .unwrap_err(),
            WireError::SessionExpired
        );
    }

    #[test]
    fn one_account_cannot_open_unbounded_sessions() {
        let now = Instant::now();
        let sessions = Sessions::default();
        let st = show(transition(&CMD, &alice(), None, Action::Execute, None, now));
        for i in 0..MAX_SESSIONS_PER_ACCOUNT {
            sessions.put(format!("s{i}"), st.clone(), now).unwrap();
        }
        assert_eq!(
            sessions
                .put("one-more".into(), st.clone(), now)
                .unwrap_err(),
            WireError::TooMany
        );
        // Expired ones don't count.
        assert!(sessions
            .put(
                "later".into(),
                st,
                now + SESSION_TTL + Duration::from_secs(1)
            )
            .is_ok());
    }

    #[test]
    fn unknown_action_is_malformed() {
        assert_eq!(Action::parse(Some("jump")), None);
        assert_eq!(Action::parse(None), Some(Action::Execute));
    }
}
