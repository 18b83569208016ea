//! `cargo xtask install|uninstall`: put hb on a machine the way an administrator expects.
//!
//! | what | where | on reinstall |
//! |---|---|---|
//! | `hb-agent` (release build) | `PREFIX/sbin/hb-agent`, mode 755 | replaced (atomically: a running agent keeps its binary) |
//! | `hb-agent.service` | `/etc/systemd/system/`, mode 644 | replaced; local changes belong in `hb-agent.service.d/` drop-ins |
//! | README, examples, `direct-scripts.conf` drop-in | `PREFIX/share/doc/hb-agent/` | replaced |
//! | `ha.cf`, `haresources` templates | `/etc/ha.d/` | only if absent; never overwritten |
//! | `authkeys` with a random sha1 key | `/etc/ha.d/`, mode 600 | only if absent; never overwritten |
//!
//! Every path is under `--destdir` when given (staging for a package), and then nothing is
//! reloaded. `uninstall` removes what `install` put outside `/etc/ha.d` and leaves the
//! configuration and the state directory alone.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::exec::{self, run_visible};
use crate::setup::{self, Needs};
use crate::Workspace;

/// The prefix written in `packaging/hb-agent.service`; `install` replaces it with `--prefix`.
pub const UNIT_PREFIX: &str = "/usr/local";
pub const UNIT_NAME: &str = "hb-agent.service";
const BINARY_NAME: &str = "hb-agent";
const UNIT_DIR: &str = "/etc/systemd/system";
const CONFIG_DIR: &str = "/etc/ha.d";
/// Where `systemctl enable` puts the unit's symlink (its `WantedBy=`).
const WANTS_LINK: &str = "/etc/systemd/system/multi-user.target.wants/hb-agent.service";
/// sd_booted(3): systemd is PID 1 when this directory exists.
const SYSTEMD_RUNNING: &str = "/run/systemd/system";

/// Arguments of `install` and `uninstall`.
#[derive(clap::Args, Debug)]
pub struct InstallArgs {
    /// Installation prefix: the binary goes to PREFIX/sbin, documentation and examples to
    /// PREFIX/share/doc/hb-agent. The unit (/etc/systemd/system) and the configuration
    /// (/etc/ha.d) do not move with it.
    #[arg(long, default_value = UNIT_PREFIX)]
    pub prefix: PathBuf,
    /// Write every file under DIR instead of / (staging for a package); nothing is reloaded.
    #[arg(long, value_name = "DIR")]
    pub destdir: Option<PathBuf>,
}

/// Where things go: the system's view (`prefix`) and where files are written (`destdir`).
#[derive(Debug, Clone)]
pub struct Layout {
    prefix: PathBuf,
    destdir: Option<PathBuf>,
}

impl Layout {
    /// `prefix` must be absolute; `..` is refused so that uninstall removes what install put.
    pub fn new(prefix: &Path, destdir: Option<&Path>) -> Result<Layout> {
        if !prefix.is_absolute() {
            bail!(
                "--prefix must be an absolute path, not {}",
                prefix.display()
            );
        }
        if prefix.components().any(|c| c == Component::ParentDir) {
            bail!("--prefix must not contain `..`: {}", prefix.display());
        }
        // Normalises away trailing slashes and `.`.
        let prefix: PathBuf = prefix.components().collect();
        Ok(Layout {
            prefix,
            destdir: destdir.map(Path::to_owned),
        })
    }

    /// `path` (as the installed system sees it) where this run writes it.
    fn staged(&self, path: &Path) -> PathBuf {
        match &self.destdir {
            Some(destdir) => destdir.join(path.strip_prefix("/").unwrap_or(path)),
            None => path.to_owned(),
        }
    }

    fn binary(&self) -> PathBuf {
        self.prefix.join("sbin").join(BINARY_NAME)
    }

    fn unit(&self) -> PathBuf {
        Path::new(UNIT_DIR).join(UNIT_NAME)
    }

    fn doc_dir(&self) -> PathBuf {
        self.prefix.join("share/doc/hb-agent")
    }

    fn config_dir(&self) -> PathBuf {
        PathBuf::from(CONFIG_DIR)
    }
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Replaced,
    Unchanged,
    /// An existing configuration file left as it was.
    KeptExisting,
    Removed,
    /// Nothing there to remove.
    Absent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The path as the installed system sees it.
    pub path: PathBuf,
    pub outcome: Outcome,
}

