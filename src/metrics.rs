//! The server's counters and their Prometheus text rendering (`GET /metrics`).
//!
//! Counters are plain integers owned by the loop (single-threaded: no atomics needed); gauges
//! are read from the loop and the hub when a scrape is rendered. Every name is prefixed
//! `sigver_`, counters end in `_total` and only ever go up.

use std::fmt::Write as _;
use std::time::Duration;

use crate::close::CloseReason;

/// Why an upgrade did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// Not valid HTTP, or an upgrade missing a required part (400).
    BadRequest,
    /// A WebSocket version other than 13 (426).
    WrongVersion,
    /// The request head was over 8 KiB (431).
    TooLarge,
    /// The upgrade was not complete in time.
    Timeout,
    /// The TLS handshake failed (or plain text reached a TLS port).
    Tls,
    /// The client left, or the socket failed, before the upgrade completed.
    ClosedEarly,
    /// Over the connection limit (503).
    RefusedFull,
    /// Over the per-address limit (429).
    RefusedPerAddress,
    /// The server is stopping (503).
    RefusedStopping,
    /// The `Origin` is not allowed (403).
    Origin,
    /// No valid PROXY protocol header (`--proxy-protocol`).
    ProxyHeader,
}

impl HandshakeFailure {
    const ALL: [Self; 11] = [
        Self::BadRequest,
        Self::WrongVersion,
        Self::TooLarge,
        Self::Timeout,
        Self::Tls,
        Self::ClosedEarly,
        Self::RefusedFull,
        Self::RefusedPerAddress,
        Self::RefusedStopping,
        Self::Origin,
        Self::ProxyHeader,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::WrongVersion => "wrong_version",
            Self::TooLarge => "request_too_large",
            Self::Timeout => "timeout",
            Self::Tls => "tls",
            Self::ClosedEarly => "closed_early",
            Self::RefusedFull => "refused_full",
            Self::RefusedPerAddress => "refused_per_address",
            Self::RefusedStopping => "refused_stopping",
            Self::Origin => "forbidden_origin",
            Self::ProxyHeader => "proxy_header",
        }
    }
}

/// Which limit a connection ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `--max-message-size`
    MessageSize,
    /// `--max-send-queue`
    SendQueue,
    /// `--memory-budget`
    MemoryBudget,
    /// `--rate-limit`
    Rate,
    /// `--handshake-timeout`
    HandshakeTimeout,
    /// The 8 KiB request head.
    RequestSize,
    /// `--max-connections`
    Connections,
    /// `--max-connections-per-ip`
    ConnectionsPerAddress,
    /// Frames in one message.
    Fragments,
    /// Members listed in one `connect`.
    ConnectMembers,
    /// Fields in one message.
    Fields,
    /// `--max-group-size`
    GroupSize,
}

impl Limit {
    /// The limit a server close reports, if it is one.
    pub fn of(reason: CloseReason) -> Option<Self> {
        match reason {
            CloseReason::MessageTooBig => Some(Self::MessageSize),
            CloseReason::SendQueueFull => Some(Self::SendQueue),
            CloseReason::MemoryBudget => Some(Self::MemoryBudget),
            CloseReason::RateLimited => Some(Self::Rate),
            CloseReason::TooManyFragments => Some(Self::Fragments),
            CloseReason::TooManyMembers => Some(Self::ConnectMembers),
            CloseReason::TooManyFields => Some(Self::Fields),
            CloseReason::GroupFull => Some(Self::GroupSize),
            _ => None,
        }
    }

    pub(crate) const ALL: [Self; 12] = [
        Self::MessageSize,
        Self::SendQueue,
        Self::MemoryBudget,
        Self::Rate,
        Self::HandshakeTimeout,
        Self::RequestSize,
        Self::Connections,
        Self::ConnectionsPerAddress,
        Self::Fragments,
        Self::ConnectMembers,
        Self::Fields,
        Self::GroupSize,
    ];

