//! The tutorials' "time sync" exercise on Python's `UDPServer`: each
//! datagram is a strftime format, answered with the server's local time in
//! it. An empty datagram gets `%Y-%m-%d %H:%M:%S`; a format that is not
//! valid gets `error: ...`. Replies end with a newline, for nc.
//!
//! ```sh
//! cargo run --example udp_time -- 127.0.0.1:9000
//! echo '%H:%M:%S' | nc -u -w1 127.0.0.1 9000      # 14:03:27
//! echo | socat - UDP:127.0.0.1:9000               # 2026-12-01 14:03:27
//! ```
//!
//! Prints `listening on ADDR` when ready (port 0 picks a free port); stops
//! on SIGTERM or SIGINT.

use std::error::Error;
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use chrono::format::{Item, StrftimeItems};
use socketserver::{datagram, DatagramHandler, DatagramRequest, ServerBuilder, Signal, Transport};

/// The format an empty request gets.
const DEFAULT_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// Python's `DatagramRequestHandler`: `packet` is `rfile`, `reply` `wfile`.
struct Time;

impl DatagramHandler for Time {
    fn handle(&mut self, dgram: &mut DatagramRequest) -> io::Result<()> {
        match local_time(&dgram.packet) {
            Ok(text) => writeln!(dgram.reply, "{text}"),
            Err(e) => writeln!(dgram.reply, "error: {e}"),
        }
    }
}

/// The local time in the strftime format `request` holds.
fn local_time(request: &[u8]) -> Result<String, String> {
    let format = std::str::from_utf8(request).map_err(|_| "the format is not UTF-8")?;
    let format = match format.trim_end_matches(['\r', '\n']) {
        "" => DEFAULT_FORMAT,
        f => f,
    };
    let items: Vec<Item<'_>> = StrftimeItems::new(format).collect();
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return Err(format!("invalid strftime format {format:?}"));
    }
    let now = chrono::Local::now().format_with_items(items.into_iter());
    let mut text = String::new();
    write!(text, "{now}").map_err(|_| format!("cannot render strftime format {format:?}"))?;
    Ok(text)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udp_time: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let arg = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".into());
    let addr = Transport::Udp.parse_address(&arg)?;
    let mut server = ServerBuilder::new(Transport::Udp, addr).build(datagram(|| Time))?;
    let stop = server.shutdown_handle();
    stop.stop_on_signals(&[Signal::SIGTERM, Signal::SIGINT])?;
    println!("listening on {}", server.address());
    server.serve_forever(Duration::from_millis(500))?;
    Ok(())
}
