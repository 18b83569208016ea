//! The long run (issue 7): two agents, real XDP and nginx, and a random fault every few
//! seconds — node death, a link cut, a partition, a clean agent restart, an agent crash
//! (SIGKILL, then a restart as systemd's `Restart=on-failure` would do), standby/takeover —
//! with the invariants checked while each fault is in place and after it is repaired:
//!
//! - after the repair, within [`SETTLE_BOUND`]: exactly one node holds the VIP (lb1, the
//!   preferred node, with `auto_failback on`), both agents see each other up, and the client
//!   is served through the VIP;
//! - while a fault is in place that leaves one node healthy and reachable, exactly that node
//!   (or the untouched holder) holds the VIP and serves;
//! - between faults, the VIP does not move at all (`ip monitor address` on both nodes).
//!
//! The client probes the VIP all along ([`Prober`]), so each fault's outage is what a client
//! saw. Faults and their timing come from a seeded generator: a run is reproduced by its
//! seed. [`run_chaos`] returns a [`ChaosReport`] (JSON via serde, a Markdown summary).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, ClusterSpec, Served, VIP};
use crate::error::Result;
use crate::faults::{node_report, VipWatch};
use crate::probe::{event_outage, ProbeSample, ProbeSettings, Prober};

/// How long the cluster has after a repair (or after a fault is in place) to reach the
/// expected state before that counts as a violation: generous for a loaded 2-core machine.
pub const SETTLE_BOUND: Duration = Duration::from_secs(30);

/// Probe pace: a new connection to the VIP every 20 ms, each allowed 500 ms.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The VIP changes `ip -ts` stamps right after a settle check are still the repair's own;
/// the quiet window starts this much later.
const QUIET_MARGIN: Duration = Duration::from_millis(300);

/// The kinds of fault the run injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The whole machine: links down at the switch, agent killed, VIP and nginx gone; then
    /// it boots again (links up, agent started).
    NodeDeath,
    /// One cable at the switch: either node's heartbeat link, or the passive node's service
    /// link. No failover may follow.
    LinkCut,
    /// Both heartbeat paths cut (the heartbeat LAN, and one node off the service LAN): both
    /// sides hold the VIP until it heals, then exactly one keeps it.
    Partition,
    /// A clean stop (SIGTERM) of one agent and a start after a short pause.
    AgentRestart,
    /// SIGKILL of one agent while its node stays up (the VIP and nginx stay), and a start
    /// after a pause as systemd's restart would.
    AgentCrash,
    /// `hb-agent standby` on the holder, later `hb-agent takeover` on it.
    Standby,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::NodeDeath,
        FaultKind::LinkCut,
        FaultKind::Partition,
        FaultKind::AgentRestart,
        FaultKind::AgentCrash,
        FaultKind::Standby,
    ];

    pub fn key(self) -> &'static str {
        match self {
            FaultKind::NodeDeath => "node_death",
            FaultKind::LinkCut => "link_cut",
            FaultKind::Partition => "partition",
            FaultKind::AgentRestart => "agent_restart",
            FaultKind::AgentCrash => "agent_crash",
            FaultKind::Standby => "standby",
        }
    }

    /// Relative frequency in a run.
    fn weight(self) -> u64 {
        match self {
            FaultKind::NodeDeath | FaultKind::LinkCut => 2,
            _ => 1,
        }
    }
}

/// One injected fault and what the client saw of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// 1, 2, ... in injection order.
    pub index: usize,
    pub kind: FaultKind,
    /// What it hit: `lb1`, `lb2:eth1`, `lb1 off the service LAN`.
    pub target: String,
    /// Injection time, seconds since the run's start.
    pub at_s: f64,
    /// How long the fault stayed in place before the repair.
    pub hold_ms: f64,
    /// From the injection to the cluster's settled state after the repair (`None`: it did
    /// not settle within [`SETTLE_BOUND`]).
    pub settled_after_ms: Option<f64>,
    /// Time without service the client saw between the injection and the settle: the sum of
    /// the gaps in its answers ([`event_outage`]). `None` when the record did not end with
    /// lb1 serving.
    pub outage_ms: Option<f64>,
    /// Requests that failed in that window.
    pub failed_requests: usize,
}

