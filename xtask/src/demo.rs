//! `cargo xtask demo`: a failover, shown and measured, on this one machine.
//!
//! Builds the agent, then the seeds' farm in network namespaces (a client, balancers lb1 and
//! lb2 running hb-agent with Heartbeat-style configuration and nginx as the managed reverse
//! proxy, web servers web1..3, a dedicated heartbeat link), and narrates: cluster up →
//! status of both → round-robin requests through the VIP → lb1 cut off → lb2 takes over →
//! lb1 back → failback → standby → clean stop → summary. A client-side probe measures every
//! outage. Everything is removed at the end, also on Ctrl-C (the lab harness does that);
//! `--keep` leaves the cluster running for exploration and `--clean` removes kept clusters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use hb_tests::cluster::{Cluster, ClusterSpec, Served, CLIENT_ADDR, VIP};
use hb_tests::lab::{kept_labs, remove_kept_lab, KeptLab};
use hb_tests::probe::{Failure, ProbeOutcome, ProbeSample, ProbeSettings, Prober};
use hb_tests::wait_for;
use serde_json::Value;

use crate::setup::{self, Needs};
use crate::{exec, Workspace};

/// The lab label of demo clusters (kept ones are found by it).
const LABEL: &str = "demo";
const WEB_SERVERS: usize = 3;
/// The client's probe starts a request every 2 ms and gives each 10 ms (the benchmark's 5 ms
/// would count a busy moment of this shared machine as an outage; requests overlap, so the
/// pace holds while they time out).
const PROBE_INTERVAL: Duration = Duration::from_millis(2);
const PROBE_TIMEOUT: Duration = Duration::from_millis(10);
/// How long to watch the service after it is back, before measuring an event.
const SETTLE_AFTER: Duration = Duration::from_millis(400);
/// Longest wait for anything the cluster does (generous: a busy 2-core machine).
const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

/// What `cargo xtask demo` was asked for.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub keep: bool,
    pub release: bool,
    pub keepalive_ms: u32,
    pub deadtime_ms: u32,
}

