//! weightedRoundRobin's weights, as Skipper defines them: an endpoint's weight is the
//! share of its recent round trips that succeeded (a round trip fails on a connect error,
//! a broken or timed-out exchange, or a 5xx answer). Counts are kept only for endpoints of
//! weightedRoundRobin routes, per serving thread, and halved every few seconds so the
//! weights follow what endpoints do now.

use super::shard::{self, Gauge, Local};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// The least weight an endpoint has (one pick in twenty against a healthy one).
const MIN_WEIGHT: f64 = 0.05;

#[derive(Default)]
struct Counts {
    total: Gauge,
    failed: Gauge,
}

/// Round trips and failed ones, per endpoint.
#[derive(Default)]
pub struct RoundTrips {
    counts: Mutex<HashMap<String, Arc<Counts>>>,
}

impl RoundTrips {
    fn counts(&self, endpoint: &str) -> Local<Counts> {
        shard::cached(std::ptr::from_ref(self) as usize, endpoint, |e| {
            // A poisoned map is still a valid map (a panic elsewhere mid-insert).
            let mut m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            m.entry(e.to_string()).or_default().clone()
        })
    }

    pub fn record(&self, endpoint: &str, ok: bool) {
        let c = self.counts(endpoint);
        c.total.add(1);
        if !ok {
            c.failed.add(1);
        }
    }

    /// The share of `endpoint`'s recent round trips that succeeded; 1 with none yet.
    pub fn weight(&self, endpoint: &str) -> f64 {
        let c = self.counts(endpoint);
        let total = c.total.get();
        if total <= 0 {
            return 1.0;
        }
        let ok = (total - c.failed.get()).clamp(0, total);
        // A floor: an endpoint failing lately is still tried now and then, so it can earn
        // its weight back (with no requests it would record nothing new).
        (ok as f64 / total as f64).max(MIN_WEIGHT)
    }

    /// Halves every count: older round trips weigh less.
    pub fn decay(&self) {
        let m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        // Failed first: a reader in between never sees more failures than round trips.
        for c in m.values() {
            c.failed.halve();
            c.total.halve();
        }
    }

    /// Forgets the endpoints not in `live`.
    pub fn retain(&self, live: &HashSet<String>) {
        let mut m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|e, _| live.contains(e));
    }
}

/// Smooth weighted round robin (nginx's): each pick adds every endpoint's weight to its
/// current value, takes the highest, and takes the sum of the weights off the one taken.
/// Over any run the picks follow the weights, interleaved rather than in bursts.
#[derive(Default)]
pub struct Smooth {
    /// The endpoint list the values are for, and the values.
    current: Mutex<(Vec<String>, Vec<f64>)>,
}

impl Smooth {
    /// The index of the next endpoint, or None when no endpoint has any weight.
    pub fn pick(&self, endpoints: &[String], weight: impl Fn(&str) -> f64) -> Option<usize> {
        // The weights are looked up before the lock: other requests wait only for the sums.
        let weights: Vec<f64> = endpoints.iter().map(|e| weight(e).max(0.0)).collect();
        let sum: f64 = weights.iter().sum();
        if sum <= 0.0 {
            return None;
        }
        let mut guard = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let (list, current) = &mut *guard;
        if list.as_slice() != endpoints {
            *list = endpoints.to_vec();
            *current = vec![0.0; endpoints.len()];
        }
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += w;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= sum;
        Some(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_follow_the_weights_interleaved() {
        let s = Smooth::default();
        let e: Vec<String> = ["a", "b", "c"].iter().map(|x| x.to_string()).collect();
        let w = |x: &str| match x {
            "a" => 1.0,
            "b" => 0.5,
            _ => 0.0,
        };
        let picks: Vec<usize> = (0..3000).map(|_| s.pick(&e, w).unwrap()).collect();
        let count = |i| picks.iter().filter(|&&p| p == i).count();
        assert_eq!((count(0), count(1), count(2)), (2000, 1000, 0));
        // Interleaved: b never twice in a row at these weights.
        assert!(picks.windows(2).all(|p| p != [1, 1]), "{:?}", &picks[..12]);
        // Equal weights: round robin.
        let eq: Vec<usize> = (0..6).map(|_| s.pick(&e[..2], |_| 1.0).unwrap()).collect();
        assert_eq!(eq.iter().filter(|&&p| p == 0).count(), 3);
        assert_eq!(s.pick(&e, |_| 0.0), None);
    }

    #[test]
    fn weights_are_the_recent_share_of_good_round_trips() {
        let t = RoundTrips::default();
        assert_eq!(t.weight("x"), 1.0);
        for i in 0..100 {
            t.record("x", i % 4 != 0);
        }
        assert_eq!(t.weight("x"), 0.75);
        t.decay();
        for _ in 0..50 {
            t.record("x", true);
        }
        // 50 of them old (12 failed, after halving 25), 50 new and good.
        assert!(
            (t.weight("x") - 88.0 / 100.0).abs() < 0.02,
            "{}",
            t.weight("x")
        );
        t.retain(&HashSet::new());
        assert!(t.counts.lock().unwrap().is_empty());
    }
}
