//! The socket receive path: heartbeats from plain UDP sockets with kernel receive
//! timestamps, for when XDP is unavailable or turned off.
//!
//! It applies the checks the XDP program applies (exact length, shape, cluster, known
//! sender) and counts rejects under the same [`Counter`] reasons, so status reads the same
//! in both modes. Its arrivals carry the kernel's receive time (`SO_TIMESTAMPNS`, moved to
//! CLOCK_MONOTONIC), so liveness is judged on the same clock as in XDP mode.

use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hb_common::maps::Counter;
use hb_common::wire::{Heartbeat, PACKET_LEN};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrStorage};
use socket2::Socket;
use tokio::io::unix::AsyncFd;
use tokio::time::Sleep;

use super::limiter::LogLimiter;
use super::setup::{self, SetupError};
use super::{Family, TransportError};
use crate::arrival::{Arrival, RxPath};
use crate::clock;
use crate::config::{Config, Link, LinkKind, Node};

/// How often closed endpoints are retried and open ones checked for a re-created interface.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);
/// Datagrams read from one socket per [`SocketReceiver::drain`]; a flood on one interface
/// cannot hold the decision loop, and what is left is read on the next drain.
const DRAIN_BUDGET: usize = 1024;
/// One more than a heartbeat, so a longer datagram shows as too long.
const RECV_BUFFER: usize = PACKET_LEN + 1;

/// Who may send heartbeats to this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerFilter {
    pub cluster_id: u32,
    /// This node's id: its own packets (looped-back broadcast and multicast) are ignored.
    pub local_id: u32,
    /// Node ids of the other configured nodes.
    pub peers: Vec<u32>,
}

impl PeerFilter {
    pub fn from_config(config: &Config) -> Self {
        Self::new(config.cluster_id, &config.nodes, &config.local_node)
    }

    /// The filter of node `local_node` in a cluster of `nodes`.
    pub fn new(cluster_id: u32, nodes: &[Node], local_node: &str) -> Self {
        let local_id = nodes
            .iter()
            .find(|node| node.name == local_node)
            .map_or_else(
                || hb_common::wire::node_id(local_node.as_bytes()),
                |node| node.id,
            );
        Self {
            cluster_id,
            local_id,
            peers: nodes
                .iter()
                .map(|node| node.id)
                .filter(|&id| id != local_id)
                .collect(),
        }
    }

    fn classify(&self, payload: &[u8]) -> Verdict {
        let packet = match crate::wire::decode(payload, self.cluster_id) {
            Ok(packet) => packet,
            Err(shape) => return Verdict::Drop(Counter::from(shape)),
        };
        let sender = packet.node_id();
        if sender == self.local_id {
            Verdict::Own
        } else if self.peers.contains(&sender) {
            Verdict::Accept(packet)
        } else {
            Verdict::Drop(Counter::DropUnknownPeer)
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Accept(Heartbeat),
    Own,
    Drop(Counter),
}

/// One receive socket's state, for status.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EndpointStatus {
    pub iface: String,
    pub port: u16,
    pub family: Family,
    /// The interface the socket is bound to; `None` while it could not be opened.
    pub ifindex: Option<u32>,
    pub last_error: Option<String>,
}

/// The socket path's counters.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SocketRxStats {
    /// Indexed by `Counter as usize`: the reasons the XDP program counts. `passed` and
    /// `ring_full` stay zero here (the sockets only see their own port; there is no ring).
    pub counters: [u64; Counter::COUNT as usize],
    /// Well-shaped packets from this node itself (looped-back broadcast/multicast).
    pub own_packets: u64,
    /// Accepted datagrams that came without a kernel timestamp and were stamped on
    /// reading instead.
    pub missing_timestamp: u64,
    /// Failed `recvmsg` calls other than "nothing to read".
    pub recv_errors: u64,
    pub endpoints: Vec<EndpointStatus>,
}

impl SocketRxStats {
    pub fn counter(&self, counter: Counter) -> u64 {
        self.counters[counter as usize]
    }

    /// `(name, value)` for every counter, in [`Counter::ALL`] order.
    pub fn named_counters(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Counter::ALL
            .iter()
            .map(|&counter| (counter.name(), self.counter(counter)))
    }
}

