//! Every limit over real sockets: the abuser is cut off with a clear answer while a
//! well-behaved pair on the same server keeps relaying, and nothing is left behind.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::binary::Binary;
use common::*;

#[test]
fn oversized_message_closes_1009_and_others_keep_relaying() {
    // Proves --max-message-size: a larger message closes its sender with 1009, nobody else.
    let server = TestServer::with(|c| c.max_message_size = 64 << 10);
    let mut good = Pair::new(&server, "/good");
    let mut big = server.peer("/big");
    big.send_raw(vec![0u8; (64 << 10) + 1]);
    assert_eq!(big.expect_close().code, 1009);
    good.relay(5);
    good.close();
    server.assert_empty();
}

#[test]
fn a_peer_that_does_not_read_is_closed_when_its_queue_is_full() {
    // Proves --max-send-queue: a joiner that never reads is closed with 1008 once its queue
    // passes the limit; its member is told, and another pair is unharmed.
    let server = TestServer::with(|c| {
        c.max_send_queue = 64 << 10;
        c.rate_limit = 0;
        c.close_timeout = Duration::from_secs(30);
    });
    let mut good = Pair::new(&server, "/good");
    let mut slow = Pair::new(&server, "/slow");
    // More than loopback's socket buffers can absorb, so the server must queue.
    let chunk = vec![7u8; 64 << 10];
    for _ in 0..(32 << 20) / chunk.len() {
        slow.member.content(slow.s, &chunk, false);
    }
    // The member hears that its joiner is gone.
    assert_eq!(slow.member.recv_content(), (slow.s, 0, vec![]));
    good.relay(5);
    // The slow joiner, reading at last, finds the close frame after what was queued.
    let mut received = 0usize;
    let closed = loop {
        match slow.joiner.ws.read() {
            Ok(tungstenite::Message::Binary(b)) => received += b.len(),
            Ok(tungstenite::Message::Close(Some(f))) => break f,
            other => panic!("expected data then a close frame, got {other:?}"),
        }
    };
    assert_eq!(
        (u16::from(closed.code), &*closed.reason),
        (1008, "Send queue full")
    );
    assert!(received < 32 << 20, "the queue was bounded");
    good.close();
    drop(slow);
    server.assert_empty();
}

#[test]
fn the_memory_budget_closes_the_largest_queue_first() {
    // Proves --memory-budget: past it, the connection holding the most queued bytes is
    // dropped, while a peer with little queued keeps its connection.
    let server = TestServer::with(|c| {
        c.max_send_queue = 64 << 20;
        c.memory_budget = 256 << 10;
        c.rate_limit = 0;
    });
    let mut light = Pair::new(&server, "/light");
    let mut heavy = Pair::new(&server, "/heavy");
    // The light joiner gets a little that it does not read yet.
    for _ in 0..4 {
        light.member.content(light.s, &[1u8; 1024], false);
    }
    let chunk = vec![2u8; 64 << 10];
    for _ in 0..(32 << 20) / chunk.len() {
        heavy.member.content(heavy.s, &chunk, false);
    }
    assert_eq!(heavy.member.recv_content(), (heavy.s, 0, vec![]));
    assert!(eventually(|| server.stats().queued_bytes <= 256 << 10));
    for _ in 0..4 {
        assert_eq!(light.joiner.recv_content(), (0, light.s, vec![1u8; 1024]));
    }
    light.relay(5);
    light.close();
    drop(heavy);
    server.assert_empty();
}

#[test]
fn a_flooding_peer_is_closed_for_its_rate() {
    // Proves --rate-limit: past the burst, a flooding peer is closed with 1008; a pair that
    // stays under the rate is unharmed.
    let server = TestServer::with(|c| c.rate_limit = 50);
    let mut good = Pair::new(&server, "/good");
    let mut flood = server.peer("/flood");
    for _ in 0..500 {
        flood.send(sigver::proto::Type::Heartbeat(true));
    }
    let closed = flood.expect_close();
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (1008, "Rate limit exceeded")
    );
    good.relay(10);
    good.close();
    server.assert_empty();
}

#[test]
fn rate_limit_zero_turns_it_off() {
    // Proves --rate-limit 0: thousands of messages at once are all relayed.
    let server = TestServer::with(|c| c.rate_limit = 0);
    let mut pair = Pair::new(&server, "/fast");
    for i in 0..3000u32 {
        pair.joiner.content(0, &i.to_be_bytes(), false);
    }
    for i in 0..3000u32 {
        assert_eq!(pair.member.recv_content().2, i.to_be_bytes());
    }
}

