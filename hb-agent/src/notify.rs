//! The systemd notification protocol (`sd_notify`), spoken directly: one datagram per message
//! to the socket named by `NOTIFY_SOCKET`, so the agent needs no libsystemd.
//!
//! Outside systemd (no `NOTIFY_SOCKET`) there is no [`Notifier`] and callers skip notifying.
//! Messages are sent non-blocking: the watchdog ping comes from the decision loop, which must
//! never wait on the service manager; a message that cannot be queued is reported as an error
//! for the caller to log, and the next ping tries again.
//!
//! The watchdog is fed from the decision loop itself, not from a side timer, so a loop that
//! stops turning is what systemd sees and restarts. [`WatchdogPacer`] says when a ping is due
//! (every half of `WatchdogSec=`, as sd_watchdog_enabled(3) recommends).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::time::Duration;

use crate::clock::{monotonic_ns, nanos};

/// The environment variables systemd passes to a notify service. A child the agent starts
/// (a resource script) should not inherit them: it is not the service's main process.
pub const NOTIFY_ENV: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET={0:?} is neither an absolute path nor an abstract socket (@name)")]
    UnsupportedAddress(OsString),
    #[error("notification socket {socket:?}: {source}")]
    Io {
        socket: OsString,
        #[source]
        source: io::Error,
    },
}

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    address: SocketAddr,
    /// `NOTIFY_SOCKET` as given, for error messages.
    name: OsString,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// The notifier systemd asked for, if any: `Ok(None)` when `NOTIFY_SOCKET` is unset or
    /// empty (not started by systemd, or not as `Type=notify`).
    pub fn from_env() -> Result<Option<Self>, NotifyError> {
        Self::from_vars(|name| std::env::var_os(name), std::process::id())
    }

    /// [`Notifier::from_env`] over any source of variables; `own_pid` is checked against
    /// `WATCHDOG_PID`.
    pub fn from_vars(
        var: impl Fn(&str) -> Option<OsString>,
        own_pid: u32,
    ) -> Result<Option<Self>, NotifyError> {
        let Some(socket) = var("NOTIFY_SOCKET").filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        let watchdog = watchdog_from_vars(
            var("WATCHDOG_USEC").as_deref(),
            var("WATCHDOG_PID").as_deref(),
            own_pid,
        );
        Self::connect(&socket, watchdog).map(Some)
    }

    /// A notifier for an explicit socket: an absolute path, or `@name` for an abstract
    /// socket (as `NOTIFY_SOCKET` spells them). `watchdog` is the interval systemd expects
    /// pings within, if any.
    pub fn connect(socket: &OsStr, watchdog: Option<Duration>) -> Result<Self, NotifyError> {
        let bytes = socket.as_bytes();
        let io_error = |source| NotifyError::Io {
            socket: socket.to_owned(),
            source,
        };
        let address = match bytes.first() {
            Some(b'/') => SocketAddr::from_pathname(Path::new(socket)).map_err(io_error)?,
            Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]).map_err(io_error)?,
            _ => return Err(NotifyError::UnsupportedAddress(socket.to_owned())),
        };
        let datagram = UnixDatagram::unbound().map_err(io_error)?;
        datagram.set_nonblocking(true).map_err(io_error)?;
        Ok(Self {
            socket: datagram,
            address,
            name: socket.to_owned(),
            watchdog,
        })
    }

    /// `READY=1`: start-up (or a reload) is complete.
    pub fn ready(&self) -> Result<(), NotifyError> {
        self.send("READY=1")
    }

    /// `RELOADING=1` with the `MONOTONIC_USEC=` that systemd ≥ 253 uses to match the reload
    /// with the request; follow it with [`Notifier::ready`] once the reload is done.
    pub fn reloading(&self) -> Result<(), NotifyError> {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}",
            monotonic_ns() / 1_000
        ))
    }

    /// `STOPPING=1`: the clean stop has begun (resources are being released).
    pub fn stopping(&self) -> Result<(), NotifyError> {
        self.send("STOPPING=1")
    }

    /// `STATUS=…`: one line `systemctl status` shows. Line breaks are replaced, since each
    /// line of a message is an assignment of its own.
    pub fn status(&self, text: &str) -> Result<(), NotifyError> {
        self.send(&format!("STATUS={}", text.replace(['\n', '\r'], " ")))
    }

    /// `WATCHDOG=1`: the decision loop is turning.
    pub fn watchdog(&self) -> Result<(), NotifyError> {
        self.send("WATCHDOG=1")
    }

    /// `EXTEND_TIMEOUT_USEC=…`: a start or stop step legitimately needs `extra` more time
    /// (e.g. a slow resource script while releasing).
    pub fn extend_timeout(&self, extra: Duration) -> Result<(), NotifyError> {
        self.send(&format!("EXTEND_TIMEOUT_USEC={}", extra.as_micros()))
    }

    /// Within what interval systemd expects [`Notifier::watchdog`] pings (`WatchdogSec=`),
    /// if it watches this process.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// A pacer for this notifier's watchdog, starting with a ping due at once.
    pub fn watchdog_pacer(&self, now_ns: u64) -> Option<WatchdogPacer> {
        self.watchdog
            .map(|interval| WatchdogPacer::new(interval, now_ns))
    }

    /// Sends one raw message (newline-separated assignments).
    pub fn send(&self, message: &str) -> Result<(), NotifyError> {
        self.socket
            .send_to_addr(message.as_bytes(), &self.address)
            .map(drop)
            .map_err(|source| NotifyError::Io {
                socket: self.name.clone(),
                source,
            })
    }
}

