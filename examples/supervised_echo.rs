//! An echo server under the supervisor: the master holds the socket and
//! keeps 2 worker processes serving it, each forking a child per connection
//! (Python's `ForkingTCPServer`, run the way gunicorn runs an app).
//!
//! ```sh
//! cargo run --example supervised_echo -- 127.0.0.1:9000
//! nc 127.0.0.1 9000                # every line comes back
//! kill -TERM <master pid>          # graceful stop (INT: fast); TTIN/TTOU: one worker more/fewer
//! ```
//!
//! The master logs JSON lines to stderr, the first one `"msg":"listening"`
//! with the bound `addr` (port 0 picks a free port).

use std::io;

use socketserver::log::{stderr_logger, Level, LogFormat};
use socketserver::{stream, Policy, StreamHandler, StreamRequest, Supervisor, Transport};

/// Sends every byte back.
struct Echo;

impl StreamHandler for Echo {
    fn handle(&mut self, conn: &mut StreamRequest) -> io::Result<()> {
        let mut buf = [0u8; 4096];
        loop {
            match conn.read_some(&mut buf)? {
                0 => return Ok(()),
                n => conn.write_all(&buf[..n])?,
            }
        }
    }
}

fn main() {
    let arg = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".into());
    let log = stderr_logger(LogFormat::Json, Level::Info);
    let code = Transport::Tcp.parse_address(&arg).and_then(|addr| {
        Supervisor::new(Transport::Tcp, addr)
            .workers(2)
            .policy(Policy::FORK)
            .run(&log, |builder| builder.build(stream(|| Echo)))
    });
    std::process::exit(code.unwrap_or_else(|e| {
        eprintln!("supervised_echo: {e}");
        1
    }));
}
