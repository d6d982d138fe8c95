//! rustls over a non-blocking socket, following rustls' contract: drain plaintext before
//! reading more TLS records, write TLS bytes out whenever rustls wants to, send the alert once
//! on a TLS error. It never blocks.

use std::io::{self, Read};
use std::sync::Arc;

use rustls::{ServerConfig, ServerConnection};

use super::{ReadOutcome, Socket, TransportError};

/// rustls over a non-blocking TCP socket.
#[derive(Debug)]
pub(super) struct TlsStream {
    conn: ServerConnection,
    sock: Socket,
}

impl TlsStream {
    pub(super) fn new(sock: Socket, config: Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        Ok(Self {
            conn: ServerConnection::new(config)?,
            sock,
        })
    }

    pub(super) fn socket(&mut self) -> &mut Socket {
        &mut self.sock
    }

    /// Writes out the TLS bytes rustls has queued; `Ok(false)` when the socket is full first.
    pub(super) fn flush(&mut self) -> Result<bool, TransportError> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(0) => return Err(TransportError::Io(io::ErrorKind::WriteZero.into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(TransportError::Io(e)),
            }
        }
        Ok(true)
    }

    /// Plaintext into `buf`, reading at most once from the socket, so that a peer sending
    /// records with no application data (padding, empty records) pays for them in `wire`.
    pub(super) fn read(
        &mut self,
        buf: &mut [u8],
        wire: &mut usize,
    ) -> Result<ReadOutcome, TransportError> {
        // Plaintext already decrypted comes first: epoll cannot see it.
        if let Some(outcome) = self.read_plaintext(buf)? {
            return Ok(outcome);
        }
        let n = loop {
            match self.conn.read_tls(&mut self.sock) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(ReadOutcome::WouldBlock)
                }
                other => break other.map_err(TransportError::Io)?,
            }
        };
        *wire += n;
        if let Err(e) = self.conn.process_new_packets() {
            // The last gasp: send the alert once; the connection is over either way.
            let _ = self.flush();
            return Err(TransportError::Tls(e));
        }
        // Handshake messages and key updates need answers, whoever is reading.
        self.flush()?;
        if let Some(outcome) = self.read_plaintext(buf)? {
            return Ok(outcome);
        }
        Ok(if n == 0 {
            ReadOutcome::End
        } else {
            ReadOutcome::Again
        })
    }

    fn read_plaintext(&mut self, buf: &mut [u8]) -> Result<Option<ReadOutcome>, TransportError> {
        match self.conn.reader().read(buf) {
            Ok(0) => Ok(Some(ReadOutcome::End)),
            Ok(n) => Ok(Some(ReadOutcome::Data(n))),
            // A peer that drops TCP without close_notify: an end of stream all the same.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Some(ReadOutcome::End)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(TransportError::Io(e)),
        }
    }

    /// The handshake is done and resumed a session (a ticket) rather than made a new one.
    pub(super) fn resumed(&self) -> bool {
        self.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    pub(super) fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Hands plaintext to rustls; `Ok(0)` when its buffer is full until the socket drains.
    pub(super) fn write(&mut self, buf: &[u8]) -> Result<usize, TransportError> {
        // Room first: rustls takes nothing while its own buffer is full, and a full answer
        // here must mean the socket is full (only then does a writable edge follow).
        if !self.flush()? {
            return Ok(0);
        }
        let n = io::Write::write(&mut self.conn.writer(), buf).map_err(TransportError::Io)?;
        self.flush()?;
        Ok(n)
    }

    pub(super) fn close_notify(&mut self) {
        self.conn.send_close_notify();
        let _ = self.flush();
    }
}
