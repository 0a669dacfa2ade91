//! Graceful stop for stream connections: a stop must let each connection
//! finish the request in hand, close connections idle between requests,
//! and not cut off a client whose first request is still on the wire.
//!
//! A connection is *used* once its handler has read data from it. On stop,
//! used connections get their read side shut down (a handler blocked in
//! `read` sees end-of-file after writing its reply), and every later read on
//! a used connection returns end-of-file at once. A connection not used yet
//! is left to send its first request; the graceful timeout bounds it.
//!
//! This module is the one home of that state: the registry of connections
//! served on other threads, and the slots a stop signal's handler reads
//! (the connection on the main thread, the one in a forked child, and
//! whether a stop signal came). The handler itself is `sys`'s.

use std::cell::Cell;
use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nix::sys::signal::Signal;

use crate::sys;

/// Set once a stop signal arrived (see [`on_stop_signal`]).
static STOPPED: AtomicBool = AtomicBool::new(false);

/// The stream connection this process serves on its main thread (a Sync
/// server), or -1.
static MAIN_CONN: AtomicI32 = AtomicI32::new(-1);

thread_local! {
    /// The connection a forked child serves, or -1: as `MAIN_CONN`, but
    /// in the child's thread-local block, a page the child writes anyway
    /// (a global would copy one more page from the parent per child).
    /// Constant-initialised and without a destructor, so a signal handler
    /// reads it as plain memory.
    static CHILD_CONN: Cell<RawFd> = const { Cell::new(-1) };
}

static SLOTS: sys::StopSlots = sys::StopSlots {
    stopped: &STOPPED,
    main_conn: &MAIN_CONN,
    child_conn: &CHILD_CONN,
};

/// Signals (as a bit mask) that already have the stop action in this
/// process; a forked child inherits it with the handlers.
static REGISTERED: AtomicU64 = AtomicU64::new(0);

/// Makes `sig` record a stop ([`stop_signalled`]) and shut down the read
/// side of the connection served on the main thread or in a forked child,
/// in addition to any other action registered for it.
pub(crate) fn on_stop_signal(sig: Signal) -> io::Result<()> {
    sys::shutdown_read_on_signal(sig, &SLOTS)?;
    REGISTERED.fetch_or(1 << (sig as i32), Ordering::SeqCst);
    Ok(())
}

/// True when [`on_stop_signal`] was registered for `sig` (in this process
/// or, before a fork, its parent).
#[link_section = child_text!()]
pub(crate) fn stop_action_registered(sig: Signal) -> bool {
    REGISTERED.load(Ordering::SeqCst) & (1 << (sig as i32)) != 0
}

/// True once a signal registered with [`on_stop_signal`] arrived.
pub(crate) fn stop_signalled() -> bool {
    STOPPED.load(Ordering::SeqCst)
}

/// Where a connection is recorded while it is served.
#[derive(Clone, Debug, Default)]
pub(crate) enum Watch {
    /// Not recorded.
    #[default]
    None,
    /// Served on the main thread of a Sync server: recorded where a stop
    /// signal's handler reaches it without locks, from any thread.
    MainThread,
    /// Served by a forked child (one thread): recorded in a thread-local,
    /// where the child's stop-signal handler reaches it.
    ForkChild,
    /// Served on another thread: recorded in a registry.
    Registry(Arc<ConnRegistry>),
}

impl Watch {
    /// Records `fd` as open and not used yet.
    #[link_section = child_text!()]
    pub(crate) fn register(&self, fd: RawFd) {
        if let Watch::Registry(r) = self {
            r.lock().insert(fd, false);
        }
    }

    /// Records that `fd` has received data.
    #[link_section = child_text!()]
    pub(crate) fn mark_used(&self, fd: RawFd) {
        // ForkChild first, as a plain comparison: a forked child reads no
        // jump table (another page of the binary) on every read.
        if let Watch::ForkChild = self {
            return CHILD_CONN.with(|c| c.set(fd));
        }
        match self {
            Watch::None | Watch::ForkChild => {}
            Watch::MainThread => MAIN_CONN.store(fd, Ordering::SeqCst),
            Watch::Registry(r) => {
                r.lock().insert(fd, true);
            }
        }
    }

    /// Forgets `fd`; called before the descriptor is closed.
    #[link_section = child_text!()]
    pub(crate) fn unregister(&self, fd: RawFd) {
        match self {
            Watch::None => {}
            Watch::MainThread => MAIN_CONN.store(-1, Ordering::SeqCst),
            Watch::ForkChild => CHILD_CONN.with(|c| c.set(-1)),
            Watch::Registry(r) => {
                r.lock().remove(&fd);
            }
        }
    }
}

/// The stream connections open in worker threads, and whether each has
/// received data yet.
#[derive(Debug, Default)]
pub(crate) struct ConnRegistry {
    fds: Mutex<HashMap<RawFd, bool>>,
}

impl ConnRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RawFd, bool>> {
        self.fds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Shuts down the read side of every used connection. An fd leaves the
    /// registry before it is closed, under the same lock, so this never
    /// touches a reused descriptor. Call after the server context is marked
    /// stopping, so connections used later stop at their next read.
    pub(crate) fn shutdown_reads(&self) {
        for (&fd, &used) in self.lock().iter() {
            if used {
                sys::shutdown_read(fd);
            }
        }
    }
}