/// The watchdog interval from `WATCHDOG_USEC`, if it applies to this process: `WATCHDOG_PID`,
/// when set, must name it (systemd sets it so a forked child does not ping on its behalf).
fn watchdog_from_vars(usec: Option<&OsStr>, pid: Option<&OsStr>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.to_str()?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid {
        let pid: u32 = pid.to_str()?.trim().parse().ok()?;
        if pid != own_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

/// When the next watchdog ping is due: every half interval, so one late loop turn does not
/// make systemd kill a healthy agent, while a stuck loop is caught within the interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchdogPacer {
    period_ns: u64,
    next_due_ns: u64,
}

impl WatchdogPacer {
    /// A pacer for `interval` (WatchdogSec), with the first ping due at `now_ns`.
    pub fn new(interval: Duration, now_ns: u64) -> Self {
        let interval_ns = nanos(interval);
        Self {
            period_ns: (interval_ns / 2).max(1),
            next_due_ns: now_ns,
        }
    }

    /// Whether a ping is due at `now_ns`.
    pub fn due(&self, now_ns: u64) -> bool {
        now_ns >= self.next_due_ns
    }

    /// Records a ping sent at `now_ns`.
    pub fn pinged(&mut self, now_ns: u64) {
        self.next_due_ns = now_ns.saturating_add(self.period_ns);
    }

    /// `true` (and the ping recorded) when one is due: `if pacer.poll(now) { notifier.watchdog() }`.
    pub fn poll(&mut self, now_ns: u64) -> bool {
        let due = self.due(now_ns);
        if due {
            self.pinged(now_ns);
        }
        due
    }

    /// When the next ping is due: the loop must wake by then even if nothing else happens.
    pub fn next_due_ns(&self) -> u64 {
        self.next_due_ns
    }

    /// The spacing of pings (half the watchdog interval).
    pub fn period(&self) -> Duration {
        Duration::from_nanos(self.period_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        move |name| map.get(name).cloned()
    }

    /// A bound datagram socket standing in for systemd's notification socket.
    struct FakeManager {
        socket: UnixDatagram,
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
    }

    impl FakeManager {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("notify");
            let socket = UnixDatagram::bind(&path).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            Self {
                socket,
                _dir: dir,
                path,
            }
        }

        fn next(&self) -> String {
            let mut buf = [0u8; 4096];
            let n = self.socket.recv(&mut buf).unwrap();
            String::from_utf8(buf[..n].to_vec()).unwrap()
        }
    }

    #[test]
    fn no_notify_socket_means_no_notifier() {
        assert!(Notifier::from_vars(vars(&[]), 1).unwrap().is_none());
        assert!(Notifier::from_vars(vars(&[("NOTIFY_SOCKET", "")]), 1)
            .unwrap()
            .is_none());
    }

    #[test]
    fn relative_or_odd_addresses_are_refused() {
        let err = Notifier::from_vars(vars(&[("NOTIFY_SOCKET", "run/notify")]), 1).unwrap_err();
        assert!(matches!(err, NotifyError::UnsupportedAddress(_)), "{err}");
        assert!(Notifier::connect(OsStr::new("vsock:2:1"), None).is_err());
    }

    #[test]
    fn messages_reach_a_real_datagram_socket() {
        let manager = FakeManager::new();
        let socket = manager.path.to_str().unwrap();
        let notifier = Notifier::from_vars(vars(&[("NOTIFY_SOCKET", socket)]), 1)
            .unwrap()
            .unwrap();
        notifier.ready().unwrap();
        assert_eq!(manager.next(), "READY=1");
        let before_us = monotonic_ns() / 1_000;
        notifier.reloading().unwrap();
        let reloading = manager.next();
        let after_us = monotonic_ns() / 1_000;
        let mut lines = reloading.lines();
        assert_eq!(lines.next(), Some("RELOADING=1"));
        let stamp: u64 = lines
            .next()
            .and_then(|l| l.strip_prefix("MONOTONIC_USEC="))
            .unwrap()
            .parse()
            .unwrap();
        assert!((before_us..=after_us).contains(&stamp), "{reloading}");
        assert_eq!(lines.next(), None);
        notifier.status("2 nodes up\nall well").unwrap();
        assert_eq!(manager.next(), "STATUS=2 nodes up all well");
        notifier.watchdog().unwrap();
        assert_eq!(manager.next(), "WATCHDOG=1");
        notifier.extend_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(manager.next(), "EXTEND_TIMEOUT_USEC=30000000");
        notifier.stopping().unwrap();
        assert_eq!(manager.next(), "STOPPING=1");
    }

    #[test]
    fn abstract_sockets_are_supported() {
        let name = format!("hb-notify-test-{}-{}", std::process::id(), monotonic_ns());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let manager = UnixDatagram::bind_addr(&address).unwrap();
        manager
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let notifier = Notifier::from_vars(vars(&[("NOTIFY_SOCKET", &format!("@{name}"))]), 1)
            .unwrap()
            .unwrap();
        notifier.ready().unwrap();
        let mut buf = [0u8; 64];
        let n = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn a_vanished_manager_is_an_error_not_a_hang() {
        let manager = FakeManager::new();
        let notifier = Notifier::connect(manager.path.as_os_str(), None).unwrap();
        drop(manager);
        let err = notifier.ready().unwrap_err();
        assert!(err.to_string().contains("notification socket"), "{err}");
    }

    #[test]
    fn watchdog_applies_only_to_the_named_process() {
        let socket = FakeManager::new();
        let path = socket.path.to_str().unwrap();
        let with = |pairs: &[(&str, &str)]| {
            let mut all = vec![("NOTIFY_SOCKET", path)];
            all.extend_from_slice(pairs);
            Notifier::from_vars(vars(&all), 42)
                .unwrap()
                .unwrap()
                .watchdog_interval()
        };
        assert_eq!(with(&[]), None);
        assert_eq!(
            with(&[("WATCHDOG_USEC", "5000000")]),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            with(&[("WATCHDOG_USEC", "5000000"), ("WATCHDOG_PID", "42")]),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            with(&[("WATCHDOG_USEC", "5000000"), ("WATCHDOG_PID", "43")]),
            None
        );
        assert_eq!(with(&[("WATCHDOG_USEC", "0")]), None);
        assert_eq!(with(&[("WATCHDOG_USEC", "soon")]), None);
    }

    #[test]
    fn pacer_pings_at_once_then_every_half_interval() {
        let mut pacer = WatchdogPacer::new(Duration::from_secs(4), 1_000);
        assert_eq!(pacer.period(), Duration::from_secs(2));
        assert!(pacer.due(1_000));
        assert!(pacer.poll(1_000));
        assert!(!pacer.poll(1_000));
        assert_eq!(pacer.next_due_ns(), 2_000_001_000);
        assert!(!pacer.poll(2_000_000_999));
        assert!(pacer.poll(2_000_001_000));
        // A late loop turn pings at once, and the next ping is half an interval after it.
        assert!(pacer.poll(9_000_000_000));
        assert_eq!(pacer.next_due_ns(), 11_000_000_000);
    }

    #[test]
    fn pacer_survives_extreme_intervals() {
        let mut tiny = WatchdogPacer::new(Duration::from_nanos(1), 0);
        assert!(tiny.poll(0));
        assert!(tiny.poll(1));
        let mut huge = WatchdogPacer::new(Duration::MAX, u64::MAX - 1);
        assert!(huge.poll(u64::MAX - 1));
        assert_eq!(huge.next_due_ns(), u64::MAX);
    }
}
