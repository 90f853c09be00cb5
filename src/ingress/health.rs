//! Passive health: an endpoint whose requests fail `failures` times in a row (connect
//! errors, timeouts, broken responses) leaves the rotation for `eject_for`, then is tried
//! again (and needs as many failures in a row to leave again). When every endpoint of a
//! backend is out, all of them are used: better a likely failure than a certain 503.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    failures: u32,
    out_until: Option<Instant>,
}

pub struct Health {
    failures: u32,
    eject_for: Duration,
    endpoints: Mutex<HashMap<String, State>>,
}

impl Health {
    /// `failures` 0 turns ejection off.
    pub fn new(failures: u32, eject_for: Duration) -> Health {
        Health {
            failures,
            eject_for,
            endpoints: Mutex::new(HashMap::new()),
        }
    }

    /// The endpoints in the rotation now, in their order; all of them if none is.
    pub fn usable(&self, endpoints: &[String]) -> Vec<String> {
        // A poisoned map is still a valid map (a panic elsewhere mid-update).
        let m = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let healthy: Vec<String> = endpoints
            .iter()
            .filter(|e| {
                m.get(*e)
                    .and_then(|s| s.out_until)
                    .is_none_or(|until| until <= now)
            })
            .cloned()
            .collect();
        if healthy.is_empty() {
            endpoints.to_vec()
        } else {
            healthy
        }
    }

    pub fn success(&self, endpoint: &str) {
        let mut m = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = m.get_mut(endpoint) {
            s.failures = 0;
            s.out_until = None;
        }
    }

    /// Counts a failure; true if it took the endpoint out of the rotation.
    pub fn failure(&self, endpoint: &str) -> bool {
        if self.failures == 0 {
            return false;
        }
        let mut m = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        let s = m.entry(endpoint.to_string()).or_default();
        let now = Instant::now();
        if s.out_until.is_some_and(|u| u > now) {
            return false;
        }
        s.failures += 1;
        if s.failures >= self.failures {
            s.failures = 0;
            s.out_until = Some(now + self.eject_for);
            tracing::warn!(
                endpoint,
                for_ms = self.eject_for.as_millis() as u64,
                "endpoint failed {} times in a row: out of the rotation",
                self.failures
            );
            return true;
        }
        false
    }

    /// The endpoints out of the rotation now.
    pub fn ejected(&self) -> Vec<String> {
        let m = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let mut v: Vec<String> = m
            .iter()
            .filter(|(_, s)| s.out_until.is_some_and(|u| u > now))
            .map(|(e, _)| e.clone())
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejects_after_n_failures_in_a_row_and_returns() {
        let h = Health::new(3, Duration::from_millis(50));
        let eps = vec!["a:1".to_string(), "b:1".to_string()];
        assert!(!h.failure("a:1"));
        assert!(!h.failure("a:1"));
        h.success("a:1");
        assert!(!h.failure("a:1"));
        assert!(!h.failure("a:1"));
        assert_eq!(h.usable(&eps), eps);
        assert!(h.failure("a:1"));
        assert_eq!(h.usable(&eps), vec!["b:1".to_string()]);
        assert_eq!(h.ejected(), vec!["a:1".to_string()]);
        // All out: all used.
        for _ in 0..3 {
            h.failure("b:1");
        }
        assert_eq!(h.usable(&eps), eps);
        std::thread::sleep(Duration::from_millis(60));
        assert!(h.ejected().is_empty());
        assert_eq!(h.usable(&eps), eps);
    }
}
