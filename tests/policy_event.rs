//! `--policy event`: every built-in service round-trips over all four
//! transports; thousands of connections are held by a handful of threads;
//! a client that does not read is closed at the output bound while others
//! are served; a graceful stop finishes requests in flight and closes idle
//! connections at once; `delay` waits on timers, concurrently; the idle
//! timeout closes idle connections; supervised reloads keep serving;
//! `files` refuses the policy; and a library `MessageFactory` serves
//! under event and thread alike, its panics reported.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    dgram_request, read_some, start_policy, thread_count, wait_until, Conn, Dgram, Sockserv,
};

const LIMIT: Duration = Duration::from_secs(10);

/// A sockserv under `--policy event` over `transport`, with its socket's
/// temp dir kept alive.
fn start(transport: &str, extra: &[&str]) -> (Sockserv, Option<tempfile::TempDir>) {
    start_policy("event", transport, extra)
}

/// One request and its reply over any transport (streams read `want`
/// bytes, or to end of stream when `want` is 0).
fn ask(transport: &str, addr: &str, req: &[u8], want: usize) -> Vec<u8> {
    if transport == "tcp" || transport == "unix" {
        let mut c = Conn::connect(transport, addr).unwrap();
        c.write_all(req).unwrap();
        if want == 0 {
            shutdown_write(&c);
            let mut all = Vec::new();
            c.read_to_end(&mut all).unwrap();
            return all;
        }
        let mut buf = vec![0u8; want];
        c.read_exact(&mut buf).unwrap();
        buf
    } else {
        dgram_request(&Dgram::new(transport, addr), req, transport)
    }
}

fn shutdown_write(c: &Conn) {
    match c {
        Conn::Tcp(s) => s.shutdown(std::net::Shutdown::Write).unwrap(),
        Conn::Unix(s) => s.shutdown(std::net::Shutdown::Write).unwrap(),
    }
}

const TRANSPORTS: [&str; 4] = ["tcp", "udp", "unix", "unix-dgram"];

#[test]
fn every_service_round_trips_over_every_transport() {
    let year = chrono_year();
    for transport in TRANSPORTS {
        let stream = transport == "tcp" || transport == "unix";
        for service in ["echo", "upper", "time", "delay", "cpu"] {
            let (s, _dir) = start(
                transport,
                &[
                    "--service",
                    service,
                    "--delay-ms",
                    "50",
                    "--cpu-rounds",
                    "1000",
                ],
            );
            let what = format!("{transport}/{service}");
            let started = Instant::now();
            match service {
                "upper" => assert_eq!(
                    ask(transport, &s.addr, b"Hi \xff\n", 5),
                    b"HI \xff\n",
                    "{what}"
                ),
                "time" => {
                    let reply = ask(transport, &s.addr, b"%Y\n", if stream { 5 } else { 4 });
                    assert_eq!(&reply[..4], year.as_bytes(), "{what}");
                }
                _ => assert_eq!(
                    ask(transport, &s.addr, b"round trip\n", 11),
                    b"round trip\n",
                    "{what}"
                ),
            }
            if service == "delay" {
                assert!(
                    started.elapsed() >= Duration::from_millis(50),
                    "{what}: no delay"
                );
            }
        }
        // discard answers nothing: a stream ends empty, a datagram gets no reply
        let (s, _dir) = start(transport, &["--service", "discard"]);
        if stream {
            assert!(
                ask(transport, &s.addr, b"dropped\n", 0).is_empty(),
                "{transport}/discard"
            );
        } else {
            let d = Dgram::new(transport, &s.addr);
            d.send(b"dropped").unwrap();
            assert_eq!(common::recv_within(&d, Duration::from_millis(300)), None);
        }
    }
}

