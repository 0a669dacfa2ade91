//! Stopping and waking a serving loop: a non-blocking socketpair the loop
//! polls beside its listener (the self-pipe trick), a stop flag, and an
//! event `shutdown()` waits on.
//!
//! `request_stop` only stores an atomic and sends one byte with
//! MSG_DONTWAIT, so a signal handler may do it too (signal-hook's
//! `pipe::register` writes to [`Control::wake_sender`] the same way).

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;

/// Shared between a serving loop and whoever stops it.
#[derive(Debug)]
pub(crate) struct Control {
    stop: Arc<AtomicBool>,
    wake_rx: UnixStream,
    wake_tx: UnixStream,
    serving: Mutex<bool>,
    stopped: Condvar,
}

impl Control {
    /// A new control with its wake-up socketpair.
    pub(crate) fn new() -> io::Result<Control> {
        let (wake_rx, wake_tx) = UnixStream::pair()?;
        wake_rx.set_nonblocking(true)?;
        wake_tx.set_nonblocking(true)?;
        Ok(Control {
            stop: Arc::new(AtomicBool::new(false)),
            wake_rx,
            wake_tx,
            serving: Mutex::new(false),
            stopped: Condvar::new(),
        })
    }

    /// Wakes the loop from its poll; a full buffer means a wake is pending.
    pub(crate) fn wake(&self) {
        let _ = (&self.wake_tx).write(&[1]);
    }

    /// Asks the loop to stop and wakes it; returns at once.
    pub(crate) fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// True once a stop was requested (by `request_stop` or a signal).
    pub(crate) fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The flag a signal handler sets to stop the loop.
    pub(crate) fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// A new descriptor for the wake-up socket, for a signal handler to
    /// write to (signal-hook's `pipe::register` owns and closes it).
    pub(crate) fn wake_sender(&self) -> io::Result<UnixStream> {
        self.wake_tx.try_clone()
    }

    /// The descriptor the loop polls.
    pub(crate) fn wake_source(&self) -> BorrowedFd<'_> {
        self.wake_rx.as_fd()
    }

    /// Empties the wake-up channel after the loop woke.
    pub(crate) fn drain(&self) {
        let mut buf = [0u8; 64];
        while let Ok(n) = (&self.wake_rx).read(&mut buf) {
            if n < buf.len() {
                break;
            }
        }
    }

    /// Marks the loop as running.
    pub(crate) fn begin(&self) {
        *self.serving.lock().unwrap_or_else(|p| p.into_inner()) = true;
    }

    /// Marks the loop as finished, clears the stop request and releases
    /// everyone waiting in [`Control::wait_stopped`].
    pub(crate) fn end(&self) {
        self.stop.store(false, Ordering::SeqCst);
        *self.serving.lock().unwrap_or_else(|p| p.into_inner()) = false;
        self.stopped.notify_all();
    }

    /// Blocks until the loop is not running, or `limit` passes. Returns
    /// true when it stopped.
    pub(crate) fn wait_stopped(&self, limit: Duration) -> bool {
        let guard = self.serving.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = self
            .stopped
            .wait_timeout_while(guard, limit, |serving| *serving)
            .unwrap_or_else(|p| p.into_inner());
        !*guard
    }
}

/// A cloneable handle that stops a running `serve_forever` from any thread.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    pub(crate) control: Arc<Control>,
}

impl ShutdownHandle {
    /// Python's `shutdown()`: asks `serve_forever` to stop and waits until
    /// it has. Must not be called from the thread running `serve_forever`.
    pub fn shutdown(&self) {
        self.control.request_stop();
        while !self.control.wait_stopped(Duration::from_secs(3600)) {}
    }

    /// Asks `serve_forever` to stop without waiting.
    pub fn request_shutdown(&self) {
        self.control.request_stop();
    }

    /// Makes `sig` stop the loop (through signal-hook: the handler only
    /// sets the stop flag and writes one byte to the wake-up socket), and
    /// shut down the read side of a connection served on the main thread
    /// (Sync policy), so a handler blocked in `read` finishes too.
    pub fn stop_on_signal(&self, sig: Signal) -> crate::Result<()> {
        let install = || -> io::Result<()> {
            signal_hook::flag::register(sig as i32, self.control.stop_flag())?;
            signal_hook::low_level::pipe::register(sig as i32, self.control.wake_sender()?)?;
            crate::watch::on_stop_signal(sig)
        };
        install().map_err(|e| crate::Error::os("install a stop-signal handler", e))
    }

    /// [`stop_on_signal`](Self::stop_on_signal) for each of `sigs`, e.g.
    /// `&[Signal::SIGTERM, Signal::SIGINT]`.
    pub fn stop_on_signals(&self, sigs: &[Signal]) -> crate::Result<()> {
        sigs.iter().try_for_each(|&s| self.stop_on_signal(s))
    }

    /// True once a stop was requested and the loop has not ended yet.
    pub fn stop_requested(&self) -> bool {
        self.control.stop_requested()
    }
}
