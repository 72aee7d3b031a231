//! From the text of one complete, pre-scanned element (or stream header, or XML
//! declaration) to owned values, using quick-xml's tokenizer.
//!
//! The framer has already checked the restricted-XML rules, tag balance, quoting and
//! the characters allowed, so quick-xml only tokenizes. This file adds what quick-xml
//! leaves to us: namespace resolution against the stream header's declarations,
//! reference resolution (only the five predefined entities and character references;
//! nothing is ever expanded from a DTD), XML 1.0 line-end and attribute-value
//! normalization, and name checks. It must not know about stanzas or streams beyond
//! the header's shape.

use std::borrow::Cow;

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::PrefixDeclaration;
use quick_xml::Reader;

use super::element::{is_xml_char, Element};
use super::error::{not_well_formed, FrameError};
use super::framer::StreamHeader;
use super::{NS_STREAMS, NS_XML};

/// Most namespace declarations in scope at once; bounds the cost of prefix lookups.
const MAX_NS_BINDINGS: usize = 256;

/// Namespace declarations inherited from outside the element being built: the stream
/// header's, or none for a standalone element.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Scope {
    pub(crate) default_ns: String,
    /// `(prefix, uri)`; later entries shadow earlier ones.
    pub(crate) prefixes: Vec<(String, String)>,
}

/// One declaration made inside the element being built; `None` = default namespace.
type Binding = (Option<String>, String);

/// Builds the element whose complete text (start tag to end tag) is `text`.
pub(crate) fn element(text: &str, scope: &Scope) -> Result<Element, FrameError> {
    let mut reader = reader(text);
    let mut bindings: Vec<Binding> = Vec::new();
    // Open elements with the number of bindings in scope before each was opened.
    let mut stack: Vec<(Element, usize)> = Vec::new();
    loop {
        let event = reader.read_event().map_err(quick_xml_error)?;
        match event {
            Event::Start(start) => {
                let mark = bindings.len();
                let e = open(&start, scope, &mut bindings)?;
                stack.push((e, mark));
            }
            Event::Empty(start) => {
                let mark = bindings.len();
                let e = open(&start, scope, &mut bindings)?;
                bindings.truncate(mark);
                if let Some(done) = attach(&mut stack, e) {
                    return Ok(done);
                }
            }
            Event::End(_) => {
                let (e, mark) = stack
                    .pop()
                    .ok_or_else(|| not_well_formed("unexpected end tag"))?;
                bindings.truncate(mark);
                if let Some(done) = attach(&mut stack, e) {
                    return Ok(done);
                }
            }
            Event::Text(t) => push_text(&mut stack, normalize_line_ends(&t))?,
            Event::CData(c) => push_text(&mut stack, normalize_line_ends(&c))?,
            Event::GeneralRef(r) => {
                let c = resolve_reference(&r)?;
                push_text(&mut stack, Cow::Owned(c.to_string()))?;
            }
            // The framer rejects these before we get here; stay safe anyway.
            Event::Comment(_) | Event::PI(_) | Event::DocType(_) | Event::Decl(_) => {
                return Err(FrameError::RestrictedXml(
                    "markup not allowed in XMPP".into(),
                ))
            }
            Event::Eof => return Err(not_well_formed("incomplete element")),
        }
    }
}

/// Builds the stream header from the text of its start tag (`<stream:stream …>` or,
/// for an empty stream, `<stream:stream …/>`), RFC 6120 §4.7 and §4.8.
pub(crate) fn header(text: &str) -> Result<StreamHeader, FrameError> {
    let mut reader = reader(text);
    let start = match reader.read_event().map_err(quick_xml_error)? {
        Event::Start(start) | Event::Empty(start) => start,
        _ => return Err(not_well_formed("expected the stream header")),
    };
    let mut bindings = Vec::new();
    let e = open(&start, &Scope::default(), &mut bindings)?;
    if !e.is("stream", NS_STREAMS) {
        return Err(FrameError::InvalidNamespace(format!(
            "stream header is {{{}}}{}",
            e.ns(),
            e.name()
        )));
    }
    let mut scope = Scope::default();
    for (prefix, uri) in bindings {
        match prefix {
            None => scope.default_ns = uri,
            Some(p) => scope.prefixes.push((p, uri)),
        }
    }
    let attrs = e
        .attrs()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Ok(StreamHeader::new(
        start.name().into_inner().to_owned(),
        scope,
        attrs,
    ))
}

