//! The sender's deadline arithmetic, kept pure so the skip-forward rule is testable.

/// Where the sender's next heartbeat goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tick {
    /// The next absolute deadline, CLOCK_MONOTONIC nanoseconds.
    pub next_ns: u64,
    /// Deadlines that passed while the sender was late and that it will not send for.
    pub missed: u64,
}

/// The tick after the one due at `deadline_ns`, served with the clock at `now_ns`.
///
/// Deadlines stay on the grid `deadline + k * interval`, so lateness never accumulates into
/// drift. The next deadline is the first grid point after `now_ns`: an on-time sender
/// moves one interval on; a sender that fell a whole interval or more behind skips the
/// grid points already past, counts them as missed, and never sends a burst to catch up
/// (two heartbeats back to back tell a peer nothing one would not).
pub fn next_tick(deadline_ns: u64, now_ns: u64, interval_ns: u64) -> Tick {
    let interval_ns = interval_ns.max(1);
    let step = now_ns.saturating_sub(deadline_ns) / interval_ns + 1;
    Tick {
        next_ns: deadline_ns.saturating_add(step.saturating_mul(interval_ns)),
        missed: step - 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn on_time_moves_one_interval() {
        assert_eq!(
            next_tick(100 * MS, 100 * MS, 10 * MS),
            Tick {
                next_ns: 110 * MS,
                missed: 0
            }
        );
        assert_eq!(
            next_tick(100 * MS, 109 * MS + 999_999, 10 * MS),
            Tick {
                next_ns: 110 * MS,
                missed: 0
            }
        );
    }

    #[test]
    fn served_before_the_deadline_still_moves_one_interval() {
        // The timer can fire a hair early relative to a clock read taken elsewhere.
        assert_eq!(
            next_tick(100 * MS, 99 * MS, 10 * MS),
            Tick {
                next_ns: 110 * MS,
                missed: 0
            }
        );
    }

    #[test]
    fn late_by_a_whole_interval_skips_and_counts() {
        assert_eq!(
            next_tick(100 * MS, 110 * MS, 10 * MS),
            Tick {
                next_ns: 120 * MS,
                missed: 1
            }
        );
        assert_eq!(
            next_tick(100 * MS, 125 * MS, 10 * MS),
            Tick {
                next_ns: 130 * MS,
                missed: 2
            }
        );
        assert_eq!(
            next_tick(0, 2_000 * MS, 10 * MS),
            Tick {
                next_ns: 2_010 * MS,
                missed: 200
            }
        );
    }

    #[test]
    fn next_is_always_after_now_and_on_the_grid() {
        for now in (0..500).map(|i| 100 * MS + i * 997_003) {
            let tick = next_tick(100 * MS, now, 7 * MS);
            assert!(tick.next_ns > now);
            assert!(tick.next_ns - now <= 7 * MS);
            assert_eq!((tick.next_ns - 100 * MS) % (7 * MS), 0);
            assert_eq!(tick.missed, (tick.next_ns - 100 * MS) / (7 * MS) - 1);
        }
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        assert_eq!(
            next_tick(5, 5, 0),
            Tick {
                next_ns: 6,
                missed: 0
            }
        );
        let tick = next_tick(u64::MAX - 1, u64::MAX, 10);
        assert_eq!(tick.next_ns, u64::MAX);
    }
}
