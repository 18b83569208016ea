//! The heartbeat wire decoder, as the socket receive path and the engine run it on a UDP
//! payload: `wire::decode` (length and `Heartbeat::check_shape`, the XDP program's checks),
//! the header fields, then `Authenticator::verify` with the keys of every method.
//!
//! Never panics, and: decode accepts exactly the 80-byte payloads `check_shape` accepts; an
//! accepted packet's fields are in range; a packet naming a key we lack is `UnknownKey`; and
//! a packet that authenticates is byte for byte what its sender's `seal` produces (no second
//! MAC encoding is accepted for the same content).
#![no_main]

use hb_agent::wire::AuthError;
use hb_agent_fuzz::Cluster;
use hb_common::wire::{Heartbeat, MessageKind, NodeState, ShapeError, PACKET_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cluster = Cluster::get();
    let decoded = hb_agent::wire::decode(data, cluster.cluster_id);

    if data.len() != PACKET_LEN {
        assert_eq!(decoded, Err(ShapeError::BadLength));
        return;
    }
    let raw: Heartbeat = bytemuck::pod_read_unaligned(data);
    assert_eq!(
        decoded.map(|_| ()),
        raw.check_shape(cluster.cluster_id),
        "decode and the kernel's shape check disagree"
    );
    let Ok(packet) = decoded else { return };
    assert_eq!(bytemuck::bytes_of(&packet), data);
    assert!(MessageKind::from_u8(packet.kind).is_some());
    assert!(NodeState::from_u8(packet.state).is_some());
    assert!((1..=15).contains(&packet.key_index));
    assert_eq!(packet.cluster_id(), cluster.cluster_id);
    // What the engine and membership read from the header.
    std::hint::black_box((
        packet.node_id(),
        packet.dest_node(),
        packet.keepalive_us(),
        packet.generation(),
        packet.seq(),
        packet.held(),
        packet.arg(),
    ));

    let verdict = cluster.verifier().verify(&packet);
    let sealer = cluster
        .sealers
        .iter()
        .find(|(index, _, _)| *index == packet.key_index);
    match (sealer, verdict) {
        (None, Err(AuthError::UnknownKey(index))) => assert_eq!(index, packet.key_index),
        (None, other) => panic!("key {} is not configured, got {other:?}", packet.key_index),
        (Some(_), Err(AuthError::UnknownKey(index))) => panic!("configured key {index} unknown"),
        (Some(_), Err(AuthError::BadMac)) => {}
        (Some((_, method, auth)), Ok(())) => {
            let mut resealed = packet;
            auth.seal(&mut resealed);
            assert_eq!(
                resealed, packet,
                "{method:?} accepted a packet its sender would not have produced"
            );
        }
    }
});
