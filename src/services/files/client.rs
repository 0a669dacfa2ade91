//! A client for the files service: the library behind `sockfiles`, with
//! the interactive prompt and the one-shot commands.

use std::fs::File;
use std::io::{self, BufRead, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::services::accounts::text::neutralise;

use super::auth::{self, Challenge, ClientSecret};
use super::frame::{self, Framed};
use super::fsops::Entry;
use super::{DATA_CHUNK, PROTOCOL};

/// What went wrong on the client side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A socket or file error (the message names what failed).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The server refused, with its reason.
    #[error("server: {0}")]
    Server(String),
    /// The server said something this client does not understand.
    #[error("protocol: {0}")]
    Protocol(String),
}

/// Shorthand for client results.
pub type Result<T> = std::result::Result<T, ClientError>;

/// A TCP or Unix stream connection.
pub enum Stream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix stream.
    Unix(UnixStream),
}

impl Stream {
    /// Connects to `addr` over `transport` ("tcp", or "unix" with a path or
    /// `@abstract` name).
    pub fn connect(transport: crate::Transport, addr: &str) -> io::Result<Stream> {
        let ctx = |e: io::Error| io::Error::new(e.kind(), format!("connect {addr}: {e}"));
        match transport {
            crate::Transport::Tcp => TcpStream::connect(addr).map(Stream::Tcp).map_err(ctx),
            crate::Transport::UnixStream => match addr.strip_prefix('@') {
                Some(name) => {
                    use std::os::linux::net::SocketAddrExt;
                    let sa = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                    UnixStream::connect_addr(&sa).map(Stream::Unix).map_err(ctx)
                }
                None => UnixStream::connect(addr).map(Stream::Unix).map_err(ctx),
            },
            t => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the files service runs over tcp or unix, not {t}"),
            )),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A logged-in (or about to be) files session.
pub struct FilesClient<S: Read + Write> {
    conn: Framed<S>,
    server_max_frame: usize,
}

impl<S: Read + Write> FilesClient<S> {
    /// Reads the server's hello.
    pub fn handshake(stream: S) -> Result<FilesClient<S>> {
        let mut conn = Framed::new(stream, frame::DEFAULT_MAX_FRAME);
        let hello = recv_text(&mut conn)?;
        let rest = hello
            .strip_prefix(&format!("hello {PROTOCOL} max-frame="))
            .ok_or_else(|| {
                ClientError::Protocol(format!("not a {PROTOCOL} server: {}", auth::clip(&hello)))
            })?;
        let server_max_frame = rest
            .parse()
            .map_err(|_| ClientError::Protocol(format!("bad hello {}", auth::clip(&hello))))?;
        Ok(FilesClient {
            conn,
            server_max_frame,
        })
    }

    /// Logs in with the challenge-response; the password stays here.
    pub fn login(&mut self, name: &str, password: &str) -> Result<()> {
        let cnonce = auth::new_nonce()?;
        self.conn
            .send(format!("login {name} {cnonce}").as_bytes())?;
        let reply = recv_text(&mut self.conn)?;
        if let Some(m) = reply.strip_prefix("err ") {
            return Err(ClientError::Server(m.to_string()));
        }
        let challenge = Challenge::parse(&reply, &cnonce).map_err(ClientError::Protocol)?;
        let secret =
            ClientSecret::derive(password.as_bytes(), &challenge).map_err(ClientError::Protocol)?;
        let am = challenge.auth_message(name, &cnonce);
        self.conn.send(secret.proof_message(&am).as_bytes())?;
        let reply = recv_text(&mut self.conn)?;
        if let Some(m) = reply.strip_prefix("err ") {
            return Err(ClientError::Server(m.to_string()));
        }
        secret
            .verify_server(&am, &reply)
            .map_err(ClientError::Protocol)
    }

    /// Sends one command and returns what follows `ok` in the reply.
    pub fn request(&mut self, cmd: &str) -> Result<String> {
        self.conn.send(cmd.as_bytes())?;
        let reply = recv_text(&mut self.conn)?;
        ok_reply(&reply)
    }

