//! Self-test of the lab harness: it builds what it promises, and removes all of it afterwards —
//! on success, on panic, and for runs that were killed before they could clean up.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::ExitStatusExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hb_tests::lab::NETNS_RUN_DIR;
use hb_tests::names::{pid_alive, run_prefix};
use hb_tests::{require_root, wait_until, Lab, LabError, Signal};

const SETTLE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

/// Every `Lab::new` removes dead runs' leftovers; the test that fakes such leftovers holds this
/// while it builds them, so a lab created by a parallel test cannot remove them half-built.
static LAB_CREATION: Mutex<()> = Mutex::new(());

fn new_lab() -> Lab {
    let _creating = LAB_CREATION.lock().unwrap_or_else(PoisonError::into_inner);
    Lab::new("harness_selftest").expect("lab")
}

/// Everything on the machine that carries `prefix`: namespaces, temp dir, bpffs dir.
fn leftovers(prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let marked = |name: &str| name == prefix || name.starts_with(&format!("{prefix}-"));
    for dir in [
        Path::new(NETNS_RUN_DIR).to_path_buf(),
        std::env::temp_dir(),
        PathBuf::from(hb_tests::BPFFS_ROOT),
    ] {
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if marked(&name) {
                    found.push(dir.join(name).display().to_string());
                }
            }
        }
    }
    found
}

fn pids_in_netns(name: &str) -> Vec<u32> {
    let output = Command::new("ip")
        .args(["netns", "pids", name])
        .output()
        .expect("ip netns pids");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter_map(|word| word.parse().ok())
        .collect()
}

#[test]
fn two_nodes_ping_serve_http_and_lose_a_port() {
    if !require_root("two_nodes_ping_serve_http_and_lose_a_port") {
        return;
    }
    let lab = new_lab();
    let prefix = lab.prefix().to_owned();
    let switch = lab.add_netns("switch").unwrap();
    let bridge = lab.add_bridge(&switch, "br0").unwrap();
    let a = lab.add_netns("a").unwrap();
    let b = lab.add_netns("b").unwrap();
    let port_a = lab.connect(&a, "eth0", &bridge).unwrap();
    lab.connect(&b, "eth0", &bridge).unwrap();
    lab.add_address(&a, "eth0", "198.18.0.1/24").unwrap();
    lab.add_address(&b, "eth0", "198.18.0.2/24").unwrap();
    let ip_a = Ipv4Addr::new(198, 18, 0, 1);
    let ip_b = Ipv4Addr::new(198, 18, 0, 2);

    assert_eq!(port_a.node_ifname(), "eth0");
    assert_eq!(port_a.bridge(), "br0");
    assert!(
        wait_until(SETTLE, POLL, || lab
            .ping(&a, ip_b, Duration::from_secs(1))
            .unwrap()),
        "a cannot ping b across the bridge"
    );

    // A closure run in a namespace sees that namespace's addresses: binding b's address works
    // in b, and not in a.
    let bound_in_b = lab
        .in_netns(&b, || TcpListener::bind((ip_b, 0)).map(|_| ()))
        .unwrap();
    assert!(bound_in_b.is_ok(), "{bound_in_b:?}");
    let bound_in_a = lab
        .in_netns(&a, || TcpListener::bind((ip_b, 0)).map(|_| ()))
        .unwrap();
    assert!(bound_in_a.is_err(), "b's address must not exist in a");

    // After the ping, a has b's MAC in its neighbour table.
    let mac_b = lab.mac_address(&b, "eth0").unwrap();
    let neighbor = lab
        .neighbor(&a, ip_b)
        .unwrap()
        .expect("ARP entry for b in a");
    assert_eq!(neighbor.lladdr.as_deref(), Some(mac_b.as_str()));
    assert_eq!(neighbor.dev, "eth0");
    assert_eq!(
        lab.neighbor(&a, Ipv4Addr::new(198, 18, 0, 99)).unwrap(),
        None
    );

    // nginx in b, fetched from a.
    let listen = SocketAddr::from((ip_b, 80));
    let nginx = lab.start_nginx(&b, "web-b", listen).unwrap();
    let response = lab
        .http_get(&a, listen, "/", Duration::from_secs(2))
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body, "web-b\n");
    assert_eq!(response.body, nginx.body());
    let missing = lab
        .http_get(&a, listen, "/nothing-here", Duration::from_secs(2))
        .unwrap();
    assert_eq!(missing.status, 404);
    let nginx_pids = pids_in_netns(b.name());
    assert!(
        nginx_pids.contains(&nginx.process().pid()),
        "nginx master {} not among {nginx_pids:?}",
        nginx.process().pid()
    );
    assert!(
        nginx_pids.len() >= 2,
        "master and worker expected: {nginx_pids:?}"
    );

    // Node a "dies": its bridge port goes down; nothing reaches b any more.
    assert_eq!(lab.set_node_ports_up(&a, false).unwrap(), 1);
    assert!(!lab.ping(&a, ip_b, Duration::from_secs(1)).unwrap());
    assert!(lab
        .http_get(&a, listen, "/", Duration::from_millis(500))
        .is_err());
    // ... and it comes back.
    lab.set_port_up(&port_a, true).unwrap();
    assert!(
        wait_until(SETTLE, POLL, || lab
            .ping(&a, ip_b, Duration::from_secs(1))
            .unwrap()),
        "a cannot ping b after its port came back"
    );
    assert!(lab.ping(&b, ip_a, Duration::from_secs(1)).unwrap());

    let temp_dir = lab.temp_dir().to_owned();
    assert!(temp_dir.is_dir());
    assert!(!leftovers(&prefix).is_empty());
    drop(lab);

    assert_eq!(leftovers(&prefix), Vec::<String>::new());
    assert!(!temp_dir.exists());
    for pid in nginx_pids {
        assert!(!pid_alive(pid), "nginx process {pid} survived the lab");
    }
}

