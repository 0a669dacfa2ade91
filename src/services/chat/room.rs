//! The room: sessions, who is logged in as whom, and delivery of lines to
//! other clients.
//!
//! A session is a stream connection, or a datagram client address that
//! expires after inactivity. Each session has an [`Outlet`], the way to
//! write to it from any thread: a clone of the connection, or the server's
//! datagram socket plus the client's address. Writes to other clients never
//! block: a stream client that lets its socket buffer fill is disconnected
//! rather than stall the sender, and a datagram that does not fit is dropped.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use socket2::{SockAddr, Socket};

/// Identifies a session within a room.
pub type SessionId = u64;

/// Datagram sessions kept at most; past this, new clients are refused.
pub const MAX_DATAGRAM_SESSIONS: usize = 10_000;

/// Where lines for a session go.
#[derive(Clone)]
pub enum Outlet {
    /// A stream connection (a clone of the handler's socket).
    Stream(Arc<StreamOutlet>),
    /// A datagram client.
    Datagram {
        /// The server's socket.
        socket: Arc<Socket>,
        /// The client's address.
        to: SockAddr,
    },
}

/// A stream connection shared by its own handler and the senders of
/// messages to it; the lock keeps lines whole.
pub struct StreamOutlet {
    socket: Mutex<Socket>,
}

impl StreamOutlet {
    /// Wraps a clone of the connection.
    pub fn new(socket: Socket) -> StreamOutlet {
        StreamOutlet {
            socket: Mutex::new(socket),
        }
    }

    /// Writes `data` without blocking; if the client's buffer is full the
    /// connection is shut down (its handler then sees end of stream).
    pub fn send(&self, data: &[u8]) -> io::Result<()> {
        let sock = self.socket.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let err = match sock.send_with_flags(data, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) {
                Ok(n) if n == data.len() => return Ok(()),
                // Part of the line went out: the client's buffer is full.
                Ok(_) => io::ErrorKind::WouldBlock.into(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => e,
            };
            let _ = sock.shutdown(std::net::Shutdown::Both);
            return Err(err);
        }
    }
}

impl Outlet {
    /// Sends `data` without blocking (see [`StreamOutlet::send`]).
    pub fn send(&self, data: &[u8]) -> io::Result<()> {
        match self {
            Outlet::Stream(s) => s.send(data),
            Outlet::Datagram { socket, to } => socket.send_to(data, to).map(|_| ()),
        }
    }
}

/// One session's state.
pub struct Session {
    /// The account logged in, if any.
    pub user: Option<String>,
    /// Whether names are coloured in what this session receives.
    pub colour: bool,
    /// How to reach it.
    pub outlet: Outlet,
    /// The rate-limit key of the client (`addr:IP`, `uid:N`).
    pub client: String,
    /// Last datagram seen (datagram sessions only expire).
    last_seen: Instant,
    /// The client address for datagram sessions.
    dgram_key: Option<String>,
}

/// All sessions of a room.
#[derive(Default)]
pub struct Sessions {
    next: SessionId,
    map: HashMap<SessionId, Session>,
    by_addr: HashMap<String, SessionId>,
}

impl Sessions {
    /// Adds a session and returns its id.
    pub fn add(&mut self, outlet: Outlet, client: String, dgram_key: Option<String>) -> SessionId {
        self.next += 1;
        let id = self.next;
        if let Some(k) = &dgram_key {
            self.by_addr.insert(k.clone(), id);
        }
        self.map.insert(
            id,
            Session {
                user: None,
                colour: false,
                outlet,
                client,
                last_seen: Instant::now(),
                dgram_key,
            },
        );
        id
    }

    /// The datagram session of `addr`, refreshed, if it has not expired.
    pub fn touch_datagram(&mut self, addr: &str, now: Instant, ttl: Duration) -> Option<SessionId> {
        self.expire(now, ttl);
        let id = *self.by_addr.get(addr)?;
        if let Some(s) = self.map.get_mut(&id) {
            s.last_seen = now;
        }
        Some(id)
    }

    /// Number of datagram sessions.
    pub fn datagram_count(&self) -> usize {
        self.by_addr.len()
    }

    /// Drops datagram sessions idle longer than `ttl`.
    pub fn expire(&mut self, now: Instant, ttl: Duration) {
        let stale: Vec<SessionId> = self
            .map
            .iter()
            .filter(|(_, s)| s.dgram_key.is_some() && now.duration_since(s.last_seen) > ttl)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.remove(id);
        }
    }

    /// Removes a session.
    pub fn remove(&mut self, id: SessionId) {
        if let Some(s) = self.map.remove(&id) {
            if let Some(k) = s.dgram_key {
                self.by_addr.remove(&k);
            }
        }
    }

    /// The session `id`.
    pub fn get(&self, id: SessionId) -> Option<&Session> {
        self.map.get(&id)
    }

    /// The session `id`, to change.
    pub fn get_mut(&mut self, id: SessionId) -> Option<&mut Session> {
        self.map.get_mut(&id)
    }

    /// Outlets and colour choices of logged-in sessions matching `pick`.
    pub fn recipients(&self, mut pick: impl FnMut(SessionId, &str) -> bool) -> Vec<(Outlet, bool)> {
        self.map
            .iter()
            .filter_map(|(id, s)| {
                let user = s.user.as_deref()?;
                pick(*id, user).then(|| (s.outlet.clone(), s.colour))
            })
            .collect()
    }

    /// Whether `name` is logged in anywhere.
    pub fn is_online(&self, name: &str) -> bool {
        self.map.values().any(|s| s.user.as_deref() == Some(name))
    }

    /// Names logged in, sorted, without repeats.
    pub fn online(&self) -> Vec<String> {
        let mut v: Vec<String> = self.map.values().filter_map(|s| s.user.clone()).collect();
        v.sort();
        v.dedup();
        v
    }
}

/// Locks `m`, carrying on after a panic in another holder (the state is
/// plain data that every change leaves consistent).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_stream_outlet_that_cannot_take_more_is_shut_down() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let out = StreamOutlet::new(Socket::from(std::os::fd::OwnedFd::from(ours)));
        out.send(b"hello\n").unwrap();
        let mut buf = [0u8; 6];
        theirs.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello\n");
        // The peer reads nothing more: sooner or later a send cannot finish.
        let chunk = vec![b'x'; 64 * 1024];
        let failed = (0..1000).any(|_| out.send(&chunk).is_err());
        assert!(failed, "a full buffer ends in an error, never a block");
        let mut rest = Vec::new();
        theirs.read_to_end(&mut rest).unwrap();
        assert!(out.send(b"more").is_err(), "the connection is shut down");
    }

    #[test]
    fn datagram_sessions_expire_and_free_their_address() {
        let (a, _b) = UnixStream::pair().unwrap();
        let outlet = Outlet::Stream(Arc::new(StreamOutlet::new(Socket::from(
            std::os::fd::OwnedFd::from(a),
        ))));
        let mut s = Sessions::default();
        let id = s.add(outlet, "addr:x".into(), Some("127.0.0.1:5".into()));
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        assert_eq!(s.touch_datagram("127.0.0.1:5", t0, ttl), Some(id));
        assert_eq!(s.datagram_count(), 1);
        assert_eq!(s.touch_datagram("127.0.0.1:5", t0 + 2 * ttl, ttl), None);
        assert_eq!(s.datagram_count(), 0);
        assert!(s.get(id).is_none());
    }
}
