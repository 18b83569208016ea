//! The running agent as systemd and Prometheus see it: the sd_notify messages it sends
//! (READY=1, WATCHDOG=1 from the decision loop, RELOADING=1/READY=1 around a SIGHUP,
//! STOPPING=1), its metrics endpoint, and ha.cf's `logfile`/`debugfile`.
//!
//! First one node in a namespace of its own, its peer configured but never started: initdead
//! passes, the peer is declared dead, the node takes the group. Then a two-node cluster
//! whose holder dies: the survivor's metrics show the failover and its durations. The notification socket is a
//! real datagram socket standing in for systemd's. Privileged (namespaces); skipped, saying
//! so, without root.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hb_tests::cluster::SETTLE;
use hb_tests::{http_get, require_root, wait_for, Cluster, ClusterSpec, Lab, Signal};

const NODE_ADDR: &str = "198.18.5.1";
const METRICS_PORT: u16 = 9694;
const VIP: &str = "198.18.5.10";

/// Messages received on the fake notification socket, with when they came.
struct FakeSystemd {
    socket: UnixDatagram,
    path: PathBuf,
    received: Vec<(Instant, String)>,
}

impl FakeSystemd {
    fn bind(dir: &Path) -> FakeSystemd {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("binding the notification socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        FakeSystemd {
            socket,
            path,
            received: Vec::new(),
        }
    }

