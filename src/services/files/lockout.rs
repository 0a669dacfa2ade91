//! Wrong passwords counted per client address across connections: after
//! [`LoginLimit::failures`] of them within [`LoginLimit::window`] of the
//! first, logins from that address are refused for
//! [`LoginLimit::lockout`].
//!
//! The count must hold across the fork policy's processes, across
//! supervisor workers and across a worker's restart, so it lives in one
//! small text file in the files root, `ROOT/.sockfiles-logins`, read under
//! a shared `flock` and rewritten under an exclusive one (see
//! [`parts`](super::parts) for why not shared memory). One line per
//! address: `KEY FAILURES FIRST_MS LOCKED_UNTIL_MS` (milliseconds since
//! the Unix epoch). It keeps at most [`MAX_TRACKED`] addresses, dropping
//! those whose window and lockout are over first, then the least recent.
//!
//! A successful login does not clear the count: otherwise whoever holds
//! one account could guess at others, clearing the count with their own
//! login between guesses. Failures simply age out with the window.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::fs::{flock, FlockOperation};

use crate::addr::Address;

/// The table's file name in the files root.
pub const TABLE: &str = ".sockfiles-logins";

/// The most addresses the table remembers.
pub const MAX_TRACKED: usize = 4096;

/// How many wrong passwords an address may send, and for how long it is
/// refused after that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimit {
    /// Wrong passwords within `window` that lock an address out (0: no
    /// limit across connections).
    pub failures: u32,
    /// The span, from an address's first wrong password, in which they count.
    pub window: Duration,
    /// How long logins from a locked-out address are refused.
    pub lockout: Duration,
}

impl LoginLimit {
    /// fail2ban's defaults (`maxretry = 5`, `findtime = 10m`, `bantime =
    /// 10m`): enough for a person's typos, while a guesser from one address
    /// gets 5 tries per 10 minutes, 720 a day.
    pub const DEFAULT: LoginLimit = LoginLimit {
        failures: 5,
        window: Duration::from_secs(600),
        lockout: Duration::from_secs(600),
    };
}

/// What the limit is kept against: an IPv4 address; an IPv6 address's /64
/// (one host usually holds a whole /64, so per-address keys would let it
/// rotate through them); for a Unix socket the peer's user id
/// (`SO_PEERCRED`), since its clients have no address.
pub fn client_key(peer: &Address, sock: &impl AsFd) -> String {
    match peer {
        Address::Inet(a) => match a.ip() {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    format!("{}/64", Ipv6Addr::from(prefix))
                }
            },
        },
        _ => match nix::sys::socket::getsockopt(sock, nix::sys::socket::sockopt::PeerCredentials) {
            Ok(cred) => format!("uid:{}", cred.uid()),
            // Not expected on a Unix stream; all such clients share a key.
            Err(_) => "uid:unknown".to_string(),
        },
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Entry {
    failures: u32,
    first_ms: u64,
    until_ms: u64,
}

/// The failure table of one files root.
#[derive(Debug, Clone)]
pub struct Lockouts {
    path: PathBuf,
    limit: LoginLimit,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Lockouts {
    /// The table in files root `root` (created, mode 0600, on first use).
    pub fn new(root: &Path, limit: LoginLimit) -> Lockouts {
        Lockouts {
            path: root.join(TABLE),
            limit,
        }
    }

    fn open(&self, how: FlockOperation) -> io::Result<File> {
        let ctx = |op: &str, e: io::Error| {
            io::Error::new(e.kind(), format!("{op} {}: {e}", self.path.display()))
        };
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.path)
            .map_err(|e| ctx("open", e))?;
        flock(&f, how).map_err(|e| ctx("lock", e.into()))?;
        Ok(f)
    }

    /// How much longer `key` is locked out, if it is.
    pub fn refused(&self, key: &str) -> io::Result<Option<Duration>> {
        if self.limit.failures == 0 {
            return Ok(None);
        }
        let table = read(&mut self.open(FlockOperation::LockShared)?)?;
        let now = now_ms();
        Ok(table
            .get(key)
            .filter(|e| e.until_ms > now)
            .map(|e| Duration::from_millis(e.until_ms - now)))
    }

    /// Counts a wrong password from `key`; returns the lockout if `key` is
    /// (now) locked out.
    pub fn failed(&self, key: &str) -> io::Result<Option<Duration>> {
        if self.limit.failures == 0 {
            return Ok(None);
        }
        let mut f = self.open(FlockOperation::LockExclusive)?;
        let mut table = read(&mut f)?;
        let now = now_ms();
        let window = self.limit.window.as_millis() as u64;
        let e = table.entry(key.to_string()).or_default();
        if e.until_ms <= now {
            if e.failures == 0 || now.saturating_sub(e.first_ms) >= window {
                *e = Entry {
                    failures: 0,
                    first_ms: now,
                    until_ms: 0,
                };
            }
            e.failures += 1;
            if e.failures >= self.limit.failures {
                let lockout = self.limit.lockout.as_millis() as u64;
                *e = Entry {
                    failures: 0,
                    first_ms: 0,
                    until_ms: now.saturating_add(lockout),
                };
            }
        }
        let left = (e.until_ms > now).then(|| Duration::from_millis(e.until_ms - now));
        prune(&mut table, now, window);
        write(&mut f, &table)
            .map_err(|e| io::Error::new(e.kind(), format!("write {}: {e}", self.path.display())))?;
        Ok(left)
    }
}

