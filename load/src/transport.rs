//! The byte stream under one client connection, and the server URL that names it: plain TCP
//! for `ws://` and `raw://`, rustls over TCP for `wss://` (`tls`). The engine (`net`) only connects,
//! registers, reads and writes through [`Stream`]; a plain stream's calls go straight to the
//! socket, as before TLS existed. Connections may come from several loopback source
//! addresses (`--source-addrs`), bound before the connect.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use crate::tls::TlsStream;

/// How messages are framed on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `ws://`, `wss://`: WebSocket frames holding sigver's protobuf messages.
    WebSocket,
    /// `raw://`: the reference relay's length-prefixed frames (`rawproto`), over plain TCP.
    Raw,
}

/// Where the load goes: the server's address, the `Host` the upgrade names, and for
/// `wss://` the TLS client and the name the certificate must carry.
#[derive(Debug, Clone)]
pub struct Target {
    /// The framing the server speaks.
    pub framing: Framing,
    /// The server's socket address.
    pub addr: SocketAddr,
    /// `HOST:PORT` as the upgrade request's `Host` header.
    pub host: String,
    /// `wss://`: the configuration all connections share, and the server's name (the URL's
    /// host: a DNS name, or an IP address).
    pub tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    /// Source addresses the connections are bound to in turn; empty: the kernel chooses.
    pub sources: Vec<Ipv4Addr>,
}

/// A URL's scheme, host text and address, before the TLS configuration is known.
#[derive(Debug, Clone)]
pub struct Url {
    /// `wss://`.
    pub tls: bool,
    /// `raw://` or a WebSocket scheme.
    pub framing: Framing,
    /// The host as written (a name, or an IP address without brackets).
    pub host: String,
    /// The server's socket address.
    pub addr: SocketAddr,
}

impl Url {
    /// Parses `ws://HOST:PORT[/]`, `wss://HOST:PORT[/]` or `raw://HOST:PORT[/]`. Other than
    /// loopback addresses need `remote`: the load is an attack on a server that is not the
    /// user's own, so pointing it elsewhere must be a choice, not a typo.
    pub fn parse(url: &str, remote: bool) -> Result<Self, String> {
        let (tls, framing, rest) = if let Some(rest) = url.strip_prefix("wss://") {
            (true, Framing::WebSocket, rest)
        } else if let Some(rest) = url.strip_prefix("ws://") {
            (false, Framing::WebSocket, rest)
        } else if let Some(rest) = url.strip_prefix("raw://") {
            (false, Framing::Raw, rest)
        } else {
            return Err(format!(
                "--url {url}: only ws://, wss:// and raw:// URLs are supported"
            ));
        };
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
        let host = match hostport.rsplit_once(':') {
            Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
            None => hostport,
        };
        Ok(Self {
            tls,
            framing,
            host: host.to_owned(),
            addr,
        })
    }

    /// The target, with the TLS client for `wss://` (ignored for `ws://`).
    pub fn target(
        &self,
        tls: Option<Arc<ClientConfig>>,
        sources: Vec<Ipv4Addr>,
    ) -> Result<Target, String> {
        let tls = match (self.tls, tls) {
            (true, Some(config)) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|e| format!("--url: {:?} as a TLS server name: {e}", self.host))?;
                Some((config, name))
            }
            _ => None,
        };
        if !sources.is_empty() && !matches!(self.addr, SocketAddr::V4(a) if a.ip().is_loopback()) {
            return Err("--source-addrs: only with an IPv4 loopback server".to_owned());
        }
        Ok(Target {
            framing: self.framing,
            addr: self.addr,
            host: self.addr.to_string(),
            tls,
            sources,
        })
    }
}

/// One connection's byte stream, non-blocking.
#[derive(Debug)]
pub enum Stream {
    /// `ws://`, `raw://`.
    Plain(TcpStream),
    /// `wss://` (boxed: rustls' state is large, and most runs are plain).
    Tls(Box<TlsStream>),
}

impl Stream {
    /// Starts a non-blocking connect to the target, from `source` when given.
    pub fn connect(target: &Target, source: Option<Ipv4Addr>) -> io::Result<Self> {
        let tcp = match (source, target.addr) {
            (Some(ip), SocketAddr::V4(to)) => connect_from(ip, to)?,
            _ => TcpStream::connect(target.addr)?,
        };
        // Signaling messages are small: each one leaves at once (the server does the same).
        let _ = tcp.set_nodelay(true);
        Ok(match &target.tls {
            None => Self::Plain(tcp),
            Some((config, name)) => Self::Tls(Box::new(TlsStream::new(tcp, config, name)?)),
        })
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(t) => t,
            Self::Tls(s) => &s.tcp,
        }
    }

    /// On a readiness event during the connect: `Ok(true)` once connected, `Ok(false)` while
    /// still in progress, an error when the connect failed.
    pub fn try_connected(&self) -> io::Result<bool> {
        let tcp = self.tcp();
        if let Some(e) = tcp.take_error()? {
            return Err(e);
        }
        match tcp.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// True when bytes are held below the caller (TLS records the socket did not take).
    #[inline]
    pub fn wants_write(&self) -> bool {
        match self {
            Self::Plain(_) => false,
            Self::Tls(s) => s.wants_write(),
        }
    }

    /// For TLS once the handshake is over: `Some(true)` if it resumed a session.
    pub fn tls_resumed(&self) -> Option<bool> {
        match self {
            Self::Plain(_) => None,
            Self::Tls(s) => s.resumed(),
        }
    }

    /// True for a TLS stream whose handshake has not completed.
    pub fn tls_handshaking(&self) -> bool {
        match self {
            Self::Plain(_) => false,
            Self::Tls(s) => s.is_handshaking(),
        }
    }
}

/// A non-blocking connect from `source` (port chosen at connect time, so that each source
/// address has its own ephemeral ports for each server port, not one shared pool).
fn connect_from(source: Ipv4Addr, to: SocketAddrV4) -> io::Result<TcpStream> {
    let sockaddr = |a: SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor we own (closed by `OwnedFd` on every error
    // path), with sockaddr_in values that live across each call.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let owned = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        // Best effort: without it the port is picked at bind, from the shared pool.
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let from = sockaddr(SocketAddrV4::new(source, 0));
        if libc::bind(fd, (&from as *const libc::sockaddr_in).cast(), len) < 0 {
            return Err(io::Error::last_os_error());
        }
        let dest = sockaddr(to);
        if libc::connect(
            owned.as_raw_fd(),
            (&dest as *const libc::sockaddr_in).cast(),
            len,
        ) < 0
        {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
        }
        Ok(TcpStream::from_std(std::net::TcpStream::from(owned)))
    }
}

impl Read for Stream {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(t) => t.read(buf),
            Self::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(t) => t.write(buf),
            Self::Tls(s) => s.write(buf),
        }
    }

    /// Plain TCP holds nothing; TLS pushes out the records still held (`WouldBlock` if the
    /// socket does not take them all).
    #[inline]
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(_) => Ok(()),
            Self::Tls(s) => s.flush(),
        }
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, token: Token, interest: Interest) -> io::Result<()> {
        match self {
            Self::Plain(t) => t.register(r, token, interest),
            Self::Tls(s) => s.tcp.register(r, token, interest),
        }
    }

    fn reregister(&mut self, r: &Registry, token: Token, interest: Interest) -> io::Result<()> {
        match self {
            Self::Plain(t) => t.reregister(r, token, interest),
            Self::Tls(s) => s.tcp.reregister(r, token, interest),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Self::Plain(t) => t.deregister(r),
            Self::Tls(s) => s.tcp.deregister(r),
        }
    }
}
