//! Phase timing for diagnosing latency: `KNIT_TRACE=1 knit attach ...` prints how long each
//! step of a command took to stderr. Costs one env lookup per process when off.

use std::sync::OnceLock;
use std::time::Instant;

fn start() -> Option<&'static Instant> {
    static START: OnceLock<Option<Instant>> = OnceLock::new();
    START
        .get_or_init(|| std::env::var_os("KNIT_TRACE").map(|_| Instant::now()))
        .as_ref()
}

/// Marks the end of a phase.
pub fn phase(name: &str) {
    if let Some(t) = start() {
        eprintln!(
            "knit trace: {:>8.3} ms  {name}",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
}
