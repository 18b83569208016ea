//! The loader: reads the three files, checks them against each other and against the host,
//! and produces either a [`Config`] or the reasons it cannot (all of them at once).

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hb_common::maps::MAX_UDP_PORTS;
use hb_common::wire::{fnv1a32, node_id, FNV1A32_START, MAX_GROUPS};

use super::addr::device_of;
use super::authkeys::{check_key_file_security, parse_authkeys};
use super::diag::{Diagnostic, Reporter, Severity};
use super::hacf::{check_node_name, parse_ha_cf, AtLine, HaCf, HostRef, LinkLineKind};
use super::haresources::{parse_haresources, HaResources};
use super::host::HostView;
use super::text::{display_text, raw_lines, read_capped, ReadError};
use super::timer::format_time;
use super::{
    AuthKeys, AutoFailback, Config, Link, LinkKind, Node, Origin, PingSettings, Resource,
    ResourceGroup, Timers,
};

pub const HA_CF: &str = "ha.cf";
pub const HARESOURCES: &str = "haresources";
pub const AUTHKEYS: &str = "authkeys";

/// Heartbeat's defaults (`init_config()` in Heartbeat 3).
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(1);
pub const DEFAULT_DEADTIME: Duration = Duration::from_secs(30);

/// Heartbeat waited for a resource script forever, so one hung script froze failover for
/// good. Pacemaker's default operation timeout is 20 s; 30 s leaves room for a service that
/// warms up (loads certificates, fills caches) while bounding how long a group can be stuck.
/// A stop gets the same bound: failback and standby wait for the release.
pub const DEFAULT_RESOURCE_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything `check-config` and `run` need: the configuration when it is usable, and every
/// diagnostic either way.
#[derive(Clone, Debug)]
pub struct LoadReport {
    pub dir: PathBuf,
    /// `Some` only when no diagnostic is an error.
    pub config: Option<Config>,
    /// Ordered by file (ha.cf, haresources, authkeys), then line.
    pub diagnostics: Vec<Diagnostic>,
    /// This machine's addresses when loading: `ucast` lines to them are not used here.
    pub local_addrs: Vec<IpAddr>,
}

impl LoadReport {
    pub fn is_usable(&self) -> bool {
        self.config.is_some()
    }

    /// `check-config`'s exit status: 0 when usable, 1 when not.
    pub fn exit_code(&self) -> i32 {
        if self.is_usable() {
            0
        } else {
            1
        }
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
    }
}

/// Reads `ha.cf`, `haresources` and `authkeys` from `dir` and checks them for the node named
/// `node_override` (or this host's `uname -n`).
pub fn load(dir: &Path, node_override: Option<&str>, host: &dyn HostView) -> LoadReport {
    let ha_cf_path = dir.join(HA_CF);
    let haresources_path = dir.join(HARESOURCES);
    let authkeys_path = dir.join(AUTHKEYS);
    let mut diagnostics = Vec::new();

    let mut ha_cf_data = Vec::new();
    let hacf = match read_capped(&ha_cf_path) {
        Ok(data) => {
            let parsed = parse_ha_cf(&data, &ha_cf_path);
            diagnostics.extend(parsed.diagnostics);
            ha_cf_data = data;
            Some(parsed.hacf)
        }
        Err(err) => {
            diagnostics.push(unreadable(&ha_cf_path, &err));
            None
        }
    };
    let resources = match read_capped(&haresources_path) {
        Ok(data) => {
            let mut parsed = parse_haresources(&data, &haresources_path);
            diagnostics.append(&mut parsed.diagnostics);
            Some(parsed)
        }
        Err(err) => {
            diagnostics.push(unreadable(&haresources_path, &err));
            None
        }
    };
    let auth = read_authkeys(&authkeys_path, host, &mut diagnostics);

    let local_addrs = host.local_addrs();
    let mut checker = Checker {
        ha_cf_data,
        ha_cf: Reporter::new(&ha_cf_path),
        haresources: Reporter::new(&haresources_path),
        host,
    };
    let config = checker.combine(dir, node_override, hacf, resources, auth);
    diagnostics.extend(checker.ha_cf.finish());
    diagnostics.extend(checker.haresources.finish());

    let order = |d: &Diagnostic| {
        let file = [&ha_cf_path, &haresources_path, &authkeys_path]
            .iter()
            .position(|p| **p == d.file);
        (file.unwrap_or(3), d.line.unwrap_or(0))
    };
    diagnostics.sort_by_key(order);
    let has_errors = diagnostics.iter().any(|d| d.severity == Severity::Error);
    LoadReport {
        dir: dir.to_path_buf(),
        config: if has_errors { None } else { config },
        diagnostics,
        local_addrs,
    }
}

