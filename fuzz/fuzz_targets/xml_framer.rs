//! The stream framer (src/xml/framer.rs) fed arbitrary bytes in arbitrary splits.
//!
//! Input: one control byte, then the stream bytes. Bit 0 of the control byte prepends a real
//! c2s stream header (so the fuzzer spends its time on stanzas, not on finding the header);
//! the rest seeds the split points. Invariants checked:
//! - no panic, whatever the bytes;
//! - the frames and the error do not depend on how the bytes were split (the framer's own
//!   invariant, which its unit tests check on fixed inputs);
//! - an element, written out and parsed again, is the same element;
//! - a frame is never larger than the stanza limit allows.
#![no_main]

use kith::xml::{Element, Frame, Framer, Limits};
use libfuzzer_sys::fuzz_target;

const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='example.test' version='1.0'>";

// Small limits, so the fuzzer reaches them.
const LIMITS: Limits = Limits {
    max_stanza_bytes: 4096,
    max_depth: 16,
};

fuzz_target!(|data: &[u8]| {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let mut input = Vec::with_capacity(HEADER.len() + body.len());
    if control & 1 == 1 {
        input.extend_from_slice(HEADER);
    }
    input.extend_from_slice(body);

    let whole = run(&input, &[input.len()]);
    let mut sizes = Vec::new();
    let mut seed = u32::from(control >> 1) + 1;
    let mut left = input.len();
    while left > 0 {
        // A small xorshift: split points that depend on the input, so crashes replay.
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let n = (seed as usize % 7 + 1).min(left);
        sizes.push(n);
        left -= n;
    }
    let split = run(&input, &sizes);
    assert_eq!(whole, split, "frames differ when the input is split");

    for frame in whole.0 {
        if let Frame::Element(e) = frame {
            round_trip(&e);
        }
    }
});

type Outcome = (Vec<Frame>, Option<String>);

fn run(input: &[u8], sizes: &[usize]) -> Outcome {
    let mut framer = Framer::new(LIMITS);
    let mut frames = Vec::new();
    let mut at = 0;
    for &n in sizes {
        let chunk = &input[at..at + n];
        at += n;
        if let Err(e) = framer.push(chunk) {
            return (frames, Some(format!("{e:?}")));
        }
        loop {
            match framer.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(format!("{e:?}"))),
            }
        }
        assert!(framer.buffered() <= input.len());
    }
    (frames, None)
}

fn round_trip(e: &Element) {
    let bytes = e.to_bytes_in("");
    let text = std::str::from_utf8(&bytes).expect("the serializer writes UTF-8");
    let again = Element::parse(text).unwrap_or_else(|err| {
        panic!("re-parsing our own output failed: {err:?}\n{text}");
    });
    assert_eq!(*e, again, "the element changed on a round trip\n{text}");
}
