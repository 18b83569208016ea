//! The scenarios, identical for every system: what is done, what is waited for, what is
//! measured.
//!
//! * **Node death**: lb1 (the holder) loses all its switch ports at once; the outage lasts
//!   until lb2 serves (see [`event_outage`] for the exact definition).
//! * **Failback after return**: lb1's ports come back (its daemon kept running, cut off); the
//!   outage, if any, until lb1 serves again.
//! * **Clean stop**: SIGTERM to lb1's daemon, as its init script does; outage until lb2 serves.
//! * **Failback after restart**: lb1's daemon is started again; outage until lb1 serves.
//! * **Stability windows**: both nodes healthy for a window idle, a window with
//!   `stress-ng --cpu 2` saturating both cores, and a window adding memory churn
//!   (`--vm 1 --vm-bytes 20%`); the VIP's movements are recorded by
//!   `ip monitor address` on both nodes (every change, however brief), the daemons' CPU time
//!   from `/proc/<pid>/stat`, and for hb its kernel-to-agent delay.
//!
//! Before every trial the cluster is *settled*: the VIP on lb1 only and the client served by
//! lb1 without a failure for [`Plan::settle`].

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hb_tests::cluster::VIP;
use hb_tests::probe::{event_outage, steady_on, Failure, ProbeOutcome, ProbeSample};
use serde_json::{json, Value};

use super::agent_stats::{interarrival, largest_gap, GapBound, Histogram};
use super::testbed::{HbOptions, Setting, Testbed, NODES, PROBE_INTERVAL, PROBE_TIMEOUT};
use super::Progress;

/// How much of everything to do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub quick: bool,
    pub node_death_trials: usize,
    pub clean_stop_trials: usize,
    /// Length of each stability window (idle, then under stress).
    pub window: Duration,
    /// How long the client must be served by lb1 without a failure before a trial.
    pub settle: Duration,
    /// How long the new holder must serve without a failure to end an event.
    pub steady: Duration,
    /// Longest wait for an event to end or the cluster to settle.
    pub event_timeout: Duration,
    /// Longest wait for the cluster to return to its starting state before a trial.
    pub settle_timeout: Duration,
    /// How long lb1 stays away (ports down, daemon stopped) at least, before it returns:
    /// the takeover's gratuitous ARP rounds are over by then, as after any real failure.
    pub hold_down: Duration,
    /// hb's profile for the outage trials: the fast profile.
    pub hb_profile: Setting,
    pub hb_ladder: Vec<Setting>,
    pub keepalived_ladder: Vec<Setting>,
    /// Tried fastest first; the first stable one ends the ladder (only its fastest stable
    /// setting is wanted).
    pub heartbeat_ladder: Vec<Setting>,
}

const fn hb(keepalive_ms: u32) -> Setting {
    Setting::Hb {
        keepalive_ms,
        deadtime_ms: 4 * keepalive_ms,
    }
}

const fn heartbeat(keepalive_ms: u32) -> Setting {
    Setting::Heartbeat {
        keepalive_ms,
        deadtime_ms: 4 * keepalive_ms,
    }
}

const fn keepalived(advert_int_cs: u32) -> Setting {
    Setting::Keepalived { advert_int_cs }
}

impl Plan {
    /// The real benchmark (its failover part takes about 45 minutes on 2 cores).
    pub fn full() -> Plan {
        Plan {
            quick: false,
            node_death_trials: 20,
            clean_stop_trials: 10,
            window: Duration::from_secs(60),
            settle: Duration::from_secs(2),
            steady: Duration::from_millis(500),
            event_timeout: Duration::from_secs(120),
            settle_timeout: Duration::from_secs(60),
            hold_down: Duration::from_secs(2),
            hb_profile: hb(5),
            hb_ladder: vec![hb(2), hb(5), hb(10), hb(20)],
            keepalived_ladder: vec![keepalived(1), keepalived(2), keepalived(3), keepalived(5)],
            heartbeat_ladder: vec![heartbeat(10), heartbeat(20), heartbeat(50)],
        }
    }

