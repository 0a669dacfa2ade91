//! A user's directory, and the file operations confined to it.
//!
//! Every path a client names is relative to its root. A path is first
//! checked as text (no absolute paths, no `..`, no NUL, no reserved names),
//! then resolved by the kernel with `openat2(RESOLVE_BENEATH)` against the
//! root's descriptor: a symlink that leads outside the root, whether
//! absolute or through `..`, fails with `EXDEV` at every component, with no
//! window between a check and a use. Final components are then handled
//! with the `*at` calls on the parent's descriptor, which do not follow a
//! final symlink.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::parts::{lock_home, part_name, probe, Part};
use crate::services::accounts::credential::random_bytes;
use crate::services::accounts::text::is_unsafe;

/// Names starting with this are the service's temp files (part files of
/// uploads in progress, see [`parts`](super::parts)): hidden from
/// listings, refused as user paths, and never counted as stored bytes.
pub const TEMP_PREFIX: &str = ".sockfiles-part-";

/// The longest path a client may name.
pub const MAX_PATH: usize = 1024;

const BENEATH: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_MAGICLINKS);

/// One directory entry as `ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `d` directory, `f` regular file, `l` symlink, `o` other.
    pub kind: char,
    /// Size in bytes (files; 0 otherwise).
    pub size: u64,
    /// The name.
    pub name: String,
}

/// Splits a client path into components, refusing what could leave the
/// root. `""` and `"."` name the root itself (no components).
pub fn components(path: &str) -> Result<Vec<&str>, String> {
    if path.len() > MAX_PATH {
        return Err(format!("path longer than {MAX_PATH} bytes"));
    }
    if path.starts_with('/') {
        return Err(format!(
            "{path}: absolute paths are refused; paths are relative to your root"
        ));
    }
    if path.contains('\0') || path.chars().any(is_unsafe) {
        return Err("paths may not contain control characters".into());
    }
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(format!(
                    "{path}: '..' is refused; paths stay inside your root"
                ))
            }
            c if c.starts_with(TEMP_PREFIX) => {
                return Err(format!(
                    "{path}: names starting with {TEMP_PREFIX} are reserved"
                ))
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Describes a failed file operation for the client.
fn explain(op: &str, path: &str, e: Errno) -> String {
    match e {
        Errno::XDEV => format!("{op} {path}: refused: the path leads outside your root"),
        Errno::LOOP => format!("{op} {path}: too many symlinks"),
        e => format!("{op} {path}: {}", io::Error::from(e)),
    }
}

/// What a user's directory holds, as one walk under its lock found it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes in finished regular files (what the quota bounds).
    pub stored: u64,
    /// Bytes reserved by uploads in progress (their declared sizes, less
    /// what each replaces).
    pub reserved: u64,
    /// Part files of dead uploads the walk removed.
    pub swept: u64,
    /// Their bytes.
    pub swept_bytes: u64,
}

/// A user's root directory and limits.
pub struct Root {
    dir: OwnedFd,
    /// Largest file accepted by `put`.
    pub max_file_size: u64,
    /// Most bytes all of the user's files may hold.
    pub quota: u64,
}