    /// Reads messages until one satisfies `want`, or `timeout`; returns it.
    fn wait(&mut self, timeout: Duration, want: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        if let Some((_, found)) = self.received.iter().find(|(_, m)| want(m)) {
            return Some(found.clone());
        }
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.received.push((Instant::now(), message.clone()));
                if want(&message) {
                    return Some(message);
                }
            }
        }
        None
    }

    fn count(&self, message: &str) -> usize {
        self.received.iter().filter(|(_, m)| m == message).count()
    }

    fn transcript(&self) -> String {
        self.received
            .iter()
            .map(|(_, m)| m.replace('\n', "\\n"))
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

fn write_config(dir: &Path, logs: &Path) {
    fs::create_dir_all(dir).unwrap();
    fs::write(
        dir.join("ha.cf"),
        format!(
            "keepalive 50ms\ndeadtime 500ms\nwarntime 250ms\ninitdead 1\n\
             udpport 694\nucast eth1 198.18.5.1\nucast eth1 198.18.5.2\n\
             xdp off\nauto_failback on\n\
             metrics {NODE_ADDR}:{METRICS_PORT}\n\
             logfile {}\ndebugfile {}\n\
             node n1 n2\n",
            logs.join("ha-log").display(),
            logs.join("ha-debug").display(),
        ),
    )
    .unwrap();
    fs::write(
        dir.join("haresources"),
        format!("n1 IPaddr2::{VIP}/24/eth1\n"),
    )
    .unwrap();
    let authkeys = dir.join("authkeys");
    fs::write(&authkeys, format!("auth 1\n1 sha1 {}\n", "4f".repeat(32))).unwrap();
    fs::set_permissions(&authkeys, fs::Permissions::from_mode(0o600)).unwrap();
}

fn scrape(lab: &Lab, netns: &hb_tests::Netns) -> Option<String> {
    let addr = format!("{NODE_ADDR}:{METRICS_PORT}").parse().unwrap();
    let response = lab
        .in_netns(netns, move || {
            http_get(addr, "/metrics", Duration::from_secs(2))
        })
        .ok()?
        .ok()?;
    (response.status == 200).then_some(response.body)
}

/// The value of the sample `series` (name with labels, exactly as rendered).
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[test]
fn notify_watchdog_reload_metrics_and_log_files() {
    if !require_root("notify_watchdog_reload_metrics_and_log_files") {
        return;
    }
    let lab = Lab::new("ops_agent").expect("lab");
    let switch = lab.add_netns("sw").expect("switch namespace");
    let bridge = lab.add_bridge(&switch, "br0").expect("bridge");
    let node = lab.add_netns("n1").expect("node namespace");
    lab.connect(&node, "eth1", &bridge).expect("cable");
    lab.add_address(&node, "eth1", &format!("{NODE_ADDR}/24"))
        .expect("address");

    let root = lab.temp_subdir("n1").expect("node directory");
    let config = root.join("ha.d");
    let logs = root.join("log");
    fs::create_dir_all(&logs).unwrap();
    write_config(&config, &logs);
    let mut systemd = FakeSystemd::bind(&root);

    let mut command = Command::new(hb_tests::agent_binary().expect("hb-agent binary"));
    command
        .arg("run")
        .arg("--config-dir")
        .arg(&config)
        .arg("--node")
        .arg("n1")
        .arg("--state-dir")
        .arg(root.join("state"))
        .arg("--control-socket")
        .arg(root.join("ctl.sock"))
        .arg("--bpf-pin-root")
        .arg(lab.bpf_pin_dir("n1").expect("pin dir"))
        .env("HB_LOG", "info")
        .env("NOTIFY_SOCKET", &systemd.path)
        // Pings expected every 500 ms.
        .env("WATCHDOG_USEC", "1000000");
    let agent = lab.spawn(&node, "n1-agent", &command).expect("agent");
    let log = || agent.log_tail(40);

    // READY=1 once it receives heartbeats.
    let ready = systemd.wait(Duration::from_secs(10), |m| {
        m.lines().any(|l| l == "READY=1")
    });
    assert!(
        ready.is_some(),
        "no READY=1: {}\n{}",
        systemd.transcript(),
        log()
    );

    // The decision loop feeds the watchdog: at least 4 pings in 3 s (one per 500 ms).
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        systemd.wait(Duration::from_millis(200), |_| false);
    }
    let pings = systemd.count("WATCHDOG=1");
    assert!(
        (4..=20).contains(&pings),
        "{pings} watchdog pings in 3 s: {}",
        systemd.transcript()
    );

    // initdead passed, n2 is dead, n1 holds the group: all visible in the metrics.
    let body = wait_for(Duration::from_secs(10), Duration::from_millis(200), || {
        scrape(&lab, &node).filter(|b| {
            b.lines()
                .any(|l| l.starts_with("hb_group_held{") && l.ends_with(" 1"))
        })
    });
    let body = body.unwrap_or_else(|| panic!("no metrics with the group held\n{}", log()));
    assert_eq!(
        sample(&body, "hb_node_up{node=\"n1\"}"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "hb_node_up{node=\"n2\"}"),
        Some(0.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "hb_node_last_heard_age_seconds{node=\"n2\"}"),
        Some(f64::INFINITY),
        "{body}"
    );
    assert!(sample(&body, "hb_heartbeats_sent_total").is_some_and(|v| v > 0.0));
    assert_eq!(sample(&body, "hb_xdp_active"), Some(0.0));
    assert!(body.contains("# TYPE hb_heartbeat_interarrival_seconds histogram"));
    assert!(body.contains("hb_rx_packets_total{reason=\"drop_bad_magic\"}"));

    // ha.cf's log files: created 0640, state changes in them.
    let ha_log = logs.join("ha-log");
    let mode = fs::metadata(&ha_log).expect("ha-log").permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    let text = fs::read_to_string(&ha_log).unwrap();
    assert!(text.contains("n2"), "ha-log:\n{text}");
    assert!(logs.join("ha-debug").is_file());

    // SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1 again; the agent keeps running.
    let ready_before = systemd.count("READY=1");
    lab.signal(&agent, Signal::SIGHUP).expect("SIGHUP");
    let reloading = systemd.wait(Duration::from_secs(5), |m| {
        m.lines().any(|l| l == "RELOADING=1")
    });
    let reloading =
        reloading.unwrap_or_else(|| panic!("no RELOADING=1: {}\n{}", systemd.transcript(), log()));
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading}"
    );
    let ready_again = wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
        systemd.wait(Duration::from_millis(50), |_| false);
        (systemd.count("READY=1") > ready_before).then_some(())
    });
    assert!(
        ready_again.is_some(),
        "no READY=1 after the reload: {}",
        systemd.transcript()
    );
    assert!(
        lab.is_running(&agent).unwrap(),
        "SIGHUP ended the agent\n{}",
        log()
    );

    // SIGTERM: STOPPING=1, then a clean exit.
    lab.signal(&agent, Signal::SIGTERM).expect("SIGTERM");
    let stopping = systemd.wait(Duration::from_secs(10), |m| {
        m.lines().any(|l| l == "STOPPING=1")
    });
    assert!(
        stopping.is_some(),
        "no STOPPING=1: {}\n{}",
        systemd.transcript(),
        log()
    );
    // A second SIGTERM would make it exit at once: wait for it to finish on its own.
    let exited = hb_tests::wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
        !lab.is_running(&agent).unwrap_or(false)
    });
    assert!(exited, "the agent did not exit after SIGTERM\n{}", log());
    let status = lab
        .stop(&agent, Duration::from_secs(5))
        .expect("agent exit");
    assert!(status.success(), "agent exited with {status}\n{}", log());
}

