//! The chat command language, parsed from one line of bytes.
//!
//! ```text
//! /register NAME PASSWORD   /login NAME PASSWORD   /logout
//! /friend add NAME          /friend del NAME       /friends
//! /msg NAME TEXT            /who                   /color on|off
//! /help                     /quit                  TEXT (to the room)
//! ```
//!
//! A line starting with `//` says the rest, `/` included, to the room.
//! The parser is pure and total: any bytes give a command or an error, never
//! a panic (fuzzed by `fuzz/fuzz_targets/chat_command.rs`).

use crate::services::accounts::password::{password_ok, MAX_PASSWORD, MIN_PASSWORD};
use crate::services::accounts::text::{check_name, NameError};

/// The longest line (without its `\n`) the chat service reads.
pub const MAX_LINE: usize = 2048;

/// One parsed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// Create an account and log in.
    Register {
        /// Account name (checked).
        name: &'a str,
        /// Password, as typed.
        password: &'a str,
    },
    /// Log in.
    Login {
        /// Account name (checked).
        name: &'a str,
        /// Password, as typed.
        password: &'a str,
    },
    /// Log out; the session stays.
    Logout,
    /// Add a friend.
    FriendAdd(&'a str),
    /// Remove a friend.
    FriendDel(&'a str),
    /// List friends, with who is online.
    Friends,
    /// A direct message.
    Msg {
        /// Recipient (checked).
        to: &'a str,
        /// The message.
        text: &'a str,
    },
    /// Who is online.
    Who,
    /// Colour names in what this client receives.
    Color(bool),
    /// The command list.
    Help,
    /// End the session.
    Quit,
    /// Text for everyone in the room.
    Say(&'a str),
}

/// Why a line was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Nothing but white space: ignored, no reply.
    Empty,
    /// Not UTF-8.
    NotUtf8,
    /// Longer than [`MAX_LINE`].
    TooLong,
    /// `/something` that is not a command (the name is neutralised).
    Unknown(String),
    /// A command with missing or extra arguments: its usage.
    Usage(&'static str),
    /// A bad account name.
    Name(NameError),
    /// A password too short, too long, or with control characters.
    Password,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Empty => f.write_str("empty line"),
            ParseError::NotUtf8 => f.write_str("line is not valid UTF-8; nothing was sent"),
            ParseError::TooLong => write!(f, "line longer than {MAX_LINE} bytes; nothing was sent"),
            ParseError::Unknown(c) => write!(f, "unknown command /{c} (try /help)"),
            ParseError::Usage(u) => write!(f, "usage: {u}"),
            ParseError::Name(e) => write!(f, "bad name: {e}"),
            ParseError::Password => write!(
                f,
                "a password has {MIN_PASSWORD} to {MAX_PASSWORD} bytes and no spaces or control characters"
            ),
        }
    }
}

/// Parses one line; a trailing `\n` or `\r\n` is ignored.
pub fn parse(line: &[u8]) -> Result<Command<'_>, ParseError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_LINE {
        return Err(ParseError::TooLong);
    }
    let line = std::str::from_utf8(line).map_err(|_| ParseError::NotUtf8)?;
    if line.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    if line.starts_with("//") {
        return Ok(Command::Say(&line[1..]));
    }
    match line.strip_prefix('/') {
        Some(rest) => command(rest),
        None => Ok(Command::Say(line)),
    }
}

fn command(rest: &str) -> Result<Command<'_>, ParseError> {
    let (verb, args) = rest.split_once(' ').unwrap_or((rest, ""));
    let words: Vec<&str> = args.split(' ').filter(|w| !w.is_empty()).collect();
    Ok(match verb {
        "register" | "login" => {
            let [name, password] = words[..] else {
                return Err(ParseError::Usage(if verb == "login" {
                    "/login NAME PASSWORD"
                } else {
                    "/register NAME PASSWORD"
                }));
            };
            check_name(name).map_err(ParseError::Name)?;
            check_password(password)?;
            if verb == "login" {
                Command::Login { name, password }
            } else {
                Command::Register { name, password }
            }
        }
        "logout" => no_args(&words, Command::Logout, "/logout")?,
        "friends" => no_args(&words, Command::Friends, "/friends")?,
        "who" => no_args(&words, Command::Who, "/who")?,
        "help" => no_args(&words, Command::Help, "/help")?,
        "quit" => no_args(&words, Command::Quit, "/quit")?,
        "friend" => match words[..] {
            ["add", name] => Command::FriendAdd(named(name)?),
            ["del", name] => Command::FriendDel(named(name)?),
            _ => return Err(ParseError::Usage("/friend add NAME | /friend del NAME")),
        },
        "color" | "colour" => match words[..] {
            ["on"] => Command::Color(true),
            ["off"] => Command::Color(false),
            _ => return Err(ParseError::Usage("/color on|off")),
        },
        "msg" => {
            let args = args.trim_start_matches(' ');
            let (to, text) = args.split_once(' ').unwrap_or((args, ""));
            if to.is_empty() || text.trim().is_empty() {
                return Err(ParseError::Usage("/msg NAME TEXT"));
            }
            Command::Msg {
                to: named(to)?,
                text: text.trim_start_matches(' '),
            }
        }
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(ParseError::Unknown(
                crate::services::accounts::text::neutralise(&shown).into_owned(),
            ));
        }
    })
}

