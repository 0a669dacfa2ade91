//! Per-transport client sockets and the request/reply exchange.
//!
//! Everything here is blocking I/O with `--timeout` as the socket timeouts.
//! The exchange works on caller-owned buffers, so the per-request path does
//! not allocate; only opening a datagram socket formats its bind name.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

use super::stats::ErrorKind;
use super::Expect;
use crate::addr::{Address, Transport};

/// Why one exchange failed: the kind, the operation and the cause.
#[derive(Debug)]
pub(crate) struct Failure {
    pub kind: ErrorKind,
    pub op: &'static str,
    pub cause: Cause,
}

#[derive(Debug)]
pub(crate) enum Cause {
    Io(io::Error),
    Text(&'static str),
}

impl Failure {
    fn io(op: &'static str, err: io::Error) -> Failure {
        Failure {
            kind: kind_of(&err),
            op,
            cause: Cause::Io(err),
        }
    }

    fn text(kind: ErrorKind, op: &'static str, text: &'static str) -> Failure {
        Failure {
            kind,
            op,
            cause: Cause::Text(text),
        }
    }

    /// `connect 127.0.0.1:9000: Connection refused (os error 111)`.
    pub fn message(&self, addr: &Address) -> String {
        match &self.cause {
            // SO_RCVTIMEO/SO_SNDTIMEO expiry surfaces as EAGAIN: say what it means.
            Cause::Io(e) if e.kind() == io::ErrorKind::WouldBlock => {
                format!("{} {addr}: timed out ({e})", self.op)
            }
            Cause::Io(e) => format!("{} {addr}: {e}", self.op),
            Cause::Text(t) => format!("{} {addr}: {t}", self.op),
        }
    }
}

/// Maps an OS error to the error kind it is counted under.
pub(crate) fn kind_of(err: &io::Error) -> ErrorKind {
    use io::ErrorKind as K;
    match err.kind() {
        K::ConnectionRefused | K::NotFound => ErrorKind::Refused,
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => ErrorKind::Reset,
        K::WouldBlock | K::TimedOut => ErrorKind::Timeout,
        K::UnexpectedEof => ErrorKind::ShortReply,
        _ => ErrorKind::Other,
    }
}

/// The request and reply buffers of one connection thread, allocated once.
pub(crate) struct Buffers {
    /// The request: `size` lowercase letters (newline-terminated for `--expect any`).
    pub request: Vec<u8>,
    /// The reply `--expect echo|upper` requires.
    pub expected: Vec<u8>,
    /// Where replies are read to.
    pub reply: Vec<u8>,
}

impl Buffers {
    pub fn new(size: usize, expect: Expect, transport: Transport) -> Buffers {
        let mut request: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
        if expect == Expect::Any {
            request[size - 1] = b'\n';
        }
        let expected = match expect {
            Expect::Upper => request.to_ascii_uppercase(),
            _ => request.clone(),
        };
        let reply_len = match (expect, transport.is_stream()) {
            (Expect::Any, true) => size.max(4096),
            (Expect::Any, false) => 65536,
            // One spare byte to notice a datagram reply that is too long.
            (_, false) => size + 1,
            (_, true) => size,
        };
        Buffers {
            request,
            expected,
            reply: vec![0; reply_len],
        }
    }
}

/// The most source addresses `--sources` spreads over (127.0.0.2 to .254).
pub const MAX_SOURCES: u8 = 253;

/// Where and how to connect; opens [`Conn`]s.
pub(crate) struct Target {
    transport: Transport,
    addr: Address,
    inet: Option<SocketAddr>,
    unix: Option<SockAddr>,
    timeout: Duration,
    /// Distinguishes this thread's datagram bind names from other threads'.
    id: usize,
    opened: u64,
    /// Source addresses to spread TCP connections over (1: the kernel's choice).
    sources: u8,
}

impl Target {
    pub fn new(
        transport: Transport,
        addr: &Address,
        timeout: Duration,
        id: usize,
    ) -> io::Result<Target> {
        let unix = match addr {
            Address::Unix(p) => Some(SockAddr::unix(p)?),
            Address::Abstract(name) => Some(abstract_addr(name)?),
            _ => None,
        };
        if transport.is_unix() != unix.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("address {addr} does not suit transport {transport}"),
            ));
        }
        Ok(Target {
            transport,
            addr: addr.clone(),
            inet: addr.as_inet(),
            unix,
            timeout,
            id,
            opened: 0,
            sources: 1,
        })
    }

    /// Spreads TCP connections over `n` loopback source addresses. A
    /// client that closes first keeps each connection in TIME_WAIT, and
    /// connect() then searches one source address's ephemeral ports for a
    /// free 4-tuple; at thousands of connections a second that search
    /// costs more than the server does.
    pub fn with_sources(mut self, n: u8) -> Target {
        self.sources = n.max(1);
        self
    }

    /// A TCP connection from the next of `sources` loopback addresses, its
    /// port picked at connect time (IP_BIND_ADDRESS_NO_PORT).
    fn connect_from_source(&self, sa: SocketAddr) -> io::Result<TcpStream> {
        use nix::sys::socket::{setsockopt, sockopt::IpBindAddressNoPort};
        let k = (self.id as u64).wrapping_add(self.opened) % u64::from(self.sources);
        let src = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2 + k as u8), 0));
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        setsockopt(&sock, IpBindAddressNoPort, &true)?;
        sock.bind(&src.into())
            .map_err(|e| io::Error::new(e.kind(), format!("bind {src}: {e}")))?;
        sock.connect_timeout(&sa.into(), self.timeout)?;
        Ok(sock.into())
    }

    pub fn addr(&self) -> &Address {
        &self.addr
    }

    /// Opens a connection (stream) or a connected, bound socket (datagram).
    pub fn open(&mut self) -> Result<Conn, Failure> {
        self.opened += 1;
        let t = Some(self.timeout);
        match self.transport {
            Transport::Tcp => {
                let sa = self.inet.expect("checked in Target::new");
                let s = if self.sources > 1 {
                    self.connect_from_source(sa)
                } else {
                    TcpStream::connect_timeout(&sa, self.timeout)
                }
                .map_err(|e| Failure::io("connect", e))?;
                s.set_nodelay(true)
                    .map_err(|e| Failure::io("set TCP_NODELAY on", e))?;
                s.set_read_timeout(t)
                    .map_err(|e| Failure::io("set timeout on", e))?;
                s.set_write_timeout(t)
                    .map_err(|e| Failure::io("set timeout on", e))?;
                Ok(Conn::Tcp(s))
            }
            Transport::UnixStream => {
                let sock = self.unix_socket(Type::STREAM)?;
                sock.connect(self.unix.as_ref().expect("checked in Target::new"))
                    .map_err(|e| Failure::io("connect", e))?;
                Ok(Conn::Unix(UnixStream::from(sock)))
            }
            Transport::Udp => {
                let sa = self.inet.expect("checked in Target::new");
                let local: SocketAddr = match sa {
                    SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                    SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
                };
                let s =
                    UdpSocket::bind(local).map_err(|e| Failure::io("bind a reply port for", e))?;
                s.connect(sa).map_err(|e| Failure::io("connect", e))?;
                s.set_read_timeout(t)
                    .map_err(|e| Failure::io("set timeout on", e))?;
                s.set_write_timeout(t)
                    .map_err(|e| Failure::io("set timeout on", e))?;
                Ok(Conn::Udp(s))
            }
            Transport::UnixDgram => {
                let sock = self.unix_socket(Type::DGRAM)?;
                // An abstract reply address: nothing on disk to clean up, even on a crash.
                let name = format!(
                    "sockload.{}.{}.{}",
                    std::process::id(),
                    self.id,
                    self.opened
                );
                let local = abstract_addr(name.as_bytes())
                    .map_err(|e| Failure::io("bind a reply address for", e))?;
                sock.bind(&local)
                    .map_err(|e| Failure::io("bind a reply address for", e))?;
                sock.connect(self.unix.as_ref().expect("checked in Target::new"))
                    .map_err(|e| Failure::io("connect", e))?;
                Ok(Conn::UnixDgram(UnixDatagram::from(sock)))
            }
        }
    }

    /// A Unix socket with both timeouts set (the send timeout also bounds `connect`).
    fn unix_socket(&self, ty: Type) -> Result<Socket, Failure> {
        let sock = Socket::new(Domain::UNIX, ty, None)
            .map_err(|e| Failure::io("create a socket for", e))?;
        let t = Some(self.timeout);
        sock.set_read_timeout(t)
            .map_err(|e| Failure::io("set timeout on", e))?;
        sock.set_write_timeout(t)
            .map_err(|e| Failure::io("set timeout on", e))?;
        Ok(sock)
    }
}

