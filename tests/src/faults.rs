//! Faults and hostile traffic for a running [`Cluster`] (issue 7): a rogue host on both of
//! the cluster's LANs that can send anything to the heartbeat port, including datagrams with
//! a real node's source address ([`send_spoofed`]); captures of real heartbeats off the
//! switch to replay ([`capture_heartbeats`]); packet loss on the switch ([`PacketLoss`]);
//! a record of every VIP addition and removal on every node ([`VipWatch`]); and readers for
//! the counters the agents report in `status --json` and in their metrics.
//!
//! Everything acts from outside the balancers (the switch, a third namespace), never with a
//! rule inside lb1 or lb2: XDP sees packets before netfilter does, so a local rule would
//! test nothing.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::process::Command;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::addr::require_test_address;
use crate::cluster::{Cluster, VIP};
use crate::error::{LabError, Result};
use crate::lab::{Lab, Netns};
use crate::process::ProcessHandle;

/// The heartbeat port of the lab's clusters (`udpport 694`).
pub const HEARTBEAT_PORT: u16 = 694;

/// The rogue host's addresses: free in the cluster's plan (nodes .11 up, web servers .21 to
/// .29, the flood source .66, the client .100).
pub const ROGUE_SVC_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 77);
pub const ROGUE_HB_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 77);

/// Where an agent serves its metrics when a test enables them with
/// [`metrics_ha_cf_line`]: every node, in its own namespace, on this port.
pub const METRICS_PORT: u16 = 9100;

/// The ha.cf line that enables metrics on every node (each agent binds in its own
/// namespace, so one shared line serves them all); append it to
/// [`crate::ClusterSpec::extra_ha_cf`].
pub fn metrics_ha_cf_line() -> String {
    format!("metrics 0.0.0.0:{METRICS_PORT}\n")
}

/// A host that is not a cluster member, cabled to the service LAN (`eth0`,
/// [`ROGUE_SVC_ADDR`]) and to the heartbeat LAN (`eth1`, [`ROGUE_HB_ADDR`]).
#[derive(Debug, Clone)]
pub struct Rogue {
    pub netns: Netns,
}

impl Rogue {
    /// Adds namespace `short` (unique in the lab) as the rogue host.
    pub fn add(cluster: &Cluster, short: &str) -> Result<Rogue> {
        let lab = &cluster.lab;
        let netns = lab.add_netns(short)?;
        lab.connect(&netns, "eth0", &cluster.svc)?;
        lab.connect(&netns, "eth1", &cluster.hb)?;
        lab.add_address(&netns, "eth0", &format!("{ROGUE_SVC_ADDR}/24"))?;
        lab.add_address(&netns, "eth1", &format!("{ROGUE_HB_ADDR}/24"))?;
        Ok(Rogue { netns })
    }

    /// Sends each payload once, in order, as UDP from the rogue's own address to `target`
    /// (the kernel fragments payloads larger than the MTU). Returns how many were sent.
    pub fn send(&self, lab: &Lab, target: SocketAddrV4, payloads: &[Vec<u8>]) -> Result<u64> {
        require_test_address((*target.ip()).into())?;
        let netns = self.netns.clone();
        lab.in_netns(&self.netns, move || -> Result<u64> {
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
                .map_err(|e| LabError::io("binding a UDP socket in", netns.path(), e))?;
            let mut sent = 0;
            for payload in payloads {
                socket
                    .send_to(payload, target)
                    .map_err(|e| LabError::io("sending UDP from", netns.path(), e))?;
                sent += 1;
            }
            Ok(sent)
        })?
    }

    /// Sends each payload once, in order, as UDP from `source` (any address, typically a
    /// real node's) to `target`, through a raw socket that writes its own IP header
    /// (`IP_HDRINCL`). Payloads must fit one frame: a raw socket does not fragment.
    pub fn send_spoofed(
        &self,
        lab: &Lab,
        source: SocketAddrV4,
        target: SocketAddrV4,
        payloads: &[Vec<u8>],
    ) -> Result<u64> {
        send_spoofed(lab, &self.netns, source, target, payloads)
    }
}

