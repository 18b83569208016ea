//! Heartbeat sockets: sending on every configured link, the dedicated sender thread, and
//! the UDP socket receive path used when XDP is unavailable.
//!
//! - [`Transmitter`] owns one UDP socket per [`Link`](crate::config::Link), each bound to
//!   its interface with `SO_BINDTODEVICE`. Every message (the periodic heartbeat and the
//!   daemon's handshakes alike) gets the next sequence number and goes out, identical, on
//!   every link, so each link sees one strictly increasing sequence and a gap on a link is
//!   a loss on that link.
//! - [`SenderThread`] sends a heartbeat every keepalive on absolute CLOCK_MONOTONIC
//!   deadlines, optionally as SCHED_FIFO with memory locked, and measures its own lateness.
//! - [`SocketReceiver`] reads heartbeats from UDP sockets with kernel receive timestamps,
//!   applying the same shape checks (and counting the same [`Counter`] reasons) as the XDP
//!   program.
//!
//! A missing interface never stops the other links: its socket is (re)opened once the
//! interface exists, and the failures are counted per link.
//!
//! [`Counter`]: hb_common::maps::Counter

mod limiter;
mod receiver;
mod schedule;
mod sender;
mod setup;
mod transmitter;

use std::io;

pub use receiver::{EndpointStatus, PeerFilter, SocketReceiver, SocketRxStats};
pub use schedule::{next_tick, Tick};
pub use sender::{make_realtime, RealtimeStatus, SenderStats, SenderThread, SENDER_PRIORITY};
pub use transmitter::{Advert, LinkTxStats, SendOutcome, Transmitter, TransmitterStats};

/// IP version of a heartbeat socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    V4,
    V6,
}

/// What can stop the heartbeat transport from starting.
///
/// A missing interface is not among them: that link is retried while the others run.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("no heartbeat links are configured")]
    NoLinks,
    #[error("keepalive must be longer than zero")]
    ZeroKeepalive,
    #[error("heartbeat link {link}: {step}: {source}")]
    Setup {
        /// The link or endpoint, as `iface` plus what it does.
        link: String,
        /// The setup step that failed (`SO_BINDTODEVICE`, `bind`, ...).
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the socket receiver must be opened inside a tokio runtime")]
    NoRuntime,
    #[error("cannot create the sender thread's timer: {0}")]
    Timer(#[source] nix::Error),
    #[error("cannot start the sender thread: {0}")]
    SpawnThread(#[source] io::Error),
}
