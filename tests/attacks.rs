//! Attacks over real sockets: each test plays a hostile client with a raw `TcpStream` (the
//! upgrade and the masked frames written by hand) and checks that the server answers it with
//! a clear close while a well-behaved pair on the same server keeps relaying.
//!
//! No wall-clock threshold is asserted: fairness is shown as liveness (round trips the good
//! pair finished while the attack was still running), and the timings are printed for a
//! `--nocapture` run. Every thread stops by itself and every read has a timeout.

mod common;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use common::binary::Binary;
use common::*;
use prost::Message as _;
use sigver::proto::{GroupData, Message, Type};
use tungstenite::Message as WsMessage;

/// How long each flood runs while the good pair relays.
const ATTACK: Duration = Duration::from_secs(3);
/// Round trips the good pair must finish while an attack of `ATTACK` runs.
const MIN_ROUNDS: usize = 5;

const FIN: u8 = 0x80;
const OP_CONTINUATION: u8 = 0x0;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

// Raw frames and a raw client

/// The header of a client frame (RFC 6455 §5.2): `first` is FIN and opcode, the payload is
/// masked with a zero key, so it goes on the wire as is.
fn header(first: u8, len: usize) -> Vec<u8> {
    let mut h = match len {
        0..=125 => vec![first, 0x80 | len as u8],
        126..=65535 => [&[first, 0x80 | 126][..], &(len as u16).to_be_bytes()].concat(),
        _ => [&[first, 0x80 | 127][..], &(len as u64).to_be_bytes()].concat(),
    };
    h.extend_from_slice(&[0; 4]);
    h
}

/// A whole client frame.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = header(first, payload.len());
    f.extend_from_slice(payload);
    f
}

