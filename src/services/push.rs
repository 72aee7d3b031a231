//! XEP-0357 Push Notifications: clients register app servers (`<enable/>`, `<disable/>`) on
//! their account; when a message worth notifying about reaches the account while no resource
//! can receive it, every registered app server gets a `urn:xmpp:push:summary` publish from
//! the user's bare JID. Registrations are stored in the account's kv area, so they survive
//! restarts; an app server that answers a publish with an error loses its registration (as in
//! Prosody's mod_cloud_notify).
//!
//! Privacy: the message body is never sent, unless the enabling client asked for it in its
//! publish-options with the kith-specific field `include-body` = `true` (XEP-0357 §5 makes
//! `last-message-body` optional and leaves the choice to the server).
//!
//! `offline` calls [`notify`] after storing a message; the router calls it when a message
//! reached only resources that are asleep (parked for XEP-0198 resumption, or CSI-inactive).

use base64::Engine as _;

use crate::jid::{BareJid, FullJid, Jid};
use crate::router::{bounce, deliver_reply};
use crate::server::Server;
use crate::services::roster::store_error;
use crate::sessions::{self, Outbound};
use crate::stanza::{self, ns, Condition, StanzaError};
use crate::xml::Element;

use super::push_ext;

/// The kv key of an account's registrations.
const KV_KEY: &str = "push";
/// Registrations one account may hold (one per device and app, in practice a handful).
const MAX_REGISTRATIONS: usize = 32;
/// Prefix of the ids of publish iqs; the rest names the registration, so an error reply can
/// be matched without keeping state.
const ID_PREFIX: &str = "kith-push.";
const SUMMARY: &str = "urn:xmpp:push:summary";

/// One registration: where to publish, and what the client asked for.
#[derive(Clone, Debug, PartialEq)]
struct Registration {
    jid: Jid,
    node: Option<String>,
    /// The resource that enabled it (for the log and a later per-device policy).
    resource: String,
    /// The publish-options form, forwarded as given.
    options: Option<Element>,
    /// Tigase's encrypted payloads and priority (`push_ext`).
    ext: push_ext::Extensions,
}

/// The iq handler for `urn:xmpp:push:0` (addressed to the user's own account).
pub async fn handle(srv: &Server, from: &FullJid, iq: Element) {
    let owner = from.to_bare();
    let Some(payload) = iq.first_child() else {
        return bounce(srv, &iq, Condition::BadRequest.into());
    };
    if iq.attr("type") != Some("set") {
        return bounce(srv, &iq, Condition::BadRequest.into());
    }
    let Some(Ok(jid)) = payload.attr("jid").map(Jid::parse) else {
        return bounce(
            srv,
            &iq,
            StanzaError::new(Condition::BadRequest).with_text("the app server's jid is missing"),
        );
    };
    let node = payload.attr("node").map(str::to_string);
    let mut regs = load(srv, &owner).await;
    match payload.name() {
        "enable" => {
            let options = payload
                .children()
                .find(|c| c.is("x", ns::DATA_FORM))
                .cloned();
            let ext = match push_ext::parse_enable(payload) {
                Ok(ext) => ext,
                Err(e) => return bounce(srv, &iq, e),
            };
            regs.retain(|r| !(r.jid == jid && r.node == node));
            if regs.len() >= MAX_REGISTRATIONS {
                return bounce(srv, &iq, Condition::ResourceConstraint.into());
            }
            log::debug!("push: {from} enabled notifications via {jid}");
            regs.push(Registration {
                jid,
                node,
                resource: from.resource().to_string(),
                options,
                ext,
            });
        }
        // §6: without a node, every registration with that app server goes.
        "disable" => regs.retain(|r| !(r.jid == jid && (node.is_none() || r.node == node))),
        _ => return bounce(srv, &iq, Condition::BadRequest.into()),
    }
    match save(srv, &owner, &regs).await {
        Ok(()) => deliver_reply(srv, stanza::iq_result(&iq, None)),
        Err(e) => bounce(srv, &iq, e),
    }
}

