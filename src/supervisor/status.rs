//! The scoreboard `sockserv status` prints: the master's view of its
//! workers and their counters, as one JSON object (`format_version` 1).
//! The JSON is written here by hand (the core library has no JSON crate);
//! every string goes through one escaping function.

use std::fmt::Write as _;
use std::time::Duration;

use crate::stats::Counters;

/// One worker's line.
#[derive(Debug, Clone)]
pub struct WorkerStatus {
    /// Its pid.
    pub pid: i32,
    /// Its generation (0, then one more per reload).
    pub generation: u64,
    /// `starting`, `serving` or `draining`.
    pub state: &'static str,
    /// How long it has run.
    pub uptime: Duration,
    /// Its counters.
    pub counters: Counters,
    /// Threads of the worker process.
    pub threads: u64,
    /// Resident memory of the worker and its fork children, KiB.
    pub rss_kib: u64,
    /// Proportional memory of the worker and its fork children, KiB.
    pub pss_kib: u64,
}

/// Everything `status` reports.
#[derive(Debug, Clone)]
pub struct Status {
    /// The master's pid.
    pub pid: u32,
    /// How long the master has run.
    pub uptime: Duration,
    /// `tcp`, `udp`, `unix`, `unix-dgram`.
    pub transport: String,
    /// The address served.
    pub addr: String,
    /// The policy's name.
    pub policy: String,
    /// What is served.
    pub service: String,
    /// The workers, oldest first.
    pub workers: Vec<WorkerStatus>,
    /// Over the master's whole life, retired and dead workers included.
    pub totals: Counters,
    /// Workers replaced because they died unasked.
    pub worker_restarts: u64,
    /// The TCP listener's accept queue: (waiting, limit).
    pub listen_queue: Option<(u32, u32)>,
    /// The master process itself (not its workers); `None` for a server
    /// without a supervisor, whose one worker is the process.
    pub master: Option<MasterStatus>,
}

/// The master process's own threads and memory.
#[derive(Debug, Clone, Copy, Default)]
pub struct MasterStatus {
    /// Threads of the master (1: it forks).
    pub threads: u64,
    /// Its resident memory, KiB.
    pub rss_kib: u64,
    /// Its proportional memory, KiB.
    pub pss_kib: u64,
}

impl MasterStatus {
    /// Reads `pid`'s own figures from /proc.
    pub(crate) fn of(pid: i32) -> MasterStatus {
        let rollup = format!("/proc/{pid}/smaps_rollup");
        MasterStatus {
            threads: threads_of(pid),
            rss_kib: proc_field(&rollup, "Rss:").unwrap_or(0),
            pss_kib: proc_field(&rollup, "Pss:").unwrap_or(0),
        }
    }
}

impl Status {
    /// The JSON object, on one line.
    pub fn to_json(&self) -> String {
        let mut o = String::from("{\"format_version\":1");
        let _ = write!(
            o,
            ",\"pid\":{},\"uptime_s\":{:.3}",
            self.pid,
            self.uptime.as_secs_f64()
        );
        for (k, v) in [
            ("transport", &self.transport),
            ("addr", &self.addr),
            ("policy", &self.policy),
            ("service", &self.service),
        ] {
            let _ = write!(o, ",\"{k}\":");
            json_string(&mut o, v);
        }
        o.push_str(",\"workers\":[");
        for (i, w) in self.workers.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            let c = &w.counters;
            let _ = write!(
                o,
                "{{\"pid\":{},\"generation\":{},\"state\":\"{}\",\"uptime_s\":{:.3},\
                 \"connections\":{},\"requests\":{},\"in_flight\":{},\"children\":{},\
                 \"threads\":{},\"rss_kib\":{},\"pss_kib\":{}}}",
                w.pid,
                w.generation,
                w.state,
                w.uptime.as_secs_f64(),
                c.connections,
                c.requests,
                c.in_flight,
                c.children,
                w.threads,
                w.rss_kib,
                w.pss_kib
            );
        }
        let t = &self.totals;
        let _ = write!(
            o,
            "],\"totals\":{{\"connections\":{},\"requests\":{},\"in_flight\":{},\"errors\":{},\
             \"rejected\":{},\"truncated_datagrams\":{},\"worker_restarts\":{}}}",
            t.connections,
            t.requests,
            t.in_flight,
            t.errors,
            t.rejected,
            t.truncated_datagrams,
            self.worker_restarts
        );
        match self.listen_queue {
            Some((len, limit)) => {
                let _ = write!(
                    o,
                    ",\"listen_queue\":{{\"length\":{len},\"limit\":{limit}}}"
                );
            }
            None => o.push_str(",\"listen_queue\":null"),
        }
        match self.master {
            Some(m) => {
                let _ = write!(
                    o,
                    ",\"master\":{{\"threads\":{},\"rss_kib\":{},\"pss_kib\":{}}}}}",
                    m.threads, m.rss_kib, m.pss_kib
                );
            }
            None => o.push_str(",\"master\":null}"),
        }
        o
    }
}

