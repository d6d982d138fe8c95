//! rustls over a non-blocking socket, with rustls' unbuffered API: the connection keeps no
//! buffer of its own while idle. TLS bytes are read into a buffer the loop's thread shares
//! and decrypted there; a connection keeps only what is unfinished (the start of a record, a
//! handshake message spread over several reads), what the socket did not take, and
//! plaintext it could not hand over yet, each allocated only while it is needed and counted
//! by [`TlsStream::held`]. rustls' buffered `ServerConnection` would keep a 4 KiB read buffer
//! per connection for its whole life, out of reach of the memory budget.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, InsufficientSizeError,
};
use rustls::ServerConfig;

use super::{ReadOutcome, Socket, TransportError};

/// Most TLS bytes read off the socket in one call.
const READ_SIZE: usize = 32 * 1024;
/// Most plaintext encrypted in one call: four full records.
const WRITE_SIZE: usize = 4 * 16 * 1024;
/// Most TLS bytes waiting to be sent that a write sends with its own (a session ticket or a
/// key update, not a backlog).
const JOIN_AT_MOST: usize = 16 * 1024;
/// Most TLS bytes a connection may keep unprocessed: a handshake message of rustls' largest
/// size (64 KiB), spread over records, and one more read. More is an attack.
const MAX_PENDING: usize = 0x1_0000 + 4 * 1024 + READ_SIZE;

thread_local! {
    /// Where records are read and decrypted, and where plaintext is encrypted, for every
    /// connection of this thread in turn (the loop runs one connection at a time).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// rustls over a non-blocking TCP socket.
pub(super) struct TlsStream {
    conn: UnbufferedServerConnection,
    sock: Socket,
    /// TLS bytes received and not processed yet; empty (unallocated) between records.
    pending_in: Vec<u8>,
    /// TLS bytes the socket has not taken yet, from `sent` on; empty when it keeps up.
    pending_out: Vec<u8>,
    sent: usize,
    /// Plaintext decrypted but not handed over yet, from `stash_at` on.
    stash: Vec<u8>,
    stash_at: usize,
    /// rustls may hold decrypted records the last read had no room for.
    plaintext_waiting: bool,
    /// The peer sent `close_notify`: after the plaintext before it, reads end.
    peer_closed: bool,
    /// Writes are kept, not sent, until the next flush: the last words before a close go out
    /// with the `close_notify` after them.
    holding: bool,
    /// The `close_notify` is queued: it is not queued twice.
    close_queued: bool,
    /// A call failed (a TLS error, the socket, a record too large): rustls is not called
    /// again. It must be given back the bytes it has not discarded on every call (given
    /// fewer, it panics while it holds part of a handshake message), and a second call
    /// after its error processes the bad bytes again.
    failed: bool,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("handshaking", &self.conn.is_handshaking())
            .field("held", &self.held())
            .field("peer_closed", &self.peer_closed)
            .finish_non_exhaustive()
    }
}

impl TlsStream {
    pub(super) fn new(sock: Socket, config: Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        Ok(Self {
            conn: UnbufferedServerConnection::new(config)?,
            sock,
            pending_in: Vec::new(),
            pending_out: Vec::new(),
            sent: 0,
            stash: Vec::new(),
            stash_at: 0,
            plaintext_waiting: false,
            peer_closed: false,
            holding: false,
            close_queued: false,
            failed: false,
        })
    }

    pub(super) fn socket(&mut self) -> &mut Socket {
        &mut self.sock
    }

    /// Bytes this connection keeps allocated for TLS (beyond rustls' fixed state).
    pub(super) fn held(&self) -> usize {
        self.pending_in.capacity() + self.pending_out.capacity() + self.stash.capacity()
    }

    /// Gives up the buffers: the connection is over.
    pub(super) fn release(&mut self) {
        self.pending_in = Vec::new();
        self.pending_out = Vec::new();
        self.sent = 0;
        self.stash = Vec::new();
        self.stash_at = 0;
    }

