//! When each connection sends its next request, and when it stops.
//!
//! Closed loop: as soon as the previous reply arrived. Open loop: at fixed
//! intended times (`start + offset + k * period`), staggered across the
//! connections so the total is `--rate`; a late request is sent at once, and
//! its latency still counts from the intended time.

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

    /// Waits until the next request is due, or says the connection is done.
    /// `measured_so_far` is how many measured requests it has made.
    pub fn next(&mut self, measured_so_far: u64) -> Next {
        let now = Instant::now();
        let intended = match &mut self.pace {
            None => now,
            Some(p) => {
                let at = p.offset_ns + p.k as f64 * p.period_ns;
                p.k += 1;
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
            wait_until(intended, now);
        }
        Next::Go { intended, measured }
    }
}

/// Sleeping wakes some tens of microseconds late, and in open loop that
/// lateness would count as latency: sleep until just before `t`, then spin.
/// The spin costs at most `SPIN` of CPU per request.
fn wait_until(t: Instant, now: Instant) {
    const SPIN: Duration = Duration::from_micros(40);
    if t - now > SPIN {
        std::thread::sleep(t - now - SPIN);
    }
    while Instant::now() < t {
        std::hint::spin_loop();
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
        assert!(matches!(p.next(0), Next::Go { measured: true, .. }));
        assert_eq!(p.next(2), Next::Stop);
    }

    #[test]
    fn open_loop_intended_times_follow_the_rate_not_the_clock() {
        // 2 connections at 1000/s total: each sends every 2 ms, the second offset by 1 ms.
        let c = cfg(Stop::Requests(6), Some(1000.0), 2);
        let start = Instant::now() - Duration::from_secs(1); // far behind schedule
        let mut p = Plan::new(&c, 1, start);
        let times: Vec<Duration> = (0..3)
            .map(|i| match p.next(i) {
                Next::Go { intended, .. } => intended - start,
                Next::Stop => panic!("stopped early"),
            })
            .collect();
        let ms = Duration::from_millis;
        assert_eq!(times, [ms(1), ms(3), ms(5)]);
    }

    #[test]
    fn duration_runs_stop_at_the_end_and_warmup_is_unmeasured() {
        let mut c = cfg(Stop::Duration(Duration::from_secs(5)), None, 1);
        c.warmup = Duration::from_secs(5);
        let now = Instant::now();
        assert!(matches!(
            Plan::new(&c, 0, now).next(0),
            Next::Go {
                measured: false,
                ..
            }
        ));
        let started_long_ago = now - Duration::from_secs(7);
        assert!(matches!(
            Plan::new(&c, 0, started_long_ago).next(0),
            Next::Go { measured: true, .. }
        ));
        let over = now - Duration::from_secs(11);
        assert_eq!(Plan::new(&c, 0, over).next(0), Next::Stop);
    }
}
