//! Network policy, resolved. A network is default-allow (knit's behaviour without policy)
//! or default-deny, separately for ingress (connections to its sandboxes) and egress
//! (connections from them); allow rules open paths through a deny. Replies and related
//! ICMP always pass (stateful); traffic the node itself originates is not filtered.
//!
//! A rule resolves to atoms: one per (own sandbox address, far prefix, port range), the
//! own side being the network's sandboxes it selects and the far side the sandboxes
//! (any network) or CIDR prefixes it names. Atoms are stored with the attachments they
//! came from, so attach, detach and rule changes touch only their own atoms; the kernel
//! holds the union of the atoms, element by element (`elements`).

mod atoms;
pub mod prefixes;

pub use atoms::*;

use crate::store::{Attachment, Network};

/// Interfaces through which traffic reaches a network's sandboxes (`atts`: any
/// attachments; those of this network count).
pub fn ifaces(net: &Network, atts: &[Attachment]) -> Vec<String> {
    crate::driver::for_network(net).ifaces(net, atts)
}