    /// A sanity run of a few minutes: the fastest rung of each ladder (for hb also its fast
    /// profile, so both hb series run), short windows, few trials. Its numbers are not the
    /// benchmark's.
    pub fn quick() -> Plan {
        Plan {
            quick: true,
            node_death_trials: 3,
            clean_stop_trials: 2,
            window: Duration::from_secs(5),
            settle: Duration::from_secs(1),
            steady: Duration::from_millis(300),
            event_timeout: Duration::from_secs(40),
            settle_timeout: Duration::from_secs(30),
            hold_down: Duration::from_secs(1),
            hb_profile: hb(5),
            hb_ladder: vec![hb(2), hb(5)],
            keepalived_ladder: vec![keepalived(1)],
            heartbeat_ladder: vec![heartbeat(10)],
        }
    }
}

// ------------------------------------------------------------------------------ trials

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    NodeDeath,
    FailbackAfterReturn,
    CleanStop,
    FailbackAfterRestart,
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [
        Scenario::NodeDeath,
        Scenario::FailbackAfterReturn,
        Scenario::CleanStop,
        Scenario::FailbackAfterRestart,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Scenario::NodeDeath => "node_death",
            Scenario::FailbackAfterReturn => "failback_after_return",
            Scenario::CleanStop => "clean_stop",
            Scenario::FailbackAfterRestart => "failback_after_restart",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Scenario::NodeDeath => "Node death (lb1's switch ports down)",
            Scenario::FailbackAfterReturn => "Failback after lb1's ports return",
            Scenario::CleanStop => "Clean stop (SIGTERM to lb1's daemon)",
            Scenario::FailbackAfterRestart => "Failback after lb1's daemon restarts",
        }
    }

    /// The node that should serve once the event is over.
    fn new_holder(self) -> usize {
        match self {
            Scenario::NodeDeath | Scenario::CleanStop => 1,
            Scenario::FailbackAfterReturn | Scenario::FailbackAfterRestart => 0,
        }
    }
}

/// What the client saw of one event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventMeasure {
    /// The outage; for a censored measure, its lower bound.
    pub outage_ms: f64,
    pub failed_requests: usize,
    pub requests: usize,
    /// From the event to the new holder's first answer (`None`: censored).
    pub time_to_recovery_ms: Option<f64>,
    /// From the first failed request after the event to the recovery: equals the outage for
    /// a clean failover; larger when a node answered in between.
    pub first_failure_to_recovery_ms: Option<f64>,
    pub longest_gap_ms: f64,
    pub gaps: usize,
    pub served_by_others: usize,
    /// The service had not recovered when the wait ended: `outage_ms` is a lower bound.
    pub censored: bool,
}

/// One trial of one scenario.
#[derive(Debug, Clone)]
pub struct TrialRecord {
    pub setting: Setting,
    pub scenario: Scenario,
    pub trial: usize,
    /// The measure, or why there is none.
    pub outcome: std::result::Result<EventMeasure, String>,
    /// The requests around the event: `[start ms after the event, duration ms, outcome]`,
    /// outcome as [`outcome_code`].
    pub requests: Vec<[f64; 3]>,
}

impl TrialRecord {
    pub fn to_json(&self) -> Value {
        let mut value = json!({
            "system": self.setting.system().name(),
            "setting": self.setting.label(),
            "scenario": self.scenario.key(),
            "trial": self.trial,
            "requests": self.requests,
        });
        match &self.outcome {
            Ok(m) => {
                value["outage_ms"] = json!(m.outage_ms);
                value["failed_requests"] = json!(m.failed_requests);
                value["requests_in_window"] = json!(m.requests);
                value["time_to_recovery_ms"] = json!(m.time_to_recovery_ms);
                value["first_failure_to_recovery_ms"] = json!(m.first_failure_to_recovery_ms);
                value["longest_gap_ms"] = json!(m.longest_gap_ms);
                value["gaps"] = json!(m.gaps);
                value["served_by_other_node"] = json!(m.served_by_others);
                value["censored"] = json!(m.censored);
            }
            Err(error) => value["error"] = json!(error),
        }
        value
    }
}

/// Consecutive failed trials after which a series is abandoned (the system is broken, and
/// every further trial would only wait for its timeout).
const MAX_CONSECUTIVE_FAILURES: usize = 3;

/// Fresh starts of a system's testbed after it did not return to its starting state by
/// itself, after which its trials are abandoned.
const MAX_RESTARTS: usize = 5;

