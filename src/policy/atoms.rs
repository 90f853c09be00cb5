//! Rules × attachments → atoms → set elements.

use super::prefixes::cidr_minus;
use crate::model::policy::{Action, Rule, RuleSpec, Selector};
use crate::nft::Elem;
use crate::nft::policy::{PolSet, Shape, element};
use crate::store::Attachment;
pub use crate::store::{Atom, GroupKey};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;

fn shape(spec: &RuleSpec) -> Shape {
    match (spec.action, spec.port) {
        (Action::Isolate, _) => Shape::Isolate,
        (_, None) => Shape::Any,
        (_, Some(p)) if p.is_single() => Shape::Port,
        (_, Some(_)) => Shape::Range,
    }
}

fn host(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

/// The sets a rule's atoms can land in, whatever is attached: what the network's chains
/// must look up while the rule exists.
pub fn sets_of_rule(net_id: i64, spec: &RuleSpec) -> Vec<PolSet> {
    let sh = shape(spec);
    let set = |v4: bool, plen: u8| PolSet {
        net_id,
        dir: spec.dir,
        v4,
        shape: sh,
        plen,
    };
    let (_, far) = spec.sides();
    let mut out: BTreeSet<PolSet> = BTreeSet::new();
    match (sh, far) {
        (Shape::Isolate, _) => {
            out.insert(set(true, 0));
            out.insert(set(false, 0));
        }
        (_, Selector::Cidr { net, except }) => {
            for p in cidr_minus(*net, except) {
                out.insert(set(p.addr().is_ipv4(), p.prefix_len()));
            }
        }
        _ => {
            out.insert(set(true, 32));
            out.insert(set(false, 128));
        }
    }
    out.into_iter().collect()
}

/// The far side of a rule: CIDR prefixes, or the addresses of the attachments (any
/// network) it selects.
fn far_side(sel: &Selector, atts: &[&Attachment]) -> Vec<(Option<i64>, IpNet)> {
    match sel {
        Selector::Cidr { net, except } => cidr_minus(*net, except)
            .into_iter()
            .map(|p| (None, p))
            .collect(),
        _ => atts
            .iter()
            .filter(|a| sel.matches(&a.sandbox, &a.labels))
            .flat_map(|a| a.ips.iter().map(|n| (Some(a.id), host(n.addr()))))
            .collect(),
    }
}

fn product(rule: &Rule, own: &[&Attachment], far: &[(Option<i64>, IpNet)], out: &mut Vec<Atom>) {
    let sh = shape(&rule.spec);
    let l4 = rule
        .spec
        .port
        .map(|p| (crate::nft::proto_num(p.proto), p.lo, p.hi));
    for a in own {
        for ip in a.ips.iter().map(|n| n.addr()) {
            let set = |plen| PolSet {
                net_id: rule.network_id,
                dir: rule.spec.dir,
                v4: ip.is_ipv4(),
                shape: sh,
                plen,
            };
            if sh == Shape::Isolate {
                out.push(Atom {
                    rule_id: rule.id,
                    set: set(0),
                    own_att: a.id,
                    far_att: None,
                    own: ip,
                    far: ip,
                    l4: None,
                });
                continue;
            }
            for (far_att, p) in far
                .iter()
                .filter(|(_, p)| p.addr().is_ipv4() == ip.is_ipv4())
            {
                out.push(Atom {
                    rule_id: rule.id,
                    set: set(p.prefix_len()),
                    own_att: a.id,
                    far_att: *far_att,
                    own: ip,
                    far: p.network(),
                    l4,
                });
            }
        }
    }
}

/// Whether an attachment stands for a sandbox on another node (a cluster endpoint, with
/// a negative id): only ever the far side of a rule.
fn remote(a: &Attachment) -> bool {
    a.id < 0
}

fn own_side<'a>(rule: &Rule, atts: &[&'a Attachment]) -> Vec<&'a Attachment> {
    let (own, _) = rule.spec.sides();
    atts.iter()
        .filter(|a| !remote(a))
        .filter(|a| a.network_id == rule.network_id && own.matches(&a.sandbox, &a.labels))
        .copied()
        .collect()
}

