//! One connection: its phase, which owns the transport and moves it on at each transition.
//!
//! `Request` reads the upgrade request, `Respond` writes the HTTP answer, then either `Open`
//! (a WebSocket the hub knows) or `Linger` (an HTTP error answer waiting for the client to
//! hang up); `Open` becomes `Closing` once a close frame is queued; `Done` waits to be reaped.
//! This module does the byte work of each phase; the server decides what follows.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::Registry;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::WebSocket;

use crate::handshake::{self, BadUrl, HttpRequest, Parse, Request, Target};
use crate::hub::ConnId;
use crate::limits::TokenBucket;
use crate::metrics::HandshakeFailure;
use crate::transport::Transport;

/// Bytes read from the socket at a time while upgrading.
const REQUEST_CHUNK: usize = 2048;
/// Reads of `REQUEST_CHUNK` a lingering client gets per loop turn, so that a client flooding
/// after its answer cannot hold the loop.
const LINGER_READS_PER_TURN: usize = 16;

/// A connection and where it stands.
#[derive(Debug)]
pub struct Conn {
    /// Its identity for the hub and the timers.
    pub id: ConnId,
    /// The client's address, for logs and the per-address count.
    pub peer: SocketAddr,
    /// Where it stands.
    pub phase: Phase,
    /// Queued in the flush list of this loop turn.
    pub dirty: bool,
    /// Admitted over a connection limit: its request is answered with this refusal.
    pub refusal: Option<Refusal>,
    /// Bytes of frames handed to the WebSocket for sending; minus what the transport took,
    /// that is what waits in the send queue.
    pub handed: u64,
    /// Queued bytes as last counted into the server's total.
    pub accounted: usize,
    /// The largest message read, when above the read buffer: tungstenite keeps its read
    /// buffer that large until the connection ends.
    pub read_peak: usize,
    /// The largest send queue seen: the send buffer keeps that capacity until the end.
    pub write_peak: usize,
    /// `read_peak + write_peak` as last counted into the server's total of buffered bytes.
    pub held: usize,
    /// Messages this connection may still send (rate limit).
    pub bucket: TokenBucket,
}

/// Why a connection over a limit is refused (it still gets an HTTP answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The server holds its maximum number of connections: 503.
    Full,
    /// This address holds its maximum number of connections: 429.
    PerAddress,
    /// The server is stopping: 503.
    Stopping,
}

impl Refusal {
    fn step(self) -> RequestStep {
        match self {
            Self::Full => RequestStep::Refuse(
                handshake::error_response(
                    503,
                    "Service Unavailable",
                    "Retry-After: 5\r\n",
                    "Too many connections; try again later.\n",
                ),
                HandshakeFailure::RefusedFull,
            ),
            Self::PerAddress => RequestStep::Refuse(
                handshake::error_response(
                    429,
                    "Too Many Requests",
                    "Retry-After: 5\r\n",
                    "Too many connections from your address.\n",
                ),
                HandshakeFailure::RefusedPerAddress,
            ),
            Self::Stopping => RequestStep::Refuse(
                handshake::error_response(
                    503,
                    "Service Unavailable",
                    "Retry-After: 5\r\n",
                    "The server is stopping; try again shortly.\n",
                ),
                HandshakeFailure::RefusedStopping,
            ),
        }
    }
}

/// A read error before the upgrade: TLS errors come from the TLS stream as `InvalidData`.
fn failure(e: &io::Error) -> HandshakeFailure {
    if e.kind() == io::ErrorKind::InvalidData {
        HandshakeFailure::Tls
    } else {
        HandshakeFailure::ClosedEarly
    }
}

/// The phases of a connection. See the module documentation.
#[derive(Debug)]
pub enum Phase {
    /// Reading the HTTP request head.
    Request {
        /// The socket.
        stream: Transport,
        /// The bytes read so far.
        buf: Vec<u8>,
    },
    /// Writing the HTTP answer.
    Respond {
        /// The socket.
        stream: Transport,
        /// The whole answer.
        out: Vec<u8>,
        /// How much of it is written.
        written: usize,
        /// What follows once it is written.
        then: Then,
    },
    /// Upgraded; the hub knows the peer.
    Open(Box<WebSocket<Transport>>),
    /// A close frame is queued; waiting for the peer's answer.
    Closing(Box<WebSocket<Transport>>),
    /// The peer broke the framing (a frame too big, a protocol error): tungstenite cannot
    /// read from it again. The close frame is queued; once it is written, the connection
    /// lingers.
    Failing(Box<WebSocket<Transport>>),
    /// A last answer (HTTP error, or close frame after broken framing) was sent and the write
    /// side shut: reading until the client hangs up, so that closing does not reset the
    /// connection before the client read the answer.
    Linger(Transport),
    /// Nothing left; waiting to be reaped.
    Done,
}

