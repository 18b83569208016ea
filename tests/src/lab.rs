//! [`Lab`]: a private network of namespaces, veth links and bridges that removes itself.
//!
//! A lab owns everything it creates: namespaces (and with them every interface, bridge and
//! address inside), processes it spawned, pinned BPF directories registered with it, and its
//! temp dir. Dropping the lab removes all of it, also while a test panics. On SIGINT, SIGTERM
//! or SIGHUP the test process removes all its labs before exiting. A run killed outright
//! (SIGKILL) leaves names carrying its dead pid; the next lab created on the machine removes
//! those (see [`crate::names`]).
//!
//! A lab can also be *kept* ([`Lab::keep`], for `cargo xtask demo --keep`): a marker file in its
//! temp dir tells every clean-up path to leave it alone after its owner exits, until
//! [`remove_kept_lab`] removes it.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, Once, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::addr::{require_test_address, TestCidr};
use crate::bpf::{bpffs_mounted, BPFFS_ROOT};
use crate::cmd::{self, describe, parse_json, CommandOutput};
use crate::error::{LabError, Result};
use crate::names::{
    check_ifname, check_short_name, owner_pid, pid_alive, run_prefix, run_prefix_of,
};
use crate::process::{terminate, ProcessHandle, TrackedProcess};
use crate::{is_root, write_stderr_line};

/// Where `ip netns add` puts namespace handles.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// The file in a lab's temp dir that marks it kept: no clean-up path removes a kept lab, even
/// once its owner is gone, until [`remove_kept_lab`] does. It holds the keeper's note.
pub const KEEP_MARKER: &str = "kept";

/// How long a process gets between SIGTERM and SIGKILL when the lab ends it.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(3);

static NEXT_LAB_INDEX: AtomicU32 = AtomicU32::new(0);

/// Held shared while a lab creates something the signal clean-up must find (a namespace, a
/// process, a temp or bpffs dir), and while a lab tears itself down. The clean-up takes it
/// exclusively and keeps it until the process exits, so nothing new appears while, or after,
/// it removes this process's labs, and a thread failing because of that removal cannot end
/// the process (returning from `main`) half-way through it.
static CREATION_GATE: RwLock<()> = RwLock::new(());

fn creating() -> RwLockReadGuard<'static, ()> {
    // The guarded data is `()`: a panic under the lock cannot leave anything inconsistent.
    CREATION_GATE.read().unwrap_or_else(PoisonError::into_inner)
}

/// A network namespace created by a lab.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Netns {
    name: String,
    short: String,
}

impl Netns {
    /// Full name, as `ip netns list` shows it (`hblab-<pid>-<n>-<short>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The short name the test gave it (`lb1`, `switch`).
    pub fn short(&self) -> &str {
        &self.short
    }

    /// The bind-mounted namespace file (`/run/netns/<name>`).
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_RUN_DIR).join(&self.name)
    }
}

impl fmt::Display for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A Linux bridge inside a lab namespace (the "switch").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    netns: Netns,
    name: String,
}

impl Bridge {
    /// The namespace the bridge lives in.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// The bridge's interface name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A veth link from a node's interface to a bridge port on the switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    node: Netns,
    node_ifname: String,
    switch: Netns,
    switch_ifname: String,
    bridge: String,
}

impl Port {
    /// The node namespace.
    pub fn node(&self) -> &Netns {
        &self.node
    }

    /// The interface name on the node side (what the node's software sees, e.g. `eth0`).
    pub fn node_ifname(&self) -> &str {
        &self.node_ifname
    }

    /// The switch namespace.
    pub fn switch(&self) -> &Netns {
        &self.switch
    }

    /// The bridge-port interface name in the switch namespace (`p<n>`; its alias names the
    /// node side, e.g. `lb1:eth0`).
    pub fn switch_ifname(&self) -> &str {
        &self.switch_ifname
    }

    /// The bridge the port is enslaved to.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }
}

/// One neighbour (ARP) table entry, from `ip -j neigh show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbor {
    /// The neighbour's IP address.
    pub ip: String,
    /// The interface the entry is on.
    pub dev: String,
    /// Its link-layer address, absent for INCOMPLETE/FAILED entries.
    pub lladdr: Option<String>,
    /// Kernel states (`REACHABLE`, `STALE`, `FAILED`, ...).
    pub states: Vec<String>,
}

#[derive(Debug, Default)]
struct LabState {
    namespaces: Vec<Netns>,
    ports: Vec<Port>,
    processes: Vec<TrackedProcess>,
    process_names: HashSet<String>,
    bpf_dirs: Vec<PathBuf>,
    next_port: u32,
}

