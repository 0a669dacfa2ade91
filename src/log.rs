//! Loggers for servers and the binaries: slog to stderr, as terminal text
//! or JSON lines, or nowhere.
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
            let decorator = slog_term::PlainSyncDecorator::new(RecordWriter::default());
            let drain = slog_term::FullFormat::new(decorator).build();
            finish(drain, level)
        }
        LogFormat::Json => {
            let drain = slog_json::Json::new(RecordWriter::default())
                .add_default_keys()
                .set_flush(true)
                .build();
            finish(drain, level)
        }
    }
}

/// Collects one log record and writes it to stderr with a single write(2)
/// when the formatter flushes at the end of the record. The master, its
/// workers and fork children share stderr; written piecemeal, their
/// records would interleave mid-line. A write of under PIPE_BUF (4096)
/// bytes to a pipe is atomic.
#[derive(Default)]
struct RecordWriter {
    buf: Vec<u8>,
}

impl std::io::Write for RecordWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let res = std::io::stderr().lock().write_all(&self.buf);
        self.buf.clear();
        res
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

/// A logger that drops every record (what a server logs to by default).
pub fn discard() -> Logger {
    Logger::root(slog::Discard, o!())
}
