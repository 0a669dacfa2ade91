//! `sockload`: a load generator for stream and datagram servers.
//!
//! Event-driven, as wrk and wrk2 are: [`Config::threads`] event loops (mio)
//! share the [`Config::connections`], each connection a small non-blocking
//! state machine, with one HDR histogram per loop merged at the end (see
//! `worker.rs`). Closed loop by default; with a rate ([`Config::rate`]) it
//! runs open loop, sending on a timer-driven schedule and measuring latency
//! from each request's intended send time, so a stalled server cannot hide
//! its stall.
//!
//! The command-line contract and every `--json` field are documented in
//! README.md (section "sockload").

pub mod chart;
mod client;
pub mod compare;
mod histfile;
pub mod html;
mod merge;
mod plan;
mod progress;
mod report;
mod stats;
mod worker;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::addr::{Address, Transport};

pub(crate) use histfile::check_parse as check_histfile;
pub use merge::merge_files;
pub use report::Report;
pub use stats::{ErrorKind, Summary};

/// How connections are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Keep each connection (or datagram socket) for many requests.
    Persistent,
    /// Open a fresh connection (or datagram socket) for every request.
    Connect,
}

/// How replies are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expect {
    /// The reply must equal the request.
    Echo,
    /// The reply must equal the request, ASCII-uppercased.
    Upper,
    /// Any reply counts: a line (ending in `\n`) over streams, one packet over datagrams.
    Any,
}

impl Mode {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Persistent => "persistent",
            Mode::Connect => "connect",
        }
    }
}

impl Expect {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Expect::Echo => "echo",
            Expect::Upper => "upper",
            Expect::Any => "any",
        }
    }
}

/// When the measured part of a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// After this long (requests in flight at the end are completed and counted).
    Duration(Duration),
    /// After this many measured requests (ok or failed), split over the connections.
    Requests(u64),
}

/// Everything a run needs; built from the command line by `bin/sockload.rs`.
#[derive(Debug, Clone)]
pub struct Config {
    /// The transport to use.
    pub transport: Transport,
    /// The server address.
    pub connect: Address,
    /// Concurrent connections, shared by the event loops.
    pub connections: usize,
    /// Event loops (threads); a run uses at most one per connection.
    pub threads: usize,
    /// When the measured part ends.
    pub stop: Stop,
    /// Warm-up before measuring; its requests are excluded from every figure.
    pub warmup: Duration,
    /// Request payload size in bytes.
    pub size: usize,
    /// Persistent connections or a fresh one per request.
    pub mode: Mode,
    /// Open loop at this total rate (requests per second); `None` is closed loop.
    pub rate: Option<f64>,
    /// How replies are checked.
    pub expect: Expect,
    /// Timeout for a connect, and for a request (its send and reply together).
    pub timeout: Duration,
    /// Highest error rate (errors / (ok + errors)) that still exits 0.
    pub max_error_rate: f64,
    /// Save the histogram and counts to this file.
    pub hist: Option<PathBuf>,
    /// TCP to an IPv4 loopback server: spread connections over this many
    /// source addresses (127.0.0.2 and up). 1: the kernel picks as usual.
    pub sources: u8,
}

impl Config {
    /// A configuration with the documented defaults.
    pub fn new(transport: Transport, connect: Address) -> Config {
        Config {
            transport,
            connect,
            connections: 8,
            threads: default_threads(),
            stop: Stop::Duration(Duration::from_secs(10)),
            warmup: Duration::from_secs(2),
            size: 64,
            mode: Mode::Persistent,
            rate: None,
            expect: Expect::Echo,
            timeout: Duration::from_secs(2),
            max_error_rate: 0.0,
            hist: None,
            sources: 1,
        }
    }

