//! The fork policy through the real `sockserv` binary: reaping, the
//! `max_children` bound, closing with children in flight, and a forking
//! server that stays single-threaded.

mod common;

use std::io::Read;
use std::time::Duration;

use common::{children, thread_count, wait_until, zombies, Conn, Dgram, Sockserv};

#[test]
fn no_zombies_remain_after_500_short_connections() {
    let server = Sockserv::start(&[
        "--no-supervisor",
        "--listen",
        "127.0.0.1:0",
        "--policy",
        "fork",
    ]);
    for i in 0..500 {
        let mut c = Conn::connect("tcp", &server.addr).unwrap();
        let req = format!("req {i}");
        assert_eq!(
            c.request(req.as_bytes(), req.len()).unwrap(),
            req.as_bytes()
        );
    }
    // Children exit as their clients close; SIGCHLD wakes the loop to reap.
    let reaped = wait_until(Duration::from_secs(5), || children(server.pid()).is_empty());
    assert!(
        reaped,
        "children left: {:?}, zombies: {:?}",
        children(server.pid()),
        zombies(server.pid())
    );
}

#[test]
fn each_datagram_is_served_by_a_child_and_reaped() {
    let server = Sockserv::start(&[
        "--no-supervisor",
        "--transport",
        "udp",
        "--listen",
        "127.0.0.1:0",
        "--policy",
        "fork",
    ]);
    let client = Dgram::new("udp", &server.addr);
    for i in 0..100 {
        let req = format!("dgram {i}");
        assert_eq!(client.request(req.as_bytes()).unwrap(), req.as_bytes());
    }
    assert!(wait_until(Duration::from_secs(5), || children(
        server.pid()
    )
    .is_empty()));
}

#[test]
fn max_children_is_never_exceeded_and_waiting_clients_are_served_later() {
    let server = Sockserv::start(&[
        "--no-supervisor",
        "--listen",
        "127.0.0.1:0",
        "--policy",
        "fork",
        "--max-children",
        "3",
    ]);
    let mut conns: Vec<Conn> = (0..6)
        .map(|_| Conn::connect("tcp", &server.addr).unwrap())
        .collect();
    for (i, c) in conns.iter_mut().enumerate().take(3) {
        let req = format!("held {i}");
        assert_eq!(
            c.request(req.as_bytes(), req.len()).unwrap(),
            req.as_bytes()
        );
    }
    assert_eq!(children(server.pid()).len(), 3);
    // Observation window: the three waiting clients stay in the backlog.
    for c in conns.iter_mut().skip(3) {
        c.set_timeout(Some(Duration::from_millis(100)));
        assert!(c.request(b"wait", 4).is_err(), "a fourth child was forked");
        assert!(children(server.pid()).len() <= 3);
    }
    // Each client that leaves frees a slot for one waiting client.
    let waiting = conns.split_off(3);
    drop(conns);
    for mut c in waiting {
        c.set_timeout(Some(Duration::from_secs(5)));
        let mut reply = [0u8; 4];
        c.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"wait");
        assert!(children(server.pid()).len() <= 3);
    }
}

#[test]
fn graceful_stop_waits_for_children_in_flight() {
    let server_args = [
        "--no-supervisor",
        "--listen",
        "127.0.0.1:0",
        "--policy",
        "fork",
        "--service",
        "delay",
        "--delay-ms",
        "300",
    ];
    let mut server = Sockserv::start(&server_args);
    let mut client = Conn::connect("tcp", &server.addr).unwrap();
    std::io::Write::write_all(&mut client, b"in flight").unwrap();
    assert!(wait_until(Duration::from_secs(5), || children(
        server.pid()
    )
    .len()
        == 1));
    let child = children(server.pid())[0];
    server.signal(libc::SIGTERM);
    let mut reply = [0u8; 9];
    client.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"in flight");
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("server exits");
    assert!(status.success(), "{status:?}\n{}", server.log_text());
    assert!(
        common::proc_state(child).is_none(),
        "child {child} outlived the server"
    );
}

#[test]
fn a_forking_server_stays_single_threaded() {
    let server = Sockserv::start(&[
        "--no-supervisor",
        "--listen",
        "127.0.0.1:0",
        "--policy",
        "fork",
    ]);
    let mut c = Conn::connect("tcp", &server.addr).unwrap();
    assert_eq!(c.request(b"x", 1).unwrap(), b"x");
    assert_eq!(thread_count(server.pid()), 1);
    let child = children(server.pid());
    assert_eq!(child.len(), 1);
    assert_eq!(thread_count(child[0]), 1);
}

/// The signals blocked in `pid`, from /proc/PID/status (SigBlk).
fn blocked_signals(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .expect("SigBlk in status");
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

#[test]
fn the_server_blocks_sigchld_and_its_children_get_the_usual_mask() {
    let sigchld_bit = 1u64 << (libc::SIGCHLD - 1);
    for supervised in [false, true] {
        let mut args = vec!["--listen", "127.0.0.1:0", "--policy", "fork"];
        if !supervised {
            args.push("--no-supervisor");
        }
        let server = Sockserv::start(&args);
        let serving = common::serving_pid(&server, supervised);
        let mut c = Conn::connect("tcp", &server.addr).unwrap();
        assert_eq!(c.request(b"x", 1).unwrap(), b"x");
        let child = children(serving);
        assert_eq!(child.len(), 1, "supervised={supervised}");
        assert_ne!(
            blocked_signals(serving) & sigchld_bit,
            0,
            "supervised={supervised}: the serving process takes SIGCHLD from a signalfd"
        );
        assert_eq!(
            blocked_signals(child[0]),
            0,
            "supervised={supervised}: a child runs with no signal blocked"
        );
    }
}

#[test]
fn a_child_blocked_reading_between_requests_ends_promptly_on_sigterm() {
    // The child has answered one request and waits in read for the next:
    // a graceful stop shuts its read side down (the child records its
    // connection for its SIGTERM handler), so it sees end-of-file at once
    // instead of holding the server for the 30 s graceful timeout.
    let mut server = Sockserv::start(&[
        "--no-supervisor",
        "--listen",
        "127.0.0.1:0",
        "--policy",
        "fork",
        "--graceful-timeout",
        "30",
    ]);
    let mut c = Conn::connect("tcp", &server.addr).unwrap();
    assert_eq!(c.request(b"once", 4).unwrap(), b"once");
    let child = children(server.pid());
    assert_eq!(child.len(), 1);
    server.signal(libc::SIGTERM);
    let status = server
        .wait_exit(Duration::from_secs(5))
        .expect("the server waited for the idle child");
    assert!(status.success(), "{status:?}\n{}", server.log_text());
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    assert!(common::proc_state(child[0]).is_none());
}
