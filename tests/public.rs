//! In public and behind a proxy, over real sockets: which origins may connect, the client's
//! address behind trusted proxies (for the per-address limit and `--metrics-allow`), and IPv6
//! clients counted by prefix.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::*;
use sigver::access::OriginPolicy;
use sigver::allow::IpNet;

/// Sends an upgrade request with these extra header lines; the open stream and the status
/// line of the answer.
fn upgrade(addr: SocketAddr, path: &str, headers: &str) -> (TcpStream, String) {
    upgrade_after(addr, b"", path, headers)
}

/// Like `upgrade`, with `first` written before the request (a PROXY protocol header).
fn upgrade_after(addr: SocketAddr, first: &[u8], path: &str, headers: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    // A server that refuses the first bytes may close before the rest is written.
    let _ = s.write_all(first);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
    );
    let _ = s.write_all(request.as_bytes());
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&head);
    let status = text.lines().next().unwrap_or_default().to_owned();
    (s, status)
}

fn status(addr: SocketAddr, headers: &str) -> String {
    upgrade(addr, "/k", headers).1
}

#[test]
fn only_listed_origins_may_connect() {
    // Proves --allow-origin: a listed origin (exact, or one label under a wildcard) is
    // upgraded, another gets 403; no Origin (a Node.js bot) is let in; a good pair relays.
    let server = TestServer::with(|c| {
        c.origins = OriginPolicy {
            allowed: OriginPolicy::parse_list("https://app.example.org,https://*.example.net")
                .unwrap(),
            require: false,
        };
    });
    let ok = "HTTP/1.1 101 Switching Protocols";
    assert_eq!(
        status(server.addr, "Origin: https://app.example.org\r\n"),
        ok
    );
    assert_eq!(
        status(server.addr, "Origin: https://chat.example.net\r\n"),
        ok
    );
    assert_eq!(status(server.addr, ""), ok, "no Origin");
    for refused in ["https://evil.example.com", "http://app.example.org", "null"] {
        let (mut s, line) = upgrade(server.addr, "/k", &format!("Origin: {refused}\r\n"));
        assert_eq!(line, "HTTP/1.1 403 Forbidden", "{refused}");
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        assert!(body.contains("--allow-origin"), "{body}");
    }
    let mut pair = Pair::new(&server, "/origins");
    pair.relay(2);
}

#[test]
fn require_origin_refuses_upgrades_without_one() {
    // Proves --require-origin: without an Origin header the upgrade gets 403.
    let server = TestServer::with(|c| c.origins.require = true);
    assert_eq!(status(server.addr, ""), "HTTP/1.1 403 Forbidden");
    let line = status(server.addr, "Origin: https://any.example.org\r\n");
    assert_eq!(
        line, "HTTP/1.1 101 Switching Protocols",
        "any origin is listed by default"
    );
}

#[test]
fn behind_a_trusted_proxy_clients_are_counted_apart() {
    // Proves --trusted-proxies with the per-address limit: connections from the proxy count
    // under the client X-Forwarded-For (or X-Real-IP) names, so the cap hits per client, not
    // per proxy; the rightmost untrusted hop is the client.
    let server = TestServer::with(|c| {
        c.trusted_proxies = IpNet::parse_list("127.0.0.0/8").unwrap();
        c.max_connections_per_ip = 2;
    });
    // Two connections of the proxy's own (no header): its address is at the cap from here.
    let mut pair = Pair::new(&server, "/proxied");
    let a = "X-Forwarded-For: 203.0.113.1\r\n";
    let (_a1, s1) = upgrade(server.addr, "/k1", a);
    let (_a2, s2) = upgrade(server.addr, "/k2", a);
    assert_eq!(
        (s1.as_str(), s2.as_str()),
        (
            "HTTP/1.1 101 Switching Protocols",
            "HTTP/1.1 101 Switching Protocols"
        )
    );
    assert_eq!(status(server.addr, a), "HTTP/1.1 429 Too Many Requests");
    // The same client through a chain of proxies: the last untrusted hop counts.
    let chained = "X-Forwarded-For: 203.0.113.1, 127.0.0.2\r\n";
    assert_eq!(
        status(server.addr, chained),
        "HTTP/1.1 429 Too Many Requests"
    );
    let (_b, sb) = upgrade(server.addr, "/k3", "X-Real-IP: 203.0.113.2\r\n");
    assert_eq!(sb, "HTTP/1.1 101 Switching Protocols", "another client");
    // A connection that names no client is the proxy's own, and the pair holds its two.
    assert_eq!(status(server.addr, ""), "HTTP/1.1 429 Too Many Requests");
    pair.relay(2);
}

#[test]
fn forwarded_headers_from_untrusted_peers_are_ignored() {
    // Proves the headers count only from trusted proxies: without --trusted-proxies, every
    // connection from 127.0.0.1 counts as 127.0.0.1 whatever it claims.
    let server = TestServer::with(|c| c.max_connections_per_ip = 2);
    let (_a, _) = upgrade(server.addr, "/k1", "X-Forwarded-For: 203.0.113.1\r\n");
    let (_b, _) = upgrade(server.addr, "/k2", "X-Forwarded-For: 203.0.113.2\r\n");
    let line = status(server.addr, "X-Forwarded-For: 203.0.113.3\r\n");
    assert_eq!(line, "HTTP/1.1 429 Too Many Requests");
}

