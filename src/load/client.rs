//! Per-transport client sockets, opened non-blocking for the event loops
//! (mio), and the checks a reply must pass.
//!
//! Nothing here blocks: [`Target::open`] starts a connect and says whether it
//! finished, and [`Sock`]'s reads and writes return `WouldBlock` when the
//! socket is not ready. The request and its expected reply are one
//! [`Payload`] per event loop, shared by all its connections.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use mio::net::{TcpStream, UdpSocket, UnixDatagram, UnixStream};
use mio::{Interest, Registry, Token};
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
    TimedOut(Duration),
}

impl Failure {
    pub fn io(op: &'static str, err: io::Error) -> Failure {
        Failure {
            kind: kind_of(&err),
            op,
            cause: Cause::Io(err),
        }
    }

    /// No progress within `--timeout`.
    pub fn timeout(op: &'static str, after: Duration) -> Failure {
        Failure {
            kind: ErrorKind::Timeout,
            op,
            cause: Cause::TimedOut(after),
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
            Cause::TimedOut(d) => format!("{} {addr}: timed out after {d:?}", self.op),
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

/// The request every connection of one event loop sends, and the reply it expects.
pub(crate) struct Payload {
    /// The request: `size` lowercase letters (newline-terminated for `--expect any`).
    pub request: Vec<u8>,
    /// The reply `--expect echo|upper` requires.
    pub expected: Vec<u8>,
    /// `--expect any` over a stream: a reply this long counts even without a newline.
    pub line_cap: usize,
}

impl Payload {
    pub fn new(size: usize, expect: Expect) -> Payload {
        let mut request: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
        if expect == Expect::Any {
            request[size - 1] = b'\n';
        }
        let expected = match expect {
            Expect::Upper => request.to_ascii_uppercase(),
            _ => request.clone(),
        };
        Payload {
            request,
            expected,
            line_cap: size.max(4096),
        }
    }
}

/// The most source addresses `--sources` spreads over (127.0.0.2 to .254).
pub const MAX_SOURCES: u8 = 253;

/// Where and how to connect; opens [`Sock`]s.
pub(crate) struct Target {
    transport: Transport,
    addr: Address,
    inet: Option<SocketAddr>,
    unix: Option<SockAddr>,
    /// Source addresses to spread TCP connections over (1: the kernel's choice).
    sources: u8,
}

/// A socket [`Target::open`] started.
pub(crate) enum Opened {
    /// Connected (or a datagram socket, which needs no handshake).
    Ready(Sock),
    /// The connect is under way; the socket turns writable when it is done.
    Pending(Sock),
    /// A Unix stream server's backlog is full (EAGAIN): try again shortly.
    Busy,
}

impl Target {
    pub fn new(transport: Transport, addr: &Address) -> io::Result<Target> {
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

    pub fn addr(&self) -> &Address {
        &self.addr
    }

    /// Starts opening the `opened`th socket of connection `id`: a
    /// non-blocking connect (stream) or a connected, bound socket (datagram).
    pub fn open(&self, id: usize, opened: u64) -> Result<Opened, Failure> {
        match self.transport {
            Transport::Tcp => {
                let sa = self.inet.expect("checked in Target::new");
                let s = if self.sources > 1 {
                    self.connect_from_source(sa, id, opened)
                } else {
                    TcpStream::connect(sa)
                }
                .map_err(|e| Failure::io("connect", e))?;
                s.set_nodelay(true)
                    .map_err(|e| Failure::io("set TCP_NODELAY on", e))?;
                Ok(Opened::Pending(Sock::Tcp(s)))
            }
            Transport::UnixStream => {
                let sock = Socket::new(Domain::UNIX, Type::STREAM.nonblocking(), None)
                    .map_err(|e| Failure::io("create a socket for", e))?;
                let to = self.unix.as_ref().expect("checked in Target::new");
                let sock = match sock.connect(to) {
                    Ok(()) => return Ok(Opened::Ready(Sock::unix(sock))),
                    Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => sock,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Opened::Busy),
                    Err(e) => return Err(Failure::io("connect", e)),
                };
                Ok(Opened::Pending(Sock::unix(sock)))
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
                Ok(Opened::Ready(Sock::Udp(s)))
            }
            Transport::UnixDgram => {
                let sock = Socket::new(Domain::UNIX, Type::DGRAM.nonblocking(), None)
                    .map_err(|e| Failure::io("create a socket for", e))?;
                // An abstract reply address: nothing on disk to clean up, even on a crash.
                let name = format!("sockload.{}.{id}.{opened}", std::process::id());
                let local = abstract_addr(name.as_bytes())
                    .map_err(|e| Failure::io("bind a reply address for", e))?;
                sock.bind(&local)
                    .map_err(|e| Failure::io("bind a reply address for", e))?;
                sock.connect(self.unix.as_ref().expect("checked in Target::new"))
                    .map_err(|e| Failure::io("connect", e))?;
                let std: std::os::unix::net::UnixDatagram = sock.into();
                Ok(Opened::Ready(Sock::UnixDgram(UnixDatagram::from_std(std))))
            }
        }
    }

    /// A TCP connection from the next of `sources` loopback addresses, its
    /// port picked at connect time (IP_BIND_ADDRESS_NO_PORT).
    fn connect_from_source(&self, sa: SocketAddr, id: usize, opened: u64) -> io::Result<TcpStream> {
        use nix::sys::socket::{setsockopt, sockopt::IpBindAddressNoPort};
        let k = (id as u64).wrapping_add(opened) % u64::from(self.sources);
        let src = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2 + k as u8), 0));
        let sock = Socket::new(Domain::IPV4, Type::STREAM.nonblocking(), None)?;
        setsockopt(&sock, IpBindAddressNoPort, &true)?;
        sock.bind(&src.into())
            .map_err(|e| io::Error::new(e.kind(), format!("bind {src}: {e}")))?;
        match sock.connect(&sa.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        Ok(TcpStream::from_std(sock.into()))
    }
}

fn abstract_addr(name: &[u8]) -> io::Result<SockAddr> {
    use std::os::unix::ffi::OsStrExt;
    let mut bytes = Vec::with_capacity(name.len() + 1);
    bytes.push(0);
    bytes.extend_from_slice(name);
    SockAddr::unix(std::ffi::OsStr::from_bytes(&bytes))
}

/// An open, non-blocking client socket of one of the four transports.
pub(crate) enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
    Udp(UdpSocket),
    UnixDgram(UnixDatagram),
}

