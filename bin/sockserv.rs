//! `sockserv`: serve a built-in service over any transport and policy.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[path = "sockserv/args.rs"]
mod args;
#[path = "cli.rs"]
mod cli;
#[path = "sockserv/status.rs"]
mod status;

use args::{Args, ServiceArg};
use socketserver::log::{logger, LogTarget};
use socketserver::services::chat::{ChatConfig, WORKERS_REFUSAL};
use socketserver::services::files::{FilesConfig, LoginLimit};
use socketserver::services::{serve_foreground, Builtin, ServeConfig, ServiceKind};
use socketserver::{BindOptions, Policy, Supervisor, Transport};

/// The line services' default idle timeout: what nginx allows a client
/// between reads (`client_header_timeout`, `client_body_timeout`), long
/// enough for a person typing at `sockcat`, short enough that a slow or
/// stalled client lets go of a fork child or a thread within a minute.
const LINE_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The file service's default idle timeout: vsftpd's
/// `idle_session_timeout`. A session may sit between commands for five
/// minutes (a person at `sockfiles`' prompt); a client that stops reading
/// a download, or never logs in, lets go of its fork child, thread or
/// pool slot then instead of never.
const FILES_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The line services' default request deadline: the whole of one line
/// within 30 s of its first byte. Apache's `RequestReadTimeout` allows a
/// request's header 20 s, extended to 40 s while at least 500 bytes/s
/// arrive; a request line here is at most 4 KiB, so 30 s is generous for
/// any client that means to send one (a person pasting at `sockcat`
/// included), and it caps what a trickling client holds at 30 s instead
/// of for ever.
const LINE_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

