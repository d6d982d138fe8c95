//! What a run reports: latency histograms, the server's memory and CPU time read from /proc,
//! our own CPU time, and the result (one JSON object) that `--json` prints and scripts read.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// Latencies are recorded in nanoseconds, from 1 µs to 100 s, with 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 100_000_000_000, 3).expect("valid bounds")
}

/// Records `ns`, clamped into the histogram's range (so an outlier is never lost).
pub fn record(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record(ns.max(1_000));
}

/// The percentiles reported and plotted.
pub const PERCENTILES: [f64; 12] = [
    50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.995, 99.999, 100.0,
];

/// Resident memory of process `pid`, in KiB (VmRSS in /proc/PID/status).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time (user + system, all threads) of process `pid` in seconds, from /proc/PID/stat.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3, the state.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((utime + stime) as f64 / hz)
}

/// CPU time of the server and of this process between two points of a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuMark {
    server: Option<f64>,
    client: Option<f64>,
    at: u64,
}

impl CpuMark {
    /// Reads both now.
    pub fn take(pid: Option<u32>, now: u64) -> Self {
        Self {
            server: pid.and_then(|p| cpu_seconds(Some(p))),
            client: cpu_seconds(None),
            at: now,
        }
    }

    /// Adds `server_cpu` and `client_cpu` (fraction of one core over the interval) to `json`.
    pub fn report(&self, later: &Self, json: &mut Json) {
        let wall = later.at.saturating_sub(self.at) as f64 / 1e9;
        if wall <= 0.0 {
            return;
        }
        if let (Some(a), Some(b)) = (self.server, later.server) {
            json.num("server_cpu", (b - a) / wall);
        }
        if let (Some(a), Some(b)) = (self.client, later.client) {
            json.num("client_cpu", (b - a) / wall);
        }
    }
}

/// The errors a mode met: how many, and the first one.
#[derive(Debug, Default)]
pub struct Errors {
    /// How many errors there were.
    pub count: u64,
    first: Option<String>,
}

impl Errors {
    /// Counts an error, and keeps its description if it is the first.
    pub fn record(&mut self, what: String) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(what);
        }
    }

    /// Writes the verdict `ok` and the first error, if any, to `j`.
    pub fn verdict(&self, j: &mut Json, ok: bool) {
        j.raw("ok", if ok { "true" } else { "false" });
        if let Some(e) = &self.first {
            j.str("first_error", e);
        }
    }

    /// The end of a human summary: nothing when `ok`, else `[NOT OK: {counts}; {why}]` where
    /// `why` is the first error, or the time limit when there was none.
    pub fn not_ok(&self, ok: bool, counts: impl FnOnce() -> String) -> String {
        if ok {
            String::new()
        } else {
            format!(
                " [NOT OK: {}; {}]",
                counts(),
                self.first.as_deref().unwrap_or("time limit")
            )
        }
    }
}

/// A flat JSON object written by hand (numbers, strings, and raw nested values).
#[derive(Debug, Default)]
pub struct Json(String);

impl Json {
    fn key(&mut self, k: &str) {
        self.0.push(if self.0.is_empty() { '{' } else { ',' });
        let _ = write!(self.0, "\"{k}\":");
    }

    /// A number; non-finite values are written as null.
    pub fn num(&mut self, k: &str, v: f64) {
        self.key(k);
        if v.is_finite() {
            if v.fract() == 0.0 && v.abs() < 1e15 {
                let _ = write!(self.0, "{}", v as i64);
            } else {
                let _ = write!(self.0, "{v:.3}");
            }
        } else {
            self.0.push_str("null");
        }
    }

    /// A string (no escaping needed for what we write: ASCII without quotes).
    pub fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        let _ = write!(self.0, "\"{}\"", v.replace(['"', '\\'], "_"));
    }

    /// A value already in JSON.
    pub fn raw(&mut self, k: &str, v: &str) {
        self.key(k);
        self.0.push_str(v);
    }

    /// The latency summary of `h` under `k`: count, mean and the percentiles, in µs.
    pub fn latency(&mut self, k: &str, h: &Histogram<u64>) {
        let us = |ns: u64| ns as f64 / 1e3;
        let mut pct = String::from("[");
        for (i, p) in PERCENTILES.iter().enumerate() {
            if i > 0 {
                pct.push(',');
            }
            let v = if h.is_empty() {
                f64::NAN
            } else {
                us(h.value_at_percentile(*p))
            };
            let _ = write!(pct, "[{p},{}]", if v.is_finite() { v } else { 0.0 });
        }
        pct.push(']');
        let mut o = Json::default();
        o.num("count", h.len() as f64);
        if !h.is_empty() {
            o.num("mean", h.mean() / 1e3);
            o.num("p50", us(h.value_at_quantile(0.5)));
            o.num("p90", us(h.value_at_quantile(0.9)));
            o.num("p99", us(h.value_at_quantile(0.99)));
            o.num("p999", us(h.value_at_quantile(0.999)));
            o.num("max", us(h.max()));
        }
        o.raw("pct", &pct);
        self.raw(k, &o.finish());
    }

    /// The object's text.
    pub fn finish(mut self) -> String {
        if self.0.is_empty() {
            self.0.push('{');
        }
        self.0.push('}');
        self.0
    }
}

/// The human summary of a latency histogram, in µs.
pub fn latency_line(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "no samples".to_owned();
    }
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
    format!(
        "p50 {:.0} µs, p90 {:.0}, p99 {:.0}, p99.9 {:.0}, max {:.0} ({} samples)",
        us(0.5),
        us(0.9),
        us(0.99),
        us(0.999),
        h.max() as f64 / 1e3,
        h.len()
    )
}

/// Least-squares slope of `(seconds, KiB)` samples, in KiB per second.
pub fn slope(samples: &[(f64, u64)]) -> f64 {
    let n = samples.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = samples.iter().map(|s| s.0).sum::<f64>() / n;
    let my = samples.iter().map(|s| s.1 as f64).sum::<f64>() / n;
    let num: f64 = samples.iter().map(|s| (s.0 - mx) * (s.1 as f64 - my)).sum();
    let den: f64 = samples.iter().map(|s| (s.0 - mx).powi(2)).sum();
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

/// The histogram's buckets as JSON, `[[ns, count], ...]`: each value stands for its bucket,
/// so recording them again into [`histogram`] gives back the same histogram, and the
/// percentiles of several processes merged this way are exact (`--procs`).
pub fn buckets(h: &Histogram<u64>) -> String {
    let mut out = String::from("[");
    for (i, v) in h.iter_recorded().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "[{},{}]", v.value_iterated_to(), v.count_at_value());
    }
    out.push(']');
    out
}
