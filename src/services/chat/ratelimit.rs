//! Failed-login limits, per account name and per client address.
//!
//! [`Limiter::MAX_FAILURES`] wrong passwords within [`Limiter::WINDOW`]
//! lock the key for [`Limiter::LOCKOUT`]. While locked, a login is refused
//! before its password is checked, so the answer reveals nothing and costs
//! no hashing. A success clears the key.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Failure counts by key (`name:alice`, `addr:127.0.0.1`, `uid:1000`).
#[derive(Debug, Default)]
pub struct Limiter {
    keys: HashMap<String, Entry>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    since: Instant,
    locked_until: Option<Instant>,
}

impl Limiter {
    /// Wrong passwords allowed within the window.
    pub const MAX_FAILURES: u32 = 3;
    /// How long failures are remembered.
    pub const WINDOW: Duration = Duration::from_secs(300);
    /// How long a key stays locked.
    pub const LOCKOUT: Duration = Duration::from_secs(60);
    /// Keys remembered before old ones are pruned.
    const MAX_KEYS: usize = 100_000;

    /// `Err(time left)` while `key` is locked.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        match self.keys.get(key).and_then(|e| e.locked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Records a wrong password for `key`.
    pub fn fail(&mut self, key: &str, now: Instant) {
        if self.keys.len() >= Self::MAX_KEYS {
            self.prune(now);
        }
        let e = self.keys.entry(key.to_string()).or_insert(Entry {
            failures: 0,
            since: now,
            locked_until: None,
        });
        if now.duration_since(e.since) > Self::WINDOW || e.locked_until.is_some_and(|u| u <= now) {
            *e = Entry {
                failures: 0,
                since: now,
                locked_until: None,
            };
        }
        e.failures += 1;
        if e.failures >= Self::MAX_FAILURES {
            e.locked_until = Some(now + Self::LOCKOUT);
        }
    }

    /// Forgets `key` after a successful login.
    pub fn succeed(&mut self, key: &str) {
        self.keys.remove(key);
    }

    fn prune(&mut self, now: Instant) {
        self.keys.retain(|_, e| {
            now.duration_since(e.since) <= Self::WINDOW || e.locked_until.is_some_and(|u| u > now)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_failures_lock_for_the_lockout_then_expire() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        for i in 0..Limiter::MAX_FAILURES {
            assert!(l.check("name:a", t0).is_ok(), "attempt {i}");
            l.fail("name:a", t0);
        }
        let left = l.check("name:a", t0).unwrap_err();
        assert_eq!(left, Limiter::LOCKOUT);
        assert!(l.check("name:b", t0).is_ok(), "other keys are unaffected");
        assert!(l.check("name:a", t0 + Limiter::LOCKOUT).is_ok());
        l.fail("name:a", t0 + Limiter::LOCKOUT);
        assert!(
            l.check("name:a", t0 + Limiter::LOCKOUT).is_ok(),
            "count restarted"
        );
    }

    #[test]
    fn old_failures_and_successes_reset_the_count() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        l.fail("k", t0);
        l.fail("k", t0);
        l.fail("k", t0 + Limiter::WINDOW + Duration::from_secs(1));
        assert!(l
            .check("k", t0 + Limiter::WINDOW + Duration::from_secs(1))
            .is_ok());
        l.fail("k", t0);
        l.succeed("k");
        l.fail("k", t0);
        assert!(l.check("k", t0).is_ok());
    }
}
