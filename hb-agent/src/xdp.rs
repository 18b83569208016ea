//! The kernel receive path: loads the `hb_xdp` program (built from `hb-ebpf` by this
//! crate's build script), attaches it to every heartbeat interface, and reads the
//! heartbeats it hands over through the `HB_EVENTS` ring buffer.
//!
//! Maps and one link per interface are pinned under `<pin_root>/<node>/v1/` so that
//! `bpftool map dump pinned …` shows them by field name, and so that a restart replaces the
//! program on each link atomically (`bpf_link_update`): the interface is never without the
//! program, nor with two. [`XdpReceiver::shutdown`] detaches and removes the pins; merely
//! dropping the receiver (a crash) leaves the program attached for the next start to
//! replace. A path that decides against XDP must call [`remove_pinned`] so that a program
//! left by an earlier run does not swallow the heartbeats its sockets wait for.
//!
//! The decision loop owns the [`XdpReceiver`]: it awaits [`XdpReceiver::readable`], then
//! takes the heartbeats with [`XdpReceiver::drain`], and drains once more right before it
//! declares a peer dead.

mod error;
mod pins;
mod sys;

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::XdpLink;
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, EbpfError, EbpfLoader};
use aya_log::EbpfLogger;
use hb_common::maps::{
    Counter, LinkStats, PeerLinkKey, PeerStats, XdpConfig, CONFIG_MAP, COUNTERS_MAP, EVENTS_MAP,
    MAX_PEERS, MAX_UDP_PORTS, PEERS_MAP, PEER_LINKS_MAP, PROGRAM,
};
use hb_common::wire::BROADCAST_NODE;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::arrival::Arrival;
use crate::config::XdpSetting;

pub use error::XdpError;
pub use pins::{ensure_bpffs, LAYOUT_VERSION};

/// Where pins go unless the configuration says otherwise.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/hb-agent";

/// Every pinned map, by its name in the object.
const PINNED_MAPS: [&str; 5] = [
    CONFIG_MAP,
    PEERS_MAP,
    PEER_LINKS_MAP,
    COUNTERS_MAP,
    EVENTS_MAP,
];

/// The XDP object, built by `build.rs` for `bpfel-unknown-none`.
fn ebpf_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hb-ebpf"))
}

/// How the program runs on one interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachMode {
    /// Native XDP, in the driver's receive path.
    Driver,
    /// Generic XDP, after the kernel has built an skb: slower, works everywhere.
    Skb,
}

impl AttachMode {
    pub const fn name(self) -> &'static str {
        match self {
            AttachMode::Driver => "driver",
            AttachMode::Skb => "skb",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "driver" => Some(AttachMode::Driver),
            "skb" => Some(AttachMode::Skb),
            _ => None,
        }
    }

    const fn xdp_mode(self) -> XdpMode {
        match self {
            AttachMode::Driver => XdpMode::Driver,
            AttachMode::Skb => XdpMode::Skb,
        }
    }
}

impl std::fmt::Display for AttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The modes a setting allows, in the order they are tried.
fn allowed_modes(setting: XdpSetting) -> Result<&'static [AttachMode], XdpError> {
    match setting {
        XdpSetting::Auto => Ok(&[AttachMode::Driver, AttachMode::Skb]),
        XdpSetting::Driver => Ok(&[AttachMode::Driver]),
        XdpSetting::Skb => Ok(&[AttachMode::Skb]),
        XdpSetting::Off => Err(XdpError::Disabled),
    }
}

/// What [`XdpReceiver::start`] needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpOptions {
    /// This node's name: names the pin directory.
    pub node: String,
    /// Usually [`DEFAULT_PIN_ROOT`]; must be on bpffs (under `/sys/fs/bpf` it is mounted
    /// if nothing is).
    pub pin_root: PathBuf,
    /// Every interface that carries heartbeats.
    pub interfaces: Vec<String>,
    pub setting: XdpSetting,
    pub cluster_id: u32,
    /// Destination ports that carry heartbeats (at most [`MAX_UDP_PORTS`]).
    pub udp_ports: Vec<u16>,
    /// Node ids whose heartbeats are accepted: every node but this one.
    pub peers: Vec<u32>,
}

impl XdpOptions {
    /// `<pin_root>/<node>/v1`: where this node's maps and links are pinned.
    pub fn pin_dir(&self) -> Result<PathBuf, XdpError> {
        pins::pin_dir(&self.pin_root, &self.node)
    }
}

