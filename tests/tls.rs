//! wss:// end to end: certificates made at test time (a root, an intermediate and leaves),
//! real TLS WebSocket clients, the in-process server and the real binary for SIGHUP and bad
//! files.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::binary::Binary;
use common::messages::{content, join, recv_content};
use common::{TestServer, WAIT};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use sigver::tls::TlsFiles;
use tungstenite::WebSocket;

type TlsWs = WebSocket<StreamOwned<ClientConnection, TcpStream>>;

/// A root CA, an intermediate signed by it, and a way to issue leaves for `localhost`.
struct Pki {
    root_der: CertificateDer<'static>,
    intermediate_pem: String,
    intermediate_der: CertificateDer<'static>,
    intermediate: Issuer<'static, KeyPair>,
}

/// A leaf certificate and its key, as PEM.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params
}

impl Pki {
    fn new() -> Self {
        let root_key = KeyPair::generate().unwrap();
        let root_params = ca_params("sigver test root");
        let root = root_params.self_signed(&root_key).unwrap();
        let root_issuer = Issuer::new(root_params, root_key);
        let inter_key = KeyPair::generate().unwrap();
        let inter_params = ca_params("sigver test intermediate");
        let inter = inter_params.signed_by(&inter_key, &root_issuer).unwrap();
        Self {
            root_der: root.der().clone(),
            intermediate_pem: inter.pem(),
            intermediate_der: inter.der().clone(),
            intermediate: Issuer::new(inter_params, inter_key),
        }
    }

