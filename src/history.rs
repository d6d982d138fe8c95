//! The status page's memory: a fixed ring of samples of the server's figures, one every
//! `--status-interval` (10 s by default), served as JSON at `/status.json` so that the page's
//! charts survive a reload.
//!
//! The ring holds [`CAPACITY`] samples (an hour at the default interval), allocated when the
//! server starts and never grown: [`History::memory`] bytes in all, about 32 KiB on 64-bit
//! machines. A sample holds gauges as they were when it was taken and, for counters, what
//! happened during its interval (closes by code, limit hits, failed upgrades, relay rate and
//! latency percentiles), so a reader never needs two samples to make sense of one.

use std::collections::VecDeque;
use std::fmt::Write as _;

use crate::close::CloseReason;
use crate::metrics::{Gauges, Limit, Metrics, LATENCY_BUCKETS};

/// Samples kept: an hour at the default interval of 10 s.
pub const CAPACITY: usize = 360;

/// The close codes the server sends (docs/PROTOCOL.md §7), one column each.
const CLOSE_CODES: [u16; 10] = [1001, 1002, 1008, 1009, 4741, 4742, 4743, 4744, 4745, 4746];

/// What the counters were at the last sample, to take differences from.
#[derive(Debug, Clone, Copy)]
struct Totals {
    at_ms: u64,
    relayed: u64,
    closes: [u64; CloseReason::ALL.len()],
    limits: [u64; Limit::ALL.len()],
    failed_upgrades: u64,
    latency: [u64; LATENCY_BUCKETS.len() + 1],
}

impl Totals {
    fn of(at_ms: u64, metrics: &Metrics, gauges: &Gauges) -> Self {
        Self {
            at_ms,
            relayed: gauges.relayed_messages,
            closes: *metrics.server_closes(),
            limits: *metrics.limit_hits(),
            failed_upgrades: metrics.handshake_failures().iter().sum(),
            latency: *metrics.latency_counts(),
        }
    }
}

/// One point of every chart. Counts saturate rather than wrap.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    /// When it was taken, in milliseconds since the Unix epoch.
    at_ms: u64,
    connections: u32,
    groups: u32,
    members: u32,
    /// Buffer memory held, against `--memory-budget`.
    buffered_bytes: u64,
    /// Contents relayed per second over the interval.
    relayed_per_second: f32,
    /// Relay latency percentiles over the interval, in microseconds; NaN without relays.
    latency_p50_us: f32,
    latency_p99_us: f32,
    /// Server closes during the interval, by code ([`CLOSE_CODES`]).
    closes: [u16; CLOSE_CODES.len()],
    /// Limit hits during the interval, by limit ([`Limit::ALL`]).
    limits: [u16; Limit::ALL.len()],
    /// Connections that did not become WebSockets during the interval: refused (limits,
    /// origin, stopping), bad requests, failed TLS handshakes, timeouts, early hang-ups.
    failed_upgrades: u16,
}

