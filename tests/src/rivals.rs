//! keepalived and Linux-HA Heartbeat in a lab, for `cargo xtask bench`: the two systems hb is
//! measured against, run from their Debian packages on the same network as
//! [`crate::Cluster`] (see [`LabNetwork`]), with nginx on both balancers and only the VIP
//! moving.
//!
//! * **keepalived** (2.2.7): VRRPv3 adverts over the service LAN (`eth0`, where the VIP lives:
//!   VRRP's own design, no `track_interface` needed), lb1 priority 150 and lb2 100, preempt
//!   on, `vrrp_rt_priority` and `vrrp_no_swap` (real-time and locked memory, as hb and
//!   Heartbeat run with `realtime on`). Each node has its own config and pid files; it runs
//!   in the foreground (`--dont-fork`) so the lab tracks it by its process group, logs to a
//!   file, and never reads `/etc/keepalived`.
//! * **Heartbeat** (3.0.6) in R1 mode (`crm off`), `haresources` holding only
//!   `IPaddr2::VIP/24/eth0`, unicast heartbeats on both links as in [`crate::Cluster`]. It
//!   needs its own hostname, `/etc/ha.d`, `/run` and `/var/lib/heartbeat`, so each node's
//!   Heartbeat runs under `unshare --uts --mount` (mounts private, never seen by the host)
//!   with per-node directories bind-mounted over those paths. Heartbeat daemonizes and
//!   forks helpers (FIFO reader, a reader and a writer per link, resource scripts), all of
//!   them inside that mount namespace: the lab finds, times and ends them by it, by PID.
//!
//! Nothing of the host's `/etc/ha.d`, `/etc/keepalived`, `/run` or `/var/lib/heartbeat` is
//! changed: `/etc/ha.d` is only read, to copy Heartbeat's own scripts (`harc`, `rc.d`,
//! `resource.d`, `shellfuncs`) into each node's directory.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{Group, Pid, User};

use crate::cluster::{CLIENT_ADDR, VIP};
use crate::cmd;
use crate::error::{LabError, Result};
use crate::lab::{Bridge, Lab, Netns};
use crate::nginx::Nginx;
use crate::process::ProcessHandle;
use crate::wait::wait_for;

/// The keepalived binary (Debian package `keepalived`).
pub const KEEPALIVED_BIN: &str = "keepalived";
/// Heartbeat's daemon (Debian package `heartbeat`; it is not on `PATH`).
pub const HEARTBEAT_BIN: &str = "/usr/libexec/heartbeat/heartbeat";
/// Heartbeat's scripts, copied into each node's `ha.d`.
const HOST_HA_D: &str = "/etc/ha.d";

/// How long a daemon gets to start, or to stop cleanly after SIGTERM (Heartbeat releases its
/// resources through shell scripts first).
pub const DAEMON_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(20);

/// Which rival, at which timers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RivalSpec {
    /// VRRPv3 with `advert_int` in centiseconds (VRRPv3's unit: 1 = 0.01 s).
    Keepalived { advert_int_cs: u32 },
    /// Heartbeat with millisecond `keepalive` and `deadtime` (`warntime` is half the
    /// deadtime, `initdead` 10 s: the minimum Heartbeat recommends).
    Heartbeat { keepalive_ms: u32, deadtime_ms: u32 },
}

impl RivalSpec {
    /// `keepalived` or `heartbeat`.
    pub fn system(&self) -> &'static str {
        match self {
            RivalSpec::Keepalived { .. } => "keepalived",
            RivalSpec::Heartbeat { .. } => "heartbeat",
        }
    }

    /// The timers as the configuration file says them.
    pub fn describe(&self) -> String {
        match self {
            RivalSpec::Keepalived { advert_int_cs } => {
                format!("advert_int {}", centiseconds(*advert_int_cs))
            }
            RivalSpec::Heartbeat {
                keepalive_ms,
                deadtime_ms,
            } => format!("keepalive {keepalive_ms}ms / deadtime {deadtime_ms}ms"),
        }
    }
}

/// `0.01` for 1.
fn centiseconds(cs: u32) -> String {
    format!("{}.{:02}", cs / 100, cs % 100)
}

// ------------------------------------------------------------------------------ network

