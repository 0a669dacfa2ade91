//! What `sockserv` serves, independent of its flags: a configuration, the
//! code that turns it into a server, and the supervisor that runs it. The
//! supervised path is the library's public one: [`ServeConfig::configure`]
//! is the `build` closure handed to [`Supervisor::run`].

use std::sync::Arc;
use std::time::Duration;

use slog::{info, o, warn, Logger};

use crate::addr::{Address, Transport};
use crate::error::{Error, Result};
use crate::hooks::AllowList;
use crate::policy::Policy;
use crate::server::{Server, ServerBuilder};
use crate::services::chat::{Chat, ChatConfig};
use crate::services::files::{Files, FilesConfig};

/// How long a silent connection may wait with `--idle-timeout 0` (never):
/// a year, so in practice until the table of silent connections is full
/// and the oldest makes room.
const SILENT_FOREVER: Duration = Duration::from_secs(365 * 86_400);
use crate::services::{Builtin, Framing, Service, ServiceFactory};
use crate::socket::BindOptions;
use crate::supervisor::Supervisor;
use crate::Signal;

/// What `sockserv --service` serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceKind {
    /// echo, upper, time, discard, delay or cpu.
    Builtin(Builtin),
    /// The chat room (`crate::services::chat`).
    Chat(ChatConfig),
    /// The file service (`crate::services::files`).
    Files(FilesConfig),
}

impl ServiceKind {
    /// The name used on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            ServiceKind::Builtin(b) => b.name(),
            ServiceKind::Chat(_) => "chat",
            ServiceKind::Files(_) => "files",
        }
    }
}

/// Everything `sockserv` needs to serve.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The transport.
    pub transport: Transport,
    /// Where to listen.
    pub listen: Address,
    /// How requests run.
    pub policy: Policy,
    /// What is served.
    pub service: ServiceKind,
    /// Socket options.
    pub bind: BindOptions,
    /// Read timeout per stream connection.
    pub idle_timeout: Option<Duration>,
    /// The time a client may take to send one whole request line once its
    /// first byte arrived (see `ServerBuilder::request_timeout`).
    pub request_timeout: Option<Duration>,
    /// How long in-flight requests may run after a stop signal.
    pub graceful_timeout: Duration,
    /// Largest datagram accepted.
    pub max_packet_size: usize,
    /// Client networks admitted (empty: everyone).
    pub allow: Vec<String>,
    /// Abort the serving process when a request contains this (testing aid).
    pub abort_on: Option<String>,
    /// `--access-log`: a path, or `-` for standard output; and whether as
    /// JSON lines.
    pub access_log: Option<(std::path::PathBuf, bool)>,
}

impl ServeConfig {
    /// Checks combinations the flags alone cannot.
    pub fn validate(&self) -> Result<()> {
        let unix_addr = matches!(self.listen, Address::Unix(_) | Address::Abstract(_));
        if unix_addr != self.transport.is_unix() {
            return Err(Error::Config(format!(
                "address {} does not suit transport {}",
                self.listen, self.transport
            )));
        }
        if self.allow.iter().any(|_| self.transport.is_unix()) {
            return Err(Error::Config("--allow applies to tcp and udp only".into()));
        }
        match &self.service {
            ServiceKind::Builtin(_) => {}
            _ if self.abort_on.is_some() => {
                return Err(Error::Config(
                    "--abort-on applies to the built-in services only".into(),
                ))
            }
            ServiceKind::Chat(_) if matches!(self.policy, Policy::Fork { .. }) => {
                return Err(Error::Config(crate::services::chat::FORK_REFUSAL.into()))
            }
            ServiceKind::Chat(_) => {}
            ServiceKind::Files(_) if !self.transport.is_stream() => {
                return Err(Error::Config(format!(
                    "--service files needs a stream transport (tcp or unix), not {}",
                    self.transport
                )))
            }
            ServiceKind::Files(_) if matches!(self.policy, Policy::Event { .. }) => {
                return Err(Error::Config(crate::services::files::EVENT_REFUSAL.into()))
            }
            ServiceKind::Files(f) => f.check().map_err(Error::Config)?,
        }
        Ok(())
    }

    /// The `--allow` networks as a `verify_request` hook, if any were given.
    pub fn allow_list(&self) -> Result<Option<AllowList>> {
        if self.allow.is_empty() {
            return Ok(None);
        }
        AllowList::parse(&self.allow).map(Some)
    }

