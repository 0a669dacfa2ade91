//! Passwords: the limits both services enforce, and how a client reads one
//! without echoing it.

use std::io::{self, BufRead};

/// The longest password.
pub const MAX_PASSWORD: usize = 128;

/// The shortest password.
pub const MIN_PASSWORD: usize = 6;

/// Whether `password` is acceptable: [`MIN_PASSWORD`] to [`MAX_PASSWORD`]
/// bytes, no control characters.
pub fn password_ok(password: &str) -> bool {
    (MIN_PASSWORD..=MAX_PASSWORD).contains(&password.len())
        && !password.chars().any(char::is_control)
}

/// A password: from environment variable `env` if set, else typed at the
/// terminal with echo off. Fails when neither is possible.
pub fn read_password(env: &str, prompt: &str) -> io::Result<String> {
    use std::io::IsTerminal;
    if let Ok(p) = std::env::var(env) {
        return Ok(p);
    }
    let stdin = io::stdin();
    if !stdin.is_terminal() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no password: set {env} or run on a terminal"),
        ));
    }
    eprint!("{prompt}");
    let fd = stdin.lock();
    let saved = rustix::termios::tcgetattr(&fd)?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
    rustix::termios::tcsetattr(&fd, rustix::termios::OptionalActions::Now, &quiet)?;
    let mut line = String::new();
    let read = io::stdin().lock().read_line(&mut line);
    rustix::termios::tcsetattr(&fd, rustix::termios::OptionalActions::Now, &saved)?;
    eprintln!();
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_6_to_128_bytes_without_control_characters() {
        assert!(password_ok("secret"));
        assert!(password_ok(&"x".repeat(128)));
        assert!(!password_ok("short"));
        assert!(!password_ok(&"x".repeat(129)));
        assert!(!password_ok("pass\x1b[2Jword"));
        assert!(!password_ok("pass\tword"));
    }
}
