//! `cargo xtask bench`: hb against keepalived and Heartbeat, measured side by side in one run,
//! on one lab topology, with one probe and one fault injection.
//!
//! 1. **Stability ladder**: for each system and each setting of its ladder, a fresh cluster,
//!    windows with both nodes healthy: idle, under `stress-ng --cpu 2`, and under
//!    `stress-ng --cpu 2 --vm 1 --vm-bytes 20%` (reported, not used to judge stability);
//!    VIP movements (false failovers), the daemons' CPU time, hb's kernel-to-agent delay.
//! 2. **Settings for the outage trials**: hb's fast profile (`keepalive 5ms`/`deadtime
//!    20ms`, the target), and for each system its fastest setting that had no VIP
//!    movement in either window of step 1, in this same run (for hb only when that is not
//!    the fast profile).
//! 3. **Outage trials** at those settings: node death and failback after return, clean stop
//!    and failback after restart (see [`scenario`]).
//! 4. **Flood** (issue 7): two healthy hb nodes at the fast profile, flooded on port 694
//!    with junk and forged heartbeats from a third namespace, once with the XDP receive
//!    path and once with `xdp off`; rates, drops by reason, false failovers and the agents'
//!    CPU against an idle baseline (see [`flood`]).
//! 5. **Output** in the output directory (default `<target>/bench`): `results.json` (every
//!    trial and window, with the raw requests around each event), `results.md` (the tables)
//!    and `outages.png` (the outage distributions).
//!
//! `--only SECTION` runs one part: `failover` (steps 1–3) or `flood` (step 4).
//!
//! Every number in the output comes from this run; nothing is carried over or assumed.

mod agent_stats;
mod chart;
mod flood;
mod report;
mod scenario;
mod stats;
mod testbed;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::exec::{build_agent, find_in_path};
use crate::setup::{self, Needs};
use crate::Workspace;
use scenario::{Load, Plan, TrialRecord, WindowRecord};
use testbed::{Setting, System, Testbed};

/// How `cargo xtask bench` was asked to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// A few minutes' sanity run instead of the full benchmark.
    pub quick: bool,
    /// Where the results go; `None`: `<target dir>/bench`.
    pub out_dir: Option<PathBuf>,
    /// Run only this part of the benchmark; `None`: all of it.
    pub only: Option<Section>,
}

/// How long the long run lasts, and how long each fuzz target runs.
const FULL_CHAOS: Duration = Duration::from_secs(30 * 60);
const QUICK_CHAOS: Duration = Duration::from_secs(60);
const FULL_FUZZ_S: u64 = 120;
const QUICK_FUZZ_S: u64 = 10;

/// The parts of a benchmark run, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    /// The stability ladder (with hb's heartbeat gaps and stalls) and the outage trials
    /// against keepalived and Heartbeat.
    Failover,
    /// hb under a flood on its heartbeat port, XDP against the socket path.
    Flood,
    /// The long run: random faults against two agents, invariants checked after each.
    Chaos,
    /// Every fuzz target, longer than CI runs them.
    Fuzz,
}

impl Section {
    pub const ALL: [Section; 4] = [
        Section::Failover,
        Section::Flood,
        Section::Chaos,
        Section::Fuzz,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Section::Failover => "failover",
            Section::Flood => "flood",
            Section::Chaos => "chaos",
            Section::Fuzz => "fuzz",
        }
    }
}

/// The font the chart's text is drawn with (Debian package `fonts-dejavu-core`).
pub const CHART_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Programs the benchmark runs, and the Debian package of each.
const PROGRAMS: &[(&str, &str)] = &[
    ("keepalived", "keepalived"),
    ("stress-ng", "stress-ng"),
    ("nginx", "nginx-light"),
    ("ip", "iproute2"),
    ("unshare", "util-linux"),
    ("nsenter", "util-linux"),
];

