//! What the chat and files services share: the accounts file, the password
//! credentials in it, and the checks on what users type.
//!
//! One accounts file can serve both services ([`store`]): each account is a
//! name, a salted argon2id credential ([`credential`]) and a friend list
//! (used by chat). Chat checks a typed password against the credential;
//! files runs a challenge-response over it (`files::auth`), so the password
//! never crosses the wire. Both refuse the same names ([`text::check_name`])
//! and passwords ([`password`]), and neutralise what a user sent
//! ([`text::neutralise`]) before it reaches a terminal.
//!
//! Chat and files both import this module; neither imports the other.

pub mod credential;
pub mod password;
pub mod store;
pub mod text;

pub use credential::{Credential, KdfParams};
pub use store::{Account, Accounts, UpdateError};