impl Root {
    /// Opens (creating, mode 0700) `files_root/user`. `user` must be a
    /// checked account name.
    pub fn open(files_root: &Path, user: &str, max_file_size: u64, quota: u64) -> io::Result<Root> {
        let ctx = |op: &str, e: Errno| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!(
                    "{op} {}/{user}: {}",
                    files_root.display(),
                    io::Error::from(e)
                ),
            )
        };
        let top = rfs::open(
            files_root,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ctx("open files root", e))?;
        match rfs::mkdirat(&top, user, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(ctx("mkdir", e)),
        }
        let how = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
        let dir = rfs::openat2(&top, user, how, Mode::empty(), ResolveFlags::NO_SYMLINKS)
            .map_err(|e| ctx("open", e))?;
        Ok(Root {
            dir,
            max_file_size,
            quota,
        })
    }

    fn open_dir(&self, comps: &[&str]) -> Result<OwnedFd, Errno> {
        let path = if comps.is_empty() {
            ".".to_string()
        } else {
            comps.join("/")
        };
        let how = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
        rfs::openat2(&self.dir, path, how, Mode::empty(), BENEATH)
    }

    /// The parent directory of `path` and the final name.
    fn parent<'a>(&self, op: &str, path: &'a str) -> Result<(OwnedFd, &'a str), String> {
        let comps = components(path)?;
        let Some((name, dirs)) = comps.split_last() else {
            return Err(format!("{op}: name a file or directory below your root"));
        };
        let dir = self.open_dir(dirs).map_err(|e| explain(op, path, e))?;
        Ok((dir, name))
    }

    /// `mkdir -p PATH`.
    pub fn mkdir(&self, path: &str) -> Result<(), String> {
        let comps = components(path)?;
        let mut dir = self.open_dir(&[]).map_err(|e| explain("mkdir", path, e))?;
        for c in comps {
            match rfs::mkdirat(&dir, c, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(explain("mkdir", path, e)),
            }
            let how = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
            dir = rfs::openat2(&dir, c, how, Mode::empty(), BENEATH)
                .map_err(|e| explain("mkdir", path, e))?;
        }
        Ok(())
    }

    /// The entries of directory `path`, sorted by name.
    pub fn list(&self, path: &str) -> Result<Vec<Entry>, String> {
        let comps = components(path)?;
        let dir = self.open_dir(&comps).map_err(|e| explain("ls", path, e))?;
        let mut out = Vec::new();
        for_each_entry(&dir, |name, st| {
            let kind = match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => 'd',
                FileType::RegularFile => 'f',
                FileType::Symlink => 'l',
                _ => 'o',
            };
            let size = if kind == 'f' { st.st_size as u64 } else { 0 };
            out.push(Entry {
                kind,
                size,
                name: name.to_string(),
            });
        })
        .map_err(|e| explain("ls", path, e))?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Opens regular file `path` for reading; returns it and its size.
    pub fn open_read(&self, path: &str) -> Result<(File, u64), String> {
        let comps = components(path)?;
        if comps.is_empty() {
            return Err("get: name a file".into());
        }
        let how = OFlags::RDONLY | OFlags::CLOEXEC;
        let fd = rfs::openat2(&self.dir, comps.join("/"), how, Mode::empty(), BENEATH)
            .map_err(|e| explain("get", path, e))?;
        let st = rfs::fstat(&fd).map_err(|e| explain("get", path, e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(format!("get {path}: not a regular file"));
        }
        Ok((File::from(fd), st.st_size as u64))
    }

    /// Removes a file, a symlink, or an empty directory.
    pub fn remove(&self, path: &str) -> Result<(), String> {
        let (dir, name) = self.parent("rm", path)?;
        let st = rfs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| explain("rm", path, e))?;
        let flags = if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        rfs::unlinkat(&dir, name, flags).map_err(|e| explain("rm", path, e))
    }

    /// What the user's files hold and their uploads reserve, measured
    /// under the directory's lock; orphaned part files met on the way are
    /// removed.
    pub fn usage(&self) -> io::Result<Usage> {
        let _lock = lock_home(&self.dir)?;
        measure(&self.dir).map_err(io::Error::from)
    }

    /// Starts an upload of `size` bytes to `path`, after checking the
    /// file-size limit and the quota. Under the directory's lock, it
    /// measures, checks that finished files, the reservations of uploads
    /// in progress and this one fit the quota together, and creates the
    /// part file that carries this upload's reservation, so concurrent
    /// uploads, in any processes, cannot together pass the quota.
    pub fn begin_upload(&self, path: &str, size: u64) -> Result<Upload, String> {
        if size > self.max_file_size {
            return Err(format!(
                "put {path}: {size} bytes exceed the file size limit of {} bytes",
                self.max_file_size
            ));
        }
        let (dir, name) = self.parent("put", path)?;
        let lock = lock_home(&self.dir).map_err(|e| explain("put: lock", path, e))?;
        let replaced = replaced_size(&dir, name).map_err(|e| explain("put", path, e))?;
        let usage = measure(&self.dir).map_err(|e| explain("put: measure", path, e))?;
        let after = (usage.stored + usage.reserved)
            .saturating_sub(replaced)
            .saturating_add(size);
        if after > self.quota {
            return Err(quota_exceeded(path, self.quota, usage, size));
        }
        let reserved = size.saturating_sub(replaced);
        let tag: String = random_bytes::<8>()
            .map_err(|e| format!("put {path}: {e}"))?
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let tmp = part_name(&tag, reserved);
        let how = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
        let fd = rfs::openat(&dir, tmp.as_str(), how, Mode::from_raw_mode(0o644))
            .map_err(|e| explain("put", path, e))?;
        // Held until the upload ends (its descriptor closes): the mark of a
        // live upload, taken before the directory's lock is let go.
        let held = rfs::flock(&fd, rfs::FlockOperation::NonBlockingLockExclusive);
        let file = File::from(fd);
        let home = self
            .dir
            .try_clone()
            .map_err(|e| format!("put {path}: {e}"))?;
        let upload = Upload {
            file,
            dir,
            home,
            tmp,
            name: name.to_string(),
            path: path.to_string(),
            size,
            remaining: size,
            replaced,
            reserved,
            quota: self.quota,
            done: false,
        };
        held.map_err(|e| explain("put: lock", path, e))?;
        drop(lock);
        Ok(upload)
    }
}

