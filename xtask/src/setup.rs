//! Machine set-up: everything hb needs beyond a stock Rust install on Debian 12, checked
//! quickly and done only when missing.
//!
//! - nightly's `rust-src` (the XDP program is built with `-Z build-std=core`);
//! - bpf-linker 0.13.0 linked against the nightly toolchain's own libLLVM (the LLVM major must
//!   match the one rustc emits bitcode for), through a small prefix directory holding
//!   `lib/libLLVM.so` that points at the toolchain's library;
//! - cargo-fuzz, pinned, for the fuzz targets (`cargo xtask fuzz`, the test's fuzz smoke step);
//! - the Debian packages the tests, demo and benchmark use;
//! - bpffs at /sys/fs/bpf (systemd mounts it on a normal boot; minimal VMs and containers may
//!   not have it).

use std::fs;
use std::ops::RangeInclusive;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::exec::{probe, run_visible};
use crate::Workspace;

/// The bpf-linker release the eBPF build is verified with.
pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// The cargo-fuzz release the fuzz targets are built and run with.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// LLVM majors bpf-linker 0.13.0 has a feature for (`llvm-21` ... `llvm-23`).
const BPF_LINKER_LLVM_MAJORS: RangeInclusive<u32> = 21..=23;

/// Debian packages the project uses, and why.
pub const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    (
        "bpftool",
        "inspect the XDP program and its pinned maps (tests read its JSON)",
    ),
    (
        "iproute2",
        "network namespaces, veth links and bridges for tests and the demo",
    ),
    (
        "nginx-light",
        "the service hb manages in tests and the demo",
    ),
    ("tcpdump", "watch heartbeats on the wire"),
    (
        "stress-ng",
        "CPU starvation in hardening tests and the benchmark",
    ),
    ("keepalived", "benchmark baseline: VRRP failover"),
    ("heartbeat", "benchmark baseline: Linux-HA Heartbeat 3.0.6"),
    ("nftables", "packet loss on the test switch"),
    ("g++", "builds libFuzzer (C++) for the fuzz targets"),
    ("iputils-ping", "reachability checks in tests"),
    ("curl", "client requests in the demo"),
    ("fonts-dejavu-core", "the font of the benchmark's chart"),
    (
        "systemd",
        "systemd-analyze verify of the hb-agent unit in the tests",
    ),
];

/// Pid files the packages' services would write if their install started them.
const SERVICE_PID_FILES: &[&str] = &[
    "/run/nginx.pid",
    "/run/keepalived.pid",
    "/run/heartbeat.pid",
];

const BPFFS_MOUNT_POINT: &str = "/sys/fs/bpf";
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// Which parts of the set-up a task needs.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    toolchain: bool,
    fuzz: bool,
    packages: bool,
    bpffs: bool,
}

impl Needs {
    /// Enough to build: nightly rust-src and bpf-linker.
    pub const TOOLCHAIN: Needs = Needs {
        toolchain: true,
        fuzz: false,
        packages: false,
        bpffs: false,
    };
    /// Building, and bpffs for running the agent.
    pub const TOOLCHAIN_AND_BPFFS: Needs = Needs {
        toolchain: true,
        fuzz: false,
        packages: false,
        bpffs: true,
    };
    /// Building, and cargo-fuzz (libFuzzer's C++ compiler, g++, is one of the packages: the
    /// fuzz task says so when it is missing rather than installing all of them).
    pub const FUZZ: Needs = Needs {
        toolchain: true,
        fuzz: true,
        packages: false,
        bpffs: false,
    };
    /// Everything: building, testing (fuzzing included), the demo.
    pub const EVERYTHING: Needs = Needs {
        toolchain: true,
        fuzz: true,
        packages: true,
        bpffs: true,
    };
}

