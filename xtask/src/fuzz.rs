//! `cargo xtask fuzz`: builds hb's cargo-fuzz targets (`hb-agent/fuzz`) once, runs each for
//! a fixed time from its committed seeds, and reports executions, throughput, corpus size
//! and findings.
//!
//! Each target runs as its own libFuzzer process with:
//! - its seeds (`hb-agent/fuzz/seeds/<target>`, read only) and a working corpus and artifact
//!   directory under `<target dir>/fuzz/` (never in the repository);
//! - `-rss_limit_mb` and `-malloc_limit_mb`, so an input that makes hb allocate without bound
//!   (or at all hugely) is a finding like a panic, and `-timeout` for one that hangs it;
//!   ASan's quarantine of freed memory is kept small so the RSS limit measures hb, not ASan;
//! - `-print_final_stats=1`, whose `stat::` lines give the figures reported.
//!
//! A finding is a new crash/leak/oom/timeout artifact, or libFuzzer stopping with an error;
//! the task then fails with the artifact and the command that reproduces it. The full output
//! of each run is kept in `<target dir>/fuzz/logs/<target>.log`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::exec::{describe, probe, run_visible};
use crate::setup::{self, Needs};
use crate::Workspace;

/// The fuzz crate, relative to the workspace root.
const FUZZ_DIR: &str = "hb-agent/fuzz";

/// Largest resident set of one fuzzing process. The targets' peak under ASan is below 150 MB
/// (the corpus libFuzzer keeps in memory included); growth past this is a leak or unbounded
/// buffering driven by the input.
pub const RSS_LIMIT_MB: u64 = 512;
/// Largest single allocation: hb reads at most a config file or a packet per input, so any
/// allocation this big is sized by the input's content, not its length.
pub const MALLOC_LIMIT_MB: u64 = 64;
/// One input running this long is a hang (the slowest real input takes milliseconds).
pub const INPUT_TIMEOUT_SECS: u64 = 10;
/// Default run time per target for `cargo xtask fuzz`.
pub const DEFAULT_SECONDS: u64 = 60;
/// ASan settings: the defaults cargo-fuzz sets, plus a 16 MB quarantine (its 256 MB default
/// would count towards the RSS limit as if hb held it).
const ASAN_OPTIONS: &str = "detect_odr_violation=0:quarantine_size_mb=16";
/// How long past its `-max_total_time` a fuzzer may take to stop before it is ended.
const STOP_GRACE: Duration = Duration::from_secs(120);

/// One fuzz target of `hb-agent/fuzz`.
#[derive(Debug, Clone, Copy)]
pub struct FuzzTarget {
    pub name: &'static str,
    /// What it feeds its input to.
    pub what: &'static str,
    /// `-max_len`, when the seeds' size is not the right bound. Packets and ring records
    /// have a fixed size: a little longer (and every shorter length) is all there is to try.
    pub max_len: Option<usize>,
}

/// Every target, in the order they run. A unit test checks this against the fuzz crate's
/// manifest.
pub const TARGETS: &[FuzzTarget] = &[
    FuzzTarget {
        name: "ha_cf",
        what: "ha.cf parser",
        max_len: None,
    },
    FuzzTarget {
        name: "haresources",
        what: "haresources parser, print/re-parse round trip",
        max_len: None,
    },
    FuzzTarget {
        name: "authkeys",
        what: "authkeys parser, no secret in diagnostics",
        max_len: None,
    },
    FuzzTarget {
        name: "wire",
        what: "heartbeat decode, shape check, MAC verify (crc, sha1, md5)",
        max_len: Some(160),
    },
    FuzzTarget {
        name: "ring_event",
        what: "XDP ring-buffer record decode, then MAC verify",
        max_len: Some(224),
    },
];

