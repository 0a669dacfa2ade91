//! Running one request through a fresh handler: Python's `finish_request`
//! plus the error reporting and `shutdown_request` around it. Every policy
//! calls `Dispatch::run` (or `prepare`, then `finish`), in the serving
//! thread, a pool thread, a new thread or a forked child.

use std::any::Any;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use slog::{debug, info, Logger};

use crate::access::{AccessLog, Outcome};
use crate::addr::Address;
use crate::error::RequestError;
use crate::handler::HandlerFactory;
use crate::hooks::Hooks;
use crate::request::{DatagramRequest, Request, RequestDeadline, ServerContext, StreamRequest};
use crate::transport::Incoming;
use crate::watch::Watch;

/// Everything a request needs besides itself; cheap to clone into a thread.
#[derive(Clone)]
pub(crate) struct Dispatch {
    /// Makes the handler.
    pub(crate) factory: Arc<dyn HandlerFactory>,
    /// The overridable lifecycle hooks (handle_error is called from here).
    pub(crate) hooks: Arc<dyn Hooks>,
    /// Shared settings.
    pub(crate) ctx: Arc<ServerContext>,
    /// Where to log.
    pub(crate) log: Logger,
    /// One line per connection or datagram, when configured.
    pub(crate) access: Option<Arc<AccessLog>>,
}

impl Dispatch {
    /// Runs `incoming` through a new handler and closes it. Returns false
    /// when the request failed (after reporting it through `handle_error`).
    /// Never panics: a panicking handler is caught and reported.
    pub(crate) fn run(&self, incoming: Incoming, watch: Watch) -> bool {
        self.finish(self.prepare(incoming, watch), false)
    }

    /// Wraps `incoming`, without any system call.
    #[link_section = child_text!()]
    pub(crate) fn prepare(&self, incoming: Incoming, watch: Watch) -> Prepared {
        let request = match incoming {
            Incoming::Stream { conn, peer } => Request::Stream(StreamRequest::watched(
                conn,
                peer,
                Arc::clone(&self.ctx),
                watch,
            )),
            Incoming::Datagram {
                packet,
                peer,
                reply_to,
                socket,
            } => Request::Datagram(DatagramRequest::new(
                packet,
                peer,
                reply_to,
                socket,
                Arc::clone(&self.ctx),
            )),
        };
        Prepared { request }
    }

    /// A fresh handler's setup / handle / finish, the datagram reply, then
    /// Python's `shutdown_request`. In a forked child (`in_child`), the
    /// request is not dropped (the child is about to `_exit`, and dropping
    /// would write to reference counts on pages shared with the parent).
    #[link_section = child_text!()]
    pub(crate) fn finish(&self, prepared: Prepared, in_child: bool) -> bool {
        let Prepared { mut request } = prepared;
        let started = self.access.as_ref().map(|_| std::time::Instant::now());
        if let Request::Stream(s) = &request {
            s.apply_options();
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| self.factory.serve(&mut request)));
        let result = match outcome {
            Ok(r) => r.map_err(RequestError::Io),
            Err(payload) => Err(RequestError::Panic(panic_message(&*payload))),
        };
        if let Request::Stream(s) = &request {
            s.shutdown();
        }
        let (ok, outcome) = match result {
            Ok(()) => (true, Outcome::Ok),
            Err(RequestError::Io(e)) if is_disconnect(&e) => {
                match RequestDeadline::of(&e) {
                    Some(RequestDeadline(limit)) => {
                        info!(self.log, "request deadline passed; closed";
                        "peer" => %request.peer(), "request_timeout_s" => limit.as_secs_f64())
                    }
                    None => debug!(self.log, "client went away";
                        "peer" => %request.peer(), "error" => %e),
                }
                let timeout = matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                );
                (
                    true,
                    if timeout {
                        Outcome::Timeout
                    } else {
                        Outcome::Reset
                    },
                )
            }
            Err(err) => {
                self.report(request.peer(), &err);
                (false, Outcome::Error)
            }
        };
        if let (Some(access), Some(started)) = (&self.access, started) {
            let (bytes_in, bytes_out) = match &request {
                Request::Stream(s) => s.bytes(),
                Request::Datagram(d) => d.bytes(),
            };
            access.record(
                request.peer(),
                outcome,
                started.elapsed(),
                bytes_in,
                bytes_out,
            );
        }
        if in_child {
            std::mem::forget(request);
        }
        ok
    }

    /// Reports a failed request through the hooks, never letting a panic
    /// in a user's `handle_error` escape.
    pub(crate) fn report(&self, peer: &Address, err: &RequestError) {
        crate::stats::Slot::add(&self.ctx.stats.errors);
        let _ = catch_unwind(AssertUnwindSafe(|| {
            self.hooks.handle_error(peer, err, &self.log)
        }));
    }
}

/// A request wrapped, ready to run.
pub(crate) struct Prepared {
    request: Request,
}

/// True for errors that only mean the client left or idled out: a normal
/// event, logged at debug, never reported as a failure.
pub(crate) fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
            | io::ErrorKind::NotConnected
    )
}

pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
