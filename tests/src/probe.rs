//! The benchmark's client: HTTP `GET /` to the service address from inside a lab namespace at
//! a fixed pace, every request recorded with its start, its end and the node that answered,
//! and the outage around an event read from that record ([`event_outage`]).
//!
//! Pacing: request `k` is due at `t0 + k × interval` on an absolute schedule, so a slow
//! request never shifts the later ones. A request may take up to `timeout`, which is longer
//! than the interval (2 ms and 5 ms in the benchmark), so requests go round-robin to
//! `ceil(timeout / interval) + 1` worker threads: a worker's next request is due
//! `workers × interval` after its previous one, after that one has ended, and the pace holds
//! while every request is timing out (during an outage). A worker that could not run for a
//! whole round (a starved machine) skips the slots it missed rather than bunching them up;
//! [`Prober::skipped`] counts them.
//!
//! The workers run at the lowest real-time priority (`SCHED_FIFO` 1) when allowed: the
//! measuring instrument is then not delayed by ordinary load (a build, `stress-ng`), while
//! the HA daemons under test, all real-time at that level or above, still run first.
//!
//! Every request is a new TCP connection (`Connection: close`), so each one tests the
//! address as a new client would: the ARP entry, the holder's listening socket, the path.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

use crate::addr::require_test_address;
use crate::error::{LabError, Result};
use crate::lab::Netns;

/// What to probe and how often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSettings {
    /// The service address (test range only).
    pub target: SocketAddr,
    /// From one request's due time to the next one's.
    pub interval: Duration,
    /// Connect, request and complete answer, all within this.
    pub timeout: Duration,
}

impl ProbeSettings {
    /// Worker threads needed so that each worker's request has ended before its next is due.
    pub fn workers(&self) -> usize {
        let interval = self.interval.as_nanos().max(1);
        usize::try_from(self.timeout.as_nanos().div_ceil(interval))
            .unwrap_or(usize::MAX)
            .saturating_add(1)
    }
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// HTTP 200 with this body, trimmed: the name of the node that answered.
    Served(String),
    /// No answer from a node, and why.
    Failed(Failure),
}

/// Why a request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// No connection within the timeout (SYN unanswered: nobody holds the address, or the
    /// client's ARP entry points at a node that does not).
    ConnectTimeout,
    /// The connection was refused or reset, or the network unreachable.
    ConnectError,
    /// Connected, but no complete answer within the timeout.
    AnswerTimeout,
    /// The connection broke during the exchange, or the answer was not HTTP 200.
    BadAnswer,
}

impl Failure {
    pub fn key(self) -> &'static str {
        match self {
            Failure::ConnectTimeout => "connect_timeout",
            Failure::ConnectError => "connect_error",
            Failure::AnswerTimeout => "answer_timeout",
            Failure::BadAnswer => "bad_answer",
        }
    }
}

/// One request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSample {
    /// Its place in the schedule (due at `t0 + seq × interval`).
    pub seq: u64,
    /// When it started (the connect).
    pub start: Instant,
    /// When the answer was complete or the request gave up.
    pub end: Instant,
    pub outcome: ProbeOutcome,
}

impl ProbeSample {
    /// Whether `node` answered it.
    pub fn served_by(&self, node: &str) -> bool {
        matches!(&self.outcome, ProbeOutcome::Served(name) if name == node)
    }

    pub fn failed(&self) -> bool {
        matches!(self.outcome, ProbeOutcome::Failed(_))
    }
}

/// SCHED_FIFO priority of the probe's workers.
pub const PROBE_RT_PRIORITY: i32 = 1;

