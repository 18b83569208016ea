//! A flood on the heartbeat port while both nodes are healthy (issue 7): junk and forged
//! heartbeats from a third namespace for 10 s must not move the VIP nor kill a peer, and
//! every packet must be accounted for by the receive path's counters. `cargo xtask bench`
//! measures rates and CPU; only generous, non-timing properties are asserted here.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use hb_tests::cluster::{Cluster, ClusterSpec, VIP};
use hb_tests::flood::{
    add_flood_source, cluster_targets, Flood, FloodSpec, Forgery, HEARTBEAT_PORT,
};
use hb_tests::require_root;
use serde_json::Value;

const FLOOD: Duration = Duration::from_secs(10);

fn rx_counters(status: &Value) -> BTreeMap<String, u64> {
    status["counters"]["rx"]
        .as_array()
        .expect("counters.rx in the status")
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().expect("reason").to_owned(),
                pair[1].as_u64().expect("count"),
            )
        })
        .collect()
}

fn growth(before: &Value, after: &Value, reason: &str) -> u64 {
    rx_counters(after)[reason] - rx_counters(before)[reason]
}

fn shape_drops(before: &Value, after: &Value) -> u64 {
    rx_counters(after)
        .keys()
        .filter(|reason| reason.starts_with("drop_"))
        .map(|reason| growth(before, after, reason))
        .sum()
}

fn auth_failures(status: &Value) -> u64 {
    status["counters"]["auth_failures"]
        .as_u64()
        .expect("auth_failures")
}

fn deaths(status: &Value, peer: &str) -> u64 {
    status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|node| node["name"] == peer)
        .and_then(|node| node["counters"]["deaths"].as_u64())
        .unwrap_or(0)
}

#[test]
fn a_flood_of_junk_and_forged_heartbeats_moves_nothing() {
    if !require_root("a_flood_of_junk_and_forged_heartbeats_moves_nothing") {
        return;
    }
    let mut cluster = Cluster::new("flood", ClusterSpec::default()).expect("build the cluster");
    cluster.start_all().expect("start both agents");
    cluster
        .wait_sole_holder("lb1")
        .expect("lb1 acquires the VIP");
    cluster.wait_served_by("lb1").expect("lb1 serves");
    for (index, peer) in [(0, "lb2"), (1, "lb1")] {
        cluster
            .wait_status(index, "the peer is up", |s| {
                s["nodes"].as_array().is_some_and(|nodes| {
                    nodes
                        .iter()
                        .any(|n| n["name"] == peer && n["status"] == "up")
                })
            })
            .expect("both nodes see each other");
    }

    let source = add_flood_source(&cluster).expect("the flood source");
    let status = cluster.status(0).expect("status");
    let cluster_id = u32::try_from(status["cluster_id"].as_u64().expect("cluster_id"))
        .expect("a 32-bit cluster id");
    let mut monitors = Vec::new();
    for node in &cluster.nodes {
        let mut command = Command::new("ip");
        command.args(["-o", "monitor", "address"]);
        monitors.push(
            cluster
                .lab
                .spawn(&node.netns, &format!("ipmon-{}", node.name), &command)
                .expect("ip monitor"),
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    let before = [
        cluster.status(0).expect("status"),
        cluster.status(1).expect("status"),
    ];

    let spec = FloodSpec {
        targets: cluster_targets(&cluster, HEARTBEAT_PORT),
        duration: FLOOD,
        threads: 2,
        forged_percent: 50,
        forgery: Forgery::claiming(cluster_id, &["lb1", "lb2"], 1),
    };
    let report = Flood::start(&source, &spec)
        .expect("start the flood")
        .wait()
        .expect("the flood");
    eprintln!(
        "flood: sent {} junk and {} forged packets in {:?} ({:.0} pps, {} send errors)",
        report.junk_sent,
        report.forged_sent,
        report.elapsed,
        report.rate_pps(),
        report.send_errors
    );
    assert!(report.junk_sent > 0 && report.forged_sent > 0, "{report:?}");

    // The cluster is as it was: lb1 alone holds the VIP, both see each other up.
    cluster
        .wait_sole_holder("lb1")
        .expect("lb1 still holds the VIP alone");
    cluster.wait_served_by("lb1").expect("lb1 still serves");
    let after = [
        cluster.status(0).expect("status"),
        cluster.status(1).expect("status"),
    ];
    let mut vip_changes = Vec::new();
    for monitor in &monitors {
        cluster
            .lab
            .stop(monitor, Duration::from_secs(3))
            .expect("stop ip monitor");
        let output = monitor.stdout().expect("ip monitor output");
        vip_changes.extend(
            output
                .lines()
                .filter(|line| line.contains(&format!("inet {VIP}/")))
                .map(|line| format!("{}: {line}", monitor.name())),
        );
    }
    assert!(
        vip_changes.is_empty(),
        "the VIP moved during the flood: {vip_changes:#?}{}",
        cluster.logs()
    );
    for (index, peer) in [(0, "lb2"), (1, "lb1")] {
        assert_eq!(
            deaths(&after[index], peer),
            deaths(&before[index], peer),
            "{} declared {peer} dead during the flood{}",
            cluster.nodes[index].name,
            cluster.logs()
        );
    }

    // Every node saw the flood, and its receive path and authentication account for it.
    let mut forged_rejected = 0;
    let mut dropped = 0;
    for index in 0..2 {
        let name = &cluster.nodes[index].name;
        let (b, a) = (&before[index], &after[index]);
        let rejected = auth_failures(a) - auth_failures(b);
        let accepted = growth(b, a, "accepted");
        let drops = shape_drops(b, a);
        eprintln!(
            "{name} ({}): accepted {accepted}, dropped by shape {drops}, auth failures \
             {rejected}, counters {:?}",
            a["rx_path"],
            rx_counters(a)
        );
        assert!(drops > 0, "{name}'s receive path dropped no junk");
        assert!(rejected > 0, "{name}'s agent rejected no forged heartbeat");
        // Forged heartbeats claiming the peer pass the shape checks ("accepted" by the
        // receive path) and are then refused by the MAC check; never the other way round.
        assert!(
            accepted >= rejected,
            "{name}: {rejected} auth failures but only {accepted} packets accepted by the \
             receive path"
        );
        forged_rejected += rejected;
        dropped += drops;
    }
    // Nothing is counted that was not sent.
    assert!(
        forged_rejected <= report.forged_sent,
        "{forged_rejected} auth failures, {} forged packets sent",
        report.forged_sent
    );
    assert!(
        dropped <= report.sent(),
        "{dropped} shape drops, {} packets sent",
        report.sent()
    );
}
