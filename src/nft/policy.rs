//! Network policy as nftables data. Every allow rule is set elements, so adding or removing
//! one, and the first packet of a connection, cost the same with 10 or 10,000 rules.
//!
//! Per network N, two chains: `polN` (ingress: new connections leaving through one of the
//! network's interfaces towards its sandboxes, from `oifname vmap @pol_out`) and `egrN`
//! (egress: new connections arriving from the network's sandboxes, from `iifname vmap
//! @egr_from` in forward and input). Each chain is a fixed list of lookups, one per set
//! in use; a set holds the rules of one shape:
//!
//! - family (4/6) and prefix length L of the far side (a sandbox is /32 or /128; a CIDR,
//!   with its exceptions cut out, is a few prefixes): the lookup masks the far address to
//!   L bits, so every element is an exact key and rules never overlap inside a set;
//! - `a` any protocol and port (`far . own`), `p` one port (`far . own . proto . port`,
//!   a hash), `r` port ranges (the same key with an interval, disjoint per key);
//! - `iso`: sandboxes a policy selected (NetworkPolicy's isolation) on a default-allow
//!   network.
//!
//! So the chain changes only when a shape appears or goes (bounded by families × prefix
//! lengths), never per rule. `return` means allowed: the rest of the forward chain
//! (isolation between networks) still applies. Established and related traffic never
//! reaches the chains (stateful); elements and the final drop carry counters.

use super::batch::{Batch, Cmd, Elem};
use crate::model::policy::Direction;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// How a set's rules look at ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Shape {
    /// Any protocol and port.
    Any,
    /// One port of one protocol.
    Port,
    /// A port range of one protocol.
    Range,
    /// The isolated sandboxes of a default-allow network.
    Isolate,
}

/// One policy set: network, direction, family, far-side prefix length and shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolSet {
    pub net_id: i64,
    pub dir: Direction,
    /// IPv4 (or IPv6).
    pub v4: bool,
    pub shape: Shape,
    /// Prefix length of the far side (0 for `Isolate`).
    pub plen: u8,
}

pub fn chain(net_id: i64, dir: Direction) -> String {
    match dir {
        Direction::Ingress => format!("pol{net_id}"),
        Direction::Egress => format!("egr{net_id}"),
    }
}

/// The vmap that sends traffic of a direction to a network's chain.
pub fn entry_map(dir: Direction) -> &'static str {
    match dir {
        Direction::Ingress => "pol_out",
        Direction::Egress => "egr_from",
    }
}

/// Elements of `entry_map(dir)` sending traffic through `ifaces` to network `net_id`'s
/// chain of that direction.
pub fn jumps(net_id: i64, dir: Direction, ifaces: &[String]) -> Vec<Elem> {
    ifaces
        .iter()
        .map(|i| Elem::Jump {
            ifname: i.clone(),
            chain: chain(net_id, dir),
        })
        .collect()
}

impl PolSet {
    pub fn name(&self) -> String {
        let d = match self.dir {
            Direction::Ingress => "in",
            Direction::Egress => "eg",
        };
        let f = if self.v4 { 4 } else { 6 };
        let n = self.net_id;
        match self.shape {
            Shape::Isolate => format!("pol{n}_{d}{f}_iso"),
            Shape::Any => format!("pol{n}_{d}{f}_a{}", self.plen),
            Shape::Port => format!("pol{n}_{d}{f}_p{}", self.plen),
            Shape::Range => format!("pol{n}_{d}{f}_r{}", self.plen),
        }
    }

    /// The inverse of `name` (the store keeps names).
    pub fn parse(name: &str) -> Option<PolSet> {
        let rest = name.strip_prefix("pol")?;
        let (n, rest) = rest.split_once('_')?;
        let (df, shape) = rest.split_once('_')?;
        let dir = match &df[..2.min(df.len())] {
            "in" => Direction::Ingress,
            "eg" => Direction::Egress,
            _ => return None,
        };
        let v4 = match df.get(2..)? {
            "4" => true,
            "6" => false,
            _ => return None,
        };
        let (shape, plen) = if shape == "iso" {
            (Shape::Isolate, 0)
        } else {
            let s = match shape.get(..1)? {
                "a" => Shape::Any,
                "p" => Shape::Port,
                "r" => Shape::Range,
                _ => return None,
            };
            (s, shape.get(1..)?.parse().ok()?)
        };
        let set = PolSet {
            net_id: n.parse().ok()?,
            dir,
            v4,
            shape,
            plen,
        };
        (set.name() == name).then_some(set)
    }

