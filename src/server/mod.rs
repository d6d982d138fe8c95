//! The event loop and its public face: [`Server::bind`], [`Server::run`], and a [`Handle`]
//! that other threads use to stop the server, reload its certificates or read its counts.
//!
//! Layout: `driver` is the loop itself (poll, connection outcomes, timers, hub effects, flush
//! and reap), `accept` admits new connections under the limits, `activation` takes over
//! systemd's sockets, and `control` handles signals, reloads and shutdown.

mod accept;
mod activation;
mod control;
mod driver;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use log::{error, info, warn};
use mio::net::TcpListener;
use mio::{Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::config::Config;
use crate::error::Error;
use crate::keys::{self, Secrets};
use crate::limits;
use crate::tickets::TicketKeys;
use crate::tls;

const WAKER: Token = Token(usize::MAX);
/// Longest heartbeat interval that Netflux clients, which give up after three of their own
/// 5 s ticks without one, are sure to tolerate with room to spare.
const NETFLUX_HEARTBEAT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
const SIGNALS: Token = Token(usize::MAX - 1);
/// Listener `i` has token `FIRST_LISTENER - i`; connections count up from 0.
const FIRST_LISTENER: usize = usize::MAX - 2;
/// Most listening sockets (systemd may hand over several).
const MAX_LISTENERS: usize = 16;

/// File descriptors kept out of the connection count, for the listener, epoll, the waker, the
/// signal pipe, stdio and log files (a dozen), and for the connections being refused (half of
/// the reserve): an eighth of the limit, between 16 and 64, so that a small limit still
/// serves most of what it allows.
fn reserved_fds(files: u64) -> u64 {
    (files / 8).clamp(16, 64)
}

/// A sigver server bound to its address, ready to [`run`](Server::run).
pub struct Server {
    poll: Poll,
    listeners: Vec<TcpListener>,
    /// The listeners came from systemd: on shutdown, leave new connections in their backlog
    /// for the next process instead of answering them.
    inherited: bool,
    local_addr: SocketAddr,
    waker: Arc<Waker>,
    shared: Arc<Shared>,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// With TLS and resumption: the session ticket keys, kept across reloads.
    tickets: Option<Arc<TicketKeys>>,
    /// With `--key-secret`: the secrets a key must be signed with.
    key_secrets: Option<Secrets>,
    signals: Option<Signals>,
    max_connections: usize,
    /// Most connections admitted at once only to be refused (each takes a descriptor).
    max_refusing: usize,
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

/// State shared with [`Handle`]s: requests to the loop, and the counts it publishes once per
/// loop turn.
#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    reload: AtomicBool,
    connections: AtomicUsize,
    peers: AtomicUsize,
    groups: AtomicUsize,
    queued_bytes: AtomicUsize,
}

/// What the server holds, as published at the end of its last loop turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Open connections, upgrading ones included.
    pub connections: usize,
    /// WebSocket peers the hub knows.
    pub peers: usize,
    /// Groups (keys with at least one member).
    pub groups: usize,
    /// Bytes queued for sending, over all connections.
    pub queued_bytes: usize,
}

/// A thread-safe handle to a running server.
#[derive(Debug, Clone)]
pub struct Handle {
    waker: Arc<Waker>,
    shared: Arc<Shared>,
}

