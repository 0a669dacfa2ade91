//! End-to-end tests: the real `sockload` binary against small servers run
//! inside the test process (TCP, Unix stream, UDP, Unix datagram).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use serde_json::Value;

const SOCKLOAD: &str = env!("CARGO_BIN_EXE_sockload");
/// Every sockload run in these tests is well under this; past it the child is killed.
const DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- servers

/// What an in-test server does with each request it reads.
#[derive(Clone, Copy)]
enum Behaviour {
    Echo,
    /// Replies with the right length but the wrong bytes.
    Wrong,
    /// Echoes every request but replies wrongly to every `n`th one.
    WrongEvery(u64),
    /// Echoes after a delay (a saturated, slow server).
    Delay(Duration),
    /// Answers each line with a fixed line, like a `time` service.
    Line,
}

#[derive(Default)]
struct Counters {
    /// Bytes replied to; requests answered = bytes / request size.
    bytes: AtomicU64,
    reads: AtomicU64,
    stop: AtomicBool,
}

/// Builds the reply to one read of `req`; counts it.
fn answer(req: &[u8], how: Behaviour, c: &Counters) -> Vec<u8> {
    let nth = c.reads.fetch_add(1, SeqCst) + 1;
    c.bytes.fetch_add(req.len() as u64, SeqCst);
    match how {
        Behaviour::Echo => req.to_vec(),
        Behaviour::Wrong => vec![b'X'; req.len()],
        Behaviour::WrongEvery(n) if nth % n == 0 => vec![b'X'; req.len()],
        Behaviour::WrongEvery(_) => req.to_vec(),
        Behaviour::Delay(d) => {
            thread::sleep(d); // the fixture's service time, not a wait in the test
            req.to_vec()
        }
        Behaviour::Line => b"12:00:00\n".to_vec(),
    }
}

fn serve_stream<S: Read + Write>(mut s: S, how: Behaviour, c: &Counters) {
    let mut buf = vec![0u8; 65536];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 || s.write_all(&answer(&buf[..n], how, c)).is_err() {
            return;
        }
    }
}

/// A server running on background threads; stopped (and its socket file removed) on drop.
struct Server {
    addr: String,
    counters: Arc<Counters>,
    wake: Box<dyn Fn() + Send>,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    fn answered(&self, size: u64) -> u64 {
        self.counters.bytes.load(SeqCst) / size
    }

    fn tcp(how: Behaviour) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let c = Arc::new(Counters::default());
        let cc = Arc::clone(&c);
        thread::spawn(move || {
            for s in l.incoming() {
                if cc.stop.load(SeqCst) {
                    return;
                }
                let cc = Arc::clone(&cc);
                let s = s.unwrap();
                s.set_nodelay(true).unwrap();
                thread::spawn(move || serve_stream(s, how, &cc));
            }
        });
        let wake = Box::new(move || drop(TcpStream::connect(addr)));
        Server {
            addr: addr.to_string(),
            counters: c,
            wake,
            _dir: None,
        }
    }

    fn unix(how: Behaviour) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let l = UnixListener::bind(&path).unwrap();
        let c = Arc::new(Counters::default());
        let cc = Arc::clone(&c);
        thread::spawn(move || {
            for s in l.incoming() {
                if cc.stop.load(SeqCst) {
                    return;
                }
                let cc = Arc::clone(&cc);
                let s = s.unwrap();
                thread::spawn(move || serve_stream(s, how, &cc));
            }
        });
        let p = path.clone();
        let wake = Box::new(move || drop(UnixStream::connect(&p)));
        Server {
            addr: path.display().to_string(),
            counters: c,
            wake,
            _dir: Some(dir),
        }
    }

    fn udp(how: Behaviour) -> Server {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = s.local_addr().unwrap();
        let c = Arc::new(Counters::default());
        let cc = Arc::clone(&c);
        thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, peer)) = s.recv_from(&mut buf) {
                if cc.stop.load(SeqCst) {
                    return;
                }
                let _ = s.send_to(&answer(&buf[..n], how, &cc), peer);
            }
        });
        let wake = Box::new(move || {
            let _ = UdpSocket::bind("127.0.0.1:0").and_then(|u| u.send_to(b"", addr));
        });
        Server {
            addr: addr.to_string(),
            counters: c,
            wake,
            _dir: None,
        }
    }

    fn unix_dgram(how: Behaviour) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.sock");
        let s = UnixDatagram::bind(&path).unwrap();
        let c = Arc::new(Counters::default());
        let cc = Arc::clone(&c);
        thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, peer)) = s.recv_from(&mut buf) {
                if cc.stop.load(SeqCst) {
                    return;
                }
                let _ = s.send_to_addr(&answer(&buf[..n], how, &cc), &peer);
            }
        });
        let p = path.clone();
        let wake = Box::new(move || {
            let _ = UnixDatagram::unbound().and_then(|u| u.send_to(b"", &p));
        });
        Server {
            addr: path.display().to_string(),
            counters: c,
            wake,
            _dir: Some(dir),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.counters.stop.store(true, SeqCst);
        (self.wake)();
    }
}

