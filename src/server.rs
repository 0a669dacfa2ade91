//! The server: Python's `BaseServer` lifecycle over any transport and policy.
//!
//! For the caller: [`Server::serve_forever`], [`ShutdownHandle::shutdown`],
//! [`Server::handle_request`], [`Server::server_close`],
//! [`Server::close_gracefully`]. May be overridden (through [`Hooks`]):
//! `verify_request`, `handle_timeout`, `service_actions`, `handle_error`.
//!
//! The request chain, as in Python:
//! `handle_request` -> `get_request` -> `verify_request` -> `process_request`
//! (the policy) -> `finish_request` (setup/handle/finish) -> `shutdown_request`.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use slog::{debug, error, info, o, warn, Logger};

use crate::addr::{Address, Transport};
use crate::control::{Control, ShutdownHandle};
use crate::dispatch::Dispatch;
use crate::error::{Error, Result};
use crate::handler::HandlerFactory;
use crate::hooks::{DefaultHooks, Hooks};
use crate::park::Parked;
use crate::policy::{check_single_threaded, Policy, Runner};
use crate::request::ServerContext;
use crate::socket::{BindOptions, Listener};
use crate::stats::{Counters, Slot};
use crate::throttle::Throttle;
use crate::transport::{get_request, Incoming, NoRequest};

/// Builds a [`Server`]: where to listen, how to run requests, and hooks.
pub struct ServerBuilder {
    transport: Transport,
    address: Option<Address>,
    listener: Option<Listener>,
    bind: BindOptions,
    policy: Policy,
    timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    request_timeout: Option<Duration>,
    /// Hand stream connections to the policy only once they speak.
    wait_for_data: Option<Duration>,
    tcp_nodelay: bool,
    max_packet_size: usize,
    output_limit: usize,
    hooks: Arc<dyn Hooks>,
    /// Set by the supervisor's worker: wraps whatever hooks the program
    /// chose with the worker's own (request counting, heartbeats).
    layer: Option<HookLayer>,
    /// Set by the supervisor's worker: the counters slot its master reads.
    slot: Option<&'static Slot>,
    /// Serve the status scoreboard here (a server without a master).
    status_socket: Option<std::path::PathBuf>,
    /// Where to serve Prometheus metrics, as the status socket is served.
    #[cfg(feature = "metrics")]
    metrics: Option<std::net::SocketAddr>,
    /// What is served, for the scoreboard.
    name: String,
    /// One line per connection or datagram.
    access: Option<Arc<crate::access::AccessLog>>,
    log: Logger,
}

/// Wraps a server's hooks at build time (see `ServerBuilder::layer`).
pub(crate) type HookLayer = Box<dyn FnOnce(Arc<dyn Hooks>) -> Arc<dyn Hooks>>;

impl ServerBuilder {
    /// A server that will bind `address` itself.
    pub fn new(transport: Transport, address: Address) -> ServerBuilder {
        ServerBuilder {
            transport,
            address: Some(address),
            listener: None,
            bind: BindOptions::default(),
            policy: Policy::Sync,
            timeout: None,
            idle_timeout: None,
            request_timeout: None,
            wait_for_data: None,
            tcp_nodelay: true,
            max_packet_size: 8192,
            output_limit: crate::policy::OUTPUT_LIMIT,
            hooks: Arc::new(DefaultHooks),
            layer: None,
            slot: None,
            status_socket: None,
            #[cfg(feature = "metrics")]
            metrics: None,
            name: String::from("server"),
            access: None,
            log: Logger::root(slog::Discard, o!()),
        }
    }

    /// A server on a socket that is already bound (inherited from a
    /// supervisor or from systemd).
    pub fn from_listener(listener: Listener) -> ServerBuilder {
        let mut b = ServerBuilder::new(listener.transport, listener.address.clone());
        b.address = None;
        b.listener = Some(listener);
        b
    }

