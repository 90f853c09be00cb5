//! State kept per endpoint and per route (passive health, load, figures, the serving
//! threads' handles on them, `knit://` answers) lives only while the current table uses
//! it. Endpoints come and go with `knit://` backends and reloads; what a gone one left
//! would otherwise stay for the life of the process, and a failure it had would keep
//! passive health's lock on every request.

use super::proxy::Proxy;
use super::route::{Backend, Target};
use std::collections::HashSet;

impl Proxy {
    /// Forgets the state of endpoints and routes the current table no longer has.
    pub fn forget_unused(&self) {
        // The table read under the resolver's lock is the newest: a reload swaps its table
        // in under the same lock.
        let _resolving = self.resolver.lock();
        let live = self.current();
        let mut endpoints = HashSet::new();
        let mut targets = HashSet::new();
        for r in &live.table.routes {
            let Backend::Lb { targets: ts, .. } = &r.backend else {
                continue;
            };
            for t in ts {
                match t {
                    Target::Http(authority) => {
                        endpoints.insert(authority.clone());
                    }
                    _ => {
                        endpoints.extend(self.resolver.endpoints(t));
                        targets.insert(t.clone());
                    }
                }
            }
        }
        let routes: HashSet<&str> = live.table.routes.iter().map(|r| r.id.as_str()).collect();
        self.resolver.retain_locked(&targets);
        self.up.health.retain(&endpoints);
        self.up.in_flight.retain(&endpoints);
        self.up.trips.retain(&endpoints);
        self.up.metrics.retain(&endpoints, &routes);
        // Last: a thread that looks a key up again finds the maps already pruned.
        super::shard::forget_cached();
    }
}
