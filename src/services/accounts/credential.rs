//! Password credentials: a SCRAM-style record over an argon2id hash.
//!
//! ```text
//! SaltedPassword = argon2id(password, salt, m, t, p)      (32 bytes, slow)
//! ClientKey      = HMAC-SHA256(SaltedPassword, "Client Key")
//! StoredKey      = SHA256(ClientKey)
//! ServerKey      = HMAC-SHA256(SaltedPassword, "Server Key")
//! ```
//!
//! An account stores the salt, the argon2 parameters, StoredKey and
//! ServerKey, never the password nor anything that logs in without it: a
//! stolen accounts file still costs one argon2id per guessed password. The
//! chat service checks a typed password by recomputing StoredKey; the files
//! service runs a challenge-response over the same record, so the password
//! never crosses the wire (see `files::auth`).

use std::fmt;
use std::io;
use std::str::FromStr;

use argon2::{Algorithm, Argon2, Params, Version};
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Salt length for new credentials.
pub const SALT_LEN: usize = 16;

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory, in KiB.
    pub m_kib: u32,
    /// Passes over memory.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl KdfParams {
    /// OWASP's minimum recommendation for argon2id: 19 MiB, 2 passes, 1 lane.
    pub const DEFAULT: KdfParams = KdfParams {
        m_kib: 19_456,
        t: 2,
        p: 1,
    };

    /// The most a client agrees to spend for a server's challenge (1 GiB,
    /// 16 passes, 16 lanes), so a hostile server cannot exhaust it.
    pub const CLIENT_MAX: KdfParams = KdfParams {
        m_kib: 1 << 20,
        t: 16,
        p: 16,
    };

    fn argon2(self) -> Result<Argon2<'static>, String> {
        let params = Params::new(self.m_kib, self.t, self.p, Some(32))
            .map_err(|e| format!("argon2 parameters {self}: {e}"))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    /// Checks that argon2 accepts these parameters and that they stay
    /// within `max`.
    pub fn check(self, max: KdfParams) -> Result<(), String> {
        if self.m_kib > max.m_kib || self.t > max.t || self.p > max.p {
            return Err(format!("argon2 parameters {self} exceed {max}"));
        }
        self.argon2().map(|_| ())
    }
}

impl fmt::Display for KdfParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m={},t={},p={}", self.m_kib, self.t, self.p)
    }
}

impl FromStr for KdfParams {
    type Err = String;

    /// Parses `m=KIB,t=N,p=N` (any order; missing ones keep the default).
    fn from_str(s: &str) -> Result<Self, String> {
        let mut k = KdfParams::DEFAULT;
        for part in s.split(',') {
            let (key, val) = part
                .split_once('=')
                .ok_or_else(|| format!("argon2 parameters {s:?}: expected m=KIB,t=N,p=N"))?;
            let val: u32 = val
                .parse()
                .map_err(|_| format!("argon2 parameters {s:?}: {key}={val:?} is not a number"))?;
            match key {
                "m" => k.m_kib = val,
                "t" => k.t = val,
                "p" => k.p = val,
                _ => return Err(format!("argon2 parameters {s:?}: unknown key {key:?}")),
            }
        }
        k.check(KdfParams::CLIENT_MAX)?;
        Ok(k)
    }
}

/// argon2id(password, salt) with `params`: the slow part.
pub fn salted_password(
    password: &[u8],
    salt: &[u8],
    params: KdfParams,
) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    params
        .argon2()?
        .hash_password_into(password, salt, &mut out)
        .map_err(|e| format!("argon2id: {e}"))?;
    Ok(out)
}

/// HMAC-SHA256.
pub fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// SHA-256.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// ClientKey from SaltedPassword.
pub fn client_key(salted: &[u8; 32]) -> [u8; 32] {
    hmac(salted, b"Client Key")
}

/// `N` bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| io::Error::other(format!("getrandom: {e}")))?;
    Ok(b)
}

/// Constant-time equality of two byte strings.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// What an account stores about its password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// argon2id cost used for this account.
    pub params: KdfParams,
    /// Random per-account salt.
    pub salt: Vec<u8>,
    /// SHA256(ClientKey).
    pub stored_key: [u8; 32],
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: [u8; 32],
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({})", self.params)
    }
}

