//! The progress line on stderr (only when stderr is a terminal).

use std::io::IsTerminal;
use std::sync::atomic::Ordering::Relaxed;
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::report::thousands;
use super::{Config, Stop};

/// Live counters one event loop publishes for the progress line
/// (own cache line).
#[derive(Default)]
#[repr(align(64))]
pub(crate) struct Slot {
    pub ok: std::sync::atomic::AtomicU64,
    pub errors: std::sync::atomic::AtomicU64,
}

const TICK: Duration = Duration::from_millis(250);

/// A running progress line; [`Progress::finish`] clears it and stops its thread.
pub(crate) struct Progress<'scope> {
    stop: Sender<()>,
    thread: Option<ScopedJoinHandle<'scope, ()>>,
}

impl Progress<'_> {
    pub fn finish(mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the progress line, unless stderr is not a terminal.
pub(crate) fn spawn<'scope, 'env>(
    s: &'scope Scope<'scope, 'env>,
    cfg: &'env Config,
    start: Instant,
    slots: &'env [Slot],
) -> Progress<'scope> {
    let (stop, stopped) = bounded::<()>(1);
    if !std::io::stderr().is_terminal() {
        return Progress { stop, thread: None };
    }
    let thread = std::thread::Builder::new()
        .name("sockload-progress".into())
        .spawn_scoped(s, move || {
            let bar = new_bar(cfg);
            let mut last = (Instant::now(), 0u64);
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(TICK) {
                last = tick(&bar, cfg, start, slots, last);
            }
            bar.finish_and_clear();
        })
        .ok();
    Progress { stop, thread }
}

fn new_bar(cfg: &Config) -> ProgressBar {
    let len = match cfg.stop {
        Stop::Duration(d) => (cfg.warmup + d).as_millis() as u64,
        Stop::Requests(n) => n,
    };
    let style = ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {msg}")
        .expect("static template is valid")
        .progress_chars("=> ");
    ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr()).with_style(style)
}

fn tick(
    bar: &ProgressBar,
    cfg: &Config,
    start: Instant,
    slots: &[Slot],
    last: (Instant, u64),
) -> (Instant, u64) {
    let now = Instant::now();
    let ok: u64 = slots.iter().map(|s| s.ok.load(Relaxed)).sum();
    let errors: u64 = slots.iter().map(|s| s.errors.load(Relaxed)).sum();
    let elapsed = now.saturating_duration_since(start);
    let rate =
        (ok + errors).saturating_sub(last.1) as f64 / now.duration_since(last.0).as_secs_f64();
    bar.set_position(match cfg.stop {
        Stop::Duration(_) => elapsed.as_millis() as u64,
        Stop::Requests(_) => ok + errors,
    });
    if elapsed < cfg.warmup {
        bar.set_message(format!(
            "warming up ({:.1}s of {:.1}s)",
            elapsed.as_secs_f64(),
            cfg.warmup.as_secs_f64()
        ));
    } else {
        let eta = match cfg.stop {
            Stop::Duration(d) => (cfg.warmup + d).saturating_sub(elapsed),
            Stop::Requests(n) if rate > 0.0 => {
                Duration::from_secs_f64(n.saturating_sub(ok + errors) as f64 / rate)
            }
            Stop::Requests(_) => Duration::ZERO,
        };
        bar.set_message(format!(
            "{} ok, {} errors, {} req/s, ETA {}s",
            thousands(ok),
            thousands(errors),
            thousands(rate as u64),
            eta.as_secs_f64().ceil()
        ));
    }
    (now, ok + errors)
}