    /// The concurrency policy (default `Sync`).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Socket options used when binding.
    pub fn bind_options(mut self, opts: BindOptions) -> Self {
        self.bind = opts;
        self
    }

    /// Python's `timeout`: how long `handle_request` waits (None: forever).
    pub fn timeout(mut self, t: Option<Duration>) -> Self {
        self.timeout = t;
        self
    }

    /// Read timeout for each stream connection (None: no limit).
    pub fn idle_timeout(mut self, t: Option<Duration>) -> Self {
        self.idle_timeout = t;
        self
    }

    /// The time a client may take to deliver one whole request line once
    /// its first byte arrived (None, the default: no deadline). The idle
    /// timeout restarts at every byte, so a client trickling one byte per
    /// idle period would otherwise hold a fork child, a thread or a pool
    /// slot for ever; past this deadline the connection is closed, logged
    /// (`request deadline passed`) and recorded as a `timeout` in the access
    /// log. It bounds [`StreamRequest::read_line`](crate::StreamRequest::read_line),
    /// so the line services and handlers that read lines get it; a handler
    /// reading raw chunks takes each read as a whole request. Under the
    /// event policy the built-in line services and chat check it as each
    /// piece arrives, and the idle timeout bounds the silence between
    /// pieces.
    pub fn request_timeout(mut self, t: Option<Duration>) -> Self {
        self.request_timeout = t;
        self
    }

    /// For protocols whose client speaks first: a stream connection goes to
    /// the policy (a fork child, a thread, a pool slot, the sync server's
    /// turn) only once it has bytes to read, and is closed if it stays
    /// silent for `patience`. Until then it waits in the serving loop's
    /// poll set at the cost of a socket, so connections that never send
    /// cannot lock other clients out. TCP listeners also get
    /// `TCP_DEFER_ACCEPT` with the same patience. Off by default (a
    /// server that greets its clients must leave it off); no effect on
    /// datagram transports.
    pub fn wait_for_data(mut self, patience: Option<Duration>) -> Self {
        self.wait_for_data = patience;
        self
    }

    /// Whether TCP connections get TCP_NODELAY (default true).
    pub fn tcp_nodelay(mut self, on: bool) -> Self {
        self.tcp_nodelay = on;
        self
    }

    /// Largest datagram accepted (default 8192, as Python's).
    pub fn max_packet_size(mut self, n: usize) -> Self {
        self.max_packet_size = n.max(1);
        self
    }

    /// Event policy: the most reply bytes kept for a client that does not
    /// read them (default 1 MiB); past it the connection is closed.
    pub fn output_limit(mut self, bytes: usize) -> Self {
        self.output_limit = bytes.max(1);
        self
    }

    /// The overridable hooks.
    pub fn hooks(mut self, hooks: impl Hooks) -> Self {
        self.hooks = Arc::new(hooks);
        self
    }

    /// Where the server logs.
    pub fn logger(mut self, log: Logger) -> Self {
        self.log = log;
        self
    }

    /// Wraps the hooks chosen by the program, when the server is built.
    pub(crate) fn layer(mut self, layer: HookLayer) -> Self {
        self.layer = Some(layer);
        self
    }

    /// Serves the status scoreboard (what `sockserv status` reads: this
    /// process as the one worker, its counters, memory and listen queue)
    /// on a Unix socket at `path`, mode 0600, removed when the server goes.
    /// It is answered from the serving loop, between requests, within the
    /// `poll_interval` given to `serve_forever`. Under the supervisor, set
    /// it on the [`Supervisor`](crate::Supervisor) instead.
    pub fn status_socket(mut self, path: Option<std::path::PathBuf>) -> Self {
        self.status_socket = path;
        self
    }

    /// Serves Prometheus metrics over HTTP on `addr` from the serving loop,
    /// as [`status_socket`](Self::status_socket) does the scoreboard (for a
    /// server without a supervisor; a supervised one's master serves them,
    /// see [`Supervisor::metrics`](crate::Supervisor::metrics)).
    #[cfg(feature = "metrics")]
    pub fn metrics(mut self, addr: Option<std::net::SocketAddr>) -> Self {
        self.metrics = addr;
        self
    }

