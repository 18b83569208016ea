//! Small measurements the agent keeps about itself: how late its own loop wakes (stalls)
//! and how long heartbeats wait between the kernel stamp and the agent reading them.

/// The most recent samples of a delay, in nanoseconds; percentiles on demand.
#[derive(Clone, Debug)]
pub struct LatencySamples {
    samples: Vec<u64>,
    next: usize,
    capacity: usize,
    total: u64,
}

/// Percentiles of [`LatencySamples`], in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LatencySummary {
    /// Samples seen since start (the percentiles cover the most recent ones).
    pub count: u64,
    pub median: f64,
    pub p99: f64,
    pub max: f64,
}

impl LatencySamples {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            samples: Vec::with_capacity(capacity),
            next: 0,
            capacity,
            total: 0,
        }
    }

    pub fn record(&mut self, ns: u64) {
        self.total += 1;
        if self.samples.len() < self.capacity {
            self.samples.push(ns);
        } else {
            self.samples[self.next] = ns;
            self.next = (self.next + 1) % self.capacity;
        }
    }

    pub fn summary_us(&self) -> LatencySummary {
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        let at = |q: f64| -> f64 {
            if sorted.is_empty() {
                return 0.0;
            }
            let index = ((sorted.len() - 1) as f64 * q).round() as usize;
            sorted[index.min(sorted.len() - 1)] as f64 / 1e3
        };
        LatencySummary {
            count: self.total,
            median: at(0.5),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// The largest lateness of the agent's own timers: how long it was unable to run.
#[derive(Clone, Copy, Debug, Default)]
pub struct StallMeter {
    max_ns: u64,
    last_ns: u64,
}

impl StallMeter {
    /// The loop went to sleep at `slept_at_ns` until `deadline_ns` and woke at `woke_ns`.
    /// Only a wait for a deadline still ahead is a measure: a deadline already due when the
    /// loop looked (the first metrics snapshot is due at 0) says nothing about lateness.
    pub fn record_wake(&mut self, slept_at_ns: u64, deadline_ns: u64, woke_ns: u64) {
        if deadline_ns > slept_at_ns {
            self.record(woke_ns.saturating_sub(deadline_ns));
        }
    }

    fn record(&mut self, late_ns: u64) {
        self.last_ns = late_ns;
        self.max_ns = self.max_ns.max(late_ns);
    }

    pub fn max_ns(&self) -> u64 {
        self.max_ns
    }

    pub fn last_ns(&self) -> u64 {
        self.last_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalls_count_only_waits_for_a_deadline_ahead() {
        let mut stalls = StallMeter::default();
        // Due already when the loop looked (a deadline at 0): not a stall of 9 s.
        stalls.record_wake(9_000_000_000, 0, 9_000_000_100);
        assert_eq!(stalls.max_ns(), 0);
        // Slept at 10 s for a deadline at 10.005 s, woke 2 ms after it.
        stalls.record_wake(10_000_000_000, 10_005_000_000, 10_007_000_000);
        assert_eq!((stalls.max_ns(), stalls.last_ns()), (2_000_000, 2_000_000));
        stalls.record_wake(11_000_000_000, 11_005_000_000, 11_005_100_000);
        assert_eq!((stalls.max_ns(), stalls.last_ns()), (2_000_000, 100_000));
    }

    #[test]
    fn percentiles_of_recent_samples() {
        let mut samples = LatencySamples::new(100);
        for i in 1..=100 {
            samples.record(i * 1_000);
        }
        let s = samples.summary_us();
        assert_eq!(s.count, 100);
        assert_eq!(s.median, 51.0);
        assert_eq!(s.p99, 99.0);
        assert_eq!(s.max, 100.0);
        // Old samples roll out.
        for _ in 0..100 {
            samples.record(5_000);
        }
        let s = samples.summary_us();
        assert_eq!((s.median, s.max, s.count), (5.0, 5.0, 200));
    }

    #[test]
    fn empty_summary_is_zero() {
        assert_eq!(
            LatencySamples::new(8).summary_us(),
            LatencySummary::default()
        );
    }

    #[test]
    fn stall_meter_keeps_the_maximum() {
        let mut meter = StallMeter::default();
        meter.record(5);
        meter.record(50);
        meter.record(7);
        assert_eq!((meter.max_ns(), meter.last_ns()), (50, 7));
    }
}
