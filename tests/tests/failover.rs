//! Failover scenarios with two real agents, real XDP, real nginx, real ARP (issue 4).
//!
//! Every scenario asserts from the client's side (HTTP to the VIP, and the client's ARP
//! entry for the VIP) and from `hb-agent status --json`. Timings are not asserted here:
//! the bounds are generous; `cargo xtask bench` measures.

mod common;

use std::time::Duration;

use hb_tests::cluster::{Cluster, ClusterSpec, SETTLE, VIP};
use hb_tests::probe::{ProbeSettings, Prober};
use hb_tests::{require_root, wait_until};
use serde_json::Value;

use common::{cluster, cluster_keys, group_holder, node_status, wrong_keys};

/// Both nodes up; lb1 (preferred) serves.
fn settle_on_lb1(cluster: &Cluster) {
    cluster
        .wait_sole_holder("lb1")
        .expect("lb1 acquires the VIP");
    cluster
        .wait_served_by("lb1")
        .expect("the client is served by lb1");
    cluster
        .wait_status(1, "lb2 sees lb1 up and holding the group", |s| {
            node_status(s, "lb1").as_deref() == Some("up")
                && group_holder(s).as_deref() == Some("lb1")
        })
        .expect("lb2's view");
    assert!(cluster.nginx_running(0), "lb1 started nginx after the VIP");
    assert!(!cluster.nginx_running(1), "lb2 runs no nginx while passive");
}

fn assert_client_arp_points_at(cluster: &Cluster, index: usize) {
    let mac = cluster.service_mac(index).expect("node MAC");
    let ok = wait_until(SETTLE, Duration::from_millis(20), || {
        cluster.client_vip_mac().ok().flatten().as_deref() == Some(mac.as_str())
    });
    assert!(
        ok,
        "client's ARP entry for {VIP} should point at {} ({mac}), is {:?}",
        cluster.nodes[index].name,
        cluster.client_vip_mac()
    );
}

#[test]
fn node_death_takeover_and_failback() {
    if !require_root("node_death_takeover_and_failback") {
        return;
    }
    let mut cluster = cluster("death", ClusterSpec::default());
    settle_on_lb1(&cluster);
    let status = cluster.status(0).unwrap();
    assert_eq!(
        status["rx_path"], "xdp",
        "XDP is used when available: {status:#}"
    );

    // lb1 loses every link at the switch.
    cluster.set_connected(0, false).unwrap();
    cluster.wait_served_by("lb2").expect("lb2 takes over");
    // ... and then really dies (as a reboot would, it comes back holding nothing).
    cluster.power_off(0).unwrap();
    assert_client_arp_points_at(&cluster, 1);
    let status = cluster
        .wait_status(1, "lb2 declares lb1 dead and holds the group", |s| {
            node_status(s, "lb1").as_deref() == Some("dead")
                && group_holder(s).as_deref() == Some("lb2")
        })
        .unwrap();
    assert_eq!(status["groups"][0]["phase"], "held");
    assert!(cluster.nginx_running(1), "lb2 started nginx");
    let log = cluster.agent_log(1);
    assert!(
        log.contains("node lb1: is dead"),
        "Heartbeat's wording in the log:\n{log}"
    );

    // lb1 comes back: auto_failback on hands the group back, one holder at a time.
    cluster.power_on(0).unwrap();
    cluster.wait_sole_holder("lb1").expect("failback to lb1");
    cluster.wait_served_by("lb1").expect("served by lb1 again");
    assert_client_arp_points_at(&cluster, 0);
    cluster
        .wait_status(1, "lb2 released", |s| s["groups"][0]["phase"] == "released")
        .unwrap();
    assert!(
        wait_until(SETTLE, Duration::from_millis(20), || !cluster
            .nginx_running(1)),
        "lb2 stopped its nginx"
    );
}

