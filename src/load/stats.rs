//! Counters and latency histograms: per thread while running, merged after.

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest latency the histograms track: one hour, in microseconds.
pub(crate) const MAX_US: u64 = 3_600_000_000;

/// A fresh latency histogram: microseconds, 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("static histogram bounds are valid")
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The connection was refused (or the Unix socket path does not exist).
    Refused,
    /// The peer reset the connection (or the pipe broke).
    Reset,
    /// Connect, send or receive took longer than `--timeout`.
    Timeout,
    /// The peer closed the stream before the full reply arrived.
    ShortReply,
    /// The reply arrived but was not what `--expect` asks for.
    WrongReply,
    /// Any other failure.
    Other,
}

impl ErrorKind {
    /// Every kind, in report order.
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Refused,
        ErrorKind::Reset,
        ErrorKind::Timeout,
        ErrorKind::ShortReply,
        ErrorKind::WrongReply,
        ErrorKind::Other,
    ];

    /// The name used in reports and `--json` (`short_reply`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Refused => "refused",
            ErrorKind::Reset => "reset",
            ErrorKind::Timeout => "timeout",
            ErrorKind::ShortReply => "short_reply",
            ErrorKind::WrongReply => "wrong_reply",
            ErrorKind::Other => "other",
        }
    }

    /// Looks a kind up by its report name.
    pub fn from_name(s: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.name() == s)
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What one thread measured; merged into a [`Summary`] at the end.
pub(crate) struct ThreadStats {
    pub ok: u64,
    /// Requests answered correctly during the warm-up (not measured).
    pub warmup_ok: u64,
    pub errors: [u64; 6],
    /// First error message seen per kind (allocated only once per kind).
    pub samples: [Option<String>; 6],
    /// Closed loop: latency; open loop: from the intended send time.
    pub latency: Histogram<u64>,
    /// Open loop only: latency from the actual send time.
    pub uncorrected: Option<Histogram<u64>>,
    /// When the last measured request completed, relative to the measure start.
    pub last_done: Duration,
    /// Bytes of measured requests written, and of their replies read.
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl ThreadStats {
    pub fn new(open_loop: bool) -> ThreadStats {
        ThreadStats {
            ok: 0,
            warmup_ok: 0,
            errors: [0; 6],
            samples: Default::default(),
            latency: new_histogram(),
            uncorrected: open_loop.then(new_histogram),
            last_done: Duration::ZERO,
            bytes_sent: 0,
            bytes_received: 0,
        }
    }

    /// Records one successful request's latencies.
    #[inline]
    pub fn record_ok(&mut self, corrected: Duration, uncorrected: Duration) {
        self.ok += 1;
        self.latency.saturating_record(micros(corrected));
        if let Some(h) = &mut self.uncorrected {
            h.saturating_record(micros(uncorrected));
        }
    }

    /// Records one failure; `message` is only called the first time a kind is seen.
    pub fn record_error(&mut self, kind: ErrorKind, message: impl FnOnce() -> String) {
        self.errors[kind.index()] += 1;
        let slot = &mut self.samples[kind.index()];
        if slot.is_none() {
            *slot = Some(message());
        }
    }

    pub fn total(&self) -> u64 {
        self.ok + self.errors.iter().sum::<u64>()
    }
}

#[inline]
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The measured outcome of a run (or of several merged runs).
#[derive(Debug, Clone)]
pub struct Summary {
    /// Requests answered correctly during the warm-up (a run's only;
    /// histogram files do not carry it).
    pub warmup_ok: u64,
    /// Requests that got a correct reply.
    pub ok: u64,
    /// Failed requests by kind, indexed like [`ErrorKind::ALL`].
    pub errors: [u64; 6],
    /// The first error message seen for each kind, if any.
    pub samples: [Option<String>; 6],
    /// Latency in microseconds (open loop: from the intended send time).
    pub latency: Histogram<u64>,
    /// Open loop only: latency from the actual send time, in microseconds.
    pub uncorrected: Option<Histogram<u64>>,
    /// Length of the measured period (the longest one, for merged runs).
    pub measured: Duration,
    /// Requests (ok + errors) per second over the measured period
    /// (for merged runs: the sum of each run's rate, as the runs were concurrent).
    pub requests_per_s: f64,
    /// Successful requests per second, the same way.
    pub ok_per_s: f64,
    /// Number of runs this summary covers (1 for a plain run).
    pub runs: usize,
    /// Bytes of measured requests written (the sum, for merged runs).
    pub bytes_sent: u64,
    /// Bytes of their replies read.
    pub bytes_received: u64,
    /// When the (earliest) run started, as Unix time; `None` if unknown
    /// (a merged file from before sockload recorded it).
    pub started_at: Option<std::time::SystemTime>,
}

impl Summary {
    /// An empty summary for `runs` runs, with or without an uncorrected histogram.
    pub(crate) fn empty(open_loop: bool) -> Summary {
        Summary {
            ok: 0,
            errors: [0; 6],
            samples: Default::default(),
            latency: new_histogram(),
            uncorrected: open_loop.then(new_histogram),
            warmup_ok: 0,
            measured: Duration::ZERO,
            requests_per_s: 0.0,
            ok_per_s: 0.0,
            runs: 0,
            bytes_sent: 0,
            bytes_received: 0,
            started_at: None,
        }
    }

