//! The JSON netavark exchanges with its plugins (netavark 1.x/2.x `src/network/types.rs`,
//! `docs/plugin-API.md`). Only the fields knit reads are typed; `create` round-trips the
//! whole network object so fields knit does not know survive.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A podman network (`podman network create -d knit`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Network {
    pub name: String,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub driver: String,
    pub network_interface: Option<String>,
    pub subnets: Option<Vec<Subnet>>,
    pub routes: Option<Vec<Route>>,
    #[serde(default)]
    pub ipv6_enabled: bool,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub dns_enabled: bool,
    pub network_dns_servers: Option<Vec<String>>,
    pub options: Option<BTreeMap<String, String>>,
    pub ipam_options: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Subnet {
    pub subnet: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_range: Option<LeaseRange>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct LeaseRange {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_ip: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Route {
    pub destination: String,
    pub gateway: Option<String>,
}

/// `setup` and `teardown` input.
#[derive(Debug, Clone, Deserialize)]
pub struct PluginExec {
    pub container_id: String,
    #[serde(default)]
    pub container_name: String,
    pub port_mappings: Option<Vec<PortMapping>>,
    pub network: Network,
    pub network_options: PerNetworkOptions,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PerNetworkOptions {
    pub aliases: Option<Vec<String>>,
    #[serde(default)]
    pub interface_name: String,
    pub static_ips: Option<Vec<String>>,
    pub static_mac: Option<String>,
    pub options: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PortMapping {
    pub container_port: i64,
    #[serde(default)]
    pub host_ip: String,
    pub host_port: i64,
    #[serde(default)]
    pub protocol: String,
    /// How many consecutive ports from host_port/container_port (0 and 1: one).
    #[serde(default)]
    pub range: i64,
}

/// `setup`'s answer: what podman shows in `podman inspect` and writes to resolv.conf.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatusBlock {
    pub dns_search_domains: Vec<String>,
    pub dns_server_ips: Vec<String>,
    pub interfaces: BTreeMap<String, NetInterface>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NetInterface {
    pub mac_address: String,
    pub subnets: Vec<NetAddress>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NetAddress {
    pub ipnet: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}