    fn addr_type(&self) -> &'static str {
        if self.v4 { "ipv4_addr" } else { "ipv6_addr" }
    }

    pub fn spec(&self) -> String {
        let t = self.addr_type();
        match self.shape {
            Shape::Isolate => format!("type {t};"),
            Shape::Any => format!("type {t} . {t}; counter;"),
            Shape::Port => format!("type {t} . {t} . inet_proto . inet_service; counter;"),
            Shape::Range => {
                format!("type {t} . {t} . inet_proto . inet_service; flags interval; counter;")
            }
        }
    }

    fn mask(&self) -> String {
        let full = if self.v4 { 32 } else { 128 };
        if self.plen >= full {
            return String::new();
        }
        let m = if self.v4 {
            IpAddr::V4(Ipv4Addr::from(
                u32::MAX.checked_shl(32 - u32::from(self.plen)).unwrap_or(0),
            ))
        } else {
            IpAddr::V6(Ipv6Addr::from(
                u128::MAX
                    .checked_shl(128 - u32::from(self.plen))
                    .unwrap_or(0),
            ))
        };
        format!(" & {m}")
    }

    /// The chain rule that looks this set up.
    pub fn lookup(&self) -> String {
        let fam = if self.v4 { "ip" } else { "ip6" };
        let name = self.name();
        if self.shape == Shape::Isolate {
            let own = match self.dir {
                Direction::Ingress => "daddr",
                Direction::Egress => "saddr",
            };
            // Sandboxes no policy selected are not isolated: allowed.
            return format!("{fam} {own} != @{name} return");
        }
        let m = self.mask();
        let key = match self.dir {
            Direction::Ingress => format!("{fam} saddr{m} . {fam} daddr"),
            Direction::Egress => format!("{fam} saddr . {fam} daddr{m}"),
        };
        let ports = if self.shape == Shape::Any {
            ""
        } else {
            " . meta l4proto . th dport"
        };
        format!("{key}{ports} @{name} return")
    }
}

/// One element of a policy set: the sandbox's own address, the far side (masked to the
/// set's prefix), and for port shapes the protocol number and port range.
pub fn element(set: &PolSet, own: IpAddr, far: IpAddr, l4: Option<(u8, u16, u16)>) -> Elem {
    if set.shape == Shape::Isolate {
        return Elem::Addr(own);
    }
    let (saddr, daddr) = match set.dir {
        Direction::Ingress => (far, own),
        Direction::Egress => (own, far),
    };
    Elem::Pol {
        saddr,
        daddr,
        l4,
        interval: set.shape == Shape::Range,
    }
}

/// What a network's chains say, without the elements.
#[derive(Debug, Clone, Default)]
pub struct PolicyChains {
    pub net_id: i64,
    pub deny_in: bool,
    pub deny_eg: bool,
    /// Under egress deny, DNS to knit's own resolver still passes.
    pub eg_dns: bool,
    /// Interfaces traffic to and from the network's sandboxes passes.
    pub ifaces: Vec<String>,
    /// Sets in use, sorted.
    pub sets: Vec<PolSet>,
}

impl PolicyChains {
    /// Nothing to say: no chains at all, as if policy had never been used.
    pub fn is_empty(&self) -> bool {
        !self.deny_in && !self.deny_eg && self.sets.is_empty()
    }

    /// Whether the network's traffic of `dir` goes through its chain: the direction is
    /// default deny, or some sandboxes are isolated.
    pub fn jumps_to(&self, dir: Direction) -> bool {
        let deny = match dir {
            Direction::Ingress => self.deny_in,
            Direction::Egress => self.deny_eg,
        };
        deny || self
            .sets
            .iter()
            .any(|s| s.dir == dir && s.shape == Shape::Isolate)
    }

