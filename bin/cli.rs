//! What every binary's flags share: usage errors as one line and exit 2,
//! and value parsers that refuse zero and absurd numbers by name.
//! Included by each `bin/*.rs` with `#[path = "cli.rs"] mod cli;`.
#![allow(dead_code)] // each binary uses a part

/// Parses the command line; a usage error is printed as one line,
/// `PROG: invalid value '0' for '--workers <N>': must be 1 to 1024`, and
/// exits 2. `--help` and `--version` print as clap does and exit 0.
pub fn parse<P: clap::Parser>(prog: &str) -> P {
    match P::try_parse() {
        Ok(p) => p,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                std::process::exit(0);
            }
            eprintln!("{prog}: {}", one_line(&e.render().to_string()));
            std::process::exit(2);
        }
    }
}

/// clap's message without its `error: ` prefix, usage block and footer,
/// with a `[possible values: ...]` hint kept on the same line.
fn one_line(rendered: &str) -> String {
    let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("bad usage");
    let mut out = first.trim_start_matches("error:").trim().to_string();
    if out.ends_with(':') {
        // "the following required arguments were not provided:" + the list.
        if let Some(next) = lines.next() {
            out.push(' ');
            out.push_str(next);
        }
    }
    for l in lines {
        if l.starts_with("[possible values") || l.starts_with("tip:") {
            out.push(' ');
            out.push_str(l);
        }
    }
    out
}

// The value parsers live in the library (`socketserver::units`), where
// `cargo test` and the fuzz targets `size` and `duration` check them.
#[allow(unused_imports)] // each binary uses a part
pub use socketserver::units::{count, duration, seconds, size};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_argument_is_named_on_the_same_line() {
        let rendered = "error: the following required arguments were not provided:\n  <ADDR>\n\nUsage: sockcat <ADDR>\n";
        assert_eq!(
            one_line(rendered),
            "the following required arguments were not provided: <ADDR>"
        );
    }

    #[test]
    fn clap_errors_fold_into_one_line() {
        let rendered = "error: invalid value 'nope' for '--policy <POLICY>'\n  [possible values: sync, fork]\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line(rendered),
            "invalid value 'nope' for '--policy <POLICY>' [possible values: sync, fork]"
        );
    }
}
