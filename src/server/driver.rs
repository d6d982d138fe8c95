//! The loop: one mio `Poll`, the listener, the slab of connections, the timer wheel and the
//! clock (read once per loop turn).
//!
//! A thin driver: it turns readiness into calls on [`Conn`] and [`Hub`] and applies the
//! effects the hub returns. Sockets are registered once for read and write (edge-triggered)
//! and every operation is drained to `WouldBlock`; each inner loop has a cap, and work left by
//! a cap is picked up next turn without waiting. Closed connections are reaped once per turn.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::{debug, info, warn};
use mio::net::TcpListener;
use mio::{Events, Poll, Token};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::Message;

use super::{Server, Shared, FIRST_LISTENER, MAX_LISTENERS, SIGNALS, WAKER};
use crate::close::CloseReason;
use crate::config::Config;
use crate::conn::{Conn, Phase};
use crate::error::Error;
use crate::hub::{ConnId, Effect, Hub};
use crate::limits::frame_len;
use crate::metrics::{Gauges, HandshakeFailure, Limit, Metrics};
use crate::timer::TimerWheel;

/// Bytes buffered before tungstenite writes on its own; below it, writes wait for the flush at
/// the end of the loop turn, so many messages to one peer leave in one system call.
const WRITE_BUFFER: usize = 64 * 1024;
/// Read buffer of each connection. tungstenite allocates it up front and holds it while the
/// connection idles, so it is small: signaling messages are small (an ICE candidate is about
/// 200 bytes) and a larger frame grows it as needed. 8 KiB here cost 9.1 KB of RSS per idle
/// connection; 1 KiB, 1.9 KB.
pub(super) const READ_BUFFER: usize = 1024;
/// Timers handled per loop turn; see `expire_timers`.
const MAX_TIMERS_PER_TURN: usize = 64;
/// Room kept in a full send queue for the close frame that reports it (RFC 6455 §5.5: a
/// control frame is at most 127 bytes).
const CLOSE_FRAME_ROOM: usize = 256;

/// What a timer entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimerKind {
    Handshake,
    Heartbeat,
    Close,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Timer {
    pub(super) id: ConnId,
    pub(super) kind: TimerKind,
    pub(super) at: u64,
}

/// The loop's state. Separate from [`Server`] so that `run` consumes the server once.
pub(super) struct Driver {
    pub(super) poll: Poll,
    pub(super) listeners: Vec<TcpListener>,
    pub(super) inherited: bool,
    pub(super) shared: Arc<Shared>,
    pub(super) tls: Option<Arc<rustls::ServerConfig>>,
    pub(super) signals: Option<Signals>,
    pub(super) config: Config,
    pub(super) ws_config: WebSocketConfig,
    pub(super) max_connections: usize,
    pub(super) conns: Slab<Conn>,
    /// Open connections per client address (refused ones excluded).
    pub(super) per_address: HashMap<IpAddr, usize>,
    /// Connections admitted only to be refused with an HTTP answer.
    pub(super) refusing: usize,
    /// Refusals since the last refusal log line, and when that line was written.
    pub(super) refusals_unlogged: u64,
    pub(super) refusal_logged_at: u64,
    pub(super) hub: Hub,
    pub(super) metrics: Metrics,
    /// Contents relayed this turn: observed into the latency histogram, with the turn's
    /// duration, once the turn's flush handed them to the kernel.
    relayed_this_turn: u64,
    /// When poll returned, starting this turn.
    turn_start: Instant,
    start_time: f64,
    pub(super) timers: TimerWheel<Timer>,
    effects: Vec<Effect>,
    spare_effects: Vec<Effect>,
    /// Due timers not handled yet (see `expire_timers`), oldest first.
    fired: Vec<Timer>,
    pub(super) dirty: Vec<usize>,
    gone: Vec<usize>,
    pub(super) again: Vec<usize>,
    /// Sum of the connections' `accounted` queued bytes.
    total_queued: usize,
    /// Sum of the connections' `held` buffer capacity: what the memory budget limits.
    total_held: usize,
    pub(super) accept_ready: bool,
    pub(super) accept_retry_at: Option<u64>,
    pub(super) next_generation: u32,
    start: Instant,
    pub(super) now: u64,
    pub(super) stopping_until: Option<u64>,
}

