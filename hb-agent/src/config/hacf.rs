//! `ha.cf`, read line by line as Heartbeat read it.
//!
//! A `#` anywhere starts a comment. The first word is the directive; option directives
//! take their values separated by blanks or commas and apply each in turn (`node a b`,
//! `bcast eth0 eth1`); whole-line directives (`ucast`, `mcast`, `ping_group`, `respawn`,
//! `apiauth`, `stonith`, `stonith_host`) read the rest of the line. Order matters where it
//! mattered in Heartbeat: `udpport` applies to the `ucast`/`bcast` lines after it.
//!
//! Defaults are Heartbeat's (`heartbeat -D`, `init_config()`): keepalive 1 s, deadtime
//! 30 s, warntime deadtime/2, initdead = deadtime when deadtime > 10 s, else 12 s when
//! deadtime < 6 s, else 2 × deadtime; deadping = deadtime; udpport 694; auto_failback
//! `legacy` (with a warning); realtime on; debug 0.
//!
//! hb additions (new directives only; no Heartbeat directive changes meaning):
//! - `xdp auto|driver|skb|off` (default `auto`: driver mode, then skb mode, then sockets);
//! - `garp_count N` (default 5) and `garp_interval TIME` (default 200ms): gratuitous ARP
//!   announcements after taking an address, the pattern Heartbeat's IPaddr/send_arp used
//!   (5 × 200 ms), which switches and routers that worked with Heartbeat already honour;
//! - `garp_request on|off`, `garp_reply on|off` (both on by default, as send_arp sent
//!   both forms: some devices only learn from one of them);
//! - `garp_refresh TIME|off` (default off): re-announce periodically while active;
//! - `failback_delay TIME` (default 0): hold-down before failing back to a returning node;
//! - `resource_timeout TIME` (default 30 s): how long a resource script's start or stop may
//!   take before its process group is ended and the operation counts as failed;
//! - `control_socket PATH`, `metrics ADDR:PORT` (default: none);
//! - `cluster_id N` (default: FNV-1a of the sorted node names, so clusters with different
//!   node lists on one segment ignore each other);
//! - `mcast` also accepts an IPv6 group (Heartbeat needed `mcast6` for that; both work).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hb_common::wire::DEFAULT_UDP_PORT;

use super::addr::check_iface_name;
use super::diag::{Diagnostic, Reporter};
use super::text::{display_text, raw_lines, strip_comment_anywhere, words, DELIMS, WHITESPACE};
use super::timer::{format_time, parse_time};
use super::{AutoFailback, GarpSettings, LogSettings, XdpSetting};

/// Longest node name (Linux `HOST_NAME_MAX`).
pub const MAX_NODE_NAME: usize = 64;
/// Every other node is a peer in the kernel's peer map.
pub const MAX_NODES: usize = hb_common::maps::MAX_PEERS as usize;
/// Heartbeat's `MAXMEDIA`.
pub const MAX_LINKS: usize = 64;
/// Ping nodes and ping groups, each.
pub const MAX_PING: usize = 64;
/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// hb's GARP defaults; see the module docs for why.
pub const DEFAULT_GARP: GarpSettings = GarpSettings {
    count: 5,
    interval: Duration::from_millis(200),
    reply: true,
    request: true,
    refresh: None,
};

/// A value set on one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AtLine<T> {
    pub value: T,
    pub line: usize,
}

/// A peer or ping target as written: an address, or a host name resolved at load time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostRef {
    Addr(IpAddr),
    Name(String),
}

impl std::fmt::Display for HostRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostRef::Addr(a) => write!(f, "{a}"),
            HostRef::Name(n) => f.write_str(n),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkLineKind {
    Ucast {
        peer: HostRef,
        ipv6_only: bool,
    },
    Bcast,
    Mcast {
        group: IpAddr,
        ttl: u8,
        loopback: bool,
    },
}

/// One communication path as written, before host names are resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkLine {
    pub iface: String,
    pub port: u16,
    pub kind: LinkLineKind,
    pub line: usize,
}

/// Everything `ha.cf` said, with the line of each setting; checks that need the other
/// files or the host happen in the loader.
#[derive(Clone, Debug, PartialEq)]
pub struct HaCf {
    /// Lower-cased, in order of first appearance, duplicates dropped.
    pub nodes: Vec<AtLine<String>>,
    pub keepalive: Option<AtLine<Duration>>,
    pub deadtime: Option<AtLine<Duration>>,
    pub warntime: Option<AtLine<Duration>>,
    pub initdead: Option<AtLine<Duration>>,
    pub deadping: Option<AtLine<Duration>>,
    pub links: Vec<LinkLine>,
    pub auto_failback: Option<AtLine<AutoFailback>>,
    pub log: LogSettings,
    pub realtime: bool,
    pub ping_nodes: Vec<AtLine<HostRef>>,
    pub ping_groups: Vec<AtLine<(String, Vec<HostRef>)>>,
    pub xdp: XdpSetting,
    pub garp: GarpSettings,
    pub failback_delay: Duration,
    pub resource_timeout: Option<Duration>,
    pub control_socket: Option<PathBuf>,
    pub metrics: Option<SocketAddr>,
    pub cluster_id: Option<u32>,
}

impl Default for HaCf {
    fn default() -> Self {
        HaCf {
            nodes: Vec::new(),
            keepalive: None,
            deadtime: None,
            warntime: None,
            initdead: None,
            deadping: None,
            links: Vec::new(),
            auto_failback: None,
            log: LogSettings::default(),
            realtime: true,
            ping_nodes: Vec::new(),
            ping_groups: Vec::new(),
            xdp: XdpSetting::Auto,
            garp: DEFAULT_GARP,
            failback_delay: Duration::ZERO,
            resource_timeout: None,
            control_socket: None,
            metrics: None,
            cluster_id: None,
        }
    }
}

/// Result of reading `ha.cf`.
#[derive(Debug, Default)]
pub struct HaCfFile {
    pub hacf: HaCf,
    pub diagnostics: Vec<Diagnostic>,
}

