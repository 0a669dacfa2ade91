//! The master: holds the listening socket, forks workers, and keeps them
//! alive. Its loop reads top to bottom as gunicorn's arbiter: wait, handle
//! each queued signal, reap, kill stuck workers, then manage the count.
//!
//! The master is single-threaded (checked at start), so it may fork and the
//! worker may run ordinary code. It never handles a request.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use slog::{crit, debug, error, info, warn, Logger};

use super::control::Responder;
use super::pidfile::PidFile;
use super::restart::{RestartPolicy, Verdict, YOUNG};
use super::signals::{self, Queued, SignalQueue};
use super::status::{self, Status, WorkerStatus};
use super::upgrade::{Invocation, Notice, Progress, Upgrade};
use super::worker::{self, beat, WorkerInit, BOOT_ERROR};
use super::{systemd, BuildServer, Supervisor};
use crate::error::{Error, Result};
use crate::socket::Listener;
use crate::stats::{Counters, Slot};
use crate::sys;

/// One worker as the master sees it.
struct Worker {
    pid: i32,
    generation: u64,
    started: Instant,
    last_beat: Instant,
    ready: bool,
    /// The master sent TERM, or the worker said it is retiring.
    leaving: Option<Instant>,
    heartbeat: UnixStream,
    heartbeat_open: bool,
    /// Its counters' index in the shared table.
    slot: usize,
}

/// Counter slots the master maps for its workers: twice the most workers
/// it runs at once (a reload runs two generations side by side).
const SLOTS: usize = 2 * MAX_WORKERS;

/// The most workers TTIN raises the count to.
pub(super) const MAX_WORKERS: usize = 2048;

/// How the master is stopping.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Graceful { deadline: Instant },
    Fast,
}

/// The supervising process's state.
pub(super) struct Master<'a> {
    cfg: &'a Supervisor,
    build: &'a dyn BuildServer,
    log: Logger,
    listener: Option<Listener>,
    signals: SignalQueue,
    workers: Vec<Worker>,
    target: usize,
    generation: u64,
    restart: RestartPolicy,
    stop: Option<Stop>,
    halt: Option<String>,
    ready_notified: bool,
    /// READY, RELOADING, STOPPING, STATUS and WATCHDOG to systemd.
    notifier: systemd::Notifier,
    /// WINCH stopped the workers; HUP brings them back.
    winched: bool,
    /// Workers started so far (each worker's number in `ps`).
    spawned: u64,
    /// How this program was started, for USR2 to start it again.
    invocation: Option<Invocation>,
    /// The pid file, renamed during an upgrade.
    pid_file: Option<PidFile>,
    /// A USR2 upgrade in progress (the new master is our child).
    upgrade: Option<Upgrade>,
    /// Started by an upgrade: tell the old master once the workers serve.
    notice: Option<Notice>,
    /// A new master took over the socket: stop without removing it.
    handed_over: bool,
    /// The status socket (`--control`) and the metrics endpoint
    /// (`--metrics`), served from this loop.
    responders: Vec<Responder>,
    /// Responders an upgrade's old master still holds: bound once it is
    /// gone.
    pending: Vec<Endpoint>,
    /// Every worker's counters, in memory the workers write.
    slots: &'static [Slot],
    /// Slots no worker uses.
    free_slots: Vec<usize>,
    /// The counts of workers that are gone.
    retired: Counters,
    /// Workers replaced because they died unasked.
    restarts: u64,
    /// When the master started.
    started: Instant,
    /// Checked at start; the master never starts a thread.
    single: sys::SingleThreaded,
}

