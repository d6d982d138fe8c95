//! Transport, group keys, heartbeats and close codes through real sockets (docs/PROTOCOL.md §1, §4,
//! §7). Each test starts its own in-process server, so they run in parallel.

mod common;

use common::*;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use prost::Message as _;
use sigver::proto::{Content, Message, Type};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role};
use tungstenite::{Message as WsMessage, WebSocket};

/// The heartbeat interval of the tests that watch ticks: short, but long enough for a loaded
/// machine to keep up.
const SHORT_BEAT: Duration = Duration::from_millis(150);

/// `heartbeat: true`, as the server must send it (§2).
const HEARTBEAT: [u8; 2] = [0x08, 0x01];

/// A peer on `path` that must be closed right after the upgrade; returns its close.
fn closed_on(server: &TestServer, path: &str) -> Closed {
    server.peer(path).expect_close()
}

/// A fresh peer that sends `frame` and returns the close it gets.
fn closed_after(server: &TestServer, frame: WsMessage) -> Closed {
    let mut p = server.peer("/bad-frame");
    p.ws.send(frame).expect("send");
    p.expect_close()
}

/// A silent peer on a server ticking every `SHORT_BEAT`: the raw frames it got before the
/// close, the close, and the time from before the connection to the close.
fn silent_peer() -> (Vec<Vec<u8>>, Closed, Duration) {
    let server = TestServer::with(|c| c.heartbeat_interval = SHORT_BEAT);
    let start = Instant::now();
    let mut p = server.peer("/silent");
    let mut frames = Vec::new();
    loop {
        match p.ws.read() {
            Ok(WsMessage::Binary(b)) => frames.push(b.to_vec()),
            Ok(WsMessage::Close(Some(f))) => {
                let _ = p.ws.flush();
                let closed = Closed {
                    code: u16::from(f.code),
                    reason: f.reason.to_string(),
                };
                return (frames, closed, start.elapsed());
            }
            other => panic!("expected heartbeats then a close, got {other:?}"),
        }
    }
}

/// A member whose lone-member seat is taken by a joiner that had tried it (§5.2c): its close.
fn blocking_member_close(server: &TestServer) -> Closed {
    let (mut a, mut b) = member_and_joiner(server, "/blocking");
    assert!(b.join(2, &[]));
    a.expect_close()
}

/// Encodes a `content` with `data` as one protobuf message.
fn content_bytes(data: Vec<u8>) -> Vec<u8> {
    Message {
        r#type: Some(Type::Content(Content {
            sender_id: 0,
            recipient_id: 0,
            last_data: false,
            data: data.into(),
        })),
    }
    .encode_to_vec()
}

/// A peer that sends one message larger than the default limit (2 MiB); returns its close.
fn oversized_close(server: &TestServer) -> Closed {
    let mut p = server.peer("/oversized");
    let bytes = content_bytes(vec![7u8; (2 << 20) + 1024]);
    // The server may close before the whole frame is written: a failed send is fine, the
    // close frame is what counts.
    let _ = p.ws.send(WsMessage::Binary(bytes.into()));
    p.expect_close()
}

/// `oversized_close` on a server of its own, so that a crash of the server after the close
/// (the business of `message_over_2_mib_closes_with_1009`) does not hide the other closes.
fn oversized_alone() -> Closed {
    let mut own = TestServer::start();
    let closed = oversized_close(&own);
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| own.stop()));
    closed
}

/// Upgrades on a raw socket with `target` as the request target, which the tungstenite
/// client would refuse to send; returns the response head and the client WebSocket.
fn raw_upgrade(addr: SocketAddr, target: &str) -> (String, WebSocket<TcpStream>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    // One byte at a time, so that no frame byte is taken with the head.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        s.read_exact(&mut byte).expect("response head");
        head.push(byte[0]);
        assert!(head.len() < 8192, "endless response head");
    }
    let head = String::from_utf8(head).expect("ASCII head");
    (head, WebSocket::from_raw_socket(s, Role::Client, None))
}

/// A peer whose request target is not a URL: its response head and close.
fn bad_url_close(server: &TestServer) -> (String, Closed) {
    let (head, ws) = raw_upgrade(server.addr, "nowhere");
    let mut p = Peer { ws };
    (head, p.expect_close())
}