/// UDP sockets receiving heartbeats, one per distinct (interface, port, IP version) among
/// the configured links, driven by the daemon's decision loop:
/// await [`readable`](Self::readable), then [`drain`](Self::drain) (and drain again
/// before declaring a peer dead, to act only on what the kernel has really received).
#[derive(Debug)]
pub struct SocketReceiver {
    filter: PeerFilter,
    endpoints: Vec<Endpoint>,
    tally: Tally,
    cmsg: Vec<u8>,
    maintenance: Pin<Box<Sleep>>,
}

#[derive(Debug)]
struct Endpoint {
    iface: String,
    port: u16,
    family: Family,
    /// Multicast groups to join on this interface.
    groups: Vec<IpAddr>,
    open: Option<OpenEndpoint>,
    last_error: Option<String>,
    log: LogLimiter,
}

#[derive(Debug)]
struct OpenEndpoint {
    fd: AsyncFd<Socket>,
    ifindex: u32,
}

#[derive(Debug)]
struct Tally {
    counters: [u64; Counter::COUNT as usize],
    own_packets: u64,
    missing_timestamp: u64,
    recv_errors: u64,
    recv_log: LogLimiter,
}

impl SocketReceiver {
    /// Opens the receive sockets for `links`. Must be called inside a tokio runtime with
    /// I/O and time enabled. An interface that does not exist yet is retried every second;
    /// any other failure (port taken, no permission) is an error.
    pub fn open(links: &[Link], filter: PeerFilter) -> Result<Self, TransportError> {
        if links.is_empty() {
            return Err(TransportError::NoLinks);
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(TransportError::NoRuntime);
        }
        let mut endpoints = endpoints_for(links);
        for endpoint in &mut endpoints {
            match endpoint.try_open() {
                Ok(()) => {}
                Err(error) if error.is_missing_interface() => {
                    tracing::warn!(
                        endpoint = %endpoint.label(),
                        %error,
                        "heartbeat interface missing; listening on it once it appears"
                    );
                    endpoint.last_error = Some(error.to_string());
                }
                Err(error) => {
                    return Err(TransportError::Setup {
                        link: endpoint.label(),
                        step: error.step,
                        source: error.source,
                    })
                }
            }
        }
        Ok(Self {
            filter,
            endpoints,
            tally: Tally {
                counters: [0; Counter::COUNT as usize],
                own_packets: 0,
                missing_timestamp: 0,
                recv_errors: 0,
                recv_log: LogLimiter::default(),
            },
            cmsg: nix::cmsg_space!(nix::sys::time::TimeSpec),
            maintenance: Box::pin(tokio::time::sleep(MAINTENANCE_INTERVAL)),
        })
    }