/// The program's configuration map value for these ports.
fn xdp_config(cluster_id: u32, udp_ports: &[u16]) -> Result<XdpConfig, XdpError> {
    let ports: BTreeSet<u16> = udp_ports.iter().copied().collect();
    if ports.is_empty() || ports.contains(&0) || ports.len() > MAX_UDP_PORTS {
        return Err(XdpError::InvalidOptions(format!(
            "heartbeat ports {udp_ports:?}: need 1 to {MAX_UDP_PORTS} distinct nonzero ports"
        )));
    }
    let mut config = XdpConfig {
        cluster_id,
        n_ports: ports.len() as u32,
        udp_ports: [0; MAX_UDP_PORTS],
    };
    for (slot, port) in config.udp_ports.iter_mut().zip(ports) {
        *slot = port;
    }
    Ok(config)
}

/// The peer ids, deduplicated, checked against the map's capacity.
fn peer_ids(peers: &[u32]) -> Result<BTreeSet<u32>, XdpError> {
    let ids: BTreeSet<u32> = peers.iter().copied().collect();
    if ids.contains(&BROADCAST_NODE) {
        return Err(XdpError::InvalidOptions(format!(
            "node id {BROADCAST_NODE} is the broadcast id, not a peer"
        )));
    }
    if ids.len() > MAX_PEERS as usize {
        return Err(XdpError::InvalidOptions(format!(
            "{} peers, at most {MAX_PEERS} supported",
            ids.len()
        )));
    }
    Ok(ids)
}

/// The interfaces, deduplicated in order.
fn interface_list(interfaces: &[String]) -> Result<Vec<String>, XdpError> {
    let mut list: Vec<String> = Vec::new();
    for iface in interfaces {
        if iface.is_empty() || iface.contains('/') {
            return Err(XdpError::InvalidOptions(format!(
                "interface name {iface:?}"
            )));
        }
        if !list.contains(iface) {
            list.push(iface.clone());
        }
    }
    if list.is_empty() {
        return Err(XdpError::InvalidOptions("no heartbeat interfaces".into()));
    }
    Ok(list)
}

/// Forwards the program's aya-log records to `tracing`, under the target `hb_ebpf`.
struct EbpfLogForwarder;

impl log::Log for EbpfLogForwarder {
    fn enabled(&self, _metadata: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let message = record.args();
        match record.level() {
            log::Level::Error => tracing::error!(target: "hb_ebpf", "{message}"),
            log::Level::Warn => tracing::warn!(target: "hb_ebpf", "{message}"),
            log::Level::Info => tracing::info!(target: "hb_ebpf", "{message}"),
            log::Level::Debug => tracing::debug!(target: "hb_ebpf", "{message}"),
            log::Level::Trace => tracing::trace!(target: "hb_ebpf", "{message}"),
        }
    }

    fn flush(&self) {}
}

/// One attached interface; the link stays attached while its pin exists.
struct AttachedLink {
    iface: String,
    mode: AttachMode,
    // Held so the link cannot be released between start and shutdown even if someone
    // removes the pin.
    _link: FdLink,
}

/// The running XDP receive path of one node.
pub struct XdpReceiver {
    pin_dir: PathBuf,
    attachments: Vec<(String, AttachMode)>,
    links: Vec<AttachedLink>,
    ring: AsyncFd<RingBuf<MapData>>,
    /// Boxed: the map handles are large, and callers keep the receiver in an enum beside
    /// the (smaller) socket receiver.
    kernel: Box<KernelObjects>,
    /// Decoded by `readable` (which must empty the ring before it may wait again), not
    /// yet taken by `drain`.
    pending: Vec<Arrival>,
    undecodable: u64,
}

/// The loaded object's maps and log reader.
struct KernelObjects {
    config: Array<MapData, XdpConfig>,
    peers: HashMap<MapData, u32, PeerStats>,
    peer_links: HashMap<MapData, PeerLinkKey, LinkStats>,
    counters: PerCpuArray<MapData, u64>,
    logger: AsyncFd<EbpfLogger<EbpfLogForwarder>>,
    // Keeps the program's descriptor, and the maps not taken out above, open for the
    // receiver's lifetime.
    _ebpf: Ebpf,
}