/// Checks an XML declaration (`<?xml … ?>`): version 1.0, encoding UTF-8 if given
/// (RFC 6120 §11.6). Any other processing instruction is restricted XML (§11.1).
pub(crate) fn declaration(text: &str) -> Result<(), FrameError> {
    let mut reader = reader(text);
    let decl = match reader.read_event().map_err(quick_xml_error)? {
        Event::Decl(decl) => decl,
        _ => return Err(FrameError::RestrictedXml("processing instruction".into())),
    };
    let version = decl.version().map_err(quick_xml_error)?;
    if &*version != "1.0" {
        return Err(not_well_formed(format!("XML version {version:?}")));
    }
    if let Some(encoding) = decl.encoding() {
        let encoding = encoding.map_err(|e| not_well_formed(e.to_string()))?;
        if !encoding.eq_ignore_ascii_case("UTF-8") {
            return Err(FrameError::UnsupportedEncoding(format!(
                "encoding {encoding:?}"
            )));
        }
    }
    Ok(())
}

/// Checks a reference body (between `&` and `;`) as the framer sees it, byte-wise,
/// returning the error to raise if it is not one XMPP allows.
pub(crate) fn check_reference(body: &[u8]) -> Result<(), FrameError> {
    match std::str::from_utf8(body) {
        Ok(body) => resolve_reference(body).map(drop),
        Err(_) => Err(not_well_formed("invalid UTF-8 in reference")),
    }
}

fn reader(text: &str) -> Reader<&[u8]> {
    let mut reader = Reader::from_str(text);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.expand_empty_elements = false;
    config.trim_text(false);
    reader
}

fn quick_xml_error(e: quick_xml::Error) -> FrameError {
    not_well_formed(e.to_string())
}

/// Adds a finished element to its parent; returns it if it was the root.
fn attach(stack: &mut [(Element, usize)], e: Element) -> Option<Element> {
    match stack.last_mut() {
        Some((parent, _)) => {
            parent.push_child(e);
            None
        }
        None => Some(e),
    }
}

fn push_text(stack: &mut [(Element, usize)], text: Cow<'_, str>) -> Result<(), FrameError> {
    match stack.last_mut() {
        Some((parent, _)) => {
            parent.push_text(text.into_owned());
            Ok(())
        }
        None if text.bytes().all(is_whitespace) => Ok(()),
        None => Err(not_well_formed("text outside the element")),
    }
}

/// Turns a start tag into an element with resolved names, pushing its namespace
/// declarations onto `bindings`.
fn open(
    start: &BytesStart<'_>,
    scope: &Scope,
    bindings: &mut Vec<Binding>,
) -> Result<Element, FrameError> {
    // Declarations first: they apply to the tag's own name and attributes.
    for attr in start.attributes() {
        let attr = attr.map_err(|e| not_well_formed(e.to_string()))?;
        let declared = match attr.key.as_namespace_binding() {
            None => continue,
            Some(PrefixDeclaration::Default) => None,
            Some(PrefixDeclaration::Named(prefix)) => Some(prefix),
        };
        let uri = normalize_attr_value(&attr.value)?.into_owned();
        if let Some(prefix) = declared {
            check_ncname(prefix)?;
            // Namespaces in XML 1.0 §3: `xmlns` is never declared, `xml` only to its
            // own URI, and a prefix cannot be undeclared (`xmlns:p=''`).
            let ok = match prefix {
                "xmlns" => false,
                "xml" => uri == NS_XML,
                _ => !uri.is_empty() && uri != NS_XML,
            };
            if !ok {
                return Err(not_well_formed(format!(
                    "bad declaration of prefix {prefix:?}"
                )));
            }
        }
        if bindings.len() >= MAX_NS_BINDINGS {
            return Err(FrameError::PolicyViolation(
                "too many namespace declarations".into(),
            ));
        }
        bindings.push((declared.map(str::to_owned), uri));
    }

    let qname = start.name().into_inner();
    let (prefix, local) = split_qname(qname)?;
    let ns = resolve(prefix, scope, bindings)?;
    let mut e = Element::new(local, ns);

    let mut clark = false;
    for attr in start.attributes() {
        let attr = attr.map_err(|e| not_well_formed(e.to_string()))?;
        if attr.key.as_namespace_binding().is_some() {
            continue;
        }
        let key = attr.key.into_inner();
        let value = normalize_attr_value(&attr.value)?.into_owned();
        let name = match split_qname(key)? {
            (None, _) | (Some("xml"), _) => key.to_owned(),
            (Some(prefix), local) => {
                clark = true;
                let uri = resolve(Some(prefix), scope, bindings)?;
                format!("{{{uri}}}{local}")
            }
        };
        // Raw duplicates were caught by quick-xml; this pushes onto the vector
        // directly so that nothing here is quadratic in the attribute count.
        e.push_attr_unchecked(name, value);
    }
    if clark {
        // `a:x` and `b:x` with a and b bound to one URI are duplicates
        // (Namespaces in XML 1.0 §6.3).
        let mut names: Vec<&str> = e
            .attrs()
            .map(|(k, _)| k)
            .filter(|k| k.starts_with('{'))
            .collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(not_well_formed("duplicate namespaced attribute"));
        }
    }
    Ok(e)
}