/// Node-death and clean-stop trials for `setting`, and notes on what went wrong. Every trial
/// starts from a settled cluster; when the cluster does not settle by itself after a trial
/// (a split brain that does not heal, say), that is noted and both daemons are started
/// afresh in a new testbed, as an operator would.
pub fn outage_series(
    setting: Setting,
    plan: &Plan,
    progress: &mut Progress,
) -> (Vec<TrialRecord>, Vec<String>) {
    let mut records = Vec::new();
    let mut notes = Vec::new();
    let label = format!("bench-{}-trials", setting.system().name().to_lowercase());
    let mut testbed = match start_testbed(setting, &label, plan, progress) {
        Ok(testbed) => testbed,
        Err(err) => {
            let note = format!("{setting}: could not start: {err:#}");
            progress.say(first_line(&note));
            notes.push(note);
            return (records, notes);
        }
    };
    let series = [
        (
            plan.node_death_trials,
            Scenario::NodeDeath,
            Scenario::FailbackAfterReturn,
        ),
        (
            plan.clean_stop_trials,
            Scenario::CleanStop,
            Scenario::FailbackAfterRestart,
        ),
    ];
    let mut restarts = 0;
    for (trials, first, second) in series {
        let mut consecutive_failures = 0;
        let mut trial = 1;
        while trial <= trials {
            if let Err(err) = settle(&mut testbed, plan) {
                restarts += 1;
                let note = format!(
                    "{setting}: before {} trial {trial}, the cluster did not return to lb1 \
                     alone by itself ({}); both daemons were started afresh",
                    first.key().replace('_', " "),
                    first_line(&format!("{err:#}"))
                );
                progress.say(&note);
                notes.push(note);
                if restarts > MAX_RESTARTS {
                    notes.push(format!(
                        "{setting}: more than {MAX_RESTARTS} fresh starts; the remaining \
                         trials were abandoned"
                    ));
                    return (records, notes);
                }
                drop(testbed);
                testbed = match start_testbed(setting, &label, plan, progress) {
                    Ok(testbed) => testbed,
                    Err(err) => {
                        notes.push(format!("{setting}: could not start again: {err:#}"));
                        return (records, notes);
                    }
                };
                continue;
            }
            let pair = trial_pair(&mut testbed, plan, first, second, trial);
            let failed = pair.iter().any(|record| record.outcome.is_err());
            progress.say(&format!(
                "{} {} {trial}/{trials}: {}; {}",
                setting.system(),
                first.key().replace('_', " "),
                describe(&pair[0]),
                describe(&pair[1]).replace(
                    "outage",
                    &format!("{} outage", second.key().replace('_', " "))
                ),
            ));
            records.extend(pair);
            trial += 1;
            consecutive_failures = if failed { consecutive_failures + 1 } else { 0 };
            if consecutive_failures >= MAX_CONSECUTIVE_FAILURES {
                let note = format!(
                    "{setting}: {MAX_CONSECUTIVE_FAILURES} failed trials in a row; the rest of \
                     the {} series was abandoned",
                    first.key().replace('_', " ")
                );
                progress.say(&format!("{note}; logs:\n{}", testbed.log_tails(30)));
                notes.push(note);
                break;
            }
        }
    }
    (records, notes)
}

fn describe(record: &TrialRecord) -> String {
    match &record.outcome {
        Ok(m) if m.censored => format!(
            "NOT RECOVERED: outage ≥ {:.1} ms ({} failed requests)",
            m.outage_ms, m.failed_requests
        ),
        Ok(m) => format!(
            "outage {:.1} ms ({} failed requests)",
            m.outage_ms, m.failed_requests
        ),
        Err(error) => format!("failed: {}", first_line(error)),
    }
}

pub fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// Runs `first` (lb1 away) and, after the hold-down, `second` (lb1 back) on a settled
/// cluster.
fn trial_pair(
    testbed: &mut Testbed,
    plan: &Plan,
    first: Scenario,
    second: Scenario,
    trial: usize,
) -> [TrialRecord; 2] {
    let gone = Instant::now();
    let away = run_event(testbed, plan, first, trial);
    if let Some(wait) = (gone + plan.hold_down).checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    let back = run_event(testbed, plan, second, trial);
    [away, back]
}

