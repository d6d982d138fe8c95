//! Black-box tests of the real `sigver` binary (docs/PROTOCOL.md §8): flags, messages, exit
//! statuses, and a group exchange with a server started from the command line.

mod common;

use common::*;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the server logs once it listens (§8).
const LISTENING: &str = "Signaling server is listening on ";

/// The binary under test, with a default log level (no inherited `RUST_LOG`).
fn sigver(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sigver"));
    cmd.args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// A child process that is killed and reaped when dropped, whatever the test did.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // Ignored failures: the child may have exited already.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads a pipe to its end on a thread, so the child never blocks on a full pipe.
fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// How a short-lived run ended.
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs the binary to its exit; fails if it is still running after `WAIT` (it is killed).
fn run(args: &[&str]) -> Output {
    let mut child = ChildGuard(sigver(args).spawn().expect("spawn sigver"));
    let stdout = read_all(child.0.stdout.take().unwrap());
    let stderr = read_all(child.0.stderr.take().unwrap());
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "sigver {args:?} still running after {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Forwards stderr line by line to a channel, for as long as the child writes.
fn lines_of(stderr: ChildStderr) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Starts a server with `args` and returns it with the address its log line names.
fn start_server(args: &[&str]) -> (ChildGuard, SocketAddr) {
    let mut child = ChildGuard(sigver(args).spawn().expect("spawn sigver"));
    let _stdout = read_all(child.0.stdout.take().unwrap());
    let lines = lines_of(child.0.stderr.take().unwrap());
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(at) = line.find(LISTENING) {
                    let addr = line[at + LISTENING.len()..].trim();
                    let addr: SocketAddr = addr
                        .parse()
                        .unwrap_or_else(|_| panic!("no address in {line:?}"));
                    return (child, addr);
                }
                seen.push(line);
            }
            Err(_) => panic!("no '{LISTENING}' line within {WAIT:?}; stderr: {seen:?}"),
        }
    }
}

/// True when `text` names the flag by its long name, or by its short name as a word.
fn names_flag(text: &str, long: &str, short: &str) -> bool {
    text.contains(long)
        || text
            .split(|c: char| c.is_whitespace() || "'\"`:,".contains(c))
            .any(|w| w == short)
}

#[test]
fn serves_a_group_on_an_ephemeral_port() {
    // Proves §8: `-h 127.0.0.1 -p 0` binds a free port, logs the real address, and serves.
    let (_server, addr) = start_server(&["-h", "127.0.0.1", "-p", "0"]);
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0, "the log must name the bound port, not 0");
    let mut a = Peer::connect(addr, "/cli-room");
    assert!(a.join(1, &[]));
    let mut b = Peer::connect(addr, "/cli-room");
    assert!(!b.join(2, &[]));
    b.content(0, b"offer", false);
    let (s, r, data) = a.recv_content();
    assert!(s != 0 && r == 0 && data == b"offer");
    a.content(s, b"answer", false);
    assert_eq!(b.recv_content(), (0, s, b"answer".to_vec()));
}

#[test]
fn help_prints_usage_with_examples() {
    // Proves §8: `--help` prints the usage, every flag and examples, and exits 0.
    let out = run(&["--help"]);
    assert!(out.status.success(), "{:?}: {}", out.status, out.stderr);
    for needle in [
        "Usage",
        "Examples",
        "-V, --version",
        "-h, --host",
        "-p, --port",
        "-k, --key",
        "-c, --cert",
        "-a, --ca",
        "--help",
    ] {
        assert!(
            out.stdout.contains(needle),
            "no {needle:?} in {}",
            out.stdout
        );
    }
}

#[test]
fn version_flags_print_the_package_version() {
    // Proves §8: `-V` and `--version` print the Cargo package version and exit 0.
    for flag in ["-V", "--version"] {
        let out = run(&[flag]);
        assert!(out.status.success(), "{flag}: {:?}", out.status);
        assert_eq!(out.stdout.trim(), env!("CARGO_PKG_VERSION"), "{flag}");
    }
}

