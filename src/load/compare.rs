//! `sockload report DIR`: turns a directory of comparison results (written
//! by `scripts/compare.sh`) into Markdown tables, an SVG chart and an HTML
//! page.
//!
//! Each `*.json` file in the directory is one of:
//! - a load cell: `{"kind":"cell","server","policy","transport","workload",
//!   "load":{sockload --json},"peak":{"rss_kib","pss_kib","processes","threads"}}`
//! - an idle-memory measurement: `{"kind":"idle","server","policy",
//!   "transport","connections","pss_before_kib","pss_after_kib",
//!   "rss_before_kib","rss_after_kib","processes","threads"}`
//! - a slow-clients measurement (`slow-<policy>-<n>.json`):
//!   `{"kind":"slow","policy","transport","silent","stalled","bound_s",
//!   "latency_us","locked_out","refused","note"}`
//! - the run's settings: `{"kind":"meta", ...}`
//!
//! [`tables`] turns them into [`Table`]s, which [`markdown`] renders for
//! compare.md and [`super::html`] for compare.html.
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

/// One slow-clients measurement (`slow-<policy>-<n>.json`): one normal
/// client's echo round trip while `silent` connections (connected, sent
/// nothing) and `stalled` ones (a partial request line, then nothing) are
/// held open against the server.
#[derive(Debug, Clone, Deserialize)]
pub struct Slow {
    /// The policy label.
    pub policy: String,
    /// The transport.
    pub transport: String,
    /// Connections that connected and sent nothing.
    pub silent: u64,
    /// Connections that sent a partial request line and then nothing.
    pub stalled: u64,
    /// How long the normal client waited for its answer, seconds.
    pub bound_s: f64,
    /// The normal client's round trip, µs; null when locked out or refused.
    pub latency_us: Option<f64>,
    /// No answer within `bound_s`.
    pub locked_out: bool,
    /// The normal client's connect was refused or reset.
    pub refused: bool,
    /// Free text (e.g. how many stalled connections could not be opened).
    #[serde(default)]
    pub note: String,
}

/// What the normal client got in a slow-clients measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SlowOutcome {
    /// Answered after this many µs.
    Answered(f64),
    /// No answer within this many seconds.
    LockedOut(f64),
    /// Its connect was refused or reset.
    Refused,
}

impl Slow {
    /// What the normal client got.
    pub fn outcome(&self) -> SlowOutcome {
        match (self.refused, self.locked_out, self.latency_us) {
            (true, _, _) => SlowOutcome::Refused,
            (false, true, _) => SlowOutcome::LockedOut(self.bound_s),
            (false, false, us) => SlowOutcome::Answered(us.unwrap_or(0.0)),
        }
    }

    /// The fields agree with each other: a latency exactly when the client
    /// was answered, and a positive bound.
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.bound_s.is_finite() && self.bound_s > 0.0,
            "bound_s must be a positive number of seconds, not {}",
            self.bound_s
        );
        anyhow::ensure!(
            !(self.locked_out && self.refused),
            "locked_out and refused are both true"
        );
        match (self.locked_out || self.refused, self.latency_us) {
            (true, Some(us)) => anyhow::bail!(
                "latency_us is {us} but the client was {}: it must be null",
                if self.refused {
                    "refused"
                } else {
                    "locked out"
                }
            ),
            (false, None) => {
                anyhow::bail!("latency_us is null but neither locked_out nor refused is true")
            }
            (false, Some(us)) if !(us.is_finite() && us >= 0.0) => {
                anyhow::bail!("latency_us must be a non-negative number of µs, not {us}")
            }
            _ => Ok(()),
        }
    }

    /// The table's text for the outcome: "812 µs", "locked out (>5 s)", "refused".
    pub fn text(&self) -> String {
        match self.outcome() {
            SlowOutcome::Answered(us) => human_us(us),
            SlowOutcome::LockedOut(s) => format!("locked out (>{} s)", trim_float(s)),
            SlowOutcome::Refused => "refused".to_string(),
        }
    }
}

