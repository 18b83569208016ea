//! One system under test in its lab: hb (the [`Cluster`] fixture), keepalived or Heartbeat
//! ([`RivalCluster`]), each on the same network, with nginx on both balancers, only the VIP
//! managed by the HA system, and the client's prober running from the start.
//!
//! Everything a scenario does goes through here, so every system gets the same fault
//! injection ([`set_node_ports`]), the same probe and the same accounting.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hb_tests::cluster::{Cluster, ClusterSpec, VIP};
use hb_tests::probe::{ProbeSample, ProbeSettings, Prober};
use hb_tests::rivals::{
    processes_in_group, read_stat, set_node_ports, start_plain_nginx, topology_fingerprint,
    vip_holders, RivalCluster, RivalSpec,
};
use hb_tests::{Lab, Netns, ProcessHandle};
use serde_json::Value;

/// The probe every system is measured with: a request every 2 ms, 5 ms to complete.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(2);
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(5);

/// The systems measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum System {
    Hb,
    Keepalived,
    Heartbeat,
}

impl System {
    /// The name used in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            System::Hb => "hb",
            System::Keepalived => "keepalived",
            System::Heartbeat => "Heartbeat",
        }
    }
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A system at given timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// ha.cf `keepalive`/`deadtime` in ms (`warntime` half the deadtime, `initdead 1`).
    Hb { keepalive_ms: u32, deadtime_ms: u32 },
    /// VRRPv3 `advert_int` in centiseconds.
    Keepalived { advert_int_cs: u32 },
    /// ha.cf `keepalive`/`deadtime` in ms (`warntime` half the deadtime, `initdead 10`).
    Heartbeat { keepalive_ms: u32, deadtime_ms: u32 },
}

impl Setting {
    pub fn system(&self) -> System {
        match self {
            Setting::Hb { .. } => System::Hb,
            Setting::Keepalived { .. } => System::Keepalived,
            Setting::Heartbeat { .. } => System::Heartbeat,
        }
    }

    /// The timers as the configuration says them.
    pub fn label(&self) -> String {
        match *self {
            Setting::Hb {
                keepalive_ms,
                deadtime_ms,
            } => format!("keepalive {keepalive_ms}ms / deadtime {deadtime_ms}ms"),
            Setting::Keepalived { advert_int_cs } => {
                RivalSpec::Keepalived { advert_int_cs }.describe()
            }
            Setting::Heartbeat {
                keepalive_ms,
                deadtime_ms,
            } => RivalSpec::Heartbeat {
                keepalive_ms,
                deadtime_ms,
            }
            .describe(),
        }
    }

    /// The interval at which the system sends its liveness messages, in ms.
    pub fn send_interval_ms(&self) -> f64 {
        match *self {
            Setting::Hb { keepalive_ms, .. } | Setting::Heartbeat { keepalive_ms, .. } => {
                f64::from(keepalive_ms)
            }
            Setting::Keepalived { advert_int_cs } => f64::from(advert_int_cs) * 10.0,
        }
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.system(), self.label())
    }
}

enum Inner {
    Hb {
        cluster: Box<Cluster>,
        nginx: Vec<ProcessHandle>,
    },
    Rival(Box<RivalCluster>),
}

/// A running system in its lab with the client's prober.
pub struct Testbed {
    pub setting: Setting,
    // Declared first: the prober's threads stop before the lab goes away.
    prober: Prober,
    /// Requests collected from the prober and not yet cleared.
    record: Vec<ProbeSample>,
    inner: Inner,
}

/// Node names, index 0 preferred.
pub const NODES: [&str; 2] = ["lb1", "lb2"];

/// How hb is run beyond its timers (the other systems ignore this).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HbOptions {
    /// ha.cf `xdp`: `auto` (the benchmark's hb) or `off` (the socket receive path).
    pub xdp: &'static str,
}

impl Default for HbOptions {
    fn default() -> Self {
        HbOptions { xdp: "auto" }
    }
}

/// Port of hb's metrics endpoint in the lab (`metrics 0.0.0.0:PORT`): the benchmark reads
/// the heartbeat inter-arrival histograms from it.
pub const METRICS_PORT: u16 = 9694;

