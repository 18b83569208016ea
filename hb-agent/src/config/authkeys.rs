//! `authkeys`: `auth N` selects the signing key; `N crc|md5|sha1 [KEY]` lines list keys
//! (index 1-15), every one of which verifies.
//!
//! As in Heartbeat: the key is the first word after the method (the rest of the line is
//! ignored), `crc` takes no key and `md5`/`sha1` need one, and the file must not be
//! readable by group or others. hb also requires it not to be writable by them and to belong
//! to root. Key material never appears in any diagnostic: line texts shown for this file
//! keep the index and method only.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::diag::{Diagnostic, Reporter};
use super::text::raw_lines;
use super::{AuthKey, AuthKeys, AuthMethod, Secret};

/// Highest key index: the wire format carries it in 4 bits, 0 meaning none.
pub const MAX_KEY_INDEX: u8 = 15;

/// Result of reading `authkeys`.
#[derive(Debug, Default)]
pub struct AuthKeysFile {
    /// Present when an `auth` line and its key were found, even if other lines had errors.
    pub keys: Option<AuthKeys>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Parses `authkeys` content.
pub fn parse_authkeys(data: &[u8], file: &Path) -> AuthKeysFile {
    let mut reporter = Reporter::new(file);
    let mut active: Option<(u8, usize)> = None;
    let mut keys: Vec<(u8, AuthKey, usize)> = Vec::new();

    for raw in raw_lines(data) {
        let words: Vec<&[u8]> = raw
            .bytes
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
            .collect();
        let Some(first) = words.first() else { continue };
        if first.starts_with(b"#") {
            continue;
        }
        let shown = redacted(&words);
        let line = raw.number;
        if *first == b"auth" {
            let index = match words.as_slice() {
                [_, index] => parse_index(index),
                [_] => Err("`auth` needs the index of the key to sign with, e.g. `auth 1`".into()),
                _ => Err("expected `auth N` with one key index".into()),
            };
            match index {
                Ok(index) => {
                    if let Some((previous, previous_line)) = active {
                        reporter.warning(
                            line,
                            &shown,
                            format!(
                                "second `auth` line (line {previous_line} said `auth {previous}`): \
                                 this one is used, as in Heartbeat"
                            ),
                        );
                    }
                    active = Some((index, line));
                }
                Err(message) => reporter.error(line, &shown, message),
            }
            continue;
        }
        if !first.first().is_some_and(u8::is_ascii_digit) {
            reporter.error(
                line,
                &shown,
                "not an authkeys line: expected `auth N` or `N crc|md5|sha1 KEY`",
            );
            continue;
        }
        let index = match parse_index(first) {
            Ok(index) => index,
            Err(message) => {
                reporter.error(line, &shown, message);
                continue;
            }
        };
        let Some(method_word) = words.get(1) else {
            reporter.error(
                line,
                &shown,
                format!("key {index} has no method: write `{index} sha1 KEY`"),
            );
            continue;
        };
        let method = match method_word.to_ascii_lowercase().as_slice() {
            b"crc" => AuthMethod::Crc,
            b"md5" => AuthMethod::Md5,
            b"sha1" => AuthMethod::Sha1,
            _ => {
                // The word is not echoed: a forgotten method puts the key in its place.
                reporter.error(
                    line,
                    &shown,
                    format!(
                        "key {index}: the second word is not an authentication method: write \
                         `{index} sha1 KEY` (or md5; crc authenticates nothing)"
                    ),
                );
                continue;
            }
        };
        let secret = words.get(2).map(|w| w.to_vec()).unwrap_or_default();
        match (method, secret.is_empty()) {
            (AuthMethod::Crc, false) => {
                reporter.error(
                    line,
                    &shown,
                    format!("key {index}: crc takes no key (Heartbeat refused this too)"),
                );
                continue;
            }
            (AuthMethod::Md5 | AuthMethod::Sha1, true) => {
                reporter.error(
                    line,
                    &shown,
                    format!(
                        "key {index}: {} needs a key: `{index} {} KEY`",
                        method_name(method),
                        method_name(method)
                    ),
                );
                continue;
            }
            _ => {}
        }
        if words.len() > 3 {
            reporter.warning(
                line,
                &shown,
                format!(
                    "key {index}: the key ends at the first blank; the rest of the line is ignored, \
                     as in Heartbeat"
                ),
            );
        }
        if let Some(position) = keys.iter().position(|(i, _, _)| *i == index) {
            let first_line = keys[position].2;
            reporter.warning(
                line,
                &shown,
                format!("key {index} is listed twice (also line {first_line}): this later one is used, as in Heartbeat"),
            );
            keys.remove(position);
        }
        keys.push((
            index,
            AuthKey {
                method,
                secret: Secret(secret),
            },
            line,
        ));
    }

    let Some((active_index, auth_line)) = active else {
        reporter.file_error(
            "no `auth N` line: authkeys must say which key signs heartbeats, e.g. `auth 1`",
        );
        return AuthKeysFile {
            keys: None,
            diagnostics: reporter.finish(),
        };
    };
    let Some((_, active_key, _)) = keys.iter().find(|(i, _, _)| *i == active_index) else {
        reporter.error(
            auth_line,
            &format!("auth {active_index}"),
            format!("`auth {active_index}` selects key {active_index}, but no `{active_index} METHOD KEY` line defines it"),
        );
        return AuthKeysFile {
            keys: None,
            diagnostics: reporter.finish(),
        };
    };
    if active_key.method == AuthMethod::Crc {
        reporter.warning(
            auth_line,
            &format!("auth {active_index}"),
            "SECURITY: the active key uses crc, which authenticates nothing: anyone who can send a \
             UDP packet to the heartbeat port can forge heartbeats and take the service address. \
             Use `sha1` with a random key (e.g. from `openssl rand -hex 20`)",
        );
    }
    for (index, key, line) in &keys {
        if key.method == AuthMethod::Crc && *index != active_index {
            reporter.warning(
                *line,
                &format!("{index} crc"),
                format!(
                    "SECURITY: key {index} uses crc, which authenticates nothing, and every listed key \
                     is accepted on receipt: anyone can forge heartbeats with key {index}; remove \
                     this line unless you are migrating away from it"
                ),
            );
        }
    }
    let mut keys_sorted: Vec<(u8, AuthKey)> = keys.into_iter().map(|(i, k, _)| (i, k)).collect();
    keys_sorted.sort_by_key(|(i, _)| *i);
    AuthKeysFile {
        keys: Some(AuthKeys {
            active: active_index,
            keys: keys_sorted,
        }),
        diagnostics: reporter.finish(),
    }
}

/// Checks what Heartbeat checked before reading the key file, and a little more: owned by
/// root (or by the user running hb, which is root for the daemon), not readable or writable
/// by group or others. Each problem says the command that fixes it.
pub fn check_key_file_security(
    file: &Path,
    meta: &std::fs::Metadata,
    effective_uid: u32,
) -> Vec<Diagnostic> {
    let mut reporter = Reporter::new(file);
    let shown = shell_quote(&file.display().to_string());
    let owner = meta.uid();
    if owner != 0 && owner != effective_uid {
        reporter.file_error(format!(
            "authkeys belongs to uid {owner}, not root: another user could change the cluster key. \
             Run: chown root:root {shown} && chmod 600 {shown}"
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o066 != 0 {
        reporter.file_error(format!(
            "authkeys has mode {mode:04o}: group or others can read or write the cluster key \
             (Heartbeat refused such a file too). Run: chmod 600 {shown}"
        ));
    }
    reporter.finish()
}

pub(crate) fn method_name(method: AuthMethod) -> &'static str {
    match method {
        AuthMethod::Crc => "crc",
        AuthMethod::Md5 => "md5",
        AuthMethod::Sha1 => "sha1",
    }
}

fn parse_index(word: &[u8]) -> Result<u8, String> {
    let text = String::from_utf8_lossy(word);
    match text.parse::<u8>() {
        Ok(index @ 1..=MAX_KEY_INDEX) if word.iter().all(u8::is_ascii_digit) => Ok(index),
        // Only short numbers are echoed: anything else on this line may be key material.
        _ if is_short_number(word) => Err(format!(
            "`{text}` is not a key index: use 1 to {MAX_KEY_INDEX}"
        )),
        _ => Err(format!(
            "the first word is not a key index: use 1 to {MAX_KEY_INDEX}"
        )),
    }
}

/// The line as shown in diagnostics: the `auth` keyword, the index and a known method
/// name; everything else is replaced by one marker, since it may be key material.
fn redacted(words: &[&[u8]]) -> String {
    let is_auth_line = words.first().is_some_and(|w| *w == b"auth");
    let mut shown: Vec<String> = Vec::new();
    for (position, word) in words.iter().enumerate() {
        let safe = match position {
            0 => is_auth_line || is_short_number(word),
            1 => (is_auth_line && is_short_number(word)) || is_method_word(word),
            _ => false,
        };
        if !safe {
            shown.push("<hidden>".to_string());
            break;
        }
        shown.push(String::from_utf8_lossy(word).into_owned());
    }
    shown.join(" ")
}

fn is_short_number(word: &[u8]) -> bool {
    !word.is_empty() && word.len() <= 3 && word.iter().all(u8::is_ascii_digit)
}

fn is_method_word(word: &[u8]) -> bool {
    matches!(
        word.to_ascii_lowercase().as_slice(),
        b"crc" | b"md5" | b"sha1"
    )
}

fn shell_quote(text: &str) -> String {
    if text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+".contains(&b))
    {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> AuthKeysFile {
        parse_authkeys(text.as_bytes(), Path::new("/etc/ha.d/authkeys"))
    }

    #[test]
    fn debian_example_uncommented() {
        let parsed = parse("auth 1\n1 crc\n2 sha1 HI!\n3 md5 Hello!\n");
        let keys = parsed.keys.expect("keys");
        assert_eq!(keys.active, 1);
        let methods: Vec<_> = keys.keys.iter().map(|(i, k)| (*i, k.method)).collect();
        assert_eq!(
            methods,
            vec![
                (1, AuthMethod::Crc),
                (2, AuthMethod::Sha1),
                (3, AuthMethod::Md5)
            ]
        );
        assert_eq!(keys.keys[1].1.secret.0, b"HI!");
        assert_eq!(parsed.diagnostics.len(), 1, "{:?}", parsed.diagnostics);
        assert!(parsed.diagnostics[0]
            .message
            .starts_with("SECURITY: the active key uses crc"));
    }

    #[test]
    fn secrets_never_shown() {
        let parsed = parse(
            "auth 2\n2 sha1 s3cr3t extra words\n2 sha1 s3cr3t\n99 sha1 s3cr3t\nx s3cr3t\n\
             3 s3cr3t\n4s3cr3t sha1 k\n",
        );
        assert!(parsed.keys.is_some());
        assert_eq!(parsed.diagnostics.len(), 6, "{:?}", parsed.diagnostics);
        assert_eq!(parsed.diagnostics[0].text, "2 sha1 <hidden>");
        for d in &parsed.diagnostics {
            assert!(
                !d.text.contains("s3cr3t") && !d.message.contains("s3cr3t"),
                "{d:?}"
            );
        }
        let rendered = format!("{:?}", parsed.keys);
        assert!(!rendered.contains("s3cr3t"));
    }

    #[test]
    fn missing_pieces() {
        let parsed = parse("1 sha1 k\n");
        assert!(parsed.keys.is_none());
        assert_eq!(parsed.diagnostics[0].line, None);
        assert!(parsed.diagnostics[0]
            .message
            .starts_with("no `auth N` line"));

        let parsed = parse("auth 3\n1 sha1 k\n");
        assert!(parsed.keys.is_none());
        assert_eq!(parsed.diagnostics[0].line, Some(1));
        assert!(parsed.diagnostics[0]
            .message
            .contains("no `3 METHOD KEY` line"));

        let parsed = parse("auth 1\n1 sha1\n2 crc key\n0 md5 k\n16 md5 k\n1 blake k\n");
        let messages: Vec<_> = parsed
            .diagnostics
            .iter()
            .map(|d| (d.line, d.message.clone()))
            .collect();
        assert!(messages.contains(&(Some(2), "key 1: sha1 needs a key: `1 sha1 KEY`".into())));
        assert!(messages.contains(&(
            Some(3),
            "key 2: crc takes no key (Heartbeat refused this too)".into()
        )));
        assert!(messages
            .iter()
            .any(|(l, m)| *l == Some(4) && m.starts_with("`0` is not a key index")));
        assert!(messages
            .iter()
            .any(|(l, m)| *l == Some(5) && m.starts_with("`16` is not a key index")));
        assert!(messages.iter().any(|(l, m)| *l == Some(6)
            && m.starts_with("key 1: the second word is not an authentication method")));
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/etc/ha.d/authkeys"), "/etc/ha.d/authkeys");
        assert_eq!(shell_quote("/tmp/a b"), "'/tmp/a b'");
    }
}
