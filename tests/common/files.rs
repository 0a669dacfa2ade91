//! A files server (`sockserv --service files`) in a temp dir, for the
//! files tests, with the accounts alice and bob. Passwords are `pw-USER-1`
//! and the hash cost is `m=64,t=1,p=1`, so that logging in stays fast.

use std::path::{Path, PathBuf};

use socketserver::services::accounts::KdfParams;
use socketserver::services::files::add_user;
use socketserver::services::files::client::{FilesClient, Stream};
use socketserver::Transport;

use super::{listen_for, Sockserv};

/// The hash cost of the test accounts.
pub const FAST: KdfParams = KdfParams {
    m_kib: 64,
    t: 1,
    p: 1,
};

/// A running files server, its accounts file and its root in `dir`.
pub struct FilesSite {
    pub dir: tempfile::TempDir,
    pub srv: Sockserv,
    pub transport: &'static str,
    _sock_dir: Option<tempfile::TempDir>,
}

impl FilesSite {
    /// The accounts, then the root (`dir/root`) prepared by `before`, then
    /// the server over `transport` under `policy`, with `extra` flags.
    pub fn start_with(
        transport: &'static str,
        policy: &str,
        extra: &[&str],
        before: impl FnOnce(&Path),
    ) -> FilesSite {
        let dir = tempfile::tempdir().unwrap();
        let accounts = dir.path().join("accounts.json");
        for u in ["alice", "bob"] {
            add_user(&accounts, u, &password(u), FAST).unwrap();
        }
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        before(&root);
        let (listen, sock_dir) = listen_for(transport);
        let mut args = vec![
            "--service",
            "files",
            "--transport",
            transport,
            "--listen",
            &listen,
            "--policy",
            policy,
            "--accounts",
            accounts.to_str().unwrap(),
            "--files-root",
            root.to_str().unwrap(),
            "--hash-cost",
            "m=64,t=1,p=1",
        ];
        args.extend_from_slice(extra);
        let srv = Sockserv::start(&args);
        FilesSite {
            dir,
            srv,
            transport,
            _sock_dir: sock_dir,
        }
    }

    /// `start_with` an empty root.
    pub fn start(transport: &'static str, policy: &str, extra: &[&str]) -> FilesSite {
        FilesSite::start_with(transport, policy, extra, |_| {})
    }

    /// A client past the greeting.
    pub fn connect(&self) -> FilesClient<Stream> {
        let t = if self.transport == "tcp" {
            Transport::Tcp
        } else {
            Transport::UnixStream
        };
        FilesClient::handshake(Stream::connect(t, &self.srv.addr).unwrap()).unwrap()
    }

    /// A client logged in as `user`.
    pub fn login(&self, user: &str) -> FilesClient<Stream> {
        let mut c = self.connect();
        c.login(user, &password(user)).unwrap();
        c
    }

    /// `user`'s directory under the root.
    pub fn home(&self, user: &str) -> PathBuf {
        self.dir.path().join("root").join(user)
    }
}

impl Drop for FilesSite {
    fn drop(&mut self) {
        self.srv.stop();
    }
}

/// A test account's password.
pub fn password(user: &str) -> String {
    format!("pw-{user}-1")
}
