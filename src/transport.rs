//! The byte stream under a connection: plain TCP (`ws://`) or rustls over TCP (`wss://`).
//! Whatever the variant, it is non-blocking, never reports a full socket as `Ok(0)`, and
//! counts the bytes it accepted for writing, so the server knows how much is still queued.
//!
//! [`Socket`] saves the system call that only learns "nothing more": a TCP read that returns
//! less than asked has emptied the receive queue, and with edge-triggered epoll new data
//! brings a new readable event; so until that event, reads answer `WouldBlock` at once. An
//! end of stream that came with the data brings no further event, so once the peer has shut
//! its side (`is_read_closed`), every read goes to the kernel until it returns 0.

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
    Plain(Socket),
    Tls(Box<TlsStream>),
}

/// A non-blocking TCP socket that remembers when its receive queue was seen empty.
#[derive(Debug)]
pub struct Socket {
    tcp: TcpStream,
    /// The last read emptied the receive queue; cleared by the next readable event.
    drained: bool,
    /// The peer shut its side: the end of stream must be read, never assumed away.
    read_closed: bool,
}

impl Socket {
    /// Wraps an accepted socket.
    pub fn new(tcp: TcpStream) -> Self {
        Self {
            tcp,
            drained: false,
            read_closed: false,
        }
    }

    /// The TCP socket itself.
    pub fn tcp(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.drained && !self.read_closed {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.tcp.read(buf) {
            Ok(n) => {
                // Short, or end of stream: nothing is left until the next readable event.
                self.drained = n < buf.len();
                Ok(n)
            }
            Err(e) => {
                self.drained = e.kind() == io::ErrorKind::WouldBlock;
                Err(e)
            }
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

impl Transport {
    /// `ws://` over this socket.
    pub fn plain(socket: TcpStream) -> Self {
        Self {
            stream: Stream::Plain(Socket::new(socket)),
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
        self.socket().tcp()
    }

    fn socket(&mut self) -> &mut Socket {
        match &mut self.stream {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &mut t.sock,
        }
    }

    /// The socket reported readable (and, with `read_closed`, that the peer shut its side):
    /// data, or the end of stream, may wait again.
    pub fn on_readable(&mut self, read_closed: bool) {
        let socket = self.socket();
        socket.drained = false;
        socket.read_closed |= read_closed;
    }

    /// Ends the write side: `close_notify` for TLS, then a TCP half-close, so that the client
    /// reads what was sent before it sees the end. Best effort: the connection is going away
    /// either way.
    pub fn close_write(&mut self) {
        self.close_notify();
        let _ = self.tcp().shutdown(Shutdown::Write);
    }

    /// Sends TLS `close_notify` (nothing for plain TCP), before the socket is dropped.
    pub fn close_notify(&mut self) {
        if let Stream::Tls(t) = &mut self.stream {
            t.conn.send_close_notify();
            let _ = t.flush();
        }
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
