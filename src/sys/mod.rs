//! The only module with `unsafe`: fork, `_exit`, signal actions, adopting
//! inherited descriptors, plain pthreads and a few socket calls the safe
//! wrappers (std, nix, socket2) do not cover.
//!
//! Every block carries a `// SAFETY:` line naming the invariant it relies
//! on (clippy's `undocumented_unsafe_blocks` is denied);
//! `tests/unsafe_fenced.rs` fails if `unsafe` code appears anywhere else.
//! (The crate cannot simply deny the `unsafe_code` lint: it also flags the
//! `#[link_section]` that keeps a fork child's code together.) What this module exports is safe
//! to call: where safety hinges on the caller, the signature takes a proof
//! ([`SingleThreaded`]) or confines the dangerous part to a closure the
//! module runs itself ([`fork`]).
//!
//! | file          | one OS concept                                         |
//! |---------------|--------------------------------------------------------|
//! | `process.rs`  | fork, `_exit`, parent-death signal, thread count       |
//! | `signal.rs`   | signal masks, and the few actions a handler may run    |
//! | `net.rs`      | recv into uninitialised memory, MSG_TRUNC, sockopts, fd adoption |
//! | `thread.rs`   | detached pthreads for the thread policy                |
//! | `pids.rs`     | the fork policy's table of children (MADV_DONTFORK)    |
//! | `shm.rs`      | memory shared with forked processes (the counters)     |

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

mod net;
mod pids;
mod process;
mod shm;
mod signal;
mod thread;

pub(crate) use net::{
    copy_uninit, recv_from_trunc, recv_into_spare, recv_uninit, send_all, set_tcp_defer_accept,
    set_tcp_nodelay, shutdown_both, shutdown_read, take_listen_fds, take_upgrade_fd,
    tcp_listen_queue,
};
pub(crate) use pids::PidTable;
pub(crate) use process::{
    fork, ignore_sigpipe, parent_pid, process_name, release_free_memory, set_name,
    set_parent_death_signal, ForkChild, SingleThreaded,
};
pub(crate) use shm::shared_zeroed;
pub(crate) use signal::{
    block_signals, count_signal, realtime_signals, restore_signals, shutdown_read_on_signal,
    StopSlots,
};
pub(crate) use thread::spawn_detached;

/// The linker section of the code a fork-policy child runs, from `fork`
/// returning to `_exit`. Functions on that path carry
/// `#[link_section = child_text!()]` (the macro is this name's one home).
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
/// from 0.87x to about 0.92x of a C fork loop with this (`scripts/bench.sh`);
/// `tests/fork_child_faults.rs` fails when a tagged function leaves the
/// section or a child's page faults grow.
#[allow(dead_code)] // documentation and tests name it; code uses the macro
pub(crate) const CHILD_TEXT: &str = child_text!();
