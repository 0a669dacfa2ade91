//! Bad bytes for the chat room, under thread and event, over TCP and Unix
//! stream: random bytes, NUL bytes, a 1 MiB line (with and without its
//! newline) and a half-closed client each get an `error:` line or their
//! answer, never a crash, in bounded memory; a member that never reads
//! while others chat is dropped at its output bound (its socket buffer)
//! and the others get every line.
//!
//! Accounts use `--hash-cost m=64,t=1,p=1` so that registering stays fast.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::mpsc;
use std::time::Duration;

use common::{listen_for, random_bytes, tree_rss_kib, Conn, Sockserv};

const LIMIT: Duration = Duration::from_secs(10);
const GROWTH_KIB: u64 = 16 * 1024;
/// Lines alice sends before waiting for bob to have read them.
const BATCH: usize = 40;

fn start(
    transport: &str,
    policy: &str,
    dir: &std::path::Path,
) -> (Sockserv, Option<tempfile::TempDir>) {
    let (listen, sock_dir) = listen_for(transport);
    let accounts = dir.join("accounts");
    let srv = Sockserv::start(&[
        "--service",
        "chat",
        "--no-supervisor",
        "--transport",
        transport,
        "--listen",
        &listen,
        "--policy",
        policy,
        "--accounts",
        accounts.to_str().unwrap(),
        "--hash-cost",
        "m=64,t=1,p=1",
    ]);
    (srv, sock_dir)
}

/// A chat client that has read the greeting.
struct User {
    r: BufReader<Conn>,
}

impl User {
    fn connect(transport: &str, addr: &str) -> User {
        let conn = Conn::connect(transport, addr).expect("connect");
        conn.set_timeout(Some(LIMIT));
        conn.set_write_timeout(Some(LIMIT));
        let mut u = User {
            r: BufReader::new(conn),
        };
        let hello = u.line();
        assert!(hello.starts_with("* welcome"), "{hello:?}");
        u
    }

    fn register(transport: &str, addr: &str, name: &str) -> User {
        let mut u = User::connect(transport, addr);
        let reply = u.ask(format!("/register {name} pw-{name}-1").as_bytes());
        assert_eq!(reply, format!("ok: registered and logged in as {name}"));
        u
    }

    fn send(&mut self, bytes: &[u8]) {
        self.r.get_mut().write_all(bytes).expect("send");
    }

    fn line(&mut self) -> String {
        let mut l = Vec::new();
        self.r.read_until(b'\n', &mut l).expect("read a line");
        assert_eq!(l.pop(), Some(b'\n'), "a whole line: {l:?}");
        String::from_utf8(l).expect("a UTF-8 line")
    }

    fn ask(&mut self, line: &[u8]) -> String {
        self.send(line);
        self.send(b"\n");
        self.line()
    }
}

/// Sends `data` on a fresh connection, closes the sending side, and
/// returns everything the server answers before it closes.
fn exchange(transport: &str, addr: &str, data: &[u8]) -> String {
    let mut c = Conn::connect(transport, addr).unwrap();
    c.set_timeout(Some(LIMIT));
    c.set_write_timeout(Some(LIMIT));
    let mut r = c.try_clone().unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let _ = r.read_to_end(&mut got);
        got
    });
    let _ = c.write_all(data);
    let _ = c.shutdown_write();
    String::from_utf8_lossy(&reader.join().unwrap()).into_owned()
}