fn abstract_addr(name: &[u8]) -> io::Result<SockAddr> {
    use std::os::unix::ffi::OsStrExt;
    let mut bytes = Vec::with_capacity(name.len() + 1);
    bytes.push(0);
    bytes.extend_from_slice(name);
    SockAddr::unix(std::ffi::OsStr::from_bytes(&bytes))
}

/// An open client socket of one of the four transports.
pub(crate) enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
    Udp(UdpSocket),
    UnixDgram(UnixDatagram),
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Conn::Tcp(_) => "Conn::Tcp",
            Conn::Unix(_) => "Conn::Unix",
            Conn::Udp(_) => "Conn::Udp",
            Conn::UnixDgram(_) => "Conn::UnixDgram",
        })
    }
}

/// What became of the connection after a successful exchange.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum After {
    /// It can carry the next request.
    Keep,
    /// The peer closed it after replying (`--expect any`); reconnect.
    Closed,
}

impl Conn {
    /// Sends one request and reads and checks its reply.
    #[inline]
    pub fn exchange(&mut self, buf: &mut Buffers, expect: Expect) -> Result<After, Failure> {
        match self {
            Conn::Tcp(s) => stream_exchange(s, buf, expect),
            Conn::Unix(s) => stream_exchange(s, buf, expect),
            Conn::Udp(s) => {
                s.send(&buf.request)
                    .map_err(|e| Failure::io("send to", e))?;
                let n = s
                    .recv(&mut buf.reply)
                    .map_err(|e| Failure::io("receive from", e))?;
                check_datagram(&buf.reply[..n], &buf.expected, expect)
            }
            Conn::UnixDgram(s) => {
                s.send(&buf.request)
                    .map_err(|e| Failure::io("send to", e))?;
                let n = s
                    .recv(&mut buf.reply)
                    .map_err(|e| Failure::io("receive from", e))?;
                check_datagram(&buf.reply[..n], &buf.expected, expect)
            }
        }
    }
}