/// What set-up could not do because it needs root.
#[derive(Debug, Default)]
pub struct SetupOutcome {
    /// One line per step left undone, saying what it would do.
    pub needs_root: Vec<String>,
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Checks what `needs` asks for and does whatever is missing. Steps that need root are done
/// when root and listed in the outcome otherwise; anything that fails is an error saying what
/// could not be installed and why.
pub fn ensure(workspace: &Workspace, needs: Needs) -> Result<SetupOutcome> {
    let started = Instant::now();
    let mut outcome = SetupOutcome::default();
    let mut ready = Vec::new();

    if needs.toolchain {
        let nightly = Nightly::detect()?;
        ensure_rust_src(&nightly)?;
        ensure_bpf_linker(workspace, &nightly)?;
        ready.push(format!(
            "nightly {} with rust-src, bpf-linker {BPF_LINKER_VERSION} (LLVM {})",
            nightly.release, nightly.llvm_major
        ));
    }
    if needs.fuzz {
        ensure_cargo_fuzz(workspace)?;
        ready.push(format!("cargo-fuzz {CARGO_FUZZ_VERSION}"));
    }
    if needs.packages {
        match ensure_packages()? {
            PackageState::Ready => ready.push(format!("{} Debian packages", DEBIAN_PACKAGES.len())),
            PackageState::NeedRoot(missing) => outcome
                .needs_root
                .push(format!("install Debian packages: {}", missing.join(" "))),
        }
    }
    if needs.bpffs {
        if bpffs_mounted()? {
            ready.push(format!("bpffs at {BPFFS_MOUNT_POINT}"));
        } else if is_root() {
            mount_bpffs()?;
            ready.push(format!("bpffs at {BPFFS_MOUNT_POINT}"));
        } else {
            outcome
                .needs_root
                .push(format!("mount bpffs: mount -t bpf bpf {BPFFS_MOUNT_POINT}"));
        }
    }

    eprintln!(
        "xtask: setup: {} ({:.1} s)",
        if ready.is_empty() {
            "nothing ready".to_owned()
        } else {
            format!("ready: {}", ready.join("; "))
        },
        started.elapsed().as_secs_f64()
    );
    for step in &outcome.needs_root {
        eprintln!("xtask: setup: needs root, not done: {step}");
    }
    Ok(outcome)
}

// -------------------------------------------------------------------- toolchain

/// The nightly toolchain as rustup runs it.
#[derive(Debug)]
struct Nightly {
    release: String,
    llvm_major: u32,
    sysroot: PathBuf,
}

impl Nightly {
    fn detect() -> Result<Nightly> {
        let version = match nightly_version() {
            Some(version) => version,
            None => {
                eprintln!("xtask: setup: the nightly toolchain is missing; installing it");
                run_visible(Command::new("rustup").args([
                    "toolchain",
                    "install",
                    "nightly",
                    "--profile",
                    "minimal",
                    "--component",
                    "rust-src",
                ]))
                .context(
                    "the XDP program needs a nightly Rust toolchain (for -Z build-std) and \
                     `rustup toolchain install nightly` did not succeed",
                )?;
                nightly_version().context("nightly was installed but `rustc -vV` still fails")?
            }
        };
        let (release, llvm_major) = parse_rustc_version(&version)
            .with_context(|| format!("unexpected `rustc -vV` output from nightly:\n{version}"))?;
        let sysroot =
            probe(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))
                .context("`rustup run nightly rustc --print sysroot` failed")?;
        Ok(Nightly {
            release,
            llvm_major,
            sysroot: PathBuf::from(sysroot.trim()),
        })
    }
}

fn nightly_version() -> Option<String> {
    probe(Command::new("rustup").args(["run", "nightly", "rustc", "-vV"]))
}

/// The release and LLVM major from `rustc -vV` output.
fn parse_rustc_version(text: &str) -> Option<(String, u32)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .map(|value| value.trim().to_owned())
    };
    let release = field("release:")?;
    let llvm = field("LLVM version:")?;
    let major = llvm.split('.').next()?.parse().ok()?;
    Some((release, major))
}