pub(crate) use crate::log::json_string;

/// Threads of `pid` (from /proc/PID/status); 0 when it is gone.
pub(crate) fn threads_of(pid: i32) -> u64 {
    proc_field(&format!("/proc/{pid}/status"), "Threads:").unwrap_or(0)
}

/// RSS and PSS, KiB, of `pid` and all its descendants (a fork-policy
/// worker's children count toward it), from smaps_rollup.
pub(crate) fn memory_of_tree(pid: i32) -> (u64, u64) {
    let mut todo = vec![pid];
    let (mut rss, mut pss) = (0, 0);
    let mut seen = 0;
    while let Some(p) = todo.pop() {
        seen += 1;
        if seen > 100_000 {
            break; // a runaway tree: report what was read
        }
        let rollup = format!("/proc/{p}/smaps_rollup");
        rss += proc_field(&rollup, "Rss:").unwrap_or(0);
        pss += proc_field(&rollup, "Pss:").unwrap_or(0);
        todo.extend(children_of(p));
    }
    (rss, pss)
}

fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
    }
    out
}

fn proc_field(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_has_every_documented_field_and_escapes_strings() {
        let s = Status {
            pid: 7,
            uptime: Duration::from_millis(1500),
            transport: "unix".into(),
            addr: "/tmp/a\"b".into(),
            policy: "fork".into(),
            service: "echo".into(),
            workers: vec![WorkerStatus {
                pid: 8,
                generation: 0,
                state: "serving",
                uptime: Duration::from_secs(1),
                counters: Counters {
                    connections: 3,
                    requests: 5,
                    ..Counters::default()
                },
                threads: 1,
                rss_kib: 100,
                pss_kib: 50,
            }],
            totals: Counters::default(),
            worker_restarts: 2,
            listen_queue: None,
            master: Some(MasterStatus {
                threads: 1,
                rss_kib: 10,
                pss_kib: 5,
            }),
        };
        let j = s.to_json();
        assert!(
            j.starts_with("{\"format_version\":1,\"pid\":7,\"uptime_s\":1.500"),
            "{j}"
        );
        assert!(j.contains("\"addr\":\"/tmp/a\\\"b\""), "{j}");
        assert!(j.contains("\"connections\":3,\"requests\":5"), "{j}");
        assert!(j.contains("\"worker_restarts\":2}"), "{j}");
        assert!(
            j.ends_with(
                "\"listen_queue\":null,\"master\":{\"threads\":1,\"rss_kib\":10,\"pss_kib\":5}}"
            ),
            "{j}"
        );
    }

    #[test]
    fn memory_of_this_process_is_read() {
        let (rss, pss) = memory_of_tree(std::process::id() as i32);
        assert!(rss > 0 && pss > 0 && pss <= rss, "{rss} {pss}");
        assert!(threads_of(std::process::id() as i32) >= 1);
    }
}
