//! Fuzz target: the RFC 6455 framing a peer controls (`conn::frames`), on arbitrary bytes.
//!
//! Beyond "no panic", it checks what the connection relies on: a parsed header never claims
//! more header bytes than it was given and is the same whatever follows it (the payload is
//! not the header's business); a control frame is never over 125 bytes nor fragmented; a
//! header is judged (complete or refused) once 14 bytes are there, so an unfinished header
//! cannot hold bytes for ever; unmasking twice gives the bytes back; and a close payload that
//! parses is echoed into a frame that parses the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sigver::conn::frames::{self, ClosePayload, Opcode, MAX_CONTROL_PAYLOAD};

fuzz_target!(|data: &[u8]| {
    check_header(data);
    check_unmask(data);
    check_close(data);
});

fn check_header(data: &[u8]) {
    match frames::parse_header(data) {
        Ok(Some(h)) => {
            assert!((6..=14).contains(&h.header_len) && h.header_len <= data.len());
            assert_eq!(frames::parse_header(&data[..h.header_len]), Ok(Some(h)));
            if h.opcode.is_control() {
                assert!(h.fin && h.payload_len <= MAX_CONTROL_PAYLOAD as u64);
            }
        }
        Ok(None) => assert!(data.len() < 14, "undecided after {} bytes", data.len()),
        Err(_) => {}
    }
}

fn check_unmask(data: &[u8]) {
    let Some((mask, body)) = data.split_first_chunk::<4>() else {
        return;
    };
    let mut once = body.to_vec();
    frames::unmask(&mut once, *mask);
    for (i, (a, b)) in once.iter().zip(body).enumerate() {
        assert_eq!(*a, b ^ mask[i % 4]);
    }
    frames::unmask(&mut once, *mask);
    assert_eq!(once, body);
}

fn check_close(data: &[u8]) {
    // A close payload comes in a control frame: at most 125 bytes.
    if data.len() > MAX_CONTROL_PAYLOAD {
        return;
    }
    let Ok(payload) = frames::parse_close(data) else {
        return;
    };
    let mut echo = Vec::new();
    match payload {
        ClosePayload::Empty => frames::encode(&mut echo, Opcode::Close, &[]),
        ClosePayload::Status(code, reason) => frames::encode_close(&mut echo, code, reason),
    }
    assert_eq!(frames::server_frame_len(&echo), Some(echo.len()));
    // Our own frames are unmasked: mask them as a client would, and they parse back.
    let mut masked = vec![echo[0], echo[1] | 0x80, 0, 0, 0, 0];
    masked.extend_from_slice(&echo[2..]);
    let h = frames::parse_header(&masked)
        .ok()
        .flatten()
        .expect("a whole header");
    assert_eq!(h.opcode, Opcode::Close);
    let body = &masked[h.header_len..];
    assert_eq!(frames::parse_close(body), Ok(payload));
}
