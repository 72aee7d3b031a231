//! XEP-0060 Publish-Subscribe: the service at `pubsub.DOMAIN` (`[pubsub]`), for named feeds
//! that people and bots share. It runs on the same node engine as PEP (`services::pep`, with
//! `Host::Service`): publish with publish-options, items, retract, create-and-configure,
//! configure, delete, purge, the same stored node configuration. What this module adds is what
//! a service has and an account's PEP has not: explicit subscriptions, affiliations (XEP-0060
//! §4.1: owner, publisher, member, none, outcast), who may create nodes, and notifications to
//! subscribers wherever they are (local resources, or other servers through the router).
//!
//! Access models: `open` (anyone not outcast) and `whitelist` (affiliated members only);
//! presence and roster access need a roster, which a service lacks, and are refused.

use crate::jid::{BareJid, Jid};
use crate::router::{bounce, message_to_bare, to_elsewhere};
use crate::server::Server;
use crate::services::pep::{
    self, access_error, finish, item_element, node_attr, owner_reply, pubsub_reply, Access, Config,
    Host, PubsubError, Reply, NS_PUBSUB, NS_PUBSUB_EVENT, NS_PUBSUB_OWNER,
};
use crate::sessions::{self, Outbound};
use crate::stanza::{self, ns, Condition};
use crate::store::{PubsubMember, StoreError};
use crate::xml::Element;

/// Service disco#info features (XEP-0060 §10): what the handlers below implement.
pub const FEATURES: &[&str] = &[
    NS_PUBSUB,
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-whitelist",
    "http://jabber.org/protocol/pubsub#auto-create",
    "http://jabber.org/protocol/pubsub#config-node",
    "http://jabber.org/protocol/pubsub#create-and-configure",
    "http://jabber.org/protocol/pubsub#create-nodes",
    "http://jabber.org/protocol/pubsub#delete-items",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    "http://jabber.org/protocol/pubsub#instant-nodes",
    "http://jabber.org/protocol/pubsub#item-ids",
    "http://jabber.org/protocol/pubsub#manage-affiliations",
    "http://jabber.org/protocol/pubsub#modify-affiliations",
    "http://jabber.org/protocol/pubsub#persistent-items",
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#purge-nodes",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#retrieve-affiliations",
    "http://jabber.org/protocol/pubsub#retrieve-default",
    "http://jabber.org/protocol/pubsub#retrieve-items",
    "http://jabber.org/protocol/pubsub#retrieve-subscriptions",
    "http://jabber.org/protocol/pubsub#subscribe",
];

/// XEP-0060 §4.1 affiliations, strongest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Affiliation {
    Owner,
    Publisher,
    Member,
    None,
    Outcast,
}

