//! Prometheus metrics (`metrics ADDR:PORT` in ha.cf): the text exposition format 0.0.4,
//! rendered from the same [`Status`] that `hb-agent status` shows, plus what only metrics
//! keep: per-peer heartbeat inter-arrival histograms and failover durations.
//!
//! The decision loop owns the state, so it publishes a [`Snapshot`] through a
//! [`MetricsFeed`] (at most once a second) and the HTTP server renders the latest one on each
//! scrape. Ages ("last heard") are advanced by the time since the snapshot was taken, so they
//! are exact at scrape time.
//!
//! State is exposed as values, not as labels that change: a link is `hb_link_up 1` or `0`,
//! a node's state is a number whose meaning the HELP text gives, and the holder of a group is
//! one series per (group, node) whose value is 1 for the holder. Every label set is fixed by
//! the configuration, so series neither appear nor vanish as the cluster changes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hb_common::wire::NodeState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, warn};

use crate::arrival::RxPath;
use crate::clock::{monotonic_ns, nanos};
use crate::control::Status;
use crate::membership::{LinkStatus, NodeStatus};
use crate::policy::Phase;

/// Upper bounds (ms) of the inter-arrival histogram buckets: from the fast profile's 5 ms
/// keepalive to Heartbeat's 30 s default deadtime, roughly 1-2-5 per decade.
pub const INTER_ARRIVAL_BUCKETS_MS: [u64; 15] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000,
];

/// How often the decision loop publishes a snapshot. Scrapes come every 10-60 s; ages are
/// corrected to scrape time, so only counters can be up to this much behind.
pub const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Longest request head accepted; a scrape's is a few hundred bytes.
const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// A client that has not sent its request within this time is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections served at once; more are closed at once. Prometheus uses one per scrape.
const MAX_CONNECTIONS: usize = 16;

/// One peer's heartbeat inter-arrival times: the gap between the kernel timestamps of
/// successive fresh heartbeats (copies on a second link do not count).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterArrival {
    last_ns: Option<u64>,
    /// Per bucket of [`INTER_ARRIVAL_BUCKETS_MS`] (not cumulative); the last slot is above
    /// the largest bound.
    counts: [u64; INTER_ARRIVAL_BUCKETS_MS.len() + 1],
    sum_ns: u64,
}

impl InterArrival {
    /// Takes the kernel arrival time of a fresh heartbeat; records the gap since the last.
    pub fn record(&mut self, kernel_ns: u64) {
        if let Some(last) = self.last_ns {
            // Stamps of different receive queues can be a hair out of order: count a zero
            // gap, and keep measuring from the later stamp.
            let gap_ns = kernel_ns.saturating_sub(last);
            let slot = INTER_ARRIVAL_BUCKETS_MS
                .iter()
                .position(|bound_ms| gap_ns <= bound_ms * 1_000_000)
                .unwrap_or(INTER_ARRIVAL_BUCKETS_MS.len());
            self.counts[slot] += 1;
            self.sum_ns = self.sum_ns.saturating_add(gap_ns);
        }
        self.last_ns = Some(self.last_ns.map_or(kernel_ns, |last| last.max(kernel_ns)));
    }

    /// The next heartbeat starts a new series of gaps: call when the peer left cleanly, so
    /// the time it was away is not counted as a gap.
    pub fn forget_last(&mut self) {
        self.last_ns = None;
    }

    /// Gaps recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Sum of the gaps.
    pub fn sum(&self) -> Duration {
        Duration::from_nanos(self.sum_ns)
    }

    /// Cumulative counts per bound of [`INTER_ARRIVAL_BUCKETS_MS`], as Prometheus buckets are.
    pub fn cumulative(&self) -> [u64; INTER_ARRIVAL_BUCKETS_MS.len()] {
        let mut total = 0;
        std::array::from_fn(|i| {
            total += self.counts[i];
            total
        })
    }
}

/// [`InterArrival`] for every peer, by node name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterArrivalSet {
    peers: BTreeMap<String, InterArrival>,
}

impl InterArrivalSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the kernel arrival time of a fresh heartbeat from `peer`. Allocates only the
    /// first time a peer is seen.
    pub fn record(&mut self, peer: &str, kernel_ns: u64) {
        match self.peers.get_mut(peer) {
            Some(histogram) => histogram.record(kernel_ns),
            None => {
                let mut histogram = InterArrival::default();
                histogram.record(kernel_ns);
                self.peers.insert(peer.to_owned(), histogram);
            }
        }
    }

    /// See [`InterArrival::forget_last`].
    pub fn forget_last(&mut self, peer: &str) {
        if let Some(histogram) = self.peers.get_mut(peer) {
            histogram.forget_last();
        }
    }

    pub fn get(&self, peer: &str) -> Option<&InterArrival> {
        self.peers.get(peer)
    }
}

/// Failovers of one group to this node: how long the holder's death took to detect, and how
/// long the takeover (acquiring the group) took after that.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FailoverCounts {
    pub count: u64,
    pub detection_sum_s: f64,
    pub takeover_sum_s: f64,
    pub last_detection_s: Option<f64>,
    pub last_takeover_s: Option<f64>,
}

/// [`FailoverCounts`] per group name.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FailoverStats {
    pub groups: BTreeMap<String, FailoverCounts>,
}

impl FailoverStats {
    /// One failover of `group` to this node. `detection`: from the last heartbeat of the
    /// dead holder (kernel time) to this node declaring it dead; `takeover`: from then until
    /// the group was held here.
    pub fn record(&mut self, group: &str, detection: Duration, takeover: Duration) {
        let counts = match self.groups.get_mut(group) {
            Some(counts) => counts,
            None => self.groups.entry(group.to_owned()).or_default(),
        };
        counts.count += 1;
        counts.detection_sum_s += detection.as_secs_f64();
        counts.takeover_sum_s += takeover.as_secs_f64();
        counts.last_detection_s = Some(detection.as_secs_f64());
        counts.last_takeover_s = Some(takeover.as_secs_f64());
    }
}

