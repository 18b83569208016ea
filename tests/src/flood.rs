//! A flood on the heartbeat port: junk and forged heartbeats from a third namespace, as fast
//! as this machine can send them (issue 7, "a flood").
//!
//! [`add_flood_source`] attaches a namespace `flood` to both of a [`Cluster`]'s bridges
//! (heartbeats travel on both links); [`Flood::start`] sends from it on several threads, each
//! with one connected UDP socket per target and `sendmmsg` batches, until the spec's
//! duration is over or the flood is finished early. Two kinds of packets, mixed at random:
//!
//! - **junk**: random bytes of random length (0 to [`MAX_JUNK_LEN`]; one in eight exactly a
//!   heartbeat's length, so the shape check, not only the length check, has to reject it);
//! - **forged heartbeats**: the right magic, version, cluster id and a configured peer's node
//!   id, a valid kind, state and key index, a fresh sequence number, and a MAC that is random
//!   bytes: what a sender without the key produces, indistinguishable for the receiver from
//!   a MAC made with a wrong key. These pass every check the kernel can make, so the agent
//!   must authenticate each one.
//!
//! Nothing here decides what the receivers should do; the benchmark and the tests read the
//! agents' counters.

use std::fs::File;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hb_common::wire::{
    Heartbeat, MessageKind, NodeState, BROADCAST_NODE, MAC_LEN, MAGIC, PACKET_LEN, VERSION,
};
use nix::sched::{setns, CloneFlags};

use crate::cluster::Cluster;
use crate::error::{LabError, Result};
use crate::lab::Netns;

/// The flood source's address on the service LAN and on the heartbeat link (free in the
/// cluster's plan: nodes are .11 up, web servers .21 to .29, the client .100).
pub const FLOOD_SVC_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 66);
pub const FLOOD_HB_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 66);

/// The heartbeat port of the lab's clusters (`udpport 694`).
pub const HEARTBEAT_PORT: u16 = hb_common::wire::DEFAULT_UDP_PORT;

/// Longest junk payload: well under one frame, so nothing is fragmented.
pub const MAX_JUNK_LEN: usize = 512;

/// Packets handed to the kernel per `sendmmsg`.
const BATCH: usize = 64;

/// Random bytes junk payloads and MACs are cut from (cheaper than drawing every byte).
const POOL_LEN: usize = 64 * 1024;

/// Adds namespace `flood` to `cluster`'s lab, cabled to its service bridge as `eth0`
/// ([`FLOOD_SVC_ADDR`]) and to its heartbeat bridge as `eth1` ([`FLOOD_HB_ADDR`]).
pub fn add_flood_source(cluster: &Cluster) -> Result<Netns> {
    let lab = &cluster.lab;
    let netns = lab.add_netns("flood")?;
    lab.connect(&netns, "eth0", &cluster.svc)?;
    lab.connect(&netns, "eth1", &cluster.hb)?;
    lab.add_address(&netns, "eth0", &format!("{FLOOD_SVC_ADDR}/24"))?;
    lab.add_address(&netns, "eth1", &format!("{FLOOD_HB_ADDR}/24"))?;
    Ok(netns)
}

/// Every heartbeat address of every node of `cluster`, on `port` (both links).
pub fn cluster_targets(cluster: &Cluster, port: u16) -> Vec<SocketAddrV4> {
    cluster
        .nodes
        .iter()
        .flat_map(|node| {
            [
                SocketAddrV4::new(node.hb_addr, port),
                SocketAddrV4::new(node.svc_addr, port),
            ]
        })
        .collect()
}

/// What the forged heartbeats claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forgery {
    /// The cluster's id (`hb-agent status --json`, `cluster_id`).
    pub cluster_id: u32,
    /// Node ids the packets claim to come from, used in turn (configured peers: the kernel
    /// then passes them on to the agent).
    pub node_ids: Vec<u32>,
    /// The `authkeys` index the packets name (one the receivers have, so they must run the
    /// MAC to reject the packet).
    pub key_index: u8,
    /// The keepalive the packets announce, in µs.
    pub keepalive_us: u32,
}

