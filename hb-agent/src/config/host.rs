//! What the loader needs to know about the machine it runs on, behind a trait so that tests
//! and `check-config` for another machine do not depend on this one.

use std::net::{IpAddr, ToSocketAddrs};

use super::addr::{device_of, prefix_covers};

/// The machine as the config loader sees it.
pub trait HostView {
    /// `uname -n`: Heartbeat's name for the local node.
    fn hostname(&self) -> Option<String>;
    /// Whether a network device of this name exists (an `eth0:1` label counts as `eth0`).
    fn interface_exists(&self, name: &str) -> bool;
    /// The interface whose own address and netmask cover `addr` (a connected route), with
    /// that prefix length; the longest prefix wins, then the first interface listed.
    fn connected_route_iface(&self, addr: IpAddr) -> Option<(String, u8)>;
    /// Every address configured on this machine.
    fn local_addrs(&self) -> Vec<IpAddr>;
    /// Addresses of a host name (for `ucast`/`ping` lines that name a host, which Heartbeat
    /// resolved with `gethostbyname`).
    fn resolve_host(&self, name: &str) -> Vec<IpAddr>;
    /// The effective uid of the agent: `authkeys` must belong to root (or to this user, which
    /// is root for the daemon).
    fn effective_uid(&self) -> u32;
}

/// The real machine: `uname`, `getifaddrs`, the system resolver.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemHost;

impl SystemHost {
    fn interface_addrs() -> Vec<(String, IpAddr, u8)> {
        let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
            return Vec::new();
        };
        addrs
            .filter_map(|ifa| {
                let address = ifa.address?;
                if let Some(v4) = address.as_sockaddr_in() {
                    let prefix = ifa
                        .netmask
                        .as_ref()
                        .and_then(|m| m.as_sockaddr_in())
                        .map_or(32, |m| u32::from(m.ip()).leading_ones() as u8);
                    Some((ifa.interface_name, IpAddr::V4(v4.ip()), prefix))
                } else if let Some(v6) = address.as_sockaddr_in6() {
                    let prefix = ifa
                        .netmask
                        .as_ref()
                        .and_then(|m| m.as_sockaddr_in6())
                        .map_or(128, |m| u128::from(m.ip()).leading_ones() as u8);
                    Some((ifa.interface_name, IpAddr::V6(v6.ip()), prefix))
                } else {
                    None
                }
            })
            .collect()
    }
}

impl HostView for SystemHost {
    fn hostname(&self) -> Option<String> {
        nix::unistd::gethostname().ok()?.into_string().ok()
    }

    fn interface_exists(&self, name: &str) -> bool {
        nix::net::if_::if_nametoindex(device_of(name)).is_ok()
    }

    fn connected_route_iface(&self, addr: IpAddr) -> Option<(String, u8)> {
        longest_covering(Self::interface_addrs(), addr)
    }

    fn local_addrs(&self) -> Vec<IpAddr> {
        Self::interface_addrs()
            .into_iter()
            .map(|(_, addr, _)| addr)
            .collect()
    }

    fn resolve_host(&self, name: &str) -> Vec<IpAddr> {
        match (name, 0u16).to_socket_addrs() {
            Ok(addrs) => {
                let mut out: Vec<IpAddr> = Vec::new();
                for addr in addrs {
                    if !out.contains(&addr.ip()) {
                        out.push(addr.ip());
                    }
                }
                out
            }
            Err(_) => Vec::new(),
        }
    }

    fn effective_uid(&self) -> u32 {
        nix::unistd::geteuid().as_raw()
    }
}

/// A described machine, for tests and for checking a config meant for another host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StaticHost {
    pub hostname: Option<String>,
    /// Interface name → its addresses with prefix lengths.
    pub interfaces: Vec<(String, Vec<(IpAddr, u8)>)>,
    /// Host name → addresses, as `/etc/hosts` would give them.
    pub hosts: Vec<(String, IpAddr)>,
    pub uid: u32,
}

