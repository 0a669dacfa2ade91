//! `accept` for TCP and Unix stream listeners.

use socket2::Socket;

use super::{classify, Incoming, NoRequest};
use crate::addr::Address;
use crate::socket::sockaddr_to_address;

/// Accepts one connection from a non-blocking listener. The connection is
/// blocking (on Linux, accept does not pass O_NONBLOCK on) and
/// close-on-exec (accept4 with SOCK_CLOEXEC).
pub(crate) fn accept(listener: &Socket) -> Result<Incoming, NoRequest> {
    let (conn, sa) = listener.accept().map_err(classify)?;
    let peer = sockaddr_to_address(&sa).unwrap_or(Address::Unnamed);
    Ok(Incoming::Stream { conn, peer })
}