fn unreadable(path: &Path, err: &ReadError) -> Diagnostic {
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let hint = match err {
        ReadError::NotFound => format!(
            ": hb reads Heartbeat's ha.cf, haresources and authkeys from {} (see --config-dir)",
            path.parent()
                .map_or_else(|| ".".into(), |p| p.display().to_string())
        ),
        _ => String::new(),
    };
    Diagnostic {
        severity: Severity::Error,
        file: path.to_path_buf(),
        line: None,
        text: String::new(),
        message: format!("cannot read {name}: {err}{hint}"),
    }
}

fn read_authkeys(
    path: &Path,
    host: &dyn HostView,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<AuthKeys> {
    // Permissions first, as Heartbeat did: a world-readable key is refused even if valid.
    match std::fs::metadata(path) {
        Ok(meta) => {
            let problems = check_key_file_security(path, &meta, host.effective_uid());
            let unsafe_file = !problems.is_empty();
            diagnostics.extend(problems);
            if unsafe_file {
                return None;
            }
        }
        Err(err) => {
            let err = if err.kind() == std::io::ErrorKind::NotFound {
                ReadError::NotFound
            } else {
                ReadError::Io(err)
            };
            diagnostics.push(unreadable(path, &err));
            return None;
        }
    }
    match read_capped(path) {
        Ok(data) => {
            let parsed = parse_authkeys(&data, path);
            diagnostics.extend(parsed.diagnostics);
            parsed.keys
        }
        Err(err) => {
            diagnostics.push(unreadable(path, &err));
            None
        }
    }
}

struct Checker<'h> {
    /// `ha.cf` as read, to quote its lines in cross-file diagnostics.
    ha_cf_data: Vec<u8>,
    ha_cf: Reporter,
    haresources: Reporter,
    host: &'h dyn HostView,
}