    /// `mkdir -p` on the server.
    pub fn mkdir(&mut self, path: &str) -> Result<()> {
        self.request(&format!("mkdir {path}")).map(drop)
    }

    /// Removes a file, link or empty directory.
    pub fn rm(&mut self, path: &str) -> Result<()> {
        self.request(&format!("rm {path}")).map(drop)
    }

    /// `used=N quota=N max-file=N`.
    pub fn quota(&mut self) -> Result<String> {
        self.request("quota")
    }

    /// Lists a directory.
    pub fn ls(&mut self, path: &str) -> Result<Vec<Entry>> {
        let n: usize = parse_num(&self.request(&format!("ls {path}"))?)?;
        (0..n)
            .map(|_| {
                let line = recv_text(&mut self.conn)?;
                let mut it = line.splitn(3, ' ');
                match (it.next(), it.next().and_then(|s| s.parse().ok()), it.next()) {
                    (Some(k), Some(size), Some(name)) if k.len() == 1 => Ok(Entry {
                        kind: k.chars().next().unwrap_or('o'),
                        size,
                        name: name.to_string(),
                    }),
                    _ => Err(ClientError::Protocol(format!(
                        "bad ls entry {}",
                        auth::clip(&line)
                    ))),
                }
            })
            .collect()
    }

    /// Uploads `size` bytes from `src` to `remote`, streaming.
    pub fn put(&mut self, src: &mut impl Read, size: u64, remote: &str) -> Result<()> {
        self.request(&format!("put {size} {remote}"))?;
        let chunk = DATA_CHUNK.min(self.server_max_frame);
        let mut buf = vec![0u8; chunk];
        let mut left = size;
        while left > 0 {
            let want = left.min(chunk as u64) as usize;
            let n = src.read(&mut buf[..want])?;
            if n == 0 {
                return Err(ClientError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("put {remote}: the source ended {left} bytes early"),
                )));
            }
            self.conn.send(&buf[..n])?;
            left -= n as u64;
        }
        ok_reply(&recv_text(&mut self.conn)?).map(drop)
    }

    /// Uploads local file `local` to `remote`.
    pub fn put_file(&mut self, local: &Path, remote: &str) -> Result<u64> {
        let ctx = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", local.display()));
        let mut f = File::open(local).map_err(ctx)?;
        let size = f.metadata().map_err(ctx)?.len();
        self.put(&mut f, size, remote)?;
        Ok(size)
    }

    /// Downloads `remote` into `dst`, streaming; returns its size.
    pub fn get(&mut self, remote: &str, dst: &mut impl Write) -> Result<u64> {
        let size: u64 = parse_num(&self.request(&format!("get {remote}"))?)?;
        let mut got = 0u64;
        while got < size {
            let data = self
                .conn
                .recv()?
                .ok_or_else(|| ClientError::Protocol(format!("get {remote}: connection closed")))?;
            got += data.len() as u64;
            if got > size {
                return Err(ClientError::Protocol(format!(
                    "get {remote}: more data than announced"
                )));
            }
            dst.write_all(&data)?;
        }
        Ok(size)
    }

    /// Downloads `remote` to local file `local`, via `local.part` renamed
    /// on completion.
    pub fn get_file(&mut self, remote: &str, local: &Path) -> Result<u64> {
        let part = local.with_extension(match local.extension() {
            Some(e) => format!("{}.part", e.to_string_lossy()),
            None => "part".into(),
        });
        let ctx =
            |p: &Path, e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", p.display()));
        let mut f = io::BufWriter::new(File::create(&part).map_err(|e| ctx(&part, e))?);
        let got = self.get(remote, &mut f).and_then(|n| {
            f.flush().map_err(|e| ctx(&part, e))?;
            Ok(n)
        });
        drop(f);
        match got {
            Ok(n) => {
                std::fs::rename(&part, local).map_err(|e| ctx(local, e))?;
                Ok(n)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                Err(e)
            }
        }
    }

    /// Says goodbye.
    pub fn quit(&mut self) -> Result<()> {
        self.request("quit").map(drop)
    }

    /// The framed connection (for tests and tools that speak raw frames).
    pub fn framed(&mut self) -> &mut Framed<S> {
        &mut self.conn
    }
}

