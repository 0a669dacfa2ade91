//! Built-in services that `sockserv` serves, each over all four transports.
//!
//! A [`Service`] maps one request to one reply. [`ServiceFactory`] serves
//! it as a [`Handler`]: over a stream, each read (or each line, for line
//! services) is one request; over datagrams, each packet is one.
//! [`ServeConfig`] is what `sockserv` serves, turned into a server. Under
//! the event policy the factory serves each service as a message handler
//! instead (`delay` then waits on the loop's timer, not in a sleep).
//!
//! [`accounts`] is not a service: it holds what [`chat`] and [`files`]
//! share (the accounts file, credentials, password limits, name and text
//! checks), so that neither reaches into the other.

pub mod accounts;
mod builtin;
pub mod chat;
mod config;
pub(crate) mod event;
pub mod files;
mod time;

use std::io;
use std::mem::MaybeUninit;
use std::sync::Arc;

pub use builtin::Builtin;
pub use config::{
    check_creatable_dir, check_writable_dir, check_writable_file, create_private_dir,
    default_state_dir, serve_foreground, ServeConfig, ServiceKind,
};

use crate::handler::{run_handler, Handler, HandlerFactory};
use crate::request::{Request, StreamRequest};

/// The longest line a line service reads; a longer one gets an error reply
/// and the connection is closed.
pub const MAX_LINE: usize = 4096;

/// The stack buffer a stream connection's reads start in (under a page, so
/// no stack probe touches pages it does not use).
const SMALL_READ: usize = 2048;

/// The heap buffer reads move to once one fills `SMALL_READ`.
const BIG_READ: usize = 16 * 1024;

/// How a stream is cut into requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Each read is one request (echo, upper, discard, delay, cpu).
    Chunk,
    /// Each `\n`-terminated line is one request (time).
    Line,
}

/// One request in, one reply out.
pub trait Service: Send + Sync + 'static {
    /// How stream input is cut into requests.
    fn framing(&self) -> Framing;

    /// Appends the reply to `input` to `out`; an empty reply sends nothing.
    /// `stream` tells whether the reply goes over a stream (line services
    /// end their replies with `\n` there).
    fn respond(&self, input: &[u8], stream: bool, out: &mut Vec<u8>);

    /// For a service whose reply has the request's length: turns `buf`
    /// into the reply in place and returns true (no allocation per
    /// request). The default returns false and `respond` is used.
    fn respond_in_place(&self, _buf: &mut [u8]) -> bool {
        false
    }

    /// How long the service waits before each reply (`delay`). Under the
    /// blocking policies `respond` sleeps it; an event loop sets a timer
    /// instead and then calls [`respond_undelayed`](Service::respond_undelayed).
    /// Default: no wait.
    fn delay(&self) -> Option<std::time::Duration> {
        None
    }

    /// `respond` without its wait (see [`delay`](Service::delay)).
    /// Default: `respond`.
    fn respond_undelayed(&self, input: &[u8], stream: bool, out: &mut Vec<u8>) {
        self.respond(input, stream, out);
    }
}

/// Serves each request with one shared service. It lends the service to
/// each request instead of cloning its `Arc`: in a fork-policy child, a
/// reference-count increment would copy a heap page shared with the parent.
pub struct ServiceFactory {
    service: Arc<dyn Service>,
}

impl ServiceFactory {
    /// A factory serving `service`, for `ServerBuilder::build`.
    pub fn new(service: Arc<dyn Service>) -> ServiceFactory {
        ServiceFactory { service }
    }
}

impl HandlerFactory for ServiceFactory {
    #[link_section = child_text!()]
    fn serve(&self, request: &mut Request) -> io::Result<()> {
        run_handler(&mut Serving(&*self.service), request)
    }

    /// Under the event policy the same service runs as a message handler
    /// (see `services::event`).
    fn message_factory(&self) -> Option<&dyn crate::handler::MessageFactory> {
        Some(self)
    }
}

/// A request's handler, borrowing the service.
struct Serving<'a>(&'a dyn Service);

impl Serving<'_> {
    #[link_section = child_text!()]
    fn serve_stream(&self, s: &mut StreamRequest) -> io::Result<()> {
        match self.0.framing() {
            Framing::Chunk => self.serve_chunks(s),
            Framing::Line => self.serve_lines(s),
        }
    }

    /// Each read is one request. Reads start in a small uninitialised
    /// stack buffer and move to a 16 KiB heap buffer once a read fills it,
    /// and in-place services reply from the buffer. A 16 KiB stack array
    /// would cost every connection four pages of stack, whether or not it
    /// ever sends that much: the compiler's stack probes write each page of
    /// a frame over 4 KiB on entry. This way a connection that only sends
    /// small requests spends at most one page on its buffer.
    #[link_section = child_text!()]
    fn serve_chunks(&self, s: &mut StreamRequest) -> io::Result<()> {
        let mut small = [MaybeUninit::<u8>::uninit(); SMALL_READ];
        let mut big: Option<Box<[MaybeUninit<u8>]>> = None;
        let mut out = Vec::new();
        loop {
            let space = match big.as_deref_mut() {
                Some(big) => big,
                None => &mut small[..],
            };
            let full = space.len();
            let request = s.read_uninit(space)?;
            if request.is_empty() {
                return Ok(());
            }
            let grow = request.len() == full;
            if self.0.respond_in_place(request) {
                s.write_all(request)?;
            } else {
                out.clear();
                self.0.respond(request, true, &mut out);
                if !out.is_empty() {
                    s.write_all(&out)?;
                }
            }
            if grow && big.is_none() {
                big = Some(Box::new_uninit_slice(BIG_READ));
            }
        }
    }

    fn serve_lines(&self, s: &mut StreamRequest) -> io::Result<()> {
        let mut line = Vec::new();
        let mut out = Vec::new();
        loop {
            let n = s.read_line(MAX_LINE, &mut line)?;
            if n == 0 {
                return Ok(());
            }
            if n >= MAX_LINE && line.last() != Some(&b'\n') {
                s.write_all(format!("error: line longer than {MAX_LINE} bytes\n").as_bytes())?;
                return Ok(());
            }
            out.clear();
            self.0.respond(&line, true, &mut out);
            if !out.is_empty() {
                s.write_all(&out)?;
            }
        }
    }
}

impl Handler for Serving<'_> {
    #[link_section = child_text!()]
    fn handle(&mut self, req: &mut Request) -> io::Result<()> {
        match req {
            Request::Stream(s) => self.serve_stream(s),
            Request::Datagram(d) => {
                self.0.respond(&d.packet, false, &mut d.reply);
                Ok(())
            }
        }
    }
}