/// Sends `payloads` as UDP datagrams from `source` to `target` from inside `netns`, with a
/// hand-made IPv4 header carrying `source`, whatever `netns`'s own addresses are.
pub fn send_spoofed(
    lab: &Lab,
    netns: &Netns,
    source: SocketAddrV4,
    target: SocketAddrV4,
    payloads: &[Vec<u8>],
) -> Result<u64> {
    require_test_address((*source.ip()).into())?;
    require_test_address((*target.ip()).into())?;
    let datagrams = payloads
        .iter()
        .map(|payload| ipv4_udp_datagram(source, target, payload))
        .collect::<Result<Vec<_>>>()?;
    let path = netns.path();
    lab.in_netns(netns, move || -> Result<u64> {
        let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP))
            .map_err(|e| LabError::io("opening a raw socket in", &path, e))?;
        socket
            .set_header_included_v4(true)
            .map_err(|e| LabError::io("setting IP_HDRINCL in", &path, e))?;
        // The port of a raw socket's destination is ignored; the header says where it goes.
        let destination = SockAddr::from(SocketAddrV4::new(*target.ip(), 0));
        let mut sent = 0;
        for datagram in &datagrams {
            socket
                .send_to(datagram, &destination)
                .map_err(|e| LabError::io("sending a spoofed datagram from", &path, e))?;
            sent += 1;
        }
        Ok(sent)
    })?
}

/// An IPv4 header (no options) and a UDP header around `payload`. The kernel fills in the
/// header checksum and the identification; a zero UDP checksum means "none" in IPv4.
pub fn ipv4_udp_datagram(
    source: SocketAddrV4,
    target: SocketAddrV4,
    payload: &[u8],
) -> Result<Vec<u8>> {
    const IP_HEADER: usize = 20;
    const UDP_HEADER: usize = 8;
    let udp_len = u16::try_from(UDP_HEADER + payload.len())
        .map_err(|_| LabError::Cluster(format!("a {} byte UDP payload", payload.len())))?;
    let total_len = udp_len
        .checked_add(IP_HEADER as u16)
        .ok_or_else(|| LabError::Cluster(format!("a {} byte UDP payload", payload.len())))?;
    let mut datagram = Vec::with_capacity(usize::from(total_len));
    datagram.extend_from_slice(&[0x45, 0]); // version 4, 5 words; DSCP/ECN 0
    datagram.extend_from_slice(&total_len.to_be_bytes());
    datagram.extend_from_slice(&[0, 0, 0x40, 0]); // id (kernel), don't fragment
    datagram.extend_from_slice(&[64, 17, 0, 0]); // TTL, UDP, checksum (kernel)
    datagram.extend_from_slice(&source.ip().octets());
    datagram.extend_from_slice(&target.ip().octets());
    datagram.extend_from_slice(&source.port().to_be_bytes());
    datagram.extend_from_slice(&target.port().to_be_bytes());
    datagram.extend_from_slice(&udp_len.to_be_bytes());
    datagram.extend_from_slice(&[0, 0]);
    datagram.extend_from_slice(payload);
    Ok(datagram)
}

/// One UDP datagram seen on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedDatagram {
    pub source: SocketAddrV4,
    pub target: SocketAddrV4,
    pub payload: Vec<u8>,
}

/// Records, for `duration`, what node `index` sends to the heartbeat port on its link
/// `ifname`, from the switch side of that cable (tcpdump on the bridge port): real
/// heartbeats for a replay.
pub fn capture_heartbeats(
    cluster: &Cluster,
    index: usize,
    ifname: &str,
    duration: Duration,
) -> Result<Vec<CapturedDatagram>> {
    let node = &cluster.nodes[index];
    let port = cluster
        .lab
        .ports_of(&node.netns)
        .into_iter()
        .find(|port| port.node_ifname() == ifname)
        .ok_or_else(|| LabError::NoPorts(format!("{}:{ifname}", node.netns)))?;
    let file =
        cluster
            .lab
            .temp_dir()
            .join(format!("capture-{}-{ifname}-{}.pcap", node.name, unique()));
    let filter = format!("udp and dst port {HEARTBEAT_PORT} and src host {}", {
        match ifname {
            "eth0" => node.svc_addr,
            _ => node.hb_addr,
        }
    });
    let mut command = Command::new("tcpdump");
    command
        // Immediate mode: with the default ring buffer, packets wait for a block to fill and
        // a short capture can end with none written.
        .args([
            "--immediate-mode",
            "-i",
            port.switch_ifname(),
            "-U",
            "-n",
            "-Z",
            "root",
            "-w",
        ])
        .arg(&file)
        .arg(&filter);
    let tcpdump = cluster.lab.spawn(
        port.switch(),
        &format!("tcpdump-{}-{ifname}-{}", node.name, unique()),
        &command,
    )?;
    let listening =
        crate::wait::wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
            tcpdump
                .stderr()
                .is_ok_and(|text| text.contains("listening on"))
        });
    if !listening {
        let log = tcpdump.log();
        cluster.lab.stop(&tcpdump, Duration::from_secs(5))?;
        return Err(LabError::Cluster(format!(
            "tcpdump did not start listening: {log}"
        )));
    }
    std::thread::sleep(duration);
    cluster.lab.stop(&tcpdump, Duration::from_secs(5))?;
    let bytes = fs::read(&file).map_err(|e| LabError::io("reading", &file, e))?;
    parse_pcap_udp(&bytes)
        .map_err(|reason| LabError::Cluster(format!("{}: {reason}", file.display())))
}

