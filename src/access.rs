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
//! path then pays one branch.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
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
    File(File),
    Stdout,
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
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)
            .map_err(|e| Error::socket("open access log", path.display(), e))?;
        Ok(AccessLog {
            out: Out::File(file),
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
        let ts = crate::log::utc_now(6);
        let us = took.as_micros();
        let line = if self.json {
            let mut peer_json = String::new();
            crate::log::json_string(&mut peer_json, &peer.to_string());
            format!(
                "{{\"ts\":\"{ts}\",\"peer\":{peer_json},\"outcome\":\"{}\",\"duration_us\":{us},\
                 \"bytes_in\":{bytes_in},\"bytes_out\":{bytes_out}}}\n",
                outcome.name()
            )
        } else {
            format!(
                "{ts} {peer} {} {us}us in={bytes_in} out={bytes_out}\n",
                outcome.name()
            )
        };
        let _ = match &self.out {
            Out::File(f) => (&*f).write_all(line.as_bytes()),
            Out::Stdout => std::io::stdout().lock().write_all(line.as_bytes()),
        };
    }
}
