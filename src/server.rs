//! The event loop: one mio `Poll`, the listener, the slab of connections, the timer wheel and
//! the clock (read once per loop turn).
//!
//! A thin driver: it turns readiness into calls on [`Conn`] and [`Hub`] and applies the
//! effects the hub returns. Sockets are registered once for read and write (edge-triggered)
//! and every operation is drained to `WouldBlock`; each inner loop has a cap, and work left by
//! a cap is picked up next turn without waiting. Closed connections are reaped once per turn.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::{debug, error, info, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use rustls::ServerConnection;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::Message;

use crate::close::CloseReason;
use crate::config::Config;
use crate::conn::{Conn, Phase, RequestStep, RespondStep};
use crate::error::Error;
use crate::hub::{ConnId, Effect, Hub};
use crate::timer::TimerWheel;
use crate::tls::{self, TlsStream};
use crate::transport::Transport;

const SIGNALS: Token = Token(usize::MAX - 2);
const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX);

/// Most connections accepted in one loop turn, so a connection storm cannot starve the rest.
const MAX_ACCEPTS_PER_TURN: usize = 256;
/// Most messages read from one connection in one loop turn, so a busy peer cannot starve others.
const MAX_MESSAGES_PER_TURN: usize = 64;
/// Pause before accepting again after an accept error such as EMFILE, so it cannot spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);
/// Bytes buffered before tungstenite writes on its own; below it, writes wait for the flush at
/// the end of the loop turn, so many messages to one peer leave in one system call.
const WRITE_BUFFER: usize = 64 * 1024;
/// Read buffer of each connection.
const READ_BUFFER: usize = 8 * 1024;

