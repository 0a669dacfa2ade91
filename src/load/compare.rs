//! `sockload report DIR`: turns a directory of comparison results (written
//! by `scripts/compare.sh`) into a Markdown table and an SVG chart.
//!
//! Each `*.json` file in the directory is one of:
//! - a load cell: `{"kind":"cell","server","policy","transport","workload",
//!   "load":{sockload --json},"peak":{"rss_kib","pss_kib","processes","threads"}}`
//! - an idle-memory measurement: `{"kind":"idle","server","policy",
//!   "transport","connections","pss_before_kib","pss_after_kib",
//!   "rss_before_kib","rss_after_kib","processes","threads"}`

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

/// One load run against one server configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct Cell {
    /// `sockserv`, `python` or `raw`.
    pub server: String,
    /// The policy label (`sync`, `fork`, `thread`, `pool`, `prefork`, `py-fork`, ...).
    pub policy: String,
    /// tcp, unix, udp or unix-dgram.
    pub transport: String,
    /// persistent, connect, delay, cpu, or sweep (persistent echo at a
    /// connection count of the sweep).
    pub workload: String,
    /// Client connections the cell used.
    #[serde(default)]
    pub connections: u64,
    /// sockload's `--json` report.
    pub load: Load,
    /// Peaks over the server's process tree during the run.
    pub peak: Peak,
    /// The server's own count of requests answered during the cell, warm-up
    /// included (from `sockserv status` before and after the load; absent
    /// for servers without a control socket).
    #[serde(default)]
    pub server_counted: Option<ServerCounted>,
}

/// Requests the server itself counted during the cell.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerCounted {
    /// Requests answered, warm-up included.
    pub requests: u64,
}

/// The parts of sockload's report the comparison uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Load {
    /// Successful requests per second over the measured period (failed
    /// ones are not throughput).
    #[serde(rename = "ok_per_s")]
    pub requests_per_s: f64,
    /// Failed requests.
    pub errors_total: u64,
    /// Requests answered correctly in the measured period.
    #[serde(default)]
    pub requests_ok: u64,
    /// Requests answered correctly during the warm-up (sockload reports it
    /// since the event engine; absent before).
    #[serde(default)]
    pub warmup_ok: Option<u64>,
    /// Latency percentiles.
    pub latency: Latency,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
}

/// Peak resources of a server's process tree.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Peak {
    /// Resident set size summed over the tree.
    pub rss_kib: u64,
    /// Proportional set size summed over the tree.
    pub pss_kib: u64,
    /// Processes in the tree.
    pub processes: u64,
    /// Threads in the tree.
    pub threads: u64,
}

/// Memory held by idle connections.
#[derive(Debug, Clone, Deserialize)]
pub struct Idle {
    /// `sockserv`, `python` or `raw`.
    pub server: String,
    /// The policy label.
    pub policy: String,
    /// The transport.
    pub transport: String,
    /// Idle connections held.
    pub connections: u64,
    /// PSS of the tree before the connections.
    pub pss_before_kib: u64,
    /// PSS of the tree while they are held.
    pub pss_after_kib: u64,
    /// Processes in the tree while they are held.
    pub processes: u64,
    /// Threads in the tree while they are held.
    pub threads: u64,
}

impl Idle {
    /// PSS cost per idle connection, in KiB.
    pub fn per_connection_kib(&self) -> f64 {
        let delta = self.pss_after_kib.saturating_sub(self.pss_before_kib) as f64;
        delta / self.connections.max(1) as f64
    }
}