impl StaticHost {
    /// A root-run host called `hostname` with the given interfaces and their addresses
    /// (`("eth0", &[("10.0.0.1", 24)])`).
    pub fn new(
        hostname: &str,
        interfaces: &[(&str, &[(&str, u8)])],
    ) -> Result<Self, std::net::AddrParseError> {
        let mut parsed = Vec::with_capacity(interfaces.len());
        for (name, addrs) in interfaces {
            let addrs = addrs
                .iter()
                .map(|(addr, prefix)| Ok((addr.parse()?, *prefix)))
                .collect::<Result<Vec<_>, std::net::AddrParseError>>()?;
            parsed.push((name.to_string(), addrs));
        }
        Ok(StaticHost {
            hostname: Some(hostname.to_string()),
            interfaces: parsed,
            hosts: Vec::new(),
            uid: 0,
        })
    }

    fn flat_addrs(&self) -> Vec<(String, IpAddr, u8)> {
        self.interfaces
            .iter()
            .flat_map(|(name, addrs)| addrs.iter().map(move |(a, p)| (name.clone(), *a, *p)))
            .collect()
    }
}

impl HostView for StaticHost {
    fn hostname(&self) -> Option<String> {
        self.hostname.clone()
    }

    fn interface_exists(&self, name: &str) -> bool {
        let device = device_of(name);
        self.interfaces.iter().any(|(n, _)| n == device)
    }

    fn connected_route_iface(&self, addr: IpAddr) -> Option<(String, u8)> {
        longest_covering(self.flat_addrs(), addr)
    }

    fn local_addrs(&self) -> Vec<IpAddr> {
        self.flat_addrs().into_iter().map(|(_, a, _)| a).collect()
    }

    fn resolve_host(&self, name: &str) -> Vec<IpAddr> {
        self.hosts
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, a)| *a)
            .collect()
    }

    fn effective_uid(&self) -> u32 {
        self.uid
    }
}

/// The interface whose address/prefix covers `target`, longest prefix first, then the
/// first listed: the kernel's choice among connected routes.
fn longest_covering(addrs: Vec<(String, IpAddr, u8)>, target: IpAddr) -> Option<(String, u8)> {
    let mut best: Option<(String, u8)> = None;
    for (name, addr, prefix) in addrs {
        if !prefix_covers(addr, prefix, target) {
            continue;
        }
        if best
            .as_ref()
            .is_none_or(|(_, best_prefix)| prefix > *best_prefix)
        {
            best = Some((name, prefix));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connected_route_prefers_longest_prefix() {
        let host = StaticHost::new(
            "node1",
            &[
                ("eth0", &[("10.0.0.5", 8)]),
                ("eth1", &[("10.1.2.5", 24)]),
                ("eth2", &[("10.1.2.9", 24)]),
                ("eth3", &[("2001:db8::5", 64)]),
            ],
        )
        .expect("addresses");
        let at = |a: &str| host.connected_route_iface(a.parse().unwrap());
        assert_eq!(at("10.1.2.100"), Some(("eth1".into(), 24)));
        assert_eq!(at("10.9.9.9"), Some(("eth0".into(), 8)));
        assert_eq!(at("192.168.0.1"), None);
        assert_eq!(at("2001:db8::10"), Some(("eth3".into(), 64)));
        assert!(host.interface_exists("eth0:1"));
        assert!(!host.interface_exists("eth9"));
    }

    #[test]
    fn system_host_sees_loopback() {
        let host = SystemHost;
        assert!(host.interface_exists("lo"));
        assert!(host.local_addrs().contains(&IpAddr::from([127, 0, 0, 1])));
        assert_eq!(
            host.connected_route_iface("127.0.0.2".parse().unwrap()),
            Some(("lo".into(), 8))
        );
        assert!(host.hostname().is_some());
        assert!(host
            .resolve_host("localhost")
            .iter()
            .any(|a| a.is_loopback()));
    }
}
