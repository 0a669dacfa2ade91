//! The event policy: a few threads, each an event loop (a mio `Poll`,
//! epoll on Linux) serving many connections through a
//! [`MessageHandler`](crate::MessageHandler), as nginx's workers do.
//!
//! **The listener.** Every loop registers the one shared, non-blocking
//! listening socket (edge-triggered) and accepts from it itself; a loop
//! that finds nothing pending gets EAGAIN and goes back to sleep. Why not
//! the alternatives:
//! - SO_REUSEPORT per loop would need a socket per loop, so a loop could
//!   not serve a socket the supervisor's master holds (or systemd passes),
//!   connections queued on a loop's socket would be reset when it stops,
//!   and Unix sockets have no SO_REUSEPORT at all;
//! - one accept thread handing sockets round-robin adds a thread, a
//!   channel send and a wake-up per connection;
//! - EPOLLEXCLUSIVE, which wakes one loop per connection instead of all,
//!   is not exposed by mio. With a loop per CPU the herd is that many
//!   threads, and only for new connections: persistent ones are the
//!   loop's own. The price is balance: under a burst the first loop awake
//!   takes most of it.
//!
//! Datagram sockets are shared the same way: each loop receives from the
//! one socket, so datagrams spread over the loops.
//!
//! **Memory.** A connection is a socket, a slot in its loop (its handler,
//! its peer address, a few counters) and nothing else while idle: the
//! read buffer (64 KiB) and the reply buffer belong to the loop. Replies
//! the kernel will not take are kept per connection up to
//! `output_limit` bytes ([`ServerBuilder::output_limit`](crate::ServerBuilder::output_limit));
//! past it the client, which does not read, is closed.
//!
//! **Counting.** `connections` counts accepted connections (datagrams
//! received), `in_flight` the connections open (datagrams being served),
//! and `requests` each reply once the kernel has taken all of it.
//!
//! **Stopping.** A graceful stop makes every loop let go of the listener,
//! close each connection that has been served once it is idle (no reply
//! waiting for the kernel, no timer), and leave a connection that has not
//! sent its first request to send it, up to the deadline; then the loops
//! end. A hard stop drops every connection at once.
//!
//! **What it cannot do.** A handler that blocks or burns CPU stalls every
//! connection of its loop (the `cpu` service shows it); there is no
//! isolation between connections.
//!
//! **Liveness.** Each loop stamps the time at every turn and sleeps at
//! most [`TURN_EVERY`], so an idle loop still stamps. The serving thread
//! skips `service_actions` (and with it the supervisor's heartbeat) while
//! any loop's stamp is older than [`STALLED_AFTER`]: a loop stuck in a
//! handler stops the heartbeat, and `--worker-timeout` replaces the
//! worker as it would a stuck worker of any other policy.

mod conn;
mod evloop;
mod slab;

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Poll, Waker};
use socket2::Socket;

use crate::dispatch::Dispatch;
use crate::error::{Error, Result};
use crate::socket::Listener;
use evloop::{Loop, LISTEN, WAKE};

/// Replies kept for a client that does not read, by default: 1 MiB.
pub(crate) const OUTPUT_LIMIT: usize = 1 << 20;

/// The longest a loop sleeps in `epoll_wait`, so that it stamps its turn.
pub(super) const TURN_EVERY: Duration = Duration::from_millis(250);

/// A loop whose last turn is older than this is stalled (in a handler).
const STALLED_AFTER: Duration = Duration::from_secs(1);

/// When a loop last turned, in milliseconds since its runner's start.
#[derive(Debug)]
pub(super) struct TurnStamp {
    base: Instant,
    ms: AtomicU64,
}

impl TurnStamp {
    fn new(base: Instant) -> TurnStamp {
        TurnStamp {
            base,
            ms: AtomicU64::new(0),
        }
    }

    /// Records a turn now (one relaxed store).
    pub(super) fn turn(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.ms.store(ms, Ordering::Relaxed);
    }

    fn age(&self) -> Duration {
        let now = self.base.elapsed();
        now.saturating_sub(Duration::from_millis(self.ms.load(Ordering::Relaxed)))
    }
}