/// The outcome of fuzzing one target.
#[derive(Debug, Clone, PartialEq)]
pub struct FuzzRun {
    pub target: String,
    /// The time it was given (`-max_total_time`).
    pub seconds: u64,
    /// Inputs executed (`stat::number_of_executed_units`).
    pub executions: u64,
    pub execs_per_sec: u64,
    /// Inputs in the corpus at the end (seeds that add coverage, and what was found).
    pub corpus_entries: u64,
    /// `stat::peak_rss_mb`.
    pub peak_rss_mb: Option<u64>,
    /// Crash, leak, out-of-memory and timeout inputs this run wrote.
    pub findings: Vec<PathBuf>,
    /// libFuzzer's one-line verdict when it stopped on a problem (`SUMMARY:` line, or how it
    /// exited when it wrote none).
    pub problem: Option<String>,
    /// The full libFuzzer output.
    pub log: PathBuf,
    /// The fuzz target binary that ran.
    pub binary: PathBuf,
}

impl FuzzRun {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "target": self.target,
            "seconds": self.seconds,
            "executions": self.executions,
            "execs_per_sec": self.execs_per_sec,
            "corpus_entries": self.corpus_entries,
            "peak_rss_mb": self.peak_rss_mb,
            "findings": self.findings.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "problem": self.problem,
            "log": self.log.display().to_string(),
        })
    }

    /// Whether this run found anything (any finding fails the task).
    pub fn found_something(&self) -> bool {
        !self.findings.is_empty() || self.problem.is_some()
    }
}

/// `cargo xtask fuzz`: set-up, build, run, print the table; fails on any finding.
pub fn run(workspace: &Workspace, seconds: u64, targets: &[String]) -> Result<()> {
    let outcome = setup::ensure(workspace, Needs::FUZZ)?;
    if let Some(why) = missing_prerequisite() {
        bail!("{why}{}", root_hint(&outcome));
    }
    let runs = run_all(workspace, seconds, targets)?;
    println!("{}", markdown(&runs));
    check(&runs)
}

/// Builds every target once, then fuzzes each of `targets` (all when empty) for `seconds`,
/// one after the other. Errors only when fuzzing could not be done at all; what the fuzzers
/// found is in the returned runs.
pub fn run_all(workspace: &Workspace, seconds: u64, targets: &[String]) -> Result<Vec<FuzzRun>> {
    if seconds == 0 {
        bail!("fuzzing for 0 seconds measures nothing");
    }
    let selected = select(targets)?;
    let work_dir = workspace.target_dir()?.join("fuzz");
    let binaries = build(workspace, &work_dir)?;
    let mut runs = Vec::new();
    for target in selected {
        let binary = binaries.join(target.name);
        let fuzz_run = fuzz_one(workspace, target, &binary, &work_dir, seconds)?;
        eprintln!(
            "xtask: fuzz: {}: {} executions ({}/s), corpus {}{}",
            fuzz_run.target,
            fuzz_run.executions,
            fuzz_run.execs_per_sec,
            fuzz_run.corpus_entries,
            if fuzz_run.found_something() {
                ", FOUND SOMETHING"
            } else {
                ", nothing found"
            }
        );
        runs.push(fuzz_run);
    }
    Ok(runs)
}

/// Fails, naming each finding, how to reproduce it and where the full output is, when any
/// run found something.
pub fn check(runs: &[FuzzRun]) -> Result<()> {
    let found: Vec<&FuzzRun> = runs.iter().filter(|run| run.found_something()).collect();
    if found.is_empty() {
        return Ok(());
    }
    let mut text = String::new();
    for run in found {
        text.push_str(&format!(
            "\n  {}: {}",
            run.target,
            run.problem.as_deref().unwrap_or("finding")
        ));
        for artifact in &run.findings {
            text.push_str(&format!(
                "\n    input:     {}\n    reproduce: {}",
                artifact.display(),
                reproduce_command(&run.binary, artifact)
            ));
        }
        text.push_str(&format!("\n    output:    {}", run.log.display()));
    }
    bail!("fuzzing found problems:{text}")
}