/// A sigver server bound to its address, ready to [`run`](Server::run).
pub struct Server {
    poll: Poll,
    listener: TcpListener,
    local_addr: SocketAddr,
    waker: Arc<Waker>,
    flags: Arc<Flags>,
    tls: Option<Arc<rustls::ServerConfig>>,
    signals: Option<Signals>,
    config: Config,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Requests from other threads, read by the loop when the waker fires.
#[derive(Debug, Default)]
struct Flags {
    stop: AtomicBool,
    reload: AtomicBool,
}

/// A thread-safe handle that stops a running server or reloads its certificates.
#[derive(Debug, Clone)]
pub struct Handle {
    waker: Arc<Waker>,
    flags: Arc<Flags>,
}

impl Handle {
    /// Asks the server to stop: it stops accepting, sends close 1001 to every peer, waits for
    /// them up to the configured grace time, and `run` returns.
    pub fn shutdown(&self) {
        self.flags.stop.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// Asks the server to read its TLS files again, as SIGHUP does: new connections get the
    /// new certificate, open ones carry on; a broken file keeps the old configuration.
    pub fn reload_tls(&self) {
        self.flags.reload.store(true, Ordering::SeqCst);
        self.wake();
    }

    fn wake(&self) {
        if let Err(e) = self.waker.wake() {
            error!("cannot wake the event loop: {e}");
        }
    }
}

impl Server {
    /// Loads the TLS files, if any, and binds the listening socket. Port 0 picks a free port:
    /// see [`Server::local_addr`].
    pub fn bind(config: Config) -> Result<Self, Error> {
        let tls = match &config.tls {
            Some(files) => Some(tls::load(files).map_err(Error::Tls)?),
            None => None,
        };
        let poll = Poll::new().map_err(Error::Poll)?;
        let mut listener =
            TcpListener::bind(config.addr).map_err(|e| Error::Bind(config.addr, e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::Bind(config.addr, e))?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(Error::Poll)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(Error::Poll)?);
        let signals = if config.handle_signals {
            let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT]).map_err(Error::Signals)?;
            poll.registry()
                .register(&mut signals, SIGNALS, Interest::READABLE)
                .map_err(Error::Signals)?;
            Some(signals)
        } else {
            None
        };
        Ok(Self {
            poll,
            listener,
            local_addr,
            waker,
            flags: Arc::default(),
            tls,
            signals,
            config,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle to stop the server from another thread.
    pub fn handle(&self) -> Handle {
        Handle {
            waker: Arc::clone(&self.waker),
            flags: Arc::clone(&self.flags),
        }
    }

    /// Serves until [`Handle::shutdown`] is called. Blocks the calling thread.
    pub fn run(self) -> Result<(), Error> {
        if let Some(files) = &self.config.tls {
            info!("TLS on: serving wss:// with {}", files.cert.display());
        }
        info!("Signaling server is listening on {}", self.local_addr);
        let mut driver = Driver::new(self);
        driver.run()
    }
}

/// What a timer entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerKind {
    Handshake,
    Heartbeat,
    Close,
}

#[derive(Debug, Clone, Copy)]
struct Timer {
    id: ConnId,
    kind: TimerKind,
    at: u64,
}

/// The loop's state. Separate from [`Server`] so that `run` consumes the server once.
struct Driver {
    poll: Poll,
    listener: Option<TcpListener>,
    flags: Arc<Flags>,
    tls: Option<Arc<rustls::ServerConfig>>,
    signals: Option<Signals>,
    config: Config,
    ws_config: WebSocketConfig,
    conns: Slab<Conn>,
    hub: Hub,
    timers: TimerWheel<Timer>,
    effects: Vec<Effect>,
    spare_effects: Vec<Effect>,
    fired: Vec<Timer>,
    dirty: Vec<usize>,
    gone: Vec<usize>,
    again: Vec<usize>,
    accept_ready: bool,
    accept_retry_at: Option<u64>,
    next_generation: u32,
    start: Instant,
    now: u64,
    stopping_until: Option<u64>,
}

impl Driver {
    fn new(server: Server) -> Self {
        let config = server.config;
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(WRITE_BUFFER)
            .max_write_buffer_size(config.max_send_queue.max(WRITE_BUFFER + 1))
            .max_message_size(Some(config.max_message_size))
            .max_frame_size(Some(config.max_message_size));
        Self {
            poll: server.poll,
            listener: Some(server.listener),
            flags: server.flags,
            tls: server.tls,
            signals: server.signals,
            ws_config,
            conns: Slab::new(),
            hub: Hub::new(random_seed()),
            timers: TimerWheel::default(),
            effects: Vec::new(),
            spare_effects: Vec::new(),
            fired: Vec::new(),
            dirty: Vec::new(),
            gone: Vec::new(),
            again: Vec::new(),
            accept_ready: true,
            accept_retry_at: None,
            next_generation: 0,
            start: Instant::now(),
            now: 0,
            stopping_until: None,
            config,
        }
    }

    fn run(&mut self) -> Result<(), Error> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(Error::Poll(e));
                }
            }
            self.now = self.start.elapsed().as_millis() as u64;
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_ready = true,
                    WAKER => {
                        if self.flags.reload.swap(false, Ordering::SeqCst) {
                            self.reload_tls();
                        }
                        if self.flags.stop.load(Ordering::SeqCst) {
                            self.begin_shutdown();
                        }
                    }
                    SIGNALS => {
                        if self.on_signals() {
                            info!("Signaling server stopped at once on a second signal");
                            return Ok(());
                        }
                    }
                    Token(slot) => self.on_ready(slot, event.is_writable()),
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

