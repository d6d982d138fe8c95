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
//! - `transport`: the server URL and the byte stream under a connection (plain TCP).
//! - `ws`, `pb`: WebSocket client framing and the sigver messages, by hand.
//! - `relay`, `idle`, `churn`: the modes; `stats`: histograms, /proc readings, JSON;
//!   `svg`: the percentile plot.

mod churn;
mod idle;
mod net;
mod pb;
mod relay;
mod stats;
mod svg;
mod transport;
mod ws;

use std::fs::File;
use std::io::Write as _;
use std::process::ExitCode;

use net::{now_ns, Handler, Net};
use transport::Target;

const HELP: &str = "\
sigver-load: plays many sigver clients against a sigver-protocol server.

USAGE:
  sigver-load MODE --url ws://127.0.0.1:PORT [options]
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

COMMON OPTIONS:
  --url URL          ws://HOST:PORT of the server
  --remote           allow a HOST that is not a loopback address (only ever a
                     server of yours: the load is what an attack would send)
  --pid PID          the server's process id: RSS and CPU time are read from /proc
  --seconds S        measured time [relay 10, churn 10]
  --warmup S         unmeasured time before it [1]
  --tag TEXT         prefix of the group keys [a per-run nonce]
  --json             print the result as one JSON object (and nothing else) on stdout
  --svg FILE         write the latency distribution (round trips, handshakes or
                     sessions) as an SVG percentile plot with p50, p99 and p99.9 marked

RELAY:
  --pairs P          member/joiner pairs, each on its own key [10]
  --window W         contents in flight per pair, closed loop [1]
  --rate R           open loop: R contents per second in all (each is a round
                     trip: two messages relayed); 0 = closed loop [0]
  --bytes B          data bytes per content, at least 8 [200]
  --drain S          after the window, longest wait for answers in flight [3]

IDLE:
  --conns N          connections [1000]
  --concurrency C    handshakes in progress at once [64]
  --hold S           time to hold them all open (heartbeats every 5 s) [12]

CHURN:
  --concurrency C    sessions at once [32]
  --members K        long-lived members; 0 = each session founds its own group [0]
  --bytes B          offer size [200]
  --max-sessions M   stop starting sessions after M [10000000]

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
    let e = |e: pico_args::Error| e.to_string();
    let url: String = args.value_from_str("--url").map_err(e)?;
    let target = Target::parse(&url, args.contains("--remote"))?;
    let pid: Option<u32> = args.opt_value_from_str("--pid").map_err(e)?;
    let warmup = seconds(opt(&mut args, "--warmup", 1.0)?, "--warmup")?;
    let secs = seconds(opt(&mut args, "--seconds", 10.0)?, "--seconds")?;
    let json_only = args.contains("--json");
    let svg_path: Option<std::path::PathBuf> = args.opt_value_from_str("--svg").map_err(e)?;
    let prefix: String = args
        .opt_value_from_str("--tag")
        .map_err(e)?
        .unwrap_or_else(|| format!("load{:x}", now_ns() % 0xffff_ffff));
    enum Mode {
        Relay(relay::Opts),
        Idle(idle::Opts),
        Churn(churn::Opts),
    }
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
    // Opened before the run, so that a path that cannot be written fails in a second, not
    // after the whole run.
    let svg_file = match &svg_path {
        Some(p) => Some(File::create(p).map_err(|e| format!("--svg {}: {e}", p.display()))?),
        None => None,
    };
    let mut net = Net::new(target).map_err(|e| format!("cannot start the poll: {e}"))?;
    // Setting up (connecting, joining) may take this long on top of the measured time.
    let setup = 60.0;
    let out = match mode {
        Mode::Relay(o) => {
            let limit = setup + o.warmup + o.seconds + o.drain + 10.0;
            let mut h = relay::Relay::new(o);
            let completed = drive(&mut net, &mut h, limit)?;
            let (json, human) = h.report(&net, completed);
            Outcome {
                json,
                human,
                svg: h.plot(),
                completed,
            }
        }
        Mode::Idle(o) => {
            let limit = setup + o.hold + 15.0;
            let mut h = idle::Idle::new(o);
            let completed = drive(&mut net, &mut h, limit)?;
            let (json, human) = h.report(&net, completed);
            Outcome {
                json,
                human,
                svg: h.plot(),
                completed,
            }
        }
        Mode::Churn(o) => {
            let limit = setup + o.warmup + o.seconds + 20.0;
            let mut h = churn::Churn::new(o);
            let completed = drive(&mut net, &mut h, limit)?;
            let (json, human) = h.report(&net, completed);
            Outcome {
                json,
                human,
                svg: h.plot(),
                completed,
            }
        }
    };
    let written = svg_file.map(|mut f| f.write_all(out.svg.as_bytes()));
    // The result is printed even when the plot could not be written: the run is not lost.
    if json_only {
        println!("{}", out.json);
    } else {
        println!("{}", out.human);
        if let (Some(p), Some(Ok(()))) = (&svg_path, &written) {
            println!("latency plot: {}", p.display());
        }
    }
    if let (Some(p), Some(Err(e))) = (&svg_path, written) {
        return Err(format!("--svg {}: {e}", p.display()));
    }
    Ok(out.completed && out.json.contains("\"ok\":true"))
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