/// A command that runs `artifact` through the fuzz target `binary` again, with the same
/// limits, and shows the panic or error with a backtrace.
pub fn reproduce_command(binary: &Path, artifact: &Path) -> String {
    format!(
        "RUST_BACKTRACE=1 ASAN_OPTIONS={ASAN_OPTIONS} {} -rss_limit_mb={RSS_LIMIT_MB} \
         -malloc_limit_mb={MALLOC_LIMIT_MB} {}",
        binary.display(),
        artifact.display()
    )
}

/// A Markdown table of the runs, one row per target.
pub fn markdown(runs: &[FuzzRun]) -> String {
    let mut table = String::from(
        "| target | seconds | executions | exec/s | corpus | peak RSS | findings |\n\
         |---|---:|---:|---:|---:|---:|---|\n",
    );
    for run in runs {
        let findings = if run.found_something() {
            let mut text = run.problem.clone().unwrap_or_else(|| "finding".to_owned());
            for artifact in &run.findings {
                let name = artifact.file_name().map_or_else(
                    || artifact.display().to_string(),
                    |name| name.to_string_lossy().into_owned(),
                );
                text.push_str(&format!(" `{name}`"));
            }
            text
        } else {
            "none".to_owned()
        };
        let rss = run
            .peak_rss_mb
            .map_or_else(|| "?".to_owned(), |mb| format!("{mb} MB"));
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {rss} | {findings} |\n",
            run.target,
            run.seconds,
            group_thousands(run.executions),
            group_thousands(run.execs_per_sec),
            run.corpus_entries,
        ));
    }
    table
}

/// Why fuzzing cannot run on this machine (set-up could not, or may not, provide it).
pub fn missing_prerequisite() -> Option<String> {
    if crate::exec::find_in_path("c++").is_none() {
        return Some(
            "no C++ compiler (`c++`): libFuzzer is built from C++ source; install g++ \
             (`cargo xtask setup` does, as root)"
                .to_owned(),
        );
    }
    None
}

fn root_hint(outcome: &setup::SetupOutcome) -> String {
    if outcome.needs_root.is_empty() {
        String::new()
    } else {
        format!(
            " (set-up needs root for: {})",
            outcome.needs_root.join("; ")
        )
    }
}

/// The targets named (all when none), or an error listing the valid names.
fn select(names: &[String]) -> Result<Vec<&'static FuzzTarget>> {
    if names.is_empty() {
        return Ok(TARGETS.iter().collect());
    }
    let mut selected: Vec<&'static FuzzTarget> = Vec::new();
    for name in names {
        let Some(target) = TARGETS.iter().find(|target| target.name == name) else {
            let known: Vec<&str> = TARGETS.iter().map(|target| target.name).collect();
            bail!(
                "no fuzz target `{name}`; the targets are: {}",
                known.join(", ")
            );
        };
        if !selected.iter().any(|chosen| chosen.name == target.name) {
            selected.push(target);
        }
    }
    Ok(selected)
}

/// `cargo fuzz build` of every target (release, debug assertions, ASan); returns the
/// directory holding the binaries.
fn build(workspace: &Workspace, work_dir: &Path) -> Result<PathBuf> {
    let host = host_triple()?;
    let cargo_target_dir = work_dir.join("build");
    let mut command = nightly_cargo_fuzz(workspace);
    command
        .args(["build", "--fuzz-dir", FUZZ_DIR, "--sanitizer", "address"])
        .args(["--target", &host])
        .arg("--target-dir")
        .arg(&cargo_target_dir);
    run_visible(&mut command).context("building the fuzz targets failed")?;
    Ok(cargo_target_dir.join(host).join("release"))
}

/// `cargo fuzz` through rustup's nightly (the sanitizer flags need it), from the workspace.
fn nightly_cargo_fuzz(workspace: &Workspace) -> Command {
    let mut command = Command::new("rustup");
    command
        .current_dir(workspace.root())
        .args(["run", "nightly", "cargo", "fuzz"])
        // Set by `cargo run` for xtask itself; they must not leak into the nightly build.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_TARGET_DIR");
    command
}

