//! `cargo xtask`: the project's tasks, so a newcomer needs no other instructions.
//!
//! - `setup`: make this machine ready (nightly rust-src, bpf-linker against nightly's LLVM,
//!   Debian packages, bpffs), idempotently and quickly when nothing is missing.
//! - `build`: set-up checks, then build the agent (its build script builds the XDP program).
//! - `test`: what CI runs: set-up, rustfmt, clippy, build, unit and privileged tests.
//! - `run`: build, then run `hb-agent` as root with the given arguments.
//! - `demo`: build, then show a failover cluster at work in network namespaces, measured.
//! - `bench`: build, then measure hb's failover against keepalived and Heartbeat.
//! - `fuzz`: build the cargo-fuzz targets and run each for a while; fails on any finding.
//! - `install`/`uninstall`: the release agent, its systemd unit and example configuration.

mod bench;
mod demo;
mod exec;
mod fuzz;
mod install;
mod setup;
mod test;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use crate::setup::{Needs, SetupOutcome};

#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Set up, build, test and run hb",
    long_about = "Set up, build, test and run hb.\n\n\
        Every command first checks the machine set-up and does whatever is missing, so on a \
        fresh Debian 12 machine `cargo xtask demo` or `cargo xtask test` is enough."
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand, Debug)]
enum Task {
    /// Make this machine ready: nightly rust-src, bpf-linker 0.13.0 built against the nightly
    /// toolchain's LLVM, the Debian packages the tests use, bpffs at /sys/fs/bpf. Idempotent;
    /// parts need root (it says which).
    Setup,
    /// Build hb-agent and its XDP program (after the set-up checks).
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Run everything CI runs: set-up, `cargo fmt --check`, clippy with -D warnings, build, and
    /// the unit and privileged tests (privileged tests are skipped, and say so, without root).
    Test {
        /// Stop the test step (and clean up) if it runs longer than this.
        #[arg(long, default_value_t = 60, value_name = "MINUTES")]
        timeout_minutes: u64,
        /// Extra arguments for the test binaries, e.g. a name filter.
        #[arg(last = true, value_name = "TEST ARGS")]
        test_args: Vec<OsString>,
    },
    /// Build, then run hb-agent with the given arguments as root (through sudo when needed),
    /// e.g. `cargo xtask run -- run --config-dir /etc/ha.d`.
    Run {
        /// Build and run the release profile.
        #[arg(long)]
        release: bool,
        /// Arguments for hb-agent.
        #[arg(last = true, value_name = "AGENT ARGS")]
        agent_args: Vec<OsString>,
    },
    /// Build, then show hb at work (as root): a client, two balancers (hb-agent, nginx) and
    /// three web servers in network namespaces; node death, failback, standby and clean stop,
    /// each outage measured from the client. Removes everything it made, also on Ctrl-C.
    Demo {
        /// Leave the cluster running afterwards and print how to reach it.
        #[arg(long)]
        keep: bool,
        /// Remove kept demo clusters, then exit.
        #[arg(long, conflicts_with_all = ["keep", "release"])]
        clean: bool,
        /// Build and run the release profile.
        #[arg(long)]
        release: bool,
        /// ha.cf keepalive for the demo cluster, in milliseconds.
        #[arg(long, default_value_t = 10, value_name = "MS")]
        keepalive: u32,
        /// ha.cf deadtime for the demo cluster, in milliseconds.
        #[arg(long, default_value_t = 50, value_name = "MS")]
        deadtime: u32,
    },
    /// Build, then measure (as root) hb's failover against keepalived and Heartbeat on one
    /// lab topology: outages from a client's view, false failovers, CPU cost. Writes
    /// results.json, results.md and outages.png; the full run takes about 95 minutes (the
    /// failover part about 45).
    Bench {
        /// A sanity run of a few minutes (few trials, short windows) instead.
        #[arg(long)]
        quick: bool,
        /// Where to write the results (default: <target dir>/bench).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Run only one part: `failover` (stability ladder and outage trials) or `flood`.
        #[arg(long, value_enum, value_name = "SECTION")]
        only: Option<bench::Section>,
    },
    /// Build the fuzz targets (config parsers, heartbeat decoder, ring-buffer records) and run
    /// each from its seeds for a while, with memory limits; prints executions, exec/s, corpus
    /// size and findings, and fails on any crash, leak, out-of-memory or hang.
    Fuzz {
        /// Fuzzing time per target.
        #[arg(long, default_value_t = fuzz::DEFAULT_SECONDS, value_name = "N")]
        seconds: u64,
        /// Fuzz only this target (repeatable); default: all.
        #[arg(long = "target", value_name = "NAME")]
        targets: Vec<String>,
    },
    /// Build the release agent and install it: PREFIX/sbin/hb-agent, the hb-agent.service
    /// unit, and ha.cf/haresources templates and an authkeys with a random key in /etc/ha.d
    /// (only where absent: existing configuration is never overwritten).
    Install(install::InstallArgs),
    /// Remove the binary, the unit and the documentation; /etc/ha.d is left as it is.
    Uninstall(install::InstallArgs),
}

