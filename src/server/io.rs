//! One connection's reads and writes: the upgrade request and answer, then WebSocket
//! messages, each handed to the hub through the driver.

use std::io;

use log::{debug, warn};
use tungstenite::Message;

use super::driver::{Driver, TimerKind, READ_BUFFER};
use crate::close::CloseReason;
use crate::conn::{Drain, Phase, RequestStep, RespondStep, Then};
use crate::hub::ConnId;
use crate::limits::frame_len;
use crate::metrics::{HandshakeFailure, Limit};

/// Most messages read from one connection in one loop turn, so a busy peer cannot starve others.
const MAX_MESSAGES_PER_TURN: usize = 64;

impl Driver {
    /// Does whatever the connection's phase can do now.
    pub(super) fn on_ready(&mut self, slot: usize, writable: bool) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        match conn.phase {
            Phase::Request { .. } => match conn.read_request() {
                RequestStep::Pending => {}
                RequestStep::Upgrade(out, then) => {
                    conn.start_response(out, then);
                    self.write_response(slot);
                }
                RequestStep::Http(req) => {
                    let ip = conn.peer.ip();
                    let out = self.http_answer(ip, &req);
                    if let Some(conn) = self.conns.get_mut(slot) {
                        conn.start_response(out, Then::Close);
                    }
                    self.write_response(slot);
                }
                RequestStep::Refuse(out, why) => {
                    conn.start_response(out, Then::Close);
                    self.metrics.on_handshake_failure(why);
                    if why == HandshakeFailure::TooLarge {
                        self.metrics.on_limit(Limit::RequestSize);
                    }
                    self.write_response(slot);
                }
                RequestStep::Gone(why) => {
                    self.metrics.on_handshake_failure(why);
                    self.finish(slot);
                }
            },
            Phase::Respond { .. } => self.write_response(slot),
            Phase::Linger(_) | Phase::Failing(_) => {
                let failing = matches!(conn.phase, Phase::Failing(_));
                match conn.drain_linger() {
                    Drain::HungUp => return self.finish(slot),
                    Drain::More => self.again.push(slot),
                    Drain::Waiting => {}
                }
                // A failing connection still has its close frame to send.
                if failing && writable {
                    self.mark_dirty(slot);
                }
            }
            Phase::Open(_) | Phase::Closing(_) => {
                // A writable edge: flush what waited for room (events are hints: reading is
                // tried either way and stops at WouldBlock).
                if writable {
                    self.mark_dirty(slot);
                }
                self.read_messages(slot);
            }
            Phase::Done => {}
        }
    }

    fn write_response(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let id = conn.id;
        match conn.write_response(self.ws_config) {
            RespondStep::Pending => {}
            RespondStep::Gone => self.finish(slot),
            RespondStep::Lingering => match conn.drain_linger() {
                Drain::HungUp => self.finish(slot),
                Drain::More => self.again.push(slot),
                Drain::Waiting => {}
            },
            RespondStep::Upgraded(target) => {
                self.metrics.on_upgrade();
                self.start_timer(id, TimerKind::Heartbeat, self.config.heartbeat_interval);
                match &target {
                    Ok(t) => debug!(
                        "conn {}.{} open: key of {} bytes{}",
                        id.slot,
                        id.generation,
                        t.key.len(),
                        if t.favored { ", favored" } else { "" }
                    ),
                    Err(_) => debug!("conn {}.{} open with a bad URL", id.slot, id.generation),
                }
                let target = target.as_ref().ok().map(|t| (&t.key[..], t.favored));
                self.on_open(id, target);
                // Frames may have come with the request, or while the answer was written.
                self.read_messages(slot);
            }
        }
    }

    /// Reads and handles messages until the socket has no more, or the per-turn cap.
    fn read_messages(&mut self, slot: usize) {
        let rate = self.config.rate_limit;
        for _ in 0..MAX_MESSAGES_PER_TURN {
            let now = self.now;
            let Some(conn) = self.conns.get_mut(slot) else {
                return;
            };
            let id = conn.id;
            let open = matches!(conn.phase, Phase::Open(_));
            let Some(ws) = conn.ws() else { return };
            let message = match ws.read() {
                Ok(message) => message,
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => return self.on_ws_error(id, slot, e),
            };
            match &message {
                // tungstenite's read buffer keeps the size of the largest message.
                Message::Binary(b) if b.len() > READ_BUFFER && b.len() > conn.read_peak => {
                    conn.read_peak = b.len();
                    // Recounted at the flush.
                    if conn.mark_dirty() {
                        self.dirty.push(slot);
                    }
                }
                // tungstenite queued the pong (only while open); count it in the send queue.
                Message::Ping(data) if open => conn.handed += frame_len(data.len()) as u64,
                // The close reply echoes the code and reason (RFC 6455 §5.5.1).
                Message::Close(frame) => {
                    let body = frame.as_ref().map_or(0, |f| 2 + f.reason.len());
                    conn.handed += frame_len(body) as u64;
                }
                _ => {}
            }
            // Data that arrives after our close frame is dropped (RFC 6455 §5.5.1).
            if !open {
                if matches!(message, Message::Close(_)) {
                    self.mark_dirty(slot);
                }
                continue;
            }
            if !matches!(message, Message::Close(_)) && !conn.bucket.try_take(rate, now) {
                warn!(
                    "conn {}.{} ({}) closed: more than {rate} messages per second",
                    id.slot, id.generation, conn.peer
                );
                self.metrics.on_limit(Limit::Rate);
                self.close(id, CloseReason::RateLimited);
                continue;
            }
            match message {
                Message::Binary(frame) => self.on_message(id, frame),
                Message::Text(_) => self.close(id, CloseReason::TextFrame),
                Message::Close(frame) => {
                    debug!(
                        "conn {}.{} closed by the peer: {frame:?}",
                        id.slot, id.generation
                    );
                    // tungstenite queued the reply; it leaves with the flush.
                    conn.set_closing();
                    self.metrics.on_client_close();
                    self.start_close_timer(id);
                    self.mark_dirty(slot);
                    self.on_gone(id);
                }
                // The pong to a ping leaves with the flush.
                _ => self.mark_dirty(slot),
            }
        }
        self.again.push(slot);
    }

    fn on_ws_error(&mut self, id: ConnId, slot: usize, e: tungstenite::Error) {
        use tungstenite::error::ProtocolError as P;
        use tungstenite::Error as E;
        let reason = match e {
            E::Capacity(_) => CloseReason::MessageTooBig,
            E::Utf8(_) => CloseReason::TextFrame,
            E::Protocol(P::ResetWithoutClosingHandshake) => return self.finish(slot),
            E::Protocol(_) => CloseReason::ProtocolError,
            E::ConnectionClosed | E::AlreadyClosed => return self.finish(slot),
            other => {
                debug!("conn {}.{} failed: {other}", id.slot, id.generation);
                return self.finish(slot);
            }
        };
        let closing = self
            .conns
            .get(slot)
            .is_some_and(|c| matches!(c.phase, Phase::Closing(_)));
        if closing {
            return self.finish(slot);
        }
        if reason == CloseReason::MessageTooBig {
            warn!("conn {}.{} closed: {reason}", id.slot, id.generation);
            self.metrics.on_limit(Limit::MessageSize);
        }
        self.close(id, reason);
        // tungstenite cannot read this stream again (its state is mid-frame): only the close
        // frame goes out, then the connection lingers.
        if let Some(conn) = self.conns.get_mut(slot) {
            conn.set_failing();
        }
    }
}