    fn leaf(&self) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let cert = params.signed_by(&key, &self.intermediate).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.root_der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

/// A fresh directory for one test's files.
fn temp_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sigver-tls-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes the leaf (cert only) and key, and the intermediate as `--ca`.
fn write_files(dir: &Path, pki: &Pki, leaf: &Leaf) -> TlsFiles {
    let files = TlsFiles {
        key: dir.join("key.pem"),
        cert: dir.join("cert.pem"),
        ca: Some(dir.join("ca.pem")),
    };
    std::fs::write(&files.key, &leaf.key_pem).unwrap();
    std::fs::write(&files.cert, &leaf.cert_pem).unwrap();
    std::fs::write(files.ca.as_ref().unwrap(), &pki.intermediate_pem).unwrap();
    files
}

/// Opens a wss:// peer; returns it with the certificate chain the server presented.
fn connect(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    path: &str,
) -> (TlsWs, Vec<CertificateDer<'static>>) {
    connect_after(addr, config, path, b"")
}

/// Like `connect`, with `first` written on the TCP connection before the TLS handshake (a
/// PROXY protocol header, as a load balancer sends it).
fn connect_after(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    path: &str,
    first: &[u8],
) -> (TlsWs, Vec<CertificateDer<'static>>) {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    std::io::Write::write_all(&mut tcp, first).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(Arc::clone(config), name).unwrap();
    let stream = StreamOwned::new(conn, tcp);
    let url = format!("wss://localhost:{}{path}", addr.port());
    let (ws, response) = tungstenite::client(url.as_str(), stream).expect("wss upgrade");
    assert_eq!(response.status(), 101);
    let chain = ws
        .get_ref()
        .conn
        .peer_certificates()
        .unwrap()
        .iter()
        .map(|c| c.clone().into_owned())
        .collect();
    (ws, chain)
}

/// Relays one message each way between a member and a joiner; returns the joiner's id.
fn relay_both_ways(member: &mut TlsWs, joiner: &mut TlsWs) -> u32 {
    content(joiner, 0, b"offer");
    let (s, r, data) = recv_content(member);
    assert!(s != 0 && r == 0 && data == b"offer");
    content(member, s, b"answer");
    assert_eq!(recv_content(joiner), (0, s, b"answer".to_vec()));
    s
}

fn tls_server(files: TlsFiles) -> TestServer {
    TestServer::with(|c| c.tls = Some(files))
}

#[test]
fn full_group_scenario_over_wss() {
    // Proves the whole protocol runs over TLS: join, relay both ways, disconnect note.
    let pki = Pki::new();
    let files = write_files(&temp_dir(), &pki, &pki.leaf());
    let server = tls_server(files);
    let client = pki.client_config();
    let (mut a, _) = connect(server.addr, &client, "/room");
    assert!(join(&mut a, 1));
    let (mut b, _) = connect(server.addr, &client, "/room");
    assert!(!join(&mut b, 2));
    let s = relay_both_ways(&mut a, &mut b);
    drop(b); // abrupt: TCP goes away without a close frame
    assert_eq!(recv_content(&mut a), (s, 0, vec![]));
}

#[test]
fn chain_with_intermediate_is_presented_in_order() {
    // Proves --ca certificates are appended after the server certificate.
    let pki = Pki::new();
    let leaf = pki.leaf();
    let files = write_files(&temp_dir(), &pki, &leaf);
    let server = tls_server(files);
    let (_ws, chain) = connect(server.addr, &pki.client_config(), "/k");
    assert_eq!(chain, vec![leaf.der.clone(), pki.intermediate_der.clone()]);
}

#[test]
fn plain_text_on_the_tls_port_is_refused_without_harm() {
    // Proves a plain-text client on a TLS port is dropped promptly and others keep relaying.
    let pki = Pki::new();
    let files = write_files(&temp_dir(), &pki, &pki.leaf());
    let server = tls_server(files);
    let client = pki.client_config();
    let (mut a, _) = connect(server.addr, &client, "/pair");
    assert!(join(&mut a, 1));
    let (mut b, _) = connect(server.addr, &client, "/pair");
    assert!(!join(&mut b, 2));

    let mut plain = TcpStream::connect(server.addr).unwrap();
    plain.set_read_timeout(Some(WAIT)).unwrap();
    plain
        .write_all(b"GET /pair HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer); // ends: the server hung up
    assert!(
        !answer.starts_with(b"HTTP/1.1 101"),
        "plain text must not be upgraded on a TLS port"
    );
    relay_both_ways(&mut a, &mut b);
}

#[test]
fn a_stalled_tls_handshake_is_dropped_at_the_deadline() {
    // Proves the handshake deadline covers TLS: half a ClientHello, then silence, is dropped.
    let pki = Pki::new();
    let files = write_files(&temp_dir(), &pki, &pki.leaf());
    let server = TestServer::with(|c| {
        c.tls = Some(files);
        c.handshake_timeout = Duration::from_millis(300);
    });
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
    let start = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(start.elapsed() < WAIT, "the server must hang up by itself");
    let (mut ws, _) = connect(server.addr, &pki.client_config(), "/still-serving");
    assert!(join(&mut ws, 1));
}

#[test]
fn a_key_that_does_not_match_is_refused_at_bind() {
    // Proves a key for another certificate is caught before serving, naming the key file.
    let pki = Pki::new();
    let dir = temp_dir();
    let files = write_files(&dir, &pki, &pki.leaf());
    std::fs::write(&files.key, pki.leaf().key_pem).unwrap();
    let err = sigver::Server::bind(sigver::Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        tls: Some(files.clone()),
        ..sigver::Config::default()
    })
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&files.key.display().to_string()), "{text}");
    assert!(text.contains("does not match"), "{text}");
}

fn tls_args(files: &TlsFiles) -> Vec<String> {
    let mut args = vec![
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        "0".into(),
        "-k".into(),
        files.key.display().to_string(),
        "-c".into(),
        files.cert.display().to_string(),
    ];
    if let Some(ca) = &files.ca {
        args.extend(["-a".into(), ca.display().to_string()]);
    }
    args
}

#[test]
fn sighup_renews_the_certificate_for_new_connections_only() {
    // Proves SIGHUP serves a new certificate to new peers while an open one keeps relaying.
    let pki = Pki::new();
    let (old, new) = (pki.leaf(), pki.leaf());
    let dir = temp_dir();
    let files = write_files(&dir, &pki, &old);
    let args = tls_args(&files);
    let bin = Binary::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let addr = bin.addr();
    let client = pki.client_config();
    let (mut member, chain) = connect(addr, &client, "/renew");
    assert_eq!(chain[0], old.der);
    assert!(join(&mut member, 1));

    write_files(&dir, &pki, &new);
    bin.sighup();
    bin.wait_for("TLS certificate reloaded");

    let (mut joiner, chain) = connect(addr, &client, "/renew");
    assert_eq!(chain[0], new.der, "new connections get the new certificate");
    assert!(!join(&mut joiner, 2));
    relay_both_ways(&mut member, &mut joiner);
}

