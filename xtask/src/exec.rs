//! Running commands for the tasks: visibly, with their status checked.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::Workspace;

/// A readable form of a command line.
pub fn describe(command: &Command) -> String {
    let program = Path::new(command.get_program());
    // The toolchain's cargo is called by its full path; "cargo" reads better.
    let mut text = if program.file_name().is_some_and(|name| name == "cargo") {
        "cargo".to_owned()
    } else {
        program.to_string_lossy().into_owned()
    };
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs `command` with inherited stdio (the user sees its output) and fails unless it exits 0.
pub fn run_visible(command: &mut Command) -> Result<()> {
    let line = describe(command);
    eprintln!("xtask: $ {line}");
    let status = command
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs `command` quietly and returns its stdout when it exits 0, `None` when it cannot be
/// started or fails (used for probes such as `bpf-linker --version`).
pub fn probe(command: &mut Command) -> Option<String> {
    let output = command
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The first executable named `name` on PATH.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Replaces this process with `command` (returns only if that fails).
pub fn replace_process(command: &mut Command) -> Result<()> {
    let line = describe(command);
    eprintln!("xtask: exec {line}");
    let err = command.exec();
    Err(err).with_context(|| format!("could not exec `{line}`"))
}

/// `cargo build` of the hb-agent binary (its build script builds the XDP program); returns the
/// path of the binary cargo produced.
pub fn build_agent(workspace: &Workspace, release: bool) -> Result<PathBuf> {
    let mut command = workspace.cargo();
    command.args([
        "build",
        "--package",
        "hb-agent",
        "--bins",
        "--message-format=json-render-diagnostics",
    ]);
    if release {
        command.arg("--release");
    }
    let line = describe(&command);
    eprintln!("xtask: $ {line}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("could not start `{line}`"))?;
    let stdout = child
        .stdout
        .take()
        .context("cargo build has no stdout pipe")?;
    let mut agent = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo build's messages")?;
        if let Some(path) = agent_artifact(&line) {
            agent = Some(path);
        }
    }
    let status = child.wait().context("waiting for cargo build")?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    let agent = agent.context("cargo build succeeded but reported no hb-agent executable")?;
    eprintln!("xtask: built {}", agent.display());
    Ok(agent)
}

/// The executable path from a cargo JSON message about the hb-agent binary, if it is one.
fn agent_artifact(line: &str) -> Option<PathBuf> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    if message["reason"] != "compiler-artifact" || message["target"]["name"] != "hb-agent" {
        return None;
    }
    let is_bin = message["target"]["kind"]
        .as_array()
        .is_some_and(|kinds| kinds.iter().any(|kind| kind == "bin"));
    if !is_bin {
        return None;
    }
    message["executable"].as_str().map(PathBuf::from)
}

/// Whether `path` exists and can be executed by someone.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_agent_in_cargo_messages() {
        let bin = r#"{"reason":"compiler-artifact","target":{"name":"hb-agent","kind":["bin"]},"executable":"/t/debug/hb-agent"}"#;
        assert_eq!(
            agent_artifact(bin),
            Some(PathBuf::from("/t/debug/hb-agent"))
        );
        let lib = r#"{"reason":"compiler-artifact","target":{"name":"hb-agent","kind":["lib"]},"executable":null}"#;
        assert_eq!(agent_artifact(lib), None);
        let other = r#"{"reason":"compiler-artifact","target":{"name":"xtask","kind":["bin"]},"executable":"/t/debug/xtask"}"#;
        assert_eq!(agent_artifact(other), None);
        assert_eq!(
            agent_artifact(r#"{"reason":"build-finished","success":true}"#),
            None
        );
        assert_eq!(agent_artifact("not json"), None);
    }
}