/// The namespace URI of `prefix` (`None` = the default namespace).
fn resolve<'a>(
    prefix: Option<&str>,
    scope: &'a Scope,
    bindings: &'a [Binding],
) -> Result<&'a str, FrameError> {
    if let Some((_, uri)) = bindings.iter().rev().find(|(p, _)| p.as_deref() == prefix) {
        return Ok(uri);
    }
    match prefix {
        None => Ok(&scope.default_ns),
        Some("xml") => Ok(NS_XML),
        Some(p) => match scope.prefixes.iter().rev().find(|(sp, _)| sp == p) {
            Some((_, uri)) => Ok(uri),
            None => Err(not_well_formed(format!(
                "undeclared namespace prefix {p:?}"
            ))),
        },
    }
}

/// Splits `prefix:local`, checking both are NCNames (Namespaces in XML 1.0 §4).
fn split_qname(qname: &str) -> Result<(Option<&str>, &str), FrameError> {
    match qname.split_once(':') {
        None => {
            check_ncname(qname)?;
            Ok((None, qname))
        }
        Some((prefix, local)) => {
            check_ncname(prefix)?;
            check_ncname(local)?;
            Ok((Some(prefix), local))
        }
    }
}

/// A practical NCName check: ASCII is checked exactly (XML 1.0 §2.3 without `:`);
/// non-ASCII characters are accepted, as they are in nearly all of the spec's ranges.
fn check_ncname(name: &str) -> Result<(), FrameError> {
    let mut chars = name.chars();
    let first_ok = match chars.next() {
        Some(c) => c.is_ascii_alphabetic() || c == '_' || !c.is_ascii(),
        None => false,
    };
    let rest_ok =
        chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') || !c.is_ascii());
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(not_well_formed(format!("invalid name {name:?}")))
    }
}

/// XML 1.0 §2.11: CRLF and lone CR become LF.
fn normalize_line_ends(s: &str) -> Cow<'_, str> {
    if !s.contains('\r') {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.replace("\r\n", "\n").replace('\r', "\n"))
}

/// XML 1.0 §3.3.3 for CDATA-typed attributes: references resolved; literal tab, LF, CR
/// and CRLF each become one space; characters from references are kept as they are.
fn normalize_attr_value(raw: &str) -> Result<Cow<'_, str>, FrameError> {
    if !raw.contains(['&', '\t', '\n', '\r']) {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find(['&', '\t', '\n', '\r']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after_amp) = tail.strip_prefix('&') {
            let (body, after) = after_amp
                .split_once(';')
                .ok_or_else(|| not_well_formed("unterminated reference"))?;
            out.push(resolve_reference(body)?);
            rest = after;
        } else {
            out.push(' ');
            rest = tail.strip_prefix("\r\n").unwrap_or(&tail[1..]);
        }
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

/// Resolves a reference body (`amp`, `#65`, `#x41`). Only the five predefined
/// entities exist for us: there is no DTD, so anything else is restricted XML
/// (RFC 6120 §11.1) rather than merely undeclared.
fn resolve_reference(body: &str) -> Result<char, FrameError> {
    let c = match body {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "apos" => '\'',
        "quot" => '"',
        _ => {
            let number = match body.strip_prefix('#') {
                Some(n) => n,
                None if check_ncname(body).is_ok() => {
                    return Err(FrameError::RestrictedXml(format!(
                        "entity reference &{body};"
                    )))
                }
                None => return Err(not_well_formed(format!("bad reference &{body};"))),
            };
            let (digits, radix) = match number.strip_prefix('x') {
                Some(hex) => (hex, 16),
                None => (number, 10),
            };
            let valid_digits = !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix));
            let code = if valid_digits {
                u32::from_str_radix(digits, radix).ok()
            } else {
                None
            };
            match code.and_then(char::from_u32).filter(|c| is_xml_char(*c)) {
                Some(c) => c,
                None => return Err(not_well_formed(format!("bad character reference &{body};"))),
            }
        }
    };
    Ok(c)
}

/// XML 1.0 §2.3 `S`.
pub(crate) fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(resolve_reference("amp"), Ok('&'));
        assert_eq!(resolve_reference("#x41"), Ok('A'));
        assert_eq!(resolve_reference("#65"), Ok('A'));
        assert_eq!(resolve_reference("#x0000041"), Ok('A'));
        assert!(matches!(
            resolve_reference("foo"),
            Err(FrameError::RestrictedXml(_))
        ));
        for bad in [
            "#0",
            "#x1",
            "#xD800",
            "#x110000",
            "#99999999999",
            "#",
            "#x",
            "#-1",
            "#x+1",
            "a b",
        ] {
            assert!(
                matches!(resolve_reference(bad), Err(FrameError::NotWellFormed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn attribute_values_are_normalized() {
        assert_eq!(
            normalize_attr_value("a\r\nb\tc\nd&#10;&amp;").unwrap(),
            "a b c d\n&"
        );
        assert_eq!(normalize_line_ends("a\r\nb\rc"), "a\nb\nc");
    }
}