impl std::fmt::Debug for XdpReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpReceiver")
            .field("pin_dir", &self.pin_dir)
            .field("attachments", &self.attachments)
            .field("pending", &self.pending.len())
            .field("undecodable", &self.undecodable)
            .finish_non_exhaustive()
    }
}

impl XdpReceiver {
    /// Loads the program, fills HB_CONFIG and HB_PEERS, pins the maps, and attaches to every
    /// interface (replacing the program on a link pinned by an earlier run of this node).
    ///
    /// Must run inside a tokio runtime with I/O enabled. On error nothing of this node is
    /// left attached or pinned (not even an earlier run's program), so the caller can fall
    /// back to sockets.
    pub fn start(opts: &XdpOptions) -> Result<Self, XdpError> {
        let pin_dir = opts.pin_dir()?;
        match Self::start_in(opts, &pin_dir) {
            Ok(receiver) => Ok(receiver),
            Err(error) => {
                if let Err(cleanup) = pins::remove_dir(&pin_dir) {
                    tracing::warn!(pin_dir = %pin_dir.display(), error = %cleanup,
                        "cannot remove this node's pinned XDP objects after a failed start");
                }
                Err(error)
            }
        }
    }

    fn start_in(opts: &XdpOptions, pin_dir: &Path) -> Result<Self, XdpError> {
        let modes = allowed_modes(opts.setting)?;
        let config = xdp_config(opts.cluster_id, &opts.udp_ports)?;
        let peer_ids = peer_ids(&opts.peers)?;
        let interfaces = interface_list(&opts.interfaces)?;
        // AsyncFd panics outside a runtime; say so instead.
        tokio::runtime::Handle::try_current()
            .map_err(|error| XdpError::Ring(io::Error::other(error)))?;
        raise_memlock_limit();

        let mut ebpf = EbpfLoader::new()
            .load(ebpf_object())
            .map_err(XdpError::from_load)?;
        // Before the program loads: the log map's descriptor must stay open (in the logger).
        let logger =
            EbpfLogger::init_with_logger(&mut ebpf, EbpfLogForwarder).map_err(XdpError::Logger)?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or(XdpError::MissingProgram)?
            .try_into()
            .map_err(XdpError::Program)?;
        program
            .load()
            .map_err(|error| XdpError::from_load(EbpfError::ProgramError(error)))?;

        pins::ensure_bpffs(&opts.pin_root)?;
        std::fs::create_dir_all(pin_dir).map_err(|error| pins::pin_error(pin_dir, error))?;
        pin_maps(&ebpf, pin_dir)?;

        let mut config_map: Array<MapData, XdpConfig> = take_map(&mut ebpf, CONFIG_MAP)?;
        config_map
            .set(0, config, 0)
            .map_err(map_error(CONFIG_MAP))?;
        let mut peers: HashMap<MapData, u32, PeerStats> = take_map(&mut ebpf, PEERS_MAP)?;
        for id in &peer_ids {
            peers
                .insert(id, PeerStats::default(), 0)
                .map_err(map_error(PEERS_MAP))?;
        }
        let peer_links = take_map(&mut ebpf, PEER_LINKS_MAP)?;
        let counters = take_map(&mut ebpf, COUNTERS_MAP)?;
        let ring: RingBuf<MapData> = take_map(&mut ebpf, EVENTS_MAP)?;

        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or(XdpError::MissingProgram)?
            .try_into()
            .map_err(XdpError::Program)?;
        let mut previous = pins::link_pins(pin_dir)?;
        let mut links = Vec::with_capacity(interfaces.len());
        for iface in &interfaces {
            let ifindex = nix::net::if_::if_nametoindex(iface.as_str())
                .map_err(|_| XdpError::InterfaceMissing(iface.clone()))?;
            // This device's links from an earlier run, whatever name it had then.
            let (own, rest) = previous
                .into_iter()
                .partition(|(_, pin)| pin.ifindex == ifindex);
            previous = rest;
            links.push(attach_interface(
                program, pin_dir, iface, ifindex, modes, own,
            )?);
        }
        for (path, pin) in &previous {
            tracing::info!(iface = %pin.iface, ifindex = pin.ifindex,
                "removing an XDP link of an interface that is gone, renamed or no longer configured");
            pins::remove_link(path, pin)?;
        }

        // SAFETY: the RingBuf owns its map descriptor (MapData holds the OwnedFd) and is
        // moved into the AsyncFd, so the descriptor stays open and the same until the AsyncFd
        // drops; as_raw_fd always returns that descriptor.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|error| XdpError::Ring(error.into()))?;
        // SAFETY: as above: the logger owns the RingBuf of its log map.
        let logger = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
            .map_err(|error| XdpError::Ring(error.into()))?;
        let attachments = links
            .iter()
            .map(|link| (link.iface.clone(), link.mode))
            .collect();
        tracing::info!(pin_dir = %pin_dir.display(), peers = peer_ids.len(), ports = ?opts.udp_ports,
            "XDP receive path running");
        Ok(Self {
            pin_dir: pin_dir.to_owned(),
            attachments,
            links,
            ring,
            kernel: Box::new(KernelObjects {
                config: config_map,
                peers,
                peer_links,
                counters,
                logger,
                _ebpf: ebpf,
            }),
            pending: Vec::new(),
            undecodable: 0,
        })
    }