impl Step {
    fn describe(&self) -> String {
        let what = match self.outcome {
            Outcome::Created => "installed",
            Outcome::Replaced => "replaced",
            Outcome::Unchanged => "unchanged",
            Outcome::KeptExisting => "exists, left untouched (never overwritten)",
            Outcome::Removed => "removed",
            Outcome::Absent => "not there",
        };
        format!("{:<52} {what}", self.path.display())
    }
}

/// The files of the repository that get installed.
#[derive(Debug, Clone)]
pub struct Sources {
    root: PathBuf,
}

impl Sources {
    pub fn new(workspace_root: &Path) -> Sources {
        Sources {
            root: workspace_root.to_owned(),
        }
    }

    fn read(&self, relative: &str) -> Result<String> {
        let path = self.root.join(relative);
        fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    }
}

/// `packaging/hb-agent.service` with the paths under `prefix`.
pub fn unit_for_prefix(template: &str, prefix: &Path) -> Result<String> {
    let prefix = prefix
        .to_str()
        .context("--prefix must be valid UTF-8 to be written into the unit")?;
    if prefix
        .chars()
        .any(|c| c.is_whitespace() || c == '%' || c == '"')
    {
        bail!("--prefix {prefix:?} contains characters a unit file would need quoted");
    }
    Ok(template.replace(&format!("{UNIT_PREFIX}/"), &format!("{prefix}/")))
}

/// The content of a new `authkeys`: one sha1 key of 32 random bytes, in hex.
pub fn authkeys_content(random: &[u8; 32]) -> String {
    let key: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "# Created by `cargo xtask install` with a random key.\n\
         # Every node of the cluster needs this same file, mode 600, owned by root:\n\
         # copy it to the others (e.g. scp -p) instead of running install there first.\n\
         auth 1\n\
         1 sha1 {key}\n"
    )
}

fn random_key() -> Result<[u8; 32]> {
    let mut key = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .context("reading /dev/urandom for the authkeys key")?;
    Ok(key)
}

/// Writes `content` to `target` with `mode`, replacing it atomically (a new inode, so a
/// running program keeps its old file). Says whether it was new, replaced or identical.
fn replace_file(target: &Path, content: &[u8], mode: u32) -> Result<Outcome> {
    let existing = match fs::read(target) {
        Ok(data) => Some(data),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", target.display())),
    };
    if let Some(existing) = &existing {
        let same_mode = fs::metadata(target)
            .map(|m| m.permissions().mode() & 0o7777 == mode)
            .unwrap_or(false);
        if existing.as_slice() == content && same_mode {
            return Ok(Outcome::Unchanged);
        }
    }
    let dir = target
        .parent()
        .with_context(|| format!("{} has no parent directory", target.display()))?;
    create_dirs(dir)?;
    let name = target
        .file_name()
        .with_context(|| format!("{} has no file name", target.display()))?;
    let temp = dir.join(format!(".{}.xtask-new", name.to_string_lossy()));
    let write = || -> io::Result<()> {
        let _ = fs::remove_file(&temp);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        file.write_all(content)?;
        // The umask may have narrowed the mode.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        fs::rename(&temp, target)
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&temp);
        return Err(e).with_context(|| format!("writing {}", target.display()));
    }
    Ok(if existing.is_some() {
        Outcome::Replaced
    } else {
        Outcome::Created
    })
}

/// Creates `target` with `content` and `mode` unless something is already there.
fn create_if_absent(target: &Path, content: &[u8], mode: u32) -> Result<Outcome> {
    if fs::symlink_metadata(target).is_ok() {
        return Ok(Outcome::KeptExisting);
    }
    if let Some(dir) = target.parent() {
        create_dirs(dir)?;
    }
    // create_new: even a file that appears meanwhile is never overwritten.
    let mut file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(target)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(Outcome::KeptExisting),
        Err(e) => return Err(e).with_context(|| format!("creating {}", target.display())),
    };
    let written = file
        .set_permissions(fs::Permissions::from_mode(mode))
        .and_then(|()| file.write_all(content))
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = fs::remove_file(target);
        return Err(e).with_context(|| format!("writing {}", target.display()));
    }
    Ok(Outcome::Created)
}

fn create_dirs(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating directory {}", dir.display()))
}