impl Checker<'_> {
    /// Line `number` of ha.cf as written.
    fn hacf_line(&self, number: usize) -> String {
        raw_lines(&self.ha_cf_data)
            .nth(number.saturating_sub(1))
            .map(|line| display_text(line.bytes).trim_start().to_string())
            .unwrap_or_default()
    }

    fn hacf_error(&mut self, line: usize, message: String) {
        let text = self.hacf_line(line);
        self.ha_cf.error(line, &text, message);
    }

    fn hacf_warning(&mut self, line: usize, message: String) {
        let text = self.hacf_line(line);
        self.ha_cf.warning(line, &text, message);
    }

    fn combine(
        &mut self,
        dir: &Path,
        node_override: Option<&str>,
        hacf: Option<HaCf>,
        resources: Option<HaResources>,
        auth: Option<AuthKeys>,
    ) -> Option<Config> {
        let hacf = hacf?;
        let nodes = self.nodes(&hacf);
        let local_node = self.local_node(&hacf, node_override);
        let timers = self.timers(&hacf);
        let links = self.links(&hacf);
        let ping = self.ping(&hacf, timers.as_ref());
        let groups = resources.map(|r| self.groups(&hacf, r)).unwrap_or_default();
        let auto_failback = match hacf.auto_failback {
            Some(setting) => setting.value,
            None => {
                self.ha_cf.file_warning(
                    "no `auto_failback` line: Heartbeat's default `legacy` applies. Put \
                     `auto_failback on` (resources return to their preferred node) or `off` in ha.cf",
                );
                AutoFailback::Legacy
            }
        };
        let cluster_id = hacf
            .cluster_id
            .unwrap_or_else(|| derived_cluster_id(&nodes));
        Some(Config {
            dir: dir.to_path_buf(),
            local_node: local_node?,
            nodes,
            timers: timers?,
            links,
            auto_failback,
            groups,
            auth: auth?,
            cluster_id,
            realtime: hacf.realtime,
            xdp: hacf.xdp,
            log: hacf.log.clone(),
            garp: hacf.garp,
            failback_delay: hacf.failback_delay,
            resource_timeout: hacf.resource_timeout.unwrap_or(DEFAULT_RESOURCE_TIMEOUT),
            control_socket: hacf.control_socket.clone(),
            metrics: hacf.metrics,
            ping: ping?,
        })
    }

    fn nodes(&mut self, hacf: &HaCf) -> Vec<Node> {
        if hacf.nodes.is_empty() {
            self.ha_cf.file_error(
                "no `node` lines: list every cluster node by the name `uname -n` prints, e.g. `node alpha beta`",
            );
        }
        let mut nodes: Vec<Node> = Vec::with_capacity(hacf.nodes.len());
        for entry in &hacf.nodes {
            let id = node_id(entry.value.as_bytes());
            if let Some(other) = nodes.iter().find(|n| n.id == id) {
                let message = format!(
                    "node names `{}` and `{}` have the same wire id {id:#010x}; hb cannot tell them \
                     apart on the wire: rename one of them",
                    other.name, entry.value
                );
                self.hacf_error(entry.line, message);
                continue;
            }
            nodes.push(Node {
                name: entry.value.clone(),
                id,
            });
        }
        nodes
    }

    fn local_node(&mut self, hacf: &HaCf, node_override: Option<&str>) -> Option<String> {
        let (name, source) = match node_override {
            Some(name) => (name.to_string(), "--node"),
            None => {
                match self.host.hostname() {
                    Some(name) => (name, "`uname -n`"),
                    None => {
                        self.ha_cf.file_error("cannot determine this node's name (`uname -n` failed): pass --node NAME");
                        return None;
                    }
                }
            }
        };
        if let Err(why) = check_node_name(&name) {
            self.ha_cf.file_error(format!(
                "this node's name `{name}` (from {source}) is not a node name: {why}"
            ));
            return None;
        }
        let lower = name.to_lowercase();
        if hacf.nodes.iter().any(|n| n.value == lower) {
            return Some(lower);
        }
        if !hacf.nodes.is_empty() {
            self.ha_cf.file_error(format!(
                "this node, `{lower}` (from {source}), is not in the configuration: the `node` lines list {}. \
                 Heartbeat names nodes by `uname -n`; add `node {lower}` or run with --node NAME",
                list_names(hacf)
            ));
        }
        None
    }

    fn timers(&mut self, hacf: &HaCf) -> Option<Timers> {
        let keepalive = hacf.keepalive.map_or(DEFAULT_KEEPALIVE, |t| t.value);
        let deadtime = hacf.deadtime.map_or(DEFAULT_DEADTIME, |t| t.value);
        let warntime = hacf.warntime.map_or(deadtime / 2, |t| t.value);
        let initdead = hacf
            .initdead
            .map_or_else(|| default_initdead(deadtime), |t| t.value);
        let (keepalive_text, deadtime_text) = (format_time(keepalive), format_time(deadtime));
        let mut usable = true;

        if deadtime <= keepalive * 2 {
            let message = format!(
                "deadtime ({deadtime_text}) must be more than twice keepalive ({keepalive_text}): \
                 otherwise two late heartbeats declare a live node dead (Heartbeat refused this too)"
            );
            match hacf.deadtime.or(hacf.keepalive) {
                Some(setting) => self.hacf_error(setting.line, message),
                None => self.ha_cf.file_error(message),
            }
            usable = false;
        }
        if let Some(AtLine { value, line }) = hacf.warntime {
            let warntime_text = format_time(value);
            if value >= deadtime {
                self.hacf_warning(
                    line,
                    format!(
                        "warntime ({warntime_text}) is not below deadtime ({deadtime_text}): the \
                         late-heartbeat warning can never come before the node is declared dead"
                    ),
                );
            } else if value <= keepalive {
                self.hacf_warning(
                    line,
                    format!(
                        "warntime ({warntime_text}) is not above keepalive ({keepalive_text}): every \
                         heartbeat would count as late"
                    ),
                );
            }
        }
        let initdead_text = format_time(initdead);
        if initdead < deadtime {
            let message = format!(
                "initdead ({initdead_text}) is smaller than deadtime ({deadtime_text}) (Heartbeat \
                 refused this too): it should be at least twice deadtime"
            );
            match hacf.initdead {
                Some(setting) => self.hacf_error(setting.line, message),
                None => self.ha_cf.file_error(message),
            }
            usable = false;
        } else if let Some(AtLine { value, line }) = hacf.initdead {
            if value < deadtime * 2 {
                self.hacf_warning(
                    line,
                    format!(
                        "initdead ({initdead_text}) is less than twice deadtime ({deadtime_text}): \
                         after a reboot the network may not be up before the peer is declared dead"
                    ),
                );
            }
        }
        if let Some(AtLine { value, line }) = hacf.deadping {
            if value <= keepalive * 2 {
                self.hacf_error(
                    line,
                    format!(
                        "deadping ({}) must be more than twice keepalive ({keepalive_text}) \
                         (Heartbeat refused this too)",
                        format_time(value)
                    ),
                );
                usable = false;
            }
        }
        usable.then_some(Timers {
            keepalive,
            deadtime,
            warntime,
            initdead,
        })
    }

    fn links(&mut self, hacf: &HaCf) -> Vec<Link> {
        if hacf.links.is_empty() {
            self.ha_cf.file_error(
                "no communication path: add a `ucast IFACE PEER`, `bcast IFACE` or `mcast IFACE GROUP \
                 PORT TTL LOOP` line (Heartbeat: \"No heartbeat media defined\")",
            );
        }
        let mut links = Vec::with_capacity(hacf.links.len());
        let mut checked_ifaces: HashSet<&str> = HashSet::new();
        for line in &hacf.links {
            if checked_ifaces.insert(line.iface.as_str())
                && !self.host.interface_exists(&line.iface)
            {
                self.hacf_warning(
                    line.line,
                    format!(
                        "interface `{}` does not exist on this machine: heartbeats cannot use it here \
                         (fine if this configuration is meant for another machine)",
                        line.iface
                    ),
                );
            }
            let kind = match &line.kind {
                LinkLineKind::Bcast => LinkKind::Bcast,
                LinkLineKind::Mcast {
                    group,
                    ttl,
                    loopback,
                } => LinkKind::Mcast {
                    group: *group,
                    ttl: *ttl,
                    loopback: *loopback,
                },
                LinkLineKind::Ucast { peer, ipv6_only } => {
                    match self.resolve(peer, *ipv6_only) {
                        Some(addr) => LinkKind::Ucast { peer: addr },
                        None => {
                            self.hacf_error(
                                line.line,
                                format!("cannot resolve host `{peer}` to an address for this ucast line"),
                            );
                            continue;
                        }
                    }
                }
            };
            links.push(Link {
                iface: line.iface.clone(),
                port: line.port,
                kind,
                origin: Origin {
                    file: self.ha_cf.file().to_path_buf(),
                    line: line.line,
                },
            });
        }
        let mut ports: Vec<u16> = links.iter().map(|l| l.port).collect();
        ports.sort_unstable();
        ports.dedup();
        if ports.len() > MAX_UDP_PORTS {
            let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
            self.ha_cf.file_error(format!(
                "the communication lines use {} different UDP ports ({}); hb listens on at most {MAX_UDP_PORTS}",
                ports.len(),
                ports.join(", ")
            ));
        }
        let local = self.host.local_addrs();
        if !links.is_empty()
            && links
                .iter()
                .all(|l| matches!(l.kind, LinkKind::Ucast { peer } if local.contains(&peer)))
        {
            self.ha_cf.file_warning(
                "every ucast line points at an address of this machine, and those are skipped (as in \
                 Heartbeat): this node would send heartbeats nowhere",
            );
        }
        links
    }

    fn resolve(&self, target: &HostRef, ipv6_only: bool) -> Option<IpAddr> {
        match target {
            HostRef::Addr(addr) => Some(*addr),
            HostRef::Name(name) => {
                let addrs = self.host.resolve_host(name);
                // Heartbeat's gethostbyname() gave IPv4; ucast6/ping6 want IPv6.
                addrs
                    .iter()
                    .find(|a| a.is_ipv6() == ipv6_only)
                    .or_else(|| if ipv6_only { None } else { addrs.first() })
                    .copied()
            }
        }
    }

    fn ping(&mut self, hacf: &HaCf, timers: Option<&Timers>) -> Option<PingSettings> {
        let mut settings = PingSettings {
            deadping: Some(hacf.deadping.map_or_else(
                || timers.map_or(DEFAULT_DEADTIME, |t| t.deadtime),
                |d| d.value,
            )),
            ..PingSettings::default()
        };
        let mut ok = true;
        for entry in &hacf.ping_nodes {
            match self.resolve(&entry.value, false) {
                Some(addr) if !settings.nodes.contains(&addr) => settings.nodes.push(addr),
                Some(_) => {}
                None => {
                    self.hacf_error(
                        entry.line,
                        format!("cannot resolve ping node `{}`", entry.value),
                    );
                    ok = false;
                }
            }
        }
        for entry in &hacf.ping_groups {
            let (name, members) = &entry.value;
            let mut addrs = Vec::with_capacity(members.len());
            for member in members {
                match self.resolve(member, false) {
                    Some(addr) => addrs.push(addr),
                    None => {
                        self.hacf_error(entry.line, format!("cannot resolve ping node `{member}`"));
                        ok = false;
                    }
                }
            }
            settings.groups.push((name.clone(), addrs));
        }
        if settings.nodes.is_empty() && settings.groups.is_empty() && hacf.deadping.is_none() {
            settings.deadping = None;
        }
        ok.then_some(settings)
    }

    fn groups(&mut self, hacf: &HaCf, parsed: HaResources) -> Vec<ResourceGroup> {
        if parsed.groups.is_empty() && parsed.diagnostics.is_empty() {
            self.haresources
                .file_warning("no resource groups: hb will exchange heartbeats but manage nothing");
        }
        let mut groups = Vec::with_capacity(parsed.groups.len());
        let mut checked_ifaces: HashSet<String> = HashSet::new();
        for (group, text) in parsed.groups.into_iter().zip(parsed.texts) {
            let line = group.origin.line;
            if !hacf.nodes.is_empty() && !hacf.nodes.iter().any(|n| n.value == group.preferred) {
                self.haresources.error(
                    line,
                    &text,
                    format!(
                        "preferred node `{}` is not a node: ha.cf lists {} (names compare case-insensitively)",
                        group.preferred,
                        list_names(hacf)
                    ),
                );
                continue;
            }
            if groups.len() == MAX_GROUPS {
                self.haresources.error(
                    line,
                    &text,
                    format!(
                        "more than {MAX_GROUPS} resource groups: hb supports at most {MAX_GROUPS}"
                    ),
                );
                continue;
            }
            for resource in &group.resources {
                self.check_resource_host(line, &text, resource, &mut checked_ifaces);
            }
            groups.push(group);
        }
        groups
    }

    /// Interface checks are warnings: `check-config` may run on another machine.
    fn check_resource_host(
        &mut self,
        line: usize,
        text: &str,
        resource: &Resource,
        checked: &mut HashSet<String>,
    ) {
        let (addr, iface) = match resource {
            Resource::Ipv4 { addr, iface, .. } => (IpAddr::V4(*addr), iface),
            Resource::Ipv6 { addr, iface, .. } => (IpAddr::V6(*addr), iface),
            Resource::Script { .. } => return,
        };
        match iface {
            Some(iface) => {
                let device = device_of(iface);
                if checked.insert(device.to_string()) && !self.host.interface_exists(device) {
                    self.haresources.warning(
                        line,
                        text,
                        format!("interface `{device}` does not exist on this machine (fine if this configuration is meant for another machine)"),
                    );
                }
            }
            None => {
                if self.host.connected_route_iface(addr).is_none() {
                    self.haresources.warning(
                        line,
                        text,
                        format!(
                            "no interface on this machine has a connected route covering {addr}, so \
                             hb cannot tell where to add it here: name the interface (e.g. `{}`), \
                             or ignore this if the configuration is meant for another machine",
                            example_with_iface(resource)
                        ),
                    );
                }
            }
        }
    }
}

