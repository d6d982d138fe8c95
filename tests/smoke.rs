//! A first end-to-end check of the in-process server through real sockets.

mod common;

use common::*;

#[test]
fn two_peers_meet_and_relay() {
    // Proves the basic flow: found a group, get bound, relay both ways with ids rewritten.
    let server = TestServer::start();
    let mut a = server.peer("/room");
    assert!(a.join(1, &[]));
    let mut b = server.peer("/room");
    assert!(!b.join(2, &[]));
    b.content(0, b"offer", false);
    let (s, r, data) = a.recv_content();
    assert!(s != 0 && r == 0 && data == b"offer");
    a.content(s, b"answer", false);
    assert_eq!(b.recv_content(), (0, s, b"answer".to_vec()));
}
