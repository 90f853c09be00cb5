//! Passive health: an endpoint whose requests fail `failures` times in a row (connect
//! errors, timeouts, broken responses) leaves the rotation for `eject_for`, then is tried
//! again (and needs as many failures in a row to leave again). When every endpoint of a
//! backend is out, all of them are used: better a likely failure than a certain 503.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    failures: u32,
    out_until: Option<Instant>,
}

pub struct Health {
    failures: u32,
    eject_for: Duration,
    /// Endpoints with a failure since their last success (only those are kept).
    endpoints: Mutex<HashMap<String, State>>,
    /// How many there are: while none, requests take no lock.
    tracked: AtomicUsize,
    /// When the last ejection ends, in ms since `start`: after it, requests take no lock
    /// either (failures short of an ejection leave the rotation as it is).
    ejected_until: AtomicU64,
    start: Instant,
}

impl Health {
    /// `failures` 0 turns ejection off.
    pub fn new(failures: u32, eject_for: Duration) -> Health {
        Health {
            failures,
            eject_for,
            endpoints: Mutex::new(HashMap::new()),
            tracked: AtomicUsize::new(0),
            ejected_until: AtomicU64::new(0),
            start: Instant::now(),
        }
    }

    /// The endpoints in the rotation now, in their order; all of them if none is.
    pub fn usable<'a>(&self, endpoints: &'a [String]) -> Cow<'a, [String]> {
        if self.tracked.load(Ordering::Acquire) == 0 {
            return Cow::Borrowed(endpoints);
        }
        let now = Instant::now();
        if self.ms(now) >= self.ejected_until.load(Ordering::Acquire) {
            return Cow::Borrowed(endpoints);
        }
        // A poisoned map is still a valid map (a panic elsewhere mid-update).
        let m = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        let out = |e: &String| {
            m.get(e)
                .and_then(|s| s.out_until)
                .is_some_and(|until| until > now)
        };
        if !endpoints.iter().any(out) || endpoints.iter().all(out) {
            return Cow::Borrowed(endpoints);
        }
        Cow::Owned(endpoints.iter().filter(|e| !out(e)).cloned().collect())
    }

    pub fn success(&self, endpoint: &str) {
        if self.tracked.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut m = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        if m.remove(endpoint).is_some() {
            self.tracked.store(m.len(), Ordering::Release);
        }
    }

    /// Counts a failure; true if it took the endpoint out of the rotation.
    pub fn failure(&self, endpoint: &str) -> bool {
        if self.failures == 0 {
            return false;
        }
        let mut m = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        if !m.contains_key(endpoint) {
            m.insert(endpoint.to_string(), State::default());
            self.tracked.store(m.len(), Ordering::Release);
        }
        let Some(s) = m.get_mut(endpoint) else {
            return false;
        };
        let now = Instant::now();
        if s.out_until.is_some_and(|u| u > now) {
            return false;
        }
        s.failures += 1;
        if s.failures >= self.failures {
            s.failures = 0;
            s.out_until = Some(now + self.eject_for);
            // Rounded up: the lock-free look never ends an ejection early.
            let until = self.ms(now + self.eject_for) + 1;
            self.ejected_until.fetch_max(until, Ordering::AcqRel);
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

    fn ms(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.start).as_millis()).unwrap_or(u64::MAX)
    }

    /// Forgets endpoints not in `live` (gone from the table, or their `knit://` target
    /// moved): nothing of theirs is kept, and requests stop taking the lock for them.
    pub fn retain(&self, live: &HashSet<String>) {
        let mut m = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|e, _| live.contains(e));
        self.tracked.store(m.len(), Ordering::Release);
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
        assert_eq!(*h.usable(&eps), eps);
        assert!(h.failure("a:1"));
        assert_eq!(*h.usable(&eps), vec!["b:1".to_string()]);
        assert_eq!(h.ejected(), vec!["a:1".to_string()]);
        // All out: all used.
        for _ in 0..3 {
            h.failure("b:1");
        }
        assert_eq!(*h.usable(&eps), eps);
        std::thread::sleep(Duration::from_millis(60));
        assert!(h.ejected().is_empty());
        assert_eq!(*h.usable(&eps), eps);
        // Successes forget the failures: no lock taken again.
        h.success("a:1");
        h.success("b:1");
        assert_eq!(h.tracked.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_failed_endpoint_that_leaves_is_forgotten() {
        let h = Health::new(1, Duration::from_secs(60));
        let eps = ["a:1".to_string(), "b:1".to_string()];
        assert!(h.failure("gone:1"));
        assert!(h.failure("b:1"));
        h.retain(&eps.iter().cloned().collect());
        assert_eq!(h.ejected(), vec!["b:1".to_string()]);
        h.retain(&HashSet::new());
        assert_eq!(h.tracked.load(Ordering::Relaxed), 0);
        assert!(h.ejected().is_empty());
    }

    #[test]
    fn after_the_last_ejection_ends_requests_take_no_lock() {
        let h = std::sync::Arc::new(Health::new(1, Duration::from_millis(20)));
        let eps = vec!["a:1".to_string(), "b:1".to_string()];
        assert!(h.failure("a:1"));
        assert_eq!(*h.usable(&eps), vec!["b:1".to_string()]);
        // The lock is held here: a look that needs it waits until it is let go.
        let held = h.endpoints.lock().unwrap();
        std::thread::sleep(Duration::from_millis(30));
        let (tx, rx) = std::sync::mpsc::channel();
        let (h2, eps2) = (h.clone(), eps.clone());
        std::thread::spawn(move || tx.send(h2.usable(&eps2).into_owned()));
        let seen = rx.recv_timeout(Duration::from_secs(2));
        drop(held);
        assert_eq!(seen.expect("usable() waited on the lock"), eps);
    }
}
