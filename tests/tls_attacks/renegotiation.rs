//! TLS 1.2 renegotiation: a client asks for a new handshake inside its session (an encrypted
//! ClientHello, sealed here by hand with the session's extracted keys, since rustls' client
//! never renegotiates). The server refuses the first with a warning alert and carries on, and
//! ends the connection at the second.

use std::io::{ErrorKind, Read, Write};
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

/// Seals `payload` as a TLS 1.2 record of `typ` with sequence number `seq` (RFC 7905).
fn seal(key: &LessSafeKey, iv: &[u8], seq: u64, typ: u8, payload: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(iv);
    for (n, s) in nonce[4..].iter_mut().zip(seq.to_be_bytes()) {
        *n ^= s;
    }
    let len = u16::try_from(payload.len()).unwrap().to_be_bytes();
    let mut aad = seq.to_be_bytes().to_vec();
    aad.extend([typ, 3, 3, len[0], len[1]]);
    let mut body = payload.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut body,
    )
    .unwrap();
    wss::record(typ, &body)
}

#[test]
fn a_renegotiation_is_refused_once_then_ends_the_connection() {
    // Proves a TLS 1.2 renegotiation attempt gets rustls' no_renegotiation warning (an
    // encrypted alert record) and the connection stays, that a second ends it, and that a
    // pair keeps relaying.
    let (server, _, roots) = tls_server_and_roots(|_| {});
    let config = v12_config(roots);
    let mut pair = Pair::new(server.addr, &config, "/pair");
    let stream = crate::traffic::upgraded(server.addr, &config, "/renegotiate");
    let (conn, mut sock) = (stream.conn, stream.sock);
    let (mut seq, secrets) = conn.dangerous_extract_secrets().unwrap().tx;
    let ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } = secrets else {
        panic!("not ChaCha20-Poly1305");
    };
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key.as_ref()).unwrap());
    let mut fresh = crate::wss::tls_client(server.addr, &config);
    let mut hello = Vec::new();
    fresh.conn.write_tls(&mut hello).unwrap();
    let hello = handshake_payload(&hello);

    sock.write_all(&seal(&key, iv.as_ref(), seq, 0x16, &hello))
        .unwrap();
    seq += 1;
    // The warning: one alert record, 2 bytes sealed with a 16-byte tag.
    let mut header = [0u8; 5];
    sock.set_read_timeout(Some(WAIT)).unwrap();
    sock.read_exact(&mut header).unwrap();
    assert_eq!(header, [0x15, 3, 3, 0, 18]);
    sock.read_exact(&mut [0u8; 18]).unwrap();
    pair.relay();
    // Still open: nothing more comes, neither an end nor a fatal alert.
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let idle = sock.read(&mut [0u8; 1]).unwrap_err().kind();
    assert!(
        matches!(idle, ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{idle:?}"
    );

    sock.write_all(&seal(&key, iv.as_ref(), seq, 0x16, &hello))
        .unwrap();
    assert!(hung_up(&mut sock));
    pair.relay();
}
