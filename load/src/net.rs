//! The client engine: many WebSocket connections on one thread and one mio `Poll`, driving a
//! [`Handler`] (one per mode) with decoded sigver messages.
//!
//! Each connection goes Connecting -> Upgrading -> Open -> Closing -> Dead. Over `raw://`
//! (`rawproto`) the join frame takes the upgrade's place, its answer stands for `connected`,
//! and a close drops the socket at once: the rest is the same code. Reads land in one
//! shared scratch buffer and frames are decoded in place; only a partial frame is copied into
//! the connection's own buffer. Writes are appended to the connection's output buffer (its
//! capacity is kept, so no allocation per message) and flushed once per loop turn, so many
//! messages to one socket leave in one system call. Heartbeats and pings are answered here.
//! Connections are removed at the end of a turn, then the handler hears `on_closed`.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::RawFd;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::pb::{self, Msg};
use crate::rawproto;
use crate::stats::Json;
use crate::transport::{Framing, Stream, Target};
use crate::ws;

/// Bytes read from a socket per `read` call (one buffer for all connections).
const SCRATCH: usize = 256 * 1024;
/// Reads from one socket per loop turn before others get their turn.
const MAX_READS_PER_TURN: usize = 8;
/// Largest frame accepted from a server.
const MAX_FRAME: usize = 4 << 20;
/// Time a connection has to connect and upgrade.
const CONNECT_TIMEOUT: u64 = 10_000_000_000;
/// Time a close handshake may take before the socket is dropped.
const CLOSE_TIMEOUT: u64 = 3_000_000_000;
/// Token of the timer fd.
const TIMER: Token = Token(usize::MAX);

/// Nanoseconds on the monotonic clock (the clock `Instant` uses and the timer fd reads).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// What a mode does with its connections.
pub trait Handler {
    /// The upgrade of connection `c` succeeded.
    fn on_open(&mut self, net: &mut Net, c: usize);
    /// A sigver message (other than a heartbeat) arrived on open connection `c`.
    fn on_message(&mut self, net: &mut Net, c: usize, msg: Msg<'_>);
    /// Connection `c` is gone (its slot may be reused from now on).
    fn on_closed(&mut self, net: &mut Net, c: usize, how: Closed);
    /// Called once per loop turn; returns the next time (ns) it wants to be called, if any.
    fn on_tick(&mut self, net: &mut Net) -> Option<u64>;
    /// True when the run is over.
    fn done(&self) -> bool;
}

/// How a connection ended.
#[derive(Debug, Clone, Copy)]
pub struct Closed {
    /// The handler's tag for the connection.
    pub tag: usize,
    /// The close code the server sent, if it sent a close frame.
    pub code: Option<u16>,
    /// We sent the first close frame.
    pub we_closed: bool,
    /// Why the socket failed, when it did not end with a close handshake and the server's
    /// end of stream.
    pub error: Option<&'static str>,
}

/// Counters of everything that went wrong, over the whole run.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    /// Connections opened.
    pub connects: u64,
    /// Failed before the upgrade completed (refused, timeout, bad answer).
    pub connect_failures: u64,
    /// Server frames or messages that broke the rules.
    pub protocol_errors: u64,
    /// Sockets that failed or ended without a close handshake.
    pub socket_errors: u64,
    /// Close handshakes that did not finish in time.
    pub close_timeouts: u64,
    /// TLS handshakes completed without a session (`wss://`).
    pub tls_full: u64,
    /// TLS handshakes that resumed a session.
    pub tls_resumed: u64,
    /// TLS handshakes that failed (a bad certificate, an alert, a hang-up in the middle).
    pub tls_failures: u64,
}