impl Testbed {
    /// Builds the lab, starts nginx and both daemons (hb run as `hb` says), and the prober.
    pub fn start(setting: Setting, label: &str, hb: HbOptions) -> Result<Testbed> {
        let mut inner = match setting {
            Setting::Hb {
                keepalive_ms,
                deadtime_ms,
            } => {
                let spec = ClusterSpec {
                    keepalive: format!("{keepalive_ms}ms"),
                    deadtime: format!("{deadtime_ms}ms"),
                    warntime: format!("{}ms", (deadtime_ms / 2).max(1)),
                    initdead: "1".into(),
                    auto_failback: "on".into(),
                    xdp: hb.xdp.into(),
                    heartbeat_on_service_lan: true,
                    // Only the VIP: nginx runs on both balancers, as for the others.
                    resources: format!("IPaddr::{VIP}/24/eth0"),
                    extra_ha_cf: format!("metrics 0.0.0.0:{METRICS_PORT}\n"),
                    ..ClusterSpec::default()
                };
                let cluster = Cluster::new(label, spec).context("building the hb cluster")?;
                let mut nginx = Vec::new();
                for node in &cluster.nodes {
                    nginx.push(
                        start_plain_nginx(&cluster.lab, &node.netns, &node.name, node.svc_addr)
                            .with_context(|| format!("starting nginx on {}", node.name))?,
                    );
                }
                Inner::Hb {
                    cluster: Box::new(cluster),
                    nginx,
                }
            }
            Setting::Keepalived { advert_int_cs } => {
                let cluster = RivalCluster::new(label, RivalSpec::Keepalived { advert_int_cs })
                    .context("building the keepalived cluster")?;
                Inner::Rival(Box::new(cluster))
            }
            Setting::Heartbeat {
                keepalive_ms,
                deadtime_ms,
            } => {
                let cluster = RivalCluster::new(
                    label,
                    RivalSpec::Heartbeat {
                        keepalive_ms,
                        deadtime_ms,
                    },
                )
                .context("building the Heartbeat cluster")?;
                Inner::Rival(Box::new(cluster))
            }
        };
        // lb1 first, holding the VIP, then lb2: the same clean start for every system
        // (Heartbeat in particular can start split-brained when both start at once).
        start_daemon(&mut inner, 0).context("starting lb1's daemon")?;
        wait_sole_holder(&inner, NODES[0]).context("lb1 taking the VIP at start")?;
        start_daemon(&mut inner, 1).context("starting lb2's daemon")?;
        let client = match &inner {
            Inner::Hb { cluster, .. } => cluster.client.clone(),
            Inner::Rival(cluster) => cluster.network.client.clone(),
        };
        let prober = Prober::start(
            &client,
            ProbeSettings {
                target: SocketAddr::from((VIP, 80)),
                interval: PROBE_INTERVAL,
                timeout: PROBE_TIMEOUT,
            },
        )
        .context("starting the prober")?;
        Ok(Testbed {
            setting,
            prober,
            record: Vec::new(),
            inner,
        })
    }

    pub fn lab(&self) -> &Lab {
        match &self.inner {
            Inner::Hb { cluster, .. } => &cluster.lab,
            Inner::Rival(cluster) => &cluster.lab,
        }
    }

    pub fn node_netns(&self, index: usize) -> &Netns {
        match &self.inner {
            Inner::Hb { cluster, .. } => &cluster.nodes[index].netns,
            Inner::Rival(cluster) => &cluster.nodes[index].net.netns,
        }
    }

    pub fn client(&self) -> &Netns {
        match &self.inner {
            Inner::Hb { cluster, .. } => &cluster.client,
            Inner::Rival(cluster) => &cluster.network.client,
        }
    }

    /// See [`topology_fingerprint`].
    pub fn fingerprint(&self) -> Result<String> {
        let (switch, nodes): (&Netns, Vec<&Netns>) = match &self.inner {
            Inner::Hb { cluster, .. } => (
                &cluster.switch,
                cluster.nodes.iter().map(|n| &n.netns).collect(),
            ),
            Inner::Rival(cluster) => (
                &cluster.network.switch,
                cluster.nodes.iter().map(|n| &n.net.netns).collect(),
            ),
        };
        Ok(topology_fingerprint(
            self.lab(),
            switch,
            self.client(),
            &nodes,
        )?)
    }

    // ------------------------------------------------------------------ faults

    /// Node death (`false`) or return (`true`): all of the node's switch ports at once.
    pub fn set_connected(&self, index: usize, up: bool) -> Result<()> {
        set_node_ports(self.lab(), self.node_netns(index), up)
            .with_context(|| format!("setting {}'s ports {}", NODES[index], updown(up)))
    }