// ---------------------------------------------------------------- running sockload

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    fn code(&self) -> i32 {
        self.status.code().expect("sockload exited by a signal")
    }
}

/// Kills the child by pid if the test panics before it was waited on.
struct Reaper(Option<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn sockload(args: &[&str]) -> Run {
    let child = Command::new(SOCKLOAD)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sockload");
    let mut reaper = Reaper(Some(child));
    let child = reaper.0.as_mut().unwrap();
    let drain = |mut r: Box<dyn Read + Send>| {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            let _ = tx.send(s);
        });
        rx
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    // The pipes close when sockload exits; past the deadline the Reaper kills it.
    let stdout = out
        .recv_timeout(DEADLINE)
        .expect("sockload did not finish in time");
    let stderr = err
        .recv_timeout(DEADLINE)
        .expect("sockload did not finish in time");
    let status = reaper.0.take().unwrap().wait().unwrap();
    Run {
        status,
        stdout,
        stderr,
    }
}

/// Runs sockload with a whitespace-separated command line (no paths with spaces here).
fn sl(cmdline: &str) -> Run {
    sockload(&cmdline.split_whitespace().collect::<Vec<_>>())
}

/// Runs sockload, expects exit 0 and returns its `--json` report.
fn run_ok(cmdline: &str) -> Value {
    let r = sl(&format!("{cmdline} --json"));
    assert_eq!(r.code(), 0, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    r.json()
}

// ---------------------------------------------------------------- tests

#[test]
fn ok_count_equals_server_answers_in_a_requests_run() {
    let srv = Server::tcp(Behaviour::Echo);
    let j = run_ok(&format!(
        "--connect {} --requests 500 --warmup 0 --connections 4",
        srv.addr
    ));
    assert_eq!(j["requests_ok"], 500);
    assert_eq!(j["errors_total"], 0);
    assert_eq!(srv.answered(64), 500);
    assert_eq!(j["latency"]["count"], 500);
}

#[test]
fn ok_count_equals_server_answers_in_a_duration_run() {
    let srv = Server::tcp(Behaviour::Echo);
    let j = run_ok(&format!(
        "--connect {} --duration 300ms --warmup 0 --connections 2 --size 100",
        srv.addr
    ));
    let ok = j["requests_ok"].as_u64().unwrap();
    assert!(ok > 0);
    assert_eq!(srv.answered(100), ok);
    assert!(j["measured_s"].as_f64().unwrap() >= 0.3);
}

#[test]
fn warmup_requests_are_answered_but_not_counted() {
    let srv = Server::tcp(Behaviour::Echo);
    let j = run_ok(&format!(
        "--connect {} --requests 50 --warmup 200ms --connections 1",
        srv.addr
    ));
    assert_eq!(j["requests_ok"], 50);
    assert_eq!(j["latency"]["count"], 50);
    assert!(srv.answered(64) > 50, "the warm-up sent requests too");
}

#[test]
fn wrong_replies_are_counted_as_wrong_reply_and_exit_1() {
    let srv = Server::tcp(Behaviour::Wrong);
    let r = sl(&format!(
        "--connect {} --requests 40 --warmup 0 --connections 2 --expect echo --json",
        srv.addr
    ));
    assert_eq!(r.code(), 1, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["requests_ok"], 0);
    assert_eq!(j["errors"]["wrong_reply"], 40);
    assert_eq!(j["errors_total"], 40);
    assert_eq!(j["passed"], false);
    assert!(j["error_samples"]["wrong_reply"]
        .as_str()
        .unwrap()
        .contains(&srv.addr));
}

#[test]
fn upper_expects_uppercase_and_echo_is_then_wrong() {
    let srv = Server::tcp(Behaviour::Echo);
    let r = sl(&format!(
        "--connect {} --requests 10 --warmup 0 --expect upper --json",
        srv.addr
    ));
    assert_eq!(r.code(), 1);
    assert_eq!(r.json()["errors"]["wrong_reply"], 10);
}

#[test]
fn error_rate_within_max_error_rate_exits_0_and_above_it_exits_1() {
    let srv = Server::tcp(Behaviour::WrongEvery(4));
    let base = format!(
        "--connect {} --requests 100 --warmup 0 --connections 1",
        srv.addr
    );
    let j = run_ok(&format!("{base} --max-error-rate 0.3"));
    assert_eq!(j["errors"]["wrong_reply"], 25);
    assert_eq!(j["requests_ok"], 75);
    assert_eq!(j["error_rate"], 0.25);
    assert_eq!(sl(&format!("{base} --max-error-rate 0.2")).code(), 1);
}

#[test]
fn refused_connections_are_counted_and_exit_1() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // now closed
    let addr = format!("127.0.0.1:{port}");
    let r = sl(&format!(
        "--connect {addr} --requests 5 --warmup 0 --connections 1"
    ));
    assert_eq!(r.code(), 1);
    assert!(r.stdout.contains("refused 5"), "{}", r.stdout);
    let msg = format!("connect {addr}: Connection refused (os error 111)");
    assert!(r.stdout.contains(&msg), "{}", r.stdout);
}

