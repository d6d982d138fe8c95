//! A connection phase by phase, over a real loopback socket pair: the test writes the client's
//! bytes and reads the server's, and steps the connection by hand as the driver would.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream as StdStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::*;
use crate::http;

/// How long the kernel gets to move bytes, and the client to wait for them.
const WAIT: Duration = Duration::from_secs(5);
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// The key of RFC 6455 §1.3, and the accept value it gives.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
const KIB: usize = 1024;

fn limits() -> Limits {
    Limits {
        max_message_size: 2 << 20,
        max_send_queue: 4 << 20,
        rate_limit: 0,
    }
}

fn upgrade_request(path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// A masked client frame; `b0` holds FIN and the opcode. The server's encoder gives the
/// length form; the mask bit and key are added.
fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frames::encode(&mut out, Opcode::Binary, payload);
    let header = out.len() - payload.len();
    out[0] = b0;
    out[1] |= 0x80;
    out.splice(header..header, MASK);
    frames::unmask(&mut out[header + 4..], MASK);
    out
}

fn close_body(code: u16, reason: &str) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(reason.as_bytes());
    body
}

/// Bytes that tell their positions apart.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn msg(bytes: &[u8]) -> Ev {
    Ev::Message(bytes.to_vec())
}

fn opened() -> Ev {
    Ev::Opened(Some(b"room".to_vec()))
}

/// An [`Outcome`] that can be compared.
#[derive(Debug, PartialEq)]
enum Ev {
    Idle,
    Yield,
    Request(bool),
    Opened(Option<Vec<u8>>),
    Message(Vec<u8>),
    Ended(Option<CloseReason>),
    Failed(HandshakeFailure),
    Done,
}

impl Ev {
    fn of(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Idle => Self::Idle,
            Outcome::Yield => Self::Yield,
            Outcome::Request(r) => Self::Request(r.is_some()),
            Outcome::Opened(t) => Self::Opened(t.as_ref().ok().map(|t| t.key.clone())),
            Outcome::Message(m) => Self::Message(m.to_vec()),
            Outcome::Ended(r) => Self::Ended(*r),
            Outcome::Failed(f) => Self::Failed(*f),
            Outcome::Done => Self::Done,
        }
    }
}

/// A connection, the client at the other end of its socket, and the driver's state for it.
struct Peer {
    conn: Conn,
    client: StdStream,
    scratch: BytesMut,
    limits: Limits,
    turn: u64,
    tls_steps_left: u32,
    chunk: Box<[u8; READ_CHUNK]>,
}

impl Peer {
    fn new(limits: Limits) -> Self {
        Self::over(limits, Transport::plain)
    }