fn recv_text<S: Read + Write>(conn: &mut Framed<S>) -> Result<String> {
    let f = conn
        .recv()?
        .ok_or_else(|| ClientError::Protocol("the server closed the connection".into()))?;
    String::from_utf8(f).map_err(|_| ClientError::Protocol("reply is not UTF-8".into()))
}

fn ok_reply(reply: &str) -> Result<String> {
    if reply == "ok" {
        return Ok(String::new());
    }
    if let Some(rest) = reply.strip_prefix("ok ") {
        return Ok(rest.to_string());
    }
    match reply.strip_prefix("err ") {
        Some(m) => Err(ClientError::Server(m.to_string())),
        None => Err(ClientError::Protocol(format!(
            "unexpected reply {}",
            auth::clip(reply)
        ))),
    }
}

fn parse_num<T: std::str::FromStr>(s: &str) -> Result<T> {
    s.parse()
        .map_err(|_| ClientError::Protocol(format!("expected a number, got {}", auth::clip(s))))
}

/// Runs one command given as words (`put LOCAL [REMOTE]`, `get REMOTE
/// [LOCAL]`, `mkdir P`, `ls [P]`, `rm P`, `quota`), printing to `out`.
pub fn run_command<S: Read + Write>(
    client: &mut FilesClient<S>,
    words: &[&str],
    out: &mut impl Write,
) -> Result<()> {
    let name_of = |p: &str| {
        Path::new(p)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
    };
    match words {
        ["mkdir", p] => client.mkdir(p)?,
        ["rm", p] => client.rm(p)?,
        ["ls"] | ["ls", _] => {
            for e in client.ls(words.get(1).copied().unwrap_or(""))? {
                let name = neutralise(&e.name);
                writeln!(out, "{} {:>12} {name}", e.kind, e.size)?;
            }
        }
        ["quota"] => writeln!(out, "{}", client.quota()?)?,
        ["put", local] | ["put", local, _] => {
            let remote = match words.get(2) {
                Some(r) => r.to_string(),
                None => name_of(local).ok_or_else(|| ClientError::Protocol(format!("{local}: not a file name")))?,
            };
            let n = client.put_file(Path::new(local), &remote)?;
            writeln!(out, "stored {remote} ({n} bytes)")?;
        }
        ["get", remote] | ["get", remote, _] => {
            let local = match words.get(2) {
                Some(l) => l.to_string(),
                None => name_of(remote).ok_or_else(|| ClientError::Protocol(format!("{remote}: not a file name")))?,
            };
            let n = client.get_file(remote, Path::new(&local))?;
            writeln!(out, "saved {local} ({n} bytes)")?;
        }
        _ => {
            return Err(ClientError::Protocol(
                "commands: mkdir PATH | ls [PATH] | put LOCAL [REMOTE] | get REMOTE [LOCAL] | rm PATH | quota | quit"
                    .into(),
            ))
        }
    }
    Ok(())
}

/// The interactive loop: prints `>>> `, runs each line, reports errors and
/// carries on, until `quit` or end of input. Returns the number of failed
/// commands.
pub fn prompt<S: Read + Write>(
    client: &mut FilesClient<S>,
    input: &mut impl BufRead,
    out: &mut impl Write,
) -> Result<usize> {
    let mut failed = 0;
    let mut line = String::new();
    loop {
        write!(out, ">>> ")?;
        out.flush()?;
        line.clear();
        if input.read_line(&mut line)? == 0 {
            writeln!(out)?;
            break;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            [] => continue,
            ["quit"] | ["exit"] => break,
            _ => {}
        }
        match run_command(client, &words, out) {
            Ok(()) => {}
            Err(ClientError::Io(e)) if crate::dispatch::is_disconnect(&e) => return Err(e.into()),
            Err(e) => {
                failed += 1;
                writeln!(out, "error: {e}")?;
            }
        }
    }
    let _ = client.quit();
    Ok(failed)
}