    /// Sets this configuration's policy, timeouts, allow-list and logger on
    /// `builder` and builds the server of its service. The supervisor's
    /// workers call it on a builder holding the master's socket.
    pub fn configure(&self, builder: ServerBuilder, log: &Logger) -> Result<Server> {
        let access = match &self.access_log {
            None => None,
            Some((p, json)) if p.as_os_str() == "-" => {
                Some(crate::access::AccessLog::stdout(*json))
            }
            Some((p, json)) => {
                // USR1 (logrotate) reopens it, in workers and standalone.
                crate::access::reopen_on_signal(Signal::SIGUSR1)
                    .map_err(|e| Error::os("install SIGUSR1 handler", e))?;
                Some(crate::access::AccessLog::open(p, *json)?)
            }
        };
        let builder = builder
            .access_log(access)
            .policy(self.policy)
            .idle_timeout(self.idle_timeout)
            .request_timeout(self.request_timeout)
            .max_packet_size(self.max_packet_size)
            .logger(log.new(o!()));
        let builder = match self.allow_list()? {
            Some(allow) => builder.hooks(allow),
            None => builder,
        };
        match &self.service {
            ServiceKind::Builtin(_) => {
                let service = self.service().expect("a built-in service");
                // Their clients speak first: a silent connection waits in
                // the serving loop, not in a child or a thread, and is
                // closed after the idle timeout.
                let patience = self.idle_timeout.unwrap_or(SILENT_FOREVER);
                builder
                    .wait_for_data(Some(patience))
                    .build(ServiceFactory::new(service))
            }
            ServiceKind::Chat(c) => {
                if self.policy == Policy::Sync && self.transport.is_stream() {
                    warn!(
                        log,
                        "chat under the sync policy serves one stream client at a time; \
                                use --policy thread or pool"
                    );
                }
                let chat = Chat::open(c.clone(), log.new(o!("service" => "chat")))
                    .map_err(|e| Error::Config(format!("--service chat: {e}")))?;
                builder.build(chat.factory())
            }
            ServiceKind::Files(f) => {
                let files = Files::open(f.clone(), log.new(o!("service" => "files")))
                    .map_err(|e| Error::Config(format!("--service files: {e}")))?;
                builder.build(files.factory())
            }
        }
    }

    /// Binds `listen` in this process and builds the server.
    pub fn build(&self, log: &Logger) -> Result<Server> {
        let builder =
            ServerBuilder::new(self.transport, self.listen.clone()).bind_options(self.bind.clone());
        self.configure(builder, log)
    }

    /// A supervisor for this configuration: its address, socket options,
    /// policy, service name and graceful timeout. Add the worker count and
    /// the restart settings, then `run(log, |b| cfg.configure(b, log))`.
    pub fn supervisor(&self) -> Supervisor {
        Supervisor::new(self.transport, self.listen.clone())
            .bind_options(self.bind.clone())
            .policy(self.policy)
            .name(self.service.name())
            .graceful_timeout(self.graceful_timeout)
    }

    /// A built-in service, wrapped so that `abort_on` aborts the process;
    /// `None` for chat and files, which are not one-reply-per-request.
    pub fn service(&self) -> Option<Arc<dyn Service>> {
        let ServiceKind::Builtin(inner) = self.service else {
            return None;
        };
        Some(match &self.abort_on {
            Some(needle) => Arc::new(AbortOn {
                inner,
                needle: needle.clone().into_bytes(),
            }),
            None => Arc::new(inner),
        })
    }
}

/// A service that aborts the serving process when a request contains
/// `needle`: a way to test supervision and crash handling.
struct AbortOn {
    inner: Builtin,
    needle: Vec<u8>,
}

impl Service for AbortOn {
    fn framing(&self) -> Framing {
        self.inner.framing()
    }

    fn respond(&self, input: &[u8], stream: bool, out: &mut Vec<u8>) {
        self.check(input);
        self.inner.respond(input, stream, out);
    }

    fn delay(&self) -> Option<Duration> {
        self.inner.delay()
    }

    fn respond_undelayed(&self, input: &[u8], stream: bool, out: &mut Vec<u8>) {
        self.check(input);
        self.inner.respond_undelayed(input, stream, out);
    }
}

impl AbortOn {
    fn check(&self, input: &[u8]) {
        if !self.needle.is_empty() && input.windows(self.needle.len()).any(|w| w == self.needle) {
            // A deliberate crash needs no core file.
            let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
            std::process::abort();
        }
    }
}