    /// Waits until a socket may have datagrams (or housekeeping ran). Spurious wake-ups
    /// are possible: [`drain`](Self::drain) then returns 0. Call `drain` after every
    /// return, or this keeps returning at once.
    pub async fn readable(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_readable(cx)).await
    }

    /// The poll form of [`readable`](Self::readable).
    pub fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        for endpoint in &self.endpoints {
            if let Some(open) = &endpoint.open {
                match open.fd.poll_read_ready(cx) {
                    // The guard is dropped without clearing: readiness stays until drain
                    // has read the socket empty.
                    Poll::Ready(Ok(_guard)) => return Poll::Ready(Ok(())),
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Pending => {}
                }
            }
        }
        if self.maintenance.as_mut().poll(cx).is_ready() {
            self.maintain();
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }

    /// Reads every waiting datagram without blocking, appends the well-shaped heartbeats
    /// from configured peers to `out`, counts the rest, and returns how many it appended.
    pub fn drain(&mut self, out: &mut Vec<Arrival>) -> usize {
        if self.maintenance.deadline() <= tokio::time::Instant::now() {
            self.maintain();
        }
        // Readiness is only looked at, never waited for: drain must also find datagrams
        // the reactor has not reported yet, so every socket is read until it is empty.
        let mut cx = Context::from_waker(Waker::noop());
        let mut appended = 0;
        for endpoint in &mut self.endpoints {
            let Some(open) = &endpoint.open else {
                continue;
            };
            let mut guard = match open.fd.poll_read_ready(&mut cx) {
                Poll::Ready(Ok(guard)) => Some(guard),
                _ => None,
            };
            for _ in 0..DRAIN_BUDGET {
                let mut buffer = [0u8; RECV_BUFFER];
                match receive(open.fd.get_ref(), &mut buffer, &mut self.cmsg) {
                    Ok(datagram) => {
                        let payload = &buffer[..datagram.len.min(RECV_BUFFER)];
                        if let Some(arrival) =
                            self.tally
                                .admit(&self.filter, payload, &datagram, open.ifindex)
                        {
                            out.push(arrival);
                            appended += 1;
                        }
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                        // Clears only the readiness this guard saw: an event that arrived
                        // since keeps the socket readable.
                        if let Some(guard) = guard.as_mut() {
                            guard.clear_ready();
                        }
                        break;
                    }
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => {
                        self.tally.recv_errors += 1;
                        if let Some(held_back) =
                            self.tally.recv_log.allow(std::time::Instant::now())
                        {
                            tracing::warn!(
                                iface = %endpoint.iface,
                                %error,
                                held_back,
                                "heartbeat receive failed"
                            );
                        }
                        break;
                    }
                }
            }
        }
        appended
    }

    pub fn stats(&self) -> SocketRxStats {
        SocketRxStats {
            counters: self.tally.counters,
            own_packets: self.tally.own_packets,
            missing_timestamp: self.tally.missing_timestamp,
            recv_errors: self.tally.recv_errors,
            endpoints: self.endpoints.iter().map(Endpoint::status).collect(),
        }
    }

    /// Reopens endpoints whose interface appeared, and reopens those whose interface was
    /// re-created (a bound socket keeps the old interface index and would hear nothing).
    fn maintain(&mut self) {
        let deadline = tokio::time::Instant::now() + MAINTENANCE_INTERVAL;
        self.maintenance.as_mut().reset(deadline);
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        for endpoint in &mut self.endpoints {
            if let Some(open) = &endpoint.open {
                match setup::interface_index(&endpoint.iface) {
                    Ok(index) if index == open.ifindex => continue,
                    Ok(index) => tracing::warn!(
                        endpoint = %endpoint.label(),
                        old = open.ifindex,
                        new = index,
                        "heartbeat interface was re-created; reopening its socket"
                    ),
                    Err(error) => tracing::warn!(
                        endpoint = %endpoint.label(),
                        %error,
                        "heartbeat interface disappeared; listening on it once it returns"
                    ),
                }
                endpoint.open = None;
            }
            match endpoint.try_open() {
                Ok(()) => tracing::info!(
                    endpoint = %endpoint.label(),
                    "heartbeat receive socket open"
                ),
                Err(error) => {
                    if let Some(held_back) = endpoint.log.allow(std::time::Instant::now()) {
                        tracing::warn!(
                            endpoint = %endpoint.label(),
                            %error,
                            held_back,
                            "cannot open heartbeat receive socket"
                        );
                    }
                    endpoint.last_error = Some(error.to_string());
                }
            }
        }
    }
}

impl Endpoint {
    fn label(&self) -> String {
        let family = match self.family {
            Family::V4 => "udp4",
            Family::V6 => "udp6",
        };
        format!("{} {family}/{}", self.iface, self.port)
    }

    fn try_open(&mut self) -> Result<(), SetupError> {
        let (socket, ifindex) = setup::open_rx(&self.iface, self.port, self.family, &self.groups)?;
        // SAFETY: a socket2 `Socket` owns its descriptor, returns that same descriptor from
        // `as_raw_fd` for its whole life and never closes or replaces it; the `AsyncFd` owns
        // the socket, so the descriptor outlives the registration.
        let fd = unsafe { AsyncFd::register(socket) }.map_err(|error| SetupError {
            step: "epoll registration",
            source: error.into_parts().1,
        })?;
        self.open = Some(OpenEndpoint { fd, ifindex });
        self.last_error = None;
        self.log.reset();
        Ok(())
    }

    fn status(&self) -> EndpointStatus {
        EndpointStatus {
            iface: self.iface.clone(),
            port: self.port,
            family: self.family,
            ifindex: self.open.as_ref().map(|open| open.ifindex),
            last_error: self.last_error.clone(),
        }
    }
}

/// One endpoint per distinct (interface, port, IP version), in the order links name them,
/// with the multicast groups of its links.
fn endpoints_for(links: &[Link]) -> Vec<Endpoint> {
    let mut endpoints: Vec<Endpoint> = Vec::new();
    for link in links {
        let family = setup::family_of(&link.kind);
        let index = match endpoints
            .iter()
            .position(|e| e.iface == link.iface && e.port == link.port && e.family == family)
        {
            Some(index) => index,
            None => {
                endpoints.push(Endpoint {
                    iface: link.iface.clone(),
                    port: link.port,
                    family,
                    groups: Vec::new(),
                    open: None,
                    last_error: None,
                    log: LogLimiter::default(),
                });
                endpoints.len() - 1
            }
        };
        if let LinkKind::Mcast { group, .. } = link.kind {
            let groups = &mut endpoints[index].groups;
            if !groups.contains(&group) {
                groups.push(group);
            }
        }
    }
    endpoints
}

