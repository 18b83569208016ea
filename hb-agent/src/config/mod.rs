//! Heartbeat-compatible configuration: `ha.cf`, `haresources`, `authkeys` from one
//! directory (default `/etc/ha.d`), checked together into one [`Config`].
//!
//! Pure: reads files, holds no sockets. Interfaces are looked up only through the
//! [`HostView`] the caller passes, so tests and `check-config` on another machine work.
//!
//! Entry point: [`load`] gives a [`LoadReport`] with the [`Config`] (only when there is no
//! error) and every [`Diagnostic`]; [`LoadReport::render_text`] and the `Serialize` impl are
//! what `hb-agent check-config [--json]` prints. The per-file parsers ([`parse_ha_cf`],
//! [`parse_haresources`], [`parse_authkeys`]) are public for the fuzz targets.
//!
//! Directives, defaults and hb's additions are documented in [`hacf`]; resource syntax in
//! [`haresources`]; key file rules in [`authkeys`]; time values in [`timer`].

pub mod addr;
pub mod authkeys;
pub mod diag;
pub mod hacf;
pub mod haresources;
pub mod host;
mod load;
pub mod reload;
mod report;
pub mod text;
pub mod timer;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

pub use authkeys::{parse_authkeys, AuthKeysFile};
pub use diag::{Diagnostic, Severity};
pub use hacf::{parse_ha_cf, HaCf, HaCfFile};
pub use haresources::{parse_haresources, parse_resource, HaResources, ResourceError};
pub use host::{HostView, StaticHost, SystemHost};
pub use load::{
    default_initdead, derived_cluster_id, load, LoadReport, AUTHKEYS, DEFAULT_DEADTIME,
    DEFAULT_KEEPALIVE, DEFAULT_RESOURCE_TIMEOUT, HARESOURCES, HA_CF,
};
pub use text::MAX_FILE_BYTES;

/// The effective configuration of one node, ready to run.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The directory the files were read from.
    pub dir: PathBuf,
    /// This node's name (hostname, or `--node`). Always one of `nodes`.
    pub local_node: String,
    /// Every `node` line, in order of first appearance.
    pub nodes: Vec<Node>,
    pub timers: Timers,
    /// Every communication line, in file order, each with the port in force at its line.
    pub links: Vec<Link>,
    pub auto_failback: AutoFailback,
    /// Resource groups from `haresources`, in file order (the order is the group's bit in
    /// the wire format's `held` bitmap).
    pub groups: Vec<ResourceGroup>,
    pub auth: AuthKeys,
    /// Sent in every packet; heartbeats of another cluster are dropped in the kernel.
    pub cluster_id: u32,
    pub realtime: bool,
    pub xdp: XdpSetting,
    pub log: LogSettings,
    /// hb additions (see README "hb directives").
    pub garp: GarpSettings,
    pub failback_delay: Duration,
    /// Longest a resource script's start or stop may run (`resource_timeout`).
    pub resource_timeout: Duration,
    pub control_socket: Option<PathBuf>,
    pub metrics: Option<std::net::SocketAddr>,
    /// `ping`/`ping_group` nodes and `deadping`.
    pub ping: PingSettings,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    /// `hb_common::wire::node_id(name)`.
    pub id: u32,
}

/// Heartbeat's defaults when `ha.cf` is silent: keepalive 1 s, deadtime 30 s, warntime
/// deadtime / 2, initdead as [`default_initdead`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    pub keepalive: Duration,
    pub deadtime: Duration,
    pub warntime: Duration,
    pub initdead: Duration,
}