fn host_triple() -> Result<String> {
    let version = probe(Command::new("rustup").args(["run", "nightly", "rustc", "-vV"]))
        .context("`rustup run nightly rustc -vV` failed; run `cargo xtask setup`")?;
    version
        .lines()
        .find_map(|line| line.strip_prefix("host:"))
        .map(|host| host.trim().to_owned())
        .context("`rustc -vV` printed no host triple")
}

/// Runs one target for `seconds` and reads what it reports.
fn fuzz_one(
    workspace: &Workspace,
    target: &FuzzTarget,
    binary: &Path,
    work_dir: &Path,
    seconds: u64,
) -> Result<FuzzRun> {
    let seeds = workspace
        .root()
        .join(FUZZ_DIR)
        .join("seeds")
        .join(target.name);
    let corpus = work_dir.join("corpus").join(target.name);
    let artifacts = work_dir.join("artifacts").join(target.name);
    let logs = work_dir.join("logs");
    for dir in [&corpus, &artifacts, &logs] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if !seeds.is_dir() {
        bail!("{} has no seeds directory {}", target.name, seeds.display());
    }
    let before = list_files(&artifacts)?;
    let log_path = logs.join(format!("{}.log", target.name));
    let log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;

    let mut artifact_prefix = artifacts.clone().into_os_string();
    artifact_prefix.push("/");
    let mut command = Command::new(binary);
    command
        .arg(&corpus)
        .arg(&seeds)
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-malloc_limit_mb={MALLOC_LIMIT_MB}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
        .arg({
            let mut arg = std::ffi::OsString::from("-artifact_prefix=");
            arg.push(&artifact_prefix);
            arg
        });
    if let Some(max_len) = target.max_len {
        command.arg(format!("-max_len={max_len}"));
    }
    command
        .env("ASAN_OPTIONS", asan_options())
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicating the log file")?)
        .stderr(log);
    eprintln!(
        "xtask: fuzz: {} ({}) for {seconds} s: {}",
        target.name,
        target.what,
        describe(&command)
    );
    let mut child = command
        .spawn()
        .with_context(|| format!("could not start {}", binary.display()))?;
    let deadline = Duration::from_secs(seconds) + STOP_GRACE;
    let status = wait_with_deadline(&mut child, deadline)?;

    let output =
        fs::read_to_string(&log_path).with_context(|| format!("reading {}", log_path.display()))?;
    let stats = parse_output(&output);
    let findings: Vec<PathBuf> = list_files(&artifacts)?
        .into_iter()
        .filter(|path| !before.contains(path) && is_finding(path))
        .collect();
    let problem = match status {
        None => Some(format!(
            "did not stop within {} s of its time limit; ended",
            STOP_GRACE.as_secs()
        )),
        Some(status) if !status.success() || !findings.is_empty() => Some(
            stats
                .summary
                .clone()
                .unwrap_or_else(|| format!("libFuzzer exited with {status}")),
        ),
        Some(_) if stats.executions.is_none() => {
            Some("libFuzzer exited without its final statistics".to_owned())
        }
        Some(_) => None,
    };
    if problem.is_some() {
        print_report(&output, &log_path);
    }
    let executions = stats.executions.unwrap_or(0);
    Ok(FuzzRun {
        target: target.name.to_owned(),
        seconds,
        executions,
        // libFuzzer prints 0/s when it stops on a finding within its first second or so.
        execs_per_sec: match stats.execs_per_sec {
            Some(rate) if rate > 0 => rate,
            _ => executions / seconds,
        },
        corpus_entries: stats.corpus_entries.unwrap_or(0),
        peak_rss_mb: stats.peak_rss_mb,
        findings,
        problem,
        log: log_path,
        binary: binary.to_owned(),
    })
}

/// The caller's ASAN_OPTIONS, then ours (later settings win).
fn asan_options() -> String {
    match std::env::var("ASAN_OPTIONS") {
        Ok(theirs) if !theirs.is_empty() => format!("{theirs}:{ASAN_OPTIONS}"),
        _ => ASAN_OPTIONS.to_owned(),
    }
}