/// The whole demo: build, farm, story, summary, clean-up (or keep).
pub fn run(workspace: &Workspace, options: &DemoOptions) -> Result<()> {
    if !setup::is_root() {
        bail!(
            "the demo builds network namespaces and attaches XDP programs: run it as root, \
             e.g. `sudo env \"PATH=$PATH\" cargo xtask demo`"
        );
    }
    if options.deadtime_ms < 2 * options.keepalive_ms {
        bail!(
            "deadtime ({} ms) must be at least twice keepalive ({} ms)",
            options.deadtime_ms,
            options.keepalive_ms
        );
    }
    let show = Narrator::new();
    show.title("hb demo: two balancers, one VIP, failover measured from the client");

    show.step("1. build");
    show.say("set-up checks, then hb-agent and its XDP program");
    let outcome = setup::ensure(workspace, Needs::EVERYTHING)?;
    crate::fail_on_root_steps(&outcome)?;
    let agent = exec::build_agent(workspace, options.release)?;
    show.say(&format!("agent: {}", agent.display()));
    let kept = kept_demo_labs();
    if !kept.is_empty() {
        show.say(&format!(
            "note: {} kept demo cluster(s) still running ({}); `cargo xtask demo --clean` \
             removes them",
            kept.len(),
            kept.iter()
                .map(|lab| lab.prefix.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }

    show.step("2. the farm");
    let spec = ClusterSpec {
        keepalive: format!("{}ms", options.keepalive_ms),
        deadtime: format!("{}ms", options.deadtime_ms),
        warntime: format!("{}ms", options.deadtime_ms.div_ceil(2)),
        initdead: "2".into(),
        auto_failback: "on".into(),
        web_servers: WEB_SERVERS,
        agent_binary: Some(agent),
        ..ClusterSpec::default()
    };
    let mut cluster = Cluster::new(LABEL, spec).context("building the demo cluster")?;
    describe_farm(&show, &cluster)?;

    let results = story(&show, &mut cluster, options)?;

    show.step("summary");
    show.block(&summary_table(&results));
    show.say(&format!(
        "probe: GET http://{VIP}/ from the client every {} ms, {} ms timeout; outage = time \
         from the last answer before the event to the first one after it; +N ms = after the \
         event began (ports down or up, the command, the SIGTERM)",
        PROBE_INTERVAL.as_millis(),
        PROBE_TIMEOUT.as_millis()
    ));

    if options.keep {
        return keep(&show, cluster);
    }
    show.step("clean-up");
    let prefix = cluster.lab.prefix().to_owned();
    drop(cluster);
    let leftovers = leftovers_of(&prefix);
    if leftovers.is_empty() {
        show.say(&format!(
            "removed every namespace, process, pinned BPF object and file of {prefix}"
        ));
        Ok(())
    } else {
        bail!("left behind: {}", leftovers.join(", "))
    }
}

/// `cargo xtask demo --clean`: removes every kept demo cluster.
pub fn clean() -> Result<()> {
    if !setup::is_root() {
        bail!("removing kept demo clusters needs root (they hold namespaces and BPF pins)");
    }
    let kept = kept_demo_labs();
    if kept.is_empty() {
        eprintln!("xtask: demo: no kept demo cluster to remove");
        return Ok(());
    }
    for lab in kept {
        let removed = remove_kept_lab(&lab.prefix)
            .with_context(|| format!("removing kept demo cluster {}", lab.prefix))?;
        eprintln!(
            "xtask: demo: removed {} ({} namespaces and directories)",
            lab.prefix,
            removed.len()
        );
        let leftovers = leftovers_of(&lab.prefix);
        if !leftovers.is_empty() {
            bail!("{} left behind: {}", lab.prefix, leftovers.join(", "));
        }
    }
    Ok(())
}

fn kept_demo_labs() -> Vec<KeptLab> {
    kept_labs()
        .into_iter()
        .filter(|lab| lab.label == LABEL)
        .collect()
}

// ---------------------------------------------------------------- the story

/// One measured event of the story.
struct EventResult {
    event: String,
    detected_by: String,
    outage: Outage,
}

fn story(
    show: &Narrator,
    cluster: &mut Cluster,
    options: &DemoOptions,
) -> Result<Vec<EventResult>> {
    show.step("3. cluster up");
    show.say("starting hb-agent on lb1 and lb2 (`hb-agent run --config-dir .../ha.d`)");
    let mut logs = [AgentLog::default(), AgentLog::default()];
    cluster.start(0)?;
    logs[0].open(cluster, 0)?;
    cluster.start(1)?;
    logs[1].open(cluster, 1)?;
    cluster
        .wait_sole_holder("lb1")
        .context("lb1 (the preferred node) takes the VIP")?;
    cluster
        .wait_served_by("lb1")
        .context("the client is served through lb1")?;
    cluster
        .wait_status(1, "lb2 sees lb1 up and holding", |status| {
            node_status(status, "lb1") == Some("up") && group_holder(status) == Some("lb1")
        })
        .context("lb2's view")?;
    show.agent_lines(&mut logs, cluster)?;
    for index in 0..2 {
        let name = &cluster.nodes[index].name;
        show.say(&format!("$ hb-agent status   (on {name})"));
        show.block(&cluster.control(index, "status")?);
    }

    show.step("4. requests through the VIP");
    show.say(&format!(
        "the client GETs http://{VIP}/: lb1 holds the VIP, its nginx spreads the requests over \
         the web servers"
    ));
    for _ in 0..2 * WEB_SERVERS {
        let response = cluster
            .get_vip(Duration::from_secs(2))
            .context("a request through the VIP")?;
        let served = Served::parse(&response).with_context(|| {
            format!(
                "unexpected answer: HTTP {} {:?}",
                response.status, response.body
            )
        })?;
        show.say(&format!("  GET http://{VIP}/ → {served}"));
    }

    show.say(&format!(
        "from now on a probe in the client GETs http://{VIP}/ every {} ms ({} ms timeout)",
        PROBE_INTERVAL.as_millis(),
        PROBE_TIMEOUT.as_millis()
    ));
    let mut client = ClientView::start(cluster)?;
    client.wait_served_by("lb1", Instant::now())?;
    std::thread::sleep(SETTLE_AFTER);
    let mut results = Vec::new();

    show.step("5. lb1 loses its links");
    show.say(
        "lb1's switch ports (service LAN and heartbeat link) go down: a cut cable, a dead NIC",
    );
    let (started, wall) = show.now();
    cluster.set_connected(0, false)?;
    let outage = client.measure("lb2", started)?;
    show.agent_lines(&mut logs, cluster)?;
    show.say(
        "lb1, cut off, finds lb2 dead too and keeps its VIP; nobody can reach it there, and \
         when it comes back exactly one of them keeps the group",
    );
    let dead = logs[1].first_since(wall, "node lb1: is dead");
    results.push(EventResult {
        event: "lb1 loses its links".into(),
        detected_by: match dead {
            Some(line) => format!(
                "lb2: no heartbeat for deadtime {} ms; lb1 dead at +{} ms",
                options.deadtime_ms,
                line.ms_after(wall)
            ),
            None => format!("lb2: no heartbeat for deadtime {} ms", options.deadtime_ms),
        },
        outage: show.outage(outage),
    });

    show.step("6. lb1 returns");
    show.say(
        "lb1 reboots while cut off (agent, VIP and nginx gone), then comes back: links up, \
         hb-agent starts",
    );
    cluster.power_off(0)?;
    let (started, wall) = show.now();
    cluster.set_connected(0, true)?;
    cluster.start(0)?;
    logs[0].open(cluster, 0)?;
    let outage = client.measure("lb1", started)?;
    cluster
        .wait_status(1, "lb2 released", |s| s["groups"][0]["phase"] == "released")
        .context("lb2 releases after the failback")?;
    show.agent_lines(&mut logs, cluster)?;
    let released = logs[1].first_since(wall, "resource group released");
    let acquired = logs[0].first_since(wall, "resource group acquired");
    results.push(EventResult {
        event: "lb1 back: failback".into(),
        detected_by: match (released, acquired) {
            (Some(released), Some(acquired)) => format!(
                "auto_failback: lb2 released at +{} ms, then lb1 acquired at +{} ms",
                released.ms_after(wall),
                acquired.ms_after(wall)
            ),
            _ => "auto_failback: lb2 releases, then lb1 acquires".into(),
        },
        outage: show.outage(outage),
    });

    show.step("7. planned maintenance: `hb-agent standby` on lb1");
    show.say("lb1 hands its resource group to lb2 without waiting for any timer");
    let (started, wall) = show.now();
    let answer = cluster.control(0, "standby")?;
    show.say(&format!("$ hb-agent standby   (on lb1): {}", answer.trim()));
    let outage = client.measure("lb2", started)?;
    show.agent_lines(&mut logs, cluster)?;
    let acquired = logs[1].first_since(wall, "resource group acquired");
    results.push(EventResult {
        event: "hb-agent standby on lb1".into(),
        detected_by: match acquired {
            Some(line) => format!(
                "standby request: lb1 released, lb2 acquired at +{} ms",
                line.ms_after(wall)
            ),
            None => "standby request: lb1 releases, lb2 acquires".into(),
        },
        outage: show.outage(outage),
    });

    show.step("8. clean stop of lb2's agent");
    show.say(&format!(
        "SIGTERM to lb2's hb-agent (systemctl stop): it releases, then tells lb1 it is leaving; \
         lb1 takes over at once instead of waiting deadtime ({} ms)",
        options.deadtime_ms
    ));
    let (started, wall) = show.now();
    let status = cluster.stop(1)?;
    if !status.success() {
        bail!("lb2's agent did not stop cleanly ({status})");
    }
    let outage = client.measure("lb1", started)?;
    show.agent_lines(&mut logs, cluster)?;
    let left = logs[0].first_since(wall, "node lb2: left");
    results.push(EventResult {
        event: "clean stop of lb2's agent".into(),
        detected_by: match left {
            Some(line) => format!(
                "lb2's leaving message, at +{} ms; no deadtime wait",
                line.ms_after(wall)
            ),
            None => "lb2's leaving message; no deadtime wait".into(),
        },
        outage: show.outage(outage),
    });

    let (requests, failed, skipped) = client.stop();
    show.say(&format!(
        "the probe made {requests} requests, {failed} failed{}",
        if skipped > 0 {
            format!(" ({skipped} could not be sent on time: a starved machine)")
        } else {
            String::new()
        }
    ));
    Ok(results)
}

/// What the client sees: the probe's requests to the VIP, as they complete.
struct ClientView {
    prober: Prober,
    samples: Vec<ProbeSample>,
}

impl ClientView {
    fn start(cluster: &Cluster) -> Result<ClientView> {
        let settings = ProbeSettings {
            target: SocketAddr::from((VIP, 80)),
            interval: PROBE_INTERVAL,
            timeout: PROBE_TIMEOUT,
        };
        let prober =
            Prober::start(&cluster.client, settings).context("starting the client's probe")?;
        Ok(ClientView {
            prober,
            samples: Vec::new(),
        })
    }

    fn refresh(&mut self) {
        self.samples.extend(self.prober.take());
    }

    /// Waits until `balancer` answers a request started after `since`.
    fn wait_served_by(&mut self, balancer: &str, since: Instant) -> Result<()> {
        let served = wait_for(EVENT_TIMEOUT, Duration::from_millis(5), || {
            self.refresh();
            self.samples
                .iter()
                .any(|s| s.start >= since && served(s).is_some_and(|by| by.balancer == balancer))
                .then_some(())
        });
        served.with_context(|| {
            format!(
                "the client was not served by {balancer} within {} s",
                EVENT_TIMEOUT.as_secs()
            )
        })
    }

    /// Waits until `balancer` answers again after the event at `started`, watches a little
    /// longer, and reads the outage.
    fn measure(&mut self, balancer: &str, started: Instant) -> Result<Outage> {
        self.wait_served_by(balancer, started)?;
        std::thread::sleep(SETTLE_AFTER);
        self.refresh();
        measure_outage(&self.samples, started, Instant::now()).context("the probe recorded nothing")
    }

    /// Stops probing; returns how many requests were made, failed, and could not be sent on
    /// time.
    fn stop(mut self) -> (usize, usize, u64) {
        self.refresh();
        let skipped = self.prober.skipped();
        self.prober.stop();
        let failed = self.samples.iter().filter(|s| served(s).is_none()).count();
        (self.samples.len(), failed, skipped)
    }
}

/// Who answered a probe request; `None` when it failed.
fn served(sample: &ProbeSample) -> Option<Served> {
    match &sample.outcome {
        ProbeOutcome::Served(page) => Served::from_page(page),
        ProbeOutcome::Failed(_) => None,
    }
}

/// Why a probe request got no answer, in a few words; `None` when it was answered.
fn why_failed(sample: &ProbeSample) -> Option<&'static str> {
    match &sample.outcome {
        ProbeOutcome::Served(page) => Served::from_page(page).is_none().then_some("not our page"),
        ProbeOutcome::Failed(Failure::ConnectTimeout) => Some("no connection"),
        ProbeOutcome::Failed(Failure::ConnectError) => Some("refused"),
        ProbeOutcome::Failed(Failure::AnswerTimeout) => Some("no answer in time"),
        ProbeOutcome::Failed(Failure::BadAnswer) => Some("broken answer"),
    }
}

/// The service as the client saw it around an event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outage {
    /// From the last answer before the gap to the first one after it (for an event that
    /// broke nothing: the longest ordinary spacing of answers).
    gap: Duration,
    /// Requests that failed in the window.
    failed: usize,
    /// How many failed for each reason.
    causes: BTreeMap<&'static str, usize>,
    /// Requests that ended in the window.
    requests: usize,
    /// Who answered before and after the gap (`after` is `None` if the window ends in it).
    before: Option<Served>,
    after: Option<Served>,
}

/// The outage around an event at `from`, from the requests that ended by `to`: the longest
/// stretch between two consecutive answers, counted from the last answer before `from`.
/// `None` when no request ended by `to`.
fn measure_outage(samples: &[ProbeSample], from: Instant, to: Instant) -> Option<Outage> {
    let mut ended: Vec<(&ProbeSample, Option<Served>)> = samples
        .iter()
        .filter(|s| s.end <= to)
        .map(|s| (s, served(s)))
        .collect();
    ended.sort_by_key(|(s, _)| s.end);
    let answers: Vec<(Instant, &Served)> = ended
        .iter()
        .filter_map(|(s, by)| by.as_ref().map(|by| (s.end, by)))
        .collect();
    // The last answer before the event, else the first one at all.
    let anchor = answers
        .iter()
        .rposition(|(end, _)| *end <= from)
        .unwrap_or(0);
    let Some(&(window_start, first)) = answers.get(anchor) else {
        // Not one answer: the whole window is an outage.
        let start = ended.first()?.0.start;
        return Some(Outage {
            gap: to.saturating_duration_since(start),
            failed: ended.len(),
            causes: count_causes(ended.iter().map(|(s, _)| *s)),
            requests: ended.len(),
            before: None,
            after: None,
        });
    };
    let mut worst = Outage {
        gap: Duration::ZERO,
        failed: 0,
        causes: BTreeMap::new(),
        requests: 0,
        before: Some(first.clone()),
        after: Some(first.clone()),
    };
    let mut previous = (window_start, first);
    for &(end, by) in &answers[anchor + 1..] {
        if end - previous.0 > worst.gap {
            worst.gap = end - previous.0;
            worst.before = Some(previous.1.clone());
            worst.after = Some(by.clone());
        }
        previous = (end, by);
    }
    // Still down at the end of the window: that stretch may be the longest.
    let failed_since_last = ended
        .iter()
        .any(|(s, by)| by.is_none() && s.end > previous.0);
    let open = to.saturating_duration_since(previous.0);
    if failed_since_last && open > worst.gap {
        worst.gap = open;
        worst.before = Some(previous.1.clone());
        worst.after = None;
    }
    let window = ended.iter().filter(|(s, _)| s.end > window_start);
    worst.requests = window.clone().count();
    worst.failed = window.clone().filter(|(_, by)| by.is_none()).count();
    worst.causes = count_causes(window.map(|(s, _)| *s));
    Some(worst)
}

fn count_causes<'a>(
    samples: impl Iterator<Item = &'a ProbeSample>,
) -> BTreeMap<&'static str, usize> {
    let mut causes = BTreeMap::new();
    for cause in samples.filter_map(why_failed) {
        *causes.entry(cause).or_insert(0) += 1;
    }
    causes
}

