//! XEP-0313 Message Archive Management payloads (`urn:xmpp:mam:2`, with `#extended`), the
//! XEP-0059 Result Set Management `<set/>` they page with, and XEP-0359 `<stanza-id/>`.
//! Pure: parses queries and preferences into types and builds result, fin and form elements.
//! Knows nothing of the store or sessions; the archive ids it handles are opaque `u64`s.

use crate::jid::Jid;
use crate::stanza::ns;
use crate::xml::Element;

pub const NS_MAM: &str = "urn:xmpp:mam:2";
pub const NS_MAM_EXTENDED: &str = "urn:xmpp:mam:2#extended";
pub const NS_SID: &str = "urn:xmpp:sid:0";
pub const NS_RSM: &str = "http://jabber.org/protocol/rsm";
pub const NS_FORWARD: &str = "urn:xmpp:forward:0";
pub const NS_DATA: &str = "jabber:x:data";

/// Largest page served; a bigger `<max/>` is capped (XEP-0313 §4.1.5 lets the server limit).
pub const MAX_PAGE: usize = 250;
/// Page size when the client sends no `<max/>`.
pub const DEFAULT_PAGE: usize = 50;

// ----- archive ids on the wire -----

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// An archive id as the opaque 13-character string clients see (Crockford base32, lowercase,
/// fixed width so the string order is the id order).
pub fn encode_id(id: u64) -> String {
    (0..13)
        .rev()
        .map(|i| ALPHABET[((id >> (i * 5)) & 31) as usize] as char)
        .collect()
}

/// The inverse of [`encode_id`]; `None` for anything that isn't one of our ids.
pub fn decode_id(s: &str) -> Option<u64> {
    if s.len() != 13 {
        return None;
    }
    let mut v: u64 = 0;
    for (i, c) in s.bytes().enumerate() {
        let d = ALPHABET.iter().position(|a| *a == c)? as u64;
        // The first character carries only 4 bits (13 × 5 = 65).
        if i == 0 && d > 15 {
            return None;
        }
        v = (v << 5) | d;
    }
    Some(v)
}

// ----- queries -----

/// Why a query is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryError {
    /// With a generic text for the peer.
    BadRequest(&'static str),
    /// An id the client named (RSM after/before, after-id, before-id) is not ours.
    ItemNotFound,
}

/// RSM `<before/>`: empty means "the last page".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Before {
    Last,
    Id(u64),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rsm {
    pub max: Option<usize>,
    pub after: Option<u64>,
    pub before: Option<Before>,
    pub index: Option<usize>,
}

/// A parsed `<query xmlns='urn:xmpp:mam:2'/>`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pub queryid: Option<String>,
    pub with: Option<Jid>,
    /// Microseconds since the epoch, inclusive.
    pub start: Option<u64>,
    pub end: Option<u64>,
    /// Exclusive bounds by archive id (#extended).
    pub after_id: Option<u64>,
    pub before_id: Option<u64>,
    /// Only these ids (#extended).
    pub ids: Option<Vec<u64>>,
    /// `<flip-page/>` (#extended): send the page newest first.
    pub flip_page: bool,
    pub rsm: Rsm,
}

impl Query {
    /// The page size to serve: the client's `<max/>`, capped.
    pub fn page_size(&self) -> usize {
        self.rsm.max.unwrap_or(DEFAULT_PAGE).min(MAX_PAGE)
    }
}

pub fn parse_query(query: &Element) -> Result<Query, QueryError> {
    let bad = QueryError::BadRequest;
    let mut q = Query {
        queryid: query.attr("queryid").map(str::to_string),
        flip_page: query.has_child("flip-page", NS_MAM),
        ..Query::default()
    };
    if let Some(x) = query.get_child("x", NS_DATA) {
        for field in x.children().filter(|c| c.is("field", NS_DATA)) {
            let var = field.attr("var").unwrap_or("");
            let values: Vec<String> = field
                .children()
                .filter(|c| c.is("value", NS_DATA))
                .map(|v| v.text())
                .collect();
            let one = || {
                values
                    .first()
                    .map(|v| v.trim().to_string())
                    .unwrap_or_default()
            };
            match var {
                "FORM_TYPE" => {
                    if one() != NS_MAM {
                        return Err(bad("FORM_TYPE must be urn:xmpp:mam:2"));
                    }
                }
                // An empty field is the same as an absent one (clients send blank forms).
                _ if values.iter().all(|v| v.trim().is_empty()) && var != "ids" => {}
                "with" => q.with = Some(Jid::parse(&one()).map_err(|_| bad("bad 'with' JID"))?),
                "start" => q.start = Some(datetime(&one())?),
                "end" => q.end = Some(datetime(&one())?),
                "after-id" => q.after_id = Some(decode_id(&one()).ok_or(QueryError::ItemNotFound)?),
                "before-id" => {
                    q.before_id = Some(decode_id(&one()).ok_or(QueryError::ItemNotFound)?)
                }
                "ids" => {
                    // An id we never issued simply matches nothing.
                    let ids = values.iter().filter_map(|v| decode_id(v.trim())).collect();
                    q.ids = Some(ids);
                }
                _ => return Err(bad("unknown form field")),
            }
        }
    }
    if let Some(set) = query.get_child("set", NS_RSM) {
        q.rsm = parse_rsm(set)?;
    }
    Ok(q)
}