/// What `recvmsg` said about one datagram (its bytes are in the caller's buffer).
#[derive(Debug)]
struct Datagram {
    len: usize,
    source: Option<SocketAddr>,
    /// `SO_TIMESTAMPNS`: CLOCK_REALTIME nanoseconds.
    realtime_ns: Option<u64>,
}

fn receive(socket: &Socket, buffer: &mut [u8], cmsg: &mut Vec<u8>) -> io::Result<Datagram> {
    use std::os::fd::AsRawFd;

    let mut iov = [IoSliceMut::new(buffer)];
    let message = recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(cmsg),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC,
    )
    .map_err(io::Error::from)?;
    let mut realtime_ns = None;
    if let Ok(messages) = message.cmsgs() {
        for control in messages {
            if let ControlMessageOwned::ScmTimestampns(ts) = control {
                let secs = u64::try_from(ts.tv_sec()).unwrap_or(0);
                let nanos = u64::try_from(ts.tv_nsec()).unwrap_or(0);
                realtime_ns = Some(secs.saturating_mul(1_000_000_000).saturating_add(nanos));
            }
        }
    }
    Ok(Datagram {
        // With MSG_TRUNC this is the datagram's real length, even when it was cut.
        len: message.bytes,
        source: message.address.as_ref().and_then(socket_addr),
        realtime_ns,
    })
}

fn socket_addr(storage: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = storage.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    storage
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
}

