//! `scripts/soak.sh`, the chaos soak, in a short version: each policy gets
//! 2.5 s of chaos (at least one whole cycle: a worker and a fork child
//! SIGKILLed, a worker SIGSTOPped until --worker-timeout replaces it, TTIN,
//! TTOU, HUP and USR2) under a steady sockload stream. The five policies
//! run at once, each with its own server and load, so the test takes about
//! one policy's time. Every must-be-zero field of each policy's JSON line is
//! checked, and that the chaos really happened.

mod common;

use std::process::Child;
use std::time::Duration;

use common::{json_u64, missing_tool, sockload_bin, sockserv_bin, spawn_script, wait_child};

const POLICIES: [&str; 5] = ["sync", "fork", "thread", "pool", "event"];

fn start(policy: &str) -> Child {
    // 10 ms replies: a fork child lives long enough for the chaos loop to
    // find one on a loaded CI machine (at 1 ms it once found none in 3 s).
    let args = [
        "2.5",
        "--policies",
        policy,
        "--rate",
        "200",
        "--delay-ms",
        "10",
    ];
    let bins = ["--sockserv", sockserv_bin(), "--sockload", sockload_bin()];
    spawn_script("soak.sh", &[&args[..], &bins[..]].concat())
}

#[test]
fn chaos_soak_loses_nothing_but_what_was_in_flight_under_every_policy() {
    if let Some(why) = missing_tool(&["jq"]) {
        eprintln!("skipped: scripts/soak.sh needs jq: {why}");
        return;
    }
    let mut runs: Vec<(&str, Child)> = POLICIES.iter().map(|&p| (p, start(p))).collect();
    let mut lines = Vec::new();
    for (policy, child) in &mut runs {
        let status = wait_child(child, Duration::from_secs(90));
        let mut out = String::new();
        let mut err = String::new();
        use std::io::Read;
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let line = out.lines().last().unwrap_or_default().to_string();
        lines.push((*policy, status, line, err));
    }
    for (policy, status, line, err) in lines {
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{policy}: no JSON line ({e}): {line:?}\n{err}"));
        let said = format!("{policy}: {v}\n{err}");
        assert_eq!(v["policy"], policy, "{said}");
        // The must-be-zero fields.
        assert_eq!(json_u64(&v, "/refused"), 0, "{said}");
        assert_eq!(json_u64(&v, "/wrong_replies"), 0, "{said}");
        assert_eq!(json_u64(&v, "/zombies"), 0, "{said}");
        assert_eq!(json_u64(&v, "/upgrades_failed"), 0, "{said}");
        assert!(
            json_u64(&v, "/lost_in_flight") <= json_u64(&v, "/lost_bound"),
            "{said}"
        );
        assert_eq!(json_u64(&v, "/workers_after"), 2, "{said}");
        assert!(
            json_u64(&v, "/master_fds_last") <= json_u64(&v, "/master_fds_first"),
            "{said}"
        );
        assert_eq!(v["memory_flat"], true, "{said}");
        assert_eq!(v["failures"], serde_json::json!([]), "{said}");
        assert_eq!(v["passed"], true, "{said}");
        assert_eq!(status.and_then(|s| s.code()), Some(0), "{said}");
        // The chaos happened, and requests were served through it.
        assert!(json_u64(&v, "/requests_ok") > 0, "{said}");
        assert!(json_u64(&v, "/kills/worker") >= 1, "{said}");
        assert!(json_u64(&v, "/kills/hang") >= 1, "{said}");
        assert!(json_u64(&v, "/scales") >= 1, "{said}");
        assert!(json_u64(&v, "/reloads") >= 1, "{said}");
        assert!(json_u64(&v, "/upgrades") >= 1, "{said}");
        if policy == "fork" {
            assert!(json_u64(&v, "/kills/child") >= 1, "{said}");
        }
    }
}
