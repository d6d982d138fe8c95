//! The few sigver messages a client sends and reads (docs/PROTOCOL.md §2), encoded and decoded by
//! hand straight into and out of the caller's buffers: no allocation per message.
//!
//! `selftest` checks this codec against the server's own prost types, so the two cannot drift.

/// A decoded server message, borrowing the frame it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Msg<'a> {
    /// `heartbeat` (true or false).
    Heartbeat,
    /// `connected: true` or `connected: false`.
    Connected(bool),
    /// `content`; `data` is empty for a disconnect note.
    Content {
        sender: u32,
        recipient: u32,
        data: &'a [u8],
    },
    /// Anything else a client does not act on (`connect`, or a message with nothing set).
    Other,
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Skips one field of wire type `wire`; `None` when the bytes are not valid protobuf.
fn skip(buf: &[u8], pos: &mut usize, wire: u64) -> Option<()> {
    match wire {
        0 => varint(buf, pos).map(drop),
        1 => advance(buf, pos, 8),
        2 => {
            let n = usize::try_from(varint(buf, pos)?).ok()?;
            advance(buf, pos, n)
        }
        5 => advance(buf, pos, 4),
        _ => None,
    }
}

fn advance(buf: &[u8], pos: &mut usize, n: usize) -> Option<()> {
    let end = pos.checked_add(n).filter(|&e| e <= buf.len())?;
    *pos = end;
    Some(())
}

fn bytes<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let n = usize::try_from(varint(buf, pos)?).ok()?;
    let start = *pos;
    advance(buf, pos, n)?;
    Some(&buf[start..*pos])
}

/// Decodes one `Message`; `None` when the bytes are not valid protobuf. Protobuf rules: the
/// last oneof field on the wire wins, unknown fields are skipped.
pub fn decode(buf: &[u8]) -> Option<Msg<'_>> {
    let mut pos = 0;
    let mut msg = Msg::Other;
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        match (tag >> 3, tag & 7) {
            (1, 0) => {
                varint(buf, &mut pos)?;
                msg = Msg::Heartbeat;
            }
            (2, 2) => msg = decode_content(bytes(buf, &mut pos)?)?,
            (4, 0) => msg = Msg::Connected(varint(buf, &mut pos)? != 0),
            (3, 2) => {
                bytes(buf, &mut pos)?;
                msg = Msg::Other;
            }
            (_, wire) => skip(buf, &mut pos, wire)?,
        }
    }
    Some(msg)
}

fn decode_content(buf: &[u8]) -> Option<Msg<'_>> {
    let (mut sender, mut recipient, mut data) = (0, 0, &buf[..0]);
    let mut pos = 0;
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        match (tag >> 3, tag & 7) {
            (1, 0) => sender = varint(buf, &mut pos)? as u32,
            (2, 0) => recipient = varint(buf, &mut pos)? as u32,
            (4, 2) => data = bytes(buf, &mut pos)?,
            (_, wire) => skip(buf, &mut pos, wire)?,
        }
    }
    Some(Msg::Content {
        sender,
        recipient,
        data,
    })
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// `heartbeat: true`, the answer to the server's heartbeat (docs/PROTOCOL.md §4).
pub const HEARTBEAT: [u8; 2] = [0x08, 0x01];

/// Length of the encoded `connect {id, members}`.
pub fn connect_len(id: u32, members: &[u32]) -> usize {
    let inner = connect_inner_len(id, members);
    1 + varint_len(inner as u64) + inner
}

fn connect_inner_len(id: u32, members: &[u32]) -> usize {
    let id_len = if id == 0 {
        0
    } else {
        1 + varint_len(id.into())
    };
    let packed: usize = members.iter().map(|&m| varint_len(m.into())).sum();
    let members_len = if members.is_empty() {
        0
    } else {
        1 + varint_len(packed as u64) + packed
    };
    id_len + members_len
}

