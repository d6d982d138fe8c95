//! Scale-out probe for `deploy/test-scale-out.sh`: talks to a proxy (nginx or HAProxy) in front
//! of several sigver instances, and to each instance directly, with a real WebSocket client.
//!
//! It proves the property that makes scale-out safe: every peer of a key, whatever its query
//! string, lands on the one instance that holds the key's group, and keys spread over all
//! instances. One line per check (`PASS ...` or `FAIL ...: why`); the script counts them.
//!
//! Usage: `scale-probe PROXY_ADDR INSTANCE_ADDR... [--keys N]` (prints `HOLDS i KEY` lines
//! too), `scale-probe --status ADDR PATH` (the HTTP status of one upgrade attempt),
//! `scale-probe --slow-reader ADDR MIB` (a reader that never reads, fed MIB MiB, while a pair
//! keeps relaying: `dist/test.sh` runs it against the image under a memory cap), or
//! `scale-probe --free-port`.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use sigver::proto::{Content, GroupData, Message, Type};
use tungstenite::{Message as WsMessage, WebSocket};

/// Longest wait for any one answer: a missing answer is a failure, never a hang.
const WAIT: Duration = Duration::from_secs(5);

/// Query strings of the two peers of a key, rotated over the keys: a `?favored` bot and a
/// browser must meet whichever comes first, and no query may change the instance.
const QUERIES: [&str; 4] = ["?favored", "", "?favored=1", "?room=x&favored"];

type Probe<T> = Result<T, String>;

struct Peer(WebSocket<TcpStream>);

impl Peer {
    fn open(addr: SocketAddr, path: &str) -> Probe<Self> {
        let stream = TcpStream::connect_timeout(&addr, WAIT).map_err(|e| format!("{addr}: {e}"))?;
        stream
            .set_read_timeout(Some(WAIT))
            .map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let url = format!("ws://{addr}{path}");
        let (ws, _) =
            tungstenite::client(url.as_str(), stream).map_err(|e| format!("upgrade {url}: {e}"))?;
        Ok(Self(ws))
    }

