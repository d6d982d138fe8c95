//! The byte stream under a connection: plain TCP (`ws://`) or rustls over TCP (`wss://`).
//! Whatever the variant, it is non-blocking and never reports a full socket as `Ok(0)`.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::net::TcpStream;

use crate::tls::TlsStream;

/// A connection's byte stream.
#[derive(Debug)]
pub enum Transport {
    /// `ws://`
    Plain(TcpStream),
    /// `wss://`
    Tls(Box<TlsStream>),
}

impl Transport {
    /// The TCP socket, for registration with the poll.
    pub fn tcp(&mut self) -> &mut TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(t) => &mut t.sock,
        }
    }

    /// Ends the write side: `close_notify` for TLS, then a TCP half-close. Best effort: the
    /// connection is going away either way.
    pub fn close_write(&mut self) {
        if let Self::Tls(t) = self {
            t.conn.send_close_notify();
            let _ = t.flush();
        }
        let _ = self.tcp().shutdown(Shutdown::Write);
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match self {
            Self::Plain(s) => s.write(buf)?,
            Self::Tls(t) => t.write(buf)?,
        };
        // tungstenite reads Ok(0) as a reset; a full socket is WouldBlock.
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Tls(t) => t.flush(),
        }
    }
}
