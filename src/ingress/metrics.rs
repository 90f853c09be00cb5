//! The ingress's Prometheus figures: requests per route and status class, latency per
//! route, requests in flight, and backend errors per endpoint.

use super::shard::{self, Gauge, Local, Padded, SHARDS};
use crate::metrics::{Histogram, escape, gauge_header};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One thread's share of a route's (or endpoint's) figures.
#[derive(Default)]
struct Shard {
    /// 1xx..5xx.
    classes: [AtomicU64; 5],
    latency: Histogram,
}

/// A route's or an endpoint's figures, one shard per serving thread.
pub struct RouteStats {
    shards: [Padded<Shard>; SHARDS],
}

impl RouteStats {
    fn new() -> Arc<RouteStats> {
        Arc::new(RouteStats {
            shards: Default::default(),
        })
    }

    pub fn observe(&self, status: u16, d: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        let s = &self.shards[shard::shard()].0;
        s.classes[class].fetch_add(1, Relaxed);
        s.latency.observe(d);
    }

    /// The shards added up: responses per status class, and the latencies.
    fn total(&self) -> ([u64; 5], Histogram) {
        let (mut classes, latency) = ([0u64; 5], Histogram::new());
        for s in &self.shards {
            for (sum, c) in classes.iter_mut().zip(&s.0.classes) {
                *sum += c.load(Relaxed);
            }
            latency.absorb(&s.0.latency);
        }
        (classes, latency)
    }
}

type Stats = Mutex<BTreeMap<String, Arc<RouteStats>>>;

fn stats_of(m: &Stats, key: &str) -> Arc<RouteStats> {
    // A poisoned map is still a valid map (a panic elsewhere mid-insert).
    let mut m = m.lock().unwrap_or_else(|p| p.into_inner());
    // Every request after a route's first finds it: no key allocated for those.
    if let Some(s) = m.get(key) {
        return s.clone();
    }
    m.entry(key.to_string())
        .or_insert_with(RouteStats::new)
        .clone()
}

/// The lines of a family of figures (a counter by status class and a latency histogram)
/// for each key of `stats`, labelled `label="KEY"`.
fn render_stats(
    out: &mut String,
    stats: &Stats,
    label: &str,
    (counter, counter_help): (&str, &str),
    (histogram, histogram_help): (&str, &str),
) {
    let totals: Vec<(String, [u64; 5], Histogram)> = stats
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(k, s)| {
            let (classes, latency) = s.total();
            (k.clone(), classes, latency)
        })
        .collect();
    gauge_header(out, counter, counter_help, "counter");
    for (k, classes, _) in &totals {
        for (i, n) in classes.iter().enumerate() {
            let _ = writeln!(
                out,
                "{counter}{{{label}=\"{}\",class=\"{}xx\"}} {n}",
                escape(k),
                i + 1
            );
        }
    }
    gauge_header(out, histogram, histogram_help, "histogram");
    for (k, _, latency) in &totals {
        latency.render(out, histogram, &format!("{label}=\"{}\"", escape(k)));
    }
}

#[derive(Default)]
pub struct Metrics {
    routes: Stats,
    /// The same per backend endpoint (the responses endpoints gave).
    backends: Stats,
    backend_errors: Mutex<BTreeMap<String, u64>>,
    pub in_flight: Gauge,
    retries: AtomicU64,
    /// The figures of requests no route matched (kept, not looked up per 404).
    unmatched: std::sync::OnceLock<Arc<RouteStats>>,
}

impl Metrics {
    /// A request no route matched, under the route "(none)".
    pub fn observe_unmatched(&self, status: u16, d: Duration) {
        self.unmatched
            .get_or_init(|| stats_of(&self.routes, "(none)"))
            .observe(status, d);
    }

    /// A route's figures, to be kept beside the route (no lookup per request).
    pub fn route(&self, route: &str) -> Arc<RouteStats> {
        stats_of(&self.routes, route)
    }

    /// A response an endpoint gave (status as it sent it; time to its headers).
    pub fn observe_backend(&self, endpoint: &str, status: u16, d: Duration) {
        let stats: Local<RouteStats> =
            shard::cached(std::ptr::from_ref(&self.backends) as usize, endpoint, |e| {
                stats_of(&self.backends, e)
            });
        stats.observe(status, d);
    }

    pub fn backend_error(&self, endpoint: &str) {
        let mut m = self
            .backend_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *m.entry(endpoint.to_string()).or_default() += 1;
    }

    /// Forgets the figures of endpoints not in `live` and of routes not in `routes`
    /// (their series end, as Prometheus expects of a target that went away).
    pub fn retain(&self, live: &HashSet<String>, routes: &HashSet<&str>) {
        self.backends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| live.contains(k));
        self.backend_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| live.contains(k));
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            // (A request on the table before, finishing later, may put a gone route back:
            // the next pass takes it out again.)
            .retain(|k, _| k == "(none)" || routes.contains(k.as_str()));
    }

    /// A request sent again to another endpoint after a connect failure.
    pub fn retry(&self) {
        self.retries.fetch_add(1, Relaxed);
    }

    /// The figures; `ejected`: the endpoints passive health keeps out of the rotation;
    /// `loads`: requests waiting on each endpoint now.
    pub fn render(&self, ejected: &[String], loads: &[(String, usize)]) -> String {
        let mut out = String::new();
        render_stats(
            &mut out,
            &self.routes,
            "route",
            (
                "knit_ingress_requests_total",
                "Requests answered, by route and status class.",
            ),
            (
                "knit_ingress_request_seconds",
                "Time from the request to the response's headers, by route.",
            ),
        );
        gauge_header(
            &mut out,
            "knit_ingress_in_flight",
            "Requests being served now.",
            "gauge",
        );
        let _ = writeln!(out, "knit_ingress_in_flight {}", self.in_flight.get());
        render_stats(
            &mut out,
            &self.backends,
            "endpoint",
            (
                "knit_ingress_backend_requests_total",
                "Responses from backend endpoints, by endpoint and status class.",
            ),
            (
                "knit_ingress_backend_seconds",
                "Time from sending a request to an endpoint to its response's headers.",
            ),
        );
        gauge_header(
            &mut out,
            "knit_ingress_backend_in_flight",
            "Requests waiting for an endpoint's response headers now.",
            "gauge",
        );
        for (e, n) in loads {
            let _ = writeln!(
                out,
                "knit_ingress_backend_in_flight{{endpoint=\"{}\"}} {n}",
                escape(e)
            );
        }
        gauge_header(
            &mut out,
            "knit_ingress_backend_errors_total",
            "Requests a backend endpoint failed (connect or protocol errors).",
            "counter",
        );
        for (e, n) in self
            .backend_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "knit_ingress_backend_errors_total{{endpoint=\"{}\"}} {n}",
                escape(e)
            );
        }
        gauge_header(
            &mut out,
            "knit_ingress_retries_total",
            "Requests sent again to another endpoint after a connect failure.",
            "counter",
        );
        let _ = writeln!(
            out,
            "knit_ingress_retries_total {}",
            self.retries.load(Relaxed)
        );
        gauge_header(
            &mut out,
            "knit_ingress_endpoint_ejected",
            "Endpoints out of the rotation after failing in a row (passive health).",
            "gauge",
        );
        for e in ejected {
            let _ = writeln!(
                out,
                "knit_ingress_endpoint_ejected{{endpoint=\"{}\"}} 1",
                escape(e)
            );
        }
        out
    }
}
