//! `raw-server`: the reference relay that `relay --url raw://` measures. It routes as sigver's
//! relay does, with nothing else: length-prefixed frames (`rawproto`) instead of WebSocket and
//! protobuf, no heartbeats, no limits but those that keep its memory bounded. Set against
//! sigver over `ws://`, it shows what the protocol and its safety cost above the kernel's own.
//!
//! One thread, one mio `Poll`, a slab of connections. A readable socket is read into one
//! shared buffer and every whole frame in it is routed at once (only a partial frame is kept,
//! by its connection): appended to the destination's output buffer, and each buffer touched
//! in a loop turn is written once, at the end of the turn. A connection that breaks the
//! framing is dropped; one whose output passes [`MAX_OUT`] too. It never stops by itself:
//! SIGTERM and SIGINT end it (their default action), and the kernel closes the sockets.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::rawproto::{self, MAX_BODY, MAX_KEY, PREFIX};

/// Token of the listener (connections use their slab slot).
const LISTENER: Token = Token(usize::MAX);
/// The read buffer all connections share.
const SCRATCH: usize = 64 * 1024;
/// Reads from one socket per loop turn before the others get their turn.
const MAX_READS_PER_TURN: usize = 4;
/// Bytes waiting for one peer that does not read: past it, the peer is dropped.
const MAX_OUT: usize = 4 << 20;
/// Capacity an emptied input or output buffer keeps; a larger one is given back.
const KEEP: usize = 64 * 1024;
/// Connections at once; more wait in the listen backlog.
const MAX_CONNS: usize = 60_000;
/// Connections accepted per loop turn before the sockets get their turn.
const MAX_ACCEPTS_PER_TURN: usize = 256;
/// Wait before accepting again after a failure (no descriptor left, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

struct Conn {
    sock: TcpStream,
    /// `(group, id)` once joined.
    joined: Option<(usize, u32)>,
    /// Dropped: nothing more is read, written or routed to it; reaped at the end of the turn.
    closed: bool,
    /// A frame not yet whole.
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    dirty: bool,
}

struct Group {
    key: Box<[u8]>,
    next_id: u32,
    /// `(id, slot)`, in the order they joined.
    members: Vec<(u32, usize)>,
}

/// The reference relay. See the module documentation.
pub struct RawServer {
    poll: Poll,
    listener: TcpListener,
    conns: Slab<Conn>,
    groups: Slab<Group>,
    by_key: HashMap<Box<[u8]>, usize>,
    scratch: Vec<u8>,
    dirty: Vec<usize>,
    gone: Vec<usize>,
    again: Vec<(usize, bool)>,
    /// The listener may still hold connections: accept again after this wait.
    accept_pending: Option<Duration>,
}

