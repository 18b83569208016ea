//! Running haresources script resources: `NAME::arg1::arg2` becomes
//! `<script> arg1 arg2 start|stop|status`, exactly as Heartbeat's `ResourceManager` ran it
//! (`$spath $arg "$2"`: the `::` arguments first, the operation last).
//!
//! [`ScriptResolver`] finds `NAME` the way Heartbeat did, in `<config-dir>/resource.d/` and then
//! `/etc/init.d/`; where neither has it, hb treats `NAME` as a systemd unit and uses
//! `systemctl start|stop|is-active`. [`run`] executes one operation with a timeout: the script
//! runs in its own process group so that a timeout can end it and everything it spawned, and its
//! combined stdout/stderr is kept (the last [`OUTPUT_TAIL_BYTES`]) so that a failure can be
//! logged with the script's own explanation.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{access, AccessFlags, Pid};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// `status` is a probe: an LSB status action only reads a pid file or asks the daemon, and one
/// that takes longer than this is not going to give a useful answer.
pub const DEFAULT_STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// After SIGTERM on a timeout, how long the script's process group has to exit before SIGKILL:
/// enough for an init script's own TERM handling to remove pid files, short enough not to stall
/// the failover that is waiting on it.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// How much of a script's combined output is kept: the end is where the reason for a failure is.
pub const OUTPUT_TAIL_BYTES: usize = 64 * 1024;

/// Once the script has exited, how long to keep reading output written by processes it left
/// running. A daemon that inherited the pipe may hold it open for its whole life, so the reader
/// must not wait for end-of-file; anything the script itself wrote is already in the pipe.
const POST_EXIT_DRAIN: Duration = Duration::from_millis(50);

/// How long to wait for the script itself to be reaped after SIGKILL.
const KILL_REAP_WAIT: Duration = Duration::from_secs(1);

/// How often to look whether a timed-out process group is gone yet.
const GROUP_POLL: Duration = Duration::from_millis(20);

/// How much of the output an error's `Display` shows: one log line, not the whole tail.
const ERROR_TAIL_BYTES: usize = 1024;

/// Where Heartbeat looked after `resource.d`.
const INIT_D: &str = "/etc/init.d";

const SYSTEMCTL: &str = "systemctl";

/// Unit types systemd knows; a name ending in one of these is already a unit name.
const UNIT_SUFFIXES: &[&str] = &[
    ".service",
    ".socket",
    ".device",
    ".mount",
    ".automount",
    ".swap",
    ".target",
    ".path",
    ".timer",
    ".slice",
    ".scope",
];

/// The LSB exit code of `status` for "program is not running" (also `systemctl is-active`'s).
const LSB_STATUS_STOPPED: i32 = 3;

/// The three operations Heartbeat's `ResourceManager` used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    Start,
    Stop,
    Status,
}

impl Operation {
    /// The word passed to the script as its last argument.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Start => "start",
            Operation::Stop => "stop",
            Operation::Status => "status",
        }
    }

    /// How long this operation may run, given `resource_timeout` for starts and stops.
    pub fn timeout(self, resource_timeout: Duration) -> Duration {
        match self {
            Operation::Start | Operation::Stop => resource_timeout,
            Operation::Status => DEFAULT_STATUS_TIMEOUT.min(resource_timeout),
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a resource name resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScriptTarget {
    /// An executable script in one of the search directories.
    Script(PathBuf),
    /// A systemd unit name, with a unit suffix (`nginx` becomes `nginx.service`).
    SystemdUnit(String),
}

impl fmt::Display for ScriptTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScriptTarget::Script(path) => write!(f, "{}", path.display()),
            ScriptTarget::SystemdUnit(unit) => write!(f, "systemd unit {unit}"),
        }
    }
}

/// What a `status` operation found, from the LSB exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceState {
    /// Exit 0.
    Running,
    /// Exit 3.
    Stopped,
    /// Exit 1 or 2 from a script: LSB's "program is dead" with a pid or lock file left behind.
    /// Not running, but not cleanly stopped either.
    Dead,
}

/// A successful operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptOutcome {
    pub op: Operation,
    /// `Some` for [`Operation::Status`], `None` for start and stop.
    pub service_state: Option<ServiceState>,
    /// The script's exit code: 0, or for `status` the LSB code behind `service_state`.
    pub code: i32,
    /// Combined stdout and stderr, the last [`OUTPUT_TAIL_BYTES`] of it.
    pub output: String,
    /// From spawn to the script's exit (not counting the short post-exit output drain).
    pub duration: Duration,
}