    /// Each interface and the mode the program runs in there.
    pub fn attachments(&self) -> &[(String, AttachMode)] {
        &self.attachments
    }

    /// `<pin_root>/<node>/v1`.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Waits until heartbeats are ready for [`drain`](Self::drain). Cancel-safe: nothing
    /// read is lost if the future is dropped. Also forwards the program's log records.
    pub async fn readable(&mut self) -> Result<(), XdpError> {
        loop {
            if !self.pending.is_empty() {
                return Ok(());
            }
            tokio::select! {
                guard = self.ring.readable_mut() => {
                    let mut guard = guard.map_err(XdpError::Ring)?;
                    // Edge-triggered: empty the ring before clearing readiness, or an event
                    // that arrived meanwhile would wait for the next one.
                    read_ring(guard.get_inner_mut(), &mut self.pending, &mut self.undecodable);
                    guard.clear_ready();
                }
                guard = self.kernel.logger.readable_mut() => {
                    let mut guard = guard.map_err(XdpError::Ring)?;
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
            }
        }
    }

    /// Appends every heartbeat received so far to `out`, without waiting, and returns how
    /// many. Reads the ring to empty, so it is also the final check before a peer is
    /// declared dead.
    pub fn drain(&mut self, out: &mut Vec<Arrival>) -> usize {
        let before = out.len();
        out.append(&mut self.pending);
        read_ring(self.ring.get_mut(), out, &mut self.undecodable);
        out.len() - before
    }

    /// Ring records that did not decode as a heartbeat event (a build mismatch).
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }

    /// The program's counters, indexed by `Counter as usize`, summed over CPUs.
    pub fn counters(&self) -> Result<[u64; Counter::COUNT as usize], XdpError> {
        let mut totals = [0u64; Counter::COUNT as usize];
        for counter in Counter::ALL {
            let values = self
                .kernel
                .counters
                .get(&(counter as u32), 0)
                .map_err(map_error(COUNTERS_MAP))?;
            totals[counter as usize] = values.iter().copied().fold(0u64, u64::wrapping_add);
        }
        Ok(totals)
    }

