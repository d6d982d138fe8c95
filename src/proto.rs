//! The wire messages (docs/PROTOCOL.md §2), generated from `proto/sigver.proto`, and the few
//! messages the server sends, encoded once.

#![allow(missing_docs)] // generated code

include!(concat!(env!("OUT_DIR"), "/sigver.rs"));

use bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{encode_varint, encoded_len_varint};
#[cfg(test)]
use prost::Message as _;

pub use message::Type;

/// `heartbeat: true`.
pub const HEARTBEAT: Bytes = Bytes::from_static(&[0x08, 0x01]);
/// `connected: true`.
pub const CONNECTED_TRUE: Bytes = Bytes::from_static(&[0x20, 0x01]);
/// `connected: false`: a oneof member is present even when false, so it is encoded (§2).
pub const CONNECTED_FALSE: Bytes = Bytes::from_static(&[0x20, 0x00]);

/// Encodes `content {senderId, recipientId, data}` (never `lastData`: it is not forwarded)
/// into `buf` and splits it off. The bytes are those prost writes (fields in order, defaults
/// omitted), without a message value or an allocation of their own: once the returned
/// `Bytes` is dropped, `buf` reuses the space, so relaying allocates nothing per message.
pub fn encode_content(buf: &mut BytesMut, sender_id: u32, recipient_id: u32, data: &[u8]) -> Bytes {
    let field = |n: u32| encoded_len_varint(u64::from(n));
    let inner = if sender_id != 0 {
        1 + field(sender_id)
    } else {
        0
    } + if recipient_id != 0 {
        1 + field(recipient_id)
    } else {
        0
    } + if data.is_empty() {
        0
    } else {
        1 + encoded_len_varint(data.len() as u64) + data.len()
    };
    buf.reserve(1 + encoded_len_varint(inner as u64) + inner);
    buf.put_u8(0x12); // field 2 (content), length-delimited
    encode_varint(inner as u64, buf);
    if sender_id != 0 {
        buf.put_u8(0x08); // field 1 (senderId), varint
        encode_varint(u64::from(sender_id), buf);
    }
    if recipient_id != 0 {
        buf.put_u8(0x10); // field 2 (recipientId), varint
        encode_varint(u64::from(recipient_id), buf);
    }
    if !data.is_empty() {
        buf.put_u8(0x22); // field 4 (data), length-delimited
        encode_varint(data.len() as u64, buf);
        buf.put_slice(data);
    }
    buf.split().freeze()
}

/// What the hub checks of an encoded `Message` before decoding it, found by skipping over
/// fields without decoding them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Total length of the `connect` fields (a decoder merges repeated ones into one).
    pub connect_bytes: usize,
    /// Fields at the top level and inside `content` and `connect`, the member ids of a
    /// `connect` excepted (their bytes are in `connect_bytes`); counting stops past `max`.
    pub fields: usize,
}

/// Reads the shape of an encoded `Message`, with work linear in the number of fields it
/// counts (at most `max + 1`), not in bytes; `None` when the bytes are not a well-formed
/// message (the decoder then says why). Lets a message that would be costly to decode (a
/// huge member list, a million tiny fields) be refused before it is decoded.
pub fn shape(buf: &[u8], max: usize) -> Option<Shape> {
    let mut shape = Shape {
        connect_bytes: 0,
        fields: 0,
    };
    let mut outer = buf;
    while !outer.is_empty() && shape.fields <= max {
        let (number, body) = next_field(&mut outer)?;
        shape.fields += 1;
        let Some(body) = body else { continue };
        // content (2) and connect (3) are messages: their fields count too.
        if number == 3 {
            shape.connect_bytes = shape.connect_bytes.saturating_add(body.len());
        }
        if number == 2 || number == 3 {
            let mut inner = body;
            while !inner.is_empty() && shape.fields <= max {
                let (field, _) = next_field(&mut inner)?;
                if !(number == 3 && field == 2) {
                    shape.fields += 1;
                }
            }
        }
    }
    Some(shape)
}

