//! The loop: one mio `Poll`, the listeners, the slab of connections, the timer wheel and the
//! clock (read once per loop turn).
//!
//! A thin driver: it turns readiness into [`Conn::step`] calls, routes each outcome (to the
//! hub, the timers, the counters), applies the effects the hub returns, flushes what was
//! written and reaps what is done. It never reaches inside a connection. Each connection gets
//! a bounded share of work per turn; one that has more left is stepped again next turn, which
//! comes at once.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use log::{debug, info, warn};
use mio::net::TcpListener;
use mio::{Events, Poll, Token};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use super::{Server, Shared, FIRST_LISTENER, MAX_LISTENERS, SIGNALS, WAKER};
use crate::access;
use crate::close::CloseReason;
use crate::config::Config;
use crate::conn::{
    Conn, Deadline, Flush, Limits, Outcome, Shed, Turn, READ_CHUNK, TLS_STEPS_PER_TURN,
};
use crate::error::Error;
use crate::handshake::Request;
use crate::history::History;
use crate::http::{self, Answer, Refusal};
use crate::hub::{ConnId, Effect, Hub};
use crate::keys::Secrets;
use crate::metrics::{Gauges, HandshakeFailure, Limit, Metrics};
use crate::throttle::{skipped_note, Throttle};
use crate::tickets::TicketKeys;
use crate::timer::TimerWheel;

/// Timers handled per loop turn; see `expire_timers`.
const MAX_TIMERS_PER_TURN: usize = 64;
/// Capacity of the read buffer the connections share.
const SCRATCH: usize = 64 * 1024;

