//! The accounts file: names, credentials and friend lists, as JSON,
//! replaced atomically on every change.
//!
//! ```json
//! {"version":1,"users":{"alice":{"credential":"$scram-argon2id$...","friends":["bob"]}}}
//! ```
//!
//! A change is written to a temp file in the same directory, flushed to
//! disk, renamed over the old file, and the directory is synced: a crash at
//! any point leaves either the old file or the new one, never a mix. The
//! in-memory copy changes only once the new file is in place.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::credential::{random_bytes, Credential};

/// One account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// [`Credential::encode`]d password record.
    pub credential: String,
    /// Names of this account's friends.
    #[serde(default)]
    pub friends: BTreeSet<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AccountsFile {
    version: u32,
    users: BTreeMap<String, Account>,
}

/// The accounts, as last written to `path`.
#[derive(Debug)]
pub struct Accounts {
    path: PathBuf,
    users: BTreeMap<String, Account>,
}

impl Accounts {
    /// Reads `path`; a missing file is an empty set of accounts.
    pub fn load(path: &Path) -> io::Result<Accounts> {
        let users = match std::fs::read(path) {
            Ok(bytes) => parse(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("accounts file {}: {e}", path.display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(context("read accounts file", path, e)),
        };
        Ok(Accounts {
            path: path.to_path_buf(),
            users,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The account called `name`.
    pub fn get(&self, name: &str) -> Option<&Account> {
        self.users.get(name)
    }

    /// The decoded credential of `name`, if the account exists and its
    /// record parses.
    pub fn credential(&self, name: &str) -> Option<Credential> {
        Credential::decode(&self.get(name)?.credential).ok()
    }

    /// Number of accounts.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when there are no accounts.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Applies `change` to a copy of the accounts, writes the copy
    /// atomically, and only then adopts it. `change` may refuse with `Err`,
    /// which leaves everything as it was.
    pub fn update<R>(
        &mut self,
        change: impl FnOnce(&mut BTreeMap<String, Account>) -> Result<R, String>,
    ) -> Result<R, UpdateError> {
        let mut users = self.users.clone();
        let r = change(&mut users).map_err(UpdateError::Refused)?;
        let file = AccountsFile { version: 1, users };
        let mut json = serde_json::to_vec_pretty(&file).expect("accounts serialise");
        json.push(b'\n');
        write_atomic(&self.path, &json).map_err(UpdateError::Io)?;
        self.users = file.users;
        Ok(r)
    }
}

/// Why [`Accounts::update`] changed nothing.
#[derive(Debug)]
pub enum UpdateError {
    /// The change itself refused, with this reason for the user.
    Refused(String),
    /// The file could not be written (the message names it).
    Io(io::Error),
}

fn parse(bytes: &[u8]) -> Result<BTreeMap<String, Account>, String> {
    let file: AccountsFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if file.version != 1 {
        return Err(format!("unsupported version {}", file.version));
    }
    for (name, acct) in &file.users {
        super::text::check_name(name).map_err(|e| format!("account {name:?}: {e}"))?;
        Credential::decode(&acct.credential).map_err(|e| format!("account {name:?}: {e}"))?;
    }
    Ok(file.users)
}

fn context(op: &str, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{op} {}: {e}", path.display()))
}

/// Replaces `path` with `data` atomically: temp file (mode 0600) in the
/// same directory, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| context("write", path, io::ErrorKind::InvalidInput.into()))?;
    let tag: String = random_bytes::<6>()?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let tmp = dir.join(format!(".{}.tmp-{tag}", name.to_string_lossy()));
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| context("create", &tmp, e))?;
        f.write_all(data).map_err(|e| context("write", &tmp, e))?;
        f.sync_all().map_err(|e| context("fsync", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| context("rename to", path, e))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return written;
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| context("fsync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::super::credential::KdfParams;
    use super::*;

    fn cred(pw: &str) -> String {
        let fast = KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
        };
        Credential::create(pw.as_bytes(), fast).unwrap().encode()
    }

    fn add(users: &mut BTreeMap<String, Account>, name: &str) {
        users.insert(
            name.into(),
            Account {
                credential: cred("password1"),
                friends: BTreeSet::new(),
            },
        );
    }

    #[test]
    fn changes_persist_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accounts.json");
        let mut a = Accounts::load(&path).unwrap();
        assert!(a.is_empty());
        a.update(|u| {
            add(u, "alice");
            add(u, "bob");
            u.get_mut("alice").unwrap().friends.insert("bob".into());
            Ok(())
        })
        .unwrap();
        let b = Accounts::load(&path).unwrap();
        assert_eq!(b.len(), 2);
        assert!(b.get("alice").unwrap().friends.contains("bob"));
        assert!(b.credential("bob").unwrap().check_password(b"password1"));
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp file is left behind");
    }

    #[test]
    fn a_refused_or_failed_change_leaves_memory_and_disk_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accounts.json");
        let mut a = Accounts::load(&path).unwrap();
        a.update(|u| {
            add(u, "alice");
            Ok(())
        })
        .unwrap();
        let before = std::fs::read(&path).unwrap();
        let r: Result<(), _> = a.update(|u| {
            add(u, "mallory");
            Err("no".into())
        });
        assert!(matches!(r, Err(UpdateError::Refused(_))));
        // A directory that does not exist: the temp file cannot be created.
        let gone = dir.path().join("missing-dir").join("accounts.json");
        let mut b = Accounts::load(&gone).unwrap();
        let err = b
            .update(|u| {
                add(u, "carol");
                Ok(())
            })
            .unwrap_err();
        match err {
            UpdateError::Io(e) => assert!(e.to_string().contains("missing-dir"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(b.is_empty());
        assert!(a.get("mallory").is_none());
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn a_corrupt_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accounts.json");
        std::fs::write(
            &path,
            b"{\"version\":1,\"users\":{\"x\":{\"credential\":\"plain\"}}}",
        )
        .unwrap();
        let e = Accounts::load(&path).unwrap_err();
        assert!(e.to_string().contains("accounts.json"), "{e}");
        std::fs::write(&path, b"{trunc").unwrap();
        assert_eq!(
            Accounts::load(&path).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