/// Serves in this process until SIGTERM or SIGINT, then stops gracefully:
/// no new requests, in-flight ones get up to `graceful_timeout`, the Unix
/// socket file is removed.
///
/// With `control`, the status scoreboard is served on a Unix socket there
/// (see `sockserv status`), and with `metrics` Prometheus metrics over
/// HTTP there, from the serving loop.
pub fn serve_foreground(
    cfg: &ServeConfig,
    control: Option<&std::path::Path>,
    metrics: Option<std::net::SocketAddr>,
    log: &Logger,
) -> Result<()> {
    let builder = ServerBuilder::new(cfg.transport, cfg.listen.clone())
        .bind_options(cfg.bind.clone())
        .name(cfg.service.name())
        .status_socket(control.map(std::path::Path::to_path_buf))
        .metrics(metrics)
        .logger(log.clone());
    // The status socket is answered between requests: poll more often.
    let poll = match control.is_some() || metrics.is_some() {
        true => Duration::from_millis(100),
        false => Duration::from_millis(500),
    };
    let mut server = cfg.configure(builder, log)?;
    let handle = server.shutdown_handle();
    handle.stop_on_signals(&[Signal::SIGTERM, Signal::SIGINT])?;
    crate::log::reopen_on_signal(Signal::SIGUSR1)
        .map_err(|e| Error::os("install SIGUSR1 handler", e))?;
    info!(log, "listening";
          "addr" => %server.address(), "transport" => %cfg.transport,
          "policy" => cfg.policy.name(), "service" => cfg.service.name());
    server.serve_forever(poll)?;
    let active = server.active_requests();
    info!(log, "stopping"; "in_flight" => active,
          "graceful_timeout_s" => cfg.graceful_timeout.as_secs_f64());
    server.close_gracefully(cfg.graceful_timeout);
    if server.truncated_datagrams() > 0 {
        warn!(log, "oversized datagrams were dropped"; "count" => server.truncated_datagrams());
    }
    let c = server.counters();
    // handled: connections (datagrams) run through a handler, by this
    // process or its fork children.
    info!(log, "stopped"; "handled" => c.connections - c.rejected.min(c.connections),
          "connections" => c.connections, "requests" => c.requests, "errors" => c.errors);
    Ok(())
}

/// Where chat and files keep their state when no flag says:
/// `$STATE_DIRECTORY` (systemd's `StateDirectory=`; its first entry),
/// else `$XDG_STATE_HOME/sockserv`, else `~/.local/state/sockserv`.
pub fn default_state_dir() -> Result<std::path::PathBuf> {
    use std::path::PathBuf;
    let nonempty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(dirs) = nonempty("STATE_DIRECTORY") {
        let first = dirs
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        return Ok(PathBuf::from(first));
    }
    if let Some(xdg) = nonempty("XDG_STATE_HOME") {
        return Ok(PathBuf::from(xdg).join("sockserv"));
    }
    match nonempty("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".local/state/sockserv")),
        None => Err(Error::Config(
            "no state directory: set --accounts, STATE_DIRECTORY, XDG_STATE_HOME or HOME".into(),
        )),
    }
}

/// Creates `dir` (and its parents) with mode 0700 if it is missing.
pub fn create_private_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::socket("create directory", dir.display(), e))
}

/// Fails unless this process may write in directory `dir` (which exists).
pub fn check_writable_dir(what: &str, dir: &std::path::Path) -> Result<()> {
    let meta = std::fs::metadata(dir)
        .map_err(|e| Error::Config(format!("{what} {}: {e}", dir.display())))?;
    if !meta.is_dir() {
        return Err(Error::Config(format!(
            "{what} {}: not a directory",
            dir.display()
        )));
    }
    nix::unistd::access(
        dir,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
    )
    .map_err(|e| Error::Config(format!("{what} {}: not writable: {e}", dir.display())))
}

/// Fails unless `dir` is a writable directory, or is missing and could be
/// created (its nearest existing ancestor is a writable directory).
pub fn check_creatable_dir(what: &str, dir: &std::path::Path) -> Result<()> {
    let mut probe = dir;
    while !probe.exists() {
        match probe.parent() {
            Some(p) if !p.as_os_str().is_empty() => probe = p,
            _ => return check_writable_dir(what, std::path::Path::new(".")),
        }
    }
    check_writable_dir(what, probe).map_err(|e| {
        if probe == dir {
            e
        } else {
            Error::Config(format!("{e} (needed to create {})", dir.display()))
        }
    })
}

/// Fails unless `file` can be written: it exists and is writable, or its
/// directory (which must exist) is writable.
pub fn check_writable_file(what: &str, file: &std::path::Path) -> Result<()> {
    if file.exists() {
        return nix::unistd::access(file, nix::unistd::AccessFlags::W_OK)
            .map_err(|e| Error::Config(format!("{what} {}: not writable: {e}", file.display())));
    }
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    check_writable_dir(&format!("{what}'s directory"), dir)
}

impl ServeConfig {
    /// What must hold before serving, checked by `--check` and at start
    /// (not at the first request): the accounts file, or its directory, is
    /// writable; the files root is a writable directory. Each failure names
    /// the path and the reason.
    pub fn preflight(&self) -> Vec<Error> {
        let mut failed = Vec::new();
        match &self.service {
            ServiceKind::Builtin(_) => {}
            ServiceKind::Chat(c) => {
                failed.extend(check_writable_file("accounts file", &c.accounts).err())
            }
            ServiceKind::Files(f) => {
                failed.extend(check_writable_file("accounts file", &f.accounts).err());
                failed.extend(check_creatable_dir("--files-root", &f.root).err());
            }
        }
        failed
    }
}