/// A column of the JSON: its name, and its value in a sample.
type Column = (&'static str, fn(&Sample) -> f64);

/// The ring of samples.
#[derive(Debug)]
pub struct History {
    samples: VecDeque<Sample>,
    last: Option<Totals>,
}

impl Default for History {
    fn default() -> Self {
        Self {
            samples: VecDeque::with_capacity(CAPACITY),
            last: None,
        }
    }
}

fn count(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A count within one interval: 65,535 and more show as 65,535.
fn small(n: u64) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

impl History {
    /// Bytes the ring holds, fixed from the start.
    pub fn memory() -> usize {
        CAPACITY * std::mem::size_of::<Sample>() + std::mem::size_of::<Self>()
    }

    /// Takes a sample at `at_ms` (milliseconds since the Unix epoch). The first call only
    /// notes where the counters stand; each later one adds a sample for the time between.
    pub fn record(&mut self, at_ms: u64, metrics: &Metrics, gauges: &Gauges) {
        let now = Totals::of(at_ms, metrics, gauges);
        let Some(last) = self.last.replace(now) else {
            return;
        };
        let mut closes = [0u16; CLOSE_CODES.len()];
        for (reason, (n, before)) in CloseReason::ALL
            .iter()
            .zip(now.closes.iter().zip(last.closes))
        {
            if let Some(i) = CLOSE_CODES.iter().position(|&c| c == reason.close_code()) {
                closes[i] = closes[i].saturating_add(small(n - before));
            }
        }
        let mut limits = [0u16; Limit::ALL.len()];
        for (slot, (n, before)) in limits.iter_mut().zip(now.limits.iter().zip(last.limits)) {
            *slot = small(n - before);
        }
        let mut latency = [0u64; LATENCY_BUCKETS.len() + 1];
        for (slot, (n, before)) in latency.iter_mut().zip(now.latency.iter().zip(last.latency)) {
            *slot = n - before;
        }
        let seconds = at_ms.saturating_sub(last.at_ms).max(1) as f64 / 1000.0;
        if self.samples.len() == CAPACITY {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            at_ms,
            connections: count(gauges.connections as u64),
            groups: count(gauges.groups as u64),
            members: count(gauges.members as u64),
            buffered_bytes: gauges.buffered_bytes as u64,
            relayed_per_second: ((now.relayed - last.relayed) as f64 / seconds) as f32,
            latency_p50_us: quantile(&latency, 0.50).unwrap_or(f32::NAN),
            latency_p99_us: quantile(&latency, 0.99).unwrap_or(f32::NAN),
            closes,
            limits,
            failed_upgrades: small(now.failed_upgrades - last.failed_upgrades),
        });
    }

    /// The ring as JSON, column by column, oldest sample first (the format is in the README).
    pub fn render(&self, interval_ms: u64, gauges: &Gauges, memory_budget: usize) -> String {
        let mut out = String::with_capacity(1024 + self.samples.len() * 160);
        let _ = write!(
            out,
            "{{\"version\":\"{}\",\"interval_seconds\":{},\"capacity\":{CAPACITY},\"start_time\":{},\"memory_budget_bytes\":{memory_budget},\"samples\":{{",
            env!("CARGO_PKG_VERSION"),
            interval_ms as f64 / 1000.0,
            gauges.start_time,
        );
        let columns: [Column; 9] = [
            ("time", |s| s.at_ms as f64 / 1000.0),
            ("connections", |s| f64::from(s.connections)),
            ("groups", |s| f64::from(s.groups)),
            ("members", |s| f64::from(s.members)),
            ("buffered_bytes", |s| s.buffered_bytes as f64),
            ("relayed_per_second", |s| f64::from(s.relayed_per_second)),
            ("latency_p50_us", |s| f64::from(s.latency_p50_us)),
            ("latency_p99_us", |s| f64::from(s.latency_p99_us)),
            ("failed_upgrades", |s| f64::from(s.failed_upgrades)),
        ];
        for (name, value) in columns {
            // Times to the millisecond: rates times intervals must give back the counts.
            let decimals = if name == "time" { 3 } else { 1 };
            self.column(&mut out, name, decimals, value);
            out.push(',');
        }
        out.push_str("\"closes\":{");
        for (i, code) in CLOSE_CODES.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            self.column(&mut out, &code.to_string(), 0, |s| f64::from(s.closes[i]));
        }
        out.push_str("},\"limit_hits\":{");
        for (i, limit) in Limit::ALL.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            self.column(&mut out, limit.label(), 0, |s| f64::from(s.limits[i]));
        }
        out.push_str("}}}\n");
        out
    }

    /// Writes `"name":[v,...]`, each value with at most `decimals` digits after the point
    /// (none for a whole number); a value that is not a number is written `null`.
    fn column(
        &self,
        out: &mut String,
        name: &str,
        decimals: usize,
        value: impl Fn(&Sample) -> f64,
    ) {
        let _ = write!(out, "\"{name}\":[");
        for (i, sample) in self.samples.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let v = value(sample);
            if !v.is_finite() {
                out.push_str("null");
            } else if v.fract() == 0.0 {
                let _ = write!(out, "{v}");
            } else {
                let _ = write!(out, "{v:.decimals$}");
            }
        }
        out.push(']');
    }
}

