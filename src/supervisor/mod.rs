//! The supervisor: `sockserv`'s master process, which binds the socket,
//! forks `--workers` workers that serve on it, restarts them when they die
//! (with back-off and a crash-loop limit), and obeys gunicorn's signals.
//!
//! | signal      | master does                                              |
//! |-------------|----------------------------------------------------------|
//! | TERM        | graceful stop: workers finish in-flight requests         |
//! | INT, QUIT   | fast stop: workers and their children are killed         |
//! | HUP         | reload: new workers start, then old ones stop gracefully |
//! | TTIN / TTOU | one worker more / one fewer (never below one)            |
//! | CHLD        | reap, and restart as the restart policy says             |
//!
//! Modules: [`master`] (the loop), [`worker`] (a worker's life),
//! [`signals`] (the queue), [`restart`] (back-off, crash loop),
//! [`pidfile`], [`systemd`] (socket activation, sd_notify).

pub mod master;
pub mod pidfile;
pub mod restart;
pub mod signals;
pub mod systemd;
pub mod worker;

use std::path::PathBuf;
use std::time::Duration;

use slog::Logger;

use crate::app::ServeConfig;
use crate::error::Result;

/// Everything the master needs.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// What each worker serves.
    pub serve: ServeConfig,
    /// Worker processes to keep running.
    pub workers: usize,
    /// Each worker binds its own SO_REUSEPORT socket (the master binds none).
    pub reuse_port: bool,
    /// More than this many unexpected deaths within `restart_window` stop
    /// the master.
    pub restart_burst: usize,
    /// See `restart_burst`.
    pub restart_window: Duration,
    /// A worker retires after this many requests (0: never).
    pub max_requests: u64,
    /// Up to this many extra requests, per worker, so they retire apart.
    pub max_requests_jitter: u64,
    /// A worker silent this long is killed and replaced.
    pub worker_timeout: Option<Duration>,
    /// Where to write the master's pid.
    pub pid_file: Option<PathBuf>,
}

/// Runs the master until it is stopped; returns the exit code.
pub fn run(cfg: &SupervisorConfig, log: &Logger) -> Result<i32> {
    let master = master::Master::new(cfg, log.clone())?;
    let _pid = cfg
        .pid_file
        .as_deref()
        .map(pidfile::PidFile::create)
        .transpose()?;
    Ok(master.run())
}