/// Waits for `child` (which we started); past `limit`, kills it by its pid and returns `None`.
fn wait_with_deadline(child: &mut Child, limit: Duration) -> Result<Option<ExitStatus>> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().context("waiting for the fuzzer")? {
            return Ok(Some(status));
        }
        if started.elapsed() >= limit {
            eprintln!(
                "xtask: fuzz: pid {} still running after {} s; killing it",
                child.id(),
                limit.as_secs()
            );
            // Only our own child; an error means it has just exited.
            let _ = child.kill();
            child.wait().context("reaping the fuzzer")?;
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Artifact names libFuzzer gives the inputs it stops on.
fn is_finding(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| {
            ["crash-", "leak-", "oom-", "timeout-", "slow-unit-"]
                .iter()
                .any(|prefix| name.starts_with(prefix))
        })
}

fn list_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        files.push(
            entry
                .with_context(|| format!("listing {}", dir.display()))?
                .path(),
        );
    }
    files.sort();
    Ok(files)
}

/// Shows what went wrong: from the first error line (a Rust panic, a sanitizer or libFuzzer
/// error) on, without libFuzzer's progress lines.
fn print_report(output: &str, log_path: &Path) {
    const MAX_LINES: usize = 150;
    let lines: Vec<&str> = output.lines().collect();
    let start = lines
        .iter()
        .position(|line| {
            line.contains("panicked at")
                || line.contains("ERROR: AddressSanitizer")
                || line.contains("ERROR: LeakSanitizer")
                || line.contains("ERROR: libFuzzer")
        })
        .unwrap_or_else(|| lines.len().saturating_sub(40));
    eprintln!("xtask: fuzz: ---- from {} ----", log_path.display());
    for line in lines[start..].iter().take(MAX_LINES) {
        eprintln!("{line}");
    }
    if lines.len() - start > MAX_LINES {
        eprintln!(
            "xtask: fuzz: ... ({} more lines in {})",
            lines.len() - start - MAX_LINES,
            log_path.display()
        );
    }
    eprintln!("xtask: fuzz: ----");
}

/// What a libFuzzer run reported about itself.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct LibFuzzerStats {
    executions: Option<u64>,
    execs_per_sec: Option<u64>,
    corpus_entries: Option<u64>,
    peak_rss_mb: Option<u64>,
    /// `SUMMARY: libFuzzer: deadly signal` and the like, without the prefix.
    summary: Option<String>,
}

/// Reads libFuzzer's output: the `stat::` lines of `-print_final_stats=1`, the corpus size
/// from its last status line (`#N DONE cov: .. corp: 22/1681b ..`), and any `SUMMARY:` line.
fn parse_output(output: &str) -> LibFuzzerStats {
    let mut stats = LibFuzzerStats::default();
    for line in output.lines() {
        let line = line.trim();
        if let Some((name, value)) = line
            .strip_prefix("stat::")
            .and_then(|rest| rest.split_once(':'))
        {
            let value = value.trim().parse::<u64>().ok();
            match name {
                "number_of_executed_units" => stats.executions = value,
                "average_exec_per_sec" => stats.execs_per_sec = value,
                "peak_rss_mb" => stats.peak_rss_mb = value,
                _ => {}
            }
        } else if let Some(summary) = line.strip_prefix("SUMMARY: ") {
            let summary = summary.strip_prefix("libFuzzer: ").unwrap_or(summary);
            // A sanitizer's summary comes first and says more than libFuzzer's.
            stats.summary.get_or_insert_with(|| summary.to_owned());
        } else if line.starts_with('#') {
            if let Some(corpus) = status_corpus(line) {
                stats.corpus_entries = Some(corpus);
            }
        }
    }
    stats
}

/// The `N` of `corp: N/SIZE` in a status line.
fn status_corpus(line: &str) -> Option<u64> {
    let mut words = line.split_whitespace();
    words.find(|word| *word == "corp:")?;
    words.next()?.split('/').next()?.parse().ok()
}

