//! A worker: the master's forked child that builds the program's server on
//! the inherited socket, beats its heart to the master, and retires after
//! `max_requests`.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use slog::{crit, info, o, Logger};

use super::{BuildServer, Supervisor};
use crate::addr::Address;
use crate::error::{Error, RequestError, Result};
use crate::hooks::Hooks;
use crate::server::ServerBuilder;
use crate::socket::{BindOptions, Listener};
use crate::{sys, ShutdownHandle};

/// Exit status of a worker that could not start serving (gunicorn's
/// WORKER_BOOT_ERROR): the master stops instead of restarting it forever.
pub const BOOT_ERROR: i32 = 3;

/// Heartbeat bytes a worker sends the master.
pub(super) mod beat {
    /// Serving: sent once, after the server is built.
    pub(crate) const READY: u8 = b'R';
    /// Still alive (sent at most every [`super::BEAT_EVERY`]).
    pub(crate) const ALIVE: u8 = b'.';
    /// Leaving after `--max-requests`: expected, replace without back-off.
    pub(crate) const RETIRING: u8 = b'X';
}

/// Shortest interval between two heartbeats.
pub(super) const BEAT_EVERY: Duration = Duration::from_millis(200);

/// What the master hands a new worker.
pub(super) struct WorkerInit {
    /// The counters slot the master reads for this worker.
    pub(super) counters: &'static crate::stats::Slot,
    /// The master's listening socket (None: bind an SO_REUSEPORT socket).
    pub(super) listener: Option<Listener>,
    /// The worker's end of its heartbeat channel.
    pub(super) heartbeat: UnixStream,
    /// The master's pid, to notice if it died before PDEATHSIG was set.
    pub(super) master_pid: u32,
    /// The signal mask to restore once the worker's handlers are in place
    /// (the master forks with its signals blocked).
    pub(super) signal_mask: SigSet,
}

/// Runs a worker to its end and returns its exit status; the caller (the
/// fork's child side) `_exit`s with it.
pub(super) fn run(
    cfg: &Supervisor,
    build: &dyn BuildServer,
    init: WorkerInit,
    log: &Logger,
) -> i32 {
    let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        serve(cfg, build, init, log)
    }));
    match served {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            crit!(log, "worker cannot serve"; "error" => %e);
            BOOT_ERROR
        }
        Err(_) => {
            crit!(log, "worker panicked");
            1
        }
    }
}

fn serve(cfg: &Supervisor, build: &dyn BuildServer, init: WorkerInit, log: &Logger) -> Result<()> {
    // Own process group: a stop or a timeout kill reaches fork-policy
    // children too, and a terminal's Ctrl-C goes to the master only.
    let _ = nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0));
    sys::set_parent_death_signal(Signal::SIGKILL)
        .map_err(|e| Error::os("prctl PR_SET_PDEATHSIG", e))?;
    if std::os::unix::process::parent_id() != init.master_pid {
        return Err(Error::Config(
            "master exited before the worker started".into(),
        ));
    }
    let listener = match init.listener {
        Some(l) => l,
        None => bind_reuse_port(cfg)?,
    };
    let hooks = WorkerHooks::new(init.heartbeat, cfg);
    let layer = hooks.clone();
    let builder = ServerBuilder::from_listener(listener)
        .counters_slot(init.counters)
        .policy(cfg.policy)
        .logger(log.new(o!()))
        .layer(Box::new(move |inner| layer.wrap(inner)));
    let mut server = build(builder)?;
    let handle = server.shutdown_handle();
    handle.stop_on_signal(Signal::SIGTERM)?;
    // The master forwards USR1 (logrotate): reopen before the next record.
    crate::log::reopen_on_signal(Signal::SIGUSR1)
        .map_err(|e| Error::os("install SIGUSR1 handler", e))?;
    // A TERM sent while the worker booted is delivered now, to its handler.
    sys::restore_signals(&init.signal_mask).map_err(|e| Error::os("sigprocmask", e))?;
    let _ = hooks.0.stop.set(handle);
    info!(log, "worker serving"; "addr" => %server.address(), "policy" => server.policy().name());
    hooks.send(beat::READY);
    let poll = cfg.worker_timeout.map_or(Duration::from_millis(500), |t| {
        (t / 4).min(Duration::from_millis(500))
    });
    server.serve_forever(poll.max(Duration::from_millis(10)))?;
    if hooks.retiring() {
        hooks.send(beat::RETIRING);
        info!(log, "worker retiring"; "requests" => hooks.0.served.load(Ordering::Relaxed));
    }
    server.close_gracefully(cfg.graceful_timeout);
    Ok(())
}

fn bind_reuse_port(cfg: &Supervisor) -> Result<Listener> {
    let opts = BindOptions {
        allow_reuse_port: true,
        ..cfg.bind.clone()
    };
    let mut l = Listener::bind(cfg.transport, &cfg.address, &opts)?;
    l.disown_path();
    Ok(l)
}

struct Inner {
    heartbeat: UnixStream,
    last_beat: Mutex<Instant>,
    served: AtomicU64,
    max_requests: u64,
    stop: OnceLock<ShutdownHandle>,
}

/// The worker's part of every hook call: count requests toward
/// `max_requests` and send a heartbeat from the serving loop. Wraps the
/// hooks the program chose (see [`WorkerHooks::wrap`]).
#[derive(Clone)]
struct WorkerHooks(Arc<Inner>);

impl WorkerHooks {
    fn new(heartbeat: UnixStream, cfg: &Supervisor) -> Self {
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
            stop: OnceLock::new(),
        }))
    }

    /// The program's hooks with the worker's around them.
    fn wrap(self, inner: Arc<dyn Hooks>) -> Arc<dyn Hooks> {
        Arc::new(Layered {
            worker: self,
            inner,
        })
    }

    fn send(&self, byte: u8) {
        // Non-blocking: if the master is not reading, a beat is dropped.
        let _ = (&self.0.heartbeat).write(&[byte]);
    }

    fn retiring(&self) -> bool {
        self.0.max_requests > 0 && self.0.served.load(Ordering::Relaxed) >= self.0.max_requests
    }

    fn request_taken(&self) {
        self.0.served.fetch_add(1, Ordering::Relaxed);
        if self.retiring() {
            // Serve this one, then stop accepting: the loop ends before the
            // next accept, and close_gracefully finishes what is in flight.
            if let Some(stop) = self.0.stop.get() {
                stop.request_shutdown();
            }
        }
    }

    fn beat(&self) {
        let mut last = self.0.last_beat.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() >= BEAT_EVERY {
            *last = Instant::now();
            self.send(beat::ALIVE);
        }
    }
}

/// A worker's hooks: the program's, then the worker's bookkeeping.
struct Layered {
    worker: WorkerHooks,
    inner: Arc<dyn Hooks>,
}

impl Hooks for Layered {
    fn verify_request(&self, peer: &Address) -> bool {
        if !self.inner.verify_request(peer) {
            return false;
        }
        self.worker.request_taken();
        true
    }

    fn handle_timeout(&self) {
        self.inner.handle_timeout();
    }

    fn service_actions(&self) {
        self.worker.beat();
        self.inner.service_actions();
    }

    fn handle_error(&self, peer: &Address, err: &RequestError, log: &Logger) {
        self.inner.handle_error(peer, err, log);
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
