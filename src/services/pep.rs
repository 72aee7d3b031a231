//! XEP-0163 Personal Eventing Protocol: a XEP-0060 publish-subscribe service on every account's
//! bare JID, with the subset clients use — publish (with publish-options, §7.1.5), retrieve,
//! retract, create, configure, delete and purge — and presence-based auto-subscription: events
//! go to the owner's resources and to contacts allowed by the node's access model, filtered by
//! the `NODE+notify` features of their entity capabilities (`services::caps`).
//!
//! This is what OMEMO (XEP-0384), avatars (XEP-0084), nicknames (XEP-0172), vCard4 (XEP-0292)
//! and PEP native bookmarks (XEP-0402) stand on; none of them needs code of its own here,
//! except the bookmarks compatibility views (`services::bookmarks`), hooked in `handle` and
//! `handle_owner`.
//! Storage is `store::pep`; the node configuration is stored as (option, value) pairs that
//! only this module interprets.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::jid::{BareJid, FullJid};
use crate::router::{bounce, deliver_reply};
use crate::server::Server;
use crate::services::bookmarks;
use crate::services::caps::Features;
use crate::services::roster::store_error;
use crate::sessions::{self, Outbound, Resource};
use crate::stanza::{self, ns, Condition, StanzaError};
use crate::store::{PepItem, PepNode, RosterItem, StoreError};
use crate::xml::Element;

pub const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
pub const NS_PUBSUB_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
pub const NS_PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
pub const NS_PUBSUB_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
pub const NS_DATA: &str = "jabber:x:data";
const FORM_PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";
const FORM_NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";

/// `max_items` of `max`: unbounded as far as clients can tell, bounded for the disk.
pub const MAX_ITEMS_CAP: u32 = 1024;
/// Longest node name and item id accepted, in bytes.
const MAX_NAME: usize = 1023;

/// Account disco#info features for what this module implements (XEP-0060 §10).
pub const FEATURES: &[&str] = &[
    NS_PUBSUB,
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-presence",
    "http://jabber.org/protocol/pubsub#access-roster",
    "http://jabber.org/protocol/pubsub#access-whitelist",
    "http://jabber.org/protocol/pubsub#auto-create",
    "http://jabber.org/protocol/pubsub#auto-subscribe",
    "http://jabber.org/protocol/pubsub#config-node",
    "http://jabber.org/protocol/pubsub#create-and-configure",
    "http://jabber.org/protocol/pubsub#create-nodes",
    "http://jabber.org/protocol/pubsub#delete-items",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    "http://jabber.org/protocol/pubsub#filtered-notifications",
    "http://jabber.org/protocol/pubsub#item-ids",
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#multi-items",
    "http://jabber.org/protocol/pubsub#persistent-items",
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#purge-nodes",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#retrieve-default",
    "http://jabber.org/protocol/pubsub#retrieve-items",
];

// ---------------------------------------------------------------- configuration

/// `pubsub#access_model` (XEP-0060 §4.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Open,
    Presence,
    Roster,
    /// Owner only: kith keeps no whitelist of other JIDs.
    Whitelist,
}

impl Access {
    fn parse(s: &str) -> Option<Access> {
        Some(match s {
            "open" => Access::Open,
            "presence" => Access::Presence,
            "roster" => Access::Roster,
            "whitelist" => Access::Whitelist,
            _ => return None,
        })
    }
    fn as_str(self) -> &'static str {
        match self {
            Access::Open => "open",
            Access::Presence => "presence",
            Access::Roster => "roster",
            Access::Whitelist => "whitelist",
        }
    }
}

/// A node's configuration, as far as kith implements it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub access: Access,
    /// Items kept; `MAX_ITEMS_CAP` is what `max` means.
    pub max_items: u32,
    pub persist_items: bool,
    /// Only `publishers` (the owner) is supported.
    pub publish_model: String,
    /// `never`, `on_sub` or `on_sub_and_presence`.
    pub send_last: String,
    pub notify_retract: bool,
    pub notify_delete: bool,
}

impl Default for Config {
    /// XEP-0163 §4 defaults (as Prosody): presence access, one persistent item.
    fn default() -> Config {
        Config {
            access: Access::Presence,
            max_items: 1,
            persist_items: true,
            publish_model: "publishers".into(),
            send_last: "on_sub_and_presence".into(),
            notify_retract: true,
            notify_delete: true,
        }
    }
}

const OPT_ACCESS: &str = "pubsub#access_model";
const OPT_MAX_ITEMS: &str = "pubsub#max_items";
const OPT_PERSIST: &str = "pubsub#persist_items";
const OPT_PUBLISH_MODEL: &str = "pubsub#publish_model";
const OPT_SEND_LAST: &str = "pubsub#send_last_published_item";
const OPT_NOTIFY_RETRACT: &str = "pubsub#notify_retract";
const OPT_NOTIFY_DELETE: &str = "pubsub#notify_delete";

/// Why an option was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct BadOption(pub String);

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

fn parse_max(v: &str) -> Option<u32> {
    if v == "max" {
        return Some(MAX_ITEMS_CAP);
    }
    v.parse::<u32>().ok().map(|n| n.clamp(1, MAX_ITEMS_CAP))
}

