//! A total request deadline for tricklers: the idle timeout restarts at
//! every byte, so a client sending one byte per idle period would hold a
//! fork child or a pool slot for ever. With `--request-timeout 1
//! --idle-timeout 5`, a client trickling one byte every 200 ms into a line
//! is closed about 1 s after its first byte, under fork, pool, thread and
//! event, while a normal client, and a slow one that finishes its line in
//! time, are served.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{start_policy, Conn};

const LIMIT: Duration = Duration::from_secs(10);

/// Trickles one byte every 200 ms (the read timeout paces it) until the
/// server closes; returns how long after the first byte that was.
fn trickle(transport: &str, addr: &str) -> Duration {
    let mut c = Conn::connect(transport, addr).unwrap();
    c.set_timeout(Some(Duration::from_millis(200)));
    let first = Instant::now();
    let mut buf = [0u8; 64];
    while first.elapsed() < LIMIT {
        if c.write_all(b"x").is_err() {
            break; // reset: closed
        }
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => panic!("a trickler got a reply: {:?}", &buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break, // reset: closed
        }
    }
    first.elapsed()
}

fn tricklers_are_cut_off(policy: &str, transport: &str) {
    let what = format!("{policy}/{transport}");
    let (srv, _dir) = start_policy(
        policy,
        transport,
        &[
            "--service",
            "time",
            "--no-supervisor",
            "--request-timeout",
            "1",
            "--idle-timeout",
            "5",
        ],
    );
    let addr = srv.addr.clone();
    let t = transport.to_string();
    let trickler = std::thread::spawn(move || trickle(&t, &addr));
    // A normal client meanwhile: one line, answered at once.
    let mut c = Conn::connect(transport, &srv.addr).unwrap();
    c.set_timeout(Some(LIMIT));
    assert_eq!(c.request(b"probe\n", 6).unwrap(), b"probe\n", "{what}");
    // A slow one that finishes its line in 500 ms, within the deadline.
    let mut slow = Conn::connect(transport, &srv.addr).unwrap();
    slow.write_all(b"pro").unwrap();
    slow.set_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 8];
    assert!(
        matches!(slow.read(&mut buf), Err(ref e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "{what}: a half line got an answer"
    );
    slow.set_timeout(Some(LIMIT));
    assert_eq!(
        slow.request(b"be\n", 6).unwrap(),
        b"probe\n",
        "{what}: slow"
    );
    let took = trickler.join().unwrap();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "{what}: the trickler was closed after {took:?} (deadline 1 s)"
    );
    assert!(
        srv.wait_log(LIMIT, |l| l.contains("request deadline passed"))
            .is_some(),
        "{what}: no log line; log:\n{}",
        srv.log_text()
    );
    // The same connection that spoke promptly is still served.
    assert_eq!(c.request(b"again\n", 6).unwrap(), b"again\n", "{what}");
}

#[test]
fn a_trickler_is_closed_at_the_request_deadline_and_others_are_served() {
    let cases: Vec<_> = ["fork", "pool", "thread", "event"]
        .into_iter()
        .flat_map(|p| ["tcp", "unix"].map(|t| (p, t)))
        .map(|(p, t)| std::thread::spawn(move || tricklers_are_cut_off(p, t)))
        .collect();
    common::join_all(cases);
}

#[test]
fn a_bad_request_timeout_exits_2_naming_the_flag() {
    let out = std::process::Command::new(common::sockserv_bin())
        .args(["--request-timeout", "soon", "--check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--request-timeout"), "{err}");
}
