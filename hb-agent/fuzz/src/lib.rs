//! What the `wire` and `ring_event` fuzz targets share with their seed generator
//! (`examples/write_seeds.rs`): one cluster with fixed keys, and the real packets and ring
//! records that cluster's agents exchange.
//!
//! The keys are those of Debian's sample `authkeys` (one of each method: crc, sha1, md5) and
//! the nodes those of the `puppet-cookbook` ha.cf seed, so every seed is a packet a real
//! configuration produces, and the targets verify MACs with the same keys the seeds were
//! sealed with (mutations start from packets that authenticate).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::OnceLock;

use hb_agent::config::{AuthMethod, Node};
use hb_agent::wire::{Authenticator, Header};
use hb_common::maps::{RingEvent, FAMILY_IPV4, FAMILY_IPV6};
use hb_common::wire::{Heartbeat, MessageKind, NodeState, BROADCAST_NODE};

/// Debian's sample `authkeys` (heartbeat's `doc/authkeys`, uncommented): key 1 crc, key 2
/// sha1, key 3 md5.
pub const AUTHKEYS: &[u8] = b"auth 1\n1 crc\n2 sha1 HI!\n3 md5 Hello!\n";

/// The `node` lines of the `puppet-cookbook` ha.cf seed.
pub const NODE_NAMES: [&str; 2] = ["cookbook", "cookbook2"];

/// The keys of [`AUTHKEYS`], as one authenticator per key (each sealing with its own key
/// and verifying with all of them, as during a key rotation).
pub struct Cluster {
    pub cluster_id: u32,
    pub nodes: Vec<Node>,
    /// `(key index, method, authenticator whose active key that is)`, in index order.
    pub sealers: Vec<(u8, AuthMethod, Authenticator)>,
}

impl Cluster {
    /// The cluster every target and seed uses; built once per process.
    pub fn get() -> &'static Cluster {
        static CLUSTER: OnceLock<Cluster> = OnceLock::new();
        CLUSTER.get_or_init(Cluster::build)
    }

    fn build() -> Cluster {
        let nodes: Vec<Node> = NODE_NAMES
            .iter()
            .map(|name| Node {
                name: (*name).to_owned(),
                id: hb_common::wire::node_id(name.as_bytes()),
            })
            .collect();
        let cluster_id = hb_agent::config::derived_cluster_id(&nodes);
        let parsed = hb_agent::config::parse_authkeys(AUTHKEYS, Path::new("authkeys"));
        let keys = parsed
            .keys
            .unwrap_or_else(|| panic!("sample authkeys does not parse: {:?}", parsed.diagnostics));
        let sealers = keys
            .keys
            .iter()
            .map(|(index, key)| {
                let mut rotated = keys.clone();
                rotated.active = *index;
                let auth = Authenticator::new(&rotated)
                    .unwrap_or_else(|e| panic!("sample authkeys key {index}: {e}"));
                (*index, key.method, auth)
            })
            .collect();
        Cluster {
            cluster_id,
            nodes,
            sealers,
        }
    }

    /// Verifies with every configured key (the receiving side of any node).
    pub fn verifier(&self) -> &Authenticator {
        &self.sealers[0].2
    }
}

/// Every message kind, with the sender state and bitmaps it is sent with.
const MESSAGES: [(MessageKind, NodeState, u64, u64); 6] = [
    (MessageKind::Heartbeat, NodeState::Starting, 0, 0),
    (MessageKind::Heartbeat, NodeState::Active, 0b1, 0),
    (MessageKind::StandbyRequest, NodeState::Standby, 0b11, 0b11),
    (MessageKind::ReleaseDone, NodeState::Standby, 0, 0b11),
    (MessageKind::Takeover, NodeState::Active, 0b10, 0b01),
    (MessageKind::Leaving, NodeState::Leaving, 0, 0),
];