impl Counters {
    /// Adds every counter to a result, under its own name (every mode reports all).
    pub fn report(&self, j: &mut Json) {
        j.num("connect_failures", self.connect_failures as f64);
        j.num("socket_errors", self.socket_errors as f64);
        j.num("protocol_errors", self.protocol_errors as f64);
        j.num("close_timeouts", self.close_timeouts as f64);
        j.num("tls_full_handshakes", self.tls_full as f64);
        j.num("tls_resumed_handshakes", self.tls_resumed as f64);
        j.num("tls_failures", self.tls_failures as f64);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Upgrading,
    Open,
    Closing,
    Dead,
}

struct Conn {
    /// `None` when the connect call itself failed (no port or descriptor left).
    sock: Option<Stream>,
    gen: u32,
    tag: usize,
    phase: Phase,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    dirty: bool,
    key: [u8; 4],
    /// `raw://`: the id of the member this connection joined (0: it founded the group),
    /// where a content for no one in particular goes.
    peer: u32,
    we_closed: bool,
    code: Option<u16>,
    error: Option<&'static str>,
}

/// The connections and the poll. See the module documentation.
pub struct Net {
    poll: Poll,
    target: Target,
    conns: Slab<Conn>,
    next_gen: u32,
    dirty: Vec<usize>,
    again: Vec<(usize, bool)>,
    gone: Vec<usize>,
    scratch: Vec<u8>,
    /// (deadline, slot, generation), in deadline order: the timeout is constant.
    connect_deadlines: VecDeque<(u64, usize, u32)>,
    close_deadlines: VecDeque<(u64, usize, u32)>,
    timer: RawFd,
    timer_armed: u64,
    rng: u64,
    next_source: usize,
    /// The first TLS error met, as rustls worded it.
    pub tls_error: Option<String>,
    /// Time of this loop turn (ns), refreshed after each poll and each read.
    pub now: u64,
    /// What went wrong so far.
    pub counters: Counters,
}

impl Net {
    /// A client of the server at `target`.
    pub fn new(target: Target) -> io::Result<Self> {
        let poll = Poll::new()?;
        // SAFETY: plain system calls with valid constant arguments.
        let timer = unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, 1);
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if timer < 0 {
            return Err(io::Error::last_os_error());
        }
        poll.registry()
            .register(&mut SourceFd(&timer), TIMER, Interest::READABLE)?;
        Ok(Self {
            poll,
            target,
            conns: Slab::new(),
            next_gen: 0,
            dirty: Vec::new(),
            again: Vec::new(),
            gone: Vec::new(),
            scratch: vec![0; SCRATCH],
            connect_deadlines: VecDeque::new(),
            close_deadlines: VecDeque::new(),
            timer,
            timer_armed: 0,
            rng: now_ns() | 1,
            next_source: 0,
            tls_error: None,
            now: now_ns(),
            counters: Counters::default(),
        })
    }

    /// Number of connections, in any phase.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// True when connection `c` exists and is open.
    pub fn is_open(&self, c: usize) -> bool {
        self.conns.get(c).is_some_and(|c| c.phase == Phase::Open)
    }

    /// The tag given to `connect`.
    pub fn tag(&self, c: usize) -> usize {
        self.conns[c].tag
    }

