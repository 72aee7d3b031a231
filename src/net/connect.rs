//! Connecting to a host that has several addresses, as Happy Eyeballs (RFC 8305) says: the
//! families alternate, IPv6 first, and each next attempt starts when the previous one fails
//! or after a short delay, without cancelling it; the first connection made wins. A peer
//! whose IPv6 is broken then costs a quarter of a second, not a whole connect timeout.
//!
//! `race` takes the connect function as a parameter, so the ordering and timing are tested
//! with fake connections and no sockets.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

/// RFC 8305 §5 recommends 250 ms between attempts.
pub const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// RFC 8305 §4: alternates address families, starting with the family of the first address
/// (the resolver puts IPv6 first); the order within a family is kept.
pub fn interleave(ips: &[IpAddr]) -> Vec<IpAddr> {
    let Some(first) = ips.first() else {
        return Vec::new();
    };
    let (mut a, mut b): (Vec<IpAddr>, Vec<IpAddr>) =
        ips.iter().partition(|ip| ip.is_ipv6() == first.is_ipv6());
    let mut out = Vec::with_capacity(ips.len());
    a.reverse();
    b.reverse();
    while !a.is_empty() || !b.is_empty() {
        out.extend(a.pop());
        out.extend(b.pop());
    }
    out
}

/// Connects to the first of `addrs` that answers: attempts start in order, each when the one
/// before failed or after `delay`, and run side by side. Returns the connection and its
/// address, or the last error when all failed.
pub async fn race<T, F, Fut>(
    addrs: &[SocketAddr],
    delay: Duration,
    connect: F,
) -> io::Result<(T, SocketAddr)>
where
    F: Fn(SocketAddr) -> Fut,
    Fut: Future<Output = io::Result<T>>,
{
    let mut next = 0;
    let mut running: Vec<(SocketAddr, Pin<Box<Fut>>)> = Vec::new();
    let mut timer = smol::Timer::never();
    let mut start_now = true;
    let mut last_err = io::Error::new(io::ErrorKind::NotFound, "no address to connect to");
    futures_lite::future::poll_fn(move |cx| loop {
        let delay_passed = Pin::new(&mut timer).poll(cx).is_ready();
        if (start_now || delay_passed) && next < addrs.len() {
            let addr = addrs[next];
            next += 1;
            running.push((addr, Box::pin(connect(addr))));
            timer.set_after(delay);
            start_now = false;
            // Poll the new timer (so it wakes us) and the new attempt.
            continue;
        }
        let mut i = 0;
        while i < running.len() {
            match running[i].1.as_mut().poll(cx) {
                Poll::Ready(Ok(conn)) => return Poll::Ready(Ok((conn, running[i].0))),
                Poll::Ready(Err(e)) => {
                    last_err = io::Error::new(e.kind(), format!("{}: {e}", running[i].0));
                    drop(running.swap_remove(i));
                    start_now = true;
                }
                Poll::Pending => i += 1,
            }
        }
        if start_now && next < addrs.len() {
            continue;
        }
        if running.is_empty() {
            let e = std::mem::replace(&mut last_err, io::ErrorKind::NotFound.into());
            return Poll::Ready(Err(e));
        }
        return Poll::Pending;
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::time::Instant;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn families_alternate_from_the_first() {
        let v6a = ip("2001:db8::1");
        let v6b = ip("2001:db8::2");
        let v4a = ip("192.0.2.1");
        let v4b = ip("192.0.2.2");
        let v4c = ip("192.0.2.3");
        assert_eq!(
            interleave(&[v6a, v6b, v4a, v4b, v4c]),
            vec![v6a, v4a, v6b, v4b, v4c]
        );
        assert_eq!(interleave(&[v4a, v4b, v6a]), vec![v4a, v6a, v4b]);
        assert_eq!(interleave(&[v4a]), vec![v4a]);
        assert!(interleave(&[]).is_empty());
    }

    /// Each fake address takes `ms` and then connects (`ok`) or fails.
    fn fake(plan: &[(u16, u64, bool)]) -> Vec<(SocketAddr, u64, bool)> {
        plan.iter()
            .map(|&(port, ms, ok)| (SocketAddr::from(([127, 0, 0, 1], port)), ms, ok))
            .collect()
    }

    fn run(
        plan: &[(SocketAddr, u64, bool)],
        delay_ms: u64,
    ) -> (io::Result<u16>, Vec<(u16, u128)>, Duration) {
        let started = Instant::now();
        let log = RefCell::new(Vec::new());
        let result = smol::block_on(race(
            &plan.iter().map(|p| p.0).collect::<Vec<_>>(),
            Duration::from_millis(delay_ms),
            |addr| {
                log.borrow_mut()
                    .push((addr.port(), started.elapsed().as_millis()));
                let &(_, ms, ok) = plan.iter().find(|p| p.0 == addr).unwrap();
                async move {
                    smol::Timer::after(Duration::from_millis(ms)).await;
                    if ok {
                        Ok(addr.port())
                    } else {
                        Err(io::ErrorKind::ConnectionRefused.into())
                    }
                }
            },
        ));
        (
            result.map(|(port, addr)| {
                assert_eq!(port, addr.port());
                port
            }),
            log.into_inner(),
            started.elapsed(),
        )
    }

    #[test]
    fn a_slow_first_address_does_not_hold_up_a_working_second() {
        // The first address hangs (broken IPv6); the second answers 20 ms after it starts.
        let (r, log, took) = run(&fake(&[(1, 5_000, true), (2, 20, true)]), 100);
        assert_eq!(r.unwrap(), 2);
        assert_eq!(log.len(), 2);
        assert!(
            log[1].1 >= 100,
            "the second starts after the delay: {log:?}"
        );
        assert!(took < Duration::from_millis(1_000), "took {took:?}");
    }

    #[test]
    fn a_failure_starts_the_next_at_once() {
        let (r, log, took) = run(
            &fake(&[(1, 10, false), (2, 10, false), (3, 10, true)]),
            10_000,
        );
        assert_eq!(r.unwrap(), 3);
        assert_eq!(log.iter().map(|l| l.0).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(took < Duration::from_millis(2_000), "took {took:?}");
    }

    #[test]
    fn the_first_to_connect_wins_even_if_started_earlier() {
        // 1 is slow but started first; 2 starts at 50 ms and connects at 60 ms.
        let (r, _, _) = run(&fake(&[(1, 300, true), (2, 10, true)]), 50);
        assert_eq!(r.unwrap(), 2);
        let (r, log, _) = run(&fake(&[(1, 10, true), (2, 10, true)]), 50);
        assert_eq!(r.unwrap(), 1);
        assert_eq!(
            log.len(),
            1,
            "no second attempt when the first connects in time"
        );
    }

    #[test]
    fn all_failing_gives_the_last_error_with_its_address() {
        let (r, log, _) = run(&fake(&[(1, 5, false), (2, 5, false)]), 10);
        let e = r.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert!(e.to_string().contains("127.0.0.1:2"), "{e}");
        assert_eq!(log.len(), 2);
        let (r, _, _) = run(&[], 10);
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