impl Affiliation {
    pub fn parse(s: &str) -> Option<Affiliation> {
        Some(match s {
            "owner" => Affiliation::Owner,
            "publisher" => Affiliation::Publisher,
            "member" => Affiliation::Member,
            "none" | "" => Affiliation::None,
            "outcast" => Affiliation::Outcast,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Affiliation::Owner => "owner",
            Affiliation::Publisher => "publisher",
            Affiliation::Member => "member",
            Affiliation::None => "none",
            Affiliation::Outcast => "outcast",
        }
    }

    fn of(m: &PubsubMember) -> Affiliation {
        // An unknown name (a later kith's) grants nothing.
        Affiliation::parse(&m.affiliation).unwrap_or(Affiliation::None)
    }

    /// XEP-0060 §4.1 table: publishing and retracting.
    pub fn may_publish(self) -> bool {
        matches!(self, Affiliation::Owner | Affiliation::Publisher)
    }

    /// Retrieving items and subscribing, under the node's access model.
    pub fn may_see(self, access: Access) -> bool {
        match self {
            Affiliation::Outcast => false,
            Affiliation::Owner | Affiliation::Publisher | Affiliation::Member => true,
            Affiliation::None => access == Access::Open,
        }
    }
}

/// The service's address, `pubsub.DOMAIN`, when `[pubsub] enabled`.
pub fn service_domain(srv: &Server) -> Option<String> {
    srv.config
        .pubsub
        .enabled
        .then(|| format!("pubsub.{}", srv.config.domain))
}

/// Whether `domain` is the service's address.
pub fn is_service(srv: &Server, domain: &str) -> bool {
    service_domain(srv).is_some_and(|d| d == domain)
}

/// Whether `who` may create nodes (`[pubsub] create`): local accounts, or only the admins.
fn may_create(srv: &Server, who: &BareJid) -> bool {
    match srv.config.pubsub.create {
        crate::config::PubsubCreate::Local => srv.is_local_user(who),
        crate::config::PubsubCreate::Admins => {
            srv.is_local_user(who) && srv.config.admins.iter().any(|a| a == who.as_ref())
        }
    }
}

async fn affiliation(
    srv: &Server,
    domain: &str,
    node: &str,
    who: &BareJid,
) -> Result<Affiliation, StoreError> {
    let m = srv.store.pubsub_member(domain, node, who.as_ref()).await?;
    Ok(Affiliation::of(&m))
}

/// For `Host::Service`: whether `who` may see `node` (items, subscribing).
pub async fn may_see(
    srv: &Server,
    domain: &str,
    node: &str,
    who: &BareJid,
    cfg: &Config,
) -> Result<bool, StoreError> {
    Ok(affiliation(srv, domain, node, who)
        .await?
        .may_see(cfg.access))
}

/// For `Host::Service`: the event goes to every subscription of the node whose JID may still
/// see it, as a headline message from the service.
pub async fn notify(srv: &Server, domain: &str, node: &str, event: Element) {
    let members = match srv.store.pubsub_members(domain, node).await {
        Ok(m) => m,
        Err(e) => return log::error!("store: cannot read the subscribers of {domain} {node}: {e}"),
    };
    let cfg = match srv.store.pep_node(domain, node).await {
        Ok(Some(stored)) => Config::from_node(&stored),
        // Deleted: the `<delete/>` event still goes to the subscribers it had.
        _ => Config::service_default(),
    };
    for (jid, m) in members {
        if !m.subscribed || !Affiliation::of(&m).may_see(cfg.access) {
            continue;
        }
        let Ok(to) = Jid::parse(&jid) else {
            continue;
        };
        let msg = Element::new("message", ns::CLIENT)
            .with_attr("type", "headline")
            .with_attr("from", domain)
            .with_attr("to", jid.as_str())
            .with_child(Element::new("event", NS_PUBSUB_EVENT).with_child(event.clone()));
        send_to(srv, &to, msg).await;
    }
}

/// Delivers a message from the service to a local resource, a local account or elsewhere.
async fn send_to(srv: &Server, to: &Jid, msg: Element) {
    if !srv.is_local_domain(to.domain()) {
        return to_elsewhere(srv, msg);
    }
    match to.as_full() {
        Some(full) => {
            if let Some(r) = srv.sessions.resource(full) {
                sessions::send(&r, Outbound::stanza(msg));
            }
        }
        None => message_to_bare(srv, &to.to_bare(), msg).await,
    }
}

/// An iq to `pubsub.DOMAIN` from `from` (a local user, or a remote entity or component).
pub async fn handle_iq(srv: &Server, from: &Jid, iq: Element) {
    if stanza::must_not_answer(&iq) {
        return;
    }
    let Some(domain) = service_domain(srv) else {
        return bounce(srv, &iq, Condition::ServiceUnavailable.into());
    };
    let get = iq.attr("type") == Some("get");
    let who = from.to_bare();
    let Some(payload) = iq.first_child() else {
        return bounce(srv, &iq, Condition::BadRequest.into());
    };
    let result = match (payload.ns(), payload.name(), get) {
        (ns::DISCO_INFO, "query", true) => disco_info(srv, &domain, &who, payload).await,
        (ns::DISCO_ITEMS, "query", true) => disco_items(srv, &domain, &who, payload).await,
        (NS_PUBSUB, "pubsub", _) => user_op(srv, &domain, from, &who, payload, get).await,
        (NS_PUBSUB_OWNER, "pubsub", _) => owner_op(srv, &domain, &who, payload, get).await,
        _ => Err(Condition::ServiceUnavailable.into()),
    };
    finish(srv, &iq, result);
}

async fn disco_info(srv: &Server, domain: &str, who: &BareJid, query: &Element) -> Reply {
    let mut q = Element::new("query", ns::DISCO_INFO);
    let identity = |typ: &str| {
        Element::new("identity", ns::DISCO_INFO)
            .with_attr("category", "pubsub")
            .with_attr("type", typ)
    };
    if let Some(node) = query.attr("node") {
        q.set_attr("node", node);
        let visible = match srv.store.pep_node(domain, node).await? {
            Some(stored) => may_see(srv, domain, node, who, &Config::from_node(&stored)).await?,
            None => false,
        };
        if !visible {
            return Err(Condition::ItemNotFound.into());
        }
        q.push_child(identity("leaf"));
        q.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", NS_PUBSUB));
        return Ok(Some(q));
    }
    q.push_child(identity("service").with_attr("name", "Publish-Subscribe"));
    for f in [ns::DISCO_INFO, ns::DISCO_ITEMS].iter().chain(FEATURES) {
        q.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", *f));
    }
    Ok(Some(q))
}

/// XEP-0060 §5.2: the nodes `who` may see. Nodes are flat: a node's items list is empty.
async fn disco_items(srv: &Server, domain: &str, who: &BareJid, query: &Element) -> Reply {
    let mut q = Element::new("query", ns::DISCO_ITEMS);
    if let Some(node) = query.attr("node") {
        q.set_attr("node", node);
        return Ok(Some(q));
    }
    for (node, stored) in srv.store.pep_nodes(domain).await? {
        if may_see(srv, domain, &node, who, &Config::from_node(&stored)).await? {
            q.push_child(
                Element::new("item", ns::DISCO_ITEMS)
                    .with_attr("jid", domain)
                    .with_attr("node", node),
            );
        }
    }
    Ok(Some(q))
}

async fn user_op(
    srv: &Server,
    domain: &str,
    from: &Jid,
    who: &BareJid,
    pubsub: &Element,
    get: bool,
) -> Reply {
    let host = Host::Service(domain);
    let Some(op) = pubsub.first_child() else {
        return Err(Condition::BadRequest.into());
    };
    match (get, op.name()) {
        (false, "create") => create(srv, domain, who, pubsub, op).await,
        (false, "publish") => {
            let node = node_attr(op)?;
            let exists = srv.store.pep_node(domain, node).await?.is_some();
            if exists {
                if !affiliation(srv, domain, node, who).await?.may_publish() {
                    return Err(Condition::Forbidden.into());
                }
            } else if !may_create(srv, who) {
                return Err(Condition::ItemNotFound.into());
            }
            let reply = pep::publish(srv, host, pubsub, op).await?;
            if !exists {
                set_affiliation(srv, domain, node, who.as_ref(), Affiliation::Owner).await?;
                log::info!("pubsub: {who} created node {node} by publishing");
            }
            Ok(reply)
        }
        (false, "retract") => {
            let node = node_attr(op)?;
            if !affiliation(srv, domain, node, who).await?.may_publish() {
                return Err(Condition::Forbidden.into());
            }
            pep::retract(srv, host, op).await
        }
        (true, "items") => pep::items(srv, who, host, op).await,
        (false, "subscribe") => subscribe(srv, domain, from, who, op).await,
        (false, "unsubscribe") => unsubscribe(srv, domain, who, op).await,
        (true, "subscriptions") => own_list(srv, domain, who, op, true).await,
        (true, "affiliations") => own_list(srv, domain, who, op, false).await,
        (_, "options") => Err(PubsubError::unsupported("subscription-options")),
        _ => Err(Condition::FeatureNotImplemented.into()),
    }
}

/// XEP-0060 §8.1, with §8.1.2 instant nodes: the creator becomes the node's owner.
async fn create(
    srv: &Server,
    domain: &str,
    who: &BareJid,
    pubsub: &Element,
    op: &Element,
) -> Reply {
    if !may_create(srv, who) {
        return Err(Condition::Forbidden.into());
    }
    let mut op = op.clone();
    let instant = op.attr("node").is_none();
    if instant {
        op.set_attr("node", pep::new_item_id());
    }
    let node = node_attr(&op)?.to_string();
    pep::create(srv, Host::Service(domain), pubsub, &op).await?;
    set_affiliation(srv, domain, &node, who.as_ref(), Affiliation::Owner).await?;
    log::info!("pubsub: {who} created node {node}");
    Ok(instant.then(|| pubsub_reply(Element::new("create", NS_PUBSUB).with_attr("node", node))))
}

async fn set_affiliation(
    srv: &Server,
    domain: &str,
    node: &str,
    jid: &str,
    aff: Affiliation,
) -> Result<(), StoreError> {
    let mut m = srv.store.pubsub_member(domain, node, jid).await?;
    m.affiliation = aff.as_str().to_string();
    if aff == Affiliation::Outcast {
        m.subscribed = false;
    }
    srv.store.pubsub_set_member(domain, node, jid, m).await
}

/// The JID a subscription request names must be the requester's own (XEP-0060 §6.1.3.1).
fn subscriber_jid(op: &Element, from: &Jid) -> Result<Jid, PubsubError> {
    let invalid = || PubsubError::new(Condition::BadRequest, Some("invalid-jid"));
    let jid = Jid::parse(op.attr("jid").ok_or_else(invalid)?).map_err(|_| invalid())?;
    if jid.to_bare() != from.to_bare() {
        return Err(invalid());
    }
    Ok(jid)
}

/// XEP-0060 §6.1, then the last item when the node says so (`on_sub…`).
async fn subscribe(srv: &Server, domain: &str, from: &Jid, who: &BareJid, op: &Element) -> Reply {
    let node = node_attr(op)?;
    let Some(stored) = srv.store.pep_node(domain, node).await? else {
        return Err(Condition::ItemNotFound.into());
    };
    let jid = subscriber_jid(op, from)?;
    let cfg = Config::from_node(&stored);
    if !may_see(srv, domain, node, who, &cfg).await? {
        return Err(access_error(cfg.access));
    }
    // Subscriptions are kept per bare JID: one per account, as clients expect of a feed.
    let mut m = srv.store.pubsub_member(domain, node, who.as_ref()).await?;
    m.subscribed = true;
    srv.store
        .pubsub_set_member(domain, node, who.as_ref(), m)
        .await?;
    log::info!("pubsub: {who} subscribed to {node}");
    if cfg.send_last != "never" {
        if let Some(last) = srv.store.pep_items(domain, node).await?.pop() {
            let event = Element::new("items", NS_PUBSUB_EVENT)
                .with_attr("node", node)
                .with_child(item_element(&last, NS_PUBSUB_EVENT));
            let msg = Element::new("message", ns::CLIENT)
                .with_attr("type", "headline")
                .with_attr("from", domain)
                .with_attr("to", jid.as_str())
                .with_child(Element::new("event", NS_PUBSUB_EVENT).with_child(event));
            send_to(srv, &jid, msg).await;
        }
    }
    Ok(Some(pubsub_reply(subscription_el(
        node,
        jid.as_str(),
        true,
    ))))
}

fn subscription_el(node: &str, jid: &str, subscribed: bool) -> Element {
    Element::new("subscription", NS_PUBSUB)
        .with_attr("node", node)
        .with_attr("jid", jid)
        .with_attr(
            "subscription",
            if subscribed { "subscribed" } else { "none" },
        )
}

/// XEP-0060 §6.2.
async fn unsubscribe(srv: &Server, domain: &str, who: &BareJid, op: &Element) -> Reply {
    let node = node_attr(op)?;
    if srv.store.pep_node(domain, node).await?.is_none() {
        return Err(Condition::ItemNotFound.into());
    }
    let mut m = srv.store.pubsub_member(domain, node, who.as_ref()).await?;
    if !m.subscribed {
        return Err(PubsubError::new(
            Condition::UnexpectedRequest,
            Some("not-subscribed"),
        ));
    }
    m.subscribed = false;
    srv.store
        .pubsub_set_member(domain, node, who.as_ref(), m)
        .await?;
    log::info!("pubsub: {who} unsubscribed from {node}");
    Ok(None)
}

/// XEP-0060 §5.6 / §5.7: the requester's own subscriptions or affiliations.
async fn own_list(
    srv: &Server,
    domain: &str,
    who: &BareJid,
    op: &Element,
    subscriptions: bool,
) -> Reply {
    let only = op.attr("node");
    let name = if subscriptions {
        "subscriptions"
    } else {
        "affiliations"
    };
    let mut list = Element::new(name, NS_PUBSUB);
    for (node, m) in srv.store.pubsub_memberships(domain, who.as_ref()).await? {
        if only.is_some_and(|n| n != node) {
            continue;
        }
        if subscriptions && m.subscribed {
            list.push_child(subscription_el(&node, who.as_ref(), true));
        } else if !subscriptions && Affiliation::of(&m) != Affiliation::None {
            list.push_child(
                Element::new("affiliation", NS_PUBSUB)
                    .with_attr("node", node)
                    .with_attr("affiliation", Affiliation::of(&m).as_str()),
            );
        }
    }
    Ok(Some(pubsub_reply(list)))
}

/// `pubsub#owner` requests: only a node's owners.
async fn owner_op(srv: &Server, domain: &str, who: &BareJid, pubsub: &Element, get: bool) -> Reply {
    let host = Host::Service(domain);
    let Some(op) = pubsub.first_child() else {
        return Err(Condition::BadRequest.into());
    };
    if (get, op.name()) == (true, "default") {
        return Ok(Some(pep::default_form(host)));
    }
    let node = node_attr(op)?;
    if srv.store.pep_node(domain, node).await?.is_none() {
        return Err(Condition::ItemNotFound.into());
    }
    if affiliation(srv, domain, node, who).await? != Affiliation::Owner {
        return Err(Condition::Forbidden.into());
    }
    match (get, op.name()) {
        (true, "configure") => pep::configure_get(srv, host, op).await,
        (false, "configure") => pep::configure_set(srv, host, op).await,
        (false, "delete") => {
            let r = pep::delete(srv, host, op).await;
            log::info!("pubsub: {who} deleted node {node}");
            r
        }
        (false, "purge") => pep::purge(srv, host, op).await,
        (true, "affiliations") => {
            let mut list = Element::new("affiliations", NS_PUBSUB_OWNER).with_attr("node", node);
            for (jid, m) in srv.store.pubsub_members(domain, node).await? {
                let aff = Affiliation::of(&m);
                if aff != Affiliation::None {
                    list.push_child(
                        Element::new("affiliation", NS_PUBSUB_OWNER)
                            .with_attr("jid", jid)
                            .with_attr("affiliation", aff.as_str()),
                    );
                }
            }
            Ok(Some(owner_reply(list)))
        }
        (false, "affiliations") => set_affiliations(srv, domain, who, node, op).await,
        (true, "subscriptions") => {
            let mut list = Element::new("subscriptions", NS_PUBSUB_OWNER).with_attr("node", node);
            for (jid, m) in srv.store.pubsub_members(domain, node).await? {
                if m.subscribed {
                    list.push_child(
                        Element::new("subscription", NS_PUBSUB_OWNER)
                            .with_attr("jid", jid)
                            .with_attr("subscription", "subscribed"),
                    );
                }
            }
            Ok(Some(owner_reply(list)))
        }
        _ => Err(Condition::FeatureNotImplemented.into()),
    }
}

/// XEP-0060 §8.9.2: all changes or none; an owner cannot give up the node's last ownership.
async fn set_affiliations(
    srv: &Server,
    domain: &str,
    who: &BareJid,
    node: &str,
    op: &Element,
) -> Reply {
    let mut changes = Vec::new();
    for a in op
        .children()
        .filter(|c| c.is("affiliation", NS_PUBSUB_OWNER))
    {
        let jid = a
            .attr("jid")
            .and_then(|j| BareJid::parse(j).ok())
            .ok_or(Condition::BadRequest)?;
        let aff = a
            .attr("affiliation")
            .and_then(Affiliation::parse)
            .ok_or(Condition::BadRequest)?;
        changes.push((jid, aff));
    }
    let mut owners: Vec<String> = srv
        .store
        .pubsub_members(domain, node)
        .await?
        .into_iter()
        .filter(|(_, m)| Affiliation::of(m) == Affiliation::Owner)
        .map(|(j, _)| j)
        .collect();
    for (jid, aff) in &changes {
        owners.retain(|o| o != jid.as_ref());
        if *aff == Affiliation::Owner {
            owners.push(jid.to_string());
        }
    }
    if owners.is_empty() {
        return Err(Condition::NotAcceptable.into());
    }
    for (jid, aff) in changes {
        set_affiliation(srv, domain, node, jid.as_ref(), aff).await?;
        log::info!("pubsub: {who} made {jid} {} of {node}", aff.as_str());
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affiliations_grant_what_xep_0060_section_4_1_says() {
        use Affiliation::*;
        assert!(Owner.may_publish() && Publisher.may_publish());
        assert!(!Member.may_publish() && !None.may_publish() && !Outcast.may_publish());
        assert!(None.may_see(Access::Open));
        assert!(!None.may_see(Access::Whitelist));
        assert!(Member.may_see(Access::Whitelist));
        assert!(!Outcast.may_see(Access::Open));
        for a in [Owner, Publisher, Member, None, Outcast] {
            assert_eq!(Affiliation::parse(a.as_str()), Some(a));
        }
        assert_eq!(Affiliation::parse("admin"), Option::None);
    }

    #[test]
    fn a_subscription_names_the_requester() {
        let from = Jid::parse("alice@x/phone").unwrap();
        let op = |jid: &str| Element::new("subscribe", NS_PUBSUB).with_attr("jid", jid);
        assert!(subscriber_jid(&op("alice@x"), &from).is_ok());
        assert!(subscriber_jid(&op("alice@x/laptop"), &from).is_ok());
        assert!(subscriber_jid(&op("bob@x"), &from).is_err());
        assert!(subscriber_jid(&Element::new("subscribe", NS_PUBSUB), &from).is_err());
    }
}