/// Reads until the server's close, skipping heartbeats and the empty contents of §6 (a peer
/// closed first at shutdown leaves its partner such a note); returns the close.
fn close_after_notes(p: &mut Peer) -> Closed {
    loop {
        match p.ws.read() {
            Ok(WsMessage::Binary(b)) => match Message::decode(b.as_ref()).map(|m| m.r#type) {
                Ok(Some(Type::Heartbeat(true))) => {}
                Ok(Some(Type::Content(c))) if c.data.is_empty() && !c.last_data => {}
                other => panic!("expected a close frame, got {other:?}"),
            },
            Ok(WsMessage::Close(Some(f))) => {
                let _ = p.ws.flush();
                return Closed {
                    code: u16::from(f.code),
                    reason: f.reason.to_string(),
                };
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// Asserts that no frame at all (not even a heartbeat) arrives for `d`.
fn expect_nothing(p: &mut Peer, d: Duration) {
    p.ws.get_mut().set_read_timeout(Some(d)).unwrap();
    match p.ws.read() {
        Err(tungstenite::Error::Io(e))
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) => {}
        other => panic!("expected nothing, got {other:?}"),
    }
    p.ws.get_mut().set_read_timeout(Some(WAIT)).unwrap();
}

/// `a` founds the group on `path_a`, `b` joins on `path_b`; they must meet: `b` is bound to
/// `a` and the first message relays.
fn assert_meet(server: &TestServer, path_a: &str, path_b: &str) {
    let mut a = server.peer(path_a);
    assert!(a.join(1, &[]), "{path_a} must found a new group");
    let mut b = server.peer(path_b);
    assert!(!b.join(2, &[]), "{path_b} must meet {path_a}");
    b.content(0, b"offer", false);
    let (s, r, data) = a.recv_content();
    assert!(s != 0 && r == 0 && data == b"offer");
}

#[test]
fn empty_key_closes_with_4741() {
    // Proves §1: the path `/` is an empty key, refused after the upgrade with 4741.
    let server = TestServer::start();
    assert_eq!(closed_on(&server, "/").code, 4741);
}

#[test]
fn key_of_512_bytes_is_accepted() {
    // Proves §1: 512 bytes is the longest key, and it works.
    let server = TestServer::start();
    let path = format!("/{}", "k".repeat(512));
    let mut p = server.peer(&path);
    assert!(p.join(1, &[]));
}

#[test]
fn key_of_513_bytes_closes_with_4741() {
    // Proves §1: a key longer than 512 bytes is refused after the upgrade with 4741.
    let server = TestServer::start();
    let path = format!("/{}", "k".repeat(513));
    assert_eq!(closed_on(&server, &path).code, 4741);
}

#[test]
fn percent_encoded_key_is_taken_as_sent() {
    // Proves §1: no percent-decoding; keys are compared byte for byte, so a different-case
    // encoding of the same characters is another group.
    let server = TestServer::start();
    // Same bytes must meet the same group.
    let (mut a, _b, (s, _, data)) = meet(&server, "/%D0%9F%D0%BE", b"hello");
    assert!(s != 0 && data == b"hello");
    let mut c = server.peer("/%d0%9f%d0%be");
    assert!(
        c.join(3, &[]),
        "lowercase encoding must be another (new) group"
    );
    a.expect_silence(Duration::from_millis(100));
}

#[test]
fn key_may_contain_a_slash() {
    // Proves §1: the whole path after the first `/` is the key, `/` included.
    let server = TestServer::start();
    assert_meet(&server, "/a/b", "/a/b");
    let mut other = server.peer("/a");
    assert!(other.join(3, &[]), "`/a` is not the key `a/b`");
}

#[test]
fn query_string_is_not_part_of_the_key() {
    // Proves §1: the query string is cut off the key, so `/k?x=1` and `/k` meet.
    let server = TestServer::start();
    assert_meet(&server, "/k?x=1", "/k");
}

/// A non-favored first member, a favored second one (with `query`), and a joiner that must be
/// bound to the favored one.
fn favored_second_member_is_chosen(query: &str) {
    let server = TestServer::start();
    let mut first = server.peer("/fav");
    assert!(first.join(1, &[]));
    let mut second = server.peer(&format!("/fav{query}"));
    assert!(second.join(2, &[1]));
    let mut joiner = server.peer("/fav");
    assert!(!joiner.join(3, &[]));
    joiner.content(0, b"offer", false);
    let (s, r, data) = second.recv_content();
    assert!(s != 0 && r == 0 && data == b"offer", "{query}");
    first.expect_silence(Duration::from_millis(150));
}

#[test]
fn favored_member_is_chosen_for_a_joiner() {
    // Proves §1 and §5: `?favored` marks a favored member, chosen before an earlier one.
    favored_second_member_is_chosen("?favored");
}

#[test]
fn favored_with_a_value_among_other_parameters() {
    // Proves §1: `favored` counts with any value and wherever it is in the query.
    favored_second_member_is_chosen("?x=1&favored=true");
}

#[test]
fn text_frame_closes_with_4743() {
    // Proves §7: every message must be a binary frame; a text frame closes with 4743.
    let server = TestServer::start();
    let closed = closed_after(&server, WsMessage::Text("{\"connect\":{}}".into()));
    assert_eq!(closed.code, 4743);
}

#[test]
fn garbage_bytes_close_with_4743() {
    // Proves §7: bytes that are not a protobuf `Message` close with 4743.
    let server = TestServer::start();
    let closed = closed_after(&server, WsMessage::Binary(vec![0xff, 0xff, 0xff].into()));
    assert_eq!(closed.code, 4743);
}

#[test]
fn empty_binary_frame_closes_with_4743() {
    // Proves §7: an empty frame is a `Message` with no oneof field set: 4743.
    let server = TestServer::start();
    let closed = closed_after(&server, WsMessage::Binary(Vec::new().into()));
    assert_eq!(closed.code, 4743);
}

#[test]
fn bad_url_closes_with_4745() {
    // Proves §7: a request target that is not a URL path is upgraded, then closed with 4745.
    let server = TestServer::start();
    let (head, closed) = bad_url_close(&server);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(closed.code, 4745);
}

#[test]
fn a_bad_peer_does_not_affect_others() {
    // Proves §7: one peer closed for garbage leaves another pair on the server relaying.
    let server = TestServer::start();
    let (mut a, mut b, (s, _, data)) = meet(&server, "/pair", b"before");
    assert_eq!(data, b"before");

    let mut bad = server.peer("/pair-bad");
    bad.send_raw(vec![0xff, 0xff, 0xff]);
    assert_eq!(bad.expect_close().code, 4743);

    b.content(0, b"after", false);
    assert_eq!(a.recv_content(), (s, 0, b"after".to_vec()));
    a.content(s, b"answer", false);
    assert_eq!(b.recv_content(), (0, s, b"answer".to_vec()));
}

#[test]
fn silent_client_gets_two_heartbeats_then_4742() {
    // Proves §4: a silent client receives exactly 2 heartbeats (`08 01`), then close 4742 on
    // the third tick.
    let (frames, closed, elapsed) = silent_peer();
    assert_eq!(frames, vec![HEARTBEAT.to_vec(), HEARTBEAT.to_vec()]);
    assert_eq!(closed.code, 4742);
    // Third tick: about 3 intervals after opening (a little slack for a coarse clock).
    assert!(
        elapsed >= SHORT_BEAT * 3 - Duration::from_millis(50),
        "closed after {elapsed:?}"
    );
    assert!(elapsed < WAIT, "closed after {elapsed:?}");
}

#[test]
fn client_answering_heartbeats_stays_connected() {
    // Proves §4: a heartbeat from the client resets the count, so a client answering every
    // tick stays well past 3 intervals.
    let server = TestServer::with(|c| c.heartbeat_interval = SHORT_BEAT);
    let mut p = server.peer("/answers");
    let until = Instant::now() + SHORT_BEAT * 8;
    let mut ticks = 0;
    while Instant::now() < until {
        match p.recv_any() {
            Type::Heartbeat(true) => {
                ticks += 1;
                p.send(Type::Heartbeat(true));
            }
            other => panic!("expected a heartbeat, got {other:?}"),
        }
    }
    assert!(ticks >= 5, "only {ticks} ticks in 8 intervals");
    assert!(p.join(1, &[]), "still connected and served");
}

/// A client that sends `heartbeat: value` every 2/3 interval without reading stays served.
fn own_heartbeats_keep_alive(value: bool) {
    let server = TestServer::with(|c| c.heartbeat_interval = SHORT_BEAT);
    let mut p = server.peer("/own-beats");
    let until = Instant::now() + SHORT_BEAT * 8;
    while Instant::now() < until {
        p.send(Type::Heartbeat(value));
        std::thread::sleep(SHORT_BEAT * 2 / 3);
    }
    assert!(p.join(1, &[]), "still connected and served");
}

#[test]
fn client_sending_its_own_heartbeats_stays_connected() {
    // Proves §4: periodic client heartbeats (as Netflux sends) keep the connection open.
    own_heartbeats_keep_alive(true);
}

#[test]
fn heartbeat_false_also_counts() {
    // Proves §4: any heartbeat message, true or false, resets the missed count.
    own_heartbeats_keep_alive(false);
}

#[test]
fn server_never_answers_a_client_heartbeat() {
    // Proves §4: the server sends no reply to a client's heartbeat (no ping-pong).
    let server = TestServer::start(); // 60 s ticks: none during the test
    let mut p = server.peer("/no-echo");
    for _ in 0..5 {
        p.send(Type::Heartbeat(true));
        p.send(Type::Heartbeat(false));
    }
    // Messages are handled in order: any reply would come before this answer.
    p.connect_group(1, &[]);
    assert_eq!(p.recv_any(), Type::Connected(true));
    p.send(Type::Heartbeat(true));
    expect_nothing(&mut p, Duration::from_millis(300));
}

#[test]
fn close_reasons_are_short_and_not_empty() {
    // Proves §7: every close the server initiates carries a human reason of 1 to 123 bytes.
    let server = TestServer::start();
    let mut closes = vec![
        closed_on(&server, "/"),
        closed_on(&server, &format!("/{}", "k".repeat(513))),
        closed_after(&server, WsMessage::Text("hi".into())),
        closed_after(&server, WsMessage::Binary(vec![0xff, 0xff, 0xff].into())),
        closed_after(&server, WsMessage::Binary(Vec::new().into())),
        blocking_member_close(&server),
        oversized_alone(),
        bad_url_close(&server).1,
        silent_peer().1,
    ];
    let mut stopping = TestServer::start();
    let mut last = stopping.peer("/last");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(stopping.stop().is_ok()));
    closes.push(last.expect_close());
    assert!(rx.recv_timeout(WAIT).expect("stop returned"));

    let codes: Vec<u16> = closes.iter().map(|c| c.code).collect();
    assert_eq!(
        codes,
        [4741, 4741, 4743, 4743, 4743, 4744, 1009, 4745, 4742, 1001]
    );
    for c in &closes {
        assert!(
            !c.reason.is_empty() && c.reason.len() <= 123,
            "close {}: reason {:?}",
            c.code,
            c.reason
        );
    }
}

#[test]
fn plain_get_gets_a_short_answer_and_is_closed() {
    // Proves §1: a request that is not an upgrade gets a short HTTP answer (404 for a path
    // that is no endpoint) and the server closes the connection.
    let server = TestServer::start();
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET /some-key HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let ended = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 404"), "answer: {text:?}");
    assert!(
        text.contains("WebSocket signaling server"),
        "answer: {text:?}"
    );
    match ended {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server left the connection open: {e}"),
    }
}

#[test]
fn first_offered_subprotocol_is_echoed() {
    // Proves §1: the first subprotocol offered comes back in `Sec-WebSocket-Protocol`.
    let server = TestServer::start();
    let mut request = format!("ws://{}/proto", server.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "a, b".parse().unwrap());
    let stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let (ws, response) = tungstenite::client(request, stream).expect("upgrade");
    assert_eq!(response.status(), 101);
    let protocols: Vec<_> = response
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .collect();
    assert_eq!(protocols, ["a"]);
    let mut p = Peer { ws };
    assert!(p.join(1, &[]));
}

#[test]
fn no_extension_is_negotiated() {
    // Proves §1: permessage-deflate offered by the client is not accepted, nor any extension.
    let server = TestServer::start();
    let mut request = format!("ws://{}/plain", server.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Extensions",
        "permessage-deflate; client_max_window_bits"
            .parse()
            .unwrap(),
    );
    let stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let (ws, response) = tungstenite::client(request, stream).expect("upgrade");
    assert_eq!(response.status(), 101);
    assert!(
        response.headers().get("Sec-WebSocket-Extensions").is_none(),
        "{:?}",
        response.headers()
    );
    // Frames go uncompressed (RSV1 clear): tungstenite would fail on a compressed one.
    let mut p = Peer { ws };
    assert!(p.join(1, &[]));
}

#[test]
fn ping_gets_a_pong() {
    // Proves RFC 6455 §5.5.2 on our transport: a client's ping is answered with its payload.
    let server = TestServer::start();
    let mut p = server.peer("/ping");
    p.ws.send(WsMessage::Ping(b"are you there"[..].into()))
        .unwrap();
    loop {
        match p.ws.read() {
            Ok(WsMessage::Pong(payload)) => {
                assert_eq!(payload.as_ref(), b"are you there");
                break;
            }
            Ok(WsMessage::Binary(b)) if b.as_ref() == HEARTBEAT => {}
            other => panic!("expected a pong, got {other:?}"),
        }
    }
    assert!(p.join(1, &[]));
}

#[test]
fn message_over_2_mib_closes_with_1009() {
    // Proves §7 (ours): a message larger than max_message_size (2 MiB) closes with 1009.
    let server = TestServer::start();
    assert_eq!(oversized_close(&server).code, 1009);
    // §7: a bad message from one peer never affects any other peer.
    std::thread::sleep(Duration::from_millis(100));
    let mut next = server.peer("/after-oversized");
    assert!(next.join(1, &[]));
}

#[test]
fn message_of_1_mib_relays_both_ways() {
    // Proves §7 (ours): the size limit leaves room for large signaling messages (1 MiB).
    let server = TestServer::start();
    let offer: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let (mut a, mut b, (s, r, data)) = meet(&server, "/large", &offer);
    assert!(s != 0 && r == 0);
    assert!(data == offer, "1 MiB offer altered ({} bytes)", data.len());
    let answer: Vec<u8> = offer.iter().rev().copied().collect();
    a.content(s, &answer, false);
    let (s2, r2, data) = b.recv_content();
    assert_eq!((s2, r2), (0, s));
    assert!(
        data == answer,
        "1 MiB answer altered ({} bytes)",
        data.len()
    );
}

#[test]
fn shutdown_sends_1001_and_stop_returns_ok() {
    // Proves the shutdown path: open peers get close 1001, `stop` returns Ok, and the port
    // stops accepting.
    let mut server = TestServer::start();
    let addr = server.addr;
    let (mut a, mut b) = member_and_joiner(&server, "/bye");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let result = server.stop();
        let _ = tx.send(result.map_err(|e| e.to_string()));
    });
    assert_eq!(close_after_notes(&mut a).code, 1001);
    assert_eq!(close_after_notes(&mut b).code, 1001);
    let stopped = rx.recv_timeout(WAIT).expect("stop did not return in time");
    assert_eq!(stopped, Ok(()));
    assert!(
        TcpStream::connect(addr).is_err(),
        "a stopped server still accepts"
    );
}

#[test]
fn client_close_is_answered_and_partner_told() {
    // Proves §6 through a client-initiated close: the server answers the close frame, ends
    // the connection, and the member gets the joiner's final empty content.
    let server = TestServer::start();
    let (mut a, mut b, (s, _, _)) = meet(&server, "/leave", b"offer");

    b.ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .expect("send close");
    loop {
        match b.ws.read() {
            Ok(WsMessage::Close(_)) => break,
            Ok(WsMessage::Binary(h)) if h.as_ref() == HEARTBEAT => {}
            other => panic!("expected the server's close answer, got {other:?}"),
        }
    }
    match b.ws.read() {
        Err(tungstenite::Error::ConnectionClosed) => {}
        other => panic!("expected the server to end the connection, got {other:?}"),
    }
    assert_eq!(a.recv_content(), (s, 0, Vec::new()));
}
