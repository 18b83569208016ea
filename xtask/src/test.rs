//! `cargo xtask test`: the whole check CI runs, step by step, with a summary that names the
//! step that failed.
//!
//! Steps: set-up, rustfmt, clippy (host crates, and the XDP crate for its BPF target), build
//! of hb-agent, then `cargo test` with `HB_AGENT_BIN` pointing at that build, then a fuzz
//! smoke run (every cargo-fuzz target for a few seconds; any finding fails it). A failing lint
//! step does not stop the tests (all problems are reported in one run); a failing build does.
//! The test step runs in its own process group with a time limit: on timeout or Ctrl-C the
//! group gets SIGTERM (or SIGINT), on which test processes remove their labs and exit; what a
//! SIGKILL leaves behind is removed by the next lab created.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::exec::{build_agent, describe};
use crate::fuzz;
use crate::setup::{self, Needs};
use crate::Workspace;

/// Environment variable carrying the agent binary to the tests (read by hb-tests).
const AGENT_BIN_ENV: &str = "HB_AGENT_BIN";

/// Marker the lab harness prints for each privileged test skipped without root.
const NOT_ROOT_MARKER: &str = "skipped: not root (privileged test";

/// Fuzzing time per target in the fuzz smoke step: enough to run the seeds and a few
/// hundred thousand mutations of the fast targets; the benchmark job fuzzes longer.
const FUZZ_SMOKE_SECONDS: u64 = 10;

/// Process group of the running test step (0: none), for the signal forwarder.
static TEST_GROUP: AtomicI32 = AtomicI32::new(0);

#[derive(Debug)]
enum StepResult {
    Passed(String),
    Failed(String),
    NotRun(String),
}

struct Step {
    name: &'static str,
    elapsed: Duration,
    result: StepResult,
}

/// Totals read from the test binaries' `test result:` lines and the harness's skip lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct TestCounts {
    passed: u64,
    failed: u64,
    ignored: u64,
    skipped_not_root: u64,
    binaries: u64,
}

impl TestCounts {
    fn add(&mut self, other: TestCounts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
        self.skipped_not_root += other.skipped_not_root;
        self.binaries += other.binaries;
    }

    /// Reads one output line.
    fn observe(&mut self, line: &str) {
        let line = hb_tests::strip_ansi(line);
        self.skipped_not_root += line.matches(NOT_ROOT_MARKER).count() as u64;
        let Some(rest) = line.trim_start().strip_prefix("test result: ") else {
            return;
        };
        // "ok. 15 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.05s"
        let mut seen = false;
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(number)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = number.parse::<u64>() else {
                continue;
            };
            match label {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => continue,
            }
            seen = true;
        }
        if seen {
            self.binaries += 1;
        }
    }
}

