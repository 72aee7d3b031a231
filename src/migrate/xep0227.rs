//! XEP-0227: Portable Import/Export Format for XMPP-IM Servers (urn:xmpp:pie:0), version 1.1,
//! as data: [`parse`] turns a document into [`Host`]s and [`User`]s, [`write`] does the reverse.
//!
//! **Pure**: no store, no files. What it covers: accounts (SCRAM credentials in
//! `urn:xmpp:pie:0#scram`, or a plaintext `password` attribute), rosters (`jabber:iq:roster`),
//! incoming subscription requests (`<presence type='subscribe'/>`), vcard-temp, private XML
//! (`jabber:iq:private`), offline messages (`<offline-messages/>`), PEP node configuration and
//! items (`http://jabber.org/protocol/pubsub` and `#owner`) and the message archive
//! (`urn:xmpp:pie:0#mam`).
//!
//! COMPAT: Prosody (`mod_storage_xep0227`, used by `prosody-migrator`) writes one file per
//! user, `user@host.xml`, each a whole `<server-data/>`, and puts the SCRAM children in the
//! `#scram` namespace; children are matched by local name so either spelling reads.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::sasl::{Hash, ScramCreds};
use crate::store::{RosterItem, Subscription};
use crate::xml::{Element, Limits};

pub const NS_PIE: &str = "urn:xmpp:pie:0";
pub const NS_SCRAM: &str = "urn:xmpp:pie:0#scram";
pub const NS_PIE_MAM: &str = "urn:xmpp:pie:0#mam";
const NS_CLIENT: &str = "jabber:client";
const NS_ROSTER: &str = "jabber:iq:roster";
const NS_PRIVATE: &str = "jabber:iq:private";
const NS_VCARD: &str = "vcard-temp";
const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const NS_PUBSUB_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
const NS_DATA: &str = "jabber:x:data";
const NS_MAM: &str = "urn:xmpp:mam:2";
const NS_FORWARD: &str = "urn:xmpp:forward:0";
const NS_DELAY: &str = "urn:xmpp:delay";

/// One `<host/>`: a domain and its users.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Host {
    pub jid: String,
    pub users: Vec<User>,
}

/// One `<user/>` with everything kith can carry over.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct User {
    /// The localpart (`name` attribute).
    pub name: String,
    /// A plaintext password, when the exporting server had one (XEP-0227 discourages it).
    pub password: Option<String>,
    pub scram: Vec<ScramCreds>,
    pub roster: Vec<(String, RosterItem)>,
    /// Incoming subscription requests not yet answered, as `jabber:client` presence stanzas.
    pub pending_in: Vec<Element>,
    pub vcard: Option<Element>,
    /// The children of `jabber:iq:private`.
    pub private: Vec<Element>,
    /// `jabber:client` message stanzas.
    pub offline: Vec<Element>,
    pub pep: Vec<PepNode>,
    pub archive: Vec<Archived>,
}

/// A PEP node: its configuration (as form field pairs) and items (id, payload), oldest first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PepNode {
    pub node: String,
    pub config: Vec<(String, String)>,
    pub items: Vec<(String, Element)>,
}

/// One archived message: when it was archived (Unix microseconds) and the stanza.
#[derive(Debug, Clone, PartialEq)]
pub struct Archived {
    pub id: String,
    pub micros: u64,
    pub message: Element,
}

/// What is wrong with a document; the text names the user and the element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieError(pub String);

impl fmt::Display for PieError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PieError {}

/// Parses a XEP-0227 document (an XML declaration at the start is allowed).
pub fn parse(doc: &str) -> Result<Vec<Host>, PieError> {
    let body = strip_declaration(doc.trim_start_matches('\u{feff}'));
    let limits = Limits {
        max_stanza_bytes: usize::MAX,
        max_depth: 128,
    };
    let root = Element::parse_with_limits(body, limits)
        .map_err(|e| PieError(format!("not well-formed XML: {e}")))?;
    if !root.is("server-data", NS_PIE) {
        return Err(PieError(format!(
            "the root element is <{}/> in '{}', not <server-data xmlns='{NS_PIE}'/>; \
             is this a XEP-0227 file?",
            root.name(),
            root.ns()
        )));
    }
    let mut hosts = Vec::new();
    for h in root.children().filter(|c| c.is("host", NS_PIE)) {
        let jid = h
            .attr("jid")
            .ok_or_else(|| PieError("a <host/> has no jid attribute".into()))?;
        let mut host = Host {
            jid: jid.to_string(),
            users: Vec::new(),
        };
        for u in h.children().filter(|c| c.is("user", NS_PIE)) {
            host.users.push(parse_user(u, jid)?);
        }
        hosts.push(host);
    }
    Ok(hosts)
}