/// A rule's atoms against the attachments in the kernel (`atts`: all networks, cluster
/// endpoints of other nodes included).
pub fn atoms_of_rule(rule: &Rule, atts: &[Attachment]) -> Vec<Atom> {
    let atts: Vec<&Attachment> = atts.iter().filter(|a| a.state.in_kernel()).collect();
    let (_, far_sel) = rule.spec.sides();
    let mut out = vec![];
    product(
        rule,
        &own_side(rule, &atts),
        &far_side(far_sel, &atts),
        &mut out,
    );
    out
}

/// The atoms one attachment joining brings: where it is the own side (paired with the far
/// side as it is now, itself included) and where it is the far side (paired with the own
/// side's other attachments). `rules`: candidates (may select it or not); `others`: the
/// attachments in the kernel.
pub fn atoms_of_attachment(rules: &[Rule], att: &Attachment, others: &[Attachment]) -> Vec<Atom> {
    let others: Vec<&Attachment> = others
        .iter()
        .filter(|a| a.id != att.id && a.state.in_kernel())
        .collect();
    let mut with_self = others.clone();
    with_self.push(att);
    let mut out = vec![];
    for rule in rules {
        let (own_sel, far_sel) = rule.spec.sides();
        let mine = !remote(att)
            && att.network_id == rule.network_id
            && own_sel.matches(&att.sandbox, &att.labels);
        if mine {
            product(rule, &[att], &far_side(far_sel, &with_self), &mut out);
        }
        if rule.spec.action == Action::Allow && far_sel.matches(&att.sandbox, &att.labels) {
            let far = far_side(far_sel, &[att]);
            product(rule, &own_side(rule, &others), &far, &mut out);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// What the kernel holds for atoms of one group: the key once, or for port ranges the
/// elementary pieces the ranges' ends cut them into (disjoint, as an interval set needs;
/// each piece keeps its own counter, so a rule's count is the sum of its pieces).
pub fn group_elements(atoms: &[&Atom]) -> Vec<Option<(u8, u16, u16)>> {
    let Some(first) = atoms.first() else {
        return vec![];
    };
    if first.set.shape != Shape::Range {
        // One element per distinct key: rules for ports 80 and 443 of the same pair are
        // two elements of one group.
        let mut keys: Vec<Option<(u8, u16, u16)>> = atoms.iter().map(|a| a.l4).collect();
        keys.sort_unstable();
        keys.dedup();
        return keys;
    }
    let proto = first.l4.map_or(0, |(p, _, _)| p);
    let ranges: Vec<(u32, u32)> = atoms
        .iter()
        .filter_map(|a| a.l4.map(|(_, lo, hi)| (u32::from(lo), u32::from(hi))))
        .collect();
    let mut cuts: Vec<u32> = ranges.iter().flat_map(|(lo, hi)| [*lo, hi + 1]).collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2)
        .filter(|w| ranges.iter().any(|(lo, hi)| *lo <= w[0] && w[1] - 1 <= *hi))
        .map(|w| Some((proto, w[0] as u16, (w[1] - 1) as u16)))
        .collect()
}

/// Elements with the set each belongs to.
pub type SetElems = Vec<(String, Elem)>;

/// Every element the atoms amount to, by set.
pub fn elements(atoms: &[Atom]) -> Vec<(String, Elem)> {
    let mut groups: BTreeMap<GroupKey, Vec<&Atom>> = BTreeMap::new();
    for a in atoms {
        groups.entry(a.group()).or_default().push(a);
    }
    let mut out = vec![];
    for ((set, own, far, _), list) in groups {
        for l4 in group_elements(&list) {
            out.push((set.name(), element(&set, own, far, l4)));
        }
    }
    out
}

/// The element changes that take the kernel from `before` to `after` (both: all atoms
/// of the groups concerned).
pub fn diff(before: &[Atom], after: &[Atom]) -> (SetElems, SetElems) {
    let key = |(set, e): &(String, Elem)| (set.clone(), e.text());
    let old = elements(before);
    let new = elements(after);
    let old_keys: HashSet<_> = old.iter().map(key).collect();
    let new_keys: HashSet<_> = new.iter().map(key).collect();
    let removed = old
        .into_iter()
        .filter(|e| !new_keys.contains(&key(e)))
        .collect();
    let added = new
        .into_iter()
        .filter(|e| !old_keys.contains(&key(e)))
        .collect();
    (removed, added)
}

#[cfg(test)]
#[path = "atoms_tests.rs"]
mod tests;
