//! `scripts/multihost.sh --netns K`: several load hosts on one box, each
//! in its own network namespace, against sockserv in another. The merged
//! report must count exactly what the runs counted and what the server
//! itself answered, its percentiles must lie within the runs', and every
//! namespace and process must be gone afterwards, Ctrl-C included.
//! `--via ssh` takes the hosts-mode path for real: an sshd in each client
//! namespace, ssh from the server namespace. Skipped, with the reason,
//! where `ip netns add` is not permitted (or, for ssh, sshd is missing).

mod common;

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use common::{
    group_members, json_u64, missing_tool, netns_refused, netns_with_prefix, read_json,
    sockload_bin, sockserv_bin, spawn_script, wait_child, wait_until,
};

const CLIENTS: usize = 3;

/// Starts the script with 3 client namespaces, the runs started `via`
/// exec or ssh, unless this box refuses namespaces (then says so and
/// returns None).
fn start(duration: &str, via: &str) -> Option<(tempfile::TempDir, Child)> {
    if let Some(why) = missing_tool(&["jq", "setsid"]).or_else(netns_refused) {
        eprintln!("skipped: multihost --netns needs network namespaces here: {why}");
        return None;
    }
    if via == "ssh" {
        if let Some(why) = missing_tool(&["sshd", "ssh", "ssh-keygen"]) {
            eprintln!("skipped: multihost --via ssh needs openssh-server and -client: {why}");
            return None;
        }
    }
    let out = tempfile::tempdir().unwrap();
    let clients = CLIENTS.to_string();
    let dir = out.path().to_str().unwrap();
    let child = spawn_script(
        "multihost.sh",
        &[
            "--netns",
            &clients,
            "--duration",
            duration,
            "--connections",
            "2",
            "--workers",
            "2",
            "--policy",
            "thread",
            "--sockserv",
            sockserv_bin(),
            "--sockload",
            sockload_bin(),
            "--via",
            via,
            "--out",
            dir,
        ],
    );
    Some((out, child))
}

/// The process groups the script recorded starting.
fn recorded_groups(out: &Path) -> Vec<i32> {
    std::fs::read_to_string(out.join("pids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Everything the script started is gone: its namespaces (named after its
/// pid) and every process in the groups it recorded.
fn assert_torn_down(script_pid: u32, out: &Path) {
    let prefix = format!("mh{script_pid}-");
    assert_eq!(
        netns_with_prefix(&prefix),
        Vec::<String>::new(),
        "namespaces left behind"
    );
    let groups = recorded_groups(out);
    assert!(!groups.is_empty(), "the script recorded no process groups");
    for g in groups {
        assert_eq!(group_members(g), Vec::<i32>::new(), "group {g} still runs");
    }
}

#[test]
fn netns_merge_counts_what_the_runs_and_the_server_counted() {
    merge_counts_what_the_runs_and_the_server_counted("exec", |pid, i| format!("mh{pid}-c{i}"));
}

#[test]
fn netns_over_ssh_merge_counts_what_the_runs_and_the_server_counted() {
    merge_counts_what_the_runs_and_the_server_counted("ssh", |_, i| {
        format!("{}_198.18.0.{}", whoami(), 10 + i)
    });
}

/// The user ssh logs in as (the script's `id -un`).
fn whoami() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Runs the script for 2 s and checks its counts; `host` names load host
/// `i`'s files for the script's pid.
fn merge_counts_what_the_runs_and_the_server_counted(via: &str, host: fn(u32, usize) -> String) {
    let Some((out, mut child)) = start("2s", via) else {
        return;
    };
    let pid = child.id();
    let status = wait_child(&mut child, Duration::from_secs(30));
    let output = child.wait_with_output().unwrap();
    let said = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{said}");
    assert_torn_down(pid, out.path());

    let runs: Vec<serde_json::Value> = (1..=CLIENTS)
        .map(|i| read_json(&out.path().join(format!("{i:02}-{}.json", host(pid, i)))))
        .collect();
    let merged = read_json(&out.path().join("merged.json"));
    let server = read_json(&out.path().join("server-status.json"));
    for run in &runs {
        assert!(
            json_u64(run, "/requests_ok") > 0,
            "a run got nothing: {run}"
        );
        assert_eq!(json_u64(run, "/errors_total"), 0, "{run}");
    }
    let sum: u64 = runs.iter().map(|r| json_u64(r, "/requests_total")).sum();
    assert_eq!(json_u64(&merged, "/runs"), CLIENTS as u64, "{merged}");
    assert_eq!(json_u64(&merged, "/requests_total"), sum, "{said}");
    assert_eq!(json_u64(&server, "/totals/requests"), sum, "{server}");
    // The rate of concurrent runs is their sum.
    let rate = |v: &serde_json::Value| v["requests_per_s"].as_f64().unwrap();
    let rates: f64 = runs.iter().map(rate).sum();
    assert!((rate(&merged) - rates).abs() <= 1e-6 * rates, "{merged}");
    // Each merged percentile lies within the runs' range of it.
    for p in ["min_us", "p50_us", "p90_us", "p99_us", "p999_us", "max_us"] {
        let at = format!("/latency/{p}");
        let values: Vec<u64> = runs.iter().map(|r| json_u64(r, &at)).collect();
        let m = json_u64(&merged, &at);
        let (lo, hi) = (*values.iter().min().unwrap(), *values.iter().max().unwrap());
        assert!(
            (lo..=hi).contains(&m),
            "merged {p} {m} outside the runs' {values:?}"
        );
    }
}

#[test]
fn netns_ctrl_c_tears_down_every_namespace_and_process() {
    let Some((out, mut child)) = start("60s", "exec") else {
        return;
    };
    let pid = child.id();
    // The server and every load host run: one recorded group each.
    let running = wait_until(Duration::from_secs(15), || {
        let groups = recorded_groups(out.path());
        groups.len() == CLIENTS + 1 && groups.iter().all(|&g| !group_members(g).is_empty())
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT to the script");
    let status = wait_child(&mut child, Duration::from_secs(15));
    let output = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(running, "the load never ran: {said}");
    assert_eq!(status.and_then(|s| s.code()), Some(130), "{said}");
    assert!(said.contains("interrupted; tearing down"), "{said}");
    assert_torn_down(pid, out.path());
}
