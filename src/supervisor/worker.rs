//! A worker: the master's forked child that serves on the inherited socket
//! with the configured policy, beats its heart to the master, and retires
//! after `--max-requests`.

use std::io::Write;
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use slog::{crit, info, Logger};

use super::SupervisorConfig;
use crate::addr::Address;
use crate::dispatch::RequestError;
use crate::error::{Error, Result};
use crate::hooks::{AllowList, Hooks};
use crate::socket::{BindOptions, Listener};
use crate::{sys, ShutdownHandle};

/// Exit status of a worker that could not start serving (gunicorn's
/// WORKER_BOOT_ERROR): the master stops instead of restarting it forever.
pub const BOOT_ERROR: i32 = 3;

/// Heartbeat bytes a worker sends the master.
pub mod beat {
    /// Serving: sent once, after the server is built.
    pub const READY: u8 = b'R';
    /// Still alive (sent at most every [`super::BEAT_EVERY`]).
    pub const ALIVE: u8 = b'.';
    /// Leaving after `--max-requests`: expected, replace without back-off.
    pub const RETIRING: u8 = b'X';
}

/// Shortest interval between two heartbeats.
pub const BEAT_EVERY: Duration = Duration::from_millis(200);

/// What the master hands a new worker.
pub struct WorkerInit {
    /// The inherited listening socket (None: bind an SO_REUSEPORT socket).
    pub listener_fd: Option<RawFd>,
    /// The worker's end of its heartbeat channel.
    pub heartbeat: UnixStream,
    /// Descriptors only the master needs, closed at once in the worker.
    pub close_fds: Vec<RawFd>,
    /// The master's pid, to notice if it died before PDEATHSIG was set.
    pub master_pid: u32,
    /// The signal mask to restore once the worker's handlers are in place
    /// (the master forks with its signals blocked).
    pub signal_mask: nix::sys::signal::SigSet,
}

/// Runs a worker to its end; never returns (nor unwinds into the
/// master's code it was forked from).
pub fn run(cfg: &SupervisorConfig, init: WorkerInit, log: &Logger) -> ! {
    let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| serve(cfg, init, log)));
    let code = match served {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            crit!(log, "worker cannot serve"; "error" => %e);
            BOOT_ERROR
        }
        Err(_) => {
            crit!(log, "worker panicked");
            1
        }
    };
    sys::exit_now(code)
}

fn serve(cfg: &SupervisorConfig, init: WorkerInit, log: &Logger) -> Result<()> {
    // Own process group: a stop or a timeout kill reaches fork-policy
    // children too, and a terminal's Ctrl-C goes to the master only.
    let _ = nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0));
    sys::set_parent_death_signal(libc::SIGKILL)
        .map_err(|e| Error::os("prctl PR_SET_PDEATHSIG", e))?;
    if std::os::unix::process::parent_id() != init.master_pid {
        return Err(Error::Config(
            "master exited before the worker started".into(),
        ));
    }
    for fd in &init.close_fds {
        sys::close_fd(*fd);
    }
    let listener = match init.listener_fd {
        Some(fd) => Listener::from_raw_fd(fd, cfg.serve.transport)?,
        None => bind_reuse_port(cfg)?,
    };
    let hooks = WorkerHooks::new(init.heartbeat, cfg, cfg.serve.allow_list()?);
    let mut server = cfg.serve.build(Some(listener), hooks.clone(), log)?;
    let handle = server.shutdown_handle();
    handle
        .stop_on_signal(libc::SIGTERM)
        .map_err(|e| Error::os("install SIGTERM handler", e))?;
    // A TERM sent while the worker booted is delivered now, to its handler.
    sys::restore_signals(&init.signal_mask).map_err(|e| Error::os("sigprocmask", e))?;
    let _ = hooks.0.stop.set(handle);
    info!(log, "worker serving"; "addr" => %server.address(), "policy" => cfg.serve.policy.name());
    hooks.send(beat::READY);
    let poll = cfg.worker_timeout.map_or(Duration::from_millis(500), |t| {
        (t / 4).min(Duration::from_millis(500))
    });
    server.serve_forever(poll.max(Duration::from_millis(10)))?;
    if hooks.retiring() {
        hooks.send(beat::RETIRING);
        info!(log, "worker retiring"; "requests" => hooks.0.served.load(Ordering::Relaxed));
    }
    server.close_gracefully(cfg.serve.graceful_timeout);
    Ok(())
}

fn bind_reuse_port(cfg: &SupervisorConfig) -> Result<Listener> {
    let opts = BindOptions {
        allow_reuse_port: true,
        ..cfg.serve.bind.clone()
    };
    let mut l = Listener::bind(cfg.serve.transport, &cfg.serve.listen, &opts)?;
    l.disown_path();
    Ok(l)
}

struct Inner {
    heartbeat: UnixStream,
    last_beat: Mutex<Instant>,
    served: AtomicU64,
    max_requests: u64,
    allow: Option<AllowList>,
    stop: OnceLock<ShutdownHandle>,
}

/// The worker's hooks: count requests toward `--max-requests`, apply the
/// allow-list, and send a heartbeat from the serving loop.
#[derive(Clone)]
struct WorkerHooks(Arc<Inner>);

impl WorkerHooks {
    fn new(heartbeat: UnixStream, cfg: &SupervisorConfig, allow: Option<AllowList>) -> Self {
        let _ = heartbeat.set_nonblocking(true);
        let max_requests = match cfg.max_requests {
            0 => 0,
            n => n + jitter(cfg.max_requests_jitter),
        };
        WorkerHooks(Arc::new(Inner {
            heartbeat,
            last_beat: Mutex::new(Instant::now()),
            served: AtomicU64::new(0),
            max_requests,
            allow,
            stop: OnceLock::new(),
        }))
    }

    fn send(&self, byte: u8) {
        // Non-blocking: if the master is not reading, a beat is dropped.
        let _ = (&self.0.heartbeat).write(&[byte]);
    }

    fn retiring(&self) -> bool {
        self.0.max_requests > 0 && self.0.served.load(Ordering::Relaxed) >= self.0.max_requests
    }
}

impl Hooks for WorkerHooks {
    fn verify_request(&self, peer: &Address) -> bool {
        if let Some(allow) = &self.0.allow {
            if !allow.admits(peer) {
                return false;
            }
        }
        self.0.served.fetch_add(1, Ordering::Relaxed);
        if self.retiring() {
            // Serve this one, then stop accepting: the loop ends before the
            // next accept, and close_gracefully finishes what is in flight.
            if let Some(stop) = self.0.stop.get() {
                stop.request_shutdown();
            }
        }
        true
    }

    fn service_actions(&self) {
        let mut last = self.0.last_beat.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() >= BEAT_EVERY {
            *last = Instant::now();
            self.send(beat::ALIVE);
        }
    }

    fn handle_error(&self, peer: &Address, err: &RequestError, log: &Logger) {
        crate::hooks::DefaultHooks.handle_error(peer, err, log);
    }
}

/// A per-process spread in 0..=max, so workers do not all retire at once.
fn jitter(max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let seed = u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (seed >> 17) % (max + 1)
}