/// What one scrape renders.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub status: Status,
    pub inter_arrival: InterArrivalSet,
    pub failovers: FailoverStats,
    /// CLOCK_MONOTONIC time the status was taken.
    pub taken_ns: u64,
}

/// The decision loop's side: keeps the inter-arrival histograms and publishes snapshots.
#[derive(Debug)]
pub struct MetricsFeed {
    inter_arrival: InterArrivalSet,
    snapshots: watch::Sender<Option<Arc<Snapshot>>>,
    interval_ns: u64,
    next_ns: u64,
}

impl MetricsFeed {
    /// A feed publishing at most every `interval`; the receiver goes to [`serve`].
    pub fn new(interval: Duration) -> (Self, watch::Receiver<Option<Arc<Snapshot>>>) {
        let (snapshots, receiver) = watch::channel(None);
        let feed = Self {
            inter_arrival: InterArrivalSet::new(),
            snapshots,
            interval_ns: nanos(interval),
            next_ns: 0,
        };
        (feed, receiver)
    }

    /// A fresh heartbeat from `peer` arrived at `kernel_ns`.
    pub fn record_arrival(&mut self, peer: &str, kernel_ns: u64) {
        self.inter_arrival.record(peer, kernel_ns);
    }

    /// `peer` left cleanly: its absence is not an inter-arrival gap.
    pub fn peer_left(&mut self, peer: &str) {
        self.inter_arrival.forget_last(peer);
    }

    /// Whether a snapshot is due at `now_ns`.
    pub fn due(&self, now_ns: u64) -> bool {
        now_ns >= self.next_ns
    }

    /// When the next snapshot is due (CLOCK_MONOTONIC nanoseconds).
    pub fn next_due_ns(&self) -> u64 {
        self.next_ns
    }

    /// Publishes `status` (taken at `now_ns`) for the next scrapes.
    pub fn publish(&mut self, status: Status, failovers: &FailoverStats, now_ns: u64) {
        self.next_ns = now_ns.saturating_add(self.interval_ns);
        let snapshot = Snapshot {
            status,
            inter_arrival: self.inter_arrival.clone(),
            failovers: failovers.clone(),
            taken_ns: now_ns,
        };
        // Keeps the value even when no server listens (metrics bound later or failed).
        self.snapshots.send_replace(Some(Arc::new(snapshot)));
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
        }
    }
}

/// The text being built; writing to a String cannot fail, hence the ignored results.
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.name());
    }

    fn labels(&mut self, labels: &[(&str, &str)]) {
        if labels.is_empty() {
            return;
        }
        self.out.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            let _ = write!(self.out, "{key}=\"");
            for c in value.chars() {
                match c {
                    '\\' => self.out.push_str("\\\\"),
                    '"' => self.out.push_str("\\\""),
                    '\n' => self.out.push_str("\\n"),
                    c => self.out.push(c),
                }
            }
            self.out.push('"');
        }
        self.out.push('}');
    }

    fn int(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.out.push_str(name);
        self.labels(labels);
        let _ = writeln!(self.out, " {value}");
    }

    fn float(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        self.labels(labels);
        if value.is_nan() {
            self.out.push_str(" NaN\n");
        } else if value.is_infinite() {
            self.out
                .push_str(if value > 0.0 { " +Inf\n" } else { " -Inf\n" });
        } else {
            let _ = writeln!(self.out, " {value}");
        }
    }

    fn flag(&mut self, name: &str, labels: &[(&str, &str)], on: bool) {
        self.int(name, labels, u64::from(on));
    }

    /// A single-sample family.
    fn single_int(&mut self, name: &str, kind: Kind, help: &str, value: u64) {
        self.family(name, kind, help);
        self.int(name, &[], value);
    }

    fn single_float(&mut self, name: &str, kind: Kind, help: &str, value: f64) {
        self.family(name, kind, help);
        self.float(name, &[], value);
    }
}

fn node_status_code(status: &str) -> u64 {
    match serde_json::from_value::<NodeStatus>(serde_json::Value::String(status.to_owned())) {
        Ok(NodeStatus::Unknown) | Err(_) => 0,
        Ok(NodeStatus::Up) => 1,
        Ok(NodeStatus::Dead) => 2,
        Ok(NodeStatus::Left) => 3,
    }
}

fn node_state_code(state: Option<&str>) -> u64 {
    (1..=4u8)
        .filter_map(NodeState::from_u8)
        .find(|s| Some(s.name()) == state)
        .map_or(0, |s| s as u64)
}

fn link_status_code(status: LinkStatus) -> u64 {
    match status {
        LinkStatus::Unknown => 0,
        LinkStatus::Up => 1,
        LinkStatus::Dead => 2,
    }
}

fn phase_code(phase: Phase) -> u64 {
    match phase {
        Phase::Released => 0,
        Phase::Acquiring => 1,
        Phase::Held => 2,
        Phase::Releasing => 3,
    }
}