/// Directives Heartbeat knew that hb accepts without acting on them, and why.
const NO_EFFECT: &[(&str, &str)] = &[
    ("hopfudge", "hb does not relay heartbeats between nodes"),
    ("baud", "hb has no serial links"),
    (
        "serial",
        "hb has no serial links; heartbeats travel over the ucast/bcast/mcast lines only",
    ),
    ("hbaping", "hb has no Fibre Channel ping nodes"),
    ("stonith", "hb does not fence nodes"),
    ("stonith_host", "hb does not fence nodes"),
    (
        "watchdog",
        "hb does not drive a watchdog device; its systemd unit uses WatchdogSec= instead",
    ),
    (
        "apiauth",
        "hb has no Heartbeat client API; `hb-agent status` and the control socket replace it",
    ),
    ("msgfmt", "hb sends its own fixed binary heartbeat"),
    (
        "compression",
        "hb heartbeats are small fixed-size packets and are never compressed",
    ),
    (
        "compression_threshold",
        "hb heartbeats are small fixed-size packets and are never compressed",
    ),
    (
        "traditional_compression",
        "hb heartbeats are small fixed-size packets and are never compressed",
    ),
    (
        "conn_logd_time",
        "hb logs to the journal (stderr), not through a logd connection",
    ),
    (
        "hbgenmethod",
        "hb keeps its generation number in its state directory",
    ),
    (
        "cluster",
        "hb tells clusters apart by `cluster_id` (derived from the node list unless set)",
    ),
    (
        "rtprio",
        "with `realtime on` hb's sender runs at its own fixed SCHED_FIFO priority",
    ),
    (
        "coredumps",
        "core dumps follow the systemd and kernel settings",
    ),
    (
        "coreroot",
        "core dumps follow the systemd and kernel settings",
    ),
    (
        "log_badpack",
        "hb counts bad packets in `hb-agent status` and the metrics instead",
    ),
    (
        "badpack_warn",
        "hb counts bad packets in `hb-agent status` and the metrics instead",
    ),
    ("syslogmsgfmt", "hb's log format is fixed"),
    ("uuidfrom", "hb identifies nodes by name"),
    (
        "env",
        "hb does not export extra environment variables to resource scripts",
    ),
    (
        "max_rexmit_delay",
        "hb never retransmits: every heartbeat is new",
    ),
    (
        "record_config_changes",
        "it only applied to Pacemaker (crm) clusters",
    ),
    (
        "record_pengine_inputs",
        "it only applied to Pacemaker (crm) clusters",
    ),
    (
        "enable_config_writes",
        "it only applied to Pacemaker (crm) clusters",
    ),
    (
        "memreserve",
        "with `realtime on` hb locks its memory instead",
    ),
    ("use_apphbd", "hb does not use apphbd"),
    ("normalpoll", "hb does not use Heartbeat's poll emulation"),
];

/// Every directive name this parser knows, for "did you mean" hints.
const IMPLEMENTED: &[&str] = &[
    "node",
    "keepalive",
    "deadtime",
    "warntime",
    "initdead",
    "deadping",
    "udpport",
    "bcast",
    "udp",
    "ucast",
    "ucast6",
    "mcast",
    "mcast6",
    "auto_failback",
    "nice_failback",
    "logfile",
    "debugfile",
    "logfacility",
    "use_logd",
    "autojoin",
    "crm",
    "pacemaker",
    "ping",
    "ping6",
    "ping_group",
    "respawn",
    "realtime",
    "debug",
    "xdp",
    "garp_count",
    "garp_interval",
    "garp_reply",
    "garp_request",
    "garp_refresh",
    "failback_delay",
    "resource_timeout",
    "control_socket",
    "metrics",
    "cluster_id",
];

/// syslog facility names Heartbeat's `cl_syslogfac_str2int` knew, and `none`.
const FACILITIES: &[&str] = &[
    "auth", "authpriv", "cron", "daemon", "ftp", "kern", "lpr", "mail", "news", "security",
    "syslog", "user", "uucp", "local0", "local1", "local2", "local3", "local4", "local5", "local6",
    "local7", "none",
];

/// Parses `ha.cf` content.
pub fn parse_ha_cf(data: &[u8], file: &Path) -> HaCfFile {
    let mut parser = Parser {
        reporter: Reporter::new(file),
        hacf: HaCf::default(),
        port: AtLine {
            value: DEFAULT_UDP_PORT,
            line: 0,
        },
        port_dependent_lines: Vec::new(),
        seen_scalars: HashMap::new(),
        warned_no_effect: HashSet::new(),
    };
    for raw in raw_lines(data) {
        let content = strip_comment_anywhere(raw.bytes);
        let text = display_text(raw.bytes);
        let content = match std::str::from_utf8(content) {
            Ok(c) => c.trim_matches(WHITESPACE),
            Err(_) => {
                parser
                    .reporter
                    .error(raw.number, &text, "line is not valid UTF-8");
                continue;
            }
        };
        if content.is_empty() {
            continue;
        }
        let (directive, rest) = match content.split_once(WHITESPACE) {
            Some((d, r)) => (d, r.trim_start_matches(WHITESPACE)),
            None => (content, ""),
        };
        let line = Line {
            number: raw.number,
            text: &text,
        };
        parser.directive(line, directive, rest);
    }
    HaCfFile {
        hacf: parser.hacf,
        diagnostics: parser.reporter.finish(),
    }
}

#[derive(Clone, Copy)]
struct Line<'a> {
    number: usize,
    text: &'a str,
}

struct Parser {
    reporter: Reporter,
    hacf: HaCf,
    /// The `udpport` in force, and the line that set it (0: default).
    port: AtLine<u16>,
    /// `ucast`/`bcast` lines so far, which took the port in force at their line.
    port_dependent_lines: Vec<usize>,
    /// Scalar directive → line it was last set on, to point out overrides.
    seen_scalars: HashMap<&'static str, usize>,
    warned_no_effect: HashSet<&'static str>,
}

impl Parser {
    fn error(&mut self, line: Line<'_>, message: impl Into<String>) {
        self.reporter.error(line.number, line.text, message);
    }

    fn warning(&mut self, line: Line<'_>, message: impl Into<String>) {
        self.reporter.warning(line.number, line.text, message);
    }

