//! The flood section (issue 7): two healthy hb nodes, and a third namespace on both bridges
//! sending junk and forged heartbeats to port 694 of both nodes on both links as fast as
//! this machine can ([`hb_tests::flood`]). Run once with the XDP receive path and once with
//! `xdp off` (the socket path), each on a fresh testbed at the same timers, each preceded by
//! an idle baseline of the same cluster.
//!
//! Measured per run: packets sent (from the flooder), packets the receive path judged and
//! what it dropped by reason (`hb-agent status --json`, `counters.rx`: the XDP program's
//! per-CPU map, or the socket path's own counts), forged heartbeats the agent rejected
//! (`auth_failures`), datagrams the kernel dropped for a full socket buffer
//! (`/proc/net/snmp`), VIP movements (`ip monitor address`), peer deaths and lost
//! heartbeats, the client's failed requests, and CPU: each agent's utime+stime (with its
//! reaped children) and the whole machine's softirq time, where the XDP program and the
//! kernel's receive path run, charged to no process.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hb_tests::flood::{
    add_flood_source, cluster_targets, Flood, FloodReport, FloodSpec, Forgery, HEARTBEAT_PORT,
};
use serde_json::{json, Value};

use super::agent_stats::{
    counter, counter_growth, dropped, judged, peer_deaths, rx_counters, softirq_ticks, UdpCounters,
};
use super::scenario::{
    clock_ticks_per_second, first_line, settle, start_testbed_with, Plan, VipMonitor,
};
use super::testbed::{HbOptions, Setting, Testbed, NODES};
use super::Progress;

/// hb's receive path in a flood run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxMode {
    Xdp,
    Socket,
}

impl RxMode {
    pub const ALL: [RxMode; 2] = [RxMode::Xdp, RxMode::Socket];

    /// As `hb-agent status` names it.
    pub fn key(self) -> &'static str {
        match self {
            RxMode::Xdp => "xdp",
            RxMode::Socket => "socket",
        }
    }

    /// The ha.cf `xdp` value that selects it.
    fn ha_cf(self) -> &'static str {
        match self {
            RxMode::Xdp => "auto",
            RxMode::Socket => "off",
        }
    }
}

/// How the flood section runs.
#[derive(Debug, Clone)]
pub struct FloodPlan {
    /// hb's timers: the fast profile, the hardest to keep steady.
    pub setting: Setting,
    pub idle: Duration,
    pub flood: Duration,
    /// Sending threads: two per core. A sender blocks while its socket's buffer is held by
    /// packets still crossing the lab's bridge; one per core left the cores half idle.
    pub threads: usize,
    /// Share of forged heartbeats among the packets (the rest is junk), percent.
    pub forged_percent: u8,
}

impl FloodPlan {
    pub fn new(quick: bool, setting: Setting) -> FloodPlan {
        FloodPlan {
            setting,
            idle: Duration::from_secs(if quick { 5 } else { 30 }),
            flood: Duration::from_secs(if quick { 10 } else { 60 }),
            threads: 2 * std::thread::available_parallelism().map_or(2, |n| n.get()),
            forged_percent: 50,
        }
    }
}

/// One flood run.
#[derive(Debug, Clone)]
pub struct FloodRecord {
    pub mode: RxMode,
    pub setting: Setting,
    pub outcome: std::result::Result<FloodMeasure, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FloodMeasure {
    /// Per node, the receive path its status reported.
    pub rx_path: [String; 2],
    pub idle_seconds: f64,
    /// Per node: agent CPU in ms per second of the idle baseline.
    pub idle_cpu_ms_per_s: [f64; 2],
    pub idle_softirq_ms_per_s: f64,
    pub sent: FloodReport,
    pub flood_seconds: f64,
    pub cpu_ms_per_s: [f64; 2],
    pub softirq_ms_per_s: f64,
    /// Per node: growth of the receive path's counters by reason during the flood.
    pub rx: [BTreeMap<String, u64>; 2],
    /// Per node: forged heartbeats the agent's authentication rejected.
    pub auth_failures: [u64; 2],
    /// Per node: packets claiming to be from the node itself, which the socket path sets
    /// aside before the receive-path counters (the XDP program drops them as unknown peers).
    pub own_packets: [u64; 2],
    /// Per node: the kernel's UDP counters' growth during the flood.
    pub udp: [UdpCounters; 2],
    pub vip_added: [usize; 2],
    pub vip_removed: [usize; 2],
    /// Per node: times it declared its peer dead during the flood.
    pub peer_deaths: [u64; 2],
    /// Per node: heartbeats of its peer never received.
    pub lost: [u64; 2],
    pub requests: usize,
    pub failed_requests: usize,
    /// Per node: the agent's stall maximum since start, at the end.
    pub max_stall_ms: [f64; 2],
}

impl FloodMeasure {
    pub fn false_failovers(&self) -> usize {
        self.vip_added[1]
    }

