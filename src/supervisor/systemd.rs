//! systemd integration: socket activation (`LISTEN_FDS` / `LISTEN_PID`) and
//! readiness notification (`NOTIFY_SOCKET`, `sd_notify(3)`).

use std::os::unix::net::UnixDatagram;

use crate::addr::Transport;
use crate::error::{Error, Result};
use crate::socket::Listener;

/// The first descriptor systemd passes.
pub const LISTEN_FDS_START: i32 = 3;

/// Takes the sockets systemd passed, if `LISTEN_PID` names this process,
/// and clears the variables so workers and children do not see them. Only
/// the first call in a process can take them.
pub fn listen_fds(transport: Transport) -> Result<Vec<Listener>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(Vec::new());
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(Vec::new());
    }
    let n: i32 = fds
        .trim()
        .parse()
        .map_err(|_| Error::Config(format!("LISTEN_FDS={fds:?} is not a number")))?;
    crate::sys::take_listen_fds(LISTEN_FDS_START, n)?
        .into_iter()
        .zip(LISTEN_FDS_START..)
        .map(|(fd, n)| {
            Listener::from_fd(fd, transport)
                .map_err(|e| Error::Config(format!("socket-activation fd {n}: {e}")))
        })
        .collect()
}

/// Sends `state` (e.g. `READY=1`) to the service manager, if there is one.
/// Returns whether a message was sent.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return false;
    };
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    let sent = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name)
                .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
        }
        None => sock.send_to(state.as_bytes(), &path),
    };
    sent.is_ok()
}