#[test]
fn processes_logs_signals_and_stop() {
    if !require_root("processes_logs_signals_and_stop") {
        return;
    }
    let lab = new_lab();
    let node = lab.add_netns("node").unwrap();

    let mut command = Command::new("sh");
    command
        .args(["-c", "echo \"out $GREETING\"; echo err >&2; exec sleep 600"])
        .env("GREETING", "hello");
    let sleeper = lab.spawn(&node, "sleeper", &command).unwrap();
    assert!(matches!(
        lab.spawn(&node, "sleeper", &command),
        Err(LabError::Duplicate { .. })
    ));
    assert!(wait_until(SETTLE, POLL, || {
        sleeper.stdout().unwrap_or_default() == "out hello\n"
            && sleeper.stderr().unwrap_or_default() == "err\n"
    }));
    assert!(sleeper.log().contains("out hello"));
    assert!(lab.is_running(&sleeper).unwrap());
    assert_eq!(pids_in_netns(node.name()), vec![sleeper.pid()]);

    let status = lab.stop(&sleeper, Duration::from_secs(5)).unwrap();
    assert_eq!(status.signal(), Some(Signal::SIGTERM as i32));
    assert!(!pid_alive(sleeper.pid()));
    assert!(matches!(
        lab.is_running(&sleeper),
        Err(LabError::UnknownProcess { .. })
    ));

    // A process that exits by itself stays tracked until stopped; its status is kept.
    let quick = lab
        .spawn(&node, "quick", Command::new("sh").args(["-c", "exit 7"]))
        .unwrap();
    assert!(wait_until(SETTLE, POLL, || !lab
        .is_running(&quick)
        .unwrap()));
    assert_eq!(
        lab.stop(&quick, Duration::from_secs(1)).unwrap().code(),
        Some(7)
    );

    // A process ignoring SIGTERM is killed after the grace period.
    let stubborn = lab
        .spawn(
            &node,
            "stubborn",
            Command::new("sh").args(["-c", "trap '' TERM; echo ready; while :; do sleep 1; done"]),
        )
        .unwrap();
    assert!(wait_until(SETTLE, POLL, || sleeper_ready(&stubborn)));
    lab.signal(&stubborn, Signal::SIGTERM).unwrap();
    assert!(lab.is_running(&stubborn).unwrap());
    let status = lab.stop(&stubborn, Duration::from_millis(300)).unwrap();
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));

    // exec runs inside the namespace: only lo exists there.
    let links = lab.exec(&node, &["ip", "-o", "link", "show"]).unwrap();
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo:"));
    let failed = lab.exec(&node, &["sh", "-c", "exit 3"]).unwrap_err();
    assert!(matches!(failed, LabError::CommandFailed { .. }), "{failed}");
}

fn sleeper_ready(process: &hb_tests::ProcessHandle) -> bool {
    process.stdout().unwrap_or_default().contains("ready")
}

