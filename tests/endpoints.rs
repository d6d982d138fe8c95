//! The HTTP endpoints on the WebSocket port (/health, /ready, /metrics, the status page),
//! checked with a real Prometheus parser, and systemd socket activation with the real binary.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::binary::Binary;
use common::*;

/// Status line and body of a plain HTTP request.
fn http(server: &TestServer, method: &str, path: &str) -> (String, String) {
    let request = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let answer = String::from_utf8(raw_exchange(server.addr, request.as_bytes())).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a complete answer");
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// A `PYTHONPATH` under which Python finds `prometheus_client`: the system's if it has one,
/// else one installed once from PyPI into the test's own folder, so `cargo test` alone works
/// on a fresh machine.
fn prometheus_client_path() -> String {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let import = |path: &str| {
            Command::new("python3")
                .args(["-c", "import prometheus_client"])
                .env("PYTHONPATH", path)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let dir = format!("{}/python", env!("CARGO_TARGET_TMPDIR"));
        for path in [String::new(), dir.clone()] {
            if import(&path) {
                return path;
            }
        }
        let installed = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--target",
                &dir,
                "prometheus_client",
            ])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            installed && import(&dir),
            "cannot install prometheus_client"
        );
        dir
    })
    .clone()
}

/// Parses an exposition with Python's `prometheus_client`, the Prometheus project's own
/// parser: every sample as `name{labels}` -> value. Fails the test if the text does not parse.
fn prometheus(text: &str) -> BTreeMap<String, f64> {
    let script = "import sys\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        for family in text_string_to_metric_families(sys.stdin.read()):\n\
        \x20   for s in family.samples:\n\
        \x20       labels = ','.join(f'{k}={v}' for k, v in sorted(s.labels.items()))\n\
        \x20       print(f'{s.name}{{{labels}}} {s.value!r}')\n";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .env("PYTHONPATH", prometheus_client_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client rejects the metrics: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

fn scrape(server: &TestServer) -> (String, BTreeMap<String, f64>) {
    let (status, body) = http(server, "GET", "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let samples = prometheus(&body);
    (body, samples)
}

#[test]
fn health_and_ready_answer_200() {
    // Proves /health and /ready answer while the loop runs; HEAD gets no body.
    let server = TestServer::start();
    assert_eq!(
        http(&server, "GET", "/health"),
        ("HTTP/1.1 200 OK".into(), "ok\n".into())
    );
    assert_eq!(
        http(&server, "GET", "/ready"),
        ("HTTP/1.1 200 OK".into(), "ready\n".into())
    );
    assert_eq!(
        http(&server, "HEAD", "/health"),
        ("HTTP/1.1 200 OK".into(), String::new())
    );
}

#[test]
fn unknown_paths_get_404_and_other_methods_405() {
    // Proves unknown paths are 404 (with a hint) and only GET and HEAD are served.
    let server = TestServer::start();
    let (status, body) = http(&server, "GET", "/no-such-page");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    assert!(body.contains("WebSocket"), "{body}");
    assert_eq!(
        http(&server, "POST", "/health").0,
        "HTTP/1.1 405 Method Not Allowed"
    );
}

#[test]
fn an_upgrade_on_an_endpoint_path_is_still_a_group_key() {
    // Proves the endpoints take only plain requests: a WebSocket on /metrics is the key "metrics".
    let server = TestServer::start();
    let (_a, _b) = member_and_joiner(&server, "/metrics");
}

#[test]
fn metrics_parse_count_and_only_go_up() {
    // Proves /metrics is valid Prometheus text with the promised families, that they count
    // what happened, and that counters never go down.
    let server = TestServer::start();
    let (_, before) = scrape(&server);
    let (mut a, mut b, (s, _, _)) = meet(&server, "/room", b"offer");
    a.content(s, b"answer!", false);
    b.recv_content();
    let mut bad = server.peer("/bad");
    bad.send_raw(vec![0xff, 0xff]);
    assert_eq!(bad.expect_close().code, 4743);
    server.peer("/leaving").close();
    raw_exchange(server.addr, b"GARBAGE\r\n\r\n");

    let (text, after) = scrape(&server);
    let get = |k: &str| *after.get(k).unwrap_or_else(|| panic!("no {k} in\n{text}"));
    assert_eq!(get("sigver_groups{}"), 1.0);
    assert_eq!(get("sigver_members{}"), 1.0);
    assert_eq!(get("sigver_bindings{}"), 1.0);
    assert_eq!(get("sigver_messages_relayed_total{}"), 2.0);
    assert_eq!(get("sigver_bytes_relayed_total{}"), 12.0);
    assert_eq!(get("sigver_upgrades_total{}"), 4.0);
    assert_eq!(
        get("sigver_server_closes_total{code=4743,reason=bad_message}"),
        1.0
    );
    assert_eq!(
        get("sigver_handshake_failures_total{reason=bad_request}"),
        1.0
    );
    assert_eq!(get("sigver_relay_latency_seconds_count{}"), 2.0);
    assert_eq!(get("sigver_client_closes_total{}"), 1.0);
    let build_info = format!("sigver_build_info{{version={}}}", env!("CARGO_PKG_VERSION"));
    assert_eq!(get(&build_info), 1.0);
    assert!(get("sigver_start_time_seconds{}") > 1.7e9);
    assert!(get("sigver_connections{}") >= 2.0);
    for family in [
        "sigver_limit_hits_total{limit=rate_limit}",
        "sigver_heartbeat_timeouts_total{}",
        "sigver_client_closes_total{}",
        "sigver_queued_bytes{}",
        "sigver_ready{}",
    ] {
        get(family);
    }
    for (name, value) in &after {
        if name.contains("_total") || name.contains("_bucket") || name.contains("_count") {
            let old = before.get(name).copied().unwrap_or(0.0);
            assert!(*value >= old, "{name} went down: {old} -> {value}");
        }
    }
}

#[test]
fn metrics_and_status_page_are_for_allowed_clients_only() {
    // Proves --metrics-allow: a client outside the ranges gets 403; health stays open.
    let server = TestServer::with(|c| {
        c.metrics_allow = sigver::allow::IpNet::parse_list("10.0.0.0/8").unwrap();
    });
    assert_eq!(http(&server, "GET", "/metrics").0, "HTTP/1.1 403 Forbidden");
    assert_eq!(http(&server, "GET", "/").0, "HTTP/1.1 403 Forbidden");
    let (status, body) = http(&server, "GET", "/status.json");
    assert_eq!(status, "HTTP/1.1 403 Forbidden");
    assert!(!body.contains("samples"));
    assert_eq!(http(&server, "GET", "/health").0, "HTTP/1.1 200 OK");
}

#[test]
fn the_status_page_is_self_contained_and_names_no_key() {
    // Proves GET / is a page with no outside asset, and neither it, /metrics nor /status.json
    // shows keys.
    let server = TestServer::start();
    let mut a = server.peer("/a-secret-room-name");
    assert!(a.join(1, &[]));
    let request = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let answer = String::from_utf8(raw_exchange(server.addr, request.as_bytes())).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(answer.contains("Content-Type: text/html"));
    assert!(answer.contains("/metrics"), "the page reads /metrics");
    for outside in ["http://", "https://", "src=\"//"] {
        assert!(!answer.contains(outside), "outside asset: {outside}");
    }
    assert!(
        answer.contains("/status.json"),
        "the page reads /status.json"
    );
    assert!(!answer.contains("secret-room"));
    assert!(!scrape(&server).0.contains("secret-room"));
    assert!(!http(&server, "GET", "/status.json")
        .1
        .contains("secret-room"));
}

/// `GET /status.json`, parsed.
fn status(server: &TestServer) -> serde_json::Value {
    let (status, body) = http(server, "GET", "/status.json");
    assert_eq!(status, "HTTP/1.1 200 OK");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Column `name` of the samples (`closes.4743` for a nested one), null as NaN.
fn column(status: &serde_json::Value, name: &str) -> Vec<f64> {
    let column = name.split('.').fold(&status["samples"], |v, part| &v[part]);
    let values = column.as_array().unwrap_or_else(|| panic!("no {name}"));
    values
        .iter()
        .map(|v| v.as_f64().unwrap_or(f64::NAN))
        .collect()
}

#[test]
fn status_json_keeps_samples_that_follow_the_traffic() {
    // Proves the history behind the status page's charts: samples come at the interval, their
    // gauges and per-interval counts follow what happened, and every column is as long as the
    // time column.
    let server = TestServer::with(|c| c.status_interval = Duration::from_millis(200));
    assert!(eventually(|| column(&status(&server), "time").len() >= 2));
    let quiet = status(&server);
    assert!(column(&quiet, "relayed_per_second")
        .iter()
        .all(|&r| r == 0.0));
    // The test's own requests are connections while they last, one at a time.
    assert!(column(&quiet, "connections").iter().all(|&n| n <= 1.0));
    assert_eq!(quiet["interval_seconds"], 0.2);

    let mut pair = Pair::new(&server, "/busy");
    pair.relay(50);
    let mut bad = server.peer("/bad");
    bad.send_raw(vec![0xff, 0xff]);
    assert_eq!(bad.expect_close().code, 4743);
    assert!(
        eventually(|| {
            let s = status(&server);
            column(&s, "relayed_per_second").iter().sum::<f64>() > 0.0
                && column(&s, "closes.4743").iter().sum::<f64>() == 1.0
        }),
        "{}",
        status(&server)
    );
    let busy = status(&server);
    let rates = column(&busy, "relayed_per_second");
    let relayed_in = rates.iter().position(|&r| r > 0.0).unwrap();
    assert!(column(&busy, "connections")[relayed_in] >= 2.0);
    assert!(column(&busy, "members")[relayed_in] >= 1.0);
    assert!(column(&busy, "latency_p99_us")[relayed_in] > 0.0);
    // No relay, no latency: null, not 0.
    assert!(column(&busy, "latency_p99_us")[0].is_nan());
    // 101 contents (the first and 50 each way) over the intervals they fell in, however long
    // each interval really was (a loaded machine stretches them).
    let times = column(&busy, "time");
    let relayed: f64 = (1..rates.len())
        .map(|i| rates[i] * (times[i] - times[i - 1]))
        .sum();
    assert!((95.0..=107.0).contains(&relayed), "{relayed}");

    pair.close();
    drop(bad);
    assert!(eventually(|| {
        let s = status(&server);
        column(&s, "connections").last() <= Some(&1.0)
            && column(&s, "relayed_per_second").last() == Some(&0.0)
    }));
    let s = status(&server);
    let n = column(&s, "time").len();
    for name in [
        "connections",
        "groups",
        "latency_p50_us",
        "failed_upgrades",
        "closes.1008",
    ] {
        assert_eq!(column(&s, name).len(), n, "{name}");
    }
    assert_eq!(s["capacity"], 360);
}

#[test]
fn while_stopping_ready_is_503_and_upgrades_are_refused() {
    // Proves /ready turns 503 during the graceful stop, /health stays 200, upgrades get 503.
    let server = TestServer::with(|c| c.shutdown_grace = Duration::from_secs(20));
    // Never reads: it will not answer the close, so the server stays in its grace period.
    let _deaf = server.peer("/deaf");
    server.begin_stop();
    assert!(eventually(
        || http(&server, "GET", "/ready").0 == "HTTP/1.1 503 Service Unavailable"
    ));
    assert_eq!(http(&server, "GET", "/health").0, "HTTP/1.1 200 OK");
    let upgrade = "GET /k HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let answer = String::from_utf8(raw_exchange(server.addr, upgrade.as_bytes())).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
}

#[test]
fn socket_activation_serves_the_inherited_listener() {
    // Proves the binary serves a listener handed over the way systemd does (fd 3,
    // LISTEN_FDS, LISTEN_PID), ignoring -h and -p.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // -h names an address this machine does not have: binding it would fail.
    let bin = start_activated(listener.as_raw_fd(), "-h 192.0.2.1 -p 1");
    bin.wait_for("Socket activation: serving 1 inherited listener(s)");
    assert_eq!(bin.addr(), addr);
    drop(listener); // the server holds its own copy
    let mut a = Peer::connect(addr, "/activated");
    assert!(a.join(1, &[]));
    let mut b = Peer::connect(addr, "/activated");
    assert!(!b.join(2, &[]));
    b.content(0, b"via systemd", false);
    assert_eq!(a.recv_content().2, b"via systemd");
}

#[test]
fn a_half_closed_request_is_still_answered() {
    // Proves a client that shuts its side right after its request gets the answer, whatever
    // the request's length (2048 bytes is exactly one read).
    let server = TestServer::start();
    let head = "GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: ";
    for len in [0, 2048] {
        let pad = if len == 0 { 0 } else { len - head.len() - 4 };
        let request = format!("{head}{}\r\n\r\n", "a".repeat(pad));
        let mut s = std::net::TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        let _ = std::io::Read::read_to_string(&mut s, &mut answer);
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{len}: {answer:?}");
    }
}

/// Starts the binary with `fd` as descriptor 3 and LISTEN_FDS=1, as systemd would.
fn start_activated(fd: std::os::fd::RawFd, args: &str) -> Binary {
    // Let the descriptor survive exec (std opens it close-on-exec); the shell then moves it to
    // descriptor 3, as systemd does. No pre_exec: the forked child must not touch std's fds.
    // SAFETY: fcntl on a descriptor the caller owns.
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }, 0);
    let moved = if fd == 3 {
        String::new() // already where systemd puts it
    } else {
        format!("exec 3<&{fd} {fd}<&-; ")
    };
    // bash, not sh: dash cannot redirect descriptors above 9.
    let script = format!("{moved}LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" {args}");
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &script, env!("CARGO_BIN_EXE_sigver")]);
    Binary::spawn_command(cmd)
}

#[test]
fn socket_activation_with_a_socket_that_does_not_listen_exits_2() {
    // Proves a descriptor that is not a listening TCP socket (a connected socket, as
    // `Accept=yes` hands over; a UDP socket; a TCP socket bound but not listening) stops the
    // binary with status 2, naming the descriptor, instead of spinning.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let connected = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    // SAFETY: a plain socket(2) call; the descriptor is closed below.
    let bound = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    assert!(bound >= 0);
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: bind reads the address we own, of the size given.
    let r = unsafe {
        libc::bind(
            bound,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
    for (fd, what) in [
        (connected.as_raw_fd(), "does not listen"),
        (udp.as_raw_fd(), "not a stream"),
        (bound, "does not listen"),
    ] {
        let mut bin = start_activated(fd, "-p 0");
        let line = bin.wait_for("descriptor 3");
        assert!(line.contains(what), "{line}");
        assert_eq!(bin.wait_exit().code(), Some(2), "{line}");
    }
    // SAFETY: closes the descriptor made above.
    unsafe { libc::close(bound) };
}

#[test]
fn absolute_form_targets_reach_the_endpoints() {
    // Proves `GET http://host/health` is answered like `GET /health` (RFC 9112 §3.2.2).
    let server = TestServer::start();
    for target in [
        "http://example.org/health",
        "http://example.org:8000/health?x",
    ] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: example.org\r\n\r\n");
        let answer = String::from_utf8(raw_exchange(server.addr, request.as_bytes())).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{target}: {answer}");
        assert!(answer.ends_with("ok\n"), "{target}: {answer}");
    }
}