impl Handle {
    /// Asks the server to stop: it stops accepting, sends close 1001 to every peer, waits for
    /// them up to the configured grace time, and `run` returns.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// Asks the server to read its TLS files and its key secrets file again, as SIGHUP does:
    /// new connections get the new certificate and secrets, open ones carry on; a broken file
    /// keeps the old configuration.
    pub fn reload_tls(&self) {
        self.shared.reload.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// The counts at the end of the server's last loop turn.
    pub fn stats(&self) -> Stats {
        let s = &self.shared;
        Stats {
            connections: s.connections.load(Ordering::Relaxed),
            peers: s.peers.load(Ordering::Relaxed),
            groups: s.groups.load(Ordering::Relaxed),
            queued_bytes: s.queued_bytes.load(Ordering::Relaxed),
        }
    }

    fn wake(&self) {
        if let Err(e) = self.waker.wake() {
            error!("cannot wake the event loop: {e}");
        }
    }
}

impl Server {
    /// Loads the TLS files and the key secrets, if any, and binds the listening socket. Port 0 picks a free port:
    /// see [`Server::local_addr`]. Without a configured connection limit, derives it from the
    /// process's open-file limit (which the binary raises first; a host program keeps its own).
    pub fn bind(config: Config) -> Result<Self, Error> {
        // Before any descriptor of ours exists: see `inherited_listeners`.
        let inherited = if config.socket_activation {
            activation::inherited_listeners().map_err(Error::Activation)?
        } else {
            None
        };
        let tickets = match &config.tls {
            Some(files) if config.tls_resumption => {
                Some(TicketKeys::new(config.tls_ticket_rotation).map_err(|e| {
                    Error::Tls(tls::TlsError {
                        path: files.cert.clone(),
                        problem: format!("cannot make session ticket keys: {e}"),
                    })
                })?)
            }
            _ => None,
        };
        let tls = match &config.tls {
            Some(files) => Some(tls::load(files, tickets.as_ref()).map_err(Error::Tls)?),
            None => None,
        };
        let key_secrets = match &config.key_secret {
            Some(path) => Some(keys::load(path).map_err(Error::KeySecret)?),
            None => None,
        };
        let mut max_refusing = accept::MAX_REFUSING;
        let max_connections = match config.max_connections {
            Some(n) => n,
            None => {
                let files = limits::fd_limit().map_err(Error::Limits)?;
                let reserve = reserved_fds(files);
                max_refusing = max_refusing.min(usize::try_from(reserve / 2).unwrap_or(0));
                usize::try_from(files.saturating_sub(reserve).max(1)).unwrap_or(usize::MAX)
            }
        };
        let poll = Poll::new().map_err(Error::Poll)?;
        let (mut listeners, inherited) = match inherited {
            Some(l) => {
                info!(
                    "Socket activation: serving {} inherited listener(s); -h and -p are ignored",
                    l.len()
                );
                (l, true)
            }
            None => {
                let l = TcpListener::bind(config.addr).map_err(|e| Error::Bind(config.addr, e))?;
                (vec![l], false)
            }
        };
        let local_addr = listeners[0]
            .local_addr()
            .map_err(|e| Error::Bind(config.addr, e))?;
        for (i, listener) in listeners.iter_mut().enumerate() {
            poll.registry()
                .register(listener, Token(FIRST_LISTENER - i), Interest::READABLE)
                .map_err(Error::Poll)?;
        }
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
            listeners,
            inherited,
            local_addr,
            waker,
            shared: Arc::default(),
            tls,
            tickets,
            key_secrets,
            signals,
            max_connections,
            max_refusing,
            config,
        })
    }

    /// The address actually bound (the first one, with several inherited listeners).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle to stop the server, reload it, or read its counts from another thread.
    pub fn handle(&self) -> Handle {
        Handle {
            waker: Arc::clone(&self.waker),
            shared: Arc::clone(&self.shared),
        }
    }

    /// Serves until [`Handle::shutdown`] (or SIGTERM/SIGINT when signals are handled).
    /// Blocks the calling thread.
    pub fn run(self) -> Result<(), Error> {
        if let Some(files) = &self.config.tls {
            info!("TLS on: serving wss:// with {}", files.cert.display());
        }
        if let (Some(path), Some(secrets)) = (&self.config.key_secret, &self.key_secrets) {
            info!(
                "Signed keys only: {} secret(s) from {}",
                secrets.len(),
                path.display()
            );
        }
        let heartbeat = self.config.heartbeat_interval;
        if heartbeat > NETFLUX_HEARTBEAT_WAIT {
            warn!(
                "Heartbeat interval of {} ms: Netflux clients close their signaling socket \
                 after three of their own 5 s ticks without a heartbeat from the server; keep \
                 it at {} ms or less for them",
                heartbeat.as_millis(),
                NETFLUX_HEARTBEAT_WAIT.as_millis()
            );
        }
        info!(
            "Up to {} connections ({} per address)",
            self.max_connections, self.config.max_connections_per_ip
        );
        for listener in &self.listeners {
            if let Ok(addr) = listener.local_addr() {
                info!("Signaling server is listening on {addr}");
            }
        }
        driver::Driver::new(self).run()
    }
}
