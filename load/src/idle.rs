//! Idle mode: N connections, each founding its own group (`connect` answered `connected:
//! true`), then holding while answering heartbeats. Reports handshakes per second (TCP
//! connect + WebSocket upgrade + `connect` answered, C at a time) and the server's resident
//! memory before, once all are in, and at the end of the hold, per connection.

use hdrhistogram::Histogram;

use crate::net::{Closed, Handler, Net};
use crate::pb::Msg;
use crate::stats::{self, CpuMark, Errors, Json};
use crate::svg;

/// Idle settings.
#[derive(Debug, Clone)]
pub struct Opts {
    pub conns: usize,
    pub concurrency: usize,
    pub hold: f64,
    pub pid: Option<u32>,
    pub prefix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Connect,
    Hold,
    Closing,
    Done,
}

/// The idle mode's state. See the module documentation.
pub struct Idle {
    o: Opts,
    stage: Stage,
    started: Vec<u64>,
    is_in: Vec<bool>,
    slots: Vec<usize>,
    next: usize,
    in_flight: usize,
    joined: usize,
    failed: usize,
    dropped: usize,
    errors: Errors,
    t_first: u64,
    t_joined: u64,
    hold_end: u64,
    next_sample: u64,
    hist: Histogram<u64>,
    rss_start: Option<u64>,
    rss_loaded: Option<u64>,
    rss_end: Option<u64>,
    rss_max: u64,
    open_at_end: usize,
    cpu: [Option<CpuMark>; 2],
}

impl Idle {
    pub fn new(o: Opts) -> Self {
        Self {
            stage: Stage::Connect,
            started: vec![0; o.conns],
            is_in: vec![false; o.conns],
            slots: vec![usize::MAX; o.conns],
            next: 0,
            in_flight: 0,
            joined: 0,
            failed: 0,
            dropped: 0,
            errors: Errors::default(),
            t_first: 0,
            t_joined: 0,
            hold_end: u64::MAX,
            next_sample: 0,
            hist: stats::histogram(),
            rss_start: None,
            rss_loaded: None,
            rss_end: None,
            rss_max: 0,
            open_at_end: 0,
            cpu: [None; 2],
            o,
        }
    }

    fn sample(&mut self) -> Option<u64> {
        let r = self.o.pid.and_then(stats::rss_kib);
        if let Some(r) = r {
            self.rss_max = self.rss_max.max(r);
        }
        r
    }

    /// The handshake-time distribution as an SVG percentile plot.
    pub fn plot(&self) -> String {
        let title = format!(
            "idle {} connections, {} handshakes at once",
            self.o.conns, self.o.concurrency
        );
        svg::percentile_plot(&title, "handshake", &self.hist)
    }

    /// The run's latency histogram (merged across processes by `--procs`).
    pub fn hist(&self) -> &Histogram<u64> {
        &self.hist
    }

    /// The result (JSON) and a human summary.
    pub fn report(&self, net: &Net, completed: bool) -> (String, String) {
        let mut j = Json::default();
        j.str("mode", "idle");
        j.num("conns", self.o.conns as f64);
        j.num("concurrency", self.o.concurrency as f64);
        j.num("hold", self.o.hold);
        j.num("joined", self.joined as f64);
        let secs = self.t_joined.saturating_sub(self.t_first) as f64 / 1e9;
        let rate = if secs > 0.0 {
            self.joined as f64 / secs
        } else {
            0.0
        };
        j.num("handshakes_per_s", rate);
        j.latency("handshake_us", &self.hist);
        if let (Some(a), Some(b)) = (&self.cpu[0], &self.cpu[1]) {
            a.report(b, &mut j);
        }
        let per_conn = |r: Option<u64>| match (self.rss_start, r) {
            (Some(s), Some(e)) if self.joined > 0 => {
                (e as f64 - s as f64) * 1024.0 / self.joined as f64
            }
            _ => f64::NAN,
        };
        for (k, v) in [
            ("rss_start_kib", self.rss_start),
            ("rss_loaded_kib", self.rss_loaded),
            ("rss_end_kib", self.rss_end),
        ] {
            if let Some(v) = v {
                j.num(k, v as f64);
            }
        }
        if self.rss_max > 0 {
            j.num("rss_max_kib", self.rss_max as f64);
        }
        j.num("rss_per_conn_bytes", per_conn(self.rss_end));
        j.num("rss_per_conn_loaded_bytes", per_conn(self.rss_loaded));
        j.num("open_at_end", self.open_at_end as f64);
        j.num("dropped", self.dropped as f64);
        j.num("errors", self.errors.count as f64);
        net.counters.report(&mut j);
        let ok = completed
            && self.errors.count == 0
            && self.joined == self.o.conns
            && self.open_at_end == self.o.conns
            && net.counters.tls_failures == 0;
        self.errors.verdict(&mut j, ok);
        let human = format!(
            "idle {} connections: {:.0} handshakes/s (handshake {}); server RSS {} KiB at start, \
             {} KiB loaded, {} KiB after {:.0} s, {:.0} bytes per connection; {} open at the end{}",
            self.o.conns,
            rate,
            stats::latency_line(&self.hist),
            self.rss_start.map_or("?".into(), |v| v.to_string()),
            self.rss_loaded.map_or("?".into(), |v| v.to_string()),
            self.rss_end.map_or("?".into(), |v| v.to_string()),
            self.o.hold,
            per_conn(self.rss_end),
            self.open_at_end,
            self.errors.not_ok(ok, || format!(
                "{} errors, {} joined",
                self.errors.count, self.joined
            ))
        );
        (j.finish(), human)
    }
}