/// A duration in µs as people read it: "812 µs", "12.3 ms", "1.25 s".
pub fn human_us(us: f64) -> String {
    if us < 10_000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// `5` for 5.0, `2.5` for 2.5.
fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Everything read from a results directory.
#[derive(Debug, Default)]
pub struct Results {
    /// Load cells, in file-name order.
    pub cells: Vec<Cell>,
    /// Idle-memory measurements.
    pub idle: Vec<Idle>,
    /// Slow-clients measurements, in file-name order.
    pub slow: Vec<Slow>,
    /// The notes and errors of the cells and idle measurements, one line
    /// each ("prefork tcp persistent: ...", as `results.py notes` lists them).
    pub notes: Vec<String>,
    /// The run's settings and machine (`meta.json`: cpu, kernel, rev,
    /// stamp, duration_s, ...), as strings, when the directory has one.
    pub meta: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Results {
    /// A `meta.json` value, or "?".
    pub fn meta(&self, key: &str) -> &str {
        self.meta
            .as_ref()
            .and_then(|m| m.get(key))
            .and_then(|v| v.as_str())
            .unwrap_or("?")
    }

    /// One line naming the machine, the code, the date and the settings,
    /// for a chart's caption; empty without `meta.json`.
    pub fn caption(&self) -> String {
        if self.meta.is_none() {
            return String::new();
        }
        let get = |k| self.meta(k);
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

    /// Every policy, in the order the tables and the chart show them:
    /// first seen among the cells (file-name order), then the idle and the
    /// slow-clients measurements.
    pub fn policies(&self) -> Vec<String> {
        distinct(
            (self.cells.iter().map(|c| c.policy.as_str()))
                .chain(self.idle.iter().map(|i| i.policy.as_str()))
                .chain(self.slow.iter().map(|s| s.policy.as_str())),
        )
    }

    /// The position of `policy` in [`Results::policies`] (last if unknown).
    fn rank(&self, policy: &str) -> usize {
        self.policies()
            .iter()
            .position(|p| p == policy)
            .unwrap_or(usize::MAX)
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
    let mut slow_files: Vec<String> = Vec::new();
    for path in paths {
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        if matches!(kind, "cell" | "idle" | "idle-failed") {
            out.notes.extend(note_lines(&value));
        }
        match kind {
            "cell" => out.cells.push(
                serde_json::from_value(value)
                    .with_context(|| format!("cell {}", path.display()))?,
            ),
            "idle" => out.idle.push(
                serde_json::from_value(value)
                    .with_context(|| format!("idle {}", path.display()))?,
            ),
            "slow" => {
                let slow: Slow = serde_json::from_value(value)
                    .map_err(anyhow::Error::from)
                    .and_then(|s: Slow| s.check().map(|()| s))
                    .with_context(|| format!("slow-clients file {}", path.display()))?;
                let same = |s: &Slow| {
                    (&s.policy, &s.transport, s.silent)
                        == (&slow.policy, &slow.transport, slow.silent)
                };
                if let Some(i) = out.slow.iter().position(same) {
                    anyhow::bail!(
                        "{} and {} both measure {} over {} with {} silent connections",
                        slow_files[i],
                        path.display(),
                        slow.policy,
                        slow.transport,
                        slow.silent
                    );
                }
                slow_files.push(path.display().to_string());
                out.slow.push(slow);
            }
            "meta" => out.meta = value.as_object().cloned(),
            _ => {} // not a comparison file (e.g. a raw sockload report)
        }
    }
    Ok(out)
}

/// A cell's or idle measurement's note and error, as `results.py notes`
/// words them.
fn note_lines(v: &serde_json::Value) -> Vec<String> {
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("?");
    let what = match v.get("kind").and_then(|k| k.as_str()) {
        Some("cell") => format!("{} {} {}", s("policy"), s("transport"), s("workload")),
        _ => format!("idle {} {}", s("policy"), s("transport")),
    };
    let failed = v.get("failed").and_then(|f| f.as_bool()).unwrap_or(false);
    let mut lines = Vec::new();
    for (key, label) in [("note", ""), ("error", "error: ")] {
        if let Some(text) = v
            .get(key)
            .and_then(|x| x.as_str())
            .filter(|t| !t.is_empty())
        {
            let failed = if key == "error" && failed {
                " failed:"
            } else {
                ""
            };
            lines.push(format!("{what}:{failed} {label}{text}"));
        }
    }
    lines
}

/// Distinct values in first-seen order.
pub fn distinct<'a>(items: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    items
        .filter(|s| seen.insert(s.to_string()))
        .map(str::to_string)
        .collect()
}

/// One table of the report, rendered as Markdown here and as HTML by
/// [`super::html`].
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// The heading ("persistent over tcp").
    pub title: String,
    /// A sentence under the heading; may be empty.
    pub intro: String,
    /// Column names.
    pub header: Vec<String>,
    /// Per column: right-aligned (numbers).
    pub right: Vec<bool>,
    /// The cells, row by row.
    pub rows: Vec<Vec<String>>,
    /// Lines listed under the table; may be empty.
    pub notes: Vec<String>,
}

impl Table {
    fn new(title: String, header: &[(&str, bool)]) -> Table {
        Table {
            title,
            intro: String::new(),
            header: header.iter().map(|(h, _)| h.to_string()).collect(),
            right: header.iter().map(|(_, r)| *r).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn markdown(&self, md: &mut String) {
        let _ = writeln!(md, "\n#### {}\n", self.title);
        if !self.intro.is_empty() {
            let _ = writeln!(md, "{}\n", self.intro);
        }
        let _ = writeln!(md, "| {} |", self.header.join(" | "));
        let align: Vec<&str> = (self.right.iter())
            .map(|&r| if r { "---:" } else { "---" })
            .collect();
        let _ = writeln!(md, "|{}|", align.join("|"));
        for row in &self.rows {
            let _ = writeln!(md, "| {} |", row.join(" | "));
        }
        if !self.notes.is_empty() {
            md.push('\n');
            for n in &self.notes {
                let _ = writeln!(md, "- {n}");
            }
        }
    }
}

/// The Markdown tables: one per workload and transport, the sweep, idle
/// memory, slow clients.
pub fn markdown(r: &Results) -> String {
    let mut md = String::new();
    for t in tables(r) {
        t.markdown(&mut md);
    }
    md
}

/// Every table, in the report's order.
pub fn tables(r: &Results) -> Vec<Table> {
    let mut out = matrix_tables(r);
    out.extend(sweep_table(r));
    out.extend(idle_table(r));
    out.extend(slow_table(r));
    out
}

/// One table per workload and transport (the sweep excepted).
fn matrix_tables(r: &Results) -> Vec<Table> {
    let mut out = Vec::new();
    for workload in distinct(r.cells.iter().map(|c| c.workload.as_str())) {
        if workload == "sweep" {
            continue; // its own table
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
            let mut t = Table::new(
                format!("{workload} over {transport}"),
                &[
                    ("policy", false),
                    ("req/s", true),
                    ("answered: client / server", true),
                    ("p50 µs", true),
                    ("p99 µs", true),
                    ("p99.9 µs", true),
                    ("errors", true),
                    ("peak PSS MiB", true),
                    ("peak procs", true),
                    ("peak threads", true),
                ],
            );
            for c in rows {
                let counted = match (&c.server_counted, c.load.warmup_ok) {
                    (Some(s), Some(w)) => format!("{} / {}", c.load.requests_ok + w, s.requests),
                    (Some(s), None) => format!("? / {}", s.requests),
                    (None, Some(w)) => format!("{} / —", c.load.requests_ok + w),
                    (None, None) => "—".to_string(),
                };
                t.rows.push(vec![
                    c.policy.clone(),
                    format!("{:.0}", c.load.requests_per_s),
                    counted,
                    c.load.latency.p50_us.to_string(),
                    c.load.latency.p99_us.to_string(),
                    c.load.latency.p999_us.to_string(),
                    c.load.errors_total.to_string(),
                    format!("{:.1}", c.peak.pss_kib as f64 / 1024.0),
                    c.peak.processes.to_string(),
                    c.peak.threads.to_string(),
                ]);
            }
            out.push(t);
        }
    }
    out
}

/// The sweep's cells (persistent echo at each connection count), by policy
/// in report order and then by connection count.
pub fn sweep_cells(r: &Results) -> Vec<&Cell> {
    let mut rows: Vec<&Cell> = r.cells.iter().filter(|c| c.workload == "sweep").collect();
    rows.sort_by_key(|c| (r.rank(&c.policy), c.connections));
    rows
}

/// The connection-count sweep: per policy, rate, p99 and memory per
/// connection against the number of persistent connections.
fn sweep_table(r: &Results) -> Option<Table> {
    let rows = sweep_cells(r);
    if rows.is_empty() {
        return None;
    }
    let mut t = Table::new(
        "connection-count sweep (persistent echo over tcp)".into(),
        &[
            ("policy", false),
            ("connections", true),
            ("req/s", true),
            ("p99 µs", true),
            ("errors", true),
            ("peak PSS MiB", true),
            ("peak PSS KiB per connection", true),
            ("peak procs", true),
            ("peak threads", true),
        ],
    );
    for c in rows {
        t.rows.push(vec![
            c.policy.clone(),
            c.connections.to_string(),
            format!("{:.0}", c.load.requests_per_s),
            c.load.latency.p99_us.to_string(),
            c.load.errors_total.to_string(),
            format!("{:.1}", c.peak.pss_kib as f64 / 1024.0),
            format!("{:.1}", c.peak.pss_kib as f64 / c.connections.max(1) as f64),
            c.peak.processes.to_string(),
            c.peak.threads.to_string(),
        ]);
    }
    Some(t)
}

/// PSS before and after holding idle connections, per policy.
fn idle_table(r: &Results) -> Option<Table> {
    if r.idle.is_empty() {
        return None;
    }
    let mut t = Table::new(
        "memory held by idle connections".into(),
        &[
            ("policy", false),
            ("transport", false),
            ("connections", true),
            ("PSS before MiB", true),
            ("PSS after MiB", true),
            ("KiB per connection", true),
            ("processes", true),
            ("threads", true),
        ],
    );
    for i in &r.idle {
        t.rows.push(vec![
            i.policy.clone(),
            i.transport.clone(),
            i.connections.to_string(),
            format!("{:.1}", i.pss_before_kib as f64 / 1024.0),
            format!("{:.1}", i.pss_after_kib as f64 / 1024.0),
            format!("{:.1}", i.per_connection_kib()),
            i.processes.to_string(),
            i.threads.to_string(),
        ]);
    }
    Some(t)
}

/// The distinct silent-connection counts of the slow-clients files, ascending.
pub fn slow_counts(r: &Results) -> Vec<u64> {
    let set: BTreeSet<u64> = r.slow.iter().map(|s| s.silent).collect();
    set.into_iter().collect()
}

/// The slow-clients rows: (row label, policy, transport), in report order;
/// the label names the transport only when there are several.
pub fn slow_rows(r: &Results) -> Vec<(String, String, String)> {
    let transports = distinct(r.slow.iter().map(|s| s.transport.as_str()));
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for s in &r.slow {
        if !pairs.contains(&(s.policy.as_str(), s.transport.as_str())) {
            pairs.push((&s.policy, &s.transport));
        }
    }
    pairs.sort_by_key(|(p, t)| (r.rank(p), transports.iter().position(|x| x == t)));
    pairs
        .into_iter()
        .map(|(p, t)| {
            let label = if transports.len() > 1 {
                format!("{p} over {t}")
            } else {
                p.to_string()
            };
            (label, p.to_string(), t.to_string())
        })
        .collect()
}

/// Slow clients: rows policy, columns N (silent connections held), each
/// cell the normal client's round trip, "locked out (>B s)" or "refused".
fn slow_table(r: &Results) -> Option<Table> {
    if r.slow.is_empty() {
        return None;
    }
    let counts = slow_counts(r);
    let names: Vec<String> = counts.iter().map(|n| format!("N = {n}")).collect();
    let mut header = vec![("policy", false)];
    header.extend(names.iter().map(|n| (n.as_str(), true)));
    let mut t = Table::new("slow clients".into(), &header);
    t.intro = "One normal client's echo round trip while N silent connections (connected, \
               nothing sent) and N stalled ones (part of a request line, then nothing) are \
               held open. Locked out: no answer within the bound; refused: its connect was \
               refused or reset."
        .into();
    for (label, policy, transport) in slow_rows(r) {
        let mut row = vec![label];
        for &n in &counts {
            let found = (r.slow.iter())
                .find(|s| s.policy == policy && s.transport == transport && s.silent == n);
            row.push(found.map_or_else(|| "—".to_string(), Slow::text));
            if let Some(s) = found {
                let what = format!("{policy} over {transport} at N = {n}");
                if s.stalled != s.silent {
                    t.notes.push(format!(
                        "{what}: {} silent, {} stalled connections",
                        s.silent, s.stalled
                    ));
                }
                if !s.note.is_empty() {
                    t.notes.push(format!("{what}: {}", s.note));
                }
            }
        }
        t.rows.push(row);
    }
    Some(t)
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

    fn slow_file(policy: &str, silent: u64, outcome: &str, note: &str) -> String {
        format!(
            r#"{{"kind":"slow","policy":"{policy}","transport":"tcp","silent":{silent},
               "stalled":{silent},"bound_s":5.0,{outcome},"note":"{note}"}}"#
        )
    }

    const ANSWERED: &str = r#""latency_us":812.0,"locked_out":false,"refused":false"#;
    const LOCKED: &str = r#""latency_us":null,"locked_out":true,"refused":false"#;
    const REFUSED: &str = r#""latency_us":null,"locked_out":false,"refused":true"#;

    #[test]
    fn reads_slow_clients_files_into_a_table_in_policy_order() {
        let dir = tempfile::tempdir().unwrap();
        let w = |name: &str, body: String| std::fs::write(dir.path().join(name), body).unwrap();
        // The cells put thread before fork; file names put fork first.
        w("001-thread.json", cell("thread", "connect", 100.0));
        w("002-fork.json", cell("fork", "connect", 100.0));
        w(
            "slow-event-100.json",
            slow_file("event", 100, REFUSED, "reset & gone"),
        );
        w("slow-fork-100.json", slow_file("fork", 100, ANSWERED, ""));
        w("slow-fork-1000.json", slow_file("fork", 1000, LOCKED, ""));
        let odd = slow_file("thread", 1000, ANSWERED, "")
            .replace(r#""stalled":1000"#, r#""stalled":997"#);
        w("slow-thread-1000.json", odd.replace("812.0", "25000"));
        let r = read_dir(dir.path()).unwrap();
        assert_eq!(r.slow.len(), 4);
        assert_eq!(r.policies(), ["thread", "fork", "event"]);
        assert_eq!(r.slow[0].outcome(), SlowOutcome::Refused);
        assert_eq!(r.slow[1].outcome(), SlowOutcome::Answered(812.0));
        assert_eq!(r.slow[2].outcome(), SlowOutcome::LockedOut(5.0));
        let md = markdown(&r);
        let table = &md[md.find("#### slow clients").expect(&md)..];
        let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| ")).collect();
        assert_eq!(
            rows,
            [
                "| policy | N = 100 | N = 1000 |",
                "| thread | — | 25.0 ms |",
                "| fork | 812 µs | locked out (>5 s) |",
                "| event | refused | — |",
            ],
            "{md}"
        );
        assert!(table.contains("|---|---:|---:|"), "{md}");
        assert!(
            table.contains("- thread over tcp at N = 1000: 1000 silent, 997 stalled connections"),
            "{md}"
        );
        assert!(
            table.contains("- event over tcp at N = 100: reset & gone"),
            "{md}"
        );
    }

    #[test]
    fn malformed_slow_clients_files_are_errors_naming_the_file() {
        let cases = [
            (
                r#"{"kind":"slow","policy":"fork"}"#.to_string(),
                "missing field",
            ),
            (
                slow_file(
                    "fork",
                    1,
                    r#""latency_us":null,"locked_out":false,"refused":false"#,
                    "",
                ),
                "latency_us is null",
            ),
            (
                slow_file(
                    "fork",
                    1,
                    r#""latency_us":9.0,"locked_out":true,"refused":false"#,
                    "",
                ),
                "it must be null",
            ),
            (
                slow_file("fork", 1, ANSWERED, "").replace(r#""bound_s":5.0"#, r#""bound_s":0"#),
                "bound_s",
            ),
            (
                slow_file(
                    "fork",
                    1,
                    r#""latency_us":null,"locked_out":true,"refused":true"#,
                    "",
                ),
                "both true",
            ),
        ];
        for (body, why) in cases {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("slow-fork-1.json"), &body).unwrap();
            let err = format!("{:#}", read_dir(dir.path()).unwrap_err());
            assert!(
                err.contains("slow-fork-1.json") && err.contains(why),
                "{why}: {err}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        for name in ["slow-fork-1.json", "slow-fork-1b.json"] {
            std::fs::write(dir.path().join(name), slow_file("fork", 1, ANSWERED, "")).unwrap();
        }
        let err = format!("{:#}", read_dir(dir.path()).unwrap_err());
        assert!(
            err.contains("slow-fork-1.json and") && err.contains("slow-fork-1b.json both"),
            "{err}"
        );
    }

    #[test]
    fn notes_and_durations_read_as_people_write_them() {
        let dir = tempfile::tempdir().unwrap();
        let noted = cell("pool", "persistent", 1.0).replace(
            r#""kind":"cell","#,
            r#""kind":"cell","note":"capped","error":"no server","failed":true,"#,
        );
        std::fs::write(dir.path().join("a.json"), noted).unwrap();
        std::fs::write(
            dir.path().join("b.json"),
            r#"{"kind":"idle-failed","policy":"sync","transport":"tcp","error":"hold failed"}"#,
        )
        .unwrap();
        let r = read_dir(dir.path()).unwrap();
        assert_eq!(
            r.notes,
            [
                "pool tcp persistent: capped",
                "pool tcp persistent: failed: error: no server",
                "idle sync tcp: error: hold failed",
            ]
        );
        assert_eq!(human_us(812.4), "812 µs");
        assert_eq!(human_us(25_000.0), "25.0 ms");
        assert_eq!(human_us(5_400_000.0), "5.40 s");
        assert_eq!(trim_float(5.0), "5");
        assert_eq!(trim_float(2.5), "2.5");
    }
}