pub fn run(workspace: &Workspace, options: &BenchOptions) -> Result<()> {
    if !setup::is_root() {
        bail!(
            "the benchmark needs root (network namespaces, XDP, the daemons under test): run \
             it as root, e.g. `sudo env \"PATH=$PATH\" cargo xtask bench`"
        );
    }
    let outcome = setup::ensure(workspace, Needs::EVERYTHING)?;
    if !outcome.needs_root.is_empty() {
        bail!(
            "set-up left steps undone: {}",
            outcome.needs_root.join("; ")
        );
    }
    preflight()?;
    let agent = build_agent(workspace, true)?;
    // Read by the lab fixture to start the agent (set before any thread exists).
    std::env::set_var(hb_tests::AGENT_BIN_ENV, &agent);
    let out_dir = match &options.out_dir {
        Some(dir) => dir.clone(),
        None => workspace.target_dir()?.join("bench"),
    };
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;

    let plan = if options.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    let sections: Vec<Section> = match options.only {
        Some(section) => vec![section],
        None => Section::ALL.to_vec(),
    };
    let machine = report::Machine::detect(workspace)?;
    let mut progress = Progress::new();
    progress.say(&format!(
        "{} run on {} ({} cores, Linux {}): {}",
        if plan.quick { "quick" } else { "full" },
        machine.cpu_model,
        machine.cores,
        machine.kernel,
        sections
            .iter()
            .map(|section| section.key())
            .collect::<Vec<_>>()
            .join(", "),
    ));

    let (choices, windows, trials, notes) = if sections.contains(&Section::Failover) {
        failover(&plan, &mut progress)?
    } else {
        Default::default()
    };
    let flood_plan = flood::FloodPlan::new(plan.quick, plan.hb_profile);
    let floods = if sections.contains(&Section::Flood) {
        flood::run(&flood_plan, &plan, &mut progress)
    } else {
        Vec::new()
    };

    let chaos = sections.contains(&Section::Chaos).then(|| {
        let duration = if plan.quick { QUICK_CHAOS } else { FULL_CHAOS };
        let mut say = |line: &str| progress.say(line);
        hb_tests::chaos::run_chaos(
            "bench-chaos",
            duration,
            hb_tests::chaos::seed_from_env(),
            &mut say,
        )
        .map_err(|err| format!("{err:#}"))
    });
    let fuzz = sections.contains(&Section::Fuzz).then(|| {
        let seconds = if plan.quick {
            QUICK_FUZZ_S
        } else {
            FULL_FUZZ_S
        };
        progress.say(&format!("fuzz: every target for {seconds} s"));
        crate::fuzz::run_all(workspace, seconds, &[]).map_err(|err| format!("{err:#}"))
    });

    let results = report::Results {
        machine,
        quick: plan.quick,
        sections,
        plan,
        duration: progress.started.elapsed(),
        topology: progress.reference_topology.clone().unwrap_or_default(),
        probe_realtime: progress.probe_realtime,
        choices,
        windows,
        trials,
        notes,
        flood_plan,
        floods,
        chaos,
        fuzz,
    };
    let json_path = out_dir.join("results.json");
    let markdown_path = out_dir.join("results.md");
    let chart_path = out_dir.join("outages.png");
    report::write_json(&results, &json_path)?;
    let markdown = report::markdown(&results, "outages.png");
    std::fs::write(&markdown_path, &markdown)
        .with_context(|| format!("writing {}", markdown_path.display()))?;
    let mut written = vec![
        json_path.display().to_string(),
        markdown_path.display().to_string(),
    ];
    if !results.trials.is_empty() {
        chart::draw(&results, &chart_path, Path::new(CHART_FONT))?;
        written.push(chart_path.display().to_string());
    }
    println!("{markdown}");
    progress.say(&format!(
        "done in {}: {}",
        minutes(progress.started.elapsed()),
        written.join(", ")
    ));
    Ok(())
}

type FailoverResults = (
    Vec<Choice>,
    Vec<WindowRecord>,
    Vec<TrialRecord>,
    Vec<String>,
);

/// Steps 1–3: the stability ladder, the choice of settings, the outage trials.
fn failover(plan: &Plan, progress: &mut Progress) -> Result<FailoverResults> {
    let mut windows: Vec<WindowRecord> = Vec::new();
    for setting in plan.hb_ladder.iter().chain(&plan.keepalived_ladder) {
        windows.extend(scenario::stability(*setting, plan, progress));
    }
    for setting in &plan.heartbeat_ladder {
        let result = scenario::stability(*setting, plan, progress);
        let stable = is_stable(&result);
        windows.extend(result);
        if stable {
            break;
        }
    }

    let choices = choose_settings(plan, &windows)?;
    for choice in &choices {
        progress.say(&format!(
            "outage trials for {} at {}: {}",
            choice.setting.system(),
            choice.setting.label(),
            choice.reason
        ));
    }
    let mut trials: Vec<TrialRecord> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    for choice in &choices {
        let (records, series_notes) = scenario::outage_series(choice.setting, plan, progress);
        trials.extend(records);
        notes.extend(series_notes);
    }
    Ok((choices, windows, trials, notes))
}