fn node_status<'a>(status: &'a Value, name: &str) -> Option<&'a str> {
    status["nodes"]
        .as_array()?
        .iter()
        .find(|node| node["name"] == name)?["status"]
        .as_str()
}

fn group_holder(status: &Value) -> Option<&str> {
    status["groups"][0]["holder"].as_str()
}

// ---------------------------------------------------------------- the farm

fn describe_farm(show: &Narrator, cluster: &Cluster) -> Result<()> {
    let prefix = cluster.lab.prefix();
    show.say(&format!(
        "network namespaces {prefix}-*, addresses from 198.18.0.0/15 (reserved for tests):"
    ));
    let mut text = String::new();
    let _ = writeln!(
        text,
        "switch   {:<24} bridges: svc (service LAN 198.18.1.0/24), hb (heartbeat link 198.18.2.0/24)",
        cluster.switch.name()
    );
    let _ = writeln!(text, "client   {:<24} {CLIENT_ADDR}", cluster.client.name());
    for node in &cluster.nodes {
        let _ = writeln!(
            text,
            "{:<8} {:<24} eth0 {} (service LAN), eth1 {} (heartbeat link); VIP {VIP} when active",
            node.name,
            node.netns.name(),
            node.svc_addr,
            node.hb_addr
        );
    }
    for web in &cluster.web {
        let _ = writeln!(
            text,
            "{:<8} {:<24} {} (nginx)",
            web.name,
            web.netns.name(),
            web.addr
        );
    }
    show.block(&text);

    let lb1 = &cluster.nodes[0];
    show.say(&format!(
        "hb-agent configuration, Heartbeat syntax, the same on both balancers ({}/):",
        lb1.config_dir.display()
    ));
    for (file, mask) in [("ha.cf", false), ("haresources", false), ("authkeys", true)] {
        let path = lb1.config_dir.join(file);
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        show.say(&format!("{file}:"));
        show.block(&if mask { mask_authkeys(&text) } else { text });
    }
    show.say(
        "resource.d/nginx starts and stops each balancer's nginx, a round-robin reverse proxy \
         to web1..3 (upstream), after the VIP is up and before it goes",
    );
    Ok(())
}