/// The node names for a message: the first few, then how many more.
fn list_names(hacf: &HaCf) -> String {
    const SHOWN: usize = 8;
    let mut names: Vec<&str> = hacf
        .nodes
        .iter()
        .take(SHOWN)
        .map(|n| n.value.as_str())
        .collect();
    let more = hacf.nodes.len().saturating_sub(SHOWN);
    let more = format!("… and {more} more");
    if hacf.nodes.len() > SHOWN {
        names.push(&more);
    }
    names.join(", ")
}

fn example_with_iface(resource: &Resource) -> String {
    match resource {
        Resource::Ipv4 { addr, prefix, .. } => {
            format!("IPaddr2::{addr}/{}/eth1", prefix.unwrap_or(24))
        }
        Resource::Ipv6 { addr, prefix, .. } => format!("IPv6addr::{addr}/{prefix}/eth1"),
        Resource::Script { name, .. } => name.clone(),
    }
}

/// Heartbeat's initdead default: deadtime when above 10 s, 12 s when below 6 s, else twice
/// deadtime.
pub fn default_initdead(deadtime: Duration) -> Duration {
    if deadtime > Duration::from_secs(10) {
        deadtime
    } else if deadtime < Duration::from_secs(6) {
        Duration::from_secs(12)
    } else {
        deadtime * 2
    }
}