/// The size of the regular file `name` in `dir` that an upload would
/// replace (0 if none); a directory there is refused.
fn replaced_size(dir: &OwnedFd, name: &str) -> Result<u64, Errno> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => Err(Errno::ISDIR),
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
            Ok(st.st_size as u64)
        }
        Ok(_) | Err(Errno::NOENT) => Ok(0),
        Err(e) => Err(e),
    }
}

fn quota_exceeded(path: &str, quota: u64, usage: Usage, size: u64) -> String {
    format!(
        "put {path}: quota exceeded: {} of {quota} bytes used and {} reserved by uploads \
         in progress, {size} more requested",
        usage.stored, usage.reserved
    )
}

/// Walks the user directory `home`; call it under [`lock_home`].
fn measure(home: &OwnedFd) -> Result<Usage, Errno> {
    let how = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
    let root = rfs::openat(home, ".", how, Mode::empty())?;
    let mut usage = Usage::default();
    walk(&root, 0, &mut usage)?;
    Ok(usage)
}

/// Calls `f` with each entry of `dir` but `.`, `..` and temp files.
fn for_each_entry(dir: &OwnedFd, mut f: impl FnMut(&str, &rfs::Stat)) -> Result<(), Errno> {
    let mut it = rfs::Dir::read_from(dir)?;
    while let Some(ent) = it.read() {
        let ent = ent?;
        let Ok(name) = ent.file_name().to_str() else {
            continue;
        };
        if name == "." || name == ".." || name.starts_with(TEMP_PREFIX) {
            continue;
        }
        match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => f(name, &st),
            Err(Errno::NOENT) => {} // removed meanwhile
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Adds what `dir` holds to `usage`, removing orphaned part files
/// ([`parts`](super::parts)); call it under the user directory's lock.
pub(super) fn walk(dir: &OwnedFd, depth: usize, usage: &mut Usage) -> Result<(), Errno> {
    let mut it = rfs::Dir::read_from(dir)?;
    while let Some(ent) = it.read() {
        let ent = ent?;
        let name = ent.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        let st = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(e),
        };
        let part = name.to_bytes().starts_with(TEMP_PREFIX.as_bytes());
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile if part => match probe(dir, name) {
                Ok(Part::Live(reserved)) => usage.reserved += reserved,
                Ok(Part::Orphan) => match rfs::unlinkat(dir, name, AtFlags::empty()) {
                    Ok(()) => {
                        usage.swept += 1;
                        usage.swept_bytes += st.st_size as u64;
                    }
                    // Its upload ended meanwhile and removed it (an upload
                    // unlinks its part file before it lets go of the lock).
                    Err(Errno::NOENT) => {}
                    Err(e) => return Err(e),
                },
                Err(Errno::NOENT) => {}
                Err(e) => return Err(e),
            },
            FileType::RegularFile => usage.stored += st.st_size as u64,
            FileType::Directory if depth < 64 => {
                let how = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let sub = rfs::openat(dir, name, how, Mode::empty())?;
                walk(&sub, depth + 1, usage)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// An upload in progress: a part file beside its final name, locked by
/// this upload and carrying its quota reservation. Dropped before
/// [`Upload::finish`], it removes the part file, so an interrupted upload
/// never leaves anything under the real name; if its process dies instead,
/// the lock goes with it and the part file is an orphan the next walk
/// removes.
#[derive(Debug)]
pub struct Upload {
    file: File,
    dir: OwnedFd,
    home: OwnedFd,
    tmp: String,
    name: String,
    path: String,
    size: u64,
    remaining: u64,
    replaced: u64,
    reserved: u64,
    quota: u64,
    done: bool,
}

impl Upload {
    /// Bytes still expected.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Appends `data`; more than announced is refused.
    pub fn write(&mut self, data: &[u8]) -> Result<(), String> {
        if data.len() as u64 > self.remaining {
            return Err(format!("put {}: more data than announced", self.path));
        }
        self.file
            .write_all(data)
            .map_err(|e| format!("put {}: write: {e}", self.path))?;
        self.remaining -= data.len() as u64;
        Ok(())
    }

    /// Bytes this upload reserved against the quota.
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// Flushes the file to disk and renames it to its real name, under the
    /// user directory's lock. If the file it replaces shrank or went away
    /// meanwhile, the credit taken for it at the start is gone, so the
    /// quota is checked again first.
    pub fn finish(mut self) -> Result<(), String> {
        if self.remaining != 0 {
            return Err(format!(
                "put {}: {} bytes missing",
                self.path, self.remaining
            ));
        }
        self.file
            .sync_all()
            .map_err(|e| format!("put {}: fsync: {e}", self.path))?;
        let path = self.path.as_str();
        let _lock = lock_home(&self.home).map_err(|e| explain("put: lock", path, e))?;
        let now = replaced_size(&self.dir, &self.name).map_err(|e| explain("put", path, e))?;
        if now < self.replaced.min(self.size) {
            let usage = measure(&self.home).map_err(|e| explain("put: measure", path, e))?;
            let others = Usage {
                reserved: usage.reserved.saturating_sub(self.reserved),
                ..usage
            };
            let after = (others.stored + others.reserved)
                .saturating_sub(now)
                .saturating_add(self.size);
            if after > self.quota {
                return Err(quota_exceeded(path, self.quota, others, self.size));
            }
        }
        rfs::renameat(&self.dir, self.tmp.as_str(), &self.dir, self.name.as_str())
            .map_err(|e| explain("put", path, e))?;
        self.done = true;
        let _ = rfs::fsync(self.dir.as_fd());
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.done {
            let _ = rfs::unlinkat(&self.dir, self.tmp.as_str(), AtFlags::empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, Root) {
        let d = tempfile::tempdir().unwrap();
        let r = Root::open(d.path(), "alice", 1000, 1500).unwrap();
        (d, r)
    }

    #[test]
    fn textual_escapes_are_refused() {
        assert!(components("/etc/passwd").unwrap_err().contains("absolute"));
        assert!(components("a/../../b").unwrap_err().contains(".."));
        assert!(components("a/.sockfiles-part-x")
            .unwrap_err()
            .contains("reserved"));
        assert!(components("a\0b").is_err());
        assert_eq!(components("./a//b/").unwrap(), vec!["a", "b"]);
        assert!(components("").unwrap().is_empty());
    }

    #[test]
    fn symlinks_out_of_the_root_are_refused_and_inside_ones_work() {
        let (d, r) = root();
        let home = d.path().join("alice");
        std::os::unix::fs::symlink("/etc", home.join("abs")).unwrap();
        std::os::unix::fs::symlink("../..", home.join("up")).unwrap();
        r.mkdir("real/dir").unwrap();
        std::os::unix::fs::symlink("real", home.join("inside")).unwrap();
        for p in ["abs/passwd", "up/x", "abs"] {
            let e = r.open_read(p).unwrap_err();
            assert!(e.contains("outside your root"), "{p}: {e}");
        }
        assert!(r.list("abs").unwrap_err().contains("outside"));
        assert!(r.mkdir("up/evil").unwrap_err().contains("outside"));
        assert!(r.begin_upload("abs/x", 1).unwrap_err().contains("outside"));
        assert_eq!(r.list("inside").unwrap()[0].name, "dir");
        // rm of a symlink removes the link, not its target.
        r.remove("abs").unwrap();
        assert!(Path::new("/etc").exists());
    }

    #[test]
    fn uploads_appear_only_when_finished_and_respect_limits() {
        let (d, r) = root();
        let mut up = r.begin_upload("f.txt", 5).unwrap();
        up.write(b"hel").unwrap();
        assert!(r.list("").unwrap().is_empty(), "temp files are hidden");
        drop(up);
        assert_eq!(
            std::fs::read_dir(d.path().join("alice")).unwrap().count(),
            0
        );
        let mut up = r.begin_upload("f.txt", 5).unwrap();
        assert!(up.write(b"hello!").is_err());
        up.write(b"hello").unwrap();
        up.finish().unwrap();
        let (_, size) = r.open_read("f.txt").unwrap();
        assert_eq!(size, 5);
        assert!(r
            .begin_upload("big", 1001)
            .unwrap_err()
            .contains("file size limit"));
        r.begin_upload("g", 1000).unwrap().finish().unwrap_err();
        let mut up = r.begin_upload("g", 1000).unwrap();
        up.write(&[0; 1000]).unwrap();
        up.finish().unwrap();
        assert!(r.begin_upload("h", 496).unwrap_err().contains("quota"));
        // Replacing a file counts only the difference.
        let up = r.begin_upload("g", 1000).unwrap();
        assert_eq!(up.reserved(), 0);
        assert_eq!(r.usage().unwrap().stored, 1005);
    }

    #[test]
    fn uploads_in_progress_reserve_their_size_until_they_end() {
        let (_d, r) = root();
        let a = r.begin_upload("a", 1000).unwrap();
        let e = r.begin_upload("b", 501).unwrap_err();
        assert!(e.contains("0 of 1500 bytes used and 1000 reserved"), "{e}");
        let mut b = r.begin_upload("b", 500).unwrap();
        assert_eq!(r.usage().unwrap().reserved, 1500);
        drop(a);
        b.write(&[1; 500]).unwrap();
        b.finish().unwrap();
        let u = r.usage().unwrap();
        assert_eq!((u.stored, u.reserved), (500, 0));
        r.begin_upload("a", 1000).unwrap();
    }

    #[test]
    fn a_replacement_whose_credit_went_away_is_checked_again_at_finish() {
        let (_d, r) = root();
        let mut g = r.begin_upload("g", 1000).unwrap();
        g.write(&[0; 1000]).unwrap();
        g.finish().unwrap();
        let mut again = r.begin_upload("g", 1000).unwrap();
        assert_eq!(again.reserved(), 0, "replaces as much as it brings");
        again.write(&[1; 1000]).unwrap();
        r.remove("g").unwrap();
        let mut h = r.begin_upload("h", 1000).unwrap();
        h.write(&[2; 1000]).unwrap();
        h.finish().unwrap();
        let e = again.finish().unwrap_err();
        assert!(e.contains("quota exceeded"), "{e}");
        assert_eq!(r.usage().unwrap().stored, 1000);
    }

    #[test]
    fn rm_removes_files_and_empty_directories_only() {
        let (_d, r) = root();
        r.mkdir("a/b").unwrap();
        assert!(r.remove("a").unwrap_err().contains("not empty"));
        r.remove("a/b").unwrap();
        r.remove("a").unwrap();
        assert!(r.remove("").is_err());
        assert!(r.remove("nothing").unwrap_err().contains("No such file"));
    }
}
