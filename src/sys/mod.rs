//! The only module with `unsafe`: fork, `_exit`, raw signal actions and a few
//! libc calls the safe wrappers (std, nix, socket2) do not cover.
//!
//! Each block carries a `// SAFETY:` line naming the invariant it relies on.
//! Everything exported here is safe to call, except [`fork`], whose contract
//! the caller must keep.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

mod pids;
pub use pids::PidTable;

/// Calls a libc function and turns `-1` into `io::Error::last_os_error()`.
macro_rules! syscall {
    ($fn: ident ( $($arg: expr),* $(,)* ) ) => {{
        #[allow(unused_unsafe)]
        // SAFETY: the caller passes arguments valid for this libc call.
        let res = unsafe { libc::$fn($($arg, )*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

/// The linker section of the code a fork-policy child runs, from `fork`
/// returning to `_exit`: `#[link_section = ".text.hot.sockserv_child"]` on
/// each function of that path (the attribute needs the literal).
///
/// A child starts with no page-table entries for the program's code: each
/// 64 KiB stretch of code it touches costs a page fault, and its exit
/// unmaps what the fault mapped, a few microseconds per stretch per
/// connection. Spread through the binary, the request path touched six
/// stretches; gathered in one section (the build script passes `-z
/// keep-text-section-prefix` so the linker keeps `.text.hot*` together) it
/// touches one or two. For the same reason the path calls libc's
/// `syscall` rather than libc wrappers that lie elsewhere in libc, and
/// avoids generic code of std and nix. Connect-per-request under fork went
/// from 0.87x to about 0.92x of a C fork loop with this (`scripts/bench.sh`).
pub const CHILD_TEXT: &str = ".text.hot.sockserv_child";

/// What [`fork`] returned in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// We are the new child process.
    Child,
    /// We are the parent; the child has this pid.
    Parent(i32),
}

/// Proof that this process was checked to have a single thread: the
/// precondition for forking and running ordinary code in the child.
/// Obtained from [`SingleThreaded::check`]; hold it only in code that
/// spawns no threads itself (the supervisor master, a fork-policy server).
#[derive(Debug)]
pub struct SingleThreaded(());

impl SingleThreaded {
    /// Returns the proof when `/proc/self/task` lists exactly one thread,
    /// or the number of threads found.
    pub fn check() -> io::Result<Result<SingleThreaded, usize>> {
        let n = thread_count()?;
        Ok(if n == 1 {
            Ok(SingleThreaded(()))
        } else {
            Err(n)
        })
    }
}

/// Forks the calling process.
///
/// After fork only the calling thread exists in the child. Had the parent
/// other threads, they could hold locks (the allocator's, a logger's) at
/// the instant of the fork, and the child could then only make
/// async-signal-safe calls. The `SingleThreaded` proof rules that out, so
/// the child may run ordinary code. The child must never return into the
/// parent's code paths: it finishes with [`exit_now`].
#[link_section = ".text.hot.sockserv_child"]
pub fn fork(_proof: &SingleThreaded) -> io::Result<Forked> {
    // SAFETY: the proof says this process had one thread when checked, and
    // its holders spawn none, so no lock can be held by a vanished thread.
    match syscall!(fork())? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// Ends the process at once with `code`: no destructors, no atexit handlers,
/// no stdio flush. Async-signal-safe; what a forked child leaves with.
#[link_section = ".text.hot.sockserv_child"]
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and takes no pointers.
    unsafe { libc::_exit(code) }
}

/// Sets SIGPIPE to ignored, so a write to a vanished peer returns EPIPE
/// instead of killing the process. Inherited across fork and exec.
pub fn ignore_sigpipe() -> io::Result<()> {
    // SAFETY: SIG_IGN is a valid disposition for SIGPIPE; no handler code runs.
    let prev = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    if prev == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Number of threads in this process, read from `/proc/self/task`.
pub fn thread_count() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// Closes a raw descriptor that no owner will drop (a forked child closing
/// the parent's listening socket before `_exit`).
///
/// Through syscall(2), like the other calls a forked child makes: libc's
/// `syscall` shares a 64 KiB stretch of code with its socket calls, while
/// `close` lies in another, which the child would fault in (see CHILD_TEXT).
#[link_section = ".text.hot.sockserv_child"]
pub fn close_fd(fd: RawFd) {
    // SAFETY: close(2) takes a plain integer; closing a descriptor no owner
    // will drop (the caller's contract above) frees nothing in use.
    unsafe { libc::syscall(libc::SYS_close, fd as libc::c_long) };
}

/// The stream connection this process serves on its main thread (a Sync
/// server, a Fork child), or -1. A stop signal shuts its read side down so a
/// handler blocked in `read` sees end-of-file and finishes after the reply
/// it is writing.
static ACTIVE_CONN: AtomicI32 = AtomicI32::new(-1);

thread_local! {
    /// The connection a forked child serves, or -1: as `ACTIVE_CONN`, but
    /// in the child's thread-local block, a page the child writes anyway
    /// (a global would copy one more page from the parent per child).
    /// Constant-initialised and without a destructor, so a signal handler
    /// reads it as plain memory.
    static CHILD_CONN: std::cell::Cell<RawFd> = const { std::cell::Cell::new(-1) };
}

/// Records `fd` as the connection this forked child serves (-1 for none).
#[link_section = ".text.hot.sockserv_child"]
pub fn set_child_conn(fd: RawFd) {
    CHILD_CONN.with(|c| c.set(fd));
}

/// Set once a stop signal arrived (see [`shutdown_read_on_signal`]).
static STOP_SIGNALLED: AtomicBool = AtomicBool::new(false);

/// Records `fd` as the connection served on the main thread (-1 for none).
#[link_section = ".text.hot.sockserv_child"]
pub fn set_active_conn(fd: RawFd) {
    ACTIVE_CONN.store(fd, Ordering::SeqCst);
}

/// True once a signal registered with [`shutdown_read_on_signal`] arrived.
pub fn stop_signalled() -> bool {
    STOP_SIGNALLED.load(Ordering::SeqCst)
}

/// Makes `sig` record a stop ([`stop_signalled`]) and shut down the read
/// side of the active connection (see [`set_active_conn`]), in addition to
/// any other action registered for it.
pub fn shutdown_read_on_signal(sig: i32) -> io::Result<signal_hook::SigId> {
    let action = || {
        STOP_SIGNALLED.store(true, Ordering::SeqCst);
        let child = CHILD_CONN.with(|c| c.get());
        let fd = if child >= 0 {
            child
        } else {
            ACTIVE_CONN.load(Ordering::SeqCst)
        };
        if fd >= 0 {
            // SAFETY: shutdown(2) is async-signal-safe; a stale fd yields EBADF or
            // ENOTSOCK, which is ignored.
            unsafe { libc::shutdown(fd, libc::SHUT_RD) };
        }
    };
    // SAFETY: the action only stores and loads atomics, reads a constant-
    // initialised thread-local without a destructor (plain memory, no lazy
    // set-up) and calls shutdown(2), all async-signal-safe; it neither
    // allocates nor locks.
    let id = unsafe { signal_hook::low_level::register(sig, action) }?;
    if (0..64).contains(&sig) {
        SHUTDOWN_READ_SIGNALS.fetch_or(1 << sig, Ordering::SeqCst);
    }
    Ok(id)
}

/// Asks the kernel to send `sig` to this process when its parent dies.
#[link_section = ".text.hot.sockserv_child"]
pub fn set_parent_death_signal(sig: i32) -> io::Result<()> {
    syscall!(prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0)).map(|_| ())
}

/// Shuts down the read side of `fd`; errors (already closed, not connected)
/// are ignored because the only goal is to wake a blocked reader.
pub fn shutdown_read(fd: RawFd) {
    let _ = syscall!(shutdown(fd, libc::SHUT_RD));
}

/// `recvfrom(2)` with MSG_TRUNC: returns the datagram's real length, which
/// exceeds `buf.len()` when the datagram did not fit (the rest is dropped).
pub fn recv_from_trunc(
    socket: &socket2::Socket,
    buf: &mut [u8],
) -> io::Result<(usize, socket2::SockAddr)> {
    // SAFETY: MaybeUninit<u8> has the layout of u8, and every byte of `buf`
    // is already initialised; recv only writes initialised bytes into it.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) };
    socket.recv_from_with_flags(uninit, libc::MSG_TRUNC)
}

/// Makes every delivery of `sig` add one to `counter` (and run no other
/// code), so a loop can later handle each signal as many times as it came.
pub fn count_signal(
    sig: i32,
    counter: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> io::Result<signal_hook::SigId> {
    let action = move || {
        counter.fetch_add(1, Ordering::SeqCst);
    };
    // SAFETY: the action only increments a lock-free atomic: async-signal-safe,
    // no allocation, no lock.
    unsafe { signal_hook::low_level::register(sig, action) }
}

/// Blocks `sigs` in the calling thread and returns the previous mask. Used
/// around fork: the child inherits the mask, installs its own handlers,
/// then unblocks, so a signal sent while it boots waits instead of being
/// lost or killing it.
pub fn block_signals(sigs: &[i32]) -> io::Result<nix::sys::signal::SigSet> {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
    let mut set = SigSet::empty();
    for &s in sigs {
        set.add(Signal::try_from(s).map_err(io::Error::from)?);
    }
    let mut old = SigSet::empty();
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)).map_err(io::Error::from)?;
    Ok(old)
}

/// Restores a mask saved by [`block_signals`].
#[link_section = ".text.hot.sockserv_child"]
pub fn restore_signals(old: &nix::sys::signal::SigSet) -> io::Result<()> {
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

/// Sets TCP_NODELAY on `fd` (libc directly: a forked child calls this;
/// see CHILD_TEXT).
#[link_section = ".text.hot.sockserv_child"]
pub fn set_tcp_nodelay(fd: RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    syscall!(setsockopt(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_NODELAY,
        (&one as *const libc::c_int).cast(),
        std::mem::size_of::<libc::c_int>() as libc::socklen_t
    ))
    .map(|_| ())
}

/// The parent process's pid (getppid(2)).
#[link_section = ".text.hot.sockserv_child"]
pub fn parent_pid() -> u32 {
    // SAFETY: getppid takes no arguments and cannot fail.
    unsafe { libc::getppid() as u32 }
}

/// Takes ownership of an inherited descriptor number (fd 3 from systemd,
/// or the master's socket in a worker) after checking that it is open.
/// The caller must be its only owner: nothing else may close it.
pub fn adopt_fd(fd: RawFd) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    syscall!(fcntl(fd, libc::F_GETFD))?;
    // SAFETY: fd is open (F_GETFD succeeded) and the caller hands over
    // ownership, so exactly one OwnedFd will close it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Receives into `buf`'s spare capacity (reserve first) and grows its
/// length by what arrived; returns that count, 0 at end of stream. Only
/// the bytes received are written: no page of the buffer is touched
/// beforehand.
pub fn recv_into_spare(socket: &socket2::Socket, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.capacity() == buf.len() {
        buf.reserve(4096);
    }
    let n = socket.recv(buf.spare_capacity_mut())?;
    // SAFETY: recv initialised the first n bytes of the spare capacity, and
    // n <= spare capacity, so len + n <= capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Signals (as a bit mask) that already have the
/// [`shutdown_read_on_signal`] action in this process; a forked child
/// inherits it with the handlers.
static SHUTDOWN_READ_SIGNALS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// True when [`shutdown_read_on_signal`] was registered for `sig` (in this
/// process or, before a fork, its parent).
pub fn shutdown_read_registered(sig: i32) -> bool {
    (0..64).contains(&sig) && SHUTDOWN_READ_SIGNALS.load(Ordering::SeqCst) & (1 << sig) != 0
}

/// `recv(2)` into uninitialised memory; returns the bytes received (0 at
/// end of stream), the only ones written.
#[link_section = ".text.hot.sockserv_child"]
pub fn recv_uninit<'b>(
    socket: &socket2::Socket,
    buf: &'b mut [std::mem::MaybeUninit<u8>],
) -> io::Result<&'b mut [u8]> {
    let n = socket.recv(buf)?;
    // SAFETY: recv initialised the first n bytes; MaybeUninit<u8> has u8's layout.
    Ok(unsafe { &mut *(&mut buf[..n] as *mut [std::mem::MaybeUninit<u8>] as *mut [u8]) })
}

/// Copies as much of `src` as fits into uninitialised `buf`; returns the
/// copied bytes.
pub fn copy_uninit<'b>(buf: &'b mut [std::mem::MaybeUninit<u8>], src: &[u8]) -> &'b mut [u8] {
    let n = buf.len().min(src.len());
    for (dst, &b) in buf.iter_mut().zip(&src[..n]) {
        dst.write(b);
    }
    // SAFETY: the loop initialised the first n bytes.
    unsafe { &mut *(&mut buf[..n] as *mut [std::mem::MaybeUninit<u8>] as *mut [u8]) }
}

/// Returns freed heap memory to the kernel (glibc's `malloc_trim(0)`), so
/// a process about to fork many times has fewer resident pages whose
/// page-table entries each fork copies.
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists; it is
    // called from a single-threaded process outside any allocation.
    unsafe { libc::malloc_trim(0) };
}

