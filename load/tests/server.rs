//! The tool's self-test against the real server: sigver runs in this process (on 127.0.0.1,
//! a free port), the built `sigver-load` binary runs short relay, idle and churn loads
//! against it, and the test reads its `--json` result, its `--svg` plot and the server's own
//! counters (`GET /metrics`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest a run of the tool may take here; the runs below need a few seconds.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// The server on its own thread, stopped when dropped.
struct Server {
    addr: SocketAddr,
    handle: sigver::Handle,
    thread: Option<JoinHandle<Result<(), sigver::Error>>>,
}

impl Server {
    fn start() -> Self {
        let server = sigver::Server::bind(sigver::Config {
            addr: "127.0.0.1:0".parse().expect("address"),
            // Every client of a load run comes from one address and sends far more than a
            // browser: the abuse limits would close them.
            rate_limit: 0,
            max_connections_per_ip: 0,
            ..sigver::Config::default()
        })
        .expect("bind");
        let addr = server.local_addr();
        let handle = server.handle();
        let thread = thread::spawn(move || server.run());
        Self {
            addr,
            handle,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// The value of counter `name` in the server's `GET /metrics`.
    fn counter(&self, name: &str) -> u64 {
        let mut s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("request");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("response");
        let line = text
            .lines()
            .find(|l| l.split(' ').next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"));
        line[name.len()..].trim().parse().expect("a count")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs the built tool with the words of `line` as arguments, and `--svg PATH` when given;
/// killed if it outlives [`RUN_LIMIT`].
fn tool(line: &str, svg: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sigver-load"));
    cmd.args(line.split_whitespace());
    if let Some(path) = svg {
        cmd.arg("--svg").arg(path);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sigver-load");
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

/// Runs the tool with `--json`, checks that it succeeded and printed exactly one JSON object.
fn json_run(line: &str, svg: Option<&Path>) -> Value {
    let out = tool(&format!("{line} --json"), svg);
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
    ] {
        assert_eq!(v[count], 0, "{count} in {v}");
    }
    v
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number {key} in {v}"))
}

/// Checks a latency summary: samples, and ordered percentiles.
fn check_latency(v: &Value, key: &str) -> f64 {
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

/// Parses the plot as XML and checks it: an `svg` root, a curve, and the three marked
/// percentiles with the values of the JSON result's summary `latency`.
fn check_svg(path: &Path, latency: &Value) {
    let text = std::fs::read_to_string(path).expect("the plot was written");
    let doc = roxmltree::Document::parse(&text).expect("well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );
    let points = doc
        .descendants()
        .find(|n| n.has_tag_name("polyline"))
        .and_then(|n| n.attribute("points"))
        .expect("a curve");
    assert!(points.split_whitespace().count() > 100, "{points}");
    for (id, key) in [("p50", "p50"), ("p99", "p99"), ("p99.9", "p999")] {
        let mark = doc
            .descendants()
            .find(|n| n.attribute("id") == Some(id))
            .unwrap_or_else(|| panic!("no marker {id}"));
        assert!(mark.descendants().any(|n| n.has_tag_name("circle")), "{id}");
        let label = mark
            .descendants()
            .find(|n| n.has_tag_name("text"))
            .and_then(|n| n.text())
            .expect("a label");
        // "p99 412 µs" or "p99 1.23 ms": the number matches the JSON (in µs) to 3 digits.
        let mut words = label.split(' ');
        assert_eq!(words.next(), Some(id), "{label}");
        let value: f64 = words.next().and_then(|w| w.parse().ok()).expect(label);
        let scale = match words.next() {
            Some("µs") => 1.0,
            Some("ms") => 1e3,
            Some("s") => 1e6,
            other => panic!("unit {other:?} in {label}"),
        };
        let want = num(latency, key);
        assert!(
            (value * scale - want).abs() <= want * 0.01 + 0.01,
            "{label} against {key} {want} µs"
        );
    }
}

fn temp_svg(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("sigver-load-{}-{name}.svg", std::process::id()))
}

/// A closed-loop relay relays messages, the server counts at least as many, the JSON holds
/// the round-trip summary, and the plot marks the same percentiles.
#[test]
fn relay_closed_loop() {
    let server = Server::start();
    let svg = temp_svg("relay");
    let v = json_run(
        &format!(
            "relay --url {} --pairs 3 --window 2 --seconds 1 --warmup 0.2 --pid {}",
            server.url(),
            std::process::id()
        ),
        Some(&svg),
    );
    assert_eq!(
        (v["mode"].as_str(), v["loop"].as_str()),
        (Some("relay"), Some("closed"))
    );
    let relayed = num(&v, "relayed");
    assert!(relayed > 100.0, "{v}");
    assert!(num(&v, "relayed_per_s") > 100.0, "{v}");
    assert_eq!(num(&v, "unanswered"), 0.0, "{v}");
    assert_eq!(num(&v, "answered"), num(&v, "sent"), "{v}");
    assert!(check_latency(&v, "rtt_us") >= num(&v, "answered"), "{v}");
    // Read from /proc of this process, which is the server's.
    assert!(
        num(&v, "server_cpu") > 0.0 && num(&v, "rss_kib") > 0.0,
        "{v}"
    );
    let counted = server.counter("sigver_messages_relayed_total") as f64;
    assert!(counted >= relayed, "server {counted}, tool {relayed}");
    check_svg(&svg, &v["rtt_us"]);
    let _ = std::fs::remove_file(svg);
}

/// An open-loop relay sends at the asked rate and times each content from its schedule.
#[test]
fn relay_open_loop() {
    let server = Server::start();
    let v = json_run(
        &format!(
            "relay --url {} --pairs 4 --rate 2000 --seconds 1 --warmup 0.2",
            server.url()
        ),
        None,
    );
    assert_eq!(v["loop"].as_str(), Some("open"));
    // 2000 contents/s for 1 s, by their scheduled send times.
    let sent = num(&v, "sent");
    assert!((1990.0..=2010.0).contains(&sent), "{v}");
    assert_eq!(num(&v, "answered"), sent, "{v}");
    // Each is relayed there and back; those counted are the ones received in the window.
    let relayed = num(&v, "relayed");
    assert!((1.5 * sent..=2.5 * sent).contains(&relayed), "{v}");
    check_latency(&v, "rtt_us");
}

/// Idle connections all join and stay open; each handshake is timed and plotted.
#[test]
fn idle() {
    let server = Server::start();
    let svg = temp_svg("idle");
    let v = json_run(
        &format!(
            "idle --url {} --conns 40 --concurrency 8 --hold 0.5 --pid {}",
            server.url(),
            std::process::id()
        ),
        Some(&svg),
    );
    assert_eq!(v["mode"].as_str(), Some("idle"));
    assert_eq!(
        (num(&v, "joined"), num(&v, "open_at_end")),
        (40.0, 40.0),
        "{v}"
    );
    assert_eq!(check_latency(&v, "handshake_us"), 40.0, "{v}");
    assert!(num(&v, "rss_loaded_kib") > 0.0, "{v}");
    assert!(server.counter("sigver_upgrades_total") >= 40);
    check_svg(&svg, &v["handshake_us"]);
    let _ = std::fs::remove_file(svg);
}

/// Churned sessions complete (connect, join, offer, answer, leave) and are plotted.
#[test]
fn churn() {
    let server = Server::start();
    let svg = temp_svg("churn");
    let v = json_run(
        &format!(
            "churn --url {} --concurrency 4 --members 2 --seconds 1 --warmup 0.2",
            server.url()
        ),
        Some(&svg),
    );
    assert_eq!(v["mode"].as_str(), Some("churn"));
    let sessions = num(&v, "sessions");
    assert!(sessions > 10.0 && num(&v, "failed_sessions") == 0.0, "{v}");
    assert_eq!(check_latency(&v, "session_us"), sessions, "{v}");
    // Each session's offer and answer went through the server.
    let counted = server.counter("sigver_messages_relayed_total") as f64;
    assert!(
        counted >= 2.0 * sessions,
        "server {counted}, {sessions} sessions"
    );
    check_svg(&svg, &v["session_us"]);
    let _ = std::fs::remove_file(svg);
}

/// Without --json the summary is for people, and names the plot.
#[test]
fn human_summary() {
    let server = Server::start();
    let svg = temp_svg("human");
    let out = tool(
        &format!(
            "relay --url {} --pairs 1 --seconds 0.3 --warmup 0",
            server.url()
        ),
        Some(&svg),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("relay closed loop, 1 pairs, window 1: "),
        "{stdout}"
    );
    assert!(lines[0].contains(" relayed/s, round trip p50 "), "{stdout}");
    assert_eq!(lines[1], format!("latency plot: {}", svg.display()));
    let _ = std::fs::remove_file(svg);
}

/// A server that is not there makes a failed run (exit 1, "ok": false), not a result.
#[test]
fn no_server_is_a_failure() {
    // A port that was free a moment ago: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let line = format!("relay --url ws://127.0.0.1:{port} --pairs 1 --seconds 0.2 --json");
    let out = tool(&line, None);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(v["ok"], Value::Bool(false), "{v}");
    assert!(num(&v, "connect_failures") >= 1.0, "{v}");
}

/// Bad arguments exit with 2 before any load: a remote address without --remote, an
/// unwritable plot.
#[test]
fn usage_errors() {
    let out = tool("relay --url ws://192.0.2.1:8000", None);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not a loopback address; add --remote"),
        "{stderr}"
    );
    let bad = Path::new("/nonexistent-dir/plot.svg");
    let out = tool("relay --url ws://127.0.0.1:9", Some(bad));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--svg /nonexistent-dir/plot.svg"),
        "{stderr}"
    );
}

/// The selftest subcommand passes: the framing and messages match the references.
#[test]
fn selftest_subcommand() {
    let out = tool("selftest", None);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("match tungstenite and prost"));
}
