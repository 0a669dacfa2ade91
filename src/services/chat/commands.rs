//! What each chat command does to the room.

use std::time::Instant;

use slog::{info, warn};

use crate::services::accounts::text::neutralise;
use crate::services::accounts::{credential, Account, Credential, UpdateError};

use super::colour::paint;
use super::parse::{parse, Command, ParseError};
use super::room::{lock, SessionId};
use super::{Chat, Outcome, HELP};

const LOGIN_FIRST: &str =
    "error: log in first: /login NAME PASSWORD, or /register NAME PASSWORD for a new account";

impl Chat {
    /// Runs one line from session `id` and returns the reply for it;
    /// messages for other sessions are delivered on the way.
    pub fn handle_line(&self, id: SessionId, line: &[u8]) -> Outcome {
        let cmd = match parse(line) {
            Ok(c) => c,
            Err(ParseError::Empty) => return Outcome::default(),
            Err(e) => return Outcome::line(format!("error: {e}")),
        };
        let user = match lock(&self.sessions).get(id) {
            Some(s) => s.user.clone(),
            None => return Outcome::line("error: session expired"),
        };
        match (cmd, user) {
            (Command::Help, _) => Outcome {
                reply: HELP.to_string(),
                quit: false,
            },
            (Command::Quit, _) => Outcome {
                reply: "ok: bye\n".into(),
                quit: true,
            },
            (Command::Color(on), _) => {
                if let Some(s) = lock(&self.sessions).get_mut(id) {
                    s.colour = on;
                }
                Outcome::line(format!("ok: colour {}", if on { "on" } else { "off" }))
            }
            (Command::Register { .. } | Command::Login { .. }, Some(me)) => {
                Outcome::line(format!("error: already logged in as {me}; /logout first"))
            }
            (Command::Register { name, password }, None) => self.register(id, name, password),
            (Command::Login { name, password }, None) => self.login(id, name, password),
            (_, None) => Outcome::line(LOGIN_FIRST),
            (Command::Logout, Some(me)) => {
                if let Some(s) = lock(&self.sessions).get_mut(id) {
                    s.user = None;
                }
                Outcome::line(format!("ok: logged out {me}"))
            }
            (Command::Say(text), Some(me)) => {
                self.deliver(&me, text, |sid, _| sid != id, "");
                Outcome::default()
            }
            (Command::Msg { to, text }, Some(me)) => {
                if self.deliver(&me, text, |_, user| user == to, " (private)") == 0 {
                    Outcome::line(format!("error: {to} is not online"))
                } else {
                    Outcome::line(format!("ok: sent to {to}"))
                }
            }
            (Command::FriendAdd(name), Some(me)) => self.befriend(&me, name, true),
            (Command::FriendDel(name), Some(me)) => self.befriend(&me, name, false),
            (Command::Friends, Some(me)) => self.friends(&me),
            (Command::Who, Some(_)) => Outcome::line(format!(
                "ok: online: {}",
                lock(&self.sessions).online().join(", ")
            )),
        }
    }

    /// Sends `from: text` to every logged-in session `pick` accepts, each
    /// in its own colour choice; returns how many were picked.
    fn deliver(
        &self,
        from: &str,
        text: &str,
        pick: impl FnMut(SessionId, &str) -> bool,
        tag: &str,
    ) -> usize {
        let targets = lock(&self.sessions).recipients(pick);
        let text = neutralise(text);
        for (outlet, colour) in &targets {
            let line = format!("{}{tag}: {text}\n", paint(from, *colour));
            // A failed delivery has already evicted a slow stream client;
            // a lost datagram is a datagram's lot.
            let _ = outlet.send(line.as_bytes());
        }
        targets.len()
    }

