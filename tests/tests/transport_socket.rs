//! Privileged: heartbeats over real sockets between two namespaces, through a bridge.
//!
//! Node A (`alpha`) runs a `Transmitter` and its `SenderThread`; node B (`beta`) runs a
//! `SocketReceiver` on a single-threaded tokio runtime. Both are plugged into one bridge in a
//! switch namespace (198.18.71.0/24; 2001:2:0:71::/64, in the IPv6 benchmarking range, for
//! the IPv6 case). Each link kind gets its own lab and port. The multicast group is an
//! administratively scoped one (239.255.71.1): it never leaves the lab's bridge.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hb_agent::arrival::{Arrival, RxPath};
use hb_agent::clock::monotonic_ns;
use hb_agent::config::{AuthKey, AuthKeys, AuthMethod, Link, LinkKind, Origin, Secret};
use hb_agent::transport::{
    Advert, PeerFilter, SenderStats, SenderThread, SocketReceiver, SocketRxStats, Transmitter,
    TransmitterStats,
};
use hb_agent::wire::{build, Authenticator, Header};
use hb_common::maps::Counter;
use hb_common::wire::{node_id, Heartbeat, MessageKind, NodeState};
use hb_tests::{require_root, wait_until, Bridge, Lab, Netns};

const CLUSTER: u32 = 0x7e57_0071;
const GENERATION: u64 = 41;
const KEEPALIVE: Duration = Duration::from_millis(20);
/// How long the receiver listens while the sender runs.
const WINDOW: Duration = Duration::from_secs(1);
const IFACE: &str = "hb0";
const A_CIDR: &str = "198.18.71.1/24";
const B_CIDR: &str = "198.18.71.2/24";
const A_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 71, 1);
const B_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 71, 2);
const A_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0x71, 0, 0, 0, 1);
const B_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0x71, 0, 0, 0, 2);
const GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 71, 1);
const SETTLE: Duration = Duration::from_secs(10);

fn alpha() -> u32 {
    node_id(b"alpha")
}

fn beta() -> u32 {
    node_id(b"beta")
}

fn auth() -> Authenticator {
    let keys = AuthKeys {
        active: 1,
        keys: vec![(
            1,
            AuthKey {
                method: AuthMethod::Sha1,
                secret: Secret(b"transport test key".to_vec()),
            },
        )],
    };
    Authenticator::new(&keys).expect("authkeys")
}

fn link(port: u16, kind: LinkKind) -> Link {
    Link {
        iface: IFACE.into(),
        port,
        kind,
        origin: Origin {
            file: "ha.cf".into(),
            line: 1,
        },
    }
}

/// What a node with id `local` accepts: the other of the two.
fn filter(local: u32) -> PeerFilter {
    let peer = if local == alpha() { beta() } else { alpha() };
    PeerFilter {
        cluster_id: CLUSTER,
        local_id: local,
        peers: vec![peer],
    }
}

struct Topology {
    lab: Lab,
    bridge: Bridge,
    a: Netns,
    b: Netns,
    a_ifindex: u32,
    b_ifindex: u32,
}

fn topology(test: &str, ipv6: bool) -> Topology {
    let lab = Lab::new(test).expect("lab");
    let switch = lab.add_netns("sw").expect("switch namespace");
    let bridge = lab.add_bridge(&switch, "br0").expect("bridge");
    let a = lab.add_netns("a").expect("namespace a");
    let b = lab.add_netns("b").expect("namespace b");
    lab.connect(&a, IFACE, &bridge).expect("cable a");
    lab.connect(&b, IFACE, &bridge).expect("cable b");
    lab.add_address(&a, IFACE, A_CIDR).expect("address a");
    lab.add_address(&b, IFACE, B_CIDR).expect("address b");
    if ipv6 {
        for (netns, ip) in [(&a, A_IP6), (&b, B_IP6)] {
            for key in [
                "net.ipv6.conf.all.disable_ipv6",
                "net.ipv6.conf.hb0.disable_ipv6",
            ] {
                lab.set_sysctl(netns, key, "0").expect("enable ipv6");
            }
            lab.set_sysctl(netns, "net.ipv6.conf.hb0.accept_dad", "0")
                .expect("no dad");
            let cidr = format!("{ip}/64");
            lab.ip(netns, &["-6", "addr", "add", &cidr, "dev", IFACE, "nodad"])
                .expect("ipv6 address");
        }
    }
    let a_ifindex = ifindex(&lab, &a);
    let b_ifindex = ifindex(&lab, &b);
    Topology {
        lab,
        bridge,
        a,
        b,
        a_ifindex,
        b_ifindex,
    }
}

