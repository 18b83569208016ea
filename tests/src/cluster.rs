//! An hb cluster in a lab: the seeds' farm in miniature, for the failover scenarios, the
//! demo and the benchmark.
//!
//! ```text
//!            switch namespace
//!   ┌──────────── svc bridge (198.18.1.0/24) ────────────┐   ┌─ hb bridge (198.18.2.0/24) ─┐
//!   client .100          lb1 eth0 .11    lb2 eth0 .12          lb1 eth1 .11   lb2 eth1 .12
//!   [web1 .21 ...]       VIP 198.18.1.10 on the holder
//! ```
//!
//! Every node gets its own Heartbeat-style `/etc/ha.d` (identical `ha.cf`, `haresources`,
//! `authkeys`; its own `resource.d/nginx`), state directory, control socket and BPF pin
//! root. Node death is its bridge ports going down, as on a real switch.
//!
//! By default each balancer's nginx serves a page naming the balancer. With
//! [`ClusterSpec::web_servers`], web servers on the service LAN serve the pages and the
//! balancers' nginx is a round-robin reverse proxy to them (the seeds' farm, for the demo and
//! the benchmark); [`Served`] reads who answered, from a response or from what
//! [`crate::probe::Prober`] recorded.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use serde_json::Value;

use crate::error::{LabError, Result};
use crate::lab::{Bridge, Lab, Netns};
use crate::nginx::{nginx_config, nginx_config_with, Nginx};
use crate::process::ProcessHandle;
use crate::rivals::{LabNetwork, NetNode};
use crate::wait::wait_for;
use crate::{agent_binary, HttpResponse};

/// The service address the cluster keeps alive.
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 100);
/// Host part of the first web server's service address (web1 is 198.18.1.21).
const FIRST_WEB_HOST: u8 = 21;
/// Web servers fit between the first one and the client's address.
const MAX_WEB_SERVERS: usize = 9;

/// How a cluster is configured; the defaults are a quick, steady profile for tests.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub nodes: usize,
    /// ha.cf timer values, as written in the file (`20ms`, `2`, ...).
    pub keepalive: String,
    pub deadtime: String,
    pub warntime: String,
    pub initdead: String,
    /// `on`, `off` or `legacy`.
    pub auto_failback: String,
    /// `auto`, `driver`, `skb` or `off`.
    pub xdp: String,
    /// Heartbeats over the service LAN as well as the dedicated link.
    pub heartbeat_on_service_lan: bool,
    /// Resources after the preferred node on the one haresources line.
    pub resources: String,
    /// More ha.cf lines, appended.
    pub extra_ha_cf: String,
    /// Per node (by index): extra resource.d scripts, name → shell body.
    pub scripts: Vec<Vec<(String, String)>>,
    /// Web servers behind the balancers. 0 (the default): each balancer's nginx serves its own
    /// page, `"lb1\n"`. N (at most 9): `web1..webN`, nginx on the service LAN from 198.18.1.21
    /// on, serve `"web1\n"`...; each balancer's nginx is a round-robin reverse proxy to them
    /// that appends its own name: `"web2 via lb1\n"`.
    pub web_servers: usize,
    /// The hb-agent binary; `None`: [`agent_binary`] (`$HB_AGENT_BIN`, or the one built next to
    /// the test executable).
    pub agent_binary: Option<PathBuf>,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        Self {
            nodes: 2,
            keepalive: "20ms".into(),
            deadtime: "200ms".into(),
            warntime: "100ms".into(),
            initdead: "1".into(),
            auto_failback: "on".into(),
            xdp: "auto".into(),
            heartbeat_on_service_lan: true,
            resources: format!("IPaddr::{VIP}/24/eth0 nginx"),
            extra_ha_cf: String::new(),
            scripts: Vec::new(),
            web_servers: 0,
            agent_binary: None,
        }
    }
}

/// One balancer of the cluster.
#[derive(Debug)]
pub struct ClusterNode {
    pub name: String,
    pub netns: Netns,
    pub svc_addr: Ipv4Addr,
    pub hb_addr: Ipv4Addr,
    /// Its `/etc/ha.d`.
    pub config_dir: PathBuf,
    pub state_dir: PathBuf,
    pub control_socket: PathBuf,
    pub pin_root: PathBuf,
    /// The managed nginx's directory (config, pid file, logs).
    pub nginx_dir: PathBuf,
    pub agent: Option<ProcessHandle>,
    starts: u32,
}

