//! Counters a server, its threads and its fork children share with the
//! supervisor's master: what `sockserv status` and the metrics report.
//!
//! Each server counts into one `Slot`, a cache line of atomic integers in
//! memory mapped shared before anything forks (`sys::shared_zeroed`): a
//! fork-policy child adds to its parent's slot, a supervised worker to the
//! slot its master gave it, and a SIGKILL loses nothing already added. The
//! request path pays one relaxed atomic add per event: no lock, no system
//! call. A server outside the supervisor maps a slot of its own.
//!
//! What each counter means:
//! - `connections`: stream connections accepted (datagram transports:
//!   datagrams received);
//! - `requests`: replies sent (each `write_all` to a stream client, each
//!   datagram reply);
//! - `in_flight`: connections or datagrams being handled now (under fork,
//!   live children);
//! - `errors`: handler errors and panics, and fork children killed by a
//!   signal;
//! - `rejected`: clients refused by `verify_request`;
//! - `truncated_datagrams`: datagrams dropped for exceeding the size limit;
//! - `children`: live fork-policy children.

use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crate::sys;

/// One server's counters, on a cache line of their own.
#[derive(Debug, Default)]
#[repr(C, align(64))]
pub(crate) struct Slot {
    pub(crate) connections: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) truncated: AtomicU64,
    pub(crate) in_flight: AtomicI64,
    pub(crate) children: AtomicI64,
}

thread_local! {
    /// In a fork-policy child: replies not yet added to the slot. The
    /// child's first write to the shared counters page would cost it a
    /// page fault (a shared mapping's entries are not copied at fork), so
    /// a child counts here, on the thread-local page it writes anyway, and
    /// hands the count to its parent in its exit status (see
    /// [`child_exit_code`]); past [`CHILD_BATCH`] it adds a batch itself.
    /// Constant-initialised, no destructor.
    static CHILD_REPLIES: Cell<u32> = const { Cell::new(0) };
    /// True in a fork-policy child.
    static IN_CHILD: Cell<bool> = const { Cell::new(false) };
}

/// Replies a fork child keeps before adding them to the slot itself; the
/// rest travel in its exit status (which holds up to 255).
pub(crate) const CHILD_BATCH: u32 = 200;

/// Marks this process as a fork-policy child (see `CHILD_REPLIES`).
#[link_section = child_text!()]
pub(crate) fn enter_child() {
    IN_CHILD.with(|c| c.set(true));
}

/// Counts one reply sent: in the slot, or in a fork child's local count.
#[link_section = child_text!()]
pub(crate) fn reply(slot: &Slot) {
    if !IN_CHILD.with(|c| c.get()) {
        Slot::add(&slot.requests);
        return;
    }
    let n = CHILD_REPLIES.with(|c| c.get()) + 1;
    if n >= CHILD_BATCH {
        Slot::add_n(&slot.requests, u64::from(n));
        CHILD_REPLIES.with(|c| c.set(0));
    } else {
        CHILD_REPLIES.with(|c| c.set(n));
    }
}

/// A fork child's exit status: the replies it has not added to the slot
/// (0 to 199). The parent adds it when it reaps the child; a child killed
/// by a signal loses at most that many.
#[link_section = child_text!()]
pub(crate) fn child_exit_code() -> i32 {
    CHILD_REPLIES.with(|c| c.get()) as i32
}

impl Slot {
    /// A slot of this process's own, shared with what it forks later.
    pub(crate) fn own() -> std::io::Result<&'static Slot> {
        Ok(&sys::shared_zeroed::<Slot>(1)?[0])
    }

    /// Slots for `n` servers (the supervisor's workers), shared with every
    /// process forked from now on.
    pub(crate) fn table(n: usize) -> std::io::Result<&'static [Slot]> {
        sys::shared_zeroed::<Slot>(n)
    }

    #[link_section = child_text!()]
    pub(crate) fn add(counter: &AtomicU64) {
        Slot::add_n(counter, 1);
    }

    #[link_section = child_text!()]
    pub(crate) fn add_n(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn up(gauge: &AtomicI64) {
        gauge.fetch_add(1, Relaxed);
    }

    pub(crate) fn down(gauge: &AtomicI64) {
        gauge.fetch_sub(1, Relaxed);
    }

    /// What the slot holds now.
    pub(crate) fn read(&self) -> Counters {
        Counters {
            connections: self.connections.load(Relaxed),
            requests: self.requests.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed).max(0) as u64,
            errors: self.errors.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            truncated_datagrams: self.truncated.load(Relaxed),
            children: self.children.load(Relaxed).max(0) as u64,
        }
    }

    /// Zeroes the slot for a new server (a replacement worker).
    pub(crate) fn reset(&self) {
        for c in [
            &self.connections,
            &self.requests,
            &self.errors,
            &self.rejected,
            &self.truncated,
        ] {
            c.store(0, Relaxed);
        }
        self.in_flight.store(0, Relaxed);
        self.children.store(0, Relaxed);
    }
}

/// A server's counters at one instant (see the module docs for meanings).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Stream connections accepted; datagrams received.
    pub connections: u64,
    /// Replies sent.
    pub requests: u64,
    /// Connections or datagrams being handled now.
    pub in_flight: u64,
    /// Handler errors and panics; fork children killed by a signal.
    pub errors: u64,
    /// Clients refused by `verify_request`.
    pub rejected: u64,
    /// Oversized datagrams dropped.
    pub truncated_datagrams: u64,
    /// Live fork-policy children.
    pub children: u64,
}

impl Counters {
    /// Adds the cumulative counts of `other` (not its gauges) to these.
    pub fn add_totals(&mut self, other: &Counters) {
        self.connections += other.connections;
        self.requests += other.requests;
        self.errors += other.errors;
        self.rejected += other.rejected;
        self.truncated_datagrams += other.truncated_datagrams;
    }
}
