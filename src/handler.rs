//! Request handlers: `setup` / `handle` / `finish`, as Python's
//! `BaseRequestHandler`.
//!
//! A server makes a fresh handler for every request with its factory, then
//! calls `setup`, `handle` and `finish`; `finish` runs even when `setup` or
//! `handle` failed. For a datagram, the reply buffer is sent to the client
//! after `finish`.
//!
//! Three ways to write one:
//! - [`Handler`] sees every [`Request`] (a stream connection or a
//!   datagram) and matches on it: one handler for every transport;
//! - [`StreamHandler`] sees only [`StreamRequest`]s (TCP, Unix stream);
//!   wrap its factory in [`stream`];
//! - [`DatagramHandler`] sees only [`DatagramRequest`]s (UDP, Unix
//!   datagram); wrap its factory in [`datagram`].
//!
//! A server refuses, when it is built, a stream-only or datagram-only
//! factory on a transport it cannot serve.
//!
//! An event loop cannot run any of these: they block in their reads. It
//! calls a [`MessageHandler`] instead, with the bytes that arrived, and
//! sends the replies it answers with; a [`MessageFactory`] makes one per
//! connection or datagram, and [`messages`] serves it under every policy.

use std::io;
use std::sync::Arc;

use crate::addr::{Address, Transport};
use crate::request::{DatagramRequest, Request, ServerContext, StreamRequest};

/// What a handler does with one request of any transport. Override
/// `handle`; `setup` and `finish` default to doing nothing.
pub trait Handler: Send {
    /// Called before `handle`. May be overridden.
    fn setup(&mut self, _req: &mut Request) -> io::Result<()> {
        Ok(())
    }

    /// Serves the request. Must be overridden.
    fn handle(&mut self, req: &mut Request) -> io::Result<()>;

    /// Called after `handle`, even when `setup` or `handle` failed. May be
    /// overridden.
    fn finish(&mut self, _req: &mut Request) -> io::Result<()> {
        Ok(())
    }
}

/// A handler for stream connections only (Python's
/// `StreamRequestHandler`). Serve it with `builder.build(stream(|| MyHandler))`.
pub trait StreamHandler: Send {
    /// Called before `handle`. May be overridden.
    fn setup(&mut self, _conn: &mut StreamRequest) -> io::Result<()> {
        Ok(())
    }

    /// Serves the connection. Must be overridden.
    fn handle(&mut self, conn: &mut StreamRequest) -> io::Result<()>;

    /// Called after `handle`, even when `setup` or `handle` failed. May be
    /// overridden.
    fn finish(&mut self, _conn: &mut StreamRequest) -> io::Result<()> {
        Ok(())
    }
}

/// A handler for datagrams only (Python's `DatagramRequestHandler`): read
/// `packet`, fill `reply`. Serve it with `builder.build(datagram(|| MyHandler))`.
pub trait DatagramHandler: Send {
    /// Called before `handle`. May be overridden.
    fn setup(&mut self, _dgram: &mut DatagramRequest) -> io::Result<()> {
        Ok(())
    }

    /// Serves the datagram. Must be overridden.
    fn handle(&mut self, dgram: &mut DatagramRequest) -> io::Result<()>;

    /// Called after `handle`, even when `setup` or `handle` failed; the
    /// reply is sent after it. May be overridden.
    fn finish(&mut self, _dgram: &mut DatagramRequest) -> io::Result<()> {
        Ok(())
    }
}

/// Serves each request with a fresh handler. Any `Fn() -> H` closure where
/// `H: Handler` is a factory; [`stream`] and [`datagram`] make factories of
/// closures returning a [`StreamHandler`] or a [`DatagramHandler`].
pub trait HandlerFactory: Send + Sync + 'static {
    /// Serves `request` with a fresh handler: setup, handle, finish (even
    /// when setup or handle failed), then a datagram's reply. Called by the
    /// server, in the thread or process that serves the request.
    fn serve(&self, request: &mut Request) -> io::Result<()>;

    /// Whether this factory's handlers can serve `transport`; a server
    /// refuses to build otherwise. Default: every transport.
    fn serves(&self, _transport: Transport) -> bool {
        true
    }

    /// The message handlers that serve under
    /// [`Policy::Event`](crate::Policy::Event), if this factory has them;
    /// a server refuses to build an event policy otherwise. Default: none
    /// (a `setup`/`handle`/`finish` handler blocks on its reads).
    fn message_factory(&self) -> Option<&dyn MessageFactory> {
        None
    }
}

impl<F, H> HandlerFactory for F
where
    F: Fn() -> H + Send + Sync + 'static,
    H: Handler,
{
    fn serve(&self, request: &mut Request) -> io::Result<()> {
        run_handler(&mut self(), request)
    }
}

/// setup, handle, finish (even on failure), then the datagram reply. The
/// handler lives on the caller's stack: no allocation per request.
#[link_section = child_text!()]
pub(crate) fn run_handler(handler: &mut dyn Handler, request: &mut Request) -> io::Result<()> {
    let served = handler
        .setup(request)
        .and_then(|()| handler.handle(request));
    let finished = handler.finish(request);
    let replied = match request {
        Request::Datagram(d) if served.is_ok() && finished.is_ok() => d.send_reply(),
        _ => Ok(()),
    };
    served.and(finished).and(replied)
}