/// Drops entries whose window and lockout are over, then the least recent
/// beyond [`MAX_TRACKED`].
fn prune(table: &mut HashMap<String, Entry>, now: u64, window: u64) {
    table.retain(|_, e| {
        e.until_ms > now || (e.failures > 0 && now.saturating_sub(e.first_ms) < window)
    });
    if table.len() > MAX_TRACKED {
        let mut by_age: Vec<(u64, String)> = table
            .iter()
            .map(|(k, e)| (e.first_ms.max(e.until_ms), k.clone()))
            .collect();
        by_age.sort();
        for (_, k) in &by_age[..table.len() - MAX_TRACKED] {
            table.remove(k);
        }
    }
}

/// Parses the table; lines that do not parse (a write cut short) are
/// skipped.
fn read(f: &mut File) -> io::Result<HashMap<String, Entry>> {
    let mut text = String::new();
    f.read_to_string(&mut text)?;
    let mut table = HashMap::new();
    for line in text.lines() {
        let w: Vec<&str> = line.split(' ').collect();
        let [key, n, first, until] = w[..] else {
            continue;
        };
        if let (Ok(failures), Ok(first_ms), Ok(until_ms)) =
            (n.parse(), first.parse(), until.parse())
        {
            let e = Entry {
                failures,
                first_ms,
                until_ms,
            };
            table.insert(key.to_string(), e);
        }
    }
    Ok(table)
}

fn write(f: &mut File, table: &HashMap<String, Entry>) -> io::Result<()> {
    let mut text = String::new();
    for (k, e) in table {
        text.push_str(&format!(
            "{k} {} {} {}\n",
            e.failures, e.first_ms, e.until_ms
        ));
    }
    f.set_len(0)?;
    f.rewind()?;
    f.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(failures: u32, window_ms: u64, lockout_ms: u64) -> LoginLimit {
        LoginLimit {
            failures,
            window: Duration::from_millis(window_ms),
            lockout: Duration::from_millis(lockout_ms),
        }
    }

    #[test]
    fn the_kth_failure_locks_the_key_out_and_others_are_untouched() {
        let d = tempfile::tempdir().unwrap();
        let t = Lockouts::new(d.path(), limit(3, 60_000, 60_000));
        assert_eq!(t.failed("10.0.0.1").unwrap(), None);
        assert_eq!(t.failed("10.0.0.1").unwrap(), None);
        assert_eq!(t.refused("10.0.0.1").unwrap(), None);
        let left = t.failed("10.0.0.1").unwrap().expect("locked out");
        assert!(left > Duration::from_secs(59), "{left:?}");
        assert!(t.refused("10.0.0.1").unwrap().is_some());
        assert_eq!(t.refused("10.0.0.2").unwrap(), None);
        // Another handle (another process, in effect) sees the same table.
        let u = Lockouts::new(d.path(), limit(3, 60_000, 60_000));
        assert!(u.refused("10.0.0.1").unwrap().is_some());
        assert_eq!(u.failed("10.0.0.2").unwrap(), None);
    }

    #[test]
    fn failures_older_than_the_window_are_forgotten() {
        let d = tempfile::tempdir().unwrap();
        let t = Lockouts::new(d.path(), limit(2, 1, 60_000));
        for _ in 0..3 {
            assert_eq!(t.failed("k").unwrap(), None);
            let start = std::time::Instant::now();
            while start.elapsed() < Duration::from_millis(2) {
                std::hint::spin_loop();
            }
        }
        assert_eq!(t.refused("k").unwrap(), None);
    }

    #[test]
    fn zero_failures_means_no_limit() {
        let d = tempfile::tempdir().unwrap();
        let t = Lockouts::new(d.path(), limit(0, 60_000, 60_000));
        for _ in 0..10 {
            assert_eq!(t.failed("k").unwrap(), None);
        }
        assert!(!d.path().join(TABLE).exists());
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut table = HashMap::new();
        for i in 0..MAX_TRACKED + 10 {
            let e = Entry {
                failures: 1,
                first_ms: 1000 + i as u64,
                until_ms: 0,
            };
            table.insert(format!("k{i}"), e);
        }
        prune(&mut table, 1000, 60_000);
        assert_eq!(table.len(), MAX_TRACKED);
        assert!(!table.contains_key("k0") && table.contains_key("k4105"));
    }

    #[test]
    fn ipv6_clients_share_their_slash_64_and_mapped_ipv4_is_ipv4() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let key = |s: &str| client_key(&Address::Inet(s.parse().unwrap()), &sock);
        assert_eq!(key("[2001:db8:1:2:aaaa::1]:5"), "2001:db8:1:2::/64");
        assert_eq!(key("[2001:db8:1:2:bbbb::9]:6"), "2001:db8:1:2::/64");
        assert_eq!(key("[::ffff:192.0.2.7]:7"), "192.0.2.7");
        assert_eq!(key("192.0.2.7:8"), "192.0.2.7");
    }
}