impl Config {
    /// Applies one option; unknown options are ignored (Prosody accepts many that change
    /// nothing for PEP, like `pubsub#deliver_payloads`).
    pub fn set(&mut self, var: &str, value: &str) -> Result<(), BadOption> {
        let bad = || BadOption(format!("{var}={value}"));
        match var {
            OPT_ACCESS => self.access = Access::parse(value).ok_or_else(bad)?,
            OPT_MAX_ITEMS => self.max_items = parse_max(value).ok_or_else(bad)?,
            OPT_PERSIST => self.persist_items = parse_bool(value).ok_or_else(bad)?,
            OPT_PUBLISH_MODEL if value == "publishers" => self.publish_model = value.into(),
            OPT_PUBLISH_MODEL => return Err(bad()),
            OPT_SEND_LAST if matches!(value, "never" | "on_sub" | "on_sub_and_presence") => {
                self.send_last = value.into()
            }
            OPT_SEND_LAST => return Err(bad()),
            OPT_NOTIFY_RETRACT => self.notify_retract = parse_bool(value).ok_or_else(bad)?,
            OPT_NOTIFY_DELETE => self.notify_delete = parse_bool(value).ok_or_else(bad)?,
            _ => {}
        }
        Ok(())
    }

    /// XEP-0060 §7.1.5 publish-options against an existing node: every known option must
    /// already hold (compared by meaning: `max` equals the cap, `1` equals `true`). An
    /// unparseable value never holds.
    pub fn satisfies(&self, options: &[(String, String)]) -> bool {
        options.iter().all(|(var, value)| {
            let mut probe = self.clone();
            probe.set(var, value).is_ok() && probe == *self
        })
    }

    pub fn to_node(&self) -> PepNode {
        let b = |v: bool| if v { "true" } else { "false" }.to_string();
        PepNode {
            config: vec![
                (OPT_ACCESS.into(), self.access.as_str().into()),
                (OPT_MAX_ITEMS.into(), self.max_items.to_string()),
                (OPT_PERSIST.into(), b(self.persist_items)),
                (OPT_PUBLISH_MODEL.into(), self.publish_model.clone()),
                (OPT_SEND_LAST.into(), self.send_last.clone()),
                (OPT_NOTIFY_RETRACT.into(), b(self.notify_retract)),
                (OPT_NOTIFY_DELETE.into(), b(self.notify_delete)),
            ],
        }
    }

    /// The service's defaults (as Prosody's mod_pubsub): open access, the last ten items.
    pub fn service_default() -> Config {
        Config {
            access: Access::Open,
            max_items: 10,
            ..Config::default()
        }
    }

    /// A stored configuration; values a later kith wrote that this one does not know keep
    /// their defaults.
    pub fn from_node(node: &PepNode) -> Config {
        let mut c = Config::default();
        for (k, v) in &node.config {
            let _ = c.set(k, v);
        }
        c
    }

    fn max(&self) -> usize {
        self.max_items as usize
    }

    /// The node configuration form (XEP-0060 §8.2), `type` form or result.
    fn form(&self, typ: &str) -> Element {
        let mut x = Element::new("x", NS_DATA).with_attr("type", typ);
        x.push_child(field("FORM_TYPE", "hidden", &[FORM_NODE_CONFIG]));
        let mut access = field(OPT_ACCESS, "list-single", &[self.access.as_str()]);
        for o in ["open", "presence", "roster", "whitelist"] {
            access.push_child(
                Element::new("option", NS_DATA)
                    .with_child(Element::new("value", NS_DATA).with_text(o)),
            );
        }
        x.push_child(access);
        let max = if self.max_items >= MAX_ITEMS_CAP {
            "max".to_string()
        } else {
            self.max_items.to_string()
        };
        x.push_child(field(OPT_MAX_ITEMS, "text-single", &[&max]));
        let b = |v: bool| if v { "1" } else { "0" };
        x.push_child(field(OPT_PERSIST, "boolean", &[b(self.persist_items)]));
        x.push_child(field(
            OPT_PUBLISH_MODEL,
            "list-single",
            &[&self.publish_model],
        ));
        x.push_child(field(OPT_SEND_LAST, "list-single", &[&self.send_last]));
        x.push_child(field(
            OPT_NOTIFY_RETRACT,
            "boolean",
            &[b(self.notify_retract)],
        ));
        x.push_child(field(
            OPT_NOTIFY_DELETE,
            "boolean",
            &[b(self.notify_delete)],
        ));
        x
    }
}

fn field(var: &str, typ: &str, values: &[&str]) -> Element {
    let mut f = Element::new("field", NS_DATA)
        .with_attr("var", var)
        .with_attr("type", typ);
    for v in values {
        f.push_child(Element::new("value", NS_DATA).with_text(*v));
    }
    f
}

/// The (var, first value) pairs of a submitted data form, FORM_TYPE left out.
pub fn form_values(x: &Element) -> Vec<(String, String)> {
    x.children()
        .filter(|c| c.is("field", NS_DATA))
        .filter_map(|f| {
            let var = f.attr("var")?;
            if var == "FORM_TYPE" {
                return None;
            }
            let value = f
                .get_child("value", NS_DATA)
                .map(|v| v.text())
                .unwrap_or_default();
            Some((var.to_string(), value))
        })
        .collect()
}

/// The FORM_TYPE of a data form.
fn form_type(x: &Element) -> Option<String> {
    x.children()
        .filter(|c| c.is("field", NS_DATA))
        .find(|f| f.attr("var") == Some("FORM_TYPE"))
        .and_then(|f| f.get_child("value", NS_DATA))
        .map(|v| v.text())
}

// ---------------------------------------------------------------- access

/// Whether `who` may see `owner`'s node, given `owner`'s roster item for `who`.
pub fn allowed(access: Access, owner: &BareJid, who: &BareJid, item: Option<&RosterItem>) -> bool {
    if owner == who {
        return true;
    }
    match access {
        Access::Open => true,
        Access::Presence => item.is_some_and(|i| i.subscription.has_from()),
        Access::Roster => item.is_some(),
        Access::Whitelist => false,
    }
}

