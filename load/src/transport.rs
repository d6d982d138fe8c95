//! The byte stream under one client connection, and the server URL that names it. Plain TCP
//! (`ws://`) today; the engine (`net`) only connects, registers, reads and writes through
//! [`Stream`], so another transport is one more variant here and one more URL scheme.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

/// Where the load goes: the server's address and the `Host` the upgrade names.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server's socket address.
    pub addr: SocketAddr,
    /// `HOST:PORT` as the upgrade request's `Host` header.
    pub host: String,
}

impl Target {
    /// Parses `ws://HOST:PORT[/]`. Other than loopback addresses need `remote`: the load is
    /// an attack on a server that is not the user's own, so pointing it elsewhere must be a
    /// choice, not a typo.
    pub fn parse(url: &str, remote: bool) -> Result<Self, String> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| format!("--url {url}: only ws:// URLs are supported"))?;
        let hostport = rest.trim_end_matches('/');
        let addr = hostport
            .to_socket_addrs()
            .map_err(|e| format!("--url {url}: {e}"))?
            .next()
            .ok_or_else(|| format!("--url {url}: no address"))?;
        if !addr.ip().is_loopback() && !remote {
            return Err(format!(
                "--url {url}: not a loopback address; add --remote to load a server of yours \
                 on another host"
            ));
        }
        Ok(Self {
            addr,
            host: addr.to_string(),
        })
    }
}

/// One connection's byte stream, non-blocking.
#[derive(Debug)]
pub struct Stream {
    tcp: TcpStream,
}

impl Stream {
    /// Starts a non-blocking connect to the target.
    pub fn connect(target: &Target) -> io::Result<Self> {
        let tcp = TcpStream::connect(target.addr)?;
        // Signaling messages are small: each one leaves at once (the server does the same).
        let _ = tcp.set_nodelay(true);
        Ok(Self { tcp })
    }

    /// On a readiness event during the connect: `Ok(true)` once connected, `Ok(false)` while
    /// still in progress, an error when the connect failed.
    pub fn try_connected(&self) -> io::Result<bool> {
        if let Some(e) = self.tcp.take_error()? {
            return Err(e);
        }
        match self.tcp.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.tcp.read(buf)
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, token: Token, interest: Interest) -> io::Result<()> {
        self.tcp.register(r, token, interest)
    }

    fn reregister(&mut self, r: &Registry, token: Token, interest: Interest) -> io::Result<()> {
        self.tcp.reregister(r, token, interest)
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        self.tcp.deregister(r)
    }
}
