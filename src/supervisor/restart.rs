//! When to restart a dead worker: back-off for workers that die young, and
//! the crash-loop limit (systemd's StartLimitBurst / StartLimitIntervalSec).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A worker that lived less than this "died young" and its replacement waits.
pub const YOUNG: Duration = Duration::from_secs(2);
/// The first back-off delay; it doubles per young death up to [`MAX_DELAY`].
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest back-off delay.
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// Tracks unexpected worker deaths.
#[derive(Debug)]
pub struct RestartPolicy {
    burst: usize,
    window: Duration,
    deaths: VecDeque<Instant>,
    delay: Duration,
    next_spawn: Option<Instant>,
}

/// What to do after an unexpected death.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Restart, no earlier than the given instant.
    RestartAt(Instant),
    /// More than `burst` deaths within `window`: stop the service.
    CrashLoop {
        /// Deaths counted in the window.
        deaths: usize,
    },
}

impl RestartPolicy {
    /// At most `burst` deaths within `window` are tolerated.
    pub fn new(burst: usize, window: Duration) -> RestartPolicy {
        RestartPolicy {
            burst,
            window,
            deaths: VecDeque::new(),
            delay: Duration::ZERO,
            next_spawn: None,
        }
    }

    /// Records an unexpected death of a worker that ran for `uptime`.
    pub fn died(&mut self, now: Instant, uptime: Duration) -> Verdict {
        self.deaths.push_back(now);
        while let Some(&t) = self.deaths.front() {
            if now.duration_since(t) > self.window {
                self.deaths.pop_front();
            } else {
                break;
            }
        }
        if self.deaths.len() > self.burst {
            return Verdict::CrashLoop {
                deaths: self.deaths.len(),
            };
        }
        if uptime < YOUNG {
            self.delay = (self.delay * 2).clamp(FIRST_DELAY, MAX_DELAY);
        } else {
            self.delay = Duration::ZERO;
        }
        let at = now + self.delay;
        self.next_spawn = Some(at);
        Verdict::RestartAt(at)
    }

    /// The current back-off delay (zero when none applies).
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// Called while workers run: once one has stayed up [`YOUNG`], the
    /// back-off resets.
    pub fn worker_stable(&mut self) {
        self.delay = Duration::ZERO;
    }

    /// The earliest instant a new worker may start.
    pub fn next_spawn(&self) -> Option<Instant> {
        self.next_spawn
    }

    /// True when spawning is allowed at `now`.
    pub fn may_spawn(&self, now: Instant) -> bool {
        self.next_spawn.is_none_or(|t| now >= t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn young_deaths_back_off_doubling_up_to_the_cap() {
        let mut p = RestartPolicy::new(100, Duration::from_secs(10));
        let t0 = Instant::now();
        let mut delays = Vec::new();
        for i in 0..8 {
            let now = t0 + Duration::from_millis(i);
            assert!(matches!(
                p.died(now, Duration::from_millis(10)),
                Verdict::RestartAt(_)
            ));
            delays.push(p.delay());
        }
        assert_eq!(delays[0], FIRST_DELAY);
        assert_eq!(delays[1], FIRST_DELAY * 2);
        assert_eq!(delays[2], FIRST_DELAY * 4);
        assert_eq!(*delays.last().unwrap(), MAX_DELAY);
    }

    #[test]
    fn a_worker_that_lived_long_restarts_at_once() {
        let mut p = RestartPolicy::new(5, Duration::from_secs(10));
        let now = Instant::now();
        p.died(now, Duration::from_millis(1));
        assert_eq!(
            p.died(now, Duration::from_secs(60)),
            Verdict::RestartAt(now)
        );
        assert!(p.may_spawn(now));
    }

    #[test]
    fn more_than_burst_deaths_in_the_window_is_a_crash_loop() {
        let mut p = RestartPolicy::new(5, Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..5 {
            let v = p.died(t0 + Duration::from_secs(i), Duration::from_secs(3));
            assert!(matches!(v, Verdict::RestartAt(_)), "death {i}");
        }
        assert_eq!(
            p.died(t0 + Duration::from_secs(5), Duration::from_secs(3)),
            Verdict::CrashLoop { deaths: 6 }
        );
    }

    #[test]
    fn deaths_outside_the_window_are_forgotten() {
        let mut p = RestartPolicy::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..6 {
            let v = p.died(t0 + Duration::from_secs(11 * i), Duration::from_secs(3));
            assert!(matches!(v, Verdict::RestartAt(_)));
        }
    }
}
