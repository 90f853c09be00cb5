//! Networks that container runtimes describe rather than create: a CNI configuration or a
//! netavark network config names a network, knit builds it on the first container that
//! uses it. Runtimes remove such networks without telling the plugin (`podman network rm`
//! deletes only its own config), so a knit network left behind is reclaimed once nothing
//! is attached to it and a new one needs its name, subnets or bridge.
//!
//! Shared by the CNI plugin (origin "cni") and the netavark plugin (origin "netavark").

use crate::error::{Error, Result};
use crate::lock::Lock;
use crate::model::NetworkSpec;
use crate::node::{BridgeUse, Node};
use crate::store::Network;

impl Node {
    /// The network `spec` describes, built on first use. Creation is serialized (one
    /// `network.lock` per node) so concurrent first users build the bridge once.
    pub fn ensure_runtime_network(&mut self, spec: &NetworkSpec, origin: &str) -> Result<Network> {
        if let Some(n) = self.store.find_network(&spec.name)?
            && n.ready
            && bridge_present(&n)?
            && compatible(&n, spec).is_ok()
        {
            return Ok(n);
        }
        let _guard = Lock::take_file(&self.state_dir, "network.lock", true)?;
        let existing = match self.store.find_network(&spec.name)? {
            // The runtime removed its network and made a new one of the same name: the old
            // record is knit's own and unused, so it goes.
            Some(n)
                if compatible(&n, spec).is_err() && self.unused_runtime_network(&n, origin)? =>
            {
                self.remove_unused(&n)?;
                None
            }
            other => other,
        };
        match existing {
            // A first use that crashed mid-creation (or a wiped node) leaves the record
            // without (all of) its kernel side: build it again, idempotently.
            Some(mut n) => {
                compatible(&n, spec)?;
                if !n.ready || !bridge_present(&n)? {
                    self.finish_network(&mut n)?;
                }
                Ok(n)
            }
            None => {
                self.remove_stale_runtime_networks(spec, origin)?;
                // CNI's bridge plugin shares a named bridge (`cni0`) between configurations:
                // knit adopts one that exists. A netavark network gets a bridge of its own.
                let bridge = if origin == "cni" {
                    BridgeUse::Adopt
                } else {
                    BridgeUse::Fresh
                };
                self.create_network_from(spec, origin, bridge)
            }
        }
    }

    /// A network knit created for a runtime that no attachment uses any more.
    fn unused_runtime_network(&self, n: &Network, origin: &str) -> Result<bool> {
        Ok(n.origin == origin && self.store.attachments_of_network(n.id)?.is_empty())
    }

    fn remove_unused(&mut self, n: &Network) -> Result<()> {
        self.remove_network(&n.name).map(|_| ()).map_err(|e| {
            Error::Conflict(format!(
                "removing knit network {:?}, left unused by a removed runtime network: {e}",
                n.name
            ))
        })
    }

    /// A new network that needs the subnets or bridge name of an unused runtime network
    /// of the same origin takes them over.
    fn remove_stale_runtime_networks(&mut self, spec: &NetworkSpec, origin: &str) -> Result<()> {
        for n in self.store.networks()? {
            if n.name == spec.name {
                continue;
            }
            let overlaps = n.subnets.iter().any(|s| {
                spec.subnets.iter().any(|w| {
                    s.subnet.contains(&w.cidr.network()) || w.cidr.contains(&s.subnet.network())
                })
            });
            let same_bridge = spec.bridge.is_some() && n.bridge == spec.bridge;
            if (overlaps || same_bridge) && self.unused_runtime_network(&n, origin)? {
                self.remove_unused(&n)?;
            }
        }
        Ok(())
    }
}

fn bridge_present(n: &Network) -> Result<bool> {
    match &n.bridge {
        Some(br) => Ok(crate::netlink::Netlink::open()?.link_index(br)?.is_some()),
        None => Ok(true),
    }
}

/// Whether the recorded network is the one `spec` describes (subnets, driver, bridge).
fn compatible(n: &Network, spec: &NetworkSpec) -> Result<()> {
    let mut have: Vec<String> = n.subnets.iter().map(|s| s.subnet.to_string()).collect();
    let mut want: Vec<String> = spec.subnets.iter().map(|s| s.cidr.to_string()).collect();
    have.sort();
    want.sort();
    if have != want || n.driver != spec.driver || n.bridge != spec.bridge {
        return Err(Error::invalid(
            "network",
            &n.name,
            format!(
                "already exists with subnets [{}] and bridge {:?}; this configuration asks for [{}] and {:?}",
                have.join(", "),
                n.bridge.as_deref().unwrap_or("-"),
                want.join(", "),
                spec.bridge.as_deref().unwrap_or("-")
            ),
        ));
    }
    Ok(())
}
