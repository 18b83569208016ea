//! The heartbeat sender thread: one heartbeat every keepalive on absolute CLOCK_MONOTONIC
//! deadlines, optionally SCHED_FIFO with memory locked (`realtime on`).
//!
//! It sleeps on a periodic timerfd armed once with `TFD_TIMER_ABSTIME`, so deadlines stay on
//! a fixed grid however long each send takes and a tick costs one `read`, not a re-arm as
//! well (timer programming is dear under virtualisation). It is re-armed only when the
//! sender fell a whole keepalive behind, to skip the missed deadlines instead of sending
//! them in a burst. A stop request wakes it at once by re-arming the timer into the past
//! rather than waiting out a keepalive.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::mman::{mlockall, MlockAllFlags};
use nix::sys::resource::{getrlimit, Resource};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use nix::time::{clock_nanosleep, ClockNanosleepFlags};

use super::limiter::LogLimiter;
use super::schedule::next_tick;
use super::transmitter::Transmitter;
use super::TransportError;
use crate::clock::{self, nanos};

/// SCHED_FIFO priority of the sender with `realtime on`: the default of threaded interrupt
/// handlers. Above them, the sender could delay the NIC interrupts its own packets need.
pub const SENDER_PRIORITY: i32 = 50;

/// `CAP_IPC_LOCK`'s bit in the capability sets of `/proc/self/status`.
const CAP_IPC_LOCK: u32 = 14;

/// What `realtime on` achieved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RealtimeStatus {
    pub requested: bool,
    /// The sender thread runs SCHED_FIFO at [`SENDER_PRIORITY`].
    pub sched_fifo: bool,
    /// `mlockall(MCL_CURRENT | MCL_FUTURE)` succeeded: page faults cannot stall the agent.
    pub memory_locked: bool,
}

/// The sender's own health: its stall measure is [`max_lateness`](Self::max_lateness).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SenderStats {
    /// Heartbeats sent (whether or not every link took them).
    pub ticks: u64,
    /// Deadlines skipped because the sender was a whole keepalive or more late.
    pub missed_ticks: u64,
    /// The longest a heartbeat left after its deadline.
    pub max_lateness: Duration,
    pub realtime: RealtimeStatus,
    /// False once stopped (or if the thread died).
    pub running: bool,
}

/// The running sender thread. Dropping it stops the thread, as [`stop`](Self::stop) does.
#[derive(Debug)]
pub struct SenderThread {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    timer: TimerFd,
    /// Changed by a reload; read once per tick.
    interval_ns: AtomicU64,
    realtime_requested: bool,
    realtime: OnceLock<RealtimeStatus>,
    ticks: AtomicU64,
    missed: AtomicU64,
    max_lateness_ns: AtomicU64,
}

impl SenderThread {
    /// Starts sending a heartbeat now and every `keepalive` after.
    pub fn spawn(
        transmitter: Arc<Transmitter>,
        keepalive: Duration,
        realtime: bool,
    ) -> Result<Self, TransportError> {
        let interval_ns = nanos(keepalive);
        if interval_ns == 0 {
            return Err(TransportError::ZeroKeepalive);
        }
        let timer = TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_CLOEXEC)
            .map_err(TransportError::Timer)?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            timer,
            interval_ns: AtomicU64::new(interval_ns),
            realtime_requested: realtime,
            realtime: OnceLock::new(),
            ticks: AtomicU64::new(0),
            missed: AtomicU64::new(0),
            max_lateness_ns: AtomicU64::new(0),
        });
        let thread = std::thread::Builder::new()
            .name("hb-sender".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || run(&shared, &transmitter)
            })
            .map_err(TransportError::SpawnThread)?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// A reload: heartbeats follow `keepalive` from the next one on, with no pause.
    pub fn set_interval(&self, keepalive: Duration) -> Result<(), TransportError> {
        let interval_ns = nanos(keepalive);
        if interval_ns == 0 {
            return Err(TransportError::ZeroKeepalive);
        }
        self.shared
            .interval_ns
            .store(interval_ns, Ordering::Relaxed);
        Ok(())
    }

    pub fn stats(&self) -> SenderStats {
        let shared = &self.shared;
        SenderStats {
            ticks: shared.ticks.load(Ordering::Relaxed),
            missed_ticks: shared.missed.load(Ordering::Relaxed),
            max_lateness: Duration::from_nanos(shared.max_lateness_ns.load(Ordering::Relaxed)),
            realtime: shared.realtime.get().copied().unwrap_or(RealtimeStatus {
                requested: shared.realtime_requested,
                ..RealtimeStatus::default()
            }),
            running: self
                .thread
                .as_ref()
                .is_some_and(|thread| !thread.is_finished()),
        }
    }

    /// Stops the thread (at once, not at the next deadline) and returns its final stats.
    pub fn stop(mut self) -> SenderStats {
        self.shutdown();
        self.stats()
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::SeqCst);
        // An absolute deadline in the past fires at once and wakes the blocked read.
        if let Err(error) = self.shared.timer.set(
            Expiration::OneShot(TimeSpec::new(0, 1)),
            TimerSetTimeFlags::TFD_TIMER_ABSTIME,
        ) {
            tracing::warn!(
                %error,
                "cannot wake the heartbeat sender; it stops at its next deadline"
            );
        }
        if thread.join().is_err() {
            tracing::error!("the heartbeat sender thread panicked");
        }
    }
}