/// authkeys with every secret replaced by stars (the method stays visible).
fn mask_authkeys(text: &str) -> String {
    text.lines()
        .map(|line| {
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some(index), Some(method), Some(_secret))
                    if index.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    format!("{index} {method} ******** (secret hidden)\n")
                }
                _ => format!("{line}\n"),
            }
        })
        .collect()
}

// ---------------------------------------------------------------- keeping it

fn keep(show: &Narrator, mut cluster: Cluster) -> Result<()> {
    show.step("keeping the cluster");
    show.say("lb1 leaves standby (`hb-agent takeover`) and lb2's agent starts again");
    cluster.control(0, "takeover")?;
    cluster.start(1)?;
    cluster.wait_sole_holder("lb1")?;
    cluster
        .wait_status(1, "lb2 sees lb1 up and holding", |status| {
            node_status(status, "lb1") == Some("up") && group_holder(status) == Some("lb1")
        })
        .context("lb2's view")?;
    let guide = exploration_guide(&cluster)?;
    let prefix = cluster.lab.prefix().to_owned();
    cluster
        .keep(&guide)
        .with_context(|| format!("marking {prefix} kept"))?;
    show.say(&format!(
        "{prefix} stays up after this command. To explore it:"
    ));
    show.block(&guide);
    Ok(())
}

