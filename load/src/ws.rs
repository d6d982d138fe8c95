//! The client side of WebSocket (RFC 6455), just what a sigver client needs: the upgrade
//! request, masked frames written straight into a connection's output buffer, and unmasked
//! server frames parsed in place. No allocation per frame.

/// The client's `Sec-WebSocket-Key`. RFC 6455 §4.1 wants a random nonce per connection; the
/// server cannot tell and only echoes a hash, so one fixed value (the RFC's own example) lets
/// the answer be checked without hashing.
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// The `Sec-WebSocket-Accept` a server must answer to [`WS_KEY`] (RFC 6455 §1.3).
const WS_ACCEPT: &[u8] = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// Longest upgrade answer accepted.
pub const MAX_RESPONSE_HEAD: usize = 8192;

/// Frame opcodes (RFC 6455 §5.2).
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xa;

/// Appends the upgrade request for the group `key` (the URL path without its `/`).
pub fn put_request(out: &mut Vec<u8>, host: &str, key: &str) {
    for part in [
        "GET /",
        key,
        " HTTP/1.1\r\nHost: ",
        host,
        "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ",
        WS_KEY,
        "\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ] {
        out.extend_from_slice(part.as_bytes());
    }
}

/// What the bytes read so far say about the upgrade answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Upgrade {
    /// The head is not complete yet.
    Partial,
    /// `101` with the right accept hash; the frames start at this offset.
    Done(usize),
    /// Anything else.
    Refused,
}

/// Classifies the upgrade answer in `buf`.
pub fn parse_response(buf: &[u8]) -> Upgrade {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > MAX_RESPONSE_HEAD {
            Upgrade::Refused
        } else {
            Upgrade::Partial
        };
    };
    let head = &buf[..end];
    if head.starts_with(b"HTTP/1.1 101") && find(head, WS_ACCEPT).is_some() {
        Upgrade::Done(end + 4)
    } else {
        Upgrade::Refused
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Appends a final, masked frame header for `len` payload bytes and returns where the
/// payload will start: append the payload, then call [`mask`] on it.
pub fn put_header(out: &mut Vec<u8>, opcode: u8, len: usize, key: [u8; 4]) -> usize {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&key);
    out.len()
}

/// Masks (or unmasks) a payload in place with `key` (RFC 6455 §5.3), eight bytes at a time.
pub fn mask(payload: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes((&*chunk).try_into().expect("8 bytes")) ^ wide;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

/// One frame parsed from the server.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    /// Final fragment.
    pub fin: bool,
    /// Opcode.
    pub opcode: u8,
    /// Payload range in the buffer.
    pub start: usize,
    /// End of the payload (exclusive), which is also the frame's length.
    pub end: usize,
}

/// Parses the frame at the start of `buf`: `Ok(None)` when more bytes are needed, `Err` when a
/// server broke the framing (a masked frame, reserved bits, a frame over `max`).
pub fn parse_frame(buf: &[u8], max: usize) -> Result<Option<Frame>, &'static str> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err("reserved bits set");
    }
    if b1 & 0x80 != 0 {
        return Err("masked server frame");
    }
    let (len, start) = match b1 & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut n = [0u8; 8];
            n.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(n), 10)
        }
        n => (u64::from(n), 2),
    };
    if len > max as u64 {
        return Err("frame too large");
    }
    let end = start + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some(Frame {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0f,
        start,
        end,
    }))
}

/// Checks the framing against tungstenite, the server's own WebSocket implementation.
pub fn selftest() {
    use std::io::Cursor;
    use tungstenite::protocol::{Role, WebSocket};
    use tungstenite::Message;

    // Our masked client frames, read by a tungstenite server.
    let mut wire = Vec::new();
    let sizes = [0usize, 1, 7, 8, 125, 126, 200, 65_535, 65_536, 100_000];
    for (i, &n) in sizes.iter().enumerate() {
        let payload: Vec<u8> = (0..n).map(|j| (i + j) as u8).collect();
        let start = put_header(&mut wire, OP_BINARY, n, [1, 0x80, 0xff, i as u8]);
        wire.extend_from_slice(&payload);
        mask(&mut wire[start..], [1, 0x80, 0xff, i as u8]);
    }
    let mut server = WebSocket::from_raw_socket(Cursor::new(wire), Role::Server, None);
    for (i, &n) in sizes.iter().enumerate() {
        let payload: Vec<u8> = (0..n).map(|j| (i + j) as u8).collect();
        match server.read().expect("tungstenite reads our frame") {
            Message::Binary(b) => assert_eq!(&b[..], &payload[..], "size {n}"),
            other => panic!("unexpected {other:?}"),
        }
    }
    // tungstenite's server frames, parsed by us.
    let mut server = WebSocket::from_raw_socket(Cursor::new(Vec::new()), Role::Server, None);
    for &n in &sizes {
        server
            .write(Message::Binary(vec![7u8; n].into()))
            .expect("queued");
    }
    server.flush().expect("flushed");
    let wire = server.get_ref().get_ref().clone();
    let mut pos = 0;
    for &n in &sizes {
        let f = parse_frame(&wire[pos..], 1 << 20)
            .expect("valid")
            .expect("complete");
        assert_eq!((f.fin, f.opcode, f.end - f.start), (true, OP_BINARY, n));
        assert!(wire[pos + f.start..pos + f.end].iter().all(|&b| b == 7));
        pos += f.end;
    }
    assert_eq!(pos, wire.len());
    assert_eq!(
        tungstenite::handshake::derive_accept_key(WS_KEY.as_bytes()).as_bytes(),
        WS_ACCEPT
    );
    let ok = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x82\x00";
    assert_eq!(parse_response(ok), Upgrade::Done(ok.len() - 2));
    assert_eq!(parse_response(&ok[..20]), Upgrade::Partial);
    assert_eq!(
        parse_response(b"HTTP/1.1 426 Upgrade Required\r\n\r\n"),
        Upgrade::Refused
    );
}

#[cfg(test)]
mod tests {
    /// Proves that the hand-written client framing interoperates with tungstenite in both directions.
    #[test]
    fn matches_the_reference() {
        super::selftest();
    }
}