    fn directive(&mut self, line: Line<'_>, directive: &str, rest: &str) {
        let values: Vec<&str> = words(rest, DELIMS).collect();
        match directive {
            "node" => self.nodes(line, &values),
            "keepalive" => self.time(line, "keepalive", &values, |h, v| h.keepalive = Some(v)),
            "deadtime" => self.time(line, "deadtime", &values, |h, v| h.deadtime = Some(v)),
            "warntime" => self.time(line, "warntime", &values, |h, v| h.warntime = Some(v)),
            "initdead" => self.time(line, "initdead", &values, |h, v| h.initdead = Some(v)),
            "deadping" => self.time(line, "deadping", &values, |h, v| h.deadping = Some(v)),
            "udpport" => self.udpport(line, &values),
            "bcast" => self.bcast(line, &values),
            "udp" => {
                self.warning(
                    line,
                    "`udp` is Heartbeat's old spelling of `bcast`; read as `bcast`",
                );
                self.bcast(line, &values);
            }
            "ucast" | "ucast6" => self.ucast(line, directive == "ucast6", rest),
            "mcast" | "mcast6" => self.mcast(line, directive == "mcast6", rest),
            "auto_failback" => self.auto_failback(line, &values),
            "nice_failback" => self.nice_failback(line, &values),
            "logfile" => {
                if let Some(path) = self.single(line, "logfile", &values) {
                    self.hacf.log.logfile = Some(PathBuf::from(path));
                }
            }
            "debugfile" => {
                if let Some(path) = self.single(line, "debugfile", &values) {
                    self.hacf.log.debugfile = Some(PathBuf::from(path));
                }
            }
            "logfacility" => self.logfacility(line, &values),
            "use_logd" => {
                if let Some(v) = self.boolean(line, "use_logd", &values) {
                    self.hacf.log.use_logd = v;
                }
            }
            "realtime" => {
                if let Some(v) = self.boolean(line, "realtime", &values) {
                    self.hacf.realtime = v;
                }
            }
            "debug" => self.debug(line, &values),
            "autojoin" => self.autojoin(line, &values),
            "crm" => self.crm(line, "crm", &values),
            "pacemaker" => self.crm(line, "pacemaker", &values),
            "ping" | "ping6" => self.ping(line, directive == "ping6", &values),
            "ping_group" => self.ping_group(line, rest),
            "respawn" => self.respawn(line, rest),
            "xdp" => self.xdp(line, &values),
            "garp_count" => self.garp_count(line, &values),
            "garp_interval" => {
                if let Some(t) = self.time_value(line, "garp_interval", &values) {
                    if t > Duration::from_secs(10) {
                        self.error(line, "garp_interval is at most 10 s: the announcements must follow a takeover promptly");
                    } else {
                        self.hacf.garp.interval = t;
                    }
                }
            }
            "garp_reply" => {
                if let Some(v) = self.boolean(line, "garp_reply", &values) {
                    self.hacf.garp.reply = v;
                }
            }
            "garp_request" => {
                if let Some(v) = self.boolean(line, "garp_request", &values) {
                    self.hacf.garp.request = v;
                }
            }
            "garp_refresh" => self.garp_refresh(line, &values),
            "failback_delay" => {
                if let Some(t) = self.time_value(line, "failback_delay", &values) {
                    self.hacf.failback_delay = t;
                }
            }
            "resource_timeout" => self.resource_timeout(line, &values),
            "control_socket" => self.control_socket(line, &values),
            "metrics" => self.metrics(line, &values),
            "cluster_id" => self.cluster_id(line, &values),
            other => match NO_EFFECT.iter().find(|(name, _)| *name == other) {
                Some(&(name, why)) => {
                    if self.warned_no_effect.insert(name) {
                        self.warning(line, format!("`{name}` has no effect in hb: {why}"));
                    }
                }
                None => self.unknown(line, other),
            },
        }
    }

    fn unknown(&mut self, line: Line<'_>, word: &str) {
        if self.reporter.is_full() {
            // Counted, not shown: no point computing a hint.
            self.error(line, String::new());
            return;
        }
        let shown: String = word.chars().take(40).collect();
        let message = match closest_directive(word) {
            Some(k) if k.eq_ignore_ascii_case(word) => {
                format!("unknown directive `{shown}`: directives are lower case, write `{k}`")
            }
            Some(k) => format!("unknown directive `{shown}`: did you mean `{k}`?"),
            None => format!("unknown directive `{shown}`: not a Heartbeat or hb ha.cf directive"),
        };
        self.error(line, message);
    }

