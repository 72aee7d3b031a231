//! The incremental stream framer: bytes in, [`Frame`]s out (RFC 6120 §4, §11).
//!
//! quick-xml cannot resume in the middle of a token when input runs out, so the
//! framer owns the buffer and runs a small byte-at-a-time scanner over it. The
//! scanner finds tag boundaries (quoted attribute values, CDATA sections,
//! self-closing and end tags), tracks depth and open tag names, and enforces the
//! limits and restricted XML as the bytes arrive. Only a complete top-level element
//! is handed to quick-xml (in `parse.rs`).
//!
//! Invariants:
//! - The scanner never looks at a byte twice: its state survives across `push`
//!   calls, so a stanza arriving one byte at a time costs linear time.
//! - A pending element never holds more than `max_stanza_bytes` bytes: the error is
//!   raised at the first byte past the limit, not when the element completes.
//! - Bytes are dropped as soon as they are returned as frames (or were whitespace),
//!   and an empty buffer releases its allocation, so an idle framer costs only its
//!   own struct and the stream header's namespace strings.
//! - After an error the framer is dead: every later call returns the same error.
//! - Callers must call `next_frame` until it returns `None` after each `push`; `push`
//!   itself only appends (scanning lazily keeps frames and errors in byte order).

use super::element::Element;
use super::error::{not_well_formed, FrameError};
use super::parse::{self, is_whitespace, Scope};

/// Limits applied to each top-level element. Exceeding one is `policy-violation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest top-level element (stanza), in bytes of its XML as received; also
    /// bounds the stream header and the XML declaration.
    pub max_stanza_bytes: usize,
    /// Deepest nesting; the top-level element itself is depth 1.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_stanza_bytes: 262_144,
            max_depth: 64,
        }
    }
}

/// One unit of an XMPP stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// The `<stream:stream …>` start tag.
    StreamOpen(StreamHeader),
    /// A complete top-level element: a stanza, `<starttls/>`, `<auth/>`, …
    Element(Element),
    /// The `</stream:stream>` end tag (or an empty `<stream:stream/>`).
    StreamClose,
}

/// The stream header (RFC 6120 §4.7): its attributes and namespace declarations.
///
/// The framer checks only that it is `stream` in `http://etherx.jabber.org/streams`.
/// Whether the default namespace is one we serve (`jabber:client`, `jabber:server`),
/// and what `to`, `from`, `version` mean, is for the stream layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamHeader {
    /// The qualified name as sent (`stream:stream`); the close tag must repeat it.
    qname: String,
    scope: Scope,
    attrs: Vec<(String, String)>,
}

impl StreamHeader {
    pub(crate) fn new(qname: String, scope: Scope, attrs: Vec<(String, String)>) -> StreamHeader {
        StreamHeader {
            qname,
            scope,
            attrs,
        }
    }

    /// The content namespace declared with `xmlns` (`""` if none).
    pub fn default_ns(&self) -> &str {
        &self.scope.default_ns
    }

    /// An attribute by its name as sent (`to`, `from`, `id`, `version`, `xml:lang`).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// All attributes (namespace declarations excluded).
    pub fn attrs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The URI the header bound to `prefix` (`xmlns:prefix='…'`).
    pub fn prefix_ns(&self, prefix: &str) -> Option<&str> {
        self.scope
            .prefixes
            .iter()
            .rev()
            .find(|(p, _)| p == prefix)
            .map(|(_, uri)| uri.as_str())
    }

    /// The header's qualified name as sent, e.g. `stream:stream`.
    pub fn qname(&self) -> &str {
        &self.qname
    }
}

/// Cuts one direction of an XMPP stream into frames.
#[derive(Debug)]
pub struct Framer {
    limits: Limits,
    phase: Phase,
    buf: Vec<u8>,
    /// Next byte to scan.
    pos: usize,
    /// Start of the pending unit (element, stream header, XML declaration or stream
    /// close tag) while one is being scanned.
    unit: Option<usize>,
    lex: Lex,
    /// `(start, len)` in `buf` of the names of the open tags of the pending element.
    open: Vec<(usize, usize)>,
    /// Start of the tag name or reference being scanned.
    mark: usize,
    /// End of the end-tag name being scanned.
    name_end: usize,
    /// Stanza scope and close-tag name, from the stream header.
    scope: Scope,
    stream_qname: String,
    close_pending: bool,
    error: Option<FrameError>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Before the stream header; an XML declaration is still allowed if `decl_ok`.
    Prolog { decl_ok: bool },
    /// Between top-level elements of an open stream.
    Open,
    /// After the stream close; further input is ignored.
    Closed,
    /// Standalone element parsing (`Element::parse`): no header, no declaration.
    Fragment,
}

/// Scanner state. Each state names what the previous bytes were.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lex {
    /// Character data; `brackets` counts trailing `]` (for the forbidden `]]>`).
    Text {
        brackets: u8,
    },
    /// After `&`, inside a reference; `quote` is the attribute value's quote, if any.
    Ref {
        quote: Option<u8>,
    },
    /// After `<`.
    Lt,
    /// After `<!` and the first `n` bytes of `[CDATA[`.
    Bang(u8),
    /// Inside a CDATA section; counts trailing `]`.
    CData(u8),
    /// Inside `<?…`; whether the previous byte was `?`.
    Pi(bool),
    StartName,
    InTag,
    AttrName,
    AfterAttrName,
    BeforeValue,
    Value(u8),
    AfterValue,
    /// After `/` in a start tag.
    SelfClose,
    EndName,
    AfterEndName,
}

