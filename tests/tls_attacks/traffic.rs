//! Probes after the handshake: bad records waiting behind good ones, close_notify in both
//! directions with bytes around it, floods of tiny records, TLS 1.2.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use prost::Message as _;
use rustls::{AlertDescription, ClientConnection, StreamOwned};
use sigver::proto::{Content, Message, Type};

use crate::wss::{
    self, content, hung_up, join, record, recv_content, tls_client, tls_server, Pair,
};

type Stream = StreamOwned<ClientConnection, TcpStream>;

/// A record of application data no key opens: the server must answer with an alert.
fn bad_record() -> Vec<u8> {
    record(0x17, &[0u8; 32])
}

/// A masked WebSocket frame (the key is 0, so the payload reads as is).
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n => {
            f.push(0x80 | 126);
            f.extend(u16::try_from(n).unwrap().to_be_bytes());
        }
    }
    f.extend([0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// A wss:// connection past its upgrade, driven by hand.
pub fn upgraded(
    addr: std::net::SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    path: &str,
) -> Stream {
    let mut s = tls_client(addr, config);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    s
}

/// Encrypts `plain` into records, one per item, and puts `after` behind them: the bytes of
/// one TCP write.
fn sealed(s: &mut Stream, plain: &[&[u8]], close_notify: bool, after: &[u8]) -> Vec<u8> {
    for p in plain {
        s.conn.writer().write_all(p).unwrap();
    }
    if close_notify {
        s.conn.send_close_notify();
    }
    let mut wire = Vec::new();
    while s.conn.wants_write() {
        s.conn.write_tls(&mut wire).unwrap();
    }
    wire.extend_from_slice(after);
    wire
}

/// Reads until the connection ends; the alert the server ended it with, if any.
fn alert(s: &mut Stream) -> Option<AlertDescription> {
    let mut sink = Vec::new();
    let e = s.read_to_end(&mut sink).err()?;
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(a) => Some(*a),
        _ => None,
    }
}

#[test]
fn a_bad_record_behind_a_full_read_is_refused_when_the_server_writes() {
    // Proves a bad record that waits behind 700 pings (more than one turn's 128 frames)
    // ends that client with its alert when the pongs go out, without harm to the loop.
    let (server, client) = tls_server(|_| {});
    let mut pair = Pair::new(server.addr, &client, "/pair");
    let mut s = upgraded(server.addr, &client, "/pinger");
    let pings: Vec<u8> = (0..700).flat_map(|_| frame(0x9, b"")).collect();
    let wire = sealed(&mut s, &[&pings], false, &bad_record());
    s.sock.write_all(&wire).unwrap();
    assert_eq!(alert(&mut s), Some(AlertDescription::BadRecordMac));
    pair.relay();
}

#[test]
fn garbage_after_the_handshake_is_refused_without_harm() {
    // Proves a record no key opens, right after the upgrade, ends that client alone, with
    // the alert that says why.
    let (server, client) = tls_server(|_| {});
    let mut pair = Pair::new(server.addr, &client, "/pair");
    let mut s = upgraded(server.addr, &client, "/garbage");
    s.sock.write_all(&bad_record()).unwrap();
    assert_eq!(alert(&mut s), Some(AlertDescription::BadRecordMac));
    pair.relay();
}

#[test]
fn the_servers_close_notify_follows_its_close_frame_whatever_waits_unread() {
    // Proves the server's close_notify goes out after its close frame even when records of
    // the peer wait unread behind the close (a full read): the client sees a clean end.
    let (server, client) = tls_server(|_| {});
    let mut pair = Pair::new(server.addr, &client, "/pair");
    let mut s = upgraded(server.addr, &client, "/closer");
    let mut first = frame(0x8, &1000u16.to_be_bytes());
    first.extend(frame(0x2, &[7u8; 8000]));
    let small = frame(0x2, &[1u8; 100]);
    let plain: Vec<&[u8]> = std::iter::once(&first[..])
        .chain(std::iter::repeat_n(&small[..], 8))
        .collect();
    let wire = sealed(&mut s, &plain, false, b"");
    s.sock.write_all(&wire).unwrap();
    let mut got = Vec::new();
    let end = s.read_to_end(&mut got);
    assert_eq!(got, [0x88, 0x02, 0x03, 0xe8], "the close frame echoed");
    assert!(
        end.is_ok(),
        "no close_notify after the close frame: {end:?}"
    );
    pair.relay();
}

#[test]
fn what_comes_before_the_clients_close_notify_is_relayed_and_what_comes_after_is_not() {
    // Proves a message sealed right before the client's close_notify reaches its member,
    // then the client's departure, and bytes after the close_notify change nothing.
    let (server, client) = tls_server(|_| {});
    let mut pair = Pair::new(server.addr, &client, "/pair");
    let mut member = wss::connect(server.addr, &client, "/leaver");
    assert!(join(&mut member, 1));
    let mut leaver = upgraded(server.addr, &client, "/leaver");
    let connect = Message {
        r#type: Some(Type::Connect(sigver::proto::GroupData {
            id: 2,
            members: vec![],
        })),
    };
    let last = Message {
        r#type: Some(Type::Content(Content {
            sender_id: 0,
            recipient_id: 0,
            last_data: false,
            data: b"last words".to_vec().into(),
        })),
    };
    let wire = sealed(
        &mut leaver,
        &[&frame(0x2, &connect.encode_to_vec())],
        false,
        b"",
    );
    leaver.sock.write_all(&wire).unwrap();
    let msg = frame(0x2, &last.encode_to_vec());
    let mut after = bad_record();
    after.extend(b"GET / HTTP/1.1\r\n\r\n");
    let wire = sealed(&mut leaver, &[&msg], true, &after);
    leaver.sock.write_all(&wire).unwrap();
    let (s, r, data) = recv_content(&mut member);
    assert!(s != 0 && r == 0 && data == b"last words");
    assert_eq!(recv_content(&mut member), (s, 0, vec![]));
    assert!(hung_up(&mut leaver.sock));
    pair.relay();
}

#[test]
fn a_message_in_thousands_of_tiny_records_arrives_whole_beside_a_relaying_pair() {
    // Proves a 300 KB message sent in records of 32 bytes (the smallest rustls makes, about
    // 10,000 of them) arrives whole while a pair keeps relaying.
    let (server, client) = tls_server(|_| {});
    let mut pair = Pair::new(server.addr, &client, "/pair");
    let mut member = wss::connect(server.addr, &client, "/tiny");
    assert!(join(&mut member, 1));
    let mut tiny = (*client).clone();
    tiny.max_fragment_size = Some(32);
    let mut flooder = wss::connect(server.addr, &Arc::new(tiny), "/tiny");
    assert!(!join(&mut flooder, 2));
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let sending = {
        let big = big.clone();
        std::thread::spawn(move || {
            content(&mut flooder, 0, &big);
            flooder
        })
    };
    for _ in 0..20 {
        pair.relay();
    }
    let (s, r, data) = recv_content(&mut member);
    assert!(s != 0 && r == 0 && data == big);
    let _flooder = sending.join().unwrap();
}

#[test]
fn tls_1_2_clients_relay_and_resume() {
    // Proves a TLS 1.2-only client completes its handshake, relays, and resumes its session
    // with the ticket the server gave it.
    let (server, _, roots) = wss::tls_server_and_roots(|_| {});
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let v12 = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let v12 = Arc::new(v12);
    let mut pair = Pair::new(server.addr, &v12, "/v12");
    pair.relay();
    let again = wss::connect(server.addr, &v12, "/v12-again");
    let conn = &again.get_ref().conn;
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(conn.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
}
