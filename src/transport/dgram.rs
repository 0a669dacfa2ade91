//! `recvfrom` for UDP and Unix datagram sockets, with truncation detected
//! through MSG_TRUNC (Linux then returns the datagram's real length).

use std::sync::Arc;

use socket2::Socket;

use super::{classify, Incoming, NoRequest};
use crate::addr::Address;
use crate::socket::sockaddr_to_address;

/// Receives one datagram from a non-blocking socket. A datagram longer than
/// `max_packet_size` is consumed and reported as [`NoRequest::Truncated`],
/// never handed to a handler cut short.
pub(crate) fn receive(socket: &Arc<Socket>, max_packet_size: usize) -> Result<Incoming, NoRequest> {
    let mut buf = vec![0u8; max_packet_size];
    let (len, sa) = crate::sys::recv_from_trunc(socket, &mut buf).map_err(classify)?;
    let peer = sockaddr_to_address(&sa).unwrap_or(Address::Unnamed);
    if len > max_packet_size {
        return Err(NoRequest::Truncated { peer, len });
    }
    buf.truncate(len);
    let packet = buf;
    Ok(Incoming::Datagram {
        packet,
        peer,
        reply_to: sa,
        socket: Arc::clone(socket),
    })
}
