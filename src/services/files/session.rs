//! One client connection of the files service: hello, login, commands.

use std::io::{self, Read};

use slog::warn;

use crate::request::StreamRequest;
use crate::services::accounts::text::check_name;
use crate::services::accounts::Accounts;

use super::auth::{self, Challenge};
use super::frame::{too_large, Framed};
use super::fsops::Root;
use super::lockout::client_key;
use super::{Files, DATA_CHUNK, MAX_LOGIN_FAILURES, PROTOCOL};

type Conn<'a> = Framed<&'a mut StreamRequest>;

/// Who is connected: the address to log, and the key of the login limit.
struct Peer {
    shown: String,
    key: String,
}

/// What to do after a command.
enum Next {
    Continue,
    Close,
}

/// Serves the connection until the client quits or leaves.
pub(super) fn serve(files: &Files, s: &mut StreamRequest) -> io::Result<()> {
    let peer = Peer {
        shown: s.peer().to_string(),
        key: client_key(s.peer(), s.socket()),
    };
    let mut conn: Conn<'_> = Framed::new(s, files.cfg.max_frame);
    conn.send(format!("hello {PROTOCOL} max-frame={}", files.cfg.max_frame).as_bytes())?;
    let mut root: Option<Root> = None;
    let mut failures = 0;
    loop {
        let Some(frame) = recv(&mut conn)? else {
            return Ok(());
        };
        let Ok(text) = std::str::from_utf8(&frame) else {
            conn.send(b"err command is not UTF-8")?;
            continue;
        };
        let (verb, arg) = text.split_once(' ').unwrap_or((text, ""));
        let next = match (verb, &root) {
            ("quit", _) => {
                conn.send(b"ok bye")?;
                Next::Close
            }
            ("login", Some(_)) => reply(&mut conn, Err("already logged in".into()))?,
            ("login", None) => match login(files, &mut conn, arg, &peer)? {
                Some(r) => {
                    root = Some(r);
                    Next::Continue
                }
                None => {
                    failures += 1;
                    if failures >= MAX_LOGIN_FAILURES {
                        conn.send(b"err too many failed logins; closing")?;
                        Next::Close
                    } else {
                        Next::Continue
                    }
                }
            },
            (_, None) => reply(&mut conn, Err("log in first: login NAME CNONCE".into()))?,
            (_, Some(r)) => command(&mut conn, r, verb, arg)?,
        };
        if matches!(next, Next::Close) || conn.wire().server().is_stopping() {
            return Ok(());
        }
    }
}

/// The next frame; an oversized one is answered with an error and ends the
/// connection (`Ok(None)`), unread.
fn recv(conn: &mut Conn<'_>) -> io::Result<Option<Vec<u8>>> {
    match conn.recv() {
        Err(e) => match too_large(&e) {
            Some(t) => {
                conn.send(format!("err {t}; closing").as_bytes())?;
                Ok(None)
            }
            None => Err(e),
        },
        other => other,
    }
}

fn reply(conn: &mut Conn<'_>, r: Result<String, String>) -> io::Result<Next> {
    match r {
        Ok(m) if m.is_empty() => conn.send(b"ok")?,
        Ok(m) => conn.send(format!("ok {m}").as_bytes())?,
        Err(m) => conn.send(format!("err {m}").as_bytes())?,
    }
    Ok(Next::Continue)
}

fn command(conn: &mut Conn<'_>, root: &Root, verb: &str, arg: &str) -> io::Result<Next> {
    match verb {
        "mkdir" => reply(conn, root.mkdir(arg).map(|()| String::new())),
        "rm" => reply(conn, root.remove(arg).map(|()| String::new())),
        "ls" => match root.list(arg) {
            Ok(entries) => {
                conn.send(format!("ok {}", entries.len()).as_bytes())?;
                for e in entries {
                    conn.send(format!("{} {} {}", e.kind, e.size, e.name).as_bytes())?;
                }
                Ok(Next::Continue)
            }
            Err(m) => reply(conn, Err(m)),
        },
        "quota" => {
            let used = root
                .usage()
                .map_err(|e| format!("cannot measure usage: {e}"));
            let r = used.map(|u| {
                format!(
                    "used={} quota={} max-file={} reserved={}",
                    u.stored, root.quota, root.max_file_size, u.reserved
                )
            });
            reply(conn, r)
        }
        "put" => put(conn, root, arg),
        "get" => get(conn, root, arg),
        _ => reply(conn, Err(format!("unknown command {:?}", auth::clip(verb)))),
    }
}

fn put(conn: &mut Conn<'_>, root: &Root, arg: &str) -> io::Result<Next> {
    let Some((size, path)) = arg
        .split_once(' ')
        .and_then(|(s, p)| Some((s.parse::<u64>().ok()?, p)))
    else {
        return reply(conn, Err("usage: put SIZE PATH".into()));
    };
    let mut upload = match root.begin_upload(path, size) {
        Ok(u) => u,
        Err(m) => return reply(conn, Err(m)),
    };
    conn.send(b"ok")?;
    while upload.remaining() > 0 {
        let Some(data) = recv(conn)? else {
            // Gone mid-upload: dropping the upload removes its temp file.
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("client left during put {path}"),
            ));
        };
        if let Err(m) = upload.write(&data) {
            conn.send(format!("err {m}; closing").as_bytes())?;
            return Ok(Next::Close);
        }
    }
    reply(conn, upload.finish().map(|()| format!("stored {size}")))
}