impl Tally {
    /// Counts one datagram; the arrival when it is a well-shaped heartbeat from a peer.
    /// `payload` is what fit in the buffer, `datagram.len` the datagram's real length.
    fn admit(
        &mut self,
        filter: &PeerFilter,
        payload: &[u8],
        datagram: &Datagram,
        ifindex: u32,
    ) -> Option<Arrival> {
        let verdict = if datagram.len == payload.len() {
            filter.classify(payload)
        } else {
            Verdict::Drop(Counter::DropBadLength)
        };
        let packet = match verdict {
            Verdict::Accept(packet) => packet,
            Verdict::Own => {
                self.own_packets += 1;
                return None;
            }
            Verdict::Drop(counter) => {
                self.counters[counter as usize] += 1;
                return None;
            }
        };
        let Some(source) = datagram.source else {
            self.counters[Counter::DropMalformed as usize] += 1;
            return None;
        };
        self.counters[Counter::Accepted as usize] += 1;
        let kernel_ns = match datagram.realtime_ns {
            Some(realtime_ns) => clock::realtime_to_monotonic_ns(realtime_ns),
            None => {
                self.missing_timestamp += 1;
                clock::monotonic_ns()
            }
        };
        Some(Arrival {
            kernel_ns,
            ifindex,
            source,
            packet,
            path: RxPath::Socket,
            woke_agent: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Origin;
    use crate::wire::{build, Header};
    use hb_common::wire::{MessageKind, NodeState, ShapeError};

    const CLUSTER: u32 = 0x00c0_ffee;
    const LOCAL: u32 = 10;
    const PEER: u32 = 20;

    fn filter() -> PeerFilter {
        PeerFilter {
            cluster_id: CLUSTER,
            local_id: LOCAL,
            peers: vec![PEER, 30],
        }
    }

    fn packet(node_id: u32) -> Heartbeat {
        let header = Header {
            cluster_id: CLUSTER,
            node_id,
            generation: 1,
            keepalive_us: 1000,
        };
        let mut packet = build(
            &header,
            MessageKind::Heartbeat,
            NodeState::Active,
            9,
            0,
            0,
            0,
        );
        packet.key_index = 1;
        packet
    }

    fn bytes(packet: &Heartbeat) -> Vec<u8> {
        bytemuck::bytes_of(packet).to_vec()
    }

    fn tally() -> Tally {
        Tally {
            counters: [0; Counter::COUNT as usize],
            own_packets: 0,
            missing_timestamp: 0,
            recv_errors: 0,
            recv_log: LogLimiter::default(),
        }
    }

    #[test]
    fn classifies_like_the_xdp_program() {
        let filter = filter();
        let good = packet(PEER);
        assert_eq!(filter.classify(&bytes(&good)), Verdict::Accept(good));
        assert_eq!(filter.classify(&bytes(&packet(LOCAL))), Verdict::Own);
        assert_eq!(
            filter.classify(&bytes(&packet(99))),
            Verdict::Drop(Counter::DropUnknownPeer)
        );
        assert_eq!(filter.classify(&[]), Verdict::Drop(Counter::DropBadLength));
        assert_eq!(
            filter.classify(&bytes(&good)[1..]),
            Verdict::Drop(Counter::DropBadLength)
        );

        let mut bad = good;
        bad.magic = *b"XXXX";
        assert_eq!(
            filter.classify(&bytes(&bad)),
            Verdict::Drop(Counter::DropBadMagic)
        );
        let mut bad = good;
        bad.version = 9;
        assert_eq!(
            filter.classify(&bytes(&bad)),
            Verdict::Drop(Counter::DropBadVersion)
        );
        let mut bad = good;
        bad.reserved = [0, 0, 0, 1];
        assert_eq!(
            filter.classify(&bytes(&bad)),
            Verdict::Drop(Counter::DropBadField)
        );
        let mut bad = good;
        bad.cluster_id = (CLUSTER + 1).to_be_bytes();
        assert_eq!(
            filter.classify(&bytes(&bad)),
            Verdict::Drop(Counter::DropWrongCluster)
        );
    }

    #[test]
    fn every_shape_error_has_a_distinct_drop_counter() {
        let errors = [
            ShapeError::BadLength,
            ShapeError::BadMagic,
            ShapeError::BadVersion,
            ShapeError::BadField,
            ShapeError::WrongCluster,
        ];
        let counters: Vec<Counter> = errors.iter().map(|&e| Counter::from(e)).collect();
        for (i, counter) in counters.iter().enumerate() {
            assert!(counter.name().starts_with("drop_"), "{counter:?}");
            assert!(!counters[..i].contains(counter), "{counter:?} twice");
            assert_eq!(Counter::ALL[*counter as usize], *counter);
        }
    }

    #[test]
    fn admit_counts_and_stamps() {
        let filter = filter();
        let mut tally = tally();
        let source: SocketAddr = "198.18.0.2:40000".parse().unwrap();
        let good = bytes(&packet(PEER));
        let stamped = Datagram {
            len: good.len(),
            source: Some(source),
            realtime_ns: Some(clock_realtime_ns() - 5_000_000),
        };
        let before = clock::monotonic_ns();
        let arrival = tally.admit(&filter, &good, &stamped, 4).unwrap();
        assert_eq!(
            (arrival.ifindex, arrival.source, arrival.path),
            (4, source, RxPath::Socket)
        );
        assert_eq!(arrival.packet, packet(PEER));
        // Stamped 5 ms before "now": the monotonic stamp is about 5 ms before `before`.
        let age = before.saturating_sub(arrival.kernel_ns);
        assert!((3_000_000..=500_000_000).contains(&age), "age {age} ns");

        let unstamped = Datagram {
            realtime_ns: None,
            ..stamped
        };
        let arrival = tally.admit(&filter, &good, &unstamped, 4).unwrap();
        assert!(arrival.kernel_ns >= before);
        assert_eq!(tally.missing_timestamp, 1);

        let own = bytes(&packet(LOCAL));
        assert!(tally.admit(&filter, &own, &unstamped, 4).is_none());
        assert_eq!(tally.own_packets, 1);

        let truncated = Datagram {
            len: 4000,
            ..unstamped
        };
        assert!(tally
            .admit(&filter, &good[..RECV_BUFFER.min(good.len())], &truncated, 4)
            .is_none());
        let sourceless = Datagram {
            source: None,
            ..unstamped
        };
        assert!(tally.admit(&filter, &good, &sourceless, 4).is_none());

        assert_eq!(tally.counters[Counter::Accepted as usize], 2);
        assert_eq!(tally.counters[Counter::DropBadLength as usize], 1);
        assert_eq!(tally.counters[Counter::DropMalformed as usize], 1);
        assert_eq!(tally.counters.iter().sum::<u64>(), 4);
    }

    fn clock_realtime_ns() -> u64 {
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME).unwrap();
        Duration::from(now).as_nanos() as u64
    }

    fn link(iface: &str, port: u16, kind: LinkKind) -> Link {
        Link {
            iface: iface.into(),
            port,
            kind,
            origin: Origin {
                file: "ha.cf".into(),
                line: 1,
            },
        }
    }

    #[test]
    fn one_endpoint_per_interface_port_and_family() {
        let mcast = |group: &str| LinkKind::Mcast {
            group: group.parse().unwrap(),
            ttl: 1,
            loopback: false,
        };
        let links = [
            link("eth1", 694, LinkKind::Bcast),
            link(
                "eth1",
                694,
                LinkKind::Ucast {
                    peer: "198.18.0.2".parse().unwrap(),
                },
            ),
            link("eth1", 694, mcast("239.0.0.1")),
            link("eth1", 694, mcast("239.0.0.1")),
            link("eth1", 694, mcast("239.0.0.2")),
            link(
                "eth1",
                694,
                LinkKind::Ucast {
                    peer: "2001:2::2".parse().unwrap(),
                },
            ),
            link("eth1", 695, LinkKind::Bcast),
            link("eth2", 694, mcast("ff12::1")),
        ];
        let endpoints = endpoints_for(&links);
        let summary: Vec<(&str, u16, Family, Vec<IpAddr>)> = endpoints
            .iter()
            .map(|e| (e.iface.as_str(), e.port, e.family, e.groups.clone()))
            .collect();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            summary,
            vec![
                (
                    "eth1",
                    694,
                    Family::V4,
                    vec![ip("239.0.0.1"), ip("239.0.0.2")]
                ),
                ("eth1", 694, Family::V6, vec![]),
                ("eth1", 695, Family::V4, vec![]),
                ("eth2", 694, Family::V6, vec![ip("ff12::1")]),
            ]
        );
    }

    #[test]
    fn peer_filter_from_nodes() {
        let nodes = ["alpha", "beta", "gamma"].map(|name| Node {
            name: name.into(),
            id: hb_common::wire::node_id(name.as_bytes()),
        });
        let filter = PeerFilter::new(7, &nodes, "beta");
        let expected = PeerFilter {
            cluster_id: 7,
            local_id: nodes[1].id,
            peers: vec![nodes[0].id, nodes[2].id],
        };
        assert_eq!(filter, expected);
        // A local name missing from the node list (the config loader prevents it) still
        // gets its wire id, and every listed node is a peer.
        let outsider = PeerFilter::new(7, &nodes, "delta");
        assert_eq!(outsider.local_id, hb_common::wire::node_id(b"delta"));
        assert_eq!(outsider.peers.len(), 3);
    }

    #[test]
    fn open_needs_a_runtime_and_links() {
        let links = [link("lo", 694, LinkKind::Bcast)];
        assert!(matches!(
            SocketReceiver::open(&links, filter()),
            Err(TransportError::NoRuntime)
        ));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        assert!(matches!(
            SocketReceiver::open(&[], filter()),
            Err(TransportError::NoLinks)
        ));
    }

    /// Binding to a device needs CAP_NET_RAW; the loopback device exists everywhere.
    #[test]
    fn a_second_listener_on_the_same_port_and_device_is_an_error() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: not root");
            return;
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let links = [link(
            "lo",
            port,
            LinkKind::Ucast {
                peer: "127.0.0.1".parse().unwrap(),
            },
        )];
        let first = SocketReceiver::open(&links, filter()).unwrap();
        assert_eq!(
            first.stats().endpoints[0].ifindex,
            Some(setup::interface_index("lo").unwrap())
        );
        match SocketReceiver::open(&links, filter()) {
            Err(TransportError::Setup { step, source, .. }) => {
                assert_eq!(step, "bind");
                assert_eq!(source.raw_os_error(), Some(libc::EADDRINUSE));
            }
            other => panic!("expected a bind error, got {other:?}"),
        }
    }

    #[test]
    fn missing_interface_is_retried_not_fatal() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        let links = [link("hb-nosuch2", 694, LinkKind::Bcast)];
        let mut receiver = SocketReceiver::open(&links, filter()).unwrap();
        let mut out = Vec::new();
        assert_eq!(receiver.drain(&mut out), 0);
        let stats = receiver.stats();
        assert_eq!(stats.endpoints.len(), 1);
        assert_eq!(stats.endpoints[0].ifindex, None);
        assert!(stats.endpoints[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("interface lookup")));
        assert_eq!(stats.named_counters().count(), Counter::COUNT as usize);
        // Housekeeping wakes `readable` even with nothing to read.
        let woke = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(3), receiver.readable()).await
        });
        assert!(matches!(woke, Ok(Ok(()))), "{woke:?}");
    }
}
