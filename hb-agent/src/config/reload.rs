//! What a reload (SIGHUP) may change in a running agent, and what only a restart can.
//!
//! Applied live: timers, authentication keys, where heartbeats are sent (ucast peers,
//! broadcast and multicast lines on the interfaces and ports already listened on), resource
//! groups (added, removed, resources added to or removed from a group), auto_failback,
//! failback_delay, garp settings and resource_timeout.
//!
//! Only at restart: the node list and cluster id (the kernel filter and every peer's
//! identity hang on them), the receive side (interfaces, ports, address families and
//! multicast groups listened on: the XDP attachments and sockets), the xdp and realtime
//! settings, the control socket, the metrics address and the log settings. A reload that
//! changes any of these applies nothing: a half-applied configuration would be one nobody
//! wrote.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::timer::format_time;
use super::{Config, Link, LinkKind};

/// The differences between the running configuration and the one just read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConfigChanges {
    /// What can be applied now, one phrase each (for the log).
    pub live: Vec<String>,
    /// What needs a restart, one phrase each.
    pub restart: Vec<String>,
}

impl ConfigChanges {
    pub fn is_empty(&self) -> bool {
        self.live.is_empty() && self.restart.is_empty()
    }
}

/// Compares `old` and `new`; `local_addrs` drops ucast lines to this node's own addresses,
/// as at start.
pub fn changes(old: &Config, new: &Config, local_addrs: &[IpAddr]) -> ConfigChanges {
    let mut out = ConfigChanges::default();
    let live = &mut out.live;
    let t = (old.timers, new.timers);
    for (name, before, after) in [
        ("keepalive", t.0.keepalive, t.1.keepalive),
        ("deadtime", t.0.deadtime, t.1.deadtime),
        ("warntime", t.0.warntime, t.1.warntime),
        ("initdead", t.0.initdead, t.1.initdead),
    ] {
        if before != after {
            live.push(format!(
                "{name} {} -> {}",
                format_time(before),
                format_time(after)
            ));
        }
    }
    if old.auth != new.auth {
        live.push(format!(
            "authkeys (active key {} -> {})",
            old.auth.active, new.auth.active
        ));
    }
    let (old_links, new_links) = (
        old.effective_links(local_addrs),
        new.effective_links(local_addrs),
    );
    if destinations(&old_links) != destinations(&new_links) {
        live.push(format!(
            "heartbeat destinations ({} -> {} lines)",
            old_links.len(),
            new_links.len()
        ));
    }
    for index in 0..old.groups.len().max(new.groups.len()) {
        match (old.groups.get(index), new.groups.get(index)) {
            (Some(a), Some(b)) if a.resources != b.resources || a.preferred != b.preferred => live
                .push(format!(
                    "resource group {}: {} -> {}",
                    index + 1,
                    a.name,
                    b.name
                )),
            (Some(a), None) => {
                live.push(format!("resource group {} removed: {}", index + 1, a.name))
            }
            (None, Some(b)) => live.push(format!("resource group {} added: {}", index + 1, b.name)),
            _ => {}
        }
    }
    if old.auto_failback != new.auto_failback {
        live.push(format!(
            "auto_failback {:?} -> {:?}",
            old.auto_failback, new.auto_failback
        ));
    }
    if old.failback_delay != new.failback_delay {
        live.push(format!(
            "failback_delay {} -> {}",
            format_time(old.failback_delay),
            format_time(new.failback_delay)
        ));
    }
    if old.garp != new.garp {
        live.push("garp settings".to_owned());
    }
    if old.resource_timeout != new.resource_timeout {
        live.push(format!(
            "resource_timeout {} -> {}",
            format_time(old.resource_timeout),
            format_time(new.resource_timeout)
        ));
    }

    let restart = &mut out.restart;
    if old.nodes != new.nodes {
        restart.push("the node list".to_owned());
    }
    if old.cluster_id != new.cluster_id {
        restart.push("cluster_id".to_owned());
    }
    if listened_on(&old_links) != listened_on(&new_links) {
        restart.push(
            "the interfaces, ports or multicast groups heartbeats are received on".to_owned(),
        );
    }
    if old.xdp != new.xdp {
        restart.push("xdp".to_owned());
    }
    if old.realtime != new.realtime {
        restart.push("realtime".to_owned());
    }
    if old.control_socket != new.control_socket {
        restart.push("control_socket".to_owned());
    }
    if old.metrics != new.metrics {
        restart.push("metrics".to_owned());
    }
    if old.log != new.log {
        restart.push("the log settings".to_owned());
    }
    if old.ping != new.ping {
        restart.push("ping nodes".to_owned());
    }
    out
}

/// Where heartbeats go, whatever line they were written on.
fn destinations(links: &[Link]) -> Vec<(&str, u16, &LinkKind)> {
    links
        .iter()
        .map(|link| (link.iface.as_str(), link.port, &link.kind))
        .collect()
}

