//! Cluster services: a service created (or changed, or removed) on a joined node is
//! published in etcd, and every node's agent makes its own services match: created,
//! recreated when they differ, removed when gone from etcd. Backends name sandboxes on
//! any node (their addresses come from the cluster endpoints).

use crate::cluster::etcd::{Etcd, block_on};
use crate::cluster::keys;
use crate::cluster::state::ClusterState;
use crate::error::Result;
use crate::model::cluster::ServiceRecord;
use crate::node::Node;

impl Node {
    /// Publishes local service `name` (after a create or backend change on a joined node);
    /// Ok(false) when this node is in no cluster (the service stays a node service).
    pub fn publish_service(&mut self, name: &str) -> Result<bool> {
        let Some(m) = self.store.membership()? else {
            return Ok(false);
        };
        let svc = self.store.service(name)?;
        let spec = crate::model::service::ServiceSpec {
            name: svc.name.clone(),
            vip: svc.vip,
            backends: svc.backends.iter().map(|b| b.spec.clone()).collect(),
            affinity: svc.affinity,
            node_port: svc.node_port,
        };
        let rec = ServiceRecord::of(&spec);
        block_on(async {
            let mut etcd = Etcd::connect(&m.access()).await?;
            etcd.put(
                &keys::service(name),
                serde_json::to_vec(&rec).unwrap_or_default(),
                None,
            )
            .await
        })?;
        self.store.set_cluster_service(name, true)?;
        Ok(true)
    }

    /// Removes a cluster service from etcd (`service rm` on a cluster node, before the
    /// local removal); Ok(false) if it is not a cluster service.
    pub fn withdraw_service(&mut self, name: &str) -> Result<bool> {
        let Some(m) = self.store.membership()? else {
            return Ok(false);
        };
        if !self.store.cluster_services()?.iter().any(|n| n == name) {
            return Ok(false);
        }
        block_on(async {
            let mut etcd = Etcd::connect(&m.access()).await?;
            etcd.delete(&keys::service(name), false).await
        })?;
        self.store.set_cluster_service(name, false)?;
        Ok(true)
    }

    /// Makes this node's cluster services match etcd's.
    pub(crate) fn mirror_services(&mut self, state: &ClusterState) -> Result<()> {
        for (name, rec) in &state.services {
            let spec = match rec.spec() {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("cluster service {name:?}: {e}");
                    continue;
                }
            };
            let same = self
                .store
                .services()?
                .into_iter()
                .find(|s| s.name == *name)
                .map(|s| s.same_as(&spec));
            match same {
                Some(true) => {}
                Some(false) => {
                    self.remove_service(name)?;
                    self.create_service(&spec)?;
                }
                None => {
                    self.create_service(&spec)?;
                }
            }
            self.store.set_cluster_service(name, true)?;
        }
        for name in self.store.cluster_services()? {
            if !state.services.contains_key(&name) {
                if self.store.services()?.iter().any(|s| s.name == name) {
                    self.remove_service(&name)?;
                }
                self.store.set_cluster_service(&name, false)?;
            }
        }
        Ok(())
    }
}
