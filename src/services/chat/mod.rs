//! `--service chat`: a chat room with accounts and friends, over TCP, Unix
//! stream, UDP and Unix datagram sockets.
//!
//! Plain text goes to every other logged-in user as `NAME: TEXT`; commands
//! start with `/` (see [`parse`]). Accounts and friend lists live in an
//! accounts file ([`store`]) with salted argon2id credentials
//! ([`credential`]), both shared with the files service; wrong passwords
//! are rate-limited per name and per client ([`ratelimit`]).
//!
//! Over streams a session is the connection; over datagrams it is the
//! client's address, forgotten after `session_timeout` of silence. Every
//! reply line ends with `\n`; over datagrams each reply is one datagram.
//!
//! The room is memory shared by all sessions, so it needs one address
//! space: chat runs under sync, thread, pool and event, and refuses fork (each
//! child would have its own empty room) and more than one supervisor
//! worker (see [`FORK_REFUSAL`]). Under sync over a stream transport only
//! one client is served at a time; use thread or pool there.
//!
//! [`store`]: crate::services::accounts::store
//! [`credential`]: crate::services::accounts::credential

pub mod client;
pub mod colour;
mod commands;
mod event;
mod handler;
pub mod parse;
pub mod ratelimit;
pub mod room;

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use slog::Logger;

pub use event::ChatFactory;
pub use handler::ChatHandler;

use crate::services::accounts::{Accounts, KdfParams};
use ratelimit::Limiter;
use room::Sessions;

/// Why chat refuses the fork policy (printed by `sockserv` as is).
pub const FORK_REFUSAL: &str =
    "--service chat keeps its room and logged-in users in one process's memory, \
     and under --policy fork every connection runs in a separate child with its own empty room; \
     use --policy thread, event, pool or sync";

/// Why chat refuses more than one supervisor worker.
pub const WORKERS_REFUSAL: &str = "--service chat keeps its room in one process's memory, \
     and --workers > 1 would split users across separate rooms; use --workers 1 \
     (with --policy thread or pool for concurrency)";

/// Settings of a chat server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatConfig {
    /// The accounts file (created on the first registration).
    pub accounts: PathBuf,
    /// argon2id cost for new accounts (existing ones keep theirs).
    pub kdf: KdfParams,
    /// A datagram session is forgotten after this long without a datagram.
    pub session_timeout: Duration,
}

/// A chat room: shared by every handler of one server.
pub struct Chat {
    cfg: ChatConfig,
    accounts: Mutex<Accounts>,
    sessions: Mutex<Sessions>,
    limiter: Mutex<Limiter>,
    log: Logger,
}

impl Chat {
    /// Opens the room, reading the accounts file (a missing file is an
    /// empty one; a corrupt one is an error naming it).
    pub fn open(cfg: ChatConfig, log: Logger) -> io::Result<Arc<Chat>> {
        let accounts = Accounts::load(&cfg.accounts)?;
        slog::info!(log, "chat accounts loaded";
                    "path" => %cfg.accounts.display(), "accounts" => accounts.len());
        Ok(Arc::new(Chat {
            cfg,
            accounts: Mutex::new(accounts),
            sessions: Mutex::new(Sessions::default()),
            limiter: Mutex::new(Limiter::default()),
            log,
        }))
    }

    /// A handler factory for `ServerBuilder::build`: every handler shares
    /// this room, under any policy but fork (event included).
    pub fn factory(self: &Arc<Chat>) -> ChatFactory {
        ChatFactory(Arc::clone(self))
    }
}

/// What a session gets back for one line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Reply lines, each ending in `\n` (empty: no reply).
    pub reply: String,
    /// The session ends.
    pub quit: bool,
}

impl Outcome {
    fn line(text: impl AsRef<str>) -> Outcome {
        Outcome {
            reply: format!("{}\n", text.as_ref()),
            quit: false,
        }
    }
}

/// The greeting a new session gets.
pub const WELCOME: &str =
    "* welcome to the chat: /register NAME PASSWORD or /login NAME PASSWORD, /help for more\n";

/// The `/help` text.
pub const HELP: &str = "\
ok: commands:
  /register NAME PASSWORD   create an account and log in
  /login NAME PASSWORD      log in
  /logout                   log out
  /msg NAME TEXT            a direct message
  /friend add NAME          add a friend
  /friend del NAME          remove a friend
  /friends                  your friends, with who is online
  /who                      who is online
  /color on|off             coloured names
  /quit                     end the session
  TEXT                      say TEXT to everyone (//TEXT says /TEXT)
";