    pub(super) fn handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The handshake is done and resumed a session (a ticket) rather than made a new one.
    pub(super) fn resumed(&self) -> bool {
        self.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    pub(super) fn wants_write(&self) -> bool {
        self.sent < self.pending_out.len()
    }

    /// Keeps what is written next until the next flush, so that it goes out in one segment
    /// with what follows: a short last write before [`TlsStream::close_notify`].
    pub(super) fn hold(&mut self) {
        self.holding = true;
    }

    /// Writes out the TLS bytes kept for sending; `Ok(false)` when the socket is full first.
    pub(super) fn flush(&mut self) -> Result<bool, TransportError> {
        self.holding = false;
        let result = self.flush_out();
        self.failed |= result.is_err();
        result
    }

    fn flush_out(&mut self) -> Result<bool, TransportError> {
        while self.sent < self.pending_out.len() {
            match self.sock.write(&self.pending_out[self.sent..]) {
                Ok(0) => return Err(TransportError::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(TransportError::Io(e)),
            }
        }
        // All sent: nothing stays allocated.
        self.pending_out = Vec::new();
        self.sent = 0;
        Ok(true)
    }

    /// Sends `bytes` after what is kept for sending; what the socket does not take is kept.
    fn send(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        if self.holding {
            unsent(&mut self.pending_out, &mut self.sent).extend_from_slice(bytes);
            return Ok(());
        }
        if self.wants_write() {
            // One write for both; whatever the socket does not take stays kept.
            unsent(&mut self.pending_out, &mut self.sent).extend_from_slice(bytes);
            return self.flush_out().map(|_| ());
        }
        let mut written = 0;
        while written < bytes.len() {
            match self.sock.write(&bytes[written..]) {
                Ok(0) => return Err(TransportError::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(TransportError::Io(e)),
            }
        }
        self.pending_out.extend_from_slice(&bytes[written..]);
        Ok(())
    }

    /// Plaintext into `buf`, reading at most once from the socket, so that a peer sending
    /// records with no application data (padding, empty records) pays for them in `wire`.
    pub(super) fn read(
        &mut self,
        buf: &mut [u8],
        wire: &mut usize,
    ) -> Result<ReadOutcome, TransportError> {
        if self.failed {
            return Err(TransportError::Io(io::ErrorKind::NotConnected.into()));
        }
        let result = self.read_records(buf, wire);
        self.failed |= result.is_err();
        result
    }

    fn read_records(
        &mut self,
        buf: &mut [u8],
        wire: &mut usize,
    ) -> Result<ReadOutcome, TransportError> {
        // Plaintext already decrypted comes first: epoll cannot see it.
        if self.stash_at < self.stash.len() {
            let n = (self.stash.len() - self.stash_at).min(buf.len());
            buf[..n].copy_from_slice(&self.stash[self.stash_at..self.stash_at + n]);
            self.stash_at += n;
            if self.stash_at == self.stash.len() {
                self.stash = Vec::new();
                self.stash_at = 0;
            }
            return Ok(ReadOutcome::Data(n));
        }
        if self.peer_closed && !self.plaintext_waiting {
            return Ok(ReadOutcome::End);
        }
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            if scratch.len() < MAX_PENDING + WRITE_SIZE {
                scratch.resize(MAX_PENDING + WRITE_SIZE, 0);
            }
            let kept = self.pending_in.len();
            scratch[..kept].copy_from_slice(&self.pending_in);
            self.pending_in = Vec::new();
            let mut len = kept;
            let mut ended = false;
            let mut blocked = false;
            if !self.plaintext_waiting {
                let room = READ_SIZE.min(MAX_PENDING - kept);
                loop {
                    match self.sock.read(&mut scratch[kept..kept + room]) {
                        Ok(0) => ended = true,
                        Ok(n) => {
                            *wire += n;
                            len += n;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => blocked = true,
                        Err(e) => return Err(TransportError::Io(e)),
                    }
                    break;
                }
            }
            let result = self.process(&mut scratch[..len], buf);
            let (consumed, out) = match result {
                Ok(done) => done,
                Err((consumed, e)) => {
                    // Only rustls' own errors leave an alert to send; a failed socket takes
                    // nothing more.
                    if matches!(e, TransportError::Tls(_)) {
                        self.last_gasp(&mut scratch[consumed..len]);
                    }
                    return Err(e);
                }
            };
            if consumed < len {
                if len - consumed >= MAX_PENDING {
                    return Err(TransportError::Tls(rustls::Error::General(
                        "handshake message too large".into(),
                    )));
                }
                self.pending_in = scratch[consumed..len].to_vec();
            }
            Ok(if out > 0 {
                ReadOutcome::Data(out)
            } else if ended || self.peer_closed {
                ReadOutcome::End
            } else if blocked && len == kept {
                ReadOutcome::WouldBlock
            } else {
                ReadOutcome::Again
            })
        })
    }

    /// After a TLS error: sends the alert rustls queued, once. rustls hands queued bytes out
    /// before it looks at `rest` again (it must be given the bytes it has not finished with,
    /// as always), and one step only: a second would process the bad bytes again.
    fn last_gasp(&mut self, rest: &mut [u8]) {
        if let Ok(ConnectionState::EncodeTlsData(mut data)) =
            self.conn.process_tls_records(rest).state
        {
            if encode(unsent(&mut self.pending_out, &mut self.sent), &mut data).is_ok() {
                let _ = self.flush();
            }
        }
    }

    /// Runs rustls over `incoming` until it needs more bytes: answers the handshake, and
    /// copies decrypted application data into `out`. Returns the bytes of `incoming` it is
    /// done with and the plaintext bytes written.
    fn process(
        &mut self,
        incoming: &mut [u8],
        out: &mut [u8],
    ) -> Result<(usize, usize), (usize, TransportError)> {
        let (mut consumed, mut written) = (0, 0);
        self.plaintext_waiting = false;
        loop {
            let status = self.conn.process_tls_records(&mut incoming[consumed..]);
            let mut discard = status.discard;
            let state = match status.state {
                Ok(state) => state,
                Err(e) => return Err((consumed + discard, TransportError::Tls(e))),
            };
            let more = match state {
                ConnectionState::ReadTraffic(mut records) => {
                    while written < out.len() {
                        match records.next_record() {
                            Some(Ok(record)) => {
                                discard += record.discard;
                                let payload = record.payload;
                                let n = payload.len().min(out.len() - written);
                                out[written..written + n].copy_from_slice(&payload[..n]);
                                written += n;
                                self.stash.extend_from_slice(&payload[n..]);
                            }
                            Some(Err(e)) => {
                                return Err((consumed + discard, TransportError::Tls(e)))
                            }
                            None => break,
                        }
                    }
                    if written == out.len() {
                        // No room: the rest waits in rustls for the next read.
                        self.plaintext_waiting = records.peek_len().is_some();
                        false
                    } else {
                        true
                    }
                }
                ConnectionState::EncodeTlsData(mut data) => {
                    encode(unsent(&mut self.pending_out, &mut self.sent), &mut data)
                        .map_err(|e| (consumed + discard, e))?;
                    true
                }
                ConnectionState::TransmitTlsData(transmit) => {
                    // Kept for sending, at the turn's flush or with the next write (the
                    // session ticket and the `101` go in one segment): rustls is done with
                    // them either way.
                    transmit.done();
                    true
                }
                ConnectionState::PeerClosed => {
                    self.peer_closed = true;
                    true
                }
                ConnectionState::Closed => {
                    self.peer_closed = true;
                    false
                }
                // Needs more bytes, or is done with these: the handshake is over and only
                // writes could follow. Early data is never accepted (no size is configured).
                _ => false,
            };
            consumed += discard;
            if !more {
                return Ok((consumed, written));
            }
        }
    }

    /// Encrypts plaintext from `buf` and sends it; `Ok(0)` when what was sent before is not
    /// out yet (only then does a writable edge follow).
    pub(super) fn write(&mut self, buf: &[u8]) -> Result<usize, TransportError> {
        if self.failed {
            return Err(TransportError::Io(io::ErrorKind::NotConnected.into()));
        }
        let result = self.encrypt_and_send(buf);
        self.failed |= result.is_err();
        result
    }

    fn encrypt_and_send(&mut self, buf: &[u8]) -> Result<usize, TransportError> {
        // A few handshake bytes waiting (a session ticket) go out with this write, in one
        // segment; more than that is the socket falling behind, and it goes first.
        let joined = self.wants_write() && self.pending_out.len() - self.sent <= JOIN_AT_MOST;
        if !joined && !self.flush_out()? {
            return Ok(0);
        }
        let take = buf.len().min(WRITE_SIZE);
        // Taken out while rustls steps over it, and cut once at the end: records waiting
        // there are many when they are small, and cutting each off the front in turn would
        // cost their count times their size.
        let mut incoming = std::mem::take(&mut self.pending_in);
        let mut done = 0;
        let result = SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let need = take + take / 16 + 256;
            if scratch.len() < need {
                scratch.resize(need, 0);
            }
            loop {
                let plain = Some((&buf[..take], &mut scratch[..]));
                match self.step(&mut incoming, &mut done, plain)? {
                    Step::Encrypted(n) => {
                        self.send(&scratch[..n])?;
                        return Ok(take);
                    }
                    Step::Handled => {}
                    Step::Transmit => {
                        if !self.flush()? {
                            return Ok(0);
                        }
                    }
                    Step::Alerted | Step::Stuck => {
                        return Err(TransportError::Io(io::ErrorKind::NotConnected.into()))
                    }
                }
            }
        });
        self.keep_pending(incoming, done);
        result
    }

