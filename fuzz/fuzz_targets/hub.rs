//! Fuzz target: arbitrary events from several peers into the hub (PROTOCOL.md §3 to §6).
//!
//! The input is a sequence of operations. Each starts with an opcode byte: its low 3 bits
//! are the operation, the rest pick the peer slot (modulo `SLOTS`). Arguments follow; an
//! argument past the end of the input reads as 0, so every input is a valid sequence.
//!
//! - 0, open the slot with a new generation: 1 byte, bits 0-1 the key (`a`, `b`, empty, 513
//!   bytes), bit 2 favored;
//! - 1, a raw frame from the peer: 1 byte length n, then n bytes;
//! - 2, `connect {id, members}`: 1 byte id, 1 byte count (mod 4), that many ids; ids mod 8;
//! - 3, `content {recipientId, lastData, data}`: 1 byte recipient (0: none, 255: 4 raw bytes
//!   follow, else one of the ids seen in earlier sends, or the byte itself while none was),
//!   1 byte with lastData in bit 0 and the data length in bits 1-7, then the data;
//! - 4, `heartbeat` from the peer: 1 byte, bit 0 the value;
//! - 5, a heartbeat tick for the peer;
//! - 6, the socket went away (`on_close`);
//! - 7, the server closes the peer (a limit).
//!
//! Events for a slot whose peer is gone go to that stale connection, which must do nothing;
//! opening a slot whose peer is live replaces it, as the hub's defensive path allows.
//!
//! After every event: the hub's own invariants hold, its peer count is the driver's, and its
//! effects, taken in order, never send to a peer that is closed (by an earlier `Close` of the
//! same event, or before), and every send is a valid message a server may send.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use sigver::hub::{ConnId, Effect, Hub};
use sigver::proto::{Content, GroupData, Message, Type};
use sigver::CloseReason;

const SLOTS: usize = 8;

/// Reads the input; past its end, zeros.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let (taken, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        taken
    }
}

/// The hub and what a driver knows about the connections.
struct World {
    hub: Hub,
    generation: [u32; SLOTS],
    /// Connections opened and neither closed by the hub nor reported gone.
    live: [bool; SLOTS],
    /// Signaling ids seen in the hub's sends, for contents that reach someone.
    seen_ids: Vec<u32>,
    effects: Vec<Effect>,
}

impl World {
    fn conn(&self, slot: usize) -> ConnId {
        ConnId {
            slot: slot as u32,
            generation: self.generation[slot],
        }
    }

    fn step(&mut self, event: impl FnOnce(&mut Hub, &mut Vec<Effect>)) {
        let mut effects = std::mem::take(&mut self.effects);
        event(&mut self.hub, &mut effects);
        self.hub.assert_invariants();
        for effect in effects.drain(..) {
            match effect {
                Effect::Send(to, bytes) => {
                    let slot = to.slot as usize;
                    assert!(
                        slot < SLOTS && self.live[slot] && to == self.conn(slot),
                        "send to a closed peer {to:?}"
                    );
                    self.check_sent(bytes);
                }
                Effect::Close(to, _) => {
                    let slot = to.slot as usize;
                    if slot < SLOTS && to == self.conn(slot) {
                        self.live[slot] = false;
                    }
                }
            }
        }
        self.effects = effects;
        let live = self.live.iter().filter(|&&l| l).count();
        assert_eq!(self.hub.peer_count(), live, "peer count");
    }

    fn check_sent(&mut self, bytes: Bytes) {
        let msg = Message::decode(bytes).expect("the server sent a bad message");
        match msg.r#type.expect("the server sent an empty message") {
            Type::Content(c) => {
                assert!(!c.last_data, "lastData forwarded");
                // One side of a relay is always 0, the other the joiner's signaling id.
                assert!(
                    (c.sender_id == 0) != (c.recipient_id == 0),
                    "ids of a relayed content: {c:?}"
                );
                let s = c.sender_id.max(c.recipient_id);
                if self.seen_ids.len() < 64 && !self.seen_ids.contains(&s) {
                    self.seen_ids.push(s);
                }
            }
            Type::Heartbeat(h) => assert!(h, "the server's heartbeat is true"),
            Type::Connected(_) => {}
            Type::Connect(_) => panic!("the server sent a connect"),
        }
    }
}

fn encode(t: Type) -> Bytes {
    Bytes::from(Message { r#type: Some(t) }.encode_to_vec())
}

fuzz_target!(|data: &[u8]| {
    let long_key = [b'k'; 513];
    let keys: [&[u8]; 4] = [b"a", b"b", b"", &long_key];
    let mut input = Input(data);
    let mut w = World {
        hub: Hub::new(u64::from(data.first().copied().unwrap_or(0))),
        generation: [0; SLOTS],
        live: [false; SLOTS],
        seen_ids: Vec::new(),
        effects: Vec::new(),
    };
    while !input.0.is_empty() {
        let op = input.byte();
        let slot = usize::from(op >> 3) % SLOTS;
        let id = w.conn(slot);
        match op & 7 {
            0 => {
                let arg = input.byte();
                // A live peer on the slot is replaced: the hub forgets it as if it had gone.
                w.live[slot] = true;
                w.generation[slot] += 1;
                let id = w.conn(slot);
                let key = keys[usize::from(arg & 3)];
                w.step(|hub, out| hub.on_open(id, key, arg & 4 != 0, out));
            }
            1 => {
                let n = usize::from(input.byte());
                let frame = Bytes::copy_from_slice(input.bytes(n));
                w.step(|hub, out| hub.on_message(id, frame, out));
            }
            2 => {
                let member_id = u32::from(input.byte() % 8);
                let count = input.byte() % 4;
                let members = (0..count).map(|_| u32::from(input.byte() % 8)).collect();
                let frame = encode(Type::Connect(GroupData {
                    id: member_id,
                    members,
                }));
                w.step(|hub, out| hub.on_message(id, frame, out));
            }
            3 => {
                let recipient_id = match input.byte() {
                    0 => 0,
                    255 => u32::from_le_bytes(std::array::from_fn(|_| input.byte())),
                    r if w.seen_ids.is_empty() => u32::from(r),
                    r => w.seen_ids[usize::from(r) % w.seen_ids.len()],
                };
                let flags = input.byte();
                let data = Bytes::copy_from_slice(input.bytes(usize::from(flags >> 1)));
                let frame = encode(Type::Content(Content {
                    sender_id: 0,
                    recipient_id,
                    last_data: flags & 1 != 0,
                    data,
                }));
                w.step(|hub, out| hub.on_message(id, frame, out));
            }
            4 => {
                let frame = encode(Type::Heartbeat(input.byte() & 1 != 0));
                w.step(|hub, out| hub.on_message(id, frame, out));
            }
            5 => w.step(|hub, out| hub.on_heartbeat_due(id, out)),
            6 => {
                w.live[slot] = false;
                w.step(|hub, out| hub.on_close(id, out));
            }
            _ => w.step(|hub, out| hub.close(id, CloseReason::SendQueueFull, out)),
        }
    }
});