/// A running prober; it stops (and joins its threads) when dropped.
pub struct Prober {
    settings: ProbeSettings,
    realtime: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<ProbeSample>>>,
    skipped: Arc<AtomicU64>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prober")
            .field("settings", &self.settings)
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl Prober {
    /// Starts probing `settings.target` from inside `netns` (each worker thread joins the
    /// namespace; the process stays where it is).
    pub fn start(netns: &Netns, settings: ProbeSettings) -> Result<Prober> {
        require_test_address(settings.target.ip())?;
        if settings.interval.is_zero() || settings.timeout.is_zero() {
            return Err(LabError::Cluster(
                "probe interval and timeout must be above zero".into(),
            ));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let skipped = Arc::new(AtomicU64::new(0));
        let realtime = Arc::new(AtomicBool::new(true));
        let count = settings.workers();
        // Far enough ahead that every worker has joined the namespace before its first slot.
        let t0 = Instant::now() + Duration::from_millis(20);
        let mut prober = Prober {
            settings,
            stop: Arc::clone(&stop),
            samples: Arc::clone(&samples),
            skipped: Arc::clone(&skipped),
            realtime: Arc::clone(&realtime),
            workers: Vec::with_capacity(count),
        };
        for index in 0..count {
            let namespace = File::open(netns.path())
                .map_err(|err| LabError::io("opening", netns.path(), err))?;
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let worker = Worker {
                settings,
                first_seq: index as u64,
                stride: count as u64,
                t0,
                stop: Arc::clone(&stop),
                samples: Arc::clone(&samples),
                skipped: Arc::clone(&skipped),
            };
            let name = netns.name().to_owned();
            let realtime = Arc::clone(&realtime);
            let handle = std::thread::Builder::new()
                .name(format!("probe-{index}"))
                .spawn(move || {
                    let joined = setns(&namespace, CloneFlags::CLONE_NEWNET)
                        .map_err(|err| format!("setns into {name}: {err}"));
                    drop(namespace);
                    if make_realtime().is_err() {
                        realtime.store(false, Ordering::Relaxed);
                    }
                    let ok = joined.is_ok();
                    // The receiver waits for this message; it only goes away if start failed.
                    let _ = ready_tx.send(joined);
                    if ok {
                        worker.run();
                    }
                })
                .map_err(|err| LabError::Cluster(format!("starting a probe thread: {err}")))?;
            prober.workers.push(handle);
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => {
                    return Err(LabError::InNetns {
                        netns: netns.name().to_owned(),
                        reason,
                    })
                }
                Err(_) => {
                    return Err(LabError::Cluster(
                        "a probe thread ended before joining the namespace".into(),
                    ))
                }
            }
        }
        Ok(prober)
    }

    pub fn settings(&self) -> &ProbeSettings {
        &self.settings
    }

    /// Every request completed since the last call, ordered by start time.
    pub fn take(&self) -> Vec<ProbeSample> {
        let mut taken =
            std::mem::take(&mut *self.samples.lock().unwrap_or_else(PoisonError::into_inner));
        taken.sort_by_key(|sample| (sample.start, sample.seq));
        taken
    }

    /// Whether every worker got its real-time priority.
    pub fn realtime(&self) -> bool {
        self.realtime.load(Ordering::Relaxed)
    }

    /// Slots skipped so far because a worker could not run in time.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Stops the workers and waits for them (each ends within one timeout).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers.drain(..) {
            // A worker only panics on a bug in this module; there is nothing left to clean up.
            let _ = worker.join();
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Worker {
    settings: ProbeSettings,
    first_seq: u64,
    stride: u64,
    t0: Instant,
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<ProbeSample>>>,
    skipped: Arc<AtomicU64>,
}

impl Worker {
    fn run(self) {
        let interval = self.settings.interval;
        let due_at =
            |seq: u64| self.t0 + interval.saturating_mul(u32::try_from(seq).unwrap_or(u32::MAX));
        let mut seq = self.first_seq;
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let due = due_at(seq);
            if now < due {
                std::thread::sleep(due - now);
            } else if now.duration_since(due) >= interval.saturating_mul(self.stride as u32) {
                // Starved for a whole round: resume at the next slot of ours still ahead.
                let behind = now.duration_since(due).as_nanos() / interval.as_nanos().max(1);
                let rounds = u64::try_from(behind).unwrap_or(u64::MAX) / self.stride + 1;
                self.skipped.fetch_add(rounds, Ordering::Relaxed);
                seq = seq.saturating_add(rounds.saturating_mul(self.stride));
                continue;
            }
            let start = Instant::now();
            let outcome = request(self.settings.target, start + self.settings.timeout);
            let sample = ProbeSample {
                seq,
                start,
                end: Instant::now(),
                outcome,
            };
            self.samples
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(sample);
            seq = seq.saturating_add(self.stride);
        }
    }
}

/// Moves the calling thread to `SCHED_FIFO` at [`PROBE_RT_PRIORITY`].
fn make_realtime() -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: PROBE_RT_PRIORITY,
    };
    // SAFETY: sched_setscheduler only reads `param` during the call; pid 0 is the calling
    // thread, which is all it changes.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One `GET /` over a new connection, all of it before `deadline`.
