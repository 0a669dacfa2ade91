//! `sockserv --service files`: framing, login, file operations, confinement
//! and quotas against real servers.
//!
//! Accounts use `--hash-cost m=64,t=1,p=1` so that logging in stays fast.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::wait_until;
use sha2::{Digest, Sha256};
use socketserver::services::files::client::{ClientError, FilesClient, Stream};
use socketserver::services::files::frame::encode;
use socketserver::services::files::fsops::Entry;

use common::files::FilesSite as Site;

fn raw(c: &mut FilesClient<Stream>) -> &mut Stream {
    c.framed().wire()
}

fn frames(payloads: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in payloads {
        encode(p, &mut out);
    }
    out
}

fn reply(c: &mut FilesClient<Stream>) -> String {
    String::from_utf8(c.framed().recv().unwrap().expect("a reply frame")).unwrap()
}

#[test]
fn frames_written_byte_by_byte_or_glued_together_parse_right() {
    let site = Site::start("tcp", "thread", &[]);
    let mut c = site.login("alice");
    if let Stream::Tcp(s) = raw(&mut c) {
        s.set_nodelay(true).unwrap();
    }
    for b in frames(&[b"mkdir slow/path"]) {
        raw(&mut c).write_all(&[b]).unwrap();
    }
    assert_eq!(reply(&mut c), "ok");
    let glued = frames(&[
        b"mkdir a",
        b"mkdir b/c",
        b"put 5 a/g.txt",
        b"hel",
        b"lo",
        b"ls",
        b"quota",
    ]);
    raw(&mut c).write_all(&glued).unwrap();
    for want in [
        "ok",
        "ok",
        "ok",
        "ok stored 5",
        "ok 3",
        "d 0 a",
        "d 0 b",
        "d 0 slow",
    ] {
        assert_eq!(reply(&mut c), want);
    }
    assert!(reply(&mut c).starts_with("ok used=5 quota="));
    let mut g = Vec::new();
    c.get("a/g.txt", &mut g).unwrap();
    assert_eq!(g, b"hello");
}

#[test]
fn an_oversized_frame_is_refused_unread_and_the_connection_closed() {
    let site = Site::start("tcp", "fork", &["--max-frame", "4096"]);
    let mut c = site.login("alice");
    let mut header = (1u32 << 30).to_be_bytes().to_vec();
    header.extend_from_slice(b"only a little of the gigabyte");
    raw(&mut c).write_all(&header).unwrap();
    assert_eq!(
        reply(&mut c),
        "err frame of 1073741824 bytes exceeds the limit of 4096 bytes; closing"
    );
    assert!(
        c.framed().recv().unwrap().is_none(),
        "closed after the error"
    );
    // A frame at the limit is fine, and the server still serves others.
    let mut d = site.login("alice");
    let cmd = format!("mkdir {}", "x".repeat(4096 - 6));
    assert!(matches!(d.request(&cmd), Err(ClientError::Server(m)) if m.contains("longer than")));
    d.mkdir("fine").unwrap();
}

#[test]
fn a_wrong_password_fails_and_three_failures_close_the_connection() {
    let site = Site::start("tcp", "fork", &[]);
    let mut c = site.connect();
    for (user, pw) in [
        ("alice", "pw-bob-1"),
        ("nobody", "whatever1"),
        ("bob", "pw-alice-1"),
    ] {
        match c.login(user, pw) {
            Err(ClientError::Server(m)) => assert!(m.contains("login failed"), "{m}"),
            other => panic!("{user}: {other:?}"),
        }
    }
    assert_eq!(reply(&mut c), "err too many failed logins; closing");
    assert!(c.framed().recv().unwrap().is_none());
    assert!(
        matches!(site.connect().mkdir("x"), Err(ClientError::Server(m)) if m.starts_with("log in first"))
    );
    assert!(site
        .srv
        .wait_log(Duration::from_secs(5), |l| l.contains("files login failed")
            && l.contains("nobody"))
        .is_some());
}

