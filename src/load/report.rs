//! The report: one JSON object (`--json`) or a human summary.
//! Every field is documented in README.md (section "sockload").

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};

use super::stats::{ErrorKind, Summary};
use super::{Config, Stop, Verdict};

/// Version of the `--json` schema; bumped on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;

/// What `--json` prints: one object, field by field as in README.md (section "sockload").
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Schema version (currently 1).
    pub format_version: u32,
    /// The sockload that wrote the report (`CARGO_PKG_VERSION`).
    pub sockload_version: &'static str,
    /// When the run (for a merge: the earliest run) started, RFC 3339 in
    /// UTC; `null` when a merged file does not say.
    pub started_at: Option<String>,
    /// `"run"` or `"merge"`.
    pub kind: &'static str,
    /// The run's full configuration; `null` for a merge.
    pub config: Value,
    /// The files a merge read; `null` for a run.
    pub merged_from: Option<Vec<String>>,
    /// Number of runs covered (1 for a run).
    pub runs: usize,
    /// Length of the measured period in seconds (warm-up excluded).
    pub measured_s: f64,
    /// Measured requests attempted: `requests_ok + errors_total`.
    pub requests_total: u64,
    /// Requests that got a correct reply.
    pub requests_ok: u64,
    /// Requests that got a correct reply during the warm-up (a run only;
    /// `null` for a merge): with `requests_ok`, everything the server
    /// answered this client.
    pub warmup_ok: Option<u64>,
    /// Requests that failed, all kinds together.
    pub errors_total: u64,
    /// `requests_total` per second of the measured period.
    pub requests_per_s: f64,
    /// `requests_ok` per second of the measured period.
    pub ok_per_s: f64,
    /// Bytes of measured requests written.
    pub bytes_sent: u64,
    /// Bytes of their replies read.
    pub bytes_received: u64,
    /// `bytes_sent` per second of the measured period.
    pub sent_bytes_per_s: f64,
    /// `bytes_received` per second of the measured period.
    pub received_bytes_per_s: f64,
    /// `errors_total / requests_total` (0 when nothing was attempted).
    pub error_rate: f64,
    /// The allowed error rate the verdict was judged against.
    pub max_error_rate: f64,
    /// Whether the run passed (exit status 0).
    pub passed: bool,
    /// `"closed"` or `"open"` (open loop when `--rate` was given).
    #[serde(rename = "loop")]
    pub loop_kind: &'static str,
    /// Latency of successful requests (open loop: the corrected figures).
    pub latency: Latency,
    /// Open loop only: latency from each request's intended send time.
    pub corrected: Option<Latency>,
    /// Open loop only: latency from each request's actual send time.
    pub uncorrected: Option<Latency>,
    /// Failed requests by kind.
    pub errors: Errors,
    /// The first error message seen for each kind that occurred.
    pub error_samples: std::collections::BTreeMap<&'static str, String>,
    /// `--latency`: the percentile spectrum of each latency histogram (not in `--json`).
    #[serde(skip)]
    spectra: Vec<(&'static str, Spectrum)>,
}

/// One histogram's detailed percentile spectrum: (value us, percentile, count up to it).
#[derive(Debug, Clone)]
struct Spectrum {
    rows: Vec<(u64, f64, u64)>,
    mean: f64,
    stdev: f64,
    max: u64,
    count: u64,
}

impl Spectrum {
    fn of(h: &Histogram<u64>) -> Spectrum {
        let rows = h
            .iter_quantiles(2)
            .map(|v| {
                (
                    v.value_iterated_to(),
                    v.quantile_iterated_to(),
                    v.count_since_last_iteration(),
                )
            })
            .scan(0u64, |total, (value, q, n)| {
                *total += n;
                Some((value, q, *total))
            })
            .collect();
        Spectrum {
            rows,
            mean: h.mean(),
            stdev: h.stdev(),
            max: h.max(),
            count: h.len(),
        }
    }
}

