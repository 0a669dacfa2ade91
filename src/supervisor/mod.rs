//! The supervisor: a master process that binds the socket, forks workers
//! that serve on it with *your* server, restarts them when they die (with
//! back-off and a crash-loop limit), and obeys gunicorn's signals. Any
//! handler runs under it, as gunicorn supervises any WSGI app; `sockserv`
//! serves its built-in services through this same API.
//!
//! ```no_run
//! use socketserver::supervisor::Supervisor;
//! use socketserver::{stream, Policy, StreamHandler, StreamRequest, Transport};
//! use std::io::{self, Write};
//!
//! struct Hello;
//! impl StreamHandler for Hello {
//!     fn handle(&mut self, conn: &mut StreamRequest) -> io::Result<()> {
//!         writeln!(conn, "hello from worker {}", std::process::id())
//!     }
//! }
//!
//! let addr = Transport::Tcp.parse_address("127.0.0.1:9000")?;
//! let code = Supervisor::new(Transport::Tcp, addr)
//!     .workers(2)
//!     .policy(Policy::FORK)
//!     .run(&socketserver::log::discard(), |builder| builder.build(stream(|| Hello)))?;
//! std::process::exit(code);
//! # Ok::<(), socketserver::Error>(())
//! ```
//!
//! | signal      | master does                                              |
//! |-------------|----------------------------------------------------------|
//! | TERM        | graceful stop: workers finish in-flight requests         |
//! | INT, QUIT   | fast stop: workers and their children are killed         |
//! | HUP         | reload: new workers start, then old ones stop gracefully |
//! | TTIN / TTOU | one worker more / one fewer (never below one)            |
//! | USR1        | reopen the log file here and in every worker             |
//! | USR2        | upgrade in place: exec the binary again, hand it the socket |
//! | WINCH       | workers stop gracefully; the socket stays; HUP resumes   |
//! | CHLD        | reap, and restart as the restart policy says             |
//! | ALRM, PROF, ... | logged and ignored (never a default death)           |
//!
//! Modules: `master` (the loop), `worker` (a worker's life), `signals`
//! (the queue), `restart` (back-off, crash loop), `upgrade` (USR2),
//! `pidfile`, [`systemd`] (socket activation, sd_notify).

pub(crate) mod control;
mod master;
#[cfg(feature = "metrics")]
pub(crate) mod metrics;
mod pidfile;
mod restart;
mod signals;
pub mod status;
pub mod systemd;
mod upgrade;
mod worker;

use std::path::PathBuf;
use std::time::Duration;

use slog::Logger;

use crate::addr::{Address, Transport};
use crate::error::Result;
use crate::policy::Policy;
use crate::server::{Server, ServerBuilder};
use crate::socket::BindOptions;

pub use restart::{FIRST_DELAY, MAX_DELAY, YOUNG};
pub use worker::BOOT_ERROR;

/// How a worker builds its server: called once in each new worker with a
/// builder already holding the inherited socket, the supervisor's policy
/// and logger. Set the handler factory, hooks and any other option, and
/// build: `|b| b.hooks(MyHooks).build(|| MyHandler)`.
pub trait BuildServer: Fn(ServerBuilder) -> Result<Server> {}

impl<F: Fn(ServerBuilder) -> Result<Server>> BuildServer for F {}

/// A supervised server's settings, set with the builder methods; then
/// [`Supervisor::run`].
#[derive(Debug, Clone)]
pub struct Supervisor {
    transport: Transport,
    address: Address,
    bind: BindOptions,
    policy: Policy,
    name: String,
    workers: usize,
    reuse_port: bool,
    restart_burst: usize,
    restart_window: Duration,
    max_requests: u64,
    max_requests_jitter: u64,
    worker_timeout: Option<Duration>,
    graceful_timeout: Duration,
    pid_file: Option<PathBuf>,
    control: Option<PathBuf>,
    #[cfg(feature = "metrics")]
    metrics: Option<std::net::SocketAddr>,
}

