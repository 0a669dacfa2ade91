//! Addresses as users type them: `127.0.0.1:9000`, `[::1]:0`, `/run/app.sock`,
//! `@abstract-name`.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::Error;

/// The four kinds of socket a server can listen on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// TCP over IPv4 or IPv6 (`SOCK_STREAM`, `AF_INET{,6}`).
    Tcp,
    /// UDP over IPv4 or IPv6 (`SOCK_DGRAM`, `AF_INET{,6}`).
    Udp,
    /// Unix stream sockets (`SOCK_STREAM`, `AF_UNIX`).
    UnixStream,
    /// Unix datagram sockets (`SOCK_DGRAM`, `AF_UNIX`).
    UnixDgram,
}

impl Transport {
    /// All transports, in the order the docs list them.
    pub const ALL: [Transport; 4] = [
        Transport::Tcp,
        Transport::Udp,
        Transport::UnixStream,
        Transport::UnixDgram,
    ];

    /// True for the connection-oriented transports (TCP, Unix stream).
    pub fn is_stream(self) -> bool {
        matches!(self, Transport::Tcp | Transport::UnixStream)
    }

    /// True for the transports addressed by a filesystem path or abstract name.
    pub fn is_unix(self) -> bool {
        matches!(self, Transport::UnixStream | Transport::UnixDgram)
    }

    /// The name used on the command line (`tcp`, `udp`, `unix`, `unix-dgram`).
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::UnixStream => "unix",
            Transport::UnixDgram => "unix-dgram",
        }
    }

    /// Parses `addr` as an address for this transport.
    pub fn parse_address(self, addr: &str) -> Result<Address, Error> {
        if self.is_unix() {
            Address::parse_unix(addr)
        } else {
            Address::parse_inet(addr)
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Transport {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "tcp" => Ok(Transport::Tcp),
            "udp" => Ok(Transport::Udp),
            "unix" | "unix-stream" => Ok(Transport::UnixStream),
            "unix-dgram" | "unix-datagram" => Ok(Transport::UnixDgram),
            other => Err(Error::Parse(format!(
                "unknown transport {other:?} (expected tcp, udp, unix or unix-dgram)"
            ))),
        }
    }
}

/// A socket address: IP, Unix path, or Linux abstract name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// An IPv4 or IPv6 address with a port; port 0 asks the kernel for one.
    Inet(SocketAddr),
    /// A filesystem path for a Unix socket.
    Unix(PathBuf),
    /// A name in Linux's abstract Unix namespace (written `@name`).
    Abstract(Vec<u8>),
    /// A peer that has no address (an unbound Unix socket).
    Unnamed,
}

impl Address {
    /// Parses `host:port`, `[v6]:port` or a resolvable `name:port`.
    pub fn parse_inet(s: &str) -> Result<Address, Error> {
        Address::parse_inet_with(s, |s| s.to_socket_addrs().map(Iterator::collect))
    }