/// The error for a requester the access model refuses (XEP-0060 §6.5.9 / §7.1.3).
pub(crate) fn access_error(access: Access) -> PubsubError {
    match access {
        Access::Open => PubsubError::new(Condition::Forbidden, None),
        Access::Presence => PubsubError::new(
            Condition::NotAuthorized,
            Some("presence-subscription-required"),
        ),
        Access::Roster => PubsubError::new(Condition::NotAuthorized, Some("not-in-roster-group")),
        Access::Whitelist => PubsubError::new(Condition::NotAllowed, Some("closed-node")),
    }
}

async fn may_see(
    srv: &Server,
    owner: &BareJid,
    who: &BareJid,
    cfg: &Config,
) -> Result<bool, StoreError> {
    if owner == who || cfg.access == Access::Open {
        return Ok(true);
    }
    if cfg.access == Access::Whitelist {
        return Ok(false);
    }
    let item = srv.store.roster_item(owner.as_ref(), who.as_ref()).await?;
    Ok(allowed(cfg.access, owner, who, item.as_ref()))
}

// ---------------------------------------------------------------- hosts

/// Who owns a set of nodes: an account (PEP, XEP-0163) or the publish-subscribe service at
/// `pubsub.DOMAIN` (XEP-0060, `services::pubsub`). The node engine below (publish with
/// options, items, retract, create, configure, delete, purge) is the same for both; what
/// differs is only here: the store key, the defaults and accepted access models, who may see
/// a node and who hears its events.
#[derive(Clone, Copy, Debug)]
pub enum Host<'a> {
    Account(&'a BareJid),
    /// The service's domain.
    Service(&'a str),
}

impl Host<'_> {
    /// The owner key of the node set in the store.
    pub fn key(&self) -> &str {
        match self {
            Host::Account(owner) => owner.as_ref(),
            Host::Service(domain) => domain,
        }
    }

    /// The address events and items come from.
    pub fn jid(&self) -> String {
        self.key().to_string()
    }

    pub fn default_config(&self) -> Config {
        match self {
            Host::Account(_) => Config::default(),
            Host::Service(_) => Config::service_default(),
        }
    }

    /// A service has no roster, so presence and roster access mean nothing there.
    pub fn accepts(&self, cfg: &Config) -> bool {
        match self {
            Host::Account(_) => true,
            Host::Service(_) => matches!(cfg.access, Access::Open | Access::Whitelist),
        }
    }

    async fn may_see(
        &self,
        srv: &Server,
        node: &str,
        who: &BareJid,
        cfg: &Config,
    ) -> Result<bool, StoreError> {
        match self {
            Host::Account(owner) => may_see(srv, owner, who, cfg).await,
            Host::Service(domain) => {
                crate::services::pubsub::may_see(srv, domain, node, who, cfg).await
            }
        }
    }

    async fn notify(&self, srv: &Server, node: &str, cfg: &Config, event: Element) {
        match self {
            Host::Account(owner) => notify(srv, owner, node, cfg, event).await,
            Host::Service(domain) => {
                crate::services::pubsub::notify(srv, domain, node, event).await
            }
        }
    }
}

/// The `<default/>` answer (XEP-0060 §8.3): the host's default node configuration.
pub(crate) fn default_form(host: Host<'_>) -> Element {
    owner_reply(
        Element::new("default", NS_PUBSUB_OWNER).with_child(host.default_config().form("form")),
    )
}

// ---------------------------------------------------------------- errors

/// A stanza error with an optional `pubsub#errors` condition (XEP-0060 §7.1.3).
#[derive(Debug)]
pub struct PubsubError {
    condition: Condition,
    specific: Option<&'static str>,
    unsupported: Option<&'static str>,
}

impl PubsubError {
    pub(crate) fn new(condition: Condition, specific: Option<&'static str>) -> PubsubError {
        PubsubError {
            condition,
            specific,
            unsupported: None,
        }
    }
    pub(crate) fn unsupported(feature: &'static str) -> PubsubError {
        PubsubError {
            condition: Condition::FeatureNotImplemented,
            specific: Some("unsupported"),
            unsupported: Some(feature),
        }
    }
}

impl From<Condition> for PubsubError {
    fn from(c: Condition) -> PubsubError {
        PubsubError::new(c, None)
    }
}

impl From<StoreError> for PubsubError {
    fn from(e: StoreError) -> PubsubError {
        let StanzaError { condition, .. } = store_error(e);
        PubsubError::new(condition, None)
    }
}

fn send_error(srv: &Server, iq: &Element, e: PubsubError) {
    if stanza::must_not_answer(iq) {
        return;
    }
    let mut reply = stanza::error_reply(iq, &StanzaError::new(e.condition));
    if let (Some(specific), Some(err)) = (e.specific, reply.get_child_mut("error", ns::CLIENT)) {
        let mut el = Element::new(specific, NS_PUBSUB_ERRORS);
        if let Some(f) = e.unsupported {
            el.set_attr("feature", f);
        }
        err.push_child(el);
    }
    deliver_reply(srv, reply);
}

pub type Reply = Result<Option<Element>, PubsubError>;

// ---------------------------------------------------------------- iq handlers

