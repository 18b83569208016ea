//! The one error type of the lab harness.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while building or driving a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// Privileged operations were attempted without root.
    #[error("the lab needs root (network namespaces, veth, bridges, BPF)")]
    NotRoot,

    /// An external command could not be started at all.
    #[error("could not run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },

    /// An external command ran and exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        command: String,
        status: String,
        stderr: String,
    },

    /// A file-system operation on a lab path failed.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A system call on a process or namespace failed.
    #[error("{action}: {source}")]
    Sys {
        action: String,
        #[source]
        source: nix::Error,
    },

    /// The lab only ever uses 198.18.0.0/15; anything else is refused.
    #[error("{0} is not inside the test range 198.18.0.0/15 (the lab refuses other addresses)")]
    AddressOutsideTestRange(String),

    /// An address or prefix that does not parse.
    #[error("invalid address {text:?}: {reason}")]
    InvalidAddress { text: String, reason: &'static str },

    /// A namespace, interface, bridge or process name the lab cannot use.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },

    /// A name that is already in use within this lab.
    #[error("{kind} {name:?} already exists in this lab")]
    Duplicate { kind: &'static str, name: String },

    /// A process handle that this lab did not start (or already reaped).
    #[error("process {name:?} (pid {pid}) is not tracked by this lab")]
    UnknownProcess { name: String, pid: u32 },

    /// A namespace that has no switch ports registered with this lab.
    #[error("namespace {0:?} has no bridge ports in this lab")]
    NoPorts(String),

    /// A condition did not become true in time.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout { timeout: Duration, what: String },

    /// A process the lab started exited before it became ready.
    #[error("{name} exited early ({status}); its log:\n{log}")]
    ExitedEarly {
        name: String,
        status: String,
        log: String,
    },

    /// A cluster operation that does not fit the cluster's state (no such agent running, ...).
    #[error("cluster: {0}")]
    Cluster(String),

    /// JSON output (bpftool, ip) that does not parse or has an unexpected shape.
    #[error("`{command}` printed unexpected JSON: {reason}")]
    Json { command: String, reason: String },

    /// An HTTP exchange that failed or returned something that is not HTTP.
    #[error("HTTP GET http://{addr}{path}: {reason}")]
    Http {
        addr: SocketAddr,
        path: String,
        reason: String,
    },

    /// bpffs is not mounted where pinned objects are expected.
    #[error("bpffs is not mounted at /sys/fs/bpf (run `cargo xtask setup`, or `mount -t bpf bpf /sys/fs/bpf`)")]
    BpffsNotMounted,

    /// The agent binary the privileged tests need could not be found.
    #[error("hb-agent binary not found: {0}")]
    AgentBinaryMissing(String),

    /// A closure run inside a namespace could not be started there.
    #[error("could not run a task inside namespace {netns:?}: {reason}")]
    InNetns { netns: String, reason: String },
}

/// Result type of the lab harness.
pub type Result<T, E = LabError> = std::result::Result<T, E>;

impl LabError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        LabError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn sys(action: impl Into<String>, source: nix::Error) -> Self {
        LabError::Sys {
            action: action.into(),
            source,
        }
    }
}