/// The settings of the outage trials, in the order they run: hb's fast profile, hb's
/// fastest stable rung (so that each system is also measured at its best; only when that is
/// another setting), keepalived's and Heartbeat's fastest stable setting.
fn choose_settings(plan: &Plan, windows: &[WindowRecord]) -> Result<Vec<Choice>> {
    let mut choices = vec![Choice::fixed(plan.hb_profile, windows)];
    if let Some(fastest) = Choice::fastest_stable(System::Hb, &plan.hb_ladder, windows)
        .ok()
        .filter(|c| c.stable && c.setting != plan.hb_profile)
    {
        choices.push(fastest);
    }
    choices.push(Choice::fastest_stable(
        System::Keepalived,
        &plan.keepalived_ladder,
        windows,
    )?);
    choices.push(Choice::fastest_stable(
        System::Heartbeat,
        &plan.heartbeat_ladder,
        windows,
    )?);
    Ok(choices)
}

/// Everything the run needs that set-up does not already check.
fn preflight() -> Result<()> {
    let mut missing = Vec::new();
    for (program, package) in PROGRAMS {
        if find_in_path(program).is_none() {
            missing.push(format!("{program} (Debian package {package})"));
        }
    }
    if !Path::new(hb_tests::rivals::HEARTBEAT_BIN).is_file() {
        missing.push(format!(
            "{} (Debian package heartbeat)",
            hb_tests::rivals::HEARTBEAT_BIN
        ));
    }
    if !Path::new(CHART_FONT).is_file() {
        missing.push(format!("{CHART_FONT} (Debian package fonts-dejavu-core)"));
    }
    if !missing.is_empty() {
        bail!(
            "the benchmark needs: {}; install them with apt-get",
            missing.join(", ")
        );
    }
    Ok(())
}

/// No VIP movement and no error in any window.
/// No VIP movement and no error in any window that decides stability (idle and the
/// issue's CPU stress; see [`Load::decides_stability`]).
fn is_stable(windows: &[WindowRecord]) -> bool {
    let deciding: Vec<&WindowRecord> = windows
        .iter()
        .filter(|w| w.load.decides_stability())
        .collect();
    !deciding.is_empty()
        && deciding
            .iter()
            .all(|w| w.outcome.as_ref().is_ok_and(|m| m.vip_changes() == 0))
}

/// The setting a system's outage trials use, and why.
#[derive(Debug, Clone)]
pub struct Choice {
    pub setting: Setting,
    /// Whether its stability windows in this run had no VIP movement.
    pub stable: bool,
    pub reason: String,
}

impl Choice {
    /// hb: the fast profile, whatever its stability (reported either way).
    fn fixed(setting: Setting, windows: &[WindowRecord]) -> Choice {
        let own: Vec<WindowRecord> = windows_of(windows, setting);
        let stable = is_stable(&own);
        let reason = if own.is_empty() {
            "the fast profile (not in this run's stability ladder)".to_owned()
        } else if stable {
            "the fast profile; no VIP movement in its idle and CPU-stress windows".to_owned()
        } else {
            "the fast profile; the VIP MOVED in its idle or CPU-stress window (see the ladder)"
                .to_owned()
        };
        Choice {
            setting,
            stable,
            reason,
        }
    }

    /// The fastest rung of `ladder` whose windows were stable; the slowest rung tried if
    /// none was.
    fn fastest_stable(
        system: System,
        ladder: &[Setting],
        windows: &[WindowRecord],
    ) -> Result<Choice> {
        let mut tried: Vec<Setting> = ladder
            .iter()
            .copied()
            .filter(|setting| !windows_of(windows, *setting).is_empty())
            .collect();
        tried.sort_by(|a, b| a.send_interval_ms().total_cmp(&b.send_interval_ms()));
        if let Some(setting) = tried
            .iter()
            .copied()
            .find(|setting| is_stable(&windows_of(windows, *setting)))
        {
            return Ok(Choice {
                setting,
                stable: true,
                reason: "its fastest setting with no VIP movement in this run's idle and \
                         CPU-stress windows"
                    .to_owned(),
            });
        }
        match tried.last() {
            Some(&setting) => Ok(Choice {
                setting,
                stable: false,
                reason: "NO setting tried was stable in this run; the slowest one tried".to_owned(),
            }),
            None => bail!("no stability window was run for {system}"),
        }
    }
}

fn windows_of(windows: &[WindowRecord], setting: Setting) -> Vec<WindowRecord> {
    windows
        .iter()
        .filter(|w| w.setting == setting)
        .cloned()
        .collect()
}