/// What a byte completed.
enum Done {
    Declaration,
    Header { empty: bool },
    Element,
    Close,
}

const CDATA_OPEN: &[u8] = b"[CDATA[";
/// Longest reference body we accept (`#x` and 8 digits with some leading zeros).
const MAX_REF_LEN: usize = 32;

impl Framer {
    /// A framer for a new stream (or a stream restart after STARTTLS or SASL,
    /// RFC 6120 §5.4.3.3, §6.4.6: use a fresh framer).
    pub fn new(limits: Limits) -> Framer {
        Framer::with_phase(limits, Phase::Prolog { decl_ok: true })
    }

    /// A framer for standalone elements: no stream header, empty scope.
    pub(crate) fn fragment(limits: Limits) -> Framer {
        Framer::with_phase(limits, Phase::Fragment)
    }

    fn with_phase(limits: Limits, phase: Phase) -> Framer {
        Framer {
            limits,
            phase,
            buf: Vec::new(),
            pos: 0,
            unit: None,
            lex: Lex::Text { brackets: 0 },
            open: Vec::new(),
            mark: 0,
            name_end: 0,
            scope: Scope::default(),
            stream_qname: String::new(),
            close_pending: false,
            error: None,
        }
    }

    /// Appends received bytes. Fails only if the framer already failed.
    pub fn push(&mut self, data: &[u8]) -> Result<(), FrameError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.phase == Phase::Closed {
            return Ok(());
        }
        self.compact();
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// The next complete frame, or `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.close_pending {
            self.close_pending = false;
            self.phase = Phase::Closed;
            return Ok(Some(Frame::StreamClose));
        }
        if self.phase == Phase::Closed {
            return Ok(None);
        }
        match self.scan() {
            Ok(Some(frame)) => Ok(Some(frame)),
            Ok(None) => {
                self.compact();
                Ok(None)
            }
            Err(e) => {
                self.error = Some(e.clone());
                self.buf = Vec::new();
                self.open = Vec::new();
                self.pos = 0;
                self.unit = None;
                Err(e)
            }
        }
    }

    /// Bytes received but not yet returned as frames: a partial element, or
    /// anything after the last frame. Whitespace the framer already skipped does
    /// not count. After `<starttls/>` or a SASL success this must be 0, or the peer
    /// pipelined data across the security layer change (RFC 6120 §5.3.3).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.consumed()
    }

    fn consumed(&self) -> usize {
        self.unit.unwrap_or(self.pos)
    }

    /// Drops consumed bytes and releases the allocation when nothing is left.
    fn compact(&mut self) {
        let cut = self.consumed();
        if cut == 0 {
            return;
        }
        if cut >= self.buf.len() {
            // Nothing pending (so no open tags either): free the buffers so that
            // idle sessions cost little.
            self.buf = Vec::new();
            self.open = Vec::new();
        } else {
            self.buf.drain(..cut);
        }
        self.pos -= cut;
        self.unit = self.unit.map(|u| u - cut);
        self.mark = self.mark.saturating_sub(cut);
        self.name_end = self.name_end.saturating_sub(cut);
        for (start, _) in &mut self.open {
            *start = start.saturating_sub(cut);
        }
    }

    fn scan(&mut self) -> Result<Option<Frame>, FrameError> {
        while let Some(&b) = self.buf.get(self.pos) {
            self.pos += 1;
            // XML 1.0 §2.2: no C0 controls other than tab, LF and CR, anywhere.
            if b < 0x20 && !is_whitespace(b) {
                return Err(not_well_formed(format!("illegal character 0x{b:02x}")));
            }
            let done = self.step(b)?;
            if let Some(start) = self.unit {
                if self.pos - start > self.limits.max_stanza_bytes {
                    return Err(FrameError::PolicyViolation(format!(
                        "element larger than {} bytes",
                        self.limits.max_stanza_bytes
                    )));
                }
            }
            if let Some(done) = done {
                if let Some(frame) = self.finish(done)? {
                    return Ok(Some(frame));
                }
            }
        }
        Ok(None)
    }

    /// Advances the scanner over one byte.
    fn step(&mut self, b: u8) -> Result<Option<Done>, FrameError> {
        let at = self.pos - 1;
        match self.lex {
            Lex::Text { brackets } => {
                if b == b'<' {
                    if self.unit.is_none() {
                        self.unit = Some(at);
                    }
                    self.lex = Lex::Lt;
                } else if self.open.is_empty() {
                    if !is_whitespace(b) {
                        return Err(self.text_outside_element(b));
                    }
                } else if b == b'&' {
                    self.mark = at;
                    self.lex = Lex::Ref { quote: None };
                } else if b == b'>' && brackets >= 2 {
                    return Err(not_well_formed("']]>' in character data"));
                } else {
                    let brackets = if b == b']' { (brackets + 1).min(2) } else { 0 };
                    self.lex = Lex::Text { brackets };
                }
            }
            Lex::Ref { quote } => {
                if b == b';' {
                    parse::check_reference(self.buf.get(self.mark + 1..at).unwrap_or_default())?;
                    self.lex = match quote {
                        Some(q) => Lex::Value(q),
                        None => Lex::Text { brackets: 0 },
                    };
                } else if is_whitespace(b)
                    || matches!(b, b'<' | b'&' | b'\'' | b'"')
                    || at - self.mark > MAX_REF_LEN
                {
                    return Err(not_well_formed("unterminated reference"));
                }
            }
            Lex::Lt => match b {
                b'/' => {
                    if self.open.is_empty() && self.phase != Phase::Open {
                        return Err(not_well_formed("end tag without start tag"));
                    }
                    self.mark = self.pos;
                    self.lex = Lex::EndName;
                }
                b'!' => self.lex = Lex::Bang(0),
                b'?' => {
                    if self.phase != (Phase::Prolog { decl_ok: true }) {
                        return Err(FrameError::RestrictedXml("processing instruction".into()));
                    }
                    self.lex = Lex::Pi(false);
                }
                _ if is_name_byte(b) => {
                    if self.open.len() >= self.limits.max_depth {
                        return Err(FrameError::PolicyViolation(format!(
                            "elements nested deeper than {}",
                            self.limits.max_depth
                        )));
                    }
                    self.mark = at;
                    self.lex = Lex::StartName;
                }
                _ => return Err(not_well_formed("invalid character after '<'")),
            },
            Lex::Bang(n) => {
                if CDATA_OPEN.get(usize::from(n)) == Some(&b) {
                    if usize::from(n) + 1 < CDATA_OPEN.len() {
                        self.lex = Lex::Bang(n + 1);
                    } else if self.open.is_empty() {
                        return Err(self.text_outside_element(b'<'));
                    } else {
                        self.lex = Lex::CData(0);
                    }
                } else if n > 0 {
                    return Err(not_well_formed("malformed CDATA section"));
                } else {
                    // RFC 6120 §11.1: no comments, no DTD (DOCTYPE, ENTITY, …).
                    return Err(FrameError::RestrictedXml(match b {
                        b'-' => "comment".into(),
                        b'D' => "document type declaration".into(),
                        _ => "markup declaration".into(),
                    }));
                }
            }
            Lex::CData(brackets) => {
                self.lex = match b {
                    b']' => Lex::CData((brackets + 1).min(2)),
                    b'>' if brackets >= 2 => Lex::Text { brackets: 0 },
                    _ => Lex::CData(0),
                };
            }
            Lex::Pi(question) => {
                if b == b'>' && question {
                    self.lex = Lex::Text { brackets: 0 };
                    return Ok(Some(Done::Declaration));
                }
                self.lex = Lex::Pi(b == b'?');
            }
            Lex::StartName => {
                if is_name_byte(b) {
                } else if is_whitespace(b) {
                    self.open_tag(at);
                    self.lex = Lex::InTag;
                } else if b == b'>' {
                    self.open_tag(at);
                    return self.start_tag_end(false);
                } else if b == b'/' {
                    self.open_tag(at);
                    self.lex = Lex::SelfClose;
                } else {
                    return Err(not_well_formed("invalid character in tag name"));
                }
            }
            Lex::InTag => {
                if is_whitespace(b) {
                } else if b == b'>' {
                    return self.start_tag_end(false);
                } else if b == b'/' {
                    self.lex = Lex::SelfClose;
                } else if is_name_byte(b) {
                    self.lex = Lex::AttrName;
                } else {
                    return Err(not_well_formed("invalid character in tag"));
                }
            }
            Lex::AttrName => {
                if is_name_byte(b) {
                } else if is_whitespace(b) {
                    self.lex = Lex::AfterAttrName;
                } else if b == b'=' {
                    self.lex = Lex::BeforeValue;
                } else {
                    return Err(not_well_formed("attribute without value"));
                }
            }
            Lex::AfterAttrName => {
                if b == b'=' {
                    self.lex = Lex::BeforeValue;
                } else if !is_whitespace(b) {
                    return Err(not_well_formed("attribute without value"));
                }
            }
            Lex::BeforeValue => {
                if b == b'\'' || b == b'"' {
                    self.lex = Lex::Value(b);
                } else if !is_whitespace(b) {
                    return Err(not_well_formed("unquoted attribute value"));
                }
            }
            Lex::Value(quote) => {
                if b == quote {
                    self.lex = Lex::AfterValue;
                } else if b == b'<' {
                    return Err(not_well_formed("'<' in attribute value"));
                } else if b == b'&' {
                    self.mark = at;
                    self.lex = Lex::Ref { quote: Some(quote) };
                }
            }
            Lex::AfterValue => {
                if is_whitespace(b) {
                    self.lex = Lex::InTag;
                } else if b == b'>' {
                    return self.start_tag_end(false);
                } else if b == b'/' {
                    self.lex = Lex::SelfClose;
                } else {
                    return Err(not_well_formed("missing whitespace between attributes"));
                }
            }
            Lex::SelfClose => {
                if b != b'>' {
                    return Err(not_well_formed("'/' not followed by '>' in tag"));
                }
                return self.start_tag_end(true);
            }
            Lex::EndName => {
                if is_name_byte(b) {
                } else if at > self.mark && (is_whitespace(b) || b == b'>') {
                    self.name_end = at;
                    if b == b'>' {
                        return self.end_tag_end();
                    }
                    self.lex = Lex::AfterEndName;
                } else {
                    return Err(not_well_formed("invalid end tag"));
                }
            }
            Lex::AfterEndName => {
                if b == b'>' {
                    return self.end_tag_end();
                } else if !is_whitespace(b) {
                    return Err(not_well_formed("invalid end tag"));
                }
            }
        }
        Ok(None)
    }

    /// The error for non-whitespace byte `b` where only elements may appear.
    fn text_outside_element(&self, b: u8) -> FrameError {
        // Character data between stanzas is well-formed XML that XMPP cannot process
        // (bad-format). Before the header there is no element yet, so it is not
        // well-formed. A non-ASCII byte may be invalid UTF-8, which we do not decode
        // here, so it gets the stricter condition.
        if self.phase == Phase::Open && b.is_ascii() {
            FrameError::BadFormat("text between top-level elements".into())
        } else {
            not_well_formed("text outside any element")
        }
    }

    /// Records the name of the start tag being scanned (`mark..end`).
    fn open_tag(&mut self, end: usize) {
        self.open.push((self.mark, end - self.mark));
    }

    fn start_tag_end(&mut self, empty: bool) -> Result<Option<Done>, FrameError> {
        self.lex = Lex::Text { brackets: 0 };
        if matches!(self.phase, Phase::Prolog { .. }) {
            return Ok(Some(Done::Header { empty }));
        }
        if empty {
            self.open.pop();
        }
        Ok(self.open.is_empty().then_some(Done::Element))
    }

    fn end_tag_end(&mut self) -> Result<Option<Done>, FrameError> {
        self.lex = Lex::Text { brackets: 0 };
        let name = self.buf.get(self.mark..self.name_end).unwrap_or_default();
        let Some((start, len)) = self.open.pop() else {
            // At stream level: only the stream's own end tag may appear.
            if name == self.stream_qname.as_bytes() {
                return Ok(Some(Done::Close));
            }
            return Err(not_well_formed("end tag does not match the stream header"));
        };
        if self.buf.get(start..start + len) != Some(name) {
            return Err(not_well_formed("mismatched end tag"));
        }
        Ok(self.open.is_empty().then_some(Done::Element))
    }

    /// Turns a completed unit into a frame (or nothing, for an XML declaration).
    fn finish(&mut self, done: Done) -> Result<Option<Frame>, FrameError> {
        let start = self.unit.take().unwrap_or(0);
        let bytes = self.buf.get(start..self.pos).unwrap_or_default();
        let text = std::str::from_utf8(bytes).map_err(|_| not_well_formed("invalid UTF-8"))?;
        // XML 1.0 §2.2: U+FFFE and U+FFFF are not characters (C0 controls were
        // rejected while scanning; surrogates cannot occur in valid UTF-8).
        if text.contains(['\u{FFFE}', '\u{FFFF}']) {
            return Err(not_well_formed("illegal character"));
        }
        match done {
            Done::Declaration => {
                parse::declaration(text)?;
                self.phase = Phase::Prolog { decl_ok: false };
                Ok(None)
            }
            Done::Header { empty } => {
                let header = parse::header(text)?;
                self.open.clear();
                self.scope = header.scope.clone();
                self.stream_qname = header.qname.clone();
                self.phase = Phase::Open;
                self.close_pending = empty;
                Ok(Some(Frame::StreamOpen(header)))
            }
            Done::Element => {
                let element = parse::element(text, &self.scope)?;
                Ok(Some(Frame::Element(element)))
            }
            Done::Close => {
                self.phase = Phase::Closed;
                self.buf.drain(..self.pos.min(self.buf.len()));
                self.pos = 0;
                Ok(Some(Frame::StreamClose))
            }
        }
    }

    /// An idle framer's own size plus its heap, for the memory test and for sizing.
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        self.buf.capacity()
            + self.open.capacity() * std::mem::size_of::<(usize, usize)>()
            + self.stream_qname.capacity()
            + self.scope.default_ns.capacity()
            + self
                .scope
                .prefixes
                .iter()
                .map(|(p, u)| p.capacity() + u.capacity() + std::mem::size_of::<(String, String)>())
                .sum::<usize>()
    }
}

