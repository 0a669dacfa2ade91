//! The access log (`--access-log`): one line per stream connection or
//! datagram, as text or JSON lines:
//!
//! ```text
//! 2026-12-01T09:30:00.123456Z 127.0.0.1:51234 ok 87us in=6 out=6
//! {"ts":"2026-12-01T09:30:00.123456Z","peer":"127.0.0.1:51234","outcome":"ok","duration_us":87,"bytes_in":6,"bytes_out":6}
//! ```
//!
//! Outcomes: `ok`; `error` (the handler failed or panicked); `timeout` (the
//! idle timeout ended it); `reset` (the client went away mid-request);
//! `rejected` (`verify_request` refused it). Each line is one `write(2)` to
//! a file opened for appending, so the workers and fork children that share
//! it never interleave within a line. Off unless configured: the request
//! path then pays one branch. After logrotate, [`reopen_on_signal`]'s
//! signal (sockserv: USR1) reopens the file before the next line.

use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::addr::Address;
use crate::error::{Error, Result};

/// Where access lines go, and in which format.
#[derive(Debug)]
pub struct AccessLog {
    out: Out,
    json: bool,
}

#[derive(Debug)]
enum Out {
    File { path: PathBuf, file: Mutex<File> },
    Stdout,
}

/// Set by [`reopen_on_signal`]'s signal: reopen before the next line.
fn reopen_flag() -> &'static Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Makes `sig` reopen every access log file of this process (after
/// logrotate moved it) before its next line; the handler only sets a flag.
pub fn reopen_on_signal(sig: crate::Signal) -> std::io::Result<()> {
    signal_hook::flag::register(sig as i32, Arc::clone(reopen_flag()))?;
    Ok(())
}

fn open_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| Error::socket("open access log", path.display(), e))
}

/// How one connection or datagram ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    Error,
    Timeout,
    Reset,
    Rejected,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::Reset => "reset",
            Outcome::Rejected => "rejected",
        }
    }
}

impl AccessLog {
    /// Appends to the file at `path` (created with mode 0640); `json`
    /// writes JSON lines. The error names the path.
    pub fn open(path: &Path, json: bool) -> Result<AccessLog> {
        Ok(AccessLog {
            out: Out::File {
                path: path.to_path_buf(),
                file: Mutex::new(open_file(path)?),
            },
            json,
        })
    }

    /// Writes to standard output.
    pub fn stdout(json: bool) -> AccessLog {
        AccessLog {
            out: Out::Stdout,
            json,
        }
    }

    /// Writes one line; a failure to write is ignored (the access log must
    /// never fail a request).
    pub(crate) fn record(
        &self,
        peer: &Address,
        outcome: Outcome,
        took: Duration,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        // Formatted on the stack: a fork child that allocated would copy a
        // heap page it shares with its parent.
        let ts = crate::log::Timestamp::now(6);
        let us = took.as_micros();
        let mut line = Line::new();
        let written = if self.json {
            write!(
                line,
                "{{\"ts\":\"{ts}\",\"peer\":\"{}\",\"outcome\":\"{}\",\"duration_us\":{us},\
                 \"bytes_in\":{bytes_in},\"bytes_out\":{bytes_out}}}",
                Json(peer),
                outcome.name()
            )
        } else {
            write!(
                line,
                "{ts} {peer} {} {us}us in={bytes_in} out={bytes_out}",
                outcome.name()
            )
        };
        if written.is_err() {
            line.len = line.buf.len() - 1; // cut at the buffer's end
        }
        line.buf[line.len] = b'\n';
        let line = &line.buf[..=line.len];
        let _ = match &self.out {
            Out::File { path, file } => {
                let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
                if reopen_flag().swap(false, Ordering::SeqCst) {
                    if let Ok(new) = open_file(path) {
                        *f = new; // on failure the old file stays in use
                    }
                }
                f.write_all(line)
            }
            Out::Stdout => std::io::stdout().lock().write_all(line),
        };
    }
}

/// One access line, built in a stack buffer (no allocation).
struct Line {
    buf: [u8; 1024],
    len: usize,
}

impl Line {
    fn new() -> Line {
        Line {
            buf: [0; 1024],
            len: 0,
        }
    }
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // One byte stays free for the newline.
        let room = self.buf.len() - 1 - self.len;
        if s.len() > room {
            return Err(fmt::Error);
        }
        self.buf[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
        self.len += s.len();
        Ok(())
    }
}

/// Displays its value with JSON string escapes (without the quotes).
struct Json<T>(T);

impl<T: fmt::Display> fmt::Display for Json<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Escape<'a, 'b>(&'a mut fmt::Formatter<'b>);
        impl fmt::Write for Escape<'_, '_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                for c in s.chars() {
                    match c {
                        '"' => self.0.write_str("\\\"")?,
                        '\\' => self.0.write_str("\\\\")?,
                        c if (c as u32) < 0x20 || c == '\u{7f}' => {
                            write!(self.0, "\\u{:04x}", c as u32)?
                        }
                        c => self.0.write_char(c)?,
                    }
                }
                Ok(())
            }
        }
        write!(Escape(f), "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes_quotes_and_controls_without_allocating_the_line() {
        assert_eq!(Json("a\"b\\c\n").to_string(), "a\\\"b\\\\c\\u000a");
        let mut l = Line::new();
        assert!(
            write!(l, "{}", "x".repeat(2000)).is_err(),
            "overflow is reported"
        );
        let mut l = Line::new();
        write!(l, "ok {}", 5).unwrap();
        assert_eq!(&l.buf[..l.len], b"ok 5");
    }
}