#[test]
fn an_upgrade_that_never_completes_is_dropped() {
    // Proves --handshake-timeout: silence, or half a request, is dropped at the deadline.
    let server = TestServer::with(|c| c.handshake_timeout = Duration::from_millis(200));
    let mut good = Pair::new(&server, "/good");
    for sent in [&b""[..], b"GET /k HTTP/1.1\r\nHost: x\r\n"] {
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(sent).unwrap();
        let mut rest = Vec::new();
        let start = Instant::now();
        let _ = s.read_to_end(&mut rest); // returns when the server hangs up
        assert!(rest.is_empty(), "no answer to an incomplete request");
        assert!(start.elapsed() < WAIT, "the server must hang up by itself");
    }
    good.relay(3);
    good.close();
    server.assert_empty();
}

#[test]
fn request_heads_over_8_kib_get_431() {
    // Proves the request-size limit: an oversized head gets 431 and the connection is closed.
    let server = TestServer::start();
    let filler = "a".repeat(9000);
    let request = format!("GET /k HTTP/1.1\r\nHost: x\r\nX-Filler: {filler}\r\n\r\n");
    let answer = raw_exchange(server.addr, request.as_bytes());
    assert!(
        answer.starts_with(b"HTTP/1.1 431 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    server.assert_empty();
}

/// Sends an upgrade request over raw TCP and returns the status line of the answer.
fn upgrade_status(server: &TestServer) -> String {
    let request = "GET /k HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let answer = raw_exchange(server.addr, request.as_bytes());
    let text = String::from_utf8_lossy(&answer);
    text.lines().next().unwrap_or("").to_string()
}

#[test]
fn over_max_connections_upgrades_get_503() {
    // Proves --max-connections: one more gets 503, the server keeps serving, and a freed
    // slot admits the next one.
    let server = TestServer::with(|c| c.max_connections = Some(3));
    let mut good = Pair::new(&server, "/good");
    let third = server.peer("/third");
    assert!(upgrade_status(&server).starts_with("HTTP/1.1 503 "));
    good.relay(3);
    third.close();
    assert!(eventually(|| server.stats().connections == 2));
    let mut fourth = server.peer("/fourth");
    assert!(fourth.join(1, &[]));
    good.close();
    fourth.close();
    server.assert_empty();
}

#[test]
fn over_the_per_address_limit_upgrades_get_429() {
    // Proves --max-connections-per-ip: one more from the same address gets 429.
    let server = TestServer::with(|c| c.max_connections_per_ip = 2);
    let mut good = Pair::new(&server, "/good");
    assert!(upgrade_status(&server).starts_with("HTTP/1.1 429 "));
    good.relay(3);
    good.close();
    server.assert_empty();
}

#[test]
fn per_address_limit_zero_turns_it_off() {
    // Proves --max-connections-per-ip 0: many connections from one address are served.
    let server = TestServer::with(|c| c.max_connections_per_ip = 0);
    let peers: Vec<Peer> = (0..20).map(|i| server.peer(&format!("/k{i}"))).collect();
    for mut p in peers {
        assert!(p.join(1, &[]));
        p.close();
    }
    server.assert_empty();
}

#[test]
fn a_close_the_peer_never_answers_ends_at_the_deadline() {
    // Proves the close deadline: a peer that ignores the server's close frame is dropped,
    // and the server holds nothing afterwards.
    let server = TestServer::with(|c| c.close_timeout = Duration::from_millis(300));
    // Closed at once for its empty key; never reads, so never answers.
    let _deaf = server.peer("/");
    let mut good = Pair::new(&server, "/good");
    good.relay(2);
    assert!(eventually(|| server.stats().connections == 2));
    good.close();
    server.assert_empty();
}

/// CPU time (user + system) a process has used, in clock ticks, from /proc.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn running_out_of_file_descriptors_neither_spins_nor_stalls() {
    // Proves EMFILE handling: with few file descriptors and many clients, the loop does not
    // spin, and it accepts again as soon as descriptors are free.
    let mut bin =
        Binary::start_shell("ulimit -n 40; exec \"$0\" -h 127.0.0.1 -p 0 --max-connections 1000");
    let addr = bin.addr();
    let pid = bin.pid();
    // Past the descriptor limit: the kernel completes connections the server cannot accept.
    let crowd: Vec<TcpStream> = (0..60).map(|_| TcpStream::connect(addr).unwrap()).collect();
    bin.wait_for("cannot accept a connection");
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pid) - before;
    // It retries every 50 ms; it says so at most once a second.
    let lines = bin.count_lines(|l| l.contains("cannot accept"));
    assert!(
        lines <= 2,
        "{lines} lines in a second about running out of descriptors"
    );
    // A spinning loop would use about 100 ticks in one second.
    assert!(
        used < 30,
        "the loop used {used} ticks in 1 s while out of descriptors"
    );
    drop(crowd);
    let mut peer = Peer::connect(addr, "/after");
    assert!(peer.join(1, &[]));
    bin.signal("TERM");
    assert_eq!(peer.expect_close().code, 1001);
    assert_eq!(bin.wait_exit().code(), Some(0));
}

