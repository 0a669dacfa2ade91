//! `sockload`'s flags (clap), in their own file so `sockdoc` can render
//! them as a man page and shell completions.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use socketserver::load::{self, Expect, Mode};
use socketserver::Transport;

/// Drive a TCP, UDP or Unix server with requests and report throughput,
/// latency percentiles and errors.
#[derive(Parser, Debug)]
#[command(name = "sockload", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// One report from histogram files saved with --hist (e.g. on several hosts).
    Merge(MergeArgs),
    /// Markdown tables (stdout), an SVG chart and an HTML page from a
    /// directory of comparison results written by scripts/compare.sh.
    Report(ReportArgs),
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The results directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Write the chart (SVG) here.
    #[arg(long, value_name = "FILE")]
    pub chart: Option<PathBuf>,
    /// Write a self-contained HTML page here: the caption, every table and
    /// the chart inline.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Files written by `sockload --hist FILE`.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Print one JSON object instead of the human summary.
    #[arg(long)]
    pub json: bool,
    /// Print the latency distribution and the detailed percentile spectrum.
    #[arg(long)]
    pub latency: bool,
    /// Highest error rate (0..1) that still exits 0.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction, value_name = "R")]
    pub max_error_rate: f64,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Transport: tcp, udp, unix or unix-dgram.
    #[arg(long, default_value = "tcp", value_parser = parse_transport, value_name = "tcp|udp|unix|unix-dgram")]
    pub transport: Transport,
    /// Server address: HOST:PORT, a Unix socket path or @abstract-name
    /// [default: 127.0.0.1:9000 for tcp and udp; required for unix transports].
    #[arg(long, value_name = "ADDR")]
    pub connect: Option<String>,
    /// Concurrent connections, shared by the --threads event loops
    /// (RLIMIT_NOFILE's soft limit is raised to the hard one when needed).
    #[arg(short = 'c', long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1_000_000), value_name = "N")]
    pub connections: u32,
    /// Event loops (threads) sharing the connections [default: the number of CPUs].
    #[arg(short = 't', long, value_parser = clap::value_parser!(u32).range(1..=1024), value_name = "N")]
    pub threads: Option<u32>,
    /// Measure for this long (10s, 500ms, 2m or plain seconds) [default: 10s].
    #[arg(short = 'd', long, value_parser = load::parse_duration, conflicts_with = "requests", value_name = "DURATION")]
    pub duration: Option<Duration>,
    /// Measure this many requests (ok or failed) instead of a duration.
    #[arg(short = 'n', long, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub requests: Option<u64>,
    /// Warm-up before measuring, excluded from every figure.
    #[arg(long, default_value = "2s", value_parser = load::parse_duration, value_name = "DURATION")]
    pub warmup: Duration,
    /// Request size in bytes (lowercase ASCII letters).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=16 << 20), value_name = "BYTES")]
    pub size: u32,
    /// persistent: many requests per connection; connect: a fresh connection (or socket) per request.
    #[arg(long, value_enum, default_value_t = Mode::Persistent)]
    pub mode: Mode,
    /// Open loop at this total rate, with latency from each request's intended send time.
    #[arg(short = 'R', long, value_parser = parse_rate, value_name = "REQ_PER_S")]
    pub rate: Option<f64>,
    /// How replies are checked.
    #[arg(long, value_enum, default_value_t = Expect::Echo)]
    pub expect: Expect,
    /// Timeout for a connect, and for a request (its send and reply together).
    #[arg(long, default_value = "2s", value_parser = parse_timeout, value_name = "DURATION")]
    pub timeout: Duration,
    /// Highest error rate (0..1) that still exits 0.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction, value_name = "R")]
    pub max_error_rate: f64,
    /// Print one JSON object instead of the human summary.
    #[arg(long)]
    pub json: bool,
    /// Print the latency distribution (p50, p75, p90, p99, p99.9, p99.99,
    /// max) and the detailed percentile spectrum, as wrk2 does.
    #[arg(long)]
    pub latency: bool,
    /// Save the latency histogram and counts (HdrHistogram interval log) to FILE.
    #[arg(long, value_name = "FILE")]
    pub hist: Option<PathBuf>,
    /// TCP to an IPv4 loopback server: spread connections over N source
    /// addresses (127.0.0.2 and up), so connect() does not search one
    /// address's ports past TIME_WAIT connections (for --mode connect).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=253), value_name = "N")]
    pub sources: u8,
}

fn parse_transport(s: &str) -> Result<Transport, String> {
    s.parse().map_err(|e| format!("{e}"))
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a positive number of requests per second"
        )),
    }
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{s:?} is not a fraction between 0 and 1")),
    }
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    match load::parse_duration(s)? {
        d if d.is_zero() => Err("the timeout must be more than zero".into()),
        d => Ok(d),
    }
}
