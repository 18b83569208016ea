//! What the benchmark reads from a running hb agent: counters from `hb-agent status
//! --json`, the heartbeat inter-arrival histograms from its metrics page, and the kernel's
//! UDP and CPU counters around it. Pure parsing, so it is tested on recorded text.

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// Receive-path counters by reason (`counters.rx` of the status): the XDP program's, or the
/// socket path's.
pub fn rx_counters(status: &Value) -> BTreeMap<String, u64> {
    status["counters"]["rx"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|pair| Some((pair[0].as_str()?.to_owned(), pair[1].as_u64()?)))
        .collect()
}

/// `after - before` per reason.
pub fn counter_growth(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(reason, &value)| {
            let earlier = before.get(reason).copied().unwrap_or(0);
            (reason.clone(), value.saturating_sub(earlier))
        })
        .collect()
}

/// Packets the receive path judged (every reason but `passed`, which is other traffic, and
/// `ring_full`, which re-counts accepted ones).
pub fn judged(rx: &BTreeMap<String, u64>) -> u64 {
    rx.iter()
        .filter(|(reason, _)| !matches!(reason.as_str(), "passed" | "ring_full"))
        .map(|(_, value)| value)
        .sum()
}

/// Packets the receive path dropped before the agent's authentication (every `drop_*`).
pub fn dropped(rx: &BTreeMap<String, u64>) -> u64 {
    rx.iter()
        .filter(|(reason, _)| reason.starts_with("drop_"))
        .map(|(_, value)| value)
        .sum()
}

/// A top-level counter of the status (`auth_failures`, `lost`, ...).
pub fn counter(status: &Value, name: &str) -> u64 {
    status["counters"][name].as_u64().unwrap_or(0)
}

