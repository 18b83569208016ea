//! Layouts of the BPF maps the XDP program shares with the agent, and of the ring-buffer
//! event. Map names are what `bpftool` shows (the kernel keeps at most 15 bytes).

use crate::wire::{Heartbeat, ShapeError};

/// `Array<XdpConfig>` with one entry, written by the agent before attaching.
pub const CONFIG_MAP: &str = "HB_CONFIG";
/// `HashMap<u32 node id, PeerStats>`: one entry per configured peer, inserted by the agent.
/// A heartbeat from a node id that is not a key here is dropped as [`Counter::UnknownPeer`].
pub const PEERS_MAP: &str = "HB_PEERS";
/// `HashMap<PeerLinkKey, LinkStats>`: per peer and interface, updated by the XDP program.
pub const PEER_LINKS_MAP: &str = "HB_PEER_LINKS";
/// `PerCpuArray<u64>` indexed by [`Counter`].
pub const COUNTERS_MAP: &str = "HB_COUNTERS";
/// `RingBuf` of [`RingEvent`].
pub const EVENTS_MAP: &str = "HB_EVENTS";
/// The XDP program's name.
pub const PROGRAM: &str = "hb_xdp";

/// Most UDP ports one agent listens on (`udpport` may differ per link).
pub const MAX_UDP_PORTS: usize = 8;
/// Entries reserved for [`PEERS_MAP`] and [`PEER_LINKS_MAP`].
pub const MAX_PEERS: u32 = 64;
pub const MAX_PEER_LINKS: u32 = 1024;
/// Ring buffer size in bytes (a power of two, a multiple of the page size): room for
/// about 2 300 events, several seconds of heartbeats from a large cluster.
pub const EVENTS_BYTES: u32 = 256 * 1024;

/// What the XDP program needs to know about this cluster.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct XdpConfig {
    /// Heartbeats carrying another cluster id are dropped.
    pub cluster_id: u32,
    /// How many entries of `udp_ports` are in use.
    pub n_ports: u32,
    /// Destination ports that carry heartbeats, host byte order; unused entries are 0.
    pub udp_ports: [u16; MAX_UDP_PORTS],
}

impl XdpConfig {
    #[inline(always)]
    pub fn is_heartbeat_port(&self, port: u16) -> bool {
        let mut i = 0;
        while i < MAX_UDP_PORTS {
            if (i as u32) < self.n_ports && self.udp_ports[i] == port {
                return true;
            }
            i += 1;
        }
        false
    }
}

/// What the kernel last saw of one peer, on any link. Informational: the agent decides
/// liveness only from heartbeats it has authenticated.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct PeerStats {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) of the last well-shaped heartbeat.
    pub last_seen_ns: u64,
    pub generation: u64,
    pub seq: u64,
    pub packets: u64,
    pub last_ifindex: u32,
    /// [`advert_digest`] of the last heartbeat: a repeat of it carries no news, and the
    /// XDP program lets it wait in the ring instead of waking the agent.
    pub advert_digest: u32,
}

