//! Chat under the event policy: a session per connection (or datagram
//! client) as under the other policies, its lines answered by the room
//! from the loop. Every line a stream session gets, its own replies
//! included, goes through its outlet, as under thread: without blocking,
//! and a client that lets its buffer fill is disconnected, so lines from
//! other sessions never interleave with its replies. `/register` and
//! `/login` hash a password on the loop: that stalls the loop's other
//! connections for the hash's time.

use std::io;
use std::sync::Arc;

use crate::handler::{HandlerFactory, MessageFactory, MessageHandler, Next, Opening, Output};
use crate::request::Request;
use crate::services::event::LineDeadline;

use super::handler::{client_key, datagram_reply, too_long, ChatHandler, LINE_LIMIT};
use super::room::{lock, Outlet, SessionId, StreamOutlet};
use super::{Chat, WELCOME};

/// Serves a chat room under every policy: a [`ChatHandler`] per request
/// under the blocking ones, a message handler per session under event.
pub struct ChatFactory(pub(super) Arc<Chat>);

impl HandlerFactory for ChatFactory {
    fn serve(&self, request: &mut Request) -> io::Result<()> {
        crate::handler::run_handler(&mut ChatHandler::new(Arc::clone(&self.0)), request)
    }

    fn message_factory(&self) -> Option<&dyn MessageFactory> {
        Some(self)
    }
}

impl MessageFactory for ChatFactory {
    fn open(&self, o: &Opening<'_>, _out: &mut Output) -> io::Result<Box<dyn MessageHandler>> {
        let chat = Arc::clone(&self.0);
        if let Some((socket, to)) = o.datagram() {
            return Ok(Box::new(DatagramLine {
                chat,
                peer: o.peer().clone(),
                socket: Arc::clone(socket),
                to: to.clone(),
            }));
        }
        let outlet = Arc::new(StreamOutlet::new(o.socket().try_clone()?));
        let client = client_key(o.peer(), Some(o.socket()));
        let id = lock(&chat.sessions).add(Outlet::Stream(Arc::clone(&outlet)), client, None);
        let session = StreamSession {
            chat,
            id,
            outlet,
            line: Vec::new(),
            skipping: false,
            deadline: LineDeadline::new(o.server().request_timeout),
        };
        session.outlet.send(WELCOME.as_bytes())?;
        Ok(Box::new(session))
    }
}

/// One stream session.
struct StreamSession {
    chat: Arc<Chat>,
    id: SessionId,
    outlet: Arc<StreamOutlet>,
    /// The start of a line not finished yet.
    line: Vec<u8>,
    /// Dropping the rest of an over-long line.
    skipping: bool,
    /// The unfinished line's request deadline.
    deadline: LineDeadline,
}

impl MessageHandler for StreamSession {
    fn data(&mut self, input: &[u8], _out: &mut Output) -> io::Result<Next> {
        self.deadline.check()?;
        let mut rest = input;
        while !rest.is_empty() {
            let end = rest.iter().position(|&b| b == b'\n');
            let (piece, after) = rest.split_at(end.map_or(rest.len(), |i| i + 1));
            rest = after;
            if !self.skipping {
                self.line.extend_from_slice(piece);
            }
            if end.is_none() && !self.skipping && self.line.len() >= LINE_LIMIT {
                self.skipping = true;
                self.line = Vec::new();
                // Said at once, as under the other policies: a client that
                // never ends the line, or hangs up first, is told too.
                if self.outlet.send(too_long().as_bytes()).is_err() {
                    return Ok(Next::Close); // evicted as too slow
                }
            }
            if end.is_none() {
                self.deadline.pending();
                break;
            }
            self.deadline.finished();
            if std::mem::take(&mut self.skipping) {
                continue; // the end of an over-long line, already answered
            }
            let line = std::mem::take(&mut self.line);
            let out = self.chat.handle_line(self.id, &line);
            if !out.reply.is_empty() && self.outlet.send(out.reply.as_bytes()).is_err() {
                return Ok(Next::Close); // evicted as too slow
            }
            // (a graceful stop closes the session after this line: the
            // loop closes a served connection once it is idle)
            if out.quit {
                return Ok(Next::Close);
            }
        }
        Ok(Next::Read)
    }

    fn closed(&mut self) {
        lock(&self.chat.sessions).remove(self.id);
    }
}

/// One datagram of a datagram session.
struct DatagramLine {
    chat: Arc<Chat>,
    peer: crate::addr::Address,
    socket: Arc<socket2::Socket>,
    to: socket2::SockAddr,
}

impl MessageHandler for DatagramLine {
    fn data(&mut self, input: &[u8], out: &mut Output) -> io::Result<Next> {
        let (chat, peer, socket, to) = (&self.chat, &self.peer, &self.socket, &self.to);
        out.reply_with(|reply| datagram_reply(chat, peer, socket, to, input, reply));
        Ok(Next::Close)
    }
}
