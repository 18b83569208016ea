//! BPF helpers: is bpffs mounted, and bpftool's JSON output.

use std::fs;

use crate::cmd::{self, parse_json};
use crate::error::{LabError, Result};

/// Where bpffs is mounted on a standard system, and where the lab pins.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// Whether a bpffs is mounted at [`BPFFS_ROOT`] in this process's mount namespace.
pub fn bpffs_mounted() -> Result<bool> {
    let mounts = fs::read_to_string("/proc/self/mounts")
        .map_err(|err| LabError::io("reading", "/proc/self/mounts", err))?;
    Ok(mounts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let _source = fields.next();
        fields.next() == Some(BPFFS_ROOT) && fields.next() == Some("bpf")
    }))
}

/// `bpftool -j args...` in the host namespace (programs, maps and pins are global), parsed.
/// Example: `bpftool_json(&["map", "dump", "pinned", path])`.
pub fn bpftool_json(args: &[&str]) -> Result<serde_json::Value> {
    let mut full = vec!["-j"];
    full.extend_from_slice(args);
    let stdout = cmd::run_checked("bpftool", &full)?;
    parse_json(&format!("bpftool {}", full.join(" ")), &stdout)
}
