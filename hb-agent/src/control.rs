//! The control socket: `hb-agent status|standby|takeover` talk to a running agent over a
//! Unix stream socket, one JSON request line and one JSON response line per connection.
//!
//! The socket is created mode 0600: standby and takeover move resources, so only root may
//! use them, as with Heartbeat's `hb_standby`/`hb_takeover`.

use std::fmt::Write as _;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::arrival::RxPath;
use crate::engine::Command;
use crate::membership::{LinkCounters, LinkStatus, NodeCounters};
use crate::policy::Phase;
use crate::stats::LatencySummary;

/// Where the control socket lives unless `--control-socket` or `control_socket` say otherwise.
pub const DEFAULT_SOCKET: &str = "/run/hb-agent/hb-agent.sock";

/// Longest request line accepted; requests are a few bytes.
const MAX_REQUEST: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    Status,
    Standby,
    Takeover,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "response", content = "body", rename_all = "snake_case")]
pub enum Response {
    Status(Box<Status>),
    Ok(String),
    Error(String),
}

/// Everything `hb-agent status` reports; also its `--json` form.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Status {
    pub node: String,
    pub cluster_id: u32,
    pub generation: u64,
    pub uptime_s: f64,
    pub rx_path: RxPath,
    /// Which interfaces, in which XDP mode, or why sockets are used.
    pub rx_detail: String,
    pub standby: bool,
    pub in_initdead: bool,
    /// keepalive, deadtime, warntime, initdead.
    pub timers_ms: [f64; 4],
    pub nodes: Vec<NodeReport>,
    pub links: Vec<LinkStatusReport>,
    pub groups: Vec<GroupStatus>,
    pub counters: CountersStatus,
    /// The longest this agent's decision loop woke late.
    pub max_stall_ms: f64,
    /// Kernel arrival stamp to the agent reading the heartbeat.
    pub kernel_to_agent_us: LatencySummary,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeReport {
    pub name: String,
    pub local: bool,
    /// up, dead, unknown (not heard since start), left.
    pub status: String,
    /// What the node says of itself: starting, active, standby, leaving.
    pub state: Option<String>,
    pub generation: Option<u64>,
    pub last_heard_ms_ago: Option<f64>,
    /// Bitmap of the groups the node holds.
    pub held: u64,
    pub counters: Option<NodeCounters>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LinkStatusReport {
    pub node: String,
    pub iface: String,
    pub status: LinkStatus,
    pub last_heard_ms_ago: Option<f64>,
    pub counters: LinkCounters,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GroupStatus {
    pub name: String,
    pub preferred: String,
    /// The node that holds it now, as far as this node knows.
    pub holder: Option<String>,
    /// This node's phase for the group.
    pub phase: Phase,
    /// Where the policy wants it.
    pub intended_holder: Option<String>,
    pub failed_here: bool,
    pub resources: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CountersStatus {
    pub sent: u64,
    pub send_errors: u64,
    pub auth_failures: u64,
    pub replays: u64,
    pub unknown_nodes: u64,
    pub own_packets: u64,
    pub late: u64,
    pub lost: u64,
    /// Receive-path counters by reason (the XDP program's, or the socket path's).
    pub rx: Vec<(String, u64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("another hb-agent is already serving {0}")]
    InUse(PathBuf),
    #[error("no hb-agent is listening on {path} ({source}); is it running, and is this the right --control-socket?")]
    NotRunning {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the agent sent a response that is not JSON: {0}")]
    BadResponse(String),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ControlError + '_ {
    move |source| ControlError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Binds the control socket, replacing a stale one left by a dead agent.
pub async fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(io_error(path))?;
    }
    if UnixStream::connect(path).await.is_ok() {
        return Err(ControlError::InUse(path.to_owned()));
    }
    match tokio::fs::remove_file(path).await {
        Ok(()) => debug!(path = %path.display(), "removed stale control socket"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(path)(e)),
    }
    let listener = UnixListener::bind(path).map_err(io_error(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_error(path))?;
    Ok(listener)
}

/// Serves requests until the engine is gone.
pub async fn serve(listener: UnixListener, engine: mpsc::Sender<Command>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                warn!("control socket accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let engine = engine.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, engine).await {
                debug!("control connection ended: {e}");
            }
        });
    }
}

async fn answer(stream: UnixStream, engine: mpsc::Sender<Command>) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(MAX_REQUEST as u64);
    reader.read_line(&mut line).await?;
    let response = match serde_json::from_str::<Request>(line.trim()) {
        Err(e) => Response::Error(format!("bad request: {e}")),
        Ok(request) => {
            let (tx, rx) = oneshot::channel();
            if engine.send(Command::Control(request, tx)).await.is_err() {
                Response::Error("the agent is shutting down".into())
            } else {
                rx.await
                    .unwrap_or_else(|_| Response::Error("the agent is shutting down".into()))
            }
        }
    };
    let mut bytes = serde_json::to_vec(&response).map_err(io::Error::other)?;
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    write.shutdown().await
}

