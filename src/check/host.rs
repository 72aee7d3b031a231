//! This machine's own IP addresses, so `kith check` can tell whether DNS records point here.
//!
//! Read from the kernel's tables (`/proc/net/fib_trie` for IPv4, `/proc/net/if_inet6` for
//! IPv6): no extra dependency and no packets sent. The parsers are pure. A machine behind NAT
//! (a home router) sees only private addresses; then the answer is "unsure" and the checks say
//! so instead of failing, unless `[check] public_addresses` or `--public-ip` tells the truth.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The addresses records should point at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostAddresses {
    pub addresses: Vec<IpAddr>,
    /// True when the list is known to hold the public addresses: given by the operator, or
    /// at least one interface address is public.
    pub sure: bool,
}

impl HostAddresses {
    /// The operator's `public` list if any, else the interfaces' addresses.
    pub fn discover(public: &[IpAddr]) -> HostAddresses {
        if !public.is_empty() {
            return HostAddresses {
                addresses: public.to_vec(),
                sure: true,
            };
        }
        let mut addresses = Vec::new();
        if let Ok(text) = std::fs::read_to_string("/proc/net/fib_trie") {
            addresses.extend(parse_fib_trie(&text).into_iter().map(IpAddr::V4));
        }
        if let Ok(text) = std::fs::read_to_string("/proc/net/if_inet6") {
            addresses.extend(parse_if_inet6(&text).into_iter().map(IpAddr::V6));
        }
        let sure = addresses.iter().any(|ip| is_public(*ip));
        HostAddresses { addresses, sure }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.addresses.contains(&ip)
    }

    /// The public ones, for messages ("this server's addresses are …").
    pub fn public(&self) -> Vec<IpAddr> {
        let public: Vec<IpAddr> = self
            .addresses
            .iter()
            .copied()
            .filter(|ip| is_public(*ip))
            .collect();
        if public.is_empty() {
            self.addresses.clone()
        } else {
            public
        }
    }
}

/// Reachable from the internet: not loopback, private (RFC 1918, RFC 4193), link-local,
/// CGNAT (RFC 6598), multicast or unspecified. (Documentation ranges count as public: tests
/// and examples use them as stand-ins for public addresses.)
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || (o[0] == 100 && (64..128).contains(&o[1])))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// The local IPv4 addresses in `/proc/net/fib_trie`: an address line (`|-- 192.0.2.7`)
/// followed by `/32 host LOCAL`.
pub fn parse_fib_trie(text: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let t = line.trim_start_matches([' ', '|', '+', '-']).trim();
        if let Ok(ip) = t.parse::<Ipv4Addr>() {
            last = Some(ip);
        } else if t.contains("host LOCAL") {
            if let Some(ip) = last.take() {
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
    }
    out
}

/// The addresses in `/proc/net/if_inet6`: 32 hex digits first on each line.
pub fn parse_if_inet6(text: &str) -> Vec<Ipv6Addr> {
    text.lines()
        .filter_map(|line| {
            let hex = line.split_whitespace().next()?;
            if hex.len() != 32 {
                return None;
            }
            let n = u128::from_str_radix(hex, 16).ok()?;
            Some(Ipv6Addr::from(n))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fib_trie_local_addresses() {
        let text = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n\
                    \x20    +-- 127.0.0.0/8 2 0 2\n        +-- 127.0.0.0/31 1 0 0\n\
                    \x20          |-- 127.0.0.1\n              /32 host LOCAL\n\
                    \x20    |-- 203.0.113.7\n        /32 host LOCAL\n\
                    \x20    |-- 203.0.113.255\n        /32 link BROADCAST\n\
                    Local:\n     |-- 203.0.113.7\n        /32 host LOCAL\n";
        assert_eq!(
            parse_fib_trie(text),
            vec![Ipv4Addr::LOCALHOST, Ipv4Addr::new(203, 0, 113, 7)]
        );
    }

    #[test]
    fn if_inet6_addresses() {
        let text = "00000000000000000000000000000001 01 80 10 80       lo\n\
                    2a0100000000000000000000000000ff 02 40 00 80     eth0\nbad line\n";
        assert_eq!(
            parse_if_inet6(text),
            vec![Ipv6Addr::LOCALHOST, "2a01::ff".parse::<Ipv6Addr>().unwrap()]
        );
    }

    #[test]
    fn public_or_not() {
        for ip in ["8.8.8.8", "2a01:4f8::1", "203.0.113.7"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.5",
            "100.64.0.1",
            "169.254.1.1",
            "::1",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn given_addresses_are_sure() {
        let given: IpAddr = "127.0.0.1".parse().unwrap();
        let h = HostAddresses::discover(&[given]);
        assert!(h.sure && h.contains(given));
    }
}
