//! `--pid-file`: written atomically (temp file + rename), refused when it
//! names a live process, removed on exit if it still holds our pid.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A pid file this process wrote; removed on drop.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    pid: u32,
}

impl PidFile {
    /// Writes our pid to `path`, unless it names another live process.
    pub fn create(path: &Path) -> Result<PidFile> {
        let pid = std::process::id();
        if let Some(other) = read_pid(path) {
            if other != pid && is_alive(other) {
                return Err(Error::Config(format!(
                    "pid file {}: process {other} is running; refusing to replace it",
                    path.display()
                )));
            }
        }
        let tmp = path.with_extension(format!("tmp.{pid}"));
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            writeln!(f, "{pid}")?;
            f.sync_all()?;
            fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::socket("write pid file", path.display(), e)
        })?;
        Ok(PidFile {
            path: path.to_path_buf(),
            pid,
        })
    }
}

impl PidFile {
    /// The file's current path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the file to `to` (an upgrade's `PIDFILE.oldbin`, and back).
    pub fn rename(&mut self, to: PathBuf) -> Result<()> {
        fs::rename(&self.path, &to)
            .map_err(|e| Error::socket("rename pid file", self.path.display(), e))?;
        self.path = to;
        Ok(())
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if read_pid(&self.path) == Some(self.pid) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn is_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // Signal 0 checks existence; EPERM means it exists but is not ours.
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(e) => e == nix::errno::Errno::EPERM,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_our_pid_and_removes_it_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.pid");
        let pf = PidFile::create(&path).unwrap();
        assert_eq!(read_pid(&path), Some(std::process::id()));
        drop(pf);
        assert!(!path.exists());
    }

    #[test]
    fn refuses_a_file_naming_a_live_process_and_replaces_a_dead_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.pid");
        fs::write(&path, "1\n").unwrap(); // init is always alive
        let err = PidFile::create(&path).unwrap_err().to_string();
        assert!(err.contains("process 1 is running"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "1\n");
        fs::write(&path, "999999999\n").unwrap();
        let _pf = PidFile::create(&path).unwrap();
        assert_eq!(read_pid(&path), Some(std::process::id()));
    }
}
