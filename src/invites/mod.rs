//! Invitations (XEP-0401 Easy User Onboarding, XEP-0379 pre-authenticated roster
//! subscription), Snikket-style: `kith invite` makes a random token; the link
//! `https://DOMAIN/invite/TOKEN` opens a page (`page.rs`) with client links, an `xmpp:` URI
//! and its QR code (`qr.rs`), and a form to register in the browser. Clients that know
//! XEP-0401 register with the token in-band (`services::register`).
//!
//! This module owns the token format, the links and URIs, invite creation/listing/revocation
//! and the registration throttle. The account creation itself (shared by in-band and web
//! registration) is `services::register::create_account`. It knows nothing of HTTP or sockets.

pub mod page;
pub mod qr;

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::store::{Invite, Store, StoreError};

/// Random bytes in a token: 144 bits, 24 base64url characters (no padding needed).
const TOKEN_BYTES: usize = 18;
/// The shortest and longest token accepted from a URL or a client; anything else is not a
/// token of ours and is refused without a store lookup.
const TOKEN_LEN: std::ops::RangeInclusive<usize> = 16..=64;

/// A new random token, base64url, starting with a letter or digit: tokens are pasted into
/// command lines (`kith invite revoke TOKEN`, scripts), where a leading `-` reads as an
/// option. Redrawing when the first of 24 characters is `-` or `_` costs a fraction of a bit.
pub fn new_token() -> Result<String, String> {
    use ring::rand::{SecureRandom, SystemRandom};
    let rng = SystemRandom::new();
    for _ in 0..64 {
        let mut bytes = [0u8; TOKEN_BYTES];
        rng.fill(&mut bytes)
            .map_err(|_| "the system random source failed".to_string())?;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        if token.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Ok(token);
        }
    }
    Err("the system random source keeps giving unusable tokens".to_string())
}

/// Whether `s` can be one of our tokens (length and alphabet); checked before any lookup.
pub fn is_token(s: &str) -> bool {
    TOKEN_LEN.contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What `kith invite` (or an ad-hoc command) asks for.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The account that invites (becomes the invitee's contact); `None` for the admin CLI.
    pub created_by: Option<String>,
    pub uses: u32,
    /// `None`: `[invites] expires`.
    pub expires: Option<Duration>,
    pub admin: bool,
    pub groups: Vec<String>,
    pub username: Option<String>,
}

/// Why an invite cannot be used any more (the page says which; 410 Gone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unusable {
    Expired,
    UsedUp,
}

/// Whether `invite` can still create an account at `now` (Unix seconds).
pub fn usable(invite: &Invite, now: u64) -> Result<(), Unusable> {
    if invite.expires_unix < now {
        Err(Unusable::Expired)
    } else if invite.uses_left == 0 {
        Err(Unusable::UsedUp)
    } else {
        Ok(())
    }
}

/// Stores a new invite and returns its token.
pub async fn create(
    store: &Store,
    default_expiry: Duration,
    opts: Options,
    now: u64,
) -> Result<(String, Invite), String> {
    let expires = opts.expires.unwrap_or(default_expiry);
    let invite = Invite {
        created_by: opts.created_by.unwrap_or_default(),
        created_unix: now,
        expires_unix: now.saturating_add(expires.as_secs()),
        uses_left: opts.uses.max(1),
        admin: opts.admin,
        groups: opts.groups,
        username: opts.username,
    };
    let token = new_token()?;
    store
        .invite_add(&token, invite.clone())
        .await
        .map_err(|e| format!("cannot store the invite: {e}"))?;
    Ok((token, invite))
}

/// Every invite still usable at `now`, expired ones removed on the way.
pub async fn list(store: &Store, now: u64) -> Result<Vec<(String, Invite)>, StoreError> {
    store.invites_expire(now).await?;
    let mut all = store.invites().await?;
    all.retain(|(_, i)| usable(i, now).is_ok());
    Ok(all)
}

