//! How requests run: Python's mixins as one enum chosen at run time.
//!
//! This is the one module that forks or spawns threads per request, and
//! the one that reaps them: `fork` (a process per request) and `thread` (a
//! thread per request, and the pool). `event` is the other way round: a
//! few threads, each an event loop serving many connections. Each runner provides Python's
//! `process_request`, the reaping Python's `ForkingMixIn` does in
//! `service_actions` and `handle_timeout`, and the waiting its
//! `server_close` does.

mod event;
mod fork;
mod thread;

pub(crate) use event::{EventRunner, OUTPUT_LIMIT};
pub(crate) use fork::{check_single_threaded, ForkRunner};
pub(crate) use thread::{PoolRunner, ThreadRunner};

use std::os::fd::AsRawFd;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::control::Control;
use crate::dispatch::Dispatch;
use crate::error::Result;
use crate::socket::Listener;
use crate::stats::Slot;
use crate::transport::Incoming;
use crate::watch::{ConnRegistry, Watch};

/// How a server runs each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// One request at a time, in the serving thread.
    Sync,
    /// A child process per request (per connection, or per datagram), as
    /// Python's `ForkingMixIn`. Needs a single-threaded serving process.
    ///
    /// While it serves, the server keeps SIGCHLD blocked and reads it from
    /// a signalfd (a program's own SIGCHLD handler does not run meanwhile;
    /// `waitpid` on its own children still works). Children start with the
    /// signal mask the program had.
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
        /// Request threads allowed at once; at the bound, accepting waits
        /// for one to finish (the kernel backlog holds new clients), so a
        /// connection flood cannot exhaust memory. `usize::MAX`: no bound,
        /// as Python's.
        max_threads: usize,
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
    /// Event loops: `threads` threads, each serving many connections
    /// without blocking, through a [`MessageHandler`](crate::MessageHandler)
    /// (the factory must have one: see
    /// [`HandlerFactory::message_factory`](crate::HandlerFactory::message_factory)).
    /// Idle connections cost little more than their socket; a handler that
    /// burns CPU or blocks stalls every connection of its loop. See the
    /// `event` module docs for how the loops share the listener.
    Event {
        /// Event loop threads (at least one).
        threads: usize,
    },
}

impl Policy {
    /// `Fork` with Python's defaults (40 children, block on close).
    pub const FORK: Policy = Policy::Fork {
        max_children: 40,
        block_on_close: true,
    };
    /// `Thread` with Python's defaults (non-daemon, block on close, no
    /// bound on threads).
    pub const THREAD: Policy = Policy::Thread {
        daemon: false,
        block_on_close: true,
        max_threads: usize::MAX,
    };

    /// A pool sized for this machine: 4 threads per CPU, a queue as long.
    pub fn pool_default() -> Policy {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Policy::Pool {
            threads: 4 * cpus,
            queue: 4 * cpus,
        }
    }

    /// Event loops, one per CPU.
    pub fn event_default() -> Policy {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Policy::Event { threads: cpus }
    }

    /// The name used on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Policy::Event { .. } => "event",
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
    Event(EventRunner),
}

impl Runner {
    pub(crate) fn new(
        policy: Policy,
        dispatch: &Dispatch,
        control: &Arc<Control>,
        listener: &Listener,
        output_limit: usize,
    ) -> Result<Runner> {
        let listener_fd = Some(listener.socket.as_raw_fd());
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
                max_threads,
            } => Runner::Thread(ThreadRunner {
                daemon,
                block_on_close,
                max_threads: max_threads.max(1),
                inflight: Arc::new(InFlight::default()),
                conns: Arc::new(ConnRegistry::default()),
                control: Arc::clone(control),
            }),
            Policy::Pool { threads, queue } => {
                Runner::Pool(PoolRunner::new(threads.max(1), queue, dispatch, control)?)
            }
            Policy::Event { threads } => Runner::Event(EventRunner::new(
                threads.max(1),
                dispatch,
                listener,
                output_limit,
            )),
        })
    }

    /// Called as a serving loop starts (see `ForkRunner::begin`).
    pub(crate) fn begin(&mut self) -> Result<()> {
        match self {
            Runner::Fork(f) => f.begin(),
            Runner::Event(e) => e.begin(),
            Runner::Sync | Runner::Thread(_) | Runner::Pool(_) => Ok(()),
        }
    }

    /// False while the policy cannot take another request (fork at
    /// `max_children`, thread at `max_threads`, pool with threads and queue
    /// full).
    pub(crate) fn can_accept(&self) -> bool {
        match self {
            Runner::Fork(f) => f.children.len() < f.max_children,
            Runner::Thread(t) => t.max_threads == usize::MAX || t.inflight.get() < t.max_threads,
            Runner::Pool(p) => p.inflight.get() < p.limit,
            Runner::Sync | Runner::Event(_) => true,
        }
    }

    /// True when the policy's own threads take requests off the listener
    /// (the event loops), so the serving loop must not.
    pub(crate) fn owns_listener(&self) -> bool {
        matches!(self, Runner::Event(_))
    }

    /// Python's `process_request`: run `incoming` under this policy.
    pub(crate) fn process_request(
        &mut self,
        incoming: Incoming,
        dispatch: &Dispatch,
    ) -> Result<()> {
        match self {
            Runner::Sync => {
                let stats = dispatch.ctx.stats;
                Slot::up(&stats.in_flight);
                dispatch.run(incoming, Watch::MainThread);
                Slot::down(&stats.in_flight);
                Ok(())
            }
            Runner::Fork(f) => f.spawn(incoming, dispatch),
            Runner::Thread(t) => t.spawn(incoming, dispatch),
            Runner::Pool(p) => p.submit(incoming),
            Runner::Event(_) => {
                drop(incoming);
                Err(crate::error::Error::Config(
                    "the event policy's loops take their own requests".into(),
                ))
            }
        }
    }

    /// True while the policy's own serving threads are stuck: an event
    /// loop that has not turned for a second (see `policy::event`).
    pub(crate) fn stalled(&self) -> bool {
        match self {
            Runner::Event(e) => e.stalled(),
            Runner::Sync | Runner::Fork(_) | Runner::Thread(_) | Runner::Pool(_) => false,
        }
    }

    /// Reaps finished children or threads without blocking.
    pub(crate) fn reap(&mut self, dispatch: &Dispatch) {
        match self {
            Runner::Fork(f) => f.reap(dispatch),
            Runner::Sync | Runner::Thread(_) | Runner::Pool(_) | Runner::Event(_) => {}
        }
    }

    /// A descriptor the serving loop polls beside the listener: readable
    /// when the policy has something to reap (a child exited).
    pub(crate) fn event_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        match self {
            Runner::Fork(f) => Some(f.event_fd()),
            Runner::Sync | Runner::Thread(_) | Runner::Pool(_) | Runner::Event(_) => None,
        }
    }

    /// Requests in progress (children, threads, queued and running jobs).
    pub(crate) fn active(&self) -> usize {
        match self {
            Runner::Sync => 0,
            Runner::Fork(f) => f.children.len(),
            Runner::Thread(t) => t.inflight.get(),
            Runner::Pool(p) => p.inflight.get(),
            Runner::Event(e) => e.active(),
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
            Runner::Event(e) => e.close(graceful, deadline),
        }
    }
}
