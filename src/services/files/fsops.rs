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

use crate::services::accounts::credential::random_bytes;
use crate::services::accounts::text::is_unsafe;

/// Names starting with this are the service's temp files: hidden from
/// listings and refused as user paths.
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

    /// Bytes used by all regular files under the root (temp files included).
    pub fn usage(&self) -> io::Result<u64> {
        let root = self.open_dir(&[]).map_err(io::Error::from)?;
        du(&root, 0).map_err(io::Error::from)
    }

    /// Starts an upload of `size` bytes to `path`, after checking the
    /// file-size limit and the quota.
    pub fn begin_upload(&self, path: &str, size: u64) -> Result<Upload, String> {
        if size > self.max_file_size {
            return Err(format!(
                "put {path}: {size} bytes exceed the file size limit of {} bytes",
                self.max_file_size
            ));
        }
        let (dir, name) = self.parent("put", path)?;
        let replaced = match rfs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                return Err(format!("put {path}: is a directory"))
            }
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
                st.st_size as u64
            }
            Ok(_) | Err(Errno::NOENT) => 0,
            Err(e) => return Err(explain("put", path, e)),
        };
        let used = self
            .usage()
            .map_err(|e| format!("put {path}: cannot measure usage: {e}"))?;
        let after = used.saturating_sub(replaced).saturating_add(size);
        if after > self.quota {
            return Err(format!(
                "put {path}: quota exceeded: {used} of {} bytes used, {size} more requested",
                self.quota
            ));
        }
        let tag: String = random_bytes::<8>()
            .map_err(|e| format!("put {path}: {e}"))?
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let tmp = format!("{TEMP_PREFIX}{tag}");
        let how = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
        let fd = rfs::openat(&dir, tmp.as_str(), how, Mode::from_raw_mode(0o644))
            .map_err(|e| explain("put", path, e))?;
        Ok(Upload {
            file: File::from(fd),
            dir,
            tmp,
            name: name.to_string(),
            path: path.to_string(),
            remaining: size,
            done: false,
        })
    }
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

fn du(dir: &OwnedFd, depth: usize) -> Result<u64, Errno> {
    let mut total = 0u64;
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
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => total += st.st_size as u64,
            FileType::Directory if depth < 64 => {
                let how = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let sub = rfs::openat(dir, name, how, Mode::empty())?;
                total += du(&sub, depth + 1)?;
            }
            _ => {}
        }
    }
    Ok(total)
}

/// An upload in progress: a temp file beside its final name. Dropped
/// before [`Upload::finish`], it removes the temp file, so an interrupted
/// upload never leaves anything under the real name.
#[derive(Debug)]
pub struct Upload {
    file: File,
    dir: OwnedFd,
    tmp: String,
    name: String,
    path: String,
    remaining: u64,
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

    /// Flushes the file to disk and renames it to its real name.
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
        rfs::renameat(&self.dir, self.tmp.as_str(), &self.dir, self.name.as_str())
            .map_err(|e| explain("put", &self.path, e))?;
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
        r.begin_upload("g", 1000).unwrap();
        assert_eq!(r.usage().unwrap(), 1005);
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
