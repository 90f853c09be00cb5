//! knit: container networking for Linux.
//!
//! Layers, bottom up: `netns`, `netlink`, `nft` + `firewall` talk to the kernel; `model`
//! validates input; `ipam` + `store` own addresses and state; `node`, `attach` and
//! `reconcile` turn requests into one store transaction, netlink messages and one nft
//! transaction; `inspect`, `report` and `cli` face the user.

pub mod cli;
pub mod cni;
pub mod conntrack;
pub mod deferred;
pub mod dns;
pub mod driver;
pub mod error;
pub mod ipam;
pub mod lock;
pub mod model;
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
