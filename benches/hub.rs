//! Cost of the hub's hot path: decode one content, route it along a binding, encode the
//! forwarded message. Run with `cargo bench --bench hub`; prints the median of 15 runs.

use std::time::Instant;

use bytes::Bytes;
use prost::Message as _;
use sigver::hub::{ConnId, Effect, Hub};
use sigver::proto::{Content, GroupData, Message, Type};

const PAIRS: u32 = 100;
const MESSAGES: usize = 200_000;
const RUNS: usize = 15;

fn encode(t: Type) -> Bytes {
    Bytes::from(Message { r#type: Some(t) }.encode_to_vec())
}

fn id(slot: u32) -> ConnId {
    ConnId {
        slot,
        generation: slot,
    }
}

fn main() {
    let mut hub = Hub::new(1);
    let mut out = Vec::new();
    for pair in 0..PAIRS {
        let key = format!("group-{pair}");
        let (member, joiner) = (id(2 * pair), id(2 * pair + 1));
        for (conn, nid) in [(member, 1), (joiner, 2)] {
            hub.on_open(conn, key.as_bytes(), false, &mut out);
            let connect = Type::Connect(GroupData {
                id: nid,
                members: vec![],
            });
            hub.on_message(conn, encode(connect), &mut out);
        }
    }
    // A 200-byte payload: the size of an ICE candidate.
    let content = encode(Type::Content(Content {
        sender_id: 0,
        recipient_id: 0,
        last_data: false,
        data: Bytes::from(vec![b'x'; 200]),
    }));
    let mut samples = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = Instant::now();
        for i in 0..MESSAGES {
            let joiner = id(2 * (i as u32 % PAIRS) + 1);
            out.clear();
            hub.on_message(joiner, content.clone(), &mut out);
            assert!(matches!(out.first(), Some(Effect::Send(..))));
        }
        samples.push(start.elapsed().as_nanos() as f64 / MESSAGES as f64);
    }
    samples.sort_by(f64::total_cmp);
    println!(
        "hub relay, {PAIRS} pairs, 200-byte content: median {:.0} ns/message (min {:.0}, max {:.0})",
        samples[RUNS / 2],
        samples[0],
        samples[RUNS - 1]
    );
}
