//! Bad datagrams, per built-in service, policy and datagram transport (UDP
//! and Unix datagram): random bytes, NUL bytes, oversized datagrams
//! (65,000 bytes against `--max-packet-size 8192`: dropped, never served
//! cut, and counted) and a flood from a client that never reads. The
//! server keeps answering a normal client, counts what it dropped, and its
//! memory stays bounded.
//!
//! One test per policy (they run in parallel), each over both transports
//! and every service (a thread per service).

mod common;

use std::time::{Duration, Instant};

use common::{
    metrics_addr, random_bytes, recv_within, scrape, start_policy, tree_rss_kib, Dgram, Sockserv,
};

const SERVICES: [&str; 6] = ["echo", "upper", "time", "discard", "delay", "cpu"];
const DATAGRAMS: [&str; 2] = ["udp", "unix-dgram"];
const OVERSIZED: usize = 65_000;
const GROWTH_KIB: u64 = 16 * 1024;

/// What `service` answers to `probe`, if it answers.
fn probe_reply(service: &str) -> Option<&'static [u8]> {
    match service {
        "echo" | "delay" | "cpu" | "time" => Some(b"probe"),
        "upper" => Some(b"PROBE"),
        _ => None,
    }
}

/// Asks `probe` until the right reply comes (a datagram may be lost while
/// the server's queue is full), within 10 s.
fn answered(d: &Dgram, service: &str, what: &str) {
    let Some(want) = probe_reply(service) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        d.send(b"probe")
            .unwrap_or_else(|e| panic!("{what}: send: {e}"));
        while let Some(reply) = recv_within(d, Duration::from_millis(300)) {
            if reply == want {
                return;
            }
        }
    }
    panic!("{what}: a normal client got no answer to probe");
}

/// The server's counter `name` (from its metrics), once it reaches `want`
/// or after `secs` seconds.
fn counter(srv: &Sockserv, name: &str, want: f64, secs: u64) -> f64 {
    let addr = metrics_addr(srv);
    let mut last = 0.0;
    common::wait_until(Duration::from_secs(secs), || {
        last = scrape(&addr).get(name).copied().unwrap_or(0.0);
        last >= want
    });
    last
}

fn abuse(policy: &str, transport: &str, service: &str) {
    let what = format!("{service}/{policy}/{transport}");
    let (srv, _dir) = start_policy(
        policy,
        transport,
        &[
            "--service",
            service,
            "--no-supervisor",
            "--delay-ms",
            "1",
            "--cpu-rounds",
            "10",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let before = tree_rss_kib(srv.pid());
    // Random datagrams of assorted sizes: each answered or refused alone.
    let noisy = Dgram::new(transport, &srv.addr);
    let bytes = random_bytes(7, 64 * 1024);
    let mut rest = &bytes[..];
    for i in 0.. {
        let n = (1 + i * 389 % 1500).min(rest.len());
        if n == 0 {
            break;
        }
        let _ = noisy.send(&rest[..n]);
        rest = &rest[n..];
    }
    let normal = Dgram::new(transport, &srv.addr);
    answered(&normal, service, &format!("{what}: after random bytes"));
    // NUL bytes are bytes like any other.
    if let Some(want) = probe_reply(service) {
        let got = common::dgram_request(&normal, b"a\0b", &what);
        let want: &[u8] = if want == b"PROBE" { b"A\0B" } else { b"a\0b" };
        assert_eq!(got, want, "{what}: NUL");
    }
    // Oversized: dropped unanswered, counted once each, never served cut.
    // (One at a time, sent again if the kernel dropped it on a queue still
    // full of random ones: discard's noise is not drained by any answer.)
    let big = Dgram::new(transport, &srv.addr);
    for i in 1..=3 {
        let counted = (0..5).any(|_| {
            big.send(&vec![b'x'; OVERSIZED])
                .unwrap_or_else(|e| panic!("{what}: send {OVERSIZED} bytes: {e}"));
            counter(&srv, "sockserv_truncated_datagrams_total", i as f64, 2) >= i as f64
        });
        assert!(counted, "{what}: oversized datagram {i} never counted");
    }
    let truncated = counter(&srv, "sockserv_truncated_datagrams_total", 3.0, 1);
    assert_eq!(truncated, 3.0, "{what}: oversized datagrams counted");
    assert_eq!(
        recv_within(&big, Duration::from_millis(100)),
        None,
        "{what}: an oversized datagram was answered"
    );
    // A flood from a client that never reads its replies.
    let flood = Dgram::new(transport, &srv.addr);
    for i in 0..3000u32 {
        if flood.send(format!("flood {i}").as_bytes()).is_err() {
            break; // a full Unix datagram queue refuses more: flooded enough
        }
    }
    answered(&normal, service, &format!("{what}: after a flood"));
    assert!(srv.is_running(), "{what}: the server died");
    let after = tree_rss_kib(srv.pid());
    assert!(
        after < before + GROWTH_KIB,
        "{what}: {before} KiB resident before the abuse, {after} KiB after"
    );
}

/// `time` can be asked for a reply far longer than its request: over UDP
/// it may exceed what one datagram carries, and must then get an error
/// reply rather than none.
fn long_time_reply(policy: &str, transport: &str) {
    let what = format!("time/{policy}/{transport}");
    let (srv, _dir) = start_policy(policy, transport, &["--service", "time", "--no-supervisor"]);
    let d = Dgram::new(transport, &srv.addr);
    let got = common::dgram_request(&d, "%c".repeat(4000).as_bytes(), &what);
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("error: ") || got.len() > 4000,
        "{what}: {} bytes: {:?}",
        got.len(),
        &text[..text.len().min(100)]
    );
    assert_eq!(
        common::dgram_request(&d, b"probe", &what),
        b"probe",
        "{what}"
    );
}

/// Every service over both transports, each service on its own thread
/// (its own servers) so a policy's test takes seconds.
fn every_transport_and_service(policy: &'static str) {
    let cases: Vec<_> = SERVICES
        .into_iter()
        .map(|service| {
            std::thread::spawn(move || {
                for transport in DATAGRAMS {
                    abuse(policy, transport, service);
                }
            })
        })
        .collect();
    for transport in DATAGRAMS {
        long_time_reply(policy, transport);
    }
    common::join_all(cases);
}

macro_rules! per_policy {
    ($($policy:ident),*) => {
        $(mod $policy {
            #[test]
            fn every_service_survives_bad_datagrams_over_udp_and_unix() {
                super::every_transport_and_service(stringify!($policy));
            }
        })*
    };
}

per_policy!(sync, fork, thread, pool, event);
