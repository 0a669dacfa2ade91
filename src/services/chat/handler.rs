//! Serving chat sessions over streams and datagrams.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use crate::addr::Address;
use crate::handler::Handler;
use crate::request::{DatagramRequest, Request, StreamRequest};

use super::parse::MAX_LINE;
use super::room::{lock, Outlet, SessionId, StreamOutlet, MAX_DATAGRAM_SESSIONS};
use super::{Chat, WELCOME};

/// The longest line read, with room for `\r\n`.
pub(super) const LINE_LIMIT: usize = MAX_LINE + 2;

/// Serves one connection, or one datagram, of a chat room.
pub struct ChatHandler {
    chat: Arc<Chat>,
}

impl ChatHandler {
    /// A handler for `chat` (see [`Chat::factory`]).
    pub fn new(chat: Arc<Chat>) -> ChatHandler {
        ChatHandler { chat }
    }
}

impl Handler for ChatHandler {
    fn handle(&mut self, req: &mut Request) -> io::Result<()> {
        match req {
            Request::Stream(s) => serve_stream(&self.chat, s),
            Request::Datagram(d) => {
                serve_datagram(&self.chat, d);
                Ok(())
            }
        }
    }
}

/// Removes a stream session however its handler ends.
struct Leave<'a>(&'a Chat, SessionId);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        lock(&self.0.sessions).remove(self.1);
    }
}

fn serve_stream(chat: &Chat, s: &mut StreamRequest) -> io::Result<()> {
    let outlet = Arc::new(StreamOutlet::new(s.socket().try_clone()?));
    let client = client_key(s.peer(), Some(s.socket()));
    let id = lock(&chat.sessions).add(Outlet::Stream(Arc::clone(&outlet)), client, None);
    let _leave = Leave(chat, id);
    outlet.send(WELCOME.as_bytes())?;
    let mut line = Vec::with_capacity(256);
    loop {
        let n = s.read_line(LINE_LIMIT, &mut line)?;
        if n == 0 {
            return Ok(());
        }
        if n == LINE_LIMIT && line.last() != Some(&b'\n') {
            // Said at once, before the rest is skipped: a client that never
            // ends the line, or hangs up first, is told too.
            if outlet.send(too_long().as_bytes()).is_err() {
                return Ok(()); // evicted as too slow
            }
            skip_line(s)?;
            continue;
        }
        let out = chat.handle_line(id, &line);
        if !out.reply.is_empty() && outlet.send(out.reply.as_bytes()).is_err() {
            return Ok(()); // evicted as too slow
        }
        if out.quit || s.server().is_stopping() {
            return Ok(());
        }
    }
}

/// The reply to a line longer than [`MAX_LINE`].
pub(super) fn too_long() -> String {
    format!("error: line longer than {MAX_LINE} bytes; nothing was sent\n")
}

/// Reads and drops the rest of an over-long line.
fn skip_line(s: &mut StreamRequest) -> io::Result<()> {
    let mut junk = Vec::with_capacity(LINE_LIMIT);
    loop {
        let n = s.read_line(64 * 1024, &mut junk)?;
        if n == 0 || junk.last() == Some(&b'\n') {
            return Ok(());
        }
    }
}

fn serve_datagram(chat: &Chat, d: &mut DatagramRequest) {
    let (socket, to, peer) = (
        Arc::clone(d.socket()),
        d.reply_addr().clone(),
        d.peer().clone(),
    );
    let mut reply = std::mem::take(&mut d.reply);
    datagram_reply(chat, &peer, &socket, &to, &d.packet, &mut reply);
    d.reply = reply;
}

/// One datagram of the session of `peer` (made on its first datagram):
/// appends the reply (with the greeting, for a new session) to `reply`.
pub(super) fn datagram_reply(
    chat: &Chat,
    peer: &Address,
    socket: &Arc<socket2::Socket>,
    to: &socket2::SockAddr,
    packet: &[u8],
    reply: &mut Vec<u8>,
) {
    if matches!(peer, Address::Unnamed) {
        return; // An unbound Unix client cannot be answered.
    }
    let addr = peer.to_string();
    let now = Instant::now();
    let ttl = chat.cfg.session_timeout;
    let (id, new) = {
        let mut sessions = lock(&chat.sessions);
        match sessions.touch_datagram(&addr, now, ttl) {
            Some(id) => (id, false),
            None if sessions.datagram_count() >= MAX_DATAGRAM_SESSIONS => {
                reply.extend_from_slice(b"error: too many sessions; try again later\n");
                return;
            }
            None => {
                let outlet = Outlet::Datagram {
                    socket: Arc::clone(socket),
                    to: to.clone(),
                };
                let client = client_key(peer, None);
                (sessions.add(outlet, client, Some(addr)), true)
            }
        }
    };
    if new {
        reply.extend_from_slice(WELCOME.as_bytes());
    }
    let out = if packet.len() > LINE_LIMIT {
        super::Outcome {
            reply: too_long(),
            quit: false,
        }
    } else {
        chat.handle_line(id, packet)
    };
    reply.extend_from_slice(out.reply.as_bytes());
    if out.quit {
        lock(&chat.sessions).remove(id);
    }
}

/// The rate-limit key of a client: its IP address (any port), the uid of
/// a local stream peer, or its socket path.
pub(super) fn client_key(peer: &Address, socket: Option<&socket2::Socket>) -> String {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    match peer {
        Address::Inet(sa) => format!("addr:{}", sa.ip()),
        _ => match socket.and_then(|s| getsockopt(s, PeerCredentials).ok()) {
            Some(cred) => format!("uid:{}", cred.uid()),
            None => format!("addr:{peer}"),
        },
    }
}
