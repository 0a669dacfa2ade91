//! `sockserv`: serve a built-in service over any transport and policy.

use std::process::ExitCode;
use std::time::Duration;

#[path = "sockserv/args.rs"]
mod args;
#[path = "cli.rs"]
mod cli;

use args::{Args, ServiceArg};
use socketserver::log::{logger, LogTarget};
use socketserver::services::chat::{ChatConfig, WORKERS_REFUSAL};
use socketserver::services::files::FilesConfig;
use socketserver::services::{serve_foreground, Builtin, ServeConfig, ServiceKind};
use socketserver::{BindOptions, Policy, Supervisor, Transport};

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
        "thread" => Policy::THREAD,
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
        idle_timeout: secs(a.idle_timeout),
        graceful_timeout: secs(a.graceful_timeout).unwrap_or_default(),
        max_packet_size: a.max_packet_size as usize,
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
        ServiceArg::Builtin(Builtin::Cpu(_)) => {
            ServiceKind::Builtin(Builtin::Cpu(a.cpu_rounds as u32))
        }
        ServiceArg::Builtin(other) => ServiceKind::Builtin(other),
        ServiceArg::Chat => ServiceKind::Chat(ChatConfig {
            accounts: accounts("chat")?,
            kdf: a.hash_cost,
            session_timeout: secs(a.session_timeout).unwrap_or_default(),
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
    let window = secs(a.restart_window).unwrap_or_default();
    Ok(serve
        .supervisor()
        .workers(a.workers as usize)
        .reuse_port(a.reuse_port)
        .restart_limit(a.restart_burst as usize, window)
        .max_requests(a.max_requests, a.max_requests_jitter)
        .worker_timeout(secs(a.worker_timeout))
        .pid_file(a.pid_file.clone()))
}

fn main() -> ExitCode {
    let args: Args = cli::parse("sockserv");
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
