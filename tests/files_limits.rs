//! `sockserv --service files` limits that must hold across processes
//! (fork children, supervisor workers, restarts) as well as threads: part
//! files of killed uploads are swept and never counted, concurrent uploads
//! reserve quota, and wrong passwords lock an address out across
//! connections.
//!
//! Accounts use `--hash-cost m=64,t=1,p=1` so that logging in stays fast.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{children, serving_pid, wait_until};
use socketserver::services::files::client::{ClientError, FilesClient, Stream};
use socketserver::Transport;

const PART: &str = ".sockfiles-part-";

use common::files::FilesSite as Site;

/// The part files under `dir`, at any depth, with their sizes.
fn part_files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let meta = e.metadata().unwrap();
        if meta.is_dir() {
            out.extend(part_files(&e.path()));
        } else if e.file_name().to_string_lossy().starts_with(PART) {
            out.push((e.path(), meta.len()));
        }
    }
    out
}

/// `used` and `reserved` from a quota reply.
fn quota(c: &mut FilesClient<Stream>) -> (u64, u64) {
    let q = c.quota().unwrap();
    let field = |k: &str| -> u64 {
        q.split(' ')
            .find_map(|w| w.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} in {q:?}"))
            .parse()
            .unwrap()
    };
    (field("used="), field("reserved="))
}

fn put(c: &mut FilesClient<Stream>, name: &str, n: usize) -> Result<(), ClientError> {
    let data = vec![7u8; n];
    c.put(&mut &data[..], n as u64, name)
}

/// Starts `put SIZE NAME` and sends `sent` bytes, then waits until the
/// server has written them to the part file.
fn half_upload(site: &Site, size: u64, sent: usize) -> FilesClient<Stream> {
    let mut c = site.login("alice");
    c.request(&format!("put {size} big.bin")).unwrap();
    c.framed().send(&vec![9u8; sent]).unwrap();
    let home = site.home("alice");
    let written = wait_until(Duration::from_secs(10), || {
        part_files(&home).iter().any(|(_, len)| *len == sent as u64)
    });
    assert!(
        written,
        "no part file of {sent} bytes: {:?}",
        part_files(&home)
    );
    c
}

#[test]
fn a_part_file_of_a_killed_fork_child_is_not_counted_and_is_swept() {
    let site = Site::start("tcp", "fork", &["--quota", "100K"]);
    let worker = serving_pid(&site.srv, true);
    let c = half_upload(&site, 80 * 1024, 16 * 1024);
    let [child] = children(worker)[..] else {
        panic!("expected one fork child, found {:?}", children(worker));
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || !children(worker)
            .contains(&child)),
        "fork child {child} still there"
    );
    drop(c);
    // Killed, not dropped: the part file is still there, with no live upload.
    let left = part_files(&site.home("alice"));
    assert_eq!(left.len(), 1, "{left:?}");
    // Its 80K reservation died with the child: 90K more fit a 100K quota.
    let mut d = site.login("alice");
    put(&mut d, "fits.bin", 90 * 1024).unwrap();
    assert_eq!(
        part_files(&site.home("alice")),
        vec![],
        "swept by the put's walk"
    );
    assert_eq!(quota(&mut d), (90 * 1024, 0));
}

#[test]
fn part_files_left_behind_are_swept_at_start_and_never_counted() {
    for policy in ["fork", "thread"] {
        let site = Site::start_with("tcp", policy, &["--quota", "100K"], |root| {
            let home = root.join("alice");
            std::fs::create_dir_all(home.join("sub")).unwrap();
            std::fs::write(
                home.join(".sockfiles-part-0123456789abcdef-99999"),
                [1; 4096],
            )
            .unwrap();
            std::fs::write(home.join("sub/.sockfiles-part-feed"), [2; 100]).unwrap();
            std::fs::write(home.join("kept.txt"), b"kept").unwrap();
        });
        let line = site
            .srv
            .wait_log(Duration::from_secs(10), |l| {
                l.contains("removed part files of dead uploads")
            })
            .unwrap_or_else(|| panic!("{policy}: no sweep logged:\n{}", site.srv.log_text()));
        assert!(
            line.contains("\"files\":2") && line.contains("\"bytes\":4196"),
            "{line}"
        );
        assert_eq!(part_files(&site.home("alice")), vec![], "{policy}");
        assert_eq!(quota(&mut site.login("alice")), (4, 0), "{policy}");
    }
}

