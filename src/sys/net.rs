//! Socket calls the safe wrappers do not cover: receiving into
//! uninitialised memory, MSG_TRUNC, TCP_NODELAY through libc (a forked
//! child's path), waking a blocked reader, and taking ownership of
//! descriptors another process handed over.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::addr::Transport;
use crate::error::{Error, Result};
use crate::socket::Listener;

/// `recvfrom(2)` with MSG_TRUNC: returns the datagram's real length, which
/// exceeds `buf.len()` when the datagram did not fit (the rest is dropped).
pub(crate) fn recv_from_trunc(
    socket: &socket2::Socket,
    buf: &mut [u8],
) -> io::Result<(usize, socket2::SockAddr)> {
    // SAFETY: MaybeUninit<u8> has the layout of u8, and every byte of `buf`
    // is already initialised; recv only writes initialised bytes into it.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
    socket.recv_from_with_flags(uninit, libc::MSG_TRUNC)
}

/// `recv(2)` into uninitialised memory; returns the bytes received (0 at
/// end of stream), the only ones written. Calls libc directly (not
/// socket2): a forked child runs this, and libc's socket calls share their
/// code pages, where socket2's and std's wrappers would each cost the
/// child a page fault of program text (see CHILD_TEXT).
#[link_section = child_text!()]
pub(crate) fn recv_uninit<'b>(
    socket: &socket2::Socket,
    buf: &'b mut [MaybeUninit<u8>],
) -> io::Result<&'b mut [u8]> {
    use std::os::fd::AsRawFd;
    let n = loop {
        match syscall!(recv(
            socket.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            0
        )) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other? as usize,
        }
    };
    // SAFETY: recv initialised the first n bytes; MaybeUninit<u8> has u8's layout.
    Ok(unsafe { &mut *(&mut buf[..n] as *mut [MaybeUninit<u8>] as *mut [u8]) })
}

/// Receives into `buf`'s spare capacity (reserve first) and grows its
/// length by what arrived; returns that count, 0 at end of stream. Only
/// the bytes received are written: no page of the buffer is touched
/// beforehand.
pub(crate) fn recv_into_spare(socket: &socket2::Socket, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.capacity() == buf.len() {
        buf.reserve(4096);
    }
    let n = socket.recv(buf.spare_capacity_mut())?;
    // SAFETY: recv initialised the first n bytes of the spare capacity, and
    // n <= spare capacity, so len + n <= capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Copies as much of `src` as fits into uninitialised `buf`; returns the
/// copied bytes.
pub(crate) fn copy_uninit<'b>(buf: &'b mut [MaybeUninit<u8>], src: &[u8]) -> &'b mut [u8] {
    let n = buf.len().min(src.len());
    for (dst, &b) in buf.iter_mut().zip(&src[..n]) {
        dst.write(b);
    }
    // SAFETY: the loop initialised the first n bytes.
    unsafe { &mut *(&mut buf[..n] as *mut [MaybeUninit<u8>] as *mut [u8]) }
}

