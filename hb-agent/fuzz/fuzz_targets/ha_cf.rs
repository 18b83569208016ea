//! `ha.cf` parser: never panics, every diagnostic points at a line of the input.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = hb_agent::config::parse_ha_cf(data, Path::new("ha.cf"));
    let lines = data.split(|&b| b == b'\n').count();
    for diagnostic in &parsed.diagnostics {
        if let Some(line) = diagnostic.line {
            assert!(line >= 1 && line <= lines, "line {line} of {lines}");
        }
        let _ = diagnostic.to_string();
    }
    for link in &parsed.hacf.links {
        assert!(link.port != 0);
        assert!(!link.iface.is_empty());
    }
});
