//! Counters for the DNS server, rendered in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub struct Metrics {
    pub queries_udp: AtomicU64,
    pub queries_tcp: AtomicU64,
    /// Responses by rcode: NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED.
    pub rcodes: [AtomicU64; 6],
    pub local_answers: AtomicU64,
    pub forwarded: AtomicU64,
    pub forward_failures: AtomicU64,
    pub malformed: AtomicU64,
    /// Queries and connections not served, by reason (`REFUSED_REASONS`).
    pub refused: [AtomicU64; 4],
    forward: crate::metrics::Histogram,
}

pub const RCODE_NAMES: [&str; 6] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED",
];

/// Why a query or TCP connection was not served: it arrived on another link than the
/// network's bridge; its source is not attached to the network; its client already holds
/// the per-client TCP connections; the listener already holds the most TCP connections.
pub const REFUSED_REASONS: [&str; 4] = ["wrong_link", "not_attached", "client_tcp_cap", "tcp_cap"];
pub const REFUSED_WRONG_LINK: usize = 0;
pub const REFUSED_NOT_ATTACHED: usize = 1;
pub const REFUSED_CLIENT_TCP_CAP: usize = 2;
pub const REFUSED_TCP_CAP: usize = 3;

impl Metrics {
    pub fn refuse(&self, reason: usize) {
        if let Some(c) = self.refused.get(reason) {
            c.fetch_add(1, Relaxed);
        }
    }

    pub fn rcode(&self, code: u16) {
        if let Some(c) = self.rcodes.get(code as usize) {
            c.fetch_add(1, Relaxed);
        }
    }

    pub fn forward_latency(&self, d: std::time::Duration) {
        self.forward.observe(d);
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# HELP knit_dns_queries_total DNS queries received.\n# TYPE knit_dns_queries_total counter"
        );
        let _ = writeln!(
            s,
            "knit_dns_queries_total{{proto=\"udp\"}} {}",
            self.queries_udp.load(Relaxed)
        );
        let _ = writeln!(
            s,
            "knit_dns_queries_total{{proto=\"tcp\"}} {}",
            self.queries_tcp.load(Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP knit_dns_responses_total DNS responses by rcode.\n# TYPE knit_dns_responses_total counter"
        );
        for (i, n) in RCODE_NAMES.iter().enumerate() {
            let _ = writeln!(
                s,
                "knit_dns_responses_total{{rcode=\"{n}\"}} {}",
                self.rcodes[i].load(Relaxed)
            );
        }
        let _ = writeln!(
            s,
            "# HELP knit_dns_refused_total Queries and TCP connections not served, by reason.\n# TYPE knit_dns_refused_total counter"
        );
        for (i, n) in REFUSED_REASONS.iter().enumerate() {
            let _ = writeln!(
                s,
                "knit_dns_refused_total{{reason=\"{n}\"}} {}",
                self.refused[i].load(Relaxed)
            );
        }
        for (name, help, v) in [
            (
                "knit_dns_local_answers_total",
                "Queries answered from knit's records.",
                &self.local_answers,
            ),
            (
                "knit_dns_forwarded_total",
                "Queries forwarded upstream.",
                &self.forwarded,
            ),
            (
                "knit_dns_forward_failures_total",
                "Forwarded queries no upstream answered.",
                &self.forward_failures,
            ),
            (
                "knit_dns_malformed_total",
                "Packets that were not valid DNS queries.",
                &self.malformed,
            ),
        ] {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        }
        let _ = writeln!(
            s,
            "# HELP knit_dns_forward_seconds Upstream round trip of forwarded queries.\n# TYPE knit_dns_forward_seconds histogram"
        );
        self.forward.render(&mut s, "knit_dns_forward_seconds", "");
        crate::cluster::status::STATUS.render(&mut s);
        s
    }
}