/// Renders `snapshot` as it stands at `now_ns` (CLOCK_MONOTONIC): ages grow by the time
/// since the snapshot was taken.
pub fn render(snapshot: &Snapshot, now_ns: u64) -> String {
    let status = &snapshot.status;
    let since_s = now_ns.saturating_sub(snapshot.taken_ns) as f64 / 1e9;
    let age_s = |ms_ago: Option<f64>| ms_ago.map_or(f64::INFINITY, |ms| ms / 1e3 + since_s);
    let mut x = Exposition {
        out: String::with_capacity(8 * 1024),
    };

    x.family(
        "hb_info",
        Kind::Gauge,
        "This agent: node name and cluster id.",
    );
    let cluster = format!("{:#010x}", status.cluster_id);
    x.int(
        "hb_info",
        &[
            ("node", &status.node),
            ("cluster_id", &cluster),
            ("version", env!("CARGO_PKG_VERSION")),
        ],
        1,
    );
    x.single_int(
        "hb_generation",
        Kind::Gauge,
        "This agent's generation (grows on every start).",
        status.generation,
    );
    x.single_float(
        "hb_uptime_seconds",
        Kind::Gauge,
        "Time since this agent started.",
        status.uptime_s + since_s,
    );
    x.single_int(
        "hb_xdp_active",
        Kind::Gauge,
        "1 when heartbeats are received through the XDP program, 0 on the UDP socket fallback.",
        u64::from(status.rx_path == RxPath::Xdp),
    );
    x.single_int(
        "hb_standby",
        Kind::Gauge,
        "1 while this node is in standby (hands its groups to the peers).",
        u64::from(status.standby),
    );
    x.single_int(
        "hb_in_initdead",
        Kind::Gauge,
        "1 while some peer has not been heard since start and initdead has not passed.",
        u64::from(status.in_initdead),
    );
    x.family(
        "hb_timer_seconds",
        Kind::Gauge,
        "Configured timers: keepalive, deadtime, warntime, initdead.",
    );
    for (timer, ms) in ["keepalive", "deadtime", "warntime", "initdead"]
        .iter()
        .zip(status.timers_ms)
    {
        x.float("hb_timer_seconds", &[("timer", timer)], ms / 1e3);
    }

    render_nodes(&mut x, snapshot, &age_s);
    render_links(&mut x, status, &age_s);
    render_groups(&mut x, snapshot);
    render_counters(&mut x, status);
    render_inter_arrival(&mut x, snapshot);
    x.out
}

fn render_nodes(x: &mut Exposition, snapshot: &Snapshot, age_s: &dyn Fn(Option<f64>) -> f64) {
    let nodes = &snapshot.status.nodes;
    x.family(
        "hb_node_up",
        Kind::Gauge,
        "1 when the node is up (this node always is), else 0.",
    );
    for node in nodes {
        let up = node.local || node_status_code(&node.status) == 1;
        x.flag("hb_node_up", &[("node", &node.name)], up);
    }
    x.family(
        "hb_node_status",
        Kind::Gauge,
        "Membership status: 0 unknown (not heard since start), 1 up, 2 dead, 3 left.",
    );
    for node in nodes {
        let code = if node.local {
            1
        } else {
            node_status_code(&node.status)
        };
        x.int("hb_node_status", &[("node", &node.name)], code);
    }
    x.family(
        "hb_node_state",
        Kind::Gauge,
        "What the node last advertised: 0 nothing heard, 1 starting, 2 active, 3 standby, 4 leaving.",
    );
    for node in nodes {
        x.int(
            "hb_node_state",
            &[("node", &node.name)],
            node_state_code(node.state.as_deref()),
        );
    }
    x.family(
        "hb_node_last_heard_age_seconds",
        Kind::Gauge,
        "Time since the last authenticated heartbeat from the peer (kernel arrival time); +Inf if never heard.",
    );
    for node in nodes.iter().filter(|n| !n.local) {
        x.float(
            "hb_node_last_heard_age_seconds",
            &[("node", &node.name)],
            age_s(node.last_heard_ms_ago),
        );
    }
    x.family(
        "hb_node_generation",
        Kind::Gauge,
        "The peer's generation (changes when its agent restarts).",
    );
    for node in nodes.iter().filter(|n| !n.local) {
        if let Some(generation) = node.generation {
            x.int("hb_node_generation", &[("node", &node.name)], generation);
        }
    }
    type Field = fn(&crate::membership::NodeCounters) -> u64;
    let per_node: [(&str, &str, Field); 5] = [
        (
            "hb_node_heartbeats_received_total",
            "Authenticated packets from the peer that advanced its sequence.",
            |c| c.received,
        ),
        (
            "hb_node_heartbeats_lost_total",
            "Sequence numbers of the peer never received on any link.",
            |c| c.lost,
        ),
        (
            "hb_node_replays_total",
            "Packets of the peer refused as replays (old generation or repeated sequence).",
            |c| c.replays,
        ),
        (
            "hb_node_late_heartbeats_total",
            "Heartbeats of the peer that came later than warntime.",
            |c| c.late,
        ),
        (
            "hb_node_deaths_total",
            "Times the peer was declared dead.",
            |c| c.deaths,
        ),
    ];
    for (name, help, field) in per_node {
        x.family(name, Kind::Counter, help);
        for node in nodes.iter().filter(|n| !n.local) {
            let value = node.counters.as_ref().map_or(0, field);
            x.int(name, &[("node", &node.name)], value);
        }
    }
    x.family(
        "hb_node_heartbeat_gap_max_seconds",
        Kind::Gauge,
        "Longest time between two consecutive heartbeats of the peer while it was up.",
    );
    for node in nodes.iter().filter(|n| !n.local) {
        let gap_ns = node.counters.as_ref().map_or(0, |c| c.max_gap_ns);
        x.float(
            "hb_node_heartbeat_gap_max_seconds",
            &[("node", &node.name)],
            gap_ns as f64 / 1e9,
        );
    }
}