/// The first sample whose series starts with `prefix` (name and labels up to there).
fn sample_starting(body: &str, prefix: &str) -> Option<f64> {
    body.lines()
        .filter(|line| line.starts_with(prefix))
        .find_map(|line| line.rsplit_once(' ')?.1.parse().ok())
}

#[test]
fn a_failover_shows_in_the_survivors_metrics_with_its_durations() {
    if !require_root("a_failover_shows_in_the_survivors_metrics_with_its_durations") {
        return;
    }
    let spec = ClusterSpec {
        extra_ha_cf: format!("metrics 0.0.0.0:{METRICS_PORT}\n"),
        ..ClusterSpec::default()
    };
    let deadtime_s = 0.2; // the spec's deadtime, 200ms
    let mut cluster = Cluster::new("ops_failover", spec).expect("cluster");
    cluster.start_all().expect("agents");
    cluster.wait_sole_holder("lb1").expect("lb1 holds the VIP");

    let survivor = &cluster.nodes[1];
    let addr = std::net::SocketAddr::from((survivor.svc_addr, METRICS_PORT));
    let scrape_survivor = |cluster: &Cluster| -> Option<String> {
        let response = cluster
            .lab
            .in_netns(&cluster.nodes[1].netns, move || {
                http_get(addr, "/metrics", Duration::from_secs(2))
            })
            .ok()?
            .ok()?;
        (response.status == 200).then_some(response.body)
    };
    // lb2 must have heard lb1 holding the group for a while, or lb1's death is only the end
    // of initdead for it, not a failover.
    let heard = wait_for(SETTLE, Duration::from_millis(200), || {
        scrape_survivor(&cluster).filter(|body| {
            sample(body, "hb_node_heartbeats_received_total{node=\"lb1\"}")
                .is_some_and(|n| n >= 20.0)
        })
    });
    assert!(
        heard.is_some(),
        "lb2 never heard lb1 steadily\n{}",
        cluster.logs()
    );

    cluster.power_off(0).expect("lb1 dies");
    cluster.wait_sole_holder("lb2").expect("lb2 takes over");

    let body = wait_for(Duration::from_secs(10), Duration::from_millis(200), || {
        scrape_survivor(&cluster)
            .filter(|body| sample_starting(body, "hb_failovers_total{") == Some(1.0))
    });
    let body = body.unwrap_or_else(|| panic!("no failover in lb2's metrics\n{}", cluster.logs()));
    let detection = sample_starting(&body, "hb_failover_detection_seconds_sum{").unwrap();
    let takeover = sample_starting(&body, "hb_failover_takeover_seconds_sum{").unwrap();
    // Detection is the silence before the death was declared: at least deadtime, and
    // nowhere near the settle bound on a quiet machine.
    assert!(
        (deadtime_s..5.0).contains(&detection),
        "detection {detection} s\n{body}"
    );
    assert!(
        (0.0..SETTLE.as_secs_f64()).contains(&takeover),
        "takeover {takeover} s"
    );
    assert_eq!(
        sample_starting(&body, "hb_last_failover_detection_seconds{"),
        Some(detection)
    );
    assert_eq!(
        sample(&body, "hb_node_up{node=\"lb1\"}"),
        Some(0.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "hb_node_deaths_total{node=\"lb1\"}"),
        Some(1.0),
        "{body}"
    );
    // lb1's heartbeats came every 20 ms (keepalive): nearly all gaps are under 100 ms.
    let gaps = sample(
        &body,
        "hb_heartbeat_interarrival_seconds_count{node=\"lb1\"}",
    )
    .unwrap();
    let short = sample(
        &body,
        "hb_heartbeat_interarrival_seconds_bucket{node=\"lb1\",le=\"0.1\"}",
    )
    .unwrap();
    assert!(
        gaps >= 19.0 && short >= 0.9 * gaps,
        "{gaps} gaps, {short} under 100 ms"
    );
    assert!(
        body.lines().any(|l| l.starts_with("hb_group_holder{")
            && l.contains("node=\"lb2\"")
            && l.ends_with(" 1")),
        "{body}"
    );
}
