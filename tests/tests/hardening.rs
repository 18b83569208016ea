//! Hardening scenarios (issue 7), with two real agents, real XDP and nginx:
//!
//! - hostile packets on the heartbeat port — forged (wrong key) control messages with a real
//!   peer's source address (raw socket, `IP_HDRINCL`), captured heartbeats replayed from the
//!   peer's address, an older generation's "leaving", a node that is not configured (with the
//!   right key), truncated/oversized/fragmented/garbage datagrams — neither make a live peer
//!   look dead or move the group, nor keep a dead peer alive; each is counted in
//!   `status --json` and in the metrics;
//! - random loss on the switch (nftables `numgen random`): 30 % on the heartbeat LAN, 10 % on
//!   both LANs, for a window: not one VIP move, the loss counted per link;
//! - SIGKILL of the active agent while its node stays up, and a restart as systemd's
//!   `Restart=on-failure` would do it: the double-holder window is bounded and the cluster
//!   ends with exactly one holder without a manual step;
//! - a resource script that hangs: `resource_timeout` ends it, the group is rolled back, the
//!   peer gets it.
//!
//! Bounds are generous (a loaded 2-core machine); the figures are printed for the README.
//! Run: `cargo test -p hb-tests --test hardening -- --test-threads=1` as root.

mod common;

use std::net::SocketAddrV4;
use std::time::{Duration, Instant, SystemTime};

use hb_agent::wire::{build, Authenticator, Header};
use hb_common::wire::{node_id, MessageKind, NodeState};
use hb_tests::cluster::{Cluster, ClusterSpec, SETTLE, VIP};
use hb_tests::faults::{
    capture_heartbeats, link_report, metric, metrics_ha_cf_line, multi_holder_spans, node_report,
    rx_counter, scrape_metrics, status_counter, CapturedDatagram, Lan, PacketLoss, Rogue, VipWatch,
    HEARTBEAT_PORT,
};
use hb_tests::{require_root, wait_until, write_stderr_line};
use serde_json::Value;

use common::{cluster, cluster_keys, group_holder, node_status, wrong_keys};

/// Node `index`'s status, after asserting that `peer` is up there and was not declared dead
/// since `before` (an earlier status of the same node).
fn peer_stayed_up(cluster: &Cluster, index: usize, peer: &str, before: &Value) -> Value {
    let status = cluster.status(index).unwrap();
    assert_eq!(
        node_status(&status, peer).as_deref(),
        Some("up"),
        "{status:#}"
    );
    assert_eq!(
        node_counter(&status, peer, "deaths"),
        node_counter(before, peer, "deaths"),
        "{peer} never looked dead to {}: {status:#}",
        cluster.nodes[index].name
    );
    status
}

fn node_counter(status: &Value, name: &str, counter: &str) -> u64 {
    node_report(status, name)
        .and_then(|node| node["counters"][counter].as_u64())
        .unwrap_or(0)
}

/// Both nodes up; lb1 (preferred) holds the group and serves; each sees the other up.
fn settle_on_lb1(cluster: &Cluster) {
    cluster
        .wait_sole_holder("lb1")
        .expect("lb1 acquires the VIP");
    cluster
        .wait_served_by("lb1")
        .expect("the client is served by lb1");
    for (index, peer) in [(0, "lb2"), (1, "lb1")] {
        cluster
            .wait_status(index, "the peer is up and lb1 holds the group", |s| {
                node_status(s, peer).as_deref() == Some("up")
                    && group_holder(s).as_deref() == Some("lb1")
            })
            .expect("both views agree");
    }
}

