//! What `sockserv` does with input it cannot serve, clients that misbehave,
//! and Unix socket paths it must not (or may) take over: oversized
//! datagrams, invalid UTF-8, bad strftime formats, clients that vanish
//! mid-reply or idle forever, non-socket files, stale and live socket
//! files, socket file modes and abstract names.

mod common;

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    children, dgram_request, fd_count, listen_for, read_some, recv_within, serving_pid,
    temp_socket, wait_until, Conn, Dgram, Sockserv,
};

/// Observation window for "no reply arrives": a reply from a live loopback
/// server takes well under a millisecond, so 300 ms of silence means none
/// is coming.
const SILENCE: Duration = Duration::from_millis(300);

/// Upper bound for anything the server should do promptly (generous: the
/// test machine may be heavily loaded; passing tests never wait for it).
const PROMPTLY: Duration = Duration::from_secs(10);

fn is_stream(transport: &str) -> bool {
    matches!(transport, "tcp" | "unix")
}

/// Asserts that `server` answers one echo request over `transport`.
fn assert_echoes(transport: &str, addr: &str, what: &str) {
    let req = format!("echo check: {what}").into_bytes();
    let got = if is_stream(transport) {
        let mut c =
            Conn::connect(transport, addr).unwrap_or_else(|e| panic!("{what}: connect: {e}"));
        c.set_timeout(Some(PROMPTLY));
        c.request(&req, req.len())
            .unwrap_or_else(|e| panic!("{what}: no echo: {e}"))
    } else {
        dgram_request(&Dgram::new(transport, addr), &req, what)
    };
    assert_eq!(got, req, "{what}: wrong echo");
}

/// Asserts that no datagram arrives within the [`SILENCE`] window.
fn assert_no_datagram(d: &Dgram, what: &str) {
    if let Some(reply) = recv_within(d, SILENCE) {
        panic!("{what}: got a reply of {} bytes: {reply:?}", reply.len());
    }
}

/// The address the server sees for this client, as it logs `peer`.
fn client_address(d: &Dgram) -> String {
    match d {
        Dgram::Udp(s, _) => s.local_addr().unwrap().to_string(),
        Dgram::Unix(s, _, _) => {
            let addr = s.local_addr().unwrap();
            addr.as_pathname().unwrap().display().to_string()
        }
    }
}

/// Reads one `\n`-terminated line (without the `\n`).
fn read_line(conn: &mut Conn) -> Vec<u8> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match read_some(conn, &mut byte) {
            Ok(0) => panic!("connection closed after {line:?}"),
            Ok(_) if byte[0] == b'\n' => return line,
            Ok(_) => line.push(byte[0]),
            Err(e) => panic!("reading a line (got {line:?} so far): {e}"),
        }
    }
}

/// True for `YYYY-mm-dd HH:MM:SS`.
fn is_default_timestamp(s: &[u8]) -> bool {
    let shape = b"dddd-dd-dd dd:dd:dd";
    s.len() == shape.len()
        && s.iter().zip(shape).all(|(&c, &want)| match want {
            b'd' => c.is_ascii_digit(),
            sep => c == sep,
        })
}

/// A name in the abstract namespace no other test (or test run) uses.
fn unique_abstract_name(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("@sockserv-test-{}-{tag}-{nanos}", std::process::id())
}

// ---------------------------------------------------------------------------
// Datagrams larger than --max-packet-size

#[test]
fn oversized_datagram_is_dropped_logged_and_server_keeps_serving() {
    for transport in ["udp", "unix-dgram"] {
        let (listen, _dir) = listen_for(transport);
        let server = Sockserv::start(&[
            "--transport",
            transport,
            "--listen",
            &listen,
            "--max-packet-size",
            "100",
        ]);
        let client = Dgram::new(transport, &server.addr);
        client.send(&[b'x'; 200]).unwrap();

        let line = server
            .wait_log(PROMPTLY, |l| {
                l.contains("\"msg\":\"datagram too large; dropped\"")
            })
            .unwrap_or_else(|| panic!("{transport}: no warning; log:\n{}", server.log_text()));
        assert_eq!(
            common::json_field(&line, "level").as_deref(),
            Some("WARN"),
            "{line}"
        );
        assert_eq!(
            common::json_field(&line, "len").as_deref(),
            Some("200"),
            "{line}"
        );
        assert_eq!(
            common::json_field(&line, "max_packet_size").as_deref(),
            Some("100"),
            "{line}"
        );
        assert_eq!(
            common::json_field(&line, "peer"),
            Some(client_address(&client)),
            "{line}"
        );
        assert_no_datagram(&client, &format!("{transport}: oversized datagram"));

        let small = [b's'; 50];
        let reply = dgram_request(
            &client,
            &small,
            &format!("{transport}: 50 bytes after the drop"),
        );
        assert_eq!(reply, small, "{transport}");
    }
}

