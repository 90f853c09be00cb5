//! Network policy as nftables objects. The forward chain sends new connections leaving
//! through a default-deny network's interface (`pol_out`: bridge or ptp host veth →
//! `jump polN`) to that network's chain: one rule per allow rule, matching address sets
//! (`pR_from4`, `pR_to4`, ...) that attach and detach keep current with plain element
//! changes, then `drop`. `return` means allowed: the rest of the forward chain (isolation)
//! still applies. Established and related traffic never reaches it (stateful).

use super::batch::{Batch, Cmd, Elem};
use crate::model::policy::{PortSpec, Rule, Selector};
use std::net::IpAddr;

pub fn chain(net_id: i64) -> String {
    format!("pol{net_id}")
}

/// `pol_out` elements sending traffic out of `ifaces` to network `net_id`'s chain.
pub fn jumps(net_id: i64, ifaces: &[String]) -> Vec<Elem> {
    ifaces
        .iter()
        .map(|i| Elem::Jump {
            ifname: i.clone(),
            chain: chain(net_id),
        })
        .collect()
}

/// Address set of one side of a rule (`from`/`to`) for one family.
pub fn set(rule_id: i64, side: &str, v4: bool) -> String {
    format!("p{rule_id}_{side}{}", if v4 { 4 } else { 6 })
}

/// One allow rule with its selectors resolved to current addresses.
#[derive(Debug, Clone)]
pub struct RuleFw {
    pub rule: Rule,
    /// Addresses of the `--from` sandbox/label (empty for a CIDR).
    pub from: Vec<IpAddr>,
    pub to: Vec<IpAddr>,
}

/// A network's whole policy.
#[derive(Debug, Clone)]
pub struct NetPolicyFw {
    pub net_id: i64,
    pub deny: bool,
    /// Interfaces traffic to this network's sandboxes leaves through.
    pub ifaces: Vec<String>,
    pub rules: Vec<RuleFw>,
}

impl NetPolicyFw {
    /// Default allow without rules: no objects needed.
    pub fn is_empty(&self) -> bool {
        !self.deny && self.rules.is_empty()
    }
}

fn port_match(p: &Option<PortSpec>) -> String {
    match p {
        Some(p) => format!(" meta l4proto {} th dport {}", p.proto, p.port),
        None => String::new(),
    }
}

fn rule_texts(r: &RuleFw) -> Vec<String> {
    let id = r.rule.id;
    let port = port_match(&r.rule.port);
    let mut out = vec![];
    for v4 in [true, false] {
        let fam = if v4 { "ip" } else { "ip6" };
        let to = set(id, "to", v4);
        let from = match &r.rule.from {
            Selector::Cidr(net) if net.addr().is_ipv4() != v4 => continue,
            Selector::Cidr(net) => net.to_string(),
            _ => format!("@{}", set(id, "from", v4)),
        };
        out.push(format!("{fam} saddr {from} {fam} daddr @{to}{port} return"));
    }
    out
}

fn addrs(v: &[IpAddr], v4: bool) -> Vec<Elem> {
    v.iter()
        .filter(|a| a.is_ipv4() == v4)
        .map(|a| Elem::Addr(*a))
        .collect()
}

impl Batch {
    /// Rewrites one network's policy chain and its rules' sets; `gone` are rules being
    /// removed (their sets are deleted once nothing references them).
    pub fn net_policy(&mut self, p: &NetPolicyFw, gone: &[i64]) -> &mut Self {
        let ch = chain(p.net_id);
        for r in &p.rules {
            for v4 in [true, false] {
                let ty = if v4 { "ipv4_addr" } else { "ipv6_addr" };
                let mut sides = vec![("to", &r.to)];
                if !matches!(r.rule.from, Selector::Cidr(_)) {
                    sides.push(("from", &r.from));
                }
                for (side, list) in sides {
                    let name = set(r.rule.id, side, v4);
                    self.push(Cmd::AddSet {
                        name: name.clone(),
                        spec: format!("type {ty};"),
                    });
                    self.push(Cmd::FlushSet(name.clone()));
                    self.elems(name, addrs(list, v4), true);
                }
            }
        }
        self.push(Cmd::AddChain {
            name: ch.clone(),
            hook: None,
        });
        self.push(Cmd::FlushChain(ch.clone()));
        // Neighbour discovery is IPv6's ARP: without it nothing on the link resolves.
        self.push(Cmd::AddRule {
            chain: ch.clone(),
            rule: "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } return".into(),
        });
        for r in &p.rules {
            for text in rule_texts(r) {
                self.push(Cmd::AddRule {
                    chain: ch.clone(),
                    rule: text,
                });
            }
        }
        self.push(Cmd::AddRule {
            chain: ch.clone(),
            rule: "drop".into(),
        });
        for id in gone {
            self.delete_rule_sets(*id);
        }
        self.elems("pol_out", jumps(p.net_id, &p.ifaces), p.deny);
        self
    }

