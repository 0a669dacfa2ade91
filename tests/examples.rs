//! The examples, run as their readers run them: each binary cargo built in
//! `examples/` is started as a subprocess on port 0 or a temp-dir path,
//! read for its ready line, driven over real sockets, and stopped by pid
//! with SIGTERM (or SIGINT); it must exit 0 and leave no socket file or
//! process behind.
//!
//! `cargo test` builds the examples before it runs any test; a run
//! filtered to this file (`cargo test --test examples`) does not, so a
//! missing or out-of-date example binary fails with how to build it.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use common::{
    descendants, dgram_request, gone, json_field, read_some, temp_socket, wait_until, workers,
    ClientLoop, Conn, Dgram,
};

/// How long a process gets to start, answer or exit.
const LIMIT: Duration = Duration::from_secs(10);

/// Where cargo put example `name`: `target/<profile>/examples/NAME`, beside
/// the `deps/` directory this test binary runs from. Panics, saying how to
/// build it, when it is missing or older than a source file cargo's
/// dep-info (`NAME.d` beside it) lists for it.
fn example_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let bin = profile.join("examples").join(name);
    let built = std::fs::metadata(&bin).and_then(|m| m.modified());
    let dep_info = std::fs::read_to_string(bin.with_extension("d"));
    let stale = match (&built, &dep_info) {
        (Ok(built), Ok(info)) => newer_source(info, *built),
        _ => Some("its sources".into()),
    };
    if let Some(source) = stale {
        panic!(
            "example {name} at {} is not built, or older than {source}: `cargo test` \
             builds the examples but `cargo test --test examples` does not; run \
             `cargo build --examples` (with the same --release or not) first",
            bin.display()
        );
    }
    bin
}

/// The first source in a dep-info file (`TARGET: SOURCE...`, spaces in a
/// path escaped as `\ `) modified after `built`.
fn newer_source(dep_info: &str, built: SystemTime) -> Option<String> {
    let line = dep_info.lines().next()?;
    let (_, sources) = line.split_once(": ")?;
    let sources = sources.replace("\\ ", "\0");
    sources
        .split_whitespace()
        .map(|s| s.replace('\0', " "))
        .find(|s| {
            std::fs::metadata(s)
                .and_then(|m| m.modified())
                .map_or(true, |t| t > built)
        })
}

/// Lines a child wrote to one of its pipes, collected by a reader thread.
#[derive(Default)]
struct Lines {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
    closed: Mutex<bool>,
}