/// 1234567 → "1 234 567" (thin groups read well in a table).
fn group_thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clean 11 s run of the `wire` target (progress lines shortened).
    const CLEAN_RUN: &str = "\
INFO: Running with entropic power schedule (0xFF, 100).
INFO: Seed: 191317290
INFO: Loaded 1 modules   (4596 inline 8-bit counters): 4596 [0x55ccb2431830, 0x55ccb2432a24), 
INFO: Loaded 1 PC tables (4596 PCs): 4596 [0x55ccb2432a28,0x55ccb2444968), 
INFO:        0 files found in /tmp/fz/corpus
INFO:       18 files found in /work/main/hb-agent/fuzz/seeds/wire
INFO: seed corpus: files: 18 min: 80b max: 80b total: 1440b rss: 33Mb
#19	INITED cov: 248 ft: 254 corp: 4/320b exec/s: 0 rss: 36Mb
#20	NEW    cov: 249 ft: 294 corp: 5/400b lim: 80 exec/s: 0 rss: 37Mb L: 80/80 MS: 1 ChangeASCIIInt-
#3814	REDUCE cov: 272 ft: 405 corp: 22/1681b lim: 80 exec/s: 0 rss: 43Mb L: 1/80 MS: 3 ChangeBit-ChangeBit-EraseBytes-
#524288	pulse  cov: 272 ft: 405 corp: 22/1681b lim: 160 exec/s: 174762 rss: 130Mb
#2035629	DONE   cov: 272 ft: 405 corp: 22/1681b lim: 160 exec/s: 185057 rss: 266Mb
###### Recommended dictionary. ######
\"\\001\\000\" # Uses: 183895
###### End of recommended dictionary. ######
Done 2035629 runs in 11 second(s)
stat::number_of_executed_units: 2035629
stat::average_exec_per_sec:     185057
stat::new_units_added:          33
stat::slowest_unit_time_sec:    0
stat::peak_rss_mb:              266
";

    /// A Rust panic found by libFuzzer (ASan's backtrace cut short).
    const PANIC_RUN: &str = "\
#6	NEW    cov: 21 ft: 21 corp: 2/4b lim: 4 exec/s: 0 rss: 34Mb L: 3/3 MS: 2 InsertByte-CopyPart-
#43714	NEW    cov: 23 ft: 23 corp: 4/118b lim: 118 exec/s: 0 rss: 133Mb L: 114/114 MS: 3 CMP-
thread '<unnamed>' panicked at fuzz_targets/boom.rs:5:9:
boom at 117
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace
==2957== ERROR: libFuzzer: deadly signal
    #0 0x55851efa8bb1 in __sanitizer_print_stack_trace /rustc/llvm/src/llvm-project/compiler-rt/lib/asan/asan_stack.cpp:87:3
    #17 0x55851efaae87 in boom::_::__libfuzzer_sys_run /tmp/fztest/fuzz/fuzz_targets/boom.rs:5:9

NOTE: libFuzzer has rudimentary signal handlers.
      Combine libFuzzer with AddressSanitizer or similar for better crash reports.
SUMMARY: libFuzzer: deadly signal
MS: 3 CMP-ChangeBinInt-InsertRepeatedBytes- DE: \"\\377\\377\\377\\377\"-; base unit: 38cbcb716a98c139dcbc54e84b17e5b45baef343
0x58,0x59,0x59,0xff,
XYY\\377
artifact_prefix='/tmp/fz/boom/art/'; Test unit written to /tmp/fz/boom/art/crash-59f988fc7b780a8ca08c83751023ad8eb02be361
Base64: WFlZ/w==
stat::number_of_executed_units: 43714
stat::average_exec_per_sec:     0
stat::new_units_added:          5
stat::slowest_unit_time_sec:    0
stat::peak_rss_mb:              133
";

    /// One allocation over `-malloc_limit_mb=64`.
    const MALLOC_LIMIT_RUN: &str = "\
#6	NEW    cov: 19 ft: 19 corp: 2/5b lim: 4 exec/s: 0 rss: 34Mb L: 4/4 MS: 1 InsertByte-
==2934== ERROR: libFuzzer: out-of-memory (malloc(104857600))
   To change the out-of-memory limit use -rss_limit_mb=<N>

    #0 0x557444d1f6b1 in __sanitizer_print_stack_trace /rustc/llvm/src/llvm-project/compiler-rt/lib/asan/asan_stack.cpp:87:3
    #19 0x557444d52b3e in big::_::__libfuzzer_sys_run /tmp/fztest/fuzz/fuzz_targets/big.rs:5:17

