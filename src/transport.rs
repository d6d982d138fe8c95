//! The byte stream under a connection: plain TCP today, TLS beside it later. Whatever the
//! variant, it is non-blocking and never reports a short write as `Ok(0)`.

use std::io::{self, Read, Write};

use mio::net::TcpStream;

/// A connection's byte stream.
#[derive(Debug)]
pub enum Transport {
    /// `ws://`
    Plain(TcpStream),
}

impl Transport {
    /// The TCP socket, for registration with the poll.
    pub fn tcp(&mut self) -> &mut TcpStream {
        match self {
            Self::Plain(s) => s,
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match self {
            Self::Plain(s) => s.write(buf)?,
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
        }
    }
}