fn parse_user(u: &Element, host: &str) -> Result<User, PieError> {
    let name = u
        .attr("name")
        .ok_or_else(|| PieError(format!("a <user/> of host {host} has no name attribute")))?;
    let who = format!("{name}@{host}");
    let bad = |what: String| PieError(format!("user {who}: {what}"));
    let mut user = User {
        name: name.to_string(),
        password: u.attr("password").map(str::to_string),
        ..User::default()
    };
    for c in u.children() {
        match (c.ns(), c.name()) {
            (NS_SCRAM, "scram-credentials") | (NS_PIE, "scram-credentials") => {
                // An unknown mechanism (SCRAM-SHA-224, …) is skipped; kith cannot use it.
                if let Some(creds) = parse_scram(c).map_err(|e| bad(e.0))? {
                    // One set per hash: a repeated one (Prosody appends when a file is
                    // migrated into twice) replaces the earlier.
                    user.scram.retain(|s| s.hash != creds.hash);
                    user.scram.push(creds);
                }
            }
            (NS_ROSTER, "query") => {
                for item in c.children().filter(|i| i.name() == "item") {
                    user.roster
                        .push(parse_roster_item(item).map_err(|e| bad(e.0))?);
                }
            }
            // COMPAT: Prosody writes these without xmlns, so they land in urn:xmpp:pie:0.
            (NS_CLIENT | NS_PIE, "presence") if c.attr("type") == Some("subscribe") => {
                let Some(from) = c.attr("from") else {
                    return Err(bad(
                        "a pending <presence type='subscribe'/> has no from".into()
                    ));
                };
                let mut p = c.clone();
                p.replace_ns(NS_PIE, NS_CLIENT);
                user.pending_in.retain(|q| q.attr("from") != Some(from));
                user.pending_in.push(p);
            }
            (NS_VCARD, "vCard") => user.vcard = Some(c.clone()),
            (NS_PRIVATE, "query") => user.private.extend(c.children().cloned()),
            (_, "offline-messages") => {
                for m in c.children().filter(|m| m.name() == "message") {
                    let mut m = m.clone();
                    m.replace_ns(c.ns(), NS_CLIENT);
                    user.offline.push(m);
                }
            }
            (NS_PUBSUB, "pubsub") => parse_pep_items(c, &mut user.pep).map_err(|e| bad(e.0))?,
            (NS_PUBSUB_OWNER, "pubsub") => parse_pep_config(c, &mut user.pep),
            (NS_PIE_MAM, "archive") => {
                for r in c.children().filter(|r| r.is("result", NS_MAM)) {
                    user.archive.push(parse_archived(r).map_err(|e| bad(e.0))?);
                }
            }
            _ => {} // Privacy lists and unknown extensions: nothing kith keeps.
        }
    }
    Ok(user)
}

fn child_text(el: &Element, name: &str) -> Option<String> {
    el.children()
        .find(|c| c.name() == name)
        .map(|c| c.text().trim().to_string())
}

fn parse_scram(c: &Element) -> Result<Option<ScramCreds>, PieError> {
    let hash = match c.attr("mechanism") {
        Some("SCRAM-SHA-1") => Hash::Sha1,
        Some("SCRAM-SHA-256") => Hash::Sha256,
        Some("SCRAM-SHA-512") => Hash::Sha512,
        _ => return Ok(None),
    };
    let field = |name: &str| {
        child_text(c, name).ok_or_else(|| PieError(format!("<scram-credentials/> lacks <{name}/>")))
    };
    let b64 = |name: &str| -> Result<Vec<u8>, PieError> {
        B64.decode(field(name)?)
            .map_err(|_| PieError(format!("<scram-credentials/> <{name}/> is not base64")))
    };
    let creds = ScramCreds {
        hash,
        iterations: field("iter-count")?
            .parse()
            .map_err(|_| PieError("<scram-credentials/> <iter-count/> is not a number".into()))?,
        salt: b64("salt")?,
        stored_key: b64("stored-key")?,
        server_key: b64("server-key")?,
    };
    if !creds.is_valid() {
        return Err(PieError(format!(
            "<scram-credentials mechanism='{}'/> has keys of the wrong length, an empty salt \
             or zero iterations",
            c.attr("mechanism").unwrap_or_default()
        )));
    }
    Ok(Some(creds))
}

