//! `sockserv --service chat`: real servers, real sockets, real clients.
//!
//! Accounts use `--hash-cost m=64,t=1,p=1` so that registering and logging
//! in stay fast; the default is OWASP's argon2id minimum.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{listen_for, Conn, Dgram, Sockserv};

const FAST: &str = "m=64,t=1,p=1";

fn start(transport: &str, policy: &str, accounts: &Path) -> (Sockserv, Option<tempfile::TempDir>) {
    let (listen, dir) = listen_for(transport);
    let s = Sockserv::start(&[
        "--service",
        "chat",
        "--transport",
        transport,
        "--listen",
        &listen,
        "--policy",
        policy,
        "--accounts",
        accounts.to_str().unwrap(),
        "--hash-cost",
        FAST,
    ]);
    (s, dir)
}

/// A chat client over a stream.
struct User {
    r: BufReader<Conn>,
}

impl User {
    fn connect(transport: &str, addr: &str) -> User {
        let conn = Conn::connect(transport, addr).expect("connect");
        let mut u = User {
            r: BufReader::new(conn),
        };
        assert!(u.line().starts_with("* welcome"));
        u
    }

    fn send(&mut self, line: &str) {
        self.r
            .get_mut()
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }

    fn send_bytes(&mut self, bytes: &[u8]) {
        self.r.get_mut().write_all(bytes).unwrap();
    }

    /// The next line, without its `\n`.
    fn line(&mut self) -> String {
        let mut l = Vec::new();
        self.r.read_until(b'\n', &mut l).expect("read a line");
        assert_eq!(l.pop(), Some(b'\n'), "a whole line: {l:?}");
        String::from_utf8(l).expect("UTF-8 line")
    }

    fn ask(&mut self, line: &str) -> String {
        self.send(line);
        self.line()
    }

    /// Asserts that nothing was queued for this client: its next line is
    /// the reply to a `/who` sent now.
    fn assert_nothing_pending(&mut self) {
        let next = self.ask("/who");
        assert!(next.starts_with("ok: online: "), "unexpected line {next:?}");
    }
}

fn register(transport: &str, addr: &str, name: &str) -> User {
    let mut u = User::connect(transport, addr);
    assert_eq!(
        u.ask(&format!("/register {name} pw-{name}-1")),
        format!("ok: registered and logged in as {name}")
    );
    u
}

#[test]
fn three_tcp_users_broadcast_to_the_others_and_message_one_directly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, _d) = start("tcp", "thread", &dir.path().join("accounts.json"));
    let mut alice = register("tcp", &srv.addr, "alice");
    let mut bob = register("tcp", &srv.addr, "bob");
    let mut carol = register("tcp", &srv.addr, "carol");
    alice.send("hello room");
    assert_eq!(bob.line(), "alice: hello room");
    assert_eq!(carol.line(), "alice: hello room");
    assert_eq!(
        alice.ask("/who"),
        "ok: online: alice, bob, carol",
        "no echo to the sender"
    );
    assert_eq!(alice.ask("/msg bob psst"), "ok: sent to bob");
    assert_eq!(bob.line(), "alice (private): psst");
    carol.assert_nothing_pending();
    bob.assert_nothing_pending();
    assert_eq!(alice.ask("/msg dave hi"), "error: dave is not online");
    drop(carol);
    assert!(common::wait_until(Duration::from_secs(5), || {
        alice.ask("/who") == "ok: online: alice, bob"
    }));
    // A graceful stop ends the sessions still connected.
    let status = srv.stop().expect("sockserv exits on SIGTERM");
    assert!(status.success(), "{status:?}; log:\n{}", srv.log_text());
    assert_eq!(
        alice.r.read_line(&mut String::new()).unwrap(),
        0,
        "alice's connection is closed"
    );
}

#[test]
fn two_udp_users_share_a_room_under_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, _d) = start("udp", "sync", &dir.path().join("accounts.json"));
    let alice = Dgram::new("udp", &srv.addr);
    let bob = Dgram::new("udp", &srv.addr);
    let text =
        |d: &Dgram, req: &str| String::from_utf8(d.request(req.as_bytes()).unwrap()).unwrap();
    let first = text(&alice, "/register alice pw-alice-1");
    assert!(first.starts_with("* welcome"), "{first}");
    assert!(
        first.ends_with("ok: registered and logged in as alice\n"),
        "{first}"
    );
    assert!(text(&bob, "/register bob pw-bob-1").ends_with("ok: registered and logged in as bob\n"));
    alice.send(b"hello over udp").unwrap();
    assert_eq!(bob.recv().unwrap(), b"alice: hello over udp\n");
    assert_eq!(
        text(&alice, "/who"),
        "ok: online: alice, bob\n",
        "no echo to the sender"
    );
    assert_eq!(text(&alice, "/msg bob direct"), "ok: sent to bob\n");
    assert_eq!(bob.recv().unwrap(), b"alice (private): direct\n");
    assert_eq!(text(&bob, "/logout"), "ok: logged out bob\n");
    assert!(text(&bob, "hello").starts_with("error: log in first"));
    srv.stop();
}