impl fmt::Debug for Sock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Sock::Tcp(_) => "Sock::Tcp",
            Sock::Unix(_) => "Sock::Unix",
            Sock::Udp(_) => "Sock::Udp",
            Sock::UnixDgram(_) => "Sock::UnixDgram",
        })
    }
}

impl Sock {
    fn unix(sock: Socket) -> Sock {
        let std: std::os::unix::net::UnixStream = sock.into();
        Sock::Unix(UnixStream::from_std(std))
    }

    pub fn is_stream(&self) -> bool {
        matches!(self, Sock::Tcp(_) | Sock::Unix(_))
    }

    /// Registers for both readiness kinds, edge-triggered, once for the socket's life.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let both = Interest::READABLE | Interest::WRITABLE;
        match self {
            Sock::Tcp(s) => registry.register(s, token, both),
            Sock::Unix(s) => registry.register(s, token, both),
            Sock::Udp(s) => registry.register(s, token, both),
            Sock::UnixDgram(s) => registry.register(s, token, both),
        }
    }

    /// A pending connect's outcome: `None` while it is still under way.
    pub fn connected(&self) -> Option<io::Result<()>> {
        let (err, peer) = match self {
            Sock::Tcp(s) => (s.take_error(), s.peer_addr().map(drop)),
            Sock::Unix(s) => (s.take_error(), s.peer_addr().map(drop)),
            _ => return Some(Ok(())),
        };
        match (err, peer) {
            (Ok(Some(e)) | Err(e), _) => Some(Err(e)),
            (Ok(None), Ok(())) => Some(Ok(())),
            (Ok(None), Err(e)) if e.kind() == io::ErrorKind::NotConnected => None,
            (Ok(None), Err(e)) => Some(Err(e)),
        }
    }

    /// Writes (stream) or sends one datagram.
    #[inline]
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write(buf),
            Sock::Unix(s) => s.write(buf),
            Sock::Udp(s) => s.send(buf),
            Sock::UnixDgram(s) => s.send(buf),
        }
    }

    /// Reads (stream) or receives one datagram.
    #[inline]
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
            Sock::Udp(s) => s.recv(buf),
            Sock::UnixDgram(s) => s.recv(buf),
        }
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

