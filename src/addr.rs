//! Addresses as users type them: `127.0.0.1:9000`, `[::1]:0`, `/run/app.sock`,
//! `@abstract-name`.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
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
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(Address::Inet(sa));
        }
        let mut addrs = s
            .to_socket_addrs()
            .map_err(|e| Error::Parse(format!("address {s:?}: {e} (expected HOST:PORT)")))?;
        addrs
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
    fn transport_names_round_trip() {
        for t in Transport::ALL {
            assert_eq!(t.name().parse::<Transport>().unwrap(), t);
        }
        assert!("sctp".parse::<Transport>().is_err());
    }
}