/// Stack size of the threads [`spawn_detached`] starts (Rust's default).
pub const THREAD_STACK: usize = 2 << 20;

/// Runs `f` on a new detached POSIX thread with a `THREAD_STACK` stack.
///
/// `std::thread::spawn` also gives each thread its own alternate signal
/// stack for stack-overflow reports: an mmap, an mprotect and, when the
/// thread ends, a munmap, which in a multi-threaded process interrupts
/// every other CPU to flush its TLB. A thread per connection pays that on
/// every connection, so the thread policy starts plain pthreads: glibc
/// keeps the stacks of finished threads and hands them to new ones. The
/// cost: a stack overflow in such a thread still kills the process, by
/// SIGSEGV, without Rust's "has overflowed its stack" message. A panic in
/// `f` is caught here (it must not unwind into C) and ends only the thread.
pub fn spawn_detached(f: Box<dyn FnOnce() + Send + 'static>) -> io::Result<()> {
    type Job = Box<dyn FnOnce() + Send + 'static>;
    extern "C" fn start(arg: *mut libc::c_void) -> *mut libc::c_void {
        // SAFETY: `arg` is the Box leaked below for this thread alone.
        let job = unsafe { Box::from_raw(arg.cast::<Job>()) };
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        std::ptr::null_mut()
    }
    let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
    // SAFETY: attr is initialised by pthread_attr_init before any other use
    // and destroyed once; the calls take only that pointer and plain values.
    let rc = unsafe {
        let a = attr.as_mut_ptr();
        let mut rc = libc::pthread_attr_init(a);
        if rc == 0 {
            rc = libc::pthread_attr_setdetachstate(a, libc::PTHREAD_CREATE_DETACHED);
            if rc == 0 {
                rc = libc::pthread_attr_setstacksize(a, THREAD_STACK);
            }
            if rc == 0 {
                let arg = Box::into_raw(Box::new(f)).cast::<libc::c_void>();
                let mut tid: libc::pthread_t = 0;
                rc = libc::pthread_create(&mut tid, a, start, arg);
                if rc != 0 {
                    drop(Box::from_raw(arg.cast::<Job>())); // the thread never started
                }
            }
            libc::pthread_attr_destroy(a);
        }
        rc
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}