/// One named seed.
pub struct Seed {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Heartbeats as `cookbook`'s transmitter sends them (`wire::build`, then `seal`): every
/// message kind under every key of [`AUTHKEYS`].
pub fn heartbeats() -> Vec<(String, Heartbeat)> {
    let cluster = Cluster::get();
    let (sender, peer) = (&cluster.nodes[0], &cluster.nodes[1]);
    let header = Header {
        cluster_id: cluster.cluster_id,
        node_id: sender.id,
        // Generations are wall-clock seconds at start; sequence numbers count up from 1.
        generation: 1_767_225_600,
        keepalive_us: 1_000_000,
    };
    let mut packets = Vec::new();
    for (index, method, auth) in &cluster.sealers {
        for (seq, (kind, state, held, arg)) in (1u64..).zip(MESSAGES) {
            let dest = if kind == MessageKind::Heartbeat || kind == MessageKind::Leaving {
                BROADCAST_NODE
            } else {
                peer.id
            };
            let mut packet = hb_agent::wire::build(&header, kind, state, seq, held, arg, dest);
            auth.seal(&mut packet);
            let name = format!(
                "key{index}-{}-{}-{}",
                method_name(*method),
                kind_name(kind),
                state.name()
            );
            packets.push((name, packet));
        }
    }
    packets
}

/// Seeds of the `wire` target: the UDP payloads of [`heartbeats`].
pub fn wire_seeds() -> Vec<Seed> {
    heartbeats()
        .into_iter()
        .map(|(name, packet)| Seed {
            name,
            bytes: bytemuck::bytes_of(&packet).to_vec(),
        })
        .collect()
}

/// Seeds of the `ring_event` target: [`heartbeats`] as the XDP program hands them to the
/// agent (a [`RingEvent`], laid out by the shared `#[repr(C)]` struct exactly as the kernel
/// writes it), from an IPv4 and an IPv6 link.
pub fn ring_seeds() -> Vec<Seed> {
    let sources: [(&str, u8, IpAddr, u32); 2] = [
        (
            "v4",
            FAMILY_IPV4,
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
            2,
        ),
        (
            "v6",
            FAMILY_IPV6,
            IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1)),
            3,
        ),
    ];
    let mut seeds = Vec::new();
    for (n, (name, packet)) in (0u64..).zip(heartbeats()) {
        // Alternate the links so both families carry every kind and key between them.
        let (tag, family, address, ifindex) = sources[(n % 2) as usize];
        let event = RingEvent {
            // CLOCK_MONOTONIC of a machine up for about an hour, one keepalive apart.
            ts_ns: 3_600_000_000_000 + n * 1_000_000_000,
            ifindex,
            src_port: hb_common::wire::DEFAULT_UDP_PORT,
            family,
            flags: 0,
            src_addr: match address {
                IpAddr::V4(v4) => {
                    let mut bytes = [0; 16];
                    bytes[..4].copy_from_slice(&v4.octets());
                    bytes
                }
                IpAddr::V6(v6) => v6.octets(),
            },
            packet,
        };
        seeds.push(Seed {
            name: format!("{tag}-{name}"),
            bytes: bytemuck::bytes_of(&event).to_vec(),
        });
    }
    seeds
}

fn method_name(method: AuthMethod) -> &'static str {
    match method {
        AuthMethod::Crc => "crc",
        AuthMethod::Md5 => "md5",
        AuthMethod::Sha1 => "sha1",
    }
}

fn kind_name(kind: MessageKind) -> &'static str {
    match kind {
        MessageKind::Heartbeat => "heartbeat",
        MessageKind::StandbyRequest => "standby-request",
        MessageKind::ReleaseDone => "release-done",
        MessageKind::Takeover => "takeover",
        MessageKind::Leaving => "leaving",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hb_agent::arrival::Arrival;

    #[test]
    fn every_wire_seed_decodes_and_authenticates() {
        let cluster = Cluster::get();
        let seeds = wire_seeds();
        assert_eq!(seeds.len(), 3 * MESSAGES.len());
        for seed in &seeds {
            let packet = hb_agent::wire::decode(&seed.bytes, cluster.cluster_id)
                .unwrap_or_else(|e| panic!("{}: {e:?}", seed.name));
            assert_eq!(cluster.verifier().verify(&packet), Ok(()), "{}", seed.name);
        }
    }

    #[test]
    fn every_ring_seed_decodes_to_its_heartbeat() {
        let packets = heartbeats();
        let seeds = ring_seeds();
        assert_eq!(seeds.len(), packets.len());
        for (seed, (_, packet)) in seeds.iter().zip(&packets) {
            let arrival = Arrival::from_ring_record(&seed.bytes)
                .unwrap_or_else(|e| panic!("{}: {e}", seed.name));
            assert_eq!(&arrival.packet, packet, "{}", seed.name);
            assert_eq!(arrival.source.port(), 694);
        }
        assert!(seeds.iter().any(|s| s.name.starts_with("v6-")));
    }

    #[test]
    fn seed_names_are_unique() {
        let mut names: Vec<String> = wire_seeds()
            .into_iter()
            .chain(ring_seeds())
            .map(|s| s.name)
            .collect();
        let all = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all);
    }
}