    /// The one value of a scalar directive; Heartbeat applied every value in turn, so the
    /// last one wins. Also notes when a directive overrides an earlier line.
    fn single<'v>(
        &mut self,
        line: Line<'_>,
        name: &'static str,
        values: &[&'v str],
    ) -> Option<&'v str> {
        let Some(last) = values.last() else {
            self.error(line, format!("`{name}` needs a value"));
            return None;
        };
        if values.len() > 1 {
            self.warning(
                line,
                format!(
                    "`{name}` takes one value; the last one (`{last}`) is used, as in Heartbeat"
                ),
            );
        }
        if let Some(previous) = self.seen_scalars.insert(name, line.number) {
            self.warning(
                line,
                format!("`{name}` was already set on line {previous}; this later value is used"),
            );
        }
        Some(last)
    }

    fn time_value(
        &mut self,
        line: Line<'_>,
        name: &'static str,
        values: &[&str],
    ) -> Option<Duration> {
        let text = self.single(line, name, values)?;
        match parse_time(text) {
            Ok(t) => Some(t),
            Err(err) => {
                self.error(line, format!("{name}: {err}"));
                None
            }
        }
    }

    fn time(
        &mut self,
        line: Line<'_>,
        name: &'static str,
        values: &[&str],
        set: fn(&mut HaCf, AtLine<Duration>),
    ) {
        if let Some(value) = self.time_value(line, name, values) {
            if name == "keepalive" && value.is_zero() {
                self.error(line, "keepalive must be at least 1 ms");
                return;
            }
            if name == "warntime" && value.is_zero() {
                self.error(
                    line,
                    "warntime must be at least 1 ms (Heartbeat refused 0 too)",
                );
                return;
            }
            set(
                &mut self.hacf,
                AtLine {
                    value,
                    line: line.number,
                },
            );
        }
    }

    fn boolean(&mut self, line: Line<'_>, name: &'static str, values: &[&str]) -> Option<bool> {
        let text = self.single(line, name, values)?;
        let parsed = parse_bool(text);
        if parsed.is_none() {
            self.error(line, format!("{name}: `{text}` is not a boolean: use on/off (or yes/no, true/false, y/n, 1/0)"));
        }
        parsed
    }

    fn nodes(&mut self, line: Line<'_>, values: &[&str]) {
        if values.is_empty() {
            self.error(
                line,
                "`node` needs at least one node name (as `uname -n` prints it)",
            );
        }
        for name in values {
            if self.hacf.nodes.len() >= MAX_NODES {
                self.error(
                    line,
                    format!("more than {MAX_NODES} nodes: hb supports at most {MAX_NODES}"),
                );
                return;
            }
            if let Err(why) = check_node_name(name) {
                self.error(line, format!("`{name}` is not a node name: {why}"));
                continue;
            }
            let lower = name.to_lowercase();
            if let Some(first) = self.hacf.nodes.iter().find(|n| n.value == lower) {
                let first_line = first.line;
                self.warning(
                    line,
                    format!("node `{lower}` is already listed (line {first_line})"),
                );
                continue;
            }
            self.hacf.nodes.push(AtLine {
                value: lower,
                line: line.number,
            });
        }
    }

    fn udpport(&mut self, line: Line<'_>, values: &[&str]) {
        let Some(text) = self.single(line, "udpport", values) else {
            return;
        };
        let Some(port) = parse_port(text) else {
            self.error(
                line,
                format!("udpport: `{text}` is not a UDP port (1-65535)"),
            );
            return;
        };
        if !self.port_dependent_lines.is_empty() {
            let earlier = self.port;
            let lines = list_lines(&self.port_dependent_lines);
            let used = if earlier.line == 0 {
                format!("port {} (the default)", earlier.value)
            } else {
                format!("port {} (set on line {})", earlier.value, earlier.line)
            };
            let same = if earlier.value == port {
                " Here the port is the same, so nothing changes, but the order is still wrong."
            } else {
                ""
            };
            self.warning(
                line,
                format!(
                    "`udpport {port}` comes after the ucast/bcast line(s) on {lines}, which therefore \
                     use {used}: as in Heartbeat, udpport only applies to the ucast/bcast lines below \
                     it. Move `udpport` above them.{same}"
                ),
            );
        }
        self.port = AtLine {
            value: port,
            line: line.number,
        };
    }

    fn bcast(&mut self, line: Line<'_>, values: &[&str]) {
        if values.is_empty() {
            self.error(line, "`bcast` needs at least one interface: `bcast eth1`");
        }
        for iface in values {
            if let Err(err) = check_iface_name(iface) {
                self.error(line, err.to_string());
                continue;
            }
            self.push_port_link(line, iface, LinkLineKind::Bcast);
        }
    }

    /// False (after saying so) when the link table is full.
    fn room_for_link(&mut self, line: Line<'_>) -> bool {
        if self.hacf.links.len() < MAX_LINKS {
            return true;
        }
        self.error(
            line,
            format!("more than {MAX_LINKS} communication paths: hb supports at most {MAX_LINKS}"),
        );
        false
    }

    fn push_port_link(&mut self, line: Line<'_>, iface: &str, kind: LinkLineKind) {
        if !self.room_for_link(line) {
            return;
        }
        self.hacf.links.push(LinkLine {
            iface: iface.to_string(),
            port: self.port.value,
            kind,
            line: line.number,
        });
        if self.port_dependent_lines.last() != Some(&line.number) {
            self.port_dependent_lines.push(line.number);
        }
    }

    fn ucast(&mut self, line: Line<'_>, ipv6_only: bool, rest: &str) {
        let directive = if ipv6_only { "ucast6" } else { "ucast" };
        let parts: Vec<&str> = words(rest, WHITESPACE).collect();
        let (iface, target) = match parts.as_slice() {
            [iface, target, ..] => (*iface, *target),
            [iface] => {
                self.error(line, format!("`{directive} {iface}` lacks the peer address: `{directive} IFACE PEER-ADDRESS`"));
                return;
            }
            [] => {
                self.error(line, format!("`{directive}` needs an interface and a peer address: `{directive} eth1 10.0.0.2`"));
                return;
            }
        };
        if let Err(err) = check_iface_name(iface) {
            self.error(line, err.to_string());
            return;
        }
        let peer = match parse_host_ref(target) {
            Some(HostRef::Addr(IpAddr::V4(_))) if ipv6_only => {
                self.error(
                    line,
                    format!("ucast6 needs an IPv6 peer; `{target}` is IPv4 (use `ucast`)"),
                );
                return;
            }
            Some(peer) => peer,
            None => {
                self.error(
                    line,
                    format!("`{target}` is neither an IP address nor a host name"),
                );
                return;
            }
        };
        if parts.len() > 2 {
            self.warning(
                line,
                format!("only one peer per `{directive}` line: the words after `{target}` are ignored, as in Heartbeat; write one line per peer"),
            );
        }
        self.push_port_link(line, iface, LinkLineKind::Ucast { peer, ipv6_only });
    }

    fn mcast(&mut self, line: Line<'_>, ipv6_only: bool, rest: &str) {
        let directive = if ipv6_only { "mcast6" } else { "mcast" };
        let parts: Vec<&str> = words(rest, WHITESPACE).collect();
        let [iface, group, port, ttl, loopback, extra @ ..] = parts.as_slice() else {
            self.error(
                line,
                format!("`{directive}` needs five values: `{directive} IFACE GROUP PORT TTL LOOP`, e.g. `mcast eth0 225.0.0.1 694 1 0`"),
            );
            return;
        };
        let mut ok = true;
        if let Err(err) = check_iface_name(iface) {
            self.error(line, err.to_string());
            ok = false;
        }
        let group_addr = group.parse::<IpAddr>().ok().filter(IpAddr::is_multicast);
        match group_addr {
            None => {
                self.error(
                    line,
                    format!("`{group}` is not a multicast group (224.0.0.0/4 or ff00::/8)"),
                );
                ok = false;
            }
            Some(IpAddr::V4(_)) if ipv6_only => {
                self.error(
                    line,
                    format!("mcast6 needs an IPv6 group; `{group}` is IPv4 (use `mcast`)"),
                );
                ok = false;
            }
            Some(_) => {}
        }
        let port_value = parse_port(port);
        if port_value.is_none() {
            self.error(line, format!("`{port}` is not a UDP port (1-65535)"));
            ok = false;
        }
        let ttl_value = ttl
            .parse::<u8>()
            .ok()
            .filter(|_| ttl.bytes().all(|b| b.is_ascii_digit()));
        if ttl_value.is_none() {
            self.error(line, format!("`{ttl}` is not a TTL (0-255)"));
            ok = false;
        }
        let loop_value = match *loopback {
            "0" => Some(false),
            "1" => Some(true),
            _ => None,
        };
        if loop_value.is_none() {
            self.error(
                line,
                format!("`{loopback}` is not a loop setting: 0 (recommended) or 1"),
            );
            ok = false;
        }
        let (Some(group), Some(port), Some(ttl), Some(loopback), true) =
            (group_addr, port_value, ttl_value, loop_value, ok)
        else {
            return;
        };
        if ttl == 0 {
            self.warning(
                line,
                "mcast TTL 0 keeps heartbeats on this host: use 1 for a directly connected segment",
            );
        }
        if !extra.is_empty() {
            self.warning(
                line,
                format!("the words after the five `{directive}` values are ignored"),
            );
        }
        if !self.room_for_link(line) {
            return;
        }
        self.hacf.links.push(LinkLine {
            iface: iface.to_string(),
            port,
            kind: LinkLineKind::Mcast {
                group,
                ttl,
                loopback,
            },
            line: line.number,
        });
    }

    fn auto_failback(&mut self, line: Line<'_>, values: &[&str]) {
        let Some(text) = self.single(line, "auto_failback", values) else {
            return;
        };
        let value = if text.eq_ignore_ascii_case("legacy") {
            Some(AutoFailback::Legacy)
        } else {
            parse_bool(text).map(|on| {
                if on {
                    AutoFailback::On
                } else {
                    AutoFailback::Off
                }
            })
        };
        match value {
            Some(value) => {
                self.hacf.auto_failback = Some(AtLine {
                    value,
                    line: line.number,
                })
            }
            None => self.error(
                line,
                format!("auto_failback: `{text}` is not on, off or legacy"),
            ),
        }
    }

    fn nice_failback(&mut self, line: Line<'_>, values: &[&str]) {
        let Some(text) = self.single(line, "nice_failback", values) else {
            return;
        };
        match parse_bool(text) {
            Some(on) => {
                let (value, word) = if on {
                    (AutoFailback::Off, "off")
                } else {
                    (AutoFailback::Legacy, "legacy")
                };
                self.warning(
                    line,
                    format!("`nice_failback` is obsolete; `nice_failback {text}` is read as `auto_failback {word}`, as Heartbeat did. Write `auto_failback on|off` instead"),
                );
                self.hacf.auto_failback = Some(AtLine {
                    value,
                    line: line.number,
                });
            }
            None => self.error(line, format!("nice_failback: `{text}` is not a boolean")),
        }
    }

    fn logfacility(&mut self, line: Line<'_>, values: &[&str]) {
        let Some(text) = self.single(line, "logfacility", values) else {
            return;
        };
        let lower = text.to_ascii_lowercase();
        if FACILITIES.contains(&lower.as_str()) {
            self.hacf.log.logfacility = Some(lower);
        } else {
            self.error(line, format!("logfacility: `{text}` is not a syslog facility (daemon, local0 … local7, none, …)"));
        }
    }

    fn debug(&mut self, line: Line<'_>, values: &[&str]) {
        let Some(text) = self.single(line, "debug", values) else {
            return;
        };
        match text.parse::<u8>() {
            Ok(level) => self.hacf.log.debug = level,
            Err(_) => self.error(
                line,
                format!("debug: `{text}` is not a debug level (0-255)"),
            ),
        }
    }

    fn autojoin(&mut self, line: Line<'_>, values: &[&str]) {
        let Some(text) = self.single(line, "autojoin", values) else {
            return;
        };
        match text.to_ascii_lowercase().as_str() {
            "none" => {}
            "other" | "any" => self.error(
                line,
                format!("`autojoin {text}` is not supported: hb only talks to the nodes listed in `node` lines (Heartbeat's haresources mode refused autojoin too). Use `autojoin none` or remove the line"),
            ),
            _ => self.error(line, format!("autojoin: `{text}` is not none, other or any")),
        }
    }

    fn crm(&mut self, line: Line<'_>, directive: &'static str, values: &[&str]) {
        let Some(text) = self.single(line, directive, values) else {
            return;
        };
        if parse_bool(text) == Some(false) {
            return;
        }
        self.error(
            line,
            format!(
                "`{directive} {text}`: hb implements Heartbeat's haresources (R1) resource management \
                 only; the CRM/Pacemaker cluster manager (cib.xml) is not supported. Use `{directive} off` \
                 (or remove the line) and describe resources in haresources"
            ),
        );
    }

    fn ping(&mut self, line: Line<'_>, ipv6_only: bool, values: &[&str]) {
        let directive = if ipv6_only { "ping6" } else { "ping" };
        if values.is_empty() {
            self.error(line, format!("`{directive}` needs at least one address"));
        }
        for value in values {
            if self.hacf.ping_nodes.len() >= MAX_PING {
                self.error(
                    line,
                    format!("more than {MAX_PING} ping nodes: hb supports at most {MAX_PING}"),
                );
                return;
            }
            match parse_host_ref(value) {
                Some(HostRef::Addr(IpAddr::V4(_))) if ipv6_only => {
                    self.error(
                        line,
                        format!("ping6 needs IPv6 addresses; `{value}` is IPv4 (use `ping`)"),
                    );
                }
                Some(target) => self.hacf.ping_nodes.push(AtLine {
                    value: target,
                    line: line.number,
                }),
                None => self.error(
                    line,
                    format!("`{value}` is neither an IP address nor a host name"),
                ),
            }
        }
    }

    fn ping_group(&mut self, line: Line<'_>, rest: &str) {
        let parts: Vec<&str> = words(rest, WHITESPACE).collect();
        let [name, members @ ..] = parts.as_slice() else {
            self.error(line, "`ping_group` needs a name and addresses: `ping_group group1 10.0.0.254 10.0.0.253`");
            return;
        };
        if members.is_empty() {
            self.error(line, format!("ping group `{name}` lists no addresses"));
            return;
        }
        if self.hacf.ping_groups.len() >= MAX_PING {
            self.error(
                line,
                format!("more than {MAX_PING} ping groups: hb supports at most {MAX_PING}"),
            );
            return;
        }
        if members.len() > MAX_PING {
            self.error(
                line,
                format!("ping group `{name}` lists more than {MAX_PING} addresses"),
            );
            return;
        }
        if self.hacf.ping_groups.iter().any(|g| g.value.0 == *name) {
            self.error(line, format!("ping group `{name}` is defined twice"));
            return;
        }
        let mut targets = Vec::with_capacity(members.len());
        for member in members {
            match parse_host_ref(member) {
                Some(target) => targets.push(target),
                None => {
                    self.error(
                        line,
                        format!("`{member}` is neither an IP address nor a host name"),
                    );
                    return;
                }
            }
        }
        self.hacf.ping_groups.push(AtLine {
            value: (name.to_string(), targets),
            line: line.number,
        });
    }

    fn respawn(&mut self, line: Line<'_>, rest: &str) {
        let parts: Vec<&str> = words(rest, WHITESPACE).collect();
        let [_user, path, ..] = parts.as_slice() else {
            self.error(line, "`respawn` needs a user and a program: `respawn hacluster /usr/lib/heartbeat/ipfail`");
            return;
        };
        let program = path.rsplit('/').next().unwrap_or(path);
        if program == "ipfail" {
            self.warning(
                line,
                "accepted: hb does ipfail's job itself (failing over when this node loses its \
                 `ping`/`ping_group` nodes and the peer does not), so ipfail is not started",
            );
        } else {
            self.warning(
                line,
                format!("`respawn` has no effect in hb: hb does not start helper programs; run `{path}` as its own systemd service"),
            );
        }
    }

    fn xdp(&mut self, line: Line<'_>, values: &[&str]) {
        let Some(text) = self.single(line, "xdp", values) else {
            return;
        };
        let setting = match text.to_ascii_lowercase().as_str() {
            "auto" => XdpSetting::Auto,
            "driver" | "drv" | "native" => XdpSetting::Driver,
            "skb" | "generic" => XdpSetting::Skb,
            lower => match parse_bool(lower) {
                Some(false) => XdpSetting::Off,
                Some(true) => XdpSetting::Auto,
                None => {
                    self.error(
                        line,
                        format!("xdp: `{text}` is not auto, driver, skb or off"),
                    );
                    return;
                }
            },
        };
        self.hacf.xdp = setting;
    }

    fn garp_count(&mut self, line: Line<'_>, values: &[&str]) {
        let Some(text) = self.single(line, "garp_count", values) else {
            return;
        };
        match text.parse::<u32>() {
            Ok(count @ 0..=100) => {
                if count == 0 {
                    self.warning(line, "garp_count 0: no gratuitous ARP after a takeover; neighbours keep the old MAC until their cache expires");
                }
                self.hacf.garp.count = count;
            }
            _ => self.error(
                line,
                format!("garp_count: `{text}` is not a count from 0 to 100"),
            ),
        }
    }

    fn resource_timeout(&mut self, line: Line<'_>, values: &[&str]) {
        let Some(t) = self.time_value(line, "resource_timeout", values) else {
            return;
        };
        if t.is_zero() {
            self.error(
                line,
                "resource_timeout 0: every start and stop would fail at once; give a time such as 30s",
            );
            return;
        }
        self.hacf.resource_timeout = Some(t);
    }

    fn garp_refresh(&mut self, line: Line<'_>, values: &[&str]) {
        let Some(text) = self.single(line, "garp_refresh", values) else {
            return;
        };
        if parse_bool(text) == Some(false) {
            self.hacf.garp.refresh = None;
            return;
        }
        match parse_time(text) {
            Ok(t) if t.is_zero() => self.hacf.garp.refresh = None,
            Ok(t) if t < Duration::from_secs(1) => {
                self.error(line, format!("garp_refresh {}: re-announcing more than once a second only floods the segment; use 1 s or more, or off", format_time(t)));
            }
            Ok(t) => self.hacf.garp.refresh = Some(t),
            Err(err) => self.error(line, format!("garp_refresh: {err}, or `off`")),
        }
    }

    fn control_socket(&mut self, line: Line<'_>, values: &[&str]) {
        let Some(text) = self.single(line, "control_socket", values) else {
            return;
        };
        if !text.starts_with('/') {
            self.error(
                line,
                format!("control_socket: `{text}` must be an absolute path"),
            );
        } else if text.len() > MAX_SOCKET_PATH {
            self.error(line, format!("control_socket: the path is {} bytes; a Unix socket path holds at most {MAX_SOCKET_PATH}", text.len()));
        } else {
            self.hacf.control_socket = Some(PathBuf::from(text));
        }
    }

    fn metrics(&mut self, line: Line<'_>, values: &[&str]) {
        let Some(text) = self.single(line, "metrics", values) else {
            return;
        };
        if parse_bool(text) == Some(false) {
            self.hacf.metrics = None;
            return;
        }
        match text.parse::<SocketAddr>() {
            Ok(addr) if addr.port() != 0 => self.hacf.metrics = Some(addr),
            _ => self.error(line, format!("metrics: `{text}` is not ADDR:PORT (e.g. 127.0.0.1:9694 or [::1]:9694), or off")),
        }
    }

    fn cluster_id(&mut self, line: Line<'_>, values: &[&str]) {
        let Some(text) = self.single(line, "cluster_id", values) else {
            return;
        };
        let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => text.parse::<u32>().ok(),
        };
        match parsed {
            Some(id) => self.hacf.cluster_id = Some(id),
            None => self.error(
                line,
                format!("cluster_id: `{text}` is not a 32-bit number (decimal or 0x hex)"),
            ),
        }
    }
}