/// Takes one field off `buf`: its number, and its body when it is length-delimited.
fn next_field<'a>(buf: &mut &'a [u8]) -> Option<(u64, Option<&'a [u8]>)> {
    let key = prost::encoding::decode_varint(buf).ok()?;
    let len = match key & 7 {
        0 => {
            prost::encoding::decode_varint(buf).ok()?;
            return Some((key >> 3, None));
        }
        1 => 8,
        2 => usize::try_from(prost::encoding::decode_varint(buf).ok()?).ok()?,
        5 => 4,
        _ => return None,
    };
    let body = buf.get(..len)?;
    *buf = &buf[len..];
    Some((key >> 3, (key & 7 == 2).then_some(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_adds_up_connect_fields_and_counts_fields() {
        let connect = |n: u32| {
            encode(Type::Connect(GroupData {
                id: 1,
                members: (0..n).map(|i| i.wrapping_mul(2_654_435_761)).collect(),
            }))
        };
        let small = connect(3);
        let shape = |b: &[u8]| super::shape(b, 64);
        assert_eq!(
            shape(&small),
            Some(Shape {
                connect_bytes: small.len() - 2,
                fields: 2
            })
        );
        let big = connect(1000);
        let mut both = big.clone();
        both.extend_from_slice(&encode(Type::Heartbeat(true)));
        both.extend_from_slice(&small);
        let s = shape(&both).unwrap();
        assert_eq!(s.connect_bytes, big.len() - 3 + small.len() - 2);
        assert_eq!(
            s.fields, 5,
            "three top-level fields and two ids; the lists not"
        );
        let content = content(7, 9, &[1; 300]);
        assert_eq!(shape(&content).map(|s| s.fields), Some(4));
        // A million tiny unknown fields: counting stops past the maximum.
        let many = [0x28u8, 0x00].repeat(1_000_000);
        assert_eq!(shape(&many).map(|s| s.fields), Some(65));
        assert_eq!(shape(&HEARTBEAT).map(|s| s.connect_bytes), Some(0));
        assert_eq!(shape(&[0x1a, 0x05, 0x08]), None, "truncated");
        assert_eq!(shape(&[0x0b]), None, "group wire type");
    }

    fn encode(t: Type) -> Vec<u8> {
        Message { r#type: Some(t) }.encode_to_vec()
    }

    #[test]
    fn constants_match_the_encoder() {
        assert_eq!(HEARTBEAT, encode(Type::Heartbeat(true)));
        assert_eq!(CONNECTED_TRUE, encode(Type::Connected(true)));
        assert_eq!(CONNECTED_FALSE, encode(Type::Connected(false)));
    }

    fn content(sender_id: u32, recipient_id: u32, data: &[u8]) -> Vec<u8> {
        encode_content(&mut BytesMut::new(), sender_id, recipient_id, data).to_vec()
    }

    #[test]
    fn empty_content_omits_defaults() {
        // Zero ids and empty data are absent on the wire: only the content tag and length.
        assert_eq!(content(0, 0, b""), [0x12, 0x00]);
        assert_eq!(content(0, 7, b""), [0x12, 0x02, 0x10, 0x07]);
    }

    #[test]
    fn content_is_encoded_as_prost_does() {
        let ids = [0, 1, 127, 128, 300, 16_383, 16_384, (1 << 31) - 1, u32::MAX];
        let sizes = [0, 1, 127, 128, 200, 16_384, 1 << 20];
        let mut buf = BytesMut::new();
        for &s in &ids {
            for &r in &ids {
                for &n in &sizes {
                    let data = vec![0xab; n];
                    let want = encode(Type::Content(Content {
                        sender_id: s,
                        recipient_id: r,
                        last_data: false,
                        data: Bytes::from(data.clone()),
                    }));
                    assert_eq!(encode_content(&mut buf, s, r, &data), want, "{s} {r} {n}");
                }
            }
        }
    }
}
