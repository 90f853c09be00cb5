//! Sandboxes of cluster networks on other nodes, as this node's agent last read them
//! from etcd: a cache (etcd is the truth) that DNS, policy and services read like local
//! attachments. Their ids are negative where they stand in for attachments (policy atoms),
//! so they never collide with an attachment's.

use super::{AttachState, Attachment, Network, Store};
use crate::error::Result;
use crate::model::cluster::EndpointRecord;
use rusqlite::params;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEndpoint {
    pub id: i64,
    pub rec: EndpointRecord,
}

impl RemoteEndpoint {
    /// The endpoint as an attachment of the local network `net` (the cluster network's
    /// part on this node): id `-id`, its sandbox's own name (what selectors and service
    /// backends name).
    pub fn as_attachment(&self, net: &Network) -> Attachment {
        let mut a = self.as_orphan();
        a.network_id = net.id;
        a
    }

    /// The same when its network is gone here (network id 0): enough to find its atoms.
    pub fn as_orphan(&self) -> Attachment {
        Attachment {
            id: -self.id,
            network_id: 0,
            network: self.rec.network.clone(),
            sandbox: self.rec.sandbox.clone(),
            netns_path: String::new(),
            netns_id: None,
            ifname: String::new(),
            host_ifname: String::new(),
            mac: String::new(),
            host_mac: String::new(),
            state: AttachState::Ready,
            container_id: None,
            ips: self.rec.ips.clone(),
            ports: vec![],
            routes: None,
            aliases: self.rec.aliases.clone(),
            labels: self.rec.labels.clone(),
            owner: None,
        }
    }
}

type Key = (String, String, String);

fn key(r: &EndpointRecord) -> Key {
    (r.network.clone(), r.node.clone(), r.sandbox.clone())
}

impl Store {
    pub fn remote_endpoints(&self) -> Result<Vec<RemoteEndpoint>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, network, node, sandbox, ips, labels, aliases FROM remote_endpoints ORDER BY id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut out = vec![];
        for (id, network, node, sandbox, ips, labels, aliases) in rows {
            let col = |c: &str, v: &str| super::bad_row("remote_endpoints", c, v);
            out.push(RemoteEndpoint {
                id,
                rec: EndpointRecord {
                    network,
                    node,
                    sandbox,
                    ips: serde_json::from_str(&ips).map_err(|_| col("ips", &ips))?,
                    labels: serde_json::from_str(&labels).map_err(|_| col("labels", &labels))?,
                    aliases: serde_json::from_str(&aliases)
                        .map_err(|_| col("aliases", &aliases))?,
                },
            });
        }
        Ok(out)
    }

    /// Makes the cache hold exactly `want`; returns the endpoints removed (or changed:
    /// old form) and added (or changed: new form, with a new id).
    pub fn set_remote_endpoints(
        &mut self,
        want: &[EndpointRecord],
    ) -> Result<(Vec<RemoteEndpoint>, Vec<RemoteEndpoint>)> {
        let have: BTreeMap<Key, RemoteEndpoint> = self
            .remote_endpoints()?
            .into_iter()
            .map(|r| (key(&r.rec), r))
            .collect();
        let want: BTreeMap<Key, &EndpointRecord> = want.iter().map(|r| (key(r), r)).collect();
        let mut removed = vec![];
        let mut added = vec![];
        let same = have.len() == want.len()
            && have
                .iter()
                .all(|(k, h)| want.get(k).is_some_and(|w| **w == h.rec));
        if same {
            return Ok((removed, added));
        }
        let tx = self.write_tx()?;
        for (k, old) in &have {
            if want.get(k).is_none_or(|w| **w != old.rec) {
                tx.execute("DELETE FROM remote_endpoints WHERE id = ?1", [old.id])?;
                removed.push(old.clone());
            }
        }
        for (k, rec) in &want {
            if have.get(k).is_some_and(|h| h.rec == **rec) {
                continue;
            }
            tx.execute(
                "INSERT INTO remote_endpoints (network, node, sandbox, ips, labels, aliases) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    rec.network,
                    rec.node,
                    rec.sandbox,
                    serde_json::to_string(&rec.ips).unwrap_or_default(),
                    serde_json::to_string(&rec.labels).unwrap_or_default(),
                    serde_json::to_string(&rec.aliases).unwrap_or_default()
                ],
            )?;
            added.push(RemoteEndpoint {
                id: tx.last_insert_rowid(),
                rec: (*rec).clone(),
            });
        }
        tx.commit()?;
        Ok((removed, added))
    }

    /// The remote endpoints as attachments of the local networks of their cluster
    /// networks.
    pub fn remote_attachments(&self) -> Result<Vec<Attachment>> {
        let remote = self.remote_endpoints()?;
        if remote.is_empty() {
            // Not a cluster node (or nothing elsewhere): no networks to load on an attach.
            return Ok(vec![]);
        }
        let nets = self.networks()?;
        Ok(remote
            .iter()
            .filter_map(|r| {
                nets.iter()
                    .find(|n| n.name == r.rec.network && n.cluster.is_some())
                    .map(|n| r.as_attachment(n))
            })
            .collect())
    }
}
