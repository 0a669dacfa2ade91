//! Python's `ThreadingTCPServer` tutorial: a thread per connection, each
//! line sent back upper-cased (`self.data.upper()`).
//!
//! ```sh
//! cargo run --example threading_upper -- 127.0.0.1:9000
//! nc 127.0.0.1 9000                # type lines; each comes back in capitals
//! socat - TCP:127.0.0.1:9000       # a second client at once: another thread serves it
//! ```
//!
//! Prints `listening on ADDR` when ready (port 0 picks a free port); stops
//! on SIGTERM or SIGINT, letting each connection finish the line in hand.

use std::error::Error;
use std::io::{self, BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use socketserver::{
    stream, Policy, ServerBuilder, Signal, StreamHandler, StreamRequest, Transport,
};

/// Python's `MyTCPHandler`, for every line of the connection.
struct Upper;

impl StreamHandler for Upper {
    fn handle(&mut self, conn: &mut StreamRequest) -> io::Result<()> {
        // Python's rfile and wfile in one: the reader buffers lines and
        // writes go straight to the client.
        let mut rw = conn.reader();
        let mut line = Vec::new();
        loop {
            line.clear();
            if rw.read_until(b'\n', &mut line)? == 0 {
                return Ok(()); // the client closed
            }
            write!(rw, "{}", String::from_utf8_lossy(&line).to_uppercase())?;
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("threading_upper: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let arg = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".into());
    let addr = Transport::Tcp.parse_address(&arg)?;
    let mut server = ServerBuilder::new(Transport::Tcp, addr)
        .policy(Policy::THREAD)
        .build(stream(|| Upper))?;
    let stop = server.shutdown_handle();
    stop.stop_on_signals(&[Signal::SIGTERM, Signal::SIGINT])?;
    println!("listening on {}", server.address());
    server.serve_forever(Duration::from_millis(500))?;
    // Blocked reads see end-of-file; each thread finishes its line and ends.
    server.close_gracefully(Duration::from_secs(5));
    Ok(())
}
