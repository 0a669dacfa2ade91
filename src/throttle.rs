//! Rate-limited warnings: the first of a kind is logged at once, later ones
//! at most once per [`EVERY`], with how many were suppressed in between, so
//! a flood of bad packets or a saturated server cannot fill the disk.

use std::time::{Duration, Instant};

/// The shortest interval between two lines of one kind.
pub(crate) const EVERY: Duration = Duration::from_secs(10);

/// One kind of warning's state.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// Call on each event: `Some(suppressed)` when a line should be logged
    /// now (with the events suppressed since the last line), else `None`.
    pub(crate) fn event(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.duration_since(t) < EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_event_logs_then_one_line_per_interval_with_the_suppressed_count() {
        let mut t = Throttle::default();
        let start = Instant::now();
        assert_eq!(t.event(start), Some(0));
        for i in 1..1000 {
            assert_eq!(t.event(start + Duration::from_millis(i)), None);
        }
        assert_eq!(t.event(start + EVERY), Some(999));
        assert_eq!(t.event(start + EVERY + Duration::from_millis(1)), None);
        assert_eq!(t.event(start + EVERY * 3), Some(1));
    }
}
