//! XEP-0215 External Service Discovery: the STUN/TURN server of `[turn]` (kith's built-in one,
//! `crate::turn`, by default; or an external coturn), with time-limited credentials in coturn's
//! shared-secret scheme ("TURN REST API", draft-uberti-behave-turn-rest-00): username
//! `expiry:user@domain`, password `base64(HMAC-SHA1(secret, username))`. The TURN server checks
//! them with the same secret and never talks to kith. With no server (`enabled = false` and no
//! `host`) nothing is answered or advertised.

use base64::Engine as _;

use crate::jid::FullJid;
use crate::router::{bounce, deliver_reply};
use crate::server::Server;
use crate::stanza::{self, ns, Condition};
use crate::xml::Element;

/// A TURN username and password valid until `expires` (Unix seconds).
#[derive(Debug, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    pub expires: u64,
}

/// coturn's `use-auth-secret` credentials for `user`, valid for `ttl_secs` from `now`.
pub fn credentials(secret: &str, user: &str, now: u64, ttl_secs: u64) -> Credentials {
    let expires = now.saturating_add(ttl_secs);
    let username = format!("{expires}:{user}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let tag = ring::hmac::sign(&key, username.as_bytes());
    Credentials {
        username,
        password: base64::engine::general_purpose::STANDARD.encode(tag.as_ref()),
        expires,
    }
}

/// The iq handler for `urn:xmpp:extdisco:2` addressed to the server.
pub fn handle(srv: &Server, from: &FullJid, iq: Element) {
    let turn = &srv.config.turn;
    let (Some(server), Some(secret), Some(payload)) = (
        turn.advertised(srv.domain()),
        turn.secret.as_deref(),
        iq.first_child(),
    ) else {
        return bounce(srv, &iq, Condition::ServiceUnavailable.into());
    };
    if iq.attr("type") != Some("get") {
        return bounce(srv, &iq, Condition::BadRequest.into());
    }
    let creds = credentials(
        secret,
        from.to_bare().as_ref(),
        crate::time::now_unix(),
        turn.ttl.as_secs(),
    );
    let all = services(&server, &creds);
    let reply = match payload.name() {
        // §3.1, with the optional `type` filter of §3.2.
        "services" => {
            let mut q = Element::new("services", ns::EXTDISCO);
            for s in all {
                if payload
                    .attr("type")
                    .is_none_or(|t| s.attr("type") == Some(t))
                {
                    q.push_child(s);
                }
            }
            q
        }
        // §3.3: credentials for one service, named by host and type (and port).
        "credentials" => {
            let Some(wanted) = payload.get_child("service", ns::EXTDISCO) else {
                return bounce(srv, &iq, Condition::BadRequest.into());
            };
            let same = |s: &Element, a: &str| wanted.attr(a).is_none_or(|v| s.attr(a) == Some(v));
            let found: Vec<Element> = all
                .into_iter()
                .filter(|s| s.attr("username").is_some())
                .filter(|s| same(s, "host") && same(s, "type") && same(s, "port"))
                .collect();
            if found.is_empty() {
                return bounce(srv, &iq, Condition::ItemNotFound.into());
            }
            let mut q = Element::new("credentials", ns::EXTDISCO);
            for s in found {
                q.push_child(s);
            }
            q
        }
        _ => return bounce(srv, &iq, Condition::ServiceUnavailable.into()),
    };
    deliver_reply(srv, stanza::iq_result(&iq, Some(reply)));
}

/// STUN (UDP and TCP), TURN (UDP and TCP) and, when configured, TURN over TLS, on
/// `(host, port, tls_port)`.
fn services(server: &(String, u16, Option<u16>), creds: &Credentials) -> Vec<Element> {
    let (host, port, tls_port) = server;
    let service = |typ: &str, transport: &str, port: u16| {
        Element::new("service", ns::EXTDISCO)
            .with_attr("type", typ)
            .with_attr("host", host.as_str())
            .with_attr("port", port.to_string())
            .with_attr("transport", transport)
    };
    let with_creds = |s: Element| {
        s.with_attr("username", creds.username.as_str())
            .with_attr("password", creds.password.as_str())
            .with_attr("expires", crate::time::rfc3339(creds.expires))
            .with_attr("restricted", "1")
    };
    let mut out = vec![
        service("stun", "udp", *port),
        service("stun", "tcp", *port),
        with_creds(service("turn", "udp", *port)),
        with_creds(service("turn", "tcp", *port)),
    ];
    if let Some(tls) = tls_port {
        out.push(with_creds(service("turns", "tcp", *tls)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coturn_rest_credentials() {
        // Reference value computed with:
        // printf '%s' '1700086400:alice@example.org' | openssl dgst -sha1 -hmac 'north' -binary | base64
        let c = credentials("north", "alice@example.org", 1_700_000_000, 86_400);
        assert_eq!(c.username, "1700086400:alice@example.org");
        assert_eq!(c.expires, 1_700_086_400);
        assert_eq!(c.password, "plPZYuF9WYw8ProirmfsL1geV6s=");
    }
}