/// The admin requests about invites and circles that need only the store, shared by the admin
/// socket (server running) and the CLI (server stopped). `None`: not one of them.
/// `invite-create ADMIN(0|1) USES EXPIRES_SECS(or empty) GROUPS(comma-separated) USERNAME FROM`
/// answers the token, the link and the `xmpp:` URI; `invite-list`, `invite-revoke TOKEN`,
/// `circle-list` (lines `CIRCLE\tMEMBER`).
pub async fn admin_request(
    store: &Store,
    config: &crate::config::Config,
    fields: &[&str],
) -> Option<Result<Vec<String>, String>> {
    let now = crate::time::now_unix();
    let domain = config.domain.as_str();
    let r = match fields {
        ["invite-create", admin, uses, expires, groups, username, from] => {
            let parse = || -> Result<Options, String> {
                let from = match *from {
                    "" => None,
                    f => Some(
                        crate::accounts::account_jid(f, domain)
                            .map_err(|e| e.to_string())?
                            .to_string(),
                    ),
                };
                let username = match *username {
                    "" => None,
                    u => Some(
                        crate::accounts::account_jid(u, domain)
                            .map_err(|e| e.to_string())?
                            .node()
                            .unwrap_or_default()
                            .to_string(),
                    ),
                };
                Ok(Options {
                    created_by: from,
                    uses: uses
                        .parse()
                        .map_err(|_| format!("--uses {uses}: not a number"))?,
                    expires: match *expires {
                        "" => None,
                        e => Some(Duration::from_secs(
                            e.parse().map_err(|_| "bad expiry".to_string())?,
                        )),
                    },
                    admin: *admin == "1",
                    groups: groups
                        .split(',')
                        .filter(|g| !g.is_empty())
                        .map(str::to_string)
                        .collect(),
                    username,
                })
            };
            match parse() {
                Ok(opts) => {
                    let inviter = opts.created_by.clone();
                    match create(store, config.invites.expires, opts, now).await {
                        Ok((token, _)) => {
                            log::info!("invites: new invite created");
                            Ok(vec![
                                token.clone(),
                                link(&web_base(config), &token),
                                xmpp_uri(domain, inviter.as_deref(), &token),
                            ])
                        }
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            }
        }
        ["invite-list"] => list(store, now)
            .await
            .map(|all| all.iter().map(|(t, i)| describe(t, i, now)).collect())
            .map_err(|e| e.to_string()),
        ["invite-revoke", token] => match store.invite_remove(token).await {
            Ok(true) => Ok(vec![]),
            Ok(false) => Err(format!("no invite {token}")),
            Err(e) => Err(e.to_string()),
        },
        ["circle-list"] => {
            let mut rows: Vec<String> = config
                .circles
                .iter()
                .flat_map(|c| c.members.iter().map(move |m| (c, m)))
                .filter_map(|(c, m)| {
                    let jid = crate::accounts::account_jid(m, domain).ok()?;
                    Some(format!("{}\t{jid}\t(config)", c.name))
                })
                .collect();
            match store.circle_members().await {
                Ok(members) => {
                    rows.extend(members.into_iter().map(|(c, m)| format!("{c}\t{m}")));
                    rows.sort();
                    Ok(rows)
                }
                Err(e) => Err(e.to_string()),
            }
        }
        _ => return None,
    };
    Some(r)
}

/// The web page of an invite: `BASE/invite/TOKEN`.
pub fn link(base: &str, token: &str) -> String {
    format!("{}/invite/{token}", base.trim_end_matches('/'))
}

/// `https://DOMAIN[:PORT]` or `[http] public_url`: where the invite and registration pages are.
pub fn web_base(config: &crate::config::Config) -> String {
    if let Some(url) = &config.http.public_url {
        return url.trim_end_matches('/').to_string();
    }
    match config.listen.https.first().map_or(443, |a| a.port()) {
        443 => format!("https://{}", config.domain),
        p => format!("https://{}:{p}", config.domain),
    }
}

/// The XEP-0401 URI a client opens: `xmpp:DOMAIN?register;preauth=TOKEN` for an account
/// invite; with an inviter, `xmpp:INVITER?roster;preauth=TOKEN;ibr=y` (§5, XEP-0379), which
/// tells the client it may register on the inviter's server and add the inviter.
pub fn xmpp_uri(domain: &str, inviter: Option<&str>, token: &str) -> String {
    match inviter.filter(|i| !i.is_empty()) {
        Some(jid) => format!("xmpp:{jid}?roster;preauth={token};ibr=y"),
        None => format!("xmpp:{domain}?register;preauth={token}"),
    }
}

/// Parses a duration like `7d`, `12h`, `30m` or `1w` for `--expires`.
pub fn parse_expiry(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("'{s}': expected a number and a unit, like 7d or 12h"))?;
    let secs = match unit {
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("'{s}': unknown unit; use m, h, d or w (like 7d)")),
    };
    match n.checked_mul(secs) {
        Some(t) if t > 0 && t <= 365 * 86_400 => Ok(Duration::from_secs(t)),
        _ => Err(format!("'{s}': choose between 1m and 365d")),
    }
}

/// One line per invite for `kith invite list`: token, what it makes, uses, expiry.
pub fn describe(token: &str, i: &Invite, now: u64) -> String {
    let mut what = vec![if i.admin { "admin account" } else { "account" }.to_string()];
    if let Some(u) = &i.username {
        what.push(format!("username {u}"));
    }
    if !i.created_by.is_empty() {
        what.push(format!("from {}", i.created_by));
    }
    if !i.groups.is_empty() {
        what.push(format!("circles {}", i.groups.join(",")));
    }
    let left = i.expires_unix.saturating_sub(now);
    format!(
        "{token}\t{}\t{} use(s) left\texpires in {}",
        what.join(", "),
        i.uses_left,
        human(left)
    )
}

