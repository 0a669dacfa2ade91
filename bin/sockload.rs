//! `sockload`: load generator for socketserver servers (see the README's sockload section).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

#[path = "cli.rs"]
mod cli;

use clap::{Args, Parser, Subcommand};
use socketserver::load::{self, Config, Expect, Mode, Output, Stop, Verdict};
use socketserver::Transport;

/// Drive a TCP, UDP or Unix server with requests and report throughput,
/// latency percentiles and errors.
#[derive(Parser, Debug)]
#[command(name = "sockload", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// One report from histogram files saved with --hist (e.g. on several hosts).
    Merge(MergeArgs),
    /// A Markdown table (stdout) and an SVG chart from a directory of
    /// comparison results written by scripts/compare.sh.
    Report(ReportArgs),
}

#[derive(Args, Debug)]
struct ReportArgs {
    /// The results directory.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Write the chart (SVG) here.
    #[arg(long, value_name = "FILE")]
    chart: Option<PathBuf>,
}

fn report(a: &ReportArgs) -> anyhow::Result<Verdict> {
    let results = load::compare::read_dir(&a.dir)?;
    print!("{}", load::compare::markdown(&results));
    if let Some(path) = &a.chart {
        load::chart::draw(&results, path)?;
    }
    Ok(Verdict::Pass)
}

#[derive(Args, Debug)]
struct MergeArgs {
    /// Files written by `sockload --hist FILE`.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Print one JSON object instead of the human summary.
    #[arg(long)]
    json: bool,
    /// Highest error rate (0..1) that still exits 0.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction, value_name = "R")]
    max_error_rate: f64,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Transport: tcp, udp, unix or unix-dgram.
    #[arg(long, default_value = "tcp", value_parser = parse_transport, value_name = "tcp|udp|unix|unix-dgram")]
    transport: Transport,
    /// Server address: HOST:PORT, a Unix socket path or @abstract-name
    /// [default: 127.0.0.1:9000 for tcp and udp; required for unix transports].
    #[arg(long, value_name = "ADDR")]
    connect: Option<String>,
    /// Concurrent connections, one thread each.
    #[arg(short = 'c', long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000), value_name = "N")]
    connections: u32,
    /// Measure for this long (10s, 500ms, 2m or plain seconds) [default: 10s].
    #[arg(short = 'd', long, value_parser = load::parse_duration, conflicts_with = "requests", value_name = "DURATION")]
    duration: Option<Duration>,
    /// Measure this many requests (ok or failed) instead of a duration.
    #[arg(short = 'n', long, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    requests: Option<u64>,
    /// Warm-up before measuring, excluded from every figure.
    #[arg(long, default_value = "2s", value_parser = load::parse_duration, value_name = "DURATION")]
    warmup: Duration,
    /// Request size in bytes (lowercase ASCII letters).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=16 << 20), value_name = "BYTES")]
    size: u32,
    /// persistent: many requests per connection; connect: a fresh connection (or socket) per request.
    #[arg(long, value_enum, default_value_t = Mode::Persistent)]
    mode: Mode,
    /// Open loop at this total rate, with latency from each request's intended send time.
    #[arg(short = 'R', long, value_parser = parse_rate, value_name = "REQ_PER_S")]
    rate: Option<f64>,
    /// How replies are checked.
    #[arg(long, value_enum, default_value_t = Expect::Echo)]
    expect: Expect,
    /// Timeout for connect, send and receive.
    #[arg(long, default_value = "2s", value_parser = parse_timeout, value_name = "DURATION")]
    timeout: Duration,
    /// Highest error rate (0..1) that still exits 0.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction, value_name = "R")]
    max_error_rate: f64,
    /// Print one JSON object instead of the human summary.
    #[arg(long)]
    json: bool,
    /// Save the latency histogram and counts (HdrHistogram interval log) to FILE.
    #[arg(long, value_name = "FILE")]
    hist: Option<PathBuf>,
    /// TCP to an IPv4 loopback server: spread connections over N source
    /// addresses (127.0.0.2 and up), so connect() does not search one
    /// address's ports past TIME_WAIT connections (for --mode connect).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=253), value_name = "N")]
    sources: u8,
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

/// Turns the flags into a configuration; `Err` is a usage error (exit 2).
fn config(a: RunArgs) -> Result<(Config, bool), String> {
    let connect = match (a.connect, a.transport.is_unix()) {
        (Some(c), _) => c,
        (None, false) => "127.0.0.1:9000".into(),
        (None, true) => {
            return Err(format!(
                "--transport {} needs --connect PATH or @name",
                a.transport
            ))
        }
    };
    let addr = a
        .transport
        .parse_address(&connect)
        .map_err(|e| format!("--connect: {e}"))?;
    let mut cfg = Config::new(a.transport, addr);
    cfg.connections = a.connections as usize;
    cfg.stop = match (a.requests, a.duration) {
        (Some(n), _) => Stop::Requests(n),
        (None, d) => Stop::Duration(d.unwrap_or(Duration::from_secs(10))),
    };
    cfg.warmup = a.warmup;
    cfg.size = a.size as usize;
    cfg.mode = a.mode;
    cfg.rate = a.rate;
    cfg.expect = a.expect;
    cfg.timeout = a.timeout;
    cfg.max_error_rate = a.max_error_rate;
    cfg.hist = a.hist;
    cfg.sources = a.sources;
    cfg.validate().map_err(|e| format!("{e:#}"))?;
    Ok((cfg, a.json))
}

fn main() {
    std::process::exit(real_main());
}

fn real_main() -> i32 {
    let cli: Cli = cli::parse("sockload"); // usage errors exit 2 here, in one line
    let result = match cli.cmd {
        Some(Cmd::Report(r)) => report(&r),
        Some(Cmd::Merge(m)) => load::merge(
            &m.files,
            m.max_error_rate,
            Output {
                json: m.json,
                progress: false,
            },
        ),
        None => {
            let (cfg, json) = match config(cli.run) {
                Ok(c) => c,
                Err(msg) => {
                    eprintln!("sockload: {msg}");
                    return 2;
                }
            };
            // First Ctrl-C (or SIGTERM): stop and report what was measured; second Ctrl-C: exit now.
            let interrupt = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                let _ = signal_hook::flag::register_conditional_shutdown(
                    sig,
                    130,
                    Arc::clone(&interrupt),
                );
                let _ = signal_hook::flag::register(sig, Arc::clone(&interrupt));
            }
            load::run(
                &cfg,
                Output {
                    json,
                    progress: true,
                },
                &interrupt,
            )
        }
    };
    match result {
        Ok(v) => v.exit_code(),
        Err(e) => {
            eprintln!("sockload: {e:#}");
            Verdict::Fail.exit_code()
        }
    }
}