/// Commands that reach into a kept cluster, and the one that removes it.
fn exploration_guide(cluster: &Cluster) -> Result<String> {
    let agent = cluster.agent_path()?;
    let agent = agent.display();
    let netns = |name: &str| format!("/run/netns/{}", cluster.lab.prefix()) + "-" + name;
    let lb1 = &cluster.nodes[0];
    let lb2 = &cluster.nodes[1];
    let mut text = String::new();
    let _ = writeln!(text, "# the client: requests through the VIP");
    let _ = writeln!(
        text,
        "ip netns exec {} curl -s http://{VIP}/",
        cluster.client.name()
    );
    let _ = writeln!(
        text,
        "# a shell inside lb1 (nsenter keeps /sys/fs/bpf visible)"
    );
    let _ = writeln!(text, "nsenter --net={} bash", netns("lb1"));
    let _ = writeln!(
        text,
        "# the agents: status, JSON status, hand over, take back"
    );
    for node in [lb1, lb2] {
        let _ = writeln!(
            text,
            "{agent} status --control-socket {}",
            node.control_socket.display()
        );
    }
    let _ = writeln!(
        text,
        "{agent} status --json --control-socket {}",
        lb2.control_socket.display()
    );
    let _ = writeln!(
        text,
        "{agent} standby --control-socket {}",
        lb1.control_socket.display()
    );
    let _ = writeln!(
        text,
        "{agent} takeover --control-socket {}",
        lb1.control_socket.display()
    );
    let _ = writeln!(text, "# configuration and logs");
    let _ = writeln!(text, "ls {}", lb1.config_dir.display());
    let _ = writeln!(
        text,
        "tail -f {}/lb1-agent*.stderr {}/lb2-agent*.stderr",
        cluster.lab.temp_dir().display(),
        cluster.lab.temp_dir().display()
    );
    let _ = writeln!(text, "# the XDP program and its pinned maps (lb1's)");
    let _ = writeln!(text, "nsenter --net={} bpftool net show", netns("lb1"));
    let _ = writeln!(
        text,
        "bpftool map dump pinned {}",
        lb1.pin_root.join("lb1/v1/HB_PEERS").display()
    );
    let _ = writeln!(
        text,
        "bpftool map dump pinned {}",
        lb1.pin_root.join("lb1/v1/HB_COUNTERS").display()
    );
    let _ = writeln!(
        text,
        "# heartbeats on the wire (the switch's heartbeat bridge)"
    );
    let _ = writeln!(
        text,
        "nsenter --net={} tcpdump -ni hb udp port 694",
        netns("sw")
    );
    let _ = writeln!(text, "# cut lb1 off (its switch ports down), and back");
    let ports: Vec<String> = cluster
        .lab
        .ports_of(&lb1.netns)
        .iter()
        .map(|port| port.switch_ifname().to_owned())
        .collect();
    for state in ["down", "up"] {
        let commands: Vec<String> = ports
            .iter()
            .map(|port| format!("ip -n {} link set {port} {state}", cluster.switch.name()))
            .collect();
        let _ = writeln!(text, "{}", commands.join("; "));
    }
    let _ = writeln!(text, "# remove it (namespaces, processes, pins, files)");
    let _ = writeln!(text, "cargo xtask demo --clean");
    Ok(text)
}