#[test]
fn a_server_killed_mid_upload_is_swept_by_its_restarted_worker() {
    // Under fork, killing the worker would leave the connection's child
    // alive, still holding its upload: the fork case is the killed child.
    for policy in ["thread", "pool"] {
        let site = Site::start("tcp", policy, &["--quota", "100K"]);
        let worker = serving_pid(&site.srv, true);
        let c = half_upload(&site, 80 * 1024, 16 * 1024);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(worker),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        drop(c);
        let home = site.home("alice");
        assert!(
            wait_until(Duration::from_secs(15), || part_files(&home).is_empty()),
            "{policy}: not swept after the restart: {:?}\n{}",
            part_files(&home),
            site.srv.log_text()
        );
        let mut d = site.login("alice");
        assert_eq!(quota(&mut d), (0, 0), "{policy}");
        put(&mut d, "fits.bin", 90 * 1024).unwrap();
    }
}

#[test]
fn an_upload_in_progress_reserves_its_size_against_a_second_one() {
    for policy in ["fork", "thread"] {
        let site = Site::start("tcp", policy, &["--quota", "100K"]);
        let mut a = site.login("alice");
        let mut b = site.login("alice");
        assert_eq!(a.request("put 61440 a.bin").unwrap(), "");
        match b.request("put 61440 b.bin") {
            Err(ClientError::Server(m)) => assert!(
                m.contains("quota exceeded: 0 of 102400 bytes used and 61440 reserved"),
                "{policy}: {m}"
            ),
            other => panic!("{policy}: the second upload got {other:?}"),
        }
        assert_eq!(quota(&mut b), (0, 61440), "{policy}");
        for chunk in [vec![1u8; 40960], vec![2u8; 20480]] {
            a.framed().send(&chunk).unwrap();
        }
        let stored = String::from_utf8(a.framed().recv().unwrap().unwrap()).unwrap();
        assert_eq!(stored, "ok stored 61440", "{policy}");
        assert!(
            matches!(put(&mut b, "b.bin", 61440), Err(ClientError::Server(m)) if m.contains("quota exceeded"))
        );
        assert_eq!(quota(&mut b), (61440, 0), "{policy}");
        // A refused upload may still shrink to fit.
        put(&mut b, "b.bin", 40960).unwrap();
        assert_eq!(quota(&mut b), (102400, 0), "{policy}");
    }
}

#[test]
fn of_two_racing_uploads_over_the_quota_exactly_one_is_stored() {
    for policy in ["fork", "thread"] {
        let site = Site::start("tcp", policy, &["--quota", "100K"]);
        for round in 0..3 {
            let clients: Vec<_> = (0..2).map(|_| site.login("alice")).collect();
            let start = Arc::new(Barrier::new(2));
            let racers: Vec<_> = clients
                .into_iter()
                .enumerate()
                .map(|(i, mut c)| {
                    let start = Arc::clone(&start);
                    std::thread::spawn(move || {
                        start.wait();
                        let r = put(&mut c, &format!("r{round}-{i}.bin"), 61440);
                        (r, c)
                    })
                })
                .collect();
            let results: Vec<_> = racers.into_iter().map(|t| t.join().unwrap()).collect();
            let outcomes: Vec<_> = results.iter().map(|(r, _)| r).collect();
            let stored = outcomes.iter().filter(|r| r.is_ok()).count();
            assert_eq!(stored, 1, "{policy} round {round}: {outcomes:?}");
            for e in outcomes.iter().filter_map(|r| r.as_ref().err()) {
                let quota = matches!(e, ClientError::Server(m) if m.contains("quota exceeded"));
                assert!(quota, "{policy} round {round}: {e:?}");
            }
            let mut c = site.login("alice");
            let (used, reserved) = quota(&mut c);
            assert_eq!((used, reserved), (61440, 0), "{policy} round {round}");
            let on_disk: u64 = std::fs::read_dir(site.home("alice"))
                .unwrap()
                .map(|e| e.unwrap().metadata().unwrap().len())
                .sum();
            assert_eq!(on_disk, 61440, "{policy} round {round}");
            for e in std::fs::read_dir(site.home("alice")).unwrap() {
                c.rm(&e.unwrap().file_name().to_string_lossy()).unwrap();
            }
        }
    }
}

