//! The one clock liveness is measured on: CLOCK_MONOTONIC, the clock `bpf_ktime_get_ns`
//! reads, so kernel arrival stamps and the agent's own "now" compare directly.

use std::time::Duration;

use nix::time::{clock_gettime, ClockId};

/// Nanoseconds on CLOCK_MONOTONIC.
pub fn monotonic_ns() -> u64 {
    // CLOCK_MONOTONIC cannot fail on Linux; a zero here would only make peers look older.
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|ts| nanos(Duration::from(ts)))
        .unwrap_or(0)
}

/// A duration in the nanoseconds the clocks count in, saturating (only a configured
/// "forever" could exceed 584 years).
pub fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Converts a CLOCK_REALTIME stamp (what `SO_TIMESTAMPNS` gives) to CLOCK_MONOTONIC by the
/// current offset between the two clocks.
pub fn realtime_to_monotonic_ns(realtime_ns: u64) -> u64 {
    let mono = monotonic_ns();
    let real = clock_gettime(ClockId::CLOCK_REALTIME)
        .map(|ts| nanos(Duration::from(ts)))
        .unwrap_or(realtime_ns);
    // The packet arrived before "now": its age is the same on both clocks.
    mono.saturating_sub(real.saturating_sub(realtime_ns))
}
