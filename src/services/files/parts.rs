//! Part files (uploads in progress), the quota reservations they carry,
//! and the sweep that removes the ones a dead upload left behind.
//!
//! The files service runs under fork (a process per connection) as well
//! as under thread, pool and sync, and under a supervisor that may run
//! several workers and restart them: whatever coordinates two uploads of
//! one user must work across processes and survive any one of them dying.
//! Shared memory (like the crate's `src/sys/shm.rs` counters) is mapped by
//! one process before it forks, so it would not span two supervisor
//! workers, nor outlive a restart, and a reservation left in it by a killed
//! child would stay forever; a mutex in one process's memory does not span
//! fork children at all. So the state lives on disk, in the user's
//! directory, under `flock(2)` locks, which the kernel drops when their
//! holder dies, however it dies:
//!
//! - Each upload's part file is named `.sockfiles-part-TAG-RESERVED`,
//!   where RESERVED is the bytes it reserved against the quota, and is held
//!   under an exclusive `flock` by the upload for its whole life. A part
//!   file whose lock can be taken has no live upload: its owner crashed or
//!   was killed. Such an orphan counts for nothing and is removed by the
//!   next walk that meets it; a live one counts its reservation, never its
//!   size so far.
//! - The user's directory itself is the lock around the quota: measuring,
//!   checking and creating a part file happen under an exclusive `flock`
//!   on it (`lock_home`), as does the rename that turns a part file into
//!   a file, so no walk ever sees a part file and its finished file both,
//!   or neither, and no part file is seen before its upload locks it.
//!
//! `flock` locks belong to an open file description, so two threads of one
//! process that each open the file exclude each other too (`fcntl` locks,
//! per process, would not).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, SystemTime};