// ---------------------------------------------------------------------------
// Invalid UTF-8 and bad strftime formats

#[test]
fn upper_returns_invalid_utf8_and_non_letters_untouched_over_tcp_and_udp() {
    let req: &[u8] = b"abc\xff\xfe z\xc3\xa9 09!\x80\n";
    let want: &[u8] = b"ABC\xff\xfe Z\xc3\xa9 09!\x80\n";
    for transport in ["tcp", "udp"] {
        let server = Sockserv::start(&[
            "--transport",
            transport,
            "--listen",
            "127.0.0.1:0",
            "--service",
            "upper",
        ]);
        let got = if transport == "tcp" {
            let mut c = Conn::connect(transport, &server.addr).unwrap();
            c.request(req, want.len()).unwrap()
        } else {
            dgram_request(&Dgram::new(transport, &server.addr), req, transport)
        };
        assert_eq!(got, want, "{transport}");
    }
}

/// Sends one request to the time service and returns the reply without
/// its line ending.
fn time_request(conn: &mut Option<Conn>, dgram: &Option<Dgram>, req: &[u8]) -> Vec<u8> {
    match (conn, dgram) {
        (Some(c), _) => {
            c.write_all(req).unwrap();
            read_line(c)
        }
        (_, Some(d)) => {
            let mut reply = dgram_request(d, req, "udp time");
            if reply.last() == Some(&b'\n') {
                reply.pop();
            }
            reply
        }
        _ => unreachable!(),
    }
}

#[test]
fn time_answers_bad_formats_with_an_error_and_keeps_serving_over_tcp_and_udp() {
    for transport in ["tcp", "udp"] {
        let server = Sockserv::start(&[
            "--transport",
            transport,
            "--listen",
            "127.0.0.1:0",
            "--service",
            "time",
        ]);
        // One connection for all requests over tcp: each bad request must
        // leave it usable.
        let mut conn =
            (transport == "tcp").then(|| Conn::connect(transport, &server.addr).unwrap());
        let dgram = (transport == "udp").then(|| Dgram::new(transport, &server.addr));

        let reply = time_request(&mut conn, &dgram, b"\xff\xfe%Y\n");
        assert!(
            reply.starts_with(b"error: format is not valid UTF-8"),
            "{transport}: {:?}",
            String::from_utf8_lossy(&reply)
        );

        let reply = time_request(&mut conn, &dgram, b"%Q%\n");
        assert!(
            reply.starts_with(b"error:"),
            "{transport}: bad strftime format got {:?}",
            String::from_utf8_lossy(&reply)
        );

        let reply = time_request(&mut conn, &dgram, b"%Y\n");
        assert!(
            reply.len() == 4 && reply.iter().all(u8::is_ascii_digit),
            "{transport}: %Y after errors got {:?}",
            String::from_utf8_lossy(&reply)
        );

        let reply = time_request(&mut conn, &dgram, b"\n");
        assert!(
            is_default_timestamp(&reply),
            "{transport}: empty line got {:?}",
            String::from_utf8_lossy(&reply)
        );
    }
}

// ---------------------------------------------------------------------------
// A client that vanishes mid-reply

/// More than any loopback socket buffers hold between client and server.
const FLOOD_BYTES: usize = 8 << 20;

/// Writes up to FLOOD_BYTES without reading a byte of the echo. Stops early
/// when a write makes no progress for the write timeout: the server has then
/// stopped reading because it is blocked writing its reply to us.
fn flood(w: &mut impl Write) -> usize {
    let chunk = vec![b'v'; 64 * 1024];
    let mut total = 0;
    while total < FLOOD_BYTES {
        match w.write(&chunk) {
            Ok(n) => total += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("flooding the server after {total} bytes: {e}"),
        }
    }
    total
}

/// How a client leaves in the middle of its reply.
#[derive(Debug, Clone, Copy)]
enum Vanish {
    /// Floods the echo server without reading, then goes: a TCP client
    /// resets the connection (SO_LINGER 0), a Unix client closes with the
    /// echo unread.
    Flood,
    /// Stops reading (shutdown SHUT_RD) before it sends its request, so the
    /// reply is written to a peer that takes no more data: EPIPE, the write
    /// that raises SIGPIPE unless the server guards against it.
    StopReading,
}