fn request(target: SocketAddr, deadline: Instant) -> ProbeOutcome {
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    };
    let Some(connect_time) = left() else {
        return ProbeOutcome::Failed(Failure::ConnectTimeout);
    };
    let mut stream = match TcpStream::connect_timeout(&target, connect_time) {
        Ok(stream) => stream,
        Err(err) if matches!(err.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
            return ProbeOutcome::Failed(Failure::ConnectTimeout)
        }
        Err(_) => return ProbeOutcome::Failed(Failure::ConnectError),
    };
    let request = format!("GET / HTTP/1.0\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    if stream.set_nodelay(true).is_err() || stream.write_all(request.as_bytes()).is_err() {
        return ProbeOutcome::Failed(Failure::BadAnswer);
    }
    let mut answer = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let Some(wait) = left() else {
            return ProbeOutcome::Failed(Failure::AnswerTimeout);
        };
        if stream.set_read_timeout(Some(wait)).is_err() {
            return ProbeOutcome::Failed(Failure::BadAnswer);
        }
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) if answer.len() + n <= MAX_ANSWER => answer.extend_from_slice(&chunk[..n]),
            Ok(_) => return ProbeOutcome::Failed(Failure::BadAnswer),
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            Err(err) if matches!(err.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
                return ProbeOutcome::Failed(Failure::AnswerTimeout)
            }
            Err(_) => return ProbeOutcome::Failed(Failure::BadAnswer),
        }
    }
    match parse_answer(&answer) {
        Some(node) => ProbeOutcome::Served(node),
        None => ProbeOutcome::Failed(Failure::BadAnswer),
    }
}

/// The lab's pages are a node name; anything bigger is not one of them.
const MAX_ANSWER: usize = 16 * 1024;

/// The trimmed body of an `HTTP/1.x 200` answer.
fn parse_answer(answer: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(answer).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.lines().next()?;
    let mut words = status.split_whitespace();
    let ok = words.next()?.starts_with("HTTP/1.") && words.next()? == "200";
    ok.then(|| body.trim().to_owned())
}

/// The service as the client saw it around one event (a fault, a return, a stop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventOutage {
    /// How long the client had no service between the event and the recovery: the sum of
    /// the gaps. For one clean failover this is the span from the first failed request to
    /// the new holder's first answer.
    pub outage: Duration,
    /// The longest gap, and how many there were (more than one: a flap, or a stray failed
    /// request while a node still served).
    pub longest_gap: Duration,
    pub gaps: usize,
    /// Failed requests from the event to the recovery.
    pub failed_requests: usize,
    /// Requests looked at (those that ended after the event and started before `until`).
    pub requests: usize,
    /// Start of the first failed request after the event (or the event, if that request was
    /// already under way).
    pub first_failure: Option<Instant>,
    /// Start of the new holder's final run of answers: from here on it served every request.
    pub recovered_at: Instant,
    /// From the event to `recovered_at`.
    pub time_to_recovery: Duration,
    /// Start of the new holder's first answer (before `recovered_at` if service flapped).
    pub first_answer_at: Instant,
    /// Requests answered by another node between the event and the recovery (the old
    /// holder still serving, or a flap back).
    pub served_by_others: usize,
}

/// Reads the outage caused by an event at `event` from `samples` (ordered by start, as
/// [`Prober::take`] returns them), given the node expected to serve afterwards.
///
/// Precisely: the window holds the requests that ended at or after `event` and started
/// before `until`. The *recovery* is the first request of the window's final run of
/// requests answered by `new_holder`. A *gap* is an unbroken run of failed requests before
/// the recovery; it lasts from the start of its first request (or from `event`, if that
/// request was already under way) to the start of the next request that was answered. The
/// *outage* is the sum of the gaps: the time the client had no service. For a clean
/// failover it is exactly the span from the first failed request to the new holder's first
/// answer; a service that moved without a failed request had none; and a flap (the old
/// holder answering again in between, then another gap) counts every gap, while the time a
/// node did answer is not counted. `None` when the window does not end with answers from
/// `new_holder`: the service had not settled there by `until`.
pub fn event_outage(
    samples: &[ProbeSample],
    event: Instant,
    until: Instant,
    new_holder: &str,
) -> Option<EventOutage> {
    let window: Vec<&ProbeSample> = samples
        .iter()
        .filter(|sample| sample.end >= event && sample.start < until)
        .collect();
    if !window.last()?.served_by(new_holder) {
        return None;
    }
    let recovery_index = window
        .iter()
        .rposition(|sample| !sample.served_by(new_holder))
        .map_or(0, |index| index + 1);
    let recovery = window[recovery_index];
    let before = &window[..recovery_index];
    let mut outage = Duration::ZERO;
    let mut longest_gap = Duration::ZERO;
    let mut gaps = 0;
    let mut gap_start: Option<Instant> = None;
    for sample in before.iter().chain(std::iter::once(&recovery)) {
        match (sample.failed(), gap_start) {
            (true, None) => gap_start = Some(sample.start.max(event)),
            (false, Some(start)) => {
                let gap = sample.start.saturating_duration_since(start);
                outage += gap;
                longest_gap = longest_gap.max(gap);
                gaps += 1;
                gap_start = None;
            }
            _ => {}
        }
    }
    let first_answer_at = window
        .iter()
        .find(|sample| sample.served_by(new_holder))
        .map_or(recovery.start, |sample| sample.start);
    Some(EventOutage {
        outage,
        longest_gap,
        gaps,
        failed_requests: before.iter().filter(|sample| sample.failed()).count(),
        requests: window.len(),
        first_failure: before
            .iter()
            .find(|sample| sample.failed())
            .map(|sample| sample.start.max(event)),
        recovered_at: recovery.start,
        time_to_recovery: recovery.start.saturating_duration_since(event),
        first_answer_at,
        served_by_others: before.iter().filter(|sample| !sample.failed()).count(),
    })
}

