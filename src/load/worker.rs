//! The engine: `--threads` event loops (mio, edge-triggered epoll on
//! Linux), each driving its share of the `--connections` as small
//! non-blocking state machines.
//!
//! Loop `t` of `T` owns connections `t, t + T, t + 2T, ...`. A connection
//! is one record of a few hundred bytes: the request, its expected reply
//! and the read buffer belong to the loop, so 10,000 connections take a
//! few MiB. Each socket is registered once for both readiness kinds; a
//! readiness event drives its connection as far as it goes without
//! blocking (write the request, read and check the reply, start the next).
//!
//! Timers: an open-loop connection that is early waits on a binary heap of
//! wake-up instants, and the earliest one arms a timerfd, so requests leave
//! on schedule (to the microsecond, with the thread's timer slack at 1 ns)
//! without sleeping or spinning. Back-offs use the same heap. Timeouts are
//! found by a sweep of the loop's connections every `--timeout / 8`
//! (at most 100 ms).
//!
//! A connect that fails (refused, unreachable, timed out) is counted and
//! retried after a back-off that doubles from 1 ms up to 1 s per
//! connection, so a server that is down is not hammered.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use super::client::{exchange, After, Failure, Opened, Payload, Progress, Sock, Step, Target};
use super::plan::{Next, Plan};
use super::progress::{self, Slot};
use super::stats::{Summary, ThreadStats};
use super::{Config, Mode, Stop};

/// The timerfd's token; connections use their index in the loop.
const TIMER: Token = Token(usize::MAX);
/// Connects a loop keeps in flight before the run starts (a listen
/// backlog is typically 4,096; 10,000 SYNs at once would overflow it).
const MAX_PENDING_CONNECTS: usize = 512;
/// The first and the longest wait before a failed connect is retried.
const BACKOFF_FIRST: Duration = Duration::from_millis(1);
const BACKOFF_CAP: Duration = Duration::from_secs(1);
/// How soon a Unix connect the server's full backlog turned away is retried.
const BUSY_RETRY: Duration = Duration::from_millis(1);
/// Requests one connection may complete in a row before the others get a turn.
const BURST: usize = 16;
/// Readiness events fetched per poll.
const EVENTS: usize = 1024;

/// Holds the loops until all have connected, then gives them one start instant.
struct Gate {
    /// Loops that have connected (or given up), and the start once it is set.
    state: Mutex<(usize, Option<Option<Instant>>)>,
    cv: Condvar,
    /// Set by a loop that could not start; the run is then aborted.
    failed: AtomicBool,
}

impl Gate {
    fn new() -> Gate {
        Gate {
            state: Mutex::new((0, None)),
            cv: Condvar::new(),
            failed: AtomicBool::new(false),
        }
    }

    /// A loop is ready for the start.
    fn arrive(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0 += 1;
        self.cv.notify_all();
    }

    /// Waits until `n` loops have arrived.
    fn all_arrived(&self, n: usize) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while st.0 < n {
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Opens the gate with `Some(start)`, or aborts the run with `None`.
    fn open(&self, start: Option<Instant>) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = Some(start);
        self.cv.notify_all();
    }

    fn wait(&self) -> Option<Instant> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match st.1 {
                Some(start) => return start,
                None => st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }
}

/// The number of event loops a run uses: `--threads`, but no more than connections.
pub(crate) fn loops(cfg: &Config) -> usize {
    cfg.threads.clamp(1, cfg.connections.max(1))
}

