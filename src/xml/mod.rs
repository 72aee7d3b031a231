//! The pure XML layer: bytes in, frames out; element trees in, bytes out.
//!
//! An XMPP stream is one endless XML document (RFC 6120 §4). [`Framer`] owns the
//! byte buffer of one direction of one stream and cuts it into [`Frame`]s: the
//! stream header, each complete top-level element, and the stream close. It
//! enforces the stream's limits and RFC 6120 §11 restricted XML *before* any
//! parser sees the bytes. [`Element`] is the owned tree every later layer works
//! on, and it serializes itself back to bytes.
//!
//! This module does no I/O, never awaits and knows nothing of stanzas, JIDs or
//! sessions: the `stanza` layer gives elements meaning and the `session` layer
//! moves bytes. No input may panic it.
//!
//! Files:
//! - `framer.rs`: the incremental scanner (tag boundaries, depth, limits, restricted XML).
//! - `parse.rs`: turns one complete, pre-checked element's text into an [`Element`]
//!   with quick-xml, resolving namespaces against the stream header's declarations.
//! - `element.rs`: the tree, its accessors and its serializer.
//! - `error.rs`: [`FrameError`], each variant one RFC 6120 §4.9.3 stream error condition.

mod element;
mod error;
mod framer;
mod parse;

pub use element::{escape_attr_value, Element, Node};
pub use error::FrameError;
pub use framer::{Frame, Framer, Limits, StreamHeader};

/// The stream namespace of RFC 6120 §4.8.1.
pub const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
/// The namespace bound to the `xml` prefix by definition (Namespaces in XML 1.0 §3).
pub const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";
