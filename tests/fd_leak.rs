//! No descriptor leaks: after 1,000 connections the server's open fd count
//! returns to its baseline, under every policy.

mod common;

use std::time::Duration;

use common::{children, fd_count, wait_until, Conn, Dgram, Sockserv};

fn connections_leave_no_fds(transport: &str, policy: &str) {
    let (listen, _dir) = common::listen_for(transport);
    let server = Sockserv::start(&[
        "--no-supervisor",
        "--transport",
        transport,
        "--listen",
        &listen,
        "--policy",
        policy,
    ]);
    let settle = |s: &Sockserv| {
        wait_until(Duration::from_secs(5), || children(s.pid()).is_empty());
    };
    let one = |i: usize| {
        let req = format!("conn {i}");
        let mut c = Conn::connect(transport, &server.addr).unwrap();
        assert_eq!(
            c.request(req.as_bytes(), req.len()).unwrap(),
            req.as_bytes()
        );
    };
    one(0);
    settle(&server);
    let baseline = fd_count(server.pid());
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (t, a) = (transport.to_string(), server.addr.clone());
            std::thread::spawn(move || {
                for i in 0..250 {
                    let req = format!("w{w} c{i}");
                    let mut c = Conn::connect(&t, &a).unwrap();
                    assert_eq!(
                        c.request(req.as_bytes(), req.len()).unwrap(),
                        req.as_bytes()
                    );
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    settle(&server);
    let back = wait_until(Duration::from_secs(5), || {
        fd_count(server.pid()) <= baseline
    });
    assert!(
        back,
        "{transport}/{policy}: {} fds open, baseline {baseline}",
        fd_count(server.pid())
    );
}

#[test]
fn tcp_connections_leave_no_fds_under_any_policy() {
    for p in ["sync", "fork", "thread", "pool"] {
        connections_leave_no_fds("tcp", p);
    }
}

#[test]
fn unix_connections_leave_no_fds_under_any_policy() {
    for p in ["sync", "fork", "thread", "pool"] {
        connections_leave_no_fds("unix", p);
    }
}

#[test]
fn datagrams_leave_no_fds_under_any_policy() {
    for t in ["udp", "unix-dgram"] {
        for p in ["sync", "fork", "thread", "pool"] {
            let (listen, _dir) = common::listen_for(t);
            let server = Sockserv::start(&[
                "--no-supervisor",
                "--transport",
                t,
                "--listen",
                &listen,
                "--policy",
                p,
            ]);
            let client = Dgram::new(t, &server.addr);
            assert_eq!(client.request(b"warm").unwrap(), b"warm");
            let baseline = fd_count(server.pid());
            for i in 0..300 {
                let req = format!("d{i}");
                assert_eq!(client.request(req.as_bytes()).unwrap(), req.as_bytes());
            }
            wait_until(Duration::from_secs(5), || children(server.pid()).is_empty());
            assert!(
                wait_until(Duration::from_secs(5), || fd_count(server.pid())
                    <= baseline),
                "{t}/{p}: {} fds, baseline {baseline}",
                fd_count(server.pid())
            );
        }
    }
}
