//! sigver-load: a load generator and latency benchmark for any sigver-protocol server (this
//! crate's server or the original Node.js one), on loopback unless told otherwise.
//!
//! It plays many sigver clients at once on one thread (mio, hand-written client framing, no
//! allocation per message) and stops by itself (every run is bounded in time and count). It
//! prints a human summary, or with `--json` one JSON object, and with `--svg FILE` writes the
//! run's latency distribution as a percentile plot. See `--help`, and `benches/compare.py`,
//! which runs every mode against both servers.
//!
//! # Layout
//! - `net`: the connections, the poll loop and the `Handler` each mode implements.
//! - `transport`: the server URL and the byte stream under a connection (TCP, or TLS from
//!   `tls`: rustls over the same non-blocking socket).
//! - `procs`: `--procs K`, the run split over K processes and their results merged.
//! - `ws`, `pb`: WebSocket client framing and the sigver messages, by hand.
//! - `relay`, `idle`, `churn`: the modes; `stats`: histograms, /proc readings, JSON;
//!   `svg`: the percentile plot.
//! - `raw`, `rawproto`: `raw-server`, the reference relay (sigver's routing over
//!   length-prefixed frames), and the framing it shares with the client's `raw://`.

mod churn;
mod idle;
mod net;
mod pb;
mod procs;
mod raw;
mod rawproto;
mod relay;
mod stats;
mod svg;
mod tls;
mod transport;
mod ws;

use std::fs::File;
use std::io::Write as _;
use std::process::ExitCode;

use std::net::Ipv4Addr;

use hdrhistogram::Histogram;
use net::{now_ns, Handler, Net};
use transport::Url;

const HELP: &str = "\
sigver-load: plays many sigver clients against a sigver-protocol server.

USAGE:
  sigver-load MODE --url ws://127.0.0.1:PORT [options]
  sigver-load MODE --url wss://127.0.0.1:PORT --ca ca.pem [options]
  sigver-load relay --url raw://127.0.0.1:PORT [options]
  sigver-load raw-server [--listen 127.0.0.1:PORT]
  cargo run --release -p sigver-load -- MODE --url ws://127.0.0.1:PORT [options]

MODES:
  relay      P member/joiner pairs relaying contents; messages relayed per second
             and round-trip latency (closed loop, or open loop with --rate)
  idle       N connections that join and answer heartbeats; handshakes per second
             and the server's RSS per connection (with --pid)
  churn      sessions: connect, join, one offer, one answer, leave; sessions per
             second (with --members K: K long-lived members, joiners churn)
  selftest   checks the client's framing and messages against tungstenite and the
             server crate's prost types
  raw-server the reference relay for raw:// URLs: sigver's relay routing over
             length-prefixed frames, no WebSocket, no protobuf, one thread;
             prints the address it listens on (one line), runs until SIGTERM
             or SIGINT

