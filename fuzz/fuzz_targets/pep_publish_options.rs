//! XEP-0060 §7.1.5 publish-options (src/services/pep.rs): the form read from a client's
//! `<pubsub/>`, a new node's configuration made from it, and the precondition check
//! against a stored node.
//!
//! Input: one `<pubsub/>` element as XML. Invariants: no panic; a configuration made from
//! options satisfies them (when each option is given once); a configuration survives the
//! store's representation.
#![no_main]

use std::collections::HashSet;

use kith::services::pep::{node_config, publish_options, Config};
use kith::xml::Element;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(pubsub) = Element::parse(text) else {
        return;
    };
    let options = publish_options(&pubsub);
    let stored = Config::default().to_node();
    let _ = node_config(Some(&stored), &options);
    let Ok(cfg) = node_config(None, &options) else {
        return;
    };
    assert_eq!(
        Config::from_node(&cfg.to_node()),
        cfg,
        "config lost in the store"
    );
    let vars: HashSet<&str> = options.iter().map(|(v, _)| v.as_str()).collect();
    if vars.len() == options.len() {
        assert!(
            cfg.satisfies(&options),
            "a node made from options does not satisfy them: {options:?}"
        );
        assert!(node_config(Some(&cfg.to_node()), &options).is_ok());
    }
});