    fn rules(&self, dir: Direction) -> Vec<String> {
        // Neighbour discovery is IPv6's ARP: without it nothing on the link resolves.
        let mut out = vec![
            "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } return".to_string(),
        ];
        if dir == Direction::Egress && self.eg_dns {
            out.push("ip daddr @dns4 meta l4proto { tcp, udp } th dport 53 return".into());
            out.push("ip6 daddr @dns6 meta l4proto { tcp, udp } th dport 53 return".into());
        }
        let deny = match dir {
            Direction::Ingress => self.deny_in,
            Direction::Egress => self.deny_eg,
        };
        let mine = self.sets.iter().filter(|s| s.dir == dir);
        for s in mine {
            // On a default-deny direction every sandbox is isolated: no exemption.
            if s.shape == Shape::Isolate && deny {
                continue;
            }
            out.push(s.lookup());
        }
        let what = match dir {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        };
        out.push(format!(
            "counter drop comment \"policy of network {}: no allow rule matches ({what})\"",
            self.net_id
        ));
        out
    }
}

impl Batch {
    /// Writes a network's policy chains and creates the sets they use; `gone` are sets no
    /// longer used (deleted once the chains no longer name them). Elements are left as
    /// they are (`policy_elems`).
    pub fn policy_chains(&mut self, p: &PolicyChains, gone: &[PolSet]) -> &mut Self {
        for s in &p.sets {
            self.push(Cmd::AddSet {
                name: s.name(),
                spec: s.spec(),
            });
        }
        for dir in [Direction::Ingress, Direction::Egress] {
            let ch = chain(p.net_id, dir);
            self.push(Cmd::AddChain {
                name: ch.clone(),
                hook: None,
            });
            self.push(Cmd::FlushChain(ch.clone()));
            for rule in p.rules(dir) {
                self.push(Cmd::AddRule {
                    chain: ch.clone(),
                    rule,
                });
            }
        }
        for s in gone {
            self.delete_set(s);
        }
        for dir in [Direction::Ingress, Direction::Egress] {
            self.elems(
                entry_map(dir),
                jumps(p.net_id, dir, &p.ifaces),
                p.jumps_to(dir),
            );
        }
        self
    }

    /// Element changes: removals first, so a port range split into pieces never overlaps
    /// its old self inside the transaction.
    pub fn policy_elems(&mut self, removed: Vec<(String, Elem)>, added: Vec<(String, Elem)>) {
        for (set, elems) in group(removed) {
            self.elems(set, elems, false);
        }
        for (set, elems) in group(added) {
            self.elems(set, elems, true);
        }
    }

    /// Removes a network's policy objects (the network is going away, or its policy says
    /// nothing any more).
    pub fn policy_removed(&mut self, net_id: i64, ifaces: &[String], sets: &[PolSet]) -> &mut Self {
        for dir in [Direction::Ingress, Direction::Egress] {
            // The chain exists first (for a network that never had policy, only from here
            // on): removing the jumps re-adds them before deleting, and a jump needs its
            // target.
            self.push(Cmd::AddChain {
                name: chain(net_id, dir),
                hook: None,
            });
            self.elems(entry_map(dir), jumps(net_id, dir, ifaces), false);
        }
        for dir in [Direction::Ingress, Direction::Egress] {
            self.push(Cmd::FlushChain(chain(net_id, dir)));
            self.push(Cmd::DeleteChain(chain(net_id, dir)));
        }
        for s in sets {
            self.delete_set(s);
        }
        self
    }

    fn delete_set(&mut self, s: &PolSet) {
        self.push(Cmd::AddSet {
            name: s.name(),
            spec: s.spec(),
        });
        self.push(Cmd::DeleteSet(s.name()));
    }
}

/// Packets the final drop of a policy chain counted (0 if the chain is not there).
pub fn chain_drops(chain: &str) -> u64 {
    let Ok(text) = super::libnft::run(&format!(
        "list chain {} {} {chain}",
        super::batch::FAMILY,
        super::batch::TABLE
    )) else {
        return 0;
    };
    text.lines()
        .find(|l| l.contains(" drop") && l.contains("counter packets"))
        .and_then(packets_after_counter)
        .unwrap_or(0)
}