/// The UDP-over-IPv4 datagrams of an Ethernet pcap file (classic format, either byte order
/// and time resolution).
pub fn parse_pcap_udp(bytes: &[u8]) -> std::result::Result<Vec<CapturedDatagram>, String> {
    let magic = bytes
        .get(..4)
        .ok_or("shorter than a pcap header")?
        .try_into()
        .map_err(|_| "no magic")?;
    let little_endian = match u32::from_le_bytes(magic) {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        _ => match u32::from_be_bytes(magic) {
            0xa1b2_c3d4 | 0xa1b2_3c4d => false,
            other => return Err(format!("not a pcap file (magic {other:#x})")),
        },
    };
    let read_u32 = |at: usize| -> Option<u32> {
        let raw: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(if little_endian {
            u32::from_le_bytes(raw)
        } else {
            u32::from_be_bytes(raw)
        })
    };
    const ETHERNET: u32 = 1;
    match read_u32(20) {
        Some(ETHERNET) => {}
        other => return Err(format!("link type {other:?}, not Ethernet")),
    }
    let mut datagrams = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let captured = read_u32(at + 8).ok_or("truncated record header")? as usize;
        let frame = bytes
            .get(at + 16..at + 16 + captured)
            .ok_or("truncated record")?;
        at += 16 + captured;
        if let Some(datagram) = udp_in_ethernet(frame) {
            datagrams.push(datagram);
        }
    }
    Ok(datagrams)
}

fn udp_in_ethernet(frame: &[u8]) -> Option<CapturedDatagram> {
    const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
    if frame.get(12..14)? != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = frame.get(14..)?;
    let header_len = usize::from(ip.first()? & 0x0f) * 4;
    let total_len = usize::from(u16::from_be_bytes(ip.get(2..4)?.try_into().ok()?));
    let fragment = u16::from_be_bytes(ip.get(6..8)?.try_into().ok()?);
    // Only whole datagrams: no more-fragments flag and offset zero.
    if ip.first()? >> 4 != 4 || *ip.get(9)? != 17 || fragment & 0x3fff != 0 {
        return None;
    }
    let address = |at: usize| -> Option<Ipv4Addr> {
        let octets: [u8; 4] = ip.get(at..at + 4)?.try_into().ok()?;
        Some(Ipv4Addr::from(octets))
    };
    let udp = ip.get(header_len..total_len)?;
    let port = |at: usize| -> Option<u16> {
        Some(u16::from_be_bytes(udp.get(at..at + 2)?.try_into().ok()?))
    };
    let udp_len = usize::from(port(4)?);
    Some(CapturedDatagram {
        source: SocketAddrV4::new(address(12)?, port(0)?),
        target: SocketAddrV4::new(address(16)?, port(2)?),
        payload: udp.get(8..udp_len)?.to_vec(),
    })
}

/// The cables between the balancers on which [`PacketLoss`] drops frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lan {
    /// The service LAN (`eth0`): only frames between two balancers, never the client's.
    Service,
    /// The dedicated heartbeat LAN (`eth1`).
    Heartbeat,
}

impl Lan {
    pub fn ifname(self) -> &'static str {
        match self {
            Lan::Service => "eth0",
            Lan::Heartbeat => "eth1",
        }
    }
}