    /// Clean stop: SIGTERM to the daemon, returns once it has exited.
    pub fn stop_daemon(&mut self, index: usize) -> Result<()> {
        match &mut self.inner {
            Inner::Hb { cluster, .. } => {
                let status = cluster.stop(index)?;
                if !status.success() {
                    bail!(
                        "hb-agent on {} exited with {status} after SIGTERM",
                        NODES[index]
                    );
                }
                Ok(())
            }
            Inner::Rival(cluster) => Ok(cluster.stop(index)?),
        }
    }

    /// Starts the daemon again after [`Testbed::stop_daemon`].
    pub fn start_daemon(&mut self, index: usize) -> Result<()> {
        start_daemon(&mut self.inner, index)
    }

    // --------------------------------------------------------------- observing

    /// Every process of node `index`'s daemon.
    pub fn daemon_pids(&self, index: usize) -> Vec<u32> {
        match &self.inner {
            Inner::Hb { cluster, .. } => cluster.nodes[index]
                .agent
                .as_ref()
                .map(|agent| processes_in_group(agent.pid()))
                .unwrap_or_default(),
            Inner::Rival(cluster) => cluster.daemon_pids(index),
        }
    }

    /// CPU time used so far by node `index`'s daemon, per process.
    pub fn cpu_snapshot(&self, index: usize) -> CpuSnapshot {
        CpuSnapshot {
            processes: self
                .daemon_pids(index)
                .into_iter()
                .filter_map(read_stat)
                .map(|stat| {
                    (
                        (stat.pid, stat.starttime),
                        stat.utime + stat.stime + stat.cutime + stat.cstime,
                    )
                })
                .collect(),
        }
    }

    pub fn vip_holders(&self) -> Result<Vec<String>> {
        Ok(match &self.inner {
            Inner::Hb { cluster, .. } => cluster.vip_holders()?,
            Inner::Rival(cluster) => vip_holders(&cluster.lab, &cluster.network.nodes)?,
        })
    }

    /// hb only: the cluster.
    pub fn hb_cluster(&self) -> Option<&Cluster> {
        match &self.inner {
            Inner::Hb { cluster, .. } => Some(cluster),
            Inner::Rival(_) => None,
        }
    }

    /// hb only: `hb-agent status --json` of node `index`.
    pub fn hb_status(&self, index: usize) -> Result<Value> {
        match &self.inner {
            Inner::Hb { cluster, .. } => Ok(cluster.status(index)?),
            Inner::Rival(_) => bail!("{} has no hb status", self.setting.system()),
        }
    }

    /// hb only: node `index`'s metrics page (Prometheus text), read from inside its
    /// namespace.
    pub fn hb_metrics(&self, index: usize) -> Result<String> {
        let cluster = self
            .hb_cluster()
            .with_context(|| format!("{} has no hb metrics", self.setting.system()))?;
        let node = &cluster.nodes[index];
        let addr = SocketAddr::from((node.hb_addr, METRICS_PORT));
        let response = cluster
            .lab
            .http_get(&node.netns, addr, "/metrics", Duration::from_secs(2))
            .with_context(|| format!("reading {}'s metrics", node.name))?;
        if response.status != 200 {
            bail!("{}'s metrics answered HTTP {}", node.name, response.status);
        }
        Ok(response.body)
    }

    /// hb only: `kernel_to_agent_us` from `hb-agent status --json` of node `index`.
    pub fn kernel_to_agent(&self, index: usize) -> Option<Value> {
        match &self.inner {
            Inner::Hb { cluster, .. } => cluster
                .status(index)
                .ok()
                .map(|status| status["kernel_to_agent_us"].clone()),
            Inner::Rival(_) => None,
        }
    }

    /// The daemon's log on node `index` (for error reports).
    pub fn daemon_log(&self, index: usize) -> String {
        match &self.inner {
            Inner::Hb { cluster, .. } => cluster.agent_log(index),
            Inner::Rival(cluster) => cluster.daemon_log(index),
        }
    }

    /// The last `lines` lines of both nodes' daemon logs.
    pub fn log_tails(&self, lines: usize) -> String {
        (0..NODES.len())
            .map(|index| {
                let log = self.daemon_log(index);
                let all: Vec<&str> = log.lines().collect();
                format!(
                    "----- {} {} log (last {lines} lines) -----\n{}\n",
                    NODES[index],
                    self.setting.system(),
                    all[all.len().saturating_sub(lines)..].join("\n")
                )
            })
            .collect()
    }