    /// What the kernel last saw of each peer, by node id (informational: liveness is
    /// decided on authenticated arrivals).
    pub fn peer_stats(&self) -> Result<Vec<(u32, PeerStats)>, XdpError> {
        let mut stats = self
            .kernel
            .peers
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_error(PEERS_MAP))?;
        stats.sort_by_key(|(id, _)| *id);
        Ok(stats)
    }

    /// Per peer and interface: what the kernel last saw.
    pub fn link_stats(&self) -> Result<Vec<(PeerLinkKey, LinkStats)>, XdpError> {
        let mut stats = self
            .kernel
            .peer_links
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_error(PEER_LINKS_MAP))?;
        stats.sort_by_key(|(key, _)| (key.node_id, key.ifindex));
        Ok(stats)
    }

    /// Replaces the set of accepted peers (configuration reload). Kept peers keep their
    /// statistics; removed peers lose theirs, per-link entries included.
    pub fn set_peers(&mut self, peers: &[u32]) -> Result<(), XdpError> {
        let wanted = peer_ids(peers)?;
        let current = self
            .kernel
            .peers
            .keys()
            .collect::<Result<BTreeSet<u32>, _>>()
            .map_err(map_error(PEERS_MAP))?;
        for id in wanted.difference(&current) {
            self.kernel
                .peers
                .insert(id, PeerStats::default(), 0)
                .map_err(map_error(PEERS_MAP))?;
        }
        for id in current.difference(&wanted) {
            self.kernel.peers.remove(id).map_err(map_error(PEERS_MAP))?;
        }
        let stale_links = self
            .kernel
            .peer_links
            .keys()
            .collect::<Result<Vec<PeerLinkKey>, _>>()
            .map_err(map_error(PEER_LINKS_MAP))?
            .into_iter()
            .filter(|key| !wanted.contains(&key.node_id));
        for key in stale_links {
            match self.kernel.peer_links.remove(&key) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(error) => return Err(map_error(PEER_LINKS_MAP)(error)),
            }
        }
        Ok(())
    }

    /// Replaces the cluster id and heartbeat ports (configuration reload).
    pub fn set_config(&mut self, cluster_id: u32, udp_ports: &[u16]) -> Result<(), XdpError> {
        let config = xdp_config(cluster_id, udp_ports)?;
        self.kernel
            .config
            .set(0, config, 0)
            .map_err(map_error(CONFIG_MAP))
    }

    /// Detaches the program from every interface and removes this node's pins.
    pub fn shutdown(self) -> Result<(), XdpError> {
        let Self { pin_dir, links, .. } = self;
        // Detaches every pinned link at once, then unpins everything.
        let result = pins::remove_dir(&pin_dir);
        // A link whose pin someone else removed goes with our descriptor, here.
        for link in links {
            tracing::info!(iface = %link.iface, mode = %link.mode, "XDP detached");
        }
        result
    }
}

/// Removes everything a run of `node` pinned under `pin_root` (detaching its program from
/// every interface). For the socket path: a program left attached by an earlier run would
/// otherwise consume the heartbeats the sockets wait for. Nothing pinned is fine.
pub fn remove_pinned(pin_root: &Path, node: &str) -> Result<(), XdpError> {
    let dir = pins::pin_dir(pin_root, node)?;
    let links = pins::link_pins(&dir)?;
    for (_, pin) in &links {
        tracing::info!(iface = %pin.iface, mode = %pin.mode, "detaching an XDP program left by an earlier run");
    }
    pins::remove_dir(&dir)
}

/// Attaches to one interface: by replacing the program on the link an earlier run pinned
/// for this device when its mode is allowed (keeping that mode: the swap is atomic), else
/// afresh in the first allowed mode that works.
fn attach_interface(
    program: &mut Xdp,
    pin_dir: &Path,
    iface: &str,
    ifindex: u32,
    modes: &[AttachMode],
    previous: Vec<(PathBuf, pins::LinkPin)>,
) -> Result<AttachedLink, XdpError> {
    let mut replaceable = None;
    for (path, pin) in previous {
        if replaceable.is_none() && modes.contains(&pin.mode) {
            replaceable = Some((path, pin));
        } else {
            tracing::info!(iface, mode = %pin.mode, "removing an XDP link in a mode the setting no longer allows");
            pins::remove_link(&path, &pin)?;
        }
    }
    if let Some((path, pin)) = replaceable {
        match replace_program(program, &path) {
            Ok(link) => {
                let current = pins::LinkPin {
                    iface: iface.to_owned(),
                    ifindex,
                    mode: pin.mode,
                };
                let current_path = pin_dir.join(current.file_name());
                if current_path != path {
                    // The device was renamed since.
                    std::fs::rename(&path, &current_path)
                        .map_err(|error| pins::pin_error(&path, error))?;
                }
                tracing::info!(iface, mode = %pin.mode, "XDP program replaced in place on the pinned link");
                return Ok(AttachedLink {
                    iface: iface.to_owned(),
                    mode: pin.mode,
                    _link: link,
                });
            }
            Err(reason) => {
                tracing::warn!(iface, mode = %pin.mode, %reason,
                    "cannot replace the program on the pinned XDP link; re-attaching");
                pins::remove_link(&path, &pin)?;
            }
        }
    }

    let mut reasons = Vec::new();
    for &mode in modes {
        match program.attach_to_if_index(ifindex, mode.xdp_mode()) {
            Ok(link_id) => {
                let link = program.take_link(link_id).map_err(XdpError::Program)?;
                // aya falls back to a netlink attachment when the kernel refuses an XDP
                // link; that cannot be pinned (nor replaced atomically), and is detached
                // again as it drops here.
                let Ok(link) = FdLink::try_from(link) else {
                    reasons.push(format!(
                        "{mode} mode: attached only through netlink, not as a BPF link (Linux 5.9+), which cannot be pinned"
                    ));
                    continue;
                };
                let pin = pins::LinkPin {
                    iface: iface.to_owned(),
                    ifindex,
                    mode,
                };
                let pin_path = pin_dir.join(pin.file_name());
                let pinned = link.pin(&pin_path).map_err(|error| XdpError::Pin {
                    path: pin_path.clone(),
                    reason: error::chain(&error),
                })?;
                if reasons.is_empty() {
                    tracing::info!(iface, %mode, "XDP attached");
                } else {
                    tracing::warn!(iface, %mode, earlier = %reasons.join("; "), "XDP attached in a fallback mode");
                }
                return Ok(AttachedLink {
                    iface: iface.to_owned(),
                    mode,
                    _link: FdLink::from(pinned),
                });
            }
            Err(error) => reasons.push(format!("{mode} mode: {}", error::chain(&error))),
        }
    }
    Err(XdpError::AttachFailed {
        iface: iface.to_owned(),
        reasons: reasons.join("; "),
    })
}