fn datetime(s: &str) -> Result<u64, QueryError> {
    crate::time::parse_datetime(s).ok_or(QueryError::BadRequest("bad XEP-0082 datetime"))
}

fn parse_rsm(set: &Element) -> Result<Rsm, QueryError> {
    let mut rsm = Rsm::default();
    let number = |e: &Element, what: &'static str| {
        e.text()
            .trim()
            .parse::<usize>()
            .map_err(|_| QueryError::BadRequest(what))
    };
    for c in set.children().filter(|c| c.ns() == NS_RSM) {
        match c.name() {
            "max" => rsm.max = Some(number(c, "bad RSM max")?),
            "index" => rsm.index = Some(number(c, "bad RSM index")?),
            "after" => {
                rsm.after = Some(decode_id(c.text().trim()).ok_or(QueryError::ItemNotFound)?)
            }
            "before" => {
                let t = c.text();
                rsm.before = Some(if t.trim().is_empty() {
                    Before::Last
                } else {
                    Before::Id(decode_id(t.trim()).ok_or(QueryError::ItemNotFound)?)
                });
            }
            _ => {}
        }
    }
    Ok(rsm)
}

// ----- results -----

/// `<message to><result queryid id><forwarded><delay stamp/>original</forwarded></result>`
/// (XEP-0313 §4.2). No `from`: it comes from the user's own account.
pub fn result_message(
    to: &str,
    queryid: Option<&str>,
    id: u64,
    stamp: &str,
    original: Element,
) -> Element {
    let mut result = Element::new("result", NS_MAM).with_attr("id", encode_id(id));
    if let Some(q) = queryid {
        result.set_attr("queryid", q);
    }
    let forwarded = Element::new("forwarded", NS_FORWARD)
        .with_child(Element::new("delay", ns::DELAY).with_attr("stamp", stamp))
        .with_child(original);
    Element::new("message", ns::CLIENT)
        .with_attr("to", to)
        .with_child(result.with_child(forwarded))
}

/// `<fin complete?><set><first/><last/><count/></set></fin>` (XEP-0313 §4.3).
pub fn fin(complete: bool, first_last: Option<(u64, u64)>, count: Option<usize>) -> Element {
    let mut set = Element::new("set", NS_RSM);
    if let Some((first, last)) = first_last {
        set.push_child(Element::new("first", NS_RSM).with_text(encode_id(first)));
        set.push_child(Element::new("last", NS_RSM).with_text(encode_id(last)));
    }
    if let Some(n) = count {
        set.push_child(Element::new("count", NS_RSM).with_text(n.to_string()));
    }
    let mut fin = Element::new("fin", NS_MAM);
    if complete {
        fin.set_attr("complete", "true");
    }
    fin.with_child(set)
}

/// The query form a client asks for with `<iq type='get'><query/></iq>` (XEP-0313 §5.1).
pub fn query_form() -> Element {
    let field = |var: &str, typ: &str| {
        Element::new("field", NS_DATA)
            .with_attr("var", var)
            .with_attr("type", typ)
    };
    let x = Element::new("x", NS_DATA)
        .with_attr("type", "form")
        .with_child(
            field("FORM_TYPE", "hidden")
                .with_child(Element::new("value", NS_DATA).with_text(NS_MAM)),
        )
        .with_child(field("with", "jid-single"))
        .with_child(field("start", "text-single"))
        .with_child(field("end", "text-single"))
        .with_child(field("after-id", "text-single"))
        .with_child(field("before-id", "text-single"))
        .with_child(field("ids", "text-multi"));
    Element::new("query", NS_MAM).with_child(x)
}

