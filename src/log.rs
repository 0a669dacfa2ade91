//! Loggers for the binaries: slog to stderr, as terminal text or JSON lines.
//!
//! The drains are synchronous (a `Mutex` around the formatter, no
//! background thread as `slog-async` would start), so a process that forks
//! stays single-threaded and a forked child may log like any code.

use std::str::FromStr;
use std::sync::Mutex;

use slog::{o, Drain, Level, Logger};

/// Output format of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Term,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "term" => Ok(LogFormat::Term),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format {other:?} (expected term or json)"
            )),
        }
    }
}

/// Parses a level name: critical, error, warning (warn), info, debug, trace.
pub fn parse_level(s: &str) -> Result<Level, String> {
    match s {
        "warn" => Ok(Level::Warning),
        other => Level::from_str(other).map_err(|()| {
            format!("unknown log level {other:?} (expected error, warn, info, debug or trace)")
        }),
    }
}

/// A logger writing to stderr in `format`, dropping records below `level`.
pub fn stderr_logger(format: LogFormat, level: Level) -> Logger {
    match format {
        LogFormat::Term => {
            let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
            let drain = slog_term::FullFormat::new(decorator).build();
            finish(drain, level)
        }
        LogFormat::Json => {
            let drain = slog_json::Json::new(std::io::stderr())
                .add_default_keys()
                .set_flush(true)
                .build();
            finish(drain, level)
        }
    }
}

fn finish<D>(drain: D, level: Level) -> Logger
where
    D: Drain<Ok = (), Err = std::io::Error> + Send + 'static,
{
    let drain = Mutex::new(drain).map(slog::IgnoreResult::new);
    let drain = slog::LevelFilter::new(drain, level).fuse();
    Logger::root(drain, o!("pid" => slog::FnValue(|_| std::process::id())))
}
