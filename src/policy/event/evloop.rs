//! One event loop: a mio `Poll` over the shared listener and this loop's
//! connections, its timers, and the read and reply buffers its
//! connections share.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use slog::{debug, error, info, warn};
use socket2::{SockAddr, Socket};

mod dgram;

use super::conn::{Conn, SendError};
use super::slab::Slab;
use super::{Mode, Shared, TurnStamp, TURN_EVERY};
use crate::access::Outcome;
use crate::addr::{Address, Transport};
use crate::dispatch::{is_disconnect, Dispatch};
use crate::error::RequestError;
use crate::handler::{MessageFactory, MessageHandler, Next, Opening, Output};
use crate::socket::sockaddr_to_address;
use crate::stats::Slot;
use crate::throttle::Throttle;

/// The waker's token; the listener's; connections count from `FIRST`.
pub(super) const WAKE: Token = Token(0);
pub(super) const LISTEN: Token = Token(1);
const FIRST: usize = 2;

/// The read buffer every connection of a loop shares.
const READ_BUF: usize = 64 * 1024;

/// What a loop holds besides its connections: a stream connection, or a
/// datagram whose handler waits on a timer.
enum Entry {
    Stream(Conn),
    Datagram(Waiting),
}

/// A datagram whose reply waits for its handler's timer.
struct Waiting {
    handler: Box<dyn MessageHandler>,
    peer: Address,
    to: SockAddr,
    started: Instant,
    bytes_in: u64,
}

/// One loop's state. Built by the runner's thread, run by `run`.
pub(super) struct Loop {
    pub(super) poll: Poll,
    /// The shared listening (or datagram) socket; a stream loop lets go of
    /// it when a stop begins, a datagram loop keeps it for its replies.
    pub(super) socket: Option<Arc<Socket>>,
    pub(super) dispatch: Dispatch,
    pub(super) shared: Arc<Shared>,
    pub(super) output_limit: usize,
    /// Stamped at every turn (see the runner's `stalled`).
    stamp: Arc<TurnStamp>,
    entries: Slab<Entry>,
    timers: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    buf: Vec<u8>,
    out: Output,
    draining: bool,
    /// Accepting waits until then (EMFILE), and how long the last wait was.
    backoff: Option<Instant>,
    backoff_delay: Duration,
    next_sweep: Option<Instant>,
    truncated: Throttle,
    exhausted: Throttle,
    slow: Throttle,
}

/// Token of the entry at `idx` in generation `gen`: a stale event (for a
/// connection closed earlier in the same batch) never reaches its slot's
/// next owner.
fn token(idx: usize, gen: u32) -> Token {
    Token((u64::from(gen) << 32 | (idx + FIRST) as u64) as usize)
}

fn untoken(t: Token) -> (usize, u32) {
    let v = t.0 as u64;
    ((v & 0xffff_ffff) as usize - FIRST, (v >> 32) as u32)
}

impl Loop {
    pub(super) fn new(
        poll: Poll,
        socket: Arc<Socket>,
        dispatch: Dispatch,
        shared: Arc<Shared>,
        output_limit: usize,
        stamp: Arc<TurnStamp>,
    ) -> Loop {
        let size = match dispatch.ctx.transport.is_stream() {
            true => READ_BUF,
            false => READ_BUF.max(dispatch.ctx.max_packet_size),
        };
        Loop {
            poll,
            socket: Some(socket),
            dispatch,
            shared,
            output_limit,
            stamp,
            entries: Slab::default(),
            timers: BinaryHeap::new(),
            buf: vec![0; size],
            out: Output::default(),
            draining: false,
            backoff: None,
            backoff_delay: Duration::ZERO,
            next_sweep: None,
            truncated: Throttle::default(),
            exhausted: Throttle::default(),
            slow: Throttle::default(),
        }
    }

    fn stream(&self) -> bool {
        self.dispatch.ctx.transport.is_stream()
    }

