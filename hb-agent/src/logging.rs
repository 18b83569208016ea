//! Heartbeat's `logfile` and `debugfile`: copies of the log, beside standard error (which
//! journald collects under systemd).
//!
//! `logfile` gets info and above, `debugfile` also hb's own debug messages, as Heartbeat
//! wrote its debug output there. Files are opened for append and created mode 0640. A
//! [`LogFiles`] handle is installed as a tracing layer when logging starts (before the
//! configuration is read: it writes nothing until configured), is pointed at the files once
//! ha.cf is loaded, and reopens them on SIGHUP so logrotate can move them away.
//!
//! A write error (disk full) is not reported through the log itself, which would loop: the
//! line is lost and the next one is tried again.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::filter::{DynFilterFn, LevelFilter};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Layer;
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogSettings;

/// Mode of a log file hb creates: the administrators' group may read it.
pub const LOG_FILE_MODE: u32 = 0o640;

/// Targets whose debug messages go to `debugfile`: hb's own, not its libraries'.
const DEBUG_TARGET: &str = "hb_agent";

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log file {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One file being written to.
#[derive(Debug)]
struct Sink {
    path: PathBuf,
    file: File,
}

#[derive(Debug, Default)]
struct Slot {
    sink: Mutex<Option<Sink>>,
    /// Whether `sink` is set, read without the lock on every event.
    active: AtomicBool,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Option<Sink>> {
        // A panic while holding the lock cannot leave a File half-changed.
        self.sink
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set(&self, sink: Option<Sink>) {
        let mut guard = self.lock();
        self.active.store(sink.is_some(), Ordering::Release);
        *guard = sink;
    }

    fn path(&self) -> Option<PathBuf> {
        self.lock().as_ref().map(|s| s.path.clone())
    }
}

/// The `logfile` and `debugfile` copies of the log; clones share the files.
#[derive(Clone, Debug, Default)]
pub struct LogFiles {
    info: Arc<Slot>,
    debug: Arc<Slot>,
}

impl LogFiles {
    /// Files not configured yet: the layer writes nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Files as `settings` (ha.cf) ask.
    pub fn open(settings: &LogSettings) -> Result<Self, LogError> {
        let files = Self::new();
        files.configure(settings)?;
        Ok(files)
    }

    /// Points the layer at the files `settings` name (none: stop writing copies). Nothing
    /// changes when one of them cannot be opened.
    pub fn configure(&self, settings: &LogSettings) -> Result<(), LogError> {
        let info = settings.logfile.as_deref().map(open_sink).transpose()?;
        let debug = settings.debugfile.as_deref().map(open_sink).transpose()?;
        self.info.set(info);
        self.debug.set(debug);
        Ok(())
    }

    /// Opens the same paths again (after logrotate moved the files). Nothing changes when
    /// one of them cannot be opened: the old files keep receiving the log.
    pub fn reopen(&self) -> Result<(), LogError> {
        let info = self.info.path().as_deref().map(open_sink).transpose()?;
        let debug = self.debug.path().as_deref().map(open_sink).transpose()?;
        if let Some(sink) = info {
            self.info.set(Some(sink));
        }
        if let Some(sink) = debug {
            self.debug.set(Some(sink));
        }
        Ok(())
    }

    /// The paths written to now: (`logfile`, `debugfile`).
    pub fn paths(&self) -> (Option<PathBuf>, Option<PathBuf>) {
        (self.info.path(), self.debug.path())
    }

    /// The tracing layer writing to the files; install it once, beside the stderr layer.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let info_slot = self.info.clone();
        let info_filter = DynFilterFn::new(move |meta: &Metadata<'_>, _| {
            info_slot.active.load(Ordering::Acquire) && *meta.level() <= Level::INFO
        })
        .with_max_level_hint(LevelFilter::INFO);
        let debug_slot = self.debug.clone();
        let debug_filter = DynFilterFn::new(move |meta: &Metadata<'_>, _| {
            debug_slot.active.load(Ordering::Acquire) && wanted_in_debugfile(meta)
        })
        .with_max_level_hint(LevelFilter::DEBUG);
        let info = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(SlotWriter(self.info.clone()))
            .with_filter(info_filter);
        let debug = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(SlotWriter(self.debug.clone()))
            .with_filter(debug_filter);
        info.and_then(debug)
    }
}

fn wanted_in_debugfile(meta: &Metadata<'_>) -> bool {
    let level = *meta.level();
    level <= Level::INFO || (level == Level::DEBUG && meta.target().starts_with(DEBUG_TARGET))
}

/// Opens `path` for append; a new file gets [`LOG_FILE_MODE`] whatever the umask.
fn open_sink(path: &Path) -> Result<Sink, LogError> {
    let error = |source| LogError::Open {
        path: path.to_owned(),
        source,
    };
    let file = match OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(LOG_FILE_MODE)
        .open(path)
    {
        Ok(file) => {
            file.set_permissions(std::fs::Permissions::from_mode(LOG_FILE_MODE))
                .map_err(error)?;
            file
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            OpenOptions::new().append(true).open(path).map_err(error)?
        }
        Err(e) => return Err(error(e)),
    };
    Ok(Sink {
        path: path.to_owned(),
        file,
    })
}