#[test]
fn no_failback_with_auto_failback_off() {
    if !require_root("no_failback_with_auto_failback_off") {
        return;
    }
    let spec = ClusterSpec {
        auto_failback: "off".into(),
        ..ClusterSpec::default()
    };
    let mut cluster = cluster("nofailback", spec);
    settle_on_lb1(&cluster);
    cluster.power_off(0).unwrap();
    cluster.wait_served_by("lb2").expect("lb2 takes over");
    cluster.power_on(0).unwrap();
    cluster
        .wait_status(0, "lb1 sees lb2 holding", |s| {
            node_status(s, "lb2").as_deref() == Some("up")
                && group_holder(s).as_deref() == Some("lb2")
        })
        .unwrap();
    // Give a failback every chance to (wrongly) happen.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(cluster.vip_holders().unwrap(), vec!["lb2".to_owned()]);
    cluster.wait_served_by("lb2").unwrap();
}

#[test]
fn clean_stop_hands_over_at_once() {
    if !require_root("clean_stop_hands_over_at_once") {
        return;
    }
    // A long deadtime: a takeover within it can only come from the "leaving" message.
    let spec = ClusterSpec {
        deadtime: "10".into(),
        warntime: "5".into(),
        initdead: "20".into(),
        ..ClusterSpec::default()
    };
    let mut cluster = cluster("cleanstop", spec);
    settle_on_lb1(&cluster);
    let status = cluster.stop(0).unwrap();
    assert!(status.success(), "clean stop exits 0: {status}");
    assert!(
        !cluster.nginx_running(0),
        "lb1 stopped nginx on the way out"
    );
    let started = std::time::Instant::now();
    cluster.wait_served_by("lb2").expect("lb2 takes over");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "takeover came from the leaving message, not deadtime (took {:?})",
        started.elapsed()
    );
    let status = cluster.status(1).unwrap();
    assert_eq!(node_status(&status, "lb1").as_deref(), Some("left"));
    assert_eq!(cluster.vip_holders().unwrap(), vec!["lb2".to_owned()]);
}

#[test]
fn agent_restart_is_recognised_without_double_ownership() {
    if !require_root("agent_restart_is_recognised_without_double_ownership") {
        return;
    }
    let spec = ClusterSpec {
        auto_failback: "off".into(),
        ..ClusterSpec::default()
    };
    let mut cluster = cluster("restart", spec);
    settle_on_lb1(&cluster);
    let before = cluster.status(1).unwrap();
    let generation = |s: &Value| {
        s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == "lb1")
            .unwrap()["generation"]
            .as_u64()
    };
    let old_generation = generation(&before);
    cluster.stop(0).unwrap();
    cluster.wait_sole_holder("lb2").unwrap();
    cluster.start(0).unwrap();
    let after = cluster
        .wait_status(1, "lb2 sees lb1's new generation", |s| {
            node_status(s, "lb1").as_deref() == Some("up") && generation(s) > old_generation
        })
        .unwrap();
    assert!(generation(&after) > old_generation);
    assert!(
        cluster
            .agent_log(1)
            .contains("heartbeat restart on node lb1"),
        "{}",
        cluster.agent_log(1)
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        cluster.vip_holders().unwrap(),
        vec!["lb2".to_owned()],
        "auto_failback off: lb2 keeps it"
    );
}

