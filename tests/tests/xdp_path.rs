//! Privileged: the real XDP program on a veth between two namespaces.
//!
//! Namespace `rx` runs an `XdpReceiver` for node `alpha` on a thread of its own (joined to
//! the namespace, with a current-thread tokio runtime); namespace `tx` sends hand-made
//! packets: well-shaped heartbeats from the configured peer `beta` (IPv4 and IPv6), every
//! kind of malformed one, an IPv4-fragmented datagram to the heartbeat port, and traffic that
//! is not ours (UDP to another port, a ping), which must pass. Then the counters, the events
//! and the pinned maps as `bpftool` prints them are checked; a second test restarts the
//! receiver over its pins and checks that the program is replaced on the same link.
//!
//! Addresses: 198.18.72.0/24, and 2001:2:0:72::/64 (IPv6 benchmarking range) for the IPv6
//! case. Pins live under the lab's bpffs directory, which the lab removes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use hb_agent::arrival::{Arrival, RxPath};
use hb_agent::clock::monotonic_ns;
use hb_agent::config::XdpSetting;
use hb_agent::xdp::{ensure_bpffs, remove_pinned, AttachMode, XdpError, XdpOptions, XdpReceiver};
use hb_common::maps::{Counter, LinkStats, PeerLinkKey, PeerStats, PEERS_MAP, PEER_LINKS_MAP};
use hb_common::wire::{node_id, Heartbeat, MessageKind, NodeState, MAC_LEN, MAGIC, VERSION};
use hb_tests::{bpftool_json, require_root, Lab, Netns, BPFFS_ROOT};
use serde_json::Value;

const CLUSTER: u32 = 0x7e57_0072;
const PORT: u16 = 694;
/// Another UDP port on the receiver: not a heartbeat port, so its traffic must pass.
const OTHER_PORT: u16 = 7072;
const SENDER_PORT: u16 = 6972;
const IFACE: &str = "hb0";
const RX_CIDR: &str = "198.18.72.1/24";
const TX_CIDR: &str = "198.18.72.2/24";
const RX_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 72, 1);
const TX_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 72, 2);
const RX_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0x72, 0, 0, 0, 1);
const TX_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0x72, 0, 0, 0, 2);
/// Generous: the machine may be building on its other core.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long "nothing more arrives" is watched for.
const QUIET: Duration = Duration::from_millis(300);
/// The longest a receiver stalls on the test's request, should the test forget to resume it.
const STALL_LIMIT: Duration = Duration::from_secs(60);
/// How often the receiver thread reads the ring without being woken, as the engine does at
/// its deadlines: routine repeats do not wake the reader.
const RING_POLL: Duration = Duration::from_millis(20);

fn alpha() -> u32 {
    node_id(b"alpha")
}

fn beta() -> u32 {
    node_id(b"beta")
}

/// A well-shaped heartbeat (unsigned: the kernel checks shape only).
fn heartbeat(cluster: u32, node: u32, seq: u64) -> Heartbeat {
    Heartbeat {
        magic: MAGIC,
        version: VERSION,
        kind: MessageKind::Heartbeat as u8,
        state: NodeState::Active as u8,
        key_index: 1,
        cluster_id: cluster.to_be_bytes(),
        node_id: node.to_be_bytes(),
        dest_node: 0u32.to_be_bytes(),
        keepalive_us: 100_000u32.to_be_bytes(),
        generation: 9u64.to_be_bytes(),
        seq: seq.to_be_bytes(),
        held: 0u64.to_be_bytes(),
        arg: 0u64.to_be_bytes(),
        mac: [0xa5; MAC_LEN],
        reserved: [0; 4],
    }
}

fn bytes(packet: &Heartbeat) -> Vec<u8> {
    bytemuck::bytes_of(packet).to_vec()
}

// ------------------------------------------------------------------ topology

struct Topology {
    lab: Lab,
    rx: Netns,
    tx: Netns,
    pin_root: PathBuf,
    /// `hb0`'s index inside `rx`.
    rx_ifindex: u32,
    /// `hb0`'s index inside `tx`.
    tx_ifindex: u32,
}

fn topology(label: &str) -> Topology {
    let lab = Lab::new(label).expect("lab");
    let rx = lab.add_netns("rx").expect("rx namespace");
    let tx = lab.add_netns("tx").expect("tx namespace");
    lab.add_veth_pair(&rx, IFACE, &tx, IFACE)
        .expect("veth pair");
    lab.add_address(&rx, IFACE, RX_CIDR).expect("rx address");
    lab.add_address(&tx, IFACE, TX_CIDR).expect("tx address");
    for (netns, ip) in [(&rx, RX_IP6), (&tx, TX_IP6)] {
        for key in [
            "net.ipv6.conf.all.disable_ipv6",
            "net.ipv6.conf.hb0.disable_ipv6",
        ] {
            lab.set_sysctl(netns, key, "0").expect("enable ipv6");
        }
        lab.set_sysctl(netns, "net.ipv6.conf.hb0.accept_dad", "0")
            .expect("no duplicate address detection");
        let cidr = format!("{ip}/64");
        lab.ip(netns, &["-6", "addr", "add", &cidr, "dev", IFACE, "nodad"])
            .expect("ipv6 address");
    }
    // The agent mounts bpffs at /sys/fs/bpf when nothing is mounted there (as systemd would).
    ensure_bpffs(&Path::new(BPFFS_ROOT).join("hb-agent")).expect("bpffs");
    let pin_root = lab.bpf_pin_dir("xdp").expect("bpffs pin directory");
    let rx_ifindex = ifindex(&lab, &rx);
    let tx_ifindex = ifindex(&lab, &tx);
    Topology {
        lab,
        rx,
        tx,
        pin_root,
        rx_ifindex,
        tx_ifindex,
    }
}

