//! Bad bytes from the network, per built-in line service and policy:
//! random bytes, NUL bytes, a 1 MiB line without a newline and a
//! half-closed connection each get an answer or an error, never a crash;
//! the server keeps serving and its memory stays bounded.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use common::{descendants, start_policy, Sockserv};

const LIMIT: Duration = Duration::from_secs(10);
const SERVICES: [&str; 6] = ["echo", "upper", "time", "discard", "delay", "cpu"];

/// Sends `data`, closes the sending side, and reads everything the server
/// answers until it closes (a reader thread drains meanwhile, so a server
/// writing replies never blocks on us). Write errors are the server
/// closing early, which is allowed.
fn exchange(addr: &str, data: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.set_write_timeout(Some(LIMIT)).unwrap();
    let mut r = s.try_clone().unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let _ = r.read_to_end(&mut got);
        got
    });
    let _ = s.write_all(data);
    let _ = s.shutdown(Shutdown::Write);
    reader.join().unwrap()
}

/// What `service` answers to "probe\n", if it answers.
fn probe_ok(service: &str, got: &[u8]) -> bool {
    match service {
        "echo" | "delay" | "cpu" => got == b"probe\n",
        "upper" => got == b"PROBE\n",
        "time" => got.ends_with(b"\n"), // "probe" as a strftime format
        _ => got.is_empty(),
    }
}

/// Resident memory of the server's whole tree, KiB.
fn tree_rss_kib(root: i32) -> u64 {
    std::iter::once(root)
        .chain(descendants(root))
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

/// A deterministic stream of arbitrary bytes, newlines among them.
fn random_bytes(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn abuse(srv: &Sockserv, service: &str, what: &str) {
    let addr = &srv.addr;
    // Random bytes: answered or refused line by line; nothing breaks.
    let _ = exchange(addr, &random_bytes(32 * 1024));
    // NUL bytes are bytes like any other.
    let got = exchange(addr, b"a\0b\n");
    match service {
        "echo" | "delay" | "cpu" => assert_eq!(got, b"a\0b\n", "{what}: NUL"),
        "upper" => assert_eq!(got, b"A\0B\n", "{what}: NUL"),
        _ => {}
    }
    // A 1 MiB line without a newline: a line service answers an error and
    // lets go; a byte-stream one (echo, upper, discard, delay, cpu answer
    // each read as it comes) streams it back in bounded memory.
    let line = vec![b'x'; 1 << 20];
    let got = exchange(addr, &line);
    let text = String::from_utf8_lossy(&got);
    let streamed = match service {
        "echo" | "delay" | "cpu" => got == line,
        "upper" => got.len() == line.len() && got.iter().all(|&b| b == b'X'),
        "discard" => got.is_empty(),
        _ => false,
    };
    assert!(
        streamed || text.contains("error: line longer than 4096 bytes"),
        "{what}: 1 MiB line answered {} bytes: {:?}",
        got.len(),
        &text[..text.len().min(120)]
    );
    // Half-closed: the request is answered and the connection ends.
    let got = exchange(addr, b"probe\n");
    assert!(probe_ok(service, &got), "{what}: half-closed got {got:?}");
    // Still serving, in bounded memory.
    assert!(srv.is_running(), "{what}: the server died");
    let rss = tree_rss_kib(srv.pid());
    assert!(
        rss < 64 * 1024,
        "{what}: {rss} KiB resident after the abuse"
    );
}

#[test]
fn every_line_service_survives_bad_bytes_under_thread_fork_and_event() {
    for policy in ["thread", "fork", "event"] {
        for service in SERVICES {
            let extra = [
                "--service",
                service,
                "--no-supervisor",
                "--delay-ms",
                "1",
                "--cpu-rounds",
                "10",
            ];
            let (srv, _dir) = start_policy(policy, "tcp", &extra);
            abuse(&srv, service, &format!("{service}/{policy}"));
        }
    }
}
