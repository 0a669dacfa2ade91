//! `sockload`: load generator for socketserver servers (see the README's sockload section).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

#[path = "sockload/args.rs"]
mod args;
#[path = "cli.rs"]
mod cli;

use args::{Cli, Cmd, ReportArgs, RunArgs};
use socketserver::load::{self, Config, Output, Stop, Verdict};

fn report(a: &ReportArgs) -> anyhow::Result<Verdict> {
    use anyhow::Context as _;
    let results = load::compare::read_dir(&a.dir)?;
    print!("{}", load::compare::markdown(&results));
    // The chart, when asked for; the page inlines it when there is one.
    let svg = if a.chart.is_some() || (a.html.is_some() && load::chart::has_contents(&results)) {
        Some(load::chart::render(&results)?)
    } else {
        None
    };
    if let (Some(path), Some(svg)) = (&a.chart, &svg) {
        std::fs::write(path, svg).with_context(|| format!("write chart {}", path.display()))?;
    }
    if let Some(path) = &a.html {
        let page = load::html::page(&results, svg.as_deref());
        std::fs::write(path, page).with_context(|| format!("write page {}", path.display()))?;
    }
    Ok(Verdict::Pass)
}

/// Turns the flags into a configuration; `Err` is a usage error (exit 2).
fn config(a: RunArgs) -> Result<(Config, Output), String> {
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
    if let Some(t) = a.threads {
        cfg.threads = t as usize;
    }
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
    load::raise_open_file_limit(&cfg)?;
    let out = Output {
        json: a.json,
        progress: true,
        latency: a.latency,
    };
    Ok((cfg, out))
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
                latency: m.latency,
            },
        ),
        None => {
            let (cfg, out) = match config(cli.run) {
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
            load::run(&cfg, out, &interrupt)
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