impl<'a> Master<'a> {
    /// Binds (or takes from systemd) the socket and installs the handlers.
    pub(super) fn new(
        cfg: &'a Supervisor,
        build: &'a dyn BuildServer,
        log: Logger,
    ) -> Result<Master<'a>> {
        let single = crate::policy::check_single_threaded()?;
        let mut activated = systemd::listen_fds(cfg.transport)?;
        if activated.len() > 1 {
            return Err(Error::Config(format!(
                "systemd passed {} sockets; the supervisor serves one",
                activated.len()
            )));
        }
        let notice = Notice::from_env()?;
        let listener = match activated.pop() {
            // Inherited from an upgrading master: ours to remove at exit.
            Some(mut l) if notice.is_some() => {
                l.claim_path();
                Some(l)
            }
            Some(l) => Some(l),
            None if cfg.reuse_port => None,
            None => Some(Listener::bind(cfg.transport, &cfg.address, &cfg.bind)?),
        };
        // A master writing to a closed log pipe must get EPIPE, not die.
        sys::ignore_sigpipe().map_err(|e| Error::os("ignore SIGPIPE", e))?;
        let signals =
            SignalQueue::install().map_err(|e| Error::os("install signal handlers", e))?;
        Ok(Master {
            cfg,
            build,
            log,
            listener,
            signals,
            workers: Vec::new(),
            target: cfg.workers.max(1),
            generation: 0,
            restart: RestartPolicy::new(cfg.restart_burst, cfg.restart_window),
            stop: None,
            halt: None,
            ready_notified: false,
            notifier: systemd::Notifier::from_env(),
            winched: false,
            spawned: 0,
            invocation: Invocation::current(),
            pid_file: None,
            upgrade: None,
            notice,
            handed_over: false,
            responders: Vec::new(),
            pending: Vec::new(),
            slots: Slot::table(SLOTS).map_err(|e| Error::os("map the counters", e))?,
            free_slots: (0..SLOTS).rev().collect(),
            retired: Counters::default(),
            restarts: 0,
            started: Instant::now(),
            single,
        })
        .and_then(Master::bind_responders)
    }

    /// Binds the control socket and the metrics endpoint. A master started
    /// by an upgrade binds its control socket beside the old master's (and
    /// renames it over that once it serves); it may find the metrics port
    /// still held by the old master, and binds it once the old one is gone
    /// (until then the old one answers).
    fn bind_responders(mut self) -> Result<Self> {
        let upgraded = self.notice.is_some();
        for e in Endpoint::configured(self.cfg) {
            match e.bind(upgraded) {
                Ok(r) => {
                    if let Some(addr) = r.local_addr() {
                        info!(self.log, "metrics"; "addr" => %addr);
                    }
                    self.responders.push(r)
                }
                Err(err) if self.notice.is_some() => {
                    debug!(self.log, "status endpoint still held by the old master";
                           "endpoint" => e.to_string(), "error" => %err);
                    self.pending.push(e);
                }
                Err(err) => return Err(err),
            }
        }
        Ok(self)
    }

    /// The address clients connect to.
    fn address(&self) -> String {
        match &self.listener {
            Some(l) => l.address.to_string(),
            None => self.cfg.address.to_string(),
        }
    }

    /// Runs until stopped; returns the process exit code (0, or 1 after a
    /// crash loop or a worker that could not boot).
    pub(super) fn run(mut self, pid_file: Option<PidFile>) -> i32 {
        self.pid_file = pid_file;
        sys::set_name(&sys::process_name("master"));
        info!(self.log, "listening";
              "addr" => self.address(), "transport" => %self.cfg.transport,
              "policy" => self.cfg.policy.name(), "service" => &self.cfg.name,
              "workers" => self.target);
        loop {
            self.manage_workers();
            if self.stop.is_some() && self.workers.is_empty() {
                break;
            }
            self.wait();
            self.serve_control();
            self.read_heartbeats();
            for (sig, n) in self.signals.drain() {
                match sig {
                    Queued::Obey(sig) => self.handle_signal(sig, n),
                    Queued::Ignore(num) => {
                        warn!(self.log, "signal ignored"; "signal" => signals::number_name(num),
                              "count" => n)
                    }
                }
            }
            self.reap_workers();
            self.check_upgrade();
            self.murder_workers();
            self.finish_reload();
            self.notifier.watchdog();
            self.notifier.status(self.status_line());
        }
        let code = match &self.halt {
            Some(reason) => {
                crit!(self.log, "master exiting"; "reason" => reason.as_str());
                1
            }
            None => 0,
        };
        // Dropping the listener removes the Unix socket file we created,
        // unless a new master serves on it now.
        if self.handed_over {
            if let Some(l) = &mut self.listener {
                l.disown_path();
            }
        }
        self.listener = None;
        info!(self.log, "stopped"; "exit_code" => code);
        code
    }

    fn wait(&mut self) {
        let mut limit = Duration::from_secs(1);
        if let Some(t) = self.cfg.worker_timeout {
            limit = limit.min(t / 4);
        }
        if let Some(ping) = self.notifier.wake_within() {
            limit = limit.min(ping);
        }
        if let Some(at) = self.restart.next_spawn() {
            let left = at.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                limit = limit.min(left);
            }
        }
        let mut fds = vec![PollFd::new(self.signals.wake_source(), PollFlags::POLLIN)];
        for w in self.workers.iter().filter(|w| w.heartbeat_open) {
            fds.push(PollFd::new(w.heartbeat.as_fd(), PollFlags::POLLIN));
        }
        if let Some(u) = &self.upgrade {
            fds.push(PollFd::new(u.wake_source(), PollFlags::POLLIN));
        }
        for c in &self.responders {
            for (fd, out) in c.poll_fds() {
                let flags = if out {
                    PollFlags::POLLOUT
                } else {
                    PollFlags::POLLIN
                };
                fds.push(PollFd::new(fd, flags));
            }
            if let Some(d) = c.next_deadline() {
                limit = limit.min(d.saturating_duration_since(Instant::now()));
            }
        }
        let ms = limit.as_millis().clamp(1, 1000) as u16;
        let _ = poll(&mut fds, PollTimeout::from(ms));
    }

    fn read_heartbeats(&mut self) {
        let now = Instant::now();
        for w in self.workers.iter_mut().filter(|w| w.heartbeat_open) {
            let mut buf = [0u8; 256];
            loop {
                match (&w.heartbeat).read(&mut buf) {
                    Ok(0) => {
                        w.heartbeat_open = false;
                        break;
                    }
                    Ok(n) => {
                        w.last_beat = now;
                        for &b in &buf[..n] {
                            match b {
                                beat::READY => w.ready = true,
                                beat::RETIRING if w.leaving.is_none() => w.leaving = Some(now),
                                _ => {}
                            }
                        }
                    }
                    Err(_) => break, // WouldBlock: nothing more for now
                }
            }
            if w.ready && w.leaving.is_none() && now.duration_since(w.started) >= YOUNG {
                self.restart.worker_stable();
            }
        }
        let all_ready = self.current().all(|w| w.ready) && self.current().count() >= self.target;
        if !self.ready_notified && self.stop.is_none() && all_ready {
            self.ready_notified = true;
            if let Some(notice) = self.notice.take() {
                // Started by an upgrade: this process is the service now.
                systemd::notify(&format!("MAINPID={}", std::process::id()));
                for r in &mut self.responders {
                    if let Err(e) = r.take_over() {
                        error!(self.log, "upgrade: status socket not taken over"; "error" => %e);
                    }
                }
                notice.serving();
                info!(self.log, "upgrade: serving; the old master stops now");
            }
            self.notifier.ready();
        }
    }

    fn handle_signal(&mut self, sig: Signal, count: usize) {
        if sig != Signal::SIGCHLD {
            info!(self.log, "signal"; "signal" => signals::name(sig), "count" => count);
        }
        match sig {
            Signal::SIGTERM => self.begin_stop(false),
            Signal::SIGINT | Signal::SIGQUIT => self.begin_stop(true),
            Signal::SIGHUP if self.winched => self.resume(),
            Signal::SIGHUP => self.reload(),
            Signal::SIGUSR1 => self.reopen_logs(),
            Signal::SIGUSR2 => self.begin_upgrade(),
            Signal::SIGWINCH => self.winch(),
            Signal::SIGTTIN => {
                self.target = (self.target + count).min(MAX_WORKERS);
                info!(self.log, "scale"; "workers" => self.target);
            }
            Signal::SIGTTOU => {
                self.target = self.target.saturating_sub(count).max(1);
                info!(self.log, "scale"; "workers" => self.target);
            }
            _ => {} // SIGCHLD: reap_workers runs next
        }
    }

    /// Current-generation workers that are not leaving.
    fn current(&self) -> impl Iterator<Item = &Worker> {
        let g = self.generation;
        self.workers
            .iter()
            .filter(move |w| w.generation == g && w.leaving.is_none())
    }

    fn manage_workers(&mut self) {
        if self.stop.is_some() || self.winched {
            return;
        }
        let mut live = self.current().count();
        while live < self.target && self.restart.may_spawn(Instant::now()) {
            if let Err(e) = self.spawn_worker() {
                error!(self.log, "cannot start worker"; "error" => %e);
                break;
            }
            live += 1;
        }
        if live > self.target {
            // TTOU: the newest current worker leaves gracefully.
            let g = self.generation;
            if let Some(w) = self
                .workers
                .iter_mut()
                .rev()
                .find(|w| w.generation == g && w.leaving.is_none())
            {
                info!(self.log, "stopping worker"; "worker" => w.pid, "reason" => "scale down");
                w.leaving = Some(Instant::now());
                terminate(w.pid);
            }
        }
    }

    fn spawn_worker(&mut self) -> Result<()> {
        let (master_end, worker_end) =
            UnixStream::pair().map_err(|e| Error::os("socketpair", e))?;
        master_end
            .set_nonblocking(true)
            .map_err(|e| Error::os("set O_NONBLOCK", e))?;
        let master_pid = std::process::id();
        let Some(slot) = self.free_slots.pop() else {
            return Err(Error::Config(format!(
                "no counter slot left ({SLOTS} in use)"
            )));
        };
        self.slots[slot].reset();
        let counters = &self.slots[slot];
        // Signals wait (pending) until the worker has its own handlers.
        let mask =
            sys::block_signals(&signals::SIGNALS).map_err(|e| Error::os("sigprocmask", e))?;
        // The master never starts a thread, so the worker may run ordinary
        // code. It drops what only the master needs (the signal handlers
        // and their pipe, every heartbeat channel) and takes the listener.
        let (cfg, build, log) = (self.cfg, self.build, &self.log);
        self.spawned += 1;
        let (age, generation) = (self.spawned, self.generation);
        let forked = sys::fork(&self.single, |child| {
            child.close_inherited(master_end.as_raw_fd());
            self.signals.forget_in_worker(child);
            if let Some(n) = &self.notice {
                child.close_inherited(n.raw_fd());
            }
            if let Some(u) = &self.upgrade {
                child.close_inherited(u.wake_source().as_raw_fd());
            }
            for c in &self.responders {
                for fd in c.fds() {
                    child.close_inherited(fd.as_raw_fd());
                }
            }
            self.workers.clear();
            let mut listener = self.listener.take();
            if let Some(l) = &mut listener {
                l.disown_path(); // the master removes the socket file
            }
            sys::set_name(&sys::process_name(&format!("w{age} g{generation}")));
            let init = WorkerInit {
                counters,
                listener,
                heartbeat: worker_end,
                master_pid,
                signal_mask: mask,
            };
            worker::run(cfg, build, init, log)
        });
        let _ = sys::restore_signals(&mask);
        let pid = match forked {
            Ok(pid) => pid,
            Err(e) => {
                self.free_slots.push(slot);
                return Err(Error::os("fork", e));
            }
        };
        // Also set here, so the group exists before either side runs on.
        let _ = nix::unistd::setpgid(Pid::from_raw(pid), Pid::from_raw(pid));
        let now = Instant::now();
        info!(self.log, "worker started"; "worker" => pid, "generation" => self.generation);
        self.workers.push(Worker {
            pid,
            generation: self.generation,
            started: now,
            last_beat: now,
            ready: false,
            leaving: None,
            heartbeat: master_end,
            heartbeat_open: true,
            slot,
        });
        Ok(())
    }

    /// Reaps every exited worker (the master's only children) and decides
    /// about replacing it.
    fn reap_workers(&mut self) {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(s) => s,
            };
            let (pid, how, code) = match status {
                WaitStatus::Exited(pid, code) => {
                    (pid.as_raw(), format!("exit status {code}"), Some(code))
                }
                WaitStatus::Signaled(pid, sig, _) => (
                    pid.as_raw(),
                    format!("killed by signal {}", signals::name(sig)),
                    None,
                ),
                _ => continue,
            };
            // Whatever the worker left in its group (fork-policy children) goes too.
            let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
            if self.upgrade.as_ref().is_some_and(|u| u.pid == pid) {
                self.upgrade_failed(&format!("the new master ended: {how}"));
                continue;
            }
            let Some(i) = self.workers.iter().position(|w| w.pid == pid) else {
                continue;
            };
            let w = self.workers.remove(i);
            self.retire_slot(w.slot);
            let uptime = w.started.elapsed();
            if w.leaving.is_some() {
                // Asked to leave (stop, reload, scale down) or retiring.
                info!(self.log, "worker exited"; "worker" => pid, "status" => how);
                continue;
            }
            error!(self.log, "worker died"; "worker" => pid, "status" => &how,
                   "uptime_s" => uptime.as_secs_f64());
            self.worker_died(code, how, uptime);
        }
    }

    fn worker_died(&mut self, code: Option<i32>, how: String, uptime: Duration) {
        if self.stop.is_some() {
            return;
        }
        self.restarts += 1;
        if code == Some(BOOT_ERROR) {
            self.halt = Some(format!("a worker could not start serving ({how})"));
            self.begin_stop(false);
            return;
        }
        match self.restart.died(Instant::now(), uptime) {
            Verdict::CrashLoop { deaths } => {
                self.halt = Some(format!(
                    "crash loop: {deaths} worker deaths within {:?} (limit {}); last worker: {how}",
                    self.cfg.restart_window, self.cfg.restart_burst
                ));
                self.begin_stop(false);
            }
            Verdict::RestartAt(_) if !self.restart.delay().is_zero() => {
                warn!(self.log, "restarting after backoff";
                      "delay_ms" => self.restart.delay().as_millis() as u64);
            }
            Verdict::RestartAt(_) => {}
        }
    }

    /// Kills workers that stopped sending heartbeats, and leaving workers
    /// that overran the graceful timeout. The whole process group goes.
    fn murder_workers(&mut self) {
        let now = Instant::now();
        let grace = self.cfg.graceful_timeout + Duration::from_secs(1);
        for w in &mut self.workers {
            if let Some(since) = w.leaving {
                if now.duration_since(since) > grace {
                    warn!(self.log, "worker overran the graceful timeout; killing"; "worker" => w.pid);
                    signal_group(w.pid, Signal::SIGKILL);
                }
                continue;
            }
            if let Some(t) = self.cfg.worker_timeout {
                if now.duration_since(w.last_beat) > t {
                    error!(self.log, "worker timed out; killing"; "worker" => w.pid,
                           "silent_s" => now.duration_since(w.last_beat).as_secs_f64());
                    signal_group(w.pid, Signal::SIGKILL);
                    w.last_beat = now; // one kill per timeout; reap replaces it
                }
            }
        }
        if let Some(Stop::Graceful { deadline }) = self.stop {
            if now >= deadline {
                for w in &self.workers {
                    signal_group(w.pid, Signal::SIGKILL);
                }
            }
        }
    }

    /// HUP: a new generation of workers starts on the same socket; the old
    /// one is stopped gracefully once the new one serves.
    fn reload(&mut self) {
        if self.stop.is_some() {
            return;
        }
        self.generation += 1;
        self.notifier.reloading();
        self.ready_notified = false;
        info!(self.log, "reload"; "generation" => self.generation, "workers" => self.target);
    }

    /// A gone worker's counts join the totals; its slot is free again.
    fn retire_slot(&mut self, slot: usize) {
        let c = self.slots[slot].read();
        self.retired.add_totals(&c);
        self.slots[slot].reset();
        self.free_slots.push(slot);
    }

    /// Answers status and metrics requests, without blocking.
    fn serve_control(&mut self) {
        if !self.pending.is_empty() {
            let log = &self.log;
            let responders = &mut self.responders;
            self.pending.retain(|e| match e.bind(false) {
                Ok(r) => {
                    info!(log, "status endpoint taken over"; "endpoint" => e.to_string());
                    responders.push(r);
                    false
                }
                Err(_) => true,
            });
        }
        let mut responders = std::mem::take(&mut self.responders);
        for r in &mut responders {
            r.serve(|| self.status());
        }
        self.responders = responders;
    }

    /// The scoreboard: every worker's counters and memory, and totals over
    /// the master's life.
    fn status(&self) -> Status {
        let mut totals = self.retired;
        let workers = self
            .workers
            .iter()
            .map(|w| {
                let counters = self.slots[w.slot].read();
                totals.add_totals(&counters);
                totals.in_flight += counters.in_flight;
                totals.children += counters.children;
                let (rss_kib, pss_kib) = status::memory_of_tree(w.pid);
                WorkerStatus {
                    pid: w.pid,
                    generation: w.generation,
                    state: match (w.ready, w.leaving) {
                        (_, Some(_)) => "draining",
                        (true, None) => "serving",
                        (false, None) => "starting",
                    },
                    uptime: w.started.elapsed(),
                    counters,
                    threads: status::threads_of(w.pid),
                    rss_kib,
                    pss_kib,
                }
            })
            .collect();
        let listen_queue = match &self.listener {
            Some(l) if l.transport == crate::Transport::Tcp => {
                crate::sys::tcp_listen_queue(l.socket.as_raw_fd()).ok()
            }
            _ => None,
        };
        Status {
            pid: std::process::id(),
            uptime: self.started.elapsed(),
            transport: self.cfg.transport.to_string(),
            addr: self.address(),
            policy: self.cfg.policy.name().to_string(),
            service: self.cfg.name.clone(),
            workers,
            totals,
            worker_restarts: self.restarts,
            listen_queue,
            master: Some(status::MasterStatus::of(std::process::id() as i32)),
        }
    }

    /// The STATUS= line: what serves, with which policy.
    fn status_line(&self) -> String {
        let ready = self.current().filter(|w| w.ready).count();
        let state = match (&self.stop, self.winched, &self.upgrade) {
            (Some(_), _, _) => "stopping",
            (None, true, _) => "workers parked (WINCH); HUP resumes",
            (None, false, Some(_)) => "upgrading",
            (None, false, None) if ready >= self.target => "serving",
            _ => "starting",
        };
        let mut totals = self.retired;
        for w in &self.workers {
            totals.add_totals(&self.slots[w.slot].read());
        }
        format!(
            "{state}: {ready}/{} workers ready, policy {}, service {}, generation {}; \
             {} requests, {} connections, {} errors",
            self.target,
            self.cfg.policy.name(),
            self.cfg.name,
            self.generation,
            totals.requests,
            totals.connections,
            totals.errors
        )
    }

    /// USR1: reopen the log file here, and have every worker reopen its own.
    fn reopen_logs(&mut self) {
        match crate::log::reopen() {
            Ok(Some(path)) => info!(self.log, "log file reopened"; "path" => %path.display()),
            Ok(None) => info!(self.log, "logging to stderr: no log file to reopen"),
            Err(e) => error!(self.log, "cannot reopen the log file"; "error" => %e),
        }
        for w in self.workers.iter().filter(|w| w.leaving.is_none()) {
            let _ = kill(Pid::from_raw(w.pid), Signal::SIGUSR1);
        }
    }

    /// USR2: start the binary again on our socket (see `upgrade`).
    fn begin_upgrade(&mut self) {
        if self.upgrade.is_some() || self.handed_over || self.stop.is_some() {
            warn!(self.log, "signal ignored"; "signal" => "USR2",
                  "reason" => "an upgrade or a stop is in progress");
            return;
        }
        let (Some(how), Some(listener)) = (&self.invocation, &self.listener) else {
            warn!(
                self.log,
                "cannot upgrade: no binary path or no socket held \
                             (--reuse-port)"
            );
            return;
        };
        if let Some(pf) = &mut self.pid_file {
            let mut old = pf.path().as_os_str().to_owned();
            old.push(".oldbin");
            if let Err(e) = pf.rename(old.into()) {
                error!(self.log, "cannot upgrade"; "error" => %e);
                return;
            }
        }
        match Upgrade::start(&self.single, how, listener) {
            Ok(u) => {
                info!(self.log, "upgrade: new master started"; "new_master" => u.pid,
                      "binary" => %how.exe().display());
                self.upgrade = Some(u);
            }
            Err(e) => {
                error!(self.log, "cannot upgrade"; "error" => %e);
                self.restore_pid_file();
            }
        }
    }

    /// Reads the new master's word, and gives up on one that is not
    /// serving within the graceful timeout.
    fn check_upgrade(&mut self) {
        let Some(u) = &mut self.upgrade else {
            return;
        };
        match u.progress() {
            Progress::Ready => {
                let pid = u.pid;
                self.upgrade = None;
                self.handed_over = true;
                info!(self.log, "upgrade complete: the new master serves; stopping";
                      "new_master" => pid);
                self.begin_stop(false);
            }
            Progress::Gone => self.upgrade_failed("the new master exited before serving"),
            Progress::Waiting if u.started.elapsed() > self.cfg.graceful_timeout => {
                let pid = u.pid;
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                self.upgrade_failed("the new master was not serving within --graceful-timeout");
            }
            Progress::Waiting => {}
        }
    }

    fn upgrade_failed(&mut self, why: &str) {
        if self.upgrade.take().is_none() {
            return;
        }
        self.restore_pid_file();
        error!(self.log, "upgrade failed; still serving"; "reason" => why);
    }

    /// Gives the pid file back its name after an upgrade that did not happen.
    fn restore_pid_file(&mut self) {
        let Some(pf) = &mut self.pid_file else {
            return;
        };
        let path = pf.path().to_path_buf();
        let name = path.as_os_str().to_string_lossy();
        if let Some(orig) = name.strip_suffix(".oldbin") {
            if let Err(e) = pf.rename(orig.into()) {
                error!(self.log, "cannot restore the pid file"; "error" => %e);
            }
        }
    }

    /// WINCH, as nginx: the workers stop gracefully; the master keeps its
    /// socket (clients wait in the backlog) until HUP brings workers back.
    fn winch(&mut self) {
        if self.stop.is_some() || self.winched {
            return;
        }
        self.winched = true;
        let now = Instant::now();
        info!(self.log, "workers stopping; HUP brings them back"; "workers" => self.workers.len());
        for w in self.workers.iter_mut().filter(|w| w.leaving.is_none()) {
            w.leaving = Some(now);
            terminate(w.pid);
        }
    }

    /// HUP after WINCH: a new generation of workers starts.
    fn resume(&mut self) {
        self.winched = false;
        self.generation += 1;
        info!(self.log, "workers resuming"; "generation" => self.generation, "workers" => self.target);
    }

    fn finish_reload(&mut self) {
        let g = self.generation;
        let new_ready = self.current().filter(|w| w.ready).count() >= self.target;
        if !new_ready {
            return;
        }
        let now = Instant::now();
        for w in self
            .workers
            .iter_mut()
            .filter(|w| w.generation < g && w.leaving.is_none())
        {
            info!(self.log, "stopping worker"; "worker" => w.pid, "reason" => "reload");
            w.leaving = Some(now);
            terminate(w.pid);
        }
    }

    fn begin_stop(&mut self, fast: bool) {
        let now = Instant::now();
        match (self.stop, fast) {
            (Some(Stop::Fast), _) | (Some(Stop::Graceful { .. }), false) => return,
            _ => {}
        }
        if let Some(u) = self.upgrade.take() {
            // Stopping mid-upgrade: the half-started master goes too.
            let _ = kill(Pid::from_raw(u.pid), Signal::SIGKILL);
            self.restore_pid_file();
        }
        if !self.handed_over {
            self.notifier.stopping();
        }
        if fast {
            info!(self.log, "stopping"; "mode" => "fast", "workers" => self.workers.len());
            self.stop = Some(Stop::Fast);
            for w in &mut self.workers {
                w.leaving.get_or_insert(now);
                signal_group(w.pid, Signal::SIGKILL);
            }
        } else {
            let deadline = now + self.cfg.graceful_timeout + Duration::from_secs(1);
            info!(self.log, "stopping"; "mode" => "graceful", "workers" => self.workers.len(),
                  "graceful_timeout_s" => self.cfg.graceful_timeout.as_secs_f64());
            self.stop = Some(Stop::Graceful { deadline });
            for w in &mut self.workers {
                w.leaving.get_or_insert(now);
                terminate(w.pid);
            }
        }
    }
}

