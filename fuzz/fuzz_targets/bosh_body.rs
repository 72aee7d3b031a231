//! XEP-0124/0206 BOSH request bodies and the rid window (src/http/bosh.rs, pure parts).
//!
//! Input: a request body. Invariants: no panic; a parsed rid is below 2^53 (so a browser's
//! number holds it); a session's wait is capped; the window never accepts a rid twice.
#![no_main]

use kith::http::bosh::{parse_body, Kind, RidCheck, Window, MAX_WAIT};
use kith::xml::Limits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let limits = Limits {
        max_stanza_bytes: 4096,
        max_depth: 16,
    };
    let Ok(req) = parse_body(text, limits) else {
        return;
    };
    assert!(req.rid < 1 << 53);
    if let Kind::Create { wait, .. } = &req.kind {
        assert!(*wait <= MAX_WAIT);
    }
    // Drive a window with rids taken from the input's bytes around the parsed one.
    let mut window = Window::new(req.rid);
    let mut expected = req.rid.saturating_add(1);
    for &b in data.iter().take(64) {
        let rid = req.rid.saturating_add(u64::from(b % 8));
        match window.check(rid) {
            RidCheck::Next => {
                assert_eq!(rid, expected, "the window accepted a rid out of order");
                window.advance();
                expected += 1;
            }
            _ => assert_ne!(rid, expected, "the window refused the next rid"),
        }
    }
});
