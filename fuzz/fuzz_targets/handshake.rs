//! Fuzz target: the upgrade-request parser on arbitrary bytes (`handshake::parse`) and the
//! request-target splitter (`handshake::parse_target`).
//!
//! Beyond "no panic", it checks what the driver relies on: `consumed` never passes the end
//! of the buffer (the rest is handed to the WebSocket as early frames), the verdict on a
//! complete head does not depend on the bytes after it (they are frames, not headers), a
//! `Partial` head is never over the size limit (else a client could grow the buffer for ever),
//! and the `101` answer cannot carry a header injected through the echoed subprotocol.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sigver::handshake::{self, Parse, Request, MAX_REQUEST_BYTES};

fuzz_target!(|data: &[u8]| {
    check_parse(data);
    check_target(data);
});

fn check_parse(data: &[u8]) {
    let parsed = handshake::parse(data);
    match &parsed {
        Parse::Partial => assert!(data.len() <= MAX_REQUEST_BYTES, "partial past the limit"),
        Parse::TooLarge => {}
        Parse::Done { consumed, request } => {
            let consumed = *consumed;
            assert!(
                consumed <= data.len(),
                "consumed {consumed} of {}",
                data.len()
            );
            assert!(consumed > 0, "a verdict on no bytes");
            // The head alone gives the same verdict: what follows it cannot change it.
            assert_eq!(handshake::parse(&data[..consumed]), parsed);
            if let Request::Upgrade(upgrade) = request {
                let answer = sigver::http::switching_protocols(upgrade);
                // One blank line, at the end: nothing the client sent can end the head early
                // or add a header.
                let head_end = answer.windows(4).position(|w| w == b"\r\n\r\n");
                assert_eq!(head_end, Some(answer.len() - 4));
                if let Some(p) = &upgrade.protocol {
                    assert!(!p.is_empty() && !p.contains(['\r', '\n', ',']), "{p:?}");
                }
                if let Ok(target) = &upgrade.target {
                    assert!(!target.key.contains(&b'?') && !target.key.contains(&b'#'));
                }
            }
        }
    }
}

fn check_target(data: &[u8]) {
    let Ok(target) = handshake::parse_target(data) else {
        return;
    };
    // The key is a piece of the target as sent (no decoding), cut before any query or fragment.
    assert!(target.key.len() <= data.len());
    assert!(!target.key.contains(&b'?') && !target.key.contains(&b'#'));
    assert!(
        target.key.is_empty() || data.windows(target.key.len()).any(|w| w == target.key),
        "key not taken from the target"
    );
    if data.starts_with(b"/") {
        // Origin-form: the key is everything after the '/' up to '?' or '#'.
        let end = data
            .iter()
            .position(|&b| b == b'?' || b == b'#')
            .unwrap_or(data.len());
        assert_eq!(target.key, &data[1..end]);
    }
}
