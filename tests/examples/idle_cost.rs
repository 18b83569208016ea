//! Two hb agents idling in the lab, as the benchmark's stability window runs them, with the
//! cost of each agent reported per thread: CPU time per minute and context switches per
//! second, from `/proc/<pid>/task/*/{stat,status}`; VIP movements from `ip monitor address`.
//!
//! ```text
//! sudo HB_AGENT_BIN=target/release/hb-agent cargo run --release -p hb-tests --example idle_cost -- \
//!     [keepalive_ms] [deadtime_ms] [seconds] [rounds]
//! ```
//!
//! Defaults: 10 ms / 40 ms, 60 s, one round. Each round builds a fresh cluster. The agents'
//! pids are printed before each window so `perf` can be attached meanwhile. With
//! `HB_IDLE_DEBUGFILE=1` each node writes a `debugfile`, saved (and the agents' logs printed)
//! when the VIP moved in a window. With `HB_IDLE_PROBE=1` the window runs as the benchmark's
//! does: nginx on both balancers and the client probing the VIP every 2 ms.
//!
//! `HB_IDLE_KEEPALIVED=<advert_int in cs>` measures keepalived instead, on the benchmark's
//! rival lab (the first two arguments are then ignored), for a comparison on the same
//! machine at the same moment.

use std::collections::BTreeMap;
use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hb_tests::cluster::{Cluster, ClusterSpec, VIP};
use hb_tests::probe::{ProbeSettings, Prober};
use hb_tests::rivals::{start_plain_nginx, RivalCluster, RivalSpec};

/// Per thread: name, CPU ticks, voluntary and involuntary context switches.
#[derive(Clone, Debug, Default)]
struct ThreadSample {
    name: String,
    ticks: u64,
    voluntary: u64,
    involuntary: u64,
}

