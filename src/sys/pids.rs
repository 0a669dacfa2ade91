//! A fork-policy server's table of live children, kept in memory its
//! children do not inherit.
//!
//! After a fork every writable page is shared copy-on-write by parent and
//! child, so each page the parent writes before the child exits costs the
//! parent a page fault and a 4 KiB copy. A parent that records each new
//! child in an ordinary set (a heap page for the entry, another for its
//! length) pays those copies on every fork. This table lives in its own
//! mapping marked `MADV_DONTFORK`: children never get it, so the parent's
//! writes to it are plain stores.

use std::io;
use std::ptr::NonNull;

/// Live child pids, at most `capacity`, in a mapping children do not inherit.
///
/// A forked child must not touch its inherited copy of this value (the
/// memory behind it does not exist in the child); it leaves through
/// `exit_now`, which runs no destructors.
pub(crate) struct PidTable {
    /// Slot 0 holds the length; pids follow.
    base: NonNull<i32>,
    capacity: usize,
    bytes: usize,
}

// SAFETY: the table owns its mapping exclusively, as a Box owns its
// allocation; nothing else holds the pointer.
unsafe impl Send for PidTable {}

impl PidTable {
    /// Pids never exceed 2^22 on Linux, so neither can live children.
    pub(crate) const MAX_CAPACITY: usize = 1 << 22;

    /// A table for up to `capacity` pids (at most [`Self::MAX_CAPACITY`]).
    /// Reserves the address space without touching it.
    pub(crate) fn new(capacity: usize) -> io::Result<PidTable> {
        let capacity = capacity.clamp(1, Self::MAX_CAPACITY);
        let bytes = (capacity + 1) * std::mem::size_of::<i32>();
        // SAFETY: an anonymous private mapping at an address of the kernel's
        // choosing; no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let table = PidTable {
            base: NonNull::new(ptr.cast()).expect("mmap returned null"),
            capacity,
            bytes,
        };
        // SAFETY: the range is exactly the mapping made above.
        if unsafe { libc::madvise(ptr, bytes, libc::MADV_DONTFORK) } == -1 {
            return Err(io::Error::last_os_error()); // dropping `table` unmaps
        }
        Ok(table)
    }

    /// How many pids the table can hold.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    fn slots(&self) -> &[i32] {
        // SAFETY: the mapping holds capacity + 1 zero-initialised i32s and
        // lives as long as self.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr(), self.capacity + 1) }
    }

    fn slots_mut(&mut self) -> &mut [i32] {
        // SAFETY: as in `slots`; &mut self makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr(), self.capacity + 1) }
    }

    /// The live pids.
    pub(crate) fn as_slice(&self) -> &[i32] {
        let slots = self.slots();
        &slots[1..=slots[0] as usize]
    }

    /// Number of pids held.
    pub(crate) fn len(&self) -> usize {
        self.slots()[0] as usize
    }

    /// True when no pid is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when `pid` is held.
    pub(crate) fn contains(&self, pid: i32) -> bool {
        self.as_slice().contains(&pid)
    }

    /// Adds `pid`; false (and nothing added) when the table is full.
    pub(crate) fn insert(&mut self, pid: i32) -> bool {
        let len = self.len();
        if len == self.capacity {
            return false;
        }
        let slots = self.slots_mut();
        slots[len + 1] = pid;
        slots[0] = len as i32 + 1;
        true
    }

    /// Removes `pid` if held (the last pid takes its place).
    pub(crate) fn remove(&mut self, pid: i32) {
        self.retain(|p| p != pid);
    }

    /// Keeps the pids for which `keep` returns true.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(i32) -> bool) {
        let mut len = self.len();
        let mut i = 0;
        while i < len {
            let slots = self.slots_mut();
            if keep(slots[i + 1]) {
                i += 1;
            } else {
                slots[i + 1] = slots[len];
                len -= 1;
                slots[0] = len as i32;
            }
        }
    }

    /// Removes every pid.
    pub(crate) fn clear(&mut self) {
        self.slots_mut()[0] = 0;
    }
}

impl Drop for PidTable {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this table made, once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.bytes) };
    }
}

impl std::fmt::Debug for PidTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.as_slice()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_inserts_removals_and_refuses_past_capacity() {
        let mut t = PidTable::new(3).unwrap();
        assert!(t.is_empty());
        assert!(t.insert(10) && t.insert(20) && t.insert(30));
        assert!(!t.insert(40), "a full table refuses");
        assert_eq!(t.len(), 3);
        t.remove(10);
        assert!(!t.contains(10) && t.contains(20) && t.contains(30));
        t.retain(|p| p != 30);
        assert_eq!(t.as_slice(), &[20]);
        t.remove(99);
        assert_eq!(t.as_slice(), &[20]);
        t.clear();
        assert!(t.is_empty() && t.insert(50));
    }

    #[test]
    fn capacity_is_bounded_by_the_largest_pid_count() {
        let t = PidTable::new(usize::MAX).unwrap();
        assert_eq!(t.capacity(), PidTable::MAX_CAPACITY);
    }

    #[test]
    fn the_mapping_is_not_inherited_by_children() {
        let t = PidTable::new(8).unwrap();
        let start = t.base.as_ptr() as usize;
        let maps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        // The VMA holding the table: another table made by a test running
        // at the same time has the same flags, and the kernel may merge
        // the two, so look for the range containing it, not starting at it.
        let range = |l: &str| -> Option<(usize, usize)> {
            let (lo, rest) = l.split_once('-')?;
            let hi = rest.split_whitespace().next()?;
            Some((
                usize::from_str_radix(lo, 16).ok()?,
                usize::from_str_radix(hi, 16).ok()?,
            ))
        };
        let mut lines = maps
            .lines()
            .skip_while(|l| !range(l).is_some_and(|(lo, hi)| lo <= start && start < hi));
        assert!(lines.next().is_some(), "mapping not found in smaps");
        let flags = lines.find(|l| l.starts_with("VmFlags:")).unwrap();
        assert!(flags.contains(" dc"), "MADV_DONTFORK not set: {flags}");
    }
}
