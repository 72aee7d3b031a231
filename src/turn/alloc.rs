//! TURN allocation state (RFC 8656 §2.2-2.5) and the rules around it: REST-API credentials,
//! nonces, which peers may be relayed to, permission and channel lifetimes, the per-allocation
//! bandwidth bucket.
//!
//! **Pure**: no sockets, no clock (every function that needs the time takes it), so expiry is
//! tested with injected time. `server.rs` owns the sockets and holds one [`Allocation`] per
//! client 5-tuple.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use base64::Engine as _;

/// RFC 8656 §2.3: permissions last 300 s, refreshed by CreatePermission or ChannelBind.
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// RFC 8656 §2.5: channel bindings last 600 s.
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// RFC 8656 §7.2: the default allocation lifetime, and the most we grant.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
pub const MAX_LIFETIME: Duration = Duration::from_secs(3600);
/// How long a nonce we handed out stays good before a 438 asks for a fresh one.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(600);

/// The password of coturn's REST-API scheme: base64(HMAC-SHA1(secret, username)).
pub fn rest_password(secret: &str, username: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, username.as_bytes()))
}

/// Why a username was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsernameError {
    /// Not `expiry:user`.
    Malformed,
    /// The expiry is in the past.
    Expired,
}

/// The user of a REST-API username `"<expiry_unix>:<user>"`, if it has not expired at
/// `now_unix`.
pub fn check_username(username: &str, now_unix: u64) -> Result<&str, UsernameError> {
    let (expiry, user) = username.split_once(':').ok_or(UsernameError::Malformed)?;
    let expiry: u64 = expiry.parse().map_err(|_| UsernameError::Malformed)?;
    if user.is_empty() {
        return Err(UsernameError::Malformed);
    }
    if expiry < now_unix {
        return Err(UsernameError::Expired);
    }
    Ok(user)
}

/// Stateless nonces: the issue time and a MAC over it under a per-process key, so no table
/// of handed-out nonces can be filled by a flood of unauthenticated requests.
pub struct Nonces {
    key: ring::hmac::Key,
}

/// What a nonce check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceCheck {
    Valid,
    /// Ours, but older than [`NONCE_LIFETIME`]: answer 438.
    Stale,
    /// Not ours at all: also 438 (RFC 8489 §9.2.4 treats both alike).
    Invalid,
}

impl Nonces {
    pub fn new(secret: &[u8]) -> Nonces {
        Nonces {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
        }
    }

    pub fn issue(&self, now_unix: u64) -> String {
        let t = format!("{now_unix:016x}");
        let mac = ring::hmac::sign(&self.key, t.as_bytes());
        let tag: String = mac.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{t}{tag}")
    }

    pub fn check(&self, nonce: &str, now_unix: u64) -> NonceCheck {
        if nonce.len() != 32 || !nonce.is_ascii() {
            return NonceCheck::Invalid;
        }
        let (t, tag) = nonce.split_at(16);
        let want: String = ring::hmac::sign(&self.key, t.as_bytes()).as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if !crate::turn::stun::ct_eq(want.as_bytes(), tag.as_bytes()) {
            return NonceCheck::Invalid;
        }
        match u64::from_str_radix(t, 16) {
            Ok(issued) if now_unix.saturating_sub(issued) < NONCE_LIFETIME.as_secs() => {
                NonceCheck::Valid
            }
            Ok(_) => NonceCheck::Stale,
            Err(_) => NonceCheck::Invalid,
        }
    }
}

/// Whether relaying to `ip` is allowed (RFC 8656 §21.3: a TURN server must not become a way
/// into the networks behind it). Unspecified, multicast and broadcast addresses are never
/// allowed; loopback, private (RFC 1918, ULA), link-local, CGNAT and the addresses in `own`
/// only with `allow_private`. (The server passes its own addresses per datagram, where it can
/// still let through traffic to its own relayed addresses: two callers on one server.)
pub fn peer_allowed(ip: IpAddr, allow_private: bool, own: &[IpAddr]) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let never = match ip {
        IpAddr::V4(v4) => {
            v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.octets()[0] == 0
                || v4.octets()[0] >= 240
        }
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
    };
    if never {
        return false;
    }
    if allow_private {
        return true;
    }
    let internal = match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                // 100.64.0.0/10, carrier-grade NAT (RFC 6598).
                || (o[0] == 100 && (o[1] & 0xC0) == 64)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_loopback()
                // fc00::/7 unique local, fe80::/10 link-local.
                || (s[0] & 0xFE00) == 0xFC00
                || (s[0] & 0xFFC0) == 0xFE80
        }
    };
    !internal && !own.contains(&ip)
}

/// A token bucket: `rate` bytes per second, bursts up to one second's worth.
#[derive(Debug)]
pub struct Bucket {
    rate: u64,
    tokens: u64,
    at: Instant,
}

impl Bucket {
    pub fn new(rate: u64, now: Instant) -> Bucket {
        Bucket {
            rate,
            tokens: rate,
            at: now,
        }
    }