/// Why a resource operation did not succeed. Variants that ran the script carry its output,
/// and their `Display` ends with the tail of it on one line.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("resource name {name:?} refused: {reason}")]
    InvalidName { name: String, reason: &'static str },

    #[error("resource script {} is not executable; make it so with `chmod +x {}`", .path.display(), .path.display())]
    NotExecutable { path: PathBuf },

    #[error("resource script {} is not a regular file", .path.display())]
    NotAFile { path: PathBuf },

    #[error("cannot inspect resource script {}: {source}", .path.display())]
    Inaccessible { path: PathBuf, source: io::Error },

    #[error("{unit} is a systemd unit, which takes no `::` arguments (got {args:?}); put a script named after it in resource.d if it needs them")]
    UnitArguments { unit: String, args: Vec<String> },

    #[error("cannot run {name} {op}: {source}")]
    Spawn {
        name: String,
        op: Operation,
        source: io::Error,
    },

    #[error("{name} {op} failed with exit code {code}; output: {}", LogTail(.output))]
    Failed {
        name: String,
        op: Operation,
        code: i32,
        output: String,
    },

    #[error("{name} {op} was killed by signal {signal}; output: {}", LogTail(.output))]
    Signaled {
        name: String,
        op: Operation,
        signal: i32,
        output: String,
    },

    #[error("{name} {op} timed out after {after:?} and was killed with its process group; output: {}", LogTail(.output))]
    TimedOut {
        name: String,
        op: Operation,
        after: Duration,
        output: String,
    },
}

/// Finds the script or unit behind a haresources resource name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptResolver {
    search_dirs: Vec<PathBuf>,
}

impl ScriptResolver {
    /// Heartbeat's search path: `<config_dir>/resource.d`, then `/etc/init.d`.
    pub fn new(config_dir: impl AsRef<Path>) -> Self {
        Self::with_search_dirs(vec![
            config_dir.as_ref().join("resource.d"),
            PathBuf::from(INIT_D),
        ])
    }

    /// Searches `search_dirs` in order before falling back to systemd.
    pub fn with_search_dirs(search_dirs: Vec<PathBuf>) -> Self {
        Self { search_dirs }
    }

    pub fn search_dirs(&self) -> &[PathBuf] {
        &self.search_dirs
    }

    /// The first search directory holding `name` wins; a `name` in none of them is a systemd
    /// unit. A file that is there but cannot be run is an error rather than a reason to look
    /// further: silently running some other `name` would hide the mistake.
    pub fn resolve(&self, name: &str) -> Result<ScriptTarget, ServiceError> {
        validate_name(name)?;
        for dir in &self.search_dirs {
            let path = dir.join(name);
            let metadata = match std::fs::metadata(&path) {
                Ok(metadata) => metadata,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(ServiceError::Inaccessible { path, source }),
            };
            if !metadata.is_file() {
                return Err(ServiceError::NotAFile { path });
            }
            return match access(&path, AccessFlags::X_OK) {
                Ok(()) => Ok(ScriptTarget::Script(path)),
                Err(Errno::EACCES) => Err(ServiceError::NotExecutable { path }),
                Err(errno) => Err(ServiceError::Inaccessible {
                    path,
                    source: io::Error::from(errno),
                }),
            };
        }
        Ok(ScriptTarget::SystemdUnit(unit_name(name)))
    }
}

