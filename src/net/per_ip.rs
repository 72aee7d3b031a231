//! Open client connections per IP address, so one address (a hostile client, a buggy one
//! reconnecting in a loop) cannot take every file descriptor: `[limits] connections_per_ip`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct PerIp {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection; dropping it frees the place.
#[derive(Debug)]
pub struct Place<'a> {
    table: &'a PerIp,
    ip: IpAddr,
}

impl PerIp {
    /// A place for one more connection from `ip`, or `None` when it already has `max` open
    /// (`max` 0: no limit). IPv4-mapped IPv6 addresses count as their IPv4 address.
    pub fn enter(&self, ip: IpAddr, max: usize) -> Option<Place<'_>> {
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if max != 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(Place { table: self, ip })
    }

    /// Connections open from `ip`.
    pub fn count(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&ip.to_canonical()).copied().unwrap_or(0)
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            // Forget the address, so the table is as large as the open connections.
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_holds_per_address_and_frees_on_drop() {
        let t = PerIp::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let first = t.enter(a, 2).unwrap();
        let second = t.enter(a, 2).unwrap();
        assert!(t.enter(a, 2).is_none());
        assert!(t.enter(b, 2).is_some(), "another address is not affected");
        drop(first);
        assert_eq!(t.count(a), 1);
        let third = t.enter(a, 2).unwrap();
        drop((second, third));
        assert_eq!(t.count(a), 0);
        assert!(t.open.lock().unwrap().is_empty());
    }

    #[test]
    fn mapped_ipv6_counts_as_ipv4() {
        let t = PerIp::default();
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let _p = t.enter(v4, 1).unwrap();
        assert!(t.enter(mapped, 1).is_none());
    }

    #[test]
    fn zero_is_no_limit() {
        let t = PerIp::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let places: Vec<_> = (0..1000).map(|_| t.enter(a, 0).unwrap()).collect();
        assert_eq!(t.count(a), 1000);
        drop(places);
    }
}
