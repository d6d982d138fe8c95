//! Churn mode: short sessions, C at a time, each as a Netflux peer joining a group lives it.
//!
//! Without long-lived members, a session is a fresh group: member M connects and founds it,
//! joiner J connects and is bound to M, J sends one offer, M answers and leaves, J reads the
//! answer and leaves. With `--members K`, K members join first and stay (answering
//! heartbeats); a session is then only J: connect, bound to member `n mod K`, offer, answer,
//! leave. A session counts when all its sockets are closed after a clean close handshake.
//! The server's resident memory is sampled every second, to show whether it stays flat: the
//! growth reported is over the measured window, after the warmup (the series shows both).

use hdrhistogram::Histogram;

use crate::net::{Closed, Handler, Net};
use crate::pb::Msg;
use crate::stats::{self, CpuMark, Errors, Json};
use crate::svg;

/// Tags at or above this are long-lived members.
const MEMBER_TAG: usize = 1 << 40;
/// Members joining at once during setup.
const SETUP_CONCURRENCY: usize = 64;
/// Longest wait, once the window is over, for the sessions still running.
const FINISH_NS: u64 = 5_000_000_000;

/// Churn settings.
#[derive(Debug, Clone)]
pub struct Opts {
    pub concurrency: usize,
    pub members: usize,
    pub bytes: usize,
    pub warmup: f64,
    pub seconds: f64,
    pub max_sessions: u64,
    pub pid: Option<u32>,
    pub prefix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Setup,
    Run,
    Finish,
    Closing,
    Done,
}

#[derive(Debug, Clone, Copy)]
struct Session {
    member: usize,
    joiner: usize,
    number: u64,
    started: u64,
    open: u8,
    failed: bool,
    active: bool,
}

/// The churn mode's state. See the module documentation.
pub struct Churn {
    o: Opts,
    stage: Stage,
    sessions: Vec<Session>,
    members: Vec<usize>,
    members_ready: usize,
    next_member: usize,
    next_number: u64,
    data: Vec<u8>,
    warm_end: u64,
    end: u64,
    finish_end: u64,
    next_sample: u64,
    samples: Vec<(f64, u64)>,
    rss_setup: Option<u64>,
    rss_before: Option<u64>,
    completed: u64,
    failed: u64,
    errors: Errors,
    hist: Histogram<u64>,
    cpu: [Option<CpuMark>; 2],
}

fn tag(slot: usize, joiner: bool) -> usize {
    slot * 2 + usize::from(joiner)
}

impl Churn {
    pub fn new(o: Opts) -> Self {
        let idle = Session {
            member: usize::MAX,
            joiner: usize::MAX,
            number: 0,
            started: 0,
            open: 0,
            failed: false,
            active: false,
        };
        Self {
            stage: Stage::Setup,
            sessions: vec![idle; o.concurrency],
            members: vec![usize::MAX; o.members],
            members_ready: 0,
            next_member: 0,
            next_number: 0,
            data: vec![b'o'; o.bytes.max(1)],
            warm_end: u64::MAX,
            end: u64::MAX,
            finish_end: u64::MAX,
            next_sample: 0,
            samples: Vec::new(),
            rss_setup: None,
            rss_before: None,
            completed: 0,
            failed: 0,
            errors: Errors::default(),
            hist: stats::histogram(),
            cpu: [None; 2],
            o,
        }
    }

    fn start(&mut self, net: &mut Net, slot: usize) {
        let number = self.next_number;
        self.next_number += 1;
        let s = &mut self.sessions[slot];
        *s = Session {
            member: usize::MAX,
            joiner: usize::MAX,
            number,
            started: net.now,
            open: 1,
            failed: false,
            active: true,
        };
        if self.o.members == 0 {
            let key = format!("{}-{number}", self.o.prefix);
            self.sessions[slot].member = net.connect(&key, tag(slot, false));
        } else {
            let k = (number % self.o.members as u64) as usize;
            let key = format!("{}-m{k}", self.o.prefix);
            self.sessions[slot].joiner = net.connect(&key, tag(slot, true));
        }
    }

    fn may_start(&self, now: u64) -> bool {
        self.stage == Stage::Run && now < self.end && self.next_number < self.o.max_sessions
    }

    /// What the run was, as a title: "churn, 32 at once, 100 long-lived members".
    fn title(&self) -> String {
        let members = if self.o.members > 0 {
            format!(", {} long-lived members", self.o.members)
        } else {
            String::new()
        };
        format!("churn, {} at once{members}", self.o.concurrency)
    }