/// Runs `how` against the echo server at `addr`; returns the socket if it
/// must stay open until the server is done with it.
fn vanish(transport: &str, addr: &str, how: Vanish, what: &str) -> Option<UnixStream> {
    // The write timeout bounds each stalled write; it is not a sleep.
    let stall = Some(Duration::from_millis(200));
    match (transport, how) {
        ("tcp", Vanish::Flood) => {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_write_timeout(stall).unwrap();
            let sent = flood(&mut s);
            assert!(sent >= 256 * 1024, "{what}: only {sent} bytes went out");
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(s); // RST
            None
        }
        ("unix", Vanish::Flood) => {
            let mut s = UnixStream::connect(addr).unwrap();
            s.set_write_timeout(stall).unwrap();
            let sent = flood(&mut s);
            assert!(sent >= 256 * 1024, "{what}: only {sent} bytes went out");
            None
        }
        ("unix", Vanish::StopReading) => {
            let mut s = UnixStream::connect(addr).unwrap();
            s.shutdown(std::net::Shutdown::Read).unwrap();
            s.write_all(b"a reply nobody reads").unwrap();
            Some(s)
        }
        _ => unreachable!("{what}"),
    }
}

fn vanishing_client_leaves_server_serving(policy: &str, supervised: bool) {
    let cases = [
        ("tcp", Vanish::Flood),
        ("unix", Vanish::Flood),
        ("unix", Vanish::StopReading),
    ];
    for (transport, how) in cases {
        let what = format!("{transport}/{policy} {how:?} supervised={supervised}");
        let mut extra = vec!["--log-level", "debug"];
        if !supervised {
            extra.push("--no-supervisor");
        }
        let (mut server, _dir) = common::start_policy(policy, transport, &extra);
        let serving = serving_pid(&server, supervised);
        let fds_idle = fd_count(serving);
        let client = vanish(transport, &server.addr, how, &what);

        // Wait until the server is done with the vanished client (its child
        // has exited and been reaped, or its connection is closed): a death
        // by SIGPIPE would have happened by then.
        let done = if policy == "fork" {
            wait_until(PROMPTLY, || children(serving).is_empty())
        } else {
            wait_until(PROMPTLY, || fd_count(serving) <= fds_idle)
        };
        assert!(
            done,
            "{what}: still busy with the vanished client: children {:?}, {} fds (idle: {fds_idle})",
            children(serving),
            fd_count(serving)
        );
        drop(client);
        assert_echoes(transport, &server.addr, &what);
        let log = server.log_text();
        // A fork child's death is logged at debug level ("child ended",
        // Signaled(.., SIGPIPE, ..)); a worker's by the master ("worker
        // died", "killed by signal PIPE").
        assert!(!log.contains("SIGPIPE"), "{what}: died of SIGPIPE:\n{log}");
        assert!(
            !log.contains("signal PIPE"),
            "{what}: died of SIGPIPE:\n{log}"
        );
        assert!(!log.contains("worker died"), "{what}:\n{log}");
        assert_eq!(
            server.wait_exit(Duration::ZERO),
            None,
            "{what}: the server died; log:\n{log}"
        );
        if supervised {
            // Not a replacement: the worker that served the vanished client
            // is the one that answered the echo check.
            assert_eq!(children(server.pid()), vec![serving], "{what}:\n{log}");
        }
    }
}

#[test]
fn client_vanishing_mid_reply_leaves_sync_server_serving() {
    vanishing_client_leaves_server_serving("sync", true);
}

#[test]
fn client_vanishing_mid_reply_leaves_thread_server_serving() {
    vanishing_client_leaves_server_serving("thread", true);
}

#[test]
fn client_vanishing_mid_reply_leaves_pool_server_serving() {
    vanishing_client_leaves_server_serving("pool", true);
}

#[test]
fn client_vanishing_mid_reply_leaves_fork_server_serving() {
    vanishing_client_leaves_server_serving("fork", true);
}

#[test]
fn client_vanishing_mid_reply_leaves_unsupervised_sync_server_serving() {
    vanishing_client_leaves_server_serving("sync", false);
}

#[test]
fn client_vanishing_mid_reply_leaves_unsupervised_thread_server_serving() {
    vanishing_client_leaves_server_serving("thread", false);
}

#[test]
fn client_vanishing_mid_reply_leaves_unsupervised_pool_server_serving() {
    vanishing_client_leaves_server_serving("pool", false);
}

#[test]
fn client_vanishing_mid_reply_leaves_unsupervised_fork_server_serving() {
    vanishing_client_leaves_server_serving("fork", false);
}

// ---------------------------------------------------------------------------
// Idle clients