    /// The flag's name without dashes, for metric labels and log fields.
    pub fn label(self) -> &'static str {
        match self {
            Self::MessageSize => "max_message_size",
            Self::SendQueue => "max_send_queue",
            Self::MemoryBudget => "memory_budget",
            Self::Rate => "rate_limit",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::RequestSize => "max_request_size",
            Self::Connections => "max_connections",
            Self::ConnectionsPerAddress => "max_connections_per_ip",
            Self::Fragments => "max_fragments",
            Self::ConnectMembers => "max_connect_members",
            Self::Fields => "max_fields",
            Self::GroupSize => "max_group_size",
        }
    }
}

/// Upper bounds, in seconds, of the relay latency histogram's buckets: from a few
/// microseconds (an idle server) to a second (a server far behind).
pub(crate) const LATENCY_BUCKETS: [f64; 16] = [
    5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1,
    0.25, 1.0,
];

/// A Prometheus histogram with fixed buckets.
#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    counts: [u64; LATENCY_BUCKETS.len() + 1],
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64, count: u64) {
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[i] += count;
        self.sum += seconds * count as f64;
    }
}

/// The loop's counters.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    accepted: u64,
    upgrades: u64,
    server_closes: [u64; CloseReason::ALL.len()],
    client_closes: u64,
    handshake_failures: [u64; HandshakeFailure::ALL.len()],
    limit_hits: [u64; Limit::ALL.len()],
    /// TLS handshakes completed: full, resumed.
    tls_handshakes: [u64; 2],
    relay_latency: Histogram,
}

/// Values read at scrape time from the loop and the hub.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Open connections, upgrading ones included.
    pub connections: usize,
    /// Groups.
    pub groups: usize,
    /// Group members.
    pub members: usize,
    /// Joiners bound to a member.
    pub bindings: usize,
    /// Bytes queued for sending.
    pub queued_bytes: usize,
    /// Buffer memory the connections hold: queues, partial messages, read buffers (what the
    /// memory budget limits).
    pub buffered_bytes: usize,
    /// The memory budget (`--memory-budget`), so an alert can compare `buffered_bytes` to it.
    pub memory_budget: usize,
    /// The connection limit in force (`--max-connections`, or what the open-file limit
    /// allows), so an alert can compare `connections` to it.
    pub max_connections: usize,
    /// Contents relayed since start (each forwarding counts once).
    pub relayed_messages: u64,
    /// Payload bytes relayed since start.
    pub relayed_bytes: u64,
    /// Peers closed for missed heartbeats since start.
    pub heartbeat_timeouts: u64,
    /// Seconds since the Unix epoch when the server started.
    pub start_time: f64,
    /// True while the server is stopping.
    pub stopping: bool,
}

impl Metrics {
    /// A connection was accepted.
    pub fn on_accept(&mut self) {
        self.accepted += 1;
    }

    /// A connection became a WebSocket.
    pub fn on_upgrade(&mut self) {
        self.upgrades += 1;
    }

    /// The server sent a close frame for `reason` (and, for a limit, counts its hit).
    pub fn on_server_close(&mut self, reason: CloseReason) {
        self.server_closes[reason.index()] += 1;
        if let Some(limit) = Limit::of(reason) {
            self.on_limit(limit);
        }
    }

    /// A client sent a close frame.
    pub fn on_client_close(&mut self) {
        self.client_closes += 1;
    }

    /// An upgrade did not happen.
    pub fn on_handshake_failure(&mut self, why: HandshakeFailure) {
        // ALL lists the variants in declaration order: the discriminant is the index.
        self.handshake_failures[why as usize] += 1;
    }

    /// A TLS handshake completed, resuming a session or not.
    pub fn on_tls_handshake(&mut self, resumed: bool) {
        self.tls_handshakes[usize::from(resumed)] += 1;
    }

    /// A connection ran into a limit.
    pub fn on_limit(&mut self, limit: Limit) {
        self.limit_hits[limit as usize] += 1;
    }

    /// `count` relayed messages spent `d` inside the server: from the start of the loop turn
    /// that read them to the end of its flush, which handed them to the kernel.
    pub fn on_relayed(&mut self, d: Duration, count: u64) {
        self.relay_latency.observe(d.as_secs_f64(), count);
    }

