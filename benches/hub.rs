//! Micro-benchmarks of the hot pieces, with criterion: the hub's decode-route-encode of one
//! content in each direction (docs/PROTOCOL.md §5), a heartbeat, the protobuf decode alone,
//! WebSocket framing (a client frame parsed and unmasked; a server frame queued, by our encoder
//! and by tungstenite's, for comparison), and the heartbeat timer wheel in steady state. Run with `cargo bench --bench hub` (about a minute);
//! `cargo bench --bench hub -- wheel` runs the matching ones only.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use prost::Message as _;
use sigver::conn::frames::{self, Opcode};
use sigver::hub::{ConnId, Effect, Hub};
use sigver::proto::{Content, GroupData, Message, Type};
use sigver::timer::TimerWheel;

/// Groups in the hub, each with one member and one bound joiner.
const PAIRS: u32 = 100;
/// A 200-byte payload: the size of an ICE candidate.
const PAYLOAD: usize = 200;

fn encode(t: Type) -> Bytes {
    Bytes::from(Message { r#type: Some(t) }.encode_to_vec())
}

fn content(recipient_id: u32) -> Bytes {
    encode(Type::Content(Content {
        sender_id: 0,
        recipient_id,
        last_data: false,
        data: Bytes::from(vec![b'x'; PAYLOAD]),
    }))
}

fn id(slot: u32) -> ConnId {
    ConnId {
        slot,
        generation: slot,
    }
}

/// A hub holding `PAIRS` groups; returns each pair's (member, joiner, joiner's signaling id).
fn hub_with_pairs() -> (Hub, Vec<(ConnId, ConnId, u32)>) {
    let mut hub = Hub::new(1);
    let mut out = Vec::new();
    let mut pairs = Vec::new();
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
        // The joiner's signaling id, as its member sees it on a relayed content.
        out.clear();
        hub.on_message(joiner, content(0), &mut out);
        let Some(Effect::Send(to, bytes)) = out.first() else {
            panic!("the joiner's content was not relayed");
        };
        assert_eq!(*to, member);
        let Ok(Message {
            r#type: Some(Type::Content(c)),
        }) = Message::decode(bytes.clone())
        else {
            panic!("the relayed message is not a content");
        };
        pairs.push((member, joiner, c.sender_id));
        out.clear();
    }
    (hub, pairs)
}

fn hub_benches(c: &mut Criterion) {
    let (mut hub, pairs) = hub_with_pairs();
    let mut out = Vec::with_capacity(16);
    let mut g = c.benchmark_group("hub");
    g.throughput(Throughput::Elements(1));

    let to_member = content(0);
    let mut i = 0;
    g.bench_function("content joiner->member (decode, route, encode)", |b| {
        b.iter(|| {
            let (_, joiner, _) = pairs[i % pairs.len()];
            i += 1;
            out.clear();
            hub.on_message(joiner, to_member.clone(), &mut out);
            black_box(&out);
        })
    });

    let to_joiner: Vec<(ConnId, Bytes)> = pairs
        .iter()
        .map(|&(member, _, s)| (member, content(s)))
        .collect();
    let mut i = 0;
    g.bench_function("content member->joiner (decode, route, encode)", |b| {
        b.iter(|| {
            let (member, msg) = &to_joiner[i % to_joiner.len()];
            i += 1;
            out.clear();
            hub.on_message(*member, msg.clone(), &mut out);
            debug_assert!(matches!(out.first(), Some(Effect::Send(..))));
            black_box(&out);
        })
    });

    let heartbeat = encode(Type::Heartbeat(true));
    g.bench_function("heartbeat from a client", |b| {
        b.iter(|| {
            out.clear();
            hub.on_message(pairs[0].1, heartbeat.clone(), &mut out);
            black_box(&out);
        })
    });

    g.bench_function("protobuf decode of a content alone", |b| {
        b.iter(|| black_box(Message::decode(black_box(to_member.clone()))))
    });

    // A joiner retrying `connect` in a group of 2000 members: each retry is bound to the next
    // member it has not tried (docs/PROTOCOL.md §5), with up to 2000 tried.
    const BIG_GROUP: u32 = 2000;
    let mut big = Hub::new(2);
    for m in 0..BIG_GROUP {
        big.on_open(id(m), b"big", false, &mut out);
        let connect = Type::Connect(GroupData {
            id: m + 1,
            members: if m == 0 { vec![] } else { vec![1] },
        });
        big.on_message(id(m), encode(connect), &mut out);
    }
    let joiner = id(BIG_GROUP);
    big.on_open(joiner, b"big", false, &mut out);
    let retry = encode(Type::Connect(GroupData {
        id: 99_999,
        members: vec![],
    }));
    g.bench_function("connect retry in a group of 2000 members", |b| {
        b.iter(|| {
            out.clear();
            big.on_message(joiner, retry.clone(), &mut out);
            black_box(&out);
        })
    });
    g.finish();
}

fn frame_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("frames");
    g.throughput(Throughput::Elements(1));
    let payload = vec![b'x'; PAYLOAD];
    // A client frame as a browser sends it: masked.
    let mut client = vec![0x82, 0x80 | 126, 0, PAYLOAD as u8, 1, 2, 3, 4];
    let start = client.len();
    client.extend_from_slice(&payload);
    frames::unmask(&mut client[start..], [1, 2, 3, 4]);
    g.bench_function("parse and unmask a 200-byte client frame", |b| {
        let mut buf = client.clone();
        b.iter(|| {
            buf.copy_from_slice(&client);
            let header = frames::parse_header(black_box(&buf)).ok().flatten();
            let header = header.expect("a whole header");
            frames::unmask(&mut buf[header.header_len..], header.mask);
            black_box(&buf);
        })
    });
    // The send queue of one connection: frames appended, then taken by one write.
    let mut queue = Vec::with_capacity(4096);
    g.bench_function("queue a 200-byte server frame (ours)", |b| {
        b.iter(|| {
            if queue.len() > 3000 {
                queue.clear();
            }
            frames::encode(&mut queue, Opcode::Binary, black_box(&payload));
        })
    });
    let shared = Bytes::from(payload.clone());
    g.bench_function(
        "queue a 200-byte server frame (tungstenite Frame::format)",
        |b| {
            b.iter(|| {
                if queue.len() > 3000 {
                    queue.clear();
                }
                let frame = tungstenite::protocol::frame::Frame::message(
                    black_box(shared.clone()),
                    tungstenite::protocol::frame::coding::OpCode::Data(
                        tungstenite::protocol::frame::coding::Data::Binary,
                    ),
                    true,
                );
                frame.format(&mut queue).expect("a Vec takes every byte");
            })
        },
    );
    g.finish();
}

