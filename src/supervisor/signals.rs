//! The master's signal queue, as gunicorn's arbiter keeps one: the handler
//! only counts the signal and wakes the loop ("no logging, just queue the
//! signal"); the loop then handles each one by name.

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use nix::sys::signal::Signal;
use signal_hook::SigId;

use crate::sys::{self, ForkChild};

/// The signals the master obeys, in the order a drained queue handles them.
pub(super) const SIGNALS: [Signal; 7] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
];

/// Counts of signals received since the last drain, and the wake-up socket.
pub(super) struct SignalQueue {
    counts: Vec<(Signal, Arc<AtomicUsize>)>,
    ids: Vec<SigId>,
    wake_rx: UnixStream,
    wake_tx: UnixStream,
}

impl SignalQueue {
    /// Installs the master's handlers.
    pub(super) fn install() -> io::Result<SignalQueue> {
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
            q.ids.push(sys::count_signal(sig, Arc::clone(&count))?);
            q.ids.push(signal_hook::low_level::pipe::register(
                sig as i32,
                q.wake_tx.try_clone()?,
            )?);
            q.counts.push((sig, count));
        }
        Ok(q)
    }

    /// The descriptor the master polls.
    pub(super) fn wake_source(&self) -> BorrowedFd<'_> {
        self.wake_rx.as_fd()
    }

    /// Takes the queued signals: each signal with how often it came.
    pub(super) fn drain(&self) -> Vec<(Signal, usize)> {
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
    /// the descriptors they hold), so the master's signals are ignored
    /// there until the worker installs its own, and closes the wake-up
    /// pair (this copy of the queue is never dropped: the worker `_exit`s).
    pub(super) fn forget_in_worker(&mut self, child: &ForkChild) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
        child.close_inherited(self.wake_rx.as_raw_fd());
        child.close_inherited(self.wake_tx.as_raw_fd());
    }
}

/// The conventional name of a signal, for logs: `TERM`, `HUP`, `KILL`.
pub(super) fn name(sig: Signal) -> &'static str {
    sig.as_str().trim_start_matches("SIG")
}