/// What follows the HTTP answer.
#[derive(Debug)]
pub enum Then {
    /// Become a WebSocket; `leftover` holds frames the client sent right after its request.
    Upgrade {
        /// Bytes read past the request head.
        leftover: Vec<u8>,
        /// Key and `favored`, or a bad URL.
        target: Result<Target, BadUrl>,
    },
    /// Shut the write side and linger.
    Close,
}

/// What reading the request produced.
#[derive(Debug)]
pub enum RequestStep {
    /// More bytes are needed.
    Pending,
    /// A valid upgrade: answer with these bytes, then become a WebSocket.
    Upgrade(Vec<u8>, Then),
    /// A plain HTTP request, for the server's endpoints.
    Http(HttpRequest),
    /// Refused with this HTTP error answer (and counted under this failure).
    Refuse(Vec<u8>, HandshakeFailure),
    /// The client went away or the socket failed.
    Gone(HandshakeFailure),
}

/// What discarding a lingering client's bytes found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// The client hung up (or the socket failed): the connection can go.
    HungUp,
    /// Nothing more to read for now.
    Waiting,
    /// The per-turn share was read and more may wait.
    More,
}

/// What writing the answer produced.
#[derive(Debug)]
pub enum RespondStep {
    /// The socket is full; wait for it to drain.
    Pending,
    /// The answer is out and the connection is now `Open`.
    Upgraded(Result<Target, BadUrl>),
    /// The answer is out and the connection lingers.
    Lingering,
    /// The socket failed.
    Gone,
}

impl Conn {
    /// Reads what the socket has and classifies the request once its head is complete.
    pub fn read_request(&mut self) -> RequestStep {
        let Phase::Request { stream, buf } = &mut self.phase else {
            return RequestStep::Pending;
        };
        // TLS handshake records wait here when the socket was full.
        match stream.flush() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => {
                return RequestStep::Gone(failure(&e))
            }
            _ => {}
        }
        let mut chunk = [0u8; REQUEST_CHUNK];
        let mut ended = false;
        loop {
            match stream.read(&mut chunk) {
                // A client may half-close after its request: answer what it sent.
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.len() > handshake::MAX_REQUEST_BYTES {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return RequestStep::Gone(failure(&e)),
            }
        }
        let parsed = handshake::parse(buf);
        if ended && parsed == Parse::Partial {
            return RequestStep::Gone(HandshakeFailure::ClosedEarly);
        }
        // A refusal answers upgrades; the endpoints (health checks) are still answered.
        if let (
            Some(refusal),
            Parse::Done {
                request: Request::Upgrade(_),
                ..
            },
        ) = (self.refusal, &parsed)
        {
            return refusal.step();
        }
        match parsed {
            Parse::Partial => RequestStep::Pending,
            Parse::TooLarge => RequestStep::Refuse(
                handshake::error_response(431, "Request Header Fields Too Large", "", ""),
                HandshakeFailure::TooLarge,
            ),
            Parse::Done { consumed, request } => match request {
                Request::Upgrade(u) => RequestStep::Upgrade(
                    handshake::switching_protocols(&u),
                    Then::Upgrade {
                        leftover: buf[consumed..].to_vec(),
                        target: u.target,
                    },
                ),
                Request::Http(r) => RequestStep::Http(r),
                Request::WrongVersion => RequestStep::Refuse(
                    handshake::error_response(
                        426,
                        "Upgrade Required",
                        "Sec-WebSocket-Version: 13\r\n",
                        "Only WebSocket version 13 is supported.\n",
                    ),
                    HandshakeFailure::WrongVersion,
                ),
                Request::Malformed => RequestStep::Refuse(
                    handshake::error_response(400, "Bad Request", "", "Bad request.\n"),
                    HandshakeFailure::BadRequest,
                ),
            },
        }
    }

    /// Moves from `Request` to `Respond` with this answer.
    pub fn start_response(&mut self, out: Vec<u8>, then: Then) {
        if let Phase::Request { stream, .. } = std::mem::replace(&mut self.phase, Phase::Done) {
            self.phase = Phase::Respond {
                stream,
                out,
                written: 0,
                then,
            };
        }
    }

