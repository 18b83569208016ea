//! The heartbeat packet: one fixed-size UDP payload, the same for every message kind.
//!
//! All multi-byte fields are big-endian byte arrays. That keeps the struct at alignment 1
//! (no implicit padding, readable at any offset inside a packet) and makes the byte order
//! explicit at every use.
//!
//! ```text
//!  0       4   5   6   7   8            12           16           20           24
//!  +-------+---+---+---+---+------------+------------+------------+------------+
//!  | magic |ver|knd|st |key| cluster_id |  node_id   | dest_node  |keepalive_us|
//!  +-------+---+---+---+---+------------+------------+------------+------------+
//!  24                      32                      40                      48
//!  |      generation       |          seq          |         held          |
//!  48                      56                                      76      80
//!  |          arg          |            mac (20 bytes)             |reserved|
//! ```
//!
//! The MAC covers all 80 bytes with `mac` zeroed. Only the shape (magic, version, length,
//! cluster, known sender, zero reserved bytes) is checked in the kernel; authentication,
//! generation and sequence checks happen in the agent.

use core::mem::size_of;

/// `"HBHP"`: hb heartbeat packet.
pub const MAGIC: [u8; 4] = *b"HBHP";
/// Bumped on any change of layout or meaning.
pub const VERSION: u8 = 1;
/// Heartbeat's registered port, used unless `udpport` says otherwise.
pub const DEFAULT_UDP_PORT: u16 = 694;
/// Room for the largest MAC we produce (HMAC-SHA1). Shorter MACs are zero-padded.
pub const MAC_LEN: usize = 20;
/// The exact UDP payload length of every hb packet.
pub const PACKET_LEN: usize = size_of::<Heartbeat>();
/// `dest_node` value meaning "every node".
pub const BROADCAST_NODE: u32 = 0;
/// Resource groups are numbered by their position in `haresources`; one bit each.
pub const MAX_GROUPS: usize = 64;

/// One hb packet, exactly as it is on the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Heartbeat {
    pub magic: [u8; 4],
    pub version: u8,
    /// A [`MessageKind`].
    pub kind: u8,
    /// The sender's [`NodeState`].
    pub state: u8,
    /// The `authkeys` index (1–15) of the key that made `mac`.
    pub key_index: u8,
    pub cluster_id: [u8; 4],
    /// [`node_id`] of the sender's name.
    pub node_id: [u8; 4],
    /// The node a handshake message is for, or [`BROADCAST_NODE`].
    pub dest_node: [u8; 4],
    /// The sender's keepalive interval, so peers can warn about mismatched timers.
    pub keepalive_us: [u8; 4],
    /// Grows on every start of the sender (persisted), so restarts and replays are told apart.
    pub generation: [u8; 8],
    /// Grows with every packet within one generation.
    pub seq: [u8; 8],
    /// Bitmap of the resource groups the sender holds or is acquiring.
    pub held: [u8; 8],
    /// Message-specific bitmap of resource groups (see [`MessageKind`]).
    pub arg: [u8; 8],
    pub mac: [u8; MAC_LEN],
    /// Must be zero in this version.
    pub reserved: [u8; 4],
}

const _: () = assert!(PACKET_LEN == 80);

/// What a packet asks of its receivers. Every kind also refreshes the sender's liveness.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// The periodic "I am alive", sent every keepalive on every link.
    Heartbeat = 1,
    /// "Take these groups (`arg`) from me": `hb-agent standby`.
    StandbyRequest = 2,
    /// "I have released these groups (`arg`); acquire them now."
    ReleaseDone = 3,
    /// "Release these groups (`arg`) to me": `hb-agent takeover` and failback.
    Takeover = 4,
    /// "I have released everything and am shutting down": take over at once.
    Leaving = 5,
}

impl MessageKind {
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Heartbeat),
            2 => Some(Self::StandbyRequest),
            3 => Some(Self::ReleaseDone),
            4 => Some(Self::Takeover),
            5 => Some(Self::Leaving),
            _ => None,
        }
    }
}

