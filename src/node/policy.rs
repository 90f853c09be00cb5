//! Network policy on the node. Every change is one store transaction and one nft
//! transaction, under the networks' and the kernel's locks: rules and their atoms in the
//! store, then the element difference (and, only when a network starts or stops using a
//! set shape, its chains) in the kernel; the store commits only if the kernel took it.

use crate::error::{Error, Result};
use crate::model::policy::{Default, Direction, Rule, RuleSpec};
use crate::netlink::Netlink;
use crate::nft::Batch;
use crate::nft::policy::{PolSet, PolicyChains};
use crate::node::Node;
use crate::node::network::Leaving;
use crate::policy::{Atom, GroupKey, atoms_of_attachment, atoms_of_rule, diff, elements};
use crate::store::{Attachment, Network};
use std::collections::{BTreeMap, BTreeSet};

/// Rules to add (by network name) and to remove (by id), applied together.
#[derive(Debug, Default)]
pub struct PolicyChange {
    pub add: Vec<(String, RuleSpec)>,
    pub remove: Vec<i64>,
}

/// What a change did: the rules added (false: it existed already) and removed.
#[derive(Debug, Default)]
pub struct PolicyChanged {
    pub added: Vec<(Rule, bool)>,
    pub removed: Vec<Rule>,
}

fn groups(atoms: &[Atom]) -> BTreeSet<GroupKey> {
    atoms.iter().map(Atom::group).collect()
}

impl Node {
    /// A network's chains as the store says now.
    pub(crate) fn policy_chains(&self, net: &Network) -> Result<PolicyChains> {
        let atts: Vec<Attachment> = if net.bridge.is_some() {
            vec![]
        } else {
            self.store.attachments_of_network(net.id)?
        };
        let atts: Vec<Attachment> = atts.into_iter().filter(|a| a.state.in_kernel()).collect();
        Ok(PolicyChains {
            net_id: net.id,
            deny_in: net.policy == Default::Deny,
            deny_eg: net.egress == Default::Deny,
            eg_dns: net.egress_dns,
            ifaces: crate::policy::ifaces(net, &atts),
            sets: self.store.sets_in_use(net.id)?,
        })
    }

    /// Everything of a network's policy, for a batch that writes it whole (network
    /// creation, table rebuild): chains, sets flushed, every element.
    pub(crate) fn full_policy(
        &self,
        b: &mut Batch,
        net: &Network,
        leaving: Option<i64>,
    ) -> Result<()> {
        let chains = self.policy_chains(net)?;
        if chains.is_empty() {
            return Ok(());
        }
        b.policy_chains(&chains, &[]);
        for s in &chains.sets {
            b.push(crate::nft::Cmd::FlushSet(s.name()));
        }
        let atoms = self.store.atoms_of_network(net.id, leaving)?;
        b.policy_elems(vec![], elements(&atoms));
        Ok(())
    }

    /// Chains (when `sets_before` differs from now, or `force`) and element changes of one
    /// network into `b`.
    fn policy_batch(
        &self,
        b: &mut Batch,
        net: &Network,
        sets_before: &[PolSet],
        force: bool,
        removed: Vec<(String, crate::nft::Elem)>,
        added: Vec<(String, crate::nft::Elem)>,
    ) -> Result<()> {
        let chains = self.policy_chains(net)?;
        let gone: Vec<PolSet> = sets_before
            .iter()
            .filter(|s| !chains.sets.contains(s))
            .copied()
            .collect();
        let gone_names: BTreeSet<String> = gone.iter().map(PolSet::name).collect();
        // Elements of a set deleted in this batch go with it.
        let removed = removed
            .into_iter()
            .filter(|(s, _)| !gone_names.contains(s))
            .collect();
        if chains.is_empty() {
            b.policy_removed(net.id, &chains.ifaces, &gone);
        } else if force || chains.sets != sets_before {
            b.policy_chains(&chains, &gone);
        }
        b.policy_elems(removed, added);
        Ok(())
    }

