//! Getting one request off a listener: `accept` for the stream transports
//! (TCP, Unix stream), `recvfrom` for the datagram ones (UDP, Unix datagram).
//!
//! TCP and Unix stream differ only in address family once the socket
//! exists (as in Python's `UnixStreamServer`), so they share [`stream`];
//! UDP and Unix datagram share [`dgram`].

mod dgram;
mod stream;

use std::io;
use std::sync::Arc;

use socket2::Socket;

use crate::addr::Address;
use crate::socket::Listener;

/// What one `get_request` produced.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// An accepted connection and its peer.
    Stream {
        /// The connection (blocking, close-on-exec).
        conn: Socket,
        /// The client's address.
        peer: Address,
    },
    /// One datagram, its sender, and the socket to reply on.
    Datagram {
        /// The payload, at most `max_packet_size` bytes.
        packet: Vec<u8>,
        /// The sender's address (the reply goes there).
        peer: Address,
        /// The raw kernel address of the sender, for `sendto`.
        reply_to: socket2::SockAddr,
        /// The server socket, shared with the handler for its reply.
        socket: Arc<Socket>,
    },
}

impl Incoming {
    /// The client's address.
    pub(crate) fn peer(&self) -> &Address {
        match self {
            Incoming::Stream { peer, .. } | Incoming::Datagram { peer, .. } => peer,
        }
    }
}

/// Why `get_request` produced no request.
#[derive(Debug)]
pub(crate) enum NoRequest {
    /// Nothing was pending (EAGAIN), or the client left before accept
    /// (ECONNABORTED), or the call was interrupted: try again later.
    Spurious,
    /// A datagram longer than `max_packet_size` arrived; it was dropped.
    Truncated {
        /// Who sent it.
        peer: Address,
        /// Its real length.
        len: usize,
    },
    /// The process or system is out of descriptors or memory (EMFILE,
    /// ENFILE, ENOBUFS, ENOMEM): back off before accepting again.
    Exhausted(io::Error),
    /// Any other error.
    Failed(io::Error),
}

/// Takes one request off `listener` without blocking.
pub(crate) fn get_request(
    listener: &Listener,
    max_packet_size: usize,
) -> Result<Incoming, NoRequest> {
    if listener.transport.is_stream() {
        stream::accept(&listener.socket)
    } else {
        dgram::receive(&listener.socket, max_packet_size)
    }
}

/// Sorts an OS error from accept/recv into [`NoRequest`].
fn classify(e: io::Error) -> NoRequest {
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EINTR) | Some(libc::ECONNABORTED) => NoRequest::Spurious,
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM) => {
            NoRequest::Exhausted(e)
        }
        // Errors the accepted connection already had (Linux reports them on accept).
        Some(libc::EPROTO)
        | Some(libc::ENETDOWN)
        | Some(libc::ENOPROTOOPT)
        | Some(libc::EHOSTDOWN)
        | Some(libc::ENONET)
        | Some(libc::EHOSTUNREACH)
        | Some(libc::EOPNOTSUPP)
        | Some(libc::ENETUNREACH)
        | Some(libc::ECONNRESET) => NoRequest::Spurious,
        _ => NoRequest::Failed(e),
    }
}
