//! `hb-agent run`: assembles the agent from its parts and runs it until a clean stop.
//!
//! ```text
//!   config ─► generation ─► Transmitter ◄── SenderThread (RT, every keepalive)
//!                               ▲
//!   Inbound (XDP | sockets) ─► Engine (own RT thread: membership, policy) ─► Executor
//!                               ▲                                            (netlink, ARP,
//!   control socket, signals ────┘                                             scripts)
//! ```

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::config::{self, Config, Link, Severity, SystemHost, XdpSetting};
use crate::control;
use crate::engine::{Command, Engine, EngineParts};
use crate::executor::Executor;
use crate::inbound::Inbound;
use crate::netlink::Netlink;
use crate::policy::{GroupRule, Rules};
use crate::transport::{
    Advert, PeerFilter, SenderThread, SocketReceiver, Transmitter, SENDER_PRIORITY,
};
use crate::wire::{Authenticator, Header};
use crate::xdp::{XdpOptions, XdpReceiver};

pub use crate::xdp::DEFAULT_PIN_ROOT;
pub const DEFAULT_STATE_DIR: &str = "/var/lib/hb-agent";

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub config_dir: PathBuf,
    pub node: Option<String>,
    pub state_dir: PathBuf,
    pub control_socket: Option<PathBuf>,
    pub pin_root: PathBuf,
    /// ha.cf's logfile/debugfile, already installed as a tracing layer.
    pub log_files: crate::logging::LogFiles,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration in {dir} is unusable:\n{problems}")]
    Config { dir: PathBuf, problems: String },
    #[error("state directory {path}: {source}")]
    State {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("authkeys: {0}")]
    Keys(#[from] crate::wire::KeyError),
    #[error("heartbeat transport: {0}")]
    Transport(#[from] crate::transport::TransportError),
    #[error("netlink: {0}")]
    Netlink(#[from] crate::netlink::NetlinkError),
    #[error("control socket: {0}")]
    Control(#[from] control::ControlError),
    #[error("cannot start the {what}: {source}")]
    Runtime {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("no heartbeat link is left once ucast lines to this node's own addresses are dropped")]
    NoLinks,
}

/// Loads and checks the configuration, logging every warning; errors stop the start.
pub fn load_config(dir: &Path, node: Option<&str>) -> Result<Config, StartError> {
    let report = config::load(dir, node, &SystemHost);
    for diagnostic in &report.diagnostics {
        match diagnostic.severity {
            Severity::Warning => warn!("{diagnostic}"),
            Severity::Error => error!("{diagnostic}"),
        }
    }
    report.config.ok_or_else(|| StartError::Config {
        dir: dir.to_owned(),
        problems: report
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| format!("  {d}"))
            .collect::<Vec<_>>()
            .join("\n"),
    })
}

/// Settings this version reads but does not act on yet: said once at start, so nobody
/// believes they are protected by something that is not running.
fn warn_unimplemented(config: &Config) {
    if !config.ping.nodes.is_empty() || !config.ping.groups.is_empty() {
        warn!("ping/ping_group nodes are configured, but this version of hb does not yet fail over on lost ping-node connectivity; only node and link liveness decide");
    }
}

/// The policy's view of the configuration.
pub fn policy_rules(config: &Config) -> Rules {
    let id_of = |name: &str| hb_common::wire::node_id(name.as_bytes());
    Rules {
        local: id_of(&config.local_node),
        nodes: config.nodes.iter().map(|n| n.id).collect(),
        groups: config
            .groups
            .iter()
            .map(|g| GroupRule {
                name: g.name.clone(),
                preferred: id_of(&g.preferred),
            })
            .collect(),
        auto_failback: config.auto_failback,
        failback_delay: config.failback_delay,
    }
}

/// Reads, bumps and stores this node's generation. It also never falls below the wall
/// clock in seconds, so a lost state directory cannot make a restart look like a replay.
pub fn next_generation(state_dir: &Path) -> Result<u64, StartError> {
    let state_error = |source| StartError::State {
        path: state_dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(state_error)?;
    let path = state_dir.join("generation");
    let stored = match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<u64>().unwrap_or(0),
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(state_error(e)),
    };
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let generation = stored.saturating_add(1).max(wall);
    let temp = state_dir.join("generation.new");
    std::fs::write(&temp, format!("{generation}\n")).map_err(state_error)?;
    std::fs::File::open(&temp)
        .and_then(|f| f.sync_all())
        .map_err(state_error)?;
    std::fs::rename(&temp, &path).map_err(state_error)?;
    Ok(generation)
}

/// Runs the agent until SIGTERM/SIGINT has been handled (resources released, peers told).
pub fn run(options: RunOptions) -> Result<(), StartError> {
    let config = Arc::new(load_config(&options.config_dir, options.node.as_deref())?);
    warn_unimplemented(&config);
    if let Err(e) = options.log_files.configure(&config.log) {
        warn!("{e}: logging to standard error only");
    }
    let generation = next_generation(&options.state_dir)?;
    let auth = Authenticator::new(&config.auth)?;
    let local_addrs: Vec<IpAddr> = config::HostView::local_addrs(&SystemHost);
    let links = config.effective_links(&local_addrs);
    if links.is_empty() {
        return Err(StartError::NoLinks);
    }
    info!(
        node = %config.local_node,
        generation,
        links = links.len(),
        groups = config.groups.len(),
        "hb-agent starting"
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("hb-agent")
        .enable_all()
        .build()
        .map_err(|source| StartError::Runtime {
            what: "tokio runtime",
            source,
        })?;
    runtime.block_on(run_in_runtime(options, config, generation, auth, links))
}

async fn run_in_runtime(
    options: RunOptions,
    config: Arc<Config>,
    generation: u64,
    auth: Authenticator,
    links: Vec<Link>,
) -> Result<(), StartError> {
    let local_id = hb_common::wire::node_id(config.local_node.as_bytes());
    let header = Header {
        cluster_id: config.cluster_id,
        node_id: local_id,
        generation,
        keepalive_us: u32::try_from(config.timers.keepalive.as_micros()).unwrap_or(u32::MAX),
    };
    let advert = Advert {
        state: hb_common::wire::NodeState::Starting,
        held: 0,
        failed: 0,
    };
    let transmitter = Arc::new(Transmitter::new(header, auth.clone(), &links, advert)?);

    let netlink = Netlink::new()?;
    let mut ifnames = HashMap::new();
    for link in &links {
        match netlink.ifindex(&link.iface).await {
            Ok(index) => {
                ifnames.insert(index, link.iface.clone());
            }
            Err(e) => warn!(iface = %link.iface, "heartbeat interface not found (yet): {e}"),
        }
    }

    let (peers_down_tx, peers_down_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(refresh_peer_paths(
        netlink.clone(),
        unique_ifaces(&links),
        peers_down_rx,
    ));

    let (job_tx, job_rx) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    tokio::spawn(Executor::new(config.clone(), netlink).run(job_rx, done_tx));

    let socket_path = options
        .control_socket
        .clone()
        .or_else(|| config.control_socket.clone())
        .unwrap_or_else(|| PathBuf::from(control::DEFAULT_SOCKET));
    let listener = control::bind(&socket_path).await?;
    let (command_tx, command_rx) = mpsc::channel(16);
    tokio::spawn(control::serve(listener, command_tx.clone()));
    tokio::spawn(forward_signals(command_tx, options.log_files.clone()));

    let notifier = crate::notify::Notifier::from_env().unwrap_or_else(|e| {
        warn!("not notifying systemd: {e}");
        None
    });
    let metrics = match config.metrics {
        Some(addr) => match crate::metrics::bind(addr).await {
            Ok(listener) => {
                let (feed, snapshots) =
                    crate::metrics::MetricsFeed::new(crate::metrics::PUBLISH_INTERVAL);
                tokio::spawn(crate::metrics::serve(listener, snapshots));
                info!(%addr, "Prometheus metrics at http://{addr}/metrics");
                Some(feed)
            }
            Err(e) => {
                error!("{e}: running without metrics");
                None
            }
        },
        None => None,
    };

    let parts = EngineParts {
        config: config.clone(),
        generation,
        auth,
        ifnames,
        transmitter,
        sender: None,
        jobs: job_tx,
        done: done_rx,
        commands: command_rx,
        peers_down: peers_down_tx,
        notifier,
        metrics,
    };
    let xdp_options = XdpOptions {
        node: config.local_node.clone(),
        pin_root: options.pin_root.clone(),
        interfaces: unique_ifaces(&links),
        setting: config.xdp,
        cluster_id: config.cluster_id,
        udp_ports: unique_ports(&links),
        peers: config
            .nodes
            .iter()
            .filter(|n| n.name != config.local_node)
            .map(|n| n.id)
            .collect(),
    };
    let realtime = config.realtime;
    let (finished_tx, finished_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("hb-decide".into())
        .spawn(move || {
            let outcome = decision_thread(parts, links, xdp_options, realtime);
            let _ = finished_tx.send(outcome);
        })
        .map_err(|source| StartError::Runtime {
            what: "decision thread",
            source,
        })?;
    let outcome = finished_rx.await.unwrap_or_else(|_| {
        error!("the decision thread ended abnormally");
        Ok(())
    });
    if let Err(e) = tokio::fs::remove_file(&socket_path).await {
        warn!(path = %socket_path.display(), "could not remove the control socket: {e}");
    }
    outcome
}

/// The decision loop's own thread: its own single-threaded runtime, realtime priority just
/// below the sender's, and the receive path registered with it.
fn decision_thread(
    parts: EngineParts,
    links: Vec<Link>,
    xdp_options: XdpOptions,
    realtime: bool,
) -> Result<(), StartError> {
    if realtime {
        if let Err(e) = crate::transport::make_realtime(SENDER_PRIORITY - 1) {
            warn!("decision loop runs without realtime priority: {e}");
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| StartError::Runtime {
            what: "decision loop runtime",
            source,
        })?;
    runtime.block_on(async move {
        let peer_filter = PeerFilter::from_config(&parts.config);
        let inbound = open_inbound(&xdp_options, &links, peer_filter)?;
        // Heartbeats start only now that this node can hear its peers: a peer that heard us
        // earlier would hand a group back before we could take it.
        let mut parts = parts;
        parts.sender = Some(SenderThread::spawn(
            parts.transmitter.clone(),
            parts.config.timers.keepalive,
            realtime,
        )?);
        let engine = Engine::new(parts, inbound);
        let inbound = engine.run(|| info!("ready: receiving heartbeats")).await;
        if let Inbound::Xdp(xdp) = inbound {
            if let Err(e) = xdp.shutdown() {
                warn!("could not remove the XDP program cleanly: {e}");
            }
        }
        Ok(())
    })
}

/// XDP when allowed and possible, else UDP sockets, saying why.
fn open_inbound(
    options: &XdpOptions,
    links: &[Link],
    filter: PeerFilter,
) -> Result<Inbound, StartError> {
    if options.setting == XdpSetting::Off {
        // A program left attached by an earlier XDP run would keep eating the heartbeats.
        if let Err(e) = crate::xdp::remove_pinned(&options.pin_root, &options.node) {
            warn!("could not remove XDP objects pinned by an earlier run: {e}");
        }
        let sockets = SocketReceiver::open(links, filter)?;
        info!("receiving heartbeats on UDP sockets (xdp off in ha.cf)");
        return Ok(Inbound::Socket(sockets, "xdp off in ha.cf".into()));
    }
    match XdpReceiver::start(options) {
        Ok(xdp) => {
            for (iface, mode) in xdp.attachments() {
                info!(%iface, mode = mode.name(), pinned = %xdp.pin_dir().display(), "XDP program attached");
            }
            Ok(Inbound::Xdp(xdp))
        }
        Err(e) => {
            warn!("XDP unavailable, falling back to UDP sockets: {e}");
            let sockets = SocketReceiver::open(links, filter)?;
            Ok(Inbound::Socket(sockets, format!("XDP unavailable: {e}")))
        }
    }
}

fn unique_ifaces(links: &[Link]) -> Vec<String> {
    let mut ifaces: Vec<String> = links.iter().map(|l| l.iface.clone()).collect();
    ifaces.sort();
    ifaces.dedup();
    ifaces
}

fn unique_ports(links: &[Link]) -> Vec<u16> {
    let mut ports: Vec<u16> = links.iter().map(|l| l.port).collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// How often the heartbeat interfaces' failed neighbour entries are flushed while a peer is
/// not up.
const PEER_PATH_REFRESH: std::time::Duration = std::time::Duration::from_millis(100);

/// While some peer is not up, flushes FAILED/INCOMPLETE neighbour entries on the heartbeat
/// interfaces. Unicast heartbeats to a peer behind a cut fail ARP; once the cut heals the
/// kernel would retry only after its retransmit timer (up to a second), delaying the moment
/// the peer hears us. A fresh entry resolves with the next heartbeat instead.
async fn refresh_peer_paths(
    netlink: Netlink,
    ifaces: Vec<String>,
    mut peers_down: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if peers_down.wait_for(|down| *down).await.is_err() {
            return;
        }
        for iface in &ifaces {
            if let Err(e) = netlink.flush_stale_neighbours(iface).await {
                tracing::debug!(%iface, "could not flush stale neighbours: {e}");
            }
        }
        tokio::time::sleep(PEER_PATH_REFRESH).await;
    }
}

/// SIGTERM/SIGINT → a clean leave. A second signal while leaving exits at once.
async fn forward_signals(engine: mpsc::Sender<Command>, log_files: crate::logging::LogFiles) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        error!("cannot install signal handlers; stop the agent with the control socket");
        return;
    };
    let mut leaving = false;
    loop {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = hup.recv() => {
                if let Err(e) = log_files.reopen() {
                    warn!("could not reopen the log files: {e}");
                }
                if engine.send(Command::Reload).await.is_err() {
                    return;
                }
                continue;
            }
        }
        if leaving {
            warn!("second stop signal: exiting without waiting for the release to finish");
            std::process::exit(1);
        }
        leaving = true;
        if engine.send(Command::Leave).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_grows_on_every_start_and_survives_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let first = next_generation(dir.path()).unwrap();
        let second = next_generation(dir.path()).unwrap();
        assert!(second > first);
        std::fs::write(dir.path().join("generation"), format!("{}\n", u64::MAX - 5)).unwrap();
        assert_eq!(next_generation(dir.path()).unwrap(), u64::MAX - 4);
    }

    #[test]
    fn generation_starts_at_wall_clock_when_state_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(next_generation(dir.path()).unwrap() >= now);
    }
}
