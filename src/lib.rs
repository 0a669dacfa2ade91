//! Python's `socketserver`, done right in Rust.
//!
//! A server is a transport, a concurrency policy and a request handler:
//!
//! ```text
//!              +----------------------------------------------+
//!   transport  | Tcp (v4/v6)  Udp  UnixStream  UnixDgram      |  Transport + Address
//!              +----------------------------------------------+
//!   policy     | Sync   Fork   Thread   Pool                  |  Policy (run time)
//!              +----------------------------------------------+
//!   handler    | setup -> handle -> finish                    |  Handler + HandlerFactory
//!              +----------------------------------------------+
//! ```
//!
//! | Python                         | here                                          |
//! |--------------------------------|-----------------------------------------------|
//! | `TCPServer`, `UDPServer`       | `ServerBuilder::new(Transport::Tcp / Udp, ..)`|
//! | `UnixStreamServer`, `UnixDatagramServer` | `Transport::UnixStream / UnixDgram` |
//! | `ForkingMixIn`                 | `Policy::Fork { max_children, block_on_close }` |
//! | `ThreadingMixIn`               | `Policy::Thread { daemon, block_on_close }`   |
//! | (none)                         | `Policy::Pool { threads, queue }`             |
//! | `BaseRequestHandler`           | [`Handler`]                                   |
//! | `StreamRequestHandler`         | [`handler::StreamRequest`] (reader / writer)  |
//! | `DatagramRequestHandler`       | [`handler::DatagramRequest`] (packet / reply) |
//! | overridable server methods     | [`Hooks`]                                     |
//!
//! Every transport works with every policy. The request chain is Python's:
//! `handle_request` -> `get_request` ([`transport`]) -> `verify_request`
//! ([`Hooks`]) -> `process_request` ([`Policy`]) -> `finish_request`
//! (setup/handle/finish, [`dispatch`]) -> `shutdown_request`.
//!
//! ```no_run
//! use socketserver::{Handler, Policy, Request, ServerBuilder, Transport};
//! use std::time::Duration;
//!
//! struct Echo;
//! impl Handler for Echo {
//!     fn handle(&mut self, req: &mut Request) -> std::io::Result<()> {
//!         if let Request::Stream(s) = req {
//!             let mut buf = [0u8; 4096];
//!             loop {
//!                 let n = s.read_some(&mut buf)?;
//!                 if n == 0 { return Ok(()); }
//!                 s.write_all(&buf[..n])?;
//!             }
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let addr = Transport::Tcp.parse_address("127.0.0.1:0")?;
//! let mut server = ServerBuilder::new(Transport::Tcp, addr)
//!     .policy(Policy::THREAD)
//!     .build(|| Echo)?;
//! println!("listening on {}", server.address());
//! server.serve_forever(Duration::from_millis(500))?;
//! # Ok::<(), socketserver::Error>(())
//! ```
#![deny(missing_docs)]

pub mod addr;
pub mod app;
pub mod control;
pub mod dispatch;
pub mod error;
pub mod handler;
pub mod hooks;
pub mod load;
pub mod log;
pub mod policy;
pub mod server;
pub mod services;
pub mod socket;
pub mod supervisor;
pub mod sys;
pub mod transport;
pub mod watch;

pub use addr::{Address, Transport};
pub use control::ShutdownHandle;
pub use dispatch::RequestError;
pub use error::{Error, Result};
pub use handler::{Handler, HandlerFactory, Request, ServerContext};
pub use hooks::{AllowList, DefaultHooks, Hooks};
pub use policy::Policy;
pub use server::{Server, ServerBuilder};
pub use socket::{BindOptions, Listener};