/// Every field path of a JSON value (`latency.p99_us`, `errors.reset`, ...).
fn field_paths(v: &Value, prefix: &str, out: &mut Vec<String>) {
    if let Value::Object(map) = v {
        for (k, child) in map {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            out.push(path.clone());
            if k != "error_samples" {
                field_paths(child, &path, out);
            }
        }
    }
}

/// The field paths the README documents: first cells of the tables in its
/// "sockload JSON output" section, like `` `latency.p99_us` ``.
fn documented_fields() -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = doc
        .split("### sockload JSON output")
        .nth(1)
        .expect("README.md has a sockload JSON output section");
    let section = section.split("\n#").next().unwrap();
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next().map(str::to_string))
        .collect()
}

#[test]
fn json_report_carries_every_documented_field() {
    let srv = Server::tcp(Behaviour::Echo);
    let j = run_ok(&format!(
        "--connect {} --requests 200 --rate 2000 --warmup 0 --connections 2",
        srv.addr
    ));
    assert_eq!(j["format_version"], 1);
    assert_eq!(j["loop"], "open");
    assert_eq!(j["config"]["rate"], 2000.0);
    assert_eq!(j["config"]["requests"], 200);
    assert_eq!(j["config"]["transport"], "tcp");
    for kind in [
        "refused",
        "reset",
        "timeout",
        "short_reply",
        "wrong_reply",
        "other",
    ] {
        assert_eq!(j["errors"][kind], 0, "errors.{kind}");
    }
    let mut present = Vec::new();
    field_paths(&j, "", &mut present);
    // `corrected` and `uncorrected` have the fields of `latency`, documented once.
    for f in &mut present {
        for p in ["corrected.", "uncorrected."] {
            if let Some(rest) = f.strip_prefix(p) {
                *f = format!("latency.{rest}");
            }
        }
    }
    let documented = documented_fields();
    for f in &present {
        assert!(
            documented.contains(f),
            "--json field {f} is not documented in README.md"
        );
    }
    for f in &documented {
        assert!(
            present.contains(f),
            "documented field {f} is missing from --json output"
        );
    }
}

