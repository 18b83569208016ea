//! Rate limiting for repeated warnings: a dead link fails every keepalive, and logging each
//! failure would flood the log at millisecond timers.

use std::time::{Duration, Instant};

/// How often a repeating failure is logged again.
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Lets one message through per interval and counts the ones it held back.
#[derive(Debug, Default)]
pub(crate) struct LogLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// `Some(n)` when a message may be logged now, `n` being how many were held back since
    /// the last one; `None` when this one should be dropped.
    pub(crate) fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < LOG_INTERVAL => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// Forgets the history, so the next failure after a recovery is logged at once.
    pub(crate) fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_one_through_per_interval_and_counts_the_rest() {
        let start = Instant::now();
        let mut limiter = LogLimiter::default();
        assert_eq!(limiter.allow(start), Some(0));
        assert_eq!(limiter.allow(start + Duration::from_millis(1)), None);
        assert_eq!(
            limiter.allow(start + LOG_INTERVAL - Duration::from_millis(1)),
            None
        );
        assert_eq!(limiter.allow(start + LOG_INTERVAL), Some(2));
        assert_eq!(limiter.allow(start + LOG_INTERVAL), None);
    }

    #[test]
    fn reset_lets_the_next_one_through() {
        let start = Instant::now();
        let mut limiter = LogLimiter::default();
        assert_eq!(limiter.allow(start), Some(0));
        assert_eq!(limiter.allow(start), None);
        limiter.reset();
        assert_eq!(limiter.allow(start), Some(0));
    }
}
