//! Choosing an endpoint of a load-balanced backend: roundRobin (starting at a random
//! endpoint, as Skipper does), random, consistentHash (a hash ring with virtual nodes, so
//! removing one endpoint moves only the keys it had), powerOfRandomNChoices (the less
//! loaded of two random endpoints), leastRequests (the least loaded of all) and
//! weightedRoundRobin (smooth weighted round robin over the endpoints' recent success
//! shares, `weights.rs`).

use super::route::Algorithm;
use super::shard::{self, Gauge, Local};
use super::weights::{RoundTrips, Smooth};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    // A stack address differs per thread, so threads started together draw differently.
    let local = 0u8;
    mix(t ^ (&local as *const u8 as u64))
}

/// splitmix64's finalizer: spreads every input bit over the output.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniformly drawn u64 (not for secrets: routing only).
pub fn random_u64() -> u64 {
    RNG.with(|s| {
        let v = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(v);
        mix(v)
    })
}

/// A uniformly drawn number in [0, 1).
pub fn random_f64() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// FNV-1a, then mixed: stable across runs and builds (the ring must not move on restart).
pub fn hash(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

/// Points per endpoint on the ring: enough for an even spread over a handful of endpoints.
const VNODES: usize = 160;

/// The requests in flight per endpoint, shared by all routes (an endpoint's load is the
/// same whichever route sent it). Each serving thread counts in its own shard, and finds
/// an endpoint's counter in a map of its own after the first time.
#[derive(Default)]
pub struct InFlight {
    counts: Mutex<HashMap<String, Arc<Gauge>>>,
}

/// Counts one request on an endpoint while it lives.
pub struct Guard(Local<Gauge>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.add(-1);
    }
}

impl InFlight {
    fn counter(&self, endpoint: &str) -> Local<Gauge> {
        shard::cached(std::ptr::from_ref(self) as usize, endpoint, |e| {
            // A poisoned lock only means another request panicked mid-insert; the map is
            // still a valid map.
            let mut m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            m.entry(e.to_string()).or_default().clone()
        })
    }

    pub fn load(&self, endpoint: &str) -> usize {
        usize::try_from(self.counter(endpoint).get()).unwrap_or(0)
    }

    /// Every endpoint seen and its load now, by name.
    pub fn all(&self) -> Vec<(String, usize)> {
        let m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<(String, usize)> = m
            .iter()
            .map(|(e, c)| (e.clone(), usize::try_from(c.get()).unwrap_or(0)))
            .collect();
        v.sort();
        v
    }

    /// Forgets the endpoints not in `live` that no request is waiting on.
    pub fn retain(&self, live: &std::collections::HashSet<String>) {
        let mut m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|e, c| live.contains(e) || c.get() != 0);
    }

    pub fn start(&self, endpoint: &str) -> Guard {
        let c = self.counter(endpoint);
        c.add(1);
        Guard(c)
    }
}

/// A hash ring for one endpoint list: (point, endpoint index), sorted by point.
type Ring = (Vec<String>, Vec<(u64, usize)>);

/// One route's balancer state.
pub struct Balancer {
    algorithm: Algorithm,
    next: AtomicUsize,
    /// The ring for the last endpoint list seen (endpoints of knit targets change).
    ring: Mutex<Option<Ring>>,
    smooth: Smooth,
}

impl Balancer {
    pub fn new(algorithm: Algorithm) -> Balancer {
        Balancer {
            algorithm,
            next: AtomicUsize::new(random_u64() as usize),
            ring: Mutex::new(None),
            smooth: Smooth::default(),
        }
    }

    /// Whether `pick` looks at the request's key (the others need none computed).
    pub fn hashes(&self) -> bool {
        self.algorithm == Algorithm::ConsistentHash
    }

    /// Whether the endpoints' round trips are to be recorded for this balancer's weights.
    pub fn weighs(&self) -> bool {
        self.algorithm == Algorithm::WeightedRoundRobin
    }

