//! Per-thread shards for figures every request updates: each serving thread writes its
//! own cache line, and readers (metrics scrapes, the balancers' load look-ups) add the
//! shards up. A count shared by all threads would bounce its line between the cores on
//! every request.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Shards per figure; threads beyond this share (still correct, only slower).
pub const SHARDS: usize = 8;

/// This thread's shard.
pub fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: usize = NEXT.fetch_add(1, Relaxed) % SHARDS;
    }
    MINE.with(|s| *s)
}

/// A value alone on its cache line (two lines: adjacent-line prefetch pairs them).
#[repr(align(128))]
#[derive(Default)]
pub struct Padded<T>(pub T);

/// A gauge (or counter) in shards.
#[derive(Default)]
pub struct Gauge([Padded<AtomicI64>; SHARDS]);

impl Gauge {
    pub fn add(&self, n: i64) {
        self.0[shard()].0.fetch_add(n, Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.iter().map(|p| p.0.load(Relaxed)).sum()
    }

    /// Halves the count (what is added meanwhile is kept whole).
    pub fn halve(&self) {
        for p in &self.0 {
            let v = p.0.load(Relaxed);
            p.0.fetch_sub(v - v / 2, Relaxed);
        }
    }
}

/// A per-thread handle on a shared value: cloning it touches a count only this thread
/// writes (cloning the shared `Arc` would write the value's own count from every thread).
pub type Local<T> = Arc<Arc<T>>;

/// A `Local<T>` of any `T`.
type AnyLocal = Arc<dyn std::any::Any + Send + Sync>;

/// Per map (by address) and key, a handle.
type Seen = HashMap<usize, HashMap<String, AnyLocal>>;

thread_local! {
    /// Per map (by address) and key: this thread's handle on what `cached` found there,
    /// and the `FORGOTTEN` count it is of.
    static SEEN: RefCell<(u64, Seen)> = RefCell::new((0, HashMap::new()));
}

/// Bumped when keys leave the shared maps: each thread then drops its handles once.
static FORGOTTEN: AtomicU64 = AtomicU64::new(0);

/// Makes every thread look its handles up again (after keys left the shared maps, so a
/// thread holds nothing for a key that is gone).
pub fn forget_cached() {
    FORGOTTEN.fetch_add(1, Relaxed);
}

/// `lookup(key)` remembered per thread: a shared map behind a lock is read once per
/// thread and key, not on every request. `owner` tells maps apart (its address); the
/// values must never be replaced in the shared map.
pub fn cached<T: Send + Sync + 'static>(
    owner: usize,
    key: &str,
    lookup: impl FnOnce(&str) -> Arc<T>,
) -> Local<T> {
    let forgotten = FORGOTTEN.load(Relaxed);
    let hit = SEEN.with_borrow_mut(|(seen, m)| {
        if *seen != forgotten {
            *seen = forgotten;
            m.clear();
        }
        m.get(&owner)
            .and_then(|keys| keys.get(key))
            .and_then(|v| v.clone().downcast::<Arc<T>>().ok())
    });
    if let Some(v) = hit {
        return v;
    }
    let v: Local<T> = Arc::new(lookup(key));
    SEEN.with_borrow_mut(|(_, m)| {
        m.entry(owner)
            .or_default()
            .insert(key.to_string(), v.clone());
    });
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_add_up_across_threads() {
        let g = Arc::new(Gauge::default());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        g.add(1);
                    }
                    g.add(-10);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(g.get(), 4 * 990);
    }

    #[test]
    fn cached_looks_up_once_per_thread_and_key() {
        let calls = AtomicUsize::new(0);
        let look = |k: &str| {
            calls.fetch_add(1, Relaxed);
            Arc::new(k.len())
        };
        assert_eq!(**cached(1, "abc", look), 3);
        assert_eq!(**cached::<usize>(1, "abc", |_| unreachable!()), 3);
        assert_eq!(**cached(2, "abc", |k| Arc::new(k.len() + 1)), 4);
        assert_eq!(calls.load(Relaxed), 1);
        // Once forgotten, looked up again.
        forget_cached();
        assert_eq!(**cached(1, "abc", look), 3);
        assert_eq!(calls.load(Relaxed), 2);
    }
}
