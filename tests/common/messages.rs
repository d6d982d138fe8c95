//! The sigver messages over any blocking WebSocket (plain or TLS): what the tests that drive
//! their own streams share.

use std::io::{Read, Write};

use prost::Message as _;
use sigver::proto::{Content, GroupData, Message, Type};
use tungstenite::{Message as WsMessage, WebSocket};

pub fn send<S: Read + Write>(ws: &mut WebSocket<S>, t: Type) {
    let bytes = Message { r#type: Some(t) }.encode_to_vec();
    ws.send(WsMessage::Binary(bytes.into())).unwrap();
}

pub fn recv<S: Read + Write>(ws: &mut WebSocket<S>) -> Type {
    loop {
        match ws.read().expect("read") {
            WsMessage::Binary(b) => match Message::decode(b).unwrap().r#type.unwrap() {
                Type::Heartbeat(_) => {}
                t => return t,
            },
            WsMessage::Ping(_) | WsMessage::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Sends `connect` with `id` and returns the `connected` answer.
pub fn join<S: Read + Write>(ws: &mut WebSocket<S>, id: u32) -> bool {
    let members = vec![];
    send(ws, Type::Connect(GroupData { id, members }));
    match recv(ws) {
        Type::Connected(c) => c,
        other => panic!("expected connected, got {other:?}"),
    }
}

pub fn content<S: Read + Write>(ws: &mut WebSocket<S>, recipient_id: u32, data: &[u8]) {
    let data = data.to_vec().into();
    let (sender_id, last_data) = (0, false);
    send(
        ws,
        Type::Content(Content {
            sender_id,
            recipient_id,
            last_data,
            data,
        }),
    );
}

pub fn recv_content<S: Read + Write>(ws: &mut WebSocket<S>) -> (u32, u32, Vec<u8>) {
    match recv(ws) {
        Type::Content(c) => (c.sender_id, c.recipient_id, c.data.to_vec()),
        other => panic!("expected content, got {other:?}"),
    }
}