/// Sends one request to a running agent and waits for its answer.
pub async fn request(path: &Path, request: Request) -> Result<Response, ControlError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ControlError::NotRunning {
            path: path.to_owned(),
            source,
        })?;
    let (read, mut write) = stream.into_split();
    let mut bytes =
        serde_json::to_vec(&request).map_err(|e| ControlError::BadResponse(e.to_string()))?;
    bytes.push(b'\n');
    write.write_all(&bytes).await.map_err(io_error(path))?;
    let mut line = String::new();
    BufReader::new(read)
        .read_line(&mut line)
        .await
        .map_err(io_error(path))?;
    serde_json::from_str(line.trim()).map_err(|e| ControlError::BadResponse(format!("{e}: {line}")))
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "never".into(), |v| format!("{v:.1} ms ago"))
}

fn groups_of(mask: u64, groups: &[GroupStatus]) -> String {
    let names: Vec<&str> = groups
        .iter()
        .enumerate()
        .filter(|(i, _)| *i < 64 && mask & (1 << i) != 0)
        .map(|(_, g)| g.name.as_str())
        .collect();
    if names.is_empty() {
        "-".into()
    } else {
        names.join(",")
    }
}

impl Status {
    /// The human form of `hb-agent status`: what `cl_status` answered, on one screen.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let [keepalive, deadtime, warntime, initdead] = self.timers_ms;
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "node {} · cluster {:#010x} · generation {} · up {:.1} s{}{}",
            self.node,
            self.cluster_id,
            self.generation,
            self.uptime_s,
            if self.standby { " · STANDBY" } else { "" },
            if self.in_initdead {
                " · waiting for peers (initdead)"
            } else {
                ""
            },
        );
        let _ = writeln!(
            out,
            "receive path: {} ({})",
            self.rx_path.name(),
            self.rx_detail
        );
        let _ = writeln!(
            out,
            "timers: keepalive {keepalive} ms, deadtime {deadtime} ms, warntime {warntime} ms, initdead {initdead} ms"
        );
        let _ = writeln!(out, "\nNODES");
        for node in &self.nodes {
            let _ = writeln!(
                out,
                "  {:<16} {:<8} {:<9} {:<16} holds {}",
                if node.local {
                    format!("{} (local)", node.name)
                } else {
                    node.name.clone()
                },
                node.status,
                node.state.as_deref().unwrap_or("-"),
                if node.local {
                    "-".to_owned()
                } else {
                    ms(node.last_heard_ms_ago)
                },
                groups_of(node.held, &self.groups),
            );
        }
        let _ = writeln!(out, "\nLINKS");
        for link in &self.links {
            let _ = writeln!(
                out,
                "  {:<24} {:<8} {:<16} received {} lost {} replays {}",
                format!("{}:{}", link.node, link.iface),
                format!("{:?}", link.status).to_lowercase(),
                ms(link.last_heard_ms_ago),
                link.counters.received,
                link.counters.lost,
                link.counters.replays,
            );
        }
        let _ = writeln!(out, "\nRESOURCE GROUPS");
        for group in &self.groups {
            let _ = writeln!(
                out,
                "  {:<20} holder {:<12} here {:<10} preferred {:<12}{} [{}]",
                group.name,
                group.holder.as_deref().unwrap_or("none"),
                format!("{:?}", group.phase).to_lowercase(),
                group.preferred,
                if group.failed_here {
                    " FAILED HERE"
                } else {
                    ""
                },
                group.resources.join(" "),
            );
        }
        let c = &self.counters;
        let _ = writeln!(
            out,
            "\nCOUNTERS sent {} (errors {}) · auth failures {} · replays {} · unknown nodes {} · late {} · lost {}",
            c.sent, c.send_errors, c.auth_failures, c.replays, c.unknown_nodes, c.late, c.lost
        );
        let rx: Vec<String> =
            c.rx.iter()
                .filter(|(_, v)| *v > 0)
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
        let _ = writeln!(
            out,
            "  receive path: {}",
            if rx.is_empty() {
                "-".into()
            } else {
                rx.join(" · ")
            }
        );
        let d = &self.kernel_to_agent_us;
        let _ = writeln!(
            out,
            "AGENT max stall {:.2} ms · kernel→agent delay median {:.0} µs, p99 {:.0} µs, max {:.0} µs ({} heartbeats)",
            self.max_stall_ms, d.median, d.p99, d.max, d.count
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_json_form() {
        assert_eq!(
            serde_json::to_string(&Request::Status).unwrap(),
            r#"{"request":"status"}"#
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"request":"takeover"}"#).unwrap(),
            Request::Takeover
        );
        assert!(serde_json::from_str::<Request>(r#"{"request":"reboot"}"#).is_err());
    }

    #[tokio::test]
    async fn a_request_reaches_the_engine_and_the_answer_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let listener = bind(&path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(serve(listener, tx));
        tokio::spawn(async move {
            while let Some(Command::Control(request, reply)) = rx.recv().await {
                let _ = reply.send(Response::Ok(format!("{request:?}")));
            }
        });
        let response = super::request(&path, Request::Standby).await.unwrap();
        assert_eq!(response, Response::Ok("Standby".into()));
        // A second agent must not steal a live socket.
        assert!(matches!(bind(&path).await, Err(ControlError::InUse(_))));
    }

    #[tokio::test]
    async fn no_agent_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = request(&dir.path().join("none.sock"), Request::Status)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("no hb-agent is listening"),
            "{err}"
        );
    }
}
