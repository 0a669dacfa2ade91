//! `sockserv`: serve a built-in service over any transport and policy.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use socketserver::log::{parse_level, stderr_logger, LogFormat};
use socketserver::services::accounts::KdfParams;
use socketserver::services::chat::{ChatConfig, WORKERS_REFUSAL};
use socketserver::services::files::FilesConfig;
use socketserver::services::{serve_foreground, Builtin, ServeConfig, ServiceKind};
use socketserver::{BindOptions, Policy, Supervisor, Transport};

/// Serve echo, upper, time, discard, delay, cpu, a chat room or a file
/// service over TCP, UDP or Unix sockets, one request at a time, a process
/// or a thread per request, or from a thread pool.
#[derive(Parser, Debug)]
#[command(name = "sockserv", version)]
struct Args {
    /// tcp, udp, unix or unix-dgram.
    #[arg(long, default_value = "tcp")]
    transport: Transport,
    /// HOST:PORT (port 0 picks a free port), or a socket path / @abstract
    /// name for unix transports [default: 127.0.0.1:9000, or
    /// /tmp/sockserv.sock and /tmp/sockserv-dgram.sock].
    #[arg(long)]
    listen: Option<String>,
    /// sync, fork, thread or pool.
    #[arg(long, default_value = "thread", value_parser = ["sync", "fork", "thread", "pool"])]
    policy: String,
    /// echo, upper, time, discard, delay, cpu, chat or files.
    #[arg(long, default_value = "echo", value_parser = parse_service)]
    service: ServiceArg,
    /// Fork policy: most live children at once.
    #[arg(long, default_value_t = 40)]
    max_children: usize,
    /// Pool policy: worker threads [default: 4 per CPU].
    #[arg(long)]
    threads: Option<usize>,
    /// Pool policy: requests that may wait for a thread [default: as many as threads].
    #[arg(long)]
    queue: Option<usize>,
    /// Close a stream connection idle this many seconds (0: never).
    #[arg(long, default_value_t = 0.0)]
    idle_timeout: f64,
    /// Seconds in-flight requests may run after SIGTERM/SIGINT.
    #[arg(long, default_value_t = 30.0)]
    graceful_timeout: f64,
    /// listen(2) backlog.
    #[arg(long, default_value_t = libc::SOMAXCONN)]
    backlog: i32,
    /// Set SO_REUSEPORT; under the supervisor, each worker binds its own
    /// socket and the kernel balances connections between them.
    #[arg(long)]
    reuse_port: bool,
    /// Largest datagram served; longer ones are dropped and logged.
    #[arg(long, default_value_t = 8192)]
    max_packet_size: usize,
    /// delay service: milliseconds before each reply.
    #[arg(long, default_value_t = 10)]
    delay_ms: u64,
    /// cpu service: hashing rounds before each reply.
    #[arg(long, default_value_t = 10_000)]
    cpu_rounds: u32,
    /// chat, files: the accounts file (chat creates it on the first
    /// registration; files reads it at each login).
    #[arg(long, value_name = "FILE")]
    accounts: Option<std::path::PathBuf>,
    /// chat, files: argon2id cost of new password hashes, m=KIB,t=PASSES,p=LANES
    /// (the default is OWASP's minimum; lower it only for tests).
    #[arg(long, default_value_t = KdfParams::DEFAULT, value_name = "m=KIB,t=N,p=N")]
    hash_cost: KdfParams,
    /// chat over udp / unix-dgram: forget a client silent this many seconds.
    #[arg(long, default_value_t = 600.0)]
    session_timeout: f64,
    /// files: the directory holding one directory per user.
    #[arg(long, value_name = "DIR")]
    files_root: Option<std::path::PathBuf>,
    /// files: largest frame accepted (bytes; K, M, G suffixes), larger ones
    /// close the connection unread.
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    max_frame: u64,
    /// files: largest file a put accepts (bytes; K, M, G suffixes).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    max_file_size: u64,
    /// files: most bytes one user's files may hold (K, M, G suffixes).
    #[arg(long, default_value = "10G", value_parser = parse_size)]
    quota: u64,
    /// Unix socket file mode, octal (e.g. 0660).
    #[arg(long, value_parser = parse_mode)]
    socket_mode: Option<u32>,
    /// Admit only clients from these networks (repeatable; e.g. 127.0.0.0/8).
    #[arg(long)]
    allow: Vec<String>,
    /// Abort the serving process when a request contains this string
    /// (a testing aid for supervision and crash handling).
    #[arg(long, value_name = "STRING")]
    abort_on: Option<String>,
    /// Run the server in this process, without a supervising master.
    #[arg(long)]
    no_supervisor: bool,
    /// Worker processes the master keeps running.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// More than this many worker deaths within --restart-window stop the master.
    #[arg(long, default_value_t = 5)]
    restart_burst: usize,
    /// Seconds over which --restart-burst counts deaths.
    #[arg(long, default_value_t = 10.0)]
    restart_window: f64,
    /// A worker retires gracefully after this many requests (0: never).
    #[arg(long, default_value_t = 0)]
    max_requests: u64,
    /// Up to this many extra requests per worker, so workers retire apart.
    #[arg(long, default_value_t = 0)]
    max_requests_jitter: u64,
    /// Kill and replace a worker whose serving loop is silent this many seconds (0: never).
    #[arg(long, default_value_t = 0.0)]
    worker_timeout: f64,
    /// Write the master's pid here (refused if it names a live process).
    #[arg(long)]
    pid_file: Option<std::path::PathBuf>,
    /// Validate the configuration (flags, address, bindability) and exit.
    #[arg(long)]
    check: bool,
    /// term or json.
    #[arg(long, default_value = "term")]
    log_format: LogFormat,
    /// error, warn, info, debug or trace.
    #[arg(long, default_value = "info", value_parser = parse_level)]
    log_level: slog::Level,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("socket mode {s:?} is not an octal mode such as 0660"))
}