fn ifindex(lab: &Lab, netns: &Netns) -> u32 {
    let json = lab
        .ip_json(netns, &["link", "show", "dev", IFACE])
        .expect("ip link show");
    let index = json[0]["ifindex"].as_u64().expect("ifindex in ip -j link");
    u32::try_from(index).expect("ifindex fits u32")
}

/// What a receiver saw in its window.
struct Received {
    arrivals: Vec<Arrival>,
    /// `monotonic now - kernel_ns` of each arrival, taken right after the drain that
    /// returned it.
    ages_ns: Vec<i128>,
    stats: SocketRxStats,
}

/// Opens a receiver in `netns` on its own thread and runtime, reports ready, waits for the
/// go, then collects for `window`.
fn receive(
    lab: &Lab,
    netns: &Netns,
    (links, filter): (Vec<Link>, PeerFilter),
    window: Duration,
    ready: mpsc::Sender<()>,
    go: mpsc::Receiver<()>,
) -> Received {
    lab.in_netns(netns, move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(async move {
            let mut receiver = SocketReceiver::open(&links, filter).expect("open socket receiver");
            ready.send(()).expect("report ready");
            go.recv_timeout(SETTLE).expect("go");
            let mut arrivals = Vec::new();
            let mut ages_ns = Vec::new();
            let start = Instant::now();
            while let Some(left) = window.checked_sub(start.elapsed()) {
                match tokio::time::timeout(left, receiver.readable()).await {
                    Ok(result) => result.expect("readable"),
                    Err(_elapsed) => break,
                }
                let before = arrivals.len();
                let appended = receiver.drain(&mut arrivals);
                assert_eq!(
                    appended,
                    arrivals.len() - before,
                    "drain reports what it appended"
                );
                let now = i128::from(monotonic_ns());
                ages_ns.extend(
                    arrivals[before..]
                        .iter()
                        .map(|a| now - i128::from(a.kernel_ns)),
                );
            }
            Received {
                arrivals,
                ages_ns,
                stats: receiver.stats(),
            }
        })
    })
    .expect("entering the receiver's namespace")
}

struct Sent {
    sender: SenderStats,
    transmitter: TransmitterStats,
}

/// Runs receivers (each `(netns, links, filter)`) for [`WINDOW`] while A sends on
/// `tx_links`.
fn exchange(
    topology: &Topology,
    tx_links: Vec<Link>,
    receivers: Vec<(&Netns, Vec<Link>, PeerFilter)>,
    realtime: bool,
) -> (Sent, Vec<Received>) {
    exchange_while(topology, tx_links, receivers, realtime, WINDOW, || {})
}

/// [`exchange`] with a custom window, running `meanwhile` on this thread once sending and
/// receiving have started.
fn exchange_while(
    topology: &Topology,
    tx_links: Vec<Link>,
    receivers: Vec<(&Netns, Vec<Link>, PeerFilter)>,
    realtime: bool,
    window: Duration,
    meanwhile: impl FnOnce(),
) -> (Sent, Vec<Received>) {
    std::thread::scope(|scope| {
        let mut gos = Vec::new();
        let mut handles = Vec::new();
        for (netns, links, filter) in receivers {
            let (ready_tx, ready_rx) = mpsc::channel();
            let (go_tx, go_rx) = mpsc::channel();
            let lab = &topology.lab;
            let handle =
                scope.spawn(move || receive(lab, netns, (links, filter), window, ready_tx, go_rx));
            if ready_rx.recv_timeout(SETTLE).is_err() {
                // The receiver failed before it was ready: surface its panic.
                match handle.join() {
                    Err(panic) => std::panic::resume_unwind(panic),
                    Ok(_) => panic!("receiver returned without reporting ready"),
                }
            }
            gos.push(go_tx);
            handles.push(handle);
        }
        let (transmitter, sender) = topology
            .lab
            .in_netns(&topology.a, move || {
                let header = Header {
                    cluster_id: CLUSTER,
                    node_id: alpha(),
                    generation: GENERATION,
                    keepalive_us: u32::try_from(KEEPALIVE.as_micros()).expect("keepalive"),
                };
                let advert = Advert {
                    state: NodeState::Active,
                    held: 0b1,
                    failed: 0,
                };
                let transmitter = Arc::new(
                    Transmitter::new(header, auth(), &tx_links, advert).expect("transmitter"),
                );
                // Spawned from this thread, the sender thread inherits namespace A.
                let sender = SenderThread::spawn(Arc::clone(&transmitter), KEEPALIVE, realtime)
                    .expect("sender thread");
                (transmitter, sender)
            })
            .expect("entering namespace a");
        for go in &gos {
            go.send(()).expect("go");
        }
        meanwhile();
        let received: Vec<Received> = handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect();
        let sender = sender.stop();
        let sent = Sent {
            sender,
            transmitter: transmitter.stats(),
        };
        (sent, received)
    })
}