/// How often node `peer` was declared dead, as this status says.
pub fn peer_deaths(status: &Value, peer: &str) -> u64 {
    status["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|node| node["name"] == peer)
        .and_then(|node| node["counters"]["deaths"].as_u64())
        .unwrap_or(0)
}

/// One peer's inter-arrival histogram: `(upper bound in ms, cumulative count)`, the last
/// bound infinite.
pub type Histogram = Vec<(f64, u64)>;

/// `hb_heartbeat_interarrival_seconds` of `peer` from a metrics page.
pub fn interarrival(metrics: &str, peer: &str) -> Option<Histogram> {
    let prefix = "hb_heartbeat_interarrival_seconds_bucket{";
    let node_label = format!("node=\"{peer}\"");
    let mut buckets: Histogram = metrics
        .lines()
        .filter_map(|line| line.strip_prefix(prefix))
        .filter_map(|rest| {
            let (labels, value) = rest.split_once("} ")?;
            if !labels.split(',').any(|label| label == node_label) {
                return None;
            }
            let le = labels
                .split(',')
                .find_map(|label| label.strip_prefix("le=\""))?
                .trim_end_matches('"');
            let bound_ms = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse::<f64>().ok()? * 1e3
            };
            Some((bound_ms, value.trim().parse::<u64>().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    (!buckets.is_empty()).then_some(buckets)
}

/// Where the largest gap recorded between two readings of a histogram lies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GapBound {
    /// Gaps recorded in between.
    pub gaps: u64,
    /// The largest one was above this (ms; 0 for the first bucket)...
    pub above_ms: f64,
    /// ...and at most this (infinite: above the largest bound).
    pub at_most_ms: f64,
}

impl GapBound {
    pub fn to_json(self) -> Value {
        json!({
            "gaps": self.gaps,
            "above_ms": self.above_ms,
            "at_most_ms": if self.at_most_ms.is_finite() { json!(self.at_most_ms) } else { json!("inf") },
        })
    }

    /// `5–10 ms`, `> 60000 ms`.
    pub fn label(self) -> String {
        if self.at_most_ms.is_infinite() {
            format!("> {} ms", self.above_ms)
        } else {
            format!("{}–{} ms", self.above_ms, self.at_most_ms)
        }
    }
}

/// The bucket of the largest gap recorded between `before` and `after` (two readings of
/// one peer's histogram); `None` when none was recorded.
pub fn largest_gap(before: &Histogram, after: &Histogram) -> Option<GapBound> {
    let earlier = |bound: f64| {
        before
            .iter()
            .find(|(b, _)| *b == bound)
            .map_or(0, |(_, count)| *count)
    };
    let growth: Vec<(f64, u64)> = after
        .iter()
        .map(|&(bound, count)| (bound, count.saturating_sub(earlier(bound))))
        .collect();
    let total = growth.last()?.1;
    if total == 0 {
        return None;
    }
    // The first bucket whose cumulative growth holds every new gap.
    let index = growth.iter().position(|&(_, count)| count >= total)?;
    Some(GapBound {
        gaps: total,
        above_ms: if index == 0 { 0.0 } else { growth[index - 1].0 },
        at_most_ms: growth[index].0,
    })
}

/// The kernel's UDP counters of one namespace (`/proc/net/snmp`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpCounters {
    pub in_datagrams: u64,
    /// Datagrams dropped because the socket's receive buffer was full.
    pub rcvbuf_errors: u64,
    pub in_errors: u64,
}

impl UdpCounters {
    pub fn parse(snmp: &str) -> Option<UdpCounters> {
        let mut udp = snmp.lines().filter(|line| line.starts_with("Udp:"));
        let names: Vec<&str> = udp.next()?.split_whitespace().collect();
        let values: Vec<&str> = udp.next()?.split_whitespace().collect();
        let get = |name: &str| -> Option<u64> {
            let index = names.iter().position(|n| *n == name)?;
            values.get(index)?.parse().ok()
        };
        Some(UdpCounters {
            in_datagrams: get("InDatagrams")?,
            rcvbuf_errors: get("RcvbufErrors")?,
            in_errors: get("InErrors")?,
        })
    }

    pub fn since(self, earlier: UdpCounters) -> UdpCounters {
        UdpCounters {
            in_datagrams: self.in_datagrams.saturating_sub(earlier.in_datagrams),
            rcvbuf_errors: self.rcvbuf_errors.saturating_sub(earlier.rcvbuf_errors),
            in_errors: self.in_errors.saturating_sub(earlier.in_errors),
        }
    }
}

/// The whole machine's CPU time in softirq context, in clock ticks (`/proc/stat`): where
/// the XDP program and the kernel's receive path run, charged to no process.
pub fn softirq_ticks(stat: &str) -> Option<u64> {
    let fields: Vec<&str> = stat
        .lines()
        .find(|line| line.starts_with("cpu "))?
        .split_whitespace()
        .collect();
    // cpu user nice system idle iowait irq softirq ...
    fields.get(7)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "\
# TYPE hb_heartbeat_interarrival_seconds histogram
hb_heartbeat_interarrival_seconds_bucket{node=\"lb1\",le=\"0.005\"} 10
hb_heartbeat_interarrival_seconds_bucket{node=\"lb1\",le=\"0.01\"} 19
hb_heartbeat_interarrival_seconds_bucket{node=\"lb1\",le=\"0.02\"} 20
hb_heartbeat_interarrival_seconds_bucket{node=\"lb1\",le=\"+Inf\"} 20
hb_heartbeat_interarrival_seconds_bucket{node=\"lb10\",le=\"+Inf\"} 99
hb_heartbeat_interarrival_seconds_sum{node=\"lb1\"} 0.1
";

    #[test]
    fn reads_one_peers_histogram() {
        let histogram = interarrival(METRICS, "lb1").unwrap();
        assert_eq!(
            histogram,
            vec![(5.0, 10), (10.0, 19), (20.0, 20), (f64::INFINITY, 20)]
        );
        assert!(interarrival(METRICS, "lb3").is_none());
    }

    #[test]
    fn the_largest_gap_is_bounded_by_the_growth_of_the_buckets() {
        let before = vec![(5.0, 10), (10.0, 10), (20.0, 10), (f64::INFINITY, 10)];
        let after = vec![(5.0, 100), (10.0, 104), (20.0, 104), (f64::INFINITY, 104)];
        assert_eq!(
            largest_gap(&before, &after),
            Some(GapBound {
                gaps: 94,
                above_ms: 5.0,
                at_most_ms: 10.0
            })
        );
        // A gap in the earlier reading does not count.
        let before = vec![(5.0, 10), (f64::INFINITY, 11)];
        let after = vec![(5.0, 20), (f64::INFINITY, 21)];
        assert_eq!(largest_gap(&before, &after).unwrap().at_most_ms, 5.0);
        let huge = vec![(5.0, 20), (f64::INFINITY, 22)];
        let bound = largest_gap(&before, &huge).unwrap();
        assert_eq!(bound.label(), "> 5 ms");
        assert_eq!(largest_gap(&after, &after), None);
    }

    #[test]
    fn reads_status_counters() {
        let status = json!({
            "counters": {"auth_failures": 7, "rx": [["passed", 5], ["accepted", 10], ["drop_bad_length", 3], ["ring_full", 2]]},
            "nodes": [{"name": "lb1", "counters": null}, {"name": "lb2", "counters": {"deaths": 1}}],
        });
        let rx = rx_counters(&status);
        assert_eq!((judged(&rx), dropped(&rx)), (13, 3));
        assert_eq!(counter(&status, "auth_failures"), 7);
        assert_eq!(peer_deaths(&status, "lb2"), 1);
        assert_eq!(peer_deaths(&status, "lb1"), 0);
        let mut later = rx.clone();
        later.insert("accepted".into(), 25);
        assert_eq!(counter_growth(&rx, &later)["accepted"], 15);
    }

    #[test]
    fn reads_kernel_counters() {
        let snmp = "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    Udp: 100 2 30 4 25 0\n";
        assert_eq!(
            UdpCounters::parse(snmp),
            Some(UdpCounters {
                in_datagrams: 100,
                rcvbuf_errors: 25,
                in_errors: 30
            })
        );
        let stat = "cpu  10 0 20 300 4 5 66 0 0 0\ncpu0 1 0 2 3 0 0 6 0 0 0\n";
        assert_eq!(softirq_ticks(stat), Some(66));
    }
}