/// One balancer's place in the network.
#[derive(Debug, Clone)]
pub struct NetNode {
    /// `lb1`, `lb2`: also its hostname and the page its nginx serves.
    pub name: String,
    pub netns: Netns,
    /// `eth0`, on the service LAN.
    pub svc_addr: Ipv4Addr,
    /// `eth1`, on the heartbeat link.
    pub hb_addr: Ipv4Addr,
}

/// The network of [`crate::Cluster`], built the same way: a switch namespace with a service
/// bridge (198.18.1.0/24: client .100, lb*N* .1*N*, the VIP .10) and a heartbeat bridge
/// (198.18.2.0/24: lb*N* .1*N*). [`topology_fingerprint`] shows that both are the same.
#[derive(Debug)]
pub struct LabNetwork {
    pub switch: Netns,
    pub svc: Bridge,
    pub hb: Bridge,
    pub client: Netns,
    pub nodes: Vec<NetNode>,
}

impl LabNetwork {
    /// Builds the network with `nodes` balancers in `lab`.
    pub fn build(lab: &Lab, nodes: usize) -> Result<LabNetwork> {
        let switch = lab.add_netns("sw")?;
        let svc = lab.add_bridge(&switch, "svc")?;
        let hb = lab.add_bridge(&switch, "hb")?;
        let client = lab.add_netns("client")?;
        lab.connect(&client, "eth0", &svc)?;
        lab.add_address(&client, "eth0", &format!("{CLIENT_ADDR}/24"))?;
        let mut built = Vec::with_capacity(nodes);
        for index in 0..nodes {
            let name = format!("lb{}", index + 1);
            let host =
                u8::try_from(11 + index).map_err(|_| LabError::Cluster("too many nodes".into()))?;
            let netns = lab.add_netns(&name)?;
            lab.connect(&netns, "eth0", &svc)?;
            lab.connect(&netns, "eth1", &hb)?;
            let svc_addr = Ipv4Addr::new(198, 18, 1, host);
            let hb_addr = Ipv4Addr::new(198, 18, 2, host);
            lab.add_address(&netns, "eth0", &format!("{svc_addr}/24"))?;
            lab.add_address(&netns, "eth1", &format!("{hb_addr}/24"))?;
            built.push(NetNode {
                name,
                netns,
                svc_addr,
                hb_addr,
            });
        }
        Ok(LabNetwork {
            switch,
            svc,
            hb,
            client,
            nodes: built,
        })
    }
}

/// A description of a lab network that is equal for equal networks whatever their names:
/// per namespace (`client`, then the nodes in order) its interfaces with their state, MTU and
/// IPv4 addresses (the VIP left out: it moves), then per bridge of the switch its ports by
/// the alias naming the node side. Used to show that every system runs on the same network.
pub fn topology_fingerprint(
    lab: &Lab,
    switch: &Netns,
    client: &Netns,
    nodes: &[&Netns],
) -> Result<String> {
    let mut text = String::new();
    for netns in std::iter::once(client).chain(nodes.iter().copied()) {
        text.push_str(&format!("[{}]\n", netns.short()));
        let links = lab.ip_json(netns, &["addr", "show"])?;
        for link in links.as_array().into_iter().flatten() {
            let ifname = link["ifname"].as_str().unwrap_or("?");
            let mut addresses: Vec<String> = link["addr_info"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["family"] == "inet")
                .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or("?"), a["prefixlen"]))
                .filter(|a| !a.starts_with(&format!("{VIP}/")))
                .collect();
            addresses.sort();
            text.push_str(&format!(
                "  {ifname} mtu {} {} {}\n",
                link["mtu"],
                link["operstate"].as_str().unwrap_or("?"),
                addresses.join(" ")
            ));
        }
    }
    let links = lab.ip_json(switch, &["-d", "link", "show"])?;
    let mut ports: Vec<String> = links
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|link| {
            let master = link["master"].as_str()?;
            let alias = link["ifalias"].as_str().unwrap_or("?");
            // Aliases are `<short netns name>:<ifname>`, the same in every lab.
            Some(format!("  {master} <- {alias}\n"))
        })
        .collect();
    ports.sort();
    text.push_str("[switch]\n");
    ports.iter().for_each(|port| text.push_str(port));
    Ok(text)
}