    /// Writes the rest of the answer; once it is out, moves on to `Open` or `Linger`.
    pub fn write_response(&mut self, ws_config: WebSocketConfig) -> RespondStep {
        let Phase::Respond {
            stream,
            out,
            written,
            then,
        } = &mut self.phase
        else {
            return RespondStep::Pending;
        };
        while *written < out.len() {
            match stream.write(&out[*written..]) {
                Ok(n) => *written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return RespondStep::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return RespondStep::Gone,
            }
        }
        // An answer before a close must leave rustls' buffer too, or the shutdown cuts it.
        if matches!(then, Then::Close) {
            match stream.flush() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return RespondStep::Pending,
                Err(_) => return RespondStep::Gone,
            }
        }
        let Phase::Respond {
            mut stream, then, ..
        } = std::mem::replace(&mut self.phase, Phase::Done)
        else {
            return RespondStep::Gone;
        };
        match then {
            Then::Upgrade { leftover, target } => {
                let ws =
                    WebSocket::from_partially_read(stream, leftover, Role::Server, Some(ws_config));
                self.phase = Phase::Open(Box::new(ws));
                RespondStep::Upgraded(target)
            }
            Then::Close => {
                stream.close_write();
                self.phase = Phase::Linger(stream);
                RespondStep::Lingering
            }
        }
    }

    /// Discards what a lingering or failing client still sends, a bounded amount per turn.
    pub fn drain_linger(&mut self) -> Drain {
        let stream = match &mut self.phase {
            Phase::Linger(stream) => stream,
            Phase::Failing(ws) => ws.get_mut(),
            _ => return Drain::Waiting,
        };
        let mut chunk = [0u8; REQUEST_CHUNK];
        for _ in 0..LINGER_READS_PER_TURN {
            match stream.read(&mut chunk) {
                Ok(0) => return Drain::HungUp,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Drain::Waiting,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Drain::HungUp,
            }
        }
        Drain::More
    }

    /// Puts the connection on this turn's flush list; true when it was not on it yet (the
    /// caller then records the slot).
    pub fn mark_dirty(&mut self) -> bool {
        !std::mem::replace(&mut self.dirty, true)
    }

    /// The socket reported readable (`read_closed`: the peer shut its side).
    pub fn on_readable(&mut self, read_closed: bool) {
        match &mut self.phase {
            Phase::Request { stream, .. }
            | Phase::Respond { stream, .. }
            | Phase::Linger(stream) => stream.on_readable(read_closed),
            Phase::Open(ws) | Phase::Closing(ws) | Phase::Failing(ws) => {
                ws.get_mut().on_readable(read_closed)
            }
            Phase::Done => {}
        }
    }

    /// Bytes handed for sending that the transport has not taken yet.
    pub fn queued(&self) -> usize {
        let written = match &self.phase {
            Phase::Open(ws) | Phase::Closing(ws) | Phase::Failing(ws) => ws.get_ref().written(),
            _ => return 0,
        };
        usize::try_from(self.handed.saturating_sub(written)).unwrap_or(usize::MAX)
    }

    /// The WebSocket of an `Open` or `Closing` connection.
    pub fn ws(&mut self) -> Option<&mut WebSocket<Transport>> {
        match &mut self.phase {
            Phase::Open(ws) | Phase::Closing(ws) => Some(ws),
            _ => None,
        }
    }

    /// Moves from `Open` to `Closing` (the close frame is queued by the caller).
    pub fn set_closing(&mut self) {
        if let Phase::Open(ws) = std::mem::replace(&mut self.phase, Phase::Done) {
            self.phase = Phase::Closing(ws);
        }
    }

    /// Moves from `Closing` to `Failing`: no more reads through tungstenite.
    pub fn set_failing(&mut self) {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Closing(ws) => self.phase = Phase::Failing(ws),
            other => self.phase = other,
        }
    }

    /// Flushes a `Failing` connection's close frame; once it is out, shuts the write side and
    /// lingers. `Err` when the socket failed.
    pub fn flush_failing(&mut self) -> io::Result<()> {
        let Phase::Failing(ws) = &mut self.phase else {
            return Ok(());
        };
        match ws.flush() {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) => return Err(e),
            Err(e) => return Err(io::Error::other(e)),
        }
        if let Phase::Failing(ws) = std::mem::replace(&mut self.phase, Phase::Done) {
            let mut stream = ws.into_inner();
            stream.close_write();
            self.phase = Phase::Linger(stream);
        }
        Ok(())
    }

    /// Deregisters and drops the socket; the connection is `Done`. True if it was not already.
    pub fn shut(&mut self, registry: &Registry) -> bool {
        let stream = match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Request { stream, .. }
            | Phase::Respond { stream, .. }
            | Phase::Linger(stream) => stream,
            Phase::Open(ws) | Phase::Closing(ws) | Phase::Failing(ws) => ws.into_inner(),
            Phase::Done => return false,
        };
        let mut stream = stream;
        // A plain socket needs no shutdown before close: close sends the FIN.
        stream.close_notify();
        // Ignored failure: the fd is closed right after, which removes it from epoll anyway.
        let _ = registry.deregister(stream.tcp());
        true
    }
}
