//! The lab harness shared by hb's privileged integration tests (and the demo and benchmark).
//!
//! A [`Lab`] builds a private network on this machine out of network namespaces, veth links
//! and bridges, using only 198.18.0.0/15, runs real processes (the agent, nginx) inside it, and
//! removes everything it made when dropped — also when the test panics, when the test process
//! gets SIGINT/SIGTERM/SIGHUP, and, for a run killed outright, the next time any lab is created
//! (see [`names`]).
//!
//! A privileged test starts like this:
//!
//! ```no_run
//! use hb_tests::{require_root, Lab};
//!
//! if !require_root("two_nodes_ping") {
//!     return;
//! }
//! let lab = Lab::new("two_nodes_ping").expect("lab");
//! let switch = lab.add_netns("switch").expect("switch namespace");
//! let bridge = lab.add_bridge(&switch, "br0").expect("bridge");
//! let lb1 = lab.add_netns("lb1").expect("lb1 namespace");
//! lab.connect(&lb1, "eth0", &bridge).expect("cable");
//! lab.add_address(&lb1, "eth0", "198.18.0.1/24").expect("address");
//! ```
//!
//! Processes run inside a namespace through `nsenter --net`, not `ip netns exec`: the latter
//! remounts `/sys` and so hides bpffs at `/sys/fs/bpf`, where the agent pins its maps.

pub mod addr;
pub mod bpf;
pub mod chaos;
pub mod cluster;
pub mod cmd;
pub mod error;
pub mod faults;
pub mod flood;
pub mod http;
pub mod lab;
pub mod names;
pub mod nginx;
pub mod probe;
pub mod process;
pub mod rivals;
pub mod wait;

use std::io::Write;
use std::path::PathBuf;

pub use addr::{is_test_address, require_test_address, TestCidr};
pub use bpf::{bpffs_mounted, bpftool_json, BPFFS_ROOT};
pub use cluster::{Cluster, ClusterNode, ClusterSpec};
pub use cmd::CommandOutput;
pub use error::{LabError, Result};
pub use http::{http_get, HttpResponse};
pub use lab::{clean_stale_runs, Bridge, Lab, Neighbor, Netns, Port};
pub use nginx::Nginx;
pub use nix::sys::signal::Signal;
pub use process::ProcessHandle;
pub use wait::{wait_for, wait_until};

/// Environment variable through which `cargo xtask test` passes the freshly built agent.
pub const AGENT_BIN_ENV: &str = "HB_AGENT_BIN";

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `true` when running as root. Otherwise prints `skipped: not root (privileged test <name>)`
/// straight to stderr (past the test harness's capture, so it is always seen) and returns
/// `false`: the test should return at once.
pub fn require_root(test_name: &str) -> bool {
    if is_root() {
        return true;
    }
    write_stderr_line(&format!("skipped: not root (privileged test {test_name})"));
    false
}

/// The hb-agent binary under test: `$HB_AGENT_BIN` when set (as `cargo xtask test` does),
/// otherwise `hb-agent` next to this test executable's profile directory
/// (`target/<profile>/hb-agent`), which `cargo build -p hb-agent` produces.
pub fn agent_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(AGENT_BIN_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(LabError::AgentBinaryMissing(format!(
                "{AGENT_BIN_ENV}={} is not a file",
                path.display()
            )))
        };
    }
    let exe = std::env::current_exe()
        .map_err(|err| LabError::AgentBinaryMissing(format!("current_exe: {err}")))?;
    // target/<profile>/deps/<test binary> → target/<profile>/hb-agent
    let candidate = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile_dir| profile_dir.join("hb-agent"));
    match candidate {
        Some(path) if path.is_file() => Ok(path),
        _ => Err(LabError::AgentBinaryMissing(format!(
            "{AGENT_BIN_ENV} is not set and no hb-agent was built next to {}; \
             run `cargo xtask test`, or `cargo build -p hb-agent` first",
            exe.display()
        ))),
    }
}

/// Writes one line directly to the process's stderr, bypassing the test harness's output
/// capture (which only redirects the print macros).
pub fn write_stderr_line(line: &str) {
    let mut stderr = std::io::stderr().lock();
    // Nothing sensible is left to do when stderr itself is gone.
    let _ = writeln!(stderr, "{line}");
}

/// `text` without ANSI escape sequences (the colours of the agent's and cargo's output).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte(@..~)
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A UTC time stamp as `ip -ts` and the agent's log print it, `2026-11-22T15:36:23.009455`
/// with or without a final `Z`, as a time; `None` when it is not one.
pub fn parse_utc_timestamp(text: &str) -> Option<std::time::SystemTime> {
    let text = text.strip_suffix('Z').unwrap_or(text);
    let (date, time) = text.split_once('T')?;
    let mut date = date.splitn(3, '-').map(|part| part.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut hms = hms.splitn(3, ':').map(|part| part.parse::<u64>().ok());
    let (hour, minute, second) = (hms.next()??, hms.next()??, hms.next()??);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let digits = fraction.len().min(9);
    let nanos = fraction.get(..digits)?.parse::<u64>().ok()? * 10u64.pow(9 - digits as u32);
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
    Some(
        std::time::UNIX_EPOCH
            + std::time::Duration::from_secs(seconds)
            + std::time::Duration::from_nanos(nanos),
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod time_stamp_tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert!(parse_utc_timestamp("2025-13-01T00:00:00Z").is_none());
        assert!(parse_utc_timestamp("2025-01-01 00:00:00").is_none());
    }

    #[test]
    fn timestamps_are_utc_seconds_since_the_epoch() {
        let t = parse_utc_timestamp("1970-01-02T00:00:01.5").unwrap();
        assert_eq!(
            t.duration_since(std::time::UNIX_EPOCH).unwrap(),
            std::time::Duration::from_millis(86_401_500)
        );
        let t = parse_utc_timestamp("2026-11-22T15:36:23.009455").unwrap();
        assert_eq!(
            t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
            1_795_361_783
        );
        assert_eq!(parse_utc_timestamp("yesterday"), None);
    }
}