/// Runs every event loop to the end of the plan and merges what they measured.
pub(crate) fn run_loops(
    cfg: &Config,
    show_progress: bool,
    interrupt: &AtomicBool,
) -> anyhow::Result<Summary> {
    // Fail early (exit 1, not one error per request) on an address that does not suit the transport.
    Target::new(cfg.transport, &cfg.connect)
        .with_context(|| format!("{} client for {}", cfg.transport, cfg.connect))?;
    let n = loops(cfg);
    let slots: Vec<Slot> = (0..n).map(|_| Slot::default()).collect();
    let gate = Gate::new();
    let mut started_at = None;
    let stats = thread::scope(|s| -> anyhow::Result<Vec<ThreadStats>> {
        let mut handles = Vec::with_capacity(n);
        for (t, slot) in slots.iter().enumerate() {
            let gate = &gate;
            let spawned = thread::Builder::new()
                .name(format!("sockload-{t}"))
                .spawn_scoped(s, move || event_loop(cfg, t, n, gate, slot, interrupt));
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    gate.open(None);
                    return Err(e).with_context(|| format!("spawn event loop thread {t}"));
                }
            }
        }
        gate.all_arrived(n);
        let start = Instant::now();
        started_at = Some(std::time::SystemTime::now());
        gate.open((!gate.failed.load(Relaxed)).then_some(start));
        let bar = show_progress.then(|| progress::spawn(s, cfg, start, &slots));
        let stats: Vec<anyhow::Result<ThreadStats>> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect();
        if let Some(bar) = bar {
            bar.finish();
        }
        stats.into_iter().collect()
    })?;
    let mut summary = Summary::from_threads(stats, cfg.rate.is_some());
    summary.started_at = started_at;
    // A duration run counts the requests sent in the period (and waits for
    // their replies), so the period is the duration: stretching it to the
    // last reply would under-state the rate by one latency in D + latency
    // (11 % at 10,000 connections with 250 ms replies and a 2 s run).
    if let (Stop::Duration(d), false) = (cfg.stop, interrupt.load(Relaxed)) {
        summary.set_measured(d);
    }
    Ok(summary)
}

/// The body of event loop thread `t` of `n`.
fn event_loop(
    cfg: &Config,
    t: usize,
    n: usize,
    gate: &Gate,
    slot: &Slot,
    interrupt: &AtomicBool,
) -> anyhow::Result<ThreadStats> {
    let mut lp = match EventLoop::new(cfg, t, n, slot) {
        Ok(lp) => lp,
        Err(e) => {
            gate.failed.store(true, Relaxed);
            gate.arrive();
            return Err(e);
        }
    };
    // Connect before the clock starts; a failure here is retried (and counted) by the first request.
    let connected = match cfg.mode {
        Mode::Persistent => lp.connect_all(interrupt),
        Mode::Connect => Ok(()),
    };
    if connected.is_err() {
        gate.failed.store(true, Relaxed);
    }
    gate.arrive();
    connected?;
    let Some(start) = gate.wait() else {
        return Ok(lp.stats);
    };
    lp.start(start);
    lp.run(interrupt)?;
    Ok(lp.stats)
}

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Connected (or not) before the run started; nothing under way.
    Idle,
    /// A connect is under way.
    Connecting,
    /// A request is being sent or its reply read.
    Exchanging,
    /// Waiting for its timer: the next send time, or a back-off.
    Waiting,
    /// Finished its share of the run.
    Done,
}

/// One connection of an event loop.
struct Conn {
    /// Its number among all connections (plans and bind names use it).
    idx: usize,
    sock: Option<Sock>,
    state: State,
    plan: Plan,
    progress: Progress,
    /// Measured requests made so far.
    measured: u64,
    /// Sockets opened so far.
    opened: u64,
    /// Connect failures in a row (sets the back-off).
    fails: u32,
    /// Whether the request under way is measured (not warm-up).
    counts: bool,
    /// When the request under way was due (open loop) and when it was sent.
    intended: Instant,
    sent: Instant,
    /// When the connect or request under way times out.
    deadline: Instant,
    /// When the timer of a waiting connection fires.
    wake: Instant,
    /// The wait is to retry a connect the server's full backlog turned away.
    retry: bool,
}

struct EventLoop<'a> {
    cfg: &'a Config,
    target: Target,
    poll: Poll,
    conns: Vec<Conn>,
    /// Wake-ups of waiting connections, earliest first (stale entries are skipped).
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Open loop: armed at the earliest wake-up, for sub-millisecond precision.
    timerfd: Option<TimerFd>,
    armed: Option<Instant>,
    /// Connections that used up their burst and still have work.
    runnable: Vec<usize>,
    pay: Payload,
    scratch: Box<[u8]>,
    stats: ThreadStats,
    slot: &'a Slot,
    measure_start: Instant,
    open_loop: bool,
    started: bool,
    /// Connections not yet done.
    active: usize,
    /// Connects in flight before the start.
    pending: usize,
    sweep_every: Duration,
}