/// Node death or return as the switch sees it: every bridge port of `node` down or up, in
/// one `ip -batch` so all links go within microseconds of each other. The same fault for
/// every system the benchmark measures.
pub fn set_node_ports(lab: &Lab, node: &Netns, up: bool) -> Result<()> {
    let ports = lab.ports_of(node);
    let Some(first) = ports.first() else {
        return Err(LabError::NoPorts(node.name().to_owned()));
    };
    let switch = first.switch().clone();
    let state = if up { "up" } else { "down" };
    let batch: String = ports
        .iter()
        .map(|port| format!("link set {} {state}\n", port.switch_ifname()))
        .collect();
    let file = lab
        .temp_dir()
        .join(format!("ports-{}-{state}.batch", node.short()));
    fs::write(&file, batch).map_err(|err| LabError::io("writing", &file, err))?;
    let file_arg = file.display().to_string();
    cmd::run_checked("ip", &["-n", switch.name(), "-batch", &file_arg])?;
    Ok(())
}

/// Names of the nodes holding `VIP` right now.
pub fn vip_holders(lab: &Lab, nodes: &[NetNode]) -> Result<Vec<String>> {
    let needle = format!("inet {VIP}/");
    let mut holders = Vec::new();
    for node in nodes {
        if lab
            .ip(&node.netns, &["-4", "-o", "addr", "show"])?
            .contains(&needle)
        {
            holders.push(node.name.clone());
        }
    }
    Ok(holders)
}

// -------------------------------------------------------------------------------- nginx

/// Starts nginx on a balancer, not managed by any HA system: it listens on every address
/// (`0.0.0.0:80`), so it answers for the VIP whenever the node holds it, and serves
/// `"<name>\n"`, so the client sees who answered. Waits until it serves on `check_addr`.
pub fn start_plain_nginx(
    lab: &Lab,
    netns: &Netns,
    name: &str,
    check_addr: Ipv4Addr,
) -> Result<ProcessHandle> {
    lab.start_nginx_checked(
        netns,
        name,
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 80)),
        SocketAddr::from((check_addr, 80)),
    )
    .map(Nginx::into_process)
}

// ---------------------------------------------------------------------------- processes

/// The pids of live processes (zombies and the dead left out) whose process group is
/// `pgid`.
pub fn processes_in_group(pgid: u32) -> Vec<u32> {
    all_pids()
        .filter(|&pid| {
            read_stat(pid).is_some_and(|stat| stat.pgrp == pgid && !matches!(stat.state, 'Z' | 'X'))
        })
        .collect()
}

/// The pids of processes in the namespace of `kind` (`net`, `mnt`, ...) with inode `ino`.
pub fn processes_in_namespace(kind: &str, ino: u64) -> Vec<u32> {
    all_pids()
        .filter(|&pid| namespace_inode(pid, kind) == Some(ino))
        .collect()
}

/// `/proc/<pid>/cmdline`, its arguments joined by spaces.
pub fn command_line(pid: u32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(String::from_utf8_lossy(&raw).replace('\0', " "))
}

/// The inode of `/proc/<pid>/ns/<kind>` (`net`, `mnt`, ...), which names the namespace.
pub fn namespace_inode(pid: u32, kind: &str) -> Option<u64> {
    fs::metadata(format!("/proc/{pid}/ns/{kind}"))
        .ok()
        .map(|meta| meta.ino())
}

/// What `/proc/<pid>/stat` says about CPU use and grouping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    pub state: char,
    pub ppid: u32,
    pub pgrp: u32,
    /// User and system CPU time, in clock ticks.
    pub utime: u64,
    pub stime: u64,
    /// CPU time of children it waited for, in clock ticks.
    pub cutime: u64,
    pub cstime: u64,
    /// When it started, in clock ticks after boot (with the pid, identifies the process).
    pub starttime: u64,
}

