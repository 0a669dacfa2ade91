//! `--access-log`: one line per connection or datagram with time, peer,
//! outcome, duration and bytes, as text or JSON lines, from every policy's
//! serving process (fork children included); refused clients are logged
//! as `rejected`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{wait_until, Conn, Dgram, Sockserv};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(10);

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A supervised echo server with 2 workers under `policy`, logging access
/// lines (JSON) to a file in a temp dir.
fn start_logged(policy: &str) -> (tempfile::TempDir, std::path::PathBuf, Sockserv) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let server = Sockserv::start(&[
        "--listen",
        "127.0.0.1:0",
        "--policy",
        policy,
        "--workers",
        "2",
        "--access-log",
        log.to_str().unwrap(),
    ]);
    (dir, log, server)
}

#[test]
fn every_connection_gets_one_json_line_under_every_policy() {
    for policy in ["sync", "fork", "thread", "pool"] {
        let (_dir, log, server) = start_logged(policy);
        for i in 0..3 {
            let mut c = Conn::connect("tcp", &server.addr).unwrap();
            c.set_timeout(Some(LIMIT));
            let msg = format!("hello {i}\n");
            assert_eq!(
                c.request(msg.as_bytes(), msg.len()).unwrap(),
                msg.as_bytes()
            );
        }
        assert!(
            wait_until(LIMIT, || lines(&log).len() == 3),
            "{policy}: {:?}",
            lines(&log)
        );
        for l in lines(&log) {
            let v: Value =
                serde_json::from_str(&l).unwrap_or_else(|e| panic!("{policy}: {e}: {l}"));
            assert_eq!(v["outcome"], "ok", "{policy}: {l}");
            assert_eq!(v["bytes_in"], 8, "{policy}: {l}");
            assert_eq!(v["bytes_out"], 8, "{policy}: {l}");
            assert!(v["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{l}");
            assert!(
                v["duration_us"].as_u64().is_some() && v["ts"].as_str().is_some(),
                "{l}"
            );
        }
    }
}

#[test]
fn refused_clients_and_datagrams_are_logged_in_text() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    // Text lines: --log-format term (the test helper asks for JSON, so
    // this one server is started by hand, on a port picked just before).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut tcp = std::process::Command::new(common::sockserv_bin())
        .args([
            "--listen",
            &addr,
            "--allow",
            "10.0.0.0/8",
            "--log-format",
            "term",
        ])
        .args(["--access-log", log.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stop = common::StopOnDrop(tcp.id() as i32);
    let mut c = None;
    assert!(wait_until(LIMIT, || {
        c = Conn::connect("tcp", &addr).ok();
        c.is_some()
    }));
    let mut c = c.unwrap();
    c.set_timeout(Some(LIMIT));
    let _ = c.request(b"x\n", 2);
    assert!(wait_until(LIMIT, || lines(&log)
        .iter()
        .any(|l| l.contains(" rejected "))));
    let line = lines(&log)
        .into_iter()
        .find(|l| l.contains("rejected"))
        .unwrap();
    assert!(
        line.contains("127.0.0.1:") && line.contains("in=0 out=0"),
        "{line}"
    );
    assert!(!line.starts_with('{'), "not text: {line}");
    drop(stop);
    tcp.wait().unwrap();

    let dlog = dir.path().join("dgram.log");
    let udp = Sockserv::start(&[
        "--transport",
        "udp",
        "--listen",
        "127.0.0.1:0",
        "--access-log",
        dlog.to_str().unwrap(),
    ]);
    let d = Dgram::new("udp", &udp.addr);
    assert_eq!(common::dgram_request(&d, b"ping", "udp"), b"ping");
    assert!(wait_until(LIMIT, || !lines(&dlog).is_empty()));
    let v: Value = serde_json::from_str(&lines(&dlog)[0]).unwrap();
    assert_eq!(
        (
            v["outcome"].as_str(),
            v["bytes_in"].as_u64(),
            v["bytes_out"].as_u64()
        ),
        (Some("ok"), Some(4), Some(4))
    );
}

#[test]
fn usr1_reopens_the_access_log_after_logrotate_moved_it() {
    for policy in ["fork", "thread"] {
        let (dir, log, server) = start_logged(policy);
        let ask = |msg: &[u8]| {
            let mut c = Conn::connect("tcp", &server.addr).unwrap();
            c.set_timeout(Some(LIMIT));
            assert_eq!(c.request(msg, msg.len()).unwrap(), msg);
        };
        ask(b"before\n");
        assert!(wait_until(LIMIT, || lines(&log).len() == 1), "{policy}");
        let rotated = dir.path().join("access.log.1");
        std::fs::rename(&log, &rotated).unwrap();
        server.signal(libc::SIGUSR1);
        // The master forwards USR1 to both workers; each reopens before
        // its next line. Ask until a line lands in the new file.
        assert!(
            wait_until(LIMIT, || {
                ask(b"after\n");
                !lines(&log).is_empty()
            }),
            "{policy}: no line in the reopened file; old: {:?}",
            lines(&rotated)
        );
        assert!(server
            .wait_log(LIMIT, |l| l.contains("\"signal\":\"USR1\""))
            .is_some());
    }
}