fn parse_roster_item(item: &Element) -> Result<(String, RosterItem), PieError> {
    let jid = item
        .attr("jid")
        .ok_or_else(|| PieError("a roster <item/> has no jid".into()))?;
    let subscription = match item.attr("subscription") {
        None => Subscription::None,
        Some(s) => Subscription::parse(s)
            .ok_or_else(|| PieError(format!("roster item {jid}: unknown subscription '{s}'")))?,
    };
    Ok((
        jid.to_string(),
        RosterItem {
            name: item
                .attr("name")
                .filter(|n| !n.is_empty())
                .map(str::to_string),
            subscription,
            ask: item.attr("ask") == Some("subscribe"),
            approved: matches!(item.attr("approved"), Some("true" | "1")),
            groups: item
                .children()
                .filter(|g| g.name() == "group")
                .map(|g| g.text())
                .filter(|g| !g.is_empty())
                .collect(),
        },
    ))
}

fn pep_node<'a>(pep: &'a mut Vec<PepNode>, node: &str) -> &'a mut PepNode {
    let i = match pep.iter().position(|n| n.node == node) {
        Some(i) => i,
        None => {
            pep.push(PepNode {
                node: node.to_string(),
                ..PepNode::default()
            });
            pep.len() - 1
        }
    };
    &mut pep[i]
}

fn parse_pep_items(pubsub: &Element, pep: &mut Vec<PepNode>) -> Result<(), PieError> {
    for items in pubsub.children().filter(|c| c.name() == "items") {
        let node = items
            .attr("node")
            .ok_or_else(|| PieError("a PEP <items/> has no node".into()))?;
        let n = pep_node(pep, node);
        for item in items.children().filter(|c| c.name() == "item") {
            let id = item
                .attr("id")
                .ok_or_else(|| PieError(format!("PEP node {node}: an <item/> has no id")))?;
            if let Some(payload) = item.first_child() {
                n.items.push((id.to_string(), payload.clone()));
            }
        }
    }
    Ok(())
}

fn parse_pep_config(owner: &Element, pep: &mut Vec<PepNode>) {
    for configure in owner.children().filter(|c| c.name() == "configure") {
        let Some(node) = configure.attr("node") else {
            continue;
        };
        let n = pep_node(pep, node);
        if let Some(x) = configure.get_child("x", NS_DATA) {
            n.config = crate::services::pep::form_values(x)
                .into_iter()
                .filter(|(k, _)| k != "FORM_TYPE")
                .collect();
        }
    }
}

fn parse_archived(r: &Element) -> Result<Archived, PieError> {
    let id = r.attr("id").unwrap_or_default().to_string();
    let fwd = r
        .get_child("forwarded", NS_FORWARD)
        .ok_or_else(|| PieError(format!("archived message {id}: no <forwarded/>")))?;
    let stamp = fwd
        .get_child("delay", NS_DELAY)
        .and_then(|d| d.attr("stamp"))
        .ok_or_else(|| PieError(format!("archived message {id}: no <delay stamp=''/>")))?;
    let micros_at = crate::time::parse_datetime(stamp)
        .ok_or_else(|| PieError(format!("archived message {id}: bad stamp '{stamp}'")))?;
    let message = fwd
        .children()
        .find(|c| c.name() == "message")
        .ok_or_else(|| PieError(format!("archived message {id}: no <message/>")))?;
    Ok(Archived {
        id,
        micros: micros_at,
        message: message.clone(),
    })
}

fn strip_declaration(s: &str) -> &str {
    let t = s.trim_start();
    if t.starts_with("<?xml") {
        if let Some(end) = t.find("?>") {
            return &t[end + 2..];
        }
    }
    s
}

/// Writes `hosts` as one XEP-0227 document, with an XML declaration.
pub fn write(hosts: &[Host]) -> String {
    let mut root = Element::new("server-data", NS_PIE);
    for h in hosts {
        let mut host = Element::new("host", NS_PIE).with_attr("jid", h.jid.clone());
        for u in &h.users {
            host.push_child(user_element(u));
        }
        root.push_child(host);
    }
    let mut out = b"<?xml version='1.0' encoding='UTF-8'?>\n".to_vec();
    root.write_to(&mut out, "");
    out.push(b'\n');
    String::from_utf8_lossy(&out).into_owned()
}

