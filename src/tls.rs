//! TLS files: loading the key and certificates from PEM files into a rustls configuration
//! (at start and on reload). The TLS stream itself lives with the transport.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::tickets::TicketKeys;

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
pub fn load(
    files: &TlsFiles,
    tickets: Option<&Arc<TicketKeys>>,
) -> Result<Arc<ServerConfig>, TlsError> {
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
    match tickets {
        Some(keys) => keys.apply(&mut config),
        None => crate::tickets::disable(&mut config),
    }
    Ok(Arc::new(config))
}

/// Reads a regular file (see [`crate::files::read_regular`]), naming it on failure.
fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    crate::files::read_regular(path).map_err(|problem| fail(path, problem))
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
