//! The line client behind `sockcat`: connects over any of the four
//! transports, sends each input line, prints what comes back. With a name
//! it logs in to a chat server first.

use std::io::{self, BufRead, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::addr::Transport;

/// What `sockcat` was asked to do.
#[derive(Debug, Clone)]
pub struct LineClient {
    /// The transport.
    pub transport: Transport,
    /// Server address: HOST:PORT, a socket path, or `@abstract`.
    pub addr: String,
    /// Chat: log in (or register) as this name first.
    pub name: Option<String>,
    /// The password for `name`.
    pub password: Option<String>,
    /// Register `name` instead of logging in.
    pub register: bool,
    /// Chat: ask for coloured names.
    pub colour: bool,
    /// Datagrams: how long to wait for replies after the input ends.
    pub linger: Duration,
    /// Print `> ` before reading each line.
    pub prompt: bool,
}

impl LineClient {
    /// The lines sent before the input: login and colour choice.
    fn preamble(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(name) = &self.name {
            let verb = if self.register { "register" } else { "login" };
            v.push(format!(
                "/{verb} {name} {}",
                self.password.as_deref().unwrap_or("")
            ));
        }
        if self.colour {
            v.push("/color on".into());
        }
        v
    }

    /// Runs until the input ends and (streams) the server closes, or
    /// (datagrams) `linger` passes without a reply.
    pub fn run(
        &self,
        input: &mut impl BufRead,
        out: impl Write + Send + 'static,
    ) -> io::Result<()> {
        let ctx = |e: io::Error| {
            io::Error::new(e.kind(), format!("{} {}: {e}", self.transport, self.addr))
        };
        match self.transport {
            Transport::Tcp => {
                let s = TcpStream::connect(&self.addr).map_err(ctx)?;
                let r = s.try_clone()?;
                self.run_stream(s, r, input, out, |s| s.shutdown(std::net::Shutdown::Write))
            }
            Transport::UnixStream => {
                let s = connect_unix(&self.addr).map_err(ctx)?;
                let r = s.try_clone()?;
                self.run_stream(s, r, input, out, |s| s.shutdown(std::net::Shutdown::Write))
            }
            Transport::Udp => {
                let bind = if self.addr.starts_with('[') {
                    "[::]:0"
                } else {
                    "0.0.0.0:0"
                };
                let s = UdpSocket::bind(bind)?;
                s.connect(&self.addr).map_err(ctx)?;
                let r = s.try_clone()?;
                self.run_dgram(move |b| s.send(b), r, input, out)
            }
            Transport::UnixDgram => {
                // An abstract address: repliable, and nothing to clean up.
                use std::os::linux::net::SocketAddrExt;
                let tag = crate::services::accounts::credential::random_bytes::<8>()?;
                let name: String = tag.iter().map(|b| format!("{b:02x}")).collect();
                let me =
                    std::os::unix::net::SocketAddr::from_abstract_name(format!("sockcat-{name}"))?;
                let s = UnixDatagram::bind_addr(&me)?;
                connect_unix_dgram(&s, &self.addr).map_err(ctx)?;
                let r = s.try_clone()?;
                self.run_dgram(move |b| s.send(b), r, input, out)
            }
        }
    }

    fn run_stream<S: Write, R: Read + Send + 'static>(
        &self,
        mut s: S,
        r: R,
        input: &mut impl BufRead,
        out: impl Write + Send + 'static,
        close_write: impl Fn(&S) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut r = io::BufReader::new(r);
        let mut out = out;
        for l in self.preamble() {
            s.write_all(format!("{l}\n").as_bytes())?;
            // The reply to a login decides whether to go on: read up to it
            // (past the room's greeting) before the printer takes over.
            let mut reply = String::new();
            loop {
                reply.clear();
                if r.read_line(&mut reply)? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{} closed the connection after {}", self.addr, redact(&l)),
                    ));
                }
                out.write_all(reply.as_bytes())?;
                if reply.starts_with("ok:") || reply.starts_with("error:") {
                    break;
                }
            }
            out.flush()?;
            refused(&l, reply.trim_end())?;
        }
        let printer = std::thread::spawn(move || copy_out(r, out));
        self.each_line(input, |line| s.write_all(format!("{line}\n").as_bytes()))?;
        close_write(&s)?;
        printer.join().unwrap_or(Ok(()))
    }

    fn run_dgram<R: DgramRecv + Send + 'static>(
        &self,
        send: impl Fn(&[u8]) -> io::Result<usize>,
        r: R,
        input: &mut impl BufRead,
        mut out: impl Write + Send + 'static,
    ) -> io::Result<()> {
        // Datagrams may be served out of order under thread and pool
        // policies: wait for each preamble line's reply before going on.
        r.set_timeout(Duration::from_secs(10))?;
        let mut buf = vec![0u8; 65536];
        for l in self.preamble() {
            send(l.as_bytes())?;
            loop {
                let n = r.recv_some(&mut buf).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("no reply from {} to {}: {e}", self.addr, redact(&l)),
                    )
                })?;
                out.write_all(&buf[..n])?;
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let verdict = text
                    .lines()
                    .find(|x| x.starts_with("ok:") || x.starts_with("error:"));
                if let Some(verdict) = verdict {
                    out.flush()?;
                    refused(&l, verdict)?;
                    break;
                }
            }
        }
        out.flush()?;
        let done = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&done);
        r.set_timeout(self.linger.max(Duration::from_millis(10)))?;
        let printer = std::thread::spawn(move || -> io::Result<()> {
            let mut buf = vec![0u8; 65536];
            loop {
                match r.recv_some(&mut buf) {
                    Ok(n) => {
                        out.write_all(&buf[..n])?;
                        if buf[..n].last() != Some(&b'\n') {
                            out.write_all(b"\n")?;
                        }
                        out.flush()?;
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        if stop.load(Ordering::SeqCst) {
                            return Ok(());
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        });
        self.each_line(input, |line| send(line.as_bytes()).map(drop))?;
        done.store(true, Ordering::SeqCst);
        printer.join().unwrap_or(Ok(()))
    }

    fn each_line(
        &self,
        input: &mut impl BufRead,
        mut send: impl FnMut(&str) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut line = String::new();
        loop {
            if self.prompt {
                eprint!("> ");
            }
            line.clear();
            if input.read_line(&mut line)? == 0 {
                return Ok(());
            }
            send(line.trim_end_matches(['\n', '\r']))?;
        }
    }
}

/// A preamble line as it may appear in a message: the password replaced.
fn redact(line: &str) -> String {
    let mut words = line.splitn(3, ' ');
    match (words.next(), words.next(), words.next()) {
        (Some(verb @ ("/login" | "/register")), Some(name), Some(_)) => {
            format!("{verb} {name} ********")
        }
        _ => line.to_string(),
    }
}

/// An error reply to a login or registration ends the client.
fn refused(line: &str, reply: &str) -> io::Result<()> {
    let login = line.starts_with("/login ") || line.starts_with("/register ");
    if login && reply.starts_with("error:") {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} refused: {reply}", redact(line)),
        ));
    }
    Ok(())
}

fn copy_out(mut r: impl Read, mut out: impl Write) -> io::Result<()> {
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if crate::dispatch::is_disconnect(&e) => return Ok(()),
            Err(e) => return Err(e),
        };
        out.write_all(&buf[..n])?;
        out.flush()?;
    }
}

trait DgramRecv {
    fn recv_some(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn set_timeout(&self, t: Duration) -> io::Result<()>;
}

impl DgramRecv for UdpSocket {
    fn recv_some(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv(buf)
    }
    fn set_timeout(&self, t: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(t))
    }
}

impl DgramRecv for UnixDatagram {
    fn recv_some(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv(buf)
    }
    fn set_timeout(&self, t: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(t))
    }
}

fn connect_unix(addr: &str) -> io::Result<UnixStream> {
    match addr.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            UnixStream::connect_addr(&std::os::unix::net::SocketAddr::from_abstract_name(name)?)
        }
        None => UnixStream::connect(addr),
    }
}

fn connect_unix_dgram(s: &UnixDatagram, addr: &str) -> io::Result<()> {
    match addr.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            s.connect_addr(&std::os::unix::net::SocketAddr::from_abstract_name(name)?)
        }
        None => s.connect(addr),
    }
}
