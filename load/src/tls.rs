//! `wss://`: the rustls client configuration of a run, and one connection's TLS stream over a
//! non-blocking mio socket.
//!
//! One `ClientConfig` serves every connection of the run, so with `--resume` its session
//! cache is shared and a later connection resumes a session an earlier one was given. The
//! stream keeps the `transport::Stream` contract: `read` yields plaintext and a short read
//! means the socket is drained; `write` takes plaintext and never returns `Ok(0)`. Our side
//! keeps no buffer of its own: plaintext is read straight into the caller's buffer and
//! written from it. It must not touch the poll or the connection's phases (that is `net`).

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CipherSuite, ClientConfig, ClientConnection, DigitallySignedStruct, HandshakeKind};
use rustls::{RootCertStore, SignatureScheme};

/// Sessions the client cache keeps with `--resume` (a few per server name are enough: each
/// TLS 1.3 ticket is used once, and a new one comes with every connection).
const SESSION_CACHE: usize = 256;

/// How the run's TLS client trusts the server, and whether it resumes sessions.
#[derive(Debug, Clone, Default)]
pub struct TlsOpts {
    /// PEM file of the certificates to trust (a throwaway CA, say).
    pub ca: Option<std::path::PathBuf>,
    /// No verification of the server's certificate chain (benchmarks only).
    pub insecure: bool,
    /// Keep sessions and resume them (off: every handshake is a full one).
    pub resume: bool,
}

/// The client configuration every connection of the run shares.
pub fn client_config(o: &TlsOpts) -> Result<Arc<ClientConfig>, String> {
    let mut provider = rustls::crypto::ring::default_provider();
    // Offered in a browser's order (Chrome and Firefox put AES-128-GCM first), not rustls' own
    // (AES-256-GCM first): a server that follows the client's order, as rustls and most do,
    // then pays for the key schedule browsers make it pay for (SHA-256, not SHA-384).
    provider
        .cipher_suites
        .sort_by_key(|s| !matches!(s.suite(), CipherSuite::TLS13_AES_128_GCM_SHA256));
    let provider = Arc::new(provider);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let mut config = match (&o.ca, o.insecure) {
        (_, true) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoChainCheck(provider)))
            .with_no_client_auth(),
        (Some(path), false) => builder
            .with_root_certificates(roots(path)?)
            .with_no_client_auth(),
        (None, false) => {
            return Err(
                "wss:// needs --ca FILE (the PEM certificate to trust) or --insecure \
                 (no verification, for benchmarks only)"
                    .to_owned(),
            )
        }
    };
    config.resumption = if o.resume {
        Resumption::in_memory_sessions(SESSION_CACHE)
    } else {
        Resumption::disabled()
    };
    Ok(Arc::new(config))
}

/// The certificates of a PEM file, as trust anchors.
fn roots(path: &Path) -> Result<RootCertStore, String> {
    let name = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("--ca {name}: {e}"))?;
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("--ca {name}: {e}"))?;
        store
            .add(cert)
            .map_err(|e| format!("--ca {name}: not a usable CA certificate: {e}"))?;
    }
    if store.is_empty() {
        return Err(format!("--ca {name}: no certificate in the file"));
    }
    Ok(store)
}

/// `--insecure`: any certificate chain and name are accepted; the handshake's signatures are
/// still checked, so the client does the same cryptographic work per handshake as a browser
/// bar the chain check.
#[derive(Debug)]
struct NoChainCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoChainCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One TLS connection over a non-blocking socket.
#[derive(Debug)]
pub struct TlsStream {
    /// The socket (the engine registers it with the poll).
    pub tcp: TcpStream,
    tls: ClientConnection,
}

impl TlsStream {
    /// Starts the client side of a handshake on a socket that is connecting.
    pub fn new(
        tcp: TcpStream,
        config: &Arc<ClientConfig>,
        name: &ServerName<'static>,
    ) -> io::Result<Self> {
        let tls = ClientConnection::new(config.clone(), name.clone()).map_err(io::Error::other)?;
        Ok(Self { tcp, tls })
    }

    /// `Some(true)` for a resumed handshake, `Some(false)` for a full one, `None` while it is
    /// still in progress.
    pub fn resumed(&self) -> Option<bool> {
        if self.tls.is_handshaking() {
            return None;
        }
        self.tls
            .handshake_kind()
            .map(|k| k == HandshakeKind::Resumed)
    }

    /// True while the handshake has not completed.
    pub fn is_handshaking(&self) -> bool {
        self.tls.is_handshaking()
    }

    /// True when TLS bytes wait for the socket to take them.
    pub fn wants_write(&self) -> bool {
        self.tls.wants_write()
    }

    /// Writes the TLS bytes rustls holds until they are out or the socket is full
    /// (the mio rule: drain every operation to `WouldBlock`).
    fn try_send(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.tcp) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Read for TlsStream {
    /// Fills `buf` with plaintext until it is full or the socket is drained, so that a short
    /// read still means "drained", as over plain TCP.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        loop {
            // Plaintext already decrypted first: rustls refuses to read more while it is full.
            match self.tls.reader().read(&mut buf[n..]) {
                Ok(0) => return Ok(n),
                Ok(k) => {
                    n += k;
                    if n == buf.len() {
                        return Ok(n);
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The server hung up without close_notify: an end of stream, as over TCP.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(n),
                Err(e) => return if n > 0 { Ok(n) } else { Err(e) },
            }
            match self.tls.read_tls(&mut self.tcp) {
                Ok(0) => return Ok(n),
                Ok(_) => {
                    if let Err(e) = self.tls.process_new_packets() {
                        // rustls queued an alert: it goes out once, then the socket is dropped.
                        let _ = self.tls.write_tls(&mut self.tcp);
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                    // Handshake replies, and the request held back until the handshake ended.
                    self.try_send()?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && n > 0 => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.try_send()?;
        // Encrypted into rustls' send buffer (held as plaintext during the handshake); 0 when
        // that buffer is at its limit because the socket is full.
        let n = self.tls.writer().write(buf)?;
        self.try_send()?;
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.try_send()?;
        if self.tls.wants_write() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_are_offered_in_a_browsers_order() {
        let opts = TlsOpts {
            ca: None,
            insecure: true,
            resume: false,
        };
        let config = client_config(&opts).unwrap();
        let suites: Vec<CipherSuite> = config
            .crypto_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(suites[0], CipherSuite::TLS13_AES_128_GCM_SHA256);
        assert!(suites.contains(&CipherSuite::TLS13_AES_256_GCM_SHA384));
        assert!(suites.contains(&CipherSuite::TLS13_CHACHA20_POLY1305_SHA256));
    }
}