#[test]
fn unix_stream_and_unix_datagram_rooms_work_under_pool() {
    let dir = tempfile::tempdir().unwrap();
    for transport in ["unix", "unix-dgram"] {
        let accounts = dir.path().join(format!("{transport}.json"));
        let (mut srv, _d) = start(transport, "pool", &accounts);
        if transport == "unix" {
            let mut alice = register(transport, &srv.addr, "alice");
            let mut bob = register(transport, &srv.addr, "bob");
            alice.send("over a unix stream");
            assert_eq!(bob.line(), "alice: over a unix stream");
            alice.assert_nothing_pending();
        } else {
            let alice = Dgram::new(transport, &srv.addr);
            let bob = Dgram::new(transport, &srv.addr);
            for (d, n) in [(&alice, "alice"), (&bob, "bob")] {
                let r = d
                    .request(format!("/register {n} pw-{n}-1").as_bytes())
                    .unwrap();
                let text = String::from_utf8(r).unwrap();
                assert!(
                    text.ends_with(&format!("ok: registered and logged in as {n}\n")),
                    "{text}"
                );
            }
            alice.send(b"over unix datagrams").unwrap();
            assert_eq!(bob.recv().unwrap(), b"alice: over unix datagrams\n");
        }
        srv.stop();
    }
}

#[test]
fn friends_persist_across_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let accounts = dir.path().join("accounts.json");
    let (mut srv, _d) = start("tcp", "thread", &accounts);
    let mut alice = register("tcp", &srv.addr, "alice");
    let bob = register("tcp", &srv.addr, "bob");
    assert_eq!(alice.ask("/friend add bob"), "ok: bob is your friend");
    assert_eq!(
        alice.ask("/friend add zed"),
        "error: there is no account named zed"
    );
    assert_eq!(alice.ask("/friends"), "ok: friends: bob (online)");
    drop((alice, bob));
    srv.stop();

    let (mut srv, _d) = start("tcp", "thread", &accounts);
    let mut alice = User::connect("tcp", &srv.addr);
    assert_eq!(
        alice.ask("/login alice pw-alice-1"),
        "ok: logged in as alice"
    );
    assert_eq!(alice.ask("/friends"), "ok: friends: bob (offline)");
    let mut bob = User::connect("tcp", &srv.addr);
    assert_eq!(bob.ask("/login bob pw-bob-1"), "ok: logged in as bob");
    assert_eq!(alice.ask("/friends"), "ok: friends: bob (online)");
    assert_eq!(
        alice.ask("/friend del bob"),
        "ok: bob is no longer your friend"
    );
    assert_eq!(
        alice.ask("/friends"),
        "ok: no friends yet (/friend add NAME)"
    );
    srv.stop();
    let saved = std::fs::read_to_string(&accounts).unwrap();
    assert!(!saved.contains("pw-alice-1"), "no password is stored");
    assert!(saved.contains("$scram-argon2id$v=19$m=64,t=1,p=1$"));
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "only the accounts file, no temp files");
}

#[test]
fn a_wrong_password_is_rejected_then_rate_limited_by_name_and_address() {
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, _d) = start("tcp", "thread", &dir.path().join("accounts.json"));
    drop(register("tcp", &srv.addr, "alice"));
    drop(register("tcp", &srv.addr, "bob"));
    let mut m = User::connect("tcp", &srv.addr);
    for _ in 0..3 {
        assert_eq!(
            m.ask("/login alice not-the-password"),
            "error: wrong name or password"
        );
    }
    let locked = m.ask("/login alice pw-alice-1");
    assert!(
        locked.starts_with("error: too many failed logins; try again in "),
        "{locked}"
    );
    // The same address is locked out for other names too.
    let mut other = User::connect("tcp", &srv.addr);
    assert!(other
        .ask("/login bob pw-bob-1")
        .starts_with("error: too many failed logins"));
    assert!(srv
        .wait_log(Duration::from_secs(5), |l| l.contains("chat login failed")
            && l.contains("alice"))
        .is_some());
    srv.stop();
}

#[test]
fn escape_sequences_in_names_and_texts_are_neutralised() {
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, _d) = start("tcp", "thread", &dir.path().join("accounts.json"));
    let mut evil = User::connect("tcp", &srv.addr);
    let refused = evil.ask("/register e\x1b[31mvil password1");
    assert_eq!(
        refused,
        "error: bad name: a name may not contain control characters or escape sequences"
    );
    let mut alice = register("tcp", &srv.addr, "alice");
    let mut bob = register("tcp", &srv.addr, "bob");
    let mut carol = register("tcp", &srv.addr, "carol");
    assert_eq!(carol.ask("/color on"), "ok: colour on");
    alice.send_bytes(b"red \x1b[31malert\x07 \xc2\x9b2J \xe2\x80\xae!\n");
    let plain = bob.line();
    assert_eq!(plain, "alice: red \\x1b[31malert\\x07 \\u{9b}2J \\u{202e}!");
    let coloured = carol.line();
    let esc = coloured.matches('\x1b').count();
    assert_eq!(esc, 2, "only the name's colour and its reset: {coloured:?}");
    assert!(coloured.starts_with("\x1b[38;5;"), "{coloured:?}");
    assert!(coloured.ends_with("alice\x1b[0m: red \\x1b[31malert\\x07 \\u{9b}2J \\u{202e}!"));
    srv.stop();
}

