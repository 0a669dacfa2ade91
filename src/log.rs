//! Loggers for servers and the binaries: slog records to stderr, as
//! terminal text or JSON lines, or nowhere.
//!
//! The drains are this module's own, so the library pulls in no time or
//! JSON crate: a record is formatted into one buffer and written with a
//! single write(2). The master, its workers and fork children share
//! stderr; written piecemeal, their records would interleave mid-line (a
//! write of under PIPE_BUF, 4096 bytes, to a pipe is atomic). The drains
//! are synchronous (a `Mutex`, no background thread as `slog-async` would
//! start), so a process that forks stays single-threaded and a forked
//! child may log like any code. Timestamps are UTC, RFC 3339.
//!
//! A log file ([`LogTarget::File`]) is opened for appending and reopened
//! by [`reopen`] after logrotate moved it away; a process that cannot
//! call it from its loop (a supervised worker) calls
//! [`reopen_on_signal`], and the next record it writes reopens the file
//! first.
//!
//! Text: `2026-12-01T07:54:21.123Z INFO listening, addr: 127.0.0.1:9000, pid: 42`.
//! JSON: `{"msg":"listening","level":"INFO","ts":"2026-12-01T07:54:21.123456Z","addr":"127.0.0.1:9000","pid":42}`.

use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use slog::{o, Drain, Key, OwnedKVList, Record, KV};

/// The logging crate the library logs through, for its macros
/// (`slog::info!(log, "msg"; "key" => value)`).
pub use slog;
pub use slog::{Level, Logger};

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

/// Where log records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard error (nothing to reopen).
    Stderr,
    /// A file, created if missing (mode 0640) and appended to.
    File(PathBuf),
}

/// A logger writing to stderr in `format`, dropping records below `level`.
/// Every record carries the writing process's `pid`.
pub fn stderr_logger(format: LogFormat, level: Level) -> Logger {
    make_logger(format, level, Sink::Stderr)
}

/// A logger writing to `target` in `format`, dropping records below
/// `level`; fails when the log file cannot be opened (the error names it).
/// A process has one log file: a second file logger shares the first's.
pub fn logger(format: LogFormat, level: Level, target: &LogTarget) -> crate::Result<Logger> {
    let sink = match target {
        LogTarget::Stderr => Sink::Stderr,
        LogTarget::File(path) => {
            let file = open_log(path)?;
            let shared = LOG_FILE.get_or_init(|| {
                Arc::new(LogFile {
                    path: path.clone(),
                    file: Mutex::new(file),
                })
            });
            Sink::File(Arc::clone(shared))
        }
    };
    Ok(make_logger(format, level, sink))
}

/// Reopens this process's log file at its path (after logrotate renamed
/// it). Returns the path, or None when logging goes to stderr. On failure
/// the old file stays in use and the error names the path.
pub fn reopen() -> crate::Result<Option<PathBuf>> {
    let Some(log) = LOG_FILE.get() else {
        return Ok(None);
    };
    let file = open_log(&log.path)?;
    *log.file.lock().unwrap_or_else(|p| p.into_inner()) = file;
    Ok(Some(log.path.clone()))
}

/// Makes `sig` ask for a [`reopen`], done before the next record is
/// written (the handler only sets a flag).
pub fn reopen_on_signal(sig: crate::Signal) -> io::Result<()> {
    signal_hook::flag::register(sig as i32, Arc::clone(reopen_flag()))?;
    Ok(())
}

fn reopen_flag() -> &'static Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// The process's log file, shared by its loggers.
static LOG_FILE: OnceLock<Arc<LogFile>> = OnceLock::new();

struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
}

fn open_log(path: &Path) -> crate::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| crate::Error::socket("open log file", path.display(), e))
}

enum Sink {
    Stderr,
    File(Arc<LogFile>),
}