/// An invariant that did not hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    /// The fault during or after which it was seen (`None`: between faults).
    pub fault: Option<usize>,
    /// Seconds since the run's start.
    pub at_s: f64,
    pub what: String,
}

/// What a run did and saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChaosReport {
    pub label: String,
    pub seed: u64,
    pub planned_s: f64,
    pub elapsed_s: f64,
    /// Unix time of the start.
    pub started_unix_s: u64,
    pub keepalive: String,
    pub deadtime: String,
    pub faults: Vec<FaultRecord>,
    pub violations: Vec<Violation>,
    /// VIP additions and removals seen on all nodes over the run.
    pub vip_changes: usize,
    pub requests: usize,
    pub failed_requests: usize,
    /// Whether the probe ran at real-time priority, and the slots it had to skip.
    pub probe_realtime: bool,
    pub probe_skipped: u64,
}

/// Count, median, p99 and max of the outages (ms) of one kind of fault on one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutageSummary {
    pub kind: FaultKind,
    /// `lb1`, `lb2:eth1`, ...: a fault on the holder and one on the passive node differ.
    pub target: String,
    pub count: usize,
    pub median_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl ChaosReport {
    /// Faults injected, by kind.
    pub fn fault_counts(&self) -> BTreeMap<FaultKind, usize> {
        let mut counts = BTreeMap::new();
        for fault in &self.faults {
            *counts.entry(fault.kind).or_insert(0) += 1;
        }
        counts
    }

    /// Outage figures per kind and target that occurred, in kind order, then by target.
    pub fn outage_summaries(&self) -> Vec<OutageSummary> {
        let mut groups: BTreeMap<(FaultKind, &str), Vec<&FaultRecord>> = BTreeMap::new();
        for fault in &self.faults {
            groups
                .entry((fault.kind, fault.target.as_str()))
                .or_default()
                .push(fault);
        }
        groups
            .into_iter()
            .map(|((kind, target), faults)| {
                let mut outages: Vec<f64> = faults.iter().filter_map(|f| f.outage_ms).collect();
                outages.sort_by(f64::total_cmp);
                OutageSummary {
                    kind,
                    target: target.to_owned(),
                    count: faults.len(),
                    median_ms: percentile(&outages, 50.0),
                    p99_ms: percentile(&outages, 99.0),
                    max_ms: outages.last().copied(),
                }
            })
            .collect()
    }

    /// A Markdown summary: the run, a table of faults and outages by kind, the violations.
    pub fn markdown(&self) -> String {
        let mut text = format!(
            "### Long run `{}`: {} faults in {:.0} s (seed {})\n\n\
             Timers keepalive {} / deadtime {}; the client probed the VIP every {} ms \
             ({} requests, {} failed); {} VIP additions/removals in all.\n\n\
             | fault | target | count | outage median | outage p99 | outage max |\n\
             |---|---|---:|---:|---:|---:|\n",
            self.label,
            self.faults.len(),
            self.elapsed_s,
            self.seed,
            self.keepalive,
            self.deadtime,
            PROBE_INTERVAL.as_millis(),
            self.requests,
            self.failed_requests,
            self.vip_changes,
        );
        let ms =
            |value: Option<f64>| value.map_or_else(|| "–".to_owned(), |v| format!("{v:.0} ms"));
        for summary in self.outage_summaries() {
            text.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                summary.kind.key(),
                summary.target,
                summary.count,
                ms(summary.median_ms),
                ms(summary.p99_ms),
                ms(summary.max_ms),
            ));
        }
        if self.violations.is_empty() {
            text.push_str("\nInvariant violations: none.\n");
        } else {
            text.push_str(&format!(
                "\nInvariant violations: {}\n\n",
                self.violations.len()
            ));
            for violation in &self.violations {
                let fault = violation
                    .fault
                    .map_or_else(|| "between faults".to_owned(), |f| format!("fault {f}"));
                text.push_str(&format!(
                    "- at {:.1} s ({fault}): {}\n",
                    violation.at_s,
                    first_line(&violation.what)
                ));
            }
        }
        if !self.probe_realtime {
            text.push_str("\nThe probe ran without real-time priority.\n");
        }
        text
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// xorshift64*: small, seeded, good enough to pick faults and pauses.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Zero is xorshift's one fixed point; any other start works.
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `[low, high]`.
    pub fn duration(&mut self, low: Duration, high: Duration) -> Duration {
        let span = high.saturating_sub(low).as_millis() as u64;
        low + Duration::from_millis(self.below(span + 1))
    }
}