/// A factory of [`StreamHandler`]s; see [`stream`].
#[derive(Debug, Clone, Copy)]
pub struct Streams<F>(F);

/// Serves stream connections with a fresh `StreamHandler` from `factory`
/// each: `builder.build(stream(|| Echo))`.
pub fn stream<F, H>(factory: F) -> Streams<F>
where
    F: Fn() -> H + Send + Sync + 'static,
    H: StreamHandler,
{
    Streams(factory)
}

impl<F, H> HandlerFactory for Streams<F>
where
    F: Fn() -> H + Send + Sync + 'static,
    H: StreamHandler,
{
    fn serve(&self, request: &mut Request) -> io::Result<()> {
        let Request::Stream(conn) = request else {
            return Err(wrong_kind("a stream handler got a datagram"));
        };
        let mut h = (self.0)();
        let served = h.setup(conn).and_then(|()| h.handle(conn));
        served.and(h.finish(conn))
    }

    fn serves(&self, transport: Transport) -> bool {
        transport.is_stream()
    }
}

/// A factory of [`DatagramHandler`]s; see [`datagram`].
#[derive(Debug, Clone, Copy)]
pub struct Datagrams<F>(F);

/// Serves datagrams with a fresh `DatagramHandler` from `factory` each:
/// `builder.build(datagram(|| Time))`.
pub fn datagram<F, H>(factory: F) -> Datagrams<F>
where
    F: Fn() -> H + Send + Sync + 'static,
    H: DatagramHandler,
{
    Datagrams(factory)
}

impl<F, H> HandlerFactory for Datagrams<F>
where
    F: Fn() -> H + Send + Sync + 'static,
    H: DatagramHandler,
{
    fn serve(&self, request: &mut Request) -> io::Result<()> {
        let Request::Datagram(d) = request else {
            return Err(wrong_kind("a datagram handler got a stream connection"));
        };
        let mut h = (self.0)();
        let served = h.setup(d).and_then(|()| h.handle(d));
        let finished = h.finish(d);
        let replied = match (&served, &finished) {
            (Ok(()), Ok(())) => d.send_reply(),
            _ => Ok(()),
        };
        served.and(finished).and(replied)
    }

    fn serves(&self, transport: Transport) -> bool {
        !transport.is_stream()
    }
}

fn wrong_kind(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

// ---------------------------------------------------------------------
// The message handler an event loop calls.
// ---------------------------------------------------------------------

/// What the server does after a [`MessageHandler`] call, once the replies
/// written to the [`Output`] are on their way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait for more input.
    Read,
    /// Close the connection once its replies are sent (a datagram: nothing
    /// more to do).
    Close,
    /// Call [`MessageHandler::timer`] after this long. Nothing more is read
    /// from the connection meanwhile (what the client sends waits in the
    /// kernel), and an event loop serves its other connections: a `delay`
    /// that does not block.
    Wait(std::time::Duration),
}

/// The replies of one handler call. Each [`send`](Output::send) (or
/// [`reply_with`](Output::reply_with)) is one reply: over a stream its
/// bytes follow the previous reply's, over datagrams it is one datagram.
/// The buffer belongs to the server, not to the connection: it is empty at
/// each call and reused.
#[derive(Debug, Default)]
pub struct Output {
    pub(crate) buf: Vec<u8>,
    /// Where each reply ends in `buf`.
    pub(crate) ends: Vec<usize>,
}

impl Output {
    /// Queues `bytes` as one reply (nothing, if empty).
    pub fn send(&mut self, bytes: &[u8]) {
        self.reply_with(|b| b.extend_from_slice(bytes));
    }

    /// Builds one reply in place: `build` appends to the buffer; nothing is
    /// sent if it appends nothing.
    pub fn reply_with(&mut self, build: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buf.len();
        build(&mut self.buf);
        if self.buf.len() > start {
            self.ends.push(self.buf.len());
        }
    }

    /// Replies queued so far.
    pub fn replies(&self) -> usize {
        self.ends.len()
    }

    /// The bytes of every reply queued so far.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Each reply queued so far, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(s, &e)| &self.buf[s..e])
    }

    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
    }
}

/// A message handler: the server calls it with the bytes that arrived on
/// a stream connection (whatever one read returned), or with one datagram,
/// and it answers with replies in an [`Output`] and a [`Next`]. It never
/// reads or writes a socket itself and must not block: under
/// [`Policy::Event`](crate::Policy::Event) one thread serves thousands of
/// connections through it, and a handler that sleeps or burns CPU stalls
/// all of them (ask for a [`Next::Wait`] instead of sleeping).
///
/// One handler serves one stream connection for its whole life, or one
/// datagram (and its timer). Its hooks are the server's: `verify_request`
/// runs before it exists, `handle_error` gets its errors and panics (the
/// connection is then closed), the idle timeout and graceful stop apply,
/// and the counters and access log count its replies.
pub trait MessageHandler: Send {
    /// Bytes arrived (a stream: one read's worth, so a line may come in
    /// pieces; a datagram: the whole packet). Must be overridden.
    fn data(&mut self, input: &[u8], out: &mut Output) -> io::Result<Next>;