/// What the receive side is opened on: interface, port, address family, multicast group.
fn listened_on(links: &[Link]) -> BTreeSet<(String, u16, bool, Option<IpAddr>)> {
    links
        .iter()
        .map(|link| {
            let (ipv6, group) = match link.kind {
                LinkKind::Ucast { peer } => (peer.is_ipv6(), None),
                LinkKind::Bcast => (false, None),
                LinkKind::Mcast { group, .. } => (group.is_ipv6(), Some(group)),
            };
            (link.iface.clone(), link.port, ipv6, group)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{load, StaticHost};

    const HA_CF: &str = "keepalive 10ms\ndeadtime 50ms\nnode alpha beta\nucast eth1 198.18.2.12\nucast eth1 198.18.2.11\nauto_failback on\n";
    const HARESOURCES: &str = "alpha IPaddr::198.18.1.10/24/eth0 nginx\n";
    const AUTHKEYS: &str = "auth 1\n1 sha1 secret-one\n";

    fn config(ha_cf: &str, haresources: &str, authkeys: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str, mode: u32| {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write("ha.cf", ha_cf, 0o644);
        write("haresources", haresources, 0o644);
        write("authkeys", authkeys, 0o600);
        let host = StaticHost::new(
            "alpha",
            &[
                ("eth0", &[("198.18.1.11", 24)]),
                ("eth1", &[("198.18.2.11", 24)]),
            ],
        )
        .unwrap();
        let mut config = load(dir.path(), Some("alpha"), &host)
            .config
            .expect("valid test configuration");
        // Compared by content, not by where it was read from.
        config.dir = Path::new("/etc/ha.d").to_path_buf();
        config
    }

    fn local() -> Vec<IpAddr> {
        vec!["198.18.2.11".parse().unwrap()]
    }

    #[test]
    fn same_files_change_nothing() {
        let a = config(HA_CF, HARESOURCES, AUTHKEYS);
        let b = config(HA_CF, HARESOURCES, AUTHKEYS);
        assert!(changes(&a, &b, &local()).is_empty());
    }

    #[test]
    fn timers_keys_groups_and_destinations_apply_live() {
        let a = config(HA_CF, HARESOURCES, AUTHKEYS);
        let b = config(
            &HA_CF
                .replace("keepalive 10ms", "keepalive 5ms")
                .replace("198.18.2.12", "198.18.2.13"),
            "alpha IPaddr::198.18.1.10/24/eth0 IPaddr::198.18.1.20/24/eth0 nginx\nbeta IPaddr::198.18.1.30/24/eth0\n",
            "auth 2\n1 sha1 secret-one\n2 sha1 secret-two\n",
        );
        let found = changes(&a, &b, &local());
        assert!(found.restart.is_empty(), "{found:?}");
        let live = found.live.join("; ");
        for expected in [
            "keepalive 10 ms -> 5 ms",
            "authkeys (active key 1 -> 2)",
            "heartbeat destinations",
            "resource group 1: IPaddr::198.18.1.10/24/eth0 -> IPaddr::198.18.1.10/24/eth0",
            "resource group 2 added: IPaddr::198.18.1.30/24/eth0",
        ] {
            assert!(live.contains(expected), "{expected:?} not in {live:?}");
        }
        assert!(!live.contains("deadtime"), "{live}");
    }

    #[test]
    fn identity_and_receive_side_need_a_restart() {
        let a = config(HA_CF, HARESOURCES, AUTHKEYS);
        let b = config(
            &HA_CF
                .replace("node alpha beta", "node alpha beta gamma")
                .replace(
                    "ucast eth1 198.18.2.12",
                    "udpport 695\nucast eth1 198.18.2.12",
                ),
            HARESOURCES,
            AUTHKEYS,
        );
        let found = changes(&a, &b, &local());
        assert_eq!(
            found.restart,
            vec![
                "the node list".to_owned(),
                "cluster_id".to_owned(),
                "the interfaces, ports or multicast groups heartbeats are received on".to_owned(),
            ]
        );
    }

    #[test]
    fn a_removed_group_is_named() {
        let a = config(
            HA_CF,
            "alpha IPaddr::198.18.1.10/24/eth0\nbeta IPaddr::198.18.1.30/24/eth0\n",
            AUTHKEYS,
        );
        let b = config(HA_CF, "alpha IPaddr::198.18.1.10/24/eth0\n", AUTHKEYS);
        let found = changes(&a, &b, &local());
        assert_eq!(
            found.live,
            vec!["resource group 2 removed: IPaddr::198.18.1.30/24/eth0".to_owned()]
        );
        assert_eq!(changes(&a, &a, &local()), ConfigChanges::default());
    }
}
