//! The fork policy: a child process per request, as Python's
//! `ForkingMixIn`. The only code that forks per request.

use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use slog::{debug, error, warn};

use crate::control::Control;
use crate::dispatch::Dispatch;
use crate::error::{Error, Result};
use crate::stats::Slot;
use crate::sys::{self, PidTable};
use crate::transport::Incoming;
use crate::watch::{self, Watch};

pub(crate) struct ForkRunner {
    pub(super) max_children: usize,
    pub(super) block_on_close: bool,
    pub(super) children: PidTable,
    pub(super) control: Arc<Control>,
    pub(super) listener_fd: Option<RawFd>,
    /// Readable while a SIGCHLD is pending. SIGCHLD stays blocked in the
    /// serving process: no handler runs per child, and no child's exit
    /// makes a fork in progress start over (the kernel restarts a fork
    /// that an unblocked signal interrupts, after copying the memory map).
    pub(super) sigchld: SignalFd,
    /// The signal mask from before SIGCHLD was blocked: children get it
    /// back, and so does this process when the runner goes.
    pub(super) mask: SigSet,
    /// SIGCHLD was blocked before the runner blocked it.
    pub(super) caller_blocked_sigchld: bool,
    pub(super) single: sys::SingleThreaded,
    /// This process's pid, for children to check their parent against.
    pub(super) pid: u32,
    /// What children call themselves in `ps` (`sockserv child`).
    pub(super) child_name: std::ffi::CString,
    /// Children killed by a signal: warned at most every 10 s.
    pub(super) killed: crate::throttle::Throttle,
}