/// Tells the app servers registered for `to` by devices that are not awake that `stanza` (a
/// message) arrived. Messages without a body or encrypted payload notify nobody.
pub async fn notify(srv: &Server, to: &BareJid, stanza: &Element) {
    if !worth_notifying(stanza) {
        return;
    }
    // A device that is connected and awake sees the message itself; only the others (no
    // session, parked for resumption, or CSI-inactive) need waking.
    let awake: Vec<String> = srv
        .sessions
        .resources(to)
        .iter()
        .filter(|r| !r.asleep)
        .map(|r| r.jid.resource().to_string())
        .collect();
    let regs: Vec<Registration> = load(srv, to)
        .await
        .into_iter()
        .filter(|reg| !awake.contains(&reg.resource))
        .collect();
    if regs.is_empty() {
        return;
    }
    let count = match srv.store.offline_count(to.as_ref()).await {
        Ok(n) => n.max(1),
        Err(_) => 1,
    };
    let sender = stanza
        .attr("from")
        .and_then(|f| Jid::parse(f).ok())
        .map(|j| j.to_bare().to_string());
    let body = stanza
        .get_child("body", ns::CLIENT)
        .map(|b| b.text())
        .filter(|b| !b.is_empty());
    for reg in &regs {
        let body = body.as_deref().filter(|_| wants_body(reg));
        let mut iq = publish(to, reg, count, sender.as_deref(), body);
        if let Some(key) = &reg.ext.key {
            // The device's own key: the summary form (readable by the push services) gives
            // way to the encrypted payload, body included (as Prosody).
            let Some(iv) = push_ext::random_iv() else {
                log::error!(
                    "push: no randomness for an IV; notification to {} dropped",
                    reg.jid
                );
                continue;
            };
            let json = push_ext::payload_json(stanza, count);
            if let Some(n) = notification_mut(&mut iq) {
                n.retain_children(|c| !c.is("x", ns::DATA_FORM));
                n.push_child(push_ext::encrypted_element(key, iv, &json));
            }
        }
        if reg.ext.priority {
            if let Some(n) = notification_mut(&mut iq) {
                n.push_child(push_ext::priority_element());
            }
        }
        send(srv, &reg.jid, iq);
    }
}