fn packets_after_counter(s: &str) -> Option<u64> {
    let rest = s.split("counter packets ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Per element packet counters of `sets`, keyed by (set, element key as nft prints it:
/// the same text `Elem::key_text` renders). Sets missing from the kernel count nothing.
pub fn element_counters(sets: &[PolSet]) -> std::collections::HashMap<(String, String), u64> {
    let mut out = std::collections::HashMap::new();
    let Ok(mut session) = super::libnft::Session::new() else {
        return out;
    };
    for s in sets {
        let name = s.name();
        let Ok(text) = session.run(&format!(
            "list set {} {} {name}",
            super::batch::FAMILY,
            super::batch::TABLE
        )) else {
            continue;
        };
        let Some(body) = text.split("elements = {").nth(1) else {
            continue;
        };
        let body = body.split('}').next().unwrap_or("");
        for item in body.split(',') {
            let item = item.trim();
            let Some((key, _)) = item.split_once(" counter packets ") else {
                continue;
            };
            if let Some(n) = packets_after_counter(item) {
                out.insert((name.clone(), key.trim().to_string()), n);
            }
        }
    }
    out
}

/// Elements grouped by set, in first-seen order (one message per set).
fn group(v: Vec<(String, Elem)>) -> Vec<(String, Vec<Elem>)> {
    let mut out: Vec<(String, Vec<Elem>)> = vec![];
    for (set, e) in v {
        match out.iter_mut().find(|(s, _)| *s == set) {
            Some((_, list)) => list.push(e),
            None => out.push((set, vec![e])),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(dir: Direction, v4: bool, shape: Shape, plen: u8) -> PolSet {
        PolSet {
            net_id: 1,
            dir,
            v4,
            shape,
            plen,
        }
    }

    #[test]
    fn names_round_trip() {
        for s in [
            set(Direction::Ingress, true, Shape::Port, 32),
            set(Direction::Egress, false, Shape::Range, 48),
            set(Direction::Ingress, false, Shape::Isolate, 0),
            set(Direction::Egress, true, Shape::Any, 8),
        ] {
            assert_eq!(PolSet::parse(&s.name()), Some(s), "{}", s.name());
        }
        assert_eq!(PolSet::parse("pol1_in4_x3"), None);
        assert_eq!(PolSet::parse("pol_out"), None);
    }

    #[test]
    fn policy_golden() {
        let p = PolicyChains {
            net_id: 1,
            deny_in: true,
            deny_eg: false,
            eg_dns: true,
            ifaces: vec!["knbr1".into()],
            sets: vec![
                set(Direction::Ingress, true, Shape::Any, 16),
                set(Direction::Ingress, true, Shape::Port, 32),
                set(Direction::Ingress, true, Shape::Range, 32),
                set(Direction::Ingress, false, Shape::Port, 128),
                set(Direction::Egress, true, Shape::Isolate, 0),
                set(Direction::Egress, true, Shape::Port, 24),
            ],
        };
        let own: IpAddr = "10.88.0.2".parse().unwrap();
        let mut b = Batch::new();
        b.policy_chains(&p, &[set(Direction::Ingress, true, Shape::Any, 8)]);
        b.policy_elems(
            vec![(
                p.sets[2].name(),
                element(
                    &p.sets[2],
                    own,
                    "10.88.0.5".parse().unwrap(),
                    Some((6, 80, 89)),
                ),
            )],
            vec![
                (
                    p.sets[0].name(),
                    element(&p.sets[0], own, "198.51.0.0".parse().unwrap(), None),
                ),
                (
                    p.sets[2].name(),
                    element(
                        &p.sets[2],
                        own,
                        "10.88.0.5".parse().unwrap(),
                        Some((6, 80, 84)),
                    ),
                ),
                (p.sets[4].name(), element(&p.sets[4], own, own, None)),
                (
                    p.sets[5].name(),
                    element(
                        &p.sets[5],
                        own,
                        "192.0.2.0".parse().unwrap(),
                        Some((17, 53, 53)),
                    ),
                ),
            ],
        );
        crate::nft::golden("policy_deny.nft", &b.render());
        let allow = PolicyChains {
            deny_in: false,
            ..p
        };
        crate::nft::golden(
            "policy_allow.nft",
            &Batch::new().policy_chains(&allow, &[]).render(),
        );
        let mut gone = Batch::new();
        gone.policy_removed(1, &["knbr1".into()], &allow.sets);
        crate::nft::golden("policy_removed.nft", &gone.render());
    }
}
