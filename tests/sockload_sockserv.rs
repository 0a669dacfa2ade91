//! sockload against a real sockserv: its counts match what the server
//! says it answered.

mod common;

use std::process::Command;
use std::time::Duration;

use common::Sockserv;

fn sockload(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_sockload"))
        .args(args)
        .args(["--json"])
        .output()
        .expect("run sockload");
    assert!(
        out.status.success(),
        "sockload {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("sockload --json output")
}

#[test]
fn connect_mode_counts_equal_the_requests_sockserv_handled() {
    for transport in ["tcp", "unix"] {
        let (listen, _dir) = common::listen_for(transport);
        let mut server = Sockserv::start(&[
            "--no-supervisor",
            "--transport",
            transport,
            "--listen",
            &listen,
            "--policy",
            "thread",
        ]);
        let report = sockload(&[
            "--transport",
            transport,
            "--connect",
            &server.addr,
            "--mode",
            "connect",
            "--requests",
            "300",
            "--connections",
            "4",
            "--warmup",
            "0",
        ]);
        assert_eq!(report["requests_ok"], 300, "{report}");
        assert_eq!(report["errors_total"], 0, "{report}");
        // One request per connection: the server's own tally of handled
        // connections, logged when it stops, must be the same number.
        assert!(server.stop().expect("stops").success());
        let stopped = server
            .wait_log(Duration::from_secs(5), |l| {
                l.contains("\"msg\":\"stopped\"")
            })
            .expect("stopped line");
        assert_eq!(
            common::json_field(&stopped, "handled").as_deref(),
            Some("300"),
            "{stopped}"
        );
    }
}

#[test]
fn expect_upper_against_the_echo_service_counts_every_reply_wrong() {
    let server = Sockserv::start(&["--listen", "127.0.0.1:0"]);
    let out = Command::new(env!("CARGO_BIN_EXE_sockload"))
        .args([
            "--connect",
            &server.addr,
            "--requests",
            "50",
            "--warmup",
            "0",
            "--expect",
            "upper",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "wrong replies fail the run");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["errors"]["wrong_reply"], 50, "{report}");
    assert_eq!(report["requests_ok"], 0, "{report}");
}

#[test]
fn datagram_transports_round_trip_through_sockserv() {
    for transport in ["udp", "unix-dgram"] {
        let (listen, _dir) = common::listen_for(transport);
        let server = Sockserv::start(&[
            "--transport",
            transport,
            "--listen",
            &listen,
            "--policy",
            "pool",
        ]);
        let report = sockload(&[
            "--transport",
            transport,
            "--connect",
            &server.addr,
            "--requests",
            "200",
            "--warmup",
            "0",
            "--expect",
            "echo",
        ]);
        assert_eq!(report["requests_ok"], 200, "{transport}: {report}");
    }
}