#[test]
fn partition_heals_to_exactly_one_holder() {
    if !require_root("partition_heals_to_exactly_one_holder") {
        return;
    }
    let cluster = cluster("partition", ClusterSpec::default());
    settle_on_lb1(&cluster);
    // Cut both heartbeat paths between the nodes but keep lb1 and lb2 on the service LAN
    // for the client: the heartbeat link, and heartbeats on eth0 by taking lb2's eth0 down.
    cluster.set_link(0, "eth1", false).unwrap();
    cluster.set_link(1, "eth1", false).unwrap();
    cluster.set_link(1, "eth0", false).unwrap();
    assert!(
        wait_until(SETTLE, Duration::from_millis(20), || cluster
            .vip_holders()
            .unwrap_or_default()
            .len()
            == 2),
        "both sides hold the VIP during the partition: {:?}{}",
        cluster.vip_holders(),
        cluster.logs()
    );
    cluster.set_link(0, "eth1", true).unwrap();
    cluster.set_link(1, "eth1", true).unwrap();
    cluster.set_link(1, "eth0", true).unwrap();
    cluster
        .wait_sole_holder("lb1")
        .expect("the preferred node keeps it");
    cluster.wait_served_by("lb1").unwrap();
    assert_client_arp_points_at(&cluster, 0);
    let logs = cluster.logs();
    assert!(
        logs.contains("split brain"),
        "the split brain is logged:\n{logs}"
    );
}

#[test]
fn one_link_cut_is_no_failover() {
    if !require_root("one_link_cut_is_no_failover") {
        return;
    }
    let cluster = cluster("onelink", ClusterSpec::default());
    settle_on_lb1(&cluster);
    cluster.set_link(0, "eth1", false).unwrap();
    let status = cluster
        .wait_status(1, "lb2 reports the link lb1:eth1 dead", |s| {
            s["links"].as_array().is_some_and(|links| {
                links
                    .iter()
                    .any(|l| l["node"] == "lb1" && l["iface"] == "eth1" && l["status"] == "dead")
            })
        })
        .unwrap();
    assert_eq!(node_status(&status, "lb1").as_deref(), Some("up"));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(cluster.vip_holders().unwrap(), vec!["lb1".to_owned()]);
    assert!(cluster.agent_log(1).contains("Link lb1:eth1 dead."));
}

#[test]
fn standby_and_takeover_move_the_group() {
    if !require_root("standby_and_takeover_move_the_group") {
        return;
    }
    let cluster = cluster("standby", ClusterSpec::default());
    settle_on_lb1(&cluster);
    cluster.control(0, "standby").unwrap();
    cluster.wait_sole_holder("lb2").expect("standby hands over");
    cluster.wait_served_by("lb2").unwrap();
    cluster.control(0, "takeover").unwrap();
    cluster
        .wait_sole_holder("lb1")
        .expect("takeover takes it back");
    cluster.wait_served_by("lb1").unwrap();
}

#[test]
fn failing_resource_is_rolled_back_and_peer_takes_over() {
    if !require_root("failing_resource_is_rolled_back_and_peer_takes_over") {
        return;
    }
    let spec = ClusterSpec {
        resources: format!("IPaddr::{VIP}/24/eth0 nginx flaky"),
        scripts: vec![
            vec![(
                "flaky".into(),
                "echo \"flaky cannot start here ($1)\" >&2; [ \"$1\" = start ] && exit 1; exit 0"
                    .into(),
            )],
            vec![("flaky".into(), "exit 0".into())],
        ],
        ..ClusterSpec::default()
    };
    let cluster = cluster("rollback", spec);
    cluster
        .wait_sole_holder("lb2")
        .expect("lb2 runs the group lb1 cannot");
    cluster.wait_served_by("lb2").unwrap();
    let status = cluster
        .wait_status(0, "lb1 reports the group failed here", |s| {
            s["groups"][0]["failed_here"] == true
        })
        .unwrap();
    assert_eq!(status["groups"][0]["phase"], "released");
    assert!(!cluster.nginx_running(0), "lb1 rolled nginx back");
    let log = cluster.agent_log(0);
    assert!(
        log.contains("flaky cannot start here (start)"),
        "the script's output is logged:\n{log}"
    );
    assert!(log.contains("rolled back"), "{log}");
}

