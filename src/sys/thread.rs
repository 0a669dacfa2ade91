//! Plain detached POSIX threads for the thread policy.

use std::io;

/// Stack size of the threads [`spawn_detached`] starts (Rust's default).
pub(crate) const THREAD_STACK: usize = 2 << 20;

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
pub(crate) fn spawn_detached(f: Box<dyn FnOnce() + Send + 'static>) -> io::Result<()> {
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