/// Heartbeat's `cl_str_to_boolean`.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "y" | "1" => Some(true),
        "false" | "off" | "no" | "n" | "0" => Some(false),
        _ => None,
    }
}

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || text.len() > 5 {
        return None;
    }
    text.parse::<u16>().ok().filter(|p| *p != 0)
}

/// Node names are what `uname -n` prints: host name characters only.
pub fn check_node_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > MAX_NODE_NAME {
        return Err("longer than 64 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err("only letters, digits, `-`, `_` and `.` appear in host names");
    }
    Ok(())
}

fn parse_host_ref(text: &str) -> Option<HostRef> {
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Some(HostRef::Addr(addr));
    }
    let valid_name = !text.is_empty()
        && text.len() <= 253
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        && text.bytes().any(|b| b.is_ascii_alphabetic());
    valid_name.then(|| HostRef::Name(text.to_string()))
}

/// `line 3` / `lines 3, 4 and 7`.
fn list_lines(lines: &[usize]) -> String {
    match lines {
        [] => String::new(),
        [one] => format!("line {one}"),
        [init @ .., last] => {
            let init: Vec<String> = init.iter().map(usize::to_string).collect();
            format!("lines {} and {last}", init.join(", "))
        }
    }
}

/// The known directive nearest to `word` (case-insensitively, at most two edits away).
fn closest_directive(word: &str) -> Option<&'static str> {
    let lower = word.to_ascii_lowercase();
    IMPLEMENTED
        .iter()
        .copied()
        .chain(NO_EFFECT.iter().map(|(n, _)| *n))
        .filter(|k| k.len().abs_diff(lower.len()) <= 2)
        .map(|k| (edit_distance(k.as_bytes(), lower.as_bytes()), k))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k)
}

