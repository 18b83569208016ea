//! hb-agent: a Heartbeat-compatible high-availability agent.
//!
//! Pure modules hold no sockets and are tested from recorded inputs:
//! - [`config`]: `ha.cf`, `haresources`, `authkeys`;
//! - [`wire`]: building, decoding and authenticating heartbeat packets;
//! - [`arrival`]: a received heartbeat, whichever path brought it;
//! - [`membership`]: which nodes and links are alive, from kernel arrival times;
//! - [`policy`]: who should hold each resource group (Heartbeat R1 semantics);
//! - [`stats`]: the agent's own stall and delay measurements.
//!
//! I/O modules sit around them:
//! - [`xdp`]: the XDP program's loader and ring-buffer reader; [`transport`]: heartbeat
//!   sockets, the sender thread and the socket receive fallback; [`inbound`]: whichever of
//!   the two receive paths is in use;
//! - [`netlink`] (addresses, neighbours), [`arp`] (gratuitous ARP, unsolicited NA),
//!   [`services`] (resource scripts), run by the [`executor`];
//! - [`control`]: the control socket behind `hb-agent status|standby|takeover`;
//! - [`notify`] (systemd's notify protocol and watchdog), [`metrics`] (Prometheus text),
//!   [`logging`] (ha.cf's `logfile`/`debugfile`).
//!
//! [`engine`] is the one task that owns the cluster state; [`daemon`] assembles it all.

pub mod arp;
pub mod arrival;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod engine;
pub mod executor;
pub mod inbound;
pub mod logging;
pub mod membership;
pub mod metrics;
pub mod netlink;
pub mod notify;
pub mod policy;
pub mod services;
pub mod stats;
pub mod transport;
pub mod wire;
pub mod xdp;
