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
pub(super) const SIGNALS: [Signal; 10] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Signals whose default action would end the master and that it has no
/// use for: each is logged by name and otherwise ignored (as are the
/// realtime signals). Faults (SEGV, BUS, ILL, FPE, ABRT, TRAP) keep their
/// default: a master that hits one must not carry on.
pub(super) const IGNORED: [Signal; 8] = [
    Signal::SIGALRM,
    Signal::SIGVTALRM,
    Signal::SIGPROF,
    Signal::SIGIO,
    Signal::SIGPWR,
    Signal::SIGSTKFLT,
    Signal::SIGXCPU,
    Signal::SIGXFSZ,
];

/// A signal the queue took: one the master obeys, or another it ignores
/// (by number, which covers the realtime signals).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Queued {
    /// One of [`SIGNALS`].
    Obey(Signal),
    /// One of [`IGNORED`] or a realtime signal; its number.
    Ignore(i32),
}

/// Counts of signals received since the last drain, and the wake-up socket.
pub(super) struct SignalQueue {
    counts: Vec<(i32, Arc<AtomicUsize>)>,
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
        let named = SIGNALS.iter().chain(&IGNORED).map(|&s| s as i32);
        for sig in named.chain(sys::realtime_signals()) {
            let count = Arc::new(AtomicUsize::new(0));
            q.ids.push(sys::count_signal(sig, Arc::clone(&count))?);
            q.ids.push(signal_hook::low_level::pipe::register(
                sig,
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
    pub(super) fn drain(&self) -> Vec<(Queued, usize)> {
        let mut buf = [0u8; 64];
        while matches!((&self.wake_rx).read(&mut buf), Ok(n) if n > 0) {}
        self.counts
            .iter()
            .filter_map(|(sig, c)| match c.swap(0, Ordering::SeqCst) {
                0 => None,
                n => Some((queued(*sig), n)),
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

fn queued(sig: i32) -> Queued {
    match Signal::try_from(sig) {
        Ok(s) if SIGNALS.contains(&s) => Queued::Obey(s),
        _ => Queued::Ignore(sig),
    }
}

/// The conventional name of a signal, for logs: `TERM`, `HUP`, `KILL`.
pub(super) fn name(sig: Signal) -> &'static str {
    sig.as_str().trim_start_matches("SIG")
}

/// The name of a signal number, for logs: `ALRM`, `RTMIN+3`.
pub(super) fn number_name(sig: i32) -> String {
    match Signal::try_from(sig) {
        Ok(s) => name(s).to_string(),
        Err(_) => format!("RTMIN+{}", sig - libc::SIGRTMIN()),
    }
}