/// What every loop of a server reads: serve, drain, or halt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Serve,
    Drain,
    Halt,
}

/// State the runner shares with its loops.
#[derive(Debug, Default)]
pub(super) struct Shared {
    mode: AtomicU8,
    deadline: Mutex<Option<Instant>>,
    /// Connections open and datagrams in service, over all loops.
    open: AtomicUsize,
}

impl Shared {
    fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    pub(super) fn mode(&self) -> Mode {
        match self.mode.load(Ordering::SeqCst) {
            0 => Mode::Serve,
            1 => Mode::Drain,
            _ => Mode::Halt,
        }
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn past_deadline(&self) -> bool {
        self.deadline().is_some_and(|d| Instant::now() >= d)
    }

    pub(super) fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A running loop thread.
struct LoopThread {
    waker: Waker,
    join: JoinHandle<()>,
    stamp: Arc<TurnStamp>,
}

/// The event policy inside a server: its loops, started when serving
/// begins (after any fork: a supervisor's worker starts them itself).
pub(crate) struct EventRunner {
    threads: usize,
    dispatch: Dispatch,
    socket: Option<Arc<Socket>>,
    output_limit: usize,
    shared: Arc<Shared>,
    loops: Vec<LoopThread>,
}

impl EventRunner {
    pub(super) fn new(
        threads: usize,
        dispatch: &Dispatch,
        listener: &Listener,
        output_limit: usize,
    ) -> Self {
        EventRunner {
            threads,
            dispatch: dispatch.clone(),
            socket: Some(Arc::clone(&listener.socket)),
            output_limit,
            shared: Arc::new(Shared::default()),
            loops: Vec::new(),
        }
    }

    /// Starts the loops (once).
    pub(super) fn begin(&mut self) -> Result<()> {
        if !self.loops.is_empty() {
            return Ok(());
        }
        let Some(socket) = &self.socket else {
            return Err(Error::Config(
                "the event policy's listener is closed".into(),
            ));
        };
        for i in 0..self.threads {
            let poll = Poll::new().map_err(|e| Error::os("epoll_create (event loop)", e))?;
            let waker = Waker::new(poll.registry(), WAKE)
                .map_err(|e| Error::os("eventfd (event loop)", e))?;
            let fd = std::os::fd::AsRawFd::as_raw_fd(&**socket);
            poll.registry()
                .register(&mut SourceFd(&fd), LISTEN, Interest::READABLE)
                .map_err(|e| Error::os("epoll_ctl ADD listener (event loop)", e))?;
            let stamp = Arc::new(TurnStamp::new(Instant::now()));
            stamp.turn();
            let lp = Loop::new(
                poll,
                Arc::clone(socket),
                self.dispatch.clone(),
                Arc::clone(&self.shared),
                self.output_limit,
                Arc::clone(&stamp),
            );
            let join = std::thread::Builder::new()
                .name(format!("event-{i}"))
                .spawn(move || lp.run())
                .map_err(|e| Error::os("spawn event loop thread", e))?;
            self.loops.push(LoopThread { waker, join, stamp });
        }
        Ok(())
    }

    /// True while some loop has not turned for [`STALLED_AFTER`]: it is
    /// stuck in a handler.
    pub(super) fn stalled(&self) -> bool {
        self.loops.iter().any(|l| l.stamp.age() >= STALLED_AFTER)
    }

    /// Connections open and datagrams in service.
    pub(super) fn active(&self) -> usize {
        self.shared.open.load(Ordering::Relaxed)
    }

    /// Stops the loops: gracefully (finish what is in flight, up to
    /// `deadline`) or at once; returns when they have ended.
    pub(super) fn close(&mut self, graceful: bool, deadline: Option<Instant>) {
        self.socket = None;
        if graceful {
            *self
                .shared
                .deadline
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = deadline;
            self.shared.set(Mode::Drain);
        } else {
            self.shared.set(Mode::Halt);
        }
        for lp in &self.loops {
            let _ = lp.waker.wake();
        }
        for lp in self.loops.drain(..) {
            let _ = lp.join.join();
        }
    }
}
