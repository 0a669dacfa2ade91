//! When each connection sends its next request, and when it stops.
//!
//! Closed loop: as soon as the previous reply arrived. Open loop: at fixed
//! intended times (`start + offset + k * period`), staggered across the
//! connections so the total is `--rate`; a late request is sent at once, and
//! its latency still counts from the intended time. A plan never waits: it
//! says when the next request is due, and the event loop's timer wakes the
//! connection then.

use std::time::{Duration, Instant};

use super::{Config, Stop};

/// One connection's schedule.
#[derive(Debug)]
pub(crate) struct Plan {
    start: Instant,
    /// Requests whose (intended) send time is before this are warm-up.
    pub measure_start: Instant,
    /// Duration runs: no request is sent at or after this instant.
    end: Option<Instant>,
    /// Requests runs: this connection's share of the measured requests.
    quota: Option<u64>,
    pace: Option<Pace>,
}

#[derive(Debug)]
struct Pace {
    offset_ns: f64,
    period_ns: f64,
    k: u64,
}

/// What the connection should do next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Send now; latency counts from `intended`; `measured` is false in the warm-up.
    Go { intended: Instant, measured: bool },
    /// Not yet: ask again at this instant.
    Wait(Instant),
    /// This connection is done.
    Stop,
}

impl Plan {
    /// The schedule of connection `idx` of `cfg.connections`, for a run begun at `start`.
    pub fn new(cfg: &Config, idx: usize, start: Instant) -> Plan {
        let conns = cfg.connections as u64;
        let measure_start = start + cfg.warmup;
        let (end, quota) = match cfg.stop {
            Stop::Duration(d) => (Some(measure_start + d), None),
            Stop::Requests(n) => (None, Some(n / conns + u64::from((idx as u64) < n % conns))),
        };
        let pace = cfg.rate.map(|rate| {
            let period_ns = 1e9 * conns as f64 / rate;
            Pace {
                offset_ns: period_ns * idx as f64 / conns as f64,
                period_ns,
                k: 0,
            }
        });
        Plan {
            start,
            measure_start,
            end,
            quota,
            pace,
        }
    }

    /// Duration runs: the instant no request is sent at or after.
    pub fn end(&self) -> Option<Instant> {
        self.end
    }

    /// Whether the next request is due at `now`, or when, or that the
    /// connection is done. `measured_so_far` is how many measured requests
    /// it has made.
    pub fn next(&mut self, now: Instant, measured_so_far: u64) -> Next {
        let intended = match &self.pace {
            None => now,
            Some(p) => {
                let at = p.offset_ns + p.k as f64 * p.period_ns;
                self.start + Duration::from_nanos(at as u64)
            }
        };
        if let Some(end) = self.end {
            // Open loop: also stop at the end when behind schedule, as wrk2 does.
            if intended >= end || now >= end {
                return Next::Stop;
            }
        }
        let measured = intended >= self.measure_start;
        if let (true, Some(q)) = (measured, self.quota) {
            if measured_so_far >= q {
                return Next::Stop;
            }
        }
        if intended > now {
            return Next::Wait(intended);
        }
        if let Some(p) = &mut self.pace {
            p.k += 1;
        }
        Next::Go { intended, measured }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::{Address, Transport};

    fn cfg(stop: Stop, rate: Option<f64>, conns: usize) -> Config {
        let mut c = Config::new(Transport::Tcp, Address::parse_inet("127.0.0.1:1").unwrap());
        c.stop = stop;
        c.rate = rate;
        c.connections = conns;
        c.warmup = Duration::ZERO;
        c
    }

    #[test]
    fn request_quotas_split_exactly_over_connections() {
        let c = cfg(Stop::Requests(10), None, 4);
        let start = Instant::now();
        let quotas: Vec<u64> = (0..4)
            .map(|i| Plan::new(&c, i, start).quota.unwrap())
            .collect();
        assert_eq!(quotas, [3, 3, 2, 2]);
        let mut p = Plan::new(&c, 3, start);
        assert!(matches!(p.next(start, 0), Next::Go { measured: true, .. }));
        assert_eq!(p.next(start, 2), Next::Stop);
    }

    #[test]
    fn open_loop_intended_times_follow_the_rate_not_the_clock() {
        // 2 connections at 1000/s total: each sends every 2 ms, the second offset by 1 ms.
        let c = cfg(Stop::Requests(6), Some(1000.0), 2);
        let start = Instant::now() - Duration::from_secs(1); // far behind schedule
        let mut p = Plan::new(&c, 1, start);
        let now = Instant::now();
        let times: Vec<Duration> = (0..3)
            .map(|i| match p.next(now, i) {
                Next::Go { intended, .. } => intended - start,
                other => panic!("not due: {other:?}"),
            })
            .collect();
        let ms = Duration::from_millis;
        assert_eq!(times, [ms(1), ms(3), ms(5)]);
        // On schedule, the next request is due in the future, and asking early does not skip it.
        let mut p = Plan::new(&c, 1, now);
        assert_eq!(p.next(now, 0), Next::Wait(now + ms(1)));
        assert_eq!(p.next(now, 0), Next::Wait(now + ms(1)));
        assert!(matches!(p.next(now + ms(1), 0), Next::Go { .. }));
        assert_eq!(p.next(now + ms(1), 1), Next::Wait(now + ms(3)));
    }

    #[test]
    fn duration_runs_stop_at_the_end_and_warmup_is_unmeasured() {
        let mut c = cfg(Stop::Duration(Duration::from_secs(5)), None, 1);
        c.warmup = Duration::from_secs(5);
        let now = Instant::now();
        assert!(matches!(
            Plan::new(&c, 0, now).next(now, 0),
            Next::Go {
                measured: false,
                ..
            }
        ));
        let started_long_ago = now - Duration::from_secs(7);
        assert!(matches!(
            Plan::new(&c, 0, started_long_ago).next(now, 0),
            Next::Go { measured: true, .. }
        ));
        let over = now - Duration::from_secs(11);
        assert_eq!(Plan::new(&c, 0, over).next(now, 0), Next::Stop);
    }
}