/// FNV-1a over the sorted node names, each followed by a NUL, so the id depends on the set of
/// nodes, not on the order of the `node` lines.
pub fn derived_cluster_id(nodes: &[Node]) -> u32 {
    let mut names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    names.sort_unstable();
    names.iter().fold(FNV1A32_START, |hash, name| {
        fnv1a32(&[0], fnv1a32(name.as_bytes(), hash))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initdead_defaults_follow_heartbeat() {
        assert_eq!(
            default_initdead(Duration::from_secs(30)),
            Duration::from_secs(30)
        );
        assert_eq!(
            default_initdead(Duration::from_secs(10)),
            Duration::from_secs(20)
        );
        assert_eq!(
            default_initdead(Duration::from_secs(5)),
            Duration::from_secs(12)
        );
        assert_eq!(
            default_initdead(Duration::from_millis(300)),
            Duration::from_secs(12)
        );
    }

    #[test]
    fn cluster_id_ignores_node_order() {
        let a = Node {
            name: "alpha".into(),
            id: node_id(b"alpha"),
        };
        let b = Node {
            name: "beta".into(),
            id: node_id(b"beta"),
        };
        let c = Node {
            name: "gamma".into(),
            id: node_id(b"gamma"),
        };
        assert_eq!(
            derived_cluster_id(&[a.clone(), b.clone()]),
            derived_cluster_id(&[b.clone(), a.clone()])
        );
        assert_ne!(
            derived_cluster_id(&[a.clone(), b.clone()]),
            derived_cluster_id(&[a, c])
        );
        // Names are separated, so "ab"+"c" differs from "a"+"bc".
        let ab = Node {
            name: "ab".into(),
            id: 0,
        };
        let cc = Node {
            name: "c".into(),
            id: 0,
        };
        let aa = Node {
            name: "a".into(),
            id: 0,
        };
        let bc = Node {
            name: "bc".into(),
            id: 0,
        };
        assert_ne!(derived_cluster_id(&[ab, cc]), derived_cluster_id(&[aa, bc]));
    }
}