/// Random loss on the switch: an nftables table in the switch namespace drops `percent` %
/// of the frames the bridge forwards from one balancer to another on the chosen LANs
/// (`numgen random mod 100 < percent`), in each direction independently. Removed when
/// dropped (also on a panic); the switch namespace going away would remove it too.
#[derive(Debug)]
pub struct PacketLoss<'lab> {
    lab: &'lab Lab,
    switch: Netns,
    removed: bool,
}

/// The nftables table [`PacketLoss`] owns in the switch namespace.
const LOSS_TABLE: &str = "hb_loss";

impl<'lab> PacketLoss<'lab> {
    pub fn start(cluster: &'lab Cluster, lans: &[Lan], percent: u8) -> Result<PacketLoss<'lab>> {
        if percent > 100 {
            return Err(LabError::Cluster(format!("{percent} % loss")));
        }
        let lab = &cluster.lab;
        let switch = cluster.switch.clone();
        let nft = |args: &[&str]| -> Result<String> {
            let mut argv = vec!["nft"];
            argv.extend_from_slice(args);
            lab.exec(&switch, &argv)
        };
        nft(&["add", "table", "bridge", LOSS_TABLE])?;
        // From here on the guard removes the table, whatever fails next.
        let guard = PacketLoss {
            lab,
            switch: switch.clone(),
            removed: false,
        };
        nft(&[
            "add",
            "chain",
            "bridge",
            LOSS_TABLE,
            "forward",
            "{ type filter hook forward priority 0 ; policy accept ; }",
        ])?;
        for &lan in lans {
            let ports: Vec<String> = cluster
                .nodes
                .iter()
                .flat_map(|node| lab.ports_of(&node.netns))
                .filter(|port| port.node_ifname() == lan.ifname())
                .map(|port| format!("\"{}\"", port.switch_ifname()))
                .collect();
            if ports.len() < 2 {
                return Err(LabError::NoPorts(format!("balancers on {}", lan.ifname())));
            }
            let set = format!("{{ {} }}", ports.join(", "));
            let rule = format!(
                "iifname {set} oifname {set} numgen random mod 100 < {percent} counter drop"
            );
            nft(&["add", "rule", "bridge", LOSS_TABLE, "forward", &rule])?;
        }
        Ok(guard)
    }

    /// Frames dropped so far, over all rules.
    pub fn dropped(&self) -> Result<u64> {
        let text = self.lab.exec(
            &self.switch,
            &["nft", "-j", "list", "table", "bridge", LOSS_TABLE],
        )?;
        let json: Value = serde_json::from_str(&text).map_err(|e| LabError::Json {
            command: "nft -j list table".into(),
            reason: e.to_string(),
        })?;
        let rules = json["nftables"].as_array().cloned().unwrap_or_default();
        Ok(rules
            .iter()
            .filter_map(|item| item["rule"]["expr"].as_array())
            .flatten()
            .filter_map(|expr| expr["counter"]["packets"].as_u64())
            .sum())
    }

    /// Ends the loss now; errors are reported (a guard dropped without this ignores them).
    pub fn remove(mut self) -> Result<()> {
        self.removed = true;
        self.lab
            .exec(
                &self.switch,
                &["nft", "delete", "table", "bridge", LOSS_TABLE],
            )
            .map(|_| ())
    }
}

impl Drop for PacketLoss<'_> {
    fn drop(&mut self) {
        if !self.removed {
            // Best effort on the way out (a panic); the lab removes the switch anyway.
            let _ = self.lab.exec(
                &self.switch,
                &["nft", "delete", "table", "bridge", LOSS_TABLE],
            );
        }
    }
}

/// The VIP appearing on or disappearing from one node, as `ip monitor address` saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipChange {
    pub node: String,
    pub added: bool,
    /// Wall-clock time `ip -ts` stamped on it (microseconds).
    pub at: SystemTime,
}

/// `ip -ts -o monitor address` on every node for as long as it lives: every addition and
/// removal of the VIP, however brief. Stopped with the lab if not before.
#[derive(Debug)]
pub struct VipWatch {
    monitors: Vec<(String, ProcessHandle)>,
}

