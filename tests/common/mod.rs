//! Shared test helpers: start `sockserv` as a real subprocess, talk to it
//! over real sockets, and inspect its process tree through /proc.
#![allow(dead_code)]

pub mod files;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Waits for every thread of a table-driven test; a case's panic fails
/// the test with that case's message.
pub fn join_all<T>(cases: impl IntoIterator<Item = std::thread::JoinHandle<T>>) {
    for c in cases {
        if let Err(panic) = c.join() {
            std::panic::resume_unwind(panic);
        }
    }
}

/// Polls `cond` every few milliseconds until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Lines a child wrote to stderr, collected by a reader thread.
#[derive(Default)]
struct Lines {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
}

/// A running `sockserv`; killed by pid and reaped on drop.
pub struct Sockserv {
    child: Option<Child>,
    pid: i32,
    /// The address it reported in its "listening" line.
    pub addr: String,
    log: Arc<Lines>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// The path of the `sockserv` binary cargo built for the tests.
pub fn sockserv_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sockserv")
}

impl Sockserv {
    /// Starts `sockserv ARGS --log-format json` and waits for its
    /// "listening" line. Panics, with everything it logged, if it exits or
    /// stays silent for 10 s.
    pub fn start(args: &[&str]) -> Sockserv {
        Sockserv::start_wrapped(&[], args)
    }

    /// Starts `WRAPPER... sockserv ARGS` (a wrapper that execs, such as
    /// `prlimit --nofile=32`) and waits for its "listening" line.
    pub fn start_wrapped(wrapper: &[&str], args: &[&str]) -> Sockserv {
        let mut s = Sockserv::spawn_wrapped(wrapper, args);
        let found = s.wait_log(Duration::from_secs(10), |l| {
            l.contains("\"msg\":\"listening\"")
        });
        let Some(line) = found else {
            let status = s.stop();
            panic!(
                "sockserv {args:?} did not start ({status:?}); log:\n{}",
                s.log_text()
            );
        };
        s.addr = json_field(&line, "addr").expect("listening line has addr");
        s
    }

    /// Starts `sockserv ARGS --log-format json` without waiting.
    pub fn spawn(args: &[&str]) -> Sockserv {
        Sockserv::spawn_wrapped(&[], args)
    }

    /// Starts the binary at `bin` (a copy of sockserv, say) with `ARGS
    /// --log-format json` and waits for its "listening" line.
    pub fn start_bin(bin: &Path, args: &[&str]) -> Sockserv {
        let mut s = Sockserv::spawn_cmd(Command::new(bin), args);
        let Some(line) = s.wait_log(Duration::from_secs(10), |l| {
            l.contains("\"msg\":\"listening\"")
        }) else {
            let status = s.stop();
            panic!(
                "{bin:?} {args:?} did not start ({status:?}); log:\n{}",
                s.log_text()
            );
        };
        s.addr = json_field(&line, "addr").expect("listening line has addr");
        s
    }

    fn spawn_wrapped(wrapper: &[&str], args: &[&str]) -> Sockserv {
        let cmd = match wrapper.split_first() {
            Some((prog, rest)) => {
                let mut c = Command::new(prog);
                c.args(rest).arg(sockserv_bin());
                c
            }
            None => Command::new(sockserv_bin()),
        };
        Sockserv::spawn_cmd(cmd, args)
    }

    fn spawn_cmd(mut cmd: Command, args: &[&str]) -> Sockserv {
        let mut child = cmd
            .args(args)
            .args(["--log-format", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sockserv");
        let log = Arc::new(Lines::default());
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lines.lock().unwrap().push(line);
                sink.grew.notify_all();
            }
        });
        Sockserv {
            pid: child.id() as i32,
            child: Some(child),
            addr: String::new(),
            log,
            reader: Some(reader),
        }
    }

    /// Whether the server process is alive (not gone, not a zombie).
    pub fn is_running(&self) -> bool {
        proc_state(self.pid).is_some_and(|s| s != 'Z')
    }

    /// The server's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits up to `limit` for a logged line matching `pred`.
    pub fn wait_log(&self, limit: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + limit;
        let mut lines = self.log.lines.lock().unwrap();
        loop {
            if let Some(l) = lines.iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            lines = self.log.grew.wait_timeout(lines, left).unwrap().0;
        }
    }

    /// Everything logged so far.
    pub fn log_text(&self) -> String {
        self.log.lines.lock().unwrap().join("\n")
    }

    /// Sends `sig` to the server.
    pub fn signal(&self, sig: i32) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::try_from(sig).unwrap(),
        )
        .expect("kill");
    }

    /// Waits up to `limit` for the server to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                self.child = None;
                // The reader ends when every holder of the pipe has closed
                // it; children a test is still checking on may hold it, so
                // wait for the rest of the log only a bounded time.
                if let Some(r) = self.reader.take() {
                    wait_until(Duration::from_secs(2), || r.is_finished());
                }
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM, then waits up to 10 s (SIGKILL after that).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.child.as_ref()?;
        self.signal(libc::SIGTERM);
        match self.wait_exit(Duration::from_secs(10)) {
            Some(st) => Some(st),
            None => {
                self.kill();
                None
            }
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.reader.take();
    }

    /// The port of an IP address.
    pub fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }
}