    /// Takes `n` bytes if there is room; a datagram that does not fit is dropped by the caller.
    pub fn take(&mut self, n: usize, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at);
        let refill = (elapsed.as_micros().min(u128::from(u64::MAX)) as u64)
            .saturating_mul(self.rate)
            / 1_000_000;
        if refill > 0 {
            self.tokens = self.tokens.saturating_add(refill).min(self.rate);
            self.at = now;
        }
        let n = n as u64;
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// Why a ChannelBind was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindError {
    /// Not a channel number (`stun::CHANNELS`).
    BadNumber,
    /// The channel is bound to another peer, or the peer to another channel (RFC 8656 §11.2).
    Conflict,
}

/// One allocation: the relayed transport address and what the client may do with it.
#[derive(Debug)]
pub struct Allocation {
    /// The user part of the username (`user@domain`), for quotas and the log.
    pub user: String,
    /// The long-term key the client authenticated with; later requests must use it too.
    pub username: String,
    pub key: Vec<u8>,
    pub relayed: SocketAddr,
    pub expires: Instant,
    /// Peer IP -> expiry.
    permissions: HashMap<IpAddr, Instant>,
    /// Channel number -> (peer, expiry).
    channels: HashMap<u16, (SocketAddr, Instant)>,
    /// Distinct peers ever permitted, for the closing log line.
    pub peers: usize,
    /// Client to peers.
    pub bucket: Bucket,
    /// Peers to client.
    pub inbound: Bucket,
    /// The transaction id of the Allocate that created it, to answer a retransmission.
    pub allocate_tid: [u8; 12],
    pub created: Instant,
}

impl Allocation {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        user: &str,
        username: &str,
        key: Vec<u8>,
        relayed: SocketAddr,
        lifetime: Duration,
        bandwidth: u64,
        allocate_tid: [u8; 12],
        now: Instant,
    ) -> Allocation {
        Allocation {
            user: user.to_string(),
            username: username.to_string(),
            key,
            relayed,
            expires: now + lifetime,
            permissions: HashMap::new(),
            channels: HashMap::new(),
            peers: 0,
            bucket: Bucket::new(bandwidth, now),
            inbound: Bucket::new(bandwidth, now),
            allocate_tid,
            created: now,
        }
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        now >= self.expires
    }

    pub fn refresh(&mut self, lifetime: Duration, now: Instant) {
        self.expires = now + lifetime;
    }

    /// Installs or refreshes a permission for the peer's IP (ports do not matter, §9).
    pub fn permit(&mut self, ip: IpAddr, now: Instant) {
        if self
            .permissions
            .insert(ip, now + PERMISSION_LIFETIME)
            .is_none()
        {
            self.peers += 1;
        }
    }

    pub fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.get(&ip).is_some_and(|e| now < *e)
    }

    /// Binds `channel` to `peer` (or refreshes the binding), with a permission for the peer.
    pub fn bind_channel(
        &mut self,
        channel: u16,
        peer: SocketAddr,
        now: Instant,
    ) -> Result<(), BindError> {
        if !crate::turn::stun::CHANNELS.contains(&channel) {
            return Err(BindError::BadNumber);
        }
        if let Some((bound, _)) = self.channels.get(&channel) {
            if *bound != peer {
                return Err(BindError::Conflict);
            }
        }
        if self
            .channels
            .iter()
            .any(|(c, (p, e))| *p == peer && *c != channel && now < *e)
        {
            return Err(BindError::Conflict);
        }
        self.channels
            .insert(channel, (peer, now + CHANNEL_LIFETIME));
        self.permit(peer.ip(), now);
        Ok(())
    }

    /// The peer of a live channel.
    pub fn channel_peer(&self, channel: u16, now: Instant) -> Option<SocketAddr> {
        self.channels
            .get(&channel)
            .filter(|(_, e)| now < *e)
            .map(|(p, _)| *p)
    }

    /// The live channel bound to `peer`.
    pub fn peer_channel(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        self.channels
            .iter()
            .find(|(_, (p, e))| *p == peer && now < *e)
            .map(|(c, _)| *c)
    }

    /// Drops expired permissions and channels. A channel number stays reserved for 5 more
    /// minutes after it expires (RFC 8656 §12), so it is kept until then.
    pub fn prune(&mut self, now: Instant) {
        self.permissions.retain(|_, e| now < *e);
        self.channels
            .retain(|_, (_, e)| now < *e + Duration::from_secs(300));
    }
}