/// Latency figures in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Number of samples (successful measured requests).
    pub count: u64,
    /// Smallest latency.
    pub min_us: u64,
    /// Mean latency.
    pub mean_us: f64,
    /// Standard deviation.
    pub stdev_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 75th percentile.
    pub p75_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// 99.99th percentile.
    pub p9999_us: u64,
    /// Largest latency.
    pub max_us: u64,
}

/// Failed requests by kind (see [`ErrorKind`]).
#[derive(Debug, Clone, Serialize)]
pub struct Errors {
    /// Connection refused (or no such Unix socket).
    pub refused: u64,
    /// Connection reset or broken pipe.
    pub reset: u64,
    /// Connect, send or receive exceeded `--timeout`.
    pub timeout: u64,
    /// The stream closed before the whole reply arrived.
    pub short_reply: u64,
    /// The reply was not what `--expect` requires.
    pub wrong_reply: u64,
    /// Anything else.
    pub other: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        let q = |q| h.value_at_quantile(q);
        let empty = h.is_empty();
        Latency {
            count: h.len(),
            min_us: if empty { 0 } else { h.min() },
            mean_us: round2(h.mean()),
            stdev_us: round2(h.stdev()),
            p50_us: q(0.5),
            p75_us: q(0.75),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            p9999_us: q(0.9999),
            max_us: h.max(),
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The configuration as it appears under `"config"` (and in `--hist` files).
pub(crate) fn config_json(c: &Config) -> Value {
    let (duration_s, requests) = match c.stop {
        Stop::Duration(d) => (Some(d.as_secs_f64()), None),
        Stop::Requests(n) => (None, Some(n)),
    };
    json!({
        "transport": c.transport.name(),
        "connect": c.connect.to_string(),
        "connections": c.connections,
        "threads": super::worker::loops(c),
        "duration_s": duration_s,
        "requests": requests,
        "warmup_s": c.warmup.as_secs_f64(),
        "size": c.size,
        "mode": c.mode.name(),
        "rate": c.rate,
        "expect": c.expect.name(),
        "timeout_s": c.timeout.as_secs_f64(),
        "max_error_rate": c.max_error_rate,
        "hist": c.hist.as_ref().map(|p| p.display().to_string()),
        "sources": c.sources,
    })
}

impl Report {
    /// The report of one run.
    pub fn from_run(cfg: &Config, s: &Summary) -> Report {
        Report::build(config_json(cfg), None, cfg.max_error_rate, s)
    }

    /// The report of a merge of `files`.
    pub fn from_merge(files: &[PathBuf], max_error_rate: f64, s: &Summary) -> Report {
        let names = files.iter().map(|p| p.display().to_string()).collect();
        Report::build(Value::Null, Some(names), max_error_rate, s)
    }

    fn build(
        config: Value,
        merged_from: Option<Vec<String>>,
        max_error_rate: f64,
        s: &Summary,
    ) -> Report {
        let e = |k| s.errors_of(k);
        let open = s.uncorrected.is_some();
        let kind_is_run = merged_from.is_none();
        Report {
            format_version: FORMAT_VERSION,
            sockload_version: env!("CARGO_PKG_VERSION"),
            started_at: s.started_at.map(rfc3339),
            kind: if merged_from.is_some() {
                "merge"
            } else {
                "run"
            },
            config,
            merged_from,
            runs: s.runs,
            measured_s: round6(s.measured.as_secs_f64()),
            requests_total: s.total(),
            requests_ok: s.ok,
            warmup_ok: (s.runs == 1 && kind_is_run).then_some(s.warmup_ok),
            errors_total: s.error_count(),
            requests_per_s: round2(s.requests_per_s),
            ok_per_s: round2(s.ok_per_s),
            bytes_sent: s.bytes_sent,
            bytes_received: s.bytes_received,
            sent_bytes_per_s: round2(per_s(s.bytes_sent, s.measured)),
            received_bytes_per_s: round2(per_s(s.bytes_received, s.measured)),
            error_rate: s.error_rate(),
            max_error_rate,
            passed: s.ok > 0 && s.error_rate() <= max_error_rate,
            loop_kind: if open { "open" } else { "closed" },
            latency: Latency::of(&s.latency),
            corrected: open.then(|| Latency::of(&s.latency)),
            uncorrected: s.uncorrected.as_ref().map(Latency::of),
            errors: Errors {
                refused: e(ErrorKind::Refused),
                reset: e(ErrorKind::Reset),
                timeout: e(ErrorKind::Timeout),
                short_reply: e(ErrorKind::ShortReply),
                wrong_reply: e(ErrorKind::WrongReply),
                other: e(ErrorKind::Other),
            },
            error_samples: ErrorKind::ALL
                .iter()
                .filter_map(|k| Some((k.name(), s.samples[k.index()].clone()?)))
                .collect(),
            spectra: match &s.uncorrected {
                Some(u) => vec![
                    (
                        "corrected (from intended send time)",
                        Spectrum::of(&s.latency),
                    ),
                    ("uncorrected (from actual send time)", Spectrum::of(u)),
                ],
                None => vec![("recorded latency", Spectrum::of(&s.latency))],
            },
        }
    }

    /// Exit 0 or 1.
    pub fn verdict(&self) -> Verdict {
        if self.passed {
            Verdict::Pass
        } else {
            Verdict::Fail
        }
    }

    /// Prints the report on stdout: one line of JSON, or the human summary
    /// (with `latency`, followed by the latency distribution and spectrum).
    pub fn print(&self, json: bool, latency: bool) -> anyhow::Result<()> {
        let stdout = std::io::stdout();
        let text = if json {
            serde_json::to_string(self)? + "\n"
        } else {
            let colour = stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none();
            let mut text = self.human(colour);
            if latency {
                text += &self.distribution();
            }
            text
        };
        let mut out = stdout.lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| anyhow::anyhow!("write report to stdout: {e}"))
    }

    /// The human summary; `colour` adds ANSI colour to the verdict and errors.
    pub fn human(&self, colour: bool) -> String {
        let paint = |code: &str, s: String| {
            if colour {
                format!("\x1b[{code}m{s}\x1b[0m")
            } else {
                s
            }
        };
        let mut out = String::new();
        out += &format!("{:<10}{}\n", "sockload", self.describe());
        out += &format!(
            "{:<10}{} ok, {} errors in {:.2}s: {} req/s ({} ok/s)\n",
            "requests",
            thousands(self.requests_ok),
            thousands(self.errors_total),
            self.measured_s,
            thousands_f(self.requests_per_s),
            thousands_f(self.ok_per_s)
        );
        out += &format!(
            "{:<10}{}/s sent, {}/s received ({} and {} in all)\n",
            "transfer",
            bytes(self.sent_bytes_per_s),
            bytes(self.received_bytes_per_s),
            bytes(self.bytes_sent as f64),
            bytes(self.bytes_received as f64),
        );
        match (&self.corrected, &self.uncorrected) {
            (Some(c), Some(u)) => {
                out += &format!(
                    "{:<10}corrected (from intended send time):  {}\n",
                    "latency",
                    latency_line(c)
                );
                out += &format!(
                    "{:<10}uncorrected (from actual send time):  {}\n",
                    "",
                    latency_line(u)
                );
            }
            _ => out += &format!("{:<10}{}\n", "latency", latency_line(&self.latency)),
        }
        if self.errors_total > 0 {
            let counts: Vec<String> = ErrorKind::ALL
                .iter()
                .map(|k| (k.name(), self.error_count(*k)))
                .filter(|(_, n)| *n > 0)
                .map(|(name, n)| format!("{name} {n}"))
                .collect();
            out += &format!("{:<10}{}\n", "errors", paint("31", counts.join(", ")));
            for (kind, msg) in &self.error_samples {
                out += &format!("{:<10}first {kind}: {msg}\n", "");
            }
        }
        let verdict = if self.passed {
            paint("32", "PASS".into())
        } else {
            paint("1;31", "FAIL".into())
        };
        let why = if self.requests_ok == 0 {
            "no request succeeded".to_string()
        } else {
            let cmp = if self.passed { "<=" } else { ">" };
            format!(
                "error rate {} {cmp} allowed {}",
                percent(self.error_rate),
                percent(self.max_error_rate)
            )
        };
        out += &format!("{:<10}{verdict}: {why}\n", "result");
        out
    }

    /// `--latency`: the distribution at wrk2's percentiles, then each
    /// histogram's detailed percentile spectrum (values in milliseconds).
    pub fn distribution(&self) -> String {
        let mut out = String::new();
        for (name, sp) in &self.spectra {
            out += &format!("\nLatency distribution ({name})\n");
            if sp.count == 0 {
                out += "  no successful requests\n";
                continue;
            }
            let l = match *name {
                n if n.starts_with("uncorrected") => self.uncorrected.as_ref(),
                _ => None,
            }
            .unwrap_or(&self.latency);
            for (pct, v) in [
                ("50.000%", l.p50_us),
                ("75.000%", l.p75_us),
                ("90.000%", l.p90_us),
                ("99.000%", l.p99_us),
                ("99.900%", l.p999_us),
                ("99.990%", l.p9999_us),
                ("100.000%", l.max_us),
            ] {
                out += &format!("{pct:>9}  {:>10}\n", us(v as f64));
            }
            out += "\n  Detailed percentile spectrum:\n";
            out += &format!(
                "{:>12} {:>12} {:>12} {:>16}\n",
                "Value(ms)", "Percentile", "TotalCount", "1/(1-Percentile)"
            );
            for (value, q, total) in &sp.rows {
                let inv = if *q < 1.0 {
                    format!("{:.2}", 1.0 / (1.0 - q))
                } else {
                    "inf".into()
                };
                out += &format!(
                    "{:>12.3} {:>12.6} {:>12} {:>16}\n",
                    *value as f64 / 1e3,
                    q,
                    total,
                    inv
                );
            }
            out += &format!(
                "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]\n#[Max     = {:>12.3}, Total count    = {:>12}]\n",
                sp.mean / 1e3,
                sp.stdev / 1e3,
                sp.max as f64 / 1e3,
                sp.count
            );
        }
        out
    }

    fn error_count(&self, k: ErrorKind) -> u64 {
        let e = &self.errors;
        match k {
            ErrorKind::Refused => e.refused,
            ErrorKind::Reset => e.reset,
            ErrorKind::Timeout => e.timeout,
            ErrorKind::ShortReply => e.short_reply,
            ErrorKind::WrongReply => e.wrong_reply,
            ErrorKind::Other => e.other,
        }
    }

    fn describe(&self) -> String {
        let Some(files) = &self.merged_from else {
            return describe_config(&self.config);
        };
        format!("merge of {} runs: {}", self.runs, files.join(", "))
    }
}

fn describe_config(c: &Value) -> String {
    let what = match (c["duration_s"].as_f64(), c["requests"].as_u64()) {
        (Some(d), _) => format!("{}s", trim(d)),
        (_, Some(n)) => format!("{n} requests"),
        _ => "?".into(),
    };
    let pace = match c["rate"].as_f64() {
        Some(r) => format!("open loop at {} req/s", trim(r)),
        None => "closed loop".into(),
    };
    format!(
        "{} {}, {} connection{}, {}, {pace}, {what} after {}s warm-up, {}-byte requests, expect {}",
        str_of(&c["transport"]),
        str_of(&c["connect"]),
        c["connections"],
        if c["connections"] == 1 { "" } else { "s" },
        str_of(&c["mode"]),
        trim(c["warmup_s"].as_f64().unwrap_or(0.0)),
        c["size"],
        str_of(&c["expect"]),
    )
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("?")
}

fn trim(x: f64) -> String {
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn per_s(n: u64, d: std::time::Duration) -> f64 {
    match d.as_secs_f64() {
        0.0 => 0.0,
        secs => n as f64 / secs,
    }
}

/// `1234567` as `1,234,567`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `12345.67` as `12,345.7`.
fn thousands_f(x: f64) -> String {
    let tenths = (x * 10.0).round().max(0.0) as u64;
    format!("{}.{}", thousands(tenths / 10), tenths % 10)
}

/// `1.50 MiB`, `830 B` (binary units).
fn bytes(x: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = x;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.2} {}", UNITS[unit])
    }
}