COMMON OPTIONS:
  --url URL          ws://HOST:PORT or wss://HOST:PORT of the server (for wss://
                     the certificate must name HOST, a DNS name or an IP address),
                     or raw://HOST:PORT of a raw-server (relay only)
  --remote           allow a HOST that is not a loopback address (only ever a
                     server of yours: the load is what an attack would send)
  --pid PID          the server's process id: RSS and CPU time are read from /proc
  --seconds S        measured time [relay 10, churn 10]
  --warmup S         unmeasured time before it [1]
  --tag TEXT         prefix of the group keys [a per-run nonce]
  --source-addrs N   bind connections to 127.0.0.1 .. 127.0.0.N in turn (or a
                     list: 127.0.0.1,127.0.0.5), for more than one address's
                     ephemeral ports; loopback servers only [the kernel's choice]
  --procs K          split the run over K processes (at most 64), each with its
                     share of pairs, connections or sessions and of the rate, and
                     merge their results (latency percentiles exactly) [1]
                     (each is this program with --share I/K, which prints its
                     result with its histogram's buckets)
  --json             print the result as one JSON object (and nothing else) on stdout
  --svg FILE         write the latency distribution (round trips, handshakes or
                     sessions) as an SVG percentile plot with p50, p99 and p99.9 marked

TLS (wss://):
  --ca FILE          PEM certificate(s) to trust: the server's CA, or a throwaway
                     self-made one
  --insecure         do not verify the server's certificate (for benchmarks only:
                     anyone in the middle could read and change the traffic)
  --resume           keep TLS sessions and resume them on later connections (one
                     session cache for the run); off: every handshake is full

RELAY:
  --pairs P          member/joiner pairs, each on its own key [10]
  --window W         contents in flight per pair, closed loop [1]
  --rate R           open loop: R contents per second in all (each is a round
                     trip: two messages relayed); 0 = closed loop [0]
  --bytes B          data bytes per content, at least 8 [200]
  --drain S          after the window, longest wait for answers in flight [3]
                     SIGUSR1 ends the window early (then --seconds is its longest
                     length, and `seconds` in the result the one it had); with
                     --procs, signal the children

IDLE:
  --conns N          connections [1000]
  --concurrency C    handshakes in progress at once [64]
  --hold S           time to hold them all open (heartbeats every 5 s) [12]

CHURN:
  --concurrency C    sessions at once [32]
  --members K        long-lived members; 0 = each session founds its own group [0]
  --bytes B          offer size [200]
  --max-sessions M   stop starting sessions after M [10000000]

RAW-SERVER:
  --listen ADDR      address to listen on; port 0 picks a free one [127.0.0.1:0]
  --remote           allow an address that is not a loopback one

EXIT STATUS:
  0 the run completed without errors, 1 it did not (see \"ok\" and \"first_error\"),
  2 bad arguments or a failure to start
";

/// Hard caps, so that a typo cannot start an unbounded run.
const MAX_SECONDS: f64 = 3600.0;
const MAX_CONNS: usize = 60_000;

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("sigver-load: {e}");
            ExitCode::from(2)
        }
    }
}

fn seconds(v: f64, name: &str) -> Result<f64, String> {
    if (0.0..=MAX_SECONDS).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{name} {v}: must be between 0 and {MAX_SECONDS}"))
    }
}

fn count(v: usize, name: &str, max: usize) -> Result<usize, String> {
    if (1..=max).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{name} {v}: must be between 1 and {max}"))
    }
}

/// What a finished run hands back: the JSON result, the human summary, the plot.
struct Outcome {
    json: String,
    human: String,
    svg: String,
    completed: bool,
    /// The engine's counters, when this process ran the load itself.
    counts: Option<net::Counters>,
}

/// A run's mode and its settings.
#[derive(Debug, Clone)]
enum Mode {
    Relay(relay::Opts),
    Idle(idle::Opts),
    Churn(churn::Opts),
}

impl Mode {
    fn name(&self) -> &'static str {
        match self {
            Mode::Relay(_) => "relay",
            Mode::Idle(_) => "idle",
            Mode::Churn(_) => "churn",
        }
    }

    /// What its latency histogram holds, as the plot names it.
    fn latency_name(&self) -> &'static str {
        match self {
            Mode::Relay(_) => "round trip",
            Mode::Idle(_) => "handshake",
            Mode::Churn(_) => "session",
        }
    }
}

/// Process `i` of `k` takes its share of the load; an error if a share would be empty.
fn apply_share(mode: &mut Mode, i: usize, k: usize) -> Result<(), String> {
    let part = |total: usize, name: &str| match procs::share(total, i, k) {
        0 => Err(format!(
            "--procs {k}: fewer {name} ({total}) than processes"
        )),
        n => Ok(n),
    };
    match mode {
        Mode::Relay(o) => {
            o.pairs = part(o.pairs, "pairs")?;
            o.rate /= k as f64;
        }
        Mode::Idle(o) => {
            o.conns = part(o.conns, "connections")?;
            o.concurrency = part(o.concurrency, "handshakes at once")?;
        }
        Mode::Churn(o) => {
            o.concurrency = part(o.concurrency, "sessions at once")?;
            if o.members > 0 {
                o.members = part(o.members, "members")?;
            }
            o.max_sessions = (o.max_sessions / k as u64).max(1);
        }
    }
    Ok(())
}