impl Forgery {
    /// Forged heartbeats claiming to be each of `node_names` in turn.
    pub fn claiming(cluster_id: u32, node_names: &[&str], key_index: u8) -> Forgery {
        Forgery {
            cluster_id,
            node_ids: node_names
                .iter()
                .map(|name| hb_common::wire::node_id(name.as_bytes()))
                .collect(),
            key_index,
            keepalive_us: 5_000,
        }
    }

    /// One forged heartbeat: everything the kernel checks is right; `mac` is not.
    pub fn packet(&self, node_id: u32, generation: u64, seq: u64, mac: [u8; MAC_LEN]) -> Heartbeat {
        Heartbeat {
            magic: MAGIC,
            version: VERSION,
            kind: MessageKind::Heartbeat as u8,
            state: NodeState::Active as u8,
            key_index: self.key_index,
            cluster_id: self.cluster_id.to_be_bytes(),
            node_id: node_id.to_be_bytes(),
            dest_node: BROADCAST_NODE.to_be_bytes(),
            keepalive_us: self.keepalive_us.to_be_bytes(),
            generation: generation.to_be_bytes(),
            seq: seq.to_be_bytes(),
            // Claims the first group: the packet a takeover attempt would send.
            held: 1u64.to_be_bytes(),
            arg: 0u64.to_be_bytes(),
            mac,
            reserved: [0; 4],
        }
    }
}

/// What to send, where, for how long.
#[derive(Clone, Debug)]
pub struct FloodSpec {
    pub targets: Vec<SocketAddrV4>,
    pub duration: Duration,
    /// Sending threads (each sends to every target in turn).
    pub threads: usize,
    /// Share of forged heartbeats among the packets, in percent; the rest is junk.
    pub forged_percent: u8,
    pub forgery: Forgery,
}

/// What the flood source sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FloodReport {
    pub junk_sent: u64,
    pub forged_sent: u64,
    /// `sendmmsg` calls the kernel refused (each loses a whole batch).
    pub send_errors: u64,
    pub elapsed: Duration,
    pub threads: usize,
    /// CPU time the sending threads used (user + system, kernel send path included), when
    /// `/proc/thread-self/stat` could be read.
    pub cpu: Option<Duration>,
}

impl FloodReport {
    pub fn sent(&self) -> u64 {
        self.junk_sent + self.forged_sent
    }

    /// Packets sent per second.
    pub fn rate_pps(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.sent() as f64 / seconds
        } else {
            0.0
        }
    }
}

/// A running flood. Dropping it stops the senders and waits for them.
pub struct Flood {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Result<FloodReport>>>,
    started: Instant,
    duration: Duration,
}