    /// Server closes so far, by reason ([`CloseReason::ALL`]).
    pub(crate) fn server_closes(&self) -> &[u64; CloseReason::ALL.len()] {
        &self.server_closes
    }

    /// Limit hits so far, by limit ([`Limit::ALL`]).
    pub(crate) fn limit_hits(&self) -> &[u64; Limit::ALL.len()] {
        &self.limit_hits
    }

    /// Failed upgrades so far, by reason.
    pub(crate) fn handshake_failures(&self) -> &[u64] {
        &self.handshake_failures
    }

    /// Relayed messages so far per latency bucket (not cumulative; the last is `+Inf`).
    pub(crate) fn latency_counts(&self) -> &[u64; LATENCY_BUCKETS.len() + 1] {
        &self.relay_latency.counts
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self, g: &Gauges) -> String {
        // Writing to a String cannot fail: the results of write! are ignored throughout.
        let mut out = String::with_capacity(8 * 1024);
        let _ = writeln!(
            out,
            "# HELP sigver_build_info Version of this server.\n# TYPE sigver_build_info gauge\nsigver_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        let gauges: [(&str, &str, f64); 11] = [
            (
                "start_time_seconds",
                "Start time of the server, seconds since the Unix epoch.",
                g.start_time,
            ),
            (
                "connections",
                "Open connections, upgrading ones included.",
                g.connections as f64,
            ),
            (
                "groups",
                "Groups (keys with at least one member).",
                g.groups as f64,
            ),
            ("members", "Members of all groups.", g.members as f64),
            (
                "bindings",
                "Joiners bound to a member (live relays).",
                g.bindings as f64,
            ),
            (
                "queued_bytes",
                "Bytes queued for sending, over all connections.",
                g.queued_bytes as f64,
            ),
            (
                "buffered_bytes",
                "Buffer memory connections keep for their largest message and queue (what --memory-budget limits).",
                g.buffered_bytes as f64,
            ),
            (
                "memory_budget_bytes",
                "The memory budget (--memory-budget) that buffered_bytes may not pass.",
                g.memory_budget as f64,
            ),
            (
                "max_connections",
                "The connection limit in force (--max-connections, or what the open-file limit allows).",
                g.max_connections as f64,
            ),
            (
                "ready",
                "1 while the server accepts peers, 0 while it is stopping.",
                if g.stopping { 0.0 } else { 1.0 },
            ),
            ("up", "1 while the event loop runs.", 1.0),
        ];
        for (name, help, value) in gauges {
            let _ = write!(
                out,
                "# HELP sigver_{name} {help}\n# TYPE sigver_{name} gauge\nsigver_{name} {value}\n"
            );
        }
        let counters: [(&str, &str, u64); 6] = [
            (
                "connections_accepted_total",
                "TCP connections accepted.",
                self.accepted,
            ),
            (
                "upgrades_total",
                "Connections that became WebSockets.",
                self.upgrades,
            ),
            (
                "messages_relayed_total",
                "Contents relayed (each forwarding counts once).",
                g.relayed_messages,
            ),
            (
                "bytes_relayed_total",
                "Payload bytes relayed.",
                g.relayed_bytes,
            ),
            (
                "heartbeat_timeouts_total",
                "Peers closed for missed heartbeats (4742).",
                g.heartbeat_timeouts,
            ),
            (
                "client_closes_total",
                "Close frames received from clients.",
                self.client_closes,
            ),
        ];
        for (name, help, value) in counters {
            let _ = write!(
                out,
                "# HELP sigver_{name} {help}\n# TYPE sigver_{name} counter\nsigver_{name} {value}\n"
            );
        }
        out.push_str("# HELP sigver_server_closes_total Close frames sent by the server, by code and reason.\n# TYPE sigver_server_closes_total counter\n");
        for (reason, n) in CloseReason::ALL.iter().zip(self.server_closes) {
            let _ = writeln!(
                out,
                "sigver_server_closes_total{{code=\"{}\",reason=\"{}\"}} {n}",
                reason.close_code(),
                reason.label()
            );
        }
        out.push_str("# HELP sigver_handshake_failures_total Connections that did not become WebSockets, by reason.\n# TYPE sigver_handshake_failures_total counter\n");
        for (why, n) in HandshakeFailure::ALL.iter().zip(self.handshake_failures) {
            let _ = writeln!(
                out,
                "sigver_handshake_failures_total{{reason=\"{}\"}} {n}",
                why.label()
            );
        }
        out.push_str("# HELP sigver_limit_hits_total Connections that ran into a limit, by limit.\n# TYPE sigver_limit_hits_total counter\n");
        for (limit, n) in Limit::ALL.iter().zip(self.limit_hits) {
            let _ = writeln!(
                out,
                "sigver_limit_hits_total{{limit=\"{}\"}} {n}",
                limit.label()
            );
        }
        out.push_str("# HELP sigver_tls_handshakes_total TLS handshakes of connections that sent a request, by kind: full, or resumed from a session ticket.\n# TYPE sigver_tls_handshakes_total counter\n");
        for (kind, n) in ["full", "resumed"].iter().zip(self.tls_handshakes) {
            let _ = writeln!(out, "sigver_tls_handshakes_total{{kind=\"{kind}\"}} {n}");
        }
        out.push_str("# HELP sigver_relay_latency_seconds Time a relayed message spends in the server, from the start of the loop turn that read it to the end of that turn's flush.\n# TYPE sigver_relay_latency_seconds histogram\n");
        let mut cumulative = 0;
        for (bound, n) in LATENCY_BUCKETS.iter().zip(self.relay_latency.counts) {
            cumulative += n;
            let _ = writeln!(
                out,
                "sigver_relay_latency_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.relay_latency.counts[LATENCY_BUCKETS.len()];
        let _ = writeln!(
            out,
            "sigver_relay_latency_seconds_bucket{{le=\"+Inf\"}} {cumulative}\nsigver_relay_latency_seconds_sum {}\nsigver_relay_latency_seconds_count {cumulative}",
            self.relay_latency.sum
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut m = Metrics::default();
        for (us, n) in [(1, 1), (7, 2), (300, 1), (2_000_000, 1)] {
            m.on_relayed(Duration::from_micros(us), n);
        }
        let text = m.render(&Gauges::default());
        assert!(text.contains("sigver_relay_latency_seconds_bucket{le=\"0.000005\"} 1\n"));
        assert!(text.contains("sigver_relay_latency_seconds_bucket{le=\"0.00001\"} 3\n"));
        assert!(text.contains("sigver_relay_latency_seconds_bucket{le=\"1\"} 4\n"));
        assert!(text.contains("sigver_relay_latency_seconds_bucket{le=\"+Inf\"} 5\n"));
        assert!(text.contains("sigver_relay_latency_seconds_count 5\n"));
    }

    #[test]
    fn limits_are_gauges_beside_what_they_limit() {
        // Proves the memory budget and the connection limit are exported as given.
        let g = Gauges {
            buffered_bytes: 1000,
            memory_budget: 64 << 20,
            max_connections: 48,
            ..Gauges::default()
        };
        let text = Metrics::default().render(&g);
        assert!(text.contains(
            "# TYPE sigver_memory_budget_bytes gauge\nsigver_memory_budget_bytes 67108864\n"
        ));
        assert!(text.contains("# TYPE sigver_max_connections gauge\nsigver_max_connections 48\n"));
    }

    #[test]
    fn all_lists_follow_declaration_order() {
        for (i, f) in HandshakeFailure::ALL.iter().enumerate() {
            assert_eq!(*f as usize, i);
        }
        for (i, l) in Limit::ALL.iter().enumerate() {
            assert_eq!(*l as usize, i);
        }
    }

    #[test]
    fn every_family_has_help_and_type() {
        let text = Metrics::default().render(&Gauges::default());
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            let family = if text.contains(&format!("# TYPE {name} ")) {
                name
            } else {
                family
            };
            assert!(text.contains(&format!("# TYPE {family} ")), "{line}");
            assert!(name.starts_with("sigver_"), "{line}");
        }
    }
}
