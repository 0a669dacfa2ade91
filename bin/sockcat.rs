//! `sockcat`: an interactive client for the line services (chat, time,
//! echo, ...) over tcp, udp, unix or unix-dgram.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

#[path = "sockcat/args.rs"]
mod args;
#[path = "cli.rs"]
mod cli;

use args::Args;
use socketserver::services::accounts::password::read_password;
use socketserver::services::chat::client::LineClient;

fn main() -> ExitCode {
    let a: Args = cli::parse("sockcat");
    match run(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sockcat: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(a: Args) -> anyhow::Result<()> {
    let password = match &a.name {
        Some(n) => Some(read_password(
            "SOCKCAT_PASSWORD",
            &format!("password for {n}: "),
        )?),
        None => None,
    };
    if !a.linger.is_finite() || a.linger < 0.0 {
        anyhow::bail!(
            "--linger {}: must be a non-negative number of seconds",
            a.linger
        );
    }
    let client = LineClient {
        transport: a.transport,
        addr: a.addr,
        colour: a.name.is_some() && a.color.unwrap_or_else(|| std::io::stdout().is_terminal()),
        name: a.name,
        password,
        register: a.register,
        linger: Duration::from_secs_f64(a.linger),
        prompt: std::io::stdin().is_terminal(),
    };
    client.run(&mut std::io::stdin().lock(), std::io::stdout())?;
    Ok(())
}