impl<'a> EventLoop<'a> {
    fn new(cfg: &'a Config, t: usize, n: usize, slot: &'a Slot) -> anyhow::Result<EventLoop<'a>> {
        let target = Target::new(cfg.transport, &cfg.connect)
            .with_context(|| format!("{} client for {}", cfg.transport, cfg.connect))?
            .with_sources(cfg.sources);
        let poll = Poll::new().context("create an event loop (epoll)")?;
        let open_loop = cfg.rate.is_some();
        let timerfd = if open_loop {
            // Wake on time: the default 50us slack would count as latency.
            let _ = nix::sys::prctl::set_timerslack(1);
            let tfd = TimerFd::new(
                ClockId::CLOCK_MONOTONIC,
                TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
            )
            .context("create a timerfd")?;
            poll.registry()
                .register(
                    &mut SourceFd(&tfd.as_fd().as_raw_fd()),
                    TIMER,
                    Interest::READABLE,
                )
                .context("register the timerfd")?;
            Some(tfd)
        } else {
            None
        };
        let now = Instant::now();
        let conns = (t..cfg.connections)
            .step_by(n)
            .map(|idx| Conn {
                idx,
                sock: None,
                state: State::Idle,
                plan: Plan::new(cfg, idx, now),
                progress: Progress::default(),
                measured: 0,
                opened: 0,
                fails: 0,
                counts: false,
                intended: now,
                sent: now,
                deadline: now,
                wake: now,
                retry: false,
            })
            .collect::<Vec<_>>();
        Ok(EventLoop {
            cfg,
            target,
            poll,
            active: conns.len(),
            conns,
            timers: BinaryHeap::new(),
            timerfd,
            armed: None,
            runnable: Vec::new(),
            pay: Payload::new(cfg.size, cfg.expect),
            scratch: vec![0; 65536].into_boxed_slice(),
            stats: ThreadStats::new(open_loop),
            slot,
            measure_start: now,
            open_loop,
            started: false,
            pending: 0,
            sweep_every: (cfg.timeout / 8)
                .clamp(Duration::from_millis(1), Duration::from_millis(100)),
        })
    }

    /// Persistent mode, before the start: opens every connection, at most
    /// [`MAX_PENDING_CONNECTS`] at a time, and waits for each to connect,
    /// fail or time out.
    fn connect_all(&mut self, interrupt: &AtomicBool) -> anyhow::Result<()> {
        let mut events = Events::with_capacity(EVENTS);
        let mut next = 0;
        let mut next_sweep = Instant::now() + self.sweep_every;
        while !interrupt.load(Relaxed) {
            while self.pending < MAX_PENDING_CONNECTS && next < self.conns.len() {
                self.preconnect(next);
                next += 1;
            }
            if self.pending == 0 && next == self.conns.len() {
                break;
            }
            self.poll_events(&mut events, Some(self.sweep_every))?;
            for ev in events.iter() {
                self.drive(ev.token().0);
            }
            let now = Instant::now();
            if now < next_sweep {
                continue;
            }
            next_sweep = now + self.sweep_every;
            for c in &mut self.conns {
                if c.state == State::Connecting && now >= c.deadline {
                    c.sock = None;
                    c.state = State::Idle;
                    self.pending -= 1;
                }
            }
        }
        Ok(())
    }

    /// Starts connection `i`'s connect before the run; failures leave it unconnected.
    fn preconnect(&mut self, i: usize) {
        let c = &mut self.conns[i];
        c.opened += 1;
        c.deadline = Instant::now() + self.cfg.timeout;
        match self.target.open(c.idx, c.opened) {
            Ok(Opened::Ready(s)) => {
                if self.attach(i, s).is_ok() {
                    self.conns[i].state = State::Idle;
                }
            }
            Ok(Opened::Pending(s)) => {
                if self.attach(i, s).is_ok() {
                    self.conns[i].state = State::Connecting;
                    self.pending += 1;
                }
            }
            Ok(Opened::Busy) | Err(_) => {}
        }
    }

    /// Registers `sock` as connection `i`'s socket.
    fn attach(&mut self, i: usize, mut sock: Sock) -> Result<(), Failure> {
        sock.register(self.poll.registry(), Token(i))
            .map_err(|e| Failure::io("register a socket (epoll) for", e))?;
        self.conns[i].sock = Some(sock);
        Ok(())
    }

    /// Starts the clock: every connection gets its plan and its first request.
    fn start(&mut self, start: Instant) {
        self.started = true;
        self.measure_start = start + self.cfg.warmup;
        for c in &mut self.conns {
            c.plan = Plan::new(self.cfg, c.idx, start);
        }
        for i in 0..self.conns.len() {
            self.start_next(i, Instant::now());
            self.drive(i);
        }
    }

    /// Runs until every connection is done or the run is interrupted.
    fn run(&mut self, interrupt: &AtomicBool) -> anyhow::Result<()> {
        let mut events = Events::with_capacity(EVENTS);
        let mut burst = Vec::new();
        let mut next_sweep = Instant::now() + self.sweep_every;
        while self.active > 0 && !interrupt.load(Relaxed) {
            let now = Instant::now();
            self.fire_timers(now);
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + self.sweep_every;
            }
            std::mem::swap(&mut burst, &mut self.runnable);
            for i in burst.drain(..) {
                self.drive(i);
            }
            if self.active == 0 {
                break;
            }
            let timeout = if self.runnable.is_empty() {
                let mut until = next_sweep;
                if let Some(&Reverse((t, _))) = self.timers.peek() {
                    if self.timerfd.is_some() {
                        self.arm(t)?;
                    } else {
                        until = until.min(t);
                    }
                }
                until.saturating_duration_since(now)
            } else {
                Duration::ZERO
            };
            self.poll_events(&mut events, Some(timeout))?;
            for ev in events.iter() {
                match ev.token() {
                    TIMER => {
                        if let Some(tfd) = &self.timerfd {
                            let _ = tfd.wait(); // non-blocking: reads the expiry count
                        }
                        self.armed = None;
                    }
                    Token(i) => self.drive(i),
                }
            }
        }
        Ok(())
    }

    fn poll_events(
        &mut self,
        events: &mut Events,
        timeout: Option<Duration>,
    ) -> anyhow::Result<()> {
        match self.poll.poll(events, timeout) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                events.clear();
                Ok(())
            }
            Err(e) => Err(e).context("wait for socket events (epoll_wait)"),
        }
    }

    /// Arms the timerfd for `t`, unless it already fires at or before `t`.
    fn arm(&mut self, t: Instant) -> anyhow::Result<()> {
        if self.armed.is_some_and(|a| a <= t) {
            return Ok(());
        }
        let Some(tfd) = &self.timerfd else {
            return Ok(());
        };
        // Zero would disarm it: a timer already due fires in a nanosecond.
        let d = t
            .saturating_duration_since(Instant::now())
            .max(Duration::from_nanos(1));
        tfd.set(
            Expiration::OneShot(TimeSpec::from_duration(d)),
            TimerSetTimeFlags::empty(),
        )
        .context("arm the timerfd")?;
        self.armed = Some(t);
        Ok(())
    }

    /// Wakes every waiting connection whose time has come.
    fn fire_timers(&mut self, now: Instant) {
        while let Some(&Reverse((t, i))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let c = &mut self.conns[i];
            if c.state != State::Waiting || c.wake != t {
                continue;
            }
            if c.retry {
                c.retry = false;
                self.open(i, now);
            } else {
                self.start_next(i, now);
            }
            self.drive(i);
        }
    }

    /// Fails every connect and request that has run past `--timeout`.
    fn sweep(&mut self, now: Instant) {
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            if now < c.deadline {
                continue;
            }
            match c.state {
                State::Connecting => {
                    self.fail_connect(i, Failure::timeout("connect", self.cfg.timeout), now);
                }
                State::Exchanging => {
                    let op = if c.progress.written < self.pay.request.len() {
                        "send to"
                    } else {
                        "receive from"
                    };
                    self.complete(i, Err(Failure::timeout(op, self.cfg.timeout)), now);
                    self.runnable.push(i);
                }
                _ => {}
            }
        }
    }

    /// Drives connection `i` as far as it goes without blocking, for at most
    /// [`BURST`] requests (then it queues itself to go on after the others).
    fn drive(&mut self, i: usize) {
        if i >= self.conns.len() {
            return; // a token no connection has (none expected)
        }
        for _ in 0..BURST {
            let c = &mut self.conns[i];
            match c.state {
                State::Connecting => {
                    let Some(outcome) = c.sock.as_ref().and_then(Sock::connected) else {
                        return;
                    };
                    if !self.started {
                        if outcome.is_err() {
                            c.sock = None;
                        }
                        c.state = State::Idle;
                        self.pending -= 1;
                        return;
                    }
                    match outcome {
                        Ok(()) => {
                            c.fails = 0;
                            c.state = State::Exchanging;
                        }
                        Err(e) => {
                            self.fail_connect(i, Failure::io("connect", e), Instant::now());
                            return;
                        }
                    }
                }
                State::Exchanging => {
                    let sock = c
                        .sock
                        .as_mut()
                        .expect("an exchanging connection has a socket");
                    match exchange(
                        sock,
                        &mut c.progress,
                        &self.pay,
                        self.cfg.expect,
                        &mut self.scratch,
                    ) {
                        Step::Blocked => return,
                        Step::Done(result) => self.complete(i, result, Instant::now()),
                    }
                }
                State::Idle | State::Waiting | State::Done => return,
            }
        }
        self.runnable.push(i);
    }

    /// Counts the outcome of connection `i`'s request (if measured).
    fn record(&mut self, i: usize, result: &Result<After, Failure>, now: Instant) {
        let c = &mut self.conns[i];
        if !c.counts {
            if result.is_ok() {
                self.stats.warmup_ok += 1; // what the server counted too
            }
            return;
        }
        c.measured += 1;
        let s = &mut self.stats;
        match result {
            Ok(_) => {
                let from = if self.open_loop { c.intended } else { c.sent };
                s.record_ok(now - from, now - c.sent);
                self.slot.ok.store(s.ok, Relaxed);
            }
            Err(f) => {
                s.record_error(f.kind, || f.message(self.target.addr()));
                self.slot.errors.store(s.total() - s.ok, Relaxed);
            }
        }
        s.bytes_sent += c.progress.written as u64;
        s.bytes_received += c.progress.got as u64;
        s.last_done = s
            .last_done
            .max(now.saturating_duration_since(self.measure_start));
    }

    /// Connection `i`'s request ended: count it, keep or drop the socket, start the next.
    fn complete(&mut self, i: usize, result: Result<After, Failure>, now: Instant) {
        self.record(i, &result, now);
        let keep = self.cfg.mode == Mode::Persistent && matches!(result, Ok(After::Keep));
        if !keep {
            self.conns[i].sock = None;
        }
        self.start_next(i, now);
    }

    /// Connection `i`'s connect failed: count it and retry after a back-off.
    fn fail_connect(&mut self, i: usize, f: Failure, now: Instant) {
        self.record(i, &Err(f), now);
        let c = &mut self.conns[i];
        c.sock = None;
        c.fails = c.fails.saturating_add(1);
        let mut at = now + backoff(c.fails);
        if let Some(end) = c.plan.end() {
            at = at.min(end);
        }
        self.wait(i, at);
    }

    /// Asks connection `i`'s plan what next: send, wait or stop.
    fn start_next(&mut self, i: usize, now: Instant) {
        let c = &mut self.conns[i];
        match c.plan.next(now, c.measured) {
            Next::Stop => {
                c.state = State::Done;
                c.sock = None;
                self.active -= 1;
            }
            Next::Wait(t) => self.wait(i, t),
            Next::Go { intended, measured } => {
                c.intended = intended;
                c.counts = measured;
                c.sent = now;
                c.deadline = now + self.cfg.timeout;
                c.progress = Progress::default();
                if c.sock.is_some() {
                    c.state = State::Exchanging;
                } else {
                    self.open(i, now);
                }
            }
        }
    }

    /// Opens a socket for connection `i`'s request under way.
    fn open(&mut self, i: usize, now: Instant) {
        let c = &mut self.conns[i];
        c.opened += 1;
        let attached = match self.target.open(c.idx, c.opened) {
            Ok(Opened::Ready(s)) => self.attach(i, s).map(|()| State::Exchanging),
            Ok(Opened::Pending(s)) => self.attach(i, s).map(|()| State::Connecting),
            Ok(Opened::Busy) if now < c.deadline => {
                c.retry = true;
                self.wait(i, now + BUSY_RETRY);
                return;
            }
            Ok(Opened::Busy) => Err(Failure::timeout("connect", self.cfg.timeout)),
            Err(f) => Err(f),
        };
        match attached {
            Ok(state) => self.conns[i].state = state,
            Err(f) => self.fail_connect(i, f, now),
        }
    }

    /// Connection `i` waits for its timer at `t`.
    fn wait(&mut self, i: usize, t: Instant) {
        let c = &mut self.conns[i];
        c.state = State::Waiting;
        c.wake = t;
        self.timers.push(Reverse((t, i)));
    }
}

/// The wait before retrying after `fails` failed connects in a row.
fn backoff(fails: u32) -> Duration {
    BACKOFF_FIRST
        .saturating_mul(1 << fails.saturating_sub(1).min(20))
        .min(BACKOFF_CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_millisecond_to_a_second() {
        let ms = Duration::from_millis;
        let waits: Vec<Duration> = (1..=12).map(backoff).collect();
        assert_eq!(&waits[..4], [ms(1), ms(2), ms(4), ms(8)]);
        assert_eq!(waits[10], ms(1000));
        assert_eq!(backoff(u32::MAX), BACKOFF_CAP);
    }
}
