//! What a handler gets: one [`Request`] (a [`StreamRequest`] connection
//! or a [`DatagramRequest`] packet) and the server's [`ServerContext`].
//!
//! `StreamRequest` is Python's `rfile` and `wfile` in one: it implements
//! `io::Read` and `io::Write`, [`StreamRequest::reader`] gives a buffered
//! `BufRead` (lines), and its reads honour a graceful stop. A
//! `DatagramRequest` holds the packet and a reply buffer that the server
//! sends after `finish`.

use std::io::{self, BufRead, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{SockAddr, Socket};

use crate::addr::{Address, Transport};
use crate::watch::Watch;

/// Settings and counters shared by the server and all its handlers.
#[derive(Debug)]
pub struct ServerContext {
    /// The transport served.
    pub transport: Transport,
    /// The address the server is bound to.
    pub address: Address,
    /// Idle timeout applied to each stream connection's reads.
    pub idle_timeout: Option<Duration>,
    /// The time a client may take to deliver one whole line once its first
    /// byte arrived ([`StreamRequest::read_line`]; None: no deadline).
    pub request_timeout: Option<Duration>,
    /// Whether TCP connections get TCP_NODELAY.
    pub tcp_nodelay: bool,
    /// The largest datagram accepted.
    pub max_packet_size: usize,
    stopping: AtomicBool,
    /// This server's counters, shared with its fork children and master.
    pub(crate) stats: &'static crate::stats::Slot,
}

impl ServerContext {
    /// Settings for a server on `address`.
    pub(crate) fn new(
        transport: Transport,
        address: Address,
        stats: &'static crate::stats::Slot,
    ) -> ServerContext {
        ServerContext {
            transport,
            address,
            idle_timeout: None,
            request_timeout: None,
            tcp_nodelay: true,
            max_packet_size: 8192,
            stopping: AtomicBool::new(false),
            stats,
        }
    }

    /// True once a graceful stop began: handlers should finish the request
    /// in hand and not wait for another on the same connection.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    pub(crate) fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// This server's counters so far, its fork children's included.
    pub fn counters(&self) -> crate::stats::Counters {
        self.stats.read()
    }
}

/// One request as a handler sees it.
pub enum Request {
    /// A stream connection.
    Stream(StreamRequest),
    /// One datagram.
    Datagram(DatagramRequest),
}

impl Request {
    /// The client's address.
    pub fn peer(&self) -> &Address {
        match self {
            Request::Stream(s) => &s.peer,
            Request::Datagram(d) => &d.peer,
        }
    }

    /// The server's shared settings.
    pub fn server(&self) -> &ServerContext {
        match self {
            Request::Stream(s) => &s.ctx,
            Request::Datagram(d) => &d.ctx,
        }
    }
}

/// A connection with buffered line reads and unbuffered writes (Python's
/// `rfile` / `wfile`). Writes use MSG_NOSIGNAL semantics: a vanished peer
/// gives EPIPE, never SIGPIPE.
///
/// Nothing is allocated up front: `read_some` and `read_chunk` receive
/// straight into the caller's buffer, and the line buffer only exists once
/// `read_line` is used. (A forked child then touches only the pages its
/// request needs.)
pub struct StreamRequest {
    socket: Socket,
    /// Bytes received but not yet returned (only `read_line` fills it).
    pending: Vec<u8>,
    /// How much of `pending` has been returned already.
    taken: usize,
    /// When the line `read_line` is assembling got its first byte.
    line_begun: Option<Instant>,
    peer: Address,
    ctx: Arc<ServerContext>,
    watch: Watch,
    used: bool,
    /// Bytes handed to the handler and written to the client (access log).
    bytes_in: u64,
    bytes_out: u64,
}

impl StreamRequest {
    /// Wraps an accepted connection, recording it for graceful stops (see
    /// `watch`). Makes no system call: the socket options are applied by
    /// `apply_options`, in the process that serves.
    #[link_section = child_text!()]
    pub(crate) fn watched(
        conn: Socket,
        peer: Address,
        ctx: Arc<ServerContext>,
        watch: Watch,
    ) -> Self {
        watch.register(conn.as_raw_fd());
        StreamRequest {
            socket: conn,
            pending: Vec::new(),
            taken: 0,
            line_begun: None,
            peer,
            ctx,
            watch,
            used: false,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    /// Applies the idle timeout and TCP_NODELAY (the server calls this
    /// before `setup`).
    #[link_section = child_text!()]
    pub(crate) fn apply_options(&self) {
        if self.ctx.transport == Transport::Tcp && self.ctx.tcp_nodelay {
            let _ = crate::sys::set_tcp_nodelay(self.socket.as_raw_fd());
        }
        if self.ctx.idle_timeout.is_some() {
            // Reads and writes alike: a client that stops reading its
            // replies (a full socket buffer) lets go of the child or
            // thread after the same time as one that stops sending.
            let _ = self.socket.set_read_timeout(self.ctx.idle_timeout);
            let _ = self.socket.set_write_timeout(self.ctx.idle_timeout);
        }
    }

    /// True when a graceful stop began and this connection has finished a
    /// request: its next read is end-of-file.
    fn stop_now(&self) -> bool {
        self.used && (self.ctx.is_stopping() || crate::watch::stop_signalled())
    }

    #[link_section = child_text!()]
    fn note_read(&mut self, n: usize) {
        self.bytes_in += n as u64;
        if n > 0 && !self.used {
            self.used = true;
            self.watch.mark_used(self.raw_fd());
        }
    }

    /// The client's address.
    pub fn peer(&self) -> &Address {
        &self.peer
    }

    /// Reads what is available (at least one byte, or 0 at end of stream),
    /// returning buffered bytes first. During a graceful stop, returns 0
    /// once the connection has been served (handlers that read through
    /// these methods stop between requests on their own).
    pub fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.stop_now() {
            return Ok(0);
        }
        let n = if self.taken < self.pending.len() {
            let n = buf.len().min(self.pending.len() - self.taken);
            buf[..n].copy_from_slice(&self.pending[self.taken..self.taken + n]);
            self.taken += n;
            n
        } else {
            (&self.socket).read(buf)?
        };
        self.note_read(n);
        Ok(n)
    }

    /// As `read_some`, into uninitialised memory (a stack buffer, say):
    /// only the bytes received are written. Returns them.
    #[link_section = child_text!()]
    pub fn read_uninit<'b>(&mut self, buf: &'b mut [MaybeUninit<u8>]) -> io::Result<&'b mut [u8]> {
        if self.stop_now() || buf.is_empty() {
            return Ok(&mut []);
        }
        let got = if self.taken < self.pending.len() {
            let got = crate::sys::copy_uninit(buf, &self.pending[self.taken..]);
            self.taken += got.len();
            got
        } else {
            crate::sys::recv_uninit(&self.socket, buf)?
        };
        self.note_read(got.len());
        Ok(got)
    }

    /// As `read_some`, into `buf`'s spare capacity (its length is set to
    /// what was read; nothing is zeroed first). Give `buf` a capacity.
    pub fn read_chunk(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        buf.clear();
        if self.stop_now() {
            return Ok(0);
        }
        let n = if self.taken < self.pending.len() {
            let n = buf.capacity().max(1).min(self.pending.len() - self.taken);
            buf.extend_from_slice(&self.pending[self.taken..self.taken + n]);
            self.taken += n;
            n
        } else {
            crate::sys::recv_into_spare(&self.socket, buf)?
        };
        self.note_read(n);
        Ok(n)
    }

    /// Reads one line including its `\n`, reading at most `limit` bytes
    /// (a longer line comes back cut at `limit`, without `\n`). Returns 0
    /// (an empty line) at end of stream, and during a graceful stop as
    /// `read_some` does.
    ///
    /// With a request timeout (`ServerBuilder::request_timeout`), the whole
    /// line must arrive within it once its first byte did, however steadily
    /// the bytes trickle in: past it the read fails with
    /// `io::ErrorKind::TimedOut` (the server logs it and closes the
    /// connection). The idle timeout still bounds each silence.
    pub fn read_line(&mut self, limit: usize, line: &mut Vec<u8>) -> io::Result<usize> {
        line.clear();
        if self.stop_now() {
            return Ok(0);
        }
        loop {
            let buffered = &self.pending[self.taken..];
            let window = &buffered[..buffered.len().min(limit)];
            if let Some(i) = window.iter().position(|&b| b == b'\n') {
                return Ok(self.take_line(i + 1, line));
            }
            if window.len() == limit {
                return Ok(self.take_line(limit, line));
            }
            if !window.is_empty() {
                self.line_begun.get_or_insert_with(Instant::now);
                self.await_rest_of_line()?;
            }
            if self.taken > 0 {
                self.pending.drain(..self.taken);
                self.taken = 0;
            }
            self.pending.reserve(4096.min(limit.max(1)));
            if crate::sys::recv_into_spare(&self.socket, &mut self.pending)? == 0 {
                let rest = self.pending.len();
                return Ok(self.take_line(rest, line)); // end of stream
            }
        }
    }

    fn take_line(&mut self, n: usize, line: &mut Vec<u8>) -> usize {
        line.extend_from_slice(&self.pending[self.taken..self.taken + n]);
        self.taken += n;
        self.line_begun = None;
        self.note_read(n);
        n
    }

    /// Before a read that continues a line begun earlier: waits until more
    /// bytes arrive, failing once the request deadline passes (or, as the
    /// socket's own timeout would, once the idle timeout does). Returns at
    /// once without a request timeout: the read then blocks as usual.
    fn await_rest_of_line(&self) -> io::Result<()> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let (Some(limit), Some(begun)) = (self.ctx.request_timeout, self.line_begun) else {
            return Ok(());
        };
        let deadline = begun + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RequestDeadline(limit).error());
            }
            let wait = self.ctx.idle_timeout.map_or(left, |idle| idle.min(left));
            // Rounded up to the next millisecond, so it never spins.
            let ms = PollTimeout::try_from(wait + Duration::from_micros(999))
                .unwrap_or(PollTimeout::MAX);
            let mut fd = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fd, ms) {
                Ok(0) if Instant::now() < deadline => {
                    return Err(io::ErrorKind::WouldBlock.into()); // idle
                }
                Ok(0) | Err(nix::errno::Errno::EINTR) => {}
                Ok(_) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A buffered reader over the connection (Python's `rfile`): `lines()`,
    /// `read_line`, `read_until`, and bytes it buffered but did not return
    /// stay for the next read of this request. Honours a graceful stop as
    /// `read_some` does.
    pub fn reader(&mut self) -> Reader<'_> {
        Reader { req: self }
    }

    /// Writes all of `buf` to the client (`wfile`, unbuffered). Each call
    /// that succeeds counts as one reply (`requests` in the counters).
    #[link_section = child_text!()]
    pub fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        crate::sys::send_all(self.socket.as_raw_fd(), buf)?;
        self.bytes_out += buf.len() as u64;
        crate::stats::reply(self.ctx.stats);
        Ok(())
    }

    /// The connection itself.
    pub fn socket(&self) -> &Socket {
        &self.socket
    }

    /// Sets the read timeout for this connection.
    pub fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.socket.set_read_timeout(timeout)
    }

    /// The server's shared settings.
    pub fn server(&self) -> &ServerContext {
        &self.ctx
    }

    /// Bytes read by the handler and written to the client so far.
    pub(crate) fn bytes(&self) -> (u64, u64) {
        (self.bytes_in, self.bytes_out)
    }

    pub(crate) fn raw_fd(&self) -> i32 {
        self.socket.as_raw_fd()
    }

    /// Python's `shutdown_request`: shut down both directions (the close
    /// follows when the request is dropped, or at the child's exit).
    #[link_section = child_text!()]
    pub(crate) fn shutdown(&self) {
        crate::sys::shutdown_both(self.socket.as_raw_fd());
    }
}

