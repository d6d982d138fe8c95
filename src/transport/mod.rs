//! The byte stream under a connection: plain TCP (`ws://`) or rustls over TCP (`wss://`).
//! Whatever the variant, it never blocks, says "would block" as such ([`ReadOutcome`] and
//! [`Written`], never a bare 0), counts the bytes it took off the wire (what a connection's
//! share of a turn is charged), and reports a TLS failure as a typed [`TransportError::Tls`].
//!
//! `Socket` saves the system call that only learns "nothing more": a TCP read that returns
//! less than asked has emptied the receive queue, and with edge-triggered epoll new data
//! brings a new readable event; so until that event, reads answer "would block" at once. An
//! end of stream that came with the data brings no further event, so once the peer has shut
//! its side, every read goes to the kernel until it returns 0.

mod tls;

use std::fmt;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;

use mio::net::TcpStream;

use tls::TlsStream;

/// Why a transport cannot go on.
#[derive(Debug)]
pub enum TransportError {
    /// The TLS layer failed (a bad record, a failed handshake); the alert was sent.
    Tls(rustls::Error),
    /// The socket failed (reset, broken pipe...).
    Io(io::Error),
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tls(e) => write!(f, "TLS: {e}"),
            Self::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for TransportError {}

/// What a read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// This many bytes (never 0).
    Data(usize),
    /// Bytes came off the wire but gave nothing to hand over yet (TLS records without
    /// application data): read again.
    Again,
    /// The peer ended its side.
    End,
    /// Nothing until the next readable event.
    WouldBlock,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// This many bytes were taken (never 0).
    Took(usize),
    /// The socket (or rustls' buffer) is full: wait for the writable edge.
    Full,
}

/// A connection's byte stream.
#[derive(Debug)]
pub struct Transport {
    stream: Stream,
    /// Bytes read off the socket since [`Transport::take_wire_bytes`] last asked.
    wire_bytes: usize,
}

#[derive(Debug)]
enum Stream {
    Plain(Socket),
    Tls(Box<TlsStream>),
}

/// A non-blocking TCP socket that remembers when its receive queue was seen empty.
#[derive(Debug)]
pub(crate) struct Socket {
    tcp: TcpStream,
    /// The last read emptied the receive queue; cleared by the next readable event.
    drained: bool,
    /// The peer shut its side: the end of stream must be read, never assumed away.
    read_closed: bool,
}

impl Socket {
    fn new(tcp: TcpStream) -> Self {
        Self {
            tcp,
            drained: false,
            read_closed: false,
        }
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
        Ok(())
    }
}

impl Transport {
    /// `ws://` over this socket.
    pub fn plain(socket: TcpStream) -> Self {
        Self {
            stream: Stream::Plain(Socket::new(socket)),
            wire_bytes: 0,
        }
    }

    /// `wss://`: rustls over this socket, with this configuration.
    pub fn tls(
        socket: TcpStream,
        config: Arc<rustls::ServerConfig>,
    ) -> Result<Self, rustls::Error> {
        let tls = TlsStream::new(Socket::new(socket), config)?;
        Ok(Self {
            stream: Stream::Tls(Box::new(tls)),
            wire_bytes: 0,
        })
    }

    /// Bytes the TLS layer keeps allocated (records not yet whole, bytes not yet sent,
    /// plaintext not yet handed over); 0 for plain TCP, and for TLS between records.
    pub fn held(&self) -> usize {
        match &self.stream {
            Stream::Plain(_) => 0,
            Stream::Tls(t) => t.held(),
        }
    }

    /// Gives up what the TLS layer keeps (the connection is over: nothing more is sent).
    pub fn release(&mut self) {
        if let Stream::Tls(t) = &mut self.stream {
            t.release();
        }
    }

    /// For TLS, whether its handshake resumed a session; `None` for plain TCP.
    pub fn tls_resumed(&self) -> Option<bool> {
        match &self.stream {
            Stream::Plain(_) => None,
            Stream::Tls(t) => Some(t.resumed()),
        }
    }

    /// The TCP socket, for registration with the poll.
    pub fn tcp(&mut self) -> &mut TcpStream {
        &mut self.socket().tcp
    }

    fn socket(&mut self) -> &mut Socket {
        match &mut self.stream {
            Stream::Plain(s) => s,
            Stream::Tls(t) => t.socket(),
        }
    }

    /// The socket reported readable (and, with `read_closed`, that the peer shut its side):
    /// data, or the end of stream, may wait again.
    pub fn on_readable(&mut self, read_closed: bool) {
        let socket = self.socket();
        socket.drained = false;
        socket.read_closed |= read_closed;
    }

