//! XEP-0484 FAST tokens: issued after a password login to a client identified by its SASL2
//! `<user-agent id>`, used for one-round-trip logins (`sasl::ht`), rotated, and revoked when
//! the password changes or the account goes.
//!
//! Per client there are two slots, as XEP-0484 §6 suggests: `new` (issued, not yet used) and
//! `current`. A login with the `new` token promotes it and retires the old one, so a client
//! that missed the rotation (connection lost before `<success/>`) can still log in with its
//! old token. Tokens live in the account's kv area: the server needs them as HMAC keys, so
//! they can't be stored hashed; they are random, short-lived and worthless elsewhere.

use base64::Engine as _;

use crate::jid::BareJid;
use crate::sasl::ht::Ht;
use crate::server::Server;
use crate::xml::Element;

/// The kv key of an account's tokens (`accounts::passwd` clears it).
pub const KV_KEY: &str = "fast";
const NS: &str = "urn:kith:fast";
/// How long a token is valid.
pub const TTL_SECS: u64 = 21 * 86_400;
/// A token used with less than this left is replaced in the same `<success/>`.
const ROTATE_BELOW_SECS: u64 = 14 * 86_400;
/// Clients (devices) remembered per account; the oldest is forgotten beyond this.
const MAX_CLIENTS: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Token {
    secret: String,
    mech: Ht,
    expiry: u64,
}

#[derive(Clone, Debug, Default)]
struct ClientTokens {
    id: String,
    current: Option<Token>,
    new: Option<Token>,
}

/// A token handed to the client.
pub struct Issued {
    pub token: String,
    pub expiry: u64,
}

/// The outcome of a FAST login.
pub enum Verified {
    Ok { responder: Vec<u8>, rotate: bool },
    Failed,
}

/// Issues a token for `client` (into the `new` slot; unused older `new` tokens are replaced).
pub async fn issue(srv: &Server, user: &BareJid, client: &str, mech: Ht) -> Option<Issued> {
    let _lock = srv.lock_account(user).await;
    let mut all = load(srv, user).await;
    let token = Token {
        secret: random_token()?,
        mech,
        expiry: crate::time::now_unix() + TTL_SECS,
    };
    match all.iter_mut().find(|c| c.id == client) {
        Some(c) => c.new = Some(token.clone()),
        None => {
            if all.len() >= MAX_CLIENTS {
                all.remove(0);
            }
            all.push(ClientTokens {
                id: client.to_string(),
                current: None,
                new: Some(token.clone()),
            });
        }
    }
    save(srv, user, &all).await.then_some(Issued {
        token: token.secret,
        expiry: token.expiry,
    })
}

/// Checks a FAST login by `client` with mechanism `mech` and channel-binding data `cb`.
/// `invalidate` (the client logging out) removes the token it used.
pub async fn verify(
    srv: &Server,
    user: &BareJid,
    client: &str,
    mech: Ht,
    cb: &[u8],
    proof: &[u8],
    invalidate: bool,
) -> Verified {
    let _lock = srv.lock_account(user).await;
    let mut all = load(srv, user).await;
    let now = crate::time::now_unix();
    let Some(c) = all.iter_mut().find(|c| c.id == client) else {
        return Verified::Failed;
    };
    let fits = |t: &Option<Token>| {
        t.as_ref().is_some_and(|t| {
            t.mech == mech && t.expiry > now && crate::sasl::ht::verify(&t.secret, cb, proof)
        })
    };
    let promoted = fits(&c.new);
    let used = if promoted {
        // The client has the newest token: the older one is retired (XEP-0484 §3.4).
        c.current = c.new.take();
        c.current.clone()
    } else if fits(&c.current) {
        c.current.clone()
    } else {
        return Verified::Failed;
    };
    let Some(used) = used else {
        return Verified::Failed;
    };
    if invalidate {
        c.current = None;
    }
    let rotate = !invalidate && used.expiry.saturating_sub(now) < ROTATE_BELOW_SECS;
    // Most FAST logins change nothing; a synced write each time would cost more than the
    // round trips FAST saves (measured with scripts/bench-c2s --compare-logins).
    if (promoted || invalidate) && !save(srv, user, &all).await {
        return Verified::Failed;
    }
    Verified::Ok {
        responder: crate::sasl::ht::responder(&used.secret, cb),
        rotate,
    }
}

/// Forgets every token of the account (password changed: devices must log in again).
pub async fn revoke_all(srv: &Server, user: &BareJid) {
    let _lock = srv.lock_account(user).await;
    if let Err(e) = srv.store.kv_set(user.as_ref(), KV_KEY, None).await {
        log::error!("store: cannot revoke the FAST tokens of {user}: {e}");
    }
}

fn random_token() -> Option<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes).ok()?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

async fn load(srv: &Server, user: &BareJid) -> Vec<ClientTokens> {
    let bytes = match srv.store.kv_get(user.as_ref(), KV_KEY).await {
        Ok(Some(b)) => b,
        Ok(None) => return Vec::new(),
        Err(e) => {
            log::error!("store: cannot read the FAST tokens of {user}: {e}");
            return Vec::new();
        }
    };
    let Some(root) = std::str::from_utf8(&bytes)
        .ok()
        .and_then(|s| Element::parse(s).ok())
    else {
        log::warn!(
            "store: unreadable FAST tokens of {user}; the devices will log in with their passwords"
        );
        return Vec::new();
    };
    root.children()
        .filter(|c| c.is("client", NS))
        .filter_map(|c| {
            let slot = |name: &str| {
                let t = c.get_child(name, NS)?;
                Some(Token {
                    secret: t.attr("secret")?.to_string(),
                    mech: Ht::from_name(t.attr("mech")?)?,
                    expiry: t.attr("expiry")?.parse().ok()?,
                })
            };
            Some(ClientTokens {
                id: c.attr("id")?.to_string(),
                current: slot("current"),
                new: slot("new"),
            })
        })
        .collect()
}

async fn save(srv: &Server, user: &BareJid, all: &[ClientTokens]) -> bool {
    let mut root = Element::new("fast", NS);
    for c in all
        .iter()
        .filter(|c| c.current.is_some() || c.new.is_some())
    {
        let mut el = Element::new("client", NS).with_attr("id", c.id.as_str());
        for (name, t) in [("current", &c.current), ("new", &c.new)] {
            if let Some(t) = t {
                el.push_child(
                    Element::new(name, NS)
                        .with_attr("secret", t.secret.as_str())
                        .with_attr("mech", t.mech.name())
                        .with_attr("expiry", t.expiry.to_string()),
                );
            }
        }
        root.push_child(el);
    }
    match srv
        .store
        .kv_set(user.as_ref(), KV_KEY, Some(root.to_bytes_in("")))
        .await
    {
        Ok(()) => true,
        Err(e) => {
            log::error!("store: cannot save the FAST tokens of {user}: {e}");
            false
        }
    }
}
