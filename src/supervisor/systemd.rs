//! systemd integration: socket activation (`LISTEN_FDS` / `LISTEN_PID`) and
//! the notify protocol (`NOTIFY_SOCKET`, `sd_notify(3)`): READY, RELOADING
//! with MONOTONIC_USEC (`Type=notify-reload`), STOPPING once, STATUS, and
//! WATCHDOG pings when `WATCHDOG_USEC` asks for them.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::addr::Transport;
use crate::error::{Error, Result};
use crate::socket::Listener;

/// The first descriptor systemd passes.
pub const LISTEN_FDS_START: i32 = 3;

/// Takes the sockets systemd passed, if `LISTEN_PID` names this process,
/// and clears the variables so workers and children do not see them. Only
/// the first call in a process can take them.
pub fn listen_fds(transport: Transport) -> Result<Vec<Listener>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(Vec::new());
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(Vec::new());
    }
    let n: i32 = fds
        .trim()
        .parse()
        .map_err(|_| Error::Config(format!("LISTEN_FDS={fds:?} is not a number")))?;
    crate::sys::take_listen_fds(LISTEN_FDS_START, n)?
        .into_iter()
        .zip(LISTEN_FDS_START..)
        .map(|(fd, n)| {
            Listener::from_fd(fd, transport)
                .map_err(|e| Error::Config(format!("socket-activation fd {n}: {e}")))
        })
        .collect()
}

/// Sends `state` (e.g. `READY=1`) to the service manager, if there is one.
/// Returns whether a message was sent.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return false;
    };
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    let sent = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name)
                .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
        }
        None => sock.send_to(state.as_bytes(), &path),
    };
    sent.is_ok()
}

/// What the master tells the service manager, and when.
#[derive(Debug)]
pub(crate) struct Notifier {
    stopping_sent: bool,
    status: String,
    status_sent: Instant,
    /// Half the watchdog interval, when the manager set one for us.
    ping_every: Option<Duration>,
    last_ping: Instant,
}

impl Notifier {
    /// Reads `WATCHDOG_USEC` (and `WATCHDOG_PID`, which must name this
    /// process if set).
    pub(crate) fn from_env() -> Notifier {
        let pid_ok = std::env::var("WATCHDOG_PID")
            .ok()
            .is_none_or(|p| p.trim().parse::<u32>().ok() == Some(std::process::id()));
        let usec = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && pid_ok);
        Notifier {
            stopping_sent: false,
            status: String::new(),
            status_sent: Instant::now(),
            ping_every: usec.map(|u| Duration::from_micros(u) / 2),
            last_ping: Instant::now(),
        }
    }

    /// How long the master may sleep before the next watchdog ping.
    pub(crate) fn wake_within(&self) -> Option<Duration> {
        self.ping_every
            .map(|every| every.saturating_sub(self.last_ping.elapsed()))
    }

    /// Sends WATCHDOG=1 when half the interval has passed.
    pub(crate) fn watchdog(&mut self) {
        if let Some(every) = self.ping_every {
            if self.last_ping.elapsed() >= every {
                self.last_ping = Instant::now();
                notify("WATCHDOG=1");
            }
        }
    }

    /// The workers serve (at start, or the new generation after a reload).
    pub(crate) fn ready(&mut self) {
        notify("READY=1");
    }

    /// A reload begins (`Type=notify-reload` wants the clock with it).
    pub(crate) fn reloading(&mut self) {
        notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
    }

    /// The master is stopping: sent once, however many stop signals come.
    pub(crate) fn stopping(&mut self) {
        if !std::mem::replace(&mut self.stopping_sent, true) {
            notify("STOPPING=1");
        }
    }

    /// A one-line status (`systemctl status` shows it), sent when it changes.
    ///
    /// The line is "STATE; COUNTS": a change of state is sent at once,
    /// a change of the counts alone at most once a second.
    pub(crate) fn status(&mut self, line: String) {
        if line == self.status {
            return;
        }
        let state = |l: &str| l.split(';').next().unwrap_or("").to_owned();
        if state(&line) == state(&self.status) && self.status_sent.elapsed() < STATUS_EVERY {
            return;
        }
        notify(&format!("STATUS={line}"));
        self.status = line;
        self.status_sent = Instant::now();
    }
}

/// How often a STATUS= line that only counts more is sent.
const STATUS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// CLOCK_MONOTONIC in microseconds, as systemd reads it.
fn monotonic_usec() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => ts.tv_sec() as u64 * 1_000_000 + ts.tv_nsec() as u64 / 1_000,
        Err(_) => 0,
    }
}
