//! Server settings. Every limit the server enforces is a named field here, with a default
//! that no real Netflux use reaches.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::access::OriginPolicy;
use crate::allow::IpNet;
use crate::tls::TlsFiles;

/// Default port, as the original (docs/PROTOCOL.md §8).
pub const DEFAULT_PORT: u16 = 8000;

/// How the server listens and what it tolerates.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address and port to bind; port 0 picks a free one.
    pub addr: SocketAddr,
    /// Time between two heartbeat ticks (docs/PROTOCOL.md §4).
    pub heartbeat_interval: Duration,
    /// Time a connection has to complete its upgrade (TLS handshake included) before it is
    /// dropped.
    pub handshake_timeout: Duration,
    /// Time a close handshake may take before the connection is dropped.
    pub close_timeout: Duration,
    /// Largest incoming message or frame, in bytes; larger closes with 1009.
    pub max_message_size: usize,
    /// Most bytes queued for one connection that it has not read yet; more closes it with
    /// 1008.
    pub max_send_queue: usize,
    /// Most bytes queued for all connections together; past it, the connections holding the
    /// most are closed with 1008 until the total is under it.
    pub memory_budget: usize,
    /// Messages per second one connection may send (a token bucket with a burst of the same
    /// size); more closes it with 1008. 0 turns the limit off.
    pub rate_limit: u32,
    /// Most connections open at once, including those still upgrading; over it, upgrades get
    /// 503. `None`: raise the soft open-file limit to the hard one and use what it allows.
    pub max_connections: Option<usize>,
    /// Most connections open at once from one IP address; over it, upgrades get 429. 0 turns
    /// the limit off.
    pub max_connections_per_ip: usize,
    /// Peers whose `X-Forwarded-For` (or `X-Real-IP`) names the client: reverse proxies in
    /// front of the server. Empty (the default): every peer is the client.
    pub trusted_proxies: Vec<IpNet>,
    /// IPv6 clients are counted together by this many leading bits in the per-address limit
    /// (a host commonly holds a whole /64).
    pub ipv6_prefix: u8,
    /// Every connection starts with a PROXY protocol header (version 1 or 2) naming the
    /// client, sent by a load balancer in front; one without is closed.
    pub proxy_protocol: bool,
    /// Which `Origin`s may open a WebSocket; any, by default, as the original.
    pub origins: OriginPolicy,
    /// Most members a group takes newcomers up to: a `connect` that would bind a peer to
    /// join a group this full closes it with 4746. 0 (the default, as the original) turns
    /// the cap off.
    pub max_group_size: usize,
    /// Time the server waits, on shutdown, for peers to acknowledge its close frames.
    pub shutdown_grace: Duration,
    /// Serve `wss://` with these files; plain `ws://` when `None`.
    pub tls: Option<TlsFiles>,
    /// Handle SIGHUP (reload TLS files), SIGTERM and SIGINT (graceful stop; a second one stops
    /// at once). For the binary; a host program embedding the server keeps its own signals.
    pub handle_signals: bool,
    /// Clients allowed to read `GET /metrics` and the status page `GET /`; others get 403.
    pub metrics_allow: Vec<IpNet>,
    /// Time between two samples of the status page's history (`/status.json`, which keeps
    /// the last [`crate::history::CAPACITY`]).
    pub status_interval: Duration,
    /// With TLS: resume sessions with stateless tickets (see [`crate::tickets`]), as browsers
    /// expect; off, every connection pays a full handshake.
    pub tls_resumption: bool,
    /// How often the ticket keys change; a ticket opens for at most two of these.
    pub tls_ticket_rotation: Duration,
    /// Serve the listening sockets handed over by systemd (`LISTEN_FDS`, `LISTEN_PID`) when
    /// there are any, instead of binding `addr`. For the binary.
    pub socket_activation: bool,
    /// Let in only keys signed with a secret of this file (one a line; see [`crate::keys`]);
    /// any key when `None`, as the original. Read again on reload, as the TLS files are.
    pub key_secret: Option<PathBuf>,
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
            memory_budget: 256 << 20,
            rate_limit: 1000,
            max_connections: None,
            max_connections_per_ip: 512,
            max_group_size: 0,
            trusted_proxies: Vec::new(),
            ipv6_prefix: 64,
            proxy_protocol: false,
            origins: OriginPolicy::default(),
            shutdown_grace: Duration::from_millis(3000),
            tls: None,
            handle_signals: false,
            metrics_allow: IpNet::loopback(),
            status_interval: Duration::from_millis(10_000),
            tls_resumption: true,
            tls_ticket_rotation: Duration::from_secs(6 * 3600),
            socket_activation: false,
            key_secret: None,
        }
    }
}