    /// Removes a network's policy objects (the network is going away).
    pub fn net_policy_removed(
        &mut self,
        net_id: i64,
        ifaces: &[String],
        rules: &[i64],
    ) -> &mut Self {
        let ch = chain(net_id);
        // The chain exists first (for a network that never had policy, only from here on):
        // removing the jumps re-adds them before deleting, and a jump needs its target.
        self.push(Cmd::AddChain {
            name: ch.clone(),
            hook: None,
        });
        self.elems("pol_out", jumps(net_id, ifaces), false);
        self.push(Cmd::FlushChain(ch.clone()));
        self.push(Cmd::DeleteChain(ch));
        for id in rules {
            self.delete_rule_sets(*id);
        }
        self
    }

    fn delete_rule_sets(&mut self, id: i64) {
        for v4 in [true, false] {
            let ty = if v4 { "ipv4_addr" } else { "ipv6_addr" };
            for side in ["from", "to"] {
                let name = set(id, side, v4);
                self.push(Cmd::AddSet {
                    name: name.clone(),
                    spec: format!("type {ty};"),
                });
                self.push(Cmd::DeleteSet(name));
            }
        }
    }
}

/// Set elements an attachment contributes to policy rules (attach adds them, detach
/// removes them): its addresses in every rule whose `--from` selects it, and in the
/// rules of its own network whose `--to` selects it.
pub fn attachment_elems(
    rules: &[Rule],
    network_id: i64,
    sandbox: &str,
    labels: &crate::model::policy::Labels,
    ips: &[IpAddr],
) -> Vec<(String, Vec<Elem>)> {
    let mut out = vec![];
    for r in rules {
        let mut sides = vec![];
        if r.from.matches(sandbox, labels) {
            sides.push("from");
        }
        if r.network_id == network_id && r.to.matches(sandbox, labels) {
            sides.push("to");
        }
        for side in sides {
            for v4 in [true, false] {
                let e = addrs(ips, v4);
                if !e.is_empty() {
                    out.push((set(r.id, side, v4), e));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Proto;

    fn rule(id: i64, from: Selector, to: Selector, port: Option<PortSpec>) -> Rule {
        Rule {
            id,
            network_id: 1,
            network: "n".into(),
            from,
            to,
            port,
        }
    }

    #[test]
    fn network_policy_golden() {
        let web = Selector::Label {
            key: "app".into(),
            value: "web".into(),
        };
        let p = NetPolicyFw {
            net_id: 1,
            deny: true,
            ifaces: vec!["knbr1".into()],
            rules: vec![
                RuleFw {
                    rule: rule(
                        3,
                        Selector::Sandbox("client".into()),
                        web.clone(),
                        Some(PortSpec {
                            port: 80,
                            proto: Proto::Tcp,
                        }),
                    ),
                    from: vec!["10.88.0.5".parse().unwrap(), "fd88::5".parse().unwrap()],
                    to: vec!["10.88.0.2".parse().unwrap()],
                },
                RuleFw {
                    rule: rule(
                        4,
                        Selector::Cidr("198.51.100.0/24".parse().unwrap()),
                        web,
                        None,
                    ),
                    from: vec![],
                    to: vec!["10.88.0.2".parse().unwrap()],
                },
            ],
        };
        crate::nft::golden(
            "policy_deny.nft",
            &Batch::new().net_policy(&p, &[9]).render(),
        );
        let allow = NetPolicyFw { deny: false, ..p };
        crate::nft::golden(
            "policy_allow.nft",
            &Batch::new().net_policy(&allow, &[]).render(),
        );
    }

    #[test]
    fn attachment_elements_follow_selectors() {
        let labels = crate::model::policy::parse_labels("--label", &["app=web".into()]).unwrap();
        let rules = vec![
            rule(
                1,
                Selector::Sandbox("a".into()),
                Selector::Label {
                    key: "app".into(),
                    value: "web".into(),
                },
                None,
            ),
            rule(
                2,
                Selector::Label {
                    key: "app".into(),
                    value: "web".into(),
                },
                Selector::Sandbox("b".into()),
                None,
            ),
        ];
        let ips: Vec<IpAddr> = vec!["10.88.0.2".parse().unwrap()];
        let got = attachment_elems(&rules, 1, "w", &labels, &ips);
        let names: Vec<&str> = got.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(names, vec!["p1_to4", "p2_from4"]);
        // On another network the `to` side does not apply.
        let got = attachment_elems(&rules, 2, "w", &labels, &ips);
        let names: Vec<&str> = got.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(names, vec!["p2_from4"]);
    }
}