    /// Puts back what rustls is not done with, from `done` on.
    fn keep_pending(&mut self, mut incoming: Vec<u8>, done: usize) {
        incoming.drain(..done);
        if !incoming.is_empty() {
            self.pending_in = incoming;
        }
    }

    /// One step of rustls outside a read, over the bytes it has not finished with: handshake
    /// bytes are kept for sending, plaintext is kept for reads, and in the traffic state
    /// `plain` (if any) is encrypted into its buffer, or else a `close_notify`. `incoming`
    /// holds those bytes from `done` on; `done` moves past what rustls is done with.
    fn step(
        &mut self,
        incoming: &mut [u8],
        done: &mut usize,
        plain: Option<(&[u8], &mut [u8])>,
    ) -> Result<Step, TransportError> {
        let status = self.conn.process_tls_records(&mut incoming[*done..]);
        let discard = status.discard;
        let state = match status.state {
            Ok(state) => state,
            Err(e) => {
                // A bad record waited behind others: its alert goes out as after a read.
                self.last_gasp(&mut incoming[*done + discard..]);
                return Err(TransportError::Tls(e));
            }
        };
        let step = match state {
            ConnectionState::WriteTraffic(mut traffic) => match plain {
                Some((plain, out)) => traffic
                    .encrypt(plain, out)
                    .map(Step::Encrypted)
                    .map_err(|e| TransportError::Tls(encrypt_error(e)))?,
                None => {
                    let mut alert = [0u8; 64];
                    let n = traffic
                        .queue_close_notify(&mut alert)
                        .map_err(|e| TransportError::Tls(encrypt_error(e)))?;
                    unsent(&mut self.pending_out, &mut self.sent).extend_from_slice(&alert[..n]);
                    Step::Alerted
                }
            },
            ConnectionState::ReadTraffic(mut records) => {
                // Plaintext that came with a handshake step: kept for reads.
                while let Some(record) = records.next_record() {
                    let record = record.map_err(TransportError::Tls)?;
                    self.stash.extend_from_slice(record.payload);
                }
                Step::Handled
            }
            // Handshake bytes (a session ticket, a key update) go before anything else.
            ConnectionState::EncodeTlsData(mut data) => {
                encode(unsent(&mut self.pending_out, &mut self.sent), &mut data)?;
                Step::Handled
            }
            ConnectionState::TransmitTlsData(transmit) => {
                transmit.done();
                Step::Transmit
            }
            ConnectionState::PeerClosed => {
                self.peer_closed = true;
                Step::Handled
            }
            _ => Step::Stuck,
        };
        *done += discard;
        Ok(step)
    }

