//! The byte stream under a connection: plain TCP (`ws://`) or rustls over TCP (`wss://`).
//! Whatever the variant, it is non-blocking, never reports a full socket as `Ok(0)`, and
//! counts the bytes it accepted for writing, so the server knows how much is still queued.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::net::TcpStream;

use crate::tls::TlsStream;

/// A connection's byte stream.
#[derive(Debug)]
pub struct Transport {
    stream: Stream,
    written: u64,
}

#[derive(Debug)]
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Transport {
    /// `ws://` over this socket.
    pub fn plain(socket: TcpStream) -> Self {
        Self {
            stream: Stream::Plain(socket),
            written: 0,
        }
    }

    /// `wss://`: rustls over a socket.
    pub fn tls(stream: TlsStream) -> Self {
        Self {
            stream: Stream::Tls(Box::new(stream)),
            written: 0,
        }
    }

    /// Bytes accepted by `write` since the connection opened (for TLS: plaintext handed to
    /// rustls, which holds at most its own small buffer more).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The TCP socket, for registration with the poll.
    pub fn tcp(&mut self) -> &mut TcpStream {
        match &mut self.stream {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &mut t.sock,
        }
    }

    /// Ends the write side: `close_notify` for TLS, then a TCP half-close. Best effort: the
    /// connection is going away either way.
    pub fn close_write(&mut self) {
        if let Stream::Tls(t) = &mut self.stream {
            t.conn.send_close_notify();
            let _ = t.flush();
        }
        let _ = self.tcp().shutdown(Shutdown::Write);
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.stream {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.stream {
            Stream::Plain(s) => s.write(buf)?,
            Stream::Tls(t) => t.write(buf)?,
        };
        // tungstenite reads Ok(0) as a reset; a full socket is WouldBlock.
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.stream {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(t) => t.flush(),
        }
    }
}