impl Lines {
    /// Collects the lines of `pipe` on a thread until it closes.
    fn collect(pipe: impl Read + Send + 'static) -> Arc<Lines> {
        let lines = Arc::new(Lines::default());
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                sink.lines.lock().unwrap().push(line);
                sink.grew.notify_all();
            }
            *sink.closed.lock().unwrap() = true;
            sink.grew.notify_all();
        });
        lines
    }

    /// Waits up to `limit` until `pred` holds of the lines so far.
    fn wait(&self, limit: Duration, mut pred: impl FnMut(&[String]) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let mut lines = self.lines.lock().unwrap();
        loop {
            if pred(&lines) {
                return true;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            lines = self.grew.wait_timeout(lines, left).unwrap().0;
        }
    }

    /// Waits up to `limit` for a line matching `pred` and returns it.
    fn find(&self, limit: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let mut found = None;
        self.wait(limit, |lines| {
            found = lines.iter().find(|l| pred(l)).cloned();
            found.is_some()
        });
        found
    }

    /// Lines containing `text`.
    fn count(&self, text: &str) -> usize {
        let lines = self.lines.lock().unwrap();
        lines.iter().filter(|l| l.contains(text)).count()
    }

    /// Waits up to `limit` for the pipe to close (every writer exited).
    fn wait_closed(&self, limit: Duration) -> bool {
        wait_until(limit, || *self.closed.lock().unwrap())
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

/// A running example; its process tree is killed by pid and reaped on drop.
struct Example {
    name: &'static str,
    child: Option<Child>,
    pid: i32,
    stdout: Arc<Lines>,
    stderr: Arc<Lines>,
}

impl Example {
    /// Starts example `name` with `args`, without waiting for it.
    fn spawn(name: &'static str, args: &[&str]) -> Example {
        let mut child = Command::new(example_path(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn example {name}: {e}"));
        let stdout = Lines::collect(child.stdout.take().unwrap());
        let stderr = Lines::collect(child.stderr.take().unwrap());
        Example {
            name,
            pid: child.id() as i32,
            child: Some(child),
            stdout,
            stderr,
        }
    }

    /// Starts example `name` and waits for its `listening on ADDR` line;
    /// returns it with ADDR.
    fn start(name: &'static str, args: &[&str]) -> (Example, String) {
        let ex = Example::spawn(name, args);
        let ready = ex.stdout.find(LIMIT, |l| l.starts_with("listening on "));
        let Some(line) = ready else {
            panic!("{name} {args:?} never said it listens\n{}", ex.output());
        };
        let addr = line["listening on ".len()..].to_string();
        (ex, addr)
    }

    /// Starts a supervised example and waits for the master's JSON
    /// "listening" line on stderr; returns it with the line's `addr`.
    fn start_supervised(name: &'static str, args: &[&str]) -> (Example, String) {
        let ex = Example::spawn(name, args);
        let ready = ex
            .stderr
            .find(LIMIT, |l| l.contains("\"msg\":\"listening\""));
        let Some(line) = ready else {
            panic!("{name} {args:?} never logged listening\n{}", ex.output());
        };
        let addr = json_field(&line, "addr").expect("the listening line has addr");
        (ex, addr)
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid), sig).expect("kill");
    }

    /// Waits up to `limit` for the example to exit, and reaps it.
    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let mut status = None;
        wait_until(limit, || {
            status = child.try_wait().expect("try_wait");
            status.is_some()
        });
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// Sends `sig` and waits for the exit; panics, with the output, if the
    /// example does not exit 0 in time.
    fn stop_with(&mut self, sig: Signal) {
        self.signal(sig);
        self.expect_exit_0(&format!("after {sig}"));
    }

    /// Waits for the exit; panics, with the output, unless it is 0 in time.
    fn expect_exit_0(&mut self, when: &str) {
        let status = self.wait_exit(LIMIT);
        match status {
            Some(st) if st.code() == Some(0) => {}
            other => panic!(
                "{} {when}: exit {other:?}, want 0\n{}",
                self.name,
                self.output()
            ),
        }
    }

    /// What it wrote so far, for failure messages.
    fn output(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            self.stdout.text(),
            self.stderr.text()
        )
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // The whole tree, children (a supervisor's workers) first.
            for pid in descendants(self.pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends `line` on `conn` and reads one line back.
fn line_request(conn: &mut Conn, line: &str) -> String {
    conn.write_all(line.as_bytes()).expect("send");
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\n") {
        match read_some(conn, &mut byte).expect("read reply") {
            0 => break,
            _ => reply.push(byte[0]),
        }
    }
    String::from_utf8(reply).expect("UTF-8 reply")
}

/// One line's round trip on a new connection.
fn echo(transport: &str, addr: &str, line: &str) -> String {
    let mut conn = Conn::connect(transport, addr).expect("connect");
    line_request(&mut conn, line)
}

/// How many "worker serving" lines a supervisor's log holds (a substring:
/// each record is one write, but the test matches no more than it needs).
fn workers_serving(log: &[String]) -> usize {
    log.iter().filter(|l| l.contains("worker serving")).count()
}

#[test]
fn supervised_echo_replaces_a_killed_worker_and_refuses_no_client() {
    let (mut ex, addr) = Example::start_supervised("supervised_echo", &["127.0.0.1:0"]);
    let both_serve = ex.stderr.wait(LIMIT, |l| workers_serving(l) == 2);
    assert!(both_serve, "two workers serving\n{}", ex.output());
    let before = workers(ex.pid);
    assert_eq!(before.len(), 2, "the master's children: {before:?}");
    assert_eq!(echo("tcp", &addr, "hello\n"), "hello\n");

    let clients = ClientLoop::start("tcp", &addr, Duration::from_millis(2));
    assert!(clients.wait_more(10, LIMIT), "echo answers the client loop");
    let victim = before[0];
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    let mut now = Vec::new();
    let replaced = wait_until(LIMIT, || {
        now = workers(ex.pid);
        now.len() == 2 && !now.contains(&victim)
    });
    assert!(
        replaced,
        "no replacement for {victim}: {now:?}\n{}",
        ex.output()
    );
    assert!(
        now.iter().any(|p| !before.contains(p)),
        "a new pid: {now:?}"
    );
    let new_serves = ex.stderr.wait(LIMIT, |l| workers_serving(l) == 3);
    assert!(new_serves, "the replacement serves\n{}", ex.output());
    assert!(
        clients.wait_more(20, LIMIT),
        "echo answers after the replacement"
    );
    let stats = clients.stop();
    // The master holds the socket, so no connect is ever refused. The one
    // connection the killed worker may have just accepted dies with it.
    let refused = stats.failures.iter().filter(|f| f.contains("refused"));
    assert_eq!(refused.count(), 0, "{} ok; {:?}", stats.ok, stats.failures);
    assert!(
        stats.failures.len() <= 1,
        "{} ok; {:?}",
        stats.ok,
        stats.failures
    );

    let tree = descendants(ex.pid);
    ex.stop_with(Signal::SIGTERM);
    let all_gone = wait_until(LIMIT, || tree.iter().all(|&p| gone(p)));
    assert!(all_gone, "left behind: {tree:?}");
}

#[test]
fn threading_upper_serves_two_clients_at_once_in_capitals() {
    let (mut ex, addr) = Example::start("threading_upper", &["127.0.0.1:0"]);
    let mut a = Conn::connect("tcp", &addr).unwrap();
    assert_eq!(line_request(&mut a, "hello\n"), "HELLO\n");
    // `a` stays open and idle; a second client is served meanwhile.
    let mut b = Conn::connect("tcp", &addr).unwrap();
    assert_eq!(line_request(&mut b, "straße élan\n"), "STRASSE ÉLAN\n");
    assert_eq!(b.request(b"one\ntwo\n", 8).unwrap(), b"ONE\nTWO\n");
    assert_eq!(line_request(&mut a, "still here\n"), "STILL HERE\n");
    // Stops with both connections open: their idle reads see end-of-file.
    ex.stop_with(Signal::SIGTERM);
    let mut rest = [0u8; 16];
    assert_eq!(read_some(&mut a, &mut rest).unwrap(), 0, "a is closed");
}

#[test]
fn udp_time_answers_a_strftime_format_and_an_error_for_a_bad_one() {
    let (mut ex, addr) = Example::start("udp_time", &["127.0.0.1:0"]);
    let client = Dgram::new("udp", &addr);
    let ask = |req: &[u8]| String::from_utf8(dgram_request(&client, req, "udp_time")).unwrap();

    let year = ask(b"%Y");
    assert!(
        year.len() == 5 && year[..4].bytes().all(|b| b.is_ascii_digit()) && year.ends_with('\n'),
        "{year:?}"
    );
    // Empty (or only a newline, as `echo | nc -u` sends): the default format.
    for empty in [&b""[..], b"\n"] {
        let stamp = ask(empty);
        let shape: String = stamp
            .chars()
            .map(|c| if c.is_ascii_digit() { 'D' } else { c })
            .collect();
        assert_eq!(shape, "DDDD-DD-DD DD:DD:DD\n", "{stamp:?}");
    }
    let bad = ask(b"%Q%");
    assert!(bad.starts_with("error: invalid strftime format"), "{bad:?}");
    let binary = ask(b"\xff\xfe");
    assert!(binary.starts_with("error: "), "{binary:?}");
    assert_eq!(ask(b"%%"), "%\n", "still serving after errors");
    ex.stop_with(Signal::SIGTERM);
}

#[test]
fn unix_stream_replaces_a_stale_socket_echoes_and_removes_it_on_sigterm() {
    let (_dir, path) = temp_socket("echo.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap()); // a stale socket file
    let (mut ex, addr) = Example::start("unix_stream", &[path.to_str().unwrap()]);
    assert_eq!(Path::new(&addr), path);
    assert!(path.exists());
    let mut conn = Conn::connect("unix", &addr).unwrap();
    assert_eq!(line_request(&mut conn, "over a path\n"), "over a path\n");
    assert_eq!(conn.request(b"again", 5).unwrap(), b"again");
    drop(conn);
    assert_eq!(echo("unix", &addr, "next client\n"), "next client\n");
    ex.stop_with(Signal::SIGTERM);
    assert!(!path.exists(), "{} is left behind", path.display());
}

#[test]
fn unix_dgram_echoes_to_bound_clients_only_and_removes_its_socket_on_sigterm() {
    let (_dir, path) = temp_socket("echo-dgram.sock");
    let (mut ex, addr) = Example::start("unix_dgram", &[path.to_str().unwrap()]);
    assert!(path.exists());
    let client = Dgram::new("unix-dgram", &addr);
    assert_eq!(dgram_request(&client, b"ping", "unix_dgram"), b"ping");
    let big = vec![b'x'; 4000];
    assert_eq!(dgram_request(&client, &big, "unix_dgram"), big);
    let unbound = std::os::unix::net::UnixDatagram::unbound().unwrap();
    unbound.send_to(b"from nowhere", &path).unwrap();
    let said = ex.stderr.find(LIMIT, |l| l.starts_with("no reply: "));
    assert!(
        said.is_some(),
        "an unbound client is told off\n{}",
        ex.output()
    );
    assert_eq!(dgram_request(&client, b"pong", "unix_dgram"), b"pong");
    ex.stop_with(Signal::SIGTERM);
    assert!(!path.exists(), "{} is left behind", path.display());
}

#[test]
fn allow_list_serves_a_client_from_an_allowed_network() {
    let args = ["127.0.0.1:0", "10.0.0.0/8", "127.0.0.0/8"];
    let (mut ex, addr) = Example::start("allow_list", &args);
    assert_eq!(echo("tcp", &addr, "let me in\n"), "let me in\n");
    ex.stop_with(Signal::SIGTERM);
    assert_eq!(ex.stderr.count("refused"), 0, "{}", ex.output());
}

#[test]
fn allow_list_closes_a_client_from_another_network_unanswered() {
    let (mut ex, addr) = Example::start("allow_list", &["127.0.0.1:0", "10.0.0.0/8"]);
    let mut conn = Conn::connect("tcp", &addr).unwrap();
    let _ = conn.write_all(b"let me in\n"); // may meet the close already
    let mut buf = [0u8; 64];
    match read_some(&mut conn, &mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {} // closed unread
        other => panic!("a refused client got {other:?}\n{}", ex.output()),
    }
    let logged = ex.stderr.find(LIMIT, |l| l.contains("refused 127.0.0.1:"));
    assert!(logged.is_some(), "the refusal is logged\n{}", ex.output());
    ex.stop_with(Signal::SIGTERM);
}

#[test]
fn allow_list_rejects_a_malformed_network_naming_it() {
    let mut ex = Example::spawn("allow_list", &["127.0.0.1:0", "10.0.0.0/33"]);
    let status = ex.wait_exit(LIMIT).expect("exits");
    assert_eq!(status.code(), Some(1), "{}", ex.output());
    assert!(ex.stderr.wait_closed(LIMIT));
    assert!(ex.stderr.text().contains("10.0.0.0/33"), "{}", ex.output());
}

#[test]
fn handle_request_prints_timeout_for_each_call_no_client_comes_to() {
    let (mut ex, _addr) = Example::start("handle_request", &["127.0.0.1:0", "3", "0.05"]);
    ex.expect_exit_0("after 3 calls");
    assert!(ex.stdout.wait_closed(LIMIT));
    assert_eq!(ex.stdout.count("timeout"), 3, "{}", ex.output());
}

#[test]
fn handle_request_serves_the_clients_that_come_within_its_timeout() {
    let (mut ex, addr) = Example::start("handle_request", &["127.0.0.1:0", "2", "30"]);
    assert_eq!(echo("tcp", &addr, "first\n"), "first\n");
    assert_eq!(echo("tcp", &addr, "second\n"), "second\n");
    ex.expect_exit_0("after 2 requests");
    assert!(ex.stdout.wait_closed(LIMIT));
    assert_eq!(ex.stdout.count("timeout"), 0, "{}", ex.output());
}

#[test]
fn every_example_exits_0_on_sigterm_and_on_sigint() {
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let (_dir, path) = temp_socket("srv.sock");
        let path = path.to_str().unwrap();
        let table: [(&'static str, &[&str]); 7] = [
            ("supervised_echo", &["127.0.0.1:0"]),
            ("threading_upper", &["127.0.0.1:0"]),
            ("udp_time", &["127.0.0.1:0"]),
            ("unix_stream", &[path]),
            ("unix_dgram", &[path]),
            ("allow_list", &["127.0.0.1:0", "127.0.0.0/8"]),
            // A 60 s timeout: only the signal can end the wait in time.
            ("handle_request", &["127.0.0.1:0", "5", "60"]),
        ];
        for (name, args) in table {
            let mut ex = match name {
                "supervised_echo" => Example::start_supervised(name, args).0,
                _ => Example::start(name, args).0,
            };
            if name == "supervised_echo" {
                let both = ex.stderr.wait(LIMIT, |l| workers_serving(l) == 2);
                assert!(both, "two workers serving\n{}", ex.output());
            }
            let tree = descendants(ex.pid);
            ex.stop_with(sig);
            assert!(
                wait_until(LIMIT, || tree.iter().all(|&p| gone(p))),
                "{name} after {sig}: left behind {tree:?}"
            );
            assert!(!Path::new(path).exists(), "{name} after {sig}: {path} left");
        }
    }
}