const TAG: &str = "$scram-argon2id$v=19$";

impl Credential {
    /// A credential for `password` with a fresh random salt.
    pub fn create(password: &[u8], params: KdfParams) -> io::Result<Credential> {
        let salt = random_bytes::<SALT_LEN>()?.to_vec();
        let salted = salted_password(password, &salt, params).map_err(io::Error::other)?;
        Ok(Credential::from_salted(&salted, salt, params))
    }

    /// The record for an already derived SaltedPassword.
    pub fn from_salted(salted: &[u8; 32], salt: Vec<u8>, params: KdfParams) -> Credential {
        Credential {
            params,
            salt,
            stored_key: sha256(&client_key(salted)),
            server_key: hmac(salted, b"Server Key"),
        }
    }

    /// Whether `password` is this credential's (slow: one argon2id).
    pub fn check_password(&self, password: &[u8]) -> bool {
        match salted_password(password, &self.salt, self.params) {
            Ok(salted) => ct_eq(&sha256(&client_key(&salted)), &self.stored_key),
            Err(_) => false,
        }
    }

    /// `$scram-argon2id$v=19$m=..,t=..,p=..$SALT$STOREDKEY$SERVERKEY` (base64).
    pub fn encode(&self) -> String {
        format!(
            "{TAG}{}${}${}${}",
            self.params,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }

    /// Parses what [`Credential::encode`] wrote.
    pub fn decode(s: &str) -> Result<Credential, String> {
        let bad = || "credential is not $scram-argon2id$v=19$PARAMS$SALT$STORED$SERVER".to_string();
        let rest = s.strip_prefix(TAG).ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split('$').collect();
        let [params, salt, stored, server] = parts[..] else {
            return Err(bad());
        };
        let key = |v: &str| -> Result<[u8; 32], String> {
            B64.decode(v)
                .ok()
                .and_then(|k| <[u8; 32]>::try_from(k).ok())
                .ok_or_else(bad)
        };
        let salt = B64.decode(salt).map_err(|_| bad())?;
        if salt.len() < 8 {
            return Err("credential salt is shorter than 8 bytes".into());
        }
        Ok(Credential {
            params: params.parse()?,
            salt,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };

    #[test]
    fn a_credential_checks_its_password_only() {
        let c = Credential::create(b"correct horse", FAST).unwrap();
        assert!(c.check_password(b"correct horse"));
        assert!(!c.check_password(b"correct horsf"));
        let d = Credential::create(b"correct horse", FAST).unwrap();
        assert_ne!(c.salt, d.salt, "salts are random");
        assert_ne!(c.stored_key, d.stored_key);
    }

    #[test]
    fn credentials_round_trip_through_text_without_the_password() {
        let c = Credential::create(b"pw-123456", FAST).unwrap();
        let text = c.encode();
        assert!(!text.contains("pw-123456"));
        assert!(
            text.starts_with("$scram-argon2id$v=19$m=64,t=1,p=1$"),
            "{text}"
        );
        assert_eq!(Credential::decode(&text).unwrap(), c);
        assert!(Credential::decode("$argon2id$v=19$m=1$x$y").is_err());
    }

    #[test]
    fn params_parse_and_are_bounded() {
        assert_eq!("m=64,t=1,p=1".parse::<KdfParams>().unwrap(), FAST);
        assert_eq!("t=3".parse::<KdfParams>().unwrap().t, 3);
        assert!(
            "m=2,t=1,p=1".parse::<KdfParams>().is_err(),
            "argon2 needs m >= 8p"
        );
        assert!("m=99999999".parse::<KdfParams>().is_err());
        assert!("q=1".parse::<KdfParams>().is_err());
    }

    #[test]
    fn argon2id_matches_the_reference_implementation() {
        // argon2-cffi (the C reference implementation):
        // hash_secret_raw(b"password", b"somesalt", time_cost=1,
        //     memory_cost=64, parallelism=1, hash_len=32, type=Type.ID)
        let want = "729c7a54441bc13559bdca71348c4e554599e719c08a952601ed5c83618c1bbd";
        let got = salted_password(b"password", b"somesalt", FAST).unwrap();
        let hex: String = got.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, want);
    }
}