/// A private, self-removing test network. See the module documentation.
pub struct Lab {
    label: String,
    prefix: String,
    temp_dir: PathBuf,
    state: Mutex<LabState>,
    kept: AtomicBool,
}

impl fmt::Debug for Lab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lab")
            .field("label", &self.label)
            .field("prefix", &self.prefix)
            .field("temp_dir", &self.temp_dir)
            .finish_non_exhaustive()
    }
}

impl Lab {
    /// Creates an empty lab; `label` names the test or tool that owns it (for humans: it is
    /// written to the lab's temp dir). Removes leftovers of dead earlier runs first.
    pub fn new(label: &str) -> Result<Lab> {
        if !is_root() {
            return Err(LabError::NotRoot);
        }
        install_signal_cleanup();
        for removed in clean_stale_runs() {
            write_stderr_line(&format!(
                "hb-tests: removed leftover of a dead run: {removed}"
            ));
        }
        // A kept lab of an earlier process that had our pid keeps its names: take the next.
        let prefix = loop {
            let index = NEXT_LAB_INDEX.fetch_add(1, Ordering::Relaxed);
            let prefix = run_prefix(std::process::id(), index);
            if !is_kept(&prefix) {
                break prefix;
            }
        };
        // Anything already carrying this exact prefix belongs to an earlier process that had
        // our pid: it is stale by construction.
        remove_run_leftovers(&prefix);

        let temp_dir = std::env::temp_dir().join(&prefix);
        let _creating = creating();
        fs::create_dir_all(&temp_dir).map_err(|err| LabError::io("creating", &temp_dir, err))?;
        // Readable by nginx workers, which drop to an unprivileged user.
        fs::set_permissions(&temp_dir, fs::Permissions::from_mode(0o755))
            .map_err(|err| LabError::io("setting permissions of", &temp_dir, err))?;
        let owner_file = temp_dir.join("owner");
        fs::write(
            &owner_file,
            format!("label={label}\npid={}\n", std::process::id()),
        )
        .map_err(|err| LabError::io("writing", &owner_file, err))?;

        Ok(Lab {
            label: label.to_owned(),
            prefix,
            temp_dir,
            state: Mutex::new(LabState::default()),
            kept: AtomicBool::new(false),
        })
    }

    /// Keeps the lab after this process exits: writes [`KEEP_MARKER`] (holding `note`, for
    /// whoever lists kept labs) and makes dropping the lab leave everything running. Returns
    /// the marker's path. Remove the lab later with [`remove_kept_lab`].
    pub fn keep(&self, note: &str) -> Result<PathBuf> {
        let marker = self.temp_dir.join(KEEP_MARKER);
        fs::write(&marker, note).map_err(|err| LabError::io("writing", &marker, err))?;
        self.kept.store(true, Ordering::SeqCst);
        Ok(marker)
    }

    /// Whether [`Lab::keep`] was called.
    pub fn is_kept(&self) -> bool {
        self.kept.load(Ordering::SeqCst)
    }

    /// What the lab was created for.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// This lab's run prefix (`hblab-<pid>-<n>`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The lab's private temp dir, removed when the lab drops.
    pub fn temp_dir(&self) -> &Path {
        &self.temp_dir
    }

    /// Creates (and removes on drop) a subdirectory of the temp dir.
    pub fn temp_subdir(&self, name: &str) -> Result<PathBuf> {
        check_short_name(name)?;
        let dir = self.temp_dir.join(name);
        let _creating = creating();
        fs::create_dir_all(&dir).map_err(|err| LabError::io("creating", &dir, err))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
            .map_err(|err| LabError::io("setting permissions of", &dir, err))?;
        Ok(dir)
    }

    fn state(&self) -> MutexGuard<'_, LabState> {
        // No user code runs under this lock, so a poisoned lock still holds consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    // ---------------------------------------------------------------- topology

