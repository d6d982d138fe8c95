//! Relay mode: P member/joiner pairs, each on its own key, and contents relayed joiner ->
//! member -> joiner (docs/PROTOCOL.md §5). Every content carries its send time in its first eight
//! bytes, so the round trip is read off the answer with no state per message.
//!
//! A pair's contents come back in the order they were sent (one server, one TCP stream each
//! way), so each joiner also keeps its send times in a queue: an answer out of order is an
//! error, and contents still unanswered when the drain time is over are recorded with the
//! latency they had reached by then (a lower bound), so a server that falls hopelessly behind
//! cannot hide its worst latencies by never answering.
//!
//! Closed loop keeps W contents in flight per pair. Open loop sends R contents per second in
//! all, the k-th at `start + k / R` to pair `k mod P`, and times each from that scheduled
//! instant: a server (or a client) that falls behind shows as latency, not as a slower rate.
//!
//! SIGUSR1 ends the measured window early (`--seconds` is then the longest it may last), so
//! that a script can make the relay cover exactly another run, as `benches/scale.py` does.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};

use hdrhistogram::Histogram;

use crate::net::{Closed, Handler, Net};
use crate::pb::Msg;
use crate::stats::{self, CpuMark, Errors, Json};
use crate::svg;

/// Pairs being set up at once.
const SETUP_CONCURRENCY: usize = 64;
/// Most contents an open-loop turn sends before it lets replies in.
const MAX_SENDS_PER_TURN: u64 = 10_000;