impl Drop for SenderThread {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(shared: &Shared, transmitter: &Transmitter) {
    let realtime = if shared.realtime_requested {
        enter_realtime()
    } else {
        RealtimeStatus::default()
    };
    // Set once, here; a second set cannot happen.
    let _ = shared.realtime.set(realtime);

    let mut behind_log = LogLimiter::default();
    let mut timer_log = LogLimiter::default();
    let mut deadline = clock::monotonic_ns();
    let mut interval = shared.interval_ns.load(Ordering::Relaxed);
    // The interval the periodic timer fires at on the grid of `deadline`, if armed.
    let mut armed = None;
    while shared.sleep_until(deadline, interval, &mut armed, &mut timer_log) {
        transmitter.heartbeat();
        let sent_ns = clock::monotonic_ns();
        shared.ticks.fetch_add(1, Ordering::Relaxed);
        shared
            .max_lateness_ns
            .fetch_max(sent_ns.saturating_sub(deadline), Ordering::Relaxed);
        // A reload may have changed the keepalive: the next sleep re-arms on the new grid.
        interval = shared.interval_ns.load(Ordering::Relaxed);
        let tick = next_tick(deadline, sent_ns, interval);
        if tick.missed > 0 {
            // Expirations of the skipped deadlines may be pending: start the grid afresh.
            armed = None;
            shared.missed.fetch_add(tick.missed, Ordering::Relaxed);
            if let Some(held_back) = behind_log.allow(Instant::now()) {
                tracing::warn!(
                    late_us = sent_ns.saturating_sub(deadline) / 1_000,
                    skipped = tick.missed,
                    held_back,
                    "heartbeat sender fell behind its schedule"
                );
            }
        }
        deadline = tick.next_ns;
    }
}

impl Shared {
    /// Sleeps until `deadline_ns` (CLOCK_MONOTONIC) or a stop request; `false` when stopped.
    /// Unless `armed` says the timer already fires every `interval_ns` on the grid of
    /// `deadline_ns`, first arms it so.
    fn sleep_until(
        &self,
        deadline_ns: u64,
        interval_ns: u64,
        armed: &mut Option<u64>,
        log: &mut LogLimiter,
    ) -> bool {
        // A zero expiration would disarm the timer instead of firing it.
        let at = TimeSpec::from(Duration::from_nanos(deadline_ns.max(1)));
        let arm = || {
            let interval = TimeSpec::from(Duration::from_nanos(interval_ns));
            self.timer.set(
                Expiration::IntervalDelayed(at, interval),
                TimerSetTimeFlags::TFD_TIMER_ABSTIME,
            )
        };
        let on_grid = *armed == Some(interval_ns);
        let slept = if on_grid { Ok(()) } else { arm() }.and_then(|()| {
            *armed = Some(interval_ns);
            // Checked after arming: a stop that re-armed the timer before us is seen
            // here, one that re-arms it after us fires the read below.
            if self.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            self.timer.wait()
        });
        if let Err(error) = slept {
            *armed = None;
            // Keep the heartbeats going without the timerfd; only stop becomes slower.
            if let Some(held_back) = log.allow(Instant::now()) {
                tracing::error!(%error, held_back, "heartbeat timer failed; sleeping without it");
            }
            while let Err(nix::errno::Errno::EINTR) = clock_nanosleep(
                nix::time::ClockId::CLOCK_MONOTONIC,
                ClockNanosleepFlags::TIMER_ABSTIME,
                &at,
            ) {}
        }
        !self.stop.load(Ordering::SeqCst)
    }
}

/// Moves the calling thread to SCHED_FIFO and locks the process's memory, warning once
/// about whatever was not permitted.
fn enter_realtime() -> RealtimeStatus {
    let mut missing = Vec::new();
    let sched_fifo = match make_realtime(SENDER_PRIORITY) {
        Ok(()) => true,
        Err(error) => {
            missing.push(format!("SCHED_FIFO ({error})"));
            false
        }
    };
    let memory_locked = match lock_memory() {
        Ok(()) => true,
        Err(reason) => {
            missing.push(format!("memory lock ({reason})"));
            false
        }
    };
    if missing.is_empty() {
        tracing::info!(
            priority = SENDER_PRIORITY,
            "heartbeat sender runs SCHED_FIFO with memory locked"
        );
    } else {
        tracing::warn!(
            "realtime on, but the heartbeat sender runs without {}",
            missing.join(" and ")
        );
    }
    RealtimeStatus {
        requested: true,
        sched_fifo,
        memory_locked,
    }
}

/// Moves the calling thread to SCHED_FIFO at `priority` (1–99). For the sender this
/// happens inside [`SenderThread`]; the daemon uses it for its decision loop.
pub fn make_realtime(priority: i32) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: pid 0 names the calling thread; `param` is initialised and outlives the
    // call, which only reads it.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `mlockall(MCL_CURRENT | MCL_FUTURE)`, but only when locking is unlimited: under a finite
/// `RLIMIT_MEMLOCK`, `MCL_FUTURE` would make later allocations fail once the limit is hit.
fn lock_memory() -> Result<(), String> {
    let unlimited =
        getrlimit(Resource::RLIMIT_MEMLOCK).is_ok_and(|(soft, _)| soft == libc::RLIM_INFINITY);
    let capable = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| has_effective_capability(&status, CAP_IPC_LOCK))
        .unwrap_or(false);
    if !unlimited && !capable {
        return Err("no CAP_IPC_LOCK and RLIMIT_MEMLOCK is limited".into());
    }
    mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE).map_err(|e| e.to_string())
}

