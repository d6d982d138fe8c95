//! Signals to the real binary: SIGTERM and SIGINT stop gracefully, a second one at once.

mod common;

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use common::binary::Binary;
use common::Peer;

#[test]
fn sigterm_closes_every_peer_with_1001_and_exits_0() {
    // Proves a graceful stop: each open peer gets close 1001, then the process exits 0.
    let mut bin = Binary::start(&["-h", "127.0.0.1", "-p", "0"]);
    let addr = bin.addr();
    let mut a = Peer::connect(addr, "/stop");
    assert!(a.join(1, &[]));
    let mut b = Peer::connect(addr, "/stop");
    assert!(!b.join(2, &[]));
    bin.signal("TERM");
    assert_eq!(a.expect_close().code, 1001);
    assert_eq!(b.expect_close().code, 1001);
    assert_eq!(bin.wait_exit().code(), Some(0));
}

#[test]
fn sigint_stops_too() {
    // Proves SIGINT (Ctrl-C) takes the same graceful path.
    let mut bin = Binary::start(&["-h", "127.0.0.1", "-p", "0"]);
    let mut a = Peer::connect(bin.addr(), "/int");
    bin.signal("INT");
    assert_eq!(a.expect_close().code, 1001);
    assert_eq!(bin.wait_exit().code(), Some(0));
}

#[test]
fn a_second_signal_stops_at_once() {
    // Proves a second signal does not wait for peers that never answer the close.
    let mut bin = Binary::start(&["-h", "127.0.0.1", "-p", "0"]);
    // Never read: this peer will not answer the server's close frame.
    let _silent = Peer::connect(bin.addr(), "/slow");
    bin.signal("TERM");
    bin.wait_for("stopping");
    bin.signal("TERM");
    bin.wait_for("stopped at once");
    assert_eq!(bin.wait_exit().code(), Some(0));
}

#[test]
fn a_last_message_and_its_fin_in_one_read_are_both_noticed() {
    // Proves an end of stream that arrives with data is seen: the member gets the joiner's
    // last content and then, at once, its disconnect note (§6).
    // Heartbeats far apart: a note can only come from the FIN, not from a failed heartbeat.
    let bin = Binary::start(&[
        "-h",
        "127.0.0.1",
        "-p",
        "0",
        "--heartbeat-interval",
        "60000",
    ]);
    let addr = bin.addr();
    let mut member = Peer::connect(addr, "/fin");
    assert!(member.join(1, &[]));
    let mut joiner = Peer::connect(addr, "/fin");
    assert!(!joiner.join(2, &[]));
    joiner.content(0, b"hello", false);
    let (s, _, _) = member.recv_content();
    // Paused, the server finds the last content and the FIN waiting together.
    bin.signal("STOP");
    joiner.content(0, b"last", false);
    drop(joiner);
    std::thread::sleep(Duration::from_millis(200));
    bin.signal("CONT");
    assert_eq!(member.recv_content(), (s, 0, b"last".to_vec()));
    assert_eq!(member.recv_content(), (s, 0, vec![]));
}

#[test]
fn a_stalled_server_does_not_close_healthy_peers_when_it_resumes() {
    // Proves overdue heartbeat ticks after a stall fire once, not in a burst that would close
    // with 4742 a peer that sends its own heartbeats, as Netflux does, more often than needed.
    let bin = Binary::start(&["-h", "127.0.0.1", "-p", "0", "--heartbeat-interval", "500"]);
    let mut peer = Peer::connect(bin.addr(), "/stall");
    assert!(peer.join(1, &[]));
    peer.ws
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let start = Instant::now();
    let mut last_beat = start;
    let mut stalled = false;
    while start.elapsed() < Duration::from_millis(4000) {
        if last_beat.elapsed() >= Duration::from_millis(100) {
            peer.send(sigver::proto::Type::Heartbeat(true));
            last_beat = Instant::now();
        }
        if !stalled && start.elapsed() >= Duration::from_millis(500) {
            bin.signal("STOP");
            std::thread::sleep(Duration::from_millis(2000));
            bin.signal("CONT");
            stalled = true;
        }
        match peer.ws.read() {
            Ok(tungstenite::Message::Binary(b)) if b.as_ref() == [0x08, 0x01] => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("a healthy peer got {other:?}"),
        }
    }
}
