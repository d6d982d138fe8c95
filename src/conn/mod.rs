//! One connection as a session: it owns its transport, its phase, its buffers and the count of
//! every byte they hold. The driver gives it readiness and the time; it does a bounded amount
//! of work and returns an [`Outcome`]. It never touches the poll or another connection.
//!
//! Phases: `Proxy` (with `--proxy-protocol`) takes the PROXY header off the socket first;
//! `Request` reads the HTTP head; the driver's [`Answer`] makes it `Upgrading` (the
//! `101` goes out, then `Open`) or `Finishing` (an HTTP answer goes out). `Open` relays
//! WebSocket messages; a close we start while the framing is intact (the hub's, the rate
//! limit, a text frame, too many fragments) makes it `Closing`, waiting for the peer's close;
//! the peer's close, a broken frame, or a limit that must free memory at once makes it
//! `Finishing`: the last bytes go out, the write side is shut, and `Linger` reads until the
//! peer hangs up. `Done` waits to be reaped.

pub mod frames;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};

use bytes::{Buf, Bytes, BytesMut};
use log::debug;
use mio::net::TcpStream;

use frames::frame_len;
use frames::{ClosePayload, Header, Opcode, Violation};

use crate::close::CloseReason;
use crate::handshake::{self, BadUrl, Parse, Request, Target};
use crate::http::{Answer, Refusal};
use crate::hub::ConnId;
use crate::limits::TokenBucket;
use crate::metrics::HandshakeFailure;
use crate::proxy;
use crate::transport::{ReadOutcome, Transport, TransportError, Written};

/// Bytes one connection may read in one loop turn. With [`FRAMES_PER_TURN`], what bounds the
/// time one peer takes from the others, whatever it sends: the rest waits for the next turn.
pub const READ_BYTES_PER_TURN: usize = 64 * 1024;
/// Frames one connection may have parsed (and handled) in one loop turn.
pub const FRAMES_PER_TURN: u32 = 128;
/// Most frames in one message. Browsers and Node.js clients send every message in one frame;
/// without a cap, empty continuation frames would keep a message open forever at no cost in
/// bytes. More closes the connection with 1008.
pub const MAX_FRAGMENTS: u32 = 1024;
/// Bytes asked of the socket per read: a small read costs little zeroing, and a socket with
/// more gets more reads, within the per-turn share.
pub const READ_CHUNK: usize = 4096;
/// A send queue this large is compacted when its front is out.
const OUT_KEEP: usize = 4096;
/// TLS handshake steps (reads while handshaking) in one loop turn, for all connections: a
/// full handshake's first step costs about 150 µs on a 2020s x86 core, so a turn spends at
/// most a few milliseconds on them.
pub const TLS_STEPS_PER_TURN: u32 = 16;
/// Most bytes of last words kept back to go out with the TLS `close_notify`.
const HOLD_AT_MOST: usize = 4096;
/// Capacity of the shared read buffer kept between turns; a larger one is given back.
const SCRATCH_KEEP: usize = 256 * 1024;

/// The limits a connection enforces on its own.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest message (all its fragments), in bytes: more closes with 1009.
    pub max_message_size: usize,
    /// Most bytes queued for sending: more closes with 1008.
    pub max_send_queue: usize,
    /// Messages per second (0: no limit): more closes with 1008.
    pub rate_limit: u32,
}

/// What one loop turn lends a connection while it works.
#[derive(Debug)]
pub struct Turn<'a> {
    /// The turn's number: a connection's share of work is renewed when it changes.
    pub number: u64,
    /// The turn's clock, in milliseconds.
    pub now: u64,
    /// A read buffer shared by all connections, so that an idle one holds none. Between two
    /// [`Conn::step`] calls on the same connection it may hold that connection's unparsed
    /// bytes; it is empty whenever `step` returns `Idle`, `Yield` or `Done`.
    pub scratch: &'a mut BytesMut,
    /// Where the socket is read into: zeroed once, so that a read costs no zeroing, and
    /// only the bytes that came are copied on (a 4 KiB `resize` per read was a fifth of the
    /// user time of a relay turn).
    pub chunk: &'a mut [u8; READ_CHUNK],
    /// The limits.
    pub limits: &'a Limits,
    /// TLS handshake steps this turn may still take: each costs up to a few hundred
    /// microseconds of cryptography, so a burst of new `wss://` clients is spread over
    /// turns instead of holding the loop while open connections wait.
    pub tls_steps_left: &'a mut u32,
}