/// One web server behind the balancers ([`ClusterSpec::web_servers`]).
#[derive(Debug)]
pub struct WebServer {
    /// `web1`, `web2`, ...: also the page it serves.
    pub name: String,
    pub netns: Netns,
    pub addr: Ipv4Addr,
    pub nginx: Nginx,
}

/// Who answered a request through the VIP, as the page says: `"lb1\n"` without web servers,
/// `"web2 via lb1\n"` with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// The balancer whose nginx took the request.
    pub balancer: String,
    /// The web server that produced the page, when there are web servers.
    pub backend: Option<String>,
}

impl Served {
    /// Reads a response to `GET /` on the VIP; `None` unless it is a 200 with one of the
    /// cluster's pages.
    pub fn parse(response: &HttpResponse) -> Option<Served> {
        if response.status != 200 {
            return None;
        }
        Served::from_page(response.body.strip_suffix('\n')?)
    }

    /// Reads a page without its newline (`"web2 via lb1"`, `"lb1"`; what a
    /// [`crate::probe::ProbeOutcome::Served`] holds).
    pub fn from_page(line: &str) -> Option<Served> {
        let name_ok = |name: &str| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        let served = match line.split_once(" via ") {
            Some((backend, balancer)) => Served {
                balancer: balancer.to_owned(),
                backend: Some(backend.to_owned()),
            },
            None => Served {
                balancer: line.to_owned(),
                backend: None,
            },
        };
        (name_ok(&served.balancer) && served.backend.as_deref().is_none_or(name_ok))
            .then_some(served)
    }
}

impl std::fmt::Display for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            Some(backend) => write!(f, "{backend} via {}", self.balancer),
            None => f.write_str(&self.balancer),
        }
    }
}

/// A running lab cluster. Dropping it stops the agents, the nginx instances their resource
/// scripts started, and removes the lab (unless [`Cluster::keep`] was called).
pub struct Cluster {
    pub spec: ClusterSpec,
    pub nodes: Vec<ClusterNode>,
    pub client: Netns,
    pub switch: Netns,
    pub svc: Bridge,
    pub hb: Bridge,
    /// The web servers behind the balancers (empty unless [`ClusterSpec::web_servers`]).
    pub web: Vec<WebServer>,
    // Last: dropped after the nginx clean-up in `Drop`.
    pub lab: Lab,
    kept: bool,
}

/// How long tests wait for anything the cluster does; generous for a loaded 2-core CI box.
pub const SETTLE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);

impl Cluster {
    /// Builds the network and writes every node's configuration; starts no agent (and no
    /// nginx of the balancers). Web servers, if the spec asks for them, are started and serving.
    pub fn new(label: &str, spec: ClusterSpec) -> Result<Cluster> {
        if spec.web_servers > MAX_WEB_SERVERS {
            return Err(LabError::Cluster(format!(
                "at most {MAX_WEB_SERVERS} web servers (asked for {})",
                spec.web_servers
            )));
        }
        let lab = Lab::new(label)?;
        let LabNetwork {
            switch,
            svc,
            hb,
            client,
            nodes: network_nodes,
        } = LabNetwork::build(&lab, spec.nodes)?;

        let authkeys = format!("auth 1\n1 sha1 {}\n", random_secret()?);
        let mut nodes = Vec::new();
        for NetNode {
            name,
            netns,
            svc_addr,
            hb_addr,
        } in network_nodes
        {
            let root = lab.temp_subdir(&name)?;
            let node = ClusterNode {
                config_dir: root.join("ha.d"),
                state_dir: root.join("state"),
                control_socket: root.join("hb-agent.sock"),
                pin_root: lab.bpf_pin_dir(&name)?,
                nginx_dir: root.join("nginx"),
                name,
                netns,
                svc_addr,
                hb_addr,
                agent: None,
                starts: 0,
            };
            nodes.push(node);
        }
        let mut web = Vec::new();
        for (index, host) in (FIRST_WEB_HOST..).take(spec.web_servers).enumerate() {
            let name = format!("web{}", index + 1);
            let netns = lab.add_netns(&name)?;
            lab.connect(&netns, "eth0", &svc)?;
            let addr = Ipv4Addr::new(198, 18, 1, host);
            lab.add_address(&netns, "eth0", &format!("{addr}/24"))?;
            let nginx = lab.start_nginx(&netns, &name, SocketAddr::from((addr, 80)))?;
            web.push(WebServer {
                name,
                netns,
                addr,
                nginx,
            });
        }
        let cluster = Cluster {
            spec,
            nodes,
            client,
            switch,
            svc,
            hb,
            web,
            lab,
            kept: false,
        };
        for index in 0..cluster.nodes.len() {
            cluster.write_config(index, &authkeys)?;
        }
        Ok(cluster)
    }