/// The heartbeat stream from A as B must see it.
fn assert_stream(topology: &Topology, received: &Received, sent: &Sent, source: IpAddr) {
    let arrivals = &received.arrivals;
    let n = arrivals.len();
    // About WINDOW / KEEPALIVE = 50; generous both ways for a loaded machine.
    assert!(
        (20..=100).contains(&n),
        "{n} heartbeats in {WINDOW:?} at {KEEPALIVE:?}"
    );
    for pair in arrivals.windows(2) {
        assert_eq!(
            pair[1].packet.seq(),
            pair[0].packet.seq() + 1,
            "consecutive sequence on one link"
        );
    }
    let verifier = auth();
    for arrival in arrivals {
        assert_eq!(arrival.path, RxPath::Socket);
        assert_eq!(
            arrival.ifindex, topology.b_ifindex,
            "the receiving interface"
        );
        assert_eq!(arrival.source.ip(), source, "the sender's address");
        let packet: &Heartbeat = &arrival.packet;
        verifier.verify(packet).expect("sealed with the active key");
        assert_eq!(packet.node_id(), alpha());
        assert_eq!(packet.generation(), GENERATION);
        assert_eq!(packet.kind, MessageKind::Heartbeat as u8);
        assert_eq!(
            (packet.state, packet.held()),
            (NodeState::Active as u8, 0b1)
        );
        assert_eq!(packet.keepalive_us(), 20_000);
    }
    for &age in &received.ages_ns {
        // The kernel stamp is before the drain that read it, and not long before.
        assert!(
            (-1_000_000..250_000_000).contains(&age),
            "arrival {age} ns before its drain"
        );
    }
    let stats = &received.stats;
    assert_eq!(stats.counter(Counter::Accepted), n as u64);
    let dropped: u64 = Counter::ALL
        .iter()
        .filter(|&&c| c != Counter::Accepted)
        .map(|&c| stats.counter(c))
        .sum();
    assert_eq!(dropped, 0, "{stats:?}");
    assert_eq!(
        (
            stats.own_packets,
            stats.missing_timestamp,
            stats.recv_errors
        ),
        (0, 0, 0)
    );
    assert!(
        stats
            .endpoints
            .iter()
            .all(|e| e.ifindex == Some(topology.b_ifindex)),
        "{stats:?}"
    );

    let sender = &sent.sender;
    assert!(sender.ticks >= n as u64, "{sender:?}");
    assert!(!sender.running);
    let link = &sent.transmitter.links[0];
    assert_eq!((link.sent, link.errors), (sender.ticks, 0), "{link:?}");
    assert!(link.open);
    assert_eq!(sent.transmitter.last_seq, sender.ticks);
}

#[test]
fn ucast_ipv4_heartbeats_arrive_with_kernel_timestamps() {
    if !require_root("ucast_ipv4_heartbeats_arrive_with_kernel_timestamps") {
        return;
    }
    let topology = topology("tr-ucast4", false);
    let tx = vec![link(6941, LinkKind::Ucast { peer: B_IP.into() })];
    let rx = vec![link(6941, LinkKind::Ucast { peer: A_IP.into() })];
    let (sent, received) = exchange(
        &topology,
        tx,
        vec![(&topology.b, rx, filter(beta()))],
        false,
    );
    assert_stream(&topology, &received[0], &sent, A_IP.into());
}

/// `bcast` goes to 255.255.255.255 out of the bound device, through the bridge. With
/// `realtime on` the sender works the same whether or not SCHED_FIFO was permitted.
#[test]
fn bcast_heartbeats_cross_the_bridge_with_realtime_sender() {
    if !require_root("bcast_heartbeats_cross_the_bridge_with_realtime_sender") {
        return;
    }
    let topology = topology("tr-bcast", false);
    let links = vec![link(6942, LinkKind::Bcast)];
    let (sent, received) = exchange(
        &topology,
        links.clone(),
        vec![(&topology.b, links, filter(beta()))],
        true,
    );
    assert!(sent.sender.realtime.requested);
    assert_eq!(
        sent.transmitter.links[0].destination,
        "255.255.255.255:6942".parse().unwrap()
    );
    assert_stream(&topology, &received[0], &sent, A_IP.into());
}