    /// A connection over the transport `make` puts on the server's end of the pair.
    fn over(limits: Limits, make: impl FnOnce(TcpStream) -> Transport) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = StdStream::connect(listener.local_addr().unwrap()).unwrap();
        client.set_read_timeout(Some(WAIT)).unwrap();
        client.set_nodelay(true).unwrap();
        let (server, addr) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let transport = make(TcpStream::from_std(server));
        let id = ConnId {
            slot: 1,
            generation: 1,
        };
        Self {
            conn: Conn::new(id, addr, transport, None, limits.rate_limit, 0),
            client,
            scratch: BytesMut::new(),
            limits,
            turn: 0,
            tls_steps_left: TLS_STEPS_PER_TURN,
            chunk: Box::new([0; READ_CHUNK]),
        }
    }

    /// A connection through its upgrade, the `101` read by the client.
    fn open(limits: Limits) -> Self {
        let mut p = Self::new(limits);
        p.write(&upgrade_request("/room"));
        let evs = p.until(|e| matches!(e, Ev::Opened(_)));
        assert_eq!(evs, [Ev::Request(true), opened()]);
        assert!(p.read_head().starts_with("HTTP/1.1 101 "));
        assert!(p.conn.is_open());
        p
    }

    /// One loop turn: a new share of work, then [`Peer::drive`].
    fn turn(&mut self) -> Vec<Ev> {
        self.turn += 1;
        self.tls_steps_left = TLS_STEPS_PER_TURN;
        self.drive()
    }

    /// What the driver does on a readable event within the current turn, and checks that the
    /// shared buffer is left empty, as `Turn::scratch` promises.
    fn drive(&mut self) -> Vec<Ev> {
        let evs = self.drive_unchecked();
        assert!(self.scratch.is_empty(), "scratch not empty after {evs:?}");
        evs
    }

    /// Steps until the connection waits, yields or is done, answering a request as the driver
    /// does; then flushes what it queued.
    fn drive_unchecked(&mut self) -> Vec<Ev> {
        self.conn.on_ready(true, true, false);
        let mut evs = Vec::new();
        loop {
            let mut turn = Turn {
                number: self.turn,
                now: 0,
                scratch: &mut self.scratch,
                limits: &self.limits,
                tls_steps_left: &mut self.tls_steps_left,
                chunk: &mut self.chunk,
            };
            let outcome = self.conn.step(&mut turn);
            evs.push(Ev::of(&outcome));
            match outcome {
                Outcome::Request(request) => {
                    let ctx = http::Context {
                        refusal: None,
                        stopping: false,
                        metrics_allowed: false,
                        origins: &crate::access::OriginPolicy::default(),
                        metrics: &String::new,
                        status: &String::new,
                    };
                    self.conn.answer(http::answer(request.as_ref(), &ctx));
                }
                Outcome::Idle | Outcome::Yield | Outcome::Done | Outcome::Failed(_) => break,
                _ => assert!(evs.len() < 10_000, "the connection never waits"),
            }
        }
        if self.conn.wants_flush() {
            self.conn.flush();
        }
        evs
    }

    /// Turns until an outcome matches (waiting a little when a turn found nothing); the
    /// outcomes, without the `Idle` and `Yield` that ended turns.
    fn until(&mut self, found: impl Fn(&Ev) -> bool) -> Vec<Ev> {
        let start = Instant::now();
        let mut all = Vec::new();
        loop {
            let evs = self.turn();
            let idle = evs == [Ev::Idle];
            let hit = evs.iter().any(&found);
            all.extend(
                evs.into_iter()
                    .filter(|e| !matches!(e, Ev::Idle | Ev::Yield)),
            );
            if hit {
                return all;
            }
            assert!(
                start.elapsed() < WAIT,
                "never reached; last: {:?}",
                all.last()
            );
            if idle {
                thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Turns until the WebSocket ends, its only outcome: the reason.
    fn ended(&mut self) -> Option<CloseReason> {
        match self.until(|e| matches!(e, Ev::Ended(_)))[..] {
            [Ev::Ended(reason)] => reason,
            ref other => panic!("{other:?}"),
        }
    }

    /// Waits until `n` bytes wait in the server's receive queue.
    fn wait_pending(&mut self, n: usize) {
        let mut buf = vec![0; n];
        let start = Instant::now();
        while self.conn.socket().peek(&mut buf).unwrap_or(0) < n {
            assert!(start.elapsed() < WAIT, "{n} bytes never arrived");
            thread::sleep(Duration::from_millis(1));
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        self.client.write_all(bytes).unwrap();
    }

    /// Writes from another thread, for more than the socket buffers hold.
    fn writer(&self, bytes: Vec<u8>) -> JoinHandle<()> {
        let mut client = self.client.try_clone().unwrap();
        thread::spawn(move || client.write_all(&bytes).unwrap())
    }

    /// The client reads an HTTP head.
    fn read_head(&mut self) -> String {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0];
            self.client.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        String::from_utf8(head).unwrap()
    }

    fn read_eof(&mut self) {
        assert_eq!(self.client.read(&mut [0; 16]).unwrap(), 0, "not the end");
    }

    /// The client reads a close frame: its code and reason.
    fn read_close(&mut self) -> (u16, String) {
        let (b0, body) = read_frame(&mut self.client);
        assert_eq!(b0, 0x88, "not a close frame");
        let reason = String::from_utf8(body[2..].to_vec()).unwrap();
        (u16::from_be_bytes([body[0], body[1]]), reason)
    }
}

/// A server frame, read by the client: its first byte and payload (servers never mask).
fn read_frame(client: &mut StdStream) -> (u8, Vec<u8>) {
    let mut h = [0; 2];
    client.read_exact(&mut h).unwrap();
    assert_eq!(h[1] & 0x80, 0, "a masked server frame");
    let ext = match h[1] {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mut be = [0; 8];
    client.read_exact(&mut be[8 - ext..]).unwrap();
    let len = if ext == 0 {
        u64::from(h[1])
    } else {
        u64::from_be_bytes(be)
    } as usize;
    let mut payload = vec![0; len];
    client.read_exact(&mut payload).unwrap();
    (h[0], payload)
}

// --- Request and Upgrading ---

// A head sent a byte at a time completes at its last byte, not before; the 101 then opens it.
#[test]
fn request_completes_only_at_its_last_byte() {
    let mut p = Peer::new(limits());
    let request = upgrade_request("/room");
    let (last, head) = request.split_last().unwrap();
    for &byte in head {
        p.write(&[byte]);
        p.wait_pending(1);
        assert_eq!(p.turn(), [Ev::Idle]);
        assert!(p.conn.is_upgrading());
    }
    p.write(&[*last]);
    p.wait_pending(1);
    let opened = [Ev::Request(true), opened(), Ev::Idle];
    assert_eq!(p.turn(), opened);
    assert!(p.conn.is_open() && !p.conn.is_upgrading());
    let answer = p.read_head();
    assert!(answer.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
    assert!(answer.contains(&format!("\r\nSec-WebSocket-Accept: {ACCEPT}\r\n")));
}

// Frames written with the request, in one write, are messages right after Opened.
#[test]
fn early_frames_are_delivered_after_opened() {
    let mut p = Peer::new(limits());
    let mut bytes = upgrade_request("/room");
    bytes.extend(frame(0x82, b"one"));
    bytes.extend(frame(0x82, b"two"));
    p.write(&bytes);
    p.wait_pending(bytes.len());
    let expected = [
        Ev::Request(true),
        opened(),
        msg(b"one"),
        msg(b"two"),
        Ev::Idle,
    ];
    assert_eq!(p.turn(), expected);
}

// A head over 8 KiB is a request too large (Request(None)): 431, then the write side is shut.
#[test]
fn a_head_over_8_kib_gets_431() {
    let mut p = Peer::new(limits());
    let mut head = b"GET /room HTTP/1.1\r\nX-Pad: ".to_vec();
    head.resize(9 * KIB, b'a');
    p.write(&head);
    assert_eq!(
        p.until(|e| matches!(e, Ev::Request(_))),
        [Ev::Request(false)]
    );
    assert!(!p.conn.is_upgrading() && !p.conn.is_open());
    assert!(p.read_head().starts_with("HTTP/1.1 431 "));
    let mut body = Vec::new();
    p.client.read_to_end(&mut body).unwrap(); // to the end: the server shut its side
    p.client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(p.until(|e| *e == Ev::Done), [Ev::Done]);
}

// The end of the stream before the head is complete fails the connection as ClosedEarly.
#[test]
fn end_of_stream_before_the_head_is_closed_early() {
    let mut p = Peer::new(limits());
    p.write(b"GET /room HTTP/1.1\r\nHost: x\r\n");
    p.client.shutdown(Shutdown::Write).unwrap();
    let evs = p.until(|e| matches!(e, Ev::Failed(_)));
    assert_eq!(evs, [Ev::Failed(HandshakeFailure::ClosedEarly)]);
    assert!(p.conn.is_done());
}

// --- Open ---

// A binary message in one frame and one in three fragments come out whole.
#[test]
fn binary_messages_whole_and_fragmented() {
    let mut p = Peer::open(limits());
    let mut bytes = frame(0x82, b"whole");
    bytes.extend(frame(0x02, b"fr"));
    bytes.extend(frame(0x00, b"agm"));
    bytes.extend(frame(0x80, b"ents"));
    p.write(&bytes);
    let evs = p.until(|e| *e == msg(b"fragments"));
    assert_eq!(evs, [msg(b"whole"), msg(b"fragments")]);
}

// A ping is answered with a pong carrying its payload, and is no message.
#[test]
fn a_ping_gets_a_pong_with_its_payload() {
    let mut p = Peer::open(limits());
    p.write(&frame(0x89, b"are you there"));
    p.wait_pending(6 + 13);
    assert_eq!(p.turn(), [Ev::Idle]);
    assert_eq!(read_frame(&mut p.client), (0x8A, b"are you there".to_vec()));
}

// A text frame ends the WebSocket with TextFrame, and a 4743 close frame goes out.
#[test]
fn a_text_frame_closes_with_4743() {
    let mut p = Peer::open(limits());
    p.write(&frame(0x81, b"hello"));
    assert_eq!(p.ended(), Some(CloseReason::TextFrame));
    let reason = CloseReason::TextFrame.reason().to_owned();
    assert_eq!(p.read_close(), (4743, reason));
    assert!(!p.conn.is_open());
}

// An unmasked frame is a protocol error: 1002, then the write side is shut.
#[test]
fn an_unmasked_frame_closes_with_1002() {
    let mut p = Peer::open(limits());
    p.write(&[0x82, 0x01, 0x05]);
    assert_eq!(p.ended(), Some(CloseReason::ProtocolError));
    assert_eq!(p.read_close().0, 1002);
    p.read_eof();
}

// A frame over max_message_size is refused with 1009 from its header alone.
#[test]
fn a_frame_over_the_size_limit_closes_with_1009_from_its_header() {
    let mut p = Peer::open(Limits {
        max_message_size: 1024,
        ..limits()
    });
    p.write(&frame(0x82, &vec![0; 1 << 20])[..14]); // the header alone
    assert_eq!(p.ended(), Some(CloseReason::MessageTooBig));
    assert_eq!(p.read_close().0, 1009);
    p.read_eof();
}

// More than MAX_FRAGMENTS frames in one message (empty continuations) close with 1008.
#[test]
fn too_many_fragments_close_with_1008() {
    let mut p = Peer::open(limits());
    let mut bytes = frame(0x02, b"a");
    for _ in 0..=MAX_FRAGMENTS {
        bytes.extend(frame(0x00, b""));
    }
    p.write(&bytes);
    p.wait_pending(bytes.len());
    let mut yields = 0;
    let evs = loop {
        let evs = p.turn();
        match evs.last() {
            Some(Ev::Yield) if evs.len() == 1 => yields += 1,
            _ => break evs,
        }
        assert!(yields < 100);
    };
    assert_eq!(
        evs,
        [Ev::Ended(Some(CloseReason::TooManyFragments)), Ev::Idle]
    );
    // The 1025th frame ends it: 8 full turns of FRAMES_PER_TURN before it.
    assert_eq!(yields, MAX_FRAGMENTS / FRAMES_PER_TURN);
    assert_eq!(p.read_close().0, 1008);
}

// --- Fair share ---

// Past FRAMES_PER_TURN frames a turn yields; the same turn gets no more; the next goes on.
#[test]
fn frames_are_shared_per_turn() {
    let mut p = Peer::open(limits());
    let bytes: Vec<u8> = (0..300u32).flat_map(|i| frame(0x82, &[i as u8])).collect();
    p.write(&bytes);
    p.wait_pending(bytes.len());
    let message = |i: u32| Ev::Message(vec![i as u8]);
    let share = FRAMES_PER_TURN;
    let mut first: Vec<Ev> = (0..share).map(message).collect();
    first.push(Ev::Yield);
    assert_eq!(p.turn(), first);
    assert_eq!(p.drive(), [Ev::Idle], "a second call in the same turn");
    let mut second: Vec<Ev> = (share..2 * share).map(message).collect();
    second.push(Ev::Yield);
    assert_eq!(p.turn(), second);
    let mut third: Vec<Ev> = (2 * share..300).map(message).collect();
    third.push(Ev::Idle);
    assert_eq!(p.turn(), third);
}

// A message of more than READ_BYTES_PER_TURN bytes takes more than one turn to read.
#[test]
fn bytes_are_shared_per_turn() {
    let mut p = Peer::open(limits());
    let payload = pattern(100 * KIB);
    let writer = p.writer(frame(0x82, &payload));
    p.wait_pending(READ_BYTES_PER_TURN + 1);
    assert_eq!(p.turn(), [Ev::Yield]);
    assert_eq!(p.drive(), [Ev::Idle], "a second call in the same turn");
    let evs = p.until(|e| matches!(e, Ev::Message(_)));
    writer.join().unwrap();
    assert!(evs.len() == 1 && evs[0] == Ev::Message(payload));
}

// --- Counting ---

// held().buffers grows with a message partly received and falls back once it is taken.
#[test]
fn buffers_count_a_partial_message() {
    let mut p = Peer::open(limits());
    let payload = pattern(1 << 20);
    let bytes = frame(0x82, &payload);
    let (first, rest) = bytes.split_at(200 * KIB);
    let before = p.conn.held().buffers;
    let writer = p.writer(first.to_vec());
    let start = Instant::now();
    while p.conn.held().buffers < 200 * KIB {
        let evs = p.turn();
        assert!(evs == [Ev::Idle] || evs == [Ev::Yield], "{evs:?}");
        assert!(start.elapsed() < WAIT, "held {:?}", p.conn.held());
        thread::sleep(Duration::from_millis(1));
    }
    writer.join().unwrap();
    assert_eq!(
        p.conn.report().1,
        p.conn.held(),
        "report gives what it holds"
    );
    let writer = p.writer(rest.to_vec());
    let evs = p.until(|e| matches!(e, Ev::Message(_)));
    writer.join().unwrap();
    assert!(evs.len() == 1 && evs[0] == Ev::Message(payload));
    // Taken: the read buffer is given back; only the send queue kept since the 101 is left.
    assert_eq!(p.conn.held().buffers, before);
}

// held().queued is exactly what send() queued, until a flush the socket took whole.
#[test]
fn queued_counts_the_frames_sent() {
    let mut p = Peer::open(limits());
    let messages = [pattern(10), pattern(200), pattern(5000)];
    for m in &messages {
        p.conn.send(m, &p.limits).unwrap();
    }
    let queued: usize = messages.iter().map(|m| frame_len(m.len())).sum();
    assert_eq!(p.conn.held().queued, queued);
    assert!(p.conn.wants_flush());
    assert_eq!(p.conn.flush(), Flush::Out);
    assert_eq!(p.conn.held().queued, 0);
    for m in messages {
        assert_eq!(read_frame(&mut p.client), (0x82, m));
    }
}

// An idle connection holds no buffer: once a flush took the queue whole, nothing is kept,
// whatever was sent before (the 101, a message, a heartbeat).
#[test]
fn an_emptied_send_queue_keeps_no_allocation() {
    let mut p = Peer::open(limits());
    assert_eq!(p.conn.held().buffers, 0, "open, nothing queued");
    p.conn.send(&pattern(200), &p.limits).unwrap();
    assert!(p.conn.held().buffers >= frame_len(200));
    assert_eq!(p.conn.flush(), Flush::Out);
    assert_eq!(p.conn.held(), Held::default());
    assert_eq!(read_frame(&mut p.client), (0x82, pattern(200)));
}

// A peer that does not read: SendQueueFull, the queue given up, the stream whole up to 1008.
#[test]
fn a_peer_that_does_not_read_is_closed_with_1008() {
    let mut p = Peer::open(Limits {
        max_send_queue: 64 * KIB,
        ..limits()
    });
    let message = |k: usize| vec![k as u8; 16 * KIB];
    let mut sent = 0;
    let refused = loop {
        assert!(sent < 100_000, "the queue never filled");
        match p.conn.send(&message(sent), &p.limits) {
            Ok(()) => sent += 1,
            Err(reason) => break reason,
        }
        p.conn.flush();
    };
    assert_eq!(refused, CloseReason::SendQueueFull);
    assert!(!p.conn.is_open());
    let close = frame_len(2 + CloseReason::SendQueueFull.reason().len());
    let held = p.conn.held();
    assert!(held.queued <= frame_len(16 * KIB) + close, "{held:?}");
    assert!(held.queued >= close, "{held:?}");
    assert_eq!(
        p.conn.send(b"late", &p.limits),
        Ok(()),
        "ignored once closed"
    );
    // The client reads every frame up to the close, then the end; the server flushes meanwhile.
    let mut client = p.client.try_clone().unwrap();
    let reader = thread::spawn(move || {
        let mut k = 0;
        loop {
            match read_frame(&mut client) {
                (0x82, payload) => assert_eq!(payload, message(k), "frame {k}"),
                (0x88, body) => break (k, u16::from_be_bytes([body[0], body[1]])),
                (b0, _) => panic!("frame {k}: {b0:#x}"),
            }
            k += 1;
        }
    });
    let start = Instant::now();
    while !p.conn.is_lingering() {
        assert!(start.elapsed() < WAIT, "never flushed");
        p.conn.flush();
        thread::sleep(Duration::from_millis(1));
    }
    let (received, code) = reader.join().unwrap();
    assert_eq!(code, 1008);
    assert!(
        received > 0 && received < sent,
        "{received} of {sent}: the queue given up"
    );
    p.read_eof();
}

// abort(MemoryBudget) gives up a partial message and queues a 1008 close the client reads.
#[test]
fn abort_releases_the_partial_message() {
    let mut p = Peer::open(limits());
    let writer = p.writer(frame(0x02, &pattern(100 * KIB)));
    let start = Instant::now();
    while p.conn.partial.as_ref().map_or(0, Vec::len) < 100 * KIB {
        let evs = p.turn();
        assert!(evs == [Ev::Idle] || evs == [Ev::Yield], "{evs:?}");
        assert!(start.elapsed() < WAIT, "held {:?}", p.conn.held());
        thread::sleep(Duration::from_millis(1));
    }
    writer.join().unwrap();
    assert!(p.conn.held().buffers >= 100 * KIB);
    assert!(p.conn.abort(CloseReason::MemoryBudget));
    assert!(!p.conn.abort(CloseReason::MemoryBudget), "only once");
    let held = p.conn.held();
    let close = frame_len(2 + CloseReason::MemoryBudget.reason().len());
    assert_eq!(held.queued, close);
    assert!(held.buffers < KIB, "{held:?}");
    assert_eq!(p.conn.flush(), Flush::Out);
    assert!(p.conn.is_lingering());
    let reason = CloseReason::MemoryBudget.reason().to_owned();
    assert_eq!(p.read_close(), (1008, reason));
    p.read_eof();
}

// --- Close ---

// The peer's close (1000, "bye") is echoed byte for byte, then the write side is shut.
#[test]
fn the_peer_close_is_echoed_then_the_write_side_shut() {
    let mut p = Peer::open(limits());
    p.write(&frame(0x88, &close_body(1000, "bye")));
    assert_eq!(p.ended(), None);
    assert!(p.conn.is_lingering());
    let mut echo = [0; 7];
    p.client.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"\x88\x05\x03\xe8bye");
    p.read_eof();
    p.client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(p.until(|e| *e == Ev::Done), [Ev::Done]);
    assert!(p.conn.is_done());
}

// close() queues our close; Closing drops data and pings until the peer's close: Done.
#[test]
fn our_close_drops_data_until_the_peer_close() {
    let mut p = Peer::open(limits());
    assert!(p.conn.close(CloseReason::Shutdown));
    assert!(!p.conn.close(CloseReason::Shutdown), "only once");
    assert_eq!(p.conn.flush(), Flush::Out);
    assert_eq!(p.read_close().0, 1001);
    let mut bytes = frame(0x82, b"late");
    bytes.extend(frame(0x89, b"ping"));
    p.write(&bytes);
    p.wait_pending(bytes.len());
    assert_eq!(p.turn(), [Ev::Idle]);
    assert_eq!(p.conn.held().queued, 0, "no pong");
    // The peer's close ends the handshake: the server shuts its side first (§7.1.1)...
    p.write(&frame(0x88, &close_body(1001, "")));
    p.wait_pending(8);
    assert_eq!(p.turn(), [Ev::Idle]);
    assert!(p.conn.is_lingering());
    let mut rest = Vec::new();
    p.client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "nothing after our close: {rest:?}");
    // ...and is done once the peer hangs up too.
    p.client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(p.until(|e| *e == Ev::Done), [Ev::Done]);
}

// --- Deadlines ---

// The handshake deadline drops a connection not opened yet, and leaves an open one alone.
#[test]
fn the_handshake_deadline_drops_only_unopened_connections() {
    let mut p = Peer::new(limits());
    p.write(b"GET /room HTTP/1.1\r\n");
    assert_eq!(p.turn(), [Ev::Idle]);
    assert_eq!(p.conn.on_deadline(Deadline::Handshake), Some(true));
    assert!(p.conn.is_done());
    assert_eq!(p.conn.on_deadline(Deadline::Handshake), None, "only once");
    let mut p = Peer::open(limits());
    assert_eq!(p.conn.on_deadline(Deadline::Handshake), None);
    assert_eq!(p.conn.on_deadline(Deadline::Close), None, "not closing");
    assert!(p.conn.is_open());
}

// The close deadline drops a connection whose close handshake is not done.
#[test]
fn the_close_deadline_drops_a_closing_connection() {
    let mut p = Peer::open(limits());
    assert!(p.conn.close(CloseReason::Heartbeat));
    assert_eq!(p.conn.on_deadline(Deadline::Handshake), None);
    assert_eq!(p.conn.on_deadline(Deadline::Close), Some(false));
    assert!(p.conn.is_done());
    assert_eq!(p.turn(), [Ev::Done]);
}

// --- Bugs ---

// Bytes behind a peer's close, once the turn's byte share is spent, never reach another conn.
#[test]
fn bytes_behind_a_close_frame_do_not_reach_another_connection() {
    let mut a = Peer::open(limits());
    let mut b = Peer::open(limits());
    let close = frame(0x88, &close_body(1000, "bye"));
    let injected = frame(0x82, b"INJECTED");
    // A first message fills the share so that the close frame is parsed after its last read.
    let fill = READ_BYTES_PER_TURN - close.len() - injected.len() - 8;
    let mut bytes = frame(0x82, &pattern(fill));
    bytes.extend(close);
    bytes.extend(injected);
    assert_eq!(bytes.len(), READ_BYTES_PER_TURN);
    let writer = a.writer(bytes);
    a.wait_pending(READ_BYTES_PER_TURN);
    writer.join().unwrap();
    a.turn += 1;
    let evs = a.drive_unchecked();
    assert_eq!(
        evs,
        [Ev::Message(pattern(fill)), Ev::Ended(None), Ev::Yield]
    );
    // The driver shares one buffer between connections: b is stepped with what a left.
    std::mem::swap(&mut a.scratch, &mut b.scratch);
    b.turn += 1;
    assert_eq!(b.drive_unchecked(), [Ev::Idle], "b got a's bytes");
    assert!(b.scratch.is_empty() && a.scratch.is_empty());
}

// --- Found in review ---

// A flush the socket could not take whole waits for the writable edge: the connection is not
// listed for another write (a wasted system call a turn) until the socket says it has room.
#[test]
fn a_full_socket_waits_for_its_writable_edge() {
    let mut p = Peer::open(Limits {
        max_send_queue: 64 << 20,
        ..limits()
    });
    let big = vec![7u8; 64 * KIB];
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < WAIT, "the socket never filled");
        p.conn.send(&big, &p.limits).unwrap();
        if p.conn.flush() == Flush::Waiting {
            break;
        }
    }
    assert!(!p.conn.wants_flush(), "blocked until writable");
    p.conn.send(b"more", &p.limits).unwrap();
    assert!(!p.conn.wants_flush(), "a send does not unblock it");
    p.conn.on_ready(false, true, false);
    assert!(p.conn.wants_flush(), "the writable edge does");
}

