//! `--policy thread --max-threads N`: at N request threads accepting waits
//! (the kernel backlog holds the next client), the saturation is logged
//! naming the flag, the process never runs more than N request threads,
//! and the waiting client is served as soon as a thread finishes.

mod common;

use std::time::Duration;

use common::{json_field, thread_count, Conn, Sockserv};

const LIMIT: Duration = Duration::from_secs(10);

#[test]
fn at_max_threads_accepting_waits_and_resumes_when_a_thread_finishes() {
    let server = Sockserv::start(&[
        "--listen",
        "127.0.0.1:0",
        "--no-supervisor",
        "--policy",
        "thread",
        "--max-threads",
        "3",
    ]);
    let base = thread_count(server.pid());
    let mut held = Vec::new();
    for i in 0..3 {
        let mut c = Conn::connect("tcp", &server.addr).unwrap();
        c.set_timeout(Some(LIMIT));
        let m = format!("held {i}\n");
        assert_eq!(c.request(m.as_bytes(), m.len()).unwrap(), m.as_bytes());
        held.push(c);
    }
    // The fourth client connects (the backlog takes it) and sends; no
    // thread reads it while three are busy.
    let mut waiting = Conn::connect("tcp", &server.addr).unwrap();
    let line = server
        .wait_log(LIMIT, |l| l.contains("saturated"))
        .unwrap_or_else(|| panic!("no saturation warning:\n{}", server.log_text()));
    assert_eq!(json_field(&line, "raise").as_deref(), Some("--max-threads"));
    waiting.set_timeout(Some(Duration::from_millis(300)));
    let early = waiting.request(b"wait\n", 5);
    assert!(early.is_err(), "served beyond --max-threads: {early:?}");
    assert!(
        thread_count(server.pid()) <= base + 3,
        "more than 3 request threads: {} (idle: {base})",
        thread_count(server.pid())
    );
    // One held client leaves: its thread ends and the waiting one is read.
    drop(held.pop());
    waiting.set_timeout(Some(LIMIT));
    let mut got = Vec::new();
    let mut buf = [0u8; 16];
    while !got.ends_with(b"\n") {
        match common::read_some(&mut waiting, &mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("the waiting client was not served: {e}"),
        }
    }
    assert_eq!(got, b"wait\n");
}
