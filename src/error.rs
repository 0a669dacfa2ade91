//! The library's one error type. Every variant names the thing that failed,
//! the operation, and (where there is one) the OS error.

use std::io;

/// Errors from building, running or closing a server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Text the user typed (an address, a transport name) did not parse.
    #[error("{0}")]
    Parse(String),

    /// A socket call failed on an address: `bind 127.0.0.1:80: Permission denied (os error 13)`.
    #[error("{op} {addr}: {source}")]
    Socket {
        /// The operation: `bind`, `listen`, `socket`, `chmod`, ...
        op: &'static str,
        /// The address or path it was applied to.
        addr: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// A Unix socket path is taken by something that is not a socket; it is left alone.
    #[error(
        "unix socket path {path}: exists and is not a socket ({kind}); refusing to replace it"
    )]
    PathInUse {
        /// The path.
        path: String,
        /// What is there: "regular file", "directory", ...
        kind: &'static str,
    },

    /// The configuration cannot work, e.g. a fork policy in a multi-threaded process.
    #[error("{0}")]
    Config(String),

    /// Another OS call failed: `fork: Resource temporarily unavailable (os error 11)`.
    #[error("{op}: {source}")]
    Os {
        /// The call that failed.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Wraps an OS error from a socket call on `addr`.
    pub fn socket(op: &'static str, addr: impl std::fmt::Display, source: io::Error) -> Error {
        Error::Socket {
            op,
            addr: addr.to_string(),
            source,
        }
    }

    /// Wraps an OS error from `op`.
    pub fn os(op: &'static str, source: impl Into<io::Error>) -> Error {
        Error::Os {
            op,
            source: source.into(),
        }
    }
}

/// Shorthand for results carrying [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a request failed, as passed to [`Hooks::handle_error`](crate::Hooks::handle_error).
#[derive(Debug)]
pub enum RequestError {
    /// `setup`, `handle`, `finish` or the datagram reply returned an error.
    Io(io::Error),
    /// The handler panicked; the message is the panic payload.
    Panic(String),
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::Io(e) => write!(f, "{e}"),
            RequestError::Panic(msg) => write!(f, "handler panicked: {msg}"),
        }
    }
}
