//! Creating listening sockets: socket, options, stale-path handling, bind,
//! listen; or adopting an inherited descriptor.

use std::fs;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use socket2::{Domain, SockAddr, Socket, Type};

use crate::addr::{Address, Transport};
use crate::error::{Error, Result};

/// Options applied when a server binds its own socket.
#[derive(Debug, Clone)]
pub struct BindOptions {
    /// SO_REUSEADDR; on by default so a restart never fails on TIME_WAIT.
    pub allow_reuse_address: bool,
    /// SO_REUSEPORT, so several processes can each bind the same port.
    pub allow_reuse_port: bool,
    /// listen(2) backlog; default SOMAXCONN (Python uses 5).
    pub request_queue_size: i32,
    /// File mode for a Unix socket path (e.g. `0o660`), applied after bind.
    pub unix_mode: Option<u32>,
}

impl Default for BindOptions {
    fn default() -> Self {
        BindOptions {
            allow_reuse_address: true,
            allow_reuse_port: false,
            request_queue_size: libc::SOMAXCONN,
            unix_mode: None,
        }
    }
}

/// A bound (and, for streams, listening) socket, with what it is bound to.
#[derive(Debug)]
pub struct Listener {
    /// The socket, non-blocking and close-on-exec; shared with datagram
    /// handlers, which reply on it.
    pub(crate) socket: Arc<Socket>,
    /// The transport it serves.
    pub(crate) transport: Transport,
    /// The address it is bound to, with port 0 resolved.
    pub(crate) address: Address,
    /// A socket file this listener created and removes on close.
    owned_path: Option<PathBuf>,
}

impl Listener {
    /// Creates, configures, binds and (for streams) listens on `addr`.
    pub fn bind(transport: Transport, addr: &Address, opts: &BindOptions) -> Result<Listener> {
        let (domain, sockaddr) = sockaddr_for(transport, addr)?;
        let ty = if transport.is_stream() {
            Type::STREAM
        } else {
            Type::DGRAM
        };
        let socket = Socket::new(domain, ty, None).map_err(|e| Error::socket("socket", addr, e))?;
        set_options(&socket, transport, addr, opts)?;
        if let Address::Unix(path) = addr {
            remove_stale_socket(path)?;
        }
        socket
            .bind(&sockaddr)
            .map_err(|e| Error::socket("bind", addr, e))?;
        let owned_path = addr.as_path().map(Path::to_path_buf);
        let mut listener = Listener::finish(socket, transport, addr, owned_path)?;
        if transport.is_stream() {
            listener
                .socket
                .listen(opts.request_queue_size)
                .map_err(|e| Error::socket("listen", addr, e))?;
        }
        if let (Some(path), Some(mode)) = (&listener.owned_path, opts.unix_mode) {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(|e| Error::socket("chmod", path.display(), e))?;
        }
        listener.address = local_address(&listener.socket, addr)?;
        Ok(listener)
    }

    /// Adopts an inherited, already bound (and listening) descriptor, as
    /// passed by a supervisor or by systemd socket activation. The listener
    /// does not own a socket path: the process that bound it removes it.
    pub fn from_fd(fd: OwnedFd, transport: Transport) -> Result<Listener> {
        let socket = Socket::from(fd);
        let ty = socket
            .r#type()
            .map_err(|e| Error::os("getsockopt SO_TYPE on inherited fd", e))?;
        let want = if transport.is_stream() {
            Type::STREAM
        } else {
            Type::DGRAM
        };
        if ty != want {
            return Err(Error::Config(format!(
                "inherited fd is {ty:?}, but transport {transport} needs {want:?}"
            )));
        }
        let address = local_address(&socket, &Address::Unnamed)?;
        Listener::finish(socket, transport, &address, None)
    }

    fn finish(
        socket: Socket,
        transport: Transport,
        addr: &Address,
        owned_path: Option<PathBuf>,
    ) -> Result<Listener> {
        socket
            .set_nonblocking(true)
            .map_err(|e| Error::socket("set O_NONBLOCK", addr, e))?;
        socket
            .set_cloexec(true)
            .map_err(|e| Error::socket("set FD_CLOEXEC", addr, e))?;
        Ok(Listener {
            socket: Arc::new(socket),
            transport,
            address: addr.clone(),
            owned_path,
        })
    }

    /// The transport it serves.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The address it is bound to, with port 0 resolved to the real port.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The socket itself (non-blocking, close-on-exec).
    pub fn socket(&self) -> &Socket {
        &self.socket
    }

    /// Stops this listener from removing its socket file on drop (for a
    /// supervisor's workers, which share the master's socket).
    pub fn disown_path(&mut self) {
        self.owned_path = None;
    }

    /// Makes this listener remove its socket file on drop, as if it had
    /// bound it (a master that inherited the socket in an upgrade).
    pub(crate) fn claim_path(&mut self) {
        self.owned_path = self.address.as_path().map(Path::to_path_buf);
    }

