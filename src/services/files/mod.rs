//! `--service files`: a login-protected file service with framing, over
//! TCP and Unix stream sockets, under every policy (fork included: it
//! keeps no state in memory between connections).
//!
//! Every message is a length-prefixed frame ([`frame`]). After a hello
//! from the server, the client logs in with a challenge-response ([`auth`])
//! over the accounts file ([`accounts`](crate::services::accounts), shared
//! with the chat service and read at each login),
//! then sends commands, each one text frame:
//!
//! ```text
//! S: hello sockfiles/1 max-frame=N
//! C: login NAME CNONCE    S: challenge ...    C: proof ...    S: ok SIG | err ...
//! C: mkdir PATH           S: ok | err MESSAGE                (with parents)
//! C: ls [PATH]            S: ok N, then N frames "KIND SIZE NAME" (d, f, l, o)
//! C: put SIZE PATH        S: ok | err; C: data frames of SIZE bytes in all;
//!                         S: ok stored SIZE | err
//! C: get PATH             S: ok SIZE, then data frames of SIZE bytes | err
//! C: rm PATH              S: ok | err                        (file, link, empty dir)
//! C: quota                S: ok used=N quota=N max-file=N reserved=N
//! C: quit                 S: ok bye, and the connection closes
//! ```
//!
//! Paths stay inside the user's directory `ROOT/NAME` ([`fsops`]). Uploads
//! go to a part file renamed on completion, which reserves its size
//! against the quota while it lasts ([`parts`]). A frame over the limit
//! gets `err ...` and the connection is closed without reading the frame.
//! Wrong passwords are limited per connection ([`MAX_LOGIN_FAILURES`]) and
//! per client address across connections ([`lockout`]).

pub mod auth;
pub mod client;
pub mod frame;
pub mod fsops;
pub mod lockout;
pub mod parts;
mod session;

use std::io;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::PathBuf;
use std::sync::Arc;

use slog::Logger;

use crate::handler::Handler;
use crate::request::Request;
use crate::services::accounts::credential::random_bytes;
use crate::services::accounts::password::{password_ok, MAX_PASSWORD, MIN_PASSWORD};
use crate::services::accounts::text::check_name;
use crate::services::accounts::{Account, Accounts, Credential, KdfParams, UpdateError};

use lockout::Lockouts;
pub use lockout::LoginLimit;

/// Why files refuses the event policy (printed by `sockserv` as is).
pub const EVENT_REFUSAL: &str =
    "--service files reads and writes whole files from disk inside each request, which would \
     stall every connection of an event loop; use --policy thread, pool, fork or sync";

/// The protocol's name and version, sent in the hello.
pub const PROTOCOL: &str = "sockfiles/1";

/// Largest data frame either side sends.
pub const DATA_CHUNK: usize = 64 * 1024;

/// Smallest `--max-frame` accepted (commands and replies must fit).
pub const MIN_MAX_FRAME: usize = 4096;

/// Failed logins on one connection before it is closed.
pub const MAX_LOGIN_FAILURES: u32 = 3;

/// Settings of a files server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesConfig {
    /// Directory holding one directory per user (created if missing).
    pub root: PathBuf,
    /// The accounts file, read at each login.
    pub accounts: PathBuf,
    /// Largest incoming frame payload.
    pub max_frame: usize,
    /// Largest file `put` accepts.
    pub max_file_size: u64,
    /// Most bytes one user's files may hold.
    pub quota: u64,
    /// argon2id parameters shown in challenges for unknown names.
    pub kdf: KdfParams,
    /// Wrong passwords allowed per client address across connections.
    pub login_limit: LoginLimit,
}

impl FilesConfig {
    /// Checks the limits.
    pub fn check(&self) -> Result<(), String> {
        if self.max_frame < MIN_MAX_FRAME || self.max_frame > u32::MAX as usize {
            return Err(format!(
                "--max-frame {}: must be between {MIN_MAX_FRAME} bytes and 4 GiB",
                self.max_frame
            ));
        }
        Ok(())
    }
}