    /// Writes one line per connection or datagram to `log` (see
    /// [`crate::access`]); off by default.
    pub fn access_log(mut self, log: Option<crate::access::AccessLog>) -> Self {
        self.access = log.map(Arc::new);
        self
    }

    /// What is served, as the scoreboard names it (default `server`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Counts into `slot` (a supervised worker's) instead of a slot of its own.
    pub(crate) fn counters_slot(mut self, slot: &'static Slot) -> Self {
        self.slot = Some(slot);
        self
    }

    /// Binds (unless a listener was given), ignores SIGPIPE, and starts the
    /// policy (a pool starts its threads here).
    /// Fails when `factory` cannot serve the transport (a stream-only
    /// handler on UDP, say).
    pub fn build(self, factory: impl HandlerFactory) -> Result<Server> {
        if !factory.serves(self.transport) {
            return Err(Error::Config(format!(
                "this handler cannot serve transport {}: a stream handler needs tcp or unix, \
                 a datagram handler udp or unix-dgram",
                self.transport
            )));
        }
        if matches!(self.policy, Policy::Event { .. }) && factory.message_factory().is_none() {
            return Err(Error::Config(
                "this handler cannot run under the event policy: it blocks in its reads \
                 (setup/handle/finish); serve a MessageFactory (see handler::messages)"
                    .into(),
            ));
        }
        crate::sys::ignore_sigpipe().map_err(|e| Error::os("ignore SIGPIPE", e))?;
        let listener = match (self.listener, &self.address) {
            (Some(l), _) => l,
            (None, Some(addr)) => Listener::bind(self.transport, addr, &self.bind)?,
            (None, None) => return Err(Error::Config("no address to listen on".into())),
        };
        let stats = match self.slot {
            Some(slot) => slot,
            None => Slot::own().map_err(|e| Error::os("map the counters", e))?,
        };
        let mut ctx = ServerContext::new(listener.transport, listener.address.clone(), stats);
        ctx.idle_timeout = self.idle_timeout;
        ctx.request_timeout = self.request_timeout;
        ctx.tcp_nodelay = self.tcp_nodelay;
        ctx.max_packet_size = self.max_packet_size;
        let control = Arc::new(Control::new().map_err(|e| Error::os("socketpair", e))?);
        let mut hooks = self.hooks;
        #[allow(unused_mut)]
        let mut responders = Vec::new();
        if let Some(path) = &self.status_socket {
            responders.push(crate::supervisor::control::Responder::bind(path)?);
        }
        #[cfg(feature = "metrics")]
        if let Some(addr) = self.metrics {
            let r = crate::supervisor::control::Responder::bind_metrics(addr)?;
            if let Some(addr) = r.local_addr() {
                slog::info!(self.log, "metrics"; "addr" => %addr);
            }
            responders.push(r);
        }
        if !responders.is_empty() {
            use crate::supervisor::control::{Standalone, StandaloneInfo};
            let info = StandaloneInfo {
                transport: listener.transport,
                addr: listener.address.to_string(),
                policy: self.policy.name().to_string(),
                service: self.name.clone(),
                tcp_listener: (listener.transport == Transport::Tcp)
                    .then(|| listener.socket.as_raw_fd()),
            };
            hooks = Arc::new(Standalone::new(hooks, responders, stats, info));
        }
        if let Some(layer) = self.layer {
            hooks = layer(hooks);
        }
        let dispatch = Dispatch {
            factory: Arc::new(factory),
            hooks,
            ctx: Arc::new(ctx),
            log: self.log.clone(),
            access: self.access,
        };
        let fd = listener.socket.as_raw_fd();
        let parked = match self.wait_for_data {
            Some(patience) if listener.transport.is_stream() => {
                if listener.transport == Transport::Tcp {
                    let secs = patience.as_secs().max(1).min(u64::from(u32::MAX)) as u32;
                    crate::sys::set_tcp_defer_accept(fd, secs)
                        .map_err(|e| Error::socket("set TCP_DEFER_ACCEPT", &listener.address, e))?;
                }
                // Event loops accept and wait for bytes themselves.
                (!matches!(self.policy, Policy::Event { .. })).then(|| Parked::new(patience))
            }
            _ => None,
        };
        let runner = Runner::new(
            self.policy,
            &dispatch,
            &control,
            &listener,
            self.output_limit,
        )?;
        Ok(Server {
            listener: Some(listener),
            policy: self.policy,
            runner,
            dispatch,
            control,
            timeout: self.timeout,
            backoff: Backoff::default(),
            warnings: Warnings::default(),
            parked,
            log: self.log,
        })
    }
}