fn render_links(x: &mut Exposition, status: &Status, age_s: &dyn Fn(Option<f64>) -> f64) {
    let links = &status.links;
    x.family(
        "hb_link_up",
        Kind::Gauge,
        "1 when heartbeats from the peer arrive on this interface, else 0.",
    );
    for link in links {
        x.flag(
            "hb_link_up",
            &[("node", &link.node), ("iface", &link.iface)],
            link.status == LinkStatus::Up,
        );
    }
    x.family(
        "hb_link_status",
        Kind::Gauge,
        "Link status: 0 unknown (not heard yet), 1 up, 2 dead.",
    );
    for link in links {
        x.int(
            "hb_link_status",
            &[("node", &link.node), ("iface", &link.iface)],
            link_status_code(link.status),
        );
    }
    x.family(
        "hb_link_last_heard_age_seconds",
        Kind::Gauge,
        "Time since the last authenticated heartbeat from the peer on this interface; +Inf if never.",
    );
    for link in links {
        x.float(
            "hb_link_last_heard_age_seconds",
            &[("node", &link.node), ("iface", &link.iface)],
            age_s(link.last_heard_ms_ago),
        );
    }
    type Field = fn(&crate::membership::LinkCounters) -> u64;
    let per_link: [(&str, &str, Field); 3] = [
        (
            "hb_link_heartbeats_received_total",
            "Authenticated packets from the peer on this interface.",
            |c| c.received,
        ),
        (
            "hb_link_heartbeats_lost_total",
            "Sequence numbers of the peer skipped on this interface.",
            |c| c.lost,
        ),
        (
            "hb_link_replays_total",
            "Packets refused on this interface because their sequence number did not increase.",
            |c| c.replays,
        ),
    ];
    for (name, help, field) in per_link {
        x.family(name, Kind::Counter, help);
        for link in links {
            x.int(
                name,
                &[("node", &link.node), ("iface", &link.iface)],
                field(&link.counters),
            );
        }
    }
}

fn render_groups(x: &mut Exposition, snapshot: &Snapshot) {
    let status = &snapshot.status;
    let groups = &status.groups;
    x.family(
        "hb_group_held",
        Kind::Gauge,
        "1 when this node holds the resource group (all its resources started).",
    );
    for group in groups {
        x.flag(
            "hb_group_held",
            &[("group", &group.name)],
            group.phase == Phase::Held,
        );
    }
    x.family(
        "hb_group_phase",
        Kind::Gauge,
        "This node's phase for the group: 0 released, 1 acquiring, 2 held, 3 releasing.",
    );
    for group in groups {
        x.int(
            "hb_group_phase",
            &[("group", &group.name)],
            phase_code(group.phase),
        );
    }
    x.family(
        "hb_group_holder",
        Kind::Gauge,
        "1 for the node that holds the group as far as this node knows, 0 for the others.",
    );
    for group in groups {
        for node in &status.nodes {
            x.flag(
                "hb_group_holder",
                &[("group", &group.name), ("node", &node.name)],
                group.holder.as_deref() == Some(node.name.as_str()),
            );
        }
    }
    x.family(
        "hb_group_failed_here",
        Kind::Gauge,
        "1 when the group failed to start on this node and is left to the peers.",
    );
    for group in groups {
        x.flag(
            "hb_group_failed_here",
            &[("group", &group.name)],
            group.failed_here,
        );
    }

    let none = FailoverCounts::default();
    let counts = |name: &str| snapshot.failovers.groups.get(name).unwrap_or(&none);
    x.family(
        "hb_failovers_total",
        Kind::Counter,
        "Times this node took the group over after its holder died.",
    );
    for group in groups {
        x.int(
            "hb_failovers_total",
            &[("group", &group.name)],
            counts(&group.name).count,
        );
    }
    // Sum over all failovers, and the latest one.
    type Durations = fn(&FailoverCounts) -> (f64, Option<f64>);
    let durations: [(&str, &str, Durations); 2] = [
        (
            "hb_failover_detection_seconds",
            "From the dead holder's last heartbeat to this node declaring it dead",
            |c| (c.detection_sum_s, c.last_detection_s),
        ),
        (
            "hb_failover_takeover_seconds",
            "From declaring the holder dead to holding the group here",
            |c| (c.takeover_sum_s, c.last_takeover_s),
        ),
    ];
    for (name, help, field) in durations {
        x.family(name, Kind::Summary, &format!("{help}, over all failovers."));
        for group in groups {
            let c = counts(&group.name);
            let labels = [("group", group.name.as_str())];
            x.float(&format!("{name}_sum"), &labels, field(c).0);
            x.int(&format!("{name}_count"), &labels, c.count);
        }
        let last = format!("hb_last_{}", &name["hb_".len()..]);
        x.family(
            &last,
            Kind::Gauge,
            &format!("{help}, in the latest failover (NaN before the first)."),
        );
        for group in groups {
            x.float(
                &last,
                &[("group", &group.name)],
                field(counts(&group.name)).1.unwrap_or(f64::NAN),
            );
        }
    }
}

