//! Processes: fork with a child that cannot return, `_exit`, the
//! parent-death signal, and the single-thread proof forking needs.

use std::io;
use std::os::fd::RawFd;

/// Proof that this process was checked to have a single thread: the
/// precondition for forking and running ordinary code in the child.
/// Obtained from [`SingleThreaded::check`]; hold it only in code that
/// spawns no threads itself (the supervisor master, a fork-policy server).
#[derive(Debug)]
pub(crate) struct SingleThreaded(());

impl SingleThreaded {
    /// Returns the proof when `/proc/self/task` lists exactly one thread,
    /// or the number of threads found.
    pub(crate) fn check() -> io::Result<Result<SingleThreaded, usize>> {
        let n = thread_count()?;
        Ok(if n == 1 {
            Ok(SingleThreaded(()))
        } else {
            Err(n)
        })
    }
}

/// What a forked child may do that no other code may: given to the
/// closure [`fork`] runs in the child.
#[derive(Debug)]
pub(crate) struct ForkChild(());

impl ForkChild {
    /// Closes this process's copy of a descriptor whose owner (an
    /// `OwnedFd`, a `Socket`) lives on in memory shared with the parent:
    /// dropping the owner would write to that memory (a reference count),
    /// and the child leaves through `_exit`, so the owner is never dropped
    /// and never closes the number twice. The child must not use the
    /// owner afterwards.
    ///
    /// Through syscall(2), like the other calls a forked child makes:
    /// libc's `syscall` shares a 64 KiB stretch of code with its socket
    /// calls, while `close` lies in another (see `CHILD_TEXT`).
    #[link_section = child_text!()]
    pub(crate) fn close_inherited(&self, fd: RawFd) {
        // SAFETY: close(2) takes a plain integer; the owner of `fd` is never
        // dropped in this child (it ends in _exit), so nothing closes it twice.
        unsafe { libc::syscall(libc::SYS_close, fd as libc::c_long) };
    }
}

/// Forks the calling process and runs `child` in the new process, which
/// then ends with the code `child` returns; the parent gets the child's
/// pid. The child never returns into the caller's code, and never unwinds
/// into it: a panic escaping `child` ends the child with status 1.
///
/// After fork only the calling thread exists in the child. Had the parent
/// other threads, they could hold locks (the allocator's, a logger's) at
/// the instant of the fork, and the child could then only make
/// async-signal-safe calls. The `SingleThreaded` proof rules that out, so
/// `child` may run ordinary code.
#[link_section = child_text!()]
pub(crate) fn fork<F: FnOnce(&ForkChild) -> i32>(
    _proof: &SingleThreaded,
    child: F,
) -> io::Result<i32> {
    // SAFETY: the proof says this process had one thread when checked, and
    // its holders spawn none, so no lock can be held by a vanished thread;
    // the child runs only `child` and leaves through _exit below.
    match syscall!(fork())? {
        0 => {
            let _guard = ExitOnUnwind;
            let code = child(&ForkChild(()));
            exit_now(code)
        }
        pid => Ok(pid),
    }
}

/// Ends a forked child with status 1 if a panic unwinds out of its
/// closure: the child must never unwind into the parent's code.
struct ExitOnUnwind;

impl Drop for ExitOnUnwind {
    #[link_section = child_text!()]
    fn drop(&mut self) {
        exit_now(1)
    }
}

/// Ends the process at once with `code`: no destructors, no atexit handlers,
/// no stdio flush. Async-signal-safe; what a forked child leaves with.
#[link_section = child_text!()]
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and takes no pointers.
    unsafe { libc::_exit(code) }
}

/// Sets SIGPIPE to ignored, so a write to a vanished peer returns EPIPE
/// instead of killing the process. Inherited across fork and exec.
pub(crate) fn ignore_sigpipe() -> io::Result<()> {
    // SAFETY: SIG_IGN is a valid disposition for SIGPIPE; no handler code runs.
    let prev = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    if prev == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Number of threads in this process, read from `/proc/self/task`.
pub(crate) fn thread_count() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// Asks the kernel to send `sig` to this process when its parent dies.
#[link_section = child_text!()]
pub(crate) fn set_parent_death_signal(sig: nix::sys::signal::Signal) -> io::Result<()> {
    syscall!(prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0)).map(|_| ())
}

/// Sets the calling thread's name, what `ps`, `top` and `/proc/PID/comm`
/// show (PR_SET_NAME; the kernel keeps the first 15 bytes). For the main
/// thread, that names the process.
#[link_section = child_text!()]
pub(crate) fn set_name(name: &std::ffi::CStr) {
    let _ = syscall!(prctl(
        libc::PR_SET_NAME,
        name.as_ptr() as libc::c_ulong,
        0,
        0,
        0
    ));
}

/// A process name `"{program} {role}"` for [`set_name`]: the program's
/// file name cut to 8 bytes, so a role of up to 6 bytes fits the kernel's
/// 15 (`sockserv master`, `sockserv w3 g0`, `sockserv child`).
pub(crate) fn process_name(role: &str) -> std::ffi::CString {
    let exe = std::env::current_exe().ok();
    let prog = exe
        .as_deref()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "server".into());
    let prog: String = prog.chars().filter(|c| *c != '\0').take(8).collect();
    let name: String = format!("{prog} {role}")
        .chars()
        .filter(|c| *c != '\0')
        .collect();
    std::ffi::CString::new(name).unwrap_or_default()
}

/// The parent process's pid (getppid(2)).
#[link_section = child_text!()]
pub(crate) fn parent_pid() -> u32 {
    // SAFETY: getppid takes no arguments and cannot fail.
    unsafe { libc::getppid() as u32 }
}

/// Returns freed heap memory to the kernel (glibc's `malloc_trim(0)`), so
/// a process about to fork many times has fewer resident pages whose
/// page-table entries each fork copies.
pub(crate) fn release_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists; it is
    // called from a single-threaded process outside any allocation.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cargo test` runs threads, so no fork here: only the proof's refusal.
    #[test]
    fn single_thread_proof_is_refused_beside_other_threads() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let _ = rx.recv();
        });
        let checked = SingleThreaded::check().unwrap();
        tx.send(()).unwrap();
        t.join().unwrap();
        assert!(matches!(checked, Err(n) if n >= 2), "{checked:?}");
    }
}
