//! The CI version of the long run (issue 7): two minutes of random faults against two real
//! agents, with the invariants of [`hb_tests::chaos`] checked after every one. The benchmark
//! job runs the same for 30 minutes (`cargo xtask bench`).
//!
//! `HB_CHAOS_SECONDS` changes the duration, `HB_CHAOS_SEED` replays a run (the seed is
//! printed first). The report is printed as Markdown and written as JSON to
//! `$HB_CHAOS_REPORT` when that is set.

use std::time::Duration;

use hb_tests::chaos::{run_chaos, seed_from_env};
use hb_tests::{require_root, write_stderr_line};

/// Fewer faults than this in two minutes means the run mostly waited, not tested.
const MIN_FAULTS: usize = 8;

#[test]
fn random_faults_keep_exactly_one_holder_and_the_vip_answering() {
    if !require_root("random_faults_keep_exactly_one_holder_and_the_vip_answering") {
        return;
    }
    let seconds: u64 = std::env::var("HB_CHAOS_SECONDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(120);
    let seed = seed_from_env();
    let report = run_chaos("chaos", Duration::from_secs(seconds), seed, &mut |line| {
        write_stderr_line(line)
    })
    .expect("the cluster starts");
    write_stderr_line(&report.markdown());
    if let Some(path) = std::env::var_os("HB_CHAOS_REPORT") {
        let json = serde_json::to_string_pretty(&report).expect("the report serializes");
        std::fs::write(&path, json).expect("write the JSON report");
    }
    assert!(
        report.violations.is_empty(),
        "invariant violations (seed {seed}, rerun with HB_CHAOS_SEED={seed}):\n{:#?}",
        report.violations
    );
    let wanted = MIN_FAULTS * usize::try_from(seconds).unwrap_or(usize::MAX) / 120;
    assert!(
        report.faults.len() >= wanted.max(1),
        "{} faults injected in {seconds} s (seed {seed}), wanted at least {wanted}",
        report.faults.len()
    );
    assert!(
        report
            .faults
            .iter()
            .all(|fault| fault.settled_after_ms.is_some()),
        "every fault settled: {:#?}",
        report.faults
    );
}
