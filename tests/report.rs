//! `sockload report DIR`: the Markdown tables, compare.svg and compare.html
//! from a small results directory, and scripts/render-check.sh rendering
//! the page in headless Chromium (skipped, saying so, without Chromium).

use std::path::Path;
use std::process::{Command, Output};

const SOCKLOAD: &str = env!("CARGO_BIN_EXE_sockload");
const RENDER_CHECK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/render-check.sh");

fn cell(policy: &str, transport: &str, workload: &str, conns: u64, rate: f64, p99: u64) -> String {
    format!(
        r#"{{"kind":"cell","server":"sockserv","policy":"{policy}","transport":"{transport}",
        "workload":"{workload}","connections":{conns},
        "load":{{"ok_per_s":{rate},"errors_total":0,"latency":{{"p50_us":40,"p99_us":{p99},"p999_us":900}}}},
        "peak":{{"rss_kib":8192,"pss_kib":3072,"processes":1,"threads":3}}}}"#
    )
}

fn slow(policy: &str, silent: u64, outcome: &str) -> String {
    format!(
        r#"{{"kind":"slow","policy":"{policy}","transport":"tcp","silent":{silent},"stalled":{silent},
        "bound_s":5.0,{outcome},"note":""}}"#
    )
}

/// A results directory like compare.sh's: matrix cells over two
/// transports, a sweep, idle memory, slow clients and meta.json.
fn fixture(dir: &Path) {
    let mut files: Vec<(String, String)> = Vec::new();
    let mut n = 0;
    for (policy, rate) in [
        ("fork", 11_000.0),
        ("thread", 30_000.0),
        ("event", 52_000.0),
    ] {
        for (transport, f) in [("tcp", 1.0), ("unix", 1.4)] {
            n += 1;
            let body = cell(policy, transport, "connect", 16, rate * f, 900 + 100 * n);
            files.push((format!("{n:03}-{policy}-{transport}-connect-16.json"), body));
        }
    }
    for conns in [16, 1000] {
        for policy in ["fork", "thread", "event"] {
            n += 1;
            let body = cell(
                policy,
                "tcp",
                "sweep",
                conns,
                90_000.0 / (1.0 + conns as f64 / 500.0),
                400 * conns,
            );
            files.push((format!("{n:03}-{policy}-tcp-sweep-{conns}.json"), body));
        }
    }
    for (i, (policy, per)) in [("fork", 36), ("thread", 13), ("event", 1)]
        .iter()
        .enumerate()
    {
        files.push((
            format!("idle-{:02}-{policy}-tcp.json", i + 1),
            format!(
                r#"{{"kind":"idle","server":"sockserv","policy":"{policy}","transport":"tcp",
                "connections":200,"pss_before_kib":2500,"pss_after_kib":{},"processes":1,"threads":3}}"#,
                2500 + per * 200
            ),
        ));
    }
    let answered = |us: f64| format!(r#""latency_us":{us},"locked_out":false,"refused":false"#);
    let locked = r#""latency_us":null,"locked_out":true,"refused":false"#;
    files.push((
        "slow-fork-100.json".into(),
        slow("fork", 100, &answered(812.0)),
    ));
    files.push((
        "slow-thread-100.json".into(),
        slow("thread", 100, &answered(420.0)),
    ));
    files.push((
        "slow-event-100.json".into(),
        slow("event", 100, &answered(95.0)),
    ));
    files.push(("slow-fork-1000.json".into(), slow("fork", 1000, locked)));
    files.push((
        "meta.json".into(),
        r#"{"kind":"meta","cpu":"Fixture CPU","cpus":"2","kernel":"6.1","rev":"abc1234",
           "stamp":"20261201T000000Z","duration_s":"1","warmup_s":"0.25","connections":"16"}"#
            .into(),
    ));
    for (name, body) in files {
        std::fs::write(dir.join(&name), body).unwrap_or_else(|e| panic!("write {name}: {e}"));
    }
}

fn report(dir: &Path) -> Output {
    Command::new(SOCKLOAD)
        .arg("report")
        .arg(dir)
        .arg("--chart")
        .arg(dir.join("compare.svg"))
        .arg("--html")
        .arg(dir.join("compare.html"))
        .output()
        .expect("run sockload report")
}

#[test]
fn report_writes_tables_chart_and_a_self_contained_page() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let out = report(dir.path());
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(md.contains("#### connect over unix"), "{md}");
    assert!(md.contains("#### slow clients"), "{md}");
    assert!(md.contains("| policy | N = 100 | N = 1000 |"), "{md}");
    assert!(md.contains("| fork | 812 µs | locked out (>5 s) |"), "{md}");
    assert!(md.contains("| event | 95 µs | — |"), "{md}");
    let svg = std::fs::read_to_string(dir.path().join("compare.svg")).unwrap();
    for want in [
        "memory per idle connection",
        "slow clients",
        "sweep: p99 latency",
        "locked",
    ] {
        assert!(svg.contains(want), "the chart lacks {want:?}");
    }
    let html = std::fs::read_to_string(dir.path().join("compare.html")).unwrap();
    assert!(
        html.contains(svg.trim_end()),
        "the page does not inline the chart"
    );
    assert_eq!(html.matches("<table>").count(), 5, "{html}");
    assert!(
        html.contains("<td class=\"n\">locked out (&gt;5 s)</td>"),
        "{html}"
    );
    assert!(
        !html.contains("<script") && !html.contains("src="),
        "{html}"
    );
}

#[test]
fn a_malformed_slow_clients_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let bad = r#""latency_us":null,"locked_out":false,"refused":false"#;
    std::fs::write(
        dir.path().join("slow-event-1000.json"),
        slow("event", 1000, bad),
    )
    .unwrap();
    let out = report(dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("slow-event-1000.json"), "{err}");
    assert!(err.contains("latency_us is null"), "{err}");
    assert!(!dir.path().join("compare.html").exists());
}

/// Runs render-check.sh on `dir` with a small window (quick to decode);
/// None when the machine has no Chromium.
fn render_check(dir: &Path) -> Option<Output> {
    let out = Command::new("bash")
        .args([RENDER_CHECK, "--width", "900", "--height", "700"])
        .arg(dir)
        .output()
        .expect("run scripts/render-check.sh");
    if out.status.code() == Some(3) {
        eprintln!(
            "SKIPPED: render-check.sh found no Chromium ({}); apt-get install -y chromium to run it",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    Some(out)
}

#[test]
fn render_check_passes_the_rendered_report_and_fails_a_blank_page() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    assert!(report(dir.path()).status.success());
    let Some(out) = render_check(dir.path()) else {
        return;
    };
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("render-check: ") && stdout.contains("900x700"),
        "{stdout}"
    );
    assert!(
        stdout.contains("5 tables") && stdout.contains("the chart inline"),
        "{stdout}"
    );
    let png = std::fs::read(dir.path().join("compare.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    // A page that renders to nothing fails the check.
    let blank = tempfile::tempdir().unwrap();
    std::fs::write(
        blank.path().join("compare.html"),
        "<!DOCTYPE html><html><body></body></html>",
    )
    .unwrap();
    let out = render_check(blank.path()).expect("Chromium was there a moment ago");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("blank or uniform"), "{stderr}");
}