    /// The wait a [`Next::Wait`] asked for is over. Default: read on.
    fn timer(&mut self, _out: &mut Output) -> io::Result<Next> {
        Ok(Next::Read)
    }

    /// The client closed its side (a stream's end of input): a last
    /// request without its terminator can still be answered. The server
    /// sends what `out` holds, honours a [`Next::Wait`], then closes the
    /// connection whatever is returned. Default: nothing more to send.
    fn end(&mut self, _out: &mut Output) -> io::Result<Next> {
        Ok(Next::Close)
    }

    /// The connection is closing (the client left, the handler asked, an
    /// error, the idle timeout or a stop); nothing can be sent any more.
    /// Default: nothing.
    fn closed(&mut self) {}
}

/// A new connection or datagram, as a [`MessageFactory`] sees it.
pub struct Opening<'a> {
    pub(crate) peer: &'a Address,
    pub(crate) socket: &'a socket2::Socket,
    pub(crate) datagram: Option<(&'a Arc<socket2::Socket>, &'a socket2::SockAddr)>,
    pub(crate) ctx: &'a ServerContext,
}

impl Opening<'_> {
    /// The client's address.
    pub fn peer(&self) -> &Address {
        self.peer
    }

    /// True for a stream connection, false for a datagram.
    pub fn is_stream(&self) -> bool {
        self.datagram.is_none()
    }

    /// The connection (a stream), or the server's socket (a datagram).
    /// Writing to it directly bypasses the server's output buffer: do it
    /// only without blocking (MSG_DONTWAIT), as a chat room does for
    /// messages from other sessions.
    pub fn socket(&self) -> &socket2::Socket {
        self.socket
    }

    /// A datagram's server socket and the client's kernel address (to send
    /// it more later), or `None` for a stream.
    pub fn datagram(&self) -> Option<(&Arc<socket2::Socket>, &socket2::SockAddr)> {
        self.datagram
    }

    /// The server's shared settings.
    pub fn server(&self) -> &ServerContext {
        self.ctx
    }
}

/// Makes a [`MessageHandler`] for each stream connection or datagram.
pub trait MessageFactory: Send + Sync + 'static {
    /// A handler for what `opening` describes; a greeting written to `out`
    /// is sent at once (streams). An error closes the connection and goes
    /// to `handle_error`.
    fn open(&self, opening: &Opening<'_>, out: &mut Output) -> io::Result<Box<dyn MessageHandler>>;
}

/// Serves a [`MessageFactory`] under every policy: the event loops call it
/// directly, and the blocking policies (sync, fork, thread, pool) drive it
/// from a read loop, sleeping where it asks to wait. Build a server with
/// `builder.build(messages(MyFactory))`.
#[derive(Debug, Clone, Copy)]
pub struct Messages<F>(F);

/// Wraps a message factory for `ServerBuilder::build` (see [`Messages`]).
pub fn messages<F: MessageFactory>(factory: F) -> Messages<F> {
    Messages(factory)
}

impl<F: MessageFactory> HandlerFactory for Messages<F> {
    fn serve(&self, request: &mut Request) -> io::Result<()> {
        let mut out = Output::default();
        match request {
            Request::Stream(conn) => {
                let opening = Opening {
                    peer: conn.peer(),
                    socket: conn.socket(),
                    datagram: None,
                    ctx: conn.server(),
                };
                let mut h = self.0.open(&opening, &mut out)?;
                let served = drive_stream(&mut *h, conn, &mut out);
                h.closed();
                served
            }
            Request::Datagram(d) => {
                let socket = Arc::clone(d.socket());
                let to = d.reply_addr().clone();
                let opening = Opening {
                    peer: d.peer(),
                    socket: &socket,
                    datagram: Some((&socket, &to)),
                    ctx: d.server(),
                };
                let mut h = self.0.open(&opening, &mut out)?;
                let mut next = h.data(&d.packet, &mut out)?;
                while let Next::Wait(t) = next {
                    std::thread::sleep(t);
                    next = h.timer(&mut out)?;
                }
                h.closed();
                for reply in out.iter() {
                    d.reply.extend_from_slice(reply);
                    d.send_reply()?;
                }
                Ok(())
            }
        }
    }

    fn message_factory(&self) -> Option<&dyn MessageFactory> {
        Some(&self.0)
    }
}

/// A message handler over a blocking stream: read, call, write, repeat.
fn drive_stream(
    h: &mut dyn MessageHandler,
    conn: &mut StreamRequest,
    out: &mut Output,
) -> io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut next = Next::Read;
    loop {
        for reply in out.iter() {
            conn.write_all(reply)?;
        }
        out.clear();
        next = match next {
            Next::Close => return Ok(()),
            Next::Wait(t) => {
                std::thread::sleep(t);
                h.timer(out)?
            }
            Next::Read => match conn.read_some(&mut buf)? {
                0 => return Ok(()),
                n => h.data(&buf[..n], out)?,
            },
        };
    }
}
