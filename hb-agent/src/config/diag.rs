//! Diagnostics: every problem found in the config files, with file, line, the offending
//! text and what is wrong. The loader collects all of them before deciding.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::text::shorten;

/// At most this many diagnostics are kept per file; a file that produces more is almost
/// certainly not a Heartbeat config file, and the rest would only bury the first ones.
pub const MAX_DIAGNOSTICS_PER_FILE: usize = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The configuration cannot be used: hb refuses to start.
    Error,
    /// Accepted, but probably not what was meant, or without effect in hb.
    Warning,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One problem in one place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    #[serde(serialize_with = "path_as_text")]
    pub file: PathBuf,
    /// 1-based line; `None` when the problem concerns the whole file or the combination of
    /// files (a missing `node` line, unsafe permissions).
    pub line: Option<usize>,
    /// The offending line as written (secrets in `authkeys` replaced), or empty.
    pub text: String,
    pub message: String,
}

/// Paths are shown as text even when they are not UTF-8, so a report always serializes.
fn path_as_text<S: serde::Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&path.display().to_string())
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": {}: {}", self.severity, self.message)?;
        if !self.text.is_empty() {
            write!(f, "\n    | {}", self.text)?;
        }
        Ok(())
    }
}

/// Collects the diagnostics of one file, with the per-file cap.
#[derive(Debug)]
pub(crate) struct Reporter {
    file: PathBuf,
    diagnostics: Vec<Diagnostic>,
    dropped: usize,
}

impl Reporter {
    pub fn new(file: &Path) -> Self {
        Reporter {
            file: file.to_path_buf(),
            diagnostics: Vec::new(),
            dropped: 0,
        }
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    pub fn push(&mut self, severity: Severity, line: Option<usize>, text: &str, message: String) {
        if self.diagnostics.len() >= MAX_DIAGNOSTICS_PER_FILE {
            self.dropped += 1;
            return;
        }
        self.diagnostics.push(Diagnostic {
            severity,
            file: self.file.clone(),
            line,
            text: shorten(text),
            message,
        });
    }

    /// Further diagnostics will only be counted.
    pub fn is_full(&self) -> bool {
        self.diagnostics.len() >= MAX_DIAGNOSTICS_PER_FILE
    }

    pub fn error(&mut self, line: usize, text: &str, message: impl Into<String>) {
        self.push(Severity::Error, Some(line), text, message.into());
    }

    pub fn warning(&mut self, line: usize, text: &str, message: impl Into<String>) {
        self.push(Severity::Warning, Some(line), text, message.into());
    }

    pub fn file_error(&mut self, message: impl Into<String>) {
        self.push(Severity::Error, None, "", message.into());
    }

    pub fn file_warning(&mut self, message: impl Into<String>) {
        self.push(Severity::Warning, None, "", message.into());
    }

    pub fn finish(mut self) -> Vec<Diagnostic> {
        if self.dropped > 0 {
            let message = format!(
                "{} more problems in this file were not listed (only the first {} are shown)",
                self.dropped, MAX_DIAGNOSTICS_PER_FILE
            );
            self.diagnostics.push(Diagnostic {
                severity: Severity::Error,
                file: self.file,
                line: None,
                text: String::new(),
                message,
            });
        }
        self.diagnostics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reporter_caps_and_says_so() {
        let mut reporter = Reporter::new(Path::new("/etc/ha.d/ha.cf"));
        for line in 1..=MAX_DIAGNOSTICS_PER_FILE + 5 {
            reporter.warning(line, "x", "w");
        }
        let all = reporter.finish();
        assert_eq!(all.len(), MAX_DIAGNOSTICS_PER_FILE + 1);
        let last = &all[MAX_DIAGNOSTICS_PER_FILE];
        assert_eq!(
            last.severity,
            Severity::Error,
            "dropped diagnostics must not pass silently"
        );
        assert!(
            last.message.starts_with("5 more problems"),
            "{}",
            last.message
        );
    }

    #[test]
    fn display_names_file_line_and_text() {
        let d = Diagnostic {
            severity: Severity::Error,
            file: PathBuf::from("/etc/ha.d/ha.cf"),
            line: Some(7),
            text: "kepalive 2".into(),
            message: "unknown directive `kepalive`".into(),
        };
        assert_eq!(
            d.to_string(),
            "/etc/ha.d/ha.cf:7: error: unknown directive `kepalive`\n    | kepalive 2"
        );
    }
}
