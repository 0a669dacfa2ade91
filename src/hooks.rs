//! The methods of Python's `BaseServer` that a program "may override":
//! `verify_request`, `handle_timeout`, `service_actions`, `handle_error`.
//! Implement [`Hooks`] and pass it to the server builder; each default
//! does what Python's does.

use slog::{error, Logger};

use crate::addr::Address;
use crate::error::RequestError;

/// Overridable lifecycle hooks. Called by the server; never call them
/// yourself.
pub trait Hooks: Send + Sync + 'static {
    /// Called for each request before any handler exists; return false to
    /// drop the request unanswered. Default: accept every client.
    fn verify_request(&self, _peer: &Address) -> bool {
        true
    }

    /// Called when `handle_request` waited out its timeout with nothing to
    /// serve. Default: nothing (the fork policy reaps children regardless).
    fn handle_timeout(&self) {}

    /// Called once per `serve_forever` loop iteration. Default: nothing
    /// (the fork policy reaps children regardless). Under
    /// [`Policy::Event`](crate::Policy::Event) it is not called while an
    /// event loop has been stuck in a handler for a second or more.
    fn service_actions(&self) {}

    /// Called when a handler failed or panicked; the server keeps serving.
    /// Runs in the thread or process that served the request. Default: log
    /// the client and the error.
    fn handle_error(&self, peer: &Address, err: &RequestError, log: &Logger) {
        error!(log, "request failed"; "peer" => %peer, "error" => %err);
    }
}

/// Python's defaults for every hook.
#[derive(Debug, Default, Clone, Copy)]
pub struct DefaultHooks;

impl Hooks for DefaultHooks {}

/// `verify_request` that admits only clients from the listed IP networks
/// (Unix clients are always admitted).
#[derive(Debug, Clone)]
pub struct AllowList {
    nets: Vec<(std::net::IpAddr, u8)>,
}

impl AllowList {
    /// Parses networks such as `127.0.0.0/8`, `::1/128` or a bare address.
    /// Takes any list of strings: `&["10.0.0.0/8"]`, a `Vec<String>`, an
    /// iterator of arguments.
    pub fn parse<I, S>(specs: I) -> Result<AllowList, crate::Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut nets = Vec::new();
        for spec in specs {
            let spec = spec.as_ref();
            let (ip, len) = match spec.split_once('/') {
                Some((ip, len)) => (ip, Some(len)),
                None => (spec, None),
            };
            let ip: std::net::IpAddr = ip
                .parse()
                .map_err(|e| crate::Error::Parse(format!("network {spec:?}: {e}")))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len = match len {
                Some(l) => l.parse::<u8>().ok().filter(|&l| l <= max).ok_or_else(|| {
                    crate::Error::Parse(format!("network {spec:?}: bad prefix length"))
                })?,
                None => max,
            };
            nets.push((ip, len));
        }
        Ok(AllowList { nets })
    }

    /// True when `peer` falls in one of the networks.
    pub fn admits(&self, peer: &Address) -> bool {
        let Address::Inet(sa) = peer else {
            return true;
        };
        let ip = canonical(sa.ip());
        self.nets
            .iter()
            .any(|&(net, len)| in_net(ip, canonical(net), len))
    }
}

impl Hooks for AllowList {
    fn verify_request(&self, peer: &Address) -> bool {
        self.admits(peer)
    }
}

fn canonical(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}

fn in_net(ip: std::net::IpAddr, net: std::net::IpAddr, len: u8) -> bool {
    let (a, b, bits) = match (ip, net) {
        (std::net::IpAddr::V4(a), std::net::IpAddr::V4(b)) => {
            (u32::from(a) as u128, u32::from(b) as u128, 32u32)
        }
        (std::net::IpAddr::V6(a), std::net::IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    let shift = bits - u32::from(len);
    shift >= bits || (a >> shift) == (b >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matches_prefixes() {
        let list = AllowList::parse(["127.0.0.0/8", "::1"]).unwrap();
        let ok: Address = "127.9.9.9:1"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into();
        let v6: Address = "[::1]:1".parse::<std::net::SocketAddr>().unwrap().into();
        let no: Address = "10.0.0.1:1".parse::<std::net::SocketAddr>().unwrap().into();
        assert!(list.admits(&ok));
        assert!(list.admits(&v6));
        assert!(!list.admits(&no));
        assert!(AllowList::parse(["1.2.3.4/33"]).is_err());
    }
}
