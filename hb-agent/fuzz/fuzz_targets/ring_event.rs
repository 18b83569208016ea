//! The XDP ring-buffer record decoder, `Arrival::from_ring_record`, followed by what the
//! engine does with every arrival: `Authenticator::verify` of its packet.
//!
//! Never panics, and: only records of exactly `size_of::<RingEvent>()` bytes with a known
//! address family decode; a decoded arrival carries the record's time, interface, port,
//! address and packet bytes unchanged, and is marked as coming from the XDP path.
#![no_main]

use std::net::IpAddr;

use hb_agent::arrival::{Arrival, RingEventError, RxPath};
use hb_agent_fuzz::Cluster;
use hb_common::maps::{RingEvent, FAMILY_IPV4, FAMILY_IPV6};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let size = std::mem::size_of::<RingEvent>();
    let arrival = match Arrival::from_ring_record(data) {
        Ok(arrival) => arrival,
        Err(RingEventError::BadSize(len)) => {
            assert_eq!(len, data.len());
            assert_ne!(len, size);
            return;
        }
        Err(RingEventError::BadFamily(family)) => {
            assert_eq!(data.len(), size);
            assert!(family != FAMILY_IPV4 && family != FAMILY_IPV6);
            return;
        }
    };
    assert_eq!(data.len(), size);
    let event: RingEvent = bytemuck::pod_read_unaligned(data);
    assert_eq!(arrival.kernel_ns, event.ts_ns);
    assert_eq!(arrival.ifindex, event.ifindex);
    assert_eq!(arrival.source.port(), event.src_port);
    assert_eq!(arrival.path, RxPath::Xdp);
    assert_eq!(
        bytemuck::bytes_of(&arrival.packet),
        bytemuck::bytes_of(&event.packet)
    );
    match (event.family, arrival.source.ip()) {
        (FAMILY_IPV4, IpAddr::V4(v4)) => assert_eq!(v4.octets(), event.src_addr[..4]),
        (FAMILY_IPV6, IpAddr::V6(v6)) => assert_eq!(v6.octets(), event.src_addr),
        (family, ip) => panic!("family {family} decoded as {ip}"),
    }

    // The engine authenticates every arrival; the kernel only checked its shape.
    let _ = Cluster::get().verifier().verify(&arrival.packet);
});