/// Reads `/proc/<pid>/stat`; `None` if the process is gone.
pub fn read_stat(pid: u32) -> Option<ProcStat> {
    parse_stat(pid, &fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_stat(pid: u32, text: &str) -> Option<ProcStat> {
    // "<pid> (<comm>) <state> <ppid> <pgrp> ...": comm may hold anything, so cut at the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field n of proc(5) (1-based) is fields[n - 3] here.
    let number = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(ProcStat {
        pid,
        state: fields.first()?.chars().next()?,
        ppid: u32::try_from(number(4)?).ok()?,
        pgrp: u32::try_from(number(5)?).ok()?,
        utime: number(14)?,
        stime: number(15)?,
        cutime: number(16)?,
        cstime: number(17)?,
        starttime: number(22)?,
    })
}

fn all_pids() -> impl Iterator<Item = u32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
}

// -------------------------------------------------------------------------- the cluster

#[derive(Debug)]
enum Daemon {
    /// Tracked by its process group (it runs in the foreground; its VRRP child stays in the
    /// group).
    Keepalived(ProcessHandle),
    /// `launcher` becomes Heartbeat, which forks the daemon and exits; the daemon and its
    /// helpers live in the launcher's private mount namespace.
    Heartbeat {
        launcher: ProcessHandle,
        mount_ns: u64,
    },
}

/// One balancer running a rival.
#[derive(Debug)]
pub struct RivalNode {
    pub net: NetNode,
    /// Its configuration, pid files, logs (Heartbeat: also its `ha.d`, `run`, `lib`).
    pub dir: PathBuf,
    daemon: Option<Daemon>,
    starts: u32,
}

/// keepalived or Heartbeat on two balancers, with nginx on both. Dropping it ends the
/// daemons and every process they started, then removes the lab.
#[derive(Debug)]
pub struct RivalCluster {
    pub spec: RivalSpec,
    pub network: LabNetwork,
    pub nodes: Vec<RivalNode>,
    nginx: Vec<ProcessHandle>,
    // Last: dropped after the daemons are ended in `Drop`.
    pub lab: Lab,
}

impl RivalCluster {
    /// Builds the network, starts nginx on both balancers and writes each node's
    /// configuration; starts no HA daemon.
    pub fn new(label: &str, spec: RivalSpec) -> Result<RivalCluster> {
        let lab = Lab::new(label)?;
        let network = LabNetwork::build(&lab, 2)?;
        // Heartbeat's authkeys: one secret for the cluster, fresh for every run.
        let secret = random_hex(20)?;
        let mut cluster = RivalCluster {
            spec,
            nodes: Vec::new(),
            nginx: Vec::new(),
            network,
            lab,
        };
        for index in 0..cluster.network.nodes.len() {
            let net = cluster.network.nodes[index].clone();
            let dir =
                cluster
                    .lab
                    .temp_subdir(&format!("{}-{}", cluster.spec.system(), net.name))?;
            let node = RivalNode {
                net,
                dir,
                daemon: None,
                starts: 0,
            };
            match cluster.spec {
                RivalSpec::Keepalived { advert_int_cs } => {
                    write_keepalived_config(&node, index, advert_int_cs)?
                }
                RivalSpec::Heartbeat {
                    keepalive_ms,
                    deadtime_ms,
                } => write_heartbeat_node(
                    &node,
                    &cluster.network.nodes,
                    keepalive_ms,
                    deadtime_ms,
                    &secret,
                )?,
            }
            cluster.nodes.push(node);
        }
        for index in 0..cluster.nodes.len() {
            let net = &cluster.nodes[index].net;
            let nginx = start_plain_nginx(&cluster.lab, &net.netns, &net.name, net.svc_addr)?;
            cluster.nginx.push(nginx);
        }
        Ok(cluster)
    }

    /// Starts node `index`'s daemon and waits until it runs (not until it holds anything).
    pub fn start(&mut self, index: usize) -> Result<()> {
        if self.nodes[index].daemon.is_some() {
            return Err(LabError::Cluster(format!(
                "{} already runs on {}",
                self.spec.system(),
                self.nodes[index].net.name
            )));
        }
        let node = &mut self.nodes[index];
        node.starts += 1;
        let process_name = format!("{}-{}{}", node.net.name, self.spec.system(), node.starts);
        let daemon = match self.spec {
            RivalSpec::Keepalived { .. } => {
                let dir = &node.dir;
                let mut command = Command::new(KEEPALIVED_BIN);
                command
                    .args(["--dont-fork", "--vrrp", "--log-console", "--no-syslog"])
                    .arg("--use-file")
                    .arg(dir.join("keepalived.conf"))
                    .arg("--pid")
                    .arg(dir.join("keepalived.pid"))
                    .arg("--vrrp_pid")
                    .arg(dir.join("vrrp.pid"));
                let handle = self.lab.spawn(&node.net.netns, &process_name, &command)?;
                let vrrp_pid = dir.join("vrrp.pid");
                let ready = wait_for(DAEMON_TIMEOUT, POLL, || {
                    if !self.lab.is_running(&handle).unwrap_or(false) {
                        return Some(false);
                    }
                    let child = read_pid_file(&vrrp_pid)?;
                    read_stat(child)
                        .is_some_and(|stat| stat.pgrp == handle.pid())
                        .then_some(true)
                });
                match ready {
                    Some(true) => Daemon::Keepalived(handle),
                    outcome => {
                        let log = handle.log_tail(40);
                        let _ = self.lab.stop(&handle, Duration::from_secs(3));
                        return Err(start_failure(&process_name, outcome, log));
                    }
                }
            }
            RivalSpec::Heartbeat { .. } => {
                let script = node.dir.join("start.sh");
                let mut command = Command::new("unshare");
                command
                    .args(["--uts", "--mount", "--propagation", "private", "--"])
                    .arg("/bin/sh")
                    .arg(&script);
                let netns_ino = fs::metadata(node.net.netns.path())
                    .map_err(|err| LabError::io("reading", node.net.netns.path(), err))?
                    .ino();
                let host_mnt = namespace_inode(std::process::id(), "mnt");
                let pid_file = node.dir.join("run/heartbeat.pid");
                // A pid file whose process is gone or a zombie (init reaps at its own pace)
                // would make Heartbeat refuse to start: a reboot would have cleared it.
                if let Some(pid) = read_pid_file(&pid_file) {
                    if read_stat(pid).is_none_or(|stat| stat.state == 'Z') {
                        fs::remove_file(&pid_file)
                            .map_err(|err| LabError::io("removing", &pid_file, err))?;
                    }
                }
                let launcher = self.lab.spawn(&node.net.netns, &process_name, &command)?;
                let started = Instant::now();
                let found = wait_for(DAEMON_TIMEOUT, POLL, || {
                    let pid = read_pid_file(&pid_file)?;
                    let ours = namespace_inode(pid, "net") == Some(netns_ino)
                        && fs::read_to_string(format!("/proc/{pid}/comm"))
                            .is_ok_and(|comm| comm.trim() == "heartbeat");
                    let mnt = namespace_inode(pid, "mnt").filter(|mnt| Some(*mnt) != host_mnt);
                    match (ours, mnt) {
                        (true, Some(mnt)) => Some(Ok(mnt)),
                        // The launcher failed before Heartbeat wrote its pid file.
                        _ if started.elapsed() > Duration::from_secs(1)
                            && !self.lab.is_running(&launcher).unwrap_or(false)
                            && read_pid_file(&pid_file).is_none() =>
                        {
                            Some(Err(()))
                        }
                        _ => None,
                    }
                });
                match found {
                    Some(Ok(mount_ns)) => Daemon::Heartbeat { launcher, mount_ns },
                    outcome => {
                        let log = format!(
                            "{}\n--- ha-log ---\n{}",
                            launcher.log_tail(20),
                            tail(&node.dir.join("ha-log"), 40)
                        );
                        let _ = self.lab.stop(&launcher, Duration::from_secs(3));
                        return Err(start_failure(&process_name, outcome.map(|_| false), log));
                    }
                }
            }
        };
        self.nodes[index].daemon = Some(daemon);
        Ok(())
    }

    pub fn start_all(&mut self) -> Result<()> {
        (0..self.nodes.len()).try_for_each(|index| self.start(index))
    }

    /// Clean stop, as the init script does it: SIGTERM to the daemon's main process, then
    /// waits until every process of the daemon has exited (Heartbeat first releases its
    /// resources). Processes still there after [`DAEMON_TIMEOUT`] are killed and the stop
    /// is reported as failed.
    pub fn stop(&mut self, index: usize) -> Result<()> {
        let name = self.nodes[index].net.name.clone();
        let daemon = self.nodes[index]
            .daemon
            .take()
            .ok_or_else(|| LabError::Cluster(format!("no daemon runs on {name}")))?;
        let main_pid = self.main_pid(index, &daemon);
        if let Some(pid) = main_pid {
            match kill(Pid::from_raw(pid as i32), Signal::SIGTERM) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(err) => {
                    return Err(LabError::sys(
                        format!("sending SIGTERM to {name}'s daemon ({pid})"),
                        err,
                    ))
                }
            }
        }
        // Heartbeat's master must be reaped too (by init: it daemonized): a process that has
        // left its namespaces can still be exiting, and Heartbeat refuses to start while the
        // pid in its pid file exists. keepalived's main process is the lab's child, reaped
        // below.
        let main_gone = |pid: u32| match daemon {
            Daemon::Keepalived(_) => read_stat(pid).is_none_or(|stat| stat.state == 'Z'),
            Daemon::Heartbeat { .. } => !Path::new(&format!("/proc/{pid}")).exists(),
        };
        let gone = wait_for(DAEMON_TIMEOUT, POLL, || {
            (daemon_processes(&daemon).is_empty() && main_pid.is_none_or(main_gone)).then_some(())
        });
        self.end(&daemon);
        match (main_pid, gone) {
            (Some(_), Some(())) => Ok(()),
            (None, _) => Err(LabError::Cluster(format!(
                "{name}: the daemon's main process was not found (pid file missing)"
            ))),
            (Some(pid), None) => Err(LabError::Timeout {
                timeout: DAEMON_TIMEOUT,
                what: format!(
                    "{name}'s {} (pid {pid}) to stop after SIGTERM",
                    self.spec.system()
                ),
            }),
        }
    }

    /// Node death or return: see [`set_node_ports`].
    pub fn set_connected(&self, index: usize, up: bool) -> Result<()> {
        set_node_ports(&self.lab, &self.nodes[index].net.netns, up)
    }

    /// Every live process of node `index`'s daemon (for CPU accounting).
    pub fn daemon_pids(&self, index: usize) -> Vec<u32> {
        self.nodes[index]
            .daemon
            .as_ref()
            .map(daemon_processes)
            .unwrap_or_default()
    }

    /// Whether node `index`'s daemon has processes left.
    pub fn running(&self, index: usize) -> bool {
        !self.daemon_pids(index).is_empty()
    }

    pub fn vip_holders(&self) -> Result<Vec<String>> {
        vip_holders(&self.lab, &self.network.nodes)
    }

    /// The daemon's log so far (keepalived: its console output; Heartbeat: its `logfile`).
    pub fn daemon_log(&self, index: usize) -> String {
        let node = &self.nodes[index];
        match self.spec {
            RivalSpec::Keepalived { .. } => (1..=node.starts)
                .map(|n| {
                    let base = self
                        .lab
                        .temp_dir()
                        .join(format!("{}-keepalived{n}", node.net.name));
                    let read = |ext: &str| {
                        fs::read(base.with_extension(ext))
                            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                            .unwrap_or_default()
                    };
                    format!("{}{}", read("stdout"), read("stderr"))
                })
                .collect::<Vec<_>>()
                .join("\n--- restart ---\n"),
            RivalSpec::Heartbeat { .. } => fs::read(node.dir.join("ha-log"))
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_default(),
        }
    }

    /// The main process: keepalived's parent, Heartbeat's master control process (from its
    /// pid file, checked to be in the daemon's mount namespace: Heartbeat re-executes itself
    /// after a split brain, under a new pid).
    fn main_pid(&self, index: usize, daemon: &Daemon) -> Option<u32> {
        match daemon {
            Daemon::Keepalived(handle) => Some(handle.pid()),
            Daemon::Heartbeat { mount_ns, .. } => {
                read_pid_file(&self.nodes[index].dir.join("run/heartbeat.pid"))
                    .filter(|&pid| namespace_inode(pid, "mnt") == Some(*mount_ns))
            }
        }
    }

    /// Kills whatever is left of `daemon` and reaps the process the lab started.
    fn end(&self, daemon: &Daemon) {
        for pid in daemon_processes(daemon) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let handle = match daemon {
            Daemon::Keepalived(handle) => handle,
            Daemon::Heartbeat { launcher, .. } => launcher,
        };
        let _ = self.lab.stop(handle, Duration::from_secs(3));
    }
}

