//! Helpers shared by the integration tests: an in-process server on a free loopback port, and
//! a blocking WebSocket client (tungstenite's own) that speaks the sigver messages.

#![allow(dead_code)] // each test binary uses a different part

pub mod binary;
pub mod messages;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prost::Message as _;
use sigver::proto::{Content, GroupData, Message, Type};
use sigver::{Config, Handle, Server};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message as WsMessage, WebSocket};

/// Longest a test waits for anything it expects.
pub const WAIT: Duration = Duration::from_secs(5);

/// A server running on its own thread, stopped when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    handle: Handle,
    thread: Option<JoinHandle<Result<(), sigver::Error>>>,
}

impl TestServer {
    /// Default settings, on 127.0.0.1 with a free port, and heartbeats slow enough not to
    /// interfere with a test.
    pub fn start() -> Self {
        Self::with(|_| {})
    }

    /// Like `start`, after `tune` changed the configuration.
    pub fn with(tune: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config {
            addr: "127.0.0.1:0".parse().unwrap(),
            heartbeat_interval: Duration::from_secs(60),
            ..Config::default()
        };
        tune(&mut config);
        let server = Server::bind(config).expect("bind");
        let addr = server.local_addr();
        let handle = server.handle();
        let thread = std::thread::spawn(move || server.run());
        Self {
            addr,
            handle,
            thread: Some(thread),
        }
    }

    /// Asks the server to stop without waiting for it.
    pub fn begin_stop(&self) {
        self.handle.shutdown();
    }

    /// Asks the server to read its TLS files again, as SIGHUP does.
    pub fn reload_tls(&self) {
        self.handle.reload_tls();
    }

    /// What the server holds now (as of its last loop turn).
    pub fn stats(&self) -> sigver::Stats {
        self.handle.stats()
    }

    /// Waits until the server holds nothing: no connection, peer, group or queued byte.
    pub fn assert_empty(&self) {
        let empty = eventually(|| self.stats() == sigver::Stats::default());
        assert!(empty, "the server still holds {:?}", self.stats());
    }

    /// Opens a peer on `path` (for example `/key?favored`).
    pub fn peer(&self, path: &str) -> Peer {
        Peer::connect(self.addr, path)
    }

    /// Stops the server and waits for `run` to return. A server thread that panicked fails
    /// the test here.
    pub fn stop(&mut self) -> Result<(), sigver::Error> {
        self.handle.shutdown();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => panic!("the server thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.handle.shutdown();
        let Some(thread) = self.thread.take() else {
            return;
        };
        let result = thread.join();
        // A second panic while a failing test unwinds would abort the whole test binary.
        if !std::thread::panicking() {
            match result {
                Ok(run) => run.expect("server run failed"),
                Err(_) => panic!("the server thread panicked"),
            }
        }
    }
}

/// A sigver client over a real WebSocket.
pub struct Peer {
    pub ws: WebSocket<TcpStream>,
}

/// How a connection ended, as the client saw it.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed {
    pub code: u16,
    pub reason: String,
}

impl Peer {
    pub fn connect(addr: SocketAddr, path: &str) -> Self {
        let stream = TcpStream::connect(addr).expect("tcp connect");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let url = format!("ws://{addr}{path}");
        let (ws, response) = tungstenite::client(url.as_str(), stream).expect("upgrade");
        assert_eq!(response.status(), 101);
        Self { ws }
    }

