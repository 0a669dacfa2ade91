//! Graceful stop for stream connections: a stop must let each connection
//! finish the request in hand, close connections idle between requests,
//! and not cut off a client whose first request is still on the wire.
//!
//! A connection is *used* once its handler has read data from it. On stop,
//! used connections get their read side shut down (a handler blocked in
//! `read` sees end-of-file after writing its reply), and every later read on
//! a used connection returns end-of-file at once. A connection not used yet
//! is left to send its first request; the graceful timeout bounds it.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use crate::sys;

/// Where a connection is recorded while it is served.
#[derive(Clone, Debug, Default)]
pub enum Watch {
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
    #[link_section = ".text.hot.sockserv_child"]
    pub(crate) fn register(&self, fd: RawFd) {
        if let Watch::Registry(r) = self {
            r.lock().insert(fd, false);
        }
    }

    /// Records that `fd` has received data.
    #[link_section = ".text.hot.sockserv_child"]
    pub(crate) fn mark_used(&self, fd: RawFd) {
        // ForkChild first, as a plain comparison: a forked child reads no
        // jump table (another page of the binary) on every read.
        if let Watch::ForkChild = self {
            return sys::set_child_conn(fd);
        }
        match self {
            Watch::None | Watch::ForkChild => {}
            Watch::MainThread => sys::set_active_conn(fd),
            Watch::Registry(r) => {
                r.lock().insert(fd, true);
            }
        }
    }

    /// Forgets `fd`; called before the descriptor is closed.
    #[link_section = ".text.hot.sockserv_child"]
    pub(crate) fn unregister(&self, fd: RawFd) {
        match self {
            Watch::None => {}
            Watch::MainThread => sys::set_active_conn(-1),
            Watch::ForkChild => sys::set_child_conn(-1),
            Watch::Registry(r) => {
                r.lock().remove(&fd);
            }
        }
    }
}

/// The stream connections open in worker threads, and whether each has
/// received data yet.
#[derive(Debug, Default)]
pub struct ConnRegistry {
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
    pub fn shutdown_reads(&self) {
        for (&fd, &used) in self.lock().iter() {
            if used {
                sys::shutdown_read(fd);
            }
        }
    }

    /// Number of connections being served.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no connection is being served.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