/// Everything read from a results directory.
#[derive(Debug, Default)]
pub struct Results {
    /// Load cells, in file-name order.
    pub cells: Vec<Cell>,
    /// Idle-memory measurements.
    pub idle: Vec<Idle>,
    /// The run's settings and machine (`meta.json`: cpu, kernel, rev,
    /// stamp, duration_s, ...), as strings, when the directory has one.
    pub meta: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Results {
    /// One line naming the machine, the code, the date and the settings,
    /// for a chart's caption; empty without `meta.json`.
    pub fn caption(&self) -> String {
        let Some(m) = &self.meta else {
            return String::new();
        };
        let get = |k: &str| m.get(k).and_then(|v| v.as_str()).unwrap_or("?");
        format!(
            "{} ({} CPUs), Linux {}, sockserv {}, {}; {} s cells after {} s warm-up, {} connections",
            get("cpu"),
            get("cpus"),
            get("kernel"),
            get("rev"),
            get("stamp"),
            get("duration_s"),
            get("warmup_s"),
            get("connections")
        )
    }
}

/// Reads every `*.json` file in `dir`.
pub fn read_dir(dir: &Path) -> anyhow::Result<Results> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("read results directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    let mut out = Results::default();
    for path in paths {
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        match value.get("kind").and_then(|k| k.as_str()) {
            Some("cell") => out.cells.push(
                serde_json::from_value(value)
                    .with_context(|| format!("cell {}", path.display()))?,
            ),
            Some("idle") => out.idle.push(
                serde_json::from_value(value)
                    .with_context(|| format!("idle {}", path.display()))?,
            ),
            Some("meta") => out.meta = value.as_object().cloned(),
            _ => {} // not a comparison file (e.g. a raw sockload report)
        }
    }
    Ok(out)
}

/// Distinct values in first-seen order.
pub fn distinct<'a>(items: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    items
        .filter(|s| seen.insert(s.to_string()))
        .map(str::to_string)
        .collect()
}

/// The Markdown tables: one per workload and transport, then idle memory.
pub fn markdown(r: &Results) -> String {
    let mut md = String::new();
    for workload in distinct(r.cells.iter().map(|c| c.workload.as_str())) {
        if workload == "sweep" {
            continue; // its own table, below
        }
        for transport in distinct(r.cells.iter().map(|c| c.transport.as_str())) {
            let rows: Vec<&Cell> = r
                .cells
                .iter()
                .filter(|c| c.workload == workload && c.transport == transport)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(md, "\n#### {workload} over {transport}\n");
            md.push_str("| policy | req/s | answered: client / server | p50 µs | p99 µs | p99.9 µs | errors | peak PSS MiB | peak procs | peak threads |\n");
            md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            for c in rows {
                let counted = match (&c.server_counted, c.load.warmup_ok) {
                    (Some(s), Some(w)) => format!("{} / {}", c.load.requests_ok + w, s.requests),
                    (Some(s), None) => format!("? / {}", s.requests),
                    (None, Some(w)) => format!("{} / —", c.load.requests_ok + w),
                    (None, None) => "—".to_string(),
                };
                let _ = writeln!(
                    md,
                    "| {} | {:.0} | {} | {} | {} | {} | {} | {:.1} | {} | {} |",
                    c.policy,
                    c.load.requests_per_s,
                    counted,
                    c.load.latency.p50_us,
                    c.load.latency.p99_us,
                    c.load.latency.p999_us,
                    c.load.errors_total,
                    c.peak.pss_kib as f64 / 1024.0,
                    c.peak.processes,
                    c.peak.threads
                );
            }
        }
    }
    sweep_table(&mut md, r);
    if !r.idle.is_empty() {
        md.push_str("\n#### memory held by idle connections\n\n");
        md.push_str("| policy | transport | connections | PSS before MiB | PSS after MiB | KiB per connection | processes | threads |\n");
        md.push_str("|---|---|---:|---:|---:|---:|---:|---:|\n");
        for i in &r.idle {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {} | {} |",
                i.policy,
                i.transport,
                i.connections,
                i.pss_before_kib as f64 / 1024.0,
                i.pss_after_kib as f64 / 1024.0,
                i.per_connection_kib(),
                i.processes,
                i.threads
            );
        }
    }
    md
}