/// `<stanza-id xmlns='urn:xmpp:sid:0' by id/>` (XEP-0359 §3).
pub fn stanza_id(by: &str, id: u64) -> Element {
    Element::new("stanza-id", NS_SID)
        .with_attr("by", by)
        .with_attr("id", encode_id(id))
}

// ----- preferences (XEP-0313 §6) -----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultPref {
    Always,
    Never,
    Roster,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prefs {
    pub default: DefaultPref,
    /// Bare JIDs, as strings normalised by the JID parser.
    pub always: Vec<String>,
    pub never: Vec<String>,
}

impl Default for Prefs {
    fn default() -> Prefs {
        Prefs {
            default: DefaultPref::Always,
            always: Vec::new(),
            never: Vec::new(),
        }
    }
}

impl Prefs {
    /// Whether messages with `with` (a bare JID) are archived; `None` means "if in roster".
    pub fn decide(&self, with_bare: &str) -> Option<bool> {
        if self.never.iter().any(|j| j == with_bare) {
            return Some(false);
        }
        if self.always.iter().any(|j| j == with_bare) {
            return Some(true);
        }
        match self.default {
            DefaultPref::Always => Some(true),
            DefaultPref::Never => Some(false),
            DefaultPref::Roster => None,
        }
    }
}

pub fn parse_prefs(prefs: &Element) -> Result<Prefs, QueryError> {
    let default = match prefs.attr("default") {
        Some("always") => DefaultPref::Always,
        Some("never") => DefaultPref::Never,
        Some("roster") => DefaultPref::Roster,
        _ => return Err(QueryError::BadRequest("bad prefs default")),
    };
    let list = |name: &str| -> Result<Vec<String>, QueryError> {
        let mut out = Vec::new();
        if let Some(l) = prefs.get_child(name, NS_MAM) {
            for j in l.children().filter(|c| c.is("jid", NS_MAM)) {
                let jid = Jid::parse(j.text().trim())
                    .map_err(|_| QueryError::BadRequest("bad JID in prefs"))?;
                out.push(jid.to_bare().to_string());
            }
        }
        Ok(out)
    };
    Ok(Prefs {
        default,
        always: list("always")?,
        never: list("never")?,
    })
}

pub fn prefs_element(p: &Prefs) -> Element {
    let default = match p.default {
        DefaultPref::Always => "always",
        DefaultPref::Never => "never",
        DefaultPref::Roster => "roster",
    };
    let list = |name: &str, jids: &[String]| {
        let mut l = Element::new(name, NS_MAM);
        for j in jids {
            l.push_child(Element::new("jid", NS_MAM).with_text(j.as_str()));
        }
        l
    };
    Element::new("prefs", NS_MAM)
        .with_attr("default", default)
        .with_child(list("always", &p.always))
        .with_child(list("never", &p.never))
}

// ----- what is archived -----

