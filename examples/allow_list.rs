//! Python's `verify_request`: an echo server that serves only clients from
//! the networks given after the address, and closes every other connection
//! unanswered (logging the refusal to stderr).
//!
//! ```sh
//! cargo run --example allow_list -- 127.0.0.1:9000 127.0.0.0/8 ::1
//! nc 127.0.0.1 9000                # admitted: every line comes back
//! cargo run --example allow_list -- 127.0.0.1:9000 10.0.0.0/8
//! nc 127.0.0.1 9000                # refused: closed at once, no reply
//! ```
//!
//! Prints `listening on ADDR` when ready (port 0 picks a free port); stops
//! on SIGTERM or SIGINT.

use std::error::Error;
use std::io;
use std::process::ExitCode;
use std::time::Duration;

use socketserver::{
    stream, Address, AllowList, Hooks, Policy, ServerBuilder, Signal, StreamHandler, StreamRequest,
    Transport,
};

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

/// `verify_request` overridden: the allow-list decides, and says no aloud.
struct Admit(AllowList);

impl Hooks for Admit {
    fn verify_request(&self, peer: &Address) -> bool {
        let admitted = self.0.admits(peer);
        if !admitted {
            eprintln!("refused {peer}: not in an allowed network");
        }
        admitted
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, nets @ ..] = &args[..] else {
        eprintln!("usage: allow_list ADDR NETWORK...  (e.g. 127.0.0.1:9000 127.0.0.0/8 ::1)");
        return ExitCode::from(2);
    };
    if nets.is_empty() {
        eprintln!("allow_list: no network allowed; name at least one (e.g. 127.0.0.0/8)");
        return ExitCode::from(2);
    }
    match run(addr, nets) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("allow_list: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(addr: &str, nets: &[String]) -> Result<(), Box<dyn Error>> {
    let allow = AllowList::parse(nets)?;
    let addr = Transport::Tcp.parse_address(addr)?;
    let mut server = ServerBuilder::new(Transport::Tcp, addr)
        .policy(Policy::THREAD)
        .hooks(Admit(allow))
        .build(stream(|| Echo))?;
    let stop = server.shutdown_handle();
    stop.stop_on_signals(&[Signal::SIGTERM, Signal::SIGINT])?;
    println!("listening on {}", server.address());
    server.serve_forever(Duration::from_millis(500))?;
    server.close_gracefully(Duration::from_secs(5));
    Ok(())
}