/// A figure for the README: printed past the test harness's capture.
fn figure(line: &str) {
    write_stderr_line(&format!("FIGURE {line}"));
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

// ------------------------------------------------------------------ hostile packets

/// Makes hb packets: sealed with the cluster's key, with a wrong key, or for a node the
/// cluster does not know.
struct Forger {
    cluster_id: u32,
    real: Authenticator,
    wrong: Authenticator,
}

impl Forger {
    fn new(cluster: &Cluster) -> Forger {
        let status = cluster.status(0).unwrap();
        Forger {
            cluster_id: status["cluster_id"].as_u64().unwrap() as u32,
            real: Authenticator::new(&cluster_keys(cluster)).unwrap(),
            wrong: Authenticator::new(&wrong_keys()).unwrap(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn packet(
        &self,
        auth: &Authenticator,
        cluster_id: u32,
        from: &str,
        generation: u64,
        kind: MessageKind,
        state: NodeState,
        seq: u64,
        held: u64,
        arg: u64,
        dest: &str,
    ) -> Vec<u8> {
        let header = Header {
            cluster_id,
            node_id: node_id(from.as_bytes()),
            generation,
            keepalive_us: 20_000,
        };
        let dest = if dest.is_empty() {
            0
        } else {
            node_id(dest.as_bytes())
        };
        let mut packet = build(&header, kind, state, seq, held, arg, dest);
        auth.seal(&mut packet);
        bytemuck::bytes_of(&packet).to_vec()
    }

    /// Wrong-key messages that claim to come from `from` and would hurt if believed: a
    /// "leaving", a heartbeat saying it is leaving and holds nothing, "released, acquire
    /// now", "take my groups", "give me your groups", and a heartbeat claiming the group.
    fn forged_from(&self, from: &str, generation: u64, to: &str) -> Vec<Vec<u8>> {
        let far = u64::MAX / 2;
        let w = &self.wrong;
        let c = self.cluster_id;
        vec![
            self.packet(
                w,
                c,
                from,
                generation,
                MessageKind::Leaving,
                NodeState::Leaving,
                far,
                0,
                1,
                "",
            ),
            self.packet(
                w,
                c,
                from,
                generation,
                MessageKind::Heartbeat,
                NodeState::Leaving,
                far + 1,
                0,
                0,
                "",
            ),
            self.packet(
                w,
                c,
                from,
                generation,
                MessageKind::ReleaseDone,
                NodeState::Active,
                far + 2,
                0,
                1,
                to,
            ),
            self.packet(
                w,
                c,
                from,
                generation,
                MessageKind::StandbyRequest,
                NodeState::Standby,
                far + 3,
                0,
                1,
                to,
            ),
            self.packet(
                w,
                c,
                from,
                generation,
                MessageKind::Takeover,
                NodeState::Active,
                far + 4,
                1,
                1,
                to,
            ),
            self.packet(
                w,
                c,
                from,
                generation + 1,
                MessageKind::Heartbeat,
                NodeState::Active,
                1,
                1,
                0,
                "",
            ),
        ]
    }

    /// Real-key messages from an earlier life of `from` (an older generation): its
    /// "leaving" and a heartbeat claiming the group.
    fn old_generation(&self, from: &str, generation: u64) -> Vec<Vec<u8>> {
        let r = &self.real;
        let c = self.cluster_id;
        vec![
            self.packet(
                r,
                c,
                from,
                generation - 1,
                MessageKind::Leaving,
                NodeState::Leaving,
                u64::MAX / 2,
                0,
                1,
                "",
            ),
            self.packet(
                r,
                c,
                from,
                generation - 1,
                MessageKind::Heartbeat,
                NodeState::Active,
                u64::MAX / 2,
                1,
                0,
                "",
            ),
        ]
    }

    /// Real-key messages from `lb3`, which is not in the configuration.
    fn unknown_node(&self, to: &str) -> Vec<Vec<u8>> {
        let r = &self.real;
        let c = self.cluster_id;
        let generation = 1 << 40;
        vec![
            self.packet(
                r,
                c,
                "lb3",
                generation,
                MessageKind::Heartbeat,
                NodeState::Active,
                1,
                1,
                0,
                "",
            ),
            self.packet(
                r,
                c,
                "lb3",
                generation,
                MessageKind::Takeover,
                NodeState::Active,
                2,
                0,
                1,
                to,
            ),
        ]
    }

    /// Datagrams that are not hb packets at all, or not this cluster's.
    fn garbage(&self) -> Vec<Vec<u8>> {
        let mut random = vec![0u8; 4000];
        let mut x = 0x1234_5678_9abc_def1u64;
        for byte in &mut random {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *byte = x as u8;
        }
        let genuine_shape = self.packet(
            &self.real,
            self.cluster_id,
            "lb1",
            1,
            MessageKind::Heartbeat,
            NodeState::Active,
            1,
            0,
            0,
            "",
        );
        let mut bad_version = genuine_shape.clone();
        bad_version[4] = 99;
        let mut bad_field = genuine_shape.clone();
        bad_field[5] = 200; // no such message kind
        let wrong_cluster = self.packet(
            &self.real,
            self.cluster_id ^ 0x5a5a_5a5a,
            "lb1",
            1,
            MessageKind::Heartbeat,
            NodeState::Active,
            1,
            0,
            0,
            "",
        );
        vec![
            Vec::new(),
            genuine_shape[..40].to_vec(),
            genuine_shape[..79].to_vec(),
            [genuine_shape.as_slice(), &[0]].concat(),
            random[..200].to_vec(),
            random[..80].to_vec(),
            bad_version,
            bad_field,
            wrong_cluster,
            // Larger than the MTU: it arrives as IP fragments.
            random.clone(),
        ]
    }
}

fn generation_of(cluster: &Cluster, index: usize) -> u64 {
    cluster.status(index).unwrap()["generation"]
        .as_u64()
        .unwrap()
}

fn on_port(addr: std::net::Ipv4Addr) -> SocketAddrV4 {
    SocketAddrV4::new(addr, HEARTBEAT_PORT)
}

/// One volley of everything hostile at node `victim`, on both its links: forged messages
/// with `peer`'s source address, captured heartbeats of `peer` replayed from its address,
/// the peer's older generation, the unknown node, garbage. Returns the datagrams sent.
#[allow(clippy::too_many_arguments)]
fn volley(
    cluster: &Cluster,
    rogue: &Rogue,
    forger: &Forger,
    victim: usize,
    peer: usize,
    peer_generation: u64,
    captured: &[CapturedDatagram],
) -> u64 {
    let lab = &cluster.lab;
    let (victim_node, peer_node) = (&cluster.nodes[victim], &cluster.nodes[peer]);
    let mut spoofed = forger.forged_from(&peer_node.name, peer_generation, &victim_node.name);
    spoofed.extend(forger.old_generation(&peer_node.name, peer_generation));
    let mut sent = 0;
    for (source, target) in [
        (peer_node.svc_addr, victim_node.svc_addr),
        (peer_node.hb_addr, victim_node.hb_addr),
    ] {
        sent += rogue
            .send_spoofed(lab, on_port(source), on_port(target), &spoofed)
            .unwrap();
        sent += rogue
            .send(
                lab,
                on_port(target),
                &forger.unknown_node(&victim_node.name),
            )
            .unwrap();
        sent += rogue.send(lab, on_port(target), &forger.garbage()).unwrap();
    }
    for datagram in captured {
        sent += rogue
            .send_spoofed(
                lab,
                datagram.source,
                datagram.target,
                std::slice::from_ref(&datagram.payload),
            )
            .unwrap();
    }
    sent
}

/// Real heartbeats lb1 sent to lb2 on both links, captured at the switch.
fn capture_lb1_to_lb2(cluster: &Cluster) -> Vec<CapturedDatagram> {
    let mut captured = Vec::new();
    for ifname in ["eth0", "eth1"] {
        let datagrams = capture_heartbeats(cluster, 0, ifname, Duration::from_millis(600)).unwrap();
        let to_lb2: Vec<CapturedDatagram> = datagrams
            .into_iter()
            .filter(|d| {
                [cluster.nodes[1].svc_addr, cluster.nodes[1].hb_addr].contains(d.target.ip())
            })
            .filter(|d| d.payload.len() == hb_common::wire::PACKET_LEN)
            .collect();
        assert!(
            to_lb2.len() >= 5,
            "captured lb1's heartbeats on {ifname}: {}",
            to_lb2.len()
        );
        captured.extend(to_lb2);
    }
    captured
}

/// The counters a hostile volley must move, as `status --json` shows them.
fn hostile_counters(status: &Value) -> Vec<(&'static str, u64)> {
    vec![
        ("auth_failures", status_counter(status, "auth_failures")),
        ("replays", status_counter(status, "replays")),
        ("unknown_nodes", status_counter(status, "unknown_nodes")),
        ("drop_bad_length", rx_counter(status, "drop_bad_length")),
        ("drop_bad_magic", rx_counter(status, "drop_bad_magic")),
        ("drop_bad_version", rx_counter(status, "drop_bad_version")),
        ("drop_bad_field", rx_counter(status, "drop_bad_field")),
        (
            "drop_wrong_cluster",
            rx_counter(status, "drop_wrong_cluster"),
        ),
    ]
}

/// The same counters in the metrics page.
fn metric_counters(page: &str) -> Vec<(&'static str, Option<f64>)> {
    let rx = |reason| metric(page, "hb_rx_packets_total", &[("reason", reason)]);
    vec![
        ("auth_failures", metric(page, "hb_auth_failures_total", &[])),
        ("replays", metric(page, "hb_replays_total", &[])),
        (
            "unknown_nodes",
            metric(page, "hb_unknown_node_packets_total", &[]),
        ),
        ("drop_bad_length", rx("drop_bad_length")),
        ("drop_bad_magic", rx("drop_bad_magic")),
        ("drop_bad_version", rx("drop_bad_version")),
        ("drop_bad_field", rx("drop_bad_field")),
        ("drop_wrong_cluster", rx("drop_wrong_cluster")),
    ]
}

/// Every counter moved in the status, and the metrics page shows at least what the status
/// showed (it is published once a second).
fn assert_hostile_counted(cluster: &Cluster, index: usize, before: &Value) {
    let name = &cluster.nodes[index].name;
    let after = cluster.status(index).unwrap();
    let (before_counts, after_counts) = (hostile_counters(before), hostile_counters(&after));
    for ((counter, old), (_, new)) in before_counts.iter().zip(&after_counts) {
        assert!(
            new > old,
            "{name}: {counter} counted ({old} → {new}): {after:#}"
        );
    }
    if after["rx_path"] == "xdp" {
        // Fragments of a heartbeat-port datagram: the XDP program cannot reassemble.
        assert!(
            rx_counter(&after, "drop_malformed") > rx_counter(before, "drop_malformed"),
            "{name}: fragments counted: {after:#}"
        );
    }
    let mut last_page = String::new();
    let in_metrics = wait_until(SETTLE, Duration::from_millis(200), || {
        let Ok(page) = scrape_metrics(cluster, index) else {
            return false;
        };
        let ok = metric_counters(&page).iter().zip(&after_counts).all(
            |((_, value), (_, status_value))| value.is_some_and(|v| v >= *status_value as f64),
        );
        last_page = page;
        ok
    });
    assert!(
        in_metrics,
        "{name}: the metrics show the counters of the status ({after_counts:?}):\n{last_page}"
    );
    figure(&format!(
        "hostile {name} ({}): {after_counts:?}",
        after["rx_path"]
    ));
}

fn hostile_packets_while_healthy(label: &str, xdp: &str) {
    let spec = ClusterSpec {
        xdp: xdp.into(),
        extra_ha_cf: metrics_ha_cf_line(),
        ..ClusterSpec::default()
    };
    let cluster = cluster(label, spec);
    settle_on_lb1(&cluster);
    let rogue = Rogue::add(&cluster, "rogue").unwrap();
    let forger = Forger::new(&cluster);
    let captured = capture_lb1_to_lb2(&cluster);
    let generations = [generation_of(&cluster, 0), generation_of(&cluster, 1)];
    let before = [cluster.status(0).unwrap(), cluster.status(1).unwrap()];
    let watch = VipWatch::start(&cluster, "hostile").unwrap();

    // Volleys at both nodes for a few seconds: many deadtimes (200 ms) long.
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(4) {
        sent += volley(&cluster, &rogue, &forger, 1, 0, generations[0], &captured);
        sent += volley(&cluster, &rogue, &forger, 0, 1, generations[1], &[]);
        std::thread::sleep(Duration::from_millis(20));
    }
    // One more deadtime for anything the volleys could have set off.
    std::thread::sleep(Duration::from_secs(1));
    let changes = watch.stop(&cluster.lab).unwrap();
    assert!(
        changes.is_empty(),
        "the VIP did not move: {changes:?}{}",
        cluster.logs()
    );
    assert_eq!(cluster.vip_holders().unwrap(), vec!["lb1".to_owned()]);
    cluster.wait_served_by("lb1").unwrap();
    for (index, peer) in [(0, "lb2"), (1, "lb1")] {
        let status = peer_stayed_up(&cluster, index, peer, &before[index]);
        assert_eq!(group_holder(&status).as_deref(), Some("lb1"), "{status:#}");
        assert_eq!(status["standby"], false, "{status:#}");
        // The real peer is still heard: its heartbeats advance past the forged sequences.
        let received = node_counter(&status, peer, "received");
        assert!(
            wait_until(SETTLE, Duration::from_millis(50), || {
                cluster
                    .status(index)
                    .is_ok_and(|s| node_counter(&s, peer, "received") > received + 10)
            }),
            "{peer}'s real heartbeats still accepted"
        );
    }
    assert_hostile_counted(&cluster, 1, &before[1]);
    assert_hostile_counted(&cluster, 0, &before[0]);
    figure(&format!(
        "hostile while healthy ({xdp}): {sent} datagrams in {:.1} s, 0 VIP changes, no death",
        started.elapsed().as_secs_f64()
    ));
}

#[test]
fn hostile_packets_while_healthy_change_nothing_xdp() {
    if !require_root("hostile_packets_while_healthy_change_nothing_xdp") {
        return;
    }
    hostile_packets_while_healthy("hostilex", "auto");
}

#[test]
fn hostile_packets_while_healthy_change_nothing_sockets() {
    if !require_root("hostile_packets_while_healthy_change_nothing_sockets") {
        return;
    }
    hostile_packets_while_healthy("hostiles", "off");
}

#[test]
fn hostile_packets_cannot_keep_a_dead_node_alive() {
    if !require_root("hostile_packets_cannot_keep_a_dead_node_alive") {
        return;
    }
    let spec = ClusterSpec {
        extra_ha_cf: metrics_ha_cf_line(),
        ..ClusterSpec::default()
    };
    let mut cluster = cluster("hostiledead", spec);
    settle_on_lb1(&cluster);
    let rogue = Rogue::add(&cluster, "rogue").unwrap();
    let forger = Forger::new(&cluster);
    let captured = capture_lb1_to_lb2(&cluster);
    let lb1_generation = generation_of(&cluster, 0);
    let before = cluster.status(1).unwrap();

    cluster.power_off(0).unwrap();
    let died = Instant::now();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (sent, took_over) = std::thread::scope(|scope| {
        let cluster = &cluster;
        let flood = scope.spawn(|| {
            let mut sent = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                sent += volley(cluster, &rogue, &forger, 1, 0, lb1_generation, &captured);
                std::thread::sleep(Duration::from_millis(5));
            }
            sent
        });
        let outcome = cluster.wait_served_by("lb2");
        let took_over = died.elapsed();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sent = flood.join().unwrap();
        outcome.expect("lb2 takes over although lb1's address keeps sending");
        (sent, took_over)
    });
    // deadtime is 200 ms; the bound is for a loaded machine.
    assert!(
        took_over < Duration::from_secs(10),
        "lb2 took over in {took_over:?}"
    );
    let status = cluster
        .wait_status(1, "lb1 dead, lb2 holding", |s| {
            node_status(s, "lb1").as_deref() == Some("dead")
                && group_holder(s).as_deref() == Some("lb2")
        })
        .unwrap();
    assert_eq!(cluster.vip_holders().unwrap(), vec!["lb2".to_owned()]);
    assert!(sent > 100, "the volleys ran ({sent} datagrams)");
    assert_hostile_counted(&cluster, 1, &before);
    figure(&format!(
        "hostile while lb1 dead: {sent} datagrams, lb2 served after {:.0} ms (deadtime 200 ms), \
         lb1 {} to lb2",
        millis(took_over),
        node_status(&status, "lb1").unwrap_or_default()
    ));
}

// ------------------------------------------------------------------ packet loss

/// How long each loss window lasts: `HB_LOSS_WINDOW_S` (default 20 s).
fn loss_window() -> Duration {
    let seconds = std::env::var("HB_LOSS_WINDOW_S")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(20);
    Duration::from_secs(seconds)
}

fn loss_is_no_failover(label: &str, lans: &[Lan], percent: u8) {
    let cluster = cluster(label, ClusterSpec::default());
    settle_on_lb1(&cluster);
    let before = [cluster.status(0).unwrap(), cluster.status(1).unwrap()];
    let watch = VipWatch::start(&cluster, "loss").unwrap();
    let window = loss_window();
    let loss = PacketLoss::start(&cluster, lans, percent).unwrap();
    let started = Instant::now();
    // Check that the loss really bites (lost heartbeats appear), then hold the window.
    let mut holders_seen = Vec::new();
    while started.elapsed() < window {
        let holders = cluster.vip_holders().unwrap();
        if holders != ["lb1"] {
            holders_seen.push(holders);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let dropped = loss.dropped().unwrap();
    loss.remove().unwrap();
    let changes = watch.stop(&cluster.lab).unwrap();
    assert!(
        changes.is_empty() && holders_seen.is_empty(),
        "no VIP move under {percent} % loss: {changes:?} {holders_seen:?}{}",
        cluster.logs()
    );
    assert!(dropped > 0, "the switch dropped frames");
    let mut figures = Vec::new();
    for (index, peer) in [(0, "lb2"), (1, "lb1")] {
        let status = peer_stayed_up(&cluster, index, peer, &before[index]);
        for lan in lans {
            let link_lost = |s: &Value| {
                link_report(s, peer, lan.ifname())
                    .and_then(|link| link["counters"]["lost"].as_u64())
                    .unwrap_or(0)
            };
            let lost = link_lost(&status) - link_lost(&before[index]);
            let received = link_report(&status, peer, lan.ifname())
                .and_then(|link| link["counters"]["received"].as_u64())
                .unwrap_or(0);
            assert!(
                lost > 0,
                "{}: lost heartbeats of {peer}:{} counted: {status:#}",
                cluster.nodes[index].name,
                lan.ifname()
            );
            figures.push(format!(
                "{} hears {peer}:{} lost {lost} (received {received} in all)",
                cluster.nodes[index].name,
                lan.ifname()
            ));
        }
        figures.push(format!(
            "{} node-level lost {} late {}",
            cluster.nodes[index].name,
            node_counter(&status, peer, "lost") - node_counter(&before[index], peer, "lost"),
            node_counter(&status, peer, "late") - node_counter(&before[index], peer, "late"),
        ));
    }
    cluster.wait_served_by("lb1").unwrap();
    figure(&format!(
        "loss {percent} % on {lans:?} for {:.0} s: 0 VIP moves, {dropped} frames dropped; {}",
        window.as_secs_f64(),
        figures.join("; ")
    ));
}

#[test]
fn loss_of_30_percent_on_the_heartbeat_lan_is_no_failover() {
    if !require_root("loss_of_30_percent_on_the_heartbeat_lan_is_no_failover") {
        return;
    }
    loss_is_no_failover("loss30", &[Lan::Heartbeat], 30);
}

#[test]
fn loss_of_10_percent_on_both_lans_is_no_failover() {
    if !require_root("loss_of_10_percent_on_both_lans_is_no_failover") {
        return;
    }
    loss_is_no_failover("loss10", &[Lan::Service, Lan::Heartbeat], 10);
}

// ------------------------------------------------------------------ SIGKILL

/// systemd's `RestartSec=` in packaging/hb-agent.service: how long after the crash the
/// agent is started again.
const RESTART_SEC: Duration = Duration::from_secs(1);

/// SIGKILL of lb1's agent (node up, VIP and nginx stay), lb2 takes over, lb1's agent is
/// started again `RESTART_SEC` after the kill; the cluster must end with `expected_holder`
/// alone, without a manual step. Returns the measured figures.
fn sigkill_of_the_active_agent(label: &str, auto_failback: &str, expected_holder: &str) {
    let spec = ClusterSpec {
        auto_failback: auto_failback.into(),
        ..ClusterSpec::default()
    };
    let mut cluster = cluster(label, spec);
    settle_on_lb1(&cluster);
    let watch = VipWatch::start(&cluster, "kill").unwrap();

    let killed = Instant::now();
    cluster.kill(0).unwrap();
    // The node stays up: the kernel keeps the address and nginx keeps running.
    assert!(cluster.vip_holders().unwrap().contains(&"lb1".to_owned()));
    assert!(cluster.nginx_running(0), "lb1's nginx outlives its agent");
    // lb2 declares lb1 dead after deadtime and takes the VIP: both hold it.
    let both = wait_until(SETTLE, Duration::from_millis(10), || {
        cluster.vip_holders().unwrap_or_default() == ["lb1", "lb2"]
    });
    let both_after = killed.elapsed();
    assert!(
        both,
        "lb2 took over: {:?}{}",
        cluster.vip_holders(),
        cluster.logs()
    );
    cluster
        .wait_status(1, "lb2 declares lb1 dead", |s| {
            node_status(s, "lb1").as_deref() == Some("dead")
        })
        .unwrap();

    // systemd restarts the agent.
    std::thread::sleep(RESTART_SEC.saturating_sub(killed.elapsed()));
    let restarted = Instant::now();
    cluster.start(0).unwrap();
    let ready_after = restarted.elapsed();
    // The restarted agent first releases what its predecessor left (lb2 alone), then, with
    // auto_failback on, takes the group back by the usual handshake.
    let mut last = Vec::new();
    let single = wait_until(Duration::from_secs(30), Duration::from_millis(10), || {
        last = cluster.vip_holders().unwrap_or_default();
        last.len() == 1
    });
    let single_after = restarted.elapsed();
    assert!(
        single,
        "exactly one holder after lb1's agent restarted (holders {last:?}){}",
        cluster.logs()
    );
    cluster.wait_sole_holder(expected_holder).unwrap();
    cluster.wait_served_by(expected_holder).unwrap();
    for (index, peer) in [(0, "lb2"), (1, "lb1")] {
        cluster
            .wait_status(index, "the peer is up and both agree on the holder", |s| {
                node_status(s, peer).as_deref() == Some("up")
                    && group_holder(s).as_deref() == Some(expected_holder)
            })
            .unwrap();
    }
    // And it stays that way.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        cluster.vip_holders().unwrap(),
        vec![expected_holder.to_owned()]
    );
    let other = if expected_holder == "lb1" { 1 } else { 0 };
    assert!(
        wait_until(SETTLE, Duration::from_millis(50), || !cluster
            .nginx_running(other)),
        "the node that gave the VIP up stopped its nginx{}",
        cluster.logs()
    );

    let changes = watch.stop(&cluster.lab).unwrap();
    let spans = multi_holder_spans(&["lb1".to_owned()], &changes, SystemTime::now());
    assert_eq!(spans.len(), 1, "one double-holder span: {changes:?}");
    let (from, to) = spans[0];
    let window = to.duration_since(from).unwrap_or_default();
    // RestartSec + the agent's start-up + a handshake; generous for a loaded machine.
    assert!(
        window < RESTART_SEC + Duration::from_secs(10),
        "double-holder window {window:?}"
    );
    figure(&format!(
        "SIGKILL (auto_failback {auto_failback}): lb2 held too after {:.0} ms, agent restarted \
         {:.0} ms after the kill and answered status {:.0} ms later, single holder \
         {:.0} ms after the restart (finally {expected_holder}); double-holder window {:.0} ms",
        millis(both_after),
        millis(restarted.duration_since(killed)),
        millis(ready_after),
        millis(single_after),
        millis(window),
    ));
}

#[test]
fn sigkill_of_the_active_agent_recovers_after_restart_failback_on() {
    if !require_root("sigkill_of_the_active_agent_recovers_after_restart_failback_on") {
        return;
    }
    sigkill_of_the_active_agent("killon", "on", "lb1");
}

/// With `auto_failback off` lb2 keeps the group after the restart, so the restarted agent
/// must itself remove the VIP and stop the nginx its killed predecessor left on lb1 (it
/// releases what it finds active at start), or both nodes would hold the VIP for good.
#[test]
fn sigkill_of_the_active_agent_recovers_after_restart_failback_off() {
    if !require_root("sigkill_of_the_active_agent_recovers_after_restart_failback_off") {
        return;
    }
    sigkill_of_the_active_agent("killoff", "off", "lb2");
}

// ------------------------------------------------------------------ hanging script

/// Whether a process whose command line contains `needle` runs in namespace `netns`.
fn process_in_netns(netns: &hb_tests::lab::Netns, needle: &str) -> bool {
    use hb_tests::rivals::{command_line, processes_in_namespace};
    use std::os::unix::fs::MetadataExt;
    let Ok(wanted) = std::fs::metadata(netns.path()).map(|m| m.ino()) else {
        return false;
    };
    processes_in_namespace("net", wanted)
        .into_iter()
        .any(|pid| command_line(pid).is_some_and(|line| line.contains(needle)))
}

#[test]
fn hanging_resource_script_times_out_and_the_peer_takes_over() {
    if !require_root("hanging_resource_script_times_out_and_the_peer_takes_over") {
        return;
    }
    // lb1's `stuck` never finishes starting (and has a child of its own); lb2's works.
    let spec = ClusterSpec {
        resources: format!("IPaddr::{VIP}/24/eth0 nginx stuck"),
        extra_ha_cf: "resource_timeout 2\n".into(),
        scripts: vec![
            vec![(
                "stuck".into(),
                "case \"$1\" in start) sleep 3600 & wait ;; *) exit 0 ;; esac".into(),
            )],
            vec![("stuck".into(), "exit 0".into())],
        ],
        ..ClusterSpec::default()
    };
    let started = Instant::now();
    let cluster = cluster("hang", spec);
    cluster
        .wait_sole_holder("lb2")
        .expect("lb2 runs the group lb1 could not start");
    let took = started.elapsed();
    cluster.wait_served_by("lb2").unwrap();
    let status = cluster
        .wait_status(0, "lb1 reports the group failed here", |s| {
            s["groups"][0]["failed_here"] == true
        })
        .unwrap();
    assert_eq!(status["groups"][0]["phase"], "released", "{status:#}");
    assert!(!cluster.nginx_running(0), "lb1 rolled nginx back");
    assert!(
        !process_in_netns(&cluster.nodes[0].netns, "sleep 3600"),
        "the timed-out script's whole process group was ended"
    );
    let log = cluster.agent_log(0);
    let timed_out = log
        .lines()
        .find(|line| line.contains("timed out"))
        .map(hb_tests::strip_ansi)
        .unwrap_or_else(|| panic!("the timeout is logged:\n{log}"));
    assert!(
        timed_out.contains("stuck"),
        "it names the script: {timed_out}"
    );
    assert!(log.contains("rolled back"), "{log}");
    // The timeout (2 s) plus start-up and initdead (1 s); bound for a loaded machine.
    assert!(
        took < Duration::from_secs(15),
        "lb2 held the group after {took:?}"
    );
    figure(&format!(
        "hanging script: resource_timeout 2 (s), lb2 the only holder {:.1} s after the agents \
         were started; log: {timed_out}",
        took.as_secs_f64()
    ));
}

// ------------------------------------------------------------------ standby after takeover

/// Found by the long run (seed 1795363093613421948): `hb-agent takeover` on lb1 puts lb2
/// in standby ("node lb1 requested a takeover: going standby"); a later `hb-agent standby`
/// on lb1 must still move the group to lb2, which leaves its standby to take it.
#[test]
fn standby_hands_over_again_after_a_takeover() {
    if !require_root("standby_hands_over_again_after_a_takeover") {
        return;
    }
    let cluster = cluster("standby2", ClusterSpec::default());
    settle_on_lb1(&cluster);
    for round in 1..=2 {
        cluster.control(0, "standby").unwrap();
        cluster
            .wait_sole_holder("lb2")
            .unwrap_or_else(|e| panic!("round {round}: standby hands over: {e}"));
        cluster.wait_served_by("lb2").unwrap();
        cluster.control(0, "takeover").unwrap();
        cluster
            .wait_sole_holder("lb1")
            .unwrap_or_else(|e| panic!("round {round}: takeover takes it back: {e}"));
        cluster.wait_served_by("lb1").unwrap();
    }
}