/// An iq addressed to the account `to` that may be an app server's answer to a publish: an
/// error disables the registration it names (§8 leaves it to the server; Prosody does this).
pub async fn on_reply(srv: &Server, to: &BareJid, iq: &Element) {
    if iq.attr("type") != Some("error") {
        return;
    }
    let Some(key) = iq.attr("id").and_then(|id| id.strip_prefix(ID_PREFIX)) else {
        return;
    };
    let Ok(Some(from)) = stanza::jid_attr(iq, "from") else {
        return;
    };
    let mut regs = load(srv, to).await;
    let before = regs.len();
    // Only the app server itself can turn its registration off.
    regs.retain(|r| !(r.jid == from && reg_key(r) == key));
    if regs.len() != before {
        log::info!("push: {from} answered a notification for {to} with an error; disabled");
        if let Err(e) = save(srv, to, &regs).await {
            log::error!("push: cannot store the registrations of {to}: {e:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// A message a user wants to hear about: text, or an encrypted payload (OMEMO, OpenPGP).
fn worth_notifying(stanza: &Element) -> bool {
    stanza.name() == "message"
        && stanza.children().any(|c| {
            c.is("body", ns::CLIENT)
                || c.is("encrypted", "eu.siacs.conversations.axolotl")
                || c.is("encrypted", "urn:xmpp:omemo:2")
                || c.is("openpgp", "urn:xmpp:openpgp:0")
                || c.is("x", "jabber:x:encrypted")
        })
}

fn wants_body(reg: &Registration) -> bool {
    reg.options.as_ref().is_some_and(|form| {
        form.children().any(|f| {
            f.is("field", ns::DATA_FORM)
                && f.attr("var") == Some("include-body")
                && f.get_child("value", ns::DATA_FORM)
                    .is_some_and(|v| matches!(v.text().trim(), "1" | "true"))
        })
    })
}

fn reg_key(reg: &Registration) -> String {
    let raw = format!(
        "{}\0{}",
        reg.jid.as_str(),
        reg.node.as_deref().unwrap_or("")
    );
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// The §5 publish: `<iq type='set'><pubsub><publish node><item><notification>` with the
/// summary form, plus the stored publish-options.
fn publish(
    owner: &BareJid,
    reg: &Registration,
    count: usize,
    sender: Option<&str>,
    body: Option<&str>,
) -> Element {
    let field = |var: &str, value: &str| {
        Element::new("field", ns::DATA_FORM)
            .with_attr("var", var)
            .with_child(Element::new("value", ns::DATA_FORM).with_text(value))
    };
    let mut form = Element::new("x", ns::DATA_FORM)
        .with_attr("type", "submit")
        .with_child(field("FORM_TYPE", SUMMARY))
        .with_child(field("message-count", &count.to_string()));
    if let Some(s) = sender {
        form.push_child(field("last-message-sender", s));
    }
    if let Some(b) = body {
        form.push_child(field("last-message-body", b));
    }
    let mut publish = Element::new("publish", ns::PUBSUB).with_child(
        Element::new("item", ns::PUBSUB)
            .with_child(Element::new("notification", ns::PUSH).with_child(form)),
    );
    if let Some(node) = &reg.node {
        publish.set_attr("node", node.as_str());
    }
    let mut pubsub = Element::new("pubsub", ns::PUBSUB).with_child(publish);
    if let Some(options) = &reg.options {
        pubsub.push_child(Element::new("publish-options", ns::PUBSUB).with_child(options.clone()));
    }
    Element::new("iq", ns::CLIENT)
        .with_attr("type", "set")
        .with_attr("from", owner.to_string())
        .with_attr("to", reg.jid.as_str())
        .with_attr("id", format!("{ID_PREFIX}{}", reg_key(reg)))
        .with_child(pubsub)
}

/// The `<notification/>` inside a publish built by [`publish`].
fn notification_mut(iq: &mut Element) -> Option<&mut Element> {
    iq.get_child_mut("pubsub", ns::PUBSUB)?
        .get_child_mut("publish", ns::PUBSUB)?
        .get_child_mut("item", ns::PUBSUB)?
        .get_child_mut("notification", ns::PUSH)
}

/// Routes a publish: to the app server's own server (usually a public push service such as
/// Conversations'), or to a local resource when the app server is one (tests, a local bot).
fn send(srv: &Server, to: &Jid, iq: Element) {
    if !srv.is_local_domain(to.domain()) {
        crate::router::to_elsewhere(srv, iq);
        return;
    }
    let delivered = to
        .as_full()
        .and_then(|f| srv.sessions.resource(f))
        .is_some_and(|r| sessions::send(&r, Outbound::stanza(iq)));
    if !delivered {
        log::debug!("push: app server {to} is not connected; notification dropped");
    }
}

async fn load(srv: &Server, owner: &BareJid) -> Vec<Registration> {
    let bytes = match srv.store.kv_get(owner.as_ref(), KV_KEY).await {
        Ok(Some(b)) => b,
        Ok(None) => return Vec::new(),
        Err(e) => {
            log::error!("store: cannot read the push registrations of {owner}: {e}");
            return Vec::new();
        }
    };
    let Some(root) = std::str::from_utf8(&bytes)
        .ok()
        .and_then(|s| Element::parse(s).ok())
    else {
        log::error!("push: the stored registrations of {owner} are unreadable; ignoring them");
        return Vec::new();
    };
    root.children()
        .filter(|c| c.is("registration", ns::PUSH))
        .filter_map(|c| {
            Some(Registration {
                jid: Jid::parse(c.attr("jid")?).ok()?,
                node: c.attr("node").map(str::to_string),
                resource: c.attr("resource").unwrap_or_default().to_string(),
                options: c.children().find(|x| x.is("x", ns::DATA_FORM)).cloned(),
                // Stored as the client sent them; a key that no longer parses is dropped.
                ext: push_ext::parse_enable(c).unwrap_or_default(),
            })
        })
        .collect()
}

async fn save(srv: &Server, owner: &BareJid, regs: &[Registration]) -> Result<(), StanzaError> {
    let value = if regs.is_empty() {
        None
    } else {
        let mut root = Element::new("registrations", ns::PUSH);
        for r in regs {
            let mut el = Element::new("registration", ns::PUSH)
                .with_attr("jid", r.jid.as_str())
                .with_attr("resource", r.resource.as_str());
            if let Some(node) = &r.node {
                el.set_attr("node", node.as_str());
            }
            if let Some(o) = &r.options {
                el.push_child(o.clone());
            }
            for x in push_ext::to_elements(&r.ext) {
                el.push_child(x);
            }
            root.push_child(el);
        }
        Some(root.to_bytes_in(""))
    };
    srv.store
        .kv_set(owner.as_ref(), KV_KEY, value)
        .await
        .map_err(store_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(options: Option<&str>) -> Registration {
        Registration {
            jid: Jid::parse("push.example.org").unwrap(),
            node: Some("n1".into()),
            resource: "phone".into(),
            options: options.map(|o| Element::parse(o).unwrap()),
            ext: Default::default(),
        }
    }

    #[test]
    fn publish_has_the_summary_and_no_body_by_default() {
        let owner = BareJid::parse("alice@example.org").unwrap();
        let r = reg(None);
        let body = Some("secret").filter(|_| wants_body(&r));
        let iq = publish(&owner, &r, 3, Some("bob@example.org"), body);
        let s = String::from_utf8(iq.to_bytes_in("")).unwrap();
        assert!(s.contains("<publish node='n1'>"), "{s}");
        assert!(s.contains(SUMMARY) && s.contains("message-count"), "{s}");
        assert!(s.contains("bob@example.org"), "{s}");
        assert!(
            !s.contains("secret") && !s.contains("publish-options"),
            "{s}"
        );
        assert_eq!(iq.attr("from"), Some("alice@example.org"));
    }

    #[test]
    fn body_only_when_asked_for() {
        let form = "<x xmlns='jabber:x:data' type='submit'><field var='include-body'><value>true</value></field></x>";
        assert!(wants_body(&reg(Some(form))));
        let form = "<x xmlns='jabber:x:data' type='submit'><field var='secret'><value>1</value></field></x>";
        assert!(!wants_body(&reg(Some(form))));
    }

    #[test]
    fn only_messages_with_content_notify() {
        let m = |x: &str| Element::parse(x).unwrap();
        assert!(worth_notifying(&m(
            "<message xmlns='jabber:client'><body>hi</body></message>"
        )));
        assert!(worth_notifying(&m(
            "<message xmlns='jabber:client'><encrypted xmlns='eu.siacs.conversations.axolotl'/></message>"
        )));
        assert!(!worth_notifying(&m(
            "<message xmlns='jabber:client'><active xmlns='http://jabber.org/protocol/chatstates'/></message>"
        )));
    }
}