    /// [`Address::parse_inet`] with `resolve` for the system's resolver
    /// (the fuzz check passes [`offline_resolve`], which sends nothing).
    fn parse_inet_with(
        s: &str,
        resolve: impl FnOnce(&str) -> io::Result<Vec<SocketAddr>>,
    ) -> Result<Address, Error> {
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(Address::Inet(sa));
        }
        let addrs = resolve(s)
            .map_err(|e| Error::Parse(format!("address {s:?}: {e} (expected HOST:PORT)")))?;
        addrs
            .into_iter()
            .next()
            .map(Address::Inet)
            .ok_or_else(|| Error::Parse(format!("address {s:?}: name resolved to nothing")))
    }

    /// Parses a Unix path, or `@name` for the abstract namespace.
    pub fn parse_unix(s: &str) -> Result<Address, Error> {
        if s.is_empty() {
            return Err(Error::Parse("unix socket path is empty".into()));
        }
        if let Some(name) = s.strip_prefix('@') {
            if name.is_empty() {
                return Err(Error::Parse(
                    "abstract socket name after '@' is empty".into(),
                ));
            }
            // sun_path's 108 bytes hold the leading NUL and the name.
            if name.len() >= 108 {
                return Err(Error::Parse(format!(
                    "abstract socket name {name:?} is {} bytes; the limit is 107",
                    name.len()
                )));
            }
            return Ok(Address::Abstract(name.as_bytes().to_vec()));
        }
        // sun_path holds 108 bytes including the terminating NUL.
        if s.len() >= 108 {
            return Err(Error::Parse(format!(
                "unix socket path {s:?} is {} bytes; the limit is 107",
                s.len()
            )));
        }
        if s.contains('\0') {
            return Err(Error::Parse(format!("unix socket path {s:?} contains NUL")));
        }
        Ok(Address::Unix(PathBuf::from(s)))
    }

    /// The IP socket address, if this is one.
    pub fn as_inet(&self) -> Option<SocketAddr> {
        match self {
            Address::Inet(sa) => Some(*sa),
            _ => None,
        }
    }

    /// The filesystem path, if this is a path-named Unix address.
    pub fn as_path(&self) -> Option<&std::path::Path> {
        match self {
            Address::Unix(p) => Some(p),
            _ => None,
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Inet(sa) => write!(f, "{sa}"),
            Address::Unix(p) => write!(f, "{}", p.display()),
            Address::Abstract(name) => write!(f, "@{}", String::from_utf8_lossy(name)),
            Address::Unnamed => f.write_str("(unnamed)"),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(sa: SocketAddr) -> Self {
        Address::Inet(sa)
    }
}

impl From<&std::os::unix::net::SocketAddr> for Address {
    fn from(sa: &std::os::unix::net::SocketAddr) -> Self {
        use std::os::linux::net::SocketAddrExt;
        if let Some(p) = sa.as_pathname() {
            Address::Unix(p.to_path_buf())
        } else if let Some(name) = sa.as_abstract_name() {
            Address::Abstract(name.to_vec())
        } else {
            Address::Unnamed
        }
    }
}

/// What `str`'s [`ToSocketAddrs`] does, without the network: `HOST:PORT`
/// split at the last colon, the same errors for a missing colon or a bad
/// port, IP literals as themselves, `localhost` as 127.0.0.1,
/// `nowhere.invalid` as no address, and any other name unknown.
fn offline_resolve(s: &str) -> io::Result<Vec<SocketAddr>> {
    let invalid = |what| io::Error::new(io::ErrorKind::InvalidInput, what);
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| invalid("invalid socket address"))?;
    let port: u16 = port.parse().map_err(|_| invalid("invalid port value"))?;
    match host {
        "localhost" => Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))]),
        "nowhere.invalid" => Ok(Vec::new()),
        _ => match host.parse::<IpAddr>() {
            Ok(ip) => Ok(vec![SocketAddr::new(ip, port)]),
            Err(_) => Err(io::Error::other("unknown host (offline resolver)")),
        },
    }
}

