//! The `sockserv` command line as a user meets it: bad flags and values,
//! bind failures, the "listening" line (resolved port, transport, policy,
//! service), graceful SIGTERM with a request in flight under every policy
//! (supervised, the default, and `--no-supervisor`), `--allow`,
//! `--log-level debug`, and whole JSON log lines from a master and its
//! workers.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    children, descendants, dgram_request, fd_count, gone, json_field, listen_for, read_some,
    recv_within, serving_pid, sockserv_bin, wait_until, Conn, Dgram, Sockserv,
};

/// Upper bound for anything the server should do promptly (generous: the
/// test machine may be heavily loaded; passing tests never wait for it).
const PROMPTLY: Duration = Duration::from_secs(10);

/// Observation window for "no reply arrives": a loopback reply takes well
/// under a millisecond, so 300 ms of silence means none is coming.
const SILENCE: Duration = Duration::from_millis(300);

/// Runs sockserv with `args`, which must make it exit; returns the exit code
/// and the non-empty lines of its stderr.
fn run_to_exit(args: &[&str]) -> (Option<i32>, Vec<String>) {
    let mut s = Sockserv::spawn(args);
    let status = s
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("sockserv {args:?} kept running; log:\n{}", s.log_text()));
    let lines = s
        .log_text()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    (status.code(), lines)
}

// ---------------------------------------------------------------------------
// Bad flags and values

#[test]
fn bad_flag_or_value_exits_2_with_a_one_line_reason() {
    let cases: [(&[&str], &str); 5] = [
        (&["--policy", "nope"], "nope"),
        (&["--transport", "sctp"], "sctp"),
        (&["--listen", "notanaddress"], "notanaddress"),
        (&["--socket-mode", "99z"], "99z"),
        (&["--no-such-flag"], "--no-such-flag"),
    ];
    for (args, bad) in cases {
        let (code, lines) = run_to_exit(args);
        let text = lines.join("\n");
        assert_eq!(code, Some(2), "{args:?}: stderr:\n{text}");
        let first = lines
            .first()
            .unwrap_or_else(|| panic!("{args:?}: nothing on stderr"));
        // The reason is the first line and stands alone: it names the bad
        // input, and no other line is needed to understand it. (clap may
        // add a "[possible values: ...]" hint and a "try '--help'" footer.)
        assert!(
            first.starts_with("error:") || first.starts_with("sockserv:"),
            "{args:?}: first line is not a reason: {first:?}"
        );
        assert!(
            first.contains(bad),
            "{args:?}: {first:?} does not name {bad:?}"
        );
        let naming = lines.iter().filter(|l| l.contains(bad)).count();
        assert_eq!(naming, 1, "{args:?}: the reason spans lines:\n{text}");
        assert!(
            !text.contains("\"msg\":\"listening\""),
            "{args:?}: it served:\n{text}"
        );
    }
}

#[test]
fn bind_failure_on_a_taken_port_exits_1_naming_address_and_os_error() {
    // Held by the test for the whole check, so the port stays taken.
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let taken = [
        ("tcp", tcp.local_addr().unwrap()),
        ("udp", udp.local_addr().unwrap()),
    ];
    for (transport, addr) in taken {
        let addr = addr.to_string();
        let (code, lines) = run_to_exit(&["--transport", transport, "--listen", &addr]);
        let text = lines.join("\n");
        assert_eq!(code, Some(1), "{transport} {addr}: stderr:\n{text}");
        let reason = lines
            .iter()
            .find(|l| l.starts_with("sockserv:"))
            .unwrap_or_else(|| panic!("{transport}: no 'sockserv:' reason line:\n{text}"));
        assert!(
            reason.contains(&addr),
            "{transport}: {reason:?} does not name {addr}"
        );
        assert!(
            reason.contains("Address already in use"),
            "{transport}: {reason:?} lacks the OS error"
        );
    }
}

// ---------------------------------------------------------------------------
// The "listening" line