impl Drop for Sockserv {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // Stop the whole tree: children of a fork server first.
            for pid in descendants(c.id() as i32) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        self.kill();
    }
}

/// Extracts a string or number field from a flat JSON log line.
pub fn json_field(line: &str, key: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    match v.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Direct children of `pid` (from /proc/PID/task/*/children).
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
    }
    out
}

/// All descendants of `pid`, depth first.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for c in children(pid) {
        out.push(c);
        out.extend(descendants(c));
    }
    out
}

/// The state letter of a process (R, S, Z, ...), if it exists.
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.chars().next()
}

/// Zombie children of `pid`.
pub fn zombies(pid: i32) -> Vec<i32> {
    children(pid)
        .into_iter()
        .filter(|&c| proc_state(c) == Some('Z'))
        .collect()
}

/// Open descriptors of `pid`.
pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// CPU time (user + system) `pid` has used, in clock ticks.
pub fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(end) = stat.rfind(')') else { return 0 };
    let fields: Vec<&str> = stat[end + 2..].split_whitespace().collect();
    // After the state letter: utime is field 14, stime 15 of /proc/PID/stat.
    fields
        .get(11)
        .and_then(|u| u.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
}

/// Threads of `pid`.
pub fn thread_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A connected stream client (TCP or Unix).
pub enum Conn {
    /// TCP.
    Tcp(TcpStream),
    /// Unix stream.
    Unix(UnixStream),
}

impl Conn {
    /// Connects to `addr` over `transport` ("tcp" or "unix").
    pub fn connect(transport: &str, addr: &str) -> std::io::Result<Conn> {
        let c = match transport {
            "tcp" => Conn::Tcp(TcpStream::connect(addr)?),
            "unix" => Conn::Unix(connect_unix(addr)?),
            t => panic!("not a stream transport: {t}"),
        };
        c.set_timeout(Some(Duration::from_secs(10)));
        Ok(c)
    }

    /// Sets the read timeout.
    pub fn set_timeout(&self, t: Option<Duration>) {
        match self {
            Conn::Tcp(s) => s.set_read_timeout(t).unwrap(),
            Conn::Unix(s) => s.set_read_timeout(t).unwrap(),
        }
    }

    /// A second handle on the same connection (to write from one thread
    /// while reading from another).
    pub fn try_clone(&self) -> std::io::Result<Conn> {
        Ok(match self {
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
        })
    }

    /// Sends `req` and reads exactly `want` bytes back.
    pub fn request(&mut self, req: &[u8], want: usize) -> std::io::Result<Vec<u8>> {
        self.write_all(req)?;
        let mut buf = vec![0u8; want];
        self.read_exact(&mut buf)?;
        Ok(buf)
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn connect_unix(addr: &str) -> std::io::Result<UnixStream> {
    match addr.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let sa = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            UnixStream::connect_addr(&sa)
        }
        None => UnixStream::connect(addr),
    }
}

/// A datagram client (UDP, or Unix datagram bound to a temp path).
pub enum Dgram {
    /// UDP on an ephemeral port.
    Udp(UdpSocket, String),
    /// Unix datagram bound to a path in `_dir` (removed on drop).
    Unix(UnixDatagram, String, tempfile::TempDir),
}

impl Dgram {
    /// A client for the server at `addr` over "udp" or "unix-dgram".
    pub fn new(transport: &str, addr: &str) -> Dgram {
        let d = match transport {
            "udp" => {
                let bind = if addr.starts_with('[') {
                    "[::1]:0"
                } else {
                    "127.0.0.1:0"
                };
                Dgram::Udp(UdpSocket::bind(bind).unwrap(), addr.to_string())
            }
            "unix-dgram" => {
                let dir = tempfile::tempdir().unwrap();
                let sock = UnixDatagram::bind(dir.path().join("client.sock")).unwrap();
                Dgram::Unix(sock, addr.to_string(), dir)
            }
            t => panic!("not a datagram transport: {t}"),
        };
        d.set_timeout(Duration::from_secs(10));
        d
    }

    /// Sets the receive timeout.
    pub fn set_timeout(&self, t: Duration) {
        match self {
            Dgram::Udp(s, _) => s.set_read_timeout(Some(t)).unwrap(),
            Dgram::Unix(s, _, _) => s.set_read_timeout(Some(t)).unwrap(),
        }
    }

    /// Sends one datagram.
    pub fn send(&self, req: &[u8]) -> std::io::Result<()> {
        match self {
            Dgram::Udp(s, a) => s.send_to(req, a.as_str()).map(|_| ()),
            Dgram::Unix(s, a, _) => send_unix(s, a, req),
        }
    }

    /// Receives one datagram.
    pub fn recv(&self) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 65536];
        let n = match self {
            Dgram::Udp(s, _) => s.recv(&mut buf)?,
            Dgram::Unix(s, _, _) => s.recv(&mut buf)?,
        };
        buf.truncate(n);
        Ok(buf)
    }

    /// Sends `req` and returns the reply.
    pub fn request(&self, req: &[u8]) -> std::io::Result<Vec<u8>> {
        self.send(req)?;
        self.recv()
    }
}

fn send_unix(s: &UnixDatagram, addr: &str, req: &[u8]) -> std::io::Result<()> {
    match addr.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let sa = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            s.send_to_addr(req, &sa).map(|_| ())
        }
        None => s.send_to(req, Path::new(addr)).map(|_| ()),
    }
}

/// A fresh temp dir and a socket path inside it.
pub fn temp_socket(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    (dir, path)
}

/// The `--listen` value and a keep-alive temp dir for a transport.
pub fn listen_for(transport: &str) -> (String, Option<tempfile::TempDir>) {
    match transport {
        "tcp" | "udp" => ("127.0.0.1:0".into(), None),
        _ => {
            let (dir, path) = temp_socket("srv.sock");
            (path.to_str().unwrap().to_string(), Some(dir))
        }
    }
}

/// What a [`ClientLoop`] saw.
#[derive(Debug, Default)]
pub struct LoopStats {
    /// Requests answered correctly.
    pub ok: usize,
    /// Every failure, described.
    pub failures: Vec<String>,
}

/// A client connecting every few milliseconds (one request per connection)
/// on a thread, until stopped.
pub struct ClientLoop {
    stop: Arc<std::sync::atomic::AtomicBool>,
    ok: Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl ClientLoop {
    /// Starts the loop against a stream server at `addr`.
    pub fn start(transport: &str, addr: &str, pause: Duration) -> ClientLoop {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let (t, a, s, k) = (
            transport.to_string(),
            addr.to_string(),
            Arc::clone(&stop),
            Arc::clone(&ok),
        );
        let thread = std::thread::spawn(move || {
            let mut failures = Vec::new();
            let mut i = 0usize;
            while !s.load(Ordering::SeqCst) {
                let req = format!("loop request {i}\n");
                let res =
                    Conn::connect(&t, &a).and_then(|mut c| c.request(req.as_bytes(), req.len()));
                match res {
                    Ok(reply) if reply == req.as_bytes() => {
                        k.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(reply) => failures.push(format!("request {i}: wrong reply {reply:?}")),
                    Err(e) => failures.push(format!("request {i}: {e}")),
                }
                i += 1;
                std::thread::sleep(pause);
            }
            failures
        });
        ClientLoop {
            stop,
            ok,
            thread: Some(thread),
        }
    }

    /// Requests answered so far.
    pub fn ok(&self) -> usize {
        self.ok.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until `n` more requests than now have been answered.
    pub fn wait_more(&self, n: usize, limit: Duration) -> bool {
        let target = self.ok() + n;
        wait_until(limit, || self.ok() >= target)
    }

    /// Stops the loop and returns what it saw.
    pub fn stop(mut self) -> LoopStats {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let failures = self.thread.take().unwrap().join().unwrap();
        LoopStats {
            ok: self.ok(),
            failures,
        }
    }
}

impl Drop for ClientLoop {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Worker pids of a supervised server: the master's children.
pub fn workers(master: i32) -> Vec<i32> {
    let mut w = children(master);
    w.sort_unstable();
    w
}

/// True when `pid` no longer exists (or is a zombie awaiting its reaper).
pub fn gone(pid: i32) -> bool {
    matches!(proc_state(pid), None | Some('Z'))
}

/// Receives one datagram within `limit`; None when none came. A read that
/// a signal interrupted is retried (a socket read with a timeout is never
/// restarted by the kernel).
pub fn recv_within(d: &Dgram, limit: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        d.set_timeout(left);
        match d.recv() {
            Ok(reply) => return Some(reply),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            Err(e) => panic!("recv: {e}"),
        }
    }
}

/// Sends one datagram and returns the reply (within 10 s).
pub fn dgram_request(d: &Dgram, req: &[u8], what: &str) -> Vec<u8> {
    d.send(req).unwrap_or_else(|e| panic!("{what}: send: {e}"));
    recv_within(d, Duration::from_secs(10)).unwrap_or_else(|| panic!("{what}: no reply"))
}

/// One read from a stream, retrying a read a signal interrupted.
pub fn read_some(conn: &mut Conn, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match conn.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// The pid of the process that serves requests: the one worker a
/// supervising master started, once it says it serves; or the server itself.
pub fn serving_pid(server: &Sockserv, supervised: bool) -> i32 {
    if !supervised {
        return server.pid();
    }
    // Only the substring: concurrent writers may break up the JSON around it.
    server
        .wait_log(Duration::from_secs(10), |l| l.contains("worker serving"))
        .unwrap_or_else(|| panic!("no worker serving; log:\n{}", server.log_text()));
    match children(server.pid())[..] {
        [worker] => worker,
        ref other => panic!("expected one worker, found {other:?}"),
    }
}

/// Sends SIGTERM to `pid` when dropped (a process a test started by hand
/// and reaps itself).
pub struct StopOnDrop(pub i32);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

/// The address a server's `--metrics 127.0.0.1:0` endpoint bound (from
/// its "metrics" log line).
pub fn metrics_addr(server: &Sockserv) -> String {
    let line = server
        .wait_log(Duration::from_secs(10), |l| {
            l.contains("\"msg\":\"metrics\"")
        })
        .unwrap_or_else(|| panic!("no metrics line; log:\n{}", server.log_text()));
    json_field(&line, "addr").expect("metrics line has addr")
}

/// One HTTP request to `addr` (`request` is sent as is); the whole
/// response as (status code, head, body).
pub fn http(addr: &str, request: &[u8]) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to metrics");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the response");
    let text = String::from_utf8(raw).expect("a UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (code, head.to_string(), body.to_string())
}

/// `GET /metrics`: the value of each series (name with labels) scraped.
pub fn scrape(addr: &str) -> std::collections::HashMap<String, f64> {
    let (code, head, body) = http(addr, b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(code, 200, "{head}\n{body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            Some((series.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The path of the `sockload` binary cargo built for the tests.
pub fn sockload_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sockload")
}

/// A script under `scripts/` in this source tree.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// Starts `bash scripts/NAME ARGS` with stdout and stderr piped.
pub fn spawn_script(name: &str, args: &[&str]) -> Child {
    Command::new("bash")
        .arg(script(name))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn scripts/{name}: {e}"))
}

/// Why a test that needs `tools` on PATH cannot run, if one is missing.
pub fn missing_tool(tools: &[&str]) -> Option<String> {
    tools
        .iter()
        .find(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|t| format!("{t} is not installed"))
}

/// Why this process may not create network namespaces, if it may not:
/// tries `ip netns add` (and deletes what it made).
pub fn netns_refused() -> Option<String> {
    if let Some(why) = missing_tool(&["ip"]) {
        return Some(why);
    }
    let name = format!("probe{}", std::process::id());
    let out = Command::new("ip")
        .args(["netns", "add", &name])
        .output()
        .map_err(|e| format!("ip netns add {name}: {e}"));
    match out {
        Ok(o) if o.status.success() => {
            let _ = Command::new("ip").args(["netns", "delete", &name]).status();
            None
        }
        Ok(o) => Some(format!(
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(e),
    }
}

/// Network namespaces (names in /run/netns) that start with `prefix`.
pub fn netns_with_prefix(prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Live processes (not zombies) whose process group is `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some(end) = stat.rfind(')') else {
                return false;
            };
            // After ")": state, ppid, pgrp.
            let f: Vec<&str> = stat[end + 2..].split_whitespace().collect();
            f.first() != Some(&"Z") && f.get(2).and_then(|g| g.parse().ok()) == Some(pgid)
        })
        .collect()
}

/// The integer at JSON pointer `path` in `v`; panics showing `v`.
pub fn json_u64(v: &serde_json::Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(|x| x.as_u64())
        .unwrap_or_else(|| panic!("no integer at {path} in {v}"))
}

/// Reads a JSON file a script wrote; panics naming the file.
pub fn read_json(path: &Path) -> serde_json::Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}: {text}", path.display()))
}

/// Waits up to `limit` for `child` (a script with a teardown trap) to
/// exit. After that it gets SIGTERM, so its trap tears down, then SIGKILL
/// 10 s later; either way it is reaped and None returned.
pub fn wait_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let exited = |child: &mut Child| {
        wait_until(limit, || child.try_wait().expect("try_wait").is_some());
        child.try_wait().expect("try_wait")
    };
    if let Some(st) = exited(child) {
        return Some(st);
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    if !wait_until(Duration::from_secs(10), || {
        child.try_wait().expect("try_wait").is_some()
    }) {
        let _ = child.kill();
    }
    let _ = child.wait();
    None
}

/// A sockserv under `policy` over `transport` on a fresh address (port 0,
/// or a socket in a temp dir, kept alive by the returned guard), with
/// `extra` flags.
pub fn start_policy(
    policy: &str,
    transport: &str,
    extra: &[&str],
) -> (Sockserv, Option<tempfile::TempDir>) {
    let (listen, dir) = listen_for(transport);
    let mut args = vec![
        "--transport",
        transport,
        "--listen",
        &listen,
        "--policy",
        policy,
    ];
    args.extend_from_slice(extra);
    (Sockserv::start(&args), dir)
}

impl Conn {
    /// Sets the write timeout.
    pub fn set_write_timeout(&self, t: Option<Duration>) {
        match self {
            Conn::Tcp(s) => s.set_write_timeout(t).unwrap(),
            Conn::Unix(s) => s.set_write_timeout(t).unwrap(),
        }
    }

    /// Closes the sending side (the server reads end-of-file).
    pub fn shutdown_write(&self) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Conn::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        }
    }
}

/// Resident memory of `root` and all its descendants, KiB (from
/// /proc/PID/status).
pub fn tree_rss_kib(root: i32) -> u64 {
    std::iter::once(root)
        .chain(descendants(root))
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

/// A deterministic stream of arbitrary bytes (newlines and NULs among
/// them), different for each `seed`.
pub fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The policies sockserv serves stream and datagram transports under.
pub const POLICIES: [&str; 5] = ["sync", "fork", "thread", "pool", "event"];

/// A field of /proc/PID/status or /proc/PID/smaps_rollup, KiB (0 when the
/// process is gone).
pub fn proc_kib(pid: i32, file: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with(field))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .unwrap_or(0)
}

/// Memory `root` and its descendants wrote and own (Private_Dirty, KiB):
/// what a connection's buffers cost, without the pages a fork child still
/// shares with its parent.
pub fn tree_private_dirty_kib(root: i32) -> u64 {
    std::iter::once(root)
        .chain(descendants(root))
        .map(|p| proc_kib(p, "smaps_rollup", "Private_Dirty:"))
        .sum()
}

/// Samples [`tree_private_dirty_kib`] on a thread until stopped, keeping
/// the highest value: the peak a burst of requests cost, fork children
/// that came and went included.
pub struct PeakMemory {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl PeakMemory {
    /// Starts sampling the tree of `root`.
    pub fn start(root: i32) -> PeakMemory {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut peak = tree_private_dirty_kib(root);
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                peak = peak.max(tree_private_dirty_kib(root));
                std::thread::sleep(Duration::from_millis(1));
            }
            peak.max(tree_private_dirty_kib(root))
        });
        PeakMemory {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the peak, KiB.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}