    /// Queues `close_notify` (once) after what is kept for sending, and sends them;
    /// `Ok(false)` when the socket is full first (the rest goes at the next flush).
    pub(super) fn close_notify(&mut self) -> Result<bool, TransportError> {
        // After a failure only what is kept for sending (the alert) may go.
        if !self.failed && !std::mem::replace(&mut self.close_queued, true) {
            let mut incoming = std::mem::take(&mut self.pending_in);
            let mut done = 0;
            // A few steps at most: handshake bytes rustls still has, then the alert.
            for _ in 0..4 {
                match self.step(&mut incoming, &mut done, None) {
                    Ok(Step::Handled | Step::Transmit) => {}
                    Ok(_) => break,
                    Err(_) => {
                        self.failed = true;
                        break;
                    }
                }
            }
            self.keep_pending(incoming, done);
        }
        self.flush()
    }
}

/// What [`TlsStream::step`] did.
enum Step {
    /// Plaintext was encrypted into this many bytes.
    Encrypted(usize),
    /// Handshake bytes are kept for sending: send them.
    Transmit,
    /// A `close_notify` is kept for sending.
    Alerted,
    /// Something was done; step again.
    Handled,
    /// The connection can neither send nor go on (a handshake not finished, or closed).
    Stuck,
}

/// The bytes kept for sending (`out`, of which `sent` are out), without those already sent,
/// to append to: what is kept is never more than what waits.
fn unsent<'a>(out: &'a mut Vec<u8>, sent: &mut usize) -> &'a mut Vec<u8> {
    if *sent > 0 {
        out.drain(..*sent);
        *sent = 0;
    }
    out
}

/// Appends the handshake record rustls has ready to `out`.
fn encode<D>(out: &mut Vec<u8>, data: &mut EncodeTlsData<'_, D>) -> Result<(), TransportError> {
    let start = out.len();
    let required = match data.encode(&mut []) {
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
            required_size
        }
        _ => 0,
    };
    out.resize(start + required, 0);
    match data.encode(&mut out[start..]) {
        Ok(n) => {
            out.truncate(start + n);
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(TransportError::Tls(rustls::Error::General(e.to_string())))
        }
    }
}

fn encrypt_error(e: EncryptError) -> rustls::Error {
    rustls::Error::General(format!("cannot encrypt: {e}"))
}