fn make_logger(format: LogFormat, level: Level, sink: Sink) -> Logger {
    let drain = LineDrain {
        format,
        sink,
        buf: Mutex::new(String::new()),
    };
    let drain = slog::LevelFilter::new(drain.ignore_res(), level).fuse();
    Logger::root(drain, o!("pid" => slog::FnValue(|_| std::process::id())))
}

/// A logger that drops every record (what a server logs to by default).
pub fn discard() -> Logger {
    Logger::root(slog::Discard, o!())
}

/// Formats each record into one line and writes it to stderr at once.
struct LineDrain {
    format: LogFormat,
    sink: Sink,
    buf: Mutex<String>,
}

impl Drain for LineDrain {
    type Ok = ();
    type Err = std::io::Error;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> std::io::Result<()> {
        let mut buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        buf.clear();
        let json = self.format == LogFormat::Json;
        let fmt_result = if json {
            format_json(&mut buf, record, values)
        } else {
            format_term(&mut buf, record, values)
        };
        if fmt_result.is_err() {
            return Err(std::io::Error::other("a log value failed to format"));
        }
        buf.push('\n');
        match &self.sink {
            Sink::Stderr => io::stderr().lock().write_all(buf.as_bytes()),
            Sink::File(log) => {
                if reopen_flag().swap(false, Ordering::SeqCst) {
                    let _ = reopen(); // on failure the old file stays in use
                }
                let mut f = log.file.lock().unwrap_or_else(|p| p.into_inner());
                f.write_all(buf.as_bytes())
            }
        }
    }
}

fn format_term(out: &mut String, record: &Record<'_>, values: &OwnedKVList) -> slog::Result {
    write!(
        out,
        "{} {} {}",
        Timestamp::now(3),
        record.level().as_short_str(),
        record.msg()
    )?;
    let mut ser = TermKv(Vec::new());
    record.kv().serialize(record, &mut ser)?;
    in_order(out, &mut ser.0);
    values.serialize(record, &mut ser)?;
    in_order(out, &mut ser.0);
    Ok(())
}

/// slog hands over a group's pairs last first: appends them first first.
fn in_order(out: &mut String, items: &mut Vec<String>) {
    for item in items.drain(..).rev() {
        out.push_str(&item);
    }
}

fn format_json(out: &mut String, record: &Record<'_>, values: &OwnedKVList) -> slog::Result {
    out.push_str("{\"msg\":");
    json_string(out, &record.msg().to_string());
    out.push_str(",\"level\":");
    json_string(out, record.level().as_short_str());
    write!(out, ",\"ts\":\"{}\"", Timestamp::now(6))?;
    let mut ser = JsonKv(Vec::new());
    record.kv().serialize(record, &mut ser)?;
    in_order(out, &mut ser.0);
    values.serialize(record, &mut ser)?;
    in_order(out, &mut ser.0);
    out.push('}');
    Ok(())
}

/// `, key: value` pairs.
struct TermKv(Vec<String>);

impl slog::Serializer for TermKv {
    fn emit_arguments(&mut self, key: Key, val: &fmt::Arguments<'_>) -> slog::Result {
        self.0.push(format!(", {key}: {val}"));
        Ok(())
    }
}

/// `,"key":value` members: numbers, booleans and null as themselves,
/// everything else as a JSON string.
struct JsonKv(Vec<String>);

impl JsonKv {
    /// Starts a member: `,"key":`.
    fn key(&mut self, key: Key) -> &mut String {
        let mut m = String::from(",");
        json_string(&mut m, key);
        m.push(':');
        self.0.push(m);
        self.0.last_mut().expect("just pushed")
    }

    fn raw(&mut self, key: Key, val: impl fmt::Display) -> slog::Result {
        write!(self.key(key), "{val}")?;
        Ok(())
    }
}

