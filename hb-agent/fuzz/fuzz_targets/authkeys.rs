//! `authkeys` parser: never panics, and no diagnostic ever echoes key material.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = hb_agent::config::parse_authkeys(data, Path::new("authkeys"));
    let Some(keys) = &parsed.keys else { return };
    assert!((1..=15).contains(&keys.active));
    assert!(keys.keys.iter().any(|(index, _)| *index == keys.active));
    // Secrets contain no blanks; the line texts shown are blank-separated words of at most
    // eight bytes (`<hidden>`), so any longer secret found there was leaked.
    for (_, key) in &keys.keys {
        let secret = &key.secret.0;
        if secret.len() <= 8 {
            continue;
        }
        for diagnostic in &parsed.diagnostics {
            let shown = diagnostic.text.as_bytes();
            assert!(
                !shown.windows(secret.len()).any(|w| w == secret.as_slice()),
                "secret in `{}`",
                diagnostic.text
            );
        }
    }
});
