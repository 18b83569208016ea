//! Long-running processes a lab starts inside its namespaces: their handles, logs, and how
//! they are ended (by their own process group, never by name).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::error::{LabError, Result};

/// A process started by [`crate::Lab::spawn`]. The lab owns the process; the handle names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessHandle {
    pub(crate) name: String,
    pub(crate) pid: u32,
    pub(crate) netns: String,
    pub(crate) stdout_path: PathBuf,
    pub(crate) stderr_path: PathBuf,
}

impl ProcessHandle {
    /// The name given at spawn time (unique within the lab).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its pid, which is also its process-group id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Full name of the namespace it runs in.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// File that receives its standard output.
    pub fn stdout_path(&self) -> &Path {
        &self.stdout_path
    }

    /// File that receives its standard error.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr_path
    }

    /// Everything it wrote to standard output so far.
    pub fn stdout(&self) -> Result<String> {
        read_lossy(&self.stdout_path)
    }

    /// Everything it wrote to standard error so far.
    pub fn stderr(&self) -> Result<String> {
        read_lossy(&self.stderr_path)
    }

    /// Both streams, labelled, for failure messages. Never fails: unreadable files are noted.
    pub fn log(&self) -> String {
        let section = |label: &str, read: Result<String>| match read {
            Ok(text) => format!("--- {} {label} ---\n{text}", self.name),
            Err(err) => format!("--- {} {label} unreadable: {err} ---\n", self.name),
        };
        let mut text = section("stdout", self.stdout());
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&section("stderr", self.stderr()));
        text
    }

    /// The last `lines` lines of [`ProcessHandle::log`].
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

fn read_lossy(path: &Path) -> Result<String> {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .map_err(|err| LabError::io("reading", path, err))
}

/// A started process and the `Child` that reaps it.
#[derive(Debug)]
pub(crate) struct TrackedProcess {
    pub(crate) handle: ProcessHandle,
    pub(crate) child: Child,
}

impl TrackedProcess {
    /// Whether the process has exited, without reaping it: while unreaped, its pid (and so its
    /// process-group id) cannot be reused, so signalling the group stays safe.
    pub(crate) fn has_exited(&self) -> Result<bool> {
        let pid = Pid::from_raw(self.handle.pid as i32);
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(pid), flags) {
            Ok(WaitStatus::StillAlive) => Ok(false),
            Ok(_) => Ok(true),
            Err(err) => Err(LabError::sys(
                format!("checking {} (pid {})", self.handle.name, self.handle.pid),
                err,
            )),
        }
    }

    /// Sends `signal` to the process group the lab created for this process.
    pub(crate) fn signal_group(&self, signal: Signal) -> Result<()> {
        match killpg(Pid::from_raw(self.handle.pid as i32), signal) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(err) => Err(LabError::sys(
                format!(
                    "sending {signal} to {} (process group {})",
                    self.handle.name, self.handle.pid
                ),
                err,
            )),
        }
    }
}

/// Ends `processes`: SIGTERM to each group, up to `grace` for them to exit, then SIGKILL to
/// each group (which also catches children left behind by a leader that exited), then reaps.
/// Returns each process's exit status, or why it could not be had.
pub(crate) fn terminate(
    processes: Vec<TrackedProcess>,
    grace: Duration,
) -> Vec<(ProcessHandle, Result<ExitStatus>)> {
    for process in &processes {
        if !matches!(process.has_exited(), Ok(true)) {
            // Errors here surface below, when the group is killed and the leader reaped.
            let _ = process.signal_group(Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline
        && processes
            .iter()
            .any(|process| !matches!(process.has_exited(), Ok(true)))
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    processes
        .into_iter()
        .map(|mut process| {
            let killed = process.signal_group(Signal::SIGKILL);
            let status = process.child.wait().map_err(|err| LabError::Io {
                action: "waiting for",
                path: PathBuf::from(format!("/proc/{}", process.handle.pid)),
                source: err,
            });
            let result = match (killed, status) {
                (_, Ok(status)) => Ok(status),
                (Err(err), Err(_)) | (Ok(()), Err(err)) => Err(err),
            };
            (process.handle, result)
        })
        .collect()
}