impl Handler for Idle {
    fn on_open(&mut self, net: &mut Net, c: usize) {
        net.send_connect(c, 1, &[]);
    }

    fn on_message(&mut self, net: &mut Net, c: usize, msg: Msg<'_>) {
        let i = net.tag(c);
        match msg {
            Msg::Connected(true) if self.stage == Stage::Connect => {
                self.joined += 1;
                self.in_flight -= 1;
                self.is_in[i] = true;
                stats::record(&mut self.hist, net.now.saturating_sub(self.started[i]));
            }
            other => self
                .errors
                .record(format!("connection {i}: unexpected {other:?}")),
        }
    }

    fn on_closed(&mut self, _net: &mut Net, c: usize, how: Closed) {
        let i = how.tag;
        if self.slots[i] == c {
            self.slots[i] = usize::MAX;
        }
        if self.stage < Stage::Closing {
            if !self.is_in[i] {
                // Never got in (refused, timed out): count it and go on with the others.
                self.in_flight = self.in_flight.saturating_sub(1);
                self.failed += 1;
            } else {
                self.dropped += 1;
            }
            self.errors.record(format!(
                "connection {i} closed: code {:?}, {}",
                how.code,
                how.error.unwrap_or("by the server")
            ));
        }
    }

    fn on_tick(&mut self, net: &mut Net) -> Option<u64> {
        let now = net.now;
        match self.stage {
            Stage::Connect => {
                // Once (the CPU mark, not the RSS, which is None without --pid).
                if self.cpu[0].is_none() {
                    self.rss_start = self.sample();
                    self.cpu[0] = Some(CpuMark::take(self.o.pid, now));
                    self.t_first = now;
                }
                while self.in_flight < self.o.concurrency && self.next < self.o.conns {
                    let i = self.next;
                    self.next += 1;
                    self.in_flight += 1;
                    self.started[i] = now;
                    let key = format!("{}-{i}", self.o.prefix);
                    self.slots[i] = net.connect(&key, i);
                }
                if self.joined + self.failed >= self.o.conns {
                    self.t_joined = now;
                    self.cpu[1] = Some(CpuMark::take(self.o.pid, now));
                    self.rss_loaded = self.sample();
                    self.stage = Stage::Hold;
                    self.hold_end = now + (self.o.hold * 1e9) as u64;
                    self.next_sample = now + 1_000_000_000;
                }
                None
            }
            Stage::Hold => {
                if now >= self.next_sample {
                    self.sample();
                    self.next_sample += 1_000_000_000;
                }
                if now >= self.hold_end {
                    self.rss_end = self.sample();
                    self.open_at_end = self.slots.iter().filter(|&&c| net.is_open(c)).count();
                    self.stage = Stage::Closing;
                    for &c in &self.slots {
                        if c != usize::MAX {
                            net.close(c);
                        }
                    }
                    return None;
                }
                Some(self.next_sample.min(self.hold_end))
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