    pub fn vip_changes(&self) -> usize {
        self.vip_added.iter().chain(&self.vip_removed).sum()
    }

    /// CPU of the flood's sending threads (their kernel send path included), ms per second.
    pub fn sender_cpu_ms_per_s(&self) -> Option<f64> {
        let seconds = self.sent.elapsed.as_secs_f64();
        self.sent
            .cpu
            .filter(|_| seconds > 0.0)
            .map(|cpu| cpu.as_secs_f64() * 1000.0 / seconds)
    }

    /// Packets the receive path of node `index` judged (its own packets included).
    pub fn judged(&self, index: usize) -> u64 {
        judged(&self.rx[index]) + self.own_packets[index]
    }

    /// [`FloodMeasure::judged`] per second of flood.
    pub fn judged_pps(&self, index: usize) -> f64 {
        self.judged(index) as f64 / self.flood_seconds
    }
}

impl FloodRecord {
    pub fn to_json(&self) -> Value {
        let mut value = json!({
            "rx_mode": self.mode.key(),
            "setting": self.setting.label(),
        });
        match &self.outcome {
            Ok(m) => {
                let per_node = |f: &dyn Fn(usize) -> Value| json!({"lb1": f(0), "lb2": f(1)});
                value["rx_path_reported"] = per_node(&|i| json!(m.rx_path[i]));
                value["idle"] = json!({
                    "seconds": m.idle_seconds,
                    "agent_cpu_ms_per_s": per_node(&|i| json!(m.idle_cpu_ms_per_s[i])),
                    "softirq_ms_per_s_whole_machine": m.idle_softirq_ms_per_s,
                });
                value["flood"] = json!({
                    "seconds": m.flood_seconds,
                    "sender_threads": m.sent.threads,
                    "sent": m.sent.sent(),
                    "sent_junk": m.sent.junk_sent,
                    "sent_forged": m.sent.forged_sent,
                    "send_errors": m.sent.send_errors,
                    "sent_pps": m.sent.rate_pps(),
                    "sender_cpu_ms_per_s": m.sender_cpu_ms_per_s(),
                    "judged_by_receive_path": per_node(&|i| json!(m.judged(i))),
                    "own_packets": per_node(&|i| json!(m.own_packets[i])),
                    "judged_pps": per_node(&|i| json!(m.judged_pps(i))),
                    "dropped_by_receive_path": per_node(&|i| json!(dropped(&m.rx[i]))),
                    "rx_counters": per_node(&|i| json!(m.rx[i])),
                    "auth_failures": per_node(&|i| json!(m.auth_failures[i])),
                    "udp_in_datagrams": per_node(&|i| json!(m.udp[i].in_datagrams)),
                    "udp_rcvbuf_errors": per_node(&|i| json!(m.udp[i].rcvbuf_errors)),
                    "udp_in_errors": per_node(&|i| json!(m.udp[i].in_errors)),
                    "agent_cpu_ms_per_s": per_node(&|i| json!(m.cpu_ms_per_s[i])),
                    "softirq_ms_per_s_whole_machine": m.softirq_ms_per_s,
                    "false_failovers": m.false_failovers(),
                    "vip_added": per_node(&|i| json!(m.vip_added[i])),
                    "vip_removed": per_node(&|i| json!(m.vip_removed[i])),
                    "peer_deaths": per_node(&|i| json!(m.peer_deaths[i])),
                    "lost_heartbeats": per_node(&|i| json!(m.lost[i])),
                    "requests": m.requests,
                    "failed_requests": m.failed_requests,
                    "agent_max_stall_ms_since_start": per_node(&|i| json!(m.max_stall_ms[i])),
                });
            }
            Err(error) => value["error"] = json!(error),
        }
        value
    }
}

/// Both flood runs.
pub fn run(flood: &FloodPlan, plan: &Plan, progress: &mut Progress) -> Vec<FloodRecord> {
    RxMode::ALL
        .iter()
        .map(|&mode| {
            progress.say(&format!(
                "flood, {} receive path, {}: {} s idle, then {} s of flood from {} threads",
                mode.key(),
                flood.setting.label(),
                flood.idle.as_secs(),
                flood.flood.as_secs(),
                flood.threads
            ));
            let outcome = run_one(flood, plan, mode, progress).map_err(|err| format!("{err:#}"));
            match &outcome {
                Ok(m) => progress.say(&format!(
                    "flood, {}: sent {:.0} pps; judged lb1 {:.0} / lb2 {:.0} pps; agent CPU \
                     idle {:.1} / {:.1} ms/s, flood {:.1} / {:.1} ms/s; softirq {:.0} ms/s; \
                     {} false failovers ({} VIP changes), {} of {} requests failed",
                    mode.key(),
                    m.sent.rate_pps(),
                    m.judged_pps(0),
                    m.judged_pps(1),
                    m.idle_cpu_ms_per_s[0],
                    m.idle_cpu_ms_per_s[1],
                    m.cpu_ms_per_s[0],
                    m.cpu_ms_per_s[1],
                    m.softirq_ms_per_s,
                    m.false_failovers(),
                    m.vip_changes(),
                    m.failed_requests,
                    m.requests,
                )),
                Err(error) => progress.say(&format!(
                    "flood, {}: failed: {}",
                    mode.key(),
                    first_line(error)
                )),
            }
            FloodRecord {
                mode,
                setting: flood.setting,
                outcome,
            }
        })
        .collect()
}

/// What is read from both agents and the kernel before and after each phase.
struct Reading {
    at: Instant,
    cpu: [super::testbed::CpuSnapshot; 2],
    softirq: u64,
}

impl Reading {
    fn take(testbed: &Testbed) -> Result<Reading> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        Ok(Reading {
            at: Instant::now(),
            cpu: [testbed.cpu_snapshot(0), testbed.cpu_snapshot(1)],
            softirq: softirq_ticks(&stat).context("no softirq time in /proc/stat")?,
        })
    }