    /// The `ha.cf` every node shares.
    pub fn ha_cf(&self) -> String {
        let spec = &self.spec;
        let mut text = format!(
            "# hb test cluster: Heartbeat syntax, millisecond timers\n\
             keepalive {}\ndeadtime {}\nwarntime {}\ninitdead {}\nudpport 694\n",
            spec.keepalive, spec.deadtime, spec.warntime, spec.initdead
        );
        for node in &self.nodes {
            text.push_str(&format!("ucast eth1 {}\n", node.hb_addr));
        }
        if spec.heartbeat_on_service_lan {
            for node in &self.nodes {
                text.push_str(&format!("ucast eth0 {}\n", node.svc_addr));
            }
        }
        text.push_str(&format!("auto_failback {}\n", spec.auto_failback));
        let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
        text.push_str(&format!("node {}\n", names.join(" ")));
        text.push_str(&format!("xdp {}\n", spec.xdp));
        text.push_str(&spec.extra_ha_cf);
        text
    }

    pub fn haresources(&self) -> String {
        format!("{} {}\n", self.nodes[0].name, self.spec.resources)
    }

    fn write_config(&self, index: usize, authkeys: &str) -> Result<()> {
        let node = &self.nodes[index];
        let resource_d = node.config_dir.join("resource.d");
        for dir in [
            &resource_d,
            &node.state_dir,
            &node.nginx_dir.join("www"),
            &node.nginx_dir.join("tmp"),
        ] {
            fs::create_dir_all(dir).map_err(|e| LabError::io("creating", dir, e))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
                .map_err(|e| LabError::io("setting permissions of", dir, e))?;
        }
        write(&node.config_dir.join("ha.cf"), &self.ha_cf(), 0o644)?;
        write(
            &node.config_dir.join("haresources"),
            &self.haresources(),
            0o644,
        )?;
        write(&node.config_dir.join("authkeys"), authkeys, 0o600)?;

        // The managed reverse proxy: nginx started by its resource script, as Heartbeat
        // started /etc/init.d/nginx.
        let listen = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 80));
        let config = if self.spec.web_servers == 0 {
            nginx_config(&node.nginx_dir, listen)
        } else {
            let backends: Vec<SocketAddr> = (FIRST_WEB_HOST..)
                .take(self.spec.web_servers)
                .map(|host| SocketAddr::from((Ipv4Addr::new(198, 18, 1, host), 80)))
                .collect();
            proxy_config(&node.nginx_dir, listen, &node.name, &backends)
        }
        .replacen("daemon off;", "daemon on;", 1);
        write(&node.nginx_dir.join("nginx.conf"), &config, 0o644)?;
        write(
            &node.nginx_dir.join("www/index.txt"),
            &format!("{}\n", node.name),
            0o644,
        )?;
        let dir = node.nginx_dir.display();
        let script = format!(
            "#!/bin/sh\n\
             # hb test resource: the reverse proxy of {name}\n\
             pid={dir}/nginx.pid\n\
             # By its command line: a killed master's pid may be a zombie (not every init\n\
             # reaps at once) or another process by now, and neither is our nginx.\n\
             running() {{ [ -f \"$pid\" ] && grep -qsF {dir}/nginx.conf \"/proc/$(cat \"$pid\")/cmdline\"; }}\n\
             case \"$1\" in\n\
             start) running && exit 0; exec nginx -p {dir} -c {dir}/nginx.conf -e {dir}/error.log ;;\n\
             stop) running || exit 0; kill \"$(cat \"$pid\")\"\n\
             \x20     for _ in $(seq 500); do running || exit 0; sleep 0.01; done; exit 1 ;;\n\
             status) running && exit 0 || exit 3 ;;\n\
             *) exit 2 ;;\n\
             esac\n",
            name = node.name
        );
        write(&resource_d.join("nginx"), &script, 0o755)?;
        for (name, body) in self.spec.scripts.get(index).into_iter().flatten() {
            write(
                &resource_d.join(name),
                &format!("#!/bin/sh\n{body}\n"),
                0o755,
            )?;
        }
        Ok(())
    }

    /// The hb-agent binary this cluster runs.
    pub fn agent_path(&self) -> Result<PathBuf> {
        match &self.spec.agent_binary {
            Some(path) => Ok(path.clone()),
            None => agent_binary(),
        }
    }

    /// Leaves the whole cluster running after this process exits: agents, nginx, web servers,
    /// namespaces, pins and files stay until [`crate::lab::remove_kept_lab`] removes them
    /// (see [`Lab::keep`]; `note` is stored for whoever lists kept labs). Returns the marker.
    pub fn keep(mut self, note: &str) -> Result<PathBuf> {
        let marker = self.lab.keep(note)?;
        self.kept = true;
        Ok(marker)
    }

    /// Starts node `index`'s agent.
    pub fn start(&mut self, index: usize) -> Result<()> {
        let binary = self.agent_path()?;
        let node = &mut self.nodes[index];
        let mut command = Command::new(binary);
        command
            .arg("run")
            .arg("--config-dir")
            .arg(&node.config_dir)
            .arg("--node")
            .arg(&node.name)
            .arg("--state-dir")
            .arg(&node.state_dir)
            .arg("--control-socket")
            .arg(&node.control_socket)
            .arg("--bpf-pin-root")
            .arg(&node.pin_root)
            .env("HB_LOG", "info");
        node.starts += 1;
        let process_name = format!("{}-agent{}", node.name, node.starts);
        let handle = self.lab.spawn(&node.netns, &process_name, &command)?;
        node.agent = Some(handle);
        self.wait_agent_ready(index)
    }

    pub fn start_all(&mut self) -> Result<()> {
        for index in 0..self.nodes.len() {
            self.start(index)?;
        }
        Ok(())
    }

    fn wait_agent_ready(&self, index: usize) -> Result<()> {
        let ready = wait_for(SETTLE, POLL, || match self.agent_running(index) {
            false => Some(false),
            true => self.status(index).ok().map(|_| true),
        });
        match ready {
            Some(true) => Ok(()),
            Some(false) => Err(LabError::ExitedEarly {
                name: self.nodes[index].name.clone(),
                status: "agent exited during start-up".into(),
                log: self.agent_log(index),
            }),
            None => Err(LabError::Timeout {
                timeout: SETTLE,
                what: format!(
                    "{}'s agent to answer status; log:\n{}",
                    self.nodes[index].name,
                    self.agent_log(index)
                ),
            }),
        }
    }

    pub fn agent_running(&self, index: usize) -> bool {
        self.nodes[index]
            .agent
            .as_ref()
            .is_some_and(|a| self.lab.is_running(a).unwrap_or(false))
    }

    /// Clean stop (SIGTERM): the agent releases, tells the peers, exits.
    pub fn stop(&mut self, index: usize) -> Result<ExitStatus> {
        let agent = self.nodes[index]
            .agent
            .take()
            .ok_or_else(|| LabError::Cluster("agent not running".into()))?;
        self.lab.stop(&agent, Duration::from_secs(30))
    }

    /// SIGKILL: the agent dies without releasing anything.
    pub fn kill(&mut self, index: usize) -> Result<ExitStatus> {
        let agent = self.nodes[index]
            .agent
            .take()
            .ok_or_else(|| LabError::Cluster("agent not running".into()))?;
        self.lab.signal(&agent, nix::sys::signal::Signal::SIGKILL)?;
        self.lab.stop(&agent, Duration::from_secs(5))
    }

    /// `hb-agent status --json` of node `index`.
    pub fn status(&self, index: usize) -> Result<Value> {
        let binary = self.agent_path()?;
        let socket = self.nodes[index].control_socket.display().to_string();
        let output = crate::cmd::run(
            &binary.display().to_string(),
            &["status", "--json", "--control-socket", &socket],
        )?
        .checked()?;
        serde_json::from_str(&output.stdout).map_err(|e| LabError::Json {
            command: "hb-agent status --json".into(),
            reason: e.to_string(),
        })
    }

    /// Runs `hb-agent <args> --control-socket <node's>` and returns its stdout.
    pub fn control(&self, index: usize, command: &str) -> Result<String> {
        let binary = self.agent_path()?;
        let socket = self.nodes[index].control_socket.display().to_string();
        Ok(crate::cmd::run(
            &binary.display().to_string(),
            &[command, "--control-socket", &socket],
        )?
        .checked()?
        .stdout)
    }

    /// Everything the agent of node `index` logged (all its runs).
    pub fn agent_log(&self, index: usize) -> String {
        let node = &self.nodes[index];
        (1..=node.starts)
            .map(|n| {
                let path = self
                    .lab
                    .temp_dir()
                    .join(format!("{}-agent{n}.stderr", node.name));
                fs::read_to_string(path).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    /// Node death or return, as the switch sees it: all its bridge ports down or up.
    pub fn set_connected(&self, index: usize, connected: bool) -> Result<()> {
        self.lab
            .set_node_ports_up(&self.nodes[index].netns, connected)
            .map(|_| ())
    }

    /// A crash of the whole machine: links down at the switch, the agent killed, and what a
    /// reboot clears (the VIP, the running nginx with its workers, the ARP cache) gone.
    pub fn power_off(&mut self, index: usize) -> Result<()> {
        self.set_connected(index, false)?;
        self.kill(index)?;
        let node = &self.nodes[index];
        let vip = format!("{VIP}/24");
        let _ = self
            .lab
            .ip(&node.netns, &["addr", "del", &vip, "dev", "eth0"]);
        kill_managed_nginx(&node.nginx_dir);
        self.lab.ip(&node.netns, &["neigh", "flush", "all"])?;
        Ok(())
    }

    /// The machine is back: links up, agent started.
    pub fn power_on(&mut self, index: usize) -> Result<()> {
        self.set_connected(index, true)?;
        self.start(index)
    }

    /// One of a node's links, `eth0` (service LAN) or `eth1` (heartbeat link), at the switch.
    pub fn set_link(&self, index: usize, ifname: &str, up: bool) -> Result<()> {
        let node = &self.nodes[index].netns;
        let port = self
            .lab
            .ports_of(node)
            .into_iter()
            .find(|p| p.node_ifname() == ifname)
            .ok_or_else(|| LabError::NoPorts(format!("{node}:{ifname}")))?;
        self.lab.set_port_up(&port, up)
    }

    /// Names of the nodes that have the VIP on an interface right now.
    pub fn vip_holders(&self) -> Result<Vec<String>> {
        let mut holders = Vec::new();
        for node in &self.nodes {
            let text = self.lab.ip(&node.netns, &["-4", "-o", "addr", "show"])?;
            if text.contains(&format!("inet {VIP}/")) {
                holders.push(node.name.clone());
            }
        }
        Ok(holders)
    }

    /// Waits until exactly `name` holds the VIP (and nobody else).
    pub fn wait_sole_holder(&self, name: &str) -> Result<()> {
        let expected = vec![name.to_owned()];
        let mut last = Vec::new();
        let ok = wait_for(SETTLE, POLL, || {
            last = self.vip_holders().unwrap_or_default();
            (last == expected).then_some(())
        });
        ok.ok_or_else(|| LabError::Timeout {
            timeout: SETTLE,
            what: format!(
                "{name} to be the only VIP holder (holders: {last:?}){}",
                self.logs()
            ),
        })
    }

    /// GET / on the VIP from the client.
    pub fn get_vip(&self, timeout: Duration) -> Result<HttpResponse> {
        self.lab
            .http_get(&self.client, SocketAddr::from((VIP, 80)), "/", timeout)
    }

    /// Waits until the client gets a page through the VIP from balancer `name`.
    pub fn wait_served_by(&self, name: &str) -> Result<()> {
        let mut last = String::new();
        let ok = wait_for(SETTLE, POLL, || {
            match self.get_vip(Duration::from_millis(300)) {
                Ok(response)
                    if Served::parse(&response).is_some_and(|served| served.balancer == name) =>
                {
                    Some(())
                }
                Ok(response) => {
                    last = format!("HTTP {} {:?}", response.status, response.body);
                    None
                }
                Err(e) => {
                    last = e.to_string();
                    None
                }
            }
        });
        ok.ok_or_else(|| LabError::Timeout {
            timeout: SETTLE,
            what: format!(
                "the client to be served by {name} through {VIP} (last: {last}){}",
                self.logs()
            ),
        })
    }

    /// The MAC the client's ARP table has for the VIP.
    pub fn client_vip_mac(&self) -> Result<Option<String>> {
        Ok(self.lab.neighbor(&self.client, VIP)?.and_then(|n| n.lladdr))
    }

    pub fn service_mac(&self, index: usize) -> Result<String> {
        self.lab.mac_address(&self.nodes[index].netns, "eth0")
    }

    /// Polls `status --json` of node `index` until `check` accepts it.
    pub fn wait_status(
        &self,
        index: usize,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let mut last = Value::Null;
        let found = wait_for(SETTLE, POLL, || match self.status(index) {
            Ok(status) if check(&status) => Some(status),
            Ok(status) => {
                last = status;
                None
            }
            Err(_) => None,
        });
        found.ok_or_else(|| LabError::Timeout {
            timeout: SETTLE,
            what: format!(
                "{}: {what}; last status: {last:#}{}",
                self.nodes[index].name,
                self.logs()
            ),
        })
    }

    /// Kills the nginx node `index`'s resource script started (a crash of the service).
    pub fn kill_nginx(&self, index: usize) -> Result<()> {
        let dir = &self.nodes[index].nginx_dir;
        let pid = managed_nginx_pid(dir).ok_or_else(|| {
            LabError::Cluster(format!("no nginx running on {}", self.nodes[index].name))
        })?;
        kill_managed_nginx(dir);
        // The master's pid file outlives a SIGKILL; the script's status must see a dead pid.
        let gone = wait_for(SETTLE, POLL, || {
            managed_nginx_pid(&self.nodes[index].nginx_dir)
                .is_none()
                .then_some(())
        });
        gone.ok_or_else(|| LabError::Cluster(format!("nginx {pid} did not die")))
    }

    /// Whether nginx managed by node `index`'s resource script is running.
    pub fn nginx_running(&self, index: usize) -> bool {
        managed_nginx_pid(&self.nodes[index].nginx_dir).is_some()
    }

    /// Every agent's log, for failure messages.
    pub fn logs(&self) -> String {
        (0..self.nodes.len())
            .map(|i| {
                format!(
                    "\n===== {} agent log =====\n{}",
                    self.nodes[i].name,
                    self.agent_log(i)
                )
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        // Agents first (a clean stop also stops their nginx), then any nginx a killed agent
        // left behind: nginx leaves its process group when it daemonizes, so it is found by
        // its pid file, and only if that pid really is our nginx.
        for index in 0..self.nodes.len() {
            if let Some(agent) = self.nodes[index].agent.take() {
                let _ = self.lab.stop(&agent, Duration::from_secs(10));
            }
        }
        for node in &self.nodes {
            kill_managed_nginx(&node.nginx_dir);
        }
    }
}

/// SIGKILLs the nginx started from `dir`, workers included: they are in the master's own
/// process group (it calls setsid when it daemonizes), and a worker whose master is killed
/// alone lives on, still listening.
fn kill_managed_nginx(dir: &Path) {
    use nix::sys::signal::{kill, killpg, Signal};
    use nix::unistd::{getpgid, Pid};
    let Some(pid) = managed_nginx_pid(dir).map(Pid::from_raw) else {
        return;
    };
    // Nothing more can be done if it is gone already.
    let _ = if getpgid(Some(pid)) == Ok(pid) {
        killpg(pid, Signal::SIGKILL)
    } else {
        kill(pid, Signal::SIGKILL)
    };
}

/// The pid of the nginx master started from `dir`, if it runs (checked against its command
/// line, so a recycled pid is never signalled).
fn managed_nginx_pid(dir: &Path) -> Option<i32> {
    let pid: i32 = fs::read_to_string(dir.join("nginx.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let wanted = dir.join("nginx.conf");
    crate::rivals::command_line(u32::try_from(pid).ok()?)?
        .contains(wanted.to_string_lossy().as_ref())
        .then_some(pid)
}

/// A balancer's nginx as a round-robin reverse proxy to `backends`, appending `" via
/// <balancer>"` to each page so the client sees both hops. Paths as in [`nginx_config`].
fn proxy_config(dir: &Path, listen: SocketAddr, balancer: &str, backends: &[SocketAddr]) -> String {
    let servers: String = backends
        .iter()
        .map(|backend| format!("        server {backend} max_fails=0;\n"))
        .collect();
    nginx_config_with(
        dir,
        &format!(
            "    upstream web {{
{servers}        keepalive 8;
    }}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://web;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_connect_timeout 1s;
            sub_filter_types text/plain;
            sub_filter_once on;
            sub_filter \"\\n\" \" via {balancer}\\n\";
        }}
    }}
"
        ),
    )
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    fs::write(path, text).map_err(|e| LabError::io("writing", path, e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| LabError::io("setting permissions of", path, e))
}

/// A fresh shared secret for the cluster's authkeys.
fn random_secret() -> Result<String> {
    let mut bytes = [0u8; 20];
    let path = Path::new("/dev/urandom");
    let mut file = fs::File::open(path).map_err(|e| LabError::io("opening", path, e))?;
    std::io::Read::read_exact(&mut file, &mut bytes)
        .map_err(|e| LabError::io("reading", path, e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
