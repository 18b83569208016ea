//! The systemd unit and the example configuration that `cargo xtask install` puts on a
//! machine: `systemd-analyze verify` accepts the unit (and the direct-scripts drop-in), the
//! unit says what the agent needs and nothing more, and the templates are refused until
//! filled in, then accepted.
//!
//! Unprivileged: `systemd-analyze verify` works offline, without systemd as PID 1. Skipped,
//! saying so, where it is not installed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use hb_agent::config::host::StaticHost;

fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("packaging")
}

fn unit_text() -> String {
    fs::read_to_string(packaging().join("hb-agent.service")).expect("packaging/hb-agent.service")
}

/// `(key, value)` of every assignment in the unit, in order (comments skipped).
fn assignments(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .map(|l| {
            let (key, value) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not key=value: {l}"));
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

fn values(text: &str, key: &str) -> Vec<String> {
    assignments(text)
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect()
}

fn value(text: &str, key: &str) -> String {
    let found = values(text, key);
    assert_eq!(found.len(), 1, "{key}: {found:?}");
    found[0].clone()
}

fn systemd_analyze() -> Option<PathBuf> {
    let found = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if found.is_none() {
        hb_tests::write_stderr_line(
            "skipped: systemd-analyze is not installed (Debian package `systemd`; \
             `cargo xtask setup` installs it)",
        );
    }
    found
}

/// Runs `systemd-analyze verify` on `unit` (with its drop-in directory, if any) and returns
/// what it said about our files. It exits 0 on unknown keys and bad values, so its messages
/// are the verdict.
fn verify(analyze: &Path, unit: &Path) -> Vec<String> {
    let output = Command::new(analyze)
        .arg("verify")
        .arg(unit)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("running systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let dir = unit.parent().expect("unit dir").display().to_string();
    let mut problems: Vec<String> = stderr
        .lines()
        .filter(|l| l.contains(&dir) || l.contains("hb-agent.service"))
        .map(str::to_owned)
        .collect();
    if !output.status.success() {
        problems.push(format!("exit status {}: {stderr}", output.status));
    }
    problems
}

/// The unit as installed, its executable replaced by one that exists here (verify checks
/// that ExecStart= and ExecReload= programs are executable).
fn staged_unit(dir: &Path, text: &str) -> PathBuf {
    let unit = dir.join("hb-agent.service");
    fs::write(&unit, text.replace("/usr/local/sbin/hb-agent", "/bin/true")).unwrap();
    unit
}

#[test]
fn systemd_analyze_verify_accepts_the_unit_and_the_drop_in() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let unit = staged_unit(dir.path(), &unit_text());
    let problems = verify(&analyze, &unit);
    assert!(problems.is_empty(), "{problems:#?}");

    let drop_ins = dir.path().join("hb-agent.service.d");
    fs::create_dir(&drop_ins).unwrap();
    fs::copy(
        packaging().join("direct-scripts.conf"),
        drop_ins.join("direct-scripts.conf"),
    )
    .unwrap();
    let problems = verify(&analyze, &unit);
    assert!(problems.is_empty(), "with the drop-in: {problems:#?}");

    // The same check catches a mistake: a misspelt key and an unknown type.
    fs::write(
        drop_ins.join("typo.conf"),
        "[Service]\nWatchdogSecs=5s\nType=notfy\n",
    )
    .unwrap();
    let problems = verify(&analyze, &unit);
    assert!(
        problems.iter().any(|p| p.contains("WatchdogSecs"))
            && problems.iter().any(|p| p.contains("notfy")),
        "verify should have flagged the typos: {problems:#?}"
    );
}

#[test]
fn the_unit_is_a_watched_notify_service() {
    let unit = unit_text();
    assert_eq!(value(&unit, "Type"), "notify");
    assert_eq!(value(&unit, "NotifyAccess"), "main");
    assert_eq!(value(&unit, "WatchdogSec"), "5s");
    assert_eq!(value(&unit, "Restart"), "on-failure");
    assert_eq!(value(&unit, "KillMode"), "mixed");
    assert_eq!(
        value(&unit, "ExecStart"),
        "/usr/local/sbin/hb-agent run --config-dir /etc/ha.d"
    );
    let reload = values(&unit, "ExecReload");
    assert_eq!(
        reload.last().map(String::as_str),
        Some("/bin/kill -HUP $MAINPID")
    );
    assert_eq!(value(&unit, "LimitMEMLOCK"), "infinity");
    assert_eq!(value(&unit, "WantedBy"), "multi-user.target");
}

#[test]
fn the_unit_grants_exactly_the_needed_capabilities_each_justified() {
    let unit = unit_text();
    let mut granted: Vec<String> = value(&unit, "CapabilityBoundingSet")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    granted.sort();
    let mut needed = [
        "CAP_BPF",
        "CAP_IPC_LOCK",
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_PERFMON",
        "CAP_SYS_NICE",
        "CAP_SYS_RESOURCE",
    ];
    needed.sort();
    assert_eq!(granted, needed);
    let comments: Vec<&str> = unit.lines().filter(|l| l.starts_with('#')).collect();
    for cap in needed {
        assert!(
            comments
                .iter()
                .any(|l| l.trim_start_matches(['#', ' ']).starts_with(cap)),
            "{cap} has no justification comment"
        );
    }
    // Realtime scheduling is the point of `realtime on`: nothing may forbid it.
    assert!(values(&unit, "RestrictRealtime").is_empty());
    assert_eq!(value(&unit, "NoNewPrivileges"), "yes");
}

#[test]
fn the_sandbox_leaves_writable_exactly_what_the_agent_writes() {
    let unit = unit_text();
    assert_eq!(value(&unit, "ProtectSystem"), "strict");
    assert_eq!(value(&unit, "ProtectHome"), "yes");
    assert_eq!(value(&unit, "PrivateTmp"), "yes");
    // The agent's own defaults must be the directories systemd makes writable.
    let state = Path::new(hb_agent::daemon::DEFAULT_STATE_DIR);
    assert_eq!(state.parent(), Some(Path::new("/var/lib")));
    assert_eq!(
        value(&unit, "StateDirectory"),
        state.file_name().unwrap().to_str().unwrap()
    );
    let socket_dir = Path::new(hb_agent::control::DEFAULT_SOCKET)
        .parent()
        .unwrap();
    assert_eq!(socket_dir.parent(), Some(Path::new("/run")));
    assert_eq!(
        value(&unit, "RuntimeDirectory"),
        socket_dir.file_name().unwrap().to_str().unwrap()
    );
    let writable = value(&unit, "ReadWritePaths");
    let writable: Vec<&str> = writable
        .split_whitespace()
        .map(|p| p.trim_start_matches('-'))
        .collect();
    assert!(
        writable
            .iter()
            .any(|p| Path::new(hb_agent::daemon::DEFAULT_PIN_ROOT).starts_with(p)),
        "the BPF pin root {} is not writable: {writable:?}",
        hb_agent::daemon::DEFAULT_PIN_ROOT
    );
    // Heartbeat's usual logfile/debugfile live in /var/log.
    assert!(writable.contains(&"/var/log"), "{writable:?}");
    // AF_PACKET (ARP), AF_NETLINK (addresses), AF_UNIX (control socket, notify, systemctl).
    let families = value(&unit, "RestrictAddressFamilies");
    for family in ["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET"] {
        assert!(families.split_whitespace().any(|f| f == family), "{family}");
    }
}

fn host_with_eth1(name: &str) -> StaticHost {
    let mut host = StaticHost::new(
        name,
        &[("lo", &[("127.0.0.1", 8)]), ("eth1", &[("198.18.5.1", 24)])],
    )
    .unwrap();
    host.uid = nix::unistd::geteuid().as_raw();
    host
}

/// A config directory from the installed templates, with `edit` applied to ha.cf and
/// haresources, and an authkeys as `cargo xtask install` writes it.
fn config_dir(edit: impl Fn(&str) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["ha.cf", "haresources"] {
        let text = fs::read_to_string(packaging().join("examples").join(name)).unwrap();
        fs::write(dir.path().join(name), edit(&text)).unwrap();
    }
    let authkeys = dir.path().join("authkeys");
    fs::write(
        &authkeys,
        format!("# comment\nauth 1\n1 sha1 {}\n", "5a".repeat(32)),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&authkeys, fs::Permissions::from_mode(0o600)).unwrap();
    dir
}

#[test]
fn the_installed_templates_are_refused_until_filled_in() {
    let untouched = config_dir(str::to_owned);
    let report = hb_agent::config::load(untouched.path(), Some("lb1"), &host_with_eth1("lb1"));
    assert!(!report.is_usable(), "{}", report.render_text());

    let filled = config_dir(|text| {
        text.replace("#node lb1 lb2", "node lb1 lb2")
            .replace("#ucast eth1 198.51.100.1", "ucast eth1 198.18.5.1")
            .replace("#ucast eth1 198.51.100.2", "ucast eth1 198.18.5.2")
            .replace(
                "#lb1 IPaddr2::198.51.100.10/24/eth0 nginx",
                "lb1 IPaddr2::198.18.5.10/24/eth1 nginx",
            )
    });
    let report = hb_agent::config::load(filled.path(), Some("lb1"), &host_with_eth1("lb1"));
    let text = report.render_text();
    let config = report.config.expect(&text);
    assert_eq!(config.nodes.len(), 2);
    assert_eq!(config.groups.len(), 1);
    assert!(config.realtime);
    assert_eq!(config.timers.deadtime, std::time::Duration::from_secs(10));
    // A filled-in template loads without a single warning.
    assert!(report.diagnostics.is_empty(), "{text}");
}
