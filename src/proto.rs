//! The wire messages (PROTOCOL.md §2), generated from `proto/sigver.proto`, and the few
//! messages the server sends, encoded once.

#![allow(missing_docs)] // generated code

include!(concat!(env!("OUT_DIR"), "/sigver.rs"));

use bytes::Bytes;
use prost::Message as _;

pub use message::Type;

/// `heartbeat: true`.
pub const HEARTBEAT: Bytes = Bytes::from_static(&[0x08, 0x01]);
/// `connected: true`.
pub const CONNECTED_TRUE: Bytes = Bytes::from_static(&[0x20, 0x01]);
/// `connected: false`: a oneof member is present even when false, so it is encoded (§2).
pub const CONNECTED_FALSE: Bytes = Bytes::from_static(&[0x20, 0x00]);

/// Encodes `content {senderId, recipientId, data}` (never `lastData`: it is not forwarded).
pub fn encode_content(sender_id: u32, recipient_id: u32, data: Bytes) -> Bytes {
    let msg = Message {
        r#type: Some(Type::Content(Content {
            sender_id,
            recipient_id,
            last_data: false,
            data,
        })),
    };
    Bytes::from(msg.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(t: Type) -> Vec<u8> {
        Message { r#type: Some(t) }.encode_to_vec()
    }

    #[test]
    fn constants_match_the_encoder() {
        assert_eq!(HEARTBEAT, encode(Type::Heartbeat(true)));
        assert_eq!(CONNECTED_TRUE, encode(Type::Connected(true)));
        assert_eq!(CONNECTED_FALSE, encode(Type::Connected(false)));
    }

    #[test]
    fn empty_content_omits_defaults() {
        // Zero ids and empty data are absent on the wire: only the content tag and length.
        assert_eq!(&encode_content(0, 0, Bytes::new())[..], &[0x12, 0x00]);
        assert_eq!(
            &encode_content(0, 7, Bytes::new())[..],
            &[0x12, 0x02, 0x10, 0x07]
        );
    }
}
