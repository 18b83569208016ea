//! The config loader against real files: every Heartbeat configuration from the tutorials in
//! `tests/data/seeds` (each must load: no errors, the expected warnings), Debian's sample
//! files, and one test per class of error (file, line and message).

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hb_agent::config::{
    load, parse_authkeys, parse_ha_cf, parse_haresources, AuthMethod, AutoFailback, Diagnostic,
    HostView, IpAgent, LinkKind, LoadReport, Resource, Severity, StaticHost, SystemHost,
    XdpSetting,
};

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path)
}

/// A private copy of a config directory, with authkeys present and mode 600.
fn staged(source: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in fs::read_dir(source).expect("read seed dir") {
        let entry = entry.expect("entry");
        fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
    }
    let authkeys = dir.path().join("authkeys");
    if !authkeys.exists() {
        fs::copy(data("authkeys-for-tests"), &authkeys).expect("copy authkeys");
    }
    fs::set_permissions(&authkeys, fs::Permissions::from_mode(0o600)).expect("chmod");
    dir
}

/// A host as the tutorial describes it, run by whoever runs the tests.
fn host(name: &str, interfaces: &[(&str, &[(&str, u8)])]) -> StaticHost {
    let mut host = StaticHost::new(name, interfaces).expect("addresses");
    host.uid = SystemHost.effective_uid();
    host
}

fn load_seed(seed: &str, host: &StaticHost) -> (tempfile::TempDir, LoadReport) {
    let dir = staged(&data(&format!("seeds/{seed}")));
    let report = load(dir.path(), None, host);
    (dir, report)
}

/// (file name, line, message start) of every diagnostic of one severity.
fn summary(report: &LoadReport, severity: Severity) -> Vec<(String, Option<usize>, String)> {
    report
        .diagnostics
        .iter()
        .filter(|d| d.severity == severity)
        .map(|d| (file_name(d), d.line, d.message.clone()))
        .collect()
}

