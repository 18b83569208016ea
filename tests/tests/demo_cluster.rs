//! What `cargo xtask demo` relies on beyond the failover scenarios: web servers behind the
//! balancers (seen through the client's probe), and kept labs surviving every clean-up path
//! until they are removed on purpose.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hb_tests::cluster::{Cluster, ClusterSpec, Served, VIP};
use hb_tests::lab::{clean_stale_runs, kept_labs, remove_kept_lab, KEEP_MARKER, NETNS_RUN_DIR};
use hb_tests::names::{pid_alive, run_prefix};
use hb_tests::probe::{ProbeOutcome, ProbeSample, ProbeSettings, Prober};
use hb_tests::{require_root, wait_until, Lab, Signal, BPFFS_ROOT};

const SETTLE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);

/// Whether process `pid` has joined namespace `netns` (it starts outside, then `nsenter` moves
/// it: removing the namespace before that would miss it).
fn in_netns(netns: &str, pid: u32) -> bool {
    let output = Command::new("ip")
        .args(["netns", "pids", netns])
        .output()
        .expect("ip netns pids");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .any(|word| word.parse() == Ok(pid))
}

fn served(sample: &ProbeSample) -> Option<Served> {
    match &sample.outcome {
        ProbeOutcome::Served(page) => Served::from_page(page),
        ProbeOutcome::Failed(_) => None,
    }
}

#[test]
fn web_servers_behind_the_balancers_and_the_probe_sees_the_failover() {
    if !require_root("web_servers_behind_the_balancers_and_the_probe_sees_the_failover") {
        return;
    }
    let spec = ClusterSpec {
        web_servers: 3,
        ..ClusterSpec::default()
    };
    let mut cluster = Cluster::new("web", spec).expect("build the cluster");
    assert_eq!(cluster.web.len(), 3);
    cluster.start_all().expect("start both agents");
    cluster.wait_sole_holder("lb1").expect("lb1 holds the VIP");
    cluster.wait_served_by("lb1").expect("served through lb1");

    // Round robin over every web server, each answer naming the balancer.
    let mut backends = Vec::new();
    for _ in 0..6 {
        let response = cluster.get_vip(Duration::from_secs(2)).expect("GET");
        let served = Served::parse(&response).unwrap_or_else(|| panic!("{response:?}"));
        assert_eq!(served.balancer, "lb1", "{response:?}");
        backends.push(served.backend.expect("a web server answered"));
    }
    for web in ["web1", "web2", "web3"] {
        assert_eq!(
            backends.iter().filter(|b| *b == web).count(),
            2,
            "round robin: {backends:?}"
        );
    }

    let prober = Prober::start(
        &cluster.client,
        ProbeSettings {
            target: SocketAddr::from((VIP, 80)),
            interval: Duration::from_millis(5),
            timeout: Duration::from_millis(50),
        },
    )
    .expect("start the probe");
    let mut samples: Vec<ProbeSample> = Vec::new();
    let seen = |samples: &mut Vec<ProbeSample>, after: Instant, balancer: &str| {
        samples.extend(prober.take());
        samples
            .iter()
            .any(|s| s.start > after && served(s).is_some_and(|by| by.balancer == balancer))
    };
    let started = Instant::now();
    assert!(wait_until(SETTLE, POLL, || seen(
        &mut samples,
        started,
        "lb1"
    )));
    let cut = Instant::now();
    cluster.set_connected(0, false).unwrap();
    cluster.wait_served_by("lb2").expect("lb2 takes over");
    assert!(wait_until(SETTLE, POLL, || seen(&mut samples, cut, "lb2")));
    // Every answer names a web server and a balancer; some requests failed in between.
    let after_cut: Vec<&ProbeSample> = samples.iter().filter(|s| s.end > cut).collect();
    assert!(
        after_cut.iter().any(|s| served(s).is_none()),
        "the cut broke requests"
    );
    for sample in &samples {
        if let ProbeOutcome::Served(page) = &sample.outcome {
            let by = Served::from_page(page).unwrap_or_else(|| panic!("page {page:?}"));
            assert!(by.backend.is_some(), "{page:?}");
        }
    }
    prober.stop();
}