impl Drop for RivalCluster {
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            if let Some(daemon) = self.nodes[index].daemon.take() {
                self.end(&daemon);
            }
        }
        for nginx in self.nginx.drain(..) {
            let _ = self.lab.stop(&nginx, Duration::from_secs(3));
        }
    }
}

fn daemon_processes(daemon: &Daemon) -> Vec<u32> {
    match daemon {
        Daemon::Keepalived(handle) => processes_in_group(handle.pid()),
        Daemon::Heartbeat { mount_ns, .. } => processes_in_namespace("mnt", *mount_ns),
    }
}

fn start_failure(name: &str, outcome: Option<bool>, log: String) -> LabError {
    match outcome {
        None => LabError::Timeout {
            timeout: DAEMON_TIMEOUT,
            what: format!("{name} to start; log:\n{log}"),
        },
        Some(_) => LabError::ExitedEarly {
            name: name.to_owned(),
            status: "exited during start-up".into(),
            log,
        },
    }
}

fn read_pid_file(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ------------------------------------------------------------------------ configuration

fn write_keepalived_config(node: &RivalNode, index: usize, advert_int_cs: u32) -> Result<()> {
    // lb1 is the preferred holder, as the first node of a haresources line.
    let priority = if index == 0 { 150 } else { 100 };
    let config = format!(
        "# keepalived for the hb benchmark: node {name}\n\
         global_defs {{\n\
         \x20   router_id {name}\n\
         \x20   vrrp_version 3\n\
         \x20   # real-time priority and locked memory, as hb and Heartbeat run `realtime on`\n\
         \x20   vrrp_rt_priority 50\n\
         \x20   vrrp_no_swap\n\
         }}\n\
         vrrp_instance VI_1 {{\n\
         \x20   state BACKUP\n\
         \x20   interface eth0\n\
         \x20   virtual_router_id 51\n\
         \x20   priority {priority}\n\
         \x20   advert_int {advert}\n\
         \x20   virtual_ipaddress {{\n\
         \x20       {VIP}/24 dev eth0\n\
         \x20   }}\n\
         }}\n",
        name = node.net.name,
        advert = centiseconds(advert_int_cs),
    );
    write_file(&node.dir.join("keepalived.conf"), &config, 0o644)
}

/// Heartbeat's directories as the Debian package creates them: (path under the node's
/// directory, mode, user, group).
const HEARTBEAT_DIRS: &[(&str, u32, &str, &str)] = &[
    ("run", 0o755, "root", "root"),
    ("run/heartbeat", 0o750, "hacluster", "haclient"),
    ("run/heartbeat/ccm", 0o750, "hacluster", "haclient"),
    ("run/heartbeat/crm", 0o750, "hacluster", "haclient"),
    ("run/heartbeat/dopd", 0o750, "hacluster", "haclient"),
    ("run/resource-agents", 0o755, "root", "root"),
    ("run/lock", 0o1777, "root", "root"),
    ("lib", 0o755, "root", "root"),
    ("lib/api", 0o755, "root", "root"),
    ("lib/casual", 0o755, "root", "root"),
    ("lib/ccm", 0o750, "hacluster", "haclient"),
    ("lib/ckpt", 0o755, "root", "root"),
    ("lib/crm", 0o750, "hacluster", "haclient"),
    ("lib/lrm", 0o755, "root", "root"),
    ("lib/pengine", 0o750, "hacluster", "haclient"),
    ("lib/cores", 0o755, "root", "root"),
    ("lib/cores/root", 0o700, "root", "root"),
    ("lib/cores/hacluster", 0o700, "hacluster", "root"),
    ("lib/cores/nobody", 0o700, "nobody", "root"),
];

fn write_heartbeat_node(
    node: &RivalNode,
    all: &[NetNode],
    keepalive_ms: u32,
    deadtime_ms: u32,
    secret: &str,
) -> Result<()> {
    let dir = &node.dir;
    let ha_d = dir.join("ha.d");
    cmd::run_checked(
        "cp",
        &[
            "-a".to_owned(),
            format!("{HOST_HA_D}/."),
            ha_d.display().to_string(),
        ],
    )?;
    for (path, mode, user, group) in HEARTBEAT_DIRS {
        let path = dir.join(path);
        fs::create_dir_all(&path).map_err(|err| LabError::io("creating", &path, err))?;
        let uid = User::from_name(user)
            .map_err(|err| LabError::sys(format!("looking up user {user}"), err))?
            .ok_or_else(|| LabError::Cluster(format!("user {user} missing: install heartbeat")))?
            .uid;
        let gid = Group::from_name(group)
            .map_err(|err| LabError::sys(format!("looking up group {group}"), err))?
            .ok_or_else(|| LabError::Cluster(format!("group {group} missing: install heartbeat")))?
            .gid;
        std::os::unix::fs::chown(&path, Some(uid.as_raw()), Some(gid.as_raw()))
            .map_err(|err| LabError::io("changing owner of", &path, err))?;
        set_mode(&path, *mode)?;
    }

    let mut ha_cf = format!(
        "# Heartbeat 3.0.6 for the hb benchmark: node {name}\n\
         logfile {log}\n\
         use_logd no\n\
         keepalive {keepalive_ms}ms\n\
         deadtime {deadtime_ms}ms\n\
         warntime {warntime_ms}ms\n\
         initdead 10\n\
         udpport 694\n",
        name = node.net.name,
        log = dir.join("ha-log").display(),
        warntime_ms = deadtime_ms / 2,
    );
    // Unicast to the peers on both links, as hb's cluster does (Heartbeat's ucast needs the
    // peer's address, not its own).
    for peer in all.iter().filter(|peer| peer.name != node.net.name) {
        ha_cf.push_str(&format!("ucast eth1 {}\n", peer.hb_addr));
        ha_cf.push_str(&format!("ucast eth0 {}\n", peer.svc_addr));
    }
    let names: Vec<&str> = all.iter().map(|n| n.name.as_str()).collect();
    ha_cf.push_str(&format!(
        "auto_failback on\nnode {}\ncrm off\nrealtime on\n",
        names.join(" ")
    ));
    write_file(&ha_d.join("ha.cf"), &ha_cf, 0o644)?;
    // The first node is the group's preferred node, as lb1 is everywhere in the benchmark.
    write_file(
        &ha_d.join("haresources"),
        &format!("{} IPaddr2::{VIP}/24/eth0\n", all[0].name),
        0o644,
    )?;
    write_file(
        &ha_d.join("authkeys"),
        &format!("auth 1\n1 sha1 {secret}\n"),
        0o600,
    )?;

    let script = format!(
        "#!/bin/sh\n\
         # Runs inside `unshare --uts --mount`: this node's hostname and directories, then\n\
         # Heartbeat (which daemonizes).\n\
         set -e\n\
         mount --bind {dir}/ha.d /etc/ha.d\n\
         mount --bind {dir}/run /run\n\
         mount --bind {dir}/lib /var/lib/heartbeat\n\
         hostname {name}\n\
         exec {HEARTBEAT_BIN}\n",
        dir = dir.display(),
        name = node.net.name,
    );
    write_file(&dir.join("start.sh"), &script, 0o755)
}

/// `bytes` random bytes from the kernel, as hex.
fn random_hex(bytes: usize) -> Result<String> {
    let path = Path::new("/dev/urandom");
    let mut buffer = vec![0u8; bytes];
    let mut file = fs::File::open(path).map_err(|err| LabError::io("opening", path, err))?;
    std::io::Read::read_exact(&mut file, &mut buffer)
        .map_err(|err| LabError::io("reading", path, err))?;
    Ok(buffer.iter().map(|b| format!("{b:02x}")).collect())
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    fs::write(path, text).map_err(|err| LabError::io("writing", path, err))?;
    set_mode(path, mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|err| LabError::io("setting permissions of", path, err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_awkward_names() {
        let text = "4242 (heart) beat: (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    17 23 5 7 -2 0 6 0 123456 1000000 200 18446744073709551615";
        let stat = parse_stat(4242, text).unwrap();
        assert_eq!(stat.state, 'S');
        assert_eq!((stat.ppid, stat.pgrp), (1, 4242));
        assert_eq!(
            (stat.utime, stat.stime, stat.cutime, stat.cstime),
            (17, 23, 5, 7)
        );
        assert_eq!(stat.starttime, 123456);
        assert_eq!(parse_stat(1, "1 (x) S 0"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let stat = read_stat(me).expect("own stat");
        assert_eq!(stat.pid, me);
        assert!(namespace_inode(me, "mnt").is_some());
    }

    #[test]
    fn describes_timers_as_the_config_files_do() {
        assert_eq!(
            RivalSpec::Keepalived { advert_int_cs: 1 }.describe(),
            "advert_int 0.01"
        );
        assert_eq!(
            RivalSpec::Keepalived { advert_int_cs: 100 }.describe(),
            "advert_int 1.00"
        );
        assert_eq!(
            RivalSpec::Heartbeat {
                keepalive_ms: 10,
                deadtime_ms: 40
            }
            .describe(),
            "keepalive 10ms / deadtime 40ms"
        );
    }
}
