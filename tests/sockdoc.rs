//! `sockdoc DIR` writes a man page per binary and bash, zsh and fish
//! completions, from the same clap definitions the binaries parse with.

use std::process::Command;

#[test]
fn sockdoc_writes_man_pages_and_completions_for_every_binary() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sockdoc"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for bin in ["sockserv", "sockload", "sockcat", "sockfiles"] {
        let man = std::fs::read_to_string(dir.path().join(format!("man/{bin}.1"))).unwrap();
        assert!(man.contains(".TH") && man.contains(bin), "{bin}.1");
        let bash = dir.path().join(format!("completions/bash/{bin}.bash"));
        let zsh = dir.path().join(format!("completions/zsh/_{bin}"));
        let fish = dir.path().join(format!("completions/fish/{bin}.fish"));
        for f in [&bash, &zsh, &fish] {
            assert!(f.is_file(), "{}", f.display());
        }
    }
    let man = std::fs::read_to_string(dir.path().join("man/sockserv.1")).unwrap();
    for flag in ["workers", "log\\-file", "SOCKSERV_WORKERS"] {
        assert!(man.contains(flag), "sockserv.1 lacks {flag}");
    }
    let bash = std::fs::read_to_string(dir.path().join("completions/bash/sockserv.bash")).unwrap();
    assert!(
        bash.contains("--graceful-timeout"),
        "bash completion lacks a flag"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_sockdoc"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "no DIR is a usage error");
}