/// What a connection asks of the driver after a step.
#[derive(Debug)]
pub enum Outcome {
    /// Nothing more until the socket is ready again.
    Idle,
    /// Its share of this turn is spent and more may wait: step it again next turn.
    Yield,
    /// The request head is complete (`None`: it is over the size limit): give it an
    /// [`Answer`] with [`Conn::answer`], then step again.
    Request(Option<Request>),
    /// The `101` is out: the WebSocket is open on this target.
    Opened(Result<Target, BadUrl>),
    /// A complete binary message.
    Message(Bytes),
    /// The WebSocket is over for the hub: the peer closed it (`None`), or the connection
    /// closed it for this reason (a rule or limit broken). Its close frame is queued.
    Ended(Option<CloseReason>),
    /// The connection failed before it opened.
    Failed(HandshakeFailure),
    /// Nothing is left: reap it.
    Done,
}

/// The deadlines a connection can miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// The upgrade must be done by then.
    Handshake,
    /// The close handshake must be done by then.
    Close,
}

/// What shedding a connection for the memory budget did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// It was open: it gave up what it held and its close is queued; the hub must forget it.
    Closed,
    /// It was not a WebSocket the hub knows (upgrading, closing, lingering): it is done.
    Dropped,
    /// It was done already.
    Nothing,
}

/// What a flush left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Everything queued is out.
    Out,
    /// The socket is full: the rest waits for the writable edge.
    Waiting,
    /// The socket failed: the connection is done.
    Failed,
}

/// The bytes a connection holds (see [`Conn::held`] and [`Conn::report`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// Bytes queued for sending, not yet taken by the transport.
    pub queued: usize,
    /// Capacity of every buffer it owns: the request head, read bytes not yet parsed, the
    /// fragments of a message so far, the send queue, and for TLS the records not yet whole
    /// and the bytes the socket has not taken.
    pub buffers: usize,
}

#[derive(Debug)]
enum Phase {
    Proxy,
    Request,
    Upgrading(Result<Target, BadUrl>),
    Open,
    Closing,
    Finishing,
    Linger,
    Done,
}

/// A connection. See the module documentation.
#[derive(Debug)]
pub struct Conn {
    id: ConnId,
    peer: SocketAddr,
    /// The client's address: the peer's, or the one a trusted proxy gave for it.
    client: IpAddr,
    /// The key its connection is counted under in the per-address limit, if it is.
    counted_as: Option<IpAddr>,
    /// The client's address came in a PROXY protocol header.
    proxied: bool,
    refusal: Option<Refusal>,
    transport: Transport,
    phase: Phase,
    opened: bool,
    /// The request head so far, and how much of it was searched for its end.
    head: Vec<u8>,
    scanned: usize,
    /// Bytes read and not parsed yet, kept between turns (usually empty: see `Turn::scratch`).
    input: BytesMut,
    /// The fragments of a message so far.
    partial: Option<Vec<u8>>,
    fragments: u32,
    /// The peer ended its side; what was read before is handled first.
    ended: bool,
    /// A frame was taken out of `input` this step: its allocation may be larger than it says.
    input_split: bool,
    /// What to send; `sent` bytes of it are out. In WebSocket phases, `out` starts on a frame.
    out: Vec<u8>,
    sent: usize,
    /// On the driver's flush list this turn.
    listed: bool,
    /// The socket was full at the last write: wait for its writable edge.
    blocked: bool,
    bucket: TokenBucket,
    /// This turn's share: the turn it belongs to, bytes and frames left.
    share_turn: u64,
    bytes_left: usize,
    frames_left: u32,
    /// The turn in which it last returned `Yield`.
    yielded_turn: u64,
    reported: Held,
}

impl Conn {
    /// A connection accepted at `now`; `refusal` when admitted over a limit (its upgrade gets
    /// an HTTP refusal).
    pub fn new(
        id: ConnId,
        peer: SocketAddr,
        transport: Transport,
        refusal: Option<Refusal>,
        rate_limit: u32,
        now: u64,
    ) -> Self {
        Self {
            id,
            peer,
            client: peer.ip(),
            counted_as: None,
            proxied: false,
            refusal,
            transport,
            phase: Phase::Request,
            opened: false,
            head: Vec::new(),
            scanned: 0,
            input: BytesMut::new(),
            partial: None,
            fragments: 0,
            ended: false,
            input_split: false,
            out: Vec::new(),
            sent: 0,
            listed: false,
            blocked: false,
            bucket: TokenBucket::full(rate_limit, now),
            share_turn: u64::MAX,
            bytes_left: 0,
            frames_left: 0,
            yielded_turn: u64::MAX,
            reported: Held::default(),
        }
    }