fn idle_client_is_disconnected(policy: &str) {
    for transport in ["tcp", "unix"] {
        let what = format!("{transport}/{policy}");
        let (listen, _dir) = listen_for(transport);
        let _server = Sockserv::start(&[
            "--transport",
            transport,
            "--listen",
            &listen,
            "--policy",
            policy,
            "--idle-timeout",
            "0.3",
        ]);
        let mut c = Conn::connect(transport, &_server.addr).unwrap();
        assert_eq!(c.request(b"awake", 5).unwrap(), b"awake", "{what}");
        let idle_since = Instant::now();
        // Upper bound only: the server must hang up long before this.
        c.set_timeout(Some(PROMPTLY));
        let mut buf = [0u8; 16];
        match read_some(&mut c, &mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("{what}: unexpected {n} bytes {:?}", &buf[..n]),
            Err(e) => panic!("{what}: no end-of-file from the server: {e}"),
        }
        let idle = idle_since.elapsed();
        // The server's timer started just before we got the echo, so allow
        // it to fire a little less than 300 ms after `idle_since`.
        assert!(
            idle >= Duration::from_millis(200),
            "{what}: hung up after only {idle:?}"
        );
    }
}

#[test]
fn idle_client_is_disconnected_after_idle_timeout_under_thread() {
    idle_client_is_disconnected("thread");
}

#[test]
fn idle_client_is_disconnected_after_idle_timeout_under_fork() {
    idle_client_is_disconnected("fork");
}

// ---------------------------------------------------------------------------
// Unix socket paths

/// Runs sockserv on a path that must be refused; returns its log.
fn expect_refusal(transport: &str, path: &str) -> String {
    let mut s = Sockserv::spawn(&["--transport", transport, "--listen", path]);
    let status = s
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{transport} {path}: still running; log:\n{}", s.log_text()));
    let log = s.log_text();
    assert!(
        !status.success() && status.code().is_some(),
        "{transport} {path}: {status:?}; log:\n{log}"
    );
    assert!(!log.contains("\"msg\":\"listening\""), "{log}");
    log
}

#[test]
fn regular_file_at_unix_path_is_refused_and_left_unchanged() {
    for transport in ["unix", "unix-dgram"] {
        let (_dir, path) = temp_socket("not-a-socket");
        std::fs::write(&path, b"precious data\n").unwrap();
        let before = std::fs::metadata(&path).unwrap();
        let p = path.to_str().unwrap();

        let log = expect_refusal(transport, p);
        assert!(
            log.contains(p),
            "{transport}: stderr does not name {p}:\n{log}"
        );
        assert!(log.contains("not a socket"), "{transport}:\n{log}");

        let after = std::fs::metadata(&path).unwrap();
        assert!(
            after.is_file(),
            "{transport}: {p} is no longer a regular file"
        );
        assert_eq!(after.ino(), before.ino(), "{transport}: {p} was replaced");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"precious data\n",
            "{transport}"
        );
    }
}

#[test]
fn directory_at_unix_path_is_refused_and_left_unchanged() {
    for transport in ["unix", "unix-dgram"] {
        let (_dir, path) = temp_socket("a-directory");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), b"kept").unwrap();
        let p = path.to_str().unwrap();

        let log = expect_refusal(transport, p);
        assert!(
            log.contains(p),
            "{transport}: stderr does not name {p}:\n{log}"
        );
        assert!(log.contains("not a socket"), "{transport}:\n{log}");

        assert!(path.is_dir(), "{transport}: {p} is no longer a directory");
        assert_eq!(
            std::fs::read(path.join("inside")).unwrap(),
            b"kept",
            "{transport}"
        );
    }
}

#[test]
fn stale_socket_file_is_replaced_and_served() {
    for transport in ["unix", "unix-dgram"] {
        let (_dir, path) = temp_socket("stale.sock");
        if transport == "unix" {
            drop(UnixListener::bind(&path).unwrap());
        } else {
            drop(UnixDatagram::bind(&path).unwrap());
        }
        let stale = std::fs::symlink_metadata(&path)
            .unwrap_or_else(|e| panic!("{transport}: the stale file should remain: {e}"));
        assert!(stale.file_type().is_socket());

        let p = path.to_str().unwrap();
        let server = Sockserv::start(&["--transport", transport, "--listen", p]);
        assert_eq!(server.addr, p);
        assert_echoes(
            transport,
            p,
            &format!("{transport} on a formerly stale path"),
        );
    }
}

