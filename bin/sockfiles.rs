//! `sockfiles`: the client of `sockserv --service files`, and the tool that
//! adds accounts to its accounts file.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[path = "cli.rs"]
mod cli;

use clap::Parser;
use socketserver::services::accounts::password::read_password;
use socketserver::services::accounts::KdfParams;
use socketserver::services::files::client::{prompt, run_command, FilesClient, Stream};
use socketserver::Transport;

/// Log in to a files server and run COMMAND, or an interactive `>>>`
/// prompt without one. Commands: `mkdir PATH`, `ls [PATH]`,
/// `put LOCAL [REMOTE]`, `get REMOTE [LOCAL]`, `rm PATH`, `quota`.
///
/// With --add-user, add an account to --accounts FILE instead.
#[derive(Parser, Debug)]
#[command(name = "sockfiles", version)]
struct Args {
    /// tcp or unix.
    #[arg(long, default_value = "tcp")]
    transport: Transport,
    /// Server address: HOST:PORT, a socket path or @abstract.
    #[arg(long, required_unless_present = "add_user")]
    connect: Option<String>,
    /// Account name (password from SOCKFILES_PASSWORD or the terminal).
    #[arg(long, required_unless_present = "add_user")]
    user: Option<String>,
    /// Add (or reset the password of) account NAME in --accounts FILE.
    #[arg(long, value_name = "NAME", requires = "accounts")]
    add_user: Option<String>,
    /// The accounts file, for --add-user.
    #[arg(long, value_name = "FILE")]
    accounts: Option<PathBuf>,
    /// argon2id cost for --add-user: m=KIB,t=N,p=N.
    #[arg(long, default_value_t = KdfParams::DEFAULT)]
    hash_cost: KdfParams,
    /// The command and its arguments; none: interactive prompt.
    command: Vec<String>,
}

fn main() -> ExitCode {
    let a: Args = cli::parse("sockfiles");
    let result = match &a.add_user {
        Some(name) => add_user(&a, name),
        None => session(&a),
    };
    match result {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("sockfiles: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn session(a: &Args) -> anyhow::Result<usize> {
    let (Some(addr), Some(user)) = (&a.connect, &a.user) else {
        anyhow::bail!("--connect and --user are required");
    };
    let password = read_password("SOCKFILES_PASSWORD", &format!("password for {user}: "))?;
    let mut client = FilesClient::handshake(Stream::connect(a.transport, addr)?)?;
    client.login(user, &password)?;
    let mut out = std::io::stdout();
    if a.command.is_empty() {
        if std::io::stdin().is_terminal() {
            eprintln!("logged in as {user}; commands: mkdir, ls, put, get, rm, quota, quit");
        }
        return Ok(prompt(&mut client, &mut std::io::stdin().lock(), &mut out)?);
    }
    let words: Vec<&str> = a.command.iter().map(String::as_str).collect();
    run_command(&mut client, &words, &mut out)?;
    let _ = client.quit();
    Ok(0)
}

fn add_user(a: &Args, name: &str) -> anyhow::Result<usize> {
    let path = a.accounts.as_ref().expect("clap requires --accounts");
    let password = read_password("SOCKFILES_PASSWORD", &format!("new password for {name}: "))?;
    socketserver::services::files::add_user(path, name, &password, a.hash_cost)
        .map_err(anyhow::Error::msg)?;
    eprintln!("sockfiles: account {name} saved in {}", path.display());
    Ok(0)
}