    /// Its identity for the hub and the timers.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The client's address (for logs, limits and `--metrics-allow`).
    pub fn client(&self) -> IpAddr {
        self.client
    }

    /// Sets the client's address, as a trusted proxy gave it.
    pub fn set_client(&mut self, client: IpAddr) {
        self.client = client;
    }

    /// Makes it read a PROXY protocol header first (`--proxy-protocol`).
    pub fn expect_proxy_header(&mut self) {
        if matches!(self.phase, Phase::Request) {
            self.phase = Phase::Proxy;
        }
    }

    /// Its client's address came in a PROXY protocol header.
    pub fn proxied(&self) -> bool {
        self.proxied
    }

    /// The key it is counted under in the per-address limit, if it is.
    pub fn counted_as(&self) -> Option<IpAddr> {
        self.counted_as
    }

    /// Records the key it is counted under in the per-address limit.
    pub fn set_counted_as(&mut self, key: IpAddr) {
        self.counted_as = Some(key);
    }

    /// The limit it was admitted over, if any.
    pub fn refusal(&self) -> Option<Refusal> {
        self.refusal
    }

    /// The WebSocket is open: the hub knows it and may send to it.
    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open)
    }

    /// Nothing is left but reaping.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// Still reading or answering its HTTP request.
    pub fn is_upgrading(&self) -> bool {
        matches!(
            self.phase,
            Phase::Proxy | Phase::Request | Phase::Upgrading(_)
        )
    }

    /// For TLS, whether its handshake resumed a session; `None` for plain TCP.
    pub fn tls_resumed(&self) -> Option<bool> {
        self.transport.tls_resumed()
    }

    /// The TCP socket, for the poll's registration.
    pub fn socket(&mut self) -> &mut TcpStream {
        self.transport.tcp()
    }

    /// The socket reported readiness.
    pub fn on_ready(&mut self, readable: bool, writable: bool, read_closed: bool) {
        if readable || read_closed {
            self.transport.on_readable(read_closed);
        }
        if writable {
            self.blocked = false;
        }
    }

    /// Puts it on the turn's flush list; true when it was not on it yet.
    pub fn list(&mut self) -> bool {
        !std::mem::replace(&mut self.listed, true)
    }

    /// Bytes wait to be written (in the send queue, or in rustls) and the socket may take
    /// them: not full at the last write, or writable since. The `101` of an upgrade is sent
    /// by stepping, not by the flush.
    pub fn wants_flush(&self) -> bool {
        !self.blocked && !matches!(self.phase, Phase::Upgrading(_)) && self.has_unsent()
    }

    /// Bytes wait in the send queue or in rustls.
    fn has_unsent(&self) -> bool {
        self.sent < self.out.len() || self.transport.wants_write()
    }

    /// Its last words are out and the write side shut; it reads until the peer hangs up.
    pub fn is_lingering(&self) -> bool {
        matches!(self.phase, Phase::Linger)
    }

    /// What it holds now.
    pub fn held(&self) -> Held {
        Held {
            queued: self.out.len() - self.sent,
            buffers: self.head.capacity()
                + self.input.capacity()
                + self.partial.as_ref().map_or(0, Vec::capacity)
                + self.out.capacity()
                + self.transport.held(),
        }
    }

    /// What it holds now, and what it held when last asked: the driver moves its totals by
    /// the difference.
    pub fn report(&mut self) -> (Held, Held) {
        let now = self.held();
        (std::mem::replace(&mut self.reported, now), now)
    }

    /// Does what can be done now, within this turn's share. Call again until it returns
    /// `Idle`, `Yield` or `Done`, handling each outcome in between.
    pub fn step(&mut self, turn: &mut Turn<'_>) -> Outcome {
        if self.share_turn != turn.number {
            self.share_turn = turn.number;
            self.bytes_left = READ_BYTES_PER_TURN;
            self.frames_left = FRAMES_PER_TURN;
        }
        if !matches!(self.phase, Phase::Open | Phase::Closing) {
            // Only the WebSocket phases leave their own bytes there between steps.
            turn.scratch.clear();
        }
        match self.phase {
            Phase::Proxy => self.read_proxy_header(turn),
            Phase::Request => self.read_request(turn),
            Phase::Upgrading(_) => self.finish_upgrade(),
            Phase::Open | Phase::Closing => self.read_frames(turn),
            Phase::Finishing => self.finish(turn),
            Phase::Linger => self.discard(turn),
            Phase::Done => Outcome::Done,
        }
    }

    /// `Finishing`: the last bytes go out, and what the peer sends meanwhile is dropped.
    fn finish(&mut self, turn: &mut Turn<'_>) -> Outcome {
        match self.write_out() {
            Flush::Failed => Outcome::Done,
            Flush::Out | Flush::Waiting => self.discard(turn),
        }
    }

    /// Answers the request that [`Outcome::Request`] returned.
    pub fn answer(&mut self, answer: Answer) {
        if !matches!(self.phase, Phase::Request) {
            return;
        }
        self.head = Vec::new();
        match answer {
            Answer::Upgrade(response, target) => {
                self.out = response;
                self.phase = Phase::Upgrading(target);
            }
            Answer::Close(response, _) => {
                self.out = response;
                self.input = BytesMut::new();
                self.phase = Phase::Finishing;
            }
        }
    }

    /// Queues a binary message. When the send queue would pass its limit, the connection
    /// gives up its queue, queues a 1008 close instead and returns the reason: the hub must
    /// forget it. Ignored unless open.
    pub fn send(&mut self, message: &[u8], limits: &Limits) -> Result<(), CloseReason> {
        if !self.is_open() {
            return Ok(());
        }
        let queued = self.out.len() - self.sent;
        if queued + frame_len(message.len()) > limits.max_send_queue {
            debug!(
                "conn {}.{}: send queue full ({queued} bytes queued)",
                self.id.slot, self.id.generation
            );
            self.abort(CloseReason::SendQueueFull);
            return Err(CloseReason::SendQueueFull);
        }
        frames::encode(&mut self.out, Opcode::Binary, message);
        Ok(())
    }

    /// Starts the close handshake with `reason`; true when it started now (the connection
    /// was open).
    pub fn close(&mut self, reason: CloseReason) -> bool {
        if !self.is_open() {
            return false;
        }
        frames::encode_close(&mut self.out, reason.close_code(), reason.reason());
        self.phase = Phase::Closing;
        true
    }

    /// Closes an open connection at once with `reason`, giving up everything it holds but
    /// the frame being written (a full send queue, the memory budget): the close frame is
    /// queued behind that frame and leaves if the socket takes it. False unless open.
    pub fn abort(&mut self, reason: CloseReason) -> bool {
        if !self.is_open() {
            return false;
        }
        self.input = BytesMut::new();
        self.partial = None;
        // Keep the frame the transport is in the middle of, whole: cutting it would break the
        // stream, and the queue must still start on a frame.
        let (start, end) = self.frame_at_sent();
        let mut out = Vec::with_capacity(end - start + frame_len(125));
        out.extend_from_slice(&self.out[start..end]);
        self.out = out;
        self.sent -= start;
        frames::encode_close(&mut self.out, reason.close_code(), reason.reason());
        self.phase = Phase::Finishing;
        true
    }

    /// Gives up what it holds for the memory budget: an open connection closes with 1008 as
    /// [`Conn::abort`] does; any other is dropped (it is not a WebSocket the hub knows, and
    /// has nothing to say).
    pub fn shed(&mut self) -> Shed {
        if self.abort(CloseReason::MemoryBudget) {
            Shed::Closed
        } else if self.is_done() {
            Shed::Nothing
        } else {
            self.done();
            Shed::Dropped
        }
    }

    /// Where the frame that `sent` falls in starts and ends in `out` (both `sent` when it falls
    /// between frames). `out` starts on a frame in the WebSocket phases.
    fn frame_at_sent(&self) -> (usize, usize) {
        let mut start = 0;
        while start < self.sent {
            match frames::server_frame_len(&self.out[start..]) {
                Some(len) if start + len > self.sent => {
                    return (start, (start + len).min(self.out.len()))
                }
                Some(len) => start += len,
                None => break,
            }
        }
        (self.sent, self.sent)
    }

    /// A deadline passed: past its handshake or its close, the connection is dropped. `Some`
    /// when it was, with whether the upgrade itself timed out.
    pub fn on_deadline(&mut self, deadline: Deadline) -> Option<bool> {
        let missed = match deadline {
            Deadline::Handshake => !self.opened && !self.is_done(),
            Deadline::Close => {
                self.opened
                    && matches!(
                        self.phase,
                        Phase::Closing | Phase::Finishing | Phase::Linger
                    )
            }
        };
        if !missed {
            return None;
        }
        let upgrading = self.is_upgrading();
        self.done();
        Some(upgrading)
    }

    /// Writes what is queued, and takes it off the turn's flush list.
    pub fn flush(&mut self) -> Flush {
        self.listed = false;
        self.write_out()
    }

    fn write_out(&mut self) -> Flush {
        if self.is_done() {
            return Flush::Failed;
        }
        let finishing = matches!(self.phase, Phase::Finishing);
        if finishing && self.out.len() - self.sent <= HOLD_AT_MOST {
            // The last words and the TLS `close_notify` after them: one segment.
            self.transport.hold();
        }
        while self.sent < self.out.len() {
            match self.transport.write(&self.out[self.sent..]) {
                Ok(Written::Full) => {
                    self.blocked = true;
                    self.compact();
                    return Flush::Waiting;
                }
                Ok(Written::Took(n)) => self.sent += n,
                Err(e) => {
                    self.log_failure(&e);
                    self.done();
                    return Flush::Failed;
                }
            }
        }
        // An empty queue keeps no allocation: most connections are idle between messages
        // far apart (a heartbeat every few seconds), and one allocation per flush costs less
        // than a buffer per idle connection.
        self.out = Vec::new();
        self.sent = 0;
        // The last words are queued: after them the write side ends (`close_notify`, then a
        // half-close), and the connection reads until the peer hangs up, so that closing
        // does not reset the connection before the peer read them.
        let flushed = if finishing {
            self.transport.close_write()
        } else {
            self.transport.flush()
        };
        match flushed {
            Ok(false) => {
                self.blocked = true;
                return Flush::Waiting;
            }
            Ok(true) => {}
            Err(e) => {
                self.log_failure(&e);
                self.done();
                return Flush::Failed;
            }
        }
        if finishing {
            self.phase = Phase::Linger;
        }
        Flush::Out
    }

    /// Drops the sent part of a queue the socket did not take whole, keeping the frame being
    /// written at the front (so that the queue still starts on a frame).
    fn compact(&mut self) {
        if self.sent < OUT_KEEP || self.sent < self.out.len() / 2 || !self.opened {
            return;
        }
        let (start, _) = self.frame_at_sent();
        self.out.drain(..start);
        self.sent -= start;
    }

    fn log_failure(&self, e: &TransportError) {
        debug!("conn {}.{} failed: {e}", self.id.slot, self.id.generation);
    }

    fn done(&mut self) -> Outcome {
        if !self.is_done() {
            self.transport.close_notify();
            self.transport.release();
            self.phase = Phase::Done;
            self.head = Vec::new();
            self.input = BytesMut::new();
            self.partial = None;
            self.out = Vec::new();
            self.sent = 0;
        }
        Outcome::Done
    }

    /// `Request`: reads the head; parses it only once its end has arrived. The bytes are
    /// read into the shared buffer and only what arrived is kept.
    fn read_request(&mut self, turn: &mut Turn<'_>) -> Outcome {
        // TLS handshake records wait here when the socket was full.
        if let Err(e) = self.transport.flush() {
            return self.fail_early(&e);
        }
        loop {
            if self.head.len() > handshake::MAX_REQUEST_BYTES {
                return Outcome::Request(None);
            }
            if self.bytes_left == 0 {
                return self.yield_turn();
            }
            let handshaking = self.transport.tls_handshaking();
            if handshaking && *turn.tls_steps_left == 0 {
                return self.yield_turn();
            }
            let read = self
                .transport
                .read(&mut turn.chunk[..READ_CHUNK.min(self.bytes_left)]);
            let answered = match read {
                Ok(ReadOutcome::Data(_)) => true,
                Ok(ReadOutcome::Again) => self.transport.wants_write(),
                _ => false,
            };
            if handshaking && answered {
                // rustls answered (a flight, a ticket) or gave the request: a step. Bytes it
                // only kept (a message not whole yet) cost next to nothing.
                *turn.tls_steps_left = turn.tls_steps_left.saturating_sub(1);
            }
            if let Ok(ReadOutcome::Data(n)) = read {
                self.head.extend_from_slice(&turn.chunk[..n]);
            }
            self.charge_wire_bytes();
            match read {
                Ok(ReadOutcome::Data(_)) => {}
                Ok(ReadOutcome::Again) => continue,
                Ok(ReadOutcome::WouldBlock) => return Outcome::Idle,
                Ok(ReadOutcome::End) => {
                    debug!(
                        "conn {}.{} left before its request",
                        self.id.slot, self.id.generation
                    );
                    self.done();
                    return Outcome::Failed(HandshakeFailure::ClosedEarly);
                }
                Err(e) => return self.fail_early(&e),
            }
            let complete = handshake::head_complete(&self.head, self.scanned);
            self.scanned = self.head.len();
            if complete {
                match handshake::parse(&self.head) {
                    Parse::Partial => {}
                    Parse::TooLarge => return Outcome::Request(None),
                    Parse::Done { consumed, request } => {
                        // Frames the client sent right behind its request.
                        self.input = BytesMut::from(&self.head[consumed..]);
                        return Outcome::Request(Some(request));
                    }
                }
            }
        }
    }

    /// `Proxy`: the PROXY protocol header, looked at without taking it until it is whole, so
    /// that not a byte of what follows (the TLS handshake, the request) is taken with it.
    fn read_proxy_header(&mut self, turn: &mut Turn<'_>) -> Outcome {
        let header = loop {
            turn.scratch.clear();
            turn.scratch.resize(proxy::PEEK, 0);
            let peeked = self.transport.peek_raw(&mut turn.scratch[..]);
            let header = match peeked {
                Ok(ReadOutcome::Data(n)) => proxy::parse(&turn.scratch[..n]),
                Ok(ReadOutcome::Again) => continue,
                Ok(ReadOutcome::WouldBlock) => proxy::Header::Incomplete,
                Ok(ReadOutcome::End) => {
                    turn.scratch.clear();
                    self.done();
                    return Outcome::Failed(HandshakeFailure::ClosedEarly);
                }
                Err(e) => {
                    turn.scratch.clear();
                    return self.fail_early(&e);
                }
            };
            turn.scratch.clear();
            break header;
        };
        match header {
            // More comes with the next readable event.
            proxy::Header::Incomplete => Outcome::Idle,
            proxy::Header::Invalid => {
                debug!(
                    "conn {}.{}: no PROXY protocol header",
                    self.id.slot, self.id.generation
                );
                self.done();
                Outcome::Failed(HandshakeFailure::ProxyHeader)
            }
            proxy::Header::Complete { len, client } => {
                if let Err(e) = self.transport.skip_raw(len) {
                    return self.fail_early(&e);
                }
                self.charge_wire_bytes();
                if let Some(client) = client {
                    self.client = client.to_canonical();
                }
                self.proxied = true;
                self.phase = Phase::Request;
                self.read_request(turn)
            }
        }
    }

    /// Charges what the transport took off the wire to this turn's share.
    fn charge_wire_bytes(&mut self) {
        let wire = self.transport.take_wire_bytes();
        self.bytes_left = self.bytes_left.saturating_sub(wire);
    }

    /// `Yield` the first time in a turn; after that the connection is already on the list for
    /// the next turn, so `Idle`.
    fn yield_turn(&mut self) -> Outcome {
        if std::mem::replace(&mut self.yielded_turn, self.share_turn) == self.share_turn {
            Outcome::Idle
        } else {
            Outcome::Yield
        }
    }

    fn fail_early(&mut self, e: &TransportError) -> Outcome {
        self.log_failure(e);
        self.done();
        Outcome::Failed(match e {
            TransportError::Tls(_) => HandshakeFailure::Tls,
            TransportError::Io(_) => HandshakeFailure::ClosedEarly,
        })
    }

    /// `Upgrading`: once the `101` is out, the WebSocket is open.
    fn finish_upgrade(&mut self) -> Outcome {
        match self.write_out() {
            Flush::Failed => return Outcome::Failed(HandshakeFailure::ClosedEarly),
            Flush::Waiting => return Outcome::Idle,
            Flush::Out => {}
        }
        match std::mem::replace(&mut self.phase, Phase::Open) {
            Phase::Upgrading(target) => {
                self.opened = true;
                Outcome::Opened(target)
            }
            other => {
                self.phase = other;
                Outcome::Idle
            }
        }
    }

    /// `Open` and `Closing`: parses the frames read, reading more within the turn's share.
    /// Bytes wait in `input` when a frame is unfinished, and otherwise in the shared buffer.
    fn read_frames(&mut self, turn: &mut Turn<'_>) -> Outcome {
        loop {
            if self.frames_left == 0 {
                self.stash(turn);
                return self.yield_turn();
            }
            let max = turn
                .limits
                .max_message_size
                .saturating_sub(self.partial.as_ref().map_or(0, Vec::len));
            let from_input = !self.input.is_empty();
            let source = if from_input {
                &mut self.input
            } else {
                &mut *turn.scratch
            };
            match take_frame(source, max) {
                Ok(Some((header, payload))) => {
                    self.frames_left -= 1;
                    self.input_split |= from_input;
                    if let Some(outcome) = self.on_frame(header, payload, turn) {
                        if matches!(outcome, Outcome::Done) {
                            turn.scratch.clear();
                        }
                        return outcome;
                    }
                    continue;
                }
                Ok(None) => {}
                Err(bad) => {
                    turn.scratch.clear();
                    return self.on_bad_frame(bad);
                }
            }
            if self.ended {
                turn.scratch.clear();
                debug!(
                    "conn {}.{} ended by the peer",
                    self.id.slot, self.id.generation
                );
                return self.done();
            }
            if self.bytes_left == 0 {
                self.stash(turn);
                return self.yield_turn();
            }
            let target = if from_input {
                &mut self.input
            } else {
                &mut *turn.scratch
            };
            let read = self
                .transport
                .read(&mut turn.chunk[..READ_CHUNK.min(self.bytes_left)]);
            if let Ok(ReadOutcome::Data(n)) = read {
                target.extend_from_slice(&turn.chunk[..n]);
            }
            self.charge_wire_bytes();
            match read {
                Ok(ReadOutcome::Data(_) | ReadOutcome::Again) => {}
                Ok(ReadOutcome::End) => self.ended = true,
                Ok(ReadOutcome::WouldBlock) => {
                    self.stash(turn);
                    return Outcome::Idle;
                }
                Err(e) => {
                    turn.scratch.clear();
                    self.log_failure(&e);
                    return self.done();
                }
            }
        }
    }

    /// Keeps the unparsed bytes of the shared buffer for the next turn.
    fn stash(&mut self, turn: &mut Turn<'_>) {
        // A frame taken out of `input` left it a view of a larger allocation, which its
        // capacity does not show: what is left moves to a buffer of its own size, so that
        // what it holds is what it counts.
        if std::mem::take(&mut self.input_split) && !self.input.is_empty() {
            self.input = BytesMut::from(&self.input[..]);
        }
        if !turn.scratch.is_empty() {
            self.input.extend_from_slice(turn.scratch);
            turn.scratch.clear();
        }
        if turn.scratch.capacity() > SCRATCH_KEEP {
            *turn.scratch = BytesMut::new();
        }
        if self.input.is_empty() && self.input.capacity() > 0 {
            self.input = BytesMut::new();
        }
    }

    /// One whole frame; `Some` when it ends this step.
    fn on_frame(
        &mut self,
        header: Header,
        payload: BytesMut,
        turn: &mut Turn<'_>,
    ) -> Option<Outcome> {
        if matches!(self.phase, Phase::Closing) {
            // After our close, data is dropped (RFC 6455 §5.5.1) until the peer's close, which
            // ends the handshake: what is still queued goes out, then the server closes the
            // TCP connection first (§7.1.1).
            if header.opcode != Opcode::Close {
                return None;
            }
            turn.scratch.clear();
            self.input = BytesMut::new();
            self.partial = None;
            self.phase = Phase::Finishing;
            return Some(self.finish(turn));
        }
        match header.opcode {
            Opcode::Binary | Opcode::Continuation | Opcode::Text => {}
            Opcode::Close => return Some(self.on_close_frame(&payload, turn)),
            Opcode::Ping | Opcode::Pong => {
                if !self.bucket.try_take(turn.limits.rate_limit, turn.now) {
                    return Some(self.end(CloseReason::RateLimited));
                }
                if header.opcode == Opcode::Ping {
                    // Every ping is answered (§5.5.2), within the send queue's limit like any
                    // other frame: a peer that pings without reading is closed, not buffered.
                    let queued = self.out.len() - self.sent;
                    if queued + frame_len(payload.len()) > turn.limits.max_send_queue {
                        self.abort(CloseReason::SendQueueFull);
                        return Some(Outcome::Ended(Some(CloseReason::SendQueueFull)));
                    }
                    frames::encode(&mut self.out, Opcode::Pong, &payload);
                }
                return None;
            }
        }
        // §5.4: a message is one data frame and continuation frames, never interleaved.
        match (header.opcode, self.partial.is_some()) {
            (Opcode::Continuation, false) => {
                return Some(self.on_bad_frame(Bad::Violation(Violation(
                    "continuation frame outside a message",
                ))))
            }
            (Opcode::Binary | Opcode::Text, true) => {
                return Some(self.on_bad_frame(Bad::Violation(Violation(
                    "new message inside a fragmented one",
                ))))
            }
            _ => {}
        }
        // docs/PROTOCOL.md §7: text frames are not part of the protocol.
        if header.opcode == Opcode::Text {
            return Some(self.end(CloseReason::TextFrame));
        }
        let message = if header.opcode == Opcode::Binary && header.fin {
            payload.freeze()
        } else {
            self.fragments += 1;
            if self.fragments > MAX_FRAGMENTS {
                self.partial = None;
                return Some(self.end(CloseReason::TooManyFragments));
            }
            let partial = self.partial.get_or_insert_with(Vec::new);
            partial.extend_from_slice(&payload);
            if !header.fin {
                return None;
            }
            self.fragments = 0;
            Bytes::from(self.partial.take().unwrap_or_default())
        };
        if !self.bucket.try_take(turn.limits.rate_limit, turn.now) {
            return Some(self.end(CloseReason::RateLimited));
        }
        Some(Outcome::Message(message))
    }

    /// The peer's close: echo it (§5.5.1), then finish. What came after it is dropped.
    fn on_close_frame(&mut self, payload: &[u8], turn: &mut Turn<'_>) -> Outcome {
        turn.scratch.clear();
        match frames::parse_close(payload) {
            Ok(ClosePayload::Empty) => frames::encode(&mut self.out, Opcode::Close, &[]),
            Ok(ClosePayload::Status(code, reason)) => {
                frames::encode_close(&mut self.out, code, reason)
            }
            Err(bad) => return self.on_bad_frame(Bad::Violation(bad)),
        }
        debug!(
            "conn {}.{} closed by the peer",
            self.id.slot, self.id.generation
        );
        self.input = BytesMut::new();
        self.partial = None;
        self.phase = Phase::Finishing;
        Outcome::Ended(None)
    }

    /// A frame that cannot be read on: fail the connection (§7.1.7) with its code.
    fn on_bad_frame(&mut self, bad: Bad) -> Outcome {
        if matches!(self.phase, Phase::Closing) {
            return self.done();
        }
        let reason = match bad {
            Bad::TooBig => CloseReason::MessageTooBig,
            Bad::Violation(v) => {
                debug!("conn {}.{}: {v}", self.id.slot, self.id.generation);
                CloseReason::ProtocolError
            }
        };
        frames::encode_close(&mut self.out, reason.close_code(), reason.reason());
        self.input = BytesMut::new();
        self.partial = None;
        self.phase = Phase::Finishing;
        Outcome::Ended(Some(reason))
    }

    /// Closes for a rule the peer broke while the framing is intact.
    fn end(&mut self, reason: CloseReason) -> Outcome {
        self.close(reason);
        Outcome::Ended(Some(reason))
    }

    /// `Finishing` and `Linger`: reads and drops what the peer still sends, until it hangs up.
    fn discard(&mut self, turn: &mut Turn<'_>) -> Outcome {
        loop {
            if self.bytes_left == 0 {
                return self.yield_turn();
            }
            let read = self
                .transport
                .read(&mut turn.chunk[..READ_CHUNK.min(self.bytes_left)]);
            self.charge_wire_bytes();
            match read {
                Ok(ReadOutcome::Data(_) | ReadOutcome::Again) => {}
                Ok(ReadOutcome::WouldBlock) => return Outcome::Idle,
                // A peer may half-close after its request: what is queued for it still goes
                // out (the deadline bounds the wait), then the connection ends.
                Ok(ReadOutcome::End) if self.has_unsent() => return Outcome::Idle,
                Ok(ReadOutcome::End) | Err(_) => return self.done(),
            }
        }
    }
}

/// Why a frame cannot be read on.
#[derive(Debug)]
enum Bad {
    /// The message would be larger than allowed: 1009.
    TooBig,
    /// It breaks RFC 6455: 1002.
    Violation(Violation),
}

/// Takes the first whole frame off `buf`, its payload unmasked; `None` until it is all there.
/// A data frame longer than `max` is refused from its header alone.
fn take_frame(buf: &mut BytesMut, max: usize) -> Result<Option<(Header, BytesMut)>, Bad> {
    let Some(header) = frames::parse_header(buf).map_err(Bad::Violation)? else {
        return Ok(None);
    };
    if !header.opcode.is_control() && header.payload_len > max as u64 {
        return Err(Bad::TooBig);
    }
    // Fits in usize: at most `max` (or 125 for a control frame).
    let len = header.payload_len as usize;
    if buf.len() < header.header_len + len {
        return Ok(None);
    }
    buf.advance(header.header_len);
    let mut payload = buf.split_to(len);
    frames::unmask(&mut payload, header.mask);
    Ok(Some((header, payload)))
}
