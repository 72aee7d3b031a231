//! **Pure.** The per-session stanza rate limit: a token bucket, time passed in.
//!
//! A client may send `burst` stanzas at once and `rate` per second after that. One that
//! keeps sending faster than that is flooding (a bot gone wrong, a hostile client): its
//! session ends with `policy-violation`, so one account cannot starve the others. Prosody
//! throttles reads instead (`mod_limits`); a stream error is what the operator and the
//! client's log can see, and a real client never comes near the default limits.

use std::time::Instant;

#[derive(Debug)]
pub struct Bucket {
    /// Stanzas per second; 0 means no limit.
    rate: u32,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Bucket {
        Bucket {
            rate,
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: now,
        }
    }

    /// Takes a token for one stanza; false when there is none left (the client floods).
    pub fn take(&mut self, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        if now > self.last {
            let elapsed = (now - self.last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * f64::from(self.rate)).min(self.burst);
            self.last = now;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10, 5, t0);
        assert!((0..5).all(|_| b.take(t0)));
        assert!(!b.take(t0));
        // 100 ms later one more token has arrived, and only one.
        let t1 = t0 + Duration::from_millis(100);
        assert!(b.take(t1));
        assert!(!b.take(t1));
        // A long pause refills up to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(60);
        assert!((0..5).all(|_| b.take(t2)));
        assert!(!b.take(t2));
    }

    #[test]
    fn a_steady_client_below_the_rate_is_never_refused() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10, 1, t0);
        for i in 1..1000 {
            assert!(b.take(t0 + Duration::from_millis(100 * i)));
        }
    }

    #[test]
    fn rate_zero_is_unlimited() {
        let t0 = Instant::now();
        let mut b = Bucket::new(0, 1, t0);
        assert!((0..100_000).all(|_| b.take(t0)));
    }

    #[test]
    fn time_going_backwards_does_not_panic_or_refill() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = Bucket::new(10, 1, t0);
        assert!(b.take(t0));
        assert!(!b.take(t0 - Duration::from_secs(5)));
    }
}
