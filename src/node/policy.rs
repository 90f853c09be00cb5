//! Network policy on the node: default allow/deny and allow rules, each change a store
//! change plus the network's policy layout, applied under the network's and the kernel's
//! locks.

use crate::error::{Error, Result};
use crate::model::policy::{Default, PortSpec, Rule, Selector};
use crate::netlink::Netlink;
use crate::nft::Batch;
use crate::node::Node;
use crate::policy::*;
use crate::store::{Attachment, Network};
use std::net::IpAddr;

impl Node {
    fn apply_policy(&self, net: &Network, gone: &[i64]) -> Result<()> {
        let p = resolve(&self.store, net)?;
        let mut b = Batch::new();
        if p.is_empty() {
            // Nothing left to say: no chain at all, as if policy had never been used.
            b.net_policy_removed(p.net_id, &p.ifaces, gone);
        } else {
            b.net_policy(&p, gone);
        }
        self.apply_or_rebuild(&b, crate::node::network::Leaving::default())
            .map(|_| ())
    }

    pub fn set_policy_default(&mut self, network: &str, d: Default) -> Result<Network> {
        // The network's lock keeps `network rm` from removing its chains under us.
        let _net_lock = crate::lock::Lock::network(&self.state_dir, network, false)?;
        let _k = self.kernel_lock()?;
        let mut net = self.store.network(network)?;
        let before = net.policy;
        if d == Default::Deny
            && let Some(br) = &net.bridge
        {
            let mut nl = Netlink::open()?;
            if let Some(i) = nl.link_index(br)? {
                nl.set_bridge_nf_call(i, true)?;
            }
        }
        self.store.set_network_policy(net.id, d)?;
        net.policy = d;
        if let Err(e) = self.apply_policy(&net, &[]) {
            let _ = self.store.set_network_policy(net.id, before);
            return Err(e);
        }
        Ok(net)
    }

    pub fn add_policy(
        &mut self,
        network: &str,
        from: &Selector,
        to: &Selector,
        port: Option<PortSpec>,
    ) -> Result<(Rule, bool)> {
        let _net_lock = crate::lock::Lock::network(&self.state_dir, network, false)?;
        let _k = self.kernel_lock()?;
        let net = self.store.network(network)?;
        let (rule, new) = self.store.add_rule(net.id, from, to, port)?;
        // Applied even if the rule existed (completes an interrupted earlier run).
        if let Err(e) = self.apply_policy(&net, &[]) {
            if new {
                let _ = self.store.delete_rule(rule.id);
            }
            return Err(e);
        }
        Ok((rule, new))
    }

    pub fn remove_policy(&mut self, id: &str) -> Result<Rule> {
        let n: i64 = id.parse().map_err(|_| {
            Error::invalid("ID", id, "a policy id is a number (see `knit policy ls`)")
        })?;
        let network = self.store.rule(n)?.network;
        let _net_lock = crate::lock::Lock::network(&self.state_dir, &network, false)?;
        let _k = self.kernel_lock()?;
        // Re-read under the locks (its network may have been removed meanwhile).
        let rule = self.store.rule(n)?;
        let net = self.store.network(&rule.network)?;
        self.store.delete_rule(rule.id)?;
        if let Err(e) = self.apply_policy(&net, &[rule.id]) {
            let _ = self
                .store
                .add_rule(rule.network_id, &rule.from, &rule.to, rule.port);
            return Err(e);
        }
        Ok(rule)
    }

    /// Policy element changes caused by attaching (`add`) or detaching one attachment:
    /// its addresses in the rules that select it, and (ptp) its host veth in `pol_out`.
    pub fn policy_changes_for(
        &self,
        b: &mut Batch,
        net: &Network,
        att: &Attachment,
        add: bool,
    ) -> Result<()> {
        let rules = self.store.rules()?;
        let ips: Vec<IpAddr> = att.ips.iter().map(|n| n.addr()).collect();
        for (set, elems) in
            crate::nft::policy::attachment_elems(&rules, net.id, &att.sandbox, &att.labels, &ips)
        {
            b.elems(set, elems, add);
        }
        if net.policy == Default::Deny
            && let Some(iface) = crate::driver::for_network(net).attachment_iface(att)
        {
            b.elems(
                "pol_out",
                crate::nft::policy::jumps(net.id, std::slice::from_ref(&iface)),
                add,
            );
        }
        Ok(())
    }
}