#[test]
fn port_zero_is_reported_as_the_real_port_for_tcp_and_udp_v4_and_v6() {
    for transport in ["tcp", "udp"] {
        for listen in ["127.0.0.1:0", "[::1]:0"] {
            let what = format!("{transport} {listen}");
            let server = Sockserv::start(&["--transport", transport, "--listen", listen]);
            let addr: SocketAddr = server
                .addr
                .parse()
                .unwrap_or_else(|e| panic!("{what}: addr {:?}: {e}", server.addr));
            let asked: SocketAddr = listen.parse().unwrap();
            assert_eq!(addr.ip(), asked.ip(), "{what}");
            assert_ne!(addr.port(), 0, "{what}: port 0 reported");
            // The reported port is the one really served.
            let got = if transport == "tcp" {
                Conn::connect(transport, &server.addr)
                    .unwrap()
                    .request(b"port", 4)
                    .unwrap()
            } else {
                dgram_request(&Dgram::new(transport, &server.addr), b"port", &what)
            };
            assert_eq!(got, b"port", "{what}");
        }
    }
}

#[test]
fn listening_line_carries_transport_policy_and_service() {
    let cases = [
        ("tcp", "sync", "echo"),
        ("udp", "pool", "upper"),
        ("unix", "fork", "time"),
        ("unix-dgram", "thread", "delay"),
    ];
    for ((transport, policy, service), supervisor) in cases
        .into_iter()
        .flat_map(|c| [(c, None), (c, Some("--no-supervisor"))])
    {
        let mut extra = vec!["--service", service];
        extra.extend(supervisor);
        let (server, _dir) = common::start_policy(policy, transport, &extra);
        let line = server
            .wait_log(Duration::ZERO, |l| l.contains("\"msg\":\"listening\""))
            .unwrap();
        assert_eq!(
            json_field(&line, "transport").as_deref(),
            Some(transport),
            "{line}"
        );
        assert_eq!(
            json_field(&line, "policy").as_deref(),
            Some(policy),
            "{line}"
        );
        assert_eq!(
            json_field(&line, "service").as_deref(),
            Some(service),
            "{line}"
        );
        assert_eq!(
            json_field(&line, "addr"),
            Some(server.addr.clone()),
            "{line}"
        );
    }
}

// ---------------------------------------------------------------------------
// SIGTERM with a request in flight

