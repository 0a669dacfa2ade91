//! How requests run: Python's mixins as one enum chosen at run time.
//!
//! This is the one file that forks or spawns threads per request, and the
//! one that reaps them. Each runner provides Python's `process_request`,
//! the reaping Python's `ForkingMixIn` does in `service_actions` and
//! `handle_timeout`, and the waiting its `server_close` does.

use std::collections::HashSet;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Sender};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use slog::{debug, error, warn};

use crate::control::Control;
use crate::dispatch::Dispatch;
use crate::error::{Error, Result};
use crate::sys::{self, Forked};
use crate::transport::Incoming;
use crate::watch::{ConnRegistry, Watch};

/// How a server runs each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// One request at a time, in the serving thread.
    Sync,
    /// A child process per request (per connection, or per datagram), as
    /// Python's `ForkingMixIn`. Needs a single-threaded serving process.
    Fork {
        /// Live children allowed; at the bound, accepting waits for one to exit.
        max_children: usize,
        /// `server_close` waits for all children.
        block_on_close: bool,
    },
    /// A thread per request, as Python's `ThreadingMixIn`.
    Thread {
        /// Daemon threads are not joined by `server_close`.
        daemon: bool,
        /// `server_close` joins non-daemon threads.
        block_on_close: bool,
    },
    /// A fixed set of threads fed by a bounded queue. When threads and queue
    /// are all busy, the server stops accepting and the kernel backlog holds
    /// new clients.
    Pool {
        /// Worker threads.
        threads: usize,
        /// Requests that may wait for a free thread.
        queue: usize,
    },
}

impl Policy {
    /// `Fork` with Python's defaults (40 children, block on close).
    pub const FORK: Policy = Policy::Fork {
        max_children: 40,
        block_on_close: true,
    };
    /// `Thread` with Python's defaults (non-daemon, block on close).
    pub const THREAD: Policy = Policy::Thread {
        daemon: false,
        block_on_close: true,
    };

    /// A pool sized for this machine: 4 threads per CPU, a queue as long.
    pub fn pool_default() -> Policy {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Policy::Pool {
            threads: 4 * cpus,
            queue: 4 * cpus,
        }
    }

    /// The name used on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Policy::Sync => "sync",
            Policy::Fork { .. } => "fork",
            Policy::Thread { .. } => "thread",
            Policy::Pool { .. } => "pool",
        }
    }
}