    /// Rejects configurations that cannot run, naming the offending setting.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.connections == 0 {
            bail!("--connections must be at least 1");
        }
        if self.threads == 0 {
            bail!("--threads must be at least 1");
        }
        if self.size == 0 {
            bail!("--size must be at least 1 byte");
        }
        if self.timeout.is_zero() {
            bail!("--timeout must be more than zero");
        }
        if let Some(r) = self.rate {
            if !(r.is_finite() && r > 0.0) {
                bail!("--rate must be a positive number of requests per second, not {r}");
            }
        }
        if !(0.0..=1.0).contains(&self.max_error_rate) {
            bail!(
                "--max-error-rate must be between 0 and 1, not {}",
                self.max_error_rate
            );
        }
        if self.transport == Transport::Udp && self.size > 65507 {
            bail!(
                "--size {} is larger than a UDP datagram can carry (65507)",
                self.size
            );
        }
        if self.sources == 0 || self.sources > client::MAX_SOURCES {
            bail!("--sources must be from 1 to {}", client::MAX_SOURCES);
        }
        if self.sources > 1 {
            let loopback_v4 = matches!(self.connect.as_inet(),
                Some(std::net::SocketAddr::V4(a)) if a.ip().is_loopback());
            if self.transport != Transport::Tcp || !loopback_v4 {
                bail!(
                    "--sources needs TCP to an IPv4 loopback address (127.x.x.x), not {} {}",
                    self.transport,
                    self.connect
                );
            }
        }
        match self.stop {
            Stop::Requests(0) => bail!("--requests must be at least 1"),
            Stop::Duration(d) if d.is_zero() => bail!("--duration must be more than zero"),
            _ => {}
        }
        Ok(())
    }
}

/// The verdict of a run or a merge, as an exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The error rate was within `--max-error-rate` and something succeeded (exit 0).
    Pass,
    /// Too many errors, or nothing succeeded (exit 1).
    Fail,
}

impl Verdict {
    /// The process exit status for this verdict.
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Pass => 0,
            Verdict::Fail => 1,
        }
    }
}

/// Output choices shared by a run and a merge.
#[derive(Debug, Clone, Copy, Default)]
pub struct Output {
    /// One JSON object on stdout instead of the human summary.
    pub json: bool,
    /// Show the progress line (only honoured when stderr is a terminal).
    pub progress: bool,
    /// Human summary: add the latency distribution and percentile spectrum (`--latency`).
    pub latency: bool,
}

/// Runs the load described by `cfg`, prints the report and returns the verdict.
///
/// `interrupt` stops the run early (e.g. set from a SIGINT handler); the
/// report then covers what was measured so far.
pub fn run(cfg: &Config, out: Output, interrupt: &AtomicBool) -> anyhow::Result<Verdict> {
    cfg.validate()?;
    // Create the --hist file first, so a bad path fails before the load, not after it.
    let hist = match &cfg.hist {
        Some(path) => Some((
            path,
            std::fs::File::create(path)
                .with_context(|| format!("create histogram file {}", path.display()))?,
        )),
        None => None,
    };
    let summary = worker::run_loops(cfg, out.progress, interrupt)?;
    let report = Report::from_run(cfg, &summary);
    report.print(out.json, out.latency)?;
    if let Some((path, file)) = hist {
        histfile::write(file, cfg, &summary)
            .with_context(|| format!("write histogram file {}", path.display()))?;
    }
    Ok(report.verdict())
}

/// `--threads`' default: the CPUs this process may run on.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Open files a run needs: one socket per connection, an epoll and a
/// timerfd per event loop, and some to spare (stdio, `--hist`, the binary).
pub fn open_files_needed(cfg: &Config) -> u64 {
    cfg.connections as u64 + 2 * worker::loops(cfg) as u64 + 32
}

/// Raises RLIMIT_NOFILE's soft limit to its hard limit when the run needs
/// more than the soft one allows. `Err` names the limit and the number
/// needed (a usage error: exit 2).
pub fn raise_open_file_limit(cfg: &Config) -> Result<(), String> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let needed = open_files_needed(cfg);
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|e| format!("read RLIMIT_NOFILE (getrlimit): {e}"))?;
    if needed <= soft {
        return Ok(());
    }
    if needed > hard {
        return Err(format!(
            "--connections {} needs {needed} open files, but RLIMIT_NOFILE's hard limit is {hard}; \
             raise it (ulimit -Hn, LimitNOFILE= in a systemd unit, or /etc/security/limits.conf)",
            cfg.connections
        ));
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(|e| {
        format!("raise RLIMIT_NOFILE's soft limit from {soft} to {hard} (setrlimit): {e}")
    })
}