    /// Per node agent CPU, and the machine's softirq time, in ms per second since `earlier`.
    fn rates_since(&self, earlier: &Reading) -> ([f64; 2], f64, f64) {
        let seconds = self.at.duration_since(earlier.at).as_secs_f64();
        let ms_per_s =
            |ticks: u64| ticks as f64 * 1000.0 / clock_ticks_per_second() as f64 / seconds;
        (
            [
                ms_per_s(self.cpu[0].ticks_since(&earlier.cpu[0])),
                ms_per_s(self.cpu[1].ticks_since(&earlier.cpu[1])),
            ],
            ms_per_s(self.softirq.saturating_sub(earlier.softirq)),
            seconds,
        )
    }
}

/// Both agents' status, and the kernel's UDP counters of both nodes.
struct AgentReading {
    status: [Value; 2],
    udp: [UdpCounters; 2],
}

impl AgentReading {
    fn take(testbed: &Testbed) -> Result<AgentReading> {
        let status = [testbed.hb_status(0)?, testbed.hb_status(1)?];
        let udp = |index: usize| -> Result<UdpCounters> {
            let snmp = testbed
                .lab()
                .exec(testbed.node_netns(index), &["cat", "/proc/net/snmp"])
                .with_context(|| format!("reading {}'s /proc/net/snmp", NODES[index]))?;
            UdpCounters::parse(&snmp).context("no UDP counters in /proc/net/snmp")
        };
        Ok(AgentReading {
            status,
            udp: [udp(0)?, udp(1)?],
        })
    }
}

