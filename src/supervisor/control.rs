//! The status socket (`--control PATH`) and the metrics endpoint
//! (`--metrics ADDR`), served by the master's loop without ever blocking
//! on a client.
//!
//! The control socket is a Unix stream socket, mode 0600: a client sends
//! one line, `status`, and gets one line of JSON back (see
//! [`super::status`]); anything else gets `{"error":"..."}`. The metrics
//! endpoint is a TCP socket answering HTTP `GET /metrics` (see
//! [`super::metrics`]). Both share one [`Responder`]: nonblocking
//! sockets, a client that sends nothing, or reads nothing, is dropped
//! after [`CLIENT_DEADLINE`], at most [`MAX_CLIENTS`] are held at once,
//! and a request longer than its protocol allows is answered with an
//! error. The control socket's file is removed when the master stops,
//! unless another master's socket has replaced it.
//!
//! A master started by a USR2 upgrade cannot bind the path the old master
//! still serves: it binds `PATH.new` and renames it over `PATH` once its
//! workers serve ([`Responder::take_over`]), so `sockserv status` reaches
//! whichever master is the service, and a new master that fails leaves the
//! old one's socket in place.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::status::Status;
use crate::error::{Error, Result};

/// How long a client may take to send its request and read the reply.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(2);
/// Clients held at once, per socket; more wait in the listen backlog.
pub const MAX_CLIENTS: usize = 32;
/// The longest control request line read.
const MAX_LINE: usize = 256;

/// What a responder speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// One line in (`status`), one line of JSON out.
    Control,
    /// HTTP/1.x, `GET /metrics`, one response, then close.
    #[cfg(feature = "metrics")]
    Metrics,
}

impl Protocol {
    /// The longest request read before answering with an error.
    fn max_request(self) -> usize {
        match self {
            Protocol::Control => MAX_LINE,
            #[cfg(feature = "metrics")]
            Protocol::Metrics => super::metrics::MAX_REQUEST,
        }
    }

    /// Whether `input` holds a whole request.
    fn complete(self, input: &[u8]) -> bool {
        match self {
            Protocol::Control => input.contains(&b'\n'),
            #[cfg(feature = "metrics")]
            Protocol::Metrics => super::metrics::head_complete(input),
        }
    }

    /// Whether to stop reading and answer: a whole request, or more than
    /// the protocol allows.
    fn enough(self, input: &[u8]) -> bool {
        self.complete(input) || input.len() > self.max_request()
    }

    /// The reply to `input` (whole, cut at the size limit, or cut by the
    /// client's end of stream).
    fn answer(self, input: &[u8], status: &dyn Fn() -> Status) -> Vec<u8> {
        match self {
            Protocol::Control => control_answer(input, status),
            #[cfg(feature = "metrics")]
            Protocol::Metrics => super::metrics::answer(input, status),
        }
    }
}

fn control_answer(input: &[u8], status: &dyn Fn() -> Status) -> Vec<u8> {
    let line = input.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let request = String::from_utf8_lossy(line);
    let mut reply = match request.trim() {
        "status" => status().to_json(),
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
    reply.into_bytes()
}

// Only the metrics endpoint listens on TCP.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
#[derive(Debug)]
enum Listening {
    Unix(UnixListener, SocketFile),
    Tcp(TcpListener),
}

/// Where a control socket's file is, and which file it is.
#[derive(Debug)]
struct SocketFile {
    /// Where the file is now: the configured path, or `PATH.new` until
    /// [`Responder::take_over`].
    path: PathBuf,
    /// The configured path, which `take_over` renames the file to.
    target: PathBuf,
    /// The file's (device, inode): what Drop removes only if the path
    /// still names it.
    identity: (u64, u64),
}

#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
#[derive(Debug)]
enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Conn::Unix(s) => s.as_fd(),
            Conn::Tcp(s) => s.as_fd(),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }
}

/// A listening socket the master serves from its loop, and the clients
/// being served.
#[derive(Debug)]
pub(crate) struct Responder {
    listener: Listening,
    protocol: Protocol,
    clients: Vec<Client>,
}