impl Flood {
    /// Starts `spec.threads` senders inside `netns`.
    pub fn start(netns: &Netns, spec: &FloodSpec) -> Result<Flood> {
        if spec.targets.is_empty() || spec.threads == 0 {
            return Err(LabError::Cluster(
                "a flood needs at least one target and one thread".into(),
            ));
        }
        if spec.forgery.node_ids.is_empty() && spec.forged_percent > 0 {
            return Err(LabError::Cluster(
                "forged heartbeats need at least one node id to claim".into(),
            ));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let deadline = started + spec.duration;
        let mut flood = Flood {
            stop: Arc::clone(&stop),
            workers: Vec::new(),
            started,
            duration: spec.duration,
        };
        for index in 0..spec.threads {
            let path = netns.path();
            let namespace = File::open(&path).map_err(|err| LabError::io("opening", &path, err))?;
            let seed = random_seed()? ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let spec = spec.clone();
            let stop = Arc::clone(&stop);
            let name = netns.name().to_owned();
            let worker = std::thread::Builder::new()
                .name(format!("flood-{index}"))
                .spawn(move || -> Result<FloodReport> {
                    // Only this thread changes namespace; it ends with the flood.
                    setns(&namespace, CloneFlags::CLONE_NEWNET).map_err(|err| {
                        LabError::InNetns {
                            netns: name,
                            reason: format!("setns: {err}"),
                        }
                    })?;
                    send_until(&spec, seed, deadline, &stop)
                })
                .map_err(|err| LabError::io("starting a flood thread", "flood", err))?;
            flood.workers.push(worker);
        }
        Ok(flood)
    }

    /// Waits for the spec's duration to end, then for the senders.
    pub fn wait(self) -> Result<FloodReport> {
        let end = self.started + self.duration;
        if let Some(left) = end.checked_duration_since(Instant::now()) {
            std::thread::sleep(left);
        }
        self.finish()
    }

    /// Stops the senders now and adds up what they sent.
    pub fn finish(mut self) -> Result<FloodReport> {
        self.stop.store(true, Ordering::Relaxed);
        let mut reports = Vec::new();
        for worker in self.workers.drain(..) {
            match worker.join() {
                Ok(report) => reports.push(report?),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(FloodReport {
            junk_sent: reports.iter().map(|r| r.junk_sent).sum(),
            forged_sent: reports.iter().map(|r| r.forged_sent).sum(),
            send_errors: reports.iter().map(|r| r.send_errors).sum(),
            elapsed: reports.iter().map(|r| r.elapsed).max().unwrap_or_default(),
            threads: reports.len(),
            cpu: reports.iter().map(|r| r.cpu).sum(),
        })
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers.drain(..) {
            // Dropped on an error path: what the senders report no longer matters.
            let _ = worker.join();
        }
    }
}

/// One sender's loop: batches of random packets to every target in turn.
fn send_until(
    spec: &FloodSpec,
    seed: u64,
    deadline: Instant,
    stop: &AtomicBool,
) -> Result<FloodReport> {
    let started = Instant::now();
    let sockets = spec
        .targets
        .iter()
        .map(|target| {
            let socket = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
                .map_err(|err| LabError::io("binding a flood socket", "0.0.0.0:0", err))?;
            socket.connect(target).map_err(|err| {
                LabError::io("connecting a flood socket", target.to_string(), err)
            })?;
            Ok(socket)
        })
        .collect::<Result<Vec<UdpSocket>>>()?;
    let mut rng = XorShift::new(seed);
    let mut pool = vec![0u8; POOL_LEN + MAX_JUNK_LEN];
    pool.chunks_mut(8)
        .for_each(|chunk| chunk.copy_from_slice(&rng.next().to_le_bytes()[..chunk.len()]));
    // Each sender claims its own random generation: sequence numbers then never repeat.
    let generation = rng.next() >> 1;
    let mut seq: u64 = 1;
    let mut forged = [[0u8; PACKET_LEN]; BATCH];
    let mut report = FloodReport {
        threads: 1,
        ..FloodReport::default()
    };
    let mut target = 0;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let mut is_forged = [false; BATCH];
        let mut slices: [(*const u8, usize); BATCH] = [(std::ptr::null(), 0); BATCH];
        for slot in 0..BATCH {
            if (rng.next() % 100) < u64::from(spec.forged_percent) {
                let node_id = spec.forgery.node_ids[seq as usize % spec.forgery.node_ids.len()];
                let offset = rng.below(POOL_LEN);
                let mut mac = [0u8; MAC_LEN];
                mac.copy_from_slice(&pool[offset..offset + MAC_LEN]);
                let packet = spec.forgery.packet(node_id, generation, seq, mac);
                seq += 1;
                forged[slot].copy_from_slice(bytemuck::bytes_of(&packet));
                slices[slot] = (forged[slot].as_ptr(), PACKET_LEN);
                is_forged[slot] = true;
            } else {
                let len = if rng.next().is_multiple_of(8) {
                    PACKET_LEN
                } else {
                    rng.below(MAX_JUNK_LEN + 1)
                };
                let offset = rng.below(POOL_LEN);
                slices[slot] = (pool[offset..offset + len].as_ptr(), len);
            }
        }
        match send_batch(&sockets[target], &slices) {
            Ok(sent) => {
                let forged_sent = is_forged[..sent].iter().filter(|f| **f).count() as u64;
                report.forged_sent += forged_sent;
                report.junk_sent += sent as u64 - forged_sent;
            }
            Err(_) => report.send_errors += 1,
        }
        target = (target + 1) % sockets.len();
    }
    report.elapsed = started.elapsed();
    report.cpu = thread_cpu();
    Ok(report)
}

/// This thread's CPU time so far (utime + stime of `/proc/thread-self/stat`).
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Fields 14 and 15 of the file; the first after the name is field 3.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second).ok().filter(|&t| t > 0)?;
    Some(Duration::from_millis(ticks * 1000 / per_second))
}

