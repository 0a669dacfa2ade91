//! `sockfiles`'s flags (clap), in their own file so `sockdoc` can render
//! them as a man page and shell completions.

use std::path::PathBuf;

use clap::Parser;
use socketserver::services::accounts::KdfParams;
use socketserver::Transport;

/// Log in to a files server and run COMMAND, or an interactive `>>>`
/// prompt without one. Commands: `mkdir PATH`, `ls [PATH]`,
/// `put LOCAL [REMOTE]`, `get REMOTE [LOCAL]`, `rm PATH`, `quota`.
///
/// With --add-user, add an account to --accounts FILE instead.
#[derive(Parser, Debug)]
#[command(name = "sockfiles", version)]
pub struct Args {
    /// tcp or unix.
    #[arg(long, default_value = "tcp")]
    pub transport: Transport,
    /// Server address: HOST:PORT, a socket path or @abstract.
    #[arg(long, required_unless_present = "add_user")]
    pub connect: Option<String>,
    /// Account name (password from SOCKFILES_PASSWORD or the terminal).
    #[arg(long, required_unless_present = "add_user")]
    pub user: Option<String>,
    /// Add (or reset the password of) account NAME in --accounts FILE.
    #[arg(long, value_name = "NAME", requires = "accounts")]
    pub add_user: Option<String>,
    /// The accounts file, for --add-user.
    #[arg(long, value_name = "FILE")]
    pub accounts: Option<PathBuf>,
    /// argon2id cost for --add-user: m=KIB,t=N,p=N.
    #[arg(long, default_value_t = KdfParams::DEFAULT)]
    pub hash_cost: KdfParams,
    /// The command and its arguments; none: interactive prompt.
    pub command: Vec<String>,
}