/// `connect {id, members}` as one binary frame.
fn connect_frame(id: u32, members: Vec<u32>) -> Vec<u8> {
    let r#type = Some(Type::Connect(GroupData { id, members }));
    frame(FIN | OP_BINARY, &Message { r#type }.encode_to_vec())
}

/// An upgrade request for `path`, with `extra` header lines, ending with the empty line.
fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Reads an HTTP answer head byte by byte (so no frame after it is consumed), up to the end
/// of the stream at most.
fn read_head(s: &mut TcpStream) -> io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte)? == 1 {
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// A read timeout: `WouldBlock` on Linux, `TimedOut` elsewhere.
fn timed_out(e: &io::Error) -> bool {
    let kind = e.kind();
    kind == io::ErrorKind::WouldBlock || kind == io::ErrorKind::TimedOut
}

/// A close with this code and reason, to compare with what was received.
fn close(code: u16, reason: &str) -> Closed {
    let reason = reason.to_string();
    Closed { code, reason }
}

/// The code and reason of a close frame's payload (1005: none).
fn closed(payload: &[u8]) -> Closed {
    let Some(([a, b], reason)) = payload.split_first_chunk() else {
        return close(1005, "");
    };
    close(
        u16::from_be_bytes([*a, *b]),
        &String::from_utf8_lossy(reason),
    )
}

/// What the server answered to a `connect`.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Connected(bool),
    Closed(Closed),
    /// Anything else: the stream ended, failed, timed out, or an unexpected frame.
    Other(String),
}

/// How many of each: a short summary of many answers, for messages.
fn tally<T: Debug>(items: impl IntoIterator<Item = T>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for item in items {
        *counts.entry(format!("{item:?}")).or_insert(0) += 1;
    }
    counts
}

/// One read from a raw client: a frame (opcode, payload), the end of the stream, or an error.
type Read1 = io::Result<Option<(u8, Vec<u8>)>>;

/// A short description of what a read gave, for failure messages.
fn describe(read: &Read1) -> String {
    match read {
        Ok(Some((OP_CLOSE, p))) => format!("{:?}", closed(p)),
        Ok(Some((op, p))) => format!("frame {op:#x} {:02x?}", &p[..p.len().min(16)]),
        Ok(None) => "the end of the stream".into(),
        Err(e) => format!("error: {e}"),
    }
}

/// A hand-driven WebSocket client: the socket, and bytes read but not parsed into frames yet.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    /// Connects and upgrades on `path`; reads time out after `timeout`.
    fn open(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<Raw> {
        let mut s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(WAIT))?;
        s.write_all(upgrade_request(path, "").as_bytes())?;
        let head = read_head(&mut s)?;
        if !head.starts_with("HTTP/1.1 101 ") {
            return Err(io::Error::other(format!("upgrade refused: {head:?}")));
        }
        Ok(Raw { s, buf: Vec::new() })
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.s.write_all(bytes)
    }

    /// Sends `frame` (a `connect`) and reads the answer.
    fn ask(&mut self, frame: &[u8]) -> Answer {
        let sent = self.send(frame);
        sent.map_or_else(|e| Answer::Other(format!("send: {e}")), |()| self.answer())
    }

    /// Sends `connect {id, members}` and reads the answer.
    fn join(&mut self, id: u32, members: &[u32]) -> Answer {
        self.ask(&connect_frame(id, members.to_vec()))
    }

    /// The next server frame (servers never mask); `None` at the end of the stream.
    fn next_frame(&mut self) -> Read1 {
        loop {
            if let Some((used, op, payload)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return Ok(Some((op, payload)));
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.s.read(&mut chunk)? {
                0 => return Ok(None),
                n => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The answer to a `connect`, skipping heartbeats and control frames.
    fn answer(&mut self) -> Answer {
        loop {
            let read = self.next_frame();
            match &read {
                Ok(Some((OP_BINARY, p))) if p[..] == [0x08, 0x01] => {}
                Ok(Some((OP_BINARY, p))) if p.len() == 2 && p[0] == 0x20 => {
                    return Answer::Connected(p[1] == 1)
                }
                Ok(Some((OP_CLOSE, p))) => return Answer::Closed(closed(p)),
                Ok(Some((OP_PING | OP_PONG, _))) => {}
                _ => return Answer::Other(describe(&read)),
            }
        }
    }

    /// Reads until the server's close frame, skipping everything else. `None` when the stream
    /// ends or fails, `until` passes, or `stop` is set first.
    fn wait_close(&mut self, until: Instant, stop: &AtomicBool) -> Option<Closed> {
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || stop.load(Ordering::Relaxed) {
                return None;
            }
            let step = left.min(Duration::from_millis(100));
            self.s.set_read_timeout(Some(step)).ok()?;
            match self.next_frame() {
                Ok(Some((OP_CLOSE, p))) => return Some(closed(&p)),
                Ok(Some(_)) => {}
                Err(e) if timed_out(&e) => {}
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

/// Parses one unmasked frame at the start of `buf`: (bytes used, opcode, payload).
fn parse_frame(buf: &[u8]) -> Option<(usize, u8, Vec<u8>)> {
    let big_endian = |b: &[u8]| b.iter().fold(0, |n, &b| n << 8 | usize::from(b));
    let (len, at) = match *buf.get(1)? & 0x7f {
        126 => (big_endian(buf.get(2..4)?), 4),
        127 => (big_endian(buf.get(2..10)?), 10),
        n => (usize::from(n), 2),
    };
    let payload = buf.get(at..at + len)?;
    Some((at + len, buf[0] & 0x0f, payload.to_vec()))
}

// The good pair, and attacks run alongside it

/// Runs `attacker(i)` on `n` threads while `meanwhile` runs on this one; returns both results.
fn alongside<T: Send, R>(
    n: usize,
    attacker: impl Fn(usize) -> T + Sync,
    meanwhile: impl FnOnce() -> R,
) -> (R, Vec<T>) {
    thread::scope(|scope| {
        let attacker = &attacker;
        let threads: Vec<_> = (0..n).map(|i| scope.spawn(move || attacker(i))).collect();
        let r = meanwhile();
        let results = threads
            .into_iter()
            .map(|t| t.join().expect("an attacker panicked"));
        (r, results.collect())
    })
}

/// The next content's data, skipping heartbeats; `None` on anything else (timeout included).
fn recv_data(p: &mut Peer) -> Option<Vec<u8>> {
    loop {
        match p.ws.read() {
            Ok(WsMessage::Binary(b)) => match Message::decode(&b[..]).ok()?.r#type? {
                Type::Content(c) => return Some(c.data.to_vec()),
                Type::Heartbeat(_) => {}
                _ => return None,
            },
            Ok(WsMessage::Ping(_) | WsMessage::Pong(_)) => {}
            _ => return None,
        }
    }
}

/// One content each way through `pair`; false if one did not arrive within `WAIT`.
fn round_trip(pair: &mut Pair, i: usize) -> bool {
    let data = format!("round {i}").into_bytes();
    pair.joiner.content(0, &data, false);
    if recv_data(&mut pair.member).as_ref() != Some(&data) {
        return false;
    }
    pair.member.content(pair.s, &data, false);
    recv_data(&mut pair.joiner) == Some(data)
}

/// What the good pair achieved while an attack ran.
#[derive(Debug, Default)]
struct Liveness {
    /// Round trips finished before the attack ended.
    rounds: usize,
    slowest: Duration,
    /// A round trip did not complete within `WAIT`.
    failed: bool,
}

/// Relays round trips through `pair` while `attacking()` holds.
fn relay_while(pair: &mut Pair, attacking: impl Fn() -> bool) -> Liveness {
    let mut live = Liveness::default();
    while attacking() {
        let start = Instant::now();
        live.failed = !round_trip(pair, live.rounds);
        if live.failed {
            break;
        }
        live.slowest = live.slowest.max(start.elapsed());
        live.rounds += usize::from(attacking());
        // A good pair's pace: far under the rate limit (1000 messages a second) however fast
        // the machine relays.
        thread::sleep(Duration::from_millis(2));
    }
    live
}

/// Runs `attack(i, until)` on `n` threads for `ATTACK` while a good pair relays; returns what
/// the pair achieved during the attack and what each attacker returned.
fn during_attack<T: Send>(
    server: &TestServer,
    name: &str,
    n: usize,
    attack: impl Fn(usize, Instant) -> T + Sync,
) -> (Liveness, Vec<T>) {
    let mut pair = Pair::new(server, "/good");
    let until = Instant::now() + ATTACK;
    let (live, results) = alongside(
        n,
        |i| attack(i, until),
        || relay_while(&mut pair, || Instant::now() < until),
    );
    eprintln!("{name}: the good pair during the {ATTACK:?} attack: {live:?}");
    (live, results)
}

/// What one flooding thread did.
#[derive(Default)]
struct Flood {
    connections: usize,
    written: usize,
    closes: Vec<Closed>,
}

impl Debug for Flood {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (n, written) = (self.connections, self.written);
        write!(
            f,
            "{written} bytes on {n} connections, closes {:?}",
            tally(&self.closes)
        )
    }
}

/// Until `until`: joins on `path`, writes `first` then `chunk` over and over (whole frames,
/// so a partial write never breaks the framing) while another thread reads and discards
/// what the server sends, until the server closes; then again on a new connection.
fn flood(addr: SocketAddr, path: &str, until: Instant, first: &[u8], chunk: &[u8]) -> Flood {
    let mut flood = Flood::default();
    while Instant::now() < until {
        let Ok(mut raw) = Raw::open(addr, path, Duration::from_secs(1)) else {
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        if !matches!(raw.join(1, &[]), Answer::Connected(_)) {
            continue;
        }
        flood.connections += 1;
        let stop = Arc::new(AtomicBool::new(false));
        let (s, reader_stop) = (raw.s.try_clone().unwrap(), Arc::clone(&stop));
        let mut reader = Raw { s, buf: Vec::new() };
        let reader = thread::spawn(move || reader.wait_close(until + WAIT, &reader_stop));
        let short = Some(Duration::from_millis(100));
        raw.s.set_write_timeout(short).unwrap();
        let _ = raw.send(first);
        let mut at = 0;
        while Instant::now() < until && !reader.is_finished() {
            match raw.s.write(&chunk[at..]) {
                Ok(n) => {
                    flood.written += n;
                    at = (at + n) % chunk.len();
                }
                Err(e) if timed_out(&e) => {}
                Err(_) => break,
            }
        }
        stop.store(true, Ordering::Relaxed);
        let _ = raw.s.shutdown(Shutdown::Both);
        flood.closes.extend(reader.join().unwrap());
    }
    flood
}

/// The `sigver_buffered_bytes` gauge, as `GET /metrics` shows it.
fn buffered_bytes(addr: SocketAddr) -> String {
    let answer = raw_exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let text = String::from_utf8_lossy(&answer);
    let line = text
        .lines()
        .find(|l| l.starts_with("sigver_buffered_bytes "));
    line.unwrap_or("sigver_buffered_bytes missing").to_string()
}

// 1. Floods of frames

/// An endless message of empty continuation frames is closed 1008 at 1024 frames, and 4
/// attackers flooding at once cannot starve a good pair.
#[test]
fn a_flood_of_empty_continuation_frames_is_capped_and_others_keep_relaying() {
    let server = TestServer::start();
    let first = frame(OP_BINARY, &[0]); // FIN=0: a message begins
    let empty = frame(OP_CONTINUATION, &[]); // FIN=0, 6 bytes
    let chunk = empty.repeat((64 << 10) / empty.len());
    let (live, floods) = during_attack(&server, "frame flood", 4, |i, until| {
        flood(server.addr, &format!("/flood{i}"), until, &first, &chunk)
    });
    eprintln!("frame flood: {floods:#?}");
    let capped = |c: &Closed| *c == close(1008, "Too many frames in one message");
    assert!(
        floods.iter().all(|f| f.closes.iter().any(capped)),
        "every attacker must get 1008 \"Too many frames in one message\"; got {floods:?}"
    );
    assert!(!live.failed && live.rounds >= MIN_ROUNDS, "{live:?}");
}

/// A flood of pings (rate limit off), whose pongs are read, cannot starve a good pair.
#[test]
fn a_ping_flood_does_not_starve_others() {
    let server = TestServer::with(|c| c.rate_limit = 0);
    let chunk = frame(FIN | OP_PING, &[b'p'; 125]).repeat((64 << 10) / 131);
    let (live, floods) = during_attack(&server, "ping flood", 4, |i, until| {
        flood(server.addr, &format!("/pings{i}"), until, &[], &chunk)
    });
    eprintln!("ping flood: {floods:#?}");
    assert!(!live.failed && live.rounds >= MIN_ROUNDS, "{live:?}");
}

// 2. Partial messages and the memory budget

/// 30 attackers each join, send `attack` (most of a message) and stall. With a 16 MiB budget
/// at least 22 of them must be closed 1008 within 10 s, and the good pair must still relay.
fn partial_messages_against_the_budget(name: &str, attack: &[u8]) {
    let server = TestServer::with(|c| c.memory_budget = 16 << 20);
    let mut good = Pair::new(&server, "/good");
    let before = buffered_bytes(server.addr);
    let stop = AtomicBool::new(false);
    let deadline = Instant::now() + Duration::from_secs(10);
    let (tx, rx) = mpsc::channel();
    let attacker = |i| {
        let Ok(mut raw) = Raw::open(server.addr, &format!("/partial{i}"), WAIT) else {
            return;
        };
        if raw.join(1, &[]) == Answer::Connected(true) {
            let left = deadline.saturating_duration_since(Instant::now());
            let left = left.max(Duration::from_millis(1));
            raw.s.set_write_timeout(Some(left)).unwrap();
            // Closed mid-way, the rest cannot be written: the close is read below.
            let _ = raw.send(attack);
            let _ = tx.send(raw.wait_close(deadline, &stop));
        }
    };
    let budget = |c: &Option<Closed>| *c == Some(close(1008, "Server memory budget exceeded"));
    alongside(30, attacker, || {
        let mut closes = Vec::new();
        while closes.len() < 30 && closes.iter().filter(|c| budget(c)).count() < 22 {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(c) => closes.push(c),
                Err(_) => break,
            }
        }
        let after = buffered_bytes(server.addr);
        let n = closes.iter().filter(|c| budget(c)).count();
        eprintln!("{name}: {n} closed for the budget; before: {before}; after: {after}");
        assert!(
            n >= 22,
            "at least 22 of 30 attackers must get 1008 \"Server memory budget exceeded\" \
             within 10 s; {n} did, answers so far: {:?}",
            tally(&closes)
        );
        good.relay(5);
        stop.store(true, Ordering::Relaxed);
    });
}

/// Frames announcing 2,000,000 bytes, sent 1,900,000 and stalled, count against the memory
/// budget: past 16 MiB the attackers are closed 1008.
#[test]
fn stalled_partial_frames_count_against_the_memory_budget() {
    let mut attack = header(FIN | OP_BINARY, 2_000_000);
    attack.resize(attack.len() + 1_900_000, 0);
    partial_messages_against_the_budget("partial frames", &attack);
}

/// Fragmented messages of 1.9 MB left unfinished count against the memory budget: past
/// 16 MiB the attackers are closed 1008.
#[test]
fn stalled_fragmented_messages_count_against_the_memory_budget() {
    let piece = vec![0u8; 64 << 10];
    let mut attack = frame(OP_BINARY, &piece);
    for _ in 1..29 {
        attack.extend(frame(OP_CONTINUATION, &piece)); // 29 pieces: 1,900,544 bytes
    }
    partial_messages_against_the_budget("fragmented messages", &attack);
}

// 3. Bounded connect

/// A `connect` listing 8192 member ids is served; one listing 8193 is closed 4743.
#[test]
fn a_connect_with_more_than_8192_members_closes_4743() {
    let server = TestServer::start();
    let mut raw = Raw::open(server.addr, "/most", WAIT).unwrap();
    let most: Vec<u32> = (1..=8192).collect();
    assert_eq!(raw.join(1, &most), Answer::Connected(true), "8192 ids");
    let mut raw = Raw::open(server.addr, "/over", WAIT).unwrap();
    let over: Vec<u32> = (1..=8193).collect();
    let refused = Answer::Closed(close(4743, "Too many members in connect"));
    assert_eq!(raw.join(1, &over), refused, "8193 ids");
}

/// 16 attackers sending connects of about 1.9 MB of member ids get 4743, and meanwhile a
/// good pair keeps relaying.
#[test]
fn huge_connects_are_refused_and_others_keep_relaying() {
    let server = TestServer::start();
    // Each joiner is checked against the members of this group.
    let mut founder = server.peer("/crowd");
    assert!(founder.join(1, &[]));
    // Five-byte varints: 380,000 of them take 1.9 MB, under the 2 MiB message limit.
    let big = connect_frame(7, (0..380_000).map(|i| 0xF000_0000 + i).collect());
    let (live, answers) = during_attack(&server, "huge connects", 16, |_, until| {
        let mut answers = Vec::new();
        while Instant::now() < until {
            if let Ok(mut raw) = Raw::open(server.addr, "/crowd", WAIT) {
                answers.push(raw.ask(&big));
            }
        }
        answers
    });
    let answers: Vec<Answer> = answers.into_iter().flatten().collect();
    let refused = Answer::Closed(close(4743, "Too many members in connect"));
    let n = answers.iter().filter(|a| **a == refused).count();
    let served = answers.iter().filter(|a| matches!(a, Answer::Connected(_)));
    let served = served.count();
    let answers = tally(&answers);
    eprintln!("huge connects: {answers:?}");
    assert!(
        n > 0 && served == 0,
        "every huge connect must be closed 4743 \"Too many members in connect\"; {answers:?}"
    );
    assert!(!live.failed && live.rounds >= MIN_ROUNDS, "{live:?}");
}

// 4. Ping bursts from a client that reads

/// A server with the rate limit off and a 256 KiB send queue; a raw member on `/pings` and a
/// joiner bound to it.
fn ping_member() -> (TestServer, Raw, Peer) {
    let server = TestServer::with(|c| {
        c.rate_limit = 0;
        c.max_send_queue = 256 << 10;
    });
    let mut member = Raw::open(server.addr, "/pings", WAIT).unwrap();
    assert_eq!(member.join(1, &[]), Answer::Connected(true));
    let mut joiner = server.peer("/pings");
    assert!(!joiner.join(2, &[]));
    (server, member, joiner)
}

/// Reads pongs until the one that echoes `last`; returns how many, or the read that was not
/// a pong.
fn pongs_until(member: &mut Raw, last: &[u8]) -> Result<usize, Read1> {
    for n in 1.. {
        match member.next_frame() {
            Ok(Some((OP_PONG, p))) if p == last => return Ok(n),
            Ok(Some((OP_PONG, _))) => {}
            other => return Err(other),
        }
    }
    unreachable!()
}

/// The joiner's last content reaches the member, and nothing stays queued on the server.
fn final_content_relays(server: &TestServer, member: &mut Raw, joiner: &mut Peer) {
    joiner.content(0, b"final", false);
    let read = member.next_frame();
    let content = match &read {
        Ok(Some((OP_BINARY, p))) => Message::decode(&p[..]).ok().and_then(|m| m.r#type),
        _ => None,
    };
    let Some(Type::Content(c)) = content else {
        panic!("expected the final content, got {}", describe(&read));
    };
    assert_eq!(c.data, &b"final"[..]);
    assert!(
        eventually(|| server.stats().queued_bytes == 0),
        "queued bytes stay at {} for a client that read everything",
        server.stats().queued_bytes
    );
}

/// A member that sends bursts of 100 pings and reads every pong is never closed, and its
/// send queue is empty once it has read everything.
#[test]
fn a_client_reading_its_ping_bursts_is_never_closed() {
    let (server, mut member, mut joiner) = ping_member();
    let ping = frame(FIN | OP_PING, &[b'p'; 125]);
    let mut pongs = 0;
    for round in 0..300 {
        // A payload of its own, so the pong of the round's last ping is recognised.
        let last = format!("{round:0>125}").into_bytes();
        let mut burst = ping.repeat(99);
        burst.extend(frame(FIN | OP_PING, &last));
        member.send(&burst).unwrap();
        pongs += pongs_until(&mut member, &last)
            .unwrap_or_else(|r| panic!("round {round}: expected pongs, got {}", describe(&r)));
    }
    let queued = server.stats().queued_bytes;
    eprintln!("ping bursts: {pongs} pongs for 30000 pings; {queued} bytes queued after");
    final_content_relays(&server, &mut member, &mut joiner);
}

/// A member that pings without reading its pongs is closed with 1008 "Send queue full" once
/// its pongs pass the send queue's limit: pongs are counted exactly like any other frame, so
/// what the server reports queued never passes the limit (by more than one pong), and nothing
/// is queued once the connection is gone.
#[test]
fn a_client_that_does_not_read_its_pongs_is_closed_at_the_send_queue_limit() {
    let (server, mut member, mut joiner) = ping_member();
    // 12.7 MB of pongs: more than the kernel's socket buffers and the send queue hold.
    let last = vec![b'L'; 125];
    let mut pings = frame(FIN | OP_PING, &[b'p'; 125]).repeat(100_000);
    pings.extend(frame(FIN | OP_PING, &last));
    let mut writer = member.s.try_clone().unwrap();
    let writer = thread::spawn(move || writer.write_all(&pings).is_ok());
    // No reading while the server answers (for at most 3 s, should it stop reading too).
    let lag = Instant::now() + Duration::from_secs(3);
    let mut most_queued = 0;
    while !writer.is_finished() && Instant::now() < lag {
        most_queued = most_queued.max(server.stats().queued_bytes);
        thread::sleep(Duration::from_millis(2));
    }
    let limit = 256 << 10;
    assert!(
        most_queued <= limit + 127,
        "{most_queued} bytes queued under a limit of {limit}"
    );
    match pongs_until(&mut member, &last) {
        Err(Ok(Some((OP_CLOSE, p)))) => assert_eq!(closed(&p), close(1008, "Send queue full")),
        Ok(n) => panic!("all {n} pongs came through: the send queue never filled"),
        Err(r) => panic!("expected pongs then a close, got {}", describe(&r)),
    }
    let _ = member.s.shutdown(Shutdown::Both);
    let _ = writer.join();
    eprintln!("lagging pongs: closed 1008; at most {most_queued} bytes queued meanwhile");
    assert!(eventually(|| server.stats().queued_bytes == 0));
    // Its joiner was told and can go on.
    assert_eq!(joiner.recv_content().2, b"");
}

// 5. Slow request heads

/// Sends an 8000-byte upgrade request for `path` one byte per write; the answer's status line.
fn slow_upgrade(addr: SocketAddr, path: &str) -> io::Result<String> {
    let pad = "a".repeat(8000 - upgrade_request(path, "X-Pad: \r\n").len());
    let request = upgrade_request(path, &format!("X-Pad: {pad}\r\n"));
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    for byte in request.as_bytes() {
        s.write_all(&[*byte])?;
    }
    let head = read_head(&mut s)?;
    Ok(head.lines().next().unwrap_or("").to_string())
}

/// 50 clients writing an 8000-byte upgrade request one byte at a time are all upgraded, and
/// a good pair relays meanwhile.
#[test]
fn request_heads_sent_one_byte_at_a_time_are_all_upgraded() {
    let server = TestServer::start();
    let mut good = Pair::new(&server, "/good");
    let done = AtomicUsize::new(0);
    let hard_stop = Instant::now() + Duration::from_secs(20);
    let (live, statuses) = alongside(
        50,
        |i| {
            let status = slow_upgrade(server.addr, &format!("/slow{i}"));
            done.fetch_add(1, Ordering::Relaxed);
            status.unwrap_or_else(|e| format!("error: {e}"))
        },
        || {
            relay_while(&mut good, || {
                done.load(Ordering::Relaxed) < 50 && Instant::now() < hard_stop
            })
        },
    );
    let upgraded = statuses.iter().filter(|s| s.starts_with("HTTP/1.1 101 "));
    let upgraded = upgraded.count();
    eprintln!("slow heads: {upgraded} of 50 upgraded; the good pair meanwhile: {live:?}");
    assert_eq!(upgraded, 50, "answers: {:?}", tally(&statuses));
    assert!(!live.failed, "a round trip failed: {live:?}");
}

// 6. Graceful stop, and logs

/// Requests in progress when the graceful stop begins are answered 503, not reset.
#[test]
fn a_graceful_stop_answers_requests_in_progress_with_503() {
    let server = TestServer::start();
    let connect = |first: &str| {
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(first.as_bytes()).unwrap();
        s
    };
    let upgrade = upgrade_request("/k", "");
    let mut requests = [
        ("GET /ready", connect("GET /ready HTTP/1.1\r\nHost: x\r\n")),
        ("an upgrade", connect(&upgrade[..upgrade.len() - 2])),
    ];
    assert!(eventually(|| server.stats().connections == 2));
    thread::sleep(Duration::from_millis(50)); // the server reads the partial heads
    server.begin_stop();
    thread::sleep(Duration::from_millis(100));
    let mut answers = Vec::new();
    for (what, s) in &mut requests {
        let _ = s.write_all(b"\r\n");
        let mut answer = Vec::new();
        let read = s.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        let status = text.lines().next().unwrap_or("").to_string();
        answers.push((*what, status, read.err().map(|e| e.to_string())));
    }
    eprintln!("graceful stop: {answers:?}");
    for (what, status, error) in &answers {
        assert!(
            status.starts_with("HTTP/1.1 503 "),
            "{what} in progress must get 503; got {status:?} (read error: {error:?})"
        );
    }
}

/// Closes a client can cause are logged at most about once a second each: 300 messages too
/// big in about a second give a handful of log lines, not 300.
#[test]
fn closes_a_client_can_cause_are_not_logged_one_line_each() {
    let args = "-h 127.0.0.1 -p 0 --max-message-size 1K --max-connections-per-ip 0";
    let bin = Binary::start(&args.split(' ').collect::<Vec<_>>());
    let addr = bin.addr();
    let too_big = frame(FIN | OP_BINARY, &[0; 2048]);
    let attacker = |t: usize| -> Vec<Option<Closed>> {
        let one = |i| {
            let mut raw = Raw::open(addr, &format!("/big{t}-{i}"), WAIT).unwrap();
            assert_eq!(raw.join(1, &[]), Answer::Connected(true));
            raw.send(&too_big).unwrap();
            raw.wait_close(Instant::now() + WAIT, &AtomicBool::new(false))
        };
        (0..30).map(one).collect()
    };
    let closes: Vec<_> = alongside(10, attacker, || ())
        .1
        .into_iter()
        .flatten()
        .collect();
    let n = closes
        .iter()
        .filter(|c| **c == Some(close(1009, "Message too big")));
    let n = n.count();
    assert_eq!(
        n,
        300,
        "every one must be closed 1009: {:?}",
        tally(&closes)
    );
    thread::sleep(Duration::from_millis(1500));
    let lines = bin.count_lines(|l| l.contains("1009") && l.contains("too big"));
    eprintln!("log throttling: {lines} log lines for 300 closes with 1009");
    assert!(
        lines <= 5,
        "300 closes with 1009 in about a second: {lines} log lines"
    );
}

// 7. Request heads against the memory budget

/// Whether the server closed (or reset) this connection, looking for a moment.
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
    match s.read(&mut [0u8; 64]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
    }
}

/// Request heads that never end count against the memory budget, and the budget drops them,
/// not the open WebSockets beside them that hold less.
#[test]
fn unfinished_request_heads_are_shed_before_open_peers() {
    let server = TestServer::with(|c| c.memory_budget = 1 << 20);
    let mut good = Pair::new(&server, "/good");
    good.relay(3);
    let pad = "a".repeat(6000);
    let mut heads: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr).unwrap();
            let head = format!("GET /x HTTP/1.1\r\nHost: x\r\nX-Pad: {pad}");
            s.write_all(head.as_bytes()).unwrap();
            s
        })
        .collect();
    let mut dropped = 0;
    assert!(
        eventually(|| {
            dropped = heads
                .iter_mut()
                .map(|s| usize::from(closed_by_server(s)))
                .sum();
            dropped > 0
        }),
        "200 unfinished heads of 6 KB each never passed a budget of 1 MiB"
    );
    eprintln!("unfinished heads: {dropped} dropped by the budget at first look");
    good.relay(3);
}

/// TLS records a client sends before its handshake (alerts, application data) are not logged
/// once each: rustls' own warnings about them would let a client fill the log.
#[test]
fn tls_records_a_client_can_send_are_not_logged_one_line_each() {
    let dir = std::env::temp_dir().join(format!("sigver-tls-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (key_path, cert_path) = (dir.join("key.pem"), dir.join("cert.pem"));
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    let (key, crt) = (key_path.to_str().unwrap(), cert_path.to_str().unwrap());
    let bin = Binary::start(&["-h", "127.0.0.1", "-p", "0", "-k", key, "-c", crt]);
    let addr = bin.addr();
    // Four warning alerts (close_notify) and one application-data record, before any hello.
    let mut records = [0x15, 0x03, 0x03, 0x00, 0x02, 0x01, 0x00].repeat(4);
    records.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x01, 0x00]);
    for _ in 0..300 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&records).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        // The server answers with an alert or closes; either way this client is done.
        let _ = s.read(&mut [0u8; 64]);
    }
    let lines = bin.count_lines(|l| l.contains("alert") || l.contains("applicationdata"));
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("TLS log lines: {lines} for 300 clients sending alerts before their hello");
    assert!(lines <= 5, "{lines} log lines for 300 clients");
}