#[test]
fn path_of_a_live_server_is_refused_and_its_socket_file_untouched() {
    for transport in ["unix", "unix-dgram"] {
        let (_dir, path) = temp_socket("live.sock");
        let p = path.to_str().unwrap();
        let live = Sockserv::start(&["--transport", transport, "--listen", p]);
        let before = std::fs::symlink_metadata(&path).unwrap();

        let log = expect_refusal(transport, p);
        assert!(
            log.contains("Address already in use"),
            "{transport}:\n{log}"
        );
        assert!(
            log.contains(p),
            "{transport}: stderr does not name {p}:\n{log}"
        );

        let after = std::fs::symlink_metadata(&path)
            .unwrap_or_else(|e| panic!("{transport}: the live socket file is gone: {e}"));
        assert!(after.file_type().is_socket(), "{transport}");
        assert_eq!(
            after.ino(),
            before.ino(),
            "{transport}: socket file replaced"
        );
        assert_echoes(
            transport,
            &live.addr,
            &format!("{transport}: the live server"),
        );
    }
}

#[test]
fn unix_socket_file_is_removed_on_sigterm() {
    for transport in ["unix", "unix-dgram"] {
        for supervisor in [None, Some("--no-supervisor")] {
            let what = format!("{transport} {supervisor:?}");
            let (_dir, path) = temp_socket("srv.sock");
            let p = path.to_str().unwrap();
            let mut args = vec!["--transport", transport, "--listen", p];
            args.extend(supervisor);
            let mut server = Sockserv::start(&args);
            assert!(std::fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_socket());
            assert_echoes(transport, p, &what);

            let status = server.stop().expect("sockserv exits on SIGTERM");
            assert!(
                status.success(),
                "{what}: {status:?}; log:\n{}",
                server.log_text()
            );
            assert!(
                std::fs::symlink_metadata(&path).is_err(),
                "{what}: {p} left behind after a clean stop"
            );
        }
    }
}

#[test]
fn socket_mode_is_applied_to_the_unix_socket_file() {
    for transport in ["unix", "unix-dgram"] {
        for (flag, mode) in [("0600", 0o600), ("0660", 0o660)] {
            let (_dir, path) = temp_socket("srv.sock");
            let p = path.to_str().unwrap();
            let server = Sockserv::start(&[
                "--transport",
                transport,
                "--listen",
                p,
                "--socket-mode",
                flag,
            ]);
            let meta = std::fs::symlink_metadata(&path).unwrap();
            assert_eq!(
                meta.permissions().mode() & 0o7777,
                mode,
                "{transport} --socket-mode {flag}: mode is {:o}",
                meta.permissions().mode() & 0o7777
            );
            // The owner (this test's user) can still connect.
            assert_echoes(transport, &server.addr, &format!("{transport} mode {flag}"));
        }
    }
}

#[test]
fn abstract_names_serve_echo_without_creating_a_file() {
    for transport in ["unix", "unix-dgram"] {
        let name = unique_abstract_name(transport);
        let server = Sockserv::start(&["--transport", transport, "--listen", &name]);
        assert_eq!(server.addr, name, "{transport}: listening line addr");
        assert_echoes(transport, &name, &format!("{transport} {name}"));
        assert!(
            !Path::new(&name).exists(),
            "{transport}: a file named {name} was created"
        );
    }
}

#[test]
fn a_client_that_never_reads_its_replies_is_closed_by_the_write_timeout() {
    for policy in ["sync", "thread", "fork"] {
        let srv = Sockserv::start(&[
            "--listen",
            "127.0.0.1:0",
            "--no-supervisor",
            "--policy",
            policy,
            "--idle-timeout",
            "1",
        ]);
        // Fills both socket buffers: the server blocks writing the echo.
        let mut hog = TcpStream::connect(&srv.addr).unwrap();
        hog.set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let sent = flood(&mut hog);
        assert!(sent >= 256 * 1024, "{policy}: only {sent} bytes went out");
        // The blocked write times out and the connection is closed: under
        // sync that is what lets the next client in.
        let started = Instant::now();
        let mut c = Conn::connect("tcp", &srv.addr).unwrap();
        c.set_timeout(Some(PROMPTLY));
        assert_eq!(c.request(b"next\n", 5).unwrap(), b"next\n", "{policy}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{policy}: the next client waited {:?}",
            started.elapsed()
        );
        // The hog's connection is closed by the server, not left wedged.
        hog.set_read_timeout(Some(PROMPTLY)).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let closed = wait_until(PROMPTLY, || {
            use std::io::Read;
            !matches!(hog.read(&mut buf), Ok(n) if n > 0)
        });
        assert!(closed, "{policy}: the hog's connection stayed open");
    }
}