/// An iq with a `<pubsub xmlns='http://jabber.org/protocol/pubsub'/>` payload for `owner`.
pub async fn handle(srv: &Server, from: &FullJid, owner: &BareJid, iq: Element) {
    let Some(pubsub) = iq.get_child("pubsub", NS_PUBSUB) else {
        return bounce(srv, &iq, Condition::BadRequest.into());
    };
    let own = from.to_bare() == *owner;
    let set = iq.attr("type") == Some("set");
    let Some(op) = pubsub.first_child() else {
        return bounce(srv, &iq, Condition::BadRequest.into());
    };
    // XEP-0402 §5 compat: the legacy bookmarks node is a view of the XEP-0402 node.
    if own && op.attr("node") == Some(bookmarks::NS_LEGACY) {
        if let (true, "publish") | (false, "items") = (set, op.name()) {
            let result = bookmarks::legacy_pep(srv, owner, op).await;
            return finish(srv, &iq, result);
        }
    }
    if own {
        if let Some(node) = op.attr("node") {
            bookmarks::before_use(srv, owner, node).await;
        }
    }
    let result = match (set, op.name()) {
        (true, "publish") if own => publish(srv, Host::Account(owner), pubsub, op).await,
        (true, "retract") if own => retract(srv, Host::Account(owner), op).await,
        (true, "create") if own => create(srv, Host::Account(owner), pubsub, op).await,
        (true, "publish" | "retract" | "create") => Err(Condition::Forbidden.into()),
        (false, "items") => items(srv, &from.to_bare(), Host::Account(owner), op).await,
        (true, "subscribe" | "unsubscribe") => Err(PubsubError::unsupported("subscribe")),
        (false, "subscriptions") => Err(PubsubError::unsupported("retrieve-subscriptions")),
        (false, "affiliations") => Err(PubsubError::unsupported("retrieve-affiliations")),
        _ => Err(Condition::FeatureNotImplemented.into()),
    };
    if own && set && result.is_ok() {
        if let Some(node) = op.attr("node") {
            bookmarks::after_change(srv, owner, node).await;
        }
    }
    finish(srv, &iq, result);
}

/// An iq with a `<pubsub xmlns='…#owner'/>` payload: only the owner may use it.
pub async fn handle_owner(srv: &Server, from: &FullJid, owner: &BareJid, iq: Element) {
    let Some(op) = iq
        .get_child("pubsub", NS_PUBSUB_OWNER)
        .and_then(|p| p.first_child())
    else {
        return bounce(srv, &iq, Condition::BadRequest.into());
    };
    let set = iq.attr("type") == Some("set");
    let result = if from.to_bare() != *owner {
        Err(Condition::Forbidden.into())
    } else {
        if let Some(node) = op.attr("node") {
            bookmarks::before_use(srv, owner, node).await;
        }
        match (set, op.name()) {
            (false, "configure") => configure_get(srv, Host::Account(owner), op).await,
            (true, "configure") => configure_set(srv, Host::Account(owner), op).await,
            (false, "default") => Ok(Some(default_form(Host::Account(owner)))),
            (true, "delete") => delete(srv, Host::Account(owner), op).await,
            (true, "purge") => purge(srv, Host::Account(owner), op).await,
            _ => Err(Condition::FeatureNotImplemented.into()),
        }
    };
    if set && result.is_ok() && matches!(op.name(), "delete" | "purge") {
        if let Some(node) = op.attr("node") {
            bookmarks::after_change(srv, owner, node).await;
        }
    }
    finish(srv, &iq, result);
}

pub(crate) fn finish(srv: &Server, iq: &Element, result: Reply) {
    match result {
        Ok(payload) => deliver_reply(srv, stanza::iq_result(iq, payload)),
        Err(e) => send_error(srv, iq, e),
    }
}

pub(crate) fn node_attr(op: &Element) -> Result<&str, PubsubError> {
    match op.attr("node") {
        Some(n) if !n.is_empty() && n.len() <= MAX_NAME => Ok(n),
        Some(n) if !n.is_empty() => Err(Condition::NotAcceptable.into()),
        _ => Err(PubsubError::new(
            Condition::BadRequest,
            Some("nodeid-required"),
        )),
    }
}

pub(crate) fn pubsub_reply(child: Element) -> Element {
    Element::new("pubsub", NS_PUBSUB).with_child(child)
}

pub(crate) fn owner_reply(child: Element) -> Element {
    Element::new("pubsub", NS_PUBSUB_OWNER).with_child(child)
}

/// A fresh item id for a publish without one (XEP-0060 §7.1.2: the service generates it).
pub(crate) fn new_item_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// The options of a `<publish-options/>` form, if any.
pub fn publish_options(pubsub: &Element) -> Vec<(String, String)> {
    pubsub
        .get_child("publish-options", NS_PUBSUB)
        .and_then(|po| po.get_child("x", NS_DATA))
        .filter(|x| form_type(x).is_none_or(|t| t == FORM_PUBLISH_OPTIONS))
        .map(form_values)
        .unwrap_or_default()
}

/// XEP-0060 §7.1 with §7.1.5 publish-options and XEP-0163 §7 auto-create.
pub(crate) async fn publish(srv: &Server, host: Host<'_>, pubsub: &Element, op: &Element) -> Reply {
    let node = node_attr(op)?;
    let mut items = op.children().filter(|c| c.is("item", NS_PUBSUB));
    let item = match (items.next(), items.next()) {
        (Some(i), None) => i,
        (None, _) => {
            return Err(PubsubError::new(
                Condition::BadRequest,
                Some("item-required"),
            ))
        }
        (Some(_), Some(_)) => {
            return Err(PubsubError::new(
                Condition::BadRequest,
                Some("invalid-payload"),
            ))
        }
    };
    let mut payloads = item.children();
    let payload = payloads.next().cloned();
    if payloads.next().is_some() {
        return Err(PubsubError::new(
            Condition::BadRequest,
            Some("invalid-payload"),
        ));
    }
    let id = match item.attr("id") {
        Some(id) if !id.is_empty() && id.len() <= MAX_NAME => id.to_string(),
        Some(id) if !id.is_empty() => return Err(Condition::NotAcceptable.into()),
        _ => new_item_id(),
    };
    let options = publish_options(pubsub);
    publish_on(srv, host, node, &options, id.clone(), payload).await?;
    Ok(Some(pubsub_reply(
        Element::new("publish", NS_PUBSUB)
            .with_attr("node", node)
            .with_child(Element::new("item", NS_PUBSUB).with_attr("id", id)),
    )))
}