    /// The session-time distribution as an SVG percentile plot.
    pub fn plot(&self) -> String {
        svg::percentile_plot(&self.title(), "session", &self.hist)
    }

    /// The run's latency histogram (merged across processes by `--procs`).
    pub fn hist(&self) -> &Histogram<u64> {
        &self.hist
    }

    /// The result (JSON) and a human summary.
    pub fn report(&self, net: &Net, completed: bool) -> (String, String) {
        let mut j = Json::default();
        j.str("mode", "churn");
        j.num("concurrency", self.o.concurrency as f64);
        j.num("members", self.o.members as f64);
        j.num("bytes", self.o.bytes as f64);
        j.num("seconds", self.o.seconds);
        j.num("sessions", self.completed as f64);
        let per_s = self.completed as f64 / self.o.seconds;
        j.num("sessions_per_s", per_s);
        j.num("failed_sessions", self.failed as f64);
        j.latency("session_us", &self.hist);
        if let (Some(a), Some(b)) = (&self.cpu[0], &self.cpu[1]) {
            a.report(b, &mut j);
        }
        if let Some(r) = self.rss_setup {
            j.num("rss_setup_kib", r as f64);
        }
        // Memory is judged over the measured window; the series also shows the warmup.
        let window: Vec<(f64, u64)> = self
            .samples
            .iter()
            .copied()
            .filter(|s| s.0 >= -0.5)
            .collect();
        let first = window.first().map(|s| s.1);
        let last = window.last().map(|s| s.1);
        let max = window.iter().map(|s| s.1).max();
        let slope = stats::slope(&window);
        if let (Some(a), Some(b), Some(m)) = (first, last, max) {
            j.num("rss_first_kib", a as f64);
            j.num("rss_last_kib", b as f64);
            j.num("rss_max_kib", m as f64);
            j.num("rss_slope_kib_per_s", slope);
            j.num("rss_growth_kib", b as f64 - a as f64);
            let series: Vec<String> = self
                .samples
                .iter()
                .map(|(t, r)| format!("[{t:.1},{r}]"))
                .collect();
            j.raw("rss_series", &format!("[{}]", series.join(",")));
        }
        j.num("errors", self.errors.count as f64);
        net.counters.report(&mut j);
        let ok = completed
            && self.errors.count == 0
            && self.failed == 0
            && net.counters.tls_failures == 0;
        self.errors.verdict(&mut j, ok);
        let memory = match (first, last, max) {
            (Some(a), Some(b), Some(m)) => {
                format!("; server RSS {a} -> {b} KiB (max {m}, slope {slope:.1} KiB/s)")
            }
            _ => String::new(),
        };
        let human = format!(
            "{}: {:.0} sessions/s (session {}){memory}{}",
            self.title(),
            per_s,
            stats::latency_line(&self.hist),
            self.errors.not_ok(ok, || format!(
                "{} errors, {} failed sessions",
                self.errors.count, self.failed
            ))
        );
        (j.finish(), human)
    }
}

impl Handler for Churn {
    fn on_open(&mut self, net: &mut Net, c: usize) {
        let t = net.tag(c);
        let id = if t >= MEMBER_TAG || t.is_multiple_of(2) {
            1
        } else {
            2
        };
        net.send_connect(c, id, &[]);
    }

    fn on_message(&mut self, net: &mut Net, c: usize, msg: Msg<'_>) {
        let t = net.tag(c);
        if t >= MEMBER_TAG {
            match msg {
                Msg::Connected(true) if self.stage == Stage::Setup => self.members_ready += 1,
                // An offer: answer it. An empty content is a joiner leaving: nothing to do.
                Msg::Content { sender, data, .. } if !data.is_empty() => {
                    net.send_content(c, 0, sender, &[data]);
                }
                Msg::Content { .. } => {}
                other => self
                    .errors
                    .record(format!("member {}: unexpected {other:?}", t - MEMBER_TAG)),
            }
            return;
        }
        let (slot, joiner) = (t / 2, t % 2 == 1);
        match (msg, joiner) {
            (Msg::Connected(true), false) => {
                let key = format!("{}-{}", self.o.prefix, self.sessions[slot].number);
                self.sessions[slot].joiner = net.connect(&key, tag(slot, true));
                self.sessions[slot].open += 1;
            }
            (Msg::Connected(false), true) => {
                net.send_content(c, 0, 0, &[&self.data]);
            }
            (Msg::Content { sender, data, .. }, false) if !data.is_empty() => {
                net.send_content(c, 0, sender, &[data]);
                net.close(c);
            }
            (Msg::Content { data, .. }, true) if !data.is_empty() => net.close(c),
            (Msg::Content { .. }, _) => {}
            (other, _) => {
                self.sessions[slot].failed = true;
                self.errors
                    .record(format!("session {slot}: unexpected {other:?}"));
                net.close(c);
            }
        }
    }