/// Multicast with loopback on: B hears A, and A's own receiver sees its own packets and
/// counts them as its own instead of delivering them.
#[test]
fn mcast_heartbeats_arrive_and_own_loopback_is_ignored() {
    if !require_root("mcast_heartbeats_arrive_and_own_loopback_is_ignored") {
        return;
    }
    let topology = topology("tr-mcast", false);
    let links = vec![link(
        6943,
        LinkKind::Mcast {
            group: GROUP.into(),
            ttl: 1,
            loopback: true,
        },
    )];
    let receivers = vec![
        (&topology.b, links.clone(), filter(beta())),
        (&topology.a, links.clone(), filter(alpha())),
    ];
    let (sent, received) = exchange(&topology, links, receivers, false);
    assert_stream(&topology, &received[0], &sent, A_IP.into());

    let own = &received[1];
    assert!(own.arrivals.is_empty(), "own packets are never delivered");
    assert!(
        own.stats.own_packets >= 20,
        "looped-back packets counted: {:?}",
        own.stats
    );
    assert_eq!(own.stats.counter(Counter::Accepted), 0);
    assert!(own
        .stats
        .endpoints
        .iter()
        .all(|e| e.ifindex == Some(topology.a_ifindex)));
}

#[test]
fn ucast_ipv6_heartbeats_arrive() {
    if !require_root("ucast_ipv6_heartbeats_arrive") {
        return;
    }
    let topology = topology("tr-ucast6", true);
    // Until IPv6 neighbour discovery can run, the first packets would only queue.
    let reachable = wait_until(SETTLE, Duration::from_millis(50), || {
        topology
            .lab
            .exec_output(
                &topology.a,
                &["ping", "-6", "-c", "1", "-W", "1", &B_IP6.to_string()],
            )
            .is_ok_and(|output| output.success())
    });
    assert!(reachable, "B's IPv6 address is not reachable from A");
    let tx = vec![link(6944, LinkKind::Ucast { peer: B_IP6.into() })];
    let rx = vec![link(6944, LinkKind::Ucast { peer: A_IP6.into() })];
    let (sent, received) = exchange(
        &topology,
        tx,
        vec![(&topology.b, rx, filter(beta()))],
        false,
    );
    assert_stream(&topology, &received[0], &sent, A_IP6.into());
}

