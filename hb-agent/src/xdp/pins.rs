//! The per-node pin directory on bpffs: where it is, what lives in it, and its names.
//!
//! ```text
//! <pin_root>/<node>/v1/HB_CONFIG HB_PEERS HB_PEER_LINKS HB_COUNTERS HB_EVENTS
//! <pin_root>/<node>/v1/link:<ifindex>:<mode>:<iface>     one XDP link per interface
//! ```
//!
//! A link's pin name records its interface index and attach mode because the kernel does
//! not report either back through aya: the index tells a pin for a renamed or recreated
//! interface from a live one, the mode whether a restart may keep the link.
//!
//! bpffs refuses names containing `.` (reserved for its own files), and node names (FQDN
//! host names) and interface names (VLAN devices) may contain dots: in names, `%` is written
//! `%25` and `.` is written `%2E`. Interface names cannot contain `:`, so it separates.

use std::ffi::CString;
use std::io;
use std::os::fd::AsFd as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};

use nix::sys::statfs::{statfs, BPF_FS_MAGIC};

use super::{sys, AttachMode, XdpError};

/// Bumped when the pinned layout changes, so an old agent's objects are never mistaken for
/// the current ones.
pub const LAYOUT_VERSION: &str = "v1";

/// Where the system mounts bpffs; the only place this agent mounts it itself.
const BPFFS_MOUNT: &str = "/sys/fs/bpf";

const LINK_PREFIX: &str = "link:";

/// `<pin_root>/<node>/v1`, refusing node names that would leave `<pin_root>`.
pub fn pin_dir(pin_root: &Path, node: &str) -> Result<PathBuf, XdpError> {
    let mut components = Path::new(node).components();
    match (components.next(), components.next()) {
        (Some(Component::Normal(_)), None) if !node.contains('/') => {}
        _ => {
            return Err(XdpError::InvalidOptions(format!(
                "node name {node:?} cannot name a pin directory"
            )))
        }
    }
    Ok(pin_root.join(escape(node)).join(LAYOUT_VERSION))
}

/// `name` as a bpffs path component: no dots.
fn escape(name: &str) -> String {
    name.replace('%', "%25").replace('.', "%2E")
}

fn unescape(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        match rest.get(at + 1..at + 3) {
            Some("25") => out.push('%'),
            Some("2E") => out.push('.'),
            _ => return None,
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// A pinned XDP link as found in the pin directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkPin {
    pub iface: String,
    pub ifindex: u32,
    pub mode: AttachMode,
}

impl LinkPin {
    pub fn file_name(&self) -> String {
        format!(
            "{LINK_PREFIX}{}:{}:{}",
            self.ifindex,
            self.mode.name(),
            escape(&self.iface)
        )
    }

    /// Parses a pin directory entry; `None` for anything that is not a link pin.
    pub fn parse(file_name: &str) -> Option<Self> {
        let mut parts = file_name.strip_prefix(LINK_PREFIX)?.splitn(3, ':');
        let ifindex = parts.next()?.parse().ok()?;
        let mode = AttachMode::from_name(parts.next()?)?;
        let iface = unescape(parts.next()?)?;
        if iface.is_empty() || iface.contains(':') {
            return None;
        }
        Some(Self {
            iface,
            ifindex,
            mode,
        })
    }
}

/// The link pins in `dir`, with their paths. A missing directory holds none.
pub fn link_pins(dir: &Path) -> Result<Vec<(PathBuf, LinkPin)>, XdpError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(pin_error(dir, error)),
    };
    let mut pins = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| pin_error(dir, error))?;
        if let Some(pin) = entry.file_name().to_str().and_then(LinkPin::parse) {
            pins.push((entry.path(), pin));
        }
    }
    pins.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(pins)
}

/// Removes one pinned object; a missing one is fine. Removing a link's last pin (with no
/// open descriptor) detaches it; removing a map's drops it once no program uses it.
pub fn unpin(path: &Path) -> Result<(), XdpError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(pin_error(path, error)),
    }
}