/// Accept back-off after EMFILE/ENFILE/ENOBUFS/ENOMEM: logged once per
/// episode, doubling from 10 ms up to 1 s.
#[derive(Debug, Default)]
struct Backoff {
    until: Option<Instant>,
    delay: Duration,
    failures: u64,
}

/// What one [`Server::handle_request`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// A request was taken and run under the policy (or refused by
    /// `verify_request`).
    Served,
    /// None came within the timeout; `handle_timeout` was called.
    TimedOut,
    /// A stop was requested; nothing was taken.
    Stopped,
}

/// Rate-limited warnings (see `throttle`).
#[derive(Debug, Default)]
struct Warnings {
    truncated: Throttle,
    exhausted: Throttle,
    full: Throttle,
    was_full: bool,
}

/// A socket server. See the module docs for the lifecycle.
pub struct Server {
    listener: Option<Listener>,
    policy: Policy,
    runner: Runner,
    dispatch: Dispatch,
    control: Arc<Control>,
    timeout: Option<Duration>,
    backoff: Backoff,
    warnings: Warnings,
    /// Connections waiting for their first bytes (`wait_for_data`).
    parked: Option<Parked>,
    log: Logger,
}

impl Server {
    /// The bound address (port 0 resolved to the real port).
    pub fn address(&self) -> &Address {
        &self.dispatch.ctx.address
    }

    /// The transport served.
    pub fn transport(&self) -> Transport {
        self.dispatch.ctx.transport
    }

    /// The policy requests run under.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The listening socket's descriptor (Python's `fileno()`), if open.
    pub fn fileno(&self) -> Option<RawFd> {
        self.listener.as_ref().map(|l| l.socket.as_raw_fd())
    }