    /// Sets a network's default for one direction; `dns` (egress only): whether DNS to
    /// knit's resolver passes an egress deny.
    pub fn set_policy_default(
        &mut self,
        network: &str,
        dir: Direction,
        d: Default,
        dns: Option<bool>,
    ) -> Result<Network> {
        // The network's lock keeps `network rm` from removing its chains under us.
        let _net_lock = crate::lock::Lock::network(&self.state_dir, network, false)?;
        let _k = self.kernel_lock()?;
        let mut net = self.store.network(network)?;
        self.bridge_nf_call(&net, d == Default::Deny)?;
        self.store.begin()?;
        let done = (|| {
            let sets = self.store.sets_in_use(net.id)?;
            self.store.set_network_default(net.id, dir, d)?;
            match dir {
                Direction::Ingress => net.policy = d,
                Direction::Egress => net.egress = d,
            }
            if let Some(dns) = dns {
                self.store.set_egress_dns(net.id, dns)?;
                net.egress_dns = dns;
            }
            let mut b = Batch::new();
            self.policy_batch(&mut b, &net, &sets, true, vec![], vec![])?;
            self.apply_or_rebuild(&b, Leaving::default()).map(|_| ())
        })();
        self.store.finish(done.is_ok())?;
        done.map(|_| net)
    }

    /// Bridged traffic between two ports of one bridge passes the inet hooks (where policy
    /// is) only with the bridge's nf_call_iptables/ip6tables on: set per bridge, never the
    /// node's global sysctl.
    fn bridge_nf_call(&self, net: &Network, needed: bool) -> Result<()> {
        if !needed {
            return Ok(());
        }
        if let Some(br) = &net.bridge {
            let mut nl = Netlink::open()?;
            if let Some(i) = nl.link_index(br)? {
                nl.set_bridge_nf_call(i, true)?;
            }
        }
        Ok(())
    }

    /// One rule.
    pub fn add_policy(&mut self, network: &str, spec: RuleSpec) -> Result<(Rule, bool)> {
        let changed = self.change_policy(PolicyChange {
            add: vec![(network.to_string(), spec)],
            remove: vec![],
        })?;
        changed
            .added
            .into_iter()
            .next()
            .ok_or_else(|| Error::Conflict("the rule was not recorded".into()))
    }

    pub fn remove_policy(&mut self, id: &str) -> Result<Rule> {
        let n: i64 = id.parse().map_err(|_| {
            Error::invalid("id", id, "a policy id is a number (see `knit policy ls`)")
        })?;
        self.store.rule(n)?;
        let changed = self.change_policy(PolicyChange {
            add: vec![],
            remove: vec![n],
        })?;
        changed
            .removed
            .into_iter()
            .next()
            .ok_or_else(|| Error::not_found("policy", n))
    }

    /// Adds and removes rules, on any networks, as one store transaction and one nft
    /// transaction.
    pub fn change_policy(&mut self, ch: PolicyChange) -> Result<PolicyChanged> {
        for (_, spec) in &ch.add {
            spec.validate()?;
        }
        let mut names: BTreeSet<String> = ch.add.iter().map(|(n, _)| n.clone()).collect();
        for id in &ch.remove {
            names.insert(self.store.rule(*id)?.network);
        }
        // Locks in name order: two changes on the same networks never wait on each other
        // in a cycle.
        let _net_locks = names
            .iter()
            .map(|n| crate::lock::Lock::network(&self.state_dir, n, false))
            .collect::<Result<Vec<_>>>()?;
        let _k = self.kernel_lock()?;
        let mut nets: BTreeMap<i64, Network> = BTreeMap::new();
        for n in &names {
            let net = self.store.network(n)?;
            nets.insert(net.id, net);
        }
        for net in nets.values() {
            if ch
                .add
                .iter()
                .any(|(n, s)| *n == net.name && s.action == crate::model::policy::Action::Isolate)
            {
                self.bridge_nf_call(net, true)?;
            }
        }
        self.store.begin()?;
        let done = self.change_policy_locked(&ch, &nets);
        self.store.finish(done.is_ok())?;
        done
    }

