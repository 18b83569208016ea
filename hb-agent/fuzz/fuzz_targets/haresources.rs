//! `haresources` parser: never panics, and every resource it accepts prints back (in
//! Heartbeat syntax) to text that parses to the same resource.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = hb_agent::config::parse_haresources(data, Path::new("haresources"));
    assert_eq!(parsed.groups.len(), parsed.texts.len());
    for group in &parsed.groups {
        assert!(!group.resources.is_empty());
        for resource in &group.resources {
            let text = resource.to_string();
            let again = hb_agent::config::parse_resource(&text);
            assert_eq!(again.as_ref(), Ok(resource), "`{text}`");
        }
    }
});