fn remove_file(staged: &Path) -> Result<Outcome> {
    match fs::remove_file(staged) {
        Ok(()) => Ok(Outcome::Removed),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Outcome::Absent),
        Err(e) => Err(e).with_context(|| format!("removing {}", staged.display())),
    }
}

/// Installs everything but the build: `binary` is the freshly built agent.
pub fn install_files(layout: &Layout, binary: &Path, sources: &Sources) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    let mut put = |path: PathBuf, outcome: Outcome| steps.push(Step { path, outcome });

    let agent = fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let path = layout.binary();
    put(
        path.clone(),
        replace_file(&layout.staged(&path), &agent, 0o755)?,
    );

    let unit = unit_for_prefix(&sources.read("packaging/hb-agent.service")?, &layout.prefix)?;
    let path = layout.unit();
    put(
        path.clone(),
        replace_file(&layout.staged(&path), unit.as_bytes(), 0o644)?,
    );

    let docs = [
        ("README.md", "README.md"),
        ("packaging/direct-scripts.conf", "direct-scripts.conf"),
        ("packaging/examples/ha.cf", "examples/ha.cf"),
        ("packaging/examples/haresources", "examples/haresources"),
    ];
    for (source, name) in docs {
        let path = layout.doc_dir().join(name);
        let content = sources.read(source)?;
        put(
            path.clone(),
            replace_file(&layout.staged(&path), content.as_bytes(), 0o644)?,
        );
    }

    let config = layout.config_dir();
    for name in ["ha.cf", "haresources"] {
        let content = sources.read(&format!("packaging/examples/{name}"))?;
        let path = config.join(name);
        put(
            path.clone(),
            create_if_absent(&layout.staged(&path), content.as_bytes(), 0o644)?,
        );
    }
    let path = config.join("authkeys");
    let staged = layout.staged(&path);
    // The key is only drawn when the file will be written.
    let outcome = if fs::symlink_metadata(&staged).is_ok() {
        Outcome::KeptExisting
    } else {
        create_if_absent(&staged, authkeys_content(&random_key()?).as_bytes(), 0o600)?
    };
    put(path, outcome);
    Ok(steps)
}

/// Removes the binary, the unit (and its `enable` symlink) and the documentation; leaves
/// `/etc/ha.d` alone.
pub fn uninstall_files(layout: &Layout) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    for path in [layout.binary(), PathBuf::from(WANTS_LINK), layout.unit()] {
        let outcome = remove_file(&layout.staged(&path))?;
        steps.push(Step { path, outcome });
    }
    let docs = layout.doc_dir();
    let staged = layout.staged(&docs);
    let outcome = match fs::remove_dir_all(&staged) {
        Ok(()) => Outcome::Removed,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Outcome::Absent,
        Err(e) => return Err(e).with_context(|| format!("removing {}", staged.display())),
    };
    steps.push(Step {
        path: docs,
        outcome,
    });
    Ok(steps)
}

fn systemd_is_pid1() -> bool {
    Path::new(SYSTEMD_RUNNING).is_dir()
}

/// Writing to /usr/local and /etc needs root; a staged install does not.
fn require_root_unless_staged(layout: &Layout, task: &str) -> Result<()> {
    if layout.destdir.is_none() && !setup::is_root() {
        bail!(
            "{task} writes to {} and {UNIT_DIR}: run it as root, e.g. \
             `sudo env \"PATH=$PATH\" cargo xtask {task}`, or stage it with --destdir DIR",
            layout.prefix.display()
        );
    }
    Ok(())
}

fn print_steps(steps: &[Step]) {
    for step in steps {
        eprintln!("xtask:   {}", step.describe());
    }
}