/// The granted lifetime for a requested one (RFC 8656 §7.2).
pub fn granted_lifetime(requested: Option<u32>) -> Duration {
    match requested {
        None => DEFAULT_LIFETIME,
        Some(s) => Duration::from_secs(u64::from(s)).clamp(DEFAULT_LIFETIME, MAX_LIFETIME),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_credentials() {
        // The same reference value as services::extdisco's test.
        assert_eq!(
            rest_password("north", "1700086400:alice@example.org"),
            "plPZYuF9WYw8ProirmfsL1geV6s="
        );
        assert_eq!(
            check_username("1700086400:alice@example.org", 1_700_000_000),
            Ok("alice@example.org")
        );
        assert_eq!(
            check_username("1700086400:alice@example.org", 1_700_086_401),
            Err(UsernameError::Expired)
        );
        for bad in ["alice", "x:alice", "1700086400:", ""] {
            assert_eq!(check_username(bad, 0), Err(UsernameError::Malformed));
        }
    }

    #[test]
    fn nonces() {
        let n = Nonces::new(b"k");
        let nonce = n.issue(1000);
        assert_eq!(n.check(&nonce, 1000), NonceCheck::Valid);
        assert_eq!(n.check(&nonce, 1599), NonceCheck::Valid);
        assert_eq!(n.check(&nonce, 1600), NonceCheck::Stale);
        assert_eq!(
            Nonces::new(b"other").check(&nonce, 1000),
            NonceCheck::Invalid
        );
        let mut forged = nonce.clone();
        forged.replace_range(15..16, "f");
        assert_eq!(n.check(&forged, 1000), NonceCheck::Invalid);
        assert_eq!(n.check("short", 1000), NonceCheck::Invalid);
        assert_eq!(n.check("ééééééééééééééééé", 1000), NonceCheck::Invalid);
    }

    #[test]
    fn forbidden_peers() {
        let own: Vec<IpAddr> = vec!["203.0.113.5".parse().unwrap()];
        for (ip, strict, lax) in [
            ("198.51.100.7", true, true),
            ("2001:db8::1", true, true),
            ("127.0.0.1", false, true),
            ("10.1.2.3", false, true),
            ("172.16.0.1", false, true),
            ("192.168.1.1", false, true),
            ("169.254.0.1", false, true),
            ("100.64.0.1", false, true),
            ("::1", false, true),
            ("fd00::1", false, true),
            ("fe80::1", false, true),
            ("::ffff:192.168.1.1", false, true),
            ("203.0.113.5", false, true),
            ("0.0.0.0", false, false),
            ("::", false, false),
            ("224.0.0.1", false, false),
            ("ff02::1", false, false),
            ("255.255.255.255", false, false),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(peer_allowed(ip, false, &own), strict, "{ip} strict");
            assert_eq!(peer_allowed(ip, true, &own), lax, "{ip} allow_private");
        }
    }

    fn alloc(now: Instant) -> Allocation {
        Allocation::new(
            "alice@example.org",
            "1:alice@example.org",
            vec![0; 16],
            "198.51.100.1:50000".parse().unwrap(),
            DEFAULT_LIFETIME,
            1000,
            [0; 12],
            now,
        )
    }

    #[test]
    fn expiry_with_injected_time() {
        let t0 = Instant::now();
        let mut a = alloc(t0);
        let peer: SocketAddr = "198.51.100.9:4000".parse().unwrap();
        assert!(!a.is_expired(t0 + Duration::from_secs(599)));
        assert!(a.is_expired(t0 + Duration::from_secs(600)));
        a.refresh(Duration::from_secs(1200), t0 + Duration::from_secs(500));
        assert!(!a.is_expired(t0 + Duration::from_secs(1000)));

        a.permit(peer.ip(), t0);
        assert!(a.permitted(peer.ip(), t0 + Duration::from_secs(299)));
        assert!(!a.permitted(peer.ip(), t0 + Duration::from_secs(300)));
        a.permit(peer.ip(), t0 + Duration::from_secs(200));
        assert!(a.permitted(peer.ip(), t0 + Duration::from_secs(499)));
        assert_eq!(a.peers, 1);

        a.bind_channel(0x4000, peer, t0).unwrap();
        assert_eq!(
            a.channel_peer(0x4000, t0 + Duration::from_secs(599)),
            Some(peer)
        );
        assert_eq!(a.channel_peer(0x4000, t0 + Duration::from_secs(600)), None);
        assert_eq!(a.peer_channel(peer, t0), Some(0x4000));
        let other: SocketAddr = "198.51.100.10:4000".parse().unwrap();
        assert_eq!(a.bind_channel(0x4000, other, t0), Err(BindError::Conflict));
        assert_eq!(a.bind_channel(0x4001, peer, t0), Err(BindError::Conflict));
        assert_eq!(a.bind_channel(0x3000, other, t0), Err(BindError::BadNumber));
        a.prune(t0 + Duration::from_secs(1000));
        assert!(!a.permitted(peer.ip(), t0 + Duration::from_secs(1000)));
        assert_eq!(a.channel_peer(0x4000, t0 + Duration::from_secs(1000)), None);
    }

    #[test]
    fn lifetimes_and_bucket() {
        assert_eq!(granted_lifetime(None), DEFAULT_LIFETIME);
        assert_eq!(granted_lifetime(Some(30)), DEFAULT_LIFETIME);
        assert_eq!(granted_lifetime(Some(1800)), Duration::from_secs(1800));
        assert_eq!(granted_lifetime(Some(u32::MAX)), MAX_LIFETIME);

        let t0 = Instant::now();
        let mut b = Bucket::new(1000, t0);
        assert!(b.take(600, t0));
        assert!(!b.take(600, t0));
        assert!(b.take(600, t0 + Duration::from_millis(300)));
        assert!(b.take(1000, t0 + Duration::from_secs(10)));
        assert!(!b.take(1, t0 + Duration::from_secs(10)));
    }
}
