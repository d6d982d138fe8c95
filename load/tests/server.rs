//! The tool's self-test against the real server: sigver runs in this process (on 127.0.0.1,
//! a free port), the built `sigver-load` binary runs short relay, idle and churn loads
//! against it, and the test reads its `--json` result, its `--svg` plot and the server's own
//! counters (`GET /metrics`). The wss:// runs use certificates made here, at test time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;

mod common;
use common::{check_latency, json_run, num, tool, RUN_LIMIT};

/// A throwaway CA and the server's files: a certificate for `localhost` and `127.0.0.1`
/// signed by it, and its key, as PEM files in a fresh directory.
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    files: sigver::tls::TlsFiles,
}

impl Pki {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        // A name of its own: another test CA is another issuer, not a bad signature.
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("sigver-load-tls-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ca_key = KeyPair::generate().expect("key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("sigver-load test CA {n}"),
        );
        let ca = ca_params.self_signed(&ca_key).expect("CA");
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("key");
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let cert = CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("leaf");
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write");
            path
        };
        let files = sigver::tls::TlsFiles {
            key: write("key.pem", key.serialize_pem()),
            cert: write("cert.pem", cert.pem()),
            ca: None,
        };
        Self {
            ca: write("ca.pem", ca.pem()),
            dir,
            files,
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The server on its own thread, stopped when dropped.
struct Server {
    addr: SocketAddr,
    handle: sigver::Handle,
    thread: Option<JoinHandle<Result<(), sigver::Error>>>,
    /// For a wss:// server: the CA that signed its certificate.
    ca: Option<PathBuf>,
}

impl Server {
    fn start() -> Self {
        Self::with(sigver::Config::default(), None)
    }

    /// Defaults but for the per-address limit, and no TLS.
    fn per_ip(max: usize) -> Self {
        let config = sigver::Config {
            max_connections_per_ip: max,
            ..sigver::Config::default()
        };
        Self::with(config, None)
    }

    /// A wss:// server with the certificate of `pki` (session tickets on, the default).
    fn tls(pki: &Pki) -> Self {
        let config = sigver::Config {
            tls: Some(pki.files.clone()),
            ..sigver::Config::default()
        };
        Self::with(config, Some(pki.ca.clone()))
    }

    fn with(config: sigver::Config, ca: Option<PathBuf>) -> Self {
        let server = sigver::Server::bind(sigver::Config {
            addr: "127.0.0.1:0".parse().expect("address"),
            // Every client of a load run comes from one address and sends far more than a
            // browser: the abuse limits would close them (but the one a test sets).
            rate_limit: 0,
            max_connections_per_ip: match config.max_connections_per_ip {
                512 => 0,
                n => n,
            },
            ..config
        })
        .expect("bind");
        let addr = server.local_addr();
        let handle = server.handle();
        let thread = thread::spawn(move || server.run());
        Self {
            addr,
            handle,
            thread: Some(thread),
            ca,
        }
    }

    fn url(&self) -> String {
        match self.ca {
            Some(_) => format!("wss://{}", self.addr),
            None => format!("ws://{}", self.addr),
        }
    }

    /// The value of counter `name` in the server's `GET /metrics` (over TLS for a wss://
    /// server: one more full handshake in its counters).
    fn counter(&self, name: &str) -> u64 {
        let mut s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let mut text = String::new();
        match &self.ca {
            None => {
                s.write_all(request).expect("request");
                s.read_to_string(&mut text).expect("response");
            }
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots
                    .add(CertificateDer::from_pem_file(ca).expect("CA"))
                    .expect("root");
                let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
                let name = ServerName::try_from("localhost").expect("name");
                let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("TLS");
                let mut tls = rustls::StreamOwned::new(conn, s);
                tls.write_all(request).expect("request");
                // The server hangs up after the answer, without close_notify: read what came.
                let mut raw = Vec::new();
                let _ = tls.read_to_end(&mut raw);
                text = String::from_utf8_lossy(&raw).into_owned();
            }
        }
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

/// SIGUSR1 ends an open-loop relay's window early: the run reports the window it had, with
/// every content of it answered, and exits cleanly long before its --seconds.
#[test]
fn relay_stops_on_sigusr1() {
    let server = Server::start();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sigver-load"))
        .args(
            format!(
                "relay --url {} --pairs 2 --rate 1000 --seconds 600 --warmup 0.2 --json",
                server.url()
            )
            .split_whitespace(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sigver-load");
    // Messages relayed mean the run is in its loop, its handler installed.
    let start = Instant::now();
    while server.counter("sigver_messages_relayed_total") == 0 {
        assert!(start.elapsed() < RUN_LIMIT, "the relay never started");
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_millis(500));
    let pid = i32::try_from(child.id()).expect("a pid");
    // SAFETY: a signal to the child this test started and has not reaped yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR1) }, 0);
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}: {stdout}", out.status);
    let v: Value = serde_json::from_str(stdout.trim()).expect("valid JSON");
    assert_eq!(v["ok"], Value::Bool(true), "{v}");
    assert_eq!(v["stopped_by_signal"], Value::Bool(true), "{v}");
    let secs = num(&v, "seconds");
    assert!(secs > 0.0 && secs < 600.0, "{v}");
    // 1000 contents/s by their scheduled times over the window it had.
    let sent = num(&v, "sent");
    assert!((sent - 1000.0 * secs).abs() <= 2.0, "{v}");
    assert_eq!(num(&v, "answered"), sent, "{v}");
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

/// The `tls_full_handshakes` and `tls_resumed_handshakes` of a result.
fn tls_counts(v: &Value) -> (f64, f64) {
    (
        num(v, "tls_full_handshakes"),
        num(v, "tls_resumed_handshakes"),
    )
}

const FULL: &str = "sigver_tls_handshakes_total{kind=\"full\"}";
const RESUMED: &str = "sigver_tls_handshakes_total{kind=\"resumed\"}";

/// Over wss:// (trusting the test CA) a relay relays, and every connection paid a full
/// handshake (no resumption by default), as the server counted too.
#[test]
fn wss_relay_full_handshakes() {
    let pki = Pki::new();
    let server = Server::tls(&pki);
    let v = json_run(
        &format!(
            "relay --url {} --ca {} --pairs 3 --window 2 --seconds 1 --warmup 0.2",
            server.url(),
            pki.ca.display()
        ),
        None,
    );
    assert!(num(&v, "relayed") > 100.0, "{v}");
    assert_eq!(num(&v, "answered"), num(&v, "sent"), "{v}");
    assert_eq!(tls_counts(&v), (6.0, 0.0), "{v}");
    let counted = server.counter("sigver_messages_relayed_total") as f64;
    assert!(counted >= num(&v, "relayed"), "server {counted}, {v}");
    // The scrape itself is one more full handshake.
    assert_eq!((server.counter(FULL), server.counter(RESUMED)), (8, 0));
}

/// With --resume, connections after the first few resume a session given to an earlier one:
/// the tool and the server count the same resumed handshakes. The host is a DNS name here.
#[test]
fn wss_idle_resumes_sessions() {
    let pki = Pki::new();
    let server = Server::tls(&pki);
    let v = json_run(
        &format!(
            "idle --url wss://localhost:{} --ca {} --conns 40 --concurrency 4 --hold 0.2 --resume",
            server.addr.port(),
            pki.ca.display()
        ),
        None,
    );
    assert_eq!(num(&v, "joined"), 40.0, "{v}");
    let (full, resumed) = tls_counts(&v);
    assert_eq!(full + resumed, 40.0, "{v}");
    assert!(resumed >= 30.0, "mostly resumed: {v}");
    assert_eq!(server.counter(RESUMED) as f64, resumed);
    // The tool's full handshakes, and the one of the scrape.
    assert_eq!(server.counter(FULL) as f64, full + 2.0);
}

/// --insecure connects without any CA (benchmarks); a CA that did not sign the server's
/// certificate fails the run (exit 1) with rustls' reason, and a --ca file that is not
/// there, or wss:// without --ca or --insecure, is a usage error (exit 2).
#[test]
fn wss_insecure_and_wrong_ca() {
    let pki = Pki::new();
    let server = Server::tls(&pki);
    let url = server.url();
    let v = json_run(
        &format!("relay --url {url} --insecure --pairs 1 --seconds 0.3 --warmup 0"),
        None,
    );
    assert_eq!(tls_counts(&v), (2.0, 0.0), "{v}");
    // For people, over two processes: the merged line with the TLS handshakes of both.
    let out = tool(
        &format!("relay --url {url} --insecure --pairs 2 --seconds 0.3 --warmup 0 --procs 2"),
        None,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.starts_with("relay over 2 processes: "), "{stdout}");
    assert!(
        stdout.contains("; TLS handshakes: 4 full, 0 resumed, 0 failed"),
        "{stdout}"
    );

    let other = Pki::new();
    let out = tool(
        &format!(
            "relay --url {url} --ca {} --pairs 1 --seconds 0.3 --json",
            other.ca.display()
        ),
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(v["ok"], Value::Bool(false), "{v}");
    assert!(num(&v, "tls_failures") >= 1.0, "{v}");
    assert_eq!(tls_counts(&v), (0.0, 0.0), "{v}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TLS: invalid peer certificate: UnknownIssuer"),
        "{stderr}"
    );

    let missing = pki.dir.join("missing.pem");
    let out = tool(
        &format!("relay --url {url} --ca {}", missing.display()),
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("--ca {}", missing.display())),
        "{stderr}"
    );
    let out = tool(&format!("relay --url {url}"), None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wss:// needs --ca FILE"));
}

/// --source-addrs 3 spreads the connections over 127.0.0.1, .2 and .3: a server that lets
/// each address hold 2 connections takes 6 of them, and refuses (429) the same 6 from one
/// address.
#[test]
fn source_addrs_spread_connections() {
    let server = Server::per_ip(2);
    let line = format!(
        "idle --url {} --conns 6 --concurrency 6 --hold 0.3",
        server.url()
    );
    let v = json_run(&format!("{line} --source-addrs 3"), None);
    assert_eq!(num(&v, "open_at_end"), 6.0, "{v}");
    let out = tool(&format!("{line} --json"), None);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(num(&v, "joined"), 2.0, "{v}");
    assert_eq!(num(&v, "connect_failures"), 4.0, "{v}");
    // A list names the addresses: two of them hold 4.
    let v = json_run(
        &format!(
            "idle --url {} --conns 4 --concurrency 4 --hold 0.3 --source-addrs 127.0.0.4,127.0.0.5",
            server.url()
        ),
        None,
    );
    assert_eq!(num(&v, "open_at_end"), 4.0, "{v}");
}

/// --procs 2 splits an idle run over two processes: the merged counts are the server's, and
/// the merged handshake histogram holds every sample. A relay split the same way merges its
/// round trips exactly: as many samples as answers.
#[test]
fn procs_merge_results() {
    let server = Server::start();
    let v = json_run(
        &format!(
            "idle --url {} --conns 30 --concurrency 6 --hold 0.3 --procs 2",
            server.url()
        ),
        None,
    );
    assert_eq!(num(&v, "procs"), 2.0, "{v}");
    assert_eq!((num(&v, "conns"), num(&v, "joined")), (30.0, 30.0), "{v}");
    assert_eq!(check_latency(&v, "handshake_us"), 30.0, "{v}");
    assert!(num(&v, "handshakes_per_s") > 0.0, "{v}");
    assert_eq!(server.counter("sigver_upgrades_total"), 30);

    let v = json_run(
        &format!(
            "relay --url {} --pairs 4 --seconds 1 --warmup 0.2 --procs 2",
            server.url()
        ),
        None,
    );
    assert_eq!(num(&v, "pairs"), 4.0, "{v}");
    assert_eq!(num(&v, "answered"), num(&v, "sent"), "{v}");
    assert_eq!(check_latency(&v, "rtt_us"), num(&v, "answered"), "{v}");
    let counted = server.counter("sigver_messages_relayed_total") as f64;
    assert!(counted >= num(&v, "relayed"), "server {counted}, {v}");
    // More processes than pairs is refused before anything starts.
    let out = tool(
        &format!("relay --url {} --pairs 1 --procs 2", server.url()),
        None,
    );
    assert_eq!(out.status.code(), Some(2));
}