fn run() -> Result<bool, String> {
    let mut args = pico_args::Arguments::from_env();
    if args.contains(["-h", "--help"]) {
        print!("{HELP}");
        return Ok(true);
    }
    let mode: String = args
        .free_from_str()
        .map_err(|_| format!("no mode\n\n{HELP}"))?;
    if mode == "selftest" {
        pb::selftest();
        ws::selftest();
        println!("selftest: framing and messages match tungstenite and prost");
        return Ok(true);
    }
    if mode == "raw-server" {
        return raw_server(args);
    }
    let e = |e: pico_args::Error| e.to_string();
    let url: String = args.value_from_str("--url").map_err(e)?;
    let url = Url::parse(&url, args.contains("--remote"))?;
    if url.framing == transport::Framing::Raw && mode != "relay" {
        // The reference relay has no heartbeats and no sessions: only relay means the same.
        return Err(format!("raw:// URLs are for the relay mode, not {mode}"));
    }
    let tls_opts = tls::TlsOpts {
        ca: args.opt_value_from_str("--ca").map_err(e)?,
        insecure: args.contains("--insecure"),
        resume: args.contains("--resume"),
    };
    let tls_config = match (url.tls, &tls_opts) {
        (true, o) => Some(tls::client_config(o)?),
        (false, o) if o.ca.is_some() || o.insecure || o.resume => {
            return Err("--ca, --insecure and --resume are for wss:// URLs".to_owned())
        }
        (false, _) => None,
    };
    let sources = match args
        .opt_value_from_str::<_, String>("--source-addrs")
        .map_err(e)?
    {
        Some(s) => source_addrs(&s)?,
        None => Vec::new(),
    };
    let target = url.target(tls_config, sources)?;
    let procs = count(opt(&mut args, "--procs", 1)?, "--procs", procs::MAX_PROCS)?;
    let share = match args.opt_value_from_str::<_, String>("--share").map_err(e)? {
        Some(s) => Some(procs::parse_share(&s)?),
        None => None,
    };
    let pid: Option<u32> = args.opt_value_from_str("--pid").map_err(e)?;
    let warmup = seconds(opt(&mut args, "--warmup", 1.0)?, "--warmup")?;
    let secs = seconds(opt(&mut args, "--seconds", 10.0)?, "--seconds")?;
    let json_only = args.contains("--json");
    let svg_path: Option<std::path::PathBuf> = args.opt_value_from_str("--svg").map_err(e)?;
    let prefix: String = args
        .opt_value_from_str("--tag")
        .map_err(e)?
        .unwrap_or_else(|| format!("load{:x}", now_ns() % 0xffff_ffff));
    let tag = prefix.clone();
    let mode = match mode.as_str() {
        "relay" => Mode::Relay(relay::Opts {
            pairs: count(opt(&mut args, "--pairs", 10)?, "--pairs", MAX_CONNS / 2)?,
            window: count(opt(&mut args, "--window", 1)?, "--window", 4096)?,
            rate: opt(&mut args, "--rate", 0.0f64)?.clamp(0.0, 1e7),
            bytes: count(opt(&mut args, "--bytes", 200)?, "--bytes", 1 << 20)?.max(8),
            warmup,
            seconds: secs,
            drain: seconds(opt(&mut args, "--drain", 3.0)?, "--drain")?,
            pid,
            prefix,
        }),
        "idle" => Mode::Idle(idle::Opts {
            conns: count(opt(&mut args, "--conns", 1000)?, "--conns", MAX_CONNS)?,
            concurrency: count(
                opt(&mut args, "--concurrency", 64)?,
                "--concurrency",
                MAX_CONNS,
            )?,
            hold: seconds(opt(&mut args, "--hold", 12.0)?, "--hold")?,
            pid,
            prefix,
        }),
        "churn" => Mode::Churn(churn::Opts {
            concurrency: count(
                opt(&mut args, "--concurrency", 32)?,
                "--concurrency",
                MAX_CONNS / 2,
            )?,
            members: opt(&mut args, "--members", 0usize)?.min(MAX_CONNS / 2),
            bytes: count(opt(&mut args, "--bytes", 200)?, "--bytes", 1 << 20)?,
            warmup,
            seconds: secs,
            max_sessions: opt(&mut args, "--max-sessions", 10_000_000u64)?,
            pid,
            prefix,
        }),
        other => return Err(format!("unknown mode {other:?}\n\n{HELP}")),
    };
    let rest = args.finish();
    if !rest.is_empty() {
        return Err(format!("unknown arguments: {rest:?}"));
    }
    let mut mode = mode;
    match share {
        Some((i, k)) => apply_share(&mut mode, i, k)?,
        // Checked before any process starts: the smallest share must still be a run.
        None if procs > 1 => apply_share(&mut mode.clone(), procs - 1, procs)?,
        None => {}
    }
    // Opened before the run, so that a path that cannot be written fails in a second, not
    // after the whole run.
    let svg_file = match &svg_path {
        Some(p) => Some(File::create(p).map_err(|e| format!("--svg {}: {e}", p.display()))?),
        None => None,
    };
    let tls = target.tls.is_some();
    let out = if procs > 1 && share.is_none() {
        let children = procs::run_children(procs, &tag)?;
        let (merged, hist) = procs::merge(&children, procs);
        let completed = merged.get("ok") == Some(&serde_json::Value::Bool(true));
        let n = |k: &str| {
            merged
                .get(k)
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
        };
        let counts = net::Counters {
            tls_full: n("tls_full_handshakes"),
            tls_resumed: n("tls_resumed_handshakes"),
            tls_failures: n("tls_failures"),
            ..net::Counters::default()
        };
        Outcome {
            human: procs::human(&merged, &hist, procs),
            svg: svg::percentile_plot(
                &format!("{} over {procs} processes", mode.name()),
                mode.latency_name(),
                &hist,
            ),
            json: serde_json::Value::Object(merged).to_string(),
            completed,
            counts: Some(counts),
        }
    } else {
        let mut net = Net::new(target).map_err(|e| format!("cannot start the poll: {e}"))?;
        let child = share.is_some();
        let mut out = match mode {
            Mode::Relay(o) => {
                relay::stop_on_sigusr1()?;
                let limit = SETUP + o.warmup + o.seconds + o.drain + 10.0;
                outcome(
                    &mut net,
                    relay::Relay::new(o),
                    limit,
                    |h, n, c| h.report(n, c),
                    child,
                )?
            }
            Mode::Idle(o) => {
                let limit = SETUP + o.hold + 15.0;
                outcome(
                    &mut net,
                    idle::Idle::new(o),
                    limit,
                    |h, n, c| h.report(n, c),
                    child,
                )?
            }
            Mode::Churn(o) => {
                let limit = SETUP + o.warmup + o.seconds + 20.0;
                outcome(
                    &mut net,
                    churn::Churn::new(o),
                    limit,
                    |h, n, c| h.report(n, c),
                    child,
                )?
            }
        };
        out.counts = Some(net.counters);
        if let Some(e) = &net.tls_error {
            // The reason in rustls' words (an unknown issuer, say): the JSON only counts.
            eprintln!("sigver-load: {e}");
        }
        out
    };
    let mut human = out.human;
    if let (true, Some(c)) = (tls, out.counts) {
        human.push_str(&format!(
            "; TLS handshakes: {} full, {} resumed, {} failed",
            c.tls_full, c.tls_resumed, c.tls_failures
        ));
    }
    let written = svg_file.map(|mut f| f.write_all(out.svg.as_bytes()));
    // The result is printed even when the plot could not be written: the run is not lost.
    if json_only {
        println!("{}", out.json);
    } else {
        println!("{human}");
        if let (Some(p), Some(Ok(()))) = (&svg_path, &written) {
            println!("latency plot: {}", p.display());
        }
    }
    if let (Some(p), Some(Err(e))) = (&svg_path, written) {
        return Err(format!("--svg {}: {e}", p.display()));
    }
    Ok(out.completed && out.json.contains("\"ok\":true"))
}

