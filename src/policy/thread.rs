//! The thread policies: a thread per request (Python's `ThreadingMixIn`)
//! and a fixed pool fed by a bounded queue.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{bounded, Sender};

use super::InFlight;
use crate::control::Control;
use crate::dispatch::Dispatch;
use crate::error::{Error, Result};
use crate::stats::Slot;
use crate::sys;
use crate::transport::Incoming;
use crate::watch::{ConnRegistry, Watch};

pub(crate) struct ThreadRunner {
    pub(super) daemon: bool,
    pub(super) block_on_close: bool,
    /// Request threads allowed at once (`usize::MAX`: no bound).
    pub(super) max_threads: usize,
    /// Requests whose threads have not finished them; closing waits on it
    /// (the threads are detached: see `sys::spawn_detached`).
    pub(super) inflight: Arc<InFlight>,
    pub(super) conns: Arc<ConnRegistry>,
    /// Wakes the accept loop when a thread frees a place at the bound.
    pub(super) control: Arc<Control>,
}

impl ThreadRunner {
    pub(super) fn spawn(&mut self, incoming: Incoming, dispatch: &Dispatch) -> Result<()> {
        let dispatch = dispatch.clone();
        let inflight = Arc::clone(&self.inflight);
        let conns = Arc::clone(&self.conns);
        let stats = dispatch.ctx.stats;
        let (max, control) = (self.max_threads, Arc::clone(&self.control));
        inflight.start();
        Slot::up(&stats.in_flight);
        let spawned = sys::spawn_detached(Box::new(move || {
            // Counted done even if the request panics past dispatch.
            let _done = Done(&inflight, stats, max, &control);
            dispatch.run(incoming, Watch::Registry(Arc::clone(&conns)));
        }));
        spawned.map_err(|e| {
            self.inflight.done();
            Slot::down(&stats.in_flight);
            Error::os("spawn request thread", e)
        })
    }

    /// Python's `server_close` (join the threads unless daemon) or a
    /// graceful stop (wake blocked reads, wait up to `deadline`).
    pub(super) fn close(&mut self, graceful: bool, deadline: Option<Instant>) {
        if graceful {
            self.conns.shutdown_reads();
            self.inflight.wait_zero(deadline);
        } else if self.block_on_close && !self.daemon {
            self.inflight.wait_zero(None);
        }
    }
}

/// Marks a request done when dropped; the thread that frees a place at
/// `max_threads` (the third field) wakes the paused accept loop.
struct Done<'a>(&'a InFlight, &'static Slot, usize, &'a Control);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        Slot::down(&self.1.in_flight);
        if self.0.done() == self.2 {
            self.3.wake();
        }
    }
}

pub(crate) struct PoolRunner {
    pub(super) limit: usize,
    pub(super) tx: Option<Sender<Incoming>>,
    pub(super) workers: Vec<JoinHandle<()>>,
    pub(super) inflight: Arc<InFlight>,
    pub(super) conns: Arc<ConnRegistry>,
    pub(super) stats: &'static Slot,
}

impl PoolRunner {
    pub(super) fn new(
        threads: usize,
        queue: usize,
        dispatch: &Dispatch,
        control: &Arc<Control>,
    ) -> Result<Self> {
        let (tx, rx) = bounded::<Incoming>(queue);
        let inflight = Arc::new(InFlight::default());
        let conns = Arc::new(ConnRegistry::default());
        let limit = threads + queue;
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let (rx, dispatch, inflight) = (rx.clone(), dispatch.clone(), Arc::clone(&inflight));
            let (conns, control) = (Arc::clone(&conns), Arc::clone(control));
            let handle = std::thread::Builder::new()
                .name(format!("pool-{i}"))
                .spawn(move || {
                    for incoming in rx.iter() {
                        dispatch.run(incoming, Watch::Registry(Arc::clone(&conns)));
                        Slot::down(&dispatch.ctx.stats.in_flight);
                        if inflight.done() == limit {
                            control.wake(); // the accept loop was paused: resume it
                        }
                    }
                })
                .map_err(|e| Error::os("spawn pool thread", e))?;
            workers.push(handle);
        }
        Ok(PoolRunner {
            stats: dispatch.ctx.stats,
            limit,
            tx: Some(tx),
            workers,
            inflight,
            conns,
        })
    }

    pub(super) fn submit(&mut self, incoming: Incoming) -> Result<()> {
        let Some(tx) = &self.tx else {
            return Err(Error::Config("pool is closed".into()));
        };
        self.inflight.start();
        Slot::up(&self.stats.in_flight);
        // can_accept() held, so a worker is free or the queue has room:
        // this send waits at most for a free worker to pick the job up.
        tx.send(incoming).map_err(|_| {
            self.inflight.done();
            Slot::down(&self.stats.in_flight);
            Error::Config("pool workers are gone".into())
        })
    }

    pub(super) fn close(&mut self, graceful: bool, deadline: Option<Instant>) {
        self.tx = None; // workers finish the queue, then their loops end
        if graceful {
            self.conns.shutdown_reads();
        }
        if self.inflight.wait_zero(deadline) {
            for w in self.workers.drain(..) {
                let _ = w.join();
            }
        }
    }
}
