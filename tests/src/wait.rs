//! Polling with deadlines: the only way lab tests wait for things to happen.

use std::time::{Duration, Instant};

/// Polls `condition` every `poll` until it is true (returns `true`) or `timeout` has passed
/// (returns `false`, after one last check at the deadline). Use generous timeouts: the machine
/// may be busy building on its other core.
pub fn wait_until(timeout: Duration, poll: Duration, mut condition: impl FnMut() -> bool) -> bool {
    wait_for(timeout, poll, || condition().then_some(())).is_some()
}

/// Polls `probe` every `poll` until it yields a value (returned) or `timeout` has passed
/// (`None`, after one last probe at the deadline).
pub fn wait_for<T>(
    timeout: Duration,
    poll: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep(poll.min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_as_soon_as_true() {
        let start = Instant::now();
        let mut calls = 0;
        assert!(wait_until(
            Duration::from_secs(10),
            Duration::from_millis(1),
            || {
                calls += 1;
                calls == 3
            }
        ));
        assert_eq!(calls, 3);
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn gives_up_after_the_timeout_with_a_last_check() {
        let start = Instant::now();
        let mut calls = 0;
        assert!(!wait_until(
            Duration::from_millis(50),
            Duration::from_millis(10),
            || {
                calls += 1;
                false
            }
        ));
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert!(calls >= 2, "checked {calls} times");
    }

    #[test]
    fn wait_for_hands_back_the_value() {
        let mut n = 0;
        let value = wait_for(Duration::from_secs(10), Duration::from_millis(1), || {
            n += 1;
            (n > 2).then_some(n * 10)
        });
        assert_eq!(value, Some(30));
    }
}