/// Bytes that may be part of a name as far as the scanner cares; `parse.rs` checks
/// names properly once the element is complete.
fn is_name_byte(b: u8) -> bool {
    !is_whitespace(b)
        && !matches!(
            b,
            b'<' | b'>' | b'/' | b'=' | b'\'' | b'"' | b'&' | b'!' | b'?'
        )
}

#[cfg(test)]
mod tests {
    use super::super::NS_STREAMS;
    use super::*;

    const HEADER: &str = "<stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0' xml:lang='en'>";
    const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";

    #[derive(Debug, PartialEq)]
    struct Outcome {
        frames: Vec<Frame>,
        error: Option<FrameError>,
    }

    /// Feeds `chunks` one push at a time, draining frames after each push.
    fn run(chunks: &[&[u8]], limits: Limits) -> Outcome {
        let mut framer = Framer::new(limits);
        let mut frames = Vec::new();
        for chunk in chunks {
            if let Err(e) = framer.push(chunk) {
                return Outcome {
                    frames,
                    error: Some(e),
                };
            }
            loop {
                match framer.next_frame() {
                    Ok(Some(frame)) => frames.push(frame),
                    Ok(None) => break,
                    Err(e) => {
                        return Outcome {
                            frames,
                            error: Some(e),
                        }
                    }
                }
            }
        }
        Outcome {
            frames,
            error: None,
        }
    }

