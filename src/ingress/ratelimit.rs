//! Skipper's local rate limits: `ratelimit(N, "1m")` lets a route take N requests per
//! window from everyone together; `clientRatelimit(N, "1m"[, "Header1,Header2"])` N per
//! client, a client being its X-Forwarded-For's first address (else the peer), or the
//! values of the named headers. A sliding window: a request is allowed when fewer than N
//! were allowed in the last window; refused ones are told when the oldest leaves it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys kept before the idle ones are swept out.
const SWEEP_AT: usize = 10_000;

pub struct Limiter {
    pub max: usize,
    pub window: Duration,
    hits: Mutex<Hits>,
}

struct Hits {
    by_key: HashMap<String, VecDeque<Instant>>,
    /// The size at which idle keys are swept out next: twice what a sweep kept, so a map
    /// of busy keys is not scanned on every request.
    sweep_at: usize,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Limiter({} per {:?})", self.max, self.window)
    }
}

impl Limiter {
    pub fn new(max: usize, window: Duration) -> Limiter {
        Limiter {
            max,
            window,
            hits: Mutex::new(Hits {
                by_key: HashMap::new(),
                sweep_at: SWEEP_AT,
            }),
        }
    }

    /// Counts a request for `key`: Ok if allowed, else how long until one would be.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        // A poisoned map is still a valid map (a panic elsewhere mid-update).
        let mut hits = self.hits.lock().unwrap_or_else(|p| p.into_inner());
        let Hits {
            by_key: m,
            sweep_at,
        } = &mut *hits;
        if m.len() >= *sweep_at {
            let window = self.window;
            m.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
            *sweep_at = SWEEP_AT.max(2 * m.len());
        }
        if !m.contains_key(key) {
            m.insert(key.to_string(), VecDeque::new());
        }
        // Present: inserted just above if it was not.
        let Some(q) = m.get_mut(key) else {
            return Ok(());
        };
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            q.pop_front();
        }
        if q.len() < self.max {
            q.push_back(now);
            return Ok(());
        }
        let oldest = q.front().copied().unwrap_or(now);
        Err(self.window.saturating_sub(now.duration_since(oldest)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window_per_key() {
        let l = Limiter::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(l.check("a", t0).is_ok());
        assert!(l.check("a", t0 + Duration::from_secs(1)).is_ok());
        let wait = l.check("a", t0 + Duration::from_secs(2)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(8));
        assert!(l.check("b", t0 + Duration::from_secs(2)).is_ok());
        assert!(l.check("a", t0 + Duration::from_secs(10)).is_ok());
        assert!(l.check("a", t0 + Duration::from_secs(10)).is_err());
    }
}