/// Levenshtein distance over bytes; only called on words within two bytes of a directive's
/// length, so both are short.
fn edit_distance(a: &[u8], b: &[u8]) -> usize {
    const MAX: usize = 40;
    if a.len() > MAX || b.len() > MAX {
        return usize::MAX;
    }
    let mut rows = ([0usize; MAX + 1], [0usize; MAX + 1]);
    let (mut previous, mut current) = (&mut rows.0, &mut rows.1);
    for (j, slot) in previous.iter_mut().enumerate().take(b.len() + 1) {
        *slot = j;
    }
    for (i, ca) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        // Swap the row references, not the rows.
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> HaCfFile {
        parse_ha_cf(text.as_bytes(), Path::new("/etc/ha.d/ha.cf"))
    }

    fn messages(file: &HaCfFile) -> Vec<(Option<usize>, String)> {
        file.diagnostics
            .iter()
            .map(|d| (d.line, d.message.clone()))
            .collect()
    }

    #[test]
    fn udpport_applies_to_later_lines_only() {
        let parsed =
            parse("ucast eth0 10.0.0.1\nudpport 695\nucast eth0 10.0.0.2\nbcast eth1 eth2\n");
        let ports: Vec<_> = parsed
            .hacf
            .links
            .iter()
            .map(|l| (l.iface.as_str(), l.port, l.line))
            .collect();
        assert_eq!(
            ports,
            vec![
                ("eth0", 694, 1),
                ("eth0", 695, 3),
                ("eth1", 695, 4),
                ("eth2", 695, 4)
            ]
        );
        let msgs = messages(&parsed);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].0, Some(2));
        assert!(msgs[0].1.starts_with("`udpport 695` comes after the ucast/bcast line(s) on line 1, which therefore use port 694 (the default)"), "{}", msgs[0].1);
    }

    #[test]
    fn values_split_on_commas_and_nodes_lowercase() {
        let parsed = parse("node SwapNginxActive,b\nnode c b\n");
        let nodes: Vec<_> = parsed.hacf.nodes.iter().map(|n| n.value.as_str()).collect();
        assert_eq!(nodes, vec!["swapnginxactive", "b", "c"]);
        assert_eq!(
            messages(&parsed),
            vec![(Some(2), "node `b` is already listed (line 1)".to_string())]
        );
    }

    #[test]
    fn mcast_forms() {
        let parsed = parse("mcast eth0 225.0.0.1 694 1 0\nmcast6 eth1 ff02::1:2 694 1 1\nmcast eth0 10.0.0.1 694 1 0\nmcast eth0 225.0.0.1 694 1\n");
        assert_eq!(parsed.hacf.links.len(), 2);
        assert_eq!(
            parsed.hacf.links[1].kind,
            LinkLineKind::Mcast {
                group: "ff02::1:2".parse().unwrap(),
                ttl: 1,
                loopback: true
            }
        );
        let msgs = messages(&parsed);
        assert_eq!(
            msgs[0],
            (
                Some(3),
                "`10.0.0.1` is not a multicast group (224.0.0.0/4 or ff00::/8)".into()
            )
        );
        assert!(msgs[1].1.starts_with("`mcast` needs five values"));
    }

    #[test]
    fn unknown_words_get_hints() {
        let parsed = parse("kepalive 2\nKeepalive 2\nfrobnicate\n");
        let msgs = messages(&parsed);
        assert_eq!(
            msgs[0].1,
            "unknown directive `kepalive`: did you mean `keepalive`?"
        );
        assert_eq!(
            msgs[1].1,
            "unknown directive `Keepalive`: directives are lower case, write `keepalive`"
        );
        assert_eq!(
            msgs[2].1,
            "unknown directive `frobnicate`: not a Heartbeat or hb ha.cf directive"
        );
        assert!(parsed
            .diagnostics
            .iter()
            .all(|d| d.severity == super::super::Severity::Error));
    }

    #[test]
    fn no_effect_directives_warn_once() {
        let parsed = parse("serial /dev/ttyS0\nserial /dev/ttyS1\nbaud 19200\n");
        let msgs = messages(&parsed);
        assert_eq!(msgs.len(), 2);
        assert!(msgs[0].1.starts_with("`serial` has no effect in hb"));
        assert!(msgs[1].1.starts_with("`baud` has no effect in hb"));
    }

    #[test]
    fn crm_and_respawn() {
        let parsed = parse("crm off\npacemaker no\nrespawn hacluster /usr/lib/heartbeat/ipfail\nrespawn root /usr/local/bin/x\n");
        let msgs = messages(&parsed);
        assert_eq!(msgs.len(), 2);
        assert!(msgs[0]
            .1
            .starts_with("accepted: hb does ipfail's job itself"));
        assert!(msgs[1].1.starts_with("`respawn` has no effect in hb"));
        for value in ["respawn", "on", "yes"] {
            let parsed = parse(&format!("crm {value}\n"));
            let msgs = messages(&parsed);
            assert_eq!(msgs.len(), 1);
            assert_eq!(
                parsed.diagnostics[0].severity,
                super::super::Severity::Error
            );
            assert!(msgs[0].1.starts_with(&format!(
                "`crm {value}`: hb implements Heartbeat's haresources (R1)"
            )));
        }
    }

    #[test]
    fn hb_additions() {
        let parsed = parse(
            "xdp skb\ngarp_count 3\ngarp_interval 100ms\ngarp_reply off\ngarp_refresh 30\nfailback_delay 5\nresource_timeout 2500ms\ncontrol_socket /run/hb.sock\nmetrics 127.0.0.1:9694\ncluster_id 0x10\n",
        );
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        let h = &parsed.hacf;
        assert_eq!(h.xdp, XdpSetting::Skb);
        assert_eq!(
            h.garp,
            GarpSettings {
                count: 3,
                interval: Duration::from_millis(100),
                reply: false,
                request: true,
                refresh: Some(Duration::from_secs(30))
            }
        );
        assert_eq!(h.failback_delay, Duration::from_secs(5));
        assert_eq!(h.resource_timeout, Some(Duration::from_millis(2500)));
        assert_eq!(h.control_socket.as_deref(), Some(Path::new("/run/hb.sock")));
        assert_eq!(h.metrics, Some("127.0.0.1:9694".parse().unwrap()));
        assert_eq!(h.cluster_id, Some(16));
    }

    #[test]
    fn repeated_scalars() {
        let parsed = parse("keepalive 1 2\nkeepalive 3\n");
        assert_eq!(
            parsed.hacf.keepalive,
            Some(AtLine {
                value: Duration::from_secs(3),
                line: 2
            })
        );
        let msgs = messages(&parsed);
        assert_eq!(
            msgs[0].1,
            "`keepalive` takes one value; the last one (`2`) is used, as in Heartbeat"
        );
        assert_eq!(
            msgs[1].1,
            "`keepalive` was already set on line 1; this later value is used"
        );
    }

    #[test]
    fn heartbeat_spellings_and_obsolete_forms() {
        let parsed = parse(
            "udp eth0\nnice_failback on\nucast eth1 10.0.0.2 10.0.0.3\nucast6 eth1 2001:db8::2\nping6 2001:db8::fe\nlogfacility LOCAL7\nuse_logd Y\n",
        );
        let msgs = messages(&parsed);
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(msgs[0]
            .1
            .starts_with("`udp` is Heartbeat's old spelling of `bcast`"));
        assert!(msgs[1].1.starts_with(
            "`nice_failback` is obsolete; `nice_failback on` is read as `auto_failback off`"
        ));
        assert!(msgs[2].1.starts_with("only one peer per `ucast` line"));
        let h = &parsed.hacf;
        assert_eq!(h.auto_failback.map(|a| a.value), Some(AutoFailback::Off));
        assert_eq!(h.links.len(), 3);
        assert_eq!(h.links[0].kind, LinkLineKind::Bcast);
        assert_eq!(
            h.links[2].kind,
            LinkLineKind::Ucast {
                peer: HostRef::Addr("2001:db8::2".parse().unwrap()),
                ipv6_only: true
            }
        );
        assert_eq!(
            h.ping_nodes[0].value,
            HostRef::Addr("2001:db8::fe".parse().unwrap())
        );
        assert_eq!(h.log.logfacility.as_deref(), Some("local7"));
        assert!(h.log.use_logd);
    }

    #[test]
    fn value_errors() {
        let cases = [
            (
                "ucast6 eth1 10.0.0.2",
                "ucast6 needs an IPv6 peer; `10.0.0.2` is IPv4 (use `ucast`)",
            ),
            ("ucast eth1", "`ucast eth1` lacks the peer address"),
            ("bcast eth0:1", "`eth0:1` is not a valid interface name"),
            (
                "logfacility local9",
                "logfacility: `local9` is not a syslog facility",
            ),
            ("autojoin any", "`autojoin any` is not supported"),
            (
                "auto_failback maybe",
                "auto_failback: `maybe` is not on, off or legacy",
            ),
            (
                "realtime sometimes",
                "realtime: `sometimes` is not a boolean",
            ),
            ("debug 300", "debug: `300` is not a debug level (0-255)"),
            ("keepalive", "`keepalive` needs a value"),
            ("keepalive 0", "keepalive must be at least 1 ms"),
            ("node bad/name", "`bad/name` is not a node name"),
            (
                "mcast eth0 225.0.0.1 694 300 0",
                "`300` is not a TTL (0-255)",
            ),
            ("mcast eth0 225.0.0.1 694 1 2", "`2` is not a loop setting"),
            (
                "mcast6 eth0 225.0.0.1 694 1 0",
                "mcast6 needs an IPv6 group",
            ),
            ("xdp fast", "xdp: `fast` is not auto, driver, skb or off"),
            (
                "garp_count 1000",
                "garp_count: `1000` is not a count from 0 to 100",
            ),
            ("garp_interval 11", "garp_interval is at most 10 s"),
            (
                "resource_timeout 0",
                "resource_timeout 0: every start and stop would fail at once",
            ),
            (
                "garp_refresh 100ms",
                "garp_refresh 100 ms: re-announcing more than once a second",
            ),
            (
                "control_socket run/hb.sock",
                "control_socket: `run/hb.sock` must be an absolute path",
            ),
            ("metrics localhost", "metrics: `localhost` is not ADDR:PORT"),
            (
                "cluster_id 0x1FFFFFFFF",
                "cluster_id: `0x1FFFFFFFF` is not a 32-bit number",
            ),
            ("ping_group gw", "ping group `gw` lists no addresses"),
            ("respawn hacluster", "`respawn` needs a user and a program"),
        ];
        for (line, want) in cases {
            let parsed = parse(&format!("{line}\n"));
            let errors: Vec<_> = parsed
                .diagnostics
                .iter()
                .filter(|d| d.severity == super::super::Severity::Error)
                .collect();
            assert_eq!(errors.len(), 1, "{line}: {:?}", parsed.diagnostics);
            assert_eq!((errors[0].line, errors[0].text.as_str()), (Some(1), line));
            assert!(
                errors[0].message.starts_with(want),
                "{line}: got `{}`",
                errors[0].message
            );
        }
    }

    #[test]
    fn tables_are_bounded() {
        let nodes: String = (0..MAX_NODES + 3).map(|i| format!("node n{i}\n")).collect();
        let parsed = parse(&nodes);
        assert_eq!(parsed.hacf.nodes.len(), MAX_NODES);
        assert_eq!(parsed.diagnostics.len(), 3);
        assert!(parsed.diagnostics[0]
            .message
            .starts_with("more than 64 nodes"));

        let links: String = (0..MAX_LINKS + 1)
            .map(|i| format!("bcast eth{i}\n"))
            .collect();
        let parsed = parse(&links);
        assert_eq!(parsed.hacf.links.len(), MAX_LINKS);
        assert_eq!(parsed.diagnostics.len(), 1);
        assert!(parsed.diagnostics[0]
            .message
            .starts_with("more than 64 communication paths"));
    }

    #[test]
    fn comments_blank_lines_and_crlf() {
        let parsed = parse("# comment\r\n\r\n   keepalive 500ms # half a second\r\n\tnode a\r\n");
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        assert_eq!(
            parsed.hacf.keepalive,
            Some(AtLine {
                value: Duration::from_millis(500),
                line: 3
            })
        );
        let parsed = parse_ha_cf(b"node \xff\xfe\n# caf\xe9 in Latin-1\n", Path::new("ha.cf"));
        assert_eq!(
            parsed.diagnostics.len(),
            1,
            "only the directive part must be UTF-8"
        );
        assert_eq!(parsed.diagnostics[0].message, "line is not valid UTF-8");
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance(b"keepalive", b"kepalive"), 1);
        assert_eq!(edit_distance(b"", b"abc"), 3);
        assert_eq!(edit_distance(b"kitten", b"sitting"), 3);
        assert_eq!(closest_directive("Keepalive"), Some("keepalive"));
        assert_eq!(closest_directive("deadtme"), Some("deadtime"));
        assert_eq!(closest_directive("otro"), None);
        assert_eq!(list_lines(&[1, 2, 5]), "lines 1, 2 and 5");
    }
}