/// Progress lines with the run's elapsed time, and what every testbed must share.
pub struct Progress {
    started: Instant,
    reference_topology: Option<String>,
    /// Whether the prober ran real-time in every testbed.
    probe_realtime: bool,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            started: Instant::now(),
            reference_topology: None,
            probe_realtime: true,
        }
    }

    pub fn say(&mut self, text: &str) {
        eprintln!("bench [{}] {text}", minutes(self.started.elapsed()));
    }

    /// Fails unless `testbed`'s network is the same as the first testbed's; notes whether
    /// its prober got real-time priority.
    pub fn check_testbed(&mut self, testbed: &Testbed) -> Result<()> {
        if !testbed.probe_realtime() && self.probe_realtime {
            self.probe_realtime = false;
            self.say("the prober could not get real-time priority; it runs at normal priority");
        }
        let fingerprint = testbed.fingerprint()?;
        match &self.reference_topology {
            None => {
                self.reference_topology = Some(fingerprint);
                Ok(())
            }
            Some(reference) if *reference == fingerprint => Ok(()),
            Some(reference) => bail!(
                "{}'s lab network differs from the first testbed's; the comparison would not \
                 be fair.\nfirst:\n{reference}\n{}:\n{fingerprint}",
                testbed.setting,
                testbed.setting
            ),
        }
    }
}

fn minutes(elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    format!("{:02}:{:02}", secs / 60, secs % 60)
}

/// Windows by load, for the report.
fn window_for(windows: &[WindowRecord], setting: Setting, load: Load) -> Option<&WindowRecord> {
    windows
        .iter()
        .find(|w| w.setting == setting && w.load == load)
}

#[cfg(test)]
mod tests {
    use super::scenario::WindowMeasure;
    use super::*;

    fn window(setting: Setting, load: Load, vip_changes: usize) -> WindowRecord {
        WindowRecord {
            setting,
            load,
            outcome: Ok(WindowMeasure {
                seconds: 60.0,
                vip_added: [0, vip_changes],
                vip_removed: [0, 0],
                requests: 30_000,
                failed_requests: 0,
                failed_by_reason: Default::default(),
                served_by_standby: 0,
                cpu_ms_per_min: [0.0, 0.0],
                kernel_to_agent: [Vec::new(), Vec::new()],
                peer_gap: [None, None],
                max_stall: [None, None],
                probe_slots_skipped: 0,
            }),
        }
    }

    /// The three windows of each setting; the ones in `moved` had a VIP change under the
    /// issue's stress. Every setting moved under memory churn, which must not count.
    fn ladder_windows(plan: &Plan, moved: &[Setting]) -> Vec<WindowRecord> {
        plan.hb_ladder
            .iter()
            .chain(&plan.keepalived_ladder)
            .chain(&plan.heartbeat_ladder)
            .flat_map(|&setting| {
                let changes = usize::from(moved.contains(&setting));
                [
                    window(setting, Load::Idle, 0),
                    window(setting, Load::Stress, changes),
                    window(setting, Load::StressMemory, 1),
                ]
            })
            .collect()
    }

    fn labels(choices: &[Choice]) -> Vec<String> {
        choices.iter().map(|c| c.setting.label()).collect()
    }

    #[test]
    fn hb_is_also_measured_at_its_fastest_stable_rung() {
        let plan = Plan::full();
        let choices = choose_settings(&plan, &ladder_windows(&plan, &[])).unwrap();
        assert_eq!(
            labels(&choices),
            [
                "keepalive 5ms / deadtime 20ms",
                "keepalive 2ms / deadtime 8ms",
                "advert_int 0.01",
                "keepalive 10ms / deadtime 40ms",
            ]
        );
    }

    #[test]
    fn an_unstable_rung_is_skipped_and_the_profile_is_not_measured_twice() {
        let plan = Plan::full();
        let fastest_hb = plan.hb_ladder[0];
        let fastest_keepalived = plan.keepalived_ladder[0];
        let windows = ladder_windows(&plan, &[fastest_hb, fastest_keepalived]);
        let choices = choose_settings(&plan, &windows).unwrap();
        // hb's fastest stable rung is now the fast profile itself: one hb series only.
        assert_eq!(
            labels(&choices),
            [
                "keepalive 5ms / deadtime 20ms",
                "advert_int 0.02",
                "keepalive 10ms / deadtime 40ms",
            ]
        );
        assert!(choices.iter().all(|c| c.stable));
    }
}
