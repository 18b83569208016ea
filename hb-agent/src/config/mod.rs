//! Heartbeat-compatible configuration: `ha.cf`, `haresources`, `authkeys` from one
//! directory (default `/etc/ha.d`), checked together into one [`Config`].
//!
//! Pure: reads files, holds no sockets. Interfaces are looked up only through the
//! [`HostView`] the caller passes, so tests and `check-config` on another machine work.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    Ucast { peer: IpAddr },
    Bcast,
    Mcast { group: IpAddr, ttl: u8, loopback: bool },
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
        f.debug_struct("AuthKey").field("method", &self.method).field("secret", &self.secret).finish()
    }
}

impl std::fmt::Debug for AuthKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthKeys").field("active", &self.active).field("keys", &self.keys).finish()
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
    pub deadping: Option<Duration>,
}

/// Where a setting came from: file and 1-based line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}