// What is left of the read buffer after a large message is kept in a buffer of its own size:
// no allocation hides behind a small count.
#[test]
fn bytes_left_after_a_large_message_hold_no_hidden_allocation() {
    let mut p = Peer::open(limits());
    let payload = pattern(KIB * KIB);
    let mut bytes = frame(0x82, &payload);
    bytes.extend_from_slice(&frame(0x82, b"next")[..3]);
    let writer = p.writer(bytes);
    let evs = p.until(|e| matches!(e, Ev::Message(_)));
    writer.join().unwrap();
    assert!(evs.len() == 1 && evs[0] == Ev::Message(payload));
    while p.turn() != [Ev::Idle] {}
    assert_eq!(p.conn.input.len(), 3, "the start of the next frame waits");
    assert!(p.conn.held().buffers < 16 * KIB, "{:?}", p.conn.held());
    // A view of the 1 MiB allocation could take it back without allocating.
    assert!(!p.conn.input.try_reclaim(512 * KIB), "a hidden allocation");
}

// A peer that half-closes while its last bytes are still queued gets them: the end of its
// stream does not cut what the server still had to say.
#[test]
fn a_half_closing_peer_still_gets_what_was_queued() {
    let mut p = Peer::open(Limits {
        max_send_queue: 64 << 20,
        ..limits()
    });
    // One frame larger than the socket buffers can hold: its rest stays queued.
    p.conn.send(&vec![9u8; 32 << 20], &p.limits).unwrap();
    assert_eq!(p.conn.flush(), Flush::Waiting);
    assert!(p.conn.abort(CloseReason::SendQueueFull));
    p.client.shutdown(Shutdown::Write).unwrap();
    thread::sleep(Duration::from_millis(20));
    assert_eq!(p.turn(), [Ev::Idle], "still sending");
    assert!(!p.conn.is_done());
    // The client reads all of it, and the close at the end.
    let mut client = p.client.try_clone().unwrap();
    let reader = thread::spawn(move || loop {
        match read_frame(&mut client) {
            (0x82, _) => {}
            (0x88, body) => break u16::from_be_bytes([body[0], body[1]]),
            (b0, _) => panic!("{b0:#x}"),
        }
    });
    let start = Instant::now();
    while !p.conn.is_done() {
        assert!(start.elapsed() < WAIT, "never done");
        p.conn.on_ready(true, true, true);
        p.turn();
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(reader.join().unwrap(), 1008);
}

// Only an open connection can be aborted: one that is closing already queued its close.
#[test]
fn abort_is_for_open_connections_only() {
    let mut p = Peer::open(limits());
    assert!(p.conn.close(CloseReason::Shutdown));
    assert!(!p.conn.abort(CloseReason::MemoryBudget));
    assert_eq!(p.conn.shed(), Shed::Dropped, "the budget drops it instead");
    assert!(p.conn.is_done());
    assert_eq!(p.conn.shed(), Shed::Nothing);
}

// A turn whose TLS handshake steps are spent does not start another: the connection yields
// without reading its ClientHello, and takes it in a later turn, where it costs one step.
#[test]
fn a_tls_handshake_waits_for_a_turn_with_steps_left() {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use std::sync::Arc;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = CertificateDer::from(certified.cert.der().to_vec());
    let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = rustls::ClientConnection::new(Arc::new(client_config), name).unwrap();

    let server_config = Arc::new(server_config);
    let mut p = Peer::over(limits(), |s| Transport::tls(s, server_config).unwrap());
    tls.write_tls(&mut p.client).unwrap();
    p.tls_steps_left = 0;
    // Wait until the ClientHello is there to read: a yield must not be for want of bytes.
    thread::sleep(Duration::from_millis(100));
    assert_eq!(p.drive(), [Ev::Yield]);
    p.client.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    assert!(
        matches!(p.client.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the server answered a ClientHello it had no step for"
    );
    p.client.set_nonblocking(false).unwrap();
    // The next turn has steps: the handshake goes on, at the price of one.
    assert_eq!(p.turn(), [Ev::Idle]);
    assert_eq!(p.tls_steps_left, TLS_STEPS_PER_TURN - 1);
    let n = tls.read_tls(&mut p.client).unwrap();
    assert!(n > 0);
    tls.process_new_packets().unwrap();
    assert!(
        !tls.is_handshaking(),
        "the server's flight completes the client's handshake"
    );
}
