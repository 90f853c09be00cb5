//! knit: container networking for Linux.
//!
//! Layers, bottom up (dependencies point down only; `tests/layering.rs` checks it):
//! - `error`, `trace`, `lock`, `sysctl`, `deferred`, `ipam`: leaves;
//! - `model`: everything users type, validated once (names, addresses, networks, published
//!   ports, policy and service specs, the attach request);
//! - `netns`, `netlink`, `nft`, `conntrack`: the kernel (namespaces, rtnetlink, nftables as
//!   data and over netlink, conntrack flushes);
//! - `store`: SQLite (networks, attachments, IPAM, services, policies);
//! - `driver`: what differs between bridge and ptp networks, behind one trait;
//! - `service`, `policy`: pure resolvers from store records to nft layouts;
//! - `node`: the one home of `Node` - every command as request, validated plan, one store
//!   transaction, netlink, one nft transaction, record;
//! - `dns`, `resolv`: the DNS daemon and sandboxes' resolv.conf;
//! - `apply`: declarative topologies (a YAML file diffed against the store, run through
//!   `node`);
//! - `cni`, `netavark`, `docker`, `ingress`, `cli`: the faces (the CNI plugin, the netavark
//!   plugin of podman 5, Docker's remote network driver, the HTTP ingress with Skipper's
//!   routes, and the command line with its reports and the demo).

pub mod apply;
pub mod cli;
pub mod cluster;
pub mod cni;
pub mod conntrack;
pub mod deferred;
pub mod dns;
pub mod docker;
pub mod driver;
pub mod error;
pub mod ingress;
pub mod ipam;
pub mod lock;
pub mod log;
pub mod metrics;
pub mod model;
pub mod netavark;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod node;
pub mod policy;
pub mod resolv;
pub mod service;
pub mod store;
pub mod sysctl;
pub mod trace;