fn ensure_rust_src(nightly: &Nightly) -> Result<()> {
    let library = nightly.sysroot.join("lib/rustlib/src/rust/library/core");
    if library.is_dir() {
        return Ok(());
    }
    eprintln!("xtask: setup: adding rust-src to nightly (the XDP program builds core from source)");
    run_visible(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
    .context("could not add the rust-src component to the nightly toolchain")
}

fn ensure_bpf_linker(workspace: &Workspace, nightly: &Nightly) -> Result<()> {
    // Probe it as the eBPF build runs it: through rustup with nightly, which puts nightly's
    // libLLVM on the library path. A linker built against another LLVM fails to load here.
    let expected = format!("bpf-linker {BPF_LINKER_VERSION}");
    let installed =
        probe(Command::new("rustup").args(["run", "nightly", "bpf-linker", "--version"]));
    if installed.as_deref().map(str::trim) == Some(expected.as_str()) {
        return Ok(());
    }
    match &installed {
        Some(other) => eprintln!(
            "xtask: setup: found {}, need {expected} for nightly's LLVM {}; rebuilding",
            other.trim(),
            nightly.llvm_major
        ),
        None => eprintln!(
            "xtask: setup: bpf-linker is missing or cannot load nightly's LLVM {}; building {expected}",
            nightly.llvm_major
        ),
    }
    install_bpf_linker(workspace, nightly)?;
    let now = probe(Command::new("rustup").args(["run", "nightly", "bpf-linker", "--version"]));
    if now.as_deref().map(str::trim) != Some(expected.as_str()) {
        bail!(
            "bpf-linker was installed but `rustup run nightly bpf-linker --version` prints {:?}, \
             not {expected:?}; is another bpf-linker earlier on PATH?",
            now.unwrap_or_default()
        );
    }
    Ok(())
}

fn install_bpf_linker(workspace: &Workspace, nightly: &Nightly) -> Result<()> {
    let major = nightly.llvm_major;
    if !BPF_LINKER_LLVM_MAJORS.contains(&major) {
        bail!(
            "nightly {} uses LLVM {major}, but bpf-linker {BPF_LINKER_VERSION} only supports LLVM \
             {}-{}: install a nightly whose LLVM is in that range",
            nightly.release,
            BPF_LINKER_LLVM_MAJORS.start(),
            BPF_LINKER_LLVM_MAJORS.end()
        );
    }
    let library = find_llvm_library(&nightly.sysroot.join("lib"), major)?;
    let prefix = llvm_prefix_dir()?;
    prepare_llvm_prefix(&prefix, &library)?;
    eprintln!(
        "xtask: setup: building bpf-linker {BPF_LINKER_VERSION} against {} (takes about a minute)",
        library.display()
    );
    let mut command = workspace.cargo();
    command
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--force",
            "--no-default-features",
            "--features",
        ])
        .arg(format!("llvm-{major}"))
        .env("LLVM_PREFIX", &prefix)
        // The install must not reuse (or clobber) the workspace's target directory.
        .env_remove("CARGO_TARGET_DIR");
    run_visible(&mut command).with_context(|| {
        format!(
            "could not build bpf-linker {BPF_LINKER_VERSION} against nightly's LLVM {major} \
             (LLVM_PREFIX={})",
            prefix.display()
        )
    })
}

/// cargo-fuzz [`CARGO_FUZZ_VERSION`] in cargo's bin directory, probed as the fuzz task runs
/// it (a `cargo fuzz` subcommand of nightly's cargo).
fn ensure_cargo_fuzz(workspace: &Workspace) -> Result<()> {
    let expected = format!("cargo-fuzz {CARGO_FUZZ_VERSION}");
    let probe_version =
        || probe(Command::new("rustup").args(["run", "nightly", "cargo", "fuzz", "--version"]));
    let installed = probe_version();
    if installed.as_deref().map(str::trim) == Some(expected.as_str()) {
        return Ok(());
    }
    match &installed {
        Some(other) => eprintln!(
            "xtask: setup: found {}, need {expected}; installing it",
            other.trim()
        ),
        None => eprintln!("xtask: setup: cargo-fuzz is missing; installing {expected}"),
    }
    let mut command = workspace.cargo();
    command
        .args([
            "install",
            "--locked",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
            "--force",
        ])
        // The install must not reuse (or clobber) the workspace's target directory.
        .env_remove("CARGO_TARGET_DIR");
    run_visible(&mut command)
        .with_context(|| format!("could not install cargo-fuzz {CARGO_FUZZ_VERSION}"))?;
    let now = probe_version();
    if now.as_deref().map(str::trim) != Some(expected.as_str()) {
        bail!(
            "cargo-fuzz was installed but `cargo fuzz --version` prints {:?}, not {expected:?}; \
             is another cargo-fuzz earlier on PATH?",
            now.unwrap_or_default()
        );
    }
    Ok(())
}