    fn poll_timeout(&mut self) -> Option<Duration> {
        if !self.again.is_empty() || (self.accept_ready && self.accept_retry_at.is_none()) {
            return Some(Duration::ZERO);
        }
        let now = self.start.elapsed().as_millis() as u64;
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

    fn accept(&mut self) {
        let Some(listener) = self.listener.as_ref() else {
            return;
        };
        for _ in 0..MAX_ACCEPTS_PER_TURN {
            let (mut stream, addr) = match listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_ready = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and the like: the listener is still ready; retry a little later
                    // (or as soon as a connection is reaped) rather than spin or stall.
                    error!("cannot accept a connection: {e}");
                    self.accept_retry_at = Some(self.now + ACCEPT_RETRY.as_millis() as u64);
                    return;
                }
            };
            self.accept_retry_at = None;
            if self.conns.len() >= self.config.max_connections {
                warn!(
                    "connection from {addr} refused: {} connections open",
                    self.conns.len()
                );
                continue;
            }
            if let Err(e) = stream.set_nodelay(true) {
                debug!("connection from {addr}: cannot set TCP_NODELAY: {e}");
            }
            let entry = self.conns.vacant_entry();
            let slot = entry.key();
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                Token(slot),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                error!("cannot register a connection from {addr}: {e}");
                continue;
            }
            let id = ConnId {
                slot: slot as u32,
                generation: self.next_generation,
            };
            self.next_generation = self.next_generation.wrapping_add(1);
            debug!("conn {}.{} accepted from {addr}", id.slot, id.generation);
            let stream = match &self.tls {
                None => Transport::Plain(stream),
                Some(config) => match ServerConnection::new(Arc::clone(config)) {
                    Ok(conn) => Transport::Tls(Box::new(TlsStream { conn, sock: stream })),
                    Err(e) => {
                        error!("cannot start TLS for {addr}: {e}");
                        let _ = self.poll.registry().deregister(&mut stream);
                        continue;
                    }
                },
            };
            entry.insert(Conn {
                id,
                peer: addr,
                phase: Phase::Request {
                    stream,
                    buf: Vec::new(),
                },
                dirty: false,
            });
            let at = self.now + self.config.handshake_timeout.as_millis() as u64;
            self.timers.insert(
                at,
                Timer {
                    id,
                    kind: TimerKind::Handshake,
                    at,
                },
            );
        }
    }

    /// Does whatever the connection's phase can do now.
    fn on_ready(&mut self, slot: usize, writable: bool) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        match conn.phase {
            Phase::Request { .. } => match conn.read_request() {
                RequestStep::Pending => {}
                RequestStep::Respond(out, then) => {
                    conn.start_response(out, then);
                    self.write_response(slot);
                }
                RequestStep::Gone => self.finish(slot),
            },
            Phase::Respond { .. } => self.write_response(slot),
            Phase::Linger(_) => {
                if conn.drain_linger() {
                    self.finish(slot);
                }
            }
            Phase::Failing(_) => {
                if conn.drain_linger() {
                    self.finish(slot);
                } else if writable {
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
            RespondStep::Lingering => {
                if conn.drain_linger() {
                    self.finish(slot);
                }
            }
            RespondStep::Upgraded(target) => {
                let at = self.now + self.config.heartbeat_interval.as_millis() as u64;
                self.timers.insert(
                    at,
                    Timer {
                        id,
                        kind: TimerKind::Heartbeat,
                        at,
                    },
                );
                match target {
                    Ok(t) => {
                        debug!(
                            "conn {}.{} open: key of {} bytes{}",
                            id.slot,
                            id.generation,
                            t.key.len(),
                            if t.favored { ", favored" } else { "" }
                        );
                        self.hub.on_open(id, &t.key, t.favored, &mut self.effects);
                    }
                    Err(_) => self.effects.push(Effect::Close(id, CloseReason::BadUrl)),
                }
                self.apply_effects();
                // Frames may have come with the request, or while the answer was written.
                self.read_messages(slot);
            }
        }
    }

    /// Reads and handles messages until the socket has no more, or the per-turn cap.
    fn read_messages(&mut self, slot: usize) {
        for _ in 0..MAX_MESSAGES_PER_TURN {
            let Some(conn) = self.conns.get_mut(slot) else {
                return;
            };
            let id = conn.id;
            let open = matches!(conn.phase, Phase::Open(_));
            let Some(ws) = conn.ws() else { return };
            match ws.read() {
                Ok(Message::Binary(frame)) if open => {
                    self.hub.on_message(id, frame, &mut self.effects);
                    self.apply_effects();
                }
                Ok(Message::Text(_)) if open => self.close(id, CloseReason::TextFrame),
                Ok(Message::Close(frame)) => {
                    debug!(
                        "conn {}.{} closed by the peer: {frame:?}",
                        id.slot, id.generation
                    );
                    // tungstenite queued the reply; it leaves with the flush.
                    if open {
                        conn.set_closing();
                        self.start_close_timer(id);
                    }
                    self.mark_dirty(slot);
                    self.hub.on_close(id, &mut self.effects);
                    self.apply_effects();
                }
                // Pings are answered by tungstenite; the pong leaves with the flush. Data that
                // arrives after our close frame is dropped (RFC 6455 §5.5.1).
                Ok(_) => self.mark_dirty(slot),
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => return self.on_ws_error(id, slot, e),
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
        self.close(id, reason);
        // tungstenite cannot read this stream again (its state is mid-frame): only the close
        // frame goes out, then the connection lingers.
        if let Some(conn) = self.conns.get_mut(slot) {
            conn.set_failing();
        }
    }

    /// Closes a connection for `reason`: the hub forgets it and tells its partners.
    fn close(&mut self, id: ConnId, reason: CloseReason) {
        self.hub.close(id, reason, &mut self.effects);
        self.apply_effects();
    }

    /// Applies the hub's effects, and those that applying them causes, in order.
    fn apply_effects(&mut self) {
        while !self.effects.is_empty() {
            let mut batch =
                std::mem::replace(&mut self.effects, std::mem::take(&mut self.spare_effects));
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
        let Some((slot, conn)) = self.lookup(id) else {
            return;
        };
        let Phase::Open(ws) = &mut conn.phase else {
            return;
        };
        match ws.write(Message::Binary(bytes)) {
            Ok(()) => self.mark_dirty(slot),
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.mark_dirty(slot)
            }
            Err(tungstenite::Error::WriteBufferFull(_)) => {
                warn!(
                    "conn {}.{} closed: send queue full ({} bytes)",
                    id.slot, id.generation, self.config.max_send_queue
                );
                self.hub
                    .close(id, CloseReason::SendQueueFull, &mut self.effects);
            }
            Err(e) => {
                debug!("conn {}.{} write failed: {e}", id.slot, id.generation);
                self.finish(slot);
            }
        }
    }

    /// Queues a close frame and moves the connection to `Closing`.
    fn start_close(&mut self, id: ConnId, reason: CloseReason) {
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
        match ws.close(Some(frame)) {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return self.finish(slot),
        }
        conn.set_closing();
        self.start_close_timer(id);
    }

    fn start_close_timer(&mut self, id: ConnId) {
        let at = self.now + self.config.close_timeout.as_millis() as u64;
        self.timers.insert(
            at,
            Timer {
                id,
                kind: TimerKind::Close,
                at,
            },
        );
    }

    fn expire_timers(&mut self) {
        let mut fired = std::mem::take(&mut self.fired);
        self.timers.expire(self.now, &mut fired);
        for timer in fired.drain(..) {
            let Some((slot, conn)) = self.lookup(timer.id) else {
                continue;
            };
            match (timer.kind, &conn.phase) {
                (
                    TimerKind::Handshake,
                    Phase::Request { .. } | Phase::Respond { .. } | Phase::Linger(_),
                ) => {
                    debug!(
                        "conn {}.{} dropped: handshake timeout",
                        timer.id.slot, timer.id.generation
                    );
                    self.finish(slot);
                }
                (TimerKind::Close, Phase::Closing(_) | Phase::Failing(_) | Phase::Linger(_)) => {
                    debug!(
                        "conn {}.{} dropped: close timeout",
                        timer.id.slot, timer.id.generation
                    );
                    self.finish(slot);
                }
                (TimerKind::Heartbeat, Phase::Open(_)) => {
                    self.hub.on_heartbeat_due(timer.id, &mut self.effects);
                    self.apply_effects();
                    let still_open = self
                        .lookup(timer.id)
                        .is_some_and(|(_, c)| matches!(c.phase, Phase::Open(_)));
                    if still_open {
                        let at = timer.at + self.config.heartbeat_interval.as_millis() as u64;
                        self.timers.insert(at, Timer { at, ..timer });
                    }
                }
                _ => {}
            }
        }
        self.fired = fired;
    }

    /// Flushes every connection written to this turn, then reaps the finished ones (whose
    /// disconnect notes may dirty others), until nothing is left to do.
    fn flush_and_reap(&mut self) {
        loop {
            for slot in std::mem::take(&mut self.dirty) {
                let Some(conn) = self.conns.get_mut(slot) else {
                    continue;
                };
                conn.dirty = false;
                if matches!(conn.phase, Phase::Failing(_)) {
                    if conn
                        .flush_failing()
                        .is_err_and(|e| e.kind() != io::ErrorKind::WouldBlock)
                    {
                        self.finish(slot);
                    }
                    continue;
                }
                let Some(ws) = conn.ws() else { continue };
                match ws.flush() {
                    Ok(()) => {}
                    Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => self.finish(slot),
                }
            }
            if self.gone.is_empty() {
                return;
            }
            for slot in std::mem::take(&mut self.gone) {
                if let Some(conn) = self.conns.try_remove(slot) {
                    debug!("conn {}.{} reaped", conn.id.slot, conn.id.generation);
                    self.hub.on_close(conn.id, &mut self.effects);
                    self.apply_effects();
                }
            }
            // A slot is free: an accept that stopped at a limit may go on.
            self.accept_retry_at = None;
        }
    }

    /// The connection is over: drop its socket now, reap it at the end of the turn.
    fn finish(&mut self, slot: usize) {
        if let Some(conn) = self.conns.get_mut(slot) {
            if conn.shut(self.poll.registry()) {
                self.gone.push(slot);
            }
        }
    }

    fn mark_dirty(&mut self, slot: usize) {
        if let Some(conn) = self.conns.get_mut(slot) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(slot);
            }
        }
    }

    fn lookup(&mut self, id: ConnId) -> Option<(usize, &mut Conn)> {
        let slot = id.slot as usize;
        self.conns
            .get_mut(slot)
            .filter(|c| c.id == id)
            .map(|c| (slot, c))
    }

    /// Handles pending signals; true when the loop must stop at once.
    fn on_signals(&mut self) -> bool {
        let Some(signals) = self.signals.as_mut() else {
            return false;
        };
        let pending: Vec<i32> = signals.pending().collect();
        for signal in pending {
            match signal {
                SIGHUP => self.reload_tls(),
                _ if self.stopping_until.is_some() => return true,
                _ => self.begin_shutdown(),
            }
        }
        false
    }

    /// Reads the TLS files again; on any error keeps serving with the old ones.
    fn reload_tls(&mut self) {
        let Some(files) = &self.config.tls else {
            info!("reload requested: no TLS files to reload");
            return;
        };
        match tls::load(files) {
            Ok(config) => {
                self.tls = Some(config);
                info!("TLS certificate reloaded from {}", files.cert.display());
            }
            Err(e) => error!("TLS reload failed, keeping the previous certificate: {e}"),
        }
    }

    fn begin_shutdown(&mut self) {
        if self.stopping_until.is_some() {
            return;
        }
        info!(
            "Signaling server is stopping: closing {} connections",
            self.conns.len()
        );
        if let Some(mut listener) = self.listener.take() {
            // Ignored failure: the listener is dropped right after.
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.stopping_until = Some(self.now + self.config.shutdown_grace.as_millis() as u64);
        let slots: Vec<(usize, ConnId, bool)> = self
            .conns
            .iter()
            .map(|(slot, c)| (slot, c.id, matches!(c.phase, Phase::Open(_))))
            .collect();
        // Every peer is told 1001 first, then forgotten: partners are all going away, so the
        // disconnect notes (sent only to open connections) would be noise.
        for &(slot, id, open) in &slots {
            if open {
                self.start_close(id, CloseReason::Shutdown);
            } else if !matches!(
                self.conns.get(slot).map(|c| &c.phase),
                Some(Phase::Closing(_) | Phase::Failing(_))
            ) {
                self.finish(slot);
            }
        }
        for &(_, id, _) in &slots {
            self.hub.on_close(id, &mut self.effects);
        }
        self.apply_effects();
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
