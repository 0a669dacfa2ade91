//! `sockserv status --control PATH [--json]`: asks a running master for
//! its scoreboard and prints it, as mod_status does: one line per worker
//! (processes, threads, memory: the fork-vs-thread reading), then totals
//! and the listen queue.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

/// Exit 0 with the scoreboard, 1 when the server cannot be asked.
pub fn run(control: &Path, json: bool) -> ExitCode {
    match fetch(control) {
        Ok(text) if json => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Ok(text) => match serde_json::from_str::<Value>(&text) {
            Ok(v) if v.get("error").is_some() => {
                eprintln!("sockserv: {}: {}", control.display(), v["error"]);
                ExitCode::FAILURE
            }
            Ok(v) => {
                print!("{}", render(&v));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sockserv: {}: not a status reply: {e}", control.display());
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("sockserv: {}: {e}", control.display());
            ExitCode::FAILURE
        }
    }
}

fn fetch(control: &Path) -> std::io::Result<String> {
    let mut s = UnixStream::connect(control)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"status\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text)
}

fn num(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn text<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("?")
}

/// One line of the scoreboard's table, its columns aligned.
fn row(c: [&str; 11]) -> String {
    format!(
        "{:>8} {:>4} {:<9} {:>8} {:>11} {:>11} {:>9} {:>8} {:>7} {:>10} {:>10}\n",
        c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10]
    )
}

/// The human scoreboard.
fn render(v: &Value) -> String {
    let mut o = String::new();
    let uptime = v.get("uptime_s").and_then(Value::as_f64).unwrap_or(0.0);
    o.push_str(&format!(
        "sockserv {} {} policy {} service {}: master pid {}, up {:.0} s\n\n",
        text(v, "transport"),
        text(v, "addr"),
        text(v, "policy"),
        text(v, "service"),
        num(v, "pid"),
        uptime
    ));
    o.push_str(&row([
        "pid",
        "gen",
        "state",
        "up s",
        "connections",
        "requests",
        "in flight",
        "children",
        "threads",
        "RSS KiB",
        "PSS KiB",
    ]));
    let empty = Vec::new();
    let workers = v.get("workers").and_then(Value::as_array).unwrap_or(&empty);
    let (mut rss, mut pss, mut threads, mut children) = (0, 0, 0, 0);
    for w in workers {
        let up = w.get("uptime_s").and_then(Value::as_f64).unwrap_or(0.0);
        let n = |k| num(w, k).to_string();
        o.push_str(&row([
            &n("pid"),
            &n("generation"),
            text(w, "state"),
            &format!("{up:.0}"),
            &n("connections"),
            &n("requests"),
            &n("in_flight"),
            &n("children"),
            &n("threads"),
            &n("rss_kib"),
            &n("pss_kib"),
        ]));
        rss += num(w, "rss_kib");
        pss += num(w, "pss_kib");
        threads += num(w, "threads");
        children += num(w, "children");
    }
    if let Some(m) = v.get("master").filter(|m| !m.is_null()) {
        let n = |k| num(m, k).to_string();
        let pid = num(v, "pid").to_string();
        o.push_str(&row([
            &pid,
            "",
            "master",
            "",
            "",
            "",
            "",
            "",
            &n("threads"),
            &n("rss_kib"),
            &n("pss_kib"),
        ]));
        rss += num(m, "rss_kib");
        pss += num(m, "pss_kib");
        threads += num(m, "threads");
    }
    let t = &v["totals"];
    o.push_str(&format!(
        "\n{} workers, {children} children, {threads} threads, {} MiB PSS ({} MiB RSS) in all\n",
        workers.len(),
        pss / 1024,
        rss / 1024
    ));
    o.push_str(&format!(
        "totals: {} connections, {} requests, {} in flight, {} errors, {} rejected, \
         {} truncated datagrams, {} worker restarts\n",
        num(t, "connections"),
        num(t, "requests"),
        num(t, "in_flight"),
        num(t, "errors"),
        num(t, "rejected"),
        num(t, "truncated_datagrams"),
        num(t, "worker_restarts")
    ));
    match v.get("listen_queue") {
        Some(q) if !q.is_null() => o.push_str(&format!(
            "listen queue: {} waiting of {}\n",
            num(q, "length"),
            num(q, "limit")
        )),
        _ => o.push_str("listen queue: n/a (not a TCP listener)\n"),
    }
    o
}
