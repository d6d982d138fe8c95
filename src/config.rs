//! Server settings. Every limit the server enforces is a named field here, with a default
//! that no real Netflux use reaches.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::tls::TlsFiles;

/// Default port, as the original (PROTOCOL.md §8).
pub const DEFAULT_PORT: u16 = 8000;

/// How the server listens and what it tolerates.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address and port to bind; port 0 picks a free one.
    pub addr: SocketAddr,
    /// Time between two heartbeat ticks (PROTOCOL.md §4).
    pub heartbeat_interval: Duration,
    /// Time a connection has to complete its upgrade before it is dropped.
    pub handshake_timeout: Duration,
    /// Time a close handshake may take before the connection is dropped.
    pub close_timeout: Duration,
    /// Largest incoming message or frame, in bytes.
    pub max_message_size: usize,
    /// Most bytes queued for one connection that it has not read yet.
    pub max_send_queue: usize,
    /// Most connections open at once, including those still upgrading.
    pub max_connections: usize,
    /// Time the server waits, on shutdown, for peers to acknowledge its close frames.
    pub shutdown_grace: Duration,
    /// Serve `wss://` with these files; plain `ws://` when `None`.
    pub tls: Option<TlsFiles>,
    /// Handle SIGHUP (reload TLS files), SIGTERM and SIGINT (graceful stop; a second one stops
    /// at once). For the binary; a host program embedding the server keeps its own signals.
    pub handle_signals: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, DEFAULT_PORT)),
            heartbeat_interval: Duration::from_millis(5000),
            handshake_timeout: Duration::from_millis(10_000),
            close_timeout: Duration::from_millis(3000),
            max_message_size: 2 << 20,
            max_send_queue: 4 << 20,
            max_connections: 10_000,
            shutdown_grace: Duration::from_millis(3000),
            tls: None,
            handle_signals: false,
        }
    }
}