/// Removes everything in `dir` and the directory itself, then `dir`'s parent (the node
/// directory) if that is left empty. Links are detached first, so no program of this node
/// runs on any interface when this returns. A missing directory is fine.
pub fn remove_dir(dir: &Path) -> Result<(), XdpError> {
    for (path, pin) in link_pins(dir)? {
        remove_link(&path, &pin)?;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(pin_error(dir, error)),
    };
    for entry in entries {
        let entry = entry.map_err(|error| pin_error(dir, error))?;
        unpin(&entry.path())?;
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(pin_error(dir, error)),
    }
    if let Some(node_dir) = dir.parent() {
        // Another layout version may still live there: then it stays.
        let _ = std::fs::remove_dir(node_dir);
    }
    Ok(())
}

/// Detaches the link pinned at `path` from its interface now, then removes the pin. If the
/// immediate detach fails, removing the pin still detaches the link, only not at once.
pub fn remove_link(path: &Path, pin: &LinkPin) -> Result<(), XdpError> {
    match sys::obj_get(path).and_then(|link| sys::link_detach(link.as_fd())) {
        Ok(()) => tracing::debug!(iface = %pin.iface, mode = %pin.mode, "XDP link detached"),
        Err(error) => tracing::warn!(iface = %pin.iface, %error,
            "cannot detach the XDP link at once; it goes with its pin"),
    }
    unpin(path)
}

/// Makes sure `pin_root` can hold pins: it must be on bpffs. When it lies under
/// `/sys/fs/bpf` and nothing is mounted there (no systemd), bpffs is mounted there, as
/// systemd would at boot.
pub fn ensure_bpffs(pin_root: &Path) -> Result<(), XdpError> {
    let existing = pin_root
        .ancestors()
        .find(|dir| dir.exists())
        .unwrap_or(Path::new("/"));
    if on_bpffs(existing)? {
        return Ok(());
    }
    let mount_point = Path::new(BPFFS_MOUNT);
    if !pin_root.starts_with(mount_point) || !mount_point.is_dir() {
        return Err(XdpError::Pin {
            path: pin_root.to_owned(),
            reason: "not on a BPF filesystem (mount one with `mount -t bpf bpf <dir>`)".into(),
        });
    }
    if !on_bpffs(mount_point)? {
        mount_bpffs(mount_point)?;
        tracing::info!(mount_point = BPFFS_MOUNT, "mounted the BPF filesystem");
    }
    if on_bpffs(existing)? {
        Ok(())
    } else {
        Err(XdpError::Pin {
            path: pin_root.to_owned(),
            reason: format!(
                "{} is not on the BPF filesystem mounted at {BPFFS_MOUNT}",
                existing.display()
            ),
        })
    }
}

fn on_bpffs(path: &Path) -> Result<bool, XdpError> {
    let stat = statfs(path).map_err(|errno| pin_error(path, io::Error::from(errno)))?;
    Ok(stat.filesystem_type() == BPF_FS_MAGIC)
}

fn mount_bpffs(mount_point: &Path) -> Result<(), XdpError> {
    let target = CString::new(mount_point.as_os_str().as_bytes()).map_err(|error| {
        pin_error(
            mount_point,
            io::Error::new(io::ErrorKind::InvalidInput, error),
        )
    })?;
    let options = c"mode=0700";
    // SAFETY: every pointer is a NUL-terminated string that outlives the call; mount(2)
    // only reads them.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            options.as_ptr().cast(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    // Another process mounted it meanwhile.
    if error.raw_os_error() == Some(libc::EBUSY) && on_bpffs(mount_point)? {
        return Ok(());
    }
    Err(XdpError::Pin {
        path: mount_point.to_owned(),
        reason: format!("cannot mount the BPF filesystem: {error}"),
    })
}