/// Set by SIGUSR1: the measured window ends at the next loop turn.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigusr1(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Makes SIGUSR1 end the measured window early instead of killing the process.
pub fn stop_on_sigusr1() -> Result<(), String> {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe; the poll
    // loop wakes at least every 10 ms and retries a wait the signal interrupted.
    let previous =
        unsafe { libc::signal(libc::SIGUSR1, on_sigusr1 as *const () as libc::sighandler_t) };
    if previous == libc::SIG_ERR {
        return Err(format!(
            "cannot handle SIGUSR1: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Relay settings.
#[derive(Debug, Clone)]
pub struct Opts {
    pub pairs: usize,
    pub window: usize,
    /// Contents per second in all; 0 for closed loop.
    pub rate: f64,
    pub bytes: usize,
    pub warmup: f64,
    pub seconds: f64,
    /// Longest wait, after the window, for contents still in flight.
    pub drain: f64,
    pub pid: Option<u32>,
    pub prefix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Setup,
    Run,
    Drain,
    Closing,
    Done,
}

/// The relay mode's state. See the module documentation.
pub struct Relay {
    o: Opts,
    members: Vec<usize>,
    joiners: Vec<usize>,
    /// Send times of each pair's contents in flight, oldest first.
    in_flight: Vec<VecDeque<u64>>,
    next_setup: usize,
    setting_up: usize,
    ready: usize,
    stage: Stage,
    warm_end: u64,
    end: u64,
    drain_end: u64,
    start: u64,
    next_k: u64,
    filler: Vec<u8>,
    hist: Histogram<u64>,
    /// Contents sent with a send time inside the window.
    sent: u64,
    /// Of those, answered.
    answered: u64,
    /// Of those, still unanswered when the drain time was over.
    unanswered: u64,
    /// Contents received (by members and joiners) inside the window: each forwarding once.
    relayed: u64,
    max_lag: u64,
    /// SIGUSR1 ended the window before `--seconds`.
    stopped: bool,
    errors: Errors,
    cpu: [Option<CpuMark>; 2],
    rss: [Option<u64>; 2],
}

fn tag(pair: usize, joiner: bool) -> usize {
    pair * 2 + usize::from(joiner)
}

impl Relay {
    pub fn new(o: Opts) -> Self {
        let filler = vec![b'x'; o.bytes.saturating_sub(8)];
        Self {
            members: vec![usize::MAX; o.pairs],
            joiners: vec![usize::MAX; o.pairs],
            in_flight: (0..o.pairs)
                .map(|_| VecDeque::with_capacity(o.window.max(64)))
                .collect(),
            next_setup: 0,
            setting_up: 0,
            ready: 0,
            stage: Stage::Setup,
            warm_end: u64::MAX,
            end: u64::MAX,
            drain_end: u64::MAX,
            start: 0,
            next_k: 0,
            filler,
            hist: stats::histogram(),
            sent: 0,
            answered: 0,
            unanswered: 0,
            relayed: 0,
            max_lag: 0,
            stopped: false,
            errors: Errors::default(),
            cpu: [None; 2],
            rss: [None; 2],
            o,
        }
    }

    fn key(&self, pair: usize) -> String {
        format!("{}-{pair}", self.o.prefix)
    }

    fn send(&mut self, net: &mut Net, pair: usize, ts: u64) {
        if (self.warm_end..self.end).contains(&ts) {
            self.sent += 1;
        }
        self.in_flight[pair].push_back(ts);
        net.send_content(self.joiners[pair], 0, 0, &[&ts.to_le_bytes(), &self.filler]);
    }

    fn scheduled(&self, k: u64) -> u64 {
        self.start + (k as f64 * 1e9 / self.o.rate) as u64
    }

    fn begin(&mut self, net: &mut Net) {
        let now = net.now;
        self.start = now;
        self.warm_end = now + (self.o.warmup * 1e9) as u64;
        self.end = self.warm_end + (self.o.seconds * 1e9) as u64;
        self.stage = Stage::Run;
        if self.o.rate <= 0.0 {
            for pair in 0..self.o.pairs {
                for _ in 0..self.o.window {
                    self.send(net, pair, now);
                }
            }
        }
    }

    fn close_all(&mut self, net: &mut Net) {
        self.stage = Stage::Closing;
        for &c in self.members.iter().chain(&self.joiners) {
            if c != usize::MAX {
                net.close(c);
            }
        }
    }

    /// The measured window's length in seconds: `--seconds`, or less if SIGUSR1 ended it.
    fn window_secs(&self) -> f64 {
        if self.end == u64::MAX {
            self.o.seconds
        } else {
            self.end.saturating_sub(self.warm_end) as f64 / 1e9
        }
    }

    /// What the run was, as a title: "relay closed loop, 10 pairs, window 1".
    fn title(&self) -> String {
        if self.o.rate > 0.0 {
            format!(
                "relay open loop, {} pairs, {} contents/s",
                self.o.pairs, self.o.rate
            )
        } else {
            format!(
                "relay closed loop, {} pairs, window {}",
                self.o.pairs, self.o.window
            )
        }
    }

    /// The round-trip distribution as an SVG percentile plot.
    pub fn plot(&self) -> String {
        svg::percentile_plot(&self.title(), "round trip", &self.hist)
    }

    /// The run's latency histogram (merged across processes by `--procs`).
    pub fn hist(&self) -> &Histogram<u64> {
        &self.hist
    }

    /// The result (JSON) and a human summary.
    pub fn report(&self, net: &Net, completed: bool) -> (String, String) {
        let mut j = Json::default();
        j.str("mode", "relay");
        j.str("loop", if self.o.rate > 0.0 { "open" } else { "closed" });
        j.num("pairs", self.o.pairs as f64);
        j.num("window", self.o.window as f64);
        j.num("rate", self.o.rate);
        j.num("bytes", self.o.bytes as f64);
        let secs = self.window_secs();
        j.num("seconds", secs);
        j.raw(
            "stopped_by_signal",
            if self.stopped { "true" } else { "false" },
        );
        j.num("relayed", self.relayed as f64);
        let per_s = if secs > 0.0 {
            self.relayed as f64 / secs
        } else {
            0.0
        };
        j.num("relayed_per_s", per_s);
        j.num("sent", self.sent as f64);
        j.num("answered", self.answered as f64);
        j.num("unanswered", self.unanswered as f64);
        j.num("max_send_lag_us", self.max_lag as f64 / 1e3);
        j.latency("rtt_us", &self.hist);
        if let (Some(a), Some(b)) = (&self.cpu[0], &self.cpu[1]) {
            a.report(b, &mut j);
        }
        if let Some(r) = self.rss[1] {
            j.num("rss_kib", r as f64);
        }
        j.num("errors", self.errors.count as f64);
        net.counters.report(&mut j);
        let ok = completed
            && self.errors.count == 0
            && self.ready == self.o.pairs
            && net.counters.tls_failures == 0;
        self.errors.verdict(&mut j, ok);
        let human = format!(
            "{}: {:.0} relayed/s, round trip {}{}{}",
            self.title(),
            per_s,
            stats::latency_line(&self.hist),
            if self.unanswered > 0 {
                format!(
                    "; {} unanswered after the drain (counted at their age then)",
                    self.unanswered
                )
            } else {
                String::new()
            },
            self.errors.not_ok(ok, || format!(
                "{} errors, {}/{} pairs ready",
                self.errors.count, self.ready, self.o.pairs
            ))
        );
        (j.finish(), human)
    }
}

impl Handler for Relay {
    fn on_open(&mut self, net: &mut Net, c: usize) {
        let t = net.tag(c);
        net.send_connect(c, if t.is_multiple_of(2) { 1 } else { 2 }, &[]);
    }

    fn on_message(&mut self, net: &mut Net, c: usize, msg: Msg<'_>) {
        let t = net.tag(c);
        let (pair, joiner) = (t / 2, t % 2 == 1);
        match (msg, joiner) {
            (Msg::Connected(true), false) => {
                // The member founded the group: its joiner may come.
                let key = self.key(pair);
                self.joiners[pair] = net.connect(&key, tag(pair, true));
            }
            (Msg::Connected(false), true) => {
                self.setting_up -= 1;
                self.ready += 1;
            }
            (Msg::Content { sender, data, .. }, false) if !data.is_empty() => {
                if (self.warm_end..self.end).contains(&net.now) {
                    self.relayed += 1;
                }
                // The member answers its joiner with the same data (docs/PROTOCOL.md §5).
                net.send_content(c, 0, sender, &[data]);
            }
            (Msg::Content { data, .. }, true) if data.len() >= 8 => {
                let now = net.now;
                if (self.warm_end..self.end).contains(&now) {
                    self.relayed += 1;
                }
                let ts = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
                if self.in_flight[pair].pop_front() != Some(ts) {
                    self.errors
                        .record(format!("pair {pair}: answer out of order"));
                }
                if (self.warm_end..self.end).contains(&ts) {
                    self.answered += 1;
                    stats::record(&mut self.hist, now.saturating_sub(ts));
                }
                if self.o.rate <= 0.0 && self.stage == Stage::Run && now < self.end {
                    self.send(net, pair, now);
                }
            }
            (Msg::Content { .. }, _) if self.stage >= Stage::Closing => {}
            (other, _) => self.errors.record(format!(
                "pair {pair} {}: unexpected {other:?}",
                if joiner { "joiner" } else { "member" }
            )),
        }
    }

    fn on_closed(&mut self, _net: &mut Net, c: usize, how: Closed) {
        let (pair, joiner) = (how.tag / 2, how.tag % 2 == 1);
        let slot = if joiner {
            &mut self.joiners[pair]
        } else {
            &mut self.members[pair]
        };
        if *slot == c {
            *slot = usize::MAX;
        }
        if self.stage < Stage::Closing || how.error.is_some() {
            self.errors.record(format!(
                "pair {pair} {} closed: code {:?}, {}",
                if joiner { "joiner" } else { "member" },
                how.code,
                how.error.unwrap_or("by the server")
            ));
        }
    }

    fn on_tick(&mut self, net: &mut Net) -> Option<u64> {
        let now = net.now;
        match self.stage {
            Stage::Setup => {
                if self.rss[0].is_none() {
                    self.rss[0] = self.o.pid.and_then(stats::rss_kib);
                }
                while self.setting_up < SETUP_CONCURRENCY && self.next_setup < self.o.pairs {
                    let pair = self.next_setup;
                    self.next_setup += 1;
                    self.setting_up += 1;
                    let key = self.key(pair);
                    self.members[pair] = net.connect(&key, tag(pair, false));
                }
                if self.ready == self.o.pairs {
                    self.begin(net);
                } else if self.errors.count > 0 {
                    self.close_all(net);
                }
                None
            }
            Stage::Run => {
                if STOP.load(Ordering::Relaxed) && now < self.end {
                    // Contents already due are still sent and timed; none after now.
                    self.end = now.max(self.warm_end);
                    self.stopped = true;
                }
                if self.cpu[0].is_none() && now >= self.warm_end {
                    self.cpu[0] = Some(CpuMark::take(self.o.pid, now));
                }
                let mut wake = if now < self.warm_end {
                    self.warm_end
                } else {
                    self.end
                };
                let mut behind = false;
                if self.o.rate > 0.0 {
                    for _ in 0..MAX_SENDS_PER_TURN {
                        let at = self.scheduled(self.next_k);
                        if at > now || at >= self.end {
                            break;
                        }
                        self.max_lag = self.max_lag.max(now - at);
                        let pair = (self.next_k % self.o.pairs as u64) as usize;
                        self.send(net, pair, at);
                        self.next_k += 1;
                    }
                    let next = self.scheduled(self.next_k);
                    // Every content due inside the window is sent, late if the loop fell
                    // behind (timed from its schedule): dropping the backlog at the end would
                    // hide that lag.
                    behind = next <= now && next < self.end;
                    wake = wake.min(next);
                }
                if now >= self.end && !behind {
                    self.cpu[1] = Some(CpuMark::take(self.o.pid, now));
                    self.rss[1] = self.o.pid.and_then(stats::rss_kib);
                    self.stage = Stage::Drain;
                    self.drain_end = now + (self.o.drain * 1e9) as u64;
                    return None;
                }
                Some(wake)
            }
            Stage::Drain => {
                if self.answered >= self.sent || now >= self.drain_end {
                    for queue in &self.in_flight {
                        for &ts in queue
                            .iter()
                            .filter(|&&t| (self.warm_end..self.end).contains(&t))
                        {
                            self.unanswered += 1;
                            stats::record(&mut self.hist, now.saturating_sub(ts));
                        }
                    }
                    self.close_all(net);
                }
                None
            }
            Stage::Closing => {
                if net.len() == 0 {
                    self.stage = Stage::Done;
                }
                None
            }
            Stage::Done => None,
        }
    }

    fn done(&self) -> bool {
        self.stage == Stage::Done
    }
}