/// Sends `sig` to a worker's process group (its pid), or to the worker
/// alone if the group does not exist yet.
fn signal_group(pid: i32, sig: Signal) {
    if kill(Pid::from_raw(-pid), sig).is_err() {
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

/// Asks a worker to stop gracefully. Only the worker: it stops its own
/// fork-policy children gracefully in turn.
fn terminate(pid: i32) {
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
}

/// A status endpoint the master serves.
#[derive(Debug, Clone)]
enum Endpoint {
    Control(std::path::PathBuf),
    #[cfg(feature = "metrics")]
    Metrics(std::net::SocketAddr),
}

impl Endpoint {
    fn configured(cfg: &Supervisor) -> Vec<Endpoint> {
        #[allow(unused_mut)]
        let mut v: Vec<Endpoint> = cfg.control.iter().cloned().map(Endpoint::Control).collect();
        #[cfg(feature = "metrics")]
        v.extend(cfg.metrics.map(Endpoint::Metrics));
        v
    }

    /// Binds it; a control socket `beside` the old master's in an upgrade.
    fn bind(&self, beside: bool) -> Result<Responder> {
        match self {
            Endpoint::Control(path) if beside => Responder::bind_beside(path),
            Endpoint::Control(path) => Responder::bind(path),
            #[cfg(feature = "metrics")]
            Endpoint::Metrics(addr) => Responder::bind_metrics(*addr),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Control(path) => write!(f, "control {}", path.display()),
            #[cfg(feature = "metrics")]
            Endpoint::Metrics(addr) => write!(f, "metrics {addr}"),
        }
    }
}