    /// Reads into `buf` (not empty). Over TLS, at most one read of records off the socket.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<ReadOutcome, TransportError> {
        match &mut self.stream {
            Stream::Tls(t) => t.read(buf, &mut self.wire_bytes),
            Stream::Plain(s) => loop {
                return match s.read(buf) {
                    Ok(0) => Ok(ReadOutcome::End),
                    Ok(n) => {
                        self.wire_bytes += n;
                        Ok(ReadOutcome::Data(n))
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(ReadOutcome::WouldBlock),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(TransportError::Io(e)),
                };
            },
        }
    }

    /// Looks at the first bytes waiting on the socket without taking them, under any TLS:
    /// for a PROXY protocol header, which comes before the TLS handshake.
    pub fn peek_raw(&mut self, buf: &mut [u8]) -> Result<ReadOutcome, TransportError> {
        match self.tcp().peek(buf) {
            Ok(0) => Ok(ReadOutcome::End),
            Ok(n) => Ok(ReadOutcome::Data(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(ReadOutcome::WouldBlock),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(ReadOutcome::Again),
            Err(e) => Err(TransportError::Io(e)),
        }
    }

    /// Takes `n` bytes that [`Transport::peek_raw`] saw off the socket, under any TLS.
    pub fn skip_raw(&mut self, n: usize) -> Result<(), TransportError> {
        let mut left = n;
        let mut sink = [0u8; 256];
        while left > 0 {
            let want = left.min(sink.len());
            match self.tcp().read(&mut sink[..want]) {
                Ok(0) => return Err(TransportError::Io(io::ErrorKind::UnexpectedEof.into())),
                Ok(k) => {
                    left -= k;
                    self.wire_bytes += k;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(TransportError::Io(e)),
            }
        }
        Ok(())
    }

    /// Bytes taken off the socket (TLS records included) since the last call.
    pub fn take_wire_bytes(&mut self) -> usize {
        std::mem::take(&mut self.wire_bytes)
    }

    /// Writes from `buf` (not empty).
    pub fn write(&mut self, buf: &[u8]) -> Result<Written, TransportError> {
        loop {
            let result = match &mut self.stream {
                Stream::Plain(s) => s.write(buf).map_err(TransportError::Io),
                Stream::Tls(t) => t.write(buf),
            };
            return match result {
                Ok(0) => Ok(Written::Full),
                Ok(n) => Ok(Written::Took(n)),
                Err(TransportError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    Ok(Written::Full)
                }
                Err(TransportError::Io(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }

    /// rustls holds bytes the socket has not taken yet (never for plain TCP).
    pub fn wants_write(&self) -> bool {
        match &self.stream {
            Stream::Plain(_) => false,
            Stream::Tls(t) => t.wants_write(),
        }
    }

    /// Writes out what rustls holds (nothing to do for plain TCP); true when nothing is left.
    pub fn flush(&mut self) -> Result<bool, TransportError> {
        match &mut self.stream {
            Stream::Plain(_) => Ok(true),
            Stream::Tls(t) => t.flush(),
        }
    }

    /// Ends the write side: `close_notify` for TLS, then a TCP half-close, so that the client
    /// reads what was sent before it sees the end. Best effort: the connection is going away
    /// either way.
    /// `Ok(false)` when the socket is full before the `close_notify` is out: call again
    /// once it is writable (the alert is queued once).
    pub fn close_write(&mut self) -> Result<bool, TransportError> {
        if let Stream::Tls(t) = &mut self.stream {
            if !t.close_notify()? {
                return Ok(false);
            }
        }
        let _ = self.tcp().shutdown(Shutdown::Write);
        Ok(true)
    }

    /// Sends TLS `close_notify` (nothing for plain TCP), before the socket is dropped: best
    /// effort, what the socket does not take is lost.
    pub fn close_notify(&mut self) {
        if let Stream::Tls(t) = &mut self.stream {
            let _ = t.close_notify();
        }
    }

    /// A TLS handshake is under way: a read may cost a handshake step's cryptography.
    pub fn tls_handshaking(&self) -> bool {
        match &self.stream {
            Stream::Plain(_) => false,
            Stream::Tls(t) => t.handshaking(),
        }
    }

    /// Keeps what is written next (TLS only) until [`Transport::close_write`] or a flush, so
    /// that the last words and the `close_notify` go out in one segment.
    pub fn hold(&mut self) {
        if let Stream::Tls(t) = &mut self.stream {
            t.hold();
        }
    }
}
