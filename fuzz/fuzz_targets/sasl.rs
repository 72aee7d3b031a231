//! SASL message parsing on the server side (src/sasl): SCRAM client-first and client-final
//! for every mechanism, PLAIN, and the stored credential encoding.
//!
//! Input: one control byte (mechanism, channel binding, whether the user exists), then the
//! client-first message, a 0xff byte, the client-final message. Invariants: no panic; an
//! unknown user never authenticates; stored credentials that decode encode back to the same
//! bytes.
#![no_main]

use std::sync::OnceLock;

use kith::sasl::{
    decode_creds, derive_creds_with_salt, encode_creds, plain_parse, scram_start, CbInfo, Hash,
    Mechanism, ScramCreds,
};
use libfuzzer_sys::fuzz_target;

fn creds() -> &'static [ScramCreds; 3] {
    static CREDS: OnceLock<[ScramCreds; 3]> = OnceLock::new();
    CREDS.get_or_init(|| {
        // One iteration: the fuzzer is after the parser, not PBKDF2.
        let make = |h| derive_creds_with_salt("pencil", h, 1, b"saltsaltsalt").expect("creds");
        [make(Hash::Sha1), make(Hash::Sha256), make(Hash::Sha512)]
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = plain_parse(data);
    if let Ok(decoded) = decode_creds(data) {
        assert_eq!(
            encode_creds(&decoded),
            data,
            "credential encoding is not canonical"
        );
    }

    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let hash = [Hash::Sha1, Hash::Sha256, Hash::Sha512][usize::from(control % 3)];
    let plus = control & 4 != 0;
    let cb = if control & 8 != 0 {
        CbInfo {
            exporter: Some(vec![7; 32]),
            server_end_point: Some(vec![9; 32]),
        }
    } else {
        CbInfo::none()
    };
    let known = control & 16 != 0;
    let (first, fin) = match rest.iter().position(|&b| b == 0xff) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(need) = scram_start(Mechanism::scram(hash, plus), control & 32 != 0, &cb, first) else {
        return;
    };
    let creds = known
        .then(|| creds().iter().find(|c| c.hash == hash))
        .flatten();
    let (wait, _server_first) = need.server_first_with_nonce(creds, "3rfcNHYJY1ZVvWVs7j");
    let outcome = wait.finish(fin);
    assert!(
        known || outcome.is_err(),
        "a SCRAM exchange for an unknown user succeeded"
    );
});