impl VipWatch {
    /// Starts one monitor per node (`tag` goes into their process names) and lets them
    /// subscribe before returning.
    pub fn start(cluster: &Cluster, tag: &str) -> Result<VipWatch> {
        let mut monitors = Vec::new();
        for node in &cluster.nodes {
            let mut command = Command::new("ip");
            command.args(["-ts", "-o", "monitor", "address"]);
            let name = format!("ipmon-{tag}-{}-{}", node.name, unique());
            let handle = cluster.lab.spawn(&node.netns, &name, &command)?;
            monitors.push((node.name.clone(), handle));
        }
        std::thread::sleep(Duration::from_millis(300));
        Ok(VipWatch { monitors })
    }

    /// Every change recorded so far, in time order.
    pub fn changes(&self) -> Result<Vec<VipChange>> {
        let mut changes = Vec::new();
        for (node, monitor) in &self.monitors {
            let text = monitor.stdout()?;
            // The last line may still be being written.
            let complete = text.rfind('\n').map_or("", |end| &text[..end]);
            changes.extend(parse_vip_changes(node, complete));
        }
        changes.sort_by_key(|change| change.at);
        Ok(changes)
    }

    /// Stops the monitors and returns every change they recorded.
    pub fn stop(self, lab: &Lab) -> Result<Vec<VipChange>> {
        for (_, monitor) in &self.monitors {
            lab.stop(monitor, Duration::from_secs(3))?;
        }
        self.changes()
    }
}

/// Reads the VIP lines of `ip -ts -o monitor address` output (`[2026-11-22T15:36:23.009455]
/// 2: eth0    inet 198.18.1.10/24 ...`, `Deleted` before the index for a removal).
pub fn parse_vip_changes(node: &str, text: &str) -> Vec<VipChange> {
    let needle = format!("inet {VIP}/");
    text.lines()
        .filter(|line| line.contains(&needle))
        .filter_map(|line| {
            let stamp = line.strip_prefix('[')?.split_once(']')?;
            Some(VipChange {
                node: node.to_owned(),
                added: !stamp.1.trim_start().starts_with("Deleted"),
                at: crate::parse_utc_timestamp(stamp.0)?,
            })
        })
        .collect()
}

/// The spans during which two or more nodes held the VIP, from `initial` holders and the
/// changes after that (as [`VipWatch::changes`] returns them). A span still open at the
/// end ends at `until`.
pub fn multi_holder_spans(
    initial: &[String],
    changes: &[VipChange],
    until: SystemTime,
) -> Vec<(SystemTime, SystemTime)> {
    let mut holders: Vec<String> = initial.to_vec();
    let mut spans = Vec::new();
    let mut open: Option<SystemTime> = None;
    for change in changes {
        if change.added {
            if !holders.contains(&change.node) {
                holders.push(change.node.clone());
            }
        } else {
            holders.retain(|holder| holder != &change.node);
        }
        match (holders.len() >= 2, open) {
            (true, None) => open = Some(change.at),
            (false, Some(start)) => {
                spans.push((start, change.at));
                open = None;
            }
            _ => {}
        }
    }
    if let Some(start) = open {
        spans.push((start, until));
    }
    spans
}

/// GET `/metrics` from node `index`'s agent (enabled with [`metrics_ha_cf_line`]), from
/// inside the node's namespace.
pub fn scrape_metrics(cluster: &Cluster, index: usize) -> Result<String> {
    let node = &cluster.nodes[index];
    let response = cluster.lab.http_get(
        &node.netns,
        SocketAddr::from((node.svc_addr, METRICS_PORT)),
        "/metrics",
        Duration::from_secs(3),
    )?;
    if response.status != 200 {
        return Err(LabError::Cluster(format!(
            "{}: /metrics answered HTTP {}",
            node.name, response.status
        )));
    }
    Ok(response.body)
}

/// The value of the sample `name{labels}` in a Prometheus text page (labels in any order,
/// all of them given); `None` when there is no such sample.
pub fn metric(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if series_name != name {
                return None;
            }
            let mut found: Vec<(&str, &str)> = series_labels
                .split(',')
                .filter(|pair| !pair.is_empty())
                .filter_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    Some((key, value.trim_matches('"')))
                })
                .collect();
            let mut wanted = labels.to_vec();
            found.sort_unstable();
            wanted.sort_unstable();
            (found == wanted).then(|| value.parse().ok())?
        })
}

/// `counters.<name>` of a `status --json` (0 when absent).
pub fn status_counter(status: &Value, name: &str) -> u64 {
    status["counters"][name].as_u64().unwrap_or(0)
}