/// Swaps our program onto the link pinned at `path` (`bpf_link_update`).
fn replace_program(program: &mut Xdp, path: &Path) -> Result<FdLink, String> {
    let pinned = PinnedLink::from_pin(path).map_err(|error| error::chain(&error))?;
    let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|error| error::chain(&error))?;
    let link_id = program
        .attach_to_link(link)
        .map_err(|error| error::chain(&error))?;
    let link = program
        .take_link(link_id)
        .map_err(|error| error::chain(&error))?;
    FdLink::try_from(link).map_err(|error| error::chain(&error))
}

/// Pins every map, replacing pins an earlier run left.
fn pin_maps(ebpf: &Ebpf, dir: &Path) -> Result<(), XdpError> {
    for name in PINNED_MAPS {
        let map = ebpf.map(name).ok_or_else(|| missing_map(name))?;
        let path = dir.join(name);
        pins::unpin(&path)?;
        map.pin(&path).map_err(|error| XdpError::Pin {
            path: path.clone(),
            reason: error::chain(&error),
        })?;
    }
    Ok(())
}

/// Reads the ring to empty, decoding each record.
fn read_ring(ring: &mut RingBuf<MapData>, out: &mut Vec<Arrival>, undecodable: &mut u64) {
    while let Some(record) = ring.next() {
        // The record is a view into the shared ring: decode copies it out (unaligned read)
        // before the item is released.
        match Arrival::from_ring_record(&record) {
            Ok(arrival) => out.push(arrival),
            Err(error) => {
                *undecodable += 1;
                if undecodable.is_power_of_two() {
                    tracing::warn!(%error, count = *undecodable, "undecodable XDP ring record");
                }
            }
        }
    }
}

fn take_map<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, XdpError>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or_else(|| missing_map(name))?;
    M::try_from(map).map_err(map_error(name))
}

fn missing_map(name: &'static str) -> XdpError {
    XdpError::Map {
        map: name,
        error: aya::maps::MapError::InvalidName { name: name.into() },
    }
}

fn map_error(map: &'static str) -> impl Fn(aya::maps::MapError) -> XdpError {
    move |error| XdpError::Map { map, error }
}

