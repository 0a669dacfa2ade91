//! The master keeps workers alive: a killed worker is replaced with no
//! client refused; a worker that keeps crashing trips the crash-loop limit;
//! a stuck worker is killed with its children.

mod common;

use std::time::Duration;

use common::{children, gone, wait_until, workers, ClientLoop, Conn, Sockserv};

#[test]
fn killing_a_worker_refuses_no_client_and_a_new_worker_serves() {
    let server = Sockserv::start(&["--listen", "127.0.0.1:0", "--workers", "1"]);
    assert!(wait_until(Duration::from_secs(5), || workers(server.pid())
        .len()
        == 1));
    let old = workers(server.pid())[0];
    let clients = ClientLoop::start("tcp", &server.addr, Duration::from_millis(2));
    assert!(clients.wait_more(20, Duration::from_secs(5)));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let replaced = wait_until(Duration::from_secs(5), || {
        let w = workers(server.pid());
        w.len() == 1 && w[0] != old
    });
    assert!(replaced, "no new worker: {:?}", workers(server.pid()));
    assert!(
        clients.wait_more(20, Duration::from_secs(5)),
        "the new worker serves"
    );
    let stats = clients.stop();
    // No client is refused: the master holds the socket, and connections
    // made while no worker runs wait in the backlog for the new one. The
    // one request the killed worker may have been serving at the instant
    // of SIGKILL dies with it (a reset); nothing else may fail.
    let refused = stats
        .failures
        .iter()
        .filter(|f| f.contains("refused"))
        .count();
    assert_eq!(
        refused, 0,
        "{} ok, failures: {:?}",
        stats.ok, stats.failures
    );
    assert!(
        stats.failures.len() <= 1,
        "{} ok, failures: {:?}",
        stats.ok,
        stats.failures
    );
    assert!(server.log_text().contains("killed by signal KILL"));
}

#[test]
fn a_worker_aborting_on_input_is_restarted_then_the_crash_loop_limit_stops_the_master() {
    let mut server = Sockserv::start(&[
        "--listen",
        "127.0.0.1:0",
        "--abort-on",
        "boom",
        "--restart-burst",
        "2",
        "--restart-window",
        "30",
    ]);
    let crash = |s: &Sockserv| {
        let before = workers(s.pid());
        let mut c = Conn::connect("tcp", &s.addr).unwrap();
        let _ = c.request(b"boom", 4); // the worker aborts instead of answering
        wait_until(Duration::from_secs(10), || {
            let now = workers(s.pid());
            now.len() == 1 && now != before
        })
    };
    assert!(crash(&server), "first abort: worker not replaced");
    let mut c = Conn::connect("tcp", &server.addr).unwrap();
    assert_eq!(
        c.request(b"fine", 4).unwrap(),
        b"fine",
        "the replacement serves"
    );
    drop(c);
    assert!(crash(&server), "second abort: worker not replaced");
    // The third death within the window is one more than the burst allows.
    let mut c = Conn::connect("tcp", &server.addr).unwrap();
    let _ = c.request(b"boom", 4);
    let status = server
        .wait_exit(Duration::from_secs(15))
        .expect("master exits");
    assert_eq!(status.code(), Some(1), "{}", server.log_text());
    let log = server.log_text();
    assert!(log.contains("crash loop"), "{log}");
    assert!(
        log.contains("killed by signal ABRT"),
        "the reason names the signal: {log}"
    );
    assert!(
        log.contains("restarting after backoff"),
        "young deaths back off: {log}"
    );
}

#[test]
fn a_stuck_worker_is_killed_with_its_children_and_replaced() {
    let server = Sockserv::start(&[
        "--listen",
        "127.0.0.1:0",
        "--policy",
        "fork",
        "--service",
        "delay",
        "--delay-ms",
        "60000",
        "--worker-timeout",
        "1",
    ]);
    assert!(wait_until(Duration::from_secs(5), || workers(server.pid())
        .len()
        == 1));
    let worker = workers(server.pid())[0];
    let mut c = Conn::connect("tcp", &server.addr).unwrap();
    std::io::Write::write_all(&mut c, b"slow").unwrap();
    assert!(wait_until(Duration::from_secs(5), || children(worker)
        .len()
        == 1));
    let child = children(worker)[0];
    // A stopped worker sends no heartbeats: its loop is as good as stuck.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    assert!(server
        .wait_log(Duration::from_secs(10), |l| l.contains("worker timed out"))
        .is_some());
    assert!(
        wait_until(Duration::from_secs(5), || gone(worker) && gone(child)),
        "worker or child survived"
    );
    assert!(wait_until(Duration::from_secs(5), || {
        let w = workers(server.pid());
        w.len() == 1 && w[0] != worker
    }));
}

#[test]
fn an_event_worker_whose_loop_is_stuck_in_a_handler_is_replaced() {
    // 1e9 hashing rounds keep the one loop busy for over a minute.
    let server = Sockserv::start(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--policy",
        "event",
        "--threads",
        "1",
        "--service",
        "cpu",
        "--cpu-rounds",
        "1000000000",
        "--worker-timeout",
        "2",
    ]);
    assert!(wait_until(Duration::from_secs(5), || workers(server.pid())
        .len()
        == 1));
    let worker = workers(server.pid())[0];
    // An idle loop still turns: no timeout while nothing is asked.
    assert!(
        server
            .wait_log(Duration::from_secs(3), |l| l.contains("worker timed out"))
            .is_none(),
        "an idle event worker timed out: {}",
        server.log_text()
    );
    let mut c = Conn::connect("tcp", &server.addr).unwrap();
    std::io::Write::write_all(&mut c, b"spin\n").unwrap();
    assert!(
        server
            .wait_log(Duration::from_secs(10), |l| l.contains("worker timed out"))
            .is_some(),
        "the stuck loop went unnoticed: {}",
        server.log_text()
    );
    assert!(wait_until(Duration::from_secs(5), || gone(worker)));
    assert!(wait_until(Duration::from_secs(5), || {
        let w = workers(server.pid());
        w.len() == 1 && w[0] != worker
    }));
}
