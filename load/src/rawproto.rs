//! The framing of the raw reference relay (`raw://`, served by `raw-server`), shared by the
//! client (`net`) and the server (`raw`): sigver's relay routing with the protocol stripped
//! off, so that what is left is the kernel's share of the cost.
//!
//! Every frame is a 4-byte length, then that many bytes of body; integers are big-endian.
//! - client -> server, first frame: the group key (1 to [`MAX_KEY`] bytes), as the URL path.
//! - server -> client, its answer: `id` (u32), `member` (u32): the id given in the group (ids
//!   count from 1 per group), and the id of the group's first member, 0 when this connection
//!   founded the group.
//! - client -> server then: `dest` (u32) and a payload, for the peer `dest` of the group.
//! - server -> client then: `sender` (u32) and the same payload, from the peer `sender`.

/// Bytes of the length prefix.
pub const PREFIX: usize = 4;
/// Longest group key, as sigver's (docs/PROTOCOL.md §1).
pub const MAX_KEY: usize = 512;
/// Largest payload of a content: the largest `--bytes` a relay sends.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Largest body the server accepts: an id and the largest payload.
pub const MAX_BODY: usize = 4 + MAX_PAYLOAD;
/// Bytes of the join answer's body.
const JOINED_BODY: usize = 8;

/// Appends the join frame for the group `key`.
pub fn put_join(out: &mut Vec<u8>, key: &[u8]) {
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
}

/// Appends the answer to a join: the id given, and the group's first member (0: none).
pub fn put_joined(out: &mut Vec<u8>, id: u32, member: u32) {
    out.extend_from_slice(&(JOINED_BODY as u32).to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&member.to_be_bytes());
}

/// Appends a content's head, up to its payload: the caller appends exactly `payload_len`
/// bytes next. `id` is the destination (client -> server) or the sender (server -> client).
pub fn put_content_head(out: &mut Vec<u8>, id: u32, payload_len: usize) {
    out.extend_from_slice(&((4 + payload_len) as u32).to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
}

/// The frame at the start of `buf`: `Ok(None)` while it is incomplete, `Ok(Some(end))` when
/// whole (its body is `buf[PREFIX..end]`), `Err` as soon as its length says more than `max`,
/// so that an oversized frame is refused before any of it is held.
pub fn frame(buf: &[u8], max: usize) -> Result<Option<usize>, &'static str> {
    let Some(prefix) = buf.first_chunk::<PREFIX>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*prefix) as usize;
    if len > max {
        return Err("frame too large");
    }
    let end = PREFIX + len;
    Ok((buf.len() >= end).then_some(end))
}

/// A content's body split into its id and its payload; `None` if it is shorter than an id.
pub fn split_id(body: &[u8]) -> Option<(u32, &[u8])> {
    let (id, payload) = body.split_first_chunk::<4>()?;
    Some((u32::from_be_bytes(*id), payload))
}

/// The join answer's body as `(id, member)`; `None` if it is not one.
pub fn joined(body: &[u8]) -> Option<(u32, u32)> {
    if body.len() != JOINED_BODY {
        return None;
    }
    let (id, member) = split_id(body)?;
    Some((id, split_id(member)?.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves that frames written here parse back whole, and only when whole.
    #[test]
    fn round_trip() {
        let mut out = Vec::new();
        put_join(&mut out, b"room");
        put_joined(&mut out, 2, 1);
        put_content_head(&mut out, 7, 3);
        out.extend_from_slice(b"abc");
        let mut bodies = Vec::new();
        let mut pos = 0;
        while let Some(end) = frame(&out[pos..], MAX_BODY).expect("valid") {
            bodies.push(&out[pos + PREFIX..pos + end]);
            pos += end;
        }
        assert_eq!(pos, out.len());
        assert_eq!(bodies[0], b"room");
        assert_eq!(joined(bodies[1]), Some((2, 1)));
        assert_eq!(split_id(bodies[2]), Some((7, &b"abc"[..])));
        // Any cut short of a frame's end is incomplete, not an error.
        let content = &out[out.len() - 11..];
        for cut in 0..content.len() {
            assert_eq!(frame(&content[..cut], MAX_BODY), Ok(None), "cut {cut}");
        }
        assert_eq!(frame(content, MAX_BODY), Ok(Some(content.len())));
    }

    /// Proves that malformed frames are told apart from incomplete ones, table-driven.
    #[test]
    fn malformed() {
        type Parsed = Result<Option<usize>, &'static str>;
        let cases: [(&[u8], Parsed); 5] = [
            (&[], Ok(None)),
            (&[0, 0, 0], Ok(None)),
            (&[0, 0, 0, 0], Ok(Some(4))),
            (&[0, 0x10, 0, 5], Err("frame too large")),
            (&[0xff, 0xff, 0xff, 0xff], Err("frame too large")),
        ];
        for (buf, want) in cases {
            assert_eq!(frame(buf, MAX_BODY), want, "{buf:?}");
        }
        assert_eq!(frame(&[0, 0x10, 0, 4], MAX_BODY), Ok(None));
        assert_eq!(split_id(&[1, 2, 3]), None);
        assert_eq!(split_id(&[0, 0, 0, 9]), Some((9, &[][..])));
        assert_eq!(joined(&[0, 0, 0, 1, 0, 0, 0]), None);
        assert_eq!(joined(&[0, 0, 0, 1, 0, 0, 0, 0, 0]), None);
    }
}