/// Whether the `CapEff:` line of a `/proc/<pid>/status` text has capability `cap`.
fn has_effective_capability(status: &str, cap: u32) -> Option<bool> {
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?
        .trim();
    let bits = u64::from_str_radix(hex, 16).ok()?;
    Some(cap < 64 && bits & (1u64 << cap) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthKey, AuthKeys, AuthMethod, Link, LinkKind, Origin, Secret};
    use crate::transport::Advert;
    use crate::wire::{Authenticator, Header};
    use hb_common::wire::NodeState;

    #[test]
    fn reads_effective_capabilities() {
        let status = "Name:\thb-agent\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(has_effective_capability(status, CAP_IPC_LOCK), Some(true));
        let without = "CapEff:\t0000000000000000\n";
        assert_eq!(has_effective_capability(without, CAP_IPC_LOCK), Some(false));
        let only_ipc_lock = format!("CapEff:\t{:016x}\n", 1u64 << 14);
        assert_eq!(
            has_effective_capability(&only_ipc_lock, CAP_IPC_LOCK),
            Some(true)
        );
        assert_eq!(
            has_effective_capability("CapEff:\tzz\n", CAP_IPC_LOCK),
            None
        );
        assert_eq!(has_effective_capability("Name:\tx\n", CAP_IPC_LOCK), None);
    }

    fn transmitter() -> Arc<Transmitter> {
        let keys = AuthKeys {
            active: 1,
            keys: vec![(
                1,
                AuthKey {
                    method: AuthMethod::Crc,
                    secret: Secret(Vec::new()),
                },
            )],
        };
        let link = Link {
            // Missing interface: each tick is counted as a link error, which is all this
            // test needs to see the ticks.
            iface: "hb-nosuch1".into(),
            port: 694,
            kind: LinkKind::Bcast,
            origin: Origin {
                file: "ha.cf".into(),
                line: 1,
            },
        };
        let header = Header {
            cluster_id: 1,
            node_id: 2,
            generation: 3,
            keepalive_us: 20_000,
        };
        let advert = Advert {
            state: NodeState::Active,
            held: 0,
            failed: 0,
        };
        Arc::new(
            Transmitter::new(header, Authenticator::new(&keys).unwrap(), &[link], advert).unwrap(),
        )
    }

    #[test]
    fn ticks_at_the_keepalive_rate_and_stops_at_once() {
        let tx = transmitter();
        let keepalive = Duration::from_millis(20);
        let sender = SenderThread::spawn(Arc::clone(&tx), keepalive, false).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let running = sender.stats();
        assert!(running.running);
        let started = Instant::now();
        let stopped = sender.stop();
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "stop took {:?}",
            started.elapsed()
        );
        assert!(!stopped.running);
        // 500 ms / 20 ms = 25, plus the immediate first one; generous for a loaded machine.
        assert!((10..=30).contains(&stopped.ticks), "{stopped:?}");
        assert_eq!(tx.last_seq(), stopped.ticks);
        assert_eq!(tx.stats().links[0].errors, stopped.ticks);
        assert_eq!(stopped.realtime, RealtimeStatus::default());
    }

    #[test]
    fn stop_does_not_wait_for_a_long_keepalive() {
        let sender = SenderThread::spawn(transmitter(), Duration::from_secs(30), false).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        let stats = sender.stop();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "stop took {:?}",
            started.elapsed()
        );
        assert_eq!(stats.ticks, 1);
        assert_eq!(stats.missed_ticks, 0);
    }

    #[test]
    fn drop_stops_the_thread() {
        let tx = transmitter();
        let sender = SenderThread::spawn(Arc::clone(&tx), Duration::from_millis(5), false).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        drop(sender);
        let after_drop = tx.last_seq();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(tx.last_seq(), after_drop);
        assert_eq!(Arc::strong_count(&tx), 1);
    }

    /// Scheduling policy (field 41 of `stat`) of this process's thread named `name`.
    fn thread_policy(name: &str) -> Option<u32> {
        for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim_end() != name {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            let after_comm = &stat[stat.rfind(')')? + 1..];
            // Fields after the command name start at field 3 (state).
            return after_comm.split_whitespace().nth(41 - 3)?.parse().ok();
        }
        None
    }

    #[test]
    fn realtime_sender_runs_sched_fifo_when_permitted() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: not root");
            return;
        }
        let sender = SenderThread::spawn(transmitter(), Duration::from_millis(50), true).unwrap();
        std::thread::sleep(Duration::from_millis(120));
        let policy = thread_policy("hb-sender").expect("the sender thread is listed");
        let stats = sender.stop();
        assert!(stats.realtime.requested);
        // Root may still be refused (a container without CAP_SYS_NICE): then the status
        // must say so. Either way it must match what the kernel reports.
        assert_eq!(
            stats.realtime.sched_fifo,
            policy == libc::SCHED_FIFO as u32,
            "{stats:?}"
        );
        assert!(stats.ticks >= 2, "{stats:?}");
    }

    #[test]
    fn make_realtime_changes_the_calling_thread_only() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: not root");
            return;
        }
        let outcome = std::thread::Builder::new()
            .name("hb-rt-probe".into())
            .spawn(|| {
                let result = make_realtime(1).map_err(|e| e.to_string());
                (result, thread_policy("hb-rt-probe"))
            })
            .unwrap()
            .join()
            .unwrap();
        match outcome {
            (Ok(()), policy) => assert_eq!(policy, Some(libc::SCHED_FIFO as u32)),
            (Err(error), policy) => assert_eq!(policy, Some(libc::SCHED_OTHER as u32), "{error}"),
        }
    }

    #[test]
    fn zero_keepalive_is_refused() {
        assert!(matches!(
            SenderThread::spawn(transmitter(), Duration::ZERO, false),
            Err(TransportError::ZeroKeepalive)
        ));
    }
}