#[test]
fn ipv6_clients_are_counted_by_their_prefix() {
    // Proves --ipv6-prefix: two addresses of one /64 share the per-address count; another
    // /64 does not; with 128 every address counts alone.
    for (prefix, same_net) in [
        (64u8, "HTTP/1.1 429 Too Many Requests"),
        (128, "HTTP/1.1 101 Switching Protocols"),
    ] {
        let server = TestServer::with(|c| {
            c.trusted_proxies = IpNet::parse_list("127.0.0.0/8").unwrap();
            c.max_connections_per_ip = 1;
            c.ipv6_prefix = prefix;
        });
        let (_a, first) = upgrade(server.addr, "/a", "X-Forwarded-For: 2001:db8::1\r\n");
        assert_eq!(first, "HTTP/1.1 101 Switching Protocols");
        let (_b, second) = upgrade(server.addr, "/b", "X-Forwarded-For: 2001:db8::2\r\n");
        assert_eq!(second, same_net, "/{prefix}");
        let (_c, other) = upgrade(server.addr, "/c", "X-Forwarded-For: 2001:db8:0:1::1\r\n");
        assert_eq!(other, "HTTP/1.1 101 Switching Protocols", "another /64");
    }
}

#[test]
fn metrics_allow_judges_the_client_behind_the_proxy() {
    // Proves --metrics-allow uses the client's address: behind a trusted proxy on loopback, a
    // request for a remote client gets 403, one for a loopback client 200.
    let server =
        TestServer::with(|c| c.trusted_proxies = IpNet::parse_list("127.0.0.1/32").unwrap());
    let get = |headers: &str| {
        let request = format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
        let answer = String::from_utf8(raw_exchange(server.addr, request.as_bytes())).unwrap();
        answer.lines().next().unwrap_or_default().to_owned()
    };
    assert_eq!(
        get("X-Forwarded-For: 203.0.113.1\r\n"),
        "HTTP/1.1 403 Forbidden"
    );
    assert_eq!(
        get("X-Forwarded-For: 127.0.0.2\r\n"),
        "HTTP/1.1 200 OK",
        "a loopback client behind the proxy"
    );
    assert_eq!(get(""), "HTTP/1.1 200 OK");
}

/// A PROXY protocol version 1 header for a TCP client at `src`.
fn proxy_v1(src: &str) -> Vec<u8> {
    let family = if src.contains(':') { "TCP6" } else { "TCP4" };
    let dst = if src.contains(':') {
        "::1"
    } else {
        "127.0.0.1"
    };
    format!("PROXY {family} {src} {dst} 40000 8000\r\n").into_bytes()
}

#[test]
fn with_the_proxy_protocol_clients_are_counted_by_the_header() {
    // Proves --proxy-protocol: the client named by each connection's header (version 1 or 2)
    // is the one the per-address limit counts, and a connection without a header is closed.
    let server = TestServer::with(|c| {
        c.proxy_protocol = true;
        c.max_connections_per_ip = 1;
    });
    let ok = "HTTP/1.1 101 Switching Protocols";
    let (_a, first) = upgrade_after(server.addr, &proxy_v1("203.0.113.1"), "/a", "");
    assert_eq!(first, ok);
    let (_b, again) = upgrade_after(server.addr, &proxy_v1("203.0.113.1"), "/b", "");
    assert_eq!(again, "HTTP/1.1 429 Too Many Requests");
    let (_c, other) = upgrade_after(server.addr, &proxy_v1("203.0.113.2"), "/c", "");
    assert_eq!(other, ok);
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x24".to_vec();
    v2.extend_from_slice(
        &"2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    v2.extend_from_slice(&[0; 16]);
    v2.extend_from_slice(&[0x9C, 0x40, 0x1F, 0x40]);
    let (_d, six) = upgrade_after(server.addr, &v2, "/d", "");
    assert_eq!(six, ok);
    // The same /64 is the same client.
    let (_e, same) = upgrade_after(server.addr, &proxy_v1("2001:db8::8"), "/e", "");
    assert_eq!(same, "HTTP/1.1 429 Too Many Requests");
    // No header, or a bad one: closed without an answer.
    for first in [&b""[..], b"PROXY TCP9 what\r\n"] {
        let (_s, line) = upgrade_after(server.addr, first, "/f", "");
        assert_eq!(line, "", "{first:?}");
    }
    let request = [
        proxy_v1("127.0.0.1"),
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
    ]
    .concat();
    let metrics = String::from_utf8(raw_exchange(server.addr, &request)).unwrap();
    assert!(
        metrics.contains("sigver_handshake_failures_total{reason=\"proxy_header\"} 2"),
        "{metrics}"
    );
}