fn check_datagram(reply: &[u8], expected: &[u8], expect: Expect) -> Result<After, Failure> {
    if expect == Expect::Any || reply == expected {
        Ok(After::Keep)
    } else {
        Err(wrong_reply(expect))
    }
}

fn wrong_reply(expect: Expect) -> Failure {
    let text = match expect {
        Expect::Upper => "reply is not the uppercased request",
        _ => "reply is not the echo of the request",
    };
    Failure::text(ErrorKind::WrongReply, "reply from", text)
}

fn short_reply() -> Failure {
    Failure::text(
        ErrorKind::ShortReply,
        "receive from",
        "connection closed before the full reply",
    )
}

/// Over a stream: write the request, then read `size` bytes (echo/upper) or
/// up to a newline (any), however the server splits them.
fn stream_exchange<S>(s: &mut S, buf: &mut Buffers, expect: Expect) -> Result<After, Failure>
where
    S: Read + Write,
{
    s.write_all(&buf.request)
        .map_err(|e| Failure::io("send to", e))?;
    if expect == Expect::Any {
        return read_line(s, &mut buf.reply);
    }
    let reply = &mut buf.reply[..buf.request.len()];
    let mut got = 0;
    while got < reply.len() {
        match s.read(&mut reply[got..]) {
            Ok(0) => return Err(short_reply()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Failure::io("receive from", e)),
        }
    }
    if *reply == *buf.expected {
        Ok(After::Keep)
    } else {
        Err(wrong_reply(expect))
    }
}