/// Counts requests in progress and lets `server_close` wait for zero.
#[derive(Debug, Default)]
struct InFlight {
    count: Mutex<usize>,
    zero: Condvar,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, usize> {
        self.count.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start(&self) {
        *self.lock() += 1;
    }

    /// Marks one request done; returns the count before.
    fn done(&self) -> usize {
        let mut n = self.lock();
        let before = *n;
        *n -= 1;
        if *n == 0 {
            self.zero.notify_all();
        }
        before
    }

    fn get(&self) -> usize {
        *self.lock()
    }

    /// Waits until nothing is in flight or `deadline` passes.
    fn wait_zero(&self, deadline: Option<Instant>) -> bool {
        let mut n = self.lock();
        while *n > 0 {
            let wait = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) => left,
                    None => return false,
                },
                None => Duration::from_secs(3600),
            };
            n = self
                .zero
                .wait_timeout(n, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

/// A policy's running state inside a server.
pub(crate) enum Runner {
    Sync,
    Fork(ForkRunner),
    Thread(ThreadRunner),
    Pool(PoolRunner),
}

impl Runner {
    pub(crate) fn new(
        policy: Policy,
        dispatch: &Dispatch,
        control: &Arc<Control>,
        listener_fd: Option<RawFd>,
    ) -> Result<Runner> {
        Ok(match policy {
            Policy::Sync => Runner::Sync,
            Policy::Fork {
                max_children,
                block_on_close,
            } => Runner::Fork(ForkRunner::new(
                max_children.max(1),
                block_on_close,
                control,
                listener_fd,
            )?),
            Policy::Thread {
                daemon,
                block_on_close,
            } => Runner::Thread(ThreadRunner {
                daemon,
                block_on_close,
                handles: Vec::new(),
                inflight: Arc::new(InFlight::default()),
                conns: Arc::new(ConnRegistry::default()),
            }),
            Policy::Pool { threads, queue } => {
                Runner::Pool(PoolRunner::new(threads.max(1), queue, dispatch, control)?)
            }
        })
    }

    /// False while the policy cannot take another request (fork at
    /// `max_children`, pool with threads and queue full).
    pub(crate) fn can_accept(&self) -> bool {
        match self {
            Runner::Fork(f) => f.children.len() < f.max_children,
            Runner::Pool(p) => p.inflight.get() < p.limit,
            Runner::Sync | Runner::Thread(_) => true,
        }
    }

    /// Python's `process_request`: run `incoming` under this policy.
    pub(crate) fn process_request(
        &mut self,
        incoming: Incoming,
        dispatch: &Dispatch,
    ) -> Result<()> {
        match self {
            Runner::Sync => {
                dispatch.run(incoming, Watch::MainThread);
                Ok(())
            }
            Runner::Fork(f) => f.spawn(incoming, dispatch),
            Runner::Thread(t) => t.spawn(incoming, dispatch),
            Runner::Pool(p) => p.submit(incoming),
        }
    }

    /// Reaps finished children or threads without blocking.
    pub(crate) fn reap(&mut self, dispatch: &Dispatch) {
        match self {
            Runner::Fork(f) => f.reap(dispatch),
            Runner::Thread(t) => t.reap(),
            Runner::Sync | Runner::Pool(_) => {}
        }
    }

    /// Requests in progress (children, threads, queued and running jobs).
    pub(crate) fn active(&self) -> usize {
        match self {
            Runner::Sync => 0,
            Runner::Fork(f) => f.children.len(),
            Runner::Thread(t) => t.inflight.get(),
            Runner::Pool(p) => p.inflight.get(),
        }
    }

    /// Stops taking work and waits for requests in progress. `graceful`
    /// wakes handlers blocked in `read` (their connection's read side is shut
    /// down, or a child gets SIGTERM) and bounds the wait by `deadline`,
    /// after which children are killed. Without `graceful`, waits as the
    /// policy's `block_on_close` says (Python's `server_close`).
    pub(crate) fn close(&mut self, graceful: bool, deadline: Option<Instant>, dispatch: &Dispatch) {
        match self {
            Runner::Sync => {}
            Runner::Fork(f) => f.close(graceful, deadline, dispatch),
            Runner::Thread(t) => t.close(graceful, deadline),
            Runner::Pool(p) => p.close(graceful, deadline),
        }
    }
}

pub(crate) struct ForkRunner {
    max_children: usize,
    block_on_close: bool,
    children: HashSet<i32>,
    control: Arc<Control>,
    listener_fd: Option<RawFd>,
    /// Set by SIGCHLD: some child exited since the last reap.
    exited: Arc<AtomicBool>,
    /// Set while the loop waits for a child to exit: SIGCHLD then wakes it.
    wake_wanted: Arc<AtomicBool>,
    sigchld: signal_hook::SigId,
    single: sys::SingleThreaded,
    /// This process's pid, for children to check their parent against.
    pid: u32,
}

impl ForkRunner {
    fn new(
        max_children: usize,
        block_on_close: bool,
        control: &Arc<Control>,
        listener_fd: Option<RawFd>,
    ) -> Result<ForkRunner> {
        let single = check_single_threaded()?;
        // Fewer resident pages, fewer page-table entries for each fork to copy.
        sys::release_free_memory();
        // SIGCHLD marks children for reaping and, at the bound or while
        // closing, wakes the serving loop to accept again at once.
        let exited = Arc::new(AtomicBool::new(false));
        let wake_wanted = Arc::new(AtomicBool::new(false));
        let sigchld = control
            .wake_sender()
            .and_then(|tx| sys::on_child_exit(Arc::clone(&exited), Arc::clone(&wake_wanted), tx))
            .map_err(|e| Error::os("register SIGCHLD handler", e))?;
        Ok(ForkRunner {
            max_children,
            block_on_close,
            children: HashSet::new(),
            control: Arc::clone(control),
            listener_fd,
            exited,
            wake_wanted,
            sigchld,
            single,
            pid: std::process::id(),
        })
    }

    fn spawn(&mut self, incoming: Incoming, dispatch: &Dispatch) -> Result<()> {
        // A graceful stop sends children SIGTERM. Unless the child inherits
        // the action for it, it installs one; until then SIGTERM waits.
        let inherited = sys::shutdown_read_registered(libc::SIGTERM);
        let mask = if inherited {
            None
        } else {
            Some(sys::block_signals(&[libc::SIGTERM]).map_err(|e| Error::os("sigprocmask", e))?)
        };
        // The proof was taken when the runner was built, and serve_forever
        // checks again; the child leaves only through sys::exit_now.
        let forked = sys::fork(&self.single);
        if let Ok(Forked::Child) = forked {
            self.run_child(incoming, dispatch, mask.as_ref());
        }
        if let Some(mask) = &mask {
            let _ = sys::restore_signals(mask);
        }
        match forked {
            Err(e) => Err(Error::os("fork", e)),
            Ok(Forked::Parent(pid)) => {
                self.children.insert(pid);
                self.update_wake_wanted();
                drop(incoming); // the parent's copy of the connection closes here
                Ok(())
            }
            Ok(Forked::Child) => unreachable!("run_child never returns"),
        }
    }

    /// The child's whole life: it never returns into the accept loop and
    /// never runs the parent's destructors.
    /// The parent only accepts, forks and closes: any page it writes
    /// between forks is copied once per child, and its time is the server's
    /// throughput. So the child does the rest, and drops nothing.
    fn run_child(&self, incoming: Incoming, dispatch: &Dispatch, mask: Option<&SigSet>) -> ! {
        if let Some(mask) = mask {
            // A graceful stop's SIGTERM: finish the reply in hand, then leave.
            let _ = sys::shutdown_read_on_signal(libc::SIGTERM);
            let _ = sys::restore_signals(mask);
        }
        // A server that dies without closing (SIGKILL) leaves no orphan
        // serving on: its children are killed too.
        let _ = sys::set_parent_death_signal(libc::SIGKILL);
        if std::os::unix::process::parent_id() != self.pid {
            sys::exit_now(1); // the parent died before prctl took effect
        }
        if matches!(incoming, Incoming::Stream { .. }) {
            if let Some(fd) = self.listener_fd {
                // Without this, a long-lived child would keep the port open
                // after the parent closed it.
                sys::close_fd(fd);
            }
        }
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            dispatch.finish(dispatch.prepare(incoming, Watch::MainThread), true)
        }))
        .unwrap_or(false);
        sys::exit_now(if ok { 0 } else { 1 })
    }

    /// Python's `collect_children(blocking=False)`: waits on each of our own
    /// children with WNOHANG (never on -1, which could steal the status of
    /// a process some other part of the program started). Does nothing
    /// unless a SIGCHLD came since the last pass, so a busy server does not
    /// pay one waitpid per live child on every loop.
    fn reap(&mut self, dispatch: &Dispatch) {
        if self.exited.swap(false, Ordering::SeqCst) {
            self.reap_all(dispatch);
        }
    }

    fn reap_all(&mut self, dispatch: &Dispatch) {
        self.reap_each(dispatch);
        self.update_wake_wanted();
    }

    /// SIGCHLD should wake the loop only while it waits at the bound.
    /// (Stored only on change: a write would copy a page shared with
    /// every child.)
    fn update_wake_wanted(&self) {
        let want = self.children.len() >= self.max_children;
        if self.wake_wanted.load(Ordering::Relaxed) != want {
            self.wake_wanted.store(want, Ordering::SeqCst);
        }
    }

    /// Reaps every exited child of ours. Peeks (WNOWAIT) at whichever
    /// child exited and reaps it by pid if it is ours: two calls per exit
    /// rather than one per live child. A child that is not ours is left
    /// for its owner, and the pid-by-pid sweep finishes the pass.
    fn reap_each(&mut self, dispatch: &Dispatch) {
        let peek = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        loop {
            match waitid(Id::All, peek) {
                Ok(WaitStatus::StillAlive) => return,
                Ok(status) => match status.pid() {
                    Some(pid) if self.children.contains(&pid.as_raw()) => {
                        self.reap_one(pid.as_raw(), dispatch);
                    }
                    _ => break,
                },
                Err(nix::errno::Errno::ECHILD) => {
                    self.children.clear();
                    return;
                }
                Err(_) => break,
            }
        }
        self.sweep(dispatch);
    }

    fn reap_one(&mut self, pid: i32, dispatch: &Dispatch) {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(WaitStatus::Exited(_, 0)) | Err(nix::errno::Errno::ECHILD) => {
                self.children.remove(&pid);
            }
            Ok(status) => {
                debug!(dispatch.log, "child ended"; "child" => pid, "status" => ?status);
                self.children.remove(&pid);
            }
            Err(e) => warn!(dispatch.log, "waitpid failed"; "child" => pid, "error" => %e),
        }
    }

    /// Python's per-pid pass over every live child.
    fn sweep(&mut self, dispatch: &Dispatch) {
        self.children.retain(|&pid| {
            match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => true,
                Ok(WaitStatus::Exited(_, 0)) => false,
                Ok(status) => {
                    debug!(dispatch.log, "child ended"; "child" => pid, "status" => ?status);
                    false
                }
                Err(nix::errno::Errno::ECHILD) => false,
                Err(e) => {
                    warn!(dispatch.log, "waitpid failed"; "child" => pid, "error" => %e);
                    true
                }
            }
        });
    }

    fn close(&mut self, graceful: bool, deadline: Option<Instant>, dispatch: &Dispatch) {
        self.wake_wanted.store(true, Ordering::SeqCst);
        if graceful {
            for &pid in &self.children {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        } else if !self.block_on_close {
            return;
        }
        loop {
            self.reap_each(dispatch);
            if self.children.is_empty() {
                return;
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::from_millis(500),
            };
            if left.is_zero() {
                break;
            }
            // A child's exit raises SIGCHLD, which writes to the wake socket.
            wait_readable(&self.control, left.min(Duration::from_millis(500)));
        }
        for &pid in &self.children {
            error!(dispatch.log, "child outlived the graceful timeout; killing it"; "child" => pid);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
        }
        self.children.clear();
    }
}