/// The configuration a publish with `options` gets: a new node's, made from them, or the
/// stored node's, when every option already holds (XEP-0060 §7.1.5 preconditions).
pub fn node_config(
    existing: Option<&PepNode>,
    options: &[(String, String)],
) -> Result<Config, PubsubError> {
    let not_met = || PubsubError::new(Condition::Conflict, Some("precondition-not-met"));
    match existing {
        Some(stored) => {
            let cfg = Config::from_node(stored);
            if cfg.satisfies(options) {
                Ok(cfg)
            } else {
                Err(not_met())
            }
        }
        None => {
            let mut cfg = Config::default();
            for (var, value) in options {
                cfg.set(var, value).map_err(|_| not_met())?;
            }
            Ok(cfg)
        }
    }
}

/// Publishes one item (creating the node with `options` when missing, checking them as
/// preconditions otherwise) and notifies. Also used by the vcard-temp conversion.
pub async fn publish_on(
    srv: &Server,
    host: Host<'_>,
    node: &str,
    options: &[(String, String)],
    id: String,
    payload: Option<Element>,
) -> Result<Config, PubsubError> {
    let existing = srv.store.pep_node(host.key(), node).await?;
    let cfg = node_config(existing.as_ref(), options)?;
    let bytes = payload
        .as_ref()
        .map(|p| p.to_bytes_in(""))
        .unwrap_or_default();
    let item = PepItem {
        id: id.clone(),
        payload: bytes,
    };
    // A transient node (`persist_items` false) notifies but keeps nothing (XEP-0060 §4.3).
    let keep = if cfg.persist_items { cfg.max() } else { 0 };
    let cfg = Config::from_node(
        &srv.store
            .pep_publish(host.key(), node, cfg.to_node(), item, keep)
            .await?,
    );
    let mut el = Element::new("item", NS_PUBSUB_EVENT).with_attr("id", id);
    if let Some(p) = payload {
        el.push_child(p);
    }
    let event = Element::new("items", NS_PUBSUB_EVENT)
        .with_attr("node", node)
        .with_child(el);
    host.notify(srv, node, &cfg, event).await;
    Ok(cfg)
}

/// XEP-0060 §6.5: items, all or the newest `max_items`, or the ones named.
pub(crate) async fn items(srv: &Server, who: &BareJid, host: Host<'_>, op: &Element) -> Reply {
    let node = node_attr(op)?;
    let Some(stored) = srv.store.pep_node(host.key(), node).await? else {
        return Err(Condition::ItemNotFound.into());
    };
    let cfg = Config::from_node(&stored);
    if !host.may_see(srv, node, who, &cfg).await? {
        return Err(access_error(cfg.access));
    }
    let mut all = srv.store.pep_items(host.key(), node).await?;
    let wanted: Vec<&str> = op
        .children()
        .filter(|c| c.is("item", NS_PUBSUB))
        .filter_map(|c| c.attr("id"))
        .collect();
    if !wanted.is_empty() {
        all.retain(|i| wanted.contains(&i.id.as_str()));
    }
    if let Some(max) = op.attr("max_items").and_then(|m| m.parse::<usize>().ok()) {
        let skip = all.len().saturating_sub(max);
        all.drain(..skip);
    }
    let mut items = Element::new("items", NS_PUBSUB).with_attr("node", node);
    for i in &all {
        items.push_child(item_element(i, NS_PUBSUB));
    }
    Ok(Some(pubsub_reply(items)))
}

/// A stored item as `<item id>payload</item>` in `ns` (pubsub or pubsub#event).
pub(crate) fn item_element(item: &PepItem, namespace: &str) -> Element {
    let mut el = Element::new("item", namespace).with_attr("id", item.id.as_str());
    if !item.payload.is_empty() {
        match std::str::from_utf8(&item.payload).map(Element::parse) {
            Ok(Ok(p)) => el.push_child(p),
            _ => log::error!("pep: stored item {} does not parse; sent empty", item.id),
        }
    }
    el
}

/// XEP-0060 §7.2.
pub(crate) async fn retract(srv: &Server, host: Host<'_>, op: &Element) -> Reply {
    let node = node_attr(op)?;
    let Some(id) = op.get_child("item", NS_PUBSUB).and_then(|i| i.attr("id")) else {
        return Err(PubsubError::new(
            Condition::BadRequest,
            Some("item-required"),
        ));
    };
    retract_on(
        srv,
        host,
        node,
        id,
        matches!(op.attr("notify"), Some("1" | "true")),
    )
    .await?;
    Ok(None)
}

/// Retracts one item and notifies (when the node says so, or `force_notify`); `item-not-found`
/// when the node or the item does not exist. Also used by the bookmarks sync.
pub async fn retract_on(
    srv: &Server,
    host: Host<'_>,
    node: &str,
    id: &str,
    force_notify: bool,
) -> Result<(), PubsubError> {
    let Some(stored) = srv.store.pep_node(host.key(), node).await? else {
        return Err(Condition::ItemNotFound.into());
    };
    if !srv.store.pep_retract(host.key(), node, id).await? {
        return Err(Condition::ItemNotFound.into());
    }
    let cfg = Config::from_node(&stored);
    if cfg.notify_retract || force_notify {
        let event = Element::new("items", NS_PUBSUB_EVENT)
            .with_attr("node", node)
            .with_child(Element::new("retract", NS_PUBSUB_EVENT).with_attr("id", id));
        host.notify(srv, node, &cfg, event).await;
    }
    Ok(())
}

