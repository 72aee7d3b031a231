//! XEP-0115 Entity Capabilities on the server side: what a connected resource (or a contact's
//! resource on another server) can do, learnt from the `<c/>` in its presence. PEP needs it
//! for filtered notifications (XEP-0163 §4.4: a resource advertising `NODE+notify` wants
//! events of NODE).
//!
//! A `ver` never seen before is resolved by one disco#info query from the server to the
//! resource that advertised it; the answer is verified against the `ver` hash (§5.4) and then
//! cached by `ver` for every resource advertising it. An answer that cannot be verified (an
//! unknown hash function, a legacy `<c/>` without `hash`, or a wrong hash) is used for that
//! resource only. Knows nothing about PEP: it hands resolved features back to its caller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;

use crate::jid::FullJid;
use crate::server::Server;
use crate::sessions::{self, Outbound};
use crate::stanza::ns;
use crate::xml::Element;

pub const NS_CAPS: &str = "http://jabber.org/protocol/caps";
const NS_DATA: &str = "jabber:x:data";
/// Prefix of the server's own query ids, so answers are recognised (`caps:` + number).
const ID_PREFIX: &str = "kith-caps-";
/// Queries unanswered this long may be asked again (another resource, same `ver`).
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Sane bounds on what peers can make us remember.
const MAX_CACHE: usize = 4096;
const MAX_PENDING: usize = 1024;

/// A resource's feature list.
pub type Features = Arc<Vec<String>>;

/// The cache and the queries in flight.
#[derive(Default)]
pub struct Caps {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// `ver` (verified) or `"{full jid} {ver}"` (unverified, that resource only) → features.
    known: HashMap<String, Features>,
    /// query id → the query.
    pending: HashMap<String, Pending>,
    next_id: u64,
}

struct Pending {
    ver: String,
    hash: Option<String>,
    jid: FullJid,
    /// Other resources that advertised the same `ver` while the query was out.
    waiting: Vec<FullJid>,
    sent: Instant,
}

/// `(node, ver, hash)` of the `<c/>` in a presence.
pub fn caps_of(presence: &Element) -> Option<(&str, &str, Option<&str>)> {
    let c = presence.get_child("c", NS_CAPS)?;
    Some((c.attr("node").unwrap_or(""), c.attr("ver")?, c.attr("hash")))
}

impl Caps {
    /// The features of resource `jid` whose last presence is `presence`, if known.
    pub fn features(&self, jid: &FullJid, presence: &Element) -> Option<Features> {
        let (_, ver, _) = caps_of(presence)?;
        let inner = lock(&self.inner);
        inner
            .known
            .get(ver)
            .or_else(|| inner.known.get(&format!("{jid} {ver}")))
            .cloned()
    }

    /// Like `features`, but an unknown `ver` is asked for (the answer comes back through
    /// [`Caps::answer`]); `None` until then. A presence without caps has no features.
    pub fn resolve(&self, srv: &Server, jid: &FullJid, presence: &Element) -> Option<Features> {
        if let Some(f) = self.features(jid, presence) {
            return Some(f);
        }
        let (node, ver, hash) = caps_of(presence)?;
        let mut inner = lock(&self.inner);
        let now = Instant::now();
        inner
            .pending
            .retain(|_, p| now.duration_since(p.sent) < QUERY_TIMEOUT);
        if let Some(p) = inner.pending.values_mut().find(|p| p.ver == ver) {
            if !p.waiting.contains(jid) && p.jid != *jid {
                p.waiting.push(jid.clone());
            }
            return None;
        }
        if inner.pending.len() >= MAX_PENDING {
            return None;
        }
        inner.next_id += 1;
        let id = format!("{ID_PREFIX}{}", inner.next_id);
        inner.pending.insert(
            id.clone(),
            Pending {
                ver: ver.to_string(),
                hash: hash.map(str::to_string),
                jid: jid.clone(),
                waiting: Vec::new(),
                sent: now,
            },
        );
        drop(inner);
        let query = Element::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("id", id)
            .with_attr("from", srv.domain())
            .with_attr("to", jid.to_string())
            .with_child(
                Element::new("query", ns::DISCO_INFO).with_attr("node", format!("{node}#{ver}")),
            );
        if let Some(r) = srv.sessions.resource(jid) {
            sessions::send(&r, Outbound::stanza(query));
        } else if !srv.is_local_domain(jid.domain()) {
            // A contact's resource on another server (`services::pep_remote`).
            crate::router::to_elsewhere(srv, query);
        }
        None
    }