#[test]
fn bad_input_gets_a_clear_reply_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, _d) = start("tcp", "thread", &dir.path().join("accounts.json"));
    let mut bob = register("tcp", &srv.addr, "bob");
    let mut u = User::connect("tcp", &srv.addr);
    assert!(u.ask("hello?").starts_with("error: log in first"));
    assert!(u.ask("/msg bob hi").starts_with("error: log in first"));
    assert_eq!(u.ask("/dance"), "error: unknown command /dance (try /help)");
    assert_eq!(u.ask("/login bob"), "error: usage: /login NAME PASSWORD");
    u.send_bytes(b"\xff\xfe not utf-8\n");
    assert_eq!(u.line(), "error: line is not valid UTF-8; nothing was sent");
    u.send(&"x".repeat(100_000));
    assert_eq!(
        u.line(),
        "error: line longer than 2048 bytes; nothing was sent"
    );
    assert_eq!(
        u.ask("/register alice pw-alice-1"),
        "ok: registered and logged in as alice"
    );
    u.send(&"y".repeat(3000));
    assert_eq!(
        u.line(),
        "error: line longer than 2048 bytes; nothing was sent"
    );
    bob.assert_nothing_pending();
    assert_eq!(
        u.ask("/register carol pw-carol-1"),
        "error: already logged in as alice; /logout first"
    );
    srv.stop();
}

fn refusal(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(common::sockserv_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run sockserv");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn fork_policy_and_several_workers_refuse_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let acc = dir.path().join("accounts.json");
    let acc = acc.to_str().unwrap();
    let base = [
        "--service",
        "chat",
        "--accounts",
        acc,
        "--listen",
        "127.0.0.1:0",
    ];
    let (code, err) = refusal(&[&base[..], &["--policy", "fork"]].concat());
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("under --policy fork every connection runs in a separate child"),
        "{err}"
    );
    assert!(
        err.contains("use --policy thread, event, pool or sync"),
        "{err}"
    );
    let (code, err) = refusal(&[&base[..], &["--workers", "2"]].concat());
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--workers > 1 would split users across separate rooms"),
        "{err}"
    );
    assert!(!Path::new(acc).exists(), "nothing was created");
}

#[test]
fn sockcat_logs_in_and_chats_over_tcp_and_udp() {
    let dir = tempfile::tempdir().unwrap();
    for transport in ["tcp", "udp"] {
        let accounts = dir.path().join(format!("{transport}.json"));
        let (mut srv, _d) = start(transport, "thread", &accounts);
        let mut cat = Command::new(env!("CARGO_BIN_EXE_sockcat"))
            .args([
                "--transport",
                transport,
                &srv.addr,
                "--name",
                "alice",
                "--register",
            ])
            .args(["--linger", "0.5"])
            .env("SOCKCAT_PASSWORD", "pw-alice-1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sockcat");
        cat.stdin
            .take()
            .unwrap()
            .write_all(b"/who\n/friends\n")
            .unwrap();
        let out = cat.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{transport}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("ok: registered and logged in as alice\n"),
            "{transport}: {text}"
        );
        assert!(text.contains("ok: online: alice\n"), "{transport}: {text}");
        assert!(text.contains("ok: no friends yet"), "{transport}: {text}");
        srv.stop();
    }
}

#[test]
fn sockcat_exits_1_on_a_failed_login_and_never_shows_the_password() {
    let dir = tempfile::tempdir().unwrap();
    for transport in ["tcp", "udp"] {
        let accounts = dir.path().join(format!("fail-{transport}.json"));
        let (mut srv, _d) = start(transport, "thread", &accounts);
        let secret = "hunter2-wrong-secret";
        let out = Command::new(env!("CARGO_BIN_EXE_sockcat"))
            .args(["--transport", transport, &srv.addr, "--name", "nobody"])
            .args(["--linger", "0.5"])
            .env("SOCKCAT_PASSWORD", secret)
            .stdin(Stdio::null())
            .output()
            .expect("run sockcat");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{transport}: {stdout} / {stderr}"
        );
        assert!(stderr.contains("refused: error:"), "{transport}: {stderr}");
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{transport}: the password was shown: {stdout} / {stderr}"
        );
        srv.stop();
    }
}

#[test]
fn sockcat_usage_errors_exit_2_in_one_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_sockcat"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("<ADDR>"), "{err}");
}
