//! Writes the generated seed corpora, `seeds/wire/` and `seeds/ring_event/`, from the agent's
//! own packet builder (see `seeds/README`). Run from anywhere:
//!
//! ```text
//! cargo run --manifest-path hb-agent/fuzz/Cargo.toml --example write_seeds
//! cargo run --manifest-path hb-agent/fuzz/Cargo.toml --example write_seeds -- --check
//! ```
//!
//! The output is deterministic; `--check` writes nothing and fails if the committed files
//! differ from what would be written (a changed wire format or builder needs new seeds).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use hb_agent_fuzz::Seed;

fn main() -> ExitCode {
    let check = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--check") => true,
        Some(other) => {
            eprintln!("write_seeds: unknown argument `{other}` (only --check)");
            return ExitCode::FAILURE;
        }
    };
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let mut stale = Vec::new();
    for (target, set) in [
        ("wire", hb_agent_fuzz::wire_seeds()),
        ("ring_event", hb_agent_fuzz::ring_seeds()),
    ] {
        match sync(&seeds.join(target), &set, check) {
            Ok(mut differing) => stale.append(&mut differing),
            Err(err) => {
                eprintln!("write_seeds: {}: {err}", seeds.join(target).display());
                return ExitCode::FAILURE;
            }
        }
    }
    if check && !stale.is_empty() {
        for path in &stale {
            eprintln!("write_seeds: out of date: {}", path.display());
        }
        eprintln!("write_seeds: run it without --check to regenerate");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Makes `dir` hold exactly `set` (or, with `check`, lists where it does not); returns the
/// files that differed.
fn sync(dir: &Path, set: &[Seed], check: bool) -> std::io::Result<Vec<PathBuf>> {
    let mut differing = Vec::new();
    if !check {
        fs::create_dir_all(dir)?;
    }
    let wanted: Vec<PathBuf> = set.iter().map(|seed| dir.join(&seed.name)).collect();
    for (seed, path) in set.iter().zip(&wanted) {
        if fs::read(path).ok().as_deref() != Some(seed.bytes.as_slice()) {
            if !check {
                fs::write(path, &seed.bytes)?;
            }
            differing.push(path.clone());
        }
    }
    if dir.is_dir() {
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if !wanted.contains(&path) {
                if !check {
                    fs::remove_file(&path)?;
                }
                differing.push(path);
            }
        }
    }
    let verb = if check { "differ" } else { "written" };
    println!(
        "write_seeds: {}: {} seeds, {} {verb}",
        dir.display(),
        set.len(),
        differing.len()
    );
    Ok(differing)
}
