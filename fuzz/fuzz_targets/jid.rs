//! JID preparation (src/jid.rs, RFC 7622 with PRECIS).
//!
//! Invariants: no panic; preparation is idempotent (a prepared JID or part parses to
//! itself); the parts of a parsed JID put back together are the JID.
#![no_main]

use kith::jid::{prepare_domain, prepare_localpart, prepare_resource, BareJid, FullJid, Jid};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(j) = Jid::parse(s) {
        let again = Jid::parse(j.as_str()).expect("a prepared JID parses");
        assert_eq!(j, again, "preparation is not idempotent");
        let mut joined = String::new();
        if let Some(n) = j.node() {
            joined.push_str(n);
            joined.push('@');
        }
        joined.push_str(j.domain());
        if let Some(r) = j.resource() {
            joined.push('/');
            joined.push_str(r);
        }
        assert_eq!(joined, j.as_str());
        assert_eq!(j.bare_str(), j.to_bare().as_str());
        match j.clone().try_into_full() {
            Ok(f) => assert_eq!(FullJid::parse(f.as_str()).ok().as_ref(), Some(&f)),
            Err(b) => assert_eq!(BareJid::parse(b.as_str()).ok(), Some(b.to_bare())),
        }
    }
    for prepare in [prepare_localpart, prepare_resource, prepare_domain] {
        if let Ok(p) = prepare(s) {
            let again = prepare(&p).expect("a prepared part prepares");
            assert_eq!(p, again, "part preparation is not idempotent");
        }
    }
});