impl Drop for ForkRunner {
    fn drop(&mut self) {
        signal_hook::low_level::unregister(self.sigchld);
    }
}

/// Fails unless this process has exactly one thread (see `sys::fork`).
pub(crate) fn check_single_threaded() -> Result<sys::SingleThreaded> {
    match sys::SingleThreaded::check().map_err(|e| Error::os("read /proc/self/task", e))? {
        Ok(proof) => Ok(proof),
        Err(n) => Err(Error::Config(format!(
            "forking needs a single-threaded process, and this one has {n} threads: \
             a child forked beside other threads could deadlock on a lock they held"
        ))),
    }
}

fn wait_readable(control: &Control, limit: Duration) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let ms = limit.as_millis().clamp(1, i32::MAX as u128) as i32;
    let mut fds = [PollFd::new(control.wake_source(), PollFlags::POLLIN)];
    let _ = poll(
        &mut fds,
        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
    );
    control.drain();
}

pub(crate) struct ThreadRunner {
    daemon: bool,
    block_on_close: bool,
    handles: Vec<JoinHandle<()>>,
    inflight: Arc<InFlight>,
    conns: Arc<ConnRegistry>,
}

impl ThreadRunner {
    fn spawn(&mut self, incoming: Incoming, dispatch: &Dispatch) -> Result<()> {
        let dispatch = dispatch.clone();
        let inflight = Arc::clone(&self.inflight);
        let conns = Arc::clone(&self.conns);
        inflight.start();
        let spawned = std::thread::Builder::new().spawn(move || {
            dispatch.run(incoming, Watch::Registry(Arc::clone(&conns)));
            inflight.done();
        });
        match spawned {
            Ok(handle) => {
                if !self.daemon {
                    self.handles.push(handle);
                }
                Ok(())
            }
            Err(e) => {
                self.inflight.done();
                Err(Error::os("spawn request thread", e))
            }
        }
    }