/// Starts the binary on good TLS files with a joined member, lets `spoil` break the
/// certificate file, sends SIGHUP, and checks that the reload failed with a line holding
/// `says`, that the old certificate is still served and that a pair still meets and relays.
fn reload_keeps_the_old_certificate(spoil: impl FnOnce(&Path), says: impl Fn(&TlsFiles) -> String) {
    let pki = Pki::new();
    let leaf = pki.leaf();
    let dir = temp_dir();
    let files = write_files(&dir, &pki, &leaf);
    let args = tls_args(&files);
    let bin = Binary::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let addr = bin.addr();
    let client = pki.client_config();
    let (mut member, _) = connect(addr, &client, "/reload");
    assert!(join(&mut member, 1));

    spoil(&files.cert);
    bin.sighup();
    let line = bin.wait_for("TLS reload failed");
    assert!(line.contains(&says(&files)), "{line}");

    let (mut joiner, chain) = connect(addr, &client, "/reload");
    assert_eq!(chain[0], leaf.der);
    assert!(!join(&mut joiner, 2));
    relay_both_ways(&mut member, &mut joiner);
}

#[test]
fn sighup_with_a_broken_file_keeps_the_old_certificate() {
    // Proves a broken file on reload is logged by name and the old certificate stays.
    reload_keeps_the_old_certificate(
        |cert| std::fs::write(cert, "not a certificate\n").unwrap(),
        |files| files.cert.display().to_string(),
    );
}

#[test]
fn bad_tls_files_exit_2_naming_the_file() {
    // Proves every unusable file stops the binary with status 2 and names the file.
    let pki = Pki::new();
    let dir = temp_dir();
    let files = write_files(&dir, &pki, &pki.leaf());
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "hello\n").unwrap();
    let other_key = dir.join("other-key.pem");
    std::fs::write(&other_key, pki.leaf().key_pem).unwrap();
    let missing = dir.join("missing.pem");
    let s = |p: &Path| p.display().to_string();
    let (key, cert, ca) = (s(&files.key), s(&files.cert), s(files.ca.as_ref().unwrap()));
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec!["-k".into(), s(&missing), "-c".into(), cert.clone()],
            s(&missing),
        ),
        (
            vec!["-k".into(), key.clone(), "-c".into(), s(&missing)],
            s(&missing),
        ),
        (
            vec!["-k".into(), s(&garbage), "-c".into(), cert.clone()],
            s(&garbage),
        ),
        (
            vec!["-k".into(), key.clone(), "-c".into(), s(&garbage)],
            s(&garbage),
        ),
        (
            vec![
                "-k".into(),
                key.clone(),
                "-c".into(),
                cert.clone(),
                "-a".into(),
                s(&garbage),
            ],
            s(&garbage),
        ),
        (
            vec!["-k".into(), s(&other_key), "-c".into(), cert.clone()],
            s(&other_key),
        ),
        (vec!["-k".into(), key.clone()], "--cert".into()),
        (vec!["-c".into(), cert.clone()], "--key".into()),
        (vec!["-a".into(), ca.clone()], "--key".into()),
    ];
    for (args, needle) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_sigver"))
            .args(["-h", "127.0.0.1", "-p", "0"])
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(&needle), "{args:?}: {stderr}");
    }
}

/// Makes a self-signed certificate for localhost with `openssl`, whose key encoding `genkey`
/// chooses; returns (key, cert) paths. `.ci/run` installs openssl.
fn openssl_pair(dir: &Path, genkey: &[&str]) -> (PathBuf, PathBuf) {
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let key_s = key.display().to_string();
    let mut args = genkey.to_vec();
    args.extend(["-out", &key_s]);
    run(&args);
    let cert_s = cert.display().to_string();
    run(&[
        "req",
        "-new",
        "-x509",
        "-key",
        &key_s,
        "-out",
        &cert_s,
        "-days",
        "2",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
    ]);
    (key, cert)
}

