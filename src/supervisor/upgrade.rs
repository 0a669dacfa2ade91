//! USR2: upgrade in place, as nginx and unicorn do it, with no refused
//! connection and no lost request.
//!
//! The old master renames its pid file to `PIDFILE.oldbin`, forks, and the
//! child execs the binary at the path the master was started from (so a
//! package manager's replacement of that file is what runs), with the
//! listening socket as fd 3 by the socket-activation convention
//! (`LISTEN_FDS=1`, `LISTEN_PID`) and the write end of a pipe as fd 4
//! (`SOCKSERV_UPGRADE_FD=4`). The new master writes the pid file, starts its
//! workers, and once they serve writes one byte to the pipe. The old master
//! then stops its own workers gracefully and exits 0, leaving the socket
//! file and the pid file to the new one.
//!
//! If the new binary fails first (exec fails, it exits: the pipe reaches
//! end-of-file; or it is not serving within the graceful timeout: it is
//! killed), the old master restores its pid file, logs why, and serves on
//! as if nothing happened.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::SigSet;

use crate::error::{Error, Result};
use crate::socket::Listener;
use crate::sys;

/// The environment variable naming the descriptor the new master reports
/// readiness on.
pub(super) const UPGRADE_FD_ENV: &str = "SOCKSERV_UPGRADE_FD";

/// Where the new binary finds the socket and the pipe.
const SOCKET_FD: RawFd = 3;
const PIPE_FD: RawFd = 4;

/// The byte a new master sends once its workers serve.
const READY: u8 = b'R';

/// How the program was started: what an upgrade executes again.
#[derive(Debug, Clone)]
pub(super) struct Invocation {
    exe: PathBuf,
    args: Vec<OsString>,
}

impl Invocation {
    /// This process's binary (resolved now, before anyone replaces the
    /// file) and arguments.
    pub(super) fn current() -> Option<Invocation> {
        let exe = std::env::current_exe().ok()?;
        Some(Invocation {
            exe,
            args: std::env::args_os().skip(1).collect(),
        })
    }

    /// The binary's path.
    pub(super) fn exe(&self) -> &Path {
        &self.exe
    }
}

/// An upgrade in progress, as the old master sees it.
#[derive(Debug)]
pub(super) struct Upgrade {
    /// The new master's pid (the old master's child).
    pub(super) pid: i32,
    /// When it was started; the graceful timeout bounds the wait.
    pub(super) started: Instant,
    /// The pipe's read end: a byte when it serves, end-of-file if it died.
    ready: std::fs::File,
}

/// What the new master said on the pipe so far.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Progress {
    /// Nothing yet.
    Waiting,
    /// Its workers serve.
    Ready,
    /// It closed the pipe without saying so (exited, or exec failed).
    Gone,
}

impl Upgrade {
    /// Forks and execs `how` with `listener` as fd 3. Call from the master
    /// (single-threaded, as the proof says).
    pub(super) fn start(
        proof: &sys::SingleThreaded,
        how: &Invocation,
        listener: &Listener,
    ) -> Result<Upgrade> {
        let (rx, tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::os("pipe", e))?;
        let (sock, pipe) = (listener.as_raw_fd(), tx.as_raw_fd());
        let pid = sys::fork(proof, |_| exec_new_master(how, sock, pipe))
            .map_err(|e| Error::os("fork", e))?;
        drop(tx);
        let ready = std::fs::File::from(rx);
        set_nonblocking(ready.as_fd())?;
        Ok(Upgrade {
            pid,
            started: Instant::now(),
            ready,
        })
    }

    /// The descriptor the master polls.
    pub(super) fn wake_source(&self) -> BorrowedFd<'_> {
        self.ready.as_fd()
    }

    /// Reads what the new master sent, without blocking.
    pub(super) fn progress(&mut self) -> Progress {
        let mut buf = [0u8; 16];
        match self.ready.read(&mut buf) {
            Ok(0) => Progress::Gone,
            Ok(n) if buf[..n].contains(&READY) => Progress::Ready,
            Ok(_) => Progress::Waiting,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Progress::Waiting,
            Err(_) => Progress::Gone,
        }
    }
}

/// In the forked child: the socket to fd 3, the pipe to fd 4 (neither
/// close-on-exec), an empty signal mask, then exec. Returns only if exec
/// failed: the child's exit status.
fn exec_new_master(how: &Invocation, sock: RawFd, pipe: RawFd) -> i32 {
    let moved = (|| -> nix::Result<()> {
        // Above both targets first, so neither dup2 overwrites the other.
        let high_sock = fcntl(sock, FcntlArg::F_DUPFD_CLOEXEC(10))?;
        let high_pipe = fcntl(pipe, FcntlArg::F_DUPFD_CLOEXEC(10))?;
        nix::unistd::dup2(high_sock, SOCKET_FD)?;
        nix::unistd::dup2(high_pipe, PIPE_FD)?;
        Ok(())
    })();
    if let Err(e) = moved {
        eprintln!("sockserv upgrade: cannot pass the socket: {e}");
        return 126;
    }
    let _ = sys::restore_signals(&SigSet::empty());
    let err = std::process::Command::new(&how.exe)
        .args(&how.args)
        .env("LISTEN_FDS", "1")
        .env("LISTEN_PID", std::process::id().to_string())
        .env_remove("LISTEN_FDNAMES")
        .env(UPGRADE_FD_ENV, PIPE_FD.to_string())
        .exec();
    eprintln!("sockserv upgrade: exec {}: {err}", how.exe.display());
    127
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> Result<()> {
    let raw = fd.as_raw_fd();
    let flags = fcntl(raw, FcntlArg::F_GETFL).map_err(|e| Error::os("fcntl F_GETFL", e))?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(raw, FcntlArg::F_SETFL(flags)).map_err(|e| Error::os("fcntl F_SETFL", e))?;
    Ok(())
}

/// The new master's side: the pipe it reports readiness on, when this
/// process was started by an upgrade.
#[derive(Debug)]
pub(super) struct Notice {
    pipe: std::fs::File,
}

impl Notice {
    /// Takes the pipe named by `SOCKSERV_UPGRADE_FD` (and clears the
    /// variable, so workers and later upgrades do not see it).
    pub(super) fn from_env() -> Result<Option<Notice>> {
        let Some(v) = std::env::var_os(UPGRADE_FD_ENV) else {
            return Ok(None);
        };
        std::env::remove_var(UPGRADE_FD_ENV);
        let fd: RawFd = v
            .to_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::Config(format!("{UPGRADE_FD_ENV}={v:?} is not a descriptor")))?;
        let owned: OwnedFd = sys::take_upgrade_fd(fd)?;
        // Close-on-exec from now: a later upgrade must not pass it on.
        let _ = fcntl(
            owned.as_raw_fd(),
            FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        Ok(Some(Notice {
            pipe: std::fs::File::from(owned),
        }))
    }

    /// The descriptor, for a forked worker to close.
    pub(super) fn raw_fd(&self) -> RawFd {
        self.pipe.as_raw_fd()
    }

    /// Tells the old master this one serves; closes the pipe.
    pub(super) fn serving(mut self) {
        let _ = self.pipe.write_all(&[READY]);
    }
}