    fn change_policy_locked(
        &mut self,
        ch: &PolicyChange,
        nets: &BTreeMap<i64, Network>,
    ) -> Result<PolicyChanged> {
        let mut sets_before = BTreeMap::new();
        for id in nets.keys() {
            sets_before.insert(*id, self.store.sets_in_use(*id)?);
        }
        crate::trace::phase("policy: sets in use");
        let mut out = PolicyChanged::default();
        let mut old_atoms = vec![];
        for id in &ch.remove {
            // Re-read under the locks (its network may have been removed meanwhile).
            let rule = self.store.rule(*id)?;
            old_atoms.extend(self.store.atoms_of_rule(rule.id)?);
            out.removed.push(rule);
        }
        let mut new_atoms = vec![];
        let mut atts: Option<Vec<Attachment>> = None;
        for (name, spec) in &ch.add {
            let Some(net) = nets.values().find(|n| n.name == *name) else {
                return Err(Error::not_found("network", name));
            };
            if let Some(r) = self.store.find_rule(net.id, spec)? {
                out.added.push((r, false));
                continue;
            }
            crate::trace::phase("policy: looked for an identical rule");
            let sets = crate::policy::sets_of_rule(net.id, spec);
            let rule = self.store.insert_rule(net.id, spec, &sets)?;
            let atts = match &mut atts {
                Some(a) => a,
                None => atts.insert(self.attachments_with_remote()?),
            };
            new_atoms.extend(atoms_of_rule(&rule, atts));
            out.added.push((rule, true));
        }
        crate::trace::phase("policy: rules recorded, atoms resolved");
        let mut keys = groups(&old_atoms);
        keys.extend(groups(&new_atoms));
        let before = self.store.atoms_of_groups(&keys)?;
        for r in &out.removed {
            self.store.delete_rule(r.id)?;
        }
        self.store.insert_atoms(&new_atoms)?;
        let after = self.store.atoms_of_groups(&keys)?;
        crate::trace::phase("policy: atoms recorded");
        let mut b = Batch::new();
        for (id, net) in nets {
            let mine = |a: &&Atom| a.set.net_id == *id;
            let before: Vec<Atom> = before.iter().filter(mine).cloned().collect();
            let after: Vec<Atom> = after.iter().filter(mine).cloned().collect();
            let (removed, added) = diff(&before, &after);
            self.policy_batch(&mut b, net, &sets_before[id], false, removed, added)?;
        }
        crate::trace::phase("policy: batch built");
        self.apply_or_rebuild(&b, Leaving::default())?;
        Ok(out)
    }

    /// Every attachment here and every cluster endpoint of other nodes (the far side of
    /// rules may be either).
    pub(crate) fn attachments_with_remote(&self) -> Result<Vec<Attachment>> {
        let mut atts = self.store.all_attachments()?;
        atts.extend(self.store.remote_attachments()?);
        Ok(atts)
    }

    /// Recomputes every atom where a cluster endpoint of another node is the far side,
    /// then rewrites the table from the store: what a round of the cluster agent starts
    /// with, so a mirror interrupted between its store and kernel steps (a crash, a
    /// refused batch) is made right.
    pub(crate) fn resync_remote_policy(&mut self) -> Result<()> {
        let _k = self.kernel_lock()?;
        let remote = self.store.remote_attachments()?;
        let all = self.attachments_with_remote()?;
        self.store.begin()?;
        let done = (|| {
            self.store.delete_remote_atoms()?;
            for a in &remote {
                let rules = self.store.candidate_rules(a)?;
                if !rules.is_empty() {
                    self.store
                        .insert_atoms(&atoms_of_attachment(&rules, a, &all))?;
                }
            }
            self.rebuild_firewall()
        })();
        self.store.finish(done.is_ok())?;
        done
    }