#[derive(Debug)]
struct Client {
    conn: Conn,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    since: Instant,
}

impl Responder {
    /// The control socket: binds `path` (replacing a dead server's socket
    /// file, never anything else), mode 0600.
    pub(crate) fn bind(path: &Path) -> Result<Responder> {
        Responder::bind_at(path, path)
    }

    /// For a master started by an upgrade: binds `PATH.new` beside the
    /// socket the old master serves; [`Responder::take_over`] moves it to
    /// `path`.
    pub(crate) fn bind_beside(path: &Path) -> Result<Responder> {
        let mut beside = path.as_os_str().to_owned();
        beside.push(".new");
        Responder::bind_at(Path::new(&beside), path)
    }

    fn bind_at(at: &Path, target: &Path) -> Result<Responder> {
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
        let file = SocketFile {
            path: at.to_path_buf(),
            target: target.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
        };
        Ok(Responder {
            listener: Listening::Unix(listener, file),
            protocol: Protocol::Control,
            clients: Vec::new(),
        })
    }

    /// Renames a control socket's file to the configured path (atomically
    /// replacing the old master's), if it is not there already.
    pub(crate) fn take_over(&mut self) -> Result<()> {
        let Listening::Unix(_, file) = &mut self.listener else {
            return Ok(());
        };
        if file.path != file.target {
            std::fs::rename(&file.path, &file.target).map_err(|e| {
                Error::socket(
                    "rename",
                    format!("{} to {}", file.path.display(), file.target.display()),
                    e,
                )
            })?;
            file.path = file.target.clone();
        }
        Ok(())
    }

    /// The metrics endpoint: a TCP listener on `addr` (SO_REUSEADDR, as
    /// std binds), speaking HTTP.
    #[cfg(feature = "metrics")]
    pub(crate) fn bind_metrics(addr: SocketAddr) -> Result<Responder> {
        let listener = TcpListener::bind(addr).map_err(|e| Error::socket("bind", addr, e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::socket("set O_NONBLOCK", addr, e))?;
        Ok(Responder {
            listener: Listening::Tcp(listener),
            protocol: Protocol::Metrics,
            clients: Vec::new(),
        })
    }

    /// The address a TCP responder listens on (port 0 resolved).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        match &self.listener {
            Listening::Tcp(l) => l.local_addr().ok(),
            Listening::Unix(..) => None,
        }
    }

    /// Descriptors to poll and whether each wants to write: the listener
    /// (while there is room for a client) and every client.
    pub(crate) fn poll_fds(&self) -> Vec<(BorrowedFd<'_>, bool)> {
        let mut v = Vec::with_capacity(self.clients.len() + 1);
        if self.clients.len() < MAX_CLIENTS {
            v.push((self.listener_fd(), false));
        }
        for c in &self.clients {
            v.push((c.conn.as_fd(), !c.output.is_empty()));
        }
        v
    }

    /// Every descriptor this responder holds (a forked worker closes them).
    pub(crate) fn fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        std::iter::once(self.listener_fd()).chain(self.clients.iter().map(|c| c.conn.as_fd()))
    }

    fn listener_fd(&self) -> BorrowedFd<'_> {
        match &self.listener {
            Listening::Unix(l, _) => l.as_fd(),
            Listening::Tcp(l) => l.as_fd(),
        }
    }

    /// The soonest client deadline, to bound the master's sleep.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.clients.iter().map(|c| c.since + CLIENT_DEADLINE).min()
    }

    /// Accepts, reads, answers and writes what can be done now without
    /// blocking; `status` is taken only when a client asks.
    pub(crate) fn serve(&mut self, status: impl Fn() -> Status) {
        while self.clients.len() < MAX_CLIENTS {
            let conn = match &self.listener {
                Listening::Unix(l, _) => l.accept().map(|(c, _)| Conn::Unix(c)),
                Listening::Tcp(l) => l.accept().map(|(c, _)| Conn::Tcp(c)),
            };
            let Ok(conn) = conn else {
                break; // WouldBlock, or a client that left
            };
            let nonblocking = match &conn {
                Conn::Unix(c) => c.set_nonblocking(true),
                Conn::Tcp(c) => c.set_nonblocking(true),
            };
            if nonblocking.is_ok() {
                self.clients.push(Client {
                    conn,
                    input: Vec::new(),
                    output: Vec::new(),
                    written: 0,
                    since: Instant::now(),
                });
            }
        }
        let now = Instant::now();
        let protocol = self.protocol;
        self.clients.retain_mut(|c| {
            if now.duration_since(c.since) > CLIENT_DEADLINE {
                return false;
            }
            if c.output.is_empty() && !c.read_request(protocol, &status) {
                return false;
            }
            c.write_reply()
        });
    }
}