/// Where one request stands: bytes of the request written, of the reply read.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Progress {
    pub written: usize,
    pub got: usize,
}

/// How far [`exchange`] got.
#[derive(Debug)]
pub(crate) enum Step {
    /// The socket would block; wait for its next readiness event.
    Blocked,
    /// The request is answered (or failed).
    Done(Result<After, Failure>),
}

/// Sends the request and reads and checks its reply as far as the socket
/// allows without blocking. `scratch` holds what is read (64 KiB suffices:
/// stream replies are checked as they arrive, and no datagram is larger).
#[inline]
pub(crate) fn exchange(
    sock: &mut Sock,
    p: &mut Progress,
    pay: &Payload,
    expect: Expect,
    scratch: &mut [u8],
) -> Step {
    if sock.is_stream() {
        stream_step(sock, p, pay, expect, scratch)
    } else {
        datagram_step(sock, p, pay, expect, scratch)
    }
}

fn datagram_step(
    sock: &mut Sock,
    p: &mut Progress,
    pay: &Payload,
    expect: Expect,
    scratch: &mut [u8],
) -> Step {
    loop {
        if p.written == 0 {
            match sock.write(&pay.request) {
                // The reply's arrival is the next readiness event.
                Ok(_) => {
                    p.written = pay.request.len();
                    return Step::Blocked;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Blocked,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Step::Done(Err(Failure::io("send to", e))),
            }
        }
        return match sock.read(scratch) {
            Ok(n) => {
                p.got = n;
                Step::Done(check_datagram(&scratch[..n], &pay.expected, expect))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Step::Blocked,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Step::Done(Err(Failure::io("receive from", e))),
        };
    }
}

/// Over a stream: write the request, and read `size` bytes (echo/upper) or
/// up to a newline (any), however the server splits them; the reply is
/// read while the request is still being written, so a large request
/// cannot deadlock against an echo server.
fn stream_step(
    sock: &mut Sock,
    p: &mut Progress,
    pay: &Payload,
    expect: Expect,
    scratch: &mut [u8],
) -> Step {
    let len = pay.request.len();
    loop {
        let mut progressed = false;
        if p.written < len {
            match sock.write(&pay.request[p.written..]) {
                Ok(n) => {
                    p.written += n;
                    progressed = true;
                    if p.written == len && p.got == 0 {
                        // The reply cannot be here yet: its arrival is the next readiness event.
                        return Step::Blocked;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Step::Done(Err(Failure::io("send to", e))),
            }
        }
        let want = match expect {
            Expect::Any => pay.line_cap - p.got,
            _ => len - p.got,
        }
        .min(scratch.len());
        match sock.read(&mut scratch[..want]) {
            Ok(0) if expect == Expect::Any && p.got > 0 => return Step::Done(Ok(After::Closed)),
            Ok(0) => return Step::Done(Err(short_reply())),
            Ok(n) => {
                let new = &scratch[..n];
                if expect == Expect::Any {
                    p.got += n;
                    if new.contains(&b'\n') || p.got == pay.line_cap {
                        return Step::Done(Ok(After::Keep));
                    }
                } else {
                    if *new != pay.expected[p.got..p.got + n] {
                        return Step::Done(Err(wrong_reply(expect)));
                    }
                    p.got += n;
                    if p.got == len {
                        return Step::Done(Ok(After::Keep));
                    }
                }
                progressed = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Step::Done(Err(Failure::io("receive from", e))),
        }
        if !progressed {
            return Step::Blocked;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream as Pair;

    /// A non-blocking client end and a blocking server end.
    fn pair() -> (Sock, Pair) {
        let (client, server) = Pair::pair().unwrap();
        client.set_nonblocking(true).unwrap();
        (Sock::Unix(UnixStream::from_std(client)), server)
    }

    fn step(sock: &mut Sock, p: &mut Progress, pay: &Payload, expect: Expect) -> Step {
        exchange(sock, p, pay, expect, &mut [0u8; 65536])
    }

    /// The first step writes the request and waits for the reply's readiness event.
    fn send(sock: &mut Sock, pay: &Payload, expect: Expect) -> Progress {
        let mut p = Progress::default();
        assert!(matches!(step(sock, &mut p, pay, expect), Step::Blocked));
        assert_eq!(p.written, pay.request.len());
        p
    }

    #[test]
    fn requests_are_lowercase_letters_and_upper_expects_uppercase() {
        let b = Payload::new(30, Expect::Upper);
        assert!(b.request.iter().all(u8::is_ascii_lowercase));
        assert_eq!(b.expected, b.request.to_ascii_uppercase());
        let a = Payload::new(8, Expect::Any);
        assert_eq!(a.request.last(), Some(&b'\n'));
    }

    #[test]
    fn stream_replies_split_over_reads_are_reassembled() {
        let (mut client, mut server) = pair();
        let pay = Payload::new(10, Expect::Echo);
        let mut p = send(&mut client, &pay, Expect::Echo);
        let mut req = [0u8; 10];
        server.read_exact(&mut req).unwrap();
        server.write_all(&req[..3]).unwrap();
        assert!(matches!(
            step(&mut client, &mut p, &pay, Expect::Echo),
            Step::Blocked
        ));
        assert_eq!(p.got, 3);
        server.write_all(&req[3..]).unwrap();
        assert!(matches!(
            step(&mut client, &mut p, &pay, Expect::Echo),
            Step::Done(Ok(After::Keep))
        ));
    }

    #[test]
    fn eof_mid_reply_is_short_and_bad_bytes_are_wrong() {
        let (mut client, server) = pair();
        let pay = Payload::new(10, Expect::Echo);
        (&server).write_all(b"abc").unwrap();
        server.shutdown(std::net::Shutdown::Write).unwrap();
        let mut p = send(&mut client, &pay, Expect::Echo);
        let Step::Done(Err(e)) = step(&mut client, &mut p, &pay, Expect::Echo) else {
            panic!("EOF mid-reply is not a failure");
        };
        assert_eq!(e.kind, ErrorKind::ShortReply);

        let (mut client, mut server) = pair();
        server.write_all(b"ABCDEFGHIJ").unwrap();
        let mut p = send(&mut client, &pay, Expect::Echo);
        let Step::Done(Err(e)) = step(&mut client, &mut p, &pay, Expect::Echo) else {
            panic!("a wrong reply is not a failure");
        };
        assert_eq!(e.kind, ErrorKind::WrongReply);
        let addr = Address::Unix("/x".into());
        assert_eq!(
            e.message(&addr),
            "reply from /x: reply is not the echo of the request"
        );
    }

    #[test]
    fn a_line_reply_ends_at_its_newline_and_eof_after_it_closes() {
        let (mut client, mut server) = pair();
        let pay = Payload::new(4, Expect::Any);
        server.write_all(b"12:00").unwrap();
        let mut p = send(&mut client, &pay, Expect::Any);
        assert!(matches!(
            step(&mut client, &mut p, &pay, Expect::Any),
            Step::Blocked
        ));
        server.write_all(b"\n").unwrap();
        assert!(matches!(
            step(&mut client, &mut p, &pay, Expect::Any),
            Step::Done(Ok(After::Keep))
        ));
        // The next request is sent; its reply ends with the stream, no newline.
        let mut p = send(&mut client, &pay, Expect::Any);
        server.write_all(b"x").unwrap();
        server.read_exact(&mut [0u8; 8]).unwrap(); // both requests: unread data would reset
        drop(server);
        assert!(matches!(
            step(&mut client, &mut p, &pay, Expect::Any),
            Step::Done(Ok(After::Closed))
        ));
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