    /// A handle that stops `serve_forever` from another thread or a signal.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            control: Arc::clone(&self.control),
        }
    }

    /// Settings and counters shared with handlers.
    pub fn context(&self) -> &Arc<ServerContext> {
        &self.dispatch.ctx
    }

    /// Datagrams dropped because they exceeded `max_packet_size`.
    pub fn truncated_datagrams(&self) -> u64 {
        self.counters().truncated_datagrams
    }

    /// This server's counters (see [`crate::stats`]), its fork children's
    /// and threads' included.
    pub fn counters(&self) -> Counters {
        self.dispatch.ctx.stats.read()
    }

    /// Requests in progress under the policy (children, threads, jobs).
    pub fn active_requests(&self) -> usize {
        self.runner.active()
    }

    /// Handles requests until [`ShutdownHandle::shutdown`] (or a signal
    /// registered with [`ShutdownHandle::stop_on_signal`]) stops it. Wakes
    /// at once on a stop; `poll_interval` only bounds how long it sleeps
    /// between `service_actions` calls.
    pub fn serve_forever(&mut self, poll_interval: Duration) -> Result<()> {
        if matches!(self.policy, Policy::Fork { .. }) {
            check_single_threaded()?; // threads may have started since build
        }
        self.runner.begin()?;
        self.control.begin();
        while !self.control.stop_requested() {
            let ready = self.wait(Some(poll_interval));
            if self.control.stop_requested() {
                break;
            }
            if ready {
                self.take_ready_requests();
            }
            self.service_actions();
        }
        self.control.end();
        Ok(())
    }

    /// Handles one request, waiting up to the builder's `timeout` for it;
    /// calls `handle_timeout` when none arrives in time. Returns at once,
    /// with [`Handled::Stopped`], once a stop was requested (by
    /// [`ShutdownHandle`] or a signal registered with it): a loop of
    /// `handle_request` calls ends on `Stopped`, as `serve_forever` does.
    /// Under [`Policy::Event`] the loops take requests themselves: use
    /// `serve_forever`; this returns an error.
    pub fn handle_request(&mut self) -> Result<Handled> {
        if self.runner.owns_listener() {
            return Err(Error::Config(
                "handle_request serves one request; under the event policy the loops take \
                 requests: use serve_forever"
                    .into(),
            ));
        }
        self.runner.begin()?;
        let deadline = self.timeout.map(|t| Instant::now() + t);
        loop {
            if self.control.stop_requested() {
                return Ok(Handled::Stopped);
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                self.handle_timeout();
                return Ok(Handled::TimedOut);
            }
            let ready = self.wait(left);
            if ready {
                // Nothing pending after all (another process took it): wait on.
                if self.handle_request_noblock() {
                    return Ok(Handled::Served);
                }
                continue;
            }
            self.runner.reap(&self.dispatch);
        }
    }

    /// Python's `service_actions`: reaps children (fork policy) and
    /// finished threads, then calls the hook. Called by `serve_forever`.
    /// Under [`Policy::Event`] the hook is skipped while a loop is stalled
    /// in a handler, as a serving loop blocked in a handler would not call
    /// it: the supervisor's heartbeat, sent from the hook, stops.
    fn service_actions(&mut self) {
        self.runner.reap(&self.dispatch);
        if !self.runner.stalled() {
            self.dispatch.hooks.service_actions();
        }
    }

    /// Python's `handle_timeout`: reaps, then calls the hook.
    fn handle_timeout(&mut self) {
        self.runner.reap(&self.dispatch);
        self.dispatch.hooks.handle_timeout();
    }

    /// Waits until the listener is readable (true), or a wake-up or the
    /// limit (false). The listener is not watched while the policy is full
    /// or accepting is backing off, so clients wait in the kernel backlog.
    fn wait(&mut self, limit: Option<Duration>) -> bool {
        let mut limit = limit;
        let now = Instant::now();
        let backing_off = match self.backoff.until {
            Some(until) if until > now => {
                let left = until - now;
                limit = Some(limit.map_or(left, |l| l.min(left)));
                true
            }
            _ => false,
        };
        let full = !self.runner.can_accept();
        // Written only on a change: under fork, every page the parent
        // writes between forks is copied once per child.
        if full != self.warnings.was_full {
            self.warnings.was_full = full;
            if full {
                self.saturated();
            }
        }
        let watch =
            !backing_off && !full && self.listener.is_some() && !self.runner.owns_listener();
        if self.parked.as_ref().is_some_and(|p| !p.is_empty()) {
            return self.wait_with_parked(limit, watch, full);
        }
        let ms = limit.map_or(-1, |l| l.as_millis().min(i32::MAX as u128) as i32);
        let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::NONE);
        let fired = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
        // The wake-up, the policy's events (a child's exit), the listener.
        // (An array, not a Vec: a forking server's loop allocates nothing,
        // as each heap page it writes is copied once per child.)
        let wake = PollFd::new(self.control.wake_source(), PollFlags::POLLIN);
        let mut fds = [wake, wake, wake];
        let mut n = 1;
        if let Some(fd) = self.runner.event_fd() {
            fds[n] = PollFd::new(fd, PollFlags::POLLIN);
            n += 1;
        }
        let listen_at = n;
        if let (Some(l), true) = (&self.listener, watch) {
            fds[n] = PollFd::new(l.socket.as_fd(), PollFlags::POLLIN);
            n += 1;
        }
        let _ = poll(&mut fds[..n], timeout);
        let woken = fired(&fds[0]);
        let ready = listen_at < n && fired(&fds[listen_at]);
        if woken {
            self.control.drain();
        }
        ready
    }

    /// `wait` while silent connections are parked: they join the poll set
    /// (unless the policy is full), their deadlines bound the sleep; those
    /// that spoke go to the policy, those past their deadline are closed.
    fn wait_with_parked(&mut self, limit: Option<Duration>, watch: bool, full: bool) -> bool {
        let parked = self.parked.as_ref().expect("parked connections");
        let now = Instant::now();
        let until = parked
            .next_deadline()
            .map(|d| d.saturating_duration_since(now));
        let limit = match (limit, until) {
            (Some(l), Some(u)) => Some(l.min(u)),
            (l, u) => l.or(u),
        };
        let ms = limit.map_or(-1, |l| l.as_millis().min(i32::MAX as u128) as i32);
        let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::NONE);
        let mut fds = vec![PollFd::new(self.control.wake_source(), PollFlags::POLLIN)];
        if let Some(fd) = self.runner.event_fd() {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        let listen_at = fds.len();
        if let (Some(l), true) = (&self.listener, watch) {
            fds.push(PollFd::new(l.socket.as_fd(), PollFlags::POLLIN));
        }
        let n = fds.len();
        if !full {
            parked.poll_fds(&mut fds);
        }
        let _ = poll(&mut fds, timeout);
        let flags: Vec<bool> = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if flags[0] {
            self.control.drain();
        }
        let ready = listen_at < n && flags[listen_at];
        let parked = self.parked.as_mut().expect("parked connections");
        let (spoken, expired) = parked.sort_out(&flags[n..], Instant::now());
        let patience = parked.patience;
        for incoming in expired {
            self.close_silent(incoming, patience);
        }
        for incoming in spoken {
            self.process(incoming);
        }
        ready
    }

    /// Closes a connection that never spoke (past its patience, or evicted
    /// from a full table) after it `waited`.
    fn close_silent(&mut self, incoming: Incoming, waited: Duration) {
        let peer = incoming.peer().clone();
        debug!(self.log, "closed a connection that sent nothing"; "peer" => %peer);
        if let Some(access) = &self.dispatch.access {
            use crate::access::Outcome;
            access.record(&peer, Outcome::Timeout, waited, 0, 0);
        }
    }

    /// After one wake-up, takes up to ACCEPT_BATCH pending requests, so a
    /// busy server pays one poll per batch rather than per request. Stops
    /// early when the policy is full, accepting backs off, or a stop (such
    /// as a worker retiring) was requested.
    fn take_ready_requests(&mut self) {
        const ACCEPT_BATCH: usize = 16;
        for _ in 0..ACCEPT_BATCH {
            if !self.handle_request_noblock() {
                return;
            }
            let backing_off = self.backoff.until.is_some_and(|t| t > Instant::now());
            if self.control.stop_requested() || !self.runner.can_accept() || backing_off {
                return;
            }
        }
    }

    /// get_request -> verify_request -> process_request, without blocking.
    /// Returns false when nothing was pending.
    fn handle_request_noblock(&mut self) -> bool {
        let Some(listener) = &self.listener else {
            return false;
        };
        match get_request(listener, self.dispatch.ctx.max_packet_size) {
            Ok(incoming) => {
                Slot::add(&self.dispatch.ctx.stats.connections);
                self.accept_recovered();
                if let Some(parked) = &mut self.parked {
                    if !Parked::has_spoken(&incoming) {
                        if let Some((evicted, waited)) = parked.park(incoming) {
                            self.close_silent(evicted, waited);
                        }
                        return true;
                    }
                }
                self.process(incoming);
            }
            Err(NoRequest::Spurious) => return false,
            Err(NoRequest::Truncated { peer, len }) => {
                Slot::add(&self.dispatch.ctx.stats.truncated);
                if let Some(suppressed) = self.warnings.truncated.event(Instant::now()) {
                    warn!(self.log, "datagram too large; dropped";
                          "peer" => %peer, "len" => len, "raise" => "--max-packet-size",
                          "max_packet_size" => self.dispatch.ctx.max_packet_size,
                          "suppressed" => suppressed);
                }
            }
            Err(NoRequest::Exhausted(e)) | Err(NoRequest::Failed(e)) => self.accept_failed(e),
        }
        true
    }

    fn process(&mut self, incoming: Incoming) {
        let peer = incoming.peer().clone();
        if !self.dispatch.hooks.verify_request(&peer) {
            Slot::add(&self.dispatch.ctx.stats.rejected);
            debug!(self.log, "request refused by verify_request"; "peer" => %peer);
            if let Some(access) = &self.dispatch.access {
                use crate::access::Outcome;
                access.record(&peer, Outcome::Rejected, Duration::ZERO, 0, 0);
            }
            return; // dropping `incoming` closes the connection
        }
        debug!(self.log, "request"; "peer" => %peer);
        if let Err(e) = self.runner.process_request(incoming, &self.dispatch) {
            error!(self.log, "could not start request"; "peer" => %peer, "error" => %e);
            // Out of processes or threads: the same medicine as EMFILE.
            self.accept_failed(std::io::Error::other(e.to_string()));
        }
    }

    /// The policy just filled up (fork at max_children, pool threads and
    /// queue busy): clients wait in the backlog. Warned at most every 10 s.
    fn saturated(&mut self) {
        let Some(suppressed) = self.warnings.full.event(Instant::now()) else {
            return;
        };
        let flag = match self.policy {
            Policy::Fork { .. } => "--max-children",
            Policy::Pool { .. } => "--threads or --queue",
            Policy::Thread { .. } => "--max-threads",
            _ => "the policy's bound",
        };
        warn!(self.log, "saturated: new clients wait in the listen backlog";
              "policy" => self.policy.name(), "raise" => flag,
              "in_flight" => self.runner.active(), "times_since_last_warning" => suppressed);
    }

    fn accept_failed(&mut self, e: std::io::Error) {
        let b = &mut self.backoff;
        if b.failures == 0 {
            if let Some(suppressed) = self.warnings.exhausted.event(Instant::now()) {
                error!(self.log, "cannot take requests; backing off";
                       "addr" => %self.dispatch.ctx.address, "error" => %e,
                       "raise" => "the open-files limit (ulimit -n, LimitNOFILE=)",
                       "suppressed" => suppressed);
            }
        }
        b.failures += 1;
        b.delay = (b.delay * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        b.until = Some(Instant::now() + b.delay);
    }

    fn accept_recovered(&mut self) {
        if self.backoff.failures > 0 {
            info!(self.log, "taking requests again"; "failures" => self.backoff.failures);
            self.backoff = Backoff::default();
        }
    }

    /// Python's `server_close`: closes the listening socket (removing a Unix
    /// socket file it created) and waits for requests as the policy's
    /// `block_on_close` says. Called by drop too.
    pub fn server_close(&mut self) {
        self.listener = None;
        self.runner.close(false, None, &self.dispatch);
    }

    /// Stops accepting, tells handlers to finish the request in hand (their
    /// blocked reads see end-of-file; fork children get SIGTERM), and waits
    /// up to `limit` for them; children still running then are killed.
    /// Returns the number of requests that were still in progress at the
    /// start.
    pub fn close_gracefully(&mut self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        self.dispatch.ctx.set_stopping();
        self.listener = None;
        let active = self.runner.active();
        self.runner.close(true, Some(deadline), &self.dispatch);
        active
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.server_close();
    }
}
