//! Silent connections cost nothing: a stream connection whose client has
//! sent nothing yet waits here, in the serving loop's poll set, instead of
//! taking a fork child, a thread, a pool slot or the sync server's turn.
//! It goes to the policy once it has bytes to read (or its client hung
//! up), and is closed if it stays silent past its deadline.
//!
//! This is Apache's `AcceptFilter` and nginx's `deferred` in user space,
//! for every stream transport (Unix sockets have no `TCP_DEFER_ACCEPT`);
//! over TCP the kernel's `TCP_DEFER_ACCEPT` (set on the listener with the
//! same patience) keeps most silent clients from reaching `accept` at all.
//! Only for protocols whose client speaks first: a service that greets
//! (chat) must not use it.
//!
//! A busy server pays one `poll(2)` of one descriptor per accepted
//! connection (with `TCP_DEFER_ACCEPT` the bytes are nearly always there
//! already); nothing else changes on its path. The table is allocated only
//! when the first silent connection arrives, so a forking server's loop
//! writes no heap page until then.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::transport::Incoming;

/// Silent connections held at once; beyond, the oldest is closed.
pub(crate) const MAX_PARKED: usize = 4096;

/// Connections waiting for their first bytes.
pub(crate) struct Parked {
    /// How long a connection may stay silent.
    pub(crate) patience: Duration,
    /// Each with when it was parked, oldest first.
    conns: Vec<(Incoming, Instant)>,
}

impl Parked {
    pub(crate) fn new(patience: Duration) -> Parked {
        Parked {
            patience,
            conns: Vec::new(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether `incoming` can go to the policy now: a datagram, or a
    /// connection with bytes to read (or a hang-up or error to see).
    pub(crate) fn has_spoken(incoming: &Incoming) -> bool {
        match incoming {
            Incoming::Stream { conn, .. } => {
                let mut fd = [PollFd::new(conn.as_fd(), PollFlags::POLLIN)];
                // An error here is the connection's: let the handler see it.
                !matches!(poll(&mut fd, PollTimeout::ZERO), Ok(0))
            }
            _ => true,
        }
    }

    /// Holds `incoming` until it speaks; returns the connection closed to
    /// make room (the oldest) and how long it waited, if the table was full.
    pub(crate) fn park(&mut self, incoming: Incoming) -> Option<(Incoming, Duration)> {
        let now = Instant::now();
        let evicted = (self.conns.len() >= MAX_PARKED).then(|| {
            let (oldest, since) = self.conns.remove(0);
            (oldest, now - since)
        });
        self.conns.push((incoming, now));
        evicted
    }

    /// The soonest deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.conns.first().map(|(_, since)| *since + self.patience)
    }

    /// Poll entries for every parked connection, appended to `fds`.
    pub(crate) fn poll_fds<'a>(&'a self, fds: &mut Vec<PollFd<'a>>) {
        for (incoming, _) in &self.conns {
            if let Incoming::Stream { conn, .. } = incoming {
                fds.push(PollFd::new(conn.as_fd(), PollFlags::POLLIN));
            }
        }
    }

    /// Takes out the connections whose entry (in `poll_fds` order) fired,
    /// and those past their deadline: (spoken, expired).
    pub(crate) fn sort_out(
        &mut self,
        fired: &[bool],
        now: Instant,
    ) -> (Vec<Incoming>, Vec<Incoming>) {
        let (mut spoken, mut expired) = (Vec::new(), Vec::new());
        let mut kept = Vec::with_capacity(self.conns.len());
        for (i, (incoming, since)) in self.conns.drain(..).enumerate() {
            if fired.get(i).copied().unwrap_or(false) {
                spoken.push(incoming);
            } else if since + self.patience <= now {
                expired.push(incoming);
            } else {
                kept.push((incoming, since));
            }
        }
        self.conns = kept;
        (spoken, expired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    fn incoming(s: UnixStream) -> Incoming {
        Incoming::Stream {
            conn: socket2::Socket::from(std::os::fd::OwnedFd::from(s)),
            peer: crate::Address::Unnamed,
        }
    }

    #[test]
    fn a_silent_connection_waits_and_one_that_speaks_is_released() {
        let (silent_server, _silent_client) = UnixStream::pair().unwrap();
        let (talk_server, mut talk_client) = UnixStream::pair().unwrap();
        let silent = incoming(silent_server);
        assert!(!Parked::has_spoken(&silent));
        let mut p = Parked::new(Duration::from_secs(60));
        assert!(p.park(silent).is_none());
        assert!(p.park(incoming(talk_server)).is_none());
        talk_client.write_all(b"hi\n").unwrap();
        let mut fds = Vec::new();
        p.poll_fds(&mut fds);
        poll(&mut fds, PollTimeout::from(1000u16)).unwrap();
        let fired: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        assert_eq!(fired, [false, true]);
        let (spoken, expired) = p.sort_out(&fired, Instant::now());
        assert_eq!((spoken.len(), expired.len(), p.len()), (1, 0, 1));
        assert!(Parked::has_spoken(&spoken[0]));
        // Past its deadline the silent one is handed back to be closed.
        let (spoken, expired) = p.sort_out(&[false], Instant::now() + Duration::from_secs(61));
        assert_eq!((spoken.len(), expired.len(), p.len()), (0, 1, 0));
    }
}