impl Driver {
    pub(super) fn new(server: Server) -> Self {
        let config = server.config;
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(WRITE_BUFFER)
            .max_write_buffer_size(
                (config.max_send_queue + CLOSE_FRAME_ROOM).max(WRITE_BUFFER + CLOSE_FRAME_ROOM),
            )
            .max_message_size(Some(config.max_message_size))
            .max_frame_size(Some(config.max_message_size));
        Self {
            poll: server.poll,
            listeners: server.listeners,
            inherited: server.inherited,
            shared: server.shared,
            tls: server.tls,
            signals: server.signals,
            ws_config,
            max_connections: server.max_connections,
            conns: Slab::new(),
            per_address: HashMap::new(),
            refusing: 0,
            refusals_unlogged: 0,
            refusal_logged_at: 0,
            hub: Hub::new(random_seed()),
            metrics: Metrics::default(),
            relayed_this_turn: 0,
            turn_start: Instant::now(),
            start_time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            timers: TimerWheel::default(),
            effects: Vec::new(),
            spare_effects: Vec::new(),
            fired: Vec::new(),
            dirty: Vec::new(),
            gone: Vec::new(),
            again: Vec::new(),
            total_queued: 0,
            total_held: 0,
            accept_ready: true,
            accept_retry_at: None,
            next_generation: 0,
            start: Instant::now(),
            now: 0,
            stopping_until: None,
            config,
        }
    }