/// RFC 3339 in UTC with milliseconds: `2026-12-01T10:34:04.123Z`.
fn rfc3339(t: std::time::SystemTime) -> String {
    crate::log::Timestamp::at(t, 3).to_string()
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

fn percent(r: f64) -> String {
    format!("{}%", trim(r * 100.0))
}

fn latency_line(l: &Latency) -> String {
    if l.count == 0 {
        return "no successful requests".into();
    }
    format!(
        "p50 {}  p75 {}  p90 {}  p99 {}  p99.9 {}  p99.99 {}  max {}  mean {}",
        us(l.p50_us as f64),
        us(l.p75_us as f64),
        us(l.p90_us as f64),
        us(l.p99_us as f64),
        us(l.p999_us as f64),
        us(l.p9999_us as f64),
        us(l.max_us as f64),
        us(l.mean_us)
    )
}

/// `45us`, `1.23ms`, `2.50s`.
fn us(v: f64) -> String {
    if v < 1000.0 {
        format!("{v:.0}us")
    } else if v < 1e6 {
        format!("{:.2}ms", v / 1e3)
    } else {
        format!("{:.2}s", v / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::{Address, Transport};
    use std::time::Duration;

    fn summary() -> Summary {
        let mut s = Summary::empty(false);
        s.runs = 1;
        for v in [40, 50, 60, 1500] {
            s.latency.record(v).unwrap();
        }
        s.ok = 4;
        s.measured = Duration::from_secs(2);
        s.requests_per_s = 2.0;
        s.ok_per_s = 2.0;
        s
    }

    #[test]
    fn human_summary_names_figures_and_verdict_without_colour() {
        let cfg = Config::new(
            Transport::Tcp,
            Address::parse_inet("127.0.0.1:9000").unwrap(),
        );
        let text = Report::from_run(&cfg, &summary()).human(false);
        assert!(
            text.contains(
                "tcp 127.0.0.1:9000, 8 connections, persistent, closed loop, 10s after 2s warm-up"
            ),
            "{text}"
        );
        assert!(
            text.contains("p50 50us") && text.contains("max 1.50ms"),
            "{text}"
        );
        assert!(text.contains("PASS: error rate 0% <= allowed 0%"), "{text}");
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn errors_over_the_budget_fail_and_nothing_ok_fails() {
        let cfg = Config::new(
            Transport::Tcp,
            Address::parse_inet("127.0.0.1:9000").unwrap(),
        );
        let mut s = summary();
        s.errors[ErrorKind::Reset.index()] = 1;
        s.samples[ErrorKind::Reset.index()] = Some("receive from x: reset".into());
        let r = Report::from_run(&cfg, &s);
        assert_eq!(r.verdict(), Verdict::Fail);
        assert!(r.human(true).contains("\x1b[31mreset 1\x1b[0m"));
        assert!(r
            .human(false)
            .contains("first reset: receive from x: reset"));
        let mut lenient = cfg.clone();
        lenient.max_error_rate = 0.2;
        assert_eq!(Report::from_run(&lenient, &s).verdict(), Verdict::Pass);
        let nothing = Summary::empty(false);
        let r = Report::from_run(&lenient, &nothing);
        assert_eq!(r.verdict(), Verdict::Fail);
        assert!(r.human(false).contains("no request succeeded"));
    }
}