pub fn pin_error(path: &Path, error: io::Error) -> XdpError {
    XdpError::Pin {
        path: path.to_owned(),
        reason: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_dir_is_versioned_per_node() {
        let dir = pin_dir(Path::new("/sys/fs/bpf/hb-agent"), "alpha").unwrap();
        assert_eq!(dir, Path::new("/sys/fs/bpf/hb-agent/alpha/v1"));
        // bpffs refuses dots.
        let dir = pin_dir(Path::new("/sys/fs/bpf/hb-agent"), "lb1.example%").unwrap();
        assert_eq!(dir, Path::new("/sys/fs/bpf/hb-agent/lb1%2Eexample%25/v1"));
    }

    #[test]
    fn pin_dir_refuses_names_that_escape() {
        for node in ["", ".", "..", "a/b", "/abs", "a/"] {
            assert!(
                matches!(
                    pin_dir(Path::new("/sys/fs/bpf/hb-agent"), node),
                    Err(XdpError::InvalidOptions(_))
                ),
                "{node:?} accepted"
            );
        }
    }

    #[test]
    fn escaping_round_trips() {
        for name in ["eth0", "eth0.100", "a%2Eb", "%", ".", "x..y%%"] {
            let escaped = escape(name);
            assert!(!escaped.contains('.'), "{escaped}");
            assert_eq!(unescape(&escaped).as_deref(), Some(name));
        }
        assert_eq!(unescape("a%2"), None);
        assert_eq!(unescape("a%41"), None);
    }

    #[test]
    fn link_pin_names_round_trip() {
        for (iface, mode) in [
            ("eth1", AttachMode::Driver),
            ("eth0.100", AttachMode::Skb),
            ("hb-veth_a", AttachMode::Skb),
        ] {
            let pin = LinkPin {
                iface: iface.into(),
                ifindex: 17,
                mode,
            };
            let name = pin.file_name();
            assert!(name.starts_with("link:") && !name.contains('.'), "{name}");
            assert_eq!(LinkPin::parse(&name), Some(pin));
        }
        let pin = LinkPin {
            iface: "eth0.7".into(),
            ifindex: 3,
            mode: AttachMode::Driver,
        };
        assert_eq!(pin.file_name(), "link:3:driver:eth0%2E7");
    }

    #[test]
    fn other_entries_are_not_link_pins() {
        for name in [
            "HB_PEERS",
            "link:",
            "link:3",
            "link:3:driver",
            "link:3:driver:",
            "link:x:driver:eth1",
            "link:3:native:eth1",
            "link:3:skb:a:b",
            "link:3:skb:bad%",
            "links:3:skb:eth1",
        ] {
            assert_eq!(LinkPin::parse(name), None, "{name}");
        }
    }

    #[test]
    fn missing_directories_are_empty_and_removable() {
        let dir = Path::new("/nonexistent/hb-agent-test/v1");
        assert!(link_pins(dir).unwrap().is_empty());
        remove_dir(dir).unwrap();
        unpin(&dir.join("HB_PEERS")).unwrap();
    }

    #[test]
    fn remove_dir_removes_contents_and_empty_node_dir() {
        let root = tempfile::tempdir().unwrap();
        let dir = pin_dir(root.path(), "node").unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("HB_PEERS"), b"").unwrap();
        std::fs::write(dir.join("link:3:skb:eth1"), b"").unwrap();
        remove_dir(&dir).unwrap();
        assert!(!dir.exists());
        assert!(!root.path().join("node").exists());
        assert!(root.path().exists());
    }

    #[test]
    fn ordinary_directories_are_not_bpffs() {
        let root = tempfile::tempdir().unwrap();
        assert!(!on_bpffs(root.path()).unwrap());
        // Outside /sys/fs/bpf nothing is mounted for the caller.
        assert!(matches!(
            ensure_bpffs(&root.path().join("hb")),
            Err(XdpError::Pin { .. })
        ));
    }
}