fn abuse(policy: &str, transport: &str) {
    let what = format!("chat/{policy}/{transport}");
    let dir = tempfile::tempdir().unwrap();
    let (srv, _sock) = start(transport, policy, dir.path());
    let addr = &srv.addr;
    let before = tree_rss_kib(srv.pid());
    let mut alice = User::register(transport, addr, "alice");
    let mut bob = User::register(transport, addr, "bob");

    // Random bytes from a stranger: error lines, nothing else.
    let got = exchange(transport, addr, &random_bytes(3, 32 * 1024));
    for l in got.lines().skip(1) {
        assert!(
            l.starts_with("error: ") || l.starts_with("ok: "),
            "{what}: {l:?}"
        );
    }
    // NUL bytes: refused before a login, made visible in a text.
    assert!(
        User::connect(transport, addr)
            .ask(b"a\0b")
            .starts_with("error: "),
        "{what}: NUL before login"
    );
    alice.send(b"a\0b\n");
    let seen = bob.line();
    assert!(
        seen.starts_with("alice: a") && !seen.contains('\0'),
        "{what}: bob saw {seen:?}"
    );
    // A 1 MiB line: an error, nothing sent to the room; alice goes on.
    let mut huge = vec![b'x'; 1 << 20];
    huge.push(b'\n');
    alice.send(&huge);
    let reply = alice.line();
    assert!(
        reply.starts_with("error: line longer than 2048 bytes"),
        "{what}: 1 MiB line: {reply:?}"
    );
    assert_eq!(alice.ask(b"/who"), "ok: online: alice, bob", "{what}");
    assert_eq!(
        bob.ask(b"/who"),
        "ok: online: alice, bob",
        "{what}: bob got something"
    );
    // Without its newline, then half-closed: the error, then the end.
    let got = exchange(transport, addr, &vec![b'y'; 1 << 20]);
    assert!(
        got.contains("error: line longer than 2048 bytes"),
        "{what}: unterminated 1 MiB line: {:?}",
        &got[..got.len().min(200)]
    );
    // Half-closed after a command: answered, then closed.
    let got = exchange(transport, addr, b"/help\n");
    assert!(
        got.contains("ok: commands:"),
        "{what}: half-closed: {got:?}"
    );
    assert!(srv.is_running(), "{what}: the server died");
    let after = tree_rss_kib(srv.pid());
    assert!(
        after < before + GROWTH_KIB,
        "{what}: {before} KiB resident before the abuse, {after} KiB after"
    );
}

/// Carol never reads; alice talks, bob listens. Carol is dropped once her
/// buffers fill; bob gets every line in order; alice is never held up.
fn deaf_member(policy: &str, transport: &str) {
    let what = format!("chat/{policy}/{transport}");
    let dir = tempfile::tempdir().unwrap();
    let (srv, _sock) = start(transport, policy, dir.path());
    let addr = &srv.addr;
    let mut alice = User::register(transport, addr, "alice");
    let bob = User::register(transport, addr, "bob");
    let carol = User::register(transport, addr, "carol");
    let (tx, rx) = mpsc::channel::<usize>();
    let listener = std::thread::spawn(move || {
        let mut bob = bob;
        let mut n = 0;
        loop {
            let l = bob.line();
            if l == "alice: done" {
                return (bob, n);
            }
            assert_eq!(l, format!("alice: {n:06} {}", "z".repeat(1000)), "line {n}");
            n += 1;
            if n % BATCH == 0 {
                let _ = tx.send(n);
            }
        }
    });
    // 16 MB in batches small enough for bob's socket buffers (bob reads
    // each before the next is sent): more than carol's buffers hold,
    // however far the kernel grows them.
    let batches = 16_000 / BATCH;
    for b in 0..batches {
        let mut batch = Vec::new();
        for i in b * BATCH..(b + 1) * BATCH {
            batch.extend_from_slice(format!("{i:06} {}\n", "z".repeat(1000)).as_bytes());
        }
        alice.send(&batch);
        let got = rx
            .recv_timeout(LIMIT)
            .unwrap_or_else(|e| panic!("{what}: bob fell behind at batch {b}: {e}"));
        assert_eq!(got, (b + 1) * BATCH, "{what}");
    }
    alice.send(b"done\n");
    let (mut bob, n) = listener.join().unwrap();
    assert_eq!(n, batches * BATCH, "{what}: bob missed lines");
    // Carol is gone from the room, and her connection ended.
    assert_eq!(alice.ask(b"/who"), "ok: online: alice, bob", "{what}");
    assert_eq!(bob.ask(b"/who"), "ok: online: alice, bob", "{what}");
    let mut carol = carol.r.into_inner();
    let mut sink = Vec::new();
    let ended = carol.read_to_end(&mut sink);
    assert!(
        !matches!(&ended, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "{what}: carol's connection was not closed: {ended:?}"
    );
    assert!(srv.is_running(), "{what}: the server died");
}

macro_rules! per_policy {
    ($($policy:ident),*) => {
        $(mod $policy {
            #[test]
            fn bad_bytes_get_errors_over_tcp_and_unix() {
                for transport in ["tcp", "unix"] {
                    super::abuse(stringify!($policy), transport);
                }
            }

            #[test]
            fn a_member_that_never_reads_is_dropped_and_the_room_goes_on() {
                for transport in ["tcp", "unix"] {
                    super::deaf_member(stringify!($policy), transport);
                }
            }
        })*
    };
}

per_policy!(thread, event);
