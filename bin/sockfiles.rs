//! `sockfiles`: the client of `sockserv --service files`, and the tool that
//! adds accounts to its accounts file.

use std::io::IsTerminal;
use std::process::ExitCode;

#[path = "sockfiles/args.rs"]
mod args;
#[path = "cli.rs"]
mod cli;

use args::Args;
use socketserver::services::accounts::password::read_password;
use socketserver::services::files::client::{prompt, run_command, FilesClient, Stream};

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