/// Setting up (connecting, joining) may take this long on top of the measured time (s).
const SETUP: f64 = 60.0;

/// What a mode does besides handling connections: its report, plot and histogram.
trait Report: Handler {
    fn plot(&self) -> String;
    fn hist(&self) -> &Histogram<u64>;
}

macro_rules! report {
    ($($t:ty),*) => {$(
        impl Report for $t {
            fn plot(&self) -> String {
                <$t>::plot(self)
            }
            fn hist(&self) -> &Histogram<u64> {
                <$t>::hist(self)
            }
        }
    )*};
}
report!(relay::Relay, idle::Idle, churn::Churn);

/// Runs one mode to its end; a child of `--procs` adds its histogram's buckets to the JSON.
fn outcome<H: Report>(
    net: &mut Net,
    mut h: H,
    limit: f64,
    report: impl Fn(&H, &Net, bool) -> (String, String),
    buckets: bool,
) -> Result<Outcome, String> {
    let completed = drive(net, &mut h, limit)?;
    let (mut json, human) = report(&h, net, completed);
    if buckets {
        json.pop();
        json.push_str(&format!(",\"hist\":{}}}", stats::buckets(h.hist())));
    }
    Ok(Outcome {
        json,
        human,
        svg: h.plot(),
        completed,
        counts: None,
    })
}

