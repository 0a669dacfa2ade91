//! Connections that never send cost nothing: under default settings, 200
//! silent connections do not delay a normal client by more than a second,
//! under every policy, over TCP and Unix stream; they take no fork child
//! and no thread while silent; one still silent after the idle timeout is
//! closed; a greeting service (chat) is not held back.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::{thread_count, wait_until, Conn, Sockserv};

const LIMIT: Duration = Duration::from_secs(10);

fn start(transport: &str, policy: &str, extra: &[&str]) -> (Sockserv, Option<tempfile::TempDir>) {
    let args = [&["--no-supervisor"], extra].concat();
    common::start_policy(policy, transport, &args)
}

#[test]
fn two_hundred_silent_connections_do_not_delay_a_normal_client() {
    for transport in ["tcp", "unix"] {
        for policy in ["sync", "fork", "thread", "pool"] {
            let (srv, _dir) = start(transport, policy, &[]);
            let threads = thread_count(srv.pid());
            let silent: Vec<Conn> = (0..200)
                .map(|_| Conn::connect(transport, &srv.addr).unwrap())
                .collect();
            let started = Instant::now();
            let mut c = Conn::connect(transport, &srv.addr).unwrap();
            c.set_timeout(Some(LIMIT));
            assert_eq!(
                c.request(b"hello\n", 6).unwrap(),
                b"hello\n",
                "{transport}/{policy}"
            );
            let took = started.elapsed();
            assert!(
                took < Duration::from_secs(1),
                "{transport}/{policy}: a normal client waited {took:?} behind 200 silent ones"
            );
            drop(c);
            // The silent ones hold no child and no thread.
            assert!(
                wait_until(LIMIT, || common::children(srv.pid()).is_empty()),
                "{transport}/{policy}: children for silent connections"
            );
            assert!(
                wait_until(LIMIT, || thread_count(srv.pid()) == threads),
                "{transport}/{policy}: threads for silent connections: {} (idle: {threads})",
                thread_count(srv.pid())
            );
            drop(silent);
        }
    }
}

#[test]
fn a_silent_connection_is_closed_after_the_idle_timeout_and_one_that_speaks_late_is_served() {
    for transport in ["tcp", "unix"] {
        let (srv, _dir) = start(transport, "fork", &["--idle-timeout", "1"]);
        let mut silent = Conn::connect(transport, &srv.addr).unwrap();
        let mut late = Conn::connect(transport, &srv.addr).unwrap();
        late.set_timeout(Some(LIMIT));
        std::thread::sleep(Duration::from_millis(300)); // speak late, within the timeout
        assert_eq!(
            late.request(b"late\n", 5).unwrap(),
            b"late\n",
            "{transport}"
        );
        silent.set_timeout(Some(LIMIT));
        let started = Instant::now();
        let mut buf = [0u8; 8];
        let n = silent.read(&mut buf);
        let took = started.elapsed();
        assert!(
            matches!(n, Ok(0)) || n.is_err(),
            "{transport}: the silent connection got {n:?}"
        );
        assert!(
            took < Duration::from_secs(5),
            "{transport}: closed only after {took:?}"
        );
    }
}

#[test]
fn chat_greets_at_once_it_is_not_held_back() {
    let dir = tempfile::tempdir().unwrap();
    let accounts = dir.path().join("accounts");
    let (srv, _d) = start(
        "tcp",
        "thread",
        &[
            "--service",
            "chat",
            "--accounts",
            accounts.to_str().unwrap(),
        ],
    );
    let mut c = Conn::connect("tcp", &srv.addr).unwrap();
    c.set_timeout(Some(LIMIT));
    let mut buf = [0u8; 64];
    let n = c.read(&mut buf).unwrap();
    assert!(
        n > 0,
        "chat sent no greeting to a client that has not spoken"
    );
}
