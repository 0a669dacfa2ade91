//! Signal masks, and the only actions a signal handler runs in this crate:
//! counting a signal, and shutting down the read side of the connection
//! being served. Both are fixed here, so each registration can state why
//! its handler is async-signal-safe; the state they touch belongs to the
//! callers (`supervisor::signals`, `watch`).

use std::cell::Cell;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::LocalKey;

use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};

/// Makes every delivery of signal number `sig` (realtime ones too) add one
/// to `counter` (and run no other code), so a loop can later handle each
/// signal as many times as it came.
pub(crate) fn count_signal(sig: i32, counter: Arc<AtomicUsize>) -> io::Result<signal_hook::SigId> {
    let action = move || {
        counter.fetch_add(1, Ordering::SeqCst);
    };
    // SAFETY: the action only increments a lock-free atomic: async-signal-safe,
    // no allocation, no lock.
    unsafe { signal_hook::low_level::register(sig, action) }
}

/// The realtime signals' numbers (SIGRTMIN to SIGRTMAX, as libc reserves
/// the first few for itself).
pub(crate) fn realtime_signals() -> std::ops::RangeInclusive<i32> {
    libc::SIGRTMIN()..=libc::SIGRTMAX()
}

/// Where a stop signal finds the connection to wake: the state
/// [`shutdown_read_on_signal`]'s handler reads, owned by `watch`.
pub(crate) struct StopSlots {
    /// Set by the handler: a stop signal arrived.
    pub(crate) stopped: &'static AtomicBool,
    /// The connection served on the main thread, or -1.
    pub(crate) main_conn: &'static AtomicI32,
    /// The connection a forked child serves, or -1. Must be
    /// constant-initialised and have no destructor, so reading it is a
    /// plain load even inside a handler.
    pub(crate) child_conn: &'static LocalKey<Cell<RawFd>>,
}

/// Makes `sig` set `slots.stopped` and shut down the read side of the
/// connection recorded in `slots` (the child's, else the main thread's),
/// in addition to any other action registered for it.
pub(crate) fn shutdown_read_on_signal(
    sig: Signal,
    slots: &'static StopSlots,
) -> io::Result<signal_hook::SigId> {
    let action = move || {
        slots.stopped.store(true, Ordering::SeqCst);
        let child = slots.child_conn.with(|c| c.get());
        let fd = if child >= 0 {
            child
        } else {
            slots.main_conn.load(Ordering::SeqCst)
        };
        if fd >= 0 {
            // SAFETY: shutdown(2) is async-signal-safe; a stale fd yields EBADF or
            // ENOTSOCK, which is ignored.
            unsafe { libc::shutdown(fd, libc::SHUT_RD) };
        }
    };
    // SAFETY: the action only stores and loads atomics, reads a constant-
    // initialised thread-local without a destructor (plain memory, no lazy
    // set-up; StopSlots' contract) and calls shutdown(2), all
    // async-signal-safe; it neither allocates nor locks.
    unsafe { signal_hook::low_level::register(sig as i32, action) }
}

/// Blocks `sigs` in the calling thread and returns the previous mask. Used
/// around fork: the child inherits the mask, installs its own handlers,
/// then unblocks, so a signal sent while it boots waits instead of being
/// lost or killing it.
pub(crate) fn block_signals(sigs: &[Signal]) -> io::Result<SigSet> {
    let mut set = SigSet::empty();
    for &s in sigs {
        set.add(s);
    }
    let mut old = SigSet::empty();
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)).map_err(io::Error::from)?;
    Ok(old)
}

/// Restores a mask saved by [`block_signals`].
#[link_section = child_text!()]
pub(crate) fn restore_signals(old: &SigSet) -> io::Result<()> {
    // The raw system call rather than nix's or libc's wrapper: a forked
    // child calls this, and their code lies outside the child's text (see
    // CHILD_TEXT). A mask saved from libc never holds libc's internal
    // signals, which its wrapper would filter out, so restoring it raw is
    // the same. The kernel reads the first 8 bytes of the sigset_t.
    // SAFETY: `old` points to a valid sigset_t, larger than the 8 bytes
    // passed as its size; the old-mask pointer may be null.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK as libc::c_long,
            old.as_ref() as *const libc::sigset_t,
            std::ptr::null_mut::<libc::sigset_t>(),
            8 as libc::c_long,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
