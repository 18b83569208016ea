//! What `hb-agent check-config` prints: the effective configuration (timers in ms, links,
//! nodes with their wire ids, groups with ordered resources, auth method and index, hb
//! additions) and every diagnostic, as text or JSON. Key material is never included.

use std::fmt::Write as _;
use std::net::IpAddr;

use serde::Serialize;

use super::authkeys::method_name;
use super::diag::Diagnostic;
use super::load::LoadReport;
use super::timer::format_time;
use super::{AutoFailback, Config, IpAgent, Link, LinkKind, Resource, XdpSetting};

fn ms(d: std::time::Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

#[derive(Serialize)]
struct ReportView<'a> {
    usable: bool,
    config_dir: String,
    errors: usize,
    warnings: usize,
    config: Option<ConfigView<'a>>,
    diagnostics: &'a [Diagnostic],
}

#[derive(Serialize)]
struct ConfigView<'a> {
    local_node: &'a str,
    cluster_id: u32,
    nodes: Vec<NodeView<'a>>,
    timers_ms: TimersView,
    links: Vec<LinkView>,
    auto_failback: &'static str,
    groups: Vec<GroupView<'a>>,
    auth: AuthView,
    ping: PingView<'a>,
    realtime: bool,
    xdp: &'static str,
    log: LogView<'a>,
    garp: GarpView,
    failback_delay_ms: u64,
    resource_timeout_ms: u64,
    control_socket: Option<String>,
    metrics: Option<String>,
}

#[derive(Serialize)]
struct NodeView<'a> {
    name: &'a str,
    id: u32,
    local: bool,
}

#[derive(Serialize)]
struct TimersView {
    keepalive: u64,
    deadtime: u64,
    warntime: u64,
    initdead: u64,
}

#[derive(Serialize)]
struct LinkView {
    kind: &'static str,
    iface: String,
    port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    loopback: Option<bool>,
    /// False for a ucast line to one of this machine's own addresses.
    used_here: bool,
    file: String,
    line: usize,
}

#[derive(Serialize)]
struct GroupView<'a> {
    name: &'a str,
    preferred: &'a str,
    resources: Vec<ResourceView<'a>>,
    file: String,
    line: usize,
}

#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum ResourceView<'a> {
    Ipv4 {
        agent: &'static str,
        addr: String,
        prefix: Option<u8>,
        iface: Option<&'a str>,
        broadcast: Option<String>,
        text: String,
    },
    Ipv6 {
        addr: String,
        prefix: u8,
        iface: Option<&'a str>,
        text: String,
    },
    Script {
        name: &'a str,
        args: &'a [String],
        text: String,
    },
}

#[derive(Serialize)]
struct AuthView {
    active_index: u8,
    active_method: &'static str,
    keys: Vec<KeyView>,
}

#[derive(Serialize)]
struct KeyView {
    index: u8,
    method: &'static str,
}

#[derive(Serialize)]
struct PingView<'a> {
    nodes: &'a [IpAddr],
    groups: Vec<PingGroupView<'a>>,
    deadping_ms: Option<u64>,
}

#[derive(Serialize)]
struct PingGroupView<'a> {
    name: &'a str,
    nodes: &'a [IpAddr],
}

#[derive(Serialize)]
struct LogView<'a> {
    logfile: Option<String>,
    debugfile: Option<String>,
    logfacility: Option<&'a str>,
    use_logd: bool,
    debug: u8,
}

#[derive(Serialize)]
struct GarpView {
    count: u32,
    interval_ms: u64,
    request: bool,
    reply: bool,
    refresh_ms: Option<u64>,
}

fn agent_name(agent: IpAgent) -> &'static str {
    match agent {
        IpAgent::Bare | IpAgent::IPaddr => "IPaddr",
        IpAgent::IPaddr2 => "IPaddr2",
    }
}

fn failback_name(setting: AutoFailback) -> &'static str {
    match setting {
        AutoFailback::On => "on",
        AutoFailback::Off => "off",
        AutoFailback::Legacy => "legacy",
    }
}

fn xdp_name(setting: XdpSetting) -> &'static str {
    match setting {
        XdpSetting::Auto => "auto",
        XdpSetting::Driver => "driver",
        XdpSetting::Skb => "skb",
        XdpSetting::Off => "off",
    }
}

fn link_view(link: &Link, local_addrs: &[IpAddr]) -> LinkView {
    let mut view = LinkView {
        kind: "bcast",
        iface: link.iface.clone(),
        port: link.port,
        peer: None,
        group: None,
        ttl: None,
        loopback: None,
        used_here: true,
        file: link.origin.file.display().to_string(),
        line: link.origin.line,
    };
    match &link.kind {
        LinkKind::Ucast { peer } => {
            view.kind = "ucast";
            view.peer = Some(*peer);
            view.used_here = !local_addrs.contains(peer);
        }
        LinkKind::Bcast => {}
        LinkKind::Mcast {
            group,
            ttl,
            loopback,
        } => {
            view.kind = "mcast";
            view.group = Some(*group);
            view.ttl = Some(*ttl);
            view.loopback = Some(*loopback);
        }
    }
    view
}