fn human(secs: u64) -> String {
    match secs {
        s if s >= 86_400 => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}m", s.div_ceil(60)),
    }
}

/// Open registration limits: one account per IP address per `per_ip`, and at most
/// `GLOBAL_MAX` accounts in any `GLOBAL_WINDOW` from anywhere (a spammer with many addresses).
/// Invites are not throttled: the inviter already decided.
pub struct Throttle {
    inner: Mutex<ThrottleState>,
}

const GLOBAL_MAX: usize = 20;
const GLOBAL_WINDOW: Duration = Duration::from_secs(3600);

#[derive(Default)]
struct ThrottleState {
    last_by_ip: HashMap<IpAddr, Instant>,
    recent: VecDeque<Instant>,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            inner: Mutex::new(ThrottleState::default()),
        }
    }
}

impl Throttle {
    /// Takes a registration slot for `ip` at `now`; `false` means "too soon, try later".
    pub fn admit(&self, ip: IpAddr, per_ip: Duration, now: Instant) -> bool {
        let mut st = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        st.last_by_ip
            .retain(|_, at| now.saturating_duration_since(*at) < per_ip);
        while st
            .recent
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= GLOBAL_WINDOW)
        {
            st.recent.pop_front();
        }
        if st.last_by_ip.contains_key(&ip) || st.recent.len() >= GLOBAL_MAX {
            return false;
        }
        if !per_ip.is_zero() {
            st.last_by_ip.insert(ip, now);
        }
        st.recent.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_never_start_like_an_option() {
        for _ in 0..2000 {
            let t = new_token().unwrap();
            assert!(t.starts_with(|c: char| c.is_ascii_alphanumeric()), "{t}");
            assert!(is_token(&t));
        }
    }

    #[test]
    fn tokens_are_long_random_and_url_safe() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
        assert!(is_token(&a) && is_token(&b));
        assert!(!is_token("short"));
        assert!(!is_token("aaaaaaaaaaaaaaaaaaaa/../x"));
        assert!(!is_token("aaaaaaaaaaaaaaaaaaaa<b>"));
        assert!(!is_token(&"a".repeat(65)));
    }

    #[test]
    fn uris_follow_xep_0401() {
        assert_eq!(
            xmpp_uri("example.org", None, "TOK"),
            "xmpp:example.org?register;preauth=TOK"
        );
        assert_eq!(
            xmpp_uri("example.org", Some("alice@example.org"), "TOK"),
            "xmpp:alice@example.org?roster;preauth=TOK;ibr=y"
        );
        assert_eq!(
            link("https://example.org/", "TOK"),
            "https://example.org/invite/TOK"
        );
    }

    #[test]
    fn expiry_parsing() {
        assert_eq!(parse_expiry("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_expiry("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_expiry("1w"), Ok(Duration::from_secs(604_800)));
        assert!(parse_expiry("7").is_err());
        assert!(parse_expiry("0d").is_err());
        assert!(parse_expiry("400d").is_err());
        assert!(parse_expiry("99999999999999999999d").is_err());
    }

    #[test]
    fn usable_until_expired_or_used_up() {
        let i = Invite {
            created_by: String::new(),
            created_unix: 0,
            expires_unix: 100,
            uses_left: 1,
            admin: false,
            groups: vec![],
            username: None,
        };
        assert_eq!(usable(&i, 100), Ok(()));
        assert_eq!(usable(&i, 101), Err(Unusable::Expired));
        let used = Invite { uses_left: 0, ..i };
        assert_eq!(usable(&used, 50), Err(Unusable::UsedUp));
    }

    #[test]
    fn throttle_per_ip_and_globally() {
        let t = Throttle::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let five = Duration::from_secs(300);
        let t0 = Instant::now();
        assert!(t.admit(a, five, t0));
        assert!(!t.admit(a, five, t0 + Duration::from_secs(299)));
        assert!(t.admit(b, five, t0 + Duration::from_secs(1)));
        assert!(t.admit(a, five, t0 + Duration::from_secs(300)));
        // The global cap holds however many addresses are used.
        let g = Throttle::default();
        for n in 0..GLOBAL_MAX {
            let ip = IpAddr::from([10, 0, (n / 256) as u8, (n % 256) as u8]);
            assert!(g.admit(ip, five, t0));
        }
        assert!(!g.admit(IpAddr::from([10, 1, 0, 0]), five, t0));
        assert!(g.admit(IpAddr::from([10, 1, 0, 0]), five, t0 + GLOBAL_WINDOW));
        // throttle = 0s: no per-IP limit.
        let z = Throttle::default();
        assert!(z.admit(a, Duration::ZERO, t0));
        assert!(z.admit(a, Duration::ZERO, t0));
    }
}