/// The address parsers' contract, checked on arbitrary text (the fuzz
/// target `address` and the unit tests call it; names resolve through
/// [`offline_resolve`], so nothing leaves the process): neither parser
/// panics; an accepted address prints as text that parses back to it; a
/// Unix path or abstract name fits `sun_path` (107 bytes and a NUL) and
/// a path holds no NUL; an IP literal parses as itself; a refusal is one
/// non-empty line, and an IP refusal names the input.
///
/// # Panics
///
/// When the contract is broken.
pub(crate) fn check_address(s: &str) {
    match Address::parse_unix(s) {
        Ok(a) => {
            match &a {
                Address::Unix(p) => {
                    assert_eq!(p.to_str(), Some(s), "path {p:?} from {s:?}");
                    assert!(s.len() < 108 && !s.contains('\0'), "path {s:?} accepted");
                }
                Address::Abstract(name) => {
                    assert_eq!(s.strip_prefix('@').map(str::as_bytes), Some(&name[..]));
                    assert!(!name.is_empty() && name.len() < 108, "name {s:?} accepted");
                }
                other => panic!("parse_unix({s:?}) gave {other:?}"),
            }
            let back = Address::parse_unix(&a.to_string());
            assert_eq!(back.as_ref().ok(), Some(&a), "{a} reads back as {back:?}");
        }
        Err(e) => crate::units::assert_one_line(&e.to_string(), s),
    }
    match Address::parse_inet_with(s, offline_resolve) {
        Ok(a) => {
            let Address::Inet(sa) = a else {
                panic!("parse_inet({s:?}) gave {a:?}");
            };
            if let Ok(literal) = s.parse::<SocketAddr>() {
                assert_eq!(sa, literal, "{s:?} is not itself");
            }
            let back = Address::parse_inet_with(&a.to_string(), offline_resolve);
            assert_eq!(back.as_ref().ok(), Some(&a), "{a} reads back as {back:?}");
        }
        Err(e) => {
            let e = e.to_string();
            crate::units::assert_one_line(&e, s);
            assert!(
                e.contains(&format!("{s:?}")),
                "error {e:?} does not name {s:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ipv4_ipv6_and_port_zero() {
        let a = Transport::Tcp.parse_address("127.0.0.1:9000").unwrap();
        assert_eq!(a.to_string(), "127.0.0.1:9000");
        let b = Transport::Udp.parse_address("[::1]:0").unwrap();
        assert_eq!(b.as_inet().unwrap().port(), 0);
        assert!(b.as_inet().unwrap().is_ipv6());
    }

    #[test]
    fn parses_unix_path_and_abstract_name() {
        let p = Transport::UnixStream.parse_address("/tmp/x.sock").unwrap();
        assert_eq!(p.as_path().unwrap().to_str(), Some("/tmp/x.sock"));
        let a = Transport::UnixDgram.parse_address("@svc").unwrap();
        assert_eq!(a, Address::Abstract(b"svc".to_vec()));
        assert_eq!(a.to_string(), "@svc");
    }

    #[test]
    fn rejects_bad_addresses_with_the_input_named() {
        let e = Transport::Tcp.parse_address("nonsense").unwrap_err();
        assert!(e.to_string().contains("nonsense"), "{e}");
        assert!(Transport::UnixStream.parse_address("").is_err());
        assert!(Transport::UnixStream.parse_address("@").is_err());
        let long = "/tmp/".to_string() + &"x".repeat(120);
        assert!(Transport::UnixStream.parse_address(&long).is_err());
    }

    #[test]
    fn the_fuzz_contract_holds_on_sample_addresses() {
        let long = "x".repeat(107);
        for s in [
            "",
            "@",
            "@x",
            "/tmp/x.sock",
            "/tmp/a\0b",
            "127.0.0.1:0",
            "[::1]:9000",
            "[fe80::1%3]:80",
            "::1:80",
            "localhost:8080",
            "nowhere.invalid:1",
            "host",
            "host:",
            ":80",
            "1.2.3.4:65536",
            "1.2.3.4:-1",
            "no such host:1",
            "a\nb:1",
            &format!("/{long}"),
            &format!("@{long}"),
            &long,
        ] {
            check_address(s);
        }
    }

    #[test]
    fn abstract_names_longer_than_sun_path_are_refused() {
        // Found by the fuzz target `address`: "@" and 53 U+FFFD (159 bytes)
        // was accepted, to fail only at bind.
        let crash = format!("@{}", "\u{fffd}".repeat(53));
        let e = Address::parse_unix(&crash).unwrap_err().to_string();
        assert!(e.contains("159 bytes; the limit is 107"), "{e}");
        check_address(&crash);
        let fits = format!("@{}", "n".repeat(107));
        assert!(Address::parse_unix(&fits).is_ok());
        assert!(Address::parse_unix(&format!("{fits}n")).is_err());
    }

    #[test]
    fn the_offline_resolver_splits_as_std_does() {
        for s in [
            "127.0.0.1:80",
            "::1:80",
            "1.2.3.4",
            "1.2.3.4:x",
            "1.2.3.4:70000",
        ] {
            let std: Result<Vec<SocketAddr>, String> = s
                .to_socket_addrs()
                .map(Iterator::collect)
                .map_err(|e| e.to_string());
            let ours = offline_resolve(s).map_err(|e| e.to_string());
            assert_eq!(ours, std, "{s:?}");
        }
    }

    #[test]
    fn transport_names_round_trip() {
        for t in Transport::ALL {
            assert_eq!(t.name().parse::<Transport>().unwrap(), t);
        }
        assert!("sctp".parse::<Transport>().is_err());
    }
}
