//! TLS probes: what a client can send to the server's rustls layer (records split at every
//! byte, many in one read, broken or hostile handshakes, resets, bad records behind good ones,
//! close_notify then more), each beside a good pair that must keep relaying. A panic in the
//! server's loop fails the test when the server is dropped, and the pair's relay first.

#[path = "../common/mod.rs"]
mod common;
mod flood;
mod renegotiation;
mod traffic;
mod wss;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::ClientConnection;
use wss::{
    content, hung_up, join, record, recv_content, tls_client, tls_server, upgrade, Pair, TlsWs,
};

/// Handshake record type.
const HANDSHAKE: u8 = 0x16;
/// The first bytes of a ClientHello of 0x1000 bytes: whole records, an unfinished message.
const HELLO_START: [u8; 8] = [0x01, 0x00, 0x10, 0x00, 0x03, 0x03, 0, 0];

/// Ends the TCP connection with a reset (SO_LINGER 0), as a client that vanishes does.
fn reset(s: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a `linger` of the size given.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    drop(s);
}

#[test]
fn a_reset_inside_a_handshake_message_does_not_stop_the_server() {
    // Proves a client that resets its connection while the server holds part of its
    // ClientHello (rustls tracks it across reads) is dropped without harm.
    let (server, client) = tls_server(|_| {});
    let mut pair = Pair::new(server.addr, &client, "/reset");
    for _ in 0..3 {
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.write_all(&record(HANDSHAKE, &HELLO_START)).unwrap();
        // Read by the server before the reset comes.
        std::thread::sleep(Duration::from_millis(100));
        reset(s);
    }
    pair.relay();
}

#[test]
fn a_record_inside_a_handshake_message_is_refused_without_harm() {
    // Proves an alert between two records of one handshake message (RFC 8446 §5.1 forbids
    // it) ends that client alone.
    let (server, client) = tls_server(|_| {});
    let mut pair = Pair::new(server.addr, &client, "/interleaved");
    let mut s = TcpStream::connect(server.addr).unwrap();
    let mut bytes = record(HANDSHAKE, &HELLO_START);
    bytes.extend(record(0x15, &[1, 0]));
    s.write_all(&bytes).unwrap();
    assert!(hung_up(&mut s));
    pair.relay();
}

#[test]
fn a_handshake_message_in_one_byte_records_past_the_limit_is_refused() {
    // Proves a handshake message sent one byte per record, whose records pass what a
    // connection may keep (MAX_PENDING), ends that client alone.
    let (server, client) = tls_server(|_| {});
    let mut pair = Pair::new(server.addr, &client, "/tiny-records");
    let mut s = TcpStream::connect(server.addr).unwrap();
    let mut bytes = Vec::new();
    for b in [0x01, 0x00, 0xff, 0xf0].into_iter().chain([0u8; 30_000]) {
        bytes.extend(record(HANDSHAKE, &[b]));
    }
    // The server may hang up before taking it all.
    let _ = s.write_all(&bytes);
    assert!(hung_up(&mut s));
    pair.relay();
}

#[test]
fn a_client_hello_one_byte_per_record_completes_the_handshake() {
    // Proves a ClientHello re-framed into one record per byte, all in one write, is put
    // together again: the client upgrades, joins and relays.
    let (server, client) = tls_server(|_| {});
    let mut pair = Pair::new(server.addr, &client, "/pair");
    let mut stream = tls_client(server.addr, &client);
    let mut hello = Vec::new();
    stream.conn.write_tls(&mut hello).unwrap();
    let mut split = Vec::new();
    for b in wss::handshake_payload(&hello) {
        split.extend(record(HANDSHAKE, &[b]));
    }
    stream.sock.write_all(&split).unwrap();
    let mut ws = upgrade(stream, server.addr, "/split-hello");
    // Founds a group of its own, then relays through the server to a second member.
    assert!(join(&mut ws, 7));
    let mut other = wss::connect(server.addr, &client, "/split-hello-2");
    assert!(join(&mut other, 8));
    pair.relay();
    drop(other);
    relay_to_itself(
        &mut ws,
        &mut wss::connect(server.addr, &client, "/split-hello"),
    );
}

/// `joiner` joins `founder`'s group and one message goes each way.
fn relay_to_itself<S: Read + Write>(founder: &mut tungstenite::WebSocket<S>, joiner: &mut TlsWs) {
    assert!(!join(joiner, 9));
    content(joiner, 0, b"hello");
    let (s, r, data) = recv_content(founder);
    assert!(s != 0 && r == 0 && data == b"hello");
    content(founder, s, b"back");
    assert_eq!(recv_content(joiner), (0, s, b"back".to_vec()));
}

/// A socket that takes one byte per write: every TLS record reaches the server split at every
/// byte.
struct Trickle(TcpStream);

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Trickle {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match buf.first() {
            Some(b) => self.0.write(std::slice::from_ref(b)),
            None => Ok(0),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn records_split_at_every_byte_make_a_whole_session() {
    // Proves a client whose every record arrives a byte at a time (TCP_NODELAY, one byte a
    // write) completes its handshake, upgrade and messages, and relays.
    let (server, client) = tls_server(|_| {});
    let mut pair = Pair::new(server.addr, &client, "/pair");
    let tcp = TcpStream::connect(server.addr).unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp.set_read_timeout(Some(common::WAIT)).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(Arc::clone(&client), name).unwrap();
    let stream = rustls::StreamOwned::new(conn, Trickle(tcp));
    let mut ws = upgrade(stream, server.addr, "/trickle");
    assert!(join(&mut ws, 1));
    pair.relay();
    relay_to_itself(&mut ws, &mut wss::connect(server.addr, &client, "/trickle"));
}

#[test]
fn malformed_first_records_end_their_client_alone() {
    // Proves each malformed opening (a record over the size limit, an unknown type, an SSLv2
    // hello, empty records, middlebox CCS and warning alerts past rustls' counts, an alert
    // ending the handshake) ends its client promptly and the pair keeps relaying.
    let (server, client) = tls_server(|_| {});
    let mut pair = Pair::new(server.addr, &client, "/pair");
    let repeat = |r: Vec<u8>, n: usize| r.repeat(n);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("oversized record", vec![HANDSHAKE, 3, 3, 0xff, 0xff]),
        ("unknown type", record(0x42, &HELLO_START)),
        (
            "sslv2 hello",
            vec![0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15],
        ),
        ("empty handshakes", repeat(record(HANDSHAKE, &[]), 40)),
        ("empty app data", repeat(record(0x17, &[]), 40)),
        ("ccs", repeat(record(0x14, &[1]), 5)),
        ("warnings", repeat(record(0x15, &[1, 90]), 6)),
        ("fatal alert", record(0x15, &[2, 40])),
    ];
    for (name, bytes) in cases {
        let mut s = TcpStream::connect(server.addr).unwrap();
        let _ = s.write_all(&bytes);
        assert!(hung_up(&mut s), "{name}: the server kept the connection");
    }
    pair.relay();
}

#[test]
fn a_client_gone_mid_handshake_is_let_go_at_once() {
    // Proves a client that sends half a ClientHello and shuts its side is let go at once,
    // well before the handshake deadline.
    let (server, client) = tls_server(|c| c.handshake_timeout = Duration::from_secs(30));
    let mut pair = Pair::new(server.addr, &client, "/pair");
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(&record(HANDSHAKE, &HELLO_START)).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(hung_up(&mut s));
    pair.relay();
}