fn run_one(
    flood: &FloodPlan,
    plan: &Plan,
    mode: RxMode,
    progress: &mut Progress,
) -> Result<FloodMeasure> {
    let mut testbed = start_testbed_with(
        flood.setting,
        &format!("bench-flood-{}", mode.key()),
        HbOptions { xdp: mode.ha_cf() },
        plan,
        progress,
    )?;
    let rx_path: [String; 2] = [0, 1].map(|index| {
        testbed
            .hb_status(index)
            .ok()
            .and_then(|s| s["rx_path"].as_str().map(str::to_owned))
            .unwrap_or_default()
    });
    if rx_path.iter().any(|path| path != mode.key()) {
        bail!(
            "asked for the {} receive path, the agents report {rx_path:?}",
            mode.key()
        );
    }
    let cluster = testbed.hb_cluster().context("the flood runs on hb")?;
    let source = add_flood_source(cluster).context("adding the flood source")?;
    let cluster_id = testbed.hb_status(0)?["cluster_id"]
        .as_u64()
        .and_then(|id| u32::try_from(id).ok())
        .context("no cluster_id in the status")?;
    let spec = FloodSpec {
        targets: cluster_targets(cluster, HEARTBEAT_PORT),
        duration: flood.flood,
        threads: flood.threads,
        forged_percent: flood.forged_percent,
        // Each node is sent heartbeats claiming to be either node: its peer's pass the
        // kernel's checks and reach the agent's authentication.
        forgery: Forgery::claiming(cluster_id, &NODES, 1),
    };

    settle(&mut testbed, plan)?;
    let idle_start = Reading::take(&testbed)?;
    std::thread::sleep(flood.idle);
    let idle_end = Reading::take(&testbed)?;
    let (idle_cpu, idle_softirq, idle_seconds) = idle_end.rates_since(&idle_start);

    let monitor = VipMonitor::start(&testbed, &format!("flood-{}", mode.key()))?;
    let agents_before = AgentReading::take(&testbed)?;
    testbed.clear_record();
    let before = Reading::take(&testbed)?;
    let started = Instant::now();
    let sent = Flood::start(&source, &spec)
        .context("starting the flood")?
        .wait()
        .context("flooding")?;
    let after = Reading::take(&testbed)?;
    let (cpu, softirq, flood_seconds) = after.rates_since(&before);
    testbed.wait_requests_done(started + flood.flood);
    let agents_after = AgentReading::take(&testbed)?;
    let (vip_added, vip_removed) = monitor.finish(&testbed)?;

    let requests: Vec<_> = testbed
        .record()
        .iter()
        .filter(|s| s.start >= started && s.start < started + flood.flood)
        .collect();
    let node = |index: usize| {
        let (b, a) = (&agents_before.status[index], &agents_after.status[index]);
        let peer = NODES[1 - index];
        (
            counter_growth(&rx_counters(b), &rx_counters(a)),
            counter(a, "auth_failures").saturating_sub(counter(b, "auth_failures")),
            counter(a, "own_packets").saturating_sub(counter(b, "own_packets")),
            agents_after.udp[index].since(agents_before.udp[index]),
            peer_deaths(a, peer).saturating_sub(peer_deaths(b, peer)),
            counter(a, "lost").saturating_sub(counter(b, "lost")),
            a["max_stall_ms"].as_f64().unwrap_or(0.0),
        )
    };
    let (n0, n1) = (node(0), node(1));
    Ok(FloodMeasure {
        rx_path,
        idle_seconds,
        idle_cpu_ms_per_s: idle_cpu,
        idle_softirq_ms_per_s: idle_softirq,
        sent,
        flood_seconds,
        cpu_ms_per_s: cpu,
        softirq_ms_per_s: softirq,
        rx: [n0.0, n1.0],
        auth_failures: [n0.1, n1.1],
        own_packets: [n0.2, n1.2],
        udp: [n0.3, n1.3],
        vip_added,
        vip_removed,
        peer_deaths: [n0.4, n1.4],
        lost: [n0.5, n1.5],
        requests: requests.len(),
        failed_requests: requests.iter().filter(|s| s.failed()).count(),
        max_stall_ms: [n0.6, n1.6],
    })
}
