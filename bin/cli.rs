//! What every binary's flags share: usage errors as one line and exit 2,
//! and value parsers that refuse zero and absurd numbers by name.
//! Included by each `bin/*.rs` with `#[path = "cli.rs"] mod cli;`.
#![allow(dead_code)] // each binary uses a part

use std::time::Duration;

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

/// A count in `min..=max`, e.g. `value_parser = cli::count(1, 1024)`.
pub fn count(min: u64, max: u64) -> impl Fn(&str) -> Result<u64, String> + Clone {
    move |s: &str| {
        let n: u64 = s
            .trim()
            .parse()
            .map_err(|_| format!("not a whole number (must be {min} to {max})"))?;
        if n < min || n > max {
            return Err(format!("must be {min} to {max}"));
        }
        Ok(n)
    }
}

/// Seconds as a decimal, in `0..=max` (0 allowed only if `zero_ok`).
pub fn seconds(zero_ok: bool, max: f64) -> impl Fn(&str) -> Result<f64, String> + Clone {
    move |s: &str| {
        let v: f64 = s
            .trim()
            .parse()
            .map_err(|_| "not a number of seconds".to_string())?;
        let low = if zero_ok { "0" } else { "more than 0" };
        if !v.is_finite() || v < 0.0 || v > max || (!zero_ok && v == 0.0) {
            return Err(format!("must be {low} to {max} seconds"));
        }
        Ok(v)
    }
}

/// Seconds (validated by [`seconds`]) as a duration, None for 0.
pub fn duration(v: f64) -> Option<Duration> {
    (v > 0.0).then(|| Duration::from_secs_f64(v))
}

/// Bytes with an optional K, M or G (binary) suffix, in `1..=max`.
pub fn size(max: u64) -> impl Fn(&str) -> Result<u64, String> + Clone {
    move |s: &str| {
        let t = s.trim();
        let (num, mult) = match t.char_indices().last() {
            Some((i, 'k' | 'K')) => (&t[..i], 1u64 << 10),
            Some((i, 'm' | 'M')) => (&t[..i], 1 << 20),
            Some((i, 'g' | 'G')) => (&t[..i], 1 << 30),
            _ => (t, 1),
        };
        let n = num
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(mult))
            .ok_or_else(|| "not a number of bytes such as 4096, 64K, 50M or 2G".to_string())?;
        if n == 0 || n > max {
            return Err(format!("must be 1 byte to {max} bytes"));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_sizes_and_seconds_refuse_zero_and_absurd_values() {
        assert_eq!(count(1, 1024)("2"), Ok(2));
        assert!(count(1, 1024)("0").unwrap_err().contains("1 to 1024"));
        assert!(count(1, 1024)("99999999999").is_err());
        assert_eq!(size(1 << 20)("64K"), Ok(65536));
        assert!(size(1 << 20)("0").is_err());
        assert!(seconds(true, 10.0)("0").is_ok());
        assert!(seconds(false, 10.0)("0").is_err());
        assert!(seconds(true, 10.0)("nan").is_err());
    }

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