/// The receive path's counter `reason` (`drop_bad_length`, ...) of a `status --json`.
pub fn rx_counter(status: &Value, reason: &str) -> u64 {
    status["counters"]["rx"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|pair| pair[0] == reason)
        .and_then(|pair| pair[1].as_u64())
        .unwrap_or(0)
}

/// The report of the link `node:iface` in a `status --json`.
pub fn link_report<'s>(status: &'s Value, node: &str, iface: &str) -> Option<&'s Value> {
    status["links"]
        .as_array()?
        .iter()
        .find(|link| link["node"] == node && link["iface"] == iface)
}

/// The report of node `name` in a `status --json`.
pub fn node_report<'s>(status: &'s Value, name: &str) -> Option<&'s Value> {
    status["nodes"]
        .as_array()?
        .iter()
        .find(|node| node["name"] == name)
}

/// A number for process and file names that must be unique within a lab.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn reads_ip_monitor_lines() {
        let text = "[2026-11-22T15:36:23.009455] 2: eth0    inet 198.18.1.10/24 scope global eth0\\       valid_lft forever\n\
                    [2026-11-22T15:36:23.030419] Deleted 2: eth0    inet 198.18.1.10/24 scope global eth0\\ x\n\
                    [2026-11-22T15:36:23.040000] 2: eth0    inet 198.18.1.11/24 scope global eth0\\ x\n";
        let changes = parse_vip_changes("lb1", text);
        assert_eq!(changes.len(), 2);
        assert!(changes[0].added && !changes[1].added);
        let gap = changes[1].at.duration_since(changes[0].at).unwrap();
        assert_eq!(gap, Duration::from_micros(20_964));
    }

    #[test]
    fn multi_holder_spans_open_and_close() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1000);
        let at = |ms| t0 + Duration::from_millis(ms);
        let change = |node: &str, added, ms| VipChange {
            node: node.into(),
            added,
            at: at(ms),
        };
        let changes = [
            change("lb2", true, 100),
            change("lb1", false, 900),
            change("lb1", true, 1000),
            change("lb2", false, 1010),
            change("lb2", true, 2000),
        ];
        let spans = multi_holder_spans(&["lb1".into()], &changes, at(2500));
        assert_eq!(
            spans,
            vec![
                (at(100), at(900)),
                (at(1000), at(1010)),
                (at(2000), at(2500))
            ]
        );
    }

    #[test]
    fn finds_metric_samples_by_name_and_labels() {
        let page = "# HELP hb_rx_packets_total x\n\
                    hb_rx_packets_total{reason=\"drop_bad_length\"} 12\n\
                    hb_rx_packets_total{reason=\"accepted\"} 400\n\
                    hb_auth_failures_total 7\n";
        assert_eq!(metric(page, "hb_auth_failures_total", &[]), Some(7.0));
        assert_eq!(
            metric(
                page,
                "hb_rx_packets_total",
                &[("reason", "drop_bad_length")]
            ),
            Some(12.0)
        );
        assert_eq!(metric(page, "hb_rx_packets_total", &[]), None);
        assert_eq!(metric(page, "hb_replays_total", &[]), None);
    }

    #[test]
    fn builds_a_udp_datagram_and_reads_it_back_from_a_capture() {
        let source = SocketAddrV4::new(Ipv4Addr::new(198, 18, 2, 11), 694);
        let target = SocketAddrV4::new(Ipv4Addr::new(198, 18, 2, 12), 694);
        let datagram = ipv4_udp_datagram(source, target, b"hello").unwrap();
        assert_eq!(datagram.len(), 20 + 8 + 5);
        let mut pcap = Vec::new();
        pcap.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        pcap.extend_from_slice(&[2, 0, 4, 0]);
        pcap.extend_from_slice(&[0; 8]);
        pcap.extend_from_slice(&65535u32.to_le_bytes());
        pcap.extend_from_slice(&1u32.to_le_bytes());
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&datagram);
        pcap.extend_from_slice(&[0; 8]);
        pcap.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        pcap.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        pcap.extend_from_slice(&frame);
        let read = parse_pcap_udp(&pcap).unwrap();
        assert_eq!(
            read,
            vec![CapturedDatagram {
                source,
                target,
                payload: b"hello".to_vec()
            }]
        );
        assert!(parse_pcap_udp(b"junk").is_err());
    }
}
