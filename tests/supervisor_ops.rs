//! Operations: restart on a port full of TIME_WAIT, systemd socket
//! activation and readiness notification, the pid file, `--check`.

mod common;

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use common::{sockserv_bin, Conn, Sockserv};

/// Connections on local `port` in TIME_WAIT (state 06 in /proc/net/tcp).
fn time_wait_on(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!(":{port:04X} ");
    table
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && format!("{} ", f[1]).ends_with(&local) && f[3] == "06"
        })
        .count()
}

#[test]
fn restart_on_a_port_full_of_time_wait_binds_at_once() {
    let mut first = Sockserv::start(&["--listen", "127.0.0.1:0", "--idle-timeout", "0.05"]);
    let addr = first.addr.clone();
    let port = first.port();
    // The server closes each idle connection first, so TIME_WAIT is on its side.
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let a = addr.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let mut c = Conn::connect("tcp", &a).unwrap();
                    assert_eq!(c.request(b"x", 1).unwrap(), b"x");
                    let mut rest = Vec::new();
                    c.read_to_end(&mut rest).unwrap();
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    assert!(
        time_wait_on(port) > 50,
        "only {} TIME_WAIT entries",
        time_wait_on(port)
    );
    assert!(first.stop().unwrap().success());
    let second = Sockserv::start(&["--listen", &addr]);
    let mut c = Conn::connect("tcp", &second.addr).unwrap();
    assert_eq!(c.request(b"again", 5).unwrap(), b"again");
}

#[test]
fn socket_activation_serves_on_the_passed_fd() {
    // A wrapper binds a socket, puts it at fd 3 and execs sockserv with
    // LISTEN_FDS=1 and LISTEN_PID set to its own (and so sockserv's) pid.
    let wrapper = r#"
import os, socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(128)
os.dup2(s.fileno(), 3); os.set_inheritable(3, True)
os.environ["LISTEN_FDS"] = "1"; os.environ["LISTEN_PID"] = str(os.getpid())
print(s.getsockname()[1], flush=True)
os.execv(sys.argv[1], sys.argv[1:])
"#;
    let server = Sockserv::start_wrapped(
        &["python3", "-c", wrapper],
        &["--listen", "127.0.0.1:9", "--workers", "2"],
    );
    assert_ne!(
        server.port(),
        9,
        "sockserv bound --listen instead of using fd 3"
    );
    let mut c = Conn::connect("tcp", &server.addr).unwrap();
    assert_eq!(c.request(b"activated", 9).unwrap(), b"activated");
}

#[test]
fn sd_notify_reports_ready_then_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let env = format!("NOTIFY_SOCKET={}", path.display());
    let mut server = Sockserv::start_wrapped(
        &["env", &env],
        &["--listen", "127.0.0.1:0", "--workers", "2"],
    );
    // The next message other than STATUS= (see tests/systemd_notify.rs).
    let next = || loop {
        let mut buf = [0u8; 512];
        let n = notify.recv(&mut buf).unwrap();
        if !buf.starts_with(b"STATUS=") {
            return buf[..n].to_vec();
        }
    };
    assert_eq!(next(), b"READY=1");
    assert_eq!(
        common::workers(server.pid()).len(),
        2,
        "READY=1 before the workers serve"
    );
    server.signal(libc::SIGTERM);
    assert_eq!(next(), b"STOPPING=1");
    assert!(server.wait_exit(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn a_pid_file_naming_a_live_process_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("s.pid");
    std::fs::write(&pid_file, "1\n").unwrap();
    let out = Command::new(sockserv_bin())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--pid-file",
            pid_file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("process 1 is running"), "{err}");
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), "1\n");
}

#[test]
fn check_validates_without_serving() {
    let ok = Command::new(sockserv_bin())
        .args(["--check", "--listen", "127.0.0.1:0", "--policy", "fork"])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("configuration ok"));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let busy = Command::new(sockserv_bin())
        .args(["--check", "--listen", &addr])
        .output()
        .unwrap();
    assert_eq!(busy.status.code(), Some(1));
    let err = String::from_utf8_lossy(&busy.stderr);
    assert!(
        err.contains(&addr) && err.contains("Address already in use"),
        "{err}"
    );
    let bad = Command::new(sockserv_bin())
        .args(["--check", "--workers", "x"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
