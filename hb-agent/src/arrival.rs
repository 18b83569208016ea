//! A heartbeat as the agent receives it, from either receive path: the XDP ring buffer or
//! the UDP socket fallback. Both stamp it with the kernel's CLOCK_MONOTONIC arrival time.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hb_common::maps::{RingEvent, EVENT_WOKE_AGENT, FAMILY_IPV4, FAMILY_IPV6};
use hb_common::wire::Heartbeat;

/// Which receive path delivered an [`Arrival`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RxPath {
    Xdp,
    Socket,
}

impl RxPath {
    pub fn name(self) -> &'static str {
        match self {
            RxPath::Xdp => "xdp",
            RxPath::Socket => "socket",
        }
    }
}

/// One well-shaped (not yet authenticated) heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    /// Kernel arrival time, CLOCK_MONOTONIC nanoseconds (`bpf_ktime_get_ns` in XDP mode,
    /// `SO_TIMESTAMPNS` converted to the monotonic clock in socket mode).
    pub kernel_ns: u64,
    pub ifindex: u32,
    pub source: SocketAddr,
    pub packet: Heartbeat,
    pub path: RxPath,
    /// It woke the agent when it arrived (always in socket mode). In XDP mode routine
    /// repeats do not: they wait in the ring for the agent's next wake-up, so only these
    /// measure how fast the agent answers the kernel.
    pub woke_agent: bool,
}

/// A ring-buffer record that is not a [`RingEvent`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RingEventError {
    #[error("ring event of {0} bytes, expected {expected}", expected = std::mem::size_of::<RingEvent>())]
    BadSize(usize),
    #[error("ring event with unknown address family {0}")]
    BadFamily(u8),
}

impl Arrival {
    /// Decodes one ring-buffer record written by the XDP program.
    pub fn from_ring_record(record: &[u8]) -> Result<Self, RingEventError> {
        let event: RingEvent = bytemuck::try_pod_read_unaligned(record)
            .map_err(|_| RingEventError::BadSize(record.len()))?;
        let ip = match event.family {
            FAMILY_IPV4 => {
                let [a, b, c, d, ..] = event.src_addr;
                IpAddr::V4(Ipv4Addr::new(a, b, c, d))
            }
            FAMILY_IPV6 => IpAddr::V6(Ipv6Addr::from(event.src_addr)),
            other => return Err(RingEventError::BadFamily(other)),
        };
        Ok(Self {
            kernel_ns: event.ts_ns,
            ifindex: event.ifindex,
            source: SocketAddr::new(ip, event.src_port),
            packet: event.packet,
            path: RxPath::Xdp,
            woke_agent: event.flags & EVENT_WOKE_AGENT != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytemuck::Zeroable;

    fn record(family: u8) -> RingEvent {
        let mut event = RingEvent::zeroed();
        event.ts_ns = 42;
        event.ifindex = 7;
        event.src_port = 694;
        event.family = family;
        event.src_addr[..4].copy_from_slice(&[198, 18, 0, 1]);
        event
    }

    #[test]
    fn decodes_ipv4_record() {
        let event = record(FAMILY_IPV4);
        let arrival = Arrival::from_ring_record(bytemuck::bytes_of(&event)).unwrap();
        assert_eq!(arrival.kernel_ns, 42);
        assert_eq!(arrival.ifindex, 7);
        assert_eq!(arrival.source, "198.18.0.1:694".parse().unwrap());
        assert_eq!(arrival.path, RxPath::Xdp);
        assert!(!arrival.woke_agent);
        let mut woke = event;
        woke.flags = EVENT_WOKE_AGENT;
        assert!(
            Arrival::from_ring_record(bytemuck::bytes_of(&woke))
                .unwrap()
                .woke_agent
        );
    }

    #[test]
    fn decodes_ipv6_record() {
        let mut event = record(FAMILY_IPV6);
        event.src_addr = "2001:2::1".parse::<Ipv6Addr>().unwrap().octets();
        let arrival = Arrival::from_ring_record(bytemuck::bytes_of(&event)).unwrap();
        assert_eq!(arrival.source, "[2001:2::1]:694".parse().unwrap());
    }

    #[test]
    fn rejects_wrong_size_and_family() {
        let event = record(FAMILY_IPV4);
        let bytes = bytemuck::bytes_of(&event);
        assert_eq!(
            Arrival::from_ring_record(&bytes[..bytes.len() - 1]),
            Err(RingEventError::BadSize(bytes.len() - 1))
        );
        assert_eq!(
            Arrival::from_ring_record(&[]),
            Err(RingEventError::BadSize(0))
        );
        let bad = record(9);
        assert_eq!(
            Arrival::from_ring_record(bytemuck::bytes_of(&bad)),
            Err(RingEventError::BadFamily(9))
        );
    }
}