impl Read for StreamRequest {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_some(buf)
    }
}

/// Unbuffered writes to the client, so `write!`, `io::copy` and
/// `BufWriter::new(&mut request)` work.
impl Write for StreamRequest {
    /// A partial write (as `BufWriter` and `write!` make); counts no reply:
    /// `write_all` does.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = (&self.socket).write(buf)?;
        self.bytes_out += n as u64;
        Ok(n)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        StreamRequest::write_all(self, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A buffered reader over a [`StreamRequest`], from [`StreamRequest::reader`].
pub struct Reader<'a> {
    req: &'a mut StreamRequest,
}

impl Read for Reader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.req.read_some(buf)
    }
}

/// Writes go straight to the connection, so one reader serves a
/// request-reply loop: `reader.read_line(..)`, then `writeln!(reader, ..)`.
impl Write for Reader<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.req.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.req.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BufRead for Reader<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let r = &mut *self.req;
        if r.stop_now() {
            return Ok(&[]);
        }
        if r.taken == r.pending.len() {
            r.pending.clear();
            r.taken = 0;
            let n = crate::sys::recv_into_spare(&r.socket, &mut r.pending)?;
            r.note_read(n);
        }
        Ok(&r.pending[r.taken..])
    }

    fn consume(&mut self, amt: usize) {
        let r = &mut *self.req;
        r.taken = (r.taken + amt).min(r.pending.len());
    }
}

