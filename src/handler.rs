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

use std::io;

use crate::addr::Transport;
use crate::request::{DatagramRequest, Request, StreamRequest};

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
