//! The cluster as etcd holds it, kept current from a listing and then watch events
//! (a key put or deleted). Values that do not decode are skipped and reported, never
//! guessed.

use super::keys::{Key, parse};
use crate::model::cluster::{
    BlockRecord, ClusterNetwork, EndpointRecord, NodeRecord, ServiceRecord,
};
use ipnet::IpNet;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterState {
    /// Node records and the lease they live under.
    pub nodes: BTreeMap<String, (NodeRecord, i64)>,
    pub networks: BTreeMap<String, ClusterNetwork>,
    pub blocks: BTreeMap<(String, IpNet), BlockRecord>,
    pub services: BTreeMap<String, ServiceRecord>,
    /// (network, node, sandbox) → endpoint.
    pub endpoints: BTreeMap<(String, String, String), EndpointRecord>,
}

impl ClusterState {
    /// A key was put (`value` Some) or deleted. Returns an error text for a value that
    /// does not decode (the key is then treated as absent).
    pub fn apply(&mut self, key: &str, value: Option<&[u8]>, lease: i64) -> Option<String> {
        let k = parse(key)?;
        let bad = |e: serde_json::Error| Some(format!("etcd key {key}: {e}"));
        match (k, value) {
            (Key::Node(n), Some(v)) => match serde_json::from_slice(v) {
                Ok(r) => {
                    self.nodes.insert(n, (r, lease));
                }
                Err(e) => {
                    self.nodes.remove(&n);
                    return bad(e);
                }
            },
            (Key::Node(n), None) => {
                self.nodes.remove(&n);
            }
            (Key::Network(n), Some(v)) => match serde_json::from_slice(v) {
                Ok(r) => {
                    self.networks.insert(n, r);
                }
                Err(e) => {
                    self.networks.remove(&n);
                    return bad(e);
                }
            },
            (Key::Network(n), None) => {
                self.networks.remove(&n);
            }
            (Key::Block { network, block }, Some(v)) => match serde_json::from_slice(v) {
                Ok(r) => {
                    self.blocks.insert((network, block), r);
                }
                Err(e) => {
                    self.blocks.remove(&(network, block));
                    return bad(e);
                }
            },
            (Key::Block { network, block }, None) => {
                self.blocks.remove(&(network, block));
            }
            (
                Key::Endpoint {
                    network,
                    node,
                    sandbox,
                },
                Some(v),
            ) => {
                let k = (network, node, sandbox);
                match serde_json::from_slice(v) {
                    Ok(r) => {
                        self.endpoints.insert(k, r);
                    }
                    Err(e) => {
                        self.endpoints.remove(&k);
                        return bad(e);
                    }
                }
            }
            (
                Key::Endpoint {
                    network,
                    node,
                    sandbox,
                },
                None,
            ) => {
                self.endpoints.remove(&(network, node, sandbox));
            }
            (Key::Service(n), Some(v)) => match serde_json::from_slice(v) {
                Ok(r) => {
                    self.services.insert(n, r);
                }
                Err(e) => {
                    self.services.remove(&n);
                    return bad(e);
                }
            },
            (Key::Service(n), None) => {
                self.services.remove(&n);
            }
            (Key::Vni(_), _) => {}
        }
        None
    }

    /// Blocks of `network` held by `node`.
    pub fn blocks_of(&self, network: &str, node: &str) -> Vec<&BlockRecord> {
        self.blocks
            .iter()
            .filter(|((n, _), b)| n == network && b.node == node)
            .map(|(_, b)| b)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn puts_and_deletes() {
        let mut s = ClusterState::default();
        let rec = r#"{"name":"a","underlay":"192.168.1.2/24","backend":"auto","vni":1,"vxlan_port":4789,"mtu":1500}"#;
        assert_eq!(s.apply("/knit/nodes/a", Some(rec.as_bytes()), 7), None);
        assert_eq!(s.nodes["a"].1, 7);
        let b =
            r#"{"network":"p","block":"10.244.3.0/24","node":"a","vtep_mac":"02:00:00:00:00:01"}"#;
        assert_eq!(
            s.apply("/knit/blocks/p/10.244.3.0_24", Some(b.as_bytes()), 7),
            None
        );
        assert_eq!(s.blocks_of("p", "a").len(), 1);
        assert!(s.apply("/knit/nodes/b", Some(b"{"), 1).is_some());
        assert!(!s.nodes.contains_key("b"));
        s.apply("/knit/nodes/a", None, 0);
        assert!(s.nodes.is_empty());
    }
}