/// `raw-server`: binds, prints the address, and serves until the process is killed.
fn raw_server(mut args: pico_args::Arguments) -> Result<bool, String> {
    let listen = opt(
        &mut args,
        "--listen",
        std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
    )?;
    let remote = args.contains("--remote");
    let rest = args.finish();
    if !rest.is_empty() {
        return Err(format!("unknown arguments: {rest:?}"));
    }
    if !listen.ip().is_loopback() && !remote {
        // An open relay for anyone who can reach it: that must be a choice, not a typo.
        return Err(format!(
            "--listen {listen}: not a loopback address; add --remote to serve other hosts"
        ));
    }
    let server = raw::RawServer::bind(listen).map_err(|e| format!("--listen {listen}: {e}"))?;
    let addr = server
        .local_addr()
        .map_err(|e| format!("--listen {listen}: {e}"))?;
    // One line with the address actually bound, for scripts; stdout is flushed at the newline.
    println!("{addr}");
    server.run().map_err(|e| format!("poll failed: {e}"))?;
    Ok(true)
}

/// `--source-addrs`: a count N (127.0.0.1 .. 127.0.0.N) or a comma-separated list.
fn source_addrs(s: &str) -> Result<Vec<Ipv4Addr>, String> {
    let bad = |why: &str| format!("--source-addrs {s}: {why}");
    let addrs: Vec<Ipv4Addr> = if let Ok(n) = s.parse::<u8>() {
        if !(1..=254).contains(&n) {
            return Err(bad("between 1 and 254 addresses"));
        }
        (1..=n).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect()
    } else {
        s.split(',')
            .map(|a| a.trim().parse::<Ipv4Addr>())
            .collect::<Result<_, _>>()
            .map_err(|_| bad("a count or a list of IPv4 addresses"))?
    };
    if addrs.is_empty() || addrs.iter().any(|a| !a.is_loopback()) {
        return Err(bad("loopback addresses only (127.0.0.0/8)"));
    }
    Ok(addrs)
}

fn opt<T: std::str::FromStr>(
    args: &mut pico_args::Arguments,
    name: &'static str,
    default: T,
) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    Ok(args
        .opt_value_from_str(name)
        .map_err(|e| e.to_string())?
        .unwrap_or(default))
}

fn drive<H: Handler>(net: &mut Net, h: &mut H, limit: f64) -> Result<bool, String> {
    let until = now_ns() + (limit * 1e9) as u64;
    net.run(h, until).map_err(|e| format!("poll failed: {e}"))
}