    fn rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Opens a connection to `/path` (without the leading slash); `on_open` follows, or
    /// `on_closed` with an error.
    pub fn connect(&mut self, path: &str, tag: usize) -> usize {
        self.counters.connects += 1;
        let gen = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1);
        let key = (self.rand() as u32).to_ne_bytes();
        let entry = self.conns.vacant_entry();
        let c = entry.key();
        let mut failed = None;
        let source = match self.target.sources.len() {
            0 => None,
            n => {
                self.next_source = (self.next_source + 1) % n;
                Some(self.target.sources[self.next_source])
            }
        };
        let sock = match Stream::connect(&self.target, source) {
            Ok(mut sock) => {
                let interest = Interest::READABLE | Interest::WRITABLE;
                if self
                    .poll
                    .registry()
                    .register(&mut sock, Token(c), interest)
                    .is_err()
                {
                    failed = Some("register");
                }
                Some(sock)
            }
            Err(_) => {
                failed = Some("connect");
                None
            }
        };
        let mut out = Vec::with_capacity(256);
        match self.target.framing {
            Framing::WebSocket => ws::put_request(&mut out, &self.target.host, path),
            Framing::Raw => rawproto::put_join(&mut out, path.as_bytes()),
        }
        entry.insert(Conn {
            sock,
            gen,
            tag,
            phase: Phase::Connecting,
            inbuf: Vec::new(),
            out,
            out_pos: 0,
            dirty: false,
            key,
            peer: 0,
            we_closed: false,
            code: None,
            error: None,
        });
        self.connect_deadlines
            .push_back((self.now + CONNECT_TIMEOUT, c, gen));
        if let Some(e) = failed {
            self.fail(c, e);
        }
        c
    }

    fn mark_dirty(&mut self, c: usize) {
        let conn = &mut self.conns[c];
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(c);
        }
    }

    /// Queues one binary frame holding a `content {senderId, recipientId, data}` whose data
    /// is the concatenation of `parts`. Ignored unless the connection is open.
    pub fn send_content(&mut self, c: usize, sender: u32, recipient: u32, parts: &[&[u8]]) {
        let Some(conn) = self.conns.get_mut(c).filter(|c| c.phase == Phase::Open) else {
            return;
        };
        let data_len = parts.iter().map(|p| p.len()).sum();
        if self.target.framing == Framing::Raw {
            // The server writes the sender's id itself. A joiner's content goes to its
            // member whatever its recipient, as sigver routes it (docs/PROTOCOL.md §5).
            let dest = if recipient != 0 { recipient } else { conn.peer };
            rawproto::put_content_head(&mut conn.out, dest, data_len);
            for p in parts {
                conn.out.extend_from_slice(p);
            }
            return self.mark_dirty(c);
        }
        let len = pb::content_len(sender, recipient, data_len);
        let start = ws::put_header(&mut conn.out, ws::OP_BINARY, len, conn.key);
        pb::put_content_head(&mut conn.out, sender, recipient, data_len);
        for p in parts {
            conn.out.extend_from_slice(p);
        }
        ws::mask(&mut conn.out[start..], conn.key);
        self.mark_dirty(c);
    }

    /// Queues a `connect {id, members}`. Ignored unless the connection is open, and over
    /// `raw://`, where the join was the connection's first frame.
    pub fn send_connect(&mut self, c: usize, id: u32, members: &[u32]) {
        let Some(conn) = self.conns.get_mut(c).filter(|c| c.phase == Phase::Open) else {
            return;
        };
        if self.target.framing == Framing::Raw {
            return;
        }
        let len = pb::connect_len(id, members);
        let start = ws::put_header(&mut conn.out, ws::OP_BINARY, len, conn.key);
        pb::put_connect(&mut conn.out, id, members);
        ws::mask(&mut conn.out[start..], conn.key);
        self.mark_dirty(c);
    }

    fn send_frame(&mut self, c: usize, opcode: u8, payload: &[u8]) {
        let conn = &mut self.conns[c];
        let start = ws::put_header(&mut conn.out, opcode, payload.len(), conn.key);
        conn.out.extend_from_slice(payload);
        ws::mask(&mut conn.out[start..], conn.key);
        self.mark_dirty(c);
    }

    /// Starts the close handshake (code 1000); `on_closed` follows once the server has
    /// answered and hung up. A connection not open yet is dropped.
    pub fn close(&mut self, c: usize) {
        let Some(conn) = self.conns.get_mut(c) else {
            return;
        };
        match conn.phase {
            // No close handshake in the raw framing: the server sees the end of stream.
            Phase::Open if self.target.framing == Framing::Raw => {
                conn.we_closed = true;
                self.finish(c);
            }
            Phase::Open => {
                conn.we_closed = true;
                conn.phase = Phase::Closing;
                let gen = conn.gen;
                self.send_frame(c, ws::OP_CLOSE, &1000u16.to_be_bytes());
                self.close_deadlines
                    .push_back((self.now + CLOSE_TIMEOUT, c, gen));
            }
            Phase::Connecting | Phase::Upgrading => {
                conn.we_closed = true;
                self.finish(c);
            }
            Phase::Closing | Phase::Dead => {}
        }
    }

    /// Drops the socket now, with `error`; `on_closed` follows at the end of the turn.
    fn fail(&mut self, c: usize, error: &'static str) {
        if let Some(conn) = self.conns.get_mut(c) {
            if conn.phase != Phase::Dead {
                conn.error = Some(error);
                // A TLS connection that got as far as connecting but not through its
                // handshake: the run is not clean, whatever ended it.
                if conn.phase == Phase::Upgrading
                    && conn.sock.as_ref().is_some_and(Stream::tls_handshaking)
                {
                    self.counters.tls_failures += 1;
                }
                match conn.phase {
                    Phase::Connecting | Phase::Upgrading => self.counters.connect_failures += 1,
                    _ => self.counters.socket_errors += 1,
                }
                self.finish(c);
            }
        }
    }

    fn finish(&mut self, c: usize) {
        let conn = &mut self.conns[c];
        if conn.phase != Phase::Dead {
            conn.phase = Phase::Dead;
            if let Some(sock) = conn.sock.as_mut() {
                let _ = self.poll.registry().deregister(sock);
            }
            self.gone.push(c);
        }
    }

    fn arm_timer(&mut self, at: Option<u64>) {
        let at = at.unwrap_or(0);
        if at == self.timer_armed {
            return;
        }
        self.timer_armed = at;
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (at / 1_000_000_000) as libc::time_t,
                tv_nsec: (at % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: a valid timer fd and a valid itimerspec; at == 0 disarms it.
        unsafe {
            libc::timerfd_settime(
                self.timer,
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
    }

    fn on_ready<H: Handler>(&mut self, h: &mut H, c: usize, writable: bool, hup: bool) {
        let Some(conn) = self.conns.get_mut(c) else {
            return;
        };
        let Some(sock) = conn.sock.as_ref() else {
            return;
        };
        match conn.phase {
            Phase::Dead => return,
            Phase::Connecting => match sock.try_connected() {
                Ok(true) => {
                    conn.phase = Phase::Upgrading;
                    self.mark_dirty(c);
                }
                Ok(false) => return,
                Err(_) => return self.fail(c, "connect"),
            },
            _ => {
                // TLS records still held below the connection wait for this edge too.
                if writable && (conn.out.len() > conn.out_pos || sock.wants_write()) {
                    self.mark_dirty(c);
                }
            }
        }
        self.read(h, c, hup);
    }

    /// Reads until the socket is drained (or the per-turn cap) and handles what came.
    fn read<H: Handler>(&mut self, h: &mut H, c: usize, hup: bool) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut capped = true;
        for _ in 0..MAX_READS_PER_TURN {
            let Some(conn) = self.conns.get_mut(c) else {
                capped = false;
                break;
            };
            let (Some(sock), Phase::Upgrading | Phase::Open | Phase::Closing) =
                (conn.sock.as_mut(), conn.phase)
            else {
                capped = false;
                break;
            };
            match sock.read(&mut scratch) {
                Ok(0) => {
                    match conn.phase {
                        Phase::Closing => self.finish(c),
                        _ => self.fail(c, "end of stream"),
                    }
                    capped = false;
                    break;
                }
                Ok(n) => {
                    self.now = now_ns();
                    self.on_bytes(h, c, &scratch[..n]);
                    if n < scratch.len() && !hup {
                        // A short read drained the socket: bytes that come later raise a new
                        // edge, so no read is spent to see WouldBlock (tokio does the same).
                        // Not so for an end of stream that came with the same event: then
                        // only reading on until 0 sees it.
                        capped = false;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    capped = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let tls = e.kind() == io::ErrorKind::InvalidData;
                    if tls && self.tls_error.is_none() {
                        self.tls_error = Some(format!("TLS: {e}"));
                    }
                    match conn.phase {
                        Phase::Closing => self.finish(c),
                        _ if tls && conn.phase == Phase::Upgrading => {
                            self.fail(c, "TLS handshake failed")
                        }
                        _ if tls => self.fail(c, "TLS error"),
                        _ => self.fail(c, "read error"),
                    }
                    capped = false;
                    break;
                }
            }
        }
        self.scratch = scratch;
        if capped {
            // The cap stopped us before the socket was drained: go on next turn.
            self.again.push((c, hup));
        }
    }

    fn on_bytes<H: Handler>(&mut self, h: &mut H, c: usize, data: &[u8]) {
        let conn = &mut self.conns[c];
        if conn.phase == Phase::Upgrading {
            if conn.inbuf.is_empty() {
                // The first plaintext: the TLS handshake (if any) is over.
                match conn.sock.as_ref().and_then(Stream::tls_resumed) {
                    Some(true) => self.counters.tls_resumed += 1,
                    Some(false) => self.counters.tls_full += 1,
                    None => {}
                }
            }
            conn.inbuf.extend_from_slice(data);
            let answer = match self.target.framing {
                Framing::WebSocket => ws::parse_response(&conn.inbuf),
                Framing::Raw => raw_joined(conn),
            };
            match answer {
                ws::Upgrade::Partial => return,
                ws::Upgrade::Refused => return self.fail(c, "upgrade refused"),
                ws::Upgrade::Done(head) => {
                    conn.inbuf.drain(..head);
                    conn.phase = Phase::Open;
                    h.on_open(self, c);
                    if self.target.framing == Framing::Raw && self.is_open(c) {
                        // The join answer is the raw framing's `connected` (PROTOCOL.md §5).
                        let founded = self.conns[c].peer == 0;
                        h.on_message(self, c, Msg::Connected(founded));
                    }
                    let buf = std::mem::take(&mut self.conns[c].inbuf);
                    let used = self.on_frames(h, c, &buf);
                    let conn = &mut self.conns[c];
                    conn.inbuf = buf;
                    conn.inbuf.drain(..used);
                    return;
                }
            }
        }
        if conn.inbuf.is_empty() {
            let used = self.on_frames(h, c, data);
            if used < data.len() {
                if let Some(conn) = self.conns.get_mut(c).filter(|c| c.phase != Phase::Dead) {
                    conn.inbuf.extend_from_slice(&data[used..]);
                }
            }
        } else {
            conn.inbuf.extend_from_slice(data);
            let buf = std::mem::take(&mut conn.inbuf);
            let used = self.on_frames(h, c, &buf);
            let conn = &mut self.conns[c];
            conn.inbuf = buf;
            conn.inbuf.drain(..used);
        }
    }

    /// Handles every complete frame in `buf`; returns the bytes used.
    fn on_frames<H: Handler>(&mut self, h: &mut H, c: usize, buf: &[u8]) -> usize {
        if self.target.framing == Framing::Raw {
            return self.on_raw_frames(h, c, buf);
        }
        let mut pos = 0;
        loop {
            if self.conns[c].phase == Phase::Dead {
                return buf.len();
            }
            let frame = match ws::parse_frame(&buf[pos..], MAX_FRAME) {
                Ok(Some(f)) => f,
                Ok(None) => return pos,
                Err(e) => {
                    self.counters.protocol_errors += 1;
                    self.fail(c, e);
                    return buf.len();
                }
            };
            let payload = &buf[pos + frame.start..pos + frame.end];
            pos += frame.end;
            if !frame.fin && frame.opcode != ws::OP_PING {
                // Servers do not fragment small messages; a fragment is not expected.
                self.counters.protocol_errors += 1;
                self.fail(c, "fragmented frame");
                return buf.len();
            }
            let open = self.conns[c].phase == Phase::Open;
            match frame.opcode {
                ws::OP_BINARY if open => match pb::decode(payload) {
                    Some(Msg::Heartbeat) => self.send_frame(c, ws::OP_BINARY, &pb::HEARTBEAT),
                    Some(msg) => h.on_message(self, c, msg),
                    None => self.counters.protocol_errors += 1,
                },
                ws::OP_BINARY => {}
                ws::OP_CLOSE => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    let conn = &mut self.conns[c];
                    conn.code = code;
                    if conn.phase == Phase::Open {
                        // Echo the code (RFC 6455 §5.5.1), then wait for the server to hang up.
                        conn.phase = Phase::Closing;
                        let gen = conn.gen;
                        let echo = code.map(u16::to_be_bytes);
                        self.send_frame(c, ws::OP_CLOSE, echo.as_ref().map_or(&[][..], |e| &e[..]));
                        self.close_deadlines
                            .push_back((self.now + CLOSE_TIMEOUT, c, gen));
                    }
                }
                ws::OP_PING => {
                    if open {
                        self.send_frame(c, ws::OP_PONG, payload);
                    }
                }
                ws::OP_PONG => {}
                _ => {
                    self.counters.protocol_errors += 1;
                    self.fail(c, "unexpected frame");
                    return buf.len();
                }
            }
        }
    }

    /// `raw://`: every frame is a content from the peer its first four bytes name.
    fn on_raw_frames<H: Handler>(&mut self, h: &mut H, c: usize, buf: &[u8]) -> usize {
        let mut pos = 0;
        while self.conns[c].phase == Phase::Open {
            let content = match rawproto::frame(&buf[pos..], MAX_FRAME) {
                Ok(Some(end)) => rawproto::split_id(&buf[pos + rawproto::PREFIX..pos + end])
                    .map(|(sender, data)| (end, sender, data)),
                Ok(None) => return pos,
                Err(_) => None,
            };
            let Some((end, sender, data)) = content else {
                self.counters.protocol_errors += 1;
                self.fail(c, "bad raw frame");
                break;
            };
            pos += end;
            let msg = Msg::Content {
                sender,
                recipient: 0,
                data,
            };
            h.on_message(self, c, msg);
        }
        buf.len()
    }

    fn flush(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for &c in &dirty {
            let Some(conn) = self.conns.get_mut(c) else {
                continue;
            };
            conn.dirty = false;
            let Some(sock) = conn.sock.as_mut() else {
                continue;
            };
            if matches!(conn.phase, Phase::Connecting | Phase::Dead) {
                continue;
            }
            let mut failed = false;
            while conn.out_pos < conn.out.len() {
                match sock.write(&conn.out[conn.out_pos..]) {
                    Ok(n) => conn.out_pos += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            if conn.out_pos == conn.out.len() {
                conn.out.clear();
                conn.out_pos = 0;
                // TLS records the socket did not take yet (nothing for plain TCP).
                match sock.flush() {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => failed = true,
                }
            }
            if failed {
                if conn.phase == Phase::Closing {
                    self.finish(c);
                } else {
                    self.fail(c, "write error");
                }
            }
        }
        keep(&mut self.dirty, dirty);
    }

    fn expire(&mut self) {
        while let Some(&(at, c, gen)) = self.connect_deadlines.front() {
            if at > self.now {
                break;
            }
            self.connect_deadlines.pop_front();
            if self.conns.get(c).is_some_and(|x| {
                x.gen == gen && matches!(x.phase, Phase::Connecting | Phase::Upgrading)
            }) {
                self.fail(c, "connect timeout");
            }
        }
        while let Some(&(at, c, gen)) = self.close_deadlines.front() {
            if at > self.now {
                break;
            }
            self.close_deadlines.pop_front();
            if let Some(conn) = self
                .conns
                .get_mut(c)
                .filter(|x| x.gen == gen && x.phase == Phase::Closing)
            {
                conn.error = Some("close timeout");
                self.counters.close_timeouts += 1;
                self.finish(c);
            }
        }
    }

    fn reap<H: Handler>(&mut self, h: &mut H) {
        while !self.gone.is_empty() {
            let gone = std::mem::take(&mut self.gone);
            for &c in &gone {
                let conn = self.conns.remove(c);
                let how = Closed {
                    tag: conn.tag,
                    code: conn.code,
                    we_closed: conn.we_closed,
                    error: conn.error,
                };
                drop(conn);
                h.on_closed(self, c, how);
            }
            keep(&mut self.gone, gone);
            self.flush();
        }
    }

    /// Runs the handler until it is done or `until` (ns) passes; false on the time limit.
    pub fn run<H: Handler>(&mut self, h: &mut H, until: u64) -> io::Result<bool> {
        let mut events = Events::with_capacity(1024);
        loop {
            self.now = now_ns();
            let wake = h.on_tick(self);
            self.flush();
            self.reap(h);
            if h.done() {
                return Ok(true);
            }
            if self.now >= until {
                return Ok(false);
            }
            self.arm_timer(wake);
            let timeout = if self.again.is_empty() {
                // Coarse deadlines (connect, close, the run's end) wake the loop at least
                // every 10 ms; precise ones come from the timer fd.
                Some(Duration::from_millis(10))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            self.now = now_ns();
            let again = std::mem::take(&mut self.again);
            for &(c, hup) in &again {
                self.read(h, c, hup);
            }
            keep(&mut self.again, again);
            for event in events.iter() {
                match event.token() {
                    TIMER => {
                        let mut ticks = 0u64;
                        // SAFETY: reading 8 bytes into a u64 from our own non-blocking timer fd.
                        unsafe {
                            libc::read(self.timer, (&mut ticks as *mut u64).cast(), 8);
                        }
                        self.timer_armed = 0;
                    }
                    Token(c) => self.on_ready(
                        h,
                        c,
                        event.is_writable(),
                        event.is_read_closed() || event.is_error(),
                    ),
                }
            }
            self.expire();
            self.flush();
            self.reap(h);
        }
    }
}

/// `raw://`: the join answer at the start of the connection's bytes, as the upgrade's outcome
/// (a malformed one is a refusal); keeps the member's id.
fn raw_joined(conn: &mut Conn) -> ws::Upgrade {
    match rawproto::frame(&conn.inbuf, MAX_FRAME) {
        Ok(None) => ws::Upgrade::Partial,
        Ok(Some(end)) => match rawproto::joined(&conn.inbuf[rawproto::PREFIX..end]) {
            Some((_, member)) => {
                conn.peer = member;
                ws::Upgrade::Done(end)
            }
            None => ws::Upgrade::Refused,
        },
        Err(_) => ws::Upgrade::Refused,
    }
}

/// Puts back a list taken for one pass, emptied, with what was added to `slot` meanwhile:
/// its capacity is kept, so the loop allocates nothing per turn.
fn keep<T>(slot: &mut Vec<T>, mut taken: Vec<T>) {
    taken.clear();
    taken.append(slot);
    *slot = taken;
}

impl Drop for Net {
    fn drop(&mut self) {
        // SAFETY: the timer fd is ours and closed once.
        unsafe { libc::close(self.timer) };
    }
}
