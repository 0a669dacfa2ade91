//! USR2: the master re-executes the binary at the path it was started
//! from and hands it the socket; the old master leaves once the new one
//! serves. A client loop runs throughout: nothing refused, nothing lost.
//! A replaced "binary" that fails leaves the old master serving with its
//! pid file untouched.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{gone, sockserv_bin, wait_until, ClientLoop, Conn, Sockserv};

const LIMIT: Duration = Duration::from_secs(15);

/// Copies `from` to `to` with cp(1): this multi-threaded test process
/// never holds the new file open for writing, so no child another test
/// forks meanwhile inherits such a descriptor and makes exec fail with
/// ETXTBSY.
fn cp(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "cp {from:?} {to:?}");
}

/// A copy of sockserv in `dir`, as a package would install it.
fn install(dir: &Path) -> PathBuf {
    let bin = dir.join("sockserv");
    cp(Path::new(sockserv_bin()), &bin);
    bin
}

/// Replaces the file at `bin` the way a package manager does: write a new
/// file beside it, then rename it over the old one.
fn replace(bin: &Path, from: &Path) {
    let tmp = bin.with_extension("new");
    cp(from, &tmp);
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, bin).unwrap();
}

/// Starts the sockserv at `bin` on 127.0.0.1 port 0 with 2 workers, a pid
/// file and `extra` flags.
fn start_on_tcp(bin: &Path, pid_file: &Path, extra: &[&str]) -> Sockserv {
    let pid = pid_file.to_str().unwrap();
    let base = [
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--pid-file",
        pid,
    ];
    Sockserv::start_bin(bin, &[&base[..], extra].concat())
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Kills `pid` (a process this test caused, not its child) by pid.
fn kill_by_pid(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[test]
fn usr2_hands_the_socket_to_the_replaced_binary_without_refusing_anyone() {
    let dir = tempfile::tempdir().unwrap();
    let bin = install(dir.path());
    let pid_file = dir.path().join("sockserv.pid");
    let control = dir.path().join("control.sock");
    // A fixed metrics port, as a scrape config names one: the new master
    // takes it over once the old one is gone.
    let metrics = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let mut old = start_on_tcp(
        &bin,
        &pid_file,
        &[
            "--policy",
            "thread",
            "--graceful-timeout",
            "5",
            "--control",
            control.to_str().unwrap(),
            "--metrics",
            &metrics,
        ],
    );
    let old_pid = old.pid();
    assert_eq!(read_pid(&pid_file), Some(old_pid));
    let clients = ClientLoop::start("tcp", &old.addr, Duration::from_millis(2));
    assert!(
        clients.wait_more(20, LIMIT),
        "the old master does not serve"
    );

    replace(&bin, Path::new(sockserv_bin()));
    old.signal(libc::SIGUSR2);
    let new_pid = {
        let mut p = None;
        wait_until(LIMIT, || {
            p = read_pid(&pid_file).filter(|&p| p != old_pid);
            p.is_some()
        });
        p.unwrap_or_else(|| panic!("no new master in the pid file; log:\n{}", old.log_text()))
    };
    let _guard = KillOnDrop(new_pid);
    let status = old
        .wait_exit(LIMIT)
        .unwrap_or_else(|| panic!("the old master did not leave; log:\n{}", old.log_text()));
    assert_eq!(status.code(), Some(0), "log:\n{}", old.log_text());
    assert!(!dir.path().join("sockserv.pid.oldbin").exists());
    // The new master is the binary now at `bin`, and it serves.
    let exe = std::fs::read_link(format!("/proc/{new_pid}/exe")).unwrap();
    assert_eq!(exe, bin.canonicalize().unwrap());
    assert!(
        clients.wait_more(50, LIMIT),
        "the new master does not serve"
    );
    let stats = clients.stop();
    assert!(
        stats.failures.is_empty(),
        "across the upgrade: {:?}",
        stats.failures
    );
    // The status socket and the metrics port are the new master's now.
    assert!(
        wait_until(LIMIT, || status_pid(&control) == Some(new_pid)),
        "status is not the new master's; log:\n{}",
        old.log_text()
    );
    assert!(common::scrape(&metrics)["sockserv_workers"] >= 1.0);
    assert!(old
        .wait_log(LIMIT, |l| l.contains("status endpoint taken over"))
        .is_some());

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(new_pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(
        wait_until(LIMIT, || gone(new_pid)),
        "the new master ignored TERM"
    );
    assert!(!pid_file.exists(), "the new master left its pid file");
    assert!(!control.exists(), "the new master left its control socket");
}

#[test]
fn usr2_to_a_binary_that_fails_keeps_the_old_master_serving() {
    let dir = tempfile::tempdir().unwrap();
    let bin = install(dir.path());
    let pid_file = dir.path().join("sockserv.pid");
    let (sock_dir, sock) = common::temp_socket("upgrade.sock");
    let mut old = Sockserv::start_bin(
        &bin,
        &[
            "--transport",
            "unix",
            "--listen",
            sock.to_str().unwrap(),
            "--workers",
            "2",
            "--pid-file",
            pid_file.to_str().unwrap(),
        ],
    );
    let clients = ClientLoop::start("unix", &old.addr, Duration::from_millis(2));
    assert!(clients.wait_more(20, LIMIT));
    let script = dir.path().join("failing");
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf '#!/bin/sh\\nexit 1\\n' > {}",
            script.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    replace(&bin, &script);
    old.signal(libc::SIGUSR2);
    let failed = old.wait_log(LIMIT, |l| l.contains("upgrade failed; still serving"));
    assert!(failed.is_some(), "log:\n{}", old.log_text());
    assert_eq!(
        read_pid(&pid_file),
        Some(old.pid()),
        "the pid file was not restored"
    );
    assert!(!dir.path().join("sockserv.pid.oldbin").exists());
    assert!(
        clients.wait_more(50, LIMIT),
        "the old master stopped serving"
    );
    let stats = clients.stop();
    assert!(stats.failures.is_empty(), "{:?}", stats.failures);
    let mut c = Conn::connect("unix", &old.addr).unwrap();
    assert_eq!(c.request(b"still\n", 6).unwrap(), b"still\n");
    assert_eq!(old.stop().and_then(|s| s.code()), Some(0));
    assert!(!sock.exists(), "socket file left behind");
    assert!(!pid_file.exists());
    drop(sock_dir);
}

/// Kills the new master (not this test's child) if the test fails midway.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !gone(self.0) {
            kill_by_pid(self.0);
        }
    }
}