impl RawServer {
    /// Binds the listener (port 0: any free one).
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(addr)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Self {
            poll,
            listener,
            conns: Slab::new(),
            groups: Slab::new(),
            by_key: HashMap::new(),
            scratch: vec![0; SCRATCH],
            dirty: Vec::new(),
            gone: Vec::new(),
            again: Vec::new(),
            accept_pending: None,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the process is killed; returns only if the poll fails.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = match self.again.is_empty() {
                true => self.accept_pending,
                false => Some(Duration::ZERO),
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            if self.accept_pending.is_some() {
                self.accept();
            }
            let again = std::mem::take(&mut self.again);
            for &(c, hup) in &again {
                self.on_readable(c, hup);
            }
            keep(&mut self.again, again);
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    Token(c) => {
                        let Some(conn) = self.conns.get(c) else {
                            continue;
                        };
                        if event.is_writable() && conn.out_pos < conn.out.len() {
                            self.mark_dirty(c);
                        }
                        let hup = event.is_read_closed() || event.is_error();
                        if event.is_readable() || hup {
                            self.on_readable(c, hup);
                        }
                    }
                }
            }
            self.flush();
            self.reap();
        }
    }

    /// Accepts until the listener is drained; a cap or a failure leaves it for later, since
    /// an edge-triggered listener does not wake again for connections already waiting.
    fn accept(&mut self) {
        self.accept_pending = Some(Duration::ZERO);
        for _ in 0..MAX_ACCEPTS_PER_TURN {
            if self.conns.len() >= MAX_CONNS {
                self.accept_pending = Some(ACCEPT_BACKOFF);
                return;
            }
            let mut sock = match self.listener.accept() {
                Ok((sock, _)) => sock,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_pending = None;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(_) => {
                    self.accept_pending = Some(ACCEPT_BACKOFF);
                    return;
                }
            };
            // Small messages leave at once, as sigver's do.
            let _ = sock.set_nodelay(true);
            let entry = self.conns.vacant_entry();
            let interest = Interest::READABLE | Interest::WRITABLE;
            if self
                .poll
                .registry()
                .register(&mut sock, Token(entry.key()), interest)
                .is_ok()
            {
                entry.insert(Conn {
                    sock,
                    joined: None,
                    closed: false,
                    inbuf: Vec::new(),
                    out: Vec::new(),
                    out_pos: 0,
                    dirty: false,
                });
            }
        }
    }

    /// Reads until the socket is drained (or the per-turn cap) and routes what came.
    fn on_readable(&mut self, c: usize, hup: bool) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut capped = true;
        for _ in 0..MAX_READS_PER_TURN {
            let Some(conn) = self.conns.get_mut(c).filter(|c| !c.closed) else {
                capped = false;
                break;
            };
            match conn.sock.read(&mut scratch) {
                Ok(0) => {
                    self.close(c);
                    capped = false;
                    break;
                }
                Ok(n) => {
                    self.on_bytes(c, &scratch[..n]);
                    // A short read drained the socket: later bytes raise a new edge. Not so
                    // for an end of stream that came with this event: only reading on sees it.
                    if n < scratch.len() && !hup {
                        capped = false;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    capped = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close(c);
                    capped = false;
                    break;
                }
            }
        }
        self.scratch = scratch;
        if capped {
            self.again.push((c, hup));
        }
    }

    /// Routes the whole frames of `data`, after the partial frame `c` held, and keeps the rest.
    fn on_bytes(&mut self, c: usize, data: &[u8]) {
        let conn = &mut self.conns[c];
        if conn.inbuf.is_empty() {
            // The common case: frames routed straight from the shared buffer, no copy.
            let used = self.on_frames(c, data);
            let conn = &mut self.conns[c];
            if used < data.len() && !conn.closed {
                conn.inbuf.extend_from_slice(&data[used..]);
            }
            return;
        }
        let mut buf = std::mem::take(&mut conn.inbuf);
        buf.extend_from_slice(data);
        let used = self.on_frames(c, &buf);
        buf.drain(..used);
        if buf.is_empty() && buf.capacity() > KEEP {
            buf = Vec::new();
        }
        self.conns[c].inbuf = buf;
    }

    /// Handles every whole frame at the start of `buf`; returns the bytes used (all of them
    /// once the connection is dropped).
    fn on_frames(&mut self, c: usize, buf: &[u8]) -> usize {
        let mut pos = 0;
        while !self.conns[c].closed {
            // The length is checked before the body is awaited: an oversized frame is
            // refused at its first four bytes, so no connection holds more than MAX_BODY.
            let end = match rawproto::frame(&buf[pos..], MAX_BODY) {
                Ok(Some(end)) => end,
                Ok(None) => return pos,
                Err(_) => break,
            };
            let body = &buf[pos + PREFIX..pos + end];
            pos += end;
            match self.conns[c].joined {
                None => self.join(c, body),
                Some((group, id)) => match rawproto::split_id(body) {
                    Some((dest, payload)) => self.route(group, id, dest, payload),
                    None => break,
                },
            }
        }
        self.close(c);
        buf.len()
    }

    /// The first frame: the key of the group to join (as sigver's URL path).
    fn join(&mut self, c: usize, key: &[u8]) {
        if key.is_empty() || key.len() > MAX_KEY {
            return self.close(c);
        }
        let g = match self.by_key.get(key) {
            Some(&g) => g,
            None => {
                let g = self.groups.insert(Group {
                    key: key.into(),
                    next_id: 1,
                    members: Vec::with_capacity(2),
                });
                self.by_key.insert(key.into(), g);
                g
            }
        };
        let group = &mut self.groups[g];
        // Ids are never reused within a group, so a content cannot reach a later peer.
        let Some(next) = group.next_id.checked_add(1) else {
            return self.close(c);
        };
        let id = group.next_id;
        group.next_id = next;
        let member = group.members.first().map_or(0, |m| m.0);
        group.members.push((id, c));
        let conn = &mut self.conns[c];
        conn.joined = Some((g, id));
        rawproto::put_joined(&mut conn.out, id, member);
        self.mark_dirty(c);
    }

    /// A content from peer `from` of `group` for its peer `dest`, who gets it with `from` in
    /// place of `dest`. A content for no such peer is dropped, as sigver drops a content with
    /// no live direction (docs/PROTOCOL.md §7).
    fn route(&mut self, group: usize, from: u32, dest: u32, payload: &[u8]) {
        let Some(&(_, to)) = self.groups[group].members.iter().find(|m| m.0 == dest) else {
            return;
        };
        let conn = &mut self.conns[to];
        if conn.closed {
            return;
        }
        if conn.out.len() - conn.out_pos + PREFIX + 4 + payload.len() > MAX_OUT {
            // A peer that does not read: dropped before it holds more.
            return self.close(to);
        }
        rawproto::put_content_head(&mut conn.out, from, payload.len());
        conn.out.extend_from_slice(payload);
        self.mark_dirty(to);
    }

    fn mark_dirty(&mut self, c: usize) {
        let conn = &mut self.conns[c];
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(c);
        }
    }

    /// Drops `c` from now on; it is reaped at the end of the turn.
    fn close(&mut self, c: usize) {
        let conn = &mut self.conns[c];
        if !conn.closed {
            conn.closed = true;
            self.gone.push(c);
        }
    }

    /// Writes each buffer touched this turn: one write for the whole batch, unless the
    /// socket takes only part of it (the rest waits for the writable edge).
    fn flush(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for &c in &dirty {
            let Some(conn) = self.conns.get_mut(c) else {
                continue;
            };
            conn.dirty = false;
            let mut failed = conn.closed;
            while !failed && conn.out_pos < conn.out.len() {
                match conn.sock.write(&conn.out[conn.out_pos..]) {
                    Ok(0) => failed = true,
                    Ok(n) => conn.out_pos += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => failed = true,
                }
            }
            if conn.out_pos == conn.out.len() {
                conn.out.clear();
                conn.out_pos = 0;
                if conn.out.capacity() > KEEP {
                    conn.out = Vec::new();
                }
            }
            if failed {
                self.close(c);
            }
        }
        keep(&mut self.dirty, dirty);
    }

    /// Removes the connections dropped this turn, and the groups they leave empty.
    fn reap(&mut self) {
        for c in self.gone.drain(..) {
            let mut conn = self.conns.remove(c);
            let _ = self.poll.registry().deregister(&mut conn.sock);
            // Its slot may be reused next turn: a read left for later is not the new one's.
            self.again.retain(|&(a, _)| a != c);
            let Some((g, id)) = conn.joined else {
                continue;
            };
            let group = &mut self.groups[g];
            group.members.retain(|m| m != &(id, c));
            if group.members.is_empty() {
                let group = self.groups.remove(g);
                self.by_key.remove(&group.key);
            }
        }
    }
}

/// Puts back a list taken for one pass, emptied, with what was added meanwhile: its
/// capacity is kept, so the loop allocates nothing per turn.
fn keep<T>(slot: &mut Vec<T>, mut taken: Vec<T>) {
    taken.clear();
    taken.append(slot);
    *slot = taken;
}
