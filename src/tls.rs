//! TLS: loading the key and certificates from PEM files into a rustls configuration, and the
//! non-blocking stream that runs rustls over a mio socket.
//!
//! The stream follows rustls' non-blocking contract: drain plaintext before reading more TLS
//! records, write TLS bytes out whenever rustls wants to, write the alert once on a TLS error.
//! It never blocks and never reports a full socket as `Ok(0)`.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::transport::Socket;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

/// Where the TLS key and certificates are read from (and read again on reload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Certificate chain (PEM), server certificate first.
    pub cert: PathBuf,
    /// Intermediate certificates (PEM) appended to the chain.
    pub ca: Option<PathBuf>,
}

/// A TLS file that cannot be used: which file, and why.
#[derive(Debug)]
pub struct TlsError {
    /// The file at fault.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.problem)
    }
}

impl std::error::Error for TlsError {}

fn fail(path: &Path, problem: impl Into<String>) -> TlsError {
    TlsError {
        path: path.to_owned(),
        problem: problem.into(),
    }
}

/// Reads the files and builds the server configuration: TLS 1.2 and 1.3, ALPN `http/1.1`.
pub fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let mut chain = read_certs(&files.cert)?;
    if let Some(ca) = &files.ca {
        chain.extend(read_certs(ca)?);
    }
    let key = read_file(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
        fail(
            &files.key,
            format!("no private key found (PKCS#8, PKCS#1 or SEC1 PEM expected): {e}"),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| fail(&files.cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                fail(&files.key, "the key does not match the certificate")
            }
            e => fail(&files.key, e.to_string()),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| fail(path, format!("cannot read: {e}")))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(path, format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(fail(path, "no certificate found (PEM expected)"));
    }
    Ok(certs)
}

/// rustls over a non-blocking TCP socket.
#[derive(Debug)]
pub struct TlsStream {
    /// The TLS state.
    pub conn: ServerConnection,
    /// The socket.
    pub sock: Socket,
}

impl TlsStream {
    /// Writes out the TLS bytes rustls has queued, until done or the socket is full.
    fn write_tls_out(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads TLS records from the socket and processes them. `Ok(false)` at end of stream.
    fn read_tls_in(&mut self) -> io::Result<bool> {
        let n = loop {
            match self.conn.read_tls(&mut self.sock) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other?,
            }
        };
        if n == 0 {
            return Ok(false);
        }
        if let Err(e) = self.conn.process_new_packets() {
            // The last gasp: send the alert once; the connection is over either way.
            let _ = self.write_tls_out();
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        Ok(true)
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // Plaintext already decrypted comes first: epoll cannot see it.
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                // A peer that drops TCP without close_notify: an end of stream all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            let more = self.read_tls_in()?;
            // Handshake messages and key updates need answers, whoever is reading.
            match self.write_tls_out() {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                _ => {}
            }
            if !more {
                return Ok(0);
            }
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Room first: rustls takes nothing while its own buffer is full, and a WouldBlock
        // here must mean the socket is full (only then does a writable edge follow).
        self.write_tls_out()?;
        let n = self.conn.writer().write(buf)?;
        match self.write_tls_out() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
            _ => {}
        }
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_tls_out()
    }
}
