//! Memory shared by a process and everything it forks afterwards, for
//! counters that fork children and workers write and the master reads.

use std::io;

/// Maps `count` zeroed values of `T` in memory shared with every process
/// forked after this call (MAP_SHARED | MAP_ANONYMOUS), and never unmaps
/// it: the slice lives as long as the process, as a leaked Box would.
///
/// `T` must be valid when all-zero and usable from several processes at
/// once through `&T` (the crate uses it for structs of atomic integers;
/// `Sync` keeps it to types built for shared access).
pub(crate) fn shared_zeroed<T: Sync + Zeroable>(count: usize) -> io::Result<&'static [T]> {
    let count = count.max(1);
    let bytes = count
        .checked_mul(std::mem::size_of::<T>())
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
    // SAFETY: an anonymous shared mapping at an address of the kernel's
    // choosing; no existing memory is affected.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the mapping is page-aligned (so aligned for T, whose alignment
    // is at most a page for the crate's counter types), `bytes` long, zeroed
    // by the kernel (valid for T: the Zeroable contract), and never unmapped,
    // so the slice may be 'static; T: Sync makes shared `&T` access sound.
    Ok(unsafe { std::slice::from_raw_parts(ptr.cast::<T>(), count) })
}

/// Types whose all-zero bit pattern is a valid value.
///
/// # Safety
///
/// Implement only for types for which zeroed memory is a valid, initialised
/// value (integers, atomics, structs and arrays of them).
pub(crate) unsafe trait Zeroable {}

// SAFETY: Slot is a struct of atomic integers: all-zero is a valid value.
unsafe impl Zeroable for crate::stats::Slot {}