/// The `q` quantile of a histogram's per-bucket counts, in microseconds, interpolated within
/// its bucket as Prometheus' `histogram_quantile` does; above the last bound, that bound.
fn quantile(counts: &[u64; LATENCY_BUCKETS.len() + 1], q: f64) -> Option<f32> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    let mut lower = 0.0;
    for (i, &n) in counts.iter().enumerate() {
        let Some(&upper) = LATENCY_BUCKETS.get(i) else {
            break;
        };
        if n > 0 && (below + n) as f64 >= rank {
            let within = (rank - below as f64) / n as f64;
            return Some(((lower + (upper - lower) * within) * 1e6) as f32);
        }
        below += n;
        lower = upper;
    }
    Some((lower * 1e6) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_close_code_has_a_column() {
        for reason in CloseReason::ALL {
            assert!(
                CLOSE_CODES.contains(&reason.close_code()),
                "{reason:?} closes with {}, which has no column",
                reason.close_code()
            );
        }
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let mut counts = [0u64; LATENCY_BUCKETS.len() + 1];
        assert_eq!(quantile(&counts, 0.5), None);
        // 100 observations in (50 µs, 100 µs]: the median is half way, the p99 near the top.
        counts[4] = 100;
        assert_eq!(quantile(&counts, 0.5), Some(75.0));
        assert_eq!(quantile(&counts, 0.99), Some(99.5));
        // Past the last bound: the last bound, 1 s.
        counts = [0; LATENCY_BUCKETS.len() + 1];
        counts[LATENCY_BUCKETS.len()] = 3;
        assert_eq!(quantile(&counts, 0.99), Some(1e6));
    }

    fn gauges(connections: usize, relayed: u64) -> Gauges {
        Gauges {
            connections,
            relayed_messages: relayed,
            ..Gauges::default()
        }
    }

    #[test]
    fn samples_hold_what_happened_in_their_interval() {
        let mut m = Metrics::default();
        let mut h = History::default();
        h.record(1_000_000, &m, &gauges(0, 0));
        assert!(
            h.samples.is_empty(),
            "the first call only notes the counters"
        );
        m.on_server_close(CloseReason::TextFrame);
        m.on_server_close(CloseReason::EmptyMessage);
        m.on_server_close(CloseReason::MessageTooBig);
        m.on_relayed(Duration::from_micros(70), 10);
        h.record(1_010_000, &m, &gauges(4, 200));
        h.record(1_020_000, &m, &gauges(2, 200));
        let (a, b) = (h.samples[0], h.samples[1]);
        assert_eq!((a.connections, a.relayed_per_second), (4, 20.0));
        assert_eq!(
            a.closes[CLOSE_CODES.iter().position(|&c| c == 4743).unwrap()],
            2
        );
        assert_eq!(
            a.closes[CLOSE_CODES.iter().position(|&c| c == 1009).unwrap()],
            1
        );
        assert_eq!(a.limits[Limit::MessageSize as usize], 1);
        assert_eq!(a.latency_p50_us, 75.0);
        // Nothing happened in the second interval.
        assert_eq!((b.connections, b.relayed_per_second), (2, 0.0));
        assert!(b.closes.iter().chain(&b.limits).all(|&n| n == 0));
        assert!(b.latency_p99_us.is_nan());
    }

    #[test]
    fn the_ring_keeps_the_last_capacity_samples_without_growing() {
        let (m, mut h) = (Metrics::default(), History::default());
        let allocated = h.samples.capacity();
        for i in 0..=(CAPACITY as u64 + 50) {
            h.record(i * 10_000, &m, &gauges(i as usize, 0));
        }
        assert_eq!(h.samples.len(), CAPACITY);
        assert_eq!(h.samples.capacity(), allocated);
        assert_eq!(h.samples.front().unwrap().connections, 51);
        assert_eq!(h.samples.back().unwrap().connections, CAPACITY as u32 + 50);
        assert!(History::memory() < 36 * 1024, "{}", History::memory());
    }

    #[test]
    fn renders_columns_of_equal_length() {
        let mut m = Metrics::default();
        let mut h = History::default();
        h.record(0, &m, &gauges(0, 0));
        h.record(10_000, &m, &gauges(3, 0));
        m.on_relayed(Duration::from_micros(20), 4);
        m.on_server_close(CloseReason::Heartbeat);
        h.record(20_000, &m, &gauges(5, 40));
        let json = h.render(10_000, &Gauges::default(), 1 << 20);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["interval_seconds"], 10.0);
        assert_eq!(v["capacity"], CAPACITY);
        let s = &v["samples"];
        assert_eq!(s["time"], serde_json::json!([10, 20]));
        assert_eq!(s["connections"], serde_json::json!([3, 5]));
        assert_eq!(s["relayed_per_second"], serde_json::json!([0, 4]));
        assert_eq!(s["latency_p50_us"][0], serde_json::Value::Null);
        assert_eq!(s["latency_p50_us"][1], 17.5);
        assert_eq!(s["closes"]["4742"], serde_json::json!([0, 1]));
        assert_eq!(s["limit_hits"]["rate_limit"], serde_json::json!([0, 0]));
        assert_eq!(s["closes"].as_object().unwrap().len(), CLOSE_CODES.len());
    }

    #[test]
    fn a_full_ring_of_busy_samples_stays_small() {
        let mut m = Metrics::default();
        let mut h = History::default();
        for i in 0..=CAPACITY as u64 {
            m.on_relayed(Duration::from_micros(i * 7), 1000);
            m.on_server_close(CloseReason::Heartbeat);
            let g = Gauges {
                connections: 12_345,
                groups: 2345,
                members: 3456,
                buffered_bytes: 1_234_567,
                relayed_messages: i * 123_456,
                ..Gauges::default()
            };
            h.record(1_733_353_179_123 + i * 10_000, &m, &g);
        }
        let json = h.render(10_000, &Gauges::default(), 1 << 28);
        assert!(json.len() < 48 * 1024, "{} bytes", json.len());
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            v["samples"]["latency_p99_us"].as_array().unwrap().len(),
            CAPACITY
        );
        assert_eq!(v["samples"]["closes"]["4742"][CAPACITY - 1], 1);
    }
}
