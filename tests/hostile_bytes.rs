//! Bad bytes from the network, per built-in line service, policy and
//! stream transport: random bytes, NUL bytes, a 1 MiB line without a
//! newline and a half-closed connection each get an answer or an error,
//! never a crash; the server keeps serving a normal client and its memory
//! stays bounded. A client that never reads its replies is closed by the
//! write timeout (event: at its output bound) while others are served.
//!
//! One test per policy (they run in parallel), each over TCP and Unix
//! stream and every service.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{
    random_bytes, start_policy, tree_private_dirty_kib, tree_rss_kib, Conn, PeakMemory, Sockserv,
};

const LIMIT: Duration = Duration::from_secs(10);
const SERVICES: [&str; 6] = ["echo", "upper", "time", "discard", "delay", "cpu"];
const STREAMS: [&str; 2] = ["tcp", "unix"];

/// How much the server's tree may grow over the abuse: generous (a thread's
/// stack, allocator slack), far below what holding a 1 MiB line per
/// connection would cost.
const GROWTH_KIB: u64 = 16 * 1024;

/// 1 MiB lines sent at once, and what they may cost the server at their
/// peak: half of what holding them would (measured: under 0.5 MiB).
const LINES: usize = 8;
const BURST_KIB: u64 = 4 * 1024;

/// The serving process's own resident memory, KiB.
fn own_rss(srv: &Sockserv) -> u64 {
    common::proc_kib(srv.pid(), "status", "VmRSS:")
}

/// Sends `data`, closes the sending side, and reads everything the server
/// answers until it closes (a reader thread drains meanwhile, so a server
/// writing replies never blocks on us). Write errors are the server
/// closing early, which is allowed.
fn exchange(transport: &str, addr: &str, data: &[u8]) -> Vec<u8> {
    let mut s = Conn::connect(transport, addr).unwrap();
    s.set_timeout(Some(LIMIT));
    s.set_write_timeout(Some(LIMIT));
    let mut r = s.try_clone().unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let _ = r.read_to_end(&mut got);
        got
    });
    let _ = s.write_all(data);
    let _ = s.shutdown_write();
    reader.join().unwrap()
}

/// What `service` answers to "probe\n", if it answers.
fn probe_ok(service: &str, got: &[u8]) -> bool {
    match service {
        "echo" | "delay" | "cpu" => got == b"probe\n",
        "upper" => got == b"PROBE\n",
        "time" => got == b"probe\n", // no strftime specifier: the text itself
        _ => got.is_empty(),
    }
}

fn server(policy: &str, transport: &str, service: &str) -> (Sockserv, Option<tempfile::TempDir>) {
    let extra = [
        "--service",
        service,
        "--no-supervisor",
        "--delay-ms",
        "1",
        "--cpu-rounds",
        "10",
    ];
    start_policy(policy, transport, &extra)
}

fn abuse(policy: &str, transport: &str, service: &str) {
    let what = format!("{service}/{policy}/{transport}");
    let (srv, _dir) = server(policy, transport, service);
    let addr = &srv.addr;
    let before = tree_rss_kib(srv.pid());
    // Random bytes: answered or refused line by line; nothing breaks.
    let _ = exchange(transport, addr, &random_bytes(1, 32 * 1024));
    // NUL bytes are bytes like any other.
    let got = exchange(transport, addr, b"a\0b\n");
    match service {
        "echo" | "delay" | "cpu" | "time" => assert_eq!(got, b"a\0b\n", "{what}: NUL"),
        "upper" => assert_eq!(got, b"A\0B\n", "{what}: NUL"),
        _ => assert!(got.is_empty(), "{what}: NUL"),
    }
    // 1 MiB lines without a newline, on several connections at once: a
    // line service answers an error and lets go; a byte-stream one (echo,
    // upper, discard, delay, cpu answer each read as it comes) streams it
    // back. Either way in bounded memory: holding the lines would cost
    // 8 MiB.
    let (dirty, rss) = (tree_private_dirty_kib(srv.pid()), own_rss(&srv));
    let peak = PeakMemory::start(srv.pid());
    let lines: Vec<_> = (0..LINES)
        .map(|_| {
            let (t, a) = (transport.to_string(), addr.clone());
            std::thread::spawn(move || exchange(&t, &a, &[b'x'; 1 << 20]))
        })
        .collect();
    for l in lines {
        let got = l.join().unwrap();
        let text = String::from_utf8_lossy(&got);
        let ok = match service {
            "echo" | "delay" | "cpu" => got.len() == 1 << 20 && got.iter().all(|&b| b == b'x'),
            "upper" => got.len() == 1 << 20 && got.iter().all(|&b| b == b'X'),
            "discard" => got.is_empty(),
            _ => got == b"error: line longer than 4096 bytes\n",
        };
        assert!(
            ok,
            "{what}: 1 MiB line answered {} bytes: {:?}",
            got.len(),
            &text[..text.len().min(120)]
        );
    }
    let peak = peak.stop();
    assert!(
        peak < dirty + BURST_KIB,
        "{what}: {LINES} 1 MiB lines: private memory {dirty} KiB before, peak {peak} KiB"
    );
    let hwm = common::proc_kib(srv.pid(), "status", "VmHWM:");
    assert!(
        hwm < rss + BURST_KIB,
        "{what}: {LINES} 1 MiB lines: resident {rss} KiB before, peak {hwm} KiB"
    );
    // Half-closed: the request is answered and the connection ends.
    let got = exchange(transport, addr, b"probe\n");
    assert!(probe_ok(service, &got), "{what}: half-closed got {got:?}");
    // A normal client on a connection of its own is answered.
    if service != "discard" {
        let mut c = Conn::connect(transport, addr).unwrap();
        c.write_all(b"probe\n").unwrap();
        let mut got = vec![0u8; 6];
        c.read_exact(&mut got)
            .unwrap_or_else(|e| panic!("{what}: normal client: {e}"));
        assert!(probe_ok(service, &got), "{what}: normal client got {got:?}");
    }
    // Still serving, in bounded memory.
    assert!(srv.is_running(), "{what}: the server died");
    let after = tree_rss_kib(srv.pid());
    assert!(
        after < before + GROWTH_KIB,
        "{what}: {before} KiB resident before the abuse, {after} KiB after"
    );
}