/// Sends a request to a `delay --delay-ms 400` server, sends SIGTERM once the
/// server has taken it, and checks that the reply still arrives whole, the
/// server exits 0 with no process of its tree left running, and a Unix
/// socket file is removed.
fn sigterm_finishes_the_request_in_flight(transport: &str, policy: &str, supervised: bool) {
    let what = format!("{transport}/{policy} supervised={supervised}");
    let (listen, _dir) = listen_for(transport);
    let mut args = vec![
        "--transport",
        transport,
        "--listen",
        &listen,
        "--policy",
        policy,
        "--service",
        "delay",
        "--delay-ms",
        "400",
    ];
    if !supervised {
        args.push("--no-supervisor");
    }
    let mut server = Sockserv::start(&args);
    let serving = serving_pid(&server, supervised);
    let fds_idle = fd_count(serving);
    let mut conn = Conn::connect(transport, &server.addr).unwrap();
    conn.set_timeout(Some(PROMPTLY));
    let req = format!("in flight under {what}\n").into_bytes();
    conn.write_all(&req).unwrap();

    // Wait until the server has taken the request: a fork server has a
    // child for it; the others hold the accepted connection's descriptor.
    if policy == "fork" {
        assert!(
            wait_until(PROMPTLY, || !children(serving).is_empty()),
            "{what}: no child serves the request"
        );
    } else {
        assert!(
            wait_until(PROMPTLY, || fd_count(serving) > fds_idle),
            "{what}: connection not accepted"
        );
        assert_eq!(
            children(serving),
            Vec::<i32>::new(),
            "{what}: unexpected children"
        );
    }
    // Every process of the server but the one we signal: workers and
    // fork-policy children.
    let tree = descendants(server.pid());
    if transport == "unix" {
        assert!(Path::new(&listen).exists(), "{what}: no socket file");
    }

    server.signal(libc::SIGTERM);
    let mut reply = vec![0u8; req.len()];
    conn.read_exact(&mut reply).unwrap_or_else(|e| {
        panic!(
            "{what}: reply lost after SIGTERM: {e}; log:\n{}",
            server.log_text()
        )
    });
    assert_eq!(reply, req, "{what}");

    let status = server.wait_exit(PROMPTLY).unwrap_or_else(|| {
        panic!(
            "{what}: still running after SIGTERM; log:\n{}",
            server.log_text()
        )
    });
    let log = server.log_text();
    assert_eq!(status.code(), Some(0), "{what}: {status:?}; log:\n{log}");
    if !supervised && policy != "sync" {
        let stopping = log
            .lines()
            .find(|l| l.contains("\"msg\":\"stopping\""))
            .unwrap_or_else(|| panic!("{what}: no stopping line:\n{log}"));
        assert_eq!(
            json_field(stopping, "in_flight").as_deref(),
            Some("1"),
            "{what}: the request was not in flight at SIGTERM: {stopping}"
        );
    }
    for pid in tree {
        assert!(gone(pid), "{what}: process {pid} outlived the server");
    }
    if transport == "unix" {
        assert!(
            std::fs::symlink_metadata(&listen).is_err(),
            "{what}: socket file {listen} left behind"
        );
    }
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_under_sync() {
    for transport in ["tcp", "unix"] {
        sigterm_finishes_the_request_in_flight(transport, "sync", true);
    }
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_under_thread() {
    for transport in ["tcp", "unix"] {
        sigterm_finishes_the_request_in_flight(transport, "thread", true);
    }
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_under_pool() {
    for transport in ["tcp", "unix"] {
        sigterm_finishes_the_request_in_flight(transport, "pool", true);
    }
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_under_fork() {
    for transport in ["tcp", "unix"] {
        sigterm_finishes_the_request_in_flight(transport, "fork", true);
    }
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_under_unsupervised_sync() {
    for transport in ["tcp", "unix"] {
        sigterm_finishes_the_request_in_flight(transport, "sync", false);
    }
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_under_unsupervised_thread() {
    for transport in ["tcp", "unix"] {
        sigterm_finishes_the_request_in_flight(transport, "thread", false);
    }
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_under_unsupervised_pool() {
    for transport in ["tcp", "unix"] {
        sigterm_finishes_the_request_in_flight(transport, "pool", false);
    }
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_under_unsupervised_fork() {
    for transport in ["tcp", "unix"] {
        sigterm_finishes_the_request_in_flight(transport, "fork", false);
    }
}

// ---------------------------------------------------------------------------
// --allow

#[test]
fn allow_list_without_the_client_network_closes_without_an_answer() {
    for transport in ["tcp", "udp"] {
        let server = Sockserv::start(&[
            "--transport",
            transport,
            "--listen",
            "127.0.0.1:0",
            "--allow",
            "10.0.0.0/8",
        ]);
        if transport == "tcp" {
            let mut c = Conn::connect(transport, &server.addr).unwrap();
            // Upper bound: the server closes the connection long before.
            c.set_timeout(Some(PROMPTLY));
            let _ = c.write_all(b"let me in");
            let mut buf = [0u8; 64];
            match read_some(&mut c, &mut buf) {
                Ok(0) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
                Ok(n) => panic!("tcp: refused client got {:?}", &buf[..n]),
                Err(e) => panic!("tcp: connection not closed: {e}"),
            }
        } else {
            let d = Dgram::new(transport, &server.addr);
            d.send(b"let me in").unwrap();
            // Observation window: a reply would arrive well within it.
            if let Some(reply) = recv_within(&d, SILENCE) {
                panic!("udp: refused client got {reply:?}");
            }
        }
    }
}

#[test]
fn allow_list_with_the_client_network_serves_it() {
    for transport in ["tcp", "udp"] {
        let server = Sockserv::start(&[
            "--transport",
            transport,
            "--listen",
            "127.0.0.1:0",
            "--allow",
            "127.0.0.0/8",
        ]);
        let got = if transport == "tcp" {
            Conn::connect(transport, &server.addr)
                .unwrap()
                .request(b"allowed", 7)
                .unwrap()
        } else {
            dgram_request(&Dgram::new(transport, &server.addr), b"allowed", transport)
        };
        assert_eq!(got, b"allowed", "{transport}");
    }
}

// ---------------------------------------------------------------------------
// --log-level

#[test]
fn log_level_debug_emits_debug_records() {
    // A refused request is logged at debug level, naming the client.
    let mut server = Sockserv::start(&[
        "--listen",
        "127.0.0.1:0",
        "--allow",
        "10.0.0.0/8",
        "--log-level",
        "debug",
    ]);
    let mut c = Conn::connect("tcp", &server.addr).unwrap();
    let _ = c.write_all(b"refused");
    // The server closing the connection shows it has dealt with the request
    // (and logged it) before the stop below.
    let _ = read_some(&mut c, &mut [0u8; 16]);
    let status = server.stop().expect("sockserv exits on SIGTERM");
    let log = server.log_text();
    assert!(status.success(), "{status:?}; log:\n{log}");
    let line = log
        .lines()
        .find(|l| l.contains("request refused by verify_request"))
        .unwrap_or_else(|| panic!("no debug record with --log-level debug; log:\n{log}"));
    assert_eq!(json_field(line, "level").as_deref(), Some("DEBG"), "{line}");
    assert!(line.contains("127.0.0.1:"), "{line}");
}

// ---------------------------------------------------------------------------
// Log output of a supervised server

#[test]
fn every_json_log_line_stays_whole_when_master_and_workers_log_at_once() {
    // Five processes (master, four workers) log at start and stop. Each
    // record must reach stderr as one line of JSON, not mixed with another.
    // Several rounds, as the mixing depends on scheduling.
    for round in 0..5 {
        let mut server = Sockserv::start(&["--listen", "127.0.0.1:0", "--workers", "4"]);
        let all_serving = wait_until(PROMPTLY, || {
            server.log_text().matches("worker serving").count() >= 4
        });
        assert!(all_serving, "round {round}: log:\n{}", server.log_text());
        let status = server.stop().expect("sockserv exits on SIGTERM");
        let log = server.log_text();
        assert!(status.success(), "{status:?}; log:\n{log}");
        for line in log.lines() {
            let record: Result<serde_json::Value, _> = serde_json::from_str(line);
            assert!(
                matches!(&record, Ok(v) if v.get("msg").is_some()),
                "round {round}: not one JSON record: {line:?}\nlog:\n{log}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// SIGTERM racing a fork-policy child's start

#[test]
fn sigterm_right_after_a_fork_child_starts_still_lets_the_server_exit_promptly() {
    // A stop signal may reach a fork-policy child before it has recorded
    // its connection; it must still end after the reply in hand instead of
    // waiting for the client's next request until the graceful timeout
    // (2 s here) runs out. Each round sends SIGTERM the moment the child
    // exists; several rounds, as the race depends on scheduling.
    for round in 0..10 {
        let mut server = Sockserv::start(&[
            "--no-supervisor",
            "--listen",
            "127.0.0.1:0",
            "--policy",
            "fork",
            "--service",
            "delay",
            "--delay-ms",
            "50",
            "--graceful-timeout",
            "2",
        ]);
        let pid = server.pid();
        let mut conn = Conn::connect("tcp", &server.addr).unwrap();
        conn.write_all(b"racing\n").unwrap();
        // Spin, not poll every few ms: the point is to signal at once.
        let deadline = Instant::now() + PROMPTLY;
        while children(pid).is_empty() {
            assert!(Instant::now() < deadline, "round {round}: no child");
            std::thread::yield_now();
        }
        server.signal(libc::SIGTERM);
        let mut reply = [0u8; 7];
        conn.read_exact(&mut reply)
            .unwrap_or_else(|e| panic!("round {round}: no reply: {e}"));
        assert_eq!(&reply, b"racing\n");
        // The client keeps its connection open, as a keep-alive client would.
        let exited = server.wait_exit(Duration::from_secs(1));
        assert!(
            exited.is_some(),
            "round {round}: the server still waits for its child 1 s after the reply \
             (the child missed SIGTERM); log:\n{}",
            server.log_text()
        );
        drop(conn);
    }
}

// ---------------------------------------------------------------------------
// Flags that refuse nonsense, --check, environment variables

#[test]
fn zero_and_absurd_values_exit_2_naming_the_flag_and_its_bound() {
    let cases: [(&[&str], &str, &str); 10] = [
        (&["--workers", "0"], "--workers", "1 to 1024"),
        (&["--workers", "99999999999"], "--workers", "1 to 1024"),
        (&["--threads", "0"], "--threads", "1 to 65536"),
        (&["--max-children", "0"], "--max-children", "1 to 65536"),
        (&["--queue", "0"], "--queue", "1 to 65536"),
        (&["--backlog", "0"], "--backlog", "1 to 65535"),
        (
            &["--graceful-timeout", "-1"],
            "--graceful-timeout",
            "seconds",
        ),
        (&["--max-packet-size", "0"], "--max-packet-size", "bytes"),
        (&["--allow", "notanet"], "--allow", "notanet"),
        (&["--allow", "10.0.0.0/40"], "--allow", "prefix length"),
    ];
    for (args, flag, bound) in cases {
        for check in [false, true] {
            let mut all = args.to_vec();
            all.extend(["--listen", "127.0.0.1:0"]);
            if check {
                all.push("--check");
            }
            let (code, lines) = run_to_exit(&all);
            assert_eq!(code, Some(2), "{all:?}: {lines:?}");
            assert_eq!(lines.len(), 1, "{all:?}: not one line: {lines:?}");
            assert!(
                lines[0].starts_with("sockserv: ")
                    && lines[0].contains(flag)
                    && lines[0].contains(bound),
                "{all:?}: {lines:?}"
            );
        }
    }
}

#[test]
fn check_proves_the_configuration_can_start_and_names_each_failure() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/dir");
    let pid = missing.join("s.pid");
    let log = missing.join("s.log");
    let accounts = missing.join("accounts");
    let out = Command::new(sockserv_bin())
        .args(["--listen", "127.0.0.1:0", "--check", "--service", "chat"])
        .args(["--pid-file", pid.to_str().unwrap()])
        .args(["--accounts", accounts.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("--pid-file") && l.contains("No such file")),
        "{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.contains("accounts file") && l.contains("No such file")),
        "{err}"
    );
    // A log file that cannot be opened fails before anything else.
    let out = Command::new(sockserv_bin())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--check",
            "--log-file",
            log.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("open log file") && err.contains(log.to_str().unwrap()),
        "{err}"
    );
    // And a good configuration passes, creating nothing.
    let state = dir.path().join("state");
    let out = Command::new(sockserv_bin())
        .args(["--listen", "127.0.0.1:0", "--check", "--service", "files"])
        .env("STATE_DIRECTORY", &state)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration ok"));
    assert!(!state.exists(), "--check created the state directory");
}

#[test]
fn environment_variables_set_flags_and_the_command_line_wins() {
    let out = Command::new(sockserv_bin())
        .args(["--listen", "127.0.0.1:0", "--check"])
        .env("SOCKSERV_WORKERS", "3")
        .env("SOCKSERV_POLICY", "fork")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("policy fork") && text.contains("workers 3"),
        "{text}"
    );
    let out = Command::new(sockserv_bin())
        .args(["--listen", "127.0.0.1:0", "--check", "-w", "2"])
        .env("SOCKSERV_WORKERS", "3")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("workers 2"));
    let out = Command::new(sockserv_bin())
        .args(["--listen", "127.0.0.1:0", "--check"])
        .env("SOCKSERV_WORKERS", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--workers"));
}

#[test]
fn chat_without_accounts_keeps_them_in_the_state_directory() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut cmd = Command::new(sockserv_bin());
    cmd.args([
        "--service",
        "chat",
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ])
    .env("STATE_DIRECTORY", &state)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let made = common::wait_until(Duration::from_secs(10), || state.is_dir());
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let out = child.wait_with_output().unwrap();
    assert!(made, "{}", String::from_utf8_lossy(&out.stderr));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(state.join("accounts").to_str().unwrap()),
        "the start does not name the file: {err}"
    );
}
