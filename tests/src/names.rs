//! Names the lab gives to what it creates, and the checks on names tests pass in.
//!
//! Every lab has a run prefix `hblab-<pid>-<n>`: the pid of the process that owns the lab and a
//! per-process counter. Namespaces are `<prefix>-<short>`, the temp dir is
//! `$TMPDIR/<prefix>`, pinned BPF objects live under `/sys/fs/bpf/<prefix>`. Because the owner's
//! pid is in every name, a later run can tell the leftovers of a run that was killed (owner gone)
//! from those of a run that is still going (owner alive), and removes only the former.
//!
//! Interface names never carry the prefix: veth ends are created directly inside the lab's own
//! namespaces, so they cannot collide with anything outside, and keep the kernel's 15-byte limit.

use std::fs;

use crate::error::{LabError, Result};

/// Start of every name the lab creates outside its namespaces.
pub const RUN_PREFIX_TAG: &str = "hblab-";

/// Kernel limit on interface names (IFNAMSIZ minus the terminating NUL).
pub const IFNAME_MAX: usize = 15;

const SHORT_NAME_MAX: usize = 32;

/// The run prefix for owner `pid` and lab number `index`.
pub fn run_prefix(pid: u32, index: u32) -> String {
    format!("{RUN_PREFIX_TAG}{pid}-{index}")
}

/// The owner pid of a name made by [`run_prefix`] (possibly followed by `-<anything>`), or `None`
/// when the name is not one of the lab's.
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(RUN_PREFIX_TAG)?;
    let mut parts = rest.splitn(3, '-');
    let pid = parts.next()?;
    let index = parts.next()?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(index) {
        return None;
    }
    pid.parse().ok()
}

/// The run prefix (`hblab-<pid>-<n>`) a lab name starts with, or `None` when the name is not one
/// of the lab's.
pub fn run_prefix_of(name: &str) -> Option<&str> {
    owner_pid(name)?;
    let mut parts = name[RUN_PREFIX_TAG.len()..].splitn(3, '-');
    let pid = parts.next()?;
    let index = parts.next()?;
    Some(&name[..RUN_PREFIX_TAG.len() + pid.len() + 1 + index.len()])
}

/// Whether a process with this pid exists and has not exited. Zombies count as exited: on
/// machines whose init does not reap orphans they linger, but they hold nothing.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "<pid> (<comm>) <state> ...": comm may hold spaces and parentheses, so cut at the last ')'.
    match stat
        .rfind(')')
        .and_then(|end| stat[end + 1..].split_whitespace().next())
    {
        Some(state) => !matches!(state, "Z" | "X" | "x"),
        None => false,
    }
}

/// Checks a short name (namespace suffix, process name): lowercase letters, digits, `_`, `.`
/// and `-`, starting with a letter or digit, at most 32 bytes.
pub fn check_short_name(name: &str) -> Result<()> {
    let invalid = |reason| {
        Err(LabError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("empty");
    }
    if name.len() > SHORT_NAME_MAX {
        return invalid("longer than 32 bytes");
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return invalid("must start with a letter or digit");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'))
    {
        return invalid("only a-z, 0-9, '_', '.' and '-' are allowed");
    }
    Ok(())
}

/// Checks an interface name against the kernel's rules: 1 to 15 bytes, no `/`, `:` or
/// whitespace, not `.` or `..`.
pub fn check_ifname(name: &str) -> Result<()> {
    let invalid = |reason| {
        Err(LabError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("empty interface name");
    }
    if name.len() > IFNAME_MAX {
        return invalid("interface names are at most 15 bytes");
    }
    if name == "." || name == ".." {
        return invalid("not a valid interface name");
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || !b.is_ascii_graphic())
    {
        return invalid("interface names cannot contain '/', ':', whitespace or non-ASCII");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_round_trip() {
        let prefix = run_prefix(4_194_304, 17);
        assert_eq!(prefix, "hblab-4194304-17");
        assert_eq!(owner_pid(&prefix), Some(4_194_304));
        assert_eq!(owner_pid(&format!("{prefix}-switch")), Some(4_194_304));
        assert_eq!(owner_pid(&format!("{prefix}-lb-1")), Some(4_194_304));
    }

    #[test]
    fn prefix_of_a_name() {
        assert_eq!(run_prefix_of("hblab-12-3"), Some("hblab-12-3"));
        assert_eq!(run_prefix_of("hblab-12-3-lb1"), Some("hblab-12-3"));
        assert_eq!(run_prefix_of("hblab-12-3-web-1"), Some("hblab-12-3"));
        assert_eq!(run_prefix_of("hblab-12-x"), None);
        assert_eq!(run_prefix_of("netns0"), None);
    }

    #[test]
    fn foreign_names_have_no_owner() {
        for name in [
            "hb-agent",
            "hblab-",
            "hblab-12",
            "hblab-12-",
            "hblab-x-1",
            "hblab-12-y",
            "hblab12-1",
            "netns0",
        ] {
            assert_eq!(owner_pid(name), None, "{name}");
        }
    }

    #[test]
    fn short_names() {
        for ok in ["lb1", "switch", "web-3", "a.b_c", "0"] {
            check_short_name(ok).unwrap();
        }
        for bad in ["", "LB1", "-x", "a b", "a/b", &"x".repeat(33)] {
            assert!(check_short_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn interface_names() {
        for ok in ["eth0", "hb0", "br-service", "x".repeat(15).as_str()] {
            check_ifname(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "x".repeat(16).as_str(),
            "é",
        ] {
            assert!(check_ifname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn own_pid_is_alive_and_a_reaped_child_is_not() {
        assert!(pid_alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!pid_alive(pid));
    }
}
