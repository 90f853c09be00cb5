//! Anti-spoofing layout: frames from a sandbox's host veth must carry its MAC and addresses
//! (ARP and ND included). The sets are keyed by `ifname . addr`, so the per-packet cost does
//! not grow with sandboxes; bridge ports are checked in `table bridge knit`, routed (ptp)
//! veths in the inet table's raw prerouting.

use crate::model::Mac;
use std::net::IpAddr;

/// Anti-spoofing facts of one attachment: frames entering the node from `host_if` must
/// have `mac` as Ethernet source (and ARP sender), `ips` as IP source (and ARP sender /
/// IPv6 neighbour advertisement target). IPv6 link-local and `::` sources are allowed
/// (DAD, neighbour discovery; they carry no policy meaning).
#[derive(Debug, Clone)]
pub struct Guard {
    pub host_if: String,
    /// A bridge port (checked in `table bridge knit`) or a routed ptp veth (`inet knit`).
    pub bridged: bool,
    /// None only for a record whose MAC does not parse: the port is then checked against
    /// no MAC at all, so its frames are dropped (fail closed).
    pub mac: Option<Mac>,
    pub ips: Vec<IpAddr>,
}

/// Anti-spoofing sets, the same in `table bridge knit` (bridge ports) and `table inet
/// knit` (ptp veths): the checked interfaces, and what each may send.
pub(super) const GUARD_SETS: &[(&str, &str)] = &[
    ("as_ports", "type ifname;"),
    ("as_macs", "type ifname . ether_addr;"),
    ("as_addrs4", "type ifname . ipv4_addr;"),
    ("as_addrs6", "type ifname . ipv6_addr;"),
    ("as_nd6", "typeof iifname . @th,64,128;"),
];

/// The checks, for both tables: Ethernet source, IPv4 source, IPv6 neighbour advertisement
/// target (link-local targets allowed) and IPv6 source (`::` and link-local allowed).
pub(super) const GUARD_RULES: &[&str] = &[
    "iifname . ether saddr != @as_macs drop",
    "iifname . ip saddr != @as_addrs4 drop",
    "icmpv6 type nd-neighbor-advert @th,64,16 & 0xffc0 != 0xfe80 iifname . @th,64,128 != @as_nd6 drop",
    "ip6 saddr != { ::, fe80::/10 } iifname . ip6 saddr != @as_addrs6 drop",
];

/// Bridge ports only: ARP is not seen by the inet hooks (and on ptp the node's neighbour
/// entries for sandboxes are permanent, so ARP there cannot redirect anything); VLAN-tagged
/// frames would carry their IP header past the `ip`/`ip6` checks.
pub(super) const GUARD_RULES_BRIDGE: &[&str] = &[
    "ether type { 8021q, 8021ad } drop",
    "iifname . arp saddr ether != @as_macs drop",
    "arp saddr ip != 0.0.0.0 iifname . arp saddr ip != @as_addrs4 drop",
];
