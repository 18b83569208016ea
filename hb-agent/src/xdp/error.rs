//! Why the XDP receive path could not start or failed, sorted so that the caller can say
//! why it fell back to sockets.
//!
//! Each message carries its whole cause, errno included (aya keeps the errno in a nested
//! source, which a plain `{}` would not show), so the variants do not also expose the cause
//! as `source()`: printing a chain would repeat it. [`XdpError::os_error`] finds the errno.

use std::io;
use std::path::PathBuf;

use aya::programs::ProgramError;
use aya::EbpfError;

#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// `xdp off` in the configuration: the caller should not have asked.
    #[error("XDP is switched off in the configuration")]
    Disabled,

    #[error("invalid XDP options: {0}")]
    InvalidOptions(String),

    /// Not root, or lacking CAP_BPF/CAP_NET_ADMIN (or CAP_SYS_ADMIN on older kernels).
    #[error("no permission to load BPF programs (needs root, or CAP_BPF and CAP_NET_ADMIN): {}", chain(.0))]
    NoPermission(EbpfError),

    /// The kernel lacks something the XDP path needs: BTF, BPF ring buffers (5.8),
    /// XDP links (5.9).
    #[error("the kernel does not support the XDP path (needs BTF, BPF ring buffers and XDP links, Linux 5.9+): {0}")]
    Unsupported(String),

    /// The verifier refused the program: a build or kernel incompatibility, not a setup issue.
    #[error("the kernel verifier rejected the XDP program: {}", chain(.0))]
    Rejected(EbpfError),

    /// Loading failed for another reason.
    #[error("cannot load the XDP program: {}", chain(.0))]
    Load(EbpfError),

    #[error("interface {0} does not exist")]
    InterfaceMissing(String),

    /// Every attach mode the setting allows failed on this interface.
    #[error("cannot attach XDP to {iface}: {reasons}")]
    AttachFailed {
        iface: String,
        /// One "mode: error" per mode tried, joined with "; ".
        reasons: String,
    },

    /// The pin directory is unusable (no bpffs, permissions, a stale object that would
    /// not go away).
    #[error("BPF pin path {}: {reason}", path.display())]
    Pin { path: PathBuf, reason: String },

    #[error("BPF map {map}: {}", chain(.error))]
    Map {
        map: &'static str,
        error: aya::maps::MapError,
    },

    /// The embedded object lacks the program: a build problem.
    #[error("the embedded BPF object has no program {}", hb_common::maps::PROGRAM)]
    MissingProgram,

    #[error("XDP program: {}", chain(.0))]
    Program(ProgramError),

    #[error("starting the XDP log reader: {}", chain(.0))]
    Logger(aya_log::Error),

    /// Waiting on the ring buffer failed, or no tokio runtime (with I/O) to wait in.
    #[error("event ring: {0}")]
    Ring(io::Error),
}

impl XdpError {
    /// Sorts a loader error by its cause: permission, kernel support, or verifier.
    pub(crate) fn from_load(error: EbpfError) -> Self {
        if let EbpfError::ProgramError(ProgramError::LoadError { io_error, .. }) = &error {
            // The verifier answers EACCES or EINVAL for a program it refuses; EPERM means
            // the caller may not load programs at all.
            return match io_error.raw_os_error() {
                Some(libc::EPERM) => XdpError::NoPermission(error),
                _ => XdpError::Rejected(error),
            };
        }
        if matches!(
            error,
            EbpfError::NoBTF | EbpfError::BtfError(_) | EbpfError::BtfRelocationError(_)
        ) {
            return XdpError::Unsupported(chain(&error));
        }
        match os_error(&error) {
            Some(libc::EPERM | libc::EACCES) => XdpError::NoPermission(error),
            // Unknown map type or flag (ring buffer before 5.8), no bpf() at all.
            Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP | ENOTSUPP) => {
                XdpError::Unsupported(chain(&error))
            }
            _ => XdpError::Load(error),
        }
    }

    /// The errno behind this error, if a system call failed.
    pub fn os_error(&self) -> Option<i32> {
        match self {
            XdpError::NoPermission(error) | XdpError::Rejected(error) | XdpError::Load(error) => {
                os_error(error)
            }
            XdpError::Map { error, .. } => os_error(error),
            XdpError::Program(error) => os_error(error),
            XdpError::Logger(error) => os_error(error),
            XdpError::Ring(error) => error.raw_os_error(),
            XdpError::Disabled
            | XdpError::InvalidOptions(_)
            | XdpError::Unsupported(_)
            | XdpError::InterfaceMissing(_)
            | XdpError::AttachFailed { .. }
            | XdpError::Pin { .. }
            | XdpError::MissingProgram => None,
        }
    }
}

/// The kernel-internal ENOTSUPP that bpf() returns for unsupported features; libc has no
/// name for it.
const ENOTSUPP: i32 = 524;

/// Walks `error`'s source chain for the first `io::Error` carrying an errno.
pub(crate) fn os_error(error: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(code) = error
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
        {
            return Some(code);
        }
        current = error.source();
    }
    None
}

/// An error and its sources, joined with ": ", skipping a source whose text the message
/// already ends with (thiserror's transparent wrappers repeat their inner message).
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let inner_text = inner.to_string();
        if !text.ends_with(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        source = inner.source();
    }
    text
}