/// Everything on the machine still named after `prefix`.
fn leftovers_of(prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let ours = |name: &str| name == prefix || name.starts_with(&format!("{prefix}-"));
    for dir in [
        PathBuf::from(hb_tests::lab::NETNS_RUN_DIR),
        std::env::temp_dir(),
        PathBuf::from(hb_tests::BPFFS_ROOT),
    ] {
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if ours(&name) {
                    found.push(dir.join(name).display().to_string());
                }
            }
        }
    }
    found
}

// ---------------------------------------------------------------- output

/// Progress output with times relative to the start of the demo.
struct Narrator {
    started: Instant,
    started_wall: SystemTime,
}

impl Narrator {
    fn new() -> Narrator {
        Narrator {
            started: Instant::now(),
            started_wall: SystemTime::now(),
        }
    }

    /// An event's start: for the probe (monotonic) and the agents' logs (wall clock).
    fn now(&self) -> (Instant, SystemTime) {
        let now = Instant::now();
        (now, self.started_wall + (now - self.started))
    }

    fn stamp(&self) -> String {
        format!("[{:>7.3} s]", self.started.elapsed().as_secs_f64())
    }

    fn title(&self, text: &str) {
        println!("{} {text}", self.stamp());
    }

    fn step(&self, text: &str) {
        let rule = "─".repeat(60usize.saturating_sub(text.chars().count()));
        println!("\n{} ── {text} {rule}", self.stamp());
    }

    fn say(&self, text: &str) {
        println!("{} {text}", self.stamp());
    }

    /// Verbatim text (a file, a command's output), indented under the time column.
    fn block(&self, text: &str) {
        for line in text.lines() {
            println!("              │ {line}");
        }
    }