#[test]
fn socket_mode_fails_over_too() {
    if !require_root("socket_mode_fails_over_too") {
        return;
    }
    let spec = ClusterSpec {
        xdp: "off".into(),
        ..ClusterSpec::default()
    };
    let cluster = cluster("sockets", spec);
    settle_on_lb1(&cluster);
    assert_eq!(cluster.status(0).unwrap()["rx_path"], "socket");
    cluster.set_connected(0, false).unwrap();
    cluster.wait_served_by("lb2").expect("lb2 takes over");
    assert_client_arp_points_at(&cluster, 1);
}

#[test]
fn forged_and_replayed_heartbeats_cannot_keep_a_dead_node_alive() {
    if !require_root("forged_and_replayed_heartbeats_cannot_keep_a_dead_node_alive") {
        return;
    }
    use hb_agent::wire::{build, Authenticator, Header};
    use hb_common::wire::{node_id, MessageKind, NodeState};

    let mut cluster = cluster("forged", ClusterSpec::default());
    settle_on_lb1(&cluster);
    let status = cluster.status(1).unwrap();
    let cluster_id = status["cluster_id"].as_u64().unwrap() as u32;
    let lb1 = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "lb1")
        .unwrap()
        .clone();
    let generation = lb1["generation"].as_u64().unwrap();
    let real = Authenticator::new(&cluster_keys(&cluster)).unwrap();
    let wrong = Authenticator::new(&wrong_keys()).unwrap();
    let header = |generation| Header {
        cluster_id,
        node_id: node_id(b"lb1"),
        generation,
        keepalive_us: 20_000,
    };
    let packets: Vec<Vec<u8>> = (0..3)
        .map(|kind| {
            let (auth, generation, seq) = match kind {
                // Right shape, wrong key, a sequence far ahead.
                0 => (&wrong, generation, u64::MAX / 2),
                // The real key, lb1's generation, an old sequence: a replay.
                1 => (&real, generation, 1),
                // The real key, an older generation: a replay from before lb1's restart.
                _ => (&real, generation - 1, u64::MAX / 2),
            };
            let mut packet = build(
                &header(generation),
                MessageKind::Heartbeat,
                NodeState::Active,
                seq,
                1,
                0,
                0,
            );
            auth.seal(&mut packet);
            bytemuck::bytes_of(&packet).to_vec()
        })
        .collect();

    // lb1 dies; the client floods lb2 with lb1's forged and replayed heartbeats meanwhile.
    cluster.power_off(0).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let target = std::net::SocketAddr::from((cluster.nodes[1].svc_addr, 694));
    std::thread::scope(|scope| {
        let flood = scope.spawn(|| {
            cluster
                .lab
                .in_netns(&cluster.client, || {
                    let socket = std::net::UdpSocket::bind("198.18.1.100:0").unwrap();
                    let mut sent = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        for packet in &packets {
                            let _ = socket.send_to(packet, target);
                            sent += 1;
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    sent
                })
                .unwrap()
        });
        let outcome = cluster.wait_served_by("lb2");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sent = flood.join().unwrap();
        outcome.expect("lb2 takes over although lb1's packets keep coming");
        assert!(sent > 30, "the flood ran ({sent} packets)");
    });
    let status = cluster
        .wait_status(1, "lb1 dead, forgeries counted", |s| {
            node_status(s, "lb1").as_deref() == Some("dead")
                && s["counters"]["auth_failures"].as_u64() > Some(10)
                && s["counters"]["replays"].as_u64() > Some(10)
        })
        .unwrap();
    assert_eq!(group_holder(&status).as_deref(), Some("lb2"));
}