    /// Runs `input` whole, split at every offset into two pushes, and one byte at a
    /// time, asserting the same outcome each way.
    fn check_with(input: &[u8], limits: Limits) -> Outcome {
        let whole = run(&[input], limits);
        for i in 0..=input.len() {
            let (a, b) = input.split_at(i);
            assert_eq!(run(&[a, b], limits), whole, "split at {i}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(&bytes, limits), whole, "one byte at a time");
        whole
    }

    fn check(input: &str) -> Outcome {
        check_with(input.as_bytes(), Limits::default())
    }

    /// Frames of a stream that opens with `HEADER` and then carries `body`.
    fn stanzas(body: &str) -> Vec<Element> {
        let out = check(&format!("{HEADER}{body}"));
        assert_eq!(out.error, None, "for {body}");
        let mut frames = out.frames.into_iter();
        assert!(matches!(frames.next(), Some(Frame::StreamOpen(_))));
        frames
            .map(|f| match f {
                Frame::Element(e) => e,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    fn one(body: &str) -> Element {
        let mut all = stanzas(body);
        assert_eq!(all.len(), 1, "for {body}");
        all.remove(0)
    }

    /// The error a stream carrying `body` after `HEADER` fails with.
    fn error_after_header(body: &str) -> FrameError {
        error_of(&format!("{HEADER}{body}"))
    }

    fn error_of(input: &str) -> FrameError {
        check(input)
            .error
            .unwrap_or_else(|| panic!("no error for {input}"))
    }

    #[test]
    fn client_header_without_declaration() {
        let out = check(HEADER);
        assert_eq!(out.error, None);
        let [Frame::StreamOpen(h)] = &out.frames[..] else {
            panic!("{out:?}")
        };
        assert_eq!(h.default_ns(), "jabber:client");
        assert_eq!(h.attr("to"), Some("example.com"));
        assert_eq!(h.attr("version"), Some("1.0"));
        assert_eq!(h.attr("xml:lang"), Some("en"));
        assert_eq!(h.attr("xmlns"), None);
        assert_eq!(h.prefix_ns("stream"), Some(NS_STREAMS));
        assert_eq!(h.qname(), "stream:stream");
        assert_eq!(h.attrs().count(), 3);
    }

    #[test]
    fn client_header_with_declaration() {
        for decl in [
            "<?xml version='1.0'?>",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
            "<?xml version='1.0' encoding='utf-8' standalone='yes' ?>",
        ] {
            let out = check(&format!("{decl}{HEADER}"));
            assert_eq!(out.error, None, "{decl}");
            assert!(matches!(&out.frames[..], [Frame::StreamOpen(_)]));
        }
    }

    #[test]
    fn declaration_errors() {
        let enc = error_of(&format!(
            "<?xml version='1.0' encoding='ISO-8859-1'?>{HEADER}"
        ));
        assert!(matches!(enc, FrameError::UnsupportedEncoding(_)), "{enc:?}");
        assert_eq!(enc.condition(), "unsupported-encoding");
        let v = error_of(&format!("<?xml version='1.1'?>{HEADER}"));
        assert!(matches!(v, FrameError::NotWellFormed(_)), "{v:?}");
        // Only one declaration, and only before the header.
        let twice = error_of(&format!(
            "<?xml version='1.0'?><?xml version='1.0'?>{HEADER}"
        ));
        assert!(matches!(twice, FrameError::RestrictedXml(_)), "{twice:?}");
        let late = error_after_header("<?xml version='1.0'?>");
        assert!(matches!(late, FrameError::RestrictedXml(_)), "{late:?}");
        let pi = error_of(&format!("<?xml-stylesheet href='x'?>{HEADER}"));
        assert!(matches!(pi, FrameError::RestrictedXml(_)), "{pi:?}");
    }

    #[test]
    fn several_stanzas_inherit_the_content_namespace() {
        let all = stanzas(
            "<message to='a@b' type='chat'><body>hi</body></message>\
             <presence/><iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>",
        );
        let names: Vec<_> = all.iter().map(|e| (e.name(), e.ns())).collect();
        assert_eq!(
            names,
            [
                ("message", "jabber:client"),
                ("presence", "jabber:client"),
                ("iq", "jabber:client")
            ]
        );
        assert_eq!(
            all[0].get_child("body", "jabber:client").map(Element::text),
            Some("hi".into())
        );
        assert!(all[2].has_child("ping", "urn:xmpp:ping"));
    }

    #[test]
    fn nested_namespaces_resolve() {
        let iq = one("<iq><query xmlns='jabber:iq:roster'><item jid='a@b'/></query></iq>");
        let query = iq.get_child("query", "jabber:iq:roster").expect("query");
        let item = query.get_child("item", "jabber:iq:roster").expect("item");
        assert_eq!(item.attr("jid"), Some("a@b"));
    }

    #[test]
    fn header_prefix_is_usable_in_stanzas() {
        let features = one(
            "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>",
        );
        assert!(features.is("features", NS_STREAMS));
        assert!(features
            .get_child("starttls", TLS)
            .is_some_and(|s| s.has_child("required", TLS)));
        let error = one("<stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>");
        assert!(error.is("error", NS_STREAMS));
    }

    #[test]
    fn any_stream_prefix_or_default_namespace_works() {
        let out = check("<s:stream xmlns:s='http://etherx.jabber.org/streams' xmlns='jabber:server'><s:features/></s:stream>");
        assert_eq!(out.error, None);
        assert_eq!(out.frames.len(), 3);
        assert!(matches!(&out.frames[1], Frame::Element(e) if e.is("features", NS_STREAMS)));
        assert_eq!(out.frames[2], Frame::StreamClose);
    }

    #[test]
    fn attributes_with_gt_and_quotes() {
        let e = one(r#"<message id='a>b"c' to="x'y>" type = 'chat' />"#);
        assert_eq!(e.attr("id"), Some("a>b\"c"));
        assert_eq!(e.attr("to"), Some("x'y>"));
        assert_eq!(e.attr("type"), Some("chat"));
    }

    #[test]
    fn cdata_sections() {
        let e = one("<body>a<![CDATA[<not> & a </tag> ]] ]>]]>b</body>");
        assert_eq!(e.text(), "a<not> & a </tag> ]] ]>b");
        assert_eq!(e.nodes().len(), 1, "text and CDATA merge");
    }

    #[test]
    fn references() {
        let e =
            one("<body a='&#x41;&lt;&quot;'>&#x41;&#66;&lt;&gt;&amp;&apos;&quot;&#x1F600;</body>");
        assert_eq!(e.text(), "AB<>&'\"\u{1F600}");
        assert_eq!(e.attr("a"), Some("A<\""));
    }

    #[test]
    fn whitespace_keepalives_are_ignored() {
        let all = stanzas(" \n<presence/>\r\n\t <presence/>   \n");
        assert_eq!(all.len(), 2);
    }

    #[test]
    fn stream_close() {
        let out = check(&format!(
            "{HEADER}<presence/> </stream:stream>trailing junk <"
        ));
        assert_eq!(out.error, None);
        assert_eq!(out.frames.len(), 3);
        assert_eq!(out.frames[2], Frame::StreamClose);
        let empty = check(
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'/>",
        );
        assert!(matches!(
            &empty.frames[..],
            [Frame::StreamOpen(_), Frame::StreamClose]
        ));
    }

    #[test]
    fn restricted_xml() {
        for body in [
            "<!DOCTYPE foo>",
            "<!ENTITY x 'y'>",
            "<!-- hi -->",
            "<message><!-- hi --></message>",
            "<message><!ENTITY x 'y'></message>",
            "<message><?php x?></message>",
            "<?php x?>",
            "<message>&foo;</message>",
            "<message a='&foo;'/>",
        ] {
            let e = error_after_header(body);
            assert!(matches!(e, FrameError::RestrictedXml(_)), "{body}: {e:?}");
            assert_eq!(e.condition(), "restricted-xml");
        }
        for doc in [
            "<!DOCTYPE stream>",
            "<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]>",
        ] {
            let e = error_of(&format!("{doc}{HEADER}"));
            assert!(matches!(e, FrameError::RestrictedXml(_)), "{doc}: {e:?}");
        }
    }

    #[test]
    fn wrong_stream_namespace() {
        for header in [
            "<stream:stream xmlns:stream='urn:wrong' xmlns='jabber:client'>",
            "<stream xmlns='jabber:client'>",
            "<stream:features xmlns:stream='http://etherx.jabber.org/streams'>",
        ] {
            let e = error_of(header);
            assert!(
                matches!(e, FrameError::InvalidNamespace(_)),
                "{header}: {e:?}"
            );
        }
        let undeclared = error_of("<stream:stream xmlns='jabber:client'>");
        assert!(
            matches!(undeclared, FrameError::NotWellFormed(_)),
            "{undeclared:?}"
        );
    }

    #[test]
    fn not_well_formed() {
        for body in [
            "<message><body>x</message>",
            "<a><b></a></b>",
            "</iq>",
            "<message a='<'/>",
            "<<",
            "<message a=b/>",
            "<message a/>",
            "<message a='1'b='2'/>",
            "<message a='1' a='2'/>",
            "<message/ >",
            "<message>&amp</message>",
            "<message>& amp;</message>",
            "<message>&#0;</message>",
            "<message>&#xD800;</message>",
            "<message>]]></message>",
            "<message>\u{1}</message>",
            "<message>\u{FFFF}</message>",
            "<foo:message/>",
            "<message foo:a='1'/>",
            "<message xmlns:p=''/>",
            "<1message/>",
            "<message><![CDAT[x]]></message>",
            "< message/>",
        ] {
            let e = error_after_header(body);
            assert!(matches!(e, FrameError::NotWellFormed(_)), "{body}: {e:?}");
            assert_eq!(e.condition(), "not-well-formed");
        }
        for doc in ["hello", "GET / HTTP/1.1\r\n", "</stream:stream>", "\u{0}"] {
            let e = error_of(doc);
            assert!(matches!(e, FrameError::NotWellFormed(_)), "{doc}: {e:?}");
        }
    }

    #[test]
    fn text_between_stanzas_is_bad_format() {
        let e = error_after_header("<presence/>hello");
        assert!(matches!(e, FrameError::BadFormat(_)), "{e:?}");
        assert_eq!(e.condition(), "bad-format");
        let e = error_after_header("<![CDATA[x]]>");
        assert!(matches!(e, FrameError::BadFormat(_)), "{e:?}");
    }

    #[test]
    fn invalid_utf8() {
        for body in [
            &b"<message><body>\xff</body></message>"[..],
            b"<message a='\xc3'/>",
            b"\xff",
            b"<m\xe9ssage/>",
        ] {
            let mut input = HEADER.as_bytes().to_vec();
            input.extend_from_slice(body);
            let out = check_with(&input, Limits::default());
            assert!(
                matches!(out.error, Some(FrameError::NotWellFormed(_))),
                "{body:?}: {out:?}"
            );
        }
        let out = check_with(
            b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' a='\xff'>",
            Limits::default(),
        );
        assert!(
            matches!(out.error, Some(FrameError::NotWellFormed(_))),
            "{out:?}"
        );
    }

    #[test]
    fn oversize_is_rejected_before_the_element_completes() {
        // The header is bounded by the same limit, so it must fit.
        let limits = Limits {
            max_stanza_bytes: 300,
            max_depth: 64,
        };
        let stanza = format!("<message><body>{}</body></message>", "x".repeat(1000));
        let mut framer = Framer::new(limits);
        framer.push(HEADER.as_bytes()).unwrap();
        assert!(matches!(
            framer.next_frame(),
            Ok(Some(Frame::StreamOpen(_)))
        ));
        let mut failed_at = None;
        for (i, b) in stanza.bytes().enumerate() {
            framer.push(&[b]).unwrap();
            if let Err(e) = framer.next_frame() {
                assert!(matches!(e, FrameError::PolicyViolation(_)), "{e:?}");
                assert_eq!(e.condition(), "policy-violation");
                failed_at = Some(i);
                break;
            }
        }
        assert_eq!(
            failed_at,
            Some(300),
            "the 301st byte of the element trips the limit"
        );
        // Dead after the error, and the buffer is gone.
        assert!(framer.push(b"<presence/>").is_err());
        assert_eq!(framer.buffered(), 0);

        // Exactly at the limit is fine; one more byte is not.
        let exact = format!("<m>{}</m>", "x".repeat(300 - 7));
        assert_eq!(exact.len(), 300);
        let input = format!("{HEADER}{exact}");
        assert_eq!(check_with(input.as_bytes(), limits).error, None);
        let input = format!("{HEADER}{exact}").replacen("<m>", "<m >", 1);
        assert!(matches!(
            check_with(input.as_bytes(), limits).error,
            Some(FrameError::PolicyViolation(_))
        ));
        // The header is bounded too.
        let big_header = format!("<stream:stream a='{}'", "x".repeat(300));
        assert!(matches!(
            check_with(big_header.as_bytes(), limits).error,
            Some(FrameError::PolicyViolation(_))
        ));
    }

    #[test]
    fn too_deep() {
        let limits = Limits {
            max_stanza_bytes: 1000,
            max_depth: 3,
        };
        let ok = format!("{HEADER}<a><b><c/></b></a>");
        assert_eq!(check_with(ok.as_bytes(), limits).error, None);
        let deep = format!("{HEADER}<a><b><c><d/></c></b></a>");
        let e = check_with(deep.as_bytes(), limits).error;
        assert!(matches!(e, Some(FrameError::PolicyViolation(_))), "{e:?}");
        // Siblings do not add depth.
        let wide = format!("{HEADER}<a><b><c/><c/></b><b><c/></b></a>");
        assert_eq!(check_with(wide.as_bytes(), limits).error, None);
    }

    #[test]
    fn buffered_counts_bytes_after_the_last_frame() {
        let mut framer = Framer::new(Limits::default());
        framer
            .push(format!("{HEADER}<starttls xmlns='{TLS}'/><iq").as_bytes())
            .unwrap();
        assert!(matches!(
            framer.next_frame(),
            Ok(Some(Frame::StreamOpen(_)))
        ));
        assert!(
            matches!(framer.next_frame(), Ok(Some(Frame::Element(e))) if e.is("starttls", TLS))
        );
        assert_eq!(
            framer.buffered(),
            3,
            "a peer pipelining past STARTTLS is visible"
        );
        assert_eq!(framer.next_frame(), Ok(None));
        assert_eq!(framer.buffered(), 3);
        framer.push(b"/>  ").unwrap();
        assert_eq!(framer.buffered(), 7);
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::Element(_)))));
        assert_eq!(framer.buffered(), 2);
        assert_eq!(framer.next_frame(), Ok(None));
        assert_eq!(framer.buffered(), 0, "skipped whitespace is consumed");
    }

    #[test]
    fn idle_framer_is_small() {
        let mut framer = Framer::new(Limits::default());
        framer
            .push(
                format!(
                    "{HEADER}<message><body>{}</body></message> ",
                    "x".repeat(50_000)
                )
                .as_bytes(),
            )
            .unwrap();
        while let Ok(Some(_)) = framer.next_frame() {}
        assert_eq!(framer.buffered(), 0);
        assert_eq!(framer.buf.capacity(), 0, "buffer released when idle");
        let total = std::mem::size_of::<Framer>() + framer.heap_bytes();
        assert!(total < 350, "idle framer costs {total} bytes");
    }

    #[test]
    fn big_stanza_one_byte_at_a_time() {
        // Smoke test for linear scanning: 200 kB in single-byte pushes.
        let stanza = format!("<message><body>{}</body></message>", "y".repeat(200_000));
        let mut framer = Framer::new(Limits::default());
        framer.push(HEADER.as_bytes()).unwrap();
        assert!(matches!(
            framer.next_frame(),
            Ok(Some(Frame::StreamOpen(_)))
        ));
        let mut got = None;
        for b in stanza.bytes() {
            framer.push(&[b]).unwrap();
            if let Some(frame) = framer.next_frame().unwrap() {
                got = Some(frame);
            }
        }
        let Some(Frame::Element(e)) = got else {
            panic!("no element")
        };
        assert_eq!(
            e.get_child("body", "jabber:client").map(|b| b.text().len()),
            Some(200_000)
        );
    }

    #[test]
    fn serializer_round_trip_through_the_framer() {
        let body = "<message to='a@b' id='x&apos;&quot;&lt;&gt;&amp;'><body>1 &lt; 2 &amp;&amp; 3 &gt; 2 ]]&gt; &#13;</body>\
                    <x xmlns='jabber:x:data' type='submit'><field var='a'><value>&#9;tab</value></field></x>\
                    <stream:error/></message>";
        let parsed = one(body);
        let written = String::from_utf8(parsed.to_bytes_in("jabber:client")).unwrap();
        assert!(
            written.starts_with("<message "),
            "no xmlns when equal to the stream's: {written}"
        );
        assert!(written.contains("<x xmlns='jabber:x:data'"));
        assert!(written.contains("<error xmlns='http://etherx.jabber.org/streams'/>"));
        assert_eq!(one(&written), parsed);
        assert_eq!(Element::parse(&parsed.to_string()), Ok(parsed));
    }

    #[test]
    fn random_splits_of_a_long_corpus() {
        let mut corpus = String::from("<?xml version='1.0'?>\n");
        corpus.push_str(HEADER);
        for i in 0..40 {
            corpus.push_str(&format!(
                "<message id='m{i}' to=\"b@x/r>\"><body>n&#x{:x};&amp;<![CDATA[<{i}>]]></body>\
                 <thread xmlns='urn:t' xml:lang='en'>t</thread></message> \n\
                 <iq type='result' id='{i}'><query xmlns='jabber:iq:roster'><item jid='c{i}@x'/></query></iq>\
                 <stream:features/>",
                i + 0x41
            ));
        }
        corpus.push_str("</stream:stream>");
        let input = corpus.as_bytes();
        let whole = run(&[input], Limits::default());
        assert_eq!(whole.error, None);
        assert_eq!(whole.frames.len(), 2 + 40 * 3);

        // xorshift64*: deterministic, no dependencies.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move |bound: usize| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound as u64) as usize
        };
        for round in 0..200 {
            let max_chunk = [1, 3, 17, 200, 5000][round % 5];
            let mut chunks = Vec::new();
            let mut rest = input;
            while !rest.is_empty() {
                let (a, b) = rest.split_at((1 + next(max_chunk)).min(rest.len()));
                chunks.push(a);
                rest = b;
            }
            assert_eq!(run(&chunks, Limits::default()), whole, "round {round}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        // Mutations of a valid stream: every outcome is fine except a panic.
        let base =
            format!("{HEADER}<message a='1'><b>&amp;<![CDATA[x]]></b></message></stream:stream>");
        let mut state: u64 = 12345;
        for _ in 0..3000 {
            let mut input = base.clone().into_bytes();
            for _ in 0..3 {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let i = (state >> 33) as usize % input.len();
                let b = b"<>/'\"&;![]?= x:\xff\xc3\x00"[(state >> 20) as usize % 18];
                input[i] = b;
            }
            let _ = run(&[&input], Limits::default());
            let bytes: Vec<&[u8]> = input.chunks(7).collect();
            let _ = run(&bytes, Limits::default());
        }
    }
}