/// Runs the whole check; fails naming the failed steps.
pub fn run(workspace: &Workspace, timeout_minutes: u64, test_args: &[OsString]) -> Result<()> {
    forward_termination_signals()?;
    let color = io::stdout().is_terminal();
    let mut steps: Vec<Step> = Vec::new();
    let mut counts = None;

    timed(&mut steps, "setup", || {
        let outcome = setup::ensure(workspace, Needs::EVERYTHING)?;
        if outcome.needs_root.is_empty() {
            return Ok("machine ready".to_owned());
        }
        if setup::is_root() {
            bail!("set-up incomplete: {}", outcome.needs_root.join("; "));
        }
        eprintln!("xtask: not root: privileged tests will be skipped (they say so)");
        Ok(format!(
            "not root; left for root: {}",
            outcome.needs_root.join("; ")
        ))
    });
    let setup_ok = matches!(steps[0].result, StepResult::Passed(_));

    timed(&mut steps, "rustfmt", || {
        let mut command = workspace.cargo();
        command.args(["fmt", "--all", "--check"]);
        if !color {
            // rustfmt colours its diffs even into a log file otherwise.
            command.args(["--", "--color", "never"]);
        }
        run_step(&mut command)?;
        Ok("formatted".to_owned())
    });
    timed(&mut steps, "clippy", || {
        run_step(workspace.cargo().args([
            "clippy",
            "--workspace",
            "--exclude",
            "hb-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
        Ok("no warnings".to_owned())
    });
    if setup_ok {
        timed(&mut steps, "clippy (XDP)", || {
            clippy_ebpf(workspace)?;
            Ok("no warnings (bpfel-unknown-none)".to_owned())
        });
    } else {
        not_run(&mut steps, "clippy (XDP)", "set-up failed");
    }

    let mut agent: Option<PathBuf> = None;
    if setup_ok {
        timed(&mut steps, "build hb-agent", || {
            let path = build_agent(workspace, false)?;
            let shown = path.display().to_string();
            agent = Some(path);
            Ok(shown)
        });
    } else {
        not_run(&mut steps, "build hb-agent", "set-up failed");
    }

    match &agent {
        Some(agent) => timed(&mut steps, "tests", || {
            let timeout = Duration::from_secs(timeout_minutes.saturating_mul(60));
            let (status, found) = run_tests(workspace, agent, test_args, timeout, color)?;
            counts = Some(found);
            let summary = describe_counts(&found);
            if !status.success() {
                bail!("cargo test failed ({status}): {summary}");
            }
            if found.binaries == 0 {
                bail!("cargo test ran no test binary");
            }
            Ok(summary)
        }),
        None => not_run(&mut steps, "tests", "hb-agent was not built"),
    }

    if setup_ok {
        timed(&mut steps, "fuzz smoke", || fuzz_smoke(workspace));
    } else {
        not_run(&mut steps, "fuzz smoke", "set-up failed");
    }

    print_summary(&steps, counts);
    let failed: Vec<&str> = steps
        .iter()
        .filter(|step| !matches!(step.result, StepResult::Passed(_)))
        .map(|step| step.name)
        .collect();
    if failed.is_empty() {
        eprintln!("xtask: test: all steps passed");
        Ok(())
    } else {
        bail!("test: FAILED step(s): {}", failed.join(", "))
    }
}

/// Every fuzz target for [`FUZZ_SMOKE_SECONDS`]; fails on any finding. Without root and
/// without libFuzzer's C++ compiler (which set-up installs as root) it is skipped, as the
/// privileged tests are.
fn fuzz_smoke(workspace: &Workspace) -> Result<String> {
    if let Some(why) = fuzz::missing_prerequisite() {
        if setup::is_root() {
            bail!("{why}");
        }
        eprintln!("xtask: fuzz smoke skipped: not root and {why}");
        return Ok(format!("skipped: not root and {why}"));
    }
    let runs = fuzz::run_all(workspace, FUZZ_SMOKE_SECONDS, &[])?;
    println!("{}", fuzz::markdown(&runs));
    fuzz::check(&runs)?;
    let executions: u64 = runs.iter().map(|run| run.executions).sum();
    Ok(format!(
        "{} targets, {FUZZ_SMOKE_SECONDS} s each: {executions} executions, nothing found",
        runs.len()
    ))
}

fn timed(steps: &mut Vec<Step>, name: &'static str, body: impl FnOnce() -> Result<String>) {
    eprintln!("\nxtask: ==== {name} ====");
    let started = Instant::now();
    let result = match body() {
        Ok(note) => StepResult::Passed(note),
        Err(err) => {
            eprintln!("xtask: step {name} FAILED: {err:#}");
            StepResult::Failed(format!("{err:#}"))
        }
    };
    steps.push(Step {
        name,
        elapsed: started.elapsed(),
        result,
    });
}

fn not_run(steps: &mut Vec<Step>, name: &'static str, why: &str) {
    eprintln!("\nxtask: ==== {name} ==== not run: {why}");
    steps.push(Step {
        name,
        elapsed: Duration::ZERO,
        result: StepResult::NotRun(why.to_owned()),
    });
}

fn run_step(command: &mut Command) -> Result<()> {
    crate::exec::run_visible(command)
}

/// Clippy for the XDP crate, on the target it is built for (it is `no_std`/`no_main` and does
/// not build for the host), with the flags aya-build uses.
fn clippy_ebpf(workspace: &Workspace) -> Result<()> {
    let target_dir = workspace.target_dir()?.join("xtask").join("ebpf-clippy");
    let mut command = Command::new("rustup");
    command
        .current_dir(workspace.root())
        .args([
            "run",
            "nightly",
            "cargo",
            "clippy",
            "--package",
            "hb-ebpf",
            "--bins",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--target-dir",
        ])
        .arg(&target_dir)
        .args(["--", "-D", "warnings"])
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{}\"", std::env::consts::ARCH),
        )
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    run_step(&mut command)
}

/// `cargo test` for every host crate, in its own process group, with the agent binary passed
/// in, its output passed through and counted.
fn run_tests(
    workspace: &Workspace,
    agent: &Path,
    test_args: &[OsString],
    timeout: Duration,
    color: bool,
) -> Result<(ExitStatus, TestCounts)> {
    let mut command = workspace.cargo();
    command.args([
        "test",
        "--workspace",
        "--exclude",
        "hb-ebpf",
        "--no-fail-fast",
    ]);
    if color {
        command.args(["--color", "always"]);
    }
    command.arg("--");
    if color {
        command.args(["--color", "always"]);
    }
    command
        .args(test_args)
        .env(AGENT_BIN_ENV, agent)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let line = describe(&command);
    eprintln!("xtask: $ {AGENT_BIN_ENV}={} {line}", agent.display());
    let mut child = command
        .spawn()
        .with_context(|| format!("could not start `{line}`"))?;
    let group = i32::try_from(child.id()).context("child pid out of range")?;
    TEST_GROUP.store(group, Ordering::SeqCst);

    let stdout = child.stdout.take().context("no stdout pipe")?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let out_reader = thread::spawn(move || pass_through(stdout, io::stdout()));
    let err_reader = thread::spawn(move || pass_through(stderr, io::stderr()));

    let deadline = Instant::now() + timeout;
    loop {
        // Not reaped yet: while the leader is a zombie its pid, and so the group id, cannot be
        // reused, so signalling the group below can only reach the tests.
        if leader_exited(group).context("waiting for cargo test")? {
            break;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "xtask: tests still running after {} min: ending them",
                timeout.as_secs() / 60
            );
            end_group(group, Duration::from_secs(10));
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    // Whatever the tests left in the group (there should be nothing) goes too.
    let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
    let status = child.wait().context("reaping cargo test")?;
    TEST_GROUP.store(0, Ordering::SeqCst);

    let mut counts = TestCounts::default();
    for reader in [out_reader, err_reader] {
        match reader.join() {
            Ok(found) => counts.add(found),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
    Ok((status, counts))
}

/// Copies `source` to `sink` line by line, counting test results on the way.
fn pass_through(source: impl Read, mut sink: impl Write) -> TestCounts {
    let mut counts = TestCounts::default();
    let mut reader = BufReader::new(source);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {
                counts.observe(&String::from_utf8_lossy(&line));
                // The console going away must not stop the counting.
                let _ = sink.write_all(&line);
                let _ = sink.flush();
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    counts
}

/// Whether process `pid` (our child) has exited, without reaping it.
fn leader_exited(pid: i32) -> Result<bool> {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    Ok(!matches!(
        waitid(Id::Pid(Pid::from_raw(pid)), flags)?,
        WaitStatus::StillAlive
    ))
}

/// SIGTERM to the test step's process group, up to `grace` for all of it to exit (test
/// processes remove their labs on SIGTERM), then SIGKILL to whatever is left.
fn end_group(group: i32, grace: Duration) {
    let pgid = Pid::from_raw(group);
    if killpg(pgid, Signal::SIGTERM).is_err() {
        return; // no member left
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && live_group_members(group) > 0 {
        thread::sleep(Duration::from_millis(100));
    }
    let _ = killpg(pgid, Signal::SIGKILL);
}

/// How many processes of process group `group` are still running (zombies do not count).
fn live_group_members(group: i32) -> usize {
    u32::try_from(group).map_or(0, |group| hb_tests::rivals::processes_in_group(group).len())
}

/// Ctrl-C, SIGTERM and SIGHUP reach xtask but not the test step's own process group: a
/// thread receives them (through handlers, which children do not inherit), passes them on to
/// that group, and exits.
fn forward_termination_signals() -> Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])
    .context("installing handlers for termination signals")?;
    thread::spawn(move || {
        if let Some(number) = signals.forever().next() {
            let group = TEST_GROUP.load(Ordering::SeqCst);
            if group != 0 {
                if let Ok(signal) = Signal::try_from(number) {
                    let _ = killpg(Pid::from_raw(group), signal);
                }
            }
            eprintln!("\nxtask: interrupted by signal {number}; stopped");
            std::process::exit(128 + number);
        }
    });
    Ok(())
}

fn describe_counts(counts: &TestCounts) -> String {
    let mut text = format!(
        "{} passed, {} failed, {} ignored in {} test binaries",
        counts.passed.saturating_sub(counts.skipped_not_root),
        counts.failed,
        counts.ignored,
        counts.binaries
    );
    if counts.skipped_not_root > 0 {
        text.push_str(&format!(
            "; {} privileged tests skipped (not root)",
            counts.skipped_not_root
        ));
    }
    text
}

fn print_summary(steps: &[Step], counts: Option<TestCounts>) {
    let mut out = io::stdout().lock();
    // Summary lines are best effort: a closed stdout must not turn a pass into a panic.
    let _ = writeln!(out, "\n==== cargo xtask test: summary ====");
    for step in steps {
        let (label, note) = match &step.result {
            StepResult::Passed(note) => ("ok", note.as_str()),
            StepResult::Failed(note) => ("FAILED", note.as_str()),
            StepResult::NotRun(note) => ("not run", note.as_str()),
        };
        let first_line = note.lines().next().unwrap_or_default();
        let _ = writeln!(
            out,
            "{label:>8}  {:<16} {:>7.1} s  {first_line}",
            step.name,
            step.elapsed.as_secs_f64()
        );
    }
    if let Some(counts) = counts.filter(|counts| counts.binaries > 0) {
        // The plain closing line CI reads: tests that only printed "skipped: not root" count as
        // skipped, not passed.
        let _ = writeln!(
            out,
            "tests: {} passed, {} failed, {} skipped",
            counts.passed.saturating_sub(counts.skipped_not_root),
            counts.failed,
            counts.ignored + counts.skipped_not_root
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_result_lines_and_skips() {
        let mut counts = TestCounts::default();
        for line in [
            "running 3 tests",
            "test result: ok. 15 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.05s",
            "skipped: not root (privileged test xdp_path)",
            "test x ... skipped: not root (privileged test a)ok",
            "test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s",
            "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s",
        ] {
            counts.observe(line);
        }
        assert_eq!(
            counts,
            TestCounts {
                passed: 18,
                failed: 1,
                ignored: 2,
                skipped_not_root: 2,
                binaries: 3,
            }
        );
        assert_eq!(
            describe_counts(&counts),
            "16 passed, 1 failed, 2 ignored in 3 test binaries; 2 privileged tests skipped (not root)"
        );
    }

    #[test]
    fn reads_coloured_result_lines() {
        let mut counts = TestCounts::default();
        counts.observe("test result: \u{1b}[32mok\u{1b}[0m. 4 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out");
        assert_eq!(counts.passed, 4);
        assert_eq!(counts.ignored, 1);
        assert_eq!(counts.binaries, 1);
    }

    #[test]
    fn strips_escape_sequences() {
        assert_eq!(
            hb_tests::strip_ansi("\u{1b}[1m\u{1b}[31mFAILED\u{1b}[0m x"),
            "FAILED x"
        );
        assert_eq!(hb_tests::strip_ansi("plain"), "plain");
    }
}