/// Sends `packets` (pointer and length into buffers the caller keeps alive) on the
/// connected `socket` with one `sendmmsg`; returns how many the kernel took.
fn send_batch(socket: &UdpSocket, packets: &[(*const u8, usize); BATCH]) -> std::io::Result<usize> {
    let mut iovecs: [libc::iovec; BATCH] = std::array::from_fn(|i| libc::iovec {
        iov_base: packets[i].0 as *mut libc::c_void,
        iov_len: packets[i].1,
    });
    // SAFETY: mmsghdr is a C struct of integers and pointers, for which all-zero bytes are
    // a valid value (no name, no control data).
    let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for (header, iovec) in headers.iter_mut().zip(iovecs.iter_mut()) {
        header.msg_hdr.msg_iov = iovec;
        header.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: every header points at one iovec of `iovecs`, each of which points at
    // `iov_len` readable bytes that the caller keeps alive for the call; the socket is
    // connected, so no address is needed; the kernel only reads these buffers.
    let sent = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            headers.as_mut_ptr(),
            BATCH as libc::c_uint,
            0,
        )
    };
    if sent < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

/// xorshift64*: fast, and random enough for junk.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        XorShift(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..bound` (`bound` > 0).
    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

fn random_seed() -> Result<u64> {
    let path = "/dev/urandom";
    let mut bytes = [0u8; 8];
    File::open(path)
        .and_then(|mut file| file.read_exact(&mut bytes))
        .map_err(|err| LabError::io("reading", path, err))?;
    Ok(u64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_packets_pass_the_kernels_checks_but_carry_the_given_mac() {
        let forgery = Forgery::claiming(0xC1C1_0001, &["lb1", "lb2"], 1);
        let mac = [7u8; MAC_LEN];
        let packet = forgery.packet(forgery.node_ids[1], 9, 42, mac);
        assert_eq!(packet.check_shape(0xC1C1_0001), Ok(()));
        assert_eq!(packet.node_id(), hb_common::wire::node_id(b"lb2"));
        assert_eq!((packet.generation(), packet.seq()), (9, 42));
        assert_eq!(packet.mac, mac);
        assert_eq!(bytemuck::bytes_of(&packet).len(), PACKET_LEN);
        // Another cluster's id would be dropped in the kernel: the forgery must match.
        assert!(packet.check_shape(0xC1C1_0002).is_err());
    }

    #[test]
    fn random_numbers_stay_in_bounds_and_vary() {
        let mut rng = XorShift::new(0);
        let draws: Vec<usize> = (0..1000).map(|_| rng.below(MAX_JUNK_LEN + 1)).collect();
        assert!(draws.iter().all(|&d| d <= MAX_JUNK_LEN));
        let distinct: std::collections::HashSet<usize> = draws.iter().copied().collect();
        assert!(distinct.len() > 300, "{} distinct values", distinct.len());
    }

    #[test]
    fn a_thread_reads_its_own_cpu_time() {
        let start = Instant::now();
        let mut spin = 0u64;
        while start.elapsed() < Duration::from_millis(50) {
            spin = spin.wrapping_add(1);
        }
        assert!(spin > 0);
        assert!(thread_cpu().is_some());
    }

    #[test]
    fn a_report_computes_its_rate() {
        let report = FloodReport {
            junk_sent: 600,
            forged_sent: 400,
            send_errors: 0,
            elapsed: Duration::from_secs(2),
            threads: 2,
            cpu: None,
        };
        assert_eq!(report.sent(), 1000);
        assert_eq!(report.rate_pps(), 500.0);
        assert_eq!(FloodReport::default().rate_pps(), 0.0);
    }
}
