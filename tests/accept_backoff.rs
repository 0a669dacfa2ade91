//! Out of descriptors (EMFILE): the server logs once, backs off instead of
//! spinning on a readable listener, and serves the waiting clients once
//! descriptors are free again.

mod common;

use std::io::{Read, Write};
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
    // More clients than the server has descriptors; each sends its line at
    // once (so TCP_DEFER_ACCEPT hands it to accept); each one the server
    // accepts is answered, the rest wait in the backlog.
    let mut conns: Vec<Conn> = (0..40)
        .map(|i| {
            let mut c = Conn::connect("tcp", &server.addr).unwrap();
            c.write_all(format!("late {i:02}").as_bytes()).unwrap();
            c
        })
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
        let want = format!("late {:02}", i + 20);
        c.set_timeout(Some(Duration::from_secs(10)));
        let mut got = vec![0u8; want.len()];
        c.read_exact(&mut got).unwrap();
        assert_eq!(got, want.as_bytes());
    }
    assert!(wait_until(Duration::from_secs(5), || server
        .log_text()
        .contains("taking requests again")));
}