impl Client {
    /// Reads what arrived; on a whole request, prepares the reply. False
    /// when the client is done for (it left before sending anything).
    fn read_request(&mut self, protocol: Protocol, status: &dyn Fn() -> Status) -> bool {
        let mut buf = [0u8; 1024];
        loop {
            match self.conn.read(&mut buf) {
                Ok(0) => {
                    if self.input.is_empty() {
                        return false;
                    }
                    break; // a request cut short: answer what came
                }
                Ok(n) => {
                    self.input.extend_from_slice(&buf[..n]);
                    if protocol.enough(&self.input) {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        self.output = protocol.answer(&self.input, status);
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

impl Drop for Responder {
    fn drop(&mut self) {
        // After an upgrade the path names the new master's socket: keep it.
        if let Listening::Unix(_, file) = &self.listener {
            let ours = std::fs::symlink_metadata(&file.path)
                .is_ok_and(|m| (m.dev(), m.ino()) == file.identity);
            if ours {
                let _ = std::fs::remove_file(&file.path);
            }
        }
    }
}

/// The status socket of a server running without a master (`sockserv
/// --no-supervisor --control PATH`): its hooks serve the socket from the
/// serving loop (`service_actions`), and the one "worker" is the process
/// itself.
pub(crate) struct Standalone {
    inner: std::sync::Arc<dyn crate::Hooks>,
    responders: std::sync::Mutex<Vec<Responder>>,
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
        responders: Vec<Responder>,
        slot: &'static crate::stats::Slot,
        info: StandaloneInfo,
    ) -> Standalone {
        Standalone {
            inner,
            responders: std::sync::Mutex::new(responders),
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
            master: None,
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
        if let Ok(mut responders) = self.responders.try_lock() {
            for r in responders.iter_mut() {
                r.serve(|| self.status());
            }
        }
        self.inner.service_actions();
    }

    fn handle_error(&self, peer: &crate::Address, err: &crate::RequestError, log: &slog::Logger) {
        self.inner.handle_error(peer, err, log);
    }
}

/// A status with a little of everything, for the checks.
pub(crate) fn sample_status() -> Status {
    use super::status::WorkerStatus;
    let counters = crate::stats::Counters {
        connections: 3,
        requests: 5,
        in_flight: 1,
        ..Default::default()
    };
    Status {
        pid: 7,
        uptime: Duration::from_millis(1500),
        transport: "tcp".into(),
        addr: "127.0.0.1:9000".into(),
        policy: "fork".into(),
        service: "echo \"x\"".into(),
        workers: vec![WorkerStatus {
            pid: 8,
            generation: 1,
            state: "serving",
            uptime: Duration::from_secs(1),
            counters,
            threads: 1,
            rss_kib: 100,
            pss_kib: 50,
        }],
        totals: counters,
        worker_restarts: 2,
        listen_queue: Some((0, 128)),
        master: None,
    }
}

/// What the responder reads of `data` arriving in pieces of 1 to 1021
/// bytes (sizes taken from the input itself), stopping where `protocol`
/// has enough: what it would answer.
pub(crate) fn read_as_responder(protocol: Protocol, data: &[u8]) -> &[u8] {
    let mut sizes = data.iter().map(|&b| usize::from(b) * 4 + 1).cycle();
    let mut at = 0;
    while at < data.len() && !protocol.enough(&data[..at]) {
        at = (at + sizes.next().unwrap_or(1)).min(data.len());
    }
    &data[..at]
}

/// The control socket's contract, checked on arbitrary bytes a client
/// may send (the fuzz target `control` and the unit tests call it): the
/// reply is one line of at most 1 KiB; `status` (however padded) gets the
/// status JSON, anything else a `{"error":"..."}` whose string is valid
/// JSON and quotes the request; the responder reads no more than a line
/// or the limit, and the pieces the bytes arrive in change nothing.
///
/// # Panics
///
/// When the contract is broken.
pub(crate) fn check_request(data: &[u8]) {
    let st = sample_status();
    let read = read_as_responder(Protocol::Control, data);
    assert!(read.len() <= MAX_LINE + 1024, "read {} bytes", read.len());
    let reply = Protocol::Control.answer(read, &|| st.clone());
    let first = data.split(|&b| b == b'\n').next().unwrap_or(&[]);
    if first.len() < MAX_LINE {
        assert_eq!(
            reply,
            control_answer(data, &|| st.clone()),
            "pieces changed the reply"
        );
    }
    let reply = String::from_utf8(reply).expect("the reply is UTF-8");
    let body = reply.strip_suffix('\n').expect("the reply ends its line");
    assert!(!body.contains('\n'), "reply {reply:?} is more than a line");
    let line = String::from_utf8_lossy(read.split(|&b| b == b'\n').next().unwrap_or(&[]));
    if line.trim() == "status" {
        assert_eq!(body, st.to_json());
        return;
    }
    assert!(reply.len() <= 1024, "{} byte error reply", reply.len());
    let text = body
        .strip_prefix("{\"error\":\"")
        .and_then(|b| b.strip_suffix("\"}"))
        .unwrap_or_else(|| panic!("not an error object: {body:?}"));
    assert!(json_string_body_ok(text), "bad JSON string {text:?}");
    assert!(text.starts_with("unknown request \\\""), "{text:?}");
}

/// Whether `s` is a valid JSON string's contents (between the quotes).
pub(crate) fn json_string_body_ok(s: &str) -> bool {
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return false,
            c if (c as u32) < 0x20 => return false,
            '\\' => match chars.next() {
                Some('"' | '\\' | '/' | 'b' | 'f' | 'n' | 'r' | 't') => {}
                Some('u') => {
                    if !(0..4).all(|_| chars.next().is_some_and(|h| h.is_ascii_hexdigit())) {
                        return false;
                    }
                }
                _ => return false,
            },
            _ => {}
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_unknown_requests_are_answered_in_one_line() {
        let st = sample_status();
        let ok = control_answer(b"  status \r\nmore", &|| st.clone());
        assert_eq!(ok, format!("{}\n", st.to_json()).into_bytes());
        let bad = String::from_utf8(control_answer(b"\x1b[2J\"\\x", &|| st.clone())).unwrap();
        assert_eq!(
            bad,
            r#"{"error":"unknown request \"\\u{1b}[2J\\\"\\\\x\": send \"status\" and a newline"}"#
                .to_string()
                + "\n"
        );
    }

    #[test]
    fn the_fuzz_contract_holds_on_sample_requests() {
        let long = [&[b'a'; 300][..], b"\nstatus\n"].concat();
        let samples: [&[u8]; 10] = [
            b"",
            b"\n",
            b"status",
            b"status\n",
            b"\tstatus\r\n",
            b"STATUS\n",
            b"\xff\xfe\n",
            b"\"\\\x00\x7f\n",
            "\u{202e}status\n".as_bytes(),
            &long,
        ];
        for s in samples {
            check_request(s);
        }
        for b in 0..=255u8 {
            check_request(&[b, b'\n']);
        }
    }

    #[test]
    fn json_string_bodies_are_checked() {
        assert!(json_string_body_ok(r#"a\"b\\c\u001b"#));
        assert!(!json_string_body_ok("a\"b"));
        assert!(!json_string_body_ok("a\\"));
        assert!(!json_string_body_ok("\\u12"));
        assert!(!json_string_body_ok("a\u{1}b"));
    }
}