    /// Serves until a halt, or until a graceful stop has closed every
    /// connection (or its deadline passed).
    pub(super) fn run(mut self) {
        let factory = Arc::clone(&self.dispatch.factory);
        let Some(messages) = factory.message_factory() else {
            return; // refused when the server was built
        };
        let mut events = Events::with_capacity(1024);
        loop {
            match self.shared.mode() {
                Mode::Halt => break,
                Mode::Drain if !self.draining => self.start_drain(),
                _ => {}
            }
            if self.draining && (self.entries.is_empty() || self.shared.past_deadline()) {
                break;
            }
            let polled = self.poll.poll(&mut events, self.timeout());
            self.stamp.turn();
            if let Err(e) = polled {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!(self.dispatch.log, "event loop: epoll_wait failed"; "error" => %e);
                break;
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKE => {}
                    LISTEN if self.stream() => self.accept(messages),
                    LISTEN => self.receive(messages),
                    t => {
                        let (idx, gen) = untoken(t);
                        if ev.is_writable() || ev.is_error() {
                            self.flush(idx, gen);
                        }
                        // At end of input or an error, read to EAGAIN: no
                        // later edge would report an end already queued.
                        let ended = ev.is_read_closed() || ev.is_error();
                        if ev.is_readable() || ended {
                            self.read(idx, gen, ended);
                        }
                    }
                }
            }
            self.fire_timers();
            self.sweep_idle();
            self.retry_after_backoff(messages);
        }
        for idx in self.entries.indices() {
            self.close(idx, Outcome::Reset);
        }
    }

    /// How long the next poll may sleep: until the next timer, idle sweep,
    /// end of an accept back-off or the stop's deadline, and at most
    /// [`TURN_EVERY`], so the loop stamps its turn while idle.
    fn timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        let soonest = [
            self.timers.peek().map(|Reverse((t, _, _))| *t),
            self.next_sweep,
            self.backoff,
            self.draining.then(|| self.shared.deadline()).flatten(),
        ]
        .into_iter()
        .flatten()
        .min();
        let left = soonest.map_or(TURN_EVERY, |t| t.saturating_duration_since(now));
        Some(left.min(TURN_EVERY))
    }

    // --- stream connections ---------------------------------------------

    /// Accepts every pending connection (the listener is edge-triggered).
    fn accept(&mut self, messages: &dyn MessageFactory) {
        let Some(listener) = self.socket.clone() else {
            return;
        };
        while self.backoff.is_none() && !self.draining {
            match listener.accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) {
                Ok((sock, sa)) => {
                    Slot::add(&self.dispatch.ctx.stats.connections);
                    self.accept_recovered();
                    self.open(messages, sock, &sa);
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => return,
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                        return self.accept_failed(e)
                    }
                    Some(libc::EINTR | libc::ECONNABORTED | libc::EPROTO | libc::ECONNRESET) => {}
                    _ => {
                        error!(self.dispatch.log, "accept failed";
                               "addr" => %self.dispatch.ctx.address, "error" => %e);
                        return self.accept_failed(e);
                    }
                },
            }
        }
    }

    /// A new connection: verify_request, its handler, its registration,
    /// and its greeting.
    fn open(&mut self, messages: &dyn MessageFactory, sock: Socket, sa: &SockAddr) {
        let d = &self.dispatch;
        let peer = sockaddr_to_address(sa).unwrap_or(Address::Unnamed);
        if !self.verify(&peer) {
            return;
        }
        if d.ctx.transport == Transport::Tcp && d.ctx.tcp_nodelay {
            let _ = sock.set_nodelay(true);
        }
        self.out.clear();
        let opening = Opening {
            peer: &peer,
            socket: &sock,
            datagram: None,
            ctx: &d.ctx,
        };
        let opened = catch_unwind(AssertUnwindSafe(|| messages.open(&opening, &mut self.out)));
        let handler = match flatten(opened) {
            Ok(h) => h,
            Err(err) => return self.failed_before(&peer, err, Instant::now()),
        };
        let fd = sock.as_raw_fd();
        let (idx, gen) = self
            .entries
            .insert(Entry::Stream(Conn::new(sock, handler, peer)));
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut SourceFd(&fd), token(idx, gen), interest)
        {
            error!(self.dispatch.log, "event loop: epoll_ctl ADD failed"; "error" => %e);
            self.entries.remove(idx);
            return;
        }
        Slot::up(&self.dispatch.ctx.stats.in_flight);
        self.shared.opened();
        if !self.out.buf.is_empty() {
            self.deliver(idx, gen, Next::Read);
        }
    }

    /// Reads what arrived and hands it to the handler, until the socket
    /// is drained, a timer is set, or the connection closes. A short read
    /// counts as drained (what arrives later makes a new edge) unless
    /// `to_eagain`.
    fn read(&mut self, idx: usize, gen: u32, to_eagain: bool) {
        loop {
            let Some(Entry::Stream(c)) = self.entries.get_mut(idx, gen) else {
                return;
            };
            if c.waiting || c.closing {
                return;
            }
            match (&c.sock).read(&mut self.buf) {
                Ok(0) => {
                    // End of input: the handler's last word, what is left
                    // sent, then close.
                    c.closing = true;
                    self.out.clear();
                    let out = &mut self.out;
                    let next = catch_unwind(AssertUnwindSafe(|| c.handler.end(out)));
                    if self.answer(idx, gen, flatten(next)) {
                        self.settle(idx, gen);
                    }
                    return;
                }
                Ok(n) => {
                    c.bytes_in += n as u64;
                    c.used = true;
                    c.last = Instant::now();
                    self.out.clear();
                    let (buf, out) = (&self.buf[..n], &mut self.out);
                    let next = catch_unwind(AssertUnwindSafe(|| c.handler.data(buf, out)));
                    if !self.answer(idx, gen, flatten(next)) || (n < self.buf.len() && !to_eagain) {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!(self.dispatch.log, "client went away"; "error" => %e);
                    return self.close(idx, Outcome::Reset);
                }
            }
        }
    }

    /// After a handler call: sends its replies and does what it asked, or
    /// reports its failure. Returns whether the connection is still open.
    fn answer(&mut self, idx: usize, gen: u32, next: Result<Next, RequestError>) -> bool {
        match next {
            Ok(next) => self.deliver(idx, gen, next),
            Err(err) => {
                if let Some(Entry::Stream(c)) = self.entries.get_mut(idx, gen) {
                    let peer = c.peer.clone();
                    let outcome = self.report(&peer, &err);
                    self.close(idx, outcome);
                }
                false
            }
        }
    }

    /// Sends `self.out` and applies `next`; returns whether it is open.
    fn deliver(&mut self, idx: usize, gen: u32, next: Next) -> bool {
        let stats = self.dispatch.ctx.stats;
        let Some(Entry::Stream(c)) = self.entries.get_mut(idx, gen) else {
            return false;
        };
        match c.send(&self.out, stats, self.output_limit) {
            Ok(()) => {}
            Err(SendError::Io(e)) => {
                debug!(self.dispatch.log, "client went away"; "error" => %e);
                self.close(idx, Outcome::Reset);
                return false;
            }
            Err(SendError::Overflow(held)) => {
                if let Some(suppressed) = self.slow.event(Instant::now()) {
                    warn!(self.dispatch.log, "client does not read its replies; closed";
                          "peer" => %c.peer, "buffered" => held, "limit" => self.output_limit,
                          "suppressed" => suppressed);
                }
                self.close(idx, Outcome::Reset);
                return false;
            }
        }
        match next {
            Next::Read => {}
            Next::Close => c.closing = true,
            Next::Wait(t) => {
                c.waiting = true;
                self.timers.push(Reverse((Instant::now() + t, idx, gen)));
            }
        }
        self.settle(idx, gen)
    }

    /// Closes the connection if nothing keeps it open: no backlog, no
    /// timer, and it is closing, or a stop is draining it after its
    /// request. Returns whether it is still open.
    fn settle(&mut self, idx: usize, gen: u32) -> bool {
        let Some(Entry::Stream(c)) = self.entries.get_mut(idx, gen) else {
            return false;
        };
        if c.has_backlog() || c.waiting {
            return true;
        }
        if c.closing || (self.draining && c.used) {
            self.close(idx, Outcome::Ok);
            return false;
        }
        true
    }

    /// The socket can take more: sends the backlog.
    fn flush(&mut self, idx: usize, gen: u32) {
        let stats = self.dispatch.ctx.stats;
        let Some(Entry::Stream(c)) = self.entries.get_mut(idx, gen) else {
            return;
        };
        if !c.has_backlog() {
            return;
        }
        match c.flush(stats) {
            Ok(()) => {
                self.settle(idx, gen);
            }
            Err(e) => {
                debug!(self.dispatch.log, "client went away"; "error" => %e);
                self.close(idx, Outcome::Reset);
            }
        }
    }

    /// Removes an entry: its handler's `closed`, the access line, the
    /// counters; the socket closes as it drops.
    fn close(&mut self, idx: usize, outcome: Outcome) {
        let Some(entry) = self.entries.remove(idx) else {
            return;
        };
        let (mut handler, peer, started, bytes_in, bytes_out) = match entry {
            Entry::Stream(c) => {
                let _ = self
                    .poll
                    .registry()
                    .deregister(&mut SourceFd(&c.sock.as_raw_fd()));
                (c.handler, c.peer, c.started, c.bytes_in, c.bytes_out)
            }
            Entry::Datagram(w) => (w.handler, w.peer, w.started, w.bytes_in, 0),
        };
        let _ = catch_unwind(AssertUnwindSafe(|| handler.closed()));
        self.finished(&peer, outcome, started, bytes_in, bytes_out);
    }

    /// A connection or datagram is done: counters and the access line.
    fn finished(
        &self,
        peer: &Address,
        outcome: Outcome,
        started: Instant,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        Slot::down(&self.dispatch.ctx.stats.in_flight);
        self.shared.closed();
        if let Some(access) = &self.dispatch.access {
            access.record(peer, outcome, started.elapsed(), bytes_in, bytes_out);
        }
    }

    // --- shared by both -------------------------------------------------

    /// `verify_request`; a refused client is counted and logged.
    fn verify(&self, peer: &Address) -> bool {
        let d = &self.dispatch;
        if d.hooks.verify_request(peer) {
            return true;
        }
        Slot::add(&d.ctx.stats.rejected);
        debug!(d.log, "request refused by verify_request"; "peer" => %peer);
        if let Some(access) = &d.access {
            access.record(peer, Outcome::Rejected, Duration::ZERO, 0, 0);
        }
        false
    }

    /// A handler's error or panic: `handle_error` (or a debug line for a
    /// client that left) and the access outcome.
    fn report(&self, peer: &Address, err: &RequestError) -> Outcome {
        match err {
            RequestError::Io(e) if crate::request::RequestDeadline::of(e).is_some() => {
                info!(self.dispatch.log, "request deadline passed; closed";
                      "peer" => %peer, "error" => %e);
                Outcome::Timeout
            }
            RequestError::Io(e) if is_disconnect(e) => {
                debug!(self.dispatch.log, "client went away"; "peer" => %peer, "error" => %e);
                Outcome::Reset
            }
            _ => {
                self.dispatch.report(peer, err);
                Outcome::Error
            }
        }
    }

    /// A handler could not be made for a stream connection: reported, and
    /// the connection is closed.
    fn failed_before(&self, peer: &Address, err: RequestError, started: Instant) {
        let outcome = self.report(peer, &err);
        if let Some(access) = &self.dispatch.access {
            access.record(peer, outcome, started.elapsed(), 0, 0);
        }
    }

    /// Runs the handlers whose timers are due.
    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(&Reverse((at, idx, gen))) = self.timers.peek() {
            if at > now {
                return;
            }
            self.timers.pop();
            self.out.clear();
            let out = &mut self.out;
            match self.entries.get_mut(idx, gen) {
                Some(Entry::Stream(c)) => {
                    c.waiting = false;
                    let next = catch_unwind(AssertUnwindSafe(|| c.handler.timer(out)));
                    if self.answer(idx, gen, flatten(next)) {
                        self.read(idx, gen, true); // input may have arrived meanwhile
                    }
                }
                Some(Entry::Datagram(w)) => {
                    let next = catch_unwind(AssertUnwindSafe(|| w.handler.timer(out)));
                    let Some(Entry::Datagram(w)) = self.entries.remove(idx) else {
                        continue;
                    };
                    let Some(sock) = self.socket.clone() else {
                        continue;
                    };
                    match flatten(next) {
                        Ok(next) => self.datagram_next(&sock, w, next),
                        Err(err) => {
                            let outcome = self.report(&w.peer, &err);
                            self.finished(&w.peer, outcome, w.started, w.bytes_in, 0);
                        }
                    }
                }
                None => {}
            }
        }
    }

    /// Closes stream connections idle past the idle timeout (not those
    /// waiting on a timer). Sweeps four times per timeout.
    fn sweep_idle(&mut self) {
        let Some(limit) = self.dispatch.ctx.idle_timeout.filter(|_| self.stream()) else {
            return;
        };
        let now = Instant::now();
        if self.next_sweep.is_some_and(|t| t > now) {
            return;
        }
        self.next_sweep = Some(now + (limit / 4).max(Duration::from_millis(10)));
        for idx in self.entries.indices() {
            if let Some(Entry::Stream(c)) = self.entries.get_any(idx) {
                if !c.waiting && now.duration_since(c.last) >= limit {
                    self.close(idx, Outcome::Timeout);
                }
            }
        }
    }

    /// EMFILE and the like: stop accepting for a while (10 ms doubling to
    /// 1 s), logged once per episode; the backlog holds clients meanwhile.
    fn accept_failed(&mut self, e: io::Error) {
        if self.backoff_delay.is_zero() {
            if let Some(suppressed) = self.exhausted.event(Instant::now()) {
                error!(self.dispatch.log, "cannot take requests; backing off";
                       "addr" => %self.dispatch.ctx.address, "error" => %e,
                       "raise" => "the open-files limit (ulimit -n, LimitNOFILE=)",
                       "suppressed" => suppressed);
            }
        }
        self.backoff_delay =
            (self.backoff_delay * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        self.backoff = Some(Instant::now() + self.backoff_delay);
    }

    /// A connection was accepted: an accept back-off episode is over.
    fn accept_recovered(&mut self) {
        if !self.backoff_delay.is_zero() {
            info!(self.dispatch.log, "taking requests again");
            self.backoff_delay = Duration::ZERO;
        }
    }

    fn retry_after_backoff(&mut self, messages: &dyn MessageFactory) {
        if self.backoff.is_some_and(|until| until <= Instant::now()) {
            self.backoff = None;
            self.accept(messages);
        }
    }

    /// A graceful stop: no more accepting (a stream loop lets go of the
    /// listener), connections that served a request close once idle.
    fn start_drain(&mut self) {
        self.draining = true;
        if let Some(sock) = &self.socket {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&sock.as_raw_fd()));
        }
        if self.stream() {
            self.socket = None;
        }
        for idx in self.entries.indices() {
            if let Some(gen) = self.entries.gen(idx) {
                self.settle(idx, gen);
            }
        }
    }
}

/// A handler call's result, its panic turned into an error.
fn flatten<T>(r: std::thread::Result<io::Result<T>>) -> Result<T, RequestError> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(RequestError::Io(e)),
        Err(payload) => Err(RequestError::Panic(crate::dispatch::panic_message(
            &*payload,
        ))),
    }
}
