//! The server-to-server negotiation machines (src/s2s/stream.rs) driven by arbitrary frames
//! from a peer: STARTTLS, SASL EXTERNAL, dialback, stanzas.
//!
//! Input: one control byte (direction, whether TLS is up after STARTTLS, whether the peer's
//! certificate is valid, whether valid certificates are required, whether a dialback
//! verification succeeds), then stream bytes; a NUL byte starts a new stream (what the peer
//! sends after TLS or a SASL restart). Invariants: no panic; an incoming stanza is delivered
//! only after TLS and only if its `from`/`to` domains are a pair authenticated on the stream.
#![no_main]

use kith::jid::Jid;
use kith::s2s::dialback::Secret;
use kith::s2s::stream::{Action, Facts, Incoming, Outgoing, Policy};
use kith::xml::{Frame, Framer, Limits};
use libfuzzer_sys::fuzz_target;

const LOCAL: &str = "local.example";
const REMOTE: &str = "remote.example";

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let policy = Policy {
        local: LOCAL.into(),
        // An incoming stream may also be opened to the MUC service's domain.
        hosted: vec![format!("conference.{LOCAL}")],
        secret: Secret::from_hex(&"ab".repeat(32)).expect("secret"),
        require_valid_certs: control & 8 != 0,
    };
    let cert_ok = control & 2 != 0;
    let valid_for = move |d: &str| cert_ok && d == REMOTE;
    let mut tls = false;
    let frames = |segment: &[u8]| -> Vec<Frame> {
        let mut framer = Framer::new(Limits {
            max_stanza_bytes: 4096,
            max_depth: 16,
        });
        let mut out = Vec::new();
        if framer.push(segment).is_err() {
            return out;
        }
        while let Ok(Some(f)) = framer.next_frame() {
            out.push(f);
        }
        out
    };

    if control & 4 == 0 {
        let mut machine = Incoming::new(policy);
        'segments: for segment in rest.split(|&b| b == 0) {
            for frame in frames(segment) {
                let facts = Facts {
                    tls,
                    peer_cert_valid_for: &valid_for,
                };
                let (next, actions) = machine.handle(frame, facts);
                machine = next;
                for action in actions {
                    match action {
                        Action::Deliver(el) => {
                            assert!(tls, "a stanza was delivered before TLS");
                            let domain = |a| {
                                el.attr(a)
                                    .and_then(|j| Jid::parse(j).ok())
                                    .map(|j| j.domain().to_string())
                            };
                            let pair = (domain("from"), domain("to"));
                            assert!(
                                machine
                                    .authenticated()
                                    .iter()
                                    .any(|(r, l)| pair == (Some(r.clone()), Some(l.clone()))),
                                "delivered from an unauthenticated pair: {el}"
                            );
                        }
                        Action::VerifyDialback {
                            originating,
                            receiving,
                            ..
                        } => {
                            let valid = control & 16 != 0;
                            let (next, _) =
                                machine.dialback_verified(&originating, &receiving, valid);
                            machine = next;
                        }
                        Action::StartTls => {
                            tls = control & 1 != 0;
                            continue 'segments;
                        }
                        Action::RestartStream => continue 'segments,
                        _ => {}
                    }
                }
            }
        }
    } else {
        let (mut machine, _) = Outgoing::start(policy, REMOTE);
        'out: for segment in rest.split(|&b| b == 0) {
            for frame in frames(segment) {
                let facts = Facts {
                    tls,
                    peer_cert_valid_for: &valid_for,
                };
                let (next, actions) = machine.handle(frame, facts);
                machine = next;
                for action in actions {
                    match action {
                        Action::StartTls => {
                            tls = control & 1 != 0;
                            continue 'out;
                        }
                        Action::RestartStream => continue 'out,
                        _ => {}
                    }
                }
            }
        }
    }
});