    pub(super) fn run(&mut self) -> Result<(), Error> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(Error::Poll(e));
                }
            }
            // The clock, read once for the turn.
            self.turn_start = Instant::now();
            self.now = (self.turn_start - self.start).as_millis() as u64;
            for event in events.iter() {
                match event.token() {
                    WAKER => self.on_wake(),
                    SIGNALS => {
                        if self.on_signals() {
                            info!("Signaling server stopped at once on a second signal");
                            return Ok(());
                        }
                    }
                    Token(t) if t > FIRST_LISTENER - MAX_LISTENERS => self.accept_ready = true,
                    Token(slot) => {
                        let closed = event.is_read_closed() || event.is_error();
                        if event.is_readable() || closed {
                            if let Some(conn) = self.conns.get_mut(slot) {
                                conn.on_readable(closed);
                            }
                        }
                        self.on_ready(slot, event.is_writable());
                    }
                }
            }
            for slot in std::mem::take(&mut self.again) {
                self.on_ready(slot, false);
            }
            if self.accept_ready && self.accept_retry_at.is_none_or(|t| self.now >= t) {
                self.accept();
            }
            self.expire_timers();
            self.flush_and_reap();
            self.observe_relays();
            self.publish();
            if let Some(until) = self.stopping_until {
                if self.conns.is_empty() || self.now >= until {
                    info!(
                        "Signaling server stopped ({} connections dropped)",
                        self.conns.len()
                    );
                    return Ok(());
                }
            }
        }
    }

    fn clock(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn poll_timeout(&mut self) -> Option<Duration> {
        let work_left = !self.again.is_empty() || !self.fired.is_empty();
        if work_left || (self.accept_ready && self.accept_retry_at.is_none()) {
            return Some(Duration::ZERO);
        }
        let now = self.clock();
        let deadlines = [
            self.timers.next_deadline(),
            self.accept_retry_at.filter(|_| self.accept_ready),
            self.stopping_until,
        ];
        deadlines
            .into_iter()
            .flatten()
            .min()
            // Rounded up: waking a millisecond early would only find nothing due.
            .map(|d| Duration::from_millis(d.saturating_sub(now) + 1))
    }

    /// The turn's relayed messages are handed to the kernel (or queued behind a full socket):
    /// their time inside the server, from the start of the turn that read them, ends now.
    fn observe_relays(&mut self) {
        if self.relayed_this_turn > 0 {
            let spent = self.turn_start.elapsed();
            self.metrics.on_relayed(spent, self.relayed_this_turn);
            self.relayed_this_turn = 0;
        }
    }

    /// The values of the gauges, for a scrape.
    pub(super) fn gauges(&self) -> Gauges {
        let counters = self.hub.counters();
        Gauges {
            connections: self.conns.len(),
            groups: self.hub.group_count(),
            members: self.hub.member_count(),
            bindings: self.hub.binding_count(),
            queued_bytes: self.total_queued,
            buffered_bytes: self.total_held,
            relayed_messages: counters.relayed_messages,
            relayed_bytes: counters.relayed_bytes,
            heartbeat_timeouts: counters.heartbeat_timeouts,
            start_time: self.start_time,
            stopping: self.stopping_until.is_some(),
        }
    }

    /// Publishes the counts for [`super::Handle::stats`].
    fn publish(&self) {
        let s = &self.shared;
        s.connections.store(self.conns.len(), Ordering::Relaxed);
        s.peers.store(self.hub.peer_count(), Ordering::Relaxed);
        s.groups.store(self.hub.group_count(), Ordering::Relaxed);
        s.queued_bytes.store(self.total_queued, Ordering::Relaxed);
    }

    /// Closes a connection for `reason`: the hub forgets it and tells its partners.
    pub(super) fn close(&mut self, id: ConnId, reason: CloseReason) {
        self.hub.close(id, reason, &mut self.effects);
        self.apply_effects();
    }

    /// Lets the hub handle one binary message.
    pub(super) fn on_message(&mut self, id: ConnId, frame: Bytes) {
        let before = self.hub.counters().relayed_messages;
        self.hub.on_message(id, frame, &mut self.effects);
        self.relayed_this_turn += self.hub.counters().relayed_messages - before;
        self.apply_effects();
    }

    /// A WebSocket opened on `key`; a bad URL (no key) closes it with 4745.
    pub(super) fn on_open(&mut self, id: ConnId, target: Option<(&[u8], bool)>) {
        match target {
            Some((key, favored)) => self.hub.on_open(id, key, favored, &mut self.effects),
            None => self.effects.push(Effect::Close(id, CloseReason::BadUrl)),
        }
        self.apply_effects();
    }

    /// The peer is gone: the hub forgets it and tells its partners.
    pub(super) fn on_gone(&mut self, id: ConnId) {
        self.hub.on_close(id, &mut self.effects);
        self.apply_effects();
    }

    /// Applies the hub's effects, and those that applying them causes, in order.
    fn apply_effects(&mut self) {
        while !self.effects.is_empty() {
            let next = std::mem::take(&mut self.spare_effects);
            let mut batch = std::mem::replace(&mut self.effects, next);
            for effect in batch.drain(..) {
                match effect {
                    Effect::Send(id, bytes) => self.send(id, bytes),
                    Effect::Close(id, reason) => self.start_close(id, reason),
                }
            }
            self.spare_effects = batch;
        }
    }

    fn send(&mut self, id: ConnId, bytes: Bytes) {
        let max_send_queue = self.config.max_send_queue;
        let Some((slot, conn)) = self.lookup(id) else {
            return;
        };
        if !matches!(conn.phase, Phase::Open(_)) {
            return;
        }
        let frame = frame_len(bytes.len());
        if conn.queued() + frame > max_send_queue {
            warn!(
                "conn {}.{} ({}) closed: send queue full ({} bytes queued)",
                id.slot,
                id.generation,
                conn.peer,
                conn.queued()
            );
            self.metrics.on_limit(Limit::SendQueue);
            self.hub
                .close(id, CloseReason::SendQueueFull, &mut self.effects);
            return;
        }
        conn.handed += frame as u64;
        let Phase::Open(ws) = &mut conn.phase else {
            return;
        };
        match ws.write(Message::Binary(bytes)) {
            Ok(()) => self.mark_dirty(slot),
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.mark_dirty(slot)
            }
            Err(e) => {
                debug!("conn {}.{} write failed: {e}", id.slot, id.generation);
                self.finish(slot);
            }
        }
    }

    /// Queues a close frame and moves the connection to `Closing`.
    pub(super) fn start_close(&mut self, id: ConnId, reason: CloseReason) {
        let Some((slot, conn)) = self.lookup(id) else {
            return;
        };
        let Phase::Open(ws) = &mut conn.phase else {
            return;
        };
        debug!("conn {}.{} closing: {reason}", id.slot, id.generation);
        let frame = CloseFrame {
            code: reason.close_code().into(),
            reason: reason.reason().into(),
        };
        let result = ws.close(Some(frame));
        conn.handed += frame_len(2 + reason.reason().len()) as u64;
        match result {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return self.finish(slot),
        }
        conn.set_closing();
        self.metrics.on_server_close(reason);
        self.start_close_timer(id);
    }

    pub(super) fn start_close_timer(&mut self, id: ConnId) {
        self.start_timer(id, TimerKind::Close, self.config.close_timeout);
    }

    pub(super) fn start_timer(&mut self, id: ConnId, kind: TimerKind, after: Duration) {
        let at = self.now + after.as_millis() as u64;
        self.timers.insert(at, Timer { id, kind, at });
    }

    /// Handles due timers, at most `MAX_TIMERS_PER_TURN` a turn: peers that opened together
    /// tick together, and hundreds of heartbeats written in one turn would hold up the relays
    /// waiting behind them. The rest wait, in order, for the next turn, which comes at once.
    fn expire_timers(&mut self) {
        let mut fired = std::mem::take(&mut self.fired);
        self.timers.expire(self.now, &mut fired);
        let now_due = fired.len().min(MAX_TIMERS_PER_TURN);
        for timer in fired.drain(..now_due) {
            let Some((slot, conn)) = self.lookup(timer.id) else {
                continue;
            };
            let (id, kind) = (timer.id, timer.kind);
            match (kind, &conn.phase) {
                (
                    TimerKind::Handshake,
                    Phase::Request { .. } | Phase::Respond { .. } | Phase::Linger(_),
                ) => {
                    debug!(
                        "conn {}.{} dropped: handshake timeout",
                        id.slot, id.generation
                    );
                    // A lingering one already failed for another reason.
                    if !matches!(conn.phase, Phase::Linger(_)) {
                        self.metrics.on_handshake_failure(HandshakeFailure::Timeout);
                        self.metrics.on_limit(Limit::HandshakeTimeout);
                    }
                    self.finish(slot);
                }
                (TimerKind::Close, Phase::Closing(_) | Phase::Failing(_) | Phase::Linger(_)) => {
                    debug!("conn {}.{} dropped: close timeout", id.slot, id.generation);
                    self.finish(slot);
                }
                (TimerKind::Heartbeat, Phase::Open(_)) => {
                    self.hub.on_heartbeat_due(id, &mut self.effects);
                    self.apply_effects();
                    let still_open = self
                        .lookup(id)
                        .is_some_and(|(_, c)| matches!(c.phase, Phase::Open(_)));
                    if still_open {
                        // After a stall, one tick, not a burst of overdue ones (as setInterval).
                        let interval = self.config.heartbeat_interval.as_millis() as u64;
                        let at = (timer.at + interval).max(self.now + interval);
                        self.timers.insert(at, Timer { at, ..timer });
                    }
                }
                _ => {}
            }
        }
        self.fired = fired;
    }

    /// Flushes every connection written to this turn, then reaps the finished ones (whose
    /// disconnect notes may dirty others), until nothing is left to do; then holds the
    /// memory budget.
    fn flush_and_reap(&mut self) {
        loop {
            for slot in std::mem::take(&mut self.dirty) {
                self.flush(slot);
            }
            if self.gone.is_empty() {
                if self.total_held <= self.config.memory_budget || !self.enforce_memory_budget() {
                    return;
                }
                continue;
            }
            for slot in std::mem::take(&mut self.gone) {
                if let Some(conn) = self.conns.try_remove(slot) {
                    self.forget(&conn);
                    self.on_gone(conn.id);
                }
            }
            // A slot is free: an accept that stopped at a limit may go on.
            self.accept_retry_at = None;
        }
    }

    fn flush(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        conn.dirty = false;
        // The send buffer keeps the capacity of its largest queue.
        conn.write_peak = conn.write_peak.max(conn.queued());
        let failed = if matches!(conn.phase, Phase::Failing(_)) {
            conn.flush_failing()
                .is_err_and(|e| e.kind() != io::ErrorKind::WouldBlock)
        } else if let Some(ws) = conn.ws() {
            match ws.flush() {
                Ok(()) => false,
                Err(tungstenite::Error::Io(e)) => e.kind() != io::ErrorKind::WouldBlock,
                Err(_) => true,
            }
        } else {
            false
        };
        // Count what is still queued, and what the buffers hold, into the server's totals.
        let queued = conn.queued();
        self.total_queued = self.total_queued - conn.accounted + queued;
        conn.accounted = queued;
        let held = conn.read_peak + conn.write_peak;
        self.total_held = self.total_held - conn.held + held;
        conn.held = held;
        if failed {
            self.finish(slot);
        }
    }

    /// Past the memory budget, the connections holding the most buffer memory (queued bytes,
    /// and the capacity their buffers kept from large messages) are closed with 1008 and
    /// dropped at once (their buffers are what must go) until the total is under it. False
    /// when there was nothing to close.
    fn enforce_memory_budget(&mut self) -> bool {
        let mut heaviest: Vec<(usize, usize)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.held > 0)
            .map(|(slot, c)| (c.held, slot))
            .collect();
        heaviest.sort_unstable_by(|a, b| b.cmp(a));
        let closed_any = !heaviest.is_empty();
        let mut total = self.total_held;
        for (queued, slot) in heaviest {
            if total <= self.config.memory_budget {
                break;
            }
            let Some(conn) = self.conns.get(slot) else {
                continue;
            };
            let id = conn.id;
            self.metrics.on_limit(Limit::MemoryBudget);
            warn!(
                "conn {}.{} ({}) closed: memory budget of {} bytes spent, it held {queued}",
                id.slot, id.generation, conn.peer, self.config.memory_budget
            );
            self.close(id, CloseReason::MemoryBudget);
            self.finish(slot);
            total -= queued;
        }
        closed_any
    }

    /// Releases what a reaped connection held in the server's counts.
    fn forget(&mut self, conn: &Conn) {
        debug!("conn {}.{} reaped", conn.id.slot, conn.id.generation);
        self.total_queued -= conn.accounted;
        self.total_held -= conn.held;
        if conn.refusal.is_some() {
            self.refusing -= 1;
        } else if let Some(n) = self.per_address.get_mut(&conn.peer.ip()) {
            *n -= 1;
            if *n == 0 {
                self.per_address.remove(&conn.peer.ip());
            }
        }
    }

    /// The connection is over: drop its socket now, reap it at the end of the turn.
    pub(super) fn finish(&mut self, slot: usize) {
        if let Some(conn) = self.conns.get_mut(slot) {
            if conn.shut(self.poll.registry()) {
                self.gone.push(slot);
            }
        }
    }

    pub(super) fn mark_dirty(&mut self, slot: usize) {
        if self.conns.get_mut(slot).is_some_and(Conn::mark_dirty) {
            self.dirty.push(slot);
        }
    }

    pub(super) fn lookup(&mut self, id: ConnId) -> Option<(usize, &mut Conn)> {
        let slot = id.slot as usize;
        self.conns
            .get_mut(slot)
            .filter(|c| c.id == id)
            .map(|c| (slot, c))
    }
}

/// A seed for the signaling id generator that differs between runs, from the standard
/// library's per-process random hash keys (no extra dependency for one number).
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}
