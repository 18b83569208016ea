//! Running short external commands (ip, bpftool, ping, nsenter) and keeping what they printed.

use std::ffi::OsStr;
use std::process::{Command, ExitStatus, Stdio};

use crate::error::{LabError, Result};

/// What a finished command printed, and how it ended.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    /// The command line, for messages.
    pub command: String,
    /// How the command ended.
    pub status: ExitStatus,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl CommandOutput {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The output when the command succeeded, [`LabError::CommandFailed`] otherwise.
    pub fn checked(self) -> Result<CommandOutput> {
        if self.status.success() {
            Ok(self)
        } else {
            Err(LabError::CommandFailed {
                command: self.command,
                status: self.status.to_string(),
                stderr: self.stderr.trim().to_owned(),
            })
        }
    }
}

/// A readable form of `program args...` for messages.
pub(crate) fn describe<S: AsRef<OsStr>>(program: &OsStr, args: &[S]) -> String {
    let mut text = program.to_string_lossy().into_owned();
    for arg in args {
        text.push(' ');
        text.push_str(&arg.as_ref().to_string_lossy());
    }
    text
}

/// Runs `program args...` to completion with no input, capturing its output.
pub fn run<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<CommandOutput> {
    let command = describe(OsStr::new(program), args);
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn {
            command: command.clone(),
            source,
        })?;
    Ok(CommandOutput {
        command,
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Runs `program args...` and fails unless it exits with status 0; returns its stdout.
pub fn run_checked<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<String> {
    Ok(run(program, args)?.checked()?.stdout)
}

/// Parses a command's stdout as JSON.
pub(crate) fn parse_json(command: &str, stdout: &str) -> Result<serde_json::Value> {
    serde_json::from_str(stdout).map_err(|err| LabError::Json {
        command: command.to_owned(),
        reason: err.to_string(),
    })
}
