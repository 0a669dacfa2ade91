//! Master, workers and fork children are told apart in `ps` and `top`
//! (through /proc/PID/comm): `sockserv master`, `sockserv wN gG`,
//! `sockserv child`.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{children, wait_until, workers, Conn, Sockserv};

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn master_workers_and_fork_children_have_their_own_names() {
    let limit = Duration::from_secs(10);
    let mut server = Sockserv::start(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--policy",
        "fork",
    ]);
    assert_eq!(comm(server.pid()), "sockserv master");
    assert!(wait_until(limit, || workers(server.pid()).len() == 2));
    let ws = workers(server.pid());
    // A worker just forked still has the master's name until it sets its own.
    let names = || {
        let mut names: Vec<String> = ws.iter().map(|&w| comm(w)).collect();
        names.sort();
        names
    };
    let named = wait_until(limit, || names() == ["sockserv w1 g0", "sockserv w2 g0"]);
    assert!(named, "{ws:?}: {:?}", names());

    // A held connection keeps its child alive long enough to look at.
    let mut held = Conn::connect("tcp", &server.addr).unwrap();
    held.set_timeout(Some(limit));
    assert_eq!(held.request(b"hi", 2).unwrap(), b"hi");
    let mut child = None;
    assert!(wait_until(limit, || {
        child = ws.iter().flat_map(|&w| children(w)).next();
        child.is_some()
    }));
    assert_eq!(comm(child.unwrap()), "sockserv child");
    let _ = held.flush();
    drop(held);

    // A reload's workers carry the new generation.
    server.signal(libc::SIGHUP);
    assert!(
        wait_until(limit, || {
            let ws = workers(server.pid());
            ws.len() == 2 && ws.iter().all(|&w| comm(w).ends_with(" g1"))
        }),
        "{:?}",
        workers(server.pid())
            .iter()
            .map(|&w| comm(w))
            .collect::<Vec<_>>()
    );
    assert_eq!(server.stop().and_then(|s| s.code()), Some(0));
}