/// Whether a message belongs in a user's archive, following Prosody's mod_mam: never errors,
/// headlines or groupchat (a MUC archives those); never with a `<no-store/>` or
/// `<no-permanent-store/>` hint (XEP-0334); always with `<store/>`; otherwise when it has a
/// body, or is end-to-end encrypted (OMEMO carries no body for the server to see).
pub fn should_archive(msg: &Element) -> bool {
    if !matches!(crate::stanza::stanza_type(msg), "chat" | "normal") {
        return false;
    }
    let hint = |n: &str| msg.has_child(n, ns::HINTS);
    if hint("no-store") || hint("no-permanent-store") {
        return false;
    }
    if hint("store") {
        return true;
    }
    msg.children().any(|c| {
        c.is("body", ns::CLIENT)
            || c.is("encrypted", "eu.siacs.conversations.axolotl")
            || c.is("encrypted", "urn:xmpp:omemo:2")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_sort() {
        for v in [0, 1, 31, 32, 1_700_000_000_000_000, u64::MAX] {
            let s = encode_id(v);
            assert_eq!(s.len(), 13);
            assert_eq!(decode_id(&s), Some(v), "{s}");
        }
        assert!(encode_id(1_700_000_000_000_000) < encode_id(1_700_000_000_000_001));
        assert!(encode_id(31) < encode_id(32));
        for bad in [
            "",
            "0000000000000x",
            "000000000000i",
            "g000000000000",
            "ABCDEFGHJKMNP",
        ] {
            assert_eq!(decode_id(bad), None, "{bad}");
        }
    }

    fn q(xml: &str) -> Result<Query, QueryError> {
        parse_query(&Element::parse(xml).unwrap())
    }

    #[test]
    fn parses_form_and_rsm() {
        let id = encode_id(42);
        let got = q(&format!(
            "<query xmlns='urn:xmpp:mam:2' queryid='f27'>\
             <x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>\
             <field var='with'><value>bob@x</value></field>\
             <field var='start'><value>1970-01-01T00:00:01Z</value></field>\
             <field var='end'><value></value></field>\
             <field var='after-id'><value>{id}</value></field>\
             <field var='ids'><value>{id}</value><value>nonsense</value></field>\
             </x><set xmlns='http://jabber.org/protocol/rsm'><max>10</max><before/></set></query>"
        ))
        .unwrap();
        assert_eq!(got.queryid.as_deref(), Some("f27"));
        assert_eq!(got.with.as_ref().unwrap().as_str(), "bob@x");
        assert_eq!(got.start, Some(1_000_000));
        assert_eq!(got.end, None);
        assert_eq!(got.after_id, Some(42));
        assert_eq!(got.ids, Some(vec![42]));
        assert_eq!(got.rsm.max, Some(10));
        assert_eq!(got.rsm.before, Some(Before::Last));
        assert_eq!(got.page_size(), 10);
    }

    #[test]
    fn refuses_bad_queries() {
        let form = |field: &str| {
            format!(
                "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'>\
                 <field var='FORM_TYPE'><value>urn:xmpp:mam:2</value></field>{field}</x></query>"
            )
        };
        assert!(matches!(
            q(&form("<field var='color'><value>red</value></field>")),
            Err(QueryError::BadRequest(_))
        ));
        assert!(matches!(
            q(&form("<field var='start'><value>yesterday</value></field>")),
            Err(QueryError::BadRequest(_))
        ));
        assert_eq!(
            q(&form("<field var='before-id'><value>nope</value></field>")),
            Err(QueryError::ItemNotFound)
        );
        assert_eq!(
            q(
                "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>\
               <after>zzz</after></set></query>"
            ),
            Err(QueryError::ItemNotFound)
        );
        assert!(matches!(
            q("<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data'>\
               <field var='FORM_TYPE'><value>urn:xmpp:mam:1</value></field></x></query>"),
            Err(QueryError::BadRequest(_))
        ));
        let big = q(
            "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>\
                     <max>100000</max></set></query>",
        )
        .unwrap();
        assert_eq!(big.page_size(), MAX_PAGE);
        assert_eq!(
            q("<query xmlns='urn:xmpp:mam:2'/>").unwrap().page_size(),
            DEFAULT_PAGE
        );
    }

    #[test]
    fn prefs_round_trip_and_decide() {
        let p = parse_prefs(
            &Element::parse(
                "<prefs xmlns='urn:xmpp:mam:2' default='roster'>\
                 <always><jid>a@x/res</jid></always><never><jid>n@x</jid></never></prefs>",
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(p.always, ["a@x"]);
        assert_eq!(p.decide("a@x"), Some(true));
        assert_eq!(p.decide("n@x"), Some(false));
        assert_eq!(p.decide("other@x"), None);
        assert_eq!(parse_prefs(&prefs_element(&p)).unwrap(), p);
    }

    #[test]
    fn archive_rules() {
        let m = |xml: &str| should_archive(&Element::parse(xml).unwrap());
        assert!(m(
            "<message xmlns='jabber:client' type='chat'><body>hi</body></message>"
        ));
        assert!(m(
            "<message xmlns='jabber:client'><body>hi</body></message>"
        ));
        assert!(!m(
            "<message xmlns='jabber:client' type='groupchat'><body>hi</body></message>"
        ));
        assert!(!m(
            "<message xmlns='jabber:client' type='headline'><body>hi</body></message>"
        ));
        assert!(!m(
            "<message xmlns='jabber:client' type='error'><body>hi</body></message>"
        ));
        assert!(!m(
            "<message xmlns='jabber:client' type='chat'>\
                    <active xmlns='http://jabber.org/protocol/chatstates'/></message>"
        ));
        assert!(m(
            "<message xmlns='jabber:client' type='chat'><store xmlns='urn:xmpp:hints'/>\
                   <active xmlns='http://jabber.org/protocol/chatstates'/></message>"
        ));
        assert!(!m(
            "<message xmlns='jabber:client' type='chat'><body>x</body>\
                    <no-store xmlns='urn:xmpp:hints'/></message>"
        ));
        assert!(!m(
            "<message xmlns='jabber:client' type='chat'><body>x</body>\
                    <no-permanent-store xmlns='urn:xmpp:hints'/></message>"
        ));
    }
}