/// One heartbeat path, as one `ucast`/`bcast`/`mcast` line (a `bcast` line with several
/// interfaces gives one `Link` per interface).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub iface: String,
    /// The `udpport` in force where the line stood (Heartbeat's order rule).
    pub port: u16,
    pub kind: LinkKind,
    /// Where it came from, for messages.
    pub origin: Origin,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkKind {
    Ucast {
        peer: IpAddr,
    },
    Bcast,
    Mcast {
        group: IpAddr,
        ttl: u8,
        loopback: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoFailback {
    On,
    Off,
    Legacy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpSetting {
    /// Driver mode, then skb mode, then sockets.
    Auto,
    Driver,
    Skb,
    /// Plain UDP sockets only.
    Off,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceGroup {
    /// The first resource's text, as Heartbeat names groups.
    pub name: String,
    pub preferred: String,
    /// Acquired left to right, released right to left.
    pub resources: Vec<Resource>,
    pub origin: Origin,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resource {
    /// `IPaddr`, `IPaddr2` and bare addresses.
    Ipv4 {
        addr: std::net::Ipv4Addr,
        /// `None`: taken from the connected route that covers `addr` at run time.
        prefix: Option<u8>,
        iface: Option<String>,
        broadcast: Option<std::net::Ipv4Addr>,
        /// Which script the user named, to print it back the same way.
        agent: IpAgent,
    },
    /// `IPv6addr::ADDR/PREFIX[/IFACE]`.
    Ipv6 {
        addr: std::net::Ipv6Addr,
        prefix: u8,
        iface: Option<String>,
    },
    /// Anything else: a script (`resource.d`, `/etc/init.d`) or systemd unit, with its
    /// `::` arguments.
    Script { name: String, args: Vec<String> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpAgent {
    Bare,
    IPaddr,
    IPaddr2,
}

/// `authkeys`: the key that signs, and every key that verifies.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthKeys {
    pub active: u8,
    /// Index 1–15 → key.
    pub keys: Vec<(u8, AuthKey)>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct AuthKey {
    pub method: AuthMethod,
    /// Never printed: `Debug` and every report show only its length.
    pub secret: Secret,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    Crc,
    Md5,
    Sha1,
}

/// Key material; `Debug` redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<secret, {} bytes>", self.0.len())
    }
}

impl std::fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthKey")
            .field("method", &self.method)
            .field("secret", &self.secret)
            .finish()
    }
}

impl std::fmt::Debug for AuthKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthKeys")
            .field("active", &self.active)
            .field("keys", &self.keys)
            .finish()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogSettings {
    pub logfile: Option<PathBuf>,
    pub debugfile: Option<PathBuf>,
    pub logfacility: Option<String>,
    pub use_logd: bool,
    pub debug: u8,
}

/// Defaults ([`hacf::DEFAULT_GARP`]): 5 announcements 200 ms apart, requests and replies,
/// no refresh: the pattern Heartbeat's IPaddr/send_arp sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GarpSettings {
    pub count: u32,
    pub interval: Duration,
    /// Send ARP replies as well as requests (some switches only learn from one form).
    pub reply: bool,
    pub request: bool,
    /// Periodic re-announcement while active; `None` = off.
    pub refresh: Option<Duration>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PingSettings {
    pub nodes: Vec<IpAddr>,
    pub groups: Vec<(String, Vec<IpAddr>)>,
    /// `deadping`, defaulting to deadtime as in Heartbeat; `None` when there are no ping
    /// nodes or groups and no `deadping` line.
    pub deadping: Option<Duration>,
}

/// Where a setting came from: file and 1-based line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

impl Config {
    /// The links this node uses: every line except `ucast` lines to one of its own
    /// addresses (identical files on all nodes list every peer, as in Heartbeat).
    pub fn effective_links(&self, local_addrs: &[IpAddr]) -> Vec<Link> {
        self.links
            .iter()
            .filter(|link| !matches!(link.kind, LinkKind::Ucast { peer } if local_addrs.contains(&peer)))
            .cloned()
            .collect()
    }

    /// Every node but this one.
    pub fn peers(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(move |n| n.name != self.local_node)
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        let name = name.to_lowercase();
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Where an address resource goes on this machine: its interface, or the one whose
    /// connected route covers the address (Heartbeat's rule); its prefix, or that route's.
    /// `Ok(None)` for script resources.
    pub fn resolve_iface(
        &self,
        resource: &Resource,
        host: &dyn HostView,
    ) -> Result<Option<AddressPlacement>, ResolveError> {
        resource.placement(host)
    }
}

/// An address resource resolved against the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressPlacement {
    pub addr: IpAddr,
    pub prefix: u8,
    /// The network device (`eth0` for `eth0:1`).
    pub device: String,
    /// The address label, when the resource named one (`eth0:1`).
    pub label: Option<String>,
    /// IPv4 only: as given, else the network's broadcast address (none for /31 and /32).
    pub broadcast: Option<Ipv4Addr>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "no interface has a connected route covering {addr}: name the interface in haresources \
         (e.g. IPaddr2::{addr}/24/eth1)"
    )]
    NoConnectedRoute { addr: IpAddr },
    #[error("no connected route covers {addr} to take its prefix from: give it as {addr}/PREFIX")]
    NoPrefix { addr: IpAddr },
}

impl Resource {
    /// The service address of an `IPaddr`/`IPaddr2`/`IPv6addr` resource.
    pub fn address(&self) -> Option<IpAddr> {
        match self {
            Resource::Ipv4 { addr, .. } => Some(IpAddr::V4(*addr)),
            Resource::Ipv6 { addr, .. } => Some(IpAddr::V6(*addr)),
            Resource::Script { .. } => None,
        }
    }

    /// See [`Config::resolve_iface`].
    pub fn placement(&self, host: &dyn HostView) -> Result<Option<AddressPlacement>, ResolveError> {
        let (addr, prefix, iface, broadcast) = match self {
            Resource::Ipv4 {
                addr,
                prefix,
                iface,
                broadcast,
                ..
            } => (IpAddr::V4(*addr), *prefix, iface, *broadcast),
            Resource::Ipv6 {
                addr,
                prefix,
                iface,
            } => (IpAddr::V6(*addr), Some(*prefix), iface, None),
            Resource::Script { .. } => return Ok(None),
        };
        let route = if prefix.is_none() || iface.is_none() {
            host.connected_route_iface(addr)
        } else {
            None
        };
        let (device, label) = match iface {
            Some(iface) => {
                let device = addr::device_of(iface).to_string();
                let label = (device != *iface).then(|| iface.clone());
                (device, label)
            }
            None => match &route {
                Some((device, _)) => (device.clone(), None),
                None => return Err(ResolveError::NoConnectedRoute { addr }),
            },
        };
        let prefix = match (prefix, &route) {
            (Some(prefix), _) => prefix,
            (None, Some((_, prefix))) => *prefix,
            (None, None) => return Err(ResolveError::NoPrefix { addr }),
        };
        let broadcast = match addr {
            IpAddr::V4(v4) => broadcast.or_else(|| addr::default_broadcast(v4, prefix)),
            IpAddr::V6(_) => None,
        };
        Ok(Some(AddressPlacement {
            addr,
            prefix,
            device,
            label,
            broadcast,
        }))
    }
}

/// Heartbeat's syntax, as it would appear in haresources.
impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resource::Ipv4 {
                addr,
                prefix,
                iface,
                broadcast,
                agent,
            } => {
                match agent {
                    IpAgent::Bare => {}
                    IpAgent::IPaddr => f.write_str("IPaddr::")?,
                    IpAgent::IPaddr2 => f.write_str("IPaddr2::")?,
                }
                // Without an interface the broadcast takes the third place, the form
                // Heartbeat's haresources documents (`IPaddr::135.9.8.7/24/135.9.8.210`).
                let parts = match iface {
                    Some(iface) => [
                        prefix.map(|p| p.to_string()),
                        Some(iface.clone()),
                        broadcast.map(|b| b.to_string()),
                    ],
                    None => [
                        prefix.map(|p| p.to_string()),
                        broadcast.map(|b| b.to_string()),
                        None,
                    ],
                };
                let used = parts
                    .iter()
                    .rposition(Option::is_some)
                    .map_or(0, |last| last + 1);
                write!(f, "{addr}")?;
                for part in &parts[..used] {
                    write!(f, "/{}", part.as_deref().unwrap_or(""))?;
                }
                Ok(())
            }
            Resource::Ipv6 {
                addr,
                prefix,
                iface,
            } => {
                write!(f, "IPv6addr::{addr}/{prefix}")?;
                match iface {
                    Some(iface) => write!(f, "/{iface}"),
                    None => Ok(()),
                }
            }
            Resource::Script { name, args } => {
                f.write_str(name)?;
                for arg in args {
                    write!(f, "::{arg}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_print_back_in_heartbeat_syntax() {
        for text in [
            "10.8.0.1",
            "IPaddr::10.8.0.1/24/eth1/255.255.255.255",
            "IPaddr2::10.0.0.1//eth0",
            "IPaddr::10.0.2.100/24/eth0:1",
            "IPaddr::135.9.8.7/24/135.9.8.210",
            "135.9.216.3/28/eth0/135.9.216.12",
            "IPv6addr::2001:db8::10/64/eth0",
            "Filesystem::/dev/sda1::/data::ext4",
            "nginx",
        ] {
            assert_eq!(parse_resource(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn placement_uses_connected_route_when_needed() {
        let host = StaticHost::new(
            "n1",
            &[
                ("eth0", &[("10.0.2.15", 24)]),
                ("eth1", &[("2001:db8::5", 64)]),
            ],
        )
        .expect("addresses");
        let place = |text: &str| parse_resource(text).unwrap().placement(&host);
        assert_eq!(
            place("10.0.2.100"),
            Ok(Some(AddressPlacement {
                addr: "10.0.2.100".parse().unwrap(),
                prefix: 24,
                device: "eth0".into(),
                label: None,
                broadcast: Some(Ipv4Addr::new(10, 0, 2, 255)),
            }))
        );
        let labelled = place("IPaddr::10.0.2.100/24/eth0:1").unwrap().unwrap();
        assert_eq!(
            (labelled.device.as_str(), labelled.label.as_deref()),
            ("eth0", Some("eth0:1"))
        );
        assert_eq!(
            place("IPaddr2::10.0.0.1/32/lo").unwrap().unwrap().broadcast,
            None
        );
        assert_eq!(
            place("IPv6addr::2001:db8::10/64").unwrap().unwrap().device,
            "eth1"
        );
        assert_eq!(
            place("192.168.9.9"),
            Err(ResolveError::NoConnectedRoute {
                addr: "192.168.9.9".parse().unwrap()
            })
        );
        assert_eq!(
            place("IPaddr::192.168.9.9//eth0"),
            Err(ResolveError::NoPrefix {
                addr: "192.168.9.9".parse().unwrap()
            })
        );
        assert_eq!(place("nginx"), Ok(None));
    }
}
