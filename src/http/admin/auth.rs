//! Who is signed in to the web admin: browser sessions behind an opaque cookie, their CSRF
//! tokens, and the throttle on failed sign-ins. Time is passed in (seconds), so the rules are
//! tested without waiting; the only side effect is drawing random tokens.
//!
//! Sessions live in memory only: a restart signs everyone out, which for a family server's
//! admin page is a fair price for never writing a bearer credential to disk.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use base64::Engine as _;

use crate::jid::BareJid;

/// A session unused for this long ends.
pub const IDLE_SECS: u64 = 30 * 60;
/// A session ends this long after sign-in, used or not.
pub const MAX_SECS: u64 = 12 * 60 * 60;
/// Failed sign-ins from one address within `WINDOW_SECS` before it must wait.
pub const MAX_FAILURES: usize = 5;
pub const WINDOW_SECS: u64 = 10 * 60;
/// Sessions kept at most; the oldest goes first (a bound on memory a flood of correct
/// sign-ins by a compromised admin could take).
const MAX_SESSIONS: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub jid: BareJid,
    /// Sent in every form and checked on every POST; the cookie alone never authorizes a
    /// change.
    pub csrf: String,
    created: u64,
    used: u64,
    /// What the last action said, shown once on the next page.
    flash: Option<(bool, String)>,
}

#[derive(Default)]
pub struct Auth {
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, Vec<u64>>>,
}

/// 256 random bits, URL-safe base64: cookie values and CSRF tokens.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    // The system RNG failing is not something a request can recover from; a fixed value
    // would be far worse than refusing, so the token is then empty and never matches.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        return String::new();
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Compares secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() || a.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Auth {
    /// Starts a session for `jid`; returns its cookie value.
    pub fn sign_in(&self, jid: BareJid, now: u64) -> String {
        let token = random_token();
        let mut map = lock(&self.sessions);
        map.retain(|_, s| live(s, now));
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            token.clone(),
            Session {
                jid,
                csrf: random_token(),
                created: now,
                used: now,
                flash: None,
            },
        );
        token
    }

    /// The live session behind a cookie value, marked as used.
    pub fn session(&self, cookie: &str, now: u64) -> Option<Session> {
        let mut map = lock(&self.sessions);
        let s = map.get_mut(cookie)?;
        if !live(s, now) {
            map.remove(cookie);
            return None;
        }
        s.used = now;
        Some(s.clone())
    }

    /// Leaves a message (`ok` or an error) for the session's next page.
    pub fn flash(&self, cookie: &str, ok: bool, text: String) {
        if let Some(s) = lock(&self.sessions).get_mut(cookie) {
            s.flash = Some((ok, text));
        }
    }

    pub fn take_flash(&self, cookie: &str) -> Option<(bool, String)> {
        lock(&self.sessions).get_mut(cookie)?.flash.take()
    }

    pub fn sign_out(&self, cookie: &str) {
        lock(&self.sessions).remove(cookie);
    }

    /// Ends every session of `jid` (the account was deleted or lost its admin rights).
    pub fn sign_out_everywhere(&self, jid: &BareJid) {
        lock(&self.sessions).retain(|_, s| &s.jid != jid);
    }

    /// Whether `ip` may try to sign in now; `Err(seconds)` to wait otherwise.
    pub fn may_try(&self, ip: IpAddr, now: u64) -> Result<(), u64> {
        let mut map = lock(&self.failures);
        let list = map.entry(ip).or_default();
        list.retain(|t| now.saturating_sub(*t) < WINDOW_SECS);
        if list.len() < MAX_FAILURES {
            return Ok(());
        }
        let oldest = list.iter().min().copied().unwrap_or(now);
        Err((oldest + WINDOW_SECS).saturating_sub(now).max(1))
    }

    pub fn failed(&self, ip: IpAddr, now: u64) {
        let mut map = lock(&self.failures);
        // Forget addresses whose window has passed, so the table stays small.
        map.retain(|_, l| l.iter().any(|t| now.saturating_sub(*t) < WINDOW_SECS));
        map.entry(ip).or_default().push(now);
    }

    pub fn succeeded(&self, ip: IpAddr) {
        lock(&self.failures).remove(&ip);
    }
}

fn live(s: &Session, now: u64) -> bool {
    now.saturating_sub(s.used) < IDLE_SECS && now.saturating_sub(s.created) < MAX_SECS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> BareJid {
        BareJid::parse("alice@example.org").unwrap()
    }

    #[test]
    fn sessions_expire_when_idle_and_at_their_limit() {
        let auth = Auth::default();
        let c = auth.sign_in(alice(), 1000);
        assert_eq!(c.len(), 43);
        let s = auth.session(&c, 1000 + IDLE_SECS - 1).unwrap();
        assert_eq!(s.jid, alice());
        assert!(
            auth.session(&c, 1000 + 2 * IDLE_SECS - 2).is_some(),
            "use extends"
        );
        assert!(auth.session(&c, 1000 + 3 * IDLE_SECS + 1).is_none());
        assert!(
            auth.session(&c, 1000).is_none(),
            "an expired session is gone"
        );

        let c = auth.sign_in(alice(), 0);
        let mut t = 0;
        while t + IDLE_SECS / 2 < MAX_SECS {
            t += IDLE_SECS / 2;
            assert!(auth.session(&c, t).is_some());
        }
        assert!(auth.session(&c, MAX_SECS).is_none());
    }

    #[test]
    fn unknown_cookies_and_sign_out() {
        let auth = Auth::default();
        assert!(auth.session("nope", 0).is_none());
        assert!(auth.session("", 0).is_none());
        let c = auth.sign_in(alice(), 0);
        let c2 = auth.sign_in(alice(), 0);
        assert_ne!(c, c2);
        assert_ne!(
            auth.session(&c, 0).unwrap().csrf,
            auth.session(&c2, 0).unwrap().csrf
        );
        auth.flash(&c, false, "no".into());
        assert_eq!(auth.take_flash(&c), Some((false, "no".into())));
        assert_eq!(auth.take_flash(&c), None, "shown once");
        auth.sign_out(&c);
        assert!(auth.session(&c, 0).is_none());
        assert!(auth.session(&c2, 0).is_some());
        auth.sign_out_everywhere(&alice());
        assert!(auth.session(&c2, 0).is_none());
    }

    #[test]
    fn failures_throttle_one_address() {
        let auth = Auth::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        for i in 0..MAX_FAILURES as u64 {
            assert!(auth.may_try(ip, 100 + i).is_ok());
            auth.failed(ip, 100 + i);
        }
        assert_eq!(auth.may_try(ip, 110), Err(WINDOW_SECS - 10));
        assert!(auth.may_try(other, 110).is_ok());
        assert!(
            auth.may_try(ip, 100 + WINDOW_SECS).is_ok(),
            "the window passes"
        );
        auth.failed(ip, 2000);
        auth.succeeded(ip);
        assert!(auth.may_try(ip, 2000).is_ok());
    }

    #[test]
    fn secrets_compare() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
        assert!(!same_secret("", ""), "an empty token never matches");
    }
}