fn user_element(u: &User) -> Element {
    let mut el = Element::new("user", NS_PIE).with_attr("name", u.name.clone());
    if let Some(p) = &u.password {
        el.set_attr("password", p.clone());
    }
    for c in &u.scram {
        let mechanism = match c.hash {
            Hash::Sha1 => "SCRAM-SHA-1",
            Hash::Sha256 => "SCRAM-SHA-256",
            Hash::Sha512 => "SCRAM-SHA-512",
        };
        let text = |name: &str, v: String| Element::new(name, NS_SCRAM).with_text(v);
        el.push_child(
            Element::new("scram-credentials", NS_SCRAM)
                .with_attr("mechanism", mechanism)
                .with_child(text("iter-count", c.iterations.to_string()))
                .with_child(text("salt", B64.encode(&c.salt)))
                .with_child(text("server-key", B64.encode(&c.server_key)))
                .with_child(text("stored-key", B64.encode(&c.stored_key))),
        );
    }
    if !u.roster.is_empty() {
        let mut q = Element::new("query", NS_ROSTER);
        for (jid, item) in &u.roster {
            let mut i = Element::new("item", NS_ROSTER)
                .with_attr("jid", jid.clone())
                .with_attr("subscription", item.subscription.as_str());
            if let Some(n) = &item.name {
                i.set_attr("name", n.clone());
            }
            if item.ask {
                i.set_attr("ask", "subscribe");
            }
            if item.approved {
                i.set_attr("approved", "true");
            }
            for g in &item.groups {
                i.push_child(Element::new("group", NS_ROSTER).with_text(g.clone()));
            }
            q.push_child(i);
        }
        el.push_child(q);
    }
    for p in &u.pending_in {
        el.push_child(p.clone());
    }
    if let Some(v) = &u.vcard {
        el.push_child(v.clone());
    }
    if !u.private.is_empty() {
        let mut q = Element::new("query", NS_PRIVATE);
        for p in &u.private {
            q.push_child(p.clone());
        }
        el.push_child(q);
    }
    if !u.offline.is_empty() {
        let mut o = Element::new("offline-messages", NS_PIE);
        for m in &u.offline {
            o.push_child(m.clone());
        }
        el.push_child(o);
    }
    if !u.pep.is_empty() {
        let mut owner = Element::new("pubsub", NS_PUBSUB_OWNER);
        let mut items_el = Element::new("pubsub", NS_PUBSUB);
        for n in &u.pep {
            let mut x = Element::new("x", NS_DATA).with_attr("type", "submit");
            x.push_child(form_field(
                "FORM_TYPE",
                "http://jabber.org/protocol/pubsub#node_config",
            ));
            for (k, v) in &n.config {
                x.push_child(form_field(k, v));
            }
            owner.push_child(
                Element::new("configure", NS_PUBSUB_OWNER)
                    .with_attr("node", n.node.clone())
                    .with_child(x),
            );
            let mut items = Element::new("items", NS_PUBSUB).with_attr("node", n.node.clone());
            for (id, payload) in &n.items {
                items.push_child(
                    Element::new("item", NS_PUBSUB)
                        .with_attr("id", id.clone())
                        .with_child(payload.clone()),
                );
            }
            items_el.push_child(items);
        }
        el.push_child(owner);
        el.push_child(items_el);
    }
    if !u.archive.is_empty() {
        let mut a = Element::new("archive", NS_PIE_MAM);
        for m in &u.archive {
            let stamp = crate::time::rfc3339_micros(m.micros);
            a.push_child(
                Element::new("result", NS_MAM)
                    .with_attr("id", m.id.clone())
                    .with_child(
                        Element::new("forwarded", NS_FORWARD)
                            .with_child(Element::new("delay", NS_DELAY).with_attr("stamp", stamp))
                            .with_child(m.message.clone()),
                    ),
            );
        }
        el.push_child(a);
    }
    el
}

fn form_field(var: &str, value: &str) -> Element {
    Element::new("field", NS_DATA)
        .with_attr("var", var)
        .with_child(Element::new("value", NS_DATA).with_text(value))
}

#[cfg(test)]
mod tests;