MS: 3 InsertByte-ChangeByte-ShuffleBytes-; base unit: fab4f0f393499e4b15e1f57239e72d5bba7137a1
0x42,0xf8,0xff,0xff,0xff,0xff,0xff,0xff,0xa,
B\\370\\377\\377\\377\\377\\377\\377\\012
artifact_prefix='/tmp/fz/big/art/'; Test unit written to /tmp/fz/big/art/oom-ecc96addc0a06388b4ade232ea364c8e36235877
Base64: Qvj///////8K
SUMMARY: libFuzzer: out-of-memory
stat::number_of_executed_units: 2801
stat::average_exec_per_sec:     0
stat::new_units_added:          2
stat::slowest_unit_time_sec:    0
stat::peak_rss_mb:              40
";

    /// Memory growing across inputs past `-rss_limit_mb=100`.
    const RSS_LIMIT_RUN: &str = "\
#6	NEW    cov: 21 ft: 21 corp: 2/3b lim: 4 exec/s: 0 rss: 34Mb L: 2/2 MS: 2 ChangeBit-CrossOver-
==3115== ERROR: libFuzzer: out-of-memory (used: 102Mb; limit: 100Mb)
   To change the out-of-memory limit use -rss_limit_mb=<N>

Live Heap Allocations: 80326289 bytes in 940 chunks; quarantined: 624 bytes in 66 chunks; 33468 other chunks; total chunks: 34474; showing top 95% (at most 8 unique contexts)
27852800 byte(s) (34%) in 425 allocation(s)

MS: 2 CopyPart-ChangeBinInt-; base unit: 11d7d7ce0b68973d37325a5b3f1fdcf7d2e88954


