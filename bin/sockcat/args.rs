//! `sockcat`'s flags (clap), in their own file so `sockdoc` can render
//! them as a man page and shell completions.

use clap::Parser;
use socketserver::Transport;

/// Send each line typed to a server and print what comes back.
#[derive(Parser, Debug)]
#[command(name = "sockcat", version)]
pub struct Args {
    /// tcp, udp, unix or unix-dgram.
    #[arg(long, default_value = "tcp")]
    pub transport: Transport,
    /// HOST:PORT, a socket path, or @abstract.
    pub addr: String,
    /// chat: log in as NAME first (password from SOCKCAT_PASSWORD or the terminal).
    #[arg(long)]
    pub name: Option<String>,
    /// chat: register NAME instead of logging in.
    #[arg(long, requires = "name")]
    pub register: bool,
    /// chat: coloured names [default: when stdout is a terminal].
    #[arg(long)]
    pub color: Option<bool>,
    /// Datagrams: seconds to wait for replies after the input ends.
    #[arg(long, default_value_t = 1.0)]
    pub linger: f64,
}