/// The sender's view of itself.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeState {
    /// Started, still within `initdead`, holds nothing yet.
    Starting = 1,
    /// Running normally (holding resources or not).
    Active = 2,
    /// Asked to hold nothing (`hb-agent standby`).
    Standby = 3,
    /// Shutting down.
    Leaving = 4,
}

impl NodeState {
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Starting),
            2 => Some(Self::Active),
            3 => Some(Self::Standby),
            4 => Some(Self::Leaving),
            _ => None,
        }
    }

    /// Lowercase name, as status output shows it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Active => "active",
            Self::Standby => "standby",
            Self::Leaving => "leaving",
        }
    }
}

/// Why a packet on a heartbeat port was not a well-shaped hb packet.
///
/// The XDP program counts each reason in [`crate::maps::Counter`]; the socket fallback
/// counts the same reasons in userspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShapeError {
    /// The UDP payload is not exactly [`PACKET_LEN`] bytes.
    BadLength,
    BadMagic,
    BadVersion,
    /// Unknown message kind, unknown sender state, or nonzero reserved bytes.
    BadField,
    /// Another cluster's heartbeat on a shared segment.
    WrongCluster,
}

impl Heartbeat {
    pub const fn cluster_id(&self) -> u32 {
        u32::from_be_bytes(self.cluster_id)
    }
    pub const fn node_id(&self) -> u32 {
        u32::from_be_bytes(self.node_id)
    }
    pub const fn dest_node(&self) -> u32 {
        u32::from_be_bytes(self.dest_node)
    }
    pub const fn keepalive_us(&self) -> u32 {
        u32::from_be_bytes(self.keepalive_us)
    }
    pub const fn generation(&self) -> u64 {
        u64::from_be_bytes(self.generation)
    }
    pub const fn seq(&self) -> u64 {
        u64::from_be_bytes(self.seq)
    }
    pub const fn held(&self) -> u64 {
        u64::from_be_bytes(self.held)
    }
    pub const fn arg(&self) -> u64 {
        u64::from_be_bytes(self.arg)
    }

    /// Checks everything that can be checked without a key: the checks the XDP program
    /// makes in the kernel, and the socket fallback makes in userspace.
    ///
    /// Written with plain integer compares (no slice compares) so that it compiles to BPF
    /// without `memcmp`.
    #[inline(always)]
    pub fn check_shape(&self, cluster_id: u32) -> Result<(), ShapeError> {
        if u32::from_be_bytes(self.magic) != u32::from_be_bytes(MAGIC) {
            return Err(ShapeError::BadMagic);
        }
        if self.version != VERSION {
            return Err(ShapeError::BadVersion);
        }
        if MessageKind::from_u8(self.kind).is_none()
            || NodeState::from_u8(self.state).is_none()
            || u32::from_be_bytes(self.reserved) != 0
            || self.key_index == 0
            || self.key_index > 15
        {
            return Err(ShapeError::BadField);
        }
        if self.cluster_id() != cluster_id {
            return Err(ShapeError::WrongCluster);
        }
        Ok(())
    }
}

/// The node id carried on the wire for a node name: 32-bit FNV-1a of the name, never 0
/// (0 is [`BROADCAST_NODE`]). Every node computes the same id from the shared `node` lines;
/// the config loader rejects a cluster whose names collide.
pub const fn node_id(name: &[u8]) -> u32 {
    let id = fnv1a32(name, FNV_OFFSET);
    if id == BROADCAST_NODE {
        1
    } else {
        id
    }
}

const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

/// 32-bit FNV-1a, continuing from `state` (start with the FNV offset basis).
pub const fn fnv1a32(bytes: &[u8], state: u32) -> u32 {
    let mut hash = state;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u32;
        hash = hash.wrapping_mul(FNV_PRIME);
        i += 1;
    }
    hash
}

/// The FNV-1a offset basis, to start a [`fnv1a32`] chain.
pub const FNV1A32_START: u32 = FNV_OFFSET;