/// A digest of what a heartbeat says beyond "still here": its kind, state, held groups and
/// argument. Equal digests in consecutive heartbeats of one peer mean (but for a collision,
/// which only delays the agent to its next wake-up) that nothing changed.
#[inline(always)]
pub fn advert_digest(packet: &Heartbeat) -> u32 {
    let held = packet.held();
    let arg = packet.arg();
    let mut digest = (packet.kind as u32) << 8 | packet.state as u32;
    digest = digest.wrapping_mul(0x9e37_79b1) ^ held as u32;
    digest = digest.wrapping_mul(0x85eb_ca77) ^ (held >> 32) as u32;
    digest = digest.wrapping_mul(0xc2b2_ae3d) ^ arg as u32;
    digest = digest.wrapping_mul(0x27d4_eb2f) ^ (arg >> 32) as u32;
    digest
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct PeerLinkKey {
    pub node_id: u32,
    pub ifindex: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct LinkStats {
    pub last_seen_ns: u64,
    pub packets: u64,
}

/// [`RingEvent::flags`]: the XDP program woke the agent for this event (it carried news,
/// or it is the sampled one of [`WAKE_SAMPLE_EVERY`]); without it the event waited in the
/// ring for the agent's next wake-up.
pub const EVENT_WOKE_AGENT: u8 = 1;
/// One routine heartbeat in this many (per peer) wakes the agent anyway, so that the
/// kernel-to-agent delay of the wake-up path stays measured while nothing changes.
pub const WAKE_SAMPLE_EVERY: u64 = 32;

/// IP version of [`RingEvent::src_addr`].
pub const FAMILY_IPV4: u8 = 4;
pub const FAMILY_IPV6: u8 = 6;

/// One well-shaped heartbeat handed from the kernel to the agent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct RingEvent {
    /// Kernel arrival time, `bpf_ktime_get_ns` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    pub ifindex: u32,
    pub src_port: u16,
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`].
    pub family: u8,
    /// [`EVENT_WOKE_AGENT`] or 0.
    pub flags: u8,
    /// IPv4 in the first four bytes (rest zero), or IPv6.
    pub src_addr: [u8; 16],
    pub packet: Heartbeat,
}

const _: () = assert!(core::mem::size_of::<RingEvent>() == 112);

/// Indexes into [`COUNTERS_MAP`]. Every packet the XDP program looks at lands in exactly
/// one of these.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Counter {
    /// Not UDP to a heartbeat port: passed to the stack untouched.
    Passed = 0,
    /// Well-shaped heartbeat from a known peer: recorded, sent to the agent, consumed.
    Accepted = 1,
    DropBadLength = 2,
    DropBadMagic = 3,
    DropBadVersion = 4,
    DropBadField = 5,
    DropWrongCluster = 6,
    DropUnknownPeer = 7,
    /// Headers cut short or otherwise unparseable (IP fragments of a heartbeat included).
    DropMalformed = 8,
    /// Accepted, but the ring buffer was full: the agent is not keeping up.
    RingFull = 9,
}

impl Counter {
    pub const COUNT: u32 = 10;
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::Passed,
        Counter::Accepted,
        Counter::DropBadLength,
        Counter::DropBadMagic,
        Counter::DropBadVersion,
        Counter::DropBadField,
        Counter::DropWrongCluster,
        Counter::DropUnknownPeer,
        Counter::DropMalformed,
        Counter::RingFull,
    ];

    /// Stable snake_case name, used in status output and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Passed => "passed",
            Counter::Accepted => "accepted",
            Counter::DropBadLength => "drop_bad_length",
            Counter::DropBadMagic => "drop_bad_magic",
            Counter::DropBadVersion => "drop_bad_version",
            Counter::DropBadField => "drop_bad_field",
            Counter::DropWrongCluster => "drop_wrong_cluster",
            Counter::DropUnknownPeer => "drop_unknown_peer",
            Counter::DropMalformed => "drop_malformed",
            Counter::RingFull => "ring_full",
        }
    }
}

impl From<ShapeError> for Counter {
    #[inline(always)]
    fn from(error: ShapeError) -> Self {
        match error {
            ShapeError::BadLength => Counter::DropBadLength,
            ShapeError::BadMagic => Counter::DropBadMagic,
            ShapeError::BadVersion => Counter::DropBadVersion,
            ShapeError::BadField => Counter::DropBadField,
            ShapeError::WrongCluster => Counter::DropWrongCluster,
        }
    }
}

#[cfg(feature = "user")]
mod user {
    use super::*;

    // SAFETY: each type is #[repr(C)], made only of integers and integer arrays, with every
    // padding byte spelled out as a field (bytemuck's derive checks that), so any bit
    // pattern is a valid value, as aya requires of map keys and values.
    unsafe impl aya::Pod for XdpConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PeerStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PeerLinkKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for LinkStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for RingEvent {}
}
