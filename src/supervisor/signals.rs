//! The master's signal queue, as gunicorn's arbiter keeps one: the handler
//! only counts the signal and wakes the loop ("no logging, just queue the
//! signal"); the loop then handles each one by name.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGTTIN, SIGTTOU};
use signal_hook::SigId;

/// The signals the master obeys, in the order a drained queue handles them.
pub const SIGNALS: [i32; 7] = [SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGTTIN, SIGTTOU];

/// Counts of signals received since the last drain, and the wake-up socket.
pub struct SignalQueue {
    counts: Vec<(i32, Arc<AtomicUsize>)>,
    ids: Vec<SigId>,
    wake_rx: UnixStream,
    wake_tx: UnixStream,
}

impl SignalQueue {
    /// Installs the master's handlers.
    pub fn install() -> io::Result<SignalQueue> {
        let (wake_rx, wake_tx) = UnixStream::pair()?;
        wake_rx.set_nonblocking(true)?;
        wake_tx.set_nonblocking(true)?;
        let mut q = SignalQueue {
            counts: Vec::new(),
            ids: Vec::new(),
            wake_rx,
            wake_tx,
        };
        for sig in SIGNALS {
            let count = Arc::new(AtomicUsize::new(0));
            q.ids
                .push(crate::sys::count_signal(sig, Arc::clone(&count))?);
            q.ids.push(signal_hook::low_level::pipe::register(
                sig,
                q.wake_tx.try_clone()?,
            )?);
            q.counts.push((sig, count));
        }
        Ok(q)
    }

    /// The descriptor the master polls.
    pub fn wake_source(&self) -> BorrowedFd<'_> {
        self.wake_rx.as_fd()
    }

    /// Takes the queued signals: each signal with how often it came.
    pub fn drain(&self) -> Vec<(i32, usize)> {
        let mut buf = [0u8; 64];
        while matches!((&self.wake_rx).read(&mut buf), Ok(n) if n > 0) {}
        self.counts
            .iter()
            .filter_map(|(sig, c)| match c.swap(0, Ordering::SeqCst) {
                0 => None,
                n => Some((*sig, n)),
            })
            .collect()
    }

    /// In a newly forked worker: removes the master's handlers (closing
    /// their descriptors), so the master's signals are ignored there until
    /// the worker installs its own, and returns the descriptors of the
    /// wake-up pair for the worker to close.
    pub fn forget_in_worker(&mut self) -> [RawFd; 2] {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
        use std::os::fd::AsRawFd;
        [self.wake_rx.as_raw_fd(), self.wake_tx.as_raw_fd()]
    }
}

/// The conventional name of a signal, for logs.
pub fn name(sig: i32) -> &'static str {
    match sig {
        SIGCHLD => "CHLD",
        SIGTERM => "TERM",
        SIGINT => "INT",
        SIGQUIT => "QUIT",
        SIGHUP => "HUP",
        SIGTTIN => "TTIN",
        SIGTTOU => "TTOU",
        libc::SIGKILL => "KILL",
        libc::SIGABRT => "ABRT",
        libc::SIGSEGV => "SEGV",
        libc::SIGBUS => "BUS",
        libc::SIGPIPE => "PIPE",
        libc::SIGUSR1 => "USR1",
        libc::SIGUSR2 => "USR2",
        _ => "other",
    }
}