#[test]
fn pkcs1_rsa_and_sec1_ec_keys_are_accepted() {
    // Proves the key formats of common tools load: PKCS#1 (RSA) and SEC1 (EC), not only PKCS#8.
    let cases: [(&[&str], &str); 2] = [
        (&["genrsa", "-traditional"][..], "BEGIN RSA PRIVATE KEY"),
        (
            &["ecparam", "-name", "prime256v1", "-genkey", "-noout"][..],
            "BEGIN EC PRIVATE KEY",
        ),
    ];
    for (genkey, label) in cases {
        let dir = temp_dir();
        let (key, cert) = openssl_pair(&dir, genkey);
        assert!(std::fs::read_to_string(&key).unwrap().contains(label));
        let cert_der = CertificateDer::from_pem_file(&cert).unwrap();
        let server = tls_server(TlsFiles {
            key,
            cert,
            ca: None,
        });
        let mut roots = RootCertStore::empty();
        roots.add(cert_der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = Arc::new(
            ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        let (mut ws, chain) = connect(server.addr, &client, "/formats");
        assert_eq!(chain, vec![cert_der], "{label}");
        assert!(join(&mut ws, 1));
    }
}

/// A TCP connection to `addr` whose receive buffer is `rcvbuf` bytes: a slow reader, whose
/// socket fills long before the server's does.
fn connect_with_small_receive_buffer(addr: SocketAddr, rcvbuf: i32) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 expected")
    };
    // SAFETY: a fresh socket, configured and connected here, then owned by the TcpStream.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let size: libc::c_int = rcvbuf;
        let set = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(set, 0);
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(v4.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        let r = libc::connect(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(r, 0);
        TcpStream::from_raw_fd(fd)
    }
}

#[test]
fn large_relays_reach_a_slow_tls_reader() {
    // Proves the TLS stream never stalls a queue: when rustls' buffer is full, room is made
    // before a WouldBlock is reported, so the writable edge that resumes it does come.
    let pki = Pki::new();
    let files = write_files(&temp_dir(), &pki, &pki.leaf());
    let server = tls_server(files);
    let client = pki.client_config();
    let (mut member, _) = connect(server.addr, &client, "/slow");
    assert!(join(&mut member, 1));
    let tcp = connect_with_small_receive_buffer(server.addr, 4096);
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let conn = ClientConnection::new(Arc::clone(&client), "localhost".try_into().unwrap()).unwrap();
    let url = format!("wss://localhost:{}/slow", server.addr.port());
    let (mut joiner, _) =
        tungstenite::client(url.as_str(), StreamOwned::new(conn, tcp)).expect("wss upgrade");
    assert!(!join(&mut joiner, 2));
    let s = relay_both_ways(&mut member, &mut joiner);
    let big = vec![0x5a; 1_000_000];
    for _ in 0..3 {
        content(&mut member, s, &big);
    }
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        // With the stall, the second one waited for the next heartbeat (60 s in tests).
        assert_eq!(recv_content(&mut joiner), (0, s, big.clone()));
    }
}

#[test]
fn sighup_with_a_fifo_at_the_certificate_path_does_not_freeze_the_loop() {
    // Proves a reload never blocks on a file that is not a regular one (a FIFO would block
    // the open until a writer comes): the reload fails by name and peers go on relaying.
    reload_keeps_the_old_certificate(
        |cert| {
            std::fs::remove_file(cert).unwrap();
            let path = std::ffi::CString::new(cert.to_str().unwrap()).unwrap();
            // SAFETY: mkfifo reads the path we own.
            assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        },
        |_| "not a regular file".into(),
    );
}