#[test]
fn refuses_addresses_and_settings_outside_the_lab() {
    if !require_root("refuses_addresses_and_settings_outside_the_lab") {
        return;
    }
    let lab = new_lab();
    let node = lab.add_netns("node").unwrap();
    lab.add_veth_pair(&node, "v0", &node, "v1").unwrap();
    for cidr in [
        "10.0.0.1/24",
        "192.168.0.1/24",
        "198.20.0.1/24",
        "198.18.0.1/8",
    ] {
        let err = lab.add_address(&node, "v0", cidr).unwrap_err();
        assert!(
            matches!(err, LabError::AddressOutsideTestRange(_)),
            "{cidr}: {err}"
        );
    }
    let addresses = lab
        .exec(&node, &["ip", "-o", "-4", "addr", "show"])
        .unwrap();
    assert!(
        !addresses.contains("v0"),
        "nothing may have been configured: {addresses}"
    );
    assert!(lab
        .ping(&node, Ipv4Addr::new(127, 0, 0, 1), Duration::from_secs(1))
        .is_err());
    assert!(lab
        .add_route(&node, "10.0.0.0/8", Ipv4Addr::new(198, 18, 0, 1))
        .is_err());
    assert!(lab.set_sysctl(&node, "kernel.hostname", "x").is_err());
    assert!(lab.set_sysctl(&node, "net/../kernel/x", "1").is_err());
    assert!(lab
        .connect(
            &node,
            "sixteen-bytes-xx",
            &lab.add_bridge(&node, "br0").unwrap()
        )
        .is_err());

    // IPv6 is off inside lab namespaces; per-namespace sysctls can be set.
    let disabled = lab
        .exec(&node, &["cat", "/proc/sys/net/ipv6/conf/v0/disable_ipv6"])
        .unwrap();
    assert_eq!(disabled.trim(), "1");
    lab.set_sysctl(&node, "net.ipv4.conf.v0.arp_accept", "1")
        .unwrap();
    let accept = lab
        .exec(&node, &["cat", "/proc/sys/net/ipv4/conf/v0/arp_accept"])
        .unwrap();
    assert_eq!(accept.trim(), "1");
    let host_before = fs::read_to_string("/proc/sys/net/ipv4/conf/all/arp_accept").unwrap();
    lab.set_sysctl(&node, "net.ipv4.conf.all.arp_accept", "2")
        .unwrap();
    let lab_all = lab
        .exec(&node, &["cat", "/proc/sys/net/ipv4/conf/all/arp_accept"])
        .unwrap();
    assert_eq!(lab_all.trim(), "2");
    let host_after = fs::read_to_string("/proc/sys/net/ipv4/conf/all/arp_accept").unwrap();
    assert_eq!(host_before, host_after, "the host's settings are untouched");
}

#[test]
fn pinned_bpf_dirs_are_removed_with_the_lab() {
    if !require_root("pinned_bpf_dirs_are_removed_with_the_lab") {
        return;
    }
    let lab = new_lab();
    let dir = lab
        .bpf_pin_dir("lb1")
        .expect("pin dir (is bpffs mounted? cargo xtask setup)");
    assert!(dir.starts_with(hb_tests::BPFFS_ROOT));
    assert!(dir.is_dir());
    let prefix = lab.prefix().to_owned();
    drop(lab);
    assert!(!dir.exists());
    assert_eq!(leftovers(&prefix), Vec::<String>::new());
}

#[test]
fn a_panicking_test_still_cleans_up() {
    if !require_root("a_panicking_test_still_cleans_up") {
        return;
    }
    let mut seen: Option<(String, u32)> = None;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let lab = new_lab();
        let node = lab.add_netns("node").unwrap();
        let sleeper = lab
            .spawn(&node, "sleeper", Command::new("sleep").arg("600"))
            .unwrap();
        seen = Some((lab.prefix().to_owned(), sleeper.pid()));
        panic!("deliberate panic inside a lab test");
    }));
    assert!(outcome.is_err());
    let (prefix, pid) = seen.expect("the lab was built before the panic");
    assert_eq!(leftovers(&prefix), Vec::<String>::new());
    assert!(!pid_alive(pid), "the sleeper survived the panic");
}

#[test]
fn leftovers_of_a_killed_run_are_removed_by_the_next_lab() {
    if !require_root("leftovers_of_a_killed_run_are_removed_by_the_next_lab") {
        return;
    }
    let creating = LAB_CREATION.lock().unwrap_or_else(PoisonError::into_inner);
    // A pid that no longer exists stands for the killed run's owner.
    let mut gone = Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let stale_prefix = run_prefix(dead_pid, 0);
    let stale_netns = format!("{stale_prefix}-node");
    let stale_temp = std::env::temp_dir().join(&stale_prefix);
    let status = Command::new("ip")
        .args(["netns", "add", &stale_netns])
        .status()
        .unwrap();
    assert!(status.success());
    fs::create_dir_all(stale_temp.join("nested")).unwrap();
    let stale_pins = Path::new(hb_tests::BPFFS_ROOT).join(&stale_prefix);
    fs::create_dir_all(stale_pins.join("lb1"))
        .expect("bpffs dir (is bpffs mounted? cargo xtask setup)");
    // A process the killed run left running inside its namespace.
    let mut orphan = Command::new("nsenter")
        .arg(format!("--net={NETNS_RUN_DIR}/{stale_netns}"))
        .args(["sleep", "600"])
        .spawn()
        .unwrap();
    assert!(wait_until(SETTLE, POLL, || pids_in_netns(&stale_netns)
        .contains(&orphan.id())));

    let lab = Lab::new("harness_selftest").expect("lab");
    drop(creating);
    assert!(!Path::new(NETNS_RUN_DIR).join(&stale_netns).exists());
    assert!(!stale_temp.exists());
    assert!(!stale_pins.exists());
    let status = orphan.wait().unwrap();
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
    assert_eq!(leftovers(&stale_prefix), Vec::<String>::new());

    // A live run's names are never touched.
    assert!(!leftovers(lab.prefix()).is_empty());
    let survivor = new_lab();
    assert!(lab.temp_dir().is_dir());
    drop(survivor);
}