impl Drop for StreamRequest {
    /// Forgets the connection before its descriptor closes (the fields drop
    /// after this), so a graceful stop never touches a reused descriptor.
    fn drop(&mut self) {
        self.watch.unregister(self.raw_fd());
    }
}

/// Why a stream read failed with `io::ErrorKind::TimedOut`: a request
/// (a line) was not complete this long after its first byte (see
/// [`ServerContext::request_timeout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestDeadline(pub Duration);

impl std::fmt::Display for RequestDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "request not complete {:.3} s after its first byte",
            self.0.as_secs_f64()
        )
    }
}

impl std::error::Error for RequestDeadline {}

impl RequestDeadline {
    /// The deadline behind `e`, if a request deadline is why it failed.
    pub fn of(e: &io::Error) -> Option<RequestDeadline> {
        e.get_ref()?.downcast_ref::<RequestDeadline>().copied()
    }

    /// The read error a passed deadline is (`TimedOut`, carrying it).
    pub(crate) fn error(self) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, self)
    }
}

/// One datagram (`rfile` is the packet) and a reply buffer (`wfile`) sent
/// back to the client after `finish`.
pub struct DatagramRequest {
    /// The datagram as received.
    pub packet: Vec<u8>,
    /// Bytes to send back; nothing is sent when it stays empty.
    pub reply: Vec<u8>,
    peer: Address,
    reply_to: SockAddr,
    socket: Arc<Socket>,
    ctx: Arc<ServerContext>,
    /// Reply bytes sent (access log).
    sent: u64,
}

