//! Build script: link options for the binaries.
//!
//! A fork-policy child runs a short path of code (from `fork` returning to
//! `_exit`). Its page tables start empty for the program text, so each
//! 64 KiB window of code it touches costs a page fault, and the child's exit
//! unmaps what the fault mapped: a few microseconds per window, per
//! connection. The functions on that path are placed in `.text.hot.*`
//! sections (`#[link_section]`; see `socketserver::sys::CHILD_TEXT`), and
//! `-z keep-text-section-prefix` makes the linker (lld or GNU ld) gather
//! them into one `.text.hot` output section instead of scattering them
//! through `.text`.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,keep-text-section-prefix");
    }
    println!("cargo:rerun-if-changed=bin/build.rs");
}