/// `--service`: a built-in, chat or files.
#[derive(Debug, Clone, Copy)]
enum ServiceArg {
    Builtin(Builtin),
    Chat,
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

/// Bytes with an optional K, M or G (binary) suffix.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&t[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("size {s:?} is not a number of bytes such as 4096, 64K, 50M or 2G"))
}

fn seconds(flag: &str, v: f64) -> Result<Option<Duration>, String> {
    if !v.is_finite() || v < 0.0 {
        return Err(format!(
            "{flag} {v}: must be a non-negative number of seconds"
        ));
    }
    Ok((v > 0.0).then(|| Duration::from_secs_f64(v)))
}

fn config(a: &Args) -> Result<ServeConfig, String> {
    let default_listen = match a.transport {
        Transport::Tcp | Transport::Udp => "127.0.0.1:9000",
        Transport::UnixStream => "/tmp/sockserv.sock",
        Transport::UnixDgram => "/tmp/sockserv-dgram.sock",
    };
    let listen = a.listen.as_deref().unwrap_or(default_listen);
    let listen = a
        .transport
        .parse_address(listen)
        .map_err(|e| e.to_string())?;
    let threads = a.threads.map(|t| t.max(1));
    let policy = match a.policy.as_str() {
        "sync" => Policy::Sync,
        "fork" => Policy::Fork {
            max_children: a.max_children.max(1),
            block_on_close: true,
        },
        "thread" => Policy::THREAD,
        _ => match (Policy::pool_default(), threads) {
            (Policy::Pool { threads: t, .. }, None) => Policy::Pool {
                threads: t,
                queue: a.queue.unwrap_or(t),
            },
            (_, Some(t)) => Policy::Pool {
                threads: t,
                queue: a.queue.unwrap_or(t),
            },
            (p, None) => p,
        },
    };
    let service = service(a)?;
    let cfg = ServeConfig {
        transport: a.transport,
        listen,
        policy,
        service,
        bind: BindOptions {
            allow_reuse_address: true,
            allow_reuse_port: a.reuse_port,
            request_queue_size: a.backlog,
            unix_mode: a.socket_mode,
        },
        idle_timeout: seconds("--idle-timeout", a.idle_timeout)?,
        graceful_timeout: seconds("--graceful-timeout", a.graceful_timeout)?.unwrap_or_default(),
        max_packet_size: a.max_packet_size.max(1),
        allow: a.allow.clone(),
        abort_on: a.abort_on.clone(),
    };
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

fn service(a: &Args) -> Result<ServiceKind, String> {
    let accounts = |svc: &str| {
        a.accounts
            .clone()
            .ok_or_else(|| format!("--service {svc} needs --accounts FILE"))
    };
    Ok(match a.service {
        ServiceArg::Builtin(Builtin::Delay(_)) => {
            ServiceKind::Builtin(Builtin::Delay(Duration::from_millis(a.delay_ms)))
        }
        ServiceArg::Builtin(Builtin::Cpu(_)) => ServiceKind::Builtin(Builtin::Cpu(a.cpu_rounds)),
        ServiceArg::Builtin(other) => ServiceKind::Builtin(other),
        ServiceArg::Chat => ServiceKind::Chat(ChatConfig {
            accounts: accounts("chat")?,
            kdf: a.hash_cost,
            session_timeout: seconds("--session-timeout", a.session_timeout)?
                .ok_or("--session-timeout must be more than 0 seconds")?,
        }),
        ServiceArg::Files => ServiceKind::Files(FilesConfig {
            root: a
                .files_root
                .clone()
                .ok_or("--service files needs --files-root DIR")?,
            accounts: accounts("files")?,
            max_frame: usize::try_from(a.max_frame).map_err(|_| "--max-frame is too large")?,
            max_file_size: a.max_file_size,
            quota: a.quota,
            kdf: a.hash_cost,
        }),
    })
}

fn supervisor(a: &Args, serve: &ServeConfig) -> Result<Supervisor, String> {
    if matches!(serve.service, ServiceKind::Chat(_)) && a.workers > 1 {
        return Err(WORKERS_REFUSAL.into());
    }
    if a.reuse_port && a.transport.is_unix() {
        return Err("--reuse-port applies to tcp and udp only".into());
    }
    let window = seconds("--restart-window", a.restart_window)?.unwrap_or_default();
    Ok(serve
        .supervisor()
        .workers(a.workers)
        .reuse_port(a.reuse_port)
        .restart_limit(a.restart_burst, window)
        .max_requests(a.max_requests, a.max_requests_jitter)
        .worker_timeout(seconds("--worker-timeout", a.worker_timeout)?)
        .pid_file(a.pid_file.clone()))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let configs = config(&args).and_then(|c| supervisor(&args, &c).map(|s| (c, s)));
    let (serve, sup) = match configs {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sockserv: {e}");
            return ExitCode::from(2);
        }
    };
    let log = stderr_logger(args.log_format, args.log_level);
    let result = if args.check {
        check(&serve, &sup).map(|()| 0)
    } else if args.no_supervisor {
        serve_foreground(&serve, &log).map(|()| 0)
    } else {
        sup.run(&log, |builder| serve.configure(builder, &log))
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            slog::crit!(log, "sockserv failed"; "error" => %e);
            eprintln!("sockserv: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--check`: the flags parsed; now try the address (bind and release an
/// IP port; for a Unix path, the stale-socket rules without binding).
fn check(serve: &ServeConfig, sup: &Supervisor) -> socketserver::Result<()> {
    socketserver::socket::check_bindable(serve.transport, &serve.listen, &serve.bind)?;
    println!(
        "sockserv: configuration ok: {} {} policy {} service {} workers {}",
        serve.transport,
        serve.listen,
        serve.policy.name(),
        serve.service.name(),
        sup.worker_count()
    );
    Ok(())
}