artifact_prefix='/tmp/fz/grow/art/'; Test unit written to /tmp/fz/grow/art/oom-da39a3ee5e6b4b0d3255bfef95601890afd80709
Base64: 
SUMMARY: libFuzzer: out-of-memory
stat::number_of_executed_units: 870
stat::average_exec_per_sec:     124
stat::new_units_added:          1
stat::slowest_unit_time_sec:    0
stat::peak_rss_mb:              103
";

    #[test]
    fn reads_a_clean_run() {
        assert_eq!(
            parse_output(CLEAN_RUN),
            LibFuzzerStats {
                executions: Some(2_035_629),
                execs_per_sec: Some(185_057),
                corpus_entries: Some(22),
                peak_rss_mb: Some(266),
                summary: None,
            }
        );
    }

    #[test]
    fn reads_a_panic() {
        let stats = parse_output(PANIC_RUN);
        assert_eq!(stats.executions, Some(43_714));
        assert_eq!(stats.execs_per_sec, Some(0));
        assert_eq!(stats.corpus_entries, Some(4));
        assert_eq!(stats.summary.as_deref(), Some("deadly signal"));
    }

    #[test]
    fn reads_both_memory_limits() {
        for output in [MALLOC_LIMIT_RUN, RSS_LIMIT_RUN] {
            let stats = parse_output(output);
            assert_eq!(stats.summary.as_deref(), Some("out-of-memory"));
            assert!(stats.executions.is_some());
        }
        assert_eq!(parse_output(RSS_LIMIT_RUN).peak_rss_mb, Some(103));
    }

    #[test]
    fn a_sanitizer_summary_wins_over_libfuzzers() {
        let output = "SUMMARY: AddressSanitizer: heap-buffer-overflow x.rs:3 in f\n\
                      SUMMARY: libFuzzer: deadly signal\n";
        assert_eq!(
            parse_output(output).summary.as_deref(),
            Some("AddressSanitizer: heap-buffer-overflow x.rs:3 in f")
        );
    }

    #[test]
    fn truncated_output_has_no_figures() {
        let stats = parse_output("INFO: Seed: 1\n#19\tINITED cov: 248 ft: 254 corp: 4/320b\n");
        assert_eq!(stats.executions, None);
        assert_eq!(stats.corpus_entries, Some(4));
        assert_eq!(parse_output(""), LibFuzzerStats::default());
    }

    #[test]
    fn only_libfuzzer_artifacts_are_findings() {
        for name in [
            "crash-59f988fc7b780a8ca08c83751023ad8eb02be361",
            "oom-ecc96addc0a06388b4ade232ea364c8e36235877",
            "leak-0a",
            "timeout-0b",
            "slow-unit-0c",
        ] {
            assert!(is_finding(
                Path::new("/t/artifacts/wire").join(name).as_path()
            ));
        }
        assert!(!is_finding(Path::new("/t/artifacts/wire/README")));
        assert!(!is_finding(Path::new("/t/artifacts/wire/.crash-0")));
    }

    #[test]
    fn selects_targets_by_name() {
        assert_eq!(select(&[]).unwrap().len(), TARGETS.len());
        let chosen = select(&["wire".to_owned(), "ha_cf".to_owned(), "wire".to_owned()]).unwrap();
        let names: Vec<&str> = chosen.iter().map(|target| target.name).collect();
        assert_eq!(names, ["wire", "ha_cf"]);
        let err = select(&["nope".to_owned()]).unwrap_err().to_string();
        assert!(err.contains("ring_event"), "{err}");
    }

    #[test]
    fn every_fuzz_crate_target_is_known_and_has_seeds() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(FUZZ_DIR);
        let manifest = fs::read_to_string(root.join("Cargo.toml")).unwrap();
        let mut names: Vec<&str> = manifest
            .lines()
            .filter_map(|line| line.trim().strip_prefix("name = \""))
            .filter_map(|rest| rest.strip_suffix('"'))
            .filter(|name| *name != "hb-agent-fuzz")
            .collect();
        names.sort_unstable();
        let mut known: Vec<&str> = TARGETS.iter().map(|target| target.name).collect();
        known.sort_unstable();
        assert_eq!(names, known);
        for target in TARGETS {
            let seeds = root.join("seeds").join(target.name);
            let count = fs::read_dir(&seeds).map(|dir| dir.count()).unwrap_or(0);
            assert!(count > 0, "no seeds in {}", seeds.display());
        }
    }

    #[test]
    fn renders_a_table() {
        let clean = FuzzRun {
            target: "wire".to_owned(),
            seconds: 60,
            executions: 11_034_567,
            execs_per_sec: 183_909,
            corpus_entries: 22,
            peak_rss_mb: Some(71),
            findings: Vec::new(),
            problem: None,
            log: PathBuf::from("/t/fuzz/logs/wire.log"),
            binary: PathBuf::from("/t/fuzz/build/release/wire"),
        };
        let found = FuzzRun {
            target: "ha_cf".to_owned(),
            executions: 870,
            execs_per_sec: 14,
            corpus_entries: 2,
            peak_rss_mb: None,
            findings: vec![PathBuf::from("/t/fuzz/artifacts/ha_cf/oom-da39")],
            problem: Some("out-of-memory".to_owned()),
            ..clean.clone()
        };
        assert!(!clean.found_something());
        assert!(found.found_something());
        assert_eq!(
            markdown(&[clean, found]),
            "| target | seconds | executions | exec/s | corpus | peak RSS | findings |\n\
             |---|---:|---:|---:|---:|---:|---|\n\
             | wire | 60 | 11 034 567 | 183 909 | 22 | 71 MB | none |\n\
             | ha_cf | 60 | 870 | 14 | 2 | ? | out-of-memory `oom-da39` |\n"
        );
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1 000");
        assert_eq!(group_thousands(2_035_629), "2 035 629");
    }
}