    /// Policy element changes for cluster endpoints of other nodes that went away or
    /// arrived (as the far side of rules; atoms keyed by their negative ids).
    pub(crate) fn remote_policy_changes(
        &mut self,
        b: &mut Batch,
        removed: &[Attachment],
        added: &[Attachment],
    ) -> Result<()> {
        let mut atoms = vec![];
        for r in removed {
            atoms.extend(self.store.atoms_of_attachment(r.id)?);
        }
        let locals = self.attachments_with_remote()?;
        let mut new_atoms = vec![];
        for a in added {
            let rules = self.store.candidate_rules(a)?;
            if !rules.is_empty() {
                new_atoms.extend(atoms_of_attachment(&rules, a, &locals));
            }
        }
        if atoms.is_empty() && new_atoms.is_empty() {
            return Ok(());
        }
        let mut keys = groups(&atoms);
        keys.extend(groups(&new_atoms));
        self.store.begin()?;
        let changed = (|| {
            let before = self.store.atoms_of_groups(&keys)?;
            for r in removed {
                self.store.delete_atoms_of_attachment(r.id)?;
            }
            self.store.insert_atoms(&new_atoms)?;
            let after = self.store.atoms_of_groups(&keys)?;
            Ok::<_, Error>(diff(&before, &after))
        })();
        self.store.finish(changed.is_ok())?;
        let (rm, add) = changed?;
        b.policy_elems(rm, add);
        Ok(())
    }

    /// Rules a knit before schema 6 recorded get their sets and atoms, and the kernel the
    /// layout they mean (one whole-table rewrite, once).
    pub(crate) fn index_legacy_policies(&mut self) -> Result<()> {
        let _k = self.kernel_lock()?;
        let legacy = self.store.legacy_rules()?;
        if legacy.is_empty() {
            return Ok(());
        }
        let atts = self.attachments_with_remote()?;
        self.store.begin()?;
        let done = (|| {
            for r in &legacy {
                let sets = crate::policy::sets_of_rule(r.network_id, &r.spec);
                self.store
                    .index_legacy_rule(r, &sets, &atoms_of_rule(r, &atts))?;
            }
            self.rebuild_firewall()
        })();
        self.store.finish(done.is_ok())?;
        done
    }

    /// Policy changes caused by attaching (`add`) or detaching one attachment: its atoms
    /// (recorded or dropped in the store here) as element changes into `elems`, and (ptp)
    /// its host veth's jumps into `core`.
    pub fn policy_changes_for(
        &mut self,
        core: &mut Batch,
        elems: &mut Batch,
        net: &Network,
        att: &Attachment,
        add: bool,
    ) -> Result<()> {
        let atoms = if add {
            let rules = self.store.candidate_rules(att)?;
            if rules.is_empty() {
                vec![]
            } else {
                atoms_of_attachment(&rules, att, &self.attachments_with_remote()?)
            }
        } else {
            self.store.atoms_of_attachment(att.id)?
        };
        if !atoms.is_empty() {
            let keys = groups(&atoms);
            let (removed, added) = if add {
                // Recorded before the kernel change (one store transaction): a crash in
                // between leaves atoms the kernel may lack, which the pending attachment's
                // cleanup or a rebuild settles; never kernel elements the store does not
                // know.
                self.store.begin()?;
                let changed = (|| {
                    let before = self.store.atoms_of_groups(&keys)?;
                    self.store.insert_atoms(&atoms)?;
                    let after = self.store.atoms_of_groups(&keys)?;
                    Ok::<_, Error>(diff(&before, &after))
                })();
                self.store.finish(changed.is_ok())?;
                changed?
            } else {
                // Leaving: the elements go now, the atoms with the record (`release`), so
                // an interrupted detach finds them again.
                let before = self.store.atoms_of_groups(&keys)?;
                let after: Vec<_> = before
                    .iter()
                    .filter(|a| a.own_att != att.id && a.far_att != Some(att.id))
                    .cloned()
                    .collect();
                diff(&before, &after)
            };
            elems.policy_elems(removed, added);
        }
        if let Some(iface) = crate::driver::for_network(net).attachment_iface(att) {
            let chains = PolicyChains {
                sets: self.store.sets_in_use(net.id)?,
                deny_in: net.policy == Default::Deny,
                deny_eg: net.egress == Default::Deny,
                ..PolicyChains::default()
            };
            for dir in [Direction::Ingress, Direction::Egress] {
                if chains.jumps_to(dir) {
                    core.elems(
                        crate::nft::policy::entry_map(dir),
                        crate::nft::policy::jumps(net.id, dir, std::slice::from_ref(&iface)),
                        add,
                    );
                }
            }
        }
        Ok(())
    }
}
