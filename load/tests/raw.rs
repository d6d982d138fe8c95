//! The reference relay, as scripts use it: the built `sigver-load raw-server` runs as a child
//! process on a free loopback port (read from its one line of output), `relay --url raw://`
//! loads it, and hand-made clients speak its framing over blocking sockets: the join and its
//! answer, contents both ways, and frames that break the rules.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod common;
use common::{check_json, check_latency, finish, json_run, num, spawn_tool};

/// `raw-server` in a child process, killed when dropped.
struct RawServer {
    child: Child,
    addr: SocketAddr,
}

impl RawServer {
    fn start() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sigver-load"))
            .args(["raw-server", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start raw-server");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the address line");
        let addr = line.trim().parse().expect("an address");
        Self { child, addr }
    }

    fn url(&self) -> String {
        format!("raw://{}", self.addr)
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A hand-made client of the raw framing (docs in load/src/rawproto.rs).
struct Client(TcpStream);

impl Client {
    /// Connects and sends `first` as the first frame's body (a group key, when valid).
    fn join(server: &RawServer, first: &[u8]) -> Self {
        let s = TcpStream::connect(server.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut c = Self(s);
        c.send_frame(first);
        c
    }

    fn send_frame(&mut self, body: &[u8]) {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        self.0.write_all(&frame).expect("write");
    }

    fn send(&mut self, dest: u32, payload: &[u8]) {
        let mut body = dest.to_be_bytes().to_vec();
        body.extend_from_slice(payload);
        self.send_frame(&body);
    }

    /// The next frame's body.
    fn recv(&mut self) -> Vec<u8> {
        let mut len = [0; 4];
        self.0.read_exact(&mut len).expect("a frame");
        let mut body = vec![0; u32::from_be_bytes(len) as usize];
        self.0.read_exact(&mut body).expect("a whole frame");
        body
    }

    /// The join answer: `(id, member)`.
    fn joined(&mut self) -> (u32, u32) {
        let body = self.recv();
        assert_eq!(body.len(), 8, "{body:?}");
        let word = |i: usize| u32::from_be_bytes([body[i], body[i + 1], body[i + 2], body[i + 3]]);
        (word(0), word(4))
    }

    /// Reads what is left until the server hangs up; returns the bytes read. Panics if the
    /// connection is still open after the read timeout.
    fn until_closed(&mut self) -> usize {
        let mut buf = vec![0; 64 * 1024];
        let mut total = 0;
        loop {
            match self.0.read(&mut buf) {
                Ok(0) => return total,
                Ok(n) => total += n,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return total,
                Err(e) => panic!("still open ({e}) after {total} bytes"),
            }
        }
    }
}

/// A closed-loop relay and an open-loop one over raw:// are clean runs: contents relayed,
/// every one answered, in order (the tool counts an answer out of order as an error), and the
/// server's CPU read through --pid.
#[test]
fn relay_over_raw() {
    let server = RawServer::start();
    let v = json_run(
        &format!(
            "relay --url {} --pairs 3 --window 2 --seconds 1 --warmup 0.2 --pid {}",
            server.url(),
            server.child.id()
        ),
        None,
    );
    assert!(num(&v, "relayed") > 100.0, "{v}");
    assert_eq!(num(&v, "answered"), num(&v, "sent"), "{v}");
    assert_eq!(num(&v, "unanswered"), 0.0, "{v}");
    assert!(check_latency(&v, "rtt_us") >= num(&v, "answered"), "{v}");
    assert!(num(&v, "server_cpu") > 0.0, "{v}");

    let v = json_run(
        &format!(
            "relay --url {} --pairs 4 --rate 2000 --seconds 1 --warmup 0.2",
            server.url()
        ),
        None,
    );
    let sent = num(&v, "sent");
    assert!((1990.0..=2010.0).contains(&sent), "{v}");
    assert_eq!(num(&v, "answered"), sent, "{v}");
}

/// The join gives ids per group (the first is the member), a content reaches its peer with
/// the sender's id, and each kind of broken frame closes its own connection only, while a
/// load run and a hand-made pair go on relaying.
#[test]
fn bad_frames_close_only_their_connection() {
    let server = RawServer::start();
    let line = format!(
        "relay --url {} --pairs 2 --window 2 --seconds 1.5 --warmup 0.2 --json",
        server.url()
    );
    let run = spawn_tool(&line, None);
    let mut member = Client::join(&server, b"hand");
    assert_eq!(member.joined(), (1, 0));
    let mut joiner = Client::join(&server, b"hand");
    assert_eq!(joiner.joined(), (2, 1));

    // A length prefix past the largest frame, after a good join.
    let mut c = Client::join(&server, b"bad");
    assert_eq!(c.joined(), (1, 0));
    c.0.write_all(&[0xff; 4]).expect("write");
    assert_eq!(c.until_closed(), 0);
    // An empty key, a key over 512 bytes, a content shorter than its destination id.
    Client::join(&server, b"").until_closed();
    Client::join(&server, &[b'k'; 513]).until_closed();
    let mut c = Client::join(&server, b"short");
    c.joined();
    c.send_frame(&[0, 1]);
    assert_eq!(c.until_closed(), 0);

    joiner.send(1, b"offer");
    assert_eq!(member.recv(), b"\0\0\0\x02offer");
    member.send(2, b"answer");
    assert_eq!(joiner.recv(), b"\0\0\0\x01answer");
    let out = finish(run);
    let v = check_json(&line, &out);
    assert!(num(&v, "relayed") > 100.0, "{v}");
}

/// A peer that reads nothing is dropped once its queue passes the bound: it gets far less
/// than was sent to it, then the end of the stream, and its sender is not held up.
#[test]
fn a_peer_that_does_not_read_is_dropped() {
    let server = RawServer::start();
    let mut member = Client::join(&server, b"slow");
    assert_eq!(member.joined(), (1, 0));
    let mut joiner = Client::join(&server, b"slow");
    assert_eq!(joiner.joined(), (2, 1));
    let mib = vec![7u8; 1 << 20];
    for _ in 0..48 {
        joiner.send(1, &mib);
    }
    let got = member.until_closed();
    assert!(got < 24 << 20, "{got} bytes of 48 MiB");
}
