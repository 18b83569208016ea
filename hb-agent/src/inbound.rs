//! The receive path in use: the XDP ring buffer when the program is attached, UDP sockets
//! otherwise. The decision loop drives either the same way: wait until readable, drain.

use std::io;

use hb_common::maps::Counter;

use crate::arrival::{Arrival, RxPath};
use crate::transport::SocketReceiver;
use crate::xdp::XdpReceiver;

pub enum Inbound {
    Xdp(XdpReceiver),
    /// With the reason XDP is not used.
    Socket(SocketReceiver, String),
}

impl Inbound {
    pub fn path(&self) -> RxPath {
        match self {
            Inbound::Xdp(_) => RxPath::Xdp,
            Inbound::Socket(..) => RxPath::Socket,
        }
    }

    /// One line for status: where XDP is attached and how, or why sockets are used.
    pub fn describe(&self) -> String {
        match self {
            Inbound::Xdp(xdp) => {
                let attached: Vec<String> = xdp
                    .attachments()
                    .iter()
                    .map(|(iface, mode)| format!("{iface} {}", mode.name()))
                    .collect();
                format!(
                    "XDP on {}; pinned at {}",
                    attached.join(", "),
                    xdp.pin_dir().display()
                )
            }
            Inbound::Socket(_, why) => format!("UDP sockets: {why}"),
        }
    }

    pub async fn readable(&mut self) -> io::Result<()> {
        match self {
            Inbound::Xdp(xdp) => xdp.readable().await.map_err(io::Error::other),
            Inbound::Socket(sockets, _) => sockets.readable().await,
        }
    }

    /// Reads everything pending, without waiting.
    pub fn drain(&mut self, out: &mut Vec<Arrival>) -> usize {
        match self {
            Inbound::Xdp(xdp) => xdp.drain(out),
            Inbound::Socket(sockets, _) => sockets.drain(out),
        }
    }

    /// Receive counters by [`Counter`] reason, the same names in both modes.
    pub fn counters(&self) -> [u64; Counter::COUNT as usize] {
        match self {
            Inbound::Xdp(xdp) => xdp.counters().unwrap_or([0; Counter::COUNT as usize]),
            Inbound::Socket(sockets, _) => sockets.stats().counters,
        }
    }

    /// This node's own packets received back (broadcast or multicast loop). The XDP
    /// program does not list the local node as a peer, so it counts them under
    /// [`Counter::DropUnknownPeer`] instead.
    pub fn own_packets(&self) -> u64 {
        match self {
            Inbound::Xdp(_) => 0,
            Inbound::Socket(sockets, _) => sockets.stats().own_packets,
        }
    }
}
