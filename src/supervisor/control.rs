//! The status socket (`--control PATH`): a Unix stream socket, mode 0600,
//! that the master's loop serves without ever blocking on a client. A
//! client sends one line, `status`, and gets one line of JSON back (see
//! [`super::status`]); anything else gets `{"error":"..."}`. A client that
//! sends nothing, or reads nothing, is dropped after [`CLIENT_DEADLINE`];
//! at most [`MAX_CLIENTS`] are held at once. The socket file is removed
//! when the master stops, unless another master's socket has replaced it.
//!
//! A master started by a USR2 upgrade cannot bind the path the old master
//! still serves: it binds `PATH.new` and renames it over `PATH` once its
//! workers serve ([`ControlSocket::take_over`]), so `sockserv status`
//! reaches whichever master is the service, and a new master that fails
//! leaves the old one's socket in place.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long a client may take to send its line and read the reply.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(2);
/// Clients held at once; more wait in the listen backlog.
pub const MAX_CLIENTS: usize = 32;
/// The longest request line read.
const MAX_LINE: usize = 256;

/// The listening control socket and the clients being served.
#[derive(Debug)]
pub(crate) struct ControlSocket {
    listener: UnixListener,
    /// Where the socket file is now: the configured path, or `PATH.new`
    /// until [`ControlSocket::take_over`].
    path: PathBuf,
    /// The configured path, which `take_over` renames the file to.
    target: PathBuf,
    /// The socket file's (device, inode): what Drop removes only if the
    /// path still names it.
    identity: (u64, u64),
    clients: Vec<Client>,
}

#[derive(Debug)]
struct Client {
    conn: UnixStream,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    since: Instant,
}

impl ControlSocket {
    /// Binds `path` (replacing a dead server's socket file, never anything
    /// else), mode 0600.
    pub(crate) fn bind(path: &Path) -> Result<ControlSocket> {
        ControlSocket::bind_at(path, path)
    }

    /// For a master started by an upgrade: binds `PATH.new` beside the
    /// socket the old master serves; [`ControlSocket::take_over`] moves it
    /// to `path`.
    pub(crate) fn bind_beside(path: &Path) -> Result<ControlSocket> {
        let mut beside = path.as_os_str().to_owned();
        beside.push(".new");
        ControlSocket::bind_at(Path::new(&beside), path)
    }

    fn bind_at(at: &Path, target: &Path) -> Result<ControlSocket> {
        let addr = crate::addr::Address::Unix(at.to_path_buf());
        // The same stale-socket rules as a server's Unix socket.
        crate::socket::check_bindable(crate::Transport::UnixStream, &addr, &Default::default())?;
        if at.exists() {
            std::fs::remove_file(at)
                .map_err(|e| Error::socket("remove stale socket", at.display(), e))?;
        }
        let listener =
            UnixListener::bind(at).map_err(|e| Error::socket("bind", at.display(), e))?;
        std::fs::set_permissions(at, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::socket("chmod", at.display(), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::socket("set O_NONBLOCK", at.display(), e))?;
        let meta =
            std::fs::symlink_metadata(at).map_err(|e| Error::socket("stat", at.display(), e))?;
        Ok(ControlSocket {
            listener,
            path: at.to_path_buf(),
            target: target.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
            clients: Vec::new(),
        })
    }

    /// Renames the socket file to the configured path (atomically
    /// replacing the old master's), if it is not there already.
    pub(crate) fn take_over(&mut self) -> Result<()> {
        if self.path != self.target {
            std::fs::rename(&self.path, &self.target).map_err(|e| {
                Error::socket(
                    "rename",
                    format!("{} to {}", self.path.display(), self.target.display()),
                    e,
                )
            })?;
            self.path = self.target.clone();
        }
        Ok(())
    }

    /// Descriptors to poll and whether each wants to write: the listener
    /// (while there is room for a client) and every client.
    pub(crate) fn poll_fds(&self) -> Vec<(BorrowedFd<'_>, bool)> {
        let mut v = Vec::with_capacity(self.clients.len() + 1);
        if self.clients.len() < MAX_CLIENTS {
            v.push((self.listener.as_fd(), false));
        }
        for c in &self.clients {
            v.push((c.conn.as_fd(), !c.output.is_empty()));
        }
        v
    }

    /// The soonest client deadline, to bound the master's sleep.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.clients.iter().map(|c| c.since + CLIENT_DEADLINE).min()
    }

    /// Accepts, reads, answers and writes what can be done now without
    /// blocking; `status` renders the reply when a client asks.
    pub(crate) fn serve(&mut self, status: impl Fn() -> String) {
        while self.clients.len() < MAX_CLIENTS {
            match self.listener.accept() {
                Ok((conn, _)) => {
                    if conn.set_nonblocking(true).is_ok() {
                        self.clients.push(Client {
                            conn,
                            input: Vec::new(),
                            output: Vec::new(),
                            written: 0,
                            since: Instant::now(),
                        });
                    }
                }
                Err(_) => break, // WouldBlock, or a client that left
            }
        }
        let now = Instant::now();
        self.clients.retain_mut(|c| {
            if now.duration_since(c.since) > CLIENT_DEADLINE {
                return false;
            }
            if c.output.is_empty() && !c.read_request(&status) {
                return false;
            }
            c.write_reply()
        });
    }
}

