//! A flood of the smallest records rustls makes, to a connection the server keeps writing
//! to: the records the server has read but not yet decrypted (up to MAX_PENDING, about 100
//! KB) are decrypted when it writes, and that must cost no more than reading them did.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::wss::{self, content, join, tls_server, Pair};

/// The slowest of `n` round trips of the pair.
fn slowest(pair: &mut Pair, n: usize) -> Duration {
    (0..n)
        .map(|_| {
            let start = Instant::now();
            pair.relay();
            start.elapsed()
        })
        .max()
        .unwrap_or_default()
}

#[test]
fn tiny_records_waiting_while_the_server_writes_do_not_hold_the_loop() {
    // Proves a peer sending 1.5 MB in records of 32 bytes, while its partner keeps sending
    // it messages (each one a write that decrypts the records waiting), leaves a pair's
    // round trip within a bound.
    let (server, client) = tls_server(|_| {});
    let mut pair = Pair::new(server.addr, &client, "/pair");
    let calm = slowest(&mut pair, 20);
    let mut tiny = (*client).clone();
    tiny.max_fragment_size = Some(32);
    let mut flooder = wss::connect(server.addr, &Arc::new(tiny), "/flood");
    assert!(join(&mut flooder, 1));
    let mut partner = wss::connect(server.addr, &client, "/flood");
    assert!(!join(&mut partner, 2));
    let flooding = std::thread::spawn(move || {
        for _ in 0..3 {
            content(&mut flooder, 2, &[0x5a; 500_000]);
        }
        flooder
    });
    let poking = std::thread::spawn(move || {
        for _ in 0..400 {
            content(&mut partner, 0, b"poke");
            std::thread::sleep(Duration::from_millis(2));
        }
        partner
    });
    let busy = slowest(&mut pair, 100);
    let _flooder = flooding.join().unwrap();
    let _partner = poking.join().unwrap();
    eprintln!("slowest round trip: {calm:?} calm, {busy:?} under the flood");
    assert!(busy < Duration::from_millis(500), "{busy:?}");
}
