//! What an event loop keeps per stream connection: its socket, its
//! handler, and only when the client is slow to read, the replies the
//! kernel would not take yet (bounded; past the bound it is closed).

use std::io;
use std::time::Instant;

use socket2::Socket;

use crate::addr::Address;
use crate::handler::{MessageHandler, Output};
use crate::stats::Slot;

/// One stream connection of a loop. Idle, it is this struct, its handler
/// and the kernel's socket: the read buffer belongs to the loop.
pub(super) struct Conn {
    pub(super) sock: Socket,
    pub(super) handler: Box<dyn MessageHandler>,
    pub(super) peer: Address,
    /// Replies the kernel has not taken yet (a slow reader), if any.
    backlog: Option<Box<Backlog>>,
    pub(super) started: Instant,
    /// The last read or write progress (the idle timeout counts from it).
    pub(super) last: Instant,
    pub(super) bytes_in: u64,
    pub(super) bytes_out: u64,
    /// It has received data (a graceful stop closes it once idle).
    pub(super) used: bool,
    /// A timer is pending: nothing is read meanwhile.
    pub(super) waiting: bool,
    /// Close once the backlog is sent (the handler asked, or end of input).
    pub(super) closing: bool,
}

/// Output waiting for the kernel, with where each reply ends (as offsets
/// in the connection's whole output), so a reply counts once it is sent.
#[derive(Default)]
struct Backlog {
    buf: Vec<u8>,
    /// Bytes of `buf` already sent.
    sent: usize,
    ends: std::collections::VecDeque<u64>,
}

/// Why sending failed.
pub(super) enum SendError {
    /// More than the bound is waiting: the client does not read.
    Overflow(usize),
    /// The connection broke.
    Io(io::Error),
}

impl Conn {
    pub(super) fn new(sock: Socket, handler: Box<dyn MessageHandler>, peer: Address) -> Conn {
        let now = Instant::now();
        Conn {
            sock,
            handler,
            peer,
            backlog: None,
            started: now,
            last: now,
            bytes_in: 0,
            bytes_out: 0,
            used: false,
            waiting: false,
            closing: false,
        }
    }

    /// True while replies wait for the kernel.
    pub(super) fn has_backlog(&self) -> bool {
        self.backlog.is_some()
    }

    /// Sends `out`'s replies, or what the kernel takes of them, and keeps
    /// the rest (at most `limit` bytes). Each reply sent whole counts one
    /// request in `stats`.
    pub(super) fn send(
        &mut self,
        out: &Output,
        stats: &Slot,
        limit: usize,
    ) -> Result<(), SendError> {
        if out.buf.is_empty() {
            return Ok(());
        }
        let base = self.bytes_out
            + self
                .backlog
                .as_ref()
                .map_or(0, |b| (b.buf.len() - b.sent) as u64);
        if self.backlog.is_none() {
            let n = send_some(&self.sock, &out.buf).map_err(SendError::Io)?;
            self.progress(n);
            let whole = out.ends.iter().take_while(|&&e| e <= n).count();
            Slot::add_n(&stats.requests, whole as u64);
            if n == out.buf.len() {
                return Ok(());
            }
            let mut b = Box::<Backlog>::default();
            b.buf.extend_from_slice(&out.buf[n..]);
            b.ends
                .extend(out.ends[whole..].iter().map(|&e| base + e as u64));
            self.backlog = Some(b);
        } else if let Some(b) = &mut self.backlog {
            b.buf.extend_from_slice(&out.buf);
            b.ends.extend(out.ends.iter().map(|&e| base + e as u64));
        }
        self.check_limit(limit)
    }

    fn check_limit(&self, limit: usize) -> Result<(), SendError> {
        match &self.backlog {
            Some(b) if b.buf.len() - b.sent > limit => {
                Err(SendError::Overflow(b.buf.len() - b.sent))
            }
            _ => Ok(()),
        }
    }

    /// Sends what it can of the backlog (the socket became writable).
    pub(super) fn flush(&mut self, stats: &Slot) -> io::Result<()> {
        let Some(b) = &mut self.backlog else {
            return Ok(());
        };
        let n = send_some(&self.sock, &b.buf[b.sent..])?;
        b.sent += n;
        self.bytes_out += n as u64;
        let mut whole = 0;
        while b.ends.front().is_some_and(|&e| e <= self.bytes_out) {
            b.ends.pop_front();
            whole += 1;
        }
        Slot::add_n(&stats.requests, whole);
        if b.sent == b.buf.len() {
            self.backlog = None; // its memory goes with it
        } else if b.sent > b.buf.len() / 2 {
            b.buf.drain(..b.sent);
            b.sent = 0;
        }
        if n > 0 {
            self.last = Instant::now();
        }
        Ok(())
    }

    fn progress(&mut self, n: usize) {
        self.bytes_out += n as u64;
    }
}

/// Writes what the kernel takes of `buf` without blocking (0 when its
/// buffer is full); MSG_NOSIGNAL: a vanished client is EPIPE, not SIGPIPE.
fn send_some(sock: &Socket, buf: &[u8]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < buf.len() {
        match sock.send_with_flags(&buf[sent..], libc::MSG_NOSIGNAL) {
            Ok(0) => break,
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

/// Sends each of `out`'s replies as one datagram to `to`, without
/// blocking; returns the bytes and replies sent. A reply the socket has no
/// room for is dropped (an event loop does not wait), as the network may.
pub(super) fn send_datagrams(sock: &Socket, to: &socket2::SockAddr, out: &Output) -> (u64, u64) {
    let (mut bytes, mut replies) = (0, 0);
    for reply in out.iter() {
        loop {
            match sock.send_to_with_flags(reply, to, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) {
                Ok(n) => {
                    bytes += n as u64;
                    replies += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {}
            }
            break;
        }
    }
    (bytes, replies)
}