fn resource_view(resource: &Resource) -> ResourceView<'_> {
    let text = resource.to_string();
    match resource {
        Resource::Ipv4 {
            addr,
            prefix,
            iface,
            broadcast,
            agent,
        } => ResourceView::Ipv4 {
            agent: agent_name(*agent),
            addr: addr.to_string(),
            prefix: *prefix,
            iface: iface.as_deref(),
            broadcast: broadcast.map(|b| b.to_string()),
            text,
        },
        Resource::Ipv6 {
            addr,
            prefix,
            iface,
        } => ResourceView::Ipv6 {
            addr: addr.to_string(),
            prefix: *prefix,
            iface: iface.as_deref(),
            text,
        },
        Resource::Script { name, args } => ResourceView::Script { name, args, text },
    }
}

fn config_view<'a>(config: &'a Config, local_addrs: &[IpAddr]) -> ConfigView<'a> {
    let active_method = config
        .auth
        .keys
        .iter()
        .find(|(i, _)| *i == config.auth.active)
        .map_or("none", |(_, k)| method_name(k.method));
    ConfigView {
        local_node: &config.local_node,
        cluster_id: config.cluster_id,
        nodes: config
            .nodes
            .iter()
            .map(|n| NodeView {
                name: &n.name,
                id: n.id,
                local: n.name == config.local_node,
            })
            .collect(),
        timers_ms: TimersView {
            keepalive: ms(config.timers.keepalive),
            deadtime: ms(config.timers.deadtime),
            warntime: ms(config.timers.warntime),
            initdead: ms(config.timers.initdead),
        },
        links: config
            .links
            .iter()
            .map(|l| link_view(l, local_addrs))
            .collect(),
        auto_failback: failback_name(config.auto_failback),
        groups: config
            .groups
            .iter()
            .map(|g| GroupView {
                name: &g.name,
                preferred: &g.preferred,
                resources: g.resources.iter().map(resource_view).collect(),
                file: g.origin.file.display().to_string(),
                line: g.origin.line,
            })
            .collect(),
        auth: AuthView {
            active_index: config.auth.active,
            active_method,
            keys: config
                .auth
                .keys
                .iter()
                .map(|(i, k)| KeyView {
                    index: *i,
                    method: method_name(k.method),
                })
                .collect(),
        },
        ping: PingView {
            nodes: &config.ping.nodes,
            groups: config
                .ping
                .groups
                .iter()
                .map(|(name, nodes)| PingGroupView { name, nodes })
                .collect(),
            deadping_ms: config.ping.deadping.map(ms),
        },
        realtime: config.realtime,
        xdp: xdp_name(config.xdp),
        log: LogView {
            logfile: config.log.logfile.as_ref().map(|p| p.display().to_string()),
            debugfile: config
                .log
                .debugfile
                .as_ref()
                .map(|p| p.display().to_string()),
            logfacility: config.log.logfacility.as_deref(),
            use_logd: config.log.use_logd,
            debug: config.log.debug,
        },
        garp: GarpView {
            count: config.garp.count,
            interval_ms: ms(config.garp.interval),
            request: config.garp.request,
            reply: config.garp.reply,
            refresh_ms: config.garp.refresh.map(ms),
        },
        failback_delay_ms: ms(config.failback_delay),
        resource_timeout_ms: ms(config.resource_timeout),
        control_socket: config
            .control_socket
            .as_ref()
            .map(|p| p.display().to_string()),
        metrics: config.metrics.map(|m| m.to_string()),
    }
}

impl Serialize for LoadReport {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ReportView {
            usable: self.is_usable(),
            config_dir: self.dir.display().to_string(),
            errors: self.errors().count(),
            warnings: self.warnings().count(),
            config: self
                .config
                .as_ref()
                .map(|c| config_view(c, &self.local_addrs)),
            diagnostics: &self.diagnostics,
        }
        .serialize(serializer)
    }
}

impl LoadReport {
    /// The `--json` form of `check-config`.
    pub fn to_json(&self) -> serde_json::Value {
        // Serializing plain structs of strings and numbers into a Value cannot fail.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// The human form of `check-config`: the effective configuration, then every diagnostic.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        match &self.config {
            Some(config) => render_config(&mut out, config, &self.local_addrs),
            None => {
                let _ = writeln!(
                    out,
                    "Configuration in {} is NOT usable.",
                    self.dir.display()
                );
            }
        }
        let errors = self.errors().count();
        let warnings = self.warnings().count();
        if !self.diagnostics.is_empty() {
            out.push('\n');
            for diagnostic in &self.diagnostics {
                let _ = writeln!(out, "{diagnostic}");
            }
        }
        let _ = writeln!(
            out,
            "\n{} error{}, {} warning{}: {}",
            errors,
            if errors == 1 { "" } else { "s" },
            warnings,
            if warnings == 1 { "" } else { "s" },
            if self.is_usable() {
                "configuration is usable"
            } else {
                "hb will not start with this configuration"
            }
        );
        out
    }
}

/// One `  label         value` line of the configuration summary.
fn field(out: &mut String, label: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "  {label:<14} {value}");
}

