//! `--service files` under hostile input, per policy (sync, fork, thread,
//! pool) over TCP and Unix stream: random bytes, NUL bytes, a half-closed
//! connection and a client that never reads a download each get an error
//! or a close, never a crash, and a normal client is served afterwards;
//! the server's memory stays bounded.

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::files::FilesSite;
use common::{random_bytes, tree_rss_kib, wait_until, Conn};
use socketserver::services::files::client::{FilesClient, Stream};
use socketserver::services::files::frame::encode;

const LIMIT: Duration = Duration::from_secs(10);

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A download bigger than any socket buffer pair.
const BIG: usize = 16 << 20;

/// A files server with a 1 s idle (and write) timeout and an access log.
struct Site {
    files: FilesSite,
    access_log: std::path::PathBuf,
    _log_dir: tempfile::TempDir,
}

impl Site {
    fn start(transport: &'static str, policy: &str) -> Site {
        let log_dir = tempfile::tempdir().unwrap();
        let access_log = log_dir.path().join("access.log");
        let files = FilesSite::start(
            transport,
            policy,
            &[
                "--idle-timeout",
                "1",
                "--access-log",
                access_log.to_str().unwrap(),
            ],
        );
        Site {
            files,
            access_log,
            _log_dir: log_dir,
        }
    }

    fn pid(&self) -> i32 {
        self.files.srv.pid()
    }

    /// A raw connection, its greeting frame read.
    fn raw(&self) -> Conn {
        let mut c = Conn::connect(self.files.transport, &self.files.srv.addr).unwrap();
        c.set_timeout(Some(LIMIT));
        let greeting = read_frame(&mut c).expect("a greeting");
        assert!(greeting.starts_with(b"hello sockfiles/"), "{greeting:?}");
        c
    }

    /// A normal client logs in and works.
    fn still_serves(&self, what: &str) {
        let mut c = self.files.login("alice");
        let dir = format!("ok-{}", SEQ.fetch_add(1, Ordering::Relaxed));
        c.mkdir(&dir)
            .unwrap_or_else(|e| panic!("{what}: a normal client failed: {e}"));
    }

    fn timeouts_logged(&self) -> usize {
        std::fs::read_to_string(&self.access_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("timeout"))
            .count()
    }
}

/// One frame's payload, or None at end of stream.
fn read_frame(c: &mut Conn) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    c.read_exact(&mut len).ok()?;
    let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
    c.read_exact(&mut payload).ok()?;
    Some(payload)
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode(payload, &mut out);
    out
}

/// Reads to end of stream (or error); the bytes read.
fn drain(c: &mut Conn) -> usize {
    let mut buf = [0u8; 65536];
    let mut total = 0;
    while let Ok(n) = c.read(&mut buf) {
        if n == 0 {
            break;
        }
        total += n;
    }
    total
}

fn hostile(policy: &str, transport: &'static str) {
    let what = format!("files {policy} over {transport}");
    let site = Site::start(transport, policy);
    let rss = tree_rss_kib(site.pid());

    // Random bytes: whatever frame length they spell is refused or waited
    // for; the connection ends with an error or a close, never a crash.
    let mut c = site.raw();
    let _ = c.write_all(&random_bytes(7, 64 * 1024));
    c.shutdown_write().unwrap();
    drain(&mut c);
    drop(c);
    site.still_serves(&format!("{what}, after random bytes"));

    // NUL bytes inside a frame: an error reply, not a crash.
    let mut c = site.raw();
    c.write_all(&frame(b"login \0alice\0")).unwrap();
    let reply = read_frame(&mut c).expect("a reply to a NUL-laden login");
    assert!(reply.starts_with(b"err"), "{what}: {reply:?}");
    drop(c);

    // A frame, then the write side shut: its reply, then the close.
    let mut c = site.raw();
    c.write_all(&frame(b"quota")).unwrap();
    c.shutdown_write().unwrap();
    let reply = read_frame(&mut c).expect("a reply after a half-close");
    assert!(
        reply.starts_with(b"err"),
        "{what}: not logged in: {reply:?}"
    );
    assert_eq!(drain(&mut c), 0, "{what}: closed after the reply");

    // A client that asks for a big download and never reads it: the
    // write times out (--idle-timeout 1) and the connection is closed,
    // while a normal client is served (under sync, once it is).
    let mut up = site.files.login("alice");
    let body = random_bytes(3, BIG);
    up.put(&mut body.as_slice(), BIG as u64, "big").unwrap();
    drop(up);
    let before = site.timeouts_logged();
    let mut stuck = site.files.login("alice");
    stuck.framed().send(b"get big").unwrap();
    site.still_serves(&format!("{what}, beside a client that does not read"));
    assert!(
        wait_until(LIMIT, || site.timeouts_logged() > before),
        "{what}: the client that never reads was not timed out"
    );
    let got = drain_client(&mut stuck);
    assert!(
        got < BIG,
        "{what}: the whole download went to a client that never read ({got} bytes)"
    );
    site.still_serves(&format!("{what}, after the stuck client"));

    let grown = tree_rss_kib(site.pid()).saturating_sub(rss);
    assert!(
        grown < 16 * 1024,
        "{what}: the server tree grew by {grown} KiB"
    );
}

/// What a client that stopped reading still finds on its socket.
fn drain_client(c: &mut FilesClient<Stream>) -> usize {
    let wire = c.framed().wire();
    let mut buf = [0u8; 65536];
    let mut total = 0;
    let _ = match wire {
        Stream::Tcp(s) => s.set_read_timeout(Some(LIMIT)),
        Stream::Unix(s) => s.set_read_timeout(Some(LIMIT)),
    };
    while let Ok(n) = wire.read(&mut buf) {
        if n == 0 {
            break;
        }
        total += n;
    }
    total
}

macro_rules! per_policy {
    ($($name:ident: $policy:literal),*) => {$(
        #[test]
        fn $name() {
            common::join_all(
                ["tcp", "unix"].map(|t| std::thread::spawn(move || hostile($policy, t))),
            );
        }
    )*};
}

per_policy!(sync: "sync", fork: "fork", thread: "thread", pool: "pool");