fn file_name(d: &Diagnostic) -> String {
    d.file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn assert_usable(report: &LoadReport) {
    assert!(report.is_usable(), "not usable:\n{}", report.render_text());
    assert_eq!(report.exit_code(), 0);
    assert_eq!(summary(report, Severity::Error), vec![]);
}

/// Asserts the warnings exactly, by file, line and the start of the message.
fn assert_warnings(report: &LoadReport, expected: &[(&str, Option<usize>, &str)]) {
    let got = summary(report, Severity::Warning);
    assert_eq!(
        got.len(),
        expected.len(),
        "warnings:\n{}",
        report.render_text()
    );
    for ((file, line, message), (want_file, want_line, want_start)) in got.iter().zip(expected) {
        assert_eq!(
            (file.as_str(), *line),
            (*want_file, *want_line),
            "{message}"
        );
        assert!(
            message.starts_with(want_start),
            "expected `{want_start}…`, got `{message}`"
        );
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("address")
}

mod seeds {
    use super::*;

    fn rproxy1() -> StaticHost {
        host(
            "rproxy1",
            &[
                ("eth0", &[("192.168.1.1", 24)]),
                ("eth1", &[("172.202.2.1", 24)]),
            ],
        )
    }

    #[test]
    fn rproxy_unixclinic() {
        let (_dir, report) = load_seed("rproxy-unixclinic", &rproxy1());
        assert_usable(&report);
        assert_warnings(
            &report,
            &[(
                "haresources",
                Some(1),
                "no interface on this machine has a connected route covering 10.8.0.1",
            )],
        );
        let config = report.config.as_ref().expect("config");
        assert_eq!(config.local_node, "rproxy1");
        let names: Vec<_> = config.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["rproxy1", "rproxy2"]);
        assert_eq!(config.nodes[0].id, hb_common::wire::node_id(b"rproxy1"));
        assert_eq!(config.timers.keepalive, Duration::from_secs(2));
        assert_eq!(config.timers.deadtime, Duration::from_secs(30));
        assert_eq!(config.timers.warntime, Duration::from_secs(10));
        assert_eq!(config.timers.initdead, Duration::from_secs(120));
        let links: Vec<_> = config
            .links
            .iter()
            .map(|l| (l.iface.as_str(), l.port, l.kind.clone(), l.origin.line))
            .collect();
        assert_eq!(
            links,
            [
                (
                    "eth0",
                    695,
                    LinkKind::Ucast {
                        peer: ip("192.168.1.1")
                    },
                    7
                ),
                (
                    "eth0",
                    695,
                    LinkKind::Ucast {
                        peer: ip("192.168.1.2")
                    },
                    8
                ),
            ]
        );
        // Heartbeat ignores the ucast line that points at the node itself.
        let effective = config.effective_links(&report.local_addrs);
        assert_eq!(effective.len(), 1);
        assert_eq!(
            effective[0].kind,
            LinkKind::Ucast {
                peer: ip("192.168.1.2")
            }
        );
        assert_eq!(config.auto_failback, AutoFailback::On);
        assert!(config.log.use_logd);
        assert_eq!(config.groups.len(), 1);
        let group = &config.groups[0];
        assert_eq!(
            (group.name.as_str(), group.preferred.as_str()),
            ("10.8.0.1", "rproxy1")
        );
        assert_eq!(
            group.resources,
            [
                Resource::Ipv4 {
                    addr: Ipv4Addr::new(10, 8, 0, 1),
                    prefix: None,
                    iface: None,
                    broadcast: None,
                    agent: IpAgent::Bare
                },
                Resource::Script {
                    name: "nginx".into(),
                    args: vec![]
                },
            ]
        );
        assert_eq!(config.auth.active, 1);
        assert_eq!(config.auth.keys.len(), 1);
        assert_eq!(config.auth.keys[0].1.method, AuthMethod::Sha1);
        assert_eq!(
            config.auth.keys[0].1.secret.0,
            b"ThisIsMySecretKeyAndICanChooseAnyStringHere"
        );
        assert_eq!(config.xdp, XdpSetting::Auto);
        assert!(config.realtime);
        assert_eq!(config.garp.count, 5);
        assert_eq!(config.garp.interval, Duration::from_millis(200));
    }

    #[test]
    fn rproxy_unixclinic_ipaddr_variants() {
        let (_dir, report) = load_seed("rproxy-unixclinic-ipaddr", &rproxy1());
        assert_usable(&report);
        let config = report.config.as_ref().expect("config");
        assert_eq!(config.groups[0].name, "IPaddr::10.8.0.1");
        assert!(matches!(
            config.groups[0].resources[0],
            Resource::Ipv4 {
                agent: IpAgent::IPaddr,
                prefix: None,
                ..
            }
        ));

        let (_dir, report) = load_seed("rproxy-unixclinic-ipaddr-netmask", &rproxy1());
        assert_usable(&report);
        assert_warnings(&report, &[]);
        let config = report.config.as_ref().expect("config");
        assert_eq!(
            config.groups[0].resources,
            [Resource::Ipv4 {
                addr: Ipv4Addr::new(10, 8, 0, 1),
                prefix: Some(24),
                iface: Some("eth1".into()),
                broadcast: Some(Ipv4Addr::BROADCAST),
                agent: IpAgent::IPaddr,
            }]
        );
    }

    fn haproxy1() -> StaticHost {
        host(
            "haproxy1",
            &[
                ("eth0", &[("10.0.2.15", 24)]),
                ("eth1", &[("192.168.1.101", 24)]),
                ("eth2", &[("10.100.100.1", 24)]),
            ],
        )
    }

    fn check_haproxy(seed: &str, bcast_iface: &str) -> LoadReport {
        let (_dir, report) = load_seed(seed, &haproxy1());
        assert_usable(&report);
        assert_warnings(
            &report,
            &[
                (
                    "ha.cf",
                    Some(4),
                    "warntime (10 s) is not below deadtime (5 s)",
                ),
                (
                    "authkeys",
                    Some(2),
                    "SECURITY: key 1 uses crc, which authenticates nothing",
                ),
            ],
        );
        let config = report.config.as_ref().expect("config");
        assert_eq!(
            config.timers.keepalive,
            Duration::from_secs(1),
            "Heartbeat's default"
        );
        assert_eq!(config.timers.deadtime, Duration::from_secs(5));
        assert_eq!(config.timers.initdead, Duration::from_secs(15));
        assert_eq!(config.links.len(), 1);
        assert_eq!(
            (config.links[0].iface.as_str(), config.links[0].port),
            (bcast_iface, 694)
        );
        assert_eq!(config.links[0].kind, LinkKind::Bcast);
        assert_eq!(
            config.log.logfile.as_deref(),
            Some(Path::new("/var/log/ha-log"))
        );
        assert_eq!(
            config.log.debugfile.as_deref(),
            Some(Path::new("/var/log/ha-debug"))
        );
        assert_eq!(
            config.groups[0].resources,
            [Resource::Ipv4 {
                addr: Ipv4Addr::new(192, 168, 1, 100),
                prefix: Some(24),
                iface: Some("eth1".into()),
                broadcast: None,
                agent: IpAgent::IPaddr,
            }]
        );
        let methods: Vec<_> = config
            .auth
            .keys
            .iter()
            .map(|(i, k)| (*i, k.method))
            .collect();
        assert_eq!(
            methods,
            [
                (1, AuthMethod::Crc),
                (2, AuthMethod::Sha1),
                (3, AuthMethod::Md5)
            ]
        );
        assert_eq!(config.auth.active, 3);
        report
    }

    #[test]
    fn haproxy_farm_es_text_listing() {
        let report = check_haproxy("haproxy-farm-es", "eth1");
        let config = report.config.as_ref().expect("config");
        assert_eq!(config.auth.keys[2].1.secret.0, b"yourpasswordhere");
    }

    #[test]
    fn haproxy_farm_es_screenshot() {
        let report = check_haproxy("haproxy-farm-es-screenshot", "eth2");
        let config = report.config.as_ref().expect("config");
        assert_eq!(config.auth.keys[1].1.secret.0, b"HI!");
        assert_eq!(config.auth.keys[2].1.secret.0, b"Hello!");
    }

    #[test]
    fn nginx_active_passive_es() {
        let host = host("SwapNginxActive", &[("enp0s8", &[("192.168.56.122", 24)])]);
        let (_dir, report) = load_seed("nginx-active-passive-es", &host);
        assert_usable(&report);
        assert_warnings(
            &report,
            &[(
                "haresources",
                Some(1),
                "resource `<ServiceIP>` looks like a placeholder",
            )],
        );
        let config = report.config.as_ref().expect("config");
        assert_eq!(
            config.local_node, "swapnginxactive",
            "node names are lower-cased, as in Heartbeat"
        );
        assert_eq!(config.groups[0].preferred, "swapnginxactive");
        assert_eq!(config.groups[0].name, "<ServiceIP>");
        assert_eq!(config.links.len(), 2);
        assert!(config
            .links
            .iter()
            .all(|l| l.port == 694 && l.iface == "enp0s8"));
    }

    #[test]
    fn puppet_cookbook_udpport_after_ucast() {
        let host = host("cookbook", &[("eth0", &[("10.0.2.15", 24)])]);
        let (_dir, report) = load_seed("puppet-cookbook", &host);
        assert_usable(&report);
        assert_warnings(
            &report,
            &[(
                "ha.cf",
                Some(7),
                "`udpport 694` comes after the ucast/bcast line(s) on lines 2 and 3, which therefore use port 694 (the default)",
            )],
        );
        let config = report.config.as_ref().expect("config");
        assert_eq!(config.timers.keepalive, Duration::from_secs(1));
        assert_eq!(config.timers.deadtime, Duration::from_secs(10));
        assert_eq!(config.timers.warntime, Duration::from_secs(5));
        assert_eq!(
            config.timers.initdead,
            Duration::from_secs(20),
            "Heartbeat: 2 x deadtime for 6-10 s"
        );
        assert_eq!(config.effective_links(&report.local_addrs).len(), 1);
        let vip = &config.groups[0].resources[0];
        assert_eq!(vip.to_string(), "IPaddr::10.0.2.100/24/eth0:1");
        let placement = config
            .resolve_iface(vip, &host)
            .expect("resolves")
            .expect("address");
        assert_eq!(
            (
                placement.device.as_str(),
                placement.label.as_deref(),
                placement.prefix
            ),
            ("eth0", Some("eth0:1"), 24)
        );
    }

    #[test]
    fn cluster_ids_differ_between_clusters() {
        let (_a, rproxy) = load_seed("rproxy-unixclinic", &rproxy1());
        let (_b, cookbook) = load_seed(
            "puppet-cookbook",
            &host("cookbook", &[("eth0", &[("10.0.2.15", 24)])]),
        );
        let a = rproxy.config.expect("config").cluster_id;
        let b = cookbook.config.expect("config").cluster_id;
        assert_ne!(a, b);
    }

    #[test]
    fn reports_never_show_secrets() {
        for (seed, host) in [
            ("rproxy-unixclinic", rproxy1()),
            ("haproxy-farm-es-screenshot", haproxy1()),
            (
                "puppet-cookbook",
                host("cookbook", &[("eth0", &[("10.0.2.15", 24)])]),
            ),
        ] {
            let (_dir, report) = load_seed(seed, &host);
            let text = report.render_text();
            let json = report.to_json().to_string();
            let debug = format!("{report:?}");
            for secret in ["ThisIsMySecretKey", "HI!", "Hello!", "topsecretpassword"] {
                assert!(!text.contains(secret), "{seed}: text shows a secret");
                assert!(!json.contains(secret), "{seed}: json shows a secret");
                assert!(!debug.contains(secret), "{seed}: Debug shows a secret");
            }
        }
    }

    #[test]
    fn json_form() {
        let (_dir, report) = load_seed("rproxy-unixclinic", &rproxy1());
        let json = report.to_json();
        assert_eq!(json["usable"], true);
        assert_eq!(json["errors"], 0);
        assert_eq!(json["warnings"], 1);
        let config = &json["config"];
        assert_eq!(config["timers_ms"]["keepalive"], 2000);
        assert_eq!(config["timers_ms"]["initdead"], 120000);
        assert_eq!(config["links"][0]["kind"], "ucast");
        assert_eq!(config["links"][0]["used_here"], false);
        assert_eq!(config["links"][1]["used_here"], true);
        assert_eq!(config["links"][1]["port"], 695);
        assert_eq!(config["nodes"][0]["local"], true);
        assert_eq!(config["groups"][0]["resources"][0]["kind"], "ipv4");
        assert_eq!(config["groups"][0]["resources"][1]["name"], "nginx");
        assert_eq!(config["auth"]["active_method"], "sha1");
        assert_eq!(config["garp"]["interval_ms"], 200);
        assert_eq!(json["diagnostics"][0]["severity"], "warning");
        assert_eq!(json["diagnostics"][0]["line"], 1);
    }
}

mod debian {
    use super::*;

    #[test]
    fn shipped_samples_are_all_comments() {
        let dir = staged(&data("debian-doc"));
        let report = load(dir.path(), None, &host("ken3", &[]));
        assert!(!report.is_usable());
        assert_eq!(report.exit_code(), 1);
        let errors = summary(&report, Severity::Error);
        let starts: Vec<_> = errors
            .iter()
            .map(|(f, l, m)| (f.as_str(), *l, m.split(':').next().unwrap_or("")))
            .collect();
        assert_eq!(
            starts,
            [
                ("ha.cf", None, "no `node` lines"),
                ("ha.cf", None, "no communication path"),
                ("authkeys", None, "no `auth N` line"),
            ]
        );
        assert_warnings(&report, &[("haresources", None, "no resource groups")]);
    }

    #[test]
    fn ha_cf_examples_uncommented() {
        let path = data("debian-doc-uncommented/ha.cf");
        let parsed = parse_ha_cf(&fs::read(&path).expect("read"), &path);
        let got: Vec<_> = parsed
            .diagnostics
            .iter()
            .map(|d| (d.severity, d.line, d.message.clone()))
            .collect();
        let expected: &[(usize, &str)] = &[
            (80, "`baud` has no effect in hb"),
            (83, "`serial` has no effect in hb"),
            (170, "`stonith` has no effect in hb"),
            (195, "`stonith_host` has no effect in hb"),
            (207, "`watchdog` has no effect in hb"),
            (246, "`hbaping` has no effect in hb"),
            (252, "`respawn` has no effect in hb: hb does not start helper programs; run `/path/name/to/run`"),
            (253, "accepted: hb does ipfail's job itself"),
            (258, "`apiauth` has no effect in hb"),
            (268, "`hopfudge` has no effect in hb"),
            (275, "`hbgenmethod` has no effect in hb"),
            (314, "`msgfmt` has no effect in hb"),
            (327, "`conn_logd_time` has no effect in hb"),
            (333, "`compression` has no effect in hb"),
            (339, "`compression_threshold` has no effect in hb"),
        ];
        assert_eq!(got.len(), expected.len(), "{got:#?}");
        for ((severity, line, message), (want_line, want_start)) in got.iter().zip(expected) {
            assert_eq!(
                (*severity, *line),
                (Severity::Warning, Some(*want_line)),
                "{message}"
            );
            assert!(
                message.starts_with(want_start),
                "line {want_line}: `{message}`"
            );
        }
        let hacf = parsed.hacf;
        let nodes: Vec<_> = hacf.nodes.iter().map(|n| n.value.as_str()).collect();
        assert_eq!(nodes, ["ken3", "kathy"]);
        assert_eq!(
            hacf.keepalive.map(|t| t.value),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            hacf.deadping.map(|t| t.value),
            Some(Duration::from_secs(30))
        );
        assert!(!hacf.realtime);
        assert_eq!(hacf.log.debug, 1);
        assert_eq!(hacf.log.logfacility.as_deref(), Some("local0"));
        assert!(hacf.log.use_logd);
        let links: Vec<_> = hacf
            .links
            .iter()
            .map(|l| (l.iface.as_str(), l.line))
            .collect();
        assert_eq!(
            links,
            [
                ("eth0", 91),
                ("eth1", 92),
                ("eth2", 92),
                ("le0", 93),
                ("le1", 94),
                ("le2", 94),
                ("eth0", 113),
                ("eth0", 121)
            ]
        );
        assert_eq!(hacf.ping_nodes.len(), 1);
        assert_eq!(hacf.ping_groups[0].value.0, "group1");
        assert_eq!(hacf.auto_failback.map(|a| a.value), Some(AutoFailback::On));
    }

    #[test]
    fn ha_cf_examples_load_with_warnings_for_missing_interfaces() {
        let dir = staged(&data("debian-doc-uncommented"));
        fs::write(
            dir.path().join("haresources"),
            "ken3 135.9.216.3/28/eth0/135.9.216.12 httpd\n",
        )
        .expect("write");
        let ken3 = host(
            "ken3",
            &[
                ("eth0", &[("192.168.1.1", 24)]),
                ("eth1", &[]),
                ("eth2", &[]),
            ],
        );
        let report = load(dir.path(), None, &ken3);
        assert_usable(&report);
        let missing: Vec<_> = summary(&report, Severity::Warning)
            .into_iter()
            .filter(|(_, _, m)| m.starts_with("interface `"))
            .map(|(_, line, m)| (line, m.split('`').nth(1).unwrap_or("").to_string()))
            .collect();
        assert_eq!(
            missing,
            [
                (Some(93), "le0".into()),
                (Some(94), "le1".into()),
                (Some(94), "le2".into())
            ]
        );
        let config = report.config.expect("config");
        assert_eq!(config.ping.nodes, [ip("10.10.10.254")]);
        assert_eq!(config.ping.deadping, Some(Duration::from_secs(30)));
        assert_eq!(
            config
                .links
                .iter()
                .filter(|l| matches!(l.kind, LinkKind::Mcast { .. }))
                .count(),
            1
        );
    }

    #[test]
    fn haresources_examples_uncommented() {
        let path = data("debian-doc-uncommented/haresources");
        let parsed = parse_haresources(&fs::read(&path).expect("read"), &path);
        // The examples are alternatives: used together, two of them reuse the first
        // example's group name, which the file itself says must be unique.
        let got: Vec<_> = parsed
            .diagnostics
            .iter()
            .map(|d| (d.severity, d.line, d.message.clone()))
            .collect();
        assert_eq!(got.len(), 2, "{got:#?}");
        for ((severity, line, message), want_line) in got.iter().zip([121, 128]) {
            assert_eq!((*severity, *line), (Severity::Error, Some(want_line)));
            assert!(
                message.starts_with(
                    "duplicate resource group `135.9.216.110` (first defined on line 112)"
                ),
                "{message}"
            );
        }
        let texts: Vec<String> = parsed
            .groups
            .iter()
            .map(|g| {
                let resources: Vec<String> = g.resources.iter().map(|r| r.to_string()).collect();
                format!("{} {}", g.preferred, resources.join(" "))
            })
            .collect();
        assert_eq!(
            texts,
            [
                "just.linux-ha.org 135.9.216.110",
                "just.linux-ha.org 135.9.216.3/28/eth0/135.9.216.12 httpd",
                "node1 10.0.0.170 Filesystem::/dev/sda1::/data1::ext2",
            ]
        );
    }

    #[test]
    fn each_haresources_example_alone() {
        for example in [
            "just.linux-ha.org\t135.9.216.110",
            "just.linux-ha.org\t135.9.216.110 http",
            "just.linux-ha.org\t135.9.216.110 135.9.215.111 135.9.216.112 httpd",
            "just.linux-ha.org\t135.9.216.3/28/eth0/135.9.216.12 httpd",
            "node1  10.0.0.170 Filesystem::/dev/sda1::/data1::ext2",
            "node1 IPaddr::135.9.8.7/24",
            "node1 IPaddr::135.9.8.7/24/135.9.8.210",
            "node1 IPaddr::135.9.8.7/24/eth0",
            "node1 IPaddr::135.9.8.7/24/eth0/135.9.8.210",
        ] {
            let parsed = parse_haresources(example.as_bytes(), Path::new("haresources"));
            assert!(
                parsed.diagnostics.is_empty(),
                "{example}: {:?}",
                parsed.diagnostics
            );
            assert_eq!(parsed.groups.len(), 1);
        }
    }

    #[test]
    fn authkeys_example_uncommented() {
        let path = data("debian-doc-uncommented/authkeys");
        let parsed = parse_authkeys(&fs::read(&path).expect("read"), &path);
        let keys = parsed.keys.expect("keys");
        assert_eq!(keys.active, 1);
        assert_eq!(parsed.diagnostics.len(), 1);
        assert_eq!(parsed.diagnostics[0].line, Some(23));
        assert!(parsed.diagnostics[0]
            .message
            .starts_with("SECURITY: the active key uses crc, which authenticates nothing"));
    }
}

/// One test per class of error: each names the file, the line and what is wrong, and makes
/// the configuration unusable.
mod errors {
    use super::*;

    const HA_CF: &str = "keepalive 1\ndeadtime 10\nudpport 694\nucast eth0 10.0.0.2\nauto_failback on\nnode alpha beta\n";
    const HARESOURCES: &str = "alpha 10.0.0.100 nginx\n";
    const AUTHKEYS: &str = "auth 1\n1 sha1 0123456789abcdef\n";

    fn alpha() -> StaticHost {
        host("alpha", &[("eth0", &[("10.0.0.1", 24)])])
    }

    fn write_config(ha_cf: &str, haresources: &str, authkeys: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("ha.cf"), ha_cf).expect("write");
        fs::write(dir.path().join("haresources"), haresources).expect("write");
        let keys = dir.path().join("authkeys");
        fs::write(&keys, authkeys).expect("write");
        fs::set_permissions(&keys, fs::Permissions::from_mode(0o600)).expect("chmod");
        dir
    }

    /// Loads and returns the only error, checking that the rest loaded cleanly.
    fn only_error(ha_cf: &str, haresources: &str, authkeys: &str) -> Diagnostic {
        let dir = write_config(ha_cf, haresources, authkeys);
        let report = load(dir.path(), None, &alpha());
        assert!(!report.is_usable());
        assert_eq!(report.exit_code(), 1);
        let errors: Vec<_> = report.errors().cloned().collect();
        assert_eq!(errors.len(), 1, "{}", report.render_text());
        errors.into_iter().next().expect("one error")
    }

    fn check(d: &Diagnostic, file: &str, line: Option<usize>, text: &str, message_start: &str) {
        assert_eq!(file_name(d), file);
        assert_eq!(d.line, line);
        assert_eq!(d.text, text);
        assert!(d.message.starts_with(message_start), "got `{}`", d.message);
    }

    #[test]
    fn baseline_is_usable() {
        let dir = write_config(HA_CF, HARESOURCES, AUTHKEYS);
        let report = load(dir.path(), None, &alpha());
        assert_usable(&report);
        assert_warnings(&report, &[]);
    }

    #[test]
    fn unknown_directive() {
        let d = only_error(&format!("{HA_CF}kepalive 2\n"), HARESOURCES, AUTHKEYS);
        check(
            &d,
            "ha.cf",
            Some(7),
            "kepalive 2",
            "unknown directive `kepalive`: did you mean `keepalive`?",
        );
    }

    #[test]
    fn bad_time_value() {
        let d = only_error(
            &HA_CF.replace("keepalive 1", "keepalive 10s"),
            HARESOURCES,
            AUTHKEYS,
        );
        check(
            &d,
            "ha.cf",
            Some(1),
            "keepalive 10s",
            "keepalive: `10s`: unknown time unit `s`",
        );
    }

    #[test]
    fn bad_port() {
        let d = only_error(
            &HA_CF.replace("udpport 694", "udpport 70000"),
            HARESOURCES,
            AUTHKEYS,
        );
        check(
            &d,
            "ha.cf",
            Some(3),
            "udpport 70000",
            "udpport: `70000` is not a UDP port (1-65535)",
        );
    }

    #[test]
    fn bad_peer_address() {
        let d = only_error(
            &format!("{HA_CF}ucast eth0 10.0.0.3/24\n"),
            HARESOURCES,
            AUTHKEYS,
        );
        check(
            &d,
            "ha.cf",
            Some(7),
            "ucast eth0 10.0.0.3/24",
            "`10.0.0.3/24` is neither an IP address nor a host name",
        );
    }

    #[test]
    fn unresolvable_peer_name() {
        let d = only_error(&HA_CF.replace("10.0.0.2", "beta-hb"), HARESOURCES, AUTHKEYS);
        check(
            &d,
            "ha.cf",
            Some(4),
            "ucast eth0 beta-hb",
            "cannot resolve host `beta-hb`",
        );
        let mut resolving = alpha();
        resolving.hosts.push(("beta-hb".into(), ip("10.0.0.2")));
        let dir = write_config(&HA_CF.replace("10.0.0.2", "beta-hb"), HARESOURCES, AUTHKEYS);
        let report = load(dir.path(), None, &resolving);
        assert_usable(&report);
        assert_eq!(
            report.config.expect("config").links[0].kind,
            LinkKind::Ucast {
                peer: ip("10.0.0.2")
            }
        );
    }

    #[test]
    fn crm_enabled() {
        let d = only_error(&format!("{HA_CF}crm respawn\n"), HARESOURCES, AUTHKEYS);
        check(
            &d,
            "ha.cf",
            Some(7),
            "crm respawn",
            "`crm respawn`: hb implements Heartbeat's haresources (R1) resource management only",
        );
    }

    #[test]
    fn deadtime_not_above_twice_keepalive() {
        let d = only_error(
            &HA_CF.replace("deadtime 10", "deadtime 2"),
            HARESOURCES,
            AUTHKEYS,
        );
        check(
            &d,
            "ha.cf",
            Some(2),
            "deadtime 2",
            "deadtime (2 s) must be more than twice keepalive (1 s)",
        );
    }

    #[test]
    fn initdead_below_deadtime() {
        let d = only_error(&format!("{HA_CF}initdead 5\n"), HARESOURCES, AUTHKEYS);
        check(
            &d,
            "ha.cf",
            Some(7),
            "initdead 5",
            "initdead (5 s) is smaller than deadtime (10 s)",
        );
    }

    #[test]
    fn no_communication_path() {
        let d = only_error(
            &HA_CF.replace("ucast eth0 10.0.0.2\n", ""),
            HARESOURCES,
            AUTHKEYS,
        );
        check(&d, "ha.cf", None, "", "no communication path");
    }

    #[test]
    fn local_node_not_listed() {
        let dir = write_config(HA_CF, HARESOURCES, AUTHKEYS);
        let report = load(dir.path(), Some("gamma"), &alpha());
        let errors: Vec<_> = report.errors().collect();
        assert_eq!(errors.len(), 1);
        check(errors[0], "ha.cf", None, "", "this node, `gamma` (from --node), is not in the configuration: the `node` lines list alpha, beta");
        let report = load(dir.path(), None, &host("Beta", &[]));
        assert!(report.is_usable(), "uname -n compares case-insensitively");
    }

    #[test]
    fn node_id_collision() {
        // FNV-1a-32("node129599") == FNV-1a-32("node732382")
        let d = only_error(
            &format!("{HA_CF}node node129599 node732382\n"),
            HARESOURCES,
            AUTHKEYS,
        );
        check(
            &d,
            "ha.cf",
            Some(7),
            "node node129599 node732382",
            "node names `node129599` and `node732382` have the same wire id",
        );
    }

    #[test]
    fn preferred_node_not_a_node() {
        let d = only_error(HA_CF, "gamma 10.0.0.100 nginx\n", AUTHKEYS);
        check(
            &d,
            "haresources",
            Some(1),
            "gamma 10.0.0.100 nginx",
            "preferred node `gamma` is not a node: ha.cf lists alpha, beta",
        );
    }

    #[test]
    fn duplicate_group() {
        let d = only_error(
            HA_CF,
            "alpha 10.0.0.100 nginx\nbeta 10.0.0.100 \\\n  haproxy\n",
            AUTHKEYS,
        );
        check(
            &d,
            "haresources",
            Some(2),
            "beta 10.0.0.100 \\ haproxy",
            "duplicate resource group `10.0.0.100` (first defined on line 1)",
        );
    }

    #[test]
    fn bad_resource_address() {
        let d = only_error(
            HA_CF,
            "alpha IPaddr2::10.0.0.100/255.0.255.0/eth0 nginx\n",
            AUTHKEYS,
        );
        check(
            &d,
            "haresources",
            Some(1),
            "alpha IPaddr2::10.0.0.100/255.0.255.0/eth0 nginx",
            "`IPaddr2::10.0.0.100/255.0.255.0/eth0`: `255.0.255.0` is not a netmask",
        );
    }

    #[test]
    fn missing_auth_index() {
        let d = only_error(HA_CF, HARESOURCES, "auth 2\n1 sha1 0123456789abcdef\n");
        check(
            &d,
            "authkeys",
            Some(1),
            "auth 2",
            "`auth 2` selects key 2, but no `2 METHOD KEY` line defines it",
        );
    }

    #[test]
    fn bad_auth_line() {
        let d = only_error(
            HA_CF,
            HARESOURCES,
            "auth 1\n1 sha1 0123456789abcdef\n2 crc k3y\n",
        );
        check(
            &d,
            "authkeys",
            Some(3),
            "2 crc <hidden>",
            "key 2: crc takes no key",
        );
    }

    #[test]
    fn unsafe_authkeys_mode() {
        let dir = write_config(HA_CF, HARESOURCES, AUTHKEYS);
        let keys = dir.path().join("authkeys");
        fs::set_permissions(&keys, fs::Permissions::from_mode(0o644)).expect("chmod");
        let report = load(dir.path(), None, &alpha());
        let errors: Vec<_> = report.errors().collect();
        assert_eq!(errors.len(), 1);
        check(
            errors[0],
            "authkeys",
            None,
            "",
            "authkeys has mode 0644: group or others can read or write the cluster key",
        );
        assert!(
            errors[0]
                .message
                .ends_with(&format!("Run: chmod 600 {}", keys.display())),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn authkeys_not_owned_by_root() {
        let dir = write_config(HA_CF, HARESOURCES, AUTHKEYS);
        let keys = dir.path().join("authkeys");
        let mut host = alpha();
        let euid = SystemHost.effective_uid();
        if euid == 0 {
            std::os::unix::fs::chown(&keys, Some(65534), None).expect("chown");
            host.uid = 0;
        } else {
            host.uid = euid + 1;
        }
        let report = load(dir.path(), None, &host);
        let errors: Vec<_> = report.errors().collect();
        assert_eq!(errors.len(), 1);
        check(errors[0], "authkeys", None, "", "authkeys belongs to uid");
        let fix = format!("Run: chown root:root {0} && chmod 600 {0}", keys.display());
        assert!(errors[0].message.ends_with(&fix), "{}", errors[0].message);
    }

    #[test]
    fn missing_file() {
        let dir = write_config(HA_CF, HARESOURCES, AUTHKEYS);
        fs::remove_file(dir.path().join("haresources")).expect("rm");
        let d = {
            let report = load(dir.path(), None, &alpha());
            let errors: Vec<_> = report.errors().cloned().collect();
            assert_eq!(errors.len(), 1);
            errors.into_iter().next().expect("error")
        };
        check(&d, "haresources", None, "", "cannot read haresources: no such file: hb reads Heartbeat's ha.cf, haresources and authkeys");
    }

    #[test]
    fn oversized_file() {
        let big = format!("{HA_CF}{}", "#\n".repeat(600_000));
        let d = only_error(&big, HARESOURCES, AUTHKEYS);
        check(
            &d,
            "ha.cf",
            None,
            "",
            "cannot read ha.cf: file is larger than 1024 KiB",
        );
    }

    #[test]
    fn too_many_udp_ports() {
        let lines: String = (0..9)
            .map(|i| format!("udpport {}\nbcast eth0\n", 700 + i))
            .collect();
        let d = only_error(&format!("{HA_CF}{lines}"), HARESOURCES, AUTHKEYS);
        check(
            &d,
            "ha.cf",
            None,
            "",
            "the communication lines use 10 different UDP ports (694, 700, 701",
        );
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let dir = write_config(
            &format!("{HA_CF}kepalive 2\ncrm yes\n"),
            "gamma 10.0.0.100 nginx\nalpha 10.0.0.300\n",
            "auth 4\n1 sha1 k\n",
        );
        let report = load(dir.path(), None, &alpha());
        let errors: Vec<_> = report.errors().map(|d| (file_name(d), d.line)).collect();
        assert_eq!(
            errors,
            [
                ("ha.cf".to_string(), Some(7)),
                ("ha.cf".to_string(), Some(8)),
                ("haresources".to_string(), Some(1)),
                ("haresources".to_string(), Some(2)),
                ("authkeys".to_string(), Some(1)),
            ]
        );
        let text = report.render_text();
        assert!(
            text.starts_with(&format!(
                "Configuration in {} is NOT usable.",
                dir.path().display()
            )),
            "{text}"
        );
        assert!(
            text.trim_end()
                .ends_with("5 errors, 0 warnings: hb will not start with this configuration"),
            "{text}"
        );
    }
}

/// hb's own directives, loaded together with the less common Heartbeat media.
mod hb_directives {
    use super::*;

    #[test]
    fn additions_and_ipv6_media() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/ha_cf/hb-additions"),
            dir.path().join("ha.cf"),
        )
        .expect("copy");
        fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/haresources/multi-line"),
            dir.path().join("haresources"),
        )
        .expect("copy");
        let keys = dir.path().join("authkeys");
        fs::copy(data("authkeys-for-tests"), &keys).expect("copy");
        fs::set_permissions(&keys, fs::Permissions::from_mode(0o600)).expect("chmod");
        let alpha = host(
            "alpha",
            &[
                ("eth0", &[("198.18.0.1", 24), ("198.18.1.1", 24)]),
                ("eth1", &[("2001:db8::1", 64)]),
            ],
        );
        let report = load(dir.path(), None, &alpha);
        assert_usable(&report);
        assert_warnings(&report, &[]);
        let config = report.config.expect("config");
        assert_eq!(config.timers.keepalive, Duration::from_millis(50));
        assert_eq!(config.timers.deadtime, Duration::from_millis(300));
        assert_eq!(config.timers.warntime, Duration::from_millis(150));
        assert_eq!(config.cluster_id, 42);
        assert_eq!(config.auto_failback, AutoFailback::Off);
        assert_eq!(config.xdp, XdpSetting::Skb);
        assert_eq!(
            (config.garp.count, config.garp.interval),
            (3, Duration::from_millis(100))
        );
        assert!(config.garp.request && !config.garp.reply);
        assert_eq!(config.garp.refresh, Some(Duration::from_secs(60)));
        assert_eq!(config.failback_delay, Duration::from_secs(5));
        assert_eq!(
            config.control_socket.as_deref(),
            Some(Path::new("/run/hb-agent/alpha.sock"))
        );
        assert_eq!(
            config.metrics,
            Some("[::1]:9694".parse().expect("socket address"))
        );
        let kinds: Vec<_> = config
            .links
            .iter()
            .map(|l| (l.iface.as_str(), l.port, l.kind.clone()))
            .collect();
        assert_eq!(
            kinds,
            [
                (
                    "eth0",
                    694,
                    LinkKind::Mcast {
                        group: ip("225.0.0.1"),
                        ttl: 1,
                        loopback: false
                    }
                ),
                (
                    "eth1",
                    694,
                    LinkKind::Mcast {
                        group: ip("ff02::1:3"),
                        ttl: 1,
                        loopback: false
                    }
                ),
                (
                    "eth1",
                    694,
                    LinkKind::Ucast {
                        peer: ip("2001:db8::2")
                    }
                ),
            ]
        );
        assert_eq!(config.ping.nodes, [ip("10.0.0.254")]);
        assert_eq!(
            config.ping.groups,
            [("gw".to_string(), vec![ip("10.0.0.254"), ip("10.0.0.253")])]
        );
        assert_eq!(config.ping.deadping, Some(Duration::from_secs(1)));
        let groups: Vec<Vec<String>> = config
            .groups
            .iter()
            .map(|g| g.resources.iter().map(|r| r.to_string()).collect())
            .collect();
        assert_eq!(
            groups,
            [
                vec![
                    "IPaddr2::198.18.0.10/24/eth0/198.18.0.255".to_string(),
                    "IPv6addr::2001:db8::10/64/eth0".to_string(),
                    "Filesystem::/dev/sda1::/data::ext4".to_string(),
                    "nginx".to_string(),
                ],
                vec![
                    "198.18.1.10".to_string(),
                    "IPaddr::198.18.1.11/24".to_string(),
                    "haproxy".to_string()
                ],
            ]
        );
        assert_eq!(config.groups[1].preferred, "beta");
        let route_derived = config
            .resolve_iface(&config.groups[1].resources[0], &alpha)
            .expect("route")
            .expect("address");
        assert_eq!(
            (route_derived.device.as_str(), route_derived.prefix),
            ("eth0", 24)
        );
        assert_eq!(
            route_derived.broadcast,
            Some(Ipv4Addr::new(198, 18, 1, 255))
        );
        assert_eq!(
            config.resolve_iface(&config.groups[0].resources[3], &alpha),
            Ok(None)
        );
    }
}