#[test]
fn unknown_flag_exits_2_and_names_it() {
    // Proves the command line refuses what it does not know, naming it, with status 2.
    let out = run(&["--bogus"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("--bogus"), "{}", out.stderr);
}

#[test]
fn bad_port_exits_2_and_names_the_flag() {
    // Proves `-p` takes a number from 0 to 65535: out of range or not a number is status 2.
    for value in ["70000", "abc"] {
        let out = run(&["-p", value]);
        assert_eq!(out.status.code(), Some(2), "-p {value}: {}", out.stderr);
        assert!(
            names_flag(&out.stderr, "--port", "-p"),
            "-p {value}: {}",
            out.stderr
        );
    }
}

#[test]
fn port_in_use_fails_with_a_clear_message() {
    // Proves a port that cannot be bound stops the server with a non-zero status and a
    // message naming the address and the cause.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = run(&["-h", "127.0.0.1", "-p", &port]);
    assert!(
        !out.status.success(),
        "bound a port in use: {:?}",
        out.status
    );
    assert!(
        out.stderr.contains(&format!("127.0.0.1:{port}")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.to_lowercase().contains("in use"),
        "no cause in {}",
        out.stderr
    );
    assert!(!out.stderr.contains(LISTENING), "{}", out.stderr);
    drop(taken);
}

#[test]
fn a_library_bind_leaves_the_process_open_file_limit_alone() {
    // Proves that Server::bind (what a host program calls) does not raise the process's
    // open-file limit; only the binary does, before it binds.
    let get = || {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        lim
    };
    let before = get();
    if before.rlim_cur == before.rlim_max {
        // One below the hard limit: room for bind to raise it, if it wrongly did.
        let lowered = libc::rlimit {
            rlim_cur: before.rlim_max - 1,
            rlim_max: before.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) }, 0);
    }
    let soft = get().rlim_cur;
    let server = sigver::Server::bind(sigver::Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        max_connections: None,
        ..sigver::Config::default()
    })
    .unwrap();
    drop(server);
    assert_eq!(get().rlim_cur, soft, "bind changed the soft limit");
}

#[test]
fn a_heartbeat_interval_netflux_clients_would_not_wait_for_is_warned_about() {
    // Proves the warning at start: Netflux clients close their signaling socket after three of
    // their own 5 s ticks without a heartbeat, so an interval over 10 s is named as a risk.
    let bin = common::binary::Binary::start(&["-p", "0", "--heartbeat-interval", "15000"]);
    let line = bin.wait_for("Heartbeat interval of 15000 ms");
    assert!(line.contains("Netflux clients close"), "{line}");
}

#[test]
fn every_json_log_line_parses_and_carries_its_fields() {
    // Proves --log-format json: each line is one JSON object with time, level, target and
    // message, and a close for a limit carries the connection, client, code and limit.
    let bin = common::binary::Binary::start(&[
        "-h",
        "127.0.0.1",
        "-p",
        "0",
        "--log-format",
        "json",
        "--max-message-size",
        "1K",
    ]);
    let line = bin.wait_for("listening on");
    let start: serde_json::Value = serde_json::from_str(&line).expect("the start line is JSON");
    let message = start["message"].as_str().unwrap();
    let addr: SocketAddr = message
        .rsplit("listening on ")
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut peer = Peer::connect(addr, "/json-logs");
    assert!(peer.join(1, &[]));
    peer.send_raw(vec![0u8; 2048]);
    assert_eq!(peer.expect_close().code, 1009);
    let lines = bin.lines_until_reload();
    let objects: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for o in &objects {
        for member in ["time", "level", "target", "message"] {
            assert!(o[member].is_string(), "no {member}: {o}");
        }
    }
    let close = objects
        .iter()
        .find(|o| o["code"] == 1009)
        .unwrap_or_else(|| panic!("no close line among {objects:#?}"));
    assert_eq!(close["level"], "WARN");
    assert_eq!(close["client"], "127.0.0.1");
    assert_eq!(close["limit"], "max_message_size");
    assert!(
        close["conn"].as_str().is_some_and(|c| c.contains('.')),
        "{close}"
    );
}
