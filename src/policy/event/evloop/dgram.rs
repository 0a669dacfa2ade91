//! A loop's datagrams: each one received from the shared socket goes
//! through a fresh message handler; its replies are sent at once, or when
//! the timer it asked for fires.

use std::cmp::Reverse;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use slog::{debug, warn};
use socket2::{SockAddr, Socket};

use super::{flatten, Entry, Loop, Waiting};
use crate::access::Outcome;
use crate::addr::Address;
use crate::handler::{MessageFactory, Next, Opening};
use crate::policy::event::conn::send_datagrams;
use crate::socket::sockaddr_to_address;
use crate::stats::Slot;

impl Loop {
    /// Serves every datagram waiting (the socket is edge-triggered).
    pub(super) fn receive(&mut self, messages: &dyn MessageFactory) {
        let Some(sock) = self.socket.clone() else {
            return;
        };
        let max = self.dispatch.ctx.max_packet_size;
        while !self.draining {
            let (len, sa) = match crate::sys::recv_from_trunc(&sock, &mut self.buf[..max]) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!(self.dispatch.log, "recvfrom failed"; "error" => %e);
                    continue; // e.g. ECONNREFUSED from an earlier reply's ICMP
                }
            };
            Slot::add(&self.dispatch.ctx.stats.connections);
            let peer = sockaddr_to_address(&sa).unwrap_or(Address::Unnamed);
            if len > max {
                Slot::add(&self.dispatch.ctx.stats.truncated);
                if let Some(suppressed) = self.truncated.event(Instant::now()) {
                    warn!(self.dispatch.log, "datagram too large; dropped";
                          "peer" => %peer, "len" => len, "raise" => "--max-packet-size",
                          "max_packet_size" => max, "suppressed" => suppressed);
                }
                continue;
            }
            if self.verify(&peer) {
                self.datagram(messages, &sock, peer, sa, len);
            }
        }
    }

    /// One datagram through a fresh handler: replied to now, or kept until
    /// its timer.
    fn datagram(
        &mut self,
        messages: &dyn MessageFactory,
        sock: &Arc<Socket>,
        peer: Address,
        to: SockAddr,
        len: usize,
    ) {
        let started = Instant::now();
        self.out.clear();
        let opening = Opening {
            peer: &peer,
            socket: sock,
            datagram: Some((sock, &to)),
            ctx: &self.dispatch.ctx,
        };
        let (buf, out) = (&self.buf[..len], &mut self.out);
        let served = catch_unwind(AssertUnwindSafe(|| {
            let mut h = messages.open(&opening, out)?;
            let next = h.data(buf, out);
            Ok((h, next?))
        }));
        Slot::up(&self.dispatch.ctx.stats.in_flight);
        self.shared.opened();
        let (handler, next) = match flatten(served) {
            Ok(served) => served,
            Err(err) => {
                let outcome = self.report(&peer, &err);
                return self.finished(&peer, outcome, started, len as u64, 0);
            }
        };
        let waiting = Waiting {
            handler,
            peer,
            to,
            started,
            bytes_in: len as u64,
        };
        self.datagram_next(sock, waiting, next);
    }

    /// Sends a datagram handler's replies, or waits for its timer.
    pub(super) fn datagram_next(&mut self, sock: &Socket, mut w: Waiting, next: Next) {
        if let Next::Wait(t) = next {
            let (idx, gen) = self.entries.insert(Entry::Datagram(w));
            self.timers.push(Reverse((Instant::now() + t, idx, gen)));
            return;
        }
        let (bytes, replies) = send_datagrams(sock, &w.to, &self.out);
        Slot::add_n(&self.dispatch.ctx.stats.requests, replies);
        let _ = catch_unwind(AssertUnwindSafe(|| w.handler.closed()));
        self.finished(&w.peer, Outcome::Ok, w.started, w.bytes_in, bytes);
    }
}
