//! The shipped units (scripts/systemd/) pass `systemd-analyze verify`
//! without a warning, with ExecStart pointing at the binary under test.
//! systemd before 253 does not know `Type=notify-reload`; there the unit's
//! documented fallback (`Type=notify` plus `ExecReload=`) is verified
//! instead. Skips, saying so, where systemd-analyze is not installed.

mod common;

use std::path::Path;
use std::process::Command;

fn systemd_version() -> Option<u32> {
    let out = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn the_units_verify_without_warnings() {
    let Some(version) = systemd_version() else {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/systemd");
    let dir = tempfile::tempdir().unwrap();
    for unit in ["sockserv.service", "sockserv.socket"] {
        let mut text = std::fs::read_to_string(src.join(unit)).unwrap();
        assert!(
            !text.contains("ReuseAddress="),
            "{unit}: ReuseAddress= is not a socket option"
        );
        text = text.replace("/usr/local/bin/sockserv", common::sockserv_bin());
        if unit == "sockserv.service" {
            assert!(text.contains("\nType=notify-reload\n"), "{unit}");
        }
        if version < 253 {
            text = text.replace(
                "\nType=notify-reload\n",
                "\nType=notify\nExecReload=/bin/kill -HUP $MAINPID\n",
            );
        }
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("sockserv.socket"))
        .arg(dir.path().join("sockserv.service"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd {version}: {stderr}");
    assert!(
        stderr.trim().is_empty(),
        "systemd {version} warns:\n{stderr}"
    );
}