/// The connection-count sweep: per policy, rate, p99 and memory per
/// connection against the number of persistent connections.
fn sweep_table(md: &mut String, r: &Results) {
    let mut rows: Vec<&Cell> = r.cells.iter().filter(|c| c.workload == "sweep").collect();
    if rows.is_empty() {
        return;
    }
    rows.sort_by(|a, b| (&a.policy, a.connections).cmp(&(&b.policy, b.connections)));
    md.push_str("\n#### connection-count sweep (persistent echo over tcp)\n\n");
    md.push_str("| policy | connections | req/s | p99 µs | errors | peak PSS MiB | peak PSS KiB per connection | peak procs | peak threads |\n");
    md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for c in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {} | {} | {:.1} | {:.1} | {} | {} |",
            c.policy,
            c.connections,
            c.load.requests_per_s,
            c.load.latency.p99_us,
            c.load.errors_total,
            c.peak.pss_kib as f64 / 1024.0,
            c.peak.pss_kib as f64 / c.connections.max(1) as f64,
            c.peak.processes,
            c.peak.threads
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(policy: &str, workload: &str, rate: f64) -> String {
        format!(
            r#"{{"kind":"cell","server":"sockserv","policy":"{policy}","transport":"tcp","workload":"{workload}",
            "load":{{"ok_per_s":{rate},"errors_total":0,"latency":{{"p50_us":10,"p99_us":90,"p999_us":200}}}},
            "peak":{{"rss_kib":4096,"pss_kib":2048,"processes":3,"threads":3}}}}"#
        )
    }

    #[test]
    fn reads_cells_and_idle_files_and_renders_tables() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), cell("fork", "connect", 1234.4)).unwrap();
        let counted = cell("thread", "connect", 2000.0)
            .replace(
                r#""peak":"#,
                r#""server_counted":{"requests":4000},"peak":"#,
            )
            .replace(
                r#""errors_total":0,"#,
                r#""errors_total":0,"requests_ok":3900,"warmup_ok":100,"#,
            );
        std::fs::write(dir.path().join("b.json"), counted).unwrap();
        std::fs::write(
            dir.path().join("c.json"),
            r#"{"kind":"idle","server":"sockserv","policy":"fork","transport":"tcp","connections":100,
               "pss_before_kib":1000,"pss_after_kib":11000,"processes":101,"threads":101}"#,
        )
        .unwrap();
        let sweep = |policy: &str, conns: u64| {
            cell(policy, "sweep", 500.0).replace(
                r#""workload":"sweep","#,
                &format!(r#""workload":"sweep","connections":{conns},"#),
            )
        };
        std::fs::write(dir.path().join("d.json"), sweep("fork", 1000)).unwrap();
        std::fs::write(dir.path().join("e.json"), sweep("fork", 16)).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let r = read_dir(dir.path()).unwrap();
        assert_eq!(r.cells.len(), 4);
        assert_eq!(r.idle[0].per_connection_kib(), 100.0);
        let md = markdown(&r);
        assert!(md.contains("#### connect over tcp"), "{md}");
        assert!(!md.contains("#### sweep over tcp"), "{md}");
        let sweep_at = md
            .find("#### connection-count sweep")
            .expect("a sweep table");
        let (at16, at1000) = (
            md.find("| fork | 16 | 500 | 90 | 0 | 2.0 | 128.0 | 3 | 3 |"),
            md.find("| fork | 1000 | 500 | 90 | 0 | 2.0 | 2.0 | 3 | 3 |"),
        );
        assert!(
            sweep_at < at16.expect(&md) && at16 < at1000,
            "rows by connection count: {md}"
        );
        assert!(
            md.contains("| fork | 1234 | — | 10 | 90 | 200 | 0 | 2.0 | 3 | 3 |"),
            "{md}"
        );
        assert!(
            md.contains("| thread | 2000 | 4000 / 4000 | 10 | 90 | 200 | 0 | 2.0 | 3 | 3 |"),
            "{md}"
        );
        assert!(
            md.contains("| fork | tcp | 100 | 1.0 | 10.7 | 100.0 | 101 | 101 |"),
            "{md}"
        );
    }

    #[test]
    fn a_malformed_cell_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("bad.json"),
            r#"{"kind":"cell","policy":"x"}"#,
        )
        .unwrap();
        let err = format!("{:#}", read_dir(dir.path()).unwrap_err());
        assert!(err.contains("bad.json"), "{err}");
    }
}