fn render_counters(x: &mut Exposition, status: &Status) {
    let c = &status.counters;
    let totals = [
        (
            "hb_heartbeats_sent_total",
            "Packets sent (one per link per message).",
            c.sent,
        ),
        (
            "hb_send_errors_total",
            "Packets the kernel refused to send.",
            c.send_errors,
        ),
        (
            "hb_auth_failures_total",
            "Well-shaped packets whose MAC did not verify (wrong key, or forged).",
            c.auth_failures,
        ),
        (
            "hb_replays_total",
            "Authenticated packets refused as replays.",
            c.replays,
        ),
        (
            "hb_unknown_node_packets_total",
            "Well-shaped packets from a node that is not configured (dropped before authentication).",
            c.unknown_nodes,
        ),
        (
            "hb_own_packets_total",
            "This node's own packets received back (broadcast or multicast loop).",
            c.own_packets,
        ),
        (
            "hb_late_heartbeats_total",
            "Heartbeats from any peer that came later than warntime.",
            c.late,
        ),
        (
            "hb_lost_heartbeats_total",
            "Sequence numbers of any peer never received.",
            c.lost,
        ),
    ];
    for (name, help, value) in totals {
        x.single_int(name, Kind::Counter, help, value);
    }
    x.family(
        "hb_rx_packets_total",
        Kind::Counter,
        "Packets on the heartbeat ports by what the receive path (XDP program or socket fallback) did with them: passed, accepted, or dropped and why.",
    );
    for (reason, value) in &c.rx {
        x.int("hb_rx_packets_total", &[("reason", reason)], *value);
    }
    let ring_full =
        c.rx.iter()
            .find(|(reason, _)| reason == hb_common::maps::Counter::RingFull.name())
            .map_or(0, |(_, value)| *value);
    x.single_int(
        "hb_ring_buffer_drops_total",
        Kind::Counter,
        "Accepted heartbeats lost because the ring buffer to the agent was full.",
        ring_full,
    );
    x.single_float(
        "hb_max_stall_seconds",
        Kind::Gauge,
        "The longest this agent's decision loop woke late since start.",
        status.max_stall_ms / 1e3,
    );
    let d = &status.kernel_to_agent_us;
    // Quantiles over the most recent heartbeats; no `_sum`, which the agent does not keep
    // (optional in a summary).
    x.family(
        "hb_kernel_to_agent_delay_seconds",
        Kind::Summary,
        "Kernel arrival stamp to the agent reading the heartbeat: quantiles over the most recent heartbeats (1 = maximum), count since start.",
    );
    for (quantile, us) in [("0.5", d.median), ("0.99", d.p99), ("1", d.max)] {
        x.float(
            "hb_kernel_to_agent_delay_seconds",
            &[("quantile", quantile)],
            us / 1e6,
        );
    }
    x.int("hb_kernel_to_agent_delay_seconds_count", &[], d.count);
}

fn render_inter_arrival(x: &mut Exposition, snapshot: &Snapshot) {
    const NAME: &str = "hb_heartbeat_interarrival_seconds";
    x.family(
        NAME,
        Kind::Histogram,
        "Gap between the kernel arrival times of successive fresh heartbeats from the peer.",
    );
    let empty = InterArrival::default();
    let bounds: Vec<String> = INTER_ARRIVAL_BUCKETS_MS
        .iter()
        .map(|ms| (*ms as f64 / 1e3).to_string())
        .collect();
    for node in snapshot.status.nodes.iter().filter(|n| !n.local) {
        let histogram = snapshot.inter_arrival.get(&node.name).unwrap_or(&empty);
        let bucket = format!("{NAME}_bucket");
        for (le, count) in bounds.iter().zip(histogram.cumulative()) {
            x.int(&bucket, &[("node", &node.name), ("le", le)], count);
        }
        x.int(
            &bucket,
            &[("node", &node.name), ("le", "+Inf")],
            histogram.count(),
        );
        x.float(
            &format!("{NAME}_sum"),
            &[("node", &node.name)],
            histogram.sum().as_secs_f64(),
        );
        x.int(
            &format!("{NAME}_count"),
            &[("node", &node.name)],
            histogram.count(),
        );
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics endpoint {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// Binds the metrics endpoint (`metrics ADDR:PORT`).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })
}

/// Answers `GET /metrics` (and `HEAD`) with the latest snapshot, forever. One request per
/// connection; anything else gets 404 or 405.
pub async fn serve(listener: TcpListener, snapshots: watch::Receiver<Option<Arc<Snapshot>>>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                warn!("metrics endpoint accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "metrics endpoint busy; closing connection");
            continue;
        };
        let snapshots = snapshots.clone();
        tokio::spawn(async move {
            let outcome = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, snapshots)).await;
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(%peer, "metrics connection ended: {e}"),
                Err(_) => debug!(%peer, "metrics client too slow; closed"),
            }
            drop(slot);
        });
    }
}

/// The status line and body for one request head.
fn respond(
    head: &str,
    snapshots: &watch::Receiver<Option<Arc<Snapshot>>>,
) -> (&'static str, String) {
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if path != "/metrics" {
        return (
            "404 Not Found",
            "not found; metrics are at /metrics\n".into(),
        );
    }
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", "only GET and HEAD\n".into());
    }
    match snapshots.borrow().as_ref() {
        Some(snapshot) => ("200 OK", render(snapshot, monotonic_ns())),
        None => (
            "503 Service Unavailable",
            "the agent has not published its first snapshot yet\n".into(),
        ),
    }
}

async fn answer(
    mut stream: TcpStream,
    snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
) -> io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() > MAX_REQUEST_HEAD {
            write_response(
                &mut stream,
                "431 Request Header Fields Too Large",
                "",
                false,
            )
            .await?;
            return drain(&mut stream).await;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let (status_line, body) = respond(&head, &snapshots);
    let is_head = head.starts_with("HEAD ");
    write_response(&mut stream, status_line, &body, is_head).await?;
    drain(&mut stream).await
}

/// Reads what the client still sends until it closes: closing a socket with unread input
/// makes the kernel reset the connection, and the client could lose the response.
async fn drain(stream: &mut TcpStream) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    let mut left: usize = 64 * 1024;
    while left > 0 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        left = left.saturating_sub(n);
    }
    Ok(())
}