/// Reads until a newline arrives (or the buffer fills); EOF after some bytes
/// still counts as a reply, but the connection is then done.
fn read_line<S: Read>(s: &mut S, reply: &mut [u8]) -> Result<After, Failure> {
    let mut got = 0;
    loop {
        match s.read(&mut reply[got..]) {
            Ok(0) if got == 0 => return Err(short_reply()),
            Ok(0) => return Ok(After::Closed),
            Ok(n) => {
                let new = &reply[got..got + n];
                got += n;
                if new.contains(&b'\n') || got == reply.len() {
                    return Ok(After::Keep);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Failure::io("receive from", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream as Pair;

    #[test]
    fn requests_are_lowercase_letters_and_upper_expects_uppercase() {
        let b = Buffers::new(30, Expect::Upper, Transport::Tcp);
        assert!(b.request.iter().all(u8::is_ascii_lowercase));
        assert_eq!(b.expected, b.request.to_ascii_uppercase());
        let a = Buffers::new(8, Expect::Any, Transport::Tcp);
        assert_eq!(a.request.last(), Some(&b'\n'));
    }

    #[test]
    fn stream_replies_split_over_reads_are_reassembled() {
        let (mut client, mut server) = Pair::pair().unwrap();
        let mut buf = Buffers::new(10, Expect::Echo, Transport::UnixStream);
        let t = std::thread::spawn(move || {
            let mut req = [0u8; 10];
            server.read_exact(&mut req).unwrap();
            server.write_all(&req[..3]).unwrap();
            server.write_all(&req[3..]).unwrap();
            server
        });
        assert_eq!(
            stream_exchange(&mut client, &mut buf, Expect::Echo).unwrap(),
            After::Keep
        );
        drop(t.join().unwrap());
    }

    #[test]
    fn eof_mid_reply_is_short_and_bad_bytes_are_wrong() {
        let (mut client, mut server) = Pair::pair().unwrap();
        let mut buf = Buffers::new(10, Expect::Echo, Transport::UnixStream);
        server.write_all(b"abc").unwrap();
        server.shutdown(std::net::Shutdown::Write).unwrap();
        let e = stream_exchange(&mut client, &mut buf, Expect::Echo).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ShortReply);

        let (mut client, mut server) = Pair::pair().unwrap();
        server.write_all(b"ABCDEFGHIJ").unwrap();
        let e = stream_exchange(&mut client, &mut buf, Expect::Echo).unwrap_err();
        assert_eq!(e.kind, ErrorKind::WrongReply);
        let addr = Address::Unix("/x".into());
        assert_eq!(
            e.message(&addr),
            "reply from /x: reply is not the echo of the request"
        );
    }

    #[test]
    fn os_errors_map_to_kinds() {
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(kind_of(&refused), ErrorKind::Refused);
        assert_eq!(
            kind_of(&io::Error::from_raw_os_error(libc::ECONNRESET)),
            ErrorKind::Reset
        );
        assert_eq!(
            kind_of(&io::Error::from_raw_os_error(libc::EPIPE)),
            ErrorKind::Reset
        );
        assert_eq!(
            kind_of(&io::Error::from_raw_os_error(libc::EAGAIN)),
            ErrorKind::Timeout
        );
        assert_eq!(
            kind_of(&io::Error::from_raw_os_error(libc::EMSGSIZE)),
            ErrorKind::Other
        );
        let f = Failure::io("connect", refused);
        let addr = Address::parse_inet("127.0.0.1:9").unwrap();
        assert_eq!(
            f.message(&addr),
            "connect 127.0.0.1:9: Connection refused (os error 111)"
        );
    }
}