#[test]
fn a_proxy_protocol_header_comes_before_the_tls_handshake() {
    // Proves --proxy-protocol over wss://: the header a TCP load balancer sends first is
    // read off the socket before TLS, and the peers behind it meet and relay.
    let pki = Pki::new();
    let files = write_files(&temp_dir(), &pki, &pki.leaf());
    let server = TestServer::with(|c| {
        c.tls = Some(files);
        c.proxy_protocol = true;
    });
    let client = pki.client_config();
    let v1 = b"PROXY TCP4 203.0.113.1 127.0.0.1 50000 443\r\n";
    let (mut member, _) = connect_after(server.addr, &client, "/proxied", v1);
    assert!(join(&mut member, 1));
    // Version 2, as HAProxy's send-proxy-v2 sends it.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[203, 0, 113, 2, 127, 0, 0, 1, 0xC3, 0x51, 0x01, 0xBB]);
    let (mut joiner, _) = connect_after(server.addr, &client, "/proxied", &v2);
    assert!(!join(&mut joiner, 2));
    relay_both_ways(&mut member, &mut joiner);
}

/// How the handshake of `ws` went: full, or resumed from a ticket.
fn handshake_kind(ws: &TlsWs) -> rustls::HandshakeKind {
    ws.get_ref().conn.handshake_kind().expect("handshake done")
}

/// Opens a peer that founds the group `path` and reads its answer, which also brings the
/// session ticket the server sends after the handshake; returns how the handshake went.
fn founder(addr: SocketAddr, config: &Arc<ClientConfig>, path: &str) -> rustls::HandshakeKind {
    let (mut ws, _) = connect(addr, config, path);
    assert!(join(&mut ws, 1));
    handshake_kind(&ws)
}

