//! The signals a sysadmin sends the master beyond gunicorn's set: USR1
//! reopens the log file (logrotate), WINCH parks the workers until HUP, and
//! every other signal whose default would end the master is logged and
//! ignored. Real `sockserv` processes, real signals.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{gone, json_field, wait_until, workers, Conn, Sockserv};

const LIMIT: Duration = Duration::from_secs(10);

/// The lines of a log file (empty while it does not exist).
fn file_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits for a line of the log file matching `pred`.
fn wait_file_line(path: &Path, pred: impl Fn(&str) -> bool) -> Option<String> {
    let mut found = None;
    wait_until(LIMIT, || {
        found = file_lines(path).into_iter().find(|l| pred(l));
        found.is_some()
    });
    found
}

fn echo(addr: &str, msg: &[u8]) -> Vec<u8> {
    let mut c = Conn::connect("tcp", addr).expect("connect");
    c.set_timeout(Some(LIMIT));
    c.request(msg, msg.len()).expect("echo")
}

#[test]
fn usr1_reopens_the_log_file_in_the_master_and_every_worker() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sockserv.log");
    let log_s = log.to_str().unwrap();
    let mut server = Sockserv::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--log-file",
        log_s,
        "--log-level",
        "debug",
    ]);
    let listening = wait_file_line(&log, |l| l.contains("\"msg\":\"listening\""))
        .unwrap_or_else(|| panic!("no listening line in {log_s}: {:?}", file_lines(&log)));
    let addr = json_field(&listening, "addr").unwrap();
    assert!(wait_until(LIMIT, || file_lines(&log)
        .iter()
        .filter(|l| l.contains("worker serving"))
        .count()
        == 2));
    assert!(
        server.log_text().is_empty(),
        "stderr: {}",
        server.log_text()
    );

    // logrotate: move the file away, then USR1.
    let rotated = dir.path().join("sockserv.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    server.signal(libc::SIGUSR1);
    let master = server.pid().to_string();
    let reopened = wait_file_line(&log, |l| l.contains("log file reopened"))
        .unwrap_or_else(|| panic!("master did not reopen; rotated: {:?}", file_lines(&rotated)));
    assert_eq!(
        json_field(&reopened, "pid").as_deref(),
        Some(master.as_str())
    );

    // Every worker writes its next record to the new file: each logs a
    // debug line per request; keep asking until both have.
    let worker_pids: Vec<String> = workers(server.pid()).iter().map(i32::to_string).collect();
    assert_eq!(worker_pids.len(), 2);
    let both = wait_until(LIMIT, || {
        echo(&addr, b"x");
        let lines = file_lines(&log);
        worker_pids.iter().all(|w| {
            lines
                .iter()
                .any(|l| json_field(l, "pid").as_deref() == Some(w.as_str()))
        })
    });
    assert!(
        both,
        "workers still log elsewhere; new file: {:?}",
        file_lines(&log)
    );
    let before = file_lines(&rotated).len();
    echo(&addr, b"y");
    assert_eq!(
        file_lines(&rotated).len(),
        before,
        "the old file still grows"
    );
    assert_eq!(server.stop().and_then(|s| s.code()), Some(0));
}

#[test]
fn usr1_without_a_log_file_says_there_is_nothing_to_reopen() {
    let mut server = Sockserv::start(&["--listen", "127.0.0.1:0"]);
    server.signal(libc::SIGUSR1);
    assert!(server
        .wait_log(LIMIT, |l| l.contains("no log file to reopen"))
        .is_some());
    assert_eq!(echo(&server.addr, b"still"), b"still");
    assert_eq!(server.stop().and_then(|s| s.code()), Some(0));
}

#[test]
fn signals_that_would_end_the_master_by_default_are_logged_and_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("sockserv.pid");
    let mut server = Sockserv::start(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--pid-file",
        pid_file.to_str().unwrap(),
    ]);
    let rtmin1 = libc::SIGRTMIN() + 1;
    let cases = [
        (libc::SIGALRM, "ALRM".to_string()),
        (libc::SIGVTALRM, "VTALRM".to_string()),
        (libc::SIGPROF, "PROF".to_string()),
        (libc::SIGIO, "IO".to_string()),
        (libc::SIGPWR, "PWR".to_string()),
        (libc::SIGSTKFLT, "STKFLT".to_string()),
        (libc::SIGXCPU, "XCPU".to_string()),
        (libc::SIGXFSZ, "XFSZ".to_string()),
        (rtmin1, "RTMIN+1".to_string()),
    ];
    assert!(wait_until(LIMIT, || workers(server.pid()).len() == 2));
    let before = workers(server.pid());
    for (sig, name) in &cases {
        // SAFETY: kill(2) on the pid of a child this test started.
        assert_eq!(unsafe { libc::kill(server.pid(), *sig) }, 0);
        let line = server.wait_log(LIMIT, |l| {
            l.contains("signal ignored") && json_field(l, "signal").as_deref() == Some(name)
        });
        assert!(
            line.is_some(),
            "{name}: no log line; log:\n{}",
            server.log_text()
        );
        assert_eq!(
            echo(&server.addr, name.as_bytes()),
            name.as_bytes(),
            "{name}"
        );
    }
    assert_eq!(workers(server.pid()), before, "workers were replaced");
    assert!(pid_file.exists());
    assert_eq!(server.stop().and_then(|s| s.code()), Some(0));
    assert!(!pid_file.exists(), "pid file left behind");
    assert!(before.iter().all(|&w| gone(w)));
}

#[test]
fn winch_parks_the_workers_and_hup_brings_them_back() {
    let mut server = Sockserv::start(&["--listen", "127.0.0.1:0", "--workers", "2"]);
    assert!(wait_until(LIMIT, || workers(server.pid()).len() == 2));
    let old = workers(server.pid());
    server.signal(libc::SIGWINCH);
    assert!(
        wait_until(LIMIT, || workers(server.pid()).is_empty()),
        "workers still running after WINCH: {:?}",
        workers(server.pid())
    );
    // The master keeps the socket: a client is queued, not refused, and
    // answered once HUP brings workers back.
    let mut parked = Conn::connect("tcp", &server.addr).expect("connect while parked");
    parked.set_timeout(Some(LIMIT));
    server.signal(libc::SIGHUP);
    assert_eq!(
        parked.request(b"back", 4).expect("answered after HUP"),
        b"back"
    );
    assert!(wait_until(LIMIT, || workers(server.pid()).len() == 2));
    let new = workers(server.pid());
    assert!(
        new.iter().all(|w| !old.contains(w)),
        "old {old:?} new {new:?}"
    );
    assert_eq!(server.stop().and_then(|s| s.code()), Some(0));
}