    // ------------------------------------------------------------------ probe

    /// Moves what the prober completed into the record; returns the record.
    pub fn collect(&mut self) -> &[ProbeSample] {
        let new = self.prober.take();
        if !new.is_empty() {
            self.record.extend(new);
            // Workers finish out of order; keep the record ordered by start.
            self.record.sort_by_key(|sample| (sample.start, sample.seq));
        }
        &self.record
    }

    /// Forgets the record (and whatever the prober has completed so far).
    pub fn clear_record(&mut self) {
        self.prober.take();
        self.record.clear();
    }

    /// The record as it is, without collecting.
    pub fn record(&self) -> &[ProbeSample] {
        &self.record
    }

    /// Whether the prober's workers run real-time (see `hb_tests::probe`).
    pub fn probe_realtime(&self) -> bool {
        self.prober.realtime()
    }

    pub fn probe_slots_skipped(&self) -> u64 {
        self.prober.skipped()
    }

    /// Waits until every request that started before `instant` has completed.
    pub fn wait_requests_done(&mut self, instant: Instant) {
        let done = instant + PROBE_TIMEOUT + Duration::from_millis(5);
        let now = Instant::now();
        if done > now {
            std::thread::sleep(done - now);
        }
        self.collect();
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if let Inner::Hb { cluster, nginx } = &mut self.inner {
            for process in nginx.drain(..) {
                let _ = cluster.lab.stop(&process, Duration::from_secs(3));
            }
        }
    }
}

fn start_daemon(inner: &mut Inner, index: usize) -> Result<()> {
    match inner {
        Inner::Hb { cluster, .. } => Ok(cluster.start(index)?),
        Inner::Rival(cluster) => Ok(cluster.start(index)?),
    }
}

/// How long a daemon may take to take the VIP when it starts alone (Heartbeat waits for
/// `initdead`, then runs its resource scripts).
const START_TIMEOUT: Duration = Duration::from_secs(90);

fn wait_sole_holder(inner: &Inner, node: &str) -> Result<()> {
    let holders = || -> Vec<String> {
        match inner {
            Inner::Hb { cluster, .. } => cluster.vip_holders().unwrap_or_default(),
            Inner::Rival(cluster) => cluster.vip_holders().unwrap_or_default(),
        }
    };
    if hb_tests::wait_until(START_TIMEOUT, Duration::from_millis(50), || {
        holders() == [node]
    }) {
        Ok(())
    } else {
        bail!(
            "{node} did not take the VIP alone within {START_TIMEOUT:?} (holders: {:?})",
            holders()
        )
    }
}

fn updown(up: bool) -> &'static str {
    if up {
        "up"
    } else {
        "down"
    }
}

/// CPU ticks per process (identified by pid and start time), counting the CPU of reaped
/// children too (utime + stime + cutime + cstime).
#[derive(Debug, Clone, Default)]
pub struct CpuSnapshot {
    processes: HashMap<(u32, u64), u64>,
}

impl CpuSnapshot {
    /// Ticks used between `earlier` and this snapshot: the growth of every process seen in
    /// both, plus everything of processes that started in between.
    pub fn ticks_since(&self, earlier: &CpuSnapshot) -> u64 {
        self.processes
            .iter()
            .map(|(key, &ticks)| {
                ticks.saturating_sub(earlier.processes.get(key).copied().unwrap_or(0))
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_growth_counts_new_processes_whole_and_ignores_gone_ones() {
        let earlier = CpuSnapshot {
            processes: HashMap::from([((10, 1), 100), ((11, 1), 50), ((12, 1), 7)]),
        };
        let later = CpuSnapshot {
            // 10 grew by 20, 11 is gone, 12 was replaced by a new process with the same pid.
            processes: HashMap::from([((10, 1), 120), ((12, 9), 3), ((13, 9), 4)]),
        };
        assert_eq!(later.ticks_since(&earlier), 20 + 3 + 4);
    }

    #[test]
    fn settings_label_like_their_config_files() {
        assert_eq!(
            Setting::Hb {
                keepalive_ms: 5,
                deadtime_ms: 20
            }
            .to_string(),
            "hb keepalive 5ms / deadtime 20ms"
        );
        assert_eq!(
            Setting::Keepalived { advert_int_cs: 3 }.to_string(),
            "keepalived advert_int 0.03"
        );
        assert_eq!(
            Setting::Keepalived { advert_int_cs: 3 }.send_interval_ms(),
            30.0
        );
    }
}