    /// Drops the handles of finished threads. Amortised: only once the
    /// list has grown well past the threads still running.
    fn reap(&mut self) {
        if self.handles.len() > 2 * self.inflight.get() + 64 {
            self.handles.retain(|h| !h.is_finished());
        }
    }

    fn close(&mut self, graceful: bool, deadline: Option<Instant>) {
        if graceful {
            self.conns.shutdown_reads();
            self.inflight.wait_zero(deadline);
        } else if self.block_on_close && !self.daemon {
            for h in self.handles.drain(..) {
                let _ = h.join();
            }
        }
        self.handles.retain(|h| !h.is_finished());
    }
}

pub(crate) struct PoolRunner {
    limit: usize,
    tx: Option<Sender<Incoming>>,
    workers: Vec<JoinHandle<()>>,
    inflight: Arc<InFlight>,
    conns: Arc<ConnRegistry>,
}

impl PoolRunner {
    fn new(
        threads: usize,
        queue: usize,
        dispatch: &Dispatch,
        control: &Arc<Control>,
    ) -> Result<Self> {
        let (tx, rx) = bounded::<Incoming>(queue);
        let inflight = Arc::new(InFlight::default());
        let conns = Arc::new(ConnRegistry::default());
        let limit = threads + queue;
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let (rx, dispatch, inflight) = (rx.clone(), dispatch.clone(), Arc::clone(&inflight));
            let (conns, control) = (Arc::clone(&conns), Arc::clone(control));
            let handle = std::thread::Builder::new()
                .name(format!("pool-{i}"))
                .spawn(move || {
                    for incoming in rx.iter() {
                        dispatch.run(incoming, Watch::Registry(Arc::clone(&conns)));
                        if inflight.done() == limit {
                            control.wake(); // the accept loop was paused: resume it
                        }
                    }
                })
                .map_err(|e| Error::os("spawn pool thread", e))?;
            workers.push(handle);
        }
        Ok(PoolRunner {
            limit,
            tx: Some(tx),
            workers,
            inflight,
            conns,
        })
    }

    fn submit(&mut self, incoming: Incoming) -> Result<()> {
        let Some(tx) = &self.tx else {
            return Err(Error::Config("pool is closed".into()));
        };
        self.inflight.start();
        // can_accept() held, so a worker is free or the queue has room:
        // this send waits at most for a free worker to pick the job up.
        tx.send(incoming).map_err(|_| {
            self.inflight.done();
            Error::Config("pool workers are gone".into())
        })
    }

    fn close(&mut self, graceful: bool, deadline: Option<Instant>) {
        self.tx = None; // workers finish the queue, then their loops end
        if graceful {
            self.conns.shutdown_reads();
        }
        if self.inflight.wait_zero(deadline) {
            for w in self.workers.drain(..) {
                let _ = w.join();
            }
        }
    }
}
