use super::*;

fn upgrade_request(target: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes()
}

fn upgrade(buf: &[u8]) -> Upgrade {
    match parse(buf) {
        Parse::Done {
            request: Request::Upgrade(u),
            ..
        } => u,
        other => panic!("not an upgrade: {other:?}"),
    }
}

#[test]
fn accept_key_is_the_rfc_example() {
    // RFC 6455 §1.3: this key gives this accept value.
    let u = upgrade(&upgrade_request("/k", ""));
    assert_eq!(u.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_eq!(u.protocol, None);
}

#[test]
fn targets_give_key_and_favored() {
    let cases: &[(&str, &[u8], bool)] = &[
        ("/abc", b"abc", false),
        ("/abc?favored", b"abc", true),
        ("/abc?x=1&favored=", b"abc", true),
        ("/abc?favored=false", b"abc", true),
        ("/abc?fav%6Fred", b"abc", true),
        ("/abc?favoredx", b"abc", false),
        ("/abc?x=favored", b"abc", false),
        ("/", b"", false),
        ("/?favored", b"", true),
        ("/a/b/c", b"a/b/c", false),
        ("//x", b"/x", false),
        ("/%D0%9F%D0%BE", b"%D0%9F%D0%BE", false),
        ("/a%20b?q", b"a%20b", false),
        ("/k#frag", b"k", false),
        ("ws://host:8000/key?favored", b"key", true),
        ("http://host", b"", false),
        ("http://host?favored", b"", true),
    ];
    for &(target, key, favored) in cases {
        let t = parse_target(target.as_bytes()).unwrap_or_else(|_| panic!("{target}"));
        assert_eq!((t.key.as_slice(), t.favored), (key, favored), "{target}");
    }
}

#[test]
fn unparsable_targets_are_bad_urls() {
    for target in ["*", "abc", "://x/y", "h t://x/"] {
        assert_eq!(parse_target(target.as_bytes()), Err(BadUrl), "{target}");
    }
}

#[test]
fn first_subprotocol_is_echoed() {
    let u = upgrade(&upgrade_request(
        "/k",
        "Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Protocol: other\r\n",
    ));
    assert_eq!(u.protocol.as_deref(), Some("chat"));
    let response = String::from_utf8(crate::http::switching_protocols(&u)).unwrap();
    assert!(
        response.contains("\r\nSec-WebSocket-Protocol: chat\r\n"),
        "{response}"
    );
    assert!(response.ends_with("\r\n\r\n"));
}

#[test]
fn partial_then_done_with_leftover() {
    let mut buf = upgrade_request("/k", "");
    let head = buf.len();
    assert_eq!(parse(&buf[..head - 3]), Parse::Partial);
    buf.extend_from_slice(&[0x82, 0x80]);
    match parse(&buf) {
        Parse::Done { consumed, .. } => assert_eq!(consumed, head),
        other => panic!("{other:?}"),
    }
}

#[test]
fn plain_requests_are_http_requests() {
    let cases: [(&[u8], Method, &[u8]); 3] = [
        (
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
            Method::Get,
            b"/health",
        ),
        (b"HEAD /?x=1 HTTP/1.1\r\n\r\n", Method::Head, b"/"),
        (
            b"POST /metrics?a HTTP/1.1\r\n\r\n",
            Method::Other,
            b"/metrics",
        ),
    ];
    for (req, method, path) in cases {
        match parse(req) {
            Parse::Done {
                request: Request::Http(r),
                ..
            } => assert_eq!((r.method, r.path.as_slice()), (method, path)),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn responses_carry_their_length() {
    let answer =
        String::from_utf8(crate::http::error(404, "Not Found", "", "nothing here\n")).unwrap();
    assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"));
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.contains(&format!("Content-Length: {}", body.len())));
    let head_only = crate::http::response(200, "OK", "text/plain", "", b"abc", false);
    assert!(String::from_utf8(head_only)
        .unwrap()
        .ends_with("Content-Length: 3\r\nCache-Control: no-store\r\n\r\n"));
}

#[test]
fn broken_upgrades_are_classified() {
    let no_key = b"GET /k HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let post = String::from_utf8(upgrade_request("/k", ""))
        .unwrap()
        .replacen("GET", "POST", 1);
    let http10 = String::from_utf8(upgrade_request("/k", ""))
        .unwrap()
        .replacen("HTTP/1.1", "HTTP/1.0", 1);
    let v8 = String::from_utf8(upgrade_request("/k", ""))
        .unwrap()
        .replacen("Version: 13", "Version: 8", 1);
    let cases: [(&[u8], Request); 5] = [
        (no_key, Request::Malformed),
        (post.as_bytes(), Request::Malformed),
        (http10.as_bytes(), Request::Malformed),
        (v8.as_bytes(), Request::WrongVersion),
        (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
            Request::Malformed,
        ),
    ];
    for (buf, want) in cases {
        match parse(buf) {
            Parse::Done { request, .. } => assert_eq!(request, want),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn oversized_heads_are_refused() {
    let mut big = b"GET /k HTTP/1.1\r\nX: ".to_vec();
    big.resize(MAX_REQUEST_BYTES + 1, b'a');
    assert_eq!(parse(&big), Parse::TooLarge);
    let many: String = (0..MAX_HEADERS + 1)
        .map(|i| format!("H{i}: v\r\n"))
        .collect();
    let req = format!("GET /k HTTP/1.1\r\n{many}\r\n");
    assert_eq!(parse(req.as_bytes()), Parse::TooLarge);
}

#[test]
fn head_end_is_found_from_where_scanning_stopped() {
    let head = upgrade_request("/k", "");
    // Fed a byte at a time, the end is seen only with the last byte.
    for n in 1..head.len() {
        assert!(!head_complete(&head[..n], n - 1), "at {n}");
    }
    assert!(head_complete(&head, head.len() - 1));
    assert!(head_complete(b"GET / HTTP/1.1\n\n", 15));
    assert!(!head_complete(b"GET / HTTP/1.1\r\nA: b\r\n", 0));
}

#[test]
fn endpoints_take_absolute_form_targets() {
    let path = |target: &str| match parse(
        format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    ) {
        Parse::Done {
            request: Request::Http(r),
            ..
        } => String::from_utf8(r.path).unwrap(),
        other => panic!("{target}: {other:?}"),
    };
    assert_eq!(path("/health?x=1"), "/health");
    assert_eq!(path("http://host:8000/health"), "/health");
    assert_eq!(path("https://host/ready?probe"), "/ready");
    assert_eq!(path("http://host"), "/");
    assert_eq!(path("*"), "*");
}