    /// Creates namespace `<prefix>-<short>` with loopback up and IPv6 disabled (the lab
    /// uses 198.18.0.0/15 only, so no link-local IPv6 chatter either).
    pub fn add_netns(&self, short: &str) -> Result<Netns> {
        check_short_name(short)?;
        let netns = Netns {
            name: format!("{}-{short}", self.prefix),
            short: short.to_owned(),
        };
        {
            let _creating = creating();
            let mut state = self.state();
            if state.namespaces.iter().any(|ns| ns.short == short) {
                return Err(LabError::Duplicate {
                    kind: "namespace",
                    name: short.to_owned(),
                });
            }
            cmd::run_checked("ip", &["netns", "add", netns.name()])?;
            state.namespaces.push(netns.clone());
        }
        for key in [
            "net.ipv6.conf.all.disable_ipv6",
            "net.ipv6.conf.default.disable_ipv6",
        ] {
            self.set_sysctl(&netns, key, "1")?;
        }
        self.ip(&netns, &["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// Writes a per-namespace sysctl (`net.*` keys only: those are private to the namespace,
    /// so the host's settings are never touched).
    pub fn set_sysctl(&self, netns: &Netns, key: &str, value: &str) -> Result<()> {
        if !key.starts_with("net.")
            || key.contains("..")
            || key.contains('/')
            || key.split('.').any(str::is_empty)
        {
            return Err(LabError::InvalidName {
                name: key.to_owned(),
                reason: "only net.* sysctls (which are per namespace) may be set",
            });
        }
        let path = PathBuf::from(format!("/proc/sys/{}", key.replace('.', "/")));
        let value = value.to_owned();
        self.in_netns(netns, move || {
            fs::write(&path, value.as_bytes()).map_err(|err| LabError::io("writing", &path, err))
        })?
    }

    /// Creates bridge `name` in `switch`, without STP and with multicast snooping off (so
    /// multicast heartbeats are flooded like on a plain switch), and brings it up.
    ///
    /// Frames the bridge forwards skip iptables, ip6tables and arptables, as on a real
    /// switch. The kernel default (with `br_netfilter`) sends every bridged frame through
    /// those hooks, a cost that every daemon's sends would pay (a profile of an idle hb
    /// sender: an eighth of its samples in `br_nf_*`).
    pub fn add_bridge(&self, switch: &Netns, name: &str) -> Result<Bridge> {
        check_ifname(name)?;
        for family in ["iptables", "ip6tables", "arptables"] {
            let key = format!("net.bridge.bridge-nf-call-{family}");
            // Absent when br_netfilter is not loaded: then there is nothing to skip.
            if Path::new(&format!("/proc/sys/{}", key.replace('.', "/"))).exists() {
                self.set_sysctl(switch, &key, "0")?;
            }
        }
        self.ip(
            switch,
            &[
                "link",
                "add",
                name,
                "type",
                "bridge",
                "stp_state",
                "0",
                "mcast_snooping",
                "0",
            ],
        )?;
        self.ip(switch, &["link", "set", name, "up"])?;
        Ok(Bridge {
            netns: switch.clone(),
            name: name.to_owned(),
        })
    }

    /// Plugs `node` into `bridge`: a veth pair with `ifname` in the node and a bridge port
    /// `p<n>` in the switch namespace, both up.
    pub fn connect(&self, node: &Netns, ifname: &str, bridge: &Bridge) -> Result<Port> {
        check_ifname(ifname)?;
        let switch_ifname = {
            let mut state = self.state();
            let name = format!("p{}", state.next_port);
            state.next_port += 1;
            name
        };
        let switch = bridge.netns();
        self.ip(
            node,
            &[
                "link",
                "add",
                ifname,
                "type",
                "veth",
                "peer",
                "name",
                &switch_ifname,
                "netns",
                switch.name(),
            ],
        )?;
        let alias = format!("{}:{ifname}", node.short());
        self.ip(
            switch,
            &[
                "link",
                "set",
                &switch_ifname,
                "master",
                bridge.name(),
                "alias",
                &alias,
                "up",
            ],
        )?;
        self.ip(node, &["link", "set", ifname, "up"])?;
        let port = Port {
            node: node.clone(),
            node_ifname: ifname.to_owned(),
            switch: switch.clone(),
            switch_ifname,
            bridge: bridge.name().to_owned(),
        };
        self.state().ports.push(port.clone());
        Ok(port)
    }

    /// A direct veth cable between two namespaces, both ends up.
    pub fn add_veth_pair(
        &self,
        a: &Netns,
        a_ifname: &str,
        b: &Netns,
        b_ifname: &str,
    ) -> Result<()> {
        check_ifname(a_ifname)?;
        check_ifname(b_ifname)?;
        self.ip(
            a,
            &[
                "link",
                "add",
                a_ifname,
                "type",
                "veth",
                "peer",
                "name",
                b_ifname,
                "netns",
                b.name(),
            ],
        )?;
        self.ip(a, &["link", "set", a_ifname, "up"])?;
        self.ip(b, &["link", "set", b_ifname, "up"])?;
        Ok(())
    }

    /// Adds `cidr` (e.g. `198.18.0.1/24`, refused outside 198.18.0.0/15) to `ifname`, with the
    /// subnet's broadcast address.
    pub fn add_address(&self, netns: &Netns, ifname: &str, cidr: &str) -> Result<TestCidr> {
        check_ifname(ifname)?;
        let cidr: TestCidr = cidr.parse()?;
        let text = cidr.to_string();
        self.ip(netns, &["addr", "add", &text, "brd", "+", "dev", ifname])?;
        Ok(cidr)
    }

    /// Removes `cidr` from `ifname`.
    pub fn del_address(&self, netns: &Netns, ifname: &str, cidr: &str) -> Result<()> {
        check_ifname(ifname)?;
        let cidr: TestCidr = cidr.parse()?;
        self.ip(netns, &["addr", "del", &cidr.to_string(), "dev", ifname])?;
        Ok(())
    }

    /// Routes `destination` (a test-range prefix) via `gateway` (a test-range address).
    pub fn add_route(&self, netns: &Netns, destination: &str, gateway: Ipv4Addr) -> Result<()> {
        let destination: TestCidr = destination.parse()?;
        let gateway = require_test_address(gateway.into())?;
        let network = format!("{}/{}", destination.network(), destination.prefix_len());
        self.ip(
            netns,
            &["route", "add", &network, "via", &gateway.to_string()],
        )?;
        Ok(())
    }

    /// Brings an interface up or down.
    pub fn set_link_up(&self, netns: &Netns, ifname: &str, up: bool) -> Result<()> {
        check_ifname(ifname)?;
        self.ip(
            netns,
            &["link", "set", ifname, if up { "up" } else { "down" }],
        )?;
        Ok(())
    }

    /// Brings one bridge port up or down on the switch side (a cable cut as the node's
    /// software cannot prevent it: XDP and firewalls on the node see nothing).
    pub fn set_port_up(&self, port: &Port, up: bool) -> Result<()> {
        self.set_link_up(&port.switch, &port.switch_ifname, up)
    }

    /// Brings every bridge port of `node` up or down: node death and return, as the rest of the
    /// network sees it. Returns how many ports changed.
    pub fn set_node_ports_up(&self, node: &Netns, up: bool) -> Result<usize> {
        let ports: Vec<Port> = self
            .state()
            .ports
            .iter()
            .filter(|port| &port.node == node)
            .cloned()
            .collect();
        if ports.is_empty() {
            return Err(LabError::NoPorts(node.name.clone()));
        }
        for port in &ports {
            self.set_port_up(port, up)?;
        }
        Ok(ports.len())
    }

    /// The ports connecting `node` to bridges.
    pub fn ports_of(&self, node: &Netns) -> Vec<Port> {
        self.state()
            .ports
            .iter()
            .filter(|port| &port.node == node)
            .cloned()
            .collect()
    }

    // ---------------------------------------------------------------- looking inside

    /// `ip -n <netns> args...`; returns stdout.
    pub fn ip(&self, netns: &Netns, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", netns.name()];
        full.extend_from_slice(args);
        cmd::run_checked("ip", &full)
    }

    /// `ip -j -n <netns> args...`, parsed.
    pub fn ip_json(&self, netns: &Netns, args: &[&str]) -> Result<serde_json::Value> {
        let mut full = vec!["-j", "-n", netns.name()];
        full.extend_from_slice(args);
        let stdout = cmd::run_checked("ip", &full)?;
        // `ip -j` prints nothing at all for some empty results.
        if stdout.trim().is_empty() {
            return Ok(serde_json::Value::Array(Vec::new()));
        }
        parse_json(&describe("ip".as_ref(), &full), &stdout)
    }

    /// The MAC address of `ifname` (lowercase, colon-separated).
    pub fn mac_address(&self, netns: &Netns, ifname: &str) -> Result<String> {
        check_ifname(ifname)?;
        let json = self.ip_json(netns, &["link", "show", "dev", ifname])?;
        json.get(0)
            .and_then(|link| link.get("address"))
            .and_then(|address| address.as_str())
            .map(str::to_owned)
            .ok_or_else(|| LabError::Json {
                command: format!("ip -j -n {netns} link show dev {ifname}"),
                reason: "no \"address\" field".to_owned(),
            })
    }

    /// The neighbour (ARP) entry for `ip` in `netns`, if there is one.
    pub fn neighbor(&self, netns: &Netns, ip: Ipv4Addr) -> Result<Option<Neighbor>> {
        let ip = require_test_address(ip.into())?;
        let ip_text = ip.to_string();
        let json = self.ip_json(netns, &["neigh", "show", "to", &ip_text])?;
        let entries = json.as_array().ok_or_else(|| LabError::Json {
            command: format!("ip -j -n {netns} neigh show to {ip_text}"),
            reason: "not an array".to_owned(),
        })?;
        Ok(entries.iter().find_map(|entry| {
            let text = |key: &str| entry.get(key).and_then(|v| v.as_str()).map(str::to_owned);
            if text("dst").as_deref() != Some(ip_text.as_str()) {
                return None;
            }
            Some(Neighbor {
                ip: ip_text.clone(),
                dev: text("dev").unwrap_or_default(),
                lladdr: text("lladdr"),
                states: entry
                    .get("state")
                    .and_then(|v| v.as_array())
                    .map(|states| {
                        states
                            .iter()
                            .filter_map(|s| s.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        }))
    }

    /// One ICMP echo from `netns` to `destination` (test range only); whether a reply came
    /// within `timeout` (rounded up to whole seconds, at least one).
    pub fn ping(&self, netns: &Netns, destination: Ipv4Addr, timeout: Duration) -> Result<bool> {
        let destination = require_test_address(destination.into())?;
        let wait_secs = timeout.as_secs().max(1)
            + u64::from(timeout.subsec_nanos() > 0 && timeout.as_secs() > 0);
        let output = self.exec_output(
            netns,
            &[
                "ping",
                "-n",
                "-q",
                "-c",
                "1",
                "-W",
                &wait_secs.to_string(),
                &destination.to_string(),
            ],
        )?;
        Ok(output.success())
    }

    /// Runs a short command inside `netns` (through `nsenter --net`, so host mounts such as
    /// bpffs stay visible); fails unless it exits 0; returns its stdout.
    pub fn exec(&self, netns: &Netns, argv: &[&str]) -> Result<String> {
        Ok(self.exec_output(netns, argv)?.checked()?.stdout)
    }

    /// Like [`Lab::exec`], but returns the output whatever the exit status.
    pub fn exec_output(&self, netns: &Netns, argv: &[&str]) -> Result<CommandOutput> {
        if argv.is_empty() {
            return Err(LabError::InvalidName {
                name: String::new(),
                reason: "empty command",
            });
        }
        let net = nsenter_net_arg(netns);
        let mut full: Vec<&str> = vec![net.as_str(), "--"];
        full.extend_from_slice(argv);
        cmd::run("nsenter", &full)
    }

    /// Runs `task` on a new thread that has joined `netns`, and returns its result. Sockets the
    /// task opens belong to the namespace. A panic inside the task is resumed on the caller.
    pub fn in_netns<T, F>(&self, netns: &Netns, task: F) -> Result<T>
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        run_in_netns(netns, task)
    }

    /// `bpftool -j args...` run inside `netns` (for per-namespace views such as `net show`).
    pub fn bpftool_json_in(&self, netns: &Netns, args: &[&str]) -> Result<serde_json::Value> {
        let mut argv = vec!["bpftool", "-j"];
        argv.extend_from_slice(args);
        let stdout = self.exec(netns, &argv)?;
        parse_json(&argv.join(" "), &stdout)
    }

    // ---------------------------------------------------------------- processes

    /// Starts `command` inside `netns` as a long-running process named `name` (unique in this
    /// lab), in its own process group, stdin closed, stdout/stderr to `<temp>/<name>.stdout`
    /// and `.stderr`. The program, arguments, environment changes and working directory of
    /// `command` are used; its stdio settings are replaced. The lab ends it on drop.
    pub fn spawn(&self, netns: &Netns, name: &str, command: &Command) -> Result<ProcessHandle> {
        check_short_name(name)?;
        if !self.state().process_names.insert(name.to_owned()) {
            return Err(LabError::Duplicate {
                kind: "process",
                name: name.to_owned(),
            });
        }
        let result = self.spawn_tracked(netns, name, command);
        if result.is_err() {
            self.state().process_names.remove(name);
        }
        result
    }

    fn spawn_tracked(&self, netns: &Netns, name: &str, command: &Command) -> Result<ProcessHandle> {
        let _creating = creating();
        let stdout_path = self.temp_dir.join(format!("{name}.stdout"));
        let stderr_path = self.temp_dir.join(format!("{name}.stderr"));
        let stdout = File::create(&stdout_path)
            .map_err(|err| LabError::io("creating", &stdout_path, err))?;
        let stderr = File::create(&stderr_path)
            .map_err(|err| LabError::io("creating", &stderr_path, err))?;

        let mut wrapped = Command::new("nsenter");
        wrapped
            .arg(nsenter_net_arg(netns))
            .arg("--")
            .arg(command.get_program())
            .args(command.get_args());
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => wrapped.env(key, value),
                None => wrapped.env_remove(key),
            };
        }
        if let Some(dir) = command.get_current_dir() {
            wrapped.current_dir(dir);
        }
        wrapped
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);

        let args: Vec<OsString> = wrapped.get_args().map(OsString::from).collect();
        let description = describe("nsenter".as_ref(), &args);
        let child = wrapped.spawn().map_err(|source| LabError::Spawn {
            command: description,
            source,
        })?;
        let handle = ProcessHandle {
            name: name.to_owned(),
            pid: child.id(),
            netns: netns.name().to_owned(),
            stdout_path,
            stderr_path,
        };
        self.state().processes.push(TrackedProcess {
            handle: handle.clone(),
            child,
        });
        Ok(handle)
    }

    /// Whether the process is still running (an exited process stays tracked, unreaped, until
    /// [`Lab::stop`] or drop).
    pub fn is_running(&self, process: &ProcessHandle) -> Result<bool> {
        let state = self.state();
        let tracked = find_tracked(&state, process)?;
        Ok(!tracked.has_exited()?)
    }

    /// Sends `signal` to the process group the lab created for `process`.
    pub fn signal(&self, process: &ProcessHandle, signal: Signal) -> Result<()> {
        let state = self.state();
        // Also fine after the leader exited: unreaped, it keeps the group id reserved, and
        // the group may still have members.
        find_tracked(&state, process)?.signal_group(signal)
    }

    /// Ends `process`: SIGTERM to its group, up to `grace` to exit, then SIGKILL; reaps it and
    /// returns how the leader ended. The handle is no longer tracked afterwards.
    pub fn stop(&self, process: &ProcessHandle, grace: Duration) -> Result<ExitStatus> {
        let tracked = {
            let mut state = self.state();
            let index = state
                .processes
                .iter()
                .position(|tracked| tracked.handle == *process)
                .ok_or_else(|| LabError::UnknownProcess {
                    name: process.name.clone(),
                    pid: process.pid,
                })?;
            state.processes.remove(index)
        };
        let mut results = terminate(vec![tracked], grace);
        match results.pop() {
            Some((_, status)) => status,
            None => Err(LabError::UnknownProcess {
                name: process.name.clone(),
                pid: process.pid,
            }),
        }
    }

    /// Handles of every process the lab still tracks.
    pub fn processes(&self) -> Vec<ProcessHandle> {
        self.state()
            .processes
            .iter()
            .map(|tracked| tracked.handle.clone())
            .collect()
    }

    // ---------------------------------------------------------------- BPF

    /// A pin directory under `/sys/fs/bpf/<prefix>/<name>` (created, removed on drop). Agents
    /// started by the lab should pin there, so a killed run's pins are found and removed too.
    pub fn bpf_pin_dir(&self, name: &str) -> Result<PathBuf> {
        check_short_name(name)?;
        if !bpffs_mounted()? {
            return Err(LabError::BpffsNotMounted);
        }
        let root = Path::new(BPFFS_ROOT).join(&self.prefix);
        let dir = root.join(name);
        let _creating = creating();
        fs::create_dir_all(&dir).map_err(|err| LabError::io("creating", &dir, err))?;
        self.register_bpf_pin_dir(&root);
        Ok(dir)
    }

    /// Registers a directory of pinned BPF objects to be removed when the lab drops.
    pub fn register_bpf_pin_dir(&self, dir: &Path) {
        let mut state = self.state();
        if !state.bpf_dirs.iter().any(|known| known == dir) {
            state.bpf_dirs.push(dir.to_owned());
        }
    }

    // ---------------------------------------------------------------- teardown

    fn teardown(&mut self) {
        let _gate = creating();
        let state = std::mem::take(&mut *self.state());
        if self.is_kept() {
            // Dropping the `Child` handles neither kills nor waits: the processes live on.
            return;
        }
        let panicking = std::thread::panicking();

        if panicking {
            // The test is failing: its processes' logs are the best clue, and they are about
            // to be removed. eprintln! output is shown with the failing test.
            for tracked in &state.processes {
                eprintln!("{}", tracked.handle.log_tail(80));
            }
        }
        let mut problems = Vec::new();
        for (handle, status) in terminate(state.processes, DEFAULT_STOP_GRACE) {
            if let Err(err) = status {
                problems.push(format!(
                    "ending {} (pid {}): {err}",
                    handle.name, handle.pid
                ));
            }
        }
        for netns in state.namespaces.iter().rev() {
            if let Err(err) = remove_netns(netns.name()) {
                problems.push(err.to_string());
            }
        }
        for dir in state.bpf_dirs.iter().rev() {
            if let Err(err) = remove_dir_if_present(dir) {
                problems.push(err.to_string());
            }
        }
        if let Err(err) = remove_dir_if_present(&self.temp_dir) {
            problems.push(err.to_string());
        }
        for problem in problems {
            write_stderr_line(&format!(
                "hb-tests: cleaning lab {}: {problem}",
                self.prefix
            ));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn find_tracked<'a>(state: &'a LabState, process: &ProcessHandle) -> Result<&'a TrackedProcess> {
    state
        .processes
        .iter()
        .find(|tracked| tracked.handle == *process)
        .ok_or_else(|| LabError::UnknownProcess {
            name: process.name.clone(),
            pid: process.pid,
        })
}

fn nsenter_net_arg(netns: &Netns) -> String {
    format!("--net={}", netns.path().display())
}

/// Runs `task` on a thread that joined `netns` (see [`Lab::in_netns`]).
pub(crate) fn run_in_netns<T, F>(netns: &Netns, task: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let path = netns.path();
    let file = File::open(&path).map_err(|err| LabError::io("opening", &path, err))?;
    std::thread::scope(|scope| {
        let worker = scope.spawn(move || -> Result<T> {
            // The thread's namespace changes, not the process's; the thread ends with the task.
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|err| LabError::InNetns {
                netns: netns.name().to_owned(),
                reason: format!("setns: {err}"),
            })?;
            Ok(task())
        });
        match worker.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Kills every process inside `name` (never this process), then deletes the namespace.
fn remove_netns(name: &str) -> Result<()> {
    if !Path::new(NETNS_RUN_DIR).join(name).exists() {
        return Ok(());
    }
    kill_netns_processes(name)?;
    cmd::run_checked("ip", &["netns", "del", name])?;
    Ok(())
}

/// SIGKILLs the processes `ip netns pids` finds in `name`: what the lab's processes left behind
/// there (daemonized services, stragglers of a killed run). They were all started in a
/// namespace the lab created, so they are the lab's to end.
fn kill_netns_processes(name: &str) -> Result<()> {
    let own_pid = std::process::id();
    let stdout = cmd::run_checked("ip", &["netns", "pids", name])?;
    for pid in stdout
        .split_whitespace()
        .filter_map(|word| word.parse::<u32>().ok())
        .filter(|&pid| pid != own_pid)
    {
        match kill(Pid::from_raw(pid as i32), Signal::SIGKILL) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(err) => {
                return Err(LabError::sys(
                    format!("killing pid {pid} in namespace {name}"),
                    err,
                ))
            }
        }
    }
    Ok(())
}

fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(LabError::io("removing", dir, err)),
    }
}

/// Names in `dir` that belong to a lab whose owner process no longer exists.
fn stale_entries(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let own_pid = std::process::id();
    entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| match owner_pid(name) {
            Some(pid) => pid != own_pid && !pid_alive(pid) && !name_is_kept(name),
            None => false,
        })
        .collect()
}

/// Whether the lab with run prefix `prefix` is kept (see [`Lab::keep`]).
pub fn is_kept(prefix: &str) -> bool {
    std::env::temp_dir()
        .join(prefix)
        .join(KEEP_MARKER)
        .is_file()
}

/// Whether `name` (a namespace, temp dir or bpffs dir) belongs to a kept lab.
fn name_is_kept(name: &str) -> bool {
    run_prefix_of(name).is_some_and(is_kept)
}

/// A lab left running by [`Lab::keep`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptLab {
    /// Its run prefix (`hblab-<pid>-<n>`).
    pub prefix: String,
    /// What it was created for (the label given to [`Lab::new`]).
    pub label: String,
    /// Its temp dir (configuration, logs).
    pub temp_dir: PathBuf,
    /// The note the keeper left in the marker.
    pub note: String,
}

/// Every kept lab on this machine, by prefix.
pub fn kept_labs() -> Vec<KeptLab> {
    let temp = std::env::temp_dir();
    let Ok(entries) = fs::read_dir(&temp) else {
        return Vec::new();
    };
    let mut kept: Vec<KeptLab> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| run_prefix_of(name) == Some(name.as_str()) && is_kept(name))
        .map(|prefix| {
            let temp_dir = temp.join(&prefix);
            let owner = fs::read_to_string(temp_dir.join("owner")).unwrap_or_default();
            let label = owner
                .lines()
                .find_map(|line| line.strip_prefix("label="))
                .unwrap_or_default()
                .to_owned();
            let note = fs::read_to_string(temp_dir.join(KEEP_MARKER)).unwrap_or_default();
            KeptLab {
                prefix,
                label,
                temp_dir,
                note,
            }
        })
        .collect();
    kept.sort_by(|a, b| a.prefix.cmp(&b.prefix));
    kept
}

/// Removes a kept lab: its namespaces with every process in them, its bpffs dir, and last its
/// temp dir with the marker (so a removal that fails half-way can be run again). Returns what
/// was removed. Refuses a lab that is not kept: live labs clean up after themselves.
pub fn remove_kept_lab(prefix: &str) -> Result<Vec<String>> {
    if run_prefix_of(prefix) != Some(prefix) || !is_kept(prefix) {
        return Err(LabError::InvalidName {
            name: prefix.to_owned(),
            reason: "not the prefix of a kept lab",
        });
    }
    let mut removed = Vec::new();
    let entries = fs::read_dir(NETNS_RUN_DIR)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok())
                .filter_map(|entry| entry.file_name().into_string().ok())
                .filter(|name| run_prefix_of(name) == Some(prefix))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for name in entries {
        remove_netns(&name)?;
        removed.push(format!("namespace {name}"));
    }
    for dir in [
        Path::new(BPFFS_ROOT).join(prefix),
        std::env::temp_dir().join(prefix),
    ] {
        if dir.exists() {
            remove_dir_if_present(&dir)?;
            removed.push(format!("directory {}", dir.display()));
        }
    }
    Ok(removed)
}