fn wheel_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("wheel");
    // 10 000 connections with 5 s heartbeats, deadlines spread over the period: each
    // millisecond expires two entries and schedules them again, as the server does.
    const CONNS: u64 = 10_000;
    const PERIOD: u64 = 5_000;
    let mut wheel = TimerWheel::default();
    for n in 0..CONNS {
        wheel.insert(n * PERIOD / CONNS, n);
    }
    let mut fired = Vec::new();
    let mut now = 0;
    g.throughput(Throughput::Elements(1));
    g.bench_function(
        "one 1 ms tick, 10k heartbeats (expire, re-insert, next deadline)",
        |b| {
            b.iter(|| {
                now += 1;
                wheel.expire(now, &mut fired);
                for n in fired.drain(..) {
                    wheel.insert(now + PERIOD, n);
                }
                black_box(wheel.next_deadline())
            })
        },
    );

    g.throughput(Throughput::Elements(CONNS));
    g.bench_function("insert 10k, then expire them all", |b| {
        b.iter_batched(
            || (TimerWheel::default(), Vec::with_capacity(CONNS as usize)),
            |(mut wheel, mut fired)| {
                for n in 0..CONNS {
                    wheel.insert(n * PERIOD / CONNS, n);
                }
                wheel.expire(PERIOD, &mut fired);
                black_box(fired.len())
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = hub_benches, frame_benches, wheel_benches
}
criterion_main!(benches);
