//! Browser form bodies and cookies (src/http/form.rs): what the invite page and the web
//! admin's sign-in read from anyone on the network.
//!
//! Input: one control byte, then a form body (or, with an odd control byte, a `Cookie` header
//! and a name split by NUL). Invariants: no panic; a parsed body's every field survives
//! `encode` and a second parse unchanged; a cookie value is a part of the header.
#![no_main]

use kith::http::form::{cookie, encode, get, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    if control % 2 == 1 {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        let (header, name) = text.split_once('\0').unwrap_or((text, "kith_admin"));
        if let Some(value) = cookie(header, name) {
            assert!(header.contains(value), "{value:?} is not in {header:?}");
        }
        return;
    }
    let Some(fields) = parse(rest) else {
        return;
    };
    let again: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    let reparsed = parse(again.join("&").as_bytes()).expect("an encoded form parses");
    assert_eq!(reparsed, fields, "{again:?}");
    if let Some((k, v)) = fields.first() {
        assert_eq!(get(&fields, k), Some(v.as_str()));
    }
});
