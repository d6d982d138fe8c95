//! `--procs K`: the run as K copies of this program, each with its share of the load and its
//! own key prefix, and their results merged into one.
//!
//! A child is told `--share I/K` and prints its `--json` result with the buckets of its
//! latency histogram (`hist`). Counts and rates add up; the latency summary is computed again
//! from the merged buckets, so its percentiles are exact, not averages. The server's CPU is
//! the children's mean (each read it over nearly the same window), its memory their largest
//! reading. This module only spawns, waits and merges: the runs are the modes' own.

use std::process::{Command, Stdio};

use hdrhistogram::Histogram;
use serde_json::{Map, Value};

use crate::stats::{self, Json};

/// Most processes one run may start.
pub const MAX_PROCS: usize = 64;

/// Process `i`'s share of `total` among `k` (the first ones take the remainder).
pub fn share(total: usize, i: usize, k: usize) -> usize {
    total / k + usize::from(i < total % k)
}

/// Parses `--share I/K`.
pub fn parse_share(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("--share {s}: expected I/K with I < K <= {MAX_PROCS}");
    let (i, k) = s.split_once('/').ok_or_else(bad)?;
    let (i, k): (usize, usize) = (i.parse().map_err(|_| bad())?, k.parse().map_err(|_| bad())?);
    if i >= k || k > MAX_PROCS {
        return Err(bad());
    }
    Ok((i, k))
}

/// The arguments of this run without the ones the parent keeps to itself (`--procs`,
/// `--json`, `--svg`, `--tag`), as given on the command line.
fn child_args() -> Vec<String> {
    let mut out = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let name = a.split('=').next().unwrap_or("");
        match name {
            "--json" => {}
            "--procs" | "--svg" | "--tag" => {
                if !a.contains('=') {
                    args.next();
                }
            }
            _ => out.push(a),
        }
    }
    out
}

