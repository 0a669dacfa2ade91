//! Python's `socketserver`, done right in Rust.
//!
//! A server is a transport, a concurrency policy and a request handler:
//!
//! ```text
//!              +----------------------------------------------+
//!   transport  | Tcp (v4/v6)  Udp  UnixStream  UnixDgram      |  Transport + Address
//!              +----------------------------------------------+
//!   policy     | Sync   Fork   Thread   Pool   Event          |  Policy (run time)
//!              +----------------------------------------------+
//!   handler    | setup -> handle -> finish                    |  Handler / StreamHandler /
//!              |                                              |  DatagramHandler
//!              | bytes in -> replies + next (event loops)     |  MessageHandler
//!              +----------------------------------------------+
//!   supervisor | master + workers, restarts, signals          |  supervisor::Supervisor
//!              +----------------------------------------------+
//! ```
//!
//! | Python                         | here                                          |
//! |--------------------------------|-----------------------------------------------|
//! | `TCPServer`, `UDPServer`       | `ServerBuilder::new(Transport::Tcp / Udp, ..)`|
//! | `UnixStreamServer`, `UnixDatagramServer` | `Transport::UnixStream / UnixDgram` |
//! | `ForkingMixIn`                 | `Policy::Fork { max_children, block_on_close }` |
//! | `ThreadingMixIn`               | `Policy::Thread { daemon, block_on_close, max_threads }` |
//! | (none)                         | `Policy::Pool { threads, queue }`             |
//! | (none; nginx's model)          | `Policy::Event { threads }`                   |
//! | `BaseRequestHandler`           | [`Handler`] (any transport)                   |
//! | `StreamRequestHandler`         | [`StreamHandler`] over a [`StreamRequest`] (`Read`, `Write`, `reader()`) |
//! | `DatagramRequestHandler`       | [`DatagramHandler`] over a [`DatagramRequest`] (packet / reply) |
//! | (none)                         | [`MessageHandler`] (bytes in, replies out; what an event loop calls), made by a [`MessageFactory`] |
//! | overridable server methods     | [`Hooks`]                                     |
//! | (gunicorn's arbiter)           | [`supervisor::Supervisor`]                    |
//!
//! Every transport works with every policy. The event policy runs only
//! message handlers (a blocking handler would stall its loop); [`messages`]
//! serves one under the other policies too. The request chain is Python's:
//! `handle_request` -> `get_request` -> `verify_request` ([`Hooks`]) ->
//! `process_request` ([`Policy`]) -> `finish_request` (setup/handle/finish)
//! -> `shutdown_request`; [`server`] spells it out.
//!
//! ```no_run
//! use socketserver::{stream, Policy, ServerBuilder, StreamHandler, StreamRequest, Transport};
//! use std::io::{self, Write};
//! use std::time::Duration;
//!
//! struct Echo;
//! impl StreamHandler for Echo {
//!     fn handle(&mut self, conn: &mut StreamRequest) -> io::Result<()> {
//!         let mut buf = [0u8; 4096];
//!         loop {
//!             let n = conn.read_some(&mut buf)?;
//!             if n == 0 {
//!                 return Ok(());
//!             }
//!             conn.write_all(&buf[..n])?;
//!         }
//!     }
//! }
//!
//! let addr = Transport::Tcp.parse_address("127.0.0.1:0")?;
//! let mut server = ServerBuilder::new(Transport::Tcp, addr)
//!     .policy(Policy::THREAD)
//!     .build(stream(|| Echo))?;
//! println!("listening on {}", server.address());
//! server.serve_forever(Duration::from_millis(500))?;
//! # Ok::<(), socketserver::Error>(())
//! ```
//!
//! # Features
//!
//! With `default-features = false` the crate is the library alone: the
//! modules above, on libc, nix, socket2, signal-hook, crossbeam-channel, mio,
//! slog (with its term and JSON drains) and thiserror. `apps` (on by
//! default) adds [`services`], the built-in services `sockserv` serves;
//! `load` (on by default) adds `load`, the `sockload` engine.
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

/// The linker section of the code a fork-policy child runs: the one home
/// of its name (see `sys::CHILD_TEXT`). Used as
/// `#[link_section = child_text!()]`.
macro_rules! child_text {
    () => {
        ".text.hot.sockserv_child"
    };
}

pub mod access;
pub mod addr;
mod control;
mod dispatch;
pub mod error;
pub mod handler;
pub mod hooks;
pub mod log;
mod park;
pub mod policy;
pub mod request;
pub mod server;
pub mod socket;
pub mod stats;
pub mod supervisor;
mod sys;
mod throttle;
mod transport;
pub mod units;
mod watch;

#[cfg(feature = "load")]
pub mod load;
#[cfg(feature = "apps")]
pub mod services;

/// Entry points for the fuzz targets in `fuzz/`, one per parser of
/// untrusted input. Not part of the API: each panics when its parser
/// breaks the contract documented beside it (`check_*` in the parser's
/// module), which is what the fuzzer looks for.
#[doc(hidden)]
pub mod fuzzing {
    /// Target `address`: Unix paths, abstract names and `HOST:PORT`
    /// (resolved offline).
    pub fn address(data: &[u8]) {
        crate::addr::check_address(&String::from_utf8_lossy(data));
    }

    /// Target `duration`: the flags' seconds and, with `load`,
    /// sockload's `10s` / `500ms` durations (`data[0]` picks the seconds'
    /// limit; both read the rest).
    pub fn duration(data: &[u8]) {
        crate::units::check_seconds(data);
        #[cfg(feature = "load")]
        if let Some((_, text)) = data.split_first() {
            crate::load::check_duration(&String::from_utf8_lossy(text));
        }
    }

    /// Target `size`: the flags' sizes (`64K`) and counts.
    pub fn size(data: &[u8]) {
        crate::units::check_size(data);
    }

    /// Target `control`: a request line on the control socket.
    pub fn control(data: &[u8]) {
        crate::supervisor::control::check_request(data);
    }

    /// Target `metrics`: an HTTP request to the metrics endpoint.
    #[cfg(feature = "metrics")]
    pub fn metrics(data: &[u8]) {
        crate::supervisor::metrics::check_request(data);
    }

    /// Target `histfile`: a `--hist` file given to `sockload merge`.
    #[cfg(feature = "load")]
    pub fn histfile(data: &[u8]) {
        crate::load::check_histfile(data);
    }
}

pub use addr::{Address, Transport};
pub use control::ShutdownHandle;
pub use error::{Error, RequestError, Result};
pub use handler::{
    datagram, messages, stream, DatagramHandler, Handler, HandlerFactory, MessageFactory,
    MessageHandler, Next, Opening, Output, StreamHandler,
};
pub use hooks::{AllowList, DefaultHooks, Hooks};
pub use nix::sys::signal::Signal;
pub use policy::Policy;
pub use request::{DatagramRequest, Request, ServerContext, StreamRequest};
pub use server::{Handled, Server, ServerBuilder};
pub use socket::{BindOptions, Listener};
pub use supervisor::Supervisor;