    fn register(&self, id: SessionId, name: &str, password: &str) -> Outcome {
        if lock(&self.accounts).get(name).is_some() {
            return Outcome::line(format!("error: the name {name} is taken"));
        }
        // The slow hash runs outside every lock.
        let cred = match Credential::create(password.as_bytes(), self.cfg.kdf) {
            Ok(c) => c,
            Err(e) => return self.internal("hash password", &e),
        };
        let added = lock(&self.accounts).update(|users| {
            if users.contains_key(name) {
                return Err(format!("the name {name} is taken"));
            }
            let account = Account {
                credential: cred.encode(),
                friends: Default::default(),
            };
            users.insert(name.to_string(), account);
            Ok(())
        });
        match added {
            Ok(()) => {
                info!(self.log, "chat account registered"; "name" => name);
                self.log_in(id, name);
                Outcome::line(format!("ok: registered and logged in as {name}"))
            }
            Err(UpdateError::Refused(why)) => Outcome::line(format!("error: {why}")),
            Err(UpdateError::Io(e)) => self.internal("save accounts", &e),
        }
    }

    fn login(&self, id: SessionId, name: &str, password: &str) -> Outcome {
        let now = Instant::now();
        let client = match lock(&self.sessions).get(id) {
            Some(s) => s.client.clone(),
            None => return Outcome::line("error: session expired"),
        };
        let keys = [format!("name:{name}"), client];
        {
            let limiter = lock(&self.limiter);
            if let Some(wait) = keys.iter().find_map(|k| limiter.check(k, now).err()) {
                return Outcome::line(format!(
                    "error: too many failed logins; try again in {} s",
                    wait.as_secs().max(1)
                ));
            }
        }
        let cred = lock(&self.accounts).credential(name);
        let ok = match cred {
            Some(c) => c.check_password(password.as_bytes()),
            None => {
                // Spend the same work for an unknown name, so timing does
                // not tell which names exist.
                let _ = credential::salted_password(b"x", &[0; 16], self.cfg.kdf);
                false
            }
        };
        let mut limiter = lock(&self.limiter);
        if !ok {
            keys.iter().for_each(|k| limiter.fail(k, now));
            warn!(self.log, "chat login failed"; "name" => name, "client" => &keys[1]);
            return Outcome::line("error: wrong name or password");
        }
        keys.iter().for_each(|k| limiter.succeed(k));
        drop(limiter);
        self.log_in(id, name);
        Outcome::line(format!("ok: logged in as {name}"))
    }

    fn log_in(&self, id: SessionId, name: &str) {
        if let Some(s) = lock(&self.sessions).get_mut(id) {
            s.user = Some(name.to_string());
        }
    }

    fn befriend(&self, me: &str, name: &str, add: bool) -> Outcome {
        let changed = lock(&self.accounts).update(|users| {
            if !users.contains_key(name) {
                return Err(format!("there is no account named {name}"));
            }
            if name == me {
                return Err("you cannot befriend yourself".into());
            }
            let friends = &mut users
                .get_mut(me)
                .ok_or("your account no longer exists")?
                .friends;
            if add {
                friends.insert(name.to_string());
            } else if !friends.remove(name) {
                return Err(format!("{name} is not your friend"));
            }
            Ok(())
        });
        match changed {
            Ok(()) if add => Outcome::line(format!("ok: {name} is your friend")),
            Ok(()) => Outcome::line(format!("ok: {name} is no longer your friend")),
            Err(UpdateError::Refused(why)) => Outcome::line(format!("error: {why}")),
            Err(UpdateError::Io(e)) => self.internal("save accounts", &e),
        }
    }

    fn friends(&self, me: &str) -> Outcome {
        let friends = match lock(&self.accounts).get(me) {
            Some(a) => a.friends.clone(),
            None => return Outcome::line("error: your account no longer exists"),
        };
        if friends.is_empty() {
            return Outcome::line("ok: no friends yet (/friend add NAME)");
        }
        let sessions = lock(&self.sessions);
        let list: Vec<String> = friends
            .iter()
            .map(|f| {
                let state = if sessions.is_online(f) {
                    "online"
                } else {
                    "offline"
                };
                format!("{f} ({state})")
            })
            .collect();
        Outcome::line(format!("ok: friends: {}", list.join(", ")))
    }

    fn internal(&self, op: &str, e: &std::io::Error) -> Outcome {
        slog::error!(self.log, "chat: cannot {op}"; "error" => %e);
        Outcome::line(format!(
            "error: the server cannot {op} right now; nothing changed"
        ))
    }
}
