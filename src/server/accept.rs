//! Admitting connections: accept until the listener is drained (or the per-turn cap), under
//! the connection limits. A connection over a limit is still admitted, a few at a time, so
//! that its request gets a clear HTTP answer (503, or 429 for one address) rather than a reset.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use log::{debug, error, warn};
use mio::net::TcpStream;
use mio::{Interest, Token};

use super::driver::{Driver, TimerKind};
use crate::access;
use crate::conn::{Conn, Deadline};
use crate::http::Refusal;
use crate::hub::ConnId;
use crate::metrics::Limit;
use crate::throttle::skipped_note;
use crate::transport::Transport;

/// Most connections accepted in one loop turn, so a connection storm cannot starve the rest.
const MAX_ACCEPTS_PER_TURN: usize = 256;
/// Pause before accepting again after an accept error such as EMFILE, so it cannot spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);
/// Most connections being refused at once (fewer under a small open-file limit, see
/// `reserved_fds`); past it, excess connections are closed unanswered.
pub(super) const MAX_REFUSING: usize = 32;

/// An accept error that comes from this process or machine running out of something, which
/// waiting may cure; other errors concern one connection only.
fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// How accepting from one listener ended.
enum Accepted {
    /// It has no more connections waiting.
    Drained,
    /// The per-turn cap stopped it; more may wait.
    Capped,
    /// An error such as EMFILE: try again later.
    Failed,
}

impl Driver {
    /// Accepts from every listener until each is drained, or the per-turn cap.
    pub(super) fn accept(&mut self) {
        let mut drained = 0;
        for i in 0..self.listeners.len() {
            match self.accept_from(i) {
                Accepted::Drained => drained += 1,
                Accepted::Capped => {}
                Accepted::Failed => return,
            }
        }
        if drained == self.listeners.len() {
            self.accept_ready = false;
        }
    }

    fn accept_from(&mut self, i: usize) -> Accepted {
        for _ in 0..MAX_ACCEPTS_PER_TURN {
            let Some(listener) = self.listeners.get(i) else {
                return Accepted::Drained;
            };
            let (stream, addr) = match listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Accepted::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if out_of_resources(&e) => {
                    // EMFILE and the like: the listener is still ready; retry a little later
                    // (or as soon as a connection is reaped) rather than spin or stall.
                    if let Some(skipped) = self.accept_failure_logs.allow(0, self.now) {
                        error!("cannot accept a connection: {e}{}", skipped_note(skipped));
                    }
                    self.accept_retry_at = Some(self.now + ACCEPT_RETRY.as_millis() as u64);
                    return Accepted::Failed;
                }
                // A connection that failed before it was accepted (ECONNABORTED, EPROTO...):
                // only that one is lost; go on with the next.
                Err(e) => {
                    debug!("a connection failed before it was accepted: {e}");
                    continue;
                }
            };
            self.accept_retry_at = None;
            self.metrics.on_accept();
            let refusal = self.admission(addr.ip());
            if let Some(refusal) = refusal {
                if self.refusing >= self.max_refusing {
                    debug!("connection from {addr} dropped: too many being refused");
                    continue;
                }
                self.note_refusal(addr, refusal);
            }
            self.admit(stream, addr, refusal);
        }
        Accepted::Capped
    }

    /// Counts a refusal for a limit and logs it: the first of each second and kind at warn,
    /// the rest counted into the next line, so that a flood of connections cannot flood the
    /// log too. A refusal while stopping is no limit: neither counted nor logged.
    pub(super) fn note_refusal(&mut self, addr: impl std::fmt::Display, refusal: Refusal) {
        let limit = match refusal {
            Refusal::Full => Limit::Connections,
            Refusal::PerAddress => Limit::ConnectionsPerAddress,
            Refusal::Stopping => return,
        };
        self.metrics.on_limit(limit);
        if let Some(skipped) = self.refusal_logs.allow(refusal as usize, self.now) {
            warn!(
                client:% = addr, limit = limit.label(), skipped;
                "connection from {addr} refused: {refusal:?} limit reached{}",
                skipped_note(skipped)
            );
        }
    }

    /// Whether a new connection from `ip` is over a limit. A trusted proxy's connections are
    /// counted by client, once the request names it (see `Driver::identify_client`).
    fn admission(&self, ip: IpAddr) -> Option<Refusal> {
        let open = self.conns.len() - self.refusing;
        if self.stopping_until.is_some() {
            Some(Refusal::Stopping)
        } else if open >= self.max_connections {
            Some(Refusal::Full)
        } else if !self.counts_by_request(ip) && self.per_address_full(ip) {
            Some(Refusal::PerAddress)
        } else {
            None
        }
    }

    /// Whether a connection from `ip` is counted by the client its request names (behind a
    /// trusted proxy, or with the PROXY protocol), not by `ip`.
    fn counts_by_request(&self, ip: IpAddr) -> bool {
        self.config.proxy_protocol || self.is_trusted_proxy(ip)
    }

    pub(super) fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.config.trusted_proxies.iter().any(|n| n.contains(ip))
    }

    /// Whether the per-address limit is reached for `ip`'s key.
    pub(super) fn per_address_full(&self, ip: IpAddr) -> bool {
        let per_ip = self.config.max_connections_per_ip;
        let key = access::address_key(ip, self.config.ipv6_prefix);
        per_ip > 0 && self.per_address.get(&key).is_some_and(|&n| n >= per_ip)
    }

    /// Counts a connection under `ip`'s key in the per-address limit.
    pub(super) fn count_address(&mut self, slot: usize, ip: IpAddr) {
        let key = access::address_key(ip, self.config.ipv6_prefix);
        if let Some(conn) = self.conns.get_mut(slot) {
            conn.set_counted_as(key);
            *self.per_address.entry(key).or_insert(0) += 1;
        }
    }

    fn admit(
        &mut self,
        mut stream: TcpStream,
        addr: std::net::SocketAddr,
        refusal: Option<Refusal>,
    ) {
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
            return;
        }
        let transport = match &self.tls {
            None => Transport::plain(stream),
            // On failure the socket is dropped, which also takes it out of the poll.
            Some(config) => match Transport::tls(stream, Arc::clone(config)) {
                Ok(t) => t,
                Err(e) => {
                    error!("cannot start TLS for {addr}: {e}");
                    return;
                }
            },
        };
        let id = ConnId {
            slot: slot as u32,
            generation: self.next_generation,
        };
        self.next_generation = self.next_generation.wrapping_add(1);
        debug!("conn {}.{} accepted from {addr}", id.slot, id.generation);
        entry.insert(Conn::new(
            id,
            addr,
            transport,
            refusal,
            self.config.rate_limit,
            self.now,
        ));
        if refusal.is_some() {
            self.refusing += 1;
        } else if !self.counts_by_request(addr.ip()) {
            self.count_address(slot, addr.ip());
        }
        if self.config.proxy_protocol {
            if let Some(conn) = self.conns.get_mut(slot) {
                conn.expect_proxy_header();
            }
        }
        self.start_timer(
            id,
            TimerKind::Deadline(Deadline::Handshake),
            self.config.handshake_timeout,
        );
    }
}
