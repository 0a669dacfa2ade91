//! Out of descriptors (EMFILE): the server logs once, backs off instead of
//! spinning on a readable listener, and serves the waiting clients once
//! descriptors are free again.

mod common;

use std::time::Duration;

use common::{cpu_ticks, wait_until, Conn, Sockserv};

#[test]
fn emfile_is_logged_once_backs_off_and_recovers() {
    let server = Sockserv::start_wrapped(
        &["prlimit", "--nofile=32:32"],
        &[
            "--no-supervisor",
            "--listen",
            "127.0.0.1:0",
            "--policy",
            "thread",
        ],
    );
    // More clients than the server has descriptors; each one the server
    // accepts is answered, the rest wait in the backlog.
    let mut conns: Vec<Conn> = (0..40)
        .map(|_| Conn::connect("tcp", &server.addr).unwrap())
        .collect();
    let backing_off = server.wait_log(Duration::from_secs(5), |l| l.contains("backing off"));
    assert!(
        backing_off.is_some(),
        "no back-off logged:\n{}",
        server.log_text()
    );
    assert!(backing_off.unwrap().contains("Too many open files"));
    // Observation window: one second of EMFILE must not burn a second of CPU.
    let before = cpu_ticks(server.pid());
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(server.pid()) - before;
    assert!(
        used < 20,
        "server used {used} ticks of CPU in 1 s while out of fds"
    );
    let lines = server.log_text().matches("backing off").count();
    assert_eq!(lines, 1, "logged {lines} times:\n{}", server.log_text());
    // Free the descriptors: every waiting client is then served.
    let waiting = conns.split_off(20);
    drop(conns);
    for (i, mut c) in waiting.into_iter().enumerate() {
        let req = format!("late {i}");
        assert_eq!(
            c.request(req.as_bytes(), req.len()).unwrap(),
            req.as_bytes()
        );
    }
    assert!(wait_until(Duration::from_secs(5), || server
        .log_text()
        .contains("taking requests again")));
}