fn chrono_year() -> String {
    let out = std::process::Command::new("date")
        .arg("+%Y")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn a_line_service_reassembles_lines_sent_in_pieces() {
    let (s, _dir) = start("tcp", &["--service", "time", "--no-supervisor"]);
    let mut c = Conn::connect("tcp", &s.addr).unwrap();
    c.write_all(b"%").unwrap();
    c.write_all(b"Y").unwrap();
    c.write_all(b"\n%Y\n").unwrap();
    let mut buf = [0u8; 10];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf[..5], &buf[5..], "two replies, one per line");
}

#[test]
fn thousands_of_connections_are_held_by_a_handful_of_threads() {
    const N: usize = 3000;
    let (s, _dir) = start("tcp", &["--threads", "2", "--no-supervisor"]);
    let mut held = Vec::with_capacity(N);
    for i in 0..N {
        let mut c = TcpStream::connect(&s.addr).unwrap();
        c.set_read_timeout(Some(LIMIT)).unwrap();
        let msg = format!("{i:08}");
        c.write_all(msg.as_bytes()).unwrap();
        held.push((c, msg));
    }
    for (c, msg) in &mut held {
        let mut buf = [0u8; 8];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, msg.as_bytes());
    }
    // the serving thread and two loops, however many connections
    assert_eq!(thread_count(s.pid()), 3);
    // every connection is still served
    for (c, _) in held.iter_mut().step_by(97) {
        c.write_all(b"again").unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"again");
    }
}

#[test]
fn a_client_that_does_not_read_is_closed_at_the_bound_and_others_are_served() {
    let (s, _dir) = start("tcp", &["--threads", "1", "--no-supervisor"]);
    let addr: std::net::SocketAddr = s.addr.parse().unwrap();
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&addr.into()).unwrap();
    let mut slow: TcpStream = sock.into();
    slow.set_write_timeout(Some(LIMIT)).unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0usize;
    let cut = loop {
        match slow.write(&chunk) {
            Ok(n) => sent += n,
            Err(e) => break e,
        }
        assert!(sent < 256 << 20, "never closed after {sent} bytes unread");
    };
    assert!(
        matches!(
            cut.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        "{cut}"
    );
    assert!(s
        .wait_log(LIMIT, |l| l.contains("client does not read its replies"))
        .is_some());
    assert_eq!(ask("tcp", &s.addr, b"still here", 10), b"still here");
}

#[test]
fn a_graceful_stop_finishes_requests_in_flight_and_closes_idle_connections() {
    let ctl = tempfile::tempdir().unwrap();
    let control = ctl.path().join("control.sock");
    let args = [
        "--service",
        "delay",
        "--delay-ms",
        "1000",
        "--threads",
        "1",
        "--control",
    ];
    let (mut s, _dir) = start("tcp", &[&args[..], &[control.to_str().unwrap()]].concat());
    let mut idle = Conn::connect("tcp", &s.addr).unwrap();
    assert_eq!(idle.request(b"warm", 4).unwrap(), b"warm");
    let mut busy: Vec<Conn> = (0..5)
        .map(|_| Conn::connect("tcp", &s.addr).unwrap())
        .collect();
    for (i, c) in busy.iter_mut().enumerate() {
        c.write_all(format!("busy{i}").as_bytes()).unwrap();
    }
    // TERM once the worker holds them all (a connection still in the
    // listen queue at a stop is another matter, the same for every policy)
    assert!(wait_until(LIMIT, || status_total(&control, "connections") == 6));
    let stopped_at = Instant::now();
    s.signal(libc::SIGTERM);
    // the served, idle connection is closed at once, long before the delay
    let mut buf = [0u8; 8];
    assert_eq!(read_some(&mut idle, &mut buf).unwrap(), 0);
    assert!(
        stopped_at.elapsed() < Duration::from_millis(800),
        "idle closed late"
    );
    for (i, c) in busy.iter_mut().enumerate() {
        let mut reply = Vec::new();
        c.read_to_end(&mut reply).unwrap();
        assert_eq!(
            reply,
            format!("busy{i}").as_bytes(),
            "request {i} was cut off"
        );
    }
    let status = s.wait_exit(LIMIT).expect("sockserv did not exit");
    assert!(status.success(), "{status:?}");
    assert!(stopped_at.elapsed() < Duration::from_secs(6));
}

