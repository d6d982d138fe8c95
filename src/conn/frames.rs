//! RFC 6455 framing, server side: client frame headers parsed out of a byte buffer, payloads
//! unmasked, server frames encoded into a byte queue.
//!
//! Pure functions over byte slices: the connection owns every buffer, so that it can count
//! what it holds, and decides what each frame means. Every rule enforced here cites its
//! section of RFC 6455.

use std::fmt;

/// Largest payload of a control frame (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The frame types a client may send (RFC 6455 §5.2, §11.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// A later fragment of a message.
    Continuation,
    /// A text message (or its first fragment).
    Text,
    /// A binary message (or its first fragment).
    Binary,
    /// The close handshake.
    Close,
    /// Asks for a pong.
    Ping,
    /// Answers a ping, or a one-way heartbeat.
    Pong,
}

impl Opcode {
    fn code(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Close, ping and pong (RFC 6455 §5.5).
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// A client frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The last frame of its message.
    pub fin: bool,
    /// What the frame carries.
    pub opcode: Opcode,
    /// The masking key (client frames are always masked).
    pub mask: [u8; 4],
    /// Payload bytes that follow the header.
    pub payload_len: u64,
    /// Bytes of the header itself (6 to 14).
    pub header_len: usize,
}

/// A frame that breaks RFC 6455: the connection is failed with 1002.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation(pub &'static str);

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Parses the header at the start of `buf`; `Ok(None)` while it is incomplete. The header is
/// judged as soon as it is complete, before any payload byte is awaited or buffered.
pub fn parse_header(buf: &[u8]) -> Result<Option<Header>, Violation> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    // §5.2: RSV1-3 MUST be 0 unless an extension defines them; we negotiate none.
    if b0 & 0x70 != 0 {
        return Err(Violation("reserved bits set"));
    }
    let opcode = match b0 & 0x0F {
        0x0 => Opcode::Continuation,
        0x1 => Opcode::Text,
        0x2 => Opcode::Binary,
        0x8 => Opcode::Close,
        0x9 => Opcode::Ping,
        0xA => Opcode::Pong,
        // §5.2: reserved opcodes fail the connection.
        _ => return Err(Violation("reserved opcode")),
    };
    let fin = b0 & 0x80 != 0;
    // §5.1: "The server MUST close the connection upon receiving a frame that is not masked."
    if b1 & 0x80 == 0 {
        return Err(Violation("unmasked client frame"));
    }
    let (payload_len, len_end) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(b);
                (u64::from_be_bytes(be), 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    // §5.2: "the most significant bit MUST be 0" in the 64-bit length.
    if payload_len >> 63 != 0 {
        return Err(Violation("payload length over 2^63"));
    }
    // §5.5: "All control frames MUST have a payload length of 125 bytes or less and MUST NOT
    // be fragmented."
    if opcode.is_control() && (!fin || payload_len > MAX_CONTROL_PAYLOAD as u64) {
        return Err(Violation("fragmented or oversized control frame"));
    }
    let Some(m) = buf.get(len_end..len_end + 4) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin,
        opcode,
        mask: [m[0], m[1], m[2], m[3]],
        payload_len,
        header_len: len_end + 4,
    }))
}

/// Unmasks a payload in place (§5.3), eight bytes at a time.
pub fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

/// The payload of a close frame (§5.5.1): no body, or a code and a UTF-8 reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClosePayload<'a> {
    /// No status code.
    Empty,
    /// A valid code and reason.
    Status(u16, &'a str),
}

/// Reads a client's close payload; a one-byte body, a code a peer may not send (§7.4) or a
/// reason that is not UTF-8 (§5.5.1) is a violation.
pub fn parse_close(payload: &[u8]) -> Result<ClosePayload<'_>, Violation> {
    match payload {
        [] => Ok(ClosePayload::Empty),
        [_] => Err(Violation("close frame with a one-byte body")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            // §7.4.1 and §7.4.2 with IANA's registry: 1000-1003, 1007-1014 and 3000-4999 may
            // be sent; 1004-1006, 1015 and the rest are reserved or never on the wire.
            let allowed = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !allowed {
                return Err(Violation("close code a peer may not send"));
            }
            let reason =
                std::str::from_utf8(reason).map_err(|_| Violation("close reason not UTF-8"))?;
            Ok(ClosePayload::Status(code, reason))
        }
    }
}

/// Bytes a server frame with this payload takes on the wire (§5.2: unmasked, 2, 4 or 10
/// header bytes).
pub fn frame_len(payload: usize) -> usize {
    payload
        + match payload {
            0..=125 => 2,
            126..=65535 => 4,
            _ => 10,
        }
}