/// Hand-made datagrams to the heartbeat port: each malformed one is counted under its
/// reason and never delivered; a good one sent last shows they have all been read.
#[test]
fn malformed_datagrams_are_counted_by_reason_and_not_delivered() {
    if !require_root("malformed_datagrams_are_counted_by_reason_and_not_delivered") {
        return;
    }
    let topology = topology("tr-malformed", false);
    let port = 6945;
    let rx_links = vec![link(port, LinkKind::Ucast { peer: A_IP.into() })];

    let sealed = |node: u32, seq: u64, cluster: u32| {
        let header = Header {
            cluster_id: cluster,
            node_id: node,
            generation: 1,
            keepalive_us: 1,
        };
        let mut packet = build(
            &header,
            MessageKind::Heartbeat,
            NodeState::Active,
            seq,
            0,
            0,
            0,
        );
        auth().seal(&mut packet);
        bytemuck::bytes_of(&packet).to_vec()
    };
    let good = sealed(alpha(), 7, CLUSTER);
    let with = |index: usize, value: u8| {
        let mut bytes = good.clone();
        bytes[index] = value;
        bytes
    };
    let datagrams: Vec<(Vec<u8>, Option<Counter>)> = vec![
        (good[..10].to_vec(), Some(Counter::DropBadLength)),
        (
            [good.clone(), vec![0; 20]].concat(),
            Some(Counter::DropBadLength),
        ),
        (with(0, b'X'), Some(Counter::DropBadMagic)),
        (with(4, 9), Some(Counter::DropBadVersion)),
        (with(5, 0), Some(Counter::DropBadField)),
        (
            sealed(alpha(), 8, CLUSTER ^ 1),
            Some(Counter::DropWrongCluster),
        ),
        (
            sealed(node_id(b"mallory"), 9, CLUSTER),
            Some(Counter::DropUnknownPeer),
        ),
        (sealed(beta(), 10, CLUSTER), None), // B's own id: ignored, counted as own
        (good.clone(), Some(Counter::Accepted)),
    ];

    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let lab = &topology.lab;
    let b = &topology.b;
    let received = std::thread::scope(|scope| {
        let receiver = scope.spawn(move || {
            lab.in_netns(b, move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                runtime.block_on(async move {
                    let mut receiver =
                        SocketReceiver::open(&rx_links, filter(beta())).expect("open receiver");
                    ready_tx.send(()).expect("ready");
                    let mut arrivals = Vec::new();
                    let deadline = Instant::now() + SETTLE;
                    // Datagrams on one socket are read in order: the good one comes last.
                    while arrivals.is_empty() && Instant::now() < deadline {
                        let _ =
                            tokio::time::timeout(Duration::from_millis(100), receiver.readable())
                                .await;
                        receiver.drain(&mut arrivals);
                    }
                    done_rx.recv_timeout(SETTLE).expect("sender done");
                    receiver.drain(&mut arrivals);
                    (arrivals, receiver.stats())
                })
            })
            .expect("entering namespace b")
        });
        ready_rx.recv_timeout(SETTLE).expect("receiver ready");
        let payloads: Vec<Vec<u8>> = datagrams.iter().map(|(bytes, _)| bytes.clone()).collect();
        lab.in_netns(&topology.a, move || {
            let socket = UdpSocket::bind((A_IP, 0)).expect("bind in a");
            for payload in &payloads {
                socket
                    .send_to(payload, SocketAddr::from((B_IP, port)))
                    .expect("send");
            }
        })
        .expect("entering namespace a");
        done_tx.send(()).expect("done");
        receiver
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    let (arrivals, stats) = received;

    assert_eq!(
        arrivals.len(),
        1,
        "only the well-formed heartbeat is delivered: {arrivals:?}"
    );
    assert_eq!(arrivals[0].packet.seq(), 7);
    assert_eq!(arrivals[0].source.ip(), IpAddr::from(A_IP));
    for counter in Counter::ALL {
        let expected = datagrams
            .iter()
            .filter(|(_, c)| *c == Some(counter))
            .count() as u64;
        assert_eq!(
            stats.counter(counter),
            expected,
            "{}: {stats:?}",
            counter.name()
        );
    }
    assert_eq!(stats.own_packets, 1);
}

/// Deletes and re-creates a node's heartbeat interface (a new index, as after a driver
/// reload or a VLAN re-created by hand), with its address.
fn recreate_interface(topology: &Topology, netns: &Netns, cidr: &str) -> u32 {
    let lab = &topology.lab;
    lab.ip(netns, &["link", "del", IFACE])
        .expect("delete interface");
    lab.connect(netns, IFACE, &topology.bridge)
        .expect("new cable");
    lab.add_address(netns, IFACE, cidr).expect("address");
    ifindex(lab, netns)
}

/// Both ends survive their interface being deleted and re-created: the sender reopens its
/// socket on the new interface, the receiver notices the new index and reopens too, and
/// heartbeats flow again without restarting either.
#[test]
fn sender_and_receiver_follow_a_recreated_interface() {
    if !require_root("sender_and_receiver_follow_a_recreated_interface") {
        return;
    }
    let topology = topology("tr-recreate", false);
    // Broadcast needs no neighbour entry, so only the sockets' recovery is measured.
    let links = vec![link(6946, LinkKind::Bcast)];
    let old_b = topology.b_ifindex;
    let mut new_b = 0;
    let (sent, received) = exchange_while(
        &topology,
        links.clone(),
        vec![(&topology.b, links, filter(beta()))],
        false,
        Duration::from_secs(6),
        || {
            std::thread::sleep(Duration::from_millis(800));
            let new_a = recreate_interface(&topology, &topology.a, A_CIDR);
            assert_ne!(new_a, topology.a_ifindex);
            std::thread::sleep(Duration::from_millis(1500));
            new_b = recreate_interface(&topology, &topology.b, B_CIDR);
            assert_ne!(new_b, old_b);
        },
    );
    let received = &received[0];
    let seqs_on = |ifindex: u32| -> Vec<u64> {
        received
            .arrivals
            .iter()
            .filter(|a| a.ifindex == ifindex)
            .map(|a| a.packet.seq())
            .collect()
    };
    let before = seqs_on(old_b);
    let after = seqs_on(new_b);
    assert!(before.len() >= 10, "heard before the change: {before:?}");
    assert!(
        after.len() >= 10,
        "heard again on the new interface: {after:?}"
    );
    assert_eq!(before.len() + after.len(), received.arrivals.len());
    assert!(
        before.iter().max() < after.iter().min(),
        "the new socket hears later heartbeats"
    );
    assert!(received
        .stats
        .endpoints
        .iter()
        .all(|e| e.ifindex == Some(new_b)));

    let link = &sent.transmitter.links[0];
    assert!(
        link.errors > 0,
        "sends failed while A's interface was gone: {link:?}"
    );
    assert!(link.open, "{link:?}");
    assert_eq!(link.sent + link.errors, sent.sender.ticks, "{link:?}");
}
