//! One OS thread per connection, each with its own buffers and histograms.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Condvar, Mutex};
use std::thread;
use std::time::Instant;

use anyhow::Context as _;

use super::client::{After, Buffers, Conn, Failure, Target};
use super::plan::{Next, Plan};
use super::progress::{self, Slot};
use super::stats::{Summary, ThreadStats};
use super::{Config, Mode};

/// Holds the threads until all are spawned and connected, then gives them one start instant.
struct Gate {
    state: Mutex<Option<Option<Instant>>>,
    cv: Condvar,
}

impl Gate {
    fn new() -> Gate {
        Gate {
            state: Mutex::new(None),
            cv: Condvar::new(),
        }
    }

    /// Opens the gate with `Some(start)`, or aborts the run with `None`.
    fn open(&self, start: Option<Instant>) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = Some(start);
        self.cv.notify_all();
    }

    fn wait(&self) -> Option<Instant> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match *st {
                Some(start) => return start,
                None => st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }
}

/// Runs every connection thread to the end of the plan and merges what they measured.
pub(crate) fn run_threads(
    cfg: &Config,
    show_progress: bool,
    interrupt: &AtomicBool,
) -> anyhow::Result<Summary> {
    // Fail early (exit 1, not one error per request) on an address that does not suit the transport.
    Target::new(cfg.transport, &cfg.connect, cfg.timeout, 0)
        .with_context(|| format!("{} client for {}", cfg.transport, cfg.connect))?;
    let slots: Vec<Slot> = (0..cfg.connections).map(|_| Slot::default()).collect();
    let gate = Gate::new();
    let stats = thread::scope(|s| -> anyhow::Result<Vec<ThreadStats>> {
        let mut handles = Vec::with_capacity(cfg.connections);
        for (idx, slot) in slots.iter().enumerate() {
            let gate = &gate;
            let spawned = thread::Builder::new()
                .name(format!("sockload-{idx}"))
                .stack_size(256 * 1024)
                .spawn_scoped(s, move || connection(cfg, idx, gate, slot, interrupt));
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    gate.open(None);
                    return Err(e).with_context(|| format!("spawn connection thread {idx}"));
                }
            }
        }
        let start = Instant::now();
        gate.open(Some(start));
        let bar = show_progress.then(|| progress::spawn(s, cfg, start, &slots));
        let stats = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect();
        if let Some(bar) = bar {
            bar.finish();
        }
        Ok(stats)
    })?;
    Ok(Summary::from_threads(stats, cfg.rate.is_some()))
}

/// The body of one connection thread.
fn connection(
    cfg: &Config,
    idx: usize,
    gate: &Gate,
    slot: &Slot,
    interrupt: &AtomicBool,
) -> ThreadStats {
    let mut target = Target::new(cfg.transport, &cfg.connect, cfg.timeout, idx)
        .expect("checked by run_threads")
        .with_sources(cfg.sources);
    let mut buf = Buffers::new(cfg.size, cfg.expect, cfg.transport);
    let open_loop = cfg.rate.is_some();
    let mut stats = ThreadStats::new(open_loop);
    if open_loop {
        // Wake from the pacing sleep on time: the default 50us slack would count as latency.
        let _ = nix::sys::prctl::set_timerslack(1);
    }
    // Connect before the clock starts; a failure here is retried (and counted) by the first request.
    let mut conn = match cfg.mode {
        Mode::Persistent => target.open().ok(),
        Mode::Connect => None,
    };
    let Some(start) = gate.wait() else {
        return stats;
    };
    let mut plan = Plan::new(cfg, idx, start);
    let mut measured = 0u64;
    while !interrupt.load(Relaxed) {
        let Next::Go {
            intended,
            measured: counts,
        } = plan.next(measured)
        else {
            break;
        };
        let sent = Instant::now();
        let result = exchange(cfg.mode, &mut target, &mut conn, &mut buf, cfg);
        let done = Instant::now();
        if !counts {
            continue;
        }
        measured += 1;
        let from = if open_loop { intended } else { sent };
        match result {
            Ok(()) => {
                stats.record_ok(done - from, done - sent);
                slot.ok.store(stats.ok, Relaxed);
            }
            Err(f) => {
                stats.record_error(f.kind, || f.message(target.addr()));
                slot.errors.store(stats.total() - stats.ok, Relaxed);
            }
        }
        stats.last_done = done.saturating_duration_since(plan.measure_start);
    }
    stats
}

/// One request: on the kept connection (reconnecting after an error) or a fresh one.
#[inline]
fn exchange(
    mode: Mode,
    target: &mut Target,
    conn: &mut Option<Conn>,
    buf: &mut Buffers,
    cfg: &Config,
) -> Result<(), Failure> {
    if mode == Mode::Connect {
        return target.open()?.exchange(buf, cfg.expect).map(drop);
    }
    let c = match conn {
        Some(c) => c,
        None => conn.insert(target.open()?),
    };
    match c.exchange(buf, cfg.expect) {
        Ok(After::Keep) => Ok(()),
        Ok(After::Closed) => {
            *conn = None;
            Ok(())
        }
        Err(f) => {
            *conn = None;
            Err(f)
        }
    }
}