fn secs(v: f64) -> Option<Duration> {
    cli::duration(v)
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
    let threads = a.threads.map(|t| t as usize);
    let queue = a.queue.map(|q| q as usize);
    let policy = match a.policy.as_str() {
        "sync" => Policy::Sync,
        "fork" => Policy::Fork {
            max_children: a.max_children as usize,
            block_on_close: true,
        },
        "thread" => Policy::Thread {
            daemon: false,
            block_on_close: true,
            max_threads: a.max_threads as usize,
        },
        "event" => match threads {
            Some(threads) => Policy::Event { threads },
            None => Policy::event_default(),
        },
        _ => match (Policy::pool_default(), threads) {
            (Policy::Pool { threads: t, .. }, None) => Policy::Pool {
                threads: t,
                queue: queue.unwrap_or(t),
            },
            (_, Some(t)) => Policy::Pool {
                threads: t,
                queue: queue.unwrap_or(t),
            },
            (p, None) => p,
        },
    };
    let service = service(a)?;
    let idle_timeout = match (a.idle_timeout, &service) {
        (Some(t), _) => secs(t),
        (None, ServiceKind::Builtin(_)) => Some(LINE_IDLE_TIMEOUT),
        (None, ServiceKind::Files(_)) => Some(FILES_IDLE_TIMEOUT),
        (None, ServiceKind::Chat(_)) => None,
    };
    let request_timeout = match (a.request_timeout, &service) {
        (Some(t), _) => secs(t),
        (None, ServiceKind::Builtin(_)) => Some(LINE_REQUEST_TIMEOUT),
        (None, _) => None,
    };
    let cfg = ServeConfig {
        transport: a.transport,
        listen,
        policy,
        service,
        bind: BindOptions {
            allow_reuse_address: true,
            allow_reuse_port: a.reuse_port,
            request_queue_size: a.backlog as i32,
            unix_mode: a.socket_mode,
        },
        idle_timeout,
        request_timeout,
        graceful_timeout: secs(a.graceful_timeout).unwrap_or_default(),
        max_packet_size: a.max_packet_size as usize,
        allow: a.allow.clone(),
        abort_on: a.abort_on.clone(),
        access_log: a
            .access_log
            .clone()
            .map(|p| (p, a.log_format == socketserver::log::LogFormat::Json)),
    };
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// The state directory chat and files fall back on (see `default_state_dir`).
fn state_dir() -> Result<PathBuf, String> {
    socketserver::services::default_state_dir().map_err(|e| e.to_string())
}

fn service(a: &Args) -> Result<ServiceKind, String> {
    let accounts = || -> Result<PathBuf, String> {
        match &a.accounts {
            Some(f) => Ok(f.clone()),
            None => Ok(state_dir()?.join("accounts")),
        }
    };
    Ok(match a.service {
        ServiceArg::Builtin(Builtin::Delay(_)) => {
            ServiceKind::Builtin(Builtin::Delay(Duration::from_millis(a.delay_ms)))
        }
        ServiceArg::Builtin(Builtin::Cpu(_)) => {
            ServiceKind::Builtin(Builtin::Cpu(a.cpu_rounds as u32))
        }
        ServiceArg::Builtin(other) => ServiceKind::Builtin(other),
        ServiceArg::Chat => ServiceKind::Chat(ChatConfig {
            accounts: accounts()?,
            kdf: a.hash_cost,
            session_timeout: secs(a.session_timeout).unwrap_or_default(),
        }),
        ServiceArg::Files => ServiceKind::Files(FilesConfig {
            root: match &a.files_root {
                Some(d) => d.clone(),
                None => state_dir()?.join("files"),
            },
            accounts: accounts()?,
            max_frame: usize::try_from(a.max_frame).map_err(|_| "--max-frame is too large")?,
            max_file_size: a.max_file_size,
            quota: a.quota,
            kdf: a.hash_cost,
            login_limit: LoginLimit {
                failures: a.login_failures as u32,
                window: secs(a.login_window).unwrap_or_default(),
                lockout: secs(a.login_lockout).unwrap_or_default(),
            },
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
    let window = secs(a.restart_window).unwrap_or_default();
    Ok(serve
        .supervisor()
        .workers(a.workers as usize)
        .reuse_port(a.reuse_port)
        .restart_limit(a.restart_burst as usize, window)
        .max_requests(a.max_requests, a.max_requests_jitter)
        .worker_timeout(secs(a.worker_timeout))
        .pid_file(a.pid_file.clone())
        .control(a.control.clone())
        .metrics(a.metrics))
}

fn main() -> ExitCode {
    let args: Args = cli::parse("sockserv");
    if let Some(args::Cmd::Status { control, json }) = &args.cmd {
        return status::run(control, *json);
    }
    let configs = config(&args).and_then(|c| supervisor(&args, &c).map(|s| (c, s)));
    let (serve, sup) = match configs {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sockserv: {e}");
            return ExitCode::from(2);
        }
    };
    let target = match &args.log_file {
        Some(path) => LogTarget::File(path.clone()),
        None => LogTarget::Stderr,
    };
    let log = match logger(args.log_format, args.log_level, &target) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("sockserv: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.check {
        return check(&args, &serve, &sup);
    }
    if let Err(e) = prepare_state(&args, &serve) {
        slog::crit!(log, "sockserv cannot start"; "error" => %e);
        eprintln!("sockserv: {e}");
        return ExitCode::FAILURE;
    }
    match &serve.service {
        ServiceKind::Chat(c) => slog::info!(log, "accounts"; "file" => %c.accounts.display()),
        ServiceKind::Files(f) => slog::info!(log, "accounts"; "file" => %f.accounts.display(),
                                             "files_root" => %f.root.display()),
        ServiceKind::Builtin(_) => {}
    }
    let result = if args.no_supervisor {
        serve_foreground(&serve, args.control.as_deref(), args.metrics, &log).map(|()| 0)
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

/// Before serving: the default state directories exist (mode 0700), and
/// what chat and files will write is writable, so a bad directory fails
/// now rather than at the first `/register`.
fn prepare_state(a: &Args, serve: &ServeConfig) -> socketserver::Result<()> {
    use socketserver::services::create_private_dir;
    match &serve.service {
        ServiceKind::Chat(c) if a.accounts.is_none() => {
            create_private_dir(c.accounts.parent().unwrap_or(Path::new(".")))?
        }
        ServiceKind::Files(f) => {
            if a.accounts.is_none() {
                create_private_dir(f.accounts.parent().unwrap_or(Path::new(".")))?;
            }
            if a.files_root.is_none() {
                create_private_dir(&f.root)?;
            }
        }
        _ => {}
    }
    match serve.preflight().into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `--check`, like `nginx -t`: proves the configuration can start. The
/// flags parsed (and the log file opened); now the address binds (an IP
/// port is bound and released; a Unix path gets the stale-socket rules),
/// the pid file's directory is writable, and what chat and files write is
/// writable. Every failure is printed, each on its own line; exit 1.
fn check(a: &Args, serve: &ServeConfig, sup: &Supervisor) -> ExitCode {
    use socketserver::services::{check_writable_dir, check_writable_file};
    let mut failed: Vec<String> = Vec::new();
    if let Err(e) =
        socketserver::socket::check_bindable(serve.transport, &serve.listen, &serve.bind)
    {
        failed.push(e.to_string());
    }
    if let Some(pid) = &a.pid_file {
        let dir = pid
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if let Err(e) = check_writable_dir("--pid-file's directory", dir) {
            failed.push(e.to_string());
        }
    }
    let defaults = matches!(serve.service, ServiceKind::Chat(_) | ServiceKind::Files(_))
        && a.accounts.is_none();
    for e in serve.preflight() {
        // The default state directory is created at start if missing: then
        // it is enough that it can be.
        if defaults && e.to_string().contains("No such file") {
            let dir = state_dir().unwrap_or_default();
            if let Err(e) = socketserver::services::check_creatable_dir("state directory", &dir) {
                failed.push(e.to_string());
            }
            continue;
        }
        failed.push(e.to_string());
    }
    if let Some(f) = &a.log_file {
        if let Err(e) = check_writable_file("--log-file", f) {
            failed.push(e.to_string());
        }
    }
    if let Some(f) = a.access_log.as_ref().filter(|f| f.as_os_str() != "-") {
        if let Err(e) = check_writable_file("--access-log", f) {
            failed.push(e.to_string());
        }
    }
    failed.dedup();
    if !failed.is_empty() {
        for f in &failed {
            eprintln!("sockserv: {f}");
        }
        return ExitCode::FAILURE;
    }
    println!(
        "sockserv: configuration ok: {} {} policy {} service {} workers {}",
        serve.transport,
        serve.listen,
        serve.policy.name(),
        serve.service.name(),
        sup.worker_count()
    );
    ExitCode::SUCCESS
}
