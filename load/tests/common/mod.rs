//! Helpers of the tests that run the built `sigver-load`: a run with a time limit, its
//! `--json` result checked and read.

// Each test file uses its own part of these.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest a run of the tool may take here; the runs in the tests need a few seconds.
pub const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Starts the built tool with the words of `line` as arguments, and `--svg PATH` when given,
/// its output captured.
pub fn spawn_tool(line: &str, svg: Option<&Path>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sigver-load"));
    cmd.args(line.split_whitespace());
    if let Some(path) = svg {
        cmd.arg("--svg").arg(path);
    }
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sigver-load")
}

/// Waits for a run started by [`spawn_tool`]; kills it if it outlives [`RUN_LIMIT`].
pub fn finish(mut child: Child) -> Output {
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// Runs the built tool with the words of `line` as arguments, and `--svg PATH` when given;
/// killed if it outlives [`RUN_LIMIT`].
pub fn tool(line: &str, svg: Option<&Path>) -> Output {
    finish(spawn_tool(line, svg))
}

/// Checks that a `--json` run succeeded, printed exactly one JSON object, and counted no
/// error of any kind; returns the object.
pub fn check_json(line: &str, out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{line}: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one line, one object: {stdout}");
    let v: Value = serde_json::from_str(lines[0]).expect("valid JSON");
    assert_eq!(v["ok"], Value::Bool(true), "{v}");
    for count in [
        "errors",
        "connect_failures",
        "socket_errors",
        "protocol_errors",
        "close_timeouts",
        "tls_failures",
    ] {
        assert_eq!(v[count], 0, "{count} in {v}");
    }
    v
}

/// Runs the tool with `--json` and checks its result as [`check_json`] does.
pub fn json_run(line: &str, svg: Option<&Path>) -> Value {
    let line = format!("{line} --json");
    let out = tool(&line, svg);
    check_json(&line, &out)
}

/// The number `key` of a JSON object.
pub fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number {key} in {v}"))
}

/// Checks a latency summary: samples, and ordered percentiles; returns the count.
pub fn check_latency(v: &Value, key: &str) -> f64 {
    let l = &v[key];
    let count = num(l, "count");
    assert!(count > 0.0, "{key}: {l}");
    let (p50, p99, p999, max) = (num(l, "p50"), num(l, "p99"), num(l, "p999"), num(l, "max"));
    assert!(
        0.0 < p50 && p50 <= p99 && p99 <= p999 && p999 <= max,
        "{key}: {l}"
    );
    count
}
