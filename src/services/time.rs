//! The time service: strftime of the server's local time.

use std::fmt::Write as _;

use chrono::format::{Item, StrftimeItems};

/// The format used for an empty request.
pub const DEFAULT_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// Appends the local time in the format `input` names; a format that is not
/// UTF-8 or not valid strftime gets an `error: ...` reply instead.
pub fn reply(input: &[u8], stream: bool, out: &mut Vec<u8>) {
    let text = match render(input) {
        Ok(t) => t,
        Err(e) => format!("error: {e}"),
    };
    out.extend_from_slice(text.as_bytes());
    if stream {
        out.push(b'\n');
    }
}

fn render(input: &[u8]) -> Result<String, String> {
    let fmt = std::str::from_utf8(input).map_err(|_| "format is not valid UTF-8".to_string())?;
    let fmt = fmt.trim_end_matches(['\r', '\n']);
    let fmt = if fmt.trim().is_empty() {
        DEFAULT_FORMAT
    } else {
        fmt
    };
    let items: Vec<Item<'_>> = StrftimeItems::new(fmt).collect();
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return Err(format!("invalid strftime format {fmt:?}"));
    }
    let mut s = String::new();
    write!(
        s,
        "{}",
        chrono::Local::now().format_with_items(items.into_iter())
    )
    .map_err(|_| format!("cannot render strftime format {fmt:?}"))?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(input: &[u8]) -> String {
        let mut out = Vec::new();
        reply(input, false, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn empty_request_uses_the_default_format() {
        let t = text(b"\n");
        assert_eq!(t.len(), "2026-01-01 00:00:00".len(), "{t}");
        assert_eq!(&t[4..5], "-");
    }

    #[test]
    fn custom_format_is_honoured() {
        let t = text(b"%Y");
        assert_eq!(t.len(), 4);
        assert!(t.chars().all(|c| c.is_ascii_digit()));
    }

    #[test]
    fn bad_formats_get_an_error_reply() {
        assert!(text(b"\xff\xfe").starts_with("error: format is not valid UTF-8"));
        assert!(text(b"%Q%").starts_with("error: invalid strftime format"));
    }
}