async fn write_response(
    stream: &mut TcpStream,
    status_line: &str,
    body: &str,
    head_only: bool,
) -> io::Result<()> {
    let content_type = if status_line.starts_with("200") {
        CONTENT_TYPE
    } else {
        "text/plain; charset=utf-8"
    };
    let mut response = format!(
        "HTTP/1.1 {status_line}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status_line.starts_with("405") {
        response.push_str("Allow: GET, HEAD\r\n");
    }
    response.push_str("\r\n");
    if !head_only {
        response.push_str(body);
    }
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{CountersStatus, GroupStatus, LinkStatusReport, NodeReport};
    use crate::membership::{LinkCounters, NodeCounters};
    use crate::stats::LatencySummary;
    use std::collections::{HashMap, HashSet};

    const MS: u64 = 1_000_000;

    fn status() -> Status {
        Status {
            node: "lb1".into(),
            cluster_id: 0xabcd,
            generation: 1_700_000_000,
            uptime_s: 12.5,
            rx_path: RxPath::Xdp,
            rx_detail: "eth1 driver".into(),
            standby: false,
            in_initdead: false,
            timers_ms: [5.0, 20.0, 10.0, 1000.0],
            nodes: vec![
                NodeReport {
                    name: "lb1".into(),
                    local: true,
                    status: "up".into(),
                    state: Some("active".into()),
                    generation: Some(1_700_000_000),
                    last_heard_ms_ago: None,
                    held: 1,
                    counters: None,
                },
                NodeReport {
                    name: "lb2".into(),
                    local: false,
                    status: "dead".into(),
                    state: Some("standby".into()),
                    generation: Some(1_700_000_100),
                    last_heard_ms_ago: Some(250.0),
                    held: 0,
                    counters: Some(NodeCounters {
                        received: 1000,
                        lost: 3,
                        replays: 1,
                        late: 2,
                        deaths: 1,
                        max_gap_ns: 180_000_000,
                    }),
                },
                NodeReport {
                    name: "lb\"3".into(),
                    local: false,
                    status: "unknown".into(),
                    state: None,
                    generation: None,
                    last_heard_ms_ago: None,
                    held: 0,
                    counters: None,
                },
            ],
            links: vec![
                LinkStatusReport {
                    node: "lb2".into(),
                    iface: "eth1".into(),
                    status: LinkStatus::Up,
                    last_heard_ms_ago: Some(250.0),
                    counters: LinkCounters {
                        received: 990,
                        lost: 13,
                        replays: 0,
                    },
                },
                LinkStatusReport {
                    node: "lb2".into(),
                    iface: "eth2".into(),
                    status: LinkStatus::Dead,
                    last_heard_ms_ago: None,
                    counters: LinkCounters::default(),
                },
            ],
            groups: vec![GroupStatus {
                name: "www".into(),
                preferred: "lb2".into(),
                holder: Some("lb1".into()),
                phase: Phase::Held,
                intended_holder: Some("lb1".into()),
                failed_here: false,
                resources: vec!["198.18.0.10".into(), "nginx".into()],
            }],
            counters: CountersStatus {
                sent: 5000,
                send_errors: 0,
                auth_failures: 7,
                replays: 1,
                unknown_nodes: 0,
                own_packets: 0,
                late: 2,
                lost: 3,
                rx: hb_common::maps::Counter::ALL
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_owned(), i as u64 * 10))
                    .collect(),
            },
            max_stall_ms: 1.5,
            kernel_to_agent_us: LatencySummary {
                count: 1000,
                median: 40.0,
                p99: 120.0,
                max: 900.0,
            },
        }
    }

    fn snapshot() -> Snapshot {
        let mut inter_arrival = InterArrivalSet::new();
        for t in [0, 5, 10, 16, 40] {
            inter_arrival.record("lb2", 1_000 * MS + t * MS);
        }
        let mut failovers = FailoverStats::default();
        failovers.record("www", Duration::from_millis(21), Duration::from_millis(300));
        Snapshot {
            status: status(),
            inter_arrival,
            failovers,
            taken_ns: 50_000 * MS,
        }
    }

    #[derive(Debug)]
    struct Sample {
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    }

    fn valid_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    fn parse_value(text: &str) -> f64 {
        match text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            other => other
                .parse()
                .unwrap_or_else(|_| panic!("bad value {other:?}")),
        }
    }

    /// Parses `{a="x",b="y\"z"}` at the start of `text`; returns the labels and the rest.
    fn parse_labels(text: &str) -> (Vec<(String, String)>, &str) {
        let Some(mut rest) = text.strip_prefix('{') else {
            return (Vec::new(), text);
        };
        let mut labels = Vec::new();
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                return (labels, after);
            }
            let eq = rest.find("=\"").expect("label without =\"");
            let key = &rest[..eq];
            assert!(valid_name(key) && !key.contains(':'), "label name {key:?}");
            let mut value = String::new();
            let mut chars = rest[eq + 2..].char_indices();
            let end = loop {
                let (i, c) = chars.next().expect("unterminated label value");
                match c {
                    '\\' => match chars.next().expect("dangling escape").1 {
                        'n' => value.push('\n'),
                        e @ ('\\' | '"') => value.push(e),
                        e => panic!("bad escape \\{e}"),
                    },
                    '"' => break eq + 2 + i + 1,
                    c => value.push(c),
                }
            };
            labels.push((key.to_owned(), value));
            rest = &rest[end..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }

    /// A strict reader of the text format: every sample belongs to a family declared once,
    /// with HELP then TYPE before its samples, names and labels valid, values numbers.
    fn parse(text: &str) -> (HashMap<String, String>, Vec<Sample>) {
        let mut types = HashMap::new();
        let mut helped = HashSet::new();
        let mut samples = Vec::new();
        let mut current: Option<String> = None;
        assert!(text.ends_with('\n'));
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                assert!(valid_name(name), "{line}");
                assert!(helped.insert(name.to_owned()), "HELP twice: {line}");
                current = Some(name.to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert_eq!(current.as_deref(), Some(name), "TYPE without HELP: {line}");
                assert!(
                    ["counter", "gauge", "histogram", "summary"].contains(&kind),
                    "{line}"
                );
                assert!(types.insert(name.to_owned(), kind.to_owned()).is_none());
            } else {
                let name_end = line.find(['{', ' ']).unwrap();
                let name = &line[..name_end];
                assert!(valid_name(name), "{line}");
                let family = current.as_deref().expect("sample before any family");
                let kind = &types[family];
                let allowed = match kind.as_str() {
                    "histogram" => [
                        format!("{family}_bucket"),
                        format!("{family}_sum"),
                        format!("{family}_count"),
                    ]
                    .contains(&name.to_owned()),
                    "summary" => {
                        name == family
                            || name == format!("{family}_sum")
                            || name == format!("{family}_count")
                    }
                    "counter" => name == family && name.ends_with("_total"),
                    _ => name == family,
                };
                assert!(allowed, "{name} is not a sample of {kind} {family}");
                let (labels, rest) = parse_labels(&line[name_end..]);
                let value = rest.strip_prefix(' ').expect("no space before value");
                samples.push(Sample {
                    name: name.to_owned(),
                    labels,
                    value: parse_value(value),
                });
            }
        }
        (types, samples)
    }

    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .collect();
        assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
        found[0].value
    }

    #[test]
    fn inter_arrival_buckets_gaps_between_fresh_heartbeats() {
        let mut h = InterArrival::default();
        h.record(100 * MS);
        assert_eq!(h.count(), 0);
        h.record(105 * MS); // 5 ms: in the 5 ms bucket (bounds are inclusive)
        h.record(105 * MS + 1); // just above 0: 1 ms bucket
        h.record(104 * MS); // out of order: a zero gap, and 105 ms stays the reference
        h.record(150 * MS); // 45 ms from 105
        h.record(100_000 * MS); // above the largest bound
        assert_eq!(h.count(), 5);
        let c = h.cumulative();
        let at = |ms: u64| {
            c[INTER_ARRIVAL_BUCKETS_MS
                .iter()
                .position(|b| *b == ms)
                .unwrap()]
        };
        assert_eq!((at(1), at(2), at(5), at(10), at(50)), (2, 2, 3, 3, 4));
        assert_eq!(at(60_000), 4);
        assert_eq!(h.sum(), Duration::from_nanos(99_900 * MS));
        h.forget_last();
        h.record(200_000 * MS);
        assert_eq!(
            h.count(),
            5,
            "the first heartbeat after forgetting has no gap"
        );
    }

    #[test]
    fn inter_arrival_set_is_per_peer() {
        let mut set = InterArrivalSet::new();
        set.record("a", 0);
        set.record("b", 0);
        set.record("a", 10 * MS);
        set.forget_last("b");
        set.forget_last("nobody");
        set.record("b", 5 * MS);
        assert_eq!(set.get("a").unwrap().count(), 1);
        assert_eq!(set.get("b").unwrap().count(), 0);
        assert!(set.get("c").is_none());
    }

    #[test]
    fn rendering_is_valid_exposition_with_the_expected_values() {
        // Scraped 2 s after the snapshot was taken.
        let text = render(&snapshot(), 52_000 * MS);
        let (types, samples) = parse(&text);
        let v = |name: &str, labels: &[(&str, &str)]| value(&samples, name, labels);

        assert_eq!(types["hb_node_up"], "gauge");
        assert_eq!(types["hb_heartbeats_sent_total"], "counter");
        assert_eq!(types["hb_heartbeat_interarrival_seconds"], "histogram");
        assert_eq!(
            v("hb_info", &[("node", "lb1"), ("cluster_id", "0x0000abcd")]),
            1.0
        );
        assert_eq!(v("hb_uptime_seconds", &[]), 14.5);
        assert_eq!(v("hb_xdp_active", &[]), 1.0);
        assert_eq!(v("hb_timer_seconds", &[("timer", "deadtime")]), 0.02);

        assert_eq!(v("hb_node_up", &[("node", "lb1")]), 1.0);
        assert_eq!(v("hb_node_up", &[("node", "lb2")]), 0.0);
        assert_eq!(v("hb_node_status", &[("node", "lb2")]), 2.0);
        assert_eq!(v("hb_node_status", &[("node", "lb\"3")]), 0.0);
        assert_eq!(v("hb_node_state", &[("node", "lb1")]), 2.0);
        assert_eq!(v("hb_node_state", &[("node", "lb2")]), 3.0);
        assert_eq!(v("hb_node_state", &[("node", "lb\"3")]), 0.0);
        // 250 ms at snapshot time, plus the 2 s since.
        assert_eq!(
            v("hb_node_last_heard_age_seconds", &[("node", "lb2")]),
            2.25
        );
        assert_eq!(
            v("hb_node_last_heard_age_seconds", &[("node", "lb\"3")]),
            f64::INFINITY
        );
        assert_eq!(v("hb_node_heartbeats_lost_total", &[("node", "lb2")]), 3.0);
        assert_eq!(v("hb_node_deaths_total", &[("node", "lb2")]), 1.0);
        assert_eq!(v("hb_node_deaths_total", &[("node", "lb\"3")]), 0.0);

        assert_eq!(v("hb_link_up", &[("iface", "eth1")]), 1.0);
        assert_eq!(v("hb_link_up", &[("iface", "eth2")]), 0.0);
        assert_eq!(v("hb_link_status", &[("iface", "eth2")]), 2.0);
        assert_eq!(
            v("hb_link_heartbeats_lost_total", &[("iface", "eth1")]),
            13.0
        );

        assert_eq!(v("hb_group_held", &[("group", "www")]), 1.0);
        assert_eq!(v("hb_group_phase", &[("group", "www")]), 2.0);
        assert_eq!(
            v("hb_group_holder", &[("group", "www"), ("node", "lb1")]),
            1.0
        );
        assert_eq!(
            v("hb_group_holder", &[("group", "www"), ("node", "lb2")]),
            0.0
        );
        assert_eq!(v("hb_failovers_total", &[("group", "www")]), 1.0);
        assert_eq!(
            v("hb_failover_detection_seconds_sum", &[("group", "www")]),
            0.021
        );
        assert_eq!(
            v("hb_failover_takeover_seconds_count", &[("group", "www")]),
            1.0
        );
        assert_eq!(
            v("hb_last_failover_takeover_seconds", &[("group", "www")]),
            0.3
        );

        assert_eq!(v("hb_auth_failures_total", &[]), 7.0);
        assert_eq!(v("hb_heartbeats_sent_total", &[]), 5000.0);
        assert_eq!(
            v("hb_rx_packets_total", &[("reason", "drop_bad_magic")]),
            30.0
        );
        assert_eq!(v("hb_ring_buffer_drops_total", &[]), 90.0);
        assert_eq!(v("hb_max_stall_seconds", &[]), 0.0015);
        assert_eq!(
            v("hb_kernel_to_agent_delay_seconds", &[("quantile", "0.99")]),
            0.00012
        );
        assert_eq!(v("hb_kernel_to_agent_delay_seconds_count", &[]), 1000.0);

        // Gaps of 5, 5, 6 and 24 ms.
        let bucket = "hb_heartbeat_interarrival_seconds_bucket";
        assert_eq!(v(bucket, &[("node", "lb2"), ("le", "0.005")]), 2.0);
        assert_eq!(v(bucket, &[("node", "lb2"), ("le", "0.01")]), 3.0);
        assert_eq!(v(bucket, &[("node", "lb2"), ("le", "0.02")]), 3.0);
        assert_eq!(v(bucket, &[("node", "lb2"), ("le", "0.05")]), 4.0);
        assert_eq!(v(bucket, &[("node", "lb2"), ("le", "+Inf")]), 4.0);
        assert_eq!(
            v(
                "hb_heartbeat_interarrival_seconds_count",
                &[("node", "lb2")]
            ),
            4.0
        );
        assert!(
            (v("hb_heartbeat_interarrival_seconds_sum", &[("node", "lb2")]) - 0.04).abs() < 1e-12
        );
        // A peer never heard still has its (empty) histogram: the series set is stable.
        assert_eq!(v(bucket, &[("node", "lb\"3"), ("le", "+Inf")]), 0.0);
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_the_count() {
        let text = render(&snapshot(), 50_000 * MS);
        let (_, samples) = parse(&text);
        let buckets: Vec<&Sample> = samples
            .iter()
            .filter(|s| {
                s.name == "hb_heartbeat_interarrival_seconds_bucket"
                    && s.labels.contains(&("node".into(), "lb2".into()))
            })
            .collect();
        assert_eq!(buckets.len(), INTER_ARRIVAL_BUCKETS_MS.len() + 1);
        let mut last_le = f64::NEG_INFINITY;
        let mut last_count = 0.0;
        for b in &buckets {
            let le = parse_value(&b.labels.iter().find(|(k, _)| k == "le").unwrap().1);
            assert!(le > last_le && b.value >= last_count, "{b:?}");
            (last_le, last_count) = (le, b.value);
        }
        assert_eq!(last_le, f64::INFINITY);
    }

    #[test]
    fn series_do_not_depend_on_state() {
        // The same configuration in another state has exactly the same series.
        let series = |snapshot: &Snapshot| -> Vec<(String, Vec<(String, String)>)> {
            let (_, samples) = parse(&render(snapshot, snapshot.taken_ns));
            samples.into_iter().map(|s| (s.name, s.labels)).collect()
        };
        let before = snapshot();
        let mut after = snapshot();
        after.status.nodes[1].status = "up".into();
        after.status.nodes[1].state = Some("active".into());
        after.status.links[1].status = LinkStatus::Up;
        after.status.groups[0].holder = Some("lb2".into());
        after.status.groups[0].phase = Phase::Released;
        after.failovers = FailoverStats::default();
        assert_eq!(series(&before), series(&after));
    }

    async fn fetch(addr: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn serves_metrics_over_http_on_loopback() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mut feed, receiver) = MetricsFeed::new(PUBLISH_INTERVAL);
        tokio::spawn(serve(listener, receiver));

        let get = "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n";
        let early = fetch(addr, get).await;
        assert!(early.starts_with("HTTP/1.1 503 "), "{early}");

        assert!(feed.due(monotonic_ns()));
        feed.record_arrival("lb2", 1_000 * MS);
        feed.record_arrival("lb2", 1_007 * MS);
        let failovers = FailoverStats::default();
        let now = monotonic_ns();
        feed.publish(status(), &failovers, now);
        assert!(!feed.due(now + 1));
        assert!(feed.due(now + 1_000 * MS));

        let response = fetch(addr, get).await;
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains(&format!("Content-Type: {CONTENT_TYPE}")),
            "{head}"
        );
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{head}"
        );
        let (_, samples) = parse(body);
        assert_eq!(
            value(
                &samples,
                "hb_heartbeat_interarrival_seconds_count",
                &[("node", "lb2")]
            ),
            1.0
        );
        assert_eq!(value(&samples, "hb_auth_failures_total", &[]), 7.0);

        let with_query = fetch(addr, "GET /metrics?name[]=x HTTP/1.0\r\n\r\n").await;
        assert!(with_query.starts_with("HTTP/1.1 200 "), "{with_query}");
        let head_only = fetch(addr, "HEAD /metrics HTTP/1.1\r\n\r\n").await;
        assert!(head_only.starts_with("HTTP/1.1 200 ") && head_only.ends_with("\r\n\r\n"));
        let missing = fetch(addr, "GET / HTTP/1.1\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        let post = fetch(addr, "POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405 ") && post.contains("Allow: GET, HEAD"));
        let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
        assert!(fetch(addr, &huge).await.starts_with("HTTP/1.1 431 "));
    }

    #[tokio::test]
    async fn bind_conflict_is_a_clear_error() {
        let taken = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = bind(addr).await.unwrap_err();
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
