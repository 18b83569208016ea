//! Summaries of measured values: min, median, p99, max.
//!
//! The median is the middle value (the mean of the two middle ones for an even count); p99
//! is the nearest-rank percentile, the smallest value that at least 99 % of the values do
//! not exceed. With fewer than 100 values that is the maximum: with 20 trials, p99 = max.

use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub min: f64,
    pub median: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    /// `None` for no values; NaNs are left out.
    pub fn of(values: &[f64]) -> Option<Summary> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let count = sorted.len();
        let median = if count % 2 == 1 {
            sorted[count / 2]
        } else {
            (sorted[count / 2 - 1] + sorted[count / 2]) / 2.0
        };
        Some(Summary {
            count,
            min: sorted[0],
            median,
            p99: nearest_rank(&sorted, 99.0),
            max: sorted[count - 1],
            mean: sorted.iter().sum::<f64>() / count as f64,
        })
    }

    pub fn to_json(self) -> Value {
        json!({
            "count": self.count,
            "min": self.min,
            "median": self.median,
            "p99": self.p99,
            "max": self.max,
            "mean": self.mean,
        })
    }
}

/// The nearest-rank `percent` percentile of ascending `sorted` (not empty).
pub fn nearest_rank(sorted: &[f64], percent: f64) -> f64 {
    let rank = (percent / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_twenty_trials() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        let summary = Summary::of(&values).unwrap();
        assert_eq!(summary.count, 20);
        assert_eq!(summary.min, 1.0);
        assert_eq!(summary.median, 10.5);
        assert_eq!(summary.p99, 20.0, "with 20 values p99 is the maximum");
        assert_eq!(summary.max, 20.0);
        assert_eq!(summary.mean, 10.5);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(nearest_rank(&values, 99.0), 198.0);
        assert_eq!(nearest_rank(&values, 50.0), 100.0);
        assert_eq!(nearest_rank(&[7.0], 99.0), 7.0);
        assert_eq!(nearest_rank(&[1.0, 2.0], 0.0), 1.0);
    }

    #[test]
    fn odd_counts_unordered_input_and_nothing() {
        let summary = Summary::of(&[5.0, 1.0, 3.0, f64::NAN]).unwrap();
        assert_eq!((summary.count, summary.median), (3, 3.0));
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[f64::NAN]), None);
    }
}