/// A client that sends and never reads what comes back: once its socket
/// buffers fill, the server's write times out (`--idle-timeout 1`) or,
/// under event, its output passes the bound, and it is closed; meanwhile a
/// normal client is answered (under sync, once the deaf one is closed).
fn deaf_client(policy: &str, transport: &str, service: &str) {
    let what = format!("{service}/{policy}/{transport}");
    let (srv, _dir) = start_policy(
        policy,
        transport,
        &[
            "--service",
            service,
            "--no-supervisor",
            "--idle-timeout",
            "1",
        ],
    );
    let deaf = Conn::connect(transport, &srv.addr).unwrap();
    deaf.set_write_timeout(Some(LIMIT));
    let started = Instant::now();
    let writer = std::thread::spawn(move || {
        let mut deaf = deaf;
        // Lines that each get a reply (for time, the text itself).
        let chunk = b"never read this reply\n".repeat(3000);
        let mut sent = 0usize;
        loop {
            match deaf.write(&chunk) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return (sent, e),
            }
            if sent > 1 << 30 {
                return (sent, std::io::Error::other("the server read 1 GiB"));
            }
        }
    });
    let mut c = Conn::connect(transport, &srv.addr).unwrap();
    c.set_timeout(Some(LIMIT));
    let asked = Instant::now();
    let got = c
        .request(b"probe\n", 6)
        .unwrap_or_else(|e| panic!("{what}: normal client next to a deaf one: {e}"));
    assert!(probe_ok(service, &got), "{what}: normal client got {got:?}");
    let waited = asked.elapsed();
    let bound = match policy {
        "sync" => Duration::from_secs(6), // served after the deaf one
        _ => Duration::from_secs(2),
    };
    assert!(waited < bound, "{what}: a normal client waited {waited:?}");
    let (sent, err) = writer.join().unwrap();
    let took = started.elapsed();
    assert!(
        !matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock
                | std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::Other
        ),
        "{what}: the deaf client was not closed ({sent} bytes sent in {took:?}): {err}"
    );
    assert!(
        took < Duration::from_secs(8),
        "{what}: the deaf client was closed only after {took:?}"
    );
    assert!(srv.is_running(), "{what}: the server died");
}

fn every_transport_and_service(policy: &str) {
    for transport in STREAMS {
        for service in SERVICES {
            abuse(policy, transport, service);
        }
    }
}

/// The deaf clients of one policy, each case on its own server at once.
fn deaf_clients(policy: &'static str) {
    let cases: Vec<_> = STREAMS
        .into_iter()
        .flat_map(|t| ["echo", "time"].map(|s| (t, s)))
        .map(|(t, s)| std::thread::spawn(move || deaf_client(policy, t, s)))
        .collect();
    common::join_all(cases);
}

macro_rules! per_policy {
    ($($policy:ident),*) => {
        $(mod $policy {
            #[test]
            fn every_service_survives_bad_bytes_over_tcp_and_unix() {
                super::every_transport_and_service(stringify!($policy));
            }

            #[test]
            fn a_client_that_never_reads_is_closed_and_others_are_served() {
                super::deaf_clients(stringify!($policy));
            }
        })*
    };
}

per_policy!(sync, fork, thread, pool, event);