/// Logs in over a fresh connection from source address `from`.
fn login_from(site: &Site, from: &str, password: &str) -> Result<(), ClientError> {
    let stream = if site.transport == "tcp" {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let src: std::net::SocketAddr = format!("{from}:0").parse().unwrap();
        sock.bind(&src.into()).unwrap();
        let dst: std::net::SocketAddr = site.srv.addr.parse().unwrap();
        sock.connect(&dst.into()).unwrap();
        Stream::Tcp(sock.into())
    } else {
        Stream::connect(Transport::UnixStream, &site.srv.addr).unwrap()
    };
    FilesClient::handshake(stream)?.login("alice", password)
}

fn refusal(r: Result<(), ClientError>) -> String {
    match r {
        Err(ClientError::Server(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn wrong_passwords_from_one_address_lock_it_out_across_connections() {
    let limits = [
        "--login-failures",
        "3",
        "--login-window",
        "60",
        "--login-lockout",
        "1.5",
    ];
    for (transport, policy) in [("tcp", "fork"), ("tcp", "thread"), ("unix", "thread")] {
        let site = Site::start(transport, policy, &limits);
        let what = format!("{transport} {policy}");
        for i in 1..=3 {
            let m = refusal(login_from(&site, "127.0.0.1", "wrong-password"));
            assert!(m.starts_with("login failed"), "{what}: try {i}: {m}");
            assert_eq!(
                m.contains("too many failed logins from your address"),
                i == 3,
                "{what}: try {i}: {m}"
            );
        }
        let locked_at = Instant::now();
        let m = refusal(login_from(&site, "127.0.0.1", "pw-alice-1"));
        assert!(
            m.starts_with("too many failed logins from your address; try again in"),
            "{what}: the right password during the lockout: {m}"
        );
        if transport == "tcp" {
            // Another address is not locked out.
            login_from(&site, "127.0.0.2", "pw-alice-1").unwrap();
        } else {
            // The test's own uid: the owner of the files it creates.
            let uid = std::os::unix::fs::MetadataExt::uid(&site.dir.path().metadata().unwrap());
            let key = format!("\"key\":\"uid:{uid}\"");
            assert!(
                site.srv
                    .wait_log(Duration::from_secs(5), |l| l.contains(&key))
                    .is_some(),
                "{what}: no {key} logged:\n{}",
                site.srv.log_text()
            );
        }
        // After the lockout, the right password works again.
        let mut last = Instant::now() - Duration::from_secs(1);
        let mut outcome = None;
        let back = wait_until(Duration::from_secs(10), || {
            if last.elapsed() < Duration::from_millis(100) {
                return false;
            }
            last = Instant::now();
            let r = login_from(&site, "127.0.0.1", "pw-alice-1");
            let ok = r.is_ok();
            outcome = Some(r);
            ok
        });
        assert!(back, "{what}: still refused: {outcome:?}");
        assert!(
            locked_at.elapsed() >= Duration::from_millis(1000),
            "{what}: let in after {:?}",
            locked_at.elapsed()
        );
    }
}