#[test]
fn served_reads_both_page_forms() {
    let page = |body: &str| hb_tests::HttpResponse {
        status: 200,
        body: body.into(),
    };
    assert_eq!(
        Served::parse(&page("lb1\n")),
        Some(Served {
            balancer: "lb1".into(),
            backend: None
        })
    );
    let served = Served::parse(&page("web2 via lb2\n")).unwrap();
    assert_eq!(served.balancer, "lb2");
    assert_eq!(served.backend.as_deref(), Some("web2"));
    assert_eq!(served.to_string(), "web2 via lb2");
    assert_eq!(Served::parse(&page("lb1")), None);
    assert_eq!(
        Served::from_page("web1 via lb1").map(|s| s.balancer),
        Some("lb1".to_owned())
    );
    assert_eq!(Served::from_page("web1 via "), None);
    assert_eq!(Served::parse(&page("<html>\n")), None);
    assert_eq!(Served::parse(&page("")), None);
    let error = hb_tests::HttpResponse {
        status: 502,
        body: "lb1\n".into(),
    };
    assert_eq!(Served::parse(&error), None);
}

/// A lab that was kept and whose owner is gone: every clean-up path leaves it alone, and
/// `remove_kept_lab` removes all of it.
#[test]
fn kept_labs_survive_stale_cleaning_until_removed() {
    if !require_root("kept_labs_survive_stale_cleaning_until_removed") {
        return;
    }
    let mut gone = Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let prefix = run_prefix(dead_pid, 0);
    // The marker first: a lab created meanwhile (by any test run) must already see it.
    let temp = std::env::temp_dir().join(&prefix);
    fs::create_dir_all(&temp).unwrap();
    fs::write(
        temp.join("owner"),
        format!("label=kept-test\npid={dead_pid}\n"),
    )
    .unwrap();
    fs::write(temp.join(KEEP_MARKER), "kept by the test").unwrap();
    let netns = format!("{prefix}-node");
    assert!(Command::new("ip")
        .args(["netns", "add", &netns])
        .status()
        .unwrap()
        .success());
    let pins = Path::new(BPFFS_ROOT).join(&prefix);
    fs::create_dir_all(pins.join("lb1")).expect("bpffs dir (is bpffs mounted?)");
    let mut orphan = Command::new("nsenter")
        .arg(format!("--net={NETNS_RUN_DIR}/{netns}"))
        .args(["sleep", "600"])
        .spawn()
        .unwrap();
    assert!(wait_until(SETTLE, POLL, || in_netns(&netns, orphan.id())));

    let removed = clean_stale_runs();
    assert!(
        !removed.iter().any(|r| r.contains(&prefix)),
        "kept lab removed as stale: {removed:?}"
    );
    let lab = Lab::new("kept-test-neighbour").expect("a new lab");
    assert!(Path::new(NETNS_RUN_DIR).join(&netns).exists());
    assert!(pins.is_dir() && temp.join(KEEP_MARKER).is_file());
    assert!(pid_alive(orphan.id()));
    drop(lab);
    let listed = kept_labs();
    let kept = listed
        .iter()
        .find(|lab| lab.prefix == prefix)
        .unwrap_or_else(|| panic!("{prefix} not listed: {listed:?}"));
    assert_eq!(kept.label, "kept-test");
    assert_eq!(kept.note, "kept by the test");

    let removed = remove_kept_lab(&prefix).expect("remove the kept lab");
    assert!(removed.iter().any(|r| r.contains(&netns)), "{removed:?}");
    assert!(!Path::new(NETNS_RUN_DIR).join(&netns).exists());
    assert!(!pins.exists() && !temp.exists());
    assert_eq!(
        orphan.wait().unwrap().signal(),
        Some(Signal::SIGKILL as i32)
    );
    assert!(remove_kept_lab(&prefix).is_err(), "no longer kept");
}

/// `Lab::keep`: dropping the lab leaves its namespaces and processes running.
#[test]
fn a_kept_lab_outlives_its_drop() {
    if !require_root("a_kept_lab_outlives_its_drop") {
        return;
    }
    let lab = Lab::new("keep-drop").expect("lab");
    let prefix = lab.prefix().to_owned();
    let netns = lab.add_netns("node").unwrap();
    let mut sleep = Command::new("sleep");
    sleep.arg("600");
    let sleeper = lab.spawn(&netns, "sleeper", &sleep).unwrap();
    assert!(wait_until(SETTLE, POLL, || in_netns(
        netns.name(),
        sleeper.pid()
    )));
    assert!(
        remove_kept_lab(&prefix).is_err(),
        "a live lab that is not kept is refused"
    );
    lab.keep("note").unwrap();
    assert!(lab.is_kept());
    drop(lab);
    assert!(netns.path().exists());
    assert!(pid_alive(sleeper.pid()));
    remove_kept_lab(&prefix).expect("remove it");
    assert!(!netns.path().exists());
    assert!(wait_until(SETTLE, POLL, || !pid_alive(sleeper.pid())));
    assert!(!std::env::temp_dir().join(&prefix).exists());
}