/// Merges saved `--hist` files into one report, prints it and returns the verdict.
pub fn merge(files: &[PathBuf], max_error_rate: f64, out: Output) -> anyhow::Result<Verdict> {
    let summary = merge_files(files)?;
    let report = Report::from_merge(files, max_error_rate, &summary);
    report.print(out.json, out.latency)?;
    Ok(report.verdict())
}

/// Parses `10s`, `500ms`, `2m`, `1h`, `250us` or plain seconds (`1.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (expected e.g. 10s, 500ms, 2m or 3)"))?;
    let scale = match unit {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit {unit:?} in {s:?} (use us, ms, s, m or h)"
            ))
        }
    };
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// [`parse_duration`]'s contract, checked on arbitrary text (the fuzz
/// target `duration` and the unit tests call it): it never panics; a
/// refusal is one line naming the input; an accepted duration reads back
/// from its seconds (to a nanosecond, or the float's precision), and the
/// same number in another unit scales by that unit.
///
/// # Panics
///
/// When the contract is broken.
pub(crate) fn check_duration(s: &str) {
    let d = match parse_duration(s) {
        Ok(d) => d,
        Err(e) => {
            crate::units::assert_one_line(&e, s);
            assert!(
                e.contains(&format!("{s:?}")),
                "error {e:?} does not name {s:?}"
            );
            return;
        }
    };
    let near = |a: Duration, b: Duration| {
        let gap = a.abs_diff(b).as_secs_f64();
        gap <= 1e-9 + a.max(b).as_secs_f64() * 1e-12
    };
    let back = parse_duration(&d.as_secs_f64().to_string());
    assert!(
        back.as_ref().is_ok_and(|&b| near(b, d)),
        "{d:?} from {s:?} reads back as {back:?}"
    );
    let t = s.trim();
    let num = t.trim_end_matches(|c: char| !(c.is_ascii_digit() || c == '.'));
    let unit_of = |u: &str| match u {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" => 60.0,
        "h" => 3600.0,
        _ => panic!("accepted unit {u:?} in {s:?}"),
    };
    let scale = unit_of(&t[num.len()..]);
    for other in ["us", "ms", "s", "m", "h"] {
        if let Ok(d2) = parse_duration(&format!("{num}{other}")) {
            // d was rounded to a nanosecond, which the ratio scales.
            let ratio = unit_of(other) / scale;
            let want = d.as_secs_f64() * ratio;
            let got = d2.as_secs_f64();
            assert!(
                (got - want).abs() <= 1e-9 * (1.0 + ratio) + want * 1e-12,
                "{num}{other} is {d2:?}, but {s:?} is {d:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_units_and_plain_seconds() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn the_fuzz_contract_holds_on_sample_durations() {
        for s in [
            "",
            " ",
            "0",
            "1",
            "1.5",
            ".5",
            "5.",
            ".",
            "1.2.3",
            "10s",
            "500ms",
            "250us",
            "250\u{b5}s",
            "2m",
            "1h",
            "1e3",
            "5parsecs",
            "-1",
            "1\u{3bc}s",
            " 3h\n",
            "18446744073709551615",
            "18446744073709551616s",
            "99999999999999999999h",
            &"9".repeat(400),
        ] {
            check_duration(s);
        }
    }

    #[test]
    fn validate_names_the_bad_setting() {
        let mut c = Config::new(Transport::Tcp, Address::parse_inet("127.0.0.1:1").unwrap());
        c.connections = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--connections"));
        c.connections = 1;
        c.rate = Some(-1.0);
        assert!(c.validate().unwrap_err().to_string().contains("--rate"));
    }
}
