//! sockload's event-driven engine: many connections over few threads, the
//! open-file limit, the back-off against a closed port, timeouts, the open
//! loop's schedule, and the report's added fields.

mod common;

use std::net::{TcpListener, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::Sockserv;
use serde_json::Value;

const SOCKLOAD: &str = env!("CARGO_BIN_EXE_sockload");

/// Runs `WRAPPER... sockload ARGS` (ARGS split at whitespace), with a
/// deadline (the child is killed past it).
fn run(wrapper: &[&str], args: &str) -> Output {
    let mut cmd = match wrapper.split_first() {
        Some((prog, rest)) => {
            let mut c = Command::new(prog);
            c.args(rest).arg(SOCKLOAD);
            c
        }
        None => Command::new(SOCKLOAD),
    };
    let child = cmd
        .args(args.split_whitespace())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sockload");
    finish(child)
}

/// Waits for `child` for at most 30 s, then kills it by pid; returns its output.
fn finish(mut child: Child) -> Output {
    let pid = child.id() as i32;
    let done = common::wait_until(Duration::from_secs(30), || {
        matches!(common::proc_state(pid), Some('Z') | None)
    });
    if !done {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("wait for sockload");
    assert!(done, "sockload did not finish in 30 s");
    out
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The `--json` report of a run that must exit 0.
fn json_ok(out: &Output) -> Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    json(out)
}

fn echo_server() -> Sockserv {
    Sockserv::start(&[
        "--no-supervisor",
        "--listen",
        "127.0.0.1:0",
        "--policy",
        "thread",
    ])
}

/// A TCP port nothing listens on.
fn closed_port() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[test]
fn a_thousand_connections_share_two_threads_and_every_request_is_counted() {
    let srv = echo_server();
    let out = run(
        &[],
        &format!(
            "--connect {} --connections 1000 --threads 2 --requests 5000 --warmup 0 --json",
            srv.addr
        ),
    );
    let j = json_ok(&out);
    assert_eq!(j["requests_ok"], 5000);
    assert_eq!(j["errors_total"], 0);
    assert_eq!(j["config"]["threads"], 2);
    assert_eq!(j["config"]["connections"], 1000);
    assert_eq!(j["bytes_sent"], 5000 * 64);
    assert_eq!(j["bytes_received"], 5000 * 64);
}

#[test]
fn threads_are_capped_at_the_connections() {
    let srv = echo_server();
    let out = run(
        &[],
        &format!(
            "--connect {} -c 2 --threads 8 -n 100 --warmup 0 --json",
            srv.addr
        ),
    );
    let j = json(&out);
    assert_eq!(j["config"]["threads"], 2);
    assert_eq!(j["requests_ok"], 100);
}

#[test]
fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
    let srv = echo_server();
    // 600 connections need about 640 descriptors; the soft limit is 256.
    let out = run(
        &["prlimit", "--nofile=256:2048"],
        &format!(
            "--connect {} -c 600 --threads 2 -n 1200 --warmup 0 --json",
            srv.addr
        ),
    );
    assert_eq!(json_ok(&out)["requests_ok"], 1200);
}

#[test]
fn too_low_a_hard_limit_exits_2_naming_the_limit_and_the_need() {
    let out = run(
        &["prlimit", "--nofile=512:1024"],
        "--connect 127.0.0.1:9 -c 100000 --threads 2",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("RLIMIT_NOFILE") && err.contains("1024") && err.contains("100036"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn a_closed_port_is_retried_with_back_off_at_little_cpu() {
    let addr = closed_port();
    let child = Command::new(SOCKLOAD)
        .args(["--connect", &addr])
        .args("-c 200 --threads 2 -d 2s --warmup 0 --json".split_whitespace())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    // The CPU it used, read from its zombie before it is reaped.
    assert!(common::wait_until(Duration::from_secs(30), || {
        common::proc_state(pid) == Some('Z')
    }));
    let ticks = common::cpu_ticks(pid);
    let out = finish(child);
    assert_eq!(out.status.code(), Some(1));
    let j = json(&out);
    let refused = j["errors"]["refused"].as_u64().unwrap();
    // A back-off from 1 ms doubling to 1 s: about 11 attempts per connection
    // in 2 s, not the tens of thousands a retry loop makes.
    assert!(refused >= 200, "{j}");
    assert!(refused <= 200 * 14, "refused {refused}: not backing off");
    assert_eq!(j["requests_ok"], 0);
    assert!(j["error_samples"]["refused"]
        .as_str()
        .unwrap()
        .contains("Connection refused"));
    // 2 s at well under 0.5 CPU-s per second (clock ticks are 1/100 s).
    assert!(
        ticks < 50,
        "{ticks} ticks of CPU in 2 s against a closed port"
    );
}

#[test]
fn a_server_that_never_replies_times_out_each_request() {
    // Accepts (the kernel's backlog does) but never reads or replies.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let out = run(
        &[],
        &format!("--connect {addr} -c 2 -n 4 --warmup 0 --timeout 200ms --json"),
    );
    assert_eq!(out.status.code(), Some(1));
    let j = json(&out);
    assert_eq!(j["errors"]["timeout"], 4, "{j}");
    let sample = j["error_samples"]["timeout"].as_str().unwrap();
    assert_eq!(
        sample,
        format!("receive from {addr}: timed out after 200ms")
    );
    drop(silent);

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = udp.local_addr().unwrap().to_string();
    let out = run(
        &[],
        &format!("--transport udp --connect {addr} -c 3 -n 3 --warmup 0 --timeout 150ms --json"),
    );
    assert_eq!(json(&out)["errors"]["timeout"], 3);
}

#[test]
fn open_loop_keeps_its_rate_and_schedule() {
    let srv = echo_server();
    let out = run(
        &[],
        &format!(
            "--connect {} -c 20 --threads 2 --rate 2000 -d 1s --warmup 200ms --json",
            srv.addr
        ),
    );
    let j = json(&out);
    assert_eq!(j["loop"], "open");
    let total = j["requests_total"].as_u64().unwrap();
    // 2,000 intended send times fall in the measured second, and none is
    // sent twice; a stall of a loaded machine near the end can lose a few
    // (a duration run sends nothing after its end), never add any.
    assert!(
        (1600..=2000).contains(&total),
        "{total} requests at --rate 2000 for 1 s"
    );
    let corrected = j["corrected"]["p50_us"].as_u64().unwrap();
    let uncorrected = j["uncorrected"]["p50_us"].as_u64().unwrap();
    assert!(corrected >= uncorrected, "{j}");
}

#[test]
fn reports_carry_the_start_the_version_and_a_readable_spectrum() {
    let srv = echo_server();
    let out = run(
        &[],
        &format!("--connect {} -n 1500 --warmup 0 --json", srv.addr),
    );
    let j = json(&out);
    assert_eq!(j["sockload_version"], env!("CARGO_PKG_VERSION"));
    let started = j["started_at"].as_str().unwrap();
    // 2026-12-01T10:34:04.123Z
    let shape: String = started
        .chars()
        .map(|c| if c.is_ascii_digit() { '9' } else { c })
        .collect();
    assert_eq!(shape, "9999-99-99T99:99:99.999Z", "{started}");
    let year: u32 = started[..4].parse().unwrap();
    assert!(year >= 2024, "{started}");
    let l = &j["latency"];
    let p = |k: &str| l[k].as_u64().unwrap();
    assert!(p("p50_us") <= p("p75_us") && p("p75_us") <= p("p90_us"));
    assert!(p("p999_us") <= p("p9999_us") && p("p9999_us") <= p("max_us"));

    let out = run(
        &[],
        &format!("--connect {} -n 1500 --warmup 0 --latency", srv.addr),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("1,500 ok, 0 errors"), "{text}");
    assert!(text.contains("transfer") && text.contains("KiB"), "{text}");
    for pct in [
        "50.000%", "75.000%", "90.000%", "99.000%", "99.900%", "99.990%", "100.000%",
    ] {
        assert!(text.contains(pct), "{pct} missing:\n{text}");
    }
    assert!(text.contains("Detailed percentile spectrum"), "{text}");
    assert!(text.contains("Total count    =         1500"), "{text}");
}

#[test]
fn every_transport_runs_on_the_engine_in_both_modes() {
    for transport in ["tcp", "unix", "udp", "unix-dgram"] {
        let (listen, _dir) = common::listen_for(transport);
        let srv = Sockserv::start(&[
            "--no-supervisor",
            "--transport",
            transport,
            "--listen",
            &listen,
            "--policy",
            "thread",
        ]);
        for mode in ["persistent", "connect"] {
            let out = run(
                &[],
                &format!(
                    "--transport {transport} --connect {} --mode {mode} -c 6 --threads 2 -n 300 --warmup 0 --json",
                    srv.addr
                ),
            );
            let j = json(&out);
            assert_eq!(j["requests_ok"], 300, "{transport} {mode}: {j}");
            assert_eq!(j["config"]["threads"], 2);
        }
    }
}
