//! knit's etcd key layout, all under one prefix (knit owns nothing else in etcd):
//!
//! - `/knit/nodes/NAME`: `NodeRecord`, under the node's lease;
//! - `/knit/networks/NAME`: `ClusterNetwork`;
//! - `/knit/vnis/VNI`: the network holding a VNI (taken in the same transaction);
//! - `/knit/services/NAME`: `ServiceRecord`, a service every node programs;
//! - `/knit/blocks/NETWORK/ADDR_LEN`: `BlockRecord`, under the holder's lease;
//! - `/knit/endpoints/NETWORK/NODE/SANDBOX`: `EndpointRecord`, under the node's lease
//!   (`/` in a sandbox key written as `%2F`, `%` as `%25`).

use ipnet::IpNet;

pub const PREFIX: &str = "/knit/";

pub fn node(name: &str) -> String {
    format!("{PREFIX}nodes/{name}")
}

pub fn network(name: &str) -> String {
    format!("{PREFIX}networks/{name}")
}

pub fn vni(vni: u32) -> String {
    format!("{PREFIX}vnis/{vni}")
}

pub fn service(name: &str) -> String {
    format!("{PREFIX}services/{name}")
}

pub fn blocks(network: &str) -> String {
    format!("{PREFIX}blocks/{network}/")
}

/// A block's key: the prefix with `_` for `/` (IPv6 colons are fine in a key).
pub fn block(network: &str, block: &IpNet) -> String {
    format!("{}{}_{}", blocks(network), block.addr(), block.prefix_len())
}

pub fn endpoints(network: &str, node: &str) -> String {
    format!("{PREFIX}endpoints/{network}/{node}/")
}

pub fn endpoint(network: &str, node: &str, sandbox: &str) -> String {
    let esc = sandbox.replace('%', "%25").replace('/', "%2F");
    format!("{}{esc}", endpoints(network, node))
}

/// What a key under the prefix names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Node(String),
    Network(String),
    Vni(u32),
    Service(String),
    Block {
        network: String,
        block: IpNet,
    },
    Endpoint {
        network: String,
        node: String,
        sandbox: String,
    },
}

pub fn parse(key: &str) -> Option<Key> {
    let rest = key.strip_prefix(PREFIX)?;
    let (kind, rest) = rest.split_once('/')?;
    match kind {
        "nodes" => Some(Key::Node(rest.to_string())),
        "networks" => Some(Key::Network(rest.to_string())),
        "vnis" => rest.parse().ok().map(Key::Vni),
        "services" => Some(Key::Service(rest.to_string())),
        "blocks" => {
            let (network, b) = rest.split_once('/')?;
            let (addr, len) = b.rsplit_once('_')?;
            let block = IpNet::new(addr.parse().ok()?, len.parse().ok()?).ok()?;
            Some(Key::Block {
                network: network.to_string(),
                block,
            })
        }
        "endpoints" => {
            let mut parts = rest.splitn(3, '/');
            let (network, node, esc) = (parts.next()?, parts.next()?, parts.next()?);
            Some(Key::Endpoint {
                network: network.to_string(),
                node: node.to_string(),
                sandbox: esc.replace("%2F", "/").replace("%25", "%"),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let b: IpNet = "fd00:1::/64".parse().unwrap();
        assert_eq!(
            parse(&block("pods", &b)),
            Some(Key::Block {
                network: "pods".into(),
                block: b
            })
        );
        assert_eq!(parse(&node("n1")), Some(Key::Node("n1".into())));
        assert_eq!(parse("/other/nodes/x"), None);
        assert_eq!(
            parse(&endpoint("p", "n1", "cni:abc/eth0%")),
            Some(Key::Endpoint {
                network: "p".into(),
                node: "n1".into(),
                sandbox: "cni:abc/eth0%".into()
            })
        );
    }
}