fn ifindex(lab: &Lab, netns: &Netns) -> u32 {
    let links = lab
        .ip_json(netns, &["link", "show", "dev", IFACE])
        .expect("ip link show");
    links[0]["ifindex"]
        .as_u64()
        .and_then(|index| u32::try_from(index).ok())
        .expect("ifindex of hb0")
}

fn options(topology: &Topology, setting: XdpSetting, interfaces: &[&str]) -> XdpOptions {
    XdpOptions {
        node: "alpha".into(),
        pin_root: topology.pin_root.clone(),
        interfaces: interfaces.iter().map(|iface| iface.to_string()).collect(),
        setting,
        cluster_id: CLUSTER,
        udp_ports: vec![PORT],
        peers: vec![beta()],
    }
}

// ------------------------------------------------------------------ the receiver thread

/// What the test asks of the receiver thread.
enum Command {
    Snapshot(mpsc::Sender<Snapshot>),
    /// Stop reading (blocking the receiver's runtime), as a stalled agent would, until the
    /// test says so or drops its sender; answers on the first channel when the stall begins.
    Stall(mpsc::Sender<()>, mpsc::Receiver<()>),
    /// A configuration reload: new peers, new cluster id and ports.
    Reload {
        peers: Vec<u32>,
        cluster_id: u32,
        udp_ports: Vec<u16>,
        done: mpsc::Sender<Result<(), XdpError>>,
    },
    /// End the receiver: detach and unpin (`shutdown`), or just drop it like a crash.
    Stop {
        shutdown: bool,
    },
}

#[derive(Debug)]
struct Snapshot {
    counters: [u64; Counter::COUNT as usize],
    peers: Vec<(u32, PeerStats)>,
    links: Vec<(PeerLinkKey, LinkStats)>,
    undecodable: u64,
}

#[derive(Debug)]
struct Started {
    attachments: Vec<(String, AttachMode)>,
    pin_dir: PathBuf,
}

/// The test's side of a running receiver. Dropping it stops the receiver (with shutdown), so
/// a failing assertion never leaves the receiver thread waiting.
struct Receiver {
    commands: tokio::sync::mpsc::UnboundedSender<Command>,
    arrivals: mpsc::Receiver<Arrival>,
    started: Started,
}

impl Receiver {
    fn snapshot(&self) -> Snapshot {
        let (reply, answer) = mpsc::channel();
        self.commands
            .send(Command::Snapshot(reply))
            .expect("receiver thread gone");
        answer.recv_timeout(EVENT_TIMEOUT).expect("snapshot")
    }

    fn next_arrival(&self) -> Arrival {
        self.arrivals
            .recv_timeout(EVENT_TIMEOUT)
            .expect("no heartbeat event from the XDP program")
    }

    fn assert_quiet(&self) {
        if let Ok(arrival) = self.arrivals.recv_timeout(QUIET) {
            panic!("unexpected event: {arrival:?}");
        }
    }

    /// Returns once the receiver has stopped reading; it reads again when the returned
    /// sender is used or dropped.
    fn stall(&self) -> mpsc::Sender<()> {
        let (begun, answer) = mpsc::channel();
        let (resume, resumed) = mpsc::channel();
        self.commands
            .send(Command::Stall(begun, resumed))
            .expect("receiver thread gone");
        answer.recv_timeout(EVENT_TIMEOUT).expect("stall");
        resume
    }

    fn reload(&self, peers: &[u32], cluster_id: u32, udp_ports: &[u16]) {
        let (done, answer) = mpsc::channel();
        self.commands
            .send(Command::Reload {
                peers: peers.to_vec(),
                cluster_id,
                udp_ports: udp_ports.to_vec(),
                done,
            })
            .expect("receiver thread gone");
        answer
            .recv_timeout(EVENT_TIMEOUT)
            .expect("reload answer")
            .expect("reload");
    }

    fn stop(&self, shutdown: bool) {
        // A receiver that already ended has nothing left to stop.
        let _ = self.commands.send(Command::Stop { shutdown });
    }
}

/// Runs `body` while an `XdpReceiver` for `opts` runs inside `netns`. Returns `body`'s
/// result and the receiver thread's (its start or run error).
fn with_receiver<R>(
    lab: &Lab,
    netns: &Netns,
    opts: &XdpOptions,
    body: impl FnOnce(&Receiver) -> R,
) -> Result<R, XdpError> {
    let (command_tx, command_rx) = tokio::sync::mpsc::unbounded_channel();
    let (arrival_tx, arrival_rx) = mpsc::channel();
    let (started_tx, started_rx) = mpsc::channel();
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            lab.in_netns(netns, || {
                run_receiver(opts, command_rx, arrival_tx, started_tx)
            })
            .expect("joining the rx namespace")
        });
        let started = match started_rx.recv() {
            Ok(started) => started,
            // The worker ended before starting: its result says why.
            Err(_) => {
                return Err(worker
                    .join()
                    .expect("receiver thread panicked")
                    .expect_err("receiver ended without starting"))
            }
        };
        let receiver = Receiver {
            commands: command_tx,
            arrivals: arrival_rx,
            started,
        };
        let result = body(&receiver);
        receiver.stop(true);
        drop(receiver);
        worker.join().expect("receiver thread panicked")?;
        Ok(result)
    })
}