/// XEP-0060 §8.1 (with §8.1.3 create-and-configure).
pub(crate) async fn create(srv: &Server, host: Host<'_>, pubsub: &Element, op: &Element) -> Reply {
    let node = match op.attr("node") {
        Some(_) => node_attr(op)?,
        None => {
            return Err(PubsubError::new(
                Condition::NotAcceptable,
                Some("nodeid-required"),
            ))
        }
    };
    let mut cfg = host.default_config();
    if let Some(x) = pubsub
        .get_child("configure", NS_PUBSUB)
        .and_then(|c| c.get_child("x", NS_DATA))
    {
        for (var, value) in form_values(x) {
            if cfg.set(&var, &value).is_err() || !host.accepts(&cfg) {
                return Err(Condition::NotAcceptable.into());
            }
        }
    }
    match srv.store.pep_create(host.key(), node, cfg.to_node()).await {
        Ok(()) => Ok(None),
        Err(StoreError::AlreadyExists(_)) => Err(Condition::Conflict.into()),
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn configure_get(srv: &Server, host: Host<'_>, op: &Element) -> Reply {
    let node = node_attr(op)?;
    let Some(stored) = srv.store.pep_node(host.key(), node).await? else {
        return Err(Condition::ItemNotFound.into());
    };
    Ok(Some(owner_reply(
        Element::new("configure", NS_PUBSUB_OWNER)
            .with_attr("node", node)
            .with_child(Config::from_node(&stored).form("form")),
    )))
}

pub(crate) async fn configure_set(srv: &Server, host: Host<'_>, op: &Element) -> Reply {
    let node = node_attr(op)?;
    let Some(stored) = srv.store.pep_node(host.key(), node).await? else {
        return Err(Condition::ItemNotFound.into());
    };
    let Some(x) = op.get_child("x", NS_DATA) else {
        return Err(Condition::BadRequest.into());
    };
    if x.attr("type") == Some("cancel") {
        return Ok(None);
    }
    let mut cfg = Config::from_node(&stored);
    for (var, value) in form_values(x) {
        if cfg.set(&var, &value).is_err() || !host.accepts(&cfg) {
            return Err(Condition::NotAcceptable.into());
        }
    }
    let keep = if cfg.persist_items { cfg.max() } else { 0 };
    srv.store
        .pep_configure(host.key(), node, cfg.to_node(), keep)
        .await?;
    Ok(None)
}

/// XEP-0060 §8.4: subscribers hear `<delete/>`.
pub(crate) async fn delete(srv: &Server, host: Host<'_>, op: &Element) -> Reply {
    let node = node_attr(op)?;
    let Some(stored) = srv.store.pep_node(host.key(), node).await? else {
        return Err(Condition::ItemNotFound.into());
    };
    srv.store.pep_delete(host.key(), node).await?;
    let cfg = Config::from_node(&stored);
    if cfg.notify_delete {
        let event = Element::new("delete", NS_PUBSUB_EVENT).with_attr("node", node);
        host.notify(srv, node, &cfg, event).await;
    }
    Ok(None)
}

/// XEP-0060 §8.5: subscribers hear `<purge/>`.
pub(crate) async fn purge(srv: &Server, host: Host<'_>, op: &Element) -> Reply {
    let node = node_attr(op)?;
    let Some(stored) = srv.store.pep_node(host.key(), node).await? else {
        return Err(Condition::ItemNotFound.into());
    };
    srv.store.pep_purge(host.key(), node).await?;
    let cfg = Config::from_node(&stored);
    let event = Element::new("purge", NS_PUBSUB_EVENT).with_attr("node", node);
    host.notify(srv, node, &cfg, event).await;
    Ok(None)
}

/// Publishes on an account's PEP node (see [`publish_on`]); used by the vcard-temp conversion
/// and the bookmarks sync.
pub async fn publish_item(
    srv: &Server,
    owner: &BareJid,
    node: &str,
    options: &[(String, String)],
    id: String,
    payload: Option<Element>,
) -> Result<Config, PubsubError> {
    publish_on(srv, Host::Account(owner), node, options, id, payload).await
}

/// Retracts from an account's PEP node (see [`retract_on`]).
pub async fn retract_item(
    srv: &Server,
    owner: &BareJid,
    node: &str,
    id: &str,
    force_notify: bool,
) -> Result<(), PubsubError> {
    retract_on(srv, Host::Account(owner), node, id, force_notify).await
}

/// XEP-0060 §5.2: disco#items on the account lists the nodes `who` may see. A query with a
/// `node` (items of a node) gets an empty list, as Prosody does.
pub async fn disco_items(srv: &Server, who: &BareJid, owner: &BareJid, query: &Element) -> Element {
    let mut q = Element::new("query", ns::DISCO_ITEMS);
    if let Some(node) = query.attr("node") {
        q.set_attr("node", node);
        return q;
    }
    let nodes = match srv.store.pep_nodes(owner.as_ref()).await {
        Ok(n) => n,
        Err(e) => {
            log::error!("store: cannot list PEP nodes of {owner}: {e}");
            return q;
        }
    };
    for (node, stored) in nodes {
        if matches!(
            may_see(srv, owner, who, &Config::from_node(&stored)).await,
            Ok(true)
        ) {
            q.push_child(
                Element::new("item", ns::DISCO_ITEMS)
                    .with_attr("jid", owner.to_string())
                    .with_attr("node", node),
            );
        }
    }
    q
}

// ---------------------------------------------------------------- notifications

fn wants(features: &Features, node: &str) -> bool {
    let want = format!("{node}+notify");
    features.contains(&want)
}

fn event_message(owner: &BareJid, to: &FullJid, event_child: Element) -> Element {
    Element::new("message", ns::CLIENT)
        .with_attr("type", "headline")
        .with_attr("from", owner.to_string())
        .with_attr("to", to.to_string())
        .with_child(Element::new("event", NS_PUBSUB_EVENT).with_child(event_child))
}

/// The features of an available resource, from its last presence's caps (cached only).
fn features_of(srv: &Server, r: &Resource) -> Option<Features> {
    let p = r.presence.as_ref()?;
    srv.caps.features(&r.jid, p)
}

/// XEP-0163 §4.3: the event goes to the owner's available resources and to every contact
/// with a presence subscription to the owner that the access model allows, on each of their
/// available resources that asked for it (`NODE+notify`): here through the sessions, on other
/// servers through federation (the resources `services::pep_remote` knows of).
pub async fn notify(srv: &Server, owner: &BareJid, node: &str, cfg: &Config, event: Element) {
    let mut targets: Vec<Resource> = srv
        .sessions
        .resources(owner)
        .into_iter()
        .filter(|r| r.available)
        .collect();
    let mut remote = Vec::new();
    if cfg.access != Access::Whitelist {
        match srv.store.roster(owner.as_ref()).await {
            Ok((_, items)) => {
                for (contact, item) in &items {
                    let Ok(c) = BareJid::parse(contact) else {
                        continue;
                    };
                    if !item.subscription.has_from() || !allowed(cfg.access, owner, &c, Some(item))
                    {
                        continue;
                    }
                    if srv.is_local_user(&c) {
                        targets.extend(
                            srv.sessions
                                .resources(&c)
                                .into_iter()
                                .filter(|r| r.available),
                        );
                    } else {
                        for (jid, p) in srv.pep_remote.of(owner, &c) {
                            if srv.caps.features(&jid, &p).is_some_and(|f| wants(&f, node)) {
                                remote.push(jid);
                            }
                        }
                    }
                }
            }
            Err(e) => log::error!("store: cannot read the roster of {owner} to notify {node}: {e}"),
        }
    }
    for r in targets {
        if features_of(srv, &r).is_some_and(|f| wants(&f, node)) {
            sessions::send(
                &r,
                Outbound::stanza(event_message(owner, &r.jid, event.clone())),
            );
        }
    }
    for jid in remote {
        crate::router::to_elsewhere(srv, event_message(owner, &jid, event.clone()));
    }
}

/// XEP-0163 §4.3.2 / §6: the last item of each node of `owner` that resource `to` (with
/// `features`) asked for and may see.
async fn send_last_of(srv: &Server, owner: &BareJid, to: &FullJid, features: &Features) {
    let nodes = match srv.store.pep_nodes(owner.as_ref()).await {
        Ok(n) => n,
        Err(e) => return log::error!("store: cannot list PEP nodes of {owner}: {e}"),
    };
    // A resource here gets the items through its session (gone: nothing to do); one elsewhere
    // through federation.
    let session = if srv.is_local_domain(to.domain()) {
        match srv.sessions.resource(to) {
            Some(r) => Some(r),
            None => return,
        }
    } else {
        None
    };
    let who = to.to_bare();
    for (node, stored) in nodes {
        let cfg = Config::from_node(&stored);
        if cfg.send_last == "never" || !wants(features, &node) {
            continue;
        }
        match may_see(srv, owner, &who, &cfg).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                log::error!("store: {e}");
                continue;
            }
        }
        let last = match srv.store.pep_items(owner.as_ref(), &node).await {
            Ok(mut items) => items.pop(),
            Err(e) => {
                log::error!("store: {e}");
                None
            }
        };
        if let Some(item) = last {
            let event = Element::new("items", NS_PUBSUB_EVENT)
                .with_attr("node", node.as_str())
                .with_child(item_element(&item, NS_PUBSUB_EVENT));
            let mut msg = event_message(owner, to, event);
            msg.push_child(
                Element::new("delay", ns::DELAY)
                    .with_attr("from", owner.to_string())
                    .with_attr("stamp", crate::time::rfc3339(crate::time::now_unix())),
            );
            match &session {
                Some(r) => {
                    sessions::send(r, Outbound::stanza(msg));
                }
                None => crate::router::to_elsewhere(srv, msg),
            }
        }
    }
}