/// A seed for a run: `HB_CHAOS_SEED` when set, otherwise from the clock.
pub fn seed_from_env() -> u64 {
    std::env::var("HB_CHAOS_SEED")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |t| t.as_nanos() as u64 ^ u64::from(std::process::id()))
        })
}

/// Builds a two-node cluster (the quick test profile, `auto_failback on`), injects faults
/// for `duration`, and reports. `progress` gets one line per fault. Errors only when the
/// cluster cannot be built or started; everything that goes wrong afterwards is a
/// [`Violation`] in the report.
pub fn run_chaos(
    cluster_label: &str,
    duration: Duration,
    seed: u64,
    progress: &mut dyn FnMut(&str),
) -> Result<ChaosReport> {
    progress(&format!(
        "chaos {cluster_label}: seed {seed} (rerun with HB_CHAOS_SEED={seed}), {:.0} s",
        duration.as_secs_f64()
    ));
    let spec = ClusterSpec::default();
    let mut cluster = Cluster::new(cluster_label, spec.clone())?;
    cluster.start_all()?;
    cluster.wait_sole_holder("lb1")?;
    cluster.wait_served_by("lb1")?;
    let watch = VipWatch::start(&cluster, "chaos")?;
    let prober = Prober::start(
        &cluster.client,
        ProbeSettings {
            target: SocketAddr::from((VIP, 80)),
            interval: PROBE_INTERVAL,
            timeout: PROBE_TIMEOUT,
        },
    )?;
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |t| t.as_secs());
    let mut run = Run {
        cluster: &mut cluster,
        rng: Rng::new(seed),
        t0: Instant::now(),
        faults: Vec::new(),
        violations: Vec::new(),
        windows: Vec::new(),
    };
    let mut quiet_since = SystemTime::now() + QUIET_MARGIN;
    // An episode takes a few seconds; do not start one that would overrun the run by much.
    let latest_start = duration.saturating_sub(Duration::from_secs(4));
    loop {
        std::thread::sleep(
            run.rng
                .duration(Duration::from_millis(800), Duration::from_millis(2000)),
        );
        if run.t0.elapsed() >= latest_start {
            break;
        }
        let quiet_until = SystemTime::now();
        run.check_quiet(&watch, quiet_since, quiet_until);
        let kind = run.pick_kind();
        let index = run.faults.len() + 1;
        run.episode(index, kind);
        if let Some(fault) = run.faults.last() {
            progress(&format!(
                "fault {index} at {:.1} s: {} {} — settled after {}",
                fault.at_s,
                kind.key(),
                fault.target,
                fault
                    .settled_after_ms
                    .map_or_else(|| "NEVER".to_owned(), |ms| format!("{ms:.0} ms")),
            ));
        }
        for violation in run.violations.iter().filter(|v| v.fault == Some(index)) {
            progress(&format!("  VIOLATION: {}", first_line(&violation.what)));
        }
        if !run.recover() {
            progress("the cluster could not be brought back; ending the run early");
            break;
        }
        quiet_since = SystemTime::now() + QUIET_MARGIN;
    }
    // Let the last requests end before reading the record.
    std::thread::sleep(PROBE_TIMEOUT + Duration::from_millis(100));
    run.check_quiet(&watch, quiet_since, SystemTime::now());
    let elapsed = run.t0.elapsed();
    let samples = prober.take();
    let probe_realtime = prober.realtime();
    let probe_skipped = prober.skipped();
    prober.stop();
    let Run {
        mut faults,
        violations,
        windows,
        ..
    } = run;
    for (fault, window) in faults.iter_mut().zip(&windows) {
        if let Some(outage) = window.end.and_then(|end| {
            event_outage(
                &samples,
                window.start,
                end + Duration::from_millis(200),
                "lb1",
            )
        }) {
            fault.outage_ms = Some(ms(outage.outage));
            fault.failed_requests = outage.failed_requests;
        }
    }
    let vip_changes = watch.stop(&cluster.lab).map_or(0, |changes| changes.len());
    Ok(ChaosReport {
        label: cluster_label.to_owned(),
        seed,
        planned_s: duration.as_secs_f64(),
        elapsed_s: elapsed.as_secs_f64(),
        started_unix_s,
        keepalive: spec.keepalive,
        deadtime: spec.deadtime,
        faults,
        violations,
        vip_changes,
        requests: samples.len(),
        failed_requests: samples.iter().filter(|s: &&ProbeSample| s.failed()).count(),
        probe_realtime,
        probe_skipped,
    })
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// The injection and settle times of one fault, to read its outage from the probe record.
struct Window {
    start: Instant,
    end: Option<Instant>,
}