/// Injects the scenario's event and measures it.
fn run_event(testbed: &mut Testbed, plan: &Plan, scenario: Scenario, trial: usize) -> TrialRecord {
    testbed.clear_record();
    let event = Instant::now();
    let acted = match scenario {
        Scenario::NodeDeath => testbed.set_connected(0, false),
        Scenario::FailbackAfterReturn => testbed.set_connected(0, true),
        Scenario::CleanStop => testbed.stop_daemon(0),
        Scenario::FailbackAfterRestart => testbed.start_daemon(0),
    };
    let holder = NODES[scenario.new_holder()];
    let outcome = match acted {
        Err(err) => Err(anyhow!("{}: injecting the event: {err:#}", scenario.key())),
        Ok(()) => {
            let steady = wait_steady(testbed, holder, event, plan.steady, plan.event_timeout);
            let until = Instant::now();
            testbed.wait_requests_done(until);
            match steady {
                Ok(()) => event_outage(testbed.record(), event, until, holder)
                    .map(measure)
                    .ok_or_else(|| anyhow!("{holder} was not serving at the end of the window")),
                Err(err) => censored(testbed.record(), event, until).ok_or(err),
            }
        }
    };
    let recovered = outcome.as_ref().ok().and_then(|m| m.time_to_recovery_ms);
    let requests = raw_requests(testbed.record(), event, recovered);
    TrialRecord {
        setting: testbed.setting,
        scenario,
        trial,
        outcome: outcome.map_err(|err| format!("{err:#}\n{}", testbed.log_tails(25))),
        requests,
    }
}

fn measure(outage: hb_tests::probe::EventOutage) -> EventMeasure {
    EventMeasure {
        outage_ms: ms(outage.outage),
        failed_requests: outage.failed_requests,
        requests: outage.requests,
        time_to_recovery_ms: Some(ms(outage.time_to_recovery)),
        first_failure_to_recovery_ms: outage
            .first_failure
            .map(|first| ms(outage.recovered_at.saturating_duration_since(first))),
        longest_gap_ms: ms(outage.longest_gap),
        gaps: outage.gaps,
        served_by_others: outage.served_by_others,
        censored: false,
    }
}

/// A service that had not settled on the new holder when the wait ended, though requests had
/// failed: an outage at least from its start to the end of the wait. Kept, as a lower bound,
/// rather than dropped, so a system that does not recover is not flattered. `None` when no
/// request failed (the old holder kept serving: nothing moved, which is an error, not an
/// outage).
fn censored(record: &[ProbeSample], event: Instant, until: Instant) -> Option<EventMeasure> {
    let window: Vec<&ProbeSample> = record
        .iter()
        .filter(|s| s.end >= event && s.start < until)
        .collect();
    let first_failure = window.iter().find(|s| s.failed())?.start.max(event);
    Some(EventMeasure {
        outage_ms: ms(until.saturating_duration_since(first_failure)),
        failed_requests: window.iter().filter(|s| s.failed()).count(),
        requests: window.len(),
        time_to_recovery_ms: None,
        first_failure_to_recovery_ms: None,
        longest_gap_ms: ms(until.saturating_duration_since(first_failure)),
        gaps: 1,
        served_by_others: window.iter().filter(|s| !s.failed()).count(),
        censored: true,
    })
}

/// The requests from just before the event to just after the recovery (all of them when
/// there was none), for the JSON.
fn raw_requests(
    record: &[ProbeSample],
    event: Instant,
    recovered_ms: Option<f64>,
) -> Vec<[f64; 3]> {
    let from = event
        .checked_sub(Duration::from_millis(20))
        .unwrap_or(event);
    let to = recovered_ms.map(|ms| event + Duration::from_secs_f64(ms / 1000.0 + 0.02));
    record
        .iter()
        .filter(|s| s.start >= from && to.is_none_or(|to| s.start <= to))
        .map(|s| {
            let who = outcome_code(&s.outcome);
            let start = if s.start >= event {
                ms(s.start - event)
            } else {
                -ms(event - s.start)
            };
            [round2(start), round2(ms(s.end - s.start)), who]
        })
        .collect()
}

/// What `results.json` says the outcome codes of raw requests mean.
pub const OUTCOME_CODES: &str = "1 = answered by lb1, 2 = answered by lb2, 0 = connect \
     timeout, -1 = connection refused/unreachable, -2 = answer timeout, -3 = bad answer, \
     -4 = answered by an unknown page";

