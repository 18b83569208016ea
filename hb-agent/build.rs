//! Builds the XDP program (`hb-ebpf`) for `bpfel-unknown-none` with the nightly toolchain
//! and places the object at `$OUT_DIR/hb-ebpf`, where `src/xdp.rs` embeds it.
//!
//! Before handing over to `aya_build`, the toolchain pieces it needs are checked so that a
//! missing one fails with the command that installs it, not with a linker backtrace.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context as _};
use aya_build::{Package, Toolchain};

/// The toolchain that builds the eBPF object (`-Z build-std=core` needs nightly), unless
/// `HB_EBPF_TOOLCHAIN` names another (e.g. a dated nightly).
const DEFAULT_EBPF_TOOLCHAIN: &str = "nightly";
const TOOLCHAIN_ENV: &str = "HB_EBPF_TOOLCHAIN";
const SETUP_HINT: &str =
    "run `cargo xtask setup` (installs the nightly toolchain with rust-src and bpf-linker)";

fn main() -> anyhow::Result<()> {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?);
    let workspace = manifest_dir
        .parent()
        .context("hb-agent is not inside the workspace directory")?;
    let ebpf_dir = workspace.join("hb-ebpf");
    // aya_build watches the eBPF package itself; the object also depends on the shared
    // layouts and on the workspace's pinned versions.
    for path in [
        workspace.join("hb-common"),
        workspace.join("Cargo.toml"),
        workspace.join("Cargo.lock"),
    ] {
        println!("cargo:rerun-if-changed={}", path.display());
    }

    println!("cargo:rerun-if-env-changed={TOOLCHAIN_ENV}");
    let toolchain = env::var(TOOLCHAIN_ENV).unwrap_or_else(|_| DEFAULT_EBPF_TOOLCHAIN.to_owned());

    // aya_build honours AYA_BUILD_SKIP itself; don't insist on the toolchain then.
    let skipping =
        env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if !skipping {
        check_toolchain(&toolchain)
            .map_err(|error| anyhow!("cannot build the XDP program: {error:#}; {SETUP_HINT}"))?;
    }

    // aya_build relays the nested cargo's stderr as build warnings: keep only diagnostics.
    env::set_var("CARGO_TERM_QUIET", "true");

    let root_dir = ebpf_dir
        .to_str()
        .with_context(|| format!("{} is not valid UTF-8", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [Package {
            name: "hb-ebpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::Custom(&toolchain),
    )
    .map_err(|error| anyhow!("building the XDP program (hb-ebpf) failed: {error:#}\nif the toolchain is incomplete, {SETUP_HINT}"))
}

/// Checks for the nightly toolchain, its `rust-src` component and a working `bpf-linker`.
fn check_toolchain(toolchain: &str) -> anyhow::Result<()> {
    let sysroot = run("rustup", &["run", toolchain, "rustc", "--print", "sysroot"])
        .with_context(|| format!("the {toolchain} toolchain is not usable"))?;
    let core_src = Path::new(sysroot.trim()).join("lib/rustlib/src/rust/library/core/Cargo.toml");
    if !core_src.is_file() {
        bail!(
            "the {toolchain} toolchain has no rust-src component ({} is missing)",
            core_src.display()
        );
    }
    // Through rustup, so that bpf-linker finds the nightly toolchain's libLLVM.
    run("rustup", &["run", toolchain, "bpf-linker", "--version"])
        .context("bpf-linker is missing or does not run")?;
    Ok(())
}

/// Runs a command and returns its standard output, or an error carrying its standard error.
fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .output()
        .with_context(|| format!("cannot run `{program} {}`", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    String::from_utf8(output.stdout)
        .with_context(|| format!("`{program} {}` printed non-UTF-8", args.join(" ")))
}