    fn send(&mut self, t: Type) -> Probe<()> {
        let bytes = Message { r#type: Some(t) }.encode_to_vec();
        self.0
            .send(WsMessage::Binary(bytes.into()))
            .map_err(|e| format!("send: {e}"))
    }

    /// The next message that is not a heartbeat.
    fn recv(&mut self) -> Probe<Type> {
        loop {
            match self.0.read().map_err(|e| format!("read: {e}"))? {
                WsMessage::Binary(b) => match Message::decode(b.as_ref()) {
                    Ok(Message {
                        r#type: Some(Type::Heartbeat(_)),
                    }) => {}
                    Ok(Message { r#type: Some(t) }) => return Ok(t),
                    _ => return Err("undecodable message".into()),
                },
                WsMessage::Close(f) => return Err(format!("closed by the server: {f:?}")),
                _ => {}
            }
        }
    }

    /// Sends `connect {id}` with no members and returns the `connected` answer.
    fn join(&mut self, id: u32) -> Probe<bool> {
        let members = vec![];
        self.send(Type::Connect(GroupData { id, members }))?;
        match self.recv()? {
            Type::Connected(c) => Ok(c),
            other => Err(format!("expected connected, got {other:?}")),
        }
    }

    fn content(&mut self, recipient_id: u32, data: &[u8]) -> Probe<()> {
        self.send(Type::Content(Content {
            sender_id: 0,
            recipient_id,
            last_data: false,
            data: data.to_vec().into(),
        }))
    }

    fn recv_content(&mut self) -> Probe<Content> {
        match self.recv()? {
            Type::Content(c) => Ok(c),
            other => Err(format!("expected content, got {other:?}")),
        }
    }

    /// Reads everything queued for this peer until the server's close: its code, or what ended
    /// the read.
    fn close_code(&mut self) -> String {
        loop {
            match self.0.read() {
                Ok(WsMessage::Close(Some(f))) => return u16::from(f.code).to_string(),
                Ok(WsMessage::Close(None)) => return "close without code".into(),
                Ok(_) => {}
                Err(e) => return format!("open ({e})"),
            }
        }
    }

    /// Closes and waits for the server's answer, so the group is gone before the next probe.
    fn close(mut self) {
        let _ = self.0.close(None);
        while self.0.read().is_ok() {}
    }
}

/// Two peers of `key` through the proxy: the first founds the group, the second is bound to
/// it (`connected: false`) and they relay both ways. Returns both, still open.
fn meet(proxy: SocketAddr, key: &str, first_q: &str, second_q: &str) -> Probe<(Peer, Peer)> {
    let mut first = Peer::open(proxy, &format!("/{key}{first_q}"))?;
    if !first.join(1)? {
        return Err("the first peer did not found the group".into());
    }
    let mut second = Peer::open(proxy, &format!("/{key}{second_q}"))?;
    if second.join(2)? {
        return Err("the second peer got connected: true: it reached another instance".into());
    }
    second.content(0, b"offer")?;
    let got = first.recv_content()?;
    if got.data.as_ref() != b"offer" || got.sender_id == 0 {
        return Err(format!("the first peer got {got:?}"));
    }
    first.content(got.sender_id, b"answer")?;
    let back = second.recv_content()?;
    if back.data.as_ref() != b"answer" || back.recipient_id != got.sender_id {
        return Err(format!("the second peer got {back:?}"));
    }
    Ok((first, second))
}

/// Asks every instance directly: the one holding `key`'s group binds a newcomer
/// (`connected: false`), the others found a new group (`true`, gone when the probe closes).
fn holders(instances: &[SocketAddr], key: &str) -> Probe<Vec<usize>> {
    let mut found = Vec::new();
    for (i, addr) in instances.iter().enumerate() {
        let mut probe = Peer::open(*addr, &format!("/{key}"))?;
        if !probe.join(99)? {
            found.push(i);
        }
        probe.close();
    }
    Ok(found)
}

fn check(passed: &mut usize, failed: &mut usize, what: &str, result: Probe<()>) {
    match result {
        Ok(()) => {
            *passed += 1;
            println!("PASS {what}");
        }
        Err(why) => {
            *failed += 1;
            println!("FAIL {what}: {why}");
        }
    }
}

/// Keys as applications make them, plus percent-encoded and slashed ones: the proxy must
/// route on the raw path exactly as sigver keys groups (docs/PROTOCOL.md §1).
fn keys(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i % 3 {
            0 => format!("room-{i}"),
            1 => format!("%D0%9F%D0%BE-{i}"),
            _ => format!("app/{i}/chat"),
        })
        .collect()
}

/// `--free-port`: a port the kernel had free a moment ago (the caller retries if it is taken
/// before its server binds it).
fn free_port() -> Probe<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

/// `--status ADDR PATH`: 101 when the upgrade succeeds, else the proxy's answer (502, 503).
fn upgrade_status(addr: &str, path: &str) -> Probe<u16> {
    let addr: SocketAddr = addr.parse().map_err(|_| format!("bad address {addr}"))?;
    let stream = TcpStream::connect_timeout(&addr, WAIT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(WAIT))
        .map_err(|e| e.to_string())?;
    match tungstenite::client(format!("ws://{addr}{path}").as_str(), stream) {
        Ok((ws, response)) => {
            Peer(ws).close();
            Ok(response.status().as_u16())
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            Ok(response.status().as_u16())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// A TCP connection to `addr` from the loopback address `src` (127.0.0.2, 127.0.0.3, ...),
/// so that a proxy sees distinct clients on one machine.
fn connect_from(src: std::net::Ipv4Addr, addr: SocketAddr) -> Probe<TcpStream> {
    use std::os::fd::FromRawFd;
    let err = |what: &str| format!("{what} from {src}: {}", std::io::Error::last_os_error());
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let SocketAddr::V4(to) = addr else {
        return Err(format!("{addr} is not IPv4"));
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor made here, with addresses we own; the
    // descriptor is handed to a TcpStream, which closes it, or closed on failure.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return Err(err("socket"));
        }
        let from = sockaddr(src, 0);
        let to = sockaddr(*to.ip(), to.port());
        if libc::bind(fd, (&from as *const libc::sockaddr_in).cast(), len) != 0
            || libc::connect(fd, (&to as *const libc::sockaddr_in).cast(), len) != 0
        {
            let e = err("connect");
            libc::close(fd);
            return Err(e);
        }
        Ok(TcpStream::from_raw_fd(fd))
    }
}

/// Opens `n` upgrades to `addr` from `src` and keeps them open; the status of each.
fn statuses_from(src: &str, addr: &str, path: &str, n: usize) -> Probe<String> {
    let src: std::net::Ipv4Addr = src.parse().map_err(|_| format!("bad source {src}"))?;
    let addr: SocketAddr = addr.parse().map_err(|_| format!("bad address {addr}"))?;
    let mut held = Vec::new();
    let mut statuses = Vec::new();
    for _ in 0..n {
        let stream = connect_from(src, addr)?;
        stream
            .set_read_timeout(Some(WAIT))
            .map_err(|e| e.to_string())?;
        match tungstenite::client(format!("ws://{addr}{path}").as_str(), stream) {
            Ok((ws, response)) => {
                statuses.push(response.status().as_u16().to_string());
                held.push(ws);
            }
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
                statuses.push(response.status().as_u16().to_string());
            }
            Err(e) => statuses.push(format!("error({e})")),
        }
    }
    Ok(statuses.join(" "))
}

/// `--slow-reader ADDR MIB`: a member that never reads, and a joiner bound to it that sends it
/// `mib` MiB in messages of 1 MiB; when the server closes either (a limit), a new pair takes
/// over until all is sent. Meanwhile another pair relays a round trip every 20 ms: every one
/// must succeed, and the server must still relay afterwards.
fn slow_reader(addr: &str, mib: usize) -> Probe<String> {
    let addr: SocketAddr = addr.parse().map_err(|_| format!("bad address {addr}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let steady = {
        let stop = Arc::clone(&stop);
        let (mut a, mut b) = meet(addr, "steady", "", "")?;
        std::thread::spawn(move || -> Probe<(usize, Duration)> {
            let (mut trips, mut worst) = (0, Duration::ZERO);
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                b.content(0, b"ping")?;
                let got = a.recv_content()?;
                a.content(got.sender_id, b"pong")?;
                b.recv_content()?;
                worst = worst.max(t0.elapsed());
                trips += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok((trips, worst))
        })
    };
    let chunk = vec![0x5a_u8; 1 << 20];
    let (mut sent, mut pairs, mut readers) = (0, 0, Vec::new());
    while sent < mib {
        let mut reader = Peer::open(addr, "/slow")?;
        reader.join(1)?;
        let mut feeder = Peer::open(addr, "/slow")?;
        if feeder.join(2)? {
            return Err("the feeder was not bound to the slow reader".into());
        }
        pairs += 1;
        while sent < mib && feeder.content(0, &chunk).is_ok() {
            sent += 1;
        }
        readers.push(reader);
    }
    // Readers only now look at what they got: the close the server sent them, if any.
    let closes: Vec<String> = readers.into_iter().map(|mut r| r.close_code()).collect();
    stop.store(true, Ordering::Relaxed);
    let (trips, worst) = steady
        .join()
        .map_err(|_| "the relaying pair's thread panicked".to_string())?
        .map_err(|e| format!("the relaying pair failed during the feed: {e}"))?;
    let (after, _) =
        meet(addr, "after", "", "").map_err(|e| format!("no relay after the feed: {e}"))?;
    after.close();
    Ok(format!(
        "fed {sent} MiB through {pairs} slow reader(s), closed with [{}]; \
         {trips} round trips of the other pair during the feed, the slowest {} ms",
        closes.join(", "),
        worst.as_millis()
    ))
}

/// The main run: meet, hold and spread checks over `n_keys` keys.
fn run(proxy: SocketAddr, instances: &[SocketAddr], n_keys: usize) -> bool {
    let (mut passed, mut failed) = (0, 0);
    let mut per_instance: BTreeMap<usize, usize> = BTreeMap::new();
    for (i, key) in keys(n_keys).iter().enumerate() {
        let (q1, q2) = (QUERIES[i % QUERIES.len()], QUERIES[(i + 1) % QUERIES.len()]);
        let what = format!("'/{key}{q1}' and '/{key}{q2}' meet and relay through the proxy");
        let met = meet(proxy, key, q1, q2);
        let result = met.as_ref().map(|_| ()).map_err(Clone::clone);
        check(&mut passed, &mut failed, &what, result);
        let Ok((first, second)) = met else { continue };
        // Asked while the group is open: its holder answers `connected: false`.
        let what = format!("exactly one instance holds '{key}'");
        let held = holders(instances, key).and_then(|found| match found[..] {
            [one] => {
                *per_instance.entry(one).or_default() += 1;
                println!("HOLDS {one} {key}");
                Ok(())
            }
            _ => Err(format!("held by instances {found:?}")),
        });
        check(&mut passed, &mut failed, &what, held);
        second.close();
        first.close();
    }
    let what = format!(
        "{n_keys} keys spread over all {} instances",
        instances.len()
    );
    let spread = if per_instance.len() == instances.len() {
        Ok(())
    } else {
        Err(format!("only {} used", per_instance.len()))
    };
    check(&mut passed, &mut failed, &what, spread);
    let counts: Vec<String> = (0..instances.len())
        .map(|i| format!("{}={}", instances[i], per_instance.get(&i).unwrap_or(&0)))
        .collect();
    println!("groups per instance: {}", counts.join(" "));
    failed == 0
}

const USAGE: &str = "usage: scale-probe PROXY_ADDR INSTANCE_ADDR... [--keys N]
       scale-probe --status ADDR PATH
       scale-probe --statuses-from SRC ADDR PATH N
       scale-probe --slow-reader ADDR MIB
       scale-probe --free-port";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let printed = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["--free-port"] => Some(free_port().map(|p| p.to_string())),
        ["--status", addr, path] => Some(upgrade_status(addr, path).map(|s| s.to_string())),
        ["--statuses-from", src, addr, path, n] => match n.parse() {
            Ok(n) => Some(statuses_from(src, addr, path, n)),
            Err(_) => Some(Err(format!("bad count {n}"))),
        },
        ["--slow-reader", addr, mib] => match mib.parse() {
            Ok(mib) => Some(slow_reader(addr, mib)),
            Err(_) => Some(Err(format!("bad size {mib}"))),
        },
        _ => None,
    };
    if let Some(result) = printed {
        return match result {
            Ok(n) => {
                println!("{n}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("scale-probe: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let mut n_keys = 30;
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let ok = if a == "--keys" {
            it.next().and_then(|n| n.parse().ok()).map(|n| n_keys = n)
        } else {
            a.parse().ok().map(|addr| addrs.push(addr))
        };
        if ok.is_none() {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    }
    if addrs.len() < 2 {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    if run(addrs[0], &addrs[1..], n_keys) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