/// Removes namespaces (with their processes), temp dirs and bpffs directories left by runs
/// whose owner process is gone. Returns what was removed. Never touches live runs.
pub fn clean_stale_runs() -> Vec<String> {
    let mut removed = Vec::new();
    for name in stale_entries(Path::new(NETNS_RUN_DIR)) {
        match remove_netns(&name) {
            Ok(()) => removed.push(format!("namespace {name}")),
            Err(err) => write_stderr_line(&format!("hb-tests: stale namespace {name}: {err}")),
        }
    }
    let temp = std::env::temp_dir();
    let mut dirs: Vec<PathBuf> = stale_entries(&temp)
        .into_iter()
        .map(|name| temp.join(name))
        .collect();
    if matches!(bpffs_mounted(), Ok(true)) {
        dirs.extend(
            stale_entries(Path::new(BPFFS_ROOT))
                .into_iter()
                .map(|name| Path::new(BPFFS_ROOT).join(name)),
        );
    }
    for dir in dirs {
        match remove_dir_if_present(&dir) {
            Ok(()) => removed.push(format!("directory {}", dir.display())),
            Err(err) => write_stderr_line(&format!("hb-tests: stale {}: {err}", dir.display())),
        }
    }
    removed
}

/// On SIGINT, SIGTERM or SIGHUP (Ctrl-C, or `cargo xtask test` ending tests that ran past
/// its time limit) a test process would die without running any `Drop`. Instead, a thread
/// receives the signal, removes every lab of this process, and exits with the usual status.
fn install_signal_cleanup() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let signals = Signals::new([SIGINT, SIGTERM, SIGHUP]);
        let mut signals = match signals {
            Ok(signals) => signals,
            Err(err) => {
                write_stderr_line(&format!(
                    "hb-tests: cannot clean up on signals ({err}); a killed run's labs are \
                     removed by the next run"
                ));
                return;
            }
        };
        std::thread::spawn(move || {
            if let Some(signal) = signals.forever().next() {
                write_stderr_line(&format!(
                    "hb-tests: signal {signal}: removing this process's labs before exiting"
                ));
                // Kept until exit: whatever the other threads were creating is finished
                // first, and nothing is created afterwards.
                let _no_more = CREATION_GATE
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                remove_runs_of(std::process::id());
                std::process::exit(128 + signal);
            }
        });
    });
}