/// Kernels before 5.11 charge BPF maps against RLIMIT_MEMLOCK; later ones ignore it.
fn raise_memlock_limit() {
    use nix::sys::resource::{setrlimit, Resource, RLIM_INFINITY};
    if let Err(error) = setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY) {
        tracing::debug!(%error, "cannot raise RLIMIT_MEMLOCK (only older kernels need it)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aya::maps::MapError;

    #[test]
    fn settings_choose_modes_in_order() {
        assert_eq!(
            allowed_modes(XdpSetting::Auto).unwrap(),
            &[AttachMode::Driver, AttachMode::Skb]
        );
        assert_eq!(
            allowed_modes(XdpSetting::Driver).unwrap(),
            &[AttachMode::Driver]
        );
        assert_eq!(allowed_modes(XdpSetting::Skb).unwrap(), &[AttachMode::Skb]);
        assert!(matches!(
            allowed_modes(XdpSetting::Off),
            Err(XdpError::Disabled)
        ));
    }

    #[test]
    fn mode_names_round_trip() {
        for mode in [AttachMode::Driver, AttachMode::Skb] {
            assert_eq!(AttachMode::from_name(mode.name()), Some(mode));
            assert_eq!(mode.to_string(), mode.name());
        }
        assert_eq!(AttachMode::from_name("native"), None);
    }

    #[test]
    fn config_holds_sorted_distinct_ports() {
        let config = xdp_config(7, &[695, 694, 695]).unwrap();
        assert_eq!(config.cluster_id, 7);
        assert_eq!(config.n_ports, 2);
        assert_eq!(config.udp_ports[..3], [694, 695, 0]);
        assert!(config.is_heartbeat_port(694) && config.is_heartbeat_port(695));
        assert!(!config.is_heartbeat_port(0) && !config.is_heartbeat_port(696));
    }

    #[test]
    fn config_refuses_bad_port_lists() {
        assert!(matches!(
            xdp_config(1, &[]),
            Err(XdpError::InvalidOptions(_))
        ));
        assert!(matches!(
            xdp_config(1, &[694, 0]),
            Err(XdpError::InvalidOptions(_))
        ));
        let too_many: Vec<u16> = (1..=MAX_UDP_PORTS as u16 + 1).collect();
        assert!(matches!(
            xdp_config(1, &too_many),
            Err(XdpError::InvalidOptions(_))
        ));
        let just_enough: Vec<u16> = (1..=MAX_UDP_PORTS as u16).collect();
        assert_eq!(
            xdp_config(1, &just_enough).unwrap().n_ports,
            MAX_UDP_PORTS as u32
        );
    }

    #[test]
    fn peers_are_deduplicated_and_bounded() {
        assert_eq!(
            peer_ids(&[5, 3, 5])
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            [3, 5]
        );
        assert!(matches!(
            peer_ids(&[BROADCAST_NODE]),
            Err(XdpError::InvalidOptions(_))
        ));
        let too_many: Vec<u32> = (1..=MAX_PEERS + 1).collect();
        assert!(matches!(
            peer_ids(&too_many),
            Err(XdpError::InvalidOptions(_))
        ));
        assert!(peer_ids(&[]).unwrap().is_empty());
    }

    #[test]
    fn interfaces_are_deduplicated_in_order() {
        let list = interface_list(&["eth2".into(), "eth1".into(), "eth2".into()]).unwrap();
        assert_eq!(list, ["eth2", "eth1"]);
        assert!(matches!(
            interface_list(&[]),
            Err(XdpError::InvalidOptions(_))
        ));
        assert!(matches!(
            interface_list(&["".into()]),
            Err(XdpError::InvalidOptions(_))
        ));
        assert!(matches!(
            interface_list(&["a/b".into()]),
            Err(XdpError::InvalidOptions(_))
        ));
    }

    fn create_error(errno: i32) -> EbpfError {
        EbpfError::MapError(MapError::CreateError {
            name: PEERS_MAP.into(),
            io_error: io::Error::from_raw_os_error(errno),
        })
    }

    #[test]
    fn load_errors_are_sorted_by_cause() {
        assert!(matches!(
            XdpError::from_load(create_error(libc::EPERM)),
            XdpError::NoPermission(_)
        ));
        assert!(matches!(
            XdpError::from_load(create_error(libc::EINVAL)),
            XdpError::Unsupported(_)
        ));
        assert!(matches!(
            XdpError::from_load(create_error(libc::ENOMEM)),
            XdpError::Load(_)
        ));
        assert!(matches!(
            XdpError::from_load(EbpfError::NoBTF),
            XdpError::Unsupported(_)
        ));
        assert_eq!(
            XdpError::from_load(create_error(libc::EPERM)).os_error(),
            Some(libc::EPERM)
        );
    }

    #[test]
    fn messages_include_the_errno() {
        let error = XdpError::from_load(create_error(libc::EPERM));
        let text = error.to_string();
        assert!(text.starts_with("no permission"), "{text}");
        assert!(text.contains(PEERS_MAP), "{text}");
        assert!(text.contains("Operation not permitted"), "{text}");
        assert!(std::error::Error::source(&error).is_none());
    }
}