    /// New lines in the agents' logs, on the demo's time line.
    fn agent_lines(&self, logs: &mut [AgentLog; 2], cluster: &Cluster) -> Result<()> {
        let mut lines = Vec::new();
        for (index, log) in logs.iter_mut().enumerate() {
            let node = &cluster.nodes[index].name;
            lines.extend(log.read_new()?.into_iter().map(|line| (node.clone(), line)));
        }
        lines.sort_by_key(|(_, line)| line.at);
        for (node, line) in lines {
            let at = line
                .at
                .and_then(|at| at.duration_since(self.started_wall).ok())
                .map_or_else(
                    || "     ?   ".to_owned(),
                    |d| format!("{:>7.3} s", d.as_secs_f64()),
                );
            println!("[{at}]   {node} log: {:<5} {}", line.level, line.message);
        }
        Ok(())
    }

    /// Says what the client saw, and passes the outage through.
    fn outage(&self, outage: Outage) -> Outage {
        let who = match (&outage.before, &outage.after) {
            (Some(before), Some(after)) => format!("; last answer: {before}, next: {after}"),
            _ => String::new(),
        };
        let causes: Vec<String> = outage
            .causes
            .iter()
            .map(|(cause, count)| format!("{cause} {count}"))
            .collect();
        let causes = if causes.is_empty() {
            String::new()
        } else {
            format!(" ({})", causes.join(", "))
        };
        self.say(&format!(
            "client: {} ms without an answer, {} of {} requests failed{causes}{who}",
            millis(outage.gap),
            outage.failed,
            outage.requests
        ));
        outage
    }
}

fn millis(duration: Duration) -> String {
    format!("{:.1}", duration.as_secs_f64() * 1000.0)
}