/// Adds account `name` to the accounts file at `path`, or resets its
/// password (keeping its friends). The file is replaced atomically; do not
/// run this against the file of a running chat server, which would
/// overwrite it on its next change.
pub fn add_user(
    path: &std::path::Path,
    name: &str,
    password: &str,
    kdf: KdfParams,
) -> Result<(), String> {
    check_name(name).map_err(|e| format!("name {name:?}: {e}"))?;
    if !password_ok(password) {
        return Err(format!(
            "a password has {MIN_PASSWORD} to {MAX_PASSWORD} bytes and no control characters"
        ));
    }
    let cred = Credential::create(password.as_bytes(), kdf).map_err(|e| e.to_string())?;
    let mut accounts = Accounts::load(path).map_err(|e| e.to_string())?;
    accounts
        .update(|users| {
            let acct = users.entry(name.to_string()).or_insert_with(|| Account {
                credential: String::new(),
                friends: Default::default(),
            });
            acct.credential = cred.encode();
            Ok(())
        })
        .map_err(|e| match e {
            UpdateError::Refused(m) => m,
            UpdateError::Io(e) => e.to_string(),
        })
}

/// A files server's shared, read-only state.
pub struct Files {
    cfg: FilesConfig,
    secret: [u8; 32],
    lockouts: Lockouts,
    log: Logger,
}

impl Files {
    /// Checks the configuration, creates the root directory (mode 0700)
    /// and sweeps it of part files that dead uploads left behind.
    pub fn open(cfg: FilesConfig, log: Logger) -> io::Result<Arc<Files>> {
        if cfg.max_frame < MIN_MAX_FRAME || cfg.max_frame > u32::MAX as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "--max-frame {}: must be between {MIN_MAX_FRAME} and 4 GiB",
                    cfg.max_frame
                ),
            ));
        }
        if !cfg.root.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&cfg.root)
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("create files root {}: {e}", cfg.root.display()),
                    )
                })?;
        }
        let accounts = Accounts::load(&cfg.accounts)?;
        if accounts.is_empty() {
            slog::warn!(log, "files: no accounts yet; add one with sockfiles --add-user";
                        "accounts" => %cfg.accounts.display());
        }
        let files = Files {
            lockouts: Lockouts::new(&cfg.root, cfg.login_limit),
            cfg,
            secret: random_bytes::<32>()?,
            log,
        };
        // A root that cannot be swept now still serves: logins will report
        // what is wrong with it, and the next sweep tries again.
        if let Err(e) = files.sweep(true) {
            slog::error!(files.log, "files: sweep failed"; "error" => %e);
        }
        Ok(Arc::new(files))
    }

    /// Sweeps the root of orphaned part files: at start (`force`), then
    /// at the end of a connection once [`parts::SWEEP_INTERVAL`] has passed
    /// since the last sweep by any process serving this root.
    fn sweep(&self, force: bool) -> io::Result<()> {
        let Some(s) = parts::sweep_if_due(&self.cfg.root, force)? else {
            return Ok(());
        };
        if s.files > 0 {
            slog::info!(self.log, "files: removed part files of dead uploads";
                        "files" => s.files, "bytes" => s.bytes,
                        "files_root" => %self.cfg.root.display());
        }
        for e in &s.failed {
            slog::error!(self.log, "files: sweep failed"; "error" => e);
        }
        Ok(())
    }

    /// A handler factory for `ServerBuilder::build`.
    pub fn factory(self: &Arc<Files>) -> impl Fn() -> FilesHandler + Send + Sync {
        let files = Arc::clone(self);
        move || FilesHandler {
            files: Arc::clone(&files),
        }
    }
}

/// Serves one connection of the files service.
pub struct FilesHandler {
    files: Arc<Files>,
}

impl Handler for FilesHandler {
    fn handle(&mut self, req: &mut Request) -> io::Result<()> {
        match req {
            Request::Stream(s) => {
                let served = session::serve(&self.files, s);
                if !s.server().is_stopping() {
                    if let Err(e) = self.files.sweep(false) {
                        slog::error!(self.files.log, "files: sweep failed"; "error" => %e);
                    }
                }
                served
            }
            Request::Datagram(d) => {
                d.reply
                    .extend_from_slice(b"err the files service needs a stream transport\n");
                Ok(())
            }
        }
    }
}