    /// Folds the per-event-loop statistics of one run into a summary.
    pub(crate) fn from_threads(threads: Vec<ThreadStats>, open_loop: bool) -> Summary {
        let mut s = Summary::empty(open_loop);
        s.runs = 1;
        for t in threads {
            s.ok += t.ok;
            s.warmup_ok += t.warmup_ok;
            for (sum, n) in s.errors.iter_mut().zip(t.errors) {
                *sum += n;
            }
            for (slot, sample) in s.samples.iter_mut().zip(t.samples) {
                if slot.is_none() {
                    *slot = sample;
                }
            }
            s.latency.add(&t.latency).expect("same histogram bounds");
            if let (Some(sum), Some(h)) = (&mut s.uncorrected, &t.uncorrected) {
                sum.add(h).expect("same histogram bounds");
            }
            s.measured = s.measured.max(t.last_done);
            s.bytes_sent += t.bytes_sent;
            s.bytes_received += t.bytes_received;
        }
        let measured = s.measured;
        s.set_measured(measured);
        s
    }

    /// Sets the measured period and the rates over it.
    pub(crate) fn set_measured(&mut self, d: Duration) {
        self.measured = d;
        let secs = d.as_secs_f64();
        if secs > 0.0 {
            self.requests_per_s = self.total() as f64 / secs;
            self.ok_per_s = self.ok as f64 / secs;
        }
    }

    /// Total failed requests.
    pub fn error_count(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// Requests attempted in the measured period (ok + errors).
    pub fn total(&self) -> u64 {
        self.ok + self.error_count()
    }

    /// errors / (ok + errors); 0 when nothing was attempted.
    pub fn error_rate(&self) -> f64 {
        match self.total() {
            0 => 0.0,
            t => self.error_count() as f64 / t as f64,
        }
    }

    /// The count for one error kind.
    pub fn errors_of(&self, kind: ErrorKind) -> u64 {
        self.errors[kind.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_fold_into_sums_and_rates() {
        let mut a = ThreadStats::new(false);
        a.record_ok(Duration::from_micros(100), Duration::ZERO);
        a.record_error(ErrorKind::Timeout, || "first".into());
        a.record_error(ErrorKind::Timeout, || {
            unreachable!("sample kept from the first error")
        });
        a.last_done = Duration::from_secs(1);
        let mut b = ThreadStats::new(false);
        b.record_ok(Duration::from_micros(300), Duration::ZERO);
        b.last_done = Duration::from_secs(2);
        let s = Summary::from_threads(vec![a, b], false);
        assert_eq!((s.ok, s.error_count(), s.total()), (2, 2, 4));
        assert_eq!(s.errors_of(ErrorKind::Timeout), 2);
        assert_eq!(
            s.samples[ErrorKind::Timeout.index()].as_deref(),
            Some("first")
        );
        assert_eq!(s.measured, Duration::from_secs(2));
        assert_eq!(s.requests_per_s, 2.0);
        assert_eq!(s.error_rate(), 0.5);
        assert_eq!(s.latency.len(), 2);
    }

    #[test]
    fn error_kind_names_round_trip() {
        for k in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_name(k.name()), Some(k));
            assert_eq!(ErrorKind::ALL[k.index()], k);
        }
    }
}