/// Sends all of `buf` on `fd` (MSG_NOSIGNAL: a vanished peer is EPIPE,
/// never SIGPIPE), retrying interrupted and partial sends. libc directly,
/// for a forked child's sake (see [`recv_uninit`]).
#[link_section = child_text!()]
pub(crate) fn send_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match syscall!(send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL)) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n as usize..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Shuts down both directions of `fd` (Python's `shutdown_request`);
/// errors (the peer left) are ignored. libc directly (see [`recv_uninit`]).
#[link_section = child_text!()]
pub(crate) fn shutdown_both(fd: RawFd) {
    let _ = syscall!(shutdown(fd, libc::SHUT_RDWR));
}

/// Sets TCP_NODELAY on `fd` (libc directly: a forked child calls this;
/// see CHILD_TEXT).
#[link_section = child_text!()]
pub(crate) fn set_tcp_nodelay(fd: RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    syscall!(setsockopt(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_NODELAY,
        (&one as *const libc::c_int).cast(),
        std::mem::size_of::<libc::c_int>() as libc::socklen_t
    ))
    .map(|_| ())
}

/// Shuts down the read side of `fd`; errors (already closed, not connected)
/// are ignored because the only goal is to wake a blocked reader.
pub(crate) fn shutdown_read(fd: RawFd) {
    let _ = syscall!(shutdown(fd, libc::SHUT_RD));
}

/// Set once [`take_listen_fds`] handed out the inherited descriptors.
static LISTEN_FDS_TAKEN: AtomicBool = AtomicBool::new(false);

/// Takes ownership of the `count` descriptors from `first` that the
/// service manager passed by the socket-activation protocol (`LISTEN_FDS`,
/// checked against `LISTEN_PID` by the caller). Only the first call gets
/// them: a second gets an error, so no descriptor has two owners.
pub(crate) fn take_listen_fds(first: RawFd, count: RawFd) -> Result<Vec<OwnedFd>> {
    if LISTEN_FDS_TAKEN.swap(true, Ordering::SeqCst) {
        return Err(Error::Config(
            "the socket-activation descriptors were already taken".into(),
        ));
    }
    let mut fds = Vec::new();
    for fd in first..first.saturating_add(count) {
        syscall!(fcntl(fd, libc::F_GETFD)).map_err(|e| Error::Os {
            op: "socket-activation descriptor",
            source: io::Error::new(e.kind(), format!("fd {fd}: {e}")),
        })?;
        // SAFETY: fd is open (F_GETFD succeeded); by the protocol the manager
        // handed it to this process, and the once-flag above makes this the
        // only OwnedFd made for it.
        fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    Ok(fds)
}

impl Listener {
    /// Adopts an already bound (and, for streams, listening) socket by its
    /// descriptor number, as std's [`FromRawFd::from_raw_fd`] does; checks
    /// that its type suits `transport`. Prefer [`Listener::from_fd`] when
    /// you hold an `OwnedFd`.
    ///
    /// # Safety
    ///
    /// As for `FromRawFd::from_raw_fd`: `fd` must be an open descriptor
    /// that the caller owns and hands over; nothing else may use or close
    /// it afterwards (the listener closes it when dropped).
    pub unsafe fn from_raw_fd(fd: RawFd, transport: Transport) -> Result<Listener> {
        // SAFETY: the caller's contract above.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        Listener::from_fd(owned, transport)
    }
}

/// Set once [`take_upgrade_fd`] handed out the upgrade pipe.
static UPGRADE_FD_TAKEN: AtomicBool = AtomicBool::new(false);

/// Takes ownership of the pipe an upgrading master passed as `fd` (named
/// by `SOCKSERV_UPGRADE_FD`). Only the first call gets it.
pub(crate) fn take_upgrade_fd(fd: RawFd) -> Result<OwnedFd> {
    if UPGRADE_FD_TAKEN.swap(true, Ordering::SeqCst) {
        return Err(Error::Config("the upgrade pipe was already taken".into()));
    }
    syscall!(fcntl(fd, libc::F_GETFD)).map_err(|e| Error::Os {
        op: "upgrade pipe",
        source: io::Error::new(e.kind(), format!("fd {fd}: {e}")),
    })?;
    // SAFETY: fd is open (F_GETFD succeeded); the upgrading master passed it
    // to this process for this use, and the once-flag makes this the only
    // OwnedFd made for it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets `TCP_DEFER_ACCEPT` on a TCP listening socket: `accept(2)` hands
/// out a connection only once its client has sent data, or after about
/// `secs` seconds (the kernel counts SYN-ACK retransmissions).
pub(crate) fn set_tcp_defer_accept(fd: RawFd, secs: u32) -> io::Result<()> {
    let v = libc::c_int::try_from(secs).unwrap_or(libc::c_int::MAX);
    syscall!(setsockopt(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_DEFER_ACCEPT,
        (&v as *const libc::c_int).cast(),
        std::mem::size_of::<libc::c_int>() as libc::socklen_t
    ))?;
    Ok(())
}

/// A TCP listening socket's accept queue: (connections waiting to be
/// accepted, the backlog limit), from `TCP_INFO` (Linux reports them as
/// `tcpi_unacked` and `tcpi_sacked` for a socket in LISTEN state).
pub(crate) fn tcp_listen_queue(fd: RawFd) -> io::Result<(u32, u32)> {
    let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    syscall!(getsockopt(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_INFO,
        info.as_mut_ptr().cast(),
        &mut len
    ))?;
    // SAFETY: zeroed is a valid tcp_info (plain integers), and the kernel
    // wrote at most `len` bytes of it.
    let info = unsafe { info.assume_init() };
    Ok((info.tcpi_unacked, info.tcpi_sacked))
}