fn run_receiver(
    opts: &XdpOptions,
    mut commands: tokio::sync::mpsc::UnboundedReceiver<Command>,
    arrivals: mpsc::Sender<Arrival>,
    started: mpsc::Sender<Started>,
) -> Result<(), XdpError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let mut receiver = XdpReceiver::start(opts)?;
        let _ = started.send(Started {
            attachments: receiver.attachments().to_vec(),
            pin_dir: receiver.pin_dir().to_owned(),
        });
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                ready = receiver.readable() => {
                    ready?;
                    receiver.drain(&mut batch);
                    for arrival in batch.drain(..) {
                        let _ = arrivals.send(arrival);
                    }
                }
                () = tokio::time::sleep(RING_POLL) => {
                    receiver.drain(&mut batch);
                    for arrival in batch.drain(..) {
                        let _ = arrivals.send(arrival);
                    }
                }
                command = commands.recv() => match command {
                    Some(Command::Snapshot(reply)) => {
                        let _ = reply.send(Snapshot {
                            counters: receiver.counters()?,
                            peers: receiver.peer_stats()?,
                            links: receiver.link_stats()?,
                            undecodable: receiver.undecodable(),
                        });
                    }
                    Some(Command::Stall(begun, resume)) => {
                        let _ = begun.send(());
                        let _ = resume.recv_timeout(STALL_LIMIT);
                    }
                    Some(Command::Reload { peers, cluster_id, udp_ports, done }) => {
                        let result = receiver
                            .set_peers(&peers)
                            .and_then(|()| receiver.set_config(cluster_id, &udp_ports));
                        let _ = done.send(result);
                    }
                    Some(Command::Stop { shutdown: false }) => {
                        drop(receiver);
                        return Ok(());
                    }
                    Some(Command::Stop { shutdown: true }) | None => return receiver.shutdown(),
                },
            }
        }
    })
}

// ------------------------------------------------------------------ sending

/// Sends each payload as one UDP datagram from `tx` (IPv4, from SENDER_PORT).
fn send_v4(lab: &Lab, tx: &Netns, port: u16, payloads: &[Vec<u8>]) {
    lab.in_netns(tx, || {
        let socket = UdpSocket::bind((TX_IP, SENDER_PORT)).expect("bind sender");
        for payload in payloads {
            socket.send_to(payload, (RX_IP, port)).expect("send");
        }
    })
    .expect("joining the tx namespace");
}

fn send_v6(lab: &Lab, tx: &Netns, port: u16, payload: &[u8]) {
    lab.in_netns(tx, || {
        let socket =
            UdpSocket::bind(SocketAddrV6::new(TX_IP6, SENDER_PORT, 0, 0)).expect("bind sender");
        socket
            .send_to(payload, SocketAddrV6::new(RX_IP6, port, 0, 0))
            .expect("send");
    })
    .expect("joining the tx namespace");
}

/// A UDP socket bound inside `netns`.
fn bind_in(lab: &Lab, netns: &Netns, addr: SocketAddr) -> UdpSocket {
    lab.in_netns(netns, || {
        let socket = UdpSocket::bind(addr).expect("bind");
        socket.set_read_timeout(Some(QUIET)).expect("read timeout");
        socket
    })
    .expect("joining the namespace")
}

fn received(socket: &UdpSocket) -> Vec<Vec<u8>> {
    let mut datagrams = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok((len, _)) = socket.recv_from(&mut buffer) {
        datagrams.push(buffer[..len].to_vec());
    }
    datagrams
}

// ------------------------------------------------------------------ hand-made frames

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

fn parse_mac(text: &str) -> [u8; 6] {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next().expect("mac byte"), 16).expect("hex mac byte");
    }
    mac
}

/// Ethernet header, with one VLAN tag of the given TPID when `tag` is set.
fn ethernet(dst: [u8; 6], src: [u8; 6], tag: Option<u16>, ethertype: u16) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&src);
    if let Some(tpid) = tag {
        frame.extend_from_slice(&tpid.to_be_bytes());
        frame.extend_from_slice(&72u16.to_be_bytes());
    }
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame
}

fn udp(dst_port: u16, length: u16, payload: &[u8]) -> Vec<u8> {
    let mut datagram = Vec::new();
    datagram.extend_from_slice(&SENDER_PORT.to_be_bytes());
    datagram.extend_from_slice(&dst_port.to_be_bytes());
    datagram.extend_from_slice(&length.to_be_bytes());
    // No checksum (allowed for IPv4; the XDP program does not look at it).
    datagram.extend_from_slice(&0u16.to_be_bytes());
    datagram.extend_from_slice(payload);
    datagram
}

/// An IPv4 header (with `options`, so IHL = 5 + options/4) in front of `body`, whose total
/// length covers `body`.
fn ipv4(options: &[u8], body: &[u8]) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let ihl = 5 + options.len() / 4;
    let total = (ihl * 4 + body.len()) as u16;
    let mut header = vec![0x40 | ihl as u8, 0];
    header.extend_from_slice(&total.to_be_bytes());
    header.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0]); // id 1, DF, TTL 64, UDP
    header.extend_from_slice(&TX_IP.octets());
    header.extend_from_slice(&RX_IP.octets());
    header.extend_from_slice(options);
    let checksum = !header
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], pair[1]])))
        .fold(0u32, |sum, word| {
            let sum = sum + word;
            (sum & 0xffff) + (sum >> 16)
        }) as u16;
    header[10..12].copy_from_slice(&checksum.to_be_bytes());
    header.extend_from_slice(body);
    header
}

