//! Errors that stop the server from starting or running. Per-connection trouble is never an
//! `Error`: it closes that connection with a [`crate::CloseReason`] and nothing else.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use crate::keys::KeySecretError;
use crate::tls::TlsError;

/// Why the server could not start or had to stop.
#[derive(Debug)]
pub enum Error {
    /// The listening socket could not be bound.
    Bind(SocketAddr, io::Error),
    /// The event loop could not be created or polled.
    Poll(io::Error),
    /// A TLS key or certificate file cannot be used.
    Tls(TlsError),
    /// Signal handlers could not be installed.
    Signals(io::Error),
    /// The open-file limit could not be read.
    Limits(io::Error),
    /// `LISTEN_FDS` named sockets that cannot be served.
    Activation(io::Error),
    /// The `--key-secret` file cannot be used.
    KeySecret(KeySecretError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            Self::Poll(e) => write!(f, "event loop failed: {e}"),
            Self::Tls(e) => write!(f, "TLS: {e}"),
            Self::Signals(e) => write!(f, "cannot install signal handlers: {e}"),
            Self::Limits(e) => write!(f, "cannot read the open-file limit: {e}"),
            Self::Activation(e) => write!(f, "socket activation: {e}"),
            Self::KeySecret(e) => write!(f, "key secret: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Bind(_, e)
            | Self::Poll(e)
            | Self::Signals(e)
            | Self::Limits(e)
            | Self::Activation(e) => Some(e),
            Self::Tls(e) => Some(e),
            Self::KeySecret(e) => Some(e),
        }
    }
}