use rustix::fs::{self as rfs, FlockOperation, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use super::fsops::{walk, Usage, TEMP_PREFIX};

/// How often, at most, a files server walks the whole root for orphaned
/// part files beyond the walk at start. An orphan appears only when a
/// serving process dies mid-upload; it never counts against the quota and
/// the next put or quota of its user removes it, so this sweep only frees
/// the disk of users who do not come back. Ten minutes bounds how long
/// such a file (at most `--max-file-size`) lingers while the server is in
/// use, at the cost of one walk of the root (a `du`) per ten minutes.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(600);

/// The file in the root whose mtime is the last whole-root sweep.
const SWEEP_STAMP: &str = ".sockfiles-sweep";

/// The name of a part file reserving `reserved` bytes.
pub(super) fn part_name(tag: &str, reserved: u64) -> String {
    format!("{TEMP_PREFIX}{tag}-{reserved}")
}

/// The bytes a part file's name reserves (0 for a name without them).
fn reserved_by(name: &str) -> u64 {
    name.strip_prefix(TEMP_PREFIX)
        .and_then(|rest| rest.rsplit_once('-'))
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

/// What a part file is.
pub(super) enum Part {
    /// An upload holds it; it reserves this many bytes.
    Live(u64),
    /// No upload holds it.
    Orphan,
}

/// Whether part file `name` in `dir` has a live upload. Call it only under
/// [`lock_home`], so that the answer cannot change before it is used.
pub(super) fn probe(dir: &OwnedFd, name: &rustix::ffi::CStr) -> Result<Part, Errno> {
    let how = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = rfs::openat(dir, name, how, Mode::empty())?;
    match rfs::flock(&fd, FlockOperation::NonBlockingLockShared) {
        Ok(()) => Ok(Part::Orphan),
        Err(Errno::WOULDBLOCK) => Ok(Part::Live(reserved_by(&name.to_string_lossy()))),
        Err(e) => Err(e),
    }
}

/// Locks the user directory `home` (any descriptor of it) exclusively,
/// blocking; the lock lasts as long as the returned descriptor. It opens
/// `home` afresh, so the lock is this caller's even if another thread of
/// the process holds one through another descriptor.
pub(super) fn lock_home(home: &OwnedFd) -> Result<OwnedFd, Errno> {
    let how = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
    let fd = rfs::openat(home, ".", how, Mode::empty())?;
    rfs::flock(&fd, FlockOperation::LockExclusive)?;
    Ok(fd)
}

/// Part files a sweep removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// How many.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// User directories that could not be swept, each with its error
    /// (the sweep goes on with the others).
    pub failed: Vec<String>,
}

/// Walks every user directory under `root`, removing orphaned part files.
/// `Err` only if the root itself cannot be read.
pub fn sweep_root(root: &Path) -> io::Result<Swept> {
    let ctx = |op: &str, e: Errno| {
        let e = io::Error::from(e);
        io::Error::new(e.kind(), format!("{op} {}: {e}", root.display()))
    };
    let how = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
    let top = rfs::open(root, how, Mode::empty()).map_err(|e| ctx("open files root", e))?;
    let mut users = Vec::new();
    let mut it = rfs::Dir::read_from(&top).map_err(|e| ctx("read files root", e))?;
    while let Some(ent) = it.read() {
        let ent = ent.map_err(|e| ctx("read files root", e))?;
        // Account names never start with '.'; the root's own files do.
        if ent.file_name().to_bytes().first() != Some(&b'.') {
            users.push(ent.file_name().to_owned());
        }
    }
    let mut swept = Swept::default();
    for user in users {
        let how = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut usage = Usage::default();
        let walked = match rfs::openat(&top, user.as_c_str(), how, Mode::empty()) {
            Err(Errno::NOTDIR | Errno::LOOP | Errno::NOENT) => continue,
            Err(e) => Err(("open", e)),
            Ok(home) => match lock_home(&home) {
                Err(e) => Err(("lock", e)),
                Ok(_lock) => walk(&home, 0, &mut usage).map_err(|e| ("walk", e)),
            },
        };
        swept.files += usage.swept;
        swept.bytes += usage.swept_bytes;
        if let Err((op, e)) = walked {
            let dir = root.join(user.to_string_lossy().as_ref());
            swept
                .failed
                .push(format!("{op} {}: {}", dir.display(), io::Error::from(e)));
        }
    }
    Ok(swept)
}

/// Sweeps the whole root if `force`, or if no process has done so for
/// [`SWEEP_INTERVAL`] (the mtime of `ROOT/.sockfiles-sweep`, which every
/// process serving this root shares), unless another process is sweeping
/// now; `None` if it was not this one's turn.
pub fn sweep_if_due(root: &Path, force: bool) -> io::Result<Option<Swept>> {
    let path = root.join(SWEEP_STAMP);
    let ctx = |op: &str, e: Errno| {
        let e = io::Error::from(e);
        io::Error::new(e.kind(), format!("{op} {}: {e}", path.display()))
    };
    let how = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let stamp = rfs::open(&path, how, Mode::from_raw_mode(0o600)).map_err(|e| ctx("open", e))?;
    match rfs::flock(&stamp, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(Errno::WOULDBLOCK) => return Ok(None),
        Err(e) => return Err(ctx("lock", e)),
    }
    let st = rfs::fstat(&stamp).map_err(|e| ctx("stat", e))?;
    let last = SystemTime::UNIX_EPOCH + Duration::from_secs(st.st_mtime.max(0) as u64);
    let due = SystemTime::now()
        .duration_since(last)
        .map_or(true, |age| age >= SWEEP_INTERVAL);
    if !due && !force {
        return Ok(None);
    }
    touch(&stamp).map_err(|e| ctx("touch", e))?;
    sweep_root(root).map(Some)
}

/// Sets `fd`'s mtime (and atime) to now.
fn touch(fd: &impl AsFd) -> Result<(), Errno> {
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: rfs::UTIME_NOW,
    };
    rfs::futimens(
        fd,
        &Timestamps {
            last_access: now,
            last_modification: now,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_name_carries_its_reservation() {
        let n = part_name("00ff", 4096);
        assert!(n.starts_with(TEMP_PREFIX));
        assert_eq!(reserved_by(&n), 4096);
        assert_eq!(reserved_by(".sockfiles-part-00ff"), 0, "older names");
        assert_eq!(reserved_by(".sockfiles-part-00ff-x"), 0);
    }

    #[test]
    fn a_part_file_is_live_while_its_upload_holds_it_and_swept_after() {
        let d = tempfile::tempdir().unwrap();
        let root = super::super::fsops::Root::open(d.path(), "alice", 100, 100).unwrap();
        let up = root.begin_upload("f", 60).unwrap();
        let usage = root.usage().unwrap();
        assert_eq!((usage.stored, usage.reserved, usage.swept), (0, 60, 0));
        assert_eq!(sweep_root(d.path()).unwrap(), Swept::default());
        std::fs::write(d.path().join("not-a-dir"), b"").unwrap();
        // What a killed upload leaves: the file without its lock.
        let left = d.path().join("alice").join(part_name("0011", 50));
        std::fs::write(&left, b"partial").unwrap();
        let swept = sweep_root(d.path()).unwrap();
        assert_eq!((swept.files, swept.bytes), (1, 7), "{swept:?}");
        assert!(swept.failed.is_empty(), "{swept:?}");
        assert!(!left.exists());
        drop(up);
        assert_eq!(root.usage().unwrap(), Usage::default());
    }

    #[test]
    fn the_whole_root_is_swept_at_most_once_per_interval() {
        let d = tempfile::tempdir().unwrap();
        assert!(sweep_if_due(d.path(), true).unwrap().is_some(), "forced");
        assert!(
            sweep_if_due(d.path(), false).unwrap().is_none(),
            "just swept"
        );
        let stamp = std::fs::File::options()
            .write(true)
            .open(d.path().join(SWEEP_STAMP))
            .unwrap();
        let then = SystemTime::now() - SWEEP_INTERVAL - Duration::from_secs(1);
        stamp.set_modified(then).unwrap();
        assert!(sweep_if_due(d.path(), false).unwrap().is_some(), "due");
        assert!(
            sweep_if_due(d.path(), false).unwrap().is_none(),
            "swept again"
        );
    }
}