/// `libLLVM.so.<major>.*` (or `libLLVM-<major>-*.so`) in the toolchain's lib directory.
fn find_llvm_library(lib_dir: &Path, major: u32) -> Result<PathBuf> {
    let entries =
        fs::read_dir(lib_dir).with_context(|| format!("listing {}", lib_dir.display()))?;
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    names.sort();
    let soname = format!("libLLVM.so.{major}.");
    let dashed = format!("libLLVM-{major}");
    names
        .iter()
        .find(|name| name.starts_with(&soname))
        .or_else(|| {
            names
                .iter()
                .find(|name| name.starts_with(&dashed) && name.ends_with(".so"))
        })
        .map(|name| lib_dir.join(name))
        .with_context(|| {
            format!(
                "no libLLVM for LLVM {major} in {} (is the nightly toolchain complete?)",
                lib_dir.display()
            )
        })
}

/// A directory kept next to the installed binaries: bpf-linker's rpath points at its `lib/`,
/// so the linker also runs outside rustup.
fn llvm_prefix_dir() -> Result<PathBuf> {
    let cargo_home = match std::env::var_os("CARGO_HOME") {
        Some(home) => PathBuf::from(home),
        None => {
            PathBuf::from(std::env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?)
                .join(".cargo")
        }
    };
    Ok(cargo_home.join("hb-llvm-prefix"))
}

/// `<prefix>/lib/libLLVM.so` (what the build links) and `<prefix>/lib/<file name>` (what the
/// binary asks for at run time), both pointing at the toolchain's library.
fn prepare_llvm_prefix(prefix: &Path, library: &Path) -> Result<()> {
    let lib = prefix.join("lib");
    if prefix.exists() {
        fs::remove_dir_all(prefix).with_context(|| format!("removing {}", prefix.display()))?;
    }
    fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    let file_name = library
        .file_name()
        .context("the LLVM library path has no file name")?;
    for link in [lib.join("libLLVM.so"), lib.join(file_name)] {
        symlink(library, &link)
            .with_context(|| format!("linking {} to {}", link.display(), library.display()))?;
    }
    Ok(())
}

// -------------------------------------------------------------------- Debian packages

enum PackageState {
    Ready,
    NeedRoot(Vec<String>),
}

fn ensure_packages() -> Result<PackageState> {
    let missing = missing_packages()?;
    if missing.is_empty() {
        return Ok(PackageState::Ready);
    }
    if !is_root() {
        return Ok(PackageState::NeedRoot(missing));
    }
    eprintln!(
        "xtask: setup: installing Debian packages: {}",
        missing.join(" ")
    );
    for (name, why) in DEBIAN_PACKAGES {
        if missing.iter().any(|m| m == name) {
            eprintln!("xtask: setup:   {name}: {why}");
        }
    }
    install_packages(&missing)?;
    let still_missing = missing_packages()?;
    if !still_missing.is_empty() {
        bail!(
            "apt-get finished but these packages are still not installed: {}",
            still_missing.join(" ")
        );
    }
    Ok(PackageState::Ready)
}

/// Packages from [`DEBIAN_PACKAGES`] that dpkg does not list as installed.
fn missing_packages() -> Result<Vec<String>> {
    let names: Vec<&str> = DEBIAN_PACKAGES.iter().map(|(name, _)| *name).collect();
    // dpkg-query exits 1 when some package is unknown; its stdout still lists the others.
    let output = Command::new("dpkg-query")
        .args(["-W", "-f", "${Package} ${db:Status-Abbrev}\\n"])
        .args(&names)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context(
            "dpkg-query is not available: this set-up supports Debian 12 (install the packages \
             bpftool iproute2 nginx-light tcpdump stress-ng keepalived heartbeat nftables \
             iputils-ping curl by other means)",
        )?;
    let listing = String::from_utf8_lossy(&output.stdout);
    let installed: Vec<&str> = listing
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next()?;
            (words.next() == Some("ii")).then_some(name)
        })
        .collect();
    Ok(names
        .into_iter()
        .filter(|name| !installed.contains(name))
        .map(str::to_owned)
        .collect())
}