/// Hands the formatter a writer to the slot's current file.
struct SlotWriter(Arc<Slot>);

impl<'a> MakeWriter<'a> for SlotWriter {
    type Writer = SlotGuard<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        SlotGuard(self.0.lock())
    }
}

/// Holds the slot's lock while one event is written (the formatter writes it whole).
struct SlotGuard<'a>(MutexGuard<'a, Option<Sink>>);

impl Write for SlotGuard<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.as_mut() {
            Some(sink) => sink.file.write(buf),
            None => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.0.as_mut() {
            Some(sink) => sink.file.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    fn settings(logfile: Option<PathBuf>, debugfile: Option<PathBuf>) -> LogSettings {
        LogSettings {
            logfile,
            debugfile,
            ..LogSettings::default()
        }
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn levels_go_to_the_right_files_and_nothing_before_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let (log, debug) = (dir.path().join("ha-log"), dir.path().join("ha-debug"));
        let files = LogFiles::new();
        let subscriber = tracing_subscriber::registry().with(files.layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("before configuration");
            files
                .configure(&settings(Some(log.clone()), Some(debug.clone())))
                .unwrap();
            tracing::info!(node = "lb2", "node lb2: is dead");
            tracing::debug!("hb debug detail");
            tracing::debug!(target: "netlink_proto", "library chatter");
            tracing::trace!("trace is never written");
            tracing::warn!("Late heartbeat");
        });
        let (log_text, debug_text) = (read(&log), read(&debug));
        assert!(!log_text.contains("before configuration"));
        assert!(log_text.contains("node lb2: is dead") && log_text.contains("node=\"lb2\""));
        assert!(log_text.contains("Late heartbeat"));
        assert!(!log_text.contains("hb debug detail"), "{log_text}");
        assert!(debug_text.contains("node lb2: is dead"));
        assert!(debug_text.contains("hb debug detail"));
        assert!(!debug_text.contains("library chatter"), "{debug_text}");
        assert!(!debug_text.contains("trace is never"));
        assert!(!log_text.contains('\u{1b}'), "no colour codes in files");
        assert_eq!(log_text.lines().count(), 2, "{log_text}");
    }

    #[test]
    fn new_files_are_0640_and_existing_ones_are_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("ha-log");
        std::fs::write(&log, "old line\n").unwrap();
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o600)).unwrap();
        let debug = dir.path().join("ha-debug");
        let files = LogFiles::open(&settings(Some(log.clone()), Some(debug.clone()))).unwrap();
        let subscriber = tracing_subscriber::registry().with(files.layer());
        tracing::subscriber::with_default(subscriber, || tracing::info!("new line"));
        let text = read(&log);
        assert!(
            text.starts_with("old line\n") && text.contains("new line"),
            "{text}"
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&log), 0o600, "an existing file keeps its mode");
        assert_eq!(mode(&debug), LOG_FILE_MODE);
    }

    #[test]
    fn reopen_follows_logrotate() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("ha-log");
        let rotated = dir.path().join("ha-log.1");
        let files = LogFiles::open(&settings(Some(log.clone()), None)).unwrap();
        let subscriber = tracing_subscriber::registry().with(files.layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("first");
            std::fs::rename(&log, &rotated).unwrap();
            tracing::info!("second, still to the moved file");
            files.reopen().unwrap();
            tracing::info!("third, to a new file");
        });
        let old = read(&rotated);
        assert!(old.contains("first") && old.contains("second"), "{old}");
        let new = read(&log);
        assert!(new.contains("third") && !new.contains("first"), "{new}");
        assert_eq!(files.paths(), (Some(log), None));
    }

    #[test]
    fn a_file_that_cannot_be_opened_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("ha-log");
        let files = LogFiles::open(&settings(Some(log.clone()), None)).unwrap();
        let bad = settings(
            Some(dir.path().join("other-log")),
            Some(dir.path().join("missing-dir/ha-debug")),
        );
        let err = files.configure(&bad).unwrap_err();
        assert!(err.to_string().contains("missing-dir/ha-debug"), "{err}");
        assert_eq!(files.paths(), (Some(log.clone()), None));

        // The directory vanishes: reopen fails and the open file keeps the log.
        let gone = tempfile::tempdir().unwrap();
        let gone_log = gone.path().join("ha-log");
        let files = LogFiles::open(&settings(Some(gone_log.clone()), None)).unwrap();
        std::fs::remove_file(&gone_log).unwrap();
        std::fs::remove_dir(gone.path()).unwrap();
        assert!(files.reopen().is_err());
        assert_eq!(files.paths(), (Some(gone_log), None));
        assert!(LogFiles::open(&settings(None, None)).unwrap().paths() == (None, None));
    }
}