/// `cargo xtask install`.
pub fn install(workspace: &Workspace, args: &InstallArgs) -> Result<()> {
    let layout = Layout::new(&args.prefix, args.destdir.as_deref())?;
    require_root_unless_staged(&layout, "install")?;
    setup::ensure(workspace, Needs::TOOLCHAIN)?;
    let binary = exec::build_agent(workspace, true)?;
    let steps = install_files(&layout, &binary, &Sources::new(workspace.root()))?;
    eprintln!("xtask: install:");
    print_steps(&steps);
    if let Some(destdir) = &layout.destdir {
        eprintln!(
            "xtask: staged under {}; nothing was reloaded or enabled",
            destdir.display()
        );
        return Ok(());
    }
    let created_keys = steps
        .iter()
        .any(|s| s.path.ends_with("authkeys") && s.outcome == Outcome::Created);
    if systemd_is_pid1() {
        run_visible(Command::new("systemctl").arg("daemon-reload"))?;
    } else {
        eprintln!(
            "xtask: systemd is not PID 1 here: on the machine that runs hb, run \
             `systemctl daemon-reload` before starting the unit"
        );
    }
    eprintln!("xtask: next steps:");
    eprintln!(
        "xtask:   1. fill in {CONFIG_DIR}/ha.cf (node, links) and haresources; \
         `{} check-config` shows what hb understood",
        layout.binary().display()
    );
    if created_keys {
        eprintln!(
            "xtask:   2. copy {CONFIG_DIR}/authkeys (new random key) to every other node, \
             keeping mode 600"
        );
    } else {
        eprintln!(
            "xtask:   2. {CONFIG_DIR}/authkeys was already there and is unchanged; every node \
             needs the same one"
        );
    }
    eprintln!("xtask:   3. systemctl disable --now the services hb manages (hb starts them)");
    eprintln!("xtask:   4. systemctl enable --now {UNIT_NAME}");
    Ok(())
}