impl slog::Serializer for JsonKv {
    fn emit_arguments(&mut self, key: Key, val: &fmt::Arguments<'_>) -> slog::Result {
        let text = val.to_string();
        json_string(self.key(key), &text);
        Ok(())
    }
    fn emit_str(&mut self, key: Key, val: &str) -> slog::Result {
        json_string(self.key(key), val);
        Ok(())
    }
    fn emit_bool(&mut self, key: Key, val: bool) -> slog::Result {
        self.raw(key, val)
    }
    fn emit_none(&mut self, key: Key) -> slog::Result {
        self.raw(key, "null")
    }
    fn emit_u64(&mut self, key: Key, val: u64) -> slog::Result {
        self.raw(key, val)
    }
    fn emit_i64(&mut self, key: Key, val: i64) -> slog::Result {
        self.raw(key, val)
    }
    fn emit_u32(&mut self, key: Key, val: u32) -> slog::Result {
        self.raw(key, val)
    }
    fn emit_i32(&mut self, key: Key, val: i32) -> slog::Result {
        self.raw(key, val)
    }
    fn emit_usize(&mut self, key: Key, val: usize) -> slog::Result {
        self.raw(key, val)
    }
    fn emit_isize(&mut self, key: Key, val: isize) -> slog::Result {
        self.raw(key, val)
    }
    fn emit_f64(&mut self, key: Key, val: f64) -> slog::Result {
        if val.is_finite() {
            self.raw(key, val)
        } else {
            self.raw(key, "null")
        }
    }
}

/// Appends `s` as a JSON string literal (the status JSON uses it too).
pub(crate) fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The current UTC time as RFC 3339 with `digits` of fractional seconds
/// (a `Display`, formatted without allocating).
pub(crate) struct Timestamp {
    secs: i64,
    nanos: u32,
    digits: usize,
}

impl Timestamp {
    pub(crate) fn now(digits: usize) -> Timestamp {
        Timestamp::at(SystemTime::now(), digits)
    }

    /// The time `t` (sockload's `started_at`).
    pub(crate) fn at(t: SystemTime, digits: usize) -> Timestamp {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        Timestamp {
            secs: d.as_secs() as i64,
            nanos: d.subsec_nanos(),
            digits,
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (days, rem) = (self.secs.div_euclid(86_400), self.secs.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        let frac = self.nanos / 10u32.pow(9 - self.digits as u32);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:0w$}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60,
            w = self.digits
        )
    }
}

/// Year, month, day of a count of days since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_map_to_calendar_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_788), (2026, 12, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = Timestamp {
            secs: 1_796_111_661,
            nanos: 123_456_789,
            digits: 3,
        };
        assert_eq!(t.to_string(), "2026-12-01T07:54:21.123Z");
    }

    #[test]
    fn json_strings_escape_quotes_controls_and_backslashes() {
        let mut s = String::new();
        json_string(&mut s, "a\"b\\c\nd\u{1b}[31m");
        assert_eq!(s, r#""a\"b\\c\nd\u001b[31m""#);
    }

    #[test]
    fn json_lines_carry_typed_values() {
        let buf = std::sync::Arc::new(Mutex::new(String::new()));
        struct Capture(std::sync::Arc<Mutex<String>>);
        impl Drain for Capture {
            type Ok = ();
            type Err = slog::Never;
            fn log(&self, r: &Record<'_>, v: &OwnedKVList) -> Result<(), slog::Never> {
                let mut out = self.0.lock().unwrap();
                format_json(&mut out, r, v).unwrap();
                Ok(())
            }
        }
        let log = Logger::root(Capture(buf.clone()), o!("pid" => 7));
        slog::info!(log, "listening"; "addr" => "127.0.0.1:1", "n" => 3u64, "ok" => true,
                    "x" => 0.5f64, "peer" => %"a\"b");
        let line = buf.lock().unwrap().clone();
        assert!(
            line.starts_with(r#"{"msg":"listening","level":"INFO","ts":""#),
            "{line}"
        );
        assert!(
            line.ends_with(
                r#","addr":"127.0.0.1:1","n":3,"ok":true,"x":0.5,"peer":"a\"b","pid":7}"#
            ),
            "{line}"
        );
    }
}