/// Appends `connect {id, members}` (members packed).
pub fn put_connect(out: &mut Vec<u8>, id: u32, members: &[u32]) {
    out.push(0x1a);
    put_varint(out, connect_inner_len(id, members) as u64);
    if id != 0 {
        out.push(0x08);
        put_varint(out, id.into());
    }
    if !members.is_empty() {
        let packed: usize = members.iter().map(|&m| varint_len(m.into())).sum();
        out.push(0x12);
        put_varint(out, packed as u64);
        for &m in members {
            put_varint(out, m.into());
        }
    }
}

fn content_inner_len(sender: u32, recipient: u32, data_len: usize) -> usize {
    let field = |v: u32| {
        if v == 0 {
            0
        } else {
            1 + varint_len(v.into())
        }
    };
    let data = if data_len == 0 {
        0
    } else {
        1 + varint_len(data_len as u64) + data_len
    };
    field(sender) + field(recipient) + data
}

/// Length of the encoded `content {senderId, recipientId, data}` with `data_len` bytes of data.
pub fn content_len(sender: u32, recipient: u32, data_len: usize) -> usize {
    let inner = content_inner_len(sender, recipient, data_len);
    1 + varint_len(inner as u64) + inner
}

/// Appends a `content {senderId, recipientId, data}` up to its data: the caller appends exactly
/// `data_len` bytes next.
pub fn put_content_head(out: &mut Vec<u8>, sender: u32, recipient: u32, data_len: usize) {
    out.push(0x12);
    put_varint(out, content_inner_len(sender, recipient, data_len) as u64);
    if sender != 0 {
        out.push(0x08);
        put_varint(out, sender.into());
    }
    if recipient != 0 {
        out.push(0x10);
        put_varint(out, recipient.into());
    }
    if data_len != 0 {
        out.push(0x22);
        put_varint(out, data_len as u64);
    }
}

/// Checks this codec against the server's prost types; panics on the first difference.
pub fn selftest() {
    use prost::Message as _;
    use sigver::proto::{Content, GroupData, Message, Type};

    let prost = |t: Type| Message { r#type: Some(t) }.encode_to_vec();
    for (id, members) in [
        (0, vec![]),
        (1, vec![]),
        (300, vec![1, 2, 70_000]),
        (u32::MAX, vec![0]),
    ] {
        let mut ours = Vec::new();
        put_connect(&mut ours, id, &members);
        assert_eq!(ours.len(), connect_len(id, &members));
        let want = prost(Type::Connect(GroupData {
            id,
            members: members.clone(),
        }));
        assert_eq!(ours, want, "connect {id} {members:?}");
    }
    for (sender, recipient, len) in [
        (0, 0, 0),
        (0, 0, 200),
        (5, 0, 1),
        (0, 2_147_483_647, 127),
        (1, 1, 128),
        (9, 9, 70_000),
    ] {
        let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let mut ours = Vec::new();
        put_content_head(&mut ours, sender, recipient, len);
        ours.extend_from_slice(&data);
        assert_eq!(ours.len(), content_len(sender, recipient, len));
        let want = prost(Type::Content(Content {
            sender_id: sender,
            recipient_id: recipient,
            last_data: false,
            data: data.clone().into(),
        }));
        assert_eq!(ours, want, "content {sender} {recipient} {len}");
        assert_eq!(
            decode(&want),
            Some(Msg::Content {
                sender,
                recipient,
                data: &data
            })
        );
    }
    assert_eq!(decode(&HEARTBEAT), Some(Msg::Heartbeat));
    assert_eq!(HEARTBEAT[..], prost(Type::Heartbeat(true))[..]);
    assert_eq!(
        decode(&prost(Type::Connected(false))),
        Some(Msg::Connected(false))
    );
    assert_eq!(
        decode(&prost(Type::Connected(true))),
        Some(Msg::Connected(true))
    );
    assert_eq!(decode(&[]), Some(Msg::Other));
    // Unknown field 9 (varint) skipped, then the last oneof member wins.
    assert_eq!(
        decode(&[0x48, 0x05, 0x08, 0x01, 0x20, 0x01]),
        Some(Msg::Connected(true))
    );
    assert_eq!(decode(&[0x12, 0x05, 0x08]), None);
}

#[cfg(test)]
mod tests {
    /// Proves that the hand-written messages encode and decode as the server's prost types do.
    #[test]
    fn matches_the_reference() {
        super::selftest();
    }
}
