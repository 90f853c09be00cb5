//! What `knit policy ls` shows: each network's defaults with the packets they dropped,
//! and each rule with the packets it allowed (the kernel's element counters; a packet
//! two overlapping rules allow counts for both).

use crate::error::Result;
use crate::model::policy::{Default, Direction, Rule};
use crate::nft::policy::{PolSet, Shape, chain, element};
use crate::node::Node;
use crate::policy::{Atom, GroupKey, group_elements};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Serialize)]
pub struct NetReport {
    pub network: String,
    pub ingress: Default,
    pub egress: Default,
    pub egress_dns: bool,
    pub ingress_dropped: u64,
    pub egress_dropped: u64,
}

#[derive(Debug, Serialize)]
pub struct RuleReport {
    #[serde(flatten)]
    pub rule: Rule,
    pub packets: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub networks: Vec<NetReport>,
    pub rules: Vec<RuleReport>,
}

pub fn report(node: &Node) -> Result<Report> {
    let rules = node.store.rules()?;
    let mut networks = vec![];
    let mut sets: Vec<PolSet> = vec![];
    for net in node.store.networks()? {
        let used = node.store.sets_in_use(net.id)?;
        if net.policy == Default::Allow && net.egress == Default::Allow && used.is_empty() {
            continue;
        }
        networks.push(NetReport {
            network: net.name.clone(),
            ingress: net.policy,
            egress: net.egress,
            egress_dns: net.egress_dns,
            ingress_dropped: crate::nft::policy::chain_drops(&chain(net.id, Direction::Ingress)),
            egress_dropped: crate::nft::policy::chain_drops(&chain(net.id, Direction::Egress)),
        });
        sets.extend(used.into_iter().filter(|s| s.shape != Shape::Isolate));
    }
    let counters = crate::nft::policy::element_counters(&sets);
    let mut by_group: BTreeMap<GroupKey, Vec<Atom>> = BTreeMap::new();
    let mut by_rule: HashMap<i64, Vec<Atom>> = HashMap::new();
    for r in &rules {
        for a in node.store.atoms_of_rule(r.id)? {
            by_group.entry(a.group()).or_default().push(a.clone());
            by_rule.entry(r.id).or_default().push(a);
        }
    }
    let rules = rules
        .into_iter()
        .map(|rule| {
            let mut packets = 0;
            for a in by_rule.get(&rule.id).into_iter().flatten() {
                let group: Vec<&Atom> = by_group[&a.group()].iter().collect();
                for l4 in group_elements(&group) {
                    let inside = match (l4, a.l4) {
                        (Some((_, lo, hi)), Some((_, alo, ahi))) => alo <= lo && hi <= ahi,
                        _ => true,
                    };
                    if inside {
                        let e = element(&a.set, a.own, a.far, l4);
                        packets += counters
                            .get(&(a.set.name(), e.key_text()))
                            .copied()
                            .unwrap_or(0);
                    }
                }
            }
            RuleReport { rule, packets }
        })
        .collect();
    Ok(Report { networks, rules })
}
