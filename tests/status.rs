//! `--control` and `sockserv status`: the scoreboard counts exactly what
//! real clients were answered, for every policy and transport, under the
//! supervisor with 2 workers; in-flight equals held connections (and
//! children under fork); a killed worker's counts survive it and count as
//! a restart; rejected and truncated datagrams are counted; a control
//! client that never sends does not block status, and a request the master
//! cannot parse gets a clear error. The `--metrics` endpoint serves the
//! same numbers, and a stuck scraper blocks nothing.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{listen_for, wait_until, workers, Conn, Dgram, Sockserv};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(10);

/// A supervised sockserv with a control socket in a temp dir.
struct Server {
    srv: Sockserv,
    control: PathBuf,
    _dirs: (tempfile::TempDir, Option<tempfile::TempDir>),
}

impl Server {
    fn start(transport: &str, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let control = dir.path().join("control.sock");
        let (listen, ldir) = listen_for(transport);
        let mut args = vec![
            "--transport",
            transport,
            "--listen",
            &listen,
            "--control",
            control.to_str().unwrap(),
            "--metrics",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let srv = Sockserv::start(&args);
        Server {
            srv,
            control,
            _dirs: (dir, ldir),
        }
    }

    /// The status JSON, through the real `sockserv status --json`.
    fn status(&self) -> Value {
        let out = Command::new(common::sockserv_bin())
            .args([
                "status",
                "--json",
                "--control",
                self.control.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn total(&self, key: &str) -> u64 {
        self.status()["totals"][key].as_u64().unwrap()
    }

    /// Waits until the total `key` equals `want`; returns the last reading.
    fn wait_total(&self, key: &str, want: u64) -> u64 {
        let mut last = 0;
        wait_until(LIMIT, || {
            last = self.total(key);
            last == want
        });
        last
    }
}

fn sockload(transport: &str, addr: &str, requests: u64) -> u64 {
    let out = Command::new(env!("CARGO_BIN_EXE_sockload"))
        .args([
            "--transport",
            transport,
            "--connect",
            addr,
            "--connections",
            "4",
        ])
        .args([
            "--requests",
            &requests.to_string(),
            "--warmup",
            "0s",
            "--json",
        ])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("sockload: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    v["requests_ok"].as_u64().unwrap()
}

#[test]
fn requests_counted_equal_what_clients_got_answered_for_every_policy_and_transport() {
    for transport in ["tcp", "udp", "unix", "unix-dgram"] {
        for policy in ["sync", "fork", "thread", "pool", "event"] {
            let s = Server::start(transport, &["--policy", policy, "--workers", "2"]);
            assert!(wait_until(LIMIT, || workers(s.srv.pid()).len() == 2));
            let answered = sockload(transport, &s.srv.addr, 400);
            assert!(answered > 0, "{transport}/{policy}: nothing answered");
            let got = s.wait_total("requests", answered);
            assert_eq!(got, answered, "{transport}/{policy}: requests");
            let connections = s.total("connections");
            if transport.contains("dgram") || transport == "udp" {
                assert_eq!(
                    connections, answered,
                    "{transport}/{policy}: datagrams received"
                );
            } else {
                assert!(
                    (4..=8).contains(&connections),
                    "{transport}/{policy}: {connections}"
                );
            }
            let st = s.status();
            let per_worker: u64 = st["workers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w["requests"].as_u64().unwrap())
                .sum();
            assert_eq!(per_worker, answered, "{transport}/{policy}: workers' sum");
            assert_eq!(
                s.wait_total("in_flight", 0),
                0,
                "{transport}/{policy}: in flight"
            );
            assert_eq!(st["totals"]["errors"], 0, "{transport}/{policy}");
            // The metrics endpoint tells the same numbers.
            let m = common::scrape(&common::metrics_addr(&s.srv));
            let what = format!("{transport}/{policy}: metrics");
            assert_eq!(m["sockserv_requests_total"], answered as f64, "{what}");
            assert_eq!(
                m["sockserv_connections_total"], connections as f64,
                "{what}"
            );
            assert_eq!(m["sockserv_in_flight"], 0.0, "{what}");
            assert_eq!(m["sockserv_errors_total"], 0.0, "{what}");
            assert_eq!(m["sockserv_workers"], 2.0, "{what}");
        }
    }
}

#[test]
fn in_flight_is_the_held_connections_and_under_fork_the_children() {
    for policy in ["fork", "thread", "event"] {
        let s = Server::start("tcp", &["--policy", policy, "--workers", "2"]);
        let mut held = Vec::new();
        for i in 0..3 {
            let mut c = Conn::connect("tcp", &s.srv.addr).unwrap();
            c.set_timeout(Some(LIMIT));
            let msg = format!("held {i}\n");
            assert_eq!(
                c.request(msg.as_bytes(), msg.len()).unwrap(),
                msg.as_bytes()
            );
            held.push(c);
        }
        assert_eq!(s.wait_total("in_flight", 3), 3, "{policy}");
        let st = s.status();
        let ws = st["workers"].as_array().unwrap();
        let sum = |k: &str| ws.iter().map(|w| w[k].as_u64().unwrap()).sum::<u64>();
        match policy {
            "fork" => assert_eq!(sum("children"), 3, "{st}"),
            // each worker: its serving thread and one loop per CPU, held
            // connections or not
            "event" => {
                let cpus = std::thread::available_parallelism().unwrap().get() as u64;
                assert_eq!(sum("children"), 0, "{st}");
                assert_eq!(sum("threads"), 2 * (1 + cpus), "{st}");
            }
            _ => {
                assert_eq!(sum("children"), 0, "{st}");
                assert!(sum("threads") >= 2 + 3, "{st}");
            }
        }
        assert!(
            sum("pss_kib") > 0 && sum("rss_kib") >= sum("pss_kib"),
            "{st}"
        );
        let m = common::scrape(&common::metrics_addr(&s.srv));
        assert_eq!(m["sockserv_in_flight"], 3.0, "{policy}: metrics");
        assert_eq!(
            m["sockserv_children"],
            sum("children") as f64,
            "{policy}: metrics"
        );
        assert!(
            m["sockserv_threads"] >= sum("threads") as f64 - 2.0,
            "{policy}"
        );
        assert!(m["sockserv_proportional_memory_bytes"] > 0.0, "{policy}");
        let per_worker = m
            .keys()
            .filter(|k| k.starts_with("sockserv_worker_resident_memory_bytes{"))
            .count();
        assert_eq!(per_worker, 2, "{policy}: one memory series per worker");
        drop(held);
        assert_eq!(s.wait_total("in_flight", 0), 0, "{policy}: after close");
    }
}

#[test]
fn a_killed_workers_counts_survive_it_and_it_counts_as_a_restart() {
    let s = Server::start("tcp", &["--policy", "thread", "--workers", "2"]);
    assert!(wait_until(LIMIT, || workers(s.srv.pid()).len() == 2));
    let answered = sockload("tcp", &s.srv.addr, 300);
    assert_eq!(s.wait_total("requests", answered), answered);
    let victim = workers(s.srv.pid())[0];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert_eq!(s.wait_total("worker_restarts", 1), 1);
    assert!(wait_until(LIMIT, || {
        let ws = workers(s.srv.pid());
        ws.len() == 2 && !ws.contains(&victim)
    }));
    assert_eq!(
        s.total("requests"),
        answered,
        "a dead worker's requests were lost"
    );
    // A reload retires workers on purpose: not a restart, counts kept.
    s.srv.signal(libc::SIGHUP);
    assert!(s
        .srv
        .wait_log(LIMIT, |l| l.contains("\"reason\":\"reload\""))
        .is_some());
    let more = sockload("tcp", &s.srv.addr, 100);
    assert_eq!(s.wait_total("requests", answered + more), answered + more);
    assert_eq!(s.total("worker_restarts"), 1);
    let m = common::scrape(&common::metrics_addr(&s.srv));
    assert_eq!(m["sockserv_worker_restarts_total"], 1.0);
    assert_eq!(m["sockserv_requests_total"], (answered + more) as f64);
}

#[test]
fn rejected_clients_and_truncated_datagrams_are_counted() {
    for policy in ["thread", "event"] {
        let s = Server::start("tcp", &["--allow", "10.0.0.0/8", "--policy", policy]);
        let mut c = Conn::connect("tcp", &s.srv.addr).unwrap();
        c.set_timeout(Some(LIMIT));
        let mut buf = [0u8; 8];
        let _ = c.write_all(b"x\n");
        let _ = c.read(&mut buf); // closed unanswered
        assert_eq!(s.wait_total("rejected", 1), 1, "{policy}");
        assert_eq!(s.total("requests"), 0, "{policy}");

        let u = Server::start("udp", &["--max-packet-size", "16", "--policy", policy]);
        let d = Dgram::new("udp", &u.srv.addr);
        d.send(&[b'a'; 100]).unwrap();
        d.send(&[b'a'; 100]).unwrap();
        assert_eq!(u.wait_total("truncated_datagrams", 2), 2, "{policy}");
        assert_eq!(common::dgram_request(&d, b"short", "udp"), b"short");
        assert_eq!(u.wait_total("requests", 1), 1, "{policy}");
        let m = common::scrape(&common::metrics_addr(&s.srv));
        assert_eq!(m["sockserv_rejected_total"], 1.0, "{policy}");
        assert!(m["sockserv_listen_queue_limit"] > 0.0, "TCP has a queue");
        let m = common::scrape(&common::metrics_addr(&u.srv));
        assert_eq!(m["sockserv_truncated_datagrams_total"], 2.0, "{policy}");
        assert!(
            !m.contains_key("sockserv_listen_queue_length"),
            "UDP has none"
        );
    }
}

#[test]
fn a_silent_or_deaf_scraper_does_not_block_and_bad_requests_get_http_errors() {
    let s = Server::start("tcp", &["--workers", "2"]);
    let addr = common::metrics_addr(&s.srv);
    // Connected and silent; sent a request and never read; sent half a
    // request: none of them holds the master's loop.
    let mut held: Vec<std::net::TcpStream> = (0..5)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    let mut deaf = std::net::TcpStream::connect(&addr).unwrap();
    deaf.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut half = std::net::TcpStream::connect(&addr).unwrap();
    half.write_all(b"GET /metr").unwrap();
    held.extend([deaf, half]);
    let started = std::time::Instant::now();
    assert_eq!(s.status()["pid"], s.srv.pid());
    let m = common::scrape(&addr);
    assert_eq!(m["sockserv_workers"], 2.0);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "status and a scrape took {:?} beside stuck scrapers",
        started.elapsed()
    );
    let (code, head, body) = common::http(&addr, b"GET /metrics HTTP/1.0\r\n\r\n");
    assert_eq!(code, 200);
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        body.contains("# TYPE sockserv_requests_total counter"),
        "{body}"
    );
    for (req, want) in [
        (&b"POST /metrics HTTP/1.1\r\n\r\n"[..], 405),
        (b"GET /other HTTP/1.1\r\n\r\n", 404),
        (b"\x16\x03\x01 not http\r\n\r\n", 400),
    ] {
        let (code, _, body) = common::http(&addr, req);
        assert_eq!(code, want, "{req:?}: {body}");
        assert!(!body.is_empty(), "an error says why");
    }
    // A scraper that sent half a request is answered 400 when it gives up.
    let mut cut = std::net::TcpStream::connect(&addr).unwrap();
    cut.write_all(b"GET /metrics HTT").unwrap();
    cut.shutdown(std::net::Shutdown::Write).unwrap();
    cut.set_read_timeout(Some(LIMIT)).unwrap();
    let mut reply = String::new();
    cut.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 400 "), "{reply}");
    drop(held);
}

#[test]
fn metrics_refuse_a_port_in_use_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(common::sockserv_bin())
        .args(["--listen", "127.0.0.1:0", "--metrics", &addr])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&addr) && err.contains("in use"), "{err}");
    let out = Command::new(common::sockserv_bin())
        .args(["--listen", "127.0.0.1:0", "--metrics", "localhost:9100"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--metrics") && err.contains("HOST:PORT"),
        "{err}"
    );
}

#[test]
fn a_silent_control_client_does_not_block_status_and_nonsense_gets_an_error() {
    let s = Server::start("unix", &["--workers", "2"]);
    let mode = std::fs::metadata(&s.control).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let _silent: Vec<UnixStream> = (0..5)
        .map(|_| UnixStream::connect(&s.control).unwrap())
        .collect();
    let st = s.status();
    assert_eq!(st["format_version"], 1);
    assert_eq!(st["pid"], s.srv.pid());
    assert_eq!(st["transport"], "unix");
    assert!(st["listen_queue"].is_null());
    assert_eq!(
        st["master"]["threads"], 1,
        "a forking master is single-threaded"
    );
    assert!(st["master"]["pss_kib"].as_u64().unwrap() > 0, "{st}");

    let mut c = UnixStream::connect(&s.control).unwrap();
    c.set_read_timeout(Some(LIMIT)).unwrap();
    c.write_all(b"gimme\n").unwrap();
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    assert!(
        reply.contains("\"error\"") && reply.contains("gimme"),
        "{reply}"
    );
    // The human scoreboard names what it shows.
    let out = Command::new(common::sockserv_bin())
        .args(["status", "--control", s.control.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("2 workers") && text.contains("totals:"),
        "{text}"
    );
    let control = s.control.clone();
    drop(s);
    assert!(!control.exists(), "control socket left behind");
}

#[test]
fn status_without_a_server_names_the_socket_and_exits_1() {
    let out = Command::new(common::sockserv_bin())
        .args(["status", "--control", "/nonexistent/control.sock"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/control.sock") && err.contains("No such file"),
        "{err}"
    );
}

#[test]
fn without_a_supervisor_status_counts_too_and_the_stop_line_is_right() {
    for policy in ["fork", "thread", "sync", "event"] {
        let s = Server::start("tcp", &["--policy", policy, "--no-supervisor"]);
        let answered = sockload("tcp", &s.srv.addr, 300);
        assert_eq!(s.wait_total("requests", answered), answered, "{policy}");
        let st = s.status();
        assert_eq!(st["pid"], s.srv.pid(), "{policy}");
        assert_eq!(st["workers"][0]["pid"], s.srv.pid(), "{policy}");
        assert!(st["master"].is_null(), "{policy}: no master: {st}");
        assert_eq!(st["addr"], s.srv.addr.as_str(), "{policy}");
        assert!(
            st["listen_queue"]["limit"].as_u64().unwrap() > 0,
            "{policy}: {st}"
        );
        let m = common::scrape(&common::metrics_addr(&s.srv));
        assert_eq!(m["sockserv_requests_total"], answered as f64, "{policy}");
        let srv = s.srv;
        srv.signal(libc::SIGTERM);
        let stopped = srv
            .wait_log(LIMIT, |l| l.contains("\"msg\":\"stopped\""))
            .unwrap_or_else(|| panic!("{policy}: no stopped line"));
        assert_eq!(
            common::json_field(&stopped, "requests").as_deref(),
            Some(answered.to_string().as_str()),
            "{policy}: {stopped}"
        );
    }
}

#[test]
fn sockload_warm_up_and_measured_replies_add_up_to_what_the_server_counted() {
    let s = Server::start("tcp", &["--policy", "thread", "--workers", "2"]);
    assert!(wait_until(LIMIT, || workers(s.srv.pid()).len() == 2));
    let out = Command::new(env!("CARGO_BIN_EXE_sockload"))
        .args(["--connect", &s.srv.addr, "--connections", "4"])
        .args(["--duration", "0.6", "--warmup", "0.3", "--json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("sockload: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    let (warm, measured) = (
        v["warmup_ok"].as_u64().unwrap(),
        v["requests_ok"].as_u64().unwrap(),
    );
    assert!(warm > 0 && measured > 0, "{v}");
    assert_eq!(v["errors_total"], 0, "{v}");
    assert_eq!(
        s.wait_total("requests", warm + measured),
        warm + measured,
        "the server counted other than the client's warm-up + measured replies"
    );
}
