//! What may reach a terminal: names are checked and texts are neutralised.
//!
//! No byte a user sends can move another user's cursor, recolour their
//! screen or reorder their text: every control character (C0, DEL, C1,
//! hence ESC and CSI) and every bidirectional override is replaced by a
//! visible escape such as `\x1b` or `\u{202e}` before it is relayed.

use std::borrow::Cow;
use std::fmt::Write as _;

/// The longest account name.
pub const MAX_NAME: usize = 32;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    /// No characters.
    Empty,
    /// Longer than [`MAX_NAME`] bytes.
    TooLong,
    /// Contains a control character, hence possibly an ANSI escape sequence.
    Control,
    /// Contains something other than ASCII letters, digits, `_`, `-`, `.`,
    /// or starts with a `.`.
    Invalid,
}

impl std::fmt::Display for NameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NameError::Empty => "a name needs at least one character",
            NameError::TooLong => "a name has at most 32 characters",
            NameError::Control => {
                "a name may not contain control characters or escape sequences"
            }
            NameError::Invalid => {
                "a name has only ASCII letters, digits, '_', '-' and '.', and does not start with '.'"
            }
        })
    }
}

/// Checks an account name: 1 to 32 of `[A-Za-z0-9_.-]`, not starting with
/// `.` (so never `.` or `..`, and safe as a directory name).
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.chars().any(is_unsafe) {
        return Err(NameError::Control);
    }
    if name.len() > MAX_NAME {
        return Err(NameError::TooLong);
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if !name.chars().all(ok) || name.starts_with('.') {
        return Err(NameError::Invalid);
    }
    Ok(())
}

/// True for characters that change how a terminal shows what follows:
/// control characters and bidirectional formatting characters.
pub fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every unsafe character replaced by a visible escape.
pub fn neutralise(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !is_unsafe(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_escapes_or_controls_are_refused_as_such() {
        assert_eq!(check_name("al\x1b[31mice"), Err(NameError::Control));
        assert_eq!(check_name("bob\n"), Err(NameError::Control));
        assert_eq!(check_name("a\u{202e}b"), Err(NameError::Control));
        assert_eq!(check_name("\u{9b}31m"), Err(NameError::Control));
    }

    #[test]
    fn names_are_short_ascii_words() {
        assert_eq!(check_name("alice_2.x-y"), Ok(()));
        assert_eq!(check_name(""), Err(NameError::Empty));
        assert_eq!(check_name(&"a".repeat(33)), Err(NameError::TooLong));
        assert_eq!(check_name("..."), Err(NameError::Invalid));
        assert_eq!(check_name("a/b"), Err(NameError::Invalid));
        assert_eq!(check_name("zoë"), Err(NameError::Invalid));
    }

    #[test]
    fn neutralise_leaves_no_escape_byte() {
        let t = neutralise("red \x1b[31mtext\x07 \u{9b}2J \u{202e}abc\t");
        assert!(!t.chars().any(is_unsafe), "{t}");
        assert_eq!(t, "red \\x1b[31mtext\\x07 \\u{9b}2J \\u{202e}abc\\x09");
        assert!(matches!(neutralise("plain café"), Cow::Borrowed(_)));
    }
}
