//! The sd_notify protocol against a fake NOTIFY_SOCKET: READY=1 once the
//! workers serve, RELOADING=1 with MONOTONIC_USEC on HUP and READY=1 when
//! the new workers serve (`Type=notify-reload`), a STATUS= line kept
//! current, WATCHDOG=1 pings when WATCHDOG_USEC asks, and STOPPING=1
//! exactly once however many stop signals come.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{workers, Sockserv};

/// The fake service manager: every datagram sockserv sent, in order.
struct Manager {
    sock: UnixDatagram,
    seen: Vec<String>,
    _dir: tempfile::TempDir,
    env: String,
}

impl Manager {
    fn new() -> Manager {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        let env = format!("NOTIFY_SOCKET={}", path.display());
        Manager {
            sock,
            seen: Vec::new(),
            _dir: dir,
            env,
        }
    }

    /// Receives until a message matches `pred` or `limit` passes.
    fn wait_for(&mut self, limit: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut buf = [0u8; 1024];
            let Ok(n) = self.sock.recv(&mut buf) else {
                return None;
            };
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.seen.push(msg.clone());
            if pred(&msg) {
                return Some(msg);
            }
        }
    }

    fn count(&self, msg: &str) -> usize {
        self.seen.iter().filter(|m| m.as_str() == msg).count()
    }
}

const LIMIT: Duration = Duration::from_secs(10);

#[test]
fn ready_reload_status_and_a_single_stopping_reach_the_manager() {
    let mut m = Manager::new();
    let env = m.env.clone();
    let mut server = Sockserv::start_wrapped(
        &["env", &env],
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--policy",
            "fork",
        ],
    );
    assert!(
        m.wait_for(LIMIT, |s| s == "READY=1").is_some(),
        "{:?}",
        m.seen
    );
    assert_eq!(
        workers(server.pid()).len(),
        2,
        "READY=1 before the workers serve"
    );
    let status = m
        .wait_for(LIMIT, |s| s.starts_with("STATUS=serving"))
        .unwrap_or_else(|| panic!("no serving status: {:?}", m.seen));
    assert!(
        status.contains("2/2 workers ready") && status.contains("policy fork"),
        "{status}"
    );
    // The line counts what was served (sent within a second of changing).
    let mut c = common::Conn::connect("tcp", &server.addr).unwrap();
    c.set_timeout(Some(LIMIT));
    assert_eq!(c.request(b"counted\n", 8).unwrap(), b"counted\n");
    drop(c);
    m.wait_for(LIMIT, |s| {
        s.starts_with("STATUS=serving") && s.contains("; 1 requests")
    })
    .unwrap_or_else(|| panic!("no status counting the request: {:?}", m.seen));

    server.signal(libc::SIGHUP);
    let reloading = m
        .wait_for(LIMIT, |s| s.starts_with("RELOADING=1"))
        .unwrap_or_else(|| panic!("no RELOADING: {:?}", m.seen));
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("RELOADING without MONOTONIC_USEC: {reloading:?}"));
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    let now_usec = now.tv_sec() as u64 * 1_000_000 + now.tv_nsec() as u64 / 1000;
    assert!(
        usec <= now_usec && now_usec - usec < 10_000_000,
        "{usec} vs {now_usec}"
    );
    assert!(
        m.wait_for(LIMIT, |s| s == "READY=1").is_some(),
        "no READY after reload: {:?}",
        m.seen
    );
    assert!(
        m.wait_for(LIMIT, |s| s.contains("generation 1")).is_some(),
        "{:?}",
        m.seen
    );

    // TERM, then INT (a fast stop on top of the graceful one): one STOPPING.
    server.signal(libc::SIGTERM);
    assert!(m.wait_for(LIMIT, |s| s == "STOPPING=1").is_some());
    server.signal(libc::SIGINT);
    assert!(server.wait_exit(LIMIT).is_some_and(|s| s.success()));
    while m.wait_for(Duration::from_millis(200), |_| false).is_some() {}
    assert_eq!(m.count("STOPPING=1"), 1, "{:?}", m.seen);
    assert_eq!(m.count("READY=1"), 2, "{:?}", m.seen);
}

#[test]
fn watchdog_pings_come_at_half_the_interval() {
    let mut m = Manager::new();
    let env = m.env.clone();
    let mut server = Sockserv::start_wrapped(
        &["env", &env, "WATCHDOG_USEC=200000"],
        &["--listen", "127.0.0.1:0"],
    );
    assert!(
        m.wait_for(LIMIT, |s| s == "WATCHDOG=1").is_some(),
        "{:?}",
        m.seen
    );
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_millis(1000) {
        if m.wait_for(
            Duration::from_millis(1000) - start.elapsed().min(Duration::from_millis(1000)),
            |s| s == "WATCHDOG=1",
        )
        .is_some()
        {
            pings += 1;
        }
    }
    // Every 100 ms for 1 s: about 10; at least 6 leaves room for a busy machine.
    assert!(pings >= 6, "{pings} pings in 1 s: {:?}", m.seen);
    assert_eq!(server.stop().and_then(|s| s.code()), Some(0));
}

#[test]
fn no_watchdog_pings_when_watchdog_pid_names_another_process() {
    let mut m = Manager::new();
    let env = m.env.clone();
    let mut server = Sockserv::start_wrapped(
        &["env", &env, "WATCHDOG_USEC=100000", "WATCHDOG_PID=1"],
        &["--listen", "127.0.0.1:0"],
    );
    assert!(m.wait_for(LIMIT, |s| s == "READY=1").is_some());
    assert!(m
        .wait_for(Duration::from_millis(500), |s| s == "WATCHDOG=1")
        .is_none());
    assert_eq!(server.stop().and_then(|s| s.code()), Some(0));
}