impl DatagramRequest {
    /// Wraps a received datagram.
    pub(crate) fn new(
        packet: Vec<u8>,
        peer: Address,
        reply_to: SockAddr,
        socket: Arc<Socket>,
        ctx: Arc<ServerContext>,
    ) -> DatagramRequest {
        DatagramRequest {
            packet,
            reply: Vec::new(),
            peer,
            reply_to,
            socket,
            ctx,
            sent: 0,
        }
    }

    /// Bytes received and sent in reply (access log).
    pub(crate) fn bytes(&self) -> (u64, u64) {
        (self.packet.len() as u64, self.sent)
    }

    /// The client's address.
    pub fn peer(&self) -> &Address {
        &self.peer
    }

    /// The server's shared settings.
    pub fn server(&self) -> &ServerContext {
        &self.ctx
    }

    /// The server socket (to send to other clients, e.g. a chat room).
    pub fn socket(&self) -> &Arc<Socket> {
        &self.socket
    }

    /// The client's kernel address, for `sendto`.
    pub fn reply_addr(&self) -> &SockAddr {
        &self.reply_to
    }

    /// Sends `reply` to the client now (the server does it after `finish`
    /// for what is left).
    pub fn send_reply(&mut self) -> io::Result<()> {
        if self.reply.is_empty() {
            return Ok(());
        }
        let res = match self.socket.send_to(&self.reply, &self.reply_to) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // The server socket is non-blocking; wait once for room.
                wait_writable(&self.socket)?;
                self.socket.send_to(&self.reply, &self.reply_to)
            }
            other => other,
        };
        self.reply.clear();
        self.sent += res? as u64;
        crate::stats::reply(self.ctx.stats);
        Ok(())
    }
}

fn wait_writable(socket: &Socket) -> io::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLOUT)];
    poll(&mut fds, PollTimeout::from(1000u16)).map_err(io::Error::from)?;
    Ok(())
}