    /// An iq result or error addressed to the server. If it answers one of our queries, the
    /// features are cached and the resources that waited for them are returned.
    pub fn answer(&self, from: &FullJid, iq: &Element) -> Vec<(FullJid, Features)> {
        let Some(id) = iq.attr("id").filter(|id| id.starts_with(ID_PREFIX)) else {
            return Vec::new();
        };
        let mut inner = lock(&self.inner);
        let Some(p) = inner.pending.remove(id) else {
            return Vec::new();
        };
        if p.jid != *from {
            // Not the resource we asked: put the query back and ignore the impostor.
            inner.pending.insert(id.to_string(), p);
            return Vec::new();
        }
        let Some(query) = iq
            .get_child("query", ns::DISCO_INFO)
            .filter(|_| iq.attr("type") == Some("result"))
        else {
            return Vec::new();
        };
        let features: Features = Arc::new(
            query
                .children()
                .filter(|c| c.is("feature", ns::DISCO_INFO))
                .filter_map(|c| c.attr("var").map(str::to_string))
                .collect(),
        );
        let verified = p.hash.as_deref() == Some("sha-1") && ver_hash(query) == p.ver;
        if inner.known.len() >= MAX_CACHE {
            inner.known.clear();
        }
        if verified {
            inner.known.insert(p.ver.clone(), features.clone());
        } else {
            log::debug!(
                "caps: {from} answered for ver {} with a mismatching hash",
                p.ver
            );
            inner
                .known
                .insert(format!("{} {}", p.jid, p.ver), features.clone());
        }
        let mut out = vec![(p.jid, features.clone())];
        if verified {
            out.extend(p.waiting.into_iter().map(|j| (j, features.clone())));
        }
        out
    }
}

/// XEP-0115 §5.1: the SHA-1 verification string of a disco#info result, base64.
pub fn ver_hash(query: &Element) -> String {
    let mut ids: Vec<String> = query
        .children()
        .filter(|c| c.is("identity", ns::DISCO_INFO))
        .map(|c| {
            format!(
                "{}/{}/{}/{}",
                c.attr("category").unwrap_or(""),
                c.attr("type").unwrap_or(""),
                c.attr("xml:lang").unwrap_or(""),
                c.attr("name").unwrap_or("")
            )
        })
        .collect();
    ids.sort();
    let mut features: Vec<&str> = query
        .children()
        .filter(|c| c.is("feature", ns::DISCO_INFO))
        .filter_map(|c| c.attr("var"))
        .collect();
    features.sort();
    let mut s = String::new();
    for i in &ids {
        s.push_str(i);
        s.push('<');
    }
    for f in &features {
        s.push_str(f);
        s.push('<');
    }
    let mut forms: Vec<(String, String)> = Vec::new();
    for x in query.children().filter(|c| c.is("x", NS_DATA)) {
        let mut form_type = None;
        let mut fields: Vec<(String, Vec<String>)> = Vec::new();
        for f in x.children().filter(|c| c.is("field", NS_DATA)) {
            let var = f.attr("var").unwrap_or("").to_string();
            let mut values: Vec<String> = f
                .children()
                .filter(|c| c.is("value", NS_DATA))
                .map(|v| v.text())
                .collect();
            if var == "FORM_TYPE" {
                form_type = values.first().cloned();
                continue;
            }
            values.sort();
            fields.push((var, values));
        }
        // §5.4 3.6: forms without FORM_TYPE are ignored.
        let Some(form_type) = form_type else { continue };
        fields.sort();
        let mut part = format!("{form_type}<");
        for (var, values) in fields {
            part.push_str(&var);
            part.push('<');
            for v in values {
                part.push_str(&v);
                part.push('<');
            }
        }
        forms.push((form_type, part));
    }
    forms.sort();
    for (_, part) in forms {
        s.push_str(&part);
    }
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, s.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// XEP-0115 §5.2 and §5.3 examples.
    #[test]
    fn ver_hash_matches_the_xep_examples() {
        let simple = Element::parse(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
             <identity category='client' name='Exodus 0.9.1' type='pc'/>\
             <feature var='http://jabber.org/protocol/caps'/>\
             <feature var='http://jabber.org/protocol/disco#info'/>\
             <feature var='http://jabber.org/protocol/disco#items'/>\
             <feature var='http://jabber.org/protocol/muc'/></query>",
        )
        .unwrap();
        assert_eq!(ver_hash(&simple), "QgayPKawpkPSDYmwT/WM94uAlu0=");
        let complex = Element::parse(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
             <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>\
             <identity xml:lang='el' category='client' name='Ψ 0.11' type='pc'/>\
             <feature var='http://jabber.org/protocol/caps'/>\
             <feature var='http://jabber.org/protocol/disco#info'/>\
             <feature var='http://jabber.org/protocol/disco#items'/>\
             <feature var='http://jabber.org/protocol/muc'/>\
             <x xmlns='jabber:x:data' type='result'>\
             <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>\
             <field var='ip_version'><value>ipv4</value><value>ipv6</value></field>\
             <field var='os'><value>Mac</value></field>\
             <field var='os_version'><value>10.5.1</value></field>\
             <field var='software'><value>Psi</value></field>\
             <field var='software_version'><value>0.11</value></field>\
             </x></query>",
        )
        .unwrap();
        assert_eq!(ver_hash(&complex), "q07IKJEyjvHSyhy//CH0CxmKi8w=");
    }

    #[test]
    fn a_wrong_hash_is_noticed() {
        let q = Element::parse(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
             <feature var='urn:xmpp:avatar:metadata+notify'/></query>",
        )
        .unwrap();
        assert_ne!(ver_hash(&q), "QgayPKawpkPSDYmwT/WM94uAlu0=");
    }
}
