//! The ingress's Prometheus figures: requests per route and status class, latency per
//! route, requests in flight, and backend errors per endpoint.

use crate::metrics::{Histogram, escape, gauge_header};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct RouteStats {
    /// 1xx..5xx.
    classes: [AtomicU64; 5],
    latency: Histogram,
}

#[derive(Default)]
pub struct Metrics {
    routes: Mutex<BTreeMap<String, Arc<RouteStats>>>,
    backend_errors: Mutex<BTreeMap<String, u64>>,
    pub in_flight: AtomicI64,
    retries: AtomicU64,
}

impl Metrics {
    pub fn observe(&self, route: &str, status: u16, d: Duration) {
        let stats = {
            // A poisoned map is still a valid map (a panic elsewhere mid-insert).
            let mut m = self.routes.lock().unwrap_or_else(|p| p.into_inner());
            m.entry(route.to_string())
                .or_insert_with(|| {
                    Arc::new(RouteStats {
                        classes: Default::default(),
                        latency: Histogram::new(),
                    })
                })
                .clone()
        };
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        stats.classes[class].fetch_add(1, Relaxed);
        stats.latency.observe(d);
    }

    pub fn backend_error(&self, endpoint: &str) {
        let mut m = self
            .backend_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *m.entry(endpoint.to_string()).or_default() += 1;
    }

    /// A request sent again to another endpoint after a connect failure.
    pub fn retry(&self) {
        self.retries.fetch_add(1, Relaxed);
    }

    /// The figures; `ejected`: the endpoints passive health keeps out of the rotation.
    pub fn render(&self, ejected: &[String]) -> String {
        let mut out = String::new();
        let routes = self
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        gauge_header(
            &mut out,
            "knit_ingress_requests_total",
            "Requests answered, by route and status class.",
            "counter",
        );
        for (r, s) in &routes {
            for (i, c) in s.classes.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "knit_ingress_requests_total{{route=\"{}\",class=\"{}xx\"}} {}",
                    escape(r),
                    i + 1,
                    c.load(Relaxed)
                );
            }
        }
        gauge_header(
            &mut out,
            "knit_ingress_request_seconds",
            "Time from the request to the response's headers, by route.",
            "histogram",
        );
        for (r, s) in &routes {
            s.latency.render(
                &mut out,
                "knit_ingress_request_seconds",
                &format!("route=\"{}\"", escape(r)),
            );
        }
        gauge_header(
            &mut out,
            "knit_ingress_in_flight",
            "Requests being served now.",
            "gauge",
        );
        let _ = writeln!(
            out,
            "knit_ingress_in_flight {}",
            self.in_flight.load(Relaxed)
        );
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
