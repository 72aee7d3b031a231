//! The owned XML element tree and its serializer.
//!
//! An [`Element`] is a local name, a resolved namespace URI, attributes and child
//! nodes. Prefixes are gone after parsing: element names are stored local, and the
//! serializer declares the default namespace (`xmlns='…'`) only where it changes.
//! Sessions hold many of these, so the representation is four plain fields, with no
//! maps and no parent pointers.
//!
//! Attribute names:
//! - unprefixed names and `xml:*` names are kept as given (`type`, `xml:lang`);
//! - `xmlns` and `xmlns:*` are namespace declarations and are never stored;
//! - any other prefixed attribute is stored in Clark notation, `{uri}local`, because a
//!   prefix means nothing without its declaration; the serializer declares a prefix
//!   for it again (`xmlns:ns0='uri' ns0:local='…'`). Look such attributes up by URI.
//!
//! Names (element and attribute) are trusted: they come from our own code or from a
//! parse that already checked them. Values and text are not: the serializer escapes
//! them so that the output always re-parses to an equal tree, and replaces characters
//! that XML 1.0 cannot carry at all (C0 controls other than tab, LF and CR; U+FFFE;
//! U+FFFF) with U+FFFD rather than dropping them silently. Parsed input never
//! contains such characters (the framer rejects them), so this only affects elements
//! built by code.
//!
//! Serialization and `Drop` recurse once per nesting level; parsed trees are bounded
//! by [`Limits::max_depth`](super::Limits::max_depth), built trees by their author.

use std::fmt;

use super::error::{not_well_formed, FrameError};
use super::framer::{Frame, Framer, Limits};
use super::NS_XML;

/// An owned XML element with a resolved namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    name: String,
    ns: String,
    attrs: Vec<(String, String)>,
    children: Vec<Node>,
}

/// A child of an element. Adjacent text is always merged into one `Text` node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

