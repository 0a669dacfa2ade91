//! echo, upper, time, discard, delay and cpu.

use std::str::FromStr;
use std::time::Duration;

use super::{Framing, Service};

/// The longest reply `time` sends as one datagram: what UDP carries over
/// IPv4 (65,535 less the IP and UDP headers). Its replies can be far
/// longer than its requests (`%c` is 2 bytes in, 24 out); a longer one
/// gets an error reply instead of none.
const MAX_DATAGRAM_REPLY: usize = 65_507;

/// The services `sockserv --service` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// Returns the bytes it got.
    Echo,
    /// Returns them ASCII-uppercased; other bytes (invalid UTF-8 too) untouched.
    Upper,
    /// Replies with the local time in the strftime format it got (one
    /// request per line over streams; empty: `%Y-%m-%d %H:%M:%S`).
    Time,
    /// Reads and drops.
    Discard,
    /// Echoes after sleeping this long (an I/O-bound handler).
    Delay(Duration),
    /// Echoes after this many rounds of hashing (a CPU-bound handler).
    Cpu(u32),
}

impl Builtin {
    /// The name used on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Builtin::Echo => "echo",
            Builtin::Upper => "upper",
            Builtin::Time => "time",
            Builtin::Discard => "discard",
            Builtin::Delay(_) => "delay",
            Builtin::Cpu(_) => "cpu",
        }
    }
}

impl FromStr for Builtin {
    type Err = String;

    /// Parses a name; delay and cpu get their defaults (10 ms, 10000 rounds).
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "echo" => Builtin::Echo,
            "upper" => Builtin::Upper,
            "time" => Builtin::Time,
            "discard" => Builtin::Discard,
            "delay" => Builtin::Delay(Duration::from_millis(10)),
            "cpu" => Builtin::Cpu(10_000),
            other => {
                return Err(format!(
                    "unknown service {other:?} (expected echo, upper, time, discard, delay or cpu)"
                ))
            }
        })
    }
}

impl Service for Builtin {
    #[link_section = child_text!()]
    fn framing(&self) -> Framing {
        match self {
            Builtin::Time => Framing::Line,
            _ => Framing::Chunk,
        }
    }

    #[link_section = child_text!()]
    fn respond_in_place(&self, buf: &mut [u8]) -> bool {
        match *self {
            Builtin::Echo => {}
            Builtin::Upper => buf.make_ascii_uppercase(),
            Builtin::Delay(d) => std::thread::sleep(d),
            Builtin::Cpu(rounds) => {
                std::hint::black_box(burn(buf, rounds));
            }
            Builtin::Time | Builtin::Discard => return false,
        }
        true
    }

    fn delay(&self) -> Option<Duration> {
        match *self {
            Builtin::Delay(d) => Some(d),
            _ => None,
        }
    }

    fn respond_undelayed(&self, input: &[u8], stream: bool, out: &mut Vec<u8>) {
        match *self {
            Builtin::Delay(_) => out.extend_from_slice(input),
            _ => self.respond(input, stream, out),
        }
    }

    fn respond(&self, input: &[u8], stream: bool, out: &mut Vec<u8>) {
        match *self {
            Builtin::Echo => out.extend_from_slice(input),
            Builtin::Upper => out.extend(input.iter().map(u8::to_ascii_uppercase)),
            Builtin::Time => {
                let start = out.len();
                super::time::reply(input, stream, out);
                if !stream && out.len() - start > MAX_DATAGRAM_REPLY {
                    // "%c" x 4000 asks for ~100 KB: more than a UDP
                    // datagram carries, so it would go unanswered.
                    out.truncate(start);
                    out.extend_from_slice(
                        format!("error: reply longer than {MAX_DATAGRAM_REPLY} bytes").as_bytes(),
                    );
                }
            }
            Builtin::Discard => {}
            Builtin::Delay(d) => {
                std::thread::sleep(d);
                out.extend_from_slice(input);
            }
            Builtin::Cpu(rounds) => {
                std::hint::black_box(burn(input, rounds));
                out.extend_from_slice(input);
            }
        }
    }
}

/// `rounds` rounds of FNV-1a over `input`, each seeded with the last.
fn burn(input: &[u8], rounds: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for r in 0..rounds {
        h ^= u64::from(r);
        for &b in input.iter().chain(&h.to_le_bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(s: Builtin, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        s.respond(input, true, &mut out);
        out
    }

    #[test]
    fn upper_changes_ascii_only_and_keeps_invalid_utf8() {
        assert_eq!(
            reply(Builtin::Upper, b"abc\xff\xfe z\xc3\xa9"),
            b"ABC\xff\xfe Z\xc3\xa9"
        );
    }

    #[test]
    fn echo_delay_and_cpu_return_the_input() {
        assert_eq!(reply(Builtin::Echo, b"hi"), b"hi");
        assert_eq!(
            reply(Builtin::Delay(Duration::from_millis(1)), b"hi"),
            b"hi"
        );
        assert_eq!(reply(Builtin::Cpu(10), b"hi"), b"hi");
        assert!(reply(Builtin::Discard, b"hi").is_empty());
    }

    #[test]
    fn in_place_replies_equal_respond() {
        let services = [
            Builtin::Echo,
            Builtin::Upper,
            Builtin::Delay(Duration::from_millis(1)),
            Builtin::Cpu(5),
        ];
        for s in services {
            let mut buf = b"Mixed \xff bytes".to_vec();
            assert!(s.respond_in_place(&mut buf), "{s:?}");
            assert_eq!(buf, reply(s, b"Mixed \xff bytes"), "{s:?}");
        }
        assert!(!Builtin::Time.respond_in_place(&mut [b'x']));
        assert!(!Builtin::Discard.respond_in_place(&mut [b'x']));
    }

    #[test]
    fn a_time_reply_too_long_for_a_datagram_is_an_error_and_fine_over_a_stream() {
        let ask = "%c".repeat(4000);
        let mut out = Vec::new();
        Builtin::Time.respond(ask.as_bytes(), false, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "error: reply longer than 65507 bytes");
        let mut out = Vec::new();
        Builtin::Time.respond(ask.as_bytes(), true, &mut out);
        assert!(out.len() > MAX_DATAGRAM_REPLY && out.ends_with(b"\n"));
    }

    #[test]
    fn cpu_rounds_change_the_hash() {
        assert_ne!(burn(b"x", 1), burn(b"x", 2));
    }

    #[test]
    fn names_parse() {
        for n in ["echo", "upper", "time", "discard", "delay", "cpu"] {
            assert_eq!(n.parse::<Builtin>().unwrap().name(), n);
        }
        assert!("http".parse::<Builtin>().unwrap_err().contains("http"));
    }
}