/// `cargo xtask uninstall`.
pub fn uninstall(args: &InstallArgs) -> Result<()> {
    let layout = Layout::new(&args.prefix, args.destdir.as_deref())?;
    require_root_unless_staged(&layout, "uninstall")?;
    let live = layout.destdir.is_none() && systemd_is_pid1();
    if live {
        let active = Command::new("systemctl")
            .args(["is-active", "--quiet", UNIT_NAME])
            .status()
            .context("running systemctl is-active")?;
        if active.success() {
            bail!(
                "{UNIT_NAME} is running: stop it first (`systemctl disable --now {UNIT_NAME}`; \
                 a peer takes over its resource groups), then uninstall"
            );
        }
    }
    let steps = uninstall_files(&layout)?;
    eprintln!("xtask: uninstall:");
    print_steps(&steps);
    eprintln!(
        "xtask: {CONFIG_DIR} (ha.cf, haresources, authkeys) is left as it is; so is \
         /var/lib/hb-agent (the generation counter a reinstall continues from)"
    );
    if live {
        run_visible(Command::new("systemctl").arg("daemon-reload"))?;
    } else if layout.destdir.is_none() {
        eprintln!("xtask: systemd is not PID 1 here; nothing to reload");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn workspace_sources() -> Sources {
        Sources::new(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap())
    }

    fn outcome(steps: &[Step], path: &str) -> Outcome {
        steps
            .iter()
            .find(|s| s.path == Path::new(path))
            .unwrap_or_else(|| panic!("no step for {path}: {steps:?}"))
            .outcome
    }

    #[test]
    fn prefix_is_checked_and_normalised() {
        assert!(Layout::new(Path::new("usr/local"), None).is_err());
        assert!(Layout::new(Path::new("/opt/../usr"), None).is_err());
        let layout = Layout::new(Path::new("/opt/hb/"), Some(Path::new("/stage"))).unwrap();
        assert_eq!(layout.binary(), Path::new("/opt/hb/sbin/hb-agent"));
        assert_eq!(
            layout.staged(&layout.unit()),
            Path::new("/stage/etc/systemd/system/hb-agent.service")
        );
    }

    #[test]
    fn unit_paths_follow_the_prefix() {
        let template = workspace_sources()
            .read("packaging/hb-agent.service")
            .unwrap();
        assert!(template.contains("ExecStart=/usr/local/sbin/hb-agent run"));
        let unit = unit_for_prefix(&template, Path::new("/opt/hb")).unwrap();
        assert!(unit.contains("ExecStart=/opt/hb/sbin/hb-agent run --config-dir /etc/ha.d\n"));
        assert!(unit.contains("ExecReload=/opt/hb/sbin/hb-agent check-config"));
        assert!(!unit.contains("/usr/local/"), "{unit}");
        assert_eq!(
            unit_for_prefix(&template, Path::new("/usr/local")).unwrap(),
            template
        );
        assert!(unit_for_prefix(&template, Path::new("/opt/my hb")).is_err());
    }

    #[test]
    fn authkeys_has_one_random_sha1_key() {
        let text = authkeys_content(&[0xab; 32]);
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines, ["auth 1", &format!("1 sha1 {}", "ab".repeat(32))]);
        let a = random_key().unwrap();
        let b = random_key().unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn installs_into_destdir_with_modes_and_never_overwrites_configuration() {
        let stage = tempfile::tempdir().unwrap();
        let binary = stage.path().join("built-hb-agent");
        fs::write(&binary, b"\x7fELF agent v1").unwrap();
        let layout = Layout::new(Path::new("/opt/hb"), Some(&stage.path().join("root"))).unwrap();
        let root = stage.path().join("root");
        let sources = workspace_sources();

        let first = install_files(&layout, &binary, &sources).unwrap();
        for step in &first {
            assert_eq!(step.outcome, Outcome::Created, "{step:?}");
        }
        let agent = root.join("opt/hb/sbin/hb-agent");
        let unit = root.join("etc/systemd/system/hb-agent.service");
        let authkeys = root.join("etc/ha.d/authkeys");
        assert_eq!(fs::read(&agent).unwrap(), b"\x7fELF agent v1");
        assert_eq!(mode(&agent), 0o755);
        assert_eq!(mode(&unit), 0o644);
        assert!(fs::read_to_string(&unit)
            .unwrap()
            .contains("ExecStart=/opt/hb/sbin/hb-agent run"));
        assert_eq!(mode(&authkeys), 0o600);
        assert_eq!(mode(&root.join("etc/ha.d/ha.cf")), 0o644);
        assert!(root
            .join("opt/hb/share/doc/hb-agent/direct-scripts.conf")
            .is_file());
        let key = fs::read_to_string(&authkeys).unwrap();
        assert!(key.contains("\nauth 1\n1 sha1 "), "{key}");
        // No temporary files left behind.
        let leftovers: Vec<_> = fs::read_dir(root.join("opt/hb/sbin"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["hb-agent"]);

        // The administrator's configuration, then a reinstall of a new build.
        fs::write(root.join("etc/ha.d/ha.cf"), "node mine\n").unwrap();
        fs::write(&binary, b"\x7fELF agent v2").unwrap();
        let second = install_files(&layout, &binary, &sources).unwrap();
        assert_eq!(outcome(&second, "/opt/hb/sbin/hb-agent"), Outcome::Replaced);
        assert_eq!(
            outcome(&second, "/etc/systemd/system/hb-agent.service"),
            Outcome::Unchanged
        );
        for kept in [
            "/etc/ha.d/ha.cf",
            "/etc/ha.d/haresources",
            "/etc/ha.d/authkeys",
        ] {
            assert_eq!(outcome(&second, kept), Outcome::KeptExisting, "{kept}");
        }
        assert_eq!(fs::read(&agent).unwrap(), b"\x7fELF agent v2");
        assert_eq!(
            fs::read_to_string(root.join("etc/ha.d/ha.cf")).unwrap(),
            "node mine\n"
        );
        assert_eq!(fs::read_to_string(&authkeys).unwrap(), key);

        // Uninstall: binary, unit, its enable link and docs go; the configuration stays.
        let wants = root.join("etc/systemd/system/multi-user.target.wants");
        fs::create_dir_all(&wants).unwrap();
        std::os::unix::fs::symlink(&unit, wants.join("hb-agent.service")).unwrap();
        let removed = uninstall_files(&layout).unwrap();
        for step in &removed {
            assert_eq!(step.outcome, Outcome::Removed, "{step:?}");
        }
        assert!(!agent.exists() && !unit.exists());
        assert!(fs::symlink_metadata(wants.join("hb-agent.service")).is_err());
        assert!(!root.join("opt/hb/share/doc/hb-agent").exists());
        assert_eq!(
            fs::read_to_string(root.join("etc/ha.d/ha.cf")).unwrap(),
            "node mine\n"
        );
        assert_eq!(fs::read_to_string(&authkeys).unwrap(), key);
        // A second uninstall finds nothing and says so.
        for step in uninstall_files(&layout).unwrap() {
            assert_eq!(step.outcome, Outcome::Absent, "{step:?}");
        }
    }

    #[test]
    fn an_existing_symlink_counts_as_existing_configuration() {
        let stage = tempfile::tempdir().unwrap();
        let target = stage.path().join("authkeys");
        std::os::unix::fs::symlink("/nonexistent/authkeys", &target).unwrap();
        assert_eq!(
            create_if_absent(&target, b"x", 0o600).unwrap(),
            Outcome::KeptExisting
        );
        assert!(fs::symlink_metadata(&target)
            .unwrap()
            .file_type()
            .is_symlink());
    }
}