/// Last items for a resource whose features just became known: its own account's nodes and
/// those of every contact whose presence it receives.
pub async fn deliver_last_items(srv: &Server, to: &FullJid, features: &Features) {
    let me = to.to_bare();
    send_last_of(srv, &me, to, features).await;
    match srv.store.roster(me.as_ref()).await {
        Ok((_, items)) => {
            for (contact, item) in items {
                if !item.subscription.has_to() {
                    continue;
                }
                if let Ok(c) = BareJid::parse(&contact) {
                    if srv.is_local_user(&c) {
                        send_last_of(srv, &c, to, features).await;
                    }
                }
            }
        }
        Err(e) => log::error!("store: cannot read the roster of {me}: {e}"),
    }
}

/// Hook for `services::presence`: available presence from a local resource, `old` its
/// previous presence. Initial presence, or a change of caps, brings the last items.
pub async fn presence_available(srv: &Server, me: &FullJid, old: Option<&Element>, new: &Element) {
    let ver = |p: &Element| crate::services::caps::caps_of(p).map(|(_, v, _)| v.to_string());
    if let Some(old) = old {
        if ver(old) == ver(new) {
            return;
        }
    }
    if let Some(features) = srv.caps.resolve(srv, me, new) {
        deliver_last_items(srv, me, &features).await;
    }
}