/// Whether the requests that started in `[since, upto)` number at least `min_requests` and
/// were all answered by `node`: the service is steady there.
pub fn steady_on(
    samples: &[ProbeSample],
    node: &str,
    since: Instant,
    upto: Instant,
    min_requests: usize,
) -> bool {
    let mut count = 0;
    for sample in samples
        .iter()
        .filter(|sample| sample.start >= since && sample.start < upto)
    {
        if !sample.served_by(node) {
            return false;
        }
        count += 1;
    }
    count >= min_requests
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A request every 2 ms from `t0`; `pattern` gives each one's outcome: a node name or
    /// `"-"` for failed. Failed requests last 5 ms, answers 1 ms.
    fn record(t0: Instant, pattern: &[&str]) -> Vec<ProbeSample> {
        pattern
            .iter()
            .enumerate()
            .map(|(index, who)| {
                let start = t0 + 2 * MS * index as u32;
                let (outcome, took) = match *who {
                    "-" => (ProbeOutcome::Failed(Failure::ConnectTimeout), 5 * MS),
                    name => (ProbeOutcome::Served(name.to_owned()), MS),
                };
                ProbeSample {
                    seq: index as u64,
                    start,
                    end: start + took,
                    outcome,
                }
            })
            .collect()
    }

    #[test]
    fn outage_runs_from_the_first_failure_to_the_new_holders_first_answer() {
        let t0 = Instant::now();
        let samples = record(
            t0,
            &["lb1", "lb1", "lb1", "-", "-", "-", "-", "lb2", "lb2", "lb2"],
        );
        // Fault at 5 ms: request 3 (starts 6 ms) is the first failure, request 7 (14 ms)
        // the first answer of lb2.
        let outage = event_outage(&samples, t0 + 5 * MS, t0 + 100 * MS, "lb2").unwrap();
        assert_eq!(outage.outage, 8 * MS);
        assert_eq!((outage.gaps, outage.longest_gap), (1, 8 * MS));
        assert_eq!(outage.failed_requests, 4);
        assert_eq!(outage.recovered_at, t0 + 14 * MS);
        assert_eq!(outage.first_answer_at, t0 + 14 * MS);
        assert_eq!(outage.time_to_recovery, 9 * MS);
        assert_eq!(outage.first_failure, Some(t0 + 6 * MS));
        // Request 2 (4–5 ms) ended at the event and was answered by lb1.
        assert_eq!(outage.served_by_others, 1);
    }

    #[test]
    fn a_failure_under_way_at_the_event_starts_the_outage_at_the_event() {
        let t0 = Instant::now();
        let samples = record(t0, &["lb1", "-", "-", "lb2", "lb2"]);
        // Request 1 started at 2 ms, the fault came at 3 ms while it was under way.
        let outage = event_outage(&samples, t0 + 3 * MS, t0 + 100 * MS, "lb2").unwrap();
        assert_eq!(outage.first_failure, Some(t0 + 3 * MS));
        assert_eq!(outage.outage, 3 * MS);
        assert_eq!(outage.failed_requests, 2);
    }

    #[test]
    fn a_stray_failure_while_the_old_holder_serves_counts_only_its_own_gap() {
        let t0 = Instant::now();
        let samples = record(t0, &["lb1", "-", "lb1", "lb1", "-", "-", "lb2", "lb2"]);
        let outage = event_outage(&samples, t0, t0 + 100 * MS, "lb2").unwrap();
        // 2 ms for the stray failure, 4 ms for the real gap; lb1's answers in between are
        // service, not outage.
        assert_eq!(outage.outage, 6 * MS);
        assert_eq!((outage.gaps, outage.longest_gap), (2, 4 * MS));
        assert_eq!(outage.first_failure, Some(t0 + 2 * MS));
        assert_eq!(outage.failed_requests, 3);
        assert_eq!(outage.served_by_others, 3);
    }

    #[test]
    fn a_flap_counts_every_gap_until_the_final_run() {
        let t0 = Instant::now();
        let samples = record(t0, &["-", "lb2", "-", "-", "lb1", "-", "lb2", "lb2"]);
        let outage = event_outage(&samples, t0, t0 + 100 * MS, "lb2").unwrap();
        assert_eq!(outage.gaps, 3);
        assert_eq!(outage.outage, (2 + 4 + 2) * MS);
        assert_eq!(outage.first_answer_at, t0 + 2 * MS);
        assert_eq!(outage.recovered_at, t0 + 12 * MS);
        assert_eq!(outage.failed_requests, 4);
        assert_eq!(outage.served_by_others, 2);
    }

    #[test]
    fn a_switch_without_failures_is_no_outage() {
        let t0 = Instant::now();
        let samples = record(t0, &["lb2", "lb2", "lb1", "lb1", "lb1"]);
        let outage = event_outage(&samples, t0, t0 + 100 * MS, "lb1").unwrap();
        assert_eq!(outage.outage, Duration::ZERO);
        assert_eq!(outage.gaps, 0);
        assert_eq!(outage.failed_requests, 0);
        assert_eq!(outage.first_failure, None);
        assert_eq!(outage.time_to_recovery, 4 * MS);
        assert_eq!(outage.served_by_others, 2);
    }

    #[test]
    fn no_recovery_within_the_window_is_none() {
        let t0 = Instant::now();
        let samples = record(t0, &["lb1", "-", "-", "-"]);
        assert_eq!(event_outage(&samples, t0, t0 + 100 * MS, "lb2"), None);
        let samples = record(t0, &["lb1", "-", "lb1"]);
        assert_eq!(event_outage(&samples, t0, t0 + 100 * MS, "lb2"), None);
        assert_eq!(event_outage(&[], t0, t0 + 100 * MS, "lb2"), None);
        // Requests starting at or after `until` are outside the window.
        let samples = record(t0, &["-", "-", "lb2"]);
        assert_eq!(event_outage(&samples, t0, t0 + 4 * MS, "lb2"), None);
    }

    #[test]
    fn steadiness_needs_enough_answers_all_from_the_node() {
        let t0 = Instant::now();
        let samples = record(t0, &["-", "lb1", "lb1", "lb1", "lb1"]);
        assert!(steady_on(&samples, "lb1", t0 + MS, t0 + 100 * MS, 4));
        assert!(!steady_on(&samples, "lb1", t0 + MS, t0 + 100 * MS, 5));
        assert!(!steady_on(&samples, "lb1", t0, t0 + 100 * MS, 1));
        assert!(!steady_on(&samples, "lb2", t0 + MS, t0 + 100 * MS, 1));
    }

    #[test]
    fn reads_the_node_from_an_answer() {
        let answer = b"HTTP/1.1 200 OK\r\nServer: nginx\r\n\r\nlb2\n";
        assert_eq!(parse_answer(answer), Some("lb2".to_owned()));
        assert_eq!(parse_answer(b"HTTP/1.1 404 Not Found\r\n\r\nlb2\n"), None);
        assert_eq!(parse_answer(b"HTTP/1.1 200 OK\r\n"), None);
        assert_eq!(parse_answer(b"SSH-2.0\r\n\r\n"), None);
    }

    #[test]
    fn workers_cover_the_timeout() {
        let settings = |interval_ms, timeout_ms| ProbeSettings {
            target: "198.18.1.10:80".parse().unwrap(),
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(timeout_ms),
        };
        assert_eq!(settings(2, 5).workers(), 4);
        assert_eq!(settings(2, 4).workers(), 3);
        assert_eq!(settings(10, 5).workers(), 2);
    }
}