fn validate_name(name: &str) -> Result<(), ServiceError> {
    let reason = if name.is_empty() {
        Some("empty name")
    } else if name.contains('/') {
        Some("contains '/': resource names must stay inside the search directories")
    } else if name.contains("..") {
        Some("contains '..': resource names must stay inside the search directories")
    } else if name == "." {
        Some("'.' is a directory")
    } else if name.starts_with('-') {
        Some("starts with '-', which systemctl would read as an option")
    } else if name.chars().any(char::is_control) {
        Some("contains a control character")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ServiceError::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// `nginx` → `nginx.service`; `foo.socket` and `foo.service` stay as they are.
fn unit_name(name: &str) -> String {
    if UNIT_SUFFIXES.iter().any(|suffix| name.ends_with(suffix)) {
        name.to_owned()
    } else {
        format!("{name}.service")
    }
}

/// The program and its arguments for one operation on one target.
#[derive(Debug, PartialEq, Eq)]
struct Invocation {
    program: OsString,
    args: Vec<OsString>,
}

fn invocation(
    target: &ScriptTarget,
    args: &[String],
    op: Operation,
) -> Result<Invocation, ServiceError> {
    match target {
        ScriptTarget::Script(path) => Ok(Invocation {
            program: path.clone().into_os_string(),
            args: args
                .iter()
                .map(OsString::from)
                .chain([OsString::from(op.as_str())])
                .collect(),
        }),
        ScriptTarget::SystemdUnit(unit) => {
            if !args.is_empty() {
                return Err(ServiceError::UnitArguments {
                    unit: unit.clone(),
                    args: args.to_vec(),
                });
            }
            // The agent has no terminal: never let systemctl wait for a password prompt.
            let verb: &[&str] = match op {
                Operation::Start => &["--no-ask-password", "start"],
                Operation::Stop => &["--no-ask-password", "stop"],
                Operation::Status => &["is-active"],
            };
            Ok(Invocation {
                program: OsString::from(SYSTEMCTL),
                args: verb
                    .iter()
                    .map(OsString::from)
                    .chain([OsString::from(unit)])
                    .collect(),
            })
        }
    }
}

/// Runs `op` on `target` with the resource's `::` arguments, ending it (and everything it
/// started in its process group) after `timeout`.
///
/// Processes the script leaves running after a successful exit (a daemon it started) are left
/// alone: that is how init scripts work.
pub async fn run(
    target: &ScriptTarget,
    args: &[String],
    op: Operation,
    timeout: Duration,
) -> Result<ScriptOutcome, ServiceError> {
    let name = target.to_string();
    let log_at_info = op != Operation::Status;
    if log_at_info {
        info!(resource = %name, %op, ?args, "running resource operation");
    } else {
        debug!(resource = %name, %op, ?args, "running resource operation");
    }

    let started = Instant::now();
    let result = match invocation(target, args, op) {
        Ok(invocation) => execute(target, &invocation, &name, op, timeout).await,
        Err(error) => Err(error),
    };
    let duration = started.elapsed();

    match &result {
        Ok(_) if log_at_info => {
            info!(resource = %name, %op, ?duration, "resource operation succeeded")
        }
        Ok(outcome) => {
            let state = outcome.service_state.map(|s| format!("{s:?}"));
            debug!(resource = %name, %op, ?duration, state = state.as_deref().unwrap_or(""), "resource status");
        }
        Err(error) => warn!(resource = %name, %op, ?duration, %error, "resource operation failed"),
    }
    result
}

async fn execute(
    target: &ScriptTarget,
    invocation: &Invocation,
    name: &str,
    op: Operation,
    timeout: Duration,
) -> Result<ScriptOutcome, ServiceError> {
    let spawn_error = |source: io::Error| ServiceError::Spawn {
        name: name.to_owned(),
        op,
        source,
    };
    // One pipe for both streams keeps stdout and stderr lines in the order they were written.
    let (reader, writer) = io::pipe().map_err(spawn_error)?;
    let mut output = OutputCollector::new(OwnedFd::from(reader)).map_err(spawn_error)?;
    let started = Instant::now();
    let mut child = match spawn(&invocation.program, &invocation.args, &writer) {
        Ok(child) => child,
        // A script without a `#!` line: Heartbeat ran it through the shell, which copes.
        Err(e) if e.raw_os_error() == Some(libc::ENOEXEC) && is_script(target) => {
            let mut sh_args = Vec::with_capacity(invocation.args.len() + 1);
            sh_args.push(invocation.program.clone());
            sh_args.extend(invocation.args.iter().cloned());
            spawn(&OsString::from("/bin/sh"), &sh_args, &writer).map_err(spawn_error)?
        }
        Err(e) => return Err(spawn_error(e)),
    };
    // Our copy of the write end must go, or the pipe never reports end-of-file.
    drop(writer);

    let process_group = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .map(Pid::from_raw);
    // If this future is dropped (the agent shutting down mid-operation), the script must not
    // outlive it unsupervised.
    let mut guard = GroupKillGuard {
        process_group,
        armed: true,
    };
    let deadline = started + timeout;
    let waited = wait_collecting(&mut child, &mut output, deadline).await;
    let duration = started.elapsed();

    let status = match waited {
        Some(Ok(status)) => {
            guard.armed = false;
            status
        }
        Some(Err(source)) => {
            // Cannot tell whether the script is still running: make sure it is not.
            let _ = terminate_group(&mut child, process_group, &mut output).await;
            guard.armed = false;
            return Err(spawn_error(source));
        }
        None => {
            warn!(resource = %name, %op, ?timeout, "resource operation timed out; terminating its process group");
            let _ = terminate_group(&mut child, process_group, &mut output).await;
            guard.armed = false;
            output.drain(Instant::now() + POST_EXIT_DRAIN).await;
            return Err(ServiceError::TimedOut {
                name: name.to_owned(),
                op,
                after: timeout,
                output: output.finish(),
            });
        }
    };

    output.drain(Instant::now() + POST_EXIT_DRAIN).await;
    let output = output.finish();

    let Some(code) = status.code() else {
        return Err(ServiceError::Signaled {
            name: name.to_owned(),
            op,
            signal: status.signal().unwrap_or(0),
            output,
        });
    };
    let service_state = match (op, code) {
        (Operation::Status, 0) => Some(ServiceState::Running),
        (Operation::Status, LSB_STATUS_STOPPED) => Some(ServiceState::Stopped),
        // systemctl uses 1 for its own errors (no bus, no permission), so only a script's 1 or
        // 2 means LSB's "dead".
        (Operation::Status, 1 | 2) if is_script(target) => Some(ServiceState::Dead),
        (_, 0) => None,
        _ => {
            return Err(ServiceError::Failed {
                name: name.to_owned(),
                op,
                code,
                output,
            })
        }
    };
    Ok(ScriptOutcome {
        op,
        service_state,
        code,
        output,
        duration,
    })
}

fn is_script(target: &ScriptTarget) -> bool {
    matches!(target, ScriptTarget::Script(_))
}

fn spawn(program: &OsString, args: &[OsString], output: &io::PipeWriter) -> io::Result<Child> {
    let stdout = output.try_clone()?;
    let stderr = output.try_clone()?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        // Init scripts expect to start from `/`, and a daemon they leave behind must not pin
        // the agent's working directory.
        .current_dir("/")
        .process_group(0);
    // Dropping `command` closes its copies of the write end.
    command.spawn()
}

/// Waits for the script to exit while collecting its output, until `deadline`.
/// `None`: the deadline passed first.
async fn wait_collecting(
    child: &mut Child,
    output: &mut OutputCollector,
    deadline: Instant,
) -> Option<io::Result<ExitStatus>> {
    loop {
        tokio::select! {
            biased;
            status = child.wait() => return Some(status),
            () = tokio::time::sleep_until(deadline) => return None,
            () = output.read_chunk(), if output.is_open() => {}
        }
    }
}

/// SIGTERM to the whole group, SIGKILL to whatever is left after [`KILL_GRACE`]. Returns the
/// script's exit status if it was reaped.
async fn terminate_group(
    child: &mut Child,
    process_group: Option<Pid>,
    output: &mut OutputCollector,
) -> Option<ExitStatus> {
    let Some(group) = process_group else {
        // Without a pid the child has already been reaped; nothing to signal safely.
        return None;
    };
    signal_group(group, Signal::SIGTERM);
    let grace_deadline = Instant::now() + KILL_GRACE;
    let mut status = wait_collecting(child, output, grace_deadline)
        .await
        .and_then(Result::ok);
    if status.is_some() {
        // The script is reaped; anything it spawned into the group still holds the group id,
        // so it cannot be reused while we look.
        while group_exists(group) && Instant::now() < grace_deadline {
            tokio::time::sleep(GROUP_POLL).await;
        }
    }
    if status.is_none() || group_exists(group) {
        signal_group(group, Signal::SIGKILL);
    }
    if status.is_none() {
        status = wait_collecting(child, output, Instant::now() + KILL_REAP_WAIT)
            .await
            .and_then(Result::ok);
    }
    status
}

fn signal_group(group: Pid, signal: Signal) {
    match killpg(group, signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(errno) => {
            warn!(process_group = group.as_raw(), ?signal, %errno, "cannot signal resource script's process group")
        }
    }
}

fn group_exists(group: Pid) -> bool {
    !matches!(killpg(group, None), Err(Errno::ESRCH))
}

/// Kills the script's process group if the operation is abandoned before the script exits.
struct GroupKillGuard {
    process_group: Option<Pid>,
    armed: bool,
}

impl Drop for GroupKillGuard {
    fn drop(&mut self) {
        if let (true, Some(group)) = (self.armed, self.process_group) {
            signal_group(group, Signal::SIGKILL);
        }
    }
}

/// Reads the script's combined output into a bounded tail.
struct OutputCollector {
    receiver: Option<pipe::Receiver>,
    tail: OutputTail,
    buf: Vec<u8>,
}

impl OutputCollector {
    fn new(read_end: OwnedFd) -> io::Result<Self> {
        Ok(Self {
            receiver: Some(pipe::Receiver::from_owned_fd(read_end)?),
            tail: OutputTail::new(OUTPUT_TAIL_BYTES),
            buf: vec![0; 8192],
        })
    }

    fn is_open(&self) -> bool {
        self.receiver.is_some()
    }

    /// Cancel safe: a read that has not completed has consumed nothing.
    async fn read_chunk(&mut self) {
        let Some(receiver) = self.receiver.as_mut() else {
            return;
        };
        match receiver.read(&mut self.buf).await {
            Ok(0) => self.receiver = None,
            Ok(n) => self.tail.push(&self.buf[..n]),
            Err(error) => {
                debug!(%error, "reading resource script output");
                self.receiver = None;
            }
        }
    }

    /// Reads what is left, until end-of-file or `deadline`, whichever comes first.
    async fn drain(&mut self, deadline: Instant) {
        while self.is_open() {
            tokio::select! {
                () = self.read_chunk() => {}
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
    }

    /// The collected output. A process still holding the pipe (a daemon the script started
    /// without redirecting its output) gets a reader that discards what it writes: closing the
    /// read end instead would kill it with SIGPIPE on its next write.
    fn finish(mut self) -> String {
        if let Some(receiver) = self.receiver.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    debug!("a process left by the resource script holds its output; discarding what it writes");
                    runtime.spawn(discard(receiver));
                }
                Err(_) => drop(receiver),
            }
        }
        self.tail.into_string()
    }
}

async fn discard(mut receiver: pipe::Receiver) {
    let mut buf = vec![0; 8192];
    while let Ok(n) = receiver.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// Keeps the last `limit` bytes pushed into it.
struct OutputTail {
    bytes: VecDeque<u8>,
    limit: usize,
    dropped: usize,
}

impl OutputTail {
    fn new(limit: usize) -> Self {
        Self {
            bytes: VecDeque::new(),
            limit,
            dropped: 0,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend(chunk);
        let excess = self.bytes.len().saturating_sub(self.limit);
        if excess > 0 {
            self.bytes.drain(..excess);
            self.dropped += excess;
        }
    }

    fn into_string(mut self) -> String {
        let bytes = self.bytes.make_contiguous();
        let mut text = &bytes[..];
        if self.dropped > 0 {
            // The cut may have split a UTF-8 character: start at the next whole one.
            let skip = text
                .iter()
                .take(3)
                .take_while(|&&b| b & 0xC0 == 0x80)
                .count();
            text = &text[skip..];
            self.dropped += skip;
        }
        let body = String::from_utf8_lossy(text);
        if self.dropped > 0 {
            format!("[{} earlier bytes of output dropped]\n{body}", self.dropped)
        } else {
            body.into_owned()
        }
    }
}

/// The end of a script's output on one line, for an error message.
struct LogTail<'a>(&'a str);

impl fmt::Display for LogTail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.trim_end();
        if text.is_empty() {
            return f.write_str("(none)");
        }
        let mut start = text.len().saturating_sub(ERROR_TAIL_BYTES);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        let prefix = if start > 0 { "..." } else { "" };
        // Debug formatting escapes newlines, keeping the message on one log line.
        write!(f, "{prefix}{:?}", &text[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use tempfile::TempDir;

    /// Kills a process this test started (by PID) when dropped, so a failing assertion does
    /// not leave it behind.
    struct KillOnDrop(i32);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(Pid::from_raw(self.0), Signal::SIGKILL);
        }
    }

    /// Gone, or a zombie nobody has reaped yet (it no longer runs either way).
    fn process_gone(pid: i32) -> bool {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next())
                .is_some_and(|state| state == 'Z' || state == 'X'),
        }
    }

    async fn wait_gone(pid: i32, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if process_gone(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        process_gone(pid)
    }

    fn write_script(dir: &Path, name: &str, body: &str, mode: u32) -> PathBuf {
        fs::create_dir_all(dir).expect("create script dir");
        let path = dir.join(name);
        fs::write(&path, body).expect("write script");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod script");
        path
    }

    fn sh_script(dir: &Path, name: &str, body: &str) -> ScriptTarget {
        ScriptTarget::Script(write_script(
            dir,
            name,
            &format!("#!/bin/sh\n{body}\n"),
            0o755,
        ))
    }

    async fn read_pid(path: &Path) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(text) = fs::read_to_string(path) {
                if let Ok(pid) = text.trim().parse() {
                    return pid;
                }
            }
            assert!(Instant::now() < deadline, "no pid in {}", path.display());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    struct Dirs {
        _tmp: TempDir,
        resource_d: PathBuf,
        init_d: PathBuf,
        resolver: ScriptResolver,
    }

    fn dirs() -> Dirs {
        let tmp = TempDir::new().expect("tempdir");
        let resource_d = tmp.path().join("resource.d");
        let init_d = tmp.path().join("init.d");
        fs::create_dir_all(&resource_d).expect("resource.d");
        fs::create_dir_all(&init_d).expect("init.d");
        let resolver = ScriptResolver::with_search_dirs(vec![resource_d.clone(), init_d.clone()]);
        Dirs {
            _tmp: tmp,
            resource_d,
            init_d,
            resolver,
        }
    }

    #[test]
    fn default_search_path_is_heartbeats() {
        let resolver = ScriptResolver::new("/etc/ha.d");
        assert_eq!(
            resolver.search_dirs(),
            [
                PathBuf::from("/etc/ha.d/resource.d"),
                PathBuf::from("/etc/init.d")
            ]
        );
    }

    #[test]
    fn resolution_order_resource_d_then_init_d_then_systemd() {
        let d = dirs();
        let in_both_rd = write_script(&d.resource_d, "both", "#!/bin/sh\n", 0o755);
        write_script(&d.init_d, "both", "#!/bin/sh\n", 0o755);
        let init_only = write_script(&d.init_d, "initonly", "#!/bin/sh\n", 0o755);

        assert_eq!(
            d.resolver.resolve("both").expect("both"),
            ScriptTarget::Script(in_both_rd)
        );
        assert_eq!(
            d.resolver.resolve("initonly").expect("initonly"),
            ScriptTarget::Script(init_only)
        );
        assert_eq!(
            d.resolver.resolve("nginx").expect("nginx"),
            ScriptTarget::SystemdUnit("nginx.service".into())
        );
        assert_eq!(
            d.resolver.resolve("ssh.socket").expect("socket"),
            ScriptTarget::SystemdUnit("ssh.socket".into())
        );
        assert_eq!(
            d.resolver.resolve("getty@tty1").expect("template"),
            ScriptTarget::SystemdUnit("getty@tty1.service".into())
        );
        assert_eq!(
            d.resolver.resolve("foo.service").expect("service"),
            ScriptTarget::SystemdUnit("foo.service".into())
        );
    }

    #[test]
    fn non_executable_script_is_an_error_naming_path_and_fix() {
        let d = dirs();
        let path = write_script(&d.resource_d, "noexec", "#!/bin/sh\n", 0o644);
        // An executable one further down the path must not be used instead.
        write_script(&d.init_d, "noexec", "#!/bin/sh\n", 0o755);
        let err = d.resolver.resolve("noexec").expect_err("not executable");
        assert!(
            matches!(&err, ServiceError::NotExecutable { path: p } if *p == path),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("chmod +x"), "{message}");
    }

    #[test]
    fn directory_in_search_path_is_not_a_script() {
        let d = dirs();
        fs::create_dir(d.resource_d.join("adir")).expect("mkdir");
        let err = d.resolver.resolve("adir").expect_err("directory");
        assert!(matches!(err, ServiceError::NotAFile { .. }), "{err:?}");
    }

    #[test]
    fn escaping_and_odd_names_are_refused() {
        let d = dirs();
        // A real file one level up must stay unreachable.
        write_script(
            d.resource_d.parent().expect("parent"),
            "outside",
            "#!/bin/sh\n",
            0o755,
        );
        for name in [
            "../outside",
            "a/b",
            "/bin/sh",
            "..",
            "x..y",
            ".",
            "",
            "--help",
            "a\nb",
        ] {
            let result = d.resolver.resolve(name);
            assert!(
                matches!(result, Err(ServiceError::InvalidName { .. })),
                "{name:?}: {result:?}"
            );
        }
    }

    #[test]
    fn systemd_invocations() {
        let unit = ScriptTarget::SystemdUnit("nginx.service".into());
        let words = |op| {
            let inv = invocation(&unit, &[], op).expect("invocation");
            assert_eq!(inv.program, "systemctl");
            inv.args
                .into_iter()
                .map(|a| a.into_string().expect("utf8"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            words(Operation::Start),
            ["--no-ask-password", "start", "nginx.service"]
        );
        assert_eq!(
            words(Operation::Stop),
            ["--no-ask-password", "stop", "nginx.service"]
        );
        assert_eq!(words(Operation::Status), ["is-active", "nginx.service"]);
        let err = invocation(&unit, &["x".into()], Operation::Start).expect_err("args");
        assert!(matches!(err, ServiceError::UnitArguments { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn arguments_come_before_the_operation() {
        let d = dirs();
        let target = sh_script(&d.resource_d, "IPaddr", r#"printf '<%s>' "$@""#);
        let args = vec!["10.0.0.1".to_owned(), "eth0".to_owned(), "a b".to_owned()];
        for op in [Operation::Start, Operation::Stop] {
            let outcome = run(&target, &args, op, Duration::from_secs(10))
                .await
                .expect("run");
            assert_eq!(outcome.output, format!("<10.0.0.1><eth0><a b><{op}>"));
            assert_eq!(outcome.code, 0);
            assert_eq!(outcome.service_state, None);
            assert_eq!(outcome.op, op);
        }
    }

    #[tokio::test]
    async fn nonzero_exit_is_a_failure_with_output() {
        let d = dirs();
        let target = sh_script(
            &d.resource_d,
            "failing",
            "echo 'to stdout'\necho 'port 80 already in use' >&2\nexit 7",
        );
        let err = run(&target, &[], Operation::Start, Duration::from_secs(10))
            .await
            .expect_err("must fail");
        match &err {
            ServiceError::Failed {
                code, output, op, ..
            } => {
                assert_eq!(*code, 7);
                assert_eq!(*op, Operation::Start);
                assert_eq!(output, "to stdout\nport 80 already in use\n");
            }
            other => panic!("unexpected {other:?}"),
        }
        let message = err.to_string();
        assert!(message.contains("exit code 7"), "{message}");
        assert!(message.contains("port 80 already in use"), "{message}");
        assert!(!message.contains('\n'), "one log line: {message}");
    }

    #[tokio::test]
    async fn killed_by_signal_is_reported() {
        let d = dirs();
        let target = sh_script(&d.resource_d, "selfkill", "echo bye\nkill -KILL $$");
        let err = run(&target, &[], Operation::Stop, Duration::from_secs(10))
            .await
            .expect_err("must fail");
        assert!(
            matches!(&err, ServiceError::Signaled { signal: 9, output, .. } if output == "bye\n"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn status_follows_lsb_exit_codes() {
        let d = dirs();
        let target = sh_script(&d.resource_d, "svc", r#"echo "state $1"; exit "$1""#);
        let status = |code: &str| {
            let target = target.clone();
            let args = vec![code.to_owned()];
            async move { run(&target, &args, Operation::Status, Duration::from_secs(10)).await }
        };
        let running = status("0").await.expect("running");
        assert_eq!(running.service_state, Some(ServiceState::Running));
        let stopped = status("3").await.expect("stopped is not an error");
        assert_eq!(stopped.service_state, Some(ServiceState::Stopped));
        assert_eq!(stopped.code, 3);
        assert_eq!(stopped.output, "state 3\n");
        let dead = status("1").await.expect("dead");
        assert_eq!(dead.service_state, Some(ServiceState::Dead));
        let unknown = status("4").await.expect_err("unknown");
        assert!(
            matches!(unknown, ServiceError::Failed { code: 4, .. }),
            "{unknown:?}"
        );
        // 3 from start is a failure, not "stopped".
        let start = run(
            &target,
            &["3".to_owned()],
            Operation::Start,
            Duration::from_secs(10),
        )
        .await;
        assert!(
            matches!(start, Err(ServiceError::Failed { code: 3, .. })),
            "{start:?}"
        );
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_process_group() {
        let d = dirs();
        let pid_file = d.resource_d.join("child.pid");
        let marker = d.resource_d.join("child.term");
        // The background child records that it was asked to stop (SIGTERM) before any SIGKILL.
        // It writes its pid once its trap is set, and the script waits for that, so the timeout
        // cannot land before the trap exists even on a loaded machine.
        let target = sh_script(
            &d.resource_d,
            "hang",
            &format!(
                "sh -c 'trap \"echo got-term > {marker}; exit 0\" TERM; echo $$ > {pid}; \
                 while :; do sleep 0.05; done' &\n\
                 while [ ! -s {pid} ]; do sleep 0.01; done\necho before-hang\nsleep 1000",
                marker = marker.display(),
                pid = pid_file.display()
            ),
        );
        let started = Instant::now();
        let err = run(&target, &[], Operation::Start, Duration::from_millis(1500))
            .await
            .expect_err("must time out");
        let child = read_pid(&pid_file).await;
        let _cleanup = KillOnDrop(child);
        assert!(started.elapsed() < Duration::from_secs(10));
        match &err {
            ServiceError::TimedOut { after, output, .. } => {
                assert_eq!(*after, Duration::from_millis(1500));
                assert!(output.contains("before-hang"), "{output:?}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("timed out"));
        assert!(
            wait_gone(child, Duration::from_secs(5)).await,
            "background child {child} survived the timeout"
        );
        assert_eq!(
            fs::read_to_string(&marker).ok().as_deref(),
            Some("got-term\n"),
            "the group gets SIGTERM first"
        );
    }

    #[tokio::test]
    async fn timeout_escalates_to_sigkill_for_children_ignoring_sigterm() {
        let d = dirs();
        let pid_file = d.resource_d.join("stubborn.pid");
        let target = sh_script(
            &d.resource_d,
            "stubborn",
            &format!(
                "sh -c \"trap '' TERM; exec sleep 1000\" &\necho $! > {}\nsleep 1000",
                pid_file.display()
            ),
        );
        let err = run(&target, &[], Operation::Stop, Duration::from_millis(300))
            .await
            .expect_err("must time out");
        let child = read_pid(&pid_file).await;
        let _cleanup = KillOnDrop(child);
        assert!(matches!(err, ServiceError::TimedOut { .. }), "{err:?}");
        assert!(
            wait_gone(child, Duration::from_secs(5)).await,
            "TERM-ignoring child {child} survived"
        );
    }

    #[tokio::test]
    async fn daemonizing_script_returns_promptly_and_its_daemon_survives() {
        let d = dirs();
        let pid_file = d.resource_d.join("daemon.pid");
        // The daemon inherits stdout/stderr and keeps writing to them after the script exits.
        let target = sh_script(
            &d.resource_d,
            "daemon",
            &format!(
                "sh -c 'while :; do echo tick; sleep 0.05; done' &\necho $! > {}\necho started",
                pid_file.display()
            ),
        );
        let started = Instant::now();
        let finished = tokio::time::timeout(
            Duration::from_secs(10),
            run(&target, &[], Operation::Start, Duration::from_secs(20)),
        )
        .await;
        let elapsed = started.elapsed();
        let daemon = read_pid(&pid_file).await;
        let _cleanup = KillOnDrop(daemon);
        let outcome = finished
            .expect("waited for end-of-file on a pipe the daemon holds")
            .expect("start");
        assert!(
            elapsed < Duration::from_secs(5),
            "waited {elapsed:?} for a pipe the daemon holds"
        );
        assert!(outcome.output.contains("started"), "{:?}", outcome.output);
        // Closing the pipe's read end would kill it with SIGPIPE on its next write.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            !process_gone(daemon),
            "daemon {daemon} died after the script returned"
        );
    }

    #[tokio::test]
    async fn script_without_shebang_runs_through_sh() {
        let d = dirs();
        let path = write_script(&d.resource_d, "plain", "echo plain \"$@\"\n", 0o755);
        let outcome = run(
            &ScriptTarget::Script(path),
            &["x".to_owned()],
            Operation::Start,
            Duration::from_secs(10),
        )
        .await
        .expect("plain script");
        assert_eq!(outcome.output, "plain x start\n");
    }

    #[tokio::test]
    async fn large_output_keeps_the_tail() {
        let d = dirs();
        // ~200 KiB of output, then the line that matters.
        let target = sh_script(
            &d.resource_d,
            "chatty",
            "i=0; while [ $i -lt 4000 ]; do echo 'filler filler filler filler filler filler'; i=$((i+1)); done\necho 'the real reason' >&2\nexit 1",
        );
        let err = run(&target, &[], Operation::Start, Duration::from_secs(30))
            .await
            .expect_err("fails");
        let ServiceError::Failed { output, .. } = &err else {
            panic!("unexpected {err:?}");
        };
        assert!(output.len() <= OUTPUT_TAIL_BYTES + 64, "{}", output.len());
        assert!(output.starts_with('['), "marks the cut");
        assert!(output.ends_with("the real reason\n"));
        let message = err.to_string();
        assert!(message.len() < 2 * ERROR_TAIL_BYTES, "{}", message.len());
        assert!(message.contains("the real reason"));
    }

    #[tokio::test]
    async fn missing_script_is_a_spawn_error() {
        let target = ScriptTarget::Script(PathBuf::from("/nonexistent/hb-services-test"));
        let err = run(&target, &[], Operation::Start, Duration::from_secs(5))
            .await
            .expect_err("no such file");
        assert!(matches!(err, ServiceError::Spawn { .. }), "{err:?}");
    }

    #[test]
    fn output_tail_keeps_the_end_and_whole_characters() {
        let mut tail = OutputTail::new(4);
        tail.push("aé".as_bytes());
        tail.push(b"xyz");
        // "aéxyz" is 6 bytes; the last 4 start inside "é".
        assert_eq!(
            tail.into_string(),
            "[3 earlier bytes of output dropped]\nxyz"
        );
        let mut short = OutputTail::new(16);
        short.push(b"ok\n");
        assert_eq!(short.into_string(), "ok\n");
    }

    #[test]
    fn log_tail_is_one_line() {
        assert_eq!(LogTail("").to_string(), "(none)");
        assert_eq!(LogTail("a\nb\n").to_string(), "\"a\\nb\"");
        let long = "x".repeat(ERROR_TAIL_BYTES * 3);
        let shown = LogTail(&long).to_string();
        assert!(shown.starts_with("...\""));
        assert_eq!(shown.len(), ERROR_TAIL_BYTES + 5);
    }
}