/// Removes every namespace (with its processes), temp dir and bpffs dir of labs owned by `pid`.
fn remove_runs_of(pid: u32) {
    let owned = |dir: &Path| -> Vec<String> {
        fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok())
                    .filter_map(|entry| entry.file_name().into_string().ok())
                    .filter(|name| owner_pid(name) == Some(pid) && !name_is_kept(name))
                    .collect()
            })
            .unwrap_or_default()
    };
    for name in owned(Path::new(NETNS_RUN_DIR)) {
        if let Err(err) = remove_netns(&name) {
            write_stderr_line(&format!("hb-tests: namespace {name}: {err}"));
        }
    }
    let temp = std::env::temp_dir();
    for dir in [temp.as_path(), Path::new(BPFFS_ROOT)] {
        for name in owned(dir) {
            let path = dir.join(name);
            if let Err(err) = remove_dir_if_present(&path) {
                write_stderr_line(&format!("hb-tests: {}: {err}", path.display()));
            }
        }
    }
}

/// Removes everything named with exactly `prefix` (namespaces, temp dir, bpffs dir).
fn remove_run_leftovers(prefix: &str) {
    let ours = |name: &str| name == prefix || name.starts_with(&format!("{prefix}-"));
    if let Ok(entries) = fs::read_dir(NETNS_RUN_DIR) {
        for name in entries
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| ours(name))
        {
            if let Err(err) = remove_netns(&name) {
                write_stderr_line(&format!("hb-tests: stale namespace {name}: {err}"));
            }
        }
    }
    for dir in [
        std::env::temp_dir().join(prefix),
        Path::new(BPFFS_ROOT).join(prefix),
    ] {
        if let Err(err) = remove_dir_if_present(&dir) {
            write_stderr_line(&format!("hb-tests: stale {}: {err}", dir.display()));
        }
    }
}