impl Client {
    /// Reads what arrived; on a full line, prepares the reply. False when
    /// the client is done for (it left, or sent too much).
    fn read_request(&mut self, status: &impl Fn() -> String) -> bool {
        let mut buf = [0u8; MAX_LINE];
        loop {
            match self.conn.read(&mut buf) {
                Ok(0) => {
                    if self.input.is_empty() {
                        return false;
                    }
                    break; // a request without its newline: answer it anyway
                }
                Ok(n) => {
                    self.input.extend_from_slice(&buf[..n]);
                    if self.input.contains(&b'\n') || self.input.len() > MAX_LINE {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !self.input.contains(&b'\n') {
                        return true; // wait for the rest
                    }
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        let line = self.input.split(|&b| b == b'\n').next().unwrap_or(&[]);
        let request = String::from_utf8_lossy(line);
        let mut reply = match request.trim() {
            "status" => status(),
            other => {
                let mut e = String::from("{\"error\":");
                let shown: String = other.chars().take(64).collect();
                super::status::json_string(
                    &mut e,
                    &format!("unknown request {shown:?}: send \"status\" and a newline"),
                );
                e.push('}');
                e
            }
        };
        reply.push('\n');
        self.output = reply.into_bytes();
        true
    }

    /// Writes what fits; false once everything is written (or it failed).
    fn write_reply(&mut self) -> bool {
        if self.output.is_empty() {
            return true;
        }
        while self.written < self.output.len() {
            match self.conn.write(&self.output[self.written..]) {
                Ok(0) => return false,
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        false // all written: close
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        // After an upgrade the path names the new master's socket: keep it.
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| (m.dev(), m.ino()) == self.identity);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The status socket of a server running without a master (`sockserv
/// --no-supervisor --control PATH`): its hooks serve the socket from the
/// serving loop (`service_actions`), and the one "worker" is the process
/// itself.
pub(crate) struct Standalone {
    inner: std::sync::Arc<dyn crate::Hooks>,
    control: std::sync::Mutex<ControlSocket>,
    slot: &'static crate::stats::Slot,
    info: StandaloneInfo,
    started: Instant,
}

/// What a standalone server's status names.
#[derive(Debug, Clone)]
pub(crate) struct StandaloneInfo {
    pub(crate) transport: crate::Transport,
    pub(crate) addr: String,
    pub(crate) policy: String,
    pub(crate) service: String,
    /// The TCP listener, for its accept queue.
    pub(crate) tcp_listener: Option<std::os::fd::RawFd>,
}

impl Standalone {
    pub(crate) fn new(
        inner: std::sync::Arc<dyn crate::Hooks>,
        control: ControlSocket,
        slot: &'static crate::stats::Slot,
        info: StandaloneInfo,
    ) -> Standalone {
        Standalone {
            inner,
            control: std::sync::Mutex::new(control),
            slot,
            info,
            started: Instant::now(),
        }
    }

    fn status(&self) -> super::status::Status {
        use super::status::{memory_of_tree, threads_of, Status, WorkerStatus};
        let pid = std::process::id();
        let counters = self.slot.read();
        let info = &self.info;
        let (rss_kib, pss_kib) = memory_of_tree(pid as i32);
        let me = WorkerStatus {
            pid: pid as i32,
            generation: 0,
            state: "serving",
            uptime: self.started.elapsed(),
            counters,
            threads: threads_of(pid as i32),
            rss_kib,
            pss_kib,
        };
        Status {
            pid,
            uptime: self.started.elapsed(),
            transport: info.transport.to_string(),
            addr: info.addr.clone(),
            policy: info.policy.clone(),
            service: info.service.clone(),
            workers: vec![me],
            totals: counters,
            worker_restarts: 0,
            listen_queue: info
                .tcp_listener
                .and_then(|fd| crate::sys::tcp_listen_queue(fd).ok()),
        }
    }
}

impl crate::Hooks for Standalone {
    fn verify_request(&self, peer: &crate::Address) -> bool {
        self.inner.verify_request(peer)
    }

    fn handle_timeout(&self) {
        self.inner.handle_timeout();
    }

    fn service_actions(&self) {
        if let Ok(mut control) = self.control.try_lock() {
            control.serve(|| self.status().to_json());
        }
        self.inner.service_actions();
    }

    fn handle_error(&self, peer: &crate::Address, err: &crate::RequestError, log: &slog::Logger) {
        self.inner.handle_error(peer, err, log);
    }
}