/// A request's outcome as a number, for compact JSON (see [`OUTCOME_CODES`]).
pub fn outcome_code(outcome: &ProbeOutcome) -> f64 {
    match outcome {
        ProbeOutcome::Served(name) => NODES
            .iter()
            .position(|node| node == name)
            .map_or(-4.0, |index| index as f64 + 1.0),
        ProbeOutcome::Failed(Failure::ConnectTimeout) => 0.0,
        ProbeOutcome::Failed(Failure::ConnectError) => -1.0,
        ProbeOutcome::Failed(Failure::AnswerTimeout) => -2.0,
        ProbeOutcome::Failed(Failure::BadAnswer) => -3.0,
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// Waits until `holder` has served every request for `steady` (all requests counted
/// started after `since`).
fn wait_steady(
    testbed: &mut Testbed,
    holder: &str,
    since: Instant,
    steady: Duration,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let min_requests = (steady.as_millis() / PROBE_INTERVAL.as_millis().max(1) / 2) as usize;
    loop {
        testbed.collect();
        // Requests that started before `upto` have all completed.
        let upto = Instant::now()
            .checked_sub(PROBE_TIMEOUT + Duration::from_millis(2))
            .unwrap_or(since);
        if let Some(from) = upto.checked_sub(steady) {
            if from >= since && steady_on(testbed.record(), holder, from, upto, min_requests) {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "{holder} did not serve steadily within {timeout:?} (VIP on {:?}; last \
                 requests: {})",
                testbed.vip_holders().unwrap_or_default(),
                last_outcomes(testbed.record(), 12)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn last_outcomes(record: &[ProbeSample], count: usize) -> String {
    record[record.len().saturating_sub(count)..]
        .iter()
        .map(|s| match &s.outcome {
            ProbeOutcome::Served(name) => name.as_str(),
            ProbeOutcome::Failed(failure) => failure.key(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The VIP on lb1 only, and the client served by lb1 without a failure for `plan.settle`.
pub fn settle(testbed: &mut Testbed, plan: &Plan) -> Result<()> {
    let deadline = Instant::now() + plan.settle_timeout;
    loop {
        let since = Instant::now();
        wait_steady(testbed, NODES[0], since, plan.settle, plan.settle_timeout)
            .context("settling before the trial")?;
        if testbed.vip_holders()? == [NODES[0]] {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "settling: the VIP is on {:?}, not on lb1 alone\n{}",
                testbed.vip_holders().unwrap_or_default(),
                testbed.log_tails(25)
            );
        }
    }
}

fn start_testbed(
    setting: Setting,
    label: &str,
    plan: &Plan,
    progress: &mut Progress,
) -> Result<Testbed> {
    start_testbed_with(setting, label, HbOptions::default(), plan, progress)
}

/// A testbed checked against the first one's network and settled on lb1.
pub fn start_testbed_with(
    setting: Setting,
    label: &str,
    hb: HbOptions,
    plan: &Plan,
    progress: &mut Progress,
) -> Result<Testbed> {
    let mut testbed = Testbed::start(setting, label, hb)?;
    progress.check_testbed(&testbed)?;
    settle(&mut testbed, plan).with_context(|| format!("{setting}: first settling"))?;
    Ok(testbed)
}

// --------------------------------------------------------------------- stability windows

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    Idle,
    /// The stress: `stress-ng` saturating both cores.
    Stress,
    /// Harder: both cores saturated, and a fifth of the RAM allocated and rewritten over
    /// and over (page faults, zeroing, the memory bus). Reported, but it does not decide
    /// which settings count as stable.
    StressMemory,
}

impl Load {
    /// The windows of every rung, in the order they run.
    pub const ALL: [Load; 3] = [Load::Idle, Load::Stress, Load::StressMemory];

    pub fn key(self) -> &'static str {
        match self {
            Load::Idle => "idle",
            Load::Stress => "stress",
            Load::StressMemory => "stress-memory",
        }
    }

    /// Whether a VIP movement in this window makes the setting unstable (the issue's
    /// definition: idle and CPU saturation).
    pub fn decides_stability(self) -> bool {
        matches!(self, Load::Idle | Load::Stress)
    }

    /// `stress-ng`'s arguments, without the timeout; `None` for an idle window.
    pub fn stress_args(self) -> Option<&'static [&'static str]> {
        match self {
            Load::Idle => None,
            Load::Stress => Some(&["--cpu", "2"]),
            Load::StressMemory => Some(&["--cpu", "2", "--vm", "1", "--vm-bytes", "20%"]),
        }
    }

    /// The command line as the report shows it.
    pub fn describe(self) -> String {
        match self.stress_args() {
            None => "idle".to_owned(),
            Some(args) => format!("`stress-ng {}`", args.join(" ")),
        }
    }
}

/// One stability window.
#[derive(Debug, Clone)]
pub struct WindowRecord {
    pub setting: Setting,
    pub load: Load,
    pub outcome: std::result::Result<WindowMeasure, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WindowMeasure {
    pub seconds: f64,
    /// Per node: how often the VIP was added and removed there.
    pub vip_added: [usize; 2],
    pub vip_removed: [usize; 2],
    pub requests: usize,
    pub failed_requests: usize,
    /// Failed requests by reason ([`Failure::key`]).
    pub failed_by_reason: std::collections::BTreeMap<&'static str, usize>,
    /// Requests answered by lb2 (the standby) during the window.
    pub served_by_standby: usize,
    /// Per node: the daemon's CPU time in ms per minute of window.
    pub cpu_ms_per_min: [f64; 2],
    /// hb only, per node: the `kernel_to_agent_us` reports polled during the window.
    pub kernel_to_agent: [Vec<Value>; 2],
    /// hb only, per node: the largest gap between fresh heartbeats from its peer during the
    /// window (kernel arrival stamps), as the bucket of the agent's histogram it fell in.
    pub peer_gap: [Option<GapBound>; 2],
    /// hb only, per node: the agent's own stall maximum.
    pub max_stall: [Option<StallReading>; 2],
    pub probe_slots_skipped: u64,
}

/// `max_stall_ms` of `hb-agent status` at a window's end. The agent keeps the maximum since
/// it started, so the window's own maximum is this value if it grew during the window, and
/// at most this value otherwise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StallReading {
    pub max_ms: f64,
    pub grew_in_window: bool,
}

impl StallReading {
    /// `3.20`, or `≤ 1.10` when the maximum is older than the window.
    pub fn label(self) -> String {
        if self.grew_in_window {
            format!("{:.2}", self.max_ms)
        } else {
            format!("≤ {:.2}", self.max_ms)
        }
    }
}

impl WindowMeasure {
    /// A takeover by the standby while both nodes were healthy.
    pub fn false_failovers(&self) -> usize {
        self.vip_added[1]
    }

    /// Every change of the VIP anywhere: none is expected while both nodes are healthy.
    pub fn vip_changes(&self) -> usize {
        self.vip_added.iter().chain(&self.vip_removed).sum()
    }
}

impl WindowRecord {
    pub fn to_json(&self) -> Value {
        let mut value = json!({
            "system": self.setting.system().name(),
            "setting": self.setting.label(),
            "load": self.load.key(),
        });
        match &self.outcome {
            Ok(m) => {
                value["seconds"] = json!(m.seconds);
                value["false_failovers"] = json!(m.false_failovers());
                value["vip_added"] = json!({"lb1": m.vip_added[0], "lb2": m.vip_added[1]});
                value["vip_removed"] = json!({"lb1": m.vip_removed[0], "lb2": m.vip_removed[1]});
                value["requests"] = json!(m.requests);
                value["failed_requests"] = json!(m.failed_requests);
                value["failed_by_reason"] = json!(m.failed_by_reason);
                value["served_by_standby"] = json!(m.served_by_standby);
                value["cpu_ms_per_min"] =
                    json!({"lb1": m.cpu_ms_per_min[0], "lb2": m.cpu_ms_per_min[1]});
                value["probe_slots_skipped"] = json!(m.probe_slots_skipped);
                if self.setting.system() == super::testbed::System::Hb {
                    value["kernel_to_agent_us_polls"] =
                        json!({"lb1": m.kernel_to_agent[0], "lb2": m.kernel_to_agent[1]});
                    let gap = |index: usize| m.peer_gap[index].map(GapBound::to_json);
                    value["largest_heartbeat_gap"] = json!({
                        "method": "bucket of the receiving agent's inter-arrival histogram \
                                   (kernel stamps) that holds the largest gap of the window",
                        "lb2_of_lb1": gap(1),
                        "lb1_of_lb2": gap(0),
                    });
                    let stall = |index: usize| {
                        m.max_stall[index].map(|s| {
                            json!({"max_ms_since_start": s.max_ms, "grew_in_window": s.grew_in_window})
                        })
                    };
                    value["agent_max_stall"] = json!({"lb1": stall(0), "lb2": stall(1)});
                }
            }
            Err(error) => value["error"] = json!(error),
        }
        value
    }
}

/// The windows of [`Load::ALL`] for `setting`, on one testbed.
pub fn stability(setting: Setting, plan: &Plan, progress: &mut Progress) -> Vec<WindowRecord> {
    let label = format!("bench-{}-stability", setting.system().name().to_lowercase());
    let mut testbed = match start_testbed(setting, &label, plan, progress) {
        Ok(testbed) => testbed,
        Err(err) => {
            let error = format!("{err:#}");
            progress.say(&format!(
                "{setting}: could not start: {}",
                first_line(&error)
            ));
            return Load::ALL
                .map(|load| WindowRecord {
                    setting,
                    load,
                    outcome: Err(error.clone()),
                })
                .to_vec();
        }
    };
    Load::ALL
        .map(|load| {
            let outcome = window(&mut testbed, plan, load).map_err(|err| format!("{err:#}"));
            match &outcome {
                Ok(m) => progress.say(&format!(
                    "{setting}, {} {:.0} s: {} false failovers ({} VIP changes), {} of {} \
                     requests failed, CPU lb1 {:.0} ms/min, lb2 {:.0} ms/min",
                    load.key(),
                    m.seconds,
                    m.false_failovers(),
                    m.vip_changes(),
                    m.failed_requests,
                    m.requests,
                    m.cpu_ms_per_min[0],
                    m.cpu_ms_per_min[1],
                )),
                Err(error) => progress.say(&format!(
                    "{setting}, {}: failed: {}",
                    load.key(),
                    first_line(error)
                )),
            }
            WindowRecord {
                setting,
                load,
                outcome,
            }
        })
        .to_vec()
}

/// How often hb's kernel-to-agent delay is read during a window: its report covers the last
/// 4096 heartbeats, a few seconds at the fastest settings.
const STATUS_POLL: Duration = Duration::from_secs(2);

fn window(testbed: &mut Testbed, plan: &Plan, load: Load) -> Result<WindowMeasure> {
    settle(testbed, plan)?;
    let monitor = VipMonitor::start(testbed, load.key())?;
    let hb_before = [HbReading::take(testbed, 0), HbReading::take(testbed, 1)];
    let cpu_before = [testbed.cpu_snapshot(0), testbed.cpu_snapshot(1)];
    let skipped_before = testbed.probe_slots_skipped();
    testbed.clear_record();
    let started = Instant::now();
    let stress = match load.stress_args() {
        None => None,
        Some(args) => {
            let mut command = Command::new("stress-ng");
            command.args(args).args([
                "--timeout",
                &format!("{}s", plan.window.as_secs().max(1)),
                "--quiet",
            ]);
            Some(
                testbed
                    .lab()
                    .spawn(testbed.client(), &format!("stress-{}", unique()), &command)
                    .context("starting stress-ng")?,
            )
        }
    };
    let mut kernel_to_agent: [Vec<Value>; 2] = [Vec::new(), Vec::new()];
    let end = started + plan.window;
    while Instant::now() < end {
        std::thread::sleep(STATUS_POLL.min(end.saturating_duration_since(Instant::now())));
        testbed.collect();
        for (index, polls) in kernel_to_agent.iter_mut().enumerate() {
            if let Some(report) = testbed.kernel_to_agent(index) {
                polls.push(report);
            }
        }
    }
    let elapsed = started.elapsed();
    let cpu_after = [testbed.cpu_snapshot(0), testbed.cpu_snapshot(1)];
    if let Some(stress) = stress {
        // stress-ng ends itself at the window's end; give it a moment, then make sure.
        let lab = testbed.lab();
        hb_tests::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            !lab.is_running(&stress).unwrap_or(false)
        });
        let _ = lab.stop(&stress, Duration::from_secs(3));
    }
    testbed.wait_requests_done(started + plan.window);
    if hb_before.iter().any(Option::is_some) {
        // The agent publishes its histograms once a second.
        std::thread::sleep(hb_agent_publish_interval());
    }
    let hb_after = [HbReading::take(testbed, 0), HbReading::take(testbed, 1)];
    let mut peer_gap = [None; 2];
    let mut max_stall = [None; 2];
    for index in 0..NODES.len() {
        if let (Some(before), Some(after)) = (&hb_before[index], &hb_after[index]) {
            peer_gap[index] = match (&before.peer_histogram, &after.peer_histogram) {
                (Some(b), Some(a)) => largest_gap(b, a),
                _ => None,
            };
            max_stall[index] = Some(StallReading {
                max_ms: after.max_stall_ms,
                grew_in_window: after.max_stall_ms > before.max_stall_ms,
            });
        }
    }
    let (vip_added, vip_removed) = monitor.finish(testbed)?;
    let window_end = started + plan.window;
    let requests: Vec<&ProbeSample> = testbed
        .record()
        .iter()
        .filter(|s| s.start >= started && s.start < window_end)
        .collect();
    let per_min = |ticks: u64| {
        ticks as f64 * 1000.0 / clock_ticks_per_second() as f64 * 60.0 / elapsed.as_secs_f64()
    };
    Ok(WindowMeasure {
        seconds: elapsed.as_secs_f64(),
        vip_added,
        vip_removed,
        requests: requests.len(),
        failed_requests: requests.iter().filter(|s| s.failed()).count(),
        failed_by_reason: requests
            .iter()
            .filter_map(|s| match s.outcome {
                ProbeOutcome::Failed(failure) => Some(failure.key()),
                ProbeOutcome::Served(_) => None,
            })
            .fold(Default::default(), |mut counts, key| {
                *counts.entry(key).or_default() += 1;
                counts
            }),
        served_by_standby: requests.iter().filter(|s| s.served_by(NODES[1])).count(),
        cpu_ms_per_min: [
            per_min(cpu_after[0].ticks_since(&cpu_before[0])),
            per_min(cpu_after[1].ticks_since(&cpu_before[1])),
        ],
        kernel_to_agent,
        peer_gap,
        max_stall,
        probe_slots_skipped: testbed.probe_slots_skipped() - skipped_before,
    })
}

/// Every change of the VIP on either node, however brief: `ip monitor address` in each
/// node's namespace.
pub struct VipMonitor {
    monitors: Vec<hb_tests::ProcessHandle>,
}

impl VipMonitor {
    /// Starts the monitors (`tag` goes into their process names) and lets them subscribe.
    pub fn start(testbed: &Testbed, tag: &str) -> Result<VipMonitor> {
        let monitors = (0..NODES.len())
            .map(|index| {
                let mut command = Command::new("ip");
                command.args(["-o", "monitor", "address"]);
                testbed.lab().spawn(
                    testbed.node_netns(index),
                    &format!("ipmon-{tag}-{}-{}", NODES[index], unique()),
                    &command,
                )
            })
            .collect::<hb_tests::Result<_>>()
            .context("starting ip monitor")?;
        // Let the monitors subscribe before anything can change.
        std::thread::sleep(Duration::from_millis(200));
        Ok(VipMonitor { monitors })
    }

    /// Stops the monitors; per node, how often the VIP was added and removed there.
    pub fn finish(self, testbed: &Testbed) -> Result<([usize; 2], [usize; 2])> {
        let mut added = [0; 2];
        let mut removed = [0; 2];
        for (index, monitor) in self.monitors.iter().enumerate() {
            testbed.lab().stop(monitor, Duration::from_secs(3))?;
            let output = monitor.stdout()?;
            let needle = format!("inet {VIP}/");
            for line in output.lines().filter(|line| line.contains(&needle)) {
                if line.starts_with("Deleted") {
                    removed[index] += 1;
                } else {
                    added[index] += 1;
                }
            }
        }
        Ok((added, removed))
    }
}

/// What a window reads from one hb agent at its start and end.
struct HbReading {
    /// The inter-arrival histogram of the node's peer.
    peer_histogram: Option<Histogram>,
    max_stall_ms: f64,
}

impl HbReading {
    /// `None` for the other systems, or when the agent does not answer.
    fn take(testbed: &Testbed, index: usize) -> Option<HbReading> {
        testbed.hb_cluster()?;
        let status = testbed.hb_status(index).ok()?;
        let peer = NODES[1 - index];
        let peer_histogram = testbed
            .hb_metrics(index)
            .ok()
            .and_then(|page| interarrival(&page, peer));
        Some(HbReading {
            peer_histogram,
            max_stall_ms: status["max_stall_ms"].as_f64().unwrap_or(0.0),
        })
    }
}

/// How stale hb's metrics page may be (its `PUBLISH_INTERVAL`, plus a margin).
fn hb_agent_publish_interval() -> Duration {
    Duration::from_millis(1100)
}

/// A number for process names that must be unique within a lab.
pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// `sysconf(_SC_CLK_TCK)`: the unit of the CPU times in `/proc/<pid>/stat`.
pub fn clock_ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .filter(|&ticks: &u64| ticks > 0)
            // The value on every Linux architecture that matters; getconf is in libc-bin.
            .unwrap_or(100)
    })
}