    /// Picks one of `endpoints` (not empty) for a request whose hash key is `key`.
    pub fn pick(
        &self,
        endpoints: &[String],
        key: &str,
        load: &InFlight,
        trips: &RoundTrips,
    ) -> usize {
        let n = endpoints.len();
        if n <= 1 {
            return 0;
        }
        match self.algorithm {
            Algorithm::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % n,
            Algorithm::Random => (random_u64() % n as u64) as usize,
            Algorithm::ConsistentHash => self.on_ring(endpoints, key),
            Algorithm::PowerOfRandomNChoices => {
                let a = (random_u64() % n as u64) as usize;
                let mut b = (random_u64() % (n as u64 - 1)) as usize;
                if b >= a {
                    b += 1;
                }
                if load.load(&endpoints[b]) < load.load(&endpoints[a]) {
                    b
                } else {
                    a
                }
            }
            // No endpoint with any weight (all failing lately): plain round robin, so they
            // are still tried and can earn weight back.
            Algorithm::WeightedRoundRobin => self
                .smooth
                .pick(endpoints, |e| trips.weight(e))
                .unwrap_or_else(|| self.next.fetch_add(1, Ordering::Relaxed) % n),
            Algorithm::LeastRequests => {
                // Start at a rotating offset so ties spread instead of piling on the first.
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|i| (start + i) % n)
                    .min_by_key(|&i| load.load(&endpoints[i]))
                    .unwrap_or(0)
            }
        }
    }

    fn on_ring(&self, endpoints: &[String], key: &str) -> usize {
        let mut cache = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let stale = cache.as_ref().is_none_or(|(eps, _)| eps != endpoints);
        if stale {
            *cache = Some((endpoints.to_vec(), ring(endpoints)));
        }
        let Some((_, points)) = cache.as_ref() else {
            return 0;
        };
        let h = hash(key.as_bytes());
        let i = points.partition_point(|(p, _)| *p < h);
        points.get(i).or(points.first()).map_or(0, |(_, e)| *e)
    }
}

/// The ring: each endpoint's virtual points, by the endpoint's name (not its position, so
/// a removal leaves the others' points where they were).
fn ring(endpoints: &[String]) -> Vec<(u64, usize)> {
    let mut points: Vec<(u64, usize)> = endpoints
        .iter()
        .enumerate()
        .flat_map(|(i, e)| (0..VNODES).map(move |v| (hash(format!("{e}#{v}").as_bytes()), i)))
        .collect();
    points.sort_unstable();
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:80")).collect()
    }

    /// A pick with no load and no weights.
    fn pick(b: &Balancer, e: &[String], key: &str) -> usize {
        b.pick(e, key, &InFlight::default(), &RoundTrips::default())
    }

    fn spread(b: &Balancer, e: &[String], load: &InFlight) -> Vec<usize> {
        let mut c = vec![0; e.len()];
        for k in 0..1000 {
            c[b.pick(e, &format!("client{k}"), load, &RoundTrips::default())] += 1;
        }
        c
    }

    #[test]
    fn round_robin_is_even() {
        let b = Balancer::new(Algorithm::RoundRobin);
        assert_eq!(spread(&b, &eps(4), &InFlight::default()), vec![250; 4]);
    }

    #[test]
    fn random_and_power_of_two_spread() {
        for a in [Algorithm::Random, Algorithm::PowerOfRandomNChoices] {
            let b = Balancer::new(a);
            for c in spread(&b, &eps(4), &InFlight::default()) {
                assert!((170..330).contains(&c), "{a:?}: {c}");
            }
        }
    }

    #[test]
    fn least_loaded_endpoints_are_preferred() {
        let load = InFlight::default();
        let e = eps(3);
        let _busy: Vec<Guard> = (0..5).map(|_| load.start(&e[0])).collect();
        let _one = load.start(&e[1]);
        let b = Balancer::new(Algorithm::LeastRequests);
        assert_eq!(spread(&b, &e, &load), vec![0, 0, 1000]);
        // Power of two: the busiest endpoint only wins when drawn twice, which it cannot.
        let b = Balancer::new(Algorithm::PowerOfRandomNChoices);
        assert_eq!(spread(&b, &e, &load)[0], 0);
        drop(_busy);
        assert_eq!(load.load(&e[0]), 0);
    }

    #[test]
    fn consistent_hash_is_sticky_and_moves_only_the_removed_keys() {
        let b = Balancer::new(Algorithm::ConsistentHash);
        let five = eps(5);
        let before: Vec<usize> = (0..1000)
            .map(|k| pick(&b, &five, &format!("192.0.2.{k}")))
            .collect();
        let again: Vec<usize> = (0..1000)
            .map(|k| pick(&b, &five, &format!("192.0.2.{k}")))
            .collect();
        assert_eq!(before, again, "sticky per key");
        let mut counts = [0; 5];
        for &i in &before {
            counts[i] += 1;
        }
        for c in counts {
            assert!((120..290).contains(&c), "balance {counts:?}");
        }
        let four: Vec<String> = five.iter().filter(|e| *e != &five[2]).cloned().collect();
        for (k, &was) in before.iter().enumerate() {
            let now = &four[pick(&b, &four, &format!("192.0.2.{k}"))];
            if was != 2 {
                assert_eq!(now, &five[was], "key {k} moved off a surviving endpoint");
            }
        }
    }
}