#[test]
fn running_agent_is_inspectable_with_bpftool() {
    if !require_root("running_agent_is_inspectable_with_bpftool") {
        return;
    }
    let cluster = cluster("bpftool", ClusterSpec::default());
    settle_on_lb1(&cluster);
    let lb1 = &cluster.nodes[0];
    let net = cluster
        .lab
        .bpftool_json_in(&lb1.netns, &["net", "show"])
        .unwrap();
    let xdp = net[0]["xdp"].as_array().unwrap();
    for iface in ["eth0", "eth1"] {
        let entry = xdp
            .iter()
            .find(|x| x["devname"] == iface)
            .unwrap_or_else(|| panic!("{iface}: {net:#}"));
        assert_eq!(entry["mode"], "driver", "{net:#}");
        let id = entry["id"].as_u64().unwrap().to_string();
        let prog = hb_tests::bpftool_json(&["prog", "show", "id", &id]).unwrap();
        assert_eq!(prog["name"], "hb_xdp", "{prog:#}");
        assert_eq!(prog["type"], "xdp", "{prog:#}");
    }

    let peers = lb1.pin_root.join("lb1/v1/HB_PEERS");
    let peers = peers.to_str().unwrap();
    let last_seen = || {
        let dump = hb_tests::bpftool_json(&["map", "dump", "pinned", peers]).unwrap();
        let entry = &dump.as_array().unwrap()[0];
        entry["formatted"]["value"]["last_seen_ns"]
            .as_u64()
            .unwrap_or_else(|| panic!("named fields: {dump:#}"))
    };
    let first = last_seen();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        last_seen() > first,
        "lb2's last-seen time advances in the pinned map"
    );
}

#[test]
fn removed_vip_is_put_back_and_refreshed() {
    if !require_root("removed_vip_is_put_back_and_refreshed") {
        return;
    }
    let spec = ClusterSpec {
        extra_ha_cf: "garp_refresh 1\n".into(),
        ..ClusterSpec::default()
    };
    let cluster = cluster("vipwatch", spec);
    settle_on_lb1(&cluster);

    // Someone removes the VIP by hand on the active node: the agent puts it back.
    cluster
        .lab
        .ip(
            &cluster.nodes[0].netns,
            &["addr", "del", &format!("{VIP}/24"), "dev", "eth0"],
        )
        .unwrap();
    assert!(
        wait_until(SETTLE, Duration::from_millis(20), || cluster
            .agent_log(0)
            .contains("disappeared")),
        "the removal is noticed:{}",
        cluster.logs()
    );
    cluster
        .wait_sole_holder("lb1")
        .expect("the VIP is back on lb1");
    cluster.wait_served_by("lb1").unwrap();

    // A client whose ARP entry went wrong is corrected by the periodic refresh (after the
    // re-add's own announcements, 5 x 200 ms, are over).
    std::thread::sleep(Duration::from_millis(1500));
    let vip = VIP.to_string();
    cluster
        .lab
        .ip(
            &cluster.client,
            &[
                "neigh",
                "replace",
                &vip,
                "lladdr",
                "02:00:00:00:00:99",
                "dev",
                "eth0",
                "nud",
                "stale",
            ],
        )
        .unwrap();
    assert_client_arp_points_at(&cluster, 0);
}

#[test]
fn dead_service_is_restarted_once_then_handed_over() {
    if !require_root("dead_service_is_restarted_once_then_handed_over") {
        return;
    }
    let cluster = cluster("svcdeath", ClusterSpec::default());
    settle_on_lb1(&cluster);

    cluster.kill_nginx(0).unwrap();
    assert!(
        wait_until(SETTLE, Duration::from_millis(50), || cluster
            .nginx_running(0)),
        "lb1 restarts its nginx:{}",
        cluster.logs()
    );
    cluster.wait_served_by("lb1").unwrap();
    assert!(cluster.agent_log(0).contains("restarting it"));

    cluster.kill_nginx(0).unwrap();
    cluster
        .wait_sole_holder("lb2")
        .expect("the second death hands the group over");
    cluster.wait_served_by("lb2").unwrap();
    let status = cluster
        .wait_status(0, "lb1 reports the group failed here", |s| {
            s["groups"][0]["failed_here"] == true
        })
        .unwrap();
    assert_eq!(status["groups"][0]["phase"], "released");
}

