//! Challenge-response login: SCRAM (RFC 5802) over an argon2id-derived
//! SaltedPassword, so the password never crosses the wire and the server
//! never sees it.
//!
//! ```text
//! C: login NAME CNONCE
//! S: challenge NONCE SALT m=..,t=..,p=..     NONCE = CNONCE + server's nonce
//!    (client)  SaltedPassword = argon2id(password, SALT, params)
//!              ClientKey = HMAC(SaltedPassword, "Client Key"); StoredKey = H(ClientKey)
//!              AuthMessage = "n=NAME,r=CNONCE,r=NONCE,s=SALT,i=PARAMS"
//!              ClientProof = ClientKey XOR HMAC(StoredKey, AuthMessage)
//! C: proof CLIENTPROOF
//!    (server)  ClientKey' = ClientProof XOR HMAC(StoredKey, AuthMessage)
//!              accepts iff H(ClientKey') == StoredKey
//! S: ok SERVERSIGNATURE                      HMAC(ServerKey, AuthMessage)
//!    (client)  checks it: the server knew the account too
//! ```
//!
//! The server stores only StoredKey and ServerKey (see
//! [`credential`](crate::services::accounts::credential)): someone who steals
//! the accounts file cannot compute a ClientProof without the ClientKey, and
//! must run argon2id for every password guess. A replayed proof fails
//! because each challenge has a fresh server nonce. For an unknown name
//! the server sends a challenge with a salt derived from a per-server
//! secret, so the exchange does not reveal which names exist.
//!
//! Binary values are standard base64 without padding.

use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine as _;

use crate::services::accounts::credential::{
    client_key, ct_eq, hmac, random_bytes, salted_password, sha256, Credential, KdfParams,
};
use crate::services::accounts::text::neutralise;

/// Random bytes in a nonce (24 base64 characters).
pub const NONCE_BYTES: usize = 18;

/// A fresh random nonce.
pub fn new_nonce() -> std::io::Result<String> {
    Ok(B64.encode(random_bytes::<NONCE_BYTES>()?))
}

