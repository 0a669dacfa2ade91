//! Name colours: each name gets a stable ANSI colour, for clients that
//! asked for colour with `/color on`.

/// Readable 256-colour indices, none too dark for a black background nor
/// too light for a white one.
const PALETTE: [u8; 16] = [
    33, 39, 42, 70, 75, 99, 107, 135, 141, 166, 170, 178, 197, 203, 208, 214,
];

/// The 256-colour index of `name`: a hash of the name, so it is the same
/// for every client, across restarts.
pub fn colour_of(name: &str) -> u8 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    PALETTE[(h % PALETTE.len() as u32) as usize]
}

/// `name`, in its colour when `colour` is on. Names are checked, so they
/// carry no escapes of their own.
pub fn paint(name: &str, colour: bool) -> String {
    if colour {
        format!("\x1b[38;5;{}m{name}\x1b[0m", colour_of(name))
    } else {
        name.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_are_stable_and_only_on_request() {
        assert_eq!(colour_of("alice"), colour_of("alice"));
        assert_eq!(paint("alice", false), "alice");
        let painted = paint("alice", true);
        assert!(painted.starts_with(&format!("\x1b[38;5;{}m", colour_of("alice"))));
        assert!(painted.ends_with("alice\x1b[0m"));
        let distinct: std::collections::HashSet<u8> = ["alice", "bob", "carol", "dave", "erin"]
            .iter()
            .map(|n| colour_of(n))
            .collect();
        assert!(distinct.len() >= 3, "{distinct:?}");
    }
}
