//! Reading config files and cutting them into lines and words, the way Heartbeat did.
//!
//! Files are read as bytes with a hard size cap, so a wrong path (a log, a disk image) gives
//! one clear error instead of an unbounded read. Lines keep their 1-based numbers for
//! diagnostics.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// No Heartbeat config file comes anywhere near this; anything larger is the wrong file.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Longest line text echoed back in a diagnostic.
const MAX_DISPLAY_CHARS: usize = 200;

/// Heartbeat's `WHITESPACE`.
pub(crate) const WHITESPACE: &[char] = &[' ', '\t', '\n', '\r', '\x0b', '\x0c'];
/// Heartbeat's `DELIMS`: option values may also be separated by commas (`node a,b`).
pub(crate) const DELIMS: &[char] = &[',', ' ', '\t', '\n', '\r', '\x0b', '\x0c'];

/// Why a config file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no such file")]
    NotFound,
    #[error("file is larger than {} KiB: this is not a Heartbeat configuration file", MAX_FILE_BYTES / 1024)]
    TooLarge,
    #[error("not a regular file")]
    NotAFile,
    #[error("{0}")]
    Io(#[source] std::io::Error),
}

/// Reads a whole config file, refusing anything above [`MAX_FILE_BYTES`].
pub fn read_capped(path: &Path) -> Result<Vec<u8>, ReadError> {
    let file = File::open(path).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => ReadError::NotFound,
        _ => ReadError::Io(err),
    })?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::NotAFile);
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge);
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    // The file may grow between stat and read: the cap holds regardless.
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(ReadError::Io)?;
    if data.len() as u64 > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge);
    }
    Ok(data)
}

/// One physical line: its 1-based number and its bytes without the line ending.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawLine<'a> {
    pub number: usize,
    pub bytes: &'a [u8],
}

/// Splits on `\n`, dropping a trailing `\r` (files edited on Windows).
pub(crate) fn raw_lines(data: &[u8]) -> impl Iterator<Item = RawLine<'_>> {
    let trimmed = data.strip_suffix(b"\n").unwrap_or(data);
    let empty = data.is_empty();
    trimmed
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(move |_| !empty)
        .map(|(index, bytes)| RawLine {
            number: index + 1,
            bytes: bytes.strip_suffix(b"\r").unwrap_or(bytes),
        })
}

/// The line as it is shown back to the user: lossy UTF-8, trailing blanks removed, long
/// lines shortened.
pub(crate) fn display_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end_matches(WHITESPACE);
    shorten(text)
}

/// Cuts `text` to [`MAX_DISPLAY_CHARS`] characters, marking the cut.
pub(crate) fn shorten(text: &str) -> String {
    match text.char_indices().nth(MAX_DISPLAY_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Everything before the first `#`, as Heartbeat's ha.cf reader zaps comments anywhere on a
/// line.
pub(crate) fn strip_comment_anywhere(bytes: &[u8]) -> &[u8] {
    match bytes.iter().position(|&b| b == b'#') {
        Some(pos) => &bytes[..pos],
        None => bytes,
    }
}

/// Everything before a `#` that starts a word (at the start of the line or after blank
/// space), so resource arguments may still contain `#`.
pub(crate) fn strip_comment_word(bytes: &[u8]) -> &[u8] {
    let mut previous_blank = true;
    for (pos, &b) in bytes.iter().enumerate() {
        if b == b'#' && previous_blank {
            return &bytes[..pos];
        }
        previous_blank = b.is_ascii_whitespace();
    }
    bytes
}

/// Words separated by any of `separators`, empty words dropped.
pub(crate) fn words<'a>(text: &'a str, separators: &'a [char]) -> impl Iterator<Item = &'a str> {
    text.split(separators).filter(|w| !w.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_numbered_from_one_and_lose_crlf() {
        let lines: Vec<_> = raw_lines(b"a\r\nb\n\nc")
            .map(|l| (l.number, l.bytes))
            .collect();
        assert_eq!(lines, vec![(1, &b"a"[..]), (2, b"b"), (3, b""), (4, b"c")]);
        assert_eq!(raw_lines(b"").count(), 0);
        assert_eq!(raw_lines(b"x\n").count(), 1);
    }

    #[test]
    fn comments() {
        assert_eq!(
            strip_comment_anywhere(b"deadtime 5 # muerto"),
            b"deadtime 5 "
        );
        assert_eq!(strip_comment_word(b"node1 a::b#c # note"), b"node1 a::b#c ");
        assert_eq!(strip_comment_word(b"# all"), b"");
    }

    #[test]
    fn delims_split_commas_like_heartbeat() {
        let got: Vec<_> = words("a, b,,c\td", DELIMS).collect();
        assert_eq!(got, vec!["a", "b", "c", "d"]);
    }

    #[test]
    fn long_lines_are_shortened_for_display() {
        let long = "x".repeat(500);
        let shown = display_text(long.as_bytes());
        assert_eq!(shown.chars().count(), MAX_DISPLAY_CHARS + 1);
        assert!(shown.ends_with('…'));
    }
}