/// A total from `sockserv status --json --control PATH`.
fn status_total(control: &std::path::Path, key: &str) -> u64 {
    let out = std::process::Command::new(common::sockserv_bin())
        .args(["status", "--json", "--control", control.to_str().unwrap()])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["totals"][key].as_u64().unwrap_or(0)
}

#[test]
fn delay_timers_run_concurrently_on_one_loop() {
    const N: usize = 40;
    let (s, _dir) = start(
        "tcp",
        &["--service", "delay", "--delay-ms", "100", "--threads", "1"],
    );
    let mut conns: Vec<Conn> = (0..N)
        .map(|_| Conn::connect("tcp", &s.addr).unwrap())
        .collect();
    let started = Instant::now();
    for c in &mut conns {
        c.write_all(b"zzz").unwrap();
    }
    for c in &mut conns {
        let mut buf = [0u8; 3];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"zzz");
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(100), "{took:?}");
    // N x 100 ms would be 4 s
    assert!(
        took < Duration::from_millis(2000),
        "timers ran one after another: {took:?}"
    );
}

#[test]
fn the_idle_timeout_closes_an_idle_connection() {
    let (s, _dir) = start("unix", &["--idle-timeout", "0.2", "--no-supervisor"]);
    let mut c = Conn::connect("unix", &s.addr).unwrap();
    assert_eq!(c.request(b"once", 4).unwrap(), b"once");
    let started = Instant::now();
    let mut buf = [0u8; 4];
    assert_eq!(read_some(&mut c, &mut buf).unwrap(), 0);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[test]
fn supervised_workers_serve_across_a_reload() {
    let (s, _dir) = start("tcp", &["--workers", "2", "--threads", "2"]);
    assert!(wait_until(LIMIT, || common::workers(s.pid()).len() == 2));
    let before = common::workers(s.pid());
    for w in &before {
        assert!(
            wait_until(LIMIT, || thread_count(*w) == 3),
            "worker {w}: loops"
        );
    }
    assert_eq!(ask("tcp", &s.addr, b"before", 6), b"before");
    s.signal(libc::SIGHUP);
    assert!(wait_until(LIMIT, || {
        let now = common::workers(s.pid());
        now.len() == 2 && now.iter().all(|w| !before.contains(w))
    }));
    assert_eq!(ask("tcp", &s.addr, b"after", 5), b"after");
}

#[test]
fn files_refuses_the_event_policy_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::sockserv_bin())
        .args([
            "--service",
            "files",
            "--policy",
            "event",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--accounts", dir.path().join("accounts").to_str().unwrap()])
        .args(["--files-root", dir.path().join("files").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("event loop") && err.contains("--policy thread"),
        "{err}"
    );
}

// --- the library ---------------------------------------------------------

use socketserver::{
    messages, MessageFactory, MessageHandler, Next, Opening, Output, Policy, ServerBuilder,
    Transport,
};

/// Replies `N:bytes` with a per-connection count; panics on "boom".
struct Numbered;

struct NumberedConn(u64);

impl MessageFactory for Numbered {
    fn open(&self, _o: &Opening<'_>, out: &mut Output) -> std::io::Result<Box<dyn MessageHandler>> {
        out.send(b"hello\n");
        Ok(Box::new(NumberedConn(0)))
    }
}

impl MessageHandler for NumberedConn {
    fn data(&mut self, input: &[u8], out: &mut Output) -> std::io::Result<Next> {
        assert!(input != b"boom", "boom");
        self.0 += 1;
        out.reply_with(|b| {
            b.extend_from_slice(format!("{}:", self.0).as_bytes());
            b.extend_from_slice(input);
        });
        Ok(if input == b"bye" {
            Next::Close
        } else {
            Next::Read
        })
    }
}

/// The library server on a thread, stopped and joined on drop.
struct LibServer {
    addr: String,
    stop: socketserver::ShutdownHandle,
    errors: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LibServer {
    fn drop(&mut self) {
        self.stop.shutdown();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// Counts handle_error calls.
struct CountErrors(Arc<AtomicU64>);

impl socketserver::Hooks for CountErrors {
    fn handle_error(
        &self,
        _p: &socketserver::Address,
        _e: &socketserver::RequestError,
        _l: &slog::Logger,
    ) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn lib_server(policy: Policy) -> LibServer {
    let errors = Arc::new(AtomicU64::new(0));
    let addr = Transport::Tcp.parse_address("127.0.0.1:0").unwrap();
    let mut server = ServerBuilder::new(Transport::Tcp, addr)
        .policy(policy)
        .hooks(CountErrors(Arc::clone(&errors)))
        .build(messages(Numbered))
        .unwrap();
    let stop = server.shutdown_handle();
    let addr = server.address().to_string();
    let thread = std::thread::spawn(move || {
        server.serve_forever(Duration::from_millis(50)).unwrap();
        server.close_gracefully(Duration::from_secs(5));
    });
    LibServer {
        addr,
        stop,
        errors,
        thread: Some(thread),
    }
}

#[test]
fn a_message_factory_serves_under_event_and_thread_alike_and_its_panics_are_reported() {
    for policy in [Policy::Event { threads: 2 }, Policy::THREAD] {
        let s = lib_server(policy);
        let mut c = Conn::connect("tcp", &s.addr).unwrap();
        let mut hello = [0u8; 6];
        c.read_exact(&mut hello).unwrap();
        assert_eq!(&hello, b"hello\n", "{policy:?}");
        assert_eq!(c.request(b"a", 3).unwrap(), b"1:a", "{policy:?}");
        assert_eq!(c.request(b"b", 3).unwrap(), b"2:b", "{policy:?}");
        c.write_all(b"bye").unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"3:bye", "{policy:?}: closed after the reply");

        let mut bad = Conn::connect("tcp", &s.addr).unwrap();
        bad.read_exact(&mut hello).unwrap();
        bad.write_all(b"boom").unwrap();
        let mut rest = Vec::new();
        let _ = bad.read_to_end(&mut rest);
        assert!(rest.is_empty(), "{policy:?}");
        assert!(
            wait_until(LIMIT, || s.errors.load(Ordering::SeqCst) == 1),
            "{policy:?}"
        );
        let mut c = Conn::connect("tcp", &s.addr).unwrap();
        c.read_exact(&mut hello).unwrap();
        assert_eq!(
            c.request(b"ok", 4).unwrap(),
            b"1:ok",
            "{policy:?}: still serving"
        );
    }
}

#[test]
fn a_blocking_handler_is_refused_under_event_at_build_time() {
    struct Blocking;
    impl socketserver::StreamHandler for Blocking {
        fn handle(&mut self, _c: &mut socketserver::StreamRequest) -> std::io::Result<()> {
            Ok(())
        }
    }
    let addr = Transport::Tcp.parse_address("127.0.0.1:0").unwrap();
    let err = ServerBuilder::new(Transport::Tcp, addr)
        .policy(Policy::Event { threads: 1 })
        .build(socketserver::stream(|| Blocking))
        .err()
        .expect("a blocking handler under event must be refused");
    assert!(err.to_string().contains("event policy"), "{err}");
}

// --- chat ------------------------------------------------------------------

/// A chat session over a stream: lines out, lines in.
struct ChatUser(std::io::BufReader<Conn>);

impl ChatUser {
    fn line(&mut self) -> String {
        use std::io::BufRead;
        let mut l = String::new();
        self.0.read_line(&mut l).unwrap();
        l
    }

    fn ask(&mut self, line: &str) -> String {
        self.0
            .get_mut()
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
        self.line()
    }
}

/// What two stream users and a datagram user see of one scenario: a
/// broadcast, a private message, /who, an over-long line, /quit.
fn chat_transcript(stream: &str, policy: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let accounts = dir.path().join("accounts");
    let mut seen = Vec::new();
    for transport in [stream, "udp"] {
        let chat = [
            "--service",
            "chat",
            "--hash-cost",
            "m=64,t=1,p=1",
            "--accounts",
        ];
        let extra = [&chat[..], &[accounts.to_str().unwrap()]].concat();
        let (s, _ldir) = start_policy(policy, transport, &extra);
        if transport == "udp" {
            let d = Dgram::new("udp", &s.addr);
            seen.push(
                String::from_utf8(dgram_request(&d, b"/login alice pw-alice-1", "udp")).unwrap(),
            );
            seen.push(String::from_utf8(dgram_request(&d, b"/who", "udp")).unwrap());
            seen.push(String::from_utf8(dgram_request(&d, b"/quit", "udp")).unwrap());
            continue;
        }
        let connect = || {
            let mut u = ChatUser(std::io::BufReader::new(
                Conn::connect(transport, &s.addr).unwrap(),
            ));
            let welcome = u.line();
            (u, welcome)
        };
        let (mut alice, w) = connect();
        seen.push(w);
        let (mut bob, _) = connect();
        seen.push(alice.ask("/register alice pw-alice-1"));
        seen.push(bob.ask("/register bob pw-bob-1"));
        alice.0.get_mut().write_all(b"hello ").unwrap();
        alice.0.get_mut().write_all(b"room\n").unwrap();
        seen.push(bob.line());
        seen.push(alice.ask("/msg bob psst"));
        seen.push(bob.line());
        seen.push(bob.ask("/who"));
        seen.push(alice.ask(&"x".repeat(5000)));
        seen.push(alice.ask("/quit"));
        let mut rest = String::new();
        alice.0.read_to_string(&mut rest).unwrap();
        seen.push(format!("after quit: {rest:?}"));
        assert!(
            wait_until(LIMIT, || bob.ask("/who") == "ok: online: bob\n"),
            "{policy}"
        );
    }
    seen
}

#[test]
fn chat_under_event_behaves_as_under_thread() {
    for stream in ["tcp", "unix"] {
        let thread = chat_transcript(stream, "thread");
        let event = chat_transcript(stream, "event");
        assert_eq!(event, thread, "{stream}");
        assert!(
            thread.iter().any(|l| l == "alice: hello room\n"),
            "{thread:?}"
        );
        assert!(
            thread
                .iter()
                .any(|l| l.starts_with("error: line longer than")),
            "{thread:?}"
        );
    }
}

#[test]
fn the_access_log_has_a_line_per_connection_and_datagram() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut servers = Vec::new();
    for transport in ["tcp", "udp"] {
        let (s, d) = start(
            transport,
            &["--no-supervisor", "--access-log", log.to_str().unwrap()],
        );
        assert_eq!(ask(transport, &s.addr, b"logged\n", 7), b"logged\n");
        servers.push((s, d)); // serving until the lines are in
    }
    let mut lines = Vec::new();
    assert!(
        wait_until(LIMIT, || {
            lines = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .map(String::from)
                .collect();
            lines.len() == 2
        }),
        "{lines:?}"
    );
    for l in &lines {
        let ok = l.contains("\"outcome\":\"ok\"");
        assert!(ok && l.contains("\"bytes_in\":7,\"bytes_out\":7"), "{l}");
    }
}

#[test]
fn a_last_line_without_its_newline_is_answered_at_end_of_input() {
    for transport in ["tcp", "unix"] {
        // time's reply to a format without a % is the format itself.
        let (srv, _dir) = start(transport, &["--service", "time"]);
        let got = ask(transport, &srv.addr, b"one\ntwo", 0);
        assert_eq!(got, b"one\ntwo\n", "{transport}: {got:?}");
    }
}
