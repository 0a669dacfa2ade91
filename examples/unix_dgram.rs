//! Python's `UnixDatagramServer`: each datagram sent to a Unix socket path
//! is sent back to its sender. A client must bind an address of its own to
//! get the reply.
//!
//! ```sh
//! cargo run --example unix_dgram -- /tmp/echo-dgram.sock
//! socat - UNIX-SENDTO:/tmp/echo-dgram.sock,bind=/tmp/client.sock    # then rm /tmp/client.sock
//! ```
//!
//! Prints `listening on PATH` when ready. A stale socket file at PATH is
//! replaced; on SIGTERM or SIGINT the server stops and removes the file.
//! A datagram from a client with no address gets no reply, and a line on
//! stderr that says so.

use std::error::Error;
use std::io;
use std::process::ExitCode;
use std::time::Duration;

use socketserver::{
    datagram, Address, DatagramHandler, DatagramRequest, ServerBuilder, Signal, Transport,
};

/// Puts the packet in the reply; the server sends it after `finish`.
struct Echo;

impl DatagramHandler for Echo {
    fn handle(&mut self, dgram: &mut DatagramRequest) -> io::Result<()> {
        if *dgram.peer() == Address::Unnamed {
            eprintln!("no reply: the client has no address (it must bind one)");
            return Ok(());
        }
        dgram.reply = std::mem::take(&mut dgram.packet);
        Ok(())
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("unix_dgram: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let arg = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/echo-dgram.sock".into());
    let addr = Transport::UnixDgram.parse_address(&arg)?;
    let mut server = ServerBuilder::new(Transport::UnixDgram, addr).build(datagram(|| Echo))?;
    let stop = server.shutdown_handle();
    stop.stop_on_signals(&[Signal::SIGTERM, Signal::SIGINT])?;
    println!("listening on {}", server.address());
    server.serve_forever(Duration::from_millis(500))?;
    Ok(()) // dropping the server closes it and removes the socket file
}
