//! Network policy: a network is default-allow (knit's behaviour without policy) or
//! default-deny, in which case new connections to its sandboxes pass only if an allow rule
//! (`--from` sandbox, label or CIDR, `--to` sandbox or label, optional port) says so.
//! Replies and related ICMP always pass (stateful); traffic the node itself originates is
//! not filtered (health checks, `knit sandbox exec` from the node).

use crate::error::Result;
use crate::model::policy::{Default, Rule, Selector};
use crate::nft::policy::{NetPolicyFw, RuleFw};
use crate::store::{Attachment, Network, Store};
use std::net::IpAddr;

/// Interfaces through which traffic reaches a network's sandboxes (`atts`: any
/// attachments; those of this network count).
pub fn ifaces(net: &Network, atts: &[Attachment]) -> Vec<String> {
    crate::driver::for_network(net).ifaces(net, atts)
}

fn selected(atts: &[Attachment], sel: &Selector, network_id: Option<i64>) -> Vec<IpAddr> {
    atts.iter()
        .filter(|a| network_id.is_none_or(|n| a.network_id == n))
        .filter(|a| sel.matches(&a.sandbox, &a.labels))
        .flat_map(|a| a.ips.iter().map(|n| n.addr()))
        .collect()
}

/// A network's policy with selectors resolved against the current attachments.
pub fn resolve(store: &Store, net: &Network) -> Result<NetPolicyFw> {
    Ok(resolve_with(
        net,
        store.rules_of_network(net.id)?,
        &store.all_attachments()?,
    ))
}

/// The same from already loaded rules (of this network) and attachments (all of them:
/// `--from` selects across networks). A whole-table rebuild loads both once.
/// Only ready attachments count: a pending one belongs to a command still building it,
/// which adds its own elements under the kernel lock.
pub fn resolve_with(net: &Network, rules: Vec<Rule>, atts: &[Attachment]) -> NetPolicyFw {
    let ready: Vec<Attachment> = atts
        .iter()
        .filter(|a| a.state.in_kernel())
        .cloned()
        .collect();
    let atts = &ready[..];
    let rules = rules
        .into_iter()
        .map(|rule| RuleFw {
            from: selected(atts, &rule.from, None),
            to: selected(atts, &rule.to, Some(net.id)),
            rule,
        })
        .collect();
    NetPolicyFw {
        net_id: net.id,
        deny: net.policy == Default::Deny,
        ifaces: ifaces(net, atts),
        rules,
    }
}