fn render_config(out: &mut String, config: &Config, local_addrs: &[IpAddr]) {
    let _ = writeln!(
        out,
        "Configuration in {} for node {}",
        config.dir.display(),
        config.local_node
    );
    field(out, "cluster id", format!("{:#010x}", config.cluster_id));
    let nodes: Vec<String> = config
        .nodes
        .iter()
        .map(|n| {
            let me = if n.name == config.local_node {
                ", this node"
            } else {
                ""
            };
            format!("{} (id {:#010x}{me})", n.name, n.id)
        })
        .collect();
    field(out, "nodes", nodes.join(", "));
    let t = &config.timers;
    field(
        out,
        "timers",
        format!(
            "keepalive {} ms, deadtime {} ms, warntime {} ms, initdead {} ms",
            ms(t.keepalive),
            ms(t.deadtime),
            ms(t.warntime),
            ms(t.initdead)
        ),
    );
    let _ = writeln!(out, "  links");
    for link in &config.links {
        let what = match &link.kind {
            LinkKind::Ucast { peer } => {
                let unused = if local_addrs.contains(peer) {
                    "  (own address: not used on this machine)"
                } else {
                    ""
                };
                format!("ucast {} -> {peer} port {}{unused}", link.iface, link.port)
            }
            LinkKind::Bcast => format!("bcast {} port {}", link.iface, link.port),
            LinkKind::Mcast {
                group,
                ttl,
                loopback,
            } => {
                format!(
                    "mcast {} group {group} port {} ttl {ttl} loop {}",
                    link.iface,
                    link.port,
                    u8::from(*loopback)
                )
            }
        };
        let _ = writeln!(out, "    {what}  [ha.cf:{}]", link.origin.line);
    }
    field(out, "auto_failback", failback_name(config.auto_failback));
    let _ = writeln!(out, "  groups");
    if config.groups.is_empty() {
        let _ = writeln!(out, "    (none)");
    }
    for group in &config.groups {
        let resources: Vec<String> = group.resources.iter().map(Resource::to_string).collect();
        let _ = writeln!(
            out,
            "    {} on {}: {}  [haresources:{}]",
            group.name,
            group.preferred,
            resources.join(" -> "),
            group.origin.line
        );
    }
    let keys: Vec<String> = config
        .auth
        .keys
        .iter()
        .map(|(i, k)| format!("{i} {}", method_name(k.method)))
        .collect();
    let active = config
        .auth
        .keys
        .iter()
        .find(|(i, _)| *i == config.auth.active)
        .map_or("none", |(_, k)| method_name(k.method));
    field(
        out,
        "auth",
        format!(
            "signs with key {} ({active}); keys: {}",
            config.auth.active,
            keys.join(", ")
        ),
    );
    if !config.ping.nodes.is_empty() || !config.ping.groups.is_empty() {
        let nodes: Vec<String> = config.ping.nodes.iter().map(IpAddr::to_string).collect();
        let groups: Vec<String> = config
            .ping
            .groups
            .iter()
            .map(|(n, a)| {
                format!(
                    "{n}: {}",
                    a.iter()
                        .map(IpAddr::to_string)
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            })
            .collect();
        let deadping = config.ping.deadping.map_or(0, ms);
        field(
            out,
            "ping",
            format!(
                "nodes [{}], groups [{}], deadping {deadping} ms",
                nodes.join(", "),
                groups.join("; ")
            ),
        );
    }
    field(out, "realtime", if config.realtime { "on" } else { "off" });
    field(out, "xdp", xdp_name(config.xdp));
    let g = &config.garp;
    let forms = match (g.request, g.reply) {
        (true, true) => "request+reply",
        (true, false) => "request",
        (false, true) => "reply",
        (false, false) => "none",
    };
    let refresh = g.refresh.map_or_else(
        || "off".to_string(),
        |r| format!("every {}", format_time(r)),
    );
    field(
        out,
        "garp",
        format!(
            "{} x {} ms apart ({forms}), refresh {refresh}",
            g.count,
            ms(g.interval)
        ),
    );
    field(
        out,
        "failback_delay",
        format!("{} ms", ms(config.failback_delay)),
    );
    field(
        out,
        "resource_timeout",
        format!("{} ms", ms(config.resource_timeout)),
    );
    if let Some(path) = &config.control_socket {
        field(out, "control_socket", path.display());
    }
    if let Some(addr) = &config.metrics {
        field(out, "metrics", addr);
    }
    let log = &config.log;
    let mut log_parts = Vec::new();
    if let Some(p) = &log.logfile {
        log_parts.push(format!("logfile {}", p.display()));
    }
    if let Some(p) = &log.debugfile {
        log_parts.push(format!("debugfile {}", p.display()));
    }
    if let Some(f) = &log.logfacility {
        log_parts.push(format!("logfacility {f}"));
    }
    if log.use_logd {
        log_parts.push("use_logd on".into());
    }
    if log.debug > 0 {
        log_parts.push(format!("debug {}", log.debug));
    }
    if !log_parts.is_empty() {
        field(out, "log", log_parts.join(", "));
    }
}