fn threads(pid: u32) -> BTreeMap<u32, ThreadSample> {
    let mut out = BTreeMap::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let base = entry.path();
        let (Ok(stat), Ok(status)) = (
            fs::read_to_string(base.join("stat")),
            fs::read_to_string(base.join("status")),
        ) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let number = |n: usize| {
            fields
                .get(n - 3)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let switches = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        out.insert(
            tid,
            ThreadSample {
                name: stat[open + 1..close].to_owned(),
                ticks: number(14) + number(15),
                voluntary: switches("voluntary_ctxt_switches:"),
                involuntary: switches("nonvoluntary_ctxt_switches:"),
            },
        );
    }
    out
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

fn report(
    node: &str,
    before: &BTreeMap<u32, ThreadSample>,
    after: &BTreeMap<u32, ThreadSample>,
    secs: f64,
) -> f64 {
    let per_min = |ticks: u64| ticks as f64 * 1000.0 / ticks_per_second() * 60.0 / secs;
    let mut total = 0;
    let mut lines = Vec::new();
    for (tid, end) in after {
        let start = before.get(tid).cloned().unwrap_or_default();
        let ticks = end.ticks.saturating_sub(start.ticks);
        total += ticks;
        lines.push(format!(
            "    {tid:>7} {:<16} {:>7.0} ms/min  {:>7.1} vol/s  {:>6.1} invol/s",
            end.name,
            per_min(ticks),
            end.voluntary.saturating_sub(start.voluntary) as f64 / secs,
            end.involuntary.saturating_sub(start.involuntary) as f64 / secs,
        ));
    }
    println!("  {node}: {:.0} ms/min", per_min(total));
    for line in lines {
        println!("{line}");
    }
    per_min(total)
}

fn main() -> Result<()> {
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .map(|a| a.parse().context("arguments are numbers"))
        .collect::<Result<_>>()?;
    let keepalive_ms = args.first().copied().unwrap_or(10);
    let deadtime_ms = args.get(1).copied().unwrap_or(40);
    let seconds = args.get(2).copied().unwrap_or(60);
    let rounds = args.get(3).copied().unwrap_or(1);
    let debugfile = std::env::var_os("HB_IDLE_DEBUGFILE").is_some();
    let probe = std::env::var_os("HB_IDLE_PROBE").is_some();
    if !hb_tests::require_root("idle_cost") {
        return Ok(());
    }
    if let Some(advert_int_cs) = std::env::var_os("HB_IDLE_KEEPALIVED") {
        let advert_int_cs: u32 = advert_int_cs
            .to_str()
            .and_then(|v| v.parse().ok())
            .context("HB_IDLE_KEEPALIVED is advert_int in centiseconds")?;
        for _ in 0..rounds {
            keepalived_round(advert_int_cs, seconds)?;
        }
        return Ok(());
    }
    let mut moved_rounds = 0;
    for round in 1..=rounds {
        let spec = ClusterSpec {
            keepalive: format!("{keepalive_ms}ms"),
            deadtime: format!("{deadtime_ms}ms"),
            warntime: format!("{}ms", (deadtime_ms / 2).max(1)),
            initdead: "1".into(),
            resources: format!("IPaddr::{VIP}/24/eth0"),
            ..ClusterSpec::default()
        };
        let mut cluster = Cluster::new("idlecost", spec)?;
        if debugfile {
            for node in &cluster.nodes {
                let path = node.config_dir.join("ha.cf");
                let mut text = fs::read_to_string(&path)?;
                text.push_str(&format!(
                    "debugfile {}\n",
                    node.state_dir.join("debug.log").display()
                ));
                fs::write(&path, text)?;
            }
        }
        let mut nginx = Vec::new();
        if probe {
            for node in &cluster.nodes {
                nginx.push(start_plain_nginx(
                    &cluster.lab,
                    &node.netns,
                    &node.name,
                    node.svc_addr,
                )?);
            }
        }
        cluster.start(0)?;
        cluster.wait_sole_holder("lb1")?;
        cluster.start(1)?;
        // Declared after the cluster: its threads stop before the lab goes away.
        let prober = if probe {
            Some(Prober::start(
                &cluster.client,
                ProbeSettings {
                    target: std::net::SocketAddr::from((VIP, 80)),
                    interval: Duration::from_millis(2),
                    timeout: Duration::from_millis(5),
                },
            )?)
        } else {
            None
        };
        std::thread::sleep(Duration::from_secs(3));
        let monitors = (0..2)
            .map(|i| {
                let mut command = Command::new("ip");
                command.args(["-o", "-ts", "monitor", "address"]);
                cluster
                    .lab
                    .spawn(&cluster.nodes[i].netns, &format!("ipmon{i}"), &command)
            })
            .collect::<hb_tests::Result<Vec<_>>>()?;
        std::thread::sleep(Duration::from_millis(200));
        let pids: Vec<u32> = cluster
            .nodes
            .iter()
            .map(|n| n.agent.as_ref().map_or(0, |a| a.pid()))
            .collect();
        // The agent runs under nsenter: its pid is the child's when nsenter forks.
        let agent_pids: Vec<u32> = pids.iter().map(|&p| agent_pid(p)).collect();
        println!(
            "round {round}: agents lb1 pid {} lb2 pid {} ({keepalive_ms} ms / {deadtime_ms} ms, {seconds} s)",
            agent_pids[0], agent_pids[1]
        );
        let before: Vec<_> = agent_pids.iter().map(|&p| threads(p)).collect();
        let started = Instant::now();
        std::thread::sleep(Duration::from_secs(u64::from(seconds)));
        let after: Vec<_> = agent_pids.iter().map(|&p| threads(p)).collect();
        let secs = started.elapsed().as_secs_f64();
        if let Some(prober) = &prober {
            let samples = prober.take();
            let failed = samples.iter().filter(|s| s.failed()).count();
            println!("  probe: {} requests, {failed} failed", samples.len());
        }
        let mut moved = false;
        for (i, node) in ["lb1", "lb2"].iter().enumerate() {
            report(node, &before[i], &after[i], secs);
        }
        for (i, monitor) in monitors.iter().enumerate() {
            cluster.lab.stop(monitor, Duration::from_secs(3))?;
            let lines: Vec<String> = monitor
                .stdout()?
                .lines()
                .filter(|l| l.contains(&format!("inet {VIP}/")))
                .map(str::to_owned)
                .collect();
            if !lines.is_empty() {
                moved = true;
                println!("  VIP changes on lb{}:", i + 1);
                for line in lines {
                    println!("    {line}");
                }
            }
        }
        for i in 0..2 {
            let status = cluster.status(i)?;
            println!(
                "  lb{} max_stall_ms {} kernel_to_agent_us {}",
                i + 1,
                status["max_stall_ms"],
                status["kernel_to_agent_us"]
            );
            for node in status["nodes"].as_array().into_iter().flatten() {
                if !node["counters"].is_null() {
                    println!(
                        "    heard from {}: max_gap_ns {} late {} lost {}",
                        node["name"],
                        node["counters"]["max_gap_ns"],
                        node["counters"]["late"],
                        node["counters"]["lost"]
                    );
                }
            }
        }
        if moved {
            moved_rounds += 1;
            for i in 0..2 {
                println!(
                    "----- lb{} agent log -----\n{}",
                    i + 1,
                    cluster.agent_log(i)
                );
                if debugfile {
                    let path = cluster.nodes[i].state_dir.join("debug.log");
                    let text = fs::read_to_string(&path).unwrap_or_default();
                    let keep =
                        std::env::temp_dir().join(format!("idle_cost_r{round}_lb{}.log", i + 1));
                    fs::write(&keep, &text)?;
                    println!(
                        "----- lb{} debugfile saved to {} -----",
                        i + 1,
                        keep.display()
                    );
                }
            }
        }
    }
    println!("{moved_rounds} of {rounds} rounds saw the VIP move");
    if moved_rounds > 0 && std::env::var_os("HB_IDLE_FAIL_ON_MOVE").is_some() {
        bail!("the VIP moved");
    }
    Ok(())
}

/// keepalived on both balancers, lb1 first (it takes the VIP), then one window; CPU summed
/// over each node's keepalived processes.
fn keepalived_round(advert_int_cs: u32, seconds: u32) -> Result<()> {
    let mut cluster = RivalCluster::new("idlecost-ka", RivalSpec::Keepalived { advert_int_cs })?;
    cluster.start(0)?;
    if !hb_tests::wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
        cluster.vip_holders().unwrap_or_default() == ["lb1"]
    }) {
        bail!("lb1's keepalived did not take the VIP");
    }
    cluster.start(1)?;
    std::thread::sleep(Duration::from_secs(3));
    let sample = |index: usize| -> BTreeMap<u32, ThreadSample> {
        cluster
            .daemon_pids(index)
            .into_iter()
            .flat_map(threads)
            .collect()
    };
    let before = [sample(0), sample(1)];
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(u64::from(seconds)));
    let after = [sample(0), sample(1)];
    let secs = started.elapsed().as_secs_f64();
    println!("keepalived advert_int {advert_int_cs} cs, {seconds} s");
    for (i, node) in ["lb1", "lb2"].iter().enumerate() {
        report(node, &before[i], &after[i], secs);
    }
    Ok(())
}

/// The agent's own pid: `nsenter` may run it as a child.
fn agent_pid(pid: u32) -> u32 {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() == "hb-agent" {
        return pid;
    }
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()
        .and_then(|c| c.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(pid)
}
