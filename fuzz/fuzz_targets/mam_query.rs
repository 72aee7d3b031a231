//! XEP-0313 MAM queries and preferences with their XEP-0004 data form and XEP-0059 RSM set
//! (src/stanza/mam.rs), and the other stanza payload parsers that take a client's element:
//! XEP-0388 SASL2 `<authenticate/>` and XEP-0363 upload slot requests.
//!
//! Input: one element as XML (inputs that are not one element are dropped early, the
//! framer has its own target). Invariants: no panic; a parsed query's page size is within
//! the cap; archive ids round-trip; preferences written out parse back to themselves.
#![no_main]

use kith::services::upload;
use kith::session::sasl2;
use kith::stanza::mam::{
    decode_id, encode_id, parse_prefs, parse_query, prefs_element, should_archive, MAX_PAGE,
};
use kith::xml::Element;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(id) = decode_id(text) {
        assert_eq!(encode_id(id), text, "archive ids are not canonical");
    }
    let Ok(el) = Element::parse(text) else {
        return;
    };
    if let Ok(q) = parse_query(&el) {
        assert!(q.page_size() <= MAX_PAGE);
    }
    if let Ok(p) = parse_prefs(&el) {
        let again = parse_prefs(&prefs_element(&p)).expect("our own prefs parse");
        assert_eq!(p, again, "prefs changed on a round trip");
    }
    let _ = should_archive(&el);
    let _ = sasl2::Request::parse(&el);
    for req in std::iter::once(&el).chain(el.children()) {
        if let Ok(r) = upload::parse_request(req) {
            assert!(upload::valid_file_name(&r.name));
        }
    }
});