/// SIGHUP applies new timers, keys and resources live: the VIP, which stays configured,
/// never leaves lb1 and the client, probing all along, sees no failed request; an address
/// added to the group appears, one removed goes; a change that needs a restart is refused
/// whole.
#[test]
fn reload_applies_changes_without_a_failed_request() {
    if !require_root("reload_applies_changes_without_a_failed_request") {
        return;
    }
    let cluster = cluster("reload-live", ClusterSpec::default());
    settle_on_lb1(&cluster);
    let prober = Prober::start(
        &cluster.client,
        ProbeSettings {
            target: std::net::SocketAddr::from((VIP, 80)),
            interval: Duration::from_millis(10),
            // Generous: a loaded CI machine must not turn a slow answer into a failure.
            timeout: Duration::from_millis(500),
        },
    )
    .expect("start the client's probe");
    let extra = "198.18.1.20";
    let has_extra = |index: usize| {
        cluster
            .lab
            .ip(
                &cluster.nodes[index].netns,
                &["-4", "-o", "addr", "show", "dev", "eth0"],
            )
            .unwrap()
            .contains(&format!("inet {extra}/"))
    };
    let rewrite = |keepalive: &str, deadtime: &str, resources: &str| {
        for node in &cluster.nodes {
            let dir = &node.config_dir;
            let ha_cf = std::fs::read_to_string(dir.join("ha.cf")).unwrap();
            let ha_cf: String = ha_cf
                .lines()
                .map(|line| match line.split_whitespace().next() {
                    Some("keepalive") => format!("keepalive {keepalive}\n"),
                    Some("deadtime") => format!("deadtime {deadtime}\n"),
                    _ => format!("{line}\n"),
                })
                .collect();
            std::fs::write(dir.join("ha.cf"), ha_cf).unwrap();
            std::fs::write(dir.join("haresources"), format!("lb1 {resources}\n")).unwrap();
        }
    };
    let hup_both = |expect: &str| {
        let before: Vec<usize> = (0..2)
            .map(|i| cluster.agent_log(i).matches(expect).count())
            .collect();
        for node in cluster.nodes.iter().rev() {
            let agent = node.agent.clone().unwrap();
            cluster
                .lab
                .signal(&agent, hb_tests::Signal::SIGHUP)
                .unwrap();
        }
        for (index, count) in before.into_iter().enumerate() {
            assert!(
                wait_until(SETTLE, Duration::from_millis(20), || {
                    cluster.agent_log(index).matches(expect).count() > count
                }),
                "lb{} did not log {expect:?}:\n{}",
                index + 1,
                cluster.logs()
            );
        }
    };

    // Faster timers and a second address in the group.
    rewrite(
        "10ms",
        "150ms",
        &format!("IPaddr::{VIP}/24/eth0 IPaddr::{extra}/24/eth0 nginx"),
    );
    hup_both("reload: applied");
    assert!(
        wait_until(SETTLE, Duration::from_millis(20), || has_extra(0)),
        "the added address is on lb1:\n{}",
        cluster.logs()
    );
    assert!(!has_extra(1), "lb2 holds nothing");
    let status = cluster.status(0).unwrap();
    assert_eq!(status["timers_ms"][0], 10.0, "{status:#}");
    assert_eq!(status["timers_ms"][1], 150.0, "{status:#}");

    // A change only a restart can apply: refused whole.
    for node in &cluster.nodes {
        let path = node.config_dir.join("ha.cf");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("xdp auto", "xdp off")).unwrap();
    }
    hup_both("applies only at restart");
    assert_eq!(cluster.status(0).unwrap()["timers_ms"][0], 10.0);
    for node in &cluster.nodes {
        let path = node.config_dir.join("ha.cf");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("xdp off", "xdp auto")).unwrap();
    }

    // Back to the first timers and the address removed again.
    rewrite("20ms", "200ms", &format!("IPaddr::{VIP}/24/eth0 nginx"));
    hup_both("reload: applied");
    assert!(
        wait_until(SETTLE, Duration::from_millis(20), || !has_extra(0)),
        "the removed address left lb1:\n{}",
        cluster.logs()
    );
    // A second of probing after the last change.
    std::thread::sleep(Duration::from_secs(1));
    let samples = prober.take();
    prober.stop();
    let failed: Vec<_> = samples.iter().filter(|s| !s.served_by("lb1")).collect();
    assert!(
        samples.len() > 100,
        "the probe ran: {} requests",
        samples.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {} requests were not answered by lb1 during the reloads: {:?}\n{}",
        failed.len(),
        samples.len(),
        failed.iter().take(5).collect::<Vec<_>>(),
        cluster.logs()
    );
    assert_eq!(cluster.vip_holders().unwrap(), vec!["lb1".to_owned()]);
    assert!(
        cluster.nginx_running(0),
        "nginx, which stayed in the group, kept running"
    );
}