#[test]
fn open_loop_reports_higher_latency_than_closed_loop_against_a_stalled_server() {
    let srv = Server::tcp(Behaviour::Delay(Duration::from_millis(20)));
    let base = format!(
        "--connect {} --connections 1 --duration 300ms --warmup 0",
        srv.addr
    );
    let closed = run_ok(&base);
    let open = run_ok(&format!("{base} --rate 200"));
    let closed_p50 = closed["latency"]["p50_us"].as_u64().unwrap();
    let corrected_p50 = open["corrected"]["p50_us"].as_u64().unwrap();
    let uncorrected_p50 = open["uncorrected"]["p50_us"].as_u64().unwrap();
    assert!(closed_p50 >= 20_000, "closed loop p50 {closed_p50}us");
    // At 200/s against a 50/s server the queue grows: by the middle of the run
    // requests are ~100 ms behind their intended send time.
    assert!(
        corrected_p50 > 3 * closed_p50,
        "corrected p50 {corrected_p50}us vs closed {closed_p50}us"
    );
    assert!(
        uncorrected_p50 < corrected_p50 / 2,
        "uncorrected p50 {uncorrected_p50}us hides the stall"
    );
    assert_eq!(closed["corrected"], Value::Null);
    assert_eq!(open["latency"], open["corrected"]);
}

#[test]
fn merge_of_two_saved_runs_sums_their_counts() {
    let srv = Server::tcp(Behaviour::Echo);
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<String> = ["a.hlog", "b.hlog"]
        .iter()
        .map(|n| dir.path().join(n).display().to_string())
        .collect();
    let mut reports = Vec::new();
    for (f, n) in files.iter().zip([300, 200]) {
        let args = format!(
            "--connect {} --requests {n} --warmup 0 --connections 2 --hist {f}",
            srv.addr
        );
        reports.push(run_ok(&args));
        let text = std::fs::read_to_string(f).unwrap();
        assert!(
            text.starts_with("#[Histogram log format version 1.3]"),
            "{text}"
        );
    }
    let m = run_ok(&format!("merge {} {}", files[0], files[1]));
    assert_eq!(m["kind"], "merge");
    assert_eq!(m["runs"], 2);
    assert_eq!(m["requests_ok"], 500);
    assert_eq!(m["latency"]["count"], 500);
    assert_eq!(m["merged_from"].as_array().unwrap().len(), 2);
    let max = reports
        .iter()
        .map(|r| r["latency"]["max_us"].as_u64().unwrap())
        .max()
        .unwrap();
    assert_eq!(m["latency"]["max_us"], max);
    let p50s: Vec<u64> = reports
        .iter()
        .map(|r| r["latency"]["p50_us"].as_u64().unwrap())
        .collect();
    let merged_p50 = m["latency"]["p50_us"].as_u64().unwrap();
    assert!(p50s.iter().min().unwrap() <= &merged_p50 && &merged_p50 <= p50s.iter().max().unwrap());
    let human = sl(&format!("merge {} {}", files[0], files[1]));
    assert_eq!(human.code(), 0);
    assert!(
        human.stdout.contains("merge of 2 runs") && human.stdout.contains("500 ok"),
        "{}",
        human.stdout
    );
}