/// `len` bytes of xorshift noise (incompressible, reproducible).
fn write_noise(path: &Path, len: usize) -> [u8; 32] {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut h = Sha256::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut block = vec![0u8; 1 << 16];
    let mut left = len;
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(block.len());
        f.write_all(&block[..n]).unwrap();
        h.update(&block[..n]);
        left -= n;
    }
    f.flush().unwrap();
    h.finalize().into()
}

fn sha256_file(path: &Path) -> [u8; 32] {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return h.finalize().into();
        }
        h.update(&buf[..n]);
    }
}

#[test]
fn a_50_mb_file_round_trips_with_equal_checksums_under_fork_and_thread() {
    const SIZE: usize = 50 * 1024 * 1024;
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("big.bin");
    let sum = write_noise(&src, SIZE);
    for policy in ["fork", "thread"] {
        let site = Site::start("tcp", policy, &[]);
        let mut c = site.login("alice");
        c.mkdir("deep/er").unwrap();
        assert_eq!(c.put_file(&src, "deep/er/big.bin").unwrap(), SIZE as u64);
        let listed = c.ls("deep/er").unwrap();
        let want = Entry {
            kind: 'f',
            size: SIZE as u64,
            name: "big.bin".into(),
        };
        assert_eq!(listed, vec![want], "{policy}");
        let back = local.path().join(format!("back-{policy}.bin"));
        assert_eq!(c.get_file("deep/er/big.bin", &back).unwrap(), SIZE as u64);
        assert_eq!(sha256_file(&back), sum, "{policy}: downloaded copy");
        assert_eq!(
            sha256_file(&site.home("alice").join("deep/er/big.bin")),
            sum,
            "{policy}: stored copy"
        );
        c.rm("deep/er/big.bin").unwrap();
        assert!(c.ls("deep/er").unwrap().is_empty());
        std::fs::remove_file(&back).unwrap();
    }
}

#[test]
fn dotdot_absolute_and_symlink_escapes_are_refused() {
    let site = Site::start("tcp", "thread", &[]);
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"top secret").unwrap();
    let mut c = site.login("alice");
    let home = site.home("alice");
    std::os::unix::fs::symlink(outside.path(), home.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("../bob", home.join("rel-link")).unwrap();
    let mut bob = site.login("bob");
    bob.mkdir("private").unwrap();
    let refused = |r: Result<(), ClientError>, what: &str| match r {
        Err(ClientError::Server(m)) => assert!(m.contains(what), "{m}"),
        other => panic!("expected a refusal containing {what:?}, got {other:?}"),
    };
    refused(c.mkdir("../bob/x"), "'..' is refused");
    refused(c.mkdir("/tmp/x"), "absolute paths are refused");
    refused(
        c.get("../../accounts.json", &mut Vec::new()).map(drop),
        "'..' is refused",
    );
    refused(
        c.get("abs-link/secret", &mut Vec::new()).map(drop),
        "outside your root",
    );
    refused(c.ls("rel-link").map(drop), "outside your root");
    refused(c.mkdir("rel-link/evil"), "outside your root");
    let mut data: &[u8] = b"overwrite";
    refused(c.put(&mut data, 9, "abs-link/secret"), "outside your root");
    refused(c.rm("abs-link/secret"), "outside your root");
    assert_eq!(
        std::fs::read(outside.path().join("secret")).unwrap(),
        b"top secret"
    );
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
    assert_eq!(bob.ls("private").unwrap(), vec![]);
    assert!(!site.home("bob").join("evil").exists());
}