    fn on_closed(&mut self, net: &mut Net, _c: usize, how: Closed) {
        if how.tag >= MEMBER_TAG {
            self.members[how.tag - MEMBER_TAG] = usize::MAX;
            if self.stage < Stage::Closing {
                self.errors.record(format!(
                    "member {} closed: code {:?}, {}",
                    how.tag - MEMBER_TAG,
                    how.code,
                    how.error.unwrap_or("by the server")
                ));
            }
            return;
        }
        let (slot, joiner) = (how.tag / 2, how.tag % 2 == 1);
        let s = &mut self.sessions[slot];
        if joiner {
            s.joiner = usize::MAX;
        } else {
            s.member = usize::MAX;
        }
        s.open = s.open.saturating_sub(1);
        if how.error.is_some() || !how.we_closed {
            s.failed = true;
        }
        if s.open > 0 {
            return;
        }
        s.active = false;
        let (failed, started) = (s.failed, s.started);
        let now = net.now;
        if failed {
            self.failed += 1;
            self.errors.record(format!(
                "session {slot}: closed with code {:?}, {}",
                how.code,
                how.error.unwrap_or("by the server")
            ));
        } else if (self.warm_end..self.end).contains(&now) {
            self.completed += 1;
            stats::record(&mut self.hist, now.saturating_sub(started));
        }
        if self.may_start(now) {
            self.start(net, slot);
        }
    }

    fn on_tick(&mut self, net: &mut Net) -> Option<u64> {
        let now = net.now;
        if self.stage >= Stage::Run && self.stage < Stage::Closing && now >= self.next_sample {
            if let Some(r) = self.o.pid.and_then(stats::rss_kib) {
                if now <= self.end {
                    // Seconds since the end of the warmup: negative during the warmup.
                    let t = (now as f64 - self.warm_end as f64) / 1e9;
                    self.samples.push((t, r));
                }
            }
            self.next_sample += 1_000_000_000;
        }
        match self.stage {
            Stage::Setup => {
                if self.rss_before.is_none() {
                    self.rss_before = self.o.pid.and_then(stats::rss_kib);
                }
                while self.next_member < self.o.members
                    && self.next_member - self.members_ready < SETUP_CONCURRENCY
                {
                    let k = self.next_member;
                    self.next_member += 1;
                    let key = format!("{}-m{k}", self.o.prefix);
                    self.members[k] = net.connect(&key, MEMBER_TAG + k);
                }
                if self.members_ready == self.o.members {
                    self.rss_setup = self.o.pid.and_then(stats::rss_kib);
                    self.stage = Stage::Run;
                    self.warm_end = now + (self.o.warmup * 1e9) as u64;
                    self.end = self.warm_end + (self.o.seconds * 1e9) as u64;
                    self.next_sample = now;
                    for slot in 0..self.o.concurrency {
                        if self.may_start(now) {
                            self.start(net, slot);
                        }
                    }
                } else if self.errors.count > 0 {
                    self.stage = Stage::Closing;
                    for &c in &self.members {
                        net.close(c);
                    }
                }
                None
            }
            Stage::Run => {
                if self.cpu[0].is_none() && now >= self.warm_end {
                    self.cpu[0] = Some(CpuMark::take(self.o.pid, now));
                }
                if now >= self.end {
                    self.cpu[1] = Some(CpuMark::take(self.o.pid, now));
                    self.stage = Stage::Finish;
                    self.finish_end = now + FINISH_NS;
                    return None;
                }
                let wake = if now < self.warm_end {
                    self.warm_end
                } else {
                    self.end
                };
                Some(wake.min(self.next_sample))
            }
            Stage::Finish => {
                if self.sessions.iter().all(|s| !s.active) || now >= self.finish_end {
                    self.stage = Stage::Closing;
                    for s in &self.sessions {
                        if s.active {
                            net.close(s.member);
                            net.close(s.joiner);
                        }
                    }
                    for &c in &self.members {
                        net.close(c);
                    }
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