struct Run<'c> {
    cluster: &'c mut Cluster,
    rng: Rng,
    t0: Instant,
    faults: Vec<FaultRecord>,
    violations: Vec<Violation>,
    windows: Vec<Window>,
}

/// What the cluster must look like while a fault is in place.
enum Expect {
    /// Exactly this node holds the VIP and serves.
    SoleHolder(&'static str),
    /// The client is served by this node (others may hold the VIP too: a partition).
    ServedBy(&'static str),
    /// The client is served by some node (an agent crash: both may hold it for a while).
    Served,
}

const NODES: [&str; 2] = ["lb1", "lb2"];

impl Run<'_> {
    fn violation(&mut self, fault: Option<usize>, what: String) {
        let at_s = self.t0.elapsed().as_secs_f64();
        self.violations.push(Violation { fault, at_s, what });
    }

    fn pick_kind(&mut self) -> FaultKind {
        let total: u64 = FaultKind::ALL.iter().map(|k| k.weight()).sum();
        let mut pick = self.rng.below(total);
        let mut chosen = FaultKind::NodeDeath;
        for kind in FaultKind::ALL {
            if pick < kind.weight() {
                chosen = kind;
                break;
            }
            pick -= kind.weight();
        }
        chosen
    }

    /// No VIP change at all between two faults.
    fn check_quiet(&mut self, watch: &VipWatch, since: SystemTime, until: SystemTime) {
        match watch.changes() {
            Ok(changes) => {
                let moved: Vec<String> = changes
                    .iter()
                    .filter(|c| c.at > since && c.at < until)
                    .map(|c| {
                        format!(
                            "{} {}",
                            if c.added { "added on" } else { "removed from" },
                            c.node
                        )
                    })
                    .collect();
                if !moved.is_empty() {
                    self.violation(
                        None,
                        format!("the VIP moved with no fault in place: {}", moved.join(", ")),
                    );
                }
            }
            Err(e) => self.violation(None, format!("reading ip monitor: {e}")),
        }
    }

    /// Injects one fault, checks it, repairs it, checks the settled cluster; records all.
    fn episode(&mut self, index: usize, kind: FaultKind) {
        let hold = self
            .rng
            .duration(Duration::from_millis(1000), Duration::from_millis(3000));
        let node = self.rng.below(2) as usize;
        let start = Instant::now();
        let at_s = self.t0.elapsed().as_secs_f64();
        let (target, outcome) = match kind {
            FaultKind::NodeDeath => {
                let other = NODES[1 - node];
                let outcome = self.hold_fault(
                    index,
                    hold,
                    Expect::SoleHolder(other),
                    |c| c.power_off(node),
                    |c| c.power_on(node),
                );
                (NODES[node].to_owned(), outcome)
            }
            FaultKind::LinkCut => {
                // The passive node's service link, or either node's heartbeat link.
                let (link_node, ifname) = match self.rng.below(3) {
                    0 => (0, "eth1"),
                    1 => (1, "eth1"),
                    _ => (1, "eth0"),
                };
                let outcome = self.hold_fault(
                    index,
                    hold,
                    Expect::SoleHolder("lb1"),
                    |c| c.set_link(link_node, ifname, false),
                    |c| c.set_link(link_node, ifname, true),
                );
                (format!("{}:{ifname}", NODES[link_node]), outcome)
            }
            FaultKind::Partition => {
                let cut = |c: &mut Cluster, up: bool| -> Result<()> {
                    c.set_link(0, "eth1", up)?;
                    c.set_link(1, "eth1", up)?;
                    c.set_link(node, "eth0", up)
                };
                let outcome = self.hold_fault(
                    index,
                    hold,
                    Expect::ServedBy(NODES[1 - node]),
                    |c| cut(c, false),
                    |c| cut(c, true),
                );
                (format!("{} off the service LAN", NODES[node]), outcome)
            }
            FaultKind::AgentRestart => {
                let pause = self
                    .rng
                    .duration(Duration::from_millis(200), Duration::from_millis(1500));
                let outcome = self.hold_fault(
                    index,
                    pause,
                    Expect::SoleHolder(NODES[1 - node]),
                    |c| c.stop(node).map(|_| ()),
                    |c| c.start(node),
                );
                (NODES[node].to_owned(), outcome)
            }
            FaultKind::AgentCrash => {
                // systemd's RestartSec=1s, give or take the time a crash takes to be seen.
                let pause = self
                    .rng
                    .duration(Duration::from_millis(500), Duration::from_millis(1500));
                let outcome = self.hold_fault(
                    index,
                    pause,
                    Expect::Served,
                    |c| c.kill(node).map(|_| ()),
                    |c| c.start(node),
                );
                (NODES[node].to_owned(), outcome)
            }
            FaultKind::Standby => {
                let outcome = self.hold_fault(
                    index,
                    hold,
                    Expect::SoleHolder("lb2"),
                    |c| c.control(0, "standby").map(|_| ()),
                    |c| c.control(0, "takeover").map(|_| ()),
                );
                ("lb1".to_owned(), outcome)
            }
        };
        let settled = outcome.and_then(|()| match self.wait_settled() {
            Ok(at) => Some(at),
            Err(what) => {
                self.violation(Some(index), what);
                None
            }
        });
        self.faults.push(FaultRecord {
            index,
            kind,
            target,
            at_s,
            hold_ms: ms(hold),
            settled_after_ms: settled.map(|at| ms(at.duration_since(start))),
            outage_ms: None,
            failed_requests: 0,
        });
        self.windows.push(Window {
            start,
            end: settled,
        });
    }

    /// Injects, waits `hold`, checks `expect`, repairs. `None` when injecting or repairing
    /// failed (recorded as a violation).
    fn hold_fault(
        &mut self,
        index: usize,
        hold: Duration,
        expect: Expect,
        inject: impl FnOnce(&mut Cluster) -> Result<()>,
        repair: impl FnOnce(&mut Cluster) -> Result<()>,
    ) -> Option<()> {
        if let Err(e) = inject(self.cluster) {
            self.violation(Some(index), format!("injecting the fault failed: {e}"));
            return None;
        }
        std::thread::sleep(hold);
        if let Err(what) = self.check_expect(&expect) {
            self.violation(Some(index), format!("while the fault was in place: {what}"));
        }
        if let Err(e) = repair(self.cluster) {
            self.violation(Some(index), format!("repairing the fault failed: {e}"));
            return None;
        }
        Some(())
    }

    fn check_expect(&self, expect: &Expect) -> std::result::Result<(), String> {
        let deadline = Instant::now() + SETTLE_BOUND;
        let mut last = String::new();
        while Instant::now() < deadline {
            let holders = self.cluster.vip_holders().unwrap_or_default();
            let served = served_by(self.cluster);
            let ok = match expect {
                Expect::SoleHolder(name) => holders == [*name] && served.as_deref() == Some(*name),
                Expect::ServedBy(name) => served.as_deref() == Some(*name),
                Expect::Served => served.is_some(),
            };
            if ok {
                return Ok(());
            }
            last = format!("holders {holders:?}, served by {served:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let wanted = match expect {
            Expect::SoleHolder(name) => format!("{name} the only holder, serving"),
            Expect::ServedBy(name) => format!("served by {name}"),
            Expect::Served => "served by a node".to_owned(),
        };
        Err(format!(
            "wanted {wanted} within {SETTLE_BOUND:?}; last: {last}{}",
            log_tails(self.cluster)
        ))
    }

    /// Waits for the settled state: lb1 the only holder and serving, both agents running
    /// and seeing each other up. Returns when it was reached, or what was wrong.
    fn wait_settled(&self) -> std::result::Result<Instant, String> {
        let deadline = Instant::now() + SETTLE_BOUND;
        let mut last = String::new();
        while Instant::now() < deadline {
            let holders = self.cluster.vip_holders().unwrap_or_default();
            if holders == ["lb1"] {
                let served = served_by(self.cluster);
                if served.as_deref() == Some("lb1") {
                    let settled_at = Instant::now();
                    if self.peers_up() {
                        return Ok(settled_at);
                    }
                    last = "the agents do not both see each other up".to_owned();
                } else {
                    last = format!("lb1 holds the VIP but the client is served by {served:?}");
                }
            } else {
                last = format!("holders {holders:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "not settled {SETTLE_BOUND:?} after the repair (want lb1 the only holder, serving, \
             both agents up): {last}{}",
            log_tails(self.cluster)
        ))
    }

    fn peers_up(&self) -> bool {
        (0..2).all(|i| {
            self.cluster.agent_running(i)
                && self
                    .cluster
                    .status(i)
                    .ok()
                    .and_then(|s| {
                        node_report(&s, NODES[1 - i])?["status"]
                            .as_str()
                            .map(|s| s == "up")
                    })
                    .unwrap_or(false)
        })
    }

    /// After a failed episode: every cable up, every agent running, lb1 out of standby.
    /// `false` when the cluster cannot even be put back together.
    fn recover(&mut self) -> bool {
        let healthy = self.cluster.vip_holders().unwrap_or_default() == ["lb1"]
            && (0..2).all(|i| self.cluster.agent_running(i));
        if healthy {
            return true;
        }
        for i in 0..2 {
            if self.cluster.set_connected(i, true).is_err() {
                return false;
            }
            if !self.cluster.agent_running(i) {
                let _ = self.cluster.kill(i);
                if self.cluster.start(i).is_err() {
                    return false;
                }
            }
        }
        let _ = self.cluster.control(0, "takeover");
        self.wait_settled().is_ok()
    }
}

/// Who answers `GET /` on the VIP from the client right now.
fn served_by(cluster: &Cluster) -> Option<String> {
    cluster
        .get_vip(Duration::from_millis(500))
        .ok()
        .as_ref()
        .and_then(Served::parse)
        .map(|served| served.balancer)
}

/// The last lines of every agent's log, for a violation's detail.
fn log_tails(cluster: &Cluster) -> String {
    cluster
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let log = cluster.agent_log(i);
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            format!("\n--- {} (last lines) ---\n{tail}", node.name)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(index: usize, kind: FaultKind, outage_ms: Option<f64>) -> FaultRecord {
        FaultRecord {
            index,
            kind,
            target: "lb1".into(),
            at_s: index as f64,
            hold_ms: 1000.0,
            settled_after_ms: Some(1500.0),
            outage_ms,
            failed_requests: 0,
        }
    }

    fn report(faults: Vec<FaultRecord>, violations: Vec<Violation>) -> ChaosReport {
        ChaosReport {
            label: "chaos".into(),
            seed: 7,
            planned_s: 120.0,
            elapsed_s: 119.0,
            started_unix_s: 0,
            keepalive: "20ms".into(),
            deadtime: "200ms".into(),
            faults,
            violations,
            vip_changes: 4,
            requests: 6000,
            failed_requests: 12,
            probe_realtime: true,
            probe_skipped: 0,
        }
    }

    #[test]
    fn summarises_outages_per_kind() {
        let faults = (1..=10)
            .map(|i| record(i, FaultKind::NodeDeath, Some(i as f64 * 10.0)))
            .chain([
                record(11, FaultKind::LinkCut, Some(0.0)),
                record(12, FaultKind::Standby, None),
            ])
            .collect();
        let report = report(faults, Vec::new());
        let summaries = report.outage_summaries();
        assert_eq!(summaries.len(), 3);
        assert_eq!(summaries[0].target, "lb1");
        let death = &summaries[0];
        assert_eq!(death.kind, FaultKind::NodeDeath);
        assert_eq!(death.count, 10);
        assert_eq!(death.median_ms, Some(50.0));
        assert_eq!(death.p99_ms, Some(100.0));
        assert_eq!(death.max_ms, Some(100.0));
        let standby = summaries
            .iter()
            .find(|s| s.kind == FaultKind::Standby)
            .unwrap();
        assert_eq!((standby.count, standby.median_ms), (1, None));
        assert_eq!(report.fault_counts()[&FaultKind::NodeDeath], 10);
        let markdown = report.markdown();
        assert!(
            markdown.contains("| node_death | lb1 | 10 | 50 ms | 100 ms | 100 ms |"),
            "{markdown}"
        );
        assert!(
            markdown.contains("| standby | lb1 | 1 | – | – | – |"),
            "{markdown}"
        );
        assert!(
            markdown.contains("Invariant violations: none."),
            "{markdown}"
        );
    }

    #[test]
    fn violations_are_listed_and_the_report_round_trips_through_json() {
        let violation = Violation {
            fault: Some(3),
            at_s: 12.5,
            what: "holders [\"lb1\", \"lb2\"]\nlog...".into(),
        };
        let report = report(
            vec![record(3, FaultKind::Partition, Some(80.0))],
            vec![violation],
        );
        let markdown = report.markdown();
        assert!(markdown.contains("Invariant violations: 1"), "{markdown}");
        assert!(
            markdown.contains("- at 12.5 s (fault 3): holders [\"lb1\", \"lb2\"]\n"),
            "{markdown}"
        );
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.contains("\"kind\":\"partition\""), "{json}");
        let back: ChaosReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn the_generator_is_reproducible_and_spread() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        let first: Vec<u64> = (0..100).map(|_| a.below(6)).collect();
        let second: Vec<u64> = (0..100).map(|_| b.below(6)).collect();
        assert_eq!(first, second);
        for value in 0..6 {
            assert!(first.contains(&value), "{value} never drawn");
        }
        let mut zero = Rng::new(0);
        assert_ne!(zero.next_u64(), 0);
        let d = zero.duration(Duration::from_millis(100), Duration::from_millis(200));
        assert!((100..=200).contains(&d.as_millis()));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[5.0], 99.0), Some(5.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), Some(2.0));
    }
}