fn get(conn: &mut Conn<'_>, root: &Root, path: &str) -> io::Result<Next> {
    let (mut file, size) = match root.open_read(path) {
        Ok(f) => f,
        Err(m) => return reply(conn, Err(m)),
    };
    conn.send(format!("ok {size}").as_bytes())?;
    let mut buf = vec![0u8; DATA_CHUNK];
    let mut left = size;
    while left > 0 {
        let want = left.min(DATA_CHUNK as u64) as usize;
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            // The file shrank under us; the client cannot resync: close.
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("get {path}: file shrank while sent"),
            ));
        }
        conn.send(&buf[..n])?;
        left -= n as u64;
    }
    Ok(Next::Continue)
}

/// `Err(reply)` if logins from `peer` are refused now: locked out after
/// too many wrong passwords, or the table cannot be read (then the server
/// fails closed, as when it cannot read its accounts).
fn admitted(files: &Files, peer: &Peer) -> Result<(), String> {
    match files.lockouts.refused(&peer.key) {
        Ok(None) => Ok(()),
        Ok(Some(left)) => {
            warn!(files.log, "files login refused: locked out";
                  "peer" => &peer.shown, "key" => &peer.key, "seconds_left" => left.as_secs());
            Err(lockout_message(left))
        }
        Err(e) => {
            slog::error!(files.log, "files: cannot read the login limits"; "error" => %e);
            Err("the server cannot check its login limits right now".into())
        }
    }
}

fn lockout_message(left: std::time::Duration) -> String {
    format!(
        "too many failed logins from your address; try again in {} s",
        left.as_secs_f64().ceil() as u64
    )
}

/// Runs the challenge-response for `login NAME CNONCE`; `Some(root)` on
/// success. Every wrong password gets the same `err login failed` (or the
/// lockout it triggered), and counts against `peer`'s address.
fn login(files: &Files, conn: &mut Conn<'_>, arg: &str, peer: &Peer) -> io::Result<Option<Root>> {
    if let Err(m) = admitted(files, peer) {
        reply(conn, Err(m))?;
        return Ok(None);
    }
    let Some((name, cnonce)) = arg.split_once(' ') else {
        reply(conn, Err("usage: login NAME CNONCE".into()))?;
        return Ok(None);
    };
    if let Err(e) = check_name(name) {
        reply(conn, Err(format!("bad name: {e}")))?;
        return Ok(None);
    }
    if !auth::valid_nonce(cnonce) {
        reply(
            conn,
            Err("the client nonce must be 16 to 64 base64 characters".into()),
        )?;
        return Ok(None);
    }
    let cred = match Accounts::load(&files.cfg.accounts) {
        Ok(a) => a.credential(name),
        Err(e) => {
            slog::error!(files.log, "files: cannot read accounts"; "error" => %e);
            reply(
                conn,
                Err("the server cannot read its accounts right now".into()),
            )?;
            return Ok(None);
        }
    };
    let (salt, params) = match &cred {
        Some(c) => (c.salt.clone(), c.params),
        None => auth::decoy(&files.secret, name, files.cfg.kdf),
    };
    let challenge = Challenge {
        nonce: format!("{cnonce}{}", auth::new_nonce()?),
        salt,
        params,
    };
    conn.send(challenge.to_message().as_bytes())?;
    let Some(proof) = recv(conn)? else {
        return Err(io::ErrorKind::UnexpectedEof.into());
    };
    // Checked again: other connections from the address may have used up
    // its tries while this one computed its proof.
    if let Err(m) = admitted(files, peer) {
        reply(conn, Err(m))?;
        return Ok(None);
    }
    let am = challenge.auth_message(name, cnonce);
    let accepted = std::str::from_utf8(&proof)
        .ok()
        .zip(cred.as_ref())
        .and_then(|(p, c)| auth::check_proof(c, &am, p));
    match accepted {
        Some(ok) => {
            let root = Root::open(
                &files.cfg.root,
                name,
                files.cfg.max_file_size,
                files.cfg.quota,
            )?;
            conn.send(ok.as_bytes())?;
            Ok(Some(root))
        }
        None => {
            warn!(files.log, "files login failed"; "name" => name, "peer" => &peer.shown,
                  "key" => &peer.key);
            match files.lockouts.failed(&peer.key) {
                Ok(None) => conn.send(b"err login failed")?,
                Ok(Some(left)) => {
                    warn!(files.log, "files: address locked out after failed logins";
                          "peer" => &peer.shown, "key" => &peer.key,
                          "seconds" => left.as_secs());
                    conn.send(format!("err login failed; {}", lockout_message(left)).as_bytes())?
                }
                Err(e) => {
                    slog::error!(files.log, "files: cannot count a failed login"; "error" => %e);
                    conn.send(b"err login failed")?
                }
            }
            Ok(None)
        }
    }
}
