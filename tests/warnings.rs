//! WARN lines a sysadmin must act on, each naming the flag to change, and
//! rate-limited: a flood of 10,000 oversized datagrams writes a bounded
//! number of log lines while every datagram is still counted.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::{json_field, temp_socket, wait_until, Conn, Sockserv};

const LIMIT: Duration = Duration::from_secs(10);

#[test]
fn a_flood_of_oversized_datagrams_logs_a_bounded_number_of_lines() {
    let (_dir, path) = temp_socket("flood.sock");
    let (_cdir, control) = temp_socket("control.sock");
    let server = Sockserv::start(&[
        "--transport",
        "unix-dgram",
        "--listen",
        path.to_str().unwrap(),
        "--no-supervisor",
        "--policy",
        "sync",
        "--max-packet-size",
        "64",
        "--control",
        control.to_str().unwrap(),
    ]);
    let client = UnixDatagram::unbound().unwrap();
    let big = [b'x'; 200];
    for _ in 0..10_000 {
        // A Unix datagram socket blocks when the server's queue is full:
        // none is lost, so the server must see all 10,000.
        client.send_to(&big, &path).unwrap();
    }
    let truncated = || {
        let out = std::process::Command::new(common::sockserv_bin())
            .args(["status", "--json", "--control", control.to_str().unwrap()])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["totals"]["truncated_datagrams"].as_u64().unwrap()
    };
    assert!(
        wait_until(LIMIT, || truncated() == 10_000),
        "{}",
        truncated()
    );
    let lines = server.log_text();
    let warned: Vec<&str> = lines
        .lines()
        .filter(|l| l.contains("datagram too large"))
        .collect();
    assert!(
        (1..=2).contains(&warned.len()),
        "{} warning lines for 10,000 datagrams",
        warned.len()
    );
    assert!(warned[0].contains("--max-packet-size"), "{}", warned[0]);
}

#[test]
fn fork_at_max_children_warns_once_naming_the_flag() {
    let server = Sockserv::start(&[
        "--listen",
        "127.0.0.1:0",
        "--no-supervisor",
        "--policy",
        "fork",
        "--max-children",
        "2",
    ]);
    let mut held = Vec::new();
    for i in 0..2 {
        let mut c = Conn::connect("tcp", &server.addr).unwrap();
        c.set_timeout(Some(LIMIT));
        let m = format!("{i}\n");
        assert_eq!(c.request(m.as_bytes(), m.len()).unwrap(), m.as_bytes());
        held.push(c);
    }
    let _waiting = Conn::connect("tcp", &server.addr).unwrap();
    let line = server
        .wait_log(LIMIT, |l| l.contains("saturated"))
        .unwrap_or_else(|| panic!("no saturation warning:\n{}", server.log_text()));
    assert_eq!(json_field(&line, "level").as_deref(), Some("WARN"));
    assert_eq!(
        json_field(&line, "raise").as_deref(),
        Some("--max-children")
    );
}

#[test]
fn a_fork_child_killed_by_a_signal_is_named_in_a_warning() {
    let server = Sockserv::start(&[
        "--listen",
        "127.0.0.1:0",
        "--no-supervisor",
        "--policy",
        "fork",
        "--abort-on",
        "boom",
    ]);
    for _ in 0..20 {
        let mut c = Conn::connect("tcp", &server.addr).unwrap();
        c.set_timeout(Some(LIMIT));
        let _ = c.request(b"boom\n", 5);
    }
    let line = server
        .wait_log(LIMIT, |l| l.contains("child killed by a signal"))
        .unwrap_or_else(|| panic!("no warning:\n{}", server.log_text()));
    assert_eq!(
        json_field(&line, "signal").as_deref(),
        Some("SIGABRT"),
        "{line}"
    );
    let n = server
        .log_text()
        .lines()
        .filter(|l| l.contains("child killed by a signal"))
        .count();
    assert!(n <= 2, "{n} lines for 20 crashes");
    let mut ok = Conn::connect("tcp", &server.addr).unwrap();
    assert_eq!(ok.request(b"fine\n", 5).unwrap(), b"fine\n");
}
