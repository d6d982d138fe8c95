//! sigver: the WebRTC signaling server of the Netflux peer-to-peer library.
//!
//! Browsers and bots open a WebSocket to `ws://host:8000/KEY`; the server keeps groups by key,
//! introduces each joining peer to one member, relays their WebRTC offers, answers and
//! candidates until the peer-to-peer link is up, and checks liveness with heartbeats. The
//! behaviour a Netflux client sees is that of the original Node.js sigver, byte for byte;
//! the deliberate differences (limits, endpoints, TLS handling) are listed in the README.
//!
//! ```no_run
//! let server = sigver::Server::bind(sigver::Config::default())?;
//! let handle = server.handle(); // handle.shutdown() from any thread stops it
//! server.run()?;
//! # Ok::<(), sigver::Error>(())
//! ```
//!
//! # Layout
//! - [`server`]: the mio event loop, a thin driver of the pieces below.
//! - [`conn`]: one connection as a session: its phases, WebSocket framing, buffers and their
//!   count, and its share of each loop turn.
//! - [`transport`]: plain TCP or rustls under a connection; [`tls`]: loading certificates;
//!   [`keys`]: signed group keys (`--key-secret`).
//! - [`handshake`]: parsing the HTTP upgrade request; [`http`]: every HTTP answer. Both pure.
//! - [`hub`]: groups, bindings, relaying and heartbeat misses: the protocol, without sockets.
//! - [`timer`]: the hashed timer wheel for heartbeats and deadlines; [`limits`]: the token
//!   bucket and the open-file limit.
//! - [`proto`]: the protobuf messages; [`proxy`]: the PROXY protocol header.
//! - [`metrics`]: counters and the Prometheus text; [`allow`]: address ranges; [`access`]:
//!   allowed origins, client addresses behind proxies, per-address keys.
//! - [`throttle`]: log lines a client can trigger, one a second per kind; [`logfmt`]: the
//!   JSON log format.
//! - [`close`]: close codes and reasons; [`config`]: settings; [`cli`]: the command line;
//!   [`error`]: errors that stop the server.

#![deny(missing_docs)]

pub mod access;
pub mod allow;
pub mod cli;
pub mod close;
pub mod config;
pub mod conn;
pub mod error;
mod files;
pub mod handshake;
pub mod history;
pub mod http;
pub mod hub;
pub mod keys;
pub mod limits;
pub mod logfmt;
pub mod metrics;
pub mod proto;
pub mod proxy;
pub mod server;
pub mod throttle;
pub mod tickets;
pub mod timer;
pub mod tls;
pub mod transport;

pub use close::CloseReason;
pub use config::Config;
pub use error::Error;
pub use server::{Handle, Server, Stats};