/// Hook for `services::iq` and the router: an iq result or error addressed to the server.
pub async fn iq_response(srv: &Server, from: &FullJid, iq: &Element) {
    for (jid, features) in srv.caps.answer(from, iq) {
        if srv.is_local_domain(jid.domain()) {
            deliver_last_items(srv, &jid, &features).await;
        } else {
            for owner in srv.pep_remote.accounts_of(&jid) {
                send_last_of(srv, &owner, &jid, &features).await;
            }
        }
    }
}

/// Hook for `services::presence`: presence from a resource on another server to local account
/// `owner`'s bare JID. A contact subscribed to `owner` (`from` or `both`) is remembered with
/// its caps, and new caps bring `owner`'s last items (XEP-0163 §4.3.2), now if the features
/// are cached, else when the disco#info answer comes back (`iq_response`).
pub async fn remote_presence(srv: &Server, owner: &BareJid, from: &FullJid, presence: &Element) {
    use crate::services::pep_remote::Seen;
    if presence.attr("type").is_none() {
        let item = srv
            .store
            .roster_item(owner.as_ref(), from.to_bare().as_ref())
            .await;
        if !item.is_ok_and(|i| i.is_some_and(|i| i.subscription.has_from())) {
            srv.pep_remote.forget(owner, from);
            return;
        }
    }
    if let Seen::NewCaps(reduced) = srv.pep_remote.presence(owner, from, presence) {
        if let Some(features) = srv.caps.resolve(srv, from, &reduced) {
            send_last_of(srv, owner, from, &features).await;
        }
    }
}

/// Hook for `services::presence`: `owner` approved `contact`'s subscription, so the
/// contact's resources get the owner's last items (XEP-0163 §4.3.2 "on_sub").
pub async fn subscription_approved(srv: &Server, owner: &BareJid, contact: &BareJid) {
    if !srv.is_local_user(contact) {
        return;
    }
    for r in srv
        .sessions
        .resources(contact)
        .iter()
        .filter(|r| r.available)
    {
        if let Some(f) = features_of(srv, r) {
            send_last_of(srv, owner, &r.jid, &f).await;
        }
    }
}

/// The newest item of a node, if `who` may see the node (used by the vcard-temp conversion).
pub async fn last_item(
    srv: &Server,
    owner: &BareJid,
    who: &BareJid,
    node: &str,
) -> Result<Option<Option<Element>>, StoreError> {
    let Some(stored) = srv.store.pep_node(owner.as_ref(), node).await? else {
        return Ok(None);
    };
    if !may_see(srv, owner, who, &Config::from_node(&stored)).await? {
        return Ok(None);
    }
    let last = srv.store.pep_items(owner.as_ref(), node).await?.pop();
    Ok(Some(last.and_then(|i| {
        std::str::from_utf8(&i.payload)
            .ok()
            .and_then(|s| Element::parse(s).ok())
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Subscription;

    fn opts(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn publish_options_match_by_meaning() {
        let mut c = Config::default();
        c.set(OPT_ACCESS, "open").unwrap();
        c.set(OPT_MAX_ITEMS, "max").unwrap();
        assert!(c.satisfies(&opts(&[("pubsub#access_model", "open")])));
        assert!(c.satisfies(&opts(&[
            ("pubsub#max_items", "max"),
            ("pubsub#persist_items", "1")
        ])));
        assert!(c.satisfies(&opts(&[("pubsub#persist_items", "true")])));
        assert!(!c.satisfies(&opts(&[("pubsub#access_model", "presence")])));
        assert!(!c.satisfies(&opts(&[("pubsub#max_items", "1")])));
        assert!(!c.satisfies(&opts(&[("pubsub#access_model", "bogus")])));
        // Unknown options change nothing, so they hold.
        assert!(c.satisfies(&opts(&[("pubsub#deliver_payloads", "1")])));
    }

    #[test]
    fn config_round_trips_through_the_store_form() {
        let mut c = Config::default();
        c.set(OPT_ACCESS, "whitelist").unwrap();
        c.set(OPT_MAX_ITEMS, "7").unwrap();
        c.set(OPT_SEND_LAST, "never").unwrap();
        assert_eq!(Config::from_node(&c.to_node()), c);
        assert!(c.clone().set(OPT_PUBLISH_MODEL, "open").is_err());
        assert_eq!(parse_max("0"), Some(1));
        assert_eq!(parse_max("100000"), Some(MAX_ITEMS_CAP));
    }

    #[test]
    fn access_models() {
        let owner = BareJid::parse("alice@x").unwrap();
        let bob = BareJid::parse("bob@x").unwrap();
        let item = |s| RosterItem {
            name: None,
            subscription: s,
            ask: false,
            approved: false,
            groups: vec![],
        };
        let from = item(Subscription::From);
        let to = item(Subscription::To);
        assert!(allowed(Access::Open, &owner, &bob, None));
        assert!(allowed(Access::Presence, &owner, &bob, Some(&from)));
        assert!(!allowed(Access::Presence, &owner, &bob, Some(&to)));
        assert!(!allowed(Access::Presence, &owner, &bob, None));
        assert!(allowed(Access::Roster, &owner, &bob, Some(&to)));
        assert!(!allowed(Access::Roster, &owner, &bob, None));
        assert!(!allowed(Access::Whitelist, &owner, &bob, Some(&from)));
        assert!(allowed(Access::Whitelist, &owner, &owner, None));
    }
}
