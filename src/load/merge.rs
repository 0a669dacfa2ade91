//! `sockload merge FILE...`: one report from runs saved with `--hist`
//! (typically on several hosts loading the same server at once).

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _};
use hdrhistogram::Histogram;

use super::histfile;
use super::stats::Summary;

/// Adds up the histograms and counts of the `--hist` files at `paths`.
///
/// Counts and histograms are summed; the measured period is the longest
/// one; rates are summed (the runs are taken to have run at the same time).
/// The uncorrected histogram is kept only if every run has one (open loop).
pub fn merge_files(paths: &[PathBuf]) -> anyhow::Result<Summary> {
    if paths.is_empty() {
        bail!("merge needs at least one histogram file");
    }
    let runs = paths
        .iter()
        .map(|p| histfile::read(p).with_context(|| format!("read histogram file {}", p.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    merge_summaries(runs)
}

/// Adds up summaries; see [`merge_files`].
pub(crate) fn merge_summaries(runs: Vec<Summary>) -> anyhow::Result<Summary> {
    let all_open = runs.iter().all(|r| r.uncorrected.is_some());
    let mut m = Summary::empty(false);
    m.latency = Histogram::new(3)?;
    m.uncorrected = if all_open {
        Some(Histogram::new(3)?)
    } else {
        None
    };
    for r in runs {
        m.runs += r.runs;
        m.ok += r.ok;
        for (sum, n) in m.errors.iter_mut().zip(r.errors) {
            *sum += n;
        }
        for (slot, sample) in m.samples.iter_mut().zip(r.samples) {
            if slot.is_none() {
                *slot = sample;
            }
        }
        m.latency
            .add(&r.latency)
            .map_err(|e| anyhow!("add histogram: {e:?}"))?;
        if let (Some(sum), Some(h)) = (&mut m.uncorrected, &r.uncorrected) {
            sum.add(h).map_err(|e| anyhow!("add histogram: {e:?}"))?;
        }
        m.measured = m.measured.max(r.measured);
        m.requests_per_s += r.requests_per_s;
        m.ok_per_s += r.ok_per_s;
        m.bytes_sent += r.bytes_sent;
        m.bytes_received += r.bytes_received;
        m.started_at = match (m.started_at, r.started_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::stats::{new_histogram, ErrorKind};
    use std::time::Duration;

    fn run_of(samples: &[u64], errors: u64, secs: u64) -> Summary {
        let mut s = Summary::empty(false);
        s.runs = 1;
        s.latency = new_histogram();
        for v in samples {
            s.latency.record(*v).unwrap();
        }
        s.ok = samples.len() as u64;
        s.errors[ErrorKind::Timeout as usize] = errors;
        s.measured = Duration::from_secs(secs);
        s.requests_per_s = s.total() as f64 / secs as f64;
        s.ok_per_s = s.ok as f64 / secs as f64;
        s
    }

    /// Deterministic, spread-out latencies (a simple LCG), in microseconds.
    fn samples(seed: u64, n: usize) -> Vec<u64> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                20 + (x >> 33) % 50_000
            })
            .collect()
    }

    #[test]
    fn merged_files_sum_counts_and_match_a_histogram_of_all_samples() {
        let (a, b) = (samples(1, 5000), samples(2, 3000));
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = [("a.hlog", &a, 3, 10), ("b.hlog", &b, 4, 5)]
            .iter()
            .map(|(name, v, errs, secs)| {
                let p = dir.path().join(name);
                std::fs::write(
                    &p,
                    histfile::render(None, &run_of(v, *errs, *secs)).unwrap(),
                )
                .unwrap();
                p
            })
            .collect();
        let m = merge_files(&paths).unwrap();

        let mut all = new_histogram();
        for v in a.iter().chain(&b) {
            all.record(*v).unwrap();
        }
        assert_eq!(m.runs, 2);
        assert_eq!(
            (m.ok, m.errors_of(ErrorKind::Timeout), m.error_count()),
            (8000, 7, 7)
        );
        assert_eq!(m.latency.len(), all.len());
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                m.latency.value_at_quantile(q),
                all.value_at_quantile(q),
                "quantile {q}"
            );
        }
        assert_eq!(m.latency.max(), all.max());
        assert!((m.latency.mean() - all.mean()).abs() < 1e-6);
        assert_eq!(m.measured, Duration::from_secs(10));
        assert!((m.requests_per_s - (5003.0 / 10.0 + 3004.0 / 5.0)).abs() < 1e-9);
    }

    #[test]
    fn uncorrected_is_kept_only_when_every_run_has_it() {
        let mut open = run_of(&[5], 0, 1);
        open.uncorrected = Some(new_histogram());
        let closed = run_of(&[6], 0, 1);
        let both_open = merge_summaries(vec![open.clone(), open.clone()]).unwrap();
        assert!(both_open.uncorrected.is_some());
        assert!(merge_summaries(vec![open, closed])
            .unwrap()
            .uncorrected
            .is_none());
    }

    #[test]
    fn missing_files_are_named_in_the_error() {
        let e = merge_files(&[PathBuf::from("/nonexistent/run.hlog")]).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("/nonexistent/run.hlog") && msg.contains("os error 2"),
            "{msg}"
        );
    }
}
