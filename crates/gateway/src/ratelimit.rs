//! GoTrue's request rate limits: a token bucket per endpoint group and client IP, holding at most 30
//! requests and refilling at the configured rate (`/token`: 150 per 5 minutes; non-anonymous
//! `/signup`: 30 per 5 minutes; anonymous sign-ins: 30 per hour). An empty bucket answers 429
//! `over_request_rate_limit`.
//!
//! Hand-written rather than `governor`: GoTrue's buckets start full and their parameters are a
//! rate per period plus a burst, which is a dozen lines of arithmetic over a map; the refill is a
//! pure function of the elapsed time, so tests drive it with explicit instants.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fleetbench_stack::project::AuthRateLimits;

/// GoTrue's bucket capacity for every limiter.
pub const BURST: f64 = 30.0;

/// One bucket's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

impl Rate {
    pub fn per(count: u32, period: Duration) -> Rate {
        Rate {
            per_second: f64::from(count) / period.as_secs_f64(),
            burst: BURST,
        }
    }
}

/// The endpoint groups GoTrue limits separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// Every `/token` grant.
    Token,
    /// `/signup` with an email (GoTrue's OTP limiter).
    Signup,
    /// `/signup` without one.
    Anonymous,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub token: Rate,
    pub signup: Rate,
    pub anonymous: Rate,
}

impl Limits {
    pub fn from_config(c: &AuthRateLimits) -> Limits {
        let five_min = Duration::from_secs(300);
        Limits {
            token: Rate::per(c.token_refresh, five_min),
            signup: Rate::per(c.sign_in_sign_ups, five_min),
            anonymous: Rate::per(c.anonymous_users, Duration::from_secs(3600)),
        }
    }

    fn rate(&self, group: Group) -> Rate {
        match group {
            Group::Token => self.token,
            Group::Signup => self.signup,
            Group::Anonymous => self.anonymous,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Refills for the time since the last take, then takes one token if there is one.
    fn take(&mut self, rate: Rate, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The buckets of one gateway; `None` limits let everything through.
pub struct Limiter {
    limits: Mutex<Option<Limits>>,
    buckets: Mutex<HashMap<(Group, String), Bucket>>,
}

impl Limiter {
    pub fn new(limits: Option<Limits>) -> Limiter {
        Limiter {
            limits: Mutex::new(limits),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a request of `group` from `client` may proceed at `now`.
    pub fn allow_at(&self, group: Group, client: &str, now: Instant) -> bool {
        let Some(rate) = self.limits().map(|l| l.rate(group)) else {
            return true;
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets
            .entry((group, client.to_string()))
            .or_insert(Bucket {
                tokens: rate.burst,
                at: now,
            })
            .take(rate, now)
    }

    /// The limits in force.
    pub fn limits(&self) -> Option<Limits> {
        self.limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// New limits from now on; each bucket keeps its tokens and refills at the new rate.
    pub fn set_limits(&self, limits: Option<Limits>) {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner()) = limits;
    }

    pub fn allow(&self, group: Group, client: &str) -> bool {
        self.allow_at(group, client, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosted() -> Limiter {
        Limiter::new(Some(Limits::from_config(&AuthRateLimits::default())))
    }

    #[test]
    fn token_bucket_allows_the_burst_then_half_a_request_per_second() {
        let l = hosted();
        let t0 = Instant::now();
        let allowed = (0..100)
            .filter(|_| l.allow_at(Group::Token, "10.0.0.1", t0))
            .count();
        assert_eq!(allowed, 30);
        // 150 per 300 s: one token every 2 s.
        assert!(!l.allow_at(Group::Token, "10.0.0.1", t0 + Duration::from_millis(1900)));
        assert!(l.allow_at(Group::Token, "10.0.0.1", t0 + Duration::from_millis(2000)));
        assert!(!l.allow_at(Group::Token, "10.0.0.1", t0 + Duration::from_millis(2100)));
        // Another client and another group have buckets of their own.
        assert!(l.allow_at(Group::Token, "10.0.0.2", t0));
        assert!(l.allow_at(Group::Signup, "10.0.0.1", t0));
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(3600);
        let refilled = (0..100)
            .filter(|_| l.allow_at(Group::Token, "10.0.0.1", later))
            .count();
        assert_eq!(refilled, 30);
    }

    #[test]
    fn anonymous_sign_ins_refill_per_hour_and_unlimited_allows_all() {
        let l = hosted();
        let t0 = Instant::now();
        assert_eq!(
            (0..40)
                .filter(|_| l.allow_at(Group::Anonymous, "c", t0))
                .count(),
            30
        );
        assert!(!l.allow_at(Group::Anonymous, "c", t0 + Duration::from_secs(119)));
        assert!(l.allow_at(Group::Anonymous, "c", t0 + Duration::from_secs(120)));
        let open = Limiter::new(None);
        assert!((0..10_000).all(|_| open.allow_at(Group::Token, "c", t0)));
    }
}
