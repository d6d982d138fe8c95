//! TLS 1.2 sessions driven by hand, with the keys rustls' client gives up, for what its
//! client never sends: renegotiation (an encrypted ClientHello inside the session), empty
//! application records, records of one byte.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use rustls::crypto::ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256;
use rustls::{ClientConfig, ConnectionTrafficSecrets, RootCertStore};

use crate::common::WAIT;
use crate::wss::{self, handshake_payload, hung_up, tls_server_and_roots, Pair};

/// TLS 1.2 with ChaCha20-Poly1305 only (its nonce is the IV and the sequence number, with no
/// explicit part to get right), secrets extractable.
fn v12_config(roots: RootCertStore) -> Arc<ClientConfig> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256];
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.enable_secret_extraction = true;
    Arc::new(config)
}

/// A TLS 1.2 session's client side, past the WebSocket upgrade, driven by hand: records
/// are sealed here with the keys rustls' client gave up.
struct Session {
    sock: TcpStream,
    key: LessSafeKey,
    iv: [u8; 12],
    seq: u64,
}

impl Session {
    fn open(addr: SocketAddr, config: &Arc<ClientConfig>, path: &str) -> Self {
        let stream = crate::traffic::upgraded(addr, config, path);
        let (seq, secrets) = stream.conn.dangerous_extract_secrets().unwrap().tx;
        let ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } = secrets else {
            panic!("not ChaCha20-Poly1305");
        };
        let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key.as_ref()).unwrap());
        let iv = iv.as_ref().try_into().unwrap();
        let sock = stream.sock;
        sock.set_read_timeout(Some(WAIT)).unwrap();
        Self { sock, key, iv, seq }
    }

    /// Seals `payload` as the next record of `typ` (RFC 7905's nonce).
    fn seal(&mut self, typ: u8, payload: &[u8]) -> Vec<u8> {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        let len = u16::try_from(payload.len()).unwrap().to_be_bytes();
        let mut aad = self.seq.to_be_bytes().to_vec();
        aad.extend([typ, 3, 3, len[0], len[1]]);
        self.seq += 1;
        let mut body = payload.to_vec();
        let nonce = Nonce::assume_unique_for_key(nonce);
        self.key
            .seal_in_place_append_tag(nonce, Aad::from(aad), &mut body)
            .unwrap();
        wss::record(typ, &body)
    }

    /// The header of the next record the server sends.
    fn next_header(&mut self) -> [u8; 5] {
        let mut header = [0u8; 5];
        self.sock.read_exact(&mut header).unwrap();
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        self.sock.read_exact(&mut vec![0u8; len]).unwrap();
        header
    }

    /// Nothing comes for a while: neither an end nor an alert.
    fn assert_open(&mut self) {
        self.sock
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let idle = self.sock.read(&mut [0u8; 1]).unwrap_err().kind();
        assert!(
            matches!(idle, ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{idle:?}"
        );
        self.sock.set_read_timeout(Some(WAIT)).unwrap();
    }
}

#[test]
fn a_renegotiation_is_refused_once_then_ends_the_connection() {
    // Proves a TLS 1.2 renegotiation attempt gets rustls' no_renegotiation warning (an
    // encrypted alert record) and the connection stays, that a second ends it, and that a
    // pair keeps relaying.
    let (server, _, roots) = tls_server_and_roots(|_| {});
    let config = v12_config(roots);
    let mut pair = Pair::new(server.addr, &config, "/pair");
    let mut session = Session::open(server.addr, &config, "/renegotiate");
    let mut fresh = crate::wss::tls_client(server.addr, &config);
    let mut hello = Vec::new();
    fresh.conn.write_tls(&mut hello).unwrap();
    let hello = handshake_payload(&hello);

    let attempt = session.seal(0x16, &hello);
    session.sock.write_all(&attempt).unwrap();
    // The warning: one alert record, 2 bytes sealed with a 16-byte tag.
    assert_eq!(session.next_header(), [0x15, 3, 3, 0, 18]);
    pair.relay();
    session.assert_open();

    let attempt = session.seal(0x16, &hello);
    session.sock.write_all(&attempt).unwrap();
    assert!(hung_up(&mut session.sock));
    pair.relay();
}

#[test]
fn empty_and_one_byte_records_carry_a_ping_until_rustls_limit_on_empty_ones() {
    // Proves 31 empty application records then a ping sealed one byte per record get their
    // pong (2 bytes sealed: 18), and that 40 empty records in a row end the connection
    // (rustls allows 32), beside a pair that keeps relaying.
    let (server, _, roots) = tls_server_and_roots(|_| {});
    let config = v12_config(roots);
    let mut pair = Pair::new(server.addr, &config, "/pair");
    let mut session = Session::open(server.addr, &config, "/tiny");
    let mut wire = Vec::new();
    for _ in 0..31 {
        wire.extend(session.seal(0x17, &[]));
    }
    for b in [0x89, 0x80, 0, 0, 0, 0] {
        wire.extend(session.seal(0x17, &[b]));
    }
    session.sock.write_all(&wire).unwrap();
    assert_eq!(session.next_header(), [0x17, 3, 3, 0, 18]);
    session.assert_open();
    pair.relay();

    let empties: Vec<u8> = (0..40).flat_map(|_| session.seal(0x17, &[])).collect();
    session.sock.write_all(&empties).unwrap();
    assert!(hung_up(&mut session.sock));
    pair.relay();
}
