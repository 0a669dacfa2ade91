//! `sockserv`'s flags: each parsed and bounded here, so a bad value exits 2
//! with one line naming the flag before anything starts. Every flag also
//! reads an environment variable, `SOCKSERV_` and its name in capitals
//! (`SOCKSERV_WORKERS=4`), for scripts and containers; a flag on the
//! command line wins.

use std::path::PathBuf;

use clap::Parser;
use socketserver::log::{parse_level, LogFormat};
use socketserver::services::accounts::KdfParams;
use socketserver::services::Builtin;
use socketserver::Transport;

use super::cli;

/// The most workers `--workers` accepts.
pub const MAX_WORKERS: u64 = 1024;
/// The most threads (pool) or live children (fork) a flag accepts.
pub const MAX_CONCURRENCY: u64 = 65_536;
/// The longest timeout a flag accepts: 30 days.
pub const MAX_SECONDS: f64 = 30.0 * 86_400.0;

/// Serve echo, upper, time, discard, delay, cpu, a chat room or a file
/// service over TCP, UDP or Unix sockets, one request at a time, a process
/// or a thread per request, from a thread pool, or from event loops.
#[derive(Parser, Debug)]
#[command(
    name = "sockserv",
    version,
    allow_negative_numbers = true,
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    /// `sockserv status`: ask a running server for its scoreboard.
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
    /// tcp, udp, unix or unix-dgram.
    #[arg(long, default_value = "tcp", env = "SOCKSERV_TRANSPORT")]
    pub transport: Transport,
    /// HOST:PORT (port 0 picks a free port), or a socket path / @abstract
    /// name for unix transports [default: 127.0.0.1:9000, or
    /// /tmp/sockserv.sock and /tmp/sockserv-dgram.sock].
    #[arg(short = 'l', long, env = "SOCKSERV_LISTEN")]
    pub listen: Option<String>,
    /// sync, fork, thread, pool or event.
    #[arg(short = 'p', long, default_value = "thread", env = "SOCKSERV_POLICY",
          value_parser = ["sync", "fork", "thread", "pool", "event"])]
    pub policy: String,
    /// echo, upper, time, discard, delay, cpu, chat or files.
    #[arg(short = 's', long, default_value = "echo", env = "SOCKSERV_SERVICE",
          value_parser = parse_service)]
    pub service: ServiceArg,
    /// Fork policy: most live children at once (1 to 65536).
    #[arg(long, default_value_t = 40, env = "SOCKSERV_MAX_CHILDREN",
          value_parser = cli::count(1, MAX_CONCURRENCY))]
    pub max_children: u64,
    /// Thread policy: most request threads at once (1 to 65536); at the
    /// bound, accepting waits for one to finish, so a flood of connections
    /// cannot exhaust memory (1,024 idle threads hold about 13 MiB).
    #[arg(long, default_value_t = 1024, env = "SOCKSERV_MAX_THREADS",
          value_parser = cli::count(1, MAX_CONCURRENCY))]
    pub max_threads: u64,
    /// Pool policy: worker threads, 1 to 65536 [default: 4 per CPU]; event
    /// policy: event loop threads [default: one per CPU].
    #[arg(long, env = "SOCKSERV_THREADS", value_parser = cli::count(1, MAX_CONCURRENCY))]
    pub threads: Option<u64>,
    /// Pool policy: requests that may wait for a thread, 1 to 65536
    /// [default: as many as threads].
    #[arg(long, env = "SOCKSERV_QUEUE", value_parser = cli::count(1, MAX_CONCURRENCY))]
    pub queue: Option<u64>,
    /// Close a stream connection idle this many seconds (0: never)
    /// [default: 60 for the line services, whose connections also reach
    /// the policy only once they send; 300 for files (vsftpd's idle
    /// session timeout); never for chat, whose rooms hold idle members].
    #[arg(long, env = "SOCKSERV_IDLE_TIMEOUT", value_parser = cli::seconds(true, MAX_SECONDS))]
    pub idle_timeout: Option<f64>,
    /// Close a stream connection whose request (a line) is not complete
    /// this many seconds after its first byte, however steadily it trickles
    /// in (0: no deadline) [default: 30 for the line services; none for
    /// chat and files]. The idle timeout restarts at every byte; this does
    /// not.
    #[arg(long, env = "SOCKSERV_REQUEST_TIMEOUT", value_parser = cli::seconds(true, MAX_SECONDS))]
    pub request_timeout: Option<f64>,
    /// Seconds in-flight requests may run after SIGTERM/SIGINT.
    #[arg(long, default_value_t = 30.0, env = "SOCKSERV_GRACEFUL_TIMEOUT",
          value_parser = cli::seconds(true, MAX_SECONDS))]
    pub graceful_timeout: f64,
    /// listen(2) backlog (1 to 65535; the kernel caps it at net.core.somaxconn).
    #[arg(long, default_value_t = libc::SOMAXCONN as u64, env = "SOCKSERV_BACKLOG",
          value_parser = cli::count(1, 65_535))]
    pub backlog: u64,
    /// Set SO_REUSEPORT; under the supervisor, each worker binds its own
    /// socket and the kernel balances connections between them.
    #[arg(long, env = "SOCKSERV_REUSE_PORT")]
    pub reuse_port: bool,
    /// Largest datagram served (bytes, up to 16M); longer ones are dropped and logged.
    #[arg(long, default_value = "8192", env = "SOCKSERV_MAX_PACKET_SIZE",
          value_parser = cli::size(16 << 20))]
    pub max_packet_size: u64,
    /// delay service: milliseconds before each reply (0 to 600000).
    #[arg(long, default_value_t = 10, env = "SOCKSERV_DELAY_MS",
          value_parser = cli::count(0, 600_000))]
    pub delay_ms: u64,
    /// cpu service: hashing rounds before each reply (1 to 1000000000).
    #[arg(long, default_value_t = 10_000, env = "SOCKSERV_CPU_ROUNDS",
          value_parser = cli::count(1, 1_000_000_000))]
    pub cpu_rounds: u64,
    /// chat, files: the accounts file (chat creates it on the first
    /// registration; files reads it at each login).
    #[arg(long, value_name = "FILE", env = "SOCKSERV_ACCOUNTS")]
    pub accounts: Option<PathBuf>,
    /// chat, files: argon2id cost of new password hashes, m=KIB,t=PASSES,p=LANES
    /// (the default is OWASP's minimum; lower it only for tests).
    #[arg(long, default_value_t = KdfParams::DEFAULT, value_name = "m=KIB,t=N,p=N",
          env = "SOCKSERV_HASH_COST")]
    pub hash_cost: KdfParams,
    /// chat over udp / unix-dgram: forget a client silent this many seconds.
    #[arg(long, default_value_t = 600.0, env = "SOCKSERV_SESSION_TIMEOUT",
          value_parser = cli::seconds(false, MAX_SECONDS))]
    pub session_timeout: f64,
    /// files: the directory holding one directory per user.
    #[arg(long, value_name = "DIR", env = "SOCKSERV_FILES_ROOT")]
    pub files_root: Option<PathBuf>,
    /// files: largest frame accepted (bytes; K, M, G suffixes), larger ones
    /// close the connection unread.
    #[arg(long, default_value = "1M", env = "SOCKSERV_MAX_FRAME", value_parser = cli::size(1 << 30))]
    pub max_frame: u64,
    /// files: largest file a put accepts (bytes; K, M, G suffixes).
    #[arg(long, default_value = "1G", env = "SOCKSERV_MAX_FILE_SIZE",
          value_parser = cli::size(1 << 50))]
    pub max_file_size: u64,
    /// files: most bytes one user's files may hold (K, M, G suffixes).
    #[arg(long, default_value = "10G", env = "SOCKSERV_QUOTA", value_parser = cli::size(1 << 60))]
    pub quota: u64,
    /// files: wrong passwords one client address may send within
    /// --login-window before its logins are refused for --login-lockout
    /// (0: no limit across connections). A Unix socket client's address
    /// is its user id; an IPv6 client's is its /64.
    #[arg(long, default_value_t = 5, env = "SOCKSERV_LOGIN_FAILURES",
          value_parser = cli::count(0, 1_000_000))]
    pub login_failures: u64,
    /// files: seconds, from an address's first wrong password, in which
    /// --login-failures count.
    #[arg(long, default_value_t = 600.0, env = "SOCKSERV_LOGIN_WINDOW",
          value_parser = cli::seconds(false, MAX_SECONDS))]
    pub login_window: f64,
    /// files: seconds logins from a locked-out address are refused.
    #[arg(long, default_value_t = 600.0, env = "SOCKSERV_LOGIN_LOCKOUT",
          value_parser = cli::seconds(false, MAX_SECONDS))]
    pub login_lockout: f64,
    /// Unix socket file mode, octal (e.g. 0660).
    #[arg(long, value_parser = parse_mode, env = "SOCKSERV_SOCKET_MODE")]
    pub socket_mode: Option<u32>,
    /// Admit only clients from these networks (repeatable; e.g. 127.0.0.0/8).
    #[arg(long, value_parser = parse_network, env = "SOCKSERV_ALLOW", value_delimiter = ',')]
    pub allow: Vec<String>,
    /// Abort the serving process when a request contains this string
    /// (a testing aid for supervision and crash handling).
    #[arg(long, value_name = "STRING")]
    pub abort_on: Option<String>,
    /// Run the server in this process, without a supervising master.
    #[arg(long, env = "SOCKSERV_NO_SUPERVISOR")]
    pub no_supervisor: bool,
    /// Worker processes the master keeps running (1 to 1024).
    #[arg(short = 'w', long, default_value_t = 1, env = "SOCKSERV_WORKERS",
          value_parser = cli::count(1, MAX_WORKERS))]
    pub workers: u64,
    /// More than this many worker deaths within --restart-window stop the master.
    #[arg(long, default_value_t = 5, env = "SOCKSERV_RESTART_BURST",
          value_parser = cli::count(1, 1_000_000))]
    pub restart_burst: u64,
    /// Seconds over which --restart-burst counts deaths.
    #[arg(long, default_value_t = 10.0, env = "SOCKSERV_RESTART_WINDOW",
          value_parser = cli::seconds(false, MAX_SECONDS))]
    pub restart_window: f64,
    /// A worker retires gracefully after this many requests (0: never).
    #[arg(long, default_value_t = 0, env = "SOCKSERV_MAX_REQUESTS")]
    pub max_requests: u64,
    /// Up to this many extra requests per worker, so workers retire apart.
    #[arg(long, default_value_t = 0, env = "SOCKSERV_MAX_REQUESTS_JITTER")]
    pub max_requests_jitter: u64,
    /// Kill and replace a worker whose serving loop is silent this many seconds (0: never).
    #[arg(long, default_value_t = 0.0, env = "SOCKSERV_WORKER_TIMEOUT",
          value_parser = cli::seconds(true, MAX_SECONDS))]
    pub worker_timeout: f64,
    /// Write the master's pid here (refused if it names a live process).
    #[arg(long, env = "SOCKSERV_PID_FILE")]
    pub pid_file: Option<PathBuf>,
    /// Serve the status scoreboard on a Unix socket at PATH (mode 0600,
    /// removed on exit); read it with `sockserv status --control PATH`.
    #[arg(long, value_name = "PATH", env = "SOCKSERV_CONTROL")]
    pub control: Option<PathBuf>,
    /// Serve Prometheus metrics over HTTP at HOST:PORT (`GET /metrics`, the
    /// text exposition format): the same numbers as `status`. Port 0 picks
    /// a free port (logged at start).
    #[arg(long, value_name = "HOST:PORT", env = "SOCKSERV_METRICS",
          value_parser = parse_metrics_addr)]
    pub metrics: Option<std::net::SocketAddr>,
    /// Validate the configuration (flags, address, bindability) and exit.
    #[arg(long)]
    pub check: bool,
    /// One line per connection or datagram (time, peer, outcome, duration,
    /// bytes in and out) appended to PATH, or `-` for stdout; JSON lines
    /// with --log-format json. Off by default.
    #[arg(long, value_name = "PATH|-", env = "SOCKSERV_ACCESS_LOG")]
    pub access_log: Option<PathBuf>,
    /// Append the log to this file instead of stderr; SIGUSR1 reopens it
    /// (after logrotate moved it).
    #[arg(long, value_name = "PATH", env = "SOCKSERV_LOG_FILE")]
    pub log_file: Option<PathBuf>,
    /// term or json.
    #[arg(long, default_value = "term", env = "SOCKSERV_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// error, warn, info, debug or trace.
    #[arg(long, default_value = "info", value_parser = parse_level, env = "SOCKSERV_LOG_LEVEL")]
    pub log_level: slog::Level,
}

/// Subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Print a running server's scoreboard: workers, children, threads,
    /// memory, counters and the listen queue.
    Status {
        /// The server's --control socket.
        #[arg(long, value_name = "PATH")]
        control: PathBuf,
        /// Print the server's JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
}

fn parse_metrics_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse().map_err(|_| {
        format!("{s:?} is not HOST:PORT with a numeric host (e.g. 127.0.0.1:9100 or [::1]:9100)")
    })
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("socket mode {s:?} is not an octal mode such as 0660"))
}

/// `--allow`: checked as a network here, kept as typed.
fn parse_network(s: &str) -> Result<String, String> {
    socketserver::AllowList::parse([s]).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}

/// `--service`: a built-in, chat or files.
#[derive(Debug, Clone, Copy)]
pub enum ServiceArg {
    /// echo ... cpu.
    Builtin(Builtin),
    /// The chat room.
    Chat,
    /// The file service.
    Files,
}

fn parse_service(s: &str) -> Result<ServiceArg, String> {
    match s {
        "chat" => Ok(ServiceArg::Chat),
        "files" => Ok(ServiceArg::Files),
        _ => s.parse().map(ServiceArg::Builtin).map_err(|_| {
            format!(
                "unknown service {s:?} (expected echo, upper, time, discard, delay, cpu, chat or files)"
            )
        }),
    }
}