/// `hb-agent status --watch` redraws the status in place every interval; with `--json` it
/// prints one JSON document per line.
#[test]
fn status_watch_refreshes() {
    if !require_root("status_watch_refreshes") {
        return;
    }
    let cluster = cluster("watch", ClusterSpec::default());
    settle_on_lb1(&cluster);
    let agent = cluster.agent_path().unwrap();
    let socket = cluster.nodes[0].control_socket.clone();
    let watch = |extra: &[&str]| -> String {
        let mut child = std::process::Command::new(&agent)
            .args([
                "status",
                "--watch",
                "--interval",
                "100ms",
                "--control-socket",
            ])
            .arg(&socket)
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start hb-agent status --watch");
        std::thread::sleep(Duration::from_millis(1500));
        // Our own child, ended by its PID.
        child.kill().expect("end the watch");
        let output = child
            .wait_with_output()
            .expect("collect the watch's output");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };

    let text = watch(&[]);
    let frames = text.matches("Every 0.1s: hb-agent status").count();
    assert!(frames >= 3, "{frames} frames in:\n{text}");
    assert!(text.contains("\x1b[H\x1b[2J"), "redrawn in place");
    assert!(text.contains("lb2"), "{text}");

    let json = watch(&["--json"]);
    let documents: Vec<Value> = json
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON document per line"))
        .collect();
    assert!(documents.len() >= 3, "{json}");
    assert!(documents.iter().all(|d| d["node"] == "lb1"), "{json}");
}

#[test]
fn reload_checks_the_configuration_and_keeps_serving() {
    if !require_root("reload_checks_the_configuration_and_keeps_serving") {
        return;
    }
    let cluster = cluster("reload", ClusterSpec::default());
    settle_on_lb1(&cluster);
    let agent = cluster.nodes[0].agent.clone().unwrap();
    let hup = || {
        cluster
            .lab
            .signal(&agent, hb_tests::Signal::SIGHUP)
            .unwrap()
    };
    let logged = |text: &str| {
        wait_until(SETTLE, Duration::from_millis(20), || {
            cluster.agent_log(0).contains(text)
        })
    };

    hup();
    assert!(
        logged("reload: configuration unchanged"),
        "{}",
        cluster.logs()
    );

    // A broken file: every error is logged and the agent keeps its running configuration.
    let ha_cf = cluster.nodes[0].config_dir.join("ha.cf");
    let good = std::fs::read_to_string(&ha_cf).unwrap();
    std::fs::write(&ha_cf, format!("{good}keepalive soon\n")).unwrap();
    hup();
    assert!(
        logged("still running the previous configuration"),
        "{}",
        cluster.logs()
    );
    assert!(
        cluster.agent_log(0).contains("keepalive soon"),
        "the bad line is quoted"
    );
    assert!(cluster.agent_running(0));
    cluster.wait_served_by("lb1").unwrap();
    assert_eq!(cluster.vip_holders().unwrap(), vec!["lb1".to_owned()]);
    std::fs::write(&ha_cf, good).unwrap();
}
