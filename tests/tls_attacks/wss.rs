//! What the TLS probes share: a root and a `localhost` leaf made at test time, a wss:// peer
//! (rustls client, tungstenite), raw TLS records, and a good pair that must keep relaying
//! beside whatever a probe sends.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use sigver::tls::TlsFiles;
use sigver::Config;
use tungstenite::WebSocket;

use crate::common::{TestServer, WAIT};

pub type TlsWs = WebSocket<StreamOwned<ClientConnection, TcpStream>>;

/// A TLS server (tuned by `tune`) and a client configuration that trusts it.
pub fn tls_server(tune: impl FnOnce(&mut Config)) -> (TestServer, Arc<ClientConfig>) {
    let (server, client, _) = tls_server_and_roots(tune);
    (server, client)
}

/// Like [`tls_server`], with the root the server's certificate chains to.
pub fn tls_server_and_roots(
    tune: impl FnOnce(&mut Config),
) -> (TestServer, Arc<ClientConfig>, RootCertStore) {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sigver-tls-attacks-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let root_key = KeyPair::generate().unwrap();
    let mut root_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let root = root_params.self_signed(&root_key).unwrap();
    let issuer = Issuer::new(root_params, root_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let files = TlsFiles {
        key: dir.join("key.pem"),
        cert: dir.join("cert.pem"),
        ca: None,
    };
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    std::fs::write(&files.cert, leaf.pem()).unwrap();
    let server = TestServer::with(|c| {
        c.tls = Some(files);
        tune(c);
    });
    let mut roots = RootCertStore::empty();
    roots.add(root.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    (server, Arc::new(client), roots)
}

/// A rustls client over a fresh TCP connection, handshake not started.
pub fn tls_client(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
) -> StreamOwned<ClientConnection, TcpStream> {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    StreamOwned::new(
        ClientConnection::new(Arc::clone(config), name).unwrap(),
        tcp,
    )
}

/// The WebSocket upgrade over `stream`.
pub fn upgrade<S: Read + Write>(stream: S, addr: SocketAddr, path: &str) -> WebSocket<S> {
    let url = format!("wss://localhost:{}{path}", addr.port());
    let (ws, response) = tungstenite::client(url.as_str(), stream).expect("wss upgrade");
    assert_eq!(response.status(), 101);
    ws
}

/// A wss:// peer on `path`.
pub fn connect(addr: SocketAddr, config: &Arc<ClientConfig>, path: &str) -> TlsWs {
    upgrade(tls_client(addr, config), addr, path)
}

pub use crate::common::messages::{content, join, recv_content};

/// A member and a joiner bound to it, on `path`.
pub struct Pair {
    member: TlsWs,
    joiner: TlsWs,
}

impl Pair {
    pub fn new(addr: SocketAddr, config: &Arc<ClientConfig>, path: &str) -> Self {
        let mut member = connect(addr, config, path);
        assert!(join(&mut member, 1));
        let mut joiner = connect(addr, config, path);
        assert!(!join(&mut joiner, 2));
        Self { member, joiner }
    }

    /// One message each way, checked.
    pub fn relay(&mut self) {
        content(&mut self.joiner, 0, b"offer");
        let (s, r, data) = recv_content(&mut self.member);
        assert!(s != 0 && r == 0 && data == b"offer");
        content(&mut self.member, s, b"answer");
        assert_eq!(recv_content(&mut self.joiner), (0, s, b"answer".to_vec()));
    }
}

/// One TLS record of type `typ` (TLS 1.2 on the wire, as TLS 1.3 also writes it).
pub fn record(typ: u8, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len()).unwrap().to_be_bytes();
    let mut r = vec![typ, 0x03, 0x03, len[0], len[1]];
    r.extend_from_slice(payload);
    r
}

/// The handshake bytes of `records` (TLS records, all of type handshake), record headers
/// taken off.
pub fn handshake_payload(mut records: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    while !records.is_empty() {
        assert_eq!(records[0], 0x16, "a handshake record");
        let len = usize::from(u16::from_be_bytes([records[3], records[4]]));
        payload.extend_from_slice(&records[5..5 + len]);
        records = &records[5 + len..];
    }
    payload
}

/// Reads until the server hangs up (end of stream or reset); false if it is still there
/// after `WAIT`.
pub fn hung_up(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut sink = [0u8; 4096];
    loop {
        match s.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}