/// Where the workspace is and which cargo runs us.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
    cargo: OsString,
}

impl Workspace {
    fn discover() -> Result<Workspace> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("xtask's manifest directory has no parent")?
            .to_path_buf();
        // `cargo run` tells us which cargo it is; use the same one for every nested build.
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
        Ok(Workspace { root, cargo })
    }

    /// The workspace root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A `cargo` command running in the workspace root.
    pub fn cargo(&self) -> Command {
        let mut command = Command::new(&self.cargo);
        command.current_dir(&self.root);
        command
    }

    /// The target directory cargo uses for this workspace (honours CARGO_TARGET_DIR and
    /// cargo configuration).
    pub fn target_dir(&self) -> Result<PathBuf> {
        let output = self
            .cargo()
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .stderr(std::process::Stdio::inherit())
            .output()
            .context("running cargo metadata")?;
        if !output.status.success() {
            bail!("cargo metadata failed ({})", output.status);
        }
        let metadata: serde_json::Value =
            serde_json::from_slice(&output.stdout).context("parsing cargo metadata")?;
        metadata["target_directory"]
            .as_str()
            .map(PathBuf::from)
            .context("cargo metadata has no target_directory")
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = Workspace::discover().and_then(|workspace| match cli.task {
        Task::Setup => setup_task(&workspace),
        Task::Build { release } => build_task(&workspace, release).map(|_| ()),
        Task::Test {
            timeout_minutes,
            test_args,
        } => test::run(&workspace, timeout_minutes, &test_args),
        Task::Run {
            release,
            agent_args,
        } => run_task(&workspace, release, &agent_args),
        Task::Demo { clean: true, .. } => demo::clean(),
        Task::Demo {
            keep,
            release,
            keepalive,
            deadtime,
            clean: false,
        } => demo::run(
            &workspace,
            &demo::DemoOptions {
                keep,
                release,
                keepalive_ms: keepalive,
                deadtime_ms: deadtime,
            },
        ),
        Task::Fuzz { seconds, targets } => fuzz::run(&workspace, seconds, &targets),
        Task::Install(args) => install::install(&workspace, &args),
        Task::Uninstall(args) => install::uninstall(&args),
        Task::Bench { quick, out, only } => bench::run(
            &workspace,
            &bench::BenchOptions {
                quick,
                out_dir: out,
                only,
            },
        ),
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn setup_task(workspace: &Workspace) -> Result<()> {
    let outcome = setup::ensure(workspace, Needs::EVERYTHING)?;
    fail_on_root_steps(&outcome)
}

/// Fails, naming the steps and how to run them, when set-up left steps that need root.
fn fail_on_root_steps(outcome: &SetupOutcome) -> Result<()> {
    if outcome.needs_root.is_empty() {
        return Ok(());
    }
    bail!(
        "these set-up steps need root and were not done:\n  - {}\nrun them as root, e.g. \
         `sudo env \"PATH=$PATH\" cargo xtask setup`",
        outcome.needs_root.join("\n  - ")
    )
}

/// Set-up checks for building, then `cargo build` of the agent; returns the binary's path.
fn build_task(workspace: &Workspace, release: bool) -> Result<PathBuf> {
    setup::ensure(workspace, Needs::TOOLCHAIN)?;
    exec::build_agent(workspace, release)
}

fn run_task(workspace: &Workspace, release: bool, agent_args: &[OsString]) -> Result<()> {
    if setup::is_root() {
        // The agent pins its maps on bpffs: make sure it is mounted too.
        let outcome = setup::ensure(workspace, Needs::TOOLCHAIN_AND_BPFFS)?;
        fail_on_root_steps(&outcome)?;
        let agent = exec::build_agent(workspace, release)?;
        return exec::replace_process(Command::new(&agent).args(agent_args));
    }
    let agent = build_task(workspace, release)?;
    let Some(sudo) = exec::find_in_path("sudo") else {
        bail!(
            "hb-agent needs root (XDP, BPF maps, addresses, raw sockets) and sudo is not \
             installed: run this command as root, or run {} as root yourself",
            agent.display()
        );
    };
    eprintln!("xtask: hb-agent needs root; running it through sudo");
    exec::replace_process(
        Command::new(sudo)
            .arg("--preserve-env=RUST_LOG")
            .arg("--")
            .arg(&agent)
            .args(agent_args),
    )
}