fn summary_table(results: &[EventResult]) -> String {
    let headers = ["event", "detected by", "outage ms", "failed requests"];
    let rows: Vec<[String; 4]> = results
        .iter()
        .map(|result| {
            [
                result.event.clone(),
                result.detected_by.clone(),
                millis(result.outage.gap),
                format!("{} of {}", result.outage.failed, result.outage.requests),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 4]| {
        format!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}\n",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        )
    };
    let mut text = line(headers);
    text.push_str(&line(
        widths.map(|w| "-".repeat(w)).each_ref().map(String::as_str),
    ));
    for row in &rows {
        text.push_str(&line(row.each_ref().map(String::as_str)));
    }
    text
}

// ---------------------------------------------------------------- agent logs

/// The part of one agent's log not read yet.
#[derive(Debug, Default)]
struct AgentLog {
    path: Option<PathBuf>,
    offset: u64,
    /// Every line read so far, for looking back at an event.
    seen: Vec<LogLine>,
}

/// One line of the agent's log (tracing's text format).
#[derive(Debug, Clone)]
struct LogLine {
    at: Option<SystemTime>,
    level: String,
    message: String,
}

impl LogLine {
    /// Milliseconds from `start` to this line (0 when it has no time or came first).
    fn ms_after(&self, start: SystemTime) -> String {
        let after = self
            .at
            .and_then(|at| at.duration_since(start).ok())
            .unwrap_or_default();
        format!("{:.0}", after.as_secs_f64() * 1000.0)
    }
}

impl AgentLog {
    /// Follows node `index`'s current agent run from its first line.
    fn open(&mut self, cluster: &Cluster, index: usize) -> Result<()> {
        let agent = cluster.nodes[index]
            .agent
            .as_ref()
            .context("the agent is not running")?;
        self.path = Some(agent.stderr_path().to_owned());
        self.offset = 0;
        Ok(())
    }

    fn read_new(&mut self) -> Result<Vec<LogLine>> {
        let Some(path) = &self.path else {
            return Ok(Vec::new());
        };
        let mut file =
            fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        file.seek(SeekFrom::Start(self.offset))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        // Only whole lines: the agent may be half-way through one.
        let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        self.offset += end as u64;
        let lines: Vec<LogLine> = String::from_utf8_lossy(&bytes[..end])
            .lines()
            .filter_map(parse_log_line)
            .collect();
        self.seen.extend(lines.iter().cloned());
        Ok(lines)
    }

    /// The first line at or after `since` that contains `text`.
    fn first_since(&self, since: SystemTime, text: &str) -> Option<LogLine> {
        self.seen
            .iter()
            .find(|line| line.at.is_some_and(|at| at >= since) && line.message.contains(text))
            .cloned()
    }
}

/// `2025-11-22T12:56:00.123456Z  INFO hb_agent::engine: message` (colour codes removed).
fn parse_log_line(raw: &str) -> Option<LogLine> {
    let line = hb_tests::strip_ansi(raw);
    let mut parts = line.split_whitespace();
    let stamp = parts.next()?;
    let level = parts.next()?.to_owned();
    if !matches!(
        level.as_str(),
        "TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR"
    ) {
        return None;
    }
    let rest = line.split_once(&level)?.1.trim_start();
    // Drop the module path (`hb_agent::engine: `), keep spans and fields.
    let message = match rest.split_once(": ") {
        Some((target, message)) if !target.contains(' ') => message,
        _ => rest,
    };
    Some(LogLine {
        at: hb_tests::parse_utc_timestamp(stamp),
        level,
        message: message.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn reads_agent_log_lines() {
        let line = "\u{1b}[2m2025-11-22T12:56:00.250000Z\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m \
                    \u{1b}[2mhb_agent::engine\u{1b}[0m\u{1b}[2m:\u{1b}[0m node lb1: is dead (silent for 52 ms)";
        let parsed = parse_log_line(line).unwrap();
        assert_eq!(parsed.level, "WARN");
        assert_eq!(parsed.message, "node lb1: is dead (silent for 52 ms)");
        let at = parsed.at.unwrap().duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(at, Duration::new(1_763_816_160, 250_000_000));
        assert!(parse_log_line("   Compiling something").is_none());
    }

    /// A request every 2 ms from `base`, each answered (by the balancer named) or failed
    /// ("") 1 ms after it started.
    fn record(base: Instant, plan: &[&str]) -> Vec<ProbeSample> {
        plan.iter()
            .enumerate()
            .map(|(i, who)| {
                let start = base + Duration::from_millis(2 * i as u64);
                ProbeSample {
                    seq: i as u64,
                    start,
                    end: start + Duration::from_millis(1),
                    outcome: if who.is_empty() {
                        ProbeOutcome::Failed(Failure::ConnectTimeout)
                    } else {
                        ProbeOutcome::Served(format!("web1 via {who}"))
                    },
                }
            })
            .collect()
    }

    fn via(balancer: &str) -> Option<Served> {
        Some(Served {
            balancer: balancer.into(),
            backend: Some("web1".into()),
        })
    }

    #[test]
    fn outage_is_the_gap_between_answers_around_the_event() {
        let base = Instant::now();
        let plan = ["lb1", "lb1", "lb1", "", "", "", "", "lb2", "lb2"];
        let samples = record(base, &plan);
        let outage = measure_outage(
            &samples,
            base + Duration::from_millis(5),
            base + Duration::from_millis(100),
        )
        .unwrap();
        // The last answer ended at 5 ms, the next at 15 ms.
        assert_eq!(outage.gap, Duration::from_millis(10));
        assert_eq!(outage.failed, 4);
        assert_eq!(outage.causes, BTreeMap::from([("no connection", 4)]));
        assert_eq!(outage.requests, 6);
        assert_eq!(outage.before, via("lb1"));
        assert_eq!(outage.after, via("lb2"));
    }

    #[test]
    fn no_failure_is_the_ordinary_spacing() {
        let base = Instant::now();
        let samples = record(base, &["lb1", "lb1", "lb2", "lb2"]);
        let outage = measure_outage(&samples, base, base + Duration::from_millis(50)).unwrap();
        assert_eq!(outage.gap, Duration::from_millis(2));
        assert_eq!(outage.failed, 0);
    }

    #[test]
    fn an_outage_still_open_counts_to_the_end_of_the_window() {
        let base = Instant::now();
        let samples = record(base, &["lb1", "lb1", "", "", ""]);
        let outage = measure_outage(
            &samples,
            base + Duration::from_millis(3),
            base + Duration::from_millis(30),
        )
        .unwrap();
        assert_eq!(outage.gap, Duration::from_millis(27));
        assert_eq!(outage.after, None);
        assert_eq!(outage.failed, 3);
    }

    #[test]
    fn earlier_outages_and_foreign_pages_are_told_apart() {
        let base = Instant::now();
        let plan = ["", "", "", "lb1", "lb1", "lb1", "", "lb2"];
        let mut samples = record(base, &plan);
        let event = base + Duration::from_millis(11);
        let outage = measure_outage(&samples, event, base + Duration::from_millis(40)).unwrap();
        assert_eq!(outage.failed, 1);
        assert_eq!(outage.gap, Duration::from_millis(4));
        // A 200 that is not one of the cluster's pages is no answer.
        samples[7].outcome = ProbeOutcome::Served("Welcome to nginx!".into());
        let outage = measure_outage(&samples, event, base + Duration::from_millis(40)).unwrap();
        assert_eq!(outage.failed, 2);
        assert_eq!(outage.causes.get("not our page"), Some(&1));
        assert!(measure_outage(&[], base, base).is_none());
    }

    #[test]
    fn hides_secrets() {
        let masked = mask_authkeys("auth 1\n1 sha1 0123456789abcdef\n");
        assert_eq!(masked, "auth 1\n1 sha1 ******** (secret hidden)\n");
        assert!(!masked.contains("0123"));
    }
}