/// What a timer entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimerKind {
    Deadline(Deadline),
    Heartbeat,
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
    /// The session ticket keys, and when they rotate next (see `rotate_ticket_keys`).
    pub(super) tickets: Option<Arc<TicketKeys>>,
    pub(super) tickets_rotate_at: u64,
    /// With `--key-secret`: checked when a WebSocket opens, reloaded with the TLS files.
    pub(super) key_secrets: Option<Secrets>,
    pub(super) signals: Option<Signals>,
    pub(super) config: Config,
    limits: Limits,
    pub(super) max_connections: usize,
    pub(super) max_refusing: usize,
    pub(super) conns: Slab<Conn>,
    /// Open connections per client address (refused ones excluded).
    pub(super) per_address: HashMap<IpAddr, usize>,
    /// Connections admitted only to be refused with an HTTP answer.
    pub(super) refusing: usize,
    /// Log lines a client can trigger: refusals by kind, closes by reason.
    pub(super) refusal_logs: Throttle<3>,
    /// Accept failures for want of descriptors or memory (one kind).
    pub(super) accept_failure_logs: Throttle<1>,
    close_logs: Throttle<{ CloseReason::ALL.len() }>,
    pub(super) hub: Hub,
    pub(super) metrics: Metrics,
    /// The status page's samples, and when the next one is due.
    history: History,
    next_sample_at: u64,
    /// Contents relayed this turn: observed into the latency histogram, with the turn's
    /// duration, once the turn's flush handed them to the kernel.
    relayed_this_turn: u64,
    /// When poll returned, starting this turn, and the turn's number.
    turn_start: Instant,
    turn: u64,
    start_time: f64,
    pub(super) timers: TimerWheel<Timer>,
    effects: Vec<Effect>,
    spare_effects: Vec<Effect>,
    /// Due timers not handled yet (see `expire_timers`), oldest first.
    fired: VecDeque<Timer>,
    expired: Vec<Timer>,
    scratch: BytesMut,
    dirty: Vec<usize>,
    gone: Vec<usize>,
    again: Vec<usize>,
    /// TLS handshake steps left in this turn (see [`Turn::tls_steps_left`]).
    tls_steps_left: u32,
    /// See [`Turn::chunk`].
    chunk: Box<[u8; READ_CHUNK]>,
    /// Sums of what the connections hold, as they last reported it.
    total_queued: usize,
    total_buffers: usize,
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
        Self {
            poll: server.poll,
            listeners: server.listeners,
            inherited: server.inherited,
            shared: server.shared,
            tls: server.tls,
            tickets: server.tickets,
            tickets_rotate_at: ms(config.tls_ticket_rotation.as_millis()),
            key_secrets: server.key_secrets,
            signals: server.signals,
            limits: Limits {
                max_message_size: config.max_message_size,
                max_send_queue: config.max_send_queue,
                rate_limit: config.rate_limit,
            },
            max_connections: server.max_connections,
            max_refusing: server.max_refusing,
            conns: Slab::new(),
            per_address: HashMap::new(),
            refusing: 0,
            refusal_logs: Throttle::default(),
            accept_failure_logs: Throttle::default(),
            close_logs: Throttle::default(),
            hub: Hub::new(random_seed()).with_max_group_size(config.max_group_size),
            metrics: Metrics::default(),
            history: History::default(),
            // The first turn notes where the counters start.
            next_sample_at: 0,
            relayed_this_turn: 0,
            turn_start: Instant::now(),
            turn: 0,
            start_time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            timers: TimerWheel::default(),
            effects: Vec::new(),
            spare_effects: Vec::new(),
            fired: VecDeque::new(),
            expired: Vec::new(),
            scratch: BytesMut::with_capacity(SCRATCH),
            dirty: Vec::new(),
            gone: Vec::new(),
            again: Vec::new(),
            tls_steps_left: TLS_STEPS_PER_TURN,
            chunk: Box::new([0; READ_CHUNK]),
            total_queued: 0,
            total_buffers: 0,
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
            self.now = ms((self.turn_start - self.start).as_millis());
            self.turn += 1;
            self.tls_steps_left = TLS_STEPS_PER_TURN;
            // Those left over from the last turn go first: a connection waiting for a TLS
            // handshake step is served before new arrivals spend the turn's steps, so that
            // a stream of fresh events cannot keep it waiting.
            for slot in std::mem::take(&mut self.again) {
                self.drive(slot);
            }
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
                        let Some(conn) = self.conns.get_mut(slot) else {
                            continue;
                        };
                        conn.on_ready(event.is_readable(), event.is_writable(), closed);
                        // A writable edge: what waited for room can go (events are hints:
                        // reading is tried either way and stops when there is nothing).
                        if conn.wants_flush() && conn.list() {
                            self.dirty.push(slot);
                        }
                        self.drive(slot);
                    }
                }
            }
            if self.accept_ready && self.accept_retry_at.is_none_or(|t| self.now >= t) {
                self.accept();
            }
            self.expire_timers();
            self.sample_history();
            self.rotate_ticket_keys();
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
        ms(self.start.elapsed().as_millis())
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
            Some(self.next_sample_at),
            self.tickets.as_ref().map(|_| self.tickets_rotate_at),
        ];
        deadlines
            .into_iter()
            .flatten()
            .min()
            // Rounded up: waking a millisecond early would only find nothing due.
            .map(|d| Duration::from_millis(d.saturating_sub(now).saturating_add(1)))
    }

    /// Steps a connection until it waits, yields its turn or is done, routing each outcome.
    fn drive(&mut self, slot: usize) {
        // The shared read buffer holds one connection's bytes, and only between two steps of
        // this loop: whatever another connection left there is not this one's.
        self.scratch.clear();
        loop {
            let Some(conn) = self.conns.get_mut(slot) else {
                return;
            };
            let id = conn.id();
            let mut turn = Turn {
                number: self.turn,
                now: self.now,
                scratch: &mut self.scratch,
                limits: &self.limits,
                tls_steps_left: &mut self.tls_steps_left,
                chunk: &mut self.chunk,
            };
            match conn.step(&mut turn) {
                Outcome::Idle => break,
                Outcome::Yield => {
                    self.again.push(slot);
                    break;
                }
                Outcome::Done => {
                    self.gone.push(slot);
                    break;
                }
                Outcome::Failed(why) => {
                    self.metrics.on_handshake_failure(why);
                    self.gone.push(slot);
                    break;
                }
                Outcome::Request(request) => self.on_request(slot, request.as_ref()),
                Outcome::Opened(target) => self.on_open(slot, id, target.ok()),
                Outcome::Message(message) => {
                    let before = self.hub.counters().relayed_messages;
                    self.hub.on_message(id, message, &mut self.effects);
                    self.relayed_this_turn += self.hub.counters().relayed_messages - before;
                    self.apply_effects();
                }
                Outcome::Ended(reason) => self.on_ended(slot, id, reason),
            }
        }
        self.settle(slot);
    }

    /// Answers a complete request head.
    fn on_request(&mut self, slot: usize, request: Option<&Request>) {
        let refusal = self.identify_client(slot, request);
        let Some(conn) = self.conns.get(slot) else {
            return;
        };
        let client = conn.client();
        // The handshake is over by the time a request head is read.
        if let Some(resumed) = conn.tls_resumed() {
            self.metrics.on_tls_handshake(resumed);
        }
        let ctx = http::Context {
            refusal,
            stopping: self.stopping_until.is_some(),
            metrics_allowed: self.config.metrics_allow.iter().any(|n| n.contains(client)),
            origins: &self.config.origins,
            metrics: &|| self.metrics.render(&self.gauges()),
            status: &|| {
                let interval = ms(self.config.status_interval.as_millis());
                self.history
                    .render(interval, &self.gauges(), self.config.memory_budget)
            },
        };
        let answer = http::answer(request, &ctx);
        if let Answer::Close(_, Some(why)) = &answer {
            self.metrics.on_handshake_failure(*why);
            if *why == HandshakeFailure::TooLarge {
                self.metrics.on_limit(Limit::RequestSize);
            }
        }
        if let Some(conn) = self.conns.get_mut(slot) {
            conn.answer(answer);
        }
    }

    /// Behind a trusted proxy, takes the client's address from the request and counts the
    /// connection under it in the per-address limit; the refusal the request gets, if any.
    fn identify_client(&mut self, slot: usize, request: Option<&Request>) -> Option<Refusal> {
        let conn = self.conns.get(slot)?;
        let (peer, refusal) = (conn.peer(), conn.refusal());
        if refusal.is_some() {
            return refusal;
        }
        let client = if conn.proxied() {
            // The PROXY protocol header named it.
            conn.client()
        } else if self.is_trusted_proxy(peer.ip()) {
            let source = match request {
                Some(Request::Upgrade(u)) => Some(&u.source),
                Some(Request::Http(h)) => Some(&h.source),
                _ => None,
            };
            access::client_address(
                peer.ip(),
                &self.config.trusted_proxies,
                source.and_then(|s| s.forwarded_for.as_deref()),
                source.and_then(|s| s.real_ip.as_deref()),
            )
        } else {
            return None;
        };
        if let Some(conn) = self.conns.get_mut(slot) {
            conn.set_client(client);
        }
        let upgrade = matches!(request, Some(Request::Upgrade(_)));
        if upgrade && self.per_address_full(client) {
            self.note_refusal(client, Refusal::PerAddress);
            return Some(Refusal::PerAddress);
        }
        self.count_address(slot, client);
        None
    }

    /// A WebSocket opened; a bad URL (no key) closes it with 4745, and with `--key-secret` a
    /// key that is not signed closes it with 4741 before the hub sees it (after the upgrade,
    /// as for any bad key, so that the client sees the code: docs/PROTOCOL.md §1).
    fn on_open(&mut self, slot: usize, id: ConnId, target: Option<crate::handshake::Target>) {
        self.metrics.on_upgrade();
        if self.stopping_until.is_some() {
            // Its 101 was on its way when the stop began.
            return self.close(slot, CloseReason::Shutdown);
        }
        self.start_timer(id, TimerKind::Heartbeat, self.config.heartbeat_interval);
        match target {
            Some(t)
                if self
                    .key_secrets
                    .as_ref()
                    .is_some_and(|s| !s.is_signed(&t.key)) =>
            {
                debug!("conn {}.{} open: key not signed", id.slot, id.generation);
                self.effects
                    .push(Effect::Close(id, CloseReason::KeyNotSigned));
            }
            Some(t) => {
                debug!(
                    "conn {}.{} open: key of {} bytes{}",
                    id.slot,
                    id.generation,
                    t.key.len(),
                    if t.favored { ", favored" } else { "" }
                );
                self.hub.on_open(id, &t.key, t.favored, &mut self.effects);
            }
            None => self.effects.push(Effect::Close(id, CloseReason::BadUrl)),
        }
        self.apply_effects();
    }

    /// The WebSocket is over for the hub: by the peer (`None`) or by the connection itself.
    fn on_ended(&mut self, slot: usize, id: ConnId, reason: Option<CloseReason>) {
        match reason {
            None => self.metrics.on_client_close(),
            Some(reason) => self.on_server_close(slot, reason),
        }
        self.start_timer(
            id,
            TimerKind::Deadline(Deadline::Close),
            self.config.close_timeout,
        );
        self.hub.on_close(id, &mut self.effects);
        self.apply_effects();
    }

    /// Counts a close frame the server queued, and logs it: limits and broken rules at warn,
    /// throttled, since a client can cause them at will.
    fn on_server_close(&mut self, slot: usize, reason: CloseReason) {
        self.metrics.on_server_close(reason);
        let Some(conn) = self.conns.get(slot) else {
            return;
        };
        let (id, peer) = (conn.id(), conn.client());
        let client_caused = Limit::of(reason).is_some() || reason == CloseReason::ProtocolError;
        if !client_caused {
            return debug!("conn {}.{} closing: {reason}", id.slot, id.generation);
        }
        if let Some(skipped) = self.close_logs.allow(reason.index(), self.now) {
            let limit = Limit::of(reason).map_or("protocol", Limit::label);
            warn!(
                conn:% = id, client:% = peer, code = reason.close_code(), limit, skipped;
                "conn {}.{} ({peer}) closed: {reason}{}",
                id.slot,
                id.generation,
                skipped_note(skipped)
            );
        }
    }

    /// Closes an open connection with `reason` (the hub has forgotten it, or never knew it).
    fn close(&mut self, slot: usize, reason: CloseReason) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let id = conn.id();
        if conn.close(reason) {
            self.on_server_close(slot, reason);
            self.start_timer(
                id,
                TimerKind::Deadline(Deadline::Close),
                self.config.close_timeout,
            );
        }
        self.settle(slot);
    }

    /// Applies the hub's effects, and those that applying them causes, in order.
    fn apply_effects(&mut self) {
        while !self.effects.is_empty() {
            let next = std::mem::take(&mut self.spare_effects);
            let mut batch = std::mem::replace(&mut self.effects, next);
            for effect in batch.drain(..) {
                match effect {
                    Effect::Send(id, bytes) => self.send(id, &bytes),
                    Effect::Close(id, reason) => {
                        if let Some(slot) = self.slot_of(id) {
                            self.close(slot, reason);
                        }
                    }
                }
            }
            self.spare_effects = batch;
        }
    }

    fn send(&mut self, id: ConnId, bytes: &[u8]) {
        let Some(slot) = self.slot_of(id) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if let Err(reason) = conn.send(bytes, &self.limits) {
            // It gave up its queue and queued its close: the hub forgets it.
            self.on_ended(slot, id, Some(reason));
        }
        self.settle(slot);
    }

    /// After any work on a connection: its counts into the totals, its queue on the flush
    /// list.
    fn settle(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let (old, new) = conn.report();
        self.total_queued = self.total_queued - old.queued + new.queued;
        self.total_buffers = self.total_buffers - old.buffers + new.buffers;
        if conn.wants_flush() && conn.list() {
            self.dirty.push(slot);
        }
    }

    pub(super) fn start_timer(&mut self, id: ConnId, kind: TimerKind, after: Duration) {
        let at = self.now.saturating_add(ms(after.as_millis()));
        self.timers.insert(at, Timer { id, kind, at });
    }

    /// Handles due timers, at most `MAX_TIMERS_PER_TURN` a turn: peers that opened together
    /// tick together, and hundreds of heartbeats written in one turn would hold up the relays
    /// waiting behind them. The rest wait, in order, for the next turn, which comes at once.
    fn expire_timers(&mut self) {
        self.timers.expire(self.now, &mut self.expired);
        self.fired.extend(self.expired.drain(..));
        for _ in 0..MAX_TIMERS_PER_TURN {
            let Some(timer) = self.fired.pop_front() else {
                break;
            };
            let Some(slot) = self.slot_of(timer.id) else {
                continue;
            };
            let id = timer.id;
            match timer.kind {
                TimerKind::Deadline(deadline) => {
                    let Some(conn) = self.conns.get_mut(slot) else {
                        continue;
                    };
                    let Some(upgrading) = conn.on_deadline(deadline) else {
                        continue;
                    };
                    debug!(
                        "conn {}.{} dropped: {deadline:?} timeout",
                        id.slot, id.generation
                    );
                    if upgrading {
                        self.metrics.on_handshake_failure(HandshakeFailure::Timeout);
                        self.metrics.on_limit(Limit::HandshakeTimeout);
                    }
                    self.gone.push(slot);
                    self.settle(slot);
                }
                TimerKind::Heartbeat => {
                    if !self.conns.get(slot).is_some_and(Conn::is_open) {
                        continue;
                    }
                    self.hub.on_heartbeat_due(id, &mut self.effects);
                    self.apply_effects();
                    if self.conns.get(slot).is_some_and(Conn::is_open) {
                        // After a stall, one tick, not a burst of overdue ones (as setInterval).
                        let interval = ms(self.config.heartbeat_interval.as_millis());
                        let at = (timer.at.saturating_add(interval))
                            .max(self.now.saturating_add(interval));
                        self.timers.insert(at, Timer { at, ..timer });
                    }
                }
            }
        }
    }

    /// Flushes every connection written to this turn, holds the memory budget, then reaps the
    /// finished ones (whose disconnect notes may dirty others), until nothing is left to do.
    fn flush_and_reap(&mut self) {
        loop {
            for slot in std::mem::take(&mut self.dirty) {
                self.flush(slot);
            }
            if self.total_buffers > self.config.memory_budget && self.enforce_memory_budget() {
                continue;
            }
            if self.gone.is_empty() {
                return;
            }
            for slot in std::mem::take(&mut self.gone) {
                let reaped = self.conns.get(slot).is_some_and(Conn::is_done);
                if !reaped {
                    continue;
                }
                let mut conn = self.conns.remove(slot);
                // Ignored failure: the socket is closed right after, which removes it anyway.
                let _ = self.poll.registry().deregister(conn.socket());
                self.forget(&mut conn);
                self.hub.on_close(conn.id(), &mut self.effects);
                self.apply_effects();
            }
            // A slot is free: an accept that stopped at a limit may go on.
            self.accept_retry_at = None;
        }
    }

    fn flush(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let lingering_before = conn.is_lingering();
        let failed = conn.flush() == Flush::Failed;
        // Its last words are out: what the peer still sends is read (and dropped) until it
        // hangs up, which may have happened already.
        let now_lingering = conn.is_lingering() && !lingering_before;
        self.settle(slot);
        if failed {
            self.gone.push(slot);
        } else if now_lingering {
            self.again.push(slot);
        }
    }

    /// Past the memory budget, the connections holding the most (queues, partial messages,
    /// read buffers, request heads) give it up at once, until the total is under it: an open
    /// one is closed with 1008, any other is dropped. False when nothing could be shed.
    fn enforce_memory_budget(&mut self) -> bool {
        let mut heaviest: Vec<(usize, usize)> = self
            .conns
            .iter()
            .map(|(slot, c)| (c.held().buffers, slot))
            .filter(|&(held, _)| held > 0)
            .collect();
        heaviest.sort_unstable_by(|a, b| b.cmp(a));
        let mut shed_any = false;
        for (held, slot) in heaviest {
            if self.total_buffers <= self.config.memory_budget {
                break;
            }
            let Some(conn) = self.conns.get_mut(slot) else {
                continue;
            };
            let id = conn.id();
            debug!(
                "conn {}.{}: memory budget of {} bytes spent, it held {held}",
                id.slot, id.generation, self.config.memory_budget
            );
            match conn.shed() {
                Shed::Nothing => continue,
                Shed::Closed => self.on_ended(slot, id, Some(CloseReason::MemoryBudget)),
                Shed::Dropped => {
                    self.metrics.on_limit(Limit::MemoryBudget);
                    self.gone.push(slot);
                }
            }
            shed_any = true;
            self.settle(slot);
        }
        shed_any
    }

    /// Releases what a reaped connection held in the server's counts.
    fn forget(&mut self, conn: &mut Conn) {
        let id = conn.id();
        debug!("conn {}.{} reaped", id.slot, id.generation);
        let (old, _) = conn.report();
        self.total_queued -= old.queued;
        self.total_buffers -= old.buffers;
        if conn.refusal().is_some() {
            self.refusing -= 1;
        } else if let Some(key) = conn.counted_as() {
            if let Some(n) = self.per_address.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.per_address.remove(&key);
                }
            }
        }
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
    /// Adds a sample to the status page's history when one is due; after a stall, one sample,
    /// not a burst of overdue ones.
    fn sample_history(&mut self) {
        if self.now < self.next_sample_at {
            return;
        }
        let interval = ms(self.config.status_interval.as_millis());
        self.next_sample_at = self.now.saturating_add(interval);
        let unix_ms = (self.start_time * 1000.0) as u64 + self.now;
        self.history.record(unix_ms, &self.metrics, &self.gauges());
    }

    pub(super) fn gauges(&self) -> Gauges {
        let counters = self.hub.counters();
        Gauges {
            connections: self.conns.len(),
            groups: self.hub.group_count(),
            members: self.hub.member_count(),
            bindings: self.hub.binding_count(),
            queued_bytes: self.total_queued,
            buffered_bytes: self.total_buffers,
            memory_budget: self.config.memory_budget,
            max_connections: self.max_connections,
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

    /// Starts the graceful stop for every connection: the open ones are told 1001 and
    /// forgotten by the hub; the others finish what they are doing (a request in progress
    /// gets its answer: 503 for an upgrade, and for `/ready`).
    pub(super) fn close_all(&mut self) {
        let open: Vec<(usize, ConnId)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.is_open())
            .map(|(slot, c)| (slot, c.id()))
            .collect();
        for &(slot, _) in &open {
            self.close(slot, CloseReason::Shutdown);
        }
        // Partners are all going away: the disconnect notes go nowhere (only open
        // connections are written to).
        for &(_, id) in &open {
            self.hub.on_close(id, &mut self.effects);
        }
        self.apply_effects();
    }

    /// The slot of a connection that is still there.
    pub(super) fn slot_of(&self, id: ConnId) -> Option<usize> {
        let slot = id.slot as usize;
        self.conns.get(slot).filter(|c| c.id() == id).map(|_| slot)
    }
}

/// Milliseconds as the loop counts them; a duration past `u64::MAX` ms (an embedder's
/// `Duration::MAX`) is "never", not a wrapped-around past.
pub(super) fn ms(millis: u128) -> u64 {
    u64::try_from(millis).unwrap_or(u64::MAX)
}

/// A seed for the signaling id generator that differs between runs, from the standard
/// library's per-process random hash keys (no extra dependency for one number).
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}