impl ForkRunner {
    pub(super) fn new(
        max_children: usize,
        block_on_close: bool,
        control: &Arc<Control>,
        listener_fd: Option<RawFd>,
    ) -> Result<ForkRunner> {
        let single = check_single_threaded()?;
        // Fewer resident pages, fewer page-table entries for each fork to copy.
        sys::release_free_memory();
        let children =
            PidTable::new(max_children).map_err(|e| Error::os("map the table of children", e))?;
        let mask =
            sys::block_signals(&[Signal::SIGCHLD]).map_err(|e| Error::os("block SIGCHLD", e))?;
        let caller_blocked_sigchld = mask.contains(Signal::SIGCHLD);
        let mut set = SigSet::empty();
        set.add(Signal::SIGCHLD);
        let sigchld =
            match SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
                Ok(fd) => fd,
                Err(e) => {
                    let _ = sys::restore_signals(&mask);
                    return Err(Error::os("signalfd for SIGCHLD", std::io::Error::from(e)));
                }
            };
        Ok(ForkRunner {
            max_children: max_children.min(children.capacity()),
            block_on_close,
            children,
            control: Arc::clone(control),
            listener_fd,
            sigchld,
            mask,
            caller_blocked_sigchld,
            single,
            pid: std::process::id(),
            child_name: sys::process_name("child"),
            killed: crate::throttle::Throttle::default(),
        })
    }

    /// Called as serving starts: blocks SIGCHLD again, in case the program
    /// changed the signal mask since the runner was built (a supervisor
    /// worker unblocks its signals once its server is built), and takes
    /// the mask children get from now.
    pub(super) fn begin(&mut self) -> Result<()> {
        let mut mask =
            sys::block_signals(&[Signal::SIGCHLD]).map_err(|e| Error::os("block SIGCHLD", e))?;
        if !self.caller_blocked_sigchld {
            mask.remove(Signal::SIGCHLD);
        }
        self.mask = mask;
        Ok(())
    }

    #[link_section = child_text!()]
    pub(super) fn spawn(&mut self, incoming: Incoming, dispatch: &Dispatch) -> Result<()> {
        // A graceful stop sends children SIGTERM. Unless the child inherits
        // the action for it, it installs one; until then SIGTERM waits.
        let inherited = watch::stop_action_registered(Signal::SIGTERM);
        let mask = if inherited {
            None
        } else {
            Some(sys::block_signals(&[Signal::SIGTERM]).map_err(|e| Error::os("sigprocmask", e))?)
        };
        // The proof was taken when the runner was built, and serve_forever
        // checks again. The parent's copy of the connection closes when
        // the closure that owns it drops, as fork returns.
        let forked = sys::fork(&self.single, |child| {
            self.run_child(child, incoming, dispatch, mask.is_some())
        });
        if let Some(mask) = &mask {
            let _ = sys::restore_signals(mask);
        }
        let pid = forked.map_err(|e| Error::os("fork", e))?;
        // Never full: the loop stops accepting at max_children.
        self.children.insert(pid);
        let stats = dispatch.ctx.stats;
        Slot::up(&stats.children);
        Slot::up(&stats.in_flight);
        Ok(())
    }

    /// The child's whole life; its result is the child's exit status.
    /// The parent only accepts, forks and closes: any page it writes
    /// between forks is copied once per child, and its time is the server's
    /// throughput. So the child does the rest, and drops nothing.
    /// Never inlined: tests/fork_child_faults.rs finds it by its symbol
    /// (LLVM inlined it once code elsewhere in the crate changed).
    #[link_section = child_text!()]
    #[inline(never)]
    fn run_child(
        &self,
        child: &sys::ForkChild,
        incoming: Incoming,
        dispatch: &Dispatch,
        own_stop_action: bool,
    ) -> i32 {
        if own_stop_action {
            // A graceful stop's SIGTERM: finish the reply in hand, then leave.
            let _ = watch::on_stop_signal(Signal::SIGTERM);
        }
        // The mask the program had: SIGCHLD (and SIGTERM) unblocked.
        let _ = sys::restore_signals(&self.mask);
        // A server that dies without closing (SIGKILL) leaves no orphan
        // serving on: its children are killed too.
        let _ = sys::set_parent_death_signal(Signal::SIGKILL);
        if sys::parent_pid() != self.pid {
            return 0; // the parent died before prctl took effect
        }
        sys::set_name(&self.child_name);
        if matches!(incoming, Incoming::Stream { .. }) {
            if let Some(fd) = self.listener_fd {
                // Without this, a long-lived child would keep the port open
                // after the parent closed it.
                child.close_inherited(fd);
            }
        }
        crate::stats::enter_child();
        // Failures are counted (and reported) by dispatch; the exit status
        // carries the replies not yet counted (see stats::reply).
        dispatch.finish(dispatch.prepare(incoming, Watch::ForkChild), true);
        crate::stats::child_exit_code()
    }

    /// Python's `collect_children(blocking=False)`: waits on each of our own
    /// children with WNOHANG (never on -1, which could steal the status of
    /// a process some other part of the program started). Does nothing
    /// unless a SIGCHLD came since the last pass, so a busy server does not
    /// pay one waitpid per live child on every loop.
    pub(super) fn reap(&mut self, dispatch: &Dispatch) {
        if self.take_sigchld() {
            self.reap_each(dispatch);
        }
    }

    /// Consumes a pending SIGCHLD; true if there was one. One read: a
    /// standard signal is pending at most once, however many children
    /// exited (the reap that follows collects them all).
    fn take_sigchld(&mut self) -> bool {
        matches!(self.sigchld.read_signal(), Ok(Some(_)))
    }

    /// Readable when a child has exited since the last reap: the serving
    /// loop polls it beside the listener, so it wakes at the bound.
    pub(super) fn event_fd(&self) -> BorrowedFd<'_> {
        self.sigchld.as_fd()
    }

    /// Reaps every exited child of ours. Peeks (WNOWAIT) at whichever
    /// child exited and reaps it by pid if it is ours: two calls per exit
    /// rather than one per live child. A child that is not ours is left
    /// for its owner, and the pid-by-pid sweep finishes the pass.
    pub(super) fn reap_each(&mut self, dispatch: &Dispatch) {
        let peek = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        loop {
            match waitid(Id::All, peek) {
                Ok(WaitStatus::StillAlive) => return,
                Ok(status) => match status.pid() {
                    Some(pid) if self.children.contains(pid.as_raw()) => {
                        self.reap_one(pid.as_raw(), dispatch);
                    }
                    _ => break,
                },
                Err(nix::errno::Errno::ECHILD) => {
                    for _ in 0..self.children.len() {
                        gone(dispatch, None);
                    }
                    self.children.clear();
                    return;
                }
                Err(_) => break,
            }
        }
        self.sweep(dispatch);
    }

    pub(super) fn reap_one(&mut self, pid: i32, dispatch: &Dispatch) {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(WaitStatus::Exited(_, code)) => {
                self.children.remove(pid);
                exited(dispatch, code);
            }
            Err(nix::errno::Errno::ECHILD) => {
                self.children.remove(pid);
                gone(dispatch, None);
            }
            Ok(status) => {
                self.children.remove(pid);
                gone(dispatch, Some(&status));
                self.warn_killed(pid, &status, dispatch);
            }
            Err(e) => warn!(dispatch.log, "waitpid failed"; "child" => pid, "error" => %e),
        }
    }

    /// A child that a signal ended: a WARN line naming the signal, at
    /// most every 10 s (a handler that crashes on every request must not
    /// fill the disk).
    fn warn_killed(&mut self, pid: i32, status: &WaitStatus, dispatch: &Dispatch) {
        let WaitStatus::Signaled(_, sig, core) = status else {
            debug!(dispatch.log, "child ended"; "child" => pid, "status" => ?status);
            return;
        };
        if let Some(suppressed) = self.killed.event(Instant::now()) {
            warn!(dispatch.log, "child killed by a signal; its connection was cut off";
                  "child" => pid, "signal" => sig.as_str(), "core_dumped" => *core,
                  "suppressed" => suppressed);
        }
    }

    /// Python's per-pid pass over every live child.
    pub(super) fn sweep(&mut self, dispatch: &Dispatch) {
        let mut killed = Vec::new();
        self.children.retain(
            |pid| match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => true,
                Ok(WaitStatus::Exited(_, code)) => {
                    exited(dispatch, code);
                    false
                }
                Ok(status) => {
                    gone(dispatch, Some(&status));
                    killed.push((pid, status));
                    false
                }
                Err(nix::errno::Errno::ECHILD) => {
                    gone(dispatch, None);
                    false
                }
                Err(e) => {
                    warn!(dispatch.log, "waitpid failed"; "child" => pid, "error" => %e);
                    true
                }
            },
        );
        for (pid, status) in killed {
            self.warn_killed(pid, &status, dispatch);
        }
    }

    /// Waits up to `limit` for a child to exit (or a wake-up), then
    /// consumes the SIGCHLD.
    fn wait_child_exit(&mut self, limit: Duration) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let ms = limit.as_millis().clamp(1, i32::MAX as u128) as i32;
        let mut fds = [
            PollFd::new(self.control.wake_source(), PollFlags::POLLIN),
            PollFd::new(self.sigchld.as_fd(), PollFlags::POLLIN),
        ];
        let _ = poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        );
        self.control.drain();
        self.take_sigchld();
    }

    pub(super) fn close(&mut self, graceful: bool, deadline: Option<Instant>, dispatch: &Dispatch) {
        // Waiting below reads SIGCHLD from the signalfd: it must be blocked.
        let _ = self.begin();
        if graceful {
            for &pid in self.children.as_slice() {
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
            self.wait_child_exit(left.min(Duration::from_millis(500)));
        }
        for &pid in self.children.as_slice() {
            error!(dispatch.log, "child outlived the graceful timeout; killing it"; "child" => pid);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let status = waitpid(Pid::from_raw(pid), None).ok();
            gone(dispatch, status.as_ref());
        }
        self.children.clear();
    }
}

impl Drop for ForkRunner {
    fn drop(&mut self) {
        let _ = sys::restore_signals(&self.mask);
    }
}

/// Counts a child that exited with `code`: the replies it had not yet
/// added itself (`stats::child_exit_code`).
fn exited(dispatch: &Dispatch, code: i32) {
    if code > 0 {
        Slot::add_n(&dispatch.ctx.stats.requests, code as u64);
    }
    gone(dispatch, None);
}

/// Counts a reaped child out of the gauges; one killed by a signal is an
/// error (its request may have been cut off).
fn gone(dispatch: &Dispatch, status: Option<&WaitStatus>) {
    let stats = dispatch.ctx.stats;
    Slot::down(&stats.children);
    Slot::down(&stats.in_flight);
    if let Some(WaitStatus::Signaled(..)) = status {
        Slot::add(&stats.errors);
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