/// `sockserv status --control PATH --json`: the reporting master's pid.
fn status_pid(control: &Path) -> Option<i32> {
    let out = std::process::Command::new(sockserv_bin())
        .args(["status", "--control", control.to_str().unwrap(), "--json"])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["pid"].as_i64().map(|p| p as i32)
}

#[test]
fn usr2_hands_the_status_socket_to_the_new_master() {
    let dir = tempfile::tempdir().unwrap();
    let bin = install(dir.path());
    let pid_file = dir.path().join("sockserv.pid");
    let control = dir.path().join("control.sock");
    let mut old = start_on_tcp(&bin, &pid_file, &["--control", control.to_str().unwrap()]);
    let old_pid = old.pid();
    assert!(
        wait_until(LIMIT, || status_pid(&control) == Some(old_pid)),
        "the old master does not answer on {control:?}"
    );
    old.signal(libc::SIGUSR2);
    let status = old
        .wait_exit(LIMIT)
        .unwrap_or_else(|| panic!("the old master did not leave; log:\n{}", old.log_text()));
    assert_eq!(status.code(), Some(0), "log:\n{}", old.log_text());
    let new_pid = read_pid(&pid_file).expect("the new master's pid file");
    let _guard = KillOnDrop(new_pid);
    assert_ne!(new_pid, old_pid, "log:\n{}", old.log_text());
    // The old master left the path alone: it names the new one's socket.
    assert_eq!(
        status_pid(&control),
        Some(new_pid),
        "log:\n{}",
        old.log_text()
    );
    let mut beside = control.clone().into_os_string();
    beside.push(".new");
    assert!(!Path::new(&beside).exists(), "{beside:?} left behind");

    kill_by_pid_with(new_pid, nix::sys::signal::Signal::SIGTERM);
    assert!(
        wait_until(LIMIT, || gone(new_pid)),
        "the new master ignored TERM"
    );
    assert!(!control.exists(), "the new master left {control:?}");
}

fn kill_by_pid_with(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}