/// Whether `n` can be a client nonce: 16 to 64 base64 characters.
pub fn valid_nonce(n: &str) -> bool {
    (16..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// The server's challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Client nonce followed by the server's.
    pub nonce: String,
    /// The account's salt.
    pub salt: Vec<u8>,
    /// The account's argon2id parameters.
    pub params: KdfParams,
}

impl Challenge {
    /// `challenge NONCE SALT PARAMS`.
    pub fn to_message(&self) -> String {
        format!(
            "challenge {} {} {}",
            self.nonce,
            B64.encode(&self.salt),
            self.params
        )
    }

    /// Parses [`Challenge::to_message`]'s text; `cnonce` must begin the nonce.
    pub fn parse(msg: &str, cnonce: &str) -> Result<Challenge, String> {
        let words: Vec<&str> = msg.split(' ').collect();
        let ["challenge", nonce, salt, params] = words[..] else {
            return Err(format!("expected a challenge, got {:?}", clip(msg)));
        };
        if !nonce.starts_with(cnonce) || nonce.len() < cnonce.len() + 16 {
            return Err("the server's nonce does not extend ours".into());
        }
        let salt = B64
            .decode(salt)
            .map_err(|_| "challenge salt is not base64".to_string())?;
        Ok(Challenge {
            nonce: nonce.to_string(),
            salt,
            params: params.parse()?,
        })
    }

    /// The text both sides sign.
    pub fn auth_message(&self, name: &str, cnonce: &str) -> String {
        format!(
            "n={name},r={cnonce},r={},s={},i={}",
            self.nonce,
            B64.encode(&self.salt),
            self.params
        )
    }
}

/// The challenge for an unknown name: a salt that is stable for that name
/// (so asking twice shows nothing) but says nothing about other accounts.
pub fn decoy(secret: &[u8; 32], name: &str, params: KdfParams) -> (Vec<u8>, KdfParams) {
    let salt = hmac(secret, format!("decoy salt for {name}").as_bytes())[..16].to_vec();
    (salt, params)
}

fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

/// What the client computes from its password (the slow part).
pub struct ClientSecret {
    salted: [u8; 32],
}

impl ClientSecret {
    /// Runs argon2id for `challenge`; refuses parameters over
    /// [`KdfParams::CLIENT_MAX`].
    pub fn derive(password: &[u8], challenge: &Challenge) -> Result<ClientSecret, String> {
        challenge.params.check(KdfParams::CLIENT_MAX)?;
        Ok(ClientSecret {
            salted: salted_password(password, &challenge.salt, challenge.params)?,
        })
    }

    /// `proof CLIENTPROOF` for `auth_message`.
    pub fn proof_message(&self, auth_message: &str) -> String {
        let ck = client_key(&self.salted);
        let signature = hmac(&sha256(&ck), auth_message.as_bytes());
        format!("proof {}", B64.encode(xor(&ck, &signature)))
    }

    /// Checks the server's `ok SERVERSIGNATURE`.
    pub fn verify_server(&self, auth_message: &str, reply: &str) -> Result<(), String> {
        let sig = reply
            .strip_prefix("ok ")
            .and_then(|s| B64.decode(s).ok())
            .ok_or_else(|| format!("login refused: {}", clip(reply)))?;
        let server_key = hmac(&self.salted, b"Server Key");
        if ct_eq(&sig, &hmac(&server_key, auth_message.as_bytes())) {
            Ok(())
        } else {
            Err("the server could not prove it knows the account; not trusting it".into())
        }
    }
}

/// Checks `proof CLIENTPROOF` against the stored credential; on success
/// returns the `ok SERVERSIGNATURE` reply.
pub fn check_proof(cred: &Credential, auth_message: &str, msg: &str) -> Option<String> {
    let proof: [u8; 32] = msg
        .strip_prefix("proof ")
        .and_then(|p| B64.decode(p).ok())?
        .try_into()
        .ok()?;
    let signature = hmac(&cred.stored_key, auth_message.as_bytes());
    let ck = xor(&proof, &signature);
    if !ct_eq(&sha256(&ck), &cred.stored_key) {
        return None;
    }
    let sig = hmac(&cred.server_key, auth_message.as_bytes());
    Some(format!("ok {}", B64.encode(sig)))
}

/// At most 80 characters of `s`, for error messages.
pub fn clip(s: &str) -> String {
    let short: String = s.chars().take(80).collect();
    neutralise(&short).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };

    fn exchange(stored_pw: &[u8], typed_pw: &[u8]) -> (Option<String>, Result<(), String>) {
        let cred = Credential::create(stored_pw, FAST).unwrap();
        let cnonce = new_nonce().unwrap();
        let ch = Challenge {
            nonce: format!("{cnonce}{}", new_nonce().unwrap()),
            salt: cred.salt.clone(),
            params: cred.params,
        };
        let seen = Challenge::parse(&ch.to_message(), &cnonce).unwrap();
        assert_eq!(seen, ch);
        let am = seen.auth_message("alice", &cnonce);
        let secret = ClientSecret::derive(typed_pw, &seen).unwrap();
        let proof = secret.proof_message(&am);
        assert!(!proof.contains(std::str::from_utf8(typed_pw).unwrap()));
        let reply = check_proof(&cred, &am, &proof);
        let verified = secret.verify_server(&am, reply.as_deref().unwrap_or("err login failed"));
        (reply, verified)
    }

    #[test]
    fn the_right_password_logs_in_both_ways() {
        let (reply, verified) = exchange(b"hunter22", b"hunter22");
        assert!(reply.unwrap().starts_with("ok "));
        verified.unwrap();
    }

    #[test]
    fn a_wrong_password_is_refused() {
        let (reply, verified) = exchange(b"hunter22", b"hunter23");
        assert_eq!(reply, None);
        assert!(verified.unwrap_err().contains("login refused"));
    }

    #[test]
    fn the_stored_keys_alone_do_not_make_a_proof() {
        // An attacker with the accounts file knows StoredKey and ServerKey;
        // using StoredKey as if it were ClientKey must fail.
        let cred = Credential::create(b"hunter22", FAST).unwrap();
        let am = "n=alice,r=x,r=y,s=z,i=m=64,t=1,p=1";
        let forged = hmac(&cred.stored_key, am.as_bytes());
        let guess = xor(&cred.stored_key, &forged);
        assert_eq!(
            check_proof(&cred, am, &format!("proof {}", B64.encode(guess))),
            None
        );
        assert_eq!(check_proof(&cred, am, "proof not-base64!"), None);
    }

    #[test]
    fn a_challenge_must_extend_the_client_nonce_and_bound_its_cost() {
        let c = "AAAAAAAAAAAAAAAAAAAAAAAA";
        let msg = format!("challenge {c}BBBBBBBBBBBBBBBBBBBBBBBB c2FsdHNhbHQ m=64,t=1,p=1");
        assert!(Challenge::parse(&msg, "CCCCCCCCCCCCCCCCCCCCCCCC").is_err());
        assert!(Challenge::parse(&format!("challenge {c} c2FsdHNhbHQ m=64,t=1,p=1"), c).is_err());
        let greedy = format!("challenge {c}BBBBBBBBBBBBBBBBBBBBBBBB c2FsdHNhbHQ m=8000000,t=1,p=1");
        assert!(Challenge::parse(&greedy, c).is_err());
        assert!(valid_nonce(c));
        assert!(!valid_nonce("short"));
        assert!(!valid_nonce("AAAAAAAAAAAAAAAA AAAAAAA"));
    }

    #[test]
    fn decoy_salts_are_stable_per_name() {
        let s = [7u8; 32];
        assert_eq!(decoy(&s, "ghost", FAST), decoy(&s, "ghost", FAST));
        assert_ne!(decoy(&s, "ghost", FAST).0, decoy(&s, "other", FAST).0);
    }
}
