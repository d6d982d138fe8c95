//! Signed keys (`--key-secret`) end to end: real WebSocket clients against the in-process
//! server, and the real binary for SIGHUP, `sign-key` and bad files at start.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use common::binary::Binary;
use common::{raw_exchange, Closed, Pair, Peer, TestServer};
use sigver::keys::Secrets;

/// A fresh directory for this test's files.
fn temp_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sigver-keys-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `text` as the secrets file in `dir`; returns its path.
fn write_secrets(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("secrets");
    std::fs::write(&path, text).unwrap();
    path
}

/// `NAME.SIG` signed with `secret` alone.
fn signed(secret: &str, name: &str) -> String {
    Secrets::from_lines(secret.as_bytes())
        .unwrap()
        .signed_key(name)
}

fn not_signed() -> Closed {
    Closed {
        code: 4741,
        reason: "Key not signed".into(),
    }
}

/// A server that lets in only keys signed with the secrets of `text`.
fn server_with(text: &str) -> TestServer {
    let path = write_secrets(&temp_dir(), text);
    TestServer::with(|c| c.key_secret = Some(path))
}

fn binary_with(secrets: &Path) -> Binary {
    let path = secrets.to_str().unwrap();
    Binary::start(&["-h", "127.0.0.1", "-p", "0", "--key-secret", path])
}

/// Whether a peer on `/key` founds a group (anything else fails the test).
fn joins(addr: std::net::SocketAddr, key: &str) -> bool {
    let mut peer = Peer::connect(addr, &format!("/{key}"));
    peer.connect_group(1, &[]);
    match peer.recv() {
        sigver::proto::Type::Connected(_) => {
            peer.close();
            true
        }
        other => panic!("{key}: expected connected, got {other:?}"),
    }
}

/// Whether a peer on `/key` is closed with 4741 "Key not signed" before anything else.
fn refused(addr: std::net::SocketAddr, key: &str) -> bool {
    let mut peer = Peer::connect(addr, &format!("/{key}"));
    peer.expect_close() == not_signed()
}

#[test]
fn a_signed_key_joins_and_relays() {
    // Proves a key signed with the file's secret opens a group, binds a joiner and relays.
    let server = server_with("s3cret\n");
    let key = signed("s3cret", "room.42");
    let mut pair = Pair::new(&server, &format!("/{key}?favored"));
    pair.relay(3);
    pair.close();
    server.assert_empty();
}

#[test]
fn forged_and_unsigned_keys_are_closed_with_4741() {
    // Proves every key not signed with a secret of the file is closed with 4741 "Key not
    // signed" after the upgrade, and counted under its own label.
    let server = server_with("s3cret\n");
    let sig = Secrets::from_lines(b"s3cret").unwrap().signature(b"room");
    let mut wrong = sig.clone().into_bytes();
    wrong[0] = if wrong[0] == b'A' { b'B' } else { b'A' };
    let wrong = String::from_utf8(wrong).unwrap();
    let keys = [
        format!("room.{wrong}"),
        "room".to_string(),
        "room.".to_string(),
        format!("other.{sig}"),
        sig.clone(),
        signed("not-in-the-file", "room"),
        format!("room%2E{sig}"),
        String::new(),
    ];
    for key in &keys {
        assert!(refused(server.addr, key), "{key}");
    }
    assert!(joins(server.addr, &format!("room.{sig}")));
    let metrics = String::from_utf8(raw_exchange(
        server.addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    ))
    .unwrap();
    let line = format!(
        "sigver_server_closes_total{{code=\"4741\",reason=\"key_not_signed\"}} {}",
        keys.len()
    );
    assert!(metrics.contains(&line), "{metrics}");
    server.assert_empty();
}

#[test]
fn without_the_flag_any_key_joins() {
    // Proves the default is the original's behaviour: no key is checked.
    let server = TestServer::start();
    for key in ["room", "room.not-a-signature", &signed("whatever", "room")] {
        assert!(joins(server.addr, key), "{key}");
    }
}

#[test]
fn a_key_signed_with_either_of_two_secrets_joins() {
    // Proves every secret of the file is accepted, so a secret rotates without a cut.
    let server = server_with("\n  new-secret  \n\nold-secret\n");
    let (new, old) = (signed("new-secret", "g"), signed("old-secret", "g"));
    assert_ne!(new, old);
    let mut member = server.peer(&format!("/{new}"));
    assert!(member.join(1, &[]));
    let mut joiner = server.peer(&format!("/{old}"));
    assert!(joiner.join(2, &[]), "a different key: a group of its own");
    assert!(refused(server.addr, &signed("third-secret", "g")));
}