#[test]
fn a_small_open_file_limit_still_serves_dozens() {
    // Proves the descriptor reserve is proportionate to the limit: under 64 descriptors the
    // server serves dozens of peers (it served one before) and refuses the next with 503.
    let bin = Binary::start_shell(
        "ulimit -n 64; exec \"$0\" -h 127.0.0.1 -p 0 --max-connections-per-ip 0",
    );
    let addr = bin.addr();
    let mut member = Peer::connect(addr, "/pair");
    assert!(member.join(1, &[]));
    let mut joiner = Peer::connect(addr, "/pair");
    assert!(!joiner.join(2, &[]));
    let _others: Vec<Peer> = (0..40)
        .map(|i| {
            let mut p = Peer::connect(addr, &format!("/small{i}"));
            assert!(p.join(1, &[]), "peer {i}");
            p
        })
        .collect();
    let upgrade = "GET /more HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let mut extra = Vec::new();
    let refused = (0..20).any(|_| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(upgrade.as_bytes()).unwrap();
        let mut head = [0u8; 12];
        let n = s.read(&mut head).unwrap_or(0);
        extra.push(s);
        head[..n].starts_with(b"HTTP/1.1 503")
    });
    assert!(refused, "past the limit, upgrades get 503");
    // The peers it serves are untouched.
    joiner.content(0, b"still here", false);
    assert_eq!(member.recv_content().2, b"still here");
}

#[test]
fn durations_too_long_to_count_in_milliseconds_mean_never() {
    // Proves the loop's time arithmetic saturates: an embedder's Duration::MAX for every
    // timeout neither overflows nor drops connections at once.
    let mut server = TestServer::with(|c| {
        c.handshake_timeout = Duration::MAX;
        c.heartbeat_interval = Duration::MAX;
        c.close_timeout = Duration::MAX;
        c.shutdown_grace = Duration::MAX;
    });
    let mut slow = TcpStream::connect(server.addr).unwrap();
    slow.write_all(b"GET /slow HTTP/1.1\r\n").unwrap();
    let mut pair = Pair::new(&server, "/never");
    pair.relay(3);
    // The unfinished request is still there.
    slow.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    assert!(slow.read(&mut [0u8; 1]).is_err(), "dropped at once");
    drop(slow);
    pair.close();
    server.stop().unwrap();
}

#[test]
fn a_newcomer_to_a_full_group_is_closed_4746() {
    // Proves --max-group-size over real sockets: with 2, the third peer that would be bound
    // gets 4746 "Group is full", while the two members relay on and a member of the mesh
    // reconnecting its signaling socket still gets in.
    let server = TestServer::with(|c| c.max_group_size = 2);
    let mut a = server.peer("/capped");
    assert!(a.join(1, &[]));
    let mut b = server.peer("/capped");
    assert!(!b.join(2, &[]));
    b.content(0, b"offer", false);
    let (s, _, _) = a.recv_content();
    a.content(s, b"answer", false);
    assert_eq!(b.recv_content().2, b"answer");
    assert!(b.join(2, &[1]));
    let mut c = server.peer("/capped");
    c.connect_group(3, &[]);
    let closed = c.expect_close();
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (4746, "Group is full")
    );
    let mut d = server.peer("/capped");
    assert!(d.join(4, &[1, 2]));
    // The members' own relay is untouched.
    b.content(s, b"still", false);
    assert_eq!(a.recv_content().2, b"still");
}