fn named(name: &str) -> Result<&str, ParseError> {
    check_name(name).map(|()| name).map_err(ParseError::Name)
}

fn no_args<'a>(
    words: &[&str],
    cmd: Command<'a>,
    usage: &'static str,
) -> Result<Command<'a>, ParseError> {
    if words.is_empty() {
        Ok(cmd)
    } else {
        Err(ParseError::Usage(usage))
    }
}

fn check_password(p: &str) -> Result<(), ParseError> {
    if password_ok(p) {
        Ok(())
    } else {
        Err(ParseError::Password)
    }
}

/// The parser's contract, checked on arbitrary input (the fuzz target
/// `chat_command` and the unit tests call it): it never panics, every
/// name it returns passes [`check_name`], and no error message or relayed
/// text it returns carries a character that [`neutralise`] would escape
/// once neutralised.
///
/// # Panics
///
/// When the contract is broken.
///
/// [`neutralise`]: crate::services::accounts::text::neutralise
pub fn check_parser(line: &[u8]) {
    use crate::services::accounts::text::{is_unsafe, neutralise};
    match parse(line) {
        Err(e) => {
            let shown = e.to_string();
            assert!(
                !shown.chars().any(is_unsafe),
                "unsafe error message {shown:?}"
            );
        }
        Ok(cmd) => {
            let (names, text): (Vec<&str>, Option<&str>) = match cmd {
                Command::Register { name, password } | Command::Login { name, password } => {
                    assert!((MIN_PASSWORD..=MAX_PASSWORD).contains(&password.len()));
                    (vec![name], None)
                }
                Command::FriendAdd(n) | Command::FriendDel(n) => (vec![n], None),
                Command::Msg { to, text } => (vec![to], Some(text)),
                Command::Say(t) => (vec![], Some(t)),
                _ => (vec![], None),
            };
            for n in names {
                assert_eq!(check_name(n), Ok(()), "unchecked name {n:?}");
            }
            if let Some(t) = text {
                assert!(!neutralise(t).chars().any(is_unsafe), "unsafe text {t:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::accounts::text::is_unsafe;

    #[test]
    fn the_fuzz_contract_holds_on_sample_inputs() {
        let samples: [&[u8]; 10] = [
            b"",
            b"/",
            b"//",
            b"/msg \x1b x",
            b"/msg bob \x1b[2Jhi",
            b"/register a\tb cccccc",
            b"/login alice \xe2\x80\xaepassword",
            b"\xc2\x9b31m",
            b"/friend add ../../etc",
            b"/color maybe",
        ];
        for s in samples {
            check_parser(s);
        }
        for b in 0..=255u8 {
            check_parser(&[b'/', b'm', b's', b'g', b' ', b'x', b' ', b]);
            check_parser(&[b]);
        }
    }

    #[test]
    fn commands_parse() {
        assert_eq!(
            parse(b"/login alice s3cret!\r\n"),
            Ok(Command::Login {
                name: "alice",
                password: "s3cret!"
            })
        );
        assert_eq!(parse(b"/friend add bob"), Ok(Command::FriendAdd("bob")));
        assert_eq!(parse(b"/friend del bob\n"), Ok(Command::FriendDel("bob")));
        assert_eq!(
            parse(b"/msg bob hi  there"),
            Ok(Command::Msg {
                to: "bob",
                text: "hi  there"
            })
        );
        assert_eq!(parse(b"/color on"), Ok(Command::Color(true)));
        assert_eq!(parse(b"hello /all"), Ok(Command::Say("hello /all")));
        assert_eq!(parse(b"//me waves"), Ok(Command::Say("/me waves")));
    }

    #[test]
    fn bad_lines_get_specific_errors() {
        assert_eq!(parse(b"  \n"), Err(ParseError::Empty));
        assert_eq!(parse(b"\xff\xfe"), Err(ParseError::NotUtf8));
        assert_eq!(parse(&vec![b'a'; MAX_LINE + 1]), Err(ParseError::TooLong));
        assert_eq!(parse(b"/dance"), Err(ParseError::Unknown("dance".into())));
        assert_eq!(
            parse(b"/\x1b[2J"),
            Err(ParseError::Unknown("\\x1b[2J".into()))
        );
        assert!(matches!(parse(b"/login alice"), Err(ParseError::Usage(_))));
        assert!(matches!(parse(b"/friends x"), Err(ParseError::Usage(_))));
        assert!(matches!(parse(b"/msg bob"), Err(ParseError::Usage(_))));
        assert_eq!(
            parse(b"/register e\x1b[31mvil password"),
            Err(ParseError::Name(NameError::Control))
        );
        assert_eq!(parse(b"/register bob short"), Err(ParseError::Password));
    }

    #[test]
    fn every_error_message_is_free_of_escapes() {
        for line in [
            &b"/\x1b]0;owned\x07"[..],
            b"/register \x1b x",
            b"/msg \x9b y",
        ] {
            if let Err(e) = parse(line) {
                let shown = e.to_string();
                assert!(!shown.chars().any(is_unsafe), "{shown:?}");
            }
        }
    }
}