/// Sends complete Ethernet frames out of `hb0` in `netns` through an AF_PACKET socket, so
/// that every header byte is exactly as written (no VLAN offload, no checksum fix-up).
fn send_frames(lab: &Lab, netns: &Netns, ifindex: u32, dst: [u8; 6], frames: &[Vec<u8>]) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    lab.in_netns(netns, || {
        // SAFETY: socket(2) with constant arguments; the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(
            raw >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_ifindex = ifindex as i32;
        address.sll_halen = 6;
        address.sll_addr[..6].copy_from_slice(&dst);
        for frame in frames {
            // SAFETY: the buffer and the address are valid for the lengths passed, and
            // outlive the call.
            let sent = unsafe {
                libc::sendto(
                    socket.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    std::ptr::from_ref(&address).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            assert_eq!(
                sent,
                frame.len() as isize,
                "sendto: {}",
                std::io::Error::last_os_error()
            );
        }
    })
    .expect("joining the tx namespace");
}

// ------------------------------------------------------------------ bpftool

/// The XDP attachment `bpftool net show` reports for `ifindex` in `netns`: (mode, prog id).
fn xdp_attachment(lab: &Lab, netns: &Netns, ifindex: u32) -> Option<(String, u64)> {
    let net = lab
        .bpftool_json_in(netns, &["net", "show"])
        .expect("bpftool net show");
    let entries = net
        .as_array()?
        .iter()
        .filter_map(|section| section["xdp"].as_array())
        .flatten();
    for entry in entries {
        if entry["ifindex"].as_u64() == Some(u64::from(ifindex)) {
            let mode = entry["mode"].as_str().unwrap_or_default().to_owned();
            let id = entry["id"].as_u64().expect("xdp program id");
            return Some((mode, id));
        }
    }
    None
}

fn prog_name(id: u64) -> String {
    let prog = bpftool_json(&["prog", "show", "id", &id.to_string()]).expect("bpftool prog show");
    prog["name"].as_str().unwrap_or_default().to_owned()
}

/// The pinned link files in `dir` and their `bpftool link show` records.
fn pinned_links(dir: &Path) -> Vec<(String, Value)> {
    let mut links = Vec::new();
    for entry in std::fs::read_dir(dir).expect("pin dir") {
        let entry = entry.expect("pin dir entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("link:") {
            let path = entry.path();
            let info =
                bpftool_json(&["link", "show", "pinned", path.to_str().expect("utf-8 path")])
                    .expect("bpftool link show");
            links.push((name, info));
        }
    }
    links
}

fn dump_pinned(pin_dir: &Path, map: &str) -> Vec<Value> {
    let path = pin_dir.join(map);
    let dump = bpftool_json(&["map", "dump", "pinned", path.to_str().expect("utf-8 path")])
        .expect("bpftool map dump");
    dump.as_array().expect("map dump is a list").clone()
}

/// A field of a BTF map entry (under the entry's `formatted` key, where bpftool prints
/// values by field name).
fn field(value: &Value, name: &str) -> u64 {
    value[name]
        .as_u64()
        .unwrap_or_else(|| panic!("field {name} missing or not a number in {value}"))
}

// ------------------------------------------------------------------ tests

#[test]
fn xdp_checks_heartbeats_and_passes_other_traffic() {
    if !require_root("xdp_checks_heartbeats_and_passes_other_traffic") {
        return;
    }
    let topology = topology("xdp_path");
    let Topology { lab, rx, tx, .. } = &topology;
    let opts = options(&topology, XdpSetting::Auto, &[IFACE]);
    let heartbeat_socket = bind_in(lab, rx, (RX_IP, PORT).into());
    let other_socket = bind_in(lab, rx, (RX_IP, OTHER_PORT).into());

    with_receiver(lab, rx, &opts, |receiver| {
        // veth has native XDP: Auto takes driver mode.
        assert_eq!(
            receiver.started.attachments,
            [(IFACE.to_owned(), AttachMode::Driver)]
        );
        let pin_dir = &receiver.started.pin_dir;
        assert_eq!(pin_dir, &topology.pin_root.join("alpha").join("v1"));
        let (mode, prog_id) =
            xdp_attachment(lab, rx, topology.rx_ifindex).expect("XDP attached to hb0");
        assert_eq!(mode, "driver");
        assert_eq!(prog_name(prog_id), hb_common::maps::PROGRAM);
        let links = pinned_links(pin_dir);
        assert_eq!(links.len(), 1, "{links:?}");
        assert_eq!(
            links[0].0,
            format!("link:{}:driver:{IFACE}", topology.rx_ifindex)
        );
        assert_eq!(links[0].1["prog_id"].as_u64(), Some(prog_id));

        // A well-shaped heartbeat from the configured peer: delivered with its kernel stamp.
        let good = heartbeat(CLUSTER, beta(), 1);
        let before = monotonic_ns();
        send_v4(lab, tx, PORT, &[bytes(&good)]);
        let arrival = receiver.next_arrival();
        let after = monotonic_ns();
        assert_eq!(arrival.packet, good);
        assert_eq!(arrival.path, RxPath::Xdp);
        assert_eq!(arrival.ifindex, topology.rx_ifindex);
        assert_eq!(arrival.source, SocketAddr::from((TX_IP, SENDER_PORT)));
        assert!(
            (before..=after).contains(&arrival.kernel_ns),
            "kernel stamp {} outside the send window {before}..={after}",
            arrival.kernel_ns
        );

        // The same over IPv6.
        let good6 = heartbeat(CLUSTER, beta(), 2);
        send_v6(lab, tx, PORT, &bytes(&good6));
        let arrival6 = receiver.next_arrival();
        assert_eq!(arrival6.packet, good6);
        assert_eq!(arrival6.ifindex, topology.rx_ifindex);
        assert_eq!(
            arrival6.source,
            SocketAddr::from((IpAddr::V6(TX_IP6), SENDER_PORT))
        );
        let last_seen = arrival6.kernel_ns;

        // Everything malformed on the heartbeat port: dropped, counted by reason.
        let mut wrong_magic = heartbeat(CLUSTER, beta(), 3);
        wrong_magic.magic = *b"HBHX";
        let mut wrong_version = heartbeat(CLUSTER, beta(), 3);
        wrong_version.version = VERSION + 1;
        let mut bad_field = heartbeat(CLUSTER, beta(), 3);
        bad_field.key_index = 0;
        let wrong_cluster = heartbeat(CLUSTER + 1, beta(), 3);
        let unknown_node = heartbeat(CLUSTER, node_id(b"mallory"), 3);
        let own_node = heartbeat(CLUSTER, alpha(), 3);
        let good_bytes = bytes(&heartbeat(CLUSTER, beta(), 3));
        let short = good_bytes[..good_bytes.len() - 1].to_vec();
        let mut long = good_bytes.clone();
        long.push(0);
        send_v4(
            lab,
            tx,
            PORT,
            &[
                bytes(&wrong_magic),
                bytes(&wrong_version),
                bytes(&bad_field),
                bytes(&wrong_cluster),
                bytes(&unknown_node),
                bytes(&own_node),
                short,
                long,
                Vec::new(),
            ],
        );
        // 3000 bytes to the heartbeat port leave as three IPv4 fragments: the first (with the
        // UDP header) is malformed for a heartbeat, the others carry no port and pass.
        send_v4(lab, tx, PORT, &[vec![0x5a; 3000]]);
        receiver.assert_quiet();

        // Not ours: a datagram to another port reaches its socket; a ping is answered.
        send_v4(lab, tx, OTHER_PORT, &[b"not a heartbeat".to_vec()]);
        assert_eq!(received(&other_socket), [b"not a heartbeat".to_vec()]);
        assert!(
            lab.ping(tx, RX_IP, Duration::from_secs(3)).expect("ping"),
            "ping not answered"
        );
        // Nothing on the heartbeat port reached the stack: consumed or dropped in XDP.
        assert_eq!(received(&heartbeat_socket), Vec::<Vec<u8>>::new());

        let snapshot = receiver.snapshot();
        let count = |counter: Counter| snapshot.counters[counter as usize];
        assert_eq!(count(Counter::Accepted), 2, "{snapshot:?}");
        assert_eq!(count(Counter::DropBadMagic), 1, "{snapshot:?}");
        assert_eq!(count(Counter::DropBadVersion), 1, "{snapshot:?}");
        assert_eq!(count(Counter::DropBadField), 1, "{snapshot:?}");
        assert_eq!(count(Counter::DropWrongCluster), 1, "{snapshot:?}");
        assert_eq!(count(Counter::DropUnknownPeer), 2, "{snapshot:?}");
        assert_eq!(count(Counter::DropBadLength), 3, "{snapshot:?}");
        assert_eq!(count(Counter::DropMalformed), 1, "{snapshot:?}");
        assert_eq!(count(Counter::RingFull), 0, "{snapshot:?}");
        // At least: two later fragments, the other-port datagram, the echo request.
        assert!(count(Counter::Passed) >= 4, "{snapshot:?}");
        assert_eq!(snapshot.undecodable, 0);

        let expected_peer = PeerStats {
            last_seen_ns: last_seen,
            generation: 9,
            seq: 2,
            packets: 2,
            last_ifindex: topology.rx_ifindex,
            advert_digest: hb_common::maps::advert_digest(&good6),
        };
        assert_eq!(snapshot.peers, [(beta(), expected_peer)]);
        let link_key = PeerLinkKey {
            node_id: beta(),
            ifindex: topology.rx_ifindex,
        };
        assert_eq!(
            snapshot.links,
            [(
                link_key,
                LinkStats {
                    last_seen_ns: last_seen,
                    packets: 2
                }
            )]
        );

        // bpftool prints the BTF maps by field name, with the same values.
        let peers = dump_pinned(pin_dir, PEERS_MAP);
        assert_eq!(peers.len(), 1, "{peers:?}");
        let peer = &peers[0]["formatted"];
        assert_eq!(peer["key"].as_u64(), Some(u64::from(beta())), "{peers:?}");
        let value = &peer["value"];
        assert_eq!(field(value, "last_seen_ns"), last_seen);
        assert_eq!(field(value, "generation"), 9);
        assert_eq!(field(value, "seq"), 2);
        assert_eq!(field(value, "packets"), 2);
        assert_eq!(field(value, "last_ifindex"), u64::from(topology.rx_ifindex));
        let links = dump_pinned(pin_dir, PEER_LINKS_MAP);
        assert_eq!(links.len(), 1, "{links:?}");
        let link = &links[0]["formatted"];
        assert_eq!(field(&link["key"], "node_id"), u64::from(beta()));
        assert_eq!(
            field(&link["key"], "ifindex"),
            u64::from(topology.rx_ifindex)
        );
        assert_eq!(field(&link["value"], "last_seen_ns"), last_seen);
        assert_eq!(field(&link["value"], "packets"), 2);
    })
    .expect("XDP receiver");

    // Shut down: detached, pins gone.
    assert_eq!(xdp_attachment(lab, rx, topology.rx_ifindex), None);
    assert!(!topology.pin_root.join("alpha").exists());
}

#[test]
fn restart_replaces_the_program_on_the_pinned_link() {
    if !require_root("restart_replaces_the_program_on_the_pinned_link") {
        return;
    }
    let topology = topology("xdp_restart");
    let Topology { lab, rx, tx, .. } = &topology;
    let opts = options(&topology, XdpSetting::Auto, &[IFACE]);

    // First run: ends like a crash, leaving its pins and its program attached.
    let (first_prog, first_link) = with_receiver(lab, rx, &opts, |receiver| {
        let (_, prog) = xdp_attachment(lab, rx, topology.rx_ifindex).expect("attached");
        let links = pinned_links(&receiver.started.pin_dir);
        assert_eq!(links.len(), 1, "{links:?}");
        receiver.stop(false);
        (prog, links[0].1["id"].as_u64().expect("link id"))
    })
    .expect("first receiver");
    let pin_dir = topology.pin_root.join("alpha").join("v1");
    assert_eq!(
        xdp_attachment(lab, rx, topology.rx_ifindex).map(|(_, prog)| prog),
        Some(first_prog),
        "a crashed run's program stays attached through its pinned link"
    );

    // Second run: same link, new program, and it receives.
    with_receiver(lab, rx, &opts, |receiver| {
        assert_eq!(
            receiver.started.attachments,
            [(IFACE.to_owned(), AttachMode::Driver)]
        );
        let (mode, prog) = xdp_attachment(lab, rx, topology.rx_ifindex).expect("attached");
        assert_eq!(mode, "driver");
        assert_ne!(prog, first_prog, "the program was not replaced");
        assert_eq!(prog_name(prog), hb_common::maps::PROGRAM);
        let links = pinned_links(&pin_dir);
        assert_eq!(links.len(), 1, "{links:?}");
        assert_eq!(
            links[0].1["id"].as_u64(),
            Some(first_link),
            "a new link replaced the pinned one"
        );
        assert_eq!(links[0].1["prog_id"].as_u64(), Some(prog));

        let good = heartbeat(CLUSTER, beta(), 1);
        send_v4(lab, tx, PORT, &[bytes(&good)]);
        assert_eq!(receiver.next_arrival().packet, good);
        receiver.stop(false);
    })
    .expect("second receiver");

    // What the socket path does before it starts: nothing of alpha's is left attached.
    remove_pinned(&topology.pin_root, "alpha").expect("remove_pinned");
    assert_eq!(xdp_attachment(lab, rx, topology.rx_ifindex), None);
    assert!(!pin_dir.exists());
}

#[test]
fn modes_fall_back_and_failures_leave_nothing_behind() {
    if !require_root("modes_fall_back_and_failures_leave_nothing_behind") {
        return;
    }
    let topology = topology("xdp_modes");
    let Topology { lab, rx, tx, .. } = &topology;

    // skb mode when asked for.
    let opts = options(&topology, XdpSetting::Skb, &[IFACE]);
    with_receiver(lab, rx, &opts, |receiver| {
        assert_eq!(
            receiver.started.attachments,
            [(IFACE.to_owned(), AttachMode::Skb)]
        );
        let (mode, _) = xdp_attachment(lab, rx, topology.rx_ifindex).expect("attached");
        assert_eq!(mode, "generic");
        let good = heartbeat(CLUSTER, beta(), 1);
        send_v4(lab, tx, PORT, &[bytes(&good)]);
        assert_eq!(receiver.next_arrival().packet, good);
    })
    .expect("skb receiver");
    assert_eq!(xdp_attachment(lab, rx, topology.rx_ifindex), None);

    // Loopback has no native XDP: driver mode alone fails, Auto falls back to skb mode.
    let driver_only = options(&topology, XdpSetting::Driver, &["lo"]);
    match with_receiver(lab, rx, &driver_only, |_| ()) {
        Err(XdpError::AttachFailed { iface, reasons }) => {
            assert_eq!(iface, "lo");
            assert!(reasons.starts_with("driver mode:"), "{reasons}");
        }
        other => panic!("driver mode on lo: {other:?}"),
    }
    assert!(
        !topology.pin_root.join("alpha").exists(),
        "a failed start left pins"
    );
    let auto = options(&topology, XdpSetting::Auto, &["lo"]);
    with_receiver(lab, rx, &auto, |receiver| {
        assert_eq!(
            receiver.started.attachments,
            [("lo".to_owned(), AttachMode::Skb)]
        );
    })
    .expect("auto on lo");

    // A missing interface fails the whole start, and the interfaces attached before it are
    // released again: the socket path will need them.
    let missing = options(&topology, XdpSetting::Auto, &[IFACE, "nope0"]);
    match with_receiver(lab, rx, &missing, |_| ()) {
        Err(XdpError::InterfaceMissing(iface)) => assert_eq!(iface, "nope0"),
        other => panic!("missing interface: {other:?}"),
    }
    assert_eq!(xdp_attachment(lab, rx, topology.rx_ifindex), None);
    assert!(
        !topology.pin_root.join("alpha").exists(),
        "a failed start left pins"
    );
}

#[test]
fn a_full_ring_is_counted_and_the_rest_delivered() {
    if !require_root("a_full_ring_is_counted_and_the_rest_delivered") {
        return;
    }
    let topology = topology("xdp_ring_full");
    let Topology { lab, rx, tx, .. } = &topology;
    let opts = options(&topology, XdpSetting::Auto, &[IFACE]);
    // More events than the ring holds (EVENTS_BYTES / 120 bytes per record, about 2 200).
    const SENT: u64 = 4_000;
    with_receiver(lab, rx, &opts, |receiver| {
        let resume = receiver.stall();
        lab.in_netns(tx, || {
            let socket = UdpSocket::bind((TX_IP, SENDER_PORT)).expect("bind sender");
            for seq in 1..=SENT {
                let packet = bytes(&heartbeat(CLUSTER, beta(), seq));
                socket.send_to(&packet, (RX_IP, PORT)).expect("send");
                // Paced so that veth's own queue (256 frames) never overflows.
                if seq % 64 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        })
        .expect("joining the tx namespace");
        drop(resume);
        // The receiver empties the ring in one go once it reads again.
        let mut delivered = vec![receiver.next_arrival().packet.seq()];
        while let Ok(arrival) = receiver.arrivals.recv_timeout(QUIET) {
            delivered.push(arrival.packet.seq());
        }
        let snapshot = receiver.snapshot();
        let accepted = snapshot.counters[Counter::Accepted as usize];
        let ring_full = snapshot.counters[Counter::RingFull as usize];
        assert!(ring_full > 0, "the ring never filled: {snapshot:?}");
        assert_eq!(delivered.len() as u64 + ring_full, accepted, "{snapshot:?}");
        // (veth may drop a few frames before XDP on a busy machine: count what arrived.)
        assert!(accepted <= SENT, "{snapshot:?}");
        // Each delivered once, intact.
        delivered.sort_unstable();
        delivered.dedup();
        assert_eq!(
            delivered.len() as u64 + ring_full,
            accepted,
            "duplicate events"
        );
        assert!(delivered.iter().all(|seq| (1..=SENT).contains(seq)));
        // The peer map still saw every one.
        assert_eq!(snapshot.peers[0].1.packets, accepted);
    })
    .expect("XDP receiver");
}

#[test]
fn only_news_wakes_the_agent() {
    if !require_root("only_news_wakes_the_agent") {
        return;
    }
    let topology = topology("xdp_wake");
    let Topology { lab, rx, tx, .. } = &topology;
    let opts = options(&topology, XdpSetting::Auto, &[IFACE]);
    // A long keepalive: however slowly this machine sends, no gap counts as a silence.
    let with_keepalive = |mut packet: Heartbeat| {
        packet.keepalive_us = 60_000_000u32.to_be_bytes();
        packet
    };
    let routine = |seq| with_keepalive(heartbeat(CLUSTER, beta(), seq));
    let held = |seq| {
        let mut packet = routine(seq);
        packet.held = 1u64.to_be_bytes();
        packet
    };
    let leaving = |seq| {
        let mut packet = held(seq);
        packet.kind = MessageKind::Leaving as u8;
        packet
    };
    let restarted = |seq| {
        let mut packet = held(seq);
        packet.generation = 10u64.to_be_bytes();
        packet
    };
    // (packet, whether it must wake the reader)
    let script = [
        (routine(1), true),  // first word from the peer
        (routine(2), false), // a repeat
        (routine(3), false),
        (held(4), true), // the advert changed
        (held(5), false),
        (leaving(6), true),   // not a periodic heartbeat
        (restarted(1), true), // a new generation
        (held(2), true),      // back to the old generation: changed again
    ];
    with_receiver(lab, rx, &opts, |receiver| {
        for (packet, wakes) in script {
            send_v4(lab, tx, PORT, &[bytes(&packet)]);
            let arrival = receiver.next_arrival();
            assert_eq!(arrival.packet, packet);
            assert_eq!(arrival.woke_agent, wakes, "{packet:?}");
        }
        // One routine heartbeat in WAKE_SAMPLE_EVERY wakes the reader all the same.
        let sample = hb_common::maps::WAKE_SAMPLE_EVERY;
        let sent_so_far = script.len() as u64;
        let mut woke = Vec::new();
        lab.in_netns(tx, || {
            let socket = UdpSocket::bind((TX_IP, SENDER_PORT)).expect("bind sender");
            for seq in 3..3 + sample {
                let packet = bytes(&held(seq));
                socket.send_to(&packet, (RX_IP, PORT)).expect("send");
            }
        })
        .expect("joining the tx namespace");
        for _ in 0..sample {
            let arrival = receiver.next_arrival();
            if arrival.woke_agent {
                woke.push(arrival.packet.seq());
            }
        }
        // The peer's packet count reaches a multiple of the sample exactly once.
        let sampled = 3 + (sample - sent_so_far % sample) - 1;
        assert_eq!(woke, [sampled]);
    })
    .expect("XDP receiver");
}

#[test]
fn vlan_tags_ip_options_and_broken_headers() {
    if !require_root("vlan_tags_ip_options_and_broken_headers") {
        return;
    }
    let topology = topology("xdp_frames");
    let Topology { lab, rx, tx, .. } = &topology;
    let opts = options(&topology, XdpSetting::Auto, &[IFACE]);
    let rx_mac = parse_mac(&lab.mac_address(rx, IFACE).expect("rx mac"));
    let tx_mac = parse_mac(&lab.mac_address(tx, IFACE).expect("tx mac"));
    let heartbeat_len = (8 + hb_common::wire::PACKET_LEN) as u16;
    // NOP, NOP, NOP, end of options: IHL 6.
    let options4 = [1, 1, 1, 0];

    with_receiver(lab, rx, &opts, |receiver| {
        let tagged = heartbeat(CLUSTER, beta(), 1);
        let mut frame = ethernet(rx_mac, tx_mac, Some(ETH_P_8021Q), ETH_P_IP);
        frame.extend(ipv4(&options4, &udp(PORT, heartbeat_len, &bytes(&tagged))));
        let service_tagged = heartbeat(CLUSTER, beta(), 2);
        let mut frame_ad = ethernet(rx_mac, tx_mac, Some(ETH_P_8021AD), ETH_P_IP);
        frame_ad.extend(ipv4(
            &[],
            &udp(PORT, heartbeat_len, &bytes(&service_tagged)),
        ));
        send_frames(lab, tx, topology.tx_ifindex, rx_mac, &[frame, frame_ad]);
        for expected in [tagged, service_tagged] {
            let arrival = receiver.next_arrival();
            assert_eq!(arrival.packet, expected);
            assert_eq!(arrival.source, SocketAddr::from((TX_IP, SENDER_PORT)));
            assert_eq!(arrival.ifindex, topology.rx_ifindex);
        }

        let payload = bytes(&heartbeat(CLUSTER, beta(), 3));
        // UDP claims more than the IP packet holds.
        let mut overlong = ethernet(rx_mac, tx_mac, None, ETH_P_IP);
        let mut body = udp(PORT, heartbeat_len + 8, &payload);
        overlong.extend(ipv4(&[], &body));
        // Headers consistent, but the frame stops 40 bytes into the heartbeat.
        let mut truncated = ethernet(rx_mac, tx_mac, None, ETH_P_IP);
        body = udp(PORT, heartbeat_len, &payload);
        let mut packet = ipv4(&[], &body);
        packet.truncate(packet.len() - 40);
        truncated.extend(packet);
        // IPv6 with a hop-by-hop header before UDP: extension headers are not followed.
        let mut extended = ethernet(rx_mac, tx_mac, None, ETH_P_IPV6);
        let hop_by_hop = [17, 0, 1, 4, 0, 0, 0, 0]; // next UDP, PadN of 4
        let udp6 = udp(PORT, heartbeat_len, &payload);
        extended.extend_from_slice(&[0x60, 0, 0, 0]);
        extended.extend_from_slice(&((hop_by_hop.len() + udp6.len()) as u16).to_be_bytes());
        extended.extend_from_slice(&[0, 64]); // next header hop-by-hop, hop limit
        extended.extend_from_slice(&TX_IP6.octets());
        extended.extend_from_slice(&RX_IP6.octets());
        extended.extend_from_slice(&hop_by_hop);
        extended.extend(udp6);
        send_frames(
            lab,
            tx,
            topology.tx_ifindex,
            rx_mac,
            &[overlong, truncated, extended],
        );
        receiver.assert_quiet();

        let snapshot = receiver.snapshot();
        let count = |counter: Counter| snapshot.counters[counter as usize];
        assert_eq!(count(Counter::Accepted), 2, "{snapshot:?}");
        assert_eq!(count(Counter::DropMalformed), 2, "{snapshot:?}");
        assert!(count(Counter::Passed) >= 1, "{snapshot:?}");
        for counter in [
            Counter::DropBadLength,
            Counter::DropBadMagic,
            Counter::DropBadVersion,
            Counter::DropBadField,
            Counter::DropWrongCluster,
            Counter::DropUnknownPeer,
            Counter::RingFull,
        ] {
            assert_eq!(count(counter), 0, "{counter:?}: {snapshot:?}");
        }
    })
    .expect("XDP receiver");
}

#[test]
fn reload_changes_peers_cluster_and_ports() {
    if !require_root("reload_changes_peers_cluster_and_ports") {
        return;
    }
    let topology = topology("xdp_reload");
    let Topology { lab, rx, tx, .. } = &topology;
    let opts = options(&topology, XdpSetting::Auto, &[IFACE]);
    let old_port_socket = bind_in(lab, rx, (RX_IP, PORT).into());
    let carol = node_id(b"carol");
    const NEW_CLUSTER: u32 = CLUSTER + 7;
    const NEW_PORT: u16 = 695;

    with_receiver(lab, rx, &opts, |receiver| {
        let from_beta = heartbeat(CLUSTER, beta(), 1);
        send_v4(lab, tx, PORT, &[bytes(&from_beta)]);
        assert_eq!(receiver.next_arrival().packet, from_beta);

        // beta leaves the cluster, carol joins; new cluster id; heartbeats move to 695.
        receiver.reload(&[carol], NEW_CLUSTER, &[NEW_PORT]);
        let snapshot = receiver.snapshot();
        assert_eq!(snapshot.peers, [(carol, PeerStats::default())]);
        assert_eq!(snapshot.links, []);

        let from_carol = heartbeat(NEW_CLUSTER, carol, 1);
        let beta_again = heartbeat(NEW_CLUSTER, beta(), 2);
        let old_cluster = heartbeat(CLUSTER, carol, 2);
        send_v4(
            lab,
            tx,
            NEW_PORT,
            &[bytes(&from_carol), bytes(&beta_again), bytes(&old_cluster)],
        );
        assert_eq!(receiver.next_arrival().packet, from_carol);
        receiver.assert_quiet();
        // The old port is an ordinary port now: its datagram reaches the socket.
        send_v4(lab, tx, PORT, &[bytes(&from_carol)]);
        assert_eq!(received(&old_port_socket), [bytes(&from_carol)]);

        let snapshot = receiver.snapshot();
        let count = |counter: Counter| snapshot.counters[counter as usize];
        assert_eq!(count(Counter::Accepted), 2, "{snapshot:?}");
        assert_eq!(count(Counter::DropUnknownPeer), 1, "{snapshot:?}");
        assert_eq!(count(Counter::DropWrongCluster), 1, "{snapshot:?}");
        assert_eq!(snapshot.peers.len(), 1);
        assert_eq!(snapshot.peers[0].1.packets, 1);
    })
    .expect("XDP receiver");
}

#[test]
fn restart_follows_renames_and_mode_changes() {
    if !require_root("restart_follows_renames_and_mode_changes") {
        return;
    }
    let topology = topology("xdp_rename");
    let Topology { lab, rx, tx, .. } = &topology;
    let pin_dir = topology.pin_root.join("alpha").join("v1");
    let link_id = |dir: &Path| {
        let links = pinned_links(dir);
        assert_eq!(links.len(), 1, "{links:?}");
        (
            links[0].0.clone(),
            links[0].1["id"].as_u64().expect("link id"),
        )
    };

    // A run in driver mode ends like a crash.
    let opts = options(&topology, XdpSetting::Auto, &[IFACE]);
    with_receiver(lab, rx, &opts, |receiver| receiver.stop(false)).expect("first receiver");
    let (_, first_link) = link_id(&pin_dir);

    // The interface is renamed meanwhile: the next run finds its link by interface index,
    // swaps the program in place and renames the pin.
    for args in [
        &["link", "set", "dev", IFACE, "down"][..],
        &["link", "set", "dev", IFACE, "name", "hb1"],
        &["link", "set", "dev", "hb1", "up"],
    ] {
        lab.ip(rx, args).expect("renaming hb0");
    }
    let renamed = options(&topology, XdpSetting::Auto, &["hb1"]);
    with_receiver(lab, rx, &renamed, |receiver| {
        assert_eq!(
            receiver.started.attachments,
            [("hb1".to_owned(), AttachMode::Driver)]
        );
        let (name, link) = link_id(&pin_dir);
        assert_eq!(link, first_link, "not replaced in place");
        assert_eq!(name, format!("link:{}:driver:hb1", topology.rx_ifindex));
        receiver.stop(false);
    })
    .expect("receiver after the rename");

    // Now skb mode is asked for: the driver-mode link cannot be kept, so it is detached
    // before a new one is attached; never two programs.
    let skb = options(&topology, XdpSetting::Skb, &["hb1"]);
    with_receiver(lab, rx, &skb, |receiver| {
        assert_eq!(
            receiver.started.attachments,
            [("hb1".to_owned(), AttachMode::Skb)]
        );
        let (name, link) = link_id(&pin_dir);
        assert_ne!(link, first_link);
        assert_eq!(name, format!("link:{}:skb:hb1", topology.rx_ifindex));
        let (mode, _) = xdp_attachment(lab, rx, topology.rx_ifindex).expect("attached");
        assert_eq!(mode, "generic");
        let good = heartbeat(CLUSTER, beta(), 1);
        send_v4(lab, tx, PORT, &[bytes(&good)]);
        assert_eq!(receiver.next_arrival().packet, good);
    })
    .expect("receiver in skb mode");
    assert_eq!(xdp_attachment(lab, rx, topology.rx_ifindex), None);
}