/// Appends a final, unmasked server frame (§5.1: a server never masks) to `out`.
pub fn encode(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8]) {
    out.reserve(frame_len(payload.len()));
    out.push(0x80 | opcode.code());
    match payload.len() {
        n @ 0..=125 => out.push(n as u8),
        n @ 126..=65535 => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// Appends a close frame with this code and reason (at most 123 bytes, §5.5).
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let reason = &reason.as_bytes()[..reason.len().min(MAX_CONTROL_PAYLOAD - 2)];
    let mut body = [0u8; MAX_CONTROL_PAYLOAD];
    body[..2].copy_from_slice(&code.to_be_bytes());
    body[2..2 + reason.len()].copy_from_slice(reason);
    encode(out, Opcode::Close, &body[..2 + reason.len()]);
}

/// The length of the server frame at the start of `queued` (as written by [`encode`]), or
/// `None` when its header is not all there.
pub fn server_frame_len(queued: &[u8]) -> Option<usize> {
    let len = match *queued.get(1)? {
        126 => usize::from(u16::from_be_bytes([*queued.get(2)?, *queued.get(3)?])) + 4,
        127 => {
            let mut be = [0u8; 8];
            be.copy_from_slice(queued.get(2..10)?);
            usize::try_from(u64::from_be_bytes(be))
                .ok()?
                .checked_add(10)?
        }
        n => usize::from(n) + 2,
    };
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(b0: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![b0];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=65535 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        let start = out.len();
        out.extend_from_slice(payload);
        unmask(&mut out[start..], mask);
        out
    }

    #[test]
    fn headers_of_every_length_form_parse_and_unmask() {
        for len in [0usize, 1, 125, 126, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let frame = masked(0x82, &payload, [1, 2, 3, 4]);
            for cut in 0..frame.len().min(14) {
                let short = parse_header(&frame[..cut]).unwrap();
                assert!(
                    short.is_none() || short.unwrap().header_len <= cut,
                    "len {len} cut {cut}"
                );
            }
            let h = parse_header(&frame).unwrap().unwrap();
            assert_eq!(
                (h.fin, h.opcode, h.payload_len),
                (true, Opcode::Binary, len as u64)
            );
            let mut body = frame[h.header_len..].to_vec();
            unmask(&mut body, h.mask);
            assert_eq!(body, payload);
        }
    }

    #[test]
    fn rule_breaking_headers_are_violations() {
        let cases: &[(&[u8], &str)] = &[
            (&[0x82, 0x00], "unmasked"),
            (&[0xC2, 0x80, 0, 0, 0, 0], "rsv1"),
            (&[0x83, 0x80, 0, 0, 0, 0], "reserved data opcode"),
            (&[0x8B, 0x80, 0, 0, 0, 0], "reserved control opcode"),
            (&[0x09, 0x80, 0, 0, 0, 0], "fragmented ping"),
            (&[0x89, 0xFE, 0, 126, 0, 0, 0, 0], "ping over 125 bytes"),
            (&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0], "length over 2^63"),
        ];
        for (bytes, what) in cases {
            assert!(parse_header(bytes).is_err(), "{what}");
        }
    }

    #[test]
    fn close_payloads() {
        assert_eq!(parse_close(b""), Ok(ClosePayload::Empty));
        assert_eq!(
            parse_close(b"\x03\xe8bye"),
            Ok(ClosePayload::Status(1000, "bye"))
        );
        assert_eq!(parse_close(b"\x0f\xa0"), Ok(ClosePayload::Status(4000, "")));
        assert_eq!(parse_close(b"\x03\xf4"), Ok(ClosePayload::Status(1012, "")));
        for bad in [
            &b"\x0b\xb7"[..],
            &b"\x03"[..],
            b"\x03\xed",
            b"\x03\xf7",
            b"\x00\x00",
            b"\x03\xe8\xff",
        ] {
            assert!(parse_close(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn encoded_frames_have_the_length_frame_len_says() {
        for len in [0usize, 125, 126, 65535, 65536] {
            let mut out = Vec::new();
            encode(&mut out, Opcode::Binary, &vec![9; len]);
            assert_eq!(out.len(), frame_len(len));
            assert_eq!(server_frame_len(&out), Some(out.len()));
            assert_eq!(server_frame_len(&out[..1]), None);
        }
        let mut out = Vec::new();
        encode_close(&mut out, 4743, "x");
        assert_eq!(out, [0x88, 3, 0x12, 0x87, b'x']);
    }
}
