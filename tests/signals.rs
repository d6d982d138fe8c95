//! Signals to the real binary: SIGTERM and SIGINT stop gracefully, a second one at once.

mod common;

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