    /// Removes the socket file this listener created, if any.
    pub fn remove_path(&mut self) {
        if let Some(path) = self.owned_path.take() {
            let _ = fs::remove_file(path);
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.remove_path();
    }
}

/// Checks that `addr` could be bound, without serving: an IP address is
/// bound and released; a Unix path only gets the stale-socket checks (a
/// non-socket there, or a live server, is an error).
pub fn check_bindable(transport: Transport, addr: &Address, opts: &BindOptions) -> Result<()> {
    match addr {
        Address::Unix(path) => {
            if fs::symlink_metadata(path).is_ok() {
                check_stale_socket(path)?;
            }
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let meta = fs::metadata(dir).map_err(|e| Error::socket("stat", dir.display(), e))?;
            if !meta.is_dir() {
                return Err(Error::Config(format!(
                    "{} is not a directory",
                    dir.display()
                )));
            }
            Ok(())
        }
        Address::Abstract(_) | Address::Inet(_) => Listener::bind(transport, addr, opts).map(drop),
        Address::Unnamed => Err(Error::Config("no address to check".into())),
    }
}

fn sockaddr_for(transport: Transport, addr: &Address) -> Result<(Domain, SockAddr)> {
    match (transport.is_unix(), addr) {
        (false, Address::Inet(sa)) => Ok((Domain::for_address(*sa), SockAddr::from(*sa))),
        (true, Address::Unix(path)) => Ok((Domain::UNIX, unix_sockaddr(path.as_os_str(), addr)?)),
        (true, Address::Abstract(name)) => {
            let mut bytes = vec![0u8];
            bytes.extend_from_slice(name);
            let os: std::ffi::OsString = std::os::unix::ffi::OsStringExt::from_vec(bytes);
            Ok((Domain::UNIX, unix_sockaddr(&os, addr)?))
        }
        _ => Err(Error::Config(format!(
            "address {addr} does not suit transport {transport}"
        ))),
    }
}

fn unix_sockaddr(path: &std::ffi::OsStr, addr: &Address) -> Result<SockAddr> {
    SockAddr::unix(path).map_err(|e| Error::socket("make unix address", addr, e))
}

fn set_options(socket: &Socket, t: Transport, addr: &Address, o: &BindOptions) -> Result<()> {
    if !t.is_unix() {
        if o.allow_reuse_address {
            socket
                .set_reuse_address(true)
                .map_err(|e| Error::socket("setsockopt SO_REUSEADDR", addr, e))?;
        }
        if o.allow_reuse_port {
            socket
                .set_reuse_port(true)
                .map_err(|e| Error::socket("setsockopt SO_REUSEPORT", addr, e))?;
        }
        if matches!(addr, Address::Inet(sa) if sa.is_ipv6()) {
            socket
                .set_only_v6(true)
                .map_err(|e| Error::socket("setsockopt IPV6_V6ONLY", addr, e))?;
        }
    }
    Ok(())
}

/// Removes a socket file left behind by a dead server. Anything that is not
/// a socket is left alone and reported; a socket some live server still
/// answers on is reported as in use.
fn remove_stale_socket(path: &Path) -> Result<()> {
    if check_stale_socket(path)? {
        fs::remove_file(path)
            .map_err(|e| Error::socket("remove stale socket", path.display(), e))?;
    }
    Ok(())
}

/// Ok(true) when `path` holds a dead server's socket, Ok(false) when it is
/// free; an error when it holds something else or a live server.
fn check_stale_socket(path: &Path) -> Result<bool> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::socket("stat", path.display(), e)),
    };
    let ft = meta.file_type();
    if !ft.is_socket() {
        let kind = if ft.is_dir() {
            "directory"
        } else if ft.is_file() {
            "regular file"
        } else if ft.is_symlink() {
            "symbolic link"
        } else {
            "special file"
        };
        return Err(Error::PathInUse {
            path: path.display().to_string(),
            kind,
        });
    }
    if socket_is_live(path) {
        return Err(Error::socket(
            "bind",
            path.display(),
            std::io::Error::from_raw_os_error(libc::EADDRINUSE),
        ));
    }
    Ok(true)
}

/// True when a stream or datagram server still listens at `path`.
fn socket_is_live(path: &Path) -> bool {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return true;
    }
    match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s.connect(path).is_ok(),
        Err(_) => false,
    }
}

fn local_address(socket: &Socket, fallback: &Address) -> Result<Address> {
    let sa = socket
        .local_addr()
        .map_err(|e| Error::socket("getsockname", fallback, e))?;
    Ok(sockaddr_to_address(&sa).unwrap_or_else(|| fallback.clone()))
}

/// Converts a kernel socket address into an [`Address`].
pub(crate) fn sockaddr_to_address(sa: &SockAddr) -> Option<Address> {
    if let Some(inet) = sa.as_socket() {
        return Some(Address::Inet(inet));
    }
    if let Some(p) = sa.as_pathname() {
        return Some(Address::Unix(p.to_path_buf()));
    }
    if let Some(name) = sa.as_abstract_namespace() {
        return Some(Address::Abstract(name.to_vec()));
    }
    if sa.is_unnamed() {
        return Some(Address::Unnamed);
    }
    None
}