    /// Sends one message of the sigver protocol.
    pub fn send(&mut self, t: Type) {
        let bytes = Message { r#type: Some(t) }.encode_to_vec();
        self.send_raw(bytes);
    }

    /// Sends raw bytes as one binary frame.
    pub fn send_raw(&mut self, bytes: impl Into<tungstenite::Bytes>) {
        self.ws.send(WsMessage::Binary(bytes.into())).expect("send");
    }

    pub fn connect_group(&mut self, id: u32, members: &[u32]) {
        self.send(Type::Connect(GroupData {
            id,
            members: members.to_vec(),
        }));
    }

    /// Sends `connect` and returns the `connected` answer.
    pub fn join(&mut self, id: u32, members: &[u32]) -> bool {
        self.connect_group(id, members);
        match self.recv() {
            Type::Connected(c) => c,
            other => panic!("expected connected, got {other:?}"),
        }
    }

    pub fn content(&mut self, recipient_id: u32, data: &[u8], last_data: bool) {
        self.send(Type::Content(Content {
            sender_id: 0,
            recipient_id,
            last_data,
            data: data.to_vec().into(),
        }));
    }

    /// The next binary frame, raw. Panics on anything else.
    pub fn recv_raw(&mut self) -> Vec<u8> {
        loop {
            match self.ws.read() {
                Ok(WsMessage::Binary(b)) => return b.to_vec(),
                Ok(WsMessage::Ping(_) | WsMessage::Pong(_)) => {}
                other => panic!("expected a binary frame, got {other:?}"),
            }
        }
    }

    /// The next message, heartbeats included.
    pub fn recv_any(&mut self) -> Type {
        let raw = self.recv_raw();
        Message::decode(raw.as_slice())
            .expect("server sent an invalid message")
            .r#type
            .expect("server sent an empty message")
    }

    /// The next message that is not a heartbeat.
    pub fn recv(&mut self) -> Type {
        loop {
            match self.recv_any() {
                Type::Heartbeat(_) => {}
                t => return t,
            }
        }
    }

    /// The next message, which must be a content: (senderId, recipientId, data).
    pub fn recv_content(&mut self) -> (u32, u32, Vec<u8>) {
        match self.recv() {
            Type::Content(c) => {
                assert!(!c.last_data, "lastData must never be forwarded");
                (c.sender_id, c.recipient_id, c.data.to_vec())
            }
            other => panic!("expected content, got {other:?}"),
        }
    }

    /// Asserts that nothing but heartbeats arrives for `d`.
    pub fn expect_silence(&mut self, d: Duration) {
        self.ws.get_mut().set_read_timeout(Some(d)).unwrap();
        let start = Instant::now();
        loop {
            match self.ws.read() {
                Ok(WsMessage::Binary(b)) if b.as_ref() == [0x08, 0x01] => {}
                Ok(WsMessage::Ping(_) | WsMessage::Pong(_)) => {}
                // A signal a test sends to this process (SIGHUP) may cut the wait short.
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                other => panic!("expected silence, got {other:?}"),
            }
            if start.elapsed() >= d {
                break;
            }
        }
        self.ws.get_mut().set_read_timeout(Some(WAIT)).unwrap();
    }

    /// Reads until the server closes; returns its close frame. Heartbeats are skipped,
    /// anything else is a failure.
    pub fn expect_close(&mut self) -> Closed {
        loop {
            match self.ws.read() {
                Ok(WsMessage::Close(Some(f))) => {
                    // Complete the handshake so the server can let go.
                    let _ = self.ws.flush();
                    return Closed {
                        code: u16::from(f.code),
                        reason: f.reason.to_string(),
                    };
                }
                Ok(WsMessage::Close(None)) => panic!("close frame without a code"),
                Ok(WsMessage::Binary(b)) if b.as_ref() == [0x08, 0x01] => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }

    /// Closes normally and waits for the server's answer, so the server has seen the close.
    pub fn close(mut self) {
        let _ = self.ws.close(Some(tungstenite::protocol::CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }));
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
}

/// Sends raw bytes over a fresh TCP connection and returns everything the server answers
/// until it closes the connection (or `WAIT` passes).
pub fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    answer
}

/// Polls `cond` until it holds or `WAIT` passes.
pub fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Opens a member that founds the group of `path` (id 1) and a joiner bound to it (id 2):
/// `(member, joiner)`. Nothing is sent after the two `connected` answers.
pub fn member_and_joiner(server: &TestServer, path: &str) -> (Peer, Peer) {
    let mut member = server.peer(path);
    assert!(
        member.join(1, &[]),
        "{path}: the first peer founds the group"
    );
    let mut joiner = server.peer(path);
    assert!(!joiner.join(2, &[]), "{path}: no member in common, bound");
    (member, joiner)
}

/// `member_and_joiner`, then the joiner sends `first` and the member reads it. Returns the
/// member, the joiner, and what the member read as (senderId, recipientId, data), for the
/// caller to check.
pub fn meet(server: &TestServer, path: &str, first: &[u8]) -> (Peer, Peer, (u32, u32, Vec<u8>)) {
    let (mut member, mut joiner) = member_and_joiner(server, path);
    joiner.content(0, first, false);
    let read = member.recv_content();
    (member, joiner, read)
}

/// A member and a joiner bound to it, that have exchanged once.
pub struct Pair {
    pub member: Peer,
    pub joiner: Peer,
    /// The joiner's signaling id, as the member sees it.
    pub s: u32,
}

impl Pair {
    /// `meet` with a first message nobody looks at.
    pub fn new(server: &TestServer, path: &str) -> Self {
        let (member, joiner, (s, _, _)) = meet(server, path, b"hello");
        Self { member, joiner, s }
    }

    /// Relays `n` messages each way and checks every one.
    pub fn relay(&mut self, n: usize) {
        for i in 0..n {
            let data = format!("candidate {i}");
            self.joiner.content(0, data.as_bytes(), false);
            assert_eq!(
                self.member.recv_content(),
                (self.s, 0, data.clone().into_bytes())
            );
            self.member.content(self.s, data.as_bytes(), false);
            assert_eq!(self.joiner.recv_content(), (0, self.s, data.into_bytes()));
        }
    }

    /// Closes the joiner, then the member, each waiting for the server's answer.
    pub fn close(self) {
        self.joiner.close();
        self.member.close();
    }
}