#[test]
fn an_upload_cut_off_midway_leaves_no_partial_file() {
    for policy in ["fork", "thread"] {
        let site = Site::start("tcp", policy, &[]);
        let mut c = site.login("alice");
        c.request("put 10000000 big.bin").unwrap();
        for _ in 0..16 {
            c.framed().send(&[7u8; 65536]).unwrap();
        }
        // The client dies: the kernel closes its socket, as for a kill -9.
        drop(c);
        let home = site.home("alice");
        let empty = wait_until(Duration::from_secs(10), || {
            std::fs::read_dir(&home)
                .map(|d| d.count() == 0)
                .unwrap_or(false)
        });
        assert!(
            empty,
            "{policy}: left behind: {:?}",
            std::fs::read_dir(&home).unwrap().collect::<Vec<_>>()
        );
        assert!(site.login("alice").ls("").unwrap().is_empty());
    }
}

#[test]
fn file_size_limit_and_quota_are_enforced() {
    let site = Site::start(
        "unix",
        "pool",
        &["--quota", "100K", "--max-file-size", "60K"],
    );
    let mut c = site.login("alice");
    let put = |c: &mut FilesClient<Stream>, name: &str, n: usize| {
        let data = vec![1u8; n];
        c.put(&mut &data[..], n as u64, name)
    };
    match put(&mut c, "too-big", 61 * 1024) {
        Err(ClientError::Server(m)) => {
            assert!(m.contains("exceed the file size limit of 61440"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    put(&mut c, "a", 50 * 1024).unwrap();
    put(&mut c, "b", 50 * 1024).unwrap();
    match put(&mut c, "c", 1) {
        Err(ClientError::Server(m)) => assert!(m.contains("quota exceeded"), "{m}"),
        other => panic!("{other:?}"),
    }
    put(&mut c, "a", 40 * 1024).unwrap();
    assert!(c
        .quota()
        .unwrap()
        .starts_with(&format!("used={} quota=102400", 90 * 1024)));
    // Quota is per user.
    put(&mut site.login("bob"), "a", 60 * 1024).unwrap();
    assert!(!site.home("alice").join("c").exists());
    assert!(!site.home("alice").join("too-big").exists());
}

#[test]
fn files_refuses_datagram_transports() {
    let out = Command::new(common::sockserv_bin())
        .args([
            "--service",
            "files",
            "--transport",
            "udp",
            "--listen",
            "127.0.0.1:0",
        ])
        .args([
            "--accounts",
            "/nonexistent/a.json",
            "--files-root",
            "/nonexistent/root",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs a stream transport (tcp or unix), not udp"),
        "{err}"
    );
}

#[test]
fn sockfiles_runs_one_shot_commands_and_an_interactive_prompt() {
    let site = Site::start("tcp", "fork", &[]);
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("notes.txt");
    std::fs::write(&src, b"remember the milk\n").unwrap();
    let sockfiles = |args: &[&str], stdin: &[u8]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sockfiles"))
            .args(["--connect", &site.srv.addr, "--user", "alice"])
            .args(args)
            .env("SOCKFILES_PASSWORD", "pw-alice-1")
            .current_dir(local.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = sockfiles(&["put", src.to_str().unwrap(), "docs/notes.txt"], b"");
    assert_eq!(code, Some(1), "docs/ does not exist yet: {out} {err}");
    assert!(
        err.contains("put docs/notes.txt: No such file or directory"),
        "{err}"
    );
    let (code, out, _) = sockfiles(&["mkdir", "docs"], b"");
    assert_eq!(code, Some(0), "{out}");
    let (code, out, err) = sockfiles(&["put", src.to_str().unwrap(), "docs/notes.txt"], b"");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "stored docs/notes.txt (18 bytes)\n");
    let (code, out, err) = sockfiles(
        &[],
        b"ls docs\nget docs/notes.txt copy.txt\nrm ../x\nquit\n",
    );
    assert_eq!(code, Some(1), "one command failed: {err}");
    assert!(out.starts_with(">>> f           18 notes.txt\n>>> saved copy.txt (18 bytes)\n>>> error: server: ../x: '..' is refused"), "{out}");
    assert_eq!(
        std::fs::read(local.path().join("copy.txt")).unwrap(),
        b"remember the milk\n"
    );
}