#[test]
fn sighup_rotates_the_secrets_for_new_connections() {
    // Proves SIGHUP reads the file again: a key of the new secret joins, one of the old is
    // refused, and a peer that joined with the old one stays.
    let dir = temp_dir();
    let path = write_secrets(&dir, "old-secret\n");
    let bin = binary_with(&path);
    let addr = bin.addr();
    let mut member = Peer::connect(addr, &format!("/{}", signed("old-secret", "a")));
    assert!(member.join(1, &[]));
    assert!(refused(addr, &signed("new-secret", "b")));

    write_secrets(&dir, "new-secret\n");
    bin.sighup();
    let line = bin.wait_for("Key secrets reloaded");
    assert!(line.contains(&path.display().to_string()), "{line}");

    assert!(joins(addr, &signed("new-secret", "b")));
    assert!(refused(addr, &signed("old-secret", "c")));
    member.expect_silence(std::time::Duration::from_millis(100));
    member.close();
}

#[test]
fn sighup_with_a_broken_file_keeps_the_last_good_secrets() {
    // Proves an empty file, then a directory, at the path on reload are logged by name and
    // the last good secrets stay in force.
    let dir = temp_dir();
    let path = write_secrets(&dir, "good-secret\n");
    let bin = binary_with(&path);
    let addr = bin.addr();
    let key = signed("good-secret", "room");

    std::fs::write(&path, " \n\n").unwrap();
    bin.sighup();
    let line = bin.wait_for("Key secret reload failed");
    assert!(line.contains(&path.display().to_string()), "{line}");
    assert!(line.contains("no secret"), "{line}");
    assert!(joins(addr, &key));

    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    bin.sighup();
    let line = bin.wait_for("Key secret reload failed");
    assert!(line.contains(&path.display().to_string()), "{line}");
    assert!(line.contains("not a regular file"), "{line}");
    assert!(joins(addr, &key));
    assert!(refused(addr, "room"));
}

/// Runs `sigver args`; returns (exit code, stdout, stderr).
fn sigver(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sigver"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sign_key_prints_a_key_the_server_lets_in() {
    // Proves `sigver sign-key` signs with the first secret of the file, and that what it
    // prints joins a server started with the same file.
    let dir = temp_dir();
    let path = write_secrets(&dir, "first\nsecond\n");
    let file = path.to_str().unwrap();
    let (code, out, err) = sigver(&["sign-key", "room.42", "--key-secret", file]);
    assert_eq!(code, Some(0), "{err}");
    let key = out.trim_end_matches('\n');
    assert_eq!(key, signed("first", "room.42"));
    assert_eq!(out, format!("{key}\n"), "one line, the key alone");
    let bin = binary_with(&path);
    assert!(joins(bin.addr(), key));
}

#[test]
fn sign_key_mistakes_exit_2() {
    // Proves a sign-key that cannot sign (no file, an empty one, no name) exits 2 and says
    // why, printing nothing on stdout.
    let dir = temp_dir();
    let empty = write_secrets(&dir, "\n");
    let missing = dir.join("missing");
    let (e, m) = (empty.to_str().unwrap(), missing.to_str().unwrap());
    let cases: &[(&[&str], &str)] = &[
        (&["sign-key", "room", "--key-secret", m], m),
        (&["sign-key", "room", "--key-secret", e], e),
        (&["sign-key", "room"], "--key-secret"),
        (&["sign-key", "--key-secret", e], "name"),
    ];
    for (args, needle) in cases {
        let (code, out, err) = sigver(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(out, "", "{args:?}");
    }
}

#[test]
fn a_bad_key_secret_file_at_start_exits_2_naming_it() {
    // Proves a missing, empty, blank or non-regular secrets file stops the server at start
    // with status 2 and the file's name.
    let dir = temp_dir();
    let empty = dir.join("empty");
    std::fs::write(&empty, "").unwrap();
    let blank = dir.join("blank");
    std::fs::write(&blank, " \n\t\n").unwrap();
    let missing = dir.join("missing");
    let subdir = dir.join("subdir");
    std::fs::create_dir(&subdir).unwrap();
    for path in [empty, blank, missing, subdir] {
        let file = path.to_str().unwrap();
        let (code, _, err) = sigver(&["-h", "127.0.0.1", "-p", "0", "--key-secret", file]);
        assert_eq!(code, Some(2), "{file}: {err}");
        assert!(err.contains(file), "{file}: {err}");
    }
}