impl Supervisor {
    /// A supervisor for a server on `address`: one worker, `Policy::Sync`,
    /// 5 deaths in 10 s allowed, a 30 s graceful timeout, no pid file.
    pub fn new(transport: Transport, address: Address) -> Supervisor {
        Supervisor {
            transport,
            address,
            bind: BindOptions::default(),
            policy: Policy::Sync,
            name: String::from("server"),
            workers: 1,
            reuse_port: false,
            restart_burst: 5,
            restart_window: Duration::from_secs(10),
            max_requests: 0,
            max_requests_jitter: 0,
            worker_timeout: None,
            graceful_timeout: Duration::from_secs(30),
            pid_file: None,
            control: None,
            #[cfg(feature = "metrics")]
            metrics: None,
        }
    }

    /// Socket options the master binds with (SO_REUSEADDR is on by default).
    pub fn bind_options(mut self, opts: BindOptions) -> Self {
        self.bind = opts;
        self
    }

    /// The policy each worker's server starts with (its builder's default).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// What is served, for the master's log lines (`service` key).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Worker processes to keep running (1 to 2048).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.clamp(1, master::MAX_WORKERS);
        self
    }

    /// Each worker binds its own SO_REUSEPORT socket and the master binds
    /// none (a dying worker's queued connections are then reset).
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.reuse_port = on;
        self
    }

    /// More than `burst` unexpected worker deaths within `window` stop the
    /// master with exit code 1 (a crash loop).
    pub fn restart_limit(mut self, burst: usize, window: Duration) -> Self {
        self.restart_burst = burst;
        self.restart_window = window;
        self
    }

    /// A worker retires gracefully after `n` requests plus up to `jitter`
    /// more (0: never), and is replaced at once.
    pub fn max_requests(mut self, n: u64, jitter: u64) -> Self {
        self.max_requests = n;
        self.max_requests_jitter = jitter;
        self
    }

    /// A worker whose serving loop sends no heartbeat this long is killed
    /// (with its process group) and replaced (None: never).
    pub fn worker_timeout(mut self, t: Option<Duration>) -> Self {
        self.worker_timeout = t;
        self
    }

    /// How long in-flight requests may run after a stop or reload.
    pub fn graceful_timeout(mut self, t: Duration) -> Self {
        self.graceful_timeout = t;
        self
    }

    /// Where to write the master's pid (refused if it names a live process).
    pub fn pid_file(mut self, path: Option<PathBuf>) -> Self {
        self.pid_file = path;
        self
    }

    /// Serve the status scoreboard on a Unix socket at `path` (mode 0600,
    /// removed on exit): a client sends `status` and a newline and reads
    /// one line of JSON ([`status::Status::to_json`]).
    pub fn control(mut self, path: Option<PathBuf>) -> Self {
        self.control = path;
        self
    }

    /// Serve Prometheus metrics over HTTP on `addr` (`GET /metrics`, the
    /// text exposition format): the same numbers as the status socket,
    /// answered from the master's loop. Port 0 picks a free port; the
    /// master logs the one it bound.
    #[cfg(feature = "metrics")]
    pub fn metrics(mut self, addr: Option<std::net::SocketAddr>) -> Self {
        self.metrics = addr;
        self
    }

    /// The transport served.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The address the master binds.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The workers kept running.
    pub fn worker_count(&self) -> usize {
        self.workers
    }

    /// Becomes the master: binds the socket (or takes it from systemd's
    /// socket activation), writes the pid file, forks the workers, each of
    /// which calls `build` and serves, and supervises them until a stop
    /// signal. Returns the process exit code: 0 after a stop, 1 after a
    /// crash loop or a worker that could not boot ([`BOOT_ERROR`]).
    ///
    /// Call it from a single-threaded process (it forks); it fails
    /// otherwise. `build` runs in the worker, never in the master.
    pub fn run(&self, log: &Logger, build: impl BuildServer) -> Result<i32> {
        let master = master::Master::new(self, &build, log.clone())?;
        let pid_file = self
            .pid_file
            .as_deref()
            .map(pidfile::PidFile::create)
            .transpose()?;
        Ok(master.run(pid_file))
    }
}