impl Element {
    /// An empty element `name` in namespace `ns` (`""` for no namespace).
    pub fn new(name: &str, ns: &str) -> Element {
        Element {
            name: name.to_owned(),
            ns: ns.to_owned(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Parses one standalone element, optionally surrounded by whitespace, with the
    /// same restricted-XML rules as a stream and the default depth limit. No prefix
    /// is predeclared except `xml`, so an unprefixed root without `xmlns` has
    /// namespace `""`.
    pub fn parse(s: &str) -> Result<Element, FrameError> {
        let limits = Limits {
            max_stanza_bytes: usize::MAX,
            ..Limits::default()
        };
        Element::parse_with_limits(s, limits)
    }

    /// [`Element::parse`] with explicit limits (e.g. for WebSocket messages, RFC 7395).
    pub fn parse_with_limits(s: &str, limits: Limits) -> Result<Element, FrameError> {
        let mut framer = Framer::fragment(limits);
        framer.push(s.as_bytes())?;
        let element = match framer.next_frame()? {
            Some(Frame::Element(element)) => element,
            Some(_) => return Err(not_well_formed("expected one element")),
            None => return Err(not_well_formed("incomplete element")),
        };
        // Only whitespace may follow; the framer consumes it and reports nothing.
        match framer.next_frame()? {
            None if framer.buffered() == 0 => Ok(element),
            _ => Err(not_well_formed("content after the element")),
        }
    }

    // ----- builder -----

    /// Sets attribute `k` (replacing any previous value) and returns the element.
    pub fn with_attr(mut self, k: &str, v: impl Into<String>) -> Element {
        self.set_attr(k, v);
        self
    }

    /// Appends a child element and returns the element.
    pub fn with_child(mut self, child: Element) -> Element {
        self.push_child(child);
        self
    }

    /// Appends text and returns the element.
    pub fn with_text(mut self, text: impl Into<String>) -> Element {
        self.push_text(text);
        self
    }

    // ----- name and namespace -----

    /// The local name (no prefix).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace URI (`""` for none).
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// Whether this is element `name` in namespace `ns`.
    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    /// Moves this element (only) into namespace `ns`.
    pub fn set_ns(&mut self, ns: &str) {
        ns.clone_into(&mut self.ns);
    }

    /// Moves this element and every descendant in namespace `from` into `to`:
    /// the `jabber:client` <-> `jabber:server` rewrite when a stanza crosses from
    /// c2s to s2s (RFC 6120 §4.8.3). Descendants in other namespaces (and their
    /// subtrees) are searched too, since a payload may contain stanza-namespace
    /// children again (e.g. forwarded messages, XEP-0297).
    pub fn replace_ns(&mut self, from: &str, to: &str) {
        if self.ns == from {
            to.clone_into(&mut self.ns);
        }
        for child in self.children_mut() {
            child.replace_ns(from, to);
        }
    }

    // ----- attributes -----

    /// The value of attribute `k`, if present.
    pub fn attr(&self, k: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.as_str())
    }

    /// Sets attribute `k`, replacing any previous value.
    pub fn set_attr(&mut self, k: &str, v: impl Into<String>) {
        let v = v.into();
        match self.attrs.iter_mut().find(|(name, _)| name == k) {
            Some((_, old)) => *old = v,
            None => self.attrs.push((k.to_owned(), v)),
        }
    }

    /// Removes attribute `k`, returning its value.
    pub fn remove_attr(&mut self, k: &str) -> Option<String> {
        let i = self.attrs.iter().position(|(name, _)| name == k)?;
        Some(self.attrs.remove(i).1)
    }

    /// Appends an attribute without looking for an existing one (the parser has
    /// already rejected duplicates).
    pub(crate) fn push_attr_unchecked(&mut self, k: String, v: String) {
        self.attrs.push((k, v));
    }

    /// All attributes as `(name, value)`, in document order.
    pub fn attrs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    // ----- children -----

    /// The element children, in order.
    pub fn children(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|node| match node {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The element children, mutably.
    pub fn children_mut(&mut self) -> impl Iterator<Item = &mut Element> {
        self.children.iter_mut().filter_map(|node| match node {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// All child nodes (elements and text), in order.
    pub fn nodes(&self) -> &[Node] {
        &self.children
    }

    /// Consumes the element, returning its child nodes.
    pub fn into_nodes(self) -> Vec<Node> {
        self.children
    }

    /// Appends a child element.
    pub fn push_child(&mut self, child: Element) {
        self.children.push(Node::Element(child));
    }

    /// Appends text, merging it with a directly preceding text node. Empty text adds
    /// nothing.
    pub fn push_text(&mut self, text: impl Into<String>) {
        let text = text.into();
        if text.is_empty() {
            return;
        }
        match self.children.last_mut() {
            Some(Node::Text(last)) => last.push_str(&text),
            _ => self.children.push(Node::Text(text)),
        }
    }

    /// The first child element `name` in `ns`.
    pub fn get_child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.children().find(|e| e.is(name, ns))
    }

    /// The first child element `name` in `ns`, mutably.
    pub fn get_child_mut(&mut self, name: &str, ns: &str) -> Option<&mut Element> {
        self.children_mut().find(|e| e.is(name, ns))
    }

    /// Whether there is a child element `name` in `ns`.
    pub fn has_child(&self, name: &str, ns: &str) -> bool {
        self.get_child(name, ns).is_some()
    }

    /// Removes and returns the first child element `name` in `ns`.
    pub fn remove_child(&mut self, name: &str, ns: &str) -> Option<Element> {
        let i = self
            .children
            .iter()
            .position(|node| matches!(node, Node::Element(e) if e.is(name, ns)))?;
        match self.children.remove(i) {
            Node::Element(e) => Some(e),
            Node::Text(_) => None, // unreachable: position() matched an element
        }
    }

    /// Keeps only the child elements for which `keep` returns true; text is kept.
    pub fn retain_children(&mut self, mut keep: impl FnMut(&Element) -> bool) {
        self.children.retain(|node| match node {
            Node::Element(e) => keep(e),
            Node::Text(_) => true,
        });
    }

    /// The direct text children, concatenated (text inside child elements excluded).
    pub fn text(&self) -> String {
        let mut out = String::new();
        for node in &self.children {
            if let Node::Text(t) = node {
                out.push_str(t);
            }
        }
        out
    }

    /// The first child element, if any.
    pub fn first_child(&self) -> Option<&Element> {
        self.children().next()
    }

    // ----- serialization -----

    /// Appends this element's XML to `out`. `parent_ns` is the default namespace in
    /// effect where the element is written (`"jabber:client"` for a stanza inside a
    /// c2s stream); `xmlns='…'` is written only when the element's namespace differs.
    pub fn write_to(&self, out: &mut Vec<u8>, parent_ns: &str) {
        out.push(b'<');
        out.extend_from_slice(self.name.as_bytes());
        if self.ns != parent_ns {
            out.extend_from_slice(b" xmlns='");
            escape_attr(&self.ns, out);
            out.push(b'\'');
        }
        self.write_attrs(out);
        if self.children.is_empty() {
            out.extend_from_slice(b"/>");
            return;
        }
        out.push(b'>');
        for node in &self.children {
            match node {
                Node::Element(e) => e.write_to(out, &self.ns),
                Node::Text(t) => escape_text(t, out),
            }
        }
        out.extend_from_slice(b"</");
        out.extend_from_slice(self.name.as_bytes());
        out.push(b'>');
    }

    /// Writes this element as `<PREFIX:name>`, for a prefix the stream header declared for
    /// this element's namespace (`stream:`, `db:`). The default namespace stays
    /// `default_ns` (the stream's) inside it, so children are written against that.
    pub fn write_prefixed(&self, out: &mut Vec<u8>, prefix: &str, default_ns: &str) {
        out.push(b'<');
        out.extend_from_slice(prefix.as_bytes());
        out.push(b':');
        out.extend_from_slice(self.name.as_bytes());
        self.write_attrs(out);
        if self.children.is_empty() {
            out.extend_from_slice(b"/>");
            return;
        }
        out.push(b'>');
        for node in &self.children {
            match node {
                Node::Element(e) => e.write_to(out, default_ns),
                Node::Text(t) => escape_text(t, out),
            }
        }
        out.extend_from_slice(b"</");
        out.extend_from_slice(prefix.as_bytes());
        out.push(b':');
        out.extend_from_slice(self.name.as_bytes());
        out.push(b'>');
    }

    /// This element's XML as written inside default namespace `parent_ns`.
    pub fn to_bytes_in(&self, parent_ns: &str) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out, parent_ns);
        out
    }

    fn write_attrs(&self, out: &mut Vec<u8>) {
        // Namespaces of Clark-notation attributes, in order of first use; the index is
        // the generated prefix `ns{index}`. Empty (no allocation) in the common case.
        let mut prefixed: Vec<&str> = Vec::new();
        for (k, v) in &self.attrs {
            out.push(b' ');
            match split_clark(k) {
                Some(("", local)) => out.extend_from_slice(local.as_bytes()),
                Some((uri, local)) if uri == NS_XML => {
                    out.extend_from_slice(b"xml:");
                    out.extend_from_slice(local.as_bytes());
                }
                Some((uri, local)) => {
                    let index = match prefixed.iter().position(|u| *u == uri) {
                        Some(i) => i,
                        None => {
                            prefixed.push(uri);
                            let i = prefixed.len() - 1;
                            out.extend_from_slice(format!("xmlns:ns{i}='").as_bytes());
                            escape_attr(uri, out);
                            out.extend_from_slice(b"' ");
                            i
                        }
                    };
                    out.extend_from_slice(format!("ns{index}:").as_bytes());
                    out.extend_from_slice(local.as_bytes());
                }
                None => out.extend_from_slice(k.as_bytes()),
            }
            out.extend_from_slice(b"='");
            escape_attr(v, out);
            out.push(b'\'');
        }
    }
}

impl fmt::Display for Element {
    /// The element as a standalone document fragment: `xmlns` is always written on
    /// the root (parent namespace `""`), except for a root in no namespace.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.to_bytes_in("");
        f.write_str(std::str::from_utf8(&bytes).map_err(|_| fmt::Error)?)
    }
}

/// Splits a Clark-notation name `{uri}local`.
fn split_clark(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix('{')?;
    rest.split_once('}')
}

/// Whether XML 1.0 (§2.2 `Char`) can carry `c` at all, even as a character reference.
pub(crate) fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Escapes character data. `>` is escaped too so that `]]>` can never appear, and CR
/// as a reference so that line-end normalization (XML 1.0 §2.11) keeps it.
fn escape_text(s: &str, out: &mut Vec<u8>) {
    escape(s, out, |c| match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        '\r' => Some("&#13;"),
        _ => None,
    });
}

/// Escapes an attribute value for single or double quotes. Tab, LF and CR become
/// references so that attribute-value normalization (XML 1.0 §3.3.3) keeps them.
fn escape_attr(s: &str, out: &mut Vec<u8>) {
    escape(s, out, |c| match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        '\'' => Some("&apos;"),
        '"' => Some("&quot;"),
        '\t' => Some("&#9;"),
        '\n' => Some("&#10;"),
        '\r' => Some("&#13;"),
        _ => None,
    });
}

/// An attribute value escaped for single or double quotes, for code that writes XML by hand
/// (stream headers, which are never complete elements).
pub fn escape_attr_value(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    escape_attr(s, &mut out);
    // Only whole characters or ASCII references were written: still UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

fn escape(s: &str, out: &mut Vec<u8>, replace: impl Fn(char) -> Option<&'static str>) {
    let mut clean_from = 0;
    for (i, c) in s.char_indices() {
        let replacement = match replace(c) {
            Some(r) => r,
            None if is_xml_char(c) => continue,
            None => "\u{FFFD}",
        };
        out.extend_from_slice(&s.as_bytes()[clean_from..i]);
        out.extend_from_slice(replacement.as_bytes());
        clean_from = i + c.len_utf8();
    }
    out.extend_from_slice(&s.as_bytes()[clean_from..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(e: &Element) -> Element {
        let text = e.to_string();
        Element::parse(&text).unwrap_or_else(|err| panic!("{err} re-parsing {text}"))
    }

    #[test]
    fn builder_and_accessors() {
        let mut e = Element::new("iq", "jabber:client")
            .with_attr("type", "get")
            .with_attr("id", "1")
            .with_child(Element::new("query", "jabber:iq:roster"))
            .with_text("a")
            .with_text("b");
        assert!(e.is("iq", "jabber:client"));
        assert_eq!(e.attr("type"), Some("get"));
        e.set_attr("type", "set");
        assert_eq!(e.attr("type"), Some("set"));
        assert_eq!(e.attrs().count(), 2);
        assert_eq!(e.remove_attr("id"), Some("1".into()));
        assert_eq!(e.attr("id"), None);
        assert_eq!(e.text(), "ab");
        assert_eq!(e.nodes().len(), 2, "adjacent text merges");
        assert!(e.has_child("query", "jabber:iq:roster"));
        assert!(!e.has_child("query", "jabber:client"));
        assert_eq!(e.first_child().map(Element::name), Some("query"));
        let query = e.get_child_mut("query", "jabber:iq:roster").expect("query");
        query.push_child(Element::new("item", "jabber:iq:roster"));
        assert_eq!(e.children().next().map(|q| q.children().count()), Some(1));
        assert!(e.remove_child("query", "jabber:iq:roster").is_some());
        assert!(e.first_child().is_none());
        e.push_child(Element::new("a", ""));
        e.push_child(Element::new("b", ""));
        e.retain_children(|c| c.name() == "b");
        assert_eq!(e.children().map(Element::name).collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn xmlns_only_when_namespace_changes() {
        let e = Element::new("message", "jabber:client")
            .with_child(Element::new("body", "jabber:client").with_text("hi"))
            .with_child(Element::new("x", "urn:x").with_child(Element::new("y", "urn:x")));
        assert_eq!(
            String::from_utf8(e.to_bytes_in("jabber:client")).unwrap(),
            "<message><body>hi</body><x xmlns='urn:x'><y/></x></message>"
        );
        assert_eq!(
            e.to_string(),
            "<message xmlns='jabber:client'><body>hi</body><x xmlns='urn:x'><y/></x></message>"
        );
        // A child in no namespace under a namespaced parent must undeclare it.
        let e = Element::new("a", "urn:a").with_child(Element::new("b", ""));
        assert_eq!(e.to_string(), "<a xmlns='urn:a'><b xmlns=''/></a>");
        assert_eq!(roundtrip(&e), e);
    }

    #[test]
    fn escaping_round_trips() {
        let nasty = "a&b<c>d'e\"f]]>g\th\ni\r\nj\rk &amp; &#65;";
        let e = Element::new("x", "urn:x")
            .with_attr("v", nasty)
            .with_attr("xml:lang", "en")
            .with_text(nasty);
        let back = roundtrip(&e);
        assert_eq!(back, e);
        assert_eq!(back.attr("v"), Some(nasty));
        assert_eq!(back.text(), nasty);
    }

    #[test]
    fn illegal_characters_become_replacement_character() {
        let e = Element::new("x", "")
            .with_attr("a", "1\u{0}2")
            .with_text("\u{1}\u{FFFF}");
        assert_eq!(e.to_string(), "<x a='1\u{FFFD}2'>\u{FFFD}\u{FFFD}</x>");
        assert!(Element::parse(&e.to_string()).is_ok());
    }

    #[test]
    fn prefixed_attributes_use_clark_notation_and_round_trip() {
        let e = Element::parse(
            "<x xmlns='urn:x' xmlns:p='urn:p' xmlns:q='urn:q' p:a='1' q:b='2' p:c='3' xml:lang='de'/>",
        )
        .unwrap();
        assert_eq!(e.attr("{urn:p}a"), Some("1"));
        assert_eq!(e.attr("{urn:q}b"), Some("2"));
        assert_eq!(e.attr("xml:lang"), Some("de"));
        assert_eq!(
            e.attrs().count(),
            4,
            "xmlns declarations are not attributes"
        );
        assert_eq!(
            e.to_string(),
            "<x xmlns='urn:x' xmlns:ns0='urn:p' ns0:a='1' xmlns:ns1='urn:q' ns1:b='2' ns0:c='3' xml:lang='de'/>"
        );
        assert_eq!(roundtrip(&e), e);
    }

    #[test]
    fn parse_resolves_prefixes_and_defaults() {
        let e = Element::parse(
            "<p:a xmlns:p='urn:p' xmlns='urn:d'><b/><p:c><d xmlns=''/></p:c> text </p:a>",
        )
        .unwrap();
        assert!(e.is("a", "urn:p"));
        let kids: Vec<_> = e.children().map(|c| (c.name(), c.ns())).collect();
        assert_eq!(kids, [("b", "urn:d"), ("c", "urn:p")]);
        assert!(e
            .children()
            .nth(1)
            .unwrap()
            .first_child()
            .unwrap()
            .is("d", ""));
        assert_eq!(e.text(), " text ");
        assert_eq!(roundtrip(&e), e);
    }

    #[test]
    fn parse_rejects_more_than_one_element_or_trailing_garbage() {
        assert!(Element::parse("  <a/>\n ").is_ok());
        assert!(Element::parse("<a/><b/>").is_err());
        assert!(Element::parse("<a/>x").is_err());
        assert!(Element::parse("<a>").is_err());
        assert!(Element::parse("").is_err());
        assert!(Element::parse("<u:a/>").is_err(), "undeclared prefix");
    }

    #[test]
    fn replace_ns_rewrites_stanza_namespace_recursively() {
        let mut e = Element::parse(
            "<message xmlns='jabber:client'><body>x</body><f xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client'/></f></message>",
        )
        .unwrap();
        e.replace_ns("jabber:client", "jabber:server");
        assert_eq!(
            String::from_utf8(e.to_bytes_in("jabber:server")).unwrap(),
            "<message><body>x</body><f xmlns='urn:xmpp:forward:0'><message xmlns='jabber:server'/></f></message>"
        );
    }
}