/// Runs `k` children with tags `{prefix}p{i}` and returns their parsed results, in order.
pub fn run_children(k: usize, prefix: &str) -> Result<Vec<Value>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("--procs: this program: {e}"))?;
    let base = child_args();
    let mut children = Vec::with_capacity(k);
    for i in 0..k {
        let child = Command::new(&exe)
            .args(&base)
            .args(["--json", "--tag", &format!("{prefix}p{i}")])
            .args(["--share", &format!("{i}/{k}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("--procs: cannot start {}: {e}", exe.display()))?;
        children.push(child);
    }
    let mut results = Vec::with_capacity(k);
    let mut failure = None;
    // Every child is waited for, even after one failed: none is left running.
    for (i, child) in children.into_iter().enumerate() {
        let out = match child.wait_with_output() {
            Ok(out) => out,
            Err(e) => {
                failure.get_or_insert(format!("--procs: process {i}: {e}"));
                continue;
            }
        };
        if out.status.code() == Some(2) {
            failure.get_or_insert(format!("--procs: process {i} could not start its run"));
            continue;
        }
        match serde_json::from_slice::<Value>(&out.stdout) {
            Ok(v) if v.is_object() => results.push(v),
            _ => {
                failure.get_or_insert(format!(
                    "--procs: process {i} ({}) printed no result",
                    out.status
                ));
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(results),
    }
}

/// The merged result: the JSON object, and the merged latency histogram.
pub fn merge(children: &[Value], k: usize) -> (Map<String, Value>, Histogram<u64>) {
    let mut hist = stats::histogram();
    let mut out = Map::new();
    let mut cpu: Vec<f64> = Vec::new();
    let mut rss_start: Option<f64> = None;
    for child in children {
        let Some(obj) = child.as_object() else {
            continue;
        };
        if let Some(buckets) = obj.get("hist").and_then(Value::as_array) {
            for b in buckets {
                if let (Some(v), Some(n)) = (b[0].as_u64(), b[1].as_u64()) {
                    let _ = hist.record_n(v, n);
                }
            }
        }
        for (key, v) in obj {
            let old = out.get(key);
            let merged = match (key.as_str(), v, old) {
                ("hist", _, _) => continue,
                ("ok", Value::Bool(b), Some(Value::Bool(a))) => Value::Bool(*a && *b),
                ("server_cpu", Value::Number(n), _) => {
                    cpu.extend(n.as_f64());
                    continue;
                }
                // Settings every process shares, and strings: the first process's.
                ("window" | "bytes" | "seconds" | "hold" | "rss_series", _, Some(_)) => continue,
                (_, Value::String(_), Some(_)) => continue,
                (_, Value::Number(n), Some(Value::Number(m))) if key.starts_with("rss_") => {
                    let (a, b) = (m.as_f64().unwrap_or(0.0), n.as_f64().unwrap_or(0.0));
                    if key == "rss_start_kib" {
                        rss_start = Some(a.min(b));
                        number(a.min(b))
                    } else {
                        number(a.max(b))
                    }
                }
                ("max_send_lag_us", Value::Number(n), Some(Value::Number(m))) => {
                    number(n.as_f64().unwrap_or(0.0).max(m.as_f64().unwrap_or(0.0)))
                }
                // Counts, rates and settings that were split (pairs, conns, rate...) add up.
                (_, Value::Number(n), Some(Value::Number(m))) => {
                    number(n.as_f64().unwrap_or(0.0) + m.as_f64().unwrap_or(0.0))
                }
                (_, v, None) => v.clone(),
                (_, _, Some(_)) => continue,
            };
            out.insert(key.clone(), merged);
        }
    }
    if !cpu.is_empty() {
        out.insert(
            "server_cpu".into(),
            number(cpu.iter().sum::<f64>() / cpu.len() as f64),
        );
    }
    // Memory per connection over all the processes' connections.
    if let Some(s) = rss_start.or_else(|| out.get("rss_start_kib").and_then(Value::as_f64)) {
        let rss_end = out.get("rss_end_kib").and_then(Value::as_f64);
        let joined = out.get("joined").and_then(Value::as_f64).unwrap_or(0.0);
        for (key, at) in [
            ("rss_per_conn_bytes", rss_end),
            (
                "rss_per_conn_loaded_bytes",
                out.get("rss_loaded_kib").and_then(Value::as_f64),
            ),
        ] {
            if let (Some(e), true) = (at, joined > 0.0) {
                out.insert(key.into(), number((e - s) * 1024.0 / joined));
            }
        }
    }
    // The latency summary, computed again from the merged buckets.
    for key in ["rtt_us", "handshake_us", "session_us"] {
        if out.contains_key(key) {
            let mut j = Json::default();
            j.latency(key, &hist);
            if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(&j.finish()) {
                out.extend(o);
            }
        }
    }
    out.insert("procs".into(), Value::from(k));
    (out, hist)
}

/// A number as the children write them: integers without a fraction.
fn number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        Value::from(v as i64)
    } else {
        serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
    }
}

/// The one-line summary of a merged run.
pub fn human(out: &Map<String, Value>, hist: &Histogram<u64>, k: usize) -> String {
    let f = |key: &str| out.get(key).and_then(Value::as_f64).unwrap_or(0.0);
    let mode = out.get("mode").and_then(Value::as_str).unwrap_or("?");
    let (what, rate, latency) = match mode {
        "relay" => ("relayed/s", f("relayed_per_s"), "round trip"),
        "idle" => ("handshakes/s", f("handshakes_per_s"), "handshake"),
        _ => ("sessions/s", f("sessions_per_s"), "session"),
    };
    let ok = out.get("ok") == Some(&Value::Bool(true));
    let verdict = if ok {
        String::new()
    } else {
        format!(
            " [NOT OK: {} errors; {}]",
            f("errors"),
            out.get("first_error")
                .and_then(Value::as_str)
                .unwrap_or("a process did not complete")
        )
    };
    format!(
        "{mode} over {k} processes: {rate:.0} {what}, {latency} {}{verdict}",
        stats::latency_line(hist)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two processes' buckets merged give exactly the histogram of all their samples, so
    /// every percentile is right (an average of the two p99s would not be).
    #[test]
    fn merged_buckets_are_exact() {
        let (mut a, mut b, mut both) = (stats::histogram(), stats::histogram(), stats::histogram());
        for i in 0..5_000u64 {
            // Two different shapes: a fast process and a slow one with a long tail.
            let fast = 20_000 + (i * 7919) % 30_000;
            let slow = 200_000 + (i * i * 104_729) % 9_000_000;
            stats::record(&mut a, fast);
            stats::record(&mut b, slow);
            stats::record(&mut both, fast);
            stats::record(&mut both, slow);
        }
        let child = |h: &Histogram<u64>| {
            serde_json::from_str::<Value>(&format!(
                "{{\"mode\":\"relay\",\"answered\":{},\"rtt_us\":{{}},\"hist\":{}}}",
                h.len(),
                stats::buckets(h)
            ))
            .expect("JSON")
        };
        let (out, merged) = merge(&[child(&a), child(&b)], 2);
        assert_eq!(merged, both);
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(merged.value_at_quantile(q), both.value_at_quantile(q));
        }
        assert_eq!(out["answered"], 10_000);
        assert_eq!(out["rtt_us"]["count"], 10_000);
        let p99 = both.value_at_quantile(0.99) as f64 / 1e3;
        assert_eq!(out["rtt_us"]["p99"].as_f64(), Some(p99));
    }

    /// Shares cover the total, the first processes taking the remainder.
    #[test]
    fn shares_add_up() {
        let parts: Vec<usize> = (0..3).map(|i| share(10, i, 3)).collect();
        assert_eq!(parts, [4, 3, 3]);
        assert_eq!(parse_share("1/2"), Ok((1, 2)));
        assert!(parse_share("2/2").is_err() && parse_share("0/65").is_err());
    }
}
