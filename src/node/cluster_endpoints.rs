//! Cluster endpoints: this node publishes its sandboxes on cluster networks in etcd
//! (under its lease), and mirrors the other nodes' into its store, with what changes with
//! them: policy elements where they are the far side of a rule, services they back.

use crate::cluster::etcd::Etcd;
use crate::cluster::keys;
use crate::cluster::state::ClusterState;
use crate::error::Result;
use crate::model::cluster::EndpointRecord;
use crate::nft::Batch;
use crate::node::Node;
use crate::store::Membership;
use std::collections::{BTreeMap, BTreeSet};

impl Node {
    /// The cluster endpoints of other nodes into the local cache, and what changes with
    /// them: policy elements where they are the far side, services they back.
    pub(crate) fn mirror_endpoints(&mut self, m: &Membership, state: &ClusterState) -> Result<()> {
        let nets = self.store.networks()?;
        let local = |name: &str| nets.iter().find(|n| n.name == name && n.cluster.is_some());
        let want: Vec<EndpointRecord> = state
            .endpoints
            .values()
            .filter(|e| e.node != m.name && local(&e.network).is_some())
            .cloned()
            .collect();
        let _k = self.kernel_lock()?;
        let have = self.store.remote_endpoints()?;
        let touched = |list: &[EndpointRecord]| -> BTreeSet<String> {
            list.iter().map(|e| e.sandbox.clone()).collect()
        };
        let mut names = touched(&want);
        names.extend(touched(
            &have.iter().map(|r| r.rec.clone()).collect::<Vec<_>>(),
        ));
        let mut services = BTreeMap::new();
        for n in &names {
            for svc in self.store.services_of_sandbox(n)? {
                services.insert(svc.id, svc);
            }
        }
        let before: Vec<_> = services
            .values()
            .map(|s| crate::service::resolve(&self.store, s))
            .collect::<Result<_>>()?;
        let (removed, added) = self.store.set_remote_endpoints(&want)?;
        if removed.is_empty() && added.is_empty() {
            return Ok(());
        }
        let as_atts = |list: &[crate::store::RemoteEndpoint]| -> Vec<crate::store::Attachment> {
            list.iter()
                .filter_map(|r| local(&r.rec.network).map(|n| r.as_attachment(n)))
                .collect()
        };
        // A removed endpoint's atoms are found by its id alone: its network may be gone.
        let gone: Vec<crate::store::Attachment> = removed
            .iter()
            .map(|r| match local(&r.rec.network) {
                Some(n) => r.as_attachment(n),
                None => r.as_orphan(),
            })
            .collect();
        let mut b = Batch::new();
        self.remote_policy_changes(&mut b, &gone, &as_atts(&added))?;
        for (old, svc) in before.iter().zip(services.values()) {
            let new = crate::service::resolve(&self.store, svc)?;
            if *old != new {
                b.service(Some(old), Some(&new));
            }
        }
        self.apply_or_rebuild(&b, crate::node::network::Leaving::default())?;
        Ok(())
    }

    /// This node's sandboxes on cluster networks, published (and withdrawn) in etcd under
    /// the node's lease.
    pub async fn publish_endpoints(
        &self,
        etcd: &mut Etcd,
        m: &Membership,
        state: &mut ClusterState,
    ) -> Result<usize> {
        let mut want = BTreeMap::new();
        for n in self.store.networks()? {
            if n.cluster.is_none() {
                continue;
            }
            for a in self.store.attachments_of_network(n.id)? {
                if a.state != crate::store::AttachState::Ready {
                    continue;
                }
                let rec = EndpointRecord {
                    network: n.name.clone(),
                    node: m.name.clone(),
                    sandbox: a.sandbox.clone(),
                    ips: a.ips.clone(),
                    labels: a.labels.clone(),
                    aliases: a.aliases.clone(),
                };
                want.insert((n.name.clone(), m.name.clone(), a.sandbox.clone()), rec);
            }
        }
        let have: Vec<(String, String, String)> = state
            .endpoints
            .keys()
            .filter(|(_, node, _)| *node == m.name)
            .cloned()
            .collect();
        let mut changes = 0;
        for k in have {
            if !want.contains_key(&k) {
                etcd.delete(&keys::endpoint(&k.0, &k.1, &k.2), false)
                    .await?;
                state.endpoints.remove(&k);
                changes += 1;
            }
        }
        for (k, rec) in want {
            if state.endpoints.get(&k) != Some(&rec) {
                etcd.put(
                    &keys::endpoint(&k.0, &k.1, &k.2),
                    serde_json::to_vec(&rec).unwrap_or_default(),
                    Some(m.lease_id),
                )
                .await?;
                state.endpoints.insert(k, rec);
                changes += 1;
            }
        }
        Ok(changes)
    }
}
