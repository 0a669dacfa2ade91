//! Python's `UnixStreamServer`: an echo server on a Unix socket path. Only
//! the transport differs from a TCP server.
//!
//! ```sh
//! cargo run --example unix_stream -- /tmp/echo.sock
//! nc -U /tmp/echo.sock                     # every line comes back
//! socat - UNIX-CONNECT:/tmp/echo.sock
//! ```
//!
//! Prints `listening on PATH` when ready. A stale socket file at PATH is
//! replaced; on SIGTERM or SIGINT the server stops and removes the file.

use std::error::Error;
use std::io;
use std::process::ExitCode;
use std::time::Duration;

use socketserver::{stream, ServerBuilder, Signal, StreamHandler, StreamRequest, Transport};

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

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("unix_stream: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let arg = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/echo.sock".into());
    let addr = Transport::UnixStream.parse_address(&arg)?;
    // One client at a time, as Python's; `.policy(Policy::THREAD)` would
    // make it `ThreadingUnixStreamServer`.
    let mut server = ServerBuilder::new(Transport::UnixStream, addr).build(stream(|| Echo))?;
    let stop = server.shutdown_handle();
    stop.stop_on_signals(&[Signal::SIGTERM, Signal::SIGINT])?;
    println!("listening on {}", server.address());
    server.serve_forever(Duration::from_millis(500))?;
    Ok(()) // dropping the server closes it and removes the socket file
}