fn install_packages(missing: &[String]) -> Result<()> {
    let before = live_service_pids();
    {
        // Debian starts a package's service on install; the tests start their own nginx (and
        // the benchmark its own keepalived/heartbeat) and must not collide with system ones.
        let _no_service_starts = ServiceStartBlock::install()?;
        let apt = |args: &[&str]| {
            let mut command = Command::new("apt-get");
            command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
            command
        };
        run_visible(&mut apt(&["-q", "-o", "Dpkg::Use-Pty=0", "update"])).with_context(|| {
            format!(
                "apt-get update failed, so these packages cannot be installed: {}",
                missing.join(" ")
            )
        })?;
        let mut install = apt(&[
            "-q",
            "-y",
            "-o",
            "Dpkg::Use-Pty=0",
            "--no-install-recommends",
            "install",
        ]);
        install.args(missing);
        run_visible(&mut install).with_context(|| {
            format!(
                "apt-get install failed for: {} (see apt's message above)",
                missing.join(" ")
            )
        })?;
    }
    // Should a service have started anyway, stop exactly the one the install started.
    for (pid_file, pid) in live_service_pids() {
        if before.iter().any(|(_, old)| *old == pid) {
            continue;
        }
        eprintln!("xtask: setup: stopping pid {pid} ({pid_file}), started by the package install");
        if let Err(err) = kill(Pid::from_raw(pid), Signal::SIGTERM) {
            eprintln!("xtask: setup: could not stop pid {pid}: {err}");
        }
    }
    Ok(())
}

/// Pids named in the service pid files that belong to a live process.
fn live_service_pids() -> Vec<(&'static str, i32)> {
    SERVICE_PID_FILES
        .iter()
        .filter_map(|file| {
            let pid: i32 = fs::read_to_string(file).ok()?.trim().parse().ok()?;
            (pid > 0 && Path::new(&format!("/proc/{pid}")).exists()).then_some((*file, pid))
        })
        .collect()
}

/// Debian's `policy-rc.d` hook answering "do not start services" while packages install.
/// Leaves an existing hook alone, and removes only the one it wrote.
struct ServiceStartBlock {
    written: bool,
}

impl ServiceStartBlock {
    fn install() -> Result<ServiceStartBlock> {
        if Path::new(POLICY_RC_D).exists() {
            return Ok(ServiceStartBlock { written: false });
        }
        fs::write(
            POLICY_RC_D,
            "#!/bin/sh\n# written by cargo xtask setup while installing packages\nexit 101\n",
        )
        .with_context(|| format!("writing {POLICY_RC_D}"))?;
        fs::set_permissions(POLICY_RC_D, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {POLICY_RC_D} executable"))?;
        Ok(ServiceStartBlock { written: true })
    }
}

impl Drop for ServiceStartBlock {
    fn drop(&mut self) {
        if self.written {
            if let Err(err) = fs::remove_file(POLICY_RC_D) {
                eprintln!("xtask: setup: could not remove {POLICY_RC_D}: {err}");
            }
        }
    }
}

// -------------------------------------------------------------------- bpffs

fn bpffs_mounted() -> Result<bool> {
    let mounts = fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    Ok(mounts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let _source = fields.next();
        fields.next() == Some(BPFFS_MOUNT_POINT) && fields.next() == Some("bpf")
    }))
}

fn mount_bpffs() -> Result<()> {
    eprintln!(
        "xtask: setup: mounting bpffs at {BPFFS_MOUNT_POINT} (systemd does this on a normal boot)"
    );
    run_visible(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS_MOUNT_POINT]))
        .context("could not mount bpffs; hb pins its BPF maps there")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_release_and_llvm_major() {
        let text = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nbinary: rustc\n\
                    release: 1.97.0-nightly\nLLVM version: 22.1.4\n";
        assert_eq!(
            parse_rustc_version(text),
            Some(("1.97.0-nightly".to_owned(), 22))
        );
        assert_eq!(parse_rustc_version("release: 1.0\n"), None);
    }

    #[test]
    fn finds_the_llvm_library_for_a_major() {
        let dir = std::env::temp_dir().join(format!("xtask-llvm-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        for name in [
            "libLLVM-22-rust-1.97.0-nightly.so",
            "libLLVM.so.22.1-rust-1.97.0-nightly",
            "librustc_driver-x.so",
        ] {
            fs::write(dir.join(name), b"").unwrap();
        }
        assert_eq!(
            find_llvm_library(&dir, 22).unwrap(),
            dir.join("libLLVM.so.22.1-rust-1.97.0-nightly")
        );
        assert!(find_llvm_library(&dir, 21).is_err());
        fs::remove_file(dir.join("libLLVM.so.22.1-rust-1.97.0-nightly")).unwrap();
        assert_eq!(
            find_llvm_library(&dir, 22).unwrap(),
            dir.join("libLLVM-22-rust-1.97.0-nightly.so")
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
