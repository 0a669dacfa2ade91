//! Numbers as users type them on a command line or in the environment:
//! counts, seconds and sizes (`64K`, `50M`, `2G`), each refused by name
//! when zero or absurd. The binaries' flags use these as clap value
//! parsers; each returns a one-line message naming the allowed range.

use std::time::Duration;

/// A count in `min..=max`, e.g. `value_parser = count(1, 1024)`.
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
///
/// # Panics
///
/// If `v` is negative, not finite or beyond what a [`Duration`] holds
/// (`seconds` refuses all three for any sane `max`).
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

/// The limits the binaries' flags use (and a few edges), for the checks.
const SIZE_LIMITS: [u64; 6] = [1, 16 << 20, 1 << 30, 1 << 50, 1 << 60, u64::MAX];
const SECOND_LIMITS: [f64; 4] = [0.0, 1.0, 30.0 * 86_400.0, 1e12];

/// The contract of [`size`] and [`count`], checked on arbitrary input (the
/// fuzz target `size` and the unit tests call it): `data[0]` picks a limit,
/// the rest is the text. Neither panics; a value accepted is within its
/// range and reads back the same from its decimal form (and from its
/// `K`/`M`/`G` form when it is a whole multiple); a refusal is one
/// non-empty line.
///
/// # Panics
///
/// When the contract is broken.
pub(crate) fn check_size(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let max = SIZE_LIMITS[usize::from(sel) % SIZE_LIMITS.len()];
    let parse = size(max);
    match parse(&text) {
        Ok(n) => {
            assert!(
                (1..=max).contains(&n),
                "size {n} of {text:?} outside 1..={max}"
            );
            assert_eq!(parse(&n.to_string()), Ok(n), "{n} does not read back");
            for (unit, shift) in [("K", 10), ("M", 20), ("G", 30)] {
                if n % (1 << shift) == 0 {
                    let short = format!("{}{unit}", n >> shift);
                    assert_eq!(parse(&short), Ok(n), "{short:?} is not {n}");
                }
            }
        }
        Err(e) => assert_one_line(&e, &text),
    }
    let min = u64::from(sel >> 4);
    let parse = count(min, max);
    match parse(&text) {
        Ok(n) => {
            assert!(
                (min..=max).contains(&n),
                "count {n} of {text:?} outside {min}..={max}"
            );
            assert_eq!(parse(&format!(" {n}\n")), Ok(n), "{n} does not read back");
        }
        Err(e) => assert_one_line(&e, &text),
    }
}

/// The contract of [`seconds`] and [`duration`] on arbitrary input (the
/// fuzz target `duration` calls it with `load::parse_duration`'s check):
/// `data[0]` picks the limit and whether 0 is allowed, the rest is the
/// text. An accepted value is finite, within the limit, turns into a
/// [`Duration`] without panicking and reads back the same from its
/// decimal form; a refusal is one non-empty line.
///
/// # Panics
///
/// When the contract is broken.
pub(crate) fn check_seconds(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let max = SECOND_LIMITS[usize::from(sel) % SECOND_LIMITS.len()];
    let zero_ok = sel & 0x80 != 0;
    let parse = seconds(zero_ok, max);
    match parse(&text) {
        Ok(v) => {
            assert!(v.is_finite() && (0.0..=max).contains(&v), "{v} of {text:?}");
            assert!(zero_ok || v > 0.0, "0 accepted from {text:?}");
            match duration(v) {
                None => assert_eq!(v, 0.0),
                Some(d) => assert!(!d.is_zero() || v < 1e-9, "{v} s became zero"),
            }
            assert_eq!(parse(&v.to_string()), Ok(v), "{v} does not read back");
        }
        Err(e) => assert_one_line(&e, &text),
    }
}

/// A refusal's message: not empty, one line.
pub(crate) fn assert_one_line(e: &str, input: &str) {
    assert!(!e.trim().is_empty(), "empty error for {input:?}");
    assert!(
        !e.contains(['\n', '\r']),
        "error {e:?} for {input:?} is not one line"
    );
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
        assert!(
            size(u64::MAX)("17179869184G").is_err(),
            "overflow is refused"
        );
        assert!(seconds(true, 10.0)("0").is_ok());
        assert!(seconds(false, 10.0)("0").is_err());
        assert!(seconds(true, 10.0)("nan").is_err());
        assert_eq!(duration(0.0), None);
        assert_eq!(duration(1.5), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn the_fuzz_contracts_hold_on_sample_inputs() {
        let texts: [&[u8]; 14] = [
            b"",
            b"0",
            b"1",
            b" 64K\n",
            b"+5",
            b"-5",
            b"1e3",
            b"inf",
            b"NaN",
            b"17179869183G",
            b"18446744073709551615",
            b"18446744073709551616",
            b"4\xce\xbcK",
            b"0.000000000001",
        ];
        for sel in 0..=255u8 {
            for t in texts {
                let data = [&[sel][..], t].concat();
                check_size(&data);
                check_seconds(&data);
            }
        }
    }
}
