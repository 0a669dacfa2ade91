//! `sockdoc DIR`: writes man pages (`DIR/man/*.1`) and shell completions
//! (`DIR/completions/{bash,zsh,fish}/...`) for sockserv, sockload, sockcat
//! and sockfiles, generated from their clap definitions, so they never
//! drift from `--help`. Not installed by default: run it with
//! `cargo run --release --features docs --bin sockdoc -- target/docs`.

// The binaries' flag definitions; only their clap commands are used here.
#![allow(dead_code)]

#[path = "cli.rs"]
mod cli;
#[path = "sockcat/args.rs"]
mod sockcat_args;
#[path = "sockfiles/args.rs"]
mod sockfiles_args;
#[path = "sockload/args.rs"]
mod sockload_args;
#[path = "sockserv/args.rs"]
mod sockserv_args;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("sockdoc: usage: sockdoc DIR");
        return ExitCode::from(2);
    };
    match write_all(Path::new(&dir)) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sockdoc: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_all(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let commands = [
        sockserv_args::Args::command(),
        sockload_args::Cli::command(),
        sockcat_args::Args::command(),
        sockfiles_args::Args::command(),
    ];
    let mut written = Vec::new();
    let man = dir.join("man");
    std::fs::create_dir_all(&man)?;
    for cmd in &commands {
        let path = man.join(format!("{}.1", cmd.get_name()));
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
        std::fs::write(&path, out).map_err(|e| named(&path, e))?;
        written.push(path);
    }
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let sub = dir.join("completions").join(shell.to_string());
        std::fs::create_dir_all(&sub).map_err(|e| named(&sub, e))?;
        for cmd in &commands {
            let mut cmd = cmd.clone();
            let name = cmd.get_name().to_string();
            let path = clap_complete::generate_to(shell, &mut cmd, &name, &sub)
                .map_err(|e| named(&sub, e))?;
            written.push(path);
        }
    }
    Ok(written)
}

fn named(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}
