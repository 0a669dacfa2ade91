//! Python's one-request-at-a-time loop: `server.timeout = T` and
//! `handle_request()` called COUNT times. Each call serves one connection
//! (one line echoed, then closed), or waits T seconds and calls
//! `handle_timeout`, which prints `timeout`. Exits 0 after COUNT calls.
//!
//! ```sh
//! cargo run --example handle_request -- 127.0.0.1:9000 5 2.5   # COUNT=5, T=2.5 s
//! echo hello | nc 127.0.0.1 9000                                # hello
//! ```
//!
//! Prints `listening on ADDR` when ready (port 0 picks a free port); stops
//! early on SIGTERM or SIGINT.

use std::error::Error;
use std::io::{self, BufRead};
use std::process::ExitCode;
use std::time::Duration;

use socketserver::{
    stream, Handled, Hooks, ServerBuilder, Signal, StreamHandler, StreamRequest, Transport,
};

/// Answers one line with itself.
struct EchoLine;

impl StreamHandler for EchoLine {
    fn handle(&mut self, conn: &mut StreamRequest) -> io::Result<()> {
        let mut line = Vec::new();
        conn.reader().read_until(b'\n', &mut line)?;
        conn.write_all(&line)
    }
}

/// `handle_timeout` overridden: say so.
struct Timeouts;

impl Hooks for Timeouts {
    fn handle_timeout(&self) {
        println!("timeout");
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args.first().map_or("127.0.0.1:9000", String::as_str);
    let count = args.get(1).map_or(Some(10), |c| c.parse::<u64>().ok());
    let timeout = args.get(2).map_or(Some(5.0), |t| t.parse::<f64>().ok());
    let timeout = timeout.and_then(|t| Duration::try_from_secs_f64(t).ok());
    let (Some(count), Some(timeout)) = (count, timeout) else {
        eprintln!("usage: handle_request [ADDR [COUNT [TIMEOUT_SECONDS]]]");
        return ExitCode::from(2);
    };
    match run(addr, count, timeout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("handle_request: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(addr: &str, count: u64, timeout: Duration) -> Result<(), Box<dyn Error>> {
    let addr = Transport::Tcp.parse_address(addr)?;
    let mut server = ServerBuilder::new(Transport::Tcp, addr)
        .timeout(Some(timeout))
        .idle_timeout(Some(timeout)) // nor may a silent client hold it longer
        .hooks(Timeouts)
        .build(stream(|| EchoLine))?;
    let stop = server.shutdown_handle();
    stop.stop_on_signals(&[Signal::SIGTERM, Signal::SIGINT])?;
    println!("listening on {}", server.address());
    for _ in 0..count {
        if server.handle_request()? == Handled::Stopped {
            break; // SIGTERM or SIGINT
        }
    }
    Ok(())
}