/// `GET path` over TLS: the body.
fn https_get(addr: SocketAddr, config: &Arc<ClientConfig>, path: &str) -> String {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(Arc::clone(config), name).unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    write!(tls, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn a_reconnecting_client_resumes_its_session_with_a_ticket() {
    // Proves session tickets: a client's second connection resumes the first one's session
    // (and relays as any other), a client without a ticket pays a full handshake, and
    // /metrics counts both kinds.
    use rustls::HandshakeKind::{Full, Resumed};
    let pki = Pki::new();
    let server = tls_server(write_files(&temp_dir(), &pki, &pki.leaf()));
    let client = pki.client_config();
    let (mut member, _) = connect(server.addr, &client, "/again");
    assert!(join(&mut member, 1));
    assert_eq!(handshake_kind(&member), Full);
    let (mut joiner, _) = connect(server.addr, &client, "/again");
    assert_eq!(handshake_kind(&joiner), Resumed);
    assert!(!join(&mut joiner, 2));
    relay_both_ways(&mut member, &mut joiner);
    assert_eq!(founder(server.addr, &client, "/again2"), Resumed);
    let stranger = pki.client_config();
    assert_eq!(founder(server.addr, &stranger, "/other"), Full);
    let metrics = https_get(server.addr, &client, "/metrics");
    assert!(
        metrics.contains("sigver_tls_handshakes_total{kind=\"full\"} 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sigver_tls_handshakes_total{kind=\"resumed\"} 3\n"),
        "{metrics}"
    );
}

#[test]
fn tickets_open_for_one_key_rotation_not_two_nor_after_a_reload() {
    // Proves the ticket keys: a ticket still opens after one rotation (the previous keys are
    // kept) and no longer after two; a reload of the TLS files makes new keys, so that every
    // client meets the reloaded certificate.
    use rustls::HandshakeKind::{Full, Resumed};
    let pki = Pki::new();
    let files = write_files(&temp_dir(), &pki, &pki.leaf());
    // Long enough that a slow step (a loaded CI machine) cannot cross a rotation unseen.
    let rotation = Duration::from_secs(3);
    let server = TestServer::with(|c| {
        c.tls = Some(files);
        c.tls_ticket_rotation = rotation;
    });
    let started = std::time::Instant::now();
    let early = pki.client_config();
    assert_eq!(founder(server.addr, &early, "/r1"), Full);
    assert_eq!(founder(server.addr, &early, "/r2"), Resumed);
    // Rotations come at 3 s, 6 s, 9 s... after the start. Between the first and the second:
    std::thread::sleep((rotation + rotation / 2).saturating_sub(started.elapsed()));
    let late = pki.client_config();
    assert_eq!(founder(server.addr, &late, "/r3"), Full);
    // The ticket of before the first rotation (early's, made under the keys now previous).
    assert_eq!(
        founder(server.addr, &early, "/r4"),
        Resumed,
        "after one rotation"
    );
    // After two more rotations, late's ticket (made under the keys now two rotations old).
    std::thread::sleep((rotation * 3 + rotation / 2).saturating_sub(started.elapsed()));
    assert_eq!(
        founder(server.addr, &late, "/r5"),
        Full,
        "after two rotations"
    );
    assert_eq!(founder(server.addr, &late, "/r6"), Resumed);
    server.reload_tls();
    assert_eq!(founder(server.addr, &late, "/r7"), Full, "after a reload");
}

#[test]
fn without_resumption_every_handshake_is_full() {
    // Proves --no-tls-resumption: no ticket, no session cache.
    use rustls::HandshakeKind::Full;
    let pki = Pki::new();
    let files = write_files(&temp_dir(), &pki, &pki.leaf());
    let server = TestServer::with(|c| {
        c.tls = Some(files);
        c.tls_resumption = false;
    });
    let client = pki.client_config();
    for path in ["/n1", "/n2", "/n3"] {
        assert_eq!(founder(server.addr, &client, path), Full);
    }
}

#[test]
fn unfinished_tls_handshakes_count_against_the_memory_budget() {
    // Proves the bytes of TLS records not yet whole are the connection's own, counted by the
    // memory budget: 40 clients each send most of a 64 KB ClientHello and stall; past a
    // 1 MiB budget the heaviest are dropped at once, and a pair keeps relaying.
    let pki = Pki::new();
    let files = write_files(&temp_dir(), &pki, &pki.leaf());
    let server = TestServer::with(|c| {
        c.tls = Some(files);
        c.memory_budget = 1 << 20;
    });
    let client = pki.client_config();
    let (mut member, _) = connect(server.addr, &client, "/good");
    assert!(join(&mut member, 1));
    let (mut joiner, _) = connect(server.addr, &client, "/good");
    assert!(!join(&mut joiner, 2));
    // A handshake record of 16 KiB opening a ClientHello of 0xfff0 bytes, then two more.
    let mut hello = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0xff, 0xf0];
    hello.resize(5 + 0x4000, 0);
    for _ in 0..2 {
        hello.extend([0x16, 0x03, 0x01, 0x40, 0x00]);
        hello.resize(hello.len() + 0x4000, 0);
    }
    let mut attackers: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr).unwrap();
            s.write_all(&hello).unwrap();
            s
        })
        .collect();
    // Well before the handshake timeout (10 s): only the budget drops them.
    let dropped = attackers
        .iter_mut()
        .map(|s| {
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            match s.read(&mut [0u8; 1]) {
                Ok(n) => n == 0,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            }
        })
        .filter(|&gone| gone)
        .count();
    assert!(dropped >= 15, "only {dropped} of 40 dropped");
    let metrics = https_get(server.addr, &client, "/metrics");
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    // The budget dropped them, not a timeout or an error.
    assert!(
        value("sigver_limit_hits_total{limit=\"memory_budget\"} ") >= 15.0,
        "{metrics}"
    );
    let buffered = value("sigver_buffered_bytes ");
    assert!(buffered <= f64::from(1u32 << 20), "{buffered}");
    relay_both_ways(&mut member, &mut joiner);
}

#[test]
fn a_key_update_mid_session_keeps_the_relay_going() {
    // Proves post-handshake messages: a client that updates its traffic keys (asking the
    // server to update its own) keeps relaying both ways, many times over.
    let pki = Pki::new();
    let server = tls_server(write_files(&temp_dir(), &pki, &pki.leaf()));
    let client = pki.client_config();
    let (mut member, _) = connect(server.addr, &client, "/keys");
    assert!(join(&mut member, 1));
    let (mut joiner, _) = connect(server.addr, &client, "/keys");
    assert!(!join(&mut joiner, 2));
    for _ in 0..20 {
        joiner.get_mut().conn.refresh_traffic_keys().unwrap();
        member.get_mut().conn.refresh_traffic_keys().unwrap();
        relay_both_ways(&mut member, &mut joiner);
    }
}