fn round_trip(transport: &str, srv: &Server, extra: &str) {
    let j = run_ok(&format!(
        "--transport {transport} --connect {} --requests 200 --warmup 0 --connections 2 {extra}",
        srv.addr
    ));
    assert_eq!(j["requests_ok"], 200, "{transport} {extra}");
    assert_eq!(j["config"]["transport"], transport);
    assert_eq!(srv.answered(64), 200, "{transport} {extra}");
}

#[test]
fn unix_stream_round_trips() {
    round_trip("unix", &Server::unix(Behaviour::Echo), "");
    round_trip("unix", &Server::unix(Behaviour::Echo), "--mode connect");
}

#[test]
fn udp_round_trips() {
    round_trip("udp", &Server::udp(Behaviour::Echo), "");
    round_trip("udp", &Server::udp(Behaviour::Echo), "--mode connect");
}

#[test]
fn unix_datagram_round_trips() {
    round_trip("unix-dgram", &Server::unix_dgram(Behaviour::Echo), "");
    round_trip(
        "unix-dgram",
        &Server::unix_dgram(Behaviour::Echo),
        "--mode connect",
    );
}

#[test]
fn tcp_connect_mode_opens_a_connection_per_request() {
    round_trip("tcp", &Server::tcp(Behaviour::Echo), "--mode connect");
}

#[test]
fn sources_spread_connections_over_loopback_source_addresses() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let peers = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let seen = Arc::clone(&peers);
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    let acceptor = thread::spawn(move || {
        for s in l.incoming() {
            if stopping.load(SeqCst) {
                return;
            }
            let s = s.unwrap();
            seen.lock()
                .unwrap()
                .insert(s.peer_addr().unwrap().ip().to_string());
            thread::spawn(move || serve_stream(s, Behaviour::Echo, &Counters::default()));
        }
    });
    let j = run_ok(&format!(
        "--connect {addr} --requests 40 --warmup 0 --mode connect --connections 2 --sources 4"
    ));
    stop.store(true, SeqCst);
    drop(TcpStream::connect(addr)); // wakes the acceptor to see `stop`
    acceptor.join().unwrap();
    assert_eq!(j["requests_ok"], 40);
    assert_eq!(j["config"]["sources"], 4);
    let peers: Vec<String> = peers.lock().unwrap().iter().cloned().collect();
    let want: Vec<String> = (2..=5).map(|i| format!("127.0.0.{i}")).collect();
    assert!(
        want.iter().all(|w| peers.contains(w)),
        "connections came from {peers:?}"
    );
    assert!(
        peers.iter().all(|p| want.contains(p) || p == "127.0.0.1"),
        "a connection came from outside 127.0.0.2-5: {peers:?}"
    );
}

#[test]
fn expect_any_reads_a_line_reply() {
    let srv = Server::tcp(Behaviour::Line);
    let j = run_ok(&format!(
        "--connect {} --requests 50 --warmup 0 --expect any",
        srv.addr
    ));
    assert_eq!(j["requests_ok"], 50);
    assert_eq!(srv.counters.reads.load(SeqCst), 50);
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        "--bogus",
        "--connections 0",
        "--duration ten",
        "--duration 0",
        "--duration 1s --requests 5",
        "--transport sctp",
        "--transport unix",
        "--rate -5",
        "--timeout 0",
        "--max-error-rate 2",
        "--mode sometimes",
        "merge",
        "--transport udp --connect /tmp/not-an-inet-address",
        "--sources 0",
        "--sources 254",
        "--transport udp --connect 127.0.0.1:9 --sources 2",
        "--connect [::1]:9 --sources 2",
    ] {
        let r = sl(args);
        assert_eq!(r.code(), 2, "{args}: {}", r.stderr);
    }
}

#[test]
fn a_bad_connect_address_exits_2_with_one_line() {
    let r = sl("--connect nonsense");
    assert_eq!(r.code(), 2);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("--connect") && r.stderr.contains("nonsense"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty());
}
